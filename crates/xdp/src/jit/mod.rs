//! A just-in-time compiler to x86-64 for the programs the interpreter runs.
//!
//! It works from the same compiled slots as the interpreter (immediates extended, jump
//! targets absolute, the context rewritten) and keeps the interpreter's memory model: BPF
//! registers hold the same tagged numbers ([`crate::vm`]), so pointers mean the same thing in
//! both and every access is checked.
//!
//! - BPF r0..r10 live in host registers (`rax rdi rsi rdx r9 r8 rbx r13 r14 r15 rbp`); `r12`
//!   points at the run's [`JitCtx`], `r10` holds the instruction count, `r11`/`rcx` are
//!   scratch.
//! - Packet loads and stores are checked inline against the packet's bounds and go straight
//!   to the buffer; accesses through r10 with a constant offset (checked in range at load)
//!   go straight to the stack. Anything else (map values, the context through an unknown
//!   register, derived stack pointers, any fault) and every rare instruction (helper calls,
//!   division, atomics, sign-extending moves) leaves the generated code for `jit_step`,
//!   which runs that one instruction in the reference interpreter on the spilled registers.
//! - The count is added per basic block and corrected where a run faults mid-block, and the
//!   budget is checked at backward jumps, exactly as the interpreter does: the two give the
//!   same [`crate::RunResult`], which the tests and the fuzz target check.
//!
//! BPF-to-BPF calls are native calls; the interpreter keeps the frames (depth, saved r6..r9,
//! a zeroed frame, r10) through `jit_step`. Programs with `may_goto` are not compiled; they
//! run in the interpreter.

mod x86;

use std::ffi::c_void;
use std::mem::offset_of;

use x86::{
    Alu, Mem, R8, R9, R10, R11, R12, R13, R14, R15, RAX, RBP, RBX, RCX, RDI, RDX, RSI, RSP, Reg,
    Shift, W, X86, cc, mem,
};

use crate::code::{self, Op, Slot};
use crate::insn::Insn;
use crate::insn::{AluOp, Cond, Width};
use crate::verifier::STACK_SIZE;
use crate::vm::{Fault, FaultKind, KIND_PKT, StepKind, Vm};

/// BPF register `i` lives in `BPF[i]`.
const BPF: [Reg; 11] = [RAX, RDI, RSI, RDX, R9, R8, RBX, R13, R14, R15, RBP];
const COUNT: Reg = R10;
const CTX: Reg = R12;

/// What a run of generated code shares with the code and with `jit_step`.
#[repr(C)]
pub(crate) struct JitCtx {
    /// The `Vm`'s register file: loaded at entry, spilled to and reloaded from around
    /// `jit_step`, r0 stored at exit.
    regs: *mut u64,
    count: u64,
    budget: u64,
    /// 0 = exit, 1 = fault (in `fault`), 2 = budget exhausted (at `pc`).
    status: u64,
    pc: u64,
    /// Tagged pointer of the packet's first accessible byte.
    pkt_base: u64,
    /// Per access size 1, 2, 4, 8: accesses at `o < limit` bytes past `pkt_base` fit.
    pkt_limit: [u64; 4],
    /// Host address of the packet's first accessible byte.
    pkt_host: u64,
    /// Host address of the stack minus the tag of stack pointers: r10 plus this is the host
    /// address of the current frame's top.
    stack_bias: u64,
    /// Lowest stack offset the generated code may have written.
    stack_lo: u64,
    /// `data`, `data_end`, `data_meta`, `ingress_ifindex`, `rx_queue_index`.
    ctx_fields: [u64; 5],
    vm: *mut c_void,
    fault: Option<Fault>,
    /// The native stack pointer after the prologue (faults in subprograms unwind to it).
    saved_rsp: u64,
    code: *const JitCode,
}

const STATUS_FAULT: u64 = 1;
const STATUS_BUDGET: u64 = 2;

fn off(field: usize) -> i32 {
    field as i32
}

/// Machine code of one program, mapped executable.
pub(crate) struct JitCode {
    ptr: *mut c_void,
    len: usize,
    /// Lowest frame offset a direct (r10-relative) store of the main function writes.
    stack_min: usize,
    /// The same for each subprogram: (entry slot, lowest offset), by entry.
    sub_stack_min: Vec<(usize, usize)>,
}

