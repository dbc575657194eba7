//! Servers, tool runs and the normalisation that makes two runs comparable.
use std::{
    collections::HashMap,
    fs,
    os::unix::{net::UnixStream, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

pub const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
pub const REAL_VSCTL: &str = "/usr/bin/ovs-vsctl";
pub const REAL_SERVER: &str = "/usr/sbin/ovsdb-server";
/// A command that has not finished by then counts as hung: it is killed and
/// the sequence fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("oxvs-vsctl-compat-{}-{tag}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Open vSwitch's ovsdb-server on `db`, in the foreground, killed by pid when
/// dropped (also when a test panics).
pub struct Server {
    child: Child,
    pub sock: PathBuf,
}

impl Server {
    pub fn start(dir: &Path, name: &str, db: &Path) -> Server {
        let sock = dir.join(format!("{name}.sock"));
        let log = fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(REAL_SERVER)
            .arg(db)
            .arg(format!("--remote=punix:{}", sock.display()))
            .arg(format!("--unixctl={}", dir.join(format!("{name}.ctl")).display()))
            .arg("--no-chdir")
            .env("OVS_RUNDIR", dir)
            .env("OVS_LOGDIR", dir)
            .env("OVS_DBDIR", dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {REAL_SERVER}: {e} (run `cargo xtask setup`)"));
        let mut s = Server { child, sock };
        let t = Instant::now();
        while UnixStream::connect(&s.sock).is_err() {
            if let Ok(Some(st)) = s.child.try_wait() {
                let log = fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
                panic!("ovsdb-server on {} exited at start ({st}): {log}", db.display());
            }
            assert!(t.elapsed() < Duration::from_secs(10), "ovsdb-server did not listen on {}", s.sock.display());
            std::thread::sleep(Duration::from_millis(2));
        }
        s
    }

    pub fn db(&self) -> String {
        format!("unix:{}", self.sock.display())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn need_ovs() {
    for p in [REAL_VSCTL, REAL_SERVER, SCHEMA] {
        assert!(Path::new(p).exists(), "{p} is missing: run `cargo xtask setup` (Debian's openvswitch packages)");
    }
    for tool in ["ovsdb-tool", "ovsdb-client"] {
        let ok = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(ok, "{tool} is missing: run `cargo xtask setup`");
    }
}

/// Which ovs-vsctl runs a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Real,
    Ours,
}

/// The implementation under test: `$OXVS_VSCTL` (run as is, e.g. a link
/// named `ovs-vsctl`) or else this workspace's `oxvs vsctl`.
pub fn ours_command() -> Command {
    match std::env::var_os("OXVS_VSCTL") {
        Some(p) if !p.is_empty() => Command::new(p),
        _ => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_oxvs"));
            c.arg("vsctl");
            c
        }
    }
}

pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub status: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.status == "exit 0"
    }
}

fn status_text(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => format!("{st}"),
    }
}

/// Runs one ovs-vsctl invocation against `db` with `--no-wait` (no
/// ovs-vswitchd runs to bump cur_cfg). Output goes to files so that a big
/// output cannot block the child, and a hung child is killed after a while.
pub fn vsctl(tool: Tool, dir: &Path, db: &str, args: &[String]) -> Run {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let (out_p, err_p) = (dir.join(format!("out.{n}")), dir.join(format!("err.{n}")));
    let mut c = match tool {
        Tool::Real => Command::new(REAL_VSCTL),
        Tool::Ours => ours_command(),
    };
    c.arg("--no-wait")
        .arg(format!("--db={db}"))
        .args(args)
        .env("OVS_RUNDIR", dir)
        .env("OVS_DBDIR", dir)
        .env("OVS_LOGDIR", dir)
        .env_remove("OVS_SYSCONFDIR")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_p).unwrap())
        .stderr(fs::File::create(&err_p).unwrap());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("running {tool:?} vsctl {args:?}: {e}"));
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break status_text(st);
        }
        if t.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break format!("hung (killed after {} s)", COMMAND_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let read = |p: &Path| {
        let b = fs::read(p).unwrap_or_default();
        let _ = fs::remove_file(p);
        String::from_utf8_lossy(&b).into_owned()
    };
    Run { stdout: read(&out_p), stderr: read(&err_p), status }
}

/// Database files with the result of a sequence's setup steps, made once per
/// distinct setup: both servers of a sequence start on copies of the same
/// file, so rows made by the setup have the same UUIDs (and the same order in
/// each server) on both sides.
pub struct SetupCache {
    dir: TempDir,
    made: Mutex<HashMap<Vec<String>, PathBuf>>,
}

