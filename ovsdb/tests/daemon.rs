//! oxvsdb-server as a process, the way OVS's own test suite drives
//! ovsdb-server: `--run`, `--detach` with a pidfile that `ovs-appctl` trusts,
//! `ptcp:0` announcing its port in the log, and a database file with a bad
//! transaction at its end. Uses OVS's ovsdb-tool, ovsdb-client and ovs-appctl
//! (`cargo xtask setup` installs them).
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

const SCHEMA: &str = r#"{"name": "ordinals", "version": "1.0.0", "tables": {
  "ordinals": {"columns": {"name": {"type": "string"}, "number": {"type": "integer"}}}}}"#;

/// A temp dir with a fresh database `db`; kills a detached server (by the
/// pid in its pidfile) and removes the dir on drop, panics included.
struct Dir {
    path: PathBuf,
}

impl Dir {
    fn new(tag: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("oxvsdb-daemon-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("schema"), SCHEMA).unwrap();
        let o = Command::new("ovsdb-tool").current_dir(&path).args(["create", "db", "schema"]).output();
        let o = o.expect("ovsdb-tool missing: run `cargo xtask setup`");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        Dir { path }
    }

    /// Runs a tool in the dir with OVS's directories pointed at it.
    fn run(&self, prog: &str, args: &[&str]) -> Output {
        Command::new(prog)
            .current_dir(&self.path)
            .env("OVS_RUNDIR", &self.path)
            .env("OVS_LOGDIR", &self.path)
            .env("OVS_DBDIR", &self.path)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{prog}: {e}"))
    }

    fn server(&self, args: &[&str]) -> Output {
        self.run(env!("CARGO_BIN_EXE_oxvsdb-server"), args)
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.path.join("ovsdb-server.pid")).ok()?.trim().parse().ok()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on the pid our own detached server wrote.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const INSERT: &str = r#"ovsdb-client transact unix:socket '["ordinals", {"op": "insert", "table": "ordinals", "row": {"number": 1, "name": "one"}}]'"#;
const SELECT: &str =
    r#"ovsdb-client transact unix:socket '["ordinals", {"op": "select", "table": "ordinals", "where": []}]'"#;

#[test]
fn run_option_runs_the_command_and_exits_with_it() {
    let d = Dir::new("run");
    let o = d.server(&["--remote=punix:socket", "--unixctl=ctl", "db", &format!("--run={INSERT}")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with(r#"[{"uuid":["uuid","#), "{}", text(&o.stdout));
    let o = d.server(&["--remote=punix:socket", "--unixctl=ctl", "db", &format!("--run={SELECT}")]);
    assert!(text(&o.stdout).contains(r#""name":"one""#), "{}", text(&o.stdout));
    // The command's failure is the server's.
    let o = d.server(&["--remote=punix:socket", "--unixctl=ctl", "db", "--run=exit 3"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("exit 3: child exited"), "{}", text(&o.stderr));
}

#[test]
fn a_transaction_that_does_not_apply_ends_the_database_and_is_truncated() {
    let d = Dir::new("badtxn");
    let o = d.server(&["--remote=punix:socket", "--unixctl=ctl", "db", &format!("--run={INSERT}")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut f = std::fs::OpenOptions::new().append(true).open(d.path.join("db")).unwrap();
    std::io::Write::write_all(&mut f, b"OVSDB JSON 15 ffbcdae4b0386265f9ea3280dd7c8f0b72a20e56\n{\"invalid\":{}}\n")
        .unwrap();
    drop(f);
    let o = d.server(&["--remote=punix:socket", "--unixctl=ctl", "db", &format!("--run={INSERT}")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(r#"syntax "{"invalid":{}}": unknown table: No table named invalid."#),
        "{}",
        text(&o.stderr)
    );
    let file = std::fs::read_to_string(d.path.join("db")).unwrap();
    assert!(!file.contains("invalid"), "{file}");
    // Garbage that is not a record at all: logged as a syntax error.
    let mut f = std::fs::OpenOptions::new().append(true).open(d.path.join("db")).unwrap();
    std::io::Write::write_all(&mut f, b"xxx\n").unwrap();
    drop(f);
    let o = d.server(&["--remote=punix:socket", "--unixctl=ctl", "db", &format!("--run={SELECT}")]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("syntax error: db: parse error"), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).matches(r#""name":"one""#).count(), 2, "{}", text(&o.stdout));
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn file_contains(p: &Path, s: &str) -> bool {
    std::fs::read_to_string(p).is_ok_and(|t| t.contains(s))
}

#[test]
fn detached_server_is_ready_on_return_and_obeys_appctl_exit() {
    let d = Dir::new("detach");
    let o = d.server(&[
        "--detach",
        "--no-chdir",
        "--pidfile",
        "--log-file",
        "--remote=punix:socket",
        "--remote=ptcp:0:127.0.0.1",
        "db",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let pid = d.pid().expect("pidfile written before --detach returns");
    // Ready means bound: the socket is there without waiting.
    assert!(d.path.join("socket").exists());
    let o = d.run("ovsdb-client", &["list-dbs", "unix:socket"]);
    assert_eq!(text(&o.stdout), "_Server\nordinals\n", "{}", text(&o.stderr));
    assert!(file_contains(&d.path.join("ovsdb-server.log"), "0:127.0.0.1: listening on port "));
    // A second server on the same pidfile refuses to start.
    let o = d.server(&["--pidfile", "--remote=punix:socket2", "--unixctl=ctl2", "db"]);
    assert!(!o.status.success());
    assert_eq!(d.pid(), Some(pid));
    // ovs-appctl only trusts a pidfile its writer holds locked.
    let o = d.run("ovs-appctl", &["-t", "ovsdb-server", "exit"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    wait_for("the server to exit", || !alive(pid));
    assert!(!d.path.join("ovsdb-server.pid").exists());
}

/// Kills a `--detach`ed server by the pid in its pidfile when dropped.
struct PidGuard(PathBuf);

impl Drop for PidGuard {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) on the pid our own detached server wrote.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn a_backup_server_mirrors_the_active_one_and_is_read_only() {
    let d = Dir::new("repl");
    let o = d.run("ovsdb-tool", &["create", "db2", "schema"]);
    assert!(o.status.success());
    let _backup = start_two_servers(&d, &["--sync-from=unix:socket", "db2"]);
    let o = d.run("sh", &["-c", INSERT]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let ctl = d.path.join("unixctl2");
    let ctl = ctl.to_str().unwrap();
    let dump = |sock: &str| text(&d.run("ovsdb-client", &["dump", sock]).stdout);
    wait_for("the backup to catch up", || dump("unix:socket2").contains("one"));
    // Same rows, same uuids.
    assert_eq!(dump("unix:socket"), dump("unix:socket2"));
    let status = d.run("ovs-appctl", &["-t", ctl, "ovsdb-server/sync-status"]);
    assert_eq!(text(&status.stdout), "state: backup\nreplicating: unix:socket\ndatabase: ordinals\n");
    let write = r#"["ordinals", {"op": "insert", "table": "ordinals", "row": {"number": 2, "name": "two"}}]"#;
    let o = d.run("ovsdb-client", &["transact", "unix:socket2", write]);
    assert_eq!(
        text(&o.stdout),
        "[{\"details\":\"insert operation not allowed when database server is in read only mode\",\"error\":\"not allowed\"}]\n"
    );
    // Deletes replicate too.
    let del = r#"["ordinals", {"op": "delete", "table": "ordinals", "where": []}]"#;
    assert!(d.run("ovsdb-client", &["transact", "unix:socket", del]).status.success());
    wait_for("the delete to replicate", || !dump("unix:socket2").contains("one"));
    // Disconnected, the backup is active and writable.
    let o = d.run("ovs-appctl", &["-t", ctl, "ovsdb-server/disconnect-active-ovsdb-server"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = d.run("ovsdb-client", &["transact", "unix:socket2", write]);
    assert!(text(&o.stdout).starts_with(r#"[{"uuid":"#), "{}", text(&o.stdout));
    // A server may not replicate itself.
    let o = d.run("ovs-appctl", &["-t", ctl, "ovsdb-server/set-active-ovsdb-server", "unix:socket2"]);
    assert!(o.status.success());
    d.run("ovs-appctl", &["-t", ctl, "ovsdb-server/connect-active-ovsdb-server"]);
    wait_for("self-replication to be refused", || {
        file_contains(&d.path.join("2.log"), "Self replicating is not allowed")
    });
    wait_for("the server to be active again", || {
        text(&d.run("ovs-appctl", &["-t", ctl, "ovsdb-server/sync-status"]).stdout) == "state: active\n"
    });
    assert!(dump("unix:socket2").contains("two"));
}

/// Starts a detached server on `db` at `socket`, then a second one at
/// `socket2` (pidfile 2.pid, log 2.log, unixctl2) with `last` as its final
/// arguments. The guard stops the second; the first is the Dir's.
fn start_two_servers(d: &Dir, last: &[&str]) -> PidGuard {
    let o = d.server(&["--detach", "--no-chdir", "--pidfile", "--log-file", "--remote=punix:socket", "db"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut args = vec![
        "--detach",
        "--no-chdir",
        "--pidfile=2.pid",
        "--log-file=2.log",
        "--remote=punix:socket2",
        "--unixctl=unixctl2",
    ];
    args.extend_from_slice(last);
    let o = d.server(&args);
    let guard = PidGuard(d.path.join("2.pid"));
    assert!(o.status.success(), "{}", text(&o.stderr));
    guard
}

#[test]
fn a_relay_serves_its_sources_database_and_forwards_writes() {
    let d = Dir::new("relay");
    let _relay = start_two_servers(&d, &["relay:ordinals:unix:socket"]);
    let o = d.run("ovsdb-client", &["list-dbs", "unix:socket2"]);
    assert_eq!(text(&o.stdout), "_Server\nordinals\n");
    // A write through the relay lands in the source and comes back.
    let write = r#"["ordinals", {"op": "insert", "table": "ordinals", "row": {"number": 2, "name": "two"}}]"#;
    let o = d.run("ovsdb-client", &["transact", "unix:socket2", write]);
    assert!(text(&o.stdout).starts_with(r#"[{"uuid":"#), "{}", text(&o.stdout));
    let dump = |sock: &str| text(&d.run("ovsdb-client", &["dump", sock]).stdout);
    assert!(dump("unix:socket").contains("two"));
    wait_for("the relay to see the write", || dump("unix:socket2") == dump("unix:socket"));
    // Errors come from the source, verbatim.
    let bad = r#"["ordinals", {"op": "insert", "table": "nope", "row": {}}]"#;
    let direct = d.run("ovsdb-client", &["transact", "unix:socket", bad]);
    let relayed = d.run("ovsdb-client", &["transact", "unix:socket2", bad]);
    assert_eq!(text(&relayed.stdout), text(&direct.stdout));
    assert_eq!(text(&relayed.stderr), text(&direct.stderr));
}

#[test]
fn db_remotes_honour_read_only_and_bad_ones_are_refused() {
    let d = Dir::new("dbremote");
    let schema = r#"{"name": "mydb", "tables": {
      "Root": {"columns": {"managers": {"type": {"key": {"type": "uuid", "refTable": "Manager"}, "min": 0, "max": "unlimited"}}}},
      "Manager": {"columns": {"target": {"type": "string"}, "read_only": {"type": {"key": "boolean", "min": 0, "max": 1}},
        "is_connected": {"type": {"key": "boolean", "min": 0, "max": 1}}}},
      "ordinals": {"columns": {"number": {"type": "integer"}}}}}"#;
    std::fs::write(d.path.join("schema2"), schema).unwrap();
    assert!(d.run("ovsdb-tool", &["create", "db2", "schema2"]).status.success());
    let setup = r#"["mydb", {"op": "insert", "table": "Root", "row": {"managers": ["set", [["named-uuid", "ro"], ["named-uuid", "rw"]]]}},
        {"op": "insert", "table": "Manager", "uuid-name": "ro", "row": {"target": "punix:ro.sock", "read_only": true}},
        {"op": "insert", "table": "Manager", "uuid-name": "rw", "row": {"target": "punix:rw.sock"}}]"#;
    assert!(d.run("ovsdb-tool", &["transact", "db2", setup]).status.success());
    let o = d.server(&["--detach", "--no-chdir", "--pidfile", "--remote=db:mydb,Root,managers", "db2"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let insert = r#"["mydb", {"op": "insert", "table": "ordinals", "row": {"number": 1}}]"#;
    let o = d.run("ovsdb-client", &["transact", "unix:ro.sock", insert]);
    assert_eq!(
        text(&o.stdout),
        "[{\"details\":\"insert operation not allowed when database server is in read only mode\",\"error\":\"not allowed\"}]\n"
    );
    // The server fills in the status of the remotes it was told about.
    let managers = r#"["mydb", {"op": "select", "table": "Manager", "where": [["target", "==", "punix:ro.sock"]], "columns": ["is_connected"]}]"#;
    let o = d.run("ovsdb-client", &["transact", "unix:rw.sock", managers]);
    assert_eq!(text(&o.stdout), "[{\"rows\":[{\"is_connected\":false}]}]\n");
    let select = r#"["mydb", {"op": "select", "table": "ordinals", "where": []}]"#;
    assert_eq!(text(&d.run("ovsdb-client", &["transact", "unix:ro.sock", select]).stdout), "[{\"rows\":[]}]\n");
    let o = d.run("ovsdb-client", &["transact", "unix:rw.sock", insert]);
    assert!(text(&o.stdout).starts_with(r#"[{"uuid":"#), "{}", text(&o.stdout));
    for (spec, complaint) in [
        ("db:x,y,z", "\"db:x,y,z\": no database named x"),
        ("db:mydb,y,z", "\"db:mydb,y,z\": no table named y"),
        ("db:mydb,Root,z", "\"db:mydb,Root,z\": table \"Root\" has no column \"z\""),
    ] {
        let o = d.run("ovs-appctl", &["-t", "ovsdb-server", "ovsdb-server/add-remote", spec]);
        assert_eq!(o.status.code(), Some(2));
        assert!(text(&o.stderr).starts_with(complaint), "{}", text(&o.stderr));
    }
    // Listed sorted, as OVS does.
    assert!(d.run("ovs-appctl", &["-t", "ovsdb-server", "ovsdb-server/add-remote", "punix:a.sock"]).status.success());
    let o = d.run("ovs-appctl", &["-t", "ovsdb-server", "ovsdb-server/list-remotes"]);
    assert_eq!(text(&o.stdout), "db:mydb,Root,managers\npunix:a.sock\n");
}

#[test]
fn monitor_restarts_a_crashed_server_with_its_run_time_remotes() {
    let d = Dir::new("monitor");
    let other = r#"{"name": "other", "tables": {"t": {"columns": {"x": {"type": "integer"}}}}}"#;
    std::fs::write(d.path.join("schema2"), other).unwrap();
    assert!(d.run("ovsdb-tool", &["create", "db2", "schema2"]).status.success());
    let o = d.server(&["--monitor", "--detach", "--no-chdir", "--pidfile", "--log-file", "db"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let appctl = |args: &[&str]| {
        let mut a = vec!["-t", "ovsdb-server"];
        a.extend_from_slice(args);
        d.run("ovs-appctl", &a)
    };
    assert!(appctl(&["ovsdb-server/add-remote", "punix:socket1"]).status.success());
    assert!(appctl(&["ovsdb-server/add-remote", "punix:socket2"]).status.success());
    assert!(appctl(&["ovsdb-server/remove-remote", "punix:socket2"]).status.success());
    assert!(appctl(&["ovsdb-server/add-db", "db2"]).status.success());
    wait_for("socket1", || d.path.join("socket1").exists());
    let old = d.pid().unwrap();
    std::fs::remove_file(d.path.join("socket1")).unwrap();
    // SAFETY: kill(2) on the pid our own server wrote.
    unsafe { libc::kill(old, libc::SIGSEGV) };
    wait_for("the old server to die", || !alive(old));
    wait_for("a new server", || d.pid().is_some_and(|p| p != old && alive(p)));
    wait_for("the new server's socket1", || d.path.join("socket1").exists());
    let o = appctl(&["ovsdb-server/list-remotes"]);
    assert_eq!(text(&o.stdout), "punix:socket1\n");
    // The database added at run time is served again too.
    assert_eq!(text(&appctl(&["ovsdb-server/list-dbs"]).stdout), "_Server\nordinals\nother\n");
    assert!(!d.path.join("socket2").exists());
    // A clean exit ends the monitor too: nothing comes back.
    let new = d.pid().unwrap();
    assert!(appctl(&["exit"]).status.success());
    wait_for("the server to exit", || !alive(new));
    std::thread::sleep(Duration::from_millis(800));
    assert!(d.pid().is_none());
}

#[test]
fn databases_come_and_go_at_run_time() {
    use std::io::Write;
    // One JSON-RPC message (they are not newline-terminated); None at EOF.
    fn read_msg(s: &mut std::os::unix::net::UnixStream) -> Option<serde_json::Value> {
        serde_json::Deserializer::from_reader(s).into_iter::<serde_json::Value>().next()?.ok()
    }
    let d = Dir::new("adddb");
    let other = r#"{"name": "other", "tables": {"t": {"columns": {"x": {"type": "integer"}}}}}"#;
    std::fs::write(d.path.join("schema2"), other).unwrap();
    assert!(d.run("ovsdb-tool", &["create", "db2", "schema2"]).status.success());
    let o = d.server(&["--detach", "--no-chdir", "--pidfile", "--remote=punix:socket", "db"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let appctl = |args: &[&str]| {
        let mut a = vec!["-t", "ovsdb-server"];
        a.extend_from_slice(args);
        d.run("ovs-appctl", &a)
    };
    // One client that follows database changes, one that doesn't.
    let connect = || {
        let s = std::os::unix::net::UnixStream::connect(d.path.join("socket")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let mut aware = connect();
    aware.write_all(br#"{"method":"set_db_change_aware","params":[true],"id":1}"#).unwrap();
    assert_eq!(read_msg(&mut aware).unwrap()["result"], serde_json::json!({}));
    let mut unaware = connect();
    unaware.write_all(br#"{"method":"echo","params":[],"id":1}"#).unwrap();
    assert!(read_msg(&mut unaware).is_some());

    assert!(appctl(&["ovsdb-server/add-db", "db2"]).status.success());
    assert_eq!(text(&appctl(&["ovsdb-server/list-dbs"]).stdout), "_Server\nordinals\nother\n");
    let o = d.run("ovsdb-client", &["list-tables", "unix:socket", "other"]);
    assert!(text(&o.stdout).contains('t'), "{}", text(&o.stderr));
    // The unaware client was disconnected, the aware one was not.
    assert_eq!(read_msg(&mut unaware), None);
    aware.write_all(br#"{"method":"echo","params":[],"id":2}"#).unwrap();
    // The aware client is still connected, and answers.
    assert_eq!(read_msg(&mut aware).unwrap()["id"], serde_json::json!(2));

    let o = appctl(&["ovsdb-server/add-db", "db2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).starts_with("ovsdb error: db2: already open\n"), "{}", text(&o.stderr));
    let o = appctl(&["ovsdb-server/add-db", "db3"]);
    assert!(text(&o.stderr).starts_with("I/O error: db3: open failed ("), "{}", text(&o.stderr));
    assert!(appctl(&["ovsdb-server/remove-db", "other"]).status.success());
    assert_eq!(text(&appctl(&["ovsdb-server/list-dbs"]).stdout), "_Server\nordinals\n");
    let o = d.run("ovsdb-client", &["--no-headings", "dump", "unix:socket", "_Server", "Database", "name"]);
    assert!(!text(&o.stdout).contains("other"), "{}", text(&o.stdout));
    let o = appctl(&["ovsdb-server/remove-db", "other"]);
    assert!(text(&o.stderr).starts_with("Failed to find the database.\n"), "{}", text(&o.stderr));
    // Asked for, it is an unknown database (answered as OVS does).
    aware.write_all(br#"{"method":"get_schema","params":["other"],"id":3}"#).unwrap();
    let reply = read_msg(&mut aware).unwrap();
    assert_eq!(
        reply["error"],
        serde_json::json!({"details": "get_schema request specifies unknown database other",
                           "error": "unknown database", "syntax": "[\"other\"]"})
    );
    // Its file is free again.
    assert!(d.run("ovsdb-tool", &["transact", "db2", r#"["other"]"#]).status.success());
}
