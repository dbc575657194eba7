//! ovs-vsctl's view of the switch configuration: bridges (real ones and
//! "fake" VLAN bridges, which are ports of a parent bridge with
//! fake_bridge=true and a tag), ports and interfaces, by name. Built from the
//! database as the transaction sees it and kept up to date by the commands
//! that change it, or dropped (`Context::invalidate_cache`) by those that
//! change the database behind its back.
use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::context::{CmdResult, Context, fail};

#[derive(Debug, Clone)]
pub struct Bridge {
    pub name: String,
    /// The Bridge row; None for a fake bridge.
    pub br_cfg: Option<Uuid>,
    /// The real bridge a fake bridge lives in.
    pub parent: Option<String>,
    pub vlan: i64,
    /// Names of the ports on this bridge, in insertion order.
    pub ports: Vec<String>,
    /// Fake bridges by VLAN.
    pub children: BTreeMap<i64, String>,
}

#[derive(Debug, Clone)]
pub struct Port {
    pub name: String,
    pub port_cfg: Uuid,
    pub bridge: String,
    pub ifaces: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Iface {
    pub iface_cfg: Uuid,
    pub port: String,
}

#[derive(Debug, Clone, Default)]
pub struct Cache {
    pub bridges: BTreeMap<String, Bridge>,
    pub ports: BTreeMap<String, Port>,
    pub ifaces: BTreeMap<String, Iface>,
}

impl Cache {
    fn add_bridge(&mut self, br_cfg: Option<Uuid>, name: &str, parent: Option<&str>, vlan: i64) {
        if let Some(p) = parent {
            let parent = self.bridges.get_mut(p).expect("parent is cached first");
            // OVS warns about a second VLAN bridge for one VLAN and keeps the first.
            parent.children.entry(vlan).or_insert_with(|| name.to_string());
        }
        self.bridges.insert(
            name.to_string(),
            Bridge {
                name: name.to_string(),
                br_cfg,
                parent: parent.map(str::to_string),
                vlan,
                ports: Vec::new(),
                children: BTreeMap::new(),
            },
        );
    }

    /// Adds a port to `bridge`, or to its fake bridge for the port's VLAN.
    pub fn add_port(&mut self, bridge: &str, name: &str, port_cfg: Uuid, tag: Option<i64>) {
        let mut owner = bridge.to_string();
        if let Some(t) = tag.filter(|t| (0..=4095).contains(t))
            && let Some(child) = self.bridges[bridge].children.get(&t)
        {
            owner = child.clone();
        }
        self.bridges.get_mut(&owner).expect("bridge cached").ports.push(name.to_string());
        self.ports
            .insert(name.to_string(), Port { name: name.to_string(), port_cfg, bridge: owner, ifaces: Vec::new() });
    }

    pub fn add_iface(&mut self, port: &str, name: &str, iface_cfg: Uuid) {
        self.ports.get_mut(port).expect("port cached").ifaces.push(name.to_string());
        self.ifaces.insert(name.to_string(), Iface { iface_cfg, port: port.to_string() });
    }

    pub fn del_iface(&mut self, name: &str) {
        if let Some(iface) = self.ifaces.remove(name)
            && let Some(p) = self.ports.get_mut(&iface.port)
        {
            p.ifaces.retain(|i| i != name);
        }
    }

    pub fn del_port(&mut self, name: &str) {
        if let Some(port) = self.ports.remove(name)
            && let Some(b) = self.bridges.get_mut(&port.bridge)
        {
            b.ports.retain(|p| p != name);
        }
    }

    pub fn del_bridge(&mut self, name: &str) {
        if let Some(br) = self.bridges.remove(name)
            && let Some(parent) = br.parent.as_ref().and_then(|p| self.bridges.get_mut(p))
        {
            parent.children.retain(|_, c| c != name);
        }
    }

