//! Guest memory of the emulated transport: a memfd that the guest owns and the host maps.
//!
//! A guest physical address (GPA) is a byte offset in the memfd and a PFN is `GPA >> 12`
//! (PROTOCOL.md §0, [E]). The guest carves page-aligned regions out of it for rings and
//! buffers ([`GuestMemory::alloc`]); the host maps the whole file once for bounds-checked
//! GPA-direct access ([`HostMemory`]) and maps each GPADL's pages as one contiguous view
//! ([`HostMemory::map_gpadl`]) so that a ring or a receive buffer can be used in place.
//!
//! Memory shared with the peer is never turned into Rust references: every access is a
//! copy through a raw pointer after a bounds check, because the peer may change the bytes
//! at any time.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Mutex;

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

/// The page size of the VMBus protocol, whatever the machine's page size.
pub const PAGE_SIZE: usize = 4096;

/// Errors of guest-memory management.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// The error the kernel returned.
        source: std::io::Error,
    },
    /// The memfd's size is zero or not a multiple of 4096.
    #[error("guest memory size {size} is not a non-zero multiple of 4096")]
    BadSize {
        /// The size found.
        size: u64,
    },
    /// The memfd is not sealed against shrinking, so the host could fault on it.
    #[error("guest memory is not sealed with F_SEAL_SHRINK")]
    NotSealed,
    /// A range does not lie inside guest memory.
    #[error("guest range {gpa:#x}+{len:#x} is outside guest memory of {size:#x} bytes")]
    OutOfRange {
        /// Start of the range.
        gpa: u64,
        /// Length of the range.
        len: u64,
        /// Size of guest memory.
        size: u64,
    },
    /// A page number lies outside guest memory.
    #[error("PFN {pfn:#x} is outside guest memory of {pages} pages")]
    PfnOutOfRange {
        /// The page number.
        pfn: u64,
        /// Pages in guest memory.
        pages: u64,
    },
    /// No free run of pages is large enough.
    #[error("guest memory exhausted: no {pages} free contiguous pages (raise --memory)")]
    Exhausted {
        /// Pages asked for.
        pages: usize,
    },
}

fn os(what: &'static str) -> impl FnOnce(rustix::io::Errno) -> MemoryError {
    move |e| MemoryError::Os {
        what,
        source: e.into(),
    }
}

/// A shared mapping that is unmapped on drop.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access goes through raw-pointer copies.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn map_fd(fd: BorrowedFd<'_>, offset: u64, len: usize) -> Result<Self, MemoryError> {
        // SAFETY: a fresh shared mapping of a file we hold; nothing aliases it in Rust.
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                offset,
            )
        }
        .map_err(os("mmap guest memory"))?;
        Ok(Self {
            base: NonNull::new(base.cast()).expect("mmap never returns null"),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we created this mapping and nobody uses it any more.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// Copies `dst.len()` bytes out of shared memory at `src`.
///
/// # Safety
/// `src..src + dst.len()` must be mapped.
#[inline]
pub unsafe fn copy_from_shared(src: *const u8, dst: &mut [u8]) {
    // SAFETY: the caller guarantees the source is mapped; the destination is ours.
    unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) }
}

/// Copies `src` into shared memory at `dst`.
///
/// # Safety
/// `dst..dst + src.len()` must be mapped and writable.
#[inline]
pub unsafe fn copy_to_shared(src: &[u8], dst: *mut u8) {
    // SAFETY: the caller guarantees the destination is mapped.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) }
}

/// A page-aligned region of guest memory that the guest allocated.
#[derive(Debug)]
pub struct GuestRegion {
    gpa: u64,
    len: usize,
    ptr: NonNull<u8>,
}

// SAFETY: the region points into a mapping owned by `GuestMemory`, which outlives it by
// construction (the guest keeps its `Arc<GuestMemory>` alive as long as any region).
unsafe impl Send for GuestRegion {}
// SAFETY: as above.
unsafe impl Sync for GuestRegion {}

