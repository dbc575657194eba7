//! The connection behind an [`Idl`](super::Idl): a task that owns the socket,
//! connects and reconnects with backoff (like OVS's `reconnect`), fetches the
//! schema, sets up the monitor, answers the server's echo requests, probes an
//! idle server, and passes everything else to the `Idl` as [`Event`]s.
use std::{collections::BTreeMap, io, time::Duration};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpStream, UnixStream},
    sync::mpsc,
    time::{Instant, MissedTickBehavior},
};

use crate::{
    jsonrpc::{Connection, Message},
    schema::DatabaseSchema,
};

use super::{IdlError, IdlOptions, replica::UpdateFormat};

/// The monitor id this library uses on its sessions.
pub(crate) const MONITOR_ID: &str = "oxvs-idl";

/// Give up on a TCP connection attempt after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to connect, parsed from `unix:PATH` or `tcp:HOST:PORT`; or, for
/// the passive `punix:PATH` and `ptcp:PORT[:IP]`, where to wait for the
/// server to connect to us (as OVS's IDL does with a pstream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Remote {
    Unix(String),
    Tcp(String),
    PUnix(String),
    PTcp(String),
    /// Address to connect to, and the host as given (for SNI).
    Ssl(String, String),
}

impl Remote {
    pub(crate) fn parse(s: &str) -> Result<Remote, IdlError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(IdlError::Connect(format!("{s}: missing socket path")));
            }
            return Ok(Remote::Unix(path.to_string()));
        }
        if let Some(rest) = s.strip_prefix("tcp:").or_else(|| s.strip_prefix("ssl:")) {
            // HOST:PORT, with an IPv6 host in brackets.
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && !p.is_empty() => (h, p),
                _ => return Err(IdlError::Connect(format!("{s}: expected {}:IP:PORT", &s[..3]))),
            };
            if port.parse::<u16>().is_err() {
                return Err(IdlError::Connect(format!("{s}: bad port number \"{port}\"")));
            }
            let host =
                host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).map_or(host.to_string(), |h| h.to_string());
            let addr = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
            if s.starts_with("ssl:") {
                return Ok(Remote::Ssl(addr, host));
            }
            return Ok(Remote::Tcp(addr));
        }
        if let Some(path) = s.strip_prefix("punix:") {
            if path.is_empty() {
                return Err(IdlError::Connect(format!("{s}: missing socket path")));
            }
            return Ok(Remote::PUnix(path.to_string()));
        }
        if let Some(rest) = s.strip_prefix("ptcp:") {
            // PORT[:IP], with an IPv6 address in brackets; all IPv4
            // addresses by default.
            let (port, host) = rest.split_once(':').unwrap_or((rest, "0.0.0.0"));
            if port.parse::<u16>().is_err() {
                return Err(IdlError::Connect(format!("{s}: bad port number \"{port}\"")));
            }
            let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
            let addr = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
            return Ok(Remote::PTcp(addr));
        }
        Err(IdlError::Connect(format!(
            "{s}: unsupported remote (expected unix:PATH, tcp:IP:PORT, ssl:IP:PORT, punix:PATH or ptcp:PORT[:IP])"
        )))
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An I/O error as OVS words it: the system's message without Rust's
/// "(os error N)" suffix.
pub(crate) fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

async fn open(remote: &Remote, options: &IdlOptions) -> Result<Box<dyn Stream>, String> {
    match remote {
        Remote::Unix(path) => UnixStream::connect(path).await.map(|s| Box::new(s) as Box<dyn Stream>),
        Remote::Tcp(addr) => match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(r) => r.map(|s| {
                let _ = s.set_nodelay(true);
                Box::new(s) as Box<dyn Stream>
            }),
            Err(_) => Err(io::Error::from(io::ErrorKind::TimedOut)),
        },
        Remote::PUnix(path) => accept_unix(path).await.map(|s| Box::new(s) as Box<dyn Stream>),
        Remote::PTcp(addr) => async {
            let (s, _) = tokio::net::TcpListener::bind(addr).await?.accept().await?;
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        .await
        .map(|s| Box::new(s) as Box<dyn Stream>),
        Remote::Ssl(addr, host) => {
            let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(r) => r.map_err(|e| io_reason(&e))?,
                Err(_) => return Err(io_reason(&io::Error::from(io::ErrorKind::TimedOut))),
            };
            let _ = tcp.set_nodelay(true);
            return super::ssl::connect(tcp, host, &options.ssl).await.map(|s| Box::new(s) as Box<dyn Stream>);
        }
    }
    .map_err(|e| io_reason(&e))
}

