//! What a command sees while it runs: the replica read through the
//! transaction being built, the `@name` symbol table, the vsctl cache, the
//! command's words and options, and its output. Also the database-generic
//! helpers every command uses: table/column lookup by (abbreviated) name,
//! record lookup the way ovs-vsctl resolves record names, reads, writes and
//! `verify` calls where ovs-vsctl makes them.
use std::collections::BTreeMap;

use oxvs_ovsdb::{Atom, ColumnSchema, DatabaseSchema, Datum, TableSchema, Type, data_string, types::RefType};
use uuid::Uuid;

use super::{
    cache::Cache,
    idl::{Replica, Txn},
};
use crate::table::Table;

/// How a command ends other than normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// "ovs-vsctl: MESSAGE", exit 1.
    Error(String),
    /// The database is not (yet) as the command needs: wait for a change and
    /// run every command again (wait-until).
    TryAgain,
    /// Exit with this status right away (br-exists).
    Exit(u8),
}

impl From<String> for Flow {
    fn from(s: String) -> Flow {
        Flow::Error(s)
    }
}

pub type CmdResult = Result<(), Flow>;

/// Shorthand for returning an error.
pub fn fail<T>(msg: impl Into<String>) -> Result<T, Flow> {
    Err(Flow::Error(msg.into()))
}

/// An `@name` from `--id=@name` or a value.
#[derive(Debug, Clone)]
pub struct Symbol {
    pub uuid: Uuid,
    /// The table of the row inserted for it, if any.
    pub table: Option<String>,
    pub created: bool,
    pub strong_ref: bool,
    pub weak_ref: bool,
}

pub struct Context<'a> {
    /// ovs-vsctl resolves names against its compiled-in schema; ours is
    /// the embedded vswitch schema.
    pub schema: &'a DatabaseSchema,
    pub replica: &'a Replica,
    pub txn: Txn,
    /// The Open_vSwitch row (inserted by this transaction if there was none).
    pub ovs: Uuid,
    pub symbols: BTreeMap<String, Symbol>,
    pub cache: Option<Cache>,
    pub verified_ports: bool,
    /// Interfaces this transaction creates (add-br, add-port, add-bond,
    /// add-bond-iface): once ovs-vswitchd has reloaded, ovs-vsctl reports
    /// those it could not set up (OVS's post_db_reload_expect_iface).
    pub new_ifaces: Vec<Uuid>,
    // The command being run.
    pub argv: Vec<String>,
    pub options: BTreeMap<String, Option<String>>,
    pub last_command: bool,
    pub output: String,
    pub table: Option<Table>,
}

impl<'a> Context<'a> {
    pub fn new(schema: &'a DatabaseSchema, replica: &'a Replica, txn: Txn, ovs: Uuid) -> Self {
        Context {
            schema,
            replica,
            txn,
            ovs,
            symbols: BTreeMap::new(),
            cache: None,
            verified_ports: false,
            new_ifaces: Vec::new(),
            argv: Vec::new(),
            options: BTreeMap::new(),
            last_command: false,
            output: String::new(),
            table: None,
        }
    }

    pub fn has_option(&self, name: &str) -> bool {
        self.options.contains_key(name)
    }

    pub fn option_value(&self, name: &str) -> Option<String> {
        self.options.get(name).cloned().flatten()
    }

    pub fn arg(&self, i: usize) -> &str {
        &self.argv[i]
    }

    // ----- Reading and writing through the transaction -----

