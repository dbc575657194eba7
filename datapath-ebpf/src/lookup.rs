//! Megaflow lookup: the per-CPU last-hit cache, the first (most-hit) mask,
//! the per-CPU exact-match cache, then the other masks walked most-hit first.
//! Megaflows never overlap, so the first hit is the answer.
use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;
use oxvs_dp_abi::*;

use crate::maps::{
    self, OXVS_EMC, OXVS_FLOW_GEN, OXVS_FLOWS, OXVS_LAST_HIT, OXVS_MASK_FLT, OXVS_MASK_HITS, OXVS_MASK_ORDER, OXVS_MASKS,
    Scratch,
};

/// The exact-match cache's index hash of the whole key (words hashed
/// independently, as `masked_hash` does, then folded).
#[inline(always)]
fn key_hash(k: &FlowKey) -> u32 {
    let w = k.words();
    let mut h: u64 = 0;
    for (i, x) in w.iter().enumerate() {
        h = h.wrapping_add(word_hash(i, *x));
    }
    (h ^ (h >> 29) ^ (h >> 47)) as u32
}

#[inline(always)]
fn key_eq(a: &FlowKey, b: &FlowKey) -> bool {
    let (a, b) = (a.words(), b.words());
    let mut diff = 0u64;
    for i in 0..FLOW_KEY_WORDS {
        diff |= a[i] ^ b[i];
    }
    diff == 0
}

/// Probes mask `mask_id`: with `filter`, the mask's filter bit for
/// `megaflow_hash(mask_id, key, mask)` (clear: a miss without a lookup;
/// skipped where a hit is expected), the megaflow hash by that
/// key, then the entry's mask id and masked key compared (a hash collision is
/// a miss for this mask). Leaves the lookup key in `s.lookup`.
#[inline(always)]
fn probe(s: &mut Scratch, ctr: *mut DpCounters, mask_id: u32, filter: bool) -> Option<*const FlowEntry> {
    let m = OXVS_MASKS.get(mask_id)?;
    let hash = megaflow_hash(mask_id, &s.key, &m.mask);
    s.lookup.hash = hash;
    maps::bump(ctr, counter::MASK_LOOKUPS);
    if filter {
        let (word, bit) = filter_pos(mask_id, hash);
        if let Some(w) = OXVS_MASK_FLT.get(word) {
            if *w & (1u64 << bit) == 0 {
                return None; // no flow of this mask has this hash
            }
        }
    }
    let f = OXVS_FLOWS.get_ptr(&s.lookup)?;
    // SAFETY: a megaflow map value, valid for this run.
    if unsafe { (*f).mask_id } != mask_id {
        return None;
    }
    // SAFETY: as above.
    if masked_eq(&s.key, &m.mask, unsafe { &(*f).key }) { Some(f) } else { None }
}

/// `key & mask == flow_key` (a flow's key is stored masked, so a word the
/// mask clears is 0 there and always equal). Those words are skipped, with
/// their loads: most masks keep a few of the 13 (test runs: the 16-mask walk
/// 460 → 435 ns, a miss 453 → 403).
#[inline(always)]
fn masked_eq(key: &FlowKey, mask: &FlowKey, flow_key: &FlowKey) -> bool {
    let (k, mw, fk) = (key.words(), mask.words(), flow_key.words());
    let mut diff = 0u64;
    for i in 0..FLOW_KEY_WORDS {
        if mw[i] != 0 {
            diff |= (k[i] & mw[i]) ^ fk[i];
        }
    }
    diff == 0
}

/// The exact-match cache's answer: the entry's mask probed again (a stale
/// entry costs a probe, never a wrong flow). Kept out of line from `lookup`
/// so no value lives across its branches (LLVM spills an undefined register
/// there, which the verifier refuses).
#[inline(always)]
fn emc_probe(s: &mut Scratch, ctr: *mut DpCounters, generation: u32) -> Option<*const FlowEntry> {
    let e = OXVS_EMC.get(key_hash(&s.key) & (EMC_ENTRIES - 1))?;
    if e.generation != generation || !key_eq(&e.key, &s.key) {
        return None;
    }
    let id = e.mask_id;
    let f = probe(s, ctr, id, false)?;
    maps::bump(ctr, counter::EMC_HIT);
    hit_mask(id);
    Some(f)
}

#[inline(always)]
fn emc_insert(s: &Scratch, mask_id: u32, generation: u32) {
    if let Some(e) = OXVS_EMC.get_ptr_mut(key_hash(&s.key) & (EMC_ENTRIES - 1)) {
        // SAFETY: per-CPU value, no concurrent writer.
        let e = unsafe { &mut *e };
        crate::copy_words(&mut e.key, &s.key);
        e.mask_id = mask_id;
        e.generation = generation;
    }
}

