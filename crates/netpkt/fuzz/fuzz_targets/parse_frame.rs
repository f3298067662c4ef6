//! Frame parsing, checksums and RSS hashing on arbitrary bytes: no panic, and the offsets
//! reported always lie inside the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netpkt::checksum::{self, ChecksumStatus};
use netpkt::frame::{parse_frame, parse_lso_frame};
use netpkt::toeplitz::{Toeplitz, hash_info};

fuzz_target!(|data: &[u8]| {
    let toeplitz = Toeplitz::default();
    for info in [parse_frame(data), parse_lso_frame(data)]
        .into_iter()
        .flatten()
    {
        assert!(info.l3_offset <= info.ip_end && info.ip_end <= data.len());
        if let Some(l4) = info.l4_offset {
            assert!(l4 <= info.ip_end);
        }
        if let Some(p) = info.l4_payload_offset() {
            assert!(p <= info.ip_end);
        }
        let _ = toeplitz.rss_hash(
            &info,
            hash_info::LINUX_DEFAULT | hash_info::UDP_IPV4 | hash_info::UDP_IPV6_EX,
        );
    }
    let _ = checksum::verify_l4_checksum(data);
    let _ = checksum::verify_ipv4_header_checksum(data);
    // Filling then verifying must agree.
    let mut copy = data.to_vec();
    if checksum::fill_l4_checksum(&mut copy).is_ok() {
        assert_eq!(
            checksum::verify_l4_checksum(&copy),
            Ok(ChecksumStatus::Valid)
        );
    }
    if checksum::fill_ipv4_header_checksum(&mut copy).is_ok() {
        assert_eq!(checksum::verify_ipv4_header_checksum(&copy), Ok(true));
    }
    if let [a, b, rest @ ..] = data {
        let mut copy = rest.to_vec();
        let _ = checksum::complete_partial_checksum(&mut copy, usize::from(*a), usize::from(*b));
    }
});
