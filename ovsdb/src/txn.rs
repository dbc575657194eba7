//! The transaction engine: RFC 7047 "transact" operations run against a
//! copy-on-write overlay of the database, then the commit-time checks OVS's
//! ovsdb/transaction.c makes (referential integrity, garbage collection,
//! maxRows, weak references, unique indexes). The result is a [`Commit`] for
//! the caller to apply: a failed transaction leaves the database untouched.
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::{
    atom::{Atom, Symbols, parse_uuid},
    condition::Condition,
    datum::Datum,
    db::{
        Commit, Database, Row, RowChange, column_is_mutable, datum_cmp, datum_from_json, datum_refs, datum_to_string,
        is_strong_ref, is_weak_ref, unknown_column,
    },
    error::{OvsdbError, Result},
    fast_hash::{self, FastMap, FastSet},
    mutation::MutationSet,
    op_result::OpResult,
    schema::TableSchema,
    types::{RefType, Type},
};

/// What the transaction may rely on from its caller.
pub struct TxnContext<'a> {
    /// Whether this client holds the named lock ("assert").
    pub has_lock: &'a dyn Fn(&str) -> bool,
    /// Milliseconds since the request first arrived (for "wait" timeouts
    /// when the request is retried).
    pub elapsed_ms: u64,
    /// The caller can park the request and retry it (OVS's triggers): an
    /// unsatisfied "wait" then yields [`TxnOutcome::Blocked`] instead of
    /// the error "not supported".
    pub can_wait: bool,
    /// The server is read-only: operations that write are "not allowed".
    pub read_only: bool,
}

impl<'a> TxnContext<'a> {
    pub fn new(has_lock: &'a dyn Fn(&str) -> bool) -> Self {
        TxnContext { has_lock, elapsed_ms: 0, can_wait: false, read_only: false }
    }
}

/// A transaction that ran to an answer.
#[derive(Debug)]
pub struct TxnDone {
    /// The RFC 7047 result array: one element per operation; after a failed
    /// operation its error object then `null`s; when the commit-time checks
    /// fail, one extra error element. (If storing the commit fails, the
    /// caller appends that error the same way, as ovsdb-server does.)
    pub results: Vec<OpResult>,
    /// What to apply (and log) before replying; None when the transaction
    /// failed or changed nothing.
    pub commit: Option<Commit>,
    /// A "commit" operation asked for durability.
    pub durable: bool,
    /// The "comment" operations' texts, joined by newlines (for the log's
    /// `_comment`).
    pub comment: Option<String>,
    /// Some operation or the commit failed.
    pub failed: bool,
}

impl TxnDone {
    /// Whether the database changes.
    pub fn modifies(&self) -> bool {
        self.commit.is_some()
    }
}

#[derive(Debug)]
pub enum TxnOutcome {
    Done(TxnDone),
    /// A "wait" is not satisfied yet: run the transaction again when the
    /// database changes, or once `timeout_ms` (since the request arrived)
    /// has passed; None means no deadline.
    Blocked {
        timeout_ms: Option<u64>,
    },
}

/// Runs the operations `ops` (the "transact" params after the database
/// name) against `db`.
pub fn execute(db: &Database, ops: &[Value], ctx: &TxnContext) -> TxnOutcome {
    let symbols = prescan_uuid_names(ops);
    let mut x = Exec {
        db,
        ctx,
        changes: BTreeMap::new(),
        created: fast_hash::set_with_capacity(symbols.len()),
        symbols,
        durable: false,
        comments: Vec::new(),
        timeout_ms: None,
    };
    let n = ops.len();
    let mut results = Vec::with_capacity(n + 1);
    let mut failed = false;
    for (i, op) in ops.iter().enumerate() {
        let mut p = OpParser::new(op, i + 1, n);
        let mut read_only_op = false;
        let mut op_name = String::new();
        let mut outcome = Ok(OpResult::Json(json!({})));
        if let Some(name) = p.member("op", Kind::Id, false).and_then(Value::as_str) {
            op_name = name.to_string();
            match op_read_only(name) {
                Some(ro) => {
                    read_only_op = ro;
                    outcome = x.dispatch(name, &mut p);
                }
                None => p.raise(format!("No operation \"{name}\"")),
            }
        }
        // A parse error overrides any other error (as in OVS).
        let mut outcome = match p.finish() {
            Some(e) => Err(e),
            None => outcome,
        };
        if !read_only_op && outcome.is_ok() {
            if ctx.read_only {
                outcome = Err(OvsdbError::new(
                    "not allowed",
                    format!("{op_name} operation not allowed when database server is in read only mode"),
                ));
            } else if db.schema.name.starts_with('_') {
                outcome = Err(OvsdbError::new(
                    "not allowed",
                    format!("{op_name} operation not allowed on table in reserved database {}", db.schema.name),
                ));
            }
        }
        match outcome {
            Ok(v) => results.push(v),
            Err(e) => {
                if e.tag == "not supported" && ctx.can_wait {
                    return TxnOutcome::Blocked { timeout_ms: x.timeout_ms };
                }
                results.push(OpResult::Json(e.to_json()));
                failed = true;
                break;
            }
        }
    }
    results.resize(n.max(results.len()), OpResult::Json(Value::Null));
    let comment = (!x.comments.is_empty()).then(|| x.comments.join("\n"));
    let durable = x.durable;
    let commit = if failed {
        None
    } else {
        match x.precommit() {
            Ok(c) => (!c.is_empty()).then_some(c),
            Err(e) => {
                results.push(OpResult::Json(e.to_json()));
                failed = true;
                None
            }
        }
    };
    TxnOutcome::Done(TxnDone { results, commit, durable, comment, failed })
}

/// Gives every "uuid-name" of an insert its uuid up front, so that rows can
/// refer to rows inserted later in the same transaction (OVS allows this
/// forward reference; IDL clients rely on it).
fn prescan_uuid_names(ops: &[Value]) -> Symbols {
    let mut symbols = fast_hash::map_with_capacity(ops.len());
    for op in ops {
        let Some(o) = op.as_object() else { continue };
        if o.get("op").and_then(Value::as_str) != Some("insert") {
            continue;
        }
        let Some(name) = o.get("uuid-name").and_then(Value::as_str) else { continue };
        if symbols.contains_key(name) {
            continue;
        }
        let uuid = o.get("uuid").and_then(Value::as_str).and_then(parse_uuid).unwrap_or_else(Uuid::new_v4);
        symbols.insert(name.to_string(), uuid);
    }
    symbols
}

