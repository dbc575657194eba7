//! The database commands shared by the OVS *ctl tools (lib/db-ctl-base.c):
//! get, list, find, set, add, remove, clear, create, destroy, wait-until.
use std::cmp::Ordering;

use oxvs_ovsdb::{
    Atom, ColumnSchema, Datum, TableSchema, Type,
    atom::AtomicType,
    data_string::{atom_to_string, datum_to_string, token_parse},
};
use uuid::Uuid;

use super::context::{CmdResult, Context, Flow, fail, get_column, get_table};
use crate::table::{Cell, Table};

/// The pieces of "column[:key][OP value]".
struct ColumnKeyValue<'s> {
    column: &'s ColumnSchema,
    key: Option<String>,
    /// Index into the allowed operators and the value after it.
    op_value: Option<(usize, String)>,
}

fn missing_operator_error(arg: &str, ops: &[&str]) -> String {
    let mut s = format!("{arg}: argument does not end in \"{}\"", ops[0]);
    if ops.len() == 2 {
        s += &format!(" or \"{}\"", ops[1]);
    } else if ops.len() > 2 {
        for op in &ops[1..ops.len() - 1] {
            s += &format!(", \"{op}\"");
        }
        s += &format!(", or \"{}\"", ops[ops.len() - 1]);
    }
    s + " followed by a value."
}

/// parse_column_key_value: `ops` None = no value wanted; Some(&[]) = "=".
fn parse_column_key_value<'s>(
    arg: &str,
    table: &'s TableSchema,
    ops: Option<&[&str]>,
) -> Result<ColumnKeyValue<'s>, String> {
    let (name, mut p) = token_parse(arg, 0)?;
    if name.is_empty() {
        return Err(format!("{arg}: missing column name"));
    }
    let column = get_column(table, &name)?;
    let mut key = None;
    if arg[p..].starts_with(':') {
        let (k, next) = token_parse(arg, p + 1)?;
        key = Some(k);
        p = next;
    }
    let rest = &arg[p..];
    let op_value = match ops {
        Some(ops) => {
            let ops: &[&str] = if ops.is_empty() { &["="] } else { ops };
            let mut best: Option<usize> = None;
            for (i, op) in ops.iter().enumerate() {
                if rest.starts_with(op) && rest.len() > op.len() && best.is_none_or(|b| op.len() > ops[b].len()) {
                    best = Some(i);
                }
            }
            let Some(b) = best else { return Err(missing_operator_error(arg, ops)) };
            Some((b, rest[ops[b].len()..].to_string()))
        }
        None => {
            if !rest.is_empty() {
                return Err(format!("{arg}: trailing garbage \"{rest}\" in argument"));
            }
            None
        }
    };
    Ok(ColumnKeyValue { column, key, op_value })
}

/// pre_parse_column_key_value: only the column name is checked up front.
fn pre_parse_column(arg: &str, table: &TableSchema) -> Result<(), String> {
    let (name, _) = token_parse(arg, 0)?;
    if name.is_empty() {
        return Err(format!("{arg}: missing column name"));
    }
    get_column(table, &name).map(|_| ())
}

/// The columns of `--columns=a,b` (None: _uuid then every column).
fn parse_column_names<'s>(
    names: Option<&str>,
    table: &'s TableSchema,
) -> Result<Vec<Option<&'s ColumnSchema>>, String> {
    match names {
        None => Ok(std::iter::once(None).chain(table.columns.values().map(Some)).collect()),
        Some(names) => {
            let mut cols = Vec::new();
            for name in names.split([',', ' ']).filter(|s| !s.is_empty()) {
                if name.eq_ignore_ascii_case("_uuid") {
                    cols.push(None);
                } else {
                    cols.push(Some(get_column(table, name)?));
                }
            }
            if cols.is_empty() {
                return Err("must specify at least one column name".into());
            }
            Ok(cols)
        }
    }
}

