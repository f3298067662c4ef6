//! TCP segmentation: one large TCP frame in, MSS-sized frames out (LSOv2, PROTOCOL.md §8.3;
//! and the kernel's TSO form that a TAP with `vnet_hdr` delivers).
//!
//! The input's IP length fields and checksums are not trusted: an IPv4 total length or
//! IPv6 payload length of 0 means "to the end of the frame" (the guest's LSO form), any
//! other value is used as given, and every segment's lengths, IPv4 header checksum and TCP
//! checksum are computed from scratch. Per segment *i* of *n*: IPv4 id = id + *i*,
//! sequence = seq + *i* × MSS, FIN and PSH only on the last, CWR only on the first; all
//! other header bytes (MACs, VLAN tag, IP options, IPv6 extension headers, TCP options,
//! window, urgent pointer) are copied.
//!
//! [`LsoPlan`] validates a frame once and can then write any segment into a caller's
//! buffer (so a host can write straight into a receive-buffer section); [`segment`] and
//! [`segment_gso`] drive it through a scratch buffer and a callback.

use crate::checksum::{self, fill_ipv4_header_checksum_at};
use crate::frame::{FrameInfo, L3, L4, ParseError, parse_lso_frame, tcp_flags};
use crate::wire::{self, ipv4, ipv6, set_be16, set_be32, set_u8};

/// The most TCP payload a guest may hand the host in one LSOv2 packet (vmswitch's limit).
pub const MAX_LSO_PAYLOAD: usize = 62780;

/// The most TCP payload a GSO frame can carry: an IP packet of at most 65535 bytes.
pub const MAX_GSO_PAYLOAD: usize = 65535;

/// Why a frame could not be segmented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LsoError {
    /// The frame did not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The frame is not TCP over IPv4 or IPv6.
    #[error("not a TCP frame (IP protocol {protocol:?})")]
    NotTcp {
        /// The IP protocol, if the frame is IP.
        protocol: Option<u8>,
    },
    /// The frame is an IP fragment.
    #[error("the frame is an IP fragment")]
    Fragmented,
    /// The caller's TCP header offset is not where the TCP header is.
    #[error("TCP header offset {given} does not match the parsed offset {parsed}")]
    TcpOffsetMismatch {
        /// The offset the caller gave (the LSO PPI's).
        given: usize,
        /// The offset parsing found.
        parsed: usize,
    },
    /// MSS 0.
    #[error("MSS is 0")]
    ZeroMss,
    /// More payload than allowed.
    #[error("TCP payload of {payload_len} bytes exceeds the limit of {limit}")]
    PayloadTooLarge {
        /// The payload length.
        payload_len: usize,
        /// The limit.
        limit: usize,
    },
    /// A full-size segment would not fit an IP length field.
    #[error("a segment's IP length {ip_len} exceeds 65535 (MSS {mss})")]
    SegmentTooLarge {
        /// The IP length (IPv4 total length or IPv6 payload length) it would need.
        ip_len: usize,
        /// The MSS.
        mss: u16,
    },
    /// The output buffer cannot hold a segment.
    #[error("output buffer of {available} bytes cannot hold a {needed}-byte segment")]
    BufferTooSmall {
        /// Bytes the segment needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// No such segment.
    #[error("segment {index} requested of {count}")]
    SegmentIndex {
        /// The index requested.
        index: usize,
        /// How many segments there are.
        count: usize,
    },
}

/// A validated large TCP frame and how it splits into segments.
#[derive(Clone, Copy, Debug)]
pub struct LsoPlan<'a> {
    frame: &'a [u8],
    info: FrameInfo,
    /// Offset of the TCP header.
    tcp_offset: usize,
    /// Offset of the TCP payload (end of all headers).
    payload_offset: usize,
    /// TCP payload length.
    payload_len: usize,
    mss: usize,
    count: usize,
}

