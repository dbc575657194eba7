//! The datapath carrying real packets between namespaces, at XDP and with the
//! tc hook forced. Run as root (`cargo xtask test`).
use std::{net::UdpSocket, time::Duration};

use oxvs_system_tests::{Hook, IP_A, IP_B, RawSock, Topo, frame, in_ns};

const WAIT: Duration = Duration::from_millis(300);

fn udp_sock(ns: &str, addr: &str) -> UdpSocket {
    let addr = addr.to_string();
    in_ns(ns, move || {
        let s = UdpSocket::bind(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        s
    })
}

fn recv_n(s: &UdpSocket, n: usize) -> Vec<(Vec<u8>, std::net::SocketAddr)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while out.len() < n {
        match s.recv_from(&mut buf) {
            Ok((k, from)) => out.push((buf[..k].to_vec(), from)),
            Err(_) => break,
        }
    }
    out
}

fn ping(hook: Hook) {
    let t = Topo::with_datapath("ping", hook);
    let show = t.dpctl_ok(&["show"]);
    assert!(show.contains(&format!("port 1: pa ({})", hook.name())), "{show}");
    assert!(show.contains(&format!("port 2: pb ({})", hook.name())), "{show}");
    // Nothing crosses without flows.
    assert!(!t.ping(&t.a, "10.0.0.2", 1));
    t.dpctl_ok(&["add-flow", "in_port(1),eth()", "2"]);
    t.dpctl_ok(&["add-flow", "in_port(2),eth()", "1"]);
    assert!(t.ping(&t.a, "10.0.0.2", 3), "ping through the datapath failed");
    let (p1, _) = t.flow_stats("in_port(1),");
    let (p2, _) = t.flow_stats("in_port(2),");
    assert!(p1 >= 3 && p2 >= 3, "counters {p1} {p2}");
    // `used` (jiffies in the datapath, CLOCK_MONOTONIC once converted): the
    // last ping was just now, and it ages with the wall clock.
    let used = t.flow_used_secs("in_port(1),").expect("a flow that carried packets was used");
    assert!((0.0..2.0).contains(&used), "used {used}s ago");
    std::thread::sleep(Duration::from_millis(1500));
    let later = t.flow_used_secs("in_port(1),").unwrap();
    assert!((1.3..3.0).contains(&(later - used)), "used {used}s ago, then {later}s ago 1.5 s later");
    // Deleting the flows stops the traffic again.
    t.dpctl_ok(&["del-flows"]);
    assert!(!t.ping(&t.a, "10.0.0.2", 1));
}

/// A /16 source wildcard carries many sources; the counters are exact.
fn udp_wildcard(hook: Hook) {
    let t = Topo::with_datapath("udpw", hook);
    let flow = "in_port(1),eth(),eth_type(0x0800),ipv4(src=10.1.0.0/255.255.0.0,proto=17,frag=no)";
    t.dpctl_ok(&["add-flow", flow, "2"]);
    let rx = udp_sock(&t.b, "10.0.0.2:5000");
    let srcs: Vec<String> = (0..20).map(|i| format!("10.1.{}.{}", i / 5, 10 + i)).collect();
    for s in &srcs {
        oxvs_system_tests::sh_ok(std::process::Command::new("ip").args([
            "-n",
            &t.a,
            "addr",
            "add",
            &format!("{s}/32"),
            "dev",
            "eth0",
        ]));
    }
    let payload = b"hello oxvs";
    in_ns(&t.a, || {
        for s in &srcs {
            let tx = UdpSocket::bind(format!("{s}:0")).unwrap();
            tx.send_to(payload, "10.0.0.2:5000").unwrap();
        }
    });
    let got = recv_n(&rx, srcs.len());
    assert_eq!(got.len(), srcs.len(), "received {} of {}", got.len(), srcs.len());
    let mut from: Vec<String> = got.iter().map(|(_, a)| a.ip().to_string()).collect();
    from.sort();
    let mut want = srcs.clone();
    want.sort();
    assert_eq!(from, want);
    // 14 + 20 + 8 + 10 bytes per frame.
    let (p, b) = t.flow_stats("in_port(1),eth(),eth_type(0x0800),ipv4(src=10.1.0.0/255.255.0.0");
    assert_eq!((p, b), (20, 20 * 52));
    // A source outside the /16 is not carried.
    in_ns(&t.a, || UdpSocket::bind("10.0.0.1:0").unwrap().send_to(payload, "10.0.0.2:5000").unwrap());
    assert!(recv_n(&rx, 1).is_empty());
    assert_eq!(t.flow_stats("in_port(1),").0, 20);
}

