//! `oxvs ovsdb-tool` / `ovsdb-tool`: the offline OVSDB management tool, with
//! the commands, argument conventions, outputs and error messages of Open
//! vSwitch's `ovsdb-tool` for standalone databases.
//!
//! Files are read and written through `oxvs_ovsdb::log` (same format, same
//! lock files as OVS); a database is rebuilt from its records with
//! `oxvs_ovsdb::server::replay` and transactions run on `oxvs_ovsdb::txn`.
//! What we write (transaction records in OVS's `_is_diff` form, snapshots
//! after compaction or conversion) is what OVS 3.1 would write, up to the
//! order of JSON members.
//!
//! `show-log` prints tables, rows and columns in the order OVS's JSON parser
//! would iterate them (its string hash and hash-map layout, which depend on
//! the order of the members in the file), so its output matches the real
//! tool's byte for byte for the same file.
use std::{collections::HashMap, fmt::Write as _, fs, io::Write as _, path::Path, process::ExitCode, sync::Arc};

use oxvs_ovsdb::{
    DatabaseSchema, Datum, OvsdbError, Type,
    atom::Atom,
    data_string,
    db::{Commit, Database, datum_from_json},
    log::{Log, LogError, OpenMode, ReadErrorKind, annotate_txn, now_ms},
    op_result::OpResult,
    server::replay,
    txn::{self, TxnContext, TxnOutcome},
};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The Open vSwitch release whose ovsdb-tool we follow (it appears in the
/// comments of the records that `compact` and `convert` write).
const OVS_VERSION: &str = "3.1.0";

const DEFAULT_SCHEMA_DIR: &str = "/usr/share/openvswitch";
const DEFAULT_DB_DIR: &str = "/etc/openvswitch";

/// How a command ends other than successfully.
enum Exit {
    /// `PROG: MESSAGE` on stderr, exit status 1.
    Fail(String),
    /// Exit with this status, quietly (the `db-is-*` and `compare-versions`
    /// tests).
    Status(u8),
}

type Res<T = ()> = Result<T, Exit>;

fn fail<T>(msg: impl Into<String>) -> Res<T> {
    Err(Exit::Fail(msg.into()))
}

struct Opts {
    prog: String,
    /// `-m` count: `show-log` verbosity.
    more: u32,
}

pub fn main(prog: &str, args: Vec<String>) -> ExitCode {
    let code = match run(prog, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit::Status(n)) => ExitCode::from(n),
        Err(Exit::Fail(msg)) => {
            let _ = std::io::stdout().flush();
            eprintln!("{prog}: {msg}");
            ExitCode::from(1)
        }
    };
    if std::io::stdout().flush().is_err() {
        eprintln!("{prog}: write to stdout failed");
        return ExitCode::from(1);
    }
    code
}

// ---------------------------------------------------------------------------
// Options and dispatch.

/// Long options as ovsdb-tool's getopt table has them: (name, takes an
/// argument: 0 no, 1 required, 2 optional).
const LONG_OPTIONS: &[(&str, u8)] = &[
    ("more", 0),
    ("rbac-role", 1),
    ("cid", 1),
    ("election-timer", 1),
    ("verbose", 2),
    ("help", 0),
    ("option", 0),
    ("version", 0),
];

fn run(prog: &str, args: Vec<String>) -> Res {
    let mut o = Opts { prog: prog.to_string(), more: 0 };
    // GNU getopt_long, permuting: options may come anywhere until "--".
    let mut pos = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            pos.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, val) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let matches: Vec<&(&str, u8)> = match LONG_OPTIONS.iter().find(|(n, _)| *n == name) {
                Some(exact) => vec![exact],
                None => LONG_OPTIONS.iter().filter(|(n, _)| n.starts_with(name)).collect(),
            };
            let &(full, has_arg) = match matches.as_slice() {
                [one] => *one,
                [] => return fail(format!("unrecognized option '--{name}'")),
                many => {
                    let list: Vec<String> = many.iter().map(|(n, _)| format!("'--{n}'")).collect();
                    return fail(format!("option '--{name}' is ambiguous; possibilities: {}", list.join(" ")));
                }
            };
            let val = match (has_arg, val) {
                (0, Some(_)) => return fail(format!("option '--{full}' doesn't allow an argument")),
                (1, None) => match args.get(i) {
                    Some(v) => {
                        i += 1;
                        Some(v.clone())
                    }
                    None => return fail(format!("option '--{full}' requires an argument")),
                },
                (_, v) => v,
            };
            option(&mut o, full, val)?;
        } else if a.len() > 1 && a.starts_with('-') {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                match c {
                    'm' => o.more += 1,
                    'h' => option(&mut o, "help", None)?,
                    'o' => option(&mut o, "option", None)?,
                    'V' => option(&mut o, "version", None)?,
                    'v' => {
                        // An optional argument must be attached: -vSPEC.
                        let rest: String = chars[j..].iter().collect();
                        option(&mut o, "verbose", (!rest.is_empty()).then_some(rest))?;
                        break;
                    }
                    _ => return fail(format!("invalid option -- '{c}'")),
                }
            }
        } else {
            pos.push(a.clone());
        }
    }

    let Some(cmd) = pos.first().cloned() else {
        return fail("missing command name; use --help for help");
    };
    let Some(&(_, _, min, max, handler)) = COMMANDS.iter().find(|c| c.0 == cmd) else {
        return fail(format!("unknown command '{cmd}'; use --help for help"));
    };
    let args = &pos[1..];
    if args.len() < min {
        return fail(format!("'{cmd}' command requires at least {min} arguments"));
    }
    if args.len() > max {
        return fail(format!("'{cmd}' command takes at most {max} arguments"));
    }
    handler(&o, args)
}