/// Checks made before connecting to the database (ovs-vsctl's "pre"
/// functions), so that a bad table or column name is reported first.
pub fn precheck(name: &str, argv: &[String], columns: Option<&str>) -> Result<(), String> {
    let schema = super::vswitch_schema_ref();
    match name {
        "get" | "set" | "wait-until" => {
            let table = get_table(schema, &argv[1])?;
            for a in &argv[3.min(argv.len())..] {
                if name == "get" && (a.eq_ignore_ascii_case("_uuid") || a.eq_ignore_ascii_case("-uuid")) {
                    continue;
                }
                pre_parse_column(a, table)?;
            }
        }
        "list" => {
            let table = get_table(schema, &argv[1])?;
            parse_column_names(columns, table)?;
        }
        "find" => {
            let table = get_table(schema, &argv[1])?;
            parse_column_names(columns, table)?;
            for a in &argv[2..] {
                pre_parse_column(a, table)?;
            }
        }
        "add" | "remove" => {
            let table = get_table(schema, &argv[1])?;
            get_column(table, &argv[3])?;
        }
        "clear" => {
            let table = get_table(schema, &argv[1])?;
            for a in &argv[3..] {
                get_column(table, a)?;
            }
        }
        "create" | "destroy" => {
            get_table(schema, &argv[1])?;
        }
        _ => {}
    }
    Ok(())
}

fn check_mutable(ctx: &Context, table: &TableSchema, row: &Uuid, column: &ColumnSchema) -> Result<(), String> {
    if !column.mutable && !ctx.txn.is_inserted(row) {
        return Err(format!("cannot modify read-only column {} in table {}", column.name, table.name));
    }
    Ok(())
}

// ----- Comparisons used by find and wait-until -----

