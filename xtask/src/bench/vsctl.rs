//! `cargo xtask bench vsctl`: `oxvs vsctl` (release build) against Open
//! vSwitch's ovs-vsctl, in the same run, both talking to Open vSwitch's
//! ovsdb-server. Each tool has a server of its own on a fresh database made by
//! the real `ovsdb-tool create` and brought to the same state (`init`,
//! `add-br br0`) by the real ovs-vsctl:
//!
//! - latency of one `add-port br0 pN` invocation: N samples (100 by
//!   default), the two tools alternating so both servers grow alike, each
//!   sample a new port name; median, min and max;
//! - one invocation adding 1000 ports chained with `--`
//!   (`add-port br0 q0 -- add-port br0 q1 -- …`), on a fresh database per
//!   run and tool, alternating which tool goes first; median, min, max over
//!   the runs.
//!
//! Every invocation uses `--no-wait`: no ovs-vswitchd runs here to bump
//! `cur_cfg`, so waiting for it would hang. After measuring, the real
//! ovs-vsctl checks that every port is there on both servers. Writes
//! `target/bench/vsctl.json`.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use super::{
    ovsdb::server::{Kind, Schema, Server},
    report::{Method, Report},
    sender::{catch_interrupts, check_interrupted},
};
use crate::{root, run as run_cmd};

const REAL_VSCTL: &str = "ovs-vsctl";
const REAL: &str = "ovs-vsctl";
const OURS: &str = "oxvs";
const BULK_PORTS: usize = 1000;
/// The target for both ratios: ours faster, i.e. real / ours > 1.
const TARGET: f64 = 1.0;

const ADD_PORT: Method = Method {
    label: "add_port",
    unit: "ms",
    how: "wall time of one `--no-wait add-port br0 pN` process, from spawn to exit (includes process start, \
          connecting, fetching the database and committing), against a server with br0 and the ports of the \
          earlier samples",
};
const BULK: Method = Method {
    label: "add_1000",
    unit: "ms",
    how: "wall time of one `--no-wait add-port br0 q0 -- add-port br0 q1 -- ... q999` process (one transaction) \
          against a fresh database holding br0",
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Real,
    Ours,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Real => REAL,
            Tool::Ours => OURS,
        }
    }
}

struct Opts {
    samples: usize,
    runs: usize,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts { samples: 100, runs: 5 };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str, max: usize| -> Result<usize> {
            let v = it.next().with_context(|| format!("{name} needs a value"))?;
            v.parse()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .with_context(|| format!("{name} {v}: expected a whole number in 1..={max}"))
        };
        match a.as_str() {
            "--samples" => o.samples = num("--samples", 10_000)?,
            "--runs" => o.runs = num("--runs", 100)?,
            other => bail!("bench vsctl: unknown option {other} (options: --samples N, --runs N)"),
        }
    }
    Ok(o)
}

fn build_ours() -> Result<PathBuf> {
    println!("# building oxvs (release)");
    run_cmd(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "oxvs-cli",
        "--bin",
        "oxvs",
    ]))?;
    let bin = root().join("target/release/oxvs");
    if !bin.exists() {
        bail!("{} missing after the build", bin.display());
    }
    Ok(bin)
}

