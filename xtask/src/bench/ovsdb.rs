//! `cargo xtask bench ovsdb`: oxvsdb-server (release build) against Open
//! vSwitch's ovsdb-server, in the same run, interleaved (each repetition runs
//! every workload on both servers back to back, alternating which goes
//! first), each on a fresh database made by the real `ovsdb-tool create`:
//!
//! - single-row insert transactions/s, 1 client and 16 concurrent clients
//!   (one request in flight per client), with `{"op":"commit","durable":true}`
//!   (both servers fsync each commit: the like-for-like comparison) and
//!   without it (Open vSwitch then does not fsync; ours always does);
//! - the time to apply one transaction adding a Bridge with 10,000 Ports and
//!   10,000 Interfaces to an empty Open_vSwitch database;
//! - monitor fan-out: 50 sessions with a `monitor_cond` on a table, another
//!   commits one insert: time until all 50 have the `update2`;
//! - VmRSS of the server after loading 100,000 rows (10 transactions of a
//!   Bridge with 5,000 Ports and 5,000 Interfaces).
//!
//! Clients are threads of this process speaking raw JSON-RPC over the unix
//! socket. Writes `target/bench/ovsdb.json`.
mod client;
mod load;
/// Also starts the real ovsdb-server for the vsctl bench.
pub(super) mod server;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use self::{
    load::median,
    server::{Kind, Schema, Server},
};
use super::{
    Opts,
    report::{Method, Ratio, Report},
    sender::{catch_interrupts, check_interrupted},
};
use crate::{root, run as run_cmd};

const CLIENTS: usize = 16;
const BIG_PORTS: usize = 10_000;
const WATCHERS: usize = 50;
/// Commits timed per fan-out run; the run's figure is their median.
const FANOUT_COMMITS: usize = 20;
const RSS_BATCHES: usize = 10;
const RSS_PORTS: usize = 5_000;

const TPUT: Method = Method {
    label: "txn/s",
    unit: "txn/s",
    how: "single-row inserts into a root table, each client one transaction in flight over its own unix socket; \
          transactions completed / wall time of the run (after one warm-up transaction per client)",
};
const TPUT_CPU: Method = Method {
    label: "cpu/txn",
    unit: "us/txn",
    how: "CPU time of all the server's threads (/proc/PID/task/*/schedstat) over the throughput run / transactions",
};
const BIG: Method = Method {
    label: "txn_10k",
    unit: "ms",
    how: "one transaction: Open_vSwitch row + Bridge with 10,000 Ports (one Interface each), 20,002 rows, \
          into an empty vswitch db: from sending its first byte to the read that completed the reply",
};
const BIG_CPU: Method =
    Method { label: "txn_10k_cpu", unit: "ms", how: "CPU time of all the server's threads over that transaction" };
const FANOUT: Method = Method {
    label: "fanout",
    unit: "us",
    how: "50 sessions with monitor_cond on Item (one thread waits on them in epoll), another session inserts one \
          row: from sending the transaction to the read that completed the 50th update2 (median of 20 commits per run)",
};
const FANOUT_FIRST: Method = Method {
    label: "fanout_first",
    unit: "us",
    how: "the same commits: from sending the transaction to the read that completed the first update2 (the commit, \
          its fsync when durable, the first write)",
};
const FANOUT_READER: Method = Method {
    label: "fanout_reader",
    unit: "us",
    how: "the same commits: CPU time of the watching thread from the send to the 50th update2, the floor under a \
          fan-out to one reader whatever the server does",
};
const RSS: Method = Method {
    label: "rss",
    unit: "MiB",
    how: "VmRSS (rss_*) and VmHWM (peak_*) of the server process from /proc/PID/status; \
          *_100k_rows: after 10 transactions each adding a Bridge with 5,000 Ports and 5,000 Interfaces \
          (100,011 rows), 0.3 s after the last reply",
};
const FLOOR: Method = Method {
    label: "disk_floor",
    unit: "us",
    how: "one 160-byte append + fdatasync on a file beside the databases, the least a commit acknowledged only \
          once on disk can take here (median of 300 per run)",
};
const RTT_FLOOR: Method = Method {
    label: "rtt_floor",
    unit: "us",
    how: "one 160-byte message over a unix socket to a thread that writes it back, both sides blocking in read: \
          the least a request and its reply can take here (median of 300 per run)",
};
const CEILING: Method = Method {
    label: "ceiling",
    unit: "ratio",
    how: "per run, the highest ours/real ratio a server could reach if all it cost were the floors: \
          insert_1c: ovsdb-server's us/txn / (disk floor + round-trip floor); \
          fanout: ovsdb-server's fan-out / (disk floor + the watching thread's CPU, the less of the two servers')",
};
const DB_SIZE: Method =
    Method { label: "db_size", unit: "MiB", how: "size of the database file after loading the 100k rows" };

