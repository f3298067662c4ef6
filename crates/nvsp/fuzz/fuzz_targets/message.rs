//! Fuzzes NVSP message parsing: any bytes must parse or fail cleanly, a parsed message must
//! re-emit to bytes that parse to the same message, and the send-table reader must not
//! panic under any version.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nvsp::{NvspMessage, parse_send_indirection_table, version};

fuzz_target!(|data: &[u8]| {
    for completion in [false, true] {
        let parsed = if completion {
            NvspMessage::parse_completion(data)
        } else {
            NvspMessage::parse(data)
        };
        if let Ok(msg) = parsed {
            let mut buf = vec![0u8; data.len().max(40)];
            let n = msg.emit(&mut buf).expect("a parsed message re-emits");
            assert_eq!(&buf[..n], &data[..n]);
            msg.visit_fields(&mut |_, _| {});
            let _ = msg.name();
        }
    }
    for v in version::ALL {
        let _ = parse_send_indirection_table(data, v);
    }
});
