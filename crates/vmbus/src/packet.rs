//! VMBus packet framing (PROTOCOL.md §1.3, §2): the 16-byte descriptor every packet starts
//! with, the 8-byte trailer the ring writer appends, and the type headers of transfer-page
//! (0x7) and GPA-direct (0x9) packets.
//!
//! Each wire layout is defined once, as a `#[repr(C, packed)]` zerocopy struct with a
//! compile-time size check; the parsers validate a type header against the slice it came in
//! (the bytes `[16, offset8 × 8)` of a packet already copied out of the ring) and never read
//! outside it. The builders write the same layouts into a caller's buffer for
//! [`OutgoingPacket::header`](crate::ring::OutgoingPacket::header).
//!
//! VMBus is little-endian and only exists on little-endian machines (x86-64, AArch64); the
//! wire structs use native integers, so the crate refuses to build for big-endian targets.

use core::mem::size_of;

use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

#[cfg(target_endian = "big")]
compile_error!("VMBus wire structures are little-endian; big-endian targets are not supported");

/// The `type` field of a [`PacketDescriptor`] (§2.1).
///
/// A namespace of `u16` constants rather than an enum: the field comes from the peer and any
/// value can appear; unknown or unused types are dropped and counted by the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketType;

impl PacketType {
    /// 0x0: invalid (unused by netvsc).
    pub const INVALID: u16 = 0x0;
    /// 0x1: synch (unused by netvsc).
    pub const SYNCH: u16 = 0x1;
    /// 0x2: add transfer-page set (unused by netvsc).
    pub const ADD_XFER_PAGESET: u16 = 0x2;
    /// 0x3: remove transfer-page set (unused by netvsc).
    pub const RM_XFER_PAGESET: u16 = 0x3;
    /// 0x4: establish GPADL (unused by netvsc).
    pub const ESTABLISH_GPADL: u16 = 0x4;
    /// 0x5: tear down GPADL (unused by netvsc).
    pub const TEARDOWN_GPADL: u16 = 0x5;
    /// 0x6: in-band data: the payload is the message (NVSP control, copied sends, …).
    pub const DATA_INBAND: u16 = 0x6;
    /// 0x7: data in transfer pages (H→G RNDIS messages in receive-buffer sections, §2.2).
    pub const DATA_USING_XFER_PAGES: u16 = 0x7;
    /// 0x8: data in a GPADL (unused by netvsc).
    pub const DATA_USING_GPADL: u16 = 0x8;
    /// 0x9: data in guest pages named by GPA ranges (G→H RNDIS, §2.3).
    pub const DATA_USING_GPA_DIRECT: u16 = 0x9;
    /// 0xA: cancel request (unused by netvsc).
    pub const CANCEL_REQUEST: u16 = 0xA;
    /// 0xB: completion of a packet sent with [`COMPLETION_REQUESTED`] (§2.4).
    pub const COMP: u16 = 0xB;
    /// 0xC: additional data in-band (unused by netvsc).
    pub const DATA_USING_ADDITIONAL_PACKET: u16 = 0xC;
    /// 0xD: additional data (unused by netvsc).
    pub const ADDITIONAL_DATA: u16 = 0xD;

    /// The §2.1 name of a packet type, or `None` for a value outside 0x0..=0xD.
    pub const fn name(packet_type: u16) -> Option<&'static str> {
        Some(match packet_type {
            Self::INVALID => "INVALID",
            Self::SYNCH => "SYNCH",
            Self::ADD_XFER_PAGESET => "ADD_XFER_PAGESET",
            Self::RM_XFER_PAGESET => "RM_XFER_PAGESET",
            Self::ESTABLISH_GPADL => "ESTABLISH_GPADL",
            Self::TEARDOWN_GPADL => "TEARDOWN_GPADL",
            Self::DATA_INBAND => "DATA_INBAND",
            Self::DATA_USING_XFER_PAGES => "DATA_USING_XFER_PAGES",
            Self::DATA_USING_GPADL => "DATA_USING_GPADL",
            Self::DATA_USING_GPA_DIRECT => "DATA_USING_GPA_DIRECT",
            Self::CANCEL_REQUEST => "CANCEL_REQUEST",
            Self::COMP => "COMP",
            Self::DATA_USING_ADDITIONAL_PACKET => "DATA_USING_ADDITIONAL_PACKET",
            Self::ADDITIONAL_DATA => "ADDITIONAL_DATA",
            _ => return None,
        })
    }

    /// Whether netvsc and netvsp use this type (0x6, 0x7, 0x9, 0xB); the others are dropped.
    pub const fn is_used_by_netvsc(packet_type: u16) -> bool {
        matches!(
            packet_type,
            Self::DATA_INBAND
                | Self::DATA_USING_XFER_PAGES
                | Self::DATA_USING_GPA_DIRECT
                | Self::COMP
        )
    }
}