impl SetupCache {
    pub fn new() -> SetupCache {
        SetupCache { dir: TempDir::new("setup"), made: Mutex::new(HashMap::new()) }
    }

    /// The base database for `steps` (each run by real ovs-vsctl, which must
    /// succeed).
    pub fn base(&self, steps: &[Vec<String>]) -> PathBuf {
        let key: Vec<String> = steps.iter().map(|s| s.join("\u{1}")).collect();
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = made.get(&key) {
            return p.clone();
        }
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let work = self.dir.0.join(format!("mk{n}"));
        fs::create_dir_all(&work).unwrap();
        let db = work.join("conf.db");
        create_db(&db);
        let out = self.dir.0.join(format!("base{n}.db"));
        {
            let srv = Server::start(&work, "setup", &db);
            for s in steps {
                let r = vsctl(Tool::Real, &work, &srv.db(), s);
                assert!(r.ok(), "setup step {s:?} failed ({}): {}", r.status, r.stderr);
            }
            // A snapshot of the running server: one standalone database file.
            let o = Command::new("ovsdb-client").arg("backup").arg(srv.db()).output().unwrap();
            assert!(o.status.success(), "ovsdb-client backup: {}", String::from_utf8_lossy(&o.stderr));
            fs::write(&out, o.stdout).unwrap();
        }
        let _ = fs::remove_dir_all(&work);
        made.insert(key, out.clone());
        out
    }
}

pub fn create_db(db: &Path) {
    let o = Command::new("ovsdb-tool").arg("create").arg(db).arg(SCHEMA).output().unwrap();
    assert!(o.status.success(), "ovsdb-tool create: {}", String::from_utf8_lossy(&o.stderr));
}

fn is_uuid_at(b: &[u8], i: usize) -> bool {
    b.len() >= i + 36
        && b[i..i + 36].iter().enumerate().all(|(k, c)| match k {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        })
}

/// Numbers UUIDs by first appearance; one per run (tool), shared by all the
/// outputs of a sequence so a UUID printed by `create` and listed later maps
/// to the same number.
#[derive(Default)]
pub struct UuidMap(Vec<String>);

impl UuidMap {
    pub fn normalize(&mut self, s: &str) -> String {
        let b = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        while i < b.len() {
            if is_uuid_at(b, i) && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
                let u = &s[i..i + 36];
                let n = self.0.iter().position(|x| x == u).unwrap_or_else(|| {
                    self.0.push(u.to_string());
                    self.0.len() - 1
                });
                out.push_str(&format!("<{n}>"));
                i += 36;
            } else {
                let ch = s[i..].chars().next().unwrap();
                out.push(ch);
                i += ch.len_utf8();
            }
        }
        out
    }
}

