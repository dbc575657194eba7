//! Helpers for the system tests: a three-namespace topology joined only by the
//! oxvs datapath, raw frames in and out, and cleanup that also runs on panic.
//!
//! ```text
//!  ns A: eth0 10.0.0.1 ──veth── pa (port 1) ┐
//!  ns B: eth0 10.0.0.2 ──veth── pb (port 2) ├ ns SW: the datapath's ports,
//!  ns C: eth0 10.0.0.3 ──veth── pc (port 3) ┘ no addresses, no bridge
//! ```
//! The switch side lives in its own namespace so the root namespace is never
//! involved: with no oxvs flow, nothing crosses.
use std::{
    fs,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

pub mod frame;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Fails (never skips) when the test can't run here, naming the setup step.
pub fn require_root() {
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        panic!("system tests need root (network namespaces, XDP): run `cargo xtask test` as root");
    }
}

/// The `oxvs` binary built next to this test binary.
pub fn oxvs_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join("oxvs");
    assert!(p.exists(), "{} missing: build it first (`cargo xtask test` does)", p.display());
    p
}

pub fn sh(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

pub fn sh_ok(cmd: &mut Command) -> String {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ip(args: &[&str]) {
    sh_ok(Command::new("ip").args(args));
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets it
/// creates stay in that namespace.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on this thread only, with a valid netns fd.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

/// Which hook the datapath's ports use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    Tc,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::Tc => "tc",
        }
    }
}

pub struct Topo {
    pub id: String,
    pub sw: String,
    pub a: String,
    pub b: String,
    pub c: String,
    pub pin_root: PathBuf,
    pub dp: String,
    pub mac_a: [u8; 6],
    pub mac_b: [u8; 6],
    pub mac_c: [u8; 6],
}

pub const IP_A: [u8; 4] = [10, 0, 0, 1];
pub const IP_B: [u8; 4] = [10, 0, 0, 2];

fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let s = sh_ok(Command::new("ip").args(["-n", ns, "-o", "link", "show", dev]));
    let m = s.split("link/ether ").nth(1).unwrap().split_whitespace().next().unwrap();
    frame::parse_mac(m)
}

impl Topo {
    /// Namespaces and veths only; the datapath comes with `with_datapath`.
    pub fn new(tag: &str) -> Topo {
        require_root();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}-{}-{}", tag, std::process::id(), n);
        let t = Topo {
            sw: format!("oxsw-{id}"),
            a: format!("oxa-{id}"),
            b: format!("oxb-{id}"),
            c: format!("oxc-{id}"),
            pin_root: PathBuf::from(format!("/sys/fs/bpf/oxvs-test-{id}")),
            dp: "dp0".into(),
            id,
            mac_a: [0; 6],
            mac_b: [0; 6],
            mac_c: [0; 6],
        };
        // From here on Drop cleans up whatever was made.
        let mut t = t;
        for ns in [&t.sw, &t.a, &t.b, &t.c] {
            ip(&["netns", "add", ns]);
        }
        ip(&["link", "add", "pa", "netns", &t.sw, "type", "veth", "peer", "name", "eth0", "netns", &t.a]);
        ip(&["link", "add", "pb", "netns", &t.sw, "type", "veth", "peer", "name", "eth0", "netns", &t.b]);
        ip(&["link", "add", "pc", "netns", &t.sw, "type", "veth", "peer", "name", "eth0", "netns", &t.c]);
        for (ns, addr) in [(&t.a, "10.0.0.1/24"), (&t.b, "10.0.0.2/24"), (&t.c, "10.0.0.3/24")] {
            ip(&["-n", ns, "addr", "add", addr, "dev", "eth0"]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
            // GRO on the host side lets XDP redirects into the veth land (veth
            // drops redirected frames otherwise); TX checksums in software so
            // frames leave with complete checksums (see ARCHITECTURE.md).
            sh_ok(Command::new("ip").args(["netns", "exec", ns, "ethtool", "-K", "eth0", "gro", "on", "tx", "off"]));
            for (k, v) in [
                ("net.ipv6.conf.all.disable_ipv6", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.eth0.rp_filter", "0"),
            ] {
                sh_ok(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", &format!("{k}={v}")]));
            }
        }
        for dev in ["pa", "pb", "pc"] {
            ip(&["-n", &t.sw, "link", "set", dev, "up"]);
        }
        sh_ok(Command::new("ip").args(["netns", "exec", &t.sw, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]));
        t.mac_a = mac_of(&t.a, "eth0");
        t.mac_b = mac_of(&t.b, "eth0");
        t.mac_c = mac_of(&t.c, "eth0");
        // Static neighbours: no ARP needed unless a test wants it.
        let (ma, mb) = (frame::fmt_mac(&t.mac_a), frame::fmt_mac(&t.mac_b));
        ip(&["-n", &t.a, "neigh", "replace", "10.0.0.2", "lladdr", &mb, "dev", "eth0"]);
        ip(&["-n", &t.b, "neigh", "replace", "10.0.0.1", "lladdr", &ma, "dev", "eth0"]);
        t
    }

    /// The topology with datapath dp0 and ports pa (1), pb (2) and pc (3) on `hook`.
    pub fn with_datapath(tag: &str, hook: Hook) -> Topo {
        Topo::with_datapath_opts(tag, hook, &[])
    }

    /// The same, with extra `add-dp` options (capacities, upcall limits).
    pub fn with_datapath_opts(tag: &str, hook: Hook, opts: &[&str]) -> Topo {
        let t = Topo::new(tag);
        let h = format!("hook={}", hook.name());
        let mut args: Vec<&str> = opts.to_vec();
        args.extend(["add-dp", &t.dp]);
        t.dpctl_ok(&args);
        t.dpctl_ok(&[
            "add-if",
            &t.dp,
            &format!("pa,port_no=1,{h}"),
            &format!("pb,port_no=2,{h}"),
            &format!("pc,port_no=3,{h}"),
        ]);
        t
    }

    /// `oxvs dpctl --pin-root=<ours> ARGS` inside the switch namespace.
    pub fn dpctl(&self, args: &[&str]) -> Output {
        sh(Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.sw))
            .arg(oxvs_bin())
            .arg("dpctl")
            .arg(format!("--pin-root={}", self.pin_root.display()))
            .args(args))
    }

