//! The database server's core: databases with their logs, sessions, locks,
//! monitors and parked "wait" transactions. It is synchronous and owns all
//! state; the network layer (`net`) feeds it messages and delivers what it
//! queues. Like ovsdb-server, requests are handled one at a time, in order.
//!
//! Durability: `handle` appends every commit to its log without syncing;
//! the caller runs [`Core::sync`] once for a batch of requests before it
//! delivers the replies (group commit). No reply to a transaction leaves
//! before its commit is on disk.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use serde_json::{Value, json};

use crate::atom::AtomicType;
use uuid::Uuid;

use crate::{
    db::{Commit, Database},
    error::OvsdbError,
    jsonrpc::Message,
    log::{Log, LogError, OpenMode, ReadErrorKind, Rewrite, annotate_txn, now_ms},
    monitor::{Monitor, MonitorVersion},
    op_result::{self, OpResult},
    relay::Forward,
    schema::DatabaseSchema,
    txn::{self, TxnContext, TxnOutcome},
    vlog,
};

pub type SessionId = u64;

/// A transaction with this many operations is freed after the replies go
/// out, and a commit of this many rows applied after them.
const LARGE_TXN_OPS: usize = 256;

/// A monitor standing for its view in one commit's fan-out, and the update
/// serialized for that view (None: the commit shows it nothing).
type SharedView<'a> = (&'a Monitor, Option<Vec<u8>>);

/// The schema of the `_Server` database, as OVS 3.1 serves it.
pub const SERVER_SCHEMA: &str = r#"{"name": "_Server", "version": "1.2.0", "cksum": "3009684573 744",
 "tables": {"Database": {"columns": {
   "name": {"type": "string"},
   "model": {"type": {"key": {"type": "string", "enum": ["set", ["standalone", "clustered", "relay"]]}}},
   "connected": {"type": "boolean"},
   "leader": {"type": "boolean"},
   "schema": {"type": {"key": {"type": "string"}, "min": 0, "max": 1}},
   "cid": {"type": {"key": {"type": "uuid"}, "min": 0, "max": 1}},
   "sid": {"type": {"key": {"type": "uuid"}, "min": 0, "max": 1}},
   "index": {"type": {"key": {"type": "integer"}, "min": 0, "max": 1}}},
  "isRoot": true}}}"#;

/// The writing half of an online compaction (see [`Core::start_compactions`]).
pub struct CompactionJob {
    pub db: String,
    rewrite: Rewrite,
    records: Vec<Value>,
}

impl CompactionJob {
    /// Writes and syncs the new log file; blocking, for a worker thread.
    pub fn run(mut self) -> (String, Result<Rewrite, LogError>) {
        let r = self.rewrite.write(&self.records).map(|()| self.rewrite);
        (self.db, r)
    }
}

/// The snapshot a compaction writes: the whole database as one record.
fn snapshot_record(db: &Database) -> Value {
    let mut snap = db.to_snapshot_json();
    if let Some(o) = snap.as_object_mut() {
        annotate_txn(o, Some("compacting database online"), false, now_ms());
    }
    snap
}

pub struct DbInstance {
    pub db: Database,
    /// None for `_Server`, which lives in memory only.
    pub log: Option<Log>,
    /// Commits appended since the last sync.
    dirty: bool,
}

struct Session {
    /// Monitors by the JSON text of their id.
    monitors: HashMap<String, (String, Value, Monitor)>,
    /// Locks this session holds or waits for.
    locks: HashSet<String>,
}

/// A transaction parked on an unsatisfied "wait".
struct Parked {
    session: SessionId,
    id: Value,
    db: String,
    ops: Vec<Value>,
    since: Instant,
    timeout_ms: Option<u64>,
}

pub struct Core {
    pub dbs: BTreeMap<String, DbInstance>,
    sessions: HashMap<SessionId, Session>,
    /// Lock name → sessions, the owner first.
    locks: BTreeMap<String, VecDeque<SessionId>>,
    parked: Vec<Parked>,
    /// Large commits stored and announced but not yet applied to their
    /// database (by name): applying one takes milliseconds, which need not
    /// delay its reply. Everything that reads a database settles them first.
    pending: Vec<(String, Commit)>,
    outbox: Vec<(SessionId, Outgoing)>,
    /// Operations of large transactions already executed: freeing a parsed
    /// request of 20,000 operations takes milliseconds, so it is left until
    /// the replies are out (`take_garbage`).
    garbage: Vec<Vec<Value>>,
    /// A backup server's clients may only read (see [`crate::replication`]).
    pub read_only: bool,
    /// Relay databases (see [`crate::relay`]), and the write transactions
    /// for their sources.
    relays: BTreeSet<String>,
    forwards: Vec<Forward>,
    /// Sessions that came in on a read-only remote.
    read_only_sessions: HashSet<SessionId>,
    /// Sessions that said `set_db_change_aware`: they follow databases
    /// coming and going; the others are disconnected when that happens.
    db_change_aware: HashSet<SessionId>,
}

/// What the core queues for a session, in order.
#[derive(Debug)]
pub enum Outgoing {
    Message(Message),
    /// A message already serialized (monitor updates: the update is
    /// serialized once per commit however many sessions get it).
    Text(Vec<u8>),
}

impl Outgoing {
    /// The message's bytes on the wire.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Outgoing::Message(m) => m.to_bytes(),
            Outgoing::Text(t) => t,
        }
    }
}

