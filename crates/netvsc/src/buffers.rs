//! The guest's transmit memory: send-buffer sections and staging buffers.
//!
//! The guest owns the send buffer's sections (PROTOCOL.md §4.6): it lends one to the host
//! with each NVSP 107 that names it and gets it back with the 108 completion. Small
//! frames are copied into a section, several to a section. A frame that does not fit, or
//! finds no free section, goes as a GPA-direct page buffer pointing at the staging buffer
//! it was read into, which is then lent until its completion.

use std::sync::Arc;

use vmbus::memory::{GuestMemory, GuestRegion, MemoryError};

/// A pool of equal slots carved out of one guest-memory region (or of a share of one:
/// the send buffer's sections are split between the channels, each numbering them as
/// the host does, from the start of the whole buffer).
pub struct SlotPool {
    region: Arc<GuestRegion>,
    slot_size: usize,
    /// First slot of this share (global numbering).
    first: u32,
    count: u32,
    free: Vec<u32>,
    /// Whether each slot (from `first`) is lent, so a bogus completion is caught.
    lent: Vec<bool>,
}

impl SlotPool {
    /// Allocates `count` slots of `slot_size` bytes.
    pub fn new(memory: &GuestMemory, slot_size: usize, count: u32) -> Result<Self, MemoryError> {
        let region = memory.alloc(slot_size * count as usize)?;
        Ok(Self::from_region(region, slot_size))
    }

    /// Carves an existing region (e.g. the send buffer) into slots.
    pub fn from_region(region: GuestRegion, slot_size: usize) -> Self {
        let count = (region.len() / slot_size) as u32;
        Self {
            region: Arc::new(region),
            slot_size,
            first: 0,
            count,
            free: (0..count).rev().collect(),
            lent: vec![false; count as usize],
        }
    }

    /// Splits the (unused) pool into `parts` shares of consecutive slots, the last
    /// taking the remainder; slot numbers stay those of the whole region.
    pub fn split(self, parts: u32) -> Vec<SlotPool> {
        let parts = parts.clamp(1, self.count.max(1));
        let each = self.count / parts;
        (0..parts)
            .map(|i| {
                let first = self.first + i * each;
                let count = if i == parts - 1 {
                    self.count - i * each
                } else {
                    each
                };
                SlotPool {
                    region: self.region.clone(),
                    slot_size: self.slot_size,
                    first,
                    count,
                    free: (first..first + count).rev().collect(),
                    lent: vec![false; count as usize],
                }
            })
            .collect()
    }

    /// Takes a free slot.
    pub fn alloc(&mut self) -> Option<u32> {
        let slot = self.free.pop()?;
        self.lent[(slot - self.first) as usize] = true;
        Some(slot)
    }

    /// Returns a slot; false if it was not taken (a bad completion).
    pub fn release(&mut self, slot: u32) -> bool {
        let Some(lent) = slot
            .checked_sub(self.first)
            .and_then(|i| self.lent.get_mut(i as usize))
            .filter(|l| **l)
        else {
            return false;
        };
        *lent = false;
        self.free.push(slot);
        true
    }

    /// Slots in the pool.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Slots free now.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Size of one slot.
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// Guest physical address of byte `offset` of `slot`.
    pub fn gpa(&self, slot: u32, offset: usize) -> u64 {
        self.region.gpa() + (slot as usize * self.slot_size + offset) as u64
    }

    /// Pointer to byte `offset` of `slot` in this process.
    pub fn ptr(&self, slot: u32, offset: usize) -> *mut u8 {
        assert!((self.first..self.first + self.count).contains(&slot) && offset <= self.slot_size);
        // SAFETY: inside the region, checked above.
        unsafe {
            self.region
                .as_ptr()
                .add(slot as usize * self.slot_size + offset)
        }
    }

    /// Copies `src` into `slot` at `offset`.
    pub fn write(&self, slot: u32, offset: usize, src: &[u8]) {
        assert!(offset + src.len() <= self.slot_size);
        self.region
            .write(slot as usize * self.slot_size + offset, src);
    }

    /// A mutable view of `len` bytes of `slot` at `offset`, for reading a frame into.
    ///
    /// The guest owns its staging slots: the host only reads them while a send is
    /// outstanding, and a slot is never handed out while lent.
    pub fn slice_mut(&mut self, slot: u32, offset: usize, len: usize) -> &mut [u8] {
        assert!(offset + len <= self.slot_size);
        // SAFETY: in bounds; `&mut self` makes this the only view handed out.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(slot, offset), len) }
    }

    /// The region, e.g. to describe it in a GPADL.
    pub fn region(&self) -> &GuestRegion {
        &self.region
    }

    /// Gives the region back (to free it after the host let go of it); None while
    /// another share of it is still alive.
    pub fn into_region(self) -> Option<GuestRegion> {
        Arc::try_unwrap(self.region).ok()
    }
}
