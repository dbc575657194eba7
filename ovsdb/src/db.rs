//! The in-memory database: tables of rows, the change sets ("commits") that
//! transactions produce, and their OVSDB file-format form (as OVS's
//! ovsdb/file.c writes and reads it).
//!
//! Rows only change through [`Database::apply`], which keeps two derived
//! structures in step with the rows: which rows refer to each row (strong
//! reference counts for integrity and garbage collection, weak referrers for
//! clean-up) and the schema's unique indexes.
use std::{borrow::Cow, cmp::Ordering, collections::BTreeMap, sync::Arc};

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{
    atom::{Atom, AtomicType, Symbols, parse_uuid},
    datum::Datum,
    error::{OvsdbError, Result},
    fast_hash::FastMap,
    json_text,
    schema::{ColumnSchema, DatabaseSchema, TableSchema},
    types::{BaseType, RefType, Type, UNLIMITED},
};

/// One row: its identity, its version (changes on every modification) and a
/// value for every user column of its table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub uuid: Uuid,
    pub version: Uuid,
    pub columns: Columns,
}

/// What all rows of one table share: their column names (sorted, the order
/// of the schema's columns) and the default value of each.
#[derive(Debug, PartialEq)]
pub struct RowLayout {
    names: Box<[String]>,
    types: Box<[Type]>,
    defaults: Box<[Datum]>,
}

impl RowLayout {
    fn new(ts: &TableSchema) -> RowLayout {
        RowLayout {
            names: ts.columns.keys().cloned().collect(),
            types: ts.columns.values().map(|c| c.type_.clone()).collect(),
            defaults: ts.columns.values().map(|c| Datum::default_for(&c.type_)).collect(),
        }
    }

    /// Whether rows of `ts` have this layout: the same columns, of the same
    /// types (hence defaults), in the same order.
    fn fits(&self, ts: &TableSchema) -> bool {
        self.names.len() == ts.columns.len()
            && self.names.iter().zip(ts.columns.values()).all(|(n, c)| *n == c.name)
            && self.types.iter().zip(ts.columns.values()).all(|(t, c)| *t == c.type_)
    }

    /// The position of column `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.binary_search_by(|n| n.as_str().cmp(name)).ok()
    }

    /// The layout of the rows of `ts`. Layouts are shared by every row of
    /// tables with the same columns (a row's names cost one pointer), so they
    /// are kept once per distinct table for the life of the process.
    pub fn of(ts: &TableSchema) -> Arc<RowLayout> {
        static LAYOUTS: std::sync::Mutex<Vec<(String, Arc<RowLayout>)>> = std::sync::Mutex::new(Vec::new());
        let mut all = LAYOUTS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, l)) = all.iter().find(|(n, l)| *n == ts.name && l.fits(ts)) {
            return l.clone();
        }
        let l = Arc::new(RowLayout::new(ts));
        all.push((ts.name.clone(), l.clone()));
        l
    }
}

/// A row's column values, one per column of its table, with map-like access
/// by column name (in name order, as the schema lists them). Only values
/// that differ from their column's default are stored (most columns of most
/// rows hold their default: a vswitch Interface has 35 columns, a handful
/// set); the others are read from the layout.
#[derive(Clone)]
pub struct Columns {
    layout: Arc<RowLayout>,
    /// (column position, value), by position; never a default value.
    set: Box<[(u32, Datum)]>,
}

impl Columns {
    /// Every column at its default value.
    pub fn defaults(layout: Arc<RowLayout>) -> Columns {
        Columns { layout, set: Box::new([]) }
    }

    pub fn layout(&self) -> &Arc<RowLayout> {
        &self.layout
    }

    fn find(&self, i: usize) -> std::result::Result<usize, usize> {
        self.set.binary_search_by_key(&(i as u32), |(j, _)| *j)
    }

    pub fn get(&self, name: &str) -> Option<&Datum> {
        self.layout.index_of(name).map(|i| self.at(i))
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.layout.index_of(name).is_some()
    }

    /// The value at position `i`: of [`RowLayout::index_of`], or of the
    /// column in the table schema's `columns` (the same order).
    pub fn at(&self, i: usize) -> &Datum {
        match self.find(i) {
            Ok(k) => &self.set[k].1,
            Err(_) => &self.layout.defaults[i],
        }
    }

    /// Whether the value at position `i` is the column's default.
    pub fn is_default_at(&self, i: usize) -> bool {
        self.find(i).is_err()
    }

    /// Sets the value at position `i`, returning the old one.
    pub fn set_at(&mut self, i: usize, d: Datum) -> Datum {
        let is_default = d == self.layout.defaults[i];
        match self.find(i) {
            Ok(k) if is_default => {
                let mut v = std::mem::take(&mut self.set).into_vec();
                let (_, old) = v.remove(k);
                self.set = v.into_boxed_slice();
                old
            }
            Ok(k) => std::mem::replace(&mut self.set[k].1, d),
            Err(_) if is_default => d,
            Err(k) => {
                let mut v = Vec::with_capacity(self.set.len() + 1);
                v.extend(std::mem::take(&mut self.set).into_vec());
                v.insert(k, (i as u32, d));
                self.set = v.into_boxed_slice();
                self.layout.defaults[i].clone()
            }
        }
    }

    /// Replaces a column's value, returning the old one. A name the table
    /// does not have is refused: the value comes back as `Err`.
    pub fn insert(&mut self, name: impl AsRef<str>, d: Datum) -> std::result::Result<Datum, Datum> {
        match self.layout.index_of(name.as_ref()) {
            Some(i) => Ok(self.set_at(i, d)),
            None => Err(d),
        }
    }

    /// Sets each (known) column; unknown names are skipped.
    pub fn extend<S: AsRef<str>>(&mut self, it: impl IntoIterator<Item = (S, Datum)>) {
        for (n, d) in it {
            let _ = self.insert(n, d);
        }
    }

