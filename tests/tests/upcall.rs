//! Misses reaching userspace, execute, malformed frames, the upcall rate limit,
//! hand-off of multi-output flows from XDP to tc, and a restart that keeps
//! forwarding. Run as root (`cargo xtask test`).
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use oxvs_dp_abi::{Action, FlowKey, UPCALL_MISS, action};
use oxvs_system_tests::{Hook, IP_A, IP_B, RawSock, Topo, frame};
use oxvs_userspace::dpif::{EbpfDatapath, Upcall};

const WAIT: Duration = Duration::from_millis(300);

fn upcalls(dp: &mut EbpfDatapath, max: usize) -> Vec<Upcall> {
    let mut v = Vec::new();
    while v.len() < max {
        match dp.recv_upcall(Duration::from_millis(500)).unwrap() {
            Some(u) => v.push(u),
            None => break,
        }
    }
    v
}

fn be16(v: u16) -> u16 {
    v.to_be()
}

/// A miss arrives with the right key and the packet's bytes; `execute` sends
/// it on through the datapath's own action code.
fn miss_and_execute(hook: Hook) {
    let t = Topo::with_datapath("miss", hook);
    let mut dp = EbpfDatapath::open(&t.dp_options()).unwrap();
    let tx = RawSock::open(&t.a, "eth0");
    let cap = RawSock::open(&t.b, "eth0");
    let f = frame::udp_frame(t.mac_b, t.mac_a, IP_A, IP_B, 40000, 53, b"a question");
    tx.send(&f);
    let ups = upcalls(&mut dp, 1);
    assert_eq!(ups.len(), 1, "no upcall");
    let u = &ups[0];
    assert_eq!(u.reason, UPCALL_MISS);
    assert_eq!(u.packet, f, "upcall bytes differ from the frame sent");
    assert_eq!(u.pkt_len as usize, f.len());
    let k = &u.key;
    let mut want = FlowKey::zeroed();
    want.in_port = 1;
    want.eth_src = t.mac_a;
    want.eth_dst = t.mac_b;
    want.eth_type = be16(0x0800);
    want.nw_src[..4].copy_from_slice(&IP_A);
    want.nw_dst[..4].copy_from_slice(&IP_B);
    want.nw_proto = 17;
    want.nw_ttl = 64;
    want.tp_src = be16(40000);
    want.tp_dst = be16(53);
    assert_eq!(*k, want);
    assert_eq!(t.show_counter("missed"), 1);
    // Nothing reached B on its own.
    assert!(cap.recv_all(WAIT).is_empty());

    let out = Action { kind: action::OUTPUT, arg: 2, ..Default::default() };
    dp.execute(&u.packet, &[out]).unwrap();
    let got = cap.recv_all(WAIT);
    assert_eq!(got, vec![f.clone()], "execute did not deliver the packet");

    // With rewrites between two outputs: B gets the original, C the rewrite.
    let cap_c = RawSock::open(&t.c, "eth0");
    let ttl = Action { kind: action::SET_IPV4_TTL, arg: 5 | 0xff << 8, ..Default::default() };
    let out3 = Action { kind: action::OUTPUT, arg: 3, ..Default::default() };
    // execute() needs the flow's eth_type to apply set(ipv4): it parses the packet.
    dp.execute(&u.packet, &[out, ttl, out3]).unwrap();
    assert_eq!(cap.recv_all(WAIT), vec![f.clone()]);
    let c: Vec<frame::Udp4> = cap_c.recv_all(WAIT).iter().filter_map(|x| frame::parse_udp4(x)).collect();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].ttl, 5);
    assert!(c[0].ip_csum_ok);
}

