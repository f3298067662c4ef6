//! [`RndisMessage`]: a validated RNDIS message, parsed at the boundary and emitted from the
//! same form (PROTOCOL.md §6, hardening §14).
//!
//! [`RndisMessage::parse`] takes the *range* the message arrived in (a transfer-page range,
//! or the rest of a send-buffer stream), frames the message by `msg_len`, and checks every
//! offset: QUERY/SET information inside the message with `info_offset ≥ 20`, QUERY_C
//! information inside `msg_len − 8` with `info_offset ≥ 16`, INDICATE_STATUS buffer inside
//! the **range** (old vSwitches leave it out of `msg_len`) with `buf_offset ≥ 12`.
//! [`RndisMessage::emit`] writes the canonical layout: data right after the fixed fields,
//! offsets and lengths recomputed, `msg_len` exact.

use core::fmt;

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, IntoBytes};

use crate::control::*;
use crate::error::RndisError;
use crate::header::{self, HEADER_SIZE, MessageHeader};
use crate::packet::{self, RndisPacket};

/// One decoded field value, for the JSON trace writer (see [`RndisMessage::visit_fields`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// A number, rendered in decimal.
    U64(u64),
    /// A number best read in hex (OIDs, statuses, flags).
    Hex(u64),
    /// A symbolic name (OID, status, indication).
    Str(&'static str),
    /// Raw bytes, rendered as hex (information buffers).
    Bytes(&'a [u8]),
}

/// QUERY or SET: the fixed fields and the information buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OidRequest<'a> {
    /// `req_id`, `oid`, `info_len`, `info_offset`, `vc_handle` as received.
    pub fixed: InfoRequest,
    /// The information buffer (`info_len` bytes at `info_offset`).
    pub info: &'a [u8],
}

/// QUERY_C: the fixed fields and the information buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryComplete<'a> {
    /// `req_id`, `status`, `info_len`, `info_offset` as received.
    pub fixed: QueryCompleteFixed,
    /// The information buffer.
    pub info: &'a [u8],
}

/// INDICATE_STATUS: the fixed fields and the status buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndicateStatus<'a> {
    /// `status`, `buf_len`, `buf_offset` as received.
    pub fixed: IndicateStatusFixed,
    /// The status buffer (may lie beyond `msg_len`, inside the range).
    pub buf: &'a [u8],
}

impl IndicateStatus<'_> {
    /// For LINK_SPEED_CHANGE with a buffer of at least 4 bytes: the speed in 100 bit/s.
    pub fn link_speed(&self) -> Option<u32> {
        if self.fixed.status.get() != crate::status::LINK_SPEED_CHANGE {
            return None;
        }
        self.buf.first_chunk::<4>().map(|b| u32::from_le_bytes(*b))
    }
}

