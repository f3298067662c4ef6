//! Receive coalescing (GRO / RSC, PROTOCOL.md §10): consecutive in-order TCP segments of
//! one flow merged into one large frame.
//!
//! [`Coalescer::push`] takes frames one at a time. A TCP segment that can extend the
//! pending run is appended to it; anything else first flushes the pending run, then either
//! starts a new run or is passed straight through. A run holds segments of one flow (same
//! L2 header, same IP header apart from length/id/checksum, same ports, ACK number, window,
//! data offset and options), each with flags ACK or ACK|PSH, payload ≥ 1 byte, consecutive
//! sequence numbers, IPv4 ids +1 apart (or all equal with DF set), not fragmented; every
//! segment but the last carries exactly the first one's payload length (so the run can be
//! re-segmented at that MSS), and PSH or a shorter segment ends it. A run is also flushed
//! when the next segment would take it past the configured IP length or segment count.
//!
//! **Ordering:** frames leave in exactly the order they arrived; a merged frame stands in
//! the place of its first segment, and its segments were consecutive in the input. So no
//! frame, of one flow or across flows, is ever reordered.
//!
//! The engine does not allocate per packet: runs are built in one reassembly buffer,
//! allocated once by [`Coalescer::new`] (feature `alloc`) or supplied by the caller
//! ([`Coalescer::with_buffer`]).

use crate::checksum::{ChecksumStatus, fill_ipv4_header_checksum_at, verify_l4_checksum_parsed};
use crate::frame::{FrameInfo, L3, L4, parse_frame, tcp_flags};
use crate::lso::fill_tcp_checksum;
use crate::wire::{self, ipv4, ipv6, set_be16, set_u8, tcp};

/// Largest L2 header the engine copies: Ethernet plus one VLAN tag.
pub const MAX_L2_HEADER: usize = wire::eth::HEADER_LEN + wire::vlan::TAG_LEN;

/// The reassembly buffer size needed for the default 65535-byte IP limit.
pub const BUFFER_LEN: usize = MAX_L2_HEADER + 65535;

/// Most segments in one run by default (vmswitch RSC: 562 pieces).
pub const DEFAULT_MAX_SEGMENTS: u16 = 562;

/// What happens to the TCP checksum of a merged frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpChecksumMode {
    /// Recompute it over the merged segment (GRO towards a stack that checks it).
    Recompute,
    /// Leave the first segment's value: the RSC host reports it as validated but stale.
    LeaveStale,
}

/// Limits and behaviour of a [`Coalescer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoalesceConfig {
    /// Largest IP packet (IPv4 total length, or 40 + IPv6 payload length) a run may grow
    /// to; at most 65535.
    pub max_ip_len: u16,
    /// Most segments in one run; at least 1.
    pub max_segments: u16,
    /// The merged frame's TCP checksum.
    pub tcp_checksum: TcpChecksumMode,
    /// Verify each segment's IPv4 header and TCP checksums and never merge one that fails
    /// (it is passed through alone). Turn off only when the caller verified already.
    pub verify_checksums: bool,
}

impl Default for CoalesceConfig {
    /// 65535 bytes, 562 segments, recomputed checksum, segments verified.
    fn default() -> Self {
        Self {
            max_ip_len: u16::MAX,
            max_segments: DEFAULT_MAX_SEGMENTS,
            tcp_checksum: TcpChecksumMode::Recompute,
            verify_checksums: true,
        }
    }
}

/// Why a coalescer could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoalesceError {
    /// The buffer is smaller than [`MAX_L2_HEADER`] + `max_ip_len`.
    #[error("reassembly buffer of {available} bytes is below the {needed} needed")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// `max_segments` is 0.
    #[error("max_segments is 0")]
    ZeroMaxSegments,
    /// `max_ip_len` cannot hold even a minimal TCP segment.
    #[error("max_ip_len {max_ip_len} is below 41 bytes")]
    MaxIpLenTooSmall {
        /// The configured value.
        max_ip_len: u16,
    },
}

