//! Transactions built on the client side and sent as one `transact`, with
//! OVS's IDL semantics (lib/ovsdb-idl.c): new rows get temporary uuids that
//! travel as `named-uuid`s, updates carry only written columns, verified
//! columns become `wait` operations so that a stale replica makes the commit
//! fail with "try again" instead of overwriting someone else's change.
//! Partial updates of sets and maps (see [`partial`](super::partial)) go out
//! as `mutate` operations and need no verify.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    atom::{Atom, uuid_from_json},
    datum::Datum,
    schema::DatabaseSchema,
};

use super::{
    partial::{PartialOp, PartialOps},
    replica::Replica,
};

/// How a commit ended (OVS's `enum ovsdb_idl_txn_status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnStatus {
    /// Nothing to do: no operation would have changed the database.
    Unchanged,
    Success,
    /// A `wait` failed (the replica was stale) or the connection dropped:
    /// re-read and retry.
    TryAgain,
    /// OVS's TXN_ABORTED: a transaction its caller abandoned. `commit` never
    /// reports it (a dry run that checks out is `Success`, as in OVS).
    Aborted,
    /// The transaction needed a lock the session does not hold.
    NotLocked,
    /// The server's error, as OVS's IDL reports it: the failing operation's
    /// result as JSON with sorted members, e.g.
    /// `{"details":"...","error":"constraint violation"}`.
    Error(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct TxnOutcome {
    pub status: TxnStatus,
    /// Temporary uuid (from [`Txn::insert`]) → the uuid the server gave the row.
    pub inserted: HashMap<Uuid, Uuid>,
    /// After a successful [`Txn::increment`], the column's new value.
    pub increment_new_value: Option<i64>,
}

impl TxnOutcome {
    pub(crate) fn status(status: TxnStatus) -> TxnOutcome {
        TxnOutcome { status, inserted: HashMap::new(), increment_new_value: None }
    }
}

#[derive(Clone, Debug)]
struct TxnRow {
    table: String,
    uuid: Uuid,
    inserted: bool,
    deleted: bool,
    written: BTreeMap<String, Datum>,
    /// Partial set/map updates by column, applied after `written`.
    partial: BTreeMap<String, PartialOps>,
    /// Verified columns with the value read from the replica.
    prereqs: BTreeMap<String, Datum>,
    /// Verified while the replica did not have the row: the check is then
    /// that it still does not exist.
    verified_absent: bool,
    /// Inserted with a uuid the caller chose (OVS's persist_uuid): the
    /// insert names it with "uuid" and references to it stay plain uuids.
    persist_uuid: bool,
}

/// A transaction being built. Owned and independent of the [`Idl`](super::Idl)
/// (commit it with [`Idl::commit`](super::Idl::commit)); reads through it see
/// its own writes.
#[derive(Clone, Debug)]
pub struct Txn {
    database: String,
    schema: Arc<DatabaseSchema>,
    rows: Vec<TxnRow>,
    index: HashMap<Uuid, usize>,
    increment: Option<(String, Uuid, String)>,
    increment_force: bool,
    comment: String,
    dry_run: bool,
    /// The first misuse (unknown table or column), reported at commit.
    error: Option<String>,
}

/// The operations to send and what is needed to read the reply.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub params: Vec<Value>,
    /// (temporary uuid, index of its insert op)
    inserts: Vec<(Uuid, usize)>,
    /// Index of the increment's mutate op (the select follows it).
    inc_index: Option<usize>,
    inc_column: Option<String>,
}

/// The name OVS gives an inserted row on the wire: "row" and the uuid with
/// '_' for '-'.
fn row_name(u: &Uuid) -> String {
    format!("row{}", u.to_string().replace('-', "_"))
}

fn where_uuid(u: &Uuid) -> Value {
    json!([["_uuid", "==", ["uuid", u.to_string()]]])
}

impl Txn {
    pub(crate) fn new(database: String, schema: Arc<DatabaseSchema>) -> Txn {
        Txn {
            database,
            schema,
            rows: Vec::new(),
            index: HashMap::new(),
            increment: None,
            increment_force: false,
            comment: String::new(),
            dry_run: false,
            error: None,
        }
    }

    fn fail(&mut self, msg: String) {
        if self.error.is_none() {
            self.error = Some(msg);
        }
    }

    fn check_column(&mut self, table: &str, column: &str) -> bool {
        match self.schema.tables.get(table) {
            None => {
                self.fail(format!("no table {table} in the schema"));
                false
            }
            Some(t) if !t.columns.contains_key(column) => {
                self.fail(format!("no column {column} in table {table}"));
                false
            }
            Some(_) => true,
        }
    }

    fn row_mut(&mut self, table: &str, uuid: &Uuid) -> &mut TxnRow {
        let i = match self.index.get(uuid) {
            Some(i) => *i,
            None => {
                self.rows.push(TxnRow {
                    table: table.to_string(),
                    uuid: *uuid,
                    inserted: false,
                    deleted: false,
                    written: BTreeMap::new(),
                    partial: BTreeMap::new(),
                    prereqs: BTreeMap::new(),
                    verified_absent: false,
                    persist_uuid: false,
                });
                self.index.insert(*uuid, self.rows.len() - 1);
                self.rows.len() - 1
            }
        };
        &mut self.rows[i]
    }

    /// A new row in `table`; returns its temporary uuid, usable as a
    /// reference in values written in this transaction.
    pub fn insert(&mut self, table: &str) -> Uuid {
        if !self.schema.tables.contains_key(table) {
            self.fail(format!("no table {table} in the schema"));
        }
        let u = Uuid::new_v4();
        self.row_mut(table, &u).inserted = true;
        u
    }