fn compare_atoms(a: &[Atom], b: &[Atom]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.cmp(y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    Ordering::Equal
}

/// ovsdb_datum_compare_3way: fewer elements first, then element by element.
fn compare_3way(a: &Datum, b: &Datum) -> Ordering {
    if a.keys.len() != b.keys.len() {
        return a.keys.len().cmp(&b.keys.len());
    }
    compare_atoms(&a.keys, &b.keys).then_with(|| match (&a.values, &b.values) {
        (Some(x), Some(y)) => compare_atoms(x, y),
        _ => Ordering::Equal,
    })
}

fn contains_element(d: &Datum, key: &Atom, value: Option<&Atom>) -> bool {
    match d.keys.binary_search(key) {
        Ok(i) => match (value, &d.values) {
            (Some(v), Some(vals)) => &vals[i] == v,
            _ => true,
        },
        Err(_) => false,
    }
}

/// Every element of `a` is in `b`.
fn includes_all(a: &Datum, b: &Datum) -> bool {
    a.keys.iter().enumerate().all(|(i, k)| contains_element(b, k, a.values.as_ref().map(|v| &v[i])))
}

/// No element of `a` is in `b`.
fn excludes_all(a: &Datum, b: &Datum) -> bool {
    a.keys.iter().enumerate().all(|(i, k)| !contains_element(b, k, a.values.as_ref().map(|v| &v[i])))
}

const RELOPS: &[&str] =
    &["=", "!=", "<", ">", "<=", ">=", "{=}", "{!=}", "{<}", "{>}", "{<=}", "{>=}", "{in}", "{not-in}"];

fn evaluate_relop(a: &Datum, b: &Datum, op: &str) -> bool {
    match op {
        "=" | "{=}" => compare_3way(a, b) == Ordering::Equal,
        "!=" | "{!=}" => compare_3way(a, b) != Ordering::Equal,
        "<" => compare_3way(a, b) == Ordering::Less,
        ">" => compare_3way(a, b) == Ordering::Greater,
        "<=" => compare_3way(a, b) != Ordering::Greater,
        ">=" => compare_3way(a, b) != Ordering::Less,
        "{<}" => b.len() > a.len() && includes_all(a, b),
        "{>}" => a.len() > b.len() && includes_all(b, a),
        "{<=}" | "{in}" => includes_all(a, b),
        "{>=}" => includes_all(b, a),
        "{not-in}" => excludes_all(a, b),
        _ => false,
    }
}

fn is_set_operator(op: &str) -> bool {
    op.starts_with('{')
}

/// check_condition: does `row` satisfy "column[:key]OP value"?
fn check_condition(ctx: &mut Context, table: &TableSchema, row: &Uuid, arg: &str) -> Result<bool, String> {
    let ckv = parse_column_key_value(arg, table, Some(RELOPS))?;
    let Some((op_index, value)) = ckv.op_value else { return Err(format!("{arg}: missing value")) };
    let op = RELOPS[op_index];
    let column = ckv.column;
    let mut ty = column.type_.clone();
    ty.max = u64::MAX;
    let have = ctx.read(&table.name, row, &column.name);
    match ckv.key {
        Some(key_string) => {
            let Some(value_type) = column.type_.value.clone() else {
                return Err(format!("cannot specify key to check for non-map column {}", column.name));
            };
            let want_key = ctx.atom_from_string(&column.type_.key, &key_string)?;
            let vt = Type { key: value_type, value: None, min: ty.min, max: u64::MAX };
            let b = ctx.datum_from_string(&vt, &value)?;
            let found = have.keys.binary_search(&want_key).ok();
            if found.is_none() && !is_set_operator(op) {
                return Ok(false);
            }
            let a = match found {
                Some(i) => Datum::scalar(have.values.as_ref().expect("map")[i].clone()),
                None => Datum::empty_set(),
            };
            Ok(evaluate_relop(&a, &b, op))
        }
        None => {
            let want = ctx.datum_from_string(&column.type_, &value)?;
            Ok(evaluate_relop(&have, &want, op))
        }
    }
}

// ----- Commands -----

pub fn cmd_get(ctx: &mut Context) -> CmdResult {
    let id = ctx.option_value("--id");
    let must_exist = !ctx.has_option("--if-exists");
    if id.is_some() && !must_exist {
        return fail("--if-exists and --id may not be specified together");
    }
    let table = get_table(ctx.schema, ctx.arg(1))?;
    let record_id = ctx.arg(2).to_string();
    let Some(row) = ctx.get_row(&table.name, &record_id, must_exist)? else { return Ok(()) };
    if let Some(id) = id {
        let (sym, new) = ctx.create_symbol(&id)?;
        if !new {
            return fail(format!("row id \"{id}\" specified on \"get\" command was used before it was defined"));
        }
        sym.uuid = row;
        // The row exists already, so no "unreferenced" warning for it.
        sym.strong_ref = true;
    }
    for i in 3..ctx.argv.len() {
        let arg = ctx.argv[i].clone();
        if arg.eq_ignore_ascii_case("_uuid") || arg.eq_ignore_ascii_case("-uuid") {
            ctx.output += &format!("{row}\n");
            continue;
        }
        let ckv = parse_column_key_value(&arg, table, None)?;
        let column = ckv.column;
        ctx.verify(&table.name, &row, &column.name);
        let datum = ctx.read(&table.name, &row, &column.name);
        match ckv.key {
            Some(key_string) => {
                if column.type_.value.is_none() {
                    return fail(format!("cannot specify key to get for non-map column {}", column.name));
                }
                let key = ctx.atom_from_string(&column.type_.key, &key_string)?;
                match datum.keys.binary_search(&key) {
                    Ok(idx) => ctx.output += &atom_to_string(&datum.values.as_ref().expect("map")[idx]),
                    Err(_) if must_exist => {
                        return fail(format!(
                            "no key \"{key_string}\" in {} record \"{record_id}\" column {}",
                            table.name, column.name
                        ));
                    }
                    Err(_) => {}
                }
            }
            None => ctx.output += &datum_to_string(&datum, &column.type_),
        }
        ctx.output.push('\n');
    }
    Ok(())
}

fn list_make_table(columns: &[Option<&ColumnSchema>]) -> Table {
    Table {
        caption: None,
        headings: columns.iter().map(|c| c.map_or("_uuid".to_string(), |c| c.name.clone())).collect(),
        rows: Vec::new(),
    }
}

fn list_record(ctx: &Context, table: &TableSchema, row: &Uuid, columns: &[Option<&ColumnSchema>], out: &mut Table) {
    let cells = columns
        .iter()
        .map(|c| match c {
            None => Cell::Datum { datum: Datum::scalar(Atom::Uuid(*row)), ty: Type::scalar(AtomicType::Uuid) },
            Some(c) => Cell::Datum { datum: ctx.read(&table.name, row, &c.name), ty: c.type_.clone() },
        })
        .collect();
    out.rows.push(cells);
}

pub fn cmd_list(ctx: &mut Context) -> CmdResult {
    let column_names = ctx.option_value("--columns");
    let must_exist = !ctx.has_option("--if-exists");
    let table = get_table(ctx.schema, ctx.arg(1))?;
    let columns = parse_column_names(column_names.as_deref(), table)?;
    let mut out = list_make_table(&columns);
    if ctx.argv.len() > 2 {
        for i in 2..ctx.argv.len() {
            let id = ctx.argv[i].clone();
            if let Some(row) = ctx.get_row(&table.name, &id, must_exist)? {
                list_record(ctx, table, &row, &columns, &mut out);
            }
        }
    } else {
        for row in ctx.rows(&table.name) {
            list_record(ctx, table, &row, &columns, &mut out);
        }
    }
    ctx.table = Some(out);
    Ok(())
}

pub fn cmd_find(ctx: &mut Context) -> CmdResult {
    let column_names = ctx.option_value("--columns");
    let table = get_table(ctx.schema, ctx.arg(1))?;
    let columns = parse_column_names(column_names.as_deref(), table)?;
    let mut out = list_make_table(&columns);
    let conditions: Vec<String> = ctx.argv[2..].to_vec();
    'rows: for row in ctx.rows(&table.name) {
        for cond in &conditions {
            if !check_condition(ctx, table, &row, cond)? {
                continue 'rows;
            }
        }
        list_record(ctx, table, &row, &columns, &mut out);
    }
    ctx.table = Some(out);
    Ok(())
}

