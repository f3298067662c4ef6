//! Receive-side scaling objects: NDIS_RECEIVE_SCALE_CAPABILITIES (PROTOCOL.md §7.4) and
//! NDIS_RECEIVE_SCALE_PARAMETERS (§7.5), plus the hash-info bits shared with the hash-info
//! PPI. The parameters are parsed with the host's rules into a fixed 128-entry table.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::error::RndisError;
use crate::ndis_object::{NdisObjectHeader, TYPE_RSS_CAPABILITIES, TYPE_RSS_PARAMETERS};

/// Hash function and hash-type bits (`hash_info`, also the hash-info PPI).
pub mod hash {
    /// Mask of the hash function.
    pub const FUNCTION_MASK: u32 = 0xFF;
    /// Toeplitz.
    pub const FUNCTION_TOEPLITZ: u32 = 0x1;
    /// IPv4 2-tuple.
    pub const IPV4: u32 = 0x100;
    /// TCP over IPv4 4-tuple.
    pub const TCP_IPV4: u32 = 0x200;
    /// IPv6 2-tuple.
    pub const IPV6: u32 = 0x400;
    /// IPv6 with extension headers.
    pub const IPV6_EX: u32 = 0x800;
    /// TCP over IPv6 4-tuple.
    pub const TCP_IPV6: u32 = 0x1000;
    /// TCP over IPv6 with extension headers.
    pub const TCP_IPV6_EX: u32 = 0x2000;
    /// UDP over IPv4 4-tuple.
    pub const UDP_IPV4: u32 = 0x4000;
    /// UDP over IPv6 4-tuple.
    pub const UDP_IPV6: u32 = 0x8000;
    /// UDP over IPv6 with extension headers.
    pub const UDP_IPV6_EX: u32 = 0x10000;
    /// What Linux sends: Toeplitz over IPv4, TCP/IPv4, IPv6, TCP/IPv6 (0x1701).
    pub const LINUX: u32 = FUNCTION_TOEPLITZ | IPV4 | TCP_IPV4 | IPV6 | TCP_IPV6;
}

/// RSS capability flag bits (`cap_flags`; Linux ignores them).
pub mod caps {
    /// TCP/IPv4 hashing.
    pub const HASH_TYPE_TCP_IPV4: u32 = 0x100;
    /// TCP/IPv6 hashing.
    pub const HASH_TYPE_TCP_IPV6: u32 = 0x200;
    /// TCP/IPv6 with extension headers.
    pub const HASH_TYPE_TCP_IPV6_EX: u32 = 0x400;
    /// UDP/IPv4 hashing.
    pub const HASH_TYPE_UDP_IPV4: u32 = 0x800;
    /// UDP/IPv6 hashing.
    pub const HASH_TYPE_UDP_IPV6: u32 = 0x1000;
    /// UDP/IPv6 with extension headers.
    pub const HASH_TYPE_UDP_IPV6_EX: u32 = 0x2000;
}

/// RSS parameter flag bits.
pub mod flags {
    /// Keep the base CPU.
    pub const BASE_CPU_UNCHANGED: u16 = 0x1;
    /// Keep the hash info.
    pub const HASH_INFO_UNCHANGED: u16 = 0x2;
    /// Keep the table.
    pub const TABLE_UNCHANGED: u16 = 0x4;
    /// Keep the key.
    pub const KEY_UNCHANGED: u16 = 0x8;
    /// Turn RSS off.
    pub const DISABLE_RSS: u16 = 0x10;
}

/// Size of RSS capabilities (packed).
pub const RSS_CAPABILITIES_SIZE: usize = 18;
/// Size of the fixed part of RSS parameters.
pub const RSS_PARAMETERS_SIZE: usize = 40;
/// Size of the Toeplitz key.
pub const RSS_KEY_SIZE: usize = 40;
/// Entries in the host's indirection table.
pub const RSS_TABLE_ENTRIES: usize = 128;
/// Largest table in bytes (128 × u32).
pub const RSS_TABLE_MAX_BYTES: usize = RSS_TABLE_ENTRIES * 4;

/// The default Toeplitz key (Microsoft's verification key, as Linux uses).
pub const DEFAULT_KEY: [u8; RSS_KEY_SIZE] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// NDIS_RECEIVE_SCALE_CAPABILITIES (18 bytes packed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RssCapabilities {
    /// @0: {0x88, 2, 18}.
    pub header: NdisObjectHeader,
    /// @4: [`caps`] bits.
    pub cap_flags: U32,
    /// @8: interrupt messages.
    pub num_int_msg: U32,
    /// @12: receive queues.
    pub num_recv_queues: U32,
    /// @16: indirection table entries.
    pub num_table_entries: U16,
}
const _: () = assert!(size_of::<RssCapabilities>() == RSS_CAPABILITIES_SIZE);