    pub fn len(&self) -> usize {
        self.layout.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layout.names.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Datum)> {
        self.layout.names.iter().enumerate().map(|(i, n)| (n, self.at(i)))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.layout.names.iter()
    }

    pub fn values(&self) -> impl Iterator<Item = &Datum> {
        (0..self.len()).map(|i| self.at(i))
    }
}

impl PartialEq for Columns {
    fn eq(&self, other: &Self) -> bool {
        if Arc::ptr_eq(&self.layout, &other.layout) || *self.layout == *other.layout {
            self.set == other.set
        } else {
            self.iter().eq(other.iter())
        }
    }
}

impl std::fmt::Debug for Columns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl std::ops::Index<&str> for Columns {
    type Output = Datum;

    /// Panics if the table has no such column (as a map does for a missing key).
    fn index(&self, name: &str) -> &Datum {
        self.get(name).unwrap_or_else(|| panic!("no column {name}"))
    }
}

impl Row {
    /// A row with every column at its default value.
    pub fn new_default(ts: &TableSchema, uuid: Uuid, version: Uuid) -> Row {
        Row { uuid, version, columns: Columns::defaults(RowLayout::of(ts)) }
    }

    /// A row with every column at its default value, for a layout at hand.
    pub fn with_layout(layout: &Arc<RowLayout>, uuid: Uuid, version: Uuid) -> Row {
        Row { uuid, version, columns: Columns::defaults(layout.clone()) }
    }

    /// A column's value, the implicit `_uuid` and `_version` included.
    pub fn get(&self, column: &str) -> Option<Cow<'_, Datum>> {
        match column {
            "_uuid" => Some(Cow::Owned(Datum::scalar(Atom::Uuid(self.uuid)))),
            "_version" => Some(Cow::Owned(Datum::scalar(Atom::Uuid(self.version)))),
            _ => self.columns.get(column).map(Cow::Borrowed),
        }
    }

    /// The row as RFC 7047 `<row>` JSON with the named columns (unknown names
    /// are skipped).
    pub fn to_json_columns<S: AsRef<str>>(&self, columns: &[S]) -> Value {
        let mut o = Map::new();
        for c in columns {
            if let Some(d) = self.get(c.as_ref()) {
                o.insert(c.as_ref().to_string(), d.to_json());
            }
        }
        Value::Object(o)
    }

    /// All columns, `_uuid` and `_version` included.
    pub fn to_json(&self) -> Value {
        let mut o: Map<String, Value> = self.columns.iter().map(|(k, d)| (k.clone(), d.to_json())).collect();
        o.insert("_uuid".into(), Atom::Uuid(self.uuid).to_json());
        o.insert("_version".into(), Atom::Uuid(self.version).to_json());
        Value::Object(o)
    }
}

/// How rows refer to one row: strong references are counted (a row may not
/// be deleted while any remain; a non-root row with none is garbage), weak
/// referrers are remembered so their references can be removed when the row
/// goes away.
#[derive(Clone, Debug, Default, PartialEq)]
struct Incoming {
    strong: usize,
    /// (source table, source row) → number of weak reference atoms.
    weak: BTreeMap<(String, Uuid), usize>,
}

/// A table: its schema, rows, and what is derived from them.
#[derive(Clone, Debug)]
pub struct Table {
    pub schema: TableSchema,
    layout: Arc<RowLayout>,
    rows: BTreeMap<Uuid, Row>,
    /// References into rows of this table (keyed by target uuid; the target
    /// need not exist, e.g. after replaying an inconsistent log).
    incoming: FastMap<Uuid, Incoming>,
    /// One map per schema index: the indexed columns' values → rows (one
    /// row, but for a log replayed from an inconsistent file; a vector keeps
    /// that common case at one small allocation).
    indexes: Vec<FastMap<Vec<Datum>, Vec<Uuid>>>,
}

impl Table {
    fn new(schema: TableSchema) -> Table {
        let indexes = schema.indexes.iter().map(|_| FastMap::default()).collect();
        Table { layout: RowLayout::of(&schema), schema, rows: BTreeMap::new(), incoming: FastMap::default(), indexes }
    }

    /// The layout of this table's rows (positions follow `schema.columns`).
    pub fn layout(&self) -> &Arc<RowLayout> {
        &self.layout
    }

    pub fn rows(&self) -> &BTreeMap<Uuid, Row> {
        &self.rows
    }

    pub fn get(&self, uuid: &Uuid) -> Option<&Row> {
        self.rows.get(uuid)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Number of strong references to row `uuid` (self-references excluded).
    pub fn strong_refs_to(&self, uuid: &Uuid) -> usize {
        self.incoming.get(uuid).map_or(0, |i| i.strong)
    }

    /// Rows holding weak references to row `uuid`: (table, row).
    pub fn weak_referrers_of(&self, uuid: &Uuid) -> impl Iterator<Item = &(String, Uuid)> {
        self.incoming.get(uuid).into_iter().flat_map(|i| i.weak.keys())
    }

    /// The values of index `i`'s columns in `row` (empty for no such index).
    pub fn index_key(&self, i: usize, row: &Row) -> Vec<Datum> {
        let cols = self.schema.indexes.get(i).map(Vec::as_slice).unwrap_or_default();
        cols.iter().map(|c| row.columns.get(c).cloned().unwrap_or_else(Datum::empty_set)).collect()
    }

    /// [`Table::index_key`], borrowed from the row when the index has one
    /// column (the usual case: no copy to look a row up).
    pub fn index_key_ref<'r>(&self, i: usize, row: &'r Row) -> Cow<'r, [Datum]> {
        match self.schema.indexes.get(i).map(Vec::as_slice) {
            Some([c]) => match row.columns.get(c) {
                Some(d) => Cow::Borrowed(std::slice::from_ref(d)),
                None => Cow::Owned(vec![Datum::empty_set()]),
            },
            _ => Cow::Owned(self.index_key(i, row)),
        }
    }

    /// Rows whose index `i` columns have the values `key`.
    pub fn index_lookup(&self, i: usize, key: &[Datum]) -> impl Iterator<Item = &Uuid> {
        self.indexes.get(i).and_then(|m| m.get(key)).into_iter().flatten()
    }
}

