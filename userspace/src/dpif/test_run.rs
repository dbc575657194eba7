//! BPF_PROG_TEST_RUN, which aya does not wrap: used by `execute` (live frames)
//! and by the benchmark (per-packet program cost with `repeat`).
use std::io;

const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// Frames are sent for real (redirects go out), not handed back.
pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

pub const XDP_DROP: u32 = 1;
pub const XDP_REDIRECT: u32 = 4;

/// The `test` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `struct xdp_md` as a test run's input context: `data` is the metadata
/// length (none), `data_end` the frame length.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// What a test run reported.
#[derive(Clone, Copy, Debug)]
pub struct TestRun {
    /// The program's return code.
    pub retval: u32,
    /// Average ns per run, as the kernel measured it.
    pub duration_ns: u32,
}

fn run(prog_fd: i32, attr: &mut TestAttr) -> io::Result<TestRun> {
    attr.prog_fd = prog_fd as u32;
    // SAFETY: attr is a valid bpf_attr prefix for BPF_PROG_TEST_RUN; the
    // buffers it points at outlive the call.
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, attr as *mut TestAttr, std::mem::size_of::<TestAttr>() as u32)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TestRun { retval: attr.retval, duration_ns: attr.duration })
}

/// Runs an XDP program once on `frame` in live-frames mode: its redirect is
/// carried out.
pub fn run_live(prog_fd: i32, frame: &[u8]) -> io::Result<TestRun> {
    run_live_repeat(prog_fd, frame, 0, 1, 0)
}

/// Runs XDP program `prog_fd` in live-frames mode `repeat` times on `frame`
/// as if it arrived on `ingress_ifindex` (of the calling thread's
/// namespace), `batch_size` frames at a time (0: the kernel's 64): every
/// redirect and XDP_TX is carried out, which makes it a traffic source.
pub fn run_live_repeat(
    prog_fd: i32,
    frame: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
    batch_size: u32,
) -> io::Result<TestRun> {
    let ctx = XdpMd { data_end: frame.len() as u32, ingress_ifindex, ..Default::default() };
    let mut attr = TestAttr {
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
        ctx_in: &ctx as *const XdpMd as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size,
        ..Default::default()
    };
    run(prog_fd, &mut attr)
}

/// Runs XDP program `prog_fd` `repeat` times on `frame` as if it arrived on
/// `ingress_ifindex` (looked up in the calling thread's network namespace; 0
/// for none). Not live: a redirect is decided but not carried out.
pub fn run_xdp(prog_fd: i32, frame: &[u8], ingress_ifindex: u32, repeat: u32) -> io::Result<TestRun> {
    let mut out = vec![0u8; frame.len() + 256];
    let ctx = XdpMd { data_end: frame.len() as u32, ingress_ifindex, ..Default::default() };
    let mut attr = TestAttr {
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_size_out: out.len() as u32,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ctx_size_in: std::mem::size_of::<XdpMd>() as u32,
        ctx_in: &ctx as *const XdpMd as u64,
        ..Default::default()
    };
    run(prog_fd, &mut attr)
}
