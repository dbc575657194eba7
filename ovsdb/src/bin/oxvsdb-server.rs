//! oxvsdb-server: an OVSDB server that is a drop-in for ovsdb-server.
//!
//! `oxvsdb-server [DB...] [--remote=REMOTE]... [--pidfile[=FILE]]
//! [--unixctl=SOCKET] [--log-file[=FILE]] [--detach] [--no-chdir]`
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

use oxvs_ovsdb::{net, server::Core, vlog};

struct Opts {
    dbs: Vec<PathBuf>,
    remotes: Vec<String>,
    pidfile: Option<PathBuf>,
    unixctl: Option<PathBuf>,
    log_file: Option<PathBuf>,
    detach: bool,
}

fn env_dir(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default))
}

fn rundir() -> PathBuf {
    env_dir("OVS_RUNDIR", "/var/run/openvswitch")
}

const USAGE: &str = "usage: oxvsdb-server [DATABASE]... [--remote=punix:FILE|ptcp:PORT[:IP]|db:DB,TABLE,COLUMN]...
  [--pidfile[=FILE]] [--unixctl=SOCKET] [--log-file[=FILE]] [--detach] [--no-chdir]";

fn parse(args: Vec<String>) -> Result<Opts, String> {
    let mut o =
        Opts { dbs: Vec::new(), remotes: Vec::new(), pidfile: None, unixctl: None, log_file: None, detach: false };
    for a in args {
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
            "--pidfile" => o.pidfile = Some(v.map(PathBuf::from).unwrap_or_else(|| rundir().join("ovsdb-server.pid"))),
            "--unixctl" => o.unixctl = Some(PathBuf::from(need(v)?)),
            "--log-file" => {
                o.log_file = Some(
                    v.map(PathBuf::from)
                        .unwrap_or_else(|| env_dir("OVS_LOGDIR", "/var/log/openvswitch").join("ovsdb-server.log")),
                )
            }
            "--detach" => o.detach = true,
            // Accepted for compatibility; we never chdir, and have no monitor process.
            "--no-chdir" | "--monitor" | "--overwrite-pidfile" => {}
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
    if o.dbs.is_empty() {
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
    let ready = if opts.detach { detach() } else { None };
    if let Some(l) = &opts.log_file
        && let Err(e) = vlog::set_log_file(l)
    {
        eprintln!("oxvsdb-server: {}: {e}", l.display());
        return ExitCode::from(1);
    }
    let core = match Core::open(&opts.dbs) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("oxvsdb-server: {e}");
            return ExitCode::from(1);
        }
    };
    let pid = std::process::id();
    let unixctl = opts.unixctl.clone().unwrap_or_else(|| rundir().join(format!("ovsdb-server.{pid}.ctl")));
    if let Some(p) = &opts.pidfile
        && let Err(e) = std::fs::write(p, format!("{pid}\n"))
    {
        eprintln!("oxvsdb-server: {}: {e}", p.display());
        return ExitCode::from(1);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let result = rt.block_on(async {
        let server = tokio::spawn(net::run(core, opts.remotes.clone(), unixctl.clone()));
        // Listeners are bound as the core starts; give it a moment, then say so.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
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
        vlog::info("ovsdb_server", &format!("ovsdb-server (oxvs) {} started", env!("CARGO_PKG_VERSION")));
        server.await.unwrap_or_else(|e| Err(e.to_string()))
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
