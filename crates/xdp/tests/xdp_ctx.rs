//! The XDP context, packet access, faults, budget and load-time refusals.

mod common;

use common::{load, udp_frame};
use xdp::asm::Asm;
use xdp::insn::{alu, jmp, size};
use xdp::vm::{FaultKind, XDP_HEADROOM};
use xdp::{Program, VerifyErrorKind, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XdpBuffer};

/// The clang shape: `data = ctx->data; data_end = ctx->data_end;` then
/// `if (data + 42 > data_end) return XDP_PASS;` and parse Ethernet/IPv4/UDP:
/// drop UDP to port 53, pass the rest.
fn dns_dropper() -> Asm {
    Asm::new()
        .ldx(size::W, 2, 1, 0) // r2 = data
        .ldx(size::W, 3, 1, 4) // r3 = data_end
        .mov64_reg(4, 2)
        .alu64_imm(alu::ADD, 4, 14)
        .jmp_reg(jmp::JGT, 4, 3, 15) // eth header
        .ldx(size::H, 5, 2, 12)
        .jmp_imm(jmp::JNE, 5, 0x0008, 13) // htons(ETH_P_IP)
        .mov64_reg(4, 2)
        .alu64_imm(alu::ADD, 4, 14 + 20 + 8)
        .jmp_reg(jmp::JGT, 4, 3, 10)
        .ldx(size::B, 5, 2, 14 + 9)
        .jmp_imm(jmp::JNE, 5, 17, 8)
        .ldx(size::B, 5, 2, 14)
        .alu64_imm(alu::AND, 5, 0x0f)
        .jmp_imm(jmp::JNE, 5, 5, 5) // no IP options in this sketch
        .ldx(size::H, 5, 2, 14 + 20 + 2)
        .endian(true, 5, 16)
        .jmp_imm(jmp::JNE, 5, 53, 2)
        .mov64_imm(0, XDP_DROP as i32)
        .exit()
        .ret(XDP_PASS)
}

#[test]
fn parses_ethernet_ipv4_udp() {
    let p = load(dns_dropper(), vec![]);
    assert_eq!(
        p.run(&mut XdpBuffer::new(&udp_frame(53)), 0).action,
        XDP_DROP
    );
    assert_eq!(
        p.run(&mut XdpBuffer::new(&udp_frame(80)), 0).action,
        XDP_PASS
    );
    // Truncated frames take the bounds-check branch, never fault.
    for len in 0..42 {
        let r = p.run(&mut XdpBuffer::new(&udp_frame(53)[..len]), 0);
        assert_eq!((r.action, r.faulted), (XDP_PASS, None), "len {len}");
    }
    assert_eq!(p.stats().faults, 0);
}

#[test]
fn xdp_md_fields() {
    // r0 = (data_end - data) | ingress << 16 | rxq << 24
    let p = Asm::new()
        .ldx(size::W, 2, 1, 0)
        .ldx(size::W, 3, 1, 4)
        .alu64_reg(alu::SUB, 3, 2)
        .ldx(size::W, 4, 1, 12)
        .alu64_imm(alu::LSH, 4, 16)
        .ldx(size::W, 5, 1, 16)
        .alu64_imm(alu::LSH, 5, 24)
        .mov64_reg(0, 3)
        .alu64_reg(alu::OR, 0, 4)
        .alu64_reg(alu::OR, 0, 5)
        .exit();
    let p = load(p, vec![]);
    let mut b = XdpBuffer::new(&udp_frame(1));
    b.ingress_ifindex = 7;
    b.rx_queue_index = 3;
    assert_eq!(p.run(&mut b, 0).r0, 50 | (7 << 16) | (3 << 24));
    // data_meta without metadata support is data + 1.
    let m = load(
        Asm::new()
            .ldx(size::W, 2, 1, 0)
            .ldx(size::W, 3, 1, 8)
            .mov64_reg(0, 3)
            .alu64_reg(alu::SUB, 0, 2)
            .exit(),
        vec![],
    );
    assert_eq!(m.run(&mut XdpBuffer::new(&udp_frame(1)), 0).r0, 1);
    // egress_ifindex is not readable from a plain XDP program; context stores fault.
    for a in [
        Asm::new().ldx(size::W, 0, 1, 20).exit(),
        Asm::new().st(size::W, 1, 12, 0).ret(2),
        Asm::new().ldx(size::DW, 0, 1, 0).exit(),
        Asm::new().ldx(size::W, 0, 1, 2).exit(),
    ] {
        let r = load(a, vec![]).run(&mut XdpBuffer::new(&udp_frame(1)), 0);
        assert_eq!(r.action, XDP_ABORTED);
        assert!(matches!(r.faulted.unwrap().kind, FaultKind::Memory { .. }));
    }
}

