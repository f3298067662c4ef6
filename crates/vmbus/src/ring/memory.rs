//! One ring's shared memory (PROTOCOL.md §1.1): the control page layout and the only code
//! that touches the shared bytes.
//!
//! Control fields are accessed as 32-bit atomics overlaid on the page; the data area is copied
//! with `ptr::copy_nonoverlapping`. Every offset handed to the copy helpers has been validated
//! by the reader or writer (`< data_size`, length `≤ data_size`), so no access leaves the
//! mapping whatever the peer writes.
//!
//! Under `--cfg loom` a [`RingMemory`] may instead be a model ring (control fields as loom
//! atomics, data bytes as loom cells) so that loom can explore the signalling protocol; the
//! reader and writer code is the same.

use core::mem::offset_of;
use core::ptr::NonNull;
use core::sync::atomic::Ordering;
#[cfg(not(loom))]
use core::sync::atomic::fence;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{MIN_RING_DATA_SIZE, RING_HEADER_SIZE, RingError};

/// The ring control page as laid out in shared memory (§1.1). Documents the layout; the
/// ring accesses the fields it uses atomically at these offsets.
#[repr(C)]
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RingControlPage {
    /// Offset in the data area where the writer puts the next packet (writer-owned).
    pub write_index: u32,
    /// Offset in the data area of the next unread packet (reader-owned).
    pub read_index: u32,
    /// Non-zero: the reader asks not to be signalled (reader-owned).
    pub interrupt_mask: u32,
    /// Free bytes a blocked writer waits for; 0 = none (writer-owned).
    pub pending_send_sz: u32,
    /// Reserved.
    pub reserved1: [u32; 12],
    /// Bit 0: [`FEATURE_PENDING_SEND_SZ`] (set by the guest at init).
    pub feature_bits: u32,
    /// Reserved up to the end of the page.
    pub reserved2: [u8; 4028],
}

const _: () = assert!(core::mem::size_of::<RingControlPage>() == RING_HEADER_SIZE);
const _: () = assert!(offset_of!(RingControlPage, feature_bits) == 0x40);

/// `feature_bits` bit 0: the sides honour `pending_send_sz` (§1.1).
pub const FEATURE_PENDING_SEND_SZ: u32 = 1;

/// The data area must hold at least the smallest packet (descriptor + trailer, 24 bytes) with
/// room to spare (`writable > L`), and a blocked writer's threshold must be reachable.
const ABSOLUTE_MIN_DATA_SIZE: usize = 32;

/// A control field, by its byte offset in the control page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Field {
    WriteIndex = offset_of!(RingControlPage, write_index),
    ReadIndex = offset_of!(RingControlPage, read_index),
    InterruptMask = offset_of!(RingControlPage, interrupt_mask),
    PendingSendSz = offset_of!(RingControlPage, pending_send_sz),
    FeatureBits = offset_of!(RingControlPage, feature_bits),
}

/// A snapshot of a ring's control fields, each read once (for tracing, dumps and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingControl {
    /// `write_index`, unvalidated.
    pub write_index: u32,
    /// `read_index`, unvalidated.
    pub read_index: u32,
    /// `interrupt_mask`.
    pub interrupt_mask: u32,
    /// `pending_send_sz`.
    pub pending_send_sz: u32,
    /// `feature_bits`.
    pub feature_bits: u32,
}

/// One ring's shared memory: the 4096-byte control page followed by the data area.
///
/// It is only a view: it does not own or free the memory. Several `RingMemory`s may view
/// the same ring (one per side, in one or two processes).
#[derive(Debug)]
pub struct RingMemory {
    backing: Backing,
    data_size: u32,
}

#[cfg(not(loom))]
type Backing = NonNull<u8>;

#[cfg(loom)]
#[derive(Debug)]
enum Backing {
    Raw(NonNull<u8>),
    Model(loom::sync::Arc<model::ModelRing>),
}

// SAFETY: the memory is shared with a peer by design; all accesses to it go through atomics
// or through copies whose ranges the protocol (and validation) keeps within the mapping.
unsafe impl Send for RingMemory {}
// SAFETY: as above; `&RingMemory` only allows atomic control accesses and copies.
unsafe impl Sync for RingMemory {}