    pub fn column_schema(&self, table: &str, column: &str) -> &'a ColumnSchema {
        &self.schema.tables[table].columns[column]
    }

    /// The column's value as this transaction sees it (its type's default if
    /// the row has none).
    pub fn read(&self, table: &str, row: &Uuid, column: &str) -> Datum {
        self.txn
            .read(self.replica, table, row, column)
            .unwrap_or_else(|| Datum::default_for(&self.column_schema(table, column).type_))
    }

    pub fn read_string(&self, table: &str, row: &Uuid, column: &str) -> String {
        self.read(table, row, column).keys.first().and_then(|a| a.as_str().map(str::to_string)).unwrap_or_default()
    }

    pub fn read_uuids(&self, table: &str, row: &Uuid, column: &str) -> Vec<Uuid> {
        self.read(table, row, column).keys.iter().filter_map(Atom::as_uuid).collect()
    }

    pub fn read_optional_integer(&self, table: &str, row: &Uuid, column: &str) -> Option<i64> {
        self.read(table, row, column).keys.first().and_then(Atom::as_integer)
    }

    pub fn read_bool(&self, table: &str, row: &Uuid, column: &str) -> bool {
        matches!(self.read(table, row, column).keys.first(), Some(Atom::Boolean(true)))
    }

    /// A string-to-string map column.
    pub fn read_smap(&self, table: &str, row: &Uuid, column: &str) -> BTreeMap<String, String> {
        let d = self.read(table, row, column);
        let values = d.values.clone().unwrap_or_default();
        d.keys
            .iter()
            .zip(values.iter())
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
            .collect()
    }

    pub fn exists(&self, table: &str, row: &Uuid) -> bool {
        let Some(first) = self.schema.tables.get(table).and_then(|t| t.columns.keys().next()) else {
            return false;
        };
        self.txn.read(self.replica, table, row, first).is_some()
    }

    /// The rows of `table` as the transaction sees them, existing rows in
    /// the order ovs-vsctl's IDL iterates them (see `idl_row_order`), then
    /// rows inserted by this transaction.
    pub fn rows(&self, table: &str) -> Vec<Uuid> {
        let rows = self.txn.rows(self.replica, table);
        let (existing, inserted): (Vec<Uuid>, Vec<Uuid>) = rows.into_iter().partition(|u| !self.txn.is_inserted(u));
        let mut out = idl_row_order(&existing);
        out.extend(inserted);
        out
    }

    /// Like ovsdb_idl_txn_write: writing the value a row already has changes
    /// nothing.
    pub fn write(&mut self, table: &str, row: &Uuid, column: &str, value: Datum) {
        if !self.txn.is_inserted(row) && self.txn.read(self.replica, table, row, column).as_ref() == Some(&value) {
            return;
        }
        self.txn.write(table, row, column, value);
    }

    /// Like ovsdb_idl_txn_verify: at commit, the column must still have the
    /// value this transaction read (nothing to check for new rows).
    pub fn verify(&mut self, table: &str, row: &Uuid, column: &str) {
        if !self.txn.is_inserted(row) {
            self.txn.verify(self.replica, table, row, column);
        }
    }

    pub fn delete(&mut self, table: &str, row: &Uuid) {
        self.txn.delete(table, row);
    }

    pub fn insert(&mut self, table: &str) -> Uuid {
        self.txn.insert(table)
    }

    // ----- Symbols -----

    /// Resolves "@name" inside a value, creating the symbol (and, for a
    /// reference to a table, the row it will name) on first use, as OVS's
    /// ovsdb_symbol_table_insert does.
    pub fn resolve_symbol(&mut self, name: &str, ref_table: Option<&str>, ref_type: RefType) -> Uuid {
        if !self.symbols.contains_key(name) {
            let (uuid, table) = match ref_table {
                Some(t) if self.schema.tables.contains_key(t) => (self.txn.insert(t), Some(t.to_string())),
                _ => (Uuid::new_v4(), None),
            };
            self.symbols
                .insert(name.to_string(), Symbol { uuid, table, created: false, strong_ref: false, weak_ref: false });
        }
        let sym = self.symbols.get_mut(name).expect("just inserted");
        match ref_type {
            RefType::Weak => sym.weak_ref = true,
            RefType::Strong => sym.strong_ref = true,
        }
        sym.uuid
    }

    /// Parses a value of `ty` with "@name" symbols resolved.
    pub fn datum_from_string(&mut self, ty: &Type, s: &str) -> Result<Datum, String> {
        let key_ref = (ty.key.ref_table.clone(), ty.key.ref_type);
        let value_ref = ty.value.as_ref().map(|v| (v.ref_table.clone(), v.ref_type));
        // OVS marks symbols by the reference type of where they appear; the
        // value side wins for maps whose values are references.
        let (rt, rtype) = match value_ref {
            Some((Some(t), rtype)) => (Some(t), rtype),
            _ => key_ref,
        };
        let mut resolver = |name: &str| -> Result<Uuid, String> { Ok(self.resolve_symbol(name, rt.as_deref(), rtype)) };
        data_string::datum_from_string(ty, s, Some(&mut resolver))
    }

    pub fn atom_from_string(&mut self, base: &oxvs_ovsdb::BaseType, s: &str) -> Result<Atom, String> {
        let (rt, rtype) = (base.ref_table.clone(), base.ref_type);
        let mut resolver = |name: &str| -> Result<Uuid, String> { Ok(self.resolve_symbol(name, rt.as_deref(), rtype)) };
        data_string::atom_from_string(base, s, Some(&mut resolver))
    }

    /// ovs-vsctl's create_symbol for `--id=@name`.
    pub fn create_symbol(&mut self, id: &str) -> Result<(&mut Symbol, bool), String> {
        if !id.starts_with('@') {
            return Err(format!("row id \"{id}\" does not begin with \"@\""));
        }
        let new = !self.symbols.contains_key(id);
        if new {
            self.symbols.insert(
                id.to_string(),
                Symbol { uuid: Uuid::new_v4(), table: None, created: false, strong_ref: false, weak_ref: false },
            );
        }
        let sym = self.symbols.get_mut(id).expect("present");
        if sym.created {
            return Err(format!("row id \"{id}\" may only be specified on one --id option"));
        }
        sym.created = true;
        Ok((sym, new))
    }

    // ----- The vsctl cache -----

    pub fn invalidate_cache(&mut self) {
        self.cache = None;
    }
}