#[test]
fn packet_is_anywhere_and_writable() {
    // Swap the MAC addresses and transmit.
    let p = Asm::new()
        .ldx(size::W, 2, 1, 0)
        .ldx(size::W, 3, 1, 4)
        .mov64_reg(4, 2)
        .alu64_imm(alu::ADD, 4, 12)
        .jmp_reg(jmp::JGT, 4, 3, 7)
        .ldx(size::W, 5, 2, 0)
        .ldx(size::H, 6, 2, 4)
        .ldx(size::W, 7, 2, 6)
        .ldx(size::H, 8, 2, 10)
        .stx(size::W, 2, 7, 0)
        .stx(size::H, 2, 8, 4)
        .ja(2)
        .ret(XDP_PASS)
        .stx(size::W, 2, 5, 6)
        .stx(size::H, 2, 6, 10)
        .ret(XDP_TX);
    let p = load(p, vec![]);
    let frame = udp_frame(9);
    let mut b = XdpBuffer::new(&frame);
    // Move the frame elsewhere in a bigger buffer: pointers are relative to the region.
    b.data = {
        let mut d = vec![0u8; 8192];
        d[1000..1000 + frame.len()].copy_from_slice(&frame);
        d
    };
    b.headroom = 1000;
    let r = p.run(&mut b, 0);
    assert_eq!((r.action, r.faulted), (XDP_TX, None));
    assert_eq!(&b.frame()[..6], &frame[6..12]);
    assert_eq!(&b.frame()[6..12], &frame[..6]);
}

#[test]
fn out_of_bounds_packet_access_aborts_and_counts() {
    // Read one byte past data_end without a check.
    let p = load(
        Asm::new()
            .ldx(size::W, 2, 1, 4)
            .ldx(size::B, 0, 2, 0)
            .exit(),
        vec![],
    );
    let r = p.run(&mut XdpBuffer::new(&udp_frame(1)), 0);
    assert_eq!(r.action, XDP_ABORTED);
    assert!(matches!(
        r.faulted.unwrap().kind,
        FaultKind::Memory { write: false, .. }
    ));
    // Read before data (the headroom is not accessible).
    let p2 = load(
        Asm::new()
            .ldx(size::W, 2, 1, 0)
            .ldx(size::B, 0, 2, -1)
            .exit(),
        vec![],
    );
    assert_eq!(
        p2.run(&mut XdpBuffer::new(&udp_frame(1)), 0).action,
        XDP_ABORTED
    );
    // Write straddling data_end.
    let p3 = load(
        Asm::new()
            .ldx(size::W, 2, 1, 4)
            .st(size::DW, 2, -4, 0)
            .ret(2),
        vec![],
    );
    assert_eq!(
        p3.run(&mut XdpBuffer::new(&udp_frame(1)), 0).action,
        XDP_ABORTED
    );
    // A forged number is not memory.
    let p4 = load(
        Asm::new()
            .lddw(2, 0x7fff_0000_1000)
            .ldx(size::B, 0, 2, 0)
            .exit(),
        vec![],
    );
    assert_eq!(
        p4.run(&mut XdpBuffer::new(&udp_frame(1)), 0).action,
        XDP_ABORTED
    );
    // Stack through a computed pointer below the frame.
    let p5 = load(
        Asm::new()
            .mov64_reg(2, 10)
            .alu64_imm(alu::ADD, 2, -513)
            .ldx(size::B, 0, 2, 0)
            .exit(),
        vec![],
    );
    assert_eq!(
        p5.run(&mut XdpBuffer::new(&udp_frame(1)), 0).action,
        XDP_ABORTED
    );
    assert_eq!(p.stats().runs, 1);
    assert_eq!(p.stats().faults, 1);
}

#[test]
fn infinite_loop_hits_the_budget() {
    let p = load(Asm::new().mov64_imm(0, 2).ja(-1).exit(), vec![]);
    let r = p.run(&mut XdpBuffer::new(&udp_frame(1)), 0);
    assert_eq!(r.action, XDP_ABORTED);
    assert_eq!(r.faulted.unwrap().kind, FaultKind::Budget);
    assert_eq!(r.insns, xdp::vm::DEFAULT_BUDGET + 1);
}

