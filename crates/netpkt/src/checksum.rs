//! The Internet checksum (RFC 1071): one's-complement sums, pseudo-headers, incremental
//! updates (RFC 1624), and filling or verifying the checksums of whole Ethernet frames.
//!
//! A *sum* here is an unfolded 32-bit one's-complement accumulator: [`sum`] adds bytes to
//! it as big-endian 16-bit words, [`fold`] reduces it to 16 bits, [`finish`] complements
//! that into the value that goes into a header.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::frame::{FrameInfo, L3, L4, ParseError, parse_frame};
use crate::wire::{self, ipv4, proto};

/// Why a checksum could not be filled or verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    /// The frame did not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The frame is not IPv4 (for the IPv4 header checksum).
    #[error("not an IPv4 frame (ethertype {ethertype:#06x})")]
    NotIpv4 {
        /// The frame's ethertype.
        ethertype: u16,
    },
    /// The frame carries no TCP or UDP header.
    #[error("no TCP or UDP header (IP protocol {protocol:?})")]
    NotTcpOrUdp {
        /// The IP protocol, if the frame is IP.
        protocol: Option<u8>,
    },
    /// The datagram is fragmented, so its L4 checksum covers bytes in other frames.
    #[error("fragmented datagram: the L4 checksum spans other fragments")]
    Fragmented,
    /// `csum_start` / `csum_offset` point outside the frame.
    #[error("checksum at {csum_start} + {csum_offset} is outside the {len}-byte frame")]
    OffsetOutOfRange {
        /// Where summing starts.
        csum_start: usize,
        /// Where the field is, from `csum_start`.
        csum_offset: usize,
        /// The frame length.
        len: usize,
    },
}

/// Result of verifying a frame's TCP or UDP checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumStatus {
    /// The checksum is correct.
    Valid,
    /// The checksum is wrong.
    Invalid {
        /// The value in the frame.
        found: u16,
        /// The value that would be correct.
        expected: u16,
    },
    /// UDP over IPv4 with checksum 0: the sender computed none.
    Absent,
}

/// Which L4 checksum was filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Adds `a` and `b` with end-around carry.
#[inline]
fn add32(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    s + u32::from(carry)
}

/// Folds a 64-bit accumulator to 32 bits with end-around carry (congruent mod 0xFFFF).
#[inline]
fn fold64(a: u64) -> u32 {
    let s = (a >> 32) + (a & 0xFFFF_FFFF);
    let s = (s >> 32) + (s & 0xFFFF_FFFF);
    // s ≤ 2^32 - 1 here: the first step gives ≤ 2^33 - 2, the second ≤ 2^32 - 1.
    s as u32
}

/// One's-complement sum of `data` as big-endian 16-bit words (an odd last byte is the high
/// half of a word padded with zero), added to `initial`. The result is unfolded.
///
/// Reads 8 bytes per step. To sum a buffer in pieces, every piece but the last must have an
/// even length.
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut total = initial;
    // Each 8-byte step adds < 2^33 to a u64; 1 MiB blocks keep it far from overflow.
    for block in data.chunks(1 << 20) {
        let mut acc: u64 = 0;
        let mut chunks = block.chunks_exact(8);
        for c in &mut chunks {
            let hi = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            let lo = u32::from_be_bytes([c[4], c[5], c[6], c[7]]);
            acc += u64::from(hi) + u64::from(lo);
        }
        let rem = chunks.remainder();
        let mut tail = [0u8; 8];
        tail[..rem.len()].copy_from_slice(rem);
        acc += u64::from(u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]));
        acc += u64::from(u32::from_be_bytes([tail[4], tail[5], tail[6], tail[7]]));
        total = add32(total, fold64(acc));
    }
    total
}

/// Folds a sum to 16 bits with end-around carry. Only a zero sum folds to 0.
pub fn fold(sum: u32) -> u16 {
    let s = (sum >> 16) + (sum & 0xFFFF);
    let s = (s >> 16) + (s & 0xFFFF);
    s as u16
}

