//! Property tests of the ring: random sequences of writes, reads and commits through a
//! small ring keep order, bytes, space accounting and the empty → non-empty signal rule;
//! random garbage in the control page and data area never panics.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::collections::VecDeque;

use proptest::prelude::*;
use vmbus::packet::PacketType;
use vmbus::ring::{
    OutgoingPacket, RING_HEADER_SIZE, ReadError, RingMemory, RingReader, RingWriter, WriteError,
};

/// Page-aligned zeroed memory for one ring.
struct TestRing {
    ptr: *mut u8,
    layout: Layout,
}

impl TestRing {
    fn new(data_size: usize) -> Self {
        let layout = Layout::from_size_align(RING_HEADER_SIZE + data_size, 4096).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Self { ptr, layout }
    }

    fn mem(&self) -> RingMemory {
        // SAFETY: the allocation outlives every ring made in the test.
        unsafe { RingMemory::new_with_min(self.ptr, self.layout.size(), 0).unwrap() }
    }

    fn fill(&self, control: &[u32], data: &[u8]) {
        // SAFETY: both copies stay inside the allocation.
        unsafe {
            let n = control.len().min(RING_HEADER_SIZE / 4);
            std::ptr::copy_nonoverlapping(control.as_ptr().cast::<u8>(), self.ptr, n * 4);
            let n = data.len().min(self.layout.size() - RING_HEADER_SIZE);
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(RING_HEADER_SIZE), n);
        }
    }
}

impl Drop for TestRing {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        payload_len: usize,
        header_units: usize,
        pieces: usize,
    },
    Read,
    CommitWriter,
    CommitReader,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..300, 0usize..3, 1usize..4)
            .prop_map(|(payload_len, header_units, pieces)| Op::Write { payload_len, header_units, pieces }),
        3 => Just(Op::Read),
        2 => Just(Op::CommitWriter),
        2 => Just(Op::CommitReader),
    ]
}

fn pattern(id: u64, len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (id as u8)
                .wrapping_mul(31)
                .wrapping_add(i as u8)
                .wrapping_add(salt)
        })
        .collect()
}