fn vlan_push_pop(hook: Hook) {
    let t = Topo::with_datapath("vlan", hook);
    let cap = RawSock::open(&t.b, "eth0");
    // Push: UDP from A leaves toward B with tag 10, pcp 3.
    t.dpctl_ok(&[
        "add-flow",
        "in_port(1),eth(),eth_type(0x0800),ipv4(proto=17,frag=no),udp(dst=6000)",
        "push_vlan(vid=10,pcp=3),2",
    ]);
    in_ns(&t.a, || UdpSocket::bind("10.0.0.1:0").unwrap().send_to(b"tagged", "10.0.0.2:6000").unwrap());
    let frames: Vec<frame::Udp4> = cap.recv_all(WAIT).iter().filter_map(|f| frame::parse_udp4(f)).collect();
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].vlans, vec![(0x8100, (3 << 13) | 10)]);
    assert_eq!(frames[0].payload, b"tagged");
    assert!(frames[0].ip_csum_ok && frames[0].udp_csum_ok);

    // Pop: a frame tagged 20 from A arrives untagged at B's socket.
    t.dpctl_ok(&[
        "add-flow",
        "in_port(1),eth(),eth_type(0x8100),vlan(vid=20,pcp=0),encap(eth_type(0x0800))",
        "pop_vlan,2",
    ]);
    let rx = udp_sock(&t.b, "10.0.0.2:6001");
    let tx = RawSock::open(&t.a, "eth0");
    let f = frame::udp_frame(t.mac_b, t.mac_a, IP_A, IP_B, 4000, 6001, b"was tagged");
    tx.send(&frame::tag(&f, 0x8100, 20));
    let got = recv_n(&rx, 1);
    assert_eq!(got.len(), 1, "popped frame not delivered");
    assert_eq!(got[0].0, b"was tagged");
    let seen: Vec<Vec<u8>> = cap.recv_all(WAIT);
    assert!(seen.iter().any(|s| s == &f), "B should see exactly the untagged frame");
}

/// MAC, IP and port rewrites with TTL set, checked in the receiving namespace
/// (its stack validates the checksums) and by recomputing them.
fn rewrite(hook: Hook) {
    let t = Topo::with_datapath("rw", hook);
    let fake_mac = "02:00:00:00:00:99";
    oxvs_system_tests::sh_ok(std::process::Command::new("ip").args([
        "-n",
        &t.a,
        "neigh",
        "replace",
        "10.0.0.99",
        "lladdr",
        fake_mac,
        "dev",
        "eth0",
    ]));
    let mb = frame::fmt_mac(&t.mac_b);
    t.dpctl_ok(&[
        "add-flow",
        "in_port(1),eth(),eth_type(0x0800),ipv4(dst=10.0.0.99,proto=17,frag=no),udp(dst=7000)",
        &format!(
            "set(eth(dst={mb})),set(ipv4(src=10.0.0.77,dst=10.0.0.2,tos=0x20,ttl=9)),set(udp(src=1234,dst=7001)),2"
        ),
    ]);
    let cap = RawSock::open(&t.b, "eth0");
    let rx = udp_sock(&t.b, "0.0.0.0:7001");
    in_ns(&t.a, || UdpSocket::bind("10.0.0.1:0").unwrap().send_to(b"rewritten", "10.0.0.99:7000").unwrap());
    let got = recv_n(&rx, 1);
    assert_eq!(got.len(), 1, "rewritten datagram not delivered (bad checksum or address?)");
    assert_eq!(got[0].0, b"rewritten");
    assert_eq!(got[0].1.to_string(), "10.0.0.77:1234");
    let f: Vec<frame::Udp4> = cap.recv_all(WAIT).iter().filter_map(|f| frame::parse_udp4(f)).collect();
    assert_eq!(f.len(), 1);
    let f = &f[0];
    assert_eq!(
        (f.dst_mac, f.src, f.dst, f.ttl, f.tos, f.sport, f.dport),
        (t.mac_b, [10, 0, 0, 77], IP_B, 9, 0x20, 1234, 7001)
    );
    assert!(f.ip_csum_ok, "IPv4 header checksum wrong");
    assert!(f.udp_csum_ok, "UDP checksum wrong");
}

fn drop_flow(hook: Hook) {
    let t = Topo::with_datapath("drop", hook);
    t.dpctl_ok(&["add-flow", "in_port(2),eth()", "1"]);
    t.dpctl_ok(&["add-flow", "in_port(1),eth(),eth_type(0x0800),ipv4(proto=1,frag=no)", "drop"]);
    assert!(!t.ping(&t.a, "10.0.0.2", 2));
    assert_eq!(t.flow_stats("in_port(1),").0, 2);
    assert_eq!(t.show_counter("dropped-by-flow"), 2);
}

