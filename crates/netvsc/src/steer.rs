//! The guest's own transmit queue choice (PROTOCOL.md §9.3), as the Linux driver's
//! select_queue makes it: a flow hash — with the ports when `ethtool -N rx-flow-hash`
//! says `sdfn` for the flow's type, of the addresses only when it says `sd` — picks an
//! entry of the host's send indirection table, folded onto the queues in use.
//!
//! The kernel hands each frame to one of the TAP's queues by its own choice; a queue's
//! thread that reads a frame belonging to another queue hands it over here.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use netpkt::frame::{L3, L4, parse_frame};
use netpkt::toeplitz::{DEFAULT_KEY, Toeplitz};

use crate::control::Shared;
use crate::driver::CommandQueue;

/// Frames waiting for another queue, at most this many per queue (then dropped and
/// counted by the sender, as a full device queue would).
const INBOX_LIMIT: usize = 1024;

/// Steering state shared by a NIC's queues.
pub struct Steer {
    queues: u32,
    tx_table: [AtomicU32; 16],
    shared: Arc<Shared>,
    hasher: Box<Toeplitz>,
    inboxes: Vec<Mutex<VecDeque<Vec<u8>>>>,
    wakers: Mutex<Vec<CommandQueue>>,
    spare: Mutex<Vec<Vec<u8>>>,
}

impl Steer {
    /// Steering over `queues` queues, the send table `i mod queues` until the host
    /// sends one.
    pub(crate) fn new(queues: u32, shared: Arc<Shared>) -> Self {
        Self {
            queues,
            tx_table: std::array::from_fn(|i| AtomicU32::new(i as u32 % queues.max(1))),
            shared,
            hasher: Box::new(Toeplitz::new(&DEFAULT_KEY)),
            inboxes: (0..queues).map(|_| Mutex::default()).collect(),
            wakers: Mutex::default(),
            spare: Mutex::default(),
        }
    }

    /// Queues in use.
    pub fn queues(&self) -> u32 {
        self.queues
    }

    /// Records each queue's wake-up (once the drivers exist).
    pub(crate) fn set_wakers(&self, w: Vec<CommandQueue>) {
        *self.wakers.lock().unwrap() = w;
    }

    /// Takes the host's send indirection table (NVSP 134).
    pub(crate) fn set_table(&self, table: &[u32; 16]) {
        for (slot, &q) in self.tx_table.iter().zip(table) {
            slot.store(q, Ordering::Relaxed);
        }
    }

    /// The queue a frame goes out on.
    pub fn select(&self, frame: &[u8]) -> u32 {
        let l4_bits = self.shared.l4_hash.load(Ordering::Relaxed);
        let hash = match parse_frame(frame) {
            Ok(info) => {
                // (the flow type's IPv4 bit, ports); fragments after the first have none.
                let ports = match info.l4 {
                    L4::Tcp {
                        src_port, dst_port, ..
                    } => Some((1u8, src_port, dst_port)),
                    L4::Udp {
                        src_port, dst_port, ..
                    } => Some((4u8, src_port, dst_port)),
                    _ => None,
                };
                match info.l3 {
                    L3::Ipv4 { src, dst, .. } => {
                        let p = ports
                            .filter(|(bit, _, _)| l4_bits & bit != 0)
                            .map(|(_, s, d)| (s, d));
                        self.hasher.hash_v4(src, dst, p)
                    }
                    L3::Ipv6 { src, dst, .. } => {
                        // The IPv6 bits are the IPv4 ones shifted by one (TCP6 2, UDP6 8).
                        let p = ports
                            .filter(|(bit, _, _)| l4_bits & (bit << 1) != 0)
                            .map(|(_, s, d)| (s, d));
                        self.hasher.hash_v6(src, dst, p)
                    }
                    L3::Other => 0,
                }
            }
            Err(_) => 0,
        };
        self.tx_table[(hash & 15) as usize].load(Ordering::Relaxed) % self.queues.max(1)
    }

    /// A buffer for a frame to hand over (recycled, to avoid allocating per frame).
    pub(crate) fn buffer(&self) -> Vec<u8> {
        self.spare.lock().unwrap().pop().unwrap_or_default()
    }

    /// Gives a buffer back for reuse.
    pub(crate) fn recycle(&self, mut b: Vec<u8>) {
        b.clear();
        let mut spare = self.spare.lock().unwrap();
        if spare.len() < INBOX_LIMIT {
            spare.push(b);
        }
    }

    /// Hands a frame (virtio-net header first) to queue `q`; false if its inbox is full.
    pub(crate) fn hand_off(&self, q: u32, frame: Vec<u8>) -> bool {
        let Some(inbox) = self.inboxes.get(q as usize) else {
            return false;
        };
        {
            let mut inbox = inbox.lock().unwrap();
            if inbox.len() >= INBOX_LIMIT {
                drop(inbox);
                self.recycle(frame);
                return false;
            }
            inbox.push_back(frame);
        }
        if let Some(w) = self.wakers.lock().unwrap().get(q as usize) {
            w.wake();
        }
        true
    }

    /// The next frame handed to queue `q`.
    pub(crate) fn take(&self, q: u32) -> Option<Vec<u8>> {
        self.inboxes.get(q as usize)?.lock().unwrap().pop_front()
    }
}
