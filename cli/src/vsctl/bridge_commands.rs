//! Bridge, port, bond and interface commands (ovs-vsctl.c), working on the
//! vsctl cache and keeping it in step with what they write.
use std::collections::BTreeMap;

use oxvs_ovsdb::{Atom, Datum};
use uuid::Uuid;

use super::{
    context::{CmdResult, Context, Flow, fail},
    db_commands::set_column,
};

fn string_datum(s: &str) -> Datum {
    Datum::scalar(Atom::string(s))
}

fn uuid_set(uuids: &[Uuid]) -> Datum {
    let mut keys: Vec<Atom> = uuids.iter().map(|u| Atom::Uuid(*u)).collect();
    keys.sort();
    keys.dedup();
    Datum { keys, values: None }
}

fn smap_datum(m: &BTreeMap<String, String>) -> Datum {
    Datum {
        keys: m.keys().map(|k| Atom::string(k)).collect(),
        values: Some(m.values().map(|v| Atom::string(v)).collect()),
    }
}

/// Sorted names, one a line.
fn output_sorted(ctx: &mut Context, mut names: Vec<String>) {
    names.sort();
    for n in names {
        ctx.output += &n;
        ctx.output.push('\n');
    }
}

/// ovs-vsctl's vsctl_context_to_string: the command's options and words.
fn command_string(ctx: &Context) -> String {
    let words: Vec<String> = ctx.options.keys().cloned().chain(ctx.argv.iter().cloned()).collect();
    super::process_escape_args(&words)
}

fn add_uuid_to(ctx: &mut Context, table: &str, row: &Uuid, column: &str, add: Uuid) {
    let mut list = ctx.read_uuids(table, row, column);
    list.push(add);
    ctx.write(table, row, column, uuid_set(&list));
}

fn remove_uuid_from(ctx: &mut Context, table: &str, row: &Uuid, column: &str, remove: Uuid) {
    let list: Vec<Uuid> = ctx.read_uuids(table, row, column).into_iter().filter(|u| *u != remove).collect();
    ctx.write(table, row, column, uuid_set(&list));
}

pub fn cmd_add_br(ctx: &mut Context) -> CmdResult {
    let may_exist = ctx.has_option("--may-exist");
    let br_name = ctx.arg(1).to_string();
    if br_name.is_empty() {
        return fail("bridge name must not be empty string");
    }
    let (parent_name, vlan) = match ctx.argv.len() {
        2 => (None, 0),
        4 => {
            let vlan = atoi(ctx.arg(3));
            if !(0..=4095).contains(&vlan) {
                return fail(format!("{}: vlan must be between 0 and 4095", ctx.arg(0)));
            }
            (Some(ctx.arg(2).to_string()), vlan)
        }
        _ => return fail(format!("'{}' command takes exactly 1 or 3 arguments", ctx.arg(0))),
    };
    ctx.populate_cache();
    if may_exist && let Some(br) = ctx.find_bridge(&br_name, false)? {
        match &parent_name {
            None => {
                if br.parent.is_some() {
                    return fail(format!(
                        "\"--may-exist add-br {br_name}\" but {br_name} is a VLAN bridge for VLAN {}",
                        br.vlan
                    ));
                }
            }
            Some(p) => {
                if br.parent.is_none() {
                    return fail(format!(
                        "\"--may-exist add-br {br_name} {p} {vlan}\" but {br_name} is not a VLAN bridge"
                    ));
                } else if br.parent.as_deref() != Some(p) {
                    return fail(format!(
                        "\"--may-exist add-br {br_name} {p} {vlan}\" but {br_name} has the wrong parent {}",
                        br.parent.as_deref().unwrap_or_default()
                    ));
                } else if br.vlan != vlan {
                    return fail(format!(
                        "\"--may-exist add-br {br_name} {p} {vlan}\" but {br_name} is a VLAN bridge for the wrong VLAN {}",
                        br.vlan
                    ));
                }
            }
        }
        return Ok(());
    }
    ctx.check_conflicts(&br_name, &format!("cannot create a bridge named {br_name}"))?;

    let iface = ctx.insert("Interface");
    ctx.write("Interface", &iface, "name", string_datum(&br_name));
    ctx.write("Interface", &iface, "type", string_datum("internal"));
    ctx.new_ifaces.push(iface);
    let port = ctx.insert("Port");
    ctx.write("Port", &port, "name", string_datum(&br_name));
    ctx.write("Port", &port, "interfaces", uuid_set(&[iface]));
    match parent_name {
        None => {
            let br = ctx.insert("Bridge");
            ctx.write("Bridge", &br, "name", string_datum(&br_name));
            ctx.write("Bridge", &br, "ports", uuid_set(&[port]));
            let ovs = ctx.ovs;
            add_uuid_to(ctx, "Open_vSwitch", &ovs, "bridges", br);
        }
        Some(parent_name) => {
            let parent = ctx.find_bridge(&parent_name, false)?;
            if parent.as_ref().is_some_and(|p| p.parent.is_some()) {
                return fail("cannot create bridge with fake bridge as parent");
            }
            let Some(parent) = parent else {
                return fail(format!("parent bridge {parent_name} does not exist"));
            };
            if let Some(conflict) = parent.children.get(&vlan) {
                return fail(format!("bridge {parent_name} already has a child VLAN bridge {conflict} on VLAN {vlan}"));
            }
            ctx.write("Port", &port, "fake_bridge", Datum::scalar(Atom::Boolean(true)));
            ctx.write("Port", &port, "tag", Datum::scalar(Atom::Integer(vlan)));
            let br_cfg = parent.br_cfg.expect("real bridge");
            add_uuid_to(ctx, "Bridge", &br_cfg, "ports", port);
        }
    }
    ctx.invalidate_cache();
    Ok(())
}

