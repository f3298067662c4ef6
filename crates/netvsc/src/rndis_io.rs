//! The guest's RNDIS messages: requests it builds, host messages it classifies.
//!
//! Every host message is validated by the `rndis` crate's parsers (§14's rules) before
//! anything is read from it; a message that fails is counted and its transfer-page
//! packet completed with FAIL.

use vmbus::trace::{Dir, Tracer};
use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, IntoBytes};

use rndis::control::{
    InfoRequest, Initialize, InitializeComplete, QueryCompleteFixed, RequestComplete, RequestId,
};
use rndis::header::{self, MessageHeader};
use rndis::ppi::PacketInfo;

use crate::GuestError;

/// Room for an RNDIS PACKET header with every PPI the guest sends.
pub const MAX_PACKET_HEADER: usize = 128;

/// A host message, classified.
pub enum Incoming<'a> {
    /// A received frame.
    Packet(&'a [u8]),
    /// A reply to one of our requests (INIT_C, QUERY_C, SET_C, KEEPALIVE_C, RESET_C).
    Reply {
        /// The request id it answers.
        request_id: u32,
    },
    /// Media connect (true) or disconnect (false).
    Link(bool),
    /// The host asks whether we are alive.
    Keepalive {
        /// Its request id, to echo.
        request_id: u32,
    },
    /// A valid message the guest does not act on (other status indications).
    Ignored,
}

/// Validates and classifies one RNDIS message in a transfer-page range.
pub fn classify(range: &[u8]) -> Result<Incoming<'_>, GuestError> {
    let (msg_type, message) = header::split_message(range)?;
    let body = &message[header::HEADER_SIZE..];
    let req_id = || {
        RequestId::read_from_prefix(body)
            .map(|(r, _)| r.req_id.get())
            .map_err(|_| {
                GuestError::Protocol(format!("RNDIS message type {msg_type:#x} too short"))
            })
    };
    Ok(match msg_type {
        header::PACKET => Incoming::Packet(rndis::packet::parse_packet(range)?.frame),
        header::INITIALIZE_COMPLETE
        | header::QUERY_COMPLETE
        | header::SET_COMPLETE
        | header::KEEPALIVE_COMPLETE => Incoming::Reply {
            request_id: req_id()?,
        },
        header::KEEPALIVE => Incoming::Keepalive {
            request_id: req_id()?,
        },
        header::INDICATE_STATUS => {
            let (fixed, _) = rndis::control::IndicateStatusFixed::read_from_prefix(body)
                .map_err(|_| GuestError::Protocol("INDICATE_STATUS too short".into()))?;
            match fixed.status.get() {
                rndis::status::MEDIA_CONNECT => Incoming::Link(true),
                rndis::status::MEDIA_DISCONNECT => Incoming::Link(false),
                _ => Incoming::Ignored,
            }
        }
        other => {
            return Err(GuestError::Protocol(format!(
                "RNDIS message type {other:#x} not expected from the host"
            )));
        }
    })
}

fn message(msg_type: u32, body: &[u8], data: &[u8]) -> Vec<u8> {
    let len = header::HEADER_SIZE + body.len() + data.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(MessageHeader::new(msg_type, len as u32).as_bytes());
    m.extend_from_slice(body);
    m.extend_from_slice(data);
    m
}

/// INITIALIZE as Linux sends it (RNDIS 1.0, max transfer 0x4000).
pub fn initialize(request_id: u32) -> Vec<u8> {
    message(
        header::INITIALIZE,
        Initialize::linux(request_id).as_bytes(),
        &[],
    )
}

fn info_request(msg_type: u32, request_id: u32, oid: u32, data: &[u8]) -> Vec<u8> {
    let body = InfoRequest {
        req_id: U32::new(request_id),
        oid: U32::new(oid),
        info_len: U32::new(data.len() as u32),
        info_offset: U32::new(rndis::control::INFO_REQUEST_DATA_OFFSET),
        vc_handle: U32::ZERO,
    };
    message(msg_type, body.as_bytes(), data)
}

