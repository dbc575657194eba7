//! Column types: a base type for keys (and values, for maps) with its
//! constraints, and how many elements a value may have.
use serde_json::{Map, Value, json};

use crate::{
    atom::{Atom, AtomicType, real_to_json},
    datum::Datum,
    error::{OvsdbError, Result, brief},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefType {
    Strong,
    Weak,
}

/// An atomic type and its constraints.
#[derive(Clone, Debug, PartialEq)]
pub struct BaseType {
    pub atype: AtomicType,
    /// Allowed values (a set datum of `atype`).
    pub enum_: Option<Vec<Atom>>,
    pub min_integer: Option<i64>,
    pub max_integer: Option<i64>,
    pub min_real: Option<f64>,
    pub max_real: Option<f64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub ref_table: Option<String>,
    pub ref_type: RefType,
}

impl BaseType {
    pub fn new(atype: AtomicType) -> Self {
        BaseType {
            atype,
            enum_: None,
            min_integer: None,
            max_integer: None,
            min_real: None,
            max_real: None,
            min_length: None,
            max_length: None,
            ref_table: None,
            ref_type: RefType::Strong,
        }
    }

    fn has_constraints(&self) -> bool {
        self.enum_.is_some()
            || self.min_integer.is_some()
            || self.max_integer.is_some()
            || self.min_real.is_some()
            || self.max_real.is_some()
            || self.min_length.is_some()
            || self.max_length.is_some()
            || self.ref_table.is_some()
    }

    pub fn from_json(v: &Value) -> Result<BaseType> {
        if let Some(s) = v.as_str() {
            return AtomicType::from_name(s)
                .map(BaseType::new)
                .ok_or_else(|| OvsdbError::syntax(format!("unknown atomic type \"{s}\"")));
        }
        let o = v.as_object().ok_or_else(|| OvsdbError::syntax(format!("bad base type {}", brief(v))))?;
        let t = o
            .get("type")
            .and_then(Value::as_str)
            .and_then(AtomicType::from_name)
            .ok_or_else(|| OvsdbError::syntax(format!("base type needs a valid \"type\": {}", brief(v))))?;
        let mut b = BaseType::new(t);
        for (k, val) in o {
            let int = || val.as_i64().ok_or_else(|| OvsdbError::syntax(format!("{k} must be an integer")));
            let real = || val.as_f64().ok_or_else(|| OvsdbError::syntax(format!("{k} must be a number")));
            let len = || val.as_u64().ok_or_else(|| OvsdbError::syntax(format!("{k} must be a nonnegative integer")));
            let only = |want: AtomicType| {
                if t == want { Ok(()) } else { Err(OvsdbError::syntax(format!("{k} not allowed for {t}"))) }
            };
            match k.as_str() {
                "type" => {}
                "enum" => {
                    let d = Datum::from_json_set(&BaseType::new(t), val)?;
                    b.enum_ = Some(d.keys);
                }
                "minInteger" => {
                    only(AtomicType::Integer)?;
                    b.min_integer = Some(int()?)
                }
                "maxInteger" => {
                    only(AtomicType::Integer)?;
                    b.max_integer = Some(int()?)
                }
                "minReal" => {
                    only(AtomicType::Real)?;
                    b.min_real = Some(real()?)
                }
                "maxReal" => {
                    only(AtomicType::Real)?;
                    b.max_real = Some(real()?)
                }
                "minLength" => {
                    only(AtomicType::String)?;
                    b.min_length = Some(len()?)
                }
                "maxLength" => {
                    only(AtomicType::String)?;
                    b.max_length = Some(len()?)
                }
                "refTable" => {
                    only(AtomicType::Uuid)?;
                    b.ref_table =
                        Some(val.as_str().ok_or_else(|| OvsdbError::syntax("refTable must be a string"))?.into())
                }
                "refType" => {
                    only(AtomicType::Uuid)?;
                    b.ref_type = match val.as_str() {
                        Some("strong") => RefType::Strong,
                        Some("weak") => RefType::Weak,
                        _ => return Err(OvsdbError::syntax("refType must be \"strong\" or \"weak\"")),
                    }
                }
                _ => return Err(OvsdbError::syntax(format!("unknown base type member \"{k}\""))),
            }
        }
        if let (Some(a), Some(z)) = (b.min_integer, b.max_integer)
            && a > z
        {
            return Err(OvsdbError::syntax(format!("minInteger {a} exceeds maxInteger {z}")));
        }
        if let (Some(a), Some(z)) = (b.min_real, b.max_real)
            && a > z
        {
            return Err(OvsdbError::syntax(format!("minReal {a} exceeds maxReal {z}")));
        }
        if let (Some(a), Some(z)) = (b.min_length, b.max_length)
            && a > z
        {
            return Err(OvsdbError::syntax(format!("minLength {a} exceeds maxLength {z}")));
        }
        Ok(b)
    }

    /// As OVS writes it: the bare type name when there is no constraint.
    pub fn to_json(&self) -> Value {
        if !self.has_constraints() {
            return json!(self.atype.name());
        }
        let mut o = Map::new();
        o.insert("type".into(), json!(self.atype.name()));
        if let Some(e) = &self.enum_ {
            let d = Datum { keys: e.clone(), values: None };
            o.insert("enum".into(), d.to_json());
        }
        if let Some(x) = self.min_integer {
            o.insert("minInteger".into(), json!(x));
        }
        if let Some(x) = self.max_integer {
            o.insert("maxInteger".into(), json!(x));
        }
        if let Some(x) = self.min_real {
            o.insert("minReal".into(), real_to_json(x));
        }
        if let Some(x) = self.max_real {
            o.insert("maxReal".into(), real_to_json(x));
        }
        if let Some(x) = self.min_length {
            o.insert("minLength".into(), json!(x));
        }
        if let Some(x) = self.max_length {
            o.insert("maxLength".into(), json!(x));
        }
        if let Some(t) = &self.ref_table {
            o.insert("refTable".into(), json!(t));
            if self.ref_type == RefType::Weak {
                o.insert("refType".into(), json!("weak"));
            }
        }
        Value::Object(o)
    }

    /// Checks an atom of this type against the constraints.
    pub fn check(&self, a: &Atom) -> Result<()> {
        if a.atomic_type() != self.atype {
            return Err(OvsdbError::syntax(format!("expected {}, got {}", self.atype, a.atomic_type())));
        }
        if let Some(e) = &self.enum_
            && e.binary_search(a).is_err()
        {
            return Err(OvsdbError::constraint(format!(
                "{} is not one of the allowed values ({})",
                a.to_json(),
                Datum { keys: e.clone(), values: None }.to_json()
            )));
        }
        match a {
            Atom::Integer(i)
                if (self.min_integer.is_some_and(|m| *i < m) || self.max_integer.is_some_and(|m| *i > m)) =>
            {
                return Err(range_error(
                    &i.to_string(),
                    self.min_integer.map(|x| x.to_string()),
                    self.max_integer.map(|x| x.to_string()),
                ));
            }
            Atom::Real(r) if (self.min_real.is_some_and(|m| *r < m) || self.max_real.is_some_and(|m| *r > m)) => {
                return Err(range_error(
                    &r.to_string(),
                    self.min_real.map(|x| x.to_string()),
                    self.max_real.map(|x| x.to_string()),
                ));
            }
            Atom::String(s) => {
                let n = s.chars().count() as u64;
                if self.min_length.is_some_and(|m| n < m) {
                    return Err(OvsdbError::constraint(format!(
                        "\"{s}\" length {n} is less than minimum allowed length {}",
                        self.min_length.unwrap()
                    )));
                }
                if self.max_length.is_some_and(|m| n > m) {
                    return Err(OvsdbError::constraint(format!(
                        "\"{s}\" length {n} is greater than maximum allowed length {}",
                        self.max_length.unwrap()
                    )));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// OVS's wording for a number outside its column's bounds: a range when
/// both bounds are set, otherwise the one bound that was crossed.
fn range_error(value: &str, min: Option<String>, max: Option<String>) -> OvsdbError {
    OvsdbError::constraint(match (min, max) {
        (Some(a), Some(z)) => format!("{value} is not in the valid range {a} to {z} (inclusive)"),
        (Some(a), None) => format!("{value} is less than minimum allowed value {a}"),
        (None, Some(z)) => format!("{value} is greater than maximum allowed value {z}"),
        (None, None) => format!("{value} is out of range"),
    })
}

/// "unlimited" for `max`.
pub const UNLIMITED: u64 = u64::MAX;

/// A column's type: keys, optional values (a map), element count bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct Type {
    pub key: BaseType,
    pub value: Option<BaseType>,
    pub min: u64,
    pub max: u64,
}

impl Type {
    pub fn scalar(t: AtomicType) -> Type {
        Type { key: BaseType::new(t), value: None, min: 1, max: 1 }
    }

    pub fn is_map(&self) -> bool {
        self.value.is_some()
    }

    /// A scalar column (exactly one key, no value).
    pub fn is_scalar(&self) -> bool {
        self.value.is_none() && self.min == 1 && self.max == 1
    }

    /// 0 or 1 element: OVS calls these optional.
    pub fn is_optional(&self) -> bool {
        self.min == 0 && self.max == 1
    }

    pub fn is_set(&self) -> bool {
        self.value.is_none() && !self.is_scalar()
    }

    pub fn from_json(v: &Value) -> Result<Type> {
        if v.is_string() {
            return Ok(Type { key: BaseType::from_json(v)?, value: None, min: 1, max: 1 });
        }
        let o = v.as_object().ok_or_else(|| OvsdbError::syntax(format!("bad type {}", brief(v))))?;
        // A scalar may be written as its base type: {"type": "uuid", "refTable": ...}.
        if !o.contains_key("key") && o.contains_key("type") {
            return Ok(Type { key: BaseType::from_json(v)?, value: None, min: 1, max: 1 });
        }
        let key = BaseType::from_json(o.get("key").ok_or_else(|| OvsdbError::syntax("type needs \"key\""))?)?;
        let value = o.get("value").map(BaseType::from_json).transpose()?;
        let min = match o.get("min") {
            None => 1,
            Some(m) => m.as_u64().filter(|m| *m <= 1).ok_or_else(|| OvsdbError::syntax("min must be 0 or 1"))?,
        };
        let max = match o.get("max") {
            None => 1,
            Some(Value::String(s)) if s == "unlimited" => UNLIMITED,
            Some(m) => m
                .as_u64()
                .filter(|m| *m >= 1)
                .ok_or_else(|| OvsdbError::syntax("max must be a positive integer or \"unlimited\""))?,
        };
        for k in o.keys() {
            if !["key", "value", "min", "max"].contains(&k.as_str()) {
                return Err(OvsdbError::syntax(format!("unknown type member \"{k}\"")));
            }
        }
        if min > max {
            return Err(OvsdbError::syntax(format!("min {min} exceeds max {max}")));
        }
        Ok(Type { key, value, min, max })
    }

    /// As OVS's `ovsdb_type_to_json`: a bare name for an unconstrained scalar.
    pub fn to_json(&self) -> Value {
        if self.is_scalar() && !self.key.has_constraints() {
            return self.key.to_json();
        }
        let mut o = Map::new();
        o.insert("key".into(), self.key.to_json());
        if let Some(v) = &self.value {
            o.insert("value".into(), v.to_json());
        }
        if self.min != 1 {
            o.insert("min".into(), json!(self.min));
        }
        if self.max != 1 {
            o.insert("max".into(), if self.max == UNLIMITED { json!("unlimited") } else { json!(self.max) });
        }
        Value::Object(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_in_ovs_form() {
        for v in [
            json!("string"),
            json!({"key": "string", "min": 0}),
            json!({"key": {"type": "integer", "minInteger": 1, "maxInteger": 4095}}),
            json!({"key": {"type": "uuid", "refTable": "Bridge"}}),
            json!({"key": {"type": "uuid", "refTable": "Port"}, "min": 0, "max": "unlimited"}),
            json!({"key": {"type": "uuid", "refTable": "Mirror", "refType": "weak"}, "min": 0, "max": "unlimited"}),
            json!({"key": "string", "value": "string", "min": 0, "max": "unlimited"}),
            json!({"key": {"type": "string", "enum": ["set", ["active-backup", "balance-slb"]]}, "min": 0}),
            json!({"key": {"type": "integer", "minInteger": 0, "maxInteger": 4095}, "min": 0, "max": 4096}),
        ] {
            let t = Type::from_json(&v).unwrap();
            assert_eq!(t.to_json(), v);
        }
        assert!(Type::from_json(&json!({"key": "strin"})).is_err());
        // The base-type shorthand for a scalar reads the same as the long form.
        let short = Type::from_json(&json!({"type": "uuid", "refTable": "Bridge"})).unwrap();
        assert_eq!(short.to_json(), json!({"key": {"type": "uuid", "refTable": "Bridge"}}));
        assert!(Type::from_json(&json!({"key": "string", "min": 2})).is_err());
        assert!(Type::from_json(&json!({"key": {"type": "string", "minInteger": 1}})).is_err());
    }

    #[test]
    fn constraints() {
        let b = BaseType::from_json(&json!({"type": "integer", "minInteger": 1, "maxInteger": 10})).unwrap();
        assert!(b.check(&Atom::Integer(5)).is_ok());
        let e = b.check(&Atom::Integer(11)).unwrap_err();
        assert_eq!(e.tag, "constraint violation");
        let s = BaseType::from_json(&json!({"type": "string", "enum": ["set", ["a", "b"]]})).unwrap();
        assert!(s.check(&Atom::string("a")).is_ok());
        assert!(s.check(&Atom::string("c")).is_err());
        let l = BaseType::from_json(&json!({"type": "string", "maxLength": 2})).unwrap();
        assert!(l.check(&Atom::string("abc")).is_err());
    }

    #[test]
    fn bound_errors_use_ovs_wording() {
        let details = |t: Value, a: Atom| BaseType::from_json(&t).unwrap().check(&a).unwrap_err().details;
        assert_eq!(
            details(json!({"type": "integer", "minInteger": 1, "maxInteger": 10}), Atom::Integer(11)),
            "11 is not in the valid range 1 to 10 (inclusive)"
        );
        assert_eq!(
            details(json!({"type": "integer", "minInteger": 1}), Atom::Integer(0)),
            "0 is less than minimum allowed value 1"
        );
        assert_eq!(
            details(json!({"type": "integer", "maxInteger": 3}), Atom::Integer(4)),
            "4 is greater than maximum allowed value 3"
        );
        assert_eq!(
            details(json!({"type": "real", "minReal": 1.5}), Atom::Real(-2.5)),
            "-2.5 is less than minimum allowed value 1.5"
        );
    }
}