    /// A new row in `table` whose uuid is `uuid` for good (OVS's
    /// ovsdb_idl_txn_insert_persist_uuid); the server refuses it if a row
    /// already has that uuid.
    pub fn insert_persist_uuid(&mut self, table: &str, uuid: Uuid) -> Uuid {
        if !self.schema.tables.contains_key(table) {
            self.fail(format!("no table {table} in the schema"));
        }
        if self.index.contains_key(&uuid) {
            self.fail(format!("row {uuid} is already used in this transaction"));
            return uuid;
        }
        let r = self.row_mut(table, &uuid);
        r.inserted = true;
        r.persist_uuid = true;
        uuid
    }

    /// Sets a whole column of `row` (an existing row or one inserted here).
    pub fn write(&mut self, table: &str, row: &Uuid, column: &str, value: Datum) {
        if !self.check_column(table, column) {
            return;
        }
        let r = self.row_mut(table, row);
        if r.deleted {
            let msg = format!("write to column {column} of deleted row {row} in table {table}");
            self.fail(msg);
            return;
        }
        r.written.insert(column.to_string(), value);
    }

    /// Deletes `row`. A row inserted in this transaction simply disappears
    /// from it.
    pub fn delete(&mut self, table: &str, row: &Uuid) {
        if !self.schema.tables.contains_key(table) {
            self.fail(format!("no table {table} in the schema"));
            return;
        }
        if let Some(&i) = self.index.get(row)
            && self.rows[i].inserted
        {
            self.rows.remove(i);
            self.index = self.rows.iter().enumerate().map(|(i, r)| (r.uuid, i)).collect();
            return;
        }
        let r = self.row_mut(table, row);
        r.deleted = true;
        r.written.clear();
        // OVS would still send the mutations, against a row that is gone;
        // they can only fail or do nothing, so they go with the row.
        r.partial.clear();
    }

    /// Adds the members of `elems` to set `column` of `row` without
    /// rewriting the column (OVS's `ovsdb_idl_txn_write_partial_set`, one
    /// call per member). Members already present are left as they are.
    pub fn write_partial_set(&mut self, table: &str, row: &Uuid, column: &str, elems: &Datum) {
        for k in &elems.keys {
            self.add_partial(table, row, column, k, PartialOp::Insert(None), false);
        }
    }

    /// Removes the members of `elems` from set `column` of `row`, if there
    /// (OVS's `ovsdb_idl_txn_delete_partial_set`). Removing a member added
    /// earlier in this transaction just cancels the addition.
    pub fn delete_partial_set(&mut self, table: &str, row: &Uuid, column: &str, elems: &Datum) {
        for k in &elems.keys {
            self.add_partial(table, row, column, k, PartialOp::Delete, false);
        }
    }

    /// Sets the keys of map `pairs` in map `column` of `row` to their values,
    /// adding keys that are missing and replacing the values of keys that
    /// exist (OVS's `ovsdb_idl_txn_write_partial_map`, one call per pair).
    /// As in OVS, whether a key exists is decided now, from the column as
    /// this transaction leaves it in `replica`: a key it lacks is sent as a
    /// plain insert, which does not replace a value the key has at commit.
    pub fn write_partial_map(&mut self, replica: &Replica, table: &str, row: &Uuid, column: &str, pairs: &Datum) {
        let Some(values) = &pairs.values else {
            self.fail(format!("partial map update of column {column} of table {table} without values"));
            return;
        };
        let current = self.read(replica, table, row, column).unwrap_or_else(Datum::empty_set);
        for (k, v) in pairs.keys.iter().zip(values) {
            let op = match current.contains_key(k) {
                true => PartialOp::Insert(Some(v.clone())),
                false => PartialOp::MapInsert(v.clone()),
            };
            self.add_partial(table, row, column, k, op, true);
        }
    }

    /// Removes the keys of `keys` (a set, or a map whose values are ignored)
    /// from map `column` of `row`, whatever their values (OVS's
    /// `ovsdb_idl_txn_delete_partial_map`).
    pub fn delete_partial_map(&mut self, table: &str, row: &Uuid, column: &str, keys: &Datum) {
        for k in &keys.keys {
            self.add_partial(table, row, column, k, PartialOp::Delete, true);
        }
    }

    /// Records one partial update after checking that the column has the
    /// right kind (set or map) and the atoms the right types; constraints
    /// on the merged value (sizes, ranges, references) are the server's to
    /// check, as with OVS.
    fn add_partial(&mut self, table: &str, row: &Uuid, column: &str, key: &Atom, op: PartialOp, is_map: bool) {
        if !self.check_column(table, column) {
            return;
        }
        let ty = &self.schema.tables[table].columns[column].type_;
        let kind = if is_map { "map" } else { "set" };
        if ty.is_map() != is_map {
            self.fail(format!("partial {kind} update of column {column} of table {table}, which is not a {kind}"));
            return;
        }
        let value_type = match &op {
            PartialOp::Insert(Some(v)) | PartialOp::MapInsert(v) => Some(v.atomic_type()),
            _ => None,
        };
        if key.atomic_type() != ty.key.atype
            || value_type.is_some_and(|vt| ty.value.as_ref().is_none_or(|t| t.atype != vt))
        {
            self.fail(format!(
                "partial {kind} update of column {column} of table {table} with a value of the wrong type"
            ));
            return;
        }
        let r = self.row_mut(table, row);
        if r.deleted {
            let msg = format!("partial update of column {column} of deleted row {row} in table {table}");
            self.fail(msg);
            return;
        }
        let ops = r.partial.entry(column.to_string()).or_default();
        ops.add(key.clone(), op, is_map);
        if ops.is_empty() {
            r.partial.remove(column);
        }
    }

