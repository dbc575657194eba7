//! The workloads, each against one running server: insert throughput with N
//! clients, one big transaction, monitor fan-out, and loading rows for RSS.
use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::{
    super::{cpu::thread_cpu_time, sender::check_interrupted},
    client::{self, Client},
    server::Server,
};

const DURABLE: &str = r#",{"op":"commit","durable":true}"#;

fn commit(durable: bool) -> &'static str {
    if durable { DURABLE } else { "" }
}

/// One single-row insert into the root table, as JSON-RPC text.
fn insert_request(id: u64, client: usize, n: u64, durable: bool) -> String {
    format!(
        r#"{{"id":{id},"method":"transact","params":["B",{{"op":"insert","table":"Item","row":{{"name":"c{client}-{n}","n":{n}}}}}{}]}}"#,
        commit(durable)
    )
}

/// What one throughput run measured.
pub struct Tput {
    pub txns: u64,
    pub secs: f64,
    /// Server CPU time over the run, all threads.
    pub server_cpu_ns: u64,
    /// CPU time of this process (the clients) over the run.
    pub client_cpu_ns: u64,
}

impl Tput {
    pub fn rate(&self) -> f64 {
        self.txns as f64 / self.secs
    }
    pub fn cpu_us_per_txn(&self) -> f64 {
        self.server_cpu_ns as f64 / 1e3 / self.txns as f64
    }
    pub fn client_us_per_txn(&self) -> f64 {
        self.client_cpu_ns as f64 / 1e3 / self.txns as f64
    }
}

/// CPU time of this whole process so far, ns.
fn own_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `clients` threads, each with one connection and one transaction in flight,
/// inserting single rows for `dur`.
pub fn throughput(srv: &Server, clients: usize, durable: bool, dur: Duration) -> Result<Tput> {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut threads = Vec::new();
    for c in 0..clients {
        let mut cl = srv.connect()?;
        // One transaction before the clock starts: connection set up, and a
        // first commit done.
        cl.send(insert_request(1, c, 0, durable).as_bytes())?;
        let (r, _) = cl.reply(1)?;
        client::transact_ok(cl.bytes(r)).context("warm-up insert")?;
        let b = barrier.clone();
        threads.push(std::thread::spawn(move || -> Result<(u64, Instant, Instant)> {
            b.wait();
            let start = Instant::now();
            let until = start + dur;
            let mut n = 0u64;
            while Instant::now() < until {
                let id = n + 2;
                cl.send(insert_request(id, c, n + 1, durable).as_bytes())?;
                let (r, _) = cl.reply(id)?;
                client::transact_ok(cl.bytes(r))?;
                n += 1;
            }
            Ok((n, start, Instant::now()))
        }));
    }
    let cpu0 = srv.cpu_ns()?;
    let own0 = own_cpu_ns();
    barrier.wait();
    let mut txns = 0;
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    let mut err = None;
    for t in threads {
        match t.join().map_err(|_| anyhow::anyhow!("a client thread panicked")).and_then(|r| r) {
            Ok((n, s, e)) => {
                txns += n;
                first = Some(first.map_or(s, |f| f.min(s)));
                last = Some(last.map_or(e, |l| l.max(e)));
            }
            Err(e) => err = Some(e),
        }
    }
    if let Some(e) = err {
        return Err(e);
    }
    let cpu1 = srv.cpu_ns()?;
    let own1 = own_cpu_ns();
    let secs = (last.unwrap() - first.unwrap()).as_secs_f64();
    if txns == 0 {
        bail!("no transaction completed in {secs:.1} s");
    }
    Ok(Tput { txns, secs, server_cpu_ns: cpu1.saturating_sub(cpu0), client_cpu_ns: own1.saturating_sub(own0) })
}

