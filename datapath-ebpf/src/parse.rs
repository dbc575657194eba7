//! flow_extract: frame → `FlowKey`, following OVS's `miniflow_extract`.
//!
//! Truncated or malformed headers end parsing with a partial key, as OVS does:
//! fields of the layer that failed its sanity check stay zero, the layers above
//! are not parsed, and the packet goes on (to a flow that matches the partial
//! key, or up as a miss).
use oxvs_dp_abi::*;

use crate::hook::Hook;

/// Where the headers are, for the actions that rewrite them. Offsets from the
/// start of the frame as the hook sees it; 0 = absent.
#[derive(Clone, Copy)]
pub struct Layout {
    pub l3: u32,
    pub l4: u32,
    pub malformed: bool,
}

/// Largest header offset we parse at; beyond it a header counts as truncated.
/// Keeps every offset bounded for the verifier.
const MAX_OFF: usize = 2048;

#[inline(always)]
fn get<T: Copy>(data: usize, end: usize, off: usize) -> Option<T> {
    if off > MAX_OFF || data + off + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: bounds checked against data_end just above.
    Some(unsafe { ((data + off) as *const T).read_unaligned() })
}

/// `get` at an offset computed from length fields (IP total length, IPv6
/// payload length, extension and option lengths): LLVM drops bounds checks it
/// can derive from that earlier length arithmetic, the verifier can't follow,
/// so `off` is hidden from LLVM. (Only here: the spill costs a few cycles.)
#[inline(always)]
fn get_var<T: Copy>(data: usize, end: usize, off: usize) -> Option<T> {
    get(data, end, core::hint::black_box(off))
}

/// Big-endian u16 as stored (raw bytes).
#[inline(always)]
fn be16_at(data: usize, end: usize, off: usize) -> Option<u16> {
    get::<u16>(data, end, off)
}

#[inline(always)]
fn be16_var(data: usize, end: usize, off: usize) -> Option<u16> {
    get_var::<u16>(data, end, off)
}

#[inline(always)]
fn is_vlan(tpid: u16) -> bool {
    tpid == ETH_TYPE_VLAN_8021Q || tpid == ETH_TYPE_VLAN_8021AD
}

#[inline(always)]
pub fn flow_extract<H: Hook>(h: &H, key: &mut FlowKey) -> Layout {
    let data = h.data();
    let end = h.data_end();
    let mut lay = Layout { l3: 0, l4: 0, malformed: false };

    // Ethernet: both addresses and a type, or nothing.
    if data + 14 > end {
        lay.malformed = true;
        return lay;
    }
    let eth = data as *const u8;
    // SAFETY: the 14 bytes were checked just above. In 4- and 2-byte pieces
    // (misaligned loads are allowed, see .cargo/config.toml): copying the
    // arrays whole becomes a call to a memmove subprogram, byte by byte is
    // 24 instructions.
    unsafe {
        let (dst, src) = (key.eth_dst.as_mut_ptr(), key.eth_src.as_mut_ptr());
        (dst as *mut u32).write_unaligned((eth as *const u32).read_unaligned());
        (dst.add(4) as *mut u16).write_unaligned((eth.add(4) as *const u16).read_unaligned());
        (src as *mut u32).write_unaligned((eth.add(6) as *const u32).read_unaligned());
        (src.add(4) as *mut u16).write_unaligned((eth.add(10) as *const u16).read_unaligned());
    }
    let mut off: usize = 12;

    // VLAN tags: the tc hook may hold the outer one in metadata.
    let mut n = 0;
    if let Some((tpid_be, tci)) = h.meta_vlan() {
        key.vlan_tpid[0] = tpid_be;
        key.vlan_tci[0] = (tci | VLAN_CFI).to_be();
        n = 1;
    }
    let mut t = u16::from_be(be16_at(data, end, off).unwrap_or(0));
    if n == 0 && is_vlan(t) {
        if let Some(tci) = be16_at(data, end, off + 2) {
            if get::<u16>(data, end, off + 4).is_some() {
                key.vlan_tpid[0] = t.to_be();
                key.vlan_tci[0] = tci | VLAN_CFI.to_be();
                n = 1;
                off += 4;
                t = u16::from_be(be16_at(data, end, off).unwrap_or(0));
            }
        }
    }
    if n == 1 && is_vlan(t) {
        if let Some(tci) = be16_at(data, end, off + 2) {
            if get::<u16>(data, end, off + 4).is_some() {
                key.vlan_tpid[1] = t.to_be();
                key.vlan_tci[1] = tci | VLAN_CFI.to_be();
                off += 4;
                t = u16::from_be(be16_at(data, end, off).unwrap_or(0));
            }
        }
    }

    // Ethertype, or 802.2 LLC/SNAP.
    if t < ETH_TYPE_MIN {
        let snap = get::<[u8; 6]>(data, end, off + 2);
        let snap_type = be16_at(data, end, off + 8);
        match (snap, snap_type) {
            (Some([0xaa, 0xaa, 0x03, 0, 0, 0]), Some(st)) if u16::from_be(st) >= ETH_TYPE_MIN => {
                t = u16::from_be(st);
                off += 8;
            }
            _ => {
                key.eth_type = ETH_TYPE_NONE.to_be();
                return lay;
            }
        }
    }
    key.eth_type = t.to_be();
    off += 2;

    if t == ETH_TYPE_IP {
        parse_ipv4(data, end, off, key, &mut lay);
    } else if t == ETH_TYPE_IPV6 {
        parse_ipv6(data, end, off, key, &mut lay);
    } else if t == ETH_TYPE_ARP || t == ETH_TYPE_RARP {
        parse_arp(data, end, off, key, &mut lay);
    }
    lay
}

