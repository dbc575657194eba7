//! oxvsdb-server: an OVSDB server that is a drop-in for ovsdb-server.
//!
//! `oxvsdb-server [DB | relay:DB:REMOTE]... [--remote=REMOTE]... [--pidfile[=FILE]]
//! [--unixctl=SOCKET] [--log-file[=FILE]] [--detach] [--monitor] [--no-chdir]
//! [--run=COMMAND] [--sync-from=SERVER] [--sync-exclude-tables=DB:TABLE,...] [--active]`
//!
//! Files default as OVS's: the database `$OVS_DBDIR/conf.db` (/etc/openvswitch),
//! the pidfile `$OVS_RUNDIR/ovsdb-server.pid` and the control socket
//! `$OVS_RUNDIR/ovsdb-server.<pid>.ctl` (/var/run/openvswitch), so `ovs-appctl
//! -t ovsdb-server` finds it.
use std::{
    io::{Read, Write},
    path::PathBuf,
    process::ExitCode,
};

use oxvs_ovsdb::{net, relay, server::Core, vlog};

struct Opts {
    dbs: Vec<PathBuf>,
    remotes: Vec<String>,
    pidfile: Option<PathBuf>,
    unixctl: Option<PathBuf>,
    log_file: Option<PathBuf>,
    detach: bool,
    overwrite_pidfile: bool,
    /// `--run=COMMAND`: run it under /bin/sh, exit when it does.
    run: Option<String>,
    sync_from: Option<String>,
    sync_exclude: Option<String>,
    active: bool,
    /// `relay:DB:REMOTE` arguments, split.
    relays: Vec<(String, String)>,
    /// `--monitor`: a parent process restarts the server if it crashes.
    monitor: bool,
}

fn env_dir(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default))
}

fn rundir() -> PathBuf {
    env_dir("OVS_RUNDIR", "/var/run/openvswitch")
}

const USAGE: &str = "usage: oxvsdb-server [DATABASE | relay:DATABASE:REMOTE]...
  [--remote=punix:FILE|ptcp:PORT[:IP]|db:DB,TABLE,COLUMN]...
  [--pidfile[=FILE]] [--overwrite-pidfile] [--unixctl=SOCKET] [--log-file[=FILE]]
  [--detach] [--monitor] [--no-chdir] [--run=COMMAND]
  [--sync-from=SERVER] [--sync-exclude-tables=DB:TABLE,...] [--active]";

fn parse(args: Vec<String>) -> Result<Opts, String> {
    let mut o = Opts {
        dbs: Vec::new(),
        remotes: Vec::new(),
        pidfile: None,
        unixctl: None,
        log_file: None,
        detach: false,
        overwrite_pidfile: false,
        run: None,
        sync_from: None,
        sync_exclude: None,
        active: false,
        relays: Vec::new(),
        monitor: false,
    };
    for a in args {
        if a.starts_with("relay:") {
            o.relays.push(relay::parse_spec(&a).ok_or_else(|| format!("{a}: expected relay:DATABASE:REMOTE"))?);
            continue;
        }
        if !a.starts_with('-') {
            o.dbs.push(PathBuf::from(a));
            continue;
        }
        let (k, v) = match a.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let need = |v: Option<String>| v.ok_or_else(|| format!("option '{k}' requires an argument"));
        match k.as_str() {
            "--remote" => {
                let r = need(v)?;
                net::check_remote(&r)?;
                o.remotes.push(r);
            }
            // Relative names are under the run directory, as in OVS.
            "--pidfile" => o.pidfile = Some(rundir().join(v.as_deref().unwrap_or("ovsdb-server.pid"))),
            "--unixctl" => o.unixctl = Some(PathBuf::from(need(v)?)),
            "--log-file" => {
                o.log_file = Some(
                    v.map(PathBuf::from)
                        .unwrap_or_else(|| env_dir("OVS_LOGDIR", "/var/log/openvswitch").join("ovsdb-server.log")),
                )
            }
            "--detach" => o.detach = true,
            "--run" => o.run = Some(need(v)?),
            "--sync-from" => o.sync_from = Some(need(v)?),
            "--sync-exclude-tables" => {
                let spec = need(v)?;
                oxvs_ovsdb::replication::parse_excluded(&spec)?;
                o.sync_exclude = Some(spec);
            }
            "--active" => o.active = true,
            // Accepted for compatibility; we never chdir, and have no monitor process.
            "--overwrite-pidfile" => o.overwrite_pidfile = true,
            "--monitor" => o.monitor = true,
            "--no-chdir" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "-V" | "--version" => {
                println!("ovsdb-server (oxvs) {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            _ if k.starts_with("-v") || k.starts_with("--verbose") => {}
            _ => return Err(format!("unrecognized option '{a}' (use --help for help)")),
        }
    }
    if o.dbs.is_empty() && o.relays.is_empty() {
        o.dbs.push(env_dir("OVS_DBDIR", "/etc/openvswitch").join("conf.db"));
    }
    Ok(o)
}

/// Forks; the parent waits until the child says it is serving (or failed),
/// as `ovsdb-server --detach` returns only once the server is ready.
fn detach() -> Option<std::fs::File> {
    let mut fds = [0; 2];
    // SAFETY: pipe with a valid array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        eprintln!("oxvsdb-server: pipe failed");
        std::process::exit(1);
    }
    // SAFETY: no threads exist yet (the runtime starts after this).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        eprintln!("oxvsdb-server: fork failed");
        std::process::exit(1);
    }
    use std::os::fd::FromRawFd;
    if pid > 0 {
        // SAFETY: fds[0] is the read end, ours alone now.
        unsafe { libc::close(fds[1]) };
        let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        let mut buf = [0u8; 1];
        let ok = matches!(r.read(&mut buf), Ok(1)) && buf[0] == b'1';
        std::process::exit(if ok { 0 } else { 1 });
    }
    // SAFETY: child: the write end is ours; setsid detaches from the terminal.
    unsafe {
        libc::close(fds[0]);
        libc::setsid();
    }
    Some(unsafe { std::fs::File::from_raw_fd(fds[1]) })
}

