//! RNDIS PACKET messages: the data path both ways (PROTOCOL.md §6.3, §14).
//!
//! Layout written by both sides: header (8), body (36), PPIs at `ppi_offset = 36`, frame at
//! `data_offset = 36 + ppi_len`; `msg_len = 44 + ppi_len + data_len` (+ batch pad). Offsets
//! count from the body start. [`parse_packet`] applies every §14 check and returns the
//! frame slice and the decoded [`PacketInfo`]; [`emit_packet_header`] writes header, body
//! and PPIs, leaving the frame to the caller.

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::error::RndisError;
use crate::header::{self, HEADER_SIZE, MessageHeader};
use crate::ppi::PacketInfo;

/// Size of the PACKET body.
pub const PACKET_BODY_SIZE: usize = 36;

/// Smallest PACKET message: header + body.
pub const PACKET_MIN_MESSAGE_SIZE: usize = HEADER_SIZE + PACKET_BODY_SIZE;

/// Where both sides put the PPIs (from the body start).
pub const PPI_OFFSET: u32 = PACKET_BODY_SIZE as u32;

/// PACKET body (36).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PacketBody {
    /// @0: frame offset from the body start.
    pub data_offset: U32,
    /// @4: frame length.
    pub data_len: U32,
    /// @8: out-of-band data offset (0).
    pub oob_data_offset: U32,
    /// @12: out-of-band data length (0).
    pub oob_data_len: U32,
    /// @16: out-of-band element count (0).
    pub num_oob_data_elements: U32,
    /// @20: PPI area offset from the body start (36; 0 = no PPIs).
    pub ppi_offset: U32,
    /// @24: PPI area length.
    pub ppi_len: U32,
    /// @28: 0.
    pub vc_handle: U32,
    /// @32: 0.
    pub reserved: U32,
}
const _: () = assert!(size_of::<PacketBody>() == PACKET_BODY_SIZE);

/// A validated PACKET message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RndisPacket<'a> {
    /// The body as received.
    pub body: PacketBody,
    /// The PPI area (empty if none).
    pub ppis: &'a [u8],
    /// The Ethernet frame.
    pub frame: &'a [u8],
    /// The decoded PPIs.
    pub info: PacketInfo,
}

/// Validates the PACKET message at the start of `range` (PROTOCOL.md §14): `8 ≤ msg_len ≤
/// range`, message ≥ 44; `data_offset < msg_len − 8`, `data_len ≤ msg_len − 8 −
/// data_offset`; if there are PPIs (`ppi_offset ≠ 0` and `ppi_len ≠ 0`): `36 ≤ ppi_offset
/// ≤ msg_len − 8`, `12 ≤ ppi_len ≤ msg_len − 8 − ppi_offset`, and every entry valid.
/// In addition (hvnet): the frame is not empty and does not overlap the 36-byte body
/// (`data_offset ≥ 36`, `data_len ≥ 1`), so every accepted packet can be re-emitted.
pub fn parse_packet(range: &[u8]) -> Result<RndisPacket<'_>, RndisError> {
    let (msg_type, message) = header::split_message(range)?;
    if msg_type != header::PACKET {
        return Err(RndisError::UnexpectedType {
            msg_type,
            expected: header::PACKET,
        });
    }
    parse_packet_message(message)
}

