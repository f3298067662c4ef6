//! NVSP message layouts (PROTOCOL.md §4.4): the 4-byte header and one zerocopy body struct
//! per message type. Field docs give offsets from the NVSP message start (header
//! included); the structs themselves start after the header, at byte 4. Each struct is
//! also the minimum length of its type: [`min_message_size`].

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::msg_type;

/// Size of the NVSP header (`msg_type` u32 @0).
pub const HEADER_SIZE: usize = 4;

/// Windows' message size below NVSP 6.1: header + largest v1 body (PROTOCOL.md §4.2).
pub const LEGACY_MESSAGE_SIZE: usize = 28;

/// Windows' and Linux's message size from NVSP 6.1 (Linux pads every message to it).
pub const V6_1_MESSAGE_SIZE: usize = 40;

/// Size of a guest's receive completion (SEND_RNDIS_PKT_COMPLETE, no padding).
pub const RECEIVE_COMPLETION_SIZE: usize = 8;

/// The receive buffer's id in SEND_RECV_BUF and in transfer-page packets.
pub const RECEIVE_BUFFER_ID: u16 = 0xCAFE;

/// The send buffer's id in SEND_SEND_BUF.
pub const SEND_BUFFER_ID: u16 = 0;

/// `section_index` of a SEND_RNDIS_PKT that uses no send-buffer section.
pub const NO_SECTION: u32 = 0xFFFF_FFFF;

/// `channel_type` of SEND_RNDIS_PKT: an RNDIS data packet.
pub const CHANNEL_TYPE_DATA: u32 = 0;

/// `channel_type` of SEND_RNDIS_PKT: an RNDIS control message.
pub const CHANNEL_TYPE_CONTROL: u32 = 1;

/// Send-buffer section size hosts answer (and Linux assumes before the answer).
pub const SEND_SECTION_SIZE: u32 = 6144;

/// Smallest section size Linux accepts in 102/105.
pub const MIN_SECTION_SIZE: u32 = 68;

/// INIT_COMPLETE's `max_mdl_chain_len`.
pub const MAX_MDL_CHAIN_LEN: u32 = 34;

/// SUBCHANNEL request `op`: allocate subchannels.
pub const SUBCHANNEL_OP_ALLOCATE: u32 = 1;

/// SWITCH_DATA_PATH `active_datapath`: the synthetic path.
pub const DATAPATH_SYNTHETIC: u32 = 0;

/// SWITCH_DATA_PATH `active_datapath`: the VF.
pub const DATAPATH_VF: u32 = 1;

/// Entries in the send indirection table.
pub const SEND_TABLE_ENTRIES: usize = 16;

/// The message size the host sends for a negotiated version: 28 below 6.1, 40 from 6.1
/// (PROTOCOL.md §4.2 Decision).
pub const fn host_message_size(nvsp: u32) -> usize {
    if nvsp >= crate::version::V6_1 {
        V6_1_MESSAGE_SIZE
    } else {
        LEGACY_MESSAGE_SIZE
    }
}

/// The NVSP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Header {
    /// @0: the message type ([`crate::msg_type`]).
    pub msg_type: U32,
}
const _: () = assert!(size_of::<Header>() == HEADER_SIZE);

/// INIT (1) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Init {
    /// @4: lowest acceptable version (the host decides on this one).
    pub min_ver: U32,
    /// @8: highest acceptable version (Linux: equal to `min_ver`).
    pub max_ver: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<Init>() == 12);

/// INIT_COMPLETE (2) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct InitComplete {
    /// @4: deprecated; `0xFFFFFFFF`, or 2 for NVSP 1.
    pub negotiated_ver: U32,
    /// @8: 34.
    pub max_mdl_chain_len: U32,
    /// @12: [`crate::status`]; SUCCESS if the version is accepted.
    pub status: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<InitComplete>() == 16);

/// SEND_NDIS_VER (100) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SendNdisVersion {
    /// @4: NDIS major (6).
    pub major: U32,
    /// @8: NDIS minor (1 or 30).
    pub minor: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<SendNdisVersion>() == 12);

