//! `cargo xtask bench datapath`: the orchestration. Build every configuration,
//! warm each up, then measure them in interleaved rounds (so a disturbance on
//! this shared machine hits all of them alike, not one configuration's runs),
//! time the programs with BPF_PROG_TEST_RUN, and report.
use std::{
    os::fd::{AsFd, AsRawFd},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use aya::programs::ProgramInfo;
use oxvs_dp_abi::{DP_F_NO_EMC, DP_F_NO_LAST_HIT, PROG_TC, PROG_XDP, PROG_XDP_EXEC, counter};
use oxvs_userspace::dpif::test_run::{self, XDP_DROP, XDP_REDIRECT};

use super::{
    Opts, cpu, flows,
    progs::{BpfStats, PROG_REDIRECT, PROG_SINK, RunStats},
    report::{Method, Report},
    rig::{Kind, Rig},
    sender::{self, Sent},
    topo::{self, MAC_A, MAC_B, SENDER_DEV},
};
use crate::root;

/// Repetitions per BPF_PROG_TEST_RUN call: long enough (0.04 s for the bare
/// program, 1.4 s for a 16-mask walk) that the kernel's average is stable to
/// a few ns, short enough to repeat it `runs` times.
const TEST_RUN_REPEAT: u32 = 1_000_000;
/// A switch must have been offered at least this many times the frames it
/// delivered, or the source, not the switch, set its rate: the run fails.
/// (rx_only, the floor, carries all the source makes and is exempt.)
const MIN_OVERLOAD: f64 = 1.2;

/// What one traffic run of one configuration measured.
struct Sample {
    sent: Sent,
    delivered: u64,
    /// Average ns per run of the switch's XDP program (bpf_stats), if it has one.
    prog_ns: Option<f64>,
    prog_runs: u64,
    sink_ns: f64,
    /// Busy time of the switch CPU per delivered frame.
    switch_cpu_ns: f64,
    /// Share of the run the switch CPU was busy.
    switch_busy: f64,
    /// oxvs: the share of megaflow hits each per-CPU cache answered, in %
    /// (last-hit, EMC).
    cache_share: Option<(f64, f64)>,
}

impl Sample {
    fn mpps(&self) -> f64 {
        self.delivered as f64 / self.sent.elapsed.as_secs_f64() / 1e6
    }

    fn offered_mpps(&self) -> f64 {
        self.sent.frames as f64 / self.sent.elapsed.as_secs_f64() / 1e6
    }
}

/// Counters read just before and just after a run.
struct Snapshot {
    delivered: u64,
    prog: Option<RunStats>,
    sink: RunStats,
    switch_busy: Duration,
    /// Megaflow hits: all, from the last-hit cache, from the EMC.
    hits: [u64; 3],
    misses: u64,
}

impl Snapshot {
    fn take(rig: &Rig) -> Result<Snapshot> {
        let c = rig.dp_counters([counter::HIT, counter::LAST_HIT, counter::EMC_HIT, counter::MISS])?;
        Ok(Snapshot {
            delivered: rig.delivered()?,
            prog: rig.switch_prog()?,
            sink: rig.sink_prog()?,
            switch_busy: cpu::busy(cpu::SWITCH_CPU)?,
            hits: [c[0], c[1], c[2]],
            misses: c[3],
        })
    }
}

/// Offers traffic for `dur` to `rig` and measures what arrived and what it cost.
fn measure(rig: &Rig, dur: Duration) -> Result<Sample> {
    sender::check_interrupted()?;
    let gen_fd = rig.generator_fd()?;
    let first = &rig.frames[0];
    let spinner = cpu::Spinner::start(cpu::SWITCH_CPU)?;
    let before = Snapshot::take(rig)?;
    let sent = rig.topo.in_ns(&rig.topo.sender, || sender::send_for(gen_fd, SENDER_DEV, first, dur))?;
    let mut after = Snapshot::take(rig)?;
    after.switch_busy = after.switch_busy.saturating_sub(spinner.stop());
    // Frames still in a veth ring land within microseconds: count them too,
    // but not the idle time of waiting for them.
    std::thread::sleep(Duration::from_millis(20));
    let delivered = rig.delivered()? - before.delivered;

    let name = rig.kind.name();
    if delivered == 0 {
        bail!("{name}: offered {} frames, none reached the sink: nothing is being forwarded", sent.frames);
    }
    let misses = after.misses - before.misses;
    if misses > 0 {
        bail!("{name}: {misses} frames missed the flow table; the traffic does not match the flows");
    }
    let (prog_ns, prog_runs) = match (before.prog, after.prog) {
        (Some(b), Some(a)) => {
            let (ns, runs) = a.since(&b);
            (Some(ns), runs)
        }
        _ => (None, 0),
    };
    let (sink_ns, _) = after.sink.since(&before.sink);
    let busy = after.switch_busy - before.switch_busy;
    let switch_busy = busy.as_secs_f64() / sent.elapsed.as_secs_f64();
    if rig.kind != Kind::RxOnly && (sent.frames as f64) < MIN_OVERLOAD * delivered as f64 {
        bail!(
            "{name}: offered {} frames and {delivered} were delivered: the source, not the switch, set the rate",
            sent.frames
        );
    }
    let hits = after.hits[0] - before.hits[0];
    let share = |i: usize| 100.0 * (after.hits[i] - before.hits[i]) as f64 / hits as f64;
    let cache_share = rig.dp().is_some().then(|| (share(1), share(2)));
    Ok(Sample {
        sent,
        delivered,
        prog_ns,
        prog_runs,
        sink_ns,
        switch_cpu_ns: busy.as_nanos() as f64 / delivered as f64,
        switch_busy,
        cache_share,
    })
}

fn print_sample(round: usize, rig: &Rig, s: &Sample) {
    let prog = match s.prog_ns {
        Some(ns) if s.prog_runs > 0 && ns.is_finite() => format!("  program {ns:.1} ns/pkt over {} runs", s.prog_runs),
        _ => String::new(),
    };
    println!(
        "  {} {:<13} {:.3} Mpps  (offered {:.2} Mpps)  switch CPU {:.0}% busy, {:.0} ns/pkt{prog}",
        if round == 0 { "cost   ".to_string() } else { format!("round {round}") },
        rig.kind.name(),
        s.mpps(),
        s.offered_mpps(),
        s.switch_busy * 100.0,
        s.switch_cpu_ns,
    );
}

/// Sends for a moment so caches, the EMC and the mask hit counters settle;
/// for 16 masks, checks every mask is hit and orders the masks by hits, as
/// the daemon's revalidator would.
fn warm_up(rig: &mut Rig, dur: Duration) -> Result<()> {
    let s = measure(rig, dur).with_context(|| format!("warming up {}", rig.kind.name()))?;
    println!("  warm-up {:<13} {:.3} Mpps", rig.kind.name(), s.mpps());
    if rig.kind == Kind::Oxvs16Masks {
        let dp = rig.dp_mut().context("no datapath")?;
        let hits = dp.mask_hits()?;
        if hits.len() != flows::N_MASKS as usize || hits.iter().any(|(_, h)| *h == 0) {
            let h: Vec<u64> = hits.iter().map(|(_, h)| *h).collect();
            bail!("oxvs_16masks: the traffic must hit all {} masks; hits per mask: {h:?}", flows::N_MASKS);
        }
        dp.sort_masks()?;
    }
    Ok(())
}

/// The traffic part: every configuration, `opts.runs` interleaved rounds.
fn traffic(rigs: &mut [Rig], opts: &Opts, report: &mut Report) -> Result<()> {
    println!("\n# traffic: {} rounds of {:.1} s per configuration", opts.runs, opts.secs.as_secs_f64());
    for rig in rigs.iter_mut() {
        warm_up(rig, opts.secs.min(Duration::from_secs(1)))?;
    }
    let mut samples: Vec<Vec<Sample>> = rigs.iter().map(|_| Vec::new()).collect();
    for round in 0..opts.runs {
        // Rotate the order each round: no configuration always runs first.
        for k in 0..rigs.len() {
            let i = (k + round) % rigs.len();
            let s = measure(&rigs[i], opts.secs)?;
            print_sample(round + 1, &rigs[i], &s);
            samples[i].push(s);
        }
    }
    record_traffic(rigs, &samples, report)?;

    // The programs' own cost in this traffic, in a round of its own: with
    // kernel.bpf_stats_enabled=1 the kernel reads the clock twice around every
    // program run (bench_gen's and the sink's too), which would slow the
    // rounds above.
    println!("\n# program cost in traffic: one more round, kernel.bpf_stats_enabled=1");
    let _stats = BpfStats::enable()?; // restored when this function returns, however it returns
    let mut costs = Vec::new();
    for rig in rigs.iter() {
        let s = measure(rig, opts.secs)?;
        print_sample(0, rig, &s);
        costs.push(s);
    }
    for (rig, s) in rigs.iter().zip(&costs) {
        if let Some(ns) = s.prog_ns {
            report.add(format!("{}:bpf_stats", rig.kind.name()), BPF_STATS, vec![ns])?;
        }
    }
    // The sink is the same program everywhere; its figure from bare_xdp.
    report.add("bench_sink:bpf_stats", BPF_STATS, vec![costs[index_of(rigs, Kind::BareXdp)?].sink_ns])?;
    Ok(())
}

const MPPS: Method = Method {
    label: "Mpps",
    unit: "Mpps",
    how: "IPv4/UDP frames the sink's XDP program counted (it reads each frame's header) / seconds the source ran; the source (bench_gen, live test runs on CPU 0) \
          offers more than the switch (pa's threaded NAPI on CPU 1) carries",
};
const OFFERED: Method =
    Method { label: "offered", unit: "Mpps", how: "frames bench_gen transmitted toward pa / seconds it ran" };
const BPF_STATS: Method = Method {
    label: "bpf_stats",
    unit: "ns/packet",
    how: "kernel.bpf_stats_enabled=1 during one more round: run_time_ns / run_cnt of the program (for oxvs and bare_xdp: the XDP program on pa)",
};
const SWITCH_CPU: Method = Method {
    label: "switch_cpu",
    unit: "ns/packet",
    how: "busy time of CPU 1 (/proc/stat) / frames delivered: pa's receive, the switch and the sink's receive together",
};
const PER_ROUND: Method = Method {
    label: "per_round",
    unit: "ratio",
    how: "Mpps of oxvs / Mpps of bare_xdp within each round (the targets apply to the ratio of medians below; this shows its spread)",
};
const CACHE: Method = Method {
    label: "cache",
    unit: "% of hits",
    how: "share of the datapath's megaflow hits in the run answered by its last-hit cache (last_hit) or its exact-match cache (emc_hit), from its counters",
};
const TEST_RUN: Method = Method {
    label: "test_run",
    unit: "ns/packet",
    how: "BPF_PROG_TEST_RUN, repeat=1e6, one frame, ingress pa, not live: the kernel's average ns per repetition",
};
const INSNS: Method = Method {
    label: "insns",
    unit: "instructions",
    how: "bpf_prog_info.verified_insns: instructions the verifier processed over all paths (limit 1,000,000)",
};

const JITED: Method =
    Method { label: "jited", unit: "bytes", how: "bpf_prog_info.jited_prog_len: size of the program's JIT image" };

/// Adds the traffic figures, grouped by kind: Mpps, offered, switch_cpu.
fn record_traffic(rigs: &[Rig], samples: &[Vec<Sample>], report: &mut Report) -> Result<()> {
    for (rig, s) in rigs.iter().zip(samples) {
        report.add(rig.kind.name(), MPPS, s.iter().map(Sample::mpps).collect())?;
    }
    for (rig, s) in rigs.iter().zip(samples) {
        report.add(format!("{}:offered", rig.kind.name()), OFFERED, s.iter().map(Sample::offered_mpps).collect())?;
    }
    for (rig, s) in rigs.iter().zip(samples) {
        let ns = s.iter().map(|x| x.switch_cpu_ns).collect();
        report.add(format!("{}:switch_cpu", rig.kind.name()), SWITCH_CPU, ns)?;
    }
    // Each round runs every configuration back to back: a ratio within a
    // round is spared the drift of this VM between rounds (it has slow
    // spells that slow every configuration, though not all alike).
    let bare = index_of(rigs, Kind::BareXdp)?;
    for (rig, s) in rigs.iter().zip(samples) {
        if matches!(rig.kind, Kind::Oxvs1Flow | Kind::Oxvs16Masks) {
            let r = s.iter().zip(&samples[bare]).map(|(o, b)| o.mpps() / b.mpps()).collect();
            report.add(format!("{}/bare_xdp:per_round", rig.kind.name()), PER_ROUND, r)?;
        }
    }
    for (rig, s) in rigs.iter().zip(samples) {
        let shares: Option<Vec<(f64, f64)>> = s.iter().map(|x| x.cache_share).collect();
        if let Some(v) = shares {
            report.add(format!("{}:last_hit", rig.kind.name()), CACHE, v.iter().map(|x| x.0).collect())?;
            report.add(format!("{}:emc_hit", rig.kind.name()), CACHE, v.iter().map(|x| x.1).collect())?;
        }
    }
    Ok(())
}

/// One BPF_PROG_TEST_RUN case: a program, a frame, what it must return, and
/// how many mask lookups per packet the datapath must count (None for the
/// bare program), which proves the frame took the path the case is named for.
#[derive(Default)]
struct Case<'a> {
    name: &'static str,
    prog_fd: i32,
    frame: &'a [u8],
    retval: u32,
    lookups_per_packet: Option<f64>,
    /// `DpConfig::flags` for the case (caches off), restored to 0 after it.
    flags: u32,
}

