//! The form the interpreter runs: one flat, fixed-size [`Slot`] per instruction slot.
//!
//! [`compile`] turns verified [`Insn`]s into slots whose [`Op`] names the operation, width and
//! operand source at once (`Add64Imm`, `Jgt32Reg`, `Ldx4`, ...), so the interpreter takes one
//! dispatch per instruction instead of decoding nested enums; immediates are sign- or
//! zero-extended, jump offsets made absolute and `lddw` map references made into the tagged
//! pointers of [`crate::vm`] here, once, instead of on every run.
//!
//! It is also where the context is rewritten, as the kernel does at load time: a data-flow
//! pass finds the registers that certainly hold the `struct xdp_md` pointer at each
//! instruction, and a 4-byte load of `data`, `data_end`, `data_meta`, `ingress_ifindex` or
//! `rx_queue_index` through one becomes an op that yields the packet pointer (or number)
//! directly. A context pointer whose origin the pass cannot see (one spilled to the stack and
//! reloaded, or passed to a subprogram) is still resolved correctly by the general load.
//!
//! Rare instructions (atomics, sign-extending moves and loads, `may_goto`) compile to
//! [`Op::Slow`] and run through the reference path that interprets the [`Insn`] itself.

use crate::insn::{AluOp, Cond, EndianOp, Imm64, Insn, Operand, Size, Width};
use crate::vm::{KIND_MAP, KIND_VALUE, SLOT_BITS, ptr};

/// One operation; the name says width (`64`/`32`), operand (`Imm`/`Reg`) and access size.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    Add64Imm,
    Add64Reg,
    Sub64Imm,
    Sub64Reg,
    Mul64Imm,
    Mul64Reg,
    Div64Imm,
    Div64Reg,
    SDiv64Imm,
    SDiv64Reg,
    Mod64Imm,
    Mod64Reg,
    SMod64Imm,
    SMod64Reg,
    Or64Imm,
    Or64Reg,
    And64Imm,
    And64Reg,
    Xor64Imm,
    Xor64Reg,
    Lsh64Imm,
    Lsh64Reg,
    Rsh64Imm,
    Rsh64Reg,
    Arsh64Imm,
    Arsh64Reg,
    Mov64Imm,
    Mov64Reg,
    Add32Imm,
    Add32Reg,
    Sub32Imm,
    Sub32Reg,
    Mul32Imm,
    Mul32Reg,
    Div32Imm,
    Div32Reg,
    SDiv32Imm,
    SDiv32Reg,
    Mod32Imm,
    Mod32Reg,
    SMod32Imm,
    SMod32Reg,
    Or32Imm,
    Or32Reg,
    And32Imm,
    And32Reg,
    Xor32Imm,
    Xor32Reg,
    Lsh32Imm,
    Lsh32Reg,
    Rsh32Imm,
    Rsh32Reg,
    Arsh32Imm,
    Arsh32Reg,
    Mov32Imm,
    Mov32Reg,
    Neg64,
    Neg32,
    /// `dst &= 0xffff` (`le16`).
    Zext16,
    /// `dst &= 0xffff_ffff` (`le32`).
    Zext32,
    /// No effect (`le64`).
    Nop,
    Swap16,
    Swap32,
    Swap64,
    Ldx1,
    Ldx2,
    Ldx4,
    Ldx8,
    /// `dst = data` from a register known to hold the context.
    CtxData,
    /// `dst = data_end`.
    CtxDataEnd,
    /// `dst = data_meta`.
    CtxDataMeta,
    /// `dst = ingress_ifindex`.
    CtxIfindex,
    /// `dst = rx_queue_index`.
    CtxRxQueue,
    St1,
    St2,
    St4,
    St8,
    Stx1,
    Stx2,
    Stx4,
    Stx8,
    /// `dst = imm` (a 64-bit constant or an already tagged map pointer).
    LoadImm64,
    Ja,
    Jeq64Imm,
    Jeq64Reg,
    Jne64Imm,
    Jne64Reg,
    Jgt64Imm,
    Jgt64Reg,
    Jge64Imm,
    Jge64Reg,
    Jlt64Imm,
    Jlt64Reg,
    Jle64Imm,
    Jle64Reg,
    Jset64Imm,
    Jset64Reg,
    Jsgt64Imm,
    Jsgt64Reg,
    Jsge64Imm,
    Jsge64Reg,
    Jslt64Imm,
    Jslt64Reg,
    Jsle64Imm,
    Jsle64Reg,
    Jeq32Imm,
    Jeq32Reg,
    Jne32Imm,
    Jne32Reg,
    Jgt32Imm,
    Jgt32Reg,
    Jge32Imm,
    Jge32Reg,
    Jlt32Imm,
    Jlt32Reg,
    Jle32Imm,
    Jle32Reg,
    Jset32Imm,
    Jset32Reg,
    Jsgt32Imm,
    Jsgt32Reg,
    Jsge32Imm,
    Jsge32Reg,
    Jslt32Imm,
    Jslt32Reg,
    Jsle32Imm,
    Jsle32Reg,
    /// Helper call, `imm` = helper id.
    Call,
    /// BPF-to-BPF call, `off` = target.
    CallLocal,
    Exit,
    /// `dst = src + imm; if dst > aux goto off` (the packet bounds check clang emits for
    /// `if (p + n > data_end)`: a move, an add and a jump).
    MovAddJgt,
    /// `dst += imm; if dst > aux goto off` (the same without the move).
    AddJgt,
    /// `dst = src + imm` (a move and an add).
    MovAdd,
    /// `dst = src >> imm` (a move and a shift).
    MovRsh,
    /// `dst = src << imm`.
    MovLsh,
    /// `dst = src & imm`.
    MovAnd,
    /// `dst = *(u8 *)(src + off); if dst != imm.low goto imm.high` (a load and a test).
    Ldx1Jne,
    /// The same with a 2-byte load.
    Ldx2Jne,
    /// The same with a 4-byte load.
    Ldx4Jne,
    /// `dst = *(u8 *)(src + off); if dst == imm.low goto imm.high`.
    Ldx1Jeq,
    /// The same with a 2-byte load.
    Ldx2Jeq,
    /// The same with a 4-byte load.
    Ldx4Jeq,
    /// Interpret the [`Insn`] at this index (rare instructions, and the second slot of lddw,
    /// which no jump reaches).
    Slow,
}

