//! Counters of a host NIC, kept on the data path as relaxed atomics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters of one NIC, from the host's side.
#[derive(Default, Debug)]
pub struct NicStats {
    /// Frames the guest sent (RNDIS PACKETs forwarded to the switch).
    pub tx_packets: AtomicU64,
    /// Bytes of those frames.
    pub tx_bytes: AtomicU64,
    /// Guest sends that arrived in a send-buffer section (NVSP 107 with a section).
    pub tx_send_buffer: AtomicU64,
    /// Guest sends that arrived as GPA-direct page buffers.
    pub tx_gpa_direct: AtomicU64,
    /// Frames posted to the guest.
    pub rx_packets: AtomicU64,
    /// Bytes of those frames.
    pub rx_bytes: AtomicU64,
    /// Frames dropped: no free receive section or no ring space.
    pub rx_dropped_no_section: AtomicU64,
    /// Frames dropped: the guest's NIC not initialised, halted or without a filter.
    pub rx_dropped_not_ready: AtomicU64,
    /// Frames the guest's packet filter does not take.
    pub rx_filtered: AtomicU64,
    /// LSO super-frames passed on coalesced (RSC) to this guest.
    pub rx_rsc_packets: AtomicU64,
    /// LSO super-frames segmented for this guest.
    pub rx_lso_segmented: AtomicU64,
    /// LSO super-frames that could not be segmented.
    pub rx_dropped_bad_lso: AtomicU64,
    /// Guest sends whose checksum the host filled.
    pub tx_checksum_filled: AtomicU64,
    /// Guest LSO sends.
    pub tx_lso_packets: AtomicU64,
    /// Malformed or out-of-state guest messages.
    pub protocol_errors: AtomicU64,
    /// Packets of types netvsc never uses.
    pub unsupported_packets: AtomicU64,
    /// RNDIS control messages handled.
    pub rndis_control: AtomicU64,
    /// Guests that went away (unload or death).
    pub guest_disconnects: AtomicU64,
    /// The host has set the link down.
    pub link_down: AtomicBool,
}

impl NicStats {
    /// Name/value pairs, for tables and JSON.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("tx_packets", g(&self.tx_packets)),
            ("tx_bytes", g(&self.tx_bytes)),
            ("tx_send_buffer", g(&self.tx_send_buffer)),
            ("tx_gpa_direct", g(&self.tx_gpa_direct)),
            ("rx_packets", g(&self.rx_packets)),
            ("rx_bytes", g(&self.rx_bytes)),
            ("rx_dropped_no_section", g(&self.rx_dropped_no_section)),
            ("rx_dropped_not_ready", g(&self.rx_dropped_not_ready)),
            ("rx_filtered", g(&self.rx_filtered)),
            ("rx_rsc_packets", g(&self.rx_rsc_packets)),
            ("rx_lso_segmented", g(&self.rx_lso_segmented)),
            ("rx_dropped_bad_lso", g(&self.rx_dropped_bad_lso)),
            ("tx_checksum_filled", g(&self.tx_checksum_filled)),
            ("tx_lso_packets", g(&self.tx_lso_packets)),
            ("protocol_errors", g(&self.protocol_errors)),
            ("unsupported_packets", g(&self.unsupported_packets)),
            ("rndis_control", g(&self.rndis_control)),
            ("guest_disconnects", g(&self.guest_disconnects)),
        ]
    }
}