/// [`parse_packet`] for a message already framed by [`header::split_message`].
pub(crate) fn parse_packet_message(message: &[u8]) -> Result<RndisPacket<'_>, RndisError> {
    let too_short = RndisError::MessageTooShort {
        msg_type: header::PACKET,
        msg_len: message.len(),
        min: PACKET_MIN_MESSAGE_SIZE,
    };
    let body_bytes = message.get(HEADER_SIZE..).ok_or(too_short)?;
    let (body, _) = PacketBody::read_from_prefix(body_bytes).map_err(|_| too_short)?;
    let avail = body_bytes.len();

    let (data_offset, data_len) = (body.data_offset.get(), body.data_len.get());
    let frame = (data_offset as usize)
        .checked_add(data_len as usize)
        .filter(|_| data_offset >= PPI_OFFSET && data_len > 0)
        .and_then(|end| body_bytes.get(data_offset as usize..end))
        .ok_or(RndisError::DataOutOfBounds {
            offset: data_offset,
            len: data_len,
            available: avail,
        })?;

    let (ppi_offset, ppi_len) = (body.ppi_offset.get(), body.ppi_len.get());
    let ppis: &[u8] = if ppi_offset == 0 || ppi_len == 0 {
        &[]
    } else {
        (ppi_offset as usize)
            .checked_add(ppi_len as usize)
            .filter(|_| ppi_offset >= PPI_OFFSET && ppi_len as usize >= crate::ppi::PPI_HEADER_SIZE)
            .and_then(|end| body_bytes.get(ppi_offset as usize..end))
            .ok_or(RndisError::PpiOutOfBounds {
                offset: ppi_offset,
                len: ppi_len,
                available: avail,
            })?
    };
    let info = PacketInfo::parse(ppis)?;
    Ok(RndisPacket {
        body,
        ppis,
        frame,
        info,
    })
}

/// Where a PACKET's parts go, from [`packet_layout`] / [`emit_packet_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketLayout {
    /// Bytes of header, body and PPIs: the frame goes at this offset from the message start.
    pub header_len: usize,
    /// The message length written in `msg_len`: header, frame and batch pad.
    pub msg_len: usize,
}

impl PacketLayout {
    /// The pad after the frame (zeros the caller must write).
    pub fn pad_len(&self, frame_len: usize) -> usize {
        self.msg_len - self.header_len - frame_len
    }
}

/// The layout of a PACKET with `info`'s PPIs and a `frame_len`-byte frame, its `msg_len`
/// rounded up to a multiple of `pad_to` (the batch alignment; 0 or 1 = no pad). An empty
/// frame can be written but is refused by [`parse_packet`].
pub fn packet_layout(
    info: &PacketInfo,
    frame_len: usize,
    pad_to: usize,
) -> Result<PacketLayout, RndisError> {
    let header_len = PACKET_MIN_MESSAGE_SIZE + info.ppi_len();
    let too_long = RndisError::TooLong {
        what: "RNDIS packet",
        len: frame_len,
    };
    let mut msg_len = header_len.checked_add(frame_len).ok_or(too_long)?;
    if pad_to > 1 {
        msg_len = msg_len.checked_next_multiple_of(pad_to).ok_or(too_long)?;
    }
    if u32::try_from(msg_len).is_err() {
        return Err(too_long);
    }
    Ok(PacketLayout {
        header_len,
        msg_len,
    })
}

/// Writes the header, body and PPIs of a PACKET (§6.3 layout: PPIs at 36, frame at
/// `36 + ppi_len`) at the start of `buf`. The caller then copies the frame at
/// `header_len` and zeroes the pad up to `msg_len` (or uses [`emit_packet`]).
pub fn emit_packet_header(
    buf: &mut [u8],
    info: &PacketInfo,
    frame_len: usize,
    pad_to: usize,
) -> Result<PacketLayout, RndisError> {
    let layout = packet_layout(info, frame_len, pad_to)?;
    let Some(out) = buf.get_mut(..layout.header_len) else {
        return Err(RndisError::BufferTooSmall {
            what: "RNDIS packet header",
            needed: layout.header_len,
            available: buf.len(),
        });
    };
    let ppi_len = layout.header_len - PACKET_MIN_MESSAGE_SIZE;
    write_header_and_body(out, layout.msg_len, frame_len, ppi_len, None);
    info.write_ppis(&mut out[PACKET_MIN_MESSAGE_SIZE..])?;
    Ok(layout)
}

