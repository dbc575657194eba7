//! Tables of records in the output styles of Open vSwitch's tools
//! (lib/table.c): `--format=table|list|html|csv|json`, cells as
//! `--data=string|bare|json`, `--no-headings`, `--pretty`, `--bare`,
//! `--max-column-width`. ovs-vsctl's `list` and `find` print through this,
//! and scripts parse the result, so the bytes must be OVS's.
#![allow(dead_code)] // Used by `oxvs vsctl`, which is being written on another branch.

use oxvs_ovsdb::{
    Atom, Datum, Type,
    data_string::{datum_to_bare, datum_to_string, json_quote, real_to_string},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableFormat {
    /// Columns aligned under a heading line.
    Table,
    /// One "heading : value" line per cell, a blank line between records.
    List,
    Html,
    Csv,
    Json,
}

/// How a datum cell is turned into text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellFormat {
    /// The syntax the tools read back (`[a, b]`, `{k=v}`, quoted strings).
    String,
    /// Space-separated, no brackets or quotes.
    Bare,
    /// OVSDB's JSON form.
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableStyle {
    pub format: TableFormat,
    pub cell_format: CellFormat,
    pub headings: bool,
    /// Indent `--format=json` output.
    pub pretty: bool,
    /// Table format: cells wider than this are cut (0: no limit).
    pub max_column_width: usize,
}

impl Default for TableStyle {
    /// OVS's `TABLE_STYLE_DEFAULT`: list format, string cells, headings.
    fn default() -> Self {
        TableStyle {
            format: TableFormat::List,
            cell_format: CellFormat::String,
            headings: true,
            pretty: false,
            max_column_width: 0,
        }
    }
}

impl TableStyle {
    /// Applies one of OVS's table options, named with or without its
    /// dashes (`format`, `--format`, `-f`, `data`, `-d`, `no-headings`,
    /// `pretty`, `bare`, `max-column-width`). Returns false for an option
    /// that is not a table option; Err for a bad or missing argument.
    pub fn apply_option(&mut self, name: &str, value: Option<&str>) -> Result<bool, String> {
        let name = name.trim_start_matches('-');
        let long = match name {
            "f" => "format",
            "d" => "data",
            other => other,
        };
        let takes_arg = matches!(long, "format" | "data" | "max-column-width");
        match (long, value) {
            ("format" | "data" | "max-column-width" | "no-headings" | "pretty" | "bare", _) => {}
            _ => return Ok(false),
        }
        let value = match (takes_arg, value) {
            (true, Some(v)) => v,
            (true, None) => return Err(format!("option '--{long}' requires an argument")),
            (false, Some(_)) => return Err(format!("option '--{long}' doesn't allow an argument")),
            (false, None) => "",
        };
        match long {
            "format" => {
                self.format = match value {
                    "table" => TableFormat::Table,
                    "list" => TableFormat::List,
                    "html" => TableFormat::Html,
                    "csv" => TableFormat::Csv,
                    "json" => TableFormat::Json,
                    other => return Err(format!("unknown output format \"{other}\"")),
                }
            }
            "data" => {
                self.cell_format = match value {
                    "string" => CellFormat::String,
                    "bare" => CellFormat::Bare,
                    "json" => CellFormat::Json,
                    other => return Err(format!("unknown data format \"{other}\"")),
                }
            }
            "no-headings" => self.headings = false,
            "pretty" => self.pretty = true,
            "bare" => {
                self.format = TableFormat::List;
                self.cell_format = CellFormat::Bare;
                self.headings = false;
            }
            // Like C's atoi: a leading number, anything else is 0 (no limit).
            _ => self.max_column_width = leading_number(value),
        }
        Ok(true)
    }
}

fn leading_number(s: &str) -> usize {
    let t = s.trim_start();
    let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
    if t.starts_with('-') { 0 } else { digits.parse().unwrap_or(0) }
}

/// One cell: text the tool computed itself, or a column's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Text(String),
    Datum { datum: Datum, ty: Type },
}

impl Cell {
    /// The cell as text in `format` (OVS's `cell_to_text`).
    fn to_text(&self, format: CellFormat) -> String {
        match self {
            Cell::Text(s) => s.clone(),
            Cell::Datum { datum, ty } => match format {
                CellFormat::String => datum_to_string(datum, ty),
                CellFormat::Bare => datum_to_bare(datum, ty),
                CellFormat::Json => {
                    let mut out = String::new();
                    write_json(&datum_json(datum, ty), false, 0, &mut out);
                    out
                }
            },
        }
    }

