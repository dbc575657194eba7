//! Relay databases, as `ovsdb-server relay:DB:REMOTE`: the server serves a
//! copy of database DB of another server. The copy lives in memory and is
//! kept up to date by a monitor of all its tables; reads are answered from
//! it, and transactions that write are forwarded to the source, whose reply
//! goes back to the client.
use std::{
    collections::{BTreeSet, HashMap},
    io::Write,
    time::{Duration, Instant},
};

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::{
    jsonrpc::Message,
    replication::{LinkEvent, run_link},
    schema::DatabaseSchema,
    server::{Core, SessionId},
    vlog,
};

/// Splits `relay:DB:REMOTE` into DB and REMOTE.
pub fn parse_spec(spec: &str) -> Option<(String, String)> {
    let rest = spec.strip_prefix("relay:")?;
    let (db, remote) = rest.split_once(':')?;
    (!db.is_empty() && !remote.is_empty()).then(|| (db.to_string(), remote.to_string()))
}

/// Asks `remote` for DB's schema, blocking (at startup, before serving):
/// retries for a while, as the source may still be starting.
pub fn fetch_schema(db: &str, remote: &str, patience: Duration) -> Result<DatabaseSchema, String> {
    let start = Instant::now();
    loop {
        match try_fetch_schema(db, remote) {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() >= patience => return Err(format!("relay:{db}:{remote}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn try_fetch_schema(db: &str, remote: &str) -> Result<DatabaseSchema, String> {
    let request = Message::request("get_schema", vec![json!(db)], json!(0)).to_bytes();
    let reply: Value = if let Some(path) = remote.strip_prefix("unix:") {
        let mut s = std::os::unix::net::UnixStream::connect(path).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        s.write_all(&request).map_err(|e| e.to_string())?;
        read_one(s)?
    } else if let Some(addr) = remote.strip_prefix("tcp:") {
        let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        s.write_all(&request).map_err(|e| e.to_string())?;
        read_one(s)?
    } else {
        return Err("unsupported remote (expected unix:PATH or tcp:IP:PORT)".into());
    };
    match Message::from_json(reply)? {
        Message::Response { result, .. } => DatabaseSchema::from_json(&result).map_err(|e| e.to_string()),
        Message::Error { error, .. } => Err(format!("get_schema failed: {error}")),
        _ => Err("unexpected message".into()),
    }
}

fn read_one(r: impl std::io::Read) -> Result<Value, String> {
    let mut it = serde_json::Deserializer::from_reader(r).into_iter::<Value>();
    match it.next() {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("connection closed".into()),
    }
}

/// A transaction the core hands over for forwarding.
pub struct Forward {
    pub session: SessionId,
    pub id: Value,
    pub db: String,
    /// `transact`'s params: the database name, then the operations.
    pub params: Vec<Value>,
}

/// One relay database's link to its source.
struct Source {
    db: String,
    remote: String,
    out: Option<mpsc::UnboundedSender<Message>>,
    task: Option<tokio::task::JoinHandle<()>>,
    monitor_id: Option<u64>,
    /// Forwarded transactions: our id → the client's session and id.
    forwarded: HashMap<u64, (SessionId, Value)>,
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

pub struct Relays {
    sources: Vec<Source>,
    next_id: u64,
}

impl Relays {
    /// Starts a link per `(db, remote)`; events come back through `events`,
    /// tagged with the relay's index.
    pub fn start(specs: &[(String, String)], events: mpsc::UnboundedSender<(u64, LinkEvent)>) -> Relays {
        let sources = specs
            .iter()
            .enumerate()
            .map(|(i, (db, remote))| {
                let (out, rx) = mpsc::unbounded_channel();
                let task = tokio::spawn(run_link(remote.clone(), i as u64, rx, events.clone()));
                Source {
                    db: db.clone(),
                    remote: remote.clone(),
                    out: Some(out),
                    task: Some(task),
                    monitor_id: None,
                    forwarded: HashMap::new(),
                }
            })
            .collect();
        Relays { sources, next_id: 1 }
    }

    fn send(&mut self, i: usize, method: &str, params: Vec<Value>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(out) = &self.sources[i].out {
            let _ = out.send(Message::request(method, params, json!(id)));
        }
        id
    }

    /// Sends a write transaction on to its database's source.
    pub fn forward(&mut self, core: &mut Core, f: Forward) {
        let Some(i) = self.sources.iter().position(|s| s.db == f.db) else {
            return core.reply(f.session, Message::error(json!("canceled"), f.id));
        };
        let id = self.send(i, "transact", f.params);
        self.sources[i].forwarded.insert(id, (f.session, f.id));
    }

    /// Handles what relay `index`'s link reports.
    pub fn link_event(&mut self, core: &mut Core, index: u64, ev: LinkEvent) {
        let i = index as usize;
        if i >= self.sources.len() {
            return;
        }
        match ev {
            LinkEvent::Connected => {
                let db = self.sources[i].db.clone();
                let Some(schema) = core.schema(&db) else { return };
                let tables: Map<String, Value> = schema.tables.keys().map(|t| (t.clone(), json!([{}]))).collect();
                let id = self.send(i, "monitor", vec![json!(db), json!(["monid", db]), Value::Object(tables)]);
                self.sources[i].monitor_id = Some(id);
            }
            LinkEvent::Disconnected => {
                let s = &mut self.sources[i];
                vlog::warn("relay", &format!("{}: connection to {} lost", s.db, s.remote));
                s.monitor_id = None;
                // What was forwarded may or may not have been committed:
                // the client has to find out, as with OVS's relays.
                for (_, (session, id)) in std::mem::take(&mut s.forwarded) {
                    core.reply(session, Message::error(json!("canceled"), id));
                }
            }
            LinkEvent::Msg(m) => self.message(core, i, m),
        }
    }

    fn message(&mut self, core: &mut Core, i: usize, m: Message) {
        let db = self.sources[i].db.clone();
        match m {
            Message::Notification { method, params } if method == "update" => {
                if params.get(0) != Some(&json!(["monid", db])) {
                    return;
                }
                if let Some(updates) = params.get(1)
                    && let Err(e) = core.replica_update(&db, updates, None)
                {
                    vlog::err("relay", &format!("{db}: {e}"));
                }
            }
            Message::Response { result, id } => {
                let Some(n) = id.as_u64() else { return };
                if self.sources[i].monitor_id == Some(n) {
                    // The initial contents replace whatever we had.
                    if let Err(e) = core.replica_update(&db, &result, Some(&BTreeSet::new())) {
                        vlog::err("relay", &format!("{db}: {e}"));
                    }
                } else if let Some((session, client_id)) = self.sources[i].forwarded.remove(&n) {
                    core.reply(session, Message::response(result, client_id));
                }
            }
            Message::Error { error, id } => {
                let Some(n) = id.as_u64() else { return };
                if self.sources[i].monitor_id == Some(n) {
                    vlog::err("relay", &format!("{db}: monitor failed: {error}"));
                } else if let Some((session, client_id)) = self.sources[i].forwarded.remove(&n) {
                    core.reply(session, Message::error(error, client_id));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_specs() {
        assert_eq!(parse_spec("relay:mydb:unix:db1.sock"), Some(("mydb".into(), "unix:db1.sock".into())));
        assert_eq!(parse_spec("relay:mydb:tcp:127.0.0.1:6640"), Some(("mydb".into(), "tcp:127.0.0.1:6640".into())));
        assert_eq!(parse_spec("relay:mydb"), None);
        assert_eq!(parse_spec("mydb.db"), None);
    }
}
