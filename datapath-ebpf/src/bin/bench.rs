//! `oxvs-bench`: the reference programs of `cargo xtask bench datapath`.
//!
//! - `bench_redirect`: the limit oxvs is measured against, the least an XDP
//!   switch can do: redirect every frame to the one other port (`BENCH_TX[0]`),
//!   with no parsing and no lookup of its own.
//! - `bench_sink`: on the receiving namespace's veth, counts frames per CPU and
//!   drops them. Having an XDP program there is also what makes a veth accept
//!   frames redirected into it by XDP (see shared/toolchain.md §3).
//!
//! Kept out of the datapath object so the datapath ships nothing it doesn't use.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{DevMap, PerCpuArray},
    programs::XdpContext,
};

/// Slot 0: the device `bench_redirect` sends every frame to.
#[map]
static BENCH_TX: DevMap = DevMap::with_max_entries(1, 0);

/// Slot 0: frames `bench_sink` received, per CPU (summed by userspace).
#[map]
static BENCH_RX: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn bench_redirect(_ctx: XdpContext) -> u32 {
    // The devmap redirect is the same helper oxvs ends with for an output
    // action, so the difference between the two is oxvs's parse and lookup.
    BENCH_TX.redirect(0, 0).unwrap_or(xdp_action::XDP_ABORTED)
}

#[xdp]
pub fn bench_sink(_ctx: XdpContext) -> u32 {
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
