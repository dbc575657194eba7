//! `oxvs dpctl` / `ovs-dpctl`: the datapath tool, with ovs-dpctl's commands and
//! its datapath flow syntax.
use std::{path::PathBuf, process::ExitCode};

use oxvs_dp_abi::counter;
use oxvs_userspace::dpif::{
    AttachMode, DpError, DpFlow, DpOptions, EbpfDatapath, FlowStatsSum, monotonic_ns,
    odp::{self, FlowMatch},
};

const USAGE: &str = "\
usage: oxvs dpctl [OPTIONS] COMMAND [ARG...]
  add-dp DP [IFACE...]          create datapath DP, with IFACEs as ports
  del-dp DP                     delete datapath DP (detaches every port)
  add-if DP IFACE[,OPTION]...   add IFACE as a port of DP; options:
                                  port_no=N, hook=auto|xdp|tc
  del-if DP IFACE...            remove IFACE (name or port number) from DP
  dump-dps                      list the datapaths
  show [DP...]                  show datapath counters and ports
  dump-flows [DP] [filter=FLOW] show the flows (whose key agrees with FLOW)
  add-flow [DP] FLOW ACTIONS    add a flow
  mod-flow [DP] FLOW ACTIONS    change a flow's actions
  get-flow [DP] FLOW            show one flow
  del-flow [DP] FLOW            delete a flow
  del-flows [DP]                delete every flow
  monitor [DP]                  print the packets the datapath sends up
                                (misses and userspace actions), as they come
options:
  --pin-root=DIR     bpffs directory for datapaths (default /sys/fs/bpf/oxvs, or $OXVS_PIN_ROOT)
  --clear            (mod-flow) zero the flow's statistics
  --may-create       (mod-flow) add the flow if it does not exist
  -s, --statistics   (show) print per-port statistics too
  --count=N          (monitor) exit after N packets
  --max-flows=N --max-masks=N --upcall-rate=N --upcall-burst=N
                     (add-dp) capacities and the per-port upcall limit
  -h, --help         this help";

struct Opts {
    pin_root: PathBuf,
    clear: bool,
    may_create: bool,
    count: Option<u64>,
    dp: DpOptions,
}

struct Fail(String);

impl From<DpError> for Fail {
    fn from(e: DpError) -> Self {
        Fail(e.to_string())
    }
}

pub fn main(prog: &str, args: Vec<String>) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg)) => {
            eprintln!("{prog}: {msg}");
            ExitCode::from(1)
        }
    }
}

fn num(opt: &str, v: &str) -> Result<u32, Fail> {
    v.parse().map_err(|_| Fail(format!("{opt}: \"{v}\" is not a number")))
}

