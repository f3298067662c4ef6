//! LSO / GSO segmentation on arbitrary frames: no panic; when a frame is accepted, the
//! segments carry exactly its payload, each parses, and each checksum verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netpkt::checksum::{self, ChecksumStatus};
use netpkt::frame::parse_frame;
use netpkt::lso::{self, LsoPlan};

fuzz_target!(|data: &[u8]| {
    let [m0, m1, off, frame @ ..] = data else {
        return;
    };
    let mss = u16::from_be_bytes([*m0, *m1]);
    let mut scratch = vec![0u8; 65_600];
    let check = |plan: &LsoPlan<'_>, segments: &[Vec<u8>]| {
        assert_eq!(segments.len(), plan.segment_count());
        let mut payload = 0;
        for s in segments {
            let info = parse_frame(s).expect("segment parses");
            payload += info.l4_payload_len().expect("TCP payload");
            assert_eq!(checksum::verify_l4_checksum(s), Ok(ChecksumStatus::Valid));
        }
        assert_eq!(payload, plan.payload_len());
    };
    let mut segments = Vec::new();
    if lso::segment(
        frame,
        mss,
        usize::from(*off),
        &mut scratch,
        &mut |s: &[u8]| segments.push(s.to_vec()),
    )
    .is_ok()
    {
        check(
            &LsoPlan::new(frame, mss, usize::from(*off)).unwrap(),
            &segments,
        );
    }
    segments.clear();
    if lso::segment_gso(frame, mss, &mut scratch, &mut |s: &[u8]| {
        segments.push(s.to_vec())
    })
    .is_ok()
    {
        check(&LsoPlan::new_gso(frame, mss).unwrap(), &segments);
    }
});