/// One row's change: insert (`old` None), delete (`new` None) or modify.
#[derive(Clone, Debug, PartialEq)]
pub struct RowChange {
    pub old: Option<Row>,
    pub new: Option<Row>,
}

/// What a committed transaction changed, table by table (only rows that
/// really changed). Storage writes it, monitors report it, `apply` makes it
/// real.
#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    pub schema: Arc<DatabaseSchema>,
    pub tables: BTreeMap<String, BTreeMap<Uuid, RowChange>>,
}

impl Commit {
    pub fn new(schema: Arc<DatabaseSchema>) -> Commit {
        Commit { schema, tables: BTreeMap::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.tables.values().all(|t| t.is_empty())
    }

    pub fn changes(&self) -> impl Iterator<Item = (&str, &Uuid, &RowChange)> {
        self.tables.iter().flat_map(|(t, rows)| rows.iter().map(move |(u, c)| (t.as_str(), u, c)))
    }

    /// The OVSDB file-format transaction record (without `_date` and
    /// `_comment`, which the caller adds): `{"Table": {"<uuid>": ROW | null}}`.
    /// Inserts carry the persistent columns that differ from their default,
    /// modifications the persistent columns that changed (whole new values,
    /// not OVS's `_is_diff` form), deletions are `null`. A commit that only
    /// touched ephemeral columns gives `{}`: nothing to write.
    pub fn to_log_json(&self) -> Value {
        let mut out = Map::new();
        for (tname, rows) in &self.tables {
            let Some(ts) = self.schema.tables.get(tname) else { continue };
            let mut t = Map::new();
            for (uuid, ch) in rows {
                let row = match (&ch.old, &ch.new) {
                    (_, None) => Value::Null,
                    (None, Some(new)) => Value::Object(insert_columns_json(ts, new)),
                    (Some(old), Some(new)) => {
                        let cols: Map<String, Value> = ts
                            .columns
                            .values()
                            .filter(|c| !c.ephemeral && old.columns.get(&c.name) != new.columns.get(&c.name))
                            .filter_map(|c| new.columns.get(&c.name).map(|d| (c.name.clone(), d.to_json())))
                            .collect();
                        if cols.is_empty() {
                            continue;
                        }
                        Value::Object(cols)
                    }
                };
                if ch.old.is_none() && ch.new.is_none() {
                    continue;
                }
                t.insert(uuid.to_string(), row);
            }
            if !t.is_empty() {
                out.insert(tname.clone(), Value::Object(t));
            }
        }
        Value::Object(out)
    }
}

impl Commit {
    /// The file-format record of [`Commit::to_log_json`] with OVS's
    /// annotations (`_comment` if given, `_date`), as JSON text: exactly the
    /// bytes serde_json gives for that record, written directly. None if
    /// there is nothing to write (only ephemeral columns changed).
    pub fn log_record_text(&self, comment: Option<&str>, date_ms: i64) -> Option<Vec<u8>> {
        // Members of the record object, each (name, JSON text); serde_json
        // writes an object's members sorted by name, annotations included.
        let mut members: Vec<(&str, Vec<u8>)> = Vec::new();
        for (tname, rows) in &self.tables {
            let Some(ts) = self.schema.tables.get(tname) else { continue };
            let mut t = Vec::new();
            for (uuid, ch) in rows {
                let mark = t.len();
                t.push(if mark == 0 { b'{' } else { b',' });
                json_text::write_uuid_str(&mut t, uuid);
                t.push(b':');
                match (&ch.old, &ch.new) {
                    (None, None) => {
                        t.truncate(mark);
                        continue;
                    }
                    (_, None) => t.extend_from_slice(b"null"),
                    (old, Some(new)) => {
                        let mut first = true;
                        t.push(b'{');
                        for (i, c) in ts.columns.values().enumerate() {
                            let d = new.columns.at(i);
                            let write = !c.ephemeral
                                && match old {
                                    None => !new.columns.is_default_at(i),
                                    Some(old) => old.columns.at(i) != d,
                                };
                            if !write {
                                continue;
                            }
                            if !first {
                                t.push(b',');
                            }
                            first = false;
                            json_text::write_str(&mut t, &c.name);
                            t.push(b':');
                            json_text::write_datum(&mut t, d);
                        }
                        if first && old.is_some() {
                            // A modification of ephemeral columns only.
                            t.truncate(mark);
                            continue;
                        }
                        t.push(b'}');
                    }
                }
            }
            if !t.is_empty() {
                t.push(b'}');
                members.push((tname, t));
            }
        }
        if members.is_empty() {
            return None;
        }
        if let Some(c) = comment {
            let mut v = Vec::new();
            json_text::write_str(&mut v, c);
            members.push((crate::log::TXN_COMMENT, v));
        }
        members.push((crate::log::TXN_DATE, date_ms.to_string().into_bytes()));
        members.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::with_capacity(members.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>() + 2);
        out.push(b'{');
        for (i, (name, v)) in members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_text::write_str(&mut out, name);
            out.push(b':');
            out.extend_from_slice(v);
        }
        out.push(b'}');
        Some(out)
    }
}

