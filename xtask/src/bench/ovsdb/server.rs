//! One server (ours or Open vSwitch's) on a fresh database made by the real
//! `ovsdb-tool create`, in a directory of its own; killed by pid and its
//! directory removed when dropped, also on error.
use std::{
    os::unix::{net::UnixStream, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::client::Client;

pub const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// The small schema of the throughput and monitor tests: one root table.
pub const BENCH_SCHEMA: &str = r#"{"name": "B", "version": "1.0.0", "tables": {
  "Item": {"columns": {"name": {"type": "string"}, "n": {"type": "integer"}}, "isRoot": true}}}"#;

const DIR_PREFIX: &str = "oxvs-bench-ovsdb-";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ours,
    Real,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ours => "oxvsdb",
            Kind::Real => "ovsdb-server",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    Bench,
    Vswitch,
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Directories left by a bench that was killed (its pid is gone).
pub fn remove_leftovers() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(DIR_PREFIX) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

pub struct Server {
    pub kind: Kind,
    child: Child,
    pub sock: PathBuf,
    // Dropped after the child is killed (fields drop after Drop::drop).
    dir: TempDir,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Server {
    /// `ours`: the oxvsdb-server binary.
    pub fn start(kind: Kind, ours: &Path, schema: Schema) -> Result<Server> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let dir = TempDir(dir);
        let schema_file = match schema {
            Schema::Vswitch => PathBuf::from(VSWITCH_SCHEMA),
            Schema::Bench => {
                let p = dir.0.join("bench.ovsschema");
                std::fs::write(&p, BENCH_SCHEMA)?;
                p
            }
        };
        let db = dir.0.join("conf.db");
        let o = Command::new("ovsdb-tool")
            .arg("create")
            .arg(&db)
            .arg(&schema_file)
            .output()
            .context("running ovsdb-tool (Debian's openvswitch-common; `cargo xtask setup` installs it)")?;
        if !o.status.success() {
            bail!("ovsdb-tool create failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        let sock = dir.0.join("db.sock");
        let log = std::fs::File::create(dir.0.join("server.log"))?;
        let bin = match kind {
            Kind::Ours => ours.to_path_buf(),
            Kind::Real => PathBuf::from("ovsdb-server"),
        };
        let mut cmd = Command::new(&bin);
        cmd.arg(&db)
            .arg(format!("--remote=punix:{}", sock.display()))
            .arg(format!("--unixctl={}", dir.0.join("ctl").display()))
            .arg("--no-chdir")
            .env("OVS_RUNDIR", &dir.0)
            .env("OVS_LOGDIR", &dir.0)
            .env("OVS_DBDIR", &dir.0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: ^C reaches only the bench, which then
            // stops the servers itself.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe. The server dies with the bench
        // even if the bench is killed (the parent is the main thread, which
        // starts every server).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let mut s = Server { kind, child, sock, dir };
        let t = Instant::now();
        while UnixStream::connect(&s.sock).is_err() {
            if let Some(st) = s.child.try_wait()? {
                bail!("{} exited ({st}) at start: {}", kind.name(), s.log_tail());
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("{} did not listen on {} within 10 s: {}", kind.name(), s.sock.display(), s.log_tail());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(s)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn connect(&self) -> Result<Client> {
        Client::connect(&self.sock).with_context(|| self.kind.name())
    }

    /// The end of the server's stdout/stderr, for error messages.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.0.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        if tail.is_empty() { "(no output)".into() } else { tail }
    }

    /// Fails (with the server's last words) if the server has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            bail!("{} exited ({st}): {}", self.kind.name(), self.log_tail());
        }
        Ok(())
    }

    /// A line of /proc/PID/status, in kB (VmRSS, VmHWM).
    pub fn status_kb(&self, key: &str) -> Result<u64> {
        let p = format!("/proc/{}/status", self.pid());
        let s = std::fs::read_to_string(&p).with_context(|| p.clone())?;
        s.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {key} in {p}"))
    }

    /// CPU time of all the server's threads so far (schedstat, ns).
    pub fn cpu_ns(&self) -> Result<u64> {
        let dir = format!("/proc/{}/task", self.pid());
        let mut total = 0;
        for t in std::fs::read_dir(&dir).with_context(|| dir.clone())?.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// The database file's size in bytes.
    pub fn db_bytes(&self) -> u64 {
        std::fs::metadata(self.dir.0.join("conf.db")).map(|m| m.len()).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL, by pid
        let _ = self.child.wait();
    }
}