    pub fn dpctl_ok(&self, args: &[&str]) -> String {
        let o = self.dpctl(args);
        assert!(o.status.success(), "dpctl {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The datapath's options, for opening it in-process.
    pub fn dp_options(&self) -> oxvs_userspace::dpif::DpOptions {
        oxvs_userspace::dpif::DpOptions { name: self.dp.clone(), pin_root: self.pin_root.clone(), ..Default::default() }
    }

    /// A counter from `dpctl show`'s line `name: ... key:N`.
    pub fn show_counter(&self, key: &str) -> u64 {
        let s = self.dpctl_ok(&["show"]);
        let pat = format!("{key}:");
        for tok in s.split_whitespace() {
            if let Some(v) = tok.strip_prefix(&pat) {
                return v.parse().unwrap();
            }
        }
        panic!("no {key} in show output:\n{s}");
    }

    /// `(packets, bytes)` of the dumped flow whose match text starts with `prefix`.
    pub fn flow_stats(&self, prefix: &str) -> (u64, u64) {
        let d = self.dpctl_ok(&["dump-flows"]);
        let line = d.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no flow {prefix} in\n{d}"));
        let get = |k: &str| -> u64 {
            let s = line.split(&format!("{k}:")).nth(1).unwrap();
            s.split(',').next().unwrap().trim().parse().unwrap()
        };
        (get("packets"), get("bytes"))
    }

    /// Seconds since the flow `prefix` last carried a packet (dump-flows'
    /// `used:`), None for `used:never`.
    pub fn flow_used_secs(&self, prefix: &str) -> Option<f64> {
        let d = self.dpctl_ok(&["dump-flows"]);
        let line = d.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no flow {prefix} in\n{d}"));
        let used = line.split("used:").nth(1).unwrap().split(',').next().unwrap().trim();
        if used == "never" {
            return None;
        }
        Some(used.strip_suffix('s').unwrap_or_else(|| panic!("used:{used}")).parse().unwrap())
    }

    pub fn ping(&self, from: &str, to: &str, count: u32) -> bool {
        sh(Command::new("ip").args([
            "netns",
            "exec",
            from,
            "ping",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            to,
        ]))
        .status
        .success()
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        // Unpin links first (detaches the programs), then the namespaces go
        // with their veths, then whatever pins remain.
        let _ = self.dpctl(&["del-dp", &self.dp]);
        for ns in [&self.a, &self.b, &self.c, &self.sw] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = fs::remove_dir_all(&self.pin_root);
    }
}

/// An AF_PACKET socket on one device of a namespace: sends raw frames, or
/// captures what arrives (VLAN tags the kernel moved to metadata put back).
pub struct RawSock {
    fd: OwnedFd,
}

const ETH_P_ALL: u16 = 0x0003;

impl RawSock {
    pub fn open(ns: &str, dev: &str) -> RawSock {
        let dev = dev.to_string();
        in_ns(ns, move || {
            // SAFETY: plain socket(2) call.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (ETH_P_ALL).to_be() as i32) };
            assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            // SAFETY: fd is a fresh socket we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let ifindex = oxvs_userspace::netdev::ifindex(&dev).expect("device");
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = ETH_P_ALL.to_be();
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: sll is a valid sockaddr_ll.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    &sll as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            let one: libc::c_int = 1;
            // SAFETY: valid option pointer and length.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_AUXDATA,
                    &one as *const _ as *const libc::c_void,
                    4,
                );
            }
            RawSock { fd }
        })
    }

    pub fn send(&self, frame: &[u8]) {
        // SAFETY: frame is a valid buffer; the socket is bound to the device.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr() as *const _, frame.len(), 0) };
        assert_eq!(r, frame.len() as isize, "send: {}", std::io::Error::last_os_error());
    }

    /// Frames received (inbound only) until `wait` passes with nothing new.
    pub fn recv_all(&self, wait: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32 + 1) } <= 0 {
                continue;
            }
            if let Some(f) = self.recv_one() {
                out.push(f);
                deadline = Instant::now() + wait;
            }
        }
    }

    fn recv_one(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        let mut cbuf = [0u64; 32]; // cmsg headers need 8-byte alignment
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut _, iov_len: buf.len() };
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = &mut sll as *mut _ as *mut _;
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut _;
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        // SAFETY: msg points at live buffers.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return None;
        }
        if sll.sll_pkttype == libc::PACKET_OUTGOING {
            return None;
        }
        buf.truncate(n as usize);
        // SAFETY: walking the control messages recvmsg filled in.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                    let aux = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::tpacket_auxdata);
                    if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 && buf.len() >= 12 {
                        let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                            aux.tp_vlan_tpid
                        } else {
                            0x8100
                        };
                        let tci = aux.tp_vlan_tci;
                        let tag = [(tpid >> 8) as u8, tpid as u8, (tci >> 8) as u8, tci as u8];
                        buf.splice(12..12, tag);
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Some(buf)
    }
}