impl RingMemory {
    /// Views the ring at `base`: `len = 4096 + data_size`, `data_size` a multiple of 4096
    /// and at least [`MIN_RING_DATA_SIZE`] (the host's §1.1 decision).
    ///
    /// # Safety
    ///
    /// `base` points to `len` bytes valid for reads and writes (shared with the peer) for the
    /// lifetime of the `RingMemory` and of all rings made from it, and is page aligned. The
    /// peer may write any of it at any time; nothing else in this process may hold a Rust
    /// reference to those bytes.
    pub unsafe fn new(base: *mut u8, len: usize) -> Result<Self, RingError> {
        // SAFETY: forwarded.
        let mem = unsafe { Self::new_with_min(base, len, MIN_RING_DATA_SIZE)? };
        if !(base as usize).is_multiple_of(4096) {
            return Err(RingError::Misaligned {
                addr: base as usize,
                align: 4096,
            });
        }
        let data_size = mem.data_size as usize;
        if !data_size.is_multiple_of(4096) {
            return Err(RingError::BadDataSize {
                data_size: len - RING_HEADER_SIZE,
                multiple: 4096,
            });
        }
        Ok(mem)
    }

    /// Like [`RingMemory::new`] with a caller-chosen minimum data size, for tests, tools and
    /// fuzzing: the data area need only be a multiple of 8 and at least
    /// `max(min_data_size, 32)` bytes, and `base` only 8-byte aligned.
    ///
    /// # Safety
    ///
    /// As for [`RingMemory::new`], except that 8-byte alignment suffices.
    pub unsafe fn new_with_min(
        base: *mut u8,
        len: usize,
        min_data_size: usize,
    ) -> Result<Self, RingError> {
        let Some(base) = NonNull::new(base) else {
            return Err(RingError::Misaligned { addr: 0, align: 8 });
        };
        if !(base.as_ptr() as usize).is_multiple_of(8) {
            return Err(RingError::Misaligned {
                addr: base.as_ptr() as usize,
                align: 8,
            });
        }
        let data_size = len
            .checked_sub(RING_HEADER_SIZE)
            .ok_or(RingError::MemoryTooSmall {
                len,
                min: RING_HEADER_SIZE + min_data_size,
            })?;
        let data_size = Self::check_data_size(data_size, min_data_size)?;
        #[cfg(loom)]
        let base = Backing::Raw(base);
        Ok(Self {
            backing: base,
            data_size,
        })
    }

    fn check_data_size(data_size: usize, min_data_size: usize) -> Result<u32, RingError> {
        let min = min_data_size.max(ABSOLUTE_MIN_DATA_SIZE);
        if data_size < min {
            return Err(RingError::DataSizeTooSmall { data_size, min });
        }
        if !data_size.is_multiple_of(8) {
            return Err(RingError::BadDataSize {
                data_size,
                multiple: 8,
            });
        }
        // Indices are u32; keep every sum of two offsets inside u32 as well.
        u32::try_from(data_size)
            .ok()
            .filter(|&d| d <= 1 << 31)
            .ok_or(RingError::DataSizeTooLarge {
                data_size,
                max: 1 << 31,
            })
    }

    /// A model ring for loom tests: control fields are loom atomics, the data area loom cells.
    /// [`RingMemory::share`] gives the peer's view of it.
    #[cfg(loom)]
    pub fn new_model(data_size: usize) -> Result<Self, RingError> {
        let data_size = Self::check_data_size(data_size, 0)?;
        let ring = model::ModelRing::new(data_size as usize);
        Ok(Self {
            backing: Backing::Model(loom::sync::Arc::new(ring)),
            data_size,
        })
    }

    /// Another view of the same memory (loom builds only).
    #[cfg(loom)]
    pub fn share(&self) -> Self {
        let backing = match &self.backing {
            Backing::Raw(p) => Backing::Raw(*p),
            Backing::Model(m) => Backing::Model(m.clone()),
        };
        Self {
            backing,
            data_size: self.data_size,
        }
    }

    /// Size of the data area in bytes.
    pub fn data_size(&self) -> u32 {
        self.data_size
    }

