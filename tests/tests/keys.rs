//! Flow keys of well-formed frames of every protocol the datapath parses (read
//! back from miss upcalls), and rewrites of IPv6, TCP and TTL checked by
//! recomputing the checksums of what arrives. At XDP and at tc.
use std::time::Duration;

use oxvs_dp_abi::FlowKey;
use oxvs_system_tests::{Hook, IP_A, IP_B, RawSock, Topo, frame};
use oxvs_userspace::dpif::EbpfDatapath;

const WAIT: Duration = Duration::from_millis(300);

fn be16(v: u16) -> u16 {
    v.to_be()
}

fn key_of(dp: &mut EbpfDatapath, tx: &RawSock, f: &[u8]) -> FlowKey {
    tx.send(f);
    let u = dp.recv_upcall(Duration::from_secs(1)).unwrap().expect("no upcall");
    assert_eq!(u.packet, f, "upcall carries the whole frame");
    u.key
}

fn ip4(key: &FlowKey) -> ([u8; 4], [u8; 4]) {
    (key.nw_src[..4].try_into().unwrap(), key.nw_dst[..4].try_into().unwrap())
}

fn keys(hook: Hook) {
    let t = Topo::with_datapath("keys", hook);
    let mut dp = EbpfDatapath::open(&t.dp_options()).unwrap();
    let tx = RawSock::open(&t.a, "eth0");
    let (a, b) = (t.mac_a, t.mac_b);

    // ARP request.
    let mut f = frame::eth([0xff; 6], a, 0x0806);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&a);
    f.extend_from_slice(&IP_A);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&IP_B);
    let k = key_of(&mut dp, &tx, &f);
    assert_eq!((k.eth_type, k.nw_proto, ip4(&k), k.arp_sha, k.arp_tha), (be16(0x0806), 1, (IP_A, IP_B), a, [0; 6]));

    // ICMP echo request, TOS 0x10.
    let icmp = [8u8, 0, 0xf7, 0xff, 0, 0, 0, 0];
    let mut f = frame::eth(b, a, 0x0800);
    let mut ip = frame::ipv4_hdr(IP_A, IP_B, 1, icmp.len(), 33);
    ip[1] = 0x10;
    ip[10] = 0;
    ip[11] = 0;
    let c = frame::csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend(ip);
    f.extend_from_slice(&icmp);
    let k = key_of(&mut dp, &tx, &f);
    assert_eq!((k.nw_proto, k.nw_tos, k.nw_ttl, k.tp_src, k.tp_dst, k.nw_frag), (1, 0x10, 33, be16(8), 0, 0));

    // TCP SYN+ACK.
    let seg = frame::tcp4(IP_A, IP_B, 80, 40000, 0x12, b"");
    let mut f = frame::eth(b, a, 0x0800);
    f.extend(frame::ipv4_hdr(IP_A, IP_B, 6, seg.len(), 64));
    f.extend(seg);
    let k = key_of(&mut dp, &tx, &f);
    assert_eq!((k.nw_proto, k.tp_src, k.tp_dst, k.tcp_flags), (6, be16(80), be16(40000), be16(0x012)));

    // SCTP.
    let mut f = frame::eth(b, a, 0x0800);
    f.extend(frame::ipv4_hdr(IP_A, IP_B, 132, 12, 64));
    f.extend_from_slice(&[0x0b, 0xb8, 0x0f, 0xa0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let k = key_of(&mut dp, &tx, &f);
    assert_eq!((k.nw_proto, k.tp_src, k.tp_dst), (132, be16(3000), be16(4000)));

    // IPv4 with options (IHL 6), first fragment (MF set).
    let u = frame::udp4(IP_A, IP_B, 7, 9, b"first");
    // Total length counts the 4 option bytes: 20 + 4 + UDP.
    let mut ip = frame::ipv4_hdr(IP_A, IP_B, 17, u.len() + 4, 64);
    ip[0] = 0x46;
    ip[6] = 0x20; // MF
    ip.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    ip[10] = 0;
    ip[11] = 0;
    let c = frame::csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = frame::eth(b, a, 0x0800);
    f.extend(ip);
    f.extend(u);
    let k = key_of(&mut dp, &tx, &f);
    assert_eq!((k.nw_proto, k.nw_frag, k.tp_src, k.tp_dst), (17, 1, be16(7), be16(9)));

    // 802.1ad outer and 802.1Q inner tags on UDP.
    let inner = frame::udp_frame(b, a, IP_A, IP_B, 11, 12, b"qinq");
    let f = frame::tag(&frame::tag(&inner, 0x8100, (5 << 13) | 200), 0x88a8, 100);
    let k = key_of(&mut dp, &tx, &f);
    assert_eq!(k.vlan_tpid, [be16(0x88a8), be16(0x8100)]);
    assert_eq!(k.vlan_tci, [be16(0x1000 | 100), be16(0x1000 | (5 << 13) | 200)]);
    assert_eq!((k.eth_type, k.nw_proto, k.tp_dst), (be16(0x0800), 17, be16(12)));

    // 802.2 LLC/SNAP carrying IPv4.
    let ipu = &inner[14..];
    let mut f = frame::eth(b, a, (8 + ipu.len()) as u16);
    f.extend_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]);
    f.extend_from_slice(ipu);
    let k = key_of(&mut dp, &tx, &f);
    assert_eq!((k.eth_type, k.nw_proto, ip4(&k), k.tp_src), (be16(0x0800), 17, (IP_A, IP_B), be16(11)));

    // IPv6 UDP with traffic class and flow label.
    let (s6, d6) = (frame::v6(1), frame::v6(2));
    let mut f = frame::udp6_frame(b, a, &s6, &d6, 546, 547, b"v6");
    f[14..18].copy_from_slice(&(0x6000_0000u32 | 0xb8 << 20 | 0x12345).to_be_bytes());
    let k = key_of(&mut dp, &tx, &f);
    assert_eq!((k.nw_tos, u32::from_be(k.ipv6_label), k.nw_ttl, k.nw_proto), (0xb8, 0x12345, 64, 17));
    assert_eq!((k.nw_src, k.nw_dst, k.tp_src, k.tp_dst), (s6, d6, be16(546), be16(547)));

    // IPv6 later fragment: nw_proto is the fragment header's, no L4.
    let mut f = frame::eth(b, a, 0x86dd);
    f.extend(frame::ipv6_hdr(0x6000_0000, 44, 64, &s6, &d6, 16));
    f.extend_from_slice(&[17, 0, 0x00, 0x08, 0, 0, 0, 1]); // offset 1 (x8)
    f.extend_from_slice(&[0x55; 8]);
    let k = key_of(&mut dp, &tx, &f);
    assert_eq!((k.nw_proto, k.nw_frag, k.tp_src), (44, 3, 0));

    // Neighbor solicitation with a source link-layer option, advertisement with
    // a target one.
    for (ty, opt) in [(135u8, 1u8), (136, 2)] {
        let mut icmp = vec![ty, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&frame::v6(9));
        icmp.extend_from_slice(&[opt, 1]);
        icmp.extend_from_slice(&a);
        let mut f = frame::eth(b, a, 0x86dd);
        f.extend(frame::ipv6_hdr(0x6000_0000, 58, 255, &s6, &d6, icmp.len()));
        f.extend(icmp);
        let k = key_of(&mut dp, &tx, &f);
        assert_eq!((k.nw_proto, k.tp_src, k.tp_dst, k.nd_target), (58, be16(ty as u16), 0, frame::v6(9)));
        let want = if ty == 135 { (a, [0; 6]) } else { ([0; 6], a) };
        assert_eq!((k.arp_sha, k.arp_tha), want);
    }

    // A full-size frame comes up whole.
    let big = frame::udp_frame(b, a, IP_A, IP_B, 1, 2, &[0x5a; 1472]);
    assert_eq!(big.len(), 1514);
    key_of(&mut dp, &tx, &big);
}

