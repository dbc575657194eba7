//! Atomic values: integer, real, boolean, string, uuid.
use std::{cmp::Ordering, fmt, sync::Arc};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::{OvsdbError, Result, brief};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AtomicType {
    Integer,
    Real,
    Boolean,
    String,
    Uuid,
}

impl AtomicType {
    pub fn name(self) -> &'static str {
        match self {
            AtomicType::Integer => "integer",
            AtomicType::Real => "real",
            AtomicType::Boolean => "boolean",
            AtomicType::String => "string",
            AtomicType::Uuid => "uuid",
        }
    }

    pub fn from_name(s: &str) -> Option<AtomicType> {
        Some(match s {
            "integer" => AtomicType::Integer,
            "real" => AtomicType::Real,
            "boolean" => AtomicType::Boolean,
            "string" => AtomicType::String,
            "uuid" => AtomicType::Uuid,
            _ => return None,
        })
    }

    /// The default atom of the type (OVS's `ovsdb_atom_init_default`).
    pub fn default_atom(self) -> Atom {
        match self {
            AtomicType::Integer => Atom::Integer(0),
            AtomicType::Real => Atom::Real(0.0),
            AtomicType::Boolean => Atom::Boolean(false),
            AtomicType::String => Atom::String(Arc::from("")),
            AtomicType::Uuid => Atom::Uuid(Uuid::nil()),
        }
    }
}

