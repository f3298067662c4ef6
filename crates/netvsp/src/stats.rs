//! Counters of a host NIC, kept on the data path as relaxed atomics.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Most queues (channels) a NIC offers: primary plus 63 subchannels (Linux's limit, 64).
pub const MAX_QUEUES: usize = 64;

/// Writes `[concat!(prefix, n, suffix), ...]` for the listed numbers.
macro_rules! queue_names {
    ($prefix:literal, $suffix:literal; $($n:literal)*) => {
        [$(concat!($prefix, $n, $suffix)),*]
    };
}

/// `rx_queue_N_packets` for N in 0..64.
const RX_QUEUE_PACKETS: [&str; MAX_QUEUES] = queue_names!("rx_queue_", "_packets";
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61
    62 63);
/// `rx_queue_N_bytes` for N in 0..64.
const RX_QUEUE_BYTES: [&str; MAX_QUEUES] = queue_names!("rx_queue_", "_bytes";
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61
    62 63);

/// One relaxed counter per queue (index = `sub_channel_index`).
#[derive(Debug)]
pub struct PerQueue(pub [AtomicU64; MAX_QUEUES]);

impl Default for PerQueue {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl PerQueue {
    /// Adds `n` to queue `q`'s counter (ignored for a queue beyond [`MAX_QUEUES`]).
    #[inline]
    pub fn add(&self, q: usize, n: u64) {
        if let Some(c) = self.0.get(q) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Queue `q`'s counter now (0 beyond [`MAX_QUEUES`]).
    pub fn get(&self, q: usize) -> u64 {
        self.0.get(q).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

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
    /// Frames posted to the guest, per queue (PROTOCOL.md §13 `rx_queue_N_packets`).
    pub rx_queue_packets: PerQueue,
    /// Bytes of those frames, per queue.
    pub rx_queue_bytes: PerQueue,
    /// Frames whose RSS table entry named a queue not open: posted on queue 0 instead.
    pub rx_queue_fallback: AtomicU64,
    /// Frames the host hashed (RSS on and a hash type covering the frame).
    pub rx_rss_hashed: AtomicU64,
    /// RSS parameter SETs the host refused (bad sizes, offsets, entries, NVSP < 5).
    pub rss_parameters_rejected: AtomicU64,
    /// Subchannels granted to the current guest (0 without one, or single-queue).
    pub subchannels_granted: AtomicU32,
}

impl NicStats {
    /// Name/value pairs, for tables and JSON.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut v = vec![
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
            ("rx_queue_fallback", g(&self.rx_queue_fallback)),
            ("rx_rss_hashed", g(&self.rx_rss_hashed)),
            ("rss_parameters_rejected", g(&self.rss_parameters_rejected)),
            (
                "subchannels_granted",
                u64::from(self.subchannels_granted.load(Ordering::Relaxed)),
            ),
        ];
        // Queues in use: those of the current guest, and any that ever carried traffic.
        let granted = self.subchannels_granted.load(Ordering::Relaxed) as usize + 1;
        let used = (0..MAX_QUEUES)
            .rev()
            .find(|&q| self.rx_queue_packets.get(q) != 0)
            .map_or(0, |q| q + 1);
        for q in 0..granted.max(used).min(MAX_QUEUES) {
            v.push((RX_QUEUE_PACKETS[q], self.rx_queue_packets.get(q)));
            v.push((RX_QUEUE_BYTES[q], self.rx_queue_bytes.get(q)));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_queue_names_and_snapshot() {
        assert_eq!(RX_QUEUE_PACKETS[0], "rx_queue_0_packets");
        assert_eq!(RX_QUEUE_BYTES[63], "rx_queue_63_bytes");
        let s = NicStats::default();
        let names =
            |s: &NicStats| -> Vec<&str> { s.snapshot().into_iter().map(|(n, _)| n).collect() };
        assert!(names(&s).contains(&"rx_queue_0_packets"));
        assert!(!names(&s).contains(&"rx_queue_1_packets"));
        s.subchannels_granted.store(3, Ordering::Relaxed);
        assert!(names(&s).contains(&"rx_queue_3_bytes"));
        s.subchannels_granted.store(0, Ordering::Relaxed);
        s.rx_queue_packets.add(5, 2);
        s.rx_queue_packets.add(99, 1);
        let snap = s.snapshot();
        assert!(snap.contains(&("rx_queue_5_packets", 2)));
        assert!(snap.contains(&("rx_queue_4_packets", 0)));
        assert!(!names(&s).contains(&"rx_queue_6_packets"));
    }
}