// SAFETY: the mapping is immutable (read + execute) after creation and owned by this value.
unsafe impl Send for JitCode {}
// SAFETY: as above; running it only reads the code.
unsafe impl Sync for JitCode {}

impl Drop for JitCode {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are the mapping made in `compile`, unmapped once.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

impl std::fmt::Debug for JitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JitCode({} bytes)", self.len)
    }
}

/// A jump or a branch to a stub, patched once all positions are known.
enum Fixup {
    /// To the code of slot `pc`.
    Slot(usize, usize),
    /// To the shared exit.
    Exit(usize),
}

/// Compiles a program, or `None` when it uses what the JIT leaves to the interpreter.
pub(crate) fn compile(code: &[Insn], slots: &[Slot]) -> Option<JitCode> {
    if code.len() != slots.len() || code.iter().any(|i| matches!(i, Insn::MayGoto { .. })) {
        return None;
    }
    let n = slots.len();
    let is_tail = |pc: usize| matches!(code[pc], Insn::LoadImm64Tail);
    // Basic blocks: their first slots, and per slot (instructions in its block, how many of
    // them run up to and including it).
    let mut leader = vec![false; n + 1];
    leader[0] = true;
    // Function entries (the main function at 0, then every call target).
    let mut entries = vec![0usize];
    for s in slots {
        if s.op == Op::CallLocal {
            entries.push(s.off as u32 as usize);
        }
    }
    entries.sort_unstable();
    entries.dedup();
    let func_of = |pc: usize| entries.partition_point(|&e| e <= pc) - 1;
    let mut func_min = vec![STACK_SIZE; entries.len()];
    let mut call_labels = vec![0usize; entries.len()];
    let mut calls: Vec<(usize, usize)> = Vec::new();
    for (pc, s) in slots.iter().enumerate() {
        let jump = is_jump(s.op);
        if jump && s.op != Op::Exit {
            leader[(s.off as u32 as usize).min(n)] = true;
        }
        if jump {
            leader[pc + 1] = true;
        }
    }
    let mut block_len = vec![0u32; n];
    let mut ordinal = vec![0u32; n];
    let mut pc = 0;
    while pc < n {
        let start = pc;
        let mut k = 0;
        loop {
            if !is_tail(pc) {
                k += 1;
                ordinal[pc] = k;
            }
            let end = is_jump(slots[pc].op);
            pc += 1;
            if end || pc >= n || leader[pc] {
                break;
            }
        }
        for l in &mut block_len[start..pc] {
            *l = k;
        }
    }

    let mut a = X86::default();
    let mut labels = vec![0usize; n];
    let mut fixups: Vec<Fixup> = Vec::new();
    // Cold code after the body: (patch site, pc, what).
    let mut cold: Vec<(usize, usize, Cold)> = Vec::new();

    // Prologue: callee-saved registers, 16-byte stack alignment for calls, registers in.
    for r in [RBP, RBX, R12, R13, R14, R15] {
        a.push(r);
    }
    a.alu_imm(W::B64, Alu::Sub, RSP, 8);
    a.mov(W::B64, CTX, RDI);
    load_regs(&mut a);

    a.store(8, mem(CTX, off(offset_of!(JitCtx, saved_rsp))), RSP);

    for pc in 0..n {
        let f = func_of(pc);
        if f > 0 && entries[f] == pc {
            // Entered by a native call: keep the stack 16-byte aligned for callouts.
            call_labels[f] = a.code.len();
            a.alu_imm(W::B64, Alu::Sub, RSP, 8);
        }
        labels[pc] = a.code.len();
        if is_tail(pc) {
            continue;
        }
        if leader[pc] && block_len[pc] > 0 {
            a.alu_imm(W::B64, Alu::Add, COUNT, block_len[pc] as i32);
        }
        let s = slots[pc];
        let (d, src) = (
            BPF[usize::from(s.dst).min(10)],
            BPF[usize::from(s.src).min(10)],
        );
        let imm = s.imm as i32;
        let target = s.off as u32 as usize;
        // Count correction if this slot faults: the block's later instructions did not run.
        let undo = block_len[pc] - ordinal[pc];
        use Op::*;
        if let Some((op, w, reg)) = code::alu_parts(s.op) {
            let w = if w == Width::W64 { W::B64 } else { W::B32 };
            let bits = if w == W::B64 { 63 } else { 31 };
            let basic = match op {
                AluOp::Add => Some(Alu::Add),
                AluOp::Sub => Some(Alu::Sub),
                AluOp::Or => Some(Alu::Or),
                AluOp::And => Some(Alu::And),
                AluOp::Xor => Some(Alu::Xor),
                _ => None,
            };
            let shift = match op {
                AluOp::Lsh => Some(Shift::Shl),
                AluOp::Rsh => Some(Shift::Shr),
                AluOp::Arsh => Some(Shift::Sar),
                _ => None,
            };
            if let Some(x) = basic {
                if reg {
                    a.alu(w, x, d, src);
                } else {
                    a.alu_imm(w, x, d, imm);
                }
            } else if let Some(sh) = shift {
                if reg {
                    a.mov(W::B64, RCX, src);
                    a.shift_cl(w, sh, d);
                } else {
                    a.shift_imm(w, sh, d, (s.imm & bits) as u8);
                }
            } else {
                match (op, reg) {
                    (AluOp::Mul, false) => a.imul_imm(w, d, imm),
                    (AluOp::Mul, true) => a.imul(w, d, src),
                    // 64-bit: the sign-extended immediate; 32-bit: its low half.
                    (AluOp::Mov, false) if w == W::B64 => a.mov_imm(w, d, s.imm),
                    (AluOp::Mov, false) => a.mov_imm(w, d, u64::from(s.imm as u32)),
                    (AluOp::Mov, true) => a.mov(w, d, src),
                    // The rest are the divisions, with the kernel's results for 0 and
                    // overflow.
                    _ => divide(&mut a, w, op, d, reg.then_some(src), s.imm),
                }
            }
            continue;
        }
        if let Some((cond, w, reg)) = code::jump_parts(s.op) {
            let w = if w == Width::W64 { W::B64 } else { W::B32 };
            let c = match (cond, reg) {
                (Cond::Set, false) => {
                    a.test_imm(w, d, imm);
                    cc::NE
                }
                (Cond::Set, true) => {
                    a.test(w, d, src);
                    cc::NE
                }
                (_, false) => {
                    a.alu_imm(w, Alu::Cmp, d, imm);
                    cond_code(cond)
                }
                (_, true) => {
                    a.alu(w, Alu::Cmp, d, src);
                    cond_code(cond)
                }
            };
            jump(&mut a, &mut fixups, &mut cold, pc, Some(c), target);
            continue;
        }
        match s.op {
            Neg64 => a.neg(W::B64, d),
            Neg32 => a.neg(W::B32, d),
            Zext16 => a.movzx16(d, d),
            Zext32 => a.mov(W::B32, d, d),
            Nop => {}
            Swap16 => {
                a.bswap(W::B32, d);
                a.shift_imm(W::B32, Shift::Shr, d, 16);
            }
            Swap32 => a.bswap(W::B32, d),
            Swap64 => a.bswap(W::B64, d),
            LoadImm64 => a.mov_imm(W::B64, d, s.imm),
            CtxData | CtxDataEnd | CtxDataMeta | CtxIfindex | CtxRxQueue => {
                let k = match s.op {
                    CtxData => 0,
                    CtxDataEnd => 1,
                    CtxDataMeta => 2,
                    CtxIfindex => 3,
                    _ => 4,
                };
                a.load(8, d, mem(CTX, off(offset_of!(JitCtx, ctx_fields)) + 8 * k));
            }
            Ldx1 | Ldx2 | Ldx4 | Ldx8 | St1 | St2 | St4 | St8 | Stx1 | Stx2 | Stx4 | Stx8 => {
                let (size, store) = access(s.op);
                let base = if store { s.dst } else { s.src };
                let value = src;
                let emit = |a: &mut X86, m: Mem| match (store, s.op) {
                    (false, _) => a.load(size, d, m),
                    (true, St1 | St2 | St4 | St8) => a.store_imm(size, m, imm),
                    (true, _) => a.store(size, m, value),
                };
                if base == 10 {
                    // r10 + off is checked in [-512, 0) at load: inside the current frame.
                    if store {
                        let o = (STACK_SIZE as i32 + s.off).max(0) as usize;
                        func_min[f] = func_min[f].min(o);
                    }
                    a.load(8, R11, mem(CTX, off(offset_of!(JitCtx, stack_bias))));
                    a.alu(W::B64, Alu::Add, R11, RBP);
                    emit(&mut a, mem(R11, s.off));
                } else {
                    let b = BPF[usize::from(base).min(10)];
                    a.lea(R11, mem(b, s.off));
                    a.alu_mem(
                        W::B64,
                        Alu::Sub,
                        R11,
                        mem(CTX, off(offset_of!(JitCtx, pkt_base))),
                    );
                    let li = size.trailing_zeros() as i32;
                    a.alu_mem(
                        W::B64,
                        Alu::Cmp,
                        R11,
                        mem(CTX, off(offset_of!(JitCtx, pkt_limit)) + 8 * li),
                    );
                    let j = a.jcc(cc::AE);
                    a.alu_mem(
                        W::B64,
                        Alu::Add,
                        R11,
                        mem(CTX, off(offset_of!(JitCtx, pkt_host))),
                    );
                    emit(&mut a, mem(R11, 0));
                    cold.push((
                        j,
                        pc,
                        Cold::Step {
                            undo,
                            back: a.code.len(),
                        },
                    ));
                }
            }
            Ja => jump(&mut a, &mut fixups, &mut cold, pc, None, target),
            Call | Slow => {
                callout(&mut a, pc);
                let j = a.jcc(cc::NE);
                cold.push((j, pc, Cold::Fault { undo }));
            }
            Exit if f == 0 => {
                let j = a.jmp();
                fixups.push(Fixup::Exit(j));
            }
            Exit => {
                // The interpreter pops the frame (r6..r9, r10, depth); back to the caller.
                callout(&mut a, pc);
                let j = a.jcc(cc::NE);
                cold.push((j, pc, Cold::Fault { undo }));
                a.alu_imm(W::B64, Alu::Add, RSP, 8);
                a.ret();
            }
            CallLocal => {
                // Like a backward jump, a call checks the budget; the interpreter pushes the
                // frame (depth, r6..r9, a zeroed frame, r10); then a native call.
                a.alu_mem(
                    W::B64,
                    Alu::Cmp,
                    COUNT,
                    mem(CTX, off(offset_of!(JitCtx, budget))),
                );
                let over = a.jcc(cc::A);
                cold.push((over, pc, Cold::Budget));
                callout(&mut a, pc);
                let j = a.jcc(cc::NE);
                cold.push((j, pc, Cold::Fault { undo }));
                let c = a.call_rel();
                calls.push((c, func_of(target)));
            }
            // Fused ops never reach here (built from unfused slots); calls refused above.
            _ => return None,
        }
    }
    // Falling off the end cannot happen (the verifier), but make it an exit.
    let fall = a.jmp();
    fixups.push(Fixup::Exit(fall));

    // Cold paths.
    let mut exit_jumps = Vec::new();
    for (site, pc, what) in cold {
        let here = a.code.len();
        a.patch(site, here);
        match what {
            Cold::Step { undo, back } => {
                callout(&mut a, pc);
                let j = a.jcc(cc::NE);
                let jb = a.jmp();
                a.patch(jb, back);
                let stub = a.code.len();
                a.patch(j, stub);
                if undo > 0 {
                    a.alu_imm(W::B64, Alu::Sub, COUNT, undo as i32);
                }
                exit_jumps.push(a.jmp());
            }
            Cold::Fault { undo } => {
                if undo > 0 {
                    a.alu_imm(W::B64, Alu::Sub, COUNT, undo as i32);
                }
                exit_jumps.push(a.jmp());
            }
            Cold::Budget => {
                a.store_imm(
                    8,
                    mem(CTX, off(offset_of!(JitCtx, status))),
                    STATUS_BUDGET as i32,
                );
                a.mov_imm(W::B64, R11, pc as u64);
                a.store(8, mem(CTX, off(offset_of!(JitCtx, pc))), R11);
                exit_jumps.push(a.jmp());
            }
        }
    }

    // Epilogue (also reached from inside subprograms: the saved stack pointer unwinds).
    let exit = a.code.len();
    a.load(8, RSP, mem(CTX, off(offset_of!(JitCtx, saved_rsp))));
    a.load(8, R11, mem(CTX, off(offset_of!(JitCtx, regs))));
    a.store(8, mem(R11, 0), RAX);
    a.store(8, mem(CTX, off(offset_of!(JitCtx, count))), COUNT);
    a.load(4, RAX, mem(CTX, off(offset_of!(JitCtx, status))));
    a.alu_imm(W::B64, Alu::Add, RSP, 8);
    for r in [R15, R14, R13, R12, RBX, RBP] {
        a.pop(r);
    }
    a.ret();

    for j in exit_jumps {
        a.patch(j, exit);
    }
    for (at, f) in calls {
        a.patch(at, call_labels[f]);
    }
    for f in fixups {
        match f {
            Fixup::Slot(at, t) => {
                let dest = labels.get(t).copied().unwrap_or(exit);
                a.patch(at, dest);
            }
            Fixup::Exit(at) => a.patch(at, exit),
        }
    }
    let sub_stack_min = entries
        .iter()
        .copied()
        .zip(func_min.iter().copied())
        .skip(1)
        .collect();
    map_executable(&a.code, func_min[0], sub_stack_min)
}

