//! The oxvs fast path: one source, two programs.
//!
//! `oxvs_xdp` runs at XDP, `oxvs_tc` at tc clsact ingress. Both parse the frame
//! into a `FlowKey` (`parse`), look it up in the megaflow cache (`lookup`: a
//! per-CPU exact-match cache in front of a walk over the masks, most hit first)
//! and run the flow's actions (`actions`). A miss goes to userspace through a
//! ring buffer under a per-port token bucket (`upcall`).
#![no_std]
#![no_main]

mod actions;
mod csum;
mod hook;
mod lookup;
mod maps;
mod parse;
mod upcall;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use oxvs_dp_abi::{FLOW_F_TC_ONLY, UPCALL_MISS, counter};

use hook::{Hook, TcHook, Verdict, XdpHook};

#[xdp]
pub fn oxvs_xdp(ctx: XdpContext) -> u32 {
    let mut h = XdpHook { ctx };
    match process(&mut h) {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Redirect(v) => v,
    }
}

/// `execute`: runs the actions userspace put in `OXVS_EXEC` on a packet
/// injected with BPF_PROG_TEST_RUN (live frames), so a packet that missed is
/// sent on by the very code that runs the flow's actions.
#[xdp]
pub fn oxvs_xdp_exec(ctx: XdpContext) -> u32 {
    let mut h = XdpHook { ctx };
    let Some(scratch) = maps::scratch() else { return xdp_action::XDP_ABORTED };
    let Some(flow) = maps::OXVS_EXEC.get(0) else { return xdp_action::XDP_ABORTED };
    // SAFETY: per-CPU scratch value, ours for this run.
    let scratch = unsafe { &mut *scratch };
    clear_key(&mut scratch.key);
    scratch.key.in_port = maps::port_of_ifindex(h.ifindex()).unwrap_or(0);
    let layout = parse::flow_extract(&h, &mut scratch.key);
    match actions::execute(&mut h, flow, scratch, layout) {
        Verdict::Redirect(v) => v,
        _ => xdp_action::XDP_DROP,
    }
}

/// `clock`: both clocks at one moment, for userspace to convert the jiffies
/// in flow stats (run with BPF_PROG_TEST_RUN; the frame is ignored).
#[xdp]
pub fn oxvs_clock(_ctx: XdpContext) -> u32 {
    if let Some(c) = maps::OXVS_CLOCK.get_ptr_mut(0) {
        // SAFETY: a map value; userspace reads it after this run.
        unsafe {
            (*c).jiffies = maps::jiffies();
            (*c).ns = maps::now_ns();
        }
    }
    xdp_action::XDP_DROP
}

#[classifier]
pub fn oxvs_tc(ctx: TcContext) -> i32 {
    let mut h = TcHook { ctx };
    match process(&mut h) {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Drop => TC_ACT_SHOT,
        Verdict::Redirect(v) => v as i32,
    }
}

#[inline(always)]
fn process<H: Hook>(h: &mut H) -> Verdict {
    let Some(ctr) = maps::counters() else { return Verdict::Pass };
    maps::bump(ctr, counter::RX);
    let Some(in_port) = maps::port_of_ifindex(h.ifindex()) else {
        // Not one of our ports (or detached while the program was still running).
        return Verdict::Pass;
    };
    let Some(scratch) = maps::scratch() else { return Verdict::Pass };
    // SAFETY: the scratch pointer is a per-CPU map value, valid for this program
    // run and not shared with another CPU.
    let scratch = unsafe { &mut *scratch };
    clear_key(&mut scratch.key);
    scratch.key.in_port = in_port;
    let layout = parse::flow_extract(h, &mut scratch.key);
    if layout.malformed {
        maps::bump(ctr, counter::MALFORMED);
    }

    let Some(flow) = lookup::lookup(scratch, ctr) else {
        maps::bump(ctr, counter::MISS);
        upcall::send(h, &scratch.key, UPCALL_MISS, 0);
        return Verdict::Drop;
    };
    maps::bump(ctr, counter::HIT);
    // SAFETY: a megaflow map value; valid until the end of this run (RCU).
    let flow = unsafe { &*flow };
    if H::IS_XDP && flow.flags & FLOW_F_TC_ONLY != 0 {
        maps::bump(ctr, counter::TC_HANDOFF);
        return Verdict::Pass;
    }
    maps::account(flow.slot, h.len(), scratch.key.tcp_flags);
    actions::execute(h, flow, scratch, layout)
}

/// Zeroes a key word by word (a plain assignment becomes a byte-wise memset
/// loop on this target).
#[inline(always)]
fn clear_key(k: &mut oxvs_dp_abi::FlowKey) {
    let w = k.words_mut().as_mut_ptr();
    for i in 0..oxvs_dp_abi::FLOW_KEY_WORDS {
        // SAFETY: i < FLOW_KEY_WORDS, inside the key.
        unsafe { core::ptr::write_volatile(w.add(i), 0) };
    }
}

/// Copies a key, a mask or a flow entry word by word (for the same reason).
#[inline(always)]
fn copy_words<T>(dst: &mut T, src: &T) {
    const { assert!(core::mem::size_of::<T>().is_multiple_of(8) && core::mem::align_of::<T>() >= 8) };
    let (d, s) = (dst as *mut T as *mut u64, src as *const T as *const u64);
    for i in 0..core::mem::size_of::<T>() / 8 {
        // SAFETY: i is below T's length in words, and both are 8-aligned.
        unsafe { core::ptr::write_volatile(d.add(i), *s.add(i)) };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
