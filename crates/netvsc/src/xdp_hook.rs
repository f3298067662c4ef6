//! Native XDP in the receive path (PROTOCOL.md §12): one program per NIC, run on each
//! received frame after RNDIS parsing, before anything reaches the TAP.
//!
//! The frame is copied to a page at offset 256 (the driver's own buffer, reused), the
//! program runs with `rx_queue_index` = the channel; PASS hands the (possibly rewritten)
//! frame on, TX sends it back out on the same queue, DROP/ABORTED/unknown drop it and
//! REDIRECT (not in the base contract) is dropped and counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use xdp::vm::{Program, XdpBuffer};

/// The NIC's attached program and its verdict counters.
pub struct Attachment {
    /// The program.
    pub program: Program,
    /// Where it came from (object path and section), for `status`.
    pub label: String,
    /// Frames passed.
    pub pass: AtomicU64,
    /// Frames dropped (XDP_DROP).
    pub drop: AtomicU64,
    /// Frames sent back out (XDP_TX).
    pub tx: AtomicU64,
    /// Runs that faulted or returned XDP_ABORTED or an unknown action.
    pub aborted: AtomicU64,
    /// XDP_REDIRECT (not supported: dropped).
    pub redirect: AtomicU64,
}

impl Attachment {
    /// A new attachment with zeroed counters.
    pub fn new(program: Program, label: String) -> Self {
        Self {
            program,
            label,
            pass: AtomicU64::new(0),
            drop: AtomicU64::new(0),
            tx: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            redirect: AtomicU64::new(0),
        }
    }
}

/// The NIC's attachment point, shared by its queues (and kept across rebuilds).
#[derive(Default)]
pub struct Slot {
    on: AtomicBool,
    program: Mutex<Option<Arc<Attachment>>>,
}

impl Slot {
    /// The attached program, if any (cheap when none is attached).
    pub fn current(&self) -> Option<Arc<Attachment>> {
        if !self.on.load(Ordering::Acquire) {
            return None;
        }
        self.program.lock().unwrap().clone()
    }

    /// Attaches (or with None detaches) a program.
    pub fn set(&self, a: Option<Arc<Attachment>>) {
        let on = a.is_some();
        *self.program.lock().unwrap() = a;
        self.on.store(on, Ordering::Release);
    }
}

/// What the receive path does with a frame after the program ran.
pub enum Verdict {
    /// Hand `buf.frame()` on to the kernel.
    Pass,
    /// Send `buf.frame()` back out on this queue.
    Tx,
    /// Drop it (counted by the caller under the queue's name).
    Drop,
    /// XDP_REDIRECT: dropped, counted separately.
    Redirect,
}

/// Runs `a` on `frame` in `buf` (a reused page) for queue `queue`.
pub fn run(a: &Attachment, buf: &mut XdpBuffer, frame: &[u8], queue: u32) -> Verdict {
    let room = buf.data.len().saturating_sub(xdp::vm::XDP_HEADROOM);
    let len = frame.len().min(room);
    buf.headroom = xdp::vm::XDP_HEADROOM;
    buf.len = len;
    buf.meta_len = None;
    buf.rx_queue_index = queue;
    buf.data[xdp::vm::XDP_HEADROOM..xdp::vm::XDP_HEADROOM + len].copy_from_slice(&frame[..len]);
    let r = a.program.run(buf, queue);
    match (r.faulted, r.action) {
        (None, xdp::vm::XDP_PASS) => {
            a.pass.fetch_add(1, Ordering::Relaxed);
            Verdict::Pass
        }
        (None, xdp::vm::XDP_TX) => {
            a.tx.fetch_add(1, Ordering::Relaxed);
            Verdict::Tx
        }
        (None, xdp::vm::XDP_DROP) => {
            a.drop.fetch_add(1, Ordering::Relaxed);
            Verdict::Drop
        }
        (None, xdp::vm::XDP_REDIRECT) => {
            a.redirect.fetch_add(1, Ordering::Relaxed);
            Verdict::Redirect
        }
        _ => {
            a.aborted.fetch_add(1, Ordering::Relaxed);
            Verdict::Drop
        }
    }
}

/// A reusable page for the receive path.
pub fn new_buffer() -> XdpBuffer {
    XdpBuffer::new(&[])
}