/// Descriptor flag bit 0: the receiver must answer with a [`PacketType::COMP`] carrying the
/// same transaction id (§2.4).
pub const COMPLETION_REQUESTED: u16 = 0x1;

/// Size of a [`PacketDescriptor`].
pub const DESCRIPTOR_SIZE: usize = 16;
/// Size of a [`PacketTrailer`].
pub const TRAILER_SIZE: usize = 8;
/// The 4096-byte page of GPA ranges, whatever the guest's page size (§0).
pub const PAGE_SIZE: usize = 4096;
/// Linux's maximum number of GPA ranges in one GPA-direct packet (§2.3, §14).
pub const MAX_GPA_RANGES: usize = 32;

/// The 16-byte descriptor at the start of every packet in a ring (§2.1).
#[repr(C, packed)]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct PacketDescriptor {
    /// One of the [`PacketType`] constants.
    pub packet_type: u16,
    /// Start of the payload in 8-byte units from the packet start (≥ 2).
    pub offset8: u16,
    /// Length of the packet without its trailer, in 8-byte units.
    pub len8: u16,
    /// Bit 0: [`COMPLETION_REQUESTED`].
    pub flags: u16,
    /// The transaction id a completion echoes.
    pub transaction_id: u64,
}

/// The 8 bytes after every packet: a u64 holding the packet's start offset in the data
/// area in its **high** 32 bits, low 32 bits zero (§1.3). Readers skip it.
#[repr(C, packed)]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct PacketTrailer {
    /// Low 32 bits of the u64: always written as 0.
    pub reserved: u32,
    /// High 32 bits of the u64: the writer's `write_index` before the packet.
    pub start_offset: u32,
}

impl PacketTrailer {
    /// The trailer of a packet that starts at `start_offset` in the data area.
    pub const fn new(start_offset: u32) -> Self {
        Self {
            reserved: 0,
            start_offset,
        }
    }

    /// The trailer as the u64 §1.3 describes.
    pub const fn to_u64(self) -> u64 {
        (self.start_offset as u64) << 32 | self.reserved as u64
    }
}

/// The type header of a transfer-page packet (0x7) right after the descriptor (§2.2),
/// followed by `range_cnt` [`TransferPageRange`]s.
#[repr(C, packed)]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct TransferPageHeader {
    /// The transfer-page set (0xCAFE for netvsc's receive buffer).
    pub xfer_pageset_id: u16,
    /// Always 0.
    pub sender_owns_set: u8,
    /// Reserved; may be garbage.
    pub reserved: u8,
    /// Number of ranges that follow.
    pub range_cnt: u32,
}

/// One range of a transfer-page packet: **count first, then offset** (§16 gotcha 5).
#[repr(C, packed)]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct TransferPageRange {
    /// Length of the range in bytes.
    pub byte_count: u32,
    /// Offset of the range in the transfer-page set (the receive buffer).
    pub byte_offset: u32,
}

/// The type header of a GPA-direct packet (0x9) right after the descriptor (§2.3), followed
/// by `range_cnt` ranges, each a [`GpaRangeHeader`] and its PFNs.
#[repr(C, packed)]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct GpaDirectHeader {
    /// Reserved; may be garbage.
    pub reserved: u32,
    /// Number of ranges that follow.
    pub range_cnt: u32,
}

