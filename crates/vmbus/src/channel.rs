//! A channel's ring pair, laid out as PROTOCOL.md §1.1 places it in the ring GPADL:
//! the outbound (guest-to-host) ring at page 0, the inbound (host-to-guest) ring at the
//! open request's page offset.

use std::sync::Arc;

use crate::client::OpenedChannel;
use crate::memory::{GpadlMapping, PAGE_SIZE};
use crate::ring::{RingError, RingMemory, RingReader, RingWriter};

/// The host's two rings of one channel. The GPADL view is kept alive with them.
pub struct HostRings {
    /// Reads what the guest writes (the outbound ring).
    pub reader: RingReader,
    /// Writes what the guest reads (the inbound ring).
    pub writer: RingWriter,
    _mapping: Arc<GpadlMapping>,
}

impl HostRings {
    /// Views the rings in a mapped ring GPADL, validating sizes and indices.
    pub fn new(
        mapping: Arc<GpadlMapping>,
        downstream_offset_pages: u32,
    ) -> Result<Self, RingError> {
        let split = downstream_offset_pages as usize * PAGE_SIZE;
        let total = mapping.len();
        if split == 0 || split >= total {
            return Err(RingError::MemoryTooSmall {
                len: split.min(total),
                min: crate::ring::RING_HEADER_SIZE + crate::ring::MIN_RING_DATA_SIZE,
            });
        }
        // SAFETY: both halves lie inside the mapping, which `_mapping` keeps alive.
        let (outbound, inbound) = unsafe {
            (
                RingMemory::new(mapping.as_ptr(), split)?,
                RingMemory::new(mapping.as_ptr().add(split), total - split)?,
            )
        };
        Ok(Self {
            reader: RingReader::new(outbound)?,
            writer: RingWriter::new(inbound)?,
            _mapping: mapping,
        })
    }

    /// Splits into reader and writer, with the mapping kept alive by the returned guard.
    pub fn split(self) -> (RingReader, RingWriter, Arc<GpadlMapping>) {
        (self.reader, self.writer, self._mapping)
    }
}

/// The guest's two rings of one opened channel.
pub struct GuestRings {
    /// Writes the outbound ring.
    pub writer: RingWriter,
    /// Reads the inbound ring.
    pub reader: RingReader,
}

impl GuestRings {
    /// Views the rings of a channel the client opened. The `OpenedChannel` (which owns
    /// the memory) must outlive the rings.
    pub fn new(channel: &OpenedChannel) -> Result<Self, RingError> {
        let split = channel.inbound_offset_pages as usize * PAGE_SIZE;
        let total = channel.region.len();
        // SAFETY: both halves lie inside the region; the caller keeps it alive.
        let (outbound, inbound) = unsafe {
            (
                RingMemory::new(channel.region.as_ptr(), split)?,
                RingMemory::new(channel.region.as_ptr().add(split), total - split)?,
            )
        };
        Ok(Self {
            writer: RingWriter::new(outbound)?,
            reader: RingReader::new(inbound)?,
        })
    }
}
