//! Conditions (RFC 7047 §5.1): `[column, function, value]` clauses, all of
//! which must hold for a row to match ("where" clauses), plus the `true` and
//! `false` literals of monitor_cond. Parsed and evaluated as OVS's
//! ovsdb/condition.c does.
use std::cmp::Ordering;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    atom::{Atom, AtomicType, Symbols},
    datum::Datum,
    db::{Row, datum_cmp, datum_from_json, type_to_english, unknown_column},
    error::{OvsdbError, Result},
    schema::TableSchema,
    types::{Type, UNLIMITED},
};

/// Listed in OVS's order: cheapest-to-test / most selective first, which is
/// also the order clauses are sorted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Function {
    False,
    True,
    Eq,
    Includes,
    Le,
    Lt,
    Ge,
    Gt,
    Excludes,
    Ne,
}

impl Function {
    pub fn name(self) -> &'static str {
        match self {
            Function::False => "false",
            Function::True => "true",
            Function::Eq => "==",
            Function::Includes => "includes",
            Function::Le => "<=",
            Function::Lt => "<",
            Function::Ge => ">=",
            Function::Gt => ">",
            Function::Excludes => "excludes",
            Function::Ne => "!=",
        }
    }

    /// The functions a `[column, function, value]` clause may name. (OVS
    /// would also accept "true"/"false" here and then crash evaluating
    /// them; they are only literals.)
    pub fn from_name(s: &str) -> Option<Function> {
        Some(match s {
            "==" => Function::Eq,
            "includes" => Function::Includes,
            "<=" => Function::Le,
            "<" => Function::Lt,
            ">=" => Function::Ge,
            ">" => Function::Gt,
            "excludes" => Function::Excludes,
            "!=" => Function::Ne,
            _ => return None,
        })
    }
}

/// One clause. For the `true`/`false` literals `column` is `_uuid` and `arg`
/// empty, as in OVS.
#[derive(Clone, Debug, PartialEq)]
pub struct Clause {
    pub column: String,
    pub function: Function,
    pub arg: Datum,
    /// The column's type (evaluation depends on it).
    pub column_type: Type,
}

/// A parsed condition: its clauses, sorted as OVS sorts them.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Condition {
    pub clauses: Vec<Clause>,
}

fn uuid_type() -> Type {
    Type::scalar(AtomicType::Uuid)
}

impl Clause {
    fn from_json(ts: &TableSchema, v: &Value, symbols: Option<&Symbols>) -> Result<Clause> {
        if let Value::Bool(b) = v {
            let function = if *b { Function::True } else { Function::False };
            return Ok(Clause { column: "_uuid".into(), function, arg: Datum::empty_set(), column_type: uuid_type() });
        }
        let parts = v.as_array().filter(|a| a.len() == 3);
        let (Some(cname), Some(fname), Some(arg_json)) =
            (parts.and_then(|a| a[0].as_str()), parts.and_then(|a| a[1].as_str()), parts.map(|a| &a[2]))
        else {
            return Err(OvsdbError::syntax("Parse error in condition."));
        };
        let col = ts.column(cname).ok_or_else(|| unknown_column(cname, &ts.name))?;
        let function = Function::from_name(fname)
            .ok_or_else(|| OvsdbError::new("unknown function", format!("No function named {fname}.")))?;
        let ct = col.type_;
        // The argument's type: the column's, relaxed where the function allows.
        let mut at = ct.clone();
        match function {
            Function::Lt | Function::Le | Function::Gt | Function::Ge => {
                let scalarish = ct.value.is_none() && ct.max == 1;
                if !scalarish || !matches!(ct.key.atype, AtomicType::Integer | AtomicType::Real) {
                    return Err(OvsdbError::syntax(format!(
                        "Type mismatch: \"{}\" operator may not be applied to column {} of type {}.",
                        function.name(),
                        cname,
                        type_to_english(&ct)
                    )));
                }
                at.min = 1;
            }
            // (True/False are literals, never named here.)
            Function::Eq | Function::Ne | Function::True | Function::False => {}
            Function::Excludes => {
                if !ct.is_scalar() {
                    at.min = 0;
                    at.max = UNLIMITED;
                }
            }
            Function::Includes => {
                if !ct.is_scalar() {
                    at.min = 0;
                }
            }
        }
        let arg = datum_from_json(&at, arg_json, symbols)?;
        Ok(Clause { column: cname.to_string(), function, arg, column_type: ct })
    }

    pub fn to_json(&self) -> Value {
        match self.function {
            Function::True => json!(true),
            Function::False => json!(false),
            f => json!([self.column, f.name(), self.arg.to_json()]),
        }
    }