/// Runs a case `runs` times in `rig`'s switch namespace; returns ns/packet.
fn run_case(rig: &mut Rig, c: &Case, runs: usize) -> Result<Vec<f64>> {
    let has_dp = rig.dp().is_some();
    if has_dp {
        set_flags(rig, c.flags)?;
    }
    let r = run_case_runs(rig, c, runs);
    if has_dp {
        set_flags(rig, 0)?; // back on before looking at the result
    }
    r
}

fn run_case_runs(rig: &Rig, c: &Case, runs: usize) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for _ in 0..runs {
        sender::check_interrupted()?;
        let lookups0 = rig.dp_counter(counter::MASK_LOOKUPS)?;
        let (fd, frame, ifindex) = (c.prog_fd, c.frame, rig.pa_ifindex);
        let r = rig.topo.in_ns(&rig.topo.switch, || {
            test_run::run_xdp(fd, frame, ifindex, TEST_RUN_REPEAT).context("BPF_PROG_TEST_RUN")
        })?;
        if r.retval != c.retval {
            bail!("test run {}: the program returned {} (expected {})", c.name, r.retval, c.retval);
        }
        if let Some(want) = c.lookups_per_packet {
            let got = (rig.dp_counter(counter::MASK_LOOKUPS)? - lookups0) as f64 / TEST_RUN_REPEAT as f64;
            if (got - want).abs() > 0.01 {
                bail!("test run {}: {got:.2} mask lookups per packet, expected {want}", c.name);
            }
        }
        out.push(r.duration_ns as f64);
    }
    Ok(out)
}