/// `list` and `find` visit rows in the order ovs-vsctl's IDL iterates them.
pub use crate::ovs_hmap::idl_row_order;

/// The score of user input `s` against the name `name` (OVS's
/// score_partial_match: exact match best, then a case-insensitive match with
/// '-' for '_', then the length of a matching prefix).
fn score_partial_match(name: &str, s: &str) -> u32 {
    if name == s {
        return u32::MAX;
    }
    let norm = |c: u8| if c == b'-' { b'_' } else { c.to_ascii_lowercase() };
    let (n, sb) = (name.as_bytes(), s.as_bytes());
    let mut score = 0u32;
    loop {
        let a = n.get(score as usize).copied();
        let b = sb.get(score as usize).copied();
        match (a, b) {
            (None, None) => return u32::MAX - 1,
            (Some(x), Some(y)) if norm(x) == norm(y) => score += 1,
            (_, None) => return score,
            _ => return 0,
        }
    }
}

/// Picks the best-scoring names; Ok(name) if exactly one.
fn best_match<'n>(names: impl Iterator<Item = &'n str>, s: &str) -> (Vec<&'n str>, u32) {
    let mut best = Vec::new();
    let mut best_score = 0;
    for name in names {
        let score = score_partial_match(name, s);
        if score > 0 && score >= best_score {
            if score > best_score {
                best.clear();
            }
            best.push(name);
            best_score = score;
        }
    }
    best.sort();
    best.dedup();
    (best, best_score)
}

/// ovs-vsctl's get_table.
pub fn get_table<'s>(schema: &'s DatabaseSchema, name: &str) -> Result<&'s TableSchema, String> {
    let (best, _) = best_match(schema.tables.keys().map(String::as_str), name);
    match best.len() {
        0 => Err(format!("unknown table \"{name}\"")),
        1 => Ok(&schema.tables[best[0]]),
        _ => Err(format!("\"{name}\" matches multiple table names: {}", best.join(", "))),
    }
}

