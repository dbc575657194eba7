//! The server's network side: listeners (`punix:`, `ptcp:`, `db:`), one task
//! per session that frames messages and probes idle TCP peers, the unixctl
//! socket for `ovs-appctl`, and the core task that owns [`Core`] and runs
//! requests in batches with one log sync per batch (group commit).
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
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
    log::{LogError, Rewrite},
    relay::Relays,
    replication::{LinkEvent, Replication},
    server::{Core, SessionId},
    vlog,
};

/// Idle time after which a TCP peer gets an echo, and twice which it is
/// dropped (ovsdb-server's default inactivity probe; unix sockets get none).
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

enum Event {
    /// A new session; true if it came in on a read-only remote; the remote.
    Open(SessionId, OutgoingQueue, oneshot::Sender<()>, bool, String),
    Msg(SessionId, Message),
    Close(SessionId),
    Unixctl(String, Vec<String>, oneshot::Sender<Result<String, String>>),
    /// An online compaction's file is written (or failed).
    Compacted(String, Result<Rewrite, LogError>),
    /// News from the connection to the active server (replication).
    Repl(u64, LinkEvent),
    /// News from a relay database's source (by relay index).
    Relay(u64, LinkEvent),
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Runs the server until `exit` comes through unixctl. `remotes`: the
/// `--remote` arguments.
pub async fn run(core: Core, remotes: Vec<String>, unixctl: PathBuf) -> Result<(), String> {
    serve(core, remotes, unixctl, ServeOptions::default()).await
}

/// What [`serve`] takes beyond the remotes.
#[derive(Default)]
pub struct ServeOptions {
    /// Fires once the control socket and the listeners are bound, which is
    /// when `ovsdb-server --detach` lets its parent return.
    pub ready: Option<oneshot::Sender<()>>,
    /// Ends the server as `exit` does (for `--run`).
    pub stop: Option<oneshot::Receiver<()>>,
    /// `--sync-from`: the active server to replicate.
    pub sync_from: Option<String>,
    /// `--sync-exclude-tables`.
    pub sync_exclude: Option<String>,
    /// `--active`: know `sync_from` but do not replicate it yet.
    pub active: bool,
    /// Relay databases: (name, source remote); the core has their schemas.
    pub relays: Vec<(String, String)>,
    /// Where to save the remotes as they change (see [`saved_remotes`]).
    pub config_file: Option<PathBuf>,
}

/// The remotes and database files a previous run saved in `config_file`.
pub fn saved_config(config_file: &std::path::Path) -> Option<(Vec<String>, Vec<PathBuf>)> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(config_file).ok()?).ok()?;
    let strings = |k: &str| -> Option<Vec<String>> {
        v.get(k)?.as_array()?.iter().map(|r| r.as_str().map(str::to_string)).collect()
    };
    Some((strings("remotes")?, strings("dbs")?.into_iter().map(PathBuf::from).collect()))
}

/// As [`run`], with [`ServeOptions`].
pub async fn serve(core: Core, remotes: Vec<String>, unixctl: PathBuf, opts: ServeOptions) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<Event>(1024);
    let (mut repl, mut repl_events) = Replication::new(opts.sync_from.clone(), opts.sync_exclude)?;
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some((generation, ev)) = repl_events.recv().await {
                if tx.send(Event::Repl(generation, ev)).await.is_err() {
                    break;
                }
            }
        });
    }
    if opts.sync_from.is_some() && !opts.active {
        repl.connect();
    }
    let (relay_tx, mut relay_events) = mpsc::unbounded_channel();
    let mut relays = Relays::start(&opts.relays, relay_tx);
    {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some((index, ev)) = relay_events.recv().await {
                if tx.send(Event::Relay(index, ev)).await.is_err() {
                    break;
                }
            }
        });
    }
    let mut listeners = Listeners {
        tx: tx.clone(),
        active: HashMap::new(),
        configured: remotes,
        read_only: BTreeSet::new(),
        config_file: opts.config_file,
    };
    listeners.save(&core);
    listen_unixctl(&unixctl, tx.clone())?;
    listeners.refresh(&core);
    if let Some(r) = opts.ready {
        let _ = r.send(());
    }
    if let Some(stop) = opts.stop {
        let tx = tx.clone();
        tokio::spawn(async move {
            if stop.await.is_ok() {
                let (reply, _) = oneshot::channel();
                let _ = tx.send(Event::Unixctl("exit".into(), Vec::new(), reply)).await;
            }
        });
    }
    let r = core_loop(core, rx, tx, &mut listeners, &mut repl, &mut relays).await;
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
    /// Active remotes whose sessions may only read.
    read_only: BTreeSet<String>,
    /// Where run-time changes to the remotes are saved (`--monitor`).
    config_file: Option<PathBuf>,
}

