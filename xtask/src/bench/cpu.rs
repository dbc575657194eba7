//! Where the benchmark's work runs: the traffic source on one CPU, the
//! switch (the NAPI thread of its port pa, and the softirq work that thread
//! raises: the sink's receive) on the other, and how busy that CPU was.
//!
//! A veth runs its receive side in the context that sent to it unless its
//! NAPI is threaded; with `threaded` on and the thread pinned, the switch
//! gets a CPU of its own and the rate the sink sees is the switch's rate.
use std::{fs, time::Duration};

use anyhow::{Context, Result, bail};

/// The CPU the traffic source runs on.
pub const SOURCE_CPU: usize = 0;
/// The CPU every configuration's switch port is served on.
pub const SWITCH_CPU: usize = 1;

pub fn check_cpus() -> Result<()> {
    // SAFETY: no arguments.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 2 {
        bail!("bench datapath needs 2 CPUs (one for the traffic source, one for the switch); this machine has {n}");
    }
    Ok(())
}

/// Pins task `pid` (0: the calling thread) to `cpu`.
pub fn pin(pid: i32, cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set)
    };
    if r != 0 {
        bail!("pin task {pid} to CPU {cpu}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Pins every NAPI thread of devices named `dev` (`napi/<dev>-<id>`; each
/// configuration has its own `dev` in its own namespace) to `cpu`; returns
/// how many there were.
pub fn pin_napi_threads(dev: &str, cpu: usize) -> Result<usize> {
    let prefix = format!("napi/{dev}-");
    let mut n = 0;
    for e in fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(comm) = fs::read_to_string(e.path().join("comm")) else { continue };
        if comm.trim_end().starts_with(&prefix) {
            pin(pid, cpu)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Time CPU `cpu` has spent working (user, nice, system, irq, softirq; not
/// idle, iowait, or steal: time the hypervisor gave to others), from
/// /proc/stat, in its USER_HZ ticks.
pub fn busy(cpu: usize) -> Result<Duration> {
    let stat = fs::read_to_string("/proc/stat").context("/proc/stat")?;
    let name = format!("cpu{cpu} ");
    let line = stat.lines().find(|l| l.starts_with(&name)).with_context(|| format!("no {name}in /proc/stat"))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap_or(0)).collect();
    if v.len() < 7 {
        bail!("/proc/stat: short line {line:?}");
    }
    let ticks = v[0] + v[1] + v[2] + v[5] + v[6];
    // SAFETY: no arguments.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// Keeps `cpu` out of its idle loop while alive: a SCHED_IDLE thread that
/// spins, giving way at once to any other task (the switch's NAPI thread).
/// On this VM an idle CPU halts, and a halted CPU takes tens of µs to wake:
/// the veth ring overflows meanwhile, and the switch would be measured
/// waking up, not switching. Its CPU time is reported so it can be taken
/// out of the CPU's busy time.
pub struct Spinner {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Duration>>,
}

/// CPU time of the calling thread so far.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Spinner {
    pub fn start(cpu: usize) -> Result<Spinner> {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: the calling thread, a valid sched_param.
            let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
            let ok = if r != 0 {
                Err(std::io::Error::last_os_error().to_string())
            } else {
                pin(0, cpu).map_err(|e| e.to_string())
            };
            let _ = tx.send(ok);
            let t0 = thread_cpu_time();
            while !flag.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
            thread_cpu_time() - t0
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(Spinner { stop, thread: Some(thread) }),
            Ok(Err(e)) => bail!("spinner on CPU {cpu}: {e}"),
            Err(_) => bail!("spinner on CPU {cpu} died"),
        }
    }

    /// Stops the thread; returns the CPU time it got.
    pub fn stop(mut self) -> Duration {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default()
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