/// One compiled instruction slot (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// What to do.
    pub op: Op,
    /// Destination register (also the base register of stores).
    pub dst: u8,
    /// Source register (also the base register of loads).
    pub src: u8,
    /// Second source register of fused ops.
    pub aux: u8,
    /// Memory offset, or absolute jump / call target.
    pub off: i32,
    /// Immediate: sign-extended to 64 bits (32-bit ops use the low half), a 64-bit constant,
    /// or a helper id.
    pub imm: u64,
}

impl Slot {
    fn new(op: Op, dst: u8, src: u8, off: i32, imm: u64) -> Slot {
        Slot {
            op,
            dst,
            src,
            aux: 0,
            off,
            imm,
        }
    }
}

fn alu_op(width: Width, op: AluOp, reg: bool) -> Op {
    use Op::*;
    let ops = match op {
        AluOp::Add => [Add64Imm, Add64Reg, Add32Imm, Add32Reg],
        AluOp::Sub => [Sub64Imm, Sub64Reg, Sub32Imm, Sub32Reg],
        AluOp::Mul => [Mul64Imm, Mul64Reg, Mul32Imm, Mul32Reg],
        AluOp::Div => [Div64Imm, Div64Reg, Div32Imm, Div32Reg],
        AluOp::SDiv => [SDiv64Imm, SDiv64Reg, SDiv32Imm, SDiv32Reg],
        AluOp::Mod => [Mod64Imm, Mod64Reg, Mod32Imm, Mod32Reg],
        AluOp::SMod => [SMod64Imm, SMod64Reg, SMod32Imm, SMod32Reg],
        AluOp::Or => [Or64Imm, Or64Reg, Or32Imm, Or32Reg],
        AluOp::And => [And64Imm, And64Reg, And32Imm, And32Reg],
        AluOp::Xor => [Xor64Imm, Xor64Reg, Xor32Imm, Xor32Reg],
        AluOp::Lsh => [Lsh64Imm, Lsh64Reg, Lsh32Imm, Lsh32Reg],
        AluOp::Rsh => [Rsh64Imm, Rsh64Reg, Rsh32Imm, Rsh32Reg],
        AluOp::Arsh => [Arsh64Imm, Arsh64Reg, Arsh32Imm, Arsh32Reg],
        AluOp::Mov => [Mov64Imm, Mov64Reg, Mov32Imm, Mov32Reg],
    };
    ops[usize::from(width == Width::W32) * 2 + usize::from(reg)]
}

