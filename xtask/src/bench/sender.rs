//! The traffic source: `bench_gen` driven by BPF_PROG_TEST_RUN in live-frames
//! mode on the sender's eth0, on its own CPU, for a fixed time. Each run of
//! the program writes the next frame of the batch and returns XDP_TX, which
//! the kernel carries out as a transmit out of eth0: XDP frames land in the
//! ring of its peer pa, the switch's port, as frames from a NIC would.
//!
//! There is no pktgen module on these kernels, Debian's xdp-trafficgen fails
//! here, and a socket sender (AF_PACKET, sendmmsg) reaches only ~0.4 Mpps
//! with the whole path run on its CPU (shared/toolchain.md §3): the figures
//! were then the sender's, not the switch's. This source offers several times
//! what any switch here can carry, so the sink counts the switch's rate.
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use oxvs_userspace::dpif::test_run;

use super::{cpu, frame::Frame};

/// Frames per BPF_PROG_TEST_RUN call (about 10 ms of generating).
const REPEAT: u32 = 1 << 17;
/// Frames the kernel builds at a time (its default; 16, 32 and 256 measured
/// the same here).
const BATCH: u32 = 64;

/// What one run of the source did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    /// Frames the source made and transmitted; those the switch port's ring
    /// had no room for are dropped by the veth.
    pub frames: u64,
    /// Time the source ran.
    pub elapsed: Duration,
}

/// Set by SIGINT/SIGTERM: the benchmark stops at the next check and unwinds,
/// so its guards remove the namespaces and restore bpf_stats_enabled.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed); // async-signal-safe
}

pub fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs the generator `gen_fd` out of `dev` for `dur` on the source CPU. Must
/// run on a thread inside the sender namespace (the ifindex is looked up in
/// the caller's namespace).
pub fn send_for(gen_fd: i32, dev: &str, first: &Frame, dur: Duration) -> Result<Sent> {
    let ifindex = oxvs_userspace::netdev::ifindex(dev).with_context(|| format!("no device {dev}"))?;
    cpu::pin(0, cpu::SOURCE_CPU)?;
    let mut s = Sent::default();
    let start = Instant::now();
    while start.elapsed() < dur {
        check_interrupted()?;
        // A live run reports no return code; the sink's count is the proof.
        test_run::run_live_repeat(gen_fd, first, ifindex, REPEAT, BATCH)
            .context("BPF_PROG_TEST_RUN (live frames) of bench_gen")?;
        s.frames += REPEAT as u64;
    }
    s.elapsed = start.elapsed();
    Ok(s)
}
