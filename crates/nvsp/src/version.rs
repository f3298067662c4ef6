//! NVSP protocol versions and the negotiation rules around them (PROTOCOL.md §4.1, §4.5).
//!
//! The encodings are irregular (NVSP 1 = `0x2`, NVSP 2 = `0x30002`, §16.1), but they still
//! grow with the version, so plain `<`/`>` comparisons between these constants are correct.

/// NVSP 1.
pub const V1: u32 = 0x0000_0002;
/// NVSP 2: SEND_NDIS_CONFIG.
pub const V2: u32 = 0x0003_0002;
/// NVSP 4: VF association, data-path switching.
pub const V4: u32 = 0x0004_0000;
/// NVSP 5: subchannels, send indirection table.
pub const V5: u32 = 0x0005_0000;
/// NVSP 6.
pub const V6: u32 = 0x0006_0000;
/// NVSP 6.1: RSC.
pub const V6_1: u32 = 0x0006_0001;
/// Not a version.
pub const INVALID: u32 = 0xFFFF_FFFF;

/// Every known version, oldest first.
pub const ALL: [u32; 6] = [V1, V2, V4, V5, V6, V6_1];

/// The versions a guest offers, newest first, one exact version per INIT (`min = max`),
/// until the host answers SUCCESS.
pub const GUEST_TRY_ORDER: [u32; 6] = [V6_1, V6, V5, V4, V2, V1];

/// Whether `v` is one of the known versions.
pub const fn is_known(v: u32) -> bool {
    matches!(v, V1 | V2 | V4 | V5 | V6 | V6_1)
}

/// The version's name as PROTOCOL.md writes it ("1", "2", "4", "5", "6", "6.1").
pub const fn name(v: u32) -> Option<&'static str> {
    Some(match v {
        V1 => "1",
        V2 => "2",
        V4 => "4",
        V5 => "5",
        V6 => "6",
        V6_1 => "6.1",
        _ => return None,
    })
}

/// The NDIS version `(major, minor)` a guest announces in SEND_NDIS_VER for a negotiated
/// NVSP version: 6.1 for NVSP ≤ 4, 6.30 above.
pub const fn ndis_version_for(nvsp: u32) -> (u32, u32) {
    if nvsp <= V4 { (6, 1) } else { (6, 30) }
}

/// The value the host puts in INIT_COMPLETE's deprecated `negotiated_ver`:
/// 2 for NVSP 1, else `0xFFFFFFFF` (PROTOCOL.md §4.4).
pub const fn init_complete_negotiated_ver(nvsp: u32) -> u32 {
    if nvsp == V1 { V1 } else { INVALID }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(V1, 2);
        assert_eq!(V2, 0x30002);
        assert_eq!(V6_1, 0x60001);
        assert!(ALL.windows(2).all(|w| w[0] < w[1]));
        assert!(GUEST_TRY_ORDER.windows(2).all(|w| w[0] > w[1]));
        assert!(is_known(V5) && !is_known(3) && !is_known(INVALID));
        assert_eq!(name(V6_1), Some("6.1"));
        assert_eq!(name(0x30000), None);
    }

    #[test]
    fn ndis_versions() {
        assert_eq!(ndis_version_for(V1), (6, 1));
        assert_eq!(ndis_version_for(V4), (6, 1));
        assert_eq!(ndis_version_for(V5), (6, 30));
        assert_eq!(ndis_version_for(V6_1), (6, 30));
        assert_eq!(init_complete_negotiated_ver(V1), 2);
        assert_eq!(init_complete_negotiated_ver(V5), 0xFFFF_FFFF);
    }
}
