//! [`NvspMessage`]: a validated NVSP message, parsed at the boundary and emitted from the
//! same form (PROTOCOL.md §4.3, §4.4).
//!
//! Parsing accepts any length ≥ the type's layout (Linux pads to 40, old kernels leave
//! garbage in the tail, the receive completion is 8 bytes); emitting writes the exact
//! layout, or zero-pads it to a chosen size with [`NvspMessage::emit_padded`].

use core::fmt;

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, IntoBytes};

use crate::msg_type;
use crate::send_table;
use crate::wire::*;

/// Why bytes are not a valid NVSP message, or a message cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NvspError {
    /// Fewer bytes than the 4-byte header.
    #[error("NVSP message of {len} bytes has no 4-byte header")]
    NoHeader {
        /// Bytes received.
        len: usize,
    },
    /// Fewer bytes than the type's layout.
    #[error("NVSP message type {msg_type} has {len} bytes, its layout needs {min}")]
    TooShort {
        /// The message type.
        msg_type: u32,
        /// Bytes received.
        len: usize,
        /// The layout's size, header included.
        min: usize,
    },
    /// The output buffer is too small.
    #[error("NVSP message type {msg_type} needs {needed} bytes, buffer has {available}")]
    BufferTooSmall {
        /// The message type.
        msg_type: u32,
        /// Bytes the message takes.
        needed: usize,
        /// Bytes in the buffer.
        available: usize,
    },
    /// A message of another type where a specific one was required.
    #[error("NVSP message type {msg_type} where type {expected} was required")]
    UnexpectedType {
        /// The type found.
        msg_type: u32,
        /// The type required.
        expected: u32,
    },
    /// A send indirection table whose `count` is not 16.
    #[error("send indirection table with {count} entries, expected 16")]
    SendTableCount {
        /// The `count` field.
        count: u32,
    },
    /// A send indirection table that does not lie inside its message.
    #[error("send indirection table at offset {offset} does not fit a {len}-byte message")]
    SendTableOffset {
        /// Where the table would start.
        offset: u64,
        /// The message length.
        len: usize,
    },
}

/// One decoded field value, for the JSON trace writer (see [`NvspMessage::visit_fields`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// A number, rendered in decimal.
    U64(u64),
    /// A number best read in hex (versions, flags, handles).
    Hex(u64),
    /// A symbolic name (status or version name).
    Str(&'static str),
    /// Raw bytes, rendered as hex.
    Bytes(&'a [u8]),
    /// A list of u32 numbers (the send indirection table).
    U32List(&'a [U32]),
}

/// SEND_INDIRECTION_TABLE as received: its fixed fields and the whole message, from which
/// the table is read with the negotiated version ([`SendIndirectionTable::table`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendIndirectionTable<'a> {
    /// `count` and `offset`.
    pub fixed: SendIndirectionTableFixed,
    /// The whole NVSP message, header included.
    pub message: &'a [u8],
}

impl SendIndirectionTable<'_> {
    /// The 16 queue numbers, located with the §4.11 rule for `nvsp_version`.
    pub fn table(&self, nvsp_version: u32) -> Result<[u32; SEND_TABLE_ENTRIES], NvspError> {
        send_table::parse_send_indirection_table(self.message, nvsp_version)
    }
}