fn run(args: Vec<String>) -> Result<(), Fail> {
    let mut o = Opts {
        pin_root: std::env::var_os("OXVS_PIN_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(oxvs_userspace::dpif::ebpf::DEFAULT_PIN_ROOT)),
        clear: false,
        may_create: false,
        count: None,
        dp: DpOptions::default(),
    };
    // Options may come anywhere (GNU getopt order, as ovs-dpctl), until "--".
    let mut pos = Vec::new();
    let mut only_pos = false;
    for a in args {
        if only_pos || !a.starts_with('-') || a == "-" {
            pos.push(a);
            continue;
        }
        if a == "--" {
            only_pos = true;
            continue;
        }
        let (k, v) = match a.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let val = |v: Option<String>| v.ok_or_else(|| Fail(format!("option '{k}' requires an argument")));
        match k.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            "--pin-root" => o.pin_root = PathBuf::from(val(v)?),
            "--clear" => o.clear = true,
            "--may-create" => o.may_create = true,
            "-s" | "--statistics" => {}
            "--count" => o.count = Some(num(&k, &val(v)?)? as u64),
            "--max-flows" => o.dp.max_flows = num(&k, &val(v)?)?,
            "--max-masks" => o.dp.max_masks = num(&k, &val(v)?)?,
            "--upcall-rate" => o.dp.upcall_rate = num(&k, &val(v)?)?,
            "--upcall-burst" => o.dp.upcall_burst = num(&k, &val(v)?)?,
            _ => return Err(Fail(format!("unrecognized option '{a}' (use --help for help)"))),
        }
    }
    o.dp.pin_root = o.pin_root.clone();
    let Some(cmd) = pos.first().cloned() else {
        return Err(Fail("missing command name; use --help for help".into()));
    };
    let args = &pos[1..];
    let nargs = |min: usize, max: usize| {
        if args.len() < min {
            Err(Fail(format!("'{cmd}' command requires at least {min} arguments")))
        } else if args.len() > max {
            Err(Fail(format!("'{cmd}' command takes at most {max} arguments")))
        } else {
            Ok(())
        }
    };
    match cmd.as_str() {
        "add-dp" => {
            nargs(1, usize::MAX)?;
            let opts = DpOptions { name: args[0].clone(), ..o.dp.clone() };
            let mut dp = EbpfDatapath::create(&opts)?;
            for i in &args[1..] {
                add_if(&mut dp, i)?;
            }
            Ok(())
        }
        "del-dp" => {
            nargs(1, 1)?;
            open(&o, &args[0])?.destroy()?;
            Ok(())
        }
        "add-if" => {
            nargs(2, usize::MAX)?;
            let mut dp = open(&o, &args[0])?;
            for i in &args[1..] {
                add_if(&mut dp, i)?;
            }
            Ok(())
        }
        "del-if" => {
            nargs(2, usize::MAX)?;
            let mut dp = open(&o, &args[0])?;
            for i in &args[1..] {
                dp.del_port(i)?;
            }
            Ok(())
        }
        "dump-dps" => {
            nargs(0, 0)?;
            for n in EbpfDatapath::list(&o.pin_root) {
                println!("ebpf@{n}");
            }
            Ok(())
        }
        "show" => {
            let names: Vec<String> = if args.is_empty() { EbpfDatapath::list(&o.pin_root) } else { args.to_vec() };
            for n in names {
                show(&open(&o, &n)?)?;
            }
            Ok(())
        }
        "dump-flows" => {
            nargs(0, 2)?;
            // As ovs-dpctl: a last argument `filter=FLOW` is the filter, the
            // other one the datapath.
            let (filter, dpargs) = match args.last().and_then(|a| a.strip_prefix("filter=")) {
                Some(f) => (Some(f.to_string()), &args[..args.len() - 1]),
                None => (None, args),
            };
            if dpargs.len() > 1 {
                return Err(Fail("'dump-flows' takes at most one datapath and one filter=FLOW".into()));
            }
            let (dpname, _) = dp_and_rest(&o, dpargs, 0)?;
            let filter = match filter.as_deref() {
                Some(f) => Some(odp::parse_flow(f).map_err(|e| Fail(format!("parsing flow filter: {e}")))?),
                None => None,
            };
            let mut dp = open(&o, &dpname)?;
            // Dumps are where the order gets refreshed, as a revalidator would.
            dp.sort_masks()?;
            let now = monotonic_ns();
            for f in dp.flow_dump()? {
                if let Some(flt) = &filter
                    && !filter_matches(flt, &f)
                {
                    continue;
                }
                println!("{}", format_dp_flow(&f, now));
            }
            Ok(())
        }
        "add-flow" | "mod-flow" => {
            nargs(2, 3)?;
            let (dpname, rest) = dp_and_rest(&o, args, 2)?;
            let (m, acts) = parse_flow_actions(&rest[0], &rest[1])?;
            let mut dp = open(&o, &dpname)?;
            let (create, modify) = if cmd == "add-flow" { (true, false) } else { (o.may_create, true) };
            dp.flow_put(&m.key, &m.mask, &acts, create, modify, o.clear).map_err(|e| match e {
                DpError::FlowExists => Fail("adding flow failed (File exists)".into()),
                DpError::NoSuchFlow => Fail("updating flow failed (No such file or directory)".into()),
                e => Fail(e.to_string()),
            })
        }
        "get-flow" => {
            nargs(1, 2)?;
            let (dpname, rest) = dp_and_rest(&o, args, 1)?;
            let m = parse_match(&rest[0])?;
            let dp = open(&o, &dpname)?;
            let f = dp.flow_get(&m.key, &m.mask).map_err(|e| match e {
                DpError::NoSuchFlow => Fail("getting flow failed (No such file or directory)".into()),
                e => Fail(e.to_string()),
            })?;
            println!("{}", format_dp_flow(&f, monotonic_ns()));
            Ok(())
        }
        "del-flow" => {
            nargs(1, 2)?;
            let (dpname, rest) = dp_and_rest(&o, args, 1)?;
            let m = parse_match(&rest[0])?;
            let mut dp = open(&o, &dpname)?;
            dp.flow_del(&m.key, &m.mask).map_err(|e| match e {
                DpError::NoSuchFlow => Fail("deleting flow failed (No such file or directory)".into()),
                e => Fail(e.to_string()),
            })?;
            Ok(())
        }
        "monitor" => {
            nargs(0, 1)?;
            let (dpname, _) = dp_and_rest(&o, args, 0)?;
            monitor(&mut open(&o, &dpname)?, o.count)
        }
        "del-flows" => {
            nargs(0, 1)?;
            let (dpname, _) = dp_and_rest(&o, args, 0)?;
            open(&o, &dpname)?.flow_flush()?;
            Ok(())
        }
        _ => Err(Fail(format!("unknown command '{cmd}'; use --help for help"))),
    }
}