impl GuestRegion {
    /// Guest physical address of the first byte.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }
    /// Length in bytes (a multiple of 4096).
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the region is empty (never, for an allocated region).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Pointer to the first byte in this process.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    /// The page numbers the region covers, as a GPADL names them.
    pub fn pfns(&self) -> impl Iterator<Item = u64> + '_ {
        let first = self.gpa / PAGE_SIZE as u64;
        (0..(self.len / PAGE_SIZE) as u64).map(move |i| first + i)
    }
    /// Copies `src` into the region at `offset`; panics on a bad range (guest-owned, a bug).
    pub fn write(&self, offset: usize, src: &[u8]) {
        assert!(offset.checked_add(src.len()).is_some_and(|e| e <= self.len));
        // SAFETY: bounds checked above; the mapping lives as long as the region.
        unsafe { copy_to_shared(src, self.ptr.as_ptr().add(offset)) }
    }
    /// Copies bytes at `offset` out of the region; panics on a bad range.
    pub fn read(&self, offset: usize, dst: &mut [u8]) {
        assert!(offset.checked_add(dst.len()).is_some_and(|e| e <= self.len));
        // SAFETY: bounds checked above; the mapping lives as long as the region.
        unsafe { copy_from_shared(self.ptr.as_ptr().add(offset), dst) }
    }
}

/// The guest's side of its memory: creates the memfd, maps it and allocates regions.
pub struct GuestMemory {
    fd: OwnedFd,
    map: Mapping,
    /// One flag per page: allocated or free. First-fit allocation; regions are few and big.
    pages: Mutex<Vec<bool>>,
}

impl GuestMemory {
    /// Creates `size` bytes of guest memory (rounded up to pages), sealed against
    /// shrinking as the host requires (PROTOCOL.md §3.1 E2).
    pub fn new(size: usize) -> Result<Self, MemoryError> {
        let size = size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        if size == 0 {
            return Err(MemoryError::BadSize { size: 0 });
        }
        let fd = rustix::fs::memfd_create(
            "hvnet-guest-memory",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(os("memfd_create"))?;
        rustix::fs::ftruncate(&fd, size as u64).map_err(os("size guest memory"))?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW)
            .map_err(os("seal guest memory"))?;
        let map = Mapping::map_fd(fd.as_fd(), 0, size)?;
        Ok(Self {
            fd,
            map,
            pages: Mutex::new(vec![false; size / PAGE_SIZE]),
        })
    }

    /// The memfd, to pass to the host.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.map.len
    }

    /// Allocates `len` bytes (rounded up to pages), zeroed, page aligned.
    pub fn alloc(&self, len: usize) -> Result<GuestRegion, MemoryError> {
        let want = len.div_ceil(PAGE_SIZE).max(1);
        let mut pages = self.pages.lock().unwrap();
        let mut run = 0;
        let mut found = None;
        for (i, used) in pages.iter().enumerate() {
            run = if *used { 0 } else { run + 1 };
            if run == want {
                found = Some(i + 1 - want);
                break;
            }
        }
        let first = found.ok_or(MemoryError::Exhausted { pages: want })?;
        pages[first..first + want]
            .iter_mut()
            .for_each(|p| *p = true);
        drop(pages);
        let offset = first * PAGE_SIZE;
        // SAFETY: offset + want pages lies inside the mapping (found by the scan above).
        let ptr = unsafe { self.map.base.as_ptr().add(offset) };
        // SAFETY: the pages are ours (just allocated) and mapped.
        unsafe { std::ptr::write_bytes(ptr, 0, want * PAGE_SIZE) };
        Ok(GuestRegion {
            gpa: offset as u64,
            len: want * PAGE_SIZE,
            ptr: NonNull::new(ptr).unwrap(),
        })
    }

    /// Returns a region's pages; the caller must be sure the host no longer uses them
    /// (its GPADL torn down, or never shared).
    pub fn free(&self, region: GuestRegion) {
        let first = (region.gpa / PAGE_SIZE as u64) as usize;
        let mut pages = self.pages.lock().unwrap();
        for p in pages.iter_mut().skip(first).take(region.len / PAGE_SIZE) {
            *p = false;
        }
    }

    /// Pointer to guest physical address `gpa`, if `gpa..gpa+len` is inside memory.
    pub fn gpa_ptr(&self, gpa: u64, len: usize) -> Option<*mut u8> {
        let end = gpa.checked_add(len as u64)?;
        (end <= self.map.len as u64).then(|| {
            // SAFETY: in bounds, checked above.
            unsafe { self.map.base.as_ptr().add(gpa as usize) }
        })
    }
}