fn option(o: &mut Opts, name: &str, val: Option<String>) -> Res {
    match name {
        "more" => o.more += 1,
        // RBAC applies to clustered deployments' roles; standalone files
        // opened here have no RBAC_Role rows to consult, so it is accepted
        // and has no effect.
        "rbac-role" => {}
        "cid" => {
            let v = val.unwrap_or_default();
            match oxvs_ovsdb::atom::parse_uuid(&v) {
                Some(u) if !u.is_nil() => {}
                _ => return fail(format!("{v}: not a valid UUID")),
            }
        }
        "election-timer" => {}
        "verbose" => {}
        "help" => {
            print!("{}", usage(&o.prog));
            return Err(Exit::Status(0));
        }
        "option" => {
            for (n, a) in LONG_OPTIONS {
                match a {
                    0 => println!("--{n}"),
                    1 => println!("--{n}=ARG"),
                    _ => println!("--{n}=[ARG]"),
                }
                let short = match *n {
                    "more" => Some('m'),
                    "verbose" => Some('v'),
                    "help" => Some('h'),
                    "option" => Some('o'),
                    "version" => Some('V'),
                    _ => None,
                };
                if let Some(c) = short {
                    println!("-{c} {}", if *a == 2 { "[ARG]" } else { "" });
                }
            }
            return Err(Exit::Status(0));
        }
        "version" => {
            println!("ovsdb-tool (oxvs {}) {OVS_VERSION}", env!("CARGO_PKG_VERSION"));
            return Err(Exit::Status(0));
        }
        _ => unreachable!("{name}"),
    }
    Ok(())
}

type Handler = fn(&Opts, &[String]) -> Res;

/// (name, usage, min args, max args, handler), in ovsdb-tool's order.
const COMMANDS: &[(&str, &str, usize, usize, Handler)] = &[
    ("create", "[db [schema]]", 0, 2, do_create),
    ("create-cluster", "db contents local", 3, 3, do_clustered_only),
    ("join-cluster", "db name local remote...", 4, usize::MAX, do_clustered_only),
    ("compact", "[db [dst]]", 0, 2, do_compact),
    ("convert", "[db [schema [dst]]]", 0, 3, do_convert),
    ("needs-conversion", "", 0, 2, do_needs_conversion),
    ("db-name", "[db]", 0, 1, do_db_name),
    ("db-version", "[db]", 0, 1, do_db_version),
    ("db-cksum", "[db]", 0, 1, do_db_cksum),
    ("db-cid", "db", 1, 1, do_cluster_metadata),
    ("db-sid", "db", 1, 1, do_cluster_metadata),
    ("db-local-address", "db", 1, 1, do_cluster_metadata),
    ("db-is-clustered", "db", 1, 1, do_db_is_clustered),
    ("db-is-standalone", "db", 1, 1, do_db_is_standalone),
    ("schema-name", "[schema]", 0, 1, do_schema_name),
    ("schema-version", "[schema]", 0, 1, do_schema_version),
    ("schema-cksum", "[schema]", 0, 1, do_schema_cksum),
    ("query", "[db] trns", 1, 2, do_query),
    ("transact", "[db] trns", 1, 2, do_transact),
    ("show-log", "[db]", 0, 1, do_show_log),
    ("check-cluster", "db...", 1, usize::MAX, do_clustered_only),
    ("compare-versions", "a op b", 3, 3, do_compare_versions),
    ("help", "", 0, usize::MAX, do_help),
    ("list-commands", "", 0, usize::MAX, do_list_commands),
    ("cluster-to-standalone", "db clusterdb", 2, 2, do_clustered_only),
];

fn usage(prog: &str) -> String {
    format!(
        "\
{prog}: Open vSwitch database management utility
usage: {prog} [OPTIONS] COMMAND [ARG...]
  create [DB [SCHEMA]]    create DB with the given SCHEMA
  [--election-timer=ms] create-cluster DB CONTENTS LOCAL
    create clustered DB with given CONTENTS and LOCAL address
  [--cid=UUID] join-cluster DB NAME LOCAL REMOTE...
    join clustered DB with given NAME and LOCAL and REMOTE addrs
  compact [DB [DST]]      compact DB in-place (or to DST)
  convert [DB [SCHEMA [DST]]]   convert DB to SCHEMA (to DST)
  db-name [DB]            report name of schema used by DB
  db-version [DB]         report version of schema used by DB
  db-cksum [DB]           report checksum of schema used by DB
  db-cid DB               report cluster ID of clustered DB
  db-sid DB               report server ID of clustered DB
  db-local-address DB     report local address of clustered DB
  db-is-clustered DB      test whether DB is clustered
  db-is-standalone DB     test whether DB is standalone
  schema-name [SCHEMA]    report SCHEMA's name
  schema-version [SCHEMA] report SCHEMA's schema version
  schema-cksum [SCHEMA]   report SCHEMA's checksum
  compare-versions A OP B  compare OVSDB schema version numbers
  query [DB] TRNS         execute read-only transaction on DB
  transact [DB] TRNS      execute read/write transaction on DB
  cluster-to-standalone DB DB    Convert clustered DB to
      standalone DB when cluster is down and cannot be
        revived
  [-m]... show-log [DB]   print DB's log entries
The default DB is {}.
The default SCHEMA is {}.
(Clustered databases are not supported: the cluster commands fail.)

Other options:
  -m, --more                  increase show-log verbosity
  --rbac-role=ROLE            RBAC role for transact and query commands
  -v, --verbose[=SPEC]        accepted for compatibility
  -h, --help                  display this help message
  -V, --version               display version information
",
        default_db(),
        default_schema()
    )
}