/// Listens on `path` until one peer connects, then stops listening; the
/// socket file goes with the listener. A stale socket file left by an
/// earlier listener is replaced, as OVS does.
async fn accept_unix(path: &str) -> io::Result<UnixStream> {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    let accepted = listener.accept().await;
    drop(listener);
    let _ = std::fs::remove_file(path);
    Ok(accepted?.0)
}

/// What the session tells the `Idl`, in the order the server sent it.
#[derive(Debug)]
pub(crate) enum Event {
    /// A (re)connection is ready: schema fetched, monitor set up. `epoch`
    /// numbers the sessions; requests must carry it.
    Connected(Box<Connected>),
    Update {
        format: UpdateFormat,
        updates: Value,
    },
    Reply {
        id: u64,
        result: Result<Value, Value>,
    },
    /// The session ended. With `retrying`, a new one is being attempted.
    Disconnected {
        error: IdlError,
        retrying: bool,
    },
}

#[derive(Debug)]
pub(crate) struct Connected {
    pub epoch: u64,
    pub schema: DatabaseSchema,
    pub monitored: BTreeMap<String, Vec<String>>,
    pub format: UpdateFormat,
    pub initial: Value,
}

#[derive(Debug)]
pub(crate) struct Command {
    /// The session the `Idl` believes it is talking to: a request meant for
    /// an earlier session is refused rather than sent on a new one, where it
    /// would run against a database state the caller never saw.
    pub epoch: u64,
    pub id: u64,
    pub method: String,
    pub params: Vec<Value>,
}

pub(crate) struct Config {
    pub remote: Remote,
    pub options: IdlOptions,
}

enum End {
    /// The `Idl` was dropped.
    IdlGone,
    /// The session failed; `ready` says whether it got as far as Connected.
    Failed { error: IdlError, ready: bool },
}

/// Runs sessions until the `Idl` goes away or (without `reconnect`) the
/// first one ends.
pub(crate) async fn run(
    cfg: Config,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
) {
    const MIN_BACKOFF: Duration = Duration::from_secs(1);
    let max_backoff = cfg.options.max_backoff.max(MIN_BACKOFF);
    let mut backoff = MIN_BACKOFF;
    let mut epoch = 0;
    let mut ever_ready = false;
    loop {
        epoch += 1;
        let (error, ready) = match session(&cfg, epoch, &mut commands, &events).await {
            End::IdlGone => return,
            End::Failed { error, ready } => (error, ready),
        };
        ever_ready |= ready;
        // On the first connection, a schema problem (no such database, a
        // selected table the server lacks) is a mistake to report, not
        // something to wait out. Later, it is a database being removed or
        // converted, and it may come back.
        let retrying = cfg.options.reconnect && (ever_ready || !matches!(error, IdlError::Schema(_)));
        if events.send(Event::Disconnected { error, retrying }).is_err() || !retrying {
            return;
        }
        if ready {
            backoff = MIN_BACKOFF;
        }
        let deadline = Instant::now() + backoff;
        backoff = (backoff * 2).min(max_backoff);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(cmd) => {
                        let _ = events.send(Event::Reply { id: cmd.id, result: Err(json!("not connected")) });
                    }
                }
            }
        }
    }
}

/// Receives the reply to request `id` during setup, answering echoes.
async fn setup_reply(conn: &mut Connection<Box<dyn Stream>>, id: &str) -> Result<Result<Value, Value>, IdlError> {
    loop {
        let msg = conn.recv().await.map_err(|e| IdlError::Protocol(e.to_string()))?;
        let Some(msg) = msg else { return Err(IdlError::Closed) };
        if let Some(reply) = msg.echo_reply() {
            conn.send(&reply).await.map_err(|e| IdlError::Protocol(e.to_string()))?;
            continue;
        }
        match msg {
            Message::Response { result, id: Value::String(s) } if s == id => return Ok(Ok(result)),
            Message::Error { error, id: Value::String(s) } if s == id => return Ok(Err(error)),
            _ => {}
        }
    }
}