impl<'a> LsoPlan<'a> {
    /// Validates an LSOv2 frame from a guest: the TCP header must be at `tcp_header_offset`
    /// (the PPI's), MSS ≥ 1, payload ≤ [`MAX_LSO_PAYLOAD`].
    pub fn new(frame: &'a [u8], mss: u16, tcp_header_offset: usize) -> Result<Self, LsoError> {
        Self::build(frame, mss, Some(tcp_header_offset), MAX_LSO_PAYLOAD)
    }

    /// Validates a GSO frame (from a TAP's `vnet_hdr` TSO): the TCP header is found by
    /// parsing, `gso_size` ≥ 1, payload up to what an IP packet holds.
    pub fn new_gso(frame: &'a [u8], gso_size: u16) -> Result<Self, LsoError> {
        Self::build(frame, gso_size, None, MAX_GSO_PAYLOAD)
    }

    fn build(
        frame: &'a [u8],
        mss: u16,
        tcp_header_offset: Option<usize>,
        limit: usize,
    ) -> Result<Self, LsoError> {
        let info = parse_lso_frame(frame)?;
        if info.l3.is_fragment() {
            return Err(LsoError::Fragmented);
        }
        let (L4::Tcp { header_len, .. }, Some(tcp_offset)) = (info.l4, info.l4_offset) else {
            return Err(LsoError::NotTcp {
                protocol: info.l3.protocol(),
            });
        };
        if let Some(given) = tcp_header_offset
            && given != tcp_offset
        {
            return Err(LsoError::TcpOffsetMismatch {
                given,
                parsed: tcp_offset,
            });
        }
        if mss == 0 {
            return Err(LsoError::ZeroMss);
        }
        let payload_offset = tcp_offset + usize::from(header_len);
        let payload_len = info.ip_end.saturating_sub(payload_offset);
        if payload_len > limit {
            return Err(LsoError::PayloadTooLarge { payload_len, limit });
        }
        let mss = usize::from(mss);
        let full = mss.min(payload_len);
        let ip_len = ip_length_field(&info, payload_offset, full);
        if ip_len > usize::from(u16::MAX) {
            return Err(LsoError::SegmentTooLarge {
                ip_len,
                mss: mss as u16,
            });
        }
        let count = payload_len.div_ceil(mss).max(1);
        Ok(Self {
            frame,
            info,
            tcp_offset,
            payload_offset,
            payload_len,
            mss,
            count,
        })
    }

    /// How many segments the frame splits into (at least 1: a frame without payload gives
    /// one segment of headers).
    pub fn segment_count(&self) -> usize {
        self.count
    }

    /// TCP payload bytes in the whole frame.
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// Bytes of headers (Ethernet through TCP) in every segment.
    pub fn header_len(&self) -> usize {
        self.payload_offset
    }

    /// The parsed input frame.
    pub fn info(&self) -> &FrameInfo {
        &self.info
    }

    /// Payload bytes of segment `index`.
    fn seg_payload(&self, index: usize) -> (usize, usize) {
        let start = index * self.mss;
        let len = self.payload_len.saturating_sub(start).min(self.mss);
        (start, len)
    }

    /// Length of segment `index` as a frame (0 if there is no such segment).
    pub fn segment_len(&self, index: usize) -> usize {
        if index >= self.count {
            return 0;
        }
        self.payload_offset + self.seg_payload(index).1
    }

    /// Length of the largest segment (the first).
    pub fn max_segment_len(&self) -> usize {
        self.segment_len(0)
    }