/// QUERY of `oid`, carrying `data` (usually zeros of the expected size).
pub fn query(request_id: u32, oid: u32, data: &[u8]) -> Vec<u8> {
    info_request(header::QUERY, request_id, oid, data)
}

/// SET of `oid` to `data`.
pub fn set(request_id: u32, oid: u32, data: &[u8]) -> Vec<u8> {
    info_request(header::SET, request_id, oid, data)
}

/// HALT (no reply).
pub fn halt(request_id: u32) -> Vec<u8> {
    message(
        header::HALT,
        RequestId {
            req_id: U32::new(request_id),
        }
        .as_bytes(),
        &[],
    )
}

/// KEEPALIVE_C with status success.
pub fn keepalive_complete(request_id: u32) -> Vec<u8> {
    let body = RequestComplete {
        req_id: U32::new(request_id),
        status: U32::new(rndis::status::SUCCESS),
    };
    message(header::KEEPALIVE_COMPLETE, body.as_bytes(), &[])
}

/// Parses INIT_C and checks its status and `pkt_align_factor` (§14 *add*).
pub fn parse_init_complete(reply: &[u8]) -> Result<InitializeComplete, GuestError> {
    let body = reply
        .get(header::HEADER_SIZE..)
        .and_then(|b| InitializeComplete::read_from_prefix(b).ok())
        .map(|(c, _)| c)
        .ok_or_else(|| GuestError::Protocol("INIT_C too short".into()))?;
    if body.status.get() != rndis::status::SUCCESS {
        return Err(GuestError::Refused {
            what: "RNDIS INITIALIZE",
            status: body.status.get(),
        });
    }
    if body.pkt_align().is_none() || body.max_pkt_per_msg.get() == 0 {
        return Err(GuestError::Protocol(format!(
            "INIT_C with pkt_align_factor {} and max_pkt_per_msg {}",
            body.pkt_align_factor.get(),
            body.max_pkt_per_msg.get()
        )));
    }
    Ok(body)
}

/// The information buffer of a successful QUERY_C (§14: `info_offset ≥ 16`, data inside).
pub fn query_data(reply: &[u8], what: &str) -> Result<Vec<u8>, GuestError> {
    let (msg_type, message) = header::split_message(reply)?;
    if msg_type != header::QUERY_COMPLETE {
        return Err(GuestError::Protocol(format!(
            "{what}: reply type {msg_type:#x}"
        )));
    }
    let body = &message[header::HEADER_SIZE..];
    let (fixed, _) = QueryCompleteFixed::read_from_prefix(body)
        .map_err(|_| GuestError::Protocol(format!("{what}: QUERY_C too short")))?;
    if fixed.status.get() != rndis::status::SUCCESS {
        return Err(GuestError::Protocol(format!(
            "{what}: the host answered status {:#x}",
            fixed.status.get()
        )));
    }
    let (offset, len) = (
        fixed.info_offset.get() as usize,
        fixed.info_len.get() as usize,
    );
    if len == 0 {
        return Ok(Vec::new());
    }
    offset
        .checked_add(len)
        .filter(|_| offset >= rndis::control::QUERY_COMPLETE_DATA_OFFSET as usize)
        .and_then(|end| body.get(offset..end))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| GuestError::Protocol(format!("{what}: QUERY_C data outside the message")))
}

/// Checks a SET_C's status.
pub fn expect_set_complete(reply: &[u8], what: &str) -> Result<(), GuestError> {
    let (msg_type, message) = header::split_message(reply)?;
    let status = RequestComplete::read_from_prefix(&message[header::HEADER_SIZE..])
        .map(|(c, _)| c.status.get())
        .map_err(|_| GuestError::Protocol(format!("{what}: SET_C too short")))?;
    if msg_type != header::SET_COMPLETE {
        return Err(GuestError::Protocol(format!(
            "{what}: reply type {msg_type:#x}"
        )));
    }
    if status != rndis::status::SUCCESS {
        return Err(GuestError::Refused {
            what: "an RNDIS SET",
            status,
        });
    }
    Ok(())
}

