//! `oxvs dpctl`: the flow table through the CLI, output format, errors, exit
//! codes, capacities, and that a failed command leaves nothing behind.
use std::process::Command;

use oxvs_system_tests::{Hook, Topo, oxvs_bin, sh_ok};

fn err(t: &Topo, args: &[&str]) -> String {
    let o = t.dpctl(args);
    assert_eq!(
        o.status.code(),
        Some(1),
        "dpctl {args:?} should fail with 1; stdout {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(e.lines().count(), 1, "one-line error expected: {e:?}");
    assert!(o.stdout.is_empty());
    e
}

#[test]
fn flow_table_through_the_cli() {
    let t = Topo::with_datapath("cli", Hook::Xdp);
    let f = "in_port(1),eth(src=00:01:02:03:04:05,dst=ff:ff:ff:ff:ff:ff),eth_type(0x0800),ipv4(src=10.1.0.0/255.255.0.0,proto=17,frag=no),udp(dst=53)";
    t.dpctl_ok(&["add-flow", f, "2"]);
    // Printed back the way ovs-dpctl prints it.
    assert_eq!(t.dpctl_ok(&["dump-flows"]), format!("{f}, packets:0, bytes:0, used:never, actions:2\n"));
    assert_eq!(t.dpctl_ok(&["get-flow", f]), format!("{f}, packets:0, bytes:0, used:never, actions:2\n"));
    // The datapath name may be given, with or without its type.
    assert_eq!(t.dpctl_ok(&["dump-flows", "ebpf@dp0"]), t.dpctl_ok(&["dump-flows", "dp0"]));

    // Adding it again fails; mod-flow changes the actions.
    assert!(err(&t, &["add-flow", f, "3"]).contains("File exists"));
    t.dpctl_ok(&["mod-flow", f, "push_vlan(vid=10,pcp=0),3"]);
    assert!(t.dpctl_ok(&["dump-flows"]).ends_with("actions:push_vlan(vid=10,pcp=0),3\n"));
    assert!(err(&t, &["mod-flow", "in_port(2),eth()", "1"]).contains("No such file or directory"));
    t.dpctl_ok(&["mod-flow", "--may-create", "in_port(2),eth()", "1"]);
    assert_eq!(t.dpctl_ok(&["dump-flows"]).lines().count(), 2);

    // A filter shows only the flows whose key agrees.
    let only = t.dpctl_ok(&["dump-flows", "filter=in_port(2)"]);
    assert_eq!(only, "in_port(2),eth(), packets:0, bytes:0, used:never, actions:1\n");

    // Stats count and --clear zeroes them.
    t.dpctl_ok(&["add-flow", "in_port(3),eth()", "2"]);
    // One frame from C (a raw one: a ping would leave ARP retries behind).
    let frame_c = oxvs_system_tests::frame::udp_frame(t.mac_b, t.mac_c, [10, 0, 0, 3], [10, 0, 0, 2], 1, 2, b"x");
    oxvs_system_tests::RawSock::open(&t.c, "eth0").send(&frame_c);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(t.flow_stats("in_port(3),"), (1, frame_c.len() as u64));
    t.dpctl_ok(&["mod-flow", "--clear", "in_port(3),eth()", "2"]);
    assert_eq!(t.flow_stats("in_port(3),"), (0, 0));

    t.dpctl_ok(&["del-flow", f]);
    assert!(err(&t, &["del-flow", f]).contains("No such file or directory"));
    assert!(err(&t, &["get-flow", f]).contains("No such file or directory"));
    t.dpctl_ok(&["del-flows"]);
    assert_eq!(t.dpctl_ok(&["dump-flows"]), "");
    assert!(t.dpctl_ok(&["show"]).contains("  flows: 0\n  masks: hit:"));
}

#[test]
fn bad_input_is_one_line_and_changes_nothing() {
    let t = Topo::with_datapath("bad", Hook::Tc);
    t.dpctl_ok(&["add-flow", "in_port(1),eth()", "2"]);
    let before = t.dpctl_ok(&["dump-flows"]);
    let cases: &[(&[&str], &str)] = &[
        (&["add-flow", "in_port(1),eth(),eth_type(0x0800),ipv4(src=10.0.0.300)", "2"], "10.0.0.300"),
        (&["add-flow", "in_port(1),ipv5()", "2"], "ipv5"),
        (&["add-flow", "in_port(1),eth(),eth_type(0x0800),ipv4(frag=no),udp(dst=70000)", "2"], "70000"),
        (&["add-flow", "in_port(1),eth(),eth_type(0x0800),ipv4(proto=17,frag=no),udp(dst=53", "2"], "udp(dst=53"),
        (&["add-flow", "in_port(4),eth()", "frobnicate"], "frobnicate"),
        (&["add-flow", "in_port(4),eth()", "5000"], "out of range"),
        (&["add-flow", "in_port(4),eth()", "set(ipv4(ttl=3)),2"], "set(ipv4)"),
        (
            &["add-flow", "in_port(4),eth(),eth_type(0x0800),ipv4(proto=132,frag=no)", "set(sctp(dst=9)),2"],
            "set(tcp)/set(udp)",
        ),
        (&["add-flow", "in_port(4),eth()", &"2,".repeat(17)[..33]], "16"),
        (&["add-flow", "in_port(4),eth()"], "at least 2 arguments"),
        (&["frob"], "unknown command 'frob'"),
        (&["--frob", "show"], "unrecognized option '--frob'"),
        (&["show", "nosuchdp"], "opening datapath nosuchdp failed"),
        (&["add-if", "dp0", "nosuchdev"], "no such device nosuchdev"),
        (&["add-if", "dp0", "pa"], "already exists"),
        (&["add-if", "dp0", "lo,port_no=1"], "port number 1 already exists"),
        (&["add-if", "dp0", "lo,hook=bogus"], "unknown hook"),
        (&["del-if", "dp0", "nosuchport"], "no port named nosuchport"),
        (&["add-dp", "dp0"], "already exists"),
    ];
    for (args, needle) in cases {
        let e = err(&t, args);
        assert!(e.starts_with("oxvs dpctl: "), "{e}");
        assert!(e.contains(needle), "dpctl {args:?}: {e:?} lacks {needle:?}");
    }
    assert_eq!(t.dpctl_ok(&["dump-flows"]), before);
    let show = t.dpctl_ok(&["show"]);
    assert_eq!(show.matches("  port ").count(), 3, "{show}");
    // Traffic still flows as before.
    t.dpctl_ok(&["add-flow", "in_port(2),eth()", "1"]);
    assert!(t.ping(&t.a, "10.0.0.2", 1));
}

#[test]
fn hook_fallback_and_forcing() {
    let t = Topo::with_datapath("hook", Hook::Xdp);
    // A bridge device has no native XDP: auto falls back to tc, xdp is refused.
    sh_ok(Command::new("ip").args(["-n", &t.sw, "link", "add", "d0", "type", "bridge"]));
    sh_ok(Command::new("ip").args(["-n", &t.sw, "link", "add", "d1", "type", "bridge"]));
    let e = err(&t, &["add-if", "dp0", "d1,hook=xdp"]);
    assert!(e.contains("native XDP attach failed"), "{e}");
    t.dpctl_ok(&["add-if", "dp0", "d0"]);
    let show = t.dpctl_ok(&["show"]);
    assert!(show.contains("port 4: d0 (tc)"), "{show}");
    assert!(!show.contains("d1"), "a failed add-if left a port: {show}");
    t.dpctl_ok(&["del-if", "dp0", "d0"]);
    assert!(!t.dpctl_ok(&["show"]).contains("d0"));
    // Port numbers are reused after deletion.
    t.dpctl_ok(&["add-if", "dp0", "d1,hook=tc"]);
    assert!(t.dpctl_ok(&["show"]).contains("port 4: d1 (tc)"));
}

#[test]
fn capacities() {
    let t = Topo::new("cap");
    t.dpctl_ok(&["--max-flows=4", "--max-masks=2", "add-dp", "dp0", "pa", "pb"]);
    assert!(t.dpctl_ok(&["show"]).contains("capacity: flows:4 masks:2"));
    t.dpctl_ok(&["add-flow", "in_port(1),eth()", "2"]);
    t.dpctl_ok(&["add-flow", "in_port(2),eth()", "1"]);
    t.dpctl_ok(&["add-flow", "in_port(1),eth(),eth_type(0x0800)", "2"]);
    // A third distinct mask doesn't fit.
    assert!(
        err(&t, &["add-flow", "in_port(1),eth(src=00:00:00:00:00:01)", "2"]).contains("too many masks (at most 2)")
    );
    t.dpctl_ok(&["add-flow", "in_port(2),eth(),eth_type(0x0800)", "1"]);
    assert!(err(&t, &["add-flow", "in_port(3),eth()", "1"]).contains("flow table full (4 flows)"));
    assert_eq!(t.dpctl_ok(&["dump-flows"]).lines().count(), 4);
    // Freeing a flow makes room again.
    t.dpctl_ok(&["del-flow", "in_port(1),eth(),eth_type(0x0800)"]);
    t.dpctl_ok(&["add-flow", "in_port(3),eth()", "1"]);
    assert!(t.ping(&t.a, "10.0.0.2", 1));
}

#[test]
fn runs_as_ovs_dpctl() {
    let t = Topo::with_datapath("link", Hook::Xdp);
    let dir = std::env::temp_dir().join(format!("oxvs-link-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("ovs-dpctl");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(oxvs_bin(), &link).unwrap();
    let o = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", t.sw))
        .arg(&link)
        .arg(format!("--pin-root={}", t.pin_root.display()))
        .args(["add-flow", "in_port(1),eth(", "2"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.starts_with("ovs-dpctl: parsing flow key: "), "{e}");
}
