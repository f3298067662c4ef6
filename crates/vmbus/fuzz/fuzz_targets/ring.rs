//! Fuzz the ring reader (and writer) over hostile memory: the input becomes a ring's control
//! fields and data area; reading until empty or a fatal error, parsing what comes out, and
//! writing into what is left must never panic or touch memory outside the ring.
//!
//! Input: 20 bytes of control words (`write_index`, `read_index`, `interrupt_mask`,
//! `pending_send_sz`, `feature_bits`), one byte choosing the data size (32 + 8 × (b % 64)),
//! one byte choosing the copy buffer size, then the data area.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmbus::packet::{GpaDirectRanges, MAX_GPA_RANGES, PacketType, parse_transfer_pages};
use vmbus::ring::{
    OutgoingPacket, RING_HEADER_SIZE, ReadError, RingMemory, RingReader, RingWriter, WriteError,
};

const MAX_DATA: usize = 32 + 8 * 63;

#[repr(C, align(4096))]
struct Ring([u8; RING_HEADER_SIZE + MAX_DATA]);

fuzz_target!(|input: &[u8]| {
    let mut ring = Box::new(Ring([0; RING_HEADER_SIZE + MAX_DATA]));
    let control = input.get(..20).unwrap_or(input);
    let words = [0x0usize, 0x4, 0x8, 0xC, 0x40];
    for (chunk, &offset) in control.chunks(4).zip(&words) {
        ring.0[offset..offset + chunk.len()].copy_from_slice(chunk);
    }
    let data_size = 32 + 8 * (input.get(20).copied().unwrap_or(0) as usize % 64);
    let buf_len = match input.get(21).copied().unwrap_or(0) {
        0..=127 => 4624,
        b => b as usize,
    };
    let data = input.get(22..).unwrap_or(&[]);
    let n = data.len().min(data_size);
    ring.0[RING_HEADER_SIZE..RING_HEADER_SIZE + n].copy_from_slice(&data[..n]);
    let len = RING_HEADER_SIZE + data_size;
    let base = ring.0.as_mut_ptr();
    // SAFETY: `ring` holds `len` bytes, 4096-aligned, and outlives every view below.
    let mem = || unsafe { RingMemory::new_with_min(base, len, 0) }.unwrap();

    let mut buf = vec![0u8; buf_len];
    if let Ok(mut reader) = RingReader::new(mem()) {
        for _ in 0..4096 {
            match reader.read(&mut buf) {
                Ok(None) => break,
                Ok(Some(p)) => {
                    assert!(16 + p.header.len() + p.payload.len() <= buf_len);
                    match p.packet_type {
                        PacketType::DATA_USING_XFER_PAGES => {
                            let _ = parse_transfer_pages(p.header);
                        }
                        PacketType::DATA_USING_GPA_DIRECT => {
                            if let Ok(ranges) = GpaDirectRanges::parse(p.header, MAX_GPA_RANGES) {
                                for r in ranges {
                                    assert!(r.byte_count > 0 && r.byte_offset < 4096);
                                    let _ = r.pfn_iter().fold(0u64, u64::wrapping_add);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                Err(ReadError::BadOffset { .. }) => {}
                Err(e) => {
                    assert!(e.is_fatal());
                    break;
                }
            }
        }
        let _ = reader.commit();
        let _ = reader.unmask_interrupts();
    }
    if let Ok(mut writer) = RingWriter::new(mem()) {
        let payload = [0x5A_u8; 61];
        let pieces: [&[u8]; 2] = [&payload, &payload[..3]];
        let pkt = OutgoingPacket {
            packet_type: PacketType::DATA_INBAND,
            flags: 1,
            transaction_id: 7,
            header: &[],
            payload: &pieces,
        };
        for _ in 0..16 {
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
    }
});
