//! GUIDs as VMBus carries them (PROTOCOL.md §0).
//!
//! On the wire a GUID is 16 bytes in the mixed-endian Microsoft form: `data1` u32 LE,
//! `data2` u16 LE, `data3` u16 LE, then the last 8 bytes as written in the string form.
//! [`Guid`] is that wire layout, usable directly inside zerocopy message structs, with
//! conversion to and from the `f8615163-df3e-46c5-913f-f2d2f965ed0e` string form.

use core::fmt;
use core::str::FromStr;

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A GUID in its 16-byte VMBus wire form (mixed-endian, PROTOCOL.md §0).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Guid {
    /// First group (8 hex digits), little-endian on the wire.
    pub data1: U32,
    /// Second group (4 hex digits), little-endian on the wire.
    pub data2: U16,
    /// Third group (4 hex digits), little-endian on the wire.
    pub data3: U16,
    /// Last two groups (4 + 12 hex digits), bytes in string order.
    pub data4: [u8; 8],
}

const _: () = assert!(size_of::<Guid>() == 16);

/// The class GUID of the synthetic network adapter, `f8615163-df3e-46c5-913f-f2d2f965ed0e`:
/// the `if_type` of every netvsc offer (PROTOCOL.md §0, §3.3).
pub const NETVSC_CLASS: Guid = Guid::from_fields(
    0xf861_5163,
    0xdf3e,
    0x46c5,
    [0x91, 0x3f, 0xf2, 0xd2, 0xf9, 0x65, 0xed, 0x0e],
);

/// Why a string is not a GUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuidParseError {
    /// The string (braces removed) is not 36 characters long.
    #[error("GUID string has length {len}, expected 36")]
    BadLength {
        /// Length of the string without surrounding braces.
        len: usize,
    },
    /// A hyphen is missing at one of the positions 8, 13, 18, 23.
    #[error("GUID string has no '-' at position {position}")]
    MissingHyphen {
        /// Character position where the hyphen was expected.
        position: usize,
    },
    /// A character that should be a hex digit is not.
    #[error("GUID string has a non-hex character at position {position}")]
    BadHexDigit {
        /// Character position of the offending character.
        position: usize,
    },
}

impl Guid {
    /// The all-zero GUID.
    pub const ZERO: Guid = Guid::from_fields(0, 0, 0, [0; 8]);

    /// Builds a GUID from its four fields as they appear in the string form
    /// (`d1-d2-d3-d4[0..2]d4[2..8]`).
    pub const fn from_fields(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> Guid {
        Guid {
            data1: U32::new(data1),
            data2: U16::new(data2),
            data3: U16::new(data3),
            data4,
        }
    }

    /// Reads a GUID from its 16 wire bytes.
    pub const fn from_wire_bytes(b: [u8; 16]) -> Guid {
        Guid::from_fields(
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            [b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]],
        )
    }

    /// Returns the 16 wire bytes.
    pub const fn to_wire_bytes(&self) -> [u8; 16] {
        let a = self.data1.get().to_le_bytes();
        let b = self.data2.get().to_le_bytes();
        let c = self.data3.get().to_le_bytes();
        let d = self.data4;
        [
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ]
    }

    /// Parses the string form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case, optionally
    /// in braces). Usable in constants: `const G: Guid = match Guid::parse(..) { .. }`.
    pub const fn parse(s: &str) -> Result<Guid, GuidParseError> {
        let mut b = s.as_bytes();
        if b.len() == 38 && b[0] == b'{' && b[37] == b'}' {
            b = b.split_at(1).1.split_at(36).0;
        }
        if b.len() != 36 {
            return Err(GuidParseError::BadLength { len: b.len() });
        }
        // Collect the 32 hex digits as 16 bytes in string order.
        let mut bytes = [0u8; 16];
        let mut nibble = 0usize;
        let mut i = 0usize;
        while i < 36 {
            let c = b[i];
            if i == 8 || i == 13 || i == 18 || i == 23 {
                if c != b'-' {
                    return Err(GuidParseError::MissingHyphen { position: i });
                }
            } else {
                let v = match c {
                    b'0'..=b'9' => c - b'0',
                    b'a'..=b'f' => c - b'a' + 10,
                    b'A'..=b'F' => c - b'A' + 10,
                    _ => return Err(GuidParseError::BadHexDigit { position: i }),
                };
                bytes[nibble / 2] |= if nibble.is_multiple_of(2) { v << 4 } else { v };
                nibble += 1;
            }
            i += 1;
        }
        let s = bytes;
        Ok(Guid::from_fields(
            u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
            u16::from_be_bytes([s[4], s[5]]),
            u16::from_be_bytes([s[6], s[7]]),
            [s[8], s[9], s[10], s[11], s[12], s[13], s[14], s[15]],
        ))
    }
}

