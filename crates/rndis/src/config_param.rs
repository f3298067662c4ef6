//! The RNDIS configuration parameter used to change the MAC address (OID
//! GEN_RNDIS_CONFIG_PARAMETER, PROTOCOL.md §7.6).
//!
//! Data (72 bytes): `name_offset` @0 = 20, `name_len` @4 = 28, `type` @8 = 2 (string),
//! `value_offset` @12 = 48, `value_len` @16 = 24 (offsets from the data start);
//! "NetworkAddress" in UTF-16LE @20; the MAC as 12 lowercase hex digits in UTF-16LE @48.

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::error::RndisError;

/// Parameter type: integer.
pub const PARAM_TYPE_INTEGER: u32 = 0;
/// Parameter type: string.
pub const PARAM_TYPE_STRING: u32 = 2;
/// The parameter name for a MAC change.
pub const NETWORK_ADDRESS: &str = "NetworkAddress";
/// Size of a MAC-change parameter.
pub const MAC_PARAMETER_SIZE: usize = 72;

/// Fixed part of a configuration parameter (20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ConfigParameterHeader {
    /// @0: name offset from the data start.
    pub name_offset: U32,
    /// @4: name length in bytes.
    pub name_len: U32,
    /// @8: [`PARAM_TYPE_STRING`] or [`PARAM_TYPE_INTEGER`].
    pub param_type: U32,
    /// @12: value offset from the data start.
    pub value_offset: U32,
    /// @16: value length in bytes.
    pub value_len: U32,
}
const _: () = assert!(size_of::<ConfigParameterHeader>() == 20);

/// A parsed configuration parameter: the header and the name and value bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigParameter<'a> {
    /// The fixed fields.
    pub header: ConfigParameterHeader,
    /// The name (UTF-16LE bytes).
    pub name: &'a [u8],
    /// The value (UTF-16LE bytes for a string).
    pub value: &'a [u8],
}

fn utf16_eq(bytes: &[u8], s: &str) -> bool {
    bytes.len() == 2 * s.len()
        && bytes
            .chunks_exact(2)
            .zip(s.bytes())
            .all(|(c, b)| u16::from_le_bytes([c[0], c[1]]) == u16::from(b))
}