/// set_column: "column[:key]=value" applied to `row`.
///
/// With `use_partial_update`, "column:key=value" goes out as a partial map
/// update that the server merges at commit: nothing is read or verified, so
/// concurrent runs setting keys of the same map do not conflict, but the
/// commands after it would not see the new pair (as ovsdb_idl_read() does
/// not reflect partial updates), which is why OVS's cmd_set asks for it only
/// on the last command. A whole-column "column=value" is always a plain
/// write.
pub fn set_column(
    ctx: &mut Context,
    table: &TableSchema,
    row: &Uuid,
    arg: &str,
    use_partial_update: bool,
) -> Result<(), String> {
    let ckv = parse_column_key_value(arg, table, Some(&[]))?;
    let Some((_, value)) = ckv.op_value else { return Err(format!("{arg}: missing value")) };
    let column = ckv.column;
    check_mutable(ctx, table, row, column)?;
    match ckv.key {
        Some(key_string) => {
            let Some(value_type) = &column.type_.value else {
                return Err(format!("cannot specify key to set for non-map column {}", column.name));
            };
            let key = ctx.atom_from_string(&column.type_.key, &key_string)?;
            let value = ctx.atom_from_string(value_type, &value)?;
            if use_partial_update {
                let pair = Datum { keys: vec![key], values: Some(vec![value]) };
                ctx.txn.write_partial_map(ctx.replica, &table.name, row, &column.name, &pair);
                return Ok(());
            }
            let mut datum = ctx.read(&table.name, row, &column.name);
            let values = datum.values.get_or_insert_with(Vec::new);
            match datum.keys.binary_search(&key) {
                Ok(i) => values[i] = value,
                Err(i) => {
                    datum.keys.insert(i, key);
                    values.insert(i, value);
                }
            }
            ctx.verify(&table.name, row, &column.name);
            ctx.write(&table.name, row, &column.name, datum);
        }
        None => {
            let datum = ctx.datum_from_string(&column.type_, &value)?;
            ctx.write(&table.name, row, &column.name, datum);
        }
    }
    Ok(())
}