fn do_help(o: &Opts, _: &[String]) -> Res {
    print!("{}", usage(&o.prog));
    Ok(())
}

fn do_list_commands(_: &Opts, _: &[String]) -> Res {
    println!("The available commands are:");
    for (name, usage, ..) in COMMANDS {
        println!("  {name:<24}{usage}");
    }
    Ok(())
}

fn env_dir(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// `$OVS_DBDIR/conf.db`, else `$OVS_SYSCONFDIR/openvswitch/conf.db`, else
/// `/etc/openvswitch/conf.db`, as OVS's `ovs_dbdir()`.
fn default_db() -> String {
    let dir = env_dir("OVS_DBDIR")
        .or_else(|| env_dir("OVS_SYSCONFDIR").map(|d| format!("{d}/openvswitch")))
        .unwrap_or_else(|| DEFAULT_DB_DIR.to_string());
    format!("{dir}/conf.db")
}

fn default_schema() -> String {
    let dir = env_dir("OVS_PKGDATADIR").unwrap_or_else(|| DEFAULT_SCHEMA_DIR.to_string());
    format!("{dir}/vswitch.ovsschema")
}

fn arg_or(args: &[String], i: usize, default: fn() -> String) -> String {
    args.get(i).cloned().unwrap_or_else(default)
}

// ---------------------------------------------------------------------------
// Reading schemas and databases, with OVS's error messages.

/// `strerror` of an I/O error (Rust's text without " (os error N)").
fn strerror(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A log error as ovsdb-tool words it (`tag: details`).
fn log_error(e: LogError) -> String {
    match e {
        LogError::Io { path, op, source } if op == "read" => {
            format!("I/O error: {path}: read error ({})", strerror(&source))
        }
        LogError::Io { path, op, source }
            if op.starts_with("open of lock file") || op.starts_with("lock of lock file") =>
        {
            format!("I/O error: {path}: failed to lock lockfile ({})", strerror(&source))
        }
        LogError::Io { path, op, source } => format!("I/O error: {path}: {op} failed ({})", strerror(&source)),
        LogError::Locked { path, .. } | LogError::LockedBySelf { path, .. } => {
            format!("I/O error: {path}: failed to lock lockfile (Resource temporarily unavailable)")
        }
        LogError::BadFormat { path } => format!("ovsdb error: {path}: unexpected file format"),
        LogError::UnknownMagic { path, .. } => format!("ovsdb error: {path}: cannot identify file type"),
        LogError::Clustered { path } => format!("ovsdb error: {path}: clustered databases are not supported"),
        other => other.to_string(),
    }
}

/// An `OvsdbError` as `ovsdb_error_to_string` prints it.
fn ovsdb_error(e: &OvsdbError) -> String {
    match &e.syntax {
        Some(s) => format!("syntax \"{s}\": {}: {}", e.tag, e.details),
        None => format!("{}: {}", e.tag, e.details),
    }
}

/// A schema file: its JSON as read and the parsed schema.
struct SchemaFile {
    json: Value,
    schema: DatabaseSchema,
}

/// `ovsdb_schema_from_file`.
fn read_schema_file(path: &str) -> Res<SchemaFile> {
    let cant = |why: String| format!("failed to read schema: \"{path}\" could not be read as JSON ({why})");
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
            return fail(cant(format!("error reading JSON stream: {}", strerror(&e))));
        }
        Err(e) => return fail(cant(format!("error opening \"{path}\": {}", strerror(&e)))),
    };
    let json: Value = match serde_json::from_slice(&text) {
        Ok(v) => v,
        Err(e) => return fail(cant(e.to_string())),
    };
    match DatabaseSchema::from_json(&json) {
        Ok(schema) => Ok(SchemaFile { json, schema }),
        Err(e) => {
            let syntax = e.syntax.clone().unwrap_or_else(|| ovs_json(&json));
            fail(format!("syntax \"{syntax}\": {}: failed to parse \"{path}\" as ovsdb schema: {}", e.tag, e.details))
        }
    }
}

/// The schema to write into a database file: ours, but without a version
/// when the schema gave none (as OVS, which keeps it empty).
fn schema_record(sf: &SchemaFile) -> Value {
    schema_json_as_given(&sf.schema, &sf.json)
}

fn schema_json_as_given(schema: &DatabaseSchema, given: &Value) -> Value {
    let mut v = schema.to_json();
    if given.get("version").is_none()
        && let Some(o) = v.as_object_mut()
    {
        o.remove("version");
    }
    v
}

/// A string member of a schema's JSON ("" when absent), as OVS prints
/// `schema->version` and `schema->cksum`.
fn schema_str<'a>(json: &'a Value, key: &str) -> &'a str {
    json.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Opens a database file read-only and returns the log and its records,
/// failing like ovsdb-tool on an empty file or a bad record when
/// `whole` (otherwise only the schema record must be good).
fn open_records(path: &str, mode: OpenMode, whole: bool) -> Res<(Log, Vec<Value>)> {
    let (log, records) = Log::open(path, mode).map_err(|e| Exit::Fail(log_error(e)))?;
    if let Some(err) = log.read_error()
        && (whole || records.is_empty())
    {
        return fail(read_error_text(err));
    }
    if records.is_empty() {
        return fail(format!("ovsdb error: {path}: cannot identify file type"));
    }
    Ok((log, records))
}

fn read_error_text(err: &oxvs_ovsdb::log::ReadError) -> String {
    let tag = match err.kind {
        ReadErrorKind::Truncated | ReadErrorKind::Io => "I/O error",
        _ => "syntax error",
    };
    format!("{tag}: {}", err.message)
}

