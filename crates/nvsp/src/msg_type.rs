//! NVSP message type numbers (`msg_type` u32 @0, PROTOCOL.md §4.3) and their names.

/// G→H: start NVSP at a version.
pub const INIT: u32 = 1;
/// H→G (in a completion): INIT's answer.
pub const INIT_COMPLETE: u32 = 2;
/// G→H: the NDIS version the guest speaks.
pub const SEND_NDIS_VER: u32 = 100;
/// G→H: the receive buffer's GPADL.
pub const SEND_RECV_BUF: u32 = 101;
/// H→G (in a completion): receive-buffer sections.
pub const SEND_RECV_BUF_COMPLETE: u32 = 102;
/// G→H: the receive buffer is withdrawn.
pub const REVOKE_RECV_BUF: u32 = 103;
/// G→H: the send buffer's GPADL.
pub const SEND_SEND_BUF: u32 = 104;
/// H→G (in a completion): send-buffer section size.
pub const SEND_SEND_BUF_COMPLETE: u32 = 105;
/// G→H: the send buffer is withdrawn.
pub const REVOKE_SEND_BUF: u32 = 106;
/// Both ways: one RNDIS message (or a batch) is in a section or in page ranges.
pub const SEND_RNDIS_PKT: u32 = 107;
/// Both ways (in a completion): RNDIS packet done.
pub const SEND_RNDIS_PKT_COMPLETE: u32 = 108;
/// G→H (NVSP ≥ 2): MTU and capabilities.
pub const SEND_NDIS_CONFIG: u32 = 125;
/// H→G (NVSP ≥ 4): a VF was assigned or withdrawn.
pub const SEND_VF_ASSOCIATION: u32 = 128;
/// Both ways (NVSP ≥ 4): transmit data path synthetic/VF.
pub const SWITCH_DATA_PATH: u32 = 129;
/// G→H (NVSP ≥ 5): extended OID query (unused by Linux).
pub const OID_QUERY_EX: u32 = 131;
/// H→G (NVSP ≥ 5): answer to OID_QUERY_EX.
pub const OID_QUERY_EX_COMPLETE: u32 = 132;
/// Both ways (NVSP ≥ 5): subchannel request and its completion.
pub const SUBCHANNEL: u32 = 133;
/// H→G (NVSP ≥ 5): the send indirection table.
pub const SEND_INDIRECTION_TABLE: u32 = 134;
/// NVSP 6 PD API (unused; the host rejects it).
pub const PD_API: u32 = 135;
/// NVSP 6 PD post batch (unused; the host rejects it).
pub const PD_POST_BATCH: u32 = 136;

/// The name of a message type as PROTOCOL.md writes it, e.g. `"SEND_RECV_BUF"`.
pub const fn name(msg_type: u32) -> Option<&'static str> {
    Some(match msg_type {
        INIT => "INIT",
        INIT_COMPLETE => "INIT_COMPLETE",
        SEND_NDIS_VER => "SEND_NDIS_VER",
        SEND_RECV_BUF => "SEND_RECV_BUF",
        SEND_RECV_BUF_COMPLETE => "SEND_RECV_BUF_COMPLETE",
        REVOKE_RECV_BUF => "REVOKE_RECV_BUF",
        SEND_SEND_BUF => "SEND_SEND_BUF",
        SEND_SEND_BUF_COMPLETE => "SEND_SEND_BUF_COMPLETE",
        REVOKE_SEND_BUF => "REVOKE_SEND_BUF",
        SEND_RNDIS_PKT => "SEND_RNDIS_PKT",
        SEND_RNDIS_PKT_COMPLETE => "SEND_RNDIS_PKT_COMPLETE",
        SEND_NDIS_CONFIG => "SEND_NDIS_CONFIG",
        SEND_VF_ASSOCIATION => "SEND_VF_ASSOCIATION",
        SWITCH_DATA_PATH => "SWITCH_DATA_PATH",
        OID_QUERY_EX => "OID_QUERY_EX",
        OID_QUERY_EX_COMPLETE => "OID_QUERY_EX_COMPLETE",
        SUBCHANNEL => "SUBCHANNEL",
        SEND_INDIRECTION_TABLE => "SEND_INDIRECTION_TABLE",
        PD_API => "PD_API",
        PD_POST_BATCH => "PD_POST_BATCH",
        _ => return None,
    })
}
