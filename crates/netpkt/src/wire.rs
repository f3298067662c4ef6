//! Header layouts: one definition of every field offset the crate touches.
//!
//! Each protocol has a `field` module of named byte ranges (offsets from that header's first
//! byte), so accessors elsewhere never carry magic numbers. The read/write helpers are
//! checked: a read past the end yields `None`, a write past the end is a no-op that returns
//! `false`. Callers validate lengths once when parsing and rely on these helpers only as a
//! second line of defence against out-of-bounds access.

use core::ops::Range;

/// Ethernet II header.
pub(crate) mod eth {
    use super::Range;
    pub(crate) const DST: Range<usize> = 0..6;
    pub(crate) const SRC: Range<usize> = 6..12;
    pub(crate) const ETHERTYPE: Range<usize> = 12..14;
    pub(crate) const HEADER_LEN: usize = 14;
}

/// One 802.1Q / 802.1ad tag, following the MAC addresses.
pub(crate) mod vlan {
    use super::Range;
    pub(crate) const TCI: Range<usize> = 0..2;
    pub(crate) const ETHERTYPE: Range<usize> = 2..4;
    pub(crate) const TAG_LEN: usize = 4;
}

/// Ethertypes the parser recognises.
pub(crate) mod ethertype {
    pub(crate) const IPV4: u16 = 0x0800;
    pub(crate) const IPV6: u16 = 0x86DD;
    pub(crate) const VLAN: u16 = 0x8100;
    pub(crate) const QINQ: u16 = 0x88A8;
}

/// IPv4 header (RFC 791).
pub(crate) mod ipv4 {
    use super::Range;
    pub(crate) const VER_IHL: usize = 0;
    pub(crate) const TOS: usize = 1;
    pub(crate) const TOTAL_LEN: Range<usize> = 2..4;
    pub(crate) const ID: Range<usize> = 4..6;
    pub(crate) const FLAGS_FRAG: Range<usize> = 6..8;
    pub(crate) const TTL: usize = 8;
    pub(crate) const PROTOCOL: usize = 9;
    pub(crate) const CHECKSUM: Range<usize> = 10..12;
    pub(crate) const SRC: Range<usize> = 12..16;
    pub(crate) const DST: Range<usize> = 16..20;
    pub(crate) const MIN_HEADER_LEN: usize = 20;
    /// In the flags/fragment-offset word.
    pub(crate) const FLAG_DF: u16 = 0x4000;
    pub(crate) const FLAG_MF: u16 = 0x2000;
    pub(crate) const FRAG_OFFSET_MASK: u16 = 0x1FFF;
}

/// IPv6 fixed header (RFC 8200).
pub(crate) mod ipv6 {
    use super::Range;
    pub(crate) const VER_TC_FLOW: Range<usize> = 0..4;
    pub(crate) const PAYLOAD_LEN: Range<usize> = 4..6;
    pub(crate) const NEXT_HEADER: usize = 6;
    pub(crate) const HOP_LIMIT: usize = 7;
    pub(crate) const SRC: Range<usize> = 8..24;
    pub(crate) const DST: Range<usize> = 24..40;
    pub(crate) const HEADER_LEN: usize = 40;
}

/// IPv6 extension headers.
pub(crate) mod ipv6_ext {
    /// Next header, length, and the minimum size of a generic (hop-by-hop, routing,
    /// destination options) header; its length byte counts 8-byte units beyond the first.
    pub(crate) const NEXT_HEADER: usize = 0;
    pub(crate) const LEN: usize = 1;
    pub(crate) const MIN_LEN: usize = 8;
    /// The fragment header is always 8 bytes: next header, reserved, offset/flags, id.
    pub(crate) mod fragment {
        use core::ops::Range;
        pub(crate) const OFFSET_FLAGS: Range<usize> = 2..4;
        pub(crate) const ID: Range<usize> = 4..8;
        pub(crate) const LEN: usize = 8;
        pub(crate) const FLAG_M: u16 = 0x0001;
    }
}