/// C's atoi: optional sign and leading digits, 0 if none.
fn atoi(s: &str) -> i64 {
    let t = s.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n: i64 = digits
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0i64, |acc, d| acc.saturating_mul(10).saturating_add((d - b'0') as i64));
    if neg { -n } else { n }
}

fn del_port(ctx: &mut Context, port_name: &str) {
    let port = ctx.cache().ports[port_name].clone();
    let br_cfg = ctx.cache().real_bridge_cfg(&port.bridge);
    remove_uuid_from(ctx, "Bridge", &br_cfg, "ports", port.port_cfg);
    for iface in &port.ifaces {
        let cfg = ctx.cache().ifaces[iface].iface_cfg;
        ctx.delete("Interface", &cfg);
        ctx.cache_mut().del_iface(iface);
    }
    ctx.delete("Port", &port.port_cfg);
    ctx.cache_mut().del_port(port_name);
}

fn del_bridge(ctx: &mut Context, name: &str) {
    let br = ctx.cache().bridges[name].clone();
    for child in br.children.values() {
        del_bridge(ctx, child);
    }
    for port in &br.ports {
        del_port(ctx, port);
    }
    if let Some(br_cfg) = br.br_cfg {
        for fscset in ctx.rows("Flow_Sample_Collector_Set") {
            if ctx.read_uuids("Flow_Sample_Collector_Set", &fscset, "bridge").first() == Some(&br_cfg) {
                ctx.delete("Flow_Sample_Collector_Set", &fscset);
            }
        }
        ctx.delete("Bridge", &br_cfg);
        let ovs = ctx.ovs;
        remove_uuid_from(ctx, "Open_vSwitch", &ovs, "bridges", br_cfg);
    }
    ctx.cache_mut().del_bridge(name);
}

pub fn cmd_del_br(ctx: &mut Context) -> CmdResult {
    let must_exist = !ctx.has_option("--if-exists");
    ctx.populate_cache();
    let name = ctx.arg(1).to_string();
    if ctx.find_bridge(&name, must_exist)?.is_some() {
        del_bridge(ctx, &name);
    }
    Ok(())
}

pub fn cmd_list_br(ctx: &mut Context) -> CmdResult {
    let (mut real, mut fake) = (ctx.has_option("--real"), ctx.has_option("--fake"));
    if !real && !fake {
        real = true;
        fake = true;
    }
    ctx.populate_cache();
    let names = ctx
        .cache()
        .bridges
        .values()
        .filter(|b| if b.parent.is_some() { fake } else { real })
        .map(|b| b.name.clone())
        .collect();
    output_sorted(ctx, names);
    Ok(())
}

pub fn cmd_br_exists(ctx: &mut Context) -> CmdResult {
    ctx.populate_cache();
    let name = ctx.arg(1).to_string();
    if ctx.find_bridge(&name, false)?.is_none() {
        return Err(Flow::Exit(2));
    }
    Ok(())
}

