//! The eBPF datapath (OVS's dpif-netlink counterpart): loads the programs and
//! maps, pins them under `<pin_root>/<name>/`, attaches ports, and manages flows.
//!
//! Everything the datapath is lives in bpffs: `maps/<MAP>`, `progs/<prog>`,
//! `links/{xdp,tc}-<ifindex>`. A process that opens the datapath takes over
//! those pins; the userspace indexes (which mask has which id, which stats
//! slots are free) are rebuilt from the maps, so a restart is hitless: the
//! programs keep forwarding while no process holds them.
use std::{
    collections::HashMap as StdHashMap,
    fs, io,
    os::fd::{AsFd, AsRawFd},
    path::{Path, PathBuf},
    sync::Mutex,
    time::Duration,
};

use aya::{
    EbpfLoader,
    maps::{Array, DevMap, HashMap, Map, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{
        LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, Link, PinnedLink},
        tc::{self, TcAttachOptions},
    },
};
use oxvs_dp_abi::{self as abi, *};

use super::{DpError, FlowStatsSum, JiffiesClock, Upcall, flow_gen::FlowGen};
use crate::netdev;

/// Where and how big a datapath is.
#[derive(Clone, Debug)]
pub struct DpOptions {
    /// Datapath name; pins live under `<pin_root>/<name>`.
    pub name: String,
    pub pin_root: PathBuf,
    pub max_flows: u32,
    pub max_masks: u32,
    /// Upcalls per second per in_port (0 = unlimited) and bucket depth.
    pub upcall_rate: u32,
    pub upcall_burst: u32,
}

pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/oxvs";
pub const DEFAULT_DP_NAME: &str = "ovs-system";

impl Default for DpOptions {
    fn default() -> Self {
        DpOptions {
            name: DEFAULT_DP_NAME.into(),
            pin_root: PathBuf::from(DEFAULT_PIN_ROOT),
            max_flows: DEFAULT_MAX_FLOWS,
            max_masks: DEFAULT_MAX_MASKS,
            upcall_rate: 1000,
            upcall_burst: 200,
        }
    }
}

/// Which hook a port's packets are processed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native XDP, falling back to tc when the driver has none.
    Auto,
    Xdp,
    Tc,
}

impl std::str::FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(AttachMode::Auto),
            "xdp" => Ok(AttachMode::Xdp),
            "tc" => Ok(AttachMode::Tc),
            _ => Err(format!("unknown hook \"{s}\" (expected auto, xdp or tc)")),
        }
    }
}

/// A port as the datapath sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpPort {
    pub port_no: u32,
    pub ifindex: u32,
    pub name: String,
    /// "xdp" (XDP, with tc for hand-offs) or "tc".
    pub hook: &'static str,
}

/// A flow as stored, with its summed stats.
#[derive(Clone, Debug)]
pub struct DpFlow {
    pub key: FlowKey,
    pub mask: FlowKey,
    pub actions: Vec<Action>,
    pub tc_only: bool,
    pub stats: FlowStatsSum,
}

/// Datapath-wide counters.
#[derive(Clone, Debug, Default)]
pub struct DpStats {
    pub counters: [u64; counter::N as usize],
    pub n_flows: usize,
    pub n_masks: usize,
}

struct Maps {
    flows: HashMap<MapData, MegaflowKey, FlowEntry>,
    masks: Array<MapData, MaskEntry>,
    order: Array<MapData, u32>,
    mask_hits: PerCpuArray<MapData, u64>,
    stats: PerCpuArray<MapData, FlowStats>,
    config: Array<MapData, DpConfig>,
    ports: Array<MapData, PortInfo>,
    ifport: HashMap<MapData, u32, u32>,
    /// ifindex → port + 1 for small ifindexes (what the datapath reads first).
    ifport_array: Array<MapData, u32>,
    tx: DevMap<MapData>,
    counters: PerCpuArray<MapData, DpCounters>,
    mask_filter: Array<MapData, u64>,
    buckets: Array<MapData, UpcallBucket>,
    flow_gen: FlowGen,
}

/// What `execute` needs, behind one lock: the actions map holds one call's
/// actions at a time.
struct Exec {
    actions: Array<MapData, FlowEntry>,
    /// Opened on first use: most users of the datapath never execute.
    prog: Option<Xdp>,
}

pub struct EbpfDatapath {
    opts: DpOptions,
    dir: PathBuf,
    maps: Maps,
    upcalls: Option<RingBuf<MapData>>,
    /// Mask value → mask id, and flows per mask id.
    mask_ids: StdHashMap<FlowKey, u32>,
    mask_refs: Vec<u32>,
    /// Mask ids in lookup order (what `OXVS_MASK_ORDER` holds).
    order: Vec<u32>,
    /// Free stats slots (a stack).
    free_slots: Vec<u32>,
    /// Flows per set bit of the mask filter (`word * 64 + bit`): a bit is
    /// cleared when its last flow goes.
    filter_refs: StdHashMap<u64, u32>,
    max_flows: u32,
    max_masks: u32,
    exec: Mutex<Exec>,
    ncpus: usize,
    /// `oxvs_clock` and the map it writes, for converting the jiffies in flow stats.
    clock_prog: Xdp,
    clock_map: Array<MapData, ClockSample>,
}

#[cfg(not(oxvs_no_ebpf))]
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/oxvs-datapath.o"));
#[cfg(oxvs_no_ebpf)]
static OBJECT: &[u8] = &[];

fn io_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> DpError {
    DpError::Bpf(format!("{what}: {e}"))
}