/// Builds the malformed frames with the partial key OVS's flow_extract gives
/// each, and whether our datapath counts it as malformed.
fn malformed_frames(t: &Topo) -> Vec<(&'static str, Vec<u8>, Box<dyn Fn(&FlowKey)>, bool)> {
    let (a, b) = (t.mac_a, t.mac_b);
    let good = frame::udp_frame(b, a, IP_A, IP_B, 1111, 2222, b"payload!");
    let mut v: Vec<(&'static str, Vec<u8>, Box<dyn Fn(&FlowKey)>, bool)> = Vec::new();

    // Runts: the shortest frame a raw socket sends is the bare 14-byte header
    // (the kernel refuses less). An 802.2 one without SNAP, and an IPv4 one.
    v.push((
        "runt, 802.2",
        frame::eth(b, a, 0x0000),
        Box::new(|k: &FlowKey| {
            assert_eq!((k.eth_type, k.nw_proto), (be16(0x05ff), 0));
        }),
        false,
    ));
    v.push((
        "runt, IPv4 type",
        frame::eth(b, a, 0x0800),
        Box::new(|k: &FlowKey| {
            assert_eq!((k.eth_type, k.nw_proto, k.nw_src), (be16(0x0800), 0, [0; 16]));
        }),
        true,
    ));

    let mut f = frame::eth(b, a, 0x0800);
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0]);
    v.push((
        "truncated IPv4 header",
        f,
        Box::new(|k: &FlowKey| {
            assert_eq!(k.eth_type, be16(0x0800));
            assert_eq!((k.nw_proto, k.nw_src, k.tp_dst), (0, [0; 16], 0));
        }),
        true,
    ));

    let mut f = good.clone();
    f[14] = 0x44; // IHL 4 (< 5)
    v.push((
        "IHL < 5",
        f,
        Box::new(|k: &FlowKey| {
            assert_eq!(k.eth_type, be16(0x0800));
            assert_eq!((k.nw_proto, k.nw_ttl, k.nw_src), (0, 0, [0; 16]));
        }),
        true,
    ));

    let mut f = frame::eth(b, a, 0x0800);
    f.extend(frame::ipv4_hdr(IP_A, IP_B, 6, 4, 64));
    f.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]); // 4 bytes of a 20-byte TCP header
    v.push((
        "truncated TCP",
        f,
        Box::new(|k: &FlowKey| {
            assert_eq!((k.nw_proto, &k.nw_src[..4], k.tp_src, k.tp_dst), (6, &IP_A[..], 0, 0));
        }),
        true,
    ));

    let mut f = frame::eth(b, a, 0x0800);
    let mut ip = frame::ipv4_hdr(IP_A, IP_B, 17, 16, 64);
    ip[6] = 0x00;
    ip[7] = 0x10; // fragment offset 16 (x8 bytes): a later fragment
    ip[10] = 0;
    ip[11] = 0;
    let c = frame::csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend(ip);
    f.extend_from_slice(&[0xaa; 16]);
    v.push((
        "later IPv4 fragment",
        f,
        Box::new(|k: &FlowKey| {
            assert_eq!((k.nw_proto, k.nw_frag, k.tp_src, k.tp_dst), (17, 3, 0, 0));
        }),
        false,
    ));

    // IPv6 with hop-by-hop, destination options, routing, destination options, then UDP.
    let mut f = frame::eth(b, a, 0x86dd);
    let ext: Vec<u8> = [60u8, 43, 60, 17]
        .iter()
        .flat_map(|next| {
            let mut h = vec![*next, 0];
            h.extend_from_slice(&[0; 6]);
            h
        })
        .collect();
    let udp = [0x04, 0xd2, 0x16, 0x2e, 0, 8, 0, 0]; // 1234 → 5678, no checksum
    let plen = (ext.len() + udp.len()) as u16;
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&plen.to_be_bytes());
    f.extend_from_slice(&[0, 64]); // first next header: hop-by-hop (0)
    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    f.extend(ext);
    f.extend_from_slice(&udp);
    v.push((
        "IPv6 extension header chain",
        f,
        Box::new(|k: &FlowKey| {
            assert_eq!(k.eth_type, be16(0x86dd));
            assert_eq!((k.nw_proto, k.nw_ttl, k.tp_src, k.tp_dst), (17, 64, be16(1234), be16(5678)));
            assert_eq!(k.nw_dst[15], 2);
        }),
        false,
    ));

    let mut f = frame::eth(b, a, 0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 64, 0xfd, 0, 0]);
    v.push((
        "truncated IPv6",
        f,
        Box::new(|k: &FlowKey| {
            assert_eq!((k.eth_type, k.nw_proto, k.nw_ttl), (be16(0x86dd), 0, 0));
        }),
        true,
    ));

    let three = frame::tag(&frame::tag(&frame::tag(&good, 0x8100, 30), 0x8100, 20), 0x88a8, 10);
    v.push((
        "three VLAN tags",
        three,
        Box::new(|k: &FlowKey| {
            assert_eq!(k.vlan_tpid, [be16(0x88a8), be16(0x8100)]);
            assert_eq!(k.vlan_tci, [be16(0x1000 | 10), be16(0x1000 | 20)]);
            // The third tag is not parsed: its TPID is the ethertype.
            assert_eq!((k.eth_type, k.nw_proto), (be16(0x8100), 0));
        }),
        false,
    ));

    // Neighbor solicitation with a zero-length option: type/code kept, ND fields zero.
    let mut f = frame::eth(b, a, 0x86dd);
    let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
    icmp.extend_from_slice(&[1, 0, 1, 2, 3, 4, 5, 6]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 9]);
    f.extend(icmp);
    v.push((
        "ND with a zero-length option",
        f,
        Box::new(|k: &FlowKey| {
            assert_eq!((k.nw_proto, k.tp_src, k.tp_dst), (58, be16(135), 0));
            assert_eq!((k.nd_target, k.arp_sha), ([0; 16], [0; 6]));
        }),
        true,
    ));

    let mut f = frame::eth([0xff; 6], a, 0x0806);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 1, 2, 3]);
    v.push((
        "truncated ARP",
        f,
        Box::new(|k: &FlowKey| {
            assert_eq!((k.eth_type, k.nw_proto, k.arp_sha), (be16(0x0806), 0, [0; 6]));
        }),
        true,
    ));
    v
}