fn index_of(rigs: &[Rig], kind: Kind) -> Result<usize> {
    rigs.iter().position(|r| r.kind == kind).with_context(|| format!("no {} configuration", kind.name()))
}

/// The frame for the mask the datapath walks last (found from its order), and
/// how many masks there are.
fn last_mask_frame(rig: &Rig) -> Result<(usize, Vec<u8>)> {
    let order = rig.dp().context("no datapath")?.mask_hits()?;
    let last = order.last().context("no masks")?.0;
    let i = (0..flows::N_MASKS)
        .find(|i| flows::mask_key(*i).is_ok_and(|m| m == last))
        .context("the last mask in the order is none of ours")?;
    Ok((order.len(), flows::frame_for(i, 0, MAC_B, MAC_A).to_vec()))
}

/// An owned fd of a pinned program (closing it doesn't unload the program).
fn pinned_fd(rig: &Rig, prog: &str) -> Result<aya::programs::ProgramFd> {
    let info = ProgramInfo::from_pin(rig.oxvs_prog(prog)).with_context(|| format!("pinned {prog}"))?;
    Ok(info.fd()?)
}

/// The program-cost part with BPF_PROG_TEST_RUN (bpf_stats off: it would add
/// its own clock reads to every repetition).
fn test_runs(rigs: &mut [Rig], opts: &Opts, report: &mut Report) -> Result<()> {
    println!("\n# BPF_PROG_TEST_RUN, repeat {TEST_RUN_REPEAT}, {} runs per case, ingress = pa", opts.runs);
    let (bare, one, six) =
        (index_of(rigs, Kind::BareXdp)?, index_of(rigs, Kind::Oxvs1Flow)?, index_of(rigs, Kind::Oxvs16Masks)?);
    let (fd_one, fd_six) = (pinned_fd(&rigs[one], PROG_XDP)?, pinned_fd(&rigs[six], PROG_XDP)?);
    let (fd_one, fd_six) = (fd_one.as_fd().as_raw_fd(), fd_six.as_fd().as_raw_fd());
    let fd_bare = rigs[bare].obj().prog_fd(PROG_REDIRECT)?;
    let first = rigs[one].frames[0].to_vec();
    let (n_masks, deep) = last_mask_frame(&rigs[six])?;
    let n = n_masks as f64;
    let miss = flows::miss_frame(MAC_B, MAC_A).to_vec();
    let mut results = Vec::new();

    let c = Case { name: "bare_xdp", prog_fd: fd_bare, frame: &first, retval: XDP_REDIRECT, ..Case::default() };
    results.push((c.name, run_case(&mut rigs[bare], &c, opts.runs)?));
    // One flow, last-hit cache off: its mask is first in the order, so a
    // single hash probe.
    let c = Case {
        name: "oxvs_first_mask",
        prog_fd: fd_one,
        frame: &first,
        retval: XDP_REDIRECT,
        lookups_per_packet: Some(1.0),
        flags: DP_F_NO_LAST_HIT,
    };
    results.push((c.name, run_case(&mut rigs[one], &c, opts.runs)?));
    // The same with the cache on: after the first two repetitions, a masked
    // compare against this CPU's copy of the flow, no hashing.
    let c = Case { name: "oxvs_last_hit", flags: 0, ..c };
    let hits0 = rigs[one].dp_counter(counter::LAST_HIT)?;
    results.push((c.name, run_case(&mut rigs[one], &c, opts.runs)?));
    check_hits(&rigs[one], counter::LAST_HIT, hits0, c.name, opts.runs)?;

    // 16 masks, both caches off: the walk probes every mask down to the last
    // one, then probes the hit mask once more (a map pointer can't leave the
    // bpf_loop callback).
    let c = Case {
        name: "oxvs_16th_mask_no_emc",
        prog_fd: fd_six,
        frame: &deep,
        retval: XDP_REDIRECT,
        lookups_per_packet: Some(n + 1.0),
        flags: DP_F_NO_EMC | DP_F_NO_LAST_HIT,
    };
    results.push((c.name, run_case(&mut rigs[six], &c, opts.runs)?));

    // EMC on, same frame: the first mask misses, the EMC names the last mask,
    // which is probed: two probes. The first repetition fills the EMC entry.
    let emc0 = rigs[six].dp_counter(counter::EMC_HIT)?;
    let c = Case { name: "oxvs_emc_hit", lookups_per_packet: Some(2.0), flags: DP_F_NO_LAST_HIT, ..c };
    results.push((c.name, run_case(&mut rigs[six], &c, opts.runs)?));
    check_hits(&rigs[six], counter::EMC_HIT, emc0, c.name, opts.runs)?;

    // A miss walks every mask (the EMC only remembers hits), then the upcall
    // token bucket refuses it or it is queued for userspace, and it is dropped.
    let c = Case { name: "oxvs_miss", frame: &miss, retval: XDP_DROP, lookups_per_packet: Some(n), ..c };
    results.push((c.name, run_case(&mut rigs[six], &c, opts.runs)?));

    for (name, v) in results {
        println!("  {name:<24} {} ns/packet", v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" "));
        report.add(format!("test_run:{name}"), TEST_RUN, v)?;
    }
    Ok(())
}

