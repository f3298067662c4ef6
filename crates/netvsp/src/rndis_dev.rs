//! The host's RNDIS device: control messages (initialize, queries, sets, keepalive,
//! halt, reset), status indications, and the PACKET messages of the data path
//! (PROTOCOL.md §6, §7).
//!
//! A guest send carries one or more RNDIS messages; they are walked within the bytes the
//! guest named, bounded by the batch limit the host announced in INIT_C, and each is
//! validated before use. Replies go back through receive-buffer sections on queue 0.

use std::sync::atomic::Ordering;

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, IntoBytes};

use rndis::control::{
    IndicateStatusFixed, InfoRequest, InitializeComplete, QueryCompleteFixed, RequestComplete,
    RequestId, ResetComplete,
};
use rndis::header::{self, MessageHeader};
use rndis::oid;
use rndis::ppi::PacketInfo;
use vmbus::trace::Dir;

use crate::nic::{NicConfig, NicRef, ProtocolError, Session};
use crate::rss::RssError;
use crate::rx_buffer::Purpose;
use crate::vswitch::{DeliveryBatch, Frame};

/// Room for a PACKET header with every PPI the host sends.
pub const MAX_PACKET_HEADER: usize = 128;

/// RNDIS state of one guest session.
#[derive(Default)]
pub struct RndisState {
    /// INITIALIZE answered.
    pub initialized: bool,
    /// HALT received: no more receives are posted.
    pub halted: bool,
}

/// Whether the packet filter lets `frame` through (PROTOCOL.md §7.1 bits).
pub fn filter_accepts(filter: u32, frame: &[u8]) -> bool {
    use oid::packet_filter as f;
    let Some(dst) = frame.get(..6) else {
        return false;
    };
    if filter & f::PROMISCUOUS != 0 {
        return true;
    }
    if dst == [0xff; 6] {
        filter & f::BROADCAST != 0
    } else if dst[0] & 1 != 0 {
        filter & (f::MULTICAST | f::ALL_MULTICAST) != 0
    } else {
        filter & f::DIRECTED != 0
    }
}

/// Header bytes of one RSC piece: PACKET header with a checksum PPI and PKTINFO_ID.
pub const RSC_PIECE_HEADER: usize = rndis::packet::PACKET_MIN_MESSAGE_SIZE + 2 * 16;
/// Bytes the hash PPIs (NBL_HASH_VALUE and hash info) add to a PACKET header.
pub const HASH_PPIS: usize = 2 * rndis::ppi::U32_PPI_SIZE;
/// Most pieces one RSC packet may carry (Linux `NVSP_RSC_MAX`).
pub const MAX_RSC_PIECES: usize = 562;

/// Writes a PACKET header with `info`'s PPIs for a frame of `frame_len`; returns its
/// length, or None if the frame is too long for a message.
pub fn packet_header(
    buf: &mut [u8; MAX_PACKET_HEADER],
    info: &PacketInfo,
    frame_len: usize,
) -> Option<usize> {
    rndis::packet::emit_packet_header(buf, info, frame_len, 1)
        .ok()
        .map(|l| l.header_len)
}

fn message(msg_type: u32, body: &[u8], data: &[u8]) -> Vec<u8> {
    let len = header::HEADER_SIZE + body.len() + data.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(MessageHeader::new(msg_type, len as u32).as_bytes());
    m.extend_from_slice(body);
    m.extend_from_slice(data);
    m
}

/// Sends a media connect/disconnect indication to the guest.
pub(crate) fn indicate_link(session: &Session, up: bool, config: &NicConfig) {
    let status = if up {
        rndis::status::MEDIA_CONNECT
    } else {
        rndis::status::MEDIA_DISCONNECT
    };
    let body = IndicateStatusFixed {
        status: U32::new(status),
        buf_len: U32::ZERO,
        buf_offset: U32::ZERO,
    };
    let m = message(header::INDICATE_STATUS, body.as_bytes(), &[]);
    crate::trace::rndis(config.tracer.as_deref(), Dir::Tx, 0, &m);
    if !session.post(0, Purpose::Control, &[&m]) {
        tracing::warn!(nic = %config.name, "no section for a link indication");
    }
}