/// A whole-file fcntl lock request of `kind` (F_WRLCK, or F_UNLCK to ask).
fn whole_file_lock(kind: libc::c_short) -> libc::flock {
    // SAFETY: flock is plain old data; all-zero is a valid value.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l
}

/// Writes our pid to `path` as OVS does, so that `ovs-appctl -t` and
/// `ovs-appctl ... exit` accept it: OVS only trusts a pidfile whose writer
/// holds an fcntl write lock on it. The file is written as `PATH.tmp`,
/// locked, then renamed into place; the returned file keeps the lock (closing
/// any descriptor of it would drop the lock, so nothing else opens it).
fn make_pidfile(path: &std::path::Path, overwrite: bool) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let shown = path.display();
    if !overwrite && let Ok(f) = std::fs::File::open(path) {
        let mut l = whole_file_lock(libc::F_WRLCK as libc::c_short);
        // SAFETY: fcntl F_GETLK on an open descriptor with a valid flock.
        let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut l) };
        if r == 0 && l.l_type != libc::F_UNLCK as libc::c_short {
            return Err(format!("{shown}: already running as pid {}, aborting", l.l_pid));
        }
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| format!("{}: create failed ({e})", tmp.display()))?;
    let l = whole_file_lock(libc::F_WRLCK as libc::c_short);
    // SAFETY: fcntl F_SETLK on an open descriptor with a valid flock.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &l) } != 0 {
        return Err(format!("{}: fcntl failed ({})", tmp.display(), std::io::Error::last_os_error()));
    }
    f.write_all(format!("{}\n", std::process::id()).as_bytes())
        .and_then(|()| f.flush())
        .map_err(|e| format!("{}: write failed ({e})", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("failed to rename \"{}\" to \"{shown}\" ({e})", tmp.display()))?;
    Ok(f)
}

/// Signals that mean the server crashed (OVS's monitor restarts on these).
const CRASH_SIGNALS: &[libc::c_int] = &[
    libc::SIGABRT,
    libc::SIGALRM,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGPIPE,
    libc::SIGSEGV,
    libc::SIGXCPU,
    libc::SIGXFSZ,
];