impl RssCapabilities {
    /// The header of the query and the answer.
    pub const HEADER: NdisObjectHeader =
        NdisObjectHeader::new(TYPE_RSS_CAPABILITIES, 2, RSS_CAPABILITIES_SIZE as u16);

    /// The guest's QUERY data: header + zeros.
    pub fn query() -> RssCapabilities {
        let mut c = RssCapabilities::new_zeroed();
        c.header = Self::HEADER;
        c
    }

    /// Our host's answer: TCP/IPv4 and TCP/IPv6 hashing (0x300), 1 message, `queues`
    /// queues, 128 entries.
    pub fn host(queues: u32) -> RssCapabilities {
        RssCapabilities {
            header: Self::HEADER,
            cap_flags: U32::new(caps::HASH_TYPE_TCP_IPV4 | caps::HASH_TYPE_TCP_IPV6),
            num_int_msg: U32::new(1),
            num_recv_queues: U32::new(queues),
            num_table_entries: U16::new(RSS_TABLE_ENTRIES as u16),
        }
    }

    /// Reads the 18 bytes (header not checked: Linux reads only the counts).
    pub fn parse(data: &[u8]) -> Result<RssCapabilities, RndisError> {
        RssCapabilities::read_from_prefix(data)
            .map(|(c, _)| c)
            .map_err(|_| RndisError::ObjectTooShort {
                object: "RSS capabilities",
                len: data.len(),
                min: RSS_CAPABILITIES_SIZE,
            })
    }

    /// The guest's RX table size (Linux): the host's count if 1…256, else 128.
    pub fn guest_table_entries(&self) -> usize {
        match self.num_table_entries.get() {
            n @ 1..=256 => usize::from(n),
            _ => RSS_TABLE_ENTRIES,
        }
    }
}

/// NDIS_RECEIVE_SCALE_PARAMETERS fixed part (40); the table and key follow at their offsets
/// (from the object start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RssParametersFixed {
    /// @0: {0x89, 2, 40} (not validated by vmswitch).
    pub header: NdisObjectHeader,
    /// @4: [`flags`].
    pub flags: U16,
    /// @6: base CPU (0).
    pub base_cpu: U16,
    /// @8: [`hash`] function | types.
    pub hash_info: U32,
    /// @12: table size in **bytes** (4 × entries).
    pub table_size: U16,
    /// @14: padding.
    pub pad1: U16,
    /// @16: table offset (40).
    pub table_offset: U32,
    /// @20: key size (40).
    pub key_size: U16,
    /// @22: padding.
    pub pad2: U16,
    /// @24: key offset (40 + table size).
    pub key_offset: U32,
    /// @28: processor masks offset (0).
    pub processor_masks_offset: U32,
    /// @32: processor masks count (0).
    pub processor_masks_count: U32,
    /// @36: processor masks entry size (0).
    pub processor_masks_entry_size: U32,
}
const _: () = assert!(size_of::<RssParametersFixed>() == RSS_PARAMETERS_SIZE);

/// RSS as the host applies it after a SET of the parameters. (The enabled variant is
/// large, ~560 bytes, and stays unboxed: the crate works without alloc.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RssConfig {
    /// DISABLE_RSS or hash function 0: everything to queue 0.
    Disabled,
    /// Toeplitz hashing with this configuration.
    Enabled(RssSettings),
}

/// An enabled RSS configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RssSettings {
    /// Hash function | types.
    pub hash_info: u32,
    /// The Toeplitz key.
    pub key: [u8; RSS_KEY_SIZE],
    /// 128 queue numbers (a shorter table repeated), each < the queue count.
    pub table: [u32; RSS_TABLE_ENTRIES],
    /// The flags as sent.
    pub flags: u16,
}

