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
    /// Set: add the member. Map: add the key with this value, replacing the
    /// value if the key exists.
    Insert(Option<Atom>),
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
    /// by this transaction cancels both (set_op_list_add()).
    ///
    /// OVS's map lists cancel an insert of a key the column did not have
    /// followed by its delete; here the delete simply replaces the insert,
    /// and since deleting a key the column does not have is dropped when
    /// the mutation is built, the result is the same.
    pub(crate) fn add(&mut self, key: Atom, op: PartialOp, is_map: bool) {
        if !is_map && op == PartialOp::Delete && self.ops.get(&key) == Some(&PartialOp::Insert(None)) {
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
    /// of the pair, because "insert" on a map leaves existing keys alone.
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
        ops.add(s("n"), PartialOp::Insert(Some(s("new"))), true); // new key: insert
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
        // Write then delete of a new key: nothing.
        let mut ops = PartialOps::default();
        ops.add(s("n"), PartialOp::Insert(Some(s("x"))), true);
        ops.add(s("n"), PartialOp::Delete, true);
        assert!(ops.mutations("m", &base, true).is_empty());
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
