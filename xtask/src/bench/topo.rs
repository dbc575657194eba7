//! One configuration's namespaces:
//!
//! ```text
//!  ns A (sender): eth0 ──veth── pa ┐ ns SW (the switch under test)
//!  ns B (sink):   eth0 ──veth── pb ┘
//! ```
//!
//! Names are unique (`oxbench-<pid>-<tag>-…`), and everything made is removed
//! by `Drop`, so also on an error or a panic. A run killed outright leaves its
//! namespaces behind; the next run removes those of dead processes.
use std::{
    fs,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// Prefix of everything the benchmark names, to find leftovers.
const PREFIX: &str = "oxbench-";
pub const SENDER_DEV: &str = "eth0";
pub const SINK_DEV: &str = "eth0";
pub const PORT_A: &str = "pa";
pub const PORT_B: &str = "pb";
/// Fixed, locally administered MACs: each configuration has its own
/// namespaces, so they never meet, and no address has to be read back.
pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

pub struct Topo {
    pub sender: String,
    pub switch: String,
    pub sink: String,
    /// A bpffs directory for this configuration's pins (removed on drop).
    pub pin_root: PathBuf,
    /// Namespaces made so far, for `Drop`.
    made: Vec<String>,
}

/// Runs a command, failing with its output when it fails.
pub fn cmd(args: &[&str]) -> Result<()> {
    let o = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("running {}", args[0]))?;
    if !o.status.success() {
        bail!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok(())
}

fn mac_text(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

impl Topo {
    /// Makes the namespaces and veths, links up, IPv6 off (so nothing but the
    /// benchmark's frames crosses the switch).
    pub fn new(tag: &str) -> Result<Topo> {
        let id = format!("{PREFIX}{}-{tag}", std::process::id());
        let mut t = Topo {
            sender: format!("{id}-a"),
            switch: format!("{id}-sw"),
            sink: format!("{id}-b"),
            pin_root: PathBuf::from(format!("/sys/fs/bpf/{id}")),
            made: Vec::new(),
        };
        for ns in [t.sender.clone(), t.switch.clone(), t.sink.clone()] {
            cmd(&["ip", "netns", "add", &ns])?;
            t.made.push(ns.clone());
            for k in ["all", "default"] {
                t.sysctl(&ns, &format!("net.ipv6.conf.{k}.disable_ipv6=1"))?;
            }
        }
        let (a, sw, b) = (&t.sender, &t.switch, &t.sink);
        cmd(&["ip", "link", "add", PORT_A, "netns", sw, "type", "veth", "peer", "name", SENDER_DEV, "netns", a])?;
        cmd(&["ip", "link", "add", PORT_B, "netns", sw, "type", "veth", "peer", "name", SINK_DEV, "netns", b])?;
        cmd(&["ip", "-n", a, "link", "set", SENDER_DEV, "address", &mac_text(&MAC_A), "up"])?;
        cmd(&["ip", "-n", b, "link", "set", SINK_DEV, "address", &mac_text(&MAC_B), "up"])?;
        for dev in [PORT_A, PORT_B] {
            cmd(&["ip", "-n", sw, "link", "set", dev, "up"])?;
        }
        Ok(t)
    }

    fn sysctl(&self, ns: &str, kv: &str) -> Result<()> {
        cmd(&["ip", "netns", "exec", ns, "sysctl", "-qw", kv])
    }

    /// Joins pa and pb with a Linux bridge in the switch namespace. The sink's
    /// MAC is put in the forwarding table (the sink never sends, so the bridge
    /// would never learn it), so frames are forwarded, not flooded.
    pub fn add_linux_bridge(&self) -> Result<()> {
        let sw = &self.switch;
        cmd(&["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])?;
        for dev in [PORT_A, PORT_B] {
            cmd(&["ip", "-n", sw, "link", "set", dev, "master", "br0"])?;
        }
        cmd(&["ip", "-n", sw, "link", "set", "br0", "up"])?;
        cmd(&["ip", "netns", "exec", sw, "bridge", "fdb", "add", &mac_text(&MAC_B), "dev", PORT_B, "master", "static"])
    }

    /// Gives the switch's port pa a NAPI of its own (GRO on, which a veth
    /// needs to take XDP frames when it has no XDP program: the Linux
    /// bridge) and makes that NAPI threaded, so the switch runs in a kernel
    /// thread that can be pinned to a CPU, not on the sender's.
    pub fn thread_switch_port(&self) -> Result<()> {
        let sw = &self.switch;
        cmd(&["ip", "netns", "exec", sw, "ethtool", "-K", PORT_A, "gro", "on"])?;
        let set = format!("echo 1 > /sys/class/net/{PORT_A}/threaded");
        cmd(&["ip", "netns", "exec", sw, "sh", "-c", &set])
    }

    /// Runs `f` on a thread that has entered network namespace `ns`: device
    /// names, ifindexes, XDP attach and sockets are all per namespace.
    pub fn in_ns<T: Send>(&self, ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let path = format!("/run/netns/{ns}");
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = fs::File::open(&path).with_context(|| path.clone())?;
                // SAFETY: setns(2) on this thread only, with a netns fd we hold open.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns {ns}: {}", std::io::Error::last_os_error());
                }
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veths, which detaches their XDP
        // programs; then the pins go.
        for ns in self.made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = fs::remove_dir_all(&self.pin_root);
    }
}

/// Removes namespaces and pins of earlier runs whose process is gone (a run
/// killed by a signal can't clean up after itself).
pub fn remove_leftovers() {
    let dead = |name: &str| -> bool {
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()) else { return false };
        pid.parse::<u32>().is_ok_and(|p| p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists())
    };
    for (dir, is_ns) in [("/run/netns", true), ("/sys/fs/bpf", false)] {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !dead(&name) {
                continue;
            }
            eprintln!("bench: removing {dir}/{name}, left by an earlier run");
            if is_ns {
                let _ = Command::new("ip").args(["netns", "del", &name]).output();
            } else {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}
