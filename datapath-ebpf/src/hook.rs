//! What differs between the XDP and the tc hook, behind one trait, so parsing,
//! lookup and actions are written once.
use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_REDIRECT},
    helpers::{
        bpf_clone_redirect, bpf_l3_csum_replace, bpf_l4_csum_replace, bpf_redirect, bpf_skb_load_bytes,
        bpf_skb_vlan_pop, bpf_skb_vlan_push, bpf_xdp_adjust_head, bpf_xdp_load_bytes,
    },
    programs::{TcContext, XdpContext},
};
use oxvs_dp_abi::{HOOK_TC, HOOK_XDP};

use crate::{csum, maps};

pub enum Verdict {
    Pass,
    Drop,
    /// The hook's own return code for a redirect.
    Redirect(u32),
}

pub trait Hook: Sized {
    const IS_XDP: bool;
    /// The raw context pointer, to rebuild the hook inside a `bpf_loop` callback.
    fn raw(&self) -> *mut core::ffi::c_void;
    /// # Safety
    /// `p` must come from `raw()` of the same hook type in this program run.
    unsafe fn from_raw(p: *mut core::ffi::c_void) -> Self;
    const HOOK: u32;
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    fn ifindex(&self) -> u32;
    /// The frame's length on the wire.
    fn len(&self) -> u32;
    /// An outer VLAN tag held outside the packet data: (tpid as on the wire, tci).
    fn meta_vlan(&self) -> Option<(u16, u16)>;
    /// Copies `len` bytes from the frame's start (1 ≤ len ≤ buffer size).
    fn load_bytes(&self, dst: *mut u8, len: u32) -> i64;
    /// Replaces a 16/32-bit field covered by the IPv4 header checksum at `csum_off`.
    fn l3_csum(&mut self, csum_off: usize, from: u32, to: u32, size: u64) -> bool;
    /// Updates the L4 checksum at `csum_off` for a changed field (`pseudo`: the
    /// field is part of the pseudo header; `udp`: a zero checksum means none).
    fn l4_csum(&mut self, csum_off: usize, from: u32, to: u32, size: u64, pseudo: bool, udp: bool) -> bool;
    fn push_vlan(&mut self, tpid_be: u16, tci: u16) -> bool;
    fn pop_vlan(&mut self) -> bool;
    /// Output to `port`; `last`: nothing follows, so the packet itself can go.
    /// Returns the verdict when `last`, else whether a copy went out.
    fn output(&mut self, port: u32, last: bool) -> Option<Verdict>;
}

pub struct XdpHook {
    pub ctx: XdpContext,
}

impl Hook for XdpHook {
    const IS_XDP: bool = true;
    #[inline(always)]
    fn raw(&self) -> *mut core::ffi::c_void {
        self.ctx.ctx as *mut _
    }
    #[inline(always)]
    unsafe fn from_raw(p: *mut core::ffi::c_void) -> Self {
        XdpHook { ctx: XdpContext::new(p as *mut _) }
    }
    const HOOK: u32 = HOOK_XDP;
    #[inline(always)]
    fn data(&self) -> usize {
        self.ctx.data()
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        self.ctx.data_end()
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: reading a context field.
        unsafe { (*self.ctx.ctx).ingress_ifindex }
    }
    #[inline(always)]
    fn len(&self) -> u32 {
        (self.ctx.data_end() - self.ctx.data()) as u32
    }
    #[inline(always)]
    fn meta_vlan(&self) -> Option<(u16, u16)> {
        None
    }
    #[inline(always)]
    fn load_bytes(&self, dst: *mut u8, len: u32) -> i64 {
        // SAFETY: dst points at a ring buffer record with room for len bytes.
        unsafe { bpf_xdp_load_bytes(self.ctx.ctx, 0, dst as *mut _, len) }
    }
    #[inline(always)]
    fn l3_csum(&mut self, csum_off: usize, from: u32, to: u32, size: u64) -> bool {
        csum::xdp_replace(self.data(), self.data_end(), csum_off, from, to, size, false)
    }
    #[inline(always)]
    fn l4_csum(&mut self, csum_off: usize, from: u32, to: u32, size: u64, _pseudo: bool, udp: bool) -> bool {
        // At XDP there is no CHECKSUM_PARTIAL state: the checksum in the frame is
        // the full one, updated incrementally (RFC 1624).
        csum::xdp_replace(self.data(), self.data_end(), csum_off, from, to, size, udp)
    }
    #[inline(always)]
    fn push_vlan(&mut self, tpid_be: u16, tci: u16) -> bool {
        // SAFETY: growing the head by 4 bytes; every packet pointer is re-derived.
        if unsafe { bpf_xdp_adjust_head(self.ctx.ctx, -4) } != 0 {
            return false;
        }
        let data = self.data();
        if data + 18 > self.data_end() {
            return false;
        }
        let p = data as *mut u8;
        // SAFETY: bounds checked above (18 bytes).
        unsafe {
            for i in 0..12 {
                *p.add(i) = *p.add(i + 4);
            }
            (p.add(12) as *mut u16).write_unaligned(tpid_be);
            (p.add(14) as *mut u16).write_unaligned(tci.to_be());
        }
        true
    }
    #[inline(always)]
    fn pop_vlan(&mut self) -> bool {
        let data = self.data();
        if data + 18 > self.data_end() {
            return false;
        }
        let p = data as *mut u8;
        // SAFETY: bounds checked above.
        unsafe {
            let t = u16::from_be((p.add(12) as *const u16).read_unaligned());
            if t != oxvs_dp_abi::ETH_TYPE_VLAN_8021Q && t != oxvs_dp_abi::ETH_TYPE_VLAN_8021AD {
                return true; // nothing to pop: OVS's pop_vlan on an untagged frame is a no-op
            }
            let mut i = 12;
            while i > 0 {
                i -= 1;
                *p.add(i + 4) = *p.add(i);
            }
            bpf_xdp_adjust_head(self.ctx.ctx, 4) == 0
        }
    }
    #[inline(always)]
    fn output(&mut self, port: u32, last: bool) -> Option<Verdict> {
        if !last {
            // Userspace marks flows with more than one output as tc-only.
            return None;
        }
        match maps::OXVS_TX_PORTS.redirect(port, 0) {
            Ok(v) => Some(Verdict::Redirect(v)),
            Err(_) => Some(Verdict::Drop),
        }
    }
}