    /// Makes the commit fail with [`TxnStatus::TryAgain`] if `column` of
    /// `row` no longer has the value the replica has now (OVS's
    /// `ovsdb_idl_txn_verify`). A no-op for rows inserted in this
    /// transaction. For a row the replica does not have, the check is that
    /// it still does not exist.
    pub fn verify(&mut self, replica: &Replica, table: &str, row: &Uuid, column: &str) {
        if !self.check_column(table, column) || self.is_inserted(row) {
            return;
        }
        let current = match replica.row(table, row) {
            None => None,
            Some(r) => match r.get(column) {
                Some(v) => Some(v.clone()),
                None => {
                    self.fail(format!("verify of column {column} of table {table}, which is not replicated"));
                    return;
                }
            },
        };
        let r = self.row_mut(table, row);
        if r.prereqs.is_empty() {
            r.verified_absent = current.is_none();
        }
        if !r.prereqs.contains_key(column) {
            r.prereqs.insert(column.to_string(), current.unwrap_or_else(Datum::empty_set));
        }
    }

    /// Adds 1 to integer `column` of `row` at commit and reports the new
    /// value in [`TxnOutcome::increment_new_value`]. Like OVS's IDL as
    /// ovs-vsctl uses it, the increment is only sent along with some other
    /// change unless [`set_increment_force`](Self::set_increment_force).
    pub fn increment(&mut self, table: &str, row: &Uuid, column: &str) {
        if self.check_column(table, column) {
            self.increment = Some((table.to_string(), *row, column.to_string()));
        }
    }

    /// Whether an increment alone makes the transaction worth sending.
    pub fn set_increment_force(&mut self, force: bool) {
        self.increment_force = force;
    }

    /// Appends a line to the transaction's comment (logged by the server).
    pub fn comment(&mut self, text: &str) {
        if !self.comment.is_empty() {
            self.comment.push('\n');
        }
        self.comment.push_str(text);
    }