/// One vsctl invocation against `srv`; fails with the tool's stderr if it
/// fails. Returns the wall time in ms.
fn vsctl(tool: Tool, ours: &Path, srv: &Server, args: &[String]) -> Result<f64> {
    let mut c = match tool {
        Tool::Real => Command::new(REAL_VSCTL),
        Tool::Ours => {
            let mut c = Command::new(ours);
            c.arg("vsctl");
            c
        }
    };
    c.arg("--no-wait").arg(format!("--db=unix:{}", srv.sock.display())).args(args).stdin(Stdio::null());
    let t = Instant::now();
    let o = c.output().with_context(|| format!("running {}", tool.name()))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !o.status.success() {
        let what = args.iter().take(6).cloned().collect::<Vec<_>>().join(" ");
        bail!(
            "{} {what}{} failed ({}): {}",
            tool.name(),
            if args.len() > 6 { " …" } else { "" },
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(ms)
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// A real ovsdb-server on a fresh database with `init` and `add-br br0` done
/// by the real ovs-vsctl.
fn fresh_server(ours: &Path) -> Result<Server> {
    let srv = Server::start(Kind::Real, ours, Schema::Vswitch)?;
    vsctl(Tool::Real, ours, &srv, &words("init -- add-br br0"))?;
    Ok(srv)
}

/// The real ovs-vsctl's count of br0's ports on `srv`, as a check that the
/// tool measured did the work.
fn check_ports(srv: &Server, tool: Tool, want: usize) -> Result<()> {
    let o = Command::new(REAL_VSCTL)
        .arg("--no-wait")
        .arg(format!("--db=unix:{}", srv.sock.display()))
        .args(["list-ports", "br0"])
        .output()
        .context("running ovs-vsctl list-ports")?;
    let n = String::from_utf8_lossy(&o.stdout).lines().count();
    if !o.status.success() || n != want {
        bail!("after {}'s run br0 has {n} ports, expected {want}", tool.name());
    }
    Ok(())
}

fn add_port_latency(ours: &Path, samples: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let (real_srv, ours_srv) = (fresh_server(ours)?, fresh_server(ours)?);
    let (mut real, mut mine) = (Vec::new(), Vec::new());
    for i in 0..samples {
        check_interrupted()?;
        let args = words(&format!("add-port br0 p{i}"));
        // Alternate which tool goes first so neither always runs on a
        // machine warmed (or disturbed) by the other.
        let order = if i % 2 == 0 { [Tool::Ours, Tool::Real] } else { [Tool::Real, Tool::Ours] };
        for tool in order {
            match tool {
                Tool::Real => real.push(vsctl(tool, ours, &real_srv, &args)?),
                Tool::Ours => mine.push(vsctl(tool, ours, &ours_srv, &args)?),
            }
        }
    }
    check_ports(&real_srv, Tool::Real, samples)?;
    check_ports(&ours_srv, Tool::Ours, samples)?;
    Ok((real, mine))
}

fn bulk_args() -> Vec<String> {
    let mut args = Vec::with_capacity(BULK_PORTS * 4);
    for i in 0..BULK_PORTS {
        if i > 0 {
            args.push("--".to_string());
        }
        args.extend(["add-port".to_string(), "br0".to_string(), format!("q{i}")]);
    }
    args
}

fn bulk_once(tool: Tool, ours: &Path) -> Result<f64> {
    let srv = fresh_server(ours)?;
    let ms = vsctl(tool, ours, &srv, &bulk_args())?;
    check_ports(&srv, tool, BULK_PORTS)?;
    Ok(ms)
}

fn version() -> Result<String> {
    let o = Command::new(REAL_VSCTL)
        .arg("--version")
        .output()
        .context("ovs-vsctl is missing: `cargo xtask setup` installs Debian's openvswitch packages")?;
    if !o.status.success() {
        bail!("ovs-vsctl --version failed");
    }
    Ok(String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
}

fn fig(tool: Tool, what: &str) -> String {
    format!("{}:{what}", tool.name())
}

pub fn run(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    catch_interrupts();
    super::ovsdb::server::remove_leftovers();
    let real = version()?;
    let ours = build_ours()?;
    println!(
        "# bench vsctl: {} — `{} vsctl` (release) vs {real}, both against Open vSwitch's ovsdb-server, \
         one server per tool",
        super::report::machine(),
        ours.display()
    );
    println!(
        "# every invocation uses --no-wait: no ovs-vswitchd runs, so there is no cur_cfg to wait for; \
         {} add-port samples, {} runs of the {BULK_PORTS}-port transaction",
        opts.samples, opts.runs
    );
    let t0 = Instant::now();
    let (lat_real, lat_ours) = add_port_latency(&ours, opts.samples).context("add-port latency")?;
    println!("  add-port latency: {} samples per tool done", lat_real.len());
    let (mut bulk_real, mut bulk_ours) = (Vec::new(), Vec::new());
    for r in 0..opts.runs {
        let order = if r % 2 == 0 { [Tool::Ours, Tool::Real] } else { [Tool::Real, Tool::Ours] };
        for tool in order {
            check_interrupted()?;
            let ms = bulk_once(tool, &ours).with_context(|| format!("{} adding {BULK_PORTS} ports", tool.name()))?;
            println!(
                "  run {}/{} {:<9} {BULK_PORTS} ports in one invocation: {ms:>8.1} ms",
                r + 1,
                opts.runs,
                tool.name()
            );
            match tool {
                Tool::Real => bulk_real.push(ms),
                Tool::Ours => bulk_ours.push(ms),
            }
        }
    }
    let mut report = Report::default();
    report.add(fig(Tool::Real, "add_port"), ADD_PORT, lat_real)?;
    report.add(fig(Tool::Ours, "add_port"), ADD_PORT, lat_ours)?;
    report.add(fig(Tool::Real, "add_1000_ports"), BULK, bulk_real)?;
    report.add(fig(Tool::Ours, "add_1000_ports"), BULK, bulk_ours)?;
    for what in ["add_port", "add_1000_ports"] {
        report.ratio_lower_better(
            &format!("{REAL}/{OURS}:{what}"),
            &fig(Tool::Ours, what),
            &fig(Tool::Real, what),
            REAL,
            TARGET,
        )?;
    }
    report.print_figures();
    println!("\n# ratios: real / ours of the medians; above 1 means ours is faster (target: ours faster on both)");
    println!("{:<36} {:>7} {:>7}  {:<8} basis", "ratio", "value", "target", "");
    let mut met = 0;
    for r in &report.ratios {
        let ok = r.value > r.target;
        met += usize::from(ok);
        println!(
            "{:<36} {:>7.3} {:>7}  {:<8} {}",
            r.name,
            r.value,
            format!(">{}", r.target),
            if ok { "met" } else { "NOT met" },
            r.basis
        );
    }
    println!("targets met: {met} of {}", report.ratios.len());
    let path = root().join("target/bench/vsctl.json");
    report.write_json("vsctl", &path)?;
    println!("\nwrote {} ({:.0} s of measuring)", path.display(), t0.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let o = parse(&[]).unwrap();
        assert_eq!((o.samples, o.runs), (100, 5));
        let o = parse(&s(&["--samples", "7", "--runs", "2"])).unwrap();
        assert_eq!((o.samples, o.runs), (7, 2));
        assert!(parse(&s(&["--samples", "0"])).is_err());
        assert!(parse(&s(&["--runs"])).is_err());
        assert!(parse(&s(&["--secs", "1"])).is_err());
    }

    #[test]
    fn bulk_is_one_chained_transaction() {
        let a = bulk_args();
        assert_eq!(a.len(), BULK_PORTS * 4 - 1);
        assert_eq!(&a[..4], ["add-port", "br0", "q0", "--"]);
        assert_eq!(a.last().unwrap(), &format!("q{}", BULK_PORTS - 1));
        assert_eq!(a.iter().filter(|x| *x == "--").count(), BULK_PORTS - 1);
    }
}
