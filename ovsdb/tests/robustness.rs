//! oxvsdb-server under bad input and crashes: every kind of bad message gets
//! an error or a closed session, never a crash or a stuck server, and other
//! sessions keep working; a server killed with SIGKILL loses no transaction
//! it acknowledged; requests pipelined in one write see each other's commits.
use std::{
    io::{BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

const SCHEMA: &str = r#"{"name": "T", "version": "1.0.0", "tables": {
  "Item": {"columns": {"name": {"type": "string"}, "n": {"type": "integer"}}, "isRoot": true}}}"#;

struct Srv {
    dir: PathBuf,
    db: PathBuf,
    sock: PathBuf,
    child: Option<Child>,
}

impl Srv {
    fn new(tag: &str) -> Srv {
        let dir = std::env::temp_dir().join(format!("oxvsdb-rob-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.ovsschema"), SCHEMA).unwrap();
        let db = dir.join("t.db");
        let o = Command::new("ovsdb-tool").arg("create").arg(&db).arg(dir.join("t.ovsschema")).output();
        let o = o.expect("ovsdb-tool missing: run `cargo xtask setup`");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let sock = dir.join("db.sock");
        let mut s = Srv { dir, db, sock, child: None };
        s.start();
        s
    }

    fn start(&mut self) {
        let _ = std::fs::remove_file(&self.sock);
        let child = Command::new(env!("CARGO_BIN_EXE_oxvsdb-server"))
            .arg(&self.db)
            .arg(format!("--remote=punix:{}", self.sock.display()))
            .arg(format!("--unixctl={}", self.dir.join("ctl").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t = Instant::now();
        while UnixStream::connect(&self.sock).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL, by pid
            let _ = c.wait();
        }
    }

    fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    fn connect(&self) -> Client {
        let s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Client { r: BufReader::new(s.try_clone().unwrap()), w: s, next: 1 }
    }
}

impl Drop for Srv {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A minimal JSON-RPC client: one request at a time, notifications skipped.
struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
    next: u64,
}

impl Client {
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let m = json!({"method": method, "params": params, "id": id});
        self.w.write_all(m.to_string().as_bytes()).unwrap();
        loop {
            let v = self.read().expect("connection closed");
            if v["id"] == json!(id) {
                return v;
            }
        }
    }

    /// The next JSON value the server sends, None at EOF.
    fn read(&mut self) -> Option<Value> {
        let mut de = serde_json::Deserializer::from_reader(&mut self.r).into_iter::<Value>();
        de.next().and_then(Result::ok)
    }

    /// True when the server closed the session (a time-out is not a close).
    fn closed(&mut self) -> bool {
        if !self.r.buffer().is_empty() {
            return false;
        }
        let mut b = [0u8; 1];
        match self.r.get_mut().read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }
}

fn works(s: &Srv) {
    let mut c = s.connect();
    assert_eq!(c.call("list_dbs", json!([]))["result"], json!(["T", "_Server"]));
}

