//! RNDIS control-message bodies (PROTOCOL.md §6.2): one zerocopy struct per message, the
//! part after the 8-byte header. Offsets in field docs are from the body start (byte 8 of
//! the message), as RNDIS counts them. Information and status buffers that follow the
//! fixed fields are handled by [`crate::message::RndisMessage`].

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// RNDIS major version a guest asks for (1.0).
pub const RNDIS_MAJOR_VERSION: u32 = 1;
/// RNDIS minor version (1.0).
pub const RNDIS_MINOR_VERSION: u32 = 0;
/// `max_xfer` Linux asks for in INITIALIZE.
pub const LINUX_MAX_XFER: u32 = 0x4000;
/// INIT_C `dev_flags`: connectionless device.
pub const DF_CONNECTIONLESS: u32 = 1;
/// INIT_C `medium`: 802.3.
pub const MEDIUM_802_3: u32 = 0;
/// INIT_C `max_pkt_per_msg` our host answers.
pub const HOST_MAX_PKT_PER_MSG: u32 = 8;
/// INIT_C `max_xfer` our host answers.
pub const HOST_MAX_XFER: u32 = 0xEFFF_FFFF;
/// INIT_C `pkt_align_factor` our host answers: 2^3 = 8 bytes.
pub const HOST_PKT_ALIGN_FACTOR: u32 = 3;
/// Largest `pkt_align_factor` a guest accepts (PROTOCOL.md §14 add).
pub const MAX_PKT_ALIGN_FACTOR: u32 = 12;
/// The `info_offset` Linux puts in QUERY/SET: right after the 20-byte fixed part.
pub const INFO_REQUEST_DATA_OFFSET: u32 = 20;
/// The `info_offset` of QUERY_C data right after its 16-byte fixed part.
pub const QUERY_COMPLETE_DATA_OFFSET: u32 = 16;
/// The `buf_offset` of INDICATE_STATUS data right after its 12-byte fixed part.
pub const INDICATE_STATUS_DATA_OFFSET: u32 = 12;

/// INITIALIZE body (16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Initialize {
    /// @0: request id, echoed in INIT_C.
    pub req_id: U32,
    /// @4: RNDIS major version (1).
    pub major: U32,
    /// @8: RNDIS minor version (0).
    pub minor: U32,
    /// @12: largest message the guest takes (Linux 0x4000).
    pub max_xfer: U32,
}
const _: () = assert!(size_of::<Initialize>() == 16);

impl Initialize {
    /// INITIALIZE as Linux sends it: version 1.0, `max_xfer` 0x4000.
    pub const fn linux(req_id: u32) -> Initialize {
        Initialize {
            req_id: U32::new(req_id),
            major: U32::new(RNDIS_MAJOR_VERSION),
            minor: U32::new(RNDIS_MINOR_VERSION),
            max_xfer: U32::new(LINUX_MAX_XFER),
        }
    }
}

/// INIT_C body (44).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct InitializeComplete {
    /// @0: the request's id.
    pub req_id: U32,
    /// @4: [`crate::status`].
    pub status: U32,
    /// @8: RNDIS major version.
    pub major: U32,
    /// @12: RNDIS minor version.
    pub minor: U32,
    /// @16: [`DF_CONNECTIONLESS`].
    pub dev_flags: U32,
    /// @20: [`MEDIUM_802_3`].
    pub medium: U32,
    /// @24: most messages the host accepts in one send-buffer section.
    pub max_pkt_per_msg: U32,
    /// @28: largest message the host accepts.
    pub max_xfer: U32,
    /// @32: batch alignment = 2^factor bytes.
    pub pkt_align_factor: U32,
    /// @36: address-family list offset (0).
    pub af_list_offset: U32,
    /// @40: address-family list size (0).
    pub af_list_size: U32,
}
const _: () = assert!(size_of::<InitializeComplete>() == 44);