/// `--monitor`: this process stays behind as a monitor that forks the
/// server and forks it again whenever it dies of a crash signal; it exits
/// (with the server's status) when the server ends any other way. Returns
/// in each server child: whether it is a restart, and the file where the
/// run-time configuration is kept across restarts.
fn monitor(ready: &mut Option<std::fs::File>) -> (bool, PathBuf) {
    let config = std::env::temp_dir().join(format!("oxvsdb-server.{}.config", std::process::id()));
    let mut restarted = false;
    loop {
        // SAFETY: no threads exist yet (the runtime starts in the child).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            eprintln!("oxvsdb-server: fork failed");
            std::process::exit(1);
        }
        if pid == 0 {
            return (restarted, config);
        }
        // Only the first server tells a detaching parent it is ready, and
        // the console is the server's: the monitor lets go of both (or
        // whoever waits for the console to close would wait for good).
        if ready.take().is_some() {
            // SAFETY: dup2 of /dev/null over our own standard descriptors.
            unsafe {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    libc::dup2(null, 0);
                    libc::dup2(null, 1);
                    libc::dup2(null, 2);
                    libc::close(null);
                }
            }
        }
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        let crashed = libc::WIFSIGNALED(status) && CRASH_SIGNALS.contains(&libc::WTERMSIG(status));
        if !crashed {
            let _ = std::fs::remove_file(&config);
            let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 1 };
            std::process::exit(code);
        }
        vlog::err("monitor", &format!("server (pid {pid}) died, restarting"));
        restarted = true;
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// mimalloc rather than glibc's malloc: the server's work is many small
/// allocations (parsed JSON, rows, datums) made on the runtime's worker
/// threads, where glibc's per-thread arenas grow page by page (an mprotect
/// each time) and fragment; mimalloc spends less CPU per allocation and
/// hands freed pages back.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let opts = match parse(std::env::args().skip(1).collect()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("oxvsdb-server: {e}");
            return ExitCode::from(1);
        }
    };
    // Rust's runtime catches SIGSEGV and SIGBUS to report stack overflows,
    // and a signal sent with kill(2) then does nothing; a server is expected
    // to die of them (its monitor restarts it).
    // SAFETY: resetting signal dispositions, before any thread exists.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
    }
    let mut opts = opts;
    let mut ready = if opts.detach { detach() } else { None };
    let config_file = if opts.monitor {
        let (restarted, config) = monitor(&mut ready);
        if restarted && let Some((remotes, dbs)) = net::saved_config(&config) {
            opts.remotes = remotes;
            opts.dbs = dbs;
        }
        Some(config)
    } else {
        None
    };
    if let Some(l) = &opts.log_file
        && let Err(e) = vlog::set_log_file(l)
    {
        eprintln!("oxvsdb-server: {}: {e}", l.display());
        return ExitCode::from(1);
    }
    let mut core = match Core::open(&opts.dbs) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("oxvsdb-server: {e}");
            return ExitCode::from(1);
        }
    };
    // A relay database takes its schema from its source, before serving.
    for (db, remote) in &opts.relays {
        let added = relay::fetch_schema(db, remote, std::time::Duration::from_secs(10))
            .and_then(|schema| core.add_relay_db(schema));
        if let Err(e) = added {
            eprintln!("oxvsdb-server: {e}");
            return ExitCode::from(1);
        }
    }
    let pid = std::process::id();
    let unixctl = opts.unixctl.clone().unwrap_or_else(|| rundir().join(format!("ovsdb-server.{pid}.ctl")));
    // Held (and so locked) for the life of the process.
    let _pidfile = match &opts.pidfile {
        Some(p) => match make_pidfile(p, opts.overwrite_pidfile) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("oxvsdb-server: {e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let result = rt.block_on(async {
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let stop = opts.run.is_some().then_some(stop_rx);
        let serve_opts = net::ServeOptions {
            ready: Some(bound_tx),
            stop,
            sync_from: opts.sync_from.clone(),
            sync_exclude: opts.sync_exclude.clone(),
            active: opts.active,
            relays: opts.relays.clone(),
            config_file: config_file.clone(),
        };
        let server = tokio::spawn(net::serve(core, opts.remotes.clone(), unixctl.clone(), serve_opts));
        // Only once the sockets exist may a detaching parent return: callers
        // connect right after `--detach` comes back.
        if bound_rx.await.is_err() {
            return server.await.unwrap_or_else(|e| Err(e.to_string()));
        }
        let mut run_status = None;
        if let Some(cmd) = &opts.run {
            let child = std::process::Command::new("/bin/sh").arg("-c").arg(cmd).spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => return Err(format!("{cmd}: process failed to start ({e})")),
            };
            run_status = Some(tokio::task::spawn_blocking(move || {
                let status = child.wait();
                let _ = stop_tx.send(());
                status
            }));
        }
        if let Some(mut r) = ready {
            let _ = r.write_all(b"1");
            // SAFETY: the console is not ours any more once detached.
            unsafe {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                libc::dup2(null, 0);
                libc::dup2(null, 1);
                libc::dup2(null, 2);
            }
        }
        if opts.run.is_none() {
            vlog::info("ovsdb_server", &format!("ovsdb-server (oxvs) {} started", env!("CARGO_PKG_VERSION")));
        }
        server.await.unwrap_or_else(|e| Err(e.to_string()))?;
        // As OVS: a failing --run command makes the server fail too.
        if let (Some(cmd), Some(status)) = (&opts.run, run_status) {
            match status.await {
                Ok(Ok(s)) if s.success() => {}
                Ok(Ok(s)) => return Err(format!("{cmd}: child exited, {s}")),
                Ok(Err(e)) => return Err(format!("{cmd}: {e}")),
                Err(e) => return Err(format!("{cmd}: {e}")),
            }
        }
        Ok(())
    });
    if let Some(p) = &opts.pidfile {
        let _ = std::fs::remove_file(p);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxvsdb-server: {e}");
            ExitCode::from(1)
        }
    }
}
