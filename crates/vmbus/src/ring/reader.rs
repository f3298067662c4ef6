//! The reader side of a ring (PROTOCOL.md §1.5–§1.6).

use core::sync::atomic::Ordering;

use zerocopy::{FromBytes, IntoBytes};

use super::memory::{FEATURE_PENDING_SEND_SZ, Field, RingMemory};
use super::{RingError, readable, valid_index};
use crate::packet::{DESCRIPTOR_SIZE, PacketDescriptor, TRAILER_SIZE};

/// A packet copied out of the ring into the reader's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncomingPacket<'a> {
    /// The descriptor's `type` (a [`PacketType`](crate::packet::PacketType) constant, or
    /// anything the peer chose).
    pub packet_type: u16,
    /// The descriptor's flags.
    pub flags: u16,
    /// The descriptor's transaction id.
    pub transaction_id: u64,
    /// The type header: bytes `[16, offset8 × 8)` of the packet.
    pub header: &'a [u8],
    /// The payload: bytes `[offset8 × 8, len8 × 8)`, including the sender's padding.
    pub payload: &'a [u8],
}

/// Why [`RingReader::read`] returned no packet. See [`ReadError::is_fatal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The ring is corrupt: the channel must stop.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// The packet's `offset8` is outside `[2, len8]`: the packet was consumed and dropped;
    /// reading may go on.
    #[error("packet offset8 {offset8} outside [2, len8 {len8}]: packet dropped")]
    BadOffset {
        /// The `offset8` field.
        offset8: u16,
        /// The `len8` field.
        len8: u16,
        /// The packet's transaction id (for counting or tracing).
        transaction_id: u64,
    },
}

impl ReadError {
    /// Whether the channel must stop (`true`) or only this packet was lost (`false`).
    pub fn is_fatal(&self) -> bool {
        matches!(self, ReadError::Ring(_))
    }
}

/// Reader side of one ring: a private read cursor, published in batches by
/// [`RingReader::commit`].
#[derive(Debug)]
pub struct RingReader {
    mem: RingMemory,
    /// Data area size.
    size: u32,
    /// Private read cursor: where the next packet starts.
    cursor: u32,
    /// The `read_index` last published.
    published: u32,
    /// The last validated `write_index`: the packets up to it are complete.
    write_cache: u32,
}

impl RingReader {
    /// Takes the reader side of `mem`, starting at its current `read_index` (validated).
    pub fn new(mem: RingMemory) -> Result<Self, RingError> {
        let size = mem.data_size();
        let index = mem.load(Field::ReadIndex, Ordering::Acquire);
        if !valid_index(index, size) {
            return Err(RingError::BadReadIndex {
                index,
                data_size: size,
            });
        }
        Ok(Self {
            mem,
            size,
            cursor: index,
            published: index,
            write_cache: index,
        })
    }

    /// Size of the data area in bytes.
    pub fn data_size(&self) -> usize {
        self.size as usize
    }

    /// Reads and validates `write_index`.
    #[inline]
    fn load_write_index(&self) -> Result<u32, RingError> {
        let index = self.mem.load(Field::WriteIndex, Ordering::Acquire);
        if !valid_index(index, self.size) {
            return Err(RingError::BadWriteIndex {
                index,
                data_size: self.size,
            });
        }
        Ok(index)
    }

    /// Reads and validates `write_index`, caching it.
    #[inline]
    fn refresh_write_index(&mut self) -> Result<u32, RingError> {
        self.write_cache = self.load_write_index()?;
        Ok(self.write_cache)
    }

