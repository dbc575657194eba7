//! Building and checking Ethernet frames for the tests.

pub fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s.split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
    v.try_into().unwrap()
}

pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// One's complement sum of `data` folded to 16 bits (not inverted).
pub fn sum16(data: &[u8], mut acc: u32) -> u32 {
    let mut i = 0;
    while i + 1 < data.len() {
        acc += u16::from_be_bytes([data[i], data[i + 1]]) as u32;
        i += 2;
    }
    if i < data.len() {
        acc += (data[i] as u32) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

pub fn csum(data: &[u8]) -> u16 {
    !(sum16(data, 0) as u16)
}

pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An IPv4 header (no options) with a correct checksum.
pub fn ipv4_hdr(src: [u8; 4], dst: [u8; 4], proto: u8, payload_len: usize, ttl: u8) -> Vec<u8> {
    let tot = (20 + payload_len) as u16;
    let mut h = vec![0x45, 0, (tot >> 8) as u8, tot as u8, 0, 1, 0x40, 0, ttl, proto, 0, 0];
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// A UDP datagram with a correct checksum over the IPv4 pseudo header.
pub fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let c = l4_csum4(src, dst, 17, &u);
    u[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    u
}

pub fn l4_csum4(src: [u8; 4], dst: [u8; 4], proto: u8, seg: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    let acc = sum16(&pseudo, 0);
    !(sum16(seg, acc) as u16)
}

/// A whole Ethernet + IPv4 + UDP frame.
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let u = udp4(src, dst, sport, dport, payload);
    let mut f = eth(dst_mac, src_mac, 0x0800);
    f.extend(ipv4_hdr(src, dst, 17, u.len(), 64));
    f.extend(u);
    f
}

/// Inserts a VLAN tag after the MAC addresses.
pub fn tag(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&tci.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// A parsed IPv4/UDP frame, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Udp4 {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// Outer-first (tpid, tci) of the VLAN tags.
    pub vlans: Vec<(u16, u16)>,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ttl: u8,
    pub tos: u8,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
    pub ip_csum_ok: bool,
    /// True when the UDP checksum verifies (or is 0 = none).
    pub udp_csum_ok: bool,
}

pub fn parse_udp4(f: &[u8]) -> Option<Udp4> {
    let mut off = 12;
    let mut vlans = Vec::new();
    loop {
        let t = u16::from_be_bytes([*f.get(off)?, *f.get(off + 1)?]);
        if t == 0x8100 || t == 0x88a8 {
            vlans.push((t, u16::from_be_bytes([*f.get(off + 2)?, *f.get(off + 3)?])));
            off += 4;
        } else if t == 0x0800 {
            off += 2;
            break;
        } else {
            return None;
        }
    }
    let ip = f.get(off..off + 20)?;
    if ip[9] != 17 || ip[0] != 0x45 {
        return None;
    }
    let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let seg = f.get(off + 20..off + tot)?;
    let src: [u8; 4] = ip[12..16].try_into().unwrap();
    let dst: [u8; 4] = ip[16..20].try_into().unwrap();
    let ucs = u16::from_be_bytes([seg[6], seg[7]]);
    Some(Udp4 {
        dst_mac: f[0..6].try_into().unwrap(),
        src_mac: f[6..12].try_into().unwrap(),
        vlans,
        src,
        dst,
        ttl: ip[8],
        tos: ip[1],
        sport: u16::from_be_bytes([seg[0], seg[1]]),
        dport: u16::from_be_bytes([seg[2], seg[3]]),
        payload: seg[8..].to_vec(),
        ip_csum_ok: sum16(ip, 0) == 0xffff,
        udp_csum_ok: ucs == 0 || l4_csum4(src, dst, 17, seg) == 0,
    })
}

/// L4 checksum over the IPv6 pseudo header.
pub fn l4_csum6(src: &[u8; 16], dst: &[u8; 16], proto: u8, seg: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&(seg.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, proto]);
    let acc = sum16(&pseudo, 0);
    !(sum16(seg, acc) as u16)
}

/// An IPv6 header; `first_word` carries version, traffic class and flow label.
pub fn ipv6_hdr(first_word: u32, next: u8, hlim: u8, src: &[u8; 16], dst: &[u8; 16], payload_len: usize) -> Vec<u8> {
    let mut h = first_word.to_be_bytes().to_vec();
    h.extend_from_slice(&(payload_len as u16).to_be_bytes());
    h.extend_from_slice(&[next, hlim]);
    h.extend_from_slice(src);
    h.extend_from_slice(dst);
    h
}

/// A whole Ethernet + IPv6 + UDP frame with a correct checksum.
pub fn udp6_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: &[u8; 16],
    dst: &[u8; 16],
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let c = l4_csum6(src, dst, 17, &u);
    u[6..8].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(dst_mac, src_mac, 0x86dd);
    f.extend(ipv6_hdr(0x6000_0000, 17, 64, src, dst, u.len()));
    f.extend(u);
    f
}

/// A TCP segment (20-byte header, given flags) with a correct checksum.
pub fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    let c = l4_csum4(src, dst, 6, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

pub fn v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[15] = last;
    a
}