/// ovs-vsctl's get_column.
pub fn get_column<'s>(table: &'s TableSchema, name: &str) -> Result<&'s ColumnSchema, String> {
    let (best, _) = best_match(table.columns.keys().map(String::as_str), name);
    match best.len() {
        0 => Err(format!("{} does not contain a column whose name matches \"{name}\"", table.name)),
        1 => Ok(&table.columns[best[0]]),
        _ => Err(format!(
            "{} contains more than one column whose name matches \"{name}\": {}",
            table.name,
            best.join(", ")
        )),
    }
}

/// How ovs-vsctl finds a record by name in a table (its row_ids): look in
/// `name_table`'s `name_column` for the name and, if `uuid_column` is set,
/// follow that reference column of the matching row.
struct RowId {
    table: &'static str,
    name_table: &'static str,
    name_column: &'static str,
    uuid_column: Option<&'static str>,
}

const ROW_IDS: &[RowId] = &[
    RowId { table: "Bridge", name_table: "Bridge", name_column: "name", uuid_column: None },
    RowId { table: "Controller", name_table: "Bridge", name_column: "name", uuid_column: Some("controller") },
    RowId { table: "Interface", name_table: "Interface", name_column: "name", uuid_column: None },
    RowId { table: "Mirror", name_table: "Mirror", name_column: "name", uuid_column: None },
    RowId { table: "Manager", name_table: "Manager", name_column: "target", uuid_column: None },
    RowId { table: "NetFlow", name_table: "Bridge", name_column: "name", uuid_column: Some("netflow") },
    RowId { table: "Port", name_table: "Port", name_column: "name", uuid_column: None },
    RowId { table: "QoS", name_table: "Port", name_column: "name", uuid_column: Some("qos") },
    RowId { table: "sFlow", name_table: "Bridge", name_column: "name", uuid_column: Some("sflow") },
    RowId { table: "Flow_Table", name_table: "Flow_Table", name_column: "name", uuid_column: None },
    RowId { table: "IPFIX", name_table: "Bridge", name_column: "name", uuid_column: Some("ipfix") },
    RowId { table: "AutoAttach", name_table: "Bridge", name_column: "name", uuid_column: Some("auto_attach") },
    RowId {
        table: "Flow_Sample_Collector_Set",
        name_table: "Flow_Sample_Collector_Set",
        name_column: "id",
        uuid_column: None,
    },
];

/// Length of `s` if all of it could begin a UUID's text form, else 0 (OVS's
/// uuid_is_partial_string).
fn uuid_partial_len(s: &str) -> usize {
    const PATTERN: &[u8] = b"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
    if s.len() > PATTERN.len() {
        return 0;
    }
    for (c, p) in s.bytes().zip(PATTERN) {
        let ok = if *p == b'x' { c.is_ascii_hexdigit() } else { c == b'-' };
        if !ok {
            return 0;
        }
    }
    s.len()
}

