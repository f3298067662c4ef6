//! The RNDIS message header and message types (PROTOCOL.md §6.1).
//!
//! Every RNDIS message starts with `type` u32 @0 and `msg_len` u32 @4 (the whole message,
//! header included). Offsets inside a body count from the body start, byte 8 (§16.6).

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::error::RndisError;

/// Size of the RNDIS header.
pub const HEADER_SIZE: usize = 8;

/// Bit set in the type of every completion (`INITIALIZE` 2 → `INIT_C` 0x80000002).
pub const COMPLETION_BIT: u32 = 0x8000_0000;

/// A data packet.
pub const PACKET: u32 = 1;
/// G→H: start the RNDIS device.
pub const INITIALIZE: u32 = 2;
/// G→H: stop the device (no reply).
pub const HALT: u32 = 3;
/// G→H: read an OID.
pub const QUERY: u32 = 4;
/// G→H: write an OID.
pub const SET: u32 = 5;
/// G→H: reset the device.
pub const RESET: u32 = 6;
/// H→G: a status indication (link up/down, speed, …).
pub const INDICATE_STATUS: u32 = 7;
/// Both ways: liveness check.
pub const KEEPALIVE: u32 = 8;
/// G→H: extended set (the host answers NOT_SUPPORTED).
pub const SET_EX: u32 = 9;
/// H→G: answer to INITIALIZE.
pub const INITIALIZE_COMPLETE: u32 = INITIALIZE | COMPLETION_BIT;
/// H→G: answer to QUERY.
pub const QUERY_COMPLETE: u32 = QUERY | COMPLETION_BIT;
/// H→G: answer to SET.
pub const SET_COMPLETE: u32 = SET | COMPLETION_BIT;
/// H→G: answer to RESET.
pub const RESET_COMPLETE: u32 = RESET | COMPLETION_BIT;
/// Answer to KEEPALIVE.
pub const KEEPALIVE_COMPLETE: u32 = KEEPALIVE | COMPLETION_BIT;

/// The name of a message type as PROTOCOL.md writes it (`"INIT_C"`, `"PACKET"`, …).
pub const fn message_type_name(msg_type: u32) -> Option<&'static str> {
    Some(match msg_type {
        PACKET => "PACKET",
        INITIALIZE => "INITIALIZE",
        HALT => "HALT",
        QUERY => "QUERY",
        SET => "SET",
        RESET => "RESET",
        INDICATE_STATUS => "INDICATE_STATUS",
        KEEPALIVE => "KEEPALIVE",
        SET_EX => "SET_EX",
        INITIALIZE_COMPLETE => "INIT_C",
        QUERY_COMPLETE => "QUERY_C",
        SET_COMPLETE => "SET_C",
        RESET_COMPLETE => "RESET_C",
        KEEPALIVE_COMPLETE => "KEEPALIVE_C",
        _ => return None,
    })
}

/// The RNDIS message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MessageHeader {
    /// @0: the message type.
    pub msg_type: U32,
    /// @4: the whole message's length, header included.
    pub msg_len: U32,
}
const _: () = assert!(size_of::<MessageHeader>() == HEADER_SIZE);

impl MessageHeader {
    /// A header for a message of `msg_type` and `msg_len` bytes.
    pub const fn new(msg_type: u32, msg_len: u32) -> MessageHeader {
        MessageHeader {
            msg_type: U32::new(msg_type),
            msg_len: U32::new(msg_len),
        }
    }
}

/// Frames one message at the start of `range` (the bytes available for it: a
/// transfer-page range, or the rest of a send-buffer stream): checks `range ≥ 8` and
/// `8 ≤ msg_len ≤ range`, and returns the type and the `msg_len` bytes of the message.
pub fn split_message(range: &[u8]) -> Result<(u32, &[u8]), RndisError> {
    let Ok((h, _)) = MessageHeader::read_from_prefix(range) else {
        return Err(RndisError::RangeTooShort { len: range.len() });
    };
    let msg_type = h.msg_type.get();
    let msg_len = h.msg_len.get();
    usize::try_from(msg_len)
        .ok()
        .filter(|&l| l >= HEADER_SIZE)
        .and_then(|l| range.get(..l))
        .map(|m| (msg_type, m))
        .ok_or(RndisError::BadMessageLength {
            msg_type,
            msg_len,
            range: range.len(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn header_bytes() {
        let h = MessageHeader::new(INITIALIZE_COMPLETE, 52);
        assert_eq!(h.as_bytes(), &[2, 0, 0, 0x80, 52, 0, 0, 0]);
        assert_eq!(
            MessageHeader::read_from_bytes(&[2, 0, 0, 0x80, 52, 0, 0, 0]).unwrap(),
            h
        );
        assert_eq!(message_type_name(INITIALIZE_COMPLETE), Some("INIT_C"));
        assert_eq!(message_type_name(KEEPALIVE_COMPLETE), Some("KEEPALIVE_C"));
        assert_eq!(message_type_name(0x8000_0001), None);
    }

    #[test]
    fn split() {
        let range = [8, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0xee, 0xee];
        assert_eq!(split_message(&range), Ok((KEEPALIVE, &range[..12])));
        assert_eq!(
            split_message(&range[..7]),
            Err(RndisError::RangeTooShort { len: 7 })
        );
        assert_eq!(
            split_message(&range[..11]),
            Err(RndisError::BadMessageLength {
                msg_type: 8,
                msg_len: 12,
                range: 11
            })
        );
        let short = [8, 0, 0, 0, 7, 0, 0, 0];
        assert!(matches!(
            split_message(&short),
            Err(RndisError::BadMessageLength { msg_len: 7, .. })
        ));
        let huge = [8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        assert!(split_message(&huge).is_err());
    }
}