/// Out-of-line code for one slot.
enum Cold {
    /// The inline path did not apply: run the slot in the interpreter, go back to `back`.
    Step { undo: u32, back: usize },
    /// A callout reported a fault.
    Fault { undo: u32 },
    /// The budget ran out at a backward jump.
    Budget,
}

/// Whether `op` ends a basic block (jumps, calls to subprograms, exit).
fn is_jump(op: Op) -> bool {
    matches!(op, Op::Ja | Op::Exit | Op::CallLocal) || code::jump_parts(op).is_some()
}

/// `d = d op divisor` for the four divisions, without leaving the generated code: the
/// divisor goes to rcx and the dividend to r11 before rax and rdx (BPF r0 and r3), which
/// `div` needs, are saved on the native stack.
fn divide(a: &mut X86, w: W, op: AluOp, d: Reg, divisor: Option<Reg>, imm: u64) {
    let signed = matches!(op, AluOp::SDiv | AluOp::SMod);
    let modulo = matches!(op, AluOp::Mod | AluOp::SMod);
    match divisor {
        Some(r) => a.mov(w, RCX, r),
        None if w == W::B64 => a.mov_imm(W::B64, RCX, imm),
        None => a.mov_imm(W::B32, RCX, u64::from(imm as u32)),
    }
    a.mov(w, R11, d);
    a.test(w, RCX, RCX);
    let zero = a.jcc(cc::E);
    let minus_one = signed.then(|| {
        a.alu_imm(w, Alu::Cmp, RCX, -1);
        a.jcc(cc::E)
    });
    a.push(RAX);
    a.push(RDX);
    a.mov(w, RAX, R11);
    if signed {
        a.sign_extend_rax(w);
    } else {
        a.alu(W::B32, Alu::Xor, RDX, RDX);
    }
    a.div(w, RCX, signed);
    a.mov(w, R11, if modulo { RDX } else { RAX });
    a.pop(RDX);
    a.pop(RAX);
    a.mov(w, d, R11);
    let done = a.jmp();
    // By zero: the quotient is 0, the remainder the dividend (zero-extended for 32 bits).
    let here = a.code.len();
    a.patch(zero, here);
    if modulo {
        a.mov(w, d, d);
    } else {
        a.mov_imm(W::B32, d, 0);
    }
    let done2 = a.jmp();
    // Signed by -1: the quotient is the negation (wrapping at the minimum), the remainder 0.
    if let Some(m) = minus_one {
        let here = a.code.len();
        a.patch(m, here);
        if modulo {
            a.mov_imm(W::B32, d, 0);
        } else {
            a.neg(w, d);
        }
    }
    let end = a.code.len();
    a.patch(done, end);
    a.patch(done2, end);
}