/// A parsed RNDIS message (PROTOCOL.md §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RndisMessage<'a> {
    /// 1 PACKET.
    Packet(RndisPacket<'a>),
    /// 2 INITIALIZE.
    Initialize(Initialize),
    /// 0x80000002 INIT_C.
    InitializeComplete(InitializeComplete),
    /// 3 HALT.
    Halt(RequestId),
    /// 4 QUERY.
    Query(OidRequest<'a>),
    /// 0x80000004 QUERY_C.
    QueryComplete(QueryComplete<'a>),
    /// 5 SET.
    Set(OidRequest<'a>),
    /// 0x80000005 SET_C.
    SetComplete(RequestComplete),
    /// 6 RESET.
    Reset(Reset),
    /// 0x80000006 RESET_C.
    ResetComplete(ResetComplete),
    /// 7 INDICATE_STATUS.
    IndicateStatus(IndicateStatus<'a>),
    /// 8 KEEPALIVE.
    Keepalive(RequestId),
    /// 0x80000008 KEEPALIVE_C.
    KeepaliveComplete(RequestComplete),
    /// 9 SET_EX: only the request id is decoded (the host answers NOT_SUPPORTED).
    SetEx {
        /// The request id (body @0).
        req_id: u32,
        /// The whole body, request id included.
        body: &'a [u8],
    },
    /// Any other type.
    Unknown {
        /// The message type.
        msg_type: u32,
        /// The body (`msg_len − 8` bytes).
        body: &'a [u8],
    },
}

fn fixed<T: FromBytes>(msg_type: u32, message: &[u8]) -> Result<T, RndisError> {
    message
        .get(HEADER_SIZE..)
        .and_then(|b| T::read_from_prefix(b).ok())
        .map(|(v, _)| v)
        .ok_or(RndisError::MessageTooShort {
            msg_type,
            msg_len: message.len(),
            min: HEADER_SIZE + size_of::<T>(),
        })
}

/// The `len` bytes at `offset` of `body`, with `offset ≥ min` unless `len` is 0.
fn buffer(
    msg_type: u32,
    body: &[u8],
    offset: u32,
    len: u32,
    min: u32,
) -> Result<&[u8], RndisError> {
    if len == 0 {
        return Ok(&[]);
    }
    if offset < min {
        return Err(RndisError::InfoOffsetTooSmall {
            msg_type,
            offset,
            min,
        });
    }
    (offset as usize)
        .checked_add(len as usize)
        .and_then(|end| body.get(offset as usize..end))
        .ok_or(RndisError::InfoOutOfBounds {
            msg_type,
            offset,
            len,
            available: body.len(),
        })
}

impl<'a> RndisMessage<'a> {
    /// Validates the message at the start of `range` (see the module doc for the rules).
    pub fn parse(range: &'a [u8]) -> Result<RndisMessage<'a>, RndisError> {
        let (t, message) = header::split_message(range)?;
        let body = &message[HEADER_SIZE..];
        use RndisMessage as M;
        Ok(match t {
            header::PACKET => M::Packet(packet::parse_packet_message(message)?),
            header::INITIALIZE => M::Initialize(fixed(t, message)?),
            header::INITIALIZE_COMPLETE => M::InitializeComplete(fixed(t, message)?),
            header::HALT => M::Halt(fixed(t, message)?),
            header::QUERY | header::SET => {
                let f: InfoRequest = fixed(t, message)?;
                let info = buffer(
                    t,
                    body,
                    f.info_offset.get(),
                    f.info_len.get(),
                    INFO_REQUEST_DATA_OFFSET,
                )?;
                let req = OidRequest { fixed: f, info };
                if t == header::QUERY {
                    M::Query(req)
                } else {
                    M::Set(req)
                }
            }
            header::QUERY_COMPLETE => {
                let f: QueryCompleteFixed = fixed(t, message)?;
                let info = buffer(
                    t,
                    body,
                    f.info_offset.get(),
                    f.info_len.get(),
                    QUERY_COMPLETE_DATA_OFFSET,
                )?;
                M::QueryComplete(QueryComplete { fixed: f, info })
            }
            header::SET_COMPLETE => M::SetComplete(fixed(t, message)?),
            header::RESET => M::Reset(fixed(t, message)?),
            header::RESET_COMPLETE => M::ResetComplete(fixed(t, message)?),
            header::INDICATE_STATUS => {
                let f: IndicateStatusFixed = fixed(t, message)?;
                // The buffer may lie beyond msg_len but must be inside the range.
                let range_body = &range[HEADER_SIZE..];
                let buf = buffer(
                    t,
                    range_body,
                    f.buf_offset.get(),
                    f.buf_len.get(),
                    INDICATE_STATUS_DATA_OFFSET,
                )?;
                M::IndicateStatus(IndicateStatus { fixed: f, buf })
            }
            header::KEEPALIVE => M::Keepalive(fixed(t, message)?),
            header::KEEPALIVE_COMPLETE => M::KeepaliveComplete(fixed(t, message)?),
            header::SET_EX => {
                let f: RequestId = fixed(t, message)?;
                M::SetEx {
                    req_id: f.req_id.get(),
                    body,
                }
            }
            msg_type => M::Unknown { msg_type, body },
        })
    }

    /// QUERY for `oid` with `info` (Linux: empty, or the object header for objects), in the
    /// canonical layout (the constructors below set lengths and offsets as `emit` writes
    /// them, so a constructed message equals its parsed bytes).
    pub fn query(req_id: u32, oid: u32, info: &'a [u8]) -> RndisMessage<'a> {
        RndisMessage::Query(OidRequest {
            fixed: info_request(req_id, oid, info),
            info,
        })
    }

    /// SET of `oid` to `info`.
    pub fn set(req_id: u32, oid: u32, info: &'a [u8]) -> RndisMessage<'a> {
        RndisMessage::Set(OidRequest {
            fixed: info_request(req_id, oid, info),
            info,
        })
    }

    /// QUERY_C with `status` and `info`.
    pub fn query_complete(req_id: u32, status: u32, info: &'a [u8]) -> RndisMessage<'a> {
        RndisMessage::QueryComplete(QueryComplete {
            fixed: QueryCompleteFixed {
                req_id: U32::new(req_id),
                status: U32::new(status),
                info_len: U32::new(info.len() as u32),
                info_offset: U32::new(QUERY_COMPLETE_DATA_OFFSET),
            },
            info,
        })
    }

    /// SET_C with `status`.
    pub fn set_complete(req_id: u32, status: u32) -> RndisMessage<'a> {
        RndisMessage::SetComplete(RequestComplete {
            req_id: U32::new(req_id),
            status: U32::new(status),
        })
    }

    /// KEEPALIVE.
    pub fn keepalive(req_id: u32) -> RndisMessage<'a> {
        RndisMessage::Keepalive(RequestId {
            req_id: U32::new(req_id),
        })
    }

    /// KEEPALIVE_C with `status`.
    pub fn keepalive_complete(req_id: u32, status: u32) -> RndisMessage<'a> {
        RndisMessage::KeepaliveComplete(RequestComplete {
            req_id: U32::new(req_id),
            status: U32::new(status),
        })
    }

    /// HALT.
    pub fn halt(req_id: u32) -> RndisMessage<'a> {
        RndisMessage::Halt(RequestId {
            req_id: U32::new(req_id),
        })
    }

    /// INDICATE_STATUS of `status` with `buf` (e.g. the u32 speed of LINK_SPEED_CHANGE).
    pub fn indicate_status(status: u32, buf: &'a [u8]) -> RndisMessage<'a> {
        RndisMessage::IndicateStatus(IndicateStatus {
            fixed: IndicateStatusFixed {
                status: U32::new(status),
                buf_len: U32::new(buf.len() as u32),
                buf_offset: U32::new(INDICATE_STATUS_DATA_OFFSET),
            },
            buf,
        })
    }

    /// The message type number.
    pub fn msg_type(&self) -> u32 {
        use RndisMessage as M;
        match self {
            M::Packet(_) => header::PACKET,
            M::Initialize(_) => header::INITIALIZE,
            M::InitializeComplete(_) => header::INITIALIZE_COMPLETE,
            M::Halt(_) => header::HALT,
            M::Query(_) => header::QUERY,
            M::QueryComplete(_) => header::QUERY_COMPLETE,
            M::Set(_) => header::SET,
            M::SetComplete(_) => header::SET_COMPLETE,
            M::Reset(_) => header::RESET,
            M::ResetComplete(_) => header::RESET_COMPLETE,
            M::IndicateStatus(_) => header::INDICATE_STATUS,
            M::Keepalive(_) => header::KEEPALIVE,
            M::KeepaliveComplete(_) => header::KEEPALIVE_COMPLETE,
            M::SetEx { .. } => header::SET_EX,
            M::Unknown { msg_type, .. } => *msg_type,
        }
    }

    /// The message's name as PROTOCOL.md writes it (`"INITIALIZE"`, `"INIT_C"`, `"QUERY"`,
    /// `"PACKET"`, …; `"UNKNOWN"` for other types).
    pub fn name(&self) -> &'static str {
        header::message_type_name(self.msg_type()).unwrap_or("UNKNOWN")
    }

    /// The request id, for messages that have one.
    pub fn req_id(&self) -> Option<u32> {
        use RndisMessage as M;
        Some(match self {
            M::Initialize(m) => m.req_id.get(),
            M::InitializeComplete(m) => m.req_id.get(),
            M::Halt(m) | M::Keepalive(m) => m.req_id.get(),
            M::Query(m) | M::Set(m) => m.fixed.req_id.get(),
            M::QueryComplete(m) => m.fixed.req_id.get(),
            M::SetComplete(m) | M::KeepaliveComplete(m) => m.req_id.get(),
            M::SetEx { req_id, .. } => *req_id,
            M::Packet(_)
            | M::Reset(_)
            | M::ResetComplete(_)
            | M::IndicateStatus(_)
            | M::Unknown { .. } => {
                return None;
            }
        })
    }

    /// Calls `k` with the fixed body bytes (canonical offsets and lengths) and the data
    /// that follows them. Not used for PACKET, which emits itself.
    fn with_parts<R>(&self, k: impl FnOnce(&[u8], &[u8]) -> R) -> R {
        use RndisMessage as M;
        match self {
            M::Packet(_) => k(&[], &[]),
            M::Initialize(m) => k(m.as_bytes(), &[]),
            M::InitializeComplete(m) => k(m.as_bytes(), &[]),
            M::Halt(m) | M::Keepalive(m) => k(m.as_bytes(), &[]),
            M::Query(m) | M::Set(m) => {
                let mut f = m.fixed;
                f.info_len = U32::new(m.info.len() as u32);
                f.info_offset = U32::new(INFO_REQUEST_DATA_OFFSET);
                k(f.as_bytes(), m.info)
            }
            M::QueryComplete(m) => {
                let mut f = m.fixed;
                f.info_len = U32::new(m.info.len() as u32);
                f.info_offset = U32::new(QUERY_COMPLETE_DATA_OFFSET);
                k(f.as_bytes(), m.info)
            }
            M::SetComplete(m) | M::KeepaliveComplete(m) => k(m.as_bytes(), &[]),
            M::Reset(m) => k(m.as_bytes(), &[]),
            M::ResetComplete(m) => k(m.as_bytes(), &[]),
            M::IndicateStatus(m) => {
                let mut f = m.fixed;
                f.buf_len = U32::new(m.buf.len() as u32);
                f.buf_offset = U32::new(INDICATE_STATUS_DATA_OFFSET);
                k(f.as_bytes(), m.buf)
            }
            M::SetEx { body, .. } | M::Unknown { body, .. } => k(&[], body),
        }
    }

    /// Size of the message [`RndisMessage::emit`] writes.
    pub fn emitted_len(&self) -> usize {
        match self {
            RndisMessage::Packet(p) => p.emitted_len(),
            _ => self.with_parts(|fixed, data| HEADER_SIZE + fixed.len() + data.len()),
        }
    }

    /// Writes the message in canonical form at the start of `buf`; returns `msg_len`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, RndisError> {
        if let RndisMessage::Packet(p) = self {
            return p.emit(buf);
        }
        let len = self.emitted_len();
        if u32::try_from(len).is_err() {
            return Err(RndisError::TooLong {
                what: "RNDIS message",
                len,
            });
        }
        let Some(out) = buf.get_mut(..len) else {
            return Err(RndisError::BufferTooSmall {
                what: "RNDIS message",
                needed: len,
                available: buf.len(),
            });
        };
        out[..HEADER_SIZE]
            .copy_from_slice(MessageHeader::new(self.msg_type(), len as u32).as_bytes());
        self.with_parts(|fixed, data| {
            out[HEADER_SIZE..HEADER_SIZE + fixed.len()].copy_from_slice(fixed);
            out[HEADER_SIZE + fixed.len()..].copy_from_slice(data);
        });
        Ok(len)
    }

    /// Calls `f` with each decoded field (name, value) in wire order, for the trace writer.
    /// OIDs and statuses come with an `oid_name` / `status_name` when known; a 4-byte
    /// information buffer is also given as `value`. A PACKET shows its body fields, the
    /// decoded PPIs and `frame_len`, not the frame.
    pub fn visit_fields<'s>(&'s self, f: &mut dyn FnMut(&'static str, FieldValue<'s>)) {
        use FieldValue::{Bytes, Hex, Str, U64 as N};
        use RndisMessage as M;
        let status = |f: &mut dyn FnMut(&'static str, FieldValue<'s>), s: u32| {
            f("status", Hex(s.into()));
            if let Some(name) = crate::status::name(s) {
                f("status_name", Str(name));
            }
        };
        let data =
            |f: &mut dyn FnMut(&'static str, FieldValue<'s>), key: &'static str, d: &'s [u8]| {
                f(key, Bytes(d));
                if let Some(v) = d.first_chunk::<4>().filter(|_| d.len() == 4) {
                    f("value", N(u32::from_le_bytes(*v).into()));
                }
            };
        match self {
            M::Packet(p) => {
                f("data_offset", N(p.body.data_offset.get().into()));
                f("data_len", N(p.body.data_len.get().into()));
                f("ppi_offset", N(p.body.ppi_offset.get().into()));
                f("ppi_len", N(p.body.ppi_len.get().into()));
                let i = &p.info;
                for (key, v) in [
                    ("checksum_info", i.checksum),
                    ("lso_info", i.lso),
                    ("vlan_info", i.vlan),
                    ("hash_value", i.hash_value),
                    ("hash_info", i.hash_info),
                    (
                        "pktinfo_id",
                        i.pktinfo_id.map(crate::ppi::PktInfoId::to_u32),
                    ),
                ] {
                    if let Some(v) = v {
                        f(key, Hex(v.into()));
                    }
                }
                f("frame_len", N(p.frame.len() as u64));
            }
            M::Initialize(m) => {
                f("req_id", N(m.req_id.get().into()));
                f("major", N(m.major.get().into()));
                f("minor", N(m.minor.get().into()));
                f("max_xfer", Hex(m.max_xfer.get().into()));
            }
            M::InitializeComplete(m) => {
                f("req_id", N(m.req_id.get().into()));
                status(f, m.status.get());
                f("major", N(m.major.get().into()));
                f("minor", N(m.minor.get().into()));
                f("dev_flags", Hex(m.dev_flags.get().into()));
                f("medium", N(m.medium.get().into()));
                f("max_pkt_per_msg", N(m.max_pkt_per_msg.get().into()));
                f("max_xfer", Hex(m.max_xfer.get().into()));
                f("pkt_align_factor", N(m.pkt_align_factor.get().into()));
                f("af_list_offset", N(m.af_list_offset.get().into()));
                f("af_list_size", N(m.af_list_size.get().into()));
            }
            M::Halt(m) | M::Keepalive(m) => f("req_id", N(m.req_id.get().into())),
            M::Query(m) | M::Set(m) => {
                f("req_id", N(m.fixed.req_id.get().into()));
                let oid = m.fixed.oid.get();
                f("oid", Hex(oid.into()));
                if let Some(name) = crate::oid::name(oid) {
                    f("oid_name", Str(name));
                }
                f("info_len", N(m.fixed.info_len.get().into()));
                f("info_offset", N(m.fixed.info_offset.get().into()));
                f("vc_handle", N(m.fixed.vc_handle.get().into()));
                data(f, "info", m.info);
            }
            M::QueryComplete(m) => {
                f("req_id", N(m.fixed.req_id.get().into()));
                status(f, m.fixed.status.get());
                f("info_len", N(m.fixed.info_len.get().into()));
                f("info_offset", N(m.fixed.info_offset.get().into()));
                data(f, "info", m.info);
            }
            M::SetComplete(m) | M::KeepaliveComplete(m) => {
                f("req_id", N(m.req_id.get().into()));
                status(f, m.status.get());
            }
            M::Reset(m) => f("reserved", N(m.reserved.get().into())),
            M::ResetComplete(m) => {
                status(f, m.status.get());
                f("addressing_reset", N(m.addressing_reset.get().into()));
            }
            M::IndicateStatus(m) => {
                status(f, m.fixed.status.get());
                f("buf_len", N(m.fixed.buf_len.get().into()));
                f("buf_offset", N(m.fixed.buf_offset.get().into()));
                data(f, "buf", m.buf);
            }
            M::SetEx { req_id, body } => {
                f("req_id", N((*req_id).into()));
                f("body", Bytes(body));
            }
            M::Unknown { msg_type, body } => {
                f("msg_type", Hex((*msg_type).into()));
                f("body", Bytes(body));
            }
        }
    }
}

fn info_request(req_id: u32, oid: u32, info: &[u8]) -> InfoRequest {
    InfoRequest {
        req_id: U32::new(req_id),
        oid: U32::new(oid),
        info_len: U32::new(info.len() as u32),
        info_offset: U32::new(INFO_REQUEST_DATA_OFFSET),
        vc_handle: U32::ZERO,
    }
}

impl fmt::Display for RndisMessage<'_> {
    /// `NAME field=value …`, a one-line summary for logs.
    fn fmt(&self, fm: &mut fmt::Formatter<'_>) -> fmt::Result {
        fm.write_str(self.name())?;
        let mut result = Ok(());
        self.visit_fields(&mut |name, value| {
            if result.is_ok() {
                result = match value {
                    FieldValue::U64(v) => write!(fm, " {name}={v}"),
                    FieldValue::Hex(v) => write!(fm, " {name}={v:#x}"),
                    FieldValue::Str(s) => write!(fm, " {name}={s}"),
                    FieldValue::Bytes(b) => write!(fm, " {name}=[{} bytes]", b.len()),
                };
            }
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{oid, status};
    use proptest::prelude::*;

    /// Parses `bytes`, compares with `want`, and checks `emit` gives `bytes` back.
    fn check(bytes: &[u8], want: RndisMessage<'_>) {
        let m = RndisMessage::parse(bytes).unwrap();
        assert_eq!(m, want);
        let mut buf = [0xAAu8; 256];
        assert_eq!(m.emit(&mut buf), Ok(bytes.len()));
        assert_eq!(&buf[..bytes.len()], bytes);
        assert_eq!(m.emitted_len(), bytes.len());
    }

    #[test]
    fn initialize() {
        let b = [
            2, 0, 0, 0, 24, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0,
        ];
        let m = RndisMessage::Initialize(Initialize::linux(1));
        check(&b, m);
        assert_eq!(m.name(), "INITIALIZE");
        assert_eq!(m.req_id(), Some(1));
        assert!(matches!(
            RndisMessage::parse(&[
                2, 0, 0, 0, 23, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0
            ]),
            Err(RndisError::MessageTooShort {
                msg_type: 2,
                msg_len: 23,
                min: 24
            })
        ));
    }

    #[test]
    fn init_complete() {
        let b = [
            2, 0, 0, 0x80, 52, 0, 0, 0, // header
            1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, // req_id, status, 1.0
            1, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, // flags, medium, max_pkt_per_msg
            0xff, 0xff, 0xff, 0xef, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // max_xfer, align, af
        ];
        let m = RndisMessage::InitializeComplete(InitializeComplete::host(1));
        check(&b, m);
        assert_eq!(m.name(), "INIT_C");
    }

    #[test]
    fn halt_keepalive() {
        check(
            &[3, 0, 0, 0, 12, 0, 0, 0, 9, 0, 0, 0],
            RndisMessage::halt(9),
        );
        check(
            &[8, 0, 0, 0, 12, 0, 0, 0, 9, 0, 0, 0],
            RndisMessage::keepalive(9),
        );
        let m = RndisMessage::keepalive_complete(9, 0);
        check(&[8, 0, 0, 0x80, 16, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0], m);
        assert_eq!(m.name(), "KEEPALIVE_C");
        assert_eq!(RndisMessage::halt(1).name(), "HALT");
    }

    #[test]
    fn query() {
        // Frame-size query: no data, info_offset 20.
        let b = [
            4, 0, 0, 0, 28, 0, 0, 0, 2, 0, 0, 0, 0x06, 0x01, 0x01, 0x00, 0, 0, 0, 0, 20, 0, 0, 0,
            0, 0, 0, 0,
        ];
        let m = RndisMessage::query(2, oid::GEN_MAXIMUM_FRAME_SIZE, &[]);
        check(&b, m);
        assert_eq!(m.name(), "QUERY");
        // RSS capabilities query with its 18-byte object.
        let mut b = vec![
            4, 0, 0, 0, 46, 0, 0, 0, 3, 0, 0, 0, 0x03, 0x02, 0x01, 0x00, 18, 0, 0, 0, 20, 0, 0, 0,
            0, 0, 0, 0,
        ];
        b.extend_from_slice(&[0x88, 2, 18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let obj = &b[28..];
        check(
            &b,
            RndisMessage::query(3, oid::GEN_RECEIVE_SCALE_CAPABILITIES, obj),
        );
    }

    #[test]
    fn query_complete() {
        let b = [
            4, 0, 0, 0x80, 28, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 16, 0, 0, 0, 0xdc,
            0x05, 0, 0,
        ];
        let m = RndisMessage::query_complete(2, status::SUCCESS, &[0xdc, 0x05, 0, 0]);
        check(&b, m);
        assert_eq!(m.name(), "QUERY_C");
        let mut fields = Vec::new();
        m.visit_fields(&mut |k, v| fields.push((k, v)));
        assert!(fields.contains(&("value", FieldValue::U64(1500))));
        assert!(fields.contains(&("status_name", FieldValue::Str("SUCCESS"))));
        // NOT_SUPPORTED, no data.
        let b = [
            4, 0, 0, 0x80, 24, 0, 0, 0, 5, 0, 0, 0, 0xbb, 0, 0, 0xc0, 0, 0, 0, 0, 16, 0, 0, 0,
        ];
        check(
            &b,
            RndisMessage::query_complete(5, status::NOT_SUPPORTED, &[]),
        );
    }

    #[test]
    fn set_and_complete() {
        let b = [
            5, 0, 0, 0, 32, 0, 0, 0, 7, 0, 0, 0, 0x0e, 0x01, 0x01, 0x00, 4, 0, 0, 0, 20, 0, 0, 0,
            0, 0, 0, 0, 0x0d, 0, 0, 0,
        ];
        let filter = oid::packet_filter::LINUX_OPEN.to_le_bytes();
        let m = RndisMessage::set(7, oid::GEN_CURRENT_PACKET_FILTER, &filter);
        check(&b, m);
        assert_eq!(m.name(), "SET");
        assert_eq!(
            m.to_string(),
            "SET req_id=7 oid=0x1010e oid_name=GEN_CURRENT_PACKET_FILTER info_len=4 info_offset=20 vc_handle=0 \
             info=[4 bytes] value=13"
        );
        let b = [5, 0, 0, 0x80, 16, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0];
        let m = RndisMessage::set_complete(7, 0);
        check(&b, m);
        assert_eq!(m.name(), "SET_C");
    }

    #[test]
    fn reset() {
        let m = RndisMessage::Reset(Reset {
            reserved: U32::ZERO,
        });
        check(&[6, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0], m);
        assert_eq!(m.name(), "RESET");
        assert_eq!(m.req_id(), None);
        let m = RndisMessage::ResetComplete(ResetComplete {
            status: U32::ZERO,
            addressing_reset: U32::new(1),
        });
        check(&[6, 0, 0, 0x80, 16, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], m);
        assert_eq!(m.name(), "RESET_C");
    }

    #[test]
    fn indicate_status() {
        let b = [
            7, 0, 0, 0, 20, 0, 0, 0, 0x0b, 0, 0x01, 0x40, 0, 0, 0, 0, 12, 0, 0, 0,
        ];
        let m = RndisMessage::indicate_status(status::MEDIA_CONNECT, &[]);
        check(&b, m);
        assert_eq!(m.name(), "INDICATE_STATUS");
        let speed = 100_000_000u32.to_le_bytes(); // 10 Gbit/s in 100 bit/s
        let b = [
            7, 0, 0, 0, 24, 0, 0, 0, 0x13, 0, 0x01, 0x40, 4, 0, 0, 0, 12, 0, 0, 0, 0x00, 0xe1,
            0xf5, 0x05,
        ];
        let m = RndisMessage::indicate_status(status::LINK_SPEED_CHANGE, &speed);
        check(&b, m);
        let RndisMessage::IndicateStatus(s) = m else {
            panic!()
        };
        assert_eq!(s.link_speed(), Some(100_000_000));
        // Old vSwitch: msg_len 20 leaves the buffer out, but the range holds it.
        let mut old = b;
        old[4] = 20;
        let RndisMessage::IndicateStatus(s) = RndisMessage::parse(&old).unwrap() else {
            panic!()
        };
        assert_eq!(s.link_speed(), Some(100_000_000));
        // Buffer beyond the range.
        assert!(matches!(
            RndisMessage::parse(&old[..23]),
            Err(RndisError::InfoOutOfBounds { .. })
        ));
        // buf_offset below 12.
        let mut m = b;
        m[16] = 8;
        assert_eq!(
            RndisMessage::parse(&m),
            Err(RndisError::InfoOffsetTooSmall {
                msg_type: header::INDICATE_STATUS,
                offset: 8,
                min: 12
            })
        );
    }

    #[test]
    fn set_ex_and_unknown() {
        let b = [9, 0, 0, 0, 16, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4];
        let m = RndisMessage::parse(&b).unwrap();
        assert_eq!(
            m,
            RndisMessage::SetEx {
                req_id: 4,
                body: &b[8..]
            }
        );
        assert_eq!(m.name(), "SET_EX");
        assert_eq!(m.req_id(), Some(4));
        check(&b, m);
        let b = [0x42, 0, 0, 0, 10, 0, 0, 0, 1, 2];
        let m = RndisMessage::parse(&b).unwrap();
        assert_eq!(
            m,
            RndisMessage::Unknown {
                msg_type: 0x42,
                body: &[1, 2]
            }
        );
        assert_eq!(m.name(), "UNKNOWN");
        check(&b, m);
    }

    #[test]
    fn packet_via_message() {
        let mut buf = [0u8; 64];
        let n =
            crate::emit_packet(&mut buf, &crate::PacketInfo::default(), &[1, 2, 3, 4], 0).unwrap();
        let m = RndisMessage::parse(&buf[..n]).unwrap();
        assert_eq!(m.name(), "PACKET");
        let RndisMessage::Packet(p) = m else { panic!() };
        assert_eq!(p.frame, &[1, 2, 3, 4]);
        check(&buf[..n], m);
    }

    #[test]
    fn info_buffer_rules() {
        let good = [
            5, 0, 0, 0, 32, 0, 0, 0, 7, 0, 0, 0, 0x0e, 0x01, 0x01, 0x00, 4, 0, 0, 0, 20, 0, 0, 0,
            0, 0, 0, 0, 0x0d, 0, 0, 0,
        ];
        // info_offset 16 < 20.
        let mut m = good;
        m[20] = 16;
        assert_eq!(
            RndisMessage::parse(&m),
            Err(RndisError::InfoOffsetTooSmall {
                msg_type: header::SET,
                offset: 16,
                min: 20
            })
        );
        // Data beyond msg_len (even though the range is longer).
        let mut long = good.to_vec();
        long[4] = 31;
        long.push(0);
        assert!(matches!(
            RndisMessage::parse(&long),
            Err(RndisError::InfoOutOfBounds { .. })
        ));
        // Huge info_len.
        let mut m = good;
        m[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            RndisMessage::parse(&m),
            Err(RndisError::InfoOutOfBounds { .. })
        ));
        // A longer range is fine; trailing bytes are not part of the message.
        let mut long = good.to_vec();
        long.extend_from_slice(&[0xee; 8]);
        assert_eq!(RndisMessage::parse(&long), RndisMessage::parse(&good));
        // QUERY_C info_offset < 16.
        let b = [
            4, 0, 0, 0x80, 28, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 12, 0, 0, 0, 0xdc,
            0x05, 0, 0,
        ];
        assert!(matches!(
            RndisMessage::parse(&b),
            Err(RndisError::InfoOffsetTooSmall { min: 16, .. })
        ));
        // Zero-length info: offset not checked.
        let b = [
            4, 0, 0, 0x80, 24, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert!(RndisMessage::parse(&b).is_ok());
    }

    #[test]
    fn emit_errors() {
        let m = RndisMessage::keepalive(1);
        assert_eq!(
            m.emit(&mut [0u8; 11]),
            Err(RndisError::BufferTooSmall {
                what: "RNDIS message",
                needed: 12,
                available: 11
            })
        );
    }

    fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
        let types = prop_oneof![0u32..10, (1u32..9).prop_map(|t| t | 0x8000_0000)];
        (
            types,
            proptest::collection::vec(any::<u8>(), 0..150),
            any::<u8>(),
            8u8..160,
        )
            .prop_map(|(t, mut rest, extra, len)| {
                let mut v = t.to_le_bytes().to_vec();
                v.extend_from_slice(&u32::from(len).to_le_bytes());
                v.append(&mut rest);
                v.resize(v.len().max(usize::from(len)) + usize::from(extra % 8), 0);
                v
            })
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(m) = RndisMessage::parse(&bytes) {
                m.visit_fields(&mut |_, _| {});
                let _ = m.name();
            }
        }

        #[test]
        fn emit_is_canonical(bytes in message_bytes()) {
            if let Ok(m) = RndisMessage::parse(&bytes) {
                let mut buf = [0u8; 400];
                let n = m.emit(&mut buf).unwrap();
                let again = RndisMessage::parse(&buf[..n]).unwrap();
                prop_assert_eq!(again.msg_type(), m.msg_type());
                prop_assert_eq!(again.req_id(), m.req_id());
                let mut buf2 = [0u8; 400];
                let n2 = again.emit(&mut buf2).unwrap();
                prop_assert_eq!(&buf[..n], &buf2[..n2]);
            }
        }
    }
}