/// The fixed part of one GPA range, followed by `ceil((byte_offset + byte_count) / 4096)`
/// little-endian u64 PFNs.
#[repr(C, packed)]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct GpaRangeHeader {
    /// Length of the range in bytes (> 0).
    pub byte_count: u32,
    /// Offset of the range in its first page (< 4096).
    pub byte_offset: u32,
}

const _: () = {
    assert!(size_of::<PacketDescriptor>() == DESCRIPTOR_SIZE);
    assert!(size_of::<PacketTrailer>() == TRAILER_SIZE);
    assert!(DESCRIPTOR_SIZE + size_of::<TransferPageHeader>() == 24);
    assert!(size_of::<TransferPageRange>() == 8);
    assert!(DESCRIPTOR_SIZE + transfer_page_header_len(3) == 24 + 8 * 3);
    assert!(DESCRIPTOR_SIZE + size_of::<GpaDirectHeader>() == 24);
    assert!(size_of::<GpaRangeHeader>() == 8);
};

/// Errors from parsing or building a type header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The type header is shorter than its fixed part.
    #[error("type header is {len} bytes, its fixed part needs {needed}")]
    HeaderTooShort {
        /// Bytes available (`offset8 × 8 − 16`).
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// `range_cnt` ranges do not fit in the type header.
    #[error("{range_cnt} ranges need {needed} header bytes, only {len} present")]
    RangesOverrun {
        /// The `range_cnt` field.
        range_cnt: u32,
        /// Bytes the ranges need, with the fixed part (saturated at `usize::MAX`).
        needed: usize,
        /// Bytes available.
        len: usize,
    },
    /// More ranges than the caller allows.
    #[error("{range_cnt} ranges, at most {max} allowed")]
    TooManyRanges {
        /// The `range_cnt` field (or the number of ranges given to a builder).
        range_cnt: usize,
        /// The limit.
        max: usize,
    },
    /// A GPA range's offset is not inside its first page.
    #[error("GPA range {index}: byte_offset {byte_offset} is not < 4096")]
    GpaOffsetTooLarge {
        /// Index of the range.
        index: usize,
        /// Its `byte_offset`.
        byte_offset: u32,
    },
    /// A GPA range is empty.
    #[error("GPA range {index}: byte_count is 0")]
    GpaEmptyRange {
        /// Index of the range.
        index: usize,
    },
    /// A GPA range's PFNs run past the end of the type header.
    #[error("GPA range {index}: {pfn_count} PFNs need {needed} bytes, only {remaining} left")]
    GpaPfnsOverrun {
        /// Index of the range.
        index: usize,
        /// PFNs the range needs.
        pfn_count: u64,
        /// Bytes the range needs (header + PFNs).
        needed: u64,
        /// Bytes left in the type header.
        remaining: usize,
    },
    /// A builder was given a range whose PFN count does not match its offset and count.
    #[error("GPA range {index}: {actual} PFNs given, offset and count need {expected}")]
    GpaPfnCountMismatch {
        /// Index of the range.
        index: usize,
        /// PFNs needed.
        expected: u64,
        /// PFNs given.
        actual: usize,
    },
    /// A builder's output buffer is too small.
    #[error("output buffer is {len} bytes, {needed} needed")]
    BufferTooSmall {
        /// The buffer's length.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
}

/// Length of a transfer-page type header with `range_count` ranges: `8 + 8n` (the packet's
/// `offset8 × 8` is at least 16 more, §15's `24 + 8n`).
pub const fn transfer_page_header_len(range_count: usize) -> usize {
    size_of::<TransferPageHeader>() + range_count * size_of::<TransferPageRange>()
}

/// Parses the type header of a transfer-page packet (§2.2): `header` is the packet's bytes
/// `[16, offset8 × 8)`. Checks `24 + 8 × range_cnt ≤ offset8 × 8` (§14) before any range is
/// read; returns the pageset id and the ranges. The caller checks the pageset id, the number
/// of ranges it accepts and each range against its buffer.
pub fn parse_transfer_pages(header: &[u8]) -> Result<(u16, &[TransferPageRange]), PacketError> {
    let (fixed, rest) =
        TransferPageHeader::read_from_prefix(header).map_err(|_| PacketError::HeaderTooShort {
            len: header.len(),
            needed: size_of::<TransferPageHeader>(),
        })?;
    let range_cnt = fixed.range_cnt;
    let overrun = || PacketError::RangesOverrun {
        range_cnt,
        needed: (range_cnt as usize)
            .saturating_mul(size_of::<TransferPageRange>())
            .saturating_add(size_of::<TransferPageHeader>()),
        len: header.len(),
    };
    let count = usize::try_from(range_cnt).map_err(|_| overrun())?;
    let (ranges, _) =
        <[TransferPageRange]>::ref_from_prefix_with_elems(rest, count).map_err(|_| overrun())?;
    Ok((fixed.xfer_pageset_id, ranges))
}

/// Writes a transfer-page type header (pageset id, `sender_owns_set` 0, the ranges) at the
/// start of `buf` and returns the bytes used, `8 + 8n`.
pub fn write_transfer_page_header(
    buf: &mut [u8],
    xfer_pageset_id: u16,
    ranges: &[TransferPageRange],
) -> Result<usize, PacketError> {
    let needed = transfer_page_header_len(ranges.len());
    let range_cnt = u32::try_from(ranges.len()).map_err(|_| PacketError::TooManyRanges {
        range_cnt: ranges.len(),
        max: u32::MAX as usize,
    })?;
    let len = buf.len();
    let out = buf
        .get_mut(..needed)
        .ok_or(PacketError::BufferTooSmall { len, needed })?;
    let fixed = TransferPageHeader {
        xfer_pageset_id,
        sender_owns_set: 0,
        reserved: 0,
        range_cnt,
    };
    let (head, tail) = out.split_at_mut(size_of::<TransferPageHeader>());
    head.copy_from_slice(fixed.as_bytes());
    tail.copy_from_slice(ranges.as_bytes());
    Ok(needed)
}

/// Number of 4096-byte pages a GPA range touches: `ceil((byte_offset + byte_count) / 4096)`.
pub const fn gpa_range_pfn_count(byte_offset: u32, byte_count: u32) -> u64 {
    (byte_offset as u64 + byte_count as u64).div_ceil(PAGE_SIZE as u64)
}

/// One validated range of a GPA-direct packet, borrowed from the packet copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpaRange<'a> {
    /// Length in bytes (> 0).
    pub byte_count: u32,
    /// Offset in the first page (< 4096).
    pub byte_offset: u32,
    /// The pages, exactly `ceil((byte_offset + byte_count) / 4096)` of them (little-endian u64,
    /// unaligned; `pfn.get()` gives the number).
    pub pfns: &'a [U64],
}