fn jump_op(width: Width, cond: Cond, reg: bool) -> Op {
    use Op::*;
    let ops = match cond {
        Cond::Eq => [Jeq64Imm, Jeq64Reg, Jeq32Imm, Jeq32Reg],
        Cond::Ne => [Jne64Imm, Jne64Reg, Jne32Imm, Jne32Reg],
        Cond::Gt => [Jgt64Imm, Jgt64Reg, Jgt32Imm, Jgt32Reg],
        Cond::Ge => [Jge64Imm, Jge64Reg, Jge32Imm, Jge32Reg],
        Cond::Lt => [Jlt64Imm, Jlt64Reg, Jlt32Imm, Jlt32Reg],
        Cond::Le => [Jle64Imm, Jle64Reg, Jle32Imm, Jle32Reg],
        Cond::Set => [Jset64Imm, Jset64Reg, Jset32Imm, Jset32Reg],
        Cond::Sgt => [Jsgt64Imm, Jsgt64Reg, Jsgt32Imm, Jsgt32Reg],
        Cond::Sge => [Jsge64Imm, Jsge64Reg, Jsge32Imm, Jsge32Reg],
        Cond::Slt => [Jslt64Imm, Jslt64Reg, Jslt32Imm, Jslt32Reg],
        Cond::Sle => [Jsle64Imm, Jsle64Reg, Jsle32Imm, Jsle32Reg],
    };
    ops[usize::from(width == Width::W32) * 2 + usize::from(reg)]
}

const ALU_OPS: [AluOp; 14] = [
    AluOp::Add,
    AluOp::Sub,
    AluOp::Mul,
    AluOp::Div,
    AluOp::SDiv,
    AluOp::Mod,
    AluOp::SMod,
    AluOp::Or,
    AluOp::And,
    AluOp::Xor,
    AluOp::Lsh,
    AluOp::Rsh,
    AluOp::Arsh,
    AluOp::Mov,
];

const CONDS: [Cond; 11] = [
    Cond::Eq,
    Cond::Ne,
    Cond::Gt,
    Cond::Ge,
    Cond::Lt,
    Cond::Le,
    Cond::Set,
    Cond::Sgt,
    Cond::Sge,
    Cond::Slt,
    Cond::Sle,
];

/// The (operation, width, register operand) an ALU op was made from, if it is one.
pub(crate) fn alu_parts(op: Op) -> Option<(AluOp, Width, bool)> {
    ALU_OPS.into_iter().find_map(|a| {
        [Width::W64, Width::W32]
            .into_iter()
            .flat_map(|w| [(w, false), (w, true)])
            .find(|&(w, reg)| alu_op(w, a, reg) == op)
            .map(|(w, reg)| (a, w, reg))
    })
}

/// The (condition, width, register operand) a conditional jump was made from, if it is one.
pub(crate) fn jump_parts(op: Op) -> Option<(Cond, Width, bool)> {
    CONDS.into_iter().find_map(|c| {
        [Width::W64, Width::W32]
            .into_iter()
            .flat_map(|w| [(w, false), (w, true)])
            .find(|&(w, reg)| jump_op(w, c, reg) == op)
            .map(|(w, reg)| (c, w, reg))
    })
}