/// Rewrites carried to B with checksums that verify.
fn rewrite_checksums(hook: Hook) {
    let t = Topo::with_datapath("csum", hook);
    let (a, b) = (t.mac_a, t.mac_b);
    let tx = RawSock::open(&t.a, "eth0");
    let cap = RawSock::open(&t.b, "eth0");
    let (s6, d6) = (frame::v6(1), frame::v6(2));

    t.dpctl_ok(&[
        "add-flow",
        "in_port(1),eth(),eth_type(0x86dd),ipv6(proto=17,frag=no),udp(dst=547)",
        "set(ipv6(src=fd00::77,dst=fd00::99,tclass=0x20/0xfc,hlimit=9)),set(udp(dst=7001)),2",
    ]);
    tx.send(&frame::udp6_frame(b, a, &s6, &d6, 546, 547, b"six"));
    let got = cap.recv_all(WAIT);
    assert_eq!(got.len(), 1);
    let g = &got[0];
    let seg = &g[54..];
    let (src, dst): ([u8; 16], [u8; 16]) = (g[22..38].try_into().unwrap(), g[38..54].try_into().unwrap());
    assert_eq!((src, dst), (frame::v6(0x77), frame::v6(0x99)));
    assert_eq!(g[21], 9, "hop limit");
    let tclass = (u32::from_be_bytes(g[14..18].try_into().unwrap()) >> 20) as u8;
    assert_eq!(tclass, 0x20);
    assert_eq!(u16::from_be_bytes([seg[2], seg[3]]), 7001);
    assert_eq!(frame::l4_csum6(&src, &dst, 17, seg), 0, "UDP/IPv6 checksum");

    t.dpctl_ok(&[
        "add-flow",
        "in_port(1),eth(),eth_type(0x0800),ipv4(proto=6,frag=no),tcp(dst=80)",
        "set(ipv4(src=10.0.0.77)),set(tcp(src=1,dst=8080)),dec_ttl,2",
    ]);
    let seg = frame::tcp4(IP_A, IP_B, 40000, 80, 0x02, b"GET");
    let mut f = frame::eth(b, a, 0x0800);
    f.extend(frame::ipv4_hdr(IP_A, IP_B, 6, seg.len(), 64));
    f.extend(seg);
    tx.send(&f);
    let got = cap.recv_all(WAIT);
    assert_eq!(got.len(), 1);
    let g = &got[0];
    let ip = &g[14..34];
    assert_eq!((&ip[12..16], ip[8]), (&[10u8, 0, 0, 77][..], 63));
    assert_eq!(frame::sum16(ip, 0), 0xffff, "IPv4 header checksum");
    let seg = &g[34..];
    assert_eq!((u16::from_be_bytes([seg[0], seg[1]]), u16::from_be_bytes([seg[2], seg[3]])), (1, 8080));
    assert_eq!(frame::l4_csum4([10, 0, 0, 77], IP_B, 6, seg), 0, "TCP checksum");

    // dec_ttl at TTL 1 drops.
    let seg = frame::tcp4(IP_A, IP_B, 40000, 80, 0x02, b"GET");
    let mut f = frame::eth(b, a, 0x0800);
    f.extend(frame::ipv4_hdr(IP_A, IP_B, 6, seg.len(), 1));
    f.extend(seg);
    tx.send(&f);
    assert!(cap.recv_all(WAIT).is_empty(), "TTL 1 must not be forwarded");
    assert_eq!(t.flow_stats("in_port(1),eth(),eth_type(0x0800)").0, 2);
}

macro_rules! both_hooks {
    ($($name:ident),*) => {
        mod xdp { $( #[test] fn $name() { super::$name(super::Hook::Xdp) } )* }
        mod tc { $( #[test] fn $name() { super::$name(super::Hook::Tc) } )* }
    };
}

both_hooks!(keys, rewrite_checksums);
