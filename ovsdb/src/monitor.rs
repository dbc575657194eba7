//! Monitors: what a client asked to follow of one database ("monitor",
//! "monitor_cond", "monitor_cond_since") and the table updates it is owed,
//! composed as Open vSwitch's ovsdb/monitor.c and ovsdb/jsonrpc-server.c
//! compose them.
//!
//! * [`Monitor::new`] parses `<monitor-requests>` with OVS's error texts.
//! * [`Monitor::initial`] is the reply to the request (`<table-updates>` or,
//!   for V2/V3, `<table-updates2>` with `"initial"` rows).
//! * [`Monitor::update`] is the notification for one committed transaction
//!   (`"update"`, `"update2"` or `"update3"` params' table updates).
//! * [`Monitor::change_condition`] handles "monitor_cond_change".
//! * [`Monitor::updates_since`] serves "monitor_cond_since" from a history
//!   of commits.
//!
//! What OVS does, and we do too:
//!
//! * No `"columns"`: every column but `_uuid` is monitored — `_version`
//!   included. Since `_version` changes with every modification, such a
//!   monitor reports every modified row. An explicit list may name `_uuid`
//!   and `_version`.
//! * Each column carries the `"select"` of the request that named it; the
//!   table's selection is the union over its requests (including requests
//!   with `"columns": []`). A row change whose kind the table does not
//!   select is not sent; a column whose request does not select that kind is
//!   left out of the row.
//! * V1 (RFC 7047): initial and insert give `{"new": ROW}` with every
//!   selected column, delete `{"old": ROW}`, modify `{"old": CHANGED,
//!   "new": ROW}` ("old" holds the previous values of the columns that
//!   changed).
//! * V2/V3: `{"initial"|"insert": ROW}` with only the columns that differ
//!   from their type's default, `{"delete": null}`, `{"modify": DIFF}` with
//!   the changed columns only: for columns that may hold more than one
//!   element, the elements (pairs) only in the old or only in the new value,
//!   plus, for maps, the new pairs of keys whose value changed (OVS's
//!   `ovsdb_datum_diff`); for other columns, the new value.
//! * Conditions (`"where"`, V2/V3): a row is in view when its value matches
//!   any clause (an empty condition matches everything). A modification
//!   bringing a row into view is an insert, taking it out a delete; rows out
//!   of view before and after are not reported.
//! * The columns a condition mentions are tracked (as OVS adds them, not
//!   monitored, to its monitor table), so a modification of such a column
//!   alone, with the row staying in view, is reported as `{"modify": {}}`,
//!   and these tracked columns only accumulate across condition changes.
//! * A modification that changed no monitored or tracked column (it can be
//!   in the commit for other monitors' sake) is not reported; a table with
//!   nothing to report is left out, and [`Monitor::update`] gives `None`
//!   when no table has anything.
//!
//! Where OVS's behaviour is accidental we choose:
//!
//! * Several requests for one table each with its own `"where"`: OVS keeps
//!   one of them depending on its hash table's internals; we keep the last
//!   request's condition (absent = true). The columns of all of them are
//!   tracked, as in OVS.
//! * "monitor_cond_change" requests are all checked before any is applied
//!   (OVS applies them as it goes and may fail half-way), and a request
//!   without `"where"` leaves the table's condition alone (OVS crashes).
//! * OVS error objects carry a `"syntax"` member (the offending JSON);
//!   [`OvsdbError`] has only the tag and details.
//! * With several monitors sharing its change tracking, OVS may track the
//!   condition columns of other sessions' monitors too; ours are per
//!   monitor.
use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::{
    atom::{Atom, parse_uuid},
    condition::Condition,
    datum::Datum,
    db::{Commit, Database, Row},
    error::{OvsdbError, Result},
    schema::{DatabaseSchema, TableSchema},
    types::Type,
};

/// Which monitor request made the monitor; it decides the update format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MonitorVersion {
    /// "monitor" (RFC 7047): `<table-updates>`, "update" notifications.
    V1,
    /// "monitor_cond": `<table-updates2>`, "update2" notifications.
    V2,
    /// "monitor_cond_since": `<table-updates2>`, "update3" notifications.
    V3,
}

impl MonitorVersion {
    /// The version a request method asks for.
    pub fn from_method(method: &str) -> Option<MonitorVersion> {
        Some(match method {
            "monitor" => MonitorVersion::V1,
            "monitor_cond" => MonitorVersion::V2,
            "monitor_cond_since" => MonitorVersion::V3,
            _ => return None,
        })
    }

    /// The request method.
    pub fn method(self) -> &'static str {
        match self {
            MonitorVersion::V1 => "monitor",
            MonitorVersion::V2 => "monitor_cond",
            MonitorVersion::V3 => "monitor_cond_since",
        }
    }

    /// The notification method of updates.
    pub fn notification(self) -> &'static str {
        match self {
            MonitorVersion::V1 => "update",
            MonitorVersion::V2 => "update2",
            MonitorVersion::V3 => "update3",
        }
    }

    /// Whether requests may have `"where"` (and updates are `<table-updates2>`).
    pub fn is_conditional(self) -> bool {
        self != MonitorVersion::V1
    }
}

/// Kinds of row change (OVS's `enum ovsdb_monitor_selection`), as bits.
type Select = u8;
const NONE: Select = 0;
const INITIAL: Select = 1;
const INSERT: Select = 2;
const DELETE: Select = 4;
const MODIFY: Select = 8;
const ALL: Select = INITIAL | INSERT | DELETE | MODIFY;

/// A monitored column and the change kinds its request selected.
#[derive(Clone, Debug)]
struct MonColumn {
    name: String,
    type_: Type,
    select: Select,
}

/// One monitored table.
#[derive(Clone, Debug)]
struct MonTable {
    schema: TableSchema,
    /// Union of the requests' selections.
    select: Select,
    columns: Vec<MonColumn>,
    /// Columns that conditions mention, not monitored: their changes count
    /// as changes of the row.
    tracked: BTreeSet<String>,
    /// The condition (V2/V3 only).
    condition: Option<Condition>,
}

impl MonTable {
    /// Same selections, columns and condition: every change looks the same
    /// through both.
    fn same_view(&self, other: &MonTable) -> bool {
        self.select == other.select
            && self.columns.len() == other.columns.len()
            && self.columns.iter().zip(&other.columns).all(|(a, b)| a.name == b.name && a.select == b.select)
            && self.tracked == other.tracked
            && self.condition == other.condition
    }

    fn has_column(&self, name: &str) -> bool {
        self.columns.iter().any(|c| c.name == name)
    }

    /// Adds the columns `cond` mentions to those tracked.
    fn track_condition_columns(&mut self, cond: &Condition) {
        for cl in &cond.clauses {
            if !self.has_column(&cl.column) {
                self.tracked.insert(cl.column.clone());
            }
        }
    }

    /// Whether any monitored or tracked column differs between the rows.
    fn any_change(&self, old: &Row, new: &Row) -> bool {
        self.columns.iter().any(|c| old.get(&c.name) != new.get(&c.name))
            || self.tracked.iter().any(|c| old.get(c) != new.get(c))
    }
}

