//! The less common ovs-vsctl commands: Auto Attach mappings, conntrack zone
//! timeout policies and datapath capabilities.
use std::collections::BTreeMap;

use oxvs_ovsdb::{Atom, Datum};
use uuid::Uuid;

use super::context::{CmdResult, Context, fail};

/// strtoull's leading number; None when there are no digits.
fn strtoull(s: &str) -> Option<i64> {
    let t = s.trim_start();
    let (neg, d) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits: String = d.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    let n = digits.parse::<u64>().unwrap_or(u64::MAX) as i64;
    Some(if neg { n.wrapping_neg() } else { n })
}

fn int_map(ctx: &Context, table: &str, row: &Uuid, column: &str) -> BTreeMap<i64, Atom> {
    let d = ctx.read(table, row, column);
    d.keys.iter().zip(d.values.iter().flatten()).filter_map(|(k, v)| Some((k.as_integer()?, v.clone()))).collect()
}

fn int_datum(m: &BTreeMap<i64, Atom>) -> Datum {
    let m: BTreeMap<i64, Atom> = m.clone();
    Datum { keys: m.keys().map(|k| Atom::Integer(*k)).collect(), values: Some(m.into_values().collect()) }
}

fn aa_args(ctx: &Context) -> Result<(i64, i64), super::context::Flow> {
    let isid =
        strtoull(ctx.arg(2)).ok_or_else(|| super::context::Flow::Error(format!("Invalid argument {}", ctx.arg(2))))?;
    let vlan =
        strtoull(ctx.arg(3)).ok_or_else(|| super::context::Flow::Error(format!("Invalid argument {}", ctx.arg(3))))?;
    Ok((isid, vlan))
}

fn aa_bridge(ctx: &mut Context) -> Result<Uuid, super::context::Flow> {
    ctx.populate_cache();
    let name = ctx.arg(1).to_string();
    let br = ctx.find_bridge(&name, true)?.expect("must exist");
    Ok(ctx.cache().real_bridge_cfg(&br.name))
}

fn auto_attach(ctx: &Context, br: &Uuid) -> Option<Uuid> {
    ctx.read_uuids("Bridge", br, "auto_attach").first().copied().filter(|a| ctx.exists("AutoAttach", a))
}

pub fn cmd_add_aa_mapping(ctx: &mut Context) -> CmdResult {
    let (isid, vlan) = aa_args(ctx)?;
    let br = aa_bridge(ctx)?;
    let aa = match auto_attach(ctx, &br) {
        Some(aa) => aa,
        None => {
            let aa = ctx.insert("AutoAttach");
            ctx.write("Bridge", &br, "auto_attach", Datum::scalar(Atom::Uuid(aa)));
            aa
        }
    };
    let mut m = int_map(ctx, "AutoAttach", &aa, "mappings");
    m.insert(isid, Atom::Integer(vlan));
    ctx.write("AutoAttach", &aa, "mappings", int_datum(&m));
    Ok(())
}

pub fn cmd_del_aa_mapping(ctx: &mut Context) -> CmdResult {
    let (isid, vlan) = aa_args(ctx)?;
    let br = aa_bridge(ctx)?;
    let Some(aa) = auto_attach(ctx, &br) else { return Ok(()) };
    let m = int_map(ctx, "AutoAttach", &aa, "mappings");
    if m.get(&isid).and_then(Atom::as_integer) == Some(vlan) {
        // As OVS's del_aa_mapping: only pairs differing in both key and
        // value are kept.
        let kept: BTreeMap<i64, Atom> =
            m.into_iter().filter(|(k, v)| *k != isid && v.as_integer() != Some(vlan)).collect();
        ctx.write("AutoAttach", &aa, "mappings", int_datum(&kept));
    }
    Ok(())
}

pub fn cmd_get_aa_mapping(ctx: &mut Context) -> CmdResult {
    let br = aa_bridge(ctx)?;
    ctx.verify("Bridge", &br, "auto_attach");
    if let Some(aa) = auto_attach(ctx, &br) {
        ctx.verify("AutoAttach", &aa, "mappings");
        for (k, v) in int_map(ctx, "AutoAttach", &aa, "mappings") {
            ctx.output += &format!("{k} {}\n", v.as_integer().unwrap_or(0));
        }
    }
    Ok(())
}

// ----- Conntrack zones -----

fn find_datapath(ctx: &Context, name: &str) -> Option<Uuid> {
    let d = ctx.read("Open_vSwitch", &ctx.ovs, "datapaths");
    let i = d.keys.iter().position(|k| k.as_str() == Some(name))?;
    d.values.as_ref()?[i].as_uuid()
}

fn zone_id(arg: &str) -> i64 {
    arg.strip_prefix("zone=").and_then(strtoull).unwrap_or(0)
}

/// "key=value" words into a timeout map (value as C's atoi).
fn parse_timeouts(words: &[String]) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for w in words {
        let (k, v) = w.split_once(['=', ':']).unwrap_or((w.as_str(), ""));
        m.insert(k.to_string(), strtoull(v).unwrap_or(0) as i32 as i64);
    }
    m
}

