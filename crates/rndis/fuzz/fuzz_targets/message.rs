//! Fuzzes RNDIS control-message parsing and the send-buffer batch walk: any bytes must
//! parse or fail cleanly, and a parsed message must re-emit canonically (emit, parse, emit
//! gives the same bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rndis::{BatchWalker, RndisMessage};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = RndisMessage::parse(data) {
        msg.visit_fields(&mut |_, _| {});
        let _ = msg.name();
        let mut buf = vec![0u8; msg.emitted_len()];
        let n = msg.emit(&mut buf).expect("a parsed message re-emits");
        let again = RndisMessage::parse(&buf[..n]).expect("an emitted message parses");
        let mut buf2 = vec![0u8; again.emitted_len()];
        let n2 = again.emit(&mut buf2).expect("re-emit");
        assert_eq!(&buf[..n], &buf2[..n2]);
    }
    for m in BatchWalker::new(data, 8).flatten() {
        let _ = RndisMessage::parse(m);
    }
});
