//! Loom models of the ring's signalling protocol (PROTOCOL.md §1.4, §1.5): a writer thread
//! and a reader thread on a tiny model ring, waiting on modelled eventfds only when the
//! rules allow, must never lose a wake-up (loom reports the deadlock) and never race on
//! data bytes (loom's cell tracking checks the index protocol).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p vmbus --release --test loom_ring`
//! Without `--cfg loom` this file compiles to nothing.
#![cfg(loom)]

use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use vmbus::packet::PacketType;
use vmbus::ring::{OutgoingPacket, RingMemory, RingReader, RingWriter, WriteError};

/// An eventfd: signal adds to a counter, wait blocks until it is non-zero and resets it.
#[derive(Default)]
struct Event {
    count: Mutex<u32>,
    cv: Condvar,
}

impl Event {
    fn signal(&self) {
        *self.count.lock().unwrap() += 1;
        self.cv.notify_one();
    }

    fn wait(&self) {
        let mut count = self.count.lock().unwrap();
        while *count == 0 {
            count = self.cv.wait(count).unwrap();
        }
        *count = 0;
    }
}

fn payload(i: u64) -> [u8; 8] {
    (i * 0x0101_0101_0101_0101 + 0x0102_0304_0506_0708).to_le_bytes()
}

/// Writes `count` packets (32 bytes each with the trailer), blocking on `space` when the
/// ring is full as §1.4 describes, and signalling `data` when `commit` says so.
fn writer_thread(mem: RingMemory, count: u64, data: Arc<Event>, space: Arc<Event>, batch: bool) {
    let mut writer = RingWriter::new(mem).unwrap();
    for i in 0..count {
        let body = payload(i);
        let pieces: [&[u8]; 1] = [&body];
        let pkt = OutgoingPacket {
            packet_type: PacketType::DATA_INBAND,
            flags: 0,
            transaction_id: i,
            header: &[],
            payload: &pieces,
        };
        loop {
            match writer.write(&pkt) {
                Ok(()) => {
                    writer.clear_pending_send();
                    break;
                }
                Err(WriteError::Full { needed }) => {
                    if writer.commit().unwrap() {
                        data.signal();
                    }
                    assert!(writer.peer_supports_pending_send());
                    if !writer.set_pending_send(needed).unwrap() {
                        space.wait();
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        if !batch && writer.commit().unwrap() {
            data.signal();
        }
    }
    if writer.commit().unwrap() {
        data.signal();
    }
}

/// Reads `count` packets NAPI style (§1.5), sleeping on `data` only after unmasking found
/// the ring empty, and signalling `space` when `commit` says so.
fn reader_thread(mem: RingMemory, count: u64, data: Arc<Event>, space: Arc<Event>, batch: bool) {
    let mut reader = RingReader::new(mem).unwrap();
    let mut buf = [0u8; 64];
    let mut next = 0;
    reader.mask_interrupts();
    loop {
        while let Some(p) = reader.read(&mut buf).unwrap() {
            assert_eq!(p.transaction_id, next);
            assert_eq!(p.payload, &payload(next));
            next += 1;
            // Free space after every packet (or once per drained batch).
            if !batch && reader.commit().unwrap() {
                space.signal();
            }
        }
        if reader.commit().unwrap() {
            space.signal();
        }
        if next == count {
            return;
        }
        if reader.unmask_interrupts().unwrap() {
            reader.mask_interrupts();
            continue;
        }
        data.wait();
        reader.mask_interrupts();
    }
}

/// One model: `batch` makes the writer publish once per run of writes and the reader once
/// per drained run of reads.
fn run(data_size: usize, count: u64, batch: bool, preemption_bound: usize) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemption_bound);
    builder.check(move || {
        let mem = RingMemory::new_model(data_size).unwrap();
        mem.init_header();
        let peer = mem.share();
        let data = Arc::new(Event::default());
        let space = Arc::new(Event::default());
        let (d, s) = (data.clone(), space.clone());
        let writer = thread::spawn(move || writer_thread(mem, count, d, s, batch));
        reader_thread(peer, count, data, space, batch);
        writer.join().unwrap();
    });
}

/// Room for several packets: the writer never blocks; the reader must never sleep through
/// an empty → non-empty transition it did not see.
#[test]
fn reader_wakeup_is_never_lost() {
    run(128, 4, false, 4);
}

/// Same, with the writer publishing its packets as one batch.
#[test]
fn reader_wakeup_is_never_lost_batched() {
    run(128, 4, true, 4);
}

/// One 32-byte packet at a time fits a 64-byte ring (the second needs 32 free bytes, and
/// only strictly more will do): the writer blocks with `pending_send_sz` and must be woken
/// by the reader's commit.
#[test]
fn blocked_writer_is_always_woken() {
    run(64, 3, false, 4);
}

/// A ring where two packets fit: the writer blocks with a partly drained ring.
#[test]
fn blocked_writer_is_always_woken_two_slots() {
    run(72, 5, true, 4);
}
