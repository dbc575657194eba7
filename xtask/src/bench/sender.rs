//! The traffic source: one thread in the sender namespace writing the frame
//! batch with `sendmmsg` on an AF_PACKET socket bound to eth0, bypassing the
//! qdisc (nothing to queue on a veth), for a fixed time.
//!
//! There is no pktgen module on these kernels and Debian's xdp-trafficgen fails
//! here (toolchain.md §3). On a veth the whole path (veth xmit, the switch's
//! NAPI poll with its XDP program or bridge, the sink's NAPI poll) runs as
//! softirq work on the sending CPU, so this thread's CPU time covers it all.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use super::frame::Frame;

/// What one sending run did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    /// Frames the kernel accepted.
    pub frames: u64,
    /// ENOBUFS: the veth refused the frame (its peer's ring was full).
    pub enobufs: u64,
    /// EAGAIN: no socket buffer for the frame right now.
    pub eagain: u64,
    /// Time the sender ran.
    pub elapsed: Duration,
    /// CPU time of the sending thread, softirq work run on its behalf included.
    pub thread_cpu: Duration,
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn setsockopt_int(fd: &OwnedFd, level: i32, opt: i32, v: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid int option pointer and its size.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, opt, &v as *const _ as *const libc::c_void, 4) };
    if r != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// An AF_PACKET raw socket on `dev` of the calling thread's namespace.
/// Protocol 0: it receives nothing, so it costs nothing on the receive side.
fn open_socket(dev: &str) -> Result<OwnedFd> {
    let ifindex = oxvs_userspace::netdev::ifindex(dev).ok_or_else(|| anyhow::anyhow!("no device {dev}"))?;
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        bail!("AF_PACKET socket: {}", io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a valid sockaddr_ll of the size given.
    let r = unsafe {
        libc::bind(fd.as_raw_fd(), &sll as *const _ as *const libc::sockaddr, size_of::<libc::sockaddr_ll>() as u32)
    };
    if r != 0 {
        bail!("bind to {dev}: {}", io::Error::last_os_error());
    }
    setsockopt_int(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
        .map_err(|e| anyhow::anyhow!("PACKET_QDISC_BYPASS: {e}"))?;
    Ok(fd)
}

/// Set by SIGINT/SIGTERM: the benchmark stops at the next check and unwinds,
/// so its guards remove the namespaces and restore bpf_stats_enabled.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed); // async-signal-safe
}

pub fn catch_interrupts() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sends `frames` over and over on `dev` for `dur`, then stops by itself.
/// Must run on a thread inside the sender namespace.
pub fn send_for(dev: &str, frames: &[Frame], dur: Duration) -> Result<Sent> {
    let fd = open_socket(dev)?;
    let mut iov: Vec<libc::iovec> =
        frames.iter().map(|f| libc::iovec { iov_base: f.as_ptr() as *mut _, iov_len: f.len() }).collect();
    // SAFETY: mmsghdr is plain data; all-zero is valid (no address: the
    // socket's binding says where frames go).
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let mut s = Sent::default();
    let cpu0 = thread_cpu_time();
    let start = Instant::now();
    let mut at = 0; // next message of the batch
    while start.elapsed() < dur {
        check_interrupted()?;
        let rest = &mut msgs[at..];
        // SAFETY: the messages point at iovecs and frames that outlive the call.
        let n = unsafe { libc::sendmmsg(fd.as_raw_fd(), rest.as_mut_ptr(), rest.len() as u32, libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS) => s.enobufs += 1,
                Some(libc::EAGAIN) => s.eagain += 1,
                _ => bail!("sendmmsg: {e}"),
            }
            // The frame that failed is skipped, as a lost packet would be.
            at = (at + 1) % msgs.len();
            continue;
        }
        s.frames += n as u64;
        at = (at + n as usize) % msgs.len();
    }
    s.elapsed = start.elapsed();
    s.thread_cpu = thread_cpu_time() - cpu0;
    Ok(s)
}
