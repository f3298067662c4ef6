//! A tiny assembler for hand-written programs (tests, examples, the fuzz target).
//!
//! ```
//! use xdp::asm::Asm;
//! use xdp::insn::alu;
//! let prog = Asm::new().mov64_imm(0, 1).alu64_imm(alu::ADD, 0, 1).exit().build();
//! assert_eq!(prog.len(), 3);
//! ```

use crate::insn::{RawInsn, alu, class, jmp, mode, pseudo, source};

/// Register numbers by name.
pub mod reg {
    /// Return value.
    pub const R0: u8 = 0;
    /// First argument (the context on entry).
    pub const R1: u8 = 1;
    /// Second argument.
    pub const R2: u8 = 2;
    /// Third argument.
    pub const R3: u8 = 3;
    /// Fourth argument.
    pub const R4: u8 = 4;
    /// Fifth argument.
    pub const R5: u8 = 5;
    /// Callee-saved.
    pub const R6: u8 = 6;
    /// Callee-saved.
    pub const R7: u8 = 7;
    /// Callee-saved.
    pub const R8: u8 = 8;
    /// Callee-saved.
    pub const R9: u8 = 9;
    /// Frame pointer.
    pub const R10: u8 = 10;
}

/// A program under construction.
#[derive(Clone, Debug, Default)]
pub struct Asm {
    insns: Vec<RawInsn>,
}

impl Asm {
    /// An empty program.
    pub fn new() -> Asm {
        Asm::default()
    }

    /// The instructions.
    pub fn build(self) -> Vec<RawInsn> {
        self.insns
    }