/// Stderr without what legitimately differs: the program name before the
/// first colon of each line, and log-line timestamps and sequence numbers.
pub fn stderr_text(s: &str) -> String {
    s.lines()
        .map(|l| {
            // 2026-11-24T09:36:28Z|00002|db_ctl_base|WARN|message
            let f: Vec<&str> = l.splitn(5, '|').collect();
            if f.len() == 5 && f[0].ends_with('Z') && f[1].bytes().all(|c| c.is_ascii_digit()) {
                return format!("{}|{}|{}", f[2], f[3], f[4]);
            }
            // "ovs-vsctl: ", "/usr/bin/ovs-vsctl: " (getopt uses argv[0]),
            // "oxvs vsctl: ".
            for prefix in ["oxvs vsctl: ", "oxvs: "] {
                if let Some(rest) = l.strip_prefix(prefix) {
                    return rest.to_string();
                }
            }
            match l.split_once(": ") {
                Some((prog, rest)) if !prog.contains(' ') && prog.ends_with("vsctl") => rest.to_string(),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole database in a form that does not depend on UUIDs: every row is
/// labelled by its table and name (or target, for controllers and managers),
/// else by its place among its table's rows sorted by content; references
/// are replaced by labels and sets and maps re-sorted.
pub fn dump(db: &str) -> String {
    let o = Command::new("ovsdb-client").args(["dump", "-f", "json", db, "Open_vSwitch"]).output().unwrap();
    assert!(o.status.success(), "ovsdb-client dump {db}: {}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let mut tables: Vec<(String, Vec<Row>)> = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("dump line {line:?}: {e}"));
        let caption = v["caption"].as_str().unwrap_or("").trim_end_matches(" table").to_string();
        let heads: Vec<String> =
            v["headings"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_string()).collect();
        let rows = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| heads.iter().cloned().zip(r.as_array().unwrap().iter().cloned()).collect())
            .collect();
        tables.push((caption, rows));
    }
    let mut labels: HashMap<String, String> = HashMap::new();
    for (table, rows) in &tables {
        let key_col = ["name", "target"].into_iter().find(|c| {
            let vals: Vec<&Value> = rows.iter().filter_map(|r| col(r, c)).collect();
            !vals.is_empty()
                && vals.iter().all(|v| v.is_string())
                && vals.iter().enumerate().all(|(i, v)| !vals[..i].contains(v))
        });
        let mut anon: Vec<(String, String)> = Vec::new();
        for r in rows {
            let uuid = uuid_of(col(r, "_uuid").unwrap());
            match key_col {
                Some(c) => {
                    labels.insert(uuid, format!("{table}[{}]", col(r, c).unwrap().as_str().unwrap()));
                }
                None => anon.push((masked(r), uuid)),
            }
        }
        anon.sort();
        for (i, (_, uuid)) in anon.into_iter().enumerate() {
            labels.insert(uuid, format!("{table}#{i}"));
        }
    }
    let mut out = String::new();
    for (table, rows) in &tables {
        let mut lines: Vec<String> = rows
            .iter()
            .map(|r| {
                let cells: Vec<String> = r.iter().map(|(c, v)| format!("{c}={}", relabel(v, &labels))).collect();
                cells.join(" ")
            })
            .collect();
        lines.sort();
        out.push_str(&format!("{table}: {} rows\n", lines.len()));
        for l in lines {
            out.push_str(&format!("  {l}\n"));
        }
    }
    out
}

/// One dumped row: (column, value) in the dump's column order.
type Row = Vec<(String, Value)>;

fn col<'a>(r: &'a [(String, Value)], c: &str) -> Option<&'a Value> {
    r.iter().find(|(n, _)| n == c).map(|(_, v)| v)
}

fn uuid_of(v: &Value) -> String {
    v.as_array().and_then(|a| a.get(1)).and_then(|u| u.as_str()).unwrap_or("?").to_string()
}

/// A row's content with every UUID hidden, for ordering unnamed rows.
fn masked(r: &[(String, Value)]) -> String {
    fn mask(v: &Value) -> Value {
        match v {
            Value::Array(a) if a.len() == 2 && a[0] == "uuid" => Value::String("uuid".into()),
            Value::Array(a) => {
                let mut items: Vec<Value> = a.iter().map(mask).collect();
                if let Some(Value::String(tag)) = a.first()
                    && (tag == "set" || tag == "map")
                    && let Some(Value::Array(inner)) = items.get_mut(1)
                {
                    inner.sort_by_key(|x| x.to_string());
                }
                Value::Array(items)
            }
            other => other.clone(),
        }
    }
    r.iter().filter(|(c, _)| c != "_uuid").map(|(c, v)| format!("{c}={}", mask(v))).collect::<Vec<_>>().join(" ")
}

fn relabel(v: &Value, labels: &HashMap<String, String>) -> String {
    fn go(v: &Value, labels: &HashMap<String, String>) -> Value {
        match v {
            Value::Array(a) if a.len() == 2 && a[0] == "uuid" => {
                let u = a[1].as_str().unwrap_or("");
                Value::String(labels.get(u).cloned().unwrap_or_else(|| "dangling-uuid".into()))
            }
            Value::Array(a) => {
                let mut items: Vec<Value> = a.iter().map(|x| go(x, labels)).collect();
                if let Some(Value::String(tag)) = a.first()
                    && (tag == "set" || tag == "map")
                    && let Some(Value::Array(inner)) = items.get_mut(1)
                {
                    inner.sort_by_key(|x| x.to_string());
                }
                Value::Array(items)
            }
            other => other.clone(),
        }
    }
    go(v, labels).to_string()
}

/// Splits a command line the way a POSIX shell would for the cases' simple
/// needs: blanks separate words; '…' is literal; "…" is literal but for \"
/// and \\; a backslash outside quotes escapes the next character.
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut it = line.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for c in it.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = it.next() {
                    match c {
                        '"' => break,
                        '\\' if matches!(it.peek(), Some('"' | '\\')) => cur.push(it.next().unwrap()),
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = it.next() {
                    cur.push(n);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}