impl GpaRange<'_> {
    /// The `i`-th PFN.
    pub fn pfn(&self, i: usize) -> Option<u64> {
        self.pfns.get(i).map(|p| p.get())
    }

    /// The PFNs as numbers.
    pub fn pfn_iter(&self) -> impl ExactSizeIterator<Item = u64> + '_ {
        self.pfns.iter().map(|p| p.get())
    }
}

/// The ranges of a GPA-direct packet, all validated by [`GpaDirectRanges::parse`]; iterating
/// cannot fail.
#[derive(Debug, Clone)]
pub struct GpaDirectRanges<'a> {
    /// Bytes after the fixed header, starting at the next range.
    rest: &'a [u8],
    /// Ranges not yet yielded.
    remaining: usize,
    /// The header's `range_cnt`.
    range_cnt: usize,
}

impl<'a> GpaDirectRanges<'a> {
    /// Parses and validates the type header of a GPA-direct packet (§2.3, §14): `header` is
    /// the packet's bytes `[16, offset8 × 8)`. Checks `range_cnt ≤ max_ranges` (use
    /// [`MAX_GPA_RANGES`]), and for every range `byte_offset < 4096`, `byte_count > 0`, and
    /// that its exact PFN count lies inside `header`. Bytes after the last range (the
    /// sender's padding) are ignored.
    pub fn parse(header: &'a [u8], max_ranges: usize) -> Result<Self, PacketError> {
        let (fixed, rest) =
            GpaDirectHeader::read_from_prefix(header).map_err(|_| PacketError::HeaderTooShort {
                len: header.len(),
                needed: size_of::<GpaDirectHeader>(),
            })?;
        let range_cnt = fixed.range_cnt as usize;
        if range_cnt > max_ranges {
            return Err(PacketError::TooManyRanges {
                range_cnt,
                max: max_ranges,
            });
        }
        let mut walk = Self {
            rest,
            remaining: range_cnt,
            range_cnt,
        };
        let validated = walk.clone();
        for index in 0..range_cnt {
            walk.next_checked(index)?;
        }
        Ok(validated)
    }