fn sized(size: Size, ops: [Op; 4]) -> Op {
    ops[match size {
        Size::B => 0,
        Size::H => 1,
        Size::W => 2,
        Size::DW => 3,
    }]
}

/// `(op, src register, immediate)` of an operand.
fn operand(src: Operand) -> (bool, u8, u64) {
    match src {
        Operand::Reg(r) => (true, r, 0),
        Operand::Imm(i) => (false, 0, i as i64 as u64),
    }
}

/// Compiles verified code (one [`Insn`] per slot, as [`crate::verifier::verify`] returns it).
/// `fast == false` compiles every slot to [`Op::Slow`]: the reference interpreter, for tests.
pub(crate) fn compile(code: &[Insn], fast: bool) -> Vec<Slot> {
    let mut slots = translate(code, fast);
    if fast {
        fuse(code, &mut slots);
    }
    slots
}

/// Slots something can reach other than by falling through: jump and call targets, return
/// addresses.
fn entered(code: &[Insn]) -> Vec<bool> {
    let mut e = vec![false; code.len() + 1];
    e[0] = true;
    for (pc, i) in code.iter().enumerate() {
        let t = match *i {
            Insn::Ja { off } => pc as i64 + 1 + i64::from(off),
            Insn::Jump { off, .. } | Insn::MayGoto { off } => pc as i64 + 1 + i64::from(off),
            Insn::CallLocal { off } => {
                e[pc + 1] = true;
                pc as i64 + 1 + i64::from(off)
            }
            _ => continue,
        };
        if let Some(x) = usize::try_from(t).ok().and_then(|t| e.get_mut(t)) {
            *x = true;
        }
    }
    e
}

/// Replaces common sequences of two or three ops by one (superinstructions), where nothing
/// jumps into the middle of the sequence. The slots after the first stay as they were.
fn fuse(code: &[Insn], slots: &mut [Slot]) {
    let entered = entered(code);
    for pc in 0..slots.len() {
        let a = slots[pc];
        let free = |k: usize| (1..k).all(|i| pc + i < slots.len() && !entered[pc + i]);
        let b = slots.get(pc + 1).copied();
        let c = slots.get(pc + 2).copied();
        let fused = match (a.op, b, c) {
            (Op::Mov64Reg, Some(b), Some(c))
                if b.op == Op::Add64Imm
                    && b.dst == a.dst
                    && c.op == Op::Jgt64Reg
                    && c.dst == a.dst
                    && free(3) =>
            {
                Some(Slot {
                    op: Op::MovAddJgt,
                    aux: c.src,
                    off: c.off,
                    imm: b.imm,
                    ..a
                })
            }
            (Op::Mov64Reg, Some(b), _) if b.dst == a.dst && free(2) => {
                let op = match b.op {
                    Op::Add64Imm => Some(Op::MovAdd),
                    Op::Rsh64Imm => Some(Op::MovRsh),
                    Op::Lsh64Imm => Some(Op::MovLsh),
                    Op::And64Imm => Some(Op::MovAnd),
                    _ => None,
                };
                op.map(|op| Slot {
                    op,
                    imm: b.imm,
                    ..a
                })
            }
            (Op::Add64Imm, Some(b), _) if b.op == Op::Jgt64Reg && b.dst == a.dst && free(2) => {
                Some(Slot {
                    op: Op::AddJgt,
                    aux: b.src,
                    off: b.off,
                    ..a
                })
            }
            (Op::Ldx1 | Op::Ldx2 | Op::Ldx4, Some(b), _)
                if matches!(b.op, Op::Jne64Imm | Op::Jeq64Imm) && b.dst == a.dst && free(2) =>
            {
                let ne = b.op == Op::Jne64Imm;
                let op = match (a.op, ne) {
                    (Op::Ldx1, true) => Op::Ldx1Jne,
                    (Op::Ldx2, true) => Op::Ldx2Jne,
                    (Op::Ldx4, true) => Op::Ldx4Jne,
                    (Op::Ldx1, false) => Op::Ldx1Jeq,
                    (Op::Ldx2, false) => Op::Ldx2Jeq,
                    _ => Op::Ldx4Jeq,
                };
                // A zero-extended load never equals an immediate outside 0..2^32 after
                // sign extension; those keep the two ops.
                (b.imm <= u64::from(u32::MAX)).then_some(Slot {
                    op,
                    imm: (u64::from(b.off as u32) << 32) | b.imm,
                    ..a
                })
            }
            _ => None,
        };
        if let Some(f) = fused {
            slots[pc] = f;
        }
    }
}