#[inline(always)]
fn parse_ipv4(data: usize, end: usize, l3: usize, key: &mut FlowKey, lay: &mut Layout) {
    let Some(hdr) = get::<[u8; 20]>(data, end, l3) else {
        lay.malformed = true;
        return;
    };
    let ihl = ((hdr[0] & 0x0f) as usize) * 4;
    let tot_len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
    let avail = end - (data + l3);
    if ihl < 20 || ihl > avail || tot_len > avail || ihl > tot_len {
        // OVS's ipv4_sanity_check failed: no L3 fields.
        lay.malformed = true;
        return;
    }
    key.nw_tos = hdr[1];
    key.nw_ttl = hdr[8];
    key.nw_proto = hdr[9];
    key.nw_src[..4].copy_from_slice(&hdr[12..16]);
    key.nw_dst[..4].copy_from_slice(&hdr[16..20]);
    let frag = u16::from_be_bytes([hdr[6], hdr[7]]);
    if frag & 0x3fff != 0 {
        key.nw_frag = FRAG_ANY;
        if frag & 0x1fff != 0 {
            key.nw_frag |= FRAG_LATER;
        }
    }
    lay.l3 = l3 as u32;
    if key.nw_frag & FRAG_LATER != 0 {
        return;
    }
    let l4 = l3 + ihl;
    // L4 stops at the IP datagram's end, not at Ethernet padding.
    let l4_len = tot_len - ihl;
    parse_l4(data, end, l4, l4_len, key, lay, false);
}

#[inline(always)]
fn parse_ipv6(data: usize, end: usize, l3: usize, key: &mut FlowKey, lay: &mut Layout) {
    let Some(hdr) = get::<[u8; 40]>(data, end, l3) else {
        lay.malformed = true;
        return;
    };
    let plen = u16::from_be_bytes([hdr[4], hdr[5]]) as usize;
    let avail = end - (data + l3);
    if plen + 40 > avail {
        lay.malformed = true;
        return;
    }
    let mut proto = hdr[6];
    let mut frag = 0u8;
    let mut off = l3 + 40;
    let payload_end = l3 + 40 + plen;
    // Extension headers, a bounded number of them.
    let mut done = false;
    for _ in 0..8 {
        match proto {
            0 | 43 | 60 | 51 => {
                let Some([next, len]) = get_var::<[u8; 2]>(data, end, off) else {
                    lay.malformed = true;
                    return;
                };
                let hlen = if proto == 51 { (len as usize + 2) * 4 } else { (len as usize + 1) * 8 };
                if off + hlen > payload_end {
                    lay.malformed = true;
                    return;
                }
                proto = next;
                off += hlen;
            }
            44 => {
                let Some(fh) = get_var::<[u8; 8]>(data, end, off) else {
                    lay.malformed = true;
                    return;
                };
                if off + 8 > payload_end {
                    lay.malformed = true;
                    return;
                }
                proto = fh[0];
                off += 8;
                let offlg = u16::from_be_bytes([fh[2], fh[3]]);
                if offlg != 0 {
                    frag = FRAG_ANY;
                    if offlg & 0xfff8 != 0 {
                        // Later fragment: only the first carries L4.
                        frag |= FRAG_LATER;
                        proto = 44;
                        done = true;
                        break;
                    }
                }
            }
            _ => {
                done = true;
                break;
            }
        }
    }
    if !done {
        // Too long a chain to follow: treat like OVS treats a bad one.
        lay.malformed = true;
        return;
    }
    key.nw_tos = (hdr[0] << 4) | (hdr[1] >> 4);
    key.ipv6_label = u32::from_be_bytes([0, hdr[1] & 0x0f, hdr[2], hdr[3]]).to_be();
    key.nw_ttl = hdr[7];
    key.nw_proto = proto;
    key.nw_frag = frag;
    key.nw_src.copy_from_slice(&hdr[8..24]);
    key.nw_dst.copy_from_slice(&hdr[24..40]);
    lay.l3 = l3 as u32;
    if frag & FRAG_LATER != 0 {
        return;
    }
    parse_l4(data, end, off, payload_end - off, key, lay, true);
}