impl FromStr for Guid {
    type Err = GuidParseError;

    fn from_str(s: &str) -> Result<Guid, GuidParseError> {
        Guid::parse(s)
    }
}

impl fmt::Display for Guid {
    /// Writes the lowercase string form, without braces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.data4;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            self.data1.get(),
            self.data2.get(),
            self.data3.get(),
            d[0],
            d[1],
            d[2],
            d[3],
            d[4],
            d[5],
            d[6],
            d[7]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    const NIC_BYTES: [u8; 16] = [
        0x63, 0x51, 0x61, 0xf8, 0x3e, 0xdf, 0xc5, 0x46, 0x91, 0x3f, 0xf2, 0xd2, 0xf9, 0x65, 0xed,
        0x0e,
    ];

    #[test]
    fn nic_class_wire_bytes() {
        assert_eq!(NETVSC_CLASS.as_bytes(), &NIC_BYTES);
        assert_eq!(NETVSC_CLASS.to_wire_bytes(), NIC_BYTES);
        assert_eq!(Guid::from_wire_bytes(NIC_BYTES), NETVSC_CLASS);
        assert_eq!(Guid::read_from_bytes(&NIC_BYTES[..]).unwrap(), NETVSC_CLASS);
    }

    #[test]
    fn string_round_trip() {
        let s = "f8615163-df3e-46c5-913f-f2d2f965ed0e";
        let g: Guid = s.parse().unwrap();
        assert_eq!(g, NETVSC_CLASS);
        assert_eq!(g.to_string(), s);
        assert_eq!(
            Guid::parse("{F8615163-DF3E-46C5-913F-F2D2F965ED0E}"),
            Ok(NETVSC_CLASS)
        );
        assert_eq!(
            format!("{:?}", NETVSC_CLASS),
            "Guid(f8615163-df3e-46c5-913f-f2d2f965ed0e)"
        );
    }

    #[test]
    fn const_parse() {
        const G: Guid = match Guid::parse("f8615163-df3e-46c5-913f-f2d2f965ed0e") {
            Ok(g) => g,
            Err(_) => panic!(),
        };
        assert_eq!(G, NETVSC_CLASS);
    }

    #[test]
    fn parse_errors() {
        assert_eq!(Guid::parse(""), Err(GuidParseError::BadLength { len: 0 }));
        assert_eq!(
            Guid::parse("f8615163xdf3e-46c5-913f-f2d2f965ed0e"),
            Err(GuidParseError::MissingHyphen { position: 8 })
        );
        assert_eq!(
            Guid::parse("f8615163-df3e-46c5-913f-f2d2f965ed0g"),
            Err(GuidParseError::BadHexDigit { position: 35 })
        );
        // Multi-byte UTF-8 must not panic.
        assert!(Guid::parse("é8615163-df3e-46c5-913f-f2d2f965ed0").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = Guid::parse(&s);
        }

        #[test]
        fn display_parse_round_trip(b in proptest::array::uniform16(proptest::num::u8::ANY)) {
            let g = Guid::from_wire_bytes(b);
            proptest::prop_assert_eq!(Guid::parse(&g.to_string()), Ok(g));
            proptest::prop_assert_eq!(g.to_wire_bytes(), b);
        }
    }
}
