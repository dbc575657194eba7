//! The client side of OVSDB (OVS's "IDL"): a replica of chosen tables kept
//! current by a monitor, change tracking, and transactions with
//! optimistic-concurrency checks.
//!
//! Everything is async (tokio) and no call blocks a thread. The socket
//! belongs to a background task ([`session`]) that reconnects, answers
//! echoes and probes; the [`Idl`] applies what it relays, in the server's
//! order, whenever the caller awaits one of its methods.
mod partial;
mod replica;
mod session;
mod ssl;
mod txn;

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde_json::Value;
use tokio::{sync::mpsc, task::JoinHandle};

pub use replica::{ChangeKind, Replica, ReplicaRow, RowChange, TableReplica, UpdateFormat, datum_string_map};
pub use ssl::SslOptions;
pub use txn::{Txn, TxnOutcome, TxnStatus};

use crate::schema::DatabaseSchema;
use session::{Command, Config, Event, Remote};

#[derive(Clone, Debug)]
pub struct IdlOptions {
    /// e.g. "Open_vSwitch".
    pub database: String,
    /// Tables (and columns) to replicate; empty: all of the server's schema.
    pub tables: Vec<TableSelect>,
    /// Retry connecting, and reconnect after a failure, with a backoff from
    /// 1 s doubling up to `max_backoff` (OVS's `reconnect`).
    pub reconnect: bool,
    pub max_backoff: Duration,
    /// Send an echo after this long without hearing from the server, and
    /// disconnect after as long again. OVS clients use 5 s.
    pub probe_interval: Option<Duration>,
    /// Only meaningful for clustered databases, which this library does not
    /// treat specially.
    pub leader_only: bool,
    /// Keys and certificates for `ssl:` remotes.
    pub ssl: SslOptions,
}

