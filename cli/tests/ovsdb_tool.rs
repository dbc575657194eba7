//! `oxvs ovsdb-tool` against Open vSwitch's `ovsdb-tool` (Debian's
//! openvswitch-common, installed by `cargo xtask setup`): the same commands
//! on equivalent files give the same output and exit status (UUIDs and times
//! aside, which necessarily differ), each tool reads what the other wrote,
//! and bad input fails with one line on stderr and status 1.
//!
//! Every command runs with `OVS_DBDIR` set to the test's directory, so the
//! default database is never the system's.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
};

use serde_json::{Map, Value, json};

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
const OXVS: &str = env!("CARGO_BIN_EXE_oxvs");

fn need_ovs() {
    let ok = Command::new("ovsdb-tool").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok && Path::new(SCHEMA).exists(), "ovsdb-tool or {SCHEMA} is missing: run `cargo xtask setup`");
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("oxvs-ovsdb-tool-{}-{tag}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A subdirectory (created).
    fn sub(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Tool {
    Real,
    Ours,
}

/// Runs a tool in `dir` (the default database directory too).
fn run(tool: Tool, dir: &Path, args: &[&str]) -> Output {
    let mut c = match tool {
        Tool::Real => Command::new("ovsdb-tool"),
        Tool::Ours => {
            let mut c = Command::new(OXVS);
            c.arg("ovsdb-tool");
            c
        }
    };
    c.args(args).current_dir(dir).env("OVS_DBDIR", dir).env_remove("OVS_SYSCONFDIR").stdin(Stdio::null());
    c.output().unwrap_or_else(|e| panic!("running {tool:?} {args:?}: {e}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(tool: Tool, dir: &Path, args: &[&str]) -> String {
    let o = run(tool, dir, args);
    assert!(o.status.success(), "{tool:?} {args:?} failed: {}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

/// Stdout and status with UUIDs numbered by first appearance and times
/// replaced, for comparing runs on files with different UUIDs.
fn normalized(o: &Output) -> (String, Option<i32>) {
    (normalize(&stdout(o)), o.status.code())
}

fn is_uuid_at(b: &[u8], i: usize) -> bool {
    b.len() >= i + 36
        && b[i..i + 36].iter().enumerate().all(|(k, c)| match k {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        })
}

fn is_date_at(b: &[u8], i: usize) -> bool {
    // YYYY-MM-DD HH:MM:SS.mmm
    const PAT: &[u8] = b"dddd-dd-dd dd:dd:dd.ddd";
    b.len() >= i + PAT.len()
        && PAT.iter().zip(&b[i..]).all(|(p, c)| if *p == b'd' { c.is_ascii_digit() } else { p == c })
}

fn normalize(s: &str) -> String {
    let b = s.as_bytes();
    let mut seen: Vec<String> = Vec::new();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if is_uuid_at(b, i) {
            let u = &s[i..i + 36];
            let n = seen.iter().position(|x| x == u).unwrap_or_else(|| {
                seen.push(u.to_string());
                seen.len() - 1
            });
            out.push_str(&format!("<uuid{n}>"));
            i += 36;
        } else if is_date_at(b, i) {
            out.push_str("<date>");
            i += 23;
        } else {
            let c = s[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The records of a database file, `_date` removed.
fn records(path: &Path) -> Vec<Value> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let nl = i + bytes[i..].iter().position(|&c| c == b'\n').unwrap();
        let header = std::str::from_utf8(&bytes[i..nl]).unwrap();
        assert!(header.starts_with("OVSDB JSON "), "{header}");
        let len: usize = header.split(' ').nth(2).unwrap().parse().unwrap();
        let mut v: Value = serde_json::from_slice(&bytes[nl + 1..nl + 1 + len]).unwrap();
        if let Some(o) = v.as_object_mut() {
            o.remove("_date");
        }
        out.push(v);
        i = nl + 1 + len;
    }
    out
}

/// The vswitch schema changed as a schema upgrade might: a new version and
/// no checksum, a table and a column gone, a column added, a column whose
/// type widens (string to set of strings).
fn modified_schema() -> Value {
    let mut s: Value = serde_json::from_str(&fs::read_to_string(SCHEMA).unwrap()).unwrap();
    s["version"] = json!("8.4.0");
    s.as_object_mut().unwrap().remove("cksum");
    let tables = s["tables"].as_object_mut().unwrap();
    tables.remove("Flow_Sample_Collector_Set");
    tables.insert("NewTable".into(), json!({"columns": {"x": {"type": "string"}}, "isRoot": true}));
    let qos = tables["QoS"]["columns"].as_object_mut().unwrap();
    qos.remove("other_config");
    qos.insert("type".into(), json!({"type": {"key": "string", "min": 0, "max": "unlimited"}}));
    qos.insert("newcol".into(), json!({"type": "integer"}));
    s
}

/// Runs the same command with both tools, each in its own directory on its
/// own copy of the files, and checks they agree.
fn both(real: &Path, ours: &Path, args: &[&str]) -> String {
    let r = run(Tool::Real, real, args);
    let o = run(Tool::Ours, ours, args);
    assert_eq!(normalized(&o), normalized(&r), "{args:?}\nours stderr: {}\nreal stderr: {}", stderr(&o), stderr(&r));
    stdout(&o)
}

/// Both tools on the very same file: byte for byte the same.
fn same_file(dir: &Path, args: &[&str]) -> String {
    let r = run(Tool::Real, dir, args);
    let o = run(Tool::Ours, dir, args);
    assert_eq!(stdout(&o), stdout(&r), "{args:?}\nours stderr: {}\nreal stderr: {}", stderr(&o), stderr(&r));
    assert_eq!(o.status.code(), r.status.code(), "{args:?}");
    stdout(&o)
}

const SETUP: &str = r#"["Open_vSwitch",
  {"op":"insert","table":"Open_vSwitch","row":{"bridges":["named-uuid","br"],"external_ids":["map",[["a","b"],["c","d"]]]}},
  {"op":"insert","table":"Bridge","uuid-name":"br","row":{"name":"br0","ports":["named-uuid","p"],"datapath_type":"netdev"}},
  {"op":"insert","table":"Port","uuid-name":"p","row":{"name":"p0","interfaces":["named-uuid","i"],"tag":5}},
  {"op":"insert","table":"Interface","uuid-name":"i","row":{"name":"i0","type":"internal","mtu_request":1500}},
  {"op":"insert","table":"QoS","row":{"type":"linux-htb","other_config":["map",[["max-rate","1000000"]]]}},
  {"op":"comment","comment":"setup"}]"#;

const TXNS: &[&str] = &[
    // Modifications (written as diffs), a mutation of a map, a set growing.
    r#"["Open_vSwitch",
      {"op":"update","table":"Bridge","where":[["name","==","br0"]],"row":{"datapath_type":"system","other_config":["map",[["x","y"]]]}},
      {"op":"mutate","table":"Open_vSwitch","where":[],"mutations":[["external_ids","insert",["map",[["e","f"]]]],["external_ids","delete",["set",["a"]]]]},
      {"op":"update","table":"Port","where":[],"row":{"trunks":["set",[1,2,3]],"tag":["set",[]]}}]"#,
    r#"["Open_vSwitch",{"op":"insert","table":"QoS","row":{"type":"x"}},{"op":"comment","comment":"second qos"}]"#,
    r#"["Open_vSwitch",{"op":"delete","table":"QoS","where":[["type","==","x"]]}]"#,
    r#"["Open_vSwitch",{"op":"update","table":"Interface","where":[],"row":{"mtu_request":9000,"options":["map",[["k","v"],["remote_ip","1.2.3.4"]]]}}]"#,
    // Nothing to write: a read, a failed operation, an orphan that is
    // garbage-collected, a broken reference, an unknown table.
    r#"["Open_vSwitch",{"op":"select","table":"Bridge","where":[],"columns":["name"]}]"#,
    r#"["Open_vSwitch",{"op":"insert","table":"QoS","row":{"type":"y"}},{"op":"abort"}]"#,
    r#"["Open_vSwitch",{"op":"insert","table":"Bridge","row":{"name":"orphan"}}]"#,
    r#"["Open_vSwitch",{"op":"insert","table":"Bridge","row":{"name":"br0"},"uuid-name":"b2"},{"op":"mutate","table":"Open_vSwitch","where":[],"mutations":[["bridges","insert",["named-uuid","b2"]]]}]"#,
    r#"["Open_vSwitch",{"op":"select","table":"Nope","where":[]}]"#,
    r#"["Open_vSwitch",{"op":"assert","lock":"x"}]"#,
    r#"["Open_vSwitch",{"op":"wait","table":"Bridge","where":[],"columns":["name"],"until":"==","rows":[],"timeout":0}]"#,
    // Not transactions for this database.
    r#"{"op":"select"}"#,
    r#"["Nope",{"op":"select","table":"Bridge","where":[]}]"#,
    r#"[]"#,
];

const QUERIES: &[&str] = &[
    r#"["Open_vSwitch",{"op":"select","table":"Bridge","where":[],"columns":["_uuid","name","datapath_type","other_config","ports"]}]"#,
    r#"["Open_vSwitch",{"op":"select","table":"Port","where":[]}]"#,
    r#"["Open_vSwitch",{"op":"select","table":"Interface","where":[["name","==","i0"]],"columns":["mtu_request","options","type"]}]"#,
    r#"["Open_vSwitch",{"op":"select","table":"Open_vSwitch","where":[],"columns":["external_ids","bridges"]},{"op":"select","table":"QoS","where":[],"columns":["type","other_config"]}]"#,
    // A query that would write: OVS answers with an I/O error.
    r#"["Open_vSwitch",{"op":"insert","table":"QoS","row":{"type":"z"}}]"#,
];

#[test]
fn sequence_matches_real_tool() {
    need_ovs();
    let t = TempDir::new("seq");
    let (real, ours) = (t.sub("real"), t.sub("ours"));

    // create: the same schema record.
    both(&real, &ours, &["create", "conf.db", SCHEMA]);
    assert_eq!(records(&ours.join("conf.db")), records(&real.join("conf.db")));
    // The default database ($OVS_DBDIR/conf.db) exists now: create refuses.
    let r = run(Tool::Real, &real, &["create"]);
    let o = run(Tool::Ours, &ours, &["create"]);
    assert_eq!((o.status.code(), r.status.code()), (Some(1), Some(1)));
    assert_eq!(
        stderr(&o).replace("oxvs ovsdb-tool:", "ovsdb-tool:"),
        stderr(&r).replace(real.to_str().unwrap(), ours.to_str().unwrap())
    );

    // transact, then more transactions and queries, each on its own file.
    both(&real, &ours, &["transact", "conf.db", SETUP]);
    for txn in TXNS {
        both(&real, &ours, &["transact", "conf.db", txn]);
    }
    for q in QUERIES {
        both(&real, &ours, &["query", "conf.db", q]);
    }
    // The default database, and the records each tool wrote, in outline.
    both(&real, &ours, &["query", QUERIES[0]]);
    both(&real, &ours, &["show-log", "conf.db"]);
    let records_real = records(&real.join("conf.db"));
    let records_ours = records(&ours.join("conf.db"));
    assert_eq!(records_ours.len(), records_real.len());
    for (o, r) in records_ours.iter().zip(&records_real) {
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(o), keys(r), "ours {o}\nreal {r}");
    }

    // show-log at every verbosity, db-*: byte for byte on each file.
    for dir in [&real, &ours] {
        for m in [&[][..], &["-m"], &["-mm"], &["-m", "--more"]] {
            let mut args = vec!["show-log"];
            args.extend_from_slice(m);
            args.push("conf.db");
            same_file(dir, &args);
        }
        let log = same_file(dir, &["show-log", "-mm", "conf.db"]);
        assert!(log.contains("record 0: \"Open_vSwitch\" schema, version=\"8.3.1\""), "{log}");
        assert!(log.contains(" diff:\n") && log.contains("    delete row\n"), "{log}");
        assert!(log.contains("\"setup\"\n  table "), "{log}");
        for cmd in ["db-name", "db-version", "db-cksum"] {
            same_file(dir, &[cmd, "conf.db"]);
            same_file(dir, &[cmd]);
        }
        same_file(dir, &["needs-conversion", "conf.db", SCHEMA]);
        for q in QUERIES {
            let r = run(Tool::Real, dir, &["query", "conf.db", q]);
            let o = run(Tool::Ours, dir, &["query", "conf.db", q]);
            // _version is not kept in files: it is new on every read.
            let strip = |o: &Output| normalize(&without_versions(&stdout(o)));
            assert_eq!(strip(&o), strip(&r), "{q}");
        }
    }
    assert_eq!(ok(Tool::Ours, &ours, &["db-name"]), "Open_vSwitch\n");

    // schema-*: byte for byte.
    let modified = t.path("modified.ovsschema");
    fs::write(&modified, modified_schema().to_string()).unwrap();
    for schema in [SCHEMA, modified.to_str().unwrap()] {
        for cmd in ["schema-name", "schema-version", "schema-cksum"] {
            same_file(&real, &[cmd, schema]);
        }
    }
    assert_eq!(ok(Tool::Ours, &ours, &["schema-cksum"]), ok(Tool::Real, &real, &["schema-cksum"]));

    // compact to a new file and in place: the same records.
    for dir in [&real, &ours] {
        fs::copy(dir.join("conf.db"), dir.join("copy.db")).unwrap();
    }
    both(&real, &ours, &["compact", "conf.db", "compacted.db"]);
    both(&real, &ours, &["compact", "copy.db"]);
    for f in ["compacted.db", "copy.db"] {
        let (o, r) = (records(&ours.join(f)), records(&real.join(f)));
        assert_eq!(o.len(), 2);
        assert_eq!(o[1]["_comment"], "compacted by ovsdb-tool 3.1.0");
        // Same rows, up to UUIDs (row uuids differ between the two files).
        assert_eq!(normalize_sorted(&o[1]), normalize_sorted(&r[1]), "{f}");
        assert_eq!(o[0], r[0]);
    }
    // Compacting over an existing file replaces it.
    both(&real, &ours, &["compact", "conf.db", "compacted.db"]);
    assert_eq!(records(&ours.join("compacted.db")).len(), 2);
    for dir in [&real, &ours] {
        same_file(dir, &["show-log", "-mm", "compacted.db"]);
        same_file(dir, &["show-log", "-mm", "copy.db"]);
    }

    // convert to the modified schema: rows kept, vanished columns and tables
    // dropped, values read with the new types.
    both(&real, &ours, &["needs-conversion", "conf.db", modified.to_str().unwrap()]);
    both(&real, &ours, &["convert", "conf.db", modified.to_str().unwrap(), "converted.db"]);
    let (o, r) = (records(&ours.join("converted.db")), records(&real.join("converted.db")));
    assert_eq!(o[0], r[0]);
    assert_eq!(o[1]["_comment"], "converted by ovsdb-tool 3.1.0");
    assert_eq!(normalize_sorted(&o[1]), normalize_sorted(&r[1]));
    let qos = o[1]["QoS"].as_object().unwrap().values().next().unwrap();
    assert_eq!(qos, &json!({"type": "linux-htb"}));
    for dir in [&real, &ours] {
        same_file(dir, &["show-log", "-mm", "converted.db"]);
        assert_eq!(same_file(dir, &["db-version", "converted.db"]), "8.4.0\n");
        assert_eq!(same_file(dir, &["db-cksum", "converted.db"]), "\n");
        same_file(dir, &["needs-conversion", "converted.db", modified.to_str().unwrap()]);
    }
    // In place, then back to the original schema.
    both(&real, &ours, &["convert", "copy.db", modified.to_str().unwrap()]);
    both(&real, &ours, &["convert", "copy.db", SCHEMA]);
    for dir in [&real, &ours] {
        same_file(dir, &["show-log", "-mm", "copy.db"]);
        same_file(dir, &["query", "copy.db", QUERIES[3]]);
    }
    // A value the new type cannot hold: both refuse, nothing is written.
    let mut narrow = modified_schema();
    narrow["tables"]["QoS"]["columns"]["type"] = json!({"type": "integer"});
    let narrow_path = t.path("narrow.ovsschema");
    fs::write(&narrow_path, narrow.to_string()).unwrap();
    for tool in [Tool::Real, Tool::Ours] {
        let dir = if tool == Tool::Real { &real } else { &ours };
        let o = run(tool, dir, &["convert", "conf.db", narrow_path.to_str().unwrap(), "narrow.db"]);
        assert_eq!(o.status.code(), Some(1), "{tool:?}");
        assert_eq!(stderr(&o).lines().count(), 1, "{tool:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("syntax \"\"linux-htb\"\": syntax error: expected integer"), "{}", stderr(&o));
        assert!(!dir.join("narrow.db").exists());
    }
}

/// `{"T": {uuid: row}}` with the uuids out of the way: the rows of each
/// table as sorted JSON texts, UUIDs inside them replaced.
fn normalize_sorted(v: &Value) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for (t, rows) in v.as_object().unwrap() {
        let Some(rows) = rows.as_object() else { continue };
        let mut rs: Vec<String> = rows.values().map(|r| normalize(&r.to_string())).collect();
        rs.sort();
        out.push((t.clone(), rs));
    }
    out
}

fn without_versions(s: &str) -> String {
    let v: Value = serde_json::from_str(s).unwrap();
    fn strip(v: &mut Value) {
        match v {
            Value::Object(o) => {
                o.remove("_version");
                o.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = v;
    strip(&mut v);
    v.to_string()
}

#[test]
fn each_reads_what_the_other_wrote() {
    need_ovs();
    let t = TempDir::new("cross");
    let dir = t.sub("d");
    for (writer, name) in [(Tool::Real, "real.db"), (Tool::Ours, "ours.db")] {
        ok(writer, &dir, &["create", name, SCHEMA]);
        ok(writer, &dir, &["transact", name, SETUP]);
        for txn in &TXNS[..4] {
            ok(writer, &dir, &["transact", name, txn]);
        }
    }
    for name in ["real.db", "ours.db"] {
        for q in QUERIES {
            let r = run(Tool::Real, &dir, &["query", name, q]);
            let o = run(Tool::Ours, &dir, &["query", name, q]);
            let strip = |o: &Output| normalize(&without_versions(&stdout(o)));
            assert_eq!(strip(&o), strip(&r), "{name} {q}");
        }
        same_file(&dir, &["show-log", "-mm", name]);
        // Each tool appends to the other's file and the other reads it.
        for writer in [Tool::Real, Tool::Ours] {
            let txn = format!(
                r#"["Open_vSwitch",{{"op":"mutate","table":"Open_vSwitch","where":[],"mutations":[["external_ids","insert",["map",[["{writer:?}","{name}"]]]]]}}]"#
            );
            ok(writer, &dir, &["transact", name, &txn]);
        }
        let q = r#"["Open_vSwitch",{"op":"select","table":"Open_vSwitch","where":[],"columns":["external_ids"]}]"#;
        let out = same_file(&dir, &["query", name, q]);
        assert!(
            out.contains(&format!(r#"["Ours","{name}"]"#)) && out.contains(&format!(r#"["Real","{name}"]"#)),
            "{out}"
        );
        same_file(&dir, &["show-log", "-mm", name]);
    }
    // Compacted by one, read by the other.
    ok(Tool::Ours, &dir, &["compact", "real.db"]);
    ok(Tool::Real, &dir, &["compact", "ours.db"]);
    for name in ["real.db", "ours.db"] {
        same_file(&dir, &["show-log", "-mm", name]);
        same_file(&dir, &["query", name, QUERIES[3]]);
    }
}

/// Records with members in many orders: `show-log -mm` lists tables, rows and
/// columns in the order the real tool's hash maps give.
#[test]
fn show_log_order_matches() {
    need_ovs();
    let t = TempDir::new("order");
    let dir = t.sub("d");
    let db = dir.join("order.db");
    ok(Tool::Real, &dir, &["create", "order.db", SCHEMA]);
    // A small deterministic generator.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut bytes = fs::read(&db).unwrap();
    let tables = ["Bridge", "Port", "QoS", "Interface", "Open_vSwitch", "Mirror", "Unknown"];
    let columns = ["name", "type", "other_config", "external_ids", "tag", "trunks", "mtu_request", "bogus", "ports"];
    let values = [r#""br""#, "5", r#"["set",[1,2]]"#, r#"["map",[["a","b"]]]"#, "2.5", "true", "null", r#""a b""#];
    for r in 0..12 {
        // Members written by hand, in a random order, to keep that order.
        let mut members: Vec<String> = Vec::new();
        for ti in 0..=rnd(tables.len() as u64 * 2) {
            let tname = format!(
                "{}{}",
                tables[(ti as usize) % tables.len()],
                if ti as usize >= tables.len() { "2" } else { "" }
            );
            let mut rows = Vec::new();
            for k in 0..rnd(20) {
                let uuid = format!("{:08x}-{:04x}-4000-8000-{:012x}", rnd(1 << 32), rnd(1 << 16), k);
                if rnd(10) == 0 {
                    rows.push(format!("\"{uuid}\":null"));
                    continue;
                }
                let mut cols = Vec::new();
                for _ in 0..rnd(12) {
                    let c = format!(
                        "{}{}",
                        columns[rnd(columns.len() as u64) as usize],
                        if rnd(3) == 0 { rnd(50).to_string() } else { String::new() }
                    );
                    if !cols.iter().any(|x: &String| x.starts_with(&format!("\"{c}\":"))) {
                        cols.push(format!("\"{c}\":{}", values[rnd(values.len() as u64) as usize]));
                    }
                }
                rows.push(format!("\"{uuid}\":{{{}}}", cols.join(",")));
            }
            members.push(format!("\"{tname}\":{{{}}}", rows.join(",")));
        }
        members.push(format!("\"_date\":{}", 1_700_000_000_000u64 + r * 1234));
        members.push(format!("\"_comment\":\"r{r}\""));
        if rnd(2) == 0 {
            members.push("\"_is_diff\":true".into());
        }
        for i in (1..members.len()).rev() {
            members.swap(i, rnd(i as u64 + 1) as usize);
        }
        let mut body = format!("{{{}}}", members.join(",")).into_bytes();
        body.push(b'\n');
        bytes.extend_from_slice(oxvs_ovsdb::log::record_header("JSON", &body).as_bytes());
        bytes.extend_from_slice(&body);
    }
    fs::write(&db, &bytes).unwrap();
    for m in ["-m", "-mm"] {
        let out = same_file(&dir, &["show-log", m, "order.db"]);
        assert!(out.lines().count() > 100, "{out}");
    }
}

#[test]
fn bad_input_fails_with_one_line() {
    need_ovs();
    let t = TempDir::new("bad");
    let (real, ours) = (t.sub("real"), t.sub("ours"));
    for dir in [&real, &ours] {
        ok(Tool::Real, dir, &["create", "conf.db", SCHEMA]);
        fs::write(dir.join("empty.db"), b"").unwrap();
        fs::write(dir.join("junk.db"), b"not a database\n").unwrap();
        fs::write(
            dir.join("bad.ovsschema"),
            br#"{"name": "x", "tables": {"T": {"columns": {"c": {"type": "nope"}}}}}"#,
        )
        .unwrap();
        fs::write(dir.join("notjson.ovsschema"), b"{\"name\": ").unwrap();
        // A torn last record.
        ok(Tool::Real, dir, &["transact", "conf.db", SETUP]);
        fs::copy(dir.join("conf.db"), dir.join("torn.db")).unwrap();
        let f = fs::OpenOptions::new().write(true).open(dir.join("torn.db")).unwrap();
        f.set_len(f.metadata().unwrap().len() - 10).unwrap();
    }
    // (args, must the message be the same as OVS's)
    let cases: &[(&[&str], bool)] = &[
        (&["db-name", "missing.db"], true),
        (&["show-log", "missing.db"], true),
        (&["query", "missing.db", "[]"], true),
        (&["transact", "missing.db", "[]"], true),
        (&["compact", "missing.db"], true),
        (&["schema-name", "missing.ovsschema"], true),
        (&["create", "new.db", "missing.ovsschema"], true),
        (&["create", "conf.db", SCHEMA], true),
        (&["create", "no/such/dir.db", SCHEMA], true),
        (&["query", "conf.db", "{bad"], false),
        (&["transact", "conf.db", "[\"Open_vSwitch\","], false),
        (&["transact", "conf.db", ""], false),
        (&["query", "conf.db", "1"], false),
        (&["db-version", "empty.db"], true),
        (&["show-log", "empty.db"], true),
        (&["db-name", "junk.db"], true),
        (&["query", "torn.db", "[]"], true),
        (&["compact", "torn.db", "out.db"], true),
        (&["schema-version", "bad.ovsschema"], false),
        (&["schema-cksum", "notjson.ovsschema"], false),
        (&["frobnicate"], true),
        (&[], true),
        (&["db-name", "a", "b"], true),
        (&["query"], true),
        (&["--bogus", "db-name"], true),
        (&["-x", "db-name"], true),
        (&["compare-versions", "1.2", "<", "1.2.3"], true),
        (&["compare-versions", "1.2.3", "<>", "1.2.3"], true),
        (&["db-cid", "conf.db"], true),
    ];
    for (args, same_text) in cases {
        let r = run(Tool::Real, &real, args);
        let o = run(Tool::Ours, &ours, args);
        assert_eq!(r.status.code(), Some(1), "real {args:?}: {}", stderr(&r));
        assert_eq!(o.status.code(), Some(1), "ours {args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("oxvs ovsdb-tool: "), "{args:?}: {err}");
        if *same_text {
            // OVS may log a warning line first; its last line is the error.
            let theirs = stderr(&r).lines().last().unwrap_or_default().to_string();
            assert_eq!(err.trim_end().replace("oxvs ovsdb-tool:", "ovsdb-tool:"), theirs, "{args:?}");
        }
        assert_eq!(stdout(&o), stdout(&r), "{args:?}");
    }
    // Nothing was created or damaged.
    assert!(!ours.join("new.db").exists() && !ours.join("out.db").exists());
    same_file(&ours, &["db-name", "conf.db"]);
}

#[test]
fn locks_like_ovs() {
    need_ovs();
    let t = TempDir::new("lock");
    let dir = t.sub("d");
    ok(Tool::Ours, &dir, &["create", "conf.db", SCHEMA]);
    // This process holds the database's lock, as a running server would.
    let (held, _) = oxvs_ovsdb::log::Log::open(dir.join("conf.db"), oxvs_ovsdb::log::OpenMode::ReadWrite).unwrap();
    let txn = r#"["Open_vSwitch",{"op":"insert","table":"QoS","row":{"type":"x"}}]"#;
    for args in [&["transact", "conf.db", txn][..], &["compact", "conf.db"], &["convert", "conf.db", SCHEMA]] {
        let r = run(Tool::Real, &dir, args);
        let o = run(Tool::Ours, &dir, args);
        assert_eq!((o.status.code(), r.status.code()), (Some(1), Some(1)), "{args:?}");
        let theirs = stderr(&r).lines().last().unwrap().to_string();
        assert!(theirs.contains("failed to lock lockfile"), "{theirs}");
        assert_eq!(stderr(&o).trim_end().replace("oxvs ovsdb-tool:", "ovsdb-tool:"), theirs, "{args:?}");
    }
    // Readers need no lock.
    same_file(&dir, &["query", "conf.db", QUERIES[1]]);
    same_file(&dir, &["show-log", "conf.db"]);
    drop(held);
    ok(Tool::Ours, &dir, &["transact", "conf.db", txn]);
    assert_eq!(records(&dir.join("conf.db")).len(), 2);
}

#[test]
fn link_name_and_help() {
    let t = TempDir::new("link");
    let link = t.path("ovsdb-tool");
    std::os::unix::fs::symlink(OXVS, &link).unwrap();
    let o = Command::new(&link).arg("db-name").arg(t.path("missing.db")).env("OVS_DBDIR", &t.0).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        format!("ovsdb-tool: I/O error: {}: open failed (No such file or directory)\n", t.path("missing.db").display())
    );
    let o = Command::new(&link).arg("--help").env("OVS_DBDIR", &t.0).output().unwrap();
    assert!(o.status.success());
    let help = stdout(&o);
    assert!(help.starts_with("ovsdb-tool: Open vSwitch database management utility\n"), "{help}");
    assert!(help.contains(&format!("The default DB is {}/conf.db.", t.0.display())), "{help}");
    let o = Command::new(OXVS).args(["ovsdb-tool", "list-commands"]).output().unwrap();
    assert!(stdout(&o).contains("  show-log                [db]\n"));
    // With no database given, the default one.
    let o = Command::new(OXVS).args(["ovsdb-tool", "db-name"]).env("OVS_DBDIR", &t.0).output().unwrap();
    assert_eq!(
        stderr(&o),
        format!("oxvs ovsdb-tool: I/O error: {}/conf.db: open failed (No such file or directory)\n", t.0.display())
    );
}

/// What `transact` writes is what OVS 3.1 writes: `_is_diff` records whose
/// modified columns are diffs.
#[test]
fn transact_writes_diffs() {
    let t = TempDir::new("diff");
    let dir = t.sub("d");
    let schema = json!({"name": "t", "version": "1.0.0", "tables": {"T": {"columns": {
        "s": {"type": {"key": "integer", "min": 0, "max": "unlimited"}},
        "m": {"type": {"key": "string", "value": "string", "min": 0, "max": "unlimited"}},
        "o": {"type": {"key": "string", "min": 0, "max": 1}},
        "e": {"type": "string", "ephemeral": true}}}}});
    fs::write(dir.join("t.ovsschema"), schema.to_string()).unwrap();
    ok(Tool::Ours, &dir, &["create", "t.db", "t.ovsschema"]);
    let out = ok(
        Tool::Ours,
        &dir,
        &[
            "transact",
            "t.db",
            r#"["t",{"op":"insert","table":"T","row":{"s":["set",[1,2]],"m":["map",[["a","1"],["b","2"]]],"o":"x","e":"eph"}}]"#,
        ],
    );
    let uuid = out.split('"').nth(5).unwrap().to_string();
    ok(
        Tool::Ours,
        &dir,
        &[
            "transact",
            "t.db",
            r#"["t",{"op":"update","table":"T","where":[],"row":{"s":["set",[2,3]],"m":["map",[["a","9"],["c","3"]]],"o":"y"}},{"op":"comment","comment":"c"}]"#,
        ],
    );
    // Only an ephemeral column changes: nothing to write.
    ok(Tool::Ours, &dir, &["transact", "t.db", r#"["t",{"op":"update","table":"T","where":[],"row":{"e":"other"}}]"#]);
    ok(Tool::Ours, &dir, &["transact", "t.db", r#"["t",{"op":"delete","table":"T","where":[]}]"#]);
    let recs = records(&dir.join("t.db"));
    assert_eq!(recs.len(), 4);
    let mut row = Map::new();
    row.insert(uuid.clone(), json!({"s": ["set", [1, 2]], "m": ["map", [["a", "1"], ["b", "2"]]], "o": "x"}));
    assert_eq!(recs[1], json!({"T": row, "_is_diff": true}));
    let mut row = Map::new();
    row.insert(
        uuid.clone(),
        json!({"s": ["set", [1, 3]], "m": ["map", [["a", "9"], ["b", "2"], ["c", "3"]]], "o": "y"}),
    );
    assert_eq!(recs[2], json!({"T": row, "_is_diff": true, "_comment": "c"}));
    let mut row = Map::new();
    row.insert(uuid, Value::Null);
    assert_eq!(recs[3], json!({"T": row, "_is_diff": true}));
}
