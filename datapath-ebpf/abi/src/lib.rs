//! oxvs-dp-abi: the `#[repr(C)]` types the eBPF datapath and userspace share.
//!
//! Everything here is plain old data with explicit padding, so the same bytes mean
//! the same thing on both sides of a map. Multi-byte packet fields are kept in
//! network byte order exactly as they appear on the wire (like OVS's `struct flow`
//! with its `ovs_be16`/`ovs_be32` members); metadata (`in_port`) is host order.
#![no_std]

/// Number of 64-bit words in a [`FlowKey`]; masking works word by word.
pub const FLOW_KEY_WORDS: usize = 13;

/// The datapath's flow key: what `flow_extract` fills from a packet.
///
/// The layout is fixed (104 bytes, 8-byte aligned, no implicit padding) because
/// masks are applied as `key[i] & mask[i]` over [`FLOW_KEY_WORDS`] u64 words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Datapath port number the packet came in on (host order).
    pub in_port: u32,
    /// Ethertype after any VLAN tags (big endian). 0x05ff for 802.2 frames
    /// without SNAP (OVS's FLOW_DL_TYPE_NONE), 0 when the frame is shorter than
    /// an Ethernet header.
    pub eth_type: u16,
    /// IP protocol, or the low byte of the ARP opcode.
    pub nw_proto: u8,
    /// `FRAG_ANY` | `FRAG_LATER`.
    pub nw_frag: u8,
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    /// VLAN TCIs, outermost first, big endian, with `VLAN_CFI` set when the tag is
    /// present (OVS's convention, so a zero TCI means "no tag").
    pub vlan_tci: [u16; 2],
    /// The TPIDs of those tags (big endian): 0x8100 or 0x88a8.
    pub vlan_tpid: [u16; 2],
    /// IPv4 TOS / IPv6 traffic class (DSCP and ECN).
    pub nw_tos: u8,
    /// IPv4 TTL / IPv6 hop limit.
    pub nw_ttl: u8,
    /// TCP flags (big endian, low 12 bits).
    pub tcp_flags: u16,
    /// IPv4 source in the first 4 bytes, or the IPv6 source; ARP SPA.
    pub nw_src: [u8; 16],
    /// IPv4 destination in the first 4 bytes, or the IPv6 destination; ARP TPA.
    pub nw_dst: [u8; 16],
    /// IPv6 flow label (big endian, low 20 bits).
    pub ipv6_label: u32,
    /// L4 source port, or ICMP type (big endian 16 bits, as OVS keeps it).
    pub tp_src: u16,
    /// L4 destination port, or ICMP code.
    pub tp_dst: u16,
    /// ARP SHA, or ND source link-layer address.
    pub arp_sha: [u8; 6],
    /// ARP THA, or ND target link-layer address.
    pub arp_tha: [u8; 6],
    /// ND target address.
    pub nd_target: [u8; 16],
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == FLOW_KEY_WORDS * 8);

impl FlowKey {
    pub const fn zeroed() -> Self {
        FlowKey {
            in_port: 0,
            eth_type: 0,
            nw_proto: 0,
            nw_frag: 0,
            eth_src: [0; 6],
            eth_dst: [0; 6],
            vlan_tci: [0; 2],
            vlan_tpid: [0; 2],
            nw_tos: 0,
            nw_ttl: 0,
            tcp_flags: 0,
            nw_src: [0; 16],
            nw_dst: [0; 16],
            ipv6_label: 0,
            tp_src: 0,
            tp_dst: 0,
            arp_sha: [0; 6],
            arp_tha: [0; 6],
            nd_target: [0; 16],
            _pad: 0,
        }
    }

    /// The key as words, for masking and hashing.
    pub fn words(&self) -> &[u64; FLOW_KEY_WORDS] {
        // SAFETY: FlowKey is repr(C, align(8)), exactly FLOW_KEY_WORDS*8 bytes, and
        // every bit pattern is a valid u64.
        unsafe { &*(self as *const FlowKey as *const [u64; FLOW_KEY_WORDS]) }
    }

    pub fn words_mut(&mut self) -> &mut [u64; FLOW_KEY_WORDS] {
        // SAFETY: as in `words`; every bit pattern is also a valid FlowKey (all
        // fields are integers or byte arrays).
        unsafe { &mut *(self as *mut FlowKey as *mut [u64; FLOW_KEY_WORDS]) }
    }