pub struct TcHook {
    pub ctx: TcContext,
}

impl Hook for TcHook {
    const IS_XDP: bool = false;
    #[inline(always)]
    fn raw(&self) -> *mut core::ffi::c_void {
        self.ctx.skb.skb as *mut _
    }
    #[inline(always)]
    unsafe fn from_raw(p: *mut core::ffi::c_void) -> Self {
        TcHook { ctx: TcContext::new(p as *mut _) }
    }
    const HOOK: u32 = HOOK_TC;
    #[inline(always)]
    fn data(&self) -> usize {
        self.ctx.data()
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        self.ctx.data_end()
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: reading a context field.
        unsafe { (*self.ctx.skb.skb).ingress_ifindex }
    }
    #[inline(always)]
    fn len(&self) -> u32 {
        self.ctx.len()
    }
    #[inline(always)]
    fn meta_vlan(&self) -> Option<(u16, u16)> {
        // SAFETY: reading context fields.
        unsafe {
            let skb = self.ctx.skb.skb;
            if (*skb).vlan_present != 0 { Some(((*skb).vlan_proto as u16, (*skb).vlan_tci as u16)) } else { None }
        }
    }
    #[inline(always)]
    fn load_bytes(&self, dst: *mut u8, len: u32) -> i64 {
        // SAFETY: dst points at a ring buffer record with room for len bytes.
        unsafe { bpf_skb_load_bytes(self.ctx.as_ptr(), 0, dst as *mut _, len) }
    }
    #[inline(always)]
    fn l3_csum(&mut self, csum_off: usize, from: u32, to: u32, size: u64) -> bool {
        // SAFETY: helper on our own skb.
        unsafe { bpf_l3_csum_replace(self.ctx.skb.skb, csum_off as u32, from as u64, to as u64, size) == 0 }
    }
    #[inline(always)]
    fn l4_csum(&mut self, csum_off: usize, from: u32, to: u32, size: u64, pseudo: bool, udp: bool) -> bool {
        // The kernel helper knows the skb's checksum state (CHECKSUM_PARTIAL from a
        // local sender holds only the pseudo-header sum; COMPLETE needs skb->csum).
        let mut flags = size;
        if pseudo {
            flags |= BPF_F_PSEUDO_HDR as u64;
        }
        if udp {
            flags |= BPF_F_MARK_MANGLED_0 as u64;
        }
        // SAFETY: helper on our own skb.
        unsafe { bpf_l4_csum_replace(self.ctx.skb.skb, csum_off as u32, from as u64, to as u64, flags) == 0 }
    }
    #[inline(always)]
    fn push_vlan(&mut self, tpid_be: u16, tci: u16) -> bool {
        // SAFETY: helper on our own skb.
        unsafe { bpf_skb_vlan_push(self.ctx.skb.skb, tpid_be, tci) == 0 }
    }
    #[inline(always)]
    fn pop_vlan(&mut self) -> bool {
        // SAFETY: helper on our own skb.
        unsafe { bpf_skb_vlan_pop(self.ctx.skb.skb) == 0 }
    }
    #[inline(always)]
    fn output(&mut self, port: u32, last: bool) -> Option<Verdict> {
        let ifindex = maps::ifindex_of_port(port);
        if ifindex == 0 {
            return if last { Some(Verdict::Drop) } else { None };
        }
        if last {
            // SAFETY: helper without pointers.
            unsafe { bpf_redirect(ifindex, 0) };
            Some(Verdict::Redirect(TC_ACT_REDIRECT as u32))
        } else {
            // SAFETY: helper on our own skb.
            unsafe { bpf_clone_redirect(self.ctx.skb.skb, ifindex, 0) };
            None
        }
    }
}