/// Columns to monitor: the selection, or everything in the schema.
pub(crate) fn monitored_columns(
    schema: &DatabaseSchema,
    options: &IdlOptions,
) -> Result<BTreeMap<String, Vec<String>>, IdlError> {
    let mut out = BTreeMap::new();
    if options.tables.is_empty() {
        for (name, t) in &schema.tables {
            out.insert(name.clone(), t.columns.keys().cloned().collect());
        }
        return Ok(out);
    }
    for sel in &options.tables {
        let t = schema
            .tables
            .get(&sel.table)
            .ok_or_else(|| IdlError::Schema(format!("table {} is not in the server's schema", sel.table)))?;
        let cols: Vec<String> = match &sel.columns {
            None => t.columns.keys().cloned().collect(),
            Some(cols) => {
                for c in cols {
                    if !t.columns.contains_key(c) {
                        return Err(IdlError::Schema(format!(
                            "column {c} is not in table {} of the server's schema",
                            sel.table
                        )));
                    }
                }
                let mut cols = cols.clone();
                cols.sort();
                cols.dedup();
                cols
            }
        };
        out.entry(sel.table.clone()).or_insert_with(Vec::new).extend(cols);
    }
    for cols in out.values_mut() {
        cols.sort();
        cols.dedup();
    }
    Ok(out)
}

