//! Just enough of an x86-64 encoder for the JIT: 64- and 32-bit register and memory forms of
//! the moves, arithmetic, shifts, byte swaps, compares and jumps it emits.
//!
//! Memory operands are always `[base + disp32]` or `[base + index + disp32]` (mod = 10), so
//! there is one encoding per form and none of the short-displacement special cases.

/// A general-purpose register by its 4-bit number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Reg(pub u8);

pub(super) const RAX: Reg = Reg(0);
pub(super) const RCX: Reg = Reg(1);
pub(super) const RDX: Reg = Reg(2);
pub(super) const RBX: Reg = Reg(3);
pub(super) const RSP: Reg = Reg(4);
pub(super) const RBP: Reg = Reg(5);
pub(super) const RSI: Reg = Reg(6);
pub(super) const RDI: Reg = Reg(7);
pub(super) const R8: Reg = Reg(8);
pub(super) const R9: Reg = Reg(9);
pub(super) const R10: Reg = Reg(10);
pub(super) const R11: Reg = Reg(11);
pub(super) const R12: Reg = Reg(12);
pub(super) const R13: Reg = Reg(13);
pub(super) const R14: Reg = Reg(14);
pub(super) const R15: Reg = Reg(15);

/// A memory operand `[base + index + disp]`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Mem {
    pub base: Reg,
    pub index: Option<Reg>,
    pub disp: i32,
}

/// `[base + disp]`.
pub(super) fn mem(base: Reg, disp: i32) -> Mem {
    Mem {
        base,
        index: None,
        disp,
    }
}

/// Operand size of an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum W {
    B8,
    B16,
    B32,
    B64,
}

/// Condition codes (the low nibble of `Jcc`).
pub(super) mod cc {
    pub const B: u8 = 0x2;
    pub const AE: u8 = 0x3;
    pub const E: u8 = 0x4;
    pub const NE: u8 = 0x5;
    pub const BE: u8 = 0x6;
    pub const A: u8 = 0x7;
    pub const L: u8 = 0xc;
    pub const GE: u8 = 0xd;
    pub const LE: u8 = 0xe;
    pub const G: u8 = 0xf;
}

/// Group-1 arithmetic: the `/digit` of `81` and the opcode of the `r/m, r` form.
#[derive(Clone, Copy, Debug)]
pub(super) enum Alu {
    Add = 0,
    Or = 1,
    And = 4,
    Sub = 5,
    Xor = 6,
    Cmp = 7,
}

/// Shift `/digit`s of `C1`/`D3`.
#[derive(Clone, Copy, Debug)]
pub(super) enum Shift {
    Shl = 4,
    Shr = 5,
    Sar = 7,
}

/// The code being assembled.
#[derive(Default)]
pub(super) struct X86 {
    pub code: Vec<u8>,
}

impl X86 {
    fn b(&mut self, x: u8) {
        self.code.push(x);
    }

    fn d32(&mut self, x: i32) {
        self.code.extend_from_slice(&x.to_le_bytes());
    }

    /// Prefixes for size `w` and the REX bits of `reg`, `index`, `base`; `byte_regs` forces a
    /// REX so that registers 4..7 mean spl..dil in byte forms.
    fn prefix(&mut self, w: W, reg: u8, index: u8, base: u8, byte_regs: bool) {
        if w == W::B16 {
            self.b(0x66);
        }
        let rex = 0x40
            | (u8::from(w == W::B64) << 3)
            | ((reg >> 3) & 1) << 2
            | ((index >> 3) & 1) << 1
            | ((base >> 3) & 1);
        if rex != 0x40 || byte_regs {
            self.b(rex);
        }
    }

    fn modrm_mem(&mut self, reg: u8, m: Mem) {
        match m.index {
            None if m.base.0 & 7 == 4 => {
                self.b(0x80 | (reg & 7) << 3 | 4);
                self.b(0x24);
            }
            None => self.b(0x80 | (reg & 7) << 3 | (m.base.0 & 7)),
            Some(i) => {
                self.b(0x80 | (reg & 7) << 3 | 4);
                self.b((i.0 & 7) << 3 | (m.base.0 & 7));
            }
        }
        self.d32(m.disp);
    }

    /// `op reg, rm` with both registers (`modrm.reg = reg`, `modrm.rm = rm`).
    fn rr(&mut self, w: W, op: &[u8], reg: u8, rm: u8) {
        self.prefix(w, reg, 0, rm, w == W::B8);
        self.code.extend_from_slice(op);
        self.b(0xc0 | (reg & 7) << 3 | (rm & 7));
    }

