//! Active-backup replication, as `ovsdb-server --sync-from=SERVER`: a backup
//! server connects to the active one, checks it is not talking to itself
//! (`get_server_id`), finds the databases both serve (`list_dbs`,
//! `get_schema`), monitors every table not excluded with
//! `--sync-exclude-tables`, replaces its own contents with the initial rows
//! and then applies each update. While backup, the server's clients may only
//! read. OVS's unixctl commands (`ovsdb-server/connect-active-ovsdb-server`,
//! `sync-status`, ...) drive it at run time.
//!
//! [`Replication`] is the protocol state machine; it sends through a
//! connection task ([`Link`]) that reconnects with backoff as OVS's
//! jsonrpc sessions do, and writes through [`Core::replica_update`].
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use serde_json::{Map, Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
    task::JoinHandle,
};

use crate::{
    jsonrpc::{Connection, Message},
    schema::DatabaseSchema,
    server::Core,
    vlog,
};

/// What the connection task tells the core, tagged with its generation so
/// that news from a replaced connection is ignored.
#[derive(Debug)]
pub enum LinkEvent {
    Connected,
    Msg(Message),
    Disconnected,
}

/// OVS's replication states (`RPL_S_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Init,
    ServerIdRequested,
    DbRequested,
    SchemaRequested,
    MonitorRequested,
    Replicating,
    /// Failed; the server goes back to being active.
    Error,
}

/// Parses `--sync-exclude-tables`: `DB:TABLE` items separated by spaces or
/// commas.
pub fn parse_excluded(spec: &str) -> Result<BTreeSet<(String, String)>, String> {
    let mut set = BTreeSet::new();
    for item in spec.split([' ', ',']).filter(|s| !s.is_empty()) {
        match item.split_once(':') {
            Some((db, table)) if !table.is_empty() => {
                set.insert((db.to_string(), table.to_string()));
            }
            _ => return Err(format!("Can't parse excluded table: {item}")),
        }
    }
    Ok(set)
}

/// The connection to the active server: a task that connects (again and
/// again), passes messages both ways and answers echo probes itself.
struct Link {
    generation: u64,
    out: mpsc::UnboundedSender<Message>,
    task: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct Replication {
    /// `--sync-from` / `set-active-ovsdb-server`.
    pub sync_from: Option<String>,
    /// `--sync-exclude-tables` as given, and parsed.
    exclude_spec: Option<String>,
    excluded: BTreeSet<(String, String)>,
    /// Backup (replicating, read-only to clients) or active.
    backup: bool,
    state: State,
    link: Option<Link>,
    generation: u64,
    events: mpsc::UnboundedSender<(u64, LinkEvent)>,
    /// Outstanding requests: id → the database they are about.
    pending: HashMap<u64, Option<String>>,
    next_id: u64,
    /// Databases being replicated → the active server's schema when it
    /// differs from ours but can still be replicated.
    dbs: BTreeMap<String, Option<DatabaseSchema>>,
}

impl Replication {
    /// Link events come out of the returned receiver, for the core to pass
    /// to [`Replication::link_event`].
    pub fn new(
        sync_from: Option<String>,
        exclude_spec: Option<String>,
    ) -> Result<(Replication, mpsc::UnboundedReceiver<(u64, LinkEvent)>), String> {
        let excluded = exclude_spec.as_deref().map(parse_excluded).transpose()?.unwrap_or_default();
        let (events, rx) = mpsc::unbounded_channel();
        let r = Replication {
            sync_from,
            exclude_spec,
            excluded,
            backup: false,
            state: State::Init,
            link: None,
            generation: 0,
            events,
            pending: HashMap::new(),
            next_id: 1,
            dbs: BTreeMap::new(),
        };
        Ok((r, rx))
    }