/// One frame handed out by a [`Coalescer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoalescedFrame<'a> {
    /// The frame: a merged run, or one input frame unchanged (Ethernet padding included).
    pub frame: &'a [u8],
    /// Segments merged into it (1 for a frame passed through or a run of one).
    pub segments: u16,
    /// Payload length of the first segment, the run's MSS (a `vnet_hdr` `gso_size`; every
    /// segment but the last had exactly this much). 0 for a frame that could not take part
    /// in a run (not TCP, flags other than ACK/ACK|PSH, no payload, bad checksum, ...).
    pub mss: u16,
    /// True when the TCP checksum field was left stale ([`TcpChecksumMode::LeaveStale`] and
    /// more than one segment); the data was verified if `verify_checksums` is on.
    pub tcp_checksum_stale: bool,
}

/// How the IPv4 ids of a run advance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IdMode {
    /// IPv6, or only one IPv4 segment so far.
    Unknown,
    /// +1 per segment.
    Incrementing,
    /// All equal, DF set.
    Fixed,
}

/// The pending run in the buffer.
#[derive(Clone, Copy, Debug)]
struct Run {
    /// Bytes of the buffer in use: the whole first frame while `segments` is 1, else the
    /// headers plus the merged payload (no padding).
    len: usize,
    /// Length of the first frame's IP packet end (headers + first payload).
    first_ip_end: usize,
    l3_offset: usize,
    /// The first segment's network layer (addresses for the pseudo-header).
    l3: L3,
    tcp_offset: usize,
    payload_offset: usize,
    is_v4: bool,
    ipv4_header_len: usize,
    dont_fragment: bool,
    segments: u16,
    mss: u16,
    next_seq: u32,
    last_id: u16,
    id_mode: IdMode,
    psh: bool,
    /// PSH or a segment shorter than `mss` was appended: nothing may follow.
    closed: bool,
}

/// The coalescing engine. `B` is the reassembly buffer.
#[derive(Debug)]
pub struct Coalescer<B> {
    buf: B,
    config: CoalesceConfig,
    run: Option<Run>,
}

#[cfg(feature = "alloc")]
impl Coalescer<alloc::boxed::Box<[u8]>> {
    /// A coalescer with its own reassembly buffer, sized for `config`.
    pub fn new(config: CoalesceConfig) -> Result<Self, CoalesceError> {
        let buf =
            alloc::vec![0u8; MAX_L2_HEADER + usize::from(config.max_ip_len)].into_boxed_slice();
        Self::with_buffer(buf, config)
    }
}