/// Processes the RNDIS messages of one guest send.
pub(crate) fn process_stream(
    nic: &NicRef,
    session: &Session,
    stream: &mut [u8],
    batch: &mut DeliveryBatch,
) -> Result<(), ProtocolError> {
    let mut count = 0;
    let mut at = 0;
    // A send carries at least one message, and after the last only zero padding: an
    // empty stream or trailing bytes too short for a header fail in `split_message`.
    loop {
        let bytes = &mut stream[at..];
        count += 1;
        if count > rndis::control::HOST_MAX_PKT_PER_MSG as usize {
            return Err(ProtocolError(format!(
                "more than {} RNDIS messages in one send",
                rndis::control::HOST_MAX_PKT_PER_MSG
            )));
        }
        let (msg_type, msg) =
            header::split_message(bytes).map_err(|e| ProtocolError(e.to_string()))?;
        let len = msg.len();
        if msg_type == header::PACKET {
            let p = rndis::packet::parse_packet(msg).map_err(|e| ProtocolError(e.to_string()))?;
            if !session.rndis.lock().unwrap().initialized {
                return Err(ProtocolError("RNDIS PACKET before INITIALIZE".into()));
            }
            let (info, start, frame_len) = (
                p.info,
                p.frame.as_ptr() as usize - msg.as_ptr() as usize,
                p.frame.len(),
            );
            let frame = &mut bytes[start..start + frame_len];
            let tx = crate::offload::prepare_tx(frame, &info).map_err(ProtocolError)?;
            if tx.lso_mss.is_some() {
                nic.stats.tx_lso_packets.fetch_add(1, Ordering::Relaxed);
            } else if tx.checksum_good {
                nic.stats.tx_checksum_filled.fetch_add(1, Ordering::Relaxed);
            }
            nic.stats.tx_packets.fetch_add(1, Ordering::Relaxed);
            nic.stats
                .tx_bytes
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
            let f = Frame {
                bytes: frame,
                lso_mss: tx.lso_mss,
                checksum_good: tx.checksum_good,
            };
            nic.switch.forward(nic.port_id, &f, batch);
        } else {
            control(nic, session, msg_type, msg)?;
        }
        at += len;
        // The last message of a batch may be followed by padding only.
        if stream[at..].iter().all(|&b| b == 0) {
            break;
        }
    }
    Ok(())
}

