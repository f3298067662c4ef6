//! ns per run of corpus programs on a 64-byte UDP frame as the driver runs them (the JIT on
//! x86-64), in the compiled interpreter and in the reference interpreter, without root (the kernel comparison is
//! `hvnet bench xdp`); and inserts into a full LRU map.
//!
//! `cargo bench -p xdp --bench runtime`

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use xdp::elf::Object;
use xdp::{Map, Program, XdpBuffer};

/// Programs that stress different parts: a short parse-and-rewrite, a loop over the payload,
/// array-map lookups from a subprogram, hash maps, atomics.
const PROGRAMS: &[&str] = &[
    "swap_mac_tx",
    "payload_hash",
    "alu32_mix",
    "lru_flow_table",
    "atomics_v3",
    "ipv4_csum_verify",
];

fn load(name: &str) -> Program {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../hvnet/tests/fixtures/corpus")
        .join(format!("{name}.o"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let obj = Object::parse(&bytes).expect("corpus object parses");
    let linked = obj.link(None).expect("corpus object links");
    let maps = linked
        .maps
        .iter()
        .map(|m| Arc::new(Map::new(m.def.clone(), 2).expect("corpus map")))
        .collect();
    Program::load(&linked.insns, maps).expect("corpus program loads")
}

/// Ethernet, IPv4 198.18.0.1 -> 198.18.0.2, UDP 1234 -> 9, 18 bytes of payload.
fn udp_frame() -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[
        0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
    ]);
    f.extend_from_slice(&[0x04, 0xd2, 0, 9, 0, 26, 0, 0]);
    f.extend_from_slice(&[0x5a; 18]);
    f
}

fn runtime(c: &mut Criterion) {
    let frame = udp_frame();
    for name in PROGRAMS {
        let mut g = c.benchmark_group(*name);
        for (form, prog) in [
            ("default", load(name)),
            ("interpreter", load(name).without_jit()),
            ("reference", load(name).with_reference_interpreter()),
        ] {
            let mut buf = XdpBuffer::new(&frame);
            g.bench_function(form, |b| b.iter(|| black_box(prog.run(&mut buf, 0))));
        }
        g.finish();
    }
}

/// Inserting new keys into a full LRU hash map of 65 536 entries: each insert evicts the
/// least recently used entry, which must not cost a scan of the map.
fn lru_full_insert(c: &mut Criterion) {
    let def = xdp::MapDef {
        name: "lru".into(),
        kind: xdp::MapKind::LruHash,
        key_size: 8,
        value_size: 8,
        max_entries: 65_536,
        flags: 0,
    };
    let m = Map::new(def, 1).expect("map");
    let mut k = 0u64;
    for _ in 0..65_536 {
        m.update(&k.to_le_bytes(), &k.to_le_bytes(), 0).unwrap();
        k += 1;
    }
    c.bench_function("lru_full_insert", |b| {
        b.iter(|| {
            k += 1;
            m.update(&k.to_le_bytes(), &k.to_le_bytes(), 0).unwrap();
        })
    });
}

criterion_group!(benches, runtime, lru_full_insert);
criterion_main!(benches);