/// One slot per instruction, unfused (what the JIT compiles).
pub(crate) fn translate(code: &[Insn], fast: bool) -> Vec<Slot> {
    let ctx = if fast {
        ctx_registers(code)
    } else {
        Vec::new()
    };
    code.iter()
        .enumerate()
        .map(|(pc, &insn)| {
            if !fast {
                return Slot::new(Op::Slow, 0, 0, 0, 0);
            }
            let target = |off: i64| (pc as i64 + 1 + off) as i32;
            match insn {
                Insn::Alu {
                    width,
                    op,
                    dst,
                    src,
                } => {
                    let (reg, src, imm) = operand(src);
                    Slot::new(alu_op(width, op, reg), dst, src, 0, imm)
                }
                Insn::Neg { width, dst } => {
                    let op = if width == Width::W64 {
                        Op::Neg64
                    } else {
                        Op::Neg32
                    };
                    Slot::new(op, dst, 0, 0, 0)
                }
                Insn::Endian { op, dst, bits } => {
                    let op = match (op, bits) {
                        (EndianOp::ToLe, 16) => Op::Zext16,
                        (EndianOp::ToLe, 32) => Op::Zext32,
                        (EndianOp::ToLe, _) => Op::Nop,
                        (_, 16) => Op::Swap16,
                        (_, 32) => Op::Swap32,
                        (_, _) => Op::Swap64,
                    };
                    Slot::new(op, dst, 0, 0, 0)
                }
                Insn::Load {
                    size,
                    dst,
                    src,
                    off,
                } => {
                    let op = match (size, off) {
                        (Size::W, 0 | 4 | 8 | 12 | 16)
                            if ctx.get(pc).is_some_and(|m| m & (1 << src) != 0) =>
                        {
                            match off {
                                0 => Op::CtxData,
                                4 => Op::CtxDataEnd,
                                8 => Op::CtxDataMeta,
                                12 => Op::CtxIfindex,
                                _ => Op::CtxRxQueue,
                            }
                        }
                        _ => sized(size, [Op::Ldx1, Op::Ldx2, Op::Ldx4, Op::Ldx8]),
                    };
                    Slot::new(op, dst, src, i32::from(off), 0)
                }
                Insn::Store {
                    size,
                    dst,
                    off,
                    value,
                } => {
                    let (reg, src, imm) = operand(value);
                    let ops = if reg {
                        [Op::Stx1, Op::Stx2, Op::Stx4, Op::Stx8]
                    } else {
                        [Op::St1, Op::St2, Op::St4, Op::St8]
                    };
                    Slot::new(sized(size, ops), dst, src, i32::from(off), imm)
                }
                Insn::LoadImm64 { dst, value } => {
                    let v = match value {
                        Imm64::Value(v) => v,
                        Imm64::Map(m) => ptr(KIND_MAP, u64::from(m), 0),
                        Imm64::MapValue { map, offset } => {
                            ptr(KIND_VALUE, u64::from(map) << SLOT_BITS, u64::from(offset))
                        }
                    };
                    Slot::new(Op::LoadImm64, dst, 0, 0, v)
                }
                Insn::Ja { off } => Slot::new(Op::Ja, 0, 0, target(i64::from(off)), 0),
                Insn::Jump {
                    width,
                    cond,
                    dst,
                    src,
                    off,
                } => {
                    let (reg, src, imm) = operand(src);
                    Slot::new(
                        jump_op(width, cond, reg),
                        dst,
                        src,
                        target(i64::from(off)),
                        imm,
                    )
                }
                Insn::Call { id } => Slot::new(Op::Call, 0, 0, 0, id as i64 as u64),
                Insn::CallLocal { off } => {
                    Slot::new(Op::CallLocal, 0, 0, target(i64::from(off)), 0)
                }
                Insn::Exit => Slot::new(Op::Exit, 0, 0, 0, 0),
                Insn::MovSx { .. }
                | Insn::LoadSx { .. }
                | Insn::Atomic { .. }
                | Insn::LoadImm64Tail
                | Insn::LegacyPacketLoad { .. }
                | Insn::MayGoto { .. }
                | Insn::CallKfunc { .. } => Slot::new(Op::Slow, 0, 0, 0, 0),
            }
        })
        .collect()
}