    /// A dry run ends with an `abort` operation: the server checks
    /// everything and commits nothing. As in OVS's IDL, the outcome is then
    /// [`TxnStatus::Success`] if all operations before the abort succeeded
    /// (the uuids in `inserted` were never committed).
    pub fn set_dry_run(&mut self, dry: bool) {
        self.dry_run = dry;
    }

    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// True when nothing has been inserted, written, deleted, verified or
    /// incremented.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.increment.is_none()
    }

    pub fn is_inserted(&self, row: &Uuid) -> bool {
        self.index.get(row).is_some_and(|&i| self.rows[i].inserted)
    }

    /// The table of a row inserted in this transaction.
    pub(crate) fn inserted_table(&self, row: &Uuid) -> Option<&str> {
        self.index.get(row).map(|&i| &self.rows[i]).filter(|r| r.inserted).map(|r| r.table.as_str())
    }

    /// The first misuse recorded (unknown table or column), if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// `column` of `row` as this transaction would leave it; `None` if the
    /// row does not exist (deleted here, or unknown) or the column is not
    /// replicated. Partial updates are not reflected, as in OVS's
    /// `ovsdb_idl_read()`: their outcome depends on the server's value at
    /// commit time.
    pub fn read(&self, replica: &Replica, table: &str, row: &Uuid, column: &str) -> Option<Datum> {
        if let Some(&i) = self.index.get(row) {
            let r = &self.rows[i];
            if r.deleted {
                return None;
            }
            if let Some(v) = r.written.get(column) {
                return Some(v.clone());
            }
            if r.inserted {
                let t = self.schema.tables.get(table)?.columns.get(column)?;
                return Some(Datum::default_for(&t.type_));
            }
        }
        replica.row(table, row)?.get(column).cloned()
    }

    /// The rows of `table` as this transaction would leave them: the
    /// replica's (by uuid) less those deleted here, then those inserted here
    /// in insertion order.
    pub fn rows(&self, replica: &Replica, table: &str) -> Vec<Uuid> {
        let mut out: Vec<Uuid> = replica
            .table(table)
            .map(|t| {
                t.rows.keys().filter(|u| self.index.get(u).is_none_or(|&i| !self.rows[i].deleted)).copied().collect()
            })
            .unwrap_or_default();
        out.extend(self.rows.iter().filter(|r| r.inserted && r.table == table).map(|r| r.uuid));
        out
    }

    /// Rewrites references to rows inserted here into `named-uuid`s.
    fn substitute(&self, v: Value) -> Value {
        match v {
            Value::Array(a) => {
                if a.len() == 2 && a[0] == "uuid" {
                    if let Ok(u) = uuid_from_json(&Value::Array(a.clone()), None)
                        && self.is_inserted(&u)
                        && !self.index.get(&u).is_some_and(|&i| self.rows[i].persist_uuid)
                    {
                        return json!(["named-uuid", row_name(&u)]);
                    }
                    return Value::Array(a);
                }
                Value::Array(a.into_iter().map(|x| self.substitute(x)).collect())
            }
            other => other,
        }
    }

    /// The value partial updates of `column` apply to: what this transaction
    /// writes there, else what the replica has (the default for a new row).
    fn partial_base(&self, replica: &Replica, r: &TxnRow, column: &str) -> Result<Datum, String> {
        if let Some(v) = r.written.get(column) {
            return Ok(v.clone());
        }
        let ty = &self.schema.tables[&r.table].columns[column].type_;
        if r.inserted {
            return Ok(Datum::default_for(ty));
        }
        match replica.row(&r.table, &r.uuid) {
            // A row the replica does not know: the mutate will find nothing.
            None => Ok(Datum::default_for(ty)),
            Some(row) => row.get(column).cloned().ok_or_else(|| {
                format!("partial update of column {column} of table {}, which is not replicated", r.table)
            }),
        }
    }

    /// Builds the `transact` parameters, or `None` when nothing would
    /// change (OVS: TXN_UNCHANGED).
    pub(crate) fn prepare(&self, replica: &Replica) -> Result<Option<Prepared>, String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let mut ops = vec![json!(self.database)];

        // Verified columns: one wait per row.
        for r in &self.rows {
            if r.prereqs.is_empty() {
                continue;
            }
            let op = match r.verified_absent {
                false => json!({
                    "op": "wait", "table": r.table, "timeout": 0, "where": where_uuid(&r.uuid), "until": "==",
                    "columns": r.prereqs.keys().collect::<Vec<_>>(),
                    "rows": [r.prereqs.iter().map(|(c, v)| (c.clone(), v.to_json())).collect::<serde_json::Map<_, _>>()],
                }),
                // The row was absent when verified: check that it still is.
                true => json!({
                    "op": "wait", "table": r.table, "timeout": 0, "where": where_uuid(&r.uuid), "until": "==",
                    "columns": r.prereqs.keys().collect::<Vec<_>>(), "rows": [],
                }),
            };
            ops.push(op);
        }

        // Inserting the only row of a table limited to one row: check that
        // the table is still empty, for a clear failure on a race.
        for (name, t) in &self.schema.tables {
            if t.max_rows == Some(1)
                && replica.table(name).is_some_and(|r| r.rows.is_empty())
                && self.rows(replica, name).len() == 1
            {
                ops.push(json!({"op": "wait", "table": name, "where": [], "timeout": 0, "until": "==", "rows": []}));
            }
        }

        let mut any_updates = false;
        let mut inserts = Vec::new();
        for r in &self.rows {
            let ts = &self.schema.tables[&r.table];
            if r.deleted {
                // Rows of non-root tables go when nothing refers to them any
                // more; the server decides.
                if ts.is_root {
                    ops.push(json!({"op": "delete", "table": r.table, "where": where_uuid(&r.uuid)}));
                    any_updates = true;
                }
            } else if r.inserted {
                let row: serde_json::Map<String, Value> = r
                    .written
                    .iter()
                    .filter(|(c, v)| **v != Datum::default_for(&ts.columns[*c].type_))
                    .map(|(c, v)| (c.clone(), self.substitute(v.to_json())))
                    .collect();
                inserts.push((r.uuid, ops.len() - 1));
                if r.persist_uuid {
                    ops.push(json!({"op": "insert", "table": r.table, "uuid": r.uuid.to_string(), "row": row}));
                } else {
                    ops.push(json!({"op": "insert", "table": r.table, "uuid-name": row_name(&r.uuid), "row": row}));
                }
                any_updates = true;
            } else if !r.written.is_empty() {
                let old = replica.row(&r.table, &r.uuid);
                let mut row = serde_json::Map::new();
                for (c, v) in &r.written {
                    row.insert(c.clone(), self.substitute(v.to_json()));
                    // All written columns go out, changed or not, to keep the
                    // transaction atomic; only a real change makes it worth
                    // sending.
                    if old.and_then(|o| o.get(c)) != Some(v) {
                        any_updates = true;
                    }
                }
                ops.push(json!({"op": "update", "table": r.table, "where": where_uuid(&r.uuid), "row": row}));
            }
            if !r.deleted && !r.partial.is_empty() {
                let mut mutations = Vec::new();
                for (c, partial) in &r.partial {
                    let base = self.partial_base(replica, r, c)?;
                    mutations.extend(partial.mutations(c, &base, ts.columns[c].type_.is_map()));
                }
                if !mutations.is_empty() {
                    let (w, m) = (self.substitute(where_uuid(&r.uuid)), self.substitute(Value::Array(mutations)));
                    ops.push(json!({"op": "mutate", "table": r.table, "where": w, "mutations": m}));
                    any_updates = true;
                }
            }
        }

        let mut inc_index = None;
        let mut inc_column = None;
        if let Some((table, row, column)) = &self.increment
            && (any_updates || self.increment_force)
        {
            any_updates = true;
            inc_index = Some(ops.len() - 1);
            inc_column = Some(column.clone());
            let w = self.substitute(where_uuid(row));
            ops.push(json!({"op": "mutate", "table": table, "where": w, "mutations": [[column, "+=", 1]]}));
            ops.push(json!({"op": "select", "table": table, "where": w, "columns": [column]}));
        }
        if !self.comment.is_empty() {
            ops.push(json!({"op": "comment", "comment": self.comment}));
        }
        if self.dry_run {
            ops.push(json!({"op": "abort"}));
        }
        if !any_updates {
            return Ok(None);
        }
        Ok(Some(Prepared { params: ops, inserts, inc_index, inc_column }))
    }
}