impl InitializeComplete {
    /// Our host's answer (as OpenVMM): success, 1.0, connectionless 802.3, 8 messages per
    /// section, `max_xfer` 0xEFFFFFFF, 8-byte alignment, no address-family list.
    pub const fn host(req_id: u32) -> InitializeComplete {
        InitializeComplete {
            req_id: U32::new(req_id),
            status: U32::new(crate::status::SUCCESS),
            major: U32::new(RNDIS_MAJOR_VERSION),
            minor: U32::new(RNDIS_MINOR_VERSION),
            dev_flags: U32::new(DF_CONNECTIONLESS),
            medium: U32::new(MEDIUM_802_3),
            max_pkt_per_msg: U32::new(HOST_MAX_PKT_PER_MSG),
            max_xfer: U32::new(HOST_MAX_XFER),
            pkt_align_factor: U32::new(HOST_PKT_ALIGN_FACTOR),
            af_list_offset: U32::new(0),
            af_list_size: U32::new(0),
        }
    }

    /// The batch alignment in bytes, `2^pkt_align_factor`, if the factor is at most 12
    /// (the guest's sanity rule; a larger value is not trusted).
    pub fn pkt_align(&self) -> Option<u32> {
        let f = self.pkt_align_factor.get();
        (f <= MAX_PKT_ALIGN_FACTOR).then(|| 1 << f)
    }
}

/// Body of messages that carry only a request id: HALT, KEEPALIVE (4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RequestId {
    /// @0: request id.
    pub req_id: U32,
}
const _: () = assert!(size_of::<RequestId>() == 4);

/// QUERY and SET fixed body (20); the information buffer follows at `info_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct InfoRequest {
    /// @0: request id.
    pub req_id: U32,
    /// @4: the OID ([`crate::oid`]).
    pub oid: U32,
    /// @8: information buffer length.
    pub info_len: U32,
    /// @12: information buffer offset from the body start (Linux 20).
    pub info_offset: U32,
    /// @16: 0.
    pub vc_handle: U32,
}
const _: () = assert!(size_of::<InfoRequest>() == 20);

/// QUERY_C fixed body (16); the information buffer follows at `info_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct QueryCompleteFixed {
    /// @0: the request's id.
    pub req_id: U32,
    /// @4: [`crate::status`].
    pub status: U32,
    /// @8: information buffer length.
    pub info_len: U32,
    /// @12: information buffer offset from the body start (≥ 16).
    pub info_offset: U32,
}
const _: () = assert!(size_of::<QueryCompleteFixed>() == 16);

/// Body of completions with a request id and a status: SET_C, KEEPALIVE_C (8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RequestComplete {
    /// @0: the request's id.
    pub req_id: U32,
    /// @4: [`crate::status`].
    pub status: U32,
}
const _: () = assert!(size_of::<RequestComplete>() == 8);

/// RESET body (4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct Reset {
    /// @0: reserved.
    pub reserved: U32,
}
const _: () = assert!(size_of::<Reset>() == 4);

/// RESET_C body (8); no request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ResetComplete {
    /// @0: [`crate::status`].
    pub status: U32,
    /// @4: whether addressing information was reset.
    pub addressing_reset: U32,
}
const _: () = assert!(size_of::<ResetComplete>() == 8);

/// INDICATE_STATUS fixed body (12); the status buffer follows at `buf_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IndicateStatusFixed {
    /// @0: the indication ([`crate::status`]).
    pub status: U32,
    /// @4: status buffer length.
    pub buf_len: U32,
    /// @8: status buffer offset from the body start (≥ 12).
    pub buf_offset: U32,
}
const _: () = assert!(size_of::<IndicateStatusFixed>() == 12);

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn host_init_complete_bytes() {
        let c = InitializeComplete::host(7);
        assert_eq!(
            c.as_bytes(),
            &[
                7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0,
                0xff, 0xff, 0xff, 0xef, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ]
        );
        assert_eq!(c.pkt_align(), Some(8));
        let mut bad = c;
        bad.pkt_align_factor = U32::new(13);
        assert_eq!(bad.pkt_align(), None);
        bad.pkt_align_factor = U32::new(u32::MAX);
        assert_eq!(bad.pkt_align(), None);
    }

    #[test]
    fn linux_initialize_bytes() {
        assert_eq!(
            Initialize::linux(1).as_bytes(),
            &[1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0]
        );
    }
}