fn malformed(hook: Hook) {
    let t = Topo::with_datapath("malf", hook);
    let mut dp = EbpfDatapath::open(&t.dp_options()).unwrap();
    let tx = RawSock::open(&t.a, "eth0");
    let frames = malformed_frames(&t);
    // 1. No flows: each one comes up as a miss with OVS's partial key.
    for (name, f, check, _) in &frames {
        tx.send(f);
        let ups = upcalls(&mut dp, 1);
        assert_eq!(ups.len(), 1, "{name}: no upcall");
        let k = ups[0].key;
        assert_eq!(k.in_port, 1, "{name}");
        assert_eq!((k.eth_src, k.eth_dst), (f[6..12].try_into().unwrap(), f[0..6].try_into().unwrap()), "{name}");
        check(&k);
        assert_eq!(&ups[0].packet, f, "{name}: upcall bytes");
    }
    let n_bad = frames.iter().filter(|f| f.3).count() as u64;
    assert_eq!(t.show_counter("malformed"), n_bad);

    // 2. With forwarding flows they are carried and counted, and good traffic
    // is unaffected.
    t.dpctl_ok(&["add-flow", "in_port(1),eth()", "2"]);
    t.dpctl_ok(&["add-flow", "in_port(2),eth()", "1"]);
    let cap = RawSock::open(&t.b, "eth0");
    for (_, f, _, _) in &frames {
        tx.send(f);
    }
    let got = cap.recv_all(WAIT);
    assert_eq!(got.len(), frames.len(), "every malformed frame is forwarded by the in_port flow");
    assert_eq!(t.show_counter("malformed"), 2 * n_bad);
    assert_eq!(t.flow_stats("in_port(1),").0, frames.len() as u64);
    assert!(t.ping(&t.a, "10.0.0.2", 3), "good traffic after malformed frames");
}

/// One port's flood of new flows can't starve another port's upcalls.
fn upcall_rate_limit(hook: Hook) {
    let t = Topo::with_datapath_opts("rate", hook, &["--upcall-rate=10", "--upcall-burst=5"]);
    let mut dp = EbpfDatapath::open(&t.dp_options()).unwrap();
    let tx_a = RawSock::open(&t.a, "eth0");
    for i in 0..200u16 {
        tx_a.send(&frame::udp_frame(t.mac_b, t.mac_a, IP_A, IP_B, 1000 + i, 53, b"flood"));
    }
    let tx_b = RawSock::open(&t.b, "eth0");
    tx_b.send(&frame::udp_frame(t.mac_a, t.mac_b, IP_B, IP_A, 999, 53, b"other port"));
    let ups = upcalls(&mut dp, 300);
    let from_a = ups.iter().filter(|u| u.key.in_port == 1).count();
    let from_b = ups.iter().filter(|u| u.key.in_port == 2).count();
    // Burst of 5 plus at most a few refilled tokens while the flood was sent.
    assert!((5..=15).contains(&from_a), "port 1 got {from_a} upcalls");
    assert_eq!(from_b, 1, "port 2's upcall was starved");
    let limited = t.show_counter("rate-limited");
    assert_eq!(limited as usize, 200 - from_a);
}