/// A segment as seen by `push`: its parse plus the derived offsets.
struct Segment {
    info: FrameInfo,
    tcp_offset: usize,
    payload_offset: usize,
    payload_len: usize,
    seq: u32,
    flags: u8,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Coalescer<B> {
    /// A coalescer building runs in `buf`, which must hold [`MAX_L2_HEADER`] +
    /// `config.max_ip_len` bytes.
    pub fn with_buffer(buf: B, config: CoalesceConfig) -> Result<Self, CoalesceError> {
        if config.max_segments == 0 {
            return Err(CoalesceError::ZeroMaxSegments);
        }
        if config.max_ip_len < 41 {
            return Err(CoalesceError::MaxIpLenTooSmall {
                max_ip_len: config.max_ip_len,
            });
        }
        let needed = MAX_L2_HEADER + usize::from(config.max_ip_len);
        let available = buf.as_ref().len();
        if available < needed {
            return Err(CoalesceError::BufferTooSmall { needed, available });
        }
        Ok(Self {
            buf,
            config,
            run: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CoalesceConfig {
        &self.config
    }

    /// Segments in the pending run (0 if none).
    pub fn pending_segments(&self) -> u16 {
        self.run.map_or(0, |r| r.segments)
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.run.is_none()
    }

    /// Takes one frame; whatever is complete goes to `out`, in input order.
    pub fn push(&mut self, frame: &[u8], out: &mut impl FnMut(CoalescedFrame<'_>)) {
        let Some(seg) = self.eligible(frame) else {
            self.flush(out);
            out(CoalescedFrame {
                frame,
                segments: 1,
                mss: 0,
                tcp_checksum_stale: false,
            });
            return;
        };
        if self.run.is_some() && self.try_append(frame, &seg) {
            if self.run_is_closed() {
                self.flush(out);
            }
            return;
        }
        self.flush(out);
        let mss = seg.payload_len as u16;
        let ends_run = seg.flags & tcp_flags::PSH != 0 || self.config.max_segments == 1;
        if ends_run || !self.start(frame, &seg) {
            out(CoalescedFrame {
                frame,
                segments: 1,
                mss,
                tcp_checksum_stale: false,
            });
        }
    }

    /// Hands out the pending run, if any.
    pub fn flush(&mut self, out: &mut impl FnMut(CoalescedFrame<'_>)) {
        let Some(run) = self.run.take() else { return };
        let stale = run.segments > 1 && self.config.tcp_checksum == TcpChecksumMode::LeaveStale;
        let buf = self.buf.as_mut();
        let Some(frame) = buf.get_mut(..run.len) else {
            return;
        };
        if run.segments > 1 {
            let l3 = run.l3_offset;
            if run.is_v4 {
                set_be16(frame, l3, ipv4::TOTAL_LEN, (run.len - l3) as u16);
                fill_ipv4_header_checksum_at(frame, l3, l3 + run.ipv4_header_len);
            } else {
                set_be16(
                    frame,
                    l3,
                    ipv6::PAYLOAD_LEN,
                    (run.len - l3 - ipv6::HEADER_LEN) as u16,
                );
            }
            if run.psh {
                let flags = frame.get(run.tcp_offset + tcp::FLAGS).copied().unwrap_or(0);
                set_u8(frame, run.tcp_offset, tcp::FLAGS, flags | tcp_flags::PSH);
            }
            if !stale {
                fill_tcp_checksum(frame, &run.l3, run.tcp_offset);
            }
        }
        out(CoalescedFrame {
            frame,
            segments: run.segments,
            mss: run.mss,
            tcp_checksum_stale: stale,
        });
    }

    /// Parses `frame` and decides whether it may take part in a run at all.
    fn eligible(&self, frame: &[u8]) -> Option<Segment> {
        let info = parse_frame(frame).ok()?;
        if info.l3.is_fragment() {
            return None;
        }
        let L4::Tcp {
            header_len,
            seq,
            flags,
            ..
        } = info.l4
        else {
            return None;
        };
        let tcp_offset = info.l4_offset?;
        if flags != tcp_flags::ACK && flags != tcp_flags::ACK | tcp_flags::PSH {
            return None;
        }
        let payload_offset = tcp_offset + usize::from(header_len);
        let payload_len = info.ip_end.checked_sub(payload_offset)?;
        if payload_len == 0 || payload_len > usize::from(u16::MAX) {
            return None;
        }
        let ip_len = info.ip_end - info.l3_offset;
        if ip_len > usize::from(self.config.max_ip_len) || info.l3_offset > MAX_L2_HEADER {
            return None;
        }
        if self.config.verify_checksums {
            if let L3::Ipv4 { header_len, .. } = info.l3 {
                let h = frame.get(info.l3_offset..info.l3_offset + usize::from(header_len))?;
                if crate::checksum::fold(crate::checksum::sum(h, 0)) != 0xFFFF {
                    return None;
                }
            }
            if verify_l4_checksum_parsed(frame, &info).ok()? != ChecksumStatus::Valid {
                return None;
            }
        }
        Some(Segment {
            info,
            tcp_offset,
            payload_offset,
            payload_len,
            seq,
            flags,
        })
    }

    /// Copies `frame` into the buffer as the first segment of a new run.
    fn start(&mut self, frame: &[u8], seg: &Segment) -> bool {
        let buf = self.buf.as_mut();
        let Some(dst) = buf.get_mut(..frame.len()) else {
            return false;
        };
        dst.copy_from_slice(frame);
        let (is_v4, ipv4_header_len, id, dont_fragment) = match seg.info.l3 {
            L3::Ipv4 {
                header_len,
                id,
                dont_fragment,
                ..
            } => (true, usize::from(header_len), id, dont_fragment),
            _ => (false, 0, 0, false),
        };
        self.run = Some(Run {
            len: frame.len(),
            first_ip_end: seg.info.ip_end,
            l3_offset: seg.info.l3_offset,
            l3: seg.info.l3,
            tcp_offset: seg.tcp_offset,
            payload_offset: seg.payload_offset,
            is_v4,
            ipv4_header_len,
            dont_fragment,
            segments: 1,
            mss: seg.payload_len as u16,
            next_seq: seg.seq.wrapping_add(seg.payload_len as u32),
            last_id: id,
            id_mode: IdMode::Unknown,
            psh: false,
            closed: false,
        });
        true
    }

    /// True once the run cannot take another segment.
    fn run_is_closed(&self) -> bool {
        self.run
            .is_none_or(|r| r.closed || r.segments >= self.config.max_segments)
    }

    /// Appends `frame` to the pending run if it continues it.
    fn try_append(&mut self, frame: &[u8], seg: &Segment) -> bool {
        let Some(mut run) = self.run else {
            return false;
        };
        let buf = self.buf.as_mut();
        // Same layout.
        if seg.info.l3_offset != run.l3_offset
            || seg.tcp_offset != run.tcp_offset
            || seg.payload_offset != run.payload_offset
            || matches!(seg.info.l3, L3::Ipv4 { .. }) != run.is_v4
        {
            return false;
        }
        if run.closed || seg.payload_len > usize::from(run.mss) || seg.seq != run.next_seq {
            return false;
        }
        let merged_ip_end = current_ip_end(&run) + seg.payload_len;
        if merged_ip_end - run.l3_offset > usize::from(self.config.max_ip_len)
            || run.segments >= self.config.max_segments
            || merged_ip_end > buf.len()
        {
            return false;
        }
        // Headers equal where they must be.
        let l3 = run.l3_offset;
        let same = |r: core::ops::Range<usize>| {
            frame
                .get(r.clone())
                .is_some_and(|a| buf.get(r).is_some_and(|b| a == b))
        };
        if !same(0..l3) {
            return false;
        }
        let t = run.tcp_offset;
        let mut id_mode = run.id_mode;
        let mut new_id = 0;
        if run.is_v4 {
            // Everything but total length, id and checksum: TOS, flags/fragment, TTL,
            // protocol, addresses, options.
            if !same(l3..l3 + ipv4::TOTAL_LEN.start)
                || !same(l3 + ipv4::FLAGS_FRAG.start..l3 + ipv4::CHECKSUM.start)
                || !same(l3 + ipv4::CHECKSUM.end..t)
            {
                return false;
            }
            new_id = match seg.info.l3 {
                L3::Ipv4 { id, .. } => id,
                _ => return false,
            };
            let next = new_id == run.last_id.wrapping_add(1);
            let fixed = new_id == run.last_id && run.dont_fragment;
            id_mode = match (run.id_mode, next, fixed) {
                (IdMode::Unknown | IdMode::Incrementing, true, _) => IdMode::Incrementing,
                (IdMode::Unknown | IdMode::Fixed, _, true) => IdMode::Fixed,
                _ => return false,
            };
        } else if !same(l3..l3 + ipv6::PAYLOAD_LEN.start) || !same(l3 + ipv6::PAYLOAD_LEN.end..t) {
            // Version, traffic class, flow label, next header, hop limit, addresses and
            // extension headers.
            return false;
        }
        // TCP: ports, ACK, data offset, window, urgent pointer, options; flags differ only
        // in PSH (the run's are ACK).
        if !same(t + tcp::SRC_PORT.start..t + tcp::DST_PORT.end)
            || !same(t + tcp::ACK.start..t + tcp::FLAGS)
            || !same(t + tcp::WINDOW.start..t + tcp::WINDOW.end)
            || !same(t + tcp::URGENT.start..run.payload_offset)
        {
            return false;
        }
        // Append the payload.
        let Some(payload) = frame.get(seg.payload_offset..seg.payload_offset + seg.payload_len)
        else {
            return false;
        };
        let at = current_ip_end(&run);
        let Some(dst) = buf.get_mut(at..at + seg.payload_len) else {
            return false;
        };
        dst.copy_from_slice(payload);
        run.len = at + seg.payload_len;
        run.segments += 1;
        run.next_seq = seg.seq.wrapping_add(seg.payload_len as u32);
        run.last_id = new_id;
        run.id_mode = id_mode;
        run.psh = seg.flags & tcp_flags::PSH != 0;
        // After a short segment the run could no longer be re-segmented at `mss`.
        run.closed = run.psh || seg.payload_len < usize::from(run.mss);
        self.run = Some(run);
        true
    }
}

/// End of the run's IP packet in the buffer (the first frame's padding excluded).
fn current_ip_end(run: &Run) -> usize {
    if run.segments == 1 {
        run.first_ip_end
    } else {
        run.len
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::checksum::{fill_ipv4_header_checksum, fill_l4_checksum, verify_l4_checksum};
    use std::vec::Vec;

    const ACK: u8 = tcp_flags::ACK;
    const PSH: u8 = tcp_flags::PSH;

    /// 198.18.0.1:40000 → 198.18.0.2:5201, ack 7, window 512, DF, TTL 64; checksums filled.
    fn seg4(seq: u32, id: u16, flags: u8, payload: &[u8], opts: &[u8]) -> Vec<u8> {
        let mut f = std::vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        let total = (20 + 20 + opts.len() + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
        f.extend_from_slice(&[0x9C, 0x40, 0x14, 0x51]);
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&[
            0,
            0,
            0,
            7,
            ((20 + opts.len()) / 4 * 16) as u8,
            flags,
            0x02,
            0x00,
            0,
            0,
            0,
            0,
        ]);
        f.extend_from_slice(opts);
        f.extend_from_slice(payload);
        fill_ipv4_header_checksum(&mut f).unwrap();
        fill_l4_checksum(&mut f).unwrap();
        f
    }

    fn seg6(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = std::vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xDD];
        f.extend_from_slice(&[0x60, 0x0A, 0xBC, 0xDE]);
        f.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[6, 64]);
        f.extend_from_slice(&"2001:2::1".parse::<core::net::Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&"2001:2::2".parse::<core::net::Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&[0x9C, 0x40, 0x14, 0x51]);
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 7, 0x50, flags, 0x02, 0x00, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        fill_l4_checksum(&mut f).unwrap();
        f
    }

    #[derive(Debug, PartialEq)]
    struct Out {
        frame: Vec<u8>,
        segments: u16,
        mss: u16,
        stale: bool,
    }

    fn feed(config: CoalesceConfig, frames: &[Vec<u8>]) -> Vec<Out> {
        let mut c = Coalescer::new(config).unwrap();
        let mut outs = Vec::new();
        let mut sink = |f: CoalescedFrame<'_>| {
            outs.push(Out {
                frame: f.frame.to_vec(),
                segments: f.segments,
                mss: f.mss,
                stale: f.tcp_checksum_stale,
            })
        };
        for f in frames {
            c.push(f, &mut sink);
        }
        c.flush(&mut sink);
        assert!(c.is_empty());
        outs
    }

    fn payload(range: core::ops::Range<u8>) -> Vec<u8> {
        range.collect()
    }

    #[test]
    fn three_segments_byte_exact() {
        let frames = [
            seg4(1000, 0x1000, ACK, &payload(0..10), &[]),
            seg4(1010, 0x1001, ACK, &payload(10..20), &[]),
            seg4(1020, 0x1002, ACK | PSH, &payload(20..25), &[]),
        ];
        let outs = feed(CoalesceConfig::default(), &frames);
        assert_eq!(outs.len(), 1);
        let o = &outs[0];
        assert_eq!((o.segments, o.mss, o.stale), (3, 10, false));
        let mut expected = std::vec![
            0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00, // Ethernet
            0x45, 0x00, 0x00, 65, 0x10, 0x00, 0x40, 0x00, 64, 6, 0x9e, 0x8f, 198, 18, 0, 1, 198,
            18, 0, 2, // IPv4
            0x9C, 0x40, 0x14, 0x51, 0, 0, 0x03, 0xE8, 0, 0, 0, 7, 0x50, 0x18, 0x02, 0x00, 0xd0,
            0x7a, 0, 0, // TCP
        ];
        expected.extend(0..25u8);
        assert_eq!(o.frame, expected);
    }

    #[test]
    fn stale_checksum_mode() {
        let frames = [
            seg4(1000, 0x1000, ACK, &payload(0..10), &[]),
            seg4(1010, 0x1001, ACK, &payload(10..20), &[]),
        ];
        let config = CoalesceConfig {
            tcp_checksum: TcpChecksumMode::LeaveStale,
            ..CoalesceConfig::default()
        };
        let outs = feed(config, &frames);
        assert_eq!(outs.len(), 1);
        assert!(outs[0].stale);
        assert_eq!(
            &outs[0].frame[50..52],
            &frames[0][50..52],
            "first segment's checksum kept"
        );
        assert!(crate::checksum::verify_ipv4_header_checksum(&outs[0].frame).unwrap());
    }

    #[test]
    fn single_segment_passes_unchanged_with_padding() {
        let mut f = seg4(1, 1, ACK, &[0xEE], &[]);
        f.resize(60, 0);
        let outs = feed(CoalesceConfig::default(), core::slice::from_ref(&f));
        assert_eq!(
            outs,
            [Out {
                frame: f.clone(),
                segments: 1,
                mss: 1,
                stale: false
            }]
        );
        // And padding is dropped when a second segment joins.
        let g = seg4(2, 2, ACK, &[0xEF], &[]);
        let outs = feed(CoalesceConfig::default(), &[f, g]);
        assert_eq!(outs.len(), 1);
        assert_eq!(outs[0].frame.len(), 56);
        assert_eq!(&outs[0].frame[54..], &[0xEE, 0xEF]);
        assert_eq!(
            verify_l4_checksum(&outs[0].frame),
            Ok(ChecksumStatus::Valid)
        );
    }

    #[test]
    fn breaks_keep_order() {
        let arp = {
            let mut a = std::vec![0u8; 60];
            a[12] = 0x08;
            a[13] = 0x06;
            a
        };
        let p = payload(0..8);
        let frames = [
            seg4(0, 10, ACK, &p, &[]),
            seg4(8, 11, ACK, &p, &[]),
            arp.clone(), // non-TCP: flush, pass through
            seg4(16, 12, ACK, &p, &[]),
            seg4(100, 13, ACK, &p, &[]),                  // out of order
            seg4(108, 14, ACK | tcp_flags::FIN, &p, &[]), // FIN: not coalescible
            seg4(116, 15, ACK, &p, &[]),
            seg4(124, 17, ACK, &p, &[]), // id jump, no DF-fixed: break
            seg4(132, 18, ACK, &p, &[1, 1, 1, 1]), // options change
        ];
        let outs = feed(CoalesceConfig::default(), &frames);
        let shape: Vec<(u16, usize)> = outs.iter().map(|o| (o.segments, o.frame.len())).collect();
        assert_eq!(
            shape,
            [
                (2, 70),
                (1, 60),
                (1, 62),
                (1, 62),
                (1, 62),
                (1, 62),
                (1, 62),
                (1, 66)
            ]
        );
        assert_eq!(outs[1].frame, arp);
        assert_eq!(outs[2].frame, frames[3]);
        assert_eq!(outs[5].frame, frames[6]);
    }

    #[test]
    fn psh_and_short_segment_end_a_run() {
        let frames = [
            seg4(0, 1, ACK, &payload(0..8), &[]),
            seg4(8, 2, ACK, &payload(0..4), &[]), // short: run ends here
            seg4(12, 3, ACK, &payload(0..8), &[]),
            seg4(20, 4, ACK | PSH, &payload(0..8), &[]),
            seg4(28, 5, ACK, &payload(0..9), &[]),
            seg4(37, 6, ACK, &payload(0..10), &[]), // longer than the run's MSS: new run
        ];
        let outs = feed(CoalesceConfig::default(), &frames);
        let shape: Vec<(u16, u16)> = outs.iter().map(|o| (o.segments, o.mss)).collect();
        assert_eq!(shape, [(2, 8), (2, 8), (1, 9), (1, 10)]);
        assert_eq!(outs[1].frame[47], ACK | PSH);
    }

    #[test]
    fn fixed_id_with_df() {
        let p = payload(0..8);
        let frames = [
            seg4(0, 0, ACK, &p, &[]),
            seg4(8, 0, ACK, &p, &[]),
            seg4(16, 0, ACK, &p, &[]),
        ];
        assert_eq!(feed(CoalesceConfig::default(), &frames).len(), 1);
        // Without DF, an unchanged id is a break.
        let mut frames = frames;
        for f in &mut frames {
            f[20] = 0;
            fill_ipv4_header_checksum(f).unwrap();
        }
        assert_eq!(feed(CoalesceConfig::default(), &frames).len(), 3);
        // Mixed: incrementing then fixed is a break.
        let frames = [
            seg4(0, 5, ACK, &p, &[]),
            seg4(8, 6, ACK, &p, &[]),
            seg4(16, 6, ACK, &p, &[]),
        ];
        let outs = feed(CoalesceConfig::default(), &frames);
        assert_eq!(outs.iter().map(|o| o.segments).collect::<Vec<_>>(), [2, 1]);
    }

    #[test]
    fn limits() {
        let p = payload(0..100);
        let frames: Vec<Vec<u8>> = (0..10)
            .map(|i| seg4(i * 100, i as u16, ACK, &p, &[]))
            .collect();
        let config = CoalesceConfig {
            max_segments: 4,
            ..CoalesceConfig::default()
        };
        let outs = feed(config, &frames);
        assert_eq!(
            outs.iter().map(|o| o.segments).collect::<Vec<_>>(),
            [4, 4, 2]
        );
        // 40 bytes of headers + 3 × 100 fit in 340, a fourth does not.
        let config = CoalesceConfig {
            max_ip_len: 340,
            ..CoalesceConfig::default()
        };
        let outs = feed(config, &frames);
        assert_eq!(
            outs.iter().map(|o| o.segments).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        assert!(outs.iter().all(|o| o.frame.len() <= 14 + 340));
        assert_eq!(
            Coalescer::with_buffer([0u8; 100], CoalesceConfig::default()).err(),
            Some(CoalesceError::BufferTooSmall {
                needed: BUFFER_LEN,
                available: 100
            })
        );
        let config = CoalesceConfig {
            max_segments: 0,
            ..CoalesceConfig::default()
        };
        assert_eq!(
            Coalescer::new(config).err(),
            Some(CoalesceError::ZeroMaxSegments)
        );
    }

    #[test]
    fn bad_checksum_is_not_merged() {
        let p = payload(0..8);
        let mut bad = seg4(8, 2, ACK, &p, &[]);
        bad[60] ^= 0x40;
        let frames = [
            seg4(0, 1, ACK, &p, &[]),
            bad.clone(),
            seg4(16, 3, ACK, &p, &[]),
        ];
        let outs = feed(CoalesceConfig::default(), &frames);
        assert_eq!(
            outs.iter().map(|o| o.segments).collect::<Vec<_>>(),
            [1, 1, 1]
        );
        assert_eq!(outs[1].frame, bad);
        assert_eq!(outs[1].mss, 0);
        // Unverified, it would merge.
        let config = CoalesceConfig {
            verify_checksums: false,
            ..CoalesceConfig::default()
        };
        assert_eq!(feed(config, &frames).len(), 1);
    }

    #[test]
    fn ipv6_merge() {
        let frames = [
            seg6(0xFFFF_FFF0, ACK, &payload(0..16)),
            seg6(0, ACK, &payload(16..32)),
            seg6(16, ACK, &payload(32..40)),
        ];
        let outs = feed(CoalesceConfig::default(), &frames);
        assert_eq!(outs.len(), 1);
        let f = &outs[0].frame;
        assert_eq!(u16::from_be_bytes([f[18], f[19]]), 20 + 40);
        assert_eq!(&f[74..], &payload(0..40)[..]);
        assert_eq!(verify_l4_checksum(f), Ok(ChecksumStatus::Valid));
        // Flow label differs: break.
        let mut other = seg6(0, ACK, &payload(16..32));
        other[17] ^= 1;
        fill_l4_checksum(&mut other).unwrap();
        let outs = feed(CoalesceConfig::default(), &[frames[0].clone(), other]);
        assert_eq!(outs.len(), 2);
    }

    #[test]
    fn caller_buffer_without_alloc_api() {
        let mut storage = [0u8; BUFFER_LEN];
        let mut c = Coalescer::with_buffer(&mut storage[..], CoalesceConfig::default()).unwrap();
        let mut n = 0;
        c.push(&seg4(0, 1, ACK, &[1; 8], &[]), &mut |_| n += 1);
        assert_eq!(c.pending_segments(), 1);
        c.push(&seg4(8, 2, ACK, &[2; 8], &[]), &mut |_| n += 1);
        assert_eq!(c.pending_segments(), 2);
        c.flush(&mut |f| {
            n += 1;
            assert_eq!(f.segments, 2);
        });
        assert_eq!(n, 1);
    }
}