/// Whether operation `name` exists, and whether it only reads.
pub(crate) fn op_read_only(name: &str) -> Option<bool> {
    match name {
        "select" | "wait" | "abort" | "comment" | "assert" => Some(true),
        "insert" | "update" | "mutate" | "delete" | "commit" => Some(false),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Operation objects, read as OVS's ovsdb_parser does (same messages).

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A string that is an identifier.
    Id,
    String,
    Integer,
    Boolean,
    Array,
    Object,
}

fn is_id(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

struct OpParser<'v> {
    /// The operation, for the error's "syntax" member.
    op: &'v Value,
    obj: Option<&'v Map<String, Value>>,
    name: String,
    used: HashSet<&'static str>,
    error: Option<OvsdbError>,
}

impl<'v> OpParser<'v> {
    fn new(v: &'v Value, i: usize, n: usize) -> Self {
        let mut p = OpParser {
            op: v,
            obj: v.as_object(),
            name: format!("ovsdb operation {i} of {n}"),
            used: HashSet::new(),
            error: None,
        };
        if p.obj.is_none() {
            p.raise("Object expected.");
        }
        p
    }

    /// Records the first error only.
    fn raise(&mut self, msg: impl AsRef<str>) {
        if self.error.is_none() {
            self.error = Some(
                OvsdbError::syntax(format!("Parsing {} failed: {}", self.name, msg.as_ref())).with_syntax(self.op),
            );
        }
    }

    fn member(&mut self, name: &'static str, kind: Kind, optional: bool) -> Option<&'v Value> {
        let obj = self.obj?;
        let Some(v) = obj.get(name) else {
            if !optional {
                self.raise(format!("Required '{name}' member is missing."));
            }
            return None;
        };
        let ok = match kind {
            Kind::Id => v.as_str().is_some_and(is_id),
            Kind::String => v.is_string(),
            Kind::Integer => v.is_i64() || v.is_u64(),
            Kind::Boolean => v.is_boolean(),
            Kind::Array => v.is_array(),
            Kind::Object => v.is_object(),
        };
        if ok {
            self.used.insert(name);
            Some(v)
        } else {
            self.raise(format!("Type mismatch for member '{name}'."));
            None
        }
    }

    fn check(&self) -> Result<()> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// The first error, or one for members the operation does not take.
    fn finish(mut self) -> Option<OvsdbError> {
        if self.error.is_none()
            && let Some(obj) = self.obj
        {
            let unused: Vec<&String> = obj.keys().filter(|k| !self.used.contains(k.as_str())).collect();
            if let Some(first) = unused.first() {
                let msg = match unused.len() {
                    1 => format!("Member '{first}' is present but not allowed here."),
                    n => format!(
                        "Member '{first}' and {} other member{} are present but not allowed here.",
                        n - 1,
                        if n > 2 { "s" } else { "" }
                    ),
                };
                self.raise(msg);
            }
        }
        self.error
    }
}

/// Internal inconsistency: never expected from any input.
fn bug(what: &str) -> OvsdbError {
    OvsdbError::new("internal error", what.to_string())
}

// ---------------------------------------------------------------------------
// The overlay: rows the transaction changed, over the database's rows.

struct Change<'a> {
    /// The row as the database has it (None: inserted by this transaction).
    old: Option<&'a Row>,
    /// The row now (None: deleted).
    new: Option<Row>,
}

struct Exec<'a, 'c> {
    db: &'a Database,
    ctx: &'c TxnContext<'c>,
    /// table → row → change. Rows hashed, not ordered: a transaction adding
    /// 20,000 rows looks them up many times; `into_commit` sorts them.
    changes: BTreeMap<String, FastMap<Uuid, Change<'a>>>,
    symbols: Symbols,
    /// uuid-names already used by an insert.
    created: FastSet<String>,
    durable: bool,
    comments: Vec<String>,
    /// The smallest "wait" timeout seen.
    timeout_ms: Option<u64>,
}

impl<'a> Exec<'a, '_> {
    /// A row as the transaction sees it.
    fn get(&self, table: &str, uuid: &Uuid) -> Option<&Row> {
        match self.changes.get(table).and_then(|t| t.get(uuid)) {
            Some(ch) => ch.new.as_ref(),
            None => self.db.get(table, uuid),
        }
    }

    /// Whether the row exists now, or existed before the transaction (a
    /// reference to a row deleted here is "still referenced", not
    /// "nonexistent").
    fn known(&self, table: &str, uuid: &Uuid) -> bool {
        self.db.get(table, uuid).is_some() || self.changes.get(table).is_some_and(|t| t.contains_key(uuid))
    }

    /// The rows of a table, in uuid order.
    fn row_uuids(&self, table: &str) -> Vec<Uuid> {
        let ch = self.changes.get(table);
        let mut v: Vec<Uuid> = self
            .db
            .table(table)
            .map(|t| {
                t.rows()
                    .keys()
                    .filter(|u| ch.and_then(|c| c.get(*u)).is_none_or(|c| c.new.is_some()))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        if let Some(ch) = ch {
            v.extend(ch.iter().filter(|(_, c)| c.old.is_none() && c.new.is_some()).map(|(u, _)| *u));
            v.sort();
        }
        v
    }

    /// The rows matching `cond`.
    fn query(&self, table: &str, cond: &Condition) -> Vec<Uuid> {
        if let Some(u) = cond.uuid_eq() {
            return self.get(table, &u).filter(|r| cond.matches_all(r)).map(|_| vec![u]).unwrap_or_default();
        }
        self.row_uuids(table).into_iter().filter(|u| self.get(table, u).is_some_and(|r| cond.matches_all(r))).collect()
    }

    /// The row, made writable in the overlay.
    fn row_mut(&mut self, table: &str, uuid: &Uuid) -> Option<&mut Row> {
        let db = self.db;
        let t = self.changes.entry(table.to_string()).or_default();
        if !t.contains_key(uuid) {
            let old = db.get(table, uuid)?;
            t.insert(*uuid, Change { old: Some(old), new: Some(old.clone()) });
        }
        t.get_mut(uuid)?.new.as_mut()
    }

    fn delete_row(&mut self, table: &str, uuid: &Uuid) {
        let db = self.db;
        let t = self.changes.entry(table.to_string()).or_default();
        match t.get_mut(uuid) {
            Some(ch) if ch.old.is_none() => {
                t.remove(uuid);
            }
            Some(ch) => ch.new = None,
            None => {
                if let Some(old) = db.get(table, uuid) {
                    t.insert(*uuid, Change { old: Some(old), new: None });
                }
            }
        }
    }

    fn table_schema(&self, p: &mut OpParser, member: &'static str) -> Option<&'a TableSchema> {
        let name = p.member(member, Kind::Id, false)?.as_str()?;
        let ts = self.db.schema.tables.get(name);
        if ts.is_none() {
            p.raise(format!("No table named {name}."));
        }
        ts
    }

    // -----------------------------------------------------------------------
    // Operations.

    fn dispatch(&mut self, name: &str, p: &mut OpParser) -> Result<OpResult> {
        match name {
            "insert" => self.insert(p),
            "select" => self.select(p),
            "update" => self.update(p),
            "mutate" => self.mutate(p),
            "delete" => self.delete(p),
            "wait" => self.wait(p),
            "commit" => self.commit(p),
            "abort" => Err(OvsdbError::new("aborted", "aborted by request")),
            "comment" => self.comment(p),
            "assert" => self.assert(p),
            _ => Err(bug("unknown operation")),
        }
    }

    fn insert(&mut self, p: &mut OpParser) -> Result<OpResult> {
        let ts = self.table_schema(p, "table");
        let uuid_json = p.member("uuid", Kind::String, true);
        let uuid_name = p.member("uuid-name", Kind::Id, true).and_then(Value::as_str);
        let row_json = p.member("row", Kind::Object, false);
        p.check()?;
        let (Some(ts), Some(row_json)) = (ts, row_json) else { return Err(bug("insert: members missing")) };

        let mut uuid = None;
        if let Some(s) = uuid_json.and_then(Value::as_str) {
            let bad_uuid = || OvsdbError::syntax("bad uuid").with_syntax(uuid_json.unwrap_or(&Value::Null));
            let u = parse_uuid(s).ok_or_else(bad_uuid)?;
            if self.get(&ts.name, &u).is_some() || self.changes.get(&ts.name).is_some_and(|t| t.contains_key(&u)) {
                return Err(OvsdbError::new(
                    "duplicate uuid",
                    "This UUID would duplicate a UUID already present within the table or deleted within the same \
                     transaction.",
                )
                .with_syntax(uuid_json.unwrap_or(&Value::Null)));
            }
            uuid = Some(u);
        }
        if let Some(name) = uuid_name {
            if !self.created.insert(name.to_string()) {
                return Err(OvsdbError::new(
                    "duplicate uuid-name",
                    "This \"uuid-name\" appeared on an earlier \"insert\" operation.",
                )
                .with_syntax(&Value::String(name.to_string())));
            }
            let sym = *self.symbols.entry(name.to_string()).or_insert_with(Uuid::new_v4);
            uuid = Some(uuid.unwrap_or(sym));
        }
        let uuid = uuid.unwrap_or_else(Uuid::new_v4);

        let mut row = match self.db.table(&ts.name) {
            Some(t) => Row::with_layout(t.layout(), uuid, Uuid::new_v4()),
            None => Row::new_default(ts, uuid, Uuid::new_v4()),
        };
        for (cname, d) in self.parse_row(ts, row_json)? {
            // `_uuid` and `_version` may be given (and are checked) but the
            // row's own identity wins, as in OVS: only user columns are set.
            let _ = row.columns.insert(cname, d);
        }
        // Defaults the row did not override must satisfy the constraints too
        // (e.g. an enum that does not include "").
        for (i, c) in ts.columns.values().enumerate() {
            let d = row.columns.at(i);
            if d.len() == 1 {
                check_atoms(d, &c.type_)?;
            }
        }
        let t = self.changes.entry(ts.name.clone()).or_default();
        t.insert(uuid, Change { old: None, new: Some(row) });
        Ok(OpResult::Insert(uuid))
    }

    /// A `<row>` object: its columns (implicit ones included) and values.
    fn parse_row(&self, ts: &TableSchema, v: &Value) -> Result<Vec<(String, Datum)>> {
        let o = v.as_object().ok_or_else(|| OvsdbError::syntax("row must be JSON object"))?;
        let mut out = Vec::with_capacity(o.len());
        for (cname, cv) in o {
            // User columns by reference (`TableSchema::column` copies, for
            // the implicit ones).
            let d = match ts.columns.get(cname) {
                Some(col) => datum_from_json(&col.type_, cv, Some(&self.symbols))?,
                None => {
                    let col = ts.column(cname).ok_or_else(|| unknown_column(cname, &ts.name))?;
                    datum_from_json(&col.type_, cv, Some(&self.symbols))?
                }
            };
            out.push((cname.clone(), d));
        }
        Ok(out)
    }

    fn select(&mut self, p: &mut OpParser) -> Result<OpResult> {
        let ts = self.table_schema(p, "table");
        let where_ = p.member("where", Kind::Array, false);
        let columns_json = p.member("columns", Kind::Array, true);
        let sort_json = p.member("sort", Kind::Array, true);
        p.check()?;
        let (Some(ts), Some(where_)) = (ts, where_) else { return Err(bug("select: members missing")) };
        let cond = Condition::from_json(ts, where_, Some(&self.symbols))?;
        let columns = column_set(ts, columns_json)?;
        let sort = match sort_json {
            Some(s) => column_set(ts, Some(s))?,
            None => Vec::new(),
        };
        let mut rows: Vec<&Row> = self.query(&ts.name, &cond).iter().filter_map(|u| self.get(&ts.name, u)).collect();
        if columns_json.is_some() && !columns.iter().any(|c| c == "_uuid") {
            // Without _uuid, rows identical in the selected columns collapse.
            let mut seen = HashSet::new();
            rows.retain(|r| seen.insert(columns.iter().map(|c| r.get(c).map(|d| d.into_owned())).collect::<Vec<_>>()));
        }
        if !sort.is_empty() {
            rows.sort_by(|a, b| {
                sort.iter()
                    .map(|c| match (a.get(c), b.get(c)) {
                        (Some(x), Some(y)) => datum_cmp(&x, &y),
                        _ => std::cmp::Ordering::Equal,
                    })
                    .find(|o| o.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
        }
        let rows: Vec<Value> = rows.iter().map(|r| r.to_json_columns(&columns)).collect();
        Ok(OpResult::Json(json!({"rows": rows})))
    }

    fn update(&mut self, p: &mut OpParser) -> Result<OpResult> {
        let ts = self.table_schema(p, "table");
        let where_ = p.member("where", Kind::Array, false);
        let row_json = p.member("row", Kind::Object, false);
        p.check()?;
        let (Some(ts), Some(where_), Some(row_json)) = (ts, where_, row_json) else {
            return Err(bug("update: members missing"));
        };
        let values = self.parse_row(ts, row_json)?;
        for (cname, _) in &values {
            let mutable = ts.columns.get(cname).is_some_and(column_is_mutable);
            if !mutable {
                return Err(OvsdbError::constraint(format!(
                    "Cannot update immutable column {cname} in table {}.",
                    ts.name
                ))
                .with_syntax(p.op));
            }
        }
        let cond = Condition::from_json(ts, where_, Some(&self.symbols))?;
        let matches = self.query(&ts.name, &cond);
        for u in &matches {
            let same = self.get(&ts.name, u).is_some_and(|r| values.iter().all(|(c, d)| r.columns.get(c) == Some(d)));
            if same {
                continue;
            }
            let row = self.row_mut(&ts.name, u).ok_or_else(|| bug("update: matched row vanished"))?;
            for (c, d) in &values {
                // Only mutable user columns get here (checked above).
                let _ = row.columns.insert(c, d.clone());
            }
        }
        Ok(OpResult::Json(json!({"count": matches.len()})))
    }

    fn mutate(&mut self, p: &mut OpParser) -> Result<OpResult> {
        let ts = self.table_schema(p, "table");
        let where_ = p.member("where", Kind::Array, false);
        let mutations_json = p.member("mutations", Kind::Array, false);
        p.check()?;
        let (Some(ts), Some(where_), Some(mutations_json)) = (ts, where_, mutations_json) else {
            return Err(bug("mutate: members missing"));
        };
        let mutations = MutationSet::from_json(ts, mutations_json, Some(&self.symbols))?;
        let cond = Condition::from_json(ts, where_, Some(&self.symbols))?;
        let matches = self.query(&ts.name, &cond);
        if !mutations.is_empty() {
            for u in &matches {
                let row = self.row_mut(&ts.name, u).ok_or_else(|| bug("mutate: matched row vanished"))?;
                mutations.execute(row)?;
            }
        }
        Ok(OpResult::Json(json!({"count": matches.len()})))
    }

    fn delete(&mut self, p: &mut OpParser) -> Result<OpResult> {
        let where_ = p.member("where", Kind::Array, false);
        let ts = self.table_schema(p, "table");
        p.check()?;
        let (Some(ts), Some(where_)) = (ts, where_) else { return Err(bug("delete: members missing")) };
        let cond = Condition::from_json(ts, where_, Some(&self.symbols))?;
        let matches = self.query(&ts.name, &cond);
        for u in &matches {
            self.delete_row(&ts.name, u);
        }
        Ok(OpResult::Json(json!({"count": matches.len()})))
    }

    fn wait(&mut self, p: &mut OpParser) -> Result<OpResult> {
        let timeout = p.member("timeout", Kind::Integer, true);
        let where_ = p.member("where", Kind::Array, false);
        let columns_json = p.member("columns", Kind::Array, true);
        let until = p.member("until", Kind::String, false).and_then(Value::as_str);
        let rows_json = p.member("rows", Kind::Array, false).and_then(Value::as_array);
        let ts = self.table_schema(p, "table");
        p.check()?;
        let (Some(ts), Some(where_), Some(until), Some(rows_json)) = (ts, where_, until, rows_json) else {
            return Err(bug("wait: members missing"));
        };
        let cond = Condition::from_json(ts, where_, Some(&self.symbols))?;
        let columns = column_set(ts, columns_json)?;
        let timeout_ms = match timeout {
            None => None,
            Some(t) => match t.as_u64() {
                Some(ms) => {
                    self.timeout_ms = Some(self.timeout_ms.map_or(ms, |cur| cur.min(ms)));
                    Some(ms)
                }
                None => return Err(OvsdbError::syntax("timeout must be nonnegative")),
            },
        };
        if until != "==" && until != "!=" {
            return Err(OvsdbError::syntax("\"until\" must be \"==\" or \"!=\""));
        }
        // The expected rows, reduced to the compared columns (defaults for
        // what a row leaves out), without duplicates.
        let mut expected = HashSet::new();
        for rj in rows_json {
            let mut row = Row::new_default(ts, Uuid::nil(), Uuid::nil());
            for (cname, d) in self.parse_row(ts, rj)? {
                match cname.as_str() {
                    "_uuid" => row.uuid = d.keys.first().and_then(Atom::as_uuid).unwrap_or_default(),
                    "_version" => row.version = d.keys.first().and_then(Atom::as_uuid).unwrap_or_default(),
                    // parse_row only lets the table's columns through.
                    _ => {
                        let _ = row.columns.insert(cname, d);
                    }
                }
            }
            expected.insert(project(&row, &columns));
        }
        let mut actual = HashSet::new();
        let mut equal = true;
        for u in self.query(&ts.name, &cond) {
            let Some(r) = self.get(&ts.name, &u) else { continue };
            let key = project(r, &columns);
            if !expected.contains(&key) {
                equal = false;
                break;
            }
            actual.insert(key);
        }
        let equal = equal && actual.len() == expected.len();
        if (until == "==") == equal {
            return Ok(OpResult::Json(json!({})));
        }
        match timeout_ms {
            Some(t) if self.ctx.elapsed_ms >= t => Err(OvsdbError::new(
                "timed out",
                if self.ctx.elapsed_ms > 0 {
                    format!("\"wait\" timed out after {} ms", self.ctx.elapsed_ms)
                } else {
                    "\"where\" clause test failed".to_string()
                },
            )),
            // `execute` turns this into Blocked when the caller can retry.
            _ => Err(OvsdbError::new("not supported", "triggers not supported")),
        }
    }

    fn commit(&mut self, p: &mut OpParser) -> Result<OpResult> {
        if p.member("durable", Kind::Boolean, false) == Some(&Value::Bool(true)) {
            self.durable = true;
        }
        Ok(OpResult::Json(json!({})))
    }

    fn comment(&mut self, p: &mut OpParser) -> Result<OpResult> {
        if let Some(c) = p.member("comment", Kind::String, false).and_then(Value::as_str) {
            self.comments.push(c.to_string());
        }
        Ok(OpResult::Json(json!({})))
    }

    fn assert(&mut self, p: &mut OpParser) -> Result<OpResult> {
        let Some(lock) = p.member("lock", Kind::Id, false).and_then(Value::as_str) else {
            return Ok(OpResult::Json(json!({})));
        };
        if (self.ctx.has_lock)(lock) {
            Ok(OpResult::Json(json!({})))
        } else {
            Err(OvsdbError::new("not owner", format!("Asserted lock {lock} not held.")))
        }
    }
}

/// Checks each atom of `d` against the type's constraints (not the count).
fn check_atoms(d: &Datum, t: &Type) -> Result<()> {
    for k in &d.keys {
        t.key.check(k)?;
    }
    if let (Some(vt), Some(vals)) = (&t.value, &d.values) {
        for v in vals {
            vt.check(v)?;
        }
    }
    Ok(())
}

/// A "columns" member: distinct known column names; absent means all.
fn column_set(ts: &TableSchema, v: Option<&Value>) -> Result<Vec<String>> {
    let Some(v) = v else {
        let mut all = vec!["_uuid".to_string(), "_version".to_string()];
        all.extend(ts.columns.keys().cloned());
        return Ok(all);
    };
    let bad = || OvsdbError::syntax("array of distinct column names expected");
    let items = v.as_array().ok_or_else(bad)?;
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for it in items {
        let s = it.as_str().ok_or_else(bad)?;
        if ts.column(s).is_none() {
            return Err(OvsdbError::syntax(format!("{s} is not a valid column name")));
        }
        if out.iter().any(|c| c == s) {
            return Err(bad());
        }
        out.push(s.to_string());
    }
    Ok(out)
}

/// A row's values in `columns`.
fn project(r: &Row, columns: &[String]) -> Vec<Option<Datum>> {
    columns.iter().map(|c| r.get(c).map(|d| d.into_owned())).collect()
}

// ---------------------------------------------------------------------------
// Commit-time processing, in OVS's order (ovsdb_txn_precommit).

/// Net change, per (table, row), of the strong references to it. Table
/// names are borrowed from the schema.
type RefDelta<'a> = FastMap<(&'a str, Uuid), i64>;

impl<'a> Exec<'a, '_> {
    fn precommit(mut self) -> Result<Commit> {
        self.drop_unchanged();
        let mut delta = RefDelta::default();
        self.count_strong_refs(&mut delta)?;
        self.check_deleted_unreferenced(&delta)?;
        self.collect_garbage(&mut delta);
        self.check_max_rows()?;
        self.assess_weak_refs()?;
        self.check_indexes()?;
        self.check_types()?;
        Ok(self.into_commit())
    }

    /// Rows modified back to what they were are not changes.
    fn drop_unchanged(&mut self) {
        for t in self.changes.values_mut() {
            t.retain(|_, c| match (&c.old, &c.new) {
                (Some(o), Some(n)) => o.columns != n.columns,
                (None, None) => false,
                _ => true,
            });
        }
        self.changes.retain(|_, t| !t.is_empty());
    }

    fn strong_refs_in_db(&self, table: &str, uuid: &Uuid) -> i64 {
        self.db.table(table).map_or(0, |t| t.strong_refs_to(uuid)) as i64
    }

    fn refs_now(&self, delta: &RefDelta, table: &str, uuid: &Uuid) -> i64 {
        self.strong_refs_in_db(table, uuid) + delta.get(&(table, *uuid)).copied().unwrap_or(0)
    }

    /// Counts strong references added and removed; an added one must point
    /// at a row that exists (or existed: then deleting it fails below).
    fn count_strong_refs(&self, delta: &mut RefDelta<'a>) -> Result<()> {
        let schema: &'a crate::schema::DatabaseSchema = &self.db.schema;
        for (tname, rows) in &self.changes {
            let Some(ts) = schema.tables.get(tname) else { continue };
            for (uuid, ch) in rows {
                for (i, c) in ts.columns.values().enumerate() {
                    if !is_strong_ref(&c.type_.key) && !c.type_.value.as_ref().is_some_and(is_strong_ref) {
                        continue;
                    }
                    let old = ch.old.map(|r| r.columns.at(i));
                    let new = ch.new.as_ref().map(|r| r.columns.at(i));
                    if old == new {
                        continue;
                    }
                    let (added, removed) = added_removed(old, new);
                    for r in datum_refs(tname, uuid, &c.type_, &added) {
                        if r.kind != RefType::Strong {
                            continue;
                        }
                        if !self.known(r.table, &r.uuid) {
                            return Err(OvsdbError::new(
                                "referential integrity violation",
                                format!(
                                    "Table {tname} column {} row {uuid} references nonexistent row {} in table {}.",
                                    c.name, r.uuid, r.table
                                ),
                            ));
                        }
                        *delta.entry((r.table, r.uuid)).or_default() += 1;
                    }
                    for r in datum_refs(tname, uuid, &c.type_, &removed) {
                        if r.kind == RefType::Strong {
                            *delta.entry((r.table, r.uuid)).or_default() -= 1;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn check_deleted_unreferenced(&self, delta: &RefDelta) -> Result<()> {
        for (tname, rows) in &self.changes {
            for (uuid, ch) in rows {
                if ch.new.is_some() {
                    continue;
                }
                let n = self.refs_now(delta, tname, uuid);
                if n > 0 {
                    return Err(OvsdbError::new(
                        "referential integrity violation",
                        format!("cannot delete {tname} row {uuid} because of {n} remaining reference(s)"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Deletes rows of non-root tables that nothing refers to any more,
    /// among the rows the transaction touched or changed references to, and
    /// then whatever only they referred to.
    fn collect_garbage(&mut self, delta: &mut RefDelta<'a>) {
        let schema: &'a crate::schema::DatabaseSchema = &self.db.schema;
        // Rows of root tables are never garbage: only the others are seeds. A
        // row may be queued more than once (new, and referenced anew): its
        // second turn finds it referenced or gone. The outcome doesn't depend
        // on the order.
        let mut work: VecDeque<(&'a str, Uuid)> = VecDeque::new();
        for (t, rows) in &self.changes {
            let Some((t, _)) = schema.tables.get_key_value(t).filter(|(_, ts)| !ts.is_root) else { continue };
            work.extend(rows.iter().filter(|(_, c)| c.new.is_some()).map(|(u, _)| (t.as_str(), *u)));
        }
        work.extend(delta.keys().copied());
        while let Some((t, u)) = work.pop_front() {
            let root = schema.tables.get(t).is_none_or(|ts| ts.is_root);
            if root || self.refs_now(delta, t, &u) > 0 {
                continue;
            }
            let (Some(row), Some(ts)) = (self.get(t, &u).cloned(), schema.tables.get(t)) else { continue };
            self.delete_row(t, &u);
            for (i, c) in ts.columns.values().enumerate() {
                for r in datum_refs(t, &u, &c.type_, row.columns.at(i)) {
                    if r.kind != RefType::Strong {
                        continue;
                    }
                    let key = (r.table, r.uuid);
                    *delta.entry(key).or_default() -= 1;
                    if self.refs_now(delta, key.0, &key.1) <= 0 {
                        work.push_back(key);
                    }
                }
            }
        }
        self.changes.retain(|_, t| !t.is_empty());
    }

    fn check_max_rows(&self) -> Result<()> {
        for (tname, rows) in &self.changes {
            let Some(ts) = self.db.schema.tables.get(tname) else { continue };
            let Some(max) = ts.max_rows else { continue };
            let mut n = self.db.table(tname).map_or(0, |t| t.len()) as i64;
            for c in rows.values() {
                n += c.new.is_some() as i64 - c.old.is_some() as i64;
            }
            if n > max as i64 {
                return Err(OvsdbError::constraint(format!(
                    "transaction causes \"{tname}\" table to contain {n} rows, greater than the schema-defined limit of {max} row(s)"
                )));
            }
        }
        Ok(())
    }

    /// Removes weak references to rows that are gone: references added by
    /// this transaction to rows that do not exist, and references (old or
    /// new) to rows this transaction deleted. A column left with fewer
    /// elements than its minimum fails the transaction.
    fn assess_weak_refs(&mut self) -> Result<()> {
        let mut deleted: FastSet<(String, Uuid)> = FastSet::default();
        let mut to_assess: BTreeSet<(String, Uuid)> = BTreeSet::new();
        for (t, rows) in &self.changes {
            // Rows of a table without weak reference columns have nothing to
            // assess themselves (only their deletion matters, to referrers).
            let has_weak = self.db.schema.tables.get(t).is_some_and(|ts| {
                ts.columns
                    .values()
                    .any(|c| is_weak_ref(&c.type_.key) || c.type_.value.as_ref().is_some_and(is_weak_ref))
            });
            for (u, c) in rows {
                match (&c.old, &c.new) {
                    (Some(_), None) => {
                        deleted.insert((t.clone(), *u));
                        if let Some(table) = self.db.table(t) {
                            to_assess.extend(table.weak_referrers_of(u).cloned());
                        }
                    }
                    (_, Some(_)) if has_weak => {
                        to_assess.insert((t.clone(), *u));
                    }
                    (_, Some(_)) => {}
                    (None, None) => {}
                }
            }
        }
        for (t, u) in to_assess {
            let Some(ts) = self.db.schema.tables.get(&t) else { continue };
            let Some(row) = self.get(&t, &u) else { continue };
            let old = self.db.get(&t, &u);
            let mut fixed: Vec<(String, Datum)> = Vec::new();
            for c in ts.columns.values() {
                let weak_key = is_weak_ref(&c.type_.key);
                let weak_value = c.type_.value.as_ref().is_some_and(is_weak_ref);
                if !weak_key && !weak_value {
                    continue;
                }
                let Some(d) = row.columns.get(&c.name) else { continue };
                let added = match old.and_then(|o| o.columns.get(&c.name)) {
                    None => d.clone(),
                    Some(o) if o == d => Datum::empty_for(&c.type_),
                    Some(o) => d.difference(o),
                };
                let mut zero = false;
                let mut keep_keys = Vec::with_capacity(d.len());
                let mut keep_vals = d.values.as_ref().map(|_| Vec::with_capacity(d.len()));
                for (i, k) in d.keys.iter().enumerate() {
                    let v = d.values.as_ref().and_then(|vals| vals.get(i));
                    let is_added = match v {
                        Some(v) => added.get(k) == Some(v),
                        None => added.contains_key(k),
                    };
                    let mut gone = false;
                    let targets = [
                        (weak_key, Some(k), &c.type_.key),
                        (weak_value, v, c.type_.value.as_ref().unwrap_or(&c.type_.key)),
                    ];
                    for (weak, atom, base) in targets {
                        let (true, Some(Atom::Uuid(target)), Some(rt)) = (weak, atom, &base.ref_table) else {
                            continue;
                        };
                        let missing = self.get(rt, target).is_none();
                        if missing && (is_added || deleted.contains(&(rt.clone(), *target))) {
                            gone = true;
                            zero |= is_added && target.is_nil();
                        }
                    }
                    if !gone {
                        keep_keys.push(k.clone());
                        if let (Some(kv), Some(v)) = (keep_vals.as_mut(), v) {
                            kv.push(v.clone());
                        }
                    }
                }
                if keep_keys.len() == d.len() {
                    continue;
                }
                let removed = d.len() - keep_keys.len();
                if (keep_keys.len() as u64) < c.type_.min {
                    return Err(OvsdbError::constraint(if zero && old.is_none() {
                        format!(
                            "Weak reference column \"{}\" in \"{t}\" row {u} (inserted within this transaction) contained all-zeros UUID (probably as the default value for this column) but deleting this value caused a constraint volation because this column is not allowed to be empty.",
                            c.name
                        )
                    } else {
                        format!(
                            "Deletion of {removed} weak reference(s) to deleted (or never-existing) rows from column \"{}\" in \"{t}\" row {u} {}caused this column to become empty, but constraints on this column disallow an empty column.",
                            c.name,
                            if old.is_none() { "(inserted within this transaction) " } else { "" }
                        )
                    }));
                }
                fixed.push((c.name.clone(), Datum { keys: keep_keys, values: keep_vals }));
            }
            if !fixed.is_empty() {
                let row = self.row_mut(&t, &u).ok_or_else(|| bug("weak refs: row vanished"))?;
                row.columns.extend(fixed);
            }
        }
        Ok(())
    }

    /// No two rows may share the values of an index's columns.
    fn check_indexes(&self) -> Result<()> {
        for (tname, rows) in &self.changes {
            let Some(table) = self.db.table(tname) else { continue };
            let ts = &table.schema;
            for (i, index) in ts.indexes.iter().enumerate() {
                let mut seen: FastMap<std::borrow::Cow<[Datum]>, &Row> = FastMap::default();
                for ch in rows.values() {
                    let Some(row) = &ch.new else { continue };
                    let key = table.index_key_ref(i, row);
                    if let Some(other) = seen.get(&key) {
                        return Err(self.duplicate_index_error(ts, index, other, row));
                    }
                    // Rows the transaction did not touch keep their values.
                    for u in table.index_lookup(i, &key) {
                        if !rows.contains_key(u)
                            && let Some(other) = table.get(u)
                        {
                            return Err(self.duplicate_index_error(ts, index, other, row));
                        }
                    }
                    seen.insert(key, row);
                }
            }
        }
        Ok(())
    }

    fn duplicate_index_error(&self, ts: &TableSchema, index: &[String], a: &Row, b: &Row) -> OvsdbError {
        // A predictable order for the two rows (OVS: by all non-uuid columns,
        // the greater first).
        let cmp = ts
            .columns
            .values()
            .filter(|c| {
                c.type_.key.atype != crate::atom::AtomicType::Uuid
                    && c.type_.value.as_ref().is_none_or(|v| v.atype != crate::atom::AtomicType::Uuid)
            })
            .map(|c| match (a.columns.get(&c.name), b.columns.get(&c.name)) {
                (Some(x), Some(y)) => datum_cmp(x, y),
                _ => std::cmp::Ordering::Equal,
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal);
        let (a, b) = if cmp.is_lt() { (b, a) } else { (a, b) };
        let values = |r: &Row| {
            english_list(
                index
                    .iter()
                    .map(|c| match (r.columns.get(c), ts.columns.get(c)) {
                        (Some(d), Some(col)) => datum_to_string(d, &col.type_),
                        _ => String::new(),
                    })
                    .collect(),
            )
        };
        let cols = format!(
            "column{} {}",
            if index.len() > 1 { "s" } else { "" },
            english_list(index.iter().map(|c| format!("\"{c}\"")).collect())
        );
        let describe = |title: &str, r: &Row| {
            let ch = self.changes.get(&ts.name).and_then(|t| t.get(&r.uuid));
            let how = match ch.map(|c| c.old) {
                None => "existed in the database before this transaction and was not modified by the transaction.".to_string(),
                Some(None) => "was inserted by this transaction.".to_string(),
                Some(Some(old)) if old.columns == r.columns => {
                    "existed in the database before this transaction and was not modified by the transaction.".to_string()
                }
                Some(Some(old)) if index.iter().all(|c| old.columns.get(c) == r.columns.get(c)) => {
                    "existed in the database before this transaction, which modified some of the row's columns but not any columns in this index.".to_string()
                }
                Some(Some(old)) => format!("had the following index values before the transaction: {}.", values(old)),
            };
            format!("{title} row, with UUID {}, {how}", r.uuid)
        };
        OvsdbError::constraint(format!(
            "Transaction causes multiple rows in \"{}\" table to have identical values ({}) for index on {cols}.  {}  {}",
            ts.name,
            values(a),
            describe("First", a),
            describe("Second", b)
        ))
    }

    /// Every changed value must fit its column (parsing and mutation already
    /// made sure; this keeps a bug from ever reaching the database).
    fn check_types(&self) -> Result<()> {
        for (tname, rows) in &self.changes {
            let Some(ts) = self.db.schema.tables.get(tname) else { continue };
            for ch in rows.values() {
                let Some(new) = &ch.new else { continue };
                for (i, c) in ts.columns.values().enumerate() {
                    let d = new.columns.at(i);
                    if ch.old.is_some_and(|o| o.columns.at(i) == d) {
                        continue;
                    }
                    d.check(&c.type_)?;
                }
            }
        }
        Ok(())
    }

    /// The change set, modified rows getting new versions.
    fn into_commit(self) -> Commit {
        let mut commit = Commit::new(self.db.schema.clone());
        for (tname, rows) in self.changes {
            // Collected into uuid order at once (a sort and a dense build,
            // not one insert per row).
            let out: BTreeMap<Uuid, RowChange> = rows
                .into_iter()
                .filter_map(|(uuid, ch)| {
                    let old = ch.old.cloned();
                    let new = match (ch.new, &old) {
                        (Some(n), Some(o)) if n.columns == o.columns => return None,
                        (Some(mut n), Some(_)) => {
                            n.version = Uuid::new_v4();
                            Some(n)
                        }
                        (None, None) => return None,
                        (n, _) => n,
                    };
                    Some((uuid, RowChange { old, new }))
                })
                .collect();
            if !out.is_empty() {
                commit.tables.insert(tname, out);
            }
        }
        commit
    }
}

/// Elements of `new` not in `old`, and of `old` not in `new` (map pairs
/// compared whole).
fn added_removed(old: Option<&Datum>, new: Option<&Datum>) -> (Datum, Datum) {
    match (old, new) {
        (Some(o), Some(n)) => (n.difference(o), o.difference(n)),
        (None, Some(n)) => (n.clone(), Datum::empty_set()),
        (Some(o), None) => (Datum::empty_set(), o.clone()),
        (None, None) => (Datum::empty_set(), Datum::empty_set()),
    }
}

/// "a", "a and b", "a, b, and c".
fn english_list(items: Vec<String>) -> String {
    let n = items.len();
    let mut s = String::new();
    for (i, it) in items.into_iter().enumerate() {
        s.push_str(match i {
            0 => "",
            _ if i < n - 1 => ", ",
            _ if n > 2 => ", and ",
            _ => " and ",
        });
        s.push_str(&it);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests::test_schema;
    use crate::op_result::results_to_json;
    use std::sync::Arc;

    fn no_locks(_: &str) -> bool {
        false
    }

    fn exec_ctx(db: &Database, ops: Value, ctx: &TxnContext) -> TxnDone {
        match execute(db, ops.as_array().expect("ops array"), ctx) {
            TxnOutcome::Done(d) => d,
            TxnOutcome::Blocked { .. } => panic!("unexpectedly blocked"),
        }
    }

    fn exec(db: &Database, ops: Value) -> TxnDone {
        exec_ctx(db, ops, &TxnContext::new(&no_locks))
    }

    /// Runs a transaction that must succeed and applies it.
    fn run(db: &mut Database, ops: Value) -> Vec<Value> {
        let d = exec(db, ops);
        assert!(!d.failed, "{}", results_to_json(&d.results));
        if let Some(c) = &d.commit {
            db.apply(c);
        }
        d.results.iter().map(OpResult::to_json).collect()
    }

    /// Runs a transaction that must fail; returns its results.
    fn fail(db: &Database, ops: Value) -> Vec<Value> {
        let d = exec(db, ops);
        assert!(d.failed && d.commit.is_none(), "{}", results_to_json(&d.results));
        d.results.iter().map(OpResult::to_json).collect()
    }

    /// The error object of a failed transaction (the last non-null result).
    fn error_of(db: &Database, ops: Value) -> (String, String) {
        let r = fail(db, ops);
        let e = r.iter().rev().find(|v| !v.is_null()).unwrap();
        (e["error"].as_str().unwrap().to_string(), e["details"].as_str().unwrap().to_string())
    }

    /// The "syntax" member of a failed transaction's error.
    fn syntax_of(db: &Database, ops: Value) -> Option<String> {
        let r = fail(db, ops);
        r.iter().rev().find(|v| !v.is_null()).unwrap()["syntax"].as_str().map(str::to_string)
    }

    #[test]
    fn errors_carry_the_offending_json_as_ovs() {
        let mut db = new_db();
        let u = Uuid::new_v4();
        run(&mut db, json!([{"op": "insert", "table": "Small", "uuid": u.to_string(), "row": {"a": 1}}]));
        let dup = json!([{"op": "insert", "table": "Small", "uuid": u.to_string(), "row": {"a": 2}}]);
        let e = error_of(&db, dup.clone());
        assert_eq!(
            e.1,
            "This UUID would duplicate a UUID already present within the table or deleted within the same transaction."
        );
        assert_eq!(syntax_of(&db, dup), Some(format!("\"{u}\"")));
        let bad = json!([{"op": "insert", "table": "Small", "uuid": "nope", "row": {}}]);
        assert_eq!(syntax_of(&db, bad), Some("\"nope\"".into()));
        // The whole operation, keys sorted, for an immutable column's update.
        let upd = json!([{"op": "update", "table": "Root", "where": [], "row": {"fixed": "g"}}]);
        assert_eq!(
            syntax_of(&db, upd),
            Some(r#"{"op":"update","row":{"fixed":"g"},"table":"Root","where":[]}"#.into())
        );
        // The mutation alone for an immutable column's mutate.
        let mutate = json!([{"op": "mutate", "table": "Root", "where": [], "mutations": [["fixed", "insert", "x"]]}]);
        assert_eq!(syntax_of(&db, mutate), Some(r#"["fixed","insert","x"]"#.into()));
    }

    fn uuid_of(v: &Value) -> Uuid {
        parse_uuid(v[1].as_str().unwrap()).unwrap()
    }

    fn count(db: &Database, t: &str) -> usize {
        db.table(t).unwrap().len()
    }

    fn col(db: &Database, t: &str, u: &Uuid, c: &str) -> Value {
        db.get(t, u).unwrap().columns[c].to_json()
    }

    fn new_db() -> Database {
        Database::new(test_schema())
    }

    #[test]
    fn insert_select_and_forward_named_uuids() {
        let mut db = new_db();
        let r = run(
            &mut db,
            json!([
                // Refers to "k" before the insert that names it.
                {"op": "insert", "table": "Root", "uuid-name": "r", "row": {"name": "a", "kids": ["named-uuid", "k"], "n": 7}},
                {"op": "insert", "table": "Kid", "uuid-name": "k", "row": {"name": "kid", "pet": ["named-uuid", "p"]}},
                {"op": "insert", "table": "Pet", "uuid-name": "p", "row": {"name": "rex"}},
                {"op": "select", "table": "Root", "where": [["kids", "includes", ["named-uuid", "k"]]], "columns": ["name", "n"]},
                {"op": "select", "table": "Kid", "where": [["name", "==", "nobody"]]}
            ]),
        );
        assert_eq!(r.len(), 5);
        assert_eq!(r[3], json!({"rows": [{"name": "a", "n": 7}]}));
        assert_eq!(r[4], json!({"rows": []}));
        let (root, kid, pet) = (uuid_of(&r[0]["uuid"]), uuid_of(&r[1]["uuid"]), uuid_of(&r[2]["uuid"]));
        assert_eq!(col(&db, "Root", &root, "kids"), json!(["uuid", kid.to_string()]));
        assert_eq!(col(&db, "Kid", &kid, "pet"), json!(["uuid", pet.to_string()]));
        // All columns by default, _uuid and _version included.
        let r = run(
            &mut db,
            json!([{"op": "select", "table": "Root", "where": [["_uuid", "==", ["uuid", root.to_string()]]]}]),
        );
        let row = &r[0]["rows"][0];
        assert_eq!(row["_uuid"], json!(["uuid", root.to_string()]));
        assert_eq!(row["_version"], json!(["uuid", db.get("Root", &root).unwrap().version.to_string()]));
        assert_eq!(row["name"], json!("a"));
        assert_eq!(row["m"], json!(["map", []]));
        assert_eq!(row.as_object().unwrap().len(), 2 + db.schema.tables["Root"].columns.len());
    }

    #[test]
    fn insert_uuid_extension_and_duplicates() {
        let mut db = new_db();
        let u = Uuid::new_v4();
        let r = run(&mut db, json!([{"op": "insert", "table": "Small", "uuid": u.to_string(), "row": {"a": 1}}]));
        assert_eq!(r[0], json!({"uuid": ["uuid", u.to_string()]}));
        assert!(db.get("Small", &u).is_some());
        let e = error_of(&db, json!([{"op": "insert", "table": "Small", "uuid": u.to_string(), "row": {"a": 2}}]));
        assert_eq!(e.0, "duplicate uuid");
        // Deleted in this transaction: still not reusable.
        let e = error_of(
            &db,
            json!([{"op": "delete", "table": "Small", "where": []},
                   {"op": "insert", "table": "Small", "uuid": u.to_string(), "row": {"a": 2}}]),
        );
        assert_eq!(e.0, "duplicate uuid");
        assert_eq!(
            error_of(&db, json!([{"op": "insert", "table": "Small", "uuid": "nope", "row": {}}])),
            ("syntax error".into(), "bad uuid".into())
        );
        let e = error_of(
            &db,
            json!([{"op": "insert", "table": "Pet", "uuid-name": "x", "row": {}}, {"op": "insert", "table": "Pet", "uuid-name": "x", "row": {}}]),
        );
        assert_eq!(e.0, "duplicate uuid-name");
        // A name no insert defines.
        let e = error_of(
            &db,
            json!([{"op": "insert", "table": "Root", "row": {"name": "z", "kids": ["named-uuid", "ghost"]}}]),
        );
        assert_eq!(e.0, "syntax error");
        // "uuid" and "uuid-name" together: references get the chosen uuid.
        let v = Uuid::new_v4();
        let r = run(
            &mut db,
            json!([{"op": "insert", "table": "Root", "row": {"name": "q", "kids": ["named-uuid", "k"]}},
                   {"op": "insert", "table": "Kid", "uuid": v.to_string(), "uuid-name": "k", "row": {}}]),
        );
        assert_eq!(r[1]["uuid"], json!(["uuid", v.to_string()]));
        assert_eq!(db.table("Kid").unwrap().strong_refs_to(&v), 1);
    }

    #[test]
    fn select_columns_sort_distinct() {
        let mut db = new_db();
        run(
            &mut db,
            json!([{"op": "insert", "table": "Root", "row": {"name": "b", "n": 1}},
                   {"op": "insert", "table": "Root", "row": {"name": "a", "n": 2}},
                   {"op": "insert", "table": "Root", "row": {"name": "c", "n": 1}}]),
        );
        let r = run(
            &mut db,
            json!([{"op": "select", "table": "Root", "where": [], "columns": ["n"], "sort": ["n"]},
                   {"op": "select", "table": "Root", "where": [], "columns": ["name"], "sort": ["name"]},
                   {"op": "select", "table": "Root", "where": [["n", "<", 2]], "columns": ["name", "n"], "sort": ["n", "name"]}]),
        );
        assert_eq!(r[0], json!({"rows": [{"n": 1}, {"n": 2}]}));
        assert_eq!(r[1], json!({"rows": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}));
        assert_eq!(r[2], json!({"rows": [{"name": "b", "n": 1}, {"name": "c", "n": 1}]}));
        let e = error_of(&db, json!([{"op": "select", "table": "Root", "where": [], "columns": ["nope"]}]));
        assert_eq!(e, ("syntax error".into(), "nope is not a valid column name".into()));
        let e = error_of(&db, json!([{"op": "select", "table": "Root", "where": [], "columns": ["n", "n"]}]));
        assert_eq!(e.1, "array of distinct column names expected");
        let e = error_of(&db, json!([{"op": "select", "table": "Root", "where": [["nope", "==", 1]]}]));
        assert_eq!(e.0, "unknown column");
    }

    #[test]
    fn update_counts_versions_and_immutability() {
        let mut db = new_db();
        let r = run(
            &mut db,
            json!([{"op": "insert", "table": "Root", "row": {"name": "a", "n": 1, "fixed": "f"}},
                   {"op": "insert", "table": "Root", "row": {"name": "b", "n": 9}}]),
        );
        let a = uuid_of(&r[0]["uuid"]);
        let v0 = db.get("Root", &a).unwrap().version;
        let d = exec(&db, json!([{"op": "update", "table": "Root", "where": [["name", "==", "a"]], "row": {"n": 5}}]));
        assert_eq!(d.results, vec![json!({"count": 1})]);
        let c = d.commit.unwrap();
        let ch = &c.tables["Root"][&a];
        assert_eq!(ch.old.as_ref().unwrap().version, v0);
        assert_ne!(ch.new.as_ref().unwrap().version, v0);
        db.apply(&c);
        assert_eq!(col(&db, "Root", &a, "n"), json!(5));
        // Matching rows are counted even when the value is already there.
        let d = exec(&db, json!([{"op": "update", "table": "Root", "where": [], "row": {"n": 9}}]));
        assert_eq!(d.results, vec![json!({"count": 2})]);
        assert_eq!(d.commit.unwrap().tables["Root"].len(), 1);
        // Nothing changes: nothing to commit.
        let d = exec(&db, json!([{"op": "update", "table": "Root", "where": [["name", "==", "a"]], "row": {"n": 5}}]));
        assert!(!d.failed && d.commit.is_none() && !d.modifies());
        let e = error_of(&db, json!([{"op": "update", "table": "Root", "where": [], "row": {"fixed": "g"}}]));
        assert_eq!(e, ("constraint violation".into(), "Cannot update immutable column fixed in table Root.".into()));
        let e = error_of(
            &db,
            json!([{"op": "update", "table": "Root", "where": [], "row": {"_uuid": ["uuid", a.to_string()]}}]),
        );
        assert_eq!(e.0, "constraint violation");
        let e = error_of(&db, json!([{"op": "update", "table": "Root", "where": [], "row": {"zz": 1}}]));
        assert_eq!(e, ("unknown column".into(), "No column zz in table Root.".into()));
        let e = error_of(&db, json!([{"op": "update", "table": "Root", "where": [], "row": {"n": 101}}]));
        assert_eq!(e.0, "constraint violation");
        let e = error_of(&db, json!([{"op": "update", "table": "Root", "where": [], "row": {"n": "x"}}]));
        assert_eq!(e.0, "syntax error");
    }

    #[test]
    fn mutate_and_delete() {
        let mut db = new_db();
        run(
            &mut db,
            json!([{"op": "insert", "table": "Root", "row": {"name": "a", "n": 1}},
                   {"op": "insert", "table": "Root", "row": {"name": "b", "n": 2}},
                   {"op": "insert", "table": "Root", "row": {"name": "c", "n": 3}}]),
        );
        let r = run(
            &mut db,
            json!([{"op": "mutate", "table": "Root", "where": [["n", ">=", 2]], "mutations": [["n", "+=", 10], ["m", "insert", ["map", [["k", "v"]]]]]},
                   {"op": "select", "table": "Root", "where": [["n", ">", 10]], "columns": ["name", "m"], "sort": ["name"]}]),
        );
        assert_eq!(r[0], json!({"count": 2}));
        assert_eq!(
            r[1],
            json!({"rows": [{"name": "b", "m": ["map", [["k", "v"]]]}, {"name": "c", "m": ["map", [["k", "v"]]]}]})
        );
        // No mutations: just the count.
        let d = exec(&db, json!([{"op": "mutate", "table": "Root", "where": [], "mutations": []}]));
        assert_eq!(d.results, vec![json!({"count": 3})]);
        assert!(d.commit.is_none());
        let e = error_of(&db, json!([{"op": "mutate", "table": "Root", "where": [], "mutations": [["n", "+=", 90]]}]));
        assert_eq!(e.0, "constraint violation");
        let e = error_of(&db, json!([{"op": "mutate", "table": "Root", "where": [], "mutations": [["n", "/=", 0]]}]));
        assert_eq!(e.0, "domain error");
        let r = run(&mut db, json!([{"op": "delete", "table": "Root", "where": [["n", ">", 10]]}]));
        assert_eq!(r[0], json!({"count": 2}));
        assert_eq!(count(&db, "Root"), 1);
        let r = run(&mut db, json!([{"op": "delete", "table": "Root", "where": [["n", ">", 10]]}]));
        assert_eq!(r[0], json!({"count": 0}));
    }

    #[test]
    fn changes_within_one_transaction() {
        let mut db = new_db();
        // Insert, modify, see it, then delete: nothing to commit.
        let d = exec(
            &db,
            json!([{"op": "insert", "table": "Root", "uuid-name": "x", "row": {"name": "a"}},
                   {"op": "update", "table": "Root", "where": [["_uuid", "==", ["named-uuid", "x"]]], "row": {"n": 3}},
                   {"op": "mutate", "table": "Root", "where": [["name", "==", "a"]], "mutations": [["n", "*=", 2]]},
                   {"op": "select", "table": "Root", "where": [], "columns": ["n"]},
                   {"op": "delete", "table": "Root", "where": [["_uuid", "==", ["named-uuid", "x"]]]},
                   {"op": "select", "table": "Root", "where": [], "columns": ["n"]}]),
        );
        assert!(!d.failed);
        assert_eq!(d.results[3], json!({"rows": [{"n": 6}]}));
        assert_eq!(d.results[5], json!({"rows": []}));
        assert!(d.commit.is_none());
        // A successful op followed by a failing one: nothing happens.
        run(&mut db, json!([{"op": "insert", "table": "Root", "row": {"name": "keep"}}]));
        let r = fail(
            &db,
            json!([{"op": "delete", "table": "Root", "where": []},
                   {"op": "insert", "table": "Root", "row": {"name": 5}},
                   {"op": "select", "table": "Root", "where": []}]),
        );
        assert_eq!(r[0], json!({"count": 1}));
        assert_eq!(r[1]["error"], json!("syntax error"));
        assert_eq!(r[2], Value::Null);
        assert_eq!(r.len(), 3);
        assert_eq!(count(&db, "Root"), 1);
    }

    #[test]
    fn wait_operation() {
        let mut db = new_db();
        run(&mut db, json!([{"op": "insert", "table": "Root", "row": {"name": "a", "n": 1}}]));
        let w = |until: &str, rows: Value, timeout: Option<i64>| {
            let mut op = json!({"op": "wait", "table": "Root", "where": [["name", "==", "a"]], "columns": ["name", "n"], "until": until, "rows": rows});
            if let Some(t) = timeout {
                op["timeout"] = json!(t);
            }
            json!([op])
        };
        assert_eq!(run(&mut db, w("==", json!([{"name": "a", "n": 1}]), Some(0)))[0], json!({}));
        assert_eq!(run(&mut db, w("!=", json!([{"name": "a", "n": 2}]), Some(0)))[0], json!({}));
        // Columns left out of an expected row take their defaults.
        assert_eq!(run(&mut db, w("!=", json!([{"name": "a"}]), Some(0)))[0], json!({}));
        let e = error_of(&db, w("==", json!([{"name": "a", "n": 2}]), Some(0)));
        assert_eq!(e, ("timed out".into(), "\"where\" clause test failed".into()));
        let e = error_of(&db, w("==", json!([]), Some(0)));
        assert_eq!(e.0, "timed out");
        // Without a timeout, and nobody to retry: not supported.
        let e = error_of(&db, w("==", json!([]), None));
        assert_eq!(e, ("not supported".into(), "triggers not supported".into()));
        // With a caller that can retry.
        let mut ctx = TxnContext::new(&no_locks);
        ctx.can_wait = true;
        let blocked = |ops: Value, ctx: &TxnContext| match execute(&db, ops.as_array().unwrap(), ctx) {
            TxnOutcome::Blocked { timeout_ms } => Some(timeout_ms),
            TxnOutcome::Done(_) => None,
        };
        assert_eq!(blocked(w("==", json!([]), None), &ctx), Some(None));
        assert_eq!(blocked(w("==", json!([]), Some(500)), &ctx), Some(Some(500)));
        ctx.elapsed_ms = 600;
        let d = exec_ctx(&db, w("==", json!([]), Some(500)), &ctx);
        assert_eq!(d.results[0].to_json()["details"], json!("\"wait\" timed out after 600 ms"));
        let e = error_of(&db, w("<>", json!([]), Some(0)));
        assert_eq!(e.1, "\"until\" must be \"==\" or \"!=\"");
        let e = error_of(&db, w("==", json!([]), Some(-1)));
        assert_eq!(e.1, "timeout must be nonnegative");
        let e = error_of(&db, w("==", json!([{"zz": 1}]), Some(0)));
        assert_eq!(e.0, "unknown column");
    }

    #[test]
    fn commit_abort_comment_assert() {
        let db = new_db();
        let d = exec(
            &db,
            json!([{"op": "insert", "table": "Pet", "row": {}}, {"op": "commit", "durable": true},
                   {"op": "comment", "comment": "hi"}, {"op": "comment", "comment": "there"}]),
        );
        assert!(d.durable && !d.failed);
        assert_eq!(d.comment.as_deref(), Some("hi\nthere"));
        assert_eq!(d.results, vec![json!({"uuid": d.results[0].to_json()["uuid"]}), json!({}), json!({}), json!({})]);
        let d = exec(&db, json!([{"op": "commit", "durable": false}]));
        assert!(!d.durable && !d.failed);
        let r = fail(
            &db,
            json!([{"op": "insert", "table": "Pet", "row": {}}, {"op": "abort"}, {"op": "comment", "comment": "x"}]),
        );
        assert_eq!(r[1], json!({"error": "aborted", "details": "aborted by request"}));
        assert_eq!(r[2], Value::Null);
        let e = error_of(&db, json!([{"op": "assert", "lock": "my_lock"}]));
        assert_eq!(e, ("not owner".into(), "Asserted lock my_lock not held.".into()));
        let mine = |l: &str| l == "my_lock";
        let d = exec_ctx(&db, json!([{"op": "assert", "lock": "my_lock"}]), &TxnContext::new(&mine));
        assert_eq!(d.results, vec![json!({})]);
        let e = error_of(&db, json!([{"op": "commit"}]));
        assert_eq!(e.1, "Parsing ovsdb operation 1 of 1 failed: Required 'durable' member is missing.");
    }

    #[test]
    fn operation_parse_errors() {
        let db = new_db();
        let e = |ops: Value| error_of(&db, ops).1;
        assert_eq!(e(json!([42])), "Parsing ovsdb operation 1 of 1 failed: Object expected.");
        assert_eq!(e(json!([{"op": "frob"}])), "Parsing ovsdb operation 1 of 1 failed: No operation \"frob\"");
        assert_eq!(
            e(json!([{"table": "Root"}])),
            "Parsing ovsdb operation 1 of 1 failed: Required 'op' member is missing."
        );
        assert_eq!(
            e(json!([{"op": "select", "table": "Root"}])),
            "Parsing ovsdb operation 1 of 1 failed: Required 'where' member is missing."
        );
        assert_eq!(
            e(json!([{"op": "select", "table": "Nope", "where": []}])),
            "Parsing ovsdb operation 1 of 1 failed: No table named Nope."
        );
        assert_eq!(
            e(json!([{"op": "select", "table": "Root", "where": {}}])),
            "Parsing ovsdb operation 1 of 1 failed: Type mismatch for member 'where'."
        );
        assert_eq!(
            e(json!([{"op": "select", "table": "Root", "where": [], "x": 1}])),
            "Parsing ovsdb operation 1 of 1 failed: Member 'x' is present but not allowed here."
        );
        assert_eq!(
            e(json!([{"op": "select", "table": "Root", "where": [], "x": 1, "y": 2}])),
            "Parsing ovsdb operation 1 of 1 failed: Member 'x' and 1 other member are present but not allowed here."
        );
        assert!(
            e(json!([{"op": "insert", "table": "Root", "uuid-name": "not an id", "row": {}}]))
                .contains("Type mismatch")
        );
        // A parse error wins over the operation's own error.
        assert!(e(json!([{"op": "abort", "why": 1}])).contains("Member 'why'"));
        let r = fail(
            &db,
            json!([{"op": "select", "table": "Root", "where": []}, {"op": "frob"}, {"op": "select", "table": "Root", "where": []}]),
        );
        assert_eq!(r[0], json!({"rows": []}));
        assert_eq!(r[1]["details"], json!("Parsing ovsdb operation 2 of 3 failed: No operation \"frob\""));
        assert_eq!(r[2], Value::Null);
        // No operations at all: nothing to do.
        let d = exec(&db, json!([]));
        assert!(d.results.is_empty() && !d.failed && d.commit.is_none());
    }

    #[test]
    fn read_only_server() {
        let db = new_db();
        let mut ctx = TxnContext::new(&no_locks);
        ctx.read_only = true;
        let d = exec_ctx(
            &db,
            json!([{"op": "select", "table": "Root", "where": []}, {"op": "insert", "table": "Pet", "row": {}}]),
            &ctx,
        );
        assert!(d.failed);
        assert_eq!(d.results[1].to_json()["error"], json!("not allowed"));
        assert_eq!(
            d.results[1].to_json()["details"],
            json!("insert operation not allowed when database server is in read only mode")
        );
    }

    #[test]
    fn referential_integrity() {
        let mut db = new_db();
        let ghost = Uuid::new_v4();
        // Commit-time errors come as one extra result.
        let r = fail(
            &db,
            json!([{"op": "insert", "table": "Root", "row": {"name": "a", "kids": ["uuid", ghost.to_string()]}}]),
        );
        assert_eq!(r.len(), 2);
        assert!(r[0]["uuid"].is_array());
        assert_eq!(r[1]["error"], json!("referential integrity violation"));
        let d = r[1]["details"].as_str().unwrap();
        assert!(
            d.starts_with("Table Root column kids row ")
                && d.ends_with(&format!("references nonexistent row {ghost} in table Kid.")),
            "{d}"
        );
        let r = run(
            &mut db,
            json!([{"op": "insert", "table": "Root", "row": {"name": "a", "kids": ["named-uuid", "k"]}},
                   {"op": "insert", "table": "Kid", "uuid-name": "k", "row": {}}]),
        );
        let kid = uuid_of(&r[1]["uuid"]);
        let e = error_of(&db, json!([{"op": "delete", "table": "Kid", "where": []}]));
        assert_eq!(
            e,
            (
                "referential integrity violation".into(),
                format!("cannot delete Kid row {kid} because of 1 remaining reference(s)")
            )
        );
        // Referring to a row deleted in the same transaction.
        let e = error_of(
            &db,
            json!([{"op": "delete", "table": "Root", "where": []}, {"op": "delete", "table": "Kid", "where": []},
                   {"op": "insert", "table": "Root", "row": {"name": "b", "kids": ["uuid", kid.to_string()]}}]),
        );
        assert!(e.1.starts_with("cannot delete Kid row"), "{}", e.1);
        // Deleting both together is fine.
        run(
            &mut db,
            json!([{"op": "delete", "table": "Root", "where": []}, {"op": "delete", "table": "Kid", "where": []}]),
        );
        assert_eq!(count(&db, "Kid") + count(&db, "Root"), 0);
    }

    #[test]
    fn garbage_collection() {
        let mut db = new_db();
        // An unreferenced row of a non-root table does not survive its insert.
        let d = exec(&db, json!([{"op": "insert", "table": "Kid", "row": {"name": "orphan"}}]));
        assert!(!d.failed && d.commit.is_none());
        assert!(d.results[0].to_json()["uuid"].is_array());
        let r = run(
            &mut db,
            json!([{"op": "insert", "table": "Root", "uuid-name": "r1", "row": {"name": "r1", "kids": ["named-uuid", "k"]}},
                   {"op": "insert", "table": "Root", "uuid-name": "r2", "row": {"name": "r2", "kids": ["set", [["named-uuid", "k"], ["named-uuid", "k2"]]]}},
                   {"op": "insert", "table": "Kid", "uuid-name": "k", "row": {"pet": ["named-uuid", "p"], "byname": ["map", [["x", ["named-uuid", "p2"]]]]}},
                   {"op": "insert", "table": "Kid", "uuid-name": "k2", "row": {"name": "self", "pet": ["named-uuid", "p"]}},
                   {"op": "insert", "table": "Pet", "uuid-name": "p", "row": {"name": "p"}},
                   {"op": "insert", "table": "Pet", "uuid-name": "p2", "row": {"name": "p2"}}]),
        );
        let (k, k2, p, p2) =
            (uuid_of(&r[2]["uuid"]), uuid_of(&r[3]["uuid"]), uuid_of(&r[4]["uuid"]), uuid_of(&r[5]["uuid"]));
        assert_eq!((count(&db, "Kid"), count(&db, "Pet")), (2, 2));
        // k is still referenced by r2.
        run(
            &mut db,
            json!([{"op": "mutate", "table": "Root", "where": [["name", "==", "r1"]], "mutations": [["kids", "delete", ["uuid", k.to_string()]]]}]),
        );
        assert_eq!((count(&db, "Kid"), count(&db, "Pet")), (2, 2));
        // Now k goes, and p2 with it; p is still held by k2.
        let d = exec(
            &db,
            json!([{"op": "update", "table": "Root", "where": [["name", "==", "r2"]], "row": {"kids": ["uuid", k2.to_string()]}}]),
        );
        let c = d.commit.unwrap();
        assert!(c.tables["Kid"][&k].new.is_none());
        assert!(c.tables["Pet"][&p2].new.is_none());
        assert!(!c.tables["Pet"].contains_key(&p));
        db.apply(&c);
        assert!(db.get("Kid", &k).is_none() && db.get("Pet", &p2).is_none() && db.get("Pet", &p).is_some());
        // Deleting the roots takes everything.
        run(&mut db, json!([{"op": "delete", "table": "Root", "where": []}]));
        assert_eq!((count(&db, "Kid"), count(&db, "Pet")), (0, 0));
        // A self-reference does not keep a row alive.
        let d = exec(
            &db,
            json!([{"op": "insert", "table": "Kid", "uuid-name": "s", "row": {"byname": ["map", []]}},
                                 {"op": "insert", "table": "Root", "row": {"name": "x", "kids": ["named-uuid", "s"]}},
                                 {"op": "delete", "table": "Root", "where": []}]),
        );
        assert!(d.commit.is_none());
    }

    #[test]
    fn weak_references() {
        let mut db = new_db();
        let r = run(
            &mut db,
            json!([{"op": "insert", "table": "Root", "row": {"name": "a", "kids": ["named-uuid", "k"], "fav": ["named-uuid", "k"]}},
                   {"op": "insert", "table": "Kid", "uuid-name": "k", "row": {"pet": ["named-uuid", "p"]}},
                   {"op": "insert", "table": "Pet", "uuid-name": "p", "row": {}},
                   {"op": "insert", "table": "Holder", "row": {"wmap": ["map", [["x", ["named-uuid", "p"]], ["y", ["uuid", Uuid::new_v4().to_string()]]]],
                                                              "must": ["set", [["named-uuid", "k"], ["uuid", Uuid::new_v4().to_string()]]]}}]),
        );
        let (root, k, p, h) =
            (uuid_of(&r[0]["uuid"]), uuid_of(&r[1]["uuid"]), uuid_of(&r[2]["uuid"]), uuid_of(&r[3]["uuid"]));
        // References to rows that never existed were dropped silently.
        assert_eq!(col(&db, "Holder", &h, "wmap"), json!(["map", [["x", ["uuid", p.to_string()]]]]));
        assert_eq!(col(&db, "Holder", &h, "must"), json!(["uuid", k.to_string()]));
        assert_eq!(col(&db, "Root", &root, "fav"), json!(["uuid", k.to_string()]));
        // Garbage-collecting k would empty Holder.must, which needs one element.
        let e = error_of(&db, json!([{"op": "update", "table": "Root", "where": [], "row": {"kids": ["set", []]}}]));
        assert_eq!(e.0, "constraint violation");
        assert_eq!(
            e.1,
            format!(
                "Deletion of 1 weak reference(s) to deleted (or never-existing) rows from column \"must\" in \"Holder\" row {h} caused this column to become empty, but constraints on this column disallow an empty column."
            )
        );
        // Without the holder, k goes and Root.fav and Holder.wmap are cleaned.
        run(&mut db, json!([{"op": "insert", "table": "Holder", "row": {"must": ["uuid", k.to_string()]}}]));
        let d = exec(
            &db,
            json!([{"op": "delete", "table": "Holder", "where": [["wmap", "==", ["map", []]]]},
                   {"op": "update", "table": "Holder", "where": [], "row": {"must": ["set", [["uuid", k.to_string()], ["uuid", root.to_string()]]]}},
                   {"op": "update", "table": "Root", "where": [], "row": {"kids": ["set", []]}}]),
        );
        // The root's uuid is no Kid (dropped at once), then k goes: "must" empties.
        assert!(d.failed);
        assert!(
            d.results[3].to_json()["details"].as_str().unwrap().starts_with("Deletion of 2 weak reference(s)"),
            "{:?}",
            d.results
        );
        run(&mut db, json!([{"op": "delete", "table": "Holder", "where": [["wmap", "==", ["map", []]]]}]));
        let d = exec(
            &db,
            json!([{"op": "update", "table": "Root", "where": [], "row": {"kids": ["set", []]}},
                                 {"op": "update", "table": "Holder", "where": [], "row": {"must": ["set", [["uuid", k.to_string()], ["named-uuid", "k3"]]]}},
                                 {"op": "insert", "table": "Kid", "uuid-name": "k3", "row": {}},
                                 {"op": "insert", "table": "Root", "row": {"name": "b", "kids": ["named-uuid", "k3"]}}]),
        );
        let c = d.commit.expect("commit");
        assert_eq!(c.tables["Root"][&root].new.as_ref().unwrap().columns["fav"].to_json(), json!(["set", []]));
        db.apply(&c);
        assert!(db.get("Kid", &k).is_none() && db.get("Pet", &p).is_none());
        assert_eq!(col(&db, "Holder", &h, "wmap"), json!(["map", []]));
        assert_eq!(col(&db, "Holder", &h, "must").as_array().map(|a| a[0].clone()), Some(json!("uuid")));
        // The default (all-zeros) uuid in a required weak column.
        let e = error_of(&db, json!([{"op": "insert", "table": "Holder", "row": {}}]));
        assert!(
            e.1.starts_with("Weak reference column \"must\" in \"Holder\" row ") && e.1.contains("all-zeros UUID"),
            "{}",
            e.1
        );
    }

    #[test]
    fn unique_indexes() {
        let mut db = new_db();
        let r = run(
            &mut db,
            json!([{"op": "insert", "table": "Root", "row": {"name": "a"}}, {"op": "insert", "table": "Root", "row": {"name": "b"}}]),
        );
        let (a, b) = (uuid_of(&r[0]["uuid"]), uuid_of(&r[1]["uuid"]));
        let e = error_of(&db, json!([{"op": "insert", "table": "Root", "row": {"name": "a"}}]));
        assert_eq!(e.0, "constraint violation");
        assert!(e.1.starts_with("Transaction causes multiple rows in \"Root\" table to have identical values (a) for index on column \"name\".  "), "{}", e.1);
        assert!(e.1.contains(&format!("row, with UUID {a}, existed in the database before this transaction and was not modified by the transaction.")), "{}", e.1);
        assert!(e.1.contains("was inserted by this transaction."), "{}", e.1);
        let e = error_of(
            &db,
            json!([{"op": "insert", "table": "Root", "row": {"name": "c"}}, {"op": "insert", "table": "Root", "row": {"name": "c", "n": 1}}]),
        );
        // The row that sorts greater (n = 1) comes first.
        assert!(e.1.contains("(c) for index on column \"name\".  First row, with UUID"), "{}", e.1);
        let e = error_of(
            &db,
            json!([{"op": "update", "table": "Root", "where": [["name", "==", "a"]], "row": {"name": "b"}}]),
        );
        assert!(
            e.1.contains(&format!("row, with UUID {a}, had the following index values before the transaction: a.")),
            "{}",
            e.1
        );
        let e = error_of(
            &db,
            json!([{"op": "update", "table": "Root", "where": [["name", "==", "a"]], "row": {"n": 4}},
                   {"op": "insert", "table": "Root", "row": {"name": "a"}}]),
        );
        assert!(e.1.contains("which modified some of the row's columns but not any columns in this index."), "{}", e.1);
        // Swapping two names in one transaction is fine.
        run(
            &mut db,
            json!([{"op": "update", "table": "Root", "where": [["name", "==", "a"]], "row": {"name": "tmp"}},
                   {"op": "update", "table": "Root", "where": [["name", "==", "b"]], "row": {"name": "a"}},
                   {"op": "update", "table": "Root", "where": [["name", "==", "tmp"]], "row": {"name": "b"}}]),
        );
        assert_eq!((col(&db, "Root", &a, "name"), col(&db, "Root", &b, "name")), (json!("b"), json!("a")));
        // Deleting frees the value.
        run(
            &mut db,
            json!([{"op": "delete", "table": "Root", "where": [["name", "==", "a"]]}, {"op": "insert", "table": "Root", "row": {"name": "a"}}]),
        );
        // Indexes over several columns.
        run(
            &mut db,
            json!([{"op": "insert", "table": "Small", "row": {"a": 1, "b": "x"}}, {"op": "insert", "table": "Small", "row": {"a": 1, "b": "y"}}]),
        );
        let e =
            error_of(&db, json!([{"op": "update", "table": "Small", "where": [["b", "==", "y"]], "row": {"b": "x"}}]));
        assert!(e.1.contains("identical values (1 and x) for index on columns \"a\" and \"b\""), "{}", e.1);
    }

    #[test]
    fn max_rows() {
        let mut db = new_db();
        run(
            &mut db,
            json!([{"op": "insert", "table": "Small", "row": {"a": 1}}, {"op": "insert", "table": "Small", "row": {"a": 2}}]),
        );
        let e = error_of(&db, json!([{"op": "insert", "table": "Small", "row": {"a": 3}}]));
        assert_eq!(
            e,
            ("constraint violation".into(), "transaction causes \"Small\" table to contain 3 rows, greater than the schema-defined limit of 2 row(s)".into())
        );
        run(
            &mut db,
            json!([{"op": "delete", "table": "Small", "where": [["a", "==", 1]]}, {"op": "insert", "table": "Small", "row": {"a": 3}}]),
        );
        assert_eq!(count(&db, "Small"), 2);
    }

    #[test]
    fn defaults_must_satisfy_constraints() {
        let mut db = new_db();
        let e = error_of(&db, json!([{"op": "insert", "table": "Enum", "row": {}}]));
        assert_eq!(e.0, "constraint violation");
        run(&mut db, json!([{"op": "insert", "table": "Enum", "row": {"kind": "cat"}}]));
        let e = error_of(&db, json!([{"op": "update", "table": "Enum", "where": [], "row": {"kind": "cow"}}]));
        assert_eq!(e.0, "constraint violation");
    }

    /// Columns of every row, by table and uuid (versions aside).
    fn contents(db: &Database) -> BTreeMap<String, BTreeMap<Uuid, BTreeMap<String, Datum>>> {
        db.tables()
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    t.rows()
                        .iter()
                        .map(|(u, r)| (*u, r.columns.iter().map(|(k, d)| (k.clone(), d.clone())).collect()))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn log_round_trip() {
        let mut db = new_db();
        let mut log = Vec::new();
        let mut step = |db: &mut Database, ops: Value| {
            let d = exec(db, ops);
            assert!(!d.failed, "{:?}", d.results);
            let c = d.commit.expect("a change");
            log.push(c.to_log_json());
            db.apply(&c);
        };
        step(
            &mut db,
            json!([{"op": "insert", "table": "Root", "row": {"name": "a", "kids": ["named-uuid", "k"], "fav": ["named-uuid", "k"], "m": ["map", [["x", "y"]]], "r": 2.5}},
                   {"op": "insert", "table": "Kid", "uuid-name": "k", "row": {"pet": ["named-uuid", "p"]}},
                   {"op": "insert", "table": "Pet", "uuid-name": "p", "row": {"name": "rex"}},
                   {"op": "insert", "table": "Small", "row": {"a": 1}}]),
        );
        step(
            &mut db,
            json!([{"op": "mutate", "table": "Root", "where": [], "mutations": [["ints", "insert", ["set", [1, 2]]], ["m", "delete", ["set", ["x"]]]]}]),
        );
        step(&mut db, json!([{"op": "update", "table": "Root", "where": [], "row": {"kids": ["set", []]}}]));
        step(
            &mut db,
            json!([{"op": "delete", "table": "Small", "where": []}, {"op": "insert", "table": "Root", "row": {"name": "b", "n": 3}}]),
        );
        // Inserts carry only non-default columns; modifications only what changed.
        let first = log[0].as_object().unwrap();
        let pet = first["Pet"].as_object().unwrap().values().next().unwrap();
        assert_eq!(pet, &json!({"name": "rex"}));
        let second = log[1]["Root"].as_object().unwrap().values().next().unwrap();
        assert_eq!(second, &json!({"ints": ["set", [1, 2]], "m": ["map", []]}));
        assert!(log[2]["Kid"].as_object().unwrap().values().all(Value::is_null));
        // Replaying the log rebuilds the same database; so does a snapshot.
        let mut replay = new_db();
        for rec in &log {
            replay.apply_log_record(rec).unwrap();
        }
        assert_eq!(contents(&replay), contents(&db));
        let mut snap = new_db();
        snap.apply_log_record(&db.to_snapshot_json()).unwrap();
        assert_eq!(contents(&snap), contents(&db));
        // Derived state came back too: the reference counts.
        let d = exec(&snap, json!([{"op": "delete", "table": "Root", "where": []}]));
        assert!(!d.commit.unwrap().tables.contains_key("Kid"));
        // Ephemeral columns are not logged.
        let d =
            exec(&db, json!([{"op": "update", "table": "Root", "where": [["name", "==", "b"]], "row": {"eph": "e"}}]));
        let c = d.commit.unwrap();
        assert!(!c.is_empty());
        assert_eq!(c.to_log_json(), json!({}));
    }

    #[test]
    fn vswitch_bridge_port_interface() {
        let text = std::fs::read_to_string("/usr/share/openvswitch/vswitch.ovsschema").expect("vswitch.ovsschema");
        let schema = crate::schema::DatabaseSchema::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        let mut db = Database::new(Arc::new(schema));
        let r = run(&mut db, json!([{"op": "insert", "table": "Open_vSwitch", "row": {}}]));
        let ovs = uuid_of(&r[0]["uuid"]);
        assert_eq!(
            error_of(&db, json!([{"op": "insert", "table": "Open_vSwitch", "row": {}}])).0,
            "constraint violation"
        );
        // As ovs-vsctl add-br: verify, mutate the root first (a forward reference), then the inserts.
        let r = run(
            &mut db,
            json!([{"op": "wait", "table": "Open_vSwitch", "timeout": 0, "where": [["_uuid", "==", ["uuid", ovs.to_string()]]],
                    "until": "==", "columns": ["bridges"], "rows": [{"bridges": ["set", []]}]},
                   {"op": "mutate", "table": "Open_vSwitch", "where": [["_uuid", "==", ["uuid", ovs.to_string()]]],
                    "mutations": [["bridges", "insert", ["set", [["named-uuid", "br"]]]], ["next_cfg", "+=", 1]]},
                   {"op": "insert", "table": "Interface", "uuid-name": "i", "row": {"name": "br0", "type": "internal"}},
                   {"op": "insert", "table": "Port", "uuid-name": "p", "row": {"name": "br0", "interfaces": ["named-uuid", "i"]}},
                   {"op": "insert", "table": "Bridge", "uuid-name": "br", "row": {"name": "br0", "ports": ["named-uuid", "p"]}},
                   {"op": "comment", "comment": "ovs-vsctl: ovs-vsctl add-br br0"}]),
        );
        let (iface, port, br) = (uuid_of(&r[2]["uuid"]), uuid_of(&r[3]["uuid"]), uuid_of(&r[4]["uuid"]));
        assert_eq!(col(&db, "Open_vSwitch", &ovs, "bridges"), json!(["uuid", br.to_string()]));
        assert_eq!(col(&db, "Open_vSwitch", &ovs, "next_cfg"), json!(1));
        // Interface names are immutable; names are unique.
        assert_eq!(
            error_of(&db, json!([{"op": "update", "table": "Interface", "where": [], "row": {"name": "x"}}])).0,
            "constraint violation"
        );
        let e = error_of(
            &db,
            json!([{"op": "insert", "table": "Bridge", "uuid-name": "b2", "row": {"name": "br0"}},
                   {"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["bridges", "insert", ["set", [["named-uuid", "b2"]]]]]}]),
        );
        assert_eq!(e.0, "constraint violation");
        // A second port with a mirror that selects it weakly.
        let r = run(
            &mut db,
            json!([{"op": "insert", "table": "Interface", "uuid-name": "i", "row": {"name": "eth1"}},
                   {"op": "insert", "table": "Port", "uuid-name": "p", "row": {"name": "eth1", "interfaces": ["named-uuid", "i"]}},
                   {"op": "insert", "table": "Mirror", "uuid-name": "m", "row": {"name": "m0", "select_src_port": ["named-uuid", "p"]}},
                   {"op": "mutate", "table": "Bridge", "where": [["name", "==", "br0"]],
                    "mutations": [["ports", "insert", ["named-uuid", "p"]], ["mirrors", "insert", ["named-uuid", "m"]]]}]),
        );
        let (eth1, mirror) = (uuid_of(&r[1]["uuid"]), uuid_of(&r[2]["uuid"]));
        assert_eq!(count(&db, "Port"), 2);
        // del-port: the port and its interface are collected, the mirror forgets it.
        run(
            &mut db,
            json!([{"op": "mutate", "table": "Bridge", "where": [], "mutations": [["ports", "delete", ["uuid", eth1.to_string()]]]}]),
        );
        assert_eq!((count(&db, "Port"), count(&db, "Interface")), (1, 1));
        assert_eq!(col(&db, "Mirror", &mirror, "select_src_port"), json!(["set", []]));
        // A Port must keep at least one interface.
        let e =
            error_of(&db, json!([{"op": "update", "table": "Port", "where": [], "row": {"interfaces": ["set", []]}}]));
        assert_eq!(e.0, "syntax error");
        // del-br: dropping the bridge from the root collects everything under it.
        run(
            &mut db,
            json!([{"op": "mutate", "table": "Open_vSwitch", "where": [], "mutations": [["bridges", "delete", ["uuid", br.to_string()]]]}]),
        );
        for t in ["Bridge", "Port", "Interface", "Mirror"] {
            assert_eq!(count(&db, t), 0, "{t}");
        }
        assert!(db.get("Port", &port).is_none() && db.get("Interface", &iface).is_none());
    }
}