/// Fails unless counter `idx` rose by (nearly) one per repetition since `before`.
/// The caches are per CPU: a run the scheduler moves to the other CPU
/// (between repetitions) misses once more there, and fills that CPU's entry.
/// A few such misses in a million don't change the average; more would.
fn check_hits(rig: &Rig, idx: u32, before: u64, name: &str, runs: usize) -> Result<()> {
    let hits = rig.dp_counter(idx)? - before;
    let repetitions = TEST_RUN_REPEAT as u64 * runs as u64;
    if hits < repetitions - repetitions / 1000 {
        bail!("test run {name}: only {hits} cache hits in {repetitions} repetitions");
    }
    Ok(())
}

fn set_flags(rig: &mut Rig, flags: u32) -> Result<()> {
    let dp = rig.dp_mut().context("no datapath")?;
    dp.set_config(|c| c.flags = flags)?;
    Ok(())
}

/// Per program: the verifier's count of instructions processed (how close it
/// is to the 1M limit), and the size of its JIT image (its instruction-cache
/// footprint, which a program run between a sender's syscalls pays for).
fn program_sizes(rigs: &[Rig], report: &mut Report) -> Result<()> {
    let one = &rigs[index_of(rigs, Kind::Oxvs1Flow)?];
    let bare = &rigs[index_of(rigs, Kind::BareXdp)?];
    let mut infos = Vec::new();
    for p in [PROG_XDP, PROG_TC, PROG_XDP_EXEC] {
        infos.push((p, ProgramInfo::from_pin(one.oxvs_prog(p)).with_context(|| format!("pinned {p}"))?));
    }
    for p in [PROG_REDIRECT, PROG_SINK] {
        infos.push((p, bare.obj().info(p)?));
    }
    for (p, info) in &infos {
        let n = info
            .verified_instruction_count()
            .with_context(|| format!("{p}: the kernel reports no verified instruction count (needs 5.16+)"))?;
        report.add(format!("insns:{p}"), INSNS, vec![n as f64])?;
    }
    for (p, info) in &infos {
        report.add(format!("jited:{p}"), JITED, vec![info.size_jitted() as f64])?;
    }
    Ok(())
}