/// A jump at `pc` (conditional when `cond` is given) to `target`; backward ones check the
/// budget first, when taken.
fn jump(
    a: &mut X86,
    fixups: &mut Vec<Fixup>,
    cold: &mut Vec<(usize, usize, Cold)>,
    pc: usize,
    cond: Option<u8>,
    target: usize,
) {
    if target > pc {
        let j = match cond {
            Some(c) => a.jcc(c),
            None => a.jmp(),
        };
        fixups.push(Fixup::Slot(j, target));
        return;
    }
    let skip = cond.map(|c| a.jcc(c ^ 1));
    a.alu_mem(
        W::B64,
        Alu::Cmp,
        COUNT,
        mem(CTX, off(offset_of!(JitCtx, budget))),
    );
    let over = a.jcc(cc::A);
    cold.push((over, pc, Cold::Budget));
    let j = a.jmp();
    fixups.push(Fixup::Slot(j, target));
    if let Some(s) = skip {
        let here = a.code.len();
        a.patch(s, here);
    }
}

/// Spills the registers, runs slot `pc` in the interpreter, reloads them; leaves the flags
/// of `test` on the status (non-zero: fault).
fn callout(a: &mut X86, pc: usize) {
    a.load(8, R11, mem(CTX, off(offset_of!(JitCtx, regs))));
    for (i, r) in BPF.iter().enumerate() {
        a.store(8, mem(R11, 8 * i as i32), *r);
    }
    a.store(8, mem(CTX, off(offset_of!(JitCtx, count))), COUNT);
    a.mov(W::B64, RDI, CTX);
    a.mov_imm(W::B64, RSI, pc as u64);
    a.mov_imm(W::B64, R11, jit_step as *const () as usize as u64);
    a.call(R11);
    a.mov(W::B32, RCX, RAX);
    load_regs(a);
    a.test(W::B32, RCX, RCX);
}

