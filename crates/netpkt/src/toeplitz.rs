//! The Toeplitz hash of receive-side scaling (PROTOCOL.md §9) and the host's rules for which
//! fields of a frame it covers.
//!
//! For each set bit *i* of the input (most significant bit of the first byte is bit 0), the
//! 32-bit window of the key starting at key bit *i* is XORed into the result. [`Toeplitz`]
//! precomputes, for each input byte position and each byte value, the XOR of the windows
//! that byte selects, so a hash is one table load per input byte; [`reference_hash`] is the
//! bit-by-bit definition it is tested against.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::frame::{FrameInfo, L3, L4};

/// Length of an RSS key.
pub const KEY_LEN: usize = 40;

/// Longest input the hash covers: the IPv6 4-tuple (16 + 16 + 2 + 2). A 40-byte key has
/// 320 bits, so 288 input bits is where the last full 32-bit window ends.
pub const MAX_INPUT_LEN: usize = KEY_LEN - 4;

/// Microsoft's RSS verification key, Linux's default (PROTOCOL.md §9.1).
pub const DEFAULT_KEY: [u8; KEY_LEN] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// NDIS `hash_info` bits (PROTOCOL.md §7.5): the hash function in the low byte, the enabled
/// hash types above it.
pub mod hash_info {
    /// Mask of the hash-function byte.
    pub const FUNCTION_MASK: u32 = 0xFF;
    /// The Toeplitz function.
    pub const TOEPLITZ: u32 = 0x1;
    /// IPv4 addresses.
    pub const IPV4: u32 = 0x100;
    /// IPv4 addresses and TCP ports.
    pub const TCP_IPV4: u32 = 0x200;
    /// IPv6 addresses.
    pub const IPV6: u32 = 0x400;
    /// IPv6 addresses, extension headers considered.
    pub const IPV6_EX: u32 = 0x800;
    /// IPv6 addresses and TCP ports.
    pub const TCP_IPV6: u32 = 0x1000;
    /// IPv6 addresses and TCP ports, extension headers considered.
    pub const TCP_IPV6_EX: u32 = 0x2000;
    /// IPv4 addresses and UDP ports.
    pub const UDP_IPV4: u32 = 0x4000;
    /// IPv6 addresses and UDP ports.
    pub const UDP_IPV6: u32 = 0x8000;
    /// IPv6 addresses and UDP ports, extension headers considered.
    pub const UDP_IPV6_EX: u32 = 0x10000;
    /// What Linux sends: Toeplitz over IPv4, TCP/IPv4, IPv6, TCP/IPv6.
    pub const LINUX_DEFAULT: u32 = TOEPLITZ | IPV4 | TCP_IPV4 | IPV6 | TCP_IPV6;
}

/// The hash type a frame was hashed as; [`FlowHashType::bits`] is its `hash_info` bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowHashType {
    /// IPv4 2-tuple.
    Ipv4,
    /// IPv4 + TCP 4-tuple.
    TcpIpv4,
    /// IPv4 + UDP 4-tuple.
    UdpIpv4,
    /// IPv6 2-tuple.
    Ipv6,
    /// IPv6 2-tuple, selected by the `_EX` bit.
    Ipv6Ex,
    /// IPv6 + TCP 4-tuple.
    TcpIpv6,
    /// IPv6 + TCP 4-tuple, selected by the `_EX` bit.
    TcpIpv6Ex,
    /// IPv6 + UDP 4-tuple.
    UdpIpv6,
    /// IPv6 + UDP 4-tuple, selected by the `_EX` bit.
    UdpIpv6Ex,
}