async fn session(
    cfg: &Config,
    epoch: u64,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    events: &mpsc::UnboundedSender<Event>,
) -> End {
    let failed = |error| End::Failed { error, ready: false };
    let stream = match open(&cfg.remote, &cfg.options).await {
        Ok(s) => s,
        Err(reason) => return failed(IdlError::Connect(reason)),
    };
    let mut conn = Connection::new(stream);
    let io_err = |e: crate::jsonrpc::JsonRpcError| IdlError::Protocol(e.to_string());
    let db = cfg.options.database.clone();

    // Schema.
    if let Err(e) = conn.send(&Message::request("get_schema", vec![json!(db)], json!("get_schema"))).await {
        return failed(io_err(e));
    }
    let schema = match setup_reply(&mut conn, "get_schema").await {
        Err(e) => return failed(e),
        Ok(Err(error)) => return failed(IdlError::Schema(format!("get_schema for {db} failed: {error}"))),
        Ok(Ok(s)) => match DatabaseSchema::from_json(&s) {
            Ok(s) => s,
            Err(e) => return failed(IdlError::Schema(format!("server's schema for {db}: {e}"))),
        },
    };
    // Ask to be told (monitor_canceled) rather than disconnected when the
    // database is converted or removed. Servers without it answer with an
    // error, which changes nothing for us.
    let aware = Message::request("set_db_change_aware", vec![json!(true)], json!("set_db_change_aware"));
    if let Err(e) = conn.send(&aware).await {
        return failed(io_err(e));
    }
    if let Err(e) = setup_reply(&mut conn, "set_db_change_aware").await {
        return failed(e);
    }
    let monitored = match monitored_columns(&schema, &cfg.options) {
        Ok(m) => m,
        Err(e) => return failed(e),
    };

    // Monitor: monitor_cond where the server has it, else monitor.
    let requests: serde_json::Map<String, Value> =
        monitored.iter().map(|(t, cols)| (t.clone(), json!([{"columns": cols}]))).collect();
    let mut format = UpdateFormat::V2;
    let mut initial = None;
    for (method, fmt) in [("monitor_cond", UpdateFormat::V2), ("monitor", UpdateFormat::V1)] {
        let params = vec![json!(db), json!(MONITOR_ID), Value::Object(requests.clone())];
        if let Err(e) = conn.send(&Message::request(method, params, json!(method))).await {
            return failed(io_err(e));
        }
        match setup_reply(&mut conn, method).await {
            Err(e) => return failed(e),
            Ok(Ok(r)) => {
                format = fmt;
                initial = Some(r);
                break;
            }
            Ok(Err(error)) if method == "monitor_cond" && error == json!("unknown method") => continue,
            Ok(Err(error)) => return failed(IdlError::Protocol(format!("{method} failed: {error}"))),
        }
    }
    let Some(initial) = initial else {
        return failed(IdlError::Protocol("server refused monitor_cond and monitor".into()));
    };
    let connected = Connected { epoch, schema, monitored, format, initial };
    if events.send(Event::Connected(Box::new(connected))).is_err() {
        return End::IdlGone;
    }

    // Ready: relay messages and requests; probe when idle.
    let ready = |error| End::Failed { error, ready: true };
    let probe = cfg.options.probe_interval.filter(|d| !d.is_zero());
    let mut ticker = tokio::time::interval(probe.unwrap_or(Duration::from_secs(3600)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.reset();
    let mut last_received = conn.bytes_received();
    let mut probe_sent = false;
    loop {
        tokio::select! {
            msg = conn.recv() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => return ready(IdlError::Closed),
                    Err(e) => return ready(io_err(e)),
                };
                if let Some(reply) = msg.echo_reply() {
                    if let Err(e) = conn.send(&reply).await {
                        return ready(io_err(e));
                    }
                    continue;
                }
                let ev = match msg {
                    // The database went away or changed schema under the
                    // monitor: start over, which fetches the schema again.
                    Message::Notification { method, .. } if method == "monitor_canceled" => {
                        return ready(IdlError::Protocol("monitor canceled by the server".into()));
                    }
                    Message::Notification { method, params } if method == "update" || method == "update2" => {
                        let fmt = if method == "update" { UpdateFormat::V1 } else { UpdateFormat::V2 };
                        match params.as_array().map(|p| p.as_slice()) {
                            Some([id, updates]) if id == MONITOR_ID => Event::Update { format: fmt, updates: updates.clone() },
                            _ => continue,
                        }
                    }
                    Message::Response { result, id } => match id.as_u64() {
                        Some(id) => Event::Reply { id, result: Ok(result) },
                        None => continue,
                    },
                    Message::Error { error, id } => match id.as_u64() {
                        Some(id) => Event::Reply { id, result: Err(error) },
                        None => continue,
                    },
                    _ => continue,
                };
                if events.send(ev).is_err() {
                    return End::IdlGone;
                }
            }
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return End::IdlGone };
                if cmd.epoch != epoch {
                    let _ = events.send(Event::Reply { id: cmd.id, result: Err(json!("not connected")) });
                    continue;
                }
                if let Err(e) = conn.send(&Message::request(cmd.method, cmd.params, json!(cmd.id))).await {
                    return ready(io_err(e));
                }
            }
            _ = ticker.tick(), if probe.is_some() => {
                let received = conn.bytes_received();
                if received != last_received {
                    last_received = received;
                    probe_sent = false;
                } else if probe_sent {
                    return ready(IdlError::Protocol("no response to inactivity probe, disconnecting".into()));
                } else {
                    if let Err(e) = conn.send(&Message::echo_request()).await {
                        return ready(io_err(e));
                    }
                    probe_sent = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes() {
        assert_eq!(Remote::parse("unix:/a/b").unwrap(), Remote::Unix("/a/b".into()));
        assert_eq!(Remote::parse("tcp:127.0.0.1:6640").unwrap(), Remote::Tcp("127.0.0.1:6640".into()));
        assert_eq!(Remote::parse("tcp:[::1]:6640").unwrap(), Remote::Tcp("[::1]:6640".into()));
        assert_eq!(Remote::parse("punix:db.sock").unwrap(), Remote::PUnix("db.sock".into()));
        assert_eq!(Remote::parse("ptcp:6640").unwrap(), Remote::PTcp("0.0.0.0:6640".into()));
        assert_eq!(Remote::parse("ptcp:6640:127.0.0.1").unwrap(), Remote::PTcp("127.0.0.1:6640".into()));
        assert_eq!(Remote::parse("ptcp:6640:[::1]").unwrap(), Remote::PTcp("[::1]:6640".into()));
        assert_eq!(
            Remote::parse("ssl:127.0.0.1:6640").unwrap(),
            Remote::Ssl("127.0.0.1:6640".into(), "127.0.0.1".into())
        );
        for bad in
            ["unix:", "tcp:1.2.3.4", "tcp:1.2.3.4:x", "ssl:1.2.3.4", "tls:1.2.3.4:6640", "/tmp/x", "punix:", "ptcp:x"]
        {
            assert!(Remote::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn io_reasons_drop_the_os_error_suffix() {
        let e = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(io_reason(&e), "No such file or directory");
    }
}
