//! Writing atoms and datums straight to JSON text, byte for byte what
//! serializing their `to_json` values with serde_json gives, without building
//! those values first (the log record of a transaction adding 20,000 rows
//! would otherwise be a tree of some 100,000 small allocations).
use std::io::Write;

use crate::{
    atom::{Atom, real_to_json},
    datum::Datum,
};

/// Appends `s` as a JSON string (quoted and escaped as serde_json does).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail, nor can serializing a str.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends an atom as [`Atom::to_json`] would give it.
pub fn write_atom(out: &mut Vec<u8>, a: &Atom) {
    match a {
        Atom::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        Atom::Real(r) => {
            let _ = serde_json::to_writer(&mut *out, &real_to_json(*r));
        }
        Atom::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Atom::String(s) => write_str(out, s),
        Atom::Uuid(u) => {
            out.extend_from_slice(b"[\"uuid\",\"");
            let mut buf = uuid::Uuid::encode_buffer();
            out.extend_from_slice(u.hyphenated().encode_lower(&mut buf).as_bytes());
            out.extend_from_slice(b"\"]");
        }
    }
}

/// Appends a datum as [`Datum::to_json`] would give it.
pub fn write_datum(out: &mut Vec<u8>, d: &Datum) {
    match &d.values {
        Some(vals) => {
            out.extend_from_slice(b"[\"map\",[");
            for (i, (k, v)) in d.keys.iter().zip(vals).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'[');
                write_atom(out, k);
                out.push(b',');
                write_atom(out, v);
                out.push(b']');
            }
            out.extend_from_slice(b"]]");
        }
        None if d.keys.len() == 1 => write_atom(out, &d.keys[0]),
        None => {
            out.extend_from_slice(b"[\"set\",[");
            for (i, k) in d.keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_atom(out, k);
            }
            out.extend_from_slice(b"]]");
        }
    }
}

/// Appends a uuid as a JSON string (`"xxxxxxxx-xxxx-..."`).
pub fn write_uuid_str(out: &mut Vec<u8>, u: &uuid::Uuid) {
    let mut buf = uuid::Uuid::encode_buffer();
    out.push(b'"');
    out.extend_from_slice(u.hyphenated().encode_lower(&mut buf).as_bytes());
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn same(d: Datum) {
        let mut out = Vec::new();
        write_datum(&mut out, &d);
        assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&d.to_json()).unwrap());
    }

    #[test]
    fn datums_write_as_serde_json_serializes_them() {
        let u = uuid::Uuid::new_v4();
        for a in [
            Atom::Integer(-42),
            Atom::Integer(i64::MAX),
            Atom::Real(1.5),
            Atom::Real(3.0),
            Atom::Real(1e300),
            Atom::Real(-0.1),
            Atom::Boolean(true),
            Atom::Boolean(false),
            Atom::String(Arc::from("plain")),
            Atom::String(Arc::from("quote\" back\\ nl\n tab\t ctl\u{1} é ☃")),
            Atom::Uuid(u),
        ] {
            same(Datum::scalar(a));
        }
        same(Datum::empty_set());
        same(Datum { keys: vec![Atom::Integer(1), Atom::Integer(2)], values: None });
        same(Datum { keys: vec![], values: Some(vec![]) });
        same(Datum {
            keys: vec![Atom::string("a"), Atom::string("b")],
            values: Some(vec![Atom::Uuid(u), Atom::Real(0.25)]),
        });
        let mut out = Vec::new();
        write_uuid_str(&mut out, &u);
        assert_eq!(out, serde_json::to_vec(&u.to_string()).unwrap());
    }
}