fn load_regs(a: &mut X86) {
    a.load(8, R11, mem(CTX, off(offset_of!(JitCtx, regs))));
    for (i, r) in BPF.iter().enumerate() {
        a.load(8, *r, mem(R11, 8 * i as i32));
    }
    a.load(8, COUNT, mem(CTX, off(offset_of!(JitCtx, count))));
}

/// The x86 condition of a BPF jump condition (`Set` is a `test`, handled apart).
fn cond_code(c: Cond) -> u8 {
    match c {
        Cond::Eq => cc::E,
        Cond::Ne | Cond::Set => cc::NE,
        Cond::Gt => cc::A,
        Cond::Ge => cc::AE,
        Cond::Lt => cc::B,
        Cond::Le => cc::BE,
        Cond::Sgt => cc::G,
        Cond::Sge => cc::GE,
        Cond::Slt => cc::L,
        Cond::Sle => cc::LE,
    }
}

/// (size, is a store) of a memory op.
fn access(op: Op) -> (usize, bool) {
    use Op::*;
    match op {
        Ldx1 => (1, false),
        Ldx2 => (2, false),
        Ldx4 => (4, false),
        Ldx8 => (8, false),
        St1 | Stx1 => (1, true),
        St2 | Stx2 => (2, true),
        St4 | Stx4 => (4, true),
        _ => (8, true),
    }
}

