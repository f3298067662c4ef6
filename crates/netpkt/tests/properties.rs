//! Property tests across modules: checksums, Toeplitz, parsing robustness, and LSO ∘ RSC.

use std::net::{Ipv4Addr, Ipv6Addr};

use netpkt::checksum::{
    self, ChecksumStatus, fill_ipv4_header_checksum, fill_l4_checksum, verify_l4_checksum,
};
use netpkt::coalesce::{CoalesceConfig, CoalescedFrame, Coalescer, TcpChecksumMode};
use netpkt::frame::{L3, L4, parse_frame, parse_lso_frame, tcp_flags};
use netpkt::lso::{self, LsoPlan, MAX_LSO_PAYLOAD};
use netpkt::toeplitz::{DEFAULT_KEY, Toeplitz, hash_info, reference_hash};
use proptest::prelude::*;

/// A TCP or UDP frame over IPv4 or IPv6 in normal form (lengths set, checksums filled).
#[derive(Clone, Debug)]
struct Spec {
    v6: bool,
    udp: bool,
    vlan: Option<u16>,
    seq: u32,
    id: u16,
    flags: u8,
    options: Vec<u8>,
    payload: Vec<u8>,
}

const SRC4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const DST4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn src6() -> Ipv6Addr {
    "2001:2::1".parse().unwrap()
}
fn dst6() -> Ipv6Addr {
    "2001:2::2".parse().unwrap()
}

impl Spec {
    /// Builds the frame; returns it and the L4 header offset.
    fn build(&self) -> (Vec<u8>, usize) {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        if let Some(tci) = self.vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&tci.to_be_bytes());
        }
        let l4_len = if self.udp { 8 } else { 20 + self.options.len() } + self.payload.len();
        let proto = if self.udp { 17 } else { 6 };
        if self.v6 {
            f.extend_from_slice(&[0x86, 0xDD, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
            f.extend_from_slice(&src6().octets());
            f.extend_from_slice(&dst6().octets());
        } else {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
            f.extend_from_slice(&self.id.to_be_bytes());
            f.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
            f.extend_from_slice(&SRC4.octets());
            f.extend_from_slice(&DST4.octets());
        }
        let l4 = f.len();
        if self.udp {
            f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        } else {
            f.extend_from_slice(&[0x9C, 0x40, 0x14, 0x51]);
            f.extend_from_slice(&self.seq.to_be_bytes());
            f.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
            f.push(((20 + self.options.len()) / 4 * 16) as u8);
            f.extend_from_slice(&[self.flags, 0xFF, 0xF0, 0, 0, 0, 0]);
            f.extend_from_slice(&self.options);
        }
        f.extend_from_slice(&self.payload);
        if !self.v6 {
            fill_ipv4_header_checksum(&mut f).unwrap();
        }
        fill_l4_checksum(&mut f).unwrap();
        (f, l4)
    }
}

fn spec_strategy(max_payload: usize) -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(any::<u16>()),
        any::<u32>(),
        any::<u16>(),
        prop_oneof![Just(tcp_flags::ACK), Just(tcp_flags::ACK | tcp_flags::PSH)],
        (0usize..=10).prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n * 4)),
        proptest::collection::vec(any::<u8>(), 0..=max_payload),
    )
        .prop_map(|(v6, udp, vlan, seq, id, flags, options, payload)| Spec {
            v6,
            udp,
            vlan,
            seq,
            id,
            flags,
            options,
            payload,
        })
}

