//! Random instruction streams either fail the load-time check or run to an action or a
//! fault, never a panic or a hang.

mod common;

use proptest::prelude::*;
use xdp::insn::RawInsn;
use xdp::{MapKind, Program, XdpBuffer};

/// Opcodes that decode (so that random programs get past the decoder often), plus noise.
const CODES: &[u8] = &[
    0x07, 0x0f, 0x17, 0x1f, 0x27, 0x2f, 0x37, 0x3f, 0x47, 0x4f, 0x57, 0x5f, 0x67, 0x6f, 0x77, 0x7f,
    0x87, 0x97, 0x9f, 0xa7, 0xaf, 0xb7, 0xbf, 0xc7, 0xcf, 0xd7, 0x04, 0x0c, 0x14, 0x1c, 0x24, 0x2c,
    0x34, 0x3c, 0x44, 0x4c, 0x54, 0x5c, 0x64, 0x6c, 0x74, 0x7c, 0x84, 0x94, 0x9c, 0xa4, 0xac, 0xb4,
    0xbc, 0xc4, 0xcc, 0xd4, 0xdc, 0x61, 0x69, 0x71, 0x79, 0x81, 0x89, 0x91, 0x62, 0x6a, 0x72, 0x7a,
    0x63, 0x6b, 0x73, 0x7b, 0xc3, 0xdb, 0x05, 0x15, 0x1d, 0x25, 0x2d, 0x35, 0x3d, 0x45, 0x4d, 0x55,
    0x5d, 0x65, 0x6d, 0x75, 0x7d, 0xa5, 0xad, 0xb5, 0xbd, 0xc5, 0xcd, 0xd5, 0xdd, 0x06, 0x16, 0x1e,
    0x56, 0xa6, 0x85, 0x95, 0x18, 0x00, 0xff, 0xe5,
];

fn insn() -> impl Strategy<Value = RawInsn> {
    (
        prop::sample::select(CODES),
        0u8..11,
        0u8..11,
        prop_oneof![-8i16..8, -512i16..0, any::<i16>()],
        prop_oneof![
            -4i32..70,
            Just(0xe1),
            Just(0xf1),
            Just(0x01),
            Just(1),
            any::<i32>()
        ],
    )
        .prop_map(|(code, dst, src, off, imm)| {
            // Calls: mostly real helper ids; lddw: mostly plain or map 0.
            let (src, imm) = match code {
                0x85 => (src % 3, imm.rem_euclid(70)),
                0x18 => (src % 3, imm.rem_euclid(2)),
                _ => (src, imm),
            };
            RawInsn::new(code, dst, src, off, imm)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    #[test]
    fn random_programs_never_panic(
        body in prop::collection::vec(insn(), 1..40),
        frame in prop::collection::vec(any::<u8>(), 0..128),
        cpu in 0u32..4,
    ) {
        let maps = vec![
            common::map(MapKind::Array, 4, 16, 4, 2),
            common::map(MapKind::PerCpuHash, 4, 8, 4, 2),
        ];
        // Always end in exit so that more programs pass the check.
        let mut prog = body;
        prog.push(RawInsn::new(0x95, 0, 0, 0, 0));
        if let Ok(p) = Program::load(&prog, maps) {
            let p = p.with_budget(10_000);
            let mut b = XdpBuffer::new(&frame);
            let r = p.run(&mut b, cpu);
            prop_assert!(r.insns <= 10_001);
            if r.faulted.is_some() {
                prop_assert_eq!(r.action, xdp::XDP_ABORTED);
            }
            prop_assert!(b.headroom + b.len <= b.data.len());
        }
    }
}
