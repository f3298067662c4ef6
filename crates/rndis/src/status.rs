//! NDIS status codes: RNDIS completion statuses (PROTOCOL.md §6.1) and the status
//! indications a host sends in INDICATE_STATUS (§6.5). Success is **0** here.

/// Success.
pub const SUCCESS: u32 = 0;
/// The request is pending.
pub const PENDING: u32 = 0x0000_0103;
/// The reply does not fit the buffer.
pub const BUFFER_OVERFLOW: u32 = 0x8000_0005;
/// Generic failure.
pub const FAILURE: u32 = 0xC000_0001;
/// The request (e.g. an unknown OID, SET_EX) is not supported.
pub const NOT_SUPPORTED: u32 = 0xC000_00BB;
/// The request's data is invalid.
pub const INVALID_DATA: u32 = 0xC001_0015;

/// Indication: link up (if already up, notify peers).
pub const MEDIA_CONNECT: u32 = 0x4001_000B;
/// Indication: carrier off, TX stopped.
pub const MEDIA_DISCONNECT: u32 = 0x4001_000C;
/// Indication: link speed changed; buffer = u32 in 100 bit/s.
pub const LINK_SPEED_CHANGE: u32 = 0x4001_0013;
/// Indication: network changed (down now, up 2 s later so DHCP re-runs).
pub const NETWORK_CHANGE: u32 = 0x4001_0018;
/// Indication: the task offload configuration changed (ignored by Linux).
pub const TASK_OFFLOAD_CURRENT_CONFIG: u32 = 0x4002_0006;

/// The name of a status or indication code, for traces.
pub const fn name(status: u32) -> Option<&'static str> {
    Some(match status {
        SUCCESS => "SUCCESS",
        PENDING => "PENDING",
        BUFFER_OVERFLOW => "BUFFER_OVERFLOW",
        FAILURE => "FAILURE",
        NOT_SUPPORTED => "NOT_SUPPORTED",
        INVALID_DATA => "INVALID_DATA",
        MEDIA_CONNECT => "MEDIA_CONNECT",
        MEDIA_DISCONNECT => "MEDIA_DISCONNECT",
        LINK_SPEED_CHANGE => "LINK_SPEED_CHANGE",
        NETWORK_CHANGE => "NETWORK_CHANGE",
        TASK_OFFLOAD_CURRENT_CONFIG => "TASK_OFFLOAD_CURRENT_CONFIG",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::name(0), Some("SUCCESS"));
        assert_eq!(super::name(0x4001_000B), Some("MEDIA_CONNECT"));
        assert_eq!(super::name(0xC000_00BB), Some("NOT_SUPPORTED"));
        assert_eq!(super::name(1), None);
    }
}
