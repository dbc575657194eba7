//! Runs a flow's actions on the packet. Encoding: `oxvs_dp_abi::Action`.
//!
//! Rewrites fix the IPv4 header checksum and the TCP/UDP/ICMPv6 checksum
//! incrementally. Header offsets come from the parse (`Layout`) and are shifted
//! when a VLAN tag is pushed or popped.
use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;
use oxvs_dp_abi::{action::*, *};

use crate::{
    hook::{Hook, Verdict},
    maps::{self, Scratch},
    parse::Layout,
    upcall,
};

const MAX_OFF: usize = 2048;

#[inline(always)]
fn ptr<H: Hook, T>(h: &H, off: usize) -> Option<*mut T> {
    let data = h.data();
    // For one byte LLVM turns the check into `p >= end`, from which the
    // verifier grants no range; asking for two bytes keeps it `p + 2 > end`.
    // (Every byte we rewrite has header bytes after it.)
    let need = if core::mem::size_of::<T>() < 2 { 2 } else { core::mem::size_of::<T>() };
    if off > MAX_OFF || data + off + need > h.data_end() {
        return None;
    }
    Some((data + off) as *mut T)
}

#[inline(always)]
fn read<H: Hook, T: Copy>(h: &H, off: usize) -> Option<T> {
    // SAFETY: `ptr` checked the bounds.
    ptr::<H, T>(h, off).map(|p| unsafe { p.read_unaligned() })
}

#[inline(always)]
fn write<H: Hook, T: Copy>(h: &H, off: usize, v: T) -> bool {
    match ptr::<H, T>(h, off) {
        // SAFETY: `ptr` checked the bounds.
        Some(p) => {
            unsafe { p.write_unaligned(v) };
            true
        }
        None => false,
    }
}

/// Offset of the L3 header judging by the inline VLAN tags (for the shift a
/// push/pop caused).
#[inline(always)]
fn tags_end<H: Hook>(h: &H) -> usize {
    let mut off = 12;
    for _ in 0..3 {
        match read::<H, u16>(h, off) {
            Some(t) if t == ETH_TYPE_VLAN_8021Q.to_be() || t == ETH_TYPE_VLAN_8021AD.to_be() => off += 4,
            _ => break,
        }
    }
    off
}

/// Offset of the L4 checksum for a protocol, and whether it is UDP-style
/// (zero = none).
#[inline(always)]
fn l4_csum_off(proto: u8) -> Option<(usize, bool)> {
    match proto {
        IPPROTO_TCP => Some((16, false)),
        IPPROTO_UDP => Some((6, true)),
        IPPROTO_ICMPV6 => Some((2, false)),
        _ => None,
    }
}

/// Where the headers are now, and what they are.
#[repr(C)]
pub struct Ctx {
    l3: usize,
    l4: usize,
    proto: u8,
    is_v4: bool,
    is_v6: bool,
}

/// Replaces a 32-bit word of an address at `off`, fixing checksums.
#[inline(always)]
fn set_addr_word<H: Hook>(h: &mut H, c: &Ctx, off: usize, new: u32) -> bool {
    let Some(old) = read::<H, u32>(h, off) else { return false };
    if !write(h, off, new) {
        return false;
    }
    if c.is_v4 && !h.l3_csum(c.l3 + 10, old, new, 4) {
        return false;
    }
    if c.l4 != 0 {
        // ICMPv4 has no pseudo header.
        if let Some((co, udp)) = l4_csum_off(c.proto) {
            if !(c.is_v4 && c.proto == IPPROTO_ICMPV6) && !h.l4_csum(c.l4 + co, old, new, 4, true, udp) {
                return false;
            }
        }
    }
    true
}

#[inline(always)]
fn set_port<H: Hook>(h: &mut H, c: &Ctx, off: usize, new: u16) -> bool {
    if c.l4 == 0 {
        return false;
    }
    let Some(old) = read::<H, u16>(h, c.l4 + off) else { return false };
    if !write(h, c.l4 + off, new) {
        return false;
    }
    match c.proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let (co, udp) = if c.proto == IPPROTO_TCP { (16, false) } else { (6, true) };
            h.l4_csum(c.l4 + co, old as u32, new as u32, 2, false, udp)
        }
        _ => false,
    }
}

