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
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    db::{Commit, Database},
    error::OvsdbError,
    jsonrpc::Message,
    log::{Log, OpenMode, annotate_txn, now_ms},
    monitor::{Monitor, MonitorVersion},
    schema::DatabaseSchema,
    txn::{self, TxnContext, TxnOutcome},
};

pub type SessionId = u64;

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
    outbox: Vec<(SessionId, Outgoing)>,
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
        let mut core =
            Core { dbs, sessions: HashMap::new(), locks: BTreeMap::new(), parked: Vec::new(), outbox: Vec::new() };
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
                let row = json!({"name": name, "model": "standalone", "connected": true, "leader": true, "schema": s});
                (Uuid::new_v4().to_string(), row)
            })
            .collect();
        db.apply_log_record(&json!({"Database": table})).map_err(|e| format!("building _Server: {e}"))?;
        self.dbs.insert("_Server".into(), DbInstance { db, log: None, dirty: false });
        Ok(())
    }

    pub fn add_session(&mut self, id: SessionId) {
        self.sessions.insert(id, Session { monitors: HashMap::new(), locks: HashSet::new() });
    }

    /// Forgets a session: its monitors, parked transactions and locks (the next
    /// waiter of each lock it owned is told it has it).
    pub fn remove_session(&mut self, id: SessionId) {
        let Some(s) = self.sessions.remove(&id) else { return };
        self.parked.retain(|p| p.session != id);
        for name in s.locks {
            self.release_lock(id, &name);
        }
    }

    pub fn take_outbox(&mut self) -> Vec<(SessionId, Outgoing)> {
        std::mem::take(&mut self.outbox)
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
                [Value::Bool(_)] => Ok(json!({})),
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
            return Err(OvsdbError::new(
                "unknown database",
                format!("{method} request specifies unknown database {name}"),
            )
            .to_json());
        }
        Ok(name.to_string())
    }

    // ---- transactions -------------------------------------------------

    fn transact(&mut self, from: SessionId, db: String, ops: Vec<Value>, id: Value, since: Instant) {
        let locks: HashSet<String> =
            self.locks.iter().filter(|(_, q)| q.front() == Some(&from)).map(|(n, _)| n.clone()).collect();
        let has_lock = |n: &str| locks.contains(n);
        let ctx = TxnContext {
            has_lock: &has_lock,
            elapsed_ms: since.elapsed().as_millis() as u64,
            can_wait: true,
            read_only: db == "_Server",
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
                            done.results.push(OvsdbError::new("I/O error", e).to_json());
                        }
                    }
                }
                self.send(from, Message::response(Value::Array(done.results), id));
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

    /// Applies a stored commit, tells the monitors, and retries parked waits.
    fn committed(&mut self, db: &str, commit: Commit) {
        // Standalone databases report the zero transaction id, as OVS's do.
        let txn_id = Uuid::nil();
        let txn_id = txn_id.to_string();
        // Monitor updates, in session order. Monitors asking for the same
        // thing get the same update: each distinct one is serialized once.
        let mut updates = Vec::new();
        let mut serialized: Vec<(Value, Vec<u8>)> = Vec::new();
        for (sid, s) in &self.sessions {
            for (mdb, mid_json, m) in s.monitors.values() {
                if mdb != db {
                    continue;
                }
                if let Some(u) = m.update(&commit) {
                    let i = match serialized.iter().position(|(v, _)| *v == u) {
                        Some(i) => i,
                        None => {
                            let text = serde_json::to_vec(&u).expect("serializing a Value cannot fail");
                            serialized.push((u, text));
                            serialized.len() - 1
                        }
                    };
                    let v = m.version();
                    let txn = (v == MonitorVersion::V3).then_some(txn_id.as_str());
                    let text = update_notification_text(v.notification(), mid_json, txn, &serialized[i].1);
                    updates.push((*sid, Outgoing::Text(text)));
                }
            }
        }
        self.outbox.extend(updates);
        // Updates are made from the commit alone, so its rows can now move
        // into the database.
        self.dbs.get_mut(db).expect("db").db.apply_owned(commit);
        self.retry_parked(Some(db));
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

    /// Compacts every log that has grown enough (or all, with `force`): the
    /// whole database written as one record after the schema.
    pub fn compact(&mut self, force: bool) -> Result<Vec<String>, String> {
        let mut done = Vec::new();
        for (name, inst) in self.dbs.iter_mut() {
            let Some(log) = inst.log.as_mut() else { continue };
            let grown = log.grew_lots() && log.records_since_compaction() >= crate::log::COMPACT_MIN_RECORDS as usize;
            if !force && !grown {
                continue;
            }
            let mut snap = inst.db.to_snapshot_json();
            if let Some(o) = snap.as_object_mut() {
                annotate_txn(o, Some("compacting database online"), false, now_ms());
            }
            log.replace(&[inst.db.schema.to_json(), snap]).map_err(|e| format!("{name}: {e}"))?;
            done.push(name.clone());
        }
        Ok(done)
    }

    /// Database names (for ovsdb-server/list-dbs).
    pub fn db_names(&self) -> Vec<String> {
        self.dbs.keys().cloned().collect()
    }

    /// The values of DB,TABLE,COLUMN for `--remote=db:...`: strings, or the
    /// `target` column of rows the column refers to (as ovsdb-server reads
    /// Manager rows).
    pub fn remotes_from_db(&self, spec: &str) -> Result<Vec<String>, String> {
        let parts: Vec<&str> = spec.split(',').collect();
        let [db, table, column] = parts[..] else { return Err(format!("\"db:{spec}\": expected db:DB,TABLE,COLUMN")) };
        let inst = self.dbs.get(db).ok_or_else(|| format!("{spec}: no database named {db}"))?;
        let t = inst.db.table(table).ok_or_else(|| format!("{spec}: no table named {table}"))?;
        let col = t.schema.column(column).ok_or_else(|| format!("{spec}: no column named {column}"))?;
        let mut out = Vec::new();
        for row in t.rows().values() {
            let Some(d) = row.get(column) else { continue };
            for a in d.keys.iter().chain(d.values.iter().flatten()) {
                match a {
                    crate::atom::Atom::String(s) => out.push(s.to_string()),
                    crate::atom::Atom::Uuid(u) => {
                        let rt = col.type_.key.ref_table.as_deref().or(col
                            .type_
                            .value
                            .as_ref()
                            .and_then(|v| v.ref_table.as_deref()));
                        if let Some(target) = rt.and_then(|rt| inst.db.get(rt, u)).and_then(|r| r.get("target")) {
                            for k in &target.keys {
                                if let Some(s) = k.as_str() {
                                    out.push(s.to_string());
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
    let (log, records) = Log::open(path, OpenMode::ReadWrite).map_err(|e| e.to_string())?;
    if let Some(e) = log.read_error() {
        eprintln!("{}: {e}", path.display());
    }
    let (db, _) = replay(path, &records)?;
    let name = db.schema.name.clone();
    Ok((name, DbInstance { db, log: Some(log), dirty: false }))
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