/// IP protocol / IPv6 next-header numbers.
pub(crate) mod proto {
    pub(crate) const HOP_BY_HOP: u8 = 0;
    pub(crate) const ICMP: u8 = 1;
    pub(crate) const TCP: u8 = 6;
    pub(crate) const UDP: u8 = 17;
    pub(crate) const ROUTING: u8 = 43;
    pub(crate) const FRAGMENT: u8 = 44;
    pub(crate) const AH: u8 = 51;
    pub(crate) const ICMPV6: u8 = 58;
    pub(crate) const DEST_OPTS: u8 = 60;
}

/// TCP header (RFC 9293).
pub(crate) mod tcp {
    use super::Range;
    pub(crate) const SRC_PORT: Range<usize> = 0..2;
    pub(crate) const DST_PORT: Range<usize> = 2..4;
    pub(crate) const SEQ: Range<usize> = 4..8;
    pub(crate) const ACK: Range<usize> = 8..12;
    pub(crate) const DATA_OFFSET: usize = 12;
    pub(crate) const FLAGS: usize = 13;
    pub(crate) const WINDOW: Range<usize> = 14..16;
    pub(crate) const CHECKSUM: Range<usize> = 16..18;
    pub(crate) const URGENT: Range<usize> = 18..20;
    pub(crate) const MIN_HEADER_LEN: usize = 20;
}

/// UDP header (RFC 768).
pub(crate) mod udp {
    use super::Range;
    pub(crate) const SRC_PORT: Range<usize> = 0..2;
    pub(crate) const DST_PORT: Range<usize> = 2..4;
    pub(crate) const LENGTH: Range<usize> = 4..6;
    pub(crate) const CHECKSUM: Range<usize> = 6..8;
    pub(crate) const HEADER_LEN: usize = 8;
}

/// ICMP / ICMPv6 header: type, code, then a checksum (not read here).
pub(crate) mod icmp {
    pub(crate) const TYPE: usize = 0;
    pub(crate) const CODE: usize = 1;
    pub(crate) const HEADER_LEN: usize = 4;
}

/// The byte at `base + at`, if present.
pub(crate) fn u8_at(buf: &[u8], base: usize, at: usize) -> Option<u8> {
    buf.get(base.checked_add(at)?).copied()
}

/// The big-endian u16 at `base + range`, if present.
pub(crate) fn be16_at(buf: &[u8], base: usize, range: Range<usize>) -> Option<u16> {
    let b = slice_at(buf, base, range)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

/// The big-endian u32 at `base + range`, if present.
pub(crate) fn be32_at(buf: &[u8], base: usize, range: Range<usize>) -> Option<u32> {
    let b = slice_at(buf, base, range)?;
    Some(u32::from_be_bytes([
        *b.first()?,
        *b.get(1)?,
        *b.get(2)?,
        *b.get(3)?,
    ]))
}

/// `buf[base + range]`, if present.
pub(crate) fn slice_at(buf: &[u8], base: usize, range: Range<usize>) -> Option<&[u8]> {
    buf.get(base.checked_add(range.start)?..base.checked_add(range.end)?)
}

/// `&mut buf[base + range]`, if present.
pub(crate) fn slice_at_mut(buf: &mut [u8], base: usize, range: Range<usize>) -> Option<&mut [u8]> {
    buf.get_mut(base.checked_add(range.start)?..base.checked_add(range.end)?)
}

/// Stores `value` big-endian at `base + range` (a 2-byte range); `false` if out of bounds.
pub(crate) fn set_be16(buf: &mut [u8], base: usize, range: Range<usize>, value: u16) -> bool {
    match slice_at_mut(buf, base, range) {
        Some(s) if s.len() == 2 => {
            s.copy_from_slice(&value.to_be_bytes());
            true
        }
        _ => false,
    }
}

/// Stores `value` big-endian at `base + range` (a 4-byte range); `false` if out of bounds.
pub(crate) fn set_be32(buf: &mut [u8], base: usize, range: Range<usize>, value: u32) -> bool {
    match slice_at_mut(buf, base, range) {
        Some(s) if s.len() == 4 => {
            s.copy_from_slice(&value.to_be_bytes());
            true
        }
        _ => false,
    }
}

/// Stores `value` at `base + at`; `false` if out of bounds.
pub(crate) fn set_u8(buf: &mut [u8], base: usize, at: usize, value: u8) -> bool {
    match base.checked_add(at).and_then(|i| buf.get_mut(i)) {
        Some(b) => {
            *b = value;
            true
        }
        None => false,
    }
}