/// The bytes of `Message::response(results, id)`, with the results written
/// straight to text rather than built as JSON values first.
fn response_text(results: &[OpResult], id: &Value) -> Vec<u8> {
    // Inserts dominate big transactions: about 50 bytes each.
    let mut out = Vec::with_capacity(results.len() * 52 + 64);
    out.extend_from_slice(b"{\"result\":");
    op_result::write_results(&mut out, results);
    out.extend_from_slice(b",\"error\":null,\"id\":");
    serde_json::to_writer(&mut out, id).expect("serializing a serde_json::Value into a Vec cannot fail");
    out.push(b'}');
    out
}

/// The bytes of `Message::notification(method, [mid, (txn_id,) update])`,
/// with `update` already serialized.
fn update_notification_text(method: &str, mid: &Value, txn_id: Option<&str>, update: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(update.len() + 64);
    out.extend_from_slice(b"{\"method\":");
    crate::json_text::write_str(&mut out, method);
    out.extend_from_slice(b",\"params\":[");
    let _ = serde_json::to_writer(&mut out, mid);
    if let Some(t) = txn_id {
        out.push(b',');
        crate::json_text::write_str(&mut out, t);
    }
    out.push(b',');
    out.extend_from_slice(update);
    out.extend_from_slice(b"],\"id\":null}");
    out
}

fn err_json(e: &OvsdbError) -> Value {
    e.to_json()
}

fn syntax(details: impl Into<String>) -> Value {
    OvsdbError::syntax(details).to_json()
}

impl Core {
    /// Opens each database file read-write (taking its lock) and builds `_Server`.
    pub fn open(files: &[PathBuf]) -> Result<Core, String> {
        let mut dbs = BTreeMap::new();
        for f in files {
            let (name, inst) = open_db(f)?;
            if dbs.contains_key(&name) {
                return Err(format!("{}: duplicate database name {name}", f.display()));
            }
            dbs.insert(name, inst);
        }
        let mut core = Core {
            dbs,
            sessions: HashMap::new(),
            locks: BTreeMap::new(),
            parked: Vec::new(),
            pending: Vec::new(),
            outbox: Vec::new(),
            garbage: Vec::new(),
            read_only: false,
            relays: BTreeSet::new(),
            forwards: Vec::new(),
            read_only_sessions: HashSet::new(),
            db_change_aware: HashSet::new(),
        };
        core.build_server_db()?;
        Ok(core)
    }

    /// `_Server.Database` has one row per database, `_Server` included.
    fn build_server_db(&mut self) -> Result<(), String> {
        let schema: Value = serde_json::from_str(SERVER_SCHEMA).expect("built-in schema");
        let schema = DatabaseSchema::from_json(&schema).map_err(|e| e.to_string())?;
        let mut db = Database::new(schema.clone());
        let mut rows: Vec<(String, String)> =
            self.dbs.iter().map(|(n, i)| (n.clone(), i.db.schema.to_json().to_string())).collect();
        rows.push(("_Server".into(), schema.to_json().to_string()));
        // Transactions may not write `_Server` (it is reserved): build its rows
        // as a log record would.
        let table: serde_json::Map<String, Value> = rows
            .iter()
            .map(|(name, s)| {
                let row = server_db_row(name, s);
                (Uuid::new_v4().to_string(), row)
            })
            .collect();
        db.apply_log_record(&json!({"Database": table})).map_err(|e| format!("building _Server: {e}"))?;
        self.dbs.insert("_Server".into(), DbInstance { db, log: None, dirty: false });
        Ok(())
    }

    /// Adds an in-memory database that relays another server's (its rows
    /// come through [`Core::replica_update`]).
    pub fn add_relay_db(&mut self, schema: DatabaseSchema) -> Result<(), String> {
        self.settle();
        let name = schema.name.clone();
        if self.dbs.contains_key(&name) {
            return Err(format!("relay:{name}: duplicate database name {name}"));
        }
        self.dbs.insert(name.clone(), DbInstance { db: Database::new(Arc::new(schema)), log: None, dirty: false });
        self.relays.insert(name);
        self.dbs.remove("_Server");
        self.build_server_db()
    }

