//! What `oxvs vsctl add` and `set` send, checked in the log of a real
//! ovsdb-server (Debian's openvswitch packages, installed by `cargo xtask
//! setup`) that records every JSON-RPC message: as with ovs-vsctl, the last
//! command of an invocation adds, or sets `column:key=value`, with a
//! `mutate` and no `wait`, so concurrent runs never have to be retried; an
//! earlier one rewrites the column after a `wait`. add-bond-iface,
//! del-bond-iface, add-zone-tp and del-zone-tp always use partial updates,
//! as ovs-vsctl's do.
use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// A real ovsdb-server logging JSON-RPC at debug level, in its own
/// directory; killed by pid and removed when dropped.
struct LoggedServer {
    dir: PathBuf,
    child: Child,
}

impl LoggedServer {
    fn start(tag: &str) -> LoggedServer {
        for tool in ["ovsdb-tool", "ovsdb-server", "ovs-vsctl"] {
            let ok = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
            assert!(ok, "{tool} is missing: run `cargo xtask setup` (Debian's openvswitch packages)");
        }
        let dir = std::env::temp_dir().join(format!("oxvs-vsctl-mutate-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("conf.db");
        let o = Command::new("ovsdb-tool").arg("create").arg(&db).arg(SCHEMA).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let child = Command::new("ovsdb-server")
            .arg(&db)
            .arg(format!("--remote=punix:{}", dir.join("db.sock").display()))
            .arg(format!("--unixctl={}", dir.join("ctl").display()))
            .arg(format!("--log-file={}", dir.join("log").display()))
            .args(["--no-chdir", "-vjsonrpc:file:dbg", "-vconsole:off"])
            .env("OVS_RUNDIR", &dir)
            .env("OVS_LOGDIR", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = LoggedServer { dir, child };
        let t = Instant::now();
        while !s.dir.join("db.sock").exists() {
            assert!(t.elapsed() < Duration::from_secs(10), "ovsdb-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn command(&self, ours: bool, args: &[&str]) -> Command {
        let mut c = if ours {
            let mut c = Command::new(env!("CARGO_BIN_EXE_oxvs"));
            c.arg("vsctl");
            c
        } else {
            Command::new("ovs-vsctl")
        };
        c.arg(format!("--db=unix:{}", self.dir.join("db.sock").display()))
            .args(["--no-wait", "--timeout=20"])
            .args(args)
            .env("OVS_RUNDIR", &self.dir);
        c
    }

    /// Starts our tool once per argument list, all at once, and waits for
    /// every run to succeed.
    fn run_ours_at_once(&self, runs: Vec<Vec<&str>>) {
        let children: Vec<Child> = runs
            .iter()
            .map(|args| self.command(true, args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap())
            .collect();
        for c in children {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }

    fn run(&self, ours: bool, args: &[&str]) -> Output {
        let o = self.command(ours, args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?} ({}): {}",
            if ours { "ours" } else { "real" },
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap()
    }

    /// The operations of every `transact` the server received, in order.
    fn transactions(&self) -> Vec<Vec<Value>> {
        self.log()
            .lines()
            .filter(|l| l.contains("received request, method=\"transact\""))
            .map(|l| {
                let start = l.find("params=").unwrap() + "params=".len();
                let end = l.rfind(", id=").unwrap();
                let params: Value = serde_json::from_str(&l[start..end]).unwrap();
                params.as_array().unwrap()[1..].to_vec()
            })
            .collect()
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An operation with UUIDs masked, the members of sets and maps sorted
/// (their order on the wire is a hash order in OVS), and the comment
/// (which names the program) left out.
fn normalize(ops: &[Value]) -> Vec<Value> {
    fn go(v: &Value) -> Value {
        match v {
            Value::String(s) if s.len() == 36 && uuid::Uuid::parse_str(s).is_ok() => Value::String("<uuid>".into()),
            // The names of rows inserted by the transaction: "row" and a
            // uuid with '_' for '-'.
            Value::String(s)
                if s.len() == 39
                    && s.strip_prefix("row").is_some_and(|u| uuid::Uuid::parse_str(&u.replace('_', "-")).is_ok()) =>
            {
                Value::String("<row>".into())
            }
            Value::Array(a) if a.len() == 2 && (a[0] == "set" || a[0] == "map") && a[1].is_array() => {
                let mut members: Vec<Value> = a[1].as_array().unwrap().iter().map(go).collect();
                members.sort_by_key(|m| m.to_string());
                Value::Array(vec![a[0].clone(), Value::Array(members)])
            }
            Value::Array(a) => Value::Array(a.iter().map(go).collect()),
            Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), go(v))).collect()),
            other => other.clone(),
        }
    }
    ops.iter().filter(|op| op["op"] != "comment").map(go).collect()
}

#[test]
fn add_sends_the_same_operations_as_ovs_vsctl() {
    let s = LoggedServer::start("wire");
    for br in ["br0", "br1"] {
        s.run(false, &["init", "--", "add-br", br, "--", "set", "Bridge", br, "flood_vlans=1"]);
        s.run(false, &["set", "Bridge", br, "other_config:k=v", "external_ids:a=b"]);
    }
    let cmds: &[&[&str]] = &[
        // Last command: one mutate, no wait.
        &["add", "Bridge", "BR", "flood_vlans", "2", "3"],
        // A key that exists gets the new value: delete + insert.
        &["add", "Bridge", "BR", "other_config", "k=w", "n=1"],
        // A pair that is there already changes nothing for a map...
        &["add", "Bridge", "BR", "other_config", "n=1"],
        // ...but a set member is still sent.
        &["add", "Bridge", "BR", "flood_vlans", "1"],
        // Not the last command: wait + whole-column update, then the last
        // one's mutate.
        &["add", "Bridge", "BR", "flood_vlans", "4", "--", "add", "Bridge", "BR", "external_ids", "c=d"],
        // remove rewrites the column after a wait, as in OVS 3.1.
        &["remove", "Bridge", "BR", "flood_vlans", "2"],
    ];
    // What each command sent, on each side: its transactions (none when
    // it changes nothing).
    let mut sent: [Vec<Vec<Vec<Value>>>; 2] = [Vec::new(), Vec::new()];
    for (side, (ours, br)) in [(false, "br0"), (true, "br1")].into_iter().enumerate() {
        for c in cmds {
            let args: Vec<&str> = c.iter().map(|a| if *a == "BR" { br } else { a }).collect();
            let before = s.transactions().len();
            s.run(ours, &args);
            sent[side].push(s.transactions()[before..].to_vec());
        }
    }
    let [real, ours] = &sent;
    for (i, (r, o)) in real.iter().zip(ours).enumerate() {
        let norm = |txns: &[Vec<Value>]| txns.iter().map(|ops| normalize(ops)).collect::<Vec<_>>();
        assert_eq!(norm(o), norm(r), "command {:?}", cmds[i]);
    }
    assert!(ours[2].is_empty(), "an unchanged map pair sends nothing");
    assert_eq!(ours.iter().filter(|t| t.len() == 1).count(), cmds.len() - 1);
    let ours: Vec<&Vec<Value>> = ours.iter().flatten().collect();
    // And what they amount to: the mutations as OVS builds them.
    let ops: Vec<Value> = normalize(ours[0]).iter().map(|op| op["op"].clone()).collect();
    assert_eq!(ops, ["mutate"]);
    assert_eq!(
        normalize(ours[1])[0]["mutations"],
        serde_json::json!([
            ["other_config", "delete", ["set", ["k"]]],
            ["other_config", "insert", ["map", [["k", "w"], ["n", "1"]]]]
        ])
    );
    let show =
        |ours: bool, br: &str, col: &str| String::from_utf8(s.run(ours, &["get", "Bridge", br, col]).stdout).unwrap();
    for br in ["br0", "br1"] {
        assert_eq!(show(false, br, "flood_vlans"), "[1, 3, 4]\n");
        assert_eq!(show(false, br, "other_config"), "{k=w, n=\"1\"}\n");
        assert_eq!(show(false, br, "external_ids"), "{a=b, c=d}\n");
    }
}

#[test]
fn concurrent_adds_are_never_retried() {
    let s = LoggedServer::start("concurrent");
    s.run(false, &["init", "--", "add-br", "br0"]);
    let before = s.transactions().len();
    let vlans: Vec<String> = (1..=12).map(|i| i.to_string()).collect();
    s.run_ours_at_once(vlans.iter().map(|v| vec!["add", "Bridge", "br0", "flood_vlans", v.as_str()]).collect());
    let o = s.run(false, &["get", "Bridge", "br0", "flood_vlans"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]\n");
    // One transaction per run, none of them with a wait that could fail.
    let txns = s.transactions();
    let adds = &txns[before..txns.len()];
    assert_eq!(adds.len(), 12, "one transaction per run, no retries");
    assert!(adds.iter().flatten().all(|op| op["op"] != "wait"));
    assert!(!s.log().contains("timed out"));
}

/// A transaction's operations normalized and in a fixed order: OVS sends the
/// operations of different rows in the order of a hash table.
fn normalize_unordered(ops: &[Value]) -> Vec<Value> {
    let mut ops = normalize(ops);
    ops.sort_by_key(|op| op.to_string());
    ops
}

/// Runs each command with real ovs-vsctl on side 0 against `servers[0]`
/// and ours on side 1 against `servers[1]` (`{n}` in an argument replaced
/// by the side), and returns what each run sent: its transactions, none
/// when it changes nothing.
fn sent_by_each(servers: [&LoggedServer; 2], cmds: &[&[&str]]) -> [Vec<Vec<Vec<Value>>>; 2] {
    let mut sent: [Vec<Vec<Vec<Value>>>; 2] = [Vec::new(), Vec::new()];
    for (side, ours) in [false, true].into_iter().enumerate() {
        let s = servers[side];
        for c in cmds {
            let args: Vec<String> = c.iter().map(|a| a.replace("{n}", &side.to_string())).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let before = s.transactions().len();
            s.run(ours, &args);
            sent[side].push(s.transactions()[before..].to_vec());
        }
    }
    sent
}

/// Checks that both sides sent the same, up to the names in `names` (with
/// `{n}` for the side) that each side gave its rows.
fn assert_same_operations(sent: &[Vec<Vec<Vec<Value>>>; 2], cmds: &[&[&str]], names: &[&str]) {
    let norm = |side: usize, txns: &[Vec<Value>]| {
        let mut text =
            serde_json::to_string(&txns.iter().map(|ops| normalize_unordered(ops)).collect::<Vec<_>>()).unwrap();
        for name in names {
            text = text.replace(&format!("\"{}\"", name.replace("{n}", &side.to_string())), &format!("\"{name}\""));
        }
        text
    };
    for (i, (r, o)) in sent[0].iter().zip(&sent[1]).enumerate() {
        assert_eq!(norm(1, o), norm(0, r), "command {:?}", cmds[i]);
    }
}

#[test]
fn set_sends_the_same_operations_as_ovs_vsctl() {
    let s = LoggedServer::start("set");
    for br in ["br0", "br1"] {
        s.run(false, &["init", "--", "add-br", br]);
        s.run(false, &["set", "Bridge", br, "other_config:k=v", "external_ids:a=b"]);
    }
    let cmds: &[&[&str]] = &[
        // Last command: one mutate inserting the pair, no wait.
        &["set", "Bridge", "br{n}", "external_ids:c=d"],
        // A key that exists gets the new value: delete + insert.
        &["set", "Bridge", "br{n}", "other_config:k=w"],
        // The value it has already: nothing to send.
        &["set", "Bridge", "br{n}", "other_config:k=w"],
        // Several keys and a whole column: an update and one mutate.
        &["set", "Bridge", "br{n}", "external_ids:e=f", "other_config:x=y", "fail_mode=secure", "external_ids:e=g"],
        // The same key twice: the later value wins.
        &["set", "Bridge", "br{n}", "external_ids:a=1", "external_ids:a=2"],
        // A whole-column write, then a key on top of it.
        &["set", "Bridge", "br{n}", "external_ids={z=0}", "external_ids:n=1"],
        // Not the last command: wait + whole-column update; the last one
        // then mutates on top of the written value.
        &["set", "Bridge", "br{n}", "external_ids:g=1", "--", "set", "Bridge", "br{n}", "external_ids:h=2"],
        &["set", "Bridge", "br{n}", "external_ids:q=r", "--", "get", "Bridge", "br{n}", "external_ids:q"],
        // A whole set column stays a plain update.
        &["set", "Bridge", "br{n}", "flood_vlans=1,2"],
        // Other tables.
        &["set", "Port", "br{n}", "external_ids:p=1", "other_config:q=2"],
        &["--if-exists", "set", "Bridge", "br9", "external_ids:a=b"],
        // A key the column lacks when it is set is a plain insert, which
        // the server ignores when a later whole-column write has the key.
        &["set", "Bridge", "br{n}", "external_ids:fresh=1", "external_ids={fresh=2}"],
    ];
    let sent = sent_by_each([&s, &s], cmds);
    assert_same_operations(&sent, cmds, &[]);
    let ours = &sent[1];
    assert!(ours[2].is_empty() && ours[10].is_empty(), "nothing to change, nothing sent");
    assert_eq!(ours.iter().filter(|t| t.len() == 1).count(), cmds.len() - 2);
    let ops =
        |i: usize| normalize(&ours[i][0]).iter().map(|op| op["op"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(ops(0), ["mutate"]);
    assert_eq!(ops(3), ["update", "mutate"]);
    assert_eq!(ops(6), ["wait", "update", "mutate"]);
    assert_eq!(ops(7), ["wait", "update"]);
    assert_eq!(ops(8), ["update"]);
    assert_eq!(
        normalize(&ours[1][0])[0]["mutations"],
        serde_json::json!([
            ["other_config", "delete", ["set", ["k"]]],
            ["other_config", "insert", ["map", [["k", "w"]]]]
        ])
    );
    assert_eq!(
        normalize(&ours[3][0])[1]["mutations"],
        serde_json::json!([
            ["external_ids", "insert", ["map", [["e", "g"]]]],
            ["other_config", "insert", ["map", [["x", "y"]]]]
        ])
    );
    let get = |br: &str, col: &str| String::from_utf8(s.run(false, &["get", "Bridge", br, col]).stdout).unwrap();
    for br in ["br0", "br1"] {
        assert_eq!(get(br, "external_ids"), "{fresh=\"2\"}\n");
        assert_eq!(get(br, "other_config"), "{k=w, x=y}\n");
    }
}

#[test]
fn bond_iface_and_zone_tp_send_the_same_operations_as_ovs_vsctl() {
    // One server per side: the policy rows of add-zone-tp are shared by
    // every datapath, so each side needs its own database.
    let servers = [LoggedServer::start("bond-zone-real"), LoggedServer::start("bond-zone-ours")];
    for (n, s) in servers.iter().enumerate() {
        let (br, bond, dp) = (format!("br{n}"), format!("bond{n}"), format!("dp{n}"));
        let ifaces = [format!("a{n}"), format!("b{n}")];
        s.run(false, &["init", "--", "add-br", &br, "--", "add-bond", &br, &bond, &ifaces[0], &ifaces[1]]);
        let dp = format!("datapaths:{dp}=@d");
        s.run(
            false,
            &["--", "--id=@d", "create", "Datapath", "datapath_version=0", "--", "set", "Open_vSwitch", ".", &dp],
        );
    }
    let cmds: &[&[&str]] = &[
        // A new Interface row and a mutate adding it to the bond.
        &["add-bond-iface", "bond{n}", "c{n}"],
        &["add-bond-iface", "bond{n}", "d{n}", "--", "list-ifaces", "br{n}"],
        // A mutate removing it; the row goes by garbage collection.
        &["del-bond-iface", "bond{n}", "a{n}"],
        &["del-bond-iface", "d{n}"],
        // New zones: the zone row, maybe a policy row, a mutate of ct_zones.
        &["add-zone-tp", "dp{n}", "zone=1", "icmp_first=1", "icmp_reply=2"],
        &["add-zone-tp", "dp{n}", "zone=2", "icmp_first=1", "icmp_reply=2"],
        &["add-zone-tp", "dp{n}", "zone=3", "udp_first=5"],
        // An existing zone gets its policy replaced: no mutate.
        &["--may-exist", "add-zone-tp", "dp{n}", "zone=3", "udp_first=6"],
        &["del-zone-tp", "dp{n}", "zone=1"],
        &["--if-exists", "del-zone-tp", "dp{n}", "zone=9"],
    ];
    let sent = sent_by_each([&servers[0], &servers[1]], cmds);
    assert_same_operations(&sent, cmds, &["c{n}", "d{n}"]);
    let ours = &sent[1];
    let has_mutate =
        |i: usize, table: &str| ours[i].iter().flatten().any(|op| op["op"] == "mutate" && op["table"] == table);
    for (i, cmd) in cmds.iter().enumerate().take(4) {
        assert!(has_mutate(i, "Port"), "command {cmd:?}");
    }
    for i in [4, 5, 6, 8] {
        assert!(has_mutate(i, "Datapath"), "command {:?}", cmds[i]);
    }
    assert!(!has_mutate(7, "Datapath"));
    assert!(ours[9].is_empty());
    for (n, s) in servers.iter().enumerate() {
        let o = s.run(false, &["list-ifaces", &format!("br{n}")]);
        assert_eq!(String::from_utf8_lossy(&o.stdout), format!("b{n}\nc{n}\n"));
        let o = s.run(false, &["list-zone-tp", &format!("dp{n}")]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "Zone:2, Timeout Policies: icmp_first=1 icmp_reply=2\nZone:3, Timeout Policies: udp_first=6\n"
        );
    }
}

#[test]
fn concurrent_sets_of_map_keys_are_never_retried() {
    let s = LoggedServer::start("concurrent-set");
    s.run(false, &["init", "--", "add-br", "br0"]);
    let before = s.transactions().len();
    let pairs: Vec<String> = (1..=12).map(|i| format!("external_ids:k{i}=v")).collect();
    s.run_ours_at_once(pairs.iter().map(|p| vec!["set", "Bridge", "br0", p.as_str()]).collect());
    let o = s.run(false, &["get", "Bridge", "br0", "external_ids"]);
    let mut keys: Vec<String> = (1..=12).map(|i| format!("k{i}")).collect();
    keys.sort();
    let want: Vec<String> = keys.iter().map(|k| format!("{k}=v")).collect();
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{{{}}}\n", want.join(", ")));
    let txns = s.transactions();
    let sets = &txns[before..txns.len()];
    assert_eq!(sets.len(), 12, "one transaction per run, no retries");
    assert!(sets.iter().flatten().all(|op| op["op"] != "wait"));
    assert!(!s.log().contains("timed out"));
}