    pub fn is_backup(&self) -> bool {
        self.backup
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Becomes backup of `sync_from`, from scratch (OVS's replication_init).
    pub fn connect(&mut self) {
        let Some(remote) = self.sync_from.clone() else { return };
        self.link = None;
        self.generation += 1;
        self.state = State::Init;
        self.pending.clear();
        self.dbs.clear();
        let (out, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_link(remote, self.generation, rx, self.events.clone()));
        self.link = Some(Link { generation: self.generation, out, task });
        self.backup = true;
    }

    /// Stops replicating; the server is active again.
    pub fn disconnect(&mut self) {
        self.link = None;
        self.pending.clear();
        self.dbs.clear();
        self.state = State::Init;
        self.backup = false;
    }

    /// After each batch of events: a replication that failed makes the
    /// server active, as in OVS's main loop.
    pub fn run(&mut self) {
        if self.backup && self.state == State::Error {
            self.disconnect();
        }
    }

    fn send(&mut self, method: &str, params: Vec<Value>, db: Option<String>) {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, db);
        if let Some(l) = &self.link {
            let _ = l.out.send(Message::request(method, params, json!(id)));
        }
    }

    fn fail(&mut self, text: &str) {
        vlog::err("replication", text);
        self.state = State::Error;
    }

    /// Handles what the connection task reports.
    pub fn link_event(&mut self, core: &mut Core, generation: u64, ev: LinkEvent) {
        if self.link.as_ref().is_none_or(|l| l.generation != generation) {
            return;
        }
        match ev {
            LinkEvent::Connected => {
                self.pending.clear();
                self.dbs.clear();
                self.state = State::ServerIdRequested;
                self.send("get_server_id", vec![], None);
            }
            LinkEvent::Disconnected => {
                if self.state != State::Error {
                    self.state = State::Init;
                }
                self.pending.clear();
            }
            LinkEvent::Msg(m) => self.message(core, m),
        }
    }

    fn message(&mut self, core: &mut Core, m: Message) {
        if self.state == State::Error {
            return;
        }
        let (result, id) = match m {
            Message::Notification { method, params } if method == "update" => {
                let (Some(db), Some(updates)) = (params.get(0).and_then(Value::as_str), params.get(1)) else {
                    return;
                };
                if self.dbs.contains_key(db)
                    && let Err(e) = core.replica_update(db, updates, None)
                {
                    self.fail(&format!("{db}: {e}"));
                }
                return;
            }
            Message::Response { result, id } => (result, id),
            Message::Error { error, id } => {
                if id.as_u64().is_some_and(|i| self.pending.remove(&i).is_some()) {
                    self.fail(&format!("request failed: {error}"));
                }
                return;
            }
            _ => return,
        };
        let Some(db) = id.as_u64().and_then(|i| self.pending.remove(&i)) else {
            vlog::warn("replication", "received unexpected reply");
            return;
        };
        match self.state {
            State::ServerIdRequested => {
                let Some(uuid) = result.as_str().and_then(crate::atom::parse_uuid) else {
                    return self.fail("get_server_id failed: Server ID is not valid UUID");
                };
                if uuid == core.server_id() {
                    return self.fail("Server ID check failed: Self replicating is not allowed");
                }
                self.dbs = core.db_names().into_iter().filter(|n| n != "_Server").map(|n| (n, None)).collect();
                self.send("list_dbs", vec![], None);
                self.state = State::DbRequested;
            }
            State::DbRequested => {
                let Some(names) = result.as_array() else {
                    return self.fail("list_dbs failed: list_dbs response is not array");
                };
                let remote: BTreeSet<&str> = names.iter().filter_map(Value::as_str).collect();
                self.dbs.retain(|n, _| remote.contains(n.as_str()));
                if self.dbs.is_empty() {
                    vlog::warn("replication", "Nothing to replicate.");
                    self.state = State::Error;
                    return;
                }
                for name in self.dbs.keys().cloned().collect::<Vec<_>>() {
                    self.send("get_schema", vec![json!(name)], Some(name.clone()));
                }
                self.state = State::SchemaRequested;
            }
            State::SchemaRequested => {
                let schema = match DatabaseSchema::from_json(&result) {
                    Ok(s) => s,
                    Err(e) => return self.fail(&e.to_string()),
                };
                let name = schema.name.clone();
                let Some(local) = core.schema(&name) else {
                    vlog::warn("replication", &format!("unexpected schema {name}"));
                    self.state = State::Error;
                    return;
                };
                if local.to_json() != schema.to_json() {
                    vlog::info(
                        "replication",
                        &format!("Schema version mismatch, checking if {name} can still be replicated or not."),
                    );
                    if replication_possible(&local, &schema) {
                        vlog::info("replication", &format!("{name} can be replicated."));
                        self.dbs.insert(name, Some(schema));
                    } else {
                        vlog::info("replication", &format!("{name} cannot be replicated."));
                        self.dbs.remove(&name);
                    }
                }
                if self.pending.is_empty() {
                    if self.dbs.is_empty() {
                        vlog::warn("replication", "Nothing to replicate.");
                        self.state = State::Error;
                        return;
                    }
                    let requests: Vec<(String, Value)> = self
                        .dbs
                        .iter()
                        .map(|(name, remote)| {
                            let schema = remote.clone().or_else(|| core.schema(name)).expect("local database");
                            (name.clone(), self.monitor_request(&schema))
                        })
                        .collect();
                    for (name, tables) in requests {
                        self.send("monitor", vec![json!(name), json!(name), tables], Some(name));
                    }
                    self.state = State::MonitorRequested;
                }
            }
            State::MonitorRequested => {
                let Some(db) = db else { return };
                vlog::info("replication", "Monitor request received. Resetting the database");
                let keep: BTreeSet<String> =
                    self.excluded.iter().filter(|(d, _)| *d == db).map(|(_, t)| t.clone()).collect();
                if let Err(e) = core.replica_update(&db, &result, Some(&keep)) {
                    return self.fail(&format!("{db}: {e}"));
                }
                if self.pending.is_empty() {
                    self.state = State::Replicating;
                }
            }
            State::Init | State::Replicating | State::Error => {}
        }
    }

    /// Every table of `schema` not excluded, all columns.
    fn monitor_request(&self, schema: &DatabaseSchema) -> Value {
        let tables: Map<String, Value> = schema
            .tables
            .keys()
            .filter(|t| !self.excluded.contains(&(schema.name.clone(), (*t).clone())))
            .map(|t| (t.clone(), json!([{}])))
            .collect();
        Value::Object(tables)
    }

    /// `ovsdb-server/sync-status`'s text after its `state:` line.
    fn status(&self) -> String {
        let from = self.sync_from.as_deref().unwrap_or("");
        match self.state {
            State::Replicating => {
                let mut s = format!(
                    "replicating: {from}\ndatabase: {}",
                    self.dbs.keys().cloned().collect::<Vec<_>>().join(", ")
                );
                if !self.excluded.is_empty() {
                    s.push_str(&format!("\nexclude: {}", self.excluded_text()));
                }
                s
            }
            State::Error => format!("Replication to ({from}) failed\n"),
            _ => format!("connecting: {from}"),
        }
    }

    fn excluded_text(&self) -> String {
        self.excluded.iter().map(|(d, t)| format!("{d}:{t}")).collect::<Vec<_>>().join(",")
    }

    /// The replication unixctl commands; None for any other command.
    pub fn unixctl(&mut self, cmd: &str, args: &[String]) -> Option<Result<String, String>> {
        let line = |s: String| if s.is_empty() || s.ends_with('\n') { s } else { s + "\n" };
        Some(match (cmd, args) {
            ("ovsdb-server/set-active-ovsdb-server", [remote]) => {
                self.sync_from = Some(remote.clone());
                Ok(String::new())
            }
            ("ovsdb-server/get-active-ovsdb-server", []) => Ok(line(self.sync_from.clone().unwrap_or_default())),
            ("ovsdb-server/connect-active-ovsdb-server", []) => {
                if self.sync_from.is_none() {
                    Ok("Unable to connect: active server is not specified.\n".into())
                } else {
                    self.connect();
                    Ok(String::new())
                }
            }
            ("ovsdb-server/disconnect-active-ovsdb-server", []) => {
                self.disconnect();
                Ok(String::new())
            }
            ("ovsdb-server/set-sync-exclude-tables", [spec]) => match parse_excluded(spec) {
                Ok(set) => {
                    self.exclude_spec = Some(spec.clone());
                    self.excluded = set;
                    if self.backup {
                        self.connect();
                    }
                    Ok(String::new())
                }
                // OVS replies (successfully) with the complaint.
                Err(e) => Ok(line(e)),
            },
            ("ovsdb-server/get-sync-exclude-tables", []) => Ok(line(self.excluded_text())),
            ("ovsdb-server/sync-status", []) => Ok(if self.backup {
                line(format!("state: backup\n{}", self.status()))
            } else {
                "state: active\n".into()
            }),
            ("ovsdb-server/set-active-ovsdb-server-probe-interval", [n]) => {
                if n.parse::<i64>().is_ok() {
                    Ok(String::new())
                } else {
                    Ok("Invalid probe interval, integer value expected\n".into())
                }
            }
            _ => return None,
        })
    }
}

/// The unixctl commands above, for `list-commands`.
pub const COMMANDS: &[&str] = &[
    "ovsdb-server/connect-active-ovsdb-server",
    "ovsdb-server/disconnect-active-ovsdb-server",
    "ovsdb-server/get-active-ovsdb-server",
    "ovsdb-server/get-sync-exclude-tables",
    "ovsdb-server/set-active-ovsdb-server",
    "ovsdb-server/set-active-ovsdb-server-probe-interval",
    "ovsdb-server/set-sync-exclude-tables",
    "ovsdb-server/sync-status",
];

/// Whether the active server's `remote` schema can be mirrored into our
/// `local` one though they differ: each of its tables and columns must be
/// ours too, with the same definition.
pub fn replication_possible(local: &DatabaseSchema, remote: &DatabaseSchema) -> bool {
    for (tname, rt) in &remote.tables {
        let Some(lt) = local.tables.get(tname) else {
            vlog::info("replication", &format!("Table {tname} not present in the local db schema"));
            return false;
        };
        for (cname, rc) in &rt.columns {
            match lt.columns.get(cname) {
                None => {
                    vlog::info(
                        "replication",
                        &format!("Column {cname} not present in the local db schema table {tname}."),
                    );
                    return false;
                }
                Some(lc) if lc != rc => {
                    vlog::info("replication", &format!("Column {cname} mismatch in local db schema table {tname}."));
                    return false;
                }
                Some(_) => {}
            }
        }
    }
    true
}

/// Connects to `remote` (`unix:PATH` or `tcp:IP:PORT`) again and again, with
/// OVS's backoff (1 s doubling to 8 s), relaying messages both ways.
pub(crate) async fn run_link(
    remote: String,
    generation: u64,
    mut out: mpsc::UnboundedReceiver<Message>,
    events: mpsc::UnboundedSender<(u64, LinkEvent)>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let connected = if let Some(path) = remote.strip_prefix("unix:") {
            match tokio::net::UnixStream::connect(path).await {
                Ok(s) => Some(relay(Connection::new(s), generation, &mut out, &events).await),
                Err(_) => None,
            }
        } else if let Some(addr) = remote.strip_prefix("tcp:") {
            let addr = match addr.rsplit_once(':') {
                Some((ip, port)) if ip.contains(':') && !ip.starts_with('[') => format!("[{ip}]:{port}"),
                _ => addr.to_string(),
            };
            match tokio::net::TcpStream::connect(&addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    Some(relay(Connection::new(s), generation, &mut out, &events).await)
                }
                Err(_) => None,
            }
        } else {
            vlog::err("replication", &format!("{remote}: unsupported remote (expected unix:PATH or tcp:IP:PORT)"));
            return;
        };
        if events.is_closed() {
            return;
        }
        if connected == Some(true) {
            backoff = Duration::from_secs(1);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(8));
    }
}