impl Context<'_> {
    fn record_id_equals(name: &Atom, record_id: &str) -> bool {
        match name {
            Atom::String(s) => {
                &**s == record_id || (record_id.len() >= 4 && Uuid::parse_str(s).is_ok() && s.starts_with(record_id))
            }
            Atom::Integer(i) => {
                // strtoll of the id (digits only were checked by the caller).
                record_id.parse::<i64>().map(|r| r == *i).unwrap_or(false)
            }
            _ => false,
        }
    }

    fn get_row_by_id(&mut self, table: &str, id: &RowId, record_id: &str) -> Result<Option<Uuid>, String> {
        let name_type = self.column_schema(id.name_table, id.name_column).type_.key.atype;
        if name_type == oxvs_ovsdb::AtomicType::Integer
            && (record_id.is_empty() || !record_id.bytes().all(|b| b.is_ascii_digit()))
        {
            return Ok(None);
        }
        let mut referrer = None;
        for row in self.rows(id.name_table) {
            let d = self.read(id.name_table, &row, id.name_column);
            if d.keys.len() != 1 {
                continue;
            }
            if Self::record_id_equals(&d.keys[0], record_id) {
                if referrer.is_some() {
                    return Err(format!("multiple rows in {} match \"{record_id}\"", id.name_table));
                }
                referrer = Some(row);
            }
        }
        let Some(referrer) = referrer else { return Ok(None) };
        match id.uuid_column {
            None => Ok(Some(referrer)),
            Some(col) => {
                self.verify(id.name_table, &referrer, col);
                let uuids = self.read_uuids(id.name_table, &referrer, col);
                Ok(if uuids.len() == 1 && self.exists(table, &uuids[0]) { Some(uuids[0]) } else { None })
            }
        }
    }

    /// ovs-vsctl's ctl_get_row: a UUID, ".", a name per ROW_IDS, or a UUID
    /// prefix of at least 4 characters.
    pub fn get_row(&mut self, table: &str, record_id: &str, must_exist: bool) -> Result<Option<Uuid>, String> {
        let mut row = None;
        if let Ok(u) = Uuid::try_parse(record_id)
            && record_id.len() == 36
            && self.exists(table, &u)
        {
            row = Some(u);
        }
        if row.is_none() && record_id == "." {
            let rows = self.rows(table);
            if rows.len() == 1 {
                row = Some(rows[0]);
            }
        }
        if row.is_none() {
            for id in ROW_IDS.iter().filter(|id| id.table == table) {
                row = self.get_row_by_id(table, id, record_id)?;
                if row.is_some() {
                    break;
                }
            }
        }
        if row.is_none() && uuid_partial_len(record_id) >= 4 {
            let mut found: Option<Uuid> = None;
            for r in self.rows(table) {
                if r.to_string().starts_with(record_id) {
                    if let Some(first) = found {
                        return Err(format!(
                            "{table} contains 2 or more rows whose UUIDs begin with {record_id}: at least {first} and {r}"
                        ));
                    }
                    found = Some(r);
                }
            }
            row = found;
        }
        if must_exist && row.is_none() {
            return Err(format!("no row \"{record_id}\" in table {table}"));
        }
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> DatabaseSchema {
        super::super::vswitch_schema()
    }

    #[test]
    fn table_names_match_like_ovs() {
        let s = schema();
        assert_eq!(get_table(&s, "bridge").unwrap().name, "Bridge");
        assert_eq!(get_table(&s, "br").unwrap().name, "Bridge");
        assert_eq!(get_table(&s, "open").unwrap().name, "Open_vSwitch");
        assert_eq!(get_table(&s, "open-vswitch").unwrap().name, "Open_vSwitch");
        assert_eq!(get_table(&s, "Foo").unwrap_err(), "unknown table \"Foo\"");
        assert_eq!(
            get_table(&s, "f").unwrap_err(),
            "\"f\" matches multiple table names: Flow_Sample_Collector_Set, Flow_Table"
        );
        // "qos" is exactly QoS (case-insensitively), which beats Queue's prefix.
        assert_eq!(get_table(&s, "qos").unwrap().name, "QoS");
    }

    #[test]
    fn column_names_match_like_ovs() {
        let s = schema();
        let br = get_table(&s, "Bridge").unwrap();
        assert_eq!(get_column(br, "name").unwrap().name, "name");
        assert_eq!(get_column(br, "fail").unwrap().name, "fail_mode");
        assert_eq!(get_column(br, "other-config").unwrap().name, "other_config");
        assert_eq!(get_column(br, "foo").unwrap_err(), "Bridge does not contain a column whose name matches \"foo\"");
        assert_eq!(get_column(br, "e").unwrap().name, "external_ids");
        assert_eq!(
            get_column(br, "s").unwrap_err(),
            "Bridge contains more than one column whose name matches \"s\": sflow, status, stp_enable"
        );
    }

    #[test]
    fn uuid_prefixes() {
        assert_eq!(uuid_partial_len("1234"), 4);
        assert_eq!(uuid_partial_len("12345678-12"), 11);
        assert_eq!(uuid_partial_len("123g"), 0);
        assert_eq!(uuid_partial_len("br0"), 0);
    }
}
