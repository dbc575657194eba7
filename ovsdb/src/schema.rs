//! Database schemas (RFC 7047 §3.2), read and written as OVS does.
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::{
    atom::AtomicType,
    error::{OvsdbError, Result, brief},
    types::Type,
};

#[derive(Clone, Debug, PartialEq)]
pub struct ColumnSchema {
    pub name: String,
    pub type_: Type,
    pub ephemeral: bool,
    pub mutable: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TableSchema {
    pub name: String,
    /// User columns; `_uuid` and `_version` are implicit.
    pub columns: BTreeMap<String, ColumnSchema>,
    pub max_rows: Option<u64>,
    pub is_root: bool,
    /// Sets of columns whose values must be unique across rows.
    pub indexes: Vec<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseSchema {
    pub name: String,
    pub version: String,
    pub cksum: Option<String>,
    pub tables: BTreeMap<String, TableSchema>,
}

fn valid_id(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// `x.y.z` with decimal numbers.
fn valid_version(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

pub fn implicit_column(name: &str) -> Option<ColumnSchema> {
    match name {
        "_uuid" | "_version" => Some(ColumnSchema {
            name: name.into(),
            type_: Type::scalar(AtomicType::Uuid),
            ephemeral: false,
            mutable: false,
        }),
        _ => None,
    }
}

impl TableSchema {
    /// A user column or an implicit one.
    pub fn column(&self, name: &str) -> Option<ColumnSchema> {
        self.columns.get(name).cloned().or_else(|| implicit_column(name))
    }

    fn from_json(name: &str, v: &Value) -> Result<(TableSchema, Option<bool>)> {
        let o = v.as_object().ok_or_else(|| OvsdbError::syntax(format!("table {name}: expected an object")))?;
        let cols = o
            .get("columns")
            .and_then(Value::as_object)
            .ok_or_else(|| OvsdbError::syntax(format!("table {name}: \"columns\" is required")))?;
        if cols.is_empty() {
            return Err(OvsdbError::syntax(format!("table {name}: at least one column is required")));
        }
        let mut columns = BTreeMap::new();
        for (cname, cv) in cols {
            if !valid_id(cname) || cname.starts_with('_') {
                return Err(OvsdbError::syntax(format!("{name}.{cname}: invalid column name")));
            }
            let co = cv.as_object().ok_or_else(|| OvsdbError::syntax(format!("{name}.{cname}: expected an object")))?;
            let t =
                co.get("type").ok_or_else(|| OvsdbError::syntax(format!("{name}.{cname}: \"type\" is required")))?;
            let type_ = Type::from_json(t).map_err(|e| OvsdbError::syntax(format!("{name}.{cname}: {}", e.details)))?;
            let flag = |k: &str, default: bool| -> Result<bool> {
                match co.get(k) {
                    None => Ok(default),
                    Some(Value::Bool(b)) => Ok(*b),
                    Some(x) => {
                        Err(OvsdbError::syntax(format!("{name}.{cname}: {k} must be a boolean, not {}", brief(x))))
                    }
                }
            };
            for k in co.keys() {
                if !["type", "ephemeral", "mutable"].contains(&k.as_str()) {
                    return Err(OvsdbError::syntax(format!("{name}.{cname}: unknown member \"{k}\"")));
                }
            }
            columns.insert(
                cname.clone(),
                ColumnSchema {
                    name: cname.clone(),
                    type_,
                    ephemeral: flag("ephemeral", false)?,
                    mutable: flag("mutable", true)?,
                },
            );
        }
        let max_rows = match o.get("maxRows") {
            None => None,
            Some(m) => Some(
                m.as_u64()
                    .filter(|m| *m >= 1)
                    .ok_or_else(|| OvsdbError::syntax(format!("table {name}: maxRows must be at least 1")))?,
            ),
        };
        let is_root = match o.get("isRoot") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(OvsdbError::syntax(format!("table {name}: isRoot must be a boolean"))),
        };
        let mut indexes = Vec::new();
        if let Some(ix) = o.get("indexes") {
            let arr =
                ix.as_array().ok_or_else(|| OvsdbError::syntax(format!("table {name}: indexes must be an array")))?;
            for i in arr {
                let cols = i.as_array().filter(|c| !c.is_empty()).ok_or_else(|| {
                    OvsdbError::syntax(format!("table {name}: an index is a non-empty array of column names"))
                })?;
                let mut names = Vec::new();
                for c in cols {
                    let c = c
                        .as_str()
                        .ok_or_else(|| OvsdbError::syntax(format!("table {name}: index column names are strings")))?;
                    let col = columns
                        .get(c)
                        .ok_or_else(|| OvsdbError::syntax(format!("table {name} has no column {c} (in index)")))?;
                    if col.ephemeral {
                        return Err(OvsdbError::syntax(format!(
                            "table {name}: ephemeral column {c} cannot be indexed"
                        )));
                    }
                    names.push(c.to_string());
                }
                indexes.push(names);
            }
        }
        for k in o.keys() {
            if !["columns", "maxRows", "isRoot", "indexes"].contains(&k.as_str()) {
                return Err(OvsdbError::syntax(format!("table {name}: unknown member \"{k}\"")));
            }
        }
        Ok((TableSchema { name: name.into(), columns, max_rows, is_root: is_root.unwrap_or(false), indexes }, is_root))
    }

    fn to_json(&self, all_root: bool) -> Value {
        let mut o = Map::new();
        let cols: Map<String, Value> = self
            .columns
            .values()
            .map(|c| {
                let mut co = Map::new();
                co.insert("type".into(), c.type_.to_json());
                if c.ephemeral {
                    co.insert("ephemeral".into(), json!(true));
                }
                if !c.mutable {
                    co.insert("mutable".into(), json!(false));
                }
                (c.name.clone(), Value::Object(co))
            })
            .collect();
        o.insert("columns".into(), Value::Object(cols));
        if let Some(m) = self.max_rows {
            o.insert("maxRows".into(), json!(m));
        }
        if self.is_root && !all_root {
            o.insert("isRoot".into(), json!(true));
        }
        if !self.indexes.is_empty() {
            o.insert("indexes".into(), json!(self.indexes));
        }
        Value::Object(o)
    }
}

impl DatabaseSchema {
    pub fn from_json(v: &Value) -> Result<DatabaseSchema> {
        let o = v.as_object().ok_or_else(|| OvsdbError::syntax("schema must be a JSON object"))?;
        let name =
            o.get("name").and_then(Value::as_str).ok_or_else(|| OvsdbError::syntax("schema \"name\" is required"))?;
        if !valid_id(name) {
            return Err(OvsdbError::syntax(format!("{name}: invalid database name")));
        }
        let version = match o.get("version") {
            Some(Value::String(s)) if valid_version(s) => s.clone(),
            Some(x) => return Err(OvsdbError::syntax(format!("schema version {} is not x.y.z", brief(x)))),
            // RFC 7047 makes it required; OVS accepts old schemas without it.
            None => "0.0.0".into(),
        };
        let cksum = match o.get("cksum") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(OvsdbError::syntax("cksum must be a string")),
        };
        let tables_json = o
            .get("tables")
            .and_then(Value::as_object)
            .ok_or_else(|| OvsdbError::syntax("schema \"tables\" is required"))?;
        for k in o.keys() {
            if !["name", "version", "cksum", "tables", "doc"].contains(&k.as_str()) {
                return Err(OvsdbError::syntax(format!("unknown schema member \"{k}\"")));
            }
        }
        let mut tables = BTreeMap::new();
        let mut any_root_given = false;
        for (tname, tv) in tables_json {
            if !valid_id(tname) || tname.starts_with('_') {
                return Err(OvsdbError::syntax(format!("{tname}: invalid table name")));
            }
            let (t, root) = TableSchema::from_json(tname, tv)?;
            any_root_given |= root.is_some();
            tables.insert(tname.clone(), t);
        }
        // Schemas that predate isRoot: every table is a root (as OVS).
        if !any_root_given {
            for t in tables.values_mut() {
                t.is_root = true;
            }
        }
        let schema = DatabaseSchema { name: name.into(), version, cksum, tables };
        for t in schema.tables.values() {
            for c in t.columns.values() {
                for b in std::iter::once(&c.type_.key).chain(c.type_.value.as_ref()) {
                    if let Some(rt) = &b.ref_table
                        && !schema.tables.contains_key(rt)
                    {
                        return Err(OvsdbError::syntax(format!(
                            "{}.{}: refTable {rt} is not a table in the schema",
                            t.name, c.name
                        )));
                    }
                }
            }
        }
        Ok(schema)
    }

    /// True when every table is a root (then `isRoot` is not written).
    fn all_root(&self) -> bool {
        self.tables.values().all(|t| t.is_root)
    }

    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("name".into(), json!(self.name));
        o.insert("version".into(), json!(self.version));
        if let Some(c) = &self.cksum {
            o.insert("cksum".into(), json!(c));
        }
        let all_root = self.all_root();
        let tables: Map<String, Value> = self.tables.values().map(|t| (t.name.clone(), t.to_json(all_root))).collect();
        o.insert("tables".into(), Value::Object(tables));
        Value::Object(o)
    }

    pub fn table(&self, name: &str) -> Result<&TableSchema> {
        self.tables.get(name).ok_or_else(|| OvsdbError::syntax(format!("no table named {name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_vswitch_schema_round_trips() {
        // Debian's openvswitch-common ships it; the tests need it (cargo xtask setup).
        let path = "/usr/share/openvswitch/vswitch.ovsschema";
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e} (run cargo xtask setup)"));
        let v: Value = serde_json::from_str(&text).unwrap();
        let s = DatabaseSchema::from_json(&v).unwrap();
        assert_eq!(s.name, "Open_vSwitch");
        assert!(s.tables["Open_vSwitch"].is_root && !s.tables["Port"].is_root);
        assert_eq!(s.tables["Bridge"].indexes, vec![vec!["name".to_string()]]);
        // What we write reads back the same.
        let back = s.to_json();
        assert_eq!(DatabaseSchema::from_json(&back).unwrap(), s);
    }

    #[test]
    fn bad_schemas() {
        for (v, needle) in [
            (json!({"name": "x", "version": "1.0.0", "tables": {"T": {"columns": {"c": {"type": "nope"}}}}}), "nope"),
            (json!({"name": "x", "version": "1.0", "tables": {}}), "x.y.z"),
            (
                json!({"name": "x", "version": "1.0.0", "tables": {"T": {"columns": {"c": {"type": {"key": {"type": "uuid", "refTable": "U"}}}}}}}),
                "refTable U",
            ),
            (
                json!({"name": "x", "version": "1.0.0", "tables": {"T": {"columns": {"_c": {"type": "string"}}}}}),
                "invalid column",
            ),
            (
                json!({"name": "x", "version": "1.0.0", "tables": {"T": {"columns": {"c": {"type": "string"}}, "indexes": [["d"]]}}}),
                "no column d",
            ),
        ] {
            let e = DatabaseSchema::from_json(&v).unwrap_err();
            assert!(e.details.contains(needle), "{e}");
        }
    }
}