/// A packet the model expects, with its ring footprint.
struct Expected {
    id: u64,
    header: Vec<u8>,
    payload: Vec<u8>,
    len: usize,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn sequences_keep_order_and_bytes(
        data_size in prop::sample::select(vec![64usize, 128, 256, 512, 1024, 4096]),
        start in 0usize..512,
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let ring = TestRing::new(data_size);
        let mem = ring.mem();
        mem.init_header();
        // Start anywhere in the ring, as a reopened channel would.
        let start = (start * 8 % data_size) as u32;
        ring.fill(&[start, start], &[]);
        let mut writer = RingWriter::new(mem).unwrap();
        let mut reader = RingReader::new(ring.mem()).unwrap();

        let mut written: VecDeque<Expected> = VecDeque::new(); // not yet published
        let mut published: VecDeque<Expected> = VecDeque::new(); // published, unread
        let mut consumed_unpublished = 0usize; // bytes read, read_index not published
        let mut used = 0usize; // bytes between published read_index and write cursor
        let mut write_published_empty = true; // reader's published index == published write index
        let mut next_id = 0u64;
        let mut buf = vec![0u8; 4096];

        for op in ops {
            match op {
                Op::Write { payload_len, header_units, pieces } => {
                    let id = next_id;
                    let header = pattern(id, header_units * 8, 0x80);
                    let payload = pattern(id, payload_len, 0);
                    let cut: Vec<&[u8]> = {
                        let step = payload_len.div_ceil(pieces).max(1);
                        payload.chunks(step).collect()
                    };
                    let pkt = OutgoingPacket {
                        packet_type: PacketType::DATA_INBAND,
                        flags: 0,
                        transaction_id: id,
                        header: &header,
                        payload: &cut,
                    };
                    let len = RingWriter::packet_len(&pkt);
                    prop_assert_eq!(len, (16 + header.len() + payload_len).div_ceil(8) * 8 + 8);
                    let result = writer.write(&pkt);
                    if len > data_size - 16 {
                        prop_assert_eq!(result, Err(WriteError::TooLarge { len, max: data_size - 16 }));
                    } else if data_size - used > len {
                        prop_assert_eq!(result, Ok(()));
                        used += len;
                        next_id += 1;
                        written.push_back(Expected { id, header, payload, len });
                    } else {
                        prop_assert_eq!(result, Err(WriteError::Full { needed: len }));
                    }
                }
                Op::CommitWriter => {
                    let signal = writer.commit().unwrap();
                    let expect = !written.is_empty() && write_published_empty;
                    prop_assert_eq!(signal, expect);
                    if !written.is_empty() {
                        write_published_empty = false;
                    }
                    published.extend(written.drain(..));
                }
                Op::Read => {
                    let got = reader.read(&mut buf).unwrap();
                    match published.pop_front() {
                        None => prop_assert!(got.is_none()),
                        Some(e) => {
                            let p = got.unwrap();
                            prop_assert_eq!(p.transaction_id, e.id);
                            prop_assert_eq!(p.packet_type, PacketType::DATA_INBAND);
                            prop_assert_eq!(p.header, &e.header[..]);
                            let (body, pad) = p.payload.split_at(e.payload.len());
                            prop_assert_eq!(body, &e.payload[..]);
                            prop_assert!(pad.len() < 8 && pad.iter().all(|&b| b == 0));
                            consumed_unpublished += e.len;
                        }
                    }
                }
                Op::CommitReader => {
                    // No writer is blocked: never a signal.
                    prop_assert!(!reader.commit().unwrap());
                    used -= consumed_unpublished;
                    consumed_unpublished = 0;
                    if published.is_empty() {
                        write_published_empty = true;
                    }
                }
            }
            prop_assert_eq!(writer.free_bytes().unwrap(), data_size - used);
        }
    }

    #[test]
    fn garbage_never_panics(
        data_size in prop::sample::select(vec![32usize, 64, 128, 4096]),
        control in prop::collection::vec(
            prop_oneof![any::<u32>(), (0u32..64).prop_map(|x| x * 8), Just(0u32), Just(1u32)],
            17),
        data in prop::collection::vec(any::<u8>(), 0..4096),
        buf_len in prop_oneof![Just(4624usize), 0usize..200],
    ) {
        let ring = TestRing::new(data_size);
        ring.fill(&control, &data);
        let mut buf = vec![0u8; buf_len];
        if let Ok(mut reader) = RingReader::new(ring.mem()) {
            for _ in 0..1000 {
                match reader.read(&mut buf) {
                    Ok(None) => break,
                    Ok(Some(p)) => {
                        prop_assert!(16 + p.header.len() + p.payload.len() <= buf_len);
                        prop_assert_eq!((16 + p.header.len()) % 8, 0);
                    }
                    Err(ReadError::BadOffset { .. }) => {}
                    Err(e) => {
                        prop_assert!(e.is_fatal());
                        break;
                    }
                }
            }
            let _ = reader.commit();
            reader.mask_interrupts();
            let _ = reader.unmask_interrupts();
            let _ = reader.is_empty();
        }
        if let Ok(mut writer) = RingWriter::new(ring.mem()) {
            let payload = [0x5Au8; 40];
            let pkt = OutgoingPacket {
                packet_type: PacketType::DATA_INBAND,
                flags: 1,
                transaction_id: 1,
                header: &[],
                payload: &[&payload],
            };
            for _ in 0..8 {
                match writer.write(&pkt) {
                    Ok(()) => {}
                    Err(WriteError::Full { needed }) => {
                        let _ = writer.set_pending_send(needed);
                        writer.clear_pending_send();
                        break;
                    }
                    Err(_) => break,
                }
            }
            let _ = writer.commit();
            let _ = writer.free_bytes();
        }
    }
}
