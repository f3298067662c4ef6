//! Nanoseconds per Toeplitz hash, IPv4+TCP (12-byte input) and IPv6+TCP (36-byte input):
//! the table-driven `Toeplitz::hash`, the bit-by-bit `reference_hash` (the published
//! algorithm, shifting the whole key per bit), and for comparison a bit-serial variant with
//! a sliding 32-bit key window, the fastest form that still looks at one bit at a time.

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

use criterion::{Criterion, criterion_group, criterion_main};
use netpkt::toeplitz::{DEFAULT_KEY, Toeplitz, hash_input_v4, hash_input_v6, reference_hash};

/// Bit-serial Toeplitz with a sliding window: one 64-bit register of key bits, refilled a
/// byte at a time.
fn window_hash(key: &[u8; 40], input: &[u8]) -> u32 {
    let mut window = u64::from_be_bytes([
        key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
    ]);
    let mut result = 0u32;
    for (next, &byte) in (8..).zip(input.iter().take(36)) {
        for b in 0..8 {
            if byte & (0x80 >> b) != 0 {
                result ^= (window >> (32 - b)) as u32;
            }
        }
        window = (window << 8) | u64::from(key.get(next).copied().unwrap_or(0));
    }
    result
}

fn bench(c: &mut Criterion) {
    let t = Box::new(Toeplitz::default());
    let (v4, n4) = hash_input_v4(
        Ipv4Addr::new(66, 9, 149, 187),
        Ipv4Addr::new(161, 142, 100, 80),
        Some((2794, 1766)),
    );
    let src: Ipv6Addr = "3ffe:2501:200:1fff::7".parse().unwrap();
    let dst: Ipv6Addr = "3ffe:2501:200:3::1".parse().unwrap();
    let (v6, n6) = hash_input_v6(src, dst, Some((2794, 1766)));

    let mut g = c.benchmark_group("toeplitz");
    g.bench_function("ipv4_tcp/table", |b| {
        b.iter(|| t.hash(black_box(&v4[..n4])))
    });
    g.bench_function("ipv4_tcp/reference", |b| {
        b.iter(|| reference_hash(black_box(&DEFAULT_KEY), black_box(&v4[..n4])))
    });
    g.bench_function("ipv6_tcp/table", |b| {
        b.iter(|| t.hash(black_box(&v6[..n6])))
    });
    g.bench_function("ipv6_tcp/reference", |b| {
        b.iter(|| reference_hash(black_box(&DEFAULT_KEY), black_box(&v6[..n6])))
    });
    g.bench_function("ipv4_tcp/window", |b| {
        b.iter(|| window_hash(black_box(&DEFAULT_KEY), black_box(&v4[..n4])))
    });
    g.bench_function("ipv6_tcp/window", |b| {
        b.iter(|| window_hash(black_box(&DEFAULT_KEY), black_box(&v6[..n6])))
    });
    g.finish();
    assert_eq!(
        window_hash(&DEFAULT_KEY, &v4[..n4]),
        reference_hash(&DEFAULT_KEY, &v4[..n4])
    );
    assert_eq!(
        window_hash(&DEFAULT_KEY, &v6[..n6]),
        reference_hash(&DEFAULT_KEY, &v6[..n6])
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