/// The checksum field value for a sum: the complement of [`fold`].
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// Sum of the IPv4 pseudo-header: addresses, zero, protocol, and the L4 length.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u16) -> u32 {
    let s = u32::from(src);
    let d = u32::from(dst);
    (s >> 16) + (s & 0xFFFF) + (d >> 16) + (d & 0xFFFF) + u32::from(protocol) + u32::from(len)
}

/// Sum of the IPv6 pseudo-header: addresses, the 32-bit upper-layer length, next header.
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: u32) -> u32 {
    let mut s = 0u32;
    for w in src.segments().into_iter().chain(dst.segments()) {
        s += u32::from(w);
    }
    // 16 words of ≤ 0xFFFF plus these four stay far below 2^32.
    s + (len >> 16) + (len & 0xFFFF) + u32::from(next_header)
}

/// RFC 1624 eqn. 3: the checksum after a 16-bit word covered by `check` changes from `old`
/// to `new`.
pub fn update_u16(check: u16, old: u16, new: u16) -> u16 {
    !fold(add32(
        add32(u32::from(!check), u32::from(!old)),
        u32::from(new),
    ))
}

/// As [`update_u16`], for an aligned 32-bit field (two words).
pub fn update_u32(check: u16, old: u32, new: u32) -> u16 {
    let c = update_u16(check, (old >> 16) as u16, (new >> 16) as u16);
    update_u16(c, old as u16, new as u16)
}

/// The pseudo-header sum for the L4 segment of a parsed frame, `len` bytes long.
pub(crate) fn pseudo_header(l3: &L3, protocol: u8, len: usize) -> Option<u32> {
    match *l3 {
        L3::Ipv4 { src, dst, .. } => Some(pseudo_header_v4(
            src,
            dst,
            protocol,
            u16::try_from(len).ok()?,
        )),
        L3::Ipv6 { src, dst, .. } => Some(pseudo_header_v6(
            src,
            dst,
            protocol,
            u32::try_from(len).ok()?,
        )),
        L3::Other => None,
    }
}

/// Where a TCP/UDP checksum lives in a parsed frame.
struct L4Span {
    protocol: L4Protocol,
    /// Offset of the L4 header.
    start: usize,
    /// One past the last byte of the IP packet.
    end: usize,
    /// Offset of the checksum field in the frame.
    field: usize,
}

fn l4_span(info: &FrameInfo) -> Result<L4Span, ChecksumError> {
    if info.l3.is_fragment() {
        return Err(ChecksumError::Fragmented);
    }
    let (protocol, field_in_header) = match info.l4 {
        L4::Tcp { .. } => (L4Protocol::Tcp, wire::tcp::CHECKSUM.start),
        L4::Udp { .. } => (L4Protocol::Udp, wire::udp::CHECKSUM.start),
        _ => {
            return Err(ChecksumError::NotTcpOrUdp {
                protocol: info.l3.protocol(),
            });
        }
    };
    let start = info.l4_offset.ok_or(ChecksumError::NotTcpOrUdp {
        protocol: info.l3.protocol(),
    })?;
    Ok(L4Span {
        protocol,
        start,
        end: info.ip_end,
        field: start + field_in_header,
    })
}

/// Sum of the pseudo-header and the L4 segment with its checksum field taken as zero.
fn l4_sum_without_field(
    frame: &[u8],
    info: &FrameInfo,
    span: &L4Span,
) -> Result<u32, ChecksumError> {
    let proto_num = match span.protocol {
        L4Protocol::Tcp => proto::TCP,
        L4Protocol::Udp => proto::UDP,
    };
    let segment = frame
        .get(span.start..span.end)
        .ok_or(ChecksumError::NotTcpOrUdp {
            protocol: Some(proto_num),
        })?;
    let pseudo =
        pseudo_header(&info.l3, proto_num, segment.len()).ok_or(ChecksumError::NotTcpOrUdp {
            protocol: Some(proto_num),
        })?;
    // The field sits at an even offset in the segment, so the pieces sum independently.
    let rel = span.field - span.start;
    let before = segment.get(..rel).unwrap_or(&[]);
    let after = segment.get(rel + 2..).unwrap_or(&[]);
    Ok(sum(after, sum(before, pseudo)))
}

