//! The reference programs (`oxvs-bench`: the traffic source, a bare devmap
//! redirect and a count-and-drop sink) and the kernel's per-program run
//! statistics.
use std::{fs, os::fd::AsFd, os::fd::AsRawFd, path::Path};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, DevMap, PerCpuArray},
    programs::{ProgramInfo, Xdp, XdpMode},
};

use super::frame::{FRAME_LEN, Frame};
use crate::root;

// bench_gen copies exactly this many bytes per frame.
const _: () = assert!(FRAME_LEN == 60);

pub const PROG_REDIRECT: &str = "bench_redirect";
pub const PROG_SINK: &str = "bench_sink";
pub const PROG_GEN: &str = "bench_gen";

/// The object `cargo xtask build-ebpf` made from datapath-ebpf/src/bin/bench.rs.
/// Read at run time (bench always runs build-ebpf first), so it is never stale.
fn object_path() -> std::path::PathBuf {
    root().join("datapath-ebpf/target/bpfel-unknown-none/release/oxvs-bench")
}

/// One configuration's copy of the reference programs and their maps.
pub struct BenchObj {
    ebpf: Ebpf,
}

impl BenchObj {
    pub fn load() -> Result<BenchObj> {
        let p = object_path();
        let bytes = fs::read(&p).with_context(|| format!("{} (run `cargo xtask build-ebpf`)", p.display()))?;
        let ebpf = Ebpf::load(&bytes).context("load the oxvs-bench object")?;
        Ok(BenchObj { ebpf })
    }

    fn xdp(&mut self, name: &str) -> Result<&mut Xdp> {
        let p: &mut Xdp = self.ebpf.program_mut(name).with_context(|| format!("no program {name}"))?.try_into()?;
        if p.fd().is_err() {
            p.load().map_err(|e| match e {
                aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
                    anyhow::anyhow!("the kernel refused {name}: {io_error}\n{verifier_log}")
                }
                e => anyhow::anyhow!("load {name}: {e}"),
            })?;
        }
        Ok(p)
    }

    /// Attaches program `name` at native XDP to `dev`. Must run on a thread in
    /// the device's namespace. Detached when this object is dropped.
    pub fn attach(&mut self, name: &str, dev: &str) -> Result<()> {
        let ifindex = oxvs_userspace::netdev::ifindex(dev).with_context(|| format!("no device {dev}"))?;
        self.xdp(name)?
            .attach_to_if_index(ifindex, XdpMode::Driver)
            .with_context(|| format!("attach {name} to {dev}"))?;
        Ok(())
    }

    /// Points `bench_redirect` at device `dev` (of the calling thread's namespace).
    pub fn set_redirect_target(&mut self, dev: &str) -> Result<()> {
        let ifindex = oxvs_userspace::netdev::ifindex(dev).with_context(|| format!("no device {dev}"))?;
        let mut tx: DevMap<_> = self.ebpf.map_mut("BENCH_TX").context("no map BENCH_TX")?.try_into()?;
        tx.set(0, ifindex, None, 0).context("BENCH_TX")?;
        Ok(())
    }

    /// Loads `bench_gen` (run by test runs, attached nowhere) with the batch
    /// of frames it cycles through.
    pub fn load_generator(&mut self, frames: &[Frame]) -> Result<()> {
        let mut slots: Array<_, [u8; 64]> =
            self.ebpf.map_mut("BENCH_FRAMES").context("no map BENCH_FRAMES")?.try_into()?;
        if frames.len() as u32 != slots.len() {
            bail!("bench_gen cycles through {} frames, the batch has {}", slots.len(), frames.len());
        }
        for (i, f) in frames.iter().enumerate() {
            let mut v = [0u8; 64];
            v[..f.len()].copy_from_slice(f);
            slots.set(i as u32, v, 0).context("BENCH_FRAMES")?;
        }
        self.xdp(PROG_GEN)?;
        Ok(())
    }

    /// Bench frames (IPv4/UDP) `bench_sink` has counted, over all CPUs.
    pub fn sink_count(&self) -> Result<u64> {
        let rx: PerCpuArray<_, u64> = self.ebpf.map("BENCH_RX").context("no map BENCH_RX")?.try_into()?;
        Ok(rx.get(&0, 0).context("BENCH_RX")?.iter().sum())
    }

    pub fn info(&self, name: &str) -> Result<ProgramInfo> {
        let p: &Xdp = self.ebpf.program(name).with_context(|| format!("no program {name}"))?.try_into()?;
        Ok(p.info()?)
    }

    pub fn prog_fd(&self, name: &str) -> Result<i32> {
        let p: &Xdp = self.ebpf.program(name).with_context(|| format!("no program {name}"))?.try_into()?;
        Ok(p.fd()?.as_fd().as_raw_fd())
    }
}

/// A program's cumulative run statistics (kept by the kernel while
/// `kernel.bpf_stats_enabled` is 1).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    pub run_ns: u64,
    pub runs: u64,
}

impl RunStats {
    pub fn of(info: &ProgramInfo) -> RunStats {
        RunStats { run_ns: info.run_time().as_nanos() as u64, runs: info.run_count() }
    }

    pub fn of_pin(path: &Path) -> Result<RunStats> {
        Ok(RunStats::of(&ProgramInfo::from_pin(path).with_context(|| format!("program pinned at {}", path.display()))?))
    }

    /// (ns per run, runs) between `before` and `self`.
    pub fn since(&self, before: &RunStats) -> (f64, u64) {
        let runs = self.runs - before.runs;
        let ns = self.run_ns - before.run_ns;
        (if runs == 0 { f64::NAN } else { ns as f64 / runs as f64 }, runs)
    }
}

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns `kernel.bpf_stats_enabled` on and puts back what it was when dropped
/// (also on an error or a panic). The kernel then times every run of every
/// program (two clock reads around it), so keep it on only while measuring.
pub struct BpfStats {
    previous: String,
}

impl BpfStats {
    pub fn enable() -> Result<BpfStats> {
        let previous = fs::read_to_string(BPF_STATS_SYSCTL).context(BPF_STATS_SYSCTL)?.trim().to_string();
        fs::write(BPF_STATS_SYSCTL, "1").with_context(|| format!("enable {BPF_STATS_SYSCTL}"))?;
        Ok(BpfStats { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = fs::write(BPF_STATS_SYSCTL, &self.previous) {
            eprintln!("bench: could not restore {BPF_STATS_SYSCTL} to {}: {e}", self.previous);
        }
    }
}