/// The schema record of a database file, parsed (`read_standalone_schema`).
fn read_db_schema(path: &str) -> Res<(Value, DatabaseSchema)> {
    let (_log, mut records) = open_records(path, OpenMode::ReadOnly, false)?;
    let json = records.swap_remove(0);
    let schema = parse_db_schema(&json)?;
    Ok((json, schema))
}

fn parse_db_schema(json: &Value) -> Res<DatabaseSchema> {
    DatabaseSchema::from_json(json).map_err(|e| {
        let syntax = e.syntax.clone().unwrap_or_else(|| ovs_json(json));
        Exit::Fail(format!("syntax \"{syntax}\": {}: {}", e.tag, e.details))
    })
}

// ---------------------------------------------------------------------------
// Commands.

fn do_create(_: &Opts, args: &[String]) -> Res {
    let db = arg_or(args, 0, default_db);
    let sf = read_schema_file(&arg_or(args, 1, default_schema))?;
    let (mut log, _) = Log::open(&db, OpenMode::CreateExcl).map_err(|e| Exit::Fail(log_error(e)))?;
    let written = log.append(&schema_record(&sf)).and_then(|()| log.commit());
    if let Err(e) = written {
        drop(log);
        let _ = fs::remove_file(&db);
        return fail(log_error(e));
    }
    Ok(())
}

fn do_compact(_: &Opts, args: &[String]) -> Res {
    let db = arg_or(args, 0, default_db);
    compact_or_convert(&db, args.get(1).map(String::as_str), None, &format!("compacted by ovsdb-tool {OVS_VERSION}"))
}

fn do_convert(_: &Opts, args: &[String]) -> Res {
    let db = arg_or(args, 0, default_db);
    let sf = read_schema_file(&arg_or(args, 1, default_schema))?;
    compact_or_convert(
        &db,
        args.get(2).map(String::as_str),
        Some(&sf),
        &format!("converted by ovsdb-tool {OVS_VERSION}"),
    )
}

/// Rewrites `src` as its schema and one record holding every row (in place,
/// or into `dst`), converting to `new_schema` if given.
fn compact_or_convert(src: &str, dst: Option<&str>, new_schema: Option<&SchemaFile>, comment: &str) -> Res {
    // In place: hold the source's lock throughout; `replace` writes a
    // temporary file beside it, syncs it and renames it over the source.
    let mode = if dst.is_none() { OpenMode::ReadWrite } else { OpenMode::ReadOnly };
    let (mut log, records) = match open_records(src, mode, true) {
        Err(Exit::Fail(m)) if dst.is_none() && m.contains("failed to lock lockfile") => {
            return fail(m.trim_start_matches("I/O error: ").to_string());
        }
        r => r?,
    };
    parse_db_schema(&records[0])?;
    let db = match new_schema {
        None => replay(Path::new(src), &records).map_err(Exit::Fail)?.0,
        Some(sf) => replay_converting(Arc::new(sf.schema.clone()), &records[1..])?,
    };
    let schema_json = match new_schema {
        Some(sf) => schema_record(sf),
        None => schema_json_as_given(&db.schema, &records[0]),
    };
    let mut snapshot = db.to_snapshot_json();
    if let Some(o) = snapshot.as_object_mut() {
        annotate_txn(o, Some(comment), false, now_ms());
    }
    let out = [schema_json, snapshot];
    match dst {
        None => log.replace(&out).map_err(|e| Exit::Fail(log_error(e))),
        Some(dst) => {
            drop(log);
            write_new_db(dst, &out)
        }
    }
}

/// Writes `records` as the whole of database file `path`, which may exist
/// (it is then replaced atomically) or not. Takes the file's lock.
fn write_new_db(path: &str, records: &[Value]) -> Res {
    let lock_err = |e: LogError| {
        let m = log_error(e);
        Exit::Fail(if m.contains("failed to lock lockfile") {
            m.trim_start_matches("I/O error: ").to_string()
        } else {
            m
        })
    };
    let exists = fs::metadata(path).is_ok();
    if exists {
        let (mut log, _) = Log::open(path, OpenMode::ReadWrite).map_err(lock_err)?;
        return log.replace(records).map_err(|e| Exit::Fail(log_error(e)));
    }
    let (mut log, _) = Log::open(path, OpenMode::CreateExcl).map_err(lock_err)?;
    let mut written = Ok(());
    for r in records {
        written = log.append(r);
        if written.is_err() {
            break;
        }
    }
    if let Err(e) = written.and_then(|()| log.commit()) {
        drop(log);
        let _ = fs::remove_file(path);
        return fail(log_error(e));
    }
    Ok(())
}

/// Replays transaction records into a database of `schema`, ignoring tables
/// and columns the schema does not have (OVS's "converting" read): values
/// are read with their new columns' types.
fn replay_converting(schema: Arc<DatabaseSchema>, records: &[Value]) -> Res<Database> {
    let mut db = Database::new(schema.clone());
    for r in records {
        let Some(obj) = r.as_object() else { return fail("syntax error: object expected") };
        let mut keep = Map::new();
        for (tname, tv) in obj {
            if tname == "_is_diff" {
                keep.insert(tname.clone(), tv.clone());
                continue;
            }
            let Some(ts) = schema.tables.get(tname) else { continue };
            let Some(rows) = tv.as_object() else {
                return fail(format!("syntax \"{}\": syntax error: object expected", ovs_json(tv)));
            };
            let rows: Map<String, Value> = rows
                .iter()
                .map(|(u, row)| {
                    let row = match row.as_object() {
                        Some(cols) => {
                            let mut kept = Map::new();
                            for (c, v) in cols {
                                let Some(col) = ts.columns.get(c) else { continue };
                                // Values (diffs too) must be valid for the
                                // new column's type, as OVS reads them.
                                if let Err(e) = datum_from_json(&col.type_, v, None) {
                                    let syntax = e.syntax.clone().unwrap_or_else(|| ovs_json(v));
                                    return Err(Exit::Fail(format!("syntax \"{syntax}\": {}: {}", e.tag, e.details)));
                                }
                                kept.insert(c.clone(), v.clone());
                            }
                            Value::Object(kept)
                        }
                        None => row.clone(),
                    };
                    Ok((u.clone(), row))
                })
                .collect::<Res<_>>()?;
            keep.insert(tname.clone(), Value::Object(rows));
        }
        db.apply_log_record(&Value::Object(keep)).map_err(|e| Exit::Fail(ovsdb_error(&e)))?;
    }
    Ok(db)
}