fn read_field(frame: &[u8], at: usize) -> u16 {
    match frame.get(at..at + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

fn write_field(frame: &mut [u8], at: usize, value: u16) {
    if let Some(f) = frame.get_mut(at..at + 2) {
        f.copy_from_slice(&value.to_be_bytes());
    }
}

/// Computes and stores the TCP or UDP checksum of an Ethernet frame (IPv4 or IPv6, not
/// fragmented). A UDP result of 0 is stored as 0xFFFF.
pub fn fill_l4_checksum(frame: &mut [u8]) -> Result<L4Protocol, ChecksumError> {
    let info = parse_frame(frame)?;
    fill_l4_checksum_parsed(frame, &info)
}

/// As [`fill_l4_checksum`], for a frame already parsed into `info`.
pub fn fill_l4_checksum_parsed(
    frame: &mut [u8],
    info: &FrameInfo,
) -> Result<L4Protocol, ChecksumError> {
    let span = l4_span(info)?;
    let mut c = finish(l4_sum_without_field(frame, info, &span)?);
    if span.protocol == L4Protocol::Udp && c == 0 {
        c = 0xFFFF;
    }
    write_field(frame, span.field, c);
    Ok(span.protocol)
}

/// Verifies the TCP or UDP checksum of an Ethernet frame (IPv4 or IPv6, not fragmented).
pub fn verify_l4_checksum(frame: &[u8]) -> Result<ChecksumStatus, ChecksumError> {
    let info = parse_frame(frame)?;
    verify_l4_checksum_parsed(frame, &info)
}

/// As [`verify_l4_checksum`], for a frame already parsed into `info`.
pub fn verify_l4_checksum_parsed(
    frame: &[u8],
    info: &FrameInfo,
) -> Result<ChecksumStatus, ChecksumError> {
    let span = l4_span(info)?;
    let found = read_field(frame, span.field);
    let is_udp = span.protocol == L4Protocol::Udp;
    if is_udp && found == 0 && matches!(info.l3, L3::Ipv4 { .. }) {
        return Ok(ChecksumStatus::Absent);
    }
    let partial = l4_sum_without_field(frame, info, &span)?;
    // The receiver's rule: everything, the field included, sums to all-ones. This accepts
    // both representations of zero; UDP's 0 over IPv6 is not a checksum and fails here
    // unless the true sum is all-ones, in which case 0xFFFF was required.
    let valid = fold(add32(partial, u32::from(found))) == 0xFFFF && !(is_udp && found == 0);
    if valid {
        Ok(ChecksumStatus::Valid)
    } else {
        let mut expected = finish(partial);
        if is_udp && expected == 0 {
            expected = 0xFFFF;
        }
        Ok(ChecksumStatus::Invalid { found, expected })
    }
}

fn ipv4_header_range(frame: &[u8]) -> Result<(usize, usize), ChecksumError> {
    let info = parse_frame(frame)?;
    match info.l3 {
        L3::Ipv4 { header_len, .. } => {
            Ok((info.l3_offset, info.l3_offset + usize::from(header_len)))
        }
        _ => Err(ChecksumError::NotIpv4 {
            ethertype: info.ethertype,
        }),
    }
}

/// Computes and stores the IPv4 header checksum of an Ethernet frame.
pub fn fill_ipv4_header_checksum(frame: &mut [u8]) -> Result<(), ChecksumError> {
    let (start, end) = ipv4_header_range(frame)?;
    fill_ipv4_header_checksum_at(frame, start, end);
    Ok(())
}

/// Whether the IPv4 header checksum of an Ethernet frame is correct.
pub fn verify_ipv4_header_checksum(frame: &[u8]) -> Result<bool, ChecksumError> {
    let (start, end) = ipv4_header_range(frame)?;
    Ok(frame
        .get(start..end)
        .is_some_and(|h| fold(sum(h, 0)) == 0xFFFF))
}

/// Stores the checksum of the IPv4 header in `frame[start..end]` (no-op if out of bounds).
pub(crate) fn fill_ipv4_header_checksum_at(frame: &mut [u8], start: usize, end: usize) {
    let field = start + ipv4::CHECKSUM.start;
    write_field(frame, field, 0);
    if let Some(h) = frame.get(start..end) {
        let c = finish(sum(h, 0));
        write_field(frame, field, c);
    }
}

/// Completes a partial checksum (virtio-net `NEEDS_CSUM`, Linux `CHECKSUM_PARTIAL`): the
/// field at `csum_start + csum_offset` already holds the folded pseudo-header sum; the bytes
/// from `csum_start` to the end of the frame, the field included, are summed, complemented
/// and stored there. A result of 0 is stored as 0xFFFF (equivalent for TCP, required for UDP).
pub fn complete_partial_checksum(
    frame: &mut [u8],
    csum_start: usize,
    csum_offset: usize,
) -> Result<(), ChecksumError> {
    let len = frame.len();
    let err = ChecksumError::OffsetOutOfRange {
        csum_start,
        csum_offset,
        len,
    };
    let field = csum_start.checked_add(csum_offset).ok_or(err)?;
    if field.checked_add(2).is_none_or(|end| end > len) {
        return Err(err);
    }
    let mut c = finish(sum(&frame[csum_start..], 0));
    if c == 0 {
        c = 0xFFFF;
    }
    write_field(frame, field, c);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-by-bit RFC 1071 over 16-bit words, for comparison.
    fn naive(data: &[u8], initial: u32) -> u16 {
        let mut s = u64::from(initial);
        for pair in data.chunks(2) {
            let w = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            s += u64::from(w);
        }
        while s > 0xFFFF {
            s = (s >> 16) + (s & 0xFFFF);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d, 0)), 0xddf2);
        assert_eq!(finish(sum(&d, 0)), 0x220d);
    }

    #[test]
    fn ipv4_header_known_value() {
        // A well-known sample header whose checksum is 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(finish(sum(&h, 0)), 0xb861);
        h[10] = 0xb8;
        h[11] = 0x61;
        assert_eq!(fold(sum(&h, 0)), 0xFFFF);
    }

    #[test]
    fn odd_lengths_and_tails() {
        let data: [u8; 23] =
            core::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(0xA5));
        for len in 0..=data.len() {
            for initial in [0, 1, 0xFFFF, 0x1_2345, u32::MAX] {
                assert_eq!(
                    fold(sum(&data[..len], initial)),
                    naive(&data[..len], initial),
                    "len {len}"
                );
            }
        }
        assert_eq!(
            fold(sum(&[0xFF; 4096], u32::MAX)),
            naive(&[0xFF; 4096], u32::MAX)
        );
    }

    #[test]
    fn incremental_update_matches_recompute() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        // TTL 64 → 63: the word at 8 changes 0x4011 → 0x3f11.
        let c = update_u16(0xb861, 0x4011, 0x3f11);
        h[8] = 0x3f;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(c, finish(sum(&h, 0)));
        // Source address 192.168.0.1 → 10.1.2.3.
        let c2 = update_u32(c, 0xc0a8_0001, 0x0a01_0203);
        h[12..16].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(c2, finish(sum(&h, 0)));
    }

    #[test]
    fn pseudo_headers() {
        let v4 = pseudo_header_v4(
            Ipv4Addr::new(192, 168, 0, 1),
            Ipv4Addr::new(192, 168, 0, 199),
            17,
            0x5f,
        );
        assert_eq!(v4, 0xc0a8 + 0x0001 + 0xc0a8 + 0x00c7 + 17 + 0x5f);
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let v6 = pseudo_header_v6(src, dst, 6, 0x1_0004);
        assert_eq!(v6, 0x2001 + 0x0db8 + 1 + 0x2001 + 0x0db8 + 2 + 1 + 4 + 6);
    }

    fn udp4_frame(payload: &[u8]) -> [u8; 64] {
        let mut f = [0u8; 64];
        f[12] = 0x08;
        f[14..34].copy_from_slice(&[
            0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
        ]);
        let total = (20 + 8 + payload.len()) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[34..42].copy_from_slice(&[0x10, 0x00, 0x20, 0x00, 0, 8 + payload.len() as u8, 0, 0]);
        f[42..42 + payload.len()].copy_from_slice(payload);
        f
    }

    #[test]
    fn udp_fill_verify_and_absent() {
        let mut f = udp4_frame(b"hello");
        assert_eq!(verify_l4_checksum(&f), Ok(ChecksumStatus::Absent));
        assert_eq!(fill_l4_checksum(&mut f), Ok(L4Protocol::Udp));
        assert_eq!(verify_l4_checksum(&f), Ok(ChecksumStatus::Valid));
        fill_ipv4_header_checksum(&mut f).unwrap();
        assert_eq!(verify_ipv4_header_checksum(&f), Ok(true));
        f[43] ^= 1;
        assert!(matches!(
            verify_l4_checksum(&f),
            Ok(ChecksumStatus::Invalid { .. })
        ));
        assert_eq!(verify_ipv4_header_checksum(&f), Ok(true));
        f[15] ^= 4;
        assert_eq!(verify_ipv4_header_checksum(&f), Ok(false));
    }

    #[test]
    fn udp_zero_result_becomes_ffff() {
        // Search for a two-byte payload whose true checksum is 0.
        let mut found = false;
        for w in 0..=0xFFFFu16 {
            let mut f = udp4_frame(&w.to_be_bytes());
            let info = parse_frame(&f).unwrap();
            let span = l4_span(&info).unwrap();
            if finish(l4_sum_without_field(&f, &info, &span).unwrap()) == 0 {
                fill_l4_checksum(&mut f).unwrap();
                assert_eq!(&f[40..42], &[0xFF, 0xFF]);
                assert_eq!(verify_l4_checksum(&f), Ok(ChecksumStatus::Valid));
                found = true;
                break;
            }
        }
        assert!(found);
    }

    #[test]
    fn partial_checksum_completion() {
        let mut f = udp4_frame(b"partial!");
        let mut reference = f;
        fill_l4_checksum(&mut reference).unwrap();
        // Seed the field with the pseudo-header sum, as a TAP vnet_hdr packet has it.
        let pseudo = pseudo_header_v4(
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(198, 18, 0, 2),
            17,
            16,
        );
        f[40..42].copy_from_slice(&fold(pseudo).to_be_bytes());
        // The frame ends at the IP packet's end for this to match.
        let mut trimmed = [0u8; 50];
        trimmed.copy_from_slice(&f[..50]);
        complete_partial_checksum(&mut trimmed, 34, 6).unwrap();
        assert_eq!(&trimmed[40..42], &reference[40..42]);
        assert_eq!(
            complete_partial_checksum(&mut trimmed, 49, 0),
            Err(ChecksumError::OffsetOutOfRange {
                csum_start: 49,
                csum_offset: 0,
                len: 50
            })
        );
        assert!(complete_partial_checksum(&mut trimmed, usize::MAX, 2).is_err());
    }

    #[test]
    fn errors_name_the_problem() {
        let mut f = udp4_frame(b"x");
        f[20] = 0x20; // MF
        assert_eq!(verify_l4_checksum(&f), Err(ChecksumError::Fragmented));
        let mut f = udp4_frame(b"x");
        f[23] = 99;
        assert_eq!(
            fill_l4_checksum(&mut f),
            Err(ChecksumError::NotTcpOrUdp { protocol: Some(99) })
        );
        let mut arp = [0u8; 60];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(
            fill_ipv4_header_checksum(&mut arp),
            Err(ChecksumError::NotIpv4 { ethertype: 0x0806 })
        );
    }
}
