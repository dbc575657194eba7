//! The result of one "transact" operation, kept in a form cheaper than JSON
//! for the common case: an insert's `{"uuid": ["uuid", U]}` is held as the
//! bare uuid and written straight to text. A transaction adding 20,000 rows
//! would otherwise build (and free) as many one-member JSON objects, some
//! 16 MB of small allocations, only to serialize them once.
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::{atom::Atom, json_text};

/// One element of the RFC 7047 "transact" result array.
#[derive(Debug, Clone, PartialEq)]
pub enum OpResult {
    /// An insert's result: `{"uuid": ["uuid", U]}`.
    Insert(Uuid),
    /// Any other result (or error object, or the `null` after an error).
    Json(Value),
}

impl OpResult {
    /// The result as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            OpResult::Insert(u) => {
                let mut m = Map::new();
                m.insert("uuid".into(), Atom::Uuid(*u).to_json());
                Value::Object(m)
            }
            OpResult::Json(v) => v.clone(),
        }
    }

    /// Appends the result as compact JSON text, byte for byte what
    /// serializing [`to_json`](Self::to_json) with serde_json gives.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            OpResult::Insert(u) => {
                out.extend_from_slice(b"{\"uuid\":");
                json_text::write_atom(out, &Atom::Uuid(*u));
                out.push(b'}');
            }
            OpResult::Json(v) => {
                serde_json::to_writer(&mut *out, v).expect("serializing a serde_json::Value into a Vec cannot fail")
            }
        }
    }
}

impl From<Value> for OpResult {
    fn from(v: Value) -> Self {
        OpResult::Json(v)
    }
}

/// Compares with the JSON the result stands for.
impl PartialEq<Value> for OpResult {
    fn eq(&self, other: &Value) -> bool {
        match self {
            OpResult::Json(v) => v == other,
            OpResult::Insert(_) => self.to_json() == *other,
        }
    }
}

/// The whole result array as JSON.
pub fn results_to_json(results: &[OpResult]) -> Value {
    Value::Array(results.iter().map(OpResult::to_json).collect())
}

/// Appends the whole result array as compact JSON text.
pub fn write_results(out: &mut Vec<u8>, results: &[OpResult]) {
    out.push(b'[');
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        r.write_json(out);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_is_what_serde_json_writes_for_the_json_form() {
        let u = Uuid::parse_str("0c8a4b8e-8f4e-4e0a-9d6b-3f3c2b1a0d9e").unwrap();
        let results = vec![
            OpResult::Insert(u),
            OpResult::Json(json!({"count": 2})),
            OpResult::Json(json!({"error": "constraint violation", "details": "a \"quoted\" word"})),
            OpResult::Json(Value::Null),
        ];
        let mut text = Vec::new();
        write_results(&mut text, &results);
        let expect = serde_json::to_vec(&results_to_json(&results)).unwrap();
        assert_eq!(String::from_utf8(text).unwrap(), String::from_utf8(expect).unwrap());
        assert_eq!(results[0].to_json(), json!({"uuid": ["uuid", "0c8a4b8e-8f4e-4e0a-9d6b-3f3c2b1a0d9e"]}));
    }

    #[test]
    fn compares_with_json() {
        let u = Uuid::new_v4();
        assert_eq!(OpResult::Insert(u), json!({"uuid": ["uuid", u.to_string()]}));
        assert_ne!(OpResult::Insert(u), json!({"uuid": ["uuid", Uuid::nil().to_string()]}));
        assert_ne!(OpResult::Insert(u), json!({}));
        assert_eq!(OpResult::from(json!({})), json!({}));
    }
}
