//! The client's copy of the monitored tables, kept up to date from the
//! server's `update` (monitor) and `update2` (monitor_cond) notifications,
//! with a record of what changed for the caller's change tracking.
use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use uuid::Uuid;

use crate::{
    atom::{Atom, parse_uuid},
    datum::Datum,
    error::brief,
    schema::DatabaseSchema,
    types::Type,
};

use super::IdlError;

/// All monitored tables (a table that is monitored but empty is present).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Replica {
    tables: BTreeMap<String, TableReplica>,
    /// Each monitored table's monitored columns with their types.
    columns: BTreeMap<String, BTreeMap<String, Type>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TableReplica {
    /// A BTreeMap so that iteration is deterministic (by uuid).
    pub rows: BTreeMap<Uuid, ReplicaRow>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaRow {
    pub uuid: Uuid,
    /// Every monitored column, with the type's default when the server sent
    /// none.
    pub columns: BTreeMap<String, Datum>,
}

impl ReplicaRow {
    pub fn get(&self, column: &str) -> Option<&Datum> {
        self.columns.get(column)
    }
}

/// One row's change, for [`Idl::take_changes`](super::Idl::take_changes).
#[derive(Clone, Debug, PartialEq)]
pub struct RowChange {
    pub table: String,
    pub uuid: Uuid,
    pub kind: ChangeKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ChangeKind {
    Insert,
    /// `old` holds the previous value of each changed column only.
    Modify {
        old: BTreeMap<String, Datum>,
    },
    Delete {
        old: ReplicaRow,
    },
}

/// Which form the server's updates take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateFormat {
    /// `monitor`: `{"old": ROW, "new": ROW}` per row.
    V1,
    /// `monitor_cond`: `{"initial"|"insert"|"delete"|"modify": ROW}`, with
    /// `modify` carrying differences.
    V2,
}

impl Replica {
    /// An empty replica of the given tables and columns (names checked
    /// against `schema`).
    pub(crate) fn new(schema: &DatabaseSchema, monitored: &BTreeMap<String, Vec<String>>) -> Result<Replica, IdlError> {
        let mut tables = BTreeMap::new();
        let mut columns = BTreeMap::new();
        for (table, cols) in monitored {
            let ts = schema
                .tables
                .get(table)
                .ok_or_else(|| IdlError::Schema(format!("{table}: no such table in the server's schema")))?;
            let mut types = BTreeMap::new();
            for c in cols {
                let cs = ts
                    .columns
                    .get(c)
                    .ok_or_else(|| IdlError::Schema(format!("{table}: no column {c} in the server's schema")))?;
                types.insert(c.clone(), cs.type_.clone());
            }
            columns.insert(table.clone(), types);
            tables.insert(table.clone(), TableReplica::default());
        }
        Ok(Replica { tables, columns })
    }

    pub fn table(&self, name: &str) -> Option<&TableReplica> {
        self.tables.get(name)
    }

    pub fn row(&self, table: &str, uuid: &Uuid) -> Option<&ReplicaRow> {
        self.tables.get(table)?.rows.get(uuid)
    }

    /// Names of the monitored tables.
    pub fn table_names(&self) -> impl Iterator<Item = &str> {
        self.tables.keys().map(String::as_str)
    }

    /// Whether `column` of `table` is replicated.
    pub fn has_column(&self, table: &str, column: &str) -> bool {
        self.columns.get(table).is_some_and(|c| c.contains_key(column))
    }

    /// Applies one `table-updates` (V1) or `table-updates2` (V2) object,
    /// appending the resulting changes to `changes`.
    pub(crate) fn apply(
        &mut self,
        format: UpdateFormat,
        updates: &Value,
        changes: &mut Vec<RowChange>,
    ) -> Result<(), IdlError> {
        let bad = |what: String| IdlError::Protocol(format!("bad update from server: {what}"));
        let tables = updates.as_object().ok_or_else(|| bad(format!("{} is not an object", brief(updates))))?;
        for (table, rows) in tables {
            let Some(types) = self.columns.get(table) else {
                return Err(bad(format!("update for table {table}, which is not monitored")));
            };
            let rows = rows.as_object().ok_or_else(|| bad(format!("table {table}: rows are not an object")))?;
            let rep = self.tables.get_mut(table).expect("monitored tables have a replica");
            for (uuid_s, update) in rows {
                let uuid = parse_uuid(uuid_s).ok_or_else(|| bad(format!("\"{uuid_s}\" is not a UUID")))?;
                let update = update.as_object().ok_or_else(|| bad(format!("row {uuid_s}: not an object")))?;
                let change = match format {
                    UpdateFormat::V1 => apply_v1(rep, types, uuid, update),
                    UpdateFormat::V2 => apply_v2(rep, types, uuid, update),
                }
                .map_err(|e| bad(format!("table {table} row {uuid_s}: {e}")))?;
                if let Some(kind) = change {
                    changes.push(RowChange { table: table.clone(), uuid, kind });
                }
            }
        }
        Ok(())
    }

    /// The changes that turn `self` into `new` (used after a reconnect, when
    /// the replica is rebuilt from the server's initial contents).
    pub(crate) fn diff(&self, new: &Replica) -> Vec<RowChange> {
        let mut out = Vec::new();
        let empty = TableReplica::default();
        for (table, old_t) in &self.tables {
            let new_t = new.tables.get(table).unwrap_or(&empty);
            for (uuid, old_row) in &old_t.rows {
                match new_t.rows.get(uuid) {
                    None => out.push(RowChange {
                        table: table.clone(),
                        uuid: *uuid,
                        kind: ChangeKind::Delete { old: old_row.clone() },
                    }),
                    Some(new_row) => {
                        let old: BTreeMap<String, Datum> = old_row
                            .columns
                            .iter()
                            .filter(|(c, v)| new_row.columns.get(*c) != Some(*v))
                            .map(|(c, v)| (c.clone(), v.clone()))
                            .collect();
                        if !old.is_empty() {
                            out.push(RowChange { table: table.clone(), uuid: *uuid, kind: ChangeKind::Modify { old } });
                        }
                    }
                }
            }
        }
        for (table, new_t) in &new.tables {
            let old_t = self.tables.get(table).unwrap_or(&empty);
            for uuid in new_t.rows.keys().filter(|u| !old_t.rows.contains_key(*u)) {
                out.push(RowChange { table: table.clone(), uuid: *uuid, kind: ChangeKind::Insert });
            }
        }
        out
    }
}

/// Parses the columns of a row object, ignoring columns that are not
/// monitored (e.g. `_version`, which some servers add).
fn parse_columns(types: &BTreeMap<String, Type>, row: &Value, diff: bool) -> Result<BTreeMap<String, Datum>, String> {
    let obj = row.as_object().ok_or_else(|| format!("row {} is not an object", brief(row)))?;
    let mut out = BTreeMap::new();
    for (c, v) in obj {
        let Some(t) = types.get(c) else { continue };
        // A diff may hold more elements than the column allows (for a scalar,
        // the old and the new value), so its count is not checked.
        let d = if diff { Datum::from_json_unchecked(t, v, None) } else { Datum::from_json(t, v, None) }
            .map_err(|e| format!("column {c}: {e}"))?;
        out.insert(c.clone(), d);
    }
    Ok(out)
}

fn new_row(types: &BTreeMap<String, Type>, uuid: Uuid, mut cols: BTreeMap<String, Datum>) -> ReplicaRow {
    for (c, t) in types {
        cols.entry(c.clone()).or_insert_with(|| Datum::default_for(t));
    }
    ReplicaRow { uuid, columns: cols }
}

/// Stores `row` (fully specified) as the new contents of `uuid`.
fn put_row(rep: &mut TableReplica, row: ReplicaRow) -> Option<ChangeKind> {
    match rep.rows.insert(row.uuid, row) {
        None => Some(ChangeKind::Insert),
        Some(prev) => {
            let cur = &rep.rows[&prev.uuid];
            let old: BTreeMap<String, Datum> =
                prev.columns.into_iter().filter(|(c, v)| cur.columns.get(c) != Some(v)).collect();
            (!old.is_empty()).then_some(ChangeKind::Modify { old })
        }
    }
}

fn apply_v1(
    rep: &mut TableReplica,
    types: &BTreeMap<String, Type>,
    uuid: Uuid,
    update: &serde_json::Map<String, Value>,
) -> Result<Option<ChangeKind>, String> {
    match update.get("new") {
        None => Ok(rep.rows.remove(&uuid).map(|old| ChangeKind::Delete { old })),
        Some(new) => {
            let cols = parse_columns(types, new, false)?;
            match rep.rows.get_mut(&uuid) {
                // A modification: "new" holds every column, but be lenient and
                // keep the columns it leaves out.
                Some(row) => {
                    let mut old = BTreeMap::new();
                    for (c, v) in cols {
                        if row.columns.get(&c) != Some(&v)
                            && let Some(prev) = row.columns.insert(c.clone(), v)
                        {
                            old.insert(c, prev);
                        }
                    }
                    Ok((!old.is_empty()).then_some(ChangeKind::Modify { old }))
                }
                None => Ok(put_row(rep, new_row(types, uuid, cols))),
            }
        }
    }
}

fn apply_v2(
    rep: &mut TableReplica,
    types: &BTreeMap<String, Type>,
    uuid: Uuid,
    update: &serde_json::Map<String, Value>,
) -> Result<Option<ChangeKind>, String> {
    if update.len() != 1 {
        return Err("expected exactly one of initial, insert, modify, delete".into());
    }
    let (op, row) = update.iter().next().expect("one member");
    match op.as_str() {
        "initial" | "insert" => Ok(put_row(rep, new_row(types, uuid, parse_columns(types, row, false)?))),
        "delete" => Ok(rep.rows.remove(&uuid).map(|old| ChangeKind::Delete { old })),
        "modify" => {
            let diffs = parse_columns(types, row, true)?;
            let Some(cur) = rep.rows.get_mut(&uuid) else {
                return Err("modify of a row that is not in the replica".into());
            };
            let mut old = BTreeMap::new();
            for (c, diff) in diffs {
                let prev = cur.columns.get(&c).cloned().unwrap_or_else(|| Datum::default_for(&types[&c]));
                let next = apply_diff(&types[&c], &prev, &diff);
                if next != prev {
                    cur.columns.insert(c.clone(), next);
                    old.insert(c, prev);
                }
            }
            Ok((!old.is_empty()).then_some(ChangeKind::Modify { old }))
        }
        other => Err(format!("unknown update operation \"{other}\"")),
    }
}

/// Applies an `update2` column difference. A column of at most one element
/// gets the diff as its new value; otherwise, for a set, each element in the
/// diff is toggled, and for a map a key absent from `old` is added, a key
/// with the same value is removed, and a key with another value gets that
/// value.
pub(crate) fn apply_diff(t: &Type, old: &Datum, diff: &Datum) -> Datum {
    if t.max <= 1 {
        return diff.clone();
    }
    match (&old.values, &diff.values) {
        (Some(old_vals), Some(diff_vals)) => {
            let mut m: BTreeMap<Atom, Atom> = old.keys.iter().cloned().zip(old_vals.iter().cloned()).collect();
            for (k, v) in diff.keys.iter().zip(diff_vals) {
                match m.get(k) {
                    Some(cur) if cur == v => {
                        m.remove(k);
                    }
                    _ => {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
            let (keys, values) = m.into_iter().unzip();
            Datum { keys, values: Some(values) }
        }
        _ => {
            let mut s: std::collections::BTreeSet<Atom> = old.keys.iter().cloned().collect();
            for k in &diff.keys {
                if !s.remove(k) {
                    s.insert(k.clone());
                }
            }
            Datum { keys: s.into_iter().collect(), values: None }
        }
    }
}

/// Convenience for tests and callers: a map of strings as a [`HashMap`].
pub fn datum_string_map(d: &Datum) -> HashMap<String, String> {
    match &d.values {
        Some(vals) => d
            .keys
            .iter()
            .zip(vals)
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
            .collect(),
        None => HashMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> DatabaseSchema {
        DatabaseSchema::from_json(&json!({
            "name": "T", "version": "1.0.0",
            "tables": {"A": {"columns": {
                "n": {"type": "integer"},
                "s": {"type": {"key": "string", "min": 0, "max": "unlimited"}},
                "m": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
                "o": {"type": {"key": "string", "min": 0, "max": 1}}}}}
        }))
        .unwrap()
    }

    fn replica() -> Replica {
        let cols = ["m", "n", "o", "s"].iter().map(|s| s.to_string()).collect();
        Replica::new(&schema(), &BTreeMap::from([("A".to_string(), cols)])).unwrap()
    }

    #[test]
    fn v2_initial_modify_delete() {
        let mut r = replica();
        let u = Uuid::new_v4();
        let us = u.to_string();
        let mut ch = Vec::new();
        r.apply(
            UpdateFormat::V2,
            &json!({"A": {us.clone(): {"initial": {"n": 3, "s": ["set", ["a", "b"]]}}}}),
            &mut ch,
        )
        .unwrap();
        assert_eq!(ch, vec![RowChange { table: "A".into(), uuid: u, kind: ChangeKind::Insert }]);
        let row = r.row("A", &u).unwrap();
        assert_eq!(row.get("n"), Some(&Datum::scalar(Atom::Integer(3))));
        assert_eq!(row.get("o"), Some(&Datum::empty_set()), "defaults filled in");
        assert_eq!(row.get("m").unwrap().values, Some(vec![]));

        ch.clear();
        let upd = json!({"A": {us.clone(): {"modify": {
            "n": 4, "s": ["set", ["b", "c"]], "m": ["map", [["k", "v"]]], "o": "x"}}}});
        r.apply(UpdateFormat::V2, &upd, &mut ch).unwrap();
        let row = r.row("A", &u).unwrap();
        assert_eq!(row.get("n"), Some(&Datum::scalar(Atom::Integer(4))), "scalar diff is the new value");
        assert_eq!(row.get("s").unwrap().keys, vec![Atom::string("a"), Atom::string("c")]);
        assert_eq!(datum_string_map(row.get("m").unwrap()), HashMap::from([("k".into(), "v".into())]));
        assert_eq!(row.get("o").unwrap().keys, vec![Atom::string("x")]);
        let ChangeKind::Modify { old } = &ch[0].kind else { panic!("{ch:?}") };
        assert_eq!(old.len(), 4);
        assert_eq!(old["n"], Datum::scalar(Atom::Integer(3)));

        // Map: same value removes, other value replaces.
        ch.clear();
        r.apply(UpdateFormat::V2, &json!({"A": {us.clone(): {"modify": {"m": ["map", [["k", "w"]]]}}}}), &mut ch)
            .unwrap();
        assert_eq!(datum_string_map(r.row("A", &u).unwrap().get("m").unwrap())["k"], "w");
        r.apply(UpdateFormat::V2, &json!({"A": {us.clone(): {"modify": {"m": ["map", [["k", "w"]]]}}}}), &mut ch)
            .unwrap();
        assert!(r.row("A", &u).unwrap().get("m").unwrap().is_empty());

        ch.clear();
        r.apply(UpdateFormat::V2, &json!({"A": {us.clone(): {"delete": null}}}), &mut ch).unwrap();
        assert!(
            matches!(&ch[0].kind, ChangeKind::Delete { old } if old.get("n") == Some(&Datum::scalar(Atom::Integer(4))))
        );
        assert!(r.row("A", &u).is_none());
    }

    #[test]
    fn v1_insert_modify_delete_and_diff() {
        let mut r = replica();
        let before = r.clone();
        let u = Uuid::new_v4();
        let us = u.to_string();
        let mut ch = Vec::new();
        r.apply(UpdateFormat::V1, &json!({"A": {us.clone(): {"new": {"n": 1, "_version": ["uuid", us]}}}}), &mut ch)
            .unwrap();
        assert_eq!(ch[0].kind, ChangeKind::Insert);
        r.apply(UpdateFormat::V1, &json!({"A": {us.clone(): {"old": {"n": 1}, "new": {"n": 2}}}}), &mut ch).unwrap();
        assert!(matches!(&ch[1].kind, ChangeKind::Modify { old } if old.len() == 1));
        assert_eq!(before.diff(&r), vec![RowChange { table: "A".into(), uuid: u, kind: ChangeKind::Insert }]);
        r.apply(UpdateFormat::V1, &json!({"A": {us.clone(): {"old": {"n": 2}}}}), &mut ch).unwrap();
        assert!(matches!(&ch[2].kind, ChangeKind::Delete { .. }));
    }

    #[test]
    fn bad_updates_are_errors() {
        let mut r = replica();
        let mut ch = Vec::new();
        let u = Uuid::new_v4().to_string();
        for bad in [
            json!([]),
            json!({"B": {}}),
            json!({"A": {"nope": {"insert": {}}}}),
            json!({"A": {u.clone(): {"insert": {"n": "x"}}}}),
            json!({"A": {u.clone(): {"modify": {"n": 1}}}}),
            json!({"A": {u.clone(): {"frob": {}}}}),
        ] {
            assert!(r.apply(UpdateFormat::V2, &bad, &mut ch).is_err(), "{bad}");
        }
    }
}