    /// `self & mask`, word by word.
    pub fn masked(&self, mask: &FlowKey) -> FlowKey {
        let mut out = *self;
        let m = mask.words();
        for (w, m) in out.words_mut().iter_mut().zip(m.iter()) {
            *w &= *m;
        }
        out
    }
}

/// `nw_frag` bits, as OVS's FLOW_NW_FRAG_*.
pub const FRAG_ANY: u8 = 1;
pub const FRAG_LATER: u8 = 2;
/// The "tag present" bit of a TCI, as OVS uses it in flow keys.
pub const VLAN_CFI: u16 = 0x1000;

pub const ETH_TYPE_IP: u16 = 0x0800;
pub const ETH_TYPE_ARP: u16 = 0x0806;
pub const ETH_TYPE_RARP: u16 = 0x8035;
pub const ETH_TYPE_IPV6: u16 = 0x86dd;
pub const ETH_TYPE_VLAN_8021Q: u16 = 0x8100;
pub const ETH_TYPE_VLAN_8021AD: u16 = 0x88a8;
/// OVS's FLOW_DL_TYPE_NONE: an 802.2 frame that is not SNAP-encapsulated Ethernet II.
pub const ETH_TYPE_NONE: u16 = 0x05ff;
pub const ETH_TYPE_MIN: u16 = 0x0600;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;
pub const IPPROTO_ICMPV6: u8 = 58;

/// The megaflow hash's key: [`megaflow_hash`], a 64-bit hash of the key
/// masked by a mask, salted by the mask's id. Eight bytes keep the kernel's
/// hash of the lookup key cheap (hashing the whole 104-byte masked key cost
/// ~40 ns per probe; 16 bytes still took a round of mixing more than 8). The
/// entry holds the mask id and the masked key, which the datapath compares
/// to rule out a collision; userspace refuses to install a flow whose key
/// collides with another flow's.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MegaflowKey {
    pub hash: u64,
}

/// Distinct per mask id, so two masks' flows with equal masked keys (say,
/// under two masks that both clear every word) get different keys.
#[inline(always)]
pub fn mask_salt(mask_id: u32) -> u64 {
    (mask_id as u64 + 1).wrapping_mul(0x9fb2_1c65_1e98_df25)
}

/// The megaflow key of `key` under mask `mask_id` (`mask`), the same on both
/// sides of the map.
#[inline(always)]
pub fn megaflow_hash(mask_id: u32, key: &FlowKey, mask: &FlowKey) -> u64 {
    masked_hash(key, mask) ^ mask_salt(mask_id)
}

/// Odd multipliers, one per key word, so equal values in different words
/// hash differently.
const WORD_MUL: [u64; FLOW_KEY_WORDS] = [
    0x9e37_79b9_7f4a_7c15,
    0xbf58_476d_1ce4_e5b9,
    0x94d0_49bb_1331_11eb,
    0xd6e8_feb8_6659_fd93,
    0xa076_1d64_78bd_642f,
    0xe703_7ed1_a0b4_28db,
    0x8ebc_6af0_9c88_c6e3,
    0x5899_65cc_7537_4cc3,
    0x1d8e_4e27_c47d_124f,
    0xc2b2_ae3d_27d4_eb4f,
    0x1656_67b1_9e37_79f9,
    0x27d4_eb2f_1656_67c5,
    0x85eb_ca77_c2b2_ae63,
];

/// One word's share of a key hash: a bijection of `x` (an odd multiply, then
/// the high half folded into the low), 0 for 0.
#[inline(always)]
pub fn word_hash(i: usize, x: u64) -> u64 {
    let y = x.wrapping_mul(WORD_MUL[i]);
    y ^ (y >> 32)
}

/// The hash of `key & mask`, the same on both sides of the map: the sum of
/// the words' [`word_hash`]es. The words hash independently (no chain of
/// multiplies, each waiting for the last), and a word the mask clears adds 0,
/// so the datapath skips those words: most masks keep a few of the 13. Two
/// keys that differ in one word never collide (`word_hash` is a bijection);
/// the datapath compares the full masked key anyway.
#[inline(always)]
pub fn masked_hash(key: &FlowKey, mask: &FlowKey) -> u64 {
    let (k, m) = (key.words(), mask.words());
    let mut h: u64 = 0;
    let mut i = 0;
    while i < FLOW_KEY_WORDS {
        if m[i] != 0 {
            h = h.wrapping_add(word_hash(i, k[i] & m[i]));
        }
        i += 1;
    }
    h
}