    /// Copies the next packet out of shared memory into `buf` (hardened read, §1.6) and
    /// returns a view of it, or `Ok(None)` when the ring is empty. The read cursor advances
    /// past the packet and its trailer; publish it with [`RingReader::commit`].
    ///
    /// Checks `16 ≤ len8 × 8`, `len8 × 8 + 8 ≤ readable`, `len8 × 8 ≤ buf.len()` (all fatal:
    /// [`ReadError::Ring`], the cursor does not move) and `16 ≤ offset8 × 8 ≤ len8 × 8`
    /// ([`ReadError::BadOffset`]: the packet is skipped).
    pub fn read<'b>(&mut self, buf: &'b mut [u8]) -> Result<Option<IncomingPacket<'b>>, ReadError> {
        let mut avail = readable(self.write_cache, self.cursor, self.size);
        if avail == 0 {
            let write = self.refresh_write_index()?;
            avail = readable(write, self.cursor, self.size);
            if avail == 0 {
                return Ok(None);
            }
        }
        if (avail as usize) < DESCRIPTOR_SIZE {
            return Err(RingError::TruncatedDescriptor { readable: avail }.into());
        }
        let mut raw = [0u8; DESCRIPTOR_SIZE];
        // SAFETY: the cursor is < data_size (validated at creation, then reduced modulo
        // data_size) and 16 bytes ≤ avail < data_size.
        unsafe { self.mem.copy_from_data(self.cursor as usize, &mut raw) };
        let Ok(desc) = PacketDescriptor::read_from_bytes(&raw[..]) else {
            // Impossible: the sizes match. Treated as a short read rather than a panic.
            return Err(RingError::TruncatedDescriptor { readable: avail }.into());
        };
        let (len8, offset8) = (desc.len8, desc.offset8);
        let len = len8 as usize * 8;
        let offset = offset8 as usize * 8;
        if len < DESCRIPTOR_SIZE {
            return Err(RingError::PacketTooShort { len8 }.into());
        }
        if len + TRAILER_SIZE > avail as usize {
            return Err(RingError::PacketOverrun {
                len8,
                readable: avail,
            }
            .into());
        }
        let buf_len = buf.len();
        let Some(out) = buf.get_mut(..len) else {
            return Err(RingError::PacketTooLargeForBuffer { len, buf_len }.into());
        };
        let start = self.cursor as usize;
        // `len + 8 ≤ avail < data_size`, so this stays below 2 × data_size.
        let next = (start + len + TRAILER_SIZE) % self.size as usize;
        if offset < DESCRIPTOR_SIZE || offset > len {
            self.cursor = next as u32;
            return Err(ReadError::BadOffset {
                offset8,
                len8,
                transaction_id: desc.transaction_id,
            });
        }
        let (head, body) = out.split_at_mut(DESCRIPTOR_SIZE);
        head.copy_from_slice(desc.as_bytes());
        let body_start = (start + DESCRIPTOR_SIZE) % self.size as usize;
        // SAFETY: body_start < data_size; body is len − 16 < avail < data_size bytes.
        unsafe { self.mem.copy_from_data(body_start, body) };
        self.cursor = next as u32;
        let out: &'b [u8] = out;
        Ok(Some(IncomingPacket {
            packet_type: desc.packet_type,
            flags: desc.flags,
            transaction_id: desc.transaction_id,
            header: &out[DESCRIPTOR_SIZE..offset],
            payload: &out[offset..],
        }))
    }

    /// Publishes the read cursor (§1.5: read barrier, publish, full barrier) and returns
    /// whether the writer must be signalled: `feature_bits` bit 0 is set,
    /// `pend = pending_send_sz & !7 ≠ 0`, and this commit crossed it — with
    /// `now` = writable bytes and `before = now − consumed`, `before ≤ pend && now > pend`.
    /// Returns `Ok(false)` when nothing was consumed since the last commit.
    pub fn commit(&mut self) -> Result<bool, RingError> {
        if self.cursor == self.published {
            return Ok(false);
        }
        let consumed = readable(self.cursor, self.published, self.size);
        // Release: every read of the consumed packets happens before the writer can see
        // their space (the §1.5 read barrier).
        self.mem
            .store(Field::ReadIndex, self.cursor, Ordering::Release);
        self.published = self.cursor;
        self.mem.fence();
        if self.mem.load(Field::FeatureBits, Ordering::Relaxed) & FEATURE_PENDING_SEND_SZ == 0 {
            return Ok(false);
        }
        let pend = self.mem.load(Field::PendingSendSz, Ordering::Relaxed) & !7;
        if pend == 0 {
            return Ok(false);
        }
        let write = self.refresh_write_index()?;
        let now = self.size - readable(write, self.cursor, self.size);
        let before = now.saturating_sub(consumed);
        Ok(before <= pend && now > pend)
    }

    /// Sets `interrupt_mask` (the writer will not signal) and a full barrier: call on a
    /// signal, before draining.
    pub fn mask_interrupts(&self) {
        self.mem.store(Field::InterruptMask, 1, Ordering::Relaxed);
        self.mem.fence();
    }

    /// Clears `interrupt_mask`, full barrier, and re-checks `write_index`: `Ok(true)` means
    /// data arrived (or was never drained) and the caller must keep draining instead of
    /// sleeping. Commit first.
    pub fn unmask_interrupts(&self) -> Result<bool, RingError> {
        self.mem.store(Field::InterruptMask, 0, Ordering::Relaxed);
        self.mem.fence();
        Ok(self.load_write_index()? != self.cursor)
    }

    /// Whether no packet is readable now (re-reads and validates `write_index`).
    pub fn is_empty(&self) -> Result<bool, RingError> {
        Ok(self.load_write_index()? == self.cursor)
    }

    /// Bytes consumed but not yet published by [`RingReader::commit`].
    pub fn uncommitted_bytes(&self) -> usize {
        readable(self.cursor, self.published, self.size) as usize
    }

    /// The ring memory this reader uses.
    pub fn memory(&self) -> &RingMemory {
        &self.mem
    }
}