impl Default for IdlOptions {
    fn default() -> Self {
        IdlOptions {
            database: "Open_vSwitch".into(),
            tables: Vec::new(),
            reconnect: true,
            max_backoff: Duration::from_secs(8),
            probe_interval: Some(Duration::from_secs(5)),
            leader_only: false,
            ssl: SslOptions::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSelect {
    pub table: String,
    /// `None`: every column.
    pub columns: Option<Vec<String>>,
}

impl TableSelect {
    pub fn all(table: &str) -> TableSelect {
        TableSelect { table: table.into(), columns: None }
    }

    pub fn columns(table: &str, columns: &[&str]) -> TableSelect {
        TableSelect { table: table.into(), columns: Some(columns.iter().map(|c| c.to_string()).collect()) }
    }
}

/// Errors, each displayed on one line. A caller reporting a connection
/// failure prefixes the remote, as ovs-vsctl does:
/// `unix:/x: database connection failed (No such file or directory)`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum IdlError {
    #[error("database connection failed ({0})")]
    Connect(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("connection closed")]
    Closed,
    #[error("schema error: {0}")]
    Schema(String),
    /// A JSON-RPC error reply to [`Idl::request`].
    #[error("error reply: {0}")]
    Rpc(Value),
    /// A transaction that cannot be sent as built (unknown table or column).
    #[error("bad transaction: {0}")]
    Txn(String),
}

/// How long [`Idl::commit`] waits, after a successful reply, for the update
/// that shows the transaction's new rows in the replica. Servers send the
/// update before the reply, so this only matters for one that does not.
const OWN_UPDATE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Idl {
    options: IdlOptions,
    schema: Arc<DatabaseSchema>,
    replica: Replica,
    seqno: u64,
    connected: bool,
    /// Session number of the current connection (see [`Command::epoch`]).
    epoch: u64,
    changes: Vec<RowChange>,
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<Event>,
    next_id: u64,
    /// Replies that arrived while waiting for something else.
    replies: HashMap<u64, Result<Value, Value>>,
    /// Set once the session has ended for good.
    fatal: Option<IdlError>,
    task: JoinHandle<()>,
}

impl Drop for Idl {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What applying one event did.
enum Applied {
    Changed,
    Reply,
    Disconnected,
    Nothing,
}

impl Idl {
    /// Connects to `remote` (`unix:PATH` or `tcp:IP:PORT`, as ovs-vsctl's
    /// `--db`) and returns once the schema is known and the monitor's
    /// initial contents are in the replica. With `reconnect`, keeps trying
    /// until the server is there; without, fails on the first error.
    pub async fn connect(remote: &str, options: IdlOptions) -> Result<Idl, IdlError> {
        let remote = Remote::parse(remote)?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(session::run(Config { remote, options: options.clone() }, cmd_rx, ev_tx));
        // The first session's result decides.
        let connected = loop {
            match ev_rx.recv().await {
                Some(Event::Connected(c)) => break c,
                Some(Event::Disconnected { error, retrying: false }) => return Err(error),
                Some(_) => continue,
                None => return Err(IdlError::Closed),
            }
        };
        let schema = Arc::new(connected.schema.clone());
        let mut idl = Idl {
            replica: Replica::new(&schema, &connected.monitored)?,
            options,
            schema,
            seqno: 0,
            connected: false,
            epoch: 0,
            changes: Vec::new(),
            commands: cmd_tx,
            events: ev_rx,
            next_id: 1,
            replies: HashMap::new(),
            fatal: None,
            task,
        };
        idl.apply(Event::Connected(connected))?;
        Ok(idl)
    }

    /// The server's schema (of the current connection).
    pub fn schema(&self) -> &DatabaseSchema {
        &self.schema
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Changes whenever the replica does (an update applied, a reconnect).
    pub fn seqno(&self) -> u64 {
        self.seqno
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn options(&self) -> &IdlOptions {
        &self.options
    }

    /// Applies one event from the session.
    fn apply(&mut self, ev: Event) -> Result<Applied, IdlError> {
        match ev {
            Event::Connected(c) => {
                let schema = Arc::new(c.schema);
                let mut fresh = Replica::new(&schema, &c.monitored)?;
                let mut initial_changes = Vec::new();
                fresh.apply(c.format, &c.initial, &mut initial_changes)?;
                // After a reconnect, report the difference to what the caller
                // last saw rather than a delete and insert of every row.
                self.changes.extend(self.replica.diff(&fresh));
                self.replica = fresh;
                self.schema = schema;
                self.epoch = c.epoch;
                self.connected = true;
                self.seqno += 1;
                Ok(Applied::Changed)
            }
            Event::Update { format, updates } => {
                let before = self.changes.len();
                self.replica.apply(format, &updates, &mut self.changes)?;
                if self.changes.len() != before {
                    self.seqno += 1;
                    Ok(Applied::Changed)
                } else {
                    Ok(Applied::Nothing)
                }
            }
            Event::Reply { id, result } => {
                self.replies.insert(id, result);
                Ok(Applied::Reply)
            }
            Event::Disconnected { error, retrying } => {
                self.connected = false;
                if retrying {
                    Ok(Applied::Disconnected)
                } else {
                    self.fatal = Some(error.clone());
                    Err(error)
                }
            }
        }
    }

    /// Receives and applies the next event.
    async fn next(&mut self) -> Result<Applied, IdlError> {
        if let Some(e) = &self.fatal {
            return Err(e.clone());
        }
        match self.events.recv().await {
            Some(ev) => self.apply(ev),
            None => {
                self.connected = false;
                let e = self.fatal.get_or_insert(IdlError::Closed).clone();
                Err(e)
            }
        }
    }

    /// Waits until the replica changes (an update applied, or a reconnect
    /// rebuilt it). Errors when the session is over for good.
    pub async fn wait_for_update(&mut self) -> Result<(), IdlError> {
        loop {
            if let Applied::Changed = self.next().await? {
                return Ok(());
            }
        }
    }

    /// Applies whatever the server has already sent, without waiting.
    pub fn run(&mut self) -> Result<bool, IdlError> {
        let mut changed = false;
        while let Ok(ev) = self.events.try_recv() {
            changed |= matches!(self.apply(ev)?, Applied::Changed);
        }
        Ok(changed)
    }

    /// Changes applied to the replica since the last call, oldest first.
    /// The first connection's rows come as inserts; a reconnect's rebuild as
    /// the difference to the replica before it.
    pub fn take_changes(&mut self) -> Vec<RowChange> {
        std::mem::take(&mut self.changes)
    }

    /// An empty transaction on this database.
    pub fn txn(&self) -> Txn {
        Txn::new(self.options.database.clone(), self.schema.clone())
    }

    /// Sends `method` with `params` on the session and waits for the reply,
    /// applying updates that arrive meanwhile. A JSON-RPC error comes back
    /// as [`IdlError::Rpc`]; losing the connection first as
    /// [`IdlError::Closed`].
    pub async fn request(&mut self, method: &str, params: Vec<Value>) -> Result<Value, IdlError> {
        match self.call(method, params).await? {
            Ok(v) => Ok(v),
            Err(e) => Err(IdlError::Rpc(e)),
        }
    }

    async fn call(&mut self, method: &str, params: Vec<Value>) -> Result<Result<Value, Value>, IdlError> {
        if let Some(e) = &self.fatal {
            return Err(e.clone());
        }
        // Take in what is pending first, so that a disconnection already
        // reported is noticed.
        self.run()?;
        if !self.connected {
            return Err(IdlError::Closed);
        }
        let id = self.next_id;
        self.next_id += 1;
        let cmd = Command { epoch: self.epoch, id, method: method.to_string(), params };
        if self.commands.send(cmd).is_err() {
            return Err(IdlError::Closed);
        }
        loop {
            if let Some(r) = self.replies.remove(&id) {
                // The session answers requests it could not send with a bare
                // "not connected" string.
                if r == Err(Value::String("not connected".into())) {
                    return Err(IdlError::Closed);
                }
                return Ok(r);
            }
            match self.next().await? {
                Applied::Disconnected => return Err(IdlError::Closed),
                Applied::Reply | Applied::Changed | Applied::Nothing => {}
            }
        }
    }

    /// Commits `txn`: sends it (unless it would change nothing:
    /// [`TxnStatus::Unchanged`]), waits for the reply and for the update
    /// that carries it, so that the replica shows the caller's own write.
    /// Losing the connection gives [`TxnStatus::TryAgain`], as in OVS.
    pub async fn commit(&mut self, txn: Txn) -> Result<TxnOutcome, IdlError> {
        // Apply what has arrived, so that the decision "unchanged" is made
        // against the freshest replica.
        self.run()?;
        let prepared = match txn.prepare(&self.replica) {
            Err(e) => return Err(IdlError::Txn(e)),
            Ok(None) => return Ok(TxnOutcome::status(TxnStatus::Unchanged)),
            Ok(Some(p)) => p,
        };
        if !self.connected {
            return Ok(TxnOutcome::status(TxnStatus::TryAgain));
        }
        let reply = match self.call("transact", prepared.params.clone()).await {
            Ok(r) => r,
            Err(IdlError::Closed) if self.fatal.is_none() => return Ok(TxnOutcome::status(TxnStatus::TryAgain)),
            Err(e) => return Err(e),
        };
        let outcome = prepared.outcome(reply);
        if outcome.status == TxnStatus::Success && !txn.is_dry_run() {
            self.await_rows(&txn, &outcome).await?;
        }
        Ok(outcome)
    }

    /// Waits (bounded) until the rows `outcome` inserted are in the replica.
    async fn await_rows(&mut self, txn: &Txn, outcome: &TxnOutcome) -> Result<(), IdlError> {
        // Only rows of root tables are sure to show up: the server drops an
        // unreferenced row of a non-root table at commit (e.g. ovs-vsctl's
        // `create Bridge ...` without a reference), and waiting for it would
        // only run into the timeout.
        let missing = |idl: &Idl| {
            outcome.inserted.iter().any(|(temp, real)| {
                txn.inserted_table(temp).is_some_and(|t| {
                    idl.schema.tables.get(t).is_some_and(|ts| ts.is_root)
                        && idl.replica.table(t).is_some()
                        && idl.replica.row(t, real).is_none()
                })
            })
        };
        let deadline = tokio::time::Instant::now() + OWN_UPDATE_TIMEOUT;
        while missing(self) && self.connected {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Err(_) => break,
                Ok(r) => {
                    r?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The session's protocol details against a scripted fake server.
    use serde_json::json;
    use tokio::net::UnixListener;
    use uuid::Uuid;

    use super::*;
    use crate::jsonrpc::{Connection, Message};

    struct TempDir(std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const SCHEMA: &str =
        r#"{"name": "T", "version": "1.0.0", "tables": {"A": {"columns": {"n": {"type": "integer"}}}}}"#;

    /// Receives the next request, answering nothing automatically.
    async fn next_request(c: &mut Connection<tokio::net::UnixStream>) -> (String, Value, Value) {
        match c.recv().await.unwrap().unwrap() {
            Message::Request { method, params, id } => (method, params, id),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    /// Serves get_schema, refuses monitor_cond, serves monitor with one row.
    async fn handshake(c: &mut Connection<tokio::net::UnixStream>, row: &str, n: i64) {
        let (m, p, id) = next_request(c).await;
        assert_eq!((m.as_str(), p), ("get_schema", json!(["T"])));
        c.send(&Message::response(serde_json::from_str(SCHEMA).unwrap(), id)).await.unwrap();
        let (m, p, id) = next_request(c).await;
        assert_eq!((m.as_str(), p), ("set_db_change_aware", json!([true])));
        c.send(&Message::error(json!("unknown method"), id)).await.unwrap();
        let (m, _, id) = next_request(c).await;
        assert_eq!(m, "monitor_cond");
        c.send(&Message::error(json!("unknown method"), id)).await.unwrap();
        let (m, p, id) = next_request(c).await;
        assert_eq!(m, "monitor");
        assert_eq!(p, json!(["T", session::MONITOR_ID, {"A": [{"columns": ["n"]}]}]));
        c.send(&Message::response(json!({"A": {row: {"new": {"n": n}}}}), id)).await.unwrap();
    }

    #[test]
    fn idl_and_txn_can_move_between_tasks() {
        fn send<T: Send + 'static>() {}
        send::<Idl>();
        send::<Txn>();
        send::<Replica>();
        send::<IdlError>();
    }

    #[tokio::test]
    async fn echo_probe_monitor_fallback_and_reconnect() {
        let dir = TempDir(std::env::temp_dir().join(format!("oxvs-idl-unit-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(&dir.0).unwrap();
        let sock = dir.0.join("s");
        let listener = UnixListener::bind(&sock).unwrap();
        let row = Uuid::new_v4().to_string();
        let server = {
            let row = row.clone();
            tokio::spawn(async move {
                let (s, _) = listener.accept().await.unwrap();
                let mut c = Connection::new(s);
                handshake(&mut c, &row, 1).await;
                // Our echo is answered.
                c.send(&Message::request("echo", vec![json!("x")], json!("e1"))).await.unwrap();
                match c.recv().await.unwrap().unwrap() {
                    Message::Response { result, id } => assert_eq!((result, id), (json!(["x"]), json!("e1"))),
                    other => panic!("{other:?}"),
                }
                c.send(&Message::notification(
                    "update",
                    vec![json!(session::MONITOR_ID), json!({"A": {row.clone(): {"old": {"n": 1}, "new": {"n": 2}}}})],
                ))
                .await
                .unwrap();
                // Silence: the client probes, and, unanswered, hangs up.
                let (m, _, _) = next_request(&mut c).await;
                assert_eq!(m, "echo");
                assert!(c.recv().await.unwrap().is_none(), "client disconnects");
                // Second session, after the backoff.
                let (s, _) = listener.accept().await.unwrap();
                let mut c = Connection::new(s);
                handshake(&mut c, &row, 7).await;
                // Keep the session open until the client goes.
                while let Ok(Some(m)) = c.recv().await {
                    if let Some(r) = m.echo_reply() {
                        c.send(&r).await.unwrap();
                    }
                }
            })
        };
        let opts = IdlOptions {
            database: "T".into(),
            probe_interval: Some(Duration::from_millis(200)),
            max_backoff: Duration::from_secs(1),
            ..IdlOptions::default()
        };
        let mut idl = Idl::connect(&format!("unix:{}", sock.display()), opts).await.unwrap();
        let u: Uuid = row.parse().unwrap();
        let n = |idl: &Idl| idl.replica().row("A", &u).unwrap().get("n").unwrap().keys[0].as_integer().unwrap();
        assert_eq!(n(&idl), 1);
        idl.wait_for_update().await.unwrap();
        assert_eq!(n(&idl), 2);
        let ch = idl.take_changes();
        assert!(
            matches!(&ch.last().unwrap().kind, ChangeKind::Modify { old } if old["n"].keys == [crate::Atom::Integer(1)])
        );
        let seq = idl.seqno();
        // The probe, the disconnection, the reconnection with the new contents.
        tokio::time::timeout(Duration::from_secs(10), async {
            while n(&idl) != 7 {
                idl.wait_for_update().await.unwrap();
            }
        })
        .await
        .expect("reconnected");
        assert!(idl.is_connected());
        assert!(idl.seqno() > seq);
        let ch = idl.take_changes();
        assert_eq!(ch.len(), 1, "{ch:?}");
        assert!(matches!(&ch[0].kind, ChangeKind::Modify { old } if old["n"].keys == [crate::Atom::Integer(2)]));
        drop(idl);
        tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
    }
}