    /// Guest-side init (§1.1): zero the control page, indices 0, `feature_bits` = 1
    /// ([`FEATURE_PENDING_SEND_SZ`]). Only before either side uses the ring.
    pub fn init_header(&self) {
        for offset in (0..RING_HEADER_SIZE).step_by(4) {
            self.store_at(offset, 0, Ordering::Relaxed);
        }
        self.store(
            Field::FeatureBits,
            FEATURE_PENDING_SEND_SZ,
            Ordering::Relaxed,
        );
        self.fence();
    }

    /// Reads every control field once, without validation.
    pub fn control(&self) -> RingControl {
        RingControl {
            write_index: self.load(Field::WriteIndex, Ordering::Acquire),
            read_index: self.load(Field::ReadIndex, Ordering::Acquire),
            interrupt_mask: self.load(Field::InterruptMask, Ordering::Acquire),
            pending_send_sz: self.load(Field::PendingSendSz, Ordering::Acquire),
            feature_bits: self.load(Field::FeatureBits, Ordering::Acquire),
        }
    }

    /// Loads a control field.
    #[inline(always)]
    pub(crate) fn load(&self, field: Field, order: Ordering) -> u32 {
        self.load_at(field as usize, order)
    }

    /// Stores a control field.
    #[inline(always)]
    pub(crate) fn store(&self, field: Field, value: u32, order: Ordering) {
        self.store_at(field as usize, value, order)
    }

    /// A full barrier (§1.4/§1.5 "full barrier").
    #[inline(always)]
    pub(crate) fn fence(&self) {
        #[cfg(not(loom))]
        fence(Ordering::SeqCst);
        #[cfg(loom)]
        match self.backing {
            Backing::Raw(_) => core::sync::atomic::fence(Ordering::SeqCst),
            Backing::Model(_) => loom::sync::atomic::fence(Ordering::SeqCst),
        }
    }

    /// The atomic u32 at `offset` (< 4096, multiple of 4) of a raw control page.
    #[inline(always)]
    fn raw_atomic<'a>(base: NonNull<u8>, offset: usize) -> &'a core::sync::atomic::AtomicU32 {
        debug_assert!(offset < RING_HEADER_SIZE && offset.is_multiple_of(4));
        // SAFETY: `base` is valid for 4096 + data_size bytes and 8-byte aligned (checked in
        // the constructor), offset is inside the control page and 4-byte aligned. The peer
        // may write the word concurrently, which is what atomics are for.
        unsafe { core::sync::atomic::AtomicU32::from_ptr(base.as_ptr().add(offset).cast()) }
    }

    #[inline(always)]
    fn load_at(&self, offset: usize, order: Ordering) -> u32 {
        #[cfg(not(loom))]
        return Self::raw_atomic(self.backing, offset).load(order);
        #[cfg(loom)]
        match &self.backing {
            Backing::Raw(p) => Self::raw_atomic(*p, offset).load(order),
            Backing::Model(m) => m.control(offset).map_or(0, |a| a.load(order)),
        }
    }

    #[inline(always)]
    fn store_at(&self, offset: usize, value: u32, order: Ordering) {
        #[cfg(not(loom))]
        Self::raw_atomic(self.backing, offset).store(value, order);
        #[cfg(loom)]
        match &self.backing {
            Backing::Raw(p) => Self::raw_atomic(*p, offset).store(value, order),
            Backing::Model(m) => {
                if let Some(a) = m.control(offset) {
                    a.store(value, order)
                }
            }
        }
    }

    /// Copies `src` into the data area at `offset`, wrapping at its end; returns the offset
    /// after the copy (modulo `data_size`).
    ///
    /// # Safety
    ///
    /// `offset < data_size` and `src.len() <= data_size`.
    #[inline(always)]
    pub(crate) unsafe fn copy_to_data(&self, offset: usize, src: &[u8]) -> usize {
        let size = self.data_size as usize;
        debug_assert!(offset < size && src.len() <= size);
        let first = size - offset;
        #[cfg(loom)]
        if let Backing::Model(m) = &self.backing {
            for (i, &b) in src.iter().enumerate() {
                m.write_byte((offset + i) % size, b);
            }
            return (offset + src.len()) % size;
        }
        let data = self.data_ptr();
        // SAFETY: by the preconditions every byte written is inside the data area; `src` is a
        // private buffer, so the ranges cannot overlap.
        unsafe {
            if src.len() < first {
                core::ptr::copy_nonoverlapping(src.as_ptr(), data.add(offset), src.len());
                offset + src.len()
            } else {
                core::ptr::copy_nonoverlapping(src.as_ptr(), data.add(offset), first);
                let rest = src.len() - first;
                core::ptr::copy_nonoverlapping(src.as_ptr().add(first), data, rest);
                rest
            }
        }
    }