/// For each slot, the set (bit `r`) of registers that hold the context pointer on every path
/// reaching it. Function entries other than the program's start get the empty set: the pass
/// does not follow the context into subprograms.
fn ctx_registers(code: &[Insn]) -> Vec<u16> {
    const UNVISITED: u16 = u16::MAX;
    let mut state = vec![UNVISITED; code.len()];
    if code.is_empty() {
        return state;
    }
    let mut work = vec![0usize];
    state[0] = 1 << 1;
    for (pc, i) in code.iter().enumerate() {
        if let Insn::CallLocal { off } = *i {
            let t = pc as i64 + 1 + i64::from(off);
            if let Some(s) = usize::try_from(t).ok().and_then(|t| state.get_mut(t)) {
                *s = 0;
                work.push(t as usize);
            }
        }
    }
    // Sets only shrink (meet = intersection), so this ends; each slot is revisited at most
    // once per register it loses.
    while let Some(pc) = work.pop() {
        let Some(&insn) = code.get(pc) else { continue };
        let out = transfer(insn, state[pc]);
        let mut flow = |t: i64, work: &mut Vec<usize>| {
            let Some(t) = usize::try_from(t).ok().filter(|&t| t < code.len()) else {
                return;
            };
            let new = if state[t] == UNVISITED {
                out
            } else {
                state[t] & out
            };
            if new != state[t] {
                state[t] = new;
                work.push(t);
            }
        };
        let next = pc as i64 + 1;
        match insn {
            Insn::Exit => {}
            Insn::Ja { off } => flow(next + i64::from(off), &mut work),
            Insn::Jump { off, .. } | Insn::MayGoto { off } => {
                flow(next, &mut work);
                flow(next + i64::from(off), &mut work);
            }
            Insn::LoadImm64 { .. } => flow(next + 1, &mut work),
            _ => flow(next, &mut work),
        }
    }
    state
        .into_iter()
        .map(|s| if s == UNVISITED { 0 } else { s })
        .collect()
}

/// The context registers after `insn`, given those before.
fn transfer(insn: Insn, mut set: u16) -> u16 {
    let clear = |set: u16, r: u8| set & !(1u16 << (r & 15));
    match insn {
        Insn::Alu {
            width: Width::W64,
            op: AluOp::Mov,
            dst,
            src: Operand::Reg(s),
        } => {
            if set & (1 << (s & 15)) != 0 {
                set | (1 << (dst & 15))
            } else {
                clear(set, dst)
            }
        }
        Insn::Alu { dst, .. }
        | Insn::Neg { dst, .. }
        | Insn::MovSx { dst, .. }
        | Insn::Endian { dst, .. }
        | Insn::Load { dst, .. }
        | Insn::LoadSx { dst, .. }
        | Insn::LoadImm64 { dst, .. } => clear(set, dst),
        Insn::Atomic { dst, src, .. } => {
            // Conservative: whatever an atomic may write (r0, src, dst for load-acquire).
            set = clear(set, 0);
            set = clear(set, src);
            clear(set, dst)
        }
        // Helpers and subprograms clobber r0..r5 (subprograms restore r6..r9).
        Insn::Call { .. } | Insn::CallLocal { .. } | Insn::CallKfunc { .. } => set & !0x3f,
        _ => set,
    }
}