/// SEND_RECV_BUF (101) and SEND_SEND_BUF (104) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SendBuffer {
    /// @4: the buffer's GPADL handle.
    pub gpadl: U32,
    /// @8: [`RECEIVE_BUFFER_ID`] (101) or [`SEND_BUFFER_ID`] (104); padding follows @10.
    pub id: U16,
}
const _: () = assert!(HEADER_SIZE + size_of::<SendBuffer>() == 10);

/// One receive-buffer section as described in SEND_RECV_BUF_COMPLETE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ReceiveSection {
    /// @12: offset of the section in the buffer (0).
    pub offset: U32,
    /// @16: size of one sub-allocation (≥ 68).
    pub sub_alloc_size: U32,
    /// @20: number of sub-allocations.
    pub num_sub_allocs: U32,
    /// @24: `sub_alloc_size × num_sub_allocs`.
    pub end_offset: U32,
}
const _: () = assert!(size_of::<ReceiveSection>() == 16);

/// SEND_RECV_BUF_COMPLETE (102) body, with its first (and, for Linux, only) section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SendReceiveBufferComplete {
    /// @4: [`crate::status`].
    pub status: U32,
    /// @8: number of sections (1).
    pub num_sections: U32,
    /// @12: the first section.
    pub section: ReceiveSection,
}
const _: () = assert!(HEADER_SIZE + size_of::<SendReceiveBufferComplete>() == 28);

/// REVOKE_RECV_BUF (103) and REVOKE_SEND_BUF (106) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RevokeBuffer {
    /// @4: the buffer id.
    pub id: U16,
}
const _: () = assert!(HEADER_SIZE + size_of::<RevokeBuffer>() == 6);

/// SEND_SEND_BUF_COMPLETE (105) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SendSendBufferComplete {
    /// @4: [`crate::status`].
    pub status: U32,
    /// @8: section size (6144).
    pub section_size: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<SendSendBufferComplete>() == 12);

/// SEND_RNDIS_PKT (107) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SendRndisPacket {
    /// @4: [`CHANNEL_TYPE_DATA`] or [`CHANNEL_TYPE_CONTROL`].
    pub channel_type: U32,
    /// @8: send-buffer section, or [`NO_SECTION`].
    pub section_index: U32,
    /// @12: bytes used in the section, else 0.
    pub section_size: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<SendRndisPacket>() == 16);

/// SEND_RNDIS_PKT_COMPLETE (108) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SendRndisPacketComplete {
    /// @4: [`crate::status`] (SUCCESS, or FAIL if any range failed).
    pub status: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<SendRndisPacketComplete>() == 8);

/// SEND_NDIS_CONFIG (125) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SendNdisConfig {
    /// @4: frame MTU = IP MTU + 14.
    pub mtu: U32,
    /// @8: reserved, 0.
    pub reserved: U32,
    /// @12: [`crate::capability`] bits.
    pub capability: U64,
}
const _: () = assert!(HEADER_SIZE + size_of::<SendNdisConfig>() == 20);

/// SEND_VF_ASSOCIATION (128) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SendVfAssociation {
    /// @4: 1 = a VF is present, 0 = withdrawn.
    pub allocated: U32,
    /// @8: the VF's PCI slot serial.
    pub serial: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<SendVfAssociation>() == 12);

/// SWITCH_DATA_PATH (129) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SwitchDataPath {
    /// @4: [`DATAPATH_SYNTHETIC`] or [`DATAPATH_VF`].
    pub active_datapath: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<SwitchDataPath>() == 8);

/// OID_QUERY_EX (131) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct OidQueryEx {
    /// @4: NDIS object header: type u8, revision u8, size u16.
    pub header_type: u8,
    /// @5: NDIS object revision.
    pub header_revision: u8,
    /// @6: NDIS object size.
    pub header_size: U16,
    /// @8: the OID.
    pub oid: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<OidQueryEx>() == 12);

/// OID_QUERY_EX_COMPLETE (132) body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct OidQueryExComplete {
    /// @4: NDIS status.
    pub status: U32,
    /// @8: bytes of result.
    pub bytes: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<OidQueryExComplete>() == 12);