/// A CPU whose packets keep hitting one flow serves it from its last-hit
/// cache, a copy of the flow: a modify or delete must reach the very next
/// packet, and the flow's counters stay exact.
fn last_hit_follows_flow_changes(hook: Hook) {
    let t = Topo::with_datapath("lhit", hook);
    let flow = "in_port(1),eth(),eth_type(0x0800),ipv4(proto=17,frag=no)";
    t.dpctl_ok(&["add-flow", flow, "2"]);
    let rx = udp_sock(&t.b, "10.0.0.2:5000");
    let tx = RawSock::open(&t.a, "eth0");
    let send = |n: u16| {
        for i in 0..n {
            tx.send(&frame::udp_frame(t.mac_b, t.mac_a, IP_A, IP_B, 4000 + i, 5000, b"last hit"));
        }
    };
    send(20);
    assert_eq!(recv_n(&rx, 20).len(), 20);
    // One sending thread: its frames run the program on its CPU, one after
    // another, so all but the first two are cache hits (unless it migrates).
    let hits = t.show_counter("last-hit");
    assert!(hits >= 10, "{hits} last-hit cache hits of 20 packets");

    t.dpctl_ok(&["mod-flow", flow, "drop"]);
    send(5);
    assert!(recv_n(&rx, 1).is_empty(), "a packet took the flow's old actions");
    assert_eq!(t.show_counter("dropped-by-flow"), 5);

    t.dpctl_ok(&["mod-flow", flow, "2"]);
    send(5);
    assert_eq!(recv_n(&rx, 5).len(), 5, "a packet took the dropped version of the flow");
    assert_eq!(t.flow_stats("in_port(1),").0, 30);
    assert!(t.show_counter("last-hit") > hits, "the cache was not used after the modify");

    let missed = t.show_counter("missed");
    t.dpctl_ok(&["del-flow", flow]);
    send(5);
    assert!(recv_n(&rx, 1).is_empty(), "a packet took the deleted flow");
    // At least: the namespace may send frames of its own (IPv6) that miss too.
    assert!(t.show_counter("missed") >= missed + 5);
}

/// Flows of one mask share bits of the mask's filter (2000 flows in 8192
/// bits make a few hundred pairs): deleting flows, in this process and after a
/// takeover (which rebuilds the bit counts), must leave every remaining flow's
/// bit set, or the datapath would skip the lookup and miss it.
#[test]
fn mask_filter_keeps_shared_bits() {
    use oxvs_dp_abi::{filter_pos, megaflow_hash};
    use oxvs_userspace::dpif::{EbpfDatapath, odp};
    let t = Topo::with_datapath("mflt", Hook::Xdp);
    let parse = |p: u16| {
        odp::parse_flow(&format!("in_port(1),eth(),eth_type(0x0800),ipv4(proto=17,frag=no),udp(dst={p})")).unwrap()
    };
    let acts = odp::parse_actions("2").unwrap();
    let mut dp = EbpfDatapath::open(&t.dp_options()).unwrap();
    let mut by_bit: std::collections::BTreeMap<(u32, u32), Vec<u16>> = Default::default();
    for p in 6000..8000u16 {
        let m = parse(p);
        dp.flow_put(&m.key, &m.mask, &acts, true, false, false).unwrap();
        let id = dp.mask_id(&m.mask).unwrap();
        by_bit.entry(filter_pos(id, megaflow_hash(id, &m.key, &m.mask))).or_default().push(p);
    }
    // Of each bit's flows keep the last; delete the others, half of the bits
    // before a takeover, half after.
    let shared: Vec<Vec<u16>> = by_bit.into_values().filter(|v| v.len() > 1).collect();
    assert!(shared.len() > 50, "only {} bits shared", shared.len());
    let del = |dp: &mut EbpfDatapath, ps: &[u16]| {
        for p in ps {
            let m = parse(*p);
            dp.flow_del(&m.key, &m.mask).unwrap();
        }
    };
    let (before, after) = shared.split_at(shared.len() / 2);
    for v in before {
        del(&mut dp, &v[..v.len() - 1]);
    }
    drop(dp);
    let mut dp = EbpfDatapath::open(&t.dp_options()).unwrap();
    for v in after {
        del(&mut dp, &v[..v.len() - 1]);
    }
    let kept: Vec<u16> = shared.iter().map(|v| *v.last().unwrap()).collect();
    let tx = RawSock::open(&t.a, "eth0");
    for p in &kept {
        tx.send(&frame::udp_frame(t.mac_b, t.mac_a, IP_A, IP_B, 5555, *p, b"filter"));
    }
    std::thread::sleep(WAIT);
    let missed: Vec<(u16, u64)> = kept
        .iter()
        .map(|p| (*p, dp.flow_get(&parse(*p).key, &parse(*p).mask).unwrap().stats.packets))
        .filter(|(_, n)| *n != 1)
        .collect();
    let c = dp.stats().unwrap().counters;
    assert!(
        missed.is_empty(),
        "of {} flows, these carried other than 1 packet: {missed:?}; counters {c:?}",
        kept.len()
    );
}

macro_rules! both_hooks {
    ($($name:ident),*) => {
        mod xdp { $( #[test] fn $name() { super::$name(super::Hook::Xdp) } )* }
        mod tc { $( #[test] fn $name() { super::$name(super::Hook::Tc) } )* }
    };
}

both_hooks!(ping, udp_wildcard, vlan_push_pop, rewrite, drop_flow, last_hit_follows_flow_changes);
