//! Fuzzes RNDIS PACKET parsing with its PPI walk: any range must parse or fail cleanly
//! (never loop on a bad PPI), and a parsed packet must re-emit to the same frame and info.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rndis::{emit_packet, parse_packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = parse_packet(data) {
        let mut buf = vec![0u8; p.emitted_len()];
        let n = p.emit(&mut buf).expect("a parsed packet re-emits");
        let q = parse_packet(&buf[..n]).expect("an emitted packet parses");
        assert_eq!((q.frame, q.info), (p.frame, p.info));
        let mut buf = vec![0u8; 44 + 96 + p.frame.len()];
        let n = emit_packet(&mut buf, &p.info, p.frame, 0).expect("emit");
        let r = parse_packet(&buf[..n]).expect("parse");
        assert_eq!((r.frame, r.info), (p.frame, p.info));
    }
});
