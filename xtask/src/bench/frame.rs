//! The benchmark's frames: 60-byte Ethernet/IPv4/UDP (64 bytes on a wire with
//! the FCS, the classic minimum-size packet), with valid checksums so nothing
//! along the way has a reason to treat them differently from real traffic.
pub const FRAME_LEN: usize = 60;
pub type Frame = [u8; FRAME_LEN];

const ETH_HLEN: usize = 14;
const IP_HLEN: usize = 20;
const UDP_HLEN: usize = 8;

/// One UDP datagram's addresses and ports.
#[derive(Clone, Copy, Debug)]
pub struct Udp {
    pub src_ip: [u8; 4],
    pub dst_ip: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
}

/// RFC 1071 one's-complement sum of 16-bit words, folded, not inverted.
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

pub fn udp_frame(dst_mac: [u8; 6], src_mac: [u8; 6], u: Udp) -> Frame {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());

    let ip_len = FRAME_LEN - ETH_HLEN; // the payload pads the frame to 60 bytes
    let ip = &mut f[ETH_HLEN..ETH_HLEN + IP_HLEN];
    ip[0] = 0x45; // version 4, 5 words
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[6] = 0x40; // DF: never a fragment
    ip[8] = 64; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&u.src_ip);
    ip[16..20].copy_from_slice(&u.dst_ip);
    let csum = !(sum16(ip, 0) as u16);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());

    let udp_len = ip_len - IP_HLEN;
    let l4 = ETH_HLEN + IP_HLEN;
    f[l4..l4 + 2].copy_from_slice(&u.src_port.to_be_bytes());
    f[l4 + 2..l4 + 4].copy_from_slice(&u.dst_port.to_be_bytes());
    f[l4 + 4..l4 + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    for (i, b) in f[l4 + UDP_HLEN..].iter_mut().enumerate() {
        *b = i as u8; // a recognisable payload
    }
    // The UDP checksum covers a pseudo-header (addresses, protocol, length).
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&u.src_ip);
    pseudo[4..8].copy_from_slice(&u.dst_ip);
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let mut csum = !(sum16(&f[l4..], sum16(&pseudo, 0)) as u16);
    if csum == 0 {
        csum = 0xffff; // 0 would mean "no checksum"
    }
    f[l4 + 6..l4 + 8].copy_from_slice(&csum.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify() {
        let u = Udp { src_ip: [10, 1, 2, 3], dst_ip: [10, 9, 8, 7], src_port: 4242, dst_port: 10007 };
        let f = udp_frame([2, 0, 0, 0, 0, 0xb], [2, 0, 0, 0, 0, 0xa], u);
        // A header with its checksum in place sums to 0xffff.
        assert_eq!(sum16(&f[14..34], 0), 0xffff);
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&u.src_ip);
        pseudo[4..8].copy_from_slice(&u.dst_ip);
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&26u16.to_be_bytes());
        assert_eq!(sum16(&f[34..], sum16(&pseudo, 0)), 0xffff);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 46);
    }
}
