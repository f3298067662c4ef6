//! The coalescer on arbitrary frame sequences: no panic; every input frame is accounted for
//! exactly once in the output; merged frames parse with consistent lengths.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netpkt::checksum::{self, ChecksumStatus};
use netpkt::coalesce::{CoalesceConfig, CoalescedFrame, Coalescer, TcpChecksumMode};
use netpkt::frame::parse_frame;

fuzz_target!(|data: &[u8]| {
    let [c0, c1, frames @ ..] = data else { return };
    let mut rest = frames;
    let config = CoalesceConfig {
        max_ip_len: 41 + u16::from(*c0) * 200,
        max_segments: u16::from(*c1 & 0x3F) + 1,
        tcp_checksum: if c1 & 0x40 != 0 {
            TcpChecksumMode::LeaveStale
        } else {
            TcpChecksumMode::Recompute
        },
        verify_checksums: c1 & 0x80 == 0,
    };
    let Ok(mut c) = Coalescer::new(config) else {
        return;
    };
    let mut inputs = 0usize;
    let mut outputs = 0usize;
    let mut sink = |f: CoalescedFrame<'_>| {
        outputs += usize::from(f.segments);
        assert!(f.segments >= 1 && f.segments <= config.max_segments);
        if f.segments > 1 {
            let info = parse_frame(f.frame).expect("merged frame parses");
            assert_eq!(info.ip_end, f.frame.len());
            assert!(info.ip_end - info.l3_offset <= usize::from(config.max_ip_len));
            if !f.tcp_checksum_stale && config.verify_checksums {
                assert_eq!(
                    checksum::verify_l4_checksum(f.frame),
                    Ok(ChecksumStatus::Valid)
                );
            }
        }
    };
    // Frames are length-prefixed (2 bytes, big-endian) in the input.
    while let [l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*l0, *l1])).min(tail.len());
        let (frame, next) = tail.split_at(len);
        c.push(frame, &mut sink);
        inputs += 1;
        rest = next;
    }
    c.flush(&mut sink);
    assert_eq!(inputs, outputs);
    assert!(c.is_empty());
});
