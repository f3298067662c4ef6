//! Shared test helpers (not a test target of its own: included by `mod common`).
#![allow(dead_code)]

use std::sync::Arc;

use xdp::asm::Asm;
use xdp::{Map, MapDef, MapKind, Program, RunResult, XdpBuffer};

/// An Ethernet/IPv4/UDP frame to `dport` with an 8-byte payload.
pub fn udp_frame(dport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]); // dst mac
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]); // src mac
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 20 + 8 + 8u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0,
        0,
        64,
        17,
        0,
        0,
    ]);
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&1234u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&16u16.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(b"payload!");
    f
}

/// Loads `a` with `maps` (panics with the verifier's message on refusal).
pub fn load(a: Asm, maps: Vec<Arc<Map>>) -> Program {
    match Program::load(&a.build(), maps) {
        Ok(p) => p,
        Err(e) => panic!("load failed: {e}"),
    }
}

/// Loads and runs `a` without maps on a UDP frame.
pub fn run(a: Asm) -> RunResult {
    let p = load(a, vec![]);
    p.run(&mut XdpBuffer::new(&udp_frame(80)), 0)
}

/// Runs `a` and returns r0, asserting no fault.
pub fn r0(a: Asm) -> u64 {
    let r = run(a);
    assert_eq!(r.faulted, None, "unexpected fault");
    r.r0
}

/// A map.
pub fn map(
    kind: MapKind,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    ncpus: u32,
) -> Arc<Map> {
    Arc::new(
        Map::new(
            MapDef {
                name: "m".into(),
                kind,
                key_size,
                value_size,
                max_entries,
                flags: 0,
            },
            ncpus,
        )
        .expect("map"),
    )
}
