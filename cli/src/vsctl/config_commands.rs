//! Switch-wide configuration: init, emer-reset, controllers, fail mode,
//! managers and SSL (ovs-vsctl.c).
use oxvs_ovsdb::{Atom, Datum};
use uuid::Uuid;

use super::context::{CmdResult, Context, fail};

fn uuid_set(uuids: &[Uuid]) -> Datum {
    let mut keys: Vec<Atom> = uuids.iter().map(|u| Atom::Uuid(*u)).collect();
    keys.sort();
    Datum { keys, values: None }
}

fn empty() -> Datum {
    Datum::empty_set()
}

fn empty_map() -> Datum {
    Datum { keys: Vec::new(), values: Some(Vec::new()) }
}

/// "init" only makes sure the Open_vSwitch row exists, which every
/// transaction already does.
pub fn cmd_init(_ctx: &mut Context) -> CmdResult {
    Ok(())
}

pub fn cmd_emer_reset(ctx: &mut Context) -> CmdResult {
    let ovs = ctx.ovs;
    ctx.write("Open_vSwitch", &ovs, "manager_options", empty());
    ctx.write("Open_vSwitch", &ovs, "ssl", empty());
    for br in ctx.rows("Bridge") {
        for col in ["controller", "fail_mode", "mirrors", "netflow", "sflow", "ipfix", "flood_vlans"] {
            ctx.write("Bridge", &br, col, empty());
        }
        // Only the "hwaddr" key of other_config survives.
        let oc = ctx.read_smap("Bridge", &br, "other_config");
        let kept = match oc.get("hwaddr") {
            Some(h) => Datum { keys: vec![Atom::string("hwaddr")], values: Some(vec![Atom::string(h)]) },
            None => empty_map(),
        };
        ctx.write("Bridge", &br, "other_config", kept);
    }
    for port in ctx.rows("Port") {
        ctx.write("Port", &port, "other_config", empty_map());
    }
    for iface in ctx.rows("Interface") {
        ctx.write("Interface", &iface, "ingress_policing_rate", Datum::scalar(Atom::Integer(0)));
        ctx.write("Interface", &iface, "ingress_policing_burst", Datum::scalar(Atom::Integer(0)));
    }
    for table in ["Mirror", "Controller", "Manager", "NetFlow", "SSL", "sFlow", "IPFIX", "Flow_Sample_Collector_Set"] {
        for row in ctx.rows(table) {
            ctx.delete(table, &row);
        }
    }
    ctx.invalidate_cache();
    Ok(())
}

// ----- Controllers -----

fn verify_controllers(ctx: &mut Context, br: &Uuid) {
    ctx.verify("Bridge", br, "controller");
    for c in ctx.read_uuids("Bridge", br, "controller") {
        ctx.verify("Controller", &c, "target");
    }
}

/// The Bridge row of a bridge or of a fake bridge's parent.
fn bridge_cfg(ctx: &mut Context, name: &str, real_only: bool) -> Result<Uuid, super::context::Flow> {
    ctx.populate_cache();
    let br = if real_only { ctx.find_real_bridge(name, true)? } else { ctx.find_bridge(name, true)? };
    let br = br.expect("must exist");
    Ok(ctx.cache().real_bridge_cfg(&br.name))
}

pub fn cmd_get_controller(ctx: &mut Context) -> CmdResult {
    let name = ctx.arg(1).to_string();
    let br = bridge_cfg(ctx, &name, false)?;
    verify_controllers(ctx, &br);
    let mut targets: Vec<String> = ctx
        .read_uuids("Bridge", &br, "controller")
        .iter()
        .map(|c| ctx.read_string("Controller", c, "target"))
        .collect();
    targets.sort();
    for t in targets {
        ctx.output += &format!("{t}\n");
    }
    Ok(())
}

pub fn cmd_del_controller(ctx: &mut Context) -> CmdResult {
    let name = ctx.arg(1).to_string();
    let br = bridge_cfg(ctx, &name, true)?;
    verify_controllers(ctx, &br);
    let controllers = ctx.read_uuids("Bridge", &br, "controller");
    if !controllers.is_empty() {
        for c in &controllers {
            ctx.delete("Controller", c);
        }
        ctx.write("Bridge", &br, "controller", empty());
    }
    Ok(())
}

/// Parses --inactivity-probe like C's atoll.
fn atoll(s: &str) -> i64 {
    let t = s.trim_start();
    let (neg, d) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n =
        d.bytes().take_while(u8::is_ascii_digit).fold(0i64, |a, b| a.wrapping_mul(10).wrapping_add((b - b'0') as i64));
    if neg { n.wrapping_neg() } else { n }
}

fn insert_targets(ctx: &mut Context, table: &str, targets: &[String]) -> Vec<Uuid> {
    let probe = ctx.option_value("--inactivity-probe").map(|p| atoll(&p));
    targets
        .iter()
        .map(|t| {
            let row = ctx.insert(table);
            ctx.write(table, &row, "target", Datum::scalar(Atom::string(t)));
            if let Some(ms) = probe {
                ctx.write(table, &row, "inactivity_probe", Datum::scalar(Atom::Integer(ms)));
            }
            row
        })
        .collect()
}

pub fn cmd_set_controller(ctx: &mut Context) -> CmdResult {
    let name = ctx.arg(1).to_string();
    let br = bridge_cfg(ctx, &name, true)?;
    verify_controllers(ctx, &br);
    for c in ctx.read_uuids("Bridge", &br, "controller") {
        ctx.delete("Controller", &c);
    }
    let targets = ctx.argv[2..].to_vec();
    let controllers = insert_targets(ctx, "Controller", &targets);
    ctx.write("Bridge", &br, "controller", uuid_set(&controllers));
    Ok(())
}