pub fn cmd_set(ctx: &mut Context) -> CmdResult {
    let must_exist = !ctx.has_option("--if-exists");
    let table = get_table(ctx.schema, ctx.arg(1))?;
    let id = ctx.arg(2).to_string();
    let Some(row) = ctx.get_row(&table.name, &id, must_exist)? else { return Ok(()) };
    for i in 3..ctx.argv.len() {
        let arg = ctx.argv[i].clone();
        let last = ctx.last_command;
        set_column(ctx, table, &row, &arg, last)?;
    }
    ctx.invalidate_cache();
    Ok(())
}

/// Which of a column's size limits an operation can break: `add` only grows
/// a column, `remove` only shrinks it.
enum Bound {
    Max,
    Min,
}

/// The end of `add` and `remove` (when not a partial update): refuse a value
/// outside the column's size limit with OVS's text, else verify the column
/// and write it whole.
fn write_within_bound(
    ctx: &mut Context,
    table: &TableSchema,
    row: &Uuid,
    column: &ColumnSchema,
    value: Datum,
    op: &str,
    bound: Bound,
) -> CmdResult {
    let ty = &column.type_;
    let n = value.len() as u64;
    let broken = match bound {
        Bound::Max => (n > ty.max).then_some(("maximum", ty.max)),
        Bound::Min => (n < ty.min).then_some(("minimum", ty.min)),
    };
    if let Some((which, limit)) = broken {
        return fail(format!(
            "\"{op}\" operation would put {n} {} in column {} of table {} but the {which} number is {limit}",
            element_word(ty),
            column.name,
            table.name
        ));
    }
    ctx.verify(&table.name, row, &column.name);
    ctx.write(&table.name, row, &column.name, value);
    ctx.invalidate_cache();
    Ok(())
}

fn element_word(ty: &Type) -> &'static str {
    if ty.value.is_none() { "values" } else { "pairs" }
}

/// `TABLE RECORD COLUMN` of `add` and `remove`: the table, the row and the
/// column, checked in ovs-vsctl's order and for being changeable. None for a
/// missing row under `--if-exists`.
fn mutable_column<'a>(ctx: &mut Context<'a>) -> Result<Option<(&'a TableSchema, Uuid, &'a ColumnSchema)>, String> {
    let must_exist = !ctx.has_option("--if-exists");
    let table = get_table(ctx.schema, ctx.arg(1))?;
    let column = get_column(table, ctx.arg(3))?;
    let id = ctx.arg(2).to_string();
    let Some(row) = ctx.get_row(&table.name, &id, must_exist)? else { return Ok(None) };
    check_mutable(ctx, table, &row, column)?;
    Ok(Some((table, row, column)))
}

pub fn cmd_add(ctx: &mut Context) -> CmdResult {
    let Some((table, row, column)) = mutable_column(ctx)? else { return Ok(()) };
    let ty = &column.type_;
    // The last command of an invocation adds with partial updates, which
    // the server merges with whatever the column holds at commit: nothing is
    // read or verified, so concurrent adds do not conflict, and the server
    // reports a full column itself. Earlier commands rewrite the column, so
    // that the commands after them see the result.
    let mut new = match ctx.last_command {
        true => Datum::empty_for(ty),
        false => ctx.read(&table.name, &row, &column.name),
    };
    let add_type = Type { min: 1, max: u64::MAX, ..ty.clone() };
    for i in 4..ctx.argv.len() {
        let arg = ctx.argv[i].clone();
        let add = ctx.datum_from_string(&add_type, &arg)?;
        // Keys already present keep their value (ovsdb_datum_union); as a
        // partial map update, a pair whose key the column has replaces its
        // value.
        new = new.union(&add);
    }
    if ctx.last_command {
        match ty.is_map() {
            true => ctx.txn.write_partial_map(ctx.replica, &table.name, &row, &column.name, &new),
            false => ctx.txn.write_partial_set(&table.name, &row, &column.name, &new),
        }
        ctx.invalidate_cache();
        return Ok(());
    }
    write_within_bound(ctx, table, &row, column, new, "add", Bound::Max)
}

