//! Unit tests of the ring: framing, wrap-around, space and signalling rules, and hostile
//! control pages and descriptors.

extern crate std;

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::vec;
use std::vec::Vec;

use zerocopy::IntoBytes;

use super::*;
use crate::packet::{
    COMPLETION_REQUESTED, PacketDescriptor, PacketType, TransferPageRange, parse_transfer_pages,
    write_transfer_page_header,
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
        // SAFETY: the allocation outlives every ring of the test (dropped last).
        unsafe { RingMemory::new_with_min(self.ptr, self.layout.size(), 0).unwrap() }
    }

    fn pair(&self) -> (RingWriter, RingReader) {
        let mem = self.mem();
        mem.init_header();
        (
            RingWriter::new(mem).unwrap(),
            RingReader::new(self.mem()).unwrap(),
        )
    }

    fn set_u32(&self, offset: usize, value: u32) {
        // SAFETY: inside the control page, aligned.
        unsafe { self.ptr.add(offset).cast::<u32>().write_volatile(value) }
    }

    fn get_u32(&self, offset: usize) -> u32 {
        // SAFETY: inside the control page, aligned.
        unsafe { self.ptr.add(offset).cast::<u32>().read_volatile() }
    }

    fn data(&self) -> Vec<u8> {
        let size = self.layout.size() - RING_HEADER_SIZE;
        // SAFETY: the data area.
        unsafe { core::slice::from_raw_parts(self.ptr.add(RING_HEADER_SIZE), size).to_vec() }
    }

    fn set_data(&self, offset: usize, bytes: &[u8]) {
        assert!(RING_HEADER_SIZE + offset + bytes.len() <= self.layout.size());
        // SAFETY: checked above.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.add(RING_HEADER_SIZE + offset),
                bytes.len(),
            )
        }
    }
}

