//! The NDIS object header that opens every NDIS object carried in an OID's information
//! buffer (PROTOCOL.md §7.1): `type` u8, `revision` u8, `size` u16.

use zerocopy::little_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of the header.
pub const NDIS_OBJECT_HEADER_SIZE: usize = 4;

/// Object type: default (offload parameters).
pub const TYPE_DEFAULT: u8 = 0x80;
/// Object type: RSS capabilities.
pub const TYPE_RSS_CAPABILITIES: u8 = 0x88;
/// Object type: RSS parameters.
pub const TYPE_RSS_PARAMETERS: u8 = 0x89;
/// Object type: offload capabilities.
pub const TYPE_OFFLOAD: u8 = 0xA7;

/// The NDIS object header.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NdisObjectHeader {
    /// @0: object type.
    pub object_type: u8,
    /// @1: revision.
    pub revision: u8,
    /// @2: size of the whole object in bytes.
    pub size: U16,
}
const _: () = assert!(size_of::<NdisObjectHeader>() == NDIS_OBJECT_HEADER_SIZE);

impl NdisObjectHeader {
    /// A header of `object_type`, `revision` and `size`.
    pub const fn new(object_type: u8, revision: u8, size: u16) -> NdisObjectHeader {
        NdisObjectHeader {
            object_type,
            revision,
            size: U16::new(size),
        }
    }

    /// Reads the header at the start of `data`.
    pub fn parse(data: &[u8]) -> Option<NdisObjectHeader> {
        NdisObjectHeader::read_from_prefix(data)
            .ok()
            .map(|(h, _)| h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn bytes() {
        let h = NdisObjectHeader::new(TYPE_OFFLOAD, 3, 156);
        assert_eq!(h.as_bytes(), &[0xA7, 3, 156, 0]);
        assert_eq!(
            NdisObjectHeader::parse(&[0x89, 2, 40, 0, 9]),
            Some(NdisObjectHeader::new(0x89, 2, 40))
        );
        assert_eq!(NdisObjectHeader::parse(&[0x89, 2, 40]), None);
    }
}