fn map_executable(
    code: &[u8],
    stack_min: usize,
    sub_stack_min: Vec<(usize, usize)>,
) -> Option<JitCode> {
    use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
    let len = code.len().next_multiple_of(4096).max(4096);
    // SAFETY: a fresh anonymous private mapping; nothing else refers to it.
    let ptr = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    }
    .ok()?;
    // SAFETY: `ptr` is `len >= code.len()` writable bytes just mapped.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), ptr.cast::<u8>(), code.len()) };
    let jit = JitCode {
        ptr,
        len,
        stack_min,
        sub_stack_min,
    };
    // SAFETY: the mapping made above; from now on it is read + execute, never writable.
    unsafe { rustix::mm::mprotect(ptr, len, MprotectFlags::READ | MprotectFlags::EXEC) }.ok()?;
    Some(jit)
}

/// Refreshes what the generated code reads of the buffer (helpers move the packet).
fn refresh(ctx: &mut JitCtx, vm: &mut Vm<'_>) {
    let (lo, end) = vm.packet_bounds();
    ctx.pkt_base = (KIND_PKT << 60) + lo as u64;
    for (i, n) in [1u64, 2, 4, 8].into_iter().enumerate() {
        ctx.pkt_limit[i] = ((end - lo) as u64 + 1).saturating_sub(n);
    }
    ctx.pkt_host = vm.packet_host(lo) as u64;
    ctx.ctx_fields = vm.ctx_fields();
}