pub fn cmd_remove(ctx: &mut Context) -> CmdResult {
    let Some((table, row, column)) = mutable_column(ctx)? else { return Ok(()) };
    let ty = &column.type_;
    let mut old = ctx.read(&table.name, &row, &column.name);
    let rm_type = Type { min: 1, max: u64::MAX, ..ty.clone() };
    for i in 4..ctx.argv.len() {
        let arg = ctx.argv[i].clone();
        // For maps, "key=value" removes a pair only if the value matches,
        // and a bare "key" removes the key whatever its value.
        let (rm, keys_only) = match ctx.datum_from_string(&rm_type, &arg) {
            Ok(d) => (d, false),
            Err(_) if ty.is_map() => {
                let keys_type = Type { value: None, ..rm_type.clone() };
                (ctx.datum_from_string(&keys_type, &arg)?, true)
            }
            Err(e) => return fail(e),
        };
        for (j, k) in rm.keys.iter().enumerate() {
            if let Ok(pos) = old.keys.binary_search(k) {
                let matches = keys_only
                    || match (&old.values, &rm.values) {
                        (Some(ov), Some(rv)) => ov[pos] == rv[j],
                        _ => true,
                    };
                if matches {
                    old.keys.remove(pos);
                    if let Some(ov) = old.values.as_mut() {
                        ov.remove(pos);
                    }
                }
            }
        }
    }
    write_within_bound(ctx, table, &row, column, old, "remove", Bound::Min)
}

pub fn cmd_clear(ctx: &mut Context) -> CmdResult {
    let must_exist = !ctx.has_option("--if-exists");
    let table = get_table(ctx.schema, ctx.arg(1))?;
    let id = ctx.arg(2).to_string();
    let Some(row) = ctx.get_row(&table.name, &id, must_exist)? else { return Ok(()) };
    for i in 3..ctx.argv.len() {
        let column = get_column(table, &ctx.argv[i])?;
        check_mutable(ctx, table, &row, column)?;
        if column.type_.min > 0 {
            return fail(format!(
                "\"clear\" operation cannot be applied to column {} of table {}, which is not allowed to be empty",
                column.name, table.name
            ));
        }
        ctx.write(&table.name, &row, &column.name, Datum::empty_for(&column.type_));
    }
    ctx.invalidate_cache();
    Ok(())
}

pub fn cmd_create(ctx: &mut Context) -> CmdResult {
    let id = ctx.option_value("--id");
    let table = get_table(ctx.schema, ctx.arg(1))?;
    let row = match id {
        // A UUID as the id: the row gets that UUID for good (OVS's
        // insert_persist_uuid); no symbol, so no reference warnings.
        Some(id) if let Some(uuid) = Uuid::try_parse(&id).ok().filter(|_| id.len() == 36) => {
            let table_name = table.name.clone();
            ctx.txn.insert_persist_uuid(&table_name, uuid)
        }
        Some(id) => {
            let table_name = table.name.clone();
            let is_root = table.is_root;
            let (sym, _) = ctx.create_symbol(&id)?;
            if is_root {
                // Rows of root tables persist unreferenced: no warning.
                sym.strong_ref = true;
            }
            match sym.table.clone() {
                Some(t) if t == table_name => sym.uuid,
                Some(t) => {
                    return fail(format!(
                        "row id \"{id}\" is used as a reference to table {t} but created in {table_name}"
                    ));
                }
                None => {
                    let u = ctx.insert(&table_name);
                    let sym = ctx.symbols.get_mut(&id).expect("created above");
                    sym.uuid = u;
                    sym.table = Some(table_name);
                    u
                }
            }
        }
        None => {
            if !table.is_root {
                super::warn(
                    "db_ctl_base",
                    &format!(
                        "applying \"create\" command to table {} without --id option will have no effect",
                        table.name
                    ),
                );
            }
            ctx.insert(&table.name)
        }
    };
    for i in 2..ctx.argv.len() {
        let arg = ctx.argv[i].clone();
        set_column(ctx, table, &row, &arg, false)?;
    }
    ctx.output = row.to_string();
    Ok(())
}