/// `["Open_vSwitch", ...ops]` inserting bridge `br` with `ports` Ports, each
/// with one Interface, and referencing the bridge from the Open_vSwitch row
/// (inserted if `new_root`, else mutated), so nothing is garbage collected.
/// Names are `<br>p<i>`.
fn bridge_txn(id: u64, br: &str, ports: usize, new_root: bool, durable: bool) -> String {
    let mut s = String::with_capacity(ports * 160 + 256);
    s.push_str(&format!(r#"{{"id":{id},"method":"transact","params":["Open_vSwitch","#));
    if new_root {
        s.push_str(&format!(
            r#"{{"op":"insert","table":"Open_vSwitch","row":{{"bridges":["set",[["named-uuid","{br}"]]]}}}},"#
        ));
    } else {
        s.push_str(&format!(
            r#"{{"op":"mutate","table":"Open_vSwitch","where":[],"mutations":[["bridges","insert",["set",[["named-uuid","{br}"]]]]]}},"#
        ));
    }
    s.push_str(&format!(
        r#"{{"op":"insert","table":"Bridge","uuid-name":"{br}","row":{{"name":"{br}","ports":["set",["#
    ));
    for i in 0..ports {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(r#"["named-uuid","{br}p{i}"]"#));
    }
    s.push_str("]]}}");
    for i in 0..ports {
        s.push_str(&format!(
            r#",{{"op":"insert","table":"Port","uuid-name":"{br}p{i}","row":{{"name":"{br}p{i}","interfaces":["named-uuid","{br}i{i}"]}}}}"#
        ));
    }
    for i in 0..ports {
        s.push_str(&format!(
            r#",{{"op":"insert","table":"Interface","uuid-name":"{br}i{i}","row":{{"name":"{br}p{i}"}}}}"#
        ));
    }
    s.push_str(commit(durable));
    s.push_str("]}");
    s
}

/// Rows of `table` in an Open_vSwitch database.
fn count_rows(cl: &mut Client, table: &str) -> Result<usize> {
    let r =
        cl.transact(json!(["Open_vSwitch", {"op": "select", "table": table, "where": [], "columns": ["_uuid"]}]))?;
    Ok(r[0]["rows"].as_array().context("select without rows")?.len())
}

/// What the big transaction measured.
pub struct Big {
    /// Send of the first byte to the read that completed the reply.
    pub ms: f64,
    pub server_cpu_ms: f64,
}

/// One transaction adding a bridge with `ports` Ports and as many Interfaces
/// to an empty vswitch database.
pub fn big_txn(srv: &Server, ports: usize, durable: bool) -> Result<Big> {
    let mut cl = srv.connect()?;
    cl.call("list_dbs", json!([]))?;
    let text = bridge_txn(7, "br0", ports, true, durable);
    let cpu0 = srv.cpu_ns()?;
    let t0 = Instant::now();
    cl.send(text.as_bytes())?;
    let (r, done) = cl.reply(7)?;
    let ms = (done - t0).as_secs_f64() * 1e3;
    let cpu1 = srv.cpu_ns()?;
    let f = cl.bytes(r);
    client::transact_ok(f)?;
    let ops = client::count(f, b"{\"uuid\":");
    // An insert's result is {"uuid":[...]}; the mutate/commit ones are not.
    if ops != 2 * ports + 2 {
        bail!("the reply has {ops} inserted rows, expected {}", 2 * ports + 2);
    }
    let (p, i) = (count_rows(&mut cl, "Port")?, count_rows(&mut cl, "Interface")?);
    if p != ports || i != ports {
        bail!("after the transaction: {p} Ports and {i} Interfaces, expected {ports} of each");
    }
    Ok(Big { ms, server_cpu_ms: cpu1.saturating_sub(cpu0) as f64 / 1e6 })
}

/// Loads `batches` transactions of one bridge with `ports` Ports and
/// Interfaces each; returns (VmRSS, VmHWM) in kB once loaded, and the
/// RSS before loading.
pub struct Rss {
    pub empty_kb: u64,
    pub loaded_kb: u64,
    pub peak_kb: u64,
    pub db_bytes: u64,
}

pub fn load_rows(srv: &mut Server, batches: usize, ports: usize) -> Result<Rss> {
    let mut cl = srv.connect()?;
    cl.call("list_dbs", json!([]))?;
    let empty_kb = srv.status_kb("VmRSS")?;
    for b in 0..batches {
        check_interrupted()?;
        let text = bridge_txn(100 + b as u64, &format!("b{b}"), ports, b == 0, true);
        cl.send(text.as_bytes())?;
        let (r, _) = cl.reply(100 + b as u64)?;
        client::transact_ok(cl.bytes(r)).with_context(|| format!("batch {b}"))?;
    }
    let (p, i) = (count_rows(&mut cl, "Port")?, count_rows(&mut cl, "Interface")?);
    if p != batches * ports || i != batches * ports {
        bail!("loaded {p} Ports and {i} Interfaces, expected {} of each", batches * ports);
    }
    // Let whatever a server does after a commit settle.
    std::thread::sleep(Duration::from_millis(300));
    srv.check_alive()?;
    Ok(Rss { empty_kb, loaded_kb: srv.status_kb("VmRSS")?, peak_kb: srv.status_kb("VmHWM")?, db_bytes: srv.db_bytes() })
}

/// What the fan-out runs measured, per commit, in µs.
#[derive(Default)]
pub struct Fanout {
    /// From the send to the read that completed the last watcher's update2.
    pub last: Vec<f64>,
    /// From the send to the read that completed the first watcher's update2.
    pub first: Vec<f64>,
    /// CPU time the watching thread spent from the send to the last update:
    /// the least a fan-out can take with one reader, whatever the server.
    pub reader_cpu: Vec<f64>,
}

/// `watchers` sessions with a monitor_cond on Item; another session commits
/// `commits` single inserts one after another, each timed.
pub fn fanout(srv: &Server, watchers: usize, commits: usize, durable: bool) -> Result<Fanout> {
    let mut ws = Vec::new();
    for w in 0..watchers {
        let mut c = srv.connect()?;
        let r = c.call("monitor_cond", json!(["B", format!("m{w}"), {"Item": [{"columns": ["name", "n"]}]}]))?;
        if r != json!({}) {
            bail!("monitor_cond on an empty table returned {r}");
        }
        c.set_nonblocking(true)?;
        ws.push(c);
    }
    let mut writer = srv.connect()?;
    // Level-triggered epoll over the watchers: each wake-up names only the
    // sessions with data, so the client's cost per update is one read.
    // SAFETY: plain syscall; the descriptor is owned below.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        bail!("epoll_create1: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let epfd = ep.as_raw_fd();
    for (i, c) in ws.iter().enumerate() {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
        // SAFETY: valid descriptors and event.
        if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, c.fd(), &mut ev) } != 0 {
            bail!("epoll_ctl: {}", std::io::Error::last_os_error());
        }
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; watchers];
    let mut out = Fanout::default();
    for k in 0..commits {
        check_interrupted()?;
        let id = 10 + k as u64;
        let text = insert_request(id, 0, k as u64, durable);
        let mut got = vec![false; watchers];
        let mut left = watchers;
        let mut last = Instant::now();
        let mut first: Option<Instant> = None;
        let cpu0 = thread_cpu_time();
        let t0 = Instant::now();
        writer.send(text.as_bytes())?;
        while left > 0 {
            // SAFETY: a valid event array of `watchers` entries.
            let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), watchers as i32, 10_000) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                bail!("epoll_wait: {e}");
            }
            if n == 0 {
                bail!("{left} of {watchers} monitors had no update 10 s after commit {k}");
            }
            for ev in &events[..n as usize] {
                let i = ev.u64 as usize;
                let c = &mut ws[i];
                // One read, then its frames: the read that completed the
                // update is the one timed.
                if !c.fill()? {
                    continue;
                }
                while let Some(r) = c.take_frame()? {
                    let f = c.bytes(r);
                    if client::find(f, b"\"update2\"").is_none() || got[i] {
                        bail!("watcher {i}: unexpected message {}", String::from_utf8_lossy(f));
                    }
                    got[i] = true;
                    left -= 1;
                    last = last.max(c.last_read);
                    first = Some(first.map_or(c.last_read, |f| f.min(c.last_read)));
                }
            }
        }
        out.reader_cpu.push((thread_cpu_time() - cpu0).as_secs_f64() * 1e6);
        out.last.push((last - t0).as_secs_f64() * 1e6);
        out.first.push((first.unwrap_or(last) - t0).as_secs_f64() * 1e6);
        let (r, _) = writer.reply(id)?;
        client::transact_ok(writer.bytes(r))?;
    }
    Ok(out)
}

