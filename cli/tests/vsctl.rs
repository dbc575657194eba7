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
    fn fresh_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "oxvs-vsctl-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn start(ours: bool) -> Server {
        Server::start_in(Server::fresh_dir(), ours)
    }

    fn start_in(dir: PathBuf, ours: bool) -> Server {
        Server::start_with(dir, ours, &[])
    }

    /// `extra`: more `--remote` options and the like.
    fn start_with(dir: PathBuf, ours: bool, extra: &[String]) -> Server {
        need("ovsdb-tool");
        need("ovsdb-server");
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
            .args(extra)
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
    // Nothing to change, nothing to wait for (even without --no-wait).
    for args in
        [&["--timeout=5", "list-br"][..], &["--timeout=5", "init"], &["--timeout=5", "--if-exists", "del-br", "x"]]
    {
        let o = s.run(true, args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
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

#[test]
fn concurrent_runs_lose_no_update() {
    // Every add-port verifies the bridge's port list; when another run
    // changed it first the commit fails with "try again" and the commands
    // are run again on the new contents.
    let s = Server::start(false);
    assert!(s.run(true, &["--no-wait", "add-br", "br0"]).status.success());
    let children: Vec<Child> = (0..10)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_oxvs"))
                .args(["vsctl", &format!("--db=unix:{}", s.sock.display()), "--no-wait", "add-port", "br0"])
                .arg(format!("c{i}"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = s.run(false, &["--no-wait", "list-ports", "br0"]);
    let want: String = {
        let mut v: Vec<String> = (0..10).map(|i| format!("c{i}\n")).collect();
        v.sort();
        v.concat()
    };
    assert_eq!(String::from_utf8_lossy(&o.stdout), want);
}

#[test]
fn wait_until_waits_for_another_client() {
    let s = Server::start(false);
    assert!(s.run(true, &["--no-wait", "add-br", "br0"]).status.success());
    let child = Command::new(env!("CARGO_BIN_EXE_oxvs"))
        .args(["vsctl", &format!("--db=unix:{}", s.sock.display()), "--timeout=20", "wait-until", "bridge", "br0"])
        .arg("other_config:ready=yes")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut child = child;
    assert!(child.try_wait().unwrap().is_none(), "wait-until returned before the condition held");
    assert!(s.run(false, &["--no-wait", "set", "bridge", "br0", "other_config:ready=yes"]).status.success());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn read_only_output_is_identical_on_the_same_database() {
    // With the same rows (and so the same UUIDs), read-only commands print
    // byte for byte what ovs-vsctl prints, row order of list/find included.
    let s = Server::start(false);
    for i in 0..7 {
        let words: Vec<String> =
            format!("--no-wait add-br br{i} -- add-port br{i} p{i} tag={i} -- add-bond br{i} q{i} a{i} b{i}")
                .split(' ')
                .map(String::from)
                .collect();
        let o = s.run(false, &words.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = s.run(
        false,
        &["--no-wait", "add-br", "fk", "br0", "42", "--", "set-controller", "br1", "tcp:1.1.1.1", "ptcp:6653"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cases: &[&[&str]] = &[
        &["list", "Bridge"],
        &["list", "Port"],
        &["--columns=name,ofport,type", "list", "Interface"],
        &["--columns=_uuid,name", "find", "Port", "tag>2"],
        &["--format=csv", "--columns=name,interfaces", "find", "Port", "interfaces{>=}[]"],
        &["--format=table", "list", "Controller"],
        &["show"],
        &["list-br"],
        &["list-ports", "br0"],
        &["list-ifaces", "br3"],
        &["get", "Open_vSwitch", ".", "bridges"],
        &["--columns=name", "list", "Bridge", "br2", "br5", "br1"],
    ];
    for args in cases {
        let mut full = vec!["--no-wait"];
        full.extend_from_slice(args);
        let a = s.run(false, &full);
        let b = s.run(true, &full);
        assert_eq!(String::from_utf8_lossy(&b.stdout), String::from_utf8_lossy(&a.stdout), "{args:?}");
        assert_eq!(describe(&b), describe(&a), "{args:?}");
    }
}

#[test]
fn auto_attach_zones_and_capabilities() {
    compare(
        "aa/zones/caps",
        steps![
            false["add-br", "br0", "--", "add-br", "fk", "br0", "5"],
            false["add-aa-mapping", "br0", "100", "200"],
            false["add-aa-mapping", "fk", "101", "201"],
            false["get-aa-mapping", "br0"],
            false["add-aa-mapping", "br0", "x", "1"],
            false["del-aa-mapping", "br0", "100", "200"],
            false["get-aa-mapping", "fk"],
            false[
                "--",
                "--id=@d",
                "create",
                "Datapath",
                "datapath_version=0",
                "capabilities=ct_zone=true,recirc=true,ct_state=true,masked_set_action=false",
                "--",
                "set",
                "Open_vSwitch",
                ".",
                "datapaths:netdev=@d"
            ],
            false["list-dp-cap", "netdev"],
            false["list-dp-cap", "nope"],
            false["add-zone-tp", "netdev", "zone=1", "icmp_first=1", "icmp_reply=2"],
            false["add-zone-tp", "netdev", "zone=2", "icmp_first=1", "icmp_reply=2"],
            false["add-zone-tp", "netdev", "zone=1", "icmp_first=3"],
            false["--may-exist", "add-zone-tp", "netdev", "zone=1", "icmp_first=3"],
            false["list-zone-tp", "netdev"],
            false["add-zone-tp", "netdev", "zone=3"],
            false["del-zone-tp", "netdev", "zone=2"],
            false["del-zone-tp", "netdev", "zone=9"],
            false["--if-exists", "del-zone-tp", "netdev", "zone=9"],
            false["list-zone-tp", "netdev"],
            false["--columns=timeouts", "list", "CT_Timeout_Policy"],
        ],
        false,
    );
}

#[test]
fn runs_as_a_link_named_ovs_vsctl() {
    let s = Server::start(false);
    let link = s.dir.join("ovs-vsctl");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_oxvs"), &link).unwrap();
    let run =
        |args: &[&str]| Command::new(&link).arg(format!("--db=unix:{}", s.sock.display())).args(args).output().unwrap();
    let o = run(&["--no-wait", "add-br", "br0", "--", "list-br"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "br0\n");
    let o = run(&["--no-wait", "frobnicate"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stderr), "ovs-vsctl: unknown command 'frobnicate'; use --help for help\n");
}

#[test]
fn commands_and_options_lists_match_for_bash_completion() {
    need("ovs-vsctl");
    for what in ["--commands", "--options"] {
        let a = Command::new("ovs-vsctl").arg(what).output().unwrap();
        let b = Command::new(env!("CARGO_BIN_EXE_oxvs")).args(["vsctl", what]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&b.stdout), String::from_utf8_lossy(&a.stdout), "{what}");
        assert_eq!(b.status.code(), a.status.code());
    }
    let a = Command::new("ovs-vsctl").arg("--version").output().unwrap();
    let b = Command::new(env!("CARGO_BIN_EXE_oxvs")).args(["vsctl", "--version"]).output().unwrap();
    let first = |o: &Output| String::from_utf8_lossy(&o.stdout).lines().take(2).collect::<Vec<_>>().join("\n");
    assert_eq!(first(&b), first(&a));
}

/// Removes a test's directory even if the test fails before a server owns it.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn retry_waits_for_the_server_to_appear() {
    let dir = Server::fresh_dir();
    let _guard = DirGuard(dir.clone());
    let sock = dir.join("db.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxvs"))
        .args([
            "vsctl",
            &format!("--db=unix:{}", sock.display()),
            "--retry",
            "--timeout=20",
            "--no-wait",
            "add-br",
            "br0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Without --retry a missing server is an error right away.
    let o = Command::new(env!("CARGO_BIN_EXE_oxvs"))
        .args(["vsctl", &format!("--db=unix:{}", sock.display()), "list-br"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!("ovs-vsctl: unix:{}: database connection failed (No such file or directory)\n", sock.display())
    );
    std::thread::sleep(Duration::from_millis(700));
    assert!(child.try_wait().unwrap().is_none(), "gave up before the server appeared");
    let s = Server::start_in(dir, false);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = s.run(false, &["--no-wait", "list-br"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "br0\n");
}

#[test]
fn passive_remote_waits_for_the_server_to_connect() {
    // --db=punix:PATH: listen on PATH and let the server connect to us
    // (ovsdb-server --remote=unix:PATH), retrying without --retry as OVS does.
    let dir = Server::fresh_dir();
    let _guard = DirGuard(dir.clone());
    let listen = dir.join("vsctl.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxvs"))
        .args(["vsctl", &format!("--db=punix:{}", listen.display()), "--timeout=20", "--no-wait", "add-br", "br0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !listen.exists() {
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!("no listening socket: {}", String::from_utf8_lossy(&o.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = Server::start_with(dir, false, &[format!("--remote=unix:{}", listen.display())]);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = s.run(false, &["--no-wait", "list-br"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "br0\n");

    // Nobody connects: killed by the timeout's SIGALRM, like ovs-vsctl.
    let o = Command::new(env!("CARGO_BIN_EXE_oxvs"))
        .args(["vsctl", &format!("--db=punix:{}", s.dir.join("nobody.sock").display()), "--timeout=1", "init"])
        .output()
        .unwrap();
    assert_eq!(o.status.signal(), Some(libc_sigalrm()), "{}", describe(&o));
}

#[test]
fn log_settings_and_console_pattern_like_ovs() {
    // -v settings: the console pattern, levels, and their errors give the
    // same stderr as ovs-vsctl's, byte for byte.
    for args in [
        &["-vPATTERN:console:%c|%p|%m", "--no-wait", "create", "Bridge", "name=br0"][..],
        &["-vPATTERN:any:[%-5p] %c: %m", "--no-wait", "create", "Bridge", "name=br1"],
        &["-vconsole:off", "--no-wait", "create", "Bridge", "name=br2"],
        &["-vdb_ctl_base:err", "--no-wait", "create", "Bridge", "name=br3"],
        &["-vPATTERN", "show"],
        &["-vwarn:dbg", "show"],
        &["-vconsole:file", "show"],
        &["-vPATTERN:nowhere:%m", "show"],
    ] {
        let s = Server::start(false);
        let real = s.run(false, args);
        let ours = s.run(true, args);
        assert_eq!(
            (String::from_utf8_lossy(&ours.stderr), ours.status.code()),
            (String::from_utf8_lossy(&real.stderr), real.status.code()),
            "{args:?}"
        );
    }
}

#[test]
fn reports_interfaces_ovs_vswitchd_could_not_set_up() {
    // After cur_cfg catches up, the interfaces the command created that got
    // no OpenFlow port (ofport -1) are named on stderr with the log
    // directory; the exit status stays 0. "ovs-vswitchd" here is the test,
    // answering for it.
    for ours in [false, true] {
        let s = Server::start(false);
        assert!(s.run(false, &["--no-wait", "add-br", "br0"]).status.success());
        let bin = if ours { env!("CARGO_BIN_EXE_oxvs") } else { "ovs-vsctl" };
        let mut cmd = Command::new(bin);
        if ours {
            cmd.arg("vsctl");
        }
        let child = cmd
            .args([&format!("--db=unix:{}", s.sock.display()), "--timeout=20", "add-port", "br0", "p1"])
            .args(["--", "add-bond", "br0", "b0", "p2", "p3"])
            .env("OVS_LOGDIR", "/some/log/dir")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t = Instant::now();
        let next = loop {
            let o = s.run(false, &["--no-wait", "get", "open_vswitch", ".", "next_cfg"]);
            let next = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if next == "1" {
                break next;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "next_cfg never bumped");
            std::thread::sleep(Duration::from_millis(20));
        };
        let o = s.run(
            false,
            &[
                "--no-wait",
                "set",
                "interface",
                "p1",
                "ofport=-1",
                "error=\"could not open network device p1 (No such device)\"",
                "--",
                "set",
                "interface",
                "p2",
                "ofport=-1",
                "--",
                "set",
                "interface",
                "p3",
                "ofport=3",
                "--",
                "set",
                "open_vswitch",
                ".",
                &format!("cur_cfg={next}"),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "ours={ours}");
        // In the order the commands created them.
        let lines: Vec<String> = String::from_utf8_lossy(&o.stderr).lines().map(str::to_string).collect();
        assert_eq!(
            lines,
            [
                "ovs-vsctl: Error detected while setting up 'p1': could not open network device p1 (No such device).  See ovs-vswitchd log for details.",
                "ovs-vsctl: Error detected while setting up 'p2'.  See ovs-vswitchd log for details.",
                "ovs-vsctl: The default log directory is \"/some/log/dir\".",
            ],
            "ours={ours}"
        );
    }
}

#[test]
fn ssl_remote_with_bootstrapped_ca_certificate() {
    // The PKI of OVS's own "bootstrap ca cert" test: a client certificate
    // signed by switchca, a self-signed server certificate whose CA the
    // client learns on its first connection.
    need("ovs-pki");
    let dir = Server::fresh_dir();
    let _guard = DirGuard(dir.clone());
    let pki = |args: &[&str]| {
        let o = Command::new("ovs-pki")
            .arg(format!("--dir={}", dir.join("pki").display()))
            .arg(format!("--log={}", dir.join("pki.log").display()))
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "ovs-pki {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    pki(&["init"]);
    pki(&["req+sign", "vsctl", "switch"]);
    pki(&["req", "ovsdbserver"]);
    pki(&["self-sign", "ovsdbserver"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let f = |name: &str| dir.join(name).display().to_string();
    let s = Server::start_with(
        dir.clone(),
        false,
        &[
            format!("--private-key={}", f("ovsdbserver-privkey.pem")),
            format!("--certificate={}", f("ovsdbserver-cert.pem")),
            format!("--ca-cert={}", f("pki/switchca/cacert.pem")),
            format!("--remote=pssl:{port}:127.0.0.1"),
        ],
    );
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "server does not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ours = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_oxvs"))
            .args(["vsctl", "-t", "10", "--no-wait", &format!("--db=ssl:127.0.0.1:{port}")])
            .args(args)
            .output()
            .unwrap()
    };
    let key = format!("--private-key={}", f("vsctl-privkey.pem"));
    let cert = format!("--certificate={}", f("vsctl-cert.pem"));
    let boot = format!("--bootstrap-ca-cert={}", f("cacert.pem"));

    // No key: refused before anything is sent.
    let o = ours(&[&cert, &boot, "list-br"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Private key must be configured"), "{}", describe(&o));
    // A CA that did not sign the server's certificate: the handshake fails.
    let o = ours(&[&key, &cert, &format!("--ca-cert={}", f("pki/controllerca/cacert.pem")), "list-br"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(!dir.join("cacert.pem").exists());
    // The bootstrap connection saves the CA certificate and fails, as in OVS.
    let o = ours(&[&key, &cert, &boot, "list-br"]);
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    // The server's certificate file has a text dump before the PEM block.
    let saved = std::fs::read_to_string(dir.join("cacert.pem")).unwrap();
    assert!(saved.starts_with("-----BEGIN CERTIFICATE-----"), "{saved}");
    assert!(std::fs::read_to_string(dir.join("ovsdbserver-cert.pem")).unwrap().ends_with(&saved));
    // From then on the server is verified against it.
    let o = ours(&[&key, &cert, &boot, "add-br", "br0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = ours(&[&key, &cert, &boot, "list-br"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "br0\n", "{}", String::from_utf8_lossy(&o.stderr));
    drop(s);
}
