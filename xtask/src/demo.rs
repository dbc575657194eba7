//! `cargo xtask demo`: two namespaces joined only by the XDP datapath. Flows are
//! installed with `oxvs dpctl`, a ping goes through, the flow dump shows its
//! counters, and everything is torn down (also when a step fails).
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{root, run};

struct Demo {
    sw: String,
    a: String,
    b: String,
    pin_root: String,
    oxvs: String,
}

impl Demo {
    fn say(&self, what: &str) {
        println!("\n# {what}");
    }

    /// Runs a shell-like command, echoing it first.
    fn cmd(&self, args: &[&str]) -> Result<()> {
        println!("$ {}", args.join(" "));
        let st = Command::new(args[0]).args(&args[1..]).status().with_context(|| args[0].to_string())?;
        if !st.success() {
            bail!("`{}` failed ({st})", args.join(" "));
        }
        Ok(())
    }

    /// `oxvs dpctl` in the switch namespace.
    fn dpctl(&self, args: &[&str]) -> Result<()> {
        let net = format!("--net=/run/netns/{}", self.sw);
        let pin = format!("--pin-root={}", self.pin_root);
        let mut v = vec!["nsenter", &net, &self.oxvs, "dpctl", &pin];
        v.extend_from_slice(args);
        self.cmd(&v)
    }

    fn quiet(&self, args: &[&str]) -> Result<()> {
        let st = Command::new(args[0]).args(&args[1..]).output()?;
        if !st.status.success() {
            bail!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&st.stderr));
        }
        Ok(())
    }

    fn build_topology(&self) -> Result<()> {
        self.say("three namespaces: hosts A and B, and SW holding the datapath's two ports");
        for ns in [&self.sw, &self.a, &self.b] {
            self.cmd(&["ip", "netns", "add", ns])?;
        }
        self.cmd(&[
            "ip", "link", "add", "pa", "netns", &self.sw, "type", "veth", "peer", "name", "eth0", "netns", &self.a,
        ])?;
        self.cmd(&[
            "ip", "link", "add", "pb", "netns", &self.sw, "type", "veth", "peer", "name", "eth0", "netns", &self.b,
        ])?;
        for (ns, addr) in [(&self.a, "10.0.0.1/24"), (&self.b, "10.0.0.2/24")] {
            self.cmd(&["ip", "-n", ns, "addr", "add", addr, "dev", "eth0"])?;
            self.cmd(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
            // veth drops frames redirected into it by XDP unless its peer has
            // GRO (NAPI) on or an XDP program of its own.
            self.quiet(&["ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "gro", "on", "tx", "off"])?;
            self.quiet(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        }
        for dev in ["pa", "pb"] {
            self.cmd(&["ip", "-n", &self.sw, "link", "set", dev, "up"])?;
        }
        Ok(())
    }

    fn show(&self) -> Result<()> {
        self.build_topology()?;
        self.say("a datapath with both ports at native XDP");
        self.dpctl(&["add-dp", "demo", "pa,hook=xdp", "pb,hook=xdp"])?;
        self.dpctl(&["show"])?;

        self.say("no flows yet: the ping is a miss, sent up to userspace and dropped");
        let _ = self.cmd(&["ip", "netns", "exec", &self.a, "ping", "-c", "1", "-W", "1", "10.0.0.2"]);

        self.say("flows in OVS's datapath syntax: ARP both ways, IPv4 by source prefix");
        self.dpctl(&["add-flow", "in_port(1),eth(),eth_type(0x0806)", "2"])?;
        self.dpctl(&["add-flow", "in_port(2),eth(),eth_type(0x0806)", "1"])?;
        self.dpctl(&["add-flow", "in_port(1),eth(),eth_type(0x0800),ipv4(src=10.0.0.0/255.255.255.0,frag=no)", "2"])?;
        self.dpctl(&["add-flow", "in_port(2),eth(),eth_type(0x0800),ipv4(src=10.0.0.0/255.255.255.0,frag=no)", "1"])?;

        self.say("the ping goes through the XDP datapath");
        self.cmd(&["ip", "netns", "exec", &self.a, "ping", "-c", "3", "-i", "0.2", "10.0.0.2"])?;

        self.say("the flows with their counters, and the datapath's");
        self.dpctl(&["dump-flows"])?;
        self.dpctl(&["show"])?;
        Ok(())
    }

    fn teardown(&self) {
        println!("\n# teardown");
        let net = format!("--net=/run/netns/{}", self.sw);
        let pin = format!("--pin-root={}", self.pin_root);
        let _ = Command::new("nsenter").args([&net, &self.oxvs, "dpctl", &pin, "del-dp", "demo"]).status();
        for ns in [&self.a, &self.b, &self.sw] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.pin_root);
        println!("namespaces, links and pins removed");
    }
}

pub fn demo() -> Result<()> {
    run(Command::new("cargo").current_dir(root()).args(["build", "--quiet", "-p", "oxvs-cli"]))?;
    let pid = std::process::id();
    let d = Demo {
        sw: format!("oxdemo-sw-{pid}"),
        a: format!("oxdemo-a-{pid}"),
        b: format!("oxdemo-b-{pid}"),
        pin_root: format!("/sys/fs/bpf/oxvs-demo-{pid}"),
        oxvs: root().join("target/debug/oxvs").display().to_string(),
    };
    let r = d.show();
    d.teardown();
    r
}