/// Parses RSS parameters with the host's rules (§7.5): DISABLE_RSS or hash function 0 →
/// [`RssConfig::Disabled`]; else Toeplitz only, key size 40, table size a non-zero multiple
/// of 4 and ≤ 512, table and key inside `data`, entries < `queues`; a shorter table is
/// repeated to 128 entries. The header is not checked. UNCHANGED flags are ignored (Linux
/// always sends table and key).
pub fn parse_rss_parameters(data: &[u8], queues: u32) -> Result<RssConfig, RndisError> {
    let (p, _) =
        RssParametersFixed::read_from_prefix(data).map_err(|_| RndisError::ObjectTooShort {
            object: "RSS parameters",
            len: data.len(),
            min: RSS_PARAMETERS_SIZE,
        })?;
    let hash_info = p.hash_info.get();
    let function = hash_info & hash::FUNCTION_MASK;
    if p.flags.get() & flags::DISABLE_RSS != 0 || function == 0 {
        return Ok(RssConfig::Disabled);
    }
    if function != hash::FUNCTION_TOEPLITZ {
        return Err(RndisError::RssHashFunction { function });
    }
    let key_size = p.key_size.get();
    if usize::from(key_size) != RSS_KEY_SIZE {
        return Err(RndisError::RssKeySize { size: key_size });
    }
    let table_size = p.table_size.get();
    let tsize = usize::from(table_size);
    if tsize == 0 || !tsize.is_multiple_of(4) || tsize > RSS_TABLE_MAX_BYTES {
        return Err(RndisError::RssTableSize { size: table_size });
    }
    let slice = |what, offset: U32, len: usize| {
        let off = offset.get();
        (off as usize)
            .checked_add(len)
            .and_then(|end| data.get(off as usize..end))
            .ok_or(RndisError::RssOutOfBounds {
                what,
                offset: off,
                len,
                available: data.len(),
            })
    };
    let table_bytes = slice("table", p.table_offset, tsize)?;
    let key_bytes = slice("key", p.key_offset, RSS_KEY_SIZE)?;
    let mut key = [0u8; RSS_KEY_SIZE];
    key.copy_from_slice(key_bytes);
    let entries = tsize / 4;
    let mut given = [0u32; RSS_TABLE_ENTRIES];
    for (index, (out, chunk)) in given
        .iter_mut()
        .zip(table_bytes.chunks_exact(4))
        .enumerate()
    {
        let entry = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        if entry >= queues {
            return Err(RndisError::RssEntryOutOfRange {
                index,
                entry,
                queues,
            });
        }
        *out = entry;
    }
    let mut table = [0u32; RSS_TABLE_ENTRIES];
    for (i, e) in table.iter_mut().enumerate() {
        *e = given[i % entries];
    }
    Ok(RssConfig::Enabled(RssSettings {
        hash_info,
        key,
        table,
        flags: p.flags.get(),
    }))
}

