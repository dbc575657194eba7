//! `oxvs vsctl` against real ovs-vsctl: each scenario runs the same command
//! lines with both tools, each against its own fresh real ovsdb-server (and,
//! in one test, ours against oxvsdb-server), and compares stdout (UUIDs
//! masked), whether stderr is empty, and the exit status. Needs Debian's
//! openvswitch packages (`cargo xtask setup`).
use std::{
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn need(tool: &str) {
    let ok = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "{tool} is missing: run `cargo xtask setup` (Debian's openvswitch-switch/openvswitch-common)");
}

fn oxvsdb_server() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/oxvsdb-server");
    assert!(bin.exists(), "{} is missing: build it with `cargo build -p oxvs-ovsdb`", bin.display());
    bin
}

/// A database server in its own temporary directory, killed (by pid) and
/// removed when dropped.
struct Server {
    dir: PathBuf,
    child: Child,
    sock: PathBuf,
}

impl Server {
    fn start(ours: bool) -> Server {
        need("ovsdb-tool");
        need("ovsdb-server");
        let dir = std::env::temp_dir().join(format!(
            "oxvs-vsctl-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("conf.db");
        let o = Command::new("ovsdb-tool").arg("create").arg(&db).arg(SCHEMA).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let sock = dir.join("db.sock");
        let bin = if ours { oxvsdb_server() } else { PathBuf::from("ovsdb-server") };
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
        let server = Server { dir, child, sock };
        let t = Instant::now();
        while !server.sock.exists() {
            assert!(t.elapsed() < Duration::from_secs(10), "server did not create {}", server.sock.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn run(&self, ours: bool, args: &[&str]) -> Output {
        let mut cmd = if ours {
            let mut c = Command::new(env!("CARGO_BIN_EXE_oxvs"));
            c.arg("vsctl");
            c
        } else {
            Command::new("ovs-vsctl")
        };
        cmd.arg(format!("--db=unix:{}", self.sock.display())).args(args).env("OVS_RUNDIR", &self.dir);
        cmd.output().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Replaces every UUID with "<uuid>": the two databases assign different ones.
fn mask_uuids(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    let is_uuid = |w: &[u8]| {
        w.len() == 36
            && w.iter()
                .enumerate()
                .all(|(j, c)| if [8, 13, 18, 23].contains(&j) { *c == b'-' } else { c.is_ascii_hexdigit() })
    };
    while i < b.len() {
        if i + 36 <= b.len() && is_uuid(&b[i..i + 36]) {
            out += "<uuid>";
            i += 36;
        } else {
            let ch = s[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// One step: the arguments (after --db) and whether to compare stdout as a
/// sorted set of lines (for outputs whose row order follows the servers'
/// UUIDs).
struct Step(&'static [&'static str], bool);

fn describe(o: &Output) -> String {
    match o.status.code() {
        Some(c) => format!("exit {c}"),
        None => format!("signal {:?}", o.status.signal()),
    }
}

fn compare(scenario: &str, steps: &[Step], our_server: bool) {
    let real = Server::start(false);
    let mine = Server::start(our_server);
    for (n, Step(args, sorted)) in steps.iter().enumerate() {
        let a = real.run(false, args);
        let b = mine.run(true, args);
        let (mut sa, mut sb) =
            (mask_uuids(&String::from_utf8_lossy(&a.stdout)), mask_uuids(&String::from_utf8_lossy(&b.stdout)));
        if *sorted {
            let sort = |s: &str| {
                let mut v: Vec<&str> = s.lines().collect();
                v.sort();
                v.join("\n")
            };
            sa = sort(&sa);
            sb = sort(&sb);
        }
        let ctx = format!(
            "{scenario} step {n} {args:?}\nreal stderr: {}\nours stderr: {}",
            String::from_utf8_lossy(&a.stderr),
            String::from_utf8_lossy(&b.stderr)
        );
        assert_eq!(sb, sa, "stdout differs: {ctx}");
        assert_eq!(describe(&b), describe(&a), "status differs: {ctx}");
        assert_eq!(b.stderr.is_empty(), a.stderr.is_empty(), "stderr emptiness differs: {ctx}");
        // Error lines have the same text (warnings carry timestamps).
        if !a.stderr.is_empty() && a.stderr.starts_with(b"ovs-vsctl: ") {
            assert_eq!(String::from_utf8_lossy(&b.stderr), String::from_utf8_lossy(&a.stderr), "error text: {ctx}");
        }
    }
}

macro_rules! steps {
    ($( $sorted:literal [$($w:expr),* $(,)?] ),* $(,)?) => {
        &[$( Step(&["--no-wait", $($w),*], $sorted) ),*]
    };
}

#[test]
fn bridges_and_ports() {
    compare(
        "bridges",
        steps![
            false["init"],
            false["add-br", "br0"],
            false["list-br"],
            false["br-exists", "br0"],
            false["br-exists", "nope"],
            false["br-to-vlan", "br0"],
            false["br-to-parent", "br0"],
            false["add-port", "br0", "p1"],
            false["add-port", "br0", "p2", "tag=5", "other_config:k=v"],
            false["list-ports", "br0"],
            false["list-ifaces", "br0"],
            false["port-to-br", "p1"],
            false["iface-to-br", "p2"],
            false["get", "port", "p2", "tag", "other_config:k", "name"],
            true["show"],
            false["del-port", "br0", "p1"],
            false["--if-exists", "del-port", "br0", "p1"],
            false["del-port", "p1"],
            false["list-ports", "br0"],
            false["--may-exist", "add-port", "br0", "p2"],
            false["--may-exist", "add-br", "br0"],
            false["del-br", "br0"],
            false["list-br"],
            true["show"],
        ],
        false,
    );
}

#[test]
fn fake_bridges() {
    compare(
        "fake bridges",
        steps![
            false["add-br", "br0"],
            false["add-br", "fk", "br0", "10"],
            false["list-br"],
            false["--fake", "list-br"],
            false["--real", "list-br"],
            false["br-to-vlan", "fk"],
            false["br-to-parent", "fk"],
            false["add-port", "fk", "p3"],
            false["list-ports", "fk"],
            false["list-ports", "br0"],
            false["get", "port", "p3", "tag"],
            false["port-to-br", "p3"],
            false["add-br", "fk2", "br0", "10"],
            false["add-br", "fk2", "fk", "11"],
            false["add-br", "fk2", "nope", "11"],
            false["add-br", "fk2", "br0", "5000"],
            false["--may-exist", "add-br", "fk", "br0", "11"],
            false["br-set-external-id", "fk", "a", "b"],
            false["br-get-external-id", "fk"],
            false["br-get-external-id", "fk", "a"],
            false["br-set-external-id", "br0", "x", "y"],
            false["br-get-external-id", "br0"],
            false["del-port", "br0", "p3"],
            true["show"],
            false["del-br", "fk"],
            false["list-br"],
            false["list-ports", "br0"],
        ],
        false,
    );
}

#[test]
fn database_commands() {
    compare(
        "db commands",
        steps![
            false["add-br", "br0"],
            false["set", "bridge", "br0", "other_config:a=1", "other_config:b=2", "external_ids:x=y"],
            false["get", "bridge", "br0", "other_config", "external_ids:x"],
            false["remove", "bridge", "br0", "other_config", "a"],
            false["get", "bridge", "br0", "other_config"],
            false["add", "bridge", "br0", "flood_vlans", "1", "2", "3"],
            false["get", "bridge", "br0", "flood_vlans"],
            false["remove", "bridge", "br0", "flood_vlans", "2"],
            false["get", "bridge", "br0", "flood_vlans"],
            false["clear", "bridge", "br0", "flood_vlans"],
            false["get", "bridge", "br0", "flood_vlans"],
            false["--columns=name,other_config", "find", "bridge", "name=br0"],
            false["--columns=name", "find", "bridge", "other_config:b=2"],
            false["--columns=name", "find", "bridge", "other_config:b!=2"],
            false["--columns=name", "find", "bridge", "flood_vlans{<=}[1,2]"],
            false["--if-exists", "get", "bridge", "nope", "name"],
            false["get", "bridge", "br0", "other_config:zz"],
            false["--if-exists", "get", "bridge", "br0", "other_config:zz"],
            false["list", "bridge", "br0"],
            false["--format=csv", "--columns=name,flood_vlans", "list", "bridge"],
            false["--format=json", "--columns=name", "list", "bridge"],
            false["--format=table", "--columns=name,datapath_type", "list", "bridge"],
            false["--bare", "--columns=name", "list", "bridge"],
            false["-d", "json", "--columns=other_config", "list", "bridge"],
            false["set", "bridge", "br0", "fail_mode=foo"],
            false["set", "bridge", "br0", "stp_enable=maybe"],
            false["set", "bridge", "br0", "name"],
            false["set", "bridge", "br0", "nosuchcol=1"],
            false["get", "bridge", "br0", "name:x"],
            false["list", "nosuchtable"],
            false["list", "f"],
            false["clear", "bridge", "br0", "name"],
            false["destroy", "bridge", "nope"],
            false["--if-exists", "destroy", "bridge", "nope"],
            false["--id=@q", "create", "qos", "type=linux-htb", "--", "set", "port", "br0", "qos=@q"],
            false["get", "port", "br0", "qos"],
            false["list", "qos"],
            false["--columns=type", "list", "qos", "br0"],
            false["clear", "port", "br0", "qos"],
            false["set", "port", "br0", "qos=@nope"],
            false["wait-until", "bridge", "br0", "name=br0"],
            false["comment", "hello", "--", "list-br"],
            false["--dry-run", "add-br", "br1"],
            false["list-br"],
            false["--oneline", "list-br", "--", "get", "bridge", "br0", "name", "other_config"],
        ],
        false,
    );
}

#[test]
fn bonds_controllers_managers_ssl() {
    compare(
        "bonds etc",
        steps![
            false["add-br", "br0"],
            false["add-bond", "br0", "b0", "e1", "e2", "lacp=active"],
            false["add-bond", "br0", "b1", "e9"],
            false["list-ifaces", "br0"],
            false["add-bond-iface", "b0", "e3"],
            false["del-bond-iface", "b0", "e1"],
            false["list-ifaces", "br0"],
            false["get", "port", "b0", "lacp"],
            false["del-bond-iface", "e2"],
            false["del-bond-iface", "e3"],
            false["--with-iface", "del-port", "e3"],
            false["list-ports", "br0"],
            false["set-controller", "br0", "tcp:1.2.3.4:6653", "ptcp:6654"],
            false["get-controller", "br0"],
            false["set-fail-mode", "br0", "secure"],
            false["get-fail-mode", "br0"],
            false["set-fail-mode", "br0", "bogus"],
            true["show"],
            false["del-fail-mode", "br0"],
            false["get-fail-mode", "br0"],
            false["del-controller", "br0"],
            false["get-controller", "br0"],
            false["set-manager", "ptcp:6640", "tcp:5.6.7.8:6640"],
            false["get-manager"],
            false["del-manager"],
            false["get-manager"],
            false["set-ssl", "/k", "/c", "/ca"],
            false["get-ssl"],
            false["--bootstrap", "set-ssl", "/k2", "/c2", "/ca2"],
            false["get-ssl"],
            false["del-ssl"],
            false["get-ssl"],
            false["set", "bridge", "br0", "other_config:hwaddr=\"aa:bb:cc:dd:ee:ff\"", "other_config:x=1"],
            false["emer-reset"],
            false["get", "bridge", "br0", "other_config"],
        ],
        false,
    );
}

#[test]
fn command_line_errors() {
    compare(
        "errors",
        steps![
            false["foo"],
            false[],
            false["--foo", "list-br"],
            false["-x", "list-br"],
            false["--no", "list-br"],
            false["-t", "0", "list-br"],
            false["add-br"],
            false["list-br", "x"],
            false["br-exists", "a", "-b"],
            false["--if-exists", "list-br"],
            false["--", "--id", "get", "bridge", "x"],
            false["--", "--all=1", "destroy", "bridge"],
            false["add-br", ""],
            false["add-br", "a", "b"],
            false["del-br", "nope"],
            false["--if-exists", "del-br", "nope"],
            false["add-br", "br0", "--", "add-br", "br0"],
            false["add-br", "br0"],
            false["add-port", "br0", "br0"],
            false["del-port", "br0"],
            false["--if-exists", "del-port", "br0"],
            false["port-to-br", "br0"],
            false["add-port", "nope", "p1"],
            false["add-port", "br0", "p1", "--", "add-port", "br0", "p1"],
            false["add-port", "br0", "p1", "--", "del-port", "br0", "p1"],
            false["list-ports", "br0"],
        ],
        false,
    );
}

#[test]
fn against_oxvsdb_server() {
    compare(
        "oxvsdb-server",
        steps![
            false["add-br", "br0", "--", "add-port", "br0", "p1", "--", "set", "port", "p1", "tag=7"],
            false["add-br", "fk", "br0", "9"],
            true["show"],
            false["list-br"],
            false["get", "port", "p1", "tag"],
            false["set", "bridge", "br0", "fail_mode=bogus"],
            false["del-br", "br0"],
            true["show"],
        ],
        true,
    );
}

#[test]
fn timeout_kills_like_ovs_vsctl() {
    let real = Server::start(false);
    for ours in [false, true] {
        let o = real.run(ours, &["--timeout=1", "wait-until", "bridge", "nope"]);
        assert_eq!(o.status.signal(), Some(libc_sigalrm()), "ours={ours}: {}", describe(&o));
    }
}

fn libc_sigalrm() -> i32 {
    14
}

#[test]
fn waits_for_next_cfg_until_cur_cfg_catches_up() {
    // Without --no-wait the tool waits until ovs-vswitchd (here: a plain
    // database client) copies next_cfg into cur_cfg.
    let s = Server::start(false);
    let o = s.run(true, &["--no-wait", "init"]);
    assert!(o.status.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxvs"))
        .args(["vsctl", &format!("--db=unix:{}", s.sock.display()), "--timeout=20", "add-br", "br0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "returned before cur_cfg caught up");
    let next = s.run(false, &["--no-wait", "get", "open_vswitch", ".", "next_cfg"]);
    let next = String::from_utf8_lossy(&next.stdout).trim().to_string();
    assert_eq!(next, "1");
    let o = s.run(false, &["--no-wait", "set", "open_vswitch", ".", &format!("cur_cfg={next}")]);
    assert!(o.status.success());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = s.run(true, &["--no-wait", "list-br"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "br0\n");
}