/// A parsed NVSP message (PROTOCOL.md §4.4, types 1, 2, 100–108, 125, 128, 129, 131–134).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvspMessage<'a> {
    /// 1 INIT.
    Init(Init),
    /// 2 INIT_COMPLETE.
    InitComplete(InitComplete),
    /// 100 SEND_NDIS_VER.
    SendNdisVersion(SendNdisVersion),
    /// 101 SEND_RECV_BUF.
    SendReceiveBuffer(SendBuffer),
    /// 102 SEND_RECV_BUF_COMPLETE.
    SendReceiveBufferComplete(SendReceiveBufferComplete),
    /// 103 REVOKE_RECV_BUF.
    RevokeReceiveBuffer(RevokeBuffer),
    /// 104 SEND_SEND_BUF.
    SendSendBuffer(SendBuffer),
    /// 105 SEND_SEND_BUF_COMPLETE.
    SendSendBufferComplete(SendSendBufferComplete),
    /// 106 REVOKE_SEND_BUF.
    RevokeSendBuffer(RevokeBuffer),
    /// 107 SEND_RNDIS_PKT.
    SendRndisPacket(SendRndisPacket),
    /// 108 SEND_RNDIS_PKT_COMPLETE.
    SendRndisPacketComplete(SendRndisPacketComplete),
    /// 125 SEND_NDIS_CONFIG.
    SendNdisConfig(SendNdisConfig),
    /// 128 SEND_VF_ASSOCIATION.
    SendVfAssociation(SendVfAssociation),
    /// 129 SWITCH_DATA_PATH (request G→H or notice H→G).
    SwitchDataPath(SwitchDataPath),
    /// 131 OID_QUERY_EX.
    OidQueryEx(OidQueryEx),
    /// 132 OID_QUERY_EX_COMPLETE.
    OidQueryExComplete(OidQueryExComplete),
    /// 133 SUBCHANNEL request (from [`NvspMessage::parse`]).
    SubchannelRequest(SubchannelRequest),
    /// 133 SUBCHANNEL completion (from [`NvspMessage::parse_completion`]).
    SubchannelComplete(SubchannelComplete),
    /// 134 SEND_INDIRECTION_TABLE.
    SendIndirectionTable(SendIndirectionTable<'a>),
    /// Any other type (unused v2 messages, 130, PD_API, garbage).
    Unknown {
        /// The message type.
        msg_type: u32,
        /// Bytes after the header.
        body: &'a [u8],
    },
}

fn read_body<T: FromBytes>(t: u32, bytes: &[u8]) -> Result<T, NvspError> {
    bytes
        .get(HEADER_SIZE..)
        .and_then(|b| T::read_from_prefix(b).ok())
        .map(|(v, _)| v)
        .ok_or(NvspError::TooShort {
            msg_type: t,
            len: bytes.len(),
            min: HEADER_SIZE + size_of::<T>(),
        })
}