/// The persistent columns of a new row that differ from their defaults.
fn insert_columns_json(ts: &TableSchema, row: &Row) -> Map<String, Value> {
    ts.columns
        .values()
        .enumerate()
        .filter(|(i, c)| !c.ephemeral && !row.columns.is_default_at(*i))
        .map(|(i, c)| (c.name.clone(), row.columns.at(i).to_json()))
        .collect()
}

/// A database: its schema and tables.
#[derive(Clone, Debug)]
pub struct Database {
    pub schema: Arc<DatabaseSchema>,
    tables: BTreeMap<String, Table>,
}

impl Database {
    pub fn new(schema: impl Into<Arc<DatabaseSchema>>) -> Database {
        let schema = schema.into();
        let tables = schema.tables.values().map(|ts| (ts.name.clone(), Table::new(ts.clone()))).collect();
        Database { schema, tables }
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.get(name)
    }

    pub fn tables(&self) -> &BTreeMap<String, Table> {
        &self.tables
    }

    /// A row by table and uuid.
    pub fn get(&self, table: &str, uuid: &Uuid) -> Option<&Row> {
        self.tables.get(table)?.rows.get(uuid)
    }

    /// Makes a commit's changes real. Each change's `new` replaces whatever
    /// row has its uuid (its `old` is informational). Tables the schema does
    /// not know are ignored.
    pub fn apply(&mut self, commit: &Commit) {
        self.apply_owned(commit.clone())
    }

    /// [`Database::apply`], moving the new rows in instead of copying them.
    pub fn apply_owned(&mut self, commit: Commit) {
        for (tname, rows) in commit.tables {
            if !self.tables.contains_key(&tname) {
                continue;
            }
            for (uuid, ch) in rows {
                self.remove_row(&tname, &uuid);
                if let Some(mut row) = ch.new {
                    row.uuid = uuid;
                    self.add_row(&tname, row);
                }
            }
        }
    }

    fn remove_row(&mut self, tname: &str, uuid: &Uuid) {
        let Some(t) = self.tables.get_mut(tname) else { return };
        let Some(row) = t.rows.remove(uuid) else { return };
        for i in 0..t.indexes.len() {
            let key = t.index_key_ref(i, &row);
            if let Some(set) = t.indexes[i].get_mut(&*key) {
                set.retain(|u| u != uuid);
                if set.is_empty() {
                    t.indexes[i].remove(&*key);
                }
            }
        }
        let schema = self.schema.clone();
        let Some(ts) = schema.tables.get(tname) else { return };
        for r in outgoing_refs(ts, &row) {
            let Some(target) = self.tables.get_mut(r.table) else { continue };
            let Some(inc) = target.incoming.get_mut(&r.uuid) else { continue };
            match r.kind {
                RefType::Strong => inc.strong = inc.strong.saturating_sub(1),
                RefType::Weak => {
                    let k = (tname.to_string(), *uuid);
                    if let Some(n) = inc.weak.get_mut(&k) {
                        *n -= 1;
                        if *n == 0 {
                            inc.weak.remove(&k);
                        }
                    }
                }
            }
            if inc.strong == 0 && inc.weak.is_empty() {
                target.incoming.remove(&r.uuid);
            }
        }
    }

    fn add_row(&mut self, tname: &str, row: Row) {
        let Some(t) = self.tables.get_mut(tname) else { return };
        for i in 0..t.indexes.len() {
            let key = t.index_key_ref(i, &row);
            match t.indexes[i].get_mut(&*key) {
                Some(set) => {
                    if let Err(at) = set.binary_search(&row.uuid) {
                        set.insert(at, row.uuid);
                    }
                }
                None => {
                    let key = key.into_owned();
                    t.indexes[i].insert(key, vec![row.uuid]);
                }
            }
        }
        let schema = self.schema.clone();
        let refs = match schema.tables.get(tname) {
            Some(ts) => outgoing_refs(ts, &row),
            None => Vec::new(),
        };
        let uuid = row.uuid;
        t.rows.insert(uuid, row);
        for r in refs {
            let Some(target) = self.tables.get_mut(r.table) else { continue };
            let inc = target.incoming.entry(r.uuid).or_default();
            match r.kind {
                RefType::Strong => inc.strong += 1,
                RefType::Weak => *inc.weak.entry((tname.to_string(), uuid)).or_default() += 1,
            }
        }
    }

    /// All rows as one file-format record (inserts), for compaction.
    pub fn to_snapshot_json(&self) -> Value {
        let mut out = Map::new();
        for (tname, t) in &self.tables {
            if t.rows.is_empty() {
                continue;
            }
            let rows: Map<String, Value> = t
                .rows
                .values()
                .map(|r| (r.uuid.to_string(), Value::Object(insert_columns_json(&t.schema, r))))
                .collect();
            out.insert(tname.clone(), Value::Object(rows));
        }
        Value::Object(out)
    }