fn do_needs_conversion(_: &Opts, args: &[String]) -> Res {
    let (_, db_schema) = read_db_schema(&arg_or(args, 0, default_db))?;
    let sf = read_schema_file(&arg_or(args, 1, default_schema))?;
    println!("{}", if db_schema.to_json() == sf.schema.to_json() { "no" } else { "yes" });
    Ok(())
}

fn do_db_name(_: &Opts, args: &[String]) -> Res {
    let (_, s) = read_db_schema(&arg_or(args, 0, default_db))?;
    println!("{}", s.name);
    Ok(())
}

fn do_db_version(_: &Opts, args: &[String]) -> Res {
    let (json, _) = read_db_schema(&arg_or(args, 0, default_db))?;
    println!("{}", schema_str(&json, "version"));
    Ok(())
}

fn do_db_cksum(_: &Opts, args: &[String]) -> Res {
    let (json, _) = read_db_schema(&arg_or(args, 0, default_db))?;
    println!("{}", schema_str(&json, "cksum"));
    Ok(())
}

fn do_schema_name(_: &Opts, args: &[String]) -> Res {
    println!("{}", read_schema_file(&arg_or(args, 0, default_schema))?.schema.name);
    Ok(())
}

fn do_schema_version(_: &Opts, args: &[String]) -> Res {
    println!("{}", schema_str(&read_schema_file(&arg_or(args, 0, default_schema))?.json, "version"));
    Ok(())
}

fn do_schema_cksum(_: &Opts, args: &[String]) -> Res {
    println!("{}", schema_str(&read_schema_file(&arg_or(args, 0, default_schema))?.json, "cksum"));
    Ok(())
}

/// Whether `path` is a clustered database (Err for files that are neither).
fn is_clustered(path: &str) -> Res<bool> {
    match Log::open(path, OpenMode::ReadOnly) {
        Ok((_, records)) if records.is_empty() => fail(format!("ovsdb error: {path}: cannot identify file type")),
        Ok(_) => Ok(false),
        Err(LogError::Clustered { .. }) => Ok(true),
        Err(e) => fail(log_error(e)),
    }
}

fn do_db_is_clustered(_: &Opts, args: &[String]) -> Res {
    if is_clustered(&args[0])? { Ok(()) } else { Err(Exit::Status(2)) }
}

fn do_db_is_standalone(_: &Opts, args: &[String]) -> Res {
    if is_clustered(&args[0])? { Err(Exit::Status(2)) } else { Ok(()) }
}

fn do_cluster_metadata(_: &Opts, args: &[String]) -> Res {
    if is_clustered(&args[0])? {
        fail(format!("ovsdb error: {}: clustered databases are not supported", args[0]))
    } else {
        fail(format!("{}: not a clustered database", args[0]))
    }
}

fn do_clustered_only(_: &Opts, _: &[String]) -> Res {
    fail("clustered databases are not supported")
}

fn parse_version(s: &str) -> Res<(u32, u32, u32)> {
    let bad = || Exit::Fail(format!("{s}: not an OVSDB version number in format x.y.z"));
    let parts: Vec<&str> = s.split('.').collect();
    let [x, y, z] = parts[..] else { return Err(bad()) };
    let num = |p: &str| -> Res<u32> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        p.parse().map_err(|_| bad())
    };
    Ok((num(x)?, num(y)?, num(z)?))
}

fn do_compare_versions(_: &Opts, args: &[String]) -> Res {
    let a = parse_version(&args[0])?;
    let b = parse_version(&args[2])?;
    let c = a.cmp(&b);
    let result = match args[1].as_str() {
        "<" => c.is_lt(),
        "<=" => c.is_le(),
        "==" => c.is_eq(),
        ">=" => c.is_ge(),
        ">" => c.is_gt(),
        "!=" => c.is_ne(),
        op => return fail(format!("{op}: not a relational operator")),
    };
    if result { Ok(()) } else { Err(Exit::Status(2)) }
}

// ---- query and transact ---------------------------------------------------

fn do_query(_: &Opts, args: &[String]) -> Res {
    transact(args, false)
}

fn do_transact(_: &Opts, args: &[String]) -> Res {
    transact(args, true)
}

/// Parses a transaction given on the command line; like OVS's parser, the
/// top level must be an array or an object.
fn parse_txn(s: &str) -> Res<Value> {
    match serde_json::from_str::<Value>(s) {
        Ok(v @ (Value::Array(_) | Value::Object(_))) => Ok(v),
        Ok(_) => fail(format!("\"{s}\": syntax error at beginning of input")),
        Err(e) if s.trim().is_empty() => fail(format!("\"{s}\": empty input stream ({e})")),
        Err(e) => fail(format!("\"{s}\": {e}")),
    }
}