/// SUBCHANNEL (133) request body (guest → host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SubchannelRequest {
    /// @4: [`SUBCHANNEL_OP_ALLOCATE`].
    pub op: U32,
    /// @8: subchannels wanted (queues − 1).
    pub num_subchannels: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<SubchannelRequest>() == 12);

/// SUBCHANNEL (133) completion body (host → guest, in a COMP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SubchannelComplete {
    /// @4: [`crate::status`].
    pub status: U32,
    /// @8: subchannels granted (≤ requested).
    pub num_subchannels: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<SubchannelComplete>() == 12);

/// SEND_INDIRECTION_TABLE (134) fixed part; the 16 × u32 table lies elsewhere in the
/// message (PROTOCOL.md §4.11, see [`crate::send_table`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SendIndirectionTableFixed {
    /// @4: entries (16).
    pub count: U32,
    /// @8: table offset from the NVSP message start (unreliable before NVSP 6.1).
    pub offset: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<SendIndirectionTableFixed>() == 12);

/// Minimum length of a message of each type hvnet parses (header included); `None` for
/// other types. Longer messages are always accepted (PROTOCOL.md §4.2, §16.13).
pub const fn min_message_size(t: u32) -> Option<usize> {
    let body = match t {
        msg_type::INIT => size_of::<Init>(),
        msg_type::INIT_COMPLETE => size_of::<InitComplete>(),
        msg_type::SEND_NDIS_VER => size_of::<SendNdisVersion>(),
        msg_type::SEND_RECV_BUF | msg_type::SEND_SEND_BUF => size_of::<SendBuffer>(),
        msg_type::SEND_RECV_BUF_COMPLETE => size_of::<SendReceiveBufferComplete>(),
        msg_type::REVOKE_RECV_BUF | msg_type::REVOKE_SEND_BUF => size_of::<RevokeBuffer>(),
        msg_type::SEND_SEND_BUF_COMPLETE => size_of::<SendSendBufferComplete>(),
        msg_type::SEND_RNDIS_PKT => size_of::<SendRndisPacket>(),
        msg_type::SEND_RNDIS_PKT_COMPLETE => size_of::<SendRndisPacketComplete>(),
        msg_type::SEND_NDIS_CONFIG => size_of::<SendNdisConfig>(),
        msg_type::SEND_VF_ASSOCIATION => size_of::<SendVfAssociation>(),
        msg_type::SWITCH_DATA_PATH => size_of::<SwitchDataPath>(),
        msg_type::OID_QUERY_EX => size_of::<OidQueryEx>(),
        msg_type::OID_QUERY_EX_COMPLETE => size_of::<OidQueryExComplete>(),
        msg_type::SUBCHANNEL => size_of::<SubchannelRequest>(),
        msg_type::SEND_INDIRECTION_TABLE => size_of::<SendIndirectionTableFixed>(),
        _ => return None,
    };
    Some(HEADER_SIZE + body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_sizes() {
        // PROTOCOL.md §14: completion payload ≥ 4 + body.
        assert_eq!(min_message_size(msg_type::INIT_COMPLETE), Some(4 + 12));
        assert_eq!(
            min_message_size(msg_type::SEND_RECV_BUF_COMPLETE),
            Some(4 + 24)
        );
        assert_eq!(
            min_message_size(msg_type::SEND_SEND_BUF_COMPLETE),
            Some(4 + 8)
        );
        assert_eq!(min_message_size(msg_type::SUBCHANNEL), Some(4 + 8));
        assert_eq!(
            min_message_size(msg_type::SEND_RNDIS_PKT_COMPLETE),
            Some(4 + 4)
        );
        assert_eq!(min_message_size(msg_type::SEND_VF_ASSOCIATION), Some(12));
        assert_eq!(min_message_size(msg_type::SEND_NDIS_CONFIG), Some(20));
        assert_eq!(min_message_size(msg_type::PD_API), None);
        // Every message fits the legacy size.
        for t in 0..200 {
            if let Some(n) = min_message_size(t) {
                assert!(n <= LEGACY_MESSAGE_SIZE, "type {t}");
            }
        }
        assert_eq!(host_message_size(crate::version::V6), 28);
        assert_eq!(host_message_size(crate::version::V6_1), 40);
    }
}