/// Mounts bpffs at /sys/fs/bpf when nothing is mounted there (Debian doesn't by default).
fn ensure_bpffs(root: &Path) -> Result<(), DpError> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let has_bpffs = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, mnt, ty) = (f.next(), f.next(), f.next());
        ty == Some("bpf") && mnt.is_some_and(|m| root.starts_with(m))
    });
    if has_bpffs {
        return Ok(());
    }
    let target = Path::new("/sys/fs/bpf");
    if !root.starts_with(target) {
        return Err(DpError::Bpf(format!("{} is not on a bpf filesystem", root.display())));
    }
    let c = |s: &str| std::ffi::CString::new(s).unwrap();
    // SAFETY: all pointers are valid NUL-terminated strings or null data.
    let r =
        unsafe { libc::mount(c("bpf").as_ptr(), c("/sys/fs/bpf").as_ptr(), c("bpf").as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        return Err(io_err("mount bpffs on /sys/fs/bpf", io::Error::last_os_error()));
    }
    Ok(())
}

fn open_map(dir: &Path, name: &str) -> Result<MapData, DpError> {
    MapData::from_pin(dir.join("maps").join(name)).map_err(|e| io_err(format!("open pinned map {name}"), e))
}

impl EbpfDatapath {
    fn dir_of(opts: &DpOptions) -> PathBuf {
        opts.pin_root.join(&opts.name)
    }

    /// Does a datapath with these options exist (are its pins there)?
    pub fn exists(opts: &DpOptions) -> bool {
        Self::dir_of(opts).join("maps").join(abi::maps::FLOWS).exists()
    }