/// Words (of 64 bits) of one mask's filter in the mask filter map: 8192 bits.
pub const FILTER_WORDS_PER_MASK: u32 = 128;

/// Where a megaflow key's bit lies in the mask filter: (word, bit). Mask
/// `mask_id` owns words `mask_id * FILTER_WORDS_PER_MASK ..` of the map; the
/// bit comes from the hash's top 13 bits. Userspace sets a flow's bit before
/// it inserts the flow and clears it (when no other flow of the mask shares
/// it) after it deleted the flow, so a clear bit means "no flow of this mask
/// has this key": the datapath skips the hash lookup. A set bit may be a
/// false positive (another flow's bit), which costs the lookup only.
#[inline(always)]
pub fn filter_pos(mask_id: u32, megaflow_hash: u64) -> (u32, u32) {
    // Mixed once more: keys that differ in one field differ in few hash bits.
    let b = (megaflow_hash.wrapping_mul(0xd6e8_feb8_6659_fd93) >> 51) as u32;
    (mask_id.wrapping_mul(FILTER_WORDS_PER_MASK).wrapping_add(b >> 6), b & 63)
}

/// One mask in the masks array (indexed by mask id).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MaskEntry {
    pub mask: FlowKey,
}

/// Maximum actions per flow. Long action lists (e.g. a flood to many ports) are
/// the kind that OVS would also split; 16 covers the cases.
pub const MAX_ACTIONS: usize = 16;

/// Action kinds. The numbering is ours (not OVS_ACTION_ATTR_*): this is a
/// fixed-size encoding the eBPF program can walk in a bounded loop.
pub mod action {
    pub const OUTPUT: u8 = 1;
    pub const USERSPACE: u8 = 2;
    pub const PUSH_VLAN: u8 = 3;
    pub const POP_VLAN: u8 = 4;
    pub const SET_ETH_SRC: u8 = 5;
    pub const SET_ETH_DST: u8 = 6;
    pub const SET_IPV4_SRC: u8 = 7;
    pub const SET_IPV4_DST: u8 = 8;
    pub const SET_IPV4_TOS: u8 = 9;
    pub const SET_IPV4_TTL: u8 = 10;
    pub const SET_IPV6_SRC: u8 = 11;
    pub const SET_IPV6_DST: u8 = 12;
    pub const SET_IPV6_TCLASS: u8 = 13;
    pub const SET_IPV6_HLIMIT: u8 = 14;
    pub const SET_TP_SRC: u8 = 15;
    pub const SET_TP_DST: u8 = 16;
    pub const DEC_TTL: u8 = 17;
}

/// One datapath action.
///
/// `arg` is the output port, the userspace pid, the new TCI (push_vlan, with
/// `VLAN_CFI`), the TPID in the high 16 bits for push_vlan, or a one-byte value
/// (tos, ttl, tclass, hlimit) with its mask in bits 8..16; `data` holds addresses
/// and ports in network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Action {
    pub kind: u8,
    pub _pad: [u8; 3],
    pub arg: u32,
    pub data: [u8; 16],
}

/// `FlowEntry::flags`: the flow's actions can't run at XDP (more than one
/// output, or an output that is not last); XDP passes the packet to the tc hook.
pub const FLOW_F_TC_ONLY: u32 = 1;

/// The megaflow hash's value: the masked key it matches, where the flow's
/// stats live, and what to do.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    /// The flow's key, already masked (`key & mask`).
    pub key: FlowKey,
    /// Index into the per-CPU flow stats array; allocated by userspace.
    pub slot: u32,
    pub flags: u32,
    pub n_actions: u32,
    /// The id of the flow's mask (part of what a lookup compares).
    pub mask_id: u32,
    pub actions: [Action; MAX_ACTIONS],
}

impl Default for FlowEntry {
    fn default() -> Self {
        FlowEntry {
            key: FlowKey::zeroed(),
            slot: 0,
            flags: 0,
            n_actions: 0,
            mask_id: 0,
            actions: [Action::default(); MAX_ACTIONS],
        }
    }
}

