//! Mutations (RFC 7047 §5.1): `[column, mutator, value]`, parsed and applied
//! as OVS's ovsdb/mutation.c does, error tags and messages included.
use serde_json::{Value, json};

use crate::{
    atom::{Atom, AtomicType, Symbols},
    datum::Datum,
    db::{Row, column_is_mutable, datum_from_json, type_to_english, unknown_column},
    error::{OvsdbError, Result},
    schema::TableSchema,
    types::{BaseType, Type, UNLIMITED},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutator {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Insert,
    Delete,
}

impl Mutator {
    pub fn name(self) -> &'static str {
        match self {
            Mutator::Add => "+=",
            Mutator::Sub => "-=",
            Mutator::Mul => "*=",
            Mutator::Div => "/=",
            Mutator::Mod => "%=",
            Mutator::Insert => "insert",
            Mutator::Delete => "delete",
        }
    }

    pub fn from_name(s: &str) -> Option<Mutator> {
        Some(match s {
            "+=" => Mutator::Add,
            "-=" => Mutator::Sub,
            "*=" => Mutator::Mul,
            "/=" => Mutator::Div,
            "%=" => Mutator::Mod,
            "insert" => Mutator::Insert,
            "delete" => Mutator::Delete,
            _ => return None,
        })
    }

    fn is_arithmetic(self) -> bool {
        !matches!(self, Mutator::Insert | Mutator::Delete)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Mutation {
    pub column: String,
    pub mutator: Mutator,
    pub arg: Datum,
    /// The column's type (results must fit it).
    pub column_type: Type,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct MutationSet {
    pub mutations: Vec<Mutation>,
}

impl Mutation {
    fn from_json(ts: &TableSchema, v: &Value, symbols: Option<&Symbols>) -> Result<Mutation> {
        let parts = v.as_array().filter(|a| a.len() == 3);
        let (Some(cname), Some(mname), Some(arg_json)) =
            (parts.and_then(|a| a[0].as_str()), parts.and_then(|a| a[1].as_str()), parts.map(|a| &a[2]))
        else {
            return Err(OvsdbError::syntax("Parse error in mutation."));
        };
        let col = ts.column(cname).ok_or_else(|| unknown_column(cname, &ts.name))?;
        // `_uuid` and `_version` are immutable too.
        let implicit = cname.starts_with('_');
        if implicit || !column_is_mutable(&col) {
            return Err(OvsdbError::constraint(format!(
                "Cannot mutate immutable column {cname} in table {}.",
                ts.name
            ))
            .with_syntax(v));
        }
        let mutator = Mutator::from_name(mname)
            .ok_or_else(|| OvsdbError::new("unknown mutator", format!("No mutator named {mname}.")))?;
        let ct = col.type_;
        let mismatch = || {
            OvsdbError::syntax(format!(
                "Type mismatch: \"{}\" operator may not be applied to column {} of type {}.",
                mutator.name(),
                cname,
                type_to_english(&ct)
            ))
        };
        let arg = if mutator.is_arithmetic() {
            let numeric = matches!(ct.key.atype, AtomicType::Integer | AtomicType::Real);
            if ct.is_map() || !numeric || (mutator == Mutator::Mod && ct.key.atype == AtomicType::Real) {
                return Err(mismatch());
            }
            // One unconstrained number: only the results must satisfy the
            // column's constraints.
            let at = Type { key: BaseType::new(ct.key.atype), value: None, min: 1, max: 1 };
            datum_from_json(&at, arg_json, symbols)?
        } else {
            if ct.is_scalar() {
                return Err(mismatch());
            }
            let mut at = ct.clone();
            at.min = 0;
            if mutator == Mutator::Delete {
                at.max = UNLIMITED;
            }
            match datum_from_json(&at, arg_json, symbols) {
                Ok(d) => d,
                // A map's elements may also be deleted by a set of keys.
                Err(_) if ct.is_map() && mutator == Mutator::Delete => {
                    let kt = Type { key: ct.key.clone(), value: None, min: 0, max: UNLIMITED };
                    datum_from_json(&kt, arg_json, symbols)?
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Mutation { column: cname.to_string(), mutator, arg, column_type: ct })
    }

    pub fn to_json(&self) -> Value {
        json!([self.column, self.mutator.name(), self.arg.to_json()])
    }

    /// Applies the mutation to `d`, a value of the column.
    pub fn apply(&self, d: &Datum) -> Result<Datum> {
        let t = &self.column_type;
        match self.mutator {
            Mutator::Insert => check_count(d.union(&self.arg), t),
            Mutator::Delete => check_count(d.difference(&self.arg), t),
            m => {
                let Some(y) = self.arg.keys.first() else {
                    return Err(OvsdbError::syntax("mutation needs one argument"));
                };
                let mut keys = Vec::with_capacity(d.len());
                for x in &d.keys {
                    let r = arith(m, x, y)?;
                    keys.push(r);
                }
                for k in &keys {
                    t.key.check(k)?;
                }
                keys.sort();
                if keys.windows(2).any(|w| w[0] == w[1]) {
                    return Err(OvsdbError::constraint(format!(
                        "Result of \"{}\" operation contains duplicates.",
                        m.name()
                    )));
                }
                Ok(Datum { keys, values: None })
            }
        }
    }
}

fn check_count(d: Datum, t: &Type) -> Result<Datum> {
    let n = d.len() as u64;
    if n < t.min || n > t.max {
        return Err(OvsdbError::constraint(format!("Attempted to store {n} elements in {}.", type_to_english(t))));
    }
    Ok(d)
}

fn range_error(m: Mutator) -> OvsdbError {
    OvsdbError::new("range error", format!("Result of \"{}\" operation is out of range.", m.name()))
}

fn domain_error() -> OvsdbError {
    OvsdbError::new("domain error", "Division by zero.")
}

fn arith(m: Mutator, x: &Atom, y: &Atom) -> Result<Atom> {
    match (x, y) {
        (Atom::Integer(x), Atom::Integer(y)) => {
            if matches!(m, Mutator::Div | Mutator::Mod) && *y == 0 {
                return Err(domain_error());
            }
            let r = match m {
                Mutator::Add => x.checked_add(*y),
                Mutator::Sub => x.checked_sub(*y),
                Mutator::Mul => x.checked_mul(*y),
                // Truncating, as C's / and %; MIN / -1 overflows.
                Mutator::Div => x.checked_div(*y),
                Mutator::Mod => x.checked_rem(*y),
                Mutator::Insert | Mutator::Delete => None,
            };
            r.map(Atom::Integer).ok_or_else(|| range_error(m))
        }
        (Atom::Real(x), Atom::Real(y)) => {
            let r = match m {
                Mutator::Add => x + y,
                Mutator::Sub => x - y,
                Mutator::Mul => x * y,
                Mutator::Div if *y == 0.0 => return Err(domain_error()),
                Mutator::Div => x / y,
                // Refused when parsing; OVS's "Operation not supported".
                _ => return Err(OvsdbError::new("ovsdb error", "Operation not supported.")),
            };
            if r.is_finite() { Ok(Atom::Real(r)) } else { Err(range_error(m)) }
        }
        _ => Err(OvsdbError::syntax("mutation argument has the wrong type")),
    }
}

impl MutationSet {
    /// Parses a JSON array of mutations against table `ts`.
    pub fn from_json(ts: &TableSchema, v: &Value, symbols: Option<&Symbols>) -> Result<MutationSet> {
        let items = v.as_array().ok_or_else(|| OvsdbError::syntax("Parse error in mutation."))?;
        let mutations = items.iter().map(|m| Mutation::from_json(ts, m, symbols)).collect::<Result<Vec<_>>>()?;
        Ok(MutationSet { mutations })
    }

    pub fn to_json(&self) -> Value {
        Value::Array(self.mutations.iter().map(Mutation::to_json).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.mutations.is_empty()
    }

    /// Applies every mutation, in order, to `row`. On error `row` may be
    /// partly mutated (the transaction is abandoned anyway).
    pub fn execute(&self, row: &mut Row) -> Result<()> {
        for m in &self.mutations {
            let cur = row.columns.get(&m.column).cloned().unwrap_or_else(|| Datum::empty_for(&m.column_type));
            let new = m.apply(&cur)?;
            // Mutations name schema columns only (checked when parsed).
            let _ = row.columns.insert(&m.column, new);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests::{test_row as row, test_schema};

    fn run(r: &mut Row, muts: Value) -> Result<()> {
        let schema = test_schema();
        MutationSet::from_json(&schema.tables["Root"], &muts, None)?.execute(r)
    }

    fn col(r: &Row, c: &str) -> Value {
        r.columns[c].to_json()
    }

    #[test]
    fn arithmetic() {
        let mut r = row(json!({"n": 10, "r": 1.5, "ints": ["set", [1, 2]], "opt": ["set", []]}));
        run(&mut r, json!([["n", "+=", 5], ["n", "-=", 3], ["n", "*=", 2], ["n", "/=", 5], ["n", "%=", 3]])).unwrap();
        assert_eq!(col(&r, "n"), json!(1)); // ((10+5-3)*2/5)%3 = 4%3
        run(&mut r, json!([["r", "*=", 2], ["r", "/=", 4]])).unwrap();
        assert_eq!(col(&r, "r"), json!(0.75));
        run(&mut r, json!([["ints", "*=", 10]])).unwrap();
        assert_eq!(col(&r, "ints"), json!(["set", [10, 20]]));
        run(&mut r, json!([["opt", "+=", 1]])).unwrap();
        assert_eq!(col(&r, "opt"), json!(["set", []]));
        // The argument itself is not held to the column's constraints.
        run(&mut r, json!([["n", "+=", 1000], ["n", "-=", 1000]])).unwrap_err();
        let mut r = row(json!({"n": 50}));
        run(&mut r, json!([["n", "-=", 1000], ["n", "+=", 1000]])).unwrap_err();
        run(&mut r, json!([["n", "+=", -40]])).unwrap();
        assert_eq!(col(&r, "n"), json!(10));
    }

    #[test]
    fn sets_and_maps() {
        let mut r = row(json!({"ints": 1, "m": ["map", [["a", "1"], ["b", "2"]]]}));
        run(&mut r, json!([["ints", "insert", ["set", [2, 3]]], ["ints", "delete", 1]])).unwrap();
        assert_eq!(col(&r, "ints"), json!(["set", [2, 3]]));
        run(&mut r, json!([["m", "insert", ["map", [["a", "9"], ["c", "3"]]]]])).unwrap();
        assert_eq!(col(&r, "m"), json!(["map", [["a", "1"], ["b", "2"], ["c", "3"]]]));
        run(&mut r, json!([["m", "delete", ["set", ["a"]]], ["m", "delete", ["map", [["b", "x"], ["c", "3"]]]]]))
            .unwrap();
        assert_eq!(col(&r, "m"), json!(["map", [["b", "2"]]]));
        run(&mut r, json!([["m", "delete", "b"]])).unwrap();
        assert_eq!(col(&r, "m"), json!(["map", []]));
        run(&mut r, json!([["opt", "insert", 4]])).unwrap();
        assert_eq!(col(&r, "opt"), json!(4));
    }

    #[test]
    fn errors() {
        let mut r = row(json!({"n": 10, "r": 1.5, "ints": ["set", [1, 2]], "opt": 1}));
        let e = |r: &mut Row, v: Value| run(r, v).unwrap_err();
        assert_eq!(e(&mut r, json!([["n", "/=", 0]])).tag, "domain error");
        assert_eq!(e(&mut r, json!([["n", "%=", 0]])).details, "Division by zero.");
        assert_eq!(e(&mut r, json!([["r", "/=", 0]])).tag, "domain error");
        let mut big = row(json!({"ints": ["set", [9223372036854775807i64]]}));
        let x = e(&mut big, json!([["ints", "+=", 1]]));
        assert_eq!((x.tag, x.details.as_str()), ("range error", "Result of \"+=\" operation is out of range."));
        let mut small = row(json!({"ints": ["set", [-9223372036854775808i64]]}));
        assert_eq!(e(&mut small, json!([["ints", "/=", -1]])).tag, "range error");
        assert_eq!(e(&mut small, json!([["ints", "*=", 2]])).tag, "range error");
        assert_eq!(e(&mut r, json!([["r", "*=", 1e308], ["r", "*=", 1e308]])).tag, "range error");
        // Results must satisfy the column: constraints, duplicates, size.
        assert_eq!(e(&mut r, json!([["n", "+=", 91]])).tag, "constraint violation");
        let x = e(&mut r, json!([["ints", "*=", 0]]));
        assert_eq!(x.details, "Result of \"*=\" operation contains duplicates.");
        let x = e(&mut r, json!([["opt", "insert", 2]]));
        assert_eq!(
            (x.tag, x.details.as_str()),
            ("constraint violation", "Attempted to store 2 elements in set of up to 1 integers.")
        );
        assert_eq!(e(&mut r, json!([["ints", "insert", ["set", [5, 6]]]])).tag, "constraint violation");
        // Parse errors.
        assert_eq!(e(&mut r, json!([["nope", "+=", 1]])).tag, "unknown column");
        assert_eq!(e(&mut r, json!([["n", "^=", 1]])).tag, "unknown mutator");
        assert_eq!(e(&mut r, json!([["n", "+="]])).details, "Parse error in mutation.");
        assert_eq!(e(&mut r, json!([["name", "+=", 1]])).tag, "syntax error");
        assert_eq!(e(&mut r, json!([["r", "%=", 1]])).tag, "syntax error");
        assert_eq!(e(&mut r, json!([["n", "insert", 1]])).tag, "syntax error");
        assert_eq!(e(&mut r, json!([["m", "+=", 1]])).tag, "syntax error");
        assert_eq!(e(&mut r, json!([["n", "+=", "x"]])).tag, "syntax error");
        assert_eq!(e(&mut r, json!([["ints", "insert", ["set", [1, 2, 3, 4]]]])).tag, "syntax error");
        let x = e(&mut r, json!([["fixed", "insert", "x"]]));
        assert_eq!(
            (x.tag, x.details.as_str()),
            ("constraint violation", "Cannot mutate immutable column fixed in table Root.")
        );
        assert_eq!(e(&mut r, json!([["_uuid", "insert", 1]])).tag, "constraint violation");
        assert_eq!(e(&mut r, json!([["_version", "+=", 1]])).tag, "constraint violation");
        assert_eq!(e(&mut r, json!({})).tag, "syntax error");
    }
}