#[test]
fn bad_input_gets_errors_or_a_closed_session() {
    let mut s = Srv::new("bad");
    // Protocol-level errors get error replies on a session that stays open.
    let mut c = s.connect();
    assert_eq!(c.call("frobnicate", json!([]))["error"], json!("unknown method"));
    assert_eq!(c.call("get_schema", json!(["Nope"]))["error"]["error"], json!("unknown database"));
    assert_eq!(c.call("transact", json!([]))["error"]["error"], json!("syntax error"));
    let r = c.call("transact", json!(["T", {"op": "insert", "table": "Nope", "row": {}}]));
    assert_eq!(r["result"][0]["error"], json!("syntax error"));
    let r = c.call("transact", json!(["T", {"op": "insert", "table": "Item", "row": {"n": "seven"}}]));
    assert!(r["result"][0]["error"].is_string(), "{r}");
    let r = c.call("transact", json!(["T", {"op": "insert", "table": "Item", "row": {"zz": 1}}]));
    assert!(r["result"][0]["error"].is_string(), "{r}");
    let r = c.call("transact", json!(["T", {"op": "select", "table": "Item", "where": [["n", "<", "x"]]}]));
    assert!(r["result"][0]["error"].is_string(), "{r}");
    assert_eq!(c.call("lock", json!([5]))["error"]["error"], json!("syntax error"));
    assert_eq!(c.call("monitor_cancel", json!(["nope"]))["error"], json!("unknown monitor"));
    // A failed transaction leaves nothing behind.
    let r = c.call("transact", json!(["T", {"op": "insert", "table": "Item", "row": {"name": "a"}}, {"op": "abort"}]));
    assert_eq!(r["result"][1]["error"], json!("aborted"));
    let r = c.call("transact", json!(["T", {"op": "select", "table": "Item", "where": []}]));
    assert_eq!(r["result"][0]["rows"], json!([]));

    // Malformed JSON, a message of the wrong shape, deep nesting: the session
    // is closed; the server and other sessions go on.
    for bad in [
        b"{]".to_vec(),
        br#"{"method": 5, "params": [], "id": 1}"#.to_vec(),
        br#"{"method": "echo", "params": {}, "id": 1}"#.to_vec(),
        br#""just a string""#.to_vec(),
        [b"[".repeat(100_000), b"]".repeat(100_000)].concat(),
    ] {
        let mut b = s.connect();
        let _ = b.w.write_all(&bad);
        assert!(b.closed(), "session not closed after {:?}...", String::from_utf8_lossy(&bad[..bad.len().min(40)]));
        assert!(s.alive());
        works(&s);
        assert_eq!(c.call("echo", json!(["still here"]))["result"], json!(["still here"]));
    }

    // A 100 MB message: refused once past the limit, without buffering it all.
    let mut big = s.connect();
    let t = Instant::now();
    let _ = big.w.write_all(br#"{"method":"echo","id":1,"params":[""#);
    big.w.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    let mut err = None;
    for _ in 0..100 {
        if let Err(e) = big.w.write_all(&chunk) {
            err = Some(e.kind());
            break;
        }
        sent += 1;
    }
    // The server closed the session (not merely stopped reading).
    assert!(
        matches!(err, Some(std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)),
        "after {sent} MB: {err:?}"
    );
    assert!(sent <= 65, "server read {sent} MB of one message");
    assert!(t.elapsed() < Duration::from_secs(60));
    assert!(s.alive());
    works(&s);
}

#[test]
fn a_client_that_never_reads_does_not_stall_others() {
    let s = Srv::new("slow");
    // The slow client monitors everything and then never reads.
    let mut slow = s.connect();
    let r = slow.call("monitor", json!(["T", "m", {"Item": {}}]));
    assert!(r["result"].is_object());
    let mut c = s.connect();
    let pad = "p".repeat(64 * 1024);
    let t = Instant::now();
    for i in 0..400 {
        let r = c.call(
            "transact",
            json!(["T", {"op": "insert", "table": "Item", "row": {"name": format!("{pad}{i}"), "n": i}}]),
        );
        assert!(r["result"][0]["uuid"].is_array(), "{r}");
    }
    // 400 x 64 KiB of updates queued for a reader that never reads: the
    // server either buffers them within its bound or drops that session, and
    // the writer was never held up.
    assert!(t.elapsed() < Duration::from_secs(60), "writer stalled: {:?}", t.elapsed());
    works(&s);
    drop(slow);
}

#[test]
fn acknowledged_transactions_survive_sigkill() {
    let mut s = Srv::new("dur");
    for round in 0..3 {
        let acked: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for t in 0..4 {
            let sock = s.sock.clone();
            let acked = acked.clone();
            threads.push(std::thread::spawn(move || {
                let Ok(st) = UnixStream::connect(&sock) else { return };
                st.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut c = Client { r: BufReader::new(st.try_clone().unwrap()), w: st, next: 1 };
                for i in 0.. {
                    let m = json!({"method": "transact", "id": i,
                        "params": ["T", {"op": "insert", "table": "Item", "row": {"name": format!("r{round}t{t}i{i}"), "n": i}}]});
                    if c.w.write_all(m.to_string().as_bytes()).is_err() {
                        return;
                    }
                    match c.read() {
                        Some(v) if v["result"][0]["uuid"].is_array() => {
                            acked.lock().unwrap().push(v["result"][0]["uuid"][1].as_str().unwrap().to_string())
                        }
                        _ => return,
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(200 + 150 * round));
        s.kill();
        for t in threads {
            t.join().unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        assert!(!acked.is_empty(), "no transaction was acknowledged");
        s.start();
        let mut c = s.connect();
        let r = c.call("transact", json!(["T", {"op": "select", "table": "Item", "where": [], "columns": ["_uuid"]}]));
        let have: std::collections::HashSet<String> = r["result"][0]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["_uuid"][1].as_str().unwrap().to_string())
            .collect();
        let lost: Vec<&String> = acked.iter().filter(|u| !have.contains(*u)).collect();
        assert!(lost.is_empty(), "round {round}: {} of {} acknowledged rows lost", lost.len(), acked.len());
    }
    // Real ovsdb-tool opens the file the crashes left.
    s.kill();
    let o = Command::new("ovsdb-tool").arg("show-log").arg(&s.db).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Requests sent back to back in one write are handled in one batch of the
/// server's loop, where a commit is applied to the database only once the
/// batch's replies are out: each request must still see every commit made
/// before it, and so must monitors and later batches.
#[test]
fn pipelined_requests_see_the_commits_before_them() {
    let s = Srv::new("pipe");
    let mut c = s.connect();
    let item = |name: &str, n: i64| json!({"op": "insert", "table": "Item", "row": {"name": name, "n": n}});
    let mut big = vec![json!("T")];
    big.extend((0..300).map(|i| item(&format!("b{i}"), i)));
    let reqs = [
        json!({"id": 1, "method": "transact", "params": ["T", item("a", 1)]}),
        json!({"id": 2, "method": "transact", "params": ["T",
            {"op": "select", "table": "Item", "where": [["name", "==", "a"]], "columns": ["n"]}]}),
        json!({"id": 3, "method": "transact", "params": ["T",
            {"op": "mutate", "table": "Item", "where": [["name", "==", "a"]], "mutations": [["n", "+=", 1]]}]}),
        json!({"id": 4, "method": "monitor_cond", "params": ["T", "m", {"Item": [{"columns": ["n"], "where": [["name", "==", "a"]]}]}]}),
        json!({"id": 5, "method": "transact", "params": big}),
        json!({"id": 6, "method": "transact", "params": ["T",
            {"op": "select", "table": "Item", "where": [["n", ">=", 0]], "columns": ["name"]}]}),
    ];
    let text: String = reqs.iter().map(|r| r.to_string()).collect();
    c.w.write_all(text.as_bytes()).unwrap();
    let mut replies = std::collections::HashMap::new();
    while replies.len() < reqs.len() {
        let v = c.read().expect("connection closed");
        if let Some(id) = v["id"].as_u64() {
            assert!(v["error"].is_null(), "request {id}: {v}");
            replies.insert(id, v["result"].clone());
        }
    }
    assert_eq!(replies[&2][0]["rows"], json!([{"n": 1}]), "the select after the insert");
    assert_eq!(replies[&3][0]["count"], json!(1), "the mutate after the insert");
    let initial: Vec<&Value> = replies[&4]["Item"].as_object().unwrap().values().collect();
    assert_eq!(initial, [&json!({"initial": {"n": 2}})], "the monitor's initial rows after the mutate");
    assert_eq!(replies[&5].as_array().unwrap().len(), 300);
    assert_eq!(replies[&6][0]["rows"].as_array().unwrap().len(), 301, "the select after the 300 inserts");
    // The next batch sees them too, and the monitor hears of its change
    // (before the reply, as from OVS).
    let del = json!({"id": 7, "method": "transact", "params": ["T",
        {"op": "delete", "table": "Item", "where": [["name", "==", "a"]]}]});
    c.w.write_all(del.to_string().as_bytes()).unwrap();
    let u = c.read().expect("the monitor's update");
    assert_eq!(u["method"], json!("update2"), "{u}");
    assert_eq!(u["params"][1]["Item"].as_object().unwrap().values().collect::<Vec<_>>(), [&json!({"delete": null})]);
    let r = c.read().expect("the reply");
    assert_eq!(r["result"][0]["count"], json!(1), "{r}");
}
