//! BPF_PROG_TEST_RUN, which aya does not wrap: used by `execute` (live frames)
//! and by the benchmark (per-packet program cost with `repeat`).
use std::io;

const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// Frames are sent for real (redirects go out), not handed back.
pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

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

/// What a test run reported.
#[derive(Clone, Copy, Debug)]
pub struct TestRun {
    pub retval: u32,
    /// Average ns per run, as the kernel measured it.
    pub duration_ns: u32,
}

fn run(prog_fd: i32, data: &[u8], repeat: u32, flags: u32, out: Option<&mut [u8]>) -> io::Result<TestRun> {
    let mut attr = TestAttr {
        prog_fd: prog_fd as u32,
        data_size_in: data.len() as u32,
        data_in: data.as_ptr() as u64,
        repeat,
        flags,
        ..Default::default()
    };
    if let Some(o) = out {
        attr.data_out = o.as_mut_ptr() as u64;
        attr.data_size_out = o.len() as u32;
    }
    // SAFETY: attr is a valid bpf_attr prefix for BPF_PROG_TEST_RUN; the kernel
    // reads `data` and writes at most data_size_out bytes into `out`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestAttr,
            std::mem::size_of::<TestAttr>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TestRun { retval: attr.retval, duration_ns: attr.duration })
}

/// Runs an XDP program once on `frame` in live-frames mode: its redirect is
/// carried out.
pub fn run_live(prog_fd: i32, frame: &[u8]) -> io::Result<TestRun> {
    run(prog_fd, frame, 1, BPF_F_TEST_XDP_LIVE_FRAMES, None)
}

/// Runs a program `repeat` times on `frame` (not live) and reports the kernel's
/// average duration; `out` receives the frame as the program left it.
pub fn run_repeat(prog_fd: i32, frame: &[u8], repeat: u32, out: &mut [u8]) -> io::Result<TestRun> {
    run(prog_fd, frame, repeat, 0, Some(out))
}
