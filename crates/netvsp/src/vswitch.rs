//! The virtual switch: ports keyed by MAC address, forwarding by destination MAC.
//!
//! Unicast goes to the one port owning the destination MAC (unknown unicast is dropped
//! and counted, as Hyper-V's switch knows every port's address); broadcast and multicast
//! are flooded to every other port. Delivery into a port is batched: a forwarding thread
//! collects the ports it touched and flushes each once at the end of its batch, so the
//! destination guest is signalled once per batch rather than once per frame.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Identifies a port on the switch.
pub type PortId = u32;

/// A frame crossing the switch, with what the sender's offloads say about it.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// The Ethernet frame. For an LSO send this is the whole super-frame.
    pub bytes: &'a [u8],
    /// Set for an LSO send the host must segment (or pass on coalesced): the MSS.
    pub lso_mss: Option<u16>,
    /// The L4 checksum is known to be right (the host filled it, or the sender
    /// segmented it): receivers need not verify it again.
    pub checksum_good: bool,
}

impl<'a> Frame<'a> {
    /// A plain frame, nothing known about its checksum.
    pub fn plain(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            lso_mss: None,
            checksum_good: false,
        }
    }
}

/// The receiving side of a port (a NIC's receive path).
pub trait PortSink: Send + Sync {
    /// Takes one frame for the guest; returns false if it was dropped (and counted by
    /// the sink).
    fn deliver(&self, frame: &Frame<'_>) -> bool;
    /// Publishes what `deliver` queued and signals the guest if needed.
    fn flush(&self);
}

struct Port {
    id: PortId,
    mac: [u8; 6],
    sink: Arc<dyn PortSink>,
}

/// Switch counters.
#[derive(Default, Debug)]
pub struct SwitchStats {
    /// Frames delivered to a port (a flooded frame counts once per port).
    pub delivered: AtomicU64,
    /// Unicast frames whose destination no port owns.
    pub unknown_unicast: AtomicU64,
    /// Frames a port refused (no receive section, ring full, guest not ready).
    pub port_drops: AtomicU64,
    /// Frames too short to carry an Ethernet header.
    pub runts: AtomicU64,
}

/// The switch.
#[derive(Default)]
pub struct Switch {
    ports: RwLock<Vec<Port>>,
    next_id: AtomicU64,
    stats: SwitchStats,
}

/// Ports touched by one forwarding batch, flushed together.
#[derive(Default)]
pub struct DeliveryBatch {
    touched: Vec<Arc<dyn PortSink>>,
}

impl DeliveryBatch {
    fn touch(&mut self, sink: &Arc<dyn PortSink>) {
        if !self.touched.iter().any(|s| Arc::ptr_eq(s, sink)) {
            self.touched.push(sink.clone());
        }
    }

    /// Flushes every port the batch delivered to.
    pub fn flush(&mut self) {
        for s in self.touched.drain(..) {
            s.flush();
        }
    }
}

impl Switch {
    /// Adds a port owning `mac`.
    pub fn add_port(&self, mac: [u8; 6], sink: Arc<dyn PortSink>) -> PortId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) as PortId + 1;
        self.ports.write().unwrap().push(Port { id, mac, sink });
        id
    }

    /// Removes a port.
    pub fn remove_port(&self, id: PortId) {
        self.ports.write().unwrap().retain(|p| p.id != id);
    }

    /// Changes the MAC a port owns.
    pub fn set_port_mac(&self, id: PortId, mac: [u8; 6]) {
        if let Some(p) = self.ports.write().unwrap().iter_mut().find(|p| p.id == id) {
            p.mac = mac;
        }
    }

    /// Counters.
    pub fn stats(&self) -> &SwitchStats {
        &self.stats
    }

    /// Forwards one frame that arrived on port `from`.
    pub fn forward(&self, from: PortId, frame: &Frame<'_>, batch: &mut DeliveryBatch) {
        let Some(dst) = frame.bytes.get(..6) else {
            self.stats.runts.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let ports = self.ports.read().unwrap();
        let mut deliver = |p: &Port| {
            if p.sink.deliver(frame) {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                batch.touch(&p.sink);
            } else {
                self.stats.port_drops.fetch_add(1, Ordering::Relaxed);
            }
        };
        if dst[0] & 1 != 0 {
            // Broadcast and multicast: flood.
            ports.iter().filter(|p| p.id != from).for_each(&mut deliver);
        } else {
            match ports.iter().find(|p| p.mac == dst && p.id != from) {
                Some(p) => deliver(p),
                None => {
                    self.stats.unknown_unicast.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Sink {
        frames: Mutex<Vec<Vec<u8>>>,
        flushes: AtomicU64,
    }
    impl PortSink for Sink {
        fn deliver(&self, frame: &Frame<'_>) -> bool {
            self.frames.lock().unwrap().push(frame.bytes.to_vec());
            true
        }
        fn flush(&self) {
            self.flushes.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn frame(dst: [u8; 6]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 9, 0x08, 0x00]);
        f
    }

    #[test]
    fn unicast_goes_to_its_port_and_broadcast_floods() {
        let sw = Switch::default();
        let sinks: Vec<Arc<Sink>> = (0..3).map(|_| Arc::new(Sink::default())).collect();
        let ids: Vec<PortId> = sinks
            .iter()
            .enumerate()
            .map(|(i, s)| sw.add_port([0, 0x15, 0x5d, 0, 0, i as u8], s.clone()))
            .collect();
        let mut batch = DeliveryBatch::default();
        sw.forward(
            ids[0],
            &Frame::plain(&frame([0, 0x15, 0x5d, 0, 0, 1])),
            &mut batch,
        );
        sw.forward(
            ids[0],
            &Frame::plain(&frame([0, 0x15, 0x5d, 0, 0, 1])),
            &mut batch,
        );
        sw.forward(ids[0], &Frame::plain(&frame([0xff; 6])), &mut batch);
        sw.forward(
            ids[0],
            &Frame::plain(&frame([0, 0x15, 0x5d, 0, 0, 7])),
            &mut batch,
        );
        sw.forward(ids[0], &Frame::plain(&[1, 2, 3]), &mut batch);
        batch.flush();
        assert_eq!(sinks[0].frames.lock().unwrap().len(), 0);
        assert_eq!(sinks[1].frames.lock().unwrap().len(), 3);
        assert_eq!(sinks[2].frames.lock().unwrap().len(), 1);
        assert_eq!(sinks[1].flushes.load(Ordering::Relaxed), 1);
        assert_eq!(sw.stats().unknown_unicast.load(Ordering::Relaxed), 1);
        assert_eq!(sw.stats().runts.load(Ordering::Relaxed), 1);
        sw.remove_port(ids[1]);
        sw.forward(
            ids[0],
            &Frame::plain(&frame([0, 0x15, 0x5d, 0, 0, 1])),
            &mut batch,
        );
        assert_eq!(sinks[1].frames.lock().unwrap().len(), 3);
    }
}