    /// Names of the datapaths under `pin_root`.
    pub fn list(pin_root: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(pin_root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("maps").join(abi::maps::FLOWS).exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Loads the programs (the kernel verifies them here), creates and pins the
    /// maps and programs, then opens the datapath from its pins.
    pub fn create(opts: &DpOptions) -> Result<Self, DpError> {
        if OBJECT.is_empty() {
            return Err(DpError::Bpf(
                "the eBPF datapath object was not built: run `cargo xtask build-ebpf` and rebuild".into(),
            ));
        }
        if opts.max_masks == 0 || opts.max_flows == 0 {
            return Err(DpError::Invalid("max_flows and max_masks must be positive".into()));
        }
        ensure_bpffs(&opts.pin_root)?;
        let dir = Self::dir_of(opts);
        if Self::exists(opts) {
            return Err(DpError::Exists(opts.name.clone()));
        }
        for sub in ["maps", "progs", "links"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| io_err(dir.join(sub).display(), e))?;
        }
        let result = (|| {
            let mut ebpf = EbpfLoader::new()
                .map_max_entries(abi::maps::FLOWS, opts.max_flows)
                .map_max_entries(abi::maps::FLOW_STATS, opts.max_flows)
                .map_max_entries(abi::maps::MASKS, opts.max_masks)
                .map_max_entries(abi::maps::MASK_ORDER, opts.max_masks)
                .map_max_entries(abi::maps::MASK_HITS, opts.max_masks)
                .map_max_entries(abi::maps::MASK_FILTER, opts.max_masks.saturating_mul(FILTER_WORDS_PER_MASK))
                .load(OBJECT)
                .map_err(|e| io_err("load eBPF object", e))?;
            for prog in [PROG_XDP, PROG_XDP_EXEC, PROG_CLOCK] {
                let p: &mut Xdp = ebpf
                    .program_mut(prog)
                    .ok_or_else(|| DpError::Bpf(format!("program {prog} missing from object")))?
                    .try_into()
                    .map_err(|e| io_err(prog, e))?;
                p.load().map_err(|e| verifier_err(prog, e))?;
                p.pin(dir.join("progs").join(prog)).map_err(|e| io_err(prog, e))?;
            }
            let p: &mut SchedClassifier = ebpf
                .program_mut(PROG_TC)
                .ok_or_else(|| DpError::Bpf(format!("program {PROG_TC} missing from object")))?
                .try_into()
                .map_err(|e| io_err(PROG_TC, e))?;
            p.load().map_err(|e| verifier_err(PROG_TC, e))?;
            p.pin(dir.join("progs").join(PROG_TC)).map_err(|e| io_err(PROG_TC, e))?;
            for name in abi::maps::ALL {
                let m = ebpf.map(name).ok_or_else(|| DpError::Bpf(format!("map {name} missing from object")))?;
                m.pin(dir.join("maps").join(name)).map_err(|e| io_err(format!("pin map {name}"), e))?;
            }
            Ok::<_, DpError>(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        let mut dp = Self::open(opts)?;
        let jiffy_ns = dp.measure_jiffy()?;
        dp.set_config(|c| {
            c.upcall_rate = opts.upcall_rate;
            c.upcall_burst = opts.upcall_burst;
            c.jiffy_ns = jiffy_ns;
        })?;
        Ok(dp)
    }

    /// Takes over an existing datapath from its pins.
    pub fn open(opts: &DpOptions) -> Result<Self, DpError> {
        let dir = Self::dir_of(opts);
        if !Self::exists(opts) {
            return Err(DpError::NoSuchDatapath(opts.name.clone()));
        }
        let m = |n| open_map(&dir, n);
        let conv = |what: &str, e: aya::maps::MapError| io_err(what, e);
        let maps = Maps {
            flows: HashMap::try_from(Map::HashMap(m(abi::maps::FLOWS)?)).map_err(|e| conv("flows", e))?,
            masks: Array::try_from(Map::Array(m(abi::maps::MASKS)?)).map_err(|e| conv("masks", e))?,
            order: Array::try_from(Map::Array(m(abi::maps::MASK_ORDER)?)).map_err(|e| conv("order", e))?,
            mask_hits: PerCpuArray::try_from(Map::PerCpuArray(m(abi::maps::MASK_HITS)?))
                .map_err(|e| conv("mask hits", e))?,
            stats: PerCpuArray::try_from(Map::PerCpuArray(m(abi::maps::FLOW_STATS)?))
                .map_err(|e| conv("flow stats", e))?,
            config: Array::try_from(Map::Array(m(abi::maps::CONFIG)?)).map_err(|e| conv("config", e))?,
            ports: Array::try_from(Map::Array(m(abi::maps::PORTS)?)).map_err(|e| conv("ports", e))?,
            ifport: HashMap::try_from(Map::HashMap(m(abi::maps::IFPORT)?)).map_err(|e| conv("ifport", e))?,
            ifport_array: Array::try_from(Map::Array(m(abi::maps::IFPORT_ARRAY)?)).map_err(|e| conv("ifport", e))?,
            tx: DevMap::try_from(Map::DevMap(m(abi::maps::TX_PORTS)?)).map_err(|e| conv("tx ports", e))?,
            counters: PerCpuArray::try_from(Map::PerCpuArray(m(abi::maps::COUNTERS)?))
                .map_err(|e| conv("counters", e))?,
            mask_filter: Array::try_from(Map::Array(m(abi::maps::MASK_FILTER)?)).map_err(|e| conv("mask filter", e))?,
            buckets: Array::try_from(Map::Array(m(abi::maps::BUCKETS)?)).map_err(|e| conv("buckets", e))?,
            flow_gen: FlowGen::map(&m(abi::maps::FLOW_GEN)?).map_err(|e| io_err("map flow generation", e))?,
        };
        let exec = Exec {
            actions: Array::try_from(Map::Array(m(abi::maps::EXEC)?)).map_err(|e| conv("exec", e))?,
            prog: None,
        };
        let clock_map = Array::try_from(Map::Array(m(abi::maps::CLOCK)?)).map_err(|e| conv("clock", e))?;
        let clock_prog = Xdp::from_pin(dir.join("progs").join(PROG_CLOCK), aya_obj::programs::XdpAttachType::Interface)
            .map_err(|e| io_err("open clock program", e))?;
        let max_flows = maps.stats.len();
        let max_masks = maps.masks.len();
        let ncpus = aya::util::nr_cpus().map_err(|(w, e)| io_err(w, e))?;
        let mut dp = EbpfDatapath {
            opts: DpOptions { max_flows, max_masks, ..opts.clone() },
            dir,
            maps,
            upcalls: None,
            mask_ids: StdHashMap::new(),
            mask_refs: vec![0; max_masks as usize],
            order: Vec::new(),
            free_slots: Vec::new(),
            filter_refs: StdHashMap::new(),
            max_flows,
            max_masks,
            exec: Mutex::new(exec),
            ncpus,
            clock_prog,
            clock_map,
        };
        dp.rebuild_index()?;
        Ok(dp)
    }

    /// Opens the datapath, creating it when it doesn't exist.
    pub fn open_or_create(opts: &DpOptions) -> Result<Self, DpError> {
        if Self::exists(opts) { Self::open(opts) } else { Self::create(opts) }
    }

    pub fn options(&self) -> &DpOptions {
        &self.opts
    }

    /// Rebuilds the userspace indexes from the maps (after a takeover).
    fn rebuild_index(&mut self) -> Result<(), DpError> {
        let cfg = self.config()?;
        let n = cfg.n_masks.min(self.max_masks);
        self.order.clear();
        self.mask_ids.clear();
        for i in 0..n {
            let id = self.maps.order.get(&i, 0).map_err(|e| io_err("read mask order", e))?;
            let m = self.maps.masks.get(&id, 0).map_err(|e| io_err("read mask", e))?;
            self.order.push(id);
            self.mask_ids.insert(m.mask, id);
        }
        let mut used = vec![false; self.max_flows as usize];
        self.mask_refs = vec![0; self.max_masks as usize];
        self.filter_refs.clear();
        for kv in self.maps.flows.iter() {
            let (k, v) = kv.map_err(|e| io_err("read flows", e))?;
            // Whoever inserted the flow set its bit first: only the counts are rebuilt.
            let (word, bit) = filter_pos(v.mask_id, k.hash);
            *self.filter_refs.entry(word as u64 * 64 + bit as u64).or_insert(0) += 1;
            if let Some(u) = used.get_mut(v.slot as usize) {
                *u = true;
            }
            if let Some(r) = self.mask_refs.get_mut(v.mask_id as usize) {
                *r += 1;
            }
        }
        self.free_slots = (0..self.max_flows).rev().filter(|s| !used[*s as usize]).collect();
        Ok(())
    }

    pub fn config(&self) -> Result<DpConfig, DpError> {
        self.maps.config.get(&0, 0).map_err(|e| io_err("read config", e))
    }

    pub fn set_config(&mut self, f: impl FnOnce(&mut DpConfig)) -> Result<(), DpError> {
        let mut c = self.config()?;
        f(&mut c);
        self.maps.config.set(0, c, 0).map_err(|e| io_err("write config", e))
    }

    // ---- ports ------------------------------------------------------------

    pub fn ports(&self) -> Result<Vec<DpPort>, DpError> {
        let mut v = Vec::new();
        for kv in self.maps.ifport.iter() {
            let (ifindex, port_no) = kv.map_err(|e| io_err("read ports", e))?;
            let hook = if self.link_path("xdp", ifindex).exists() { "xdp" } else { "tc" };
            let name = netdev::name(ifindex).unwrap_or_else(|| format!("<ifindex {ifindex}>"));
            v.push(DpPort { port_no, ifindex, name, hook });
        }
        v.sort_by_key(|p| p.port_no);
        Ok(v)
    }

    fn link_path(&self, hook: &str, ifindex: u32) -> PathBuf {
        self.dir.join("links").join(format!("{hook}-{ifindex}"))
    }

    /// Adds a device as a port; `port_no` None = the lowest free number ≥ 1.
    pub fn add_port(&mut self, ifname: &str, port_no: Option<u32>, mode: AttachMode) -> Result<DpPort, DpError> {
        let ifindex = netdev::ifindex(ifname).ok_or_else(|| DpError::NoSuchDevice(ifname.into()))?;
        let ports = self.ports()?;
        if ports.iter().any(|p| p.ifindex == ifindex) {
            return Err(DpError::Exists(format!("port {ifname}")));
        }
        let port_no = match port_no {
            Some(n) if n == 0 || n >= MAX_PORTS => {
                return Err(DpError::Invalid(format!("port number {n} out of range 1..{}", MAX_PORTS - 1)));
            }
            Some(n) if ports.iter().any(|p| p.port_no == n) => {
                return Err(DpError::Exists(format!("port number {n}")));
            }
            Some(n) => n,
            None => (1..MAX_PORTS)
                .find(|n| !ports.iter().any(|p| p.port_no == *n))
                .ok_or_else(|| DpError::Invalid("no free port number".into()))?,
        };
        // Maps first, so the first packet the program sees finds the port.
        self.maps.ports.set(port_no, PortInfo { ifindex, _pad: 0 }, 0).map_err(|e| io_err("ports", e))?;
        self.maps.tx.set(port_no, ifindex, None, 0).map_err(|e| io_err("tx ports", e))?;
        self.maps.ifport.insert(ifindex, port_no, 0).map_err(|e| io_err("ifport", e))?;
        if ifindex < IFPORT_ARRAY_SIZE {
            self.maps.ifport_array.set(ifindex, port_no + 1, 0).map_err(|e| io_err("ifport", e))?;
        }
        // A reused port number starts with a full upcall bucket.
        self.maps.buckets.set(port_no, UpcallBucket::default(), 0).map_err(|e| io_err("buckets", e))?;
        let attached = self.attach(ifname, ifindex, mode);
        match attached {
            Ok(hook) => Ok(DpPort { port_no, ifindex, name: ifname.into(), hook }),
            Err(e) => {
                let _ = self.forget_port(port_no, ifindex);
                Err(e)
            }
        }
    }

    fn attach(&mut self, ifname: &str, ifindex: u32, mode: AttachMode) -> Result<&'static str, DpError> {
        let mut hook = "tc";
        if mode != AttachMode::Tc {
            let mut xdp =
                Xdp::from_pin(self.dir.join("progs").join(PROG_XDP), aya_obj::programs::XdpAttachType::Interface)
                    .map_err(|e| io_err("open pinned XDP program", e))?;
            match xdp.attach_to_if_index(ifindex, XdpMode::Driver) {
                Ok(id) => {
                    let link = xdp.take_link(id).map_err(|e| io_err("xdp link", e))?;
                    let fd: FdLink = link.try_into().map_err(|e| io_err("xdp link", e))?;
                    fd.pin(self.link_path("xdp", ifindex)).map_err(|e| io_err("pin xdp link", e))?;
                    hook = "xdp";
                }
                Err(e) if mode == AttachMode::Xdp => {
                    return Err(DpError::Bpf(format!("{ifname}: native XDP attach failed: {e}")));
                }
                Err(e) => {
                    log::info!("{ifname}: no native XDP ({e}); using the tc hook");
                }
            }
        }
        // The tc program is attached in both modes: at XDP it takes the flows XDP
        // hands off (several outputs).
        let mut tcp = SchedClassifier::from_pin(self.dir.join("progs").join(PROG_TC))
            .map_err(|e| io_err("open pinned tc program", e))?;
        let _ = tc::qdisc_add_clsact(ifname);
        let r = tcp
            .attach_with_options(ifname, TcAttachType::Ingress, TcAttachOptions::TcxOrder(LinkOrder::default()))
            .map_err(|e| io_err(format!("{ifname}: tc attach"), e))
            .and_then(|id| {
                let link = tcp.take_link(id).map_err(|e| io_err("tc link", e))?;
                let fd: FdLink = link.try_into().map_err(|e| io_err("tc link", e))?;
                fd.pin(self.link_path("tc", ifindex)).map_err(|e| io_err("pin tc link", e))?;
                Ok(())
            });
        if let Err(e) = r {
            self.detach(ifindex);
            return Err(e);
        }
        Ok(hook)
    }

    /// Detaches a port's programs by unpinning their links (closing the last
    /// reference detaches a bpf_link).
    fn detach(&self, ifindex: u32) {
        for hook in ["xdp", "tc"] {
            let p = self.link_path(hook, ifindex);
            if let Ok(l) = PinnedLink::from_pin(&p)
                && let Ok(fd) = l.unpin()
            {
                let _ = fd.detach();
            }
            let _ = fs::remove_file(&p);
        }
    }

    fn forget_port(&mut self, port_no: u32, ifindex: u32) -> Result<(), DpError> {
        let _ = self.maps.ifport.remove(&ifindex);
        if ifindex < IFPORT_ARRAY_SIZE {
            let _ = self.maps.ifport_array.set(ifindex, 0, 0);
        }
        let _ = self.maps.tx.set(port_no, 0, None, 0);
        self.maps.ports.set(port_no, PortInfo::default(), 0).map_err(|e| io_err("ports", e))
    }

    pub fn del_port(&mut self, name_or_no: &str) -> Result<(), DpError> {
        let ports = self.ports()?;
        let p = ports
            .iter()
            .find(|p| p.name == name_or_no || p.port_no.to_string() == name_or_no)
            .ok_or_else(|| DpError::NoSuchPort(name_or_no.into()))?;
        self.detach(p.ifindex);
        self.forget_port(p.port_no, p.ifindex)
    }

    /// Detaches every port and removes all pins.
    pub fn destroy(mut self) -> Result<(), DpError> {
        for p in self.ports()? {
            self.detach(p.ifindex);
            let _ = self.forget_port(p.port_no, p.ifindex);
        }
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(&dir).map_err(|e| io_err(dir.display(), e))
    }

    // ---- flows ------------------------------------------------------------

    fn mask_id_for(&mut self, mask: &FlowKey) -> Result<u32, DpError> {
        if let Some(id) = self.mask_ids.get(mask) {
            return Ok(*id);
        }
        let id = (0..self.max_masks)
            .find(|i| self.mask_refs[*i as usize] == 0 && !self.order.contains(i))
            .ok_or(DpError::TooManyMasks(self.max_masks))?;
        self.maps.masks.set(id, MaskEntry { mask: *mask }, 0).map_err(|e| io_err("masks", e))?;
        // Zero its hit counter: it may have belonged to a dead mask.
        let zeros = PerCpuValues::try_from(vec![0u64; self.ncpus]).map_err(|e| io_err("mask hits", e))?;
        self.maps.mask_hits.set(id, zeros, 0).map_err(|e| io_err("mask hits", e))?;
        // Publish at the end of the order, then bump the count.
        let pos = self.order.len() as u32;
        self.maps.order.set(pos, id, 0).map_err(|e| io_err("mask order", e))?;
        self.order.push(id);
        let n = self.order.len() as u32;
        self.set_config(|c| c.n_masks = n)?;
        self.mask_ids.insert(*mask, id);
        Ok(id)
    }

    fn release_mask(&mut self, id: u32) -> Result<(), DpError> {
        let r = &mut self.mask_refs[id as usize];
        *r = r.saturating_sub(1);
        if *r > 0 {
            return Ok(());
        }
        let Some(pos) = self.order.iter().position(|x| *x == id) else { return Ok(()) };
        // Move the last mask into the hole, then shrink the count.
        let last = *self.order.last().unwrap();
        self.maps.order.set(pos as u32, last, 0).map_err(|e| io_err("mask order", e))?;
        self.order.swap_remove(pos);
        let n = self.order.len() as u32;
        self.set_config(|c| c.n_masks = n)?;
        self.mask_ids.retain(|_, v| *v != id);
        Ok(())
    }

    /// Counts a flow on its mask filter bit, setting the bit for the first.
    fn filter_add(&mut self, mask_id: u32, hash: u64) -> Result<(), DpError> {
        let (word, bit) = filter_pos(mask_id, hash);
        let n = self.filter_refs.entry(word as u64 * 64 + bit as u64).or_insert(0);
        *n += 1;
        if *n == 1 {
            let w = self.maps.mask_filter.get(&word, 0).map_err(|e| io_err("mask filter", e))?;
            self.maps.mask_filter.set(word, w | 1 << bit, 0).map_err(|e| io_err("mask filter", e))?;
        }
        Ok(())
    }

    /// Uncounts a flow (already deleted) on its filter bit, clearing the bit
    /// after the last.
    fn filter_remove(&mut self, mask_id: u32, hash: u64) -> Result<(), DpError> {
        let (word, bit) = filter_pos(mask_id, hash);
        let key = word as u64 * 64 + bit as u64;
        let Some(n) = self.filter_refs.get_mut(&key) else { return Ok(()) };
        *n -= 1;
        if *n == 0 {
            self.filter_refs.remove(&key);
            let w = self.maps.mask_filter.get(&word, 0).map_err(|e| io_err("mask filter", e))?;
            self.maps.mask_filter.set(word, w & !(1 << bit), 0).map_err(|e| io_err("mask filter", e))?;
        }
        Ok(())
    }

    /// Reorders the masks most-hit first (what the walk wants); rewrites only
    /// when the order changed.
    pub fn sort_masks(&mut self) -> Result<(), DpError> {
        let mut hits: Vec<(u64, u32)> = Vec::with_capacity(self.order.len());
        for id in &self.order {
            let v = self.maps.mask_hits.get(id, 0).map_err(|e| io_err("mask hits", e))?;
            hits.push((v.iter().sum(), *id));
        }
        // Stable: masks with equal hits keep their relative order.
        hits.sort_by_key(|h| std::cmp::Reverse(h.0));
        let new: Vec<u32> = hits.iter().map(|h| h.1).collect();
        if new == self.order {
            return Ok(());
        }
        for (i, id) in new.iter().enumerate() {
            self.maps.order.set(i as u32, *id, 0).map_err(|e| io_err("mask order", e))?;
        }
        self.order = new;
        Ok(())
    }

    /// The id the datapath knows mask `mask` by, if a flow uses it.
    pub fn mask_id(&self, mask: &FlowKey) -> Option<u32> {
        self.mask_ids.get(mask).copied()
    }

    fn megaflow_key(&self, m: &FlowKey, key: &FlowKey) -> Option<(u32, MegaflowKey)> {
        let id = *self.mask_ids.get(m)?;
        Some((id, MegaflowKey { hash: megaflow_hash(id, key, m) }))
    }

    /// The stored entry of exactly this flow (same mask, same masked key).
    fn lookup_flow(&self, key: &FlowKey, mask: &FlowKey) -> Option<(MegaflowKey, FlowEntry)> {
        let (id, mk) = self.megaflow_key(mask, key)?;
        let e = self.maps.flows.get(&mk, 0).ok()?;
        (e.mask_id == id && e.key == key.masked(mask)).then_some((mk, e))
    }

    fn read_stats(&self, slot: u32, clock: &JiffiesClock) -> Result<FlowStatsSum, DpError> {
        let v = self.maps.stats.get(&slot, 0).map_err(|e| io_err("flow stats", e))?;
        Ok(FlowStatsSum::sum(v.iter(), clock))
    }

    /// Jiffies and CLOCK_MONOTONIC as the datapath reads them, now.
    fn clock_sample(&self) -> Result<ClockSample, DpError> {
        let fd = self.clock_prog.fd().map_err(|e| io_err("clock program", e))?.as_fd().as_raw_fd();
        // The program ignores the frame; test runs want at least an Ethernet header.
        crate::dpif::test_run::run_xdp(fd, &[0u8; 64], 0, 1)
            .map_err(|e| io_err("read the datapath's clocks (BPF_PROG_TEST_RUN)", e))?;
        self.clock_map.get(&0, 0).map_err(|e| io_err("clock map", e))
    }

    /// How long a jiffy is on this kernel: two clock samples 50 ms apart.
    fn measure_jiffy(&self) -> Result<u32, DpError> {
        for _ in 0..3 {
            let a = self.clock_sample()?;
            std::thread::sleep(Duration::from_millis(50));
            let b = self.clock_sample()?;
            if let Some(j) = JiffiesClock::jiffy_ns_between(&a, &b) {
                return Ok(j.min(u32::MAX as u64) as u32);
            }
        }
        Err(DpError::Bpf("the kernel's jiffies don't advance: can't time flows' last use".into()))
    }

    /// For turning the jiffies in flow stats into CLOCK_MONOTONIC.
    fn jiffies_clock(&self) -> Result<JiffiesClock, DpError> {
        let jiffy_ns = self.config()?.jiffy_ns as u64;
        if jiffy_ns == 0 {
            return Err(DpError::Bpf("the datapath's jiffy length is unset (created by an older oxvs?)".into()));
        }
        Ok(JiffiesClock { sample: self.clock_sample()?, jiffy_ns })
    }

    fn zero_stats(&mut self, slot: u32) -> Result<(), DpError> {
        let zeros =
            PerCpuValues::try_from(vec![FlowStats::default(); self.ncpus]).map_err(|e| io_err("flow stats", e))?;
        self.maps.stats.set(slot, zeros, 0).map_err(|e| io_err("flow stats", e))
    }

    /// Installs or changes a flow. `create`: fail if it exists; `modify`: fail if
    /// it doesn't; both: either. `clear`: zero the stats of a modified flow.
    pub fn flow_put(
        &mut self,
        key: &FlowKey,
        mask: &FlowKey,
        actions: &[Action],
        create: bool,
        modify: bool,
        clear: bool,
    ) -> Result<(), DpError> {
        let entry_template = FlowEntry { key: key.masked(mask), ..build_entry(key, mask, actions)? };
        if let Some((id, mk)) = self.megaflow_key(mask, key)
            && let Ok(other) = self.maps.flows.get(&mk, 0)
            && (other.mask_id != id || other.key != entry_template.key)
        {
            return Err(hash_collision());
        }
        match self.lookup_flow(key, mask) {
            Some((mk, old)) => {
                if !modify {
                    return Err(DpError::FlowExists);
                }
                let entry = FlowEntry { slot: old.slot, mask_id: old.mask_id, ..entry_template };
                if clear {
                    self.zero_stats(old.slot)?;
                }
                self.maps.flows.insert(mk, entry, 0).map_err(|e| io_err("flows", e))?;
                self.maps.flow_gen.bump(); // last-hit copies of the old actions are stale
                Ok(())
            }
            None => {
                if !create {
                    return Err(DpError::NoSuchFlow);
                }
                let slot = *self.free_slots.last().ok_or(DpError::TableFull(self.max_flows))?;
                let id = self.mask_id_for(mask)?;
                self.zero_stats(slot)?;
                let mk = MegaflowKey { hash: megaflow_hash(id, key, mask) };
                let entry = FlowEntry { slot, mask_id: id, ..entry_template };
                // The filter bit before the flow: the datapath must never skip a flow.
                self.filter_add(id, mk.hash)?;
                if let Err(e) = self.maps.flows.insert(mk, entry, 1 /* BPF_NOEXIST */) {
                    let _ = self.filter_remove(id, mk.hash);
                    if self.mask_refs[id as usize] == 0 {
                        self.mask_refs[id as usize] = 1;
                        let _ = self.release_mask(id);
                    }
                    // A new mask's flow whose key another mask's flow holds.
                    let taken = matches!(&e, aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EEXIST));
                    return Err(if taken { hash_collision() } else { io_err("flows", e) });
                }
                // Megaflows should not overlap, but nothing stops a caller
                // installing one that does: then no CPU may go on answering
                // from a copy a walk would no longer return first.
                self.maps.flow_gen.bump();
                self.free_slots.pop();
                self.mask_refs[id as usize] += 1;
                Ok(())
            }
        }
    }

    pub fn flow_get(&self, key: &FlowKey, mask: &FlowKey) -> Result<DpFlow, DpError> {
        let (_, e) = self.lookup_flow(key, mask).ok_or(DpError::NoSuchFlow)?;
        Ok(DpFlow {
            key: e.key,
            mask: *mask,
            actions: e.actions[..(e.n_actions as usize).min(MAX_ACTIONS)].to_vec(),
            tc_only: e.flags & FLOW_F_TC_ONLY != 0,
            stats: self.read_stats(e.slot, &self.jiffies_clock()?)?,
        })
    }

    /// Deletes a flow and returns its final stats.
    pub fn flow_del(&mut self, key: &FlowKey, mask: &FlowKey) -> Result<FlowStatsSum, DpError> {
        let (mk, e) = self.lookup_flow(key, mask).ok_or(DpError::NoSuchFlow)?;
        self.maps.flows.remove(&mk).map_err(|_| DpError::NoSuchFlow)?;
        // Before the mask or the slot can be reused: no last-hit copy of the
        // flow stays valid.
        self.maps.flow_gen.bump();
        self.filter_remove(e.mask_id, mk.hash)?;
        let stats = self.read_stats(e.slot, &self.jiffies_clock()?)?;
        self.free_slots.push(e.slot);
        self.release_mask(e.mask_id)?;
        Ok(stats)
    }

    pub fn flow_flush(&mut self) -> Result<usize, DpError> {
        let keys: Vec<MegaflowKey> = self.maps.flows.keys().filter_map(Result::ok).collect();
        let n = keys.len();
        for k in keys {
            let _ = self.maps.flows.remove(&k);
        }
        self.maps.flow_gen.bump();
        let mut words: Vec<u32> = self.filter_refs.keys().map(|b| (b / 64) as u32).collect();
        words.sort_unstable();
        words.dedup();
        for w in words {
            self.maps.mask_filter.set(w, 0, 0).map_err(|e| io_err("mask filter", e))?;
        }
        self.set_config(|c| {
            c.n_masks = 0;
            c.emc_gen = c.emc_gen.wrapping_add(1);
        })?;
        self.rebuild_index()?;
        Ok(n)
    }

    pub fn flow_dump(&self) -> Result<Vec<DpFlow>, DpError> {
        let masks: StdHashMap<u32, FlowKey> = self.mask_ids.iter().map(|(m, id)| (*id, *m)).collect();
        let clock = self.jiffies_clock()?;
        let mut out = Vec::new();
        for kv in self.maps.flows.iter() {
            let (_, e) = kv.map_err(|e| io_err("read flows", e))?;
            let mask = match masks.get(&e.mask_id) {
                Some(m) => *m,
                None => self.maps.masks.get(&e.mask_id, 0).map_err(|e| io_err("masks", e))?.mask,
            };
            out.push(DpFlow {
                key: e.key,
                mask,
                actions: e.actions[..(e.n_actions as usize).min(MAX_ACTIONS)].to_vec(),
                tc_only: e.flags & FLOW_F_TC_ONLY != 0,
                stats: self.read_stats(e.slot, &clock)?,
            });
        }
        Ok(out)
    }

    pub fn stats(&self) -> Result<DpStats, DpError> {
        let mut s = DpStats { n_flows: 0, n_masks: self.order.len(), ..Default::default() };
        let per_cpu = self.maps.counters.get(&0, 0).map_err(|e| io_err("counters", e))?;
        for cpu in per_cpu.iter() {
            for (sum, v) in s.counters.iter_mut().zip(cpu.n.iter()) {
                *sum += v;
            }
        }
        // A packet XDP hands to tc is received and looked up once more there:
        // count it once.
        let handoff = s.counters[counter::TC_HANDOFF as usize];
        for c in [counter::RX, counter::HIT] {
            s.counters[c as usize] = s.counters[c as usize].saturating_sub(handoff);
        }
        s.n_flows = (self.max_flows as usize).saturating_sub(self.free_slots.len());
        Ok(s)
    }

    pub fn mask_hits(&self) -> Result<Vec<(FlowKey, u64)>, DpError> {
        let mut v = Vec::new();
        for id in &self.order {
            let h: u64 = self.maps.mask_hits.get(id, 0).map_err(|e| io_err("mask hits", e))?.iter().sum();
            let m = self.maps.masks.get(id, 0).map_err(|e| io_err("masks", e))?.mask;
            v.push((m, h));
        }
        Ok(v)
    }

    // ---- upcalls and execute ---------------------------------------------

    /// Waits up to `timeout` for the next upcall.
    pub fn recv_upcall(&mut self, timeout: Duration) -> Result<Option<Upcall>, DpError> {
        if self.upcalls.is_none() {
            let md = open_map(&self.dir, abi::maps::UPCALLS)?;
            self.upcalls = Some(RingBuf::try_from(Map::RingBuf(md)).map_err(|e| io_err("upcalls", e))?);
        }
        let rb = self.upcalls.as_mut().unwrap();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(item) = rb.next() {
                return Ok(Upcall::from_bytes(&item));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let mut pfd = libc::pollfd { fd: rb.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().clamp(1, i32::MAX as u128) as i32) };
            if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return Err(io_err("poll upcalls", io::Error::last_os_error()));
            }
        }
    }