/// Naive RFC 1071 for comparison.
fn naive_fold(data: &[u8], initial: u32) -> u16 {
    let mut s = u64::from(initial);
    for pair in data.chunks(2) {
        s += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while s > 0xFFFF {
        s = (s >> 16) + (s & 0xFFFF);
    }
    s as u16
}

/// Runs every entry point on `bytes`; they must return, not panic.
fn exercise(bytes: &[u8]) {
    let t = Toeplitz::default();
    for info in [parse_frame(bytes), parse_lso_frame(bytes)]
        .into_iter()
        .flatten()
    {
        let _ = t.rss_hash(
            &info,
            hash_info::LINUX_DEFAULT | hash_info::UDP_IPV4 | hash_info::UDP_IPV6,
        );
        let _ = info.l4_payload_len();
    }
    let _ = verify_l4_checksum(bytes);
    let _ = checksum::verify_ipv4_header_checksum(bytes);
    let mut copy = bytes.to_vec();
    let _ = fill_l4_checksum(&mut copy);
    let _ = fill_ipv4_header_checksum(&mut copy);
    let _ = checksum::complete_partial_checksum(&mut copy, 34, 16);
    let mut scratch = vec![0u8; 4096];
    let mut total = 0usize;
    let _ = lso::segment(bytes, 536, 34, &mut scratch, &mut |s: &[u8]| {
        total += s.len()
    });
    let _ = lso::segment_gso(bytes, 1, &mut scratch, &mut |s: &[u8]| total += s.len());
    let mut c = Coalescer::new(CoalesceConfig::default()).unwrap();
    c.push(bytes, &mut |f: CoalescedFrame<'_>| total += f.frame.len());
    c.push(bytes, &mut |f: CoalescedFrame<'_>| total += f.frame.len());
    c.flush(&mut |f: CoalescedFrame<'_>| total += f.frame.len());
    let _ = total;
}

fn tcp_fields(f: &[u8]) -> (u32, u8, u16) {
    let info = parse_frame(f).unwrap();
    let L4::Tcp { seq, flags, .. } = info.l4 else {
        panic!("not TCP")
    };
    let id = match info.l3 {
        L3::Ipv4 { id, .. } => id,
        _ => 0,
    };
    (seq, flags, id)
}

/// Headers with lengths, id, checksums, sequence and flags blanked, for comparison.
fn normalised_headers(f: &[u8]) -> Vec<u8> {
    let info = parse_frame(f).unwrap();
    let end = info.l4_payload_offset().unwrap();
    let mut h = f[..end].to_vec();
    let l3 = info.l3_offset;
    let t = info.l4_offset.unwrap();
    match info.l3 {
        L3::Ipv4 { .. } => {
            h[l3 + 2..l3 + 6].fill(0);
            h[l3 + 10..l3 + 12].fill(0);
        }
        _ => h[l3 + 4..l3 + 6].fill(0),
    }
    h[t + 4..t + 8].fill(0);
    h[t + 13] = 0;
    h[t + 16..t + 18].fill(0);
    h
}

fn payload_of(f: &[u8]) -> &[u8] {
    let info = parse_frame(f).unwrap();
    &f[info.l4_payload_offset().unwrap()..info.ip_end]
}

/// Segments `frame`, coalesces the segments, and checks that the result is the original.
fn check_identity(spec: &Spec, mss: u16, stale: bool) -> Result<(), TestCaseError> {
    let (frame, l4) = spec.build();
    let mut segments = Vec::new();
    let mut scratch = vec![0u8; 70_000];
    let n = lso::segment(&frame, mss, l4, &mut scratch, &mut |s: &[u8]| {
        segments.push(s.to_vec())
    })
    .unwrap();
    prop_assert_eq!(n, segments.len());
    prop_assert_eq!(n, spec.payload.len().div_ceil(usize::from(mss)).max(1));
    let config = CoalesceConfig {
        tcp_checksum: if stale {
            TcpChecksumMode::LeaveStale
        } else {
            TcpChecksumMode::Recompute
        },
        ..CoalesceConfig::default()
    };
    let mut c = Coalescer::new(config).unwrap();
    let mut outs: Vec<(Vec<u8>, u16, u16, bool)> = Vec::new();
    let mut sink = |f: CoalescedFrame<'_>| {
        outs.push((f.frame.to_vec(), f.segments, f.mss, f.tcp_checksum_stale))
    };
    for s in &segments {
        c.push(s, &mut sink);
    }
    c.flush(&mut sink);

    let total_segments: usize = outs.iter().map(|o| usize::from(o.1)).sum();
    prop_assert_eq!(total_segments, n);
    let expect_outputs = n.div_ceil(usize::from(config.max_segments));
    prop_assert_eq!(outs.len(), expect_outputs);
    let mut joined = Vec::new();
    let mut segs_before = 0u32;
    let (seq0, flags0, id0) = tcp_fields(&frame);
    for (i, (f, segs, out_mss, out_stale)) in outs.iter().enumerate() {
        prop_assert_eq!(normalised_headers(f), normalised_headers(&frame));
        let (seq, flags, id) = tcp_fields(f);
        prop_assert_eq!(seq, seq0.wrapping_add(joined.len() as u32));
        if !spec.v6 {
            prop_assert_eq!(id, id0.wrapping_add(segs_before as u16));
        }
        let last = i + 1 == outs.len();
        let want_flags = if last {
            flags0
        } else {
            flags0 & !tcp_flags::PSH
        };
        prop_assert_eq!(flags, want_flags);
        // A merged frame's gso size is the segment size; a frame of one segment (a lone
        // short tail after a full run of `max_segments`) carries its own length.
        prop_assert_eq!(*out_mss, mss.min(payload_of(f).len() as u16));
        prop_assert_eq!(*out_stale, stale && *segs > 1);
        if !*out_stale {
            prop_assert_eq!(verify_l4_checksum(f), Ok(ChecksumStatus::Valid));
        }
        if !spec.v6 {
            prop_assert_eq!(checksum::verify_ipv4_header_checksum(f), Ok(true));
        }
        joined.extend_from_slice(payload_of(f));
        segs_before += u32::from(*segs);

        // The other direction: re-segmenting a merged frame gives its segments back exactly.
        if !*out_stale {
            let first = segs_before as usize - usize::from(*segs);
            let mut again = Vec::new();
            lso::segment_gso(f, *out_mss, &mut scratch, &mut |s: &[u8]| {
                again.push(s.to_vec())
            })
            .unwrap();
            prop_assert_eq!(&again[..], &segments[first..first + usize::from(*segs)]);
        }
    }
    prop_assert_eq!(joined, spec.payload.clone());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn sum_matches_naive_and_splits(data in proptest::collection::vec(any::<u8>(), 0..600), initial: u32, split in 0usize..300) {
        prop_assert_eq!(checksum::fold(checksum::sum(&data, initial)), naive_fold(&data, initial));
        let split = (split * 2).min(data.len() & !1);
        let two = checksum::sum(&data[split..], checksum::sum(&data[..split], initial));
        prop_assert_eq!(checksum::fold(two), naive_fold(&data, initial));
    }

    #[test]
    fn incremental_update_matches_recompute(mut data in proptest::collection::vec(any::<u8>(), 2..64), at in 0usize..32, new: u16) {
        let at = (at * 2).min((data.len() - 2) & !1);
        let before = checksum::finish(checksum::sum(&data, 0));
        let old = u16::from_be_bytes([data[at], data[at + 1]]);
        data[at..at + 2].copy_from_slice(&new.to_be_bytes());
        let after = checksum::finish(checksum::sum(&data, 0));
        let updated = checksum::update_u16(before, old, new);
        // RFC 1624 may yield the other zero; both verify.
        prop_assert_eq!(checksum::fold(u32::from(updated) + checksum::sum(&data, 0)), 0xFFFF);
        prop_assert!(updated == after || (updated ^ after) == 0xFFFF && (after == 0 || after == 0xFFFF));
    }

    #[test]
    fn fill_then_verify_then_flip(spec in spec_strategy(300), bit in any::<proptest::sample::Index>()) {
        let (mut frame, l4) = spec.build();
        prop_assert_eq!(verify_l4_checksum(&frame), Ok(ChecksumStatus::Valid));
        // Flip one bit among the addresses and the L4 segment: never still valid.
        let l3 = if spec.vlan.is_some() { 18 } else { 14 };
        let addr_start = l3 + if spec.v6 { 8 } else { 12 };
        let covered: Vec<usize> = (addr_start..l4).chain(l4..frame.len()).collect();
        let bit = bit.index(covered.len() * 8);
        frame[covered[bit / 8]] ^= 1 << (bit % 8);
        let status = verify_l4_checksum(&frame);
        prop_assert!(!matches!(status, Ok(ChecksumStatus::Valid)), "{:?}", status);
    }

    #[test]
    fn toeplitz_table_equals_reference(key in proptest::array::uniform32(any::<u8>()), tail in any::<[u8; 8]>(), input in proptest::collection::vec(any::<u8>(), 0..48)) {
        let mut full = [0u8; 40];
        full[..32].copy_from_slice(&key);
        full[32..].copy_from_slice(&tail);
        let t = Toeplitz::new(&full);
        prop_assert_eq!(t.hash(&input), reference_hash(&full, &input));
    }

    #[test]
    fn toeplitz_default_key_tuples(s: [u8; 4], d: [u8; 4], sp: u16, dp: u16, s6: [u8; 16], d6: [u8; 16]) {
        let t = Toeplitz::default();
        let (b, n) = netpkt::toeplitz::hash_input_v4(s.into(), d.into(), Some((sp, dp)));
        prop_assert_eq!(t.hash(&b[..n]), reference_hash(&DEFAULT_KEY, &b[..n]));
        let (b, n) = netpkt::toeplitz::hash_input_v6(s6.into(), d6.into(), Some((sp, dp)));
        prop_assert_eq!(t.hash(&b[..n]), reference_hash(&DEFAULT_KEY, &b[..n]));
    }

    #[test]
    fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..200), et in 0u8..4) {
        if bytes.len() >= 14 {
            let e: [u8; 2] = match et { 0 => [0x08, 0x00], 1 => [0x86, 0xDD], 2 => [0x81, 0x00], _ => [bytes[12], bytes[13]] };
            bytes[12..14].copy_from_slice(&e);
            if bytes.len() > 14 && et < 2 {
                bytes[14] = (bytes[14] & 0x0F) | if et == 0 { 0x40 } else { 0x60 };
            }
        }
        exercise(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(spec in spec_strategy(200), muts in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6), cut in any::<proptest::sample::Index>()) {
        let (mut frame, _) = spec.build();
        for (i, v) in muts {
            let i = i.index(frame.len());
            frame[i] = v;
        }
        exercise(&frame);
        let cut = cut.index(frame.len() + 1);
        exercise(&frame[..cut]);
    }

    #[test]
    fn segment_then_coalesce_is_identity(mut spec in spec_strategy(0), len in 1usize..=20_000, mss in 1u16..=3000, seed: u8, stale: bool) {
        spec.udp = false;
        spec.payload = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        // Keep each case to a few thousand segments.
        let mss = mss.max((len / 2000) as u16 + 1);
        check_identity(&spec, mss, stale)?;
    }
}

#[test]
fn identity_at_the_lso_limit() {
    for (v6, mss) in [(false, 1460), (true, 1440), (false, 100), (true, 64)] {
        let spec = Spec {
            v6,
            udp: false,
            vlan: None,
            seq: 0xFFFF_0000,
            id: 0xFFF0,
            flags: tcp_flags::ACK | tcp_flags::PSH,
            options: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            payload: (0..MAX_LSO_PAYLOAD).map(|i| (i % 251) as u8).collect(),
        };
        check_identity(&spec, mss, false).unwrap();
    }
}

#[test]
fn guest_form_equals_normal_form() {
    // A guest's LSO frame (lengths 0, checksums seeded) gives the same segments as the
    // normal frame.
    for v6 in [false, true] {
        let spec = Spec {
            v6,
            udp: false,
            vlan: Some(5),
            seq: 1,
            id: 1,
            flags: tcp_flags::ACK | tcp_flags::PSH | tcp_flags::FIN | tcp_flags::CWR,
            options: vec![],
            payload: (0..5000).map(|i| i as u8).collect(),
        };
        let (normal, l4) = spec.build();
        let mut guest = normal.clone();
        let l3 = 18;
        let seed = if v6 {
            guest[l3 + 4..l3 + 6].fill(0);
            checksum::fold(checksum::pseudo_header_v6(src6(), dst6(), 6, 0))
        } else {
            guest[l3 + 2..l3 + 4].fill(0);
            guest[l3 + 10..l3 + 12].fill(0);
            checksum::fold(checksum::pseudo_header_v4(SRC4, DST4, 6, 0))
        };
        guest[l4 + 16..l4 + 18].copy_from_slice(&seed.to_be_bytes());
        let collect = |f: &[u8]| {
            let plan = LsoPlan::new(f, 1000, l4).unwrap();
            let mut out = Vec::new();
            let mut buf = vec![0u8; plan.max_segment_len()];
            for i in 0..plan.segment_count() {
                let n = plan.write_segment(i, &mut buf).unwrap();
                out.push(buf[..n].to_vec());
            }
            out
        };
        let a = collect(&guest);
        assert_eq!(a, collect(&normal));
        assert_eq!(a.len(), 5);
        let flags: Vec<u8> = a.iter().map(|s| tcp_fields(s).1).collect();
        let (ack, psh, fin, cwr) = (
            tcp_flags::ACK,
            tcp_flags::PSH,
            tcp_flags::FIN,
            tcp_flags::CWR,
        );
        assert_eq!(flags, [ack | cwr, ack, ack, ack, ack | psh | fin]);
    }
}
