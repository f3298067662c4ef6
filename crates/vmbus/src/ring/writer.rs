//! The writer side of a ring (PROTOCOL.md §1.2–§1.4).

use core::sync::atomic::Ordering;

use zerocopy::IntoBytes;

use super::memory::{FEATURE_PENDING_SEND_SZ, Field, RingMemory};
use super::{RingError, readable, valid_index};
use crate::packet::{DESCRIPTOR_SIZE, PacketDescriptor, PacketTrailer, TRAILER_SIZE};

/// Zero bytes for padding a packet to 8.
const ZEROS: [u8; 8] = [0; 8];

/// The largest packet `len8` can describe, in bytes (without trailer).
const MAX_LEN8_BYTES: usize = u16::MAX as usize * 8;

/// What a writer puts in one packet.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingPacket<'a> {
    /// One of the [`PacketType`](crate::packet::PacketType) constants.
    pub packet_type: u16,
    /// Descriptor flags; bit 0 is [`COMPLETION_REQUESTED`](crate::packet::COMPLETION_REQUESTED).
    pub flags: u16,
    /// The transaction id.
    pub transaction_id: u64,
    /// The type-specific header after the 16-byte descriptor: empty for in-band and
    /// completion packets, the transfer-page or GPA-direct header otherwise.
    /// `16 + header.len()` must be a multiple of 8; it becomes `offset8 × 8`.
    pub header: &'a [u8],
    /// The payload, gathered from these pieces and padded with zeros to a multiple of 8.
    pub payload: &'a [&'a [u8]],
}

/// Why a packet was not written. Only [`WriteError::Ring`] is fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Not enough free space now: nothing was written. `needed` is
    /// [`RingWriter::packet_len`], the value to give [`RingWriter::set_pending_send`].
    #[error("ring full: packet needs {needed} bytes")]
    Full {
        /// Bytes the packet occupies with padding and trailer.
        needed: usize,
    },
    /// The packet can never fit this ring (or `len8`/`offset8`).
    #[error("packet of {len} bytes exceeds the maximum {max} for this ring")]
    TooLarge {
        /// Bytes the packet would occupy with padding and trailer (saturated).
        len: usize,
        /// The largest packet this ring accepts.
        max: usize,
    },
    /// `16 + header.len()` is not a multiple of 8.
    #[error("type header of {header_len} bytes does not end on an 8-byte boundary")]
    HeaderMisaligned {
        /// `header.len()`.
        header_len: usize,
    },
    /// The ring is corrupt (bad `read_index`): fatal.
    #[error(transparent)]
    Ring(#[from] RingError),
}

impl WriteError {
    /// Whether the channel must stop.
    pub fn is_fatal(&self) -> bool {
        matches!(self, WriteError::Ring(_))
    }
}

/// Writer side of one ring: a private write cursor, published in batches by
/// [`RingWriter::commit`].
#[derive(Debug)]
pub struct RingWriter {
    mem: RingMemory,
    /// Data area size.
    size: u32,
    /// Private write cursor: where the next packet goes.
    cursor: u32,
    /// The `write_index` last published.
    published: u32,
    /// The last validated `read_index`; space computed from it can only be underestimated.
    read_cache: u32,
    /// Whether this writer has set `pending_send_sz`.
    pending_set: bool,
}

impl RingWriter {
    /// Takes the writer side of `mem`, starting at its current `write_index` (validated).
    pub fn new(mem: RingMemory) -> Result<Self, RingError> {
        let size = mem.data_size();
        let index = mem.load(Field::WriteIndex, Ordering::Acquire);
        if !valid_index(index, size) {
            return Err(RingError::BadWriteIndex {
                index,
                data_size: size,
            });
        }
        let mut writer = Self {
            mem,
            size,
            cursor: index,
            published: index,
            read_cache: index,
            pending_set: false,
        };
        writer.refresh_read_index()?;
        Ok(writer)
    }

    /// Bytes a packet occupies including padding and the 8-byte trailer (saturating).
    pub fn packet_len(pkt: &OutgoingPacket<'_>) -> usize {
        let body = pkt
            .payload
            .iter()
            .fold(DESCRIPTOR_SIZE.saturating_add(pkt.header.len()), |n, p| {
                n.saturating_add(p.len())
            });
        body.saturating_add(7 + TRAILER_SIZE) & !7
    }

    /// The largest [`RingWriter::packet_len`] this ring accepts: `data_size − 16` (so that a
    /// blocked writer's threshold `L + 8` stays below `data_size`, §1.4), and `len8 ≤ 0xFFFF`.
    pub fn max_packet_len(&self) -> usize {
        (self.size as usize - 16).min(MAX_LEN8_BYTES + TRAILER_SIZE)
    }

    /// Size of the data area in bytes.
    pub fn data_size(&self) -> usize {
        self.size as usize
    }