impl FlowHashType {
    /// The type's bit in `hash_info`.
    pub fn bits(self) -> u32 {
        match self {
            FlowHashType::Ipv4 => hash_info::IPV4,
            FlowHashType::TcpIpv4 => hash_info::TCP_IPV4,
            FlowHashType::UdpIpv4 => hash_info::UDP_IPV4,
            FlowHashType::Ipv6 => hash_info::IPV6,
            FlowHashType::Ipv6Ex => hash_info::IPV6_EX,
            FlowHashType::TcpIpv6 => hash_info::TCP_IPV6,
            FlowHashType::TcpIpv6Ex => hash_info::TCP_IPV6_EX,
            FlowHashType::UdpIpv6 => hash_info::UDP_IPV6,
            FlowHashType::UdpIpv6Ex => hash_info::UDP_IPV6_EX,
        }
    }
}

/// The 32-bit window of `key` starting at bit `bit` (bits past the key read as 0).
fn key_window(key: &[u8; KEY_LEN], bit: usize) -> u32 {
    let byte = bit / 8;
    let mut w: u64 = 0;
    for i in 0..5 {
        w = (w << 8) | u64::from(key.get(byte + i).copied().unwrap_or(0));
    }
    // w holds 40 key bits starting at bit byte*8; drop the leading (bit % 8) bits.
    (w >> (8 - bit % 8)) as u32
}

/// The bit-by-bit Toeplitz hash of the first [`MAX_INPUT_LEN`] bytes of `input`, written
/// as the published algorithm states it: for each input bit, most significant first, XOR the
/// left-most 32 bits of the key into the result if the bit is set, then shift the whole key
/// left by one bit. Slow by design; it is the definition that [`Toeplitz::hash`] is tested
/// against, not something to use on the data path.
pub fn reference_hash(key: &[u8; KEY_LEN], input: &[u8]) -> u32 {
    let mut k = *key;
    let mut result = 0;
    for &byte in input.iter().take(MAX_INPUT_LEN) {
        for b in 0..8 {
            if byte & (0x80 >> b) != 0 {
                result ^= u32::from_be_bytes([k[0], k[1], k[2], k[3]]);
            }
            shift_left_one_bit(&mut k);
        }
    }
    result
}

/// Shifts a big-endian bit string left by one bit, filling with 0.
fn shift_left_one_bit(k: &mut [u8; KEY_LEN]) {
    for i in 0..KEY_LEN {
        let carry = k.get(i + 1).map_or(0, |next| next >> 7);
        k[i] = (k[i] << 1) | carry;
    }
}

/// A Toeplitz hasher for one key: 36 tables of 256 entries (36 KiB).
#[derive(Clone)]
pub struct Toeplitz {
    key: [u8; KEY_LEN],
    table: [[u32; 256]; MAX_INPUT_LEN],
}

impl core::fmt::Debug for Toeplitz {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Toeplitz")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Default for Toeplitz {
    /// A hasher for [`DEFAULT_KEY`].
    fn default() -> Self {
        Self::new(&DEFAULT_KEY)
    }
}

