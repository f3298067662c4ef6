//! Counters of the guest driver, with the Linux driver's names where one exists
//! (PROTOCOL.md §13 `-S`), kept as relaxed atomics on the data path.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// The guest NIC's counters.
        #[derive(Default, Debug)]
        pub struct GuestStats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        impl GuestStats {
            /// Name/value pairs in a stable order, for `ethtool -S`, tables and JSON.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    /// Frames sent (read from the TAP and handed to the host).
    tx_packets,
    /// Bytes of those frames.
    tx_bytes,
    /// Frames sent with a checksum request for the host.
    tx_checksum_offload,
    /// TSO frames sent as one LSO packet.
    tx_lso,
    /// TSO frames the host could not take whole, segmented by the guest.
    tx_gso_software,
    /// RSC packets reassembled from pieces.
    rx_rsc_packets,
    /// Frames copied into a send-buffer section.
    tx_send_buffer,
    /// Frames sent as GPA-direct page buffers.
    tx_page_buffer,
    /// Send-buffer sections sent (each may carry several frames).
    tx_sections,
    /// Frames that went as page buffers because no section was free (Linux name).
    tx_send_full,
    /// Frames too big for the device (Linux name).
    tx_too_big,
    /// Sends refused for lack of ring space and retried later (Linux name).
    tx_busy,
    /// Frames dropped because no staging buffer was free.
    tx_no_memory,
    /// Transmit stopped waiting for completions (Linux name).
    stop_queue,
    /// Transmit resumed (Linux name).
    wake_queue,
    /// Frames received and written to the TAP.
    rx_packets,
    /// Bytes of those frames.
    rx_bytes,
    /// Frames the TAP did not take.
    rx_tap_dropped,
    /// Receive completions delayed by a full ring (Linux name).
    rx_comp_busy,
    /// Receive completions dropped: more outstanding than receive sections (a host not reading them).
    rx_comp_dropped,
    /// Transfer-page packets received.
    rx_xfer_packets,
    /// Received messages that failed validation (the packet completes with FAIL).
    rx_bad_messages,
    /// Receive sections held at once, at most (ranges not yet completed).
    rx_sections_peak,
    /// Completions that named no outstanding send.
    bad_completions,
    /// Host packets of types netvsc does not use.
    unsupported_packets,
    /// Keepalives answered.
    keepalives,
    /// Link changes the host indicated.
    link_changes,
}

impl GuestStats {
    /// Raises `rx_sections_peak` to `now` if higher.
    pub fn note_sections_held(&self, now: u64) {
        self.rx_sections_peak.fetch_max(now, Ordering::Relaxed);
    }
}
