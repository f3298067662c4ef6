//! Fuzzes VMBus channel-message parsing: any datagram must parse or fail cleanly, and a
//! parsed message must re-emit to bytes that parse to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmbus::channel_msg::{ChannelMessage, MAX_MESSAGE_SIZE};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = ChannelMessage::parse(data) {
        let mut buf = [0u8; MAX_MESSAGE_SIZE];
        let n = msg.emit(&mut buf).expect("a parsed message re-emits");
        assert_eq!(ChannelMessage::parse(&buf[..n]), Ok(msg));
        msg.visit_fields(&mut |_, _| {});
        let _ = msg.name();
    }
});