fn transact(args: &[String], rw: bool) -> Res {
    let db_path = if args.len() >= 2 { args[0].clone() } else { default_db() };
    let txn_text = args.last().unwrap();
    let mode = if rw { OpenMode::ReadWrite } else { OpenMode::ReadOnly };
    let (mut log, records) = open_records(&db_path, mode, true)?;
    parse_db_schema(&records[0])?;
    let (db, _) = replay(Path::new(&db_path), &records).map_err(Exit::Fail)?;
    let request = parse_txn(txn_text)?;

    let params = match request.as_array() {
        None => return print_result(&error_json("array expected", &request)),
        Some(a) if a.first().and_then(Value::as_str) != Some(db.schema.name.as_str()) => {
            return print_result(&error_json("database name expected as first parameter", &request));
        }
        Some(a) => &a[1..],
    };
    let no_locks = |_: &str| false;
    let ctx = TxnContext::new(&no_locks);
    let TxnOutcome::Done(done) = txn::execute(&db, params, &ctx) else {
        unreachable!("a transaction that cannot wait is never blocked")
    };
    let mut results: Vec<Value> = done.results.iter().map(OpResult::to_json).collect();
    if let Some(commit) = &done.commit {
        let mut record = commit_record(commit);
        if !record.is_empty() {
            if rw {
                annotate_txn(&mut record, done.comment.as_deref(), true, now_ms());
                let written = log.append(&Value::Object(record)).and_then(|()| log.commit());
                if let Err(e) = written {
                    results.push(io_error_json(&e));
                }
            } else {
                // What ovsdb-tool answers when a "query" would write: its
                // read-only file cannot be truncated to append.
                results.push(serde_json::json!({
                    "error": "I/O error",
                    "details": format!("{db_path}: cannot truncate to length {}", log.offset()),
                    "io-error": "Invalid argument",
                }));
            }
        }
    }
    print_result(&Value::Array(results))
}

fn error_json(details: &str, syntax: &Value) -> Value {
    serde_json::json!({"error": "syntax error", "details": details, "syntax": ovs_json(syntax)})
}

fn io_error_json(e: &LogError) -> Value {
    match e {
        LogError::Io { path, op, source } => serde_json::json!({
            "error": "I/O error",
            "details": format!("{path}: {op} failed"),
            "io-error": strerror(source),
        }),
        other => serde_json::json!({"error": "I/O error", "details": other.to_string()}),
    }
}

fn print_result(v: &Value) -> Res {
    println!("{}", ovs_json(v));
    Ok(())
}

/// A commit as OVS 3.1 writes it to a standalone log (before annotation):
/// inserted rows with their non-default persistent columns, modified rows
/// with the diffs of their changed persistent columns, deleted rows `null`.
fn commit_record(commit: &Commit) -> Map<String, Value> {
    let mut out = Map::new();
    for (tname, rows) in &commit.tables {
        let Some(ts) = commit.schema.tables.get(tname) else { continue };
        let mut t = Map::new();
        for (uuid, ch) in rows {
            let row = match (&ch.old, &ch.new) {
                (None, None) => continue,
                (_, None) => Value::Null,
                (old, Some(new)) => {
                    let mut cols = Map::new();
                    for c in ts.columns.values().filter(|c| !c.ephemeral) {
                        let Some(nd) = new.columns.get(&c.name) else { continue };
                        match old {
                            None if *nd != Datum::default_for(&c.type_) => {
                                cols.insert(c.name.clone(), nd.to_json());
                            }
                            Some(old) => {
                                let od =
                                    old.columns.get(&c.name).cloned().unwrap_or_else(|| Datum::default_for(&c.type_));
                                if od != *nd {
                                    cols.insert(c.name.clone(), datum_diff(&od, nd, &c.type_).to_json());
                                }
                            }
                            None => {}
                        }
                    }
                    if old.is_some() && cols.is_empty() {
                        continue;
                    }
                    Value::Object(cols)
                }
            };
            t.insert(uuid.to_string(), row);
        }
        if !t.is_empty() {
            out.insert(tname.clone(), Value::Object(t));
        }
    }
    out
}

/// OVS's `ovsdb_datum_diff`: for columns that may hold more than one
/// element, the elements only in one of `old` and `new` (and, for maps, the
/// new pairs of keys whose values changed); otherwise `new` itself.
fn datum_diff(old: &Datum, new: &Datum, t: &Type) -> Datum {
    if t.max <= 1 {
        return new.clone();
    }
    let is_map = t.value.is_some();
    let val = |d: &Datum, i: usize| d.values.as_ref().map(|v| v[i].clone());
    let mut keys = Vec::new();
    let mut vals = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.keys.len() || j < new.keys.len() {
        let ord = match (old.keys.get(i), new.keys.get(j)) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                keys.push(old.keys[i].clone());
                vals.push(val(old, i));
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                keys.push(new.keys[j].clone());
                vals.push(val(new, j));
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                if is_map && val(old, i) != val(new, j) {
                    keys.push(new.keys[j].clone());
                    vals.push(val(new, j));
                }
                i += 1;
                j += 1;
            }
        }
    }
    let values = if is_map { Some(vals.into_iter().map(|v| v.unwrap_or(Atom::Integer(0))).collect()) } else { None };
    Datum { keys, values }
}

// ---- show-log -------------------------------------------------------------