// ----- Fail mode -----

pub fn cmd_get_fail_mode(ctx: &mut Context) -> CmdResult {
    let name = ctx.arg(1).to_string();
    let br = bridge_cfg(ctx, &name, false)?;
    ctx.verify("Bridge", &br, "fail_mode");
    let mode = ctx.read_string("Bridge", &br, "fail_mode");
    if !mode.is_empty() {
        ctx.output += &format!("{mode}\n");
    }
    Ok(())
}

pub fn cmd_del_fail_mode(ctx: &mut Context) -> CmdResult {
    let name = ctx.arg(1).to_string();
    let br = bridge_cfg(ctx, &name, true)?;
    ctx.write("Bridge", &br, "fail_mode", empty());
    Ok(())
}

pub fn cmd_set_fail_mode(ctx: &mut Context) -> CmdResult {
    let name = ctx.arg(1).to_string();
    let br = bridge_cfg(ctx, &name, true)?;
    let mode = ctx.arg(2).to_string();
    if mode != "standalone" && mode != "secure" {
        return fail("fail-mode must be \"standalone\" or \"secure\"");
    }
    ctx.write("Bridge", &br, "fail_mode", Datum::scalar(Atom::string(&mode)));
    Ok(())
}

// ----- Managers -----

fn verify_managers(ctx: &mut Context) {
    let ovs = ctx.ovs;
    ctx.verify("Open_vSwitch", &ovs, "manager_options");
    for m in ctx.read_uuids("Open_vSwitch", &ovs, "manager_options") {
        ctx.verify("Manager", &m, "target");
    }
}

fn delete_managers(ctx: &mut Context) {
    let ovs = ctx.ovs;
    for m in ctx.read_uuids("Open_vSwitch", &ovs, "manager_options") {
        ctx.delete("Manager", &m);
    }
    ctx.write("Open_vSwitch", &ovs, "manager_options", empty());
}

pub fn cmd_get_manager(ctx: &mut Context) -> CmdResult {
    verify_managers(ctx);
    let ovs = ctx.ovs;
    let mut targets: Vec<String> = ctx
        .read_uuids("Open_vSwitch", &ovs, "manager_options")
        .iter()
        .map(|m| ctx.read_string("Manager", m, "target"))
        .collect();
    targets.sort();
    targets.dedup();
    for t in targets {
        ctx.output += &format!("{t}\n");
    }
    Ok(())
}

pub fn cmd_del_manager(ctx: &mut Context) -> CmdResult {
    verify_managers(ctx);
    delete_managers(ctx);
    Ok(())
}

pub fn cmd_set_manager(ctx: &mut Context) -> CmdResult {
    verify_managers(ctx);
    delete_managers(ctx);
    let targets = ctx.argv[1..].to_vec();
    let managers = insert_targets(ctx, "Manager", &targets);
    let ovs = ctx.ovs;
    ctx.write("Open_vSwitch", &ovs, "manager_options", uuid_set(&managers));
    Ok(())
}

// ----- SSL -----

fn current_ssl(ctx: &Context) -> Option<Uuid> {
    ctx.read_uuids("Open_vSwitch", &ctx.ovs, "ssl").first().copied().filter(|s| ctx.exists("SSL", s))
}

pub fn cmd_get_ssl(ctx: &mut Context) -> CmdResult {
    let ovs = ctx.ovs;
    let ssl = current_ssl(ctx);
    ctx.verify("Open_vSwitch", &ovs, "ssl");
    if let Some(ssl) = ssl {
        for col in ["private_key", "certificate", "ca_cert", "bootstrap_ca_cert"] {
            ctx.verify("SSL", &ssl, col);
        }
        let out = format!(
            "Private key: {}\nCertificate: {}\nCA Certificate: {}\nBootstrap: {}\n",
            ctx.read_string("SSL", &ssl, "private_key"),
            ctx.read_string("SSL", &ssl, "certificate"),
            ctx.read_string("SSL", &ssl, "ca_cert"),
            ctx.read_bool("SSL", &ssl, "bootstrap_ca_cert"),
        );
        ctx.output += &out;
    }
    Ok(())
}

pub fn cmd_del_ssl(ctx: &mut Context) -> CmdResult {
    let ovs = ctx.ovs;
    if let Some(ssl) = current_ssl(ctx) {
        ctx.verify("Open_vSwitch", &ovs, "ssl");
        ctx.delete("SSL", &ssl);
        ctx.write("Open_vSwitch", &ovs, "ssl", empty());
    }
    Ok(())
}

pub fn cmd_set_ssl(ctx: &mut Context) -> CmdResult {
    let ovs = ctx.ovs;
    let bootstrap = ctx.has_option("--bootstrap");
    ctx.verify("Open_vSwitch", &ovs, "ssl");
    if let Some(old) = current_ssl(ctx) {
        ctx.delete("SSL", &old);
    }
    let ssl = ctx.insert("SSL");
    for (i, col) in ["private_key", "certificate", "ca_cert"].iter().enumerate() {
        let v = ctx.arg(i + 1).to_string();
        ctx.write("SSL", &ssl, col, Datum::scalar(Atom::string(&v)));
    }
    ctx.write("SSL", &ssl, "bootstrap_ca_cert", Datum::scalar(Atom::Boolean(bootstrap)));
    ctx.write("Open_vSwitch", &ovs, "ssl", uuid_set(&[ssl]));
    Ok(())
}