    /// Number of slots so far (the index of the next instruction).
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Whether nothing was emitted yet.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// Appends a raw instruction.
    pub fn raw(mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Asm {
        self.insns.push(RawInsn::new(code, dst, src, off, imm));
        self
    }

    /// `dst op= imm` (64-bit).
    pub fn alu64_imm(self, op: u8, dst: u8, imm: i32) -> Asm {
        self.raw(class::ALU64 | op | source::K, dst, 0, 0, imm)
    }

    /// `dst op= src` (64-bit).
    pub fn alu64_reg(self, op: u8, dst: u8, src: u8) -> Asm {
        self.raw(class::ALU64 | op | source::X, dst, src, 0, 0)
    }

    /// `wdst op= imm` (32-bit).
    pub fn alu32_imm(self, op: u8, dst: u8, imm: i32) -> Asm {
        self.raw(class::ALU | op | source::K, dst, 0, 0, imm)
    }

    /// `wdst op= wsrc` (32-bit).
    pub fn alu32_reg(self, op: u8, dst: u8, src: u8) -> Asm {
        self.raw(class::ALU | op | source::X, dst, src, 0, 0)
    }

    /// Signed division/remainder (`op` is `DIV` or `MOD`), register operand; `wide` picks 64-bit.
    pub fn sdivmod_reg(self, wide: bool, op: u8, dst: u8, src: u8) -> Asm {
        let c = if wide { class::ALU64 } else { class::ALU };
        self.raw(c | op | source::X, dst, src, 1, 0)
    }

    /// `dst = imm` (64-bit, sign-extended).
    pub fn mov64_imm(self, dst: u8, imm: i32) -> Asm {
        self.alu64_imm(alu::MOV, dst, imm)
    }

    /// `dst = src`.
    pub fn mov64_reg(self, dst: u8, src: u8) -> Asm {
        self.alu64_reg(alu::MOV, dst, src)
    }

    /// `dst = (sN)src` (`bits` 8/16/32), 64-bit or 32-bit result.
    pub fn movsx(self, wide: bool, dst: u8, src: u8, bits: i16) -> Asm {
        let c = if wide { class::ALU64 } else { class::ALU };
        self.raw(c | alu::MOV | source::X, dst, src, bits, 0)
    }

    /// Byte order: `be` (TO_BE) or `le` (TO_LE) on the ALU class.
    pub fn endian(self, to_be: bool, dst: u8, bits: i32) -> Asm {
        let s = if to_be { source::X } else { source::K };
        self.raw(class::ALU | alu::END | s, dst, 0, 0, bits)
    }

    /// Unconditional byte swap (`ALU64 | END`).
    pub fn bswap(self, dst: u8, bits: i32) -> Asm {
        self.raw(class::ALU64 | alu::END, dst, 0, 0, bits)
    }

    /// `dst = -dst` (64-bit).
    pub fn neg64(self, dst: u8) -> Asm {
        self.raw(class::ALU64 | alu::NEG, dst, 0, 0, 0)
    }

    /// `lddw dst, imm64`.
    pub fn lddw(self, dst: u8, v: u64) -> Asm {
        self.raw(
            class::LD | mode::IMM | crate::insn::size::DW,
            dst,
            0,
            0,
            v as u32 as i32,
        )
        .raw(0, 0, 0, 0, (v >> 32) as u32 as i32)
    }

    /// `lddw dst, map[index]` (pseudo map fd).
    pub fn ld_map(self, dst: u8, index: u32) -> Asm {
        self.raw(
            class::LD | mode::IMM | crate::insn::size::DW,
            dst,
            pseudo::MAP_FD,
            0,
            index as i32,
        )
        .raw(0, 0, 0, 0, 0)
    }

    /// `lddw dst, &map[index].value + offset` (pseudo map value).
    pub fn ld_map_value(self, dst: u8, index: u32, offset: u32) -> Asm {
        self.raw(
            class::LD | mode::IMM | crate::insn::size::DW,
            dst,
            pseudo::MAP_VALUE,
            0,
            index as i32,
        )
        .raw(0, 0, 0, 0, offset as i32)
    }

    /// `dst = *(size *)(src + off)`; `size` is one of [`crate::insn::size`].
    pub fn ldx(self, size: u8, dst: u8, src: u8, off: i16) -> Asm {
        self.raw(class::LDX | mode::MEM | size, dst, src, off, 0)
    }

    /// `dst = *(signed size *)(src + off)`.
    pub fn ldsx(self, size: u8, dst: u8, src: u8, off: i16) -> Asm {
        self.raw(class::LDX | mode::MEMSX | size, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = src`.
    pub fn stx(self, size: u8, dst: u8, src: u8, off: i16) -> Asm {
        self.raw(class::STX | mode::MEM | size, dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn st(self, size: u8, dst: u8, off: i16, imm: i32) -> Asm {
        self.raw(class::ST | mode::MEM | size, dst, 0, off, imm)
    }

    /// Atomic `op` (a [`crate::insn::atomic`] imm) on `*(size *)(dst + off)` with `src`.
    pub fn atomic(self, size: u8, op: i32, dst: u8, src: u8, off: i16) -> Asm {
        self.raw(class::STX | mode::ATOMIC | size, dst, src, off, op)
    }

    /// `if dst op imm goto +off` (64-bit).
    pub fn jmp_imm(self, op: u8, dst: u8, imm: i32, off: i16) -> Asm {
        self.raw(class::JMP | op | source::K, dst, 0, off, imm)
    }

    /// `if dst op src goto +off` (64-bit).
    pub fn jmp_reg(self, op: u8, dst: u8, src: u8, off: i16) -> Asm {
        self.raw(class::JMP | op | source::X, dst, src, off, 0)
    }

    /// `if wdst op imm goto +off` (32-bit).
    pub fn jmp32_imm(self, op: u8, dst: u8, imm: i32, off: i16) -> Asm {
        self.raw(class::JMP32 | op | source::K, dst, 0, off, imm)
    }

    /// `if wdst op wsrc goto +off` (32-bit).
    pub fn jmp32_reg(self, op: u8, dst: u8, src: u8, off: i16) -> Asm {
        self.raw(class::JMP32 | op | source::X, dst, src, off, 0)
    }

    /// `goto +off`.
    pub fn ja(self, off: i16) -> Asm {
        self.raw(class::JMP | jmp::JA, 0, 0, off, 0)
    }

    /// `gotol +imm` (JMP32 | JA, 32-bit offset).
    pub fn ja32(self, imm: i32) -> Asm {
        self.raw(class::JMP32 | jmp::JA, 0, 0, 0, imm)
    }

    /// `may_goto +off`.
    pub fn may_goto(self, off: i16) -> Asm {
        self.raw(class::JMP | jmp::JCOND, 0, 0, off, 0)
    }

    /// `call helper`.
    pub fn call(self, helper: i32) -> Asm {
        self.raw(class::JMP | jmp::CALL, 0, pseudo::CALL_HELPER, 0, helper)
    }

    /// BPF-to-BPF call of the function at `pc + 1 + off`.
    pub fn call_local(self, off: i32) -> Asm {
        self.raw(class::JMP | jmp::CALL, 0, pseudo::CALL_LOCAL, 0, off)
    }

    /// `exit`.
    pub fn exit(self) -> Asm {
        self.raw(class::JMP | jmp::EXIT, 0, 0, 0, 0)
    }

    /// `r0 = action; exit`.
    pub fn ret(self, action: u32) -> Asm {
        self.mov64_imm(0, action as i32).exit()
    }
}