pub fn cmd_br_to_vlan(ctx: &mut Context) -> CmdResult {
    ctx.populate_cache();
    let name = ctx.arg(1).to_string();
    let br = ctx.find_bridge(&name, true)?.expect("must exist");
    ctx.output += &format!("{}\n", br.vlan);
    Ok(())
}

pub fn cmd_br_to_parent(ctx: &mut Context) -> CmdResult {
    ctx.populate_cache();
    let name = ctx.arg(1).to_string();
    let br = ctx.find_bridge(&name, true)?.expect("must exist");
    ctx.output += &format!("{}\n", br.parent.unwrap_or(br.name));
    Ok(())
}

/// The Port row that stands for fake bridge `name`.
fn fake_bridge_port(ctx: &Context, name: &str) -> Result<Uuid, Flow> {
    match ctx.cache().ports.get(name) {
        Some(p) => Ok(p.port_cfg),
        None => fail(format!("{name}: fake bridge has no port of that name")),
    }
}

pub fn cmd_br_set_external_id(ctx: &mut Context) -> CmdResult {
    ctx.populate_cache();
    let name = ctx.arg(1).to_string();
    let br = ctx.find_bridge(&name, true)?.expect("must exist");
    let value = ctx.argv.get(3).cloned();
    let (table, row, key) = match br.br_cfg {
        Some(cfg) => ("Bridge", cfg, ctx.arg(2).to_string()),
        None => ("Port", fake_bridge_port(ctx, &name)?, format!("fake-bridge-{}", ctx.arg(2))),
    };
    let mut ids = ctx.read_smap(table, &row, "external_ids");
    match value {
        Some(v) => {
            ids.insert(key, v);
        }
        None => {
            ids.remove(&key);
        }
    }
    ctx.verify(table, &row, "external_ids");
    ctx.write(table, &row, "external_ids", smap_datum(&ids));
    Ok(())
}

pub fn cmd_br_get_external_id(ctx: &mut Context) -> CmdResult {
    ctx.populate_cache();
    let name = ctx.arg(1).to_string();
    let br = ctx.find_bridge(&name, true)?.expect("must exist");
    let (table, row, prefix) = match br.br_cfg {
        Some(cfg) => ("Bridge", cfg, ""),
        None => ("Port", fake_bridge_port(ctx, &name)?, "fake-bridge-"),
    };
    ctx.verify(table, &row, "external_ids");
    let ids = ctx.read_smap(table, &row, "external_ids");
    match ctx.argv.get(2).cloned() {
        Some(key) => {
            if let Some(v) = ids.get(&format!("{prefix}{key}")) {
                ctx.output += &format!("{v}\n");
            }
        }
        None => {
            for (k, v) in &ids {
                if let Some(rest) = k.strip_prefix(prefix) {
                    ctx.output += &format!("{rest}={v}\n");
                }
            }
        }
    }
    Ok(())
}

