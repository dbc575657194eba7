//! The datapath interface: flow keys, masks and actions in OVS's datapath
//! syntax (`odp`), and the eBPF datapath that carries them (`ebpf`).
pub mod ebpf;
mod flow_gen;
pub mod odp;
pub mod test_run;

use oxvs_dp_abi::{ClockSample, FlowKey, FlowStats, UPCALL_MAX_BYTES, UpcallRecord};

pub use ebpf::{AttachMode, DpFlow, DpOptions, DpPort, DpStats, EbpfDatapath};

#[derive(Debug, thiserror::Error)]
pub enum DpError {
    #[error("no datapath named {0}")]
    NoSuchDatapath(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("no such device {0}")]
    NoSuchDevice(String),
    #[error("no port named {0}")]
    NoSuchPort(String),
    #[error("flow already exists")]
    FlowExists,
    #[error("no such flow")]
    NoSuchFlow,
    #[error("flow table full ({0} flows)")]
    TableFull(u32),
    #[error("too many masks (at most {0})")]
    TooManyMasks(u32),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Bpf(String),
}

/// A flow's stats summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStatsSum {
    pub packets: u64,
    pub bytes: u64,
    /// CLOCK_MONOTONIC ns of the last hit; 0 = never.
    pub used_ns: u64,
    pub tcp_flags: u16,
}

impl FlowStatsSum {
    /// Sums per-CPU stats; the last hit's jiffies become CLOCK_MONOTONIC by `clock`.
    pub fn sum<'a>(per_cpu: impl Iterator<Item = &'a FlowStats>, clock: &JiffiesClock) -> Self {
        let mut s = FlowStatsSum::default();
        let mut used = 0;
        for c in per_cpu {
            s.packets += c.packets;
            s.bytes += c.bytes;
            used = used.max(c.used_jiffies);
            s.tcp_flags |= c.tcp_flags;
        }
        s.used_ns = clock.monotonic_ns(used);
        s
    }
}

/// Turns the datapath's jiffies into CLOCK_MONOTONIC ns: both clocks read at
/// one moment (by the datapath), and the length of a jiffy.
#[derive(Clone, Copy, Debug)]
pub struct JiffiesClock {
    pub sample: ClockSample,
    pub jiffy_ns: u64,
}

impl JiffiesClock {
    /// 0 (never) stays 0. A jiffy later than the sample (a hit after it was
    /// taken) counts as the sample's time.
    pub fn monotonic_ns(&self, jiffies: u64) -> u64 {
        if jiffies == 0 {
            return 0;
        }
        let ago = self.sample.jiffies.saturating_sub(jiffies).saturating_mul(self.jiffy_ns);
        self.sample.ns.saturating_sub(ago).max(1)
    }

    /// The kernel's jiffy length from two samples `a` then `b`: the nearest
    /// common HZ (100, 250, 300, 1000) within 10%, else what was measured.
    pub fn jiffy_ns_between(a: &ClockSample, b: &ClockSample) -> Option<u64> {
        let (dj, dns) = (b.jiffies.checked_sub(a.jiffies)?, b.ns.checked_sub(a.ns)?);
        if dj == 0 {
            return None;
        }
        let measured = dns / dj;
        let nearest = [100u64, 250, 300, 1000]
            .iter()
            .map(|hz| 1_000_000_000 / hz)
            .min_by_key(|j| j.abs_diff(measured))
            .filter(|j| j.abs_diff(measured) * 10 <= *j);
        Some(nearest.unwrap_or(measured))
    }
}

/// CLOCK_MONOTONIC now, in ns (the clock `bpf_ktime_get_ns` reads).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A packet the datapath sent up.
#[derive(Clone, Debug)]
pub struct Upcall {
    pub key: FlowKey,
    /// `UPCALL_MISS` or `UPCALL_ACTION`.
    pub reason: u32,
    /// `HOOK_XDP` or `HOOK_TC`.
    pub hook: u32,
    pub pid: u32,
    /// The frame's length on the wire.
    pub pkt_len: u32,
    /// The frame (up to `UPCALL_MAX_BYTES`), with an outer VLAN tag that the tc
    /// hook held in metadata put back in place.
    pub packet: Vec<u8>,
}