impl Drop for TestRing {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

const W: usize = 0x0;
const R: usize = 0x4;
const MASK: usize = 0x8;
const PEND: usize = 0xC;
const FEAT: usize = 0x40;

fn inband<'a>(id: u64, payload: &'a [&'a [u8]]) -> OutgoingPacket<'a> {
    OutgoingPacket {
        packet_type: PacketType::DATA_INBAND,
        flags: COMPLETION_REQUESTED,
        transaction_id: id,
        header: &[],
        payload,
    }
}

fn read_one(reader: &mut RingReader) -> (u16, u16, u64, Vec<u8>, Vec<u8>) {
    let mut buf = [0u8; 4624];
    let p = reader.read(&mut buf).unwrap().expect("a packet");
    (
        p.packet_type,
        p.flags,
        p.transaction_id,
        p.header.to_vec(),
        p.payload.to_vec(),
    )
}

#[test]
fn memory_validation() {
    let ring = TestRing::new(16 * 1024);
    let len = ring.layout.size();
    // SAFETY (all): the pointers and lengths stay inside `ring`.
    unsafe {
        assert!(RingMemory::new(ring.ptr, len).is_ok());
        assert_eq!(
            RingMemory::new(ring.ptr, len - 4096).unwrap_err(),
            RingError::DataSizeTooSmall {
                data_size: 12 * 1024,
                min: MIN_RING_DATA_SIZE
            }
        );
        assert_eq!(
            RingMemory::new_with_min(ring.ptr, 100, 0).unwrap_err(),
            RingError::MemoryTooSmall {
                len: 100,
                min: 4096
            }
        );
        assert_eq!(
            RingMemory::new_with_min(ring.ptr, 4096 + 44, 0).unwrap_err(),
            RingError::BadDataSize {
                data_size: 44,
                multiple: 8
            }
        );
        assert_eq!(
            RingMemory::new_with_min(ring.ptr, 4096 + 24, 0).unwrap_err(),
            RingError::DataSizeTooSmall {
                data_size: 24,
                min: 32
            }
        );
        assert_eq!(
            RingMemory::new(ring.ptr, len - 8).unwrap_err(),
            RingError::DataSizeTooSmall {
                data_size: 16 * 1024 - 8,
                min: MIN_RING_DATA_SIZE
            }
        );
        let ring2 = TestRing::new(20 * 1024);
        assert_eq!(
            RingMemory::new(ring2.ptr, 4096 + 16 * 1024 + 8).unwrap_err(),
            RingError::BadDataSize {
                data_size: 16 * 1024 + 8,
                multiple: 4096
            }
        );
        assert_eq!(
            RingMemory::new_with_min(ring.ptr.add(4), 4096 + 64, 0).unwrap_err(),
            RingError::Misaligned {
                addr: ring.ptr as usize + 4,
                align: 8
            }
        );
        assert!(matches!(
            RingMemory::new(ring.ptr.add(8), 4096 + 16 * 1024).unwrap_err(),
            RingError::Misaligned { align: 4096, .. }
        ));
        assert!(RingMemory::new_with_min(core::ptr::null_mut(), 8192, 0).is_err());
    }
}

#[test]
fn init_header_zeroes_and_sets_feature_bit() {
    let ring = TestRing::new(64);
    for off in (0..RING_HEADER_SIZE).step_by(4) {
        ring.set_u32(off, 0xDEAD_BEEF);
    }
    ring.mem().init_header();
    for off in (0..RING_HEADER_SIZE).step_by(4) {
        assert_eq!(
            ring.get_u32(off),
            if off == FEAT { 1 } else { 0 },
            "offset {off:#x}"
        );
    }
    let c = ring.mem().control();
    assert_eq!(
        c,
        RingControl {
            write_index: 0,
            read_index: 0,
            interrupt_mask: 0,
            pending_send_sz: 0,
            feature_bits: 1
        }
    );
}

#[test]
fn packet_bytes_and_trailer() {
    let ring = TestRing::new(256);
    let (mut w, mut r) = ring.pair();
    let payload: &[&[u8]] = &[b"abc", b"defgh"];
    w.write(&inband(0x1122_3344_5566_7788, payload)).unwrap();
    // Not yet published.
    assert_eq!(ring.get_u32(W), 0);
    assert!(r.read(&mut [0u8; 64]).unwrap().is_none());
    assert!(w.commit().unwrap());
    assert_eq!(ring.get_u32(W), 32);
    let d = ring.data();
    #[rustfmt::skip]
    let expected: [u8; 32] = [
        0x06, 0x00, 0x02, 0x00, 0x03, 0x00, 0x01, 0x00, // type, offset8 2, len8 3, flags
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // transaction id
        b'a', b'b', b'c', b'd', b'e', b'f', b'g', b'h',
        0, 0, 0, 0, 0, 0, 0, 0, // trailer: start offset 0 in the high half
    ];
    assert_eq!(&d[..32], &expected);

    // A second packet with an odd payload: zero padding, trailer = start offset 32.
    w.write(&inband(7, &[b"xyz"])).unwrap();
    assert!(!w.commit().unwrap(), "ring was not empty: no signal");
    let d = ring.data();
    assert_eq!(&d[48..56], &[b'x', b'y', b'z', 0, 0, 0, 0, 0]);
    assert_eq!(&d[56..64], &[0, 0, 0, 0, 32, 0, 0, 0]);
    assert_eq!(
        u64::from_le_bytes(d[56..64].try_into().unwrap()),
        32u64 << 32
    );

    assert_eq!(
        read_one(&mut r),
        (6, 1, 0x1122_3344_5566_7788, vec![], b"abcdefgh".to_vec())
    );
    assert_eq!(
        read_one(&mut r),
        (6, 1, 7, vec![], vec![b'x', b'y', b'z', 0, 0, 0, 0, 0])
    );
    assert!(r.read(&mut [0u8; 64]).unwrap().is_none());
    assert_eq!(ring.get_u32(R), 0, "read index published only on commit");
    assert!(!r.commit().unwrap());
    assert_eq!(ring.get_u32(R), 64);
    assert!(!r.commit().unwrap(), "nothing new to publish");
}

#[test]
fn type_header_and_offset8() {
    let ring = TestRing::new(512);
    let (mut w, mut r) = ring.pair();
    let ranges = [TransferPageRange {
        byte_count: 10,
        byte_offset: 4096,
    }];
    let mut hdr = [0u8; 16];
    let n = write_transfer_page_header(&mut hdr, 0xCAFE, &ranges).unwrap();
    let pkt = OutgoingPacket {
        packet_type: PacketType::DATA_USING_XFER_PAGES,
        flags: COMPLETION_REQUESTED,
        transaction_id: 99,
        header: &hdr[..n],
        payload: &[&[1, 2, 3, 4, 5, 6, 7, 8, 9]],
    };
    assert_eq!(RingWriter::packet_len(&pkt), 16 + 16 + 16 + 8);
    w.write(&pkt).unwrap();
    w.commit().unwrap();
    assert_eq!(&ring.data()[2..6], &[4, 0, 6, 0], "offset8 4, len8 6");
    let mut buf = [0u8; 128];
    let p = r.read(&mut buf).unwrap().unwrap();
    assert_eq!(p.packet_type, PacketType::DATA_USING_XFER_PAGES);
    assert_eq!(p.header.len(), 16);
    let (id, got) = parse_transfer_pages(p.header).unwrap();
    assert_eq!((id, got), (0xCAFE, &ranges[..]));
    assert_eq!(p.payload, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 0, 0, 0, 0, 0]);
    // The copy buffer starts with the descriptor.
    assert_eq!(buf[0], 7);

    let bad = OutgoingPacket {
        header: &hdr[..4],
        ..pkt
    };
    assert_eq!(
        w.write(&bad),
        Err(WriteError::HeaderMisaligned { header_len: 4 })
    );
}

#[test]
fn wrap_around_in_two_pieces() {
    // 128-byte data area; 40-byte packets (16 + 16 payload + 8 trailer).
    let ring = TestRing::new(128);
    let (mut w, mut r) = ring.pair();
    let mut expected_trailers = Vec::new();
    for i in 0..20u64 {
        let payload = [(i as u8).wrapping_mul(17); 13];
        let start = ring.get_u32(W);
        expected_trailers.push(start);
        w.write(&inband(i, &[&payload])).unwrap();
        w.commit().unwrap();
        let (_, _, id, hdr, got) = read_one(&mut r);
        assert_eq!((id, hdr.len()), (i, 0));
        assert_eq!(&got[..13], &payload);
        assert_eq!(&got[13..], &[0, 0, 0]);
        r.commit().unwrap();
        // The trailer sits at start + 32 modulo 128.
        let d = ring.data();
        let t = (start as usize + 32) % 128;
        assert_eq!(&d[t..t + 4], &[0, 0, 0, 0]);
        assert_eq!(
            u32::from_le_bytes(d[t + 4..t + 8].try_into().unwrap()),
            start
        );
    }
    // Starts went 0, 40, 80, 120 (the descriptor wraps), 32, …
    assert_eq!(&expected_trailers[..5], &[0, 40, 80, 120, 32]);
    // Packet 3 started at 120: its descriptor is split 8 | 8 across the end.
    // Packet 19 started at (19 * 40) % 128 = 120 too.
    let d = ring.data();
    assert_eq!(&d[120..128], &[6, 0, 2, 0, 4, 0, 1, 0]);
    assert_eq!(&d[0..8], &19u64.to_le_bytes());
}

#[test]
fn never_full() {
    // 64-byte data area, 32-byte packets: the first fits (64 > 32), the second does not
    // (32 is not > 32) although the bytes would fit exactly.
    let ring = TestRing::new(64);
    let (mut w, mut r) = ring.pair();
    let payload: &[&[u8]] = &[&[0xAA; 8]];
    w.write(&inband(1, payload)).unwrap();
    let before = ring.data();
    assert_eq!(
        w.write(&inband(2, payload)),
        Err(WriteError::Full { needed: 32 })
    );
    assert_eq!(ring.data(), before, "a failed write writes nothing");
    assert_eq!(w.free_bytes().unwrap(), 32);
    assert!(w.commit().unwrap());
    assert_eq!(ring.get_u32(W), 32);
    // A 24-byte packet still fits (32 > 24), leaving 8.
    w.write(&inband(3, &[])).unwrap();
    assert_eq!(w.free_bytes().unwrap(), 8);
    w.commit().unwrap();
    assert_eq!(ring.get_u32(W), 56);
    assert_ne!(
        ring.get_u32(W),
        ring.get_u32(R),
        "never full: w == r only when empty"
    );
    assert_eq!(read_one(&mut r).2, 1);
    assert_eq!(read_one(&mut r).2, 3);
    r.commit().unwrap();
    assert!(r.is_empty().unwrap());
}

#[test]
fn too_large_packets() {
    let ring = TestRing::new(64);
    let (mut w, _r) = ring.pair();
    assert_eq!(w.max_packet_len(), 48);
    w.write(&inband(1, &[&[0u8; 17]])).unwrap();
    assert_eq!(
        w.write(&inband(1, &[&[0u8; 25]])),
        Err(WriteError::TooLarge { len: 56, max: 48 })
    );
    // len8 is u16: 512 KiB + ring cannot take a packet > 0xFFFF × 8.
    let big = TestRing::new(1 << 20);
    let (mut w, _r) = big.pair();
    let huge = vec![0u8; 0xFFFF * 8];
    assert!(matches!(
        w.write(&inband(1, &[&huge])),
        Err(WriteError::TooLarge { .. })
    ));
    let ok = vec![0u8; 0xFFFF * 8 - 16];
    w.write(&inband(1, &[&ok])).unwrap();
}

#[test]
fn signal_only_empty_to_nonempty() {
    let ring = TestRing::new(256);
    let (mut w, mut r) = ring.pair();
    assert!(!w.commit().unwrap(), "nothing to publish");
    // A batch: one signal.
    for i in 0..3 {
        w.write(&inband(i, &[])).unwrap();
    }
    assert!(w.commit().unwrap());
    w.write(&inband(3, &[])).unwrap();
    assert!(!w.commit().unwrap(), "reader has not caught up");
    // Reader consumes some but not all: still no signal.
    read_one(&mut r);
    r.commit().unwrap();
    w.write(&inband(4, &[])).unwrap();
    assert!(!w.commit().unwrap());
    // Reader consumed but did not publish: still no signal (it will see the data).
    for _ in 0..4 {
        read_one(&mut r);
    }
    w.write(&inband(5, &[])).unwrap();
    assert!(!w.commit().unwrap());
    read_one(&mut r);
    r.commit().unwrap();
    // Now empty: signal.
    w.write(&inband(6, &[])).unwrap();
    assert!(w.commit().unwrap());
    read_one(&mut r);
    r.commit().unwrap();
    // Masked: no signal even though empty → non-empty.
    r.mask_interrupts();
    assert_eq!(ring.get_u32(MASK), 1);
    w.write(&inband(7, &[])).unwrap();
    assert!(!w.commit().unwrap());
    // Unmask finds the data: keep draining.
    assert!(r.unmask_interrupts().unwrap());
    assert_eq!(ring.get_u32(MASK), 0);
    read_one(&mut r);
    r.commit().unwrap();
    assert!(!r.unmask_interrupts().unwrap(), "empty: may sleep");
    // Any non-zero mask counts.
    ring.set_u32(MASK, 0x8000_0000);
    w.write(&inband(8, &[])).unwrap();
    assert!(!w.commit().unwrap());
}

#[test]
fn pending_send_transition() {
    // 256-byte data area, 32-byte packets: 7 fit (224 used, 32 free is not > 32).
    let ring = TestRing::new(256);
    let (mut w, mut r) = ring.pair();
    let payload: &[&[u8]] = &[&[1; 8]];
    for i in 0..7 {
        w.write(&inband(i, payload)).unwrap();
    }
    let Err(WriteError::Full { needed }) = w.write(&inband(7, payload)) else {
        panic!()
    };
    assert_eq!(needed, 32);
    assert!(w.commit().unwrap());
    assert!(w.peer_supports_pending_send());
    assert!(!w.set_pending_send(needed).unwrap(), "no space yet");
    // max(32 + 8, 256 / 4) = 64.
    assert_eq!(ring.get_u32(PEND), 64);
    // First read: writable 32 → 64: before 32 ≤ 64 but now 64 is not > 64.
    read_one(&mut r);
    assert!(!r.commit().unwrap());
    // Second: 64 → 96 crosses: signal.
    read_one(&mut r);
    assert!(r.commit().unwrap());
    // Third: 96 → 128: already above, no signal.
    read_one(&mut r);
    assert!(!r.commit().unwrap());
    // The writer retries, then clears.
    w.write(&inband(7, payload)).unwrap();
    w.clear_pending_send();
    assert_eq!(ring.get_u32(PEND), 0);
    assert!(!w.commit().unwrap());
    read_one(&mut r);
    assert!(!r.commit().unwrap(), "pending cleared: no signal");

    // A batch that jumps over the threshold in one commit also signals.
    ring.set_u32(PEND, 64);
    let used = 256 - w.free_bytes().unwrap();
    assert_eq!(used, 128);
    for _ in 0..4 {
        read_one(&mut r);
    }
    // 128 → 256 writable (empty) in one commit; before 128 > 64: no signal.
    assert!(!r.commit().unwrap());
    for i in 0..7 {
        w.write(&inband(i, payload)).unwrap();
    }
    w.commit().unwrap();
    for _ in 0..7 {
        read_one(&mut r);
    }
    // 32 → 256 in one commit: crosses.
    assert!(r.commit().unwrap());

    // The low 3 bits of pending_send_sz are ignored (§1.4): 33 & !7 = 32.
    for i in 0..7 {
        w.write(&inband(i, payload)).unwrap();
    }
    w.commit().unwrap();
    ring.set_u32(PEND, 33);
    read_one(&mut r);
    assert!(r.commit().unwrap(), "32 → 64 crosses pend 32");
    read_one(&mut r);
    assert!(!r.commit().unwrap(), "64 → 96: already above");
}

#[test]
fn pending_send_needs_feature_bit() {
    let ring = TestRing::new(256);
    let (mut w, mut r) = ring.pair();
    ring.set_u32(FEAT, 0);
    assert!(!w.peer_supports_pending_send());
    for i in 0..7 {
        w.write(&inband(i, &[&[0; 8]])).unwrap();
    }
    w.commit().unwrap();
    assert!(!w.set_pending_send(32).unwrap());
    for _ in 0..7 {
        read_one(&mut r);
    }
    assert!(
        !r.commit().unwrap(),
        "feature bit clear: never signal for space"
    );
}

#[test]
fn set_pending_send_sees_space_and_limits() {
    let ring = TestRing::new(256);
    let (mut w, _r) = ring.pair();
    assert!(
        w.set_pending_send(32).unwrap(),
        "space already there: retry"
    );
    assert_eq!(ring.get_u32(PEND), 64);
    w.clear_pending_send();
    // Threshold L + 8 must stay below data_size.
    assert!(w.set_pending_send(240).is_ok());
    assert_eq!(ring.get_u32(PEND), 248);
    assert_eq!(
        w.set_pending_send(248),
        Err(RingError::PendingSendTooLarge {
            needed: 248,
            data_size: 256
        })
    );
    // Uncommitted bytes count into the threshold.
    w.clear_pending_send();
    w.write(&inband(1, &[&[0; 64]])).unwrap();
    assert!(w.set_pending_send(100).unwrap());
    assert_eq!(
        ring.get_u32(PEND),
        200,
        "100 + 88 uncommitted + 8, rounded up to 8"
    );
    assert!(
        w.set_pending_send(160).is_err(),
        "160 + 88 + 8 reaches data_size"
    );
}

#[test]
fn writer_and_reader_resume_at_published_indices() {
    let ring = TestRing::new(128);
    let mem = ring.mem();
    mem.init_header();
    ring.set_u32(W, 96);
    ring.set_u32(R, 96);
    let mut w = RingWriter::new(mem).unwrap();
    let mut r = RingReader::new(ring.mem()).unwrap();
    w.write(&inband(5, &[&[9; 24]])).unwrap();
    assert!(w.commit().unwrap());
    assert_eq!(ring.get_u32(W), (96 + 48) % 128);
    assert_eq!(read_one(&mut r).4, vec![9; 24]);
    r.commit().unwrap();
    assert_eq!(ring.get_u32(R), 16);
}

#[test]
fn hostile_indices() {
    let ring = TestRing::new(128);
    let (mut w, mut r) = ring.pair();
    let mut buf = [0u8; 256];
    for bad in [128, 129, 4, 0xFFFF_FFF8] {
        ring.set_u32(W, bad);
        let e = r.read(&mut buf).unwrap_err();
        assert_eq!(
            e,
            ReadError::Ring(RingError::BadWriteIndex {
                index: bad,
                data_size: 128
            })
        );
        assert!(e.is_fatal());
        assert!(r.is_empty().is_err());
        assert!(r.unmask_interrupts().is_err());
        assert!(RingWriter::new(ring.mem()).is_err());
    }
    ring.set_u32(W, 0);
    for bad in [128, 12, u32::MAX] {
        ring.set_u32(R, bad);
        assert_eq!(
            w.free_bytes(),
            Err(RingError::BadReadIndex {
                index: bad,
                data_size: 128
            })
        );
        assert!(RingReader::new(ring.mem()).is_err());
        // The cached read index lets this write through; the commit re-reads and fails.
        w.write(&inband(1, &[])).unwrap();
        assert_eq!(
            w.commit(),
            Err(RingError::BadReadIndex {
                index: bad,
                data_size: 128
            })
        );
        // A write that needs a fresh read index fails too.
        assert_eq!(
            w.write(&inband(1, &[&[0; 80]])),
            Err(WriteError::Ring(RingError::BadReadIndex {
                index: bad,
                data_size: 128
            }))
        );
    }
}

/// Writes a raw descriptor at `offset` and publishes `write_index`.
fn plant(ring: &TestRing, offset: usize, desc: PacketDescriptor, write_index: u32) {
    ring.set_data(offset, desc.as_bytes());
    ring.set_u32(W, write_index);
}

fn desc(offset8: u16, len8: u16) -> PacketDescriptor {
    PacketDescriptor {
        packet_type: 6,
        offset8,
        len8,
        flags: 0,
        transaction_id: 42,
    }
}

#[test]
fn hostile_len8_is_fatal() {
    let ring = TestRing::new(128);
    let (_w, _r) = ring.pair();
    let reader = || RingReader::new(ring.mem()).unwrap();
    let mut buf = [0u8; 256];
    // len8 too small.
    for len8 in [0, 1] {
        plant(&ring, 0, desc(2, len8), 32);
        let e = reader().read(&mut buf).unwrap_err();
        assert_eq!(e, ReadError::Ring(RingError::PacketTooShort { len8 }));
        assert!(e.is_fatal());
    }
    // len8 + trailer beyond the readable bytes.
    plant(&ring, 0, desc(2, 4), 32);
    assert_eq!(
        reader().read(&mut buf),
        Err(ReadError::Ring(RingError::PacketOverrun {
            len8: 4,
            readable: 32
        }))
    );
    plant(&ring, 0, desc(2, 0xFFFF), 120);
    assert!(matches!(
        reader().read(&mut buf),
        Err(ReadError::Ring(RingError::PacketOverrun { .. }))
    ));
    // Fewer readable bytes than a descriptor.
    ring.set_u32(W, 8);
    assert_eq!(
        reader().read(&mut buf),
        Err(ReadError::Ring(RingError::TruncatedDescriptor {
            readable: 8
        }))
    );
    // A fatal error does not move the cursor: it repeats.
    let mut r = reader();
    plant(&ring, 0, desc(2, 1), 32);
    assert!(r.read(&mut buf).is_err());
    assert!(r.read(&mut buf).is_err());
    r.commit().unwrap();
    assert_eq!(ring.get_u32(R), 0);
    // Larger than the caller's buffer: fatal too, nothing consumed.
    let mut r = reader();
    plant(&ring, 0, desc(2, 8), 72);
    let e = r.read(&mut buf[..63]).unwrap_err();
    assert_eq!(
        e,
        ReadError::Ring(RingError::PacketTooLargeForBuffer {
            len: 64,
            buf_len: 63
        })
    );
    assert!(e.is_fatal());
    // The cursor did not move: with a big enough buffer the same packet reads.
    let p = r.read(&mut buf).unwrap().unwrap();
    assert_eq!((p.transaction_id, p.payload.len()), (42, 48));
}

#[test]
fn hostile_offset8_drops_one_packet() {
    let ring = TestRing::new(128);
    let (_w, mut r) = ring.pair();
    let mut buf = [0u8; 256];
    // Three packets of len8 3: offset8 1 (bad), offset8 4 (> len8, bad), then a good one.
    ring.set_data(0, desc(1, 3).as_bytes());
    ring.set_data(32, desc(4, 3).as_bytes());
    ring.set_data(64, desc(3, 3).as_bytes());
    ring.set_u32(W, 96);
    let e = r.read(&mut buf).unwrap_err();
    assert_eq!(
        e,
        ReadError::BadOffset {
            offset8: 1,
            len8: 3,
            transaction_id: 42
        }
    );
    assert!(!e.is_fatal());
    assert_eq!(
        r.read(&mut buf).unwrap_err(),
        ReadError::BadOffset {
            offset8: 4,
            len8: 3,
            transaction_id: 42
        }
    );
    let p = r.read(&mut buf).unwrap().unwrap();
    assert_eq!(
        (p.header.len(), p.payload.len()),
        (8, 0),
        "offset8 == len8 is valid"
    );
    assert!(r.read(&mut buf).unwrap().is_none());
    r.commit().unwrap();
    assert_eq!(ring.get_u32(R), 96);
}

#[test]
fn reader_ignores_trailer_contents() {
    let ring = TestRing::new(128);
    let (mut w, mut r) = ring.pair();
    w.write(&inband(1, &[&[5; 8]])).unwrap();
    w.commit().unwrap();
    ring.set_data(24, &[0xFF; 8]);
    assert_eq!(read_one(&mut r).4, vec![5; 8]);
}