pub fn cmd_destroy(ctx: &mut Context) -> CmdResult {
    let must_exist = !ctx.has_option("--if-exists");
    let delete_all = ctx.has_option("--all");
    let table = get_table(ctx.schema, ctx.arg(1))?;
    if delete_all && ctx.argv.len() > 2 {
        return fail("--all and records argument should not be specified together");
    }
    if delete_all && !must_exist {
        return fail("--all and --if-exists should not be specified together");
    }
    if !delete_all && ctx.argv.len() == 2 {
        super::warn("db_ctl_base", "either --all or records argument should be specified");
        return Ok(());
    }
    if delete_all {
        for row in ctx.rows(&table.name) {
            ctx.delete(&table.name, &row);
        }
    } else {
        for i in 2..ctx.argv.len() {
            let id = ctx.argv[i].clone();
            if let Some(row) = ctx.get_row(&table.name, &id, must_exist)? {
                ctx.delete(&table.name, &row);
            }
        }
    }
    ctx.invalidate_cache();
    Ok(())
}

pub fn cmd_wait_until(ctx: &mut Context) -> CmdResult {
    let table = get_table(ctx.schema, ctx.arg(1))?;
    let id = ctx.arg(2).to_string();
    let Some(row) = ctx.get_row(&table.name, &id, false)? else { return Err(Flow::TryAgain) };
    for i in 3..ctx.argv.len() {
        let arg = ctx.argv[i].clone();
        if !check_condition(ctx, table, &row, &arg)? {
            return Err(Flow::TryAgain);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridge() -> TableSchema {
        super::super::vswitch_schema().tables["Bridge"].clone()
    }

    #[test]
    fn column_key_value_parsing() {
        let t = bridge();
        let c = parse_column_key_value("other_config:hwaddr=\"00:11\"", &t, Some(&[])).unwrap();
        assert_eq!(c.column.name, "other_config");
        assert_eq!(c.key.as_deref(), Some("hwaddr"));
        assert_eq!(c.op_value.unwrap().1, "\"00:11\"");
        let c = parse_column_key_value("name>=a", &t, Some(RELOPS)).unwrap();
        assert_eq!(RELOPS[c.op_value.unwrap().0], ">=");
        let c = parse_column_key_value("flood_vlans{>=}1", &t, Some(RELOPS)).unwrap();
        assert_eq!(RELOPS[c.op_value.unwrap().0], "{>=}");
        assert_eq!(
            parse_column_key_value("name", &t, Some(&[])).err().unwrap(),
            "name: argument does not end in \"=\" followed by a value."
        );
        assert_eq!(
            parse_column_key_value("name=", &t, Some(&[])).err().unwrap(),
            "name=: argument does not end in \"=\" followed by a value."
        );
        assert_eq!(
            parse_column_key_value("name", &t, Some(&["=", "!=", "<"])).err().unwrap(),
            "name: argument does not end in \"=\", \"!=\", or \"<\" followed by a value."
        );
        assert_eq!(
            parse_column_key_value("name=x", &t, None).err().unwrap(),
            "name=x: trailing garbage \"=x\" in argument"
        );
        assert_eq!(parse_column_key_value(":k=v", &t, Some(&[])).err().unwrap(), ":k=v: missing column name");
    }

    #[test]
    fn relational_operators() {
        let s = |v: &[i64]| Datum { keys: v.iter().map(|i| Atom::Integer(*i)).collect(), values: None };
        assert!(evaluate_relop(&s(&[1, 2]), &s(&[1, 2]), "="));
        assert!(evaluate_relop(&s(&[5]), &s(&[1, 2]), "<"), "fewer elements compare less");
        assert!(evaluate_relop(&s(&[1]), &s(&[1, 2]), "{<}"));
        assert!(!evaluate_relop(&s(&[1, 2]), &s(&[1, 2]), "{<}"));
        assert!(evaluate_relop(&s(&[1, 2]), &s(&[1, 2]), "{<=}"));
        assert!(evaluate_relop(&s(&[1, 2, 3]), &s(&[1, 2]), "{>}"));
        assert!(evaluate_relop(&s(&[3]), &s(&[1, 2]), "{not-in}"));
        assert!(!evaluate_relop(&s(&[2]), &s(&[1, 2]), "{not-in}"));
    }
}
