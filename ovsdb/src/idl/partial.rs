//! Partial updates of set and map columns (OVS's `set_op` / `map_op` lists,
//! lib/ovsdb-set-op.c and lib/ovsdb-map-op.c): instead of rewriting the whole
//! column, a transaction records per-element inserts and deletes that go to
//! the server as one `mutate` operation. Two clients adding different
//! elements to the same set then both succeed, and limits such as a set's
//! maximum size are enforced by the server on the merged value.
use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{atom::Atom, datum::Datum};

/// What is pending for one element (a set's member or a map's key).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum PartialOp {
    /// Set: add the member. Map: the key, which the column had when this
    /// was recorded, gets this value (OVS's MAP_OP_UPDATE).
    Insert(Option<Atom>),
    /// Map: add the key with this value; the column did not have the key
    /// when this was recorded (OVS's MAP_OP_INSERT), so it goes out as a
    /// plain insert, which leaves the key alone if it is there at commit.
    MapInsert(Atom),
    Delete,
}

/// The pending partial updates of one column, one per element.
#[derive(Clone, Debug, Default)]
pub(crate) struct PartialOps {
    ops: BTreeMap<Atom, PartialOp>,
}

impl PartialOps {
    /// Records `op` for `key`; a later operation on the same element
    /// replaces the earlier one, except that deleting a set member inserted
    /// by this transaction, or a map key it added that the column did not
    /// have, cancels both (set_op_list_add(), map_op_list_add()).
    pub(crate) fn add(&mut self, key: Atom, op: PartialOp, is_map: bool) {
        let cancels = match self.ops.get(&key) {
            Some(PartialOp::Insert(None)) => !is_map,
            Some(PartialOp::MapInsert(_)) => is_map,
            _ => false,
        };
        if op == PartialOp::Delete && cancels {
            self.ops.remove(&key);
            return;
        }
        self.ops.insert(key, op);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The mutations for `column`, relative to `base` (the value the
    /// transaction otherwise leaves in the column), as
    /// ovsdb_idl_txn_extract_mutations() builds them: at most a "delete"
    /// followed by at most an "insert". Deletes of elements `base` lacks are
    /// dropped, as are map writes that would not change the value; a map
    /// write of a key `base` has becomes a delete of the key and an insert
    /// of the pair, because "insert" on a map leaves existing keys alone,
    /// unless the key was new when the write was recorded (MapInsert).
    /// Set inserts always go out: the server ignores members already there.
    pub(crate) fn mutations(&self, column: &str, base: &Datum, is_map: bool) -> Vec<Value> {
        let mut delete = Vec::new();
        let mut insert = Vec::new();
        for (key, op) in &self.ops {
            match op {
                PartialOp::Delete => {
                    if base.contains_key(key) {
                        delete.push(key.to_json());
                    }
                }
                PartialOp::Insert(None) => insert.push(key.to_json()),
                PartialOp::MapInsert(value) => insert.push(json!([key.to_json(), value.to_json()])),
                PartialOp::Insert(Some(value)) => {
                    if base.contains_key(key) {
                        if base.get(key) == Some(value) {
                            continue;
                        }
                        delete.push(key.to_json());
                    }
                    insert.push(json!([key.to_json(), value.to_json()]));
                }
            }
        }
        let mut out = Vec::new();
        if !delete.is_empty() {
            out.push(json!([column, "delete", ["set", delete]]));
        }
        if !insert.is_empty() {
            out.push(json!([column, "insert", [if is_map { "map" } else { "set" }, insert]]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Atom {
        Atom::string(v)
    }

    fn map(pairs: &[(&str, &str)]) -> Datum {
        let mut pairs: Vec<(Atom, Atom)> = pairs.iter().map(|(k, v)| (s(k), s(v))).collect();
        pairs.sort();
        Datum {
            keys: pairs.iter().map(|p| p.0.clone()).collect(),
            values: Some(pairs.into_iter().map(|p| p.1).collect()),
        }
    }

    #[test]
    fn map_mutations_against_the_base() {
        let base = map(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let mut ops = PartialOps::default();
        ops.add(s("a"), PartialOp::Insert(Some(s("1"))), true); // unchanged: dropped
        ops.add(s("b"), PartialOp::Insert(Some(s("9"))), true); // replace: delete + insert
        ops.add(s("n"), PartialOp::MapInsert(s("new")), true); // new key: insert
        ops.add(s("c"), PartialOp::Delete, true);
        ops.add(s("zz"), PartialOp::Delete, true); // not there: dropped
        assert_eq!(
            ops.mutations("other_config", &base, true),
            vec![
                json!(["other_config", "delete", ["set", ["b", "c"]]]),
                json!(["other_config", "insert", ["map", [["b", "9"], ["n", "new"]]]]),
            ]
        );
        let mut only_same = PartialOps::default();
        only_same.add(s("a"), PartialOp::Insert(Some(s("1"))), true);
        assert!(only_same.mutations("m", &base, true).is_empty());
    }

    #[test]
    fn later_ops_replace_earlier_ones() {
        let base = map(&[("a", "1")]);
        // Write then delete of a new key: nothing, even against a base
        // that has the key.
        let mut ops = PartialOps::default();
        ops.add(s("n"), PartialOp::MapInsert(s("x")), true);
        ops.add(s("n"), PartialOp::Delete, true);
        assert!(ops.is_empty());
        // A key that was new when written is a plain insert, whatever the
        // base has at commit; one the column had is replaced.
        let mut ops = PartialOps::default();
        ops.add(s("a"), PartialOp::MapInsert(s("2")), true);
        assert_eq!(ops.mutations("m", &base, true), vec![json!(["m", "insert", ["map", [["a", "2"]]]])]);
        let mut ops = PartialOps::default();
        ops.add(s("a"), PartialOp::Insert(Some(s("2"))), true);
        ops.add(s("a"), PartialOp::Delete, true);
        assert_eq!(ops.mutations("m", &base, true), vec![json!(["m", "delete", ["set", ["a"]]])]);
        // Delete then write of an existing key: the write wins.
        let mut ops = PartialOps::default();
        ops.add(s("a"), PartialOp::Delete, true);
        ops.add(s("a"), PartialOp::Insert(Some(s("2"))), true);
        assert_eq!(
            ops.mutations("m", &base, true),
            vec![json!(["m", "delete", ["set", ["a"]]]), json!(["m", "insert", ["map", [["a", "2"]]]])]
        );
    }

    #[test]
    fn set_mutations_and_cancelling() {
        let base = Datum { keys: vec![Atom::Integer(1), Atom::Integer(2)], values: None };
        let mut ops = PartialOps::default();
        ops.add(Atom::Integer(2), PartialOp::Insert(None), false); // already there: still sent
        ops.add(Atom::Integer(3), PartialOp::Insert(None), false);
        ops.add(Atom::Integer(1), PartialOp::Delete, false);
        ops.add(Atom::Integer(7), PartialOp::Delete, false); // not there: dropped
        assert_eq!(
            ops.mutations("trunks", &base, false),
            vec![json!(["trunks", "delete", ["set", [1]]]), json!(["trunks", "insert", ["set", [2, 3]]])]
        );
        // Inserting then deleting the same member cancels both, even for a
        // member the column has: the set is left as it was.
        let mut ops = PartialOps::default();
        ops.add(Atom::Integer(1), PartialOp::Insert(None), false);
        ops.add(Atom::Integer(1), PartialOp::Delete, false);
        assert!(ops.is_empty());
        // Deleting then inserting: the insert wins.
        ops.add(Atom::Integer(1), PartialOp::Delete, false);
        ops.add(Atom::Integer(1), PartialOp::Insert(None), false);
        assert_eq!(ops.mutations("trunks", &base, false), vec![json!(["trunks", "insert", ["set", [1]]])]);
    }
}