impl Upcall {
    pub fn from_bytes(b: &[u8]) -> Option<Upcall> {
        if b.len() < std::mem::size_of::<UpcallRecord>() {
            return None;
        }
        // SAFETY: the ring buffer record is an UpcallRecord written by the
        // datapath; read_unaligned copes with the ring's 8-byte alignment.
        let r: UpcallRecord = unsafe { std::ptr::read_unaligned(b.as_ptr() as *const UpcallRecord) };
        let cap = (r.cap_len as usize).min(UPCALL_MAX_BYTES);
        let mut packet = r.data[..cap].to_vec();
        if r.meta_vlan != 0 && packet.len() >= 12 {
            let tag =
                [(r.meta_vlan >> 24) as u8, (r.meta_vlan >> 16) as u8, (r.meta_vlan >> 8) as u8, r.meta_vlan as u8];
            packet.splice(12..12, tag);
        }
        Some(Upcall { key: r.key, reason: r.reason, hook: r.hook, pid: r.pid, pkt_len: r.pkt_len, packet })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(data: &[u8], meta_vlan: u32) -> Vec<u8> {
        // SAFETY: UpcallRecord is plain data; all-zero is a valid value.
        let mut r: UpcallRecord = unsafe { std::mem::zeroed() };
        r.key.in_port = 7;
        r.pkt_len = data.len() as u32;
        r.cap_len = data.len() as u32;
        r.meta_vlan = meta_vlan;
        r.data[..data.len()].copy_from_slice(data);
        // SAFETY: reading the record's bytes.
        unsafe { std::slice::from_raw_parts(&r as *const _ as *const u8, std::mem::size_of::<UpcallRecord>()) }.to_vec()
    }

    #[test]
    fn upcall_records() {
        let frame: Vec<u8> = (0..60).collect();
        let u = Upcall::from_bytes(&record(&frame, 0)).unwrap();
        assert_eq!((u.key.in_port, u.pkt_len, &u.packet), (7, 60, &frame));
        // A tag the tc hook held in metadata goes back after the MACs.
        let u = Upcall::from_bytes(&record(&frame, 0x8100_200a)).unwrap();
        assert_eq!(&u.packet[..12], &frame[..12]);
        assert_eq!(&u.packet[12..16], &[0x81, 0x00, 0x20, 0x0a]);
        assert_eq!(&u.packet[16..], &frame[12..]);
        // Short records are refused, not read past.
        assert!(Upcall::from_bytes(&record(&frame, 0)[..100]).is_none());
    }

    #[test]
    fn stats_sum_over_cpus() {
        // HZ=250: 4 ms a jiffy; the sample: jiffy 1000 at 10 s.
        let clock = JiffiesClock { sample: ClockSample { jiffies: 1000, ns: 10_000_000_000 }, jiffy_ns: 4_000_000 };
        let a = FlowStats { packets: 2, bytes: 100, used_jiffies: 5, tcp_flags: 0x02, _pad: [0; 6] };
        let b = FlowStats { packets: 3, bytes: 50, used_jiffies: 900, tcp_flags: 0x10, _pad: [0; 6] };
        let s = FlowStatsSum::sum([a, b].iter(), &clock);
        assert_eq!(s, FlowStatsSum { packets: 5, bytes: 150, used_ns: 9_600_000_000, tcp_flags: 0x12 });
        let never = FlowStats { used_jiffies: 0, ..a };
        assert_eq!(FlowStatsSum::sum([never].iter(), &clock).used_ns, 0);
    }

    #[test]
    fn jiffies_to_monotonic() {
        let clock = JiffiesClock { sample: ClockSample { jiffies: 1000, ns: 10_000_000_000 }, jiffy_ns: 1_000_000 };
        assert_eq!(clock.monotonic_ns(1000), 10_000_000_000);
        assert_eq!(clock.monotonic_ns(1003), 10_000_000_000, "a hit after the sample is 'now'");
        assert_eq!(clock.monotonic_ns(0), 0);
        // Before boot would be negative: clamped, but still "used".
        assert_eq!(clock.monotonic_ns(1), 9_001_000_000);
        let far = JiffiesClock { jiffy_ns: 100_000_000, ..clock };
        assert_eq!(far.monotonic_ns(1), 1);
    }

    #[test]
    fn jiffy_length_snaps_to_a_common_hz() {
        let s = |jiffies, ns| ClockSample { jiffies, ns };
        // 50 ms at HZ=250 is 12 or 13 jiffies, at HZ=300 15, at HZ=1000 50.
        assert_eq!(JiffiesClock::jiffy_ns_between(&s(100, 0), &s(113, 50_100_000)), Some(4_000_000));
        assert_eq!(JiffiesClock::jiffy_ns_between(&s(100, 0), &s(115, 50_100_000)), Some(3_333_333));
        assert_eq!(JiffiesClock::jiffy_ns_between(&s(100, 0), &s(150, 50_100_000)), Some(1_000_000));
        assert_eq!(JiffiesClock::jiffy_ns_between(&s(100, 0), &s(105, 50_100_000)), Some(10_000_000));
        // Something else: what was measured.
        assert_eq!(JiffiesClock::jiffy_ns_between(&s(0, 0), &s(2, 50_000_000)), Some(25_000_000));
        // No jiffy passed, or time ran backwards: no answer.
        assert_eq!(JiffiesClock::jiffy_ns_between(&s(7, 0), &s(7, 50_000_000)), None);
        assert_eq!(JiffiesClock::jiffy_ns_between(&s(7, 9), &s(8, 5)), None);
    }
}