/// Whether a ratio compares rates (oxvs / anchor) or per-packet costs
/// (anchor / oxvs); either way higher is better.
#[derive(Clone, Copy)]
enum Basis {
    Rate,
    Cost,
}

/// The ratios the targets apply to, each on every basis that can carry it:
/// (name, oxvs figure, anchor figure, anchor, target, basis).
const RATIOS: &[(&str, &str, &str, &str, f64, Basis)] = &[
    // Forwarding rates, the switch on a CPU of its own.
    ("oxvs_1flow/bare_xdp", "oxvs_1flow", "bare_xdp", "bare_xdp", 0.85, Basis::Rate),
    ("oxvs_16masks/bare_xdp", "oxvs_16masks", "bare_xdp", "bare_xdp", 0.6, Basis::Rate),
    ("oxvs_1flow/linux_bridge", "oxvs_1flow", "linux_bridge", "linux_bridge", 2.0, Basis::Rate),
    // The XDP program's own cost in that traffic (one round).
    ("oxvs_1flow/bare_xdp:bpf_stats", "oxvs_1flow:bpf_stats", "bare_xdp:bpf_stats", "bare_xdp", 0.85, Basis::Cost),
    ("oxvs_16masks/bare_xdp:bpf_stats", "oxvs_16masks:bpf_stats", "bare_xdp:bpf_stats", "bare_xdp", 0.6, Basis::Cost),
    // The program's cost per kind of frame (test runs): for one flow, the
    // last-hit cache's answer (what its traffic gets) and the first mask's
    // hash probe (with the cache off); for 16 masks both the worst case
    // (caches off, last mask) and the EMC hit.
    (
        "oxvs_1flow/bare_xdp:test_run_last_hit",
        "test_run:oxvs_last_hit",
        "test_run:bare_xdp",
        "bare_xdp",
        0.85,
        Basis::Cost,
    ),
    (
        "oxvs_1flow/bare_xdp:test_run_first_mask",
        "test_run:oxvs_first_mask",
        "test_run:bare_xdp",
        "bare_xdp",
        0.85,
        Basis::Cost,
    ),
    (
        "oxvs_16masks/bare_xdp:test_run_no_emc",
        "test_run:oxvs_16th_mask_no_emc",
        "test_run:bare_xdp",
        "bare_xdp",
        0.6,
        Basis::Cost,
    ),
    ("oxvs_16masks/bare_xdp:test_run_emc", "test_run:oxvs_emc_hit", "test_run:bare_xdp", "bare_xdp", 0.6, Basis::Cost),
];

