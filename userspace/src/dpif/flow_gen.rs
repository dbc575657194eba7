//! The flow generation: slot 0 of the datapath's `OXVS_FLOW_GEN` array, which
//! the datapath's last-hit cache compares with the generation its copy of a
//! flow was made under. Userspace bumps it after every change to the flow
//! table (add, modify, delete, flush), so no CPU goes on using a copy of a
//! flow that changed or that another flow now overlaps.
//!
//! The array is mmap-able: a bump is one atomic add on shared memory. No
//! syscall on the flow path, and two processes changing flows at once (a
//! daemon and `oxvs dpctl`) can't write the same value back and lose a bump.
use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;

pub struct FlowGen {
    page: NonNull<libc::c_void>,
    len: usize,
}

// SAFETY: the mapping is only reached through an AtomicU64; it lives until drop.
unsafe impl Send for FlowGen {}
// SAFETY: as above.
unsafe impl Sync for FlowGen {}

impl FlowGen {
    /// Maps the (pinned or new) flow generation array.
    pub fn map(map: &MapData) -> io::Result<FlowGen> {
        // SAFETY: no arguments.
        let len = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a shared mapping of the map's first page (its value area,
        // which the kernel rounds up to a page), checked below.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(FlowGen { page: NonNull::new(p).expect("mmap returned null"), len })
    }

    fn cell(&self) -> &AtomicU64 {
        // SAFETY: the page is mapped, 8-aligned, and slot 0 is a u64 that the
        // datapath only reads.
        unsafe { AtomicU64::from_ptr(self.page.as_ptr() as *mut u64) }
    }

    /// Call after the flow change is in the flow table: a datapath CPU that
    /// sees the new generation then also sees the change.
    pub fn bump(&self) {
        self.cell().fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for FlowGen {
    fn drop(&mut self) {
        // SAFETY: unmapping what `map` mapped, once.
        unsafe { libc::munmap(self.page.as_ptr(), self.len) };
    }
}