/// A little-endian u32 from a query's data (exactly 4 bytes, as Linux requires).
pub fn u32_of(data: &[u8], what: &str) -> Result<u32, GuestError> {
    <[u8; 4]>::try_from(data)
        .map(u32::from_le_bytes)
        .map_err(|_| GuestError::Protocol(format!("{what}: {} bytes, expected 4", data.len())))
}

/// Writes a PACKET header with `info`'s PPIs for a frame of `frame_len`; returns its
/// length.
pub fn packet_header(
    buf: &mut [u8; MAX_PACKET_HEADER],
    info: &PacketInfo,
    frame_len: usize,
) -> usize {
    rndis::packet::emit_packet_header(buf, info, frame_len, 1)
        .map(|l| l.header_len)
        .expect("a 128-byte buffer holds a header with every PPI the guest sends")
}

/// Rewrites `msg_len` of a message whose header is at the start of `hdr` (to count the
/// batch padding, §4.7).
pub fn set_message_length(hdr: &mut [u8], msg_len: u32) {
    hdr[4..8].copy_from_slice(&msg_len.to_le_bytes());
}

/// Traces an RNDIS control message (data packets are not traced).
pub fn trace_rndis(tracer: Option<&Tracer>, dir: Dir, channel: u32, msg: &[u8]) {
    let Some(t) = tracer else { return };
    crate::trace::rndis(t, dir, channel, msg);
}

/// Bytes of a range copied first to validate a PACKET before its frame is read.
pub const PACKET_HEAD: usize = 256;

/// Validates a PACKET from its first bytes (`head`, a copy of the range's start) and the
/// range's length, with the same §14 rules as the full parse, so that the frame itself
/// can be copied once, straight to where it goes. Returns the frame's offset and length
/// in the range and the per-packet info; `Ok(None)` if this is no PACKET or its PPIs
/// reach past `head` (the caller then copies the whole range).
pub fn packet_in_place(
    head: &[u8],
    range_len: usize,
) -> Result<Option<(usize, usize, PacketInfo)>, GuestError> {
    let bad = |what: &str| GuestError::Protocol(format!("RNDIS PACKET: {what}"));
    let Ok((h, _)) = MessageHeader::read_from_prefix(head) else {
        return Err(bad("range shorter than a header"));
    };
    if h.msg_type.get() != header::PACKET {
        return Ok(None);
    }
    let msg_len = h.msg_len.get() as usize;
    if msg_len < rndis::packet::PACKET_MIN_MESSAGE_SIZE || msg_len > range_len {
        return Err(bad("message length outside the range"));
    }
    let Ok((body, _)) = rndis::packet::PacketBody::read_from_prefix(&head[header::HEADER_SIZE..])
    else {
        return Err(bad("body truncated"));
    };
    let avail = msg_len - header::HEADER_SIZE;
    let (data_offset, data_len) = (
        body.data_offset.get() as usize,
        body.data_len.get() as usize,
    );
    if data_offset < rndis::packet::PACKET_BODY_SIZE
        || data_len == 0
        || data_offset >= avail
        || data_len > avail - data_offset
    {
        return Err(bad("data outside the message"));
    }
    let (ppi_offset, ppi_len) = (body.ppi_offset.get() as usize, body.ppi_len.get() as usize);
    let info = if ppi_offset == 0 || ppi_len == 0 {
        PacketInfo::default()
    } else {
        if ppi_offset < rndis::packet::PACKET_BODY_SIZE
            || ppi_len < rndis::ppi::PPI_HEADER_SIZE
            || ppi_offset > avail
            || ppi_len > avail - ppi_offset
        {
            return Err(bad("per-packet info outside the message"));
        }
        let start = header::HEADER_SIZE + ppi_offset;
        let Some(area) = head.get(start..start + ppi_len) else {
            return Ok(None);
        };
        PacketInfo::parse(area)?
    };
    Ok(Some((header::HEADER_SIZE + data_offset, data_len, info)))
}