    /// The cell in `--format=json` output: text as a JSON string, a datum as
    /// its OVSDB JSON whatever the cell format (as OVS does).
    fn to_json(&self) -> Json {
        match self {
            Cell::Text(s) => Json::Str(s.clone()),
            Cell::Datum { datum, ty } => datum_json(datum, ty),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub caption: Option<String>,
    pub headings: Vec<String>,
    /// Each row has one cell per heading.
    pub rows: Vec<Vec<Cell>>,
}

/// Formats one table as the first (or only) output of a command run.
pub fn format_table(t: &Table, style: &TableStyle) -> String {
    TablePrinter::new().format(t, style)
}

/// Formats successive tables of one run: as in OVS, every table, list or
/// csv output after the first starts with a blank line (so that
/// `list A -- list B` keeps the records of A and B apart).
#[derive(Debug)]
pub struct TablePrinter {
    first: bool,
}

impl Default for TablePrinter {
    fn default() -> Self {
        Self::new()
    }
}

impl TablePrinter {
    pub fn new() -> Self {
        TablePrinter { first: true }
    }

    pub fn format(&mut self, t: &Table, style: &TableStyle) -> String {
        let mut out = String::new();
        match style.format {
            TableFormat::Table | TableFormat::List | TableFormat::Csv => {
                if !std::mem::replace(&mut self.first, false) {
                    out.push('\n');
                }
                if let Some(c) = &t.caption {
                    out.push_str(c);
                    out.push('\n');
                }
                match style.format {
                    TableFormat::Table => print_table(t, style, &mut out),
                    TableFormat::List => print_list(t, style, &mut out),
                    _ => print_csv(t, style, &mut out),
                }
            }
            TableFormat::Html => print_html(t, style, &mut out),
            TableFormat::Json => print_json(t, style, &mut out),
        }
        out
    }
}

fn cell<'a>(t: &'a Table, y: usize, x: usize) -> Option<&'a Cell> {
    t.rows.get(y).and_then(|r| r.get(x))
}

fn cell_text(t: &Table, y: usize, x: usize, format: CellFormat) -> String {
    cell(t, y, x).map(|c| c.to_text(format)).unwrap_or_default()
}

/// Ends a line as OVS does: trailing blanks dropped.
fn finish_line(out: &mut String) {
    let kept = out.trim_end_matches(' ').len();
    out.truncate(kept);
    out.push('\n');
}

/// `s` cut to at most `width` bytes (at a character boundary) and padded
/// with spaces to `width` bytes: C's `%-*.*s`, which counts bytes.
fn pad_cut(s: &str, width: usize, out: &mut String) {
    let mut end = s.len().min(width);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push_str(&s[..end]);
    out.extend(std::iter::repeat_n(' ', width - end));
}

fn print_table(t: &Table, style: &TableStyle, out: &mut String) {
    let texts: Vec<Vec<String>> = (0..t.rows.len())
        .map(|y| (0..t.headings.len()).map(|x| cell_text(t, y, x, style.cell_format)).collect())
        .collect();
    let widths: Vec<usize> = t
        .headings
        .iter()
        .enumerate()
        .map(|(x, heading)| {
            let mut w = texts.iter().map(|row| row[x].len()).max().unwrap_or(0);
            if style.max_column_width > 0 {
                w = w.min(style.max_column_width);
            }
            if style.headings {
                w = w.max(heading.len());
            }
            w
        })
        .collect();
    if style.headings {
        for (x, heading) in t.headings.iter().enumerate() {
            if x > 0 {
                out.push(' ');
            }
            // A heading is padded but never cut.
            out.push_str(heading);
            out.extend(std::iter::repeat_n(' ', widths[x].saturating_sub(heading.len())));
        }
        finish_line(out);
        for (x, w) in widths.iter().enumerate() {
            if x > 0 {
                out.push(' ');
            }
            out.extend(std::iter::repeat_n('-', *w));
        }
        finish_line(out);
    }
    for row in &texts {
        for (x, text) in row.iter().enumerate() {
            if x > 0 {
                out.push(' ');
            }
            pad_cut(text, widths[x], out);
        }
        finish_line(out);
    }
}

fn print_list(t: &Table, style: &TableStyle, out: &mut String) {
    for y in 0..t.rows.len() {
        if y > 0 {
            out.push('\n');
        }
        for (x, heading) in t.headings.iter().enumerate() {
            if style.headings {
                out.push_str(&format!("{heading:<20}: "));
            }
            out.push_str(&cell_text(t, y, x, style.cell_format));
            out.push('\n');
        }
    }
}