/// The host's view of one guest's memory: the memfd mapped once, checked on every access.
pub struct HostMemory {
    fd: OwnedFd,
    map: Mapping,
}

impl HostMemory {
    /// Maps the guest's memfd after checking its size and seal (PROTOCOL.md §3.1 E2).
    pub fn new(fd: OwnedFd) -> Result<Self, MemoryError> {
        let size = rustix::fs::fstat(&fd)
            .map_err(os("fstat guest memory"))?
            .st_size as u64;
        if size == 0 || !size.is_multiple_of(PAGE_SIZE as u64) {
            return Err(MemoryError::BadSize { size });
        }
        let seals = rustix::fs::fcntl_get_seals(&fd).map_err(|_| MemoryError::NotSealed)?;
        if !seals.contains(SealFlags::SHRINK) {
            return Err(MemoryError::NotSealed);
        }
        let len = usize::try_from(size).map_err(|_| MemoryError::BadSize { size })?;
        let map = Mapping::map_fd(fd.as_fd(), 0, len)?;
        Ok(Self { fd, map })
    }

    /// Size of guest memory in bytes.
    pub fn size(&self) -> u64 {
        self.map.len as u64
    }

    /// Number of pages of guest memory.
    pub fn pages(&self) -> u64 {
        self.size() / PAGE_SIZE as u64
    }

    fn check(&self, gpa: u64, len: usize) -> Result<*mut u8, MemoryError> {
        match gpa.checked_add(len as u64) {
            Some(end) if end <= self.size() => {
                // SAFETY: in bounds, checked above.
                Ok(unsafe { self.map.base.as_ptr().add(gpa as usize) })
            }
            _ => Err(MemoryError::OutOfRange {
                gpa,
                len: len as u64,
                size: self.size(),
            }),
        }
    }

    /// Copies guest bytes at `gpa` into `dst`, bounds-checked.
    pub fn read(&self, gpa: u64, dst: &mut [u8]) -> Result<(), MemoryError> {
        let p = self.check(gpa, dst.len())?;
        // SAFETY: checked above.
        unsafe { copy_from_shared(p, dst) };
        Ok(())
    }

    /// Copies `src` into guest memory at `gpa`, bounds-checked.
    pub fn write(&self, gpa: u64, src: &[u8]) -> Result<(), MemoryError> {
        let p = self.check(gpa, src.len())?;
        // SAFETY: checked above.
        unsafe { copy_to_shared(src, p) };
        Ok(())
    }

    /// Maps the pages of a GPADL, in order, as one contiguous view.
    ///
    /// Runs of consecutive PFNs are mapped with one `mmap` each, over a reserved
    /// address range, so the view is valid whatever pages the guest chose.
    pub fn map_gpadl(&self, pfns: &[u64]) -> Result<GpadlMapping, MemoryError> {
        let pages = self.pages();
        if let Some(&pfn) = pfns.iter().find(|&&p| p >= pages) {
            return Err(MemoryError::PfnOutOfRange { pfn, pages });
        }
        let len = pfns.len() * PAGE_SIZE;
        if len == 0 {
            return Err(MemoryError::BadSize { size: 0 });
        }
        // Reserve the address range first; the runs are mapped over it.
        // SAFETY: a fresh anonymous reservation.
        let base = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(os("reserve GPADL view"))?;
        let mapping = Mapping {
            base: NonNull::new(base.cast()).unwrap(),
            len,
        };
        let mut i = 0;
        while i < pfns.len() {
            let mut j = i + 1;
            while j < pfns.len() && pfns[j] == pfns[j - 1] + 1 {
                j += 1;
            }
            // SAFETY: MAP_FIXED over our own reservation, inside its bounds.
            unsafe {
                rustix::mm::mmap(
                    mapping.base.as_ptr().add(i * PAGE_SIZE).cast(),
                    (j - i) * PAGE_SIZE,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::SHARED | MapFlags::FIXED,
                    self.fd.as_fd(),
                    pfns[i] * PAGE_SIZE as u64,
                )
            }
            .map_err(os("map GPADL pages"))?;
            i = j;
        }
        Ok(GpadlMapping { map: mapping })
    }

