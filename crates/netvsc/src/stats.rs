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
    /// Frames read on one queue and handed to the queue the flow hash picks.
    tx_steered,
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

/// Counters of one queue (channel), with the Linux driver's per-queue names.
#[derive(Default, Debug)]
pub struct QueueStats {
    /// Frames sent on this queue.
    pub tx_packets: AtomicU64,
    /// Bytes of those frames.
    pub tx_bytes: AtomicU64,
    /// Frames received on this queue.
    pub rx_packets: AtomicU64,
    /// Bytes of those frames.
    pub rx_bytes: AtomicU64,
    /// Frames an XDP program dropped (or aborted on).
    pub xdp_drop: AtomicU64,
    /// Frames an XDP program sent back out (XDP_TX).
    pub xdp_tx: AtomicU64,
    /// Frames an XDP program redirected (unsupported: dropped).
    pub xdp_redirect: AtomicU64,
    /// Frames sent for other devices (ndo_xdp_xmit: not in the base contract, 0).
    pub xdp_xmit: AtomicU64,
}

/// The NIC's counters and its queues', for `ethtool -S`.
#[derive(Clone, Default, Debug)]
pub struct StatsView {
    /// NIC-wide counters.
    pub nic: std::sync::Arc<GuestStats>,
    /// Per-queue counters, queue 0 first (kept for queues a rebuild removed).
    pub queues: Vec<std::sync::Arc<QueueStats>>,
    /// Queues in use now: `snapshot` lists these.
    pub active: usize,
}

impl StatsView {
    /// Name/value pairs: NIC-wide, then `tx_queue_N_*` and `rx_queue_N_*` per queue.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .nic
            .snapshot()
            .into_iter()
            .map(|(k, x)| (k.to_owned(), x))
            .collect();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (i, q) in self.queues.iter().enumerate().take(self.active.max(1)) {
            v.push((format!("tx_queue_{i}_packets"), g(&q.tx_packets)));
            v.push((format!("tx_queue_{i}_bytes"), g(&q.tx_bytes)));
            v.push((format!("tx_queue_{i}_xdp_xmit"), g(&q.xdp_xmit)));
            v.push((format!("rx_queue_{i}_packets"), g(&q.rx_packets)));
            v.push((format!("rx_queue_{i}_bytes"), g(&q.rx_bytes)));
            v.push((format!("rx_queue_{i}_xdp_drop"), g(&q.xdp_drop)));
            v.push((format!("rx_queue_{i}_xdp_redirect"), g(&q.xdp_redirect)));
            v.push((format!("rx_queue_{i}_xdp_tx"), g(&q.xdp_tx)));
        }
        v
    }
}