fn csv_cell(s: &str, out: &mut String) {
    if s.contains(['\n', '"', ',']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn print_csv(t: &Table, style: &TableStyle, out: &mut String) {
    if style.headings {
        for (x, heading) in t.headings.iter().enumerate() {
            if x > 0 {
                out.push(',');
            }
            csv_cell(heading, out);
        }
        out.push('\n');
    }
    for y in 0..t.rows.len() {
        for x in 0..t.headings.len() {
            if x > 0 {
                out.push(',');
            }
            csv_cell(&cell_text(t, y, x, style.cell_format), out);
        }
        out.push('\n');
    }
}

fn html_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

/// Whether `s` starts with a UUID (OVS's `uuid_from_string_prefix`).
fn starts_with_uuid(s: &str) -> bool {
    s.get(..36).is_some_and(|p| oxvs_ovsdb::atom::parse_uuid(p).is_some())
}

/// A cell whose UUIDs become links to the rows they name (the `_uuid`
/// cells are the anchors).
fn html_cell(element: &str, content: &str, out: &mut String) {
    out.push_str(&format!("    <{element}>"));
    let mut rest = content;
    while let Some(c) = rest.chars().next() {
        if starts_with_uuid(rest) {
            out.push_str(&format!("<a href=\"#{}\">{}</a>", &rest[..36], &rest[..8]));
            rest = &rest[36..];
        } else {
            html_escape(&rest[..c.len_utf8()], out);
            rest = &rest[c.len_utf8()..];
        }
    }
    out.push_str(&format!("</{element}>\n"));
}

fn print_html(t: &Table, style: &TableStyle, out: &mut String) {
    out.push_str("<table border=1>\n");
    if let Some(c) = &t.caption {
        html_cell("caption", c, out);
    }
    if style.headings {
        out.push_str("  <tr>\n");
        for heading in &t.headings {
            html_cell("th", heading, out);
        }
        out.push_str("  </tr>\n");
    }
    for y in 0..t.rows.len() {
        out.push_str("  <tr>\n");
        for (x, heading) in t.headings.iter().enumerate() {
            let content = cell_text(t, y, x, style.cell_format);
            if heading == "_uuid" {
                out.push_str("    <td><a name=\"");
                html_escape(&content, out);
                out.push_str("\">");
                let mut short = content.len().min(8);
                while !content.is_char_boundary(short) {
                    short -= 1;
                }
                html_escape(&content[..short], out);
                out.push_str("</a></td>\n");
            } else {
                html_cell("td", &content, out);
            }
        }
        out.push_str("  </tr>\n");
    }
    out.push_str("</table>\n");
}

fn print_json(t: &Table, style: &TableStyle, out: &mut String) {
    // Members in sorted order, as OVS's serializer writes them.
    let mut members = Vec::new();
    if let Some(c) = &t.caption {
        members.push(("caption".to_string(), Json::Str(c.clone())));
    }
    let data = (0..t.rows.len())
        .map(|y| Json::Array((0..t.headings.len()).map(|x| cell(t, y, x).map_or(Json::Null, Cell::to_json)).collect()))
        .collect();
    members.push(("data".to_string(), Json::Array(data)));
    members.push(("headings".to_string(), Json::Array(t.headings.iter().cloned().map(Json::Str).collect())));
    write_json(&Json::Object(members), style.pretty, 0, out);
    out.push('\n');
}

/// JSON as OVS builds it for output: integers and reals kept apart, since
/// OVS writes reals with `%.15g` (serde_json would write them differently).
#[derive(Clone, Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Integer(i64),
    Real(f64),
    Str(String),
    Array(Vec<Json>),
    /// Members in the order written.
    Object(Vec<(String, Json)>),
}

fn atom_json(a: &Atom) -> Json {
    match a {
        Atom::Integer(i) => Json::Integer(*i),
        Atom::Real(r) => Json::Real(*r),
        Atom::Boolean(b) => Json::Bool(*b),
        Atom::String(s) => Json::Str(s.to_string()),
        Atom::Uuid(u) => Json::Array(vec![Json::Str("uuid".into()), Json::Str(u.to_string())]),
    }
}

/// OVSDB's JSON for a value of type `ty` (`ovsdb_datum_to_json`): a map is
/// always `["map", ...]`; a set of one element is the bare atom.
fn datum_json(d: &Datum, ty: &Type) -> Json {
    let tagged = |tag: &str, items: Vec<Json>| Json::Array(vec![Json::Str(tag.into()), Json::Array(items)]);
    if ty.is_map() {
        let values = d.values.as_deref().unwrap_or(&[]);
        tagged("map", d.keys.iter().zip(values).map(|(k, v)| Json::Array(vec![atom_json(k), atom_json(v)])).collect())
    } else if d.keys.len() == 1 {
        atom_json(&d.keys[0])
    } else {
        tagged("set", d.keys.iter().map(atom_json).collect())
    }
}

/// OVS's JSON serializer: compact, or with `pretty` each member and element
/// on its own line indented two spaces per level, closing brackets kept on
/// the last line.
fn write_json(j: &Json, pretty: bool, depth: usize, out: &mut String) {
    let newline = |depth: usize, out: &mut String| {
        if pretty {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', 2 * depth));
        }
    };
    match j {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Integer(i) => out.push_str(&i.to_string()),
        Json::Real(r) => out.push_str(&real_to_string(*r)),
        Json::Str(s) => out.push_str(&json_quote(s)),
        Json::Array(items) => {
            out.push('[');
            if !items.is_empty() {
                newline(depth + 1, out);
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        newline(depth + 1, out);
                    }
                    write_json(item, pretty, depth + 1, out);
                }
            }
            out.push(']');
        }
        Json::Object(members) => {
            out.push('{');
            newline(depth + 1, out);
            for (i, (name, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    newline(depth + 1, out);
                }
                out.push_str(&json_quote(name));
                out.push(':');
                if pretty {
                    out.push(' ');
                }
                write_json(value, pretty, depth + 1, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
#[path = "table_ovs_tests.rs"]
mod ovs_tests;