    /// Applies one file-format record (as `to_log_json`/`to_snapshot_json`
    /// write, or OVS writes, `_is_diff` form included): rows are created if
    /// absent, their listed columns replaced otherwise, `null` deletes. All
    /// or nothing; returns what changed. Rows get fresh `_version`s (the file
    /// does not keep them).
    pub fn apply_log_record(&mut self, record: &Value) -> Result<Commit> {
        let obj = record.as_object().ok_or_else(|| OvsdbError::syntax("object expected"))?;
        let is_diff = obj.get("_is_diff") == Some(&Value::Bool(true));
        let mut commit = Commit::new(self.schema.clone());
        for (tname, tv) in obj {
            let Some(t) = self.tables.get(tname) else {
                match (tname.as_str(), tv) {
                    ("_date", v) if v.is_i64() || v.is_u64() => continue,
                    ("_is_diff", Value::Bool(_)) | ("_comment", _) => continue,
                    _ => return Err(OvsdbError::new("unknown table", format!("No table named {tname}."))),
                }
            };
            let rows = tv.as_object().ok_or_else(|| OvsdbError::syntax("object expected"))?;
            let mut changes = BTreeMap::new();
            for (us, rv) in rows {
                let uuid = parse_uuid(us).ok_or_else(|| OvsdbError::syntax(format!("\"{us}\" is not a valid UUID")))?;
                let current = t.rows.get(&uuid);
                let change = match (rv, current) {
                    (Value::Null, None) => {
                        return Err(OvsdbError::syntax(format!("transaction deletes row {uuid} that does not exist")));
                    }
                    (Value::Null, Some(old)) => RowChange { old: Some(old.clone()), new: None },
                    (_, Some(old)) => {
                        let mut new = old.clone();
                        update_row_from_log(&t.schema, &mut new, rv, is_diff)?;
                        if new.columns == old.columns {
                            continue;
                        }
                        new.version = Uuid::new_v4();
                        RowChange { old: Some(old.clone()), new: Some(new) }
                    }
                    (_, None) => {
                        let mut new = Row::with_layout(&t.layout, uuid, Uuid::new_v4());
                        update_row_from_log(&t.schema, &mut new, rv, false)?;
                        RowChange { old: None, new: Some(new) }
                    }
                };
                changes.insert(uuid, change);
            }
            if !changes.is_empty() {
                commit.tables.insert(tname.clone(), changes);
            }
        }
        self.apply(&commit);
        Ok(commit)
    }
}

/// Replaces (or, for `_is_diff` records, applies the diff to) the columns a
/// log row lists.
fn update_row_from_log(ts: &TableSchema, row: &mut Row, v: &Value, is_diff: bool) -> Result<()> {
    let o = v.as_object().ok_or_else(|| OvsdbError::syntax("row must be JSON object"))?;
    for (cname, cv) in o {
        let Some(col) = ts.columns.get(cname) else {
            if cname == "_uuid" || cname == "_version" {
                // Not written by OVS; the row's identity comes from the key.
                continue;
            }
            return Err(unknown_column(cname, &ts.name));
        };
        let d = if is_diff {
            let relaxed = Type { min: 0, max: UNLIMITED, ..col.type_.clone() };
            let diff = datum_from_json(&relaxed, cv, None)?;
            let cur = row.columns.get(cname).cloned().unwrap_or_else(|| Datum::empty_for(&col.type_));
            apply_diff(&cur, &diff, &col.type_)?
        } else {
            datum_from_json(&col.type_, cv, None)?
        };
        // `col` comes from the schema: the row has the column.
        let _ = row.columns.insert(cname, d);
    }
    Ok(())
}

/// OVS's `ovsdb_datum_apply_diff`: for sets and maps that may hold more than
/// one element, elements of the diff toggle (a map key with another value
/// updates it); otherwise the diff is the new value.
fn apply_diff(old: &Datum, diff: &Datum, t: &Type) -> Result<Datum> {
    if t.max <= 1 {
        return Ok(diff.clone());
    }
    let mut pairs: BTreeMap<Atom, Option<Atom>> = match &old.values {
        Some(vals) => old.keys.iter().cloned().zip(vals.iter().cloned().map(Some)).collect(),
        None => old.keys.iter().cloned().map(|k| (k, None)).collect(),
    };
    for (i, k) in diff.keys.iter().enumerate() {
        let dv = diff.values.as_ref().and_then(|v| v.get(i)).cloned();
        match pairs.get(k) {
            None => {
                pairs.insert(k.clone(), dv);
            }
            Some(cur) if t.is_map() && *cur != dv => {
                pairs.insert(k.clone(), dv);
            }
            Some(_) => {
                pairs.remove(k);
            }
        }
    }
    let n = pairs.len() as u64;
    if n < t.min || n > t.max {
        return Err(OvsdbError::new("ovsdb error", "Datum crated by diff has size error"));
    }
    let (keys, vals): (Vec<Atom>, Vec<Option<Atom>>) = pairs.into_iter().unzip();
    let values =
        if t.is_map() { Some(vals.into_iter().map(|v| v.unwrap_or(Atom::Integer(0))).collect()) } else { None };
    Ok(Datum { keys, values })
}

// ---------------------------------------------------------------------------
// Helpers shared by conditions, mutations and transactions.

pub(crate) fn unknown_column(column: &str, table: &str) -> OvsdbError {
    OvsdbError::new("unknown column", format!("No column {column} in table {table}."))
}

/// Parses a datum of type `t` as OVS does: the element count is checked
/// first (a syntax error), then each atom against its constraints.
pub fn datum_from_json(t: &Type, v: &Value, symbols: Option<&Symbols>) -> Result<Datum> {
    let tagged = v.as_array().filter(|a| !a.is_empty()).and_then(|a| a[0].as_str().map(|tag| (tag, a)));
    let class = if t.is_map() { "map" } else { "set" };
    if let Some((tag, a)) = tagged
        && tag == class
        && a.len() == 2
        && let Some(items) = a[1].as_array()
    {
        let n = items.len() as u64;
        if n < t.min || n > t.max {
            return Err(OvsdbError::syntax(if t.min == 1 && t.max == 1 {
                format!("{class} must have exactly one member but {n} are present")
            } else {
                let max = if t.max == UNLIMITED { u32::MAX.to_string() } else { t.max.to_string() };
                format!("{class} must have {} to {max} members but {n} are present", t.min)
            }));
        }
    }
    let d = Datum::from_json_unchecked(t, v, symbols)?;
    // A bare atom is one element: only a type with max 0 could refuse it,
    // and there is none, but keep the invariant explicit.
    d.check(t)?;
    Ok(d)
}

