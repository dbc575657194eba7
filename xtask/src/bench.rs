//! `cargo xtask bench <name>`: benchmarks that measure oxvs against an anchor in
//! the same run (see DESIGN.md §6): `datapath` and `ovsdb`.
//!
//! `datapath` forwards 60-byte frames from a sender namespace to a sink
//! namespace through a switch namespace, with the switch being, in turn:
//! nothing but an XDP drop at its port (`rx_only`: the floor), a bare XDP
//! devmap redirect (`bare_xdp`: the limit), a Linux bridge, oxvs with one
//! flow, and oxvs with 10,000 flows over 16 masks. The source (an XDP program
//! driven by live test runs) has CPU 0, the switch's port CPU 1. It reports
//! Mpps under overload, the switch CPU's time per frame, the XDP program's own
//! cost per packet (kernel bpf_stats and BPF_PROG_TEST_RUN), verifier
//! instruction counts, and the ratios the targets apply to; and writes
//! `target/bench/datapath.json`.
//!
//! `ovsdb` measures oxvsdb-server against Open vSwitch's ovsdb-server: insert
//! throughput, one big transaction, monitor fan-out, memory (see ovsdb.rs);
//! it writes `target/bench/ovsdb.json`.
//!
//! `vsctl` measures `oxvs vsctl` against Open vSwitch's ovs-vsctl: the latency
//! of one `add-port` and one invocation adding 1000 ports (see vsctl.rs); it
//! writes `target/bench/vsctl.json`.
mod cpu;
mod datapath;
mod flows;
mod frame;
mod ovsdb;
mod progs;
mod report;
mod rig;
mod sender;
mod topo;
mod vsctl;

use std::time::Duration;

use anyhow::{Context, Result, bail};

/// What `bench datapath` takes on the command line.
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    /// Traffic per measured run.
    pub secs: Duration,
    /// Measured runs per configuration.
    pub runs: usize,
    /// `datapath --test-run-only`: only the BPF_PROG_TEST_RUN cases and program
    /// sizes (a quick look at the program's cost; no traffic, no JSON).
    pub test_run_only: bool,
}

impl Opts {
    /// `--secs N --runs N` for bench `name`, with its default seconds.
    pub(crate) fn parse(name: &str, default_secs: f64, args: &[String]) -> Result<Opts> {
        let mut o = Opts { secs: Duration::from_secs_f64(default_secs), runs: 5, test_run_only: false };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
            match a.as_str() {
                "--secs" => {
                    let v = value("--secs")?;
                    let s: f64 = v
                        .parse()
                        .ok()
                        .filter(|s: &f64| *s > 0.0 && *s <= 600.0)
                        .with_context(|| format!("--secs {v}: expected a number of seconds in (0, 600]"))?;
                    o.secs = Duration::from_secs_f64(s);
                }
                "--runs" => {
                    let v = value("--runs")?;
                    o.runs = v
                        .parse()
                        .ok()
                        .filter(|r| (1..=100).contains(r))
                        .with_context(|| format!("--runs {v}: expected a whole number in 1..=100"))?;
                }
                "--test-run-only" if name == "datapath" => o.test_run_only = true,
                other => bail!("bench {name}: unknown option {other} (options: --secs N, --runs N)"),
            }
        }
        Ok(o)
    }
}

pub fn bench(args: &[String]) -> Result<()> {
    match args.split_first() {
        Some((name, rest)) if name == "datapath" => datapath::run(Opts::parse("datapath", 3.0, rest)?),
        Some((name, rest)) if name == "ovsdb" => ovsdb::run(rest),
        Some((name, rest)) if name == "vsctl" => vsctl::run(rest),
        Some((name, _)) => bail!("no benchmark named {name:?} (known: datapath, ovsdb, vsctl)"),
        None => bail!(
            "usage: cargo xtask bench datapath|ovsdb [--secs N] [--runs N] (datapath: [--test-run-only]) | vsctl [--samples N] [--runs N]"
        ),
    }
}