    /// `op reg, [mem]`.
    fn rm(&mut self, w: W, op: &[u8], reg: u8, m: Mem) {
        self.prefix(w, reg, m.index.map_or(0, |r| r.0), m.base.0, w == W::B8);
        self.code.extend_from_slice(op);
        self.modrm_mem(reg, m);
    }

    /// `mov dst, src`.
    pub fn mov(&mut self, w: W, dst: Reg, src: Reg) {
        self.rr(w, &[0x89], src.0, dst.0);
    }

    /// `mov dst, imm` (64-bit: sign-extended imm32 when it fits, else `movabs`).
    pub fn mov_imm(&mut self, w: W, dst: Reg, imm: u64) {
        if w == W::B64 && imm as i64 != i64::from(imm as i32) {
            self.prefix(W::B64, 0, 0, dst.0, false);
            self.b(0xb8 | (dst.0 & 7));
            self.code.extend_from_slice(&imm.to_le_bytes());
        } else if w == W::B64 {
            self.rr(W::B64, &[0xc7], 0, dst.0);
            self.d32(imm as i32);
        } else {
            self.prefix(W::B32, 0, 0, dst.0, false);
            self.b(0xb8 | (dst.0 & 7));
            self.d32(imm as u32 as i32);
        }
    }

    /// `dst = [m]`, zero-extended: `movzx` for 1 and 2 bytes, `mov` for 4 and 8.
    pub fn load(&mut self, size: usize, dst: Reg, m: Mem) {
        match size {
            1 => self.rm(W::B32, &[0x0f, 0xb6], dst.0, m),
            2 => self.rm(W::B32, &[0x0f, 0xb7], dst.0, m),
            4 => self.rm(W::B32, &[0x8b], dst.0, m),
            _ => self.rm(W::B64, &[0x8b], dst.0, m),
        }
    }

    /// `[m] = low size bytes of src`.
    pub fn store(&mut self, size: usize, m: Mem, src: Reg) {
        match size {
            1 => self.rm(W::B8, &[0x88], src.0, m),
            2 => self.rm(W::B16, &[0x89], src.0, m),
            4 => self.rm(W::B32, &[0x89], src.0, m),
            _ => self.rm(W::B64, &[0x89], src.0, m),
        }
    }

    /// `[m] = imm` (8 bytes: sign-extended imm32).
    pub fn store_imm(&mut self, size: usize, m: Mem, imm: i32) {
        match size {
            1 => {
                self.rm(W::B32, &[0xc6], 0, m);
                self.b(imm as u8);
            }
            2 => {
                self.rm(W::B16, &[0xc7], 0, m);
                self.code.extend_from_slice(&(imm as u16).to_le_bytes());
            }
            4 => {
                self.rm(W::B32, &[0xc7], 0, m);
                self.d32(imm);
            }
            _ => {
                self.rm(W::B64, &[0xc7], 0, m);
                self.d32(imm);
            }
        }
    }

    /// `lea dst, [m]`.
    pub fn lea(&mut self, dst: Reg, m: Mem) {
        self.rm(W::B64, &[0x8d], dst.0, m);
    }

    /// `op dst, src`.
    pub fn alu(&mut self, w: W, op: Alu, dst: Reg, src: Reg) {
        self.rr(w, &[(op as u8) << 3 | 1], src.0, dst.0);
    }

    /// `op dst, imm32` (sign-extended for 64 bits).
    pub fn alu_imm(&mut self, w: W, op: Alu, dst: Reg, imm: i32) {
        self.rr(w, &[0x81], op as u8, dst.0);
        self.d32(imm);
    }

    /// `op reg, [m]`.
    pub fn alu_mem(&mut self, w: W, op: Alu, reg: Reg, m: Mem) {
        self.rm(w, &[(op as u8) << 3 | 3], reg.0, m);
    }

    /// `test dst, src`.
    pub fn test(&mut self, w: W, dst: Reg, src: Reg) {
        self.rr(w, &[0x85], src.0, dst.0);
    }

    /// `test dst, imm32`.
    pub fn test_imm(&mut self, w: W, dst: Reg, imm: i32) {
        self.rr(w, &[0xf7], 0, dst.0);
        self.d32(imm);
    }

    /// `imul dst, src`.
    pub fn imul(&mut self, w: W, dst: Reg, src: Reg) {
        self.rr(w, &[0x0f, 0xaf], dst.0, src.0);
    }