/// Per-CPU, per-slot flow statistics.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowStats {
    pub packets: u64,
    pub bytes: u64,
    /// `bpf_jiffies64()` at the last hit, 0 = never. Jiffies because reading
    /// them is inlined (a load), where a clock helper cost ~14 ns a packet;
    /// userspace converts them to CLOCK_MONOTONIC with a [`ClockSample`].
    pub used_jiffies: u64,
    /// OR of the TCP flags seen (host order).
    pub tcp_flags: u16,
    pub _pad: [u8; 6],
}

/// Exact-match cache entry (per CPU): the full key and the mask id it last hit.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EmcEntry {
    pub key: FlowKey,
    pub mask_id: u32,
    /// Equal to `DpConfig::emc_gen` when valid.
    pub generation: u32,
}

/// The last-hit cache (per CPU): a copy of the megaflow this CPU's packets
/// keep hitting, tried before any hash lookup. A copy, not a reference (a
/// map can't hold a pointer to another map's value), so it is valid only
/// while `generation` equals the flow generation (`FLOW_GEN`), which
/// userspace bumps after every change to the flow table.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LastHit {
    /// The flow generation the copy was made under.
    pub generation: u64,
    /// 1 when `flow` holds a copy.
    pub valid: u32,
    /// Slot + 1 of the flow the previous lookup on this CPU found by hashing
    /// (0: none, or the cache answered since). A flow is copied in on its
    /// second hit in a row, so interleaved flows don't copy on every packet.
    pub streak: u32,
    /// The flow's mask, copied with it (next to the key it is compared with,
    /// instead of a lookup in the masks array per packet).
    pub mask: FlowKey,
    pub flow: FlowEntry,
}

/// Both clocks read at one moment by the `oxvs_clock` program (run by
/// userspace with BPF_PROG_TEST_RUN), element 0 of the clock map: what
/// userspace needs to turn the jiffies in [`FlowStats`] into CLOCK_MONOTONIC.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClockSample {
    /// `bpf_jiffies64()`.
    pub jiffies: u64,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ns: u64,
}

/// Global datapath configuration, element 0 of the config array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DpConfig {
    /// Number of valid entries in the mask order array.
    pub n_masks: u32,
    /// Bumped by userspace to invalidate every exact-match cache entry at once.
    pub emc_gen: u32,
    /// Upcall token bucket per in_port: tokens per second (0 = unlimited).
    pub upcall_rate: u32,
    /// Bucket depth in upcalls.
    pub upcall_burst: u32,
    /// `DP_F_*` bits.
    pub flags: u32,
    /// Nanoseconds per jiffy (1e9 / the kernel's HZ), measured by userspace
    /// when it creates the datapath.
    pub jiffy_ns: u32,
}

/// `DpConfig::flags`: don't use the exact-match cache (the walk alone; for
/// measuring it, or for traffic with no locality, like OVS's
/// `emc-insert-inv-prob=0`).
pub const DP_F_NO_EMC: u32 = 1;
/// `DpConfig::flags`: don't use the last-hit cache ([`LastHit`]).
pub const DP_F_NO_LAST_HIT: u32 = 2;

/// Per-port information, indexed by datapath port number.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PortInfo {
    /// 0 = no port at this number.
    pub ifindex: u32,
    pub _pad: u32,
}

/// Upcall token bucket state per in_port. Updated without atomics: the bucket is
/// a rate limit, a lost update between CPUs only makes it slightly generous.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UpcallBucket {
    /// Tokens, scaled by 2^20 so sub-token refill over short intervals adds up.
    pub tokens: u64,
    pub last_ns: u64,
}

pub const TOKEN_SCALE_SHIFT: u32 = 20;

/// Most packet bytes carried in an upcall record (a full 1518-byte frame and a
/// little more for tagged frames).
pub const UPCALL_MAX_BYTES: usize = 1536;

/// Why a packet went up.
pub const UPCALL_MISS: u32 = 0;
pub const UPCALL_ACTION: u32 = 1;

/// Hook a packet was seen at.
pub const HOOK_XDP: u32 = 0;
pub const HOOK_TC: u32 = 1;

/// One record in the upcall ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UpcallRecord {
    pub key: FlowKey,
    /// `UPCALL_MISS` or `UPCALL_ACTION`.
    pub reason: u32,
    pub hook: u32,
    /// The frame's full length on the wire.
    pub pkt_len: u32,
    /// How many bytes of it are in `data`.
    pub cap_len: u32,
    /// For `UPCALL_ACTION`: the pid argument of the userspace action.
    pub pid: u32,
    /// At the tc hook the outer VLAN tag may be held in skb metadata, not in
    /// `data`: then `tpid << 16 | tci` (tci without VLAN_CFI), else 0.
    pub meta_vlan: u32,
    pub data: [u8; UPCALL_MAX_BYTES],
}