    /// `ovsdb-server/add-db FILE`: opens and serves another database.
    /// Returns the sessions to disconnect (those not db-change-aware, as
    /// OVS does).
    pub fn add_db(&mut self, path: &Path) -> Result<Vec<SessionId>, String> {
        self.settle();
        let same_file = |p: &Path| match (std::fs::canonicalize(p), std::fs::canonicalize(path)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if self.dbs.values().any(|i| i.log.as_ref().is_some_and(|l| same_file(l.path()))) {
            return Err(format!("ovsdb error: {}: already open", path.display()));
        }
        let (name, inst) = open_db(path).map_err(|e| format!("I/O error: {e}"))?;
        if self.dbs.contains_key(&name) {
            return Err(format!("ovsdb error: {}: duplicate database name {name}", path.display()));
        }
        let schema = inst.db.schema.to_json().to_string();
        self.dbs.insert(name.clone(), inst);
        let row = server_db_row(&name, &schema);
        self.change_server_db(json!({"Database": {Uuid::new_v4().to_string(): row}}));
        Ok(self.unaware_sessions())
    }

    /// `ovsdb-server/remove-db NAME`: stops serving a database (its file is
    /// closed, its monitors canceled). Returns the sessions to disconnect.
    pub fn remove_db(&mut self, name: &str) -> Result<Vec<SessionId>, String> {
        self.settle();
        if name == "_Server" || self.dbs.remove(name).is_none() {
            return Err("Failed to find the database.".into());
        }
        self.relays.remove(name);
        self.parked.retain(|p| p.db != name);
        let rows: serde_json::Map<String, Value> = self.dbs["_Server"]
            .db
            .table("Database")
            .map(|t| {
                t.rows()
                    .iter()
                    .filter(|(_, r)| {
                        r.get("name").is_some_and(|d| d.keys.first().and_then(|a| a.as_str()) == Some(name))
                    })
                    .map(|(u, _)| (u.to_string(), Value::Null))
                    .collect()
            })
            .unwrap_or_default();
        self.change_server_db(json!({"Database": rows}));
        let mut canceled = Vec::new();
        for (sid, s) in self.sessions.iter_mut() {
            s.monitors.retain(|_, (db, mon_id, _)| {
                if db == name {
                    canceled.push((*sid, mon_id.clone()));
                }
                db != name
            });
        }
        for (sid, mon_id) in canceled {
            self.send(sid, Message::notification("monitor_canceled", vec![mon_id]));
        }
        Ok(self.unaware_sessions())
    }

    fn unaware_sessions(&self) -> Vec<SessionId> {
        self.sessions.keys().filter(|s| !self.db_change_aware.contains(s)).copied().collect()
    }

    /// Applies a change to `_Server` (which transactions may not write) and
    /// tells its monitors.
    fn change_server_db(&mut self, record: Value) {
        let inst = self.dbs.get_mut("_Server").expect("_Server");
        match inst.db.apply_log_record(&record) {
            Ok(commit) => self.notify("_Server", commit),
            Err(e) => vlog::err("ovsdb_server", &format!("updating _Server: {}", error_to_string(&e))),
        }
    }

    /// The files of the databases served (for `--monitor` restarts).
    pub fn db_files(&self) -> Vec<PathBuf> {
        self.dbs.values().filter_map(|i| i.log.as_ref().map(|l| l.path().to_path_buf())).collect()
    }

    /// Write transactions on relay databases, to be sent to their sources.
    pub fn take_forwards(&mut self) -> Vec<Forward> {
        std::mem::take(&mut self.forwards)
    }

    /// Queues a message for a session (replies to forwarded transactions).
    pub fn reply(&mut self, to: SessionId, m: Message) {
        self.send(to, m);
    }

    /// Marks a session as one that may only read (a read-only remote's).
    pub fn set_session_read_only(&mut self, id: SessionId) {
        self.read_only_sessions.insert(id);
    }

    pub fn add_session(&mut self, id: SessionId) {
        self.sessions.insert(id, Session { monitors: HashMap::new(), locks: HashSet::new() });
    }

    /// Forgets a session: its monitors, parked transactions and locks (the next
    /// waiter of each lock it owned is told it has it).
    pub fn remove_session(&mut self, id: SessionId) {
        self.read_only_sessions.remove(&id);
        self.db_change_aware.remove(&id);
        let Some(s) = self.sessions.remove(&id) else { return };
        self.parked.retain(|p| p.session != id);
        for name in s.locks {
            self.release_lock(id, &name);
        }
    }

    pub fn take_outbox(&mut self) -> Vec<(SessionId, Outgoing)> {
        std::mem::take(&mut self.outbox)
    }

    /// What is left to free of the transactions handled so far; see `garbage`.
    pub fn take_garbage(&mut self) -> Vec<Vec<Value>> {
        std::mem::take(&mut self.garbage)
    }

    fn send(&mut self, to: SessionId, m: Message) {
        self.outbox.push((to, Outgoing::Message(m)));
    }

    /// Syncs every log written since the last call. A failure is fatal for
    /// the server: transactions were applied in memory but are not on disk.
    pub fn sync(&mut self) -> Result<(), String> {
        for (name, inst) in self.dbs.iter_mut() {
            if inst.dirty {
                if let Some(log) = inst.log.as_mut() {
                    log.commit().map_err(|e| format!("{name}: {e}"))?;
                }
                inst.dirty = false;
            }
        }
        Ok(())
    }

    /// Handles one message from a session.
    pub fn handle(&mut self, from: SessionId, msg: Message) {
        self.settle();
        match msg {
            Message::Request { method, params, id } => self.request(from, &method, params, id),
            Message::Notification { method, params } => {
                if method == "cancel" {
                    self.cancel(from, &params);
                }
            }
            // Replies to our echo probes, or stray ones: nothing to do.
            Message::Response { .. } | Message::Error { .. } => {}
        }
    }

    fn request(&mut self, from: SessionId, method: &str, params: Value, id: Value) {
        if method == "transact" {
            // The operations are moved, not copied: a transaction may be large.
            let mut p = match params {
                Value::Array(a) => a,
                _ => Vec::new(),
            };
            match self.lookup_db(method, &p) {
                Ok(db) => {
                    p.remove(0);
                    return self.transact(from, db, p, id, Instant::now());
                }
                Err(e) => return self.send(from, Message::error(e, id)),
            }
        }
        let p = params.as_array().cloned().unwrap_or_default();
        let reply = match method {
            "echo" => Ok(params),
            "list_dbs" => Ok(json!(self.dbs.keys().collect::<Vec<_>>())),
            "get_schema" => self.lookup_db(method, &p).map(|db| self.dbs[&db].db.schema.to_json()),
            "monitor" | "monitor_cond" | "monitor_cond_since" => self.monitor(from, method, &p),
            "monitor_cond_change" => self.monitor_cond_change(from, &p),
            "monitor_cancel" => self.monitor_cancel(from, &p),
            "lock" | "steal" => self.lock(from, method, &p),
            "unlock" => self.unlock(from, &p),
            "set_db_change_aware" => match p.as_slice() {
                [Value::Bool(aware)] => {
                    if *aware {
                        self.db_change_aware.insert(from);
                    } else {
                        self.db_change_aware.remove(&from);
                    }
                    Ok(json!({}))
                }
                _ => Err(syntax("set_db_change_aware: true or false parameter expected")),
            },
            "get_server_id" => Ok(json!(server_id().to_string())),
            _ => Err(json!("unknown method")),
        };
        let m = match reply {
            Ok(r) => Message::response(r, id),
            Err(e) => Message::error(e, id),
        };
        self.send(from, m);
    }

    fn lookup_db(&self, method: &str, p: &[Value]) -> Result<String, Value> {
        let Some(name) = p.first().and_then(Value::as_str) else {
            return Err(syntax(format!("{method} request params must begin with <db-name>")));
        };
        if !self.dbs.contains_key(name) {
            // With the request's params as "syntax", as OVS answers.
            return Err(OvsdbError::new(
                "unknown database",
                format!("{method} request specifies unknown database {name}"),
            )
            .with_syntax(&Value::Array(p.to_vec()))
            .to_json());
        }
        Ok(name.to_string())
    }

    // ---- transactions -------------------------------------------------

    fn transact(&mut self, from: SessionId, db: String, ops: Vec<Value>, id: Value, since: Instant) {
        self.settle();
        // A relay answers reads itself; what writes goes to the source.
        let writes =
            || ops.iter().any(|op| op.get("op").and_then(Value::as_str).and_then(txn::op_read_only) == Some(false));
        if self.relays.contains(&db) && !self.read_only && !self.read_only_sessions.contains(&from) && writes() {
            let mut params = vec![json!(db)];
            params.extend(ops);
            self.forwards.push(Forward { session: from, id, db, params });
            return;
        }
        let locks: HashSet<String> =
            self.locks.iter().filter(|(_, q)| q.front() == Some(&from)).map(|(n, _)| n.clone()).collect();
        let has_lock = |n: &str| locks.contains(n);
        let ctx = TxnContext {
            has_lock: &has_lock,
            elapsed_ms: since.elapsed().as_millis() as u64,
            can_wait: true,
            read_only: db == "_Server" || self.read_only || self.read_only_sessions.contains(&from),
        };
        let inst = self.dbs.get_mut(&db).expect("looked up");
        match txn::execute(&inst.db, &ops, &ctx) {
            TxnOutcome::Blocked { timeout_ms } => {
                self.parked.push(Parked { session: from, id, db, ops, since, timeout_ms });
            }
            TxnOutcome::Done(mut done) => {
                if let Some(commit) = done.commit.take() {
                    match Self::store(inst, &commit, done.comment.as_deref()) {
                        Ok(()) => {
                            self.committed(&db, commit);
                        }
                        Err(e) => {
                            done.results.push(OpResult::Json(OvsdbError::new("I/O error", e).to_json()));
                        }
                    }
                }
                self.outbox.push((from, Outgoing::Text(response_text(&done.results, &id))));
                if ops.len() >= LARGE_TXN_OPS {
                    self.garbage.push(ops);
                }
            }
        }
    }

    /// Appends the commit to the log (synced later, before any reply goes out).
    fn store(inst: &mut DbInstance, commit: &Commit, comment: Option<&str>) -> Result<(), String> {
        let Some(log) = inst.log.as_mut() else { return Ok(()) };
        let Some(rec) = commit.log_record_text(comment, now_ms()) else {
            return Ok(()); // only ephemeral columns changed
        };
        log.append_text(&rec).map_err(|e| e.to_string())?;
        inst.dirty = true;
        Ok(())
    }

    /// Tells the monitors of a stored commit, leaves it to be applied (see
    /// `pending`), and retries parked waits.
    fn committed(&mut self, db: &str, commit: Commit) {
        self.send_updates(db, &commit);
        // Updates are made from the commit alone, so its rows can move into
        // the database later. Only large commits wait: for a small one the
        // wait would cost more (a yield of the core task) than applying.
        let rows: usize = commit.tables.values().map(|t| t.len()).sum();
        if self.pending.is_empty() && rows < LARGE_TXN_OPS {
            self.dbs.get_mut(db).expect("db").db.apply_owned(commit);
        } else {
            self.pending.push((db.to_string(), commit));
        }
        if self.parked.iter().any(|p| p.db == db) {
            self.retry_parked(Some(db));
        }
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Applies the commits left pending. Called by every method that reads or
    /// changes a database, and by the server loop once the replies are out.
    pub fn settle(&mut self) {
        for (db, commit) in std::mem::take(&mut self.pending) {
            if let Some(inst) = self.dbs.get_mut(&db) {
                inst.db.apply_owned(commit);
            }
        }
    }

    /// Tells the monitors of a commit applied elsewhere (a replica's or
    /// relay's), and retries parked waits.
    fn notify(&mut self, db: &str, commit: Commit) {
        self.send_updates(db, &commit);
        self.retry_parked(Some(db));
    }

    /// Queues the monitor updates for `commit`. Monitors
    /// with the same view of the database (the usual case: many clients of
    /// one kind) share one update, computed and serialized once.
    fn send_updates(&mut self, db: &str, commit: &Commit) {
        // Standalone databases report the zero transaction id, as OVS's do.
        let txn_id = Uuid::nil().to_string();
        let mut updates = Vec::new();
        // Per view key, the distinct views met so far: a monitor with that
        // view and its update serialized (None: the commit shows it nothing).
        let mut views: HashMap<u64, Vec<SharedView>> = HashMap::new();
        for (sid, s) in &self.sessions {
            for (mdb, mid_json, m) in s.monitors.values() {
                if mdb != db {
                    continue;
                }
                let same = views.entry(m.view_key()).or_default();
                let i = match same.iter().position(|(v, _)| v.same_view(m)) {
                    Some(i) => i,
                    None => {
                        let text =
                            m.update(commit).map(|u| serde_json::to_vec(&u).expect("serializing a Value cannot fail"));
                        same.push((m, text));
                        same.len() - 1
                    }
                };
                if let Some(u) = &same[i].1 {
                    let v = m.version();
                    let txn = (v == MonitorVersion::V3).then_some(txn_id.as_str());
                    let text = update_notification_text(v.notification(), mid_json, txn, u);
                    updates.push((*sid, Outgoing::Text(text)));
                }
            }
        }
        self.outbox.extend(updates);
    }

    /// Runs parked transactions again (after a change to `db`, or all on a tick).
    fn retry_parked(&mut self, db: Option<&str>) {
        let (run, keep): (Vec<Parked>, Vec<Parked>) =
            std::mem::take(&mut self.parked).into_iter().partition(|p| db.is_none_or(|d| d == p.db));
        self.parked = keep;
        for p in run {
            if self.sessions.contains_key(&p.session) {
                self.transact(p.session, p.db, p.ops, p.id, p.since);
            }
        }
    }

    /// Expires parked transactions whose wait timed out.
    pub fn tick(&mut self) {
        // Runs every loop: parked transactions settle when they run.
        let due = self.parked.iter().any(|p| p.timeout_ms.is_some_and(|t| p.since.elapsed().as_millis() as u64 >= t));
        if due {
            self.retry_parked(None);
        }
    }

    /// "cancel": a parked transaction ends with the error "canceled".
    fn cancel(&mut self, from: SessionId, params: &Value) {
        let Some(target) = params.as_array().filter(|a| a.len() == 1).map(|a| a[0].clone()) else { return };
        if let Some(i) = self.parked.iter().position(|p| p.session == from && p.id == target) {
            let p = self.parked.remove(i);
            self.send(from, Message::error(json!("canceled"), p.id));
        }
    }

    // ---- monitors -----------------------------------------------------

    fn monitor(&mut self, from: SessionId, method: &str, p: &[Value]) -> Result<Value, Value> {
        let db = self.lookup_db(method, p)?;
        let version = match method {
            "monitor" => MonitorVersion::V1,
            "monitor_cond" => MonitorVersion::V2,
            _ => MonitorVersion::V3,
        };
        let want = if version == MonitorVersion::V1 { 3..=3 } else { 3..=4 };
        if !want.contains(&p.len()) || (version == MonitorVersion::V3 && p.len() != 4) {
            return Err(syntax("invalid parameters"));
        }
        let mon_id = p[1].clone();
        let key = mon_id.to_string();
        let session = self.sessions.get(&from).ok_or_else(|| json!("no session"))?;
        if session.monitors.contains_key(&key) {
            return Err(syntax("duplicate monitor ID"));
        }
        let inst = &self.dbs[&db];
        let m = Monitor::new(version, &inst.db.schema, &p[2]).map_err(|e| err_json(&e))?;
        let result = if version == MonitorVersion::V3 {
            // A standalone database keeps no transaction history (as OVS's):
            // the client always gets the whole contents, with the zero id.
            crate::monitor::parse_last_txn_id(&p[3]).map_err(|e| err_json(&e))?;
            json!([false, Uuid::nil().to_string(), m.initial(&inst.db)])
        } else {
            m.initial(&inst.db)
        };
        self.sessions.get_mut(&from).unwrap().monitors.insert(key, (db, mon_id, m));
        Ok(result)
    }

    fn monitor_cond_change(&mut self, from: SessionId, p: &[Value]) -> Result<Value, Value> {
        if p.len() != 3 {
            return Err(syntax("invalid parameters"));
        }
        let (old, new) = (p[0].to_string(), p[1].to_string());
        let s = self.sessions.get_mut(&from).ok_or_else(|| json!("no session"))?;
        if !s.monitors.contains_key(&old) {
            return Err(syntax("unknown monitor session"));
        }
        if old != new && s.monitors.contains_key(&new) {
            return Err(syntax("duplicate monitor ID"));
        }
        let (db, _, mut m) = s.monitors.remove(&old).unwrap();
        let inst = &self.dbs[&db];
        let upd = match m.change_condition(&inst.db, &p[2]) {
            Ok(u) => u,
            Err(e) => {
                s.monitors.insert(old, (db, p[0].clone(), m));
                return Err(err_json(&e));
            }
        };
        let version = m.version();
        let txn_id = Uuid::nil();
        s.monitors.insert(new, (db, p[1].clone(), m));
        if let Some(u) = upd {
            let note = match version {
                MonitorVersion::V3 => {
                    Message::notification("update3", vec![p[1].clone(), json!(txn_id.to_string()), u])
                }
                _ => Message::notification("update2", vec![p[1].clone(), u]),
            };
            self.send(from, note);
        }
        Ok(json!({}))
    }

    fn monitor_cancel(&mut self, from: SessionId, p: &[Value]) -> Result<Value, Value> {
        let s = self.sessions.get_mut(&from).ok_or_else(|| json!("no session"))?;
        match p {
            [mid] if s.monitors.remove(&mid.to_string()).is_some() => Ok(json!({})),
            _ => Err(json!("unknown monitor")),
        }
    }

    // ---- locks --------------------------------------------------------

    fn lock_name(method: &str, p: &[Value]) -> Result<String, Value> {
        match p {
            [Value::String(s)] if valid_id(s) => Ok(s.clone()),
            _ => Err(syntax(format!("{method} request params must be <id>"))),
        }
    }

    fn lock(&mut self, from: SessionId, method: &str, p: &[Value]) -> Result<Value, Value> {
        let name = Self::lock_name(method, p)?;
        let s = self.sessions.get_mut(&from).ok_or_else(|| json!("no session"))?;
        if s.locks.contains(&name) {
            return Err(syntax(format!("must issue \"unlock\" before new \"{method}\"")));
        }
        s.locks.insert(name.clone());
        let q = self.locks.entry(name.clone()).or_default();
        if method == "steal" {
            let victim = q.front().copied();
            q.push_front(from);
            if let Some(v) = victim {
                // The victim stays a waiter until it unlocks, as in OVS.
                self.send(v, Message::notification("stolen", vec![json!(name)]));
            }
            Ok(json!({"locked": true}))
        } else {
            q.push_back(from);
            Ok(json!({"locked": q.front() == Some(&from)}))
        }
    }

    fn unlock(&mut self, from: SessionId, p: &[Value]) -> Result<Value, Value> {
        let name = Self::lock_name("unlock", p)?;
        let s = self.sessions.get_mut(&from).ok_or_else(|| json!("no session"))?;
        if !s.locks.remove(&name) {
            return Err(syntax("unlock: \"unlock\" without \"lock\" or \"steal\""));
        }
        self.release_lock(from, &name);
        Ok(json!({}))
    }

    fn release_lock(&mut self, from: SessionId, name: &str) {
        let Some(q) = self.locks.get_mut(name) else { return };
        let was_owner = q.front() == Some(&from);
        q.retain(|s| *s != from);
        let next = q.front().copied();
        if q.is_empty() {
            self.locks.remove(name);
        }
        if was_owner && let Some(n) = next {
            self.send(n, Message::notification("locked", vec![json!(name)]));
        }
    }

    // ---- maintenance --------------------------------------------------

    /// Compacts now, as `ovsdb-server/compact [DB]` asks: every database
    /// with a log (or just `only`), the whole database written as one record
    /// after the schema. An online compaction still being written is
    /// cancelled first. Returns the names compacted.
    pub fn compact(&mut self, only: Option<&str>) -> Result<Vec<String>, String> {
        self.settle();
        if only.is_some_and(|n| n.starts_with('_')) {
            return Err("cannot compact built-in databases".into());
        }
        let mut done = Vec::new();
        let mut errors = String::new();
        for (name, inst) in self.dbs.iter_mut() {
            if only.is_some_and(|n| n != name) {
                continue;
            }
            let Some(log) = inst.log.as_mut() else { continue };
            log.cancel_rewrite();
            let records = [inst.db.schema.to_json(), snapshot_record(&inst.db)];
            match log.replace(&records) {
                Ok(()) => done.push(name.clone()),
                Err(e) => errors.push_str(&format!("{e}\n")),
            }
        }
        if !errors.is_empty() {
            Err(errors)
        } else if done.is_empty() {
            Err("no database by that name".into())
        } else {
            Ok(done)
        }
    }

    /// Starts an online compaction of each log that has grown enough (as
    /// OVS judges it) and has none running. The snapshot is taken here, from
    /// the current state; the jobs do the slow part (serialising, writing,
    /// fsync) and must be run off the core, then handed to
    /// [`Core::finish_compaction`]. Commits in between go to the old log and
    /// are carried over.
    pub fn start_compactions(&mut self) -> Vec<CompactionJob> {
        self.settle();
        let mut jobs = Vec::new();
        for (name, inst) in self.dbs.iter_mut() {
            let Some(log) = inst.log.as_mut() else { continue };
            let grown = log.grew_lots() && log.records_since_compaction() >= crate::log::COMPACT_MIN_RECORDS as usize;
            if !grown || log.rewrite_in_progress() {
                continue;
            }
            match log.start_rewrite() {
                Ok(rewrite) => jobs.push(CompactionJob {
                    db: name.clone(),
                    rewrite,
                    records: vec![inst.db.schema.to_json(), snapshot_record(&inst.db)],
                }),
                Err(e) => vlog::warn("ovsdb_server", &format!("{name}: compaction failed: {e}")),
            }
        }
        jobs
    }

    /// Completes a job of [`Core::start_compactions`] after it ran.
    pub fn finish_compaction(&mut self, db: &str, written: Result<Rewrite, LogError>) -> Result<(), String> {
        self.settle();
        let Some(log) = self.dbs.get_mut(db).and_then(|i| i.log.as_mut()) else {
            return Err(format!("{db}: no such database"));
        };
        match written {
            Ok(rw) => log.finish_rewrite(rw).map_err(|e| e.to_string()),
            Err(e) => {
                log.cancel_rewrite();
                Err(e.to_string())
            }
        }
    }

    /// Database names (for ovsdb-server/list-dbs).
    /// This server's id (`get_server_id`).
    pub fn server_id(&self) -> Uuid {
        server_id()
    }

    /// A database's schema, by name.
    pub fn schema(&self, db: &str) -> Option<DatabaseSchema> {
        self.dbs.get(db).map(|i| (*i.db.schema).clone())
    }

    /// Mirrors the active server's changes into `db` (a backup server's
    /// replication): `updates` are `<table-updates>` as a version 1 monitor
    /// sends them. With `reset`, every row of the tables not in it is
    /// deleted first: `updates` are then the whole of the active
    /// server's data (the monitor's initial reply). One commit, logged
    /// and sent to our own monitors as any other.
    pub fn replica_update(
        &mut self,
        db: &str,
        updates: &Value,
        reset: Option<&BTreeSet<String>>,
    ) -> Result<(), String> {
        self.settle();
        let inst = self.dbs.get_mut(db).ok_or_else(|| format!("unknown database {db}"))?;
        let Some(updates) = updates.as_object() else { return Err("<table-updates> is not an object".into()) };
        let mut record = serde_json::Map::new();
        if let Some(keep) = reset {
            for (tname, t) in inst.db.tables() {
                if keep.contains(tname) || t.is_empty() {
                    continue;
                }
                let rows = t.rows().keys().map(|u| (u.to_string(), Value::Null)).collect();
                record.insert(tname.clone(), Value::Object(rows));
            }
        }
        for (tname, tu) in updates {
            let Some(t) = inst.db.table(tname) else { return Err(format!("unknown table {tname}")) };
            let Some(tu) = tu.as_object() else { return Err("<table-update> for table is not object".into()) };
            let rows = record.entry(tname.clone()).or_insert_with(|| json!({}));
            let rows = rows.as_object_mut().expect("object");
            for (us, ru) in tu {
                let uuid = crate::atom::parse_uuid(us).ok_or("<table-update> names must be UUIDs")?;
                match ru.get("new") {
                    // Version 1 updates carry the whole new row, inserts and
                    // modifies alike: it replaces ours.
                    Some(new) => {
                        rows.insert(us.clone(), new.clone());
                    }
                    None if t.get(&uuid).is_some() => {
                        rows.insert(us.clone(), Value::Null);
                    }
                    None => {}
                }
            }
        }
        let commit = inst.db.apply_log_record(&Value::Object(record)).map_err(|e| error_to_string(&e))?;
        Self::store(inst, &commit, None)?;
        self.notify(db, commit);
        Ok(())
    }

    /// Writes the status of the remotes that `db:DB,TABLE,COLUMN` remotes
    /// name through references (as OVS's Manager rows): `is_connected` and
    /// `status` (`n_connections` when more than one), where the referenced
    /// table has such columns. `connections` counts sessions by remote.
    pub fn update_remote_status(&mut self, configured: &[String], connections: &HashMap<String, usize>) {
        self.settle();
        let mut records: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
        for spec in configured.iter().filter_map(|r| r.strip_prefix("db:")) {
            let parts: Vec<&str> = spec.split(',').collect();
            let [db, table, column] = parts[..] else { continue };
            let Some(inst) = self.dbs.get(db) else { continue };
            let Some(t) = inst.db.table(table) else { continue };
            let Some(col) = t.schema.column(column) else { continue };
            let Some(ref_table) = col.type_.key.ref_table.as_deref().filter(|_| col.type_.value.is_none()) else {
                continue;
            };
            let Some(rt) = inst.db.table(ref_table) else { continue };
            let has = |c: &str| rt.schema.columns.get(c).map(|c| &c.type_);
            let bool_col = has("is_connected").is_some_and(|t| t.key.atype == AtomicType::Boolean && !t.is_map());
            let status_col = has("status").is_some_and(|t| {
                t.is_map()
                    && t.key.atype == AtomicType::String
                    && t.value.as_ref().is_some_and(|v| v.atype == AtomicType::String)
            });
            for row in t.rows().values() {
                let Some(d) = row.get(column) else { continue };
                for u in d.keys.iter().filter_map(|a| a.as_uuid()) {
                    let Some(r) = rt.get(&u) else { continue };
                    let Some(target) =
                        r.get("target").and_then(|d| d.keys.first().and_then(|a| a.as_str().map(str::to_string)))
                    else {
                        continue;
                    };
                    let n = connections.get(&target).copied().unwrap_or(0);
                    let mut new = serde_json::Map::new();
                    if bool_col {
                        let v = json!(n > 0);
                        if r.get("is_connected").map(|d| d.to_json()) != Some(v.clone()) {
                            new.insert("is_connected".into(), v);
                        }
                    }
                    if status_col {
                        let pairs: Vec<Value> =
                            if n > 1 { vec![json!(["n_connections", n.to_string()])] } else { vec![] };
                        let v = json!(["map", pairs]);
                        if r.get("status").map(|d| d.to_json()) != Some(v.clone()) {
                            new.insert("status".into(), v);
                        }
                    }
                    if !new.is_empty() {
                        let rows = records.entry(db.to_string()).or_default();
                        let table_rows = rows.entry(ref_table.to_string()).or_insert_with(|| json!({}));
                        table_rows.as_object_mut().expect("object").insert(u.to_string(), Value::Object(new));
                    }
                }
            }
        }
        for (db, record) in records {
            let inst = self.dbs.get_mut(&db).expect("db");
            let commit = match inst.db.apply_log_record(&Value::Object(record)) {
                Ok(c) => c,
                Err(e) => {
                    vlog::err("ovsdb_server", &format!("Failed to update remote status: {}", error_to_string(&e)));
                    continue;
                }
            };
            if let Err(e) = Self::store(inst, &commit, Some("remote status")) {
                vlog::err("ovsdb_server", &format!("Failed to update remote status: {e}"));
            }
            self.notify(&db, commit);
        }
    }

    pub fn db_names(&self) -> Vec<String> {
        self.dbs.keys().cloned().collect()
    }

    /// The values of DB,TABLE,COLUMN for `--remote=db:...`: strings, or the
    /// `target` column of rows the column refers to (as ovsdb-server reads
    /// Manager rows).
    pub fn remotes_from_db(&self, spec: &str) -> Result<Vec<String>, String> {
        Ok(self.remotes_from_db_with_options(spec)?.into_iter().map(|(r, _)| r).collect())
    }

    /// As [`Core::remotes_from_db`], with whether each remote is read-only
    /// (a referenced row's `read_only` column, as in OVS's Manager table).
    pub fn remotes_from_db_with_options(&self, spec: &str) -> Result<Vec<(String, bool)>, String> {
        let parts: Vec<&str> = spec.split(',').collect();
        let [db, table, column] = parts[..] else { return Err(format!("\"db:{spec}\": invalid syntax")) };
        let inst = self.dbs.get(db).ok_or_else(|| format!("\"db:{spec}\": no database named {db}"))?;
        let t = inst.db.table(table).ok_or_else(|| format!("\"db:{spec}\": no table named {table}"))?;
        let col = t
            .schema
            .column(column)
            .ok_or_else(|| format!("\"db:{spec}\": table \"{table}\" has no column \"{column}\""))?;
        let mut out = Vec::new();
        for row in t.rows().values() {
            let Some(d) = row.get(column) else { continue };
            for a in d.keys.iter().chain(d.values.iter().flatten()) {
                match a {
                    crate::atom::Atom::String(s) => out.push((s.to_string(), false)),
                    crate::atom::Atom::Uuid(u) => {
                        let rt = col.type_.key.ref_table.as_deref().or(col
                            .type_
                            .value
                            .as_ref()
                            .and_then(|v| v.ref_table.as_deref()));
                        let Some(row) = rt.and_then(|rt| inst.db.get(rt, u)) else { continue };
                        let read_only = row
                            .get("read_only")
                            .is_some_and(|d| d.keys.first().is_some_and(|a| *a == crate::atom::Atom::Boolean(true)));
                        if let Some(target) = row.get("target") {
                            for k in &target.keys {
                                if let Some(s) = k.as_str() {
                                    out.push((s.to_string(), read_only));
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

fn valid_id(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// A server id, fixed for the life of the process.
fn server_id() -> Uuid {
    static ID: std::sync::OnceLock<Uuid> = std::sync::OnceLock::new();
    *ID.get_or_init(Uuid::new_v4)
}

/// Opens a standalone database file: replays its records.
pub fn open_db(path: &Path) -> Result<(String, DbInstance), String> {
    let (mut log, records) = Log::open(path, OpenMode::ReadWrite).map_err(|e| e.to_string())?;
    if let Some(e) = log.read_error() {
        // OVS's error tags: a record that could not be read in full is an I/O
        // error, anything else a syntax error.
        let tag = match e.kind {
            ReadErrorKind::Io | ReadErrorKind::Truncated => "I/O error",
            _ => "syntax error",
        };
        vlog::err("ovsdb_server", &format!("{tag}: {e}"));
    }
    let first = records.first().ok_or_else(|| format!("{}: database file is empty", path.display()))?;
    let schema = DatabaseSchema::from_json(first).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut db = Database::new(Arc::new(schema));
    // Like ovsdb-server (not ovsdb-tool): a transaction that does not apply
    // ends the database there, as if the file had been cut short; it is
    // logged and the next write truncates it away.
    for (i, r) in records.iter().enumerate().skip(1) {
        if let Err(e) = db.apply_log_record(r) {
            let e = if e.syntax.is_some() { e } else { e.with_syntax(r) };
            vlog::err("ovsdb_server", &error_to_string(&e));
            log.discard_from(i).map_err(|e| e.to_string())?;
            break;
        }
    }
    let name = db.schema.name.clone();
    Ok((name, DbInstance { db, log: Some(log), dirty: false }))
}

/// A `_Server.Database` row for a standalone database.
fn server_db_row(name: &str, schema: &str) -> Value {
    json!({"name": name, "model": "standalone", "connected": true, "leader": true, "schema": schema})
}

/// OVS's one-line form of an error, for logs: `syntax "JSON": TAG: DETAILS`.
pub fn error_to_string(e: &OvsdbError) -> String {
    match &e.syntax {
        Some(s) => format!("syntax \"{s}\": {}: {}", e.tag, e.details),
        None => format!("{}: {}", e.tag, e.details),
    }
}

/// Builds a database from a log's records (schema first). Returns it and the
/// number of transaction records replayed.
pub fn replay(path: &Path, records: &[Value]) -> Result<(Database, usize), String> {
    let first = records.first().ok_or_else(|| format!("{}: database file is empty", path.display()))?;
    let schema = DatabaseSchema::from_json(first).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut db = Database::new(Arc::new(schema));
    for (i, r) in records[1..].iter().enumerate() {
        db.apply_log_record(r).map_err(|e| format!("{}: record {}: {e}", path.display(), i + 2))?;
    }
    Ok((db, records.len() - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_notifications_serialize_as_messages_do() {
        let update = json!({"Item": {"0c7e6a43-2f1d-4a55-9a7b-11aa22bb33cc": {"insert": {"name": "a \"b\"", "n": 1}}}});
        let text = serde_json::to_vec(&update).unwrap();
        for mid in [json!("m0"), json!(["a", 1]), Value::Null] {
            let m = Message::notification("update2", vec![mid.clone(), update.clone()]);
            assert_eq!(update_notification_text("update2", &mid, None, &text), m.to_bytes());
            let t = Uuid::nil().to_string();
            let m = Message::notification("update3", vec![mid.clone(), json!(t), update.clone()]);
            assert_eq!(update_notification_text("update3", &mid, Some(&t), &text), m.to_bytes());
        }
    }
}
