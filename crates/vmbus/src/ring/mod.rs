//! The VMBus ring buffer (PROTOCOL.md §1): one ring is a 4096-byte control page and a
//! circular data area of packets, written by one side and read by the other.
//!
//! A channel composes a [`RingWriter`] on its outbound ring with a [`RingReader`] on its
//! inbound ring. Each keeps a private cursor and publishes it once per batch; the
//! `commit` methods say when the peer must be signalled, following the rules Hyper-V
//! enforces (signal only on empty → non-empty with the mask clear; wake a blocked writer
//! only on the not-enough → enough transition).
//!
//! # Hostile memory
//!
//! The peer can write the whole ring at any time. Every index is read once and validated
//! (`< data_size`, multiple of 8) before use; packets are copied out before they are parsed;
//! nothing here panics or touches memory outside the ring on bad input.
//! [`RingError`]s are fatal (the channel must stop: a bad index or `len8` leaves no way to
//! find the next packet); [`ReadError::BadOffset`] only drops the packet it names.
//!
//! # Using a reader (NAPI style, §1.5)
//!
//! ```text
//! on signal:  reader.mask_interrupts();
//! loop {
//!     while budget left { match reader.read(&mut buf)? { Some(p) => handle(p), None => break } }
//!     if reader.commit()? { signal the writer }          // it was waiting for space
//!     if budget exhausted { continue (or yield) }
//!     if !reader.unmask_interrupts()? { break }         // really empty: sleep on the event
//!     reader.mask_interrupts();                         // data raced in: keep draining
//! }
//! ```
//!
//! # Using a writer (§1.4)
//!
//! ```text
//! for each packet:
//!     match writer.write(&pkt) {
//!         Ok(()) => {}
//!         Err(WriteError::Full { needed }) => {
//!             if writer.commit()? { signal the reader }     // publish before blocking
//!             if writer.peer_supports_pending_send() {
//!                 if !writer.set_pending_send(needed)? { wait for the reader's signal }
//!                 retry; then writer.clear_pending_send()
//!             } else { poll: retry later (the reader will never signal for space) }
//!         }
//!         Err(e) => ...
//!     }
//! if writer.commit()? { signal the reader }
//! ```

mod memory;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use memory::{FEATURE_PENDING_SEND_SZ, RingControl, RingControlPage, RingMemory};
pub use reader::{IncomingPacket, ReadError, RingReader};
pub use writer::{OutgoingPacket, RingWriter, WriteError};

/// Size of a ring's control page; the data area follows it.
pub const RING_HEADER_SIZE: usize = 4096;

/// The smallest data area the host accepts (§1.1 decision: 16 KiB).
pub const MIN_RING_DATA_SIZE: usize = 16 * 1024;

/// Fatal ring errors: the ring's memory or a packet's length is inconsistent, or the ring
/// cannot be set up. The channel must stop using the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The memory is shorter than a control page plus the minimum data area.
    #[error("ring memory of {len} bytes is smaller than the minimum {min}")]
    MemoryTooSmall {
        /// Bytes given.
        len: usize,
        /// Bytes needed.
        min: usize,
    },
    /// The data area is smaller than allowed.
    #[error("ring data area of {data_size} bytes is smaller than the minimum {min}")]
    DataSizeTooSmall {
        /// The data area's size.
        data_size: usize,
        /// The minimum.
        min: usize,
    },
    /// The data area is not a multiple of the required unit.
    #[error("ring data area of {data_size} bytes is not a multiple of {multiple}")]
    BadDataSize {
        /// The data area's size.
        data_size: usize,
        /// The unit (8, or 4096 for a real ring).
        multiple: usize,
    },
    /// The data area is larger than the ring's 32-bit indices allow.
    #[error("ring data area of {data_size} bytes exceeds {max}")]
    DataSizeTooLarge {
        /// The data area's size.
        data_size: usize,
        /// The maximum.
        max: usize,
    },
    /// The ring memory is not aligned (or is null).
    #[error("ring memory at {addr:#x} is not {align}-byte aligned")]
    Misaligned {
        /// Its address.
        addr: usize,
        /// The alignment needed.
        align: usize,
    },
    /// `write_index` read from the control page is out of range or not a multiple of 8.
    #[error("write_index {index:#x} invalid for a {data_size}-byte data area")]
    BadWriteIndex {
        /// The value read.
        index: u32,
        /// The data area's size.
        data_size: u32,
    },
    /// `read_index` read from the control page is out of range or not a multiple of 8.
    #[error("read_index {index:#x} invalid for a {data_size}-byte data area")]
    BadReadIndex {
        /// The value read.
        index: u32,
        /// The data area's size.
        data_size: u32,
    },
    /// Fewer bytes are readable than a packet descriptor needs.
    #[error("{readable} readable bytes cannot hold a packet descriptor")]
    TruncatedDescriptor {
        /// Readable bytes (`write_index − read cursor`).
        readable: u32,
    },
    /// A descriptor's `len8` is below the descriptor size (16 bytes).
    #[error("packet len8 {len8} is shorter than its descriptor")]
    PacketTooShort {
        /// The `len8` field.
        len8: u16,
    },
    /// A descriptor's `len8` (plus the trailer) runs past the readable bytes.
    #[error("packet len8 {len8} ({} bytes + 8-byte trailer) exceeds the {readable} readable bytes", *len8 as u32 * 8)]
    PacketOverrun {
        /// The `len8` field.
        len8: u16,
        /// Readable bytes.
        readable: u32,
    },
    /// A packet is larger than the buffer the reader copies it into.
    #[error("packet of {len} bytes does not fit the {buf_len}-byte copy buffer")]
    PacketTooLargeForBuffer {
        /// `len8 × 8`.
        len: usize,
        /// The caller's buffer length.
        buf_len: usize,
    },
    /// A blocked writer asked for more space than the ring can ever signal (§1.4: the
    /// threshold `max(L + 8, data_size / 4)` must stay below `data_size`).
    #[error("pending send of {needed} bytes can never be signalled in a {data_size}-byte ring")]
    PendingSendTooLarge {
        /// The bytes asked for.
        needed: usize,
        /// The data area's size.
        data_size: u32,
    },
}

/// Bytes between `read` and `write` going forward around a ring of `size` bytes (§1.2).
/// Both are `< size`.
#[inline(always)]
pub(crate) fn readable(write: u32, read: u32, size: u32) -> u32 {
    if write >= read {
        write - read
    } else {
        size - read + write
    }
}

/// Validates an index read from shared memory: `< size` and a multiple of 8.
#[inline(always)]
pub(crate) fn valid_index(index: u32, size: u32) -> bool {
    index < size && index.is_multiple_of(8)
}