fn open(o: &Opts, name: &str) -> Result<EbpfDatapath, Fail> {
    let opts = DpOptions { name: name.to_string(), ..o.dp.clone() };
    EbpfDatapath::open(&opts).map_err(|e| match e {
        DpError::NoSuchDatapath(n) => Fail(format!("opening datapath {n} failed (No such device)")),
        e => Fail(e.to_string()),
    })
}

/// `[DP] ARGS...`: DP is there when there are more arguments than `n`; else the
/// only datapath is meant, as ovs-dpctl does.
fn dp_and_rest(o: &Opts, args: &[String], n: usize) -> Result<(String, Vec<String>), Fail> {
    if args.len() > n {
        let dp = args[0].strip_prefix("ebpf@").unwrap_or(&args[0]).to_string();
        return Ok((dp, args[1..].to_vec()));
    }
    let dps = EbpfDatapath::list(&o.pin_root);
    match dps.len() {
        1 => Ok((dps[0].clone(), args.to_vec())),
        0 => Err(Fail("no datapaths exist".into())),
        _ => Err(Fail("multiple datapaths, specify one".into())),
    }
}

fn parse_match(s: &str) -> Result<FlowMatch, Fail> {
    odp::parse_flow(s).map_err(|e| Fail(format!("parsing flow key: {e}")))
}

fn parse_flow_actions(f: &str, a: &str) -> Result<(FlowMatch, Vec<oxvs_dp_abi::Action>), Fail> {
    let m = parse_match(f)?;
    let acts = odp::parse_actions(a).map_err(|e| Fail(format!("parsing actions: {e}")))?;
    Ok((m, acts))
}

fn add_if(dp: &mut EbpfDatapath, spec: &str) -> Result<(), Fail> {
    let mut parts = spec.split(',');
    let name = parts.next().unwrap_or_default();
    if name.is_empty() {
        return Err(Fail(format!("{spec}: missing interface name")));
    }
    let mut port_no = None;
    let mut mode = AttachMode::Auto;
    for p in parts {
        match p.split_once('=') {
            Some(("port_no", v)) => port_no = Some(num("port_no", v)?),
            Some(("hook", v)) => mode = v.parse().map_err(Fail)?,
            // ovs-dpctl accepts type=system; anything else we can't be.
            Some(("type", "system")) => {}
            Some(("type", t)) => return Err(Fail(format!("{name}: unsupported port type \"{t}\""))),
            _ => return Err(Fail(format!("{name}: bad option \"{p}\" (expected port_no=N or hook=auto|xdp|tc)"))),
        }
    }
    let port = dp.add_port(name, port_no, mode).map_err(|e| Fail(format!("adding {name} as port failed ({e})")))?;
    if port.hook == "xdp" && oxvs_userspace::netdev::driver(name).as_deref() == Some("veth") {
        // The kernel drops XDP-redirected frames into a veth silently otherwise.
        eprintln!(
            "warning: {name} is a veth: frames sent out of it at XDP are dropped unless its peer has GRO on \
             (ethtool -K PEER gro on) or an XDP program"
        );
    }
    Ok(())
}

/// Does a dumped flow fall under the filter? Every bit the filter sets must
/// have the same value in the flow's key.
fn filter_matches(flt: &FlowMatch, f: &DpFlow) -> bool {
    let (fk, fm, k) = (flt.key.words(), flt.mask.words(), f.key.words());
    (0..fk.len()).all(|i| (fk[i] ^ k[i]) & fm[i] == 0)
}

