//! OIDs the netvsc guest queries and sets, with their names (PROTOCOL.md §7.1), and the
//! packet-filter bits of `GEN_CURRENT_PACKET_FILTER`.

/// Q: u32 = frame MTU − 14.
pub const GEN_MAXIMUM_FRAME_SIZE: u32 = 0x0001_0106;
/// Q (NVSP ≥ 5): u32 link speed in 100 bit/s.
pub const GEN_LINK_SPEED: u32 = 0x0001_0107;
/// S: u32 packet filter ([`packet_filter`]).
pub const GEN_CURRENT_PACKET_FILTER: u32 = 0x0001_010E;
/// Q: u32, 0 connected, 1 not.
pub const GEN_MEDIA_CONNECT_STATUS: u32 = 0x0001_0114;
/// S: configuration parameter, used for a MAC change (`crate::config_param`).
pub const GEN_RNDIS_CONFIG_PARAMETER: u32 = 0x0001_021B;
/// Q (NVSP ≥ 5): `crate::rss::RssCapabilities`.
pub const GEN_RECEIVE_SCALE_CAPABILITIES: u32 = 0x0001_0203;
/// S: `crate::rss` parameters.
pub const GEN_RECEIVE_SCALE_PARAMETERS: u32 = 0x0001_0204;
/// Q: UTF-16LE friendly name.
pub const GEN_FRIENDLY_NAME: u32 = 0x0002_0216;
/// Q: the 6-byte permanent MAC.
pub const OID_802_3_PERMANENT_ADDRESS: u32 = 0x0101_0101;
/// The current MAC (unused by Linux).
pub const OID_802_3_CURRENT_ADDRESS: u32 = 0x0101_0102;
/// The multicast list (unused by Linux).
pub const OID_802_3_MULTICAST_LIST: u32 = 0x0101_0103;
/// Encapsulation offload (unused by Linux).
pub const OFFLOAD_ENCAPSULATION: u32 = 0x0101_010A;
/// Current offload configuration (unused by Linux).
pub const TCP_OFFLOAD_CURRENT_CONFIG: u32 = 0xFC01_020B;
/// S: `crate::offload::OffloadParameters`.
pub const TCP_OFFLOAD_PARAMETERS: u32 = 0xFC01_020C;
/// Q: `crate::offload::NdisOffload`.
pub const TCP_OFFLOAD_HARDWARE_CAPABILITIES: u32 = 0xFC01_020D;

/// The name of an OID as PROTOCOL.md writes it, for traces.
pub const fn name(oid: u32) -> Option<&'static str> {
    Some(match oid {
        GEN_MAXIMUM_FRAME_SIZE => "GEN_MAXIMUM_FRAME_SIZE",
        GEN_LINK_SPEED => "GEN_LINK_SPEED",
        GEN_CURRENT_PACKET_FILTER => "GEN_CURRENT_PACKET_FILTER",
        GEN_MEDIA_CONNECT_STATUS => "GEN_MEDIA_CONNECT_STATUS",
        GEN_RNDIS_CONFIG_PARAMETER => "GEN_RNDIS_CONFIG_PARAMETER",
        GEN_RECEIVE_SCALE_CAPABILITIES => "GEN_RECEIVE_SCALE_CAPABILITIES",
        GEN_RECEIVE_SCALE_PARAMETERS => "GEN_RECEIVE_SCALE_PARAMETERS",
        GEN_FRIENDLY_NAME => "GEN_FRIENDLY_NAME",
        OID_802_3_PERMANENT_ADDRESS => "802_3_PERMANENT_ADDRESS",
        OID_802_3_CURRENT_ADDRESS => "802_3_CURRENT_ADDRESS",
        OID_802_3_MULTICAST_LIST => "802_3_MULTICAST_LIST",
        OFFLOAD_ENCAPSULATION => "OFFLOAD_ENCAPSULATION",
        TCP_OFFLOAD_CURRENT_CONFIG => "TCP_OFFLOAD_CURRENT_CONFIG",
        TCP_OFFLOAD_PARAMETERS => "TCP_OFFLOAD_PARAMETERS",
        TCP_OFFLOAD_HARDWARE_CAPABILITIES => "TCP_OFFLOAD_HARDWARE_CAPABILITIES",
        _ => return None,
    })
}

/// `GEN_MEDIA_CONNECT_STATUS` value: connected.
pub const MEDIA_STATE_CONNECTED: u32 = 0;
/// `GEN_MEDIA_CONNECT_STATUS` value: disconnected.
pub const MEDIA_STATE_DISCONNECTED: u32 = 1;

/// Bits of `GEN_CURRENT_PACKET_FILTER`.
pub mod packet_filter {
    /// Frames to our MAC.
    pub const DIRECTED: u32 = 0x1;
    /// Frames to subscribed multicast addresses.
    pub const MULTICAST: u32 = 0x2;
    /// All multicast frames.
    pub const ALL_MULTICAST: u32 = 0x4;
    /// Broadcast frames.
    pub const BROADCAST: u32 = 0x8;
    /// Every frame.
    pub const PROMISCUOUS: u32 = 0x20;

    /// What Linux sets when an interface opens: directed + all-multicast + broadcast.
    pub const LINUX_OPEN: u32 = DIRECTED | ALL_MULTICAST | BROADCAST;

    /// The filter Linux computes: promiscuous alone, else directed, + all-multicast if any
    /// multicast or allmulti, + broadcast.
    pub const fn linux_filter(promiscuous: bool, any_multicast: bool) -> u32 {
        if promiscuous {
            PROMISCUOUS
        } else if any_multicast {
            DIRECTED | ALL_MULTICAST | BROADCAST
        } else {
            DIRECTED | BROADCAST
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_filters() {
        assert_eq!(name(0x0001_0106), Some("GEN_MAXIMUM_FRAME_SIZE"));
        assert_eq!(name(0xFC01_020D), Some("TCP_OFFLOAD_HARDWARE_CAPABILITIES"));
        assert_eq!(name(0x0101_0101), Some("802_3_PERMANENT_ADDRESS"));
        assert_eq!(name(0), None);
        assert_eq!(packet_filter::LINUX_OPEN, 0x0D);
        assert_eq!(packet_filter::linux_filter(true, true), 0x20);
        assert_eq!(packet_filter::linux_filter(false, false), 0x09);
    }
}
