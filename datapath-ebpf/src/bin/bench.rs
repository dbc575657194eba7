//! `oxvs-bench`: the reference programs of `cargo xtask bench datapath`.
//!
//! - `bench_redirect`: the limit oxvs is measured against, the least an XDP
//!   switch can do: redirect every frame to the one other port (`BENCH_TX[0]`),
//!   with no parsing and no lookup of its own.
//! - `bench_sink`: on the receiving namespace's veth, checks that each frame is
//!   an IPv4/UDP frame, counts it per CPU and drops it. Having an XDP program
//!   there is also what makes a veth accept frames redirected into it by XDP
//!   (see shared/toolchain.md §3).
//!
//! - `bench_gen`: the traffic source. Driven by BPF_PROG_TEST_RUN in
//!   live-frames mode on the sender's veth, it overwrites each frame with the
//!   next of the `BENCH_FRAMES` batch and returns XDP_TX, which a test run
//!   carries out as a redirect out of that veth: frames reach the switch's
//!   port as XDP frames, as from a NIC, at a rate no socket sender reaches.
//!
//! Kept out of the datapath object so the datapath ships nothing it doesn't use.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, DevMap, PerCpuArray},
    programs::XdpContext,
};

/// Slot 0: the device `bench_redirect` sends every frame to.
#[map]
static BENCH_TX: DevMap = DevMap::with_max_entries(1, 0);

/// Slot 0: the bench's frames (IPv4/UDP) `bench_sink` received, per CPU
/// (summed by userspace).
#[map]
static BENCH_RX: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Length of every frame of the batch (64-byte frames without the FCS).
const GEN_LEN: usize = 60;
/// Frames in the batch `bench_gen` cycles through (a power of two).
const GEN_FRAMES: u32 = 64;

/// The batch, filled by userspace: slot i holds frame i (first `GEN_LEN` bytes).
#[map]
static BENCH_FRAMES: Array<[u8; 64]> = Array::with_max_entries(GEN_FRAMES, 0);

/// Slot 0: frames `bench_gen` made on this CPU (which frame comes next).
#[map]
static BENCH_GEN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + GEN_LEN > end {
        return xdp_action::XDP_ABORTED;
    }
    let Some(seq) = BENCH_GEN_SEQ.get_ptr_mut(0) else { return xdp_action::XDP_ABORTED };
    // SAFETY: a per-CPU map value; XDP runs don't nest on one CPU.
    let n = unsafe {
        let n = *seq;
        *seq = n + 1;
        n
    };
    let Some(src) = BENCH_FRAMES.get((n as u32) & (GEN_FRAMES - 1)) else { return xdp_action::XDP_ABORTED };
    // Seven 8-byte words and one 4-byte word: 60 bytes, bounds-checked above.
    let (src, dst) = (src.as_ptr(), start as *mut u8);
    // SAFETY: src is a 64-byte map value, dst has GEN_LEN bytes before data_end.
    unsafe {
        for i in 0..7 {
            let w = core::ptr::read_unaligned(src.add(i * 8) as *const u64);
            core::ptr::write_unaligned(dst.add(i * 8) as *mut u64, w);
        }
        let w = core::ptr::read_unaligned(src.add(56) as *const u32);
        core::ptr::write_unaligned(dst.add(56) as *mut u32, w);
    }
    xdp_action::XDP_TX
}

#[xdp]
pub fn bench_redirect(_ctx: XdpContext) -> u32 {
    // The devmap redirect is the same helper oxvs ends with for an output
    // action, so the difference between the two is oxvs's parse and lookup.
    BENCH_TX.redirect(0, 0).unwrap_or(xdp_action::XDP_ABORTED)
}

/// Ethertype (offset 12) and IPv4 protocol (offset 23) of the bench's frames.
const SINK_ETH_TYPE: [u8; 2] = [0x08, 0x00];
const SINK_IP_PROTO: u8 = 17;

#[xdp]
pub fn bench_sink(ctx: XdpContext) -> u32 {
    // A receiver reads what it receives: the check makes "delivered" mean an
    // IPv4/UDP frame (a switch that mangles headers is not credited), and
    // puts the first read of the frame's header on the receiving side in
    // every configuration, so a switch that never reads the frame
    // (bench_redirect) does not leave that cost out.
    let (start, end) = (ctx.data(), ctx.data_end());
    let ours = start + 24 <= end && {
        let p = start as *const u8;
        // SAFETY: 24 bytes from start are inside the frame (checked above).
        unsafe { *p.add(12) == SINK_ETH_TYPE[0] && *p.add(13) == SINK_ETH_TYPE[1] && *p.add(23) == SINK_IP_PROTO }
    };
    if !ours {
        return xdp_action::XDP_DROP;
    }
    if let Some(c) = BENCH_RX.get_ptr_mut(0) {
        // SAFETY: a per-CPU map value: no other CPU writes it, and XDP runs
        // don't nest on one CPU.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
