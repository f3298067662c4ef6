//! netvsp: the emulated Hyper-V host side of the synthetic NIC (the Virtual Service
//! Provider) and the virtual switch behind it.
//!
//! In ARCHITECTURE.md's picture this crate is the host process: per VM a VMBus endpoint
//! (from the `vmbus` crate's server) offering one synthetic NIC; per NIC the NVSP server,
//! the RNDIS device and the receive-buffer sections; and the switch that forwards frames
//! between NICs by destination MAC. With NVSP 5 and later a NIC offers subchannels and
//! spreads received frames over them by RSS. The host treats every guest byte as hostile.

pub mod host;
pub mod nic;
pub mod offload;
pub mod profile;
pub mod queues;
pub mod rndis_dev;
pub mod rss;
pub mod rx_buffer;
pub mod stats;
mod trace;
pub mod vswitch;

pub use host::{Host, HostConfig, VmSpec};
pub use profile::HostProfile;

/// Largest frame MTU (MTU + 14) the host accepts in SEND_NDIS_CONFIG (§5 decision).
pub const MAX_FRAME_MTU: u32 = 9216;

/// Receive section size for a frame MTU (§5 decision: `round_up(frame_mtu + 214, 64)`,
/// 1728 for 1514).
pub fn receive_section_size(frame_mtu: u32) -> u32 {
    (frame_mtu + 214).next_multiple_of(64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn section_size_matches_what_linux_assumes() {
        assert_eq!(super::receive_section_size(1514), 1728);
    }
}