impl<'a> NvspMessage<'a> {
    /// Validates a message sent as a request or notice (an inband packet, or the NVSP part
    /// of a transfer-page / GPA-direct packet): at least the type's layout, any longer
    /// length accepted. 133 parses as [`NvspMessage::SubchannelRequest`].
    pub fn parse(bytes: &'a [u8]) -> Result<NvspMessage<'a>, NvspError> {
        Self::parse_as(bytes, false)
    }

    /// Like [`NvspMessage::parse`] for the payload of a completion packet: 133 parses as
    /// [`NvspMessage::SubchannelComplete`]. (An empty completion, allowed for
    /// SWITCH_DATA_PATH, is the caller's case: it has no header.)
    pub fn parse_completion(bytes: &'a [u8]) -> Result<NvspMessage<'a>, NvspError> {
        Self::parse_as(bytes, true)
    }

    fn parse_as(bytes: &'a [u8], completion: bool) -> Result<NvspMessage<'a>, NvspError> {
        let Ok((header, body)) = Header::read_from_prefix(bytes) else {
            return Err(NvspError::NoHeader { len: bytes.len() });
        };
        let t = header.msg_type.get();
        use NvspMessage as M;
        Ok(match t {
            msg_type::INIT => M::Init(read_body(t, bytes)?),
            msg_type::INIT_COMPLETE => M::InitComplete(read_body(t, bytes)?),
            msg_type::SEND_NDIS_VER => M::SendNdisVersion(read_body(t, bytes)?),
            msg_type::SEND_RECV_BUF => M::SendReceiveBuffer(read_body(t, bytes)?),
            msg_type::SEND_RECV_BUF_COMPLETE => M::SendReceiveBufferComplete(read_body(t, bytes)?),
            msg_type::REVOKE_RECV_BUF => M::RevokeReceiveBuffer(read_body(t, bytes)?),
            msg_type::SEND_SEND_BUF => M::SendSendBuffer(read_body(t, bytes)?),
            msg_type::SEND_SEND_BUF_COMPLETE => M::SendSendBufferComplete(read_body(t, bytes)?),
            msg_type::REVOKE_SEND_BUF => M::RevokeSendBuffer(read_body(t, bytes)?),
            msg_type::SEND_RNDIS_PKT => M::SendRndisPacket(read_body(t, bytes)?),
            msg_type::SEND_RNDIS_PKT_COMPLETE => M::SendRndisPacketComplete(read_body(t, bytes)?),
            msg_type::SEND_NDIS_CONFIG => M::SendNdisConfig(read_body(t, bytes)?),
            msg_type::SEND_VF_ASSOCIATION => M::SendVfAssociation(read_body(t, bytes)?),
            msg_type::SWITCH_DATA_PATH => M::SwitchDataPath(read_body(t, bytes)?),
            msg_type::OID_QUERY_EX => M::OidQueryEx(read_body(t, bytes)?),
            msg_type::OID_QUERY_EX_COMPLETE => M::OidQueryExComplete(read_body(t, bytes)?),
            msg_type::SUBCHANNEL if completion => M::SubchannelComplete(read_body(t, bytes)?),
            msg_type::SUBCHANNEL => M::SubchannelRequest(read_body(t, bytes)?),
            msg_type::SEND_INDIRECTION_TABLE => M::SendIndirectionTable(SendIndirectionTable {
                fixed: read_body(t, bytes)?,
                message: bytes,
            }),
            msg_type => M::Unknown { msg_type, body },
        })
    }

    /// The message type number.
    pub fn msg_type(&self) -> u32 {
        use NvspMessage as M;
        match self {
            M::Init(_) => msg_type::INIT,
            M::InitComplete(_) => msg_type::INIT_COMPLETE,
            M::SendNdisVersion(_) => msg_type::SEND_NDIS_VER,
            M::SendReceiveBuffer(_) => msg_type::SEND_RECV_BUF,
            M::SendReceiveBufferComplete(_) => msg_type::SEND_RECV_BUF_COMPLETE,
            M::RevokeReceiveBuffer(_) => msg_type::REVOKE_RECV_BUF,
            M::SendSendBuffer(_) => msg_type::SEND_SEND_BUF,
            M::SendSendBufferComplete(_) => msg_type::SEND_SEND_BUF_COMPLETE,
            M::RevokeSendBuffer(_) => msg_type::REVOKE_SEND_BUF,
            M::SendRndisPacket(_) => msg_type::SEND_RNDIS_PKT,
            M::SendRndisPacketComplete(_) => msg_type::SEND_RNDIS_PKT_COMPLETE,
            M::SendNdisConfig(_) => msg_type::SEND_NDIS_CONFIG,
            M::SendVfAssociation(_) => msg_type::SEND_VF_ASSOCIATION,
            M::SwitchDataPath(_) => msg_type::SWITCH_DATA_PATH,
            M::OidQueryEx(_) => msg_type::OID_QUERY_EX,
            M::OidQueryExComplete(_) => msg_type::OID_QUERY_EX_COMPLETE,
            M::SubchannelRequest(_) | M::SubchannelComplete(_) => msg_type::SUBCHANNEL,
            M::SendIndirectionTable(_) => msg_type::SEND_INDIRECTION_TABLE,
            M::Unknown { msg_type, .. } => *msg_type,
        }
    }

    /// The message's name as PROTOCOL.md writes it (`"INIT"`, `"SEND_RNDIS_PKT"`, …;
    /// `"UNKNOWN"` for unnamed types).
    pub fn name(&self) -> &'static str {
        msg_type::name(self.msg_type()).unwrap_or("UNKNOWN")
    }

    /// The bytes after the header, as emitted.
    fn body_bytes(&self) -> &[u8] {
        use NvspMessage as M;
        match self {
            M::Init(m) => m.as_bytes(),
            M::InitComplete(m) => m.as_bytes(),
            M::SendNdisVersion(m) => m.as_bytes(),
            M::SendReceiveBuffer(m) | M::SendSendBuffer(m) => m.as_bytes(),
            M::SendReceiveBufferComplete(m) => m.as_bytes(),
            M::RevokeReceiveBuffer(m) | M::RevokeSendBuffer(m) => m.as_bytes(),
            M::SendSendBufferComplete(m) => m.as_bytes(),
            M::SendRndisPacket(m) => m.as_bytes(),
            M::SendRndisPacketComplete(m) => m.as_bytes(),
            M::SendNdisConfig(m) => m.as_bytes(),
            M::SendVfAssociation(m) => m.as_bytes(),
            M::SwitchDataPath(m) => m.as_bytes(),
            M::OidQueryEx(m) => m.as_bytes(),
            M::OidQueryExComplete(m) => m.as_bytes(),
            M::SubchannelRequest(m) => m.as_bytes(),
            M::SubchannelComplete(m) => m.as_bytes(),
            // Re-emitted as received (the table's place depends on the version).
            M::SendIndirectionTable(m) => m.message.get(HEADER_SIZE..).unwrap_or(&[]),
            M::Unknown { body, .. } => body,
        }
    }

    /// Size of the exact (unpadded) message, header included.
    pub fn len(&self) -> usize {
        HEADER_SIZE + self.body_bytes().len()
    }

    /// Always false: a message has at least its header. (For clippy's `len` convention.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the exact message into the start of `buf`; returns its size.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, NvspError> {
        self.emit_padded(buf, 0)
    }

    /// Writes the message zero-padded to `size` bytes (or its own size if larger) and
    /// returns the bytes written: pass [`V6_1_MESSAGE_SIZE`], [`LEGACY_MESSAGE_SIZE`] or
    /// [`host_message_size`]`(version)`.
    pub fn emit_padded(&self, buf: &mut [u8], size: usize) -> Result<usize, NvspError> {
        let body = self.body_bytes();
        let len = HEADER_SIZE + body.len();
        let total = len.max(size);
        let Some(out) = buf.get_mut(..total) else {
            return Err(NvspError::BufferTooSmall {
                msg_type: self.msg_type(),
                needed: total,
                available: buf.len(),
            });
        };
        out[..HEADER_SIZE].copy_from_slice(&self.msg_type().to_le_bytes());
        out[HEADER_SIZE..len].copy_from_slice(body);
        out[len..].fill(0);
        Ok(total)
    }

    /// Calls `f` with each decoded field (name, value) in wire order, for the trace writer.
    /// Status fields come with a `status_name`; version fields with a `*_name` when known.
    /// The send indirection table is shown as read for NVSP 6 (see [`send_table`]).
    pub fn visit_fields<'s>(&'s self, f: &mut dyn FnMut(&'static str, FieldValue<'s>)) {
        use FieldValue::{Hex, Str, U64 as N};
        use NvspMessage as M;
        let status = |f: &mut dyn FnMut(&'static str, FieldValue<'s>), s: u32| {
            f("status", N(s.into()));
            if let Some(name) = crate::status::name(s) {
                f("status_name", Str(name));
            }
        };
        let version = |f: &mut dyn FnMut(&'static str, FieldValue<'s>), key, name_key, v: u32| {
            f(key, Hex(v.into()));
            if let Some(name) = crate::version::name(v) {
                f(name_key, Str(name));
            }
        };
        match self {
            M::Init(m) => {
                version(f, "min_ver", "min_ver_name", m.min_ver.get());
                version(f, "max_ver", "max_ver_name", m.max_ver.get());
            }
            M::InitComplete(m) => {
                f("negotiated_ver", Hex(m.negotiated_ver.get().into()));
                f("max_mdl_chain_len", N(m.max_mdl_chain_len.get().into()));
                status(f, m.status.get());
            }
            M::SendNdisVersion(m) => {
                f("major", N(m.major.get().into()));
                f("minor", N(m.minor.get().into()));
            }
            M::SendReceiveBuffer(m) | M::SendSendBuffer(m) => {
                f("gpadl", Hex(m.gpadl.get().into()));
                f("id", Hex(m.id.get().into()));
            }
            M::SendReceiveBufferComplete(m) => {
                status(f, m.status.get());
                f("num_sections", N(m.num_sections.get().into()));
                f("offset", N(m.section.offset.get().into()));
                f("sub_alloc_size", N(m.section.sub_alloc_size.get().into()));
                f("num_sub_allocs", N(m.section.num_sub_allocs.get().into()));
                f("end_offset", N(m.section.end_offset.get().into()));
            }
            M::RevokeReceiveBuffer(m) | M::RevokeSendBuffer(m) => f("id", Hex(m.id.get().into())),
            M::SendSendBufferComplete(m) => {
                status(f, m.status.get());
                f("section_size", N(m.section_size.get().into()));
            }
            M::SendRndisPacket(m) => {
                f("channel_type", N(m.channel_type.get().into()));
                f("section_index", Hex(m.section_index.get().into()));
                f("section_size", N(m.section_size.get().into()));
            }
            M::SendRndisPacketComplete(m) => status(f, m.status.get()),
            M::SendNdisConfig(m) => {
                f("mtu", N(m.mtu.get().into()));
                f("capability", Hex(m.capability.get()));
            }
            M::SendVfAssociation(m) => {
                f("allocated", N(m.allocated.get().into()));
                f("serial", N(m.serial.get().into()));
            }
            M::SwitchDataPath(m) => f("active_datapath", N(m.active_datapath.get().into())),
            M::OidQueryEx(m) => {
                f("header_type", Hex(m.header_type.into()));
                f("header_revision", N(m.header_revision.into()));
                f("header_size", N(m.header_size.get().into()));
                f("oid", Hex(m.oid.get().into()));
            }
            M::OidQueryExComplete(m) => {
                f("status", Hex(m.status.get().into()));
                f("bytes", N(m.bytes.get().into()));
            }
            M::SubchannelRequest(m) => {
                f("op", N(m.op.get().into()));
                f("num_subchannels", N(m.num_subchannels.get().into()));
            }
            M::SubchannelComplete(m) => {
                status(f, m.status.get());
                f("num_subchannels", N(m.num_subchannels.get().into()));
            }
            M::SendIndirectionTable(m) => {
                f("count", N(m.fixed.count.get().into()));
                f("offset", N(m.fixed.offset.get().into()));
                if let Ok(t) = send_table::table_entries(m.message, crate::version::V6) {
                    f("table", FieldValue::U32List(t));
                }
            }
            M::Unknown { msg_type, body } => {
                f("msg_type", N((*msg_type).into()));
                f("body", FieldValue::Bytes(body));
            }
        }
    }
}

