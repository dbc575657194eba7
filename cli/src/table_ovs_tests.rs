//! The table output and the string syntax checked byte for byte against
//! Open vSwitch itself: a real `ovsdb-server` (Debian's openvswitch-switch,
//! installed by `cargo xtask setup`) in a temporary directory, filled by real
//! `ovs-vsctl`; every table format, cell format and heading choice of
//! `ovs-vsctl list/find/get` is compared with what [`format_table`] and
//! `data_string` print for the same rows, and `ovs-vsctl set`'s parse errors
//! with `datum_from_string`'s.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use oxvs_ovsdb::{
    DatabaseSchema, Datum, Type,
    data_string::{atom_from_string, atom_to_string, datum_from_string, datum_to_string},
};
use serde_json::Value;

use super::*;

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

fn need_ovs() {
    for tool in ["ovs-vsctl", "ovsdb-server", "ovsdb-tool"] {
        let ok = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(ok, "{tool} is missing: run `cargo xtask setup` (it installs Debian's openvswitch packages)");
    }
    assert!(Path::new(SCHEMA).exists(), "{SCHEMA} is missing: run `cargo xtask setup`");
}

/// A real ovsdb-server on a fresh database in its own directory; killed (by
/// its pid) and the directory removed when dropped, also on panic.
struct RealServer {
    dir: PathBuf,
    child: Child,
}