    /// `imul dst, dst, imm32`.
    pub fn imul_imm(&mut self, w: W, dst: Reg, imm: i32) {
        self.rr(w, &[0x69], dst.0, dst.0);
        self.d32(imm);
    }

    /// `shift dst, imm8`.
    pub fn shift_imm(&mut self, w: W, op: Shift, dst: Reg, imm: u8) {
        self.rr(w, &[0xc1], op as u8, dst.0);
        self.b(imm);
    }

    /// `shift dst, cl`.
    pub fn shift_cl(&mut self, w: W, op: Shift, dst: Reg) {
        self.rr(w, &[0xd3], op as u8, dst.0);
    }

    /// `neg dst`.
    pub fn neg(&mut self, w: W, dst: Reg) {
        self.rr(w, &[0xf7], 3, dst.0);
    }

    /// `div r` (unsigned: `rdx:rax / r`) or, with `signed`, `idiv r`.
    pub fn div(&mut self, w: W, r: Reg, signed: bool) {
        self.rr(w, &[0xf7], if signed { 7 } else { 6 }, r.0);
    }

    /// `cqo` (64 bits) or `cdq` (32): sign-extends rax into rdx.
    pub fn sign_extend_rax(&mut self, w: W) {
        if w == W::B64 {
            self.b(0x48);
        }
        self.b(0x99);
    }

    /// `bswap dst` (32 or 64 bits).
    pub fn bswap(&mut self, w: W, dst: Reg) {
        self.prefix(w, 0, 0, dst.0, false);
        self.b(0x0f);
        self.b(0xc8 | (dst.0 & 7));
    }

    /// `movzx dst32, src16`.
    pub fn movzx16(&mut self, dst: Reg, src: Reg) {
        self.rr(W::B32, &[0x0f, 0xb7], dst.0, src.0);
    }

    /// `jcc rel32` to a position patched later; returns where the displacement is.
    pub fn jcc(&mut self, cond: u8) -> usize {
        self.b(0x0f);
        self.b(0x80 | cond);
        self.d32(0);
        self.code.len() - 4
    }

    /// `jmp rel32` to be patched; returns where the displacement is.
    pub fn jmp(&mut self) -> usize {
        self.b(0xe9);
        self.d32(0);
        self.code.len() - 4
    }

    /// `call rel32` to be patched; returns where the displacement is.
    pub fn call_rel(&mut self) -> usize {
        self.b(0xe8);
        self.d32(0);
        self.code.len() - 4
    }

    /// Points the rel32 at `at` to `target`.
    pub fn patch(&mut self, at: usize, target: usize) {
        let rel = target as i64 - (at as i64 + 4);
        self.code[at..at + 4].copy_from_slice(&(rel as i32).to_le_bytes());
    }

    /// `call reg`.
    pub fn call(&mut self, r: Reg) {
        self.prefix(W::B32, 0, 0, r.0, false);
        self.b(0xff);
        self.b(0xd0 | (r.0 & 7));
    }

    /// `push r`.
    pub fn push(&mut self, r: Reg) {
        self.prefix(W::B32, 0, 0, r.0, false);
        self.b(0x50 | (r.0 & 7));
    }

    /// `pop r`.
    pub fn pop(&mut self, r: Reg) {
        self.prefix(W::B32, 0, 0, r.0, false);
        self.b(0x58 | (r.0 & 7));
    }