fn do_show_log(o: &Opts, args: &[String]) -> Res {
    let path = arg_or(args, 0, default_db);
    let (log, records) = Log::open(&path, OpenMode::ReadOnly).map_err(|e| Exit::Fail(log_error(e)))?;
    if records.is_empty() && log.read_error().is_none() {
        return fail(format!("ovsdb error: {path}: cannot identify file type"));
    }
    // The records again, with their members in file order.
    let ordered = ordered_records(&path, records.len());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut names: HashMap<String, String> = HashMap::new();
    let mut schema: Option<DatabaseSchema> = None;
    let mut buf = String::new();
    for (i, rec) in records.iter().enumerate() {
        buf.clear();
        let _ = write!(buf, "record {i}:");
        if i == 0 {
            let s = match DatabaseSchema::from_json(rec) {
                Ok(s) => s,
                Err(e) => {
                    let _ = out.write_all(buf.as_bytes());
                    let _ = out.flush();
                    let syntax = e.syntax.clone().unwrap_or_else(|| ovs_json(rec));
                    return fail(format!("syntax \"{syntax}\": {}: {}", e.tag, e.details));
                }
            };
            let _ = writeln!(
                buf,
                " \"{}\" schema, version=\"{}\", cksum=\"{}\"",
                s.name,
                schema_str(rec, "version"),
                schema_str(rec, "cksum")
            );
            schema = Some(s);
        } else {
            let oj = match ordered.as_ref().and_then(|v| v.get(i)) {
                Some(oj) => oj.clone(),
                None => OJ::from_value(rec),
            };
            print_change_record(&mut buf, &oj, schema.as_ref(), &mut names, o.more);
        }
        buf.push('\n');
        out.write_all(buf.as_bytes()).map_err(|_| Exit::Fail("write to stdout failed".into()))?;
    }
    out.flush().map_err(|_| Exit::Fail("write to stdout failed".into()))?;
    if let Some(err) = log.read_error() {
        return fail(read_error_text(err));
    }
    Ok(())
}

fn print_change_record(
    buf: &mut String,
    rec: &OJ,
    schema: Option<&DatabaseSchema>,
    names: &mut HashMap<String, String>,
    more: u32,
) {
    let OJ::Obj(members) = rec else { return };
    let members = shash_iter(members);
    let find = |k: &str| members.iter().find(|(n, _)| n.as_str() == k).map(|(_, v)| *v);
    if let Some(OJ::Num(n)) = find("_date")
        && let Some(mut t) = n.as_i64()
    {
        if t < i32::MAX as i64 {
            // Older versions of OVS wrote seconds.
            t = t.wrapping_mul(1000);
        }
        buf.push_str(&format_date_ms(t));
    }
    if let Some(OJ::Str(c)) = find("_comment") {
        let c = c.split('\0').next().unwrap_or("");
        let _ = write!(buf, " \"{c}\"");
    }
    if more == 0 {
        return;
    }
    let diff = matches!(find("_is_diff"), Some(OJ::Bool(true)));
    let mut first = true;
    for (table, rows) in &members {
        let OJ::Obj(rows) = rows else { continue };
        if table.starts_with('_') {
            continue;
        }
        if first {
            buf.push('\n');
            first = false;
        }
        let ts = schema.and_then(|s| s.tables.get(table.as_str()));
        for (row_uuid, columns) in shash_iter(rows) {
            let short = prefix_bytes(row_uuid, 8);
            let old_name = names.get(row_uuid.as_str()).cloned();
            let new_name = match columns {
                OJ::Obj(cols) => cols.iter().rev().find(|(n, _)| n == "name").map(|(_, v)| ovs_json(&v.to_value())),
                _ => None,
            };
            let _ = write!(buf, "  table {table}");
            match (&old_name, &new_name) {
                (None, Some(n)) => {
                    let _ = writeln!(buf, " insert row {n} ({short}):");
                }
                (None, None) => {
                    let _ = writeln!(buf, " insert row {short}:");
                }
                (Some(o), _) => {
                    let _ = writeln!(buf, " row {o} ({short}){}:", if diff { " diff" } else { "" });
                }
            }
            match columns {
                OJ::Obj(cols) => {
                    if more > 1 {
                        for (column, value) in shash_iter(cols) {
                            let value = value.to_value();
                            let col = ts.and_then(|t| t.column(column));
                            let shown = col
                                .and_then(|c| {
                                    datum_from_json(&c.type_, &value, None).ok().map(|d| datum_string(&d, &c.type_))
                                })
                                .unwrap_or_else(|| ovs_json(&value));
                            let _ = writeln!(buf, "    {column}={shown}");
                        }
                    }
                    match (new_name, &old_name) {
                        (Some(n), None) => {
                            names.insert(row_uuid.clone(), n);
                        }
                        (Some(n), Some(o)) if *o != n => {
                            names.insert(row_uuid.clone(), n);
                        }
                        (_, None) => {
                            names.insert(row_uuid.clone(), short.to_string());
                        }
                        _ => {}
                    }
                }
                OJ::Null => {
                    buf.push_str("    delete row\n");
                    names.remove(row_uuid.as_str());
                }
                _ => {}
            }
        }
    }
}

/// The first `n` bytes of `s` (as C's `%.8s`), cut back to a character
/// boundary.
fn prefix_bytes(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// ` YYYY-MM-DD HH:MM:SS.mmm` in UTC, as OVS's `xastrftime_msec`.
fn format_date_ms(ms: i64) -> String {
    // C semantics: seconds and milliseconds truncate toward zero; gmtime
    // takes the (possibly negative) seconds.
    let secs = ms / 1000;
    let msec = ms % 1000;
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    let (y, m, d) = oxvs_ovsdb::vlog::civil_from_days(days);
    format!(" {y}-{m:02}-{d:02} {:02}:{:02}:{:02}.{msec:03}", sod / 3600, sod / 60 % 60, sod % 60)
}

/// A datum as `ovsdb_datum_to_string` writes it.
fn datum_string(d: &Datum, t: &Type) -> String {
    let is_map = t.value.is_some();
    let bracket = t.max > 1 || d.is_empty();
    let mut s = String::new();
    if bracket {
        s.push(if is_map { '{' } else { '[' });
    }
    for (i, k) in d.keys.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        atom_string(&mut s, k);
        if let Some(v) = d.values.as_ref().and_then(|v| v.get(i))
            && is_map
        {
            s.push('=');
            atom_string(&mut s, v);
        }
    }
    if bracket {
        s.push(if is_map { '}' } else { ']' });
    }
    s
}