/// Writes RSS parameters as a guest sends them (Linux layout): header {0x89, 2, 40},
/// `flags`, base CPU 0, `hash_info`, table of `table.len()` u32 at 40, the 40-byte key
/// right after. Returns `40 + 4 × entries + 40` (592 for 128 entries).
pub fn emit_rss_parameters(
    buf: &mut [u8],
    flags: u16,
    hash_info: u32,
    table: &[u32],
    key: &[u8; RSS_KEY_SIZE],
) -> Result<usize, RndisError> {
    let tsize = table.len() * 4;
    if tsize > RSS_TABLE_MAX_BYTES {
        return Err(RndisError::TooLong {
            what: "RSS table",
            len: tsize,
        });
    }
    let total = RSS_PARAMETERS_SIZE + tsize + RSS_KEY_SIZE;
    let Some(out) = buf.get_mut(..total) else {
        return Err(RndisError::BufferTooSmall {
            what: "RSS parameters",
            needed: total,
            available: buf.len(),
        });
    };
    let mut p = RssParametersFixed::new_zeroed();
    p.header = NdisObjectHeader::new(TYPE_RSS_PARAMETERS, 2, RSS_PARAMETERS_SIZE as u16);
    p.flags = U16::new(flags);
    p.hash_info = U32::new(hash_info);
    p.table_size = U16::new(tsize as u16);
    p.table_offset = U32::new(RSS_PARAMETERS_SIZE as u32);
    p.key_size = U16::new(RSS_KEY_SIZE as u16);
    p.key_offset = U32::new((RSS_PARAMETERS_SIZE + tsize) as u32);
    out[..RSS_PARAMETERS_SIZE].copy_from_slice(p.as_bytes());
    for (chunk, e) in out[RSS_PARAMETERS_SIZE..RSS_PARAMETERS_SIZE + tsize]
        .chunks_exact_mut(4)
        .zip(table)
    {
        chunk.copy_from_slice(&e.to_le_bytes());
    }
    out[RSS_PARAMETERS_SIZE + tsize..].copy_from_slice(key);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_bytes() {
        let c = RssCapabilities::host(8);
        assert_eq!(
            c.as_bytes(),
            &[0x88, 2, 18, 0, 0, 3, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 128, 0]
        );
        assert_eq!(RssCapabilities::parse(c.as_bytes()), Ok(c));
        assert_eq!(
            RssCapabilities::query().as_bytes(),
            &[0x88, 2, 18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert!(RssCapabilities::parse(&c.as_bytes()[..17]).is_err());
        assert_eq!(c.guest_table_entries(), 128);
        let mut c2 = c;
        c2.num_table_entries = U16::new(64);
        assert_eq!(c2.guest_table_entries(), 64);
        c2.num_table_entries = U16::new(0);
        assert_eq!(c2.guest_table_entries(), 128);
        c2.num_table_entries = U16::new(300);
        assert_eq!(c2.guest_table_entries(), 128);
    }

    #[test]
    fn parameters_bytes() {
        // 2 entries, default key, as a guest with 2 queues would (small for the test).
        let mut buf = [0u8; 100];
        let n = emit_rss_parameters(&mut buf, 0, hash::LINUX, &[0, 1], &DEFAULT_KEY).unwrap();
        assert_eq!(n, 88);
        assert_eq!(
            &buf[..48],
            &[
                0x89, 2, 40, 0, // header
                0, 0, 0, 0, // flags, base_cpu
                0x01, 0x17, 0, 0, // hash_info 0x1701
                8, 0, 0, 0, // table_size 8 + pad
                40, 0, 0, 0, // table_offset
                40, 0, 0, 0, // key_size + pad
                48, 0, 0, 0, // key_offset
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // processor masks
                0, 0, 0, 0, 1, 0, 0, 0, // table
            ]
        );
        assert_eq!(&buf[48..88], &DEFAULT_KEY);
        let RssConfig::Enabled(s) = parse_rss_parameters(&buf[..n], 2).unwrap() else {
            panic!()
        };
        assert_eq!(s.hash_info, 0x1701);
        assert_eq!(s.key, DEFAULT_KEY);
        assert_eq!(&s.table[..4], &[0, 1, 0, 1]);
        assert_eq!(s.table[127], 1);
        // 128 entries: 592 bytes.
        let table: Vec<u32> = (0..128).map(|i| i % 8).collect();
        let mut big = [0u8; 600];
        assert_eq!(
            emit_rss_parameters(
                &mut big,
                flags::DISABLE_RSS,
                hash::LINUX,
                &table,
                &DEFAULT_KEY
            ),
            Ok(592)
        );
        assert_eq!(
            parse_rss_parameters(&big[..592], 8),
            Ok(RssConfig::Disabled)
        );
    }

    #[test]
    fn host_rules() {
        let mut buf = [0u8; 100];
        let n = emit_rss_parameters(&mut buf, 0, hash::LINUX, &[0, 1], &DEFAULT_KEY).unwrap();
        let good = buf;
        // Entry ≥ queues.
        assert_eq!(
            parse_rss_parameters(&good[..n], 1),
            Err(RndisError::RssEntryOutOfRange {
                index: 1,
                entry: 1,
                queues: 1
            })
        );
        // Function 0 → disabled.
        let mut m = good;
        m[8] = 0;
        assert_eq!(parse_rss_parameters(&m[..n], 2), Ok(RssConfig::Disabled));
        // Other function.
        let mut m = good;
        m[8] = 2;
        assert_eq!(
            parse_rss_parameters(&m[..n], 2),
            Err(RndisError::RssHashFunction { function: 2 })
        );
        // Key size.
        let mut m = good;
        m[20] = 32;
        assert_eq!(
            parse_rss_parameters(&m[..n], 2),
            Err(RndisError::RssKeySize { size: 32 })
        );
        // Table size 0, 6, 516.
        for size in [0u16, 6, 516] {
            let mut m = good;
            m[12..14].copy_from_slice(&size.to_le_bytes());
            assert_eq!(
                parse_rss_parameters(&m[..n], 2),
                Err(RndisError::RssTableSize { size })
            );
        }
        // Key outside.
        assert!(matches!(
            parse_rss_parameters(&good[..n - 1], 2),
            Err(RndisError::RssOutOfBounds { what: "key", .. })
        ));
        // Table offset huge.
        let mut m = good;
        m[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse_rss_parameters(&m[..n], 2),
            Err(RndisError::RssOutOfBounds { what: "table", .. })
        ));
        assert!(parse_rss_parameters(&good[..39], 2).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..700), queues in 0u32..70) {
            let _ = parse_rss_parameters(&bytes, queues);
            let _ = RssCapabilities::parse(&bytes);
        }

        #[test]
        fn round_trip(table in proptest::collection::vec(0u32..16, 1..=128), key in proptest::array::uniform32(proptest::num::u8::ANY)) {
            let mut k = DEFAULT_KEY;
            k[..32].copy_from_slice(&key);
            let mut buf = [0u8; 600];
            let n = emit_rss_parameters(&mut buf, 0, hash::LINUX, &table, &k).unwrap();
            let RssConfig::Enabled(s) = parse_rss_parameters(&buf[..n], 16).unwrap() else { panic!() };
            proptest::prop_assert_eq!(s.key, k);
            for i in 0..128 {
                proptest::prop_assert_eq!(s.table[i], table[i % table.len()]);
            }
        }
    }
}