/// One monitor of one session on one database.
#[derive(Clone, Debug)]
pub struct Monitor {
    version: MonitorVersion,
    tables: BTreeMap<String, MonTable>,
    /// A hash of what `same_view` compares, kept current, so a server can
    /// find monitors with the same view without comparing every pair.
    view_key: u64,
}

/// OVS's `ovsdb_parser` for the small objects of monitor requests: members
/// fetched by name and type, the first error kept, unused members refused.
struct Parser<'a> {
    name: String,
    obj: Option<&'a Map<String, Value>>,
    used: HashSet<&'static str>,
    error: Option<OvsdbError>,
}

#[derive(Clone, Copy)]
enum Kind {
    Array,
    Object,
    Boolean,
}

impl<'a> Parser<'a> {
    fn new(v: &'a Value, name: String) -> Parser<'a> {
        let mut p = Parser { name, obj: v.as_object(), used: HashSet::new(), error: None };
        if p.obj.is_none() {
            p.raise("Object expected.".into());
        }
        p
    }

    fn raise(&mut self, msg: String) {
        if self.error.is_none() {
            self.error = Some(OvsdbError::syntax(format!("Parsing {} failed: {msg}", self.name)));
        }
    }

    /// An optional member of the given kind.
    fn member(&mut self, name: &'static str, kind: Kind) -> Option<&'a Value> {
        let v = self.obj?.get(name)?;
        let ok = match kind {
            Kind::Array => v.is_array(),
            Kind::Object => v.is_object(),
            Kind::Boolean => v.is_boolean(),
        };
        if ok {
            self.used.insert(name);
            Some(v)
        } else {
            self.raise(format!("Type mismatch for member '{name}'."));
            None
        }
    }

    fn finish(mut self) -> Result<()> {
        if self.error.is_none()
            && let Some(obj) = self.obj
        {
            let unused: Vec<&String> = obj.keys().filter(|k| !self.used.contains(k.as_str())).collect();
            match unused.len() {
                0 => {}
                1 => self.raise(format!("Member '{}' is present but not allowed here.", unused[0])),
                n => self.raise(format!(
                    "Member '{}' and {} other member{} are present but not allowed here.",
                    unused[0],
                    n - 1,
                    if n > 2 { "s" } else { "" }
                )),
            }
        }
        self.error.map_or(Ok(()), Err)
    }
}

/// Parses the `<last-txn-id>` of "monitor_cond_since" with OVS's errors
/// (checked after the monitor requests, as OVS does). The zero UUID means
/// the client has nothing.
pub fn parse_last_txn_id(v: &Value) -> Result<Uuid> {
    let s = v.as_str().ok_or_else(|| OvsdbError::syntax("last-txn-id must be string"))?;
    parse_uuid(s).ok_or_else(|| OvsdbError::syntax("last-txn-id must be UUID format."))
}

/// OVS's `ovsdb_atom_is_default`.
fn atom_is_default(a: &Atom) -> bool {
    match a {
        Atom::Integer(i) => *i == 0,
        Atom::Real(r) => *r == 0.0,
        Atom::Boolean(b) => !*b,
        Atom::String(s) => s.is_empty(),
        Atom::Uuid(u) => u.is_nil(),
    }
}

/// OVS's `ovsdb_datum_is_default`: as many elements as the type's minimum,
/// all default atoms.
fn datum_is_default(d: &Datum, t: &Type) -> bool {
    d.len() as u64 == t.min
        && d.keys.iter().all(atom_is_default)
        && d.values.as_ref().is_none_or(|v| v.iter().all(atom_is_default))
}

/// OVS's `ovsdb_datum_diff`: for columns that may hold more than one
/// element, the elements only in one of the values (for maps, pairs whose
/// key is in only one, plus the new pair for keys whose value changed);
/// otherwise the new value.
pub fn datum_diff(old: &Datum, new: &Datum, t: &Type) -> Datum {
    if t.max <= 1 {
        return new.clone();
    }
    let is_map = t.is_map();
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let val = |d: &Datum, i: usize| d.values.as_ref().map(|v| v[i].clone());
    let (mut oi, mut ni) = (0, 0);
    let mut push = |k: &Atom, v: Option<Atom>| {
        keys.push(k.clone());
        if let Some(v) = v {
            values.push(v);
        }
    };
    while oi < old.len() && ni < new.len() {
        match old.keys[oi].cmp(&new.keys[ni]) {
            std::cmp::Ordering::Less => {
                push(&old.keys[oi], val(old, oi));
                oi += 1;
            }
            std::cmp::Ordering::Greater => {
                push(&new.keys[ni], val(new, ni));
                ni += 1;
            }
            std::cmp::Ordering::Equal => {
                if is_map && val(old, oi) != val(new, ni) {
                    push(&new.keys[ni], val(new, ni));
                }
                oi += 1;
                ni += 1;
            }
        }
    }
    for i in oi..old.len() {
        push(&old.keys[i], val(old, i));
    }
    for i in ni..new.len() {
        push(&new.keys[i], val(new, i));
    }
    Datum { keys, values: is_map.then_some(values) }
}

/// A row's changes over several commits: its first old and last new value.
type MergedChange<'a> = (Option<&'a Row>, Option<&'a Row>);

/// Adds a row update to a `<table-updates>` object being built.
fn add_row(out: &mut Map<String, Value>, table: &str, uuid: &Uuid, row: Value) {
    let t = out.entry(table.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(t) = t {
        t.insert(uuid.to_string(), row);
    }
}

impl Monitor {
    /// Parses `<monitor-requests>` (for V2/V3 `<monitor-cond-requests>`):
    /// an object mapping table names to a request or an array of requests,
    /// each with optional `"columns"`, `"select"` (`initial`, `insert`,
    /// `delete`, `modify`, each defaulting to true) and, for V2/V3,
    /// `"where"`. Errors (all "syntax error" unless the condition's own)
    /// are OVS's: "monitor-requests must be object", "no table named T",
    /// "Parsing table T failed: ..." (not an object, a member of the wrong
    /// type, a member not allowed — `"where"` in V1), "array of column names
    /// expected", "C is not a valid column name", "column C mentioned more
    /// than once" (within all of a table's requests), then the condition's.
    pub fn new(version: MonitorVersion, schema: &DatabaseSchema, requests: &Value) -> Result<Monitor> {
        let reqs = requests.as_object().ok_or_else(|| OvsdbError::syntax("monitor-requests must be object"))?;
        let mut tables = BTreeMap::new();
        for (tname, rv) in reqs {
            let ts = schema.tables.get(tname).ok_or_else(|| OvsdbError::syntax(format!("no table named {tname}")))?;
            let mut mt = MonTable {
                schema: ts.clone(),
                select: NONE,
                columns: Vec::new(),
                tracked: BTreeSet::new(),
                condition: version.is_conditional().then(Condition::default),
            };
            let mut conditions = Vec::new();
            match rv {
                Value::Array(items) => {
                    for it in items {
                        conditions.extend(Self::parse_request(version, &mut mt, it)?);
                    }
                }
                _ => conditions.extend(Self::parse_request(version, &mut mt, rv)?),
            }
            // Every request's condition columns are tracked; the last
            // request's condition is the table's.
            for c in &conditions {
                mt.track_condition_columns(c);
            }
            if let Some(c) = conditions.pop() {
                mt.condition = Some(c);
            }
            tables.insert(tname.clone(), mt);
        }
        let mut m = Monitor { version, tables, view_key: 0 };
        m.view_key = m.compute_view_key();
        Ok(m)
    }

    /// One `<monitor-request>` for `mt`; returns its condition (V2/V3; an
    /// absent `"where"` is the empty, always-true, condition).
    fn parse_request(version: MonitorVersion, mt: &mut MonTable, req: &Value) -> Result<Option<Condition>> {
        let tname = mt.schema.name.clone();
        let mut p = Parser::new(req, format!("table {tname}"));
        let where_ = if version.is_conditional() { p.member("where", Kind::Array) } else { None };
        let columns = p.member("columns", Kind::Array);
        let select_json = p.member("select", Kind::Object);
        p.finish()?;

        let select = match select_json {
            None => ALL,
            Some(sj) => {
                let mut sp = Parser::new(sj, format!("table {tname} select"));
                let mut select = NONE;
                for (name, bit) in [("initial", INITIAL), ("insert", INSERT), ("delete", DELETE), ("modify", MODIFY)] {
                    if sp.member(name, Kind::Boolean).and_then(Value::as_bool).unwrap_or(true) {
                        select |= bit;
                    }
                }
                sp.finish()?;
                select
            }
        };
        mt.select |= select;

        let add = |mt: &mut MonTable, name: &str, type_: Type| -> Result<()> {
            if mt.has_column(name) {
                return Err(OvsdbError::syntax(format!("column {name} mentioned more than once")));
            }
            mt.columns.push(MonColumn { name: name.to_string(), type_, select });
            Ok(())
        };
        match columns.and_then(Value::as_array) {
            Some(cols) => {
                for c in cols {
                    let name = c.as_str().ok_or_else(|| OvsdbError::syntax("array of column names expected"))?;
                    let col = mt
                        .schema
                        .column(name)
                        .ok_or_else(|| OvsdbError::syntax(format!("{name} is not a valid column name")))?;
                    add(mt, name, col.type_)?;
                }
            }
            None => {
                // Every column but _uuid: the user columns and _version.
                let mut all: Vec<(String, Type)> =
                    mt.schema.columns.values().map(|c| (c.name.clone(), c.type_.clone())).collect();
                let v = mt.schema.column("_version").expect("implicit column");
                all.push((v.name, v.type_));
                for (name, t) in all {
                    add(mt, &name, t)?;
                }
            }
        }

        if !version.is_conditional() {
            return Ok(None);
        }
        let cond = match where_ {
            Some(w) => Condition::from_json(&mt.schema, w, None)?,
            None => Condition::default(),
        };
        Ok(Some(cond))
    }

    pub fn version(&self) -> MonitorVersion {
        self.version
    }

    /// The monitored tables' names.
    pub fn tables(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    /// The current condition of a monitored table (V2/V3).
    pub fn condition(&self, table: &str) -> Option<&Condition> {
        self.tables.get(table)?.condition.as_ref()
    }

    /// The reply to the monitor request: every row of the tables that
    /// select "initial" (and, V2/V3, match the condition), as
    /// `<table-updates>` (`{"new": ROW}`) or `<table-updates2>`
    /// (`{"initial": ROW}`). `{}` when there is none.
    pub fn initial(&self, db: &Database) -> Value {
        let mut out = Map::new();
        for (tname, mt) in &self.tables {
            if mt.select & INITIAL == 0 {
                continue;
            }
            let Some(t) = db.table(tname) else { continue };
            for (uuid, row) in t.rows() {
                let c = mt.condition.as_ref();
                if let Some(u) = self.row_update(mt, None, Some(row), true, c, c) {
                    add_row(&mut out, tname, uuid, u);
                }
            }
        }
        Value::Object(out)
    }

    fn compute_view_key(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.version.hash(&mut h);
        for (name, t) in &self.tables {
            name.hash(&mut h);
            t.select.hash(&mut h);
            for c in &t.columns {
                c.name.hash(&mut h);
                c.select.hash(&mut h);
            }
            t.tracked.hash(&mut h);
            // Conditions hold JSON values, which don't hash; their text does.
            format!("{:?}", t.condition).hash(&mut h);
        }
        h.finish()
    }

    /// Equal for monitors with the same view (see `same_view`); unequal keys
    /// mean different views.
    pub fn view_key(&self) -> u64 {
        self.view_key
    }

    /// Whether `other` turns every commit into the same update as this one
    /// (same format, tables, columns, selections and conditions), so one
    /// update computed for either serves both. Both watch the same database.
    pub fn same_view(&self, other: &Monitor) -> bool {
        self.version == other.version
            && self.tables.len() == other.tables.len()
            && self.tables.iter().zip(&other.tables).all(|((n, a), (m, b))| n == m && a.same_view(b))
    }

    /// The table updates owed for one committed transaction (the "update",
    /// "update2" or "update3" notification's last param), or None when
    /// nothing monitored changed.
    pub fn update(&self, commit: &Commit) -> Option<Value> {
        let mut out = Map::new();
        for (tname, rows) in &commit.tables {
            let Some(mt) = self.tables.get(tname) else { continue };
            for (uuid, ch) in rows {
                let c = mt.condition.as_ref();
                if let Some(u) = self.row_update(mt, ch.old.as_ref(), ch.new.as_ref(), false, c, c) {
                    add_row(&mut out, tname, uuid, u);
                }
            }
        }
        (!out.is_empty()).then_some(Value::Object(out))
    }

    /// "monitor_cond_change": `requests` maps table names to arrays of
    /// `{"where": [...]}` requests. Returns the `<table-updates2>` to send
    /// (as "update2"/"update3", before the `{}` reply) for the rows entering
    /// the view (inserts, if the table selects inserts) or leaving it
    /// (deletes, if it selects deletes), or None when there is none.
    ///
    /// Errors are OVS's: "monitor-cond-change-requests must be object", "no
    /// table named T", "no table named T in monitor session", "table T no
    /// monitor-cond-change JSON array", "Parsing table T failed: ...",
    /// "changing columns is unsupported" (any `"columns"`), and the
    /// condition's. Nothing changes on error.
    ///
    /// A V1 monitor accepts the request and changes nothing (its `"where"`
    /// are not even parsed), as in OVS.
    pub fn change_condition(&mut self, db: &Database, requests: &Value) -> Result<Option<Value>> {
        let reqs =
            requests.as_object().ok_or_else(|| OvsdbError::syntax("monitor-cond-change-requests must be object"))?;
        let mut changes: Vec<(String, Condition)> = Vec::new();
        for (tname, rv) in reqs {
            if !db.schema.tables.contains_key(tname) {
                return Err(OvsdbError::syntax(format!("no table named {tname}")));
            }
            let mt = self
                .tables
                .get(tname)
                .ok_or_else(|| OvsdbError::syntax(format!("no table named {tname} in monitor session")))?;
            let items = rv
                .as_array()
                .ok_or_else(|| OvsdbError::syntax(format!("table {tname} no monitor-cond-change JSON array")))?;
            for it in items {
                let mut p = Parser::new(it, format!("table {tname}"));
                let columns = p.member("columns", Kind::Array);
                let where_ = p.member("where", Kind::Array);
                p.finish()?;
                if columns.is_some() {
                    return Err(OvsdbError::syntax("changing columns is unsupported"));
                }
                if !self.version.is_conditional() {
                    continue;
                }
                if let Some(w) = where_ {
                    changes.push((tname.clone(), Condition::from_json(&mt.schema, w, None)?));
                }
            }
        }
        if !self.version.is_conditional() {
            return Ok(None);
        }

        // The new condition of each table (the last one given wins), its
        // columns tracked from now on.
        let mut new_conds: BTreeMap<String, Condition> = BTreeMap::new();
        for (tname, cond) in changes {
            let mt = self.tables.get_mut(&tname).expect("checked");
            mt.track_condition_columns(&cond);
            new_conds.insert(tname, cond);
        }

        let mut out = Map::new();
        for (tname, new_cond) in new_conds {
            let mt = &self.tables[&tname];
            let old_cond = mt.condition.clone().unwrap_or_default();
            if old_cond == new_cond {
                continue;
            }
            if let Some(t) = db.table(&tname) {
                for (uuid, row) in t.rows() {
                    // As OVS: the row compared with itself, the old
                    // condition deciding "before" and the new one "after".
                    if let Some(u) = self.row_update(mt, Some(row), Some(row), false, Some(&old_cond), Some(&new_cond))
                    {
                        add_row(&mut out, &tname, uuid, u);
                    }
                }
            }
            self.tables.get_mut(&tname).expect("monitored").condition = Some(new_cond);
            self.view_key = self.compute_view_key();
        }
        Ok((!out.is_empty()).then_some(Value::Object(out)))
    }

    /// "monitor_cond_since" with a history of commits, oldest first, each
    /// with its transaction id. When `last_id` is in it, the changes of the
    /// commits after it, merged per row (first old value, last new value; a
    /// row inserted then deleted disappears), as `<table-updates2>` (`{}`
    /// when none: found, nothing new). None when `last_id` is not there (or
    /// is the zero UUID): the reply is then `[false, ..., initial]`.
    pub fn updates_since(&self, history: &[(Uuid, Commit)], last_id: &Uuid) -> Option<Value> {
        if last_id.is_nil() {
            return None;
        }
        let pos = history.iter().position(|(id, _)| id == last_id)?;
        // table → row → (old, new)
        let mut merged: BTreeMap<&str, BTreeMap<Uuid, MergedChange>> = BTreeMap::new();
        for (_, commit) in &history[pos + 1..] {
            for (tname, rows) in &commit.tables {
                if !self.tables.contains_key(tname) {
                    continue;
                }
                let t = merged.entry(tname.as_str()).or_default();
                for (uuid, ch) in rows {
                    match t.get_mut(uuid) {
                        None => {
                            t.insert(*uuid, (ch.old.as_ref(), ch.new.as_ref()));
                        }
                        Some(e) => {
                            e.1 = ch.new.as_ref();
                            if e.0.is_none() && e.1.is_none() {
                                t.remove(uuid);
                            }
                        }
                    }
                }
            }
        }
        let mut out = Map::new();
        for (tname, rows) in merged {
            let mt = &self.tables[tname];
            let c = mt.condition.as_ref();
            for (uuid, (old, new)) in rows {
                if let Some(u) = self.row_update(mt, old, new, false, c, c) {
                    add_row(&mut out, tname, &uuid, u);
                }
            }
        }
        Some(Value::Object(out))
    }

    /// One `<row-update>` / `<row-update2>`, or None when it is not to be
    /// sent (OVS's `ovsdb_monitor_compose_row_update{,2}`).
    fn row_update(
        &self,
        mt: &MonTable,
        old: Option<&Row>,
        new: Option<&Row>,
        initial: bool,
        old_cond: Option<&Condition>,
        new_cond: Option<&Condition>,
    ) -> Option<Value> {
        let mut kind = match (initial, old, new) {
            (true, _, _) => INITIAL,
            (_, None, _) => INSERT,
            (_, _, None) => DELETE,
            _ => MODIFY,
        };
        if self.version.is_conditional() {
            let in_old = old.is_some_and(|r| old_cond.is_none_or(|c| c.matches_any(r)));
            let in_new = new.is_some_and(|r| new_cond.is_none_or(|c| c.matches_any(r)));
            kind = match kind {
                _ if !in_old && !in_new => NONE,
                INITIAL | INSERT if !in_new => NONE,
                MODIFY if !in_old => INSERT,
                MODIFY if !in_new => DELETE,
                DELETE if !in_old => NONE,
                k => k,
            };
        }
        if mt.select & kind == 0 {
            return None;
        }
        let changed = |c: &MonColumn| match (old, new) {
            (Some(o), Some(n)) => o.get(&c.name) != n.get(&c.name),
            _ => false,
        };
        if kind == MODIFY && !mt.any_change(old?, new?) {
            // Changed back, or only in columns nobody here watches.
            return None;
        }
        let value = |r: Option<&Row>, c: &MonColumn| {
            r.and_then(|r| r.get(&c.name).map(|d| d.into_owned())).unwrap_or_else(|| Datum::empty_for(&c.type_))
        };
        let cols = mt.columns.iter().filter(|c| c.select & kind != 0);

        if !self.version.is_conditional() {
            let mut o = Map::new();
            let mut n = Map::new();
            for c in cols {
                if kind == DELETE || (kind == MODIFY && changed(c)) {
                    o.insert(c.name.clone(), value(old, c).to_json());
                }
                if kind != DELETE {
                    n.insert(c.name.clone(), value(new, c).to_json());
                }
            }
            let mut row = Map::new();
            if kind & (DELETE | MODIFY) != 0 {
                row.insert("old".into(), Value::Object(o));
            }
            if kind & (INITIAL | INSERT | MODIFY) != 0 {
                row.insert("new".into(), Value::Object(n));
            }
            return Some(Value::Object(row));
        }

        if kind == DELETE {
            return Some(json!({"delete": null}));
        }
        let mut diff = Map::new();
        for c in cols {
            if kind == MODIFY {
                if changed(c) {
                    let d = datum_diff(&value(old, c), &value(new, c), &c.type_);
                    diff.insert(c.name.clone(), d.to_json());
                }
            } else {
                let d = value(new, c);
                if !datum_is_default(&d, &c.type_) {
                    diff.insert(c.name.clone(), d.to_json());
                }
            }
        }
        let op = match kind {
            INITIAL => "initial",
            MODIFY => "modify",
            _ => "insert",
        };
        Some(json!({ op: Value::Object(diff) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::{TxnContext, TxnOutcome, execute};
    use std::sync::Arc;

    fn schema() -> Arc<DatabaseSchema> {
        let v = json!({
            "name": "mon", "version": "1.0.0",
            "tables": {
                "T": {"columns": {
                    "name": {"type": "string"},
                    "n": {"type": "integer"},
                    "r": {"type": "real"},
                    "b": {"type": "boolean"},
                    "s": {"type": {"key": "integer", "min": 0, "max": "unlimited"}},
                    "m": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                    "o": {"type": {"key": "string", "min": 0, "max": 1}},
                    "ref": {"type": {"key": {"type": "uuid", "refTable": "U"}, "min": 0, "max": 1}}
                }},
                "U": {"columns": {"x": {"type": "integer"}}}
            }
        });
        Arc::new(DatabaseSchema::from_json(&v).unwrap())
    }

    fn no_locks(_: &str) -> bool {
        false
    }

    /// Runs a transaction that must succeed, applies it, returns the commit
    /// and the results.
    fn run(db: &mut Database, ops: Value) -> (Commit, Vec<Value>) {
        let ctx = TxnContext::new(&no_locks);
        let TxnOutcome::Done(d) = execute(db, ops.as_array().unwrap(), &ctx) else { panic!("blocked") };
        assert!(!d.failed, "{:?}", d.results);
        let c = d.commit.expect("commit");
        db.apply(&c);
        (c, d.results.iter().map(|r| r.to_json()).collect())
    }

    /// Inserts a T row; returns its uuid and the commit.
    fn insert(db: &mut Database, row: Value) -> (Uuid, Commit) {
        let (c, r) = run(db, json!([{"op": "insert", "table": "T", "row": row}]));
        let u = parse_uuid(r[0]["uuid"][1].as_str().unwrap()).unwrap();
        (u, c)
    }

    fn update(db: &mut Database, u: Uuid, row: Value) -> Commit {
        run(
            db,
            json!([{"op": "update", "table": "T", "where": [["_uuid", "==", ["uuid", u.to_string()]]], "row": row}]),
        )
        .0
    }

    fn delete(db: &mut Database, u: Uuid) -> Commit {
        run(db, json!([{"op": "delete", "table": "T", "where": [["_uuid", "==", ["uuid", u.to_string()]]]}])).0
    }

    fn mon(v: MonitorVersion, db: &Database, req: Value) -> Monitor {
        Monitor::new(v, &db.schema, &req).unwrap()
    }

    fn err(v: MonitorVersion, req: Value) -> (String, String) {
        let e = Monitor::new(v, &schema(), &req).unwrap_err();
        (e.tag.to_string(), e.details)
    }

    fn ver(db: &Database, u: Uuid) -> Value {
        json!(["uuid", db.get("T", &u).unwrap().version.to_string()])
    }

    const V1: MonitorVersion = MonitorVersion::V1;
    const V2: MonitorVersion = MonitorVersion::V2;
    const V3: MonitorVersion = MonitorVersion::V3;

    #[test]
    fn v1_all_columns_include_version() {
        let mut db = Database::new(schema());
        let (a, _) = insert(&mut db, json!({"name": "a", "n": 1}));
        let m = mon(V1, &db, json!({"T": {}}));
        let all = |db: &Database, name: &str, n: i64| {
            json!({"name": name, "n": n, "r": 0, "b": false, "s": ["set", []], "m": ["map", []],
                   "o": ["set", []], "ref": ["set", []], "_version": ver(db, a)})
        };
        assert_eq!(m.initial(&db), json!({"T": {a.to_string(): {"new": all(&db, "a", 1)}}}));
        let old_ver = ver(&db, a);
        let c = update(&mut db, a, json!({"n": 2}));
        assert_eq!(
            m.update(&c).unwrap(),
            json!({"T": {a.to_string(): {"old": {"n": 1, "_version": old_ver}, "new": all(&db, "a", 2)}}})
        );
        let full = all(&db, "a", 2);
        let c = delete(&mut db, a);
        assert_eq!(m.update(&c).unwrap(), json!({"T": {a.to_string(): {"old": full}}}));
        // Tables not requested are not reported.
        let (c, _) = run(&mut db, json!([{"op": "insert", "table": "U", "row": {"x": 1}}]));
        assert_eq!(m.update(&c), None);
    }

    #[test]
    fn v1_column_subset_and_select() {
        let mut db = Database::new(schema());
        let m = mon(V1, &db, json!({"T": {"columns": ["name", "s"], "select": {"initial": false, "delete": false}}}));
        let (a, c) = insert(&mut db, json!({"name": "a", "s": ["set", [1, 2]]}));
        assert_eq!(m.initial(&db), json!({}));
        assert_eq!(m.update(&c).unwrap(), json!({"T": {a.to_string(): {"new": {"name": "a", "s": ["set", [1, 2]]}}}}));
        // Unmonitored column only: nothing.
        assert_eq!(m.update(&update(&mut db, a, json!({"n": 5}))), None);
        let c = update(&mut db, a, json!({"s": ["set", [2, 3]]}));
        assert_eq!(
            m.update(&c).unwrap(),
            json!({"T": {a.to_string(): {"old": {"s": ["set", [1, 2]]}, "new": {"name": "a", "s": ["set", [2, 3]]}}}})
        );
        assert_eq!(m.update(&delete(&mut db, a)), None);
    }

    #[test]
    fn monitors_with_one_view_share_it() {
        let mut db = Database::new(schema());
        let cond = |n: i64| json!({"T": {"columns": ["name", "n"], "where": [["n", "==", n]]}});
        let a = mon(V2, &db, cond(1));
        let b = mon(V2, &db, cond(1));
        assert!(a.same_view(&b) && a.view_key() == b.view_key());
        // A different condition, column set, selection or format is another view.
        for other in [
            mon(V2, &db, cond(2)),
            mon(V2, &db, json!({"T": {"columns": ["name"], "where": [["n", "==", 1]]}})),
            mon(
                V2,
                &db,
                json!({"T": {"columns": ["name", "n"], "where": [["n", "==", 1]], "select": {"insert": false}}}),
            ),
            mon(V3, &db, cond(1)),
            mon(V2, &db, json!({"T": {"columns": ["name", "n"], "where": [["n", "==", 1]]}, "U": {}})),
        ] {
            assert!(!a.same_view(&other));
            assert_eq!(a.same_view(&other), other.same_view(&a));
        }
        // A shared view's update is the one each monitor would have made.
        let (_, c) = insert(&mut db, json!({"name": "x", "n": 1}));
        assert_eq!(a.update(&c), b.update(&c));
        // Changing one monitor's condition takes it out of the view.
        let mut b = b;
        b.change_condition(&db, &json!({"T": [{"where": [["n", "==", 2]]}]})).unwrap();
        assert!(!a.same_view(&b));
        assert_ne!(a.view_key(), b.view_key());
        assert!(b.same_view(&mon(V2, &db, cond(2))));
        assert_eq!(b.view_key(), mon(V2, &db, cond(2)).view_key());
    }

    #[test]
    fn v1_per_request_column_selects() {
        let mut db = Database::new(schema());
        let m = mon(
            V1,
            &db,
            json!({"T": [{"columns": ["name"], "select": {"modify": false}}, {"columns": ["n"], "select": {"insert": false}}]}),
        );
        let (a, c) = insert(&mut db, json!({"name": "a", "n": 1}));
        assert_eq!(m.update(&c).unwrap(), json!({"T": {a.to_string(): {"new": {"name": "a"}}}}));
        let c = update(&mut db, a, json!({"name": "b", "n": 2}));
        assert_eq!(m.update(&c).unwrap(), json!({"T": {a.to_string(): {"old": {"n": 1}, "new": {"n": 2}}}}));
        // Only "name" changed, but its request does not select modify:
        // OVS still sends the row, "old" empty, "new" with the columns
        // selecting modify.
        let c = update(&mut db, a, json!({"name": "c"}));
        assert_eq!(m.update(&c).unwrap(), json!({"T": {a.to_string(): {"old": {}, "new": {"n": 2}}}}));
        let c = delete(&mut db, a);
        assert_eq!(m.update(&c).unwrap(), json!({"T": {a.to_string(): {"old": {"name": "c", "n": 2}}}}));
    }

    #[test]
    fn v2_initial_omits_defaults_and_diffs() {
        let mut db = Database::new(schema());
        let (a, _) = insert(
            &mut db,
            json!({"name": "a", "s": ["set", [1, 2, 3]], "m": ["map", [["k1", "v1"], ["k2", "v2"], ["k3", "v3"]]], "o": "x"}),
        );
        let (b, _) = insert(&mut db, json!({}));
        let m = mon(V2, &db, json!({"T": {"columns": ["name", "n", "r", "b", "s", "m", "o"]}}));
        assert_eq!(
            m.initial(&db),
            json!({"T": {
                a.to_string(): {"initial": {"name": "a", "s": ["set", [1, 2, 3]],
                                            "m": ["map", [["k1", "v1"], ["k2", "v2"], ["k3", "v3"]]], "o": "x"}},
                b.to_string(): {"initial": {}}
            }})
        );
        // Sets: elements added or removed; maps: pairs removed, added, or
        // with a new value; scalars and optionals: the new value.
        let c = update(
            &mut db,
            a,
            json!({"name": "z", "n": 7, "r": 1.5, "b": true, "s": ["set", [2, 3, 4]],
                   "m": ["map", [["k2", "v2"], ["k3", "new"], ["k4", "v4"]]], "o": ["set", []]}),
        );
        assert_eq!(
            m.update(&c).unwrap(),
            json!({"T": {a.to_string(): {"modify": {
                "name": "z", "n": 7, "r": 1.5, "b": true, "s": ["set", [1, 4]],
                "m": ["map", [["k1", "v1"], ["k3", "new"], ["k4", "v4"]]], "o": ["set", []]}}}})
        );
        // One-element diffs are bare atoms / one-pair maps.
        let c = update(&mut db, a, json!({"s": ["set", [2, 3]], "m": ["map", [["k2", "v2"], ["k3", "new"]]]}));
        assert_eq!(
            m.update(&c).unwrap(),
            json!({"T": {a.to_string(): {"modify": {"s": 4, "m": ["map", [["k4", "v4"]]]}}}})
        );
        let (d, c) = insert(&mut db, json!({"n": 3, "b": false, "o": "y"}));
        assert_eq!(m.update(&c).unwrap(), json!({"T": {d.to_string(): {"insert": {"n": 3, "o": "y"}}}}));
        let c = delete(&mut db, d);
        assert_eq!(m.update(&c).unwrap(), json!({"T": {d.to_string(): {"delete": null}}}));
    }

    #[test]
    fn v2_default_columns_include_version() {
        let mut db = Database::new(schema());
        let (a, c) = insert(&mut db, json!({"name": "a"}));
        let m = mon(V2, &db, json!({"T": [{}], "U": {"columns": ["x"]}}));
        assert_eq!(
            m.update(&c).unwrap(),
            json!({"T": {a.to_string(): {"insert": {"name": "a", "_version": ver(&db, a)}}}})
        );
        // Any modification changes _version, so it is always reported.
        let c = update(&mut db, a, json!({"ref": ["set", []], "n": 4}));
        assert_eq!(m.update(&c).unwrap(), json!({"T": {a.to_string(): {"modify": {"n": 4, "_version": ver(&db, a)}}}}));
        let m = mon(V2, &db, json!({"T": {"columns": ["_uuid", "name"]}}));
        assert_eq!(
            m.initial(&db),
            json!({"T": {a.to_string(): {"initial": {"_uuid": ["uuid", a.to_string()], "name": "a"}}}})
        );
    }

    #[test]
    fn v2_conditions_enter_and_leave() {
        let mut db = Database::new(schema());
        let (a, _) = insert(&mut db, json!({"name": "a", "n": 1}));
        let (b, _) = insert(&mut db, json!({"name": "b", "n": 5}));
        let m = mon(V2, &db, json!({"T": {"columns": ["name"], "where": [["n", ">", 3], ["name", "==", "zz"]]}}));
        assert_eq!(m.initial(&db), json!({"T": {b.to_string(): {"initial": {"name": "b"}}}}));
        // a enters the view: an insert with its columns.
        let c = update(&mut db, a, json!({"n": 10}));
        assert_eq!(m.update(&c).unwrap(), json!({"T": {a.to_string(): {"insert": {"name": "a"}}}}));
        // b leaves it: a delete.
        let c = update(&mut db, b, json!({"n": 0}));
        assert_eq!(m.update(&c).unwrap(), json!({"T": {b.to_string(): {"delete": null}}}));
        // Out of view before and after: nothing.
        assert_eq!(m.update(&update(&mut db, b, json!({"n": 1, "name": "bb"}))), None);
        // In view, only the (unmonitored) condition column changes: OVS
        // sends an empty modify.
        let c = update(&mut db, a, json!({"n": 11}));
        assert_eq!(m.update(&c).unwrap(), json!({"T": {a.to_string(): {"modify": {}}}}));
        // Neither monitored nor in the condition: nothing.
        assert_eq!(m.update(&update(&mut db, a, json!({"r": 2.5}))), None);
        let c = update(&mut db, a, json!({"name": "aa"}));
        assert_eq!(m.update(&c).unwrap(), json!({"T": {a.to_string(): {"modify": {"name": "aa"}}}}));
        // Inserted / deleted outside the view: nothing.
        let (d, c) = insert(&mut db, json!({"name": "d", "n": 0}));
        assert_eq!(m.update(&c), None);
        assert_eq!(m.update(&delete(&mut db, d)), None);
        let (e, c) = insert(&mut db, json!({"name": "zz"}));
        assert_eq!(m.update(&c).unwrap(), json!({"T": {e.to_string(): {"insert": {"name": "zz"}}}}));
        assert_eq!(m.update(&delete(&mut db, e)).unwrap(), json!({"T": {e.to_string(): {"delete": null}}}));
        // [false] and [true].
        let m = mon(V2, &db, json!({"T": {"columns": ["name"], "where": [false]}}));
        assert_eq!(m.initial(&db), json!({}));
        let m = mon(V2, &db, json!({"T": {"columns": ["name"], "where": [true]}}));
        assert_eq!(m.initial(&db)["T"].as_object().unwrap().len(), 2);
    }

    #[test]
    fn v2_condition_transitions_respect_select() {
        let mut db = Database::new(schema());
        let (a, _) = insert(&mut db, json!({"n": 1}));
        let m = mon(V2, &db, json!({"T": {"columns": ["n"], "where": [["n", "==", 2]], "select": {"insert": false}}}));
        assert_eq!(m.update(&update(&mut db, a, json!({"n": 2}))), None);
        let c = update(&mut db, a, json!({"n": 3}));
        assert_eq!(m.update(&c).unwrap(), json!({"T": {a.to_string(): {"delete": null}}}));
    }

    #[test]
    fn cond_change() {
        let mut db = Database::new(schema());
        let (a, _) = insert(&mut db, json!({"name": "a", "n": 1}));
        let (b, _) = insert(&mut db, json!({"name": "b", "n": 2}));
        let mut m = mon(V2, &db, json!({"T": {"columns": ["name"], "where": [["n", "==", 1]]}, "U": {}}));
        assert_eq!(m.initial(&db), json!({"T": {a.to_string(): {"initial": {"name": "a"}}}}));
        let u = m.change_condition(&db, &json!({"T": [{"where": [["n", "==", 2]]}]})).unwrap();
        assert_eq!(
            u.unwrap(),
            json!({"T": {a.to_string(): {"delete": null}, b.to_string(): {"insert": {"name": "b"}}}})
        );
        assert_eq!(m.condition("T").unwrap().to_json(), json!([["n", "==", 2]]));
        // The same condition again: nothing to send.
        assert_eq!(m.change_condition(&db, &json!({"T": [{"where": [["n", "==", 2]]}]})).unwrap(), None);
        // Updates now follow the new condition.
        let c = update(&mut db, a, json!({"n": 2}));
        assert_eq!(m.update(&c).unwrap(), json!({"T": {a.to_string(): {"insert": {"name": "a"}}}}));
        // Empty: everything.
        let (c2, _) = insert(&mut db, json!({"name": "c", "n": 9}));
        let u = m.change_condition(&db, &json!({"T": [{"where": []}]})).unwrap().unwrap();
        assert_eq!(u["T"].as_object().unwrap().len(), 1);
        assert_eq!(u["T"][c2.to_string()], json!({"insert": {"name": "c"}}));
        // No "where": condition unchanged.
        assert_eq!(m.change_condition(&db, &json!({"T": [{}]})).unwrap(), None);
        // Errors, and nothing applied when one request fails.
        let e = |m: &mut Monitor, v: Value| m.change_condition(&db, &v).unwrap_err();
        assert_eq!(e(&mut m, json!([])).details, "monitor-cond-change-requests must be object");
        assert_eq!(e(&mut m, json!({"X": []})).details, "no table named X");
        let mut m2 = mon(V2, &db, json!({"T": {}}));
        assert_eq!(e(&mut m2, json!({"U": []})).details, "no table named U in monitor session");
        assert_eq!(e(&mut m, json!({"T": {"where": []}})).details, "table T no monitor-cond-change JSON array");
        assert_eq!(e(&mut m, json!({"T": [{"columns": ["n"]}]})).details, "changing columns is unsupported");
        assert_eq!(
            e(&mut m, json!({"T": [{"where": [], "x": 1}]})).details,
            "Parsing table T failed: Member 'x' is present but not allowed here."
        );
        assert_eq!(
            e(&mut m, json!({"T": [{"where": 1}]})).details,
            "Parsing table T failed: Type mismatch for member 'where'."
        );
        assert_eq!(e(&mut m, json!({"T": [{"where": [["nope", "==", 1]]}]})).tag, "unknown column");
        assert_eq!(
            e(&mut m, json!({"U": [{"where": [false]}], "T": [{"where": [["nope", "==", 1]]}]})).tag,
            "unknown column"
        );
        assert!(m.condition("U").unwrap().is_empty());
        // V1 monitors accept and ignore it.
        let mut m1 = mon(V1, &db, json!({"T": {}}));
        assert_eq!(m1.change_condition(&db, &json!({"T": [{"where": [["nope"]]}]})).unwrap(), None);
        assert_eq!(e(&mut m1, json!({"T": [{"columns": []}]})).details, "changing columns is unsupported");
    }

    #[test]
    fn cond_change_tracks_new_condition_columns() {
        let mut db = Database::new(schema());
        let (a, _) = insert(&mut db, json!({"name": "a", "n": 1}));
        let mut m = mon(V2, &db, json!({"T": {"columns": ["name"], "where": [["n", "==", 1]]}}));
        let u = m.change_condition(&db, &json!({"T": [{"where": [["b", "==", false]]}]})).unwrap();
        assert_eq!(u, None);
        // Both n (old condition) and b (new) are tracked now, as in OVS.
        let c = update(&mut db, a, json!({"n": 5}));
        assert_eq!(m.update(&c).unwrap(), json!({"T": {a.to_string(): {"modify": {}}}}));
        let c = update(&mut db, a, json!({"b": true}));
        assert_eq!(m.update(&c).unwrap(), json!({"T": {a.to_string(): {"delete": null}}}));
    }

    #[test]
    fn cond_change_select() {
        let mut db = Database::new(schema());
        let (a, _) = insert(&mut db, json!({"name": "a", "n": 1}));
        let mut m = mon(
            V3,
            &db,
            json!({"T": {"columns": ["name"], "where": [false], "select": {"insert": false, "initial": true}}}),
        );
        assert_eq!(m.initial(&db), json!({}));
        assert_eq!(m.change_condition(&db, &json!({"T": [{"where": [true]}]})).unwrap(), None);
        let u = m.change_condition(&db, &json!({"T": [{"where": [false]}]})).unwrap();
        assert_eq!(u.unwrap(), json!({"T": {a.to_string(): {"delete": null}}}));
    }

    #[test]
    fn v3_updates_since() {
        let mut db = Database::new(schema());
        let m = mon(V3, &db, json!({"T": {"columns": ["name", "s"]}}));
        let mut hist: Vec<(Uuid, Commit)> = Vec::new();
        let (a, c) = insert(&mut db, json!({"name": "a", "s": 1}));
        hist.push((Uuid::new_v4(), c));
        let (b, c) = insert(&mut db, json!({"name": "b"}));
        hist.push((Uuid::new_v4(), c));
        hist.push((Uuid::new_v4(), update(&mut db, a, json!({"s": ["set", [1, 2]]}))));
        hist.push((Uuid::new_v4(), update(&mut db, a, json!({"s": ["set", [2, 3]]}))));
        let (t, c) = insert(&mut db, json!({"name": "tmp"}));
        hist.push((Uuid::new_v4(), c));
        hist.push((Uuid::new_v4(), delete(&mut db, t)));
        hist.push((Uuid::new_v4(), delete(&mut db, b)));
        hist.push((Uuid::new_v4(), update(&mut db, a, json!({"n": 3}))));
        // After the first commit: a modified (one diff from its value then
        // to now), b inserted then deleted: not reported.
        assert_eq!(
            m.updates_since(&hist, &hist[0].0).unwrap(),
            json!({"T": {a.to_string(): {"modify": {"s": ["set", [1, 2, 3]]}}}})
        );
        // After a's last change of s: b existed then, so it is a delete
        // (a's later change of an unmonitored column is not reported).
        assert_eq!(m.updates_since(&hist, &hist[3].0).unwrap(), json!({"T": {b.to_string(): {"delete": null}}}));
        // (Above, tmp was inserted and deleted in between: not reported.)
        // After tmp's insertion: its deletion is.
        assert_eq!(
            m.updates_since(&hist, &hist[4].0).unwrap(),
            json!({"T": {b.to_string(): {"delete": null}, t.to_string(): {"delete": null}}})
        );
        // Latest: found, nothing new.
        assert_eq!(m.updates_since(&hist, &hist[7].0).unwrap(), json!({}));
        assert_eq!(m.updates_since(&hist, &Uuid::new_v4()), None);
        assert_eq!(m.updates_since(&hist, &Uuid::nil()), None);
        assert_eq!(m.update(&hist[7].1), None);
        assert_eq!(m.initial(&db), json!({"T": {a.to_string(): {"initial": {"name": "a", "s": ["set", [2, 3]]}}}}));
    }

    #[test]
    fn last_txn_id() {
        assert_eq!(parse_last_txn_id(&json!(1)).unwrap_err().details, "last-txn-id must be string");
        assert_eq!(parse_last_txn_id(&json!("x")).unwrap_err().details, "last-txn-id must be UUID format.");
        assert!(parse_last_txn_id(&json!("00000000-0000-0000-0000-000000000000")).unwrap().is_nil());
    }

    #[test]
    fn request_errors() {
        let s = |t: &str, d: &str| (t.to_string(), d.to_string());
        let se = |d: &str| s("syntax error", d);
        assert_eq!(err(V2, json!([])), se("monitor-requests must be object"));
        assert_eq!(err(V2, json!({"X": {}})), se("no table named X"));
        assert_eq!(err(V2, json!({"T": 1})), se("Parsing table T failed: Object expected."));
        assert_eq!(err(V2, json!({"T": [1]})), se("Parsing table T failed: Object expected."));
        assert_eq!(
            err(V2, json!({"T": {"columns": "name"}})),
            se("Parsing table T failed: Type mismatch for member 'columns'.")
        );
        assert_eq!(
            err(V2, json!({"T": {"select": []}})),
            se("Parsing table T failed: Type mismatch for member 'select'.")
        );
        assert_eq!(
            err(V1, json!({"T": {"where": []}})),
            se("Parsing table T failed: Member 'where' is present but not allowed here.")
        );
        assert_eq!(
            err(V1, json!({"T": {"a": 1, "b": 2, "c": 3}})),
            se("Parsing table T failed: Member 'a' and 2 other members are present but not allowed here.")
        );
        assert_eq!(
            err(V2, json!({"T": {"select": {"insert": 1}}})),
            se("Parsing table T select failed: Type mismatch for member 'insert'.")
        );
        assert_eq!(
            err(V2, json!({"T": {"select": {"update": true}}})),
            se("Parsing table T select failed: Member 'update' is present but not allowed here.")
        );
        assert_eq!(err(V2, json!({"T": {"columns": [1]}})), se("array of column names expected"));
        assert_eq!(err(V2, json!({"T": {"columns": ["nope"]}})), se("nope is not a valid column name"));
        assert_eq!(err(V2, json!({"T": {"columns": ["n", "n"]}})), se("column n mentioned more than once"));
        assert_eq!(
            err(V1, json!({"T": [{"columns": ["n"]}, {"columns": ["name", "n"]}]})),
            se("column n mentioned more than once")
        );
        assert!(err(V1, json!({"T": [{"columns": ["n"]}, {}]})).1.ends_with("mentioned more than once"));
        assert_eq!(
            err(V2, json!({"T": {"where": [["nope", "==", 1]]}})),
            s("unknown column", "No column nope in table T.")
        );
        assert_eq!(err(V3, json!({"T": {"where": [["n", "==", "x"]]}})).0, "syntax error");
        // Fine: empty requests, empty column lists, implicit columns.
        let sc = schema();
        assert!(Monitor::new(V2, &sc, &json!({})).is_ok());
        assert!(Monitor::new(V2, &sc, &json!({"T": [], "U": {"columns": []}})).is_ok());
        assert!(Monitor::new(V1, &sc, &json!({"T": {"columns": ["_uuid", "_version"]}})).is_ok());
    }

    #[test]
    fn empty_column_list_still_reports_rows() {
        let mut db = Database::new(schema());
        let m1 = mon(V1, &db, json!({"T": {"columns": []}}));
        let m2 = mon(V2, &db, json!({"T": {"columns": []}}));
        let (a, c) = insert(&mut db, json!({"name": "a"}));
        assert_eq!(m1.update(&c).unwrap(), json!({"T": {a.to_string(): {"new": {}}}}));
        assert_eq!(m2.update(&c).unwrap(), json!({"T": {a.to_string(): {"insert": {}}}}));
        let c = update(&mut db, a, json!({"name": "b"}));
        assert_eq!((m1.update(&c), m2.update(&c)), (None, None));
        let c = delete(&mut db, a);
        assert_eq!(m1.update(&c).unwrap(), json!({"T": {a.to_string(): {"old": {}}}}));
        assert_eq!(m2.update(&c).unwrap(), json!({"T": {a.to_string(): {"delete": null}}}));
    }

    #[test]
    fn diff_semantics() {
        let st = Type::from_json(&json!({"key": "integer", "min": 0, "max": "unlimited"})).unwrap();
        let d = |v: Value, t: &Type| crate::db::datum_from_json(t, &v, None).unwrap();
        assert_eq!(
            datum_diff(&d(json!(["set", [1, 2]]), &st), &d(json!(["set", [2, 3]]), &st), &st).to_json(),
            json!(["set", [1, 3]])
        );
        assert_eq!(
            datum_diff(&d(json!(["set", []]), &st), &d(json!(["set", []]), &st), &st).to_json(),
            json!(["set", []])
        );
        let ot = Type::from_json(&json!({"key": "integer", "min": 0, "max": 1})).unwrap();
        assert_eq!(datum_diff(&d(json!(1), &ot), &d(json!(["set", []]), &ot), &ot).to_json(), json!(["set", []]));
        let mt = Type::from_json(&json!({"key": "string", "value": "integer", "min": 0, "max": "unlimited"})).unwrap();
        assert_eq!(
            datum_diff(
                &d(json!(["map", [["a", 1], ["b", 2]]]), &mt),
                &d(json!(["map", [["b", 3], ["c", 4]]]), &mt),
                &mt
            )
            .to_json(),
            json!(["map", [["a", 1], ["b", 3], ["c", 4]]])
        );
        let rt = Type::scalar(crate::atom::AtomicType::Real);
        assert!(datum_is_default(&Datum::scalar(Atom::Real(-0.0)), &rt));
        assert!(!datum_is_default(&Datum::scalar(Atom::Real(0.5)), &rt));
    }
}