    /// The number of ranges (`range_cnt`).
    pub fn range_count(&self) -> usize {
        self.range_cnt
    }

    /// Splits the next range off `rest`, validating it.
    fn next_checked(&mut self, index: usize) -> Result<GpaRange<'a>, PacketError> {
        let remaining = self.rest.len();
        let (range, after) = GpaRangeHeader::read_from_prefix(self.rest).map_err(|_| {
            PacketError::GpaPfnsOverrun {
                index,
                pfn_count: 0,
                needed: size_of::<GpaRangeHeader>() as u64,
                remaining,
            }
        })?;
        let (byte_count, byte_offset) = (range.byte_count, range.byte_offset);
        if byte_offset as usize >= PAGE_SIZE {
            return Err(PacketError::GpaOffsetTooLarge { index, byte_offset });
        }
        if byte_count == 0 {
            return Err(PacketError::GpaEmptyRange { index });
        }
        let pfn_count = gpa_range_pfn_count(byte_offset, byte_count);
        let overrun = PacketError::GpaPfnsOverrun {
            index,
            pfn_count,
            needed: 8 + pfn_count * 8,
            remaining,
        };
        let count = usize::try_from(pfn_count).map_err(|_| overrun)?;
        let (pfns, after) =
            <[U64]>::ref_from_prefix_with_elems(after, count).map_err(|_| overrun)?;
        self.rest = after;
        self.remaining -= 1;
        Ok(GpaRange {
            byte_count,
            byte_offset,
            pfns,
        })
    }
}

impl<'a> Iterator for GpaDirectRanges<'a> {
    type Item = GpaRange<'a>;

    fn next(&mut self) -> Option<GpaRange<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let index = self.range_cnt - self.remaining;
        // Validated in `parse`; an error here is impossible, but never panic on it.
        self.next_checked(index).ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

/// A GPA range to be written by [`write_gpa_direct_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpaRangeSpec<'a> {
    /// Length in bytes (> 0).
    pub byte_count: u32,
    /// Offset in the first page (< 4096).
    pub byte_offset: u32,
    /// The pages: exactly `ceil((byte_offset + byte_count) / 4096)` of them.
    pub pfns: &'a [u64],
}

