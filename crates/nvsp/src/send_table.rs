//! The send indirection table (SEND_INDIRECTION_TABLE, type 134, PROTOCOL.md §4.11).
//!
//! 16 queue numbers; the guest sends a flow on `table[hash & 15]`. The message's `offset`
//! field is unreliable before NVSP 6.1, so reading the table needs the negotiated version.
//! Our host writes the Windows layout: table at 40 with `offset = 40`, 104 bytes.

use zerocopy::IntoBytes;
use zerocopy::little_endian::U32;

use crate::message::NvspError;
use crate::msg_type;
use crate::wire::{HEADER_SIZE, SEND_TABLE_ENTRIES, SendIndirectionTableFixed};
use zerocopy::FromBytes;

/// Where our host puts the table (Windows layout).
pub const TABLE_OFFSET: usize = 40;

/// Size of the table in bytes (16 × u32).
pub const TABLE_BYTES: usize = SEND_TABLE_ENTRIES * 4;

/// Size of the message our host sends: 40 + 64.
pub const MESSAGE_SIZE: usize = TABLE_OFFSET + TABLE_BYTES;

/// Finds the table inside a whole SEND_INDIRECTION_TABLE message (from the `msg_type` word
/// on) and returns it as borrowed entries, with Linux's rule: for NVSP ≤ 6 and a message of
/// at least 104 bytes the table is at 40 whatever `offset` says; otherwise at `offset`.
/// Always `count == 16` and the table inside the message.
pub fn table_entries(message: &[u8], nvsp_version: u32) -> Result<&[U32], NvspError> {
    let Ok((header, rest)) = crate::wire::Header::read_from_prefix(message) else {
        return Err(NvspError::NoHeader { len: message.len() });
    };
    let t = header.msg_type.get();
    if t != msg_type::SEND_INDIRECTION_TABLE {
        return Err(NvspError::UnexpectedType {
            msg_type: t,
            expected: msg_type::SEND_INDIRECTION_TABLE,
        });
    }
    let Ok((fixed, _)) = SendIndirectionTableFixed::read_from_prefix(rest) else {
        return Err(NvspError::TooShort {
            msg_type: t,
            len: message.len(),
            min: HEADER_SIZE + size_of::<SendIndirectionTableFixed>(),
        });
    };
    let count = fixed.count.get();
    if count as usize != SEND_TABLE_ENTRIES {
        return Err(NvspError::SendTableCount { count });
    }
    let offset = if nvsp_version <= crate::version::V6 && message.len() >= MESSAGE_SIZE {
        TABLE_OFFSET
    } else {
        fixed.offset.get() as usize
    };
    let table = message
        .get(offset..)
        .and_then(|b| <[U32]>::ref_from_prefix_with_elems(b, SEND_TABLE_ENTRIES).ok())
        .map(|(t, _)| t);
    table.ok_or(NvspError::SendTableOffset {
        offset: offset as u64,
        len: message.len(),
    })
}

/// Reads the 16 queue numbers of a SEND_INDIRECTION_TABLE message (see [`table_entries`]
/// for the rule). Entries are returned as sent: fold them modulo the queue count at use.
pub fn parse_send_indirection_table(
    message: &[u8],
    nvsp_version: u32,
) -> Result<[u32; SEND_TABLE_ENTRIES], NvspError> {
    let entries = table_entries(message, nvsp_version)?;
    let mut table = [0u32; SEND_TABLE_ENTRIES];
    for (out, e) in table.iter_mut().zip(entries) {
        *out = e.get();
    }
    Ok(table)
}

/// Writes a SEND_INDIRECTION_TABLE message in the Windows layout (table at 40, `offset`
/// 40, zeros @12..40) and returns its size, 104.
pub fn emit_send_indirection_table(
    table: &[u32; SEND_TABLE_ENTRIES],
    buf: &mut [u8],
) -> Result<usize, NvspError> {
    let Some(out) = buf.get_mut(..MESSAGE_SIZE) else {
        return Err(NvspError::BufferTooSmall {
            msg_type: msg_type::SEND_INDIRECTION_TABLE,
            needed: MESSAGE_SIZE,
            available: buf.len(),
        });
    };
    out.fill(0);
    out[..4].copy_from_slice(&msg_type::SEND_INDIRECTION_TABLE.to_le_bytes());
    let fixed = SendIndirectionTableFixed {
        count: U32::new(SEND_TABLE_ENTRIES as u32),
        offset: U32::new(TABLE_OFFSET as u32),
    };
    out[HEADER_SIZE..HEADER_SIZE + size_of::<SendIndirectionTableFixed>()]
        .copy_from_slice(fixed.as_bytes());
    for (chunk, e) in out[TABLE_OFFSET..].chunks_exact_mut(4).zip(table) {
        chunk.copy_from_slice(&e.to_le_bytes());
    }
    Ok(MESSAGE_SIZE)
}