    /// Pointer to a bounds-checked guest range, for copying straight between mappings.
    pub fn range_ptr(&self, gpa: u64, len: usize) -> Result<*mut u8, MemoryError> {
        self.check(gpa, len)
    }
}

/// A GPADL's pages mapped contiguously in the host. Unmapped on drop.
pub struct GpadlMapping {
    map: Mapping,
}

impl GpadlMapping {
    /// Length of the view in bytes.
    pub fn len(&self) -> usize {
        self.map.len
    }
    /// Whether the view is empty (never).
    pub fn is_empty(&self) -> bool {
        self.map.len == 0
    }
    /// Base pointer of the view.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.base.as_ptr()
    }
    /// Pointer to `offset..offset+len` of the view, if inside.
    pub fn range_ptr(&self, offset: usize, len: usize) -> Option<*mut u8> {
        let end = offset.checked_add(len)?;
        // SAFETY: in bounds, checked.
        (end <= self.map.len).then(|| unsafe { self.map.base.as_ptr().add(offset) })
    }
    /// Copies bytes of the view at `offset` into `dst`, if inside.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Option<()> {
        let p = self.range_ptr(offset, dst.len())?;
        // SAFETY: checked by range_ptr.
        unsafe { copy_from_shared(p, dst) };
        Some(())
    }
    /// Copies `src` into the view at `offset`, if inside.
    pub fn write(&self, offset: usize, src: &[u8]) -> Option<()> {
        let p = self.range_ptr(offset, src.len())?;
        // SAFETY: checked by range_ptr.
        unsafe { copy_to_shared(src, p) };
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_and_host_see_the_same_bytes_through_a_scattered_gpadl() {
        let guest = GuestMemory::new(16 * PAGE_SIZE).unwrap();
        let fd = rustix::io::fcntl_dupfd_cloexec(guest.fd(), 0).unwrap();
        let host = HostMemory::new(fd).unwrap();
        let a = guest.alloc(PAGE_SIZE).unwrap();
        let b = guest.alloc(2 * PAGE_SIZE).unwrap();
        a.write(0, b"page-a");
        b.write(PAGE_SIZE, b"page-b1");
        // GPADL with pages out of order: b[1], a[0].
        let pfns = [b.pfns().nth(1).unwrap(), a.pfns().next().unwrap()];
        let view = host.map_gpadl(&pfns).unwrap();
        let mut buf = [0u8; 7];
        view.read(0, &mut buf).unwrap();
        assert_eq!(&buf, b"page-b1");
        view.read(PAGE_SIZE, &mut buf[..6]).unwrap();
        assert_eq!(&buf[..6], b"page-a");
        view.write(PAGE_SIZE + 6, b"!").unwrap();
        let mut c = [0u8; 1];
        a.read(6, &mut c);
        assert_eq!(&c, b"!");
        assert!(view.read(2 * PAGE_SIZE - 1, &mut buf).is_none());
    }

    #[test]
    fn host_rejects_out_of_range_access() {
        let guest = GuestMemory::new(4 * PAGE_SIZE).unwrap();
        let fd = rustix::io::fcntl_dupfd_cloexec(guest.fd(), 0).unwrap();
        let host = HostMemory::new(fd).unwrap();
        let mut buf = [0u8; 16];
        assert!(host.read(4 * PAGE_SIZE as u64 - 8, &mut buf).is_err());
        assert!(host.read(u64::MAX - 4, &mut buf).is_err());
        assert!(host.map_gpadl(&[4]).is_err());
        assert!(host.read(0, &mut buf).is_ok());
    }

    #[test]
    fn host_rejects_unsealed_memory() {
        let fd = rustix::fs::memfd_create("t", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        assert!(matches!(HostMemory::new(fd), Err(MemoryError::NotSealed)));
    }

    #[test]
    fn allocation_is_first_fit_and_reusable() {
        let guest = GuestMemory::new(4 * PAGE_SIZE).unwrap();
        let a = guest.alloc(2 * PAGE_SIZE).unwrap();
        let b = guest.alloc(PAGE_SIZE).unwrap();
        assert!(guest.alloc(2 * PAGE_SIZE).is_err());
        guest.free(a);
        let c = guest.alloc(2 * PAGE_SIZE).unwrap();
        assert_eq!(c.gpa(), 0);
        assert_eq!(b.gpa(), 2 * PAGE_SIZE as u64);
    }
}
