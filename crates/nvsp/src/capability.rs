//! Capability bits of SEND_NDIS_CONFIG (type 125, `capability` u64 @12, PROTOCOL.md §4.4).

/// Virtual machine queues.
pub const VMQ: u64 = 1 << 0;
/// TCP chimney offload.
pub const CHIMNEY: u64 = 1 << 1;
/// SR-IOV: required for the host to offer a VF (§4.13).
pub const SRIOV: u64 = 1 << 2;
/// 802.1Q tagging.
pub const IEEE8021Q: u64 = 1 << 3;
/// Correlation id.
pub const CORRELATION_ID: u64 = 1 << 4;
/// Teaming: enables link-speed indications.
pub const TEAMING: u64 = 1 << 5;
/// Virtual subnet id.
pub const VIRTUAL_SUBNET_ID: u64 = 1 << 6;
/// Receive segment coalescing (NVSP 6.1).
pub const RSC: u64 = 1 << 7;

/// The capability word Linux sends for a negotiated NVSP version: `0x08` (NVSP 2–4),
/// `0x2C` (5, 6), `0xAC` (6.1); 0 for NVSP 1, which sends no NDIS config.
pub const fn linux_capabilities(nvsp: u32) -> u64 {
    use crate::version::{V2, V5, V6_1};
    if nvsp >= V6_1 {
        IEEE8021Q | SRIOV | TEAMING | RSC
    } else if nvsp >= V5 {
        IEEE8021Q | SRIOV | TEAMING
    } else if nvsp >= V2 {
        IEEE8021Q
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version;

    #[test]
    fn linux_words() {
        assert_eq!(linux_capabilities(version::V1), 0);
        assert_eq!(linux_capabilities(version::V2), 0x08);
        assert_eq!(linux_capabilities(version::V4), 0x08);
        assert_eq!(linux_capabilities(version::V5), 0x2C);
        assert_eq!(linux_capabilities(version::V6), 0x2C);
        assert_eq!(linux_capabilities(version::V6_1), 0xAC);
    }
}