/// The median of some values.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Bytes appended per floor sample: about one log record of a single-row
/// insert (`OVSDB JSON <len> <sha1>` header, the row, `_date`).
const FLOOR_RECORD: usize = 160;

/// The machine's floor under a durable commit: `samples` appends of one
/// record-sized write to a fresh file in `dir` (where the databases live),
/// each followed by `fdatasync`, timed one by one, µs. No server that
/// acknowledges a commit only once it is on disk can answer faster.
pub fn disk_floor(dir: &std::path::Path, samples: usize) -> Result<Vec<f64>> {
    use std::io::Write;
    let path = dir.join(format!("oxvs-bench-ovsdb-floor-{}", std::process::id()));
    let mut f = std::fs::File::create(&path).with_context(|| path.display().to_string())?;
    let record = [b'x'; FLOOR_RECORD];
    let mut out = Vec::with_capacity(samples);
    let r = (|| -> Result<()> {
        for _ in 0..samples {
            let t = Instant::now();
            f.write_all(&record)?;
            f.sync_data()?;
            out.push(t.elapsed().as_secs_f64() * 1e6);
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    r.with_context(|| format!("append + fdatasync on {}", path.display()))?;
    Ok(out)
}

/// The floor under any request and its reply over a unix socket here:
/// `samples` round trips of a record-sized message to a thread of this
/// process that reads it and writes it back (both sides block in `read`, as
/// a client and a server do), µs.
pub fn socket_floor(samples: usize) -> Result<Vec<f64>> {
    use std::io::{Read, Write};
    let (mut near, mut far) = std::os::unix::net::UnixStream::pair()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = [0u8; FLOOR_RECORD];
        loop {
            match far.read_exact(&mut buf) {
                Ok(()) => far.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let record = [b'x'; FLOOR_RECORD];
    let mut back = [0u8; FLOOR_RECORD];
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        near.write_all(&record)?;
        near.read_exact(&mut back)?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(near);
    echo.join().map_err(|_| anyhow::anyhow!("the echo thread panicked"))??;
    Ok(out)
}