impl Toeplitz {
    /// Precomputes the tables for `key`.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        let mut table = [[0u32; 256]; MAX_INPUT_LEN];
        for (pos, t) in table.iter_mut().enumerate() {
            // Entry for a single set bit b (0x80 >> b), then every other value by linearity:
            // t[v] = t[v without its lowest set bit] ^ t[its lowest set bit].
            for b in 0..8 {
                t[0x80 >> b] = key_window(key, pos * 8 + b);
            }
            for v in 1..256usize {
                let low = v & v.wrapping_neg();
                if low != v {
                    t[v] = t[v & !low] ^ t[low];
                }
            }
        }
        Self { key: *key, table }
    }

    /// The key the tables were built from.
    pub fn key(&self) -> &[u8; KEY_LEN] {
        &self.key
    }

    /// The Toeplitz hash of the first [`MAX_INPUT_LEN`] bytes of `input`.
    #[inline]
    pub fn hash(&self, input: &[u8]) -> u32 {
        let mut h = 0;
        for (t, &b) in self.table.iter().zip(input) {
            h ^= t[usize::from(b)];
        }
        h
    }

    /// The hash of an IPv4 2-tuple, or 4-tuple with `ports`.
    pub fn hash_v4(&self, src: Ipv4Addr, dst: Ipv4Addr, ports: Option<(u16, u16)>) -> u32 {
        let (buf, len) = hash_input_v4(src, dst, ports);
        self.hash(&buf[..len])
    }

    /// The hash of an IPv6 2-tuple, or 4-tuple with `ports`.
    pub fn hash_v6(&self, src: Ipv6Addr, dst: Ipv6Addr, ports: Option<(u16, u16)>) -> u32 {
        let (buf, len) = hash_input_v6(src, dst, ports);
        self.hash(&buf[..len])
    }

    /// The host's RSS hash of a frame (PROTOCOL.md §9.2) under `hash_info` (function and
    /// enabled types, §7.5): `Some((hash, type bit))`, or `None` when the function is not
    /// Toeplitz or no enabled type covers the frame (the frame goes to queue 0 unhashed).
    ///
    /// - TCP, not fragmented, with TCP_IPV4 / TCP_IPV6 (or TCP_IPV6_EX) → 4-tuple;
    /// - UDP, not fragmented, with UDP_IPV4 / UDP_IPV6 (or UDP_IPV6_EX) → 4-tuple;
    /// - any other IPv4 / IPv6 frame, every fragment included, with IPV4 / IPV6 (or
    ///   IPV6_EX) → 2-tuple.
    ///
    /// Where both a plain and an `_EX` IPv6 type apply, the plain one is reported. The `_EX`
    /// types hash the fixed header's addresses: home-address options and type-2 routing
    /// headers are not substituted (Linux never enables `_EX` types).
    pub fn rss_hash(&self, info: &FrameInfo, hash_info: u32) -> Option<(u32, u32)> {
        let (hash, ty) = self.rss_hash_typed(info, hash_info)?;
        Some((hash, ty.bits()))
    }

    /// As [`Toeplitz::rss_hash`], with the hash type as a [`FlowHashType`].
    pub fn rss_hash_typed(&self, info: &FrameInfo, info_bits: u32) -> Option<(u32, FlowHashType)> {
        use self::hash_info as h;
        let hash_info = info_bits;
        if hash_info & h::FUNCTION_MASK != h::TOEPLITZ {
            return None;
        }
        let has = |bit: u32| hash_info & bit != 0;
        let ports = match (info.l4_offset, info.l4) {
            (
                Some(_),
                L4::Tcp {
                    src_port, dst_port, ..
                },
            ) if !info.l3.is_fragment() => Some((true, (src_port, dst_port))),
            (
                Some(_),
                L4::Udp {
                    src_port, dst_port, ..
                },
            ) if !info.l3.is_fragment() => Some((false, (src_port, dst_port))),
            _ => None,
        };
        match info.l3 {
            L3::Ipv4 { src, dst, .. } => {
                let l4 = match ports {
                    Some((true, p)) if has(h::TCP_IPV4) => Some((p, FlowHashType::TcpIpv4)),
                    Some((false, p)) if has(h::UDP_IPV4) => Some((p, FlowHashType::UdpIpv4)),
                    _ => None,
                };
                match l4 {
                    Some((p, ty)) => Some((self.hash_v4(src, dst, Some(p)), ty)),
                    None if has(h::IPV4) => {
                        Some((self.hash_v4(src, dst, None), FlowHashType::Ipv4))
                    }
                    None => None,
                }
            }
            L3::Ipv6 { src, dst, .. } => {
                let pick = |plain: u32, plain_ty, ex: u32, ex_ty| {
                    if has(plain) {
                        Some(plain_ty)
                    } else if has(ex) {
                        Some(ex_ty)
                    } else {
                        None
                    }
                };
                let l4 = match ports {
                    Some((true, p)) => pick(
                        h::TCP_IPV6,
                        FlowHashType::TcpIpv6,
                        h::TCP_IPV6_EX,
                        FlowHashType::TcpIpv6Ex,
                    )
                    .map(|ty| (p, ty)),
                    Some((false, p)) => pick(
                        h::UDP_IPV6,
                        FlowHashType::UdpIpv6,
                        h::UDP_IPV6_EX,
                        FlowHashType::UdpIpv6Ex,
                    )
                    .map(|ty| (p, ty)),
                    None => None,
                };
                match l4 {
                    Some((p, ty)) => Some((self.hash_v6(src, dst, Some(p)), ty)),
                    None => pick(
                        h::IPV6,
                        FlowHashType::Ipv6,
                        h::IPV6_EX,
                        FlowHashType::Ipv6Ex,
                    )
                    .map(|ty| (self.hash_v6(src, dst, None), ty)),
                }
            }
            L3::Other => None,
        }
    }
}

