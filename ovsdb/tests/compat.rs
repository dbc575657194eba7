//! oxvsdb-server against the real Open vSwitch tools (Debian's openvswitch
//! packages, installed by `cargo xtask setup`): ovs-vsctl, ovsdb-client and
//! ovsdb-tool see the same thing from it as from the real ovsdb-server.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// The project's own schema: our server runs on it, OVS's on OVS's, and the
/// real tools must not see a difference.
const OUR_SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/vswitch.ovsschema");

fn need(tool: &str) {
    let ok = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "{tool} is missing: run `cargo xtask setup` (Debian's openvswitch-switch/openvswitch-common)");
}

/// A server (ours or OVS's) on a fresh copy of a database, in its own directory.
struct Server {
    dir: PathBuf,
    child: Child,
    sock: PathBuf,
}

impl Server {
    fn start(real: bool, tag: &str) -> Server {
        need("ovsdb-tool");
        let dir = std::env::temp_dir().join(format!(
            "oxvsdb-{tag}-{}-{}",
            if real { "ovs" } else { "ox" },
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("conf.db");
        let schema = if real { SCHEMA } else { OUR_SCHEMA };
        let o = Command::new("ovsdb-tool").arg("create").arg(&db).arg(schema).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let sock = dir.join("db.sock");
        let bin = if real { PathBuf::from("ovsdb-server") } else { PathBuf::from(env!("CARGO_BIN_EXE_oxvsdb-server")) };
        let child = Command::new(bin)
            .arg(&db)
            .arg(format!("--remote=punix:{}", sock.display()))
            .arg(format!("--unixctl={}", dir.join("ctl").display()))
            .arg("--no-chdir")
            .env("OVS_RUNDIR", &dir)
            .env("OVS_LOGDIR", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !sock.exists() {
            assert!(t.elapsed() < Duration::from_secs(10), "server did not create {}", sock.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { dir, child, sock }
    }

    fn db(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    fn vsctl(&self, args: &[&str]) -> Output {
        Command::new("ovs-vsctl")
            .arg("--no-wait")
            .arg(format!("--db={}", self.db()))
            .arg("--timeout=10")
            .args(args)
            .env("OVS_RUNDIR", &self.dir)
            .output()
            .unwrap()
    }

    fn client(&self, args: &[&str]) -> Output {
        Command::new("ovsdb-client").args(args).env("OVS_RUNDIR", &self.dir).output().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Replaces UUIDs by their order of first appearance, so two servers' outputs
/// compare.
fn norm(s: &str) -> String {
    let mut seen: Vec<String> = Vec::new();
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if i + 36 <= b.len() && is_uuid(&s[i..i + 36]) {
            let u = s[i..i + 36].to_string();
            let n = seen.iter().position(|x| *x == u).unwrap_or_else(|| {
                seen.push(u);
                seen.len() - 1
            });
            out.push_str(&format!("<uuid{n}>"));
            i += 36;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}

/// Lines sorted: OVS prints rows and tables in hash-table order, which differs
/// between two real servers too (rows have random UUIDs), so outputs compare
/// as sets of lines.
fn lines(o: &Output) -> Vec<String> {
    let mut v: Vec<String> = norm_rows(&String::from_utf8_lossy(&o.stdout)).lines().map(str::to_string).collect();
    v.sort();
    v
}

/// UUIDs replaced by one placeholder (their order of appearance depends on
/// row order).
fn norm_rows(s: &str) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < s.len() {
        if i + 36 <= s.len() && s.is_char_boundary(i + 36) && is_uuid(&s[i..i + 36]) {
            out.push_str("<uuid>");
            i += 36;
        } else {
            let c = s[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn ovs_vsctl_sees_the_same() {
    need("ovs-vsctl");
    let ours = Server::start(false, "vsctl");
    let real = Server::start(true, "vsctl");
    let seqs: &[&[&str]] = &[
        &["init"],
        &["add-br", "br0"],
        &["add-port", "br0", "p1"],
        &["add-port", "br0", "p2", "--", "set", "Interface", "p2", "type=internal"],
        &["list-br"],
        &["list-ports", "br0"],
        &["br-exists", "br0"],
        &["br-exists", "nope"],
        &["get", "Interface", "p2", "type"],
        &["set", "Bridge", "br0", "other_config:hwaddr=00:11:22:33:44:55", "fail_mode=secure"],
        &["get", "Bridge", "br0", "other_config", "fail_mode"],
        &["--columns=name,fail_mode", "list", "Bridge"],
        &["--format=csv", "--columns=name", "find", "Interface", "type=internal"],
        &["add-br", "br1", "--", "add-port", "br1", "p3", "--", "set", "Port", "p3", "tag=7"],
        &["--columns=name,tag", "list", "Port"],
        &["port-to-br", "p3"],
        &["add-port", "br0", "p1"],
        &["--may-exist", "add-port", "br0", "p1"],
        &["del-port", "br0", "p2"],
        &["list-ports", "br0"],
        &["del-br", "br1"],
        &["list-br"],
        &["--bare", "--columns=name", "list", "Interface"],
        &["show"],
    ];
    for args in seqs {
        let (a, b) = (ours.vsctl(args), real.vsctl(args));
        assert_eq!(a.status.code(), b.status.code(), "{args:?}\nours: {}\nreal: {}", show(&a), show(&b));
        if ["list", "find", "show"].iter().any(|c| args.contains(c)) {
            assert_eq!(lines(&a), lines(&b), "{args:?}");
        } else {
            assert_eq!(
                norm(&String::from_utf8_lossy(&a.stdout)),
                norm(&String::from_utf8_lossy(&b.stdout)),
                "{args:?}"
            );
        }
        assert_eq!(a.stderr.is_empty(), b.stderr.is_empty(), "{args:?}\nours: {}\nreal: {}", show(&a), show(&b));
    }
}

#[test]
fn ovsdb_client_sees_the_same() {
    need("ovsdb-client");
    let ours = Server::start(false, "client");
    let real = Server::start(true, "client");
    for s in [&ours, &real] {
        let o = s.vsctl(&["init", "--", "add-br", "br0", "--", "add-port", "br0", "p1"]);
        assert!(o.status.success(), "{}", show(&o));
    }
    let (od, rd) = (ours.db(), real.db());
    let txn = r#"["Open_vSwitch",{"op":"select","table":"Bridge","where":[],"columns":["name","ports"]}]"#;
    let cases: Vec<Vec<&str>> = vec![
        vec!["list-dbs"],
        vec!["list-tables", "Open_vSwitch"],
        vec!["list-columns", "Open_vSwitch", "Bridge"],
        vec!["get-schema-version", "Open_vSwitch"],
        vec!["dump", "Open_vSwitch", "Bridge", "name", "ports"],
        vec!["--format=csv", "dump", "Open_vSwitch", "Interface", "name", "type"],
        vec!["transact", txn],
        vec!["transact", r#"["Open_vSwitch",{"op":"insert","table":"Nope","row":{}}]"#],
    ];
    for c in &cases {
        let mut a: Vec<&str> = vec![c[0]];
        a.push(&od);
        a.extend(&c[1..]);
        let mut b: Vec<&str> = vec![c[0]];
        b.push(&rd);
        b.extend(&c[1..]);
        // Options go before the command.
        if c[0].starts_with("--") {
            a = vec![c[0], c[1], &od];
            a.extend(&c[2..]);
            b = vec![c[0], c[1], &rd];
            b.extend(&c[2..]);
        }
        let (x, y) = (ours.client(&a), real.client(&b));
        assert_eq!(x.status.code(), y.status.code(), "{c:?}\nours: {}\nreal: {}", show(&x), show(&y));
        assert_eq!(lines(&x), lines(&y), "{c:?}\nours: {}\nreal: {}", show(&x), show(&y));
    }
    // The schema a client reads is the one OVS serves (ours has no "cksum":
    // that is a checksum of OVS's file's text, which ours isn't).
    let (x, y) = (ours.client(&["get-schema", &od]), real.client(&["get-schema", &rd]));
    let xs: serde_json::Value = serde_json::from_slice(&x.stdout).unwrap();
    let mut ys: serde_json::Value = serde_json::from_slice(&y.stdout).unwrap();
    ys.as_object_mut().unwrap().remove("cksum");
    assert_eq!(xs, ys);
}

#[test]
fn ovsdb_client_monitor_sees_changes() {
    need("ovsdb-client");
    let ours = Server::start(false, "mon");
    let o = ours.vsctl(&["init"]);
    assert!(o.status.success(), "{}", show(&o));
    let mut mon = Command::new("ovsdb-client")
        .args(["monitor", &ours.db(), "Open_vSwitch", "Bridge", "name", "--format=csv"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(ours.vsctl(&["add-br", "brm"]).status.success());
    std::thread::sleep(Duration::from_millis(300));
    let _ = mon.kill();
    let out = mon.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("insert") && text.contains("brm"), "{text}");
}

#[test]
fn ovsdb_tool_reads_our_file() {
    need("ovsdb-tool");
    let dir;
    {
        let ours = Server::start(false, "tool");
        assert!(ours.vsctl(&["init", "--", "add-br", "brt"]).status.success());
        dir = ours.dir.clone();
        // Stop the server (releases the lock) but keep its files.
        let db = dir.join("conf.db");
        let copy = std::env::temp_dir().join(format!("oxvsdb-tool-copy-{}.db", std::process::id()));
        let mut ours = ours;
        let _ = ours.child.kill();
        let _ = ours.child.wait();
        std::fs::copy(&db, &copy).unwrap();
        let o = Command::new("ovsdb-tool").arg("show-log").arg(&copy).output().unwrap();
        assert!(o.status.success(), "{}", show(&o));
        let o = Command::new("ovsdb-tool")
            .arg("query")
            .arg(&copy)
            .arg(r#"["Open_vSwitch",{"op":"select","table":"Bridge","where":[],"columns":["name"]}]"#)
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&o.stdout).contains("brt"), "{}", show(&o));
        let _ = std::fs::remove_file(&copy);
    }
    let _ = Path::new(&dir);
}

/// `--detach`, `--pidfile` and the unixctl socket as `ovs-appctl` uses them;
/// on `exit` the server removes its socket, control socket and pidfile.
#[test]
fn detach_pidfile_and_ovs_appctl() {
    need("ovs-appctl");
    let dir = std::env::temp_dir().join(format!("oxvsdb-appctl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("conf.db");
    assert!(Command::new("ovsdb-tool").arg("create").arg(&db).arg(SCHEMA).status().unwrap().success());
    let (sock, ctl, pid) = (dir.join("db.sock"), dir.join("ctl"), dir.join("ovsdb-server.pid"));
    let st = Command::new(env!("CARGO_BIN_EXE_oxvsdb-server"))
        .arg(&db)
        .arg(format!("--remote=punix:{}", sock.display()))
        .arg(format!("--unixctl={}", ctl.display()))
        .arg(format!("--pidfile={}", pid.display()))
        .arg("--detach")
        .status()
        .unwrap();
    assert!(st.success(), "--detach returned {st}");
    let server_pid: i32 = std::fs::read_to_string(&pid).unwrap().trim().parse().unwrap();
    assert!(sock.exists() && ctl.exists());
    let appctl = |args: &[&str]| Command::new("ovs-appctl").arg("-t").arg(&ctl).args(args).output().unwrap();
    let o = appctl(&["ovsdb-server/list-dbs"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "Open_vSwitch\n_Server\n");
    let o = appctl(&["no-such-command"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a valid command"));
    assert!(appctl(&["exit"]).status.success());
    let t = Instant::now();
    // SAFETY: kill with signal 0 only checks whether the pid exists.
    while unsafe { libc::kill(server_pid, 0) } == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "server still running after exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!sock.exists() && !ctl.exists() && !pid.exists(), "files left behind");
    let _ = std::fs::remove_dir_all(&dir);
}