#[inline(always)]
fn parse_l4(data: usize, end: usize, l4: usize, len: usize, key: &mut FlowKey, lay: &mut Layout, v6: bool) {
    let p = key.nw_proto;
    let need = match p {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        IPPROTO_SCTP => 12,
        IPPROTO_ICMP if !v6 => 8,
        IPPROTO_ICMPV6 if v6 => 8,
        _ => return,
    };
    let Some(h) = get_var::<[u8; 4]>(data, end, l4) else {
        lay.malformed = true;
        return;
    };
    if len < need {
        lay.malformed = true;
        return;
    }
    match p {
        IPPROTO_TCP => {
            let Some(ctl) = be16_var(data, end, l4 + 12) else {
                lay.malformed = true;
                return;
            };
            key.tcp_flags = (u16::from_be(ctl) & 0x0fff).to_be();
            key.tp_src = u16::from_ne_bytes([h[0], h[1]]);
            key.tp_dst = u16::from_ne_bytes([h[2], h[3]]);
        }
        IPPROTO_UDP | IPPROTO_SCTP => {
            key.tp_src = u16::from_ne_bytes([h[0], h[1]]);
            key.tp_dst = u16::from_ne_bytes([h[2], h[3]]);
        }
        IPPROTO_ICMP => {
            key.tp_src = (h[0] as u16).to_be();
            key.tp_dst = (h[1] as u16).to_be();
        }
        _ => {
            key.tp_src = (h[0] as u16).to_be();
            key.tp_dst = (h[1] as u16).to_be();
            if h[1] == 0 && (h[0] == 135 || h[0] == 136) {
                parse_nd(data, end, l4, len, h[0], key, lay);
            }
        }
    }
    lay.l4 = l4 as u32;
}

/// Neighbor solicitation/advertisement: target and link-layer address options.
/// A malformed message keeps type/code and zeroes the ND fields, as OVS does.
#[inline(always)]
fn parse_nd(data: usize, end: usize, l4: usize, len: usize, ty: u8, key: &mut FlowKey, lay: &mut Layout) {
    if len < 24 {
        lay.malformed = true;
        return;
    }
    let Some(target) = get_var::<[u8; 16]>(data, end, l4 + 8) else {
        lay.malformed = true;
        return;
    };
    let mut off = l4 + 24;
    let stop = l4 + len;
    let mut sll = [0u8; 6];
    let mut tll = [0u8; 6];
    for _ in 0..4 {
        if off + 8 > stop {
            break;
        }
        let Some([ot, ol]) = get_var::<[u8; 2]>(data, end, off) else {
            break;
        };
        let olen = ol as usize * 8;
        if olen == 0 || off + olen > stop {
            lay.malformed = true;
            return;
        }
        if olen == 8 {
            if let Some(mac) = get_var::<[u8; 6]>(data, end, off + 2) {
                if ot == 1 && ty == 135 {
                    sll = mac;
                } else if ot == 2 && ty == 136 {
                    tll = mac;
                }
            }
        }
        off += olen;
    }
    key.nd_target = target;
    key.arp_sha = sll;
    key.arp_tha = tll;
}

#[inline(always)]
fn parse_arp(data: usize, end: usize, l3: usize, key: &mut FlowKey, lay: &mut Layout) {
    let Some(a) = get::<[u8; 28]>(data, end, l3) else {
        lay.malformed = true;
        return;
    };
    // Ethernet/IPv4 ARP only, as OVS.
    if a[0] != 0 || a[1] != 1 || a[2] != 0x08 || a[3] != 0x00 || a[4] != 6 || a[5] != 4 {
        return;
    }
    if a[6] == 0 {
        key.nw_proto = a[7];
    }
    key.arp_sha.copy_from_slice(&a[8..14]);
    key.nw_src[..4].copy_from_slice(&a[14..18]);
    key.arp_tha.copy_from_slice(&a[18..24]);
    key.nw_dst[..4].copy_from_slice(&a[24..28]);
    lay.l3 = l3 as u32;
}