    /// Whether `row` satisfies the clause.
    pub fn evaluate(&self, row: &Row) -> bool {
        match self.function {
            Function::True => return true,
            Function::False => return false,
            _ => {}
        }
        let Some(field) = row.get(&self.column) else { return false };
        let t = &self.column_type;
        let scalarish = t.value.is_none() && t.max == 1;
        let ordering = matches!(self.function, Function::Lt | Function::Le | Function::Gt | Function::Ge);
        if scalarish && t.min == 0 && field.is_empty() && ordering {
            // An empty optional value is neither less nor greater than anything.
            return false;
        }
        if scalarish && field.len() == 1 && self.arg.len() == 1 {
            let c = field.keys[0].cmp(&self.arg.keys[0]);
            return match self.function {
                Function::Lt => c == Ordering::Less,
                Function::Le => c != Ordering::Greater,
                Function::Eq | Function::Includes => c == Ordering::Equal,
                Function::Ne | Function::Excludes => c != Ordering::Equal,
                Function::Ge => c != Ordering::Less,
                Function::Gt => c == Ordering::Greater,
                Function::True => true,
                Function::False => false,
            };
        }
        match self.function {
            Function::Eq => *field == self.arg,
            Function::Ne => *field != self.arg,
            Function::Includes => self.arg.is_subset_of(&field),
            Function::Excludes => excludes_all(&self.arg, &field),
            // Parsing refuses ordering functions on anything else.
            _ => false,
        }
    }

    /// OVS's clause order: by function, then `_uuid` and `_version` before
    /// user columns, then by name, then by argument.
    fn sort_cmp(&self, other: &Clause) -> Ordering {
        let rank = |c: &str| match c {
            "_uuid" => 0,
            "_version" => 1,
            _ => 2,
        };
        self.function
            .cmp(&other.function)
            .then_with(|| rank(&self.column).cmp(&rank(&other.column)))
            .then_with(|| self.column.cmp(&other.column))
            .then_with(|| datum_cmp(&self.arg, &other.arg))
    }
}

/// No element (pair, for maps) of `arg` is in `field`.
fn excludes_all(arg: &Datum, field: &Datum) -> bool {
    match &arg.values {
        Some(vals) => arg.keys.iter().zip(vals).all(|(k, v)| field.get(k) != Some(v)),
        None => arg.keys.iter().all(|k| !field.contains_key(k)),
    }
}

impl Condition {
    /// Parses a JSON array of clauses against table `ts`; `symbols` resolves
    /// named-uuids (inside transactions).
    pub fn from_json(ts: &TableSchema, v: &Value, symbols: Option<&Symbols>) -> Result<Condition> {
        let items = v.as_array().ok_or_else(|| OvsdbError::syntax("Parse error in condition."))?;
        let mut clauses = items.iter().map(|c| Clause::from_json(ts, c, symbols)).collect::<Result<Vec<_>>>()?;
        clauses.sort_by(|a, b| a.sort_cmp(b));
        Ok(Condition { clauses })
    }