    /// Writes segment `index` into the start of `out`, returning its length.
    pub fn write_segment(&self, index: usize, out: &mut [u8]) -> Result<usize, LsoError> {
        if index >= self.count {
            return Err(LsoError::SegmentIndex {
                index,
                count: self.count,
            });
        }
        let (start, len) = self.seg_payload(index);
        let total = self.payload_offset + len;
        let available = out.len();
        let Some(out) = out.get_mut(..total) else {
            return Err(LsoError::BufferTooSmall {
                needed: total,
                available,
            });
        };
        let src_payload = self.payload_offset + start;
        let (Some(headers), Some(payload)) = (
            self.frame.get(..self.payload_offset),
            self.frame.get(src_payload..src_payload + len),
        ) else {
            // Unreachable after validation; refuse rather than panic.
            return Err(LsoError::SegmentIndex {
                index,
                count: self.count,
            });
        };
        let (out_headers, out_payload) = out.split_at_mut(self.payload_offset);
        out_headers.copy_from_slice(headers);
        out_payload.copy_from_slice(payload);

        let l3 = self.info.l3_offset;
        let ip_len = ip_length_field(&self.info, self.payload_offset, len) as u16;
        match self.info.l3 {
            L3::Ipv4 { header_len, id, .. } => {
                set_be16(out, l3, ipv4::TOTAL_LEN, ip_len);
                set_be16(out, l3, ipv4::ID, id.wrapping_add(index as u16));
                fill_ipv4_header_checksum_at(out, l3, l3 + usize::from(header_len));
            }
            L3::Ipv6 { .. } => {
                set_be16(out, l3, ipv6::PAYLOAD_LEN, ip_len);
            }
            L3::Other => {}
        }
        let t = self.tcp_offset;
        if let L4::Tcp { seq, flags, .. } = self.info.l4 {
            set_be32(out, t, wire::tcp::SEQ, seq.wrapping_add(start as u32));
            let mut f = flags;
            if index + 1 != self.count {
                f &= !(tcp_flags::FIN | tcp_flags::PSH);
            }
            if index != 0 {
                f &= !tcp_flags::CWR;
            }
            set_u8(out, t, wire::tcp::FLAGS, f);
        }
        fill_tcp_checksum(out, &self.info.l3, t);
        Ok(total)
    }

    /// Writes each segment in turn into `scratch` and hands it to `out`; returns the number
    /// of segments.
    pub fn for_each_segment(
        &self,
        scratch: &mut [u8],
        out: &mut impl FnMut(&[u8]),
    ) -> Result<usize, LsoError> {
        for i in 0..self.count {
            let n = self.write_segment(i, scratch)?;
            out(&scratch[..n]);
        }
        Ok(self.count)
    }
}

/// The IP length field for a segment with `payload` TCP payload bytes: IPv4 total length,
/// or IPv6 payload length (extension headers and TCP header included).
fn ip_length_field(info: &FrameInfo, payload_offset: usize, payload: usize) -> usize {
    let l3 = match info.l3 {
        L3::Ipv6 { .. } => info.l3_offset + ipv6::HEADER_LEN,
        _ => info.l3_offset,
    };
    payload_offset.saturating_sub(l3) + payload
}

/// Computes the TCP checksum of the segment from `tcp_offset` to the end of `frame`.
pub(crate) fn fill_tcp_checksum(frame: &mut [u8], l3: &L3, tcp_offset: usize) {
    let field = tcp_offset + wire::tcp::CHECKSUM.start;
    set_be16(frame, tcp_offset, wire::tcp::CHECKSUM, 0);
    let Some(segment) = frame.get(tcp_offset..) else {
        return;
    };
    let Some(pseudo) = checksum::pseudo_header(l3, wire::proto::TCP, segment.len()) else {
        return;
    };
    let c = checksum::finish(checksum::sum(segment, pseudo));
    set_be16(frame, field, 0..2, c);
}

/// Segments a guest's LSOv2 frame (PROTOCOL.md §8.3) into MSS-sized frames, each written
/// into `scratch` and passed to `out`. `tcp_header_offset` is the PPI's and must match the
/// frame; `scratch` must hold a full segment ([`LsoPlan::max_segment_len`], at most the
/// headers + `mss`). Returns the number of segments. Nothing is passed to `out` unless the
/// frame is valid.
pub fn segment(
    frame: &[u8],
    mss: u16,
    tcp_header_offset: usize,
    scratch: &mut [u8],
    out: &mut impl FnMut(&[u8]),
) -> Result<usize, LsoError> {
    let plan = LsoPlan::new(frame, mss, tcp_header_offset)?;
    check_scratch(&plan, scratch)?;
    plan.for_each_segment(scratch, out)
}