    /// `ret`.
    pub fn ret(&mut self) {
        self.b(0xc3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(f: impl FnOnce(&mut X86)) -> Vec<u8> {
        let mut a = X86::default();
        f(&mut a);
        a.code
    }

    /// Encodings checked against the Intel SDM (and `llvm-mc --show-encoding`).
    #[test]
    fn encodings() {
        assert_eq!(enc(|a| a.mov(W::B64, RAX, RDI)), [0x48, 0x89, 0xf8]);
        assert_eq!(enc(|a| a.mov(W::B32, R9, R13)), [0x45, 0x89, 0xe9]);
        assert_eq!(
            enc(|a| a.mov_imm(W::B64, RAX, 0x1122_3344_5566_7788)),
            [0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]
        );
        assert_eq!(
            enc(|a| a.mov_imm(W::B64, R11, u64::MAX)),
            [0x49, 0xc7, 0xc3, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(enc(|a| a.mov_imm(W::B32, R8, 5)), [0x41, 0xb8, 5, 0, 0, 0]);
        // movzx eax, byte [r12 + 8]
        assert_eq!(
            enc(|a| a.load(1, RAX, mem(R12, 8))),
            [0x41, 0x0f, 0xb6, 0x84, 0x24, 8, 0, 0, 0]
        );
        // mov rbx, [r11 + rsi + 0]
        assert_eq!(
            enc(|a| a.load(
                8,
                RBX,
                Mem {
                    base: R11,
                    index: Some(RSI),
                    disp: 0
                }
            )),
            [0x49, 0x8b, 0x9c, 0x33, 0, 0, 0, 0]
        );
        // mov byte [r11 + 0], sil  (REX needed for sil)
        assert_eq!(
            enc(|a| a.store(1, mem(R11, 0), RSI)),
            [0x41, 0x88, 0xb3, 0, 0, 0, 0]
        );
        // mov word [rbp - 2], r9w
        assert_eq!(
            enc(|a| a.store(2, mem(RBP, -2), R9)),
            [0x66, 0x44, 0x89, 0x8d, 0xfe, 0xff, 0xff, 0xff]
        );
        // add rdi, -4 ; cmp r9d, 7
        assert_eq!(
            enc(|a| a.alu_imm(W::B64, Alu::Add, RDI, -4)),
            [0x48, 0x81, 0xc7, 0xfc, 0xff, 0xff, 0xff]
        );
        assert_eq!(
            enc(|a| a.alu_imm(W::B32, Alu::Cmp, R9, 7)),
            [0x41, 0x81, 0xf9, 7, 0, 0, 0]
        );
        // sub r11, [r12 + 160]
        assert_eq!(
            enc(|a| a.alu_mem(W::B64, Alu::Sub, R11, mem(R12, 160))),
            [0x4d, 0x2b, 0x9c, 0x24, 160, 0, 0, 0]
        );
        // imul r13, r14 ; shl rdx, cl ; sar eax, 3 ; bswap r15 ; neg esi
        assert_eq!(enc(|a| a.imul(W::B64, R13, R14)), [0x4d, 0x0f, 0xaf, 0xee]);
        assert_eq!(
            enc(|a| a.shift_cl(W::B64, Shift::Shl, RDX)),
            [0x48, 0xd3, 0xe2]
        );
        assert_eq!(
            enc(|a| a.shift_imm(W::B32, Shift::Sar, RAX, 3)),
            [0xc1, 0xf8, 3]
        );
        assert_eq!(enc(|a| a.bswap(W::B64, R15)), [0x49, 0x0f, 0xcf]);
        assert_eq!(enc(|a| a.neg(W::B32, RSI)), [0xf7, 0xde]);
        // div rcx ; idiv ecx ; cqo ; cdq
        assert_eq!(enc(|a| a.div(W::B64, RCX, false)), [0x48, 0xf7, 0xf1]);
        assert_eq!(enc(|a| a.div(W::B32, RCX, true)), [0xf7, 0xf9]);
        assert_eq!(enc(|a| a.sign_extend_rax(W::B64)), [0x48, 0x99]);
        assert_eq!(enc(|a| a.sign_extend_rax(W::B32)), [0x99]);
        // movzx ebx, bx ; test rdi, rsi ; call r11 ; push r12 ; pop rbx
        assert_eq!(enc(|a| a.movzx16(RBX, RBX)), [0x0f, 0xb7, 0xdb]);
        assert_eq!(enc(|a| a.test(W::B64, RDI, RSI)), [0x48, 0x85, 0xf7]);
        assert_eq!(enc(|a| a.call(R11)), [0x41, 0xff, 0xd3]);
        assert_eq!(enc(|a| a.push(R12)), [0x41, 0x54]);
        assert_eq!(enc(|a| a.pop(RBX)), [0x5b]);
        // mov qword [r11 + 0], -1 ; mov byte [rcx + 0], 0x7f
        assert_eq!(
            enc(|a| a.store_imm(8, mem(R11, 0), -1)),
            [0x49, 0xc7, 0x83, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(
            enc(|a| a.store_imm(1, mem(RCX, 0), 0x7f)),
            [0xc6, 0x81, 0, 0, 0, 0, 0x7f]
        );
        // lea r11, [rbp - 8]
        assert_eq!(
            enc(|a| a.lea(R11, mem(RBP, -8))),
            [0x4c, 0x8d, 0x9d, 0xf8, 0xff, 0xff, 0xff]
        );
    }
}