/// Runs slot `pc` in the interpreter for the generated code.
extern "C" fn jit_step(ctx: *mut JitCtx, pc: u64) -> u32 {
    // SAFETY: `ctx` is the `JitCtx` of the run in `run`, alive and not otherwise borrowed
    // while the generated code runs; its `vm` points at that run's `Vm`, likewise.
    let ctx = unsafe { &mut *ctx };
    // SAFETY: as above.
    let vm = unsafe { &mut *ctx.vm.cast::<Vm<'_>>() };
    match vm.step_at(pc as usize) {
        Ok(StepKind::Helper) => {
            refresh(ctx, vm);
            0
        }
        Ok(StepKind::Enter(target)) => {
            // Direct stores of the callee are not tracked one by one: mark the part of the
            // new frame they can reach, so that the next entry at this depth clears it.
            // SAFETY: `code` is the `JitCode` running, alive for the whole run.
            let code = unsafe { &*ctx.code };
            if let Ok(i) = code
                .sub_stack_min
                .binary_search_by_key(&target, |&(e, _)| e)
            {
                vm.mark_frame_dirty(code.sub_stack_min[i].1);
            }
            0
        }
        Ok(StepKind::Other) => 0,
        Err(f) => {
            ctx.fault = Some(f);
            ctx.status = STATUS_FAULT;
            1
        }
    }
}

/// Runs the compiled program on `vm` (registers and frame 0 set up); returns r0 or the fault
/// and leaves the instruction count in `vm`.
pub(crate) fn run(code: &JitCode, vm: &mut Vm<'_>) -> Result<u64, Fault> {
    let mut ctx = JitCtx {
        regs: vm.regs_host(),
        count: 0,
        budget: vm.budget(),
        status: 0,
        pc: 0,
        pkt_base: 0,
        pkt_limit: [0; 4],
        pkt_host: 0,
        stack_bias: (vm.stack_host() as u64).wrapping_sub(crate::vm::KIND_STACK << 60),
        stack_lo: code.stack_min as u64,
        ctx_fields: [0; 5],
        vm: std::ptr::null_mut(),
        fault: None,
        saved_rsp: 0,
        code,
    };
    refresh(&mut ctx, vm);
    let vmp: *mut Vm<'_> = vm;
    ctx.vm = vmp.cast();
    // SAFETY: the mapping holds code generated by `compile` for the sysv64 ABI, taking the
    // context pointer; it touches memory only inside `ctx`, the packet bytes within the
    // bounds in `ctx` and the stack frame, and calls back only `jit_step`.
    let entry: extern "C" fn(*mut JitCtx) -> u32 = unsafe { std::mem::transmute(code.ptr) };
    let status = entry(&mut ctx);
    // SAFETY: the generated code has returned; `vmp` came from `vm` just above.
    let vm = unsafe { &mut *vmp };
    vm.finish_jit_run(ctx.count, ctx.stack_lo as usize);
    match u64::from(status) {
        0 => Ok(vm.regs[0]),
        STATUS_BUDGET => Err(Fault {
            pc: ctx.pc as usize,
            kind: FaultKind::Budget,
        }),
        _ => Err(ctx.fault.unwrap_or(Fault {
            pc: 0,
            kind: FaultKind::BadBuffer,
        })),
    }
}