/// Segments a TSO frame as a TAP with `vnet_hdr` delivers it (`GSO_TCPV4`/`GSO_TCPV6`;
/// lengths set or zero, TCP checksum partial or anything else: all recomputed) into
/// `gso_size` pieces. As [`segment`] otherwise, with the TCP header found by parsing and a
/// payload limit of [`MAX_GSO_PAYLOAD`].
pub fn segment_gso(
    frame: &[u8],
    gso_size: u16,
    scratch: &mut [u8],
    out: &mut impl FnMut(&[u8]),
) -> Result<usize, LsoError> {
    let plan = LsoPlan::new_gso(frame, gso_size)?;
    check_scratch(&plan, scratch)?;
    plan.for_each_segment(scratch, out)
}

fn check_scratch(plan: &LsoPlan<'_>, scratch: &[u8]) -> Result<(), LsoError> {
    let needed = plan.max_segment_len();
    if scratch.len() < needed {
        return Err(LsoError::BufferTooSmall {
            needed,
            available: scratch.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::checksum::{
        ChecksumStatus, fold, pseudo_header_v4, pseudo_header_v6, verify_ipv4_header_checksum,
        verify_l4_checksum,
    };
    use crate::frame::parse_frame;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use std::vec::Vec;

    const SRC4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const DST4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    /// Guest-form IPv4 LSO frame: total length 0, header checksum 0, TCP checksum seeded
    /// with the pseudo-header for length 0; TCP 40000 → 5201, seq 0x01020304, ack 0x0A0B0C0D,
    /// flags CWR|ACK|PSH|FIN, window 512, and `payload_len` bytes 0, 1, 2, ...
    fn guest_v4(payload_len: usize) -> Vec<u8> {
        let mut f = std::vec![
            0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00, // Ethernet
            0x45, 0x00, 0x00, 0x00, 0xAB, 0xCD, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 198, 18, 0, 1,
            198, 18, 0, 2, 0x9C, 0x40, 0x14, 0x51, 0x01, 0x02, 0x03, 0x04, 0x0A, 0x0B, 0x0C, 0x0D,
            0x50, 0x99, 0x02, 0x00, 0, 0, 0, 0,
        ];
        let seed = fold(pseudo_header_v4(SRC4, DST4, 6, 0));
        f[50..52].copy_from_slice(&seed.to_be_bytes());
        f.extend((0..payload_len).map(|i| i as u8));
        f
    }

    fn collect(res: Result<usize, LsoError>, segs: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        assert_eq!(res.unwrap(), segs.len());
        segs
    }

    fn run(frame: &[u8], mss: u16, off: usize) -> Vec<Vec<u8>> {
        let mut segs = Vec::new();
        let mut scratch = [0u8; 2048];
        let res = segment(frame, mss, off, &mut scratch, &mut |s: &[u8]| {
            segs.push(s.to_vec())
        });
        collect(res, segs)
    }

    #[test]
    fn ipv4_byte_exact() {
        // 25 bytes at MSS 10: payloads 10, 10, 5.
        let f = guest_v4(25);
        let segs = run(&f, 10, 34);
        assert_eq!(segs.len(), 3);
        // (total length, id, ip checksum, seq, flags, tcp checksum, payload start)
        let expect: [(u16, u16, u16, u32, u8, u16, u8); 3] = [
            (50, 0xABCD, 0x02D1, 0x01020304, 0x90, 0x425A, 0),
            (50, 0xABCE, 0x02D0, 0x0102030E, 0x10, 0x109E, 10),
            (45, 0xABCF, 0x02D4, 0x01020318, 0x19, 0x14AF, 20),
        ];
        for (s, &(tl, id, ipc, seq, flags, tc, p0)) in segs.iter().zip(&expect) {
            assert_eq!(s.len(), 14 + usize::from(tl));
            assert_eq!(&s[..14], &f[..14]);
            assert_eq!(u16::from_be_bytes([s[16], s[17]]), tl);
            assert_eq!(u16::from_be_bytes([s[18], s[19]]), id);
            assert_eq!(&s[20..24], &[0x40, 0x00, 0x40, 0x06]);
            assert_eq!(
                u16::from_be_bytes([s[24], s[25]]),
                ipc,
                "ip csum of id {id:#x}"
            );
            assert_eq!(&s[26..34], &f[26..34]);
            assert_eq!(&s[34..38], &[0x9C, 0x40, 0x14, 0x51]);
            assert_eq!(u32::from_be_bytes([s[38], s[39], s[40], s[41]]), seq);
            assert_eq!(&s[42..46], &[0x0A, 0x0B, 0x0C, 0x0D]);
            assert_eq!(s[46], 0x50);
            assert_eq!(s[47], flags);
            assert_eq!(&s[48..50], &[0x02, 0x00]);
            assert_eq!(
                u16::from_be_bytes([s[50], s[51]]),
                tc,
                "tcp csum of seq {seq:#x}"
            );
            assert_eq!(&s[52..54], &[0, 0]);
            assert_eq!(s[54], p0);
            assert_eq!(verify_ipv4_header_checksum(s), Ok(true));
            assert_eq!(verify_l4_checksum(s), Ok(ChecksumStatus::Valid));
        }
    }

    fn guest_v6(payload_len: usize, with_ext: bool) -> Vec<u8> {
        let src: Ipv6Addr = "2001:2::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:2::2".parse().unwrap();
        let mut f = std::vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xDD];
        f.extend_from_slice(&[
            0x60,
            0x00,
            0x00,
            0x00,
            0x00,
            0x00,
            if with_ext { 60 } else { 6 },
            64,
        ]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        if with_ext {
            f.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        }
        f.extend_from_slice(&[
            0x9C, 0x40, 0x14, 0x51, 0xFF, 0xFF, 0xFF, 0xFA, 0, 0, 0, 1, 0x50, 0x18, 0x01, 0x00, 0,
            0, 0, 0,
        ]);
        let t = f.len() - 20;
        let seed = fold(pseudo_header_v6(src, dst, 6, 0));
        f[t + 16..t + 18].copy_from_slice(&seed.to_be_bytes());
        f.extend((0..payload_len).map(|i| (i * 7) as u8));
        f
    }

    #[test]
    fn ipv6_byte_exact() {
        // 12 bytes at MSS 8: seq wraps past 2^32.
        let f = guest_v6(12, false);
        let segs = run(&f, 8, 54);
        assert_eq!(segs.len(), 2);
        let expect: [(u16, u32, u8, u16); 2] = [
            (28, 0xFFFFFFFA, 0x10, 0x69C6),
            (24, 0x00000002, 0x18, 0x3F9F),
        ];
        for (s, &(pl, seq, flags, tc)) in segs.iter().zip(&expect) {
            assert_eq!(s.len(), 54 + usize::from(pl));
            assert_eq!(&s[..18], &f[..18]);
            assert_eq!(u16::from_be_bytes([s[18], s[19]]), pl);
            assert_eq!(&s[20..54], &f[20..54]);
            assert_eq!(u32::from_be_bytes([s[58], s[59], s[60], s[61]]), seq);
            assert_eq!(s[67], flags);
            assert_eq!(
                u16::from_be_bytes([s[70], s[71]]),
                tc,
                "tcp csum of seq {seq:#x}"
            );
            assert_eq!(verify_l4_checksum(s), Ok(ChecksumStatus::Valid));
        }
        assert_eq!(&segs[1][74..], &f[82..]);
    }

    #[test]
    fn ipv6_extension_headers_are_copied() {
        let f = guest_v6(20, true);
        let segs = run(&f, 16, 62);
        assert_eq!(segs.len(), 2);
        for s in &segs {
            assert_eq!(&s[54..62], &[6, 0, 1, 4, 0, 0, 0, 0]);
            let info = parse_frame(s).unwrap();
            assert_eq!(info.l4_offset, Some(62));
            assert_eq!(verify_l4_checksum(s), Ok(ChecksumStatus::Valid));
        }
        assert_eq!(u16::from_be_bytes([segs[0][18], segs[0][19]]), 8 + 20 + 16);
        assert_eq!(u16::from_be_bytes([segs[1][18], segs[1][19]]), 8 + 20 + 4);
    }

    #[test]
    fn normal_frame_is_accepted_too() {
        // Lengths set and checksums garbage: the same segments come out.
        let guest = guest_v4(25);
        let mut normal = guest.clone();
        normal[16..18].copy_from_slice(&(20u16 + 20 + 25).to_be_bytes());
        normal[24] = 0x12;
        normal[50] = 0x34;
        assert_eq!(run(&guest, 10, 34), run(&normal, 10, 34));
        // And the GSO flavour finds the offset itself.
        let mut segs = Vec::new();
        let mut scratch = [0u8; 128];
        segment_gso(&normal, 10, &mut scratch, &mut |s: &[u8]| {
            segs.push(s.to_vec())
        })
        .unwrap();
        assert_eq!(segs, run(&guest, 10, 34));
    }

    #[test]
    fn single_segment_and_empty_payload() {
        let f = guest_v4(5);
        let segs = run(&f, 1460, 34);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0][47], 0x99, "one segment keeps CWR, PSH and FIN");
        let f = guest_v4(0);
        let segs = run(&f, 1460, 34);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].len(), 54);
        assert_eq!(verify_l4_checksum(&segs[0]), Ok(ChecksumStatus::Valid));
    }

    #[test]
    fn limits_and_errors() {
        let mut scratch = [0u8; 2048];
        let mut sink = |_: &[u8]| panic!("nothing may be emitted");
        let f = guest_v4(10);
        assert_eq!(
            segment(&f, 0, 34, &mut scratch, &mut sink),
            Err(LsoError::ZeroMss)
        );
        assert_eq!(
            segment(&f, 4, 38, &mut scratch, &mut sink),
            Err(LsoError::TcpOffsetMismatch {
                given: 38,
                parsed: 34
            })
        );
        assert_eq!(
            segment(&f, 100, 34, &mut scratch[..60], &mut sink),
            Err(LsoError::BufferTooSmall {
                needed: 64,
                available: 60
            })
        );
        let big = guest_v4(MAX_LSO_PAYLOAD + 1);
        assert_eq!(
            segment(&big, 1460, 34, &mut scratch, &mut sink),
            Err(LsoError::PayloadTooLarge {
                payload_len: 62781,
                limit: 62780
            })
        );
        let ok = guest_v4(MAX_LSO_PAYLOAD);
        let mut n = 0;
        let mut total = 0;
        segment(&ok, 1460, 34, &mut scratch, &mut |s: &[u8]| {
            n += 1;
            total += s.len() - 54;
        })
        .unwrap();
        assert_eq!((n, total), (43, MAX_LSO_PAYLOAD));
        let mut udp = guest_v4(10);
        udp[23] = 17;
        assert!(matches!(
            segment(&udp, 4, 34, &mut scratch, &mut sink),
            Err(LsoError::Parse(_)) | Err(LsoError::NotTcp { .. })
        ));
        let mut frag = guest_v4(10);
        frag[20] = 0x20;
        assert_eq!(
            segment(&frag, 4, 34, &mut scratch, &mut sink),
            Err(LsoError::Fragmented)
        );
        let plan = LsoPlan::new(&f, 4, 34).unwrap();
        assert_eq!(plan.segment_count(), 3);
        assert_eq!(
            plan.write_segment(3, &mut scratch),
            Err(LsoError::SegmentIndex { index: 3, count: 3 })
        );
        assert_eq!(plan.segment_len(2), 56);
    }

    #[test]
    fn ipv4_id_wraps() {
        let mut f = guest_v4(4);
        f[18] = 0xFF;
        f[19] = 0xFF;
        let segs = run(&f, 2, 34);
        assert_eq!(&segs[0][18..20], &[0xFF, 0xFF]);
        assert_eq!(&segs[1][18..20], &[0x00, 0x00]);
    }
}