impl RealServer {
    fn start() -> RealServer {
        need_ovs();
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "oxvs-table-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let db = dir.join("conf.db");
        let st = Command::new("ovsdb-tool").arg("create").arg(&db).arg(SCHEMA).status().unwrap();
        assert!(st.success(), "ovsdb-tool create failed");
        let child = Command::new("ovsdb-server")
            .arg(format!("--remote=punix:{}", dir.join("sock").display()))
            .arg(format!("--unixctl={}", dir.join("ctl").display()))
            .arg("--no-chdir")
            .arg(&db)
            .env("OVS_RUNDIR", &dir)
            .env("OVS_LOGDIR", &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ovsdb-server");
        let server = RealServer { dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.dir.join("sock").exists() {
            assert!(Instant::now() < deadline, "ovsdb-server did not create its socket");
            thread::sleep(Duration::from_millis(20));
        }
        server.vsctl_ok(&["init"]);
        server
    }

    fn vsctl(&self, args: &[&str]) -> Output {
        Command::new("ovs-vsctl")
            .arg(format!("--db=unix:{}", self.dir.join("sock").display()))
            .arg("--no-wait")
            .args(args)
            .env("OVS_RUNDIR", &self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("running ovs-vsctl")
    }

    fn vsctl_ok(&self, args: &[&str]) -> String {
        let o = self.vsctl(args);
        assert!(o.status.success(), "ovs-vsctl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).expect("ovs-vsctl output is UTF-8")
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn schema() -> DatabaseSchema {
    let text = fs::read_to_string(SCHEMA).unwrap();
    DatabaseSchema::from_json(&serde_json::from_str(&text).unwrap()).unwrap()
}

fn column_type(schema: &DatabaseSchema, table: &str, column: &str) -> Type {
    let t = schema.table(table).unwrap();
    t.column(column).unwrap_or_else(|| panic!("no column {table}.{column}")).type_
}

/// Rows with awkward values: strings that need quotes (spaces, digits,
/// booleans, empty, UUID-like, quotes, newlines, HTML specials, non-ASCII),
/// empty and many-element sets, optional values, integers.
fn populate(s: &RealServer) {
    let uuidlike = "abcdef01-2345-6789-abcd-ef0123456789";
    s.vsctl_ok(&["add-br", "br0"]);
    s.vsctl_ok(&["add-br", "br1"]);
    s.vsctl_ok(&["add-port", "br0", "p1", "--", "set", "port", "p1", "tag=5", "trunks=1,2,3"]);
    s.vsctl_ok(&["add-bond", "br0", "bond0", "e1", "e2", "e3", "--", "set", "port", "bond0", "bond_mode=balance-slb"]);
    s.vsctl_ok(&["add-port", "br1", "p 2"]);
    s.vsctl_ok(&[
        "set",
        "bridge",
        "br0",
        "external_ids:\"a b\"=x",
        "external_ids:123=true",
        "external_ids:\"\"=\"\"",
        &format!("external_ids:uuidlike={uuidlike}"),
        "external_ids:é=ü",
        "external_ids:q=\"say \\\"hi\\\"\"",
        "external_ids:ctl=\"a\\u0001b\\u001f\"",
        "other_config:x=y",
        "flood_vlans=1-3",
        "fail_mode=secure",
    ]);
    s.vsctl_ok(&["set", "bridge", "br1", "other_config={\"a,b\"=\"c\\nd\", html=\"<a&b>\"}", "datapath_type=netdev"]);
    s.vsctl_ok(&["set", "interface", "e1", "mtu_request=1500", "ofport_request=10", "external_ids:t=\"tab\\there\""]);
}

/// The rows `ovs-vsctl --format=json --data=json ARGS` printed, as a Table
/// of datums typed by `table`'s schema.
fn table_from_ovs(s: &RealServer, schema: &DatabaseSchema, table: &str, args: &[&str]) -> Table {
    let mut full = vec!["--format=json", "--data=json"];
    full.extend_from_slice(args);
    let out: Value = serde_json::from_str(&s.vsctl_ok(&full)).unwrap();
    let headings: Vec<String> =
        out["headings"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_string()).collect();
    let rows = out["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .zip(&headings)
                .map(|(v, h)| {
                    let ty = column_type(schema, table, h);
                    let datum = Datum::from_json(&ty, v, None).unwrap_or_else(|e| panic!("{h}: {v}: {e}"));
                    Cell::Datum { datum, ty }
                })
                .collect()
        })
        .collect();
    Table { caption: None, headings, rows }
}

/// Every style ovs-vsctl can be asked for, with its options.
fn styles() -> Vec<(Vec<String>, TableStyle)> {
    let mut out = Vec::new();
    for format in ["table", "list", "html", "csv", "json"] {
        for data in ["string", "bare", "json"] {
            for headings in [true, false] {
                for pretty in [false, true] {
                    if pretty && format != "json" {
                        continue;
                    }
                    let mut opts = vec![format!("--format={format}"), format!("--data={data}")];
                    let mut style = TableStyle::default();
                    style.apply_option("format", Some(format)).unwrap();
                    style.apply_option("-d", Some(data)).unwrap();
                    if !headings {
                        opts.push("--no-headings".into());
                        style.apply_option("--no-headings", None).unwrap();
                    }
                    if pretty {
                        opts.push("--pretty".into());
                        style.apply_option("pretty", None).unwrap();
                    }
                    out.push((opts, style));
                }
            }
        }
    }
    let mut bare = TableStyle::default();
    bare.apply_option("--bare", None).unwrap();
    out.push((vec!["--bare".into()], bare));
    for width in ["5", "12"] {
        let mut narrow = TableStyle::default();
        narrow.apply_option("format", Some("table")).unwrap();
        narrow.apply_option("max-column-width", Some(width)).unwrap();
        out.push((vec!["--format=table".into(), format!("--max-column-width={width}")], narrow));
    }
    out.push((vec![], TableStyle::default()));
    out
}

#[test]
fn list_and_find_output_matches_ovs_vsctl() {
    let s = RealServer::start();
    populate(&s);
    let schema = schema();
    let queries: Vec<(&str, Vec<&str>)> = vec![
        ("Bridge", vec!["list", "Bridge"]),
        ("Bridge", vec!["--columns=name,external_ids,other_config,flood_vlans", "list", "Bridge"]),
        ("Port", vec!["list", "Port"]),
        ("Port", vec!["--columns=_uuid,name,interfaces,tag,trunks", "find", "Port", "tag=5"]),
        ("Port", vec!["--columns=name", "find", "Port", "tag=4000"]),
        ("Interface", vec!["list", "Interface"]),
        ("Open_vSwitch", vec!["list", "Open_vSwitch"]),
    ];
    let mut compared = 0;
    for (table, args) in &queries {
        let ours = table_from_ovs(&s, &schema, table, args);
        for (opts, style) in styles() {
            let mut full: Vec<&str> = opts.iter().map(String::as_str).collect();
            full.extend_from_slice(args);
            let want = s.vsctl_ok(&full);
            let got = format_table(&ours, &style);
            assert_eq!(got, want, "ovs-vsctl {full:?}");
            compared += 1;
        }
    }
    assert!(compared > 200);
}

#[test]
fn consecutive_tables_match_ovs_vsctl() {
    let s = RealServer::start();
    populate(&s);
    let schema = schema();
    let bridge_args = ["--columns=name,ports,fail_mode", "list", "Bridge"];
    let port_args = ["--columns=name,tag", "list", "Port"];
    let bridges = table_from_ovs(&s, &schema, "Bridge", &bridge_args);
    let ports = table_from_ovs(&s, &schema, "Port", &port_args);
    for format in ["table", "list", "csv", "html", "json"] {
        // --columns is a per-command option, so each list carries its own.
        let fopt = format!("--format={format}");
        let want = s.vsctl_ok(&[
            &fopt,
            bridge_args[0],
            "list",
            "Bridge",
            "--",
            port_args[0],
            "list",
            "Port",
            "--",
            bridge_args[0],
            "list",
            "Bridge",
        ]);
        let mut style = TableStyle::default();
        style.apply_option("f", Some(format)).unwrap();
        let mut printer = TablePrinter::new();
        let got =
            printer.format(&bridges, &style) + &printer.format(&ports, &style) + &printer.format(&bridges, &style);
        assert_eq!(got, want, "--format={format}");
    }
}

#[test]
fn get_output_matches_datum_to_string() {
    let s = RealServer::start();
    populate(&s);
    let schema = schema();
    for (table, record) in
        [("Bridge", "br0"), ("Bridge", "br1"), ("Port", "p1"), ("Port", "bond0"), ("Interface", "e1")]
    {
        let t = table_from_ovs(&s, &schema, table, &["list", table, record]);
        assert_eq!(t.rows.len(), 1);
        let mut args = vec!["get", table, record];
        args.extend(t.headings.iter().filter(|h| *h != "_uuid").map(String::as_str));
        let want = s.vsctl_ok(&args);
        let mut got = String::new();
        for (h, c) in t.headings.iter().zip(&t.rows[0]) {
            if let (false, Cell::Datum { datum, ty }) = (h == "_uuid", c) {
                got += &datum_to_string(datum, ty);
                got.push('\n');
            }
        }
        assert_eq!(got, want, "get {table} {record}");
    }
    // One map value: the atom alone, quoted the same way.
    let t = table_from_ovs(&s, &schema, "Bridge", &["--columns=external_ids", "list", "Bridge", "br0"]);
    let Cell::Datum { datum, .. } = &t.rows[0][0] else { unreachable!() };
    for (k, v) in datum.keys.iter().zip(datum.values.as_ref().unwrap()) {
        let arg = format!("external_ids:{}", atom_to_string(k));
        let want = s.vsctl_ok(&["get", "Bridge", "br0", &arg]);
        assert_eq!(atom_to_string(v) + "\n", want, "{arg}");
    }
}

#[test]
fn set_parse_results_and_errors_match_ovs_vsctl() {
    let s = RealServer::start();
    populate(&s);
    let schema = schema();
    let cases: &[(&str, &str, &str, &str)] = &[
        ("Bridge", "br0", "fail_mode", "standalone"),
        ("Bridge", "br0", "fail_mode", "foo"),
        ("Bridge", "br0", "fail_mode", "[]"),
        ("Bridge", "br0", "fail_mode", "\"sec\\u0075re\""),
        ("Bridge", "br0", "fail_mode", ""),
        ("Bridge", "br0", "stp_enable", "yes"),
        ("Bridge", "br0", "stp_enable", "maybe"),
        ("Bridge", "br0", "stp_enable", "[]"),
        ("Bridge", "br0", "flood_vlans", "1-3,7, 9 10"),
        ("Bridge", "br0", "flood_vlans", "[]"),
        ("Bridge", "br0", "flood_vlans", "5-1"),
        ("Bridge", "br0", "flood_vlans", "0-4096"),
        ("Bridge", "br0", "flood_vlans", "[1,1]"),
        ("Bridge", "br0", "flood_vlans", "[1"),
        ("Bridge", "br0", "flood_vlans", "[1]x"),
        ("Bridge", "br0", "flood_vlans", "1=2"),
        ("Bridge", "br0", "flood_vlans", "x"),
        ("Bridge", "br0", "flood_vlans", "4096"),
        ("Bridge", "br0", "external_ids", "{a=b, \"c d\"=\"\", e=\"1\"}"),
        ("Bridge", "br0", "external_ids", "k=v"),
        ("Bridge", "br0", "external_ids", "{}"),
        ("Bridge", "br0", "external_ids", ""),
        ("Bridge", "br0", "external_ids", "a"),
        ("Bridge", "br0", "external_ids", "{a b}"),
        ("Bridge", "br0", "external_ids", "[a=b]"),
        ("Bridge", "br0", "external_ids", "{a=b, a=c}"),
        ("Bridge", "br0", "external_ids", "{=b}"),
        ("Bridge", "br0", "external_ids", "{a=\"b}"),
        ("Bridge", "br0", "external_ids", "{a=\"b\\x\"}"),
        ("Bridge", "br0", "external_ids", "{a=b\\"),
        ("Bridge", "br0", "external_ids", "{a\\ b=c\\,d}"),
        ("Bridge", "br0", "datapath_type", "\"\""),
        ("Bridge", "br0", "datapath_type", "a b"),
        ("Bridge", "br0", "datapath_id", "[]"),
        ("Bridge", "br0", "controller", "abc"),
        ("Bridge", "br0", "protocols", "[OpenFlow10, OpenFlow13]"),
        ("Bridge", "br0", "protocols", "OpenFlow99"),
        ("Port", "p1", "tag", "4095"),
        ("Port", "p1", "tag", "4096"),
        ("Port", "p1", "tag", "-1"),
        ("Port", "p1", "tag", "[1,2]"),
        ("Port", "p1", "tag", "0x10"),
        ("Port", "p1", "trunks", "1-4"),
        ("Port", "p1", "bond_updelay", "99999999999999999999"),
        ("Interface", "e1", "ofport_request", "0"),
        ("Interface", "e1", "ofport_request", "65279"),
        ("Interface", "e1", "mtu_request", "0"),
        ("Interface", "e1", "mtu_request", "[]"),
        ("Interface", "e1", "options", "{remote_ip=\"10.0.0.1\", key=flow}"),
    ];
    for (table, record, column, value) in cases {
        let ty = column_type(&schema, table, column);
        let arg = format!("{column}={value}");
        let o = s.vsctl(&["set", table, record, &arg]);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        match datum_from_string(&ty, value, None) {
            Ok(d) => {
                assert!(o.status.success(), "ovs-vsctl set {table} {record} {arg}: {stderr}");
                let got = s.vsctl_ok(&["get", table, record, column]);
                assert_eq!(datum_to_string(&d, &ty) + "\n", got, "{arg}");
            }
            Err(msg) => {
                // An empty value is refused before it is parsed.
                assert!(!o.status.success(), "ovs-vsctl accepted {arg}; we said {msg}");
                if !value.is_empty() {
                    assert_eq!(stderr, format!("ovs-vsctl: {msg}\n"), "{arg}");
                }
            }
        }
    }
    // Keyed set parses the key and the value as single atoms.
    let ids = column_type(&schema, "Bridge", "external_ids");
    for (key, value) in [("k", "v"), ("\"a b\"", "\"\""), ("k", "\"x"), ("\"\\q\"", "v")] {
        let arg = format!("external_ids:{key}={value}");
        let o = s.vsctl(&["set", "Bridge", "br0", &arg]);
        let parsed = atom_from_string(&ids.key, key, None)
            .and_then(|k| atom_from_string(ids.value.as_ref().unwrap(), value, None).map(|v| (k, v)));
        match parsed {
            Ok((k, v)) => {
                assert!(o.status.success(), "{arg}");
                let got = s.vsctl_ok(&["get", "Bridge", "br0", &format!("external_ids:{}", atom_to_string(&k))]);
                assert_eq!(atom_to_string(&v) + "\n", got, "{arg}");
            }
            Err(msg) => assert_eq!(String::from_utf8_lossy(&o.stderr), format!("ovs-vsctl: {msg}\n"), "{arg}"),
        }
    }
}