#[test]
fn inconsistent_buffer_aborts() {
    let p = load(Asm::new().ret(2), vec![]);
    let mut b = XdpBuffer::new(&udp_frame(1));
    b.len = 10_000;
    assert_eq!(p.run(&mut b, 0).faulted.unwrap().kind, FaultKind::BadBuffer);
}

fn refused(a: Asm) -> (usize, VerifyErrorKind) {
    match Program::load(&a.build(), vec![]) {
        Ok(_) => panic!("loaded"),
        Err(xdp::LoadError::Verify(e)) => (e.pc, e.kind),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn refused_at_load() {
    use VerifyErrorKind as K;
    use xdp::insn::DecodeError as D;
    assert_eq!(
        refused(Asm::new().st(size::DW, 10, -520, 0).ret(2)),
        (0, K::StackOutOfBounds { off: -520, size: 8 })
    );
    assert_eq!(
        refused(Asm::new().ldx(size::W, 0, 10, -2).exit()),
        (0, K::StackOutOfBounds { off: -2, size: 4 })
    );
    assert_eq!(refused(Asm::new().ja(5).ret(2)), (0, K::JumpOutOfRange(6)));
    assert_eq!(
        refused(Asm::new().ja(-2).ret(2)),
        (0, K::JumpOutOfRange(-1))
    );
    assert_eq!(
        refused(Asm::new().ja(1).lddw(0, 1).exit()),
        (0, K::JumpIntoLddw(2))
    );
    assert_eq!(
        refused(Asm::new().raw(0xb7, 11, 0, 0, 0).exit()),
        (0, K::Decode(D::InvalidRegister(11)))
    );
    assert_eq!(
        refused(Asm::new().mov64_imm(10, 0).exit()),
        (0, K::WriteToFramePointer)
    );
    assert_eq!(
        refused(Asm::new().call(12).ret(2)),
        (0, K::UnknownHelper(12))
    );
    assert_eq!(
        refused(Asm::new().raw(0xff, 0, 0, 0, 0).exit()),
        (0, K::Decode(D::InvalidOpcode(0xff)))
    );
    assert_eq!(refused(Asm::new().mov64_imm(0, 2)), (0, K::FallsOff(0)));
    assert_eq!(
        refused(Asm::new().raw(0x30, 0, 0, 0, 12).exit()),
        (0, K::LegacyPacketLoad)
    );
    assert_eq!(refused(Asm::new()), (0, K::Empty));
    assert_eq!(
        refused(Asm::new().mov64_imm(0, 1).alu64_imm(alu::DIV, 0, 0).exit()),
        (1, K::Decode(D::DivByZero))
    );
    assert_eq!(
        refused(Asm::new().alu32_imm(alu::LSH, 0, 32).exit()),
        (0, K::Decode(D::InvalidShift(32)))
    );
    assert_eq!(
        refused(Asm::new().ld_map(1, 0).ret(2)),
        (0, K::UnknownMap(0, 0))
    );
    // Recursion: main calls f, f calls itself.
    let (_, k) = refused(Asm::new().call_local(1).exit().call_local(-1).exit());
    assert_eq!(k, K::Recursion(2));
    // Call target outside the program.
    assert_eq!(
        refused(Asm::new().call_local(10).exit()),
        (0, K::BadCallTarget(11))
    );
    // lddw cut short.
    assert_eq!(
        refused(Asm::new().raw(0x18, 0, 0, 0, 0)),
        (0, K::Decode(D::TruncatedLddw))
    );
    // Reserved field set: exit with a register.
    assert!(matches!(
        refused(Asm::new().raw(0x95, 1, 0, 0, 0)).1,
        K::Decode(D::InvalidField { .. })
    ));
    // kfunc call.
    assert_eq!(
        refused(Asm::new().raw(0x85, 0, 2, 0, 77).ret(2)),
        (0, K::Kfunc(77))
    );
    // Error messages name the instruction.
    let e =
        Program::load(&Asm::new().mov64_imm(0, 0).call(999).exit().build(), vec![]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "instruction 1: unknown or unsupported helper 999"
    );
    // Byte-level load: length not a multiple of 8.
    assert!(matches!(
        Program::load_bytes(&[0; 9], vec![]),
        Err(xdp::LoadError::Length(9))
    ));
    let ok = Program::load_bytes(
        &Asm::new()
            .ret(2)
            .build()
            .iter()
            .flat_map(|i| i.to_bytes())
            .collect::<Vec<_>>(),
        vec![],
    );
    assert!(ok.is_ok());
}

#[test]
fn headroom_constant_matches_netvsc() {
    assert_eq!(XDP_HEADROOM, 256);
    let b = XdpBuffer::new(&[1, 2, 3]);
    assert_eq!(
        (b.data.len(), b.headroom, b.len, b.frame()),
        (4096, 256, 3, &[1u8, 2, 3][..])
    );
}

#[test]
fn stack_is_zero_at_every_entry() {
    // Dirty the top and bottom of the frame, then fault (a load through r0 = 0).
    let dirty_then_fault = load(
        Asm::new()
            .st(size::DW, 10, -8, 0x5a5a)
            .st(size::DW, 10, -512, 0x5a5a)
            .mov64_imm(2, 7)
            .stx(size::DW, 10, 2, -256)
            .mov64_imm(0, 0)
            .ldx(size::DW, 0, 0, 0)
            .exit(),
        vec![],
    );
    let read = load(
        Asm::new()
            .ldx(size::DW, 0, 10, -8)
            .ldx(size::DW, 2, 10, -512)
            .alu64_reg(alu::OR, 0, 2)
            .ldx(size::DW, 2, 10, -256)
            .alu64_reg(alu::OR, 0, 2)
            .exit(),
        vec![],
    );
    let r = dirty_then_fault.run(&mut XdpBuffer::new(&udp_frame(1)), 0);
    assert!(r.faulted.is_some());
    assert_eq!(read.run(&mut XdpBuffer::new(&udp_frame(1)), 0).r0, 0);

    // A subprogram called twice finds its frame zeroed the second time too:
    // sub: r0 = *(r10 - 8); *(r10 - 8) = 7; exit.  main: r6 = sub(); r0 = sub() + r6.
    let twice = load(
        Asm::new()
            .call_local(4)
            .mov64_reg(6, 0)
            .call_local(2)
            .alu64_reg(alu::ADD, 0, 6)
            .exit()
            .ldx(size::DW, 0, 10, -8)
            .st(size::DW, 10, -8, 7)
            .exit(),
        vec![],
    );
    for _ in 0..2 {
        let r = twice.run(&mut XdpBuffer::new(&udp_frame(1)), 0);
        assert_eq!((r.faulted, r.r0), (None, 0));
    }
}

/// The same hostile programs as above, checked to run as machine code: the JIT's inline
/// checks contain them as the interpreter does.
#[cfg(target_arch = "x86_64")]
#[test]
fn hostile_programs_under_the_jit_abort() {
    use xdp::helpers::id;
    let hostile = [
        // Endless loop.
        Asm::new().mov64_imm(0, 2).ja(-1).exit(),
        // One byte past data_end, unchecked.
        Asm::new()
            .ldx(size::W, 2, 1, 4)
            .ldx(size::B, 0, 2, 0)
            .exit(),
        // A forged packet pointer far past the page.
        Asm::new()
            .lddw(2, 0x2000_0000_0001_0000)
            .ldx(size::DW, 0, 2, 0)
            .exit(),
        // A number that is not a pointer at all (host-looking address), written to.
        Asm::new()
            .lddw(2, 0x7fff_ffff_f000)
            .st(size::DW, 2, 0, 1)
            .ret(2),
        // Out of the stack frame through a derived pointer.
        Asm::new()
            .mov64_reg(2, 10)
            .alu64_imm(alu::ADD, 2, 8)
            .ldx(size::DW, 0, 2, 0)
            .exit(),
        // A bad map pointer to a helper.
        Asm::new()
            .mov64_imm(1, 7)
            .mov64_reg(2, 10)
            .alu64_imm(alu::ADD, 2, -8)
            .call(id::MAP_LOOKUP_ELEM)
            .exit(),
    ];
    for (i, a) in hostile.into_iter().enumerate() {
        let p = load(a, vec![]);
        assert!(p.is_jitted(), "program {i} not JITed");
        let r = p.run(&mut XdpBuffer::new(&udp_frame(1)), 0);
        assert_eq!(r.action, XDP_ABORTED, "program {i}: {r:?}");
        assert!(r.faulted.is_some(), "program {i}");
        assert_eq!(p.stats().faults, 1, "program {i}");
    }
}