/// A ratio with its direction: `higher` (value ≥ target is met) or not
/// (value ≤ target is met).
struct Target {
    ratio: Ratio,
    higher: bool,
    like_for_like: bool,
    /// The most this machine allows (median of the `ceiling:` figure), where
    /// the bench measures one.
    ceiling: Option<f64>,
}

fn fig(kind: Kind, what: &str) -> String {
    format!("{}:{what}", kind.name())
}

/// Values collected over the runs, in the order figures were first seen.
#[derive(Default)]
struct Samples(Vec<(String, Method, Vec<f64>)>);

impl Samples {
    fn push(&mut self, name: String, m: Method, v: f64) {
        match self.0.iter_mut().find(|(n, _, _)| *n == name) {
            Some((_, _, vs)) => vs.push(v),
            None => self.0.push((name, m, vec![v])),
        }
    }
}

fn build_ours() -> Result<PathBuf> {
    println!("# building oxvsdb-server (release)");
    run_cmd(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "oxvs-ovsdb",
        "--bin",
        "oxvsdb-server",
    ]))?;
    let bin = root().join("target/release/oxvsdb-server");
    if !bin.exists() {
        bail!("{} missing after the build", bin.display());
    }
    Ok(bin)
}

fn version(tool: &str) -> Result<String> {
    let o = Command::new(tool)
        .arg("--version")
        .output()
        .with_context(|| format!("{tool} is missing: `cargo xtask setup` installs Debian's openvswitch packages"))?;
    if !o.status.success() {
        bail!("{tool} --version failed");
    }
    Ok(String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
}

/// One repetition of every workload on both servers.
fn repetition(rep: usize, opts: &Opts, ours: &Path, s: &mut Samples) -> Result<()> {
    let order = if rep.is_multiple_of(2) { [Kind::Ours, Kind::Real] } else { [Kind::Real, Kind::Ours] };
    println!("run {}/{} (first: {})", rep + 1, opts.runs, order[0].name());
    let floor = median(&load::disk_floor(&std::env::temp_dir(), 300)?);
    let rtt = median(&load::socket_floor(300)?);
    println!("  floors: append + fdatasync {floor:.1} us, unix socket round trip {rtt:.1} us");
    s.push("disk:append_fdatasync".into(), FLOOR, floor);
    s.push("socket:round_trip".into(), RTT_FLOOR, rtt);
    // This run's figures the ceilings are made of.
    let mut real_1c_us = f64::NAN;
    let (mut real_fanout, mut reader_cpu) = (f64::NAN, f64::INFINITY);
    for durable in [true, false] {
        let d = if durable { "durable" } else { "nondurable" };
        for clients in [1, CLIENTS] {
            for kind in order {
                check_interrupted()?;
                let srv = Server::start(kind, ours, Schema::Bench)?;
                let t = load::throughput(&srv, clients, durable, opts.secs)
                    .with_context(|| format!("{} insert throughput, {clients} clients, {d}", kind.name()))?;
                println!(
                    "  {:<13} insert {clients:>2} client(s) {d:<10} {:>9.1} txn/s  ({} txns in {:.2} s; CPU us/txn: server {:.1}, clients {:.1})",
                    kind.name(),
                    t.rate(),
                    t.txns,
                    t.secs,
                    t.cpu_us_per_txn(),
                    t.client_us_per_txn()
                );
                s.push(fig(kind, &format!("insert_{clients}c_{d}")), TPUT, t.rate());
                if (kind, clients, durable) == (Kind::Real, 1, true) {
                    real_1c_us = 1e6 / t.rate();
                }
                s.push(fig(kind, &format!("insert_{clients}c_{d}:cpu")), TPUT_CPU, t.cpu_us_per_txn());
            }
        }
    }
    for durable in [true, false] {
        let d = if durable { "durable" } else { "nondurable" };
        for kind in order {
            check_interrupted()?;
            let srv = Server::start(kind, ours, Schema::Vswitch)?;
            let b = load::big_txn(&srv, BIG_PORTS, durable)
                .with_context(|| format!("{} 10k-port transaction, {d}", kind.name()))?;
            println!(
                "  {:<13} one txn of 10k Ports+Interfaces {d:<10} {:>8.1} ms  (server CPU {:.1} ms)",
                kind.name(),
                b.ms,
                b.server_cpu_ms
            );
            s.push(fig(kind, &format!("txn_10k_ports_{d}")), BIG, b.ms);
            s.push(fig(kind, &format!("txn_10k_ports_{d}:cpu")), BIG_CPU, b.server_cpu_ms);
        }
    }
    for durable in [true, false] {
        let d = if durable { "durable" } else { "nondurable" };
        for kind in order {
            check_interrupted()?;
            let srv = Server::start(kind, ours, Schema::Bench)?;
            let f = load::fanout(&srv, WATCHERS, FANOUT_COMMITS, durable)
                .with_context(|| format!("{} monitor fan-out, {d}", kind.name()))?;
            let m = median(&f.last);
            let (lo, hi) = f.last.iter().fold((f64::MAX, 0f64), |(l, h), &t| (l.min(t), h.max(t)));
            let (first, reader) = (median(&f.first), median(&f.reader_cpu));
            println!(
                "  {:<13} fan-out to {WATCHERS} monitors {d:<10} {m:>8.1} us  (of {FANOUT_COMMITS} commits: {lo:.0}..{hi:.0} us; \
                 first update at {first:.0} us; reader CPU {reader:.0} us)",
                kind.name()
            );
            s.push(fig(kind, &format!("fanout_{WATCHERS}_{d}")), FANOUT, m);
            if durable {
                reader_cpu = reader_cpu.min(reader);
                if kind == Kind::Real {
                    real_fanout = m;
                }
            }
            s.push(fig(kind, &format!("fanout_{WATCHERS}_{d}:first")), FANOUT_FIRST, first);
            s.push(fig(kind, &format!("fanout_{WATCHERS}_{d}:reader_cpu")), FANOUT_READER, reader);
        }
    }
    for kind in order {
        check_interrupted()?;
        let mut srv = Server::start(kind, ours, Schema::Vswitch)?;
        let t = Instant::now();
        let r = load::load_rows(&mut srv, RSS_BATCHES, RSS_PORTS)
            .with_context(|| format!("{} loading 100k rows", kind.name()))?;
        let mib = |kb: u64| kb as f64 / 1024.0;
        println!(
            "  {:<13} RSS empty {:.1} MiB, after 100k rows {:.1} MiB (peak {:.1} MiB; db file {:.1} MiB; loaded in {:.1} s)",
            kind.name(),
            mib(r.empty_kb),
            mib(r.loaded_kb),
            mib(r.peak_kb),
            r.db_bytes as f64 / 1048576.0,
            t.elapsed().as_secs_f64()
        );
        s.push(fig(kind, "rss_empty"), RSS, mib(r.empty_kb));
        s.push(fig(kind, "rss_100k_rows"), RSS, mib(r.loaded_kb));
        s.push(fig(kind, "peak_100k_rows"), RSS, mib(r.peak_kb));
        s.push(fig(kind, "db_100k_rows"), DB_SIZE, r.db_bytes as f64 / 1048576.0);
    }
    s.push("ceiling:insert_1c_durable".into(), CEILING, real_1c_us / (floor + rtt));
    s.push(format!("ceiling:fanout_{WATCHERS}_durable"), CEILING, real_fanout / (floor + reader_cpu));
    Ok(())
}

const ISSUE_TARGET: f64 = 2.0;

fn targets(report: &Report) -> Result<Vec<Target>> {
    let (o, r) = (Kind::Ours, Kind::Real);
    let med = |k: Kind, what: &str| report.get(&fig(k, what)).map(|f| f.median());
    let mut v = Vec::new();
    let mut add = |what: &str, higher_rate: Option<bool>, like: bool| -> Result<()> {
        let (ov, rv) = (med(o, what)?, med(r, what)?);
        let (name, value, basis, target, higher) = match higher_rate {
            // A rate: ours / theirs.
            Some(true) => (
                format!("{}/{}:{what}", o.name(), r.name()),
                ov / rv,
                format!("median {} / median {}", fig(o, what), fig(r, what)),
                ISSUE_TARGET,
                true,
            ),
            // A time: theirs / ours, higher is better.
            Some(false) => (
                format!("{}/{}:{what}", r.name(), o.name()),
                rv / ov,
                format!("median {} / median {}", fig(r, what), fig(o, what)),
                ISSUE_TARGET,
                true,
            ),
            // Memory: ours / theirs, at most 1.
            None => (
                format!("{}/{}:{what}", o.name(), r.name()),
                ov / rv,
                format!("median {} / median {}", fig(o, what), fig(r, what)),
                1.0,
                false,
            ),
        };
        if !value.is_finite() || value <= 0.0 {
            bail!("ratio {name} could not be computed ({basis}: {ov} vs {rv})");
        }
        let ceiling = report.get(&format!("ceiling:{what}")).ok().map(|f| f.median());
        v.push(Target {
            ratio: Ratio { name, value, against: r.name().into(), target, basis, cost: higher_rate == Some(false) },
            higher,
            like_for_like: like,
            ceiling,
        });
        Ok(())
    };
    add("insert_1c_durable", Some(true), true)?;
    add(&format!("insert_{CLIENTS}c_durable"), Some(true), true)?;
    add("txn_10k_ports_durable", Some(false), true)?;
    add(&format!("fanout_{WATCHERS}_durable"), Some(false), true)?;
    add("rss_100k_rows", None, true)?;
    add("insert_1c_nondurable", Some(true), false)?;
    add(&format!("insert_{CLIENTS}c_nondurable"), Some(true), false)?;
    add("txn_10k_ports_nondurable", Some(false), false)?;
    add(&format!("fanout_{WATCHERS}_nondurable"), Some(false), false)?;
    Ok(v)
}

fn print_targets(ts: &[Target]) {
    let line = |t: &Target| {
        let met = if t.higher { t.ratio.value >= t.ratio.target } else { t.ratio.value <= t.ratio.target };
        let tgt = format!("{}{}", if t.higher { ">=" } else { "<=" }, t.ratio.target);
        let ceiling = match t.ceiling {
            Some(c) if c < t.ratio.target => format!("; out of reach here: ceiling {c:.3}"),
            Some(c) => format!("; ceiling {c:.3}"),
            None => String::new(),
        };
        println!(
            "{:<48} {:>7.3} {:>7}  {:<8} {}{ceiling}",
            t.ratio.name,
            t.ratio.value,
            tgt,
            if met { "met" } else { "NOT met" },
            t.ratio.basis
        );
        met
    };
    println!(
        "\n# ratios, like for like: both servers fsync every commit ({{\"op\":\"commit\",\"durable\":true}} in each transaction)"
    );
    println!("{:<48} {:>7} {:>7}  {:<8} basis", "ratio", "value", "target", "");
    let like: Vec<&Target> = ts.iter().filter(|t| t.like_for_like).collect();
    let met = like.iter().filter(|t| line(t)).count();
    println!(
        "targets met: {met} of {} (throughput ours/real >= 2; times real/ours >= 2, i.e. twice as fast; RSS ours/real <= 1)",
        like.len()
    );
    println!(
        "\n# ratios, NOT like for like: no commit op, so ovsdb-server does not fsync; oxvsdb fsyncs every commit anyway"
    );
    println!("{:<48} {:>7} {:>7}  {:<8} basis", "ratio", "value", "target", "");
    let other: Vec<&Target> = ts.iter().filter(|t| !t.like_for_like).collect();
    let met = other.iter().filter(|t| line(t)).count();
    println!("targets met: {met} of {} (informational: different durability)", other.len());
}

pub fn run(args: &[String]) -> Result<()> {
    let opts = super::Opts::parse("ovsdb", 1.5, args)?;
    catch_interrupts();
    server::remove_leftovers();
    let real = version("ovsdb-server")?;
    version("ovsdb-tool")?;
    let ours = build_ours()?;
    let t0 = Instant::now();
    println!(
        "# bench ovsdb: {} — {} runs; oxvsdb-server (release, {}) vs {real}; throughput runs of {:.1} s; databases in {}",
        super::report::machine(),
        opts.runs,
        ours.display(),
        opts.secs.as_secs_f64(),
        std::env::temp_dir().display()
    );
    let mut samples = Samples::default();
    for rep in 0..opts.runs {
        repetition(rep, &opts, &ours, &mut samples)?;
    }
    let mut report = Report::default();
    for (name, m, v) in samples.0 {
        report.add(name, m, v)?;
    }
    let ts = targets(&report)?;
    report.ratios = ts.iter().map(|t| t.ratio.clone()).collect();
    report.print_figures();
    print_targets(&ts);
    let path = root().join("target/bench/ovsdb.json");
    report.write_json("ovsdb", &path)?;
    println!("\nwrote {} ({:.0} s of measuring)", path.display(), t0.elapsed().as_secs_f64());
    Ok(())
}
