//! Ring throughput: 64-byte in-band packets written and read by one thread through one ring
//! (write a batch, commit, read the batch, commit), reported in packets per second.
//!
//! `cargo bench -p vmbus --bench ring`

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vmbus::packet::PacketType;
use vmbus::ring::{OutgoingPacket, RING_HEADER_SIZE, RingMemory, RingReader, RingWriter};

/// Linux's ring size: 512 KiB of data.
const DATA_SIZE: usize = 512 * 1024;

struct HeapRing {
    ptr: *mut u8,
    layout: Layout,
}

impl HeapRing {
    fn new() -> Self {
        let layout = Layout::from_size_align(RING_HEADER_SIZE + DATA_SIZE, 4096).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Self { ptr, layout }
    }

    fn mem(&self) -> RingMemory {
        // SAFETY: the allocation outlives the rings (dropped after the benchmark).
        unsafe { RingMemory::new(self.ptr, self.layout.size()).unwrap() }
    }
}

impl Drop for HeapRing {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

fn inband_64(c: &mut Criterion) {
    let ring = HeapRing::new();
    let mem = ring.mem();
    mem.init_header();
    let mut writer = RingWriter::new(mem).unwrap();
    let mut reader = RingReader::new(ring.mem()).unwrap();
    let payload = [0xA5u8; 64];
    let pieces: [&[u8]; 1] = [&payload];
    let mut buf = [0u8; 4624];
    let mut group = c.benchmark_group("ring");
    for batch in [16u64, 256] {
        group.throughput(Throughput::Elements(batch));
        group.bench_function(format!("inband_64B_batch_{batch}"), |b| {
            b.iter(|| {
                for id in 0..batch {
                    let pkt = OutgoingPacket {
                        packet_type: PacketType::DATA_INBAND,
                        flags: 1,
                        transaction_id: id,
                        header: &[],
                        payload: &pieces,
                    };
                    writer.write(&pkt).unwrap();
                }
                black_box(writer.commit().unwrap());
                let mut sum = 0u64;
                while let Some(p) = reader.read(&mut buf).unwrap() {
                    sum = sum.wrapping_add(p.transaction_id + p.payload[63] as u64);
                }
                black_box(sum);
                black_box(reader.commit().unwrap());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, inband_64);
criterion_main!(benches);
