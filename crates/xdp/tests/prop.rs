//! Random instruction streams either fail the load-time check or run to an action or a
//! fault, never a panic or a hang; and the compiled form runs them exactly as the reference
//! interpreter does.

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
            // Checked at backward jumps and calls: past the budget, one straight pass per frame.
            let frames = xdp::verifier::MAX_CALL_FRAMES as u64;
            prop_assert!(r.insns <= 10_001 + p.len() as u64 * frames);
            if r.faulted.is_some() {
                prop_assert_eq!(r.action, xdp::XDP_ABORTED);
            }
            prop_assert!(b.headroom + b.len <= b.data.len());
        }
    }
}

/// Arithmetic, byte swaps, conditional forward jumps and stack accesses, over registers that
/// a prologue fills with random values: programs that run long and take both sides of
/// branches, so that each compiled op is compared with the reference on varied operands.
fn compute_insn() -> impl Strategy<Value = RawInsn> {
    // All ALU operations but neg (8) and byte swap (13), which have their own encodings.
    let alu = (
        prop::sample::select(&[0u8, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12][..]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(op, wide, reg)| {
            (op << 4) | if wide { 0x07 } else { 0x04 } | if reg { 0x08 } else { 0 }
        });
    let jmp = (
        prop::sample::select(&[1u8, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13][..]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(op, wide, reg)| {
            (op << 4) | if wide { 0x05 } else { 0x06 } | if reg { 0x08 } else { 0 }
        });
    let other = prop::sample::select(
        &[
            0x84u8, 0x87, 0xd4, 0xdc, 0xd7, 0x7b, 0x73, 0x6b, 0x63, 0x7a, 0x72, 0x6a, 0x62, 0x79,
            0x71, 0x69, 0x61,
        ][..],
    );
    (
        prop_oneof![4 => alu, 3 => jmp, 2 => other],
        0u8..10,
        0u8..10,
        prop_oneof![Just(1i16), Just(2), Just(0), Just(3)],
        prop_oneof![
            Just(0i32),
            Just(1),
            Just(-1),
            Just(16),
            Just(31),
            Just(32),
            Just(63),
            Just(64),
            Just(i32::MIN),
            Just(i32::MAX),
            -300i32..300,
            any::<i32>()
        ],
        -8i16..0,
    )
        .prop_map(|(code, dst, src, off, imm, slot)| {
            match code {
                // Stack stores and loads through r10 at an aligned slot.
                0x7b | 0x73 | 0x6b | 0x63 => RawInsn::new(code, 10, src, slot * 8, 0),
                0x7a | 0x72 | 0x6a | 0x62 => RawInsn::new(code, 10, 0, slot * 8, imm),
                0x84 | 0x87 => RawInsn::new(code, dst, 0, 0, 0),
                0x79 | 0x71 | 0x69 | 0x61 => RawInsn::new(code, dst, 10, slot * 8, 0),
                // Byte swaps: a valid width.
                0xd4 | 0xdc | 0xd7 => {
                    RawInsn::new(code, dst, 0, 0, [16, 32, 64][imm.rem_euclid(3) as usize])
                }
                // The operand is either the register or the immediate; the other field is 0.
                _ => {
                    let (src, imm) = if code & 0x08 != 0 { (src, 0) } else { (0, imm) };
                    let jump = code & 0x07 == 0x05 || code & 0x07 == 0x06;
                    // Constant shifts in range, no constant division by zero (both refused).
                    let imm = match code >> 4 {
                        6 | 7 | 12 if !jump && code & 0x08 == 0 => imm & 31,
                        3 | 9 if !jump && code & 0x08 == 0 && imm == 0 => 7,
                        _ => imm,
                    };
                    // Signed div/mod have off = 1.
                    let off = if jump {
                        off
                    } else if matches!(code >> 4, 3 | 9) {
                        off & 1
                    } else {
                        0
                    };
                    RawInsn::new(code, dst, src, off, imm)
                }
            }
        })
}

fn seeded_program() -> impl Strategy<Value = Vec<RawInsn>> {
    (
        prop::collection::vec(
            // Edge values often: division by 0 and -1, the minimum, 32-bit boundaries.
            prop_oneof![
                4 => any::<u64>(),
                1 => Just(0u64),
                1 => Just(u64::MAX),
                1 => Just(1u64 << 63),
                1 => Just(0xffff_ffffu64),
                1 => Just(0x8000_0000u64),
                1 => Just(0xffff_ffff_8000_0000u64),
                1 => 0u64..300,
            ],
            10,
        ),
        prop::collection::vec(compute_insn(), 1..60),
    )
        .prop_map(|(seeds, body)| {
            let mut p = Vec::new();
            for (r, v) in seeds.into_iter().enumerate() {
                p.push(RawInsn::new(0x18, r as u8, 0, 0, v as u32 as i32));
                p.push(RawInsn::new(0, 0, 0, 0, (v >> 32) as u32 as i32));
            }
            p.extend(body);
            // Jumps near the end land on these exits rather than past the program.
            for _ in 0..4 {
                p.push(RawInsn::new(0x95, 0, 0, 0, 0));
            }
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
    #[test]
    fn jit_and_interpreter_match_reference_on_computation(prog in seeded_program(), cpu in 0u32..4) {
        let load = || Program::load(&prog, vec![]);
        if let Err(e) = load() {
            // Constant shifts out of range and constant division by zero are refused.
            prop_assert!(
                matches!(e, xdp::LoadError::Verify(ref v) if matches!(v.kind, xdp::VerifyErrorKind::Decode(_))),
                "{}", e
            );
            return Ok(());
        }
        let ok = |p: Result<Program, xdp::LoadError>| p.map_err(|e| TestCaseError::fail(e.to_string()));
        // The JIT where it applies, the compiled interpreter, the reference interpreter.
        let forms = [ok(load())?, ok(load())?.without_jit(), ok(load())?.with_reference_interpreter()];
        let frame = [0x5au8; 64];
        let outs: Vec<_> = forms
            .iter()
            .map(|p| {
                let mut b = XdpBuffer::new(&frame);
                (p.run(&mut b, cpu), b)
            })
            .collect();
        prop_assert_eq!(&outs[0], &outs[2]);
        prop_assert_eq!(&outs[1], &outs[2]);
    }

    #[test]
    fn jit_and_interpreter_match_reference_interpreter(
        body in prop::collection::vec(insn(), 1..40),
        frame in prop::collection::vec(any::<u8>(), 0..128),
        cpu in 0u32..4,
    ) {
        let maps = || vec![
            common::map(MapKind::Array, 4, 16, 4, 2),
            common::map(MapKind::PerCpuHash, 4, 8, 4, 2),
        ];
        let mut prog: Vec<RawInsn> = body
            .into_iter()
            .map(|i| {
                // ktime_get_ns differs between two runs; the clock is not under test here.
                if i.code == 0x85 && i.imm == xdp::helpers::id::KTIME_GET_NS {
                    RawInsn::new(0x85, 0, 0, 0, xdp::helpers::id::GET_SMP_PROCESSOR_ID)
                } else {
                    i
                }
            })
            .collect();
        prog.push(RawInsn::new(0x95, 0, 0, 0, 0));
        let load = || Program::load(&prog, maps()).map(|p| p.with_budget(10_000));
        if let (Ok(jit), Ok(interp), Ok(reference)) = (load(), load(), load()) {
            let forms = [jit, interp.without_jit(), reference.with_reference_interpreter()];
            // Twice each: the second run sees what the first left in maps and stack.
            for _ in 0..2 {
                let outs: Vec<_> = forms
                    .iter()
                    .map(|p| {
                        let mut b = XdpBuffer::new(&frame);
                        (p.run(&mut b, cpu), b)
                    })
                    .collect();
                prop_assert_eq!(&outs[0], &outs[2]);
                prop_assert_eq!(&outs[1], &outs[2]);
            }
            let dump = |m: &xdp::Map| -> Vec<(Vec<u8>, Vec<u8>)> {
                let mut keys = m.keys();
                keys.sort();
                keys.into_iter().map(|k| { let v = m.lookup(&k).unwrap_or_default(); (k, v) }).collect()
            };
            for form in &forms[..2] {
                for (m, r) in form.maps().iter().zip(forms[2].maps()) {
                    prop_assert_eq!(dump(m), dump(r));
                }
            }
        }
    }
}