impl Prepared {
    /// Maps the server's reply as OVS's `ovsdb_idl_txn_process_reply()`
    /// does: a failed `wait` ("timed out") or a skipped operation (null) is
    /// a soft error (try again), "not owner" a lock error, anything else
    /// except the dry run's "aborted" a hard error.
    pub(crate) fn outcome(&self, reply: Result<Value, Value>) -> TxnOutcome {
        let result = match reply {
            Err(e) if e == "canceled" => return TxnOutcome::status(TxnStatus::TryAgain),
            Err(e) => return TxnOutcome::status(TxnStatus::Error(e.to_string())),
            Ok(r) => r,
        };
        let Some(results) = result.as_array() else {
            return TxnOutcome::status(TxnStatus::Error(result.to_string()));
        };
        let (mut hard, mut soft, mut lock) = (0, 0, 0);
        let mut error = None;
        for r in results {
            match r {
                Value::Null => soft += 1,
                Value::Object(o) => match o.get("error") {
                    None => {}
                    Some(Value::String(e)) => match e.as_str() {
                        "timed out" | "unknown database" => soft += 1,
                        "not owner" => lock += 1,
                        "aborted" => {}
                        _ => {
                            hard += 1;
                            error.get_or_insert_with(|| r.to_string());
                        }
                    },
                    Some(_) => {
                        hard += 1;
                        error.get_or_insert_with(|| r.to_string());
                    }
                },
                other => {
                    hard += 1;
                    error.get_or_insert_with(|| other.to_string());
                }
            }
        }
        let mut out = TxnOutcome::status(TxnStatus::Success);
        if hard == 0 && soft == 0 && lock == 0 {
            if let (Some(i), Some(col)) = (self.inc_index, &self.inc_column) {
                let count = results.get(i).and_then(|m| m.get("count")).and_then(Value::as_i64);
                let value = results
                    .get(i + 1)
                    .and_then(|s| s.get("rows"))
                    .and_then(Value::as_array)
                    .filter(|rows| rows.len() == 1)
                    .and_then(|rows| rows[0].get(col))
                    .and_then(Value::as_i64);
                match (count, value) {
                    (Some(1), Some(v)) => out.increment_new_value = Some(v),
                    _ => {
                        hard += 1;
                        error.get_or_insert_with(|| "increment: unexpected reply to mutate/select".to_string());
                    }
                }
            }
            for (temp, i) in &self.inserts {
                match results.get(*i).and_then(|r| r.get("uuid")).map(|u| uuid_from_json(u, None)) {
                    Some(Ok(real)) => {
                        out.inserted.insert(*temp, real);
                    }
                    _ => {
                        hard += 1;
                        error.get_or_insert_with(|| "insert: reply has no uuid".to_string());
                    }
                }
            }
        }
        out.status = if hard > 0 {
            TxnStatus::Error(error.unwrap_or_default())
        } else if lock > 0 {
            TxnStatus::NotLocked
        } else if soft > 0 {
            TxnStatus::TryAgain
        } else {
            TxnStatus::Success
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{atom::Atom, idl::UpdateFormat};

    /// The vswitch schema with one Open_vSwitch row and one Bridge "br0".
    fn setup() -> (Arc<DatabaseSchema>, Replica, Uuid, Uuid) {
        let schema = Arc::new(crate::vswitch::schema());
        let monitored: BTreeMap<String, Vec<String>> =
            schema.tables.iter().map(|(t, ts)| (t.clone(), ts.columns.keys().cloned().collect())).collect();
        let mut replica = Replica::new(&schema, &monitored).unwrap();
        let (ovs, br) = (Uuid::new_v4(), Uuid::new_v4());
        let init = json!({
            "Open_vSwitch": {ovs.to_string(): {"initial": {"bridges": ["uuid", br.to_string()], "next_cfg": 4}}},
            "Bridge": {br.to_string(): {"initial": {"name": "br0"}}},
        });
        replica.apply(UpdateFormat::V2, &init, &mut Vec::new()).unwrap();
        (schema, replica, ovs, br)
    }

    fn txn(schema: &Arc<DatabaseSchema>) -> Txn {
        Txn::new("Open_vSwitch".into(), schema.clone())
    }

    fn s(v: &str) -> Datum {
        Datum::scalar(Atom::string(v))
    }

    #[test]
    fn wire_form_of_insert_update_verify() {
        let (schema, replica, ovs, br) = setup();
        let mut t = txn(&schema);
        t.verify(&replica, "Open_vSwitch", &ovs, "bridges");
        let nb = t.insert("Bridge");
        t.write("Bridge", &nb, "name", s("br1"));
        t.write("Bridge", &nb, "stp_enable", Datum::scalar(Atom::Boolean(false))); // the default: not sent
        let mut bridges = t.read(&replica, "Open_vSwitch", &ovs, "bridges").unwrap();
        bridges.keys.push(Atom::Uuid(nb));
        bridges.keys.sort();
        t.write("Open_vSwitch", &ovs, "bridges", bridges.clone());
        t.comment("a");
        t.comment("b");
        let p = t.prepare(&replica).unwrap().unwrap();
        let name = row_name(&nb);
        assert!(name.starts_with("row") && !name.contains('-'));
        let mut refs: Vec<Value> = bridges
            .keys
            .iter()
            .map(|a| match a.as_uuid().unwrap() {
                u if u == nb => json!(["named-uuid", name]),
                u => json!(["uuid", u.to_string()]),
            })
            .collect();
        refs.sort_by_key(|v| v.to_string());
        // Rows go out in the order the transaction first touched them.
        let Value::Object(update) = &p.params[2] else { panic!() };
        let mut sent = update["row"]["bridges"][1].as_array().unwrap().clone();
        sent.sort_by_key(|v| v.to_string());
        assert_eq!(sent, refs);
        assert_eq!(p.params[0], json!("Open_vSwitch"));
        assert_eq!(
            p.params[1],
            json!({"op": "wait", "table": "Open_vSwitch", "timeout": 0, "until": "==",
                   "where": [["_uuid", "==", ["uuid", ovs.to_string()]]],
                   "columns": ["bridges"], "rows": [{"bridges": ["uuid", br.to_string()]}]})
        );
        assert_eq!(p.params[3], json!({"op": "insert", "table": "Bridge", "uuid-name": name, "row": {"name": "br1"}}));
        assert_eq!(update["op"], "update");
        assert_eq!(update["where"], json!([["_uuid", "==", ["uuid", ovs.to_string()]]]));
        assert_eq!(update["row"].as_object().unwrap().len(), 1, "only written columns");
        assert_eq!(p.params[4], json!({"op": "comment", "comment": "a\nb"}));
        assert_eq!(p.params.len(), 5);
        assert_eq!(p.inserts, vec![(nb, 2)]);

        // The reply maps the temporary uuid to the real one.
        let real = Uuid::new_v4();
        let out = p.outcome(Ok(json!([{}, {"count": 1}, {"uuid": ["uuid", real.to_string()]}, {}])));
        assert_eq!(out.status, TxnStatus::Success);
        assert_eq!(out.inserted[&nb], real);
    }

    #[test]
    fn unchanged_delete_increment_dry_run() {
        let (schema, replica, ovs, br) = setup();
        // Same value, or nothing at all: nothing to send.
        let mut t = txn(&schema);
        t.write("Bridge", &br, "name", s("br0"));
        assert!(t.prepare(&replica).unwrap().is_none());
        assert!(txn(&schema).prepare(&replica).unwrap().is_none());
        let mut t = txn(&schema);
        t.verify(&replica, "Bridge", &br, "name");
        t.comment("only a comment");
        assert!(t.prepare(&replica).unwrap().is_none());

        // Deleting a row of a non-root table is left to garbage collection;
        // of a root table, it is a delete.
        let mut t = txn(&schema);
        t.delete("Bridge", &br);
        assert!(t.prepare(&replica).unwrap().is_none());
        assert_eq!(t.read(&replica, "Bridge", &br, "name"), None);
        assert!(t.rows(&replica, "Bridge").is_empty());
        t.delete("Open_vSwitch", &ovs);
        let p = t.prepare(&replica).unwrap().unwrap();
        assert_eq!(p.params[1], json!({"op": "delete", "table": "Open_vSwitch", "where": where_uuid(&ovs)}));

        // Inserted then deleted: gone from the transaction.
        let mut t = txn(&schema);
        let q = t.insert("QoS");
        assert_eq!(t.rows(&replica, "QoS"), vec![q]);
        t.delete("QoS", &q);
        assert!(t.is_empty());
        assert!(t.rows(&replica, "QoS").is_empty());

        // Increment: mutate + select after the changes, then abort (dry run).
        let mut t = txn(&schema);
        t.write("Bridge", &br, "name", s("br9"));
        t.increment("Open_vSwitch", &ovs, "next_cfg");
        t.set_dry_run(true);
        let p = t.prepare(&replica).unwrap().unwrap();
        assert_eq!(
            p.params[2],
            json!({"op": "mutate", "table": "Open_vSwitch", "where": where_uuid(&ovs), "mutations": [["next_cfg", "+=", 1]]})
        );
        assert_eq!(
            p.params[3],
            json!({"op": "select", "table": "Open_vSwitch", "where": where_uuid(&ovs), "columns": ["next_cfg"]})
        );
        assert_eq!(p.params[4], json!({"op": "abort"}));
        let out = p.outcome(Ok(json!([{"count": 1}, {"count": 1}, {"rows": [{"next_cfg": 5}]}, {"error": "aborted"}])));
        assert_eq!(out.status, TxnStatus::Success);
        assert_eq!(out.increment_new_value, Some(5));
        let out = p.outcome(Ok(json!([{"count": 1}, {"count": 0}, {"rows": []}, {"error": "aborted"}])));
        assert!(matches!(out.status, TxnStatus::Error(_)), "a missing row for the increment is an error");
    }

    #[test]
    fn singleton_insert_waits_for_an_empty_table() {
        let (schema, replica, _, _) = setup();
        let mut t = txn(&schema);
        let ssl = t.insert("SSL");
        t.write("SSL", &ssl, "private_key", s("k"));
        let p = t.prepare(&replica).unwrap().unwrap();
        assert_eq!(
            p.params[1],
            json!({"op": "wait", "table": "SSL", "where": [], "timeout": 0, "until": "==", "rows": []})
        );
        assert_eq!(p.inserts, vec![(ssl, 1)], "index into the results, which have no database name");
    }

    #[test]
    fn reply_classification() {
        let (schema, replica, _, br) = setup();
        let mut t = txn(&schema);
        t.write("Bridge", &br, "name", s("x"));
        let p = t.prepare(&replica).unwrap().unwrap();
        let st = |r: Result<Value, Value>| p.outcome(r).status;
        assert_eq!(st(Ok(json!([{"error": "timed out", "details": "..."}, null]))), TxnStatus::TryAgain);
        assert_eq!(st(Ok(json!([{}, null]))), TxnStatus::TryAgain);
        assert_eq!(st(Ok(json!([{"error": "not owner"}]))), TxnStatus::NotLocked);
        assert_eq!(st(Err(json!("canceled"))), TxnStatus::TryAgain);
        assert_eq!(
            st(Ok(json!([{"count": 1}, {"error": "constraint violation", "details": "dup"}]))),
            TxnStatus::Error(r#"{"details":"dup","error":"constraint violation"}"#.into())
        );
        assert_eq!(st(Ok(json!({"x": 1}))), TxnStatus::Error(r#"{"x":1}"#.into()));
        assert_eq!(st(Ok(json!([5]))), TxnStatus::Error("5".into()));
        assert_eq!(st(Ok(json!([{"count": 1}]))), TxnStatus::Success);
    }

    #[test]
    fn verify_decides_at_verify_time() {
        let (schema, replica, _, br) = setup();
        let gone = Uuid::new_v4();
        let mut t = txn(&schema);
        t.verify(&replica, "Bridge", &gone, "name");
        t.verify(&replica, "Bridge", &br, "name");
        t.write("Bridge", &br, "name", s("y"));
        // The replica loses the verified row before the commit: the wait
        // must still expect the value that was read.
        let mut later = replica.clone();
        later.apply(UpdateFormat::V2, &json!({"Bridge": {br.to_string(): {"delete": null}}}), &mut Vec::new()).unwrap();
        let p = t.prepare(&later).unwrap().unwrap();
        assert_eq!(p.params[1]["rows"], json!([]), "absent when verified: must still be absent");
        assert_eq!(p.params[1]["where"], where_uuid(&gone));
        assert_eq!(p.params[2]["rows"], json!([{"name": "br0"}]));
    }

    fn int_set(v: &[i64]) -> Datum {
        Datum { keys: v.iter().map(|i| Atom::Integer(*i)).collect(), values: None }
    }

    fn str_map(pairs: &[(&str, &str)]) -> Datum {
        Datum {
            keys: pairs.iter().map(|p| s(p.0).keys[0].clone()).collect(),
            values: Some(pairs.iter().map(|p| s(p.1).keys[0].clone()).collect()),
        }
    }

    #[test]
    fn wire_form_of_partial_updates() {
        let (schema, mut replica, _, br) = setup();
        replica
            .apply(
                UpdateFormat::V2,
                &json!({"Bridge": {br.to_string(): {"modify": {"other_config": ["map", [["a", "1"], ["b", "2"]]], "flood_vlans": 5}}}}),
                &mut Vec::new(),
            )
            .unwrap();
        let mut t = txn(&schema);
        t.write_partial_map(&replica, "Bridge", &br, "other_config", &str_map(&[("a", "1"), ("b", "9"), ("c", "3")]));
        t.delete_partial_map("Bridge", &br, "external_ids", &int_set(&[]));
        t.write_partial_set("Bridge", &br, "flood_vlans", &int_set(&[7, 6]));
        t.delete_partial_set("Bridge", &br, "flood_vlans", &int_set(&[5, 8]));
        let p = t.prepare(&replica).unwrap().unwrap();
        // One mutate for the row, columns in name order; no wait: partial
        // updates need no verify.
        assert_eq!(p.params.len(), 2);
        assert_eq!(
            p.params[1],
            json!({"op": "mutate", "table": "Bridge", "where": where_uuid(&br), "mutations": [
                ["flood_vlans", "delete", ["set", [5]]],
                ["flood_vlans", "insert", ["set", [6, 7]]],
                ["other_config", "delete", ["set", ["b"]]],
                ["other_config", "insert", ["map", [["b", "9"], ["c", "3"]]]],
            ]})
        );
        // Reads through the transaction do not see partial updates (OVS's
        // ovsdb_idl_read()).
        assert_eq!(t.read(&replica, "Bridge", &br, "flood_vlans"), Some(int_set(&[5])));

        // Writes that would change nothing: nothing to send.
        let mut t = txn(&schema);
        t.write_partial_map(&replica, "Bridge", &br, "other_config", &str_map(&[("a", "1")]));
        t.delete_partial_set("Bridge", &br, "flood_vlans", &int_set(&[9]));
        assert!(t.prepare(&replica).unwrap().is_none());
    }

    #[test]
    fn a_partial_map_write_is_classified_when_recorded() {
        let (schema, replica, _, br) = setup();
        // The key is new when written, so it stays a plain insert even
        // though the whole-column write after it has the key: the server
        // keeps the whole write's value, as with OVS's MAP_OP_INSERT.
        let mut t = txn(&schema);
        t.write_partial_map(&replica, "Bridge", &br, "external_ids", &str_map(&[("k", "1")]));
        t.write("Bridge", &br, "external_ids", str_map(&[("k", "2")]));
        let p = t.prepare(&replica).unwrap().unwrap();
        assert_eq!(p.params[2]["mutations"], json!([["external_ids", "insert", ["map", [["k", "1"]]]]]));
        // Written first, the key exists when the pair is recorded: replaced.
        let mut t = txn(&schema);
        t.write("Bridge", &br, "external_ids", str_map(&[("k", "2")]));
        t.write_partial_map(&replica, "Bridge", &br, "external_ids", &str_map(&[("k", "1")]));
        let p = t.prepare(&replica).unwrap().unwrap();
        assert_eq!(
            p.params[2]["mutations"],
            json!([["external_ids", "delete", ["set", ["k"]]], ["external_ids", "insert", ["map", [["k", "1"]]]]])
        );
    }

    #[test]
    fn partial_updates_after_a_whole_write_and_on_new_rows() {
        let (schema, replica, ovs, br) = setup();
        // The whole-column write goes out as the update and the partial
        // updates apply on top of it, in a mutate that follows.
        let mut t = txn(&schema);
        t.write("Bridge", &br, "flood_vlans", int_set(&[1, 2]));
        t.write_partial_set("Bridge", &br, "flood_vlans", &int_set(&[3]));
        t.delete_partial_set("Bridge", &br, "flood_vlans", &int_set(&[1]));
        let p = t.prepare(&replica).unwrap().unwrap();
        assert_eq!(
            p.params[1],
            json!({"op": "update", "table": "Bridge", "where": where_uuid(&br), "row": {"flood_vlans": ["set", [1, 2]]}})
        );
        assert_eq!(
            p.params[2]["mutations"],
            json!([["flood_vlans", "delete", ["set", [1]]], ["flood_vlans", "insert", ["set", [3]]]])
        );

        // A row inserted here: the mutate names it, and references to new
        // rows in the values become named-uuids too.
        let mut t = txn(&schema);
        let nb = t.insert("Bridge");
        t.write("Bridge", &nb, "name", s("br1"));
        t.write_partial_map(&replica, "Bridge", &nb, "external_ids", &str_map(&[("k", "v")]));
        t.write_partial_set("Open_vSwitch", &ovs, "bridges", &Datum::scalar(Atom::Uuid(nb)));
        let p = t.prepare(&replica).unwrap().unwrap();
        let name = row_name(&nb);
        assert_eq!(p.params[1]["op"], "insert");
        assert_eq!(
            p.params[2],
            json!({"op": "mutate", "table": "Bridge", "where": [["_uuid", "==", ["named-uuid", name]]],
                   "mutations": [["external_ids", "insert", ["map", [["k", "v"]]]]]})
        );
        assert_eq!(p.params[3]["mutations"], json!([["bridges", "insert", ["set", [["named-uuid", name]]]]]));

        // Deleting the row drops its partial updates.
        let mut t = txn(&schema);
        t.write_partial_set("Open_vSwitch", &ovs, "bridges", &Datum::scalar(Atom::Uuid(br)));
        t.delete("Open_vSwitch", &ovs);
        let p = t.prepare(&replica).unwrap().unwrap();
        assert_eq!(p.params.len(), 2);
        assert_eq!(p.params[1]["op"], "delete");
    }

    #[test]
    fn partial_update_misuse() {
        let (schema, replica, _, br) = setup();
        type Misuse<'a> = Box<dyn Fn(&mut Txn) + 'a>;
        let cases: Vec<(Misuse, &str)> = vec![
            (Box::new(|t| t.write_partial_set("Bridge", &br, "other_config", &s("x"))), "not a set"),
            (
                Box::new(|t| t.write_partial_map(&replica, "Bridge", &br, "flood_vlans", &str_map(&[("a", "b")]))),
                "not a map",
            ),
            (Box::new(|t| t.write_partial_map(&replica, "Bridge", &br, "other_config", &s("x"))), "without values"),
            (Box::new(|t| t.write_partial_set("Bridge", &br, "flood_vlans", &s("x"))), "wrong type"),
            (Box::new(|t| t.delete_partial_map("Bridge", &br, "other_config", &int_set(&[1]))), "wrong type"),
            (Box::new(|t| t.write_partial_set("Bridge", &br, "nope", &int_set(&[1]))), "no column nope"),
        ];
        for (f, want) in cases {
            let mut t = txn(&schema);
            f(&mut t);
            let e = t.prepare(&replica).unwrap_err();
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        }
        let mut t = txn(&schema);
        t.delete("Bridge", &br);
        t.write_partial_set("Bridge", &br, "flood_vlans", &int_set(&[1]));
        assert!(t.error().unwrap().contains("deleted"));

        // A column the replica does not have cannot be the base of a
        // partial update.
        let partial = name_only_replica(&schema, br);
        let mut t = txn(&schema);
        t.write_partial_set("Bridge", &br, "flood_vlans", &int_set(&[1]));
        assert!(t.prepare(&partial).unwrap_err().contains("not replicated"));
    }

    /// A replica of Bridge's `name` alone, holding `br`.
    fn name_only_replica(schema: &DatabaseSchema, br: Uuid) -> Replica {
        let mut r = Replica::new(schema, &BTreeMap::from([("Bridge".to_string(), vec!["name".to_string()])])).unwrap();
        let update = json!({"Bridge": {br.to_string(): {"initial": {"name": "br0"}}}});
        r.apply(UpdateFormat::V2, &update, &mut Vec::new()).unwrap();
        r
    }

    #[test]
    fn misuse_is_reported() {
        let (schema, replica, _, br) = setup();
        let mut t = txn(&schema);
        t.write("Bridge", &br, "nope", s("x"));
        assert!(t.prepare(&replica).unwrap_err().contains("nope"));
        let mut t = txn(&schema);
        t.insert("Nope");
        assert!(t.prepare(&replica).is_err());
        let mut t = txn(&schema);
        t.delete("Bridge", &br);
        t.write("Bridge", &br, "name", s("x"));
        assert!(t.error().unwrap().contains("deleted"));

        // Verifying a column that is not replicated cannot be checked.
        let partial = name_only_replica(&schema, br);
        let mut t = txn(&schema);
        t.verify(&partial, "Bridge", &br, "ports");
        assert!(t.error().unwrap().contains("not replicated"));
    }
}
