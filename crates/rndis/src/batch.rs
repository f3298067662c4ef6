//! Walking a batch of RNDIS messages in one send-buffer section (PROTOCOL.md §4.7, §14).
//!
//! A guest may pack up to `max_pkt_per_msg` messages into one section, each but the last
//! zero-padded to `pkt_align` with `msg_len` counting the pad. The host walks
//! `[0, section_size)`: every message needs `msg_len ≥ 8` inside the stream, and no more
//! than `max_pkt_per_msg` messages are taken. [`BatchWalker`] yields each message's bytes
//! (to parse with [`crate::RndisMessage::parse`]) and stops at the first error.

use crate::error::RndisError;
use crate::header;

/// Iterator over the messages of a send-buffer stream; yields each message's `msg_len`
/// bytes, or one error and then nothing.
#[derive(Debug, Clone)]
pub struct BatchWalker<'a> {
    stream: &'a [u8],
    pos: usize,
    count: u32,
    max_messages: u32,
    done: bool,
}

impl<'a> BatchWalker<'a> {
    /// A walk over `stream` (the section's first `section_size` bytes, or section plus
    /// ranges for the partial shape) taking at most `max_messages` messages (the host's
    /// `max_pkt_per_msg`; 0 is treated as 1).
    pub fn new(stream: &'a [u8], max_messages: u32) -> BatchWalker<'a> {
        BatchWalker {
            stream,
            pos: 0,
            count: 0,
            max_messages: max_messages.max(1),
            done: false,
        }
    }

    /// Offset of the next message in the stream.
    pub fn offset(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for BatchWalker<'a> {
    type Item = Result<&'a [u8], RndisError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.stream.len() {
            return None;
        }
        if self.count >= self.max_messages {
            self.done = true;
            return Some(Err(RndisError::TooManyMessages {
                max: self.max_messages,
            }));
        }
        match header::split_message(&self.stream[self.pos..]) {
            Ok((_, message)) => {
                self.pos += message.len();
                self.count += 1;
                Some(Ok(message))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two KEEPALIVEs (the first padded to 16) and a 12-byte SET_C.
    const STREAM: [u8; 44] = [
        8, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, // KEEPALIVE + pad
        8, 0, 0, 0, 12, 0, 0, 0, 2, 0, 0, 0, // KEEPALIVE
        5, 0, 0, 0x80, 16, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, // SET_C
    ];

    #[test]
    fn walks() {
        let msgs: Vec<_> = BatchWalker::new(&STREAM, 8)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(msgs, [&STREAM[..16], &STREAM[16..28], &STREAM[28..]]);
        let m = crate::RndisMessage::parse(msgs[0]).unwrap();
        assert_eq!(m.req_id(), Some(1));
    }

    #[test]
    fn limits() {
        let mut w = BatchWalker::new(&STREAM, 2);
        assert!(w.next().unwrap().is_ok());
        assert!(w.next().unwrap().is_ok());
        assert_eq!(w.next(), Some(Err(RndisError::TooManyMessages { max: 2 })));
        assert_eq!(w.next(), None);
        // Truncated last message.
        let v: Vec<_> = BatchWalker::new(&STREAM[..43], 8).collect();
        assert_eq!(v.len(), 3);
        assert!(matches!(
            v[2],
            Err(RndisError::BadMessageLength {
                msg_len: 16,
                range: 15,
                ..
            })
        ));
        // Trailing bytes shorter than a header.
        let v: Vec<_> = BatchWalker::new(&STREAM[..31], 8).collect();
        assert_eq!(v[2], Err(RndisError::RangeTooShort { len: 3 }));
        // msg_len 0 stops.
        let zeros = [0u8; 32];
        let v: Vec<_> = BatchWalker::new(&zeros, 8).collect();
        assert_eq!(v.len(), 1);
        assert!(v[0].is_err());
        assert_eq!(BatchWalker::new(&[], 8).count(), 0);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_terminates(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), max in 0u32..20) {
            let mut total = 0;
            for (i, m) in BatchWalker::new(&bytes, max).enumerate() {
                proptest::prop_assert!(i <= max.max(1) as usize);
                if let Ok(m) = m {
                    proptest::prop_assert!(m.len() >= 8);
                    total += m.len();
                }
            }
            proptest::prop_assert!(total <= bytes.len());
        }
    }
}