fn atom_string(out: &mut String, a: &Atom) {
    out.push_str(&data_string::atom_to_string(a));
}

// ---------------------------------------------------------------------------
// JSON as OVS writes it (`json_to_string(..., JSSF_SORT)`): compact, members
// sorted, reals with 15 significant digits.

fn ovs_json(v: &Value) -> String {
    let mut s = String::new();
    write_json(&mut s, v);
    s
}

fn write_json(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else {
                out.push_str(&data_string::real_to_string(n.as_f64().unwrap_or(0.0)));
            }
        }
        Value::String(s) => json_string(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, e);
            }
            out.push(']');
        }
        Value::Object(o) => {
            // serde_json's map is ordered by key bytes: strcmp order.
            out.push('{');
            for (i, (k, e)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(out, k);
                out.push(':');
                write_json(out, e);
            }
            out.push('}');
        }
    }
}

fn json_string(out: &mut String, s: &str) {
    out.push_str(&data_string::json_quote(s));
}

// ---------------------------------------------------------------------------
// JSON with its members in file order, and the order OVS iterates them in.

/// A JSON value whose objects keep their members in the order read.
#[derive(Clone, Debug)]
enum OJ {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    Arr(Vec<OJ>),
    Obj(Vec<(String, OJ)>),
}

impl OJ {
    fn to_value(&self) -> Value {
        match self {
            OJ::Null => Value::Null,
            OJ::Bool(b) => Value::Bool(*b),
            OJ::Num(n) => Value::Number(n.clone()),
            OJ::Str(s) => Value::String(s.clone()),
            OJ::Arr(a) => Value::Array(a.iter().map(OJ::to_value).collect()),
            OJ::Obj(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_value())).collect()),
        }
    }

    /// Without the file order (members sorted): a fallback only.
    fn from_value(v: &Value) -> OJ {
        match v {
            Value::Null => OJ::Null,
            Value::Bool(b) => OJ::Bool(*b),
            Value::Number(n) => OJ::Num(n.clone()),
            Value::String(s) => OJ::Str(s.clone()),
            Value::Array(a) => OJ::Arr(a.iter().map(OJ::from_value).collect()),
            Value::Object(o) => OJ::Obj(o.iter().map(|(k, v)| (k.clone(), OJ::from_value(v))).collect()),
        }
    }
}

impl<'de> Deserialize<'de> for OJ {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OJ, D::Error> {
        d.deserialize_any(OJVisitor)
    }
}

struct OJVisitor;

impl<'de> Visitor<'de> for OJVisitor {
    type Value = OJ;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E>(self) -> Result<OJ, E> {
        Ok(OJ::Null)
    }
    fn visit_none<E>(self) -> Result<OJ, E> {
        Ok(OJ::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<OJ, E> {
        Ok(OJ::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<OJ, E> {
        Ok(OJ::Num(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<OJ, E> {
        Ok(OJ::Num(n.into()))
    }
    fn visit_f64<E>(self, n: f64) -> Result<OJ, E> {
        // OVS's parser makes a number an integer whenever its value is one
        // that fits ("2.0", "1.5e12"), whatever its notation.
        if n.fract() == 0.0 && n.abs() < 9.2e18 {
            return Ok(OJ::Num((n as i64).into()));
        }
        Ok(serde_json::Number::from_f64(n).map_or(OJ::Null, OJ::Num))
    }
    fn visit_str<E>(self, s: &str) -> Result<OJ, E> {
        Ok(OJ::Str(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<OJ, E> {
        Ok(OJ::Str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OJ, A::Error> {
        let mut v = Vec::new();
        while let Some(e) = seq.next_element()? {
            v.push(e);
        }
        Ok(OJ::Arr(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OJ, A::Error> {
        let mut v: Vec<(String, OJ)> = Vec::new();
        while let Some((k, e)) = map.next_entry::<String, OJ>()? {
            // A repeated name replaces the value but keeps its place.
            match v.iter_mut().find(|(n, _)| *n == k) {
                Some(slot) => slot.1 = e,
                None => v.push((k, e)),
            }
        }
        Ok(OJ::Obj(v))
    }
}

/// The first `n` records of the log at `path`, members in file order. The
/// records were already checked by `Log::open`; None if the file changed.
fn ordered_records(path: &str, n: usize) -> Option<Vec<OJ>> {
    let bytes = fs::read(path).ok()?;
    let mut out = Vec::with_capacity(n);
    let mut pos = 0;
    while out.len() < n {
        let nl = pos + bytes.get(pos..)?.iter().position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&bytes[pos..nl]).ok()?;
        let len: usize = header.split(' ').nth(2)?.parse().ok()?;
        let body = bytes.get(nl + 1..nl + 1 + len)?;
        out.push(serde_json::from_slice::<OJ>(body).ok()?);
        pos = nl + 1 + len;
    }
    Some(out)
}

/// The members of a JSON object in the order OVS's `SHASH_FOR_EACH` visits
/// them after its parser inserted them in file order.
fn shash_iter(members: &[(String, OJ)]) -> Vec<(&String, &OJ)> {
    let order = crate::ovs_hmap::shash_order(members.iter().map(|(k, _)| k.as_str()));
    order.into_iter().map(|i| (&members[i].0, &members[i].1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(format_date_ms(0), " 1970-01-01 00:00:00.000");
        assert_eq!(format_date_ms(1_795_509_191_968), " 2026-11-24 08:33:11.968");
        assert_eq!(format_date_ms(951_782_400_123), " 2000-02-29 00:00:00.123");
    }
}
