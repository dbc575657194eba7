//! `show`: a tree of the configuration, as ovs-vsctl prints it (db-ctl-base's
//! cmd_show with vsctl's table list).
use std::collections::BTreeSet;

use oxvs_ovsdb::{
    Atom, Datum,
    data_string::{atom_to_string, datum_to_string},
};
use uuid::Uuid;

use super::context::{CmdResult, Context};

struct ShowTable {
    table: &'static str,
    name_column: Option<&'static str>,
    columns: &'static [&'static str],
}

const SHOW_TABLES: &[ShowTable] = &[
    ShowTable { table: "Open_vSwitch", name_column: None, columns: &["manager_options", "bridges", "ovs_version"] },
    ShowTable {
        table: "Bridge",
        name_column: Some("name"),
        columns: &["controller", "fail_mode", "datapath_type", "ports"],
    },
    ShowTable { table: "Port", name_column: Some("name"), columns: &["tag", "trunks", "interfaces"] },
    ShowTable { table: "Interface", name_column: Some("name"), columns: &["type", "options", "error", "bfd_status"] },
    ShowTable { table: "Controller", name_column: Some("target"), columns: &["is_connected"] },
    ShowTable { table: "Manager", name_column: Some("target"), columns: &["is_connected"] },
];

fn find_show(table: &str) -> Option<&'static ShowTable> {
    SHOW_TABLES.iter().find(|s| s.table == table)
}

fn indent(out: &mut String, level: usize) {
    out.extend(std::iter::repeat_n(' ', level * 4));
}

fn show_row(ctx: &mut Context, table: &str, row: &Uuid, level: usize, shown: &mut BTreeSet<&'static str>) {
    let show = find_show(table);
    let mut out = String::new();
    indent(&mut out, level);
    match show.and_then(|s| s.name_column.map(|n| (s, n))) {
        Some((s, name_column)) => {
            let ty = &ctx.column_schema(s.table, name_column).type_;
            out += &format!("{} {}", s.table, datum_to_string(&ctx.read(s.table, row, name_column), ty));
        }
        None => out += &row.to_string(),
    }
    out.push('\n');
    ctx.output += &out;

    let Some(show) = show else { return };
    if shown.contains(show.table) {
        return;
    }
    shown.insert(show.table);
    for column in show.columns {
        let cs = ctx.column_schema(show.table, column);
        let datum = ctx.read(show.table, row, column);
        if let Some(ref_show) = cs.type_.key.ref_table.as_deref().and_then(find_show)
            && cs.type_.value.is_none()
        {
            for key in &datum.keys {
                if let Atom::Uuid(u) = key
                    && ctx.exists(ref_show.table, u)
                {
                    show_row(ctx, ref_show.table, u, level + 1, shown);
                }
            }
            continue;
        }
        if let Some(vt) = &cs.type_.value
            && let Some(ref_show) = vt.ref_table.as_deref().and_then(find_show)
            && let Some(name_column) = ref_show.name_column
        {
            let mut out = String::new();
            indent(&mut out, level + 1);
            out += &format!("{column}:\n");
            for (k, v) in datum.keys.iter().zip(datum.values.iter().flatten()) {
                indent(&mut out, level + 2);
                out += &atom_to_string(k);
                out.push('=');
                match v {
                    Atom::Uuid(u) if ctx.exists(ref_show.table, u) => {
                        let nt = &ctx.column_schema(ref_show.table, name_column).type_;
                        out += &datum_to_string(&ctx.read(ref_show.table, u, name_column), nt);
                    }
                    _ => out += "\"<null>\"",
                }
                out.push('\n');
            }
            ctx.output += &out;
            continue;
        }
        if datum != Datum::default_for(&cs.type_) {
            let mut out = String::new();
            indent(&mut out, level + 1);
            out += &format!("{column}: {}\n", datum_to_string(&datum, &cs.type_));
            ctx.output += &out;
        }
    }
    shown.remove(show.table);
}

pub fn cmd_show(ctx: &mut Context) -> CmdResult {
    let mut shown = BTreeSet::new();
    for row in ctx.rows("Open_vSwitch") {
        show_row(ctx, "Open_vSwitch", &row, 0, &mut shown);
    }
    Ok(())
}