/// Handles one control message and posts the reply.
fn control(
    nic: &NicRef,
    session: &Session,
    msg_type: u32,
    msg: &[u8],
) -> Result<(), ProtocolError> {
    let tracer = nic.config.tracer.as_deref();
    crate::trace::rndis(tracer, Dir::Rx, 0, msg);
    nic.stats.rndis_control.fetch_add(1, Ordering::Relaxed);
    let body = &msg[header::HEADER_SIZE..];
    let short = || ProtocolError(format!("RNDIS message type {msg_type:#x} too short"));
    let reply = match msg_type {
        header::INITIALIZE => {
            let req_id = RequestId::read_from_prefix(body)
                .map_err(|_| short())?
                .0
                .req_id;
            {
                let nvsp = session.nvsp.lock().unwrap();
                if !nvsp.ndis_version || session.recv.read().unwrap().is_none() {
                    drop(nvsp);
                    return Err(ProtocolError(
                        "RNDIS INITIALIZE before SEND_NDIS_VER and SEND_RECV_BUF".into(),
                    ));
                }
            }
            let mut st = session.rndis.lock().unwrap();
            st.initialized = true;
            st.halted = false;
            message(
                header::INITIALIZE_COMPLETE,
                InitializeComplete::host(req_id.get()).as_bytes(),
                &[],
            )
        }
        header::QUERY | header::SET => {
            let (req, _) = InfoRequest::read_from_prefix(body).map_err(|_| short())?;
            let (offset, len) = (req.info_offset.get() as usize, req.info_len.get() as usize);
            // §14: info_offset ≥ 20 and the data inside the message.
            let data = if len == 0 {
                Some(&body[..0])
            } else {
                offset
                    .checked_add(len)
                    .filter(|_| offset >= rndis::control::INFO_REQUEST_DATA_OFFSET as usize)
                    .and_then(|end| body.get(offset..end))
            };
            let Some(data) = data else {
                return Err(ProtocolError(format!(
                    "{} data {offset}+{len} outside the message",
                    if msg_type == header::QUERY {
                        "QUERY"
                    } else {
                        "SET"
                    }
                )));
            };
            if msg_type == header::QUERY {
                let (status, answer) = query(nic, session, req.oid.get(), data);
                let fixed = QueryCompleteFixed {
                    req_id: req.req_id,
                    status: U32::new(status),
                    info_len: U32::new(answer.len() as u32),
                    info_offset: U32::new(if answer.is_empty() {
                        0
                    } else {
                        rndis::control::QUERY_COMPLETE_DATA_OFFSET
                    }),
                };
                message(header::QUERY_COMPLETE, fixed.as_bytes(), &answer)
            } else {
                let status = set(nic, session, req.oid.get(), data);
                let c = RequestComplete {
                    req_id: req.req_id,
                    status: U32::new(status),
                };
                message(header::SET_COMPLETE, c.as_bytes(), &[])
            }
        }
        header::KEEPALIVE => {
            let req_id = RequestId::read_from_prefix(body)
                .map_err(|_| short())?
                .0
                .req_id;
            let c = RequestComplete {
                req_id,
                status: U32::new(rndis::status::SUCCESS),
            };
            message(header::KEEPALIVE_COMPLETE, c.as_bytes(), &[])
        }
        header::HALT => {
            session.rndis.lock().unwrap().halted = true;
            session.ready.store(false, Ordering::Release);
            return Ok(());
        }
        header::RESET => {
            let c = ResetComplete {
                status: U32::new(rndis::status::SUCCESS),
                addressing_reset: U32::ZERO,
            };
            message(header::RESET_COMPLETE, c.as_bytes(), &[])
        }
        header::KEEPALIVE_COMPLETE => return Ok(()),
        other => {
            return Err(ProtocolError(format!(
                "RNDIS message type {other:#x} not accepted from a guest"
            )));
        }
    };
    crate::trace::rndis(tracer, Dir::Tx, 0, &reply);
    if !session.post(0, Purpose::Control, &[&reply]) {
        return Err(ProtocolError(
            "no receive section or ring space for a control reply".into(),
        ));
    }
    Ok(())
}