    /// Copies `dst.len()` bytes out of the data area from `offset`, wrapping at its end.
    ///
    /// # Safety
    ///
    /// `offset < data_size` and `dst.len() <= data_size`.
    #[inline(always)]
    pub(crate) unsafe fn copy_from_data(&self, offset: usize, dst: &mut [u8]) {
        let size = self.data_size as usize;
        debug_assert!(offset < size && dst.len() <= size);
        let first = size - offset;
        #[cfg(loom)]
        if let Backing::Model(m) = &self.backing {
            for (i, b) in dst.iter_mut().enumerate() {
                *b = m.read_byte((offset + i) % size);
            }
            return;
        }
        let data = self.data_ptr();
        // SAFETY: by the preconditions every byte read is inside the data area; `dst` is a
        // private buffer. The peer may be writing the bytes concurrently (hostile or buggy);
        // we only ever look at the private copy.
        unsafe {
            if dst.len() <= first {
                core::ptr::copy_nonoverlapping(data.add(offset), dst.as_mut_ptr(), dst.len());
            } else {
                core::ptr::copy_nonoverlapping(data.add(offset), dst.as_mut_ptr(), first);
                let rest = dst.len() - first;
                core::ptr::copy_nonoverlapping(data, dst.as_mut_ptr().add(first), rest);
            }
        }
    }

    #[inline(always)]
    fn data_ptr(&self) -> *mut u8 {
        #[cfg(not(loom))]
        let base = self.backing;
        #[cfg(loom)]
        let Backing::Raw(base) = self.backing else {
            unreachable!("model rings copy bytewise")
        };
        // SAFETY: the mapping is 4096 + data_size bytes long.
        unsafe { base.as_ptr().add(RING_HEADER_SIZE) }
    }
}

#[cfg(loom)]
mod model {
    //! The loom model of a ring's memory.

    use super::{Field, RING_HEADER_SIZE};
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicU32;

    /// Control fields as loom atomics (other control words are not modelled: they read as 0
    /// and writes to them are dropped), data bytes as loom cells so that loom checks that
    /// the index protocol orders every data access.
    #[derive(Debug)]
    pub(super) struct ModelRing {
        control: [AtomicU32; 5],
        data: Box<[UnsafeCell<u8>]>,
    }

    // SAFETY: data cells are only accessed under the ring protocol, which loom checks.
    unsafe impl Sync for ModelRing {}
    // SAFETY: as above.
    unsafe impl Send for ModelRing {}

    impl ModelRing {
        pub(super) fn new(data_size: usize) -> Self {
            Self {
                control: core::array::from_fn(|_| AtomicU32::new(0)),
                data: (0..data_size).map(|_| UnsafeCell::new(0)).collect(),
            }
        }

        pub(super) fn control(&self, offset: usize) -> Option<&AtomicU32> {
            debug_assert!(offset < RING_HEADER_SIZE);
            let index = match offset {
                o if o == Field::WriteIndex as usize => 0,
                o if o == Field::ReadIndex as usize => 1,
                o if o == Field::InterruptMask as usize => 2,
                o if o == Field::PendingSendSz as usize => 3,
                o if o == Field::FeatureBits as usize => 4,
                _ => return None,
            };
            Some(&self.control[index])
        }

        pub(super) fn write_byte(&self, offset: usize, value: u8) {
            // SAFETY: loom checks the access.
            self.data[offset].with_mut(|p| unsafe { *p = value });
        }

        pub(super) fn read_byte(&self, offset: usize) -> u8 {
            // SAFETY: loom checks the access.
            self.data[offset].with(|p| unsafe { *p })
        }
    }
}