/// OVS's packet_format_tcp_flags letters.
fn tcp_flags(f: u16) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (0x01, 'F'),
        (0x02, 'S'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
        (0x10, '.'),
        (0x40, 'E'),
        (0x80, 'C'),
        (0x100, 'N'),
    ] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    s
}

fn format_stats(s: &FlowStatsSum, now: u64) -> String {
    let used = if s.used_ns == 0 {
        "never".to_string()
    } else {
        format!("{:.3}s", now.saturating_sub(s.used_ns) as f64 / 1e9)
    };
    let mut out = format!("packets:{}, bytes:{}, used:{}", s.packets, s.bytes, used);
    if s.tcp_flags != 0 {
        out.push_str(&format!(", flags:{}", tcp_flags(s.tcp_flags)));
    }
    out
}

fn format_dp_flow(f: &DpFlow, now: u64) -> String {
    let m = FlowMatch { key: f.key, mask: f.mask };
    format!("{}, {}, actions:{}", odp::format_flow(&m), format_stats(&f.stats, now), odp::format_actions(&f.actions))
}

fn show(dp: &EbpfDatapath) -> Result<(), Fail> {
    let s = dp.stats()?;
    let c = |i: u32| s.counters[i as usize];
    let lost = c(counter::UPCALL_LOST) + c(counter::UPCALL_RATELIMITED);
    println!("ebpf@{}:", dp.options().name);
    println!("  lookups: hit:{} missed:{} lost:{}", c(counter::HIT), c(counter::MISS), lost);
    println!("  flows: {}", s.n_flows);
    let pkts = c(counter::HIT) + c(counter::MISS);
    let per = if pkts == 0 { 0.0 } else { c(counter::MASK_LOOKUPS) as f64 / pkts as f64 };
    println!("  masks: hit:{} total:{} hit/pkt:{:.2}", c(counter::MASK_LOOKUPS), s.n_masks, per);
    // OVS's line counts the hits of its mask cache; ours, of both per-CPU
    // caches, each also shown on its own below (a line without "cache" in it,
    // so a script that greps for OVS's line still finds one).
    let cached = c(counter::EMC_HIT) + c(counter::LAST_HIT);
    let rate = if pkts == 0 { 0.0 } else { 100.0 * cached as f64 / pkts as f64 };
    println!("  cache: hit:{} hit-rate:{:.2}%", cached, rate);
    println!("  per-cpu: last-hit:{} emc:{}", c(counter::LAST_HIT), c(counter::EMC_HIT));
    println!(
        "  upcalls: queued:{} lost:{} rate-limited:{}",
        c(counter::UPCALL),
        c(counter::UPCALL_LOST),
        c(counter::UPCALL_RATELIMITED)
    );
    println!(
        "  packets: received:{} malformed:{} tc-handoff:{} action-errors:{} dropped-by-flow:{}",
        c(counter::RX),
        c(counter::MALFORMED),
        c(counter::TC_HANDOFF),
        c(counter::ACTION_ERR),
        c(counter::DROP_ACTION)
    );
    println!("  capacity: flows:{} masks:{}", dp.options().max_flows, dp.options().max_masks);
    for p in dp.ports()? {
        println!("  port {}: {} ({})", p.port_no, p.name, p.hook);
    }
    Ok(())
}

/// Prints each upcall as `miss: <key> len:N` (or `userspace(pid=P): ...`),
/// the key with every field the packet has.
fn monitor(dp: &mut EbpfDatapath, count: Option<u64>) -> Result<(), Fail> {
    use std::io::Write;
    let mut n = 0;
    while count.is_none_or(|c| n < c) {
        let Some(u) = dp.recv_upcall(std::time::Duration::from_secs(1))? else { continue };
        let why =
            if u.reason == oxvs_dp_abi::UPCALL_MISS { "miss".to_string() } else { format!("userspace(pid={})", u.pid) };
        let hook = if u.hook == oxvs_dp_abi::HOOK_XDP { "xdp" } else { "tc" };
        let m = FlowMatch { key: u.key, mask: odp::packet_mask(&u.key) };
        println!("{why}: {} len:{} hook:{hook}", odp::format_flow(&m), u.pkt_len);
        let _ = std::io::stdout().flush();
        n += 1;
    }
    Ok(())
}