/// Answers a QUERY: (status, data).
fn query(nic: &NicRef, session: &Session, oid: u32, request: &[u8]) -> (u32, Vec<u8>) {
    let ok = |d: Vec<u8>| (rndis::status::SUCCESS, d);
    let mtu = {
        let st = session.nvsp.lock().unwrap();
        if st.mtu == 0 { 1514 } else { st.mtu }
    };
    match oid {
        oid::GEN_MAXIMUM_FRAME_SIZE => ok((mtu - 14).to_le_bytes().to_vec()),
        oid::OID_802_3_PERMANENT_ADDRESS | oid::OID_802_3_CURRENT_ADDRESS => {
            ok(nic.config.mac.to_vec())
        }
        oid::GEN_MEDIA_CONNECT_STATUS => {
            let down = nic.stats.link_down.load(Ordering::Relaxed);
            ok(if down {
                oid::MEDIA_STATE_DISCONNECTED
            } else {
                oid::MEDIA_STATE_CONNECTED
            }
            .to_le_bytes()
            .to_vec())
        }
        oid::GEN_LINK_SPEED => ok(nic.config.link_speed.to_le_bytes().to_vec()),
        oid::TCP_OFFLOAD_HARDWARE_CAPABILITIES => {
            let nvsp_version = session.nvsp_version();
            let rsc = crate::offload::rsc_offered(nic.config.profile, nvsp_version);
            let caps = crate::offload::capabilities(nic.config.profile, rsc);
            let revision = rndis::offload::NdisOffload::requested_revision(request);
            let mut buf = [0u8; rndis::offload::OFFLOAD_SIZE_REV3];
            match caps.emit(revision, &mut buf) {
                // The answer must fit the guest's buffer (§7.1).
                Ok(n) if request.is_empty() || n <= request.len() => ok(buf[..n].to_vec()),
                _ => (rndis::status::BUFFER_OVERFLOW, Vec::new()),
            }
        }
        oid::GEN_RECEIVE_SCALE_CAPABILITIES => {
            // §7.4: only with subchannels (NVSP ≥ 5); the answer must fit the request.
            if session.nvsp_version() < nvsp::version::V5 {
                return (rndis::status::NOT_SUPPORTED, Vec::new());
            }
            let caps = rndis::rss::RssCapabilities::host(u32::from(nic.config.queue_count()));
            if !request.is_empty() && request.len() < rndis::rss::RSS_CAPABILITIES_SIZE {
                return (rndis::status::BUFFER_OVERFLOW, Vec::new());
            }
            ok(caps.as_bytes().to_vec())
        }
        oid::GEN_FRIENDLY_NAME => {
            // UTF-16LE, NUL-terminated (Linux's buffer is not zeroed), within the request.
            let mut d: Vec<u8> = "Microsoft Hyper-V Network Adapter"
                .encode_utf16()
                .chain([0])
                .flat_map(u16::to_le_bytes)
                .collect();
            if !request.is_empty() && d.len() > request.len() {
                d.truncate(request.len() & !1);
            }
            ok(d)
        }
        _ => (rndis::status::NOT_SUPPORTED, Vec::new()),
    }
}

/// Applies a SET; returns the status.
fn set(nic: &NicRef, session: &Session, oid: u32, data: &[u8]) -> u32 {
    match oid {
        oid::GEN_CURRENT_PACKET_FILTER => {
            let Ok(v) = <[u8; 4]>::try_from(data) else {
                return rndis::status::INVALID_DATA;
            };
            let filter = u32::from_le_bytes(v);
            session.filter.store(filter, Ordering::Relaxed);
            let st = session.rndis.lock().unwrap();
            session.ready.store(
                st.initialized && !st.halted && filter != 0,
                Ordering::Release,
            );
            tracing::debug!(nic = %nic.config.name, filter, "packet filter set");
            rndis::status::SUCCESS
        }
        oid::TCP_OFFLOAD_PARAMETERS => {
            let rsc = crate::offload::rsc_offered(nic.config.profile, session.nvsp_version());
            let status = session.offload.apply(data, nic.config.profile, rsc);
            tracing::debug!(nic = %nic.config.name, flags = session.offload.flags(), status, "offload parameters");
            status
        }
        oid::GEN_RECEIVE_SCALE_PARAMETERS => match set_rss(nic, session, data) {
            Ok(enabled) => {
                tracing::debug!(nic = %nic.config.name, enabled, "RSS parameters");
                rndis::status::SUCCESS
            }
            Err(e) => {
                nic.stats
                    .rss_parameters_rejected
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(nic = %nic.config.name, "RSS parameters refused: {e}");
                match e {
                    RssError::NvspTooOld { .. } => rndis::status::NOT_SUPPORTED,
                    RssError::Parameters(_) => rndis::status::INVALID_DATA,
                }
            }
        },
        _ => rndis::status::NOT_SUPPORTED,
    }
}

/// Applies OID_GEN_RECEIVE_SCALE_PARAMETERS (§7.5) to the session; returns whether RSS is
/// now on.
fn set_rss(nic: &NicRef, session: &Session, data: &[u8]) -> Result<bool, RssError> {
    let version = session.nvsp_version();
    if version < nvsp::version::V5 {
        return Err(RssError::NvspTooOld { version });
    }
    session.rss.apply(data, u32::from(nic.config.queue_count()))
}