struct Walk {
    scratch: *mut Scratch,
    ctr: *mut DpCounters,
    found: u32,
    mask_id: u32,
}

/// One step of the mask walk past the first mask (a `bpf_loop` callback): 1
/// stops the loop. The verifier does not carry a map-value pointer out of the
/// callback, so it leaves the hit's mask id, and `s.lookup` still holds the
/// masked key that hit.
extern "C" fn walk_step(i: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: ctx is the `Walk` on the caller's stack, passed to bpf_loop below;
    // its scratch pointer is this CPU's scratch value.
    let w = unsafe { &mut *(ctx as *mut Walk) };
    let Some(id) = OXVS_MASK_ORDER.get(i as u32 + 1) else { return 1 };
    let id = *id;
    // SAFETY: see above.
    let s = unsafe { &mut *w.scratch };
    if probe(s, w.ctr, id, true).is_some() {
        w.found = 1;
        w.mask_id = id;
        return 1;
    }
    0
}

#[inline(always)]
fn hit_mask(mask_id: u32) {
    if let Some(c) = OXVS_MASK_HITS.get_ptr_mut(mask_id) {
        // SAFETY: per-CPU value, no concurrent writer.
        unsafe { *c += 1 };
    }
}

/// The megaflow for the key in `s`. With the last-hit cache on, a packet of
/// the flow this CPU's packets keep hitting skips the hashing and the hash
/// map: one masked compare against the cached copy.
#[inline(always)]
pub fn lookup(s: &mut Scratch, ctr: *mut DpCounters) -> Option<*const FlowEntry> {
    let cfg = maps::config()?;
    if cfg.flags & DP_F_NO_LAST_HIT != 0 {
        return walk_masks(s, ctr, cfg);
    }
    // The generation is read before any lookup: a copy made below is then
    // stamped no newer than the flow it copies.
    let generation = *OXVS_FLOW_GEN.get(0)?;
    let c = OXVS_LAST_HIT.get_ptr_mut(0)?;
    // SAFETY: this CPU's value, no concurrent writer; valid for this run.
    let c = unsafe { &mut *c };
    if c.valid != 0 && c.generation == generation {
        maps::bump(ctr, counter::MASK_LOOKUPS);
        if masked_eq(&s.key, &c.mask, &c.flow.key) {
            maps::bump(ctr, counter::LAST_HIT);
            hit_mask(c.flow.mask_id);
            c.streak = 0;
            return Some(&c.flow as *const FlowEntry);
        }
    }
    let f = walk_masks(s, ctr, cfg)?;
    // SAFETY: a megaflow map value, valid for this run.
    let slot1 = unsafe { (*f).slot } + 1;
    if c.streak == slot1 {
        // SAFETY: a megaflow map value, valid for this run.
        let id = unsafe { (*f).mask_id };
        if let Some(m) = OXVS_MASKS.get(id) {
            crate::copy_words(&mut c.mask, &m.mask);
            // SAFETY: as above.
            crate::copy_words(&mut c.flow, unsafe { &*f });
            c.generation = generation;
            c.valid = 1;
        }
        c.streak = 0;
    } else {
        c.streak = slot1;
    }
    Some(f)
}

#[inline(always)]
fn walk_masks(s: &mut Scratch, ctr: *mut DpCounters, cfg: &DpConfig) -> Option<*const FlowEntry> {
    let n_masks = cfg.n_masks;
    let generation = cfg.emc_gen;
    if n_masks == 0 {
        return None;
    }

    // The most-hit mask first: with one mask (or a hit there) this is the
    // whole lookup, one hash probe.
    let first = *OXVS_MASK_ORDER.get(0)?;
    // With one mask the filter is skipped: there a probe mostly hits (a miss
    // goes up to userspace, which costs far more than the lookup), and the
    // filter would only add its load to every hit.
    if let Some(f) = probe(s, ctr, first, n_masks > 1) {
        hit_mask(first);
        return Some(f);
    }
    if n_masks == 1 {
        return None;
    }

    // Exact-match cache: remembers which deeper mask this exact key last hit.
    let use_emc = cfg.flags & DP_F_NO_EMC == 0;
    if use_emc {
        if let Some(f) = emc_probe(s, ctr, generation) {
            return Some(f);
        }
    }

    let mut w = Walk { scratch: s as *mut Scratch, ctr, found: 0, mask_id: 0 };
    // SAFETY: walk_step only touches the Walk and per-CPU maps.
    unsafe {
        bpf_loop(n_masks - 1, walk_step as *mut c_void, &mut w as *mut Walk as *mut c_void, 0);
    }
    if w.found == 0 {
        return None;
    }
    // The callback can't hand a map pointer back: probe the hit mask again.
    let f = probe(s, ctr, w.mask_id, false)?;
    hit_mask(w.mask_id);
    if use_emc {
        emc_insert(s, w.mask_id, generation);
    }
    Some(f)
}
