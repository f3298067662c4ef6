//! NVSP status codes (PROTOCOL.md §4.3). Note that success is **1** here, unlike VMBus and
//! RNDIS (§16.10).

/// No status.
pub const NONE: u32 = 0;
/// Success.
pub const SUCCESS: u32 = 1;
/// Failure.
pub const FAIL: u32 = 2;
/// The requested protocol is too new.
pub const PROTOCOL_TOO_NEW: u32 = 3;
/// The requested protocol is too old.
pub const PROTOCOL_TOO_OLD: u32 = 4;
/// A malformed RNDIS packet.
pub const INVALID_RNDIS_PKT: u32 = 5;
/// Busy, try again.
pub const BUSY: u32 = 6;
/// Not supported.
pub const PROTOCOL_UNSUPPORTED: u32 = 7;

/// The name of a status code, for traces.
pub const fn name(status: u32) -> Option<&'static str> {
    Some(match status {
        NONE => "NONE",
        SUCCESS => "SUCCESS",
        FAIL => "FAIL",
        PROTOCOL_TOO_NEW => "TOO_NEW",
        PROTOCOL_TOO_OLD => "TOO_OLD",
        INVALID_RNDIS_PKT => "INVALID_RNDIS_PKT",
        BUSY => "BUSY",
        PROTOCOL_UNSUPPORTED => "UNSUPPORTED",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::name(1), Some("SUCCESS"));
        assert_eq!(super::name(7), Some("UNSUPPORTED"));
        assert_eq!(super::name(8), None);
    }
}