/// Writes a whole PACKET (header, body, PPIs, frame, zero pad) and returns `msg_len`.
pub fn emit_packet(
    buf: &mut [u8],
    info: &PacketInfo,
    frame: &[u8],
    pad_to: usize,
) -> Result<usize, RndisError> {
    let layout = packet_layout(info, frame.len(), pad_to)?;
    if buf.len() < layout.msg_len {
        return Err(RndisError::BufferTooSmall {
            what: "RNDIS packet",
            needed: layout.msg_len,
            available: buf.len(),
        });
    }
    emit_packet_header(buf, info, frame.len(), pad_to)?;
    let end = layout.header_len + frame.len();
    buf[layout.header_len..end].copy_from_slice(frame);
    buf[end..layout.msg_len].fill(0);
    Ok(layout.msg_len)
}

/// Writes header and body with the canonical offsets; `template` supplies the OOB and
/// reserved fields of a re-emitted packet.
fn write_header_and_body(
    out: &mut [u8],
    msg_len: usize,
    frame_len: usize,
    ppi_len: usize,
    template: Option<&PacketBody>,
) {
    let mut body = template.copied().unwrap_or_else(PacketBody::new_zeroed);
    // All three fit u32: `msg_len` was checked and the others are smaller.
    body.data_offset = U32::new((PACKET_BODY_SIZE + ppi_len) as u32);
    body.data_len = U32::new(frame_len as u32);
    body.ppi_offset = U32::new(PPI_OFFSET);
    body.ppi_len = U32::new(ppi_len as u32);
    out[..HEADER_SIZE]
        .copy_from_slice(MessageHeader::new(header::PACKET, msg_len as u32).as_bytes());
    out[HEADER_SIZE..PACKET_MIN_MESSAGE_SIZE].copy_from_slice(body.as_bytes());
}

