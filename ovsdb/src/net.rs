//! The server's network side: listeners (`punix:`, `ptcp:`, `db:`), one task
//! per session that frames messages and probes idle TCP peers, the unixctl
//! socket for `ovs-appctl`, and the core task that owns [`Core`] and runs
//! requests in batches with one log sync per batch (group commit).
use std::{
    collections::{BTreeSet, HashMap},
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use crate::{
    jsonrpc::{BacklogLimits, Connection, Message, OutgoingQueue},
    server::{Core, SessionId},
    vlog,
};

/// Idle time after which a TCP peer gets an echo, and twice which it is
/// dropped (ovsdb-server's default inactivity probe; unix sockets get none).
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

enum Event {
    Open(SessionId, OutgoingQueue, oneshot::Sender<()>),
    Msg(SessionId, Message),
    Close(SessionId),
    Unixctl(String, Vec<String>, oneshot::Sender<Result<String, String>>),
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Runs the server until `exit` comes through unixctl. `remotes`: the
/// `--remote` arguments.
pub async fn run(core: Core, remotes: Vec<String>, unixctl: PathBuf) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<Event>(1024);
    let mut listeners = Listeners { tx: tx.clone(), active: HashMap::new(), configured: remotes };
    listen_unixctl(&unixctl, tx.clone())?;
    let r = core_loop(core, rx, &mut listeners).await;
    // Like ovsdb-server on exit: close the listeners and remove their sockets.
    for (remote, h) in listeners.active.drain() {
        h.abort();
        if let Some(p) = remote.strip_prefix("punix:") {
            let _ = std::fs::remove_file(p);
        }
    }
    let _ = std::fs::remove_file(&unixctl);
    r
}

struct Listeners {
    tx: mpsc::Sender<Event>,
    /// Concrete remote (e.g. "punix:/x") → its accept task.
    active: HashMap<String, JoinHandle<()>>,
    /// What was asked for, `db:` ones included.
    configured: Vec<String>,
}

impl Listeners {
    /// Binds what is configured and not yet listening, closes what no longer is.
    fn refresh(&mut self, core: &Core) {
        let mut want = BTreeSet::new();
        for r in &self.configured {
            if let Some(spec) = r.strip_prefix("db:") {
                match core.remotes_from_db(spec) {
                    Ok(v) => want.extend(v.into_iter().filter(|x| x.starts_with("punix:") || x.starts_with("ptcp:"))),
                    Err(e) => vlog::warn("jsonrpc", &e),
                }
            } else {
                want.insert(r.clone());
            }
        }
        self.active.retain(|r, h| {
            if want.contains(r) {
                true
            } else {
                h.abort();
                if let Some(p) = r.strip_prefix("punix:") {
                    let _ = std::fs::remove_file(p);
                }
                false
            }
        });
        for r in want {
            if self.active.contains_key(&r) {
                continue;
            }
            match listen(&r, self.tx.clone()) {
                Ok(h) => {
                    vlog::info("jsonrpc", &format!("{r}: listening"));
                    self.active.insert(r, h);
                }
                Err(e) => vlog::err("jsonrpc", &format!("{r}: listen failed: {e}")),
            }
        }
    }
}

/// Binds a passive remote and spawns its accept loop.
fn listen(remote: &str, tx: mpsc::Sender<Event>) -> Result<JoinHandle<()>, String> {
    if let Some(path) = remote.strip_prefix("punix:") {
        let _ = std::fs::remove_file(path);
        let l = std::os::unix::net::UnixListener::bind(path).map_err(|e| e.to_string())?;
        // Owner and group only, as OVS creates its sockets.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o750)).map_err(|e| e.to_string())?;
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        let l = UnixListener::from_std(l).map_err(|e| e.to_string())?;
        Ok(tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        tokio::spawn(session(s, tx.clone(), false));
                    }
                    Err(e) => {
                        vlog::warn("jsonrpc", &format!("accept: {e}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }))
    } else if let Some(spec) = remote.strip_prefix("ptcp:") {
        let (port, ip) = match spec.split_once(':') {
            Some((p, ip)) => (p, ip.trim_matches(|c| c == '[' || c == ']')),
            None => (spec, "0.0.0.0"),
        };
        let port: u16 = port.parse().map_err(|_| format!("{remote}: bad port"))?;
        let addr = if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
        let l = std::net::TcpListener::bind(&addr).map_err(|e| e.to_string())?;
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        let l = TcpListener::from_std(l).map_err(|e| e.to_string())?;
        Ok(tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        let _ = s.set_nodelay(true);
                        tokio::spawn(session(s, tx.clone(), true));
                    }
                    Err(e) => {
                        vlog::warn("jsonrpc", &format!("accept: {e}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }))
    } else {
        Err(format!("{remote}: unsupported remote (expected punix:PATH, ptcp:PORT[:IP] or db:DB,TABLE,COLUMN)"))
    }
}

/// One client: reads and frames its messages for the core; a writer task
/// sends what the core queues, within a backlog bound.
async fn session<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S, tx: mpsc::Sender<Event>, probe: bool) {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (mut reader, queue, writer) = Connection::new(stream).into_queued_direct(BacklogLimits::default());
    let (kill_tx, mut kill_rx) = oneshot::channel();
    if tx.send(Event::Open(id, queue.clone(), kill_tx)).await.is_err() {
        return;
    }
    tokio::spawn(writer.run());
    let mut last_rx = Instant::now();
    let mut seen = 0;
    let mut probed = false;
    loop {
        tokio::select! {
            r = reader.recv() => match r {
                Ok(Some(m)) => {
                    last_rx = Instant::now();
                    probed = false;
                    if m.is_echo_reply() {
                        continue;
                    }
                    if tx.send(Event::Msg(id, m)).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    vlog::warn("jsonrpc", &format!("session {id}: {e}, closing"));
                    break;
                }
            },
            _ = &mut kill_rx => break,
            _ = tokio::time::sleep(PROBE_INTERVAL / 2), if probe => {
                // Any byte counts as activity, as in OVS.
                if reader.bytes_received() != seen {
                    seen = reader.bytes_received();
                    last_rx = Instant::now();
                    probed = false;
                }
                let idle = last_rx.elapsed();
                if idle >= PROBE_INTERVAL * 2 && probed {
                    vlog::warn("reconnect", &format!("session {id}: no response to inactivity probe after {} seconds, disconnecting", idle.as_secs()));
                    break;
                }
                if idle >= PROBE_INTERVAL && !probed {
                    let _ = queue.send(&Message::echo_request());
                    probed = true;
                }
            }
        }
    }
    let _ = tx.send(Event::Close(id)).await;
    queue.close();
}

/// The unixctl socket: `ovs-appctl` speaks JSON-RPC with the command as the
/// method and its arguments as string params; the reply's result (or error)
/// is the text to print.
fn listen_unixctl(path: &PathBuf, tx: mpsc::Sender<Event>) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let l = std::os::unix::net::UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o750)).map_err(|e| e.to_string())?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let l = UnixListener::from_std(l).map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut c = Connection::new(s);
                while let Ok(Some(Message::Request { method, params, id })) = c.recv().await {
                    let args: Vec<String> = params
                        .as_array()
                        .map(|a| {
                            a.iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect()
                        })
                        .unwrap_or_default();
                    let (rtx, rrx) = oneshot::channel();
                    if tx.send(Event::Unixctl(method, args, rtx)).await.is_err() {
                        return;
                    }
                    let reply = match rrx.await {
                        Ok(Ok(text)) => Message::response(json!(text), id),
                        Ok(Err(text)) => Message::error(json!(text), id),
                        Err(_) => return,
                    };
                    if c.send(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(())
}

const COMMANDS: &[&str] = &[
    "exit",
    "list-commands",
    "version",
    "ovsdb-server/add-remote REMOTE",
    "ovsdb-server/compact [DB]...",
    "ovsdb-server/list-dbs",
    "ovsdb-server/list-remotes",
    "ovsdb-server/remove-remote REMOTE",
];

/// The core task: the only owner of the databases.
async fn core_loop(mut core: Core, mut rx: mpsc::Receiver<Event>, listeners: &mut Listeners) -> Result<(), String> {
    let mut queues: HashMap<SessionId, (OutgoingQueue, oneshot::Sender<()>)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut exit_reply: Option<oneshot::Sender<Result<String, String>>> = None;
    let mut last_compact_check = Instant::now();
    listeners.refresh(&core);
    loop {
        let first = tokio::select! {
            ev = rx.recv() => match ev { Some(ev) => Some(ev), None => return Ok(()) },
            _ = tick.tick() => None,
        };
        let mut batch: Vec<Event> = first.into_iter().collect();
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(ev) => batch.push(ev),
                Err(_) => break,
            }
        }
        let mut remotes_changed = false;
        for ev in batch {
            match ev {
                Event::Open(id, q, kill) => {
                    core.add_session(id);
                    queues.insert(id, (q, kill));
                }
                Event::Msg(id, m) => {
                    remotes_changed |= m.method() == Some("transact");
                    core.handle(id, m)
                }
                Event::Close(id) => {
                    core.remove_session(id);
                    queues.remove(&id);
                }
                Event::Unixctl(cmd, args, reply) => {
                    if cmd == "exit" {
                        exit_reply = Some(reply);
                        continue;
                    }
                    let r = unixctl(&mut core, listeners, &cmd, &args);
                    let _ = reply.send(r);
                }
            }
        }
        core.tick();
        // Group commit: everything appended by this batch is synced at once,
        // before any reply leaves.
        if let Err(e) = core.sync() {
            vlog::emer("ovsdb_server", &format!("writing the database failed: {e}"));
            return Err(e);
        }
        for (id, m) in core.take_outbox() {
            if let Some((q, _)) = queues.get(&id)
                && let Err(e) = q.send_bytes(m.into_bytes())
            {
                vlog::warn("jsonrpc", &format!("session {id}: {e}, dropping"));
                if let Some((q, kill)) = queues.remove(&id) {
                    q.abort();
                    let _ = kill.send(());
                }
                core.remove_session(id);
            }
        }
        if remotes_changed {
            listeners.refresh(&core);
        }
        if last_compact_check.elapsed() > Duration::from_secs(60) {
            last_compact_check = Instant::now();
            match core.compact(false) {
                Ok(done) => done.iter().for_each(|d| vlog::info("ovsdb_server", &format!("{d}: compacted"))),
                Err(e) => vlog::warn("ovsdb_server", &format!("compaction failed: {e}")),
            }
        }
        if let Some(r) = exit_reply.take() {
            let _ = r.send(Ok(String::new()));
            // Let the reply reach ovs-appctl before the process goes.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(());
        }
    }
}

fn unixctl(core: &mut Core, listeners: &mut Listeners, cmd: &str, args: &[String]) -> Result<String, String> {
    match (cmd, args) {
        ("list-commands", []) => Ok(format!(
            "The available commands are:\n{}",
            COMMANDS.iter().map(|c| format!("  {c}\n")).collect::<String>()
        )),
        ("version", []) => Ok(format!("ovsdb-server (oxvs) {}\n", env!("CARGO_PKG_VERSION"))),
        ("ovsdb-server/list-dbs", []) => Ok(core.db_names().iter().map(|n| format!("{n}\n")).collect()),
        ("ovsdb-server/list-remotes", []) => Ok(listeners.configured.iter().map(|r| format!("{r}\n")).collect()),
        ("ovsdb-server/add-remote", [r]) => {
            if !listeners.configured.contains(r) {
                listeners.configured.push(r.clone());
            }
            listeners.refresh(core);
            Ok(String::new())
        }
        ("ovsdb-server/remove-remote", [r]) => {
            let n = listeners.configured.len();
            listeners.configured.retain(|x| x != r);
            if listeners.configured.len() == n {
                return Err("Can't find the remote to remove.\n".into());
            }
            listeners.refresh(core);
            Ok(String::new())
        }
        ("ovsdb-server/compact", _) => core.compact(true).map(|_| String::new()),
        _ => {
            let known = COMMANDS.iter().any(|c| c.split_whitespace().next() == Some(cmd));
            if known {
                Err(format!("\"{cmd}\" command takes a different number of arguments\n"))
            } else {
                Err(format!(
                    "\"{cmd}\" is not a valid command (use \"list-commands\" to see a list of valid commands)\n"
                ))
            }
        }
    }
}

/// Parses a `--remote` value early so bad ones fail at startup.
pub fn check_remote(r: &str) -> Result<(), String> {
    if r.starts_with("punix:") || r.starts_with("ptcp:") || r.starts_with("db:") {
        Ok(())
    } else {
        Err(format!("\"{r}\": unsupported remote (expected punix:PATH, ptcp:PORT[:IP] or db:DB,TABLE,COLUMN)"))
    }
}
