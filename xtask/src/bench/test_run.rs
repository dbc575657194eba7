//! BPF_PROG_TEST_RUN with `repeat` and an `xdp_md` context, to time an XDP
//! program on one frame without any sender in the way.
//!
//! A private copy of `oxvs_userspace::dpif::test_run` because that one passes
//! no context: without `ingress_ifindex` the frame would come from the
//! loopback device, and the datapath (which maps ifindex → port) would see a
//! frame from no port. With a context, the kernel looks the ifindex up in the
//! calling thread's namespace, so call this from inside the switch namespace.
use std::io;

const BPF_PROG_TEST_RUN: libc::c_long = 10;

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
    /// The program's return code (XDP_DROP = 1, XDP_REDIRECT = 4).
    pub retval: u32,
    /// The kernel's average ns per repetition.
    pub duration_ns: u32,
}

pub const XDP_DROP: u32 = 1;
pub const XDP_REDIRECT: u32 = 4;

/// Runs XDP program `prog_fd` `repeat` times on `frame` as if it arrived on
/// `ingress_ifindex`. Not live: a redirect is decided (the devmap lookup is
/// done) but not carried out.
pub fn run_xdp(prog_fd: i32, frame: &[u8], ingress_ifindex: u32, repeat: u32) -> io::Result<TestRun> {
    let mut out = vec![0u8; frame.len() + 256];
    let ctx = XdpMd { data_end: frame.len() as u32, ingress_ifindex, ..Default::default() };
    let mut attr = TestAttr {
        prog_fd: prog_fd as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_size_out: out.len() as u32,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ctx_size_in: size_of::<XdpMd>() as u32,
        ctx_in: &ctx as *const XdpMd as u64,
        ..Default::default()
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_PROG_TEST_RUN; the kernel
    // reads `frame` and `ctx` and writes at most data_size_out bytes to `out`,
    // all of which live until the call returns.
    let r = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &mut attr as *mut TestAttr, size_of::<TestAttr>() as u32)
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TestRun { retval: attr.retval, duration_ns: attr.duration })
}