impl RndisPacket<'_> {
    /// Size of the message [`RndisPacket::emit`] writes.
    pub fn emitted_len(&self) -> usize {
        PACKET_MIN_MESSAGE_SIZE + self.ppis.len() + self.frame.len()
    }

    /// Re-emits the packet in the canonical layout with its PPI area copied as received
    /// (unknown PPIs included); returns the message length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, RndisError> {
        let len = self.emitted_len();
        if u32::try_from(len).is_err() {
            return Err(RndisError::TooLong {
                what: "RNDIS packet",
                len,
            });
        }
        let Some(out) = buf.get_mut(..len) else {
            return Err(RndisError::BufferTooSmall {
                what: "RNDIS packet",
                needed: len,
                available: buf.len(),
            });
        };
        write_header_and_body(
            out,
            len,
            self.frame.len(),
            self.ppis.len(),
            Some(&self.body),
        );
        let ppi_end = PACKET_MIN_MESSAGE_SIZE + self.ppis.len();
        out[PACKET_MIN_MESSAGE_SIZE..ppi_end].copy_from_slice(self.ppis);
        out[ppi_end..].copy_from_slice(self.frame);
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ppi::{PktInfoId, RxChecksumInfo, TxChecksumInfo, VlanInfo};

    /// A host→guest packet: checksum 0x28, VLAN 100, hash 0x12345678, 4-byte frame.
    const RX: [u8; 96] = [
        1, 0, 0, 0, 96, 0, 0, 0, // PACKET, msg_len 96
        84, 0, 0, 0, 4, 0, 0, 0, // data_offset 36 + 48, data_len 4
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // OOB
        36, 0, 0, 0, 48, 0, 0, 0, // ppi_offset, ppi_len
        0, 0, 0, 0, 0, 0, 0, 0, // vc_handle, reserved
        16, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 0x28, 0, 0, 0, // TCPIP_CHKSUM
        16, 0, 0, 0, 6, 0, 0, 0, 12, 0, 0, 0, 0x45, 0x06, 0, 0, // IEEE_8021Q
        16, 0, 0, 0, 8, 0, 0, 0, 12, 0, 0, 0, 0x78, 0x56, 0x34, 0x12, // NBL_HASH_VALUE
        0xde, 0xad, 0xbe, 0xef, // frame
    ];

    fn rx_info() -> PacketInfo {
        PacketInfo {
            checksum: Some(RxChecksumInfo::TCP_OK | RxChecksumInfo::IP_OK),
            vlan: Some(VlanInfo::new(100, 5, false).0),
            hash_value: Some(0x1234_5678),
            ..Default::default()
        }
    }

    #[test]
    fn parse_rx() {
        let p = parse_packet(&RX).unwrap();
        assert_eq!(p.frame, &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(p.info, rx_info());
        assert!(p.info.rx_checksum().unwrap().l4_verified());
        assert_eq!(p.info.vlan_info().unwrap().vlan_id(), 100);
        // A longer range (trailing bytes of the section) is fine.
        let mut long = RX.to_vec();
        long.extend_from_slice(&[0xff; 10]);
        assert_eq!(parse_packet(&long), Ok(p));
        // Re-emit gives the same bytes.
        let mut buf = [0u8; 128];
        assert_eq!(p.emit(&mut buf), Ok(96));
        assert_eq!(&buf[..96], &RX);
    }

    #[test]
    fn emit_rx() {
        let mut buf = [0xaau8; 128];
        assert_eq!(
            emit_packet(&mut buf, &rx_info(), &[0xde, 0xad, 0xbe, 0xef], 0),
            Ok(96)
        );
        assert_eq!(&buf[..96], &RX);
        let layout = emit_packet_header(&mut buf, &rx_info(), 4, 0).unwrap();
        assert_eq!(
            layout,
            PacketLayout {
                header_len: 92,
                msg_len: 96
            }
        );
    }

    #[test]
    fn emit_tx_padded() {
        // Guest TX: checksum request only, 3-byte frame, padded to 8 bytes.
        let info = PacketInfo {
            checksum: Some(TxChecksumInfo::new(false, false, 34).0),
            ..Default::default()
        };
        let mut buf = [0xaau8; 80];
        let n = emit_packet(&mut buf, &info, &[1, 2, 3], 8).unwrap();
        assert_eq!(n, 64);
        let want: [u8; 64] = [
            1, 0, 0, 0, 64, 0, 0, 0, // PACKET, msg_len 44 + 16 + 3 → 64
            52, 0, 0, 0, 3, 0, 0, 0, // data_offset 36 + 16, data_len 3
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // OOB
            36, 0, 0, 0, 16, 0, 0, 0, // ppi_offset, ppi_len
            0, 0, 0, 0, 0, 0, 0, 0, //
            16, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 0x05, 0, 0x22, 0, // checksum
            1, 2, 3, 0, // frame + pad
        ];
        assert_eq!(&buf[..64], &want);
        let p = parse_packet(&buf[..64]).unwrap();
        assert_eq!(p.frame, &[1, 2, 3]);
        assert_eq!(p.info.tx_checksum().unwrap().l4_header_offset(), 34);
    }

    #[test]
    fn no_ppis() {
        let bytes: [u8; 46] = [
            1, 0, 0, 0, 46, 0, 0, 0, 36, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            36, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 8,
        ];
        let p = parse_packet(&bytes).unwrap();
        assert_eq!(p.frame, &[7, 8]);
        assert_eq!(p.info, PacketInfo::default());
        let mut buf = [0u8; 46];
        assert_eq!(
            emit_packet(&mut buf, &PacketInfo::default(), &[7, 8], 1),
            Ok(46)
        );
        assert_eq!(buf, bytes);
        // ppi_offset 0 also means none.
        let mut b = bytes;
        b[28] = 0;
        b[32] = 16;
        assert!(parse_packet(&b).is_ok());
    }

    #[test]
    fn rsc_piece() {
        let info = PacketInfo {
            pktinfo_id: Some(PktInfoId::new(
                PktInfoId::SUBALLOC | PktInfoId::LAST_FRAG,
                9,
            )),
            ..Default::default()
        };
        let mut buf = [0u8; 128];
        let n = emit_packet(&mut buf, &info, &[0; 10], 0).unwrap();
        assert_eq!(
            &buf[44..60],
            &[16, 0, 0, 0, 1, 0, 0, 0x80, 12, 0, 0, 0, 1, 5, 9, 0]
        );
        assert_eq!(parse_packet(&buf[..n]).unwrap().info, info);
    }

    #[test]
    fn rejects() {
        // Range shorter than 44.
        assert!(matches!(
            parse_packet(&RX[..43]),
            Err(RndisError::BadMessageLength { .. })
        ));
        let mut m = RX;
        m[4] = 43;
        assert!(matches!(
            parse_packet(&m),
            Err(RndisError::MessageTooShort { min: 44, .. })
        ));
        // Not a packet.
        let mut m = RX;
        m[0] = 2;
        assert!(matches!(
            parse_packet(&m),
            Err(RndisError::UnexpectedType { msg_type: 2, .. })
        ));
        // Frame beyond msg_len.
        let mut m = RX;
        m[12] = 5;
        assert_eq!(
            parse_packet(&m),
            Err(RndisError::DataOutOfBounds {
                offset: 84,
                len: 5,
                available: 88
            })
        );
        // data_offset at the end.
        let mut m = RX;
        m[8] = 88;
        m[12] = 0;
        assert!(matches!(
            parse_packet(&m),
            Err(RndisError::DataOutOfBounds { .. })
        ));
        // Frame overlapping the body, empty frame.
        let mut m = RX;
        m[8] = 35;
        assert!(matches!(
            parse_packet(&m),
            Err(RndisError::DataOutOfBounds { offset: 35, .. })
        ));
        let mut m = RX;
        m[12] = 0;
        assert!(matches!(
            parse_packet(&m),
            Err(RndisError::DataOutOfBounds { len: 0, .. })
        ));
        // data_offset + data_len overflowing u32.
        let mut m = RX;
        m[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse_packet(&m),
            Err(RndisError::DataOutOfBounds { .. })
        ));
        // PPI area before 36, too small, beyond the message.
        for (off, len) in [(35u8, 48u8), (36, 11), (36, 53), (84, 8)] {
            let mut m = RX;
            m[28] = off;
            m[32] = len;
            assert!(
                matches!(
                    parse_packet(&m),
                    Err(RndisError::PpiOutOfBounds { .. } | RndisError::BadPpi { .. })
                ),
                "{off} {len}"
            );
        }
        // A zero-size PPI in the middle.
        let mut m = RX;
        m[60] = 0;
        assert!(matches!(
            parse_packet(&m),
            Err(RndisError::BadPpi {
                at: 16,
                size: 0,
                ..
            })
        ));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..160)) {
            let _ = parse_packet(&bytes);
        }

        #[test]
        fn mutated_packets_never_panic(idx in 0usize..96, val in proptest::num::u8::ANY) {
            let mut m = RX;
            m[idx] = val;
            if let Ok(p) = parse_packet(&m) {
                let mut buf = [0u8; 128];
                let n = p.emit(&mut buf).unwrap();
                proptest::prop_assert_eq!(parse_packet(&buf[..n]).map(|q| (q.frame, q.info)), Ok((p.frame, p.info)));
            }
        }

        #[test]
        fn emit_parse_round_trip(
            c in proptest::option::of(proptest::num::u32::ANY),
            l in proptest::option::of(proptest::num::u32::ANY),
            h in proptest::option::of(proptest::num::u32::ANY),
            frame in proptest::collection::vec(proptest::num::u8::ANY, 1..100),
            pad in 0usize..16,
        ) {
            let info = PacketInfo { checksum: c, lso: l, hash_value: h, ..Default::default() };
            let mut buf = [0u8; 256];
            let n = emit_packet(&mut buf, &info, &frame, pad).unwrap();
            if pad > 1 {
                proptest::prop_assert_eq!(n % pad, 0);
            }
            let p = parse_packet(&buf[..n]).unwrap();
            proptest::prop_assert_eq!(p.frame, &frame[..]);
            proptest::prop_assert_eq!(p.info, info);
        }
    }
}