/// OVS's `ovsdb_type_to_english`, for error messages.
pub fn type_to_english(t: &Type) -> String {
    let key = t.key.atype.name();
    if t.is_scalar() {
        return key.to_string();
    }
    let is_set = !t.is_map();
    let mut s = String::from(if is_set { "set" } else { "map" });
    if t.max == UNLIMITED {
        if t.min > 0 {
            s.push_str(&format!(" of {} or more", t.min));
        } else {
            s.push_str(" of");
        }
    } else if t.min > 0 {
        s.push_str(&format!(" of {} to {}", t.min, t.max));
    } else {
        s.push_str(&format!(" of up to {}", t.max));
    }
    match &t.value {
        None => s.push_str(&format!(" {key}s")),
        Some(v) => s.push_str(&format!(" ({key}, {}) pairs", v.atype.name())),
    }
    s
}

/// OVS's `ovsdb_datum_to_string` (the ovs-vsctl syntax), for error messages.
pub fn datum_to_string(d: &Datum, t: &Type) -> String {
    let bracket = t.max > 1 || d.is_empty();
    let (open, close) = if t.is_map() { ("{", "}") } else { ("[", "]") };
    let mut s = String::new();
    if bracket {
        s.push_str(open);
    }
    for (i, k) in d.keys.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&atom_to_string(k));
        if let Some(v) = d.values.as_ref().and_then(|v| v.get(i)) {
            s.push('=');
            s.push_str(&atom_to_string(v));
        }
    }
    if bracket {
        s.push_str(close);
    }
    s
}

fn atom_to_string(a: &Atom) -> String {
    match a {
        Atom::Integer(i) => i.to_string(),
        Atom::Real(r) => r.to_string(),
        Atom::Boolean(b) => b.to_string(),
        Atom::Uuid(u) => u.to_string(),
        Atom::String(s) => {
            let mut chars = s.chars();
            let plain = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                && &**s != "true"
                && &**s != "false"
                && parse_uuid(s).is_none();
            if plain { s.to_string() } else { Value::String(s.to_string()).to_string() }
        }
    }
}

/// OVS's `ovsdb_datum_compare_3way`: fewer elements first, then element-wise.
pub fn datum_cmp(a: &Datum, b: &Datum) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.keys.cmp(&b.keys)).then_with(|| a.values.cmp(&b.values))
}

/// Whether a column may change after insertion. OVS makes weak-reference
/// columns mutable whatever the schema says: deleting a referenced row
/// must be able to change them.
pub fn column_is_mutable(c: &ColumnSchema) -> bool {
    c.mutable || is_weak_ref(&c.type_.key) || c.type_.value.as_ref().is_some_and(is_weak_ref)
}

pub(crate) fn is_strong_ref(b: &BaseType) -> bool {
    b.atype == AtomicType::Uuid && b.ref_table.is_some() && b.ref_type == RefType::Strong
}

pub(crate) fn is_weak_ref(b: &BaseType) -> bool {
    b.atype == AtomicType::Uuid && b.ref_table.is_some() && b.ref_type == RefType::Weak
}

/// One reference atom in a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RefAtom<'t> {
    /// The target table (borrowed from the column's type: no copy per atom).
    pub table: &'t str,
    pub uuid: Uuid,
    pub kind: RefType,
}

/// The references held by `d` (a value of a column of type `t`) from row
/// `src` of table `src_table`. Self-references are left out, as OVS does:
/// they neither keep a row alive nor need cleaning up.
pub(crate) fn datum_refs<'t>(src_table: &str, src: &Uuid, t: &'t Type, d: &Datum) -> Vec<RefAtom<'t>> {
    let mut out = Vec::new();
    let mut add = |b: &'t BaseType, atoms: &[Atom]| {
        let Some(rt) = &b.ref_table else { return };
        if b.atype != AtomicType::Uuid {
            return;
        }
        for a in atoms {
            if let Atom::Uuid(u) = a
                && !(rt == src_table && u == src)
            {
                out.push(RefAtom { table: rt, uuid: *u, kind: b.ref_type });
            }
        }
    };
    add(&t.key, &d.keys);
    if let (Some(vt), Some(vals)) = (&t.value, &d.values) {
        add(vt, vals);
    }
    out
}