/// Rewrites one byte of the IPv4 header (TOS at 1, TTL at 8) under `mask`,
/// fixing the header checksum through the 16-bit word that holds it.
#[inline(always)]
fn set_v4_byte<H: Hook>(h: &mut H, c: &Ctx, byte: usize, val: u8, mask: u8) -> bool {
    let woff = c.l3 + (byte & !1);
    let Some(old_w) = read::<H, u16>(h, woff) else { return false };
    let Some(old) = read::<H, u8>(h, c.l3 + byte) else { return false };
    if !write(h, c.l3 + byte, (old & !mask) | (val & mask)) {
        return false;
    }
    let Some(new_w) = read::<H, u16>(h, woff) else { return false };
    h.l3_csum(c.l3 + 10, old_w as u32, new_w as u32, 2)
}

#[inline(always)]
fn set_v6_tclass<H: Hook>(h: &mut H, c: &Ctx, val: u8, mask: u8) -> bool {
    let Some(w) = read::<H, u32>(h, c.l3) else { return false };
    let w = u32::from_be(w);
    let old = (w >> 20) as u8;
    let new = (old & !mask) | (val & mask);
    write(h, c.l3, ((w & !0x0ff0_0000) | ((new as u32) << 20)).to_be())
}

/// Decrements TTL / hop limit; false when it would reach zero (the packet is
/// then dropped, OVS's `dec_ttl(le_1(drop))`).
#[inline(always)]
fn dec_ttl<H: Hook>(h: &mut H, c: &Ctx) -> bool {
    if c.is_v4 {
        let Some(ttl) = read::<H, u8>(h, c.l3 + 8) else { return false };
        if ttl <= 1 {
            return false;
        }
        set_v4_byte(h, c, 8, ttl - 1, 0xff)
    } else if c.is_v6 {
        let Some(hl) = read::<H, u8>(h, c.l3 + 7) else { return false };
        if hl <= 1 {
            return false;
        }
        write(h, c.l3 + 7, hl - 1)
    } else {
        false
    }
}

#[inline(always)]
fn apply<H: Hook>(h: &mut H, c: &mut Ctx, a: &Action) -> bool {
    let d = &a.data;
    match a.kind {
        SET_ETH_SRC => write(h, 6, [d[0], d[1], d[2], d[3], d[4], d[5]]),
        SET_ETH_DST => write(h, 0, [d[0], d[1], d[2], d[3], d[4], d[5]]),
        SET_IPV4_SRC if c.is_v4 => set_addr_word(h, c, c.l3 + 12, u32::from_ne_bytes([d[0], d[1], d[2], d[3]])),
        SET_IPV4_DST if c.is_v4 => set_addr_word(h, c, c.l3 + 16, u32::from_ne_bytes([d[0], d[1], d[2], d[3]])),
        SET_IPV4_TOS if c.is_v4 => set_v4_byte(h, c, 1, a.arg as u8, (a.arg >> 8) as u8),
        SET_IPV4_TTL if c.is_v4 => set_v4_byte(h, c, 8, a.arg as u8, (a.arg >> 8) as u8),
        SET_IPV6_SRC | SET_IPV6_DST if c.is_v6 => {
            let base = c.l3 + if a.kind == SET_IPV6_SRC { 8 } else { 24 };
            set_addr_word(h, c, base, u32::from_ne_bytes([d[0], d[1], d[2], d[3]]))
                && set_addr_word(h, c, base + 4, u32::from_ne_bytes([d[4], d[5], d[6], d[7]]))
                && set_addr_word(h, c, base + 8, u32::from_ne_bytes([d[8], d[9], d[10], d[11]]))
                && set_addr_word(h, c, base + 12, u32::from_ne_bytes([d[12], d[13], d[14], d[15]]))
        }
        SET_IPV6_TCLASS if c.is_v6 => set_v6_tclass(h, c, a.arg as u8, (a.arg >> 8) as u8),
        SET_IPV6_HLIMIT if c.is_v6 => {
            let Some(old) = read::<H, u8>(h, c.l3 + 7) else { return false };
            let mask = (a.arg >> 8) as u8;
            write(h, c.l3 + 7, (old & !mask) | (a.arg as u8 & mask))
        }
        SET_TP_SRC => set_port(h, c, 0, u16::from_ne_bytes([d[0], d[1]])),
        SET_TP_DST => set_port(h, c, 2, u16::from_ne_bytes([d[0], d[1]])),
        DEC_TTL => dec_ttl(h, c),
        PUSH_VLAN | POP_VLAN => {
            let before = tags_end(h);
            let ok = if a.kind == PUSH_VLAN {
                h.push_vlan(((a.arg >> 16) as u16).to_be(), (a.arg as u16) & !VLAN_CFI)
            } else {
                h.pop_vlan()
            };
            let after = tags_end(h);
            if c.l3 != 0 {
                c.l3 = (c.l3 + after).wrapping_sub(before) & 0xfff;
            }
            if c.l4 != 0 {
                c.l4 = (c.l4 + after).wrapping_sub(before) & 0xfff;
            }
            ok
        }
        _ => false,
    }
}