    /// The real bridge whose Bridge row holds `bridge`'s ports.
    pub fn real_bridge_cfg(&self, bridge: &str) -> Uuid {
        let b = &self.bridges[bridge];
        match &b.parent {
            Some(p) => self.bridges[p].br_cfg.expect("real bridge has a row"),
            None => b.br_cfg.expect("real bridge has a row"),
        }
    }
}

fn is_fake_bridge(ctx: &Context, port: &Uuid) -> bool {
    ctx.read_bool("Port", port, "fake_bridge")
        && ctx.read_optional_integer("Port", port, "tag").is_some_and(|t| (0..=4095).contains(&t))
}

impl Context<'_> {
    /// vsctl_context_populate_cache.
    pub fn populate_cache(&mut self) {
        if self.cache.is_some() {
            return;
        }
        let mut cache = Cache::default();
        let bridges_cfg = self.read_uuids("Open_vSwitch", &self.ovs.clone(), "bridges");
        let bridge_rows: Vec<(Uuid, String)> = bridges_cfg
            .iter()
            .filter(|b| self.exists("Bridge", b))
            .map(|b| (*b, self.read_string("Bridge", b, "name")))
            .collect();

        let mut bridge_names = BTreeSet::new();
        let mut port_names = BTreeSet::new();
        for (br_cfg, br_name) in &bridge_rows {
            if !bridge_names.insert(br_name.clone()) {
                continue;
            }
            cache.add_bridge(Some(*br_cfg), br_name, None, 0);
            for port in self.read_uuids("Bridge", br_cfg, "ports") {
                if !self.exists("Port", &port) {
                    continue;
                }
                let pname = self.read_string("Port", &port, "name");
                if !port_names.insert(pname.clone()) {
                    continue;
                }
                if is_fake_bridge(self, &port) && bridge_names.insert(pname.clone()) {
                    let tag = self.read_optional_integer("Port", &port, "tag").unwrap_or(0);
                    cache.add_bridge(None, &pname, Some(br_name), tag);
                }
            }
        }

        let mut bridge_names = BTreeSet::new();
        for (br_cfg, br_name) in &bridge_rows {
            if !bridge_names.insert(br_name.clone()) {
                continue;
            }
            for port in self.read_uuids("Bridge", br_cfg, "ports") {
                if !self.exists("Port", &port) {
                    continue;
                }
                let pname = self.read_string("Port", &port, "name");
                if cache.ports.contains_key(&pname) {
                    continue;
                }
                if is_fake_bridge(self, &port) && !bridge_names.insert(pname.clone()) {
                    continue;
                }
                let tag = self.read_optional_integer("Port", &port, "tag");
                cache.add_port(br_name, &pname, port, tag);
                for iface in self.read_uuids("Port", &port, "interfaces") {
                    if !self.exists("Interface", &iface) {
                        continue;
                    }
                    let iname = self.read_string("Interface", &iface, "name");
                    if cache.ifaces.contains_key(&iname) {
                        continue;
                    }
                    cache.add_iface(&pname, &iname, iface);
                }
            }
        }
        self.cache = Some(cache);
    }

    pub fn cache(&self) -> &Cache {
        self.cache.as_ref().expect("populate_cache() first")
    }

    pub fn cache_mut(&mut self) -> &mut Cache {
        self.cache.as_mut().expect("populate_cache() first")
    }

    /// verify_ports: the bridge list, every bridge's ports and every port's
    /// interfaces must be unchanged at commit.
    pub fn verify_ports(&mut self) {
        if self.verified_ports {
            return;
        }
        let ovs = self.ovs;
        self.verify("Open_vSwitch", &ovs, "bridges");
        for b in self.rows("Bridge") {
            self.verify("Bridge", &b, "ports");
        }
        for p in self.rows("Port") {
            self.verify("Port", &p, "interfaces");
        }
        self.verified_ports = true;
    }

    /// find_bridge.
    pub fn find_bridge(&mut self, name: &str, must_exist: bool) -> Result<Option<Bridge>, crate::vsctl::context::Flow> {
        let br = self.cache().bridges.get(name).cloned();
        if must_exist && br.is_none() {
            return fail(format!("no bridge named {name}"));
        }
        let ovs = self.ovs;
        self.verify("Open_vSwitch", &ovs, "bridges");
        Ok(br)
    }

    /// find_real_bridge.
    pub fn find_real_bridge(
        &mut self,
        name: &str,
        must_exist: bool,
    ) -> Result<Option<Bridge>, crate::vsctl::context::Flow> {
        let br = self.find_bridge(name, must_exist)?;
        if br.as_ref().is_some_and(|b| b.parent.is_some()) {
            return fail(format!("{name} is a fake bridge"));
        }
        Ok(br)
    }

    /// find_port: a bridge's own (local) port does not count.
    pub fn find_port(&mut self, name: &str, must_exist: bool) -> Result<Option<Port>, crate::vsctl::context::Flow> {
        let port = self.cache().ports.get(name).filter(|p| p.bridge != name).cloned();
        if must_exist && port.is_none() {
            return fail(format!("no port named {name}"));
        }
        self.verify_ports();
        Ok(port)
    }

    /// find_iface: a bridge's own (local) interface does not count.
    pub fn find_iface(&mut self, name: &str, must_exist: bool) -> Result<Option<Iface>, crate::vsctl::context::Flow> {
        let iface = self.cache().ifaces.get(name).cloned();
        let iface = iface.filter(|i| self.cache().ports.get(&i.port).is_none_or(|p| p.bridge != name));
        if must_exist && iface.is_none() {
            return fail(format!("no interface named {name}"));
        }
        self.verify_ports();
        Ok(iface)
    }

    /// check_conflicts: no bridge, port or interface may already use `name`.
    pub fn check_conflicts(&mut self, name: &str, msg: &str) -> CmdResult {
        self.verify_ports();
        let c = self.cache();
        if c.bridges.contains_key(name) {
            return fail(format!("{msg} because a bridge named {name} already exists"));
        }
        if let Some(p) = c.ports.get(name) {
            return fail(format!("{msg} because a port named {name} already exists on bridge {}", p.bridge));
        }
        if let Some(i) = c.ifaces.get(name) {
            let bridge = &c.ports[&i.port].bridge;
            return fail(format!("{msg} because an interface named {name} already exists on bridge {bridge}"));
        }
        Ok(())
    }
}