pub fn cmd_add_zone_tp(ctx: &mut Context) -> CmdResult {
    let dp_name = ctx.arg(1).to_string();
    let zone = zone_id(ctx.arg(2));
    let may_exist = ctx.has_option("--may-exist");
    let Some(dp) = find_datapath(ctx, &dp_name) else { return fail(format!("datapath {dp_name} does not exist")) };
    let n_tps = ctx.argv.len() - 3;
    let zones = int_map(ctx, "Datapath", &dp, "ct_zones");
    let existing = zones.get(&zone).and_then(Atom::as_uuid);
    if n_tps == 0 {
        return fail("No timeout policy");
    }
    if existing.is_some() && !may_exist {
        return fail(format!("zone id {zone} already exists"));
    }
    let want = parse_timeouts(&ctx.argv[3..]);
    let mut tp = None;
    for row in ctx.rows("CT_Timeout_Policy") {
        let d = ctx.read("CT_Timeout_Policy", &row, "timeouts");
        let have: BTreeMap<String, i64> = d
            .keys
            .iter()
            .zip(d.values.iter().flatten())
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_integer()?)))
            .collect();
        if have == want {
            tp = Some(row);
            break;
        }
    }
    let tp = match tp {
        Some(t) => t,
        None => {
            let t = ctx.insert("CT_Timeout_Policy");
            let m: BTreeMap<String, Atom> = want.iter().map(|(k, v)| (k.clone(), Atom::Integer(*v))).collect();
            let d =
                Datum { keys: m.keys().map(|k| Atom::string(k)).collect(), values: Some(m.into_values().collect()) };
            ctx.write("CT_Timeout_Policy", &t, "timeouts", d);
            t
        }
    };
    match existing {
        Some(z) => ctx.write("CT_Zone", &z, "timeout_policy", Datum::scalar(Atom::Uuid(tp))),
        None => {
            let z = ctx.insert("CT_Zone");
            ctx.write("CT_Zone", &z, "timeout_policy", Datum::scalar(Atom::Uuid(tp)));
            // A partial map update (ovsrec_datapath_update_ct_zones_setkey()):
            // zones added to the datapath by others at the same time stay.
            let pair = Datum { keys: vec![Atom::Integer(zone)], values: Some(vec![Atom::Uuid(z)]) };
            ctx.txn.write_partial_map(ctx.replica, "Datapath", &dp, "ct_zones", &pair);
        }
    }
    Ok(())
}

pub fn cmd_del_zone_tp(ctx: &mut Context) -> CmdResult {
    let must_exist = !ctx.has_option("--if-exists");
    let dp_name = ctx.arg(1).to_string();
    let zone = zone_id(ctx.arg(2));
    let Some(dp) = find_datapath(ctx, &dp_name) else { return fail(format!("datapath {dp_name} does not exist")) };
    if !int_map(ctx, "Datapath", &dp, "ct_zones").contains_key(&zone) {
        if must_exist {
            return fail(format!("zone id {zone} does not exist"));
        }
        return Ok(());
    }
    // A partial map update (ovsrec_datapath_update_ct_zones_delkey()).
    ctx.txn.delete_partial_map("Datapath", &dp, "ct_zones", &Datum::scalar(Atom::Integer(zone)));
    Ok(())
}

pub fn cmd_list_zone_tp(ctx: &mut Context) -> CmdResult {
    let name = ctx.arg(1).to_string();
    let Some(dp) = find_datapath(ctx, &name) else { return fail(format!("datapath: {name} record not found")) };
    for (zone, z) in int_map(ctx, "Datapath", &dp, "ct_zones") {
        let mut line = format!("Zone:{zone}, Timeout Policies: ");
        let tp = z.as_uuid().and_then(|z| ctx.read_uuids("CT_Zone", &z, "timeout_policy").first().copied());
        match tp {
            Some(tp) => {
                let d = ctx.read("CT_Timeout_Policy", &tp, "timeouts");
                for (k, v) in d.keys.iter().zip(d.values.iter().flatten()) {
                    line += &format!("{}={} ", k.as_str().unwrap_or(""), v.as_integer().unwrap_or(0));
                }
            }
            None => line += "system default",
        }
        ctx.output += line.trim_end_matches(' ');
        ctx.output.push('\n');
    }
    Ok(())
}

pub fn cmd_list_dp_cap(ctx: &mut Context) -> CmdResult {
    let name = ctx.arg(1).to_string();
    let Some(dp) = find_datapath(ctx, &name) else { return fail(format!("datapath \"{name}\" record not found")) };
    let caps = ctx.read_smap("Datapath", &dp, "capabilities");
    // SMAP_FOR_EACH visits a string hash map in its hash order.
    let caps: Vec<(String, String)> = caps.into_iter().collect();
    let mut line = String::new();
    for (k, v) in crate::ovs_hmap::shash_order(caps.iter().map(|(k, _)| k.as_str())).into_iter().map(|i| &caps[i]) {
        line += &format!("{k}={v} ");
    }
    ctx.output += line.trim_end_matches(' ');
    ctx.output.push('\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_like_c() {
        assert_eq!(strtoull("12"), Some(12));
        assert_eq!(strtoull(" 7x"), Some(7));
        assert_eq!(strtoull("x"), None);
        assert_eq!(zone_id("zone=5"), 5);
        let t = parse_timeouts(&["tcp_syn_sent=30".into(), "icmp_reply=5".into()]);
        assert_eq!(t["tcp_syn_sent"], 30);
        assert_eq!(t["icmp_reply"], 5);
    }
}