impl Listeners {
    /// Saves the configured remotes and the databases served, so that a
    /// daemon restarted by its monitor process serves what this one did.
    fn save(&self, core: &Core) {
        let dbs: Vec<String> = core.db_files().iter().map(|p| p.display().to_string()).collect();
        if let Some(f) = &self.config_file
            && let Err(e) = std::fs::write(f, json!({"remotes": self.configured, "dbs": dbs}).to_string())
        {
            vlog::warn("ovsdb_server", &format!("{}: {e}", f.display()));
        }
    }
}

impl Listeners {
    /// Binds what is configured and not yet listening, closes what no longer is.
    fn refresh(&mut self, core: &Core) {
        // Remote → read-only.
        let mut want = BTreeMap::new();
        for r in &self.configured {
            if let Some(spec) = r.strip_prefix("db:") {
                match core.remotes_from_db_with_options(spec) {
                    Ok(v) => {
                        want.extend(v.into_iter().filter(|(x, _)| x.starts_with("punix:") || x.starts_with("ptcp:")))
                    }
                    Err(e) => vlog::warn("jsonrpc", &e),
                }
            } else {
                want.insert(r.clone(), false);
            }
        }
        let read_only = &mut self.read_only;
        self.active.retain(|r, h| {
            // Kept only as it was bound: same remote, same read-only-ness.
            if want.get(r) == Some(&read_only.contains(r)) {
                true
            } else {
                h.abort();
                read_only.remove(r);
                if let Some(p) = r.strip_prefix("punix:") {
                    let _ = std::fs::remove_file(p);
                }
                false
            }
        });
        for (r, ro) in want {
            if self.active.contains_key(&r) {
                continue;
            }
            match listen(&r, self.tx.clone(), ro) {
                Ok(h) => {
                    vlog::info("jsonrpc", &format!("{r}: listening"));
                    if ro {
                        self.read_only.insert(r.clone());
                    }
                    self.active.insert(r, h);
                }
                Err(e) => vlog::err("jsonrpc", &format!("{r}: listen failed: {e}")),
            }
        }
    }
}

