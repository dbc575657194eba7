//! One configuration under test: its namespaces, what switches frames in the
//! switch namespace, the sink's counter, and the frames it is fed.
use std::path::PathBuf;

use anyhow::{Context, Result};
use oxvs_dp_abi::PROG_XDP;
use oxvs_userspace::dpif::{AttachMode, DpOptions, EbpfDatapath};

use super::{
    flows,
    frame::Frame,
    progs::{BenchObj, PROG_GEN, PROG_REDIRECT, PROG_SINK, RunStats},
    topo::{MAC_A, MAC_B, PORT_A, PORT_B, SINK_DEV, Topo},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// No switch: frames are counted and dropped by XDP on the switch's port
    /// pa. What receiving alone costs the switch's CPU, the floor under every
    /// switch's cost.
    RxOnly,
    /// `bench_redirect` on pa: every frame to pb, no lookup.
    BareXdp,
    /// A Linux bridge joining pa and pb (no XDP on them).
    LinuxBridge,
    /// oxvs with one flow `in_port(1),eth()` → 2.
    Oxvs1Flow,
    /// oxvs with 10,000 flows over 16 masks.
    Oxvs16Masks,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::RxOnly, Kind::BareXdp, Kind::LinuxBridge, Kind::Oxvs1Flow, Kind::Oxvs16Masks];

    pub fn name(self) -> &'static str {
        match self {
            Kind::RxOnly => "rx_only",
            Kind::BareXdp => "bare_xdp",
            Kind::LinuxBridge => "linux_bridge",
            Kind::Oxvs1Flow => "oxvs_1flow",
            Kind::Oxvs16Masks => "oxvs_16masks",
        }
    }

    /// A short tag for namespace names.
    fn tag(self) -> &'static str {
        match self {
            Kind::RxOnly => "rx",
            Kind::BareXdp => "bare",
            Kind::LinuxBridge => "br",
            Kind::Oxvs1Flow => "ox1",
            Kind::Oxvs16Masks => "ox16",
        }
    }
}

const DP_NAME: &str = "bench";

pub struct Rig {
    pub kind: Kind,
    /// The oxvs datapath; destroyed (links unpinned) first when the rig goes.
    dp: Option<EbpfDatapath>,
    /// The reference programs; their XDP links close with it.
    obj: BenchObj,
    pub frames: Vec<Frame>,
    /// pa's ifindex in the switch namespace (the test runs' ingress).
    pub pa_ifindex: u32,
    /// Dropped last: the namespaces, then the pins.
    pub topo: Topo,
}

impl Rig {
    pub fn new(kind: Kind) -> Result<Rig> {
        let topo = Topo::new(kind.tag())?;
        let mut obj = BenchObj::load()?;
        let sw = topo.switch.clone();
        // The sink: XDP count-and-drop on the sink's eth0 (for rx_only, on
        // pa itself).
        let (sink_ns, sink_dev) = if kind == Kind::RxOnly { (&sw, PORT_A) } else { (&topo.sink, SINK_DEV) };
        topo.in_ns(sink_ns, || obj.attach(PROG_SINK, sink_dev))?;
        let mut dp = None;
        match kind {
            Kind::RxOnly => {}
            Kind::BareXdp => topo.in_ns(&sw, || {
                obj.set_redirect_target(PORT_B)?;
                obj.attach(PROG_REDIRECT, PORT_A)
            })?,
            Kind::LinuxBridge => topo.add_linux_bridge()?,
            Kind::Oxvs1Flow | Kind::Oxvs16Masks => {
                let pin_root = topo.pin_root.clone();
                dp = Some(topo.in_ns(&sw, || oxvs_datapath(kind, pin_root))?);
            }
        }
        topo.thread_switch_port()?;
        let pa_ifindex = topo.in_ns(&sw, || oxvs_userspace::netdev::ifindex(PORT_A).context("pa has no ifindex"))?;
        let frames = flows::traffic(MAC_B, MAC_A);
        obj.load_generator(&frames)?;
        Ok(Rig { kind, dp, obj, frames, pa_ifindex, topo })
    }

    pub fn dp(&self) -> Option<&EbpfDatapath> {
        self.dp.as_ref()
    }

    pub fn dp_mut(&mut self) -> Option<&mut EbpfDatapath> {
        self.dp.as_mut()
    }

    pub fn obj(&self) -> &BenchObj {
        &self.obj
    }

    /// Where an oxvs program of this rig is pinned.
    pub fn oxvs_prog(&self, prog: &str) -> PathBuf {
        self.topo.pin_root.join(DP_NAME).join("progs").join(prog)
    }

    /// The traffic source's program.
    pub fn generator_fd(&self) -> Result<i32> {
        self.obj.prog_fd(PROG_GEN)
    }

    /// Frames the sink has counted so far.
    pub fn delivered(&self) -> Result<u64> {
        self.obj.sink_count()
    }

    /// Run statistics of the XDP program that switches frames at pa, if any.
    pub fn switch_prog(&self) -> Result<Option<RunStats>> {
        Ok(match self.kind {
            Kind::BareXdp => Some(RunStats::of(&self.obj.info(PROG_REDIRECT)?)),
            Kind::Oxvs1Flow | Kind::Oxvs16Masks => Some(RunStats::of_pin(&self.oxvs_prog(PROG_XDP))?),
            Kind::RxOnly | Kind::LinuxBridge => None,
        })
    }

    pub fn sink_prog(&self) -> Result<RunStats> {
        Ok(RunStats::of(&self.obj.info(PROG_SINK)?))
    }

    /// The datapath's counter `c` summed over CPUs (0 without a datapath).
    pub fn dp_counter(&self, c: u32) -> Result<u64> {
        Ok(self.dp_counters([c])?[0])
    }

    /// Several counters from one read of them (zeros without a datapath).
    pub fn dp_counters<const N: usize>(&self, which: [u32; N]) -> Result<[u64; N]> {
        match &self.dp {
            Some(dp) => {
                let c = dp.stats().context("datapath stats")?.counters;
                Ok(which.map(|i| c[i as usize]))
            }
            None => Ok([0; N]),
        }
    }
}

/// Creates the datapath with ports pa (1) and pb (2) at native XDP, and its
/// flows. Runs inside the switch namespace (ifindexes and attach are per
/// namespace).
fn oxvs_datapath(kind: Kind, pin_root: PathBuf) -> Result<EbpfDatapath> {
    let opts = DpOptions { name: DP_NAME.into(), pin_root, ..Default::default() };
    let mut dp = EbpfDatapath::create(&opts).context("create the oxvs datapath")?;
    dp.add_port(PORT_A, Some(1), AttachMode::Xdp).context("add port pa")?;
    dp.add_port(PORT_B, Some(2), AttachMode::Xdp).context("add port pb")?;
    match kind {
        Kind::Oxvs1Flow => flows::install_one(&mut dp)?,
        _ => flows::install_16masks(&mut dp)?,
    }
    Ok(dp)
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(dp) = self.dp.take()
            && let Err(e) = dp.destroy()
        {
            eprintln!("bench: removing the {} datapath: {e}", self.kind.name());
        }
    }
}