/// The action loop's state. It lives in the per-CPU scratch map rather than on
/// the stack: the verifier then sees one generic state at the loop whatever path
/// the parse took, instead of re-checking the actions for every header layout.
#[repr(C)]
pub struct ExecState {
    pub c: Ctx,
    pub n: u32,
    /// 0: go on, 1: drop, 2: redirect with `ret`.
    pub verdict: u32,
    pub ret: u32,
}

/// The pointers the callback needs (pointers can't be stored in a map).
struct Exec {
    ctx: *mut c_void,
    flow: *const FlowEntry,
    scratch: *mut Scratch,
}

/// One action (a `bpf_loop` callback, so the verifier checks the action code
/// once rather than once per position in the list); 1 stops the loop.
extern "C" fn exec_step<H: Hook>(i: u64, p: *mut c_void) -> i64 {
    // SAFETY: p is the `Exec` on the program's stack; its pointers are the
    // program context, a megaflow map value and the per-CPU scratch value, all
    // valid for this run.
    let e = unsafe { &mut *(p as *mut Exec) };
    let mut h = unsafe { H::from_raw(e.ctx) };
    let flow = unsafe { &*e.flow };
    let s = unsafe { &mut *e.scratch };
    let idx = i as usize;
    if idx >= MAX_ACTIONS {
        return 1;
    }
    let a = &flow.actions[idx];
    let last = i + 1 >= s.exec.n as u64;
    match a.kind {
        OUTPUT => {
            if let Some(v) = h.output(a.arg, last) {
                match v {
                    Verdict::Redirect(r) => {
                        s.exec.verdict = 2;
                        s.exec.ret = r;
                    }
                    _ => s.exec.verdict = 1,
                }
                return 1;
            }
        }
        USERSPACE => upcall::send(&h, &s.key, UPCALL_ACTION, a.arg),
        _ => {
            if !apply(&mut h, &mut s.exec.c, a) {
                maps::count(counter::ACTION_ERR);
                s.exec.verdict = 1;
                return 1;
            }
        }
    }
    0
}

pub fn execute<H: Hook>(h: &mut H, flow: &FlowEntry, s: &mut Scratch, lay: Layout) -> Verdict {
    let n = flow.n_actions;
    if n == 0 {
        maps::count(counter::DROP_ACTION);
        return Verdict::Drop;
    }
    // The common case, a flow that only forwards: no loop to set up.
    if n == 1 && flow.actions[0].kind == OUTPUT {
        return h.output(flow.actions[0].arg, true).unwrap_or(Verdict::Drop);
    }
    let et = u16::from_be(s.key.eth_type);
    s.exec = ExecState {
        c: Ctx {
            l3: lay.l3 as usize,
            l4: lay.l4 as usize,
            proto: s.key.nw_proto,
            is_v4: et == ETH_TYPE_IP && lay.l3 != 0,
            is_v6: et == ETH_TYPE_IPV6 && lay.l3 != 0,
        },
        n,
        verdict: 0,
        ret: 0,
    };
    let mut e = Exec { ctx: h.raw(), flow: flow as *const FlowEntry, scratch: s as *mut Scratch };
    let n = if n as usize > MAX_ACTIONS { MAX_ACTIONS as u32 } else { n };
    // SAFETY: exec_step only touches the Exec and what its pointers point at.
    unsafe { bpf_loop(n, exec_step::<H> as *mut c_void, &mut e as *mut Exec as *mut c_void, 0) };
    match s.exec.verdict {
        2 => Verdict::Redirect(s.exec.ret),
        // Actions that end without an output drop the packet, as in OVS.
        _ => Verdict::Drop,
    }
}