/// Datapath-wide counters, the one element of the per-CPU counters map (summed
/// over CPUs by userspace). One element rather than one per counter: the
/// datapath finds them with one map lookup per packet, however many it bumps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DpCounters {
    /// Indexed by the [`counter`] constants.
    pub n: [u64; counter::N as usize],
}

/// Datapath-wide counters: indices into [`DpCounters::n`].
pub mod counter {
    /// Packets the program saw.
    pub const RX: u32 = 0;
    /// Megaflow hits (EMC or mask walk).
    pub const HIT: u32 = 1;
    /// Hits answered by the exact-match cache.
    pub const EMC_HIT: u32 = 2;
    /// Megaflow misses.
    pub const MISS: u32 = 3;
    /// Upcalls queued to the ring buffer.
    pub const UPCALL: u32 = 4;
    /// Upcalls lost because the ring buffer was full.
    pub const UPCALL_LOST: u32 = 5;
    /// Upcalls refused by the per-port token bucket.
    pub const UPCALL_RATELIMITED: u32 = 6;
    /// Packets whose headers were truncated or malformed (a partial key).
    pub const MALFORMED: u32 = 7;
    /// Packets handed from XDP to the tc hook.
    pub const TC_HANDOFF: u32 = 8;
    /// Packets an action could not be carried out on (dropped).
    pub const ACTION_ERR: u32 = 9;
    /// Packets dropped by a flow with no output.
    pub const DROP_ACTION: u32 = 10;
    /// Mask lookups performed (for the average walk depth; a last-hit cache
    /// hit compares under one mask and counts as one).
    pub const MASK_LOOKUPS: u32 = 11;
    /// Hits answered by the last-hit cache.
    pub const LAST_HIT: u32 = 12;
    pub const N: u32 = 13;
}

/// Map names (BPF object names are at most 15 characters).
pub mod maps {
    pub const FLOWS: &str = "OXVS_FLOWS";
    pub const MASKS: &str = "OXVS_MASKS";
    pub const MASK_ORDER: &str = "OXVS_MASK_ORDER";
    pub const MASK_HITS: &str = "OXVS_MASK_HITS";
    pub const FLOW_STATS: &str = "OXVS_FLOW_STATS";
    pub const EMC: &str = "OXVS_EMC";
    pub const CONFIG: &str = "OXVS_CONFIG";
    pub const PORTS: &str = "OXVS_PORTS";
    pub const IFPORT: &str = "OXVS_IFPORT";
    pub const IFPORT_ARRAY: &str = "OXVS_IFPORT_A";
    pub const TX_PORTS: &str = "OXVS_TX_PORTS";
    pub const UPCALLS: &str = "OXVS_UPCALLS";
    pub const BUCKETS: &str = "OXVS_BUCKETS";
    pub const COUNTERS: &str = "OXVS_COUNTERS";
    pub const SCRATCH: &str = "OXVS_SCRATCH";
    pub const EXEC: &str = "OXVS_EXEC";
    pub const CLOCK: &str = "OXVS_CLOCK";
    pub const MASK_FILTER: &str = "OXVS_MASK_FLT";
    pub const FLOW_GEN: &str = "OXVS_FLOW_GEN";
    pub const LAST_HIT: &str = "OXVS_LAST_HIT";
    /// Every map, for pinning and takeover.
    pub const ALL: [&str; 20] = [
        FLOWS,
        MASKS,
        MASK_ORDER,
        MASK_HITS,
        FLOW_STATS,
        EMC,
        CONFIG,
        PORTS,
        IFPORT,
        IFPORT_ARRAY,
        TX_PORTS,
        UPCALLS,
        BUCKETS,
        COUNTERS,
        SCRATCH,
        EXEC,
        CLOCK,
        MASK_FILTER,
        FLOW_GEN,
        LAST_HIT,
    ];
}

/// Program names in the object.
pub const PROG_XDP: &str = "oxvs_xdp";
pub const PROG_TC: &str = "oxvs_tc";
pub const PROG_XDP_EXEC: &str = "oxvs_xdp_exec";
/// Writes a [`ClockSample`]; run by userspace with BPF_PROG_TEST_RUN.
pub const PROG_CLOCK: &str = "oxvs_clock";