    /// Copies one packet and its trailer (§1.3) at the private cursor, wrapping at the end of
    /// the data area, if the free space is strictly greater than its length (§1.2). Does not
    /// publish: call [`RingWriter::commit`]. On error nothing is written.
    pub fn write(&mut self, pkt: &OutgoingPacket<'_>) -> Result<(), WriteError> {
        let offset = DESCRIPTOR_SIZE.saturating_add(pkt.header.len());
        if !offset.is_multiple_of(8) {
            return Err(WriteError::HeaderMisaligned {
                header_len: pkt.header.len(),
            });
        }
        let total = Self::packet_len(pkt);
        let max = self.max_packet_len();
        if total > max || offset > MAX_LEN8_BYTES {
            return Err(WriteError::TooLarge { len: total, max });
        }
        if !self.fits(total) {
            self.refresh_read_index()?;
            if !self.fits(total) {
                return Err(WriteError::Full { needed: total });
            }
        }
        let len = total - TRAILER_SIZE;
        let unpadded = pkt.payload.iter().fold(offset, |n, p| n + p.len());
        let descriptor = PacketDescriptor {
            packet_type: pkt.packet_type,
            offset8: (offset / 8) as u16,
            len8: (len / 8) as u16,
            flags: pkt.flags,
            transaction_id: pkt.transaction_id,
        };
        let trailer = PacketTrailer::new(self.cursor);
        let mem = &self.mem;
        // SAFETY (each copy): the cursor is < data_size (validated at creation, then always
        // reduced modulo data_size by `copy_to_data`), and every piece is part of a packet of
        // `total < data_size` bytes, so no piece is longer than the data area.
        let mut pos = self.cursor as usize;
        unsafe {
            pos = mem.copy_to_data(pos, descriptor.as_bytes());
            if !pkt.header.is_empty() {
                pos = mem.copy_to_data(pos, pkt.header);
            }
            for piece in pkt.payload {
                pos = mem.copy_to_data(pos, piece);
            }
            pos = mem.copy_to_data(pos, &ZEROS[..len - unpadded]);
            pos = mem.copy_to_data(pos, trailer.as_bytes());
        }
        self.cursor = pos as u32;
        Ok(())
    }

    /// Whether a packet of `total` bytes fits by the cached `read_index`.
    #[inline(always)]
    fn fits(&self, total: usize) -> bool {
        let used = readable(self.cursor, self.read_cache, self.size);
        (self.size - used) as usize > total
    }

    /// Reads and validates `read_index`, caching it.
    #[inline]
    fn refresh_read_index(&mut self) -> Result<u32, RingError> {
        let index = self.mem.load(Field::ReadIndex, Ordering::Acquire);
        if !valid_index(index, self.size) {
            return Err(RingError::BadReadIndex {
                index,
                data_size: self.size,
            });
        }
        self.read_cache = index;
        Ok(index)
    }

    /// Publishes everything written since the last commit (§1.4: full barrier, publish, full
    /// barrier) and returns whether the reader must be signalled: its `interrupt_mask` is
    /// clear and the ring was empty before this batch (`read_index` equals the previously
    /// published `write_index`). Returns `Ok(false)` when there is nothing to publish.
    pub fn commit(&mut self) -> Result<bool, RingError> {
        if self.cursor == self.published {
            return Ok(false);
        }
        let old = self.published;
        self.mem.fence();
        self.mem
            .store(Field::WriteIndex, self.cursor, Ordering::Release);
        self.published = self.cursor;
        self.mem.fence();
        if self.mem.load(Field::InterruptMask, Ordering::Relaxed) != 0 {
            return Ok(false);
        }
        let read = self.refresh_read_index()?;
        Ok(read == old)
    }

    /// Bytes written but not yet published.
    pub fn uncommitted_bytes(&self) -> usize {
        readable(self.cursor, self.published, self.size) as usize
    }

    /// Blocked writer (§1.4): sets `pending_send_sz = max(needed + 8, data_size / 4)` rounded
    /// up to 8, full barrier, then re-checks the space: `Ok(true)` means a packet of
    /// `needed` bytes fits now (retry instead of waiting). `needed` is the
    /// [`WriteError::Full`] value.
    ///
    /// Commit (and signal) before blocking: the reader computes its wake-up from the
    /// published `write_index`; uncommitted bytes are added to the threshold so that the
    /// two views agree, but a reader that sees no data never commits and never signals.
    /// Only wait for a signal if [`RingWriter::peer_supports_pending_send`]; else poll.
    pub fn set_pending_send(&mut self, needed: usize) -> Result<bool, RingError> {
        let size = self.size as usize;
        let too_large = RingError::PendingSendTooLarge {
            needed,
            data_size: self.size,
        };
        let want = needed
            .checked_add(self.uncommitted_bytes())
            .ok_or(too_large)?;
        let pend = want
            .saturating_add(TRAILER_SIZE)
            .max(size / 4)
            .saturating_add(7)
            & !7;
        if pend >= size {
            return Err(too_large);
        }
        self.mem
            .store(Field::PendingSendSz, pend as u32, Ordering::Relaxed);
        self.pending_set = true;
        self.mem.fence();
        self.refresh_read_index()?;
        Ok(self.fits(needed))
    }

    /// Clears `pending_send_sz` (after the blocked packet was written, §1.4).
    pub fn clear_pending_send(&mut self) {
        if self.pending_set {
            self.mem.store(Field::PendingSendSz, 0, Ordering::Relaxed);
            self.pending_set = false;
        }
    }

    /// Whether the reader of this ring promised (`feature_bits` bit 0, §1.1) to signal a
    /// writer blocked with `pending_send_sz`. Without it the writer must poll a full ring
    /// and never rely on being woken for space.
    pub fn peer_supports_pending_send(&self) -> bool {
        self.mem.load(Field::FeatureBits, Ordering::Relaxed) & FEATURE_PENDING_SEND_SZ != 0
    }

    /// Free bytes as of now (re-reads and validates `read_index`); a packet of `L` bytes
    /// fits if this is strictly greater than `L`.
    pub fn free_bytes(&self) -> Result<usize, RingError> {
        let index = self.mem.load(Field::ReadIndex, Ordering::Acquire);
        if !valid_index(index, self.size) {
            return Err(RingError::BadReadIndex {
                index,
                data_size: self.size,
            });
        }
        Ok((self.size - readable(self.cursor, index, self.size)) as usize)
    }

    /// The ring memory this writer uses.
    pub fn memory(&self) -> &RingMemory {
        &self.mem
    }
}