/// Several outputs: XDP hands the packet to the tc hook, which clones it;
/// rewrites between outputs apply only to the later ones.
fn multi_output(hook: Hook) {
    let t = Topo::with_datapath("mout", hook);
    t.dpctl_ok(&["add-flow", "in_port(1),eth(),eth_type(0x0800),ipv4(proto=17,frag=no)", "2,set(ipv4(ttl=7)),3"]);
    let (cb, cc) = (RawSock::open(&t.b, "eth0"), RawSock::open(&t.c, "eth0"));
    let tx = RawSock::open(&t.a, "eth0");
    let f = frame::udp_frame(t.mac_b, t.mac_a, IP_A, IP_B, 5, 6, b"to two ports");
    tx.send(&f);
    assert_eq!(cb.recv_all(WAIT), vec![f.clone()]);
    let c: Vec<frame::Udp4> = cc.recv_all(WAIT).iter().filter_map(|x| frame::parse_udp4(x)).collect();
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].ttl, c[0].ip_csum_ok, c[0].udp_csum_ok), (7, true, true));
    let handoff = t.show_counter("tc-handoff");
    assert_eq!(handoff, if hook == Hook::Xdp { 1 } else { 0 });
    // Counted once, though XDP and tc both looked it up. (B may answer with
    // an ICMP port unreachable: a miss on port 2.)
    assert_eq!(t.show_counter("hit"), 1);
    assert_eq!(t.show_counter("received"), 1 + t.show_counter("missed"));
    let dump = t.dpctl_ok(&["dump-flows"]);
    assert!(dump.contains("packets:1,"), "{dump}");
}

/// Kill the process that holds the datapath: the pinned programs keep
/// forwarding, and a new process takes over the same flows and stats.
fn restart(hook: Hook) {
    let t = Topo::with_datapath("rst", hook);
    t.dpctl_ok(&["add-flow", "in_port(1),eth()", "2"]);
    t.dpctl_ok(&["add-flow", "in_port(2),eth()", "1"]);
    let mut monitor = Command::new(oxvs_system_tests::oxvs_bin())
        .args(["dpctl", &format!("--pin-root={}", t.pin_root.display()), "monitor"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(t.ping(&t.a, "10.0.0.2", 2));
    std::thread::sleep(Duration::from_millis(200));
    monitor.kill().unwrap(); // SIGKILL, by pid
    monitor.wait().unwrap();
    let before = t.flow_stats("in_port(1),").0;
    assert!(before >= 2);
    assert!(t.ping(&t.a, "10.0.0.2", 3), "forwarding stopped when the process died");
    // A new process (this one) takes over: same flows, counters went on.
    let dp = EbpfDatapath::open(&t.dp_options()).unwrap();
    let flows = dp.flow_dump().unwrap();
    assert_eq!(flows.len(), 2);
    let f1 = flows.iter().find(|f| f.key.in_port == 1).unwrap();
    assert!(f1.stats.packets >= before + 3, "{} < {} + 3", f1.stats.packets, before);
    let ports = dp.ports().unwrap();
    assert_eq!(ports.iter().map(|p| p.hook).collect::<Vec<_>>(), vec![hook.name(); 3]);
    // And can change them: deleting the flow stops the traffic.
    drop(dp);
    t.dpctl_ok(&["del-flow", "in_port(1),eth()"]);
    assert!(!t.ping(&t.a, "10.0.0.2", 1));
}

macro_rules! both_hooks {
    ($($name:ident),*) => {
        mod xdp { $( #[test] fn $name() { super::$name(super::Hook::Xdp) } )* }
        mod tc { $( #[test] fn $name() { super::$name(super::Hook::Tc) } )* }
    };
}

both_hooks!(miss_and_execute, malformed, upcall_rate_limit, multi_output, restart);