/// The hash input for IPv4: source, destination, then the two ports if given. Returns the
/// buffer and how many of its bytes are used (8 or 12).
pub fn hash_input_v4(src: Ipv4Addr, dst: Ipv4Addr, ports: Option<(u16, u16)>) -> ([u8; 12], usize) {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&src.octets());
    b[4..8].copy_from_slice(&dst.octets());
    match ports {
        Some((sp, dp)) => {
            b[8..10].copy_from_slice(&sp.to_be_bytes());
            b[10..12].copy_from_slice(&dp.to_be_bytes());
            (b, 12)
        }
        None => (b, 8),
    }
}

/// The hash input for IPv6: source, destination, then the two ports if given. Returns the
/// buffer and how many of its bytes are used (32 or 36).
pub fn hash_input_v6(src: Ipv6Addr, dst: Ipv6Addr, ports: Option<(u16, u16)>) -> ([u8; 36], usize) {
    let mut b = [0u8; 36];
    b[0..16].copy_from_slice(&src.octets());
    b[16..32].copy_from_slice(&dst.octets());
    match ports {
        Some((sp, dp)) => {
            b[32..34].copy_from_slice(&sp.to_be_bytes());
            b[34..36].copy_from_slice(&dp.to_be_bytes());
            (b, 36)
        }
        None => (b, 32),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::frame::parse_frame;
    use std::boxed::Box;

    /// An address and port.
    type Endpoint = (Ipv4Addr, u16);

    /// Microsoft's RSS verification suite: (source, destination, L3 hash, L4 hash).
    const V4: [(Endpoint, Endpoint, u32, u32); 5] = [
        (
            (Ipv4Addr::new(66, 9, 149, 187), 2794),
            (Ipv4Addr::new(161, 142, 100, 80), 1766),
            0x323e8fc2,
            0x51ccc178,
        ),
        (
            (Ipv4Addr::new(199, 92, 111, 2), 14230),
            (Ipv4Addr::new(65, 69, 140, 83), 4739),
            0xd718262a,
            0xc626b0ea,
        ),
        (
            (Ipv4Addr::new(24, 19, 198, 95), 12898),
            (Ipv4Addr::new(12, 22, 207, 184), 38024),
            0xd2d0a5de,
            0x5c2b394a,
        ),
        (
            (Ipv4Addr::new(38, 27, 205, 30), 48228),
            (Ipv4Addr::new(209, 142, 163, 6), 2217),
            0x82989176,
            0xafc7327f,
        ),
        (
            (Ipv4Addr::new(153, 39, 163, 191), 44251),
            (Ipv4Addr::new(202, 188, 127, 2), 1303),
            0x5d1809c5,
            0x10e828a2,
        ),
    ];

    const V6: [(&str, u16, &str, u16, u32, u32); 3] = [
        (
            "3ffe:2501:200:1fff::7",
            2794,
            "3ffe:2501:200:3::1",
            1766,
            0x2cc18cd5,
            0x40207d3d,
        ),
        (
            "3ffe:501:8::260:97ff:fe40:efab",
            14230,
            "ff02::1",
            4739,
            0x0f0c461c,
            0xdde51bbf,
        ),
        (
            "3ffe:1900:4545:3:200:f8ff:fe21:67cf",
            44251,
            "fe80::200:f8ff:fe21:67cf",
            38024,
            0x4b61e985,
            0x02d1feef,
        ),
    ];

    #[test]
    fn microsoft_vectors_ipv4() {
        let t = Box::new(Toeplitz::default());
        for ((s, sp), (d, dp), l3, l4) in V4 {
            let (b, n) = hash_input_v4(s, d, None);
            assert_eq!(reference_hash(&DEFAULT_KEY, &b[..n]), l3, "{s} → {d}");
            assert_eq!(t.hash_v4(s, d, None), l3, "{s} → {d}");
            let (b, n) = hash_input_v4(s, d, Some((sp, dp)));
            assert_eq!(
                reference_hash(&DEFAULT_KEY, &b[..n]),
                l4,
                "{s}:{sp} → {d}:{dp}"
            );
            assert_eq!(t.hash_v4(s, d, Some((sp, dp))), l4, "{s}:{sp} → {d}:{dp}");
        }
    }

    #[test]
    fn microsoft_vectors_ipv6() {
        let t = Box::new(Toeplitz::default());
        for (s, sp, d, dp, l3, l4) in V6 {
            let (s, d): (Ipv6Addr, Ipv6Addr) = (s.parse().unwrap(), d.parse().unwrap());
            let (b, n) = hash_input_v6(s, d, None);
            assert_eq!(reference_hash(&DEFAULT_KEY, &b[..n]), l3, "{s} → {d}");
            assert_eq!(t.hash_v6(s, d, None), l3, "{s} → {d}");
            let (b, n) = hash_input_v6(s, d, Some((sp, dp)));
            assert_eq!(reference_hash(&DEFAULT_KEY, &b[..n]), l4, "{s} → {d}");
            assert_eq!(t.hash_v6(s, d, Some((sp, dp))), l4, "{s} → {d}");
        }
    }

    #[test]
    fn key_window_edges() {
        assert_eq!(key_window(&DEFAULT_KEY, 0), 0x6d5a56da);
        assert_eq!(key_window(&DEFAULT_KEY, 8), 0x5a56da25);
        assert_eq!(key_window(&DEFAULT_KEY, 4), 0xd5a56da2);
        // The last full window and one beyond it (zero-filled).
        assert_eq!(key_window(&DEFAULT_KEY, 288), 0xbeac01fa);
        assert_eq!(key_window(&DEFAULT_KEY, 292), 0xeac01fa0);
    }

    #[test]
    fn long_input_is_cut_at_36_bytes() {
        let t = Box::new(Toeplitz::default());
        let input = [0xA5u8; 64];
        assert_eq!(t.hash(&input), t.hash(&input[..MAX_INPUT_LEN]));
        assert_eq!(t.hash(&input), reference_hash(&DEFAULT_KEY, &input));
        assert_eq!(t.hash(&[]), 0);
    }

    fn frame_v4(proto: u8, flags_frag: u16, l4: &[u8]) -> std::vec::Vec<u8> {
        let mut f = std::vec![0u8; 14];
        f[12] = 0x08;
        let total = (20 + l4.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&flags_frag.to_be_bytes());
        f.extend_from_slice(&[64, proto, 0, 0, 66, 9, 149, 187, 161, 142, 100, 80]);
        f.extend_from_slice(l4);
        f
    }

    fn tcp_header() -> [u8; 20] {
        let mut h = [0u8; 20];
        h[0..2].copy_from_slice(&2794u16.to_be_bytes());
        h[2..4].copy_from_slice(&1766u16.to_be_bytes());
        h[12] = 0x50;
        h[13] = 0x10;
        h
    }

    #[test]
    fn host_rules_ipv4() {
        let t = Box::new(Toeplitz::default());
        let linux = hash_info::LINUX_DEFAULT;
        let tcp = parse_frame(&frame_v4(6, 0, &tcp_header())).unwrap();
        assert_eq!(
            t.rss_hash(&tcp, linux),
            Some((0x51ccc178, hash_info::TCP_IPV4))
        );
        // TCP type off → 2-tuple with the IP type.
        assert_eq!(
            t.rss_hash(&tcp, hash_info::TOEPLITZ | hash_info::IPV4),
            Some((0x323e8fc2, hash_info::IPV4))
        );
        // No applicable type → unhashed.
        assert_eq!(
            t.rss_hash(&tcp, hash_info::TOEPLITZ | hash_info::IPV6),
            None
        );
        // Not Toeplitz → unhashed.
        assert_eq!(t.rss_hash(&tcp, linux & !hash_info::FUNCTION_MASK), None);
        // First fragment of TCP: 2-tuple.
        let frag = parse_frame(&frame_v4(6, 0x2000, &tcp_header())).unwrap();
        assert_eq!(
            t.rss_hash(&frag, linux),
            Some((0x323e8fc2, hash_info::IPV4))
        );
        // UDP: 2-tuple unless a UDP type is set.
        let mut udp = [0u8; 8];
        udp[0..2].copy_from_slice(&2794u16.to_be_bytes());
        udp[2..4].copy_from_slice(&1766u16.to_be_bytes());
        let udp = parse_frame(&frame_v4(17, 0, &udp)).unwrap();
        assert_eq!(t.rss_hash(&udp, linux), Some((0x323e8fc2, hash_info::IPV4)));
        assert_eq!(
            t.rss_hash(&udp, linux | hash_info::UDP_IPV4),
            Some((0x51ccc178, hash_info::UDP_IPV4))
        );
        // ICMP.
        let icmp = parse_frame(&frame_v4(1, 0, &[8, 0, 0, 0])).unwrap();
        assert_eq!(
            t.rss_hash(&icmp, linux),
            Some((0x323e8fc2, hash_info::IPV4))
        );
        // Non-IP.
        let mut arp = [0u8; 60];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(t.rss_hash(&parse_frame(&arp).unwrap(), linux), None);
    }

    #[test]
    fn host_rules_ipv6() {
        let t = Box::new(Toeplitz::default());
        let s: Ipv6Addr = "3ffe:2501:200:1fff::7".parse().unwrap();
        let d: Ipv6Addr = "3ffe:2501:200:3::1".parse().unwrap();
        let mut f = std::vec![0u8; 14];
        f[12] = 0x86;
        f[13] = 0xDD;
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 28, 44, 64]);
        f.extend_from_slice(&s.octets());
        f.extend_from_slice(&d.octets());
        // Atomic fragment header (offset 0, M clear): not a fragment.
        f.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 7]);
        f.extend_from_slice(&tcp_header());
        let info = parse_frame(&f).unwrap();
        assert_eq!(
            t.rss_hash(&info, hash_info::LINUX_DEFAULT),
            Some((0x40207d3d, hash_info::TCP_IPV6))
        );
        assert_eq!(
            t.rss_hash(
                &info,
                hash_info::TOEPLITZ | hash_info::TCP_IPV6_EX | hash_info::IPV6
            ),
            Some((0x40207d3d, hash_info::TCP_IPV6_EX))
        );
        assert_eq!(
            t.rss_hash(&info, hash_info::TOEPLITZ | hash_info::IPV6_EX),
            Some((0x2cc18cd5, hash_info::IPV6_EX))
        );
        // Set M: now a fragment, 2-tuple.
        f[14 + 40 + 3] = 1;
        let info = parse_frame(&f).unwrap();
        assert_eq!(
            t.rss_hash(&info, hash_info::LINUX_DEFAULT),
            Some((0x2cc18cd5, hash_info::IPV6))
        );
    }

    #[test]
    fn other_key() {
        let key: [u8; KEY_LEN] = core::array::from_fn(|i| (i as u8).wrapping_mul(91) ^ 0x3C);
        let t = Box::new(Toeplitz::new(&key));
        assert_eq!(t.key(), &key);
        let input: [u8; 36] = core::array::from_fn(|i| i as u8 ^ 0xF0);
        for n in 0..=36 {
            assert_eq!(t.hash(&input[..n]), reference_hash(&key, &input[..n]));
        }
    }
}