/// The table a host sends for `channels` open channels: entry `i` = `i mod channels`
/// (all 0 if `channels` is 0).
pub fn default_table(channels: u32) -> [u32; SEND_TABLE_ENTRIES] {
    let mut table = [0u32; SEND_TABLE_ENTRIES];
    if channels != 0 {
        for (i, e) in table.iter_mut().enumerate() {
            *e = i as u32 % channels;
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version;

    /// Our host's 104-byte message for 4 channels, written out by hand.
    const OURS: [u8; 104] = [
        134, 0, 0, 0, // msg_type
        16, 0, 0, 0, // count
        40, 0, 0, 0, // offset
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // @12..26
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // @26..40
        0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, // entries 0..4
        0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, //
        0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, //
        0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, //
    ];

    #[test]
    fn emit_ours() {
        let mut buf = [0xffu8; 128];
        let table = default_table(4);
        assert_eq!(emit_send_indirection_table(&table, &mut buf), Ok(104));
        assert_eq!(&buf[..104], &OURS);
        for v in [version::V5, version::V6, version::V6_1] {
            assert_eq!(parse_send_indirection_table(&OURS, v), Ok(table));
        }
        assert!(matches!(
            emit_send_indirection_table(&table, &mut [0u8; 103]),
            Err(NvspError::BufferTooSmall {
                needed: 104,
                available: 103,
                ..
            })
        ));
    }

    #[test]
    fn openvmm_layout() {
        // 76 bytes: offset 12, table right after the fixed part.
        let mut m = vec![134, 0, 0, 0, 16, 0, 0, 0, 12, 0, 0, 0];
        for i in 0..16u32 {
            m.extend_from_slice(&(i % 3).to_le_bytes());
        }
        assert_eq!(m.len(), 76);
        let want = default_table(3);
        assert_eq!(parse_send_indirection_table(&m, version::V5), Ok(want));
        assert_eq!(parse_send_indirection_table(&m, version::V6_1), Ok(want));
    }

    #[test]
    fn bad_offset_before_6_1() {
        // A ≤ 6 host with the table at 40 but `offset` 12: the version rule reads @40.
        let mut m = OURS;
        m[8] = 12;
        assert_eq!(
            parse_send_indirection_table(&m, version::V6),
            Ok(default_table(4))
        );
        // From 6.1 the field is trusted.
        let t = parse_send_indirection_table(&m, version::V6_1).unwrap();
        assert_eq!(t, [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 0, 1, 2, 3, 0]);
    }

    #[test]
    fn rejects() {
        let mut m = OURS;
        m[4] = 15;
        assert_eq!(
            parse_send_indirection_table(&m, version::V6),
            Err(NvspError::SendTableCount { count: 15 })
        );
        let mut m = OURS;
        m[8] = 41;
        assert_eq!(
            parse_send_indirection_table(&m, version::V6_1),
            Err(NvspError::SendTableOffset {
                offset: 41,
                len: 104
            })
        );
        let mut m = OURS;
        m[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_send_indirection_table(&m, version::V6_1).is_err());
        assert!(matches!(
            parse_send_indirection_table(&OURS[..11], version::V6),
            Err(NvspError::TooShort {
                len: 11,
                min: 12,
                ..
            })
        ));
        assert!(matches!(
            parse_send_indirection_table(&[1, 0, 0, 0], version::V6),
            Err(NvspError::UnexpectedType { msg_type: 1, .. })
        ));
        // 103 bytes under NVSP 6: offset field (40) used, table would end at 104.
        assert!(parse_send_indirection_table(&OURS[..103], version::V6).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), v in 0u32..0x70000) {
            let _ = parse_send_indirection_table(&bytes, v);
        }

        #[test]
        fn round_trip(table in proptest::array::uniform16(proptest::num::u32::ANY), v in proptest::sample::select(&version::ALL[..])) {
            let mut buf = [0u8; MESSAGE_SIZE];
            let n = emit_send_indirection_table(&table, &mut buf).unwrap();
            proptest::prop_assert_eq!(parse_send_indirection_table(&buf[..n], v), Ok(table));
        }
    }
}