impl fmt::Display for NvspMessage<'_> {
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
                    FieldValue::U32List(l) => write!(fm, " {name}=[")
                        .and_then(|()| {
                            l.iter().enumerate().try_for_each(|(i, e)| {
                                write!(fm, "{}{}", if i == 0 { "" } else { "," }, e.get())
                            })
                        })
                        .and_then(|()| fm.write_str("]")),
                };
            }
        });
        result
    }
}

impl Init {
    /// INIT for exactly one version (`min = max`), as guests send it.
    pub fn exact(version: u32) -> Init {
        Init {
            min_ver: U32::new(version),
            max_ver: U32::new(version),
        }
    }
}

impl InitComplete {
    /// The host's answer for a requested version: SUCCESS with the deprecated
    /// `negotiated_ver` and 34, or the given failure status.
    pub fn answer(version: u32, status: u32) -> InitComplete {
        InitComplete {
            negotiated_ver: U32::new(crate::version::init_complete_negotiated_ver(version)),
            max_mdl_chain_len: U32::new(MAX_MDL_CHAIN_LEN),
            status: U32::new(status),
        }
    }
}

impl SendNdisVersion {
    /// The NDIS version a guest announces for a negotiated NVSP version.
    pub fn for_nvsp(nvsp: u32) -> SendNdisVersion {
        let (major, minor) = crate::version::ndis_version_for(nvsp);
        SendNdisVersion {
            major: U32::new(major),
            minor: U32::new(minor),
        }
    }
}