fn ratios(report: &mut Report) -> Result<()> {
    for &(name, oxvs, anchor, against, target, basis) in RATIOS {
        match basis {
            Basis::Rate => report.ratio_higher_better(name, oxvs, anchor, against, target)?,
            Basis::Cost => report.ratio_lower_better(name, oxvs, anchor, against, target)?,
        }
    }
    Ok(())
}

/// Says what bounds the Mpps figures and where a frame's time goes, from the
/// figures themselves.
fn print_bottleneck(report: &Report) -> Result<()> {
    let m = |n: &str| report.get(n).map(|f| f.median());
    let offered: Vec<f64> = Kind::ALL.iter().map(|k| m(&format!("{}:offered", k.name()))).collect::<Result<_>>()?;
    println!("\n# what the figures say (medians)");
    println!(
        "  The source (CPU {}) offered {:.2}-{:.2} Mpps, at least {MIN_OVERLOAD}x what each switch delivered: the Mpps \
         figures are each switch's forwarding rate under overload with its port served on CPU {} (frames it can't \
         take in time are dropped at its veth ring). The switch CPU is not 100% busy: its NAPI thread sleeps when \
         the ring runs empty between the source's bursts, and the ring overflows while it wakes.",
        cpu::SOURCE_CPU,
        offered.iter().copied().fold(f64::MAX, f64::min),
        offered.iter().copied().fold(0.0, f64::max),
        cpu::SWITCH_CPU,
    );
    let floor = m("rx_only:switch_cpu")?;
    println!(
        "  Switch-CPU time per delivered frame: receiving on pa and dropping (rx_only) {floor:.0} ns, the floor under \
         every switch; bare_xdp {:.0} ns; oxvs_1flow {:.0} ns (oxvs_xdp itself {:.0} ns with bpf_stats); oxvs_16masks \
         {:.0} ns (oxvs_xdp {:.0} ns); linux_bridge {:.0} ns (it pays for bridge-nf-call-iptables, built in and on here).",
        m("bare_xdp:switch_cpu")?,
        m("oxvs_1flow:switch_cpu")?,
        m("oxvs_1flow:bpf_stats")?,
        m("oxvs_16masks:switch_cpu")?,
        m("oxvs_16masks:bpf_stats")?,
        m("linux_bridge:switch_cpu")?,
    );
    Ok(())
}