/// Default capacities (overridable at load time).
pub const DEFAULT_MAX_FLOWS: u32 = 200_000;
pub const DEFAULT_MAX_MASKS: u32 = 128;
/// Datapath port numbers are below this.
pub const MAX_PORTS: u32 = 1024;
pub const EMC_ENTRIES: u32 = 8192;
/// ifindexes below this map to ports through an array (an inlined lookup);
/// larger ones through the `IFPORT` hash.
pub const IFPORT_ARRAY_SIZE: u32 = 4096;
pub const UPCALL_RING_BYTES: u32 = 4 << 20;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C) plain data with explicit padding; any
    // byte pattern is a valid value.
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for MegaflowKey {}
    unsafe impl aya::Pod for MaskEntry {}
    unsafe impl aya::Pod for Action {}
    unsafe impl aya::Pod for FlowEntry {}
    unsafe impl aya::Pod for FlowStats {}
    unsafe impl aya::Pod for EmcEntry {}
    unsafe impl aya::Pod for DpConfig {}
    unsafe impl aya::Pod for PortInfo {}
    unsafe impl aya::Pod for UpcallBucket {}
    unsafe impl aya::Pod for DpCounters {}
    unsafe impl aya::Pod for ClockSample {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// The plain definition: every word's share summed, masked words included.
    fn hash_all_words(key: &FlowKey, mask: &FlowKey) -> u64 {
        let m = key.masked(mask);
        m.words().iter().enumerate().fold(0u64, |h, (i, w)| h.wrapping_add(word_hash(i, *w)))
    }

    fn key(seed: u64) -> FlowKey {
        let mut k = FlowKey::zeroed();
        let mut x = seed;
        for w in k.words_mut() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *w = x;
        }
        k
    }

    #[test]
    fn skipping_cleared_words_changes_nothing() {
        let mut mask = FlowKey::zeroed();
        mask.in_port = u32::MAX;
        mask.tp_dst = u16::MAX;
        mask.nw_src[..3].copy_from_slice(&[255, 255, 255]);
        for s in 0..100 {
            let k = key(s);
            assert_eq!(masked_hash(&k, &mask), hash_all_words(&k, &mask));
        }
        assert_eq!(masked_hash(&key(7), &FlowKey::zeroed()), 0, "an all-wildcard mask hashes every key to 0");
    }

    #[test]
    fn only_masked_bits_count() {
        let mut mask = FlowKey::zeroed();
        mask.in_port = u32::MAX;
        let (mut a, mut b) = (key(1), key(2));
        a.in_port = 5;
        b.in_port = 5;
        assert_eq!(masked_hash(&a, &mask), masked_hash(&b, &mask));
        b.in_port = 6;
        assert_ne!(masked_hash(&a, &mask), masked_hash(&b, &mask));
    }

    #[test]
    fn word_hash_is_injective_and_zero_at_zero() {
        assert_eq!(word_hash(3, 0), 0);
        // One word differs: never the same hash (a bijection of the word).
        let mut seen = std::collections::HashSet::new();
        for x in 0..100_000u64 {
            assert!(seen.insert(word_hash(6, x << 17)));
        }
    }

    #[test]
    fn masks_salt_the_megaflow_key() {
        // Under two all-wildcard masks every key's masked hash is 0; the mask id
        // still keeps their flows apart.
        let (k, none) = (key(3), FlowKey::zeroed());
        assert_ne!(megaflow_hash(0, &k, &none), megaflow_hash(1, &k, &none));
        assert_eq!(megaflow_hash(5, &k, &none), megaflow_hash(5, &key(4), &none));
    }

    #[test]
    fn equal_values_in_different_words_hash_apart() {
        let full = {
            let mut m = FlowKey::zeroed();
            m.words_mut().iter_mut().for_each(|w| *w = u64::MAX);
            m
        };
        let (mut a, mut b) = (FlowKey::zeroed(), FlowKey::zeroed());
        a.words_mut()[4] = 0x0a00_0001;
        a.words_mut()[6] = 0x0a00_0002;
        b.words_mut()[4] = 0x0a00_0002;
        b.words_mut()[6] = 0x0a00_0001;
        assert_ne!(masked_hash(&a, &full), masked_hash(&b, &full));
    }
}
