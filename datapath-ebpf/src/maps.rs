//! The datapath's maps. Names match `oxvs_dp_abi::maps`; sizes are defaults that
//! userspace may override at load time.
use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, DevMap, HashMap, PerCpuArray, RingBuf},
};
use oxvs_dp_abi::*;

/// The megaflow table. Not preallocated: at the default 200k capacity a
/// preallocated table would pin ~110 MB of kernel memory per datapath whatever
/// it holds; entries are allocated on insert instead (lookups cost the same).
#[map]
pub static OXVS_FLOWS: HashMap<MegaflowKey, FlowEntry> =
    HashMap::with_max_entries(DEFAULT_MAX_FLOWS, BPF_F_NO_PREALLOC);
#[map]
pub static OXVS_MASKS: Array<MaskEntry> = Array::with_max_entries(DEFAULT_MAX_MASKS, 0);
/// Position → mask id, most hit first; `DpConfig::n_masks` entries are valid.
#[map]
pub static OXVS_MASK_ORDER: Array<u32> = Array::with_max_entries(DEFAULT_MAX_MASKS, 0);
/// Per mask, a bit per slice of megaflow hashes: clear when no flow of the
/// mask has a hash in the slice (see `oxvs_dp_abi::filter_pos`), so a walk
/// past masks that don't hold the packet's flow mostly skips their hash
/// lookups. An array: the verifier inlines its lookup.
#[map]
pub static OXVS_MASK_FLT: Array<u64> =
    Array::with_max_entries(DEFAULT_MAX_MASKS * FILTER_WORDS_PER_MASK, 0);
/// Hits per mask id, for userspace to keep the order most-hit first.
#[map]
pub static OXVS_MASK_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DEFAULT_MAX_MASKS, 0);
#[map]
pub static OXVS_FLOW_STATS: PerCpuArray<FlowStats> = PerCpuArray::with_max_entries(DEFAULT_MAX_FLOWS, 0);
#[map]
pub static OXVS_EMC: PerCpuArray<EmcEntry> = PerCpuArray::with_max_entries(EMC_ENTRIES, 0);
#[map]
pub static OXVS_LAST_HIT: PerCpuArray<LastHit> = PerCpuArray::with_max_entries(1, 0);
/// Slot 0: the flow generation, which userspace bumps (an atomic add on its
/// mmap of this map: no syscall, and safe between processes) after every
/// change to the flow table; a last-hit copy made under an older one is stale.
#[map]
pub static OXVS_FLOW_GEN: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);
#[map]
pub static OXVS_CONFIG: Array<DpConfig> = Array::with_max_entries(1, 0);
/// Port number → ifindex (the tc hook redirects by ifindex).
#[map]
pub static OXVS_PORTS: Array<PortInfo> = Array::with_max_entries(MAX_PORTS, 0);
/// Port number → device, for XDP redirects.
#[map]
pub static OXVS_TX_PORTS: DevMap = DevMap::with_max_entries(MAX_PORTS, 0);
/// ifindex → port number, for ifindexes ≥ IFPORT_ARRAY_SIZE (and for
/// userspace to list ports).
#[map]
pub static OXVS_IFPORT: HashMap<u32, u32> = HashMap::with_max_entries(MAX_PORTS, 0);
/// ifindex → port number + 1 (0: not a port), for small ifindexes: an array
/// lookup is inlined by the verifier, a hash lookup is a call and a hash.
#[map]
pub static OXVS_IFPORT_A: Array<u32> = Array::with_max_entries(IFPORT_ARRAY_SIZE, 0);
#[map]
pub static OXVS_UPCALLS: RingBuf = RingBuf::with_byte_size(UPCALL_RING_BYTES, 0);
#[map]
pub static OXVS_BUCKETS: Array<UpcallBucket> = Array::with_max_entries(MAX_PORTS, 0);
#[map]
pub static OXVS_COUNTERS: PerCpuArray<DpCounters> = PerCpuArray::with_max_entries(1, 0);

/// Written by `oxvs_clock`, read by userspace.
#[map]
pub static OXVS_CLOCK: Array<ClockSample> = Array::with_max_entries(1, 0);

/// The actions of one `execute` call (written by userspace under a lock).
#[map]
pub static OXVS_EXEC: Array<FlowEntry> = Array::with_max_entries(1, 0);

/// Per-CPU working space, so the 104-byte key and the 112-byte lookup key don't
/// live on the 512-byte BPF stack.
#[repr(C)]
pub struct Scratch {
    pub key: FlowKey,
    pub lookup: MegaflowKey,
    pub exec: crate::actions::ExecState,
}

#[map]
pub static OXVS_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn scratch() -> Option<*mut Scratch> {
    OXVS_SCRATCH.get_ptr_mut(0)
}

#[inline(always)]
pub fn config() -> Option<&'static DpConfig> {
    OXVS_CONFIG.get(0)
}

/// This CPU's counters; the packet path looks them up once and bumps them
/// through the pointer.
#[inline(always)]
pub fn counters() -> Option<*mut DpCounters> {
    OXVS_COUNTERS.get_ptr_mut(0)
}

/// Bumps one counter (for the paths that don't hold the pointer already).
#[inline(always)]
pub fn count(idx: u32) {
    if let Some(c) = counters() {
        bump(c, idx);
    }
}

#[inline(always)]
pub fn bump(c: *mut DpCounters, idx: u32) {
    if idx < counter::N {
        // SAFETY: a per-CPU value (no concurrent writer), index checked.
        unsafe { (*c).n[idx as usize] += 1 };
    }
}

#[inline(always)]
pub fn port_of_ifindex(ifindex: u32) -> Option<u32> {
    if ifindex < IFPORT_ARRAY_SIZE {
        let p = *OXVS_IFPORT_A.get(ifindex)?;
        return if p == 0 { None } else { Some(p - 1) };
    }
    // SAFETY: a plain u32 value copied out at once.
    unsafe { OXVS_IFPORT.get(&ifindex).copied() }
}

#[inline(always)]
pub fn ifindex_of_port(port: u32) -> u32 {
    OXVS_PORTS.get(port).map(|p| p.ifindex).unwrap_or(0)
}

#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// Jiffies: good to a tick, as OVS keeps a flow's `used`, and the verifier
/// inlines the helper into a load of `jiffies_64` (the coarse clock helper is
/// a call that cost ~14 ns per packet).
#[inline(always)]
pub fn jiffies() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_jiffies64() }
}

/// Adds one packet to a flow's per-CPU stats.
#[inline(always)]
pub fn account(slot: u32, len: u32, tcp_flags_be: u16) {
    if let Some(s) = OXVS_FLOW_STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU value, no concurrent writer.
        unsafe {
            (*s).packets += 1;
            (*s).bytes += len as u64;
            (*s).used_jiffies = jiffies();
            (*s).tcp_flags |= u16::from_be(tcp_flags_be);
        }
    }
}