impl SendReceiveBufferComplete {
    /// The host's success answer: one section at offset 0 of `count` sub-allocations of
    /// `size` bytes (`end_offset` saturates at `u32::MAX`).
    pub fn single_section(size: u32, count: u32) -> SendReceiveBufferComplete {
        SendReceiveBufferComplete {
            status: U32::new(crate::status::SUCCESS),
            num_sections: U32::new(1),
            section: ReceiveSection {
                offset: U32::new(0),
                sub_alloc_size: U32::new(size),
                num_sub_allocs: U32::new(count),
                end_offset: U32::new(size.saturating_mul(count)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{status, version};
    use proptest::prelude::*;
    use zerocopy::little_endian::{U16, U64};

    /// Parses `bytes`, checks the message, and checks that emitting it padded to the input
    /// length gives the input back.
    fn check(bytes: &[u8], want: NvspMessage<'_>) {
        let m = NvspMessage::parse(bytes).unwrap();
        assert_eq!(m, want);
        let mut buf = [0xAAu8; 128];
        assert_eq!(m.emit_padded(&mut buf, bytes.len()), Ok(bytes.len()));
        assert_eq!(&buf[..bytes.len()], bytes);
        let n = m.emit(&mut buf).unwrap();
        assert_eq!(NvspMessage::parse(&buf[..n]), Ok(m));
        let min = min_message_size(m.msg_type()).unwrap();
        assert!(matches!(
            NvspMessage::parse(&bytes[..min - 1]),
            Err(NvspError::TooShort { .. })
        ));
    }

    fn pad40(v: &[u8]) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..v.len()].copy_from_slice(v);
        out
    }

    #[test]
    fn init() {
        let b = pad40(&[1, 0, 0, 0, 1, 0, 6, 0, 1, 0, 6, 0]);
        check(&b, NvspMessage::Init(Init::exact(version::V6_1)));
        assert_eq!(NvspMessage::Init(Init::exact(version::V6_1)).name(), "INIT");
    }

    #[test]
    fn init_complete() {
        let b = [2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 34, 0, 0, 0, 1, 0, 0, 0];
        let m = NvspMessage::InitComplete(InitComplete::answer(version::V5, status::SUCCESS));
        check(&b, m);
        let mut buf = [0u8; 40];
        assert_eq!(
            m.emit_padded(&mut buf, host_message_size(version::V5)),
            Ok(28)
        );
        assert_eq!(&buf[..16], &b);
        assert_eq!(&buf[16..28], &[0; 12]);
        let b1 = [2, 0, 0, 0, 2, 0, 0, 0, 34, 0, 0, 0, 2, 0, 0, 0];
        check(
            &b1,
            NvspMessage::InitComplete(InitComplete::answer(version::V1, status::FAIL)),
        );
    }

    #[test]
    fn send_ndis_version() {
        let b = pad40(&[100, 0, 0, 0, 6, 0, 0, 0, 30, 0, 0, 0]);
        check(
            &b,
            NvspMessage::SendNdisVersion(SendNdisVersion::for_nvsp(version::V5)),
        );
        let b = [100, 0, 0, 0, 6, 0, 0, 0, 1, 0, 0, 0];
        check(
            &b,
            NvspMessage::SendNdisVersion(SendNdisVersion::for_nvsp(version::V4)),
        );
    }

    #[test]
    fn buffers() {
        let b = pad40(&[101, 0, 0, 0, 0x78, 0x56, 0x34, 0x12, 0xfe, 0xca]);
        let sb = SendBuffer {
            gpadl: U32::new(0x1234_5678),
            id: U16::new(RECEIVE_BUFFER_ID),
        };
        check(&b, NvspMessage::SendReceiveBuffer(sb));
        let b = pad40(&[104, 0, 0, 0, 2, 0, 0, 0, 0, 0]);
        let sb = SendBuffer {
            gpadl: U32::new(2),
            id: U16::new(SEND_BUFFER_ID),
        };
        check(&b, NvspMessage::SendSendBuffer(sb));
        let b = [103, 0, 0, 0, 0xfe, 0xca];
        check(
            &b,
            NvspMessage::RevokeReceiveBuffer(RevokeBuffer {
                id: U16::new(0xCAFE),
            }),
        );
        let b = pad40(&[106, 0, 0, 0, 0, 0]);
        let m = NvspMessage::RevokeSendBuffer(RevokeBuffer { id: U16::new(0) });
        check(&b, m);
        assert_eq!(m.name(), "REVOKE_SEND_BUF");
    }

    #[test]
    fn recv_buf_complete() {
        // 9709 sections of 1728 bytes.
        let b = [
            102, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xc0, 0x06, 0, 0, 0xed, 0x25, 0, 0,
            0xc0, 0xff, 0xff, 0x00,
        ];
        let m = NvspMessage::SendReceiveBufferComplete(SendReceiveBufferComplete::single_section(
            1728, 9709,
        ));
        check(&b, m);
        assert_eq!(m.name(), "SEND_RECV_BUF_COMPLETE");
        assert_eq!(1728 * 9709, 0x00ff_ffc0);
    }

    #[test]
    fn send_buf_complete() {
        let b = [105, 0, 0, 0, 1, 0, 0, 0, 0x00, 0x18, 0, 0];
        let m = SendSendBufferComplete {
            status: U32::new(1),
            section_size: U32::new(6144),
        };
        check(&b, NvspMessage::SendSendBufferComplete(m));
    }

    #[test]
    fn rndis_packet_and_completion() {
        let b = pad40(&[107, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        let m = SendRndisPacket {
            channel_type: U32::new(CHANNEL_TYPE_CONTROL),
            section_index: U32::new(NO_SECTION),
            section_size: U32::new(0),
        };
        check(&b, NvspMessage::SendRndisPacket(m));
        let b = pad40(&[107, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0x2a, 0x05, 0, 0]);
        let m = SendRndisPacket {
            channel_type: U32::new(CHANNEL_TYPE_DATA),
            section_index: U32::new(3),
            section_size: U32::new(1322),
        };
        check(&b, NvspMessage::SendRndisPacket(m));
        // The guest's 8-byte receive completion.
        let b = [108, 0, 0, 0, 1, 0, 0, 0];
        let m = NvspMessage::SendRndisPacketComplete(SendRndisPacketComplete {
            status: U32::new(1),
        });
        check(&b, m);
        assert_eq!(m.len(), RECEIVE_COMPLETION_SIZE);
        assert_eq!(m.name(), "SEND_RNDIS_PKT_COMPLETE");
    }

    #[test]
    fn ndis_config() {
        let b = pad40(&[
            125, 0, 0, 0, 0xea, 0x05, 0, 0, 0, 0, 0, 0, 0xac, 0, 0, 0, 0, 0, 0, 0,
        ]);
        let m = SendNdisConfig {
            mtu: U32::new(1514),
            reserved: U32::new(0),
            capability: U64::new(0xAC),
        };
        check(&b, NvspMessage::SendNdisConfig(m));
        assert_eq!(NvspMessage::SendNdisConfig(m).name(), "SEND_NDIS_CONFIG");
    }

    #[test]
    fn vf_and_data_path() {
        let b = [128, 0, 0, 0, 1, 0, 0, 0, 0x39, 0x30, 0, 0];
        let m = SendVfAssociation {
            allocated: U32::new(1),
            serial: U32::new(12345),
        };
        check(&b, NvspMessage::SendVfAssociation(m));
        let b = pad40(&[129, 0, 0, 0, 1, 0, 0, 0]);
        let m = NvspMessage::SwitchDataPath(SwitchDataPath {
            active_datapath: U32::new(DATAPATH_VF),
        });
        check(&b, m);
        assert_eq!(m.name(), "SWITCH_DATA_PATH");
    }

    #[test]
    fn oid_query_ex() {
        let b = [131, 0, 0, 0, 0x80, 1, 4, 0, 0x07, 0x01, 0x01, 0x00];
        let m = OidQueryEx {
            header_type: 0x80,
            header_revision: 1,
            header_size: U16::new(4),
            oid: U32::new(0x0001_0107),
        };
        check(&b, NvspMessage::OidQueryEx(m));
        let b = [132, 0, 0, 0, 0xbb, 0, 0, 0xc0, 0, 0, 0, 0];
        let m = OidQueryExComplete {
            status: U32::new(0xC000_00BB),
            bytes: U32::new(0),
        };
        check(&b, NvspMessage::OidQueryExComplete(m));
    }

    #[test]
    fn subchannel() {
        let b = pad40(&[133, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0]);
        let req = SubchannelRequest {
            op: U32::new(SUBCHANNEL_OP_ALLOCATE),
            num_subchannels: U32::new(7),
        };
        check(&b, NvspMessage::SubchannelRequest(req));
        let b = [133, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0];
        let m = NvspMessage::parse_completion(&b).unwrap();
        let comp = SubchannelComplete {
            status: U32::new(1),
            num_subchannels: U32::new(3),
        };
        assert_eq!(m, NvspMessage::SubchannelComplete(comp));
        assert_eq!(m.name(), "SUBCHANNEL");
        let mut buf = [0u8; 12];
        assert_eq!(m.emit(&mut buf), Ok(12));
        assert_eq!(buf, b);
        // Other types parse the same way in a completion.
        let b = [108, 0, 0, 0, 2, 0, 0, 0];
        assert_eq!(NvspMessage::parse_completion(&b), NvspMessage::parse(&b));
    }

    #[test]
    fn send_indirection_table_variant() {
        let mut b = [0u8; 104];
        crate::send_table::emit_send_indirection_table(
            &crate::send_table::default_table(2),
            &mut b,
        )
        .unwrap();
        let m = NvspMessage::parse(&b).unwrap();
        let NvspMessage::SendIndirectionTable(t) = m else {
            panic!()
        };
        assert_eq!(t.fixed.count.get(), 16);
        assert_eq!(t.fixed.offset.get(), 40);
        assert_eq!(t.table(version::V5).unwrap()[..4], [0, 1, 0, 1]);
        let mut buf = [0u8; 128];
        assert_eq!(m.emit(&mut buf), Ok(104));
        assert_eq!(&buf[..104], &b[..]);
        assert_eq!(m.name(), "SEND_INDIRECTION_TABLE");
        let mut fields = Vec::new();
        m.visit_fields(&mut |k, v| fields.push((k, v)));
        assert_eq!(fields[0], ("count", FieldValue::U64(16)));
        assert!(matches!(fields[2], ("table", FieldValue::U32List(l)) if l.len() == 16));
    }

    #[test]
    fn unknown_and_errors() {
        let b = [135, 0, 0, 0, 9];
        let m = NvspMessage::parse(&b).unwrap();
        assert_eq!(
            m,
            NvspMessage::Unknown {
                msg_type: 135,
                body: &[9]
            }
        );
        assert_eq!(m.name(), "PD_API");
        assert_eq!(
            NvspMessage::parse(&[200, 0, 0, 0]).unwrap().name(),
            "UNKNOWN"
        );
        assert_eq!(
            NvspMessage::parse(&[1, 0, 0]),
            Err(NvspError::NoHeader { len: 3 })
        );
        assert_eq!(
            NvspMessage::parse(&[1, 0, 0, 0, 1, 0, 0, 0]),
            Err(NvspError::TooShort {
                msg_type: 1,
                len: 8,
                min: 12
            })
        );
        let m = NvspMessage::Init(Init::exact(version::V1));
        assert_eq!(
            m.emit_padded(&mut [0u8; 20], 40),
            Err(NvspError::BufferTooSmall {
                msg_type: 1,
                needed: 40,
                available: 20
            })
        );
    }

    #[test]
    fn display_and_fields() {
        let m = NvspMessage::InitComplete(InitComplete::answer(version::V6_1, status::SUCCESS));
        assert_eq!(
            m.to_string(),
            "INIT_COMPLETE negotiated_ver=0xffffffff max_mdl_chain_len=34 status=1 status_name=SUCCESS"
        );
        let m = NvspMessage::Init(Init::exact(version::V6_1));
        assert_eq!(
            m.to_string(),
            "INIT min_ver=0x60001 min_ver_name=6.1 max_ver=0x60001 max_ver_name=6.1"
        );
    }

    fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
        let types = prop_oneof![0u32..3, 100u32..110, 124u32..138];
        (types, proptest::collection::vec(any::<u8>(), 0..120)).prop_map(|(t, mut rest)| {
            let mut v = t.to_le_bytes().to_vec();
            v.append(&mut rest);
            v
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = NvspMessage::parse(&bytes);
            let _ = NvspMessage::parse_completion(&bytes);
        }

        #[test]
        fn parse_emit_round_trip(bytes in message_bytes(), completion in any::<bool>()) {
            let parsed = if completion { NvspMessage::parse_completion(&bytes) } else { NvspMessage::parse(&bytes) };
            if let Ok(m) = parsed {
                let mut buf = [0u8; 200];
                let n = m.emit(&mut buf).unwrap();
                prop_assert!(n <= bytes.len());
                prop_assert_eq!(&buf[..n], &bytes[..n]);
                let again = if completion { NvspMessage::parse_completion(&buf[..n]) } else { NvspMessage::parse(&buf[..n]) };
                prop_assert_eq!(again, Ok(m));
                let padded = m.emit_padded(&mut buf, V6_1_MESSAGE_SIZE).unwrap();
                prop_assert_eq!(padded, n.max(V6_1_MESSAGE_SIZE));
                prop_assert!(buf[n..padded].iter().all(|&b| b == 0));
                m.visit_fields(&mut |_, _| {});
            }
        }
    }
}