/// Every reference a row holds.
pub(crate) fn outgoing_refs<'t>(ts: &'t TableSchema, row: &Row) -> Vec<RefAtom<'t>> {
    let mut out = Vec::new();
    for (i, c) in ts.columns.values().enumerate() {
        if c.type_.key.ref_table.is_none() && c.type_.value.as_ref().is_none_or(|v| v.ref_table.is_none()) {
            continue;
        }
        out.extend(datum_refs(&ts.name, &row.uuid, &c.type_, row.columns.at(i)));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A `Root` row of [`test_schema`] with the given columns set.
    pub fn test_row(v: Value) -> Row {
        let schema = test_schema();
        let ts = &schema.tables["Root"];
        let mut r = Row::new_default(ts, Uuid::new_v4(), Uuid::new_v4());
        for (k, val) in v.as_object().unwrap() {
            r.columns.insert(k.clone(), datum_from_json(&ts.columns[k].type_, val, None).unwrap()).unwrap();
        }
        r
    }

    /// A small schema exercising every feature the engine checks.
    pub fn test_schema() -> Arc<DatabaseSchema> {
        let v = json!({
            "name": "test", "version": "1.0.0",
            "tables": {
                "Root": {
                    "isRoot": true,
                    "columns": {
                        "name": {"type": "string"},
                        "kids": {"type": {"key": {"type": "uuid", "refTable": "Kid"}, "min": 0, "max": "unlimited"}},
                        "fav": {"type": {"key": {"type": "uuid", "refTable": "Kid", "refType": "weak"}, "min": 0, "max": 1}},
                        "n": {"type": {"key": {"type": "integer", "minInteger": 0, "maxInteger": 100}}},
                        "r": {"type": "real"},
                        "ints": {"type": {"key": "integer", "min": 0, "max": 3}},
                        "opt": {"type": {"key": "integer", "min": 0, "max": 1}},
                        "m": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                        "fixed": {"type": "string", "mutable": false},
                        "eph": {"type": {"key": "string", "min": 0, "max": 1}, "ephemeral": true}
                    },
                    "indexes": [["name"]]
                },
                "Kid": {
                    "columns": {
                        "name": {"type": "string"},
                        "pet": {"type": {"key": {"type": "uuid", "refTable": "Pet"}, "min": 0, "max": 1}},
                        "byname": {"type": {"key": "string", "value": {"type": "uuid", "refTable": "Pet"}, "min": 0, "max": "unlimited"}}
                    }
                },
                "Pet": {"columns": {"name": {"type": "string"}}},
                "Holder": {
                    "isRoot": true,
                    "columns": {
                        "must": {"type": {"key": {"type": "uuid", "refTable": "Kid", "refType": "weak"}, "min": 1, "max": "unlimited"}},
                        "wmap": {"type": {"key": "string", "value": {"type": "uuid", "refTable": "Pet", "refType": "weak"}, "min": 0, "max": "unlimited"}}
                    }
                },
                "Enum": {"isRoot": true, "columns": {"kind": {"type": {"key": {"type": "string", "enum": ["set", ["cat", "dog"]]}}}}},
                "Small": {
                    "isRoot": true, "maxRows": 2,
                    "columns": {"a": {"type": "integer"}, "b": {"type": "string"}},
                    "indexes": [["a", "b"]]
                }
            }
        });
        Arc::new(DatabaseSchema::from_json(&v).unwrap())
    }

    #[test]
    fn apply_maintains_refs_and_indexes() {
        let schema = test_schema();
        let mut db = Database::new(schema.clone());
        let kid = Uuid::new_v4();
        let root = Uuid::new_v4();
        let mut k = Row::new_default(&schema.tables["Kid"], kid, Uuid::new_v4());
        k.columns.insert("name", Datum::scalar(Atom::string("k"))).unwrap();
        let mut r = Row::new_default(&schema.tables["Root"], root, Uuid::new_v4());
        r.columns.insert("kids", Datum::scalar(Atom::Uuid(kid))).unwrap();
        r.columns.insert("fav", Datum::scalar(Atom::Uuid(kid))).unwrap();
        r.columns.insert("name", Datum::scalar(Atom::string("r"))).unwrap();
        let mut c = Commit::new(schema.clone());
        c.tables.entry("Kid".into()).or_default().insert(kid, RowChange { old: None, new: Some(k) });
        c.tables.entry("Root".into()).or_default().insert(root, RowChange { old: None, new: Some(r.clone()) });
        db.apply(&c);
        let kids = db.table("Kid").unwrap();
        assert_eq!(kids.strong_refs_to(&kid), 1);
        assert_eq!(kids.weak_referrers_of(&kid).collect::<Vec<_>>(), vec![&("Root".to_string(), root)]);
        let roots = db.table("Root").unwrap();
        let key = vec![Datum::scalar(Atom::string("r"))];
        assert_eq!(roots.index_lookup(0, &key).collect::<Vec<_>>(), vec![&root]);
        // Deleting the root drops its references and index entry.
        let mut c = Commit::new(schema.clone());
        c.tables.entry("Root".into()).or_default().insert(root, RowChange { old: Some(r), new: None });
        db.apply(&c);
        assert_eq!(db.table("Kid").unwrap().strong_refs_to(&kid), 0);
        assert_eq!(db.table("Kid").unwrap().weak_referrers_of(&kid).count(), 0);
        assert_eq!(db.table("Root").unwrap().index_lookup(0, &key).count(), 0);
    }

    #[test]
    fn log_records() {
        let schema = test_schema();
        let mut db = Database::new(schema.clone());
        let u = Uuid::new_v4();
        let rec = json!({"Small": {u.to_string(): {"a": 5}}, "_date": 1, "_comment": "x"});
        let c = db.apply_log_record(&rec).unwrap();
        assert_eq!(c.to_log_json(), json!({"Small": {u.to_string(): {"a": 5}}}));
        assert_eq!(db.get("Small", &u).unwrap().columns["a"], Datum::scalar(Atom::Integer(5)));
        // Modify, then the diff form, then delete.
        db.apply_log_record(&json!({"Small": {u.to_string(): {"b": "x"}}})).unwrap();
        assert_eq!(db.get("Small", &u).unwrap().columns["b"], Datum::scalar(Atom::string("x")));
        let snap = db.to_snapshot_json();
        assert_eq!(snap, json!({"Small": {u.to_string(): {"a": 5, "b": "x"}}}));
        assert!(db.apply_log_record(&json!({"Nope": {}})).unwrap_err().tag == "unknown table");
        assert!(
            db.apply_log_record(&json!({"Small": {u.to_string(): {"zz": 1}}})).unwrap_err().tag == "unknown column"
        );
        assert!(db.apply_log_record(&json!({"Small": {"bad": null}})).is_err());
        assert!(db.apply_log_record(&json!({"Small": {Uuid::new_v4().to_string(): null}})).is_err());
        db.apply_log_record(&json!({"Small": {u.to_string(): null}})).unwrap();
        assert!(db.get("Small", &u).is_none());
    }

    #[test]
    fn log_record_text_is_the_serialized_record() {
        let schema = test_schema();
        let mut db = Database::new(schema.clone());
        let (a, b, k) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        db.apply_log_record(&json!({"Root": {a.to_string(): {"name": "a", "n": 3}}, "Kid": {k.to_string(): {}}}))
            .unwrap();
        let old = db.get("Root", &a).unwrap().clone();
        let mut new = old.clone();
        new.columns.insert("name", Datum::scalar(Atom::string("quote\" é"))).unwrap();
        new.columns.insert("eph", Datum::scalar(Atom::string("not written"))).unwrap();
        new.columns.insert("r", Datum::scalar(Atom::Real(2.5))).unwrap();
        let mut eph_only = old.clone();
        eph_only.columns.insert("eph", Datum::scalar(Atom::string("x"))).unwrap();
        let mut ins = Row::new_default(&schema.tables["Root"], b, Uuid::new_v4());
        let m = datum_from_json(&schema.tables["Root"].columns["m"].type_, &json!(["map", [["k", "v"]]]), None);
        ins.columns.insert("m", m.unwrap()).unwrap();
        ins.columns.insert("ints", Datum { keys: vec![Atom::Integer(1), Atom::Integer(2)], values: None }).unwrap();
        let kid = db.get("Kid", &k).unwrap().clone();
        let mut c = Commit::new(schema.clone());
        let root = c.tables.entry("Root".into()).or_default();
        root.insert(a, RowChange { old: Some(old.clone()), new: Some(new) });
        root.insert(b, RowChange { old: None, new: Some(ins) });
        c.tables.entry("Kid".into()).or_default().insert(k, RowChange { old: Some(kid), new: None });
        for comment in [None, Some("why \"so\"")] {
            let mut rec = c.to_log_json();
            crate::log::annotate_txn(rec.as_object_mut().unwrap(), comment, false, 1234);
            let text = c.log_record_text(comment, 1234).unwrap();
            assert_eq!(String::from_utf8(text).unwrap(), serde_json::to_string(&rec).unwrap());
        }
        // Only an ephemeral column changed: nothing to write.
        let mut c = Commit::new(schema.clone());
        c.tables.entry("Root".into()).or_default().insert(a, RowChange { old: Some(old), new: Some(eph_only) });
        assert_eq!(c.to_log_json(), json!({}));
        assert!(c.log_record_text(None, 1).is_none());
    }

    #[test]
    fn columns_keep_only_values_off_their_defaults() {
        let schema = test_schema();
        let ts = &schema.tables["Root"];
        let mut r = Row::new_default(ts, Uuid::new_v4(), Uuid::new_v4());
        let fresh = r.clone();
        let n = r.columns.layout().index_of("n").unwrap();
        assert!(r.columns.is_default_at(n));
        assert_eq!(r.columns["n"], Datum::scalar(Atom::Integer(0)));
        assert_eq!(r.columns.insert("n", Datum::scalar(Atom::Integer(7))).unwrap(), Datum::scalar(Atom::Integer(0)));
        assert!(!r.columns.is_default_at(n));
        assert_ne!(r, fresh);
        // Back to the default: stored as nothing again, equal to a fresh row.
        r.columns.insert("n", Datum::scalar(Atom::Integer(0))).unwrap();
        assert!(r.columns.is_default_at(n));
        assert_eq!(r.columns, fresh.columns);
        assert!(r.columns.insert("nope", Datum::empty_set()).is_err());
        assert_eq!(r.columns.iter().count(), ts.columns.len());
        assert!(r.columns.keys().map(String::as_str).eq(ts.columns.keys().map(String::as_str)));
        // Tables with the same columns share one layout.
        let again = Row::new_default(&test_schema().tables["Root"], Uuid::new_v4(), Uuid::new_v4());
        assert!(Arc::ptr_eq(again.columns.layout(), r.columns.layout()));
    }

    #[test]
    fn diff_records_as_ovs_writes_them() {
        let schema = test_schema();
        let mut db = Database::new(schema.clone());
        let u = Uuid::new_v4();
        db.apply_log_record(&json!({"Root": {u.to_string(): {"name": "a", "ints": ["set", [1, 2]], "m": ["map", [["a", "1"], ["b", "2"]]]}}}))
            .unwrap();
        // Toggle 2 and 3; update a, remove b, add c.
        db.apply_log_record(&json!({"_is_diff": true, "Root": {u.to_string(): {
            "ints": ["set", [2, 3]], "m": ["map", [["a", "9"], ["b", "2"], ["c", "3"]]], "name": "z"}}}))
            .unwrap();
        let r = db.get("Root", &u).unwrap();
        assert_eq!(r.columns["ints"].to_json(), json!(["set", [1, 3]]));
        assert_eq!(r.columns["m"].to_json(), json!(["map", [["a", "9"], ["c", "3"]]]));
        assert_eq!(r.columns["name"].to_json(), json!("z"));
    }

    #[test]
    fn english_and_strings() {
        let t = Type::from_json(&json!({"key": "integer", "min": 0, "max": 3})).unwrap();
        assert_eq!(type_to_english(&t), "set of up to 3 integers");
        let t = Type::from_json(&json!({"key": "string", "value": "integer", "min": 0, "max": "unlimited"})).unwrap();
        assert_eq!(type_to_english(&t), "map of (string, integer) pairs");
        let t = Type::from_json(&json!({"key": "string", "min": 1, "max": "unlimited"})).unwrap();
        assert_eq!(type_to_english(&t), "set of 1 or more strings");
        let s = Type::scalar(AtomicType::String);
        assert_eq!(datum_to_string(&Datum::scalar(Atom::string("br0")), &s), "br0");
        assert_eq!(datum_to_string(&Datum::scalar(Atom::string("a b")), &s), "\"a b\"");
        assert_eq!(datum_to_string(&Datum::scalar(Atom::string("true")), &s), "\"true\"");
        let e = datum_from_json(&s, &json!(["set", ["a", "b"]]), None).unwrap_err();
        assert_eq!((e.tag, e.details.as_str()), ("syntax error", "set must have exactly one member but 2 are present"));
    }
}