/// Binds a passive remote and spawns its accept loop.
fn listen(remote: &str, tx: mpsc::Sender<Event>, read_only: bool) -> Result<JoinHandle<()>, String> {
    let name = remote.to_string();
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
                        tokio::spawn(session(s, tx.clone(), false, read_only, name.clone()));
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
        if port == 0 {
            // Tests (OVS's PARSE_LISTENING_PORT among them) learn the port from this line.
            let bound = l.local_addr().map_err(|e| e.to_string())?.port();
            vlog::info("socket_util", &format!("{spec}: listening on port {bound}"));
        }
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        let l = TcpListener::from_std(l).map_err(|e| e.to_string())?;
        Ok(tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((s, _)) => {
                        let _ = s.set_nodelay(true);
                        tokio::spawn(session(s, tx.clone(), true, read_only, name.clone()));
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
async fn session<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    tx: mpsc::Sender<Event>,
    probe: bool,
    read_only: bool,
    remote: String,
) {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (mut reader, queue, writer) = Connection::new(stream).into_queued_direct(BacklogLimits::default());
    let (kill_tx, mut kill_rx) = oneshot::channel();
    if tx.send(Event::Open(id, queue.clone(), kill_tx, read_only, remote)).await.is_err() {
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
    "ovsdb-server/add-db DB",
    "ovsdb-server/add-remote REMOTE",
    "ovsdb-server/compact [DB]",
    "ovsdb-server/list-dbs",
    "ovsdb-server/list-remotes",
    "ovsdb-server/remove-db DB",
    "ovsdb-server/remove-remote REMOTE",
];

/// The core task: the only owner of the databases.
async fn core_loop(
    mut core: Core,
    mut rx: mpsc::Receiver<Event>,
    tx: mpsc::Sender<Event>,
    listeners: &mut Listeners,
    repl: &mut Replication,
    relays: &mut Relays,
) -> Result<(), String> {
    core.read_only = repl.is_backup();
    // Which remote each session came in on, for the remotes' status.
    let mut session_remotes: HashMap<SessionId, String> = HashMap::new();
    let mut last_status: Option<Instant> = None;
    let mut queues: HashMap<SessionId, (OutgoingQueue, oneshot::Sender<()>)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut exit_reply: Option<oneshot::Sender<Result<String, String>>> = None;
    let mut last_compact_check = Instant::now();
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
                Event::Open(id, q, kill, read_only, remote) => {
                    core.add_session(id);
                    session_remotes.insert(id, remote);
                    if read_only {
                        core.set_session_read_only(id);
                    }
                    queues.insert(id, (q, kill));
                }
                Event::Msg(id, m) => {
                    remotes_changed |= m.method() == Some("transact");
                    core.handle(id, m)
                }
                Event::Close(id) => {
                    session_remotes.remove(&id);
                    core.remove_session(id);
                    queues.remove(&id);
                }
                Event::Unixctl(cmd, args, reply) => {
                    // Commands may read the databases (remotes from `db:`).
                    core.settle();
                    if cmd == "exit" {
                        exit_reply = Some(reply);
                        continue;
                    }
                    let db_change = match (cmd.as_str(), args.as_slice()) {
                        ("ovsdb-server/add-db", [file]) => Some(core.add_db(std::path::Path::new(file))),
                        ("ovsdb-server/remove-db", [name]) => Some(core.remove_db(name)),
                        _ => None,
                    };
                    let r = match (db_change, repl.unixctl(&cmd, &args)) {
                        (Some(Ok(unaware)), _) => {
                            // As OVS: clients that don't follow databases
                            // coming and going are made to reconnect.
                            for id in unaware {
                                if let Some((q, kill)) = queues.remove(&id) {
                                    q.close();
                                    let _ = kill.send(());
                                }
                                session_remotes.remove(&id);
                                core.remove_session(id);
                            }
                            listeners.save(&core);
                            remotes_changed = true;
                            Ok(String::new())
                        }
                        (Some(Err(e)), _) => Err(e + "\n"),
                        (None, Some(r)) => r,
                        (None, None) => unixctl(&mut core, listeners, &cmd, &args),
                    };
                    let _ = reply.send(r);
                }
                Event::Repl(generation, ev) => repl.link_event(&mut core, generation, ev),
                Event::Relay(index, ev) => relays.link_event(&mut core, index, ev),
                Event::Compacted(db, written) => match core.finish_compaction(&db, written) {
                    Ok(()) => vlog::info("ovsdb_server", &format!("{db}: compacted")),
                    Err(e) => vlog::warn("ovsdb_server", &format!("{db}: compaction failed: {e}")),
                },
            }
        }
        repl.run();
        core.read_only = repl.is_backup();
        // As OVS: the status of `db:` remotes goes into their rows, now and
        // then (every 2.5 s).
        if last_status.is_none_or(|t| t.elapsed() >= Duration::from_millis(2500)) {
            last_status = Some(Instant::now());
            let mut connections: HashMap<String, usize> = HashMap::new();
            for r in session_remotes.values() {
                *connections.entry(r.clone()).or_default() += 1;
            }
            core.update_remote_status(&listeners.configured, &connections);
        }
        for f in core.take_forwards() {
            relays.forward(&mut core, f);
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
        // With the replies out, the commits they answered go into their
        // databases. First let the writer tasks run: a reply too large for
        // the socket's buffer would otherwise wait behind this task.
        if core.has_pending() {
            tokio::task::yield_now().await;
            core.settle();
        }
        // Large parsed requests are freed by a worker thread, off the path
        // of the next request.
        let garbage = core.take_garbage();
        if !garbage.is_empty() {
            tokio::task::spawn_blocking(move || drop(garbage));
        }
        if remotes_changed {
            listeners.refresh(&core);
        }
        if last_compact_check.elapsed() > Duration::from_secs(60) {
            last_compact_check = Instant::now();
            // The snapshot is taken here; writing it is left to a worker
            // thread so clients aren't held up (OVS 3.1 blocks on this for
            // standalone databases).
            for job in core.start_compactions() {
                let tx = tx.clone();
                tokio::task::spawn_blocking(move || {
                    let (db, written) = job.run();
                    let _ = tx.blocking_send(Event::Compacted(db, written));
                });
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
            COMMANDS.iter().chain(crate::replication::COMMANDS).map(|c| format!("  {c}\n")).collect::<String>()
        )),
        ("version", []) => Ok(format!("ovsdb-server (oxvs) {}\n", env!("CARGO_PKG_VERSION"))),
        ("ovsdb-server/list-dbs", []) => Ok(core.db_names().iter().map(|n| format!("{n}\n")).collect()),
        ("ovsdb-server/list-remotes", []) => {
            // Sorted, as OVS lists them.
            let sorted: BTreeSet<&String> = listeners.configured.iter().collect();
            Ok(sorted.into_iter().map(|r| format!("{r}\n")).collect())
        }
        ("ovsdb-server/add-remote", [r]) => {
            if let Some(spec) = r.strip_prefix("db:") {
                core.remotes_from_db(spec).map_err(|e| e + "\n")?;
            }
            if !listeners.configured.contains(r) {
                listeners.configured.push(r.clone());
                listeners.save(core);
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
            listeners.save(core);
            listeners.refresh(core);
            Ok(String::new())
        }
        ("ovsdb-server/compact", []) => core.compact(None).map(|_| String::new()),
        ("ovsdb-server/compact", [db]) => core.compact(Some(db)).map(|_| String::new()),
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