impl<'a> ConfigParameter<'a> {
    /// Reads the header and checks that name and value lie inside `data`.
    pub fn parse(data: &'a [u8]) -> Result<ConfigParameter<'a>, RndisError> {
        let (header, _) = ConfigParameterHeader::read_from_prefix(data).map_err(|_| {
            RndisError::ObjectTooShort {
                object: "config parameter",
                len: data.len(),
                min: size_of::<ConfigParameterHeader>(),
            }
        })?;
        let part = |what, offset: U32, len: U32| {
            let (offset, len) = (offset.get(), len.get());
            (offset as usize)
                .checked_add(len as usize)
                .and_then(|end| data.get(offset as usize..end))
                .ok_or(RndisError::ConfigParamOutOfBounds {
                    what,
                    offset,
                    len,
                    available: data.len(),
                })
        };
        let name = part("name", header.name_offset, header.name_len)?;
        let value = part("value", header.value_offset, header.value_len)?;
        Ok(ConfigParameter {
            header,
            name,
            value,
        })
    }

    /// The MAC of a "NetworkAddress" string parameter: exactly 12 hex digits (either case).
    pub fn mac_address(&self) -> Result<[u8; 6], RndisError> {
        let param_type = self.header.param_type.get();
        if param_type != PARAM_TYPE_STRING || !utf16_eq(self.name, NETWORK_ADDRESS) {
            return Err(RndisError::NotNetworkAddress { param_type });
        }
        let bad = RndisError::BadMacString {
            len: self.header.value_len.get(),
        };
        if self.value.len() != 24 {
            return Err(bad);
        }
        let mut mac = [0u8; 6];
        for (i, c) in self.value.chunks_exact(2).enumerate() {
            let ch = u16::from_le_bytes([c[0], c[1]]);
            let digit = char::from_u32(ch.into())
                .and_then(|ch| ch.to_digit(16))
                .ok_or(bad)? as u8;
            mac[i / 2] |= if i % 2 == 0 { digit << 4 } else { digit };
        }
        Ok(mac)
    }
}

/// Writes the 72-byte MAC-change parameter for `mac` (lowercase hex); returns 72.
pub fn emit_mac_parameter(mac: [u8; 6], buf: &mut [u8]) -> Result<usize, RndisError> {
    let Some(out) = buf.get_mut(..MAC_PARAMETER_SIZE) else {
        return Err(RndisError::BufferTooSmall {
            what: "MAC config parameter",
            needed: MAC_PARAMETER_SIZE,
            available: buf.len(),
        });
    };
    let header = ConfigParameterHeader {
        name_offset: U32::new(20),
        name_len: U32::new(28),
        param_type: U32::new(PARAM_TYPE_STRING),
        value_offset: U32::new(48),
        value_len: U32::new(24),
    };
    out[..20].copy_from_slice(header.as_bytes());
    for (c, b) in out[20..48].chunks_exact_mut(2).zip(NETWORK_ADDRESS.bytes()) {
        c.copy_from_slice(&u16::from(b).to_le_bytes());
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, c) in out[48..72].chunks_exact_mut(2).enumerate() {
        let byte = mac[i / 2];
        let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0xF };
        c.copy_from_slice(&u16::from(HEX[usize::from(nibble)]).to_le_bytes());
    }
    Ok(MAC_PARAMETER_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_PARAM: [u8; 72] = [
        20, 0, 0, 0, 28, 0, 0, 0, 2, 0, 0, 0, 48, 0, 0, 0, 24, 0, 0, 0, // header
        b'N', 0, b'e', 0, b't', 0, b'w', 0, b'o', 0, b'r', 0, b'k', 0, b'A', 0, b'd', 0, b'd', 0,
        b'r', 0, b'e', 0, b's', 0, b's', 0, // "NetworkAddress"
        b'0', 0, b'0', 0, b'1', 0, b'5', 0, b'5', 0, b'd', 0, b'a', 0, b'b', 0, b'0', 0, b'1', 0,
        b'f', 0, b'e', 0,
    ];

    #[test]
    fn mac_parameter_bytes() {
        let mac = [0x00, 0x15, 0x5d, 0xab, 0x01, 0xfe];
        let mut buf = [0u8; 80];
        assert_eq!(emit_mac_parameter(mac, &mut buf), Ok(72));
        assert_eq!(&buf[..72], &MAC_PARAM);
        let p = ConfigParameter::parse(&MAC_PARAM).unwrap();
        assert_eq!(p.mac_address(), Ok(mac));
        // Upper-case digits are accepted.
        let mut m = MAC_PARAM;
        m[58] = b'D';
        assert_eq!(ConfigParameter::parse(&m).unwrap().mac_address(), Ok(mac));
    }

    #[test]
    fn rejects() {
        let mut m = MAC_PARAM;
        m[58] = b'g';
        assert!(matches!(
            ConfigParameter::parse(&m).unwrap().mac_address(),
            Err(RndisError::BadMacString { .. })
        ));
        let mut m = MAC_PARAM;
        m[20] = b'n';
        assert!(matches!(
            ConfigParameter::parse(&m).unwrap().mac_address(),
            Err(RndisError::NotNetworkAddress { .. })
        ));
        let mut m = MAC_PARAM;
        m[8] = 0;
        assert!(ConfigParameter::parse(&m).unwrap().mac_address().is_err());
        let mut m = MAC_PARAM;
        m[16] = 22;
        assert!(ConfigParameter::parse(&m).unwrap().mac_address().is_err());
        assert!(matches!(
            ConfigParameter::parse(&MAC_PARAM[..71]),
            Err(RndisError::ConfigParamOutOfBounds { what: "value", .. })
        ));
        let mut m = MAC_PARAM;
        m[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(ConfigParameter::parse(&m).is_err());
        assert!(ConfigParameter::parse(&MAC_PARAM[..19]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..100)) {
            if let Ok(p) = ConfigParameter::parse(&bytes) {
                let _ = p.mac_address();
            }
        }

        #[test]
        fn round_trip(mac in proptest::array::uniform6(proptest::num::u8::ANY)) {
            let mut buf = [0u8; 72];
            emit_mac_parameter(mac, &mut buf).unwrap();
            proptest::prop_assert_eq!(ConfigParameter::parse(&buf).unwrap().mac_address(), Ok(mac));
        }
    }
}
