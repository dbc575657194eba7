//! A column's value: a sorted set of atoms, or a map (sorted keys with values).
use serde_json::{Value, json};

use crate::{
    atom::{Atom, Symbols},
    error::{OvsdbError, Result, brief},
    types::{BaseType, Type},
};

/// Keys are sorted and unique; `values` (for maps) is aligned with `keys`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Datum {
    pub keys: Vec<Atom>,
    pub values: Option<Vec<Atom>>,
}

impl Datum {
    pub fn empty_set() -> Datum {
        Datum { keys: Vec::new(), values: None }
    }

    pub fn empty_for(t: &Type) -> Datum {
        Datum { keys: Vec::new(), values: t.value.as_ref().map(|_| Vec::new()) }
    }

    pub fn scalar(a: Atom) -> Datum {
        Datum { keys: vec![a], values: None }
    }

    /// The default value of a column of type `t`: empty when it may be, else
    /// one default atom (and value).
    pub fn default_for(t: &Type) -> Datum {
        if t.min == 0 {
            return Datum::empty_for(t);
        }
        Datum { keys: vec![t.key.atype.default_atom()], values: t.value.as_ref().map(|v| vec![v.atype.default_atom()]) }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn is_map(&self) -> bool {
        self.values.is_some()
    }

    /// Sorts by key and refuses duplicates.
    fn sort_unique(mut pairs: Vec<(Atom, Option<Atom>)>, is_map: bool) -> Result<Datum> {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        for w in pairs.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(OvsdbError::constraint(format!(
                    "{} contains duplicate key {}",
                    if is_map { "map" } else { "set" },
                    w[0].0.to_json()
                )));
            }
        }
        let (keys, values): (Vec<Atom>, Vec<Option<Atom>>) = pairs.into_iter().unzip();
        let values = if is_map { Some(values.into_iter().map(Option::unwrap).collect()) } else { None };
        Ok(Datum { keys, values })
    }

    /// Parses a value of type `t` (with its element count and constraints
    /// checked). `symbols` resolves named-uuids inside a transaction.
    pub fn from_json(t: &Type, v: &Value, symbols: Option<&Symbols>) -> Result<Datum> {
        let d = Self::from_json_unchecked(t, v, symbols)?;
        d.check(t)?;
        Ok(d)
    }

    /// Parses without checking the element count (mutation arguments, where
    /// the result is what must fit) but with atom constraints.
    pub fn from_json_unchecked(t: &Type, v: &Value, symbols: Option<&Symbols>) -> Result<Datum> {
        let tagged = v.as_array().filter(|a| a.len() == 2).and_then(|a| a[0].as_str().map(|tag| (tag, &a[1])));
        match (t.value.as_ref(), tagged) {
            (Some(vt), Some(("map", body))) => {
                let items = body.as_array().ok_or_else(|| OvsdbError::syntax(format!("bad map {}", brief(v))))?;
                let mut pairs = Vec::with_capacity(items.len());
                for it in items {
                    let kv = it.as_array().filter(|p| p.len() == 2).ok_or_else(|| {
                        OvsdbError::syntax(format!("map element must be [KEY, VALUE], got {}", brief(it)))
                    })?;
                    let k = Atom::from_json(t.key.atype, &kv[0], symbols)?;
                    let val = Atom::from_json(vt.atype, &kv[1], symbols)?;
                    t.key.check(&k)?;
                    vt.check(&val)?;
                    pairs.push((k, Some(val)));
                }
                Self::sort_unique(pairs, true)
            }
            (Some(_), _) => Err(OvsdbError::syntax(format!("expected [\"map\", [...]], got {}", brief(v)))),
            (None, Some(("set", body))) => {
                let items = body.as_array().ok_or_else(|| OvsdbError::syntax(format!("bad set {}", brief(v))))?;
                let mut pairs = Vec::with_capacity(items.len());
                for it in items {
                    let k = Atom::from_json(t.key.atype, it, symbols)?;
                    t.key.check(&k)?;
                    pairs.push((k, None));
                }
                Self::sort_unique(pairs, false)
            }
            (None, _) => {
                let k = Atom::from_json(t.key.atype, v, symbols)?;
                t.key.check(&k)?;
                Ok(Datum::scalar(k))
            }
        }
    }

    /// A set of atoms of `b`, as in an `enum` (no count limits).
    pub fn from_json_set(b: &BaseType, v: &Value) -> Result<Datum> {
        let t = Type { key: b.clone(), value: None, min: 0, max: crate::types::UNLIMITED };
        Self::from_json_unchecked(&t, v, None)
    }

    /// Checks the element count and every atom against `t`.
    pub fn check(&self, t: &Type) -> Result<()> {
        let n = self.len() as u64;
        if n < t.min || n > t.max {
            let max = if t.max == crate::types::UNLIMITED { "unlimited".to_string() } else { t.max.to_string() };
            return Err(OvsdbError::constraint(format!(
                "{} must have {} to {} members but {} are present",
                if t.is_map() { "map" } else { "set" },
                t.min,
                max,
                n
            )));
        }
        for k in &self.keys {
            t.key.check(k)?;
        }
        if let (Some(vt), Some(vals)) = (&t.value, &self.values) {
            for v in vals {
                vt.check(v)?;
            }
        }
        Ok(())
    }

    /// As OVS writes values: a bare atom for a one-element set, else
    /// `["set", [...]]` or `["map", [[k, v], ...]]`.
    pub fn to_json(&self) -> Value {
        match &self.values {
            Some(vals) => {
                json!([
                    "map",
                    self.keys.iter().zip(vals).map(|(k, v)| json!([k.to_json(), v.to_json()])).collect::<Vec<_>>()
                ])
            }
            None if self.keys.len() == 1 => self.keys[0].to_json(),
            None => json!(["set", self.keys.iter().map(Atom::to_json).collect::<Vec<_>>()]),
        }
    }

    pub fn contains_key(&self, k: &Atom) -> bool {
        self.keys.binary_search(k).is_ok()
    }

    /// The value for `k` in a map.
    pub fn get(&self, k: &Atom) -> Option<&Atom> {
        let i = self.keys.binary_search(k).ok()?;
        self.values.as_ref().map(|v| &v[i])
    }

    fn pairs(&self) -> Vec<(Atom, Option<Atom>)> {
        match &self.values {
            Some(v) => self.keys.iter().cloned().zip(v.iter().cloned().map(Some)).collect(),
            None => self.keys.iter().cloned().map(|k| (k, None)).collect(),
        }
    }

    fn from_sorted_pairs(pairs: Vec<(Atom, Option<Atom>)>, is_map: bool) -> Datum {
        let (keys, values): (Vec<Atom>, Vec<Option<Atom>>) = pairs.into_iter().unzip();
        Datum { keys, values: if is_map { Some(values.into_iter().map(Option::unwrap).collect()) } else { None } }
    }

    /// Adds the elements of `other`; for maps, keys already present keep their
    /// value (RFC 7047 "insert").
    pub fn union(&self, other: &Datum) -> Datum {
        let mut out = self.pairs();
        for p in other.pairs() {
            if !self.contains_key(&p.0) {
                out.push(p);
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Self::from_sorted_pairs(out, self.is_map())
    }

    /// Removes elements: for a set, those in `other`; for a map, the keys in
    /// `other` when it is a set, or the exact pairs when it is a map.
    pub fn difference(&self, other: &Datum) -> Datum {
        let is_map = self.is_map();
        let out: Vec<(Atom, Option<Atom>)> = self
            .pairs()
            .into_iter()
            .filter(|(k, v)| match (&other.values, v) {
                (Some(_), Some(v)) => other.get(k) != Some(v),
                _ => !other.contains_key(k),
            })
            .collect();
        Self::from_sorted_pairs(out, is_map)
    }

    /// Every element of `self` is in `other` (pairs, for maps).
    pub fn is_subset_of(&self, other: &Datum) -> bool {
        match &self.values {
            Some(vals) => self.keys.iter().zip(vals).all(|(k, v)| other.get(k) == Some(v)),
            None => self.keys.iter().all(|k| other.contains_key(k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(v: Value) -> Type {
        Type::from_json(&v).unwrap()
    }

    #[test]
    fn sets_and_maps() {
        let st = ty(json!({"key": "integer", "min": 0, "max": "unlimited"}));
        let d = Datum::from_json(&st, &json!(["set", [3, 1, 2]]), None).unwrap();
        assert_eq!(d.to_json(), json!(["set", [1, 2, 3]]));
        assert_eq!(Datum::from_json(&st, &json!(5), None).unwrap().to_json(), json!(5));
        assert_eq!(Datum::from_json(&st, &json!(["set", [5]]), None).unwrap().to_json(), json!(5));
        assert!(Datum::from_json(&st, &json!(["set", [1, 1]]), None).is_err());
        let mt = ty(json!({"key": "string", "value": "string", "min": 0, "max": "unlimited"}));
        let m = Datum::from_json(&mt, &json!(["map", [["b", "2"], ["a", "1"]]]), None).unwrap();
        assert_eq!(m.to_json(), json!(["map", [["a", "1"], ["b", "2"]]]));
        assert!(Datum::from_json(&mt, &json!(["set", []]), None).is_err());
        // Insert keeps existing keys; delete by key or by pair.
        let add = Datum::from_json(&mt, &json!(["map", [["a", "9"], ["c", "3"]]]), None).unwrap();
        assert_eq!(m.union(&add).to_json(), json!(["map", [["a", "1"], ["b", "2"], ["c", "3"]]]));
        let keys = Datum { keys: vec![Atom::string("a")], values: None };
        assert_eq!(m.difference(&keys).to_json(), json!(["map", [["b", "2"]]]));
        let pair = Datum::from_json(&mt, &json!(["map", [["b", "nope"]]]), None).unwrap();
        assert_eq!(m.difference(&pair), m);
    }

    #[test]
    fn counts_are_checked() {
        let t = ty(json!({"key": "string", "min": 1, "max": 2}));
        assert!(Datum::from_json(&t, &json!(["set", []]), None).is_err());
        assert!(Datum::from_json(&t, &json!(["set", ["a", "b", "c"]]), None).is_err());
        assert_eq!(Datum::default_for(&t).to_json(), json!(""));
        let opt = ty(json!({"key": "integer", "min": 0}));
        assert_eq!(Datum::default_for(&opt).to_json(), json!(["set", []]));
    }
}