impl fmt::Display for AtomicType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One value. Reals are ordered by `total_cmp` (OVSDB has no NaN: parsing
/// refuses it).
#[derive(Clone, Debug)]
pub enum Atom {
    Integer(i64),
    Real(f64),
    Boolean(bool),
    String(Arc<str>),
    Uuid(Uuid),
}

impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Atom {}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Atom {
    fn cmp(&self, other: &Self) -> Ordering {
        use Atom::*;
        match (self, other) {
            (Integer(a), Integer(b)) => a.cmp(b),
            (Real(a), Real(b)) => a.total_cmp(b),
            (Boolean(a), Boolean(b)) => a.cmp(b),
            (String(a), String(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Uuid(a), Uuid(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl std::hash::Hash for Atom {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match self {
            Atom::Integer(i) => (0u8, *i).hash(h),
            Atom::Real(r) => (1u8, r.to_bits()).hash(h),
            Atom::Boolean(b) => (2u8, *b).hash(h),
            Atom::String(s) => (3u8, &**s).hash(h),
            Atom::Uuid(u) => (4u8, u).hash(h),
        }
    }
}

/// Names given to rows inserted earlier in the same transaction
/// (`["named-uuid", NAME]` refers to them).
pub type Symbols = crate::fast_hash::FastMap<String, Uuid>;

impl Atom {
    fn rank(&self) -> u8 {
        match self {
            Atom::Integer(_) => 0,
            Atom::Real(_) => 1,
            Atom::Boolean(_) => 2,
            Atom::String(_) => 3,
            Atom::Uuid(_) => 4,
        }
    }

    pub fn atomic_type(&self) -> AtomicType {
        match self {
            Atom::Integer(_) => AtomicType::Integer,
            Atom::Real(_) => AtomicType::Real,
            Atom::Boolean(_) => AtomicType::Boolean,
            Atom::String(_) => AtomicType::String,
            Atom::Uuid(_) => AtomicType::Uuid,
        }
    }

    pub fn string(s: &str) -> Atom {
        Atom::String(Arc::from(s))
    }

    pub fn as_uuid(&self) -> Option<Uuid> {
        if let Atom::Uuid(u) = self { Some(*u) } else { None }
    }

    pub fn as_str(&self) -> Option<&str> {
        if let Atom::String(s) = self { Some(s) } else { None }
    }

    pub fn as_integer(&self) -> Option<i64> {
        if let Atom::Integer(i) = self { Some(*i) } else { None }
    }

    /// Parses an atom of type `t` from JSON. `symbols`: resolves
    /// `["named-uuid", NAME]` (only allowed inside transactions).
    pub fn from_json(t: AtomicType, v: &Value, symbols: Option<&Symbols>) -> Result<Atom> {
        let bad = || OvsdbError::syntax(format!("expected {t}, got {}", brief(v)));
        Ok(match t {
            AtomicType::Integer => match v {
                Value::Number(n) => match n.as_i64() {
                    Some(i) => Atom::Integer(i),
                    None => return Err(OvsdbError::syntax(format!("{n} is not an integer or out of range"))),
                },
                _ => return Err(bad()),
            },
            AtomicType::Real => match v.as_f64() {
                Some(r) if r.is_finite() => Atom::Real(r),
                _ => return Err(bad()),
            },
            AtomicType::Boolean => Atom::Boolean(v.as_bool().ok_or_else(bad)?),
            AtomicType::String => Atom::String(Arc::from(v.as_str().ok_or_else(bad)?)),
            AtomicType::Uuid => Atom::Uuid(uuid_from_json(v, symbols)?),
        })
    }

    pub fn to_json(&self) -> Value {
        match self {
            Atom::Integer(i) => json!(i),
            Atom::Real(r) => real_to_json(*r),
            Atom::Boolean(b) => json!(b),
            Atom::String(s) => json!(&**s),
            Atom::Uuid(u) => json!(["uuid", u.to_string()]),
        }
    }
}

/// Reals that are whole numbers are written as integers, as OVS does ("%.17g").
pub fn real_to_json(r: f64) -> Value {
    if r.fract() == 0.0 && r.abs() < 1e17 { json!(r as i64) } else { json!(r) }
}

pub fn uuid_from_json(v: &Value, symbols: Option<&Symbols>) -> Result<Uuid> {
    let arr = v.as_array().filter(|a| a.len() == 2);
    let bad = || OvsdbError::syntax(format!("expected [\"uuid\", UUID], got {}", brief(v)));
    let arr = arr.ok_or_else(bad)?;
    let s = arr[1].as_str().ok_or_else(bad)?;
    match arr[0].as_str() {
        Some("uuid") => parse_uuid(s).ok_or_else(|| OvsdbError::syntax(format!("\"{s}\" is not a valid UUID"))),
        Some("named-uuid") => match symbols {
            Some(sy) => sy.get(s).copied().ok_or_else(|| OvsdbError::syntax(format!("unknown named-uuid \"{s}\""))),
            None => Err(OvsdbError::syntax("named-uuid not allowed here")),
        },
        _ => Err(bad()),
    }
}

/// A UUID in the canonical 8-4-4-4-12 form only (what OVSDB accepts).
pub fn parse_uuid(s: &str) -> Option<Uuid> {
    let b = s.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    Uuid::parse_str(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoms_round_trip_and_order() {
        let u = Uuid::new_v4();
        for (t, v) in [
            (AtomicType::Integer, json!(-5)),
            (AtomicType::Real, json!(1.5)),
            (AtomicType::Real, json!(2)),
            (AtomicType::Boolean, json!(true)),
            (AtomicType::String, json!("héllo")),
            (AtomicType::Uuid, json!(["uuid", u.to_string()])),
        ] {
            let a = Atom::from_json(t, &v, None).unwrap();
            assert_eq!(a.to_json(), v);
        }
        assert!(Atom::from_json(AtomicType::Integer, &json!(1.5), None).is_err());
        assert!(Atom::from_json(AtomicType::Integer, &json!("1"), None).is_err());
        assert!(Atom::from_json(AtomicType::Uuid, &json!(["uuid", "nope"]), None).is_err());
        assert!(Atom::from_json(AtomicType::Uuid, &json!(["named-uuid", "x"]), None).is_err());
        let mut sy = Symbols::default();
        sy.insert("x".into(), u);
        assert_eq!(Atom::from_json(AtomicType::Uuid, &json!(["named-uuid", "x"]), Some(&sy)).unwrap(), Atom::Uuid(u));
        assert!(Atom::string("a") < Atom::string("b"));
        assert!(Atom::Integer(-1) < Atom::Integer(0));
    }
}