    pub fn to_json(&self) -> Value {
        Value::Array(self.clauses.iter().map(Clause::to_json).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty()
    }

    /// "where" semantics: every clause holds (an empty condition matches all).
    pub fn matches_all(&self, row: &Row) -> bool {
        self.clauses.iter().all(|c| c.evaluate(row))
    }

    /// monitor_cond semantics: some clause holds; an empty condition
    /// matches every row, as in OVS.
    pub fn matches_any(&self, row: &Row) -> bool {
        self.clauses.is_empty() || self.clauses.iter().any(|c| c.evaluate(row))
    }

    /// Matches every row under `matches_any` (empty, or a `true` literal).
    pub fn is_true(&self) -> bool {
        self.clauses.is_empty() || self.clauses.iter().any(|c| c.function == Function::True)
    }

    /// Exactly `[false]`.
    pub fn is_false(&self) -> bool {
        self.clauses.len() == 1 && self.clauses[0].function == Function::False
    }

    /// The row a `_uuid == X` clause pins the condition to, if any: lets
    /// queries look the row up instead of scanning.
    pub fn uuid_eq(&self) -> Option<Uuid> {
        self.clauses.iter().find_map(|c| match (c.function, c.column.as_str(), c.arg.keys.as_slice()) {
            (Function::Eq, "_uuid", [Atom::Uuid(u)]) => Some(*u),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::tests::{test_row as row, test_schema};

    fn cond(v: Value) -> Result<Condition> {
        let schema = test_schema();
        Condition::from_json(&schema.tables["Root"], &v, None)
    }

    fn m(c: Value, r: &Row) -> bool {
        cond(c).unwrap().matches_all(r)
    }

    #[test]
    fn scalar_functions() {
        let r = row(json!({"n": 5, "r": 1.5, "name": "x", "opt": ["set", []]}));
        assert!(m(json!([["n", "==", 5]]), &r));
        assert!(m(json!([["n", "<", 6], ["n", "<=", 5], ["n", ">=", 5], ["n", ">", 4], ["n", "!=", 4]]), &r));
        assert!(!m(json!([["n", "<", 5]]), &r));
        assert!(m(json!([["r", ">", 1]]), &r));
        assert!(m(json!([["name", "includes", "x"], ["name", "excludes", "y"]]), &r));
        // An empty optional is neither < nor > anything.
        assert!(!m(json!([["opt", "<", 1]]), &r));
        assert!(!m(json!([["opt", ">", 1]]), &r));
        assert!(m(json!([["opt", "==", ["set", []]]]), &r));
        let r2 = row(json!({"opt": 3}));
        assert!(m(json!([["opt", "<", 4], ["opt", "==", 3]]), &r2));
        assert!(m(json!([]), &r));
        assert!(m(json!([true]), &r) && !m(json!([false]), &r));
        assert!(m(json!([["_uuid", "==", ["uuid", r.uuid.to_string()]]]), &r));
        assert!(m(json!([["_version", "!=", ["uuid", r.uuid.to_string()]]]), &r));
        assert_eq!(cond(json!([["_uuid", "==", ["uuid", r.uuid.to_string()]]])).unwrap().uuid_eq(), Some(r.uuid));
    }

    #[test]
    fn set_and_map_functions() {
        let r = row(json!({"ints": ["set", [1, 2]], "m": ["map", [["a", "1"], ["b", "2"]]]}));
        assert!(m(json!([["ints", "==", ["set", [2, 1]]]]), &r));
        assert!(m(json!([["ints", "includes", 1]]), &r));
        assert!(m(json!([["ints", "includes", ["set", [1, 2]]]]), &r));
        assert!(!m(json!([["ints", "includes", ["set", [1, 3]]]]), &r));
        assert!(m(json!([["ints", "excludes", ["set", [3, 4, 5, 6]]]]), &r));
        assert!(!m(json!([["ints", "excludes", ["set", [2, 3]]]]), &r));
        assert!(m(json!([["m", "includes", ["map", [["a", "1"]]]]]), &r));
        assert!(!m(json!([["m", "includes", ["map", [["a", "2"]]]]]), &r));
        assert!(m(json!([["m", "excludes", ["map", [["a", "2"]]]]]), &r));
        assert!(!m(json!([["m", "excludes", ["map", [["b", "2"]]]]]), &r));
        assert!(m(json!([["m", "!=", ["map", []]]]), &r));
    }

    #[test]
    fn any_semantics_for_monitors() {
        let r = row(json!({"n": 5}));
        assert!(cond(json!([["n", "==", 1], ["n", "==", 5]])).unwrap().matches_any(&r));
        assert!(!cond(json!([["n", "==", 1], false])).unwrap().matches_any(&r));
        assert!(cond(json!([])).unwrap().matches_any(&r));
        assert!(cond(json!([true])).unwrap().is_true());
        assert!(cond(json!([false])).unwrap().is_false());
        // Sorted as OVS sorts (by function first), so equal conditions compare equal.
        let c = cond(json!([["n", "!=", 1], false, ["name", "==", "a"]])).unwrap();
        assert_eq!(c.to_json(), json!([false, ["name", "==", "a"], ["n", "!=", 1]]));
    }

    #[test]
    fn errors() {
        let e = |v: Value| cond(v).unwrap_err();
        assert_eq!(e(json!([["nope", "==", 1]])).tag, "unknown column");
        assert_eq!(e(json!([["n", "~", 1]])).tag, "unknown function");
        assert_eq!(e(json!([["n", "true", 1]])).tag, "unknown function");
        assert_eq!(e(json!([["n", "=="]])).details, "Parse error in condition.");
        assert_eq!(e(json!([[1, "==", 1]])).tag, "syntax error");
        assert_eq!(e(json!(["n"])).tag, "syntax error");
        assert_eq!(e(json!({})).tag, "syntax error");
        let x = e(json!([["name", "<", "a"]]));
        assert_eq!(x.details, "Type mismatch: \"<\" operator may not be applied to column name of type string.");
        let x = e(json!([["ints", "<", 1]]));
        assert!(x.details.contains("set of up to 3 integers"), "{x}");
        assert_eq!(e(json!([["n", "==", "x"]])).tag, "syntax error");
        // Arguments obey the column's constraints, as in OVS.
        assert_eq!(e(json!([["n", "==", 1000]])).tag, "constraint violation");
        assert_eq!(e(json!([["ints", "==", ["set", [1, 2, 3, 4]]]])).tag, "syntax error");
        assert_eq!(e(json!([["kids", "includes", ["named-uuid", "x"]]])).tag, "syntax error");
    }
}