/// One connection's life; true if it got as far as being connected.
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: Connection<S>,
    generation: u64,
    out: &mut mpsc::UnboundedReceiver<Message>,
    events: &mpsc::UnboundedSender<(u64, LinkEvent)>,
) -> bool {
    // Whatever was queued for an earlier connection is stale.
    while out.try_recv().is_ok() {}
    if events.send((generation, LinkEvent::Connected)).is_err() {
        return true;
    }
    loop {
        tokio::select! {
            m = conn.recv() => match m {
                Ok(Some(m)) => {
                    if let Some(reply) = m.echo_reply() {
                        if conn.send(&reply).await.is_err() {
                            break;
                        }
                    } else if m.is_echo_reply() {
                        continue;
                    } else if events.send((generation, LinkEvent::Msg(m))).is_err() {
                        return true;
                    }
                }
                Ok(None) | Err(_) => break,
            },
            m = out.recv() => match m {
                Some(m) => {
                    if conn.send(&m).await.is_err() {
                        break;
                    }
                }
                None => return true,
            },
        }
    }
    let _ = events.send((generation, LinkEvent::Disconnected));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excluded_tables_parse_as_ovs() {
        let s = parse_excluded("mydb:b, other:x mydb:a").unwrap();
        assert_eq!(
            s.into_iter().collect::<Vec<_>>(),
            vec![("mydb".into(), "a".into()), ("mydb".into(), "b".into()), ("other".into(), "x".into())]
        );
        assert_eq!(parse_excluded("mydb").unwrap_err(), "Can't parse excluded table: mydb");
        assert!(parse_excluded("").unwrap().is_empty());
    }

    fn schema(v: Value) -> DatabaseSchema {
        DatabaseSchema::from_json(&v).unwrap()
    }

    #[test]
    fn a_superset_schema_can_mirror_a_subset() {
        let small = schema(json!({"name": "d", "tables": {"a": {"columns": {"n": {"type": "integer"}}}}}));
        let big = schema(json!({"name": "d", "tables": {
            "a": {"columns": {"n": {"type": "integer"}, "m": {"type": "string"}}},
            "b": {"columns": {"x": {"type": "integer"}}}}}));
        assert!(replication_possible(&big, &small));
        assert!(!replication_possible(&small, &big));
        let other = schema(json!({"name": "d", "tables": {"a": {"columns": {"n": {"type": "string"}}}}}));
        assert!(!replication_possible(&big, &other));
    }

    #[tokio::test]
    async fn unixctl_commands_as_ovs() {
        let (mut r, _rx) = Replication::new(None, Some("mydb:db2,mydb:db1".into())).unwrap();
        let mut cmd =
            |c: &str, a: &[&str]| r.unixctl(c, &a.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap().unwrap();
        assert_eq!(cmd("ovsdb-server/get-sync-exclude-tables", &[]), "mydb:db1,mydb:db2\n");
        assert_eq!(
            cmd("ovsdb-server/connect-active-ovsdb-server", &[]),
            "Unable to connect: active server is not specified.\n"
        );
        assert_eq!(cmd("ovsdb-server/sync-status", &[]), "state: active\n");
        cmd("ovsdb-server/set-active-ovsdb-server", &["tcp:127.0.0.1:9"]);
        assert_eq!(cmd("ovsdb-server/get-active-ovsdb-server", &[]), "tcp:127.0.0.1:9\n");
        assert_eq!(cmd("ovsdb-server/connect-active-ovsdb-server", &[]), "");
        assert_eq!(cmd("ovsdb-server/sync-status", &[]), "state: backup\nconnecting: tcp:127.0.0.1:9\n");
        assert_eq!(cmd("ovsdb-server/set-sync-exclude-tables", &["bad"]), "Can't parse excluded table: bad\n");
        assert_eq!(cmd("ovsdb-server/get-sync-exclude-tables", &[]), "mydb:db1,mydb:db2\n");
        cmd("ovsdb-server/disconnect-active-ovsdb-server", &[]);
        assert_eq!(cmd("ovsdb-server/sync-status", &[]), "state: active\n");
        assert!(r.unixctl("ovsdb-server/list-dbs", &[]).is_none());
    }
}