    /// Sends `packet` through `actions`.
    ///
    /// The packet is injected with BPF_PROG_TEST_RUN in live-frames mode into
    /// `oxvs_xdp_exec`, which runs the very action code of the fast path (same
    /// rewrites, same checksum updates, same devmap redirect). AF_PACKET would
    /// need a second implementation of every action in userspace. Several
    /// outputs are done as one injection per output, each with the rewrites
    /// that precede it.
    pub fn execute(&self, packet: &[u8], actions: &[Action]) -> Result<(), DpError> {
        if actions.len() > MAX_ACTIONS {
            return Err(DpError::Invalid(format!("too many actions ({}, at most {MAX_ACTIONS})", actions.len())));
        }
        let outputs: Vec<usize> =
            actions.iter().enumerate().filter(|(_, a)| a.kind == action::OUTPUT).map(|(i, _)| i).collect();
        if outputs.is_empty() {
            return Ok(()); // drop
        }
        let mut exec = self.exec.lock().unwrap_or_else(|p| p.into_inner());
        let exec = &mut *exec;
        if exec.prog.is_none() {
            let p =
                Xdp::from_pin(self.dir.join("progs").join(PROG_XDP_EXEC), aya_obj::programs::XdpAttachType::Interface)
                    .map_err(|e| io_err("open exec program", e))?;
            exec.prog = Some(p);
        }
        let prog_fd = exec.prog.as_ref().unwrap().fd().map_err(|e| io_err("exec program", e))?.as_fd().as_raw_fd();
        for &o in &outputs {
            let seg: Vec<Action> = actions[..=o]
                .iter()
                .filter(|a| a.kind != action::OUTPUT && a.kind != action::USERSPACE)
                .copied()
                .chain(std::iter::once(actions[o]))
                .collect();
            let mut e = FlowEntry { n_actions: seg.len() as u32, ..Default::default() };
            e.actions[..seg.len()].copy_from_slice(&seg);
            exec.actions.set(0, e, 0).map_err(|e| io_err("exec map", e))?;
            crate::dpif::test_run::run_live(prog_fd, packet).map_err(|e| io_err("execute (BPF_PROG_TEST_RUN)", e))?;
        }
        Ok(())
    }
}