/// Length of a GPA-direct type header with the given ranges: `8 + Σ(8 + 8k)` (§15's
/// `24 + Σ(8 + 8k)` counts the descriptor too).
pub fn gpa_direct_header_len(ranges: &[GpaRangeSpec<'_>]) -> usize {
    ranges.iter().fold(size_of::<GpaDirectHeader>(), |n, r| {
        n.saturating_add(size_of::<GpaRangeHeader>())
            .saturating_add(r.pfns.len().saturating_mul(8))
    })
}

/// Writes a GPA-direct type header (reserved 0, `range_cnt`, each range and its PFNs) at the
/// start of `buf` and returns the bytes used. Every range is checked as the receiver will
/// (offset < 4096, count > 0, exact PFN count, at most `max_ranges` ranges) so that we never
/// send what a host must reject.
pub fn write_gpa_direct_header(
    buf: &mut [u8],
    ranges: &[GpaRangeSpec<'_>],
    max_ranges: usize,
) -> Result<usize, PacketError> {
    if ranges.len() > max_ranges || u32::try_from(ranges.len()).is_err() {
        return Err(PacketError::TooManyRanges {
            range_cnt: ranges.len(),
            max: max_ranges,
        });
    }
    for (index, r) in ranges.iter().enumerate() {
        if r.byte_offset as usize >= PAGE_SIZE {
            return Err(PacketError::GpaOffsetTooLarge {
                index,
                byte_offset: r.byte_offset,
            });
        }
        if r.byte_count == 0 {
            return Err(PacketError::GpaEmptyRange { index });
        }
        let expected = gpa_range_pfn_count(r.byte_offset, r.byte_count);
        if expected != r.pfns.len() as u64 {
            return Err(PacketError::GpaPfnCountMismatch {
                index,
                expected,
                actual: r.pfns.len(),
            });
        }
    }
    let needed = gpa_direct_header_len(ranges);
    let len = buf.len();
    let out = buf
        .get_mut(..needed)
        .ok_or(PacketError::BufferTooSmall { len, needed })?;
    let fixed = GpaDirectHeader {
        reserved: 0,
        range_cnt: ranges.len() as u32,
    };
    let (head, mut rest) = out.split_at_mut(size_of::<GpaDirectHeader>());
    head.copy_from_slice(fixed.as_bytes());
    for r in ranges {
        let range = GpaRangeHeader {
            byte_count: r.byte_count,
            byte_offset: r.byte_offset,
        };
        let (head, tail) = rest.split_at_mut(size_of::<GpaRangeHeader>());
        head.copy_from_slice(range.as_bytes());
        let (pfn_bytes, tail) = tail.split_at_mut(r.pfns.len() * 8);
        for (dst, pfn) in pfn_bytes.chunks_exact_mut(8).zip(r.pfns) {
            dst.copy_from_slice(&pfn.to_le_bytes());
        }
        rest = tail;
    }
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_bytes() {
        let d = PacketDescriptor {
            packet_type: PacketType::DATA_USING_XFER_PAGES,
            offset8: 5,
            len8: 0x0102,
            flags: COMPLETION_REQUESTED,
            transaction_id: 0x1122_3344_5566_7788,
        };
        let bytes = [
            0x07, 0x00, 0x05, 0x00, 0x02, 0x01, 0x01, 0x00, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33,
            0x22, 0x11,
        ];
        assert_eq!(d.as_bytes(), &bytes);
        assert_eq!(PacketDescriptor::read_from_bytes(&bytes).unwrap(), d);
    }

    #[test]
    fn trailer_bytes() {
        let t = PacketTrailer::new(0x0001_2340);
        assert_eq!(t.as_bytes(), &[0, 0, 0, 0, 0x40, 0x23, 0x01, 0x00]);
        assert_eq!(t.to_u64(), 0x0001_2340_0000_0000);
        assert_eq!(
            u64::from_le_bytes(t.as_bytes().try_into().unwrap()),
            t.to_u64()
        );
    }

    #[test]
    fn transfer_page_header_bytes() {
        let h = TransferPageHeader {
            xfer_pageset_id: 0xCAFE,
            sender_owns_set: 0,
            reserved: 0x5A,
            range_cnt: 2,
        };
        assert_eq!(
            h.as_bytes(),
            &[0xFE, 0xCA, 0x00, 0x5A, 0x02, 0x00, 0x00, 0x00]
        );
        let r = TransferPageRange {
            byte_count: 0x60,
            byte_offset: 0x1_0000,
        };
        assert_eq!(r.as_bytes(), &[0x60, 0, 0, 0, 0x00, 0x00, 0x01, 0x00]);
    }

    #[test]
    fn gpa_headers_bytes() {
        let h = GpaDirectHeader {
            reserved: 0xDEAD_BEEF,
            range_cnt: 1,
        };
        assert_eq!(h.as_bytes(), &[0xEF, 0xBE, 0xAD, 0xDE, 1, 0, 0, 0]);
        let r = GpaRangeHeader {
            byte_count: 0x5EA,
            byte_offset: 0xFF0,
        };
        assert_eq!(r.as_bytes(), &[0xEA, 0x05, 0, 0, 0xF0, 0x0F, 0, 0]);
    }

    #[test]
    fn packet_type_names() {
        assert_eq!(PacketType::name(0x6), Some("DATA_INBAND"));
        assert_eq!(PacketType::name(0xB), Some("COMP"));
        assert_eq!(PacketType::name(0xE), None);
        assert!(PacketType::is_used_by_netvsc(0x9));
        assert!(!PacketType::is_used_by_netvsc(0x8));
    }

    #[test]
    fn transfer_pages_build_and_parse() {
        let ranges = [
            TransferPageRange {
                byte_count: 100,
                byte_offset: 0,
            },
            TransferPageRange {
                byte_count: 1514,
                byte_offset: 6144,
            },
        ];
        let mut buf = [0xEEu8; 32];
        let n = write_transfer_page_header(&mut buf, 0xCAFE, &ranges).unwrap();
        assert_eq!(n, 24);
        assert_eq!(
            &buf[..24],
            &[
                0xFE, 0xCA, 0, 0, 2, 0, 0, 0, // fixed
                100, 0, 0, 0, 0, 0, 0, 0, // range 0
                0xEA, 0x05, 0, 0, 0x00, 0x18, 0, 0, // range 1
            ]
        );
        let (id, parsed) = parse_transfer_pages(&buf).unwrap();
        assert_eq!(id, 0xCAFE);
        assert_eq!(parsed, &ranges);
        // Exactly sized header parses; one byte short does not.
        assert!(parse_transfer_pages(&buf[..24]).is_ok());
        assert_eq!(
            parse_transfer_pages(&buf[..23]),
            Err(PacketError::RangesOverrun {
                range_cnt: 2,
                needed: 24,
                len: 23
            })
        );
        assert_eq!(
            parse_transfer_pages(&buf[..7]),
            Err(PacketError::HeaderTooShort { len: 7, needed: 8 })
        );
        assert_eq!(
            write_transfer_page_header(&mut buf[..23], 0xCAFE, &ranges),
            Err(PacketError::BufferTooSmall {
                len: 23,
                needed: 24
            })
        );
    }

    #[test]
    fn transfer_pages_hostile_count() {
        let mut buf = [0u8; 16];
        buf[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse_transfer_pages(&buf),
            Err(PacketError::RangesOverrun {
                range_cnt: u32::MAX,
                ..
            })
        ));
    }

    #[test]
    fn gpa_direct_build_and_parse() {
        let pfns0 = [0x1234u64];
        let pfns1 = [0x10, 0x11, 0x2000_0000_0001];
        let ranges = [
            GpaRangeSpec {
                byte_count: 4096,
                byte_offset: 0,
                pfns: &pfns0,
            },
            GpaRangeSpec {
                byte_count: 4098,
                byte_offset: 4095,
                pfns: &pfns1,
            },
        ];
        assert_eq!(gpa_direct_header_len(&ranges), 8 + 16 + 32);
        let mut buf = [0xEEu8; 64];
        let n = write_gpa_direct_header(&mut buf, &ranges, MAX_GPA_RANGES).unwrap();
        assert_eq!(n, 56);
        #[rustfmt::skip]
        let expected: [u8; 56] = [
            0, 0, 0, 0, 2, 0, 0, 0,
            0x00, 0x10, 0, 0, 0, 0, 0, 0,
            0x34, 0x12, 0, 0, 0, 0, 0, 0,
            0x02, 0x10, 0, 0, 0xFF, 0x0F, 0, 0,
            0x10, 0, 0, 0, 0, 0, 0, 0,
            0x11, 0, 0, 0, 0, 0, 0, 0,
            0x01, 0, 0, 0, 0, 0x20, 0, 0,
        ];
        assert_eq!(&buf[..56], &expected);
        let parsed = GpaDirectRanges::parse(&buf, MAX_GPA_RANGES).unwrap();
        assert_eq!(parsed.range_count(), 2);
        let got: Vec<_> = parsed.collect();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].byte_count, got[0].byte_offset), (4096, 0));
        assert_eq!(got[0].pfn_iter().collect::<Vec<_>>(), pfns0);
        assert_eq!((got[1].byte_count, got[1].byte_offset), (4098, 4095));
        assert_eq!(got[1].pfn_iter().collect::<Vec<_>>(), pfns1);
        assert_eq!(got[1].pfn(2), Some(0x2000_0000_0001));
        assert_eq!(got[1].pfn(3), None);
        // Truncated by one byte: the last PFN no longer fits.
        assert!(matches!(
            GpaDirectRanges::parse(&buf[..55], MAX_GPA_RANGES),
            Err(PacketError::GpaPfnsOverrun {
                index: 1,
                pfn_count: 3,
                ..
            })
        ));
        assert_eq!(
            GpaDirectRanges::parse(&buf, 1).unwrap_err(),
            PacketError::TooManyRanges {
                range_cnt: 2,
                max: 1
            }
        );
    }

    #[test]
    fn gpa_direct_rejects_bad_ranges() {
        let mut buf = [0u8; 32];
        buf[4] = 1; // one range
        buf[8..12].copy_from_slice(&10u32.to_le_bytes());
        buf[12..16].copy_from_slice(&4096u32.to_le_bytes());
        assert_eq!(
            GpaDirectRanges::parse(&buf, 32).unwrap_err(),
            PacketError::GpaOffsetTooLarge {
                index: 0,
                byte_offset: 4096
            }
        );
        buf[8..12].copy_from_slice(&0u32.to_le_bytes());
        buf[12..16].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            GpaDirectRanges::parse(&buf, 32).unwrap_err(),
            PacketError::GpaEmptyRange { index: 0 }
        );
        // Huge count: PFN count computed without overflow and found not to fit.
        buf[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        buf[12..16].copy_from_slice(&4095u32.to_le_bytes());
        assert!(matches!(
            GpaDirectRanges::parse(&buf, 32).unwrap_err(),
            PacketError::GpaPfnsOverrun {
                index: 0,
                pfn_count: 1_048_577,
                ..
            }
        ));
        // Range header itself truncated.
        buf[4] = 2;
        buf[8..12].copy_from_slice(&1u32.to_le_bytes());
        buf[12..16].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            GpaDirectRanges::parse(&buf[..28], 32).unwrap_err(),
            PacketError::GpaPfnsOverrun {
                index: 1,
                pfn_count: 0,
                ..
            }
        ));
    }

    #[test]
    fn gpa_builder_checks() {
        let pfns = [1u64, 2];
        let mut buf = [0u8; 64];
        let bad_count = [GpaRangeSpec {
            byte_count: 10,
            byte_offset: 0,
            pfns: &pfns,
        }];
        assert_eq!(
            write_gpa_direct_header(&mut buf, &bad_count, 32),
            Err(PacketError::GpaPfnCountMismatch {
                index: 0,
                expected: 1,
                actual: 2
            })
        );
        let bad_off = [GpaRangeSpec {
            byte_count: 10,
            byte_offset: 5000,
            pfns: &pfns,
        }];
        assert!(matches!(
            write_gpa_direct_header(&mut buf, &bad_off, 32),
            Err(PacketError::GpaOffsetTooLarge { .. })
        ));
        let ok = [GpaRangeSpec {
            byte_count: 4096,
            byte_offset: 1,
            pfns: &pfns,
        }];
        assert_eq!(
            write_gpa_direct_header(&mut buf[..31], &ok, 32),
            Err(PacketError::BufferTooSmall {
                len: 31,
                needed: 32
            })
        );
        assert_eq!(
            write_gpa_direct_header(&mut buf, &[ok[0], ok[0]], 1),
            Err(PacketError::TooManyRanges {
                range_cnt: 2,
                max: 1
            })
        );
    }

    #[test]
    fn pfn_count() {
        assert_eq!(gpa_range_pfn_count(0, 1), 1);
        assert_eq!(gpa_range_pfn_count(0, 4096), 1);
        assert_eq!(gpa_range_pfn_count(1, 4096), 2);
        assert_eq!(gpa_range_pfn_count(4095, u32::MAX), 1_048_577);
    }
}
