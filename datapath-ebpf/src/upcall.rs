//! Upcalls: a record with the key and the packet bytes into the ring buffer,
//! under a per-in_port token bucket. Never blocks: no room or no token means the
//! packet is dropped and counted.
use oxvs_dp_abi::*;

use crate::{
    hook::Hook,
    maps::{self, OXVS_BUCKETS, OXVS_UPCALLS},
};

/// Takes one token from `port`'s bucket; true when the upcall may go.
#[inline(always)]
fn take_token(port: u32) -> bool {
    let Some(cfg) = maps::config() else { return true };
    let rate = cfg.upcall_rate as u64;
    if rate == 0 {
        return true;
    }
    let burst = (cfg.upcall_burst.max(1) as u64) << TOKEN_SCALE_SHIFT;
    let Some(b) = OXVS_BUCKETS.get_ptr_mut(port) else { return false };
    // SAFETY: map value; concurrent CPUs may race, which only loosens the limit.
    let b = unsafe { &mut *b };
    let now = maps::now_ns();
    let elapsed = now.wrapping_sub(b.last_ns).min(4_000_000_000);
    b.last_ns = now;
    // tokens/s · ns · 2^20 / 1e9 ≈ · / 954 (1e9 / 2^20 = 953.67).
    let mut tokens = b.tokens + elapsed * rate / 954;
    if tokens > burst {
        tokens = burst;
    }
    let one = 1u64 << TOKEN_SCALE_SHIFT;
    if tokens < one {
        b.tokens = tokens;
        return false;
    }
    b.tokens = tokens - one;
    true
}

pub fn send<H: Hook>(h: &H, key: &FlowKey, reason: u32, pid: u32) {
    if !take_token(key.in_port) {
        maps::count(counter::UPCALL_RATELIMITED);
        return;
    }
    let Some(mut rec) = OXVS_UPCALLS.reserve::<UpcallRecord>(0) else {
        maps::count(counter::UPCALL_LOST);
        return;
    };
    let r = rec.as_mut_ptr();
    let len = h.len();
    let cap = if len as usize > UPCALL_MAX_BYTES { UPCALL_MAX_BYTES as u32 } else { len };
    // SAFETY: r points at a reserved record of the right size, ours until submit.
    unsafe {
        crate::copy_words(&mut (*r).key, key);
        (*r).reason = reason;
        (*r).hook = H::HOOK;
        (*r).pkt_len = len;
        (*r).pid = pid;
        (*r).meta_vlan = match h.meta_vlan() {
            Some((tpid, tci)) => ((u16::from_be(tpid) as u32) << 16) | tci as u32,
            None => 0,
        };
        // The helper wants a length the verifier can bound to [1, buffer]:
        // check n = cap - 1 against the buffer, pass n + 1.
        let mut copied = 0;
        let n = core::hint::black_box((cap as u64).wrapping_sub(1) & 0x7ff);
        if n < UPCALL_MAX_BYTES as u64 {
            let len = n as u32 + 1;
            if h.load_bytes((*r).data.as_mut_ptr(), len) == 0 {
                copied = len;
            }
        }
        (*r).cap_len = copied;
    }
    rec.submit(0);
    maps::count(counter::UPCALL);
}