pub fn run(opts: Opts) -> Result<()> {
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench datapath needs root (network namespaces, XDP, bpffs)");
    }
    cpu::check_cpus()?;
    sender::catch_interrupts();
    topo::remove_leftovers();
    println!(
        "# bench datapath: {} — {} runs × {:.1} s per configuration",
        super::report::machine(),
        opts.runs,
        opts.secs.as_secs_f64()
    );
    println!(
        "# configurations (sender ns → switch ns → sink ns, veths, 60-byte UDP frames, 64 distinct; source on CPU {}, \
         the switch port's threaded NAPI on CPU {}):",
        cpu::SOURCE_CPU,
        cpu::SWITCH_CPU
    );
    let mut rigs = Vec::new();
    for kind in Kind::ALL {
        let t = std::time::Instant::now();
        sender::check_interrupted()?;
        rigs.push(Rig::new(kind).with_context(|| format!("setting up {}", kind.name()))?);
        println!("  {:<13} ready in {:.1} s", kind.name(), t.elapsed().as_secs_f64());
    }
    let pinned = cpu::pin_napi_threads(topo::PORT_A, cpu::SWITCH_CPU)?;
    if pinned < rigs.len() {
        bail!("found {pinned} NAPI threads of {} for {} configurations", topo::PORT_A, rigs.len());
    }
    let mut report = Report::default();
    if opts.test_run_only {
        test_runs(&mut rigs, &opts, &mut report)?;
        program_sizes(&rigs, &mut report)?;
        drop(rigs);
        report.print_figures();
        return Ok(());
    }
    traffic(&mut rigs, &opts, &mut report)?;
    test_runs(&mut rigs, &opts, &mut report)?;
    program_sizes(&rigs, &mut report)?;
    ratios(&mut report)?;
    drop(rigs); // namespaces and pins go before the report is printed

    report.print_figures();
    print_bottleneck(&report)?;
    report.print_ratios();
    let path = root().join("target/bench/datapath.json");
    report.write_json("datapath", &path)?;
    println!("\nwrote {}", path.display());
    Ok(())
}