fn verifier_err(prog: &str, e: aya::programs::ProgramError) -> DpError {
    match e {
        aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
            DpError::Bpf(format!("the kernel refused program {prog}: {io_error}\n{verifier_log}"))
        }
        e => io_err(prog, e),
    }
}

/// Checks a flow against what the datapath can do and encodes it.
/// Two different flows with one 64-bit megaflow hash: vanishingly rare, and
/// refused rather than mixed up.
fn hash_collision() -> DpError {
    DpError::Invalid("flow hash collides with another flow".into())
}

fn build_entry(key: &FlowKey, mask: &FlowKey, actions: &[Action]) -> Result<FlowEntry, DpError> {
    if actions.len() > MAX_ACTIONS {
        return Err(DpError::Invalid(format!("too many actions ({}, at most {MAX_ACTIONS})", actions.len())));
    }
    let exact16 = |m: u16| m == 0xffff;
    let et = if exact16(mask.eth_type) { Some(u16::from_be(key.eth_type)) } else { None };
    let proto = if mask.nw_proto == 0xff { Some(key.nw_proto) } else { None };
    let mut n_out = 0;
    let mut out_last = true;
    for (i, a) in actions.iter().enumerate() {
        use action::*;
        let need = |ok: bool, what: &str| {
            if ok { Ok(()) } else { Err(DpError::Invalid(format!("{what} needs a flow that matches it exactly"))) }
        };
        match a.kind {
            OUTPUT => {
                if a.arg >= MAX_PORTS {
                    return Err(DpError::Invalid(format!("output port {} out of range", a.arg)));
                }
                n_out += 1;
                if i + 1 != actions.len() {
                    out_last = false;
                }
            }
            SET_IPV4_SRC | SET_IPV4_DST | SET_IPV4_TOS | SET_IPV4_TTL => {
                need(et == Some(ETH_TYPE_IP), "set(ipv4) (eth_type(0x0800))")?
            }
            SET_IPV6_SRC | SET_IPV6_DST | SET_IPV6_TCLASS | SET_IPV6_HLIMIT => {
                need(et == Some(ETH_TYPE_IPV6), "set(ipv6) (eth_type(0x86dd))")?
            }
            SET_TP_SRC | SET_TP_DST => need(
                matches!(et, Some(ETH_TYPE_IP | ETH_TYPE_IPV6)) && matches!(proto, Some(IPPROTO_TCP | IPPROTO_UDP)),
                "set(tcp)/set(udp) (the IP protocol)",
            )?,
            DEC_TTL => need(matches!(et, Some(ETH_TYPE_IP | ETH_TYPE_IPV6)), "dec_ttl (an IP eth_type)")?,
            USERSPACE | PUSH_VLAN | POP_VLAN | SET_ETH_SRC | SET_ETH_DST => {}
            k => return Err(DpError::Invalid(format!("unsupported action kind {k}"))),
        }
    }
    let mut e = FlowEntry { n_actions: actions.len() as u32, ..Default::default() };
    e.actions[..actions.len()].copy_from_slice(actions);
    if n_out > 1 || !out_last {
        e.flags |= FLOW_F_TC_ONLY;
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dpif::odp;

    fn entry(flow: &str, acts: &str) -> Result<FlowEntry, DpError> {
        let m = odp::parse_flow(flow).unwrap();
        build_entry(&m.key, &m.mask, &odp::parse_actions(acts).unwrap())
    }

    #[test]
    fn tc_only_when_xdp_cannot_run_the_actions() {
        let f = "in_port(1),eth(),eth_type(0x0800),ipv4(proto=17,frag=no)";
        for (acts, tc_only) in [
            ("2", false),
            ("drop", false),
            ("push_vlan(vid=5,pcp=0),set(ipv4(ttl=3)),2", false),
            ("userspace(pid=3),2", false),
            ("2,3", true),
            ("2,set(ipv4(ttl=3))", true),
            ("2,userspace(pid=1)", true),
        ] {
            let e = entry(f, acts).unwrap();
            assert_eq!(e.flags & FLOW_F_TC_ONLY != 0, tc_only, "{acts}");
            assert_eq!(e.n_actions as usize, odp::parse_actions(acts).unwrap().len());
        }
    }

    #[test]
    fn rewrites_need_their_header_in_the_match() {
        assert!(entry("in_port(1),eth()", "set(ipv4(ttl=3)),2").is_err());
        assert!(entry("in_port(1),eth(),eth_type(0x86dd)", "set(ipv4(ttl=3)),2").is_err());
        assert!(entry("in_port(1),eth(),eth_type(0x0800)", "set(ipv4(ttl=3)),2").is_ok());
        assert!(entry("in_port(1),eth(),eth_type(0x0800)", "set(udp(dst=1)),2").is_err());
        assert!(entry("in_port(1),eth(),eth_type(0x0800),ipv4(proto=17)", "set(udp(dst=1)),2").is_ok());
        assert!(entry("in_port(1),eth(),eth_type(0x0800),ipv4(proto=132)", "set(sctp(dst=1)),2").is_err());
        assert!(entry("in_port(1),eth()", "dec_ttl,2").is_err());
        assert!(entry("in_port(1),eth()", "push_vlan(vid=1,pcp=0),set(eth(src=00:00:00:00:00:01)),2").is_ok());
        let e = entry("in_port(1),eth()", "1024").unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }
}
