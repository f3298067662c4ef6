//! Arbitrary bytes as a program and a packet: loading never panics, and a loaded program
//! runs to an action or a fault (`XDP_ABORTED`) within its budget, leaving the buffer
//! consistent, and the JIT and the compiled interpreter give exactly what the reference
//! interpreter gives.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use xdp::{Map, MapDef, MapKind, Program, XDP_ABORTED, XdpBuffer};

fn map(kind: MapKind, key_size: u32) -> Arc<Map> {
    let def = MapDef {
        name: "f".into(),
        kind,
        key_size,
        value_size: 16,
        max_entries: 4,
        flags: 0,
    };
    Arc::new(Map::new(def, 2).expect("valid map"))
}

fuzz_target!(|data: &[u8]| {
    // [packet length][flags][packet][program...]
    let Some((&plen, rest)) = data.split_first() else {
        return;
    };
    let Some((&flags, rest)) = rest.split_first() else {
        return;
    };
    let plen = usize::from(plen).min(rest.len());
    let (packet, code) = rest.split_at(plen);
    let code = &code[..code.len() / 8 * 8];
    let maps = vec![
        map(MapKind::Array, 4),
        map(MapKind::Hash, 4),
        map(MapKind::PerCpuArray, 4),
        map(MapKind::LruHash, 2),
    ];
    let maps2 = maps.iter().map(|m| map(m.def().kind, m.def().key_size)).collect();
    let maps3 = maps.iter().map(|m| map(m.def().kind, m.def().key_size)).collect();
    let Ok(prog) = Program::load_bytes(code, maps) else {
        return;
    };
    let reference = Program::load_bytes(code, maps2)
        .expect("loads like the first")
        .with_budget(20_000)
        .with_reference_interpreter();
    let interp = Program::load_bytes(code, maps3)
        .expect("loads like the first")
        .with_budget(20_000)
        .without_jit();
    let prog = prog.with_budget(20_000);
    let mut buf = XdpBuffer::new(packet);
    if flags & 1 != 0 {
        buf.meta_len = Some(0);
    }
    let mut buf2 = buf.clone();
    let mut buf3 = buf.clone();
    let r = prog.run(&mut buf, u32::from(flags >> 1) % 2);
    // The clock differs between two runs; everything else must not.
    let reads_clock = code
        .chunks(8)
        .any(|i| i[0] == 0x85 && i[4..8] == xdp::helpers::id::KTIME_GET_NS.to_le_bytes());
    if !reads_clock {
        let r2 = reference.run(&mut buf2, u32::from(flags >> 1) % 2);
        assert_eq!(r, r2);
        assert_eq!(buf, buf2);
        let r3 = interp.run(&mut buf3, u32::from(flags >> 1) % 2);
        assert_eq!(r3, r2);
        assert_eq!(buf3, buf2);
    }
    // The budget is checked at backward jumps and calls: past it, at most one straight pass
    // per frame.
    let frames = xdp::verifier::MAX_CALL_FRAMES as u64;
    assert!(r.insns <= 20_001 + prog.len() as u64 * frames);
    if r.faulted.is_some() {
        assert_eq!(r.action, XDP_ABORTED);
    }
    assert!(buf.headroom + buf.len <= buf.data.len());
});