pub fn cmd_list_ports(ctx: &mut Context) -> CmdResult {
    ctx.populate_cache();
    let name = ctx.arg(1).to_string();
    let br = ctx.find_bridge(&name, true)?.expect("must exist");
    let cfg = ctx.cache().real_bridge_cfg(&name);
    ctx.verify("Bridge", &cfg, "ports");
    let names = br.ports.iter().filter(|p| **p != br.name).cloned().collect();
    output_sorted(ctx, names);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn add_port(
    ctx: &mut Context,
    br_name: &str,
    port_name: &str,
    may_exist: bool,
    fake_iface: bool,
    iface_names: &[String],
    settings: &[String],
) -> CmdResult {
    if port_name.is_empty() {
        return fail("port name must not be empty string");
    }
    if iface_names.iter().any(String::is_empty) {
        return fail("interface name must not be empty string");
    }
    ctx.populate_cache();
    if may_exist && let Some(port) = ctx.find_port(port_name, false)? {
        let mut want: Vec<String> = iface_names.to_vec();
        want.sort();
        let mut have: Vec<String> = ctx
            .read_uuids("Port", &port.port_cfg, "interfaces")
            .iter()
            .map(|i| ctx.read_string("Interface", i, "name"))
            .collect();
        have.sort();
        if port.bridge != br_name {
            return fail(format!(
                "\"{}\" but {port_name} is actually attached to bridge {}",
                command_string(ctx),
                port.bridge
            ));
        }
        if want != have {
            return fail(format!(
                "\"{}\" but {port_name} actually has interface(s) {}",
                command_string(ctx),
                have.join(", ")
            ));
        }
        return Ok(());
    }
    ctx.check_conflicts(port_name, &format!("cannot create a port named {port_name}"))?;
    for iface in iface_names {
        ctx.check_conflicts(iface, &format!("cannot create an interface named {iface}"))?;
    }
    let bridge = ctx.find_bridge(br_name, true)?.expect("must exist");

    let ifaces: Vec<Uuid> = iface_names
        .iter()
        .map(|n| {
            let i = ctx.insert("Interface");
            ctx.write("Interface", &i, "name", string_datum(n));
            ctx.new_ifaces.push(i);
            i
        })
        .collect();
    let port = ctx.insert("Port");
    ctx.write("Port", &port, "name", string_datum(port_name));
    ctx.write("Port", &port, "interfaces", uuid_set(&ifaces));
    ctx.write("Port", &port, "bond_fake_iface", Datum::scalar(Atom::Boolean(fake_iface)));
    if bridge.parent.is_some() {
        ctx.write("Port", &port, "tag", Datum::scalar(Atom::Integer(bridge.vlan)));
    }
    let port_table = ctx.schema.tables["Port"].clone();
    for s in settings {
        set_column(ctx, &port_table, &port, s, false)?;
    }
    let br_cfg = ctx.cache().real_bridge_cfg(br_name);
    add_uuid_to(ctx, "Bridge", &br_cfg, "ports", port);

    // The port goes to the bridge it was added to (a fake bridge keeps it
    // through its tag, as add_port_to_cache does).
    let tag = ctx.read_optional_integer("Port", &port, "tag");
    let owner = bridge.parent.clone().unwrap_or_else(|| bridge.name.clone());
    let cache = ctx.cache_mut();
    cache.add_port(&owner, port_name, port, tag);
    for (n, i) in iface_names.iter().zip(&ifaces) {
        cache.add_iface(port_name, n, *i);
    }
    Ok(())
}

pub fn cmd_add_port(ctx: &mut Context) -> CmdResult {
    let may_exist = ctx.has_option("--may-exist");
    let (br, port) = (ctx.arg(1).to_string(), ctx.arg(2).to_string());
    let settings = ctx.argv[3..].to_vec();
    add_port(ctx, &br, &port, may_exist, false, std::slice::from_ref(&port), &settings)
}

pub fn cmd_add_bond(ctx: &mut Context) -> CmdResult {
    let may_exist = ctx.has_option("--may-exist");
    let fake_iface = ctx.has_option("--fake-iface");
    let rest = &ctx.argv[3..];
    let n_ifaces = rest.iter().position(|a| a.contains('=')).unwrap_or(rest.len());
    if n_ifaces < 2 {
        return fail(format!("add-bond requires at least 2 interfaces, but only {n_ifaces} were specified"));
    }
    let ifaces = rest[..n_ifaces].to_vec();
    let settings = rest[n_ifaces..].to_vec();
    let (br, port) = (ctx.arg(1).to_string(), ctx.arg(2).to_string());
    add_port(ctx, &br, &port, may_exist, fake_iface, &ifaces, &settings)
}

pub fn cmd_add_bond_iface(ctx: &mut Context) -> CmdResult {
    ctx.populate_cache();
    let may_exist = ctx.has_option("--may-exist");
    let port_name = ctx.arg(1).to_string();
    let port = ctx.find_port(&port_name, true)?.expect("must exist");
    let iface_name = ctx.arg(2).to_string();
    if may_exist && let Some(iface) = ctx.find_iface(&iface_name, false)? {
        if iface.port == port.name {
            return Ok(());
        }
        return fail(format!(
            "\"{}\" but {iface_name} is actually attached to port {}",
            command_string(ctx),
            iface.port
        ));
    }
    ctx.check_conflicts(&iface_name, &format!("cannot create an interface named {iface_name}"))?;
    let iface = ctx.insert("Interface");
    ctx.write("Interface", &iface, "name", string_datum(&iface_name));
    ctx.new_ifaces.push(iface);
    // A partial set update, as OVS's ovsrec_port_update_interfaces_addvalue():
    // bonds changed at the same time by other clients do not conflict. Later
    // commands see the interface through the cache, not through reads of
    // the column.
    ctx.txn.write_partial_set("Port", &port.port_cfg, "interfaces", &Datum::scalar(Atom::Uuid(iface)));
    ctx.cache_mut().add_iface(&port.name, &iface_name, iface);
    Ok(())
}

pub fn cmd_del_bond_iface(ctx: &mut Context) -> CmdResult {
    ctx.populate_cache();
    let iface_name = ctx.argv.last().expect("has args").clone();
    let must_exist = !ctx.has_option("--if-exists");
    let Some(iface) = ctx.find_iface(&iface_name, must_exist)? else { return Ok(()) };
    if ctx.argv.len() > 2 {
        let port_name = ctx.arg(1).to_string();
        let port = ctx.find_port(&port_name, true)?.expect("must exist");
        if iface.port != port.name {
            return fail(format!("port {port_name} does not have an interface {iface_name}"));
        }
    }
    let port = ctx.cache().ports[&iface.port].clone();
    if port.ifaces.len() <= 1 {
        return fail(format!("cannot delete last interface from port {}", port.name));
    }
    // A partial set update (ovsrec_port_update_interfaces_delvalue()). The
    // Interface row's delete is not sent (the server collects it once the
    // mutate drops the last reference) but hides it from later commands.
    ctx.txn.delete_partial_set("Port", &port.port_cfg, "interfaces", &Datum::scalar(Atom::Uuid(iface.iface_cfg)));
    ctx.delete("Interface", &iface.iface_cfg);
    ctx.cache_mut().del_iface(&iface_name);
    Ok(())
}

pub fn cmd_del_port(ctx: &mut Context) -> CmdResult {
    let must_exist = !ctx.has_option("--if-exists");
    let with_iface = ctx.has_option("--with-iface");
    let target = ctx.argv.last().expect("has args").clone();
    ctx.populate_cache();
    let port = if ctx.find_bridge(&target, false)?.is_some() {
        if must_exist {
            return fail(format!(
                "cannot delete port {target} because it is the local port for bridge {target} (deleting this port requires deleting the entire bridge)"
            ));
        }
        None
    } else if !with_iface {
        ctx.find_port(&target, must_exist)?
    } else {
        let mut port = ctx.find_port(&target, false)?;
        if port.is_none()
            && let Some(iface) = ctx.find_iface(&target, false)?
        {
            port = ctx.cache().ports.get(&iface.port).cloned();
        }
        if must_exist && port.is_none() {
            return fail(format!("no port or interface named {target}"));
        }
        port
    };
    let Some(port) = port else { return Ok(()) };
    if ctx.argv.len() == 3 {
        let br_name = ctx.arg(1).to_string();
        let bridge = ctx.find_bridge(&br_name, true)?.expect("must exist");
        if port.bridge != bridge.name {
            let port_bridge = &ctx.cache().bridges[&port.bridge];
            if port_bridge.parent.as_deref() == Some(bridge.name.as_str()) {
                return fail(format!(
                    "bridge {br_name} does not have a port {} (although its child bridge {} does)",
                    ctx.arg(2),
                    port.bridge
                ));
            }
            return fail(format!("bridge {br_name} does not have a port {}", ctx.arg(2)));
        }
    }
    del_port(ctx, &port.name);
    Ok(())
}

pub fn cmd_port_to_br(ctx: &mut Context) -> CmdResult {
    ctx.populate_cache();
    let name = ctx.arg(1).to_string();
    let port = ctx.find_port(&name, true)?.expect("must exist");
    ctx.output += &format!("{}\n", port.bridge);
    Ok(())
}

pub fn cmd_list_ifaces(ctx: &mut Context) -> CmdResult {
    ctx.populate_cache();
    let name = ctx.arg(1).to_string();
    let br = ctx.find_bridge(&name, true)?.expect("must exist");
    ctx.verify_ports();
    let cache = ctx.cache();
    let names =
        br.ports.iter().flat_map(|p| cache.ports[p].ifaces.iter()).filter(|i| **i != br.name).cloned().collect();
    output_sorted(ctx, names);
    Ok(())
}

pub fn cmd_iface_to_br(ctx: &mut Context) -> CmdResult {
    ctx.populate_cache();
    let name = ctx.arg(1).to_string();
    let iface = ctx.find_iface(&name, true)?.expect("must exist");
    let bridge = ctx.cache().ports[&iface.port].bridge.clone();
    ctx.output += &format!("{bridge}\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::atoi;

    #[test]
    fn atoi_like_c() {
        assert_eq!(atoi("12"), 12);
        assert_eq!(atoi("-3"), -3);
        assert_eq!(atoi("9x"), 9);
        assert_eq!(atoi("x"), 0);
    }
}
