//! The eBPF instruction encoding and a total decoder.
//!
//! An instruction is 8 bytes, little-endian: `code` (u8), `dst` (low nibble) and `src` (high
//! nibble) registers, a signed 16-bit `off` and a signed 32-bit `imm`. `lddw` (load of a
//! 64-bit immediate) takes two slots; the second has `code == 0` and carries the high half of
//! the immediate in its `imm`.
//!
//! [`decode`] maps every byte pattern either to an [`Insn`] or to a [`DecodeError`]; it
//! checks, like the kernel, that fields an opcode does not use are zero, so that two
//! different encodings never mean the same thing.

use thiserror::Error;

/// Instruction classes (`code & 0x07`).
pub mod class {
    /// Non-standard loads (`lddw`, legacy packet loads).
    pub const LD: u8 = 0x00;
    /// Loads from memory into a register.
    pub const LDX: u8 = 0x01;
    /// Stores of an immediate.
    pub const ST: u8 = 0x02;
    /// Stores of a register, and atomics.
    pub const STX: u8 = 0x03;
    /// 32-bit arithmetic.
    pub const ALU: u8 = 0x04;
    /// 64-bit jumps, calls and exit.
    pub const JMP: u8 = 0x05;
    /// 32-bit jumps.
    pub const JMP32: u8 = 0x06;
    /// 64-bit arithmetic.
    pub const ALU64: u8 = 0x07;
}

/// Access sizes (`code & 0x18`) of load and store classes.
pub mod size {
    /// 4 bytes.
    pub const W: u8 = 0x00;
    /// 2 bytes.
    pub const H: u8 = 0x08;
    /// 1 byte.
    pub const B: u8 = 0x10;
    /// 8 bytes.
    pub const DW: u8 = 0x18;
}

/// Access modes (`code & 0xe0`) of load and store classes.
pub mod mode {
    /// Immediate (`lddw`).
    pub const IMM: u8 = 0x00;
    /// Legacy absolute packet load (socket filters only).
    pub const ABS: u8 = 0x20;
    /// Legacy indirect packet load (socket filters only).
    pub const IND: u8 = 0x40;
    /// Regular memory access.
    pub const MEM: u8 = 0x60;
    /// Sign-extending memory load.
    pub const MEMSX: u8 = 0x80;
    /// Atomic operation.
    pub const ATOMIC: u8 = 0xc0;
}

/// Operand source bit (`code & 0x08`) of ALU and jump classes.
pub mod source {
    /// The operand is `imm`.
    pub const K: u8 = 0x00;
    /// The operand is the `src` register.
    pub const X: u8 = 0x08;
}

/// ALU operations (`code & 0xf0`).
pub mod alu {
    /// `dst += src`
    pub const ADD: u8 = 0x00;
    /// `dst -= src`
    pub const SUB: u8 = 0x10;
    /// `dst *= src`
    pub const MUL: u8 = 0x20;
    /// `dst /= src` (signed with `off == 1`)
    pub const DIV: u8 = 0x30;
    /// `dst |= src`
    pub const OR: u8 = 0x40;
    /// `dst &= src`
    pub const AND: u8 = 0x50;
    /// `dst <<= src`
    pub const LSH: u8 = 0x60;
    /// `dst >>= src` (logical)
    pub const RSH: u8 = 0x70;
    /// `dst = -dst`
    pub const NEG: u8 = 0x80;
    /// `dst %= src` (signed with `off == 1`)
    pub const MOD: u8 = 0x90;
    /// `dst ^= src`
    pub const XOR: u8 = 0xa0;
    /// `dst = src` (sign-extending with `off` 8/16/32)
    pub const MOV: u8 = 0xb0;
    /// `dst >>= src` (arithmetic)
    pub const ARSH: u8 = 0xc0;
    /// Byte-order conversion / byte swap.
    pub const END: u8 = 0xd0;
}

/// Jump operations (`code & 0xf0`).
pub mod jmp {
    /// Unconditional jump.
    pub const JA: u8 = 0x00;
    /// `==`
    pub const JEQ: u8 = 0x10;
    /// unsigned `>`
    pub const JGT: u8 = 0x20;
    /// unsigned `>=`
    pub const JGE: u8 = 0x30;
    /// `dst & src != 0`
    pub const JSET: u8 = 0x40;
    /// `!=`
    pub const JNE: u8 = 0x50;
    /// signed `>`
    pub const JSGT: u8 = 0x60;
    /// signed `>=`
    pub const JSGE: u8 = 0x70;
    /// Call a helper or a BPF function.
    pub const CALL: u8 = 0x80;
    /// Return from the current function.
    pub const EXIT: u8 = 0x90;
    /// unsigned `<`
    pub const JLT: u8 = 0xa0;
    /// unsigned `<=`
    pub const JLE: u8 = 0xb0;
    /// signed `<`
    pub const JSLT: u8 = 0xc0;
    /// signed `<=`
    pub const JSLE: u8 = 0xd0;
    /// Conditional pseudo-jump (`may_goto` with `src == 0`).
    pub const JCOND: u8 = 0xe0;
}

/// `imm` values of `BPF_ATOMIC` instructions.
pub mod atomic {
    /// Fetch flag: the old value is returned in `src`.
    pub const FETCH: i32 = 0x01;
    /// Atomic add.
    pub const ADD: i32 = 0x00;
    /// Atomic or.
    pub const OR: i32 = 0x40;
    /// Atomic and.
    pub const AND: i32 = 0x50;
    /// Atomic xor.
    pub const XOR: i32 = 0xa0;
    /// Exchange (always fetches).
    pub const XCHG: i32 = 0xe0 | FETCH;
    /// Compare with `r0` and exchange (always fetches into `r0`).
    pub const CMPXCHG: i32 = 0xf0 | FETCH;
    /// Load-acquire.
    pub const LOAD_ACQ: i32 = 0x100;
    /// Store-release.
    pub const STORE_REL: i32 = 0x110;
}

/// `src` values of `lddw` (pseudo sources).
pub mod pseudo {
    /// Plain 64-bit immediate.
    pub const IMM: u8 = 0;
    /// `imm` is a map (file descriptor; in this crate the map's index).
    pub const MAP_FD: u8 = 1;
    /// `imm` is a map, the second slot's `imm` an offset into its value.
    pub const MAP_VALUE: u8 = 2;
    /// A BTF id (kernel variables): not supported.
    pub const BTF_ID: u8 = 3;
    /// Address of a BPF function: not supported.
    pub const FUNC: u8 = 4;
    /// `imm` is an index into the program's map array.
    pub const MAP_IDX: u8 = 5;
    /// Like [`MAP_VALUE`], by map index.
    pub const MAP_IDX_VALUE: u8 = 6;
    /// `src` of a call to a helper.
    pub const CALL_HELPER: u8 = 0;
    /// `src` of a BPF-to-BPF call (`imm` is the pc-relative target).
    pub const CALL_LOCAL: u8 = 1;
    /// `src` of a call to a kernel function: not supported.
    pub const CALL_KFUNC: u8 = 2;
}

/// Number of registers (`r0`..`r10`).
pub const NUM_REGS: u8 = 11;
/// The read-only frame pointer.
pub const FRAME_POINTER: u8 = 10;

/// One raw 8-byte instruction slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RawInsn {
    /// Opcode byte.
    pub code: u8,
    /// Destination register (4 bits in the encoding).
    pub dst: u8,
    /// Source register (4 bits in the encoding).
    pub src: u8,
    /// Signed offset.
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

impl RawInsn {
    /// Builds an instruction from its fields (registers are masked to 4 bits).
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Self {
            code,
            dst: dst & 0x0f,
            src: src & 0x0f,
            off,
            imm,
        }
    }

    /// Decodes the little-endian 8-byte form.
    pub fn from_bytes(b: [u8; 8]) -> Self {
        Self {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Encodes to the little-endian 8-byte form.
    pub fn to_bytes(self) -> [u8; 8] {
        let o = self.off.to_le_bytes();
        let i = self.imm.to_le_bytes();
        [
            self.code,
            (self.dst & 0x0f) | (self.src << 4),
            o[0],
            o[1],
            i[0],
            i[1],
            i[2],
            i[3],
        ]
    }

    /// Splits a byte string into instruction slots; `None` if its length is not a multiple of 8.
    pub fn parse_all(bytes: &[u8]) -> Option<Vec<RawInsn>> {
        if !bytes.len().is_multiple_of(8) {
            return None;
        }
        Some(
            bytes
                .chunks_exact(8)
                .map(|c| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(c);
                    RawInsn::from_bytes(a)
                })
                .collect(),
        )
    }

    /// The class (`code & 7`).
    pub const fn class(self) -> u8 {
        self.code & 0x07
    }
}

/// Width of an arithmetic or comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// 32 bits (`ALU`, `JMP32`): operands truncated, results zero-extended.
    W32,
    /// 64 bits (`ALU64`, `JMP`).
    W64,
}

/// A register or immediate operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// The value of a register.
    Reg(u8),
    /// The sign-extended immediate.
    Imm(i32),
}

/// Binary ALU operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AluOp {
    /// Addition.
    Add,
    /// Subtraction.
    Sub,
    /// Multiplication.
    Mul,
    /// Unsigned division (by zero gives 0).
    Div,
    /// Signed division (by zero gives 0).
    SDiv,
    /// Bitwise or.
    Or,
    /// Bitwise and.
    And,
    /// Left shift (amount masked to the width).
    Lsh,
    /// Logical right shift.
    Rsh,
    /// Unsigned remainder (by zero leaves `dst`).
    Mod,
    /// Signed remainder (by zero leaves `dst`).
    SMod,
    /// Exclusive or.
    Xor,
    /// Move.
    Mov,
    /// Arithmetic right shift.
    Arsh,
}

/// Byte-order operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndianOp {
    /// `BPF_TO_LE`: on this little-endian machine, truncation to the width.
    ToLe,
    /// `BPF_TO_BE`: byte swap of the low bits, zero-extended.
    ToBe,
    /// `BPF_ALU64 | BPF_END` (v4): unconditional byte swap.
    Swap,
}

/// Memory access sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// 1 byte.
    B,
    /// 2 bytes.
    H,
    /// 4 bytes.
    W,
    /// 8 bytes.
    DW,
}

impl Size {
    /// Size in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            Size::B => 1,
            Size::H => 2,
            Size::W => 4,
            Size::DW => 8,
        }
    }

    fn from_code(code: u8) -> Size {
        match code & 0x18 {
            size::W => Size::W,
            size::H => Size::H,
            size::B => Size::B,
            _ => Size::DW,
        }
    }
}

/// Atomic read-modify-write operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomicOp {
    /// `*p += src`
    Add,
    /// `*p |= src`
    Or,
    /// `*p &= src`
    And,
    /// `*p ^= src`
    Xor,
    /// `src = xchg(*p, src)`
    Xchg,
    /// `r0 = cmpxchg(*p, r0, src)`
    CmpXchg,
    /// `dst = load_acquire(*(src + off))`
    LoadAcquire,
    /// `store_release(*(dst + off), src)`
    StoreRelease,
}

/// Conditions of conditional jumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    /// `==`
    Eq,
    /// unsigned `>`
    Gt,
    /// unsigned `>=`
    Ge,
    /// `&` non-zero
    Set,
    /// `!=`
    Ne,
    /// signed `>`
    Sgt,
    /// signed `>=`
    Sge,
    /// unsigned `<`
    Lt,
    /// unsigned `<=`
    Le,
    /// signed `<`
    Slt,
    /// signed `<=`
    Sle,
}

/// What a `lddw` loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imm64 {
    /// A constant.
    Value(u64),
    /// A map pointer, by index into the program's map list (`MAP_FD` or `MAP_IDX`).
    Map(u32),
    /// A pointer into value 0 of an array map (`MAP_VALUE` or `MAP_IDX_VALUE`).
    MapValue {
        /// Index into the program's map list.
        map: u32,
        /// Byte offset into the value.
        offset: u32,
    },
}

/// A decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    /// Binary arithmetic `dst = dst op src`.
    Alu {
        /// Width.
        width: Width,
        /// Operation.
        op: AluOp,
        /// Destination.
        dst: u8,
        /// Second operand.
        src: Operand,
    },
    /// `dst = -dst`.
    Neg {
        /// Width.
        width: Width,
        /// Destination.
        dst: u8,
    },
    /// Sign-extending move of the low `bits` (8/16/32) of `src`.
    MovSx {
        /// Width of the result (32-bit results are zero-extended).
        width: Width,
        /// Destination.
        dst: u8,
        /// Source register.
        src: u8,
        /// Bits of `src` to sign-extend.
        bits: u8,
    },
    /// Byte-order conversion of the low `bits` (16/32/64) of `dst`.
    Endian {
        /// Operation.
        op: EndianOp,
        /// Register.
        dst: u8,
        /// Width.
        bits: u8,
    },
    /// `dst = *(size *)(src + off)`, zero-extended.
    Load {
        /// Access size.
        size: Size,
        /// Destination.
        dst: u8,
        /// Base register.
        src: u8,
        /// Offset.
        off: i16,
    },
    /// `dst = *(signed size *)(src + off)`, sign-extended.
    LoadSx {
        /// Access size (B, H or W).
        size: Size,
        /// Destination.
        dst: u8,
        /// Base register.
        src: u8,
        /// Offset.
        off: i16,
    },
    /// `*(size *)(dst + off) = value`.
    Store {
        /// Access size.
        size: Size,
        /// Base register.
        dst: u8,
        /// Offset.
        off: i16,
        /// Stored value (`Imm` for `BPF_ST`).
        value: Operand,
    },
    /// Atomic operation on `*(size *)(dst + off)` (or `src + off` for load-acquire).
    Atomic {
        /// Access size.
        size: Size,
        /// Operation.
        op: AtomicOp,
        /// Whether the old value is returned.
        fetch: bool,
        /// Base register (destination register for load-acquire).
        dst: u8,
        /// Value register (base register for load-acquire).
        src: u8,
        /// Offset.
        off: i16,
    },
    /// `lddw`: first slot of a two-slot load.
    LoadImm64 {
        /// Destination.
        dst: u8,
        /// What is loaded.
        value: Imm64,
    },
    /// Second slot of a `lddw`; never executed.
    LoadImm64Tail,
    /// Legacy packet load (`LD_ABS`/`LD_IND`): decoded, refused for XDP by the verifier.
    LegacyPacketLoad {
        /// Access size.
        size: Size,
        /// `Some(reg)` for `LD_IND`.
        index: Option<u8>,
        /// Offset.
        imm: i32,
    },
    /// Unconditional jump by `off` slots (`JA`, or `JMP32 | JA` with a 32-bit offset).
    Ja {
        /// Relative target (from the next instruction).
        off: i32,
    },
    /// Conditional jump.
    Jump {
        /// Width of the comparison.
        width: Width,
        /// Condition.
        cond: Cond,
        /// Left operand.
        dst: u8,
        /// Right operand.
        src: Operand,
        /// Relative target.
        off: i16,
    },
    /// `may_goto`: jumps once the loop allowance is spent.
    MayGoto {
        /// Relative target.
        off: i16,
    },
    /// Call of helper `id`.
    Call {
        /// Helper id.
        id: i32,
    },
    /// BPF-to-BPF call; the callee starts at `pc + 1 + off`.
    CallLocal {
        /// Relative target.
        off: i32,
    },
    /// Call of a kernel function (kfunc): decoded, refused by the verifier.
    CallKfunc {
        /// BTF id.
        id: i32,
    },
    /// Return.
    Exit,
}

/// Why a slot does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The opcode byte is not an instruction.
    #[error("invalid opcode {0:#04x}")]
    InvalidOpcode(u8),
    /// A register number above 10.
    #[error("invalid register r{0}")]
    InvalidRegister(u8),
    /// A field that this opcode does not use is not zero (or has a value it forbids).
    #[error("opcode {code:#04x}: reserved or invalid field `{field}`")]
    InvalidField {
        /// Opcode.
        code: u8,
        /// Field name.
        field: &'static str,
    },
    /// `lddw` is the last slot.
    #[error("lddw without its second slot")]
    TruncatedLddw,
    /// A `lddw` pseudo source this runtime does not support.
    #[error("lddw pseudo source {0} is not supported")]
    UnsupportedPseudo(u8),
    /// Division or remainder by the constant 0 (the kernel refuses it at load).
    #[error("division by zero constant")]
    DivByZero,
    /// Shift by a constant not below the width.
    #[error("invalid shift {0}")]
    InvalidShift(i32),
}

fn field(code: u8, ok: bool, field: &'static str) -> Result<(), DecodeError> {
    if ok {
        Ok(())
    } else {
        Err(DecodeError::InvalidField { code, field })
    }
}

/// Decodes the instruction at `pc`. For a `lddw` the caller must skip the next slot.
///
/// A slot that is the second half of a `lddw` decodes only through its first half; decoding
/// it on its own gives [`DecodeError::InvalidOpcode`] (code 0 is `lddw` with mode `IMM`,
/// size `W`, which is not an instruction).
pub fn decode(prog: &[RawInsn], pc: usize) -> Result<Insn, DecodeError> {
    let r = prog[pc];
    let code = r.code;
    if r.dst >= NUM_REGS {
        return Err(DecodeError::InvalidRegister(r.dst));
    }
    if r.src >= NUM_REGS && !matches!(r.class(), class::LD) {
        return Err(DecodeError::InvalidRegister(r.src));
    }
    match r.class() {
        class::ALU | class::ALU64 => decode_alu(r),
        class::JMP | class::JMP32 => decode_jmp(r),
        class::LD => decode_ld(prog, pc),
        class::LDX => {
            let size = Size::from_code(code);
            field(code, r.imm == 0, "imm")?;
            match code & 0xe0 {
                mode::MEM => Ok(Insn::Load {
                    size,
                    dst: r.dst,
                    src: r.src,
                    off: r.off,
                }),
                mode::MEMSX if size != Size::DW => Ok(Insn::LoadSx {
                    size,
                    dst: r.dst,
                    src: r.src,
                    off: r.off,
                }),
                _ => Err(DecodeError::InvalidOpcode(code)),
            }
        }
        class::ST => {
            if code & 0xe0 != mode::MEM {
                return Err(DecodeError::InvalidOpcode(code));
            }
            field(code, r.src == 0, "src")?;
            Ok(Insn::Store {
                size: Size::from_code(code),
                dst: r.dst,
                off: r.off,
                value: Operand::Imm(r.imm),
            })
        }
        _ => {
            // STX
            let size = Size::from_code(code);
            match code & 0xe0 {
                mode::MEM => {
                    field(code, r.imm == 0, "imm")?;
                    Ok(Insn::Store {
                        size,
                        dst: r.dst,
                        off: r.off,
                        value: Operand::Reg(r.src),
                    })
                }
                mode::ATOMIC => decode_atomic(r, size),
                _ => Err(DecodeError::InvalidOpcode(code)),
            }
        }
    }
}

fn decode_atomic(r: RawInsn, size: Size) -> Result<Insn, DecodeError> {
    let code = r.code;
    let (op, fetch) = match r.imm {
        atomic::LOAD_ACQ => (AtomicOp::LoadAcquire, true),
        atomic::STORE_REL => (AtomicOp::StoreRelease, false),
        atomic::XCHG => (AtomicOp::Xchg, true),
        atomic::CMPXCHG => (AtomicOp::CmpXchg, true),
        imm => {
            let fetch = imm & atomic::FETCH != 0;
            let op = match imm & !atomic::FETCH {
                atomic::ADD => AtomicOp::Add,
                atomic::OR => AtomicOp::Or,
                atomic::AND => AtomicOp::And,
                atomic::XOR => AtomicOp::Xor,
                _ => return Err(DecodeError::InvalidField { code, field: "imm" }),
            };
            (op, fetch)
        }
    };
    let rmw = !matches!(op, AtomicOp::LoadAcquire | AtomicOp::StoreRelease);
    if rmw && !matches!(size, Size::W | Size::DW) {
        return Err(DecodeError::InvalidOpcode(code));
    }
    Ok(Insn::Atomic {
        size,
        op,
        fetch,
        dst: r.dst,
        src: r.src,
        off: r.off,
    })
}

fn decode_alu(r: RawInsn) -> Result<Insn, DecodeError> {
    let code = r.code;
    let width = if r.class() == class::ALU64 {
        Width::W64
    } else {
        Width::W32
    };
    let bits = if width == Width::W64 { 64 } else { 32 };
    let is_x = code & source::X != 0;
    let operand = || {
        if is_x {
            field(code, r.imm == 0, "imm")?;
            Ok(Operand::Reg(r.src))
        } else {
            field(code, r.src == 0, "src")?;
            Ok(Operand::Imm(r.imm))
        }
    };
    let op = match code & 0xf0 {
        alu::NEG => {
            if is_x {
                return Err(DecodeError::InvalidOpcode(code));
            }
            field(code, r.src == 0 && r.off == 0 && r.imm == 0, "src/off/imm")?;
            return Ok(Insn::Neg { width, dst: r.dst });
        }
        alu::END => {
            field(code, r.src == 0 && r.off == 0, "src/off")?;
            field(code, matches!(r.imm, 16 | 32 | 64), "imm")?;
            let op = match (width, is_x) {
                (Width::W32, false) => EndianOp::ToLe,
                (Width::W32, true) => EndianOp::ToBe,
                (Width::W64, false) => EndianOp::Swap,
                (Width::W64, true) => return Err(DecodeError::InvalidOpcode(code)),
            };
            return Ok(Insn::Endian {
                op,
                dst: r.dst,
                bits: r.imm as u8,
            });
        }
        alu::MOV => {
            if r.off != 0 {
                operand()?;
                let ok = is_x && matches!((width, r.off), (_, 8 | 16) | (Width::W64, 32));
                field(code, ok, "off")?;
                return Ok(Insn::MovSx {
                    width,
                    dst: r.dst,
                    src: r.src,
                    bits: r.off as u8,
                });
            }
            AluOp::Mov
        }
        alu::DIV | alu::MOD => {
            field(code, r.off == 0 || r.off == 1, "off")?;
            if !is_x && r.imm == 0 {
                return Err(DecodeError::DivByZero);
            }
            match (code & 0xf0 == alu::DIV, r.off == 1) {
                (true, false) => AluOp::Div,
                (true, true) => AluOp::SDiv,
                (false, false) => AluOp::Mod,
                (false, true) => AluOp::SMod,
            }
        }
        op => {
            field(code, r.off == 0, "off")?;
            match op {
                alu::ADD => AluOp::Add,
                alu::SUB => AluOp::Sub,
                alu::MUL => AluOp::Mul,
                alu::OR => AluOp::Or,
                alu::AND => AluOp::And,
                alu::LSH | alu::RSH | alu::ARSH => {
                    if !is_x && !(0..bits).contains(&r.imm) {
                        return Err(DecodeError::InvalidShift(r.imm));
                    }
                    match op {
                        alu::LSH => AluOp::Lsh,
                        alu::RSH => AluOp::Rsh,
                        _ => AluOp::Arsh,
                    }
                }
                alu::XOR => AluOp::Xor,
                _ => return Err(DecodeError::InvalidOpcode(code)),
            }
        }
    };
    Ok(Insn::Alu {
        width,
        op,
        dst: r.dst,
        src: operand()?,
    })
}

fn decode_jmp(r: RawInsn) -> Result<Insn, DecodeError> {
    let code = r.code;
    let is32 = r.class() == class::JMP32;
    let is_x = code & source::X != 0;
    let op = code & 0xf0;
    match op {
        jmp::JA => {
            if is_x {
                return Err(DecodeError::InvalidOpcode(code));
            }
            field(code, r.dst == 0 && r.src == 0, "dst/src")?;
            if is32 {
                field(code, r.off == 0, "off")?;
                Ok(Insn::Ja { off: r.imm })
            } else {
                field(code, r.imm == 0, "imm")?;
                Ok(Insn::Ja {
                    off: i32::from(r.off),
                })
            }
        }
        jmp::CALL => {
            if is32 || is_x {
                return Err(DecodeError::InvalidOpcode(code));
            }
            field(code, r.dst == 0 && r.off == 0, "dst/off")?;
            match r.src {
                pseudo::CALL_HELPER => Ok(Insn::Call { id: r.imm }),
                pseudo::CALL_LOCAL => Ok(Insn::CallLocal { off: r.imm }),
                pseudo::CALL_KFUNC => Ok(Insn::CallKfunc { id: r.imm }),
                _ => Err(DecodeError::InvalidField { code, field: "src" }),
            }
        }
        jmp::EXIT => {
            if is32 || is_x {
                return Err(DecodeError::InvalidOpcode(code));
            }
            field(
                code,
                r.dst == 0 && r.src == 0 && r.off == 0 && r.imm == 0,
                "dst/src/off/imm",
            )?;
            Ok(Insn::Exit)
        }
        jmp::JCOND => {
            if is32 || is_x {
                return Err(DecodeError::InvalidOpcode(code));
            }
            field(code, r.dst == 0 && r.src == 0 && r.imm == 0, "dst/src/imm")?;
            Ok(Insn::MayGoto { off: r.off })
        }
        _ => {
            let cond = match op {
                jmp::JEQ => Cond::Eq,
                jmp::JGT => Cond::Gt,
                jmp::JGE => Cond::Ge,
                jmp::JSET => Cond::Set,
                jmp::JNE => Cond::Ne,
                jmp::JSGT => Cond::Sgt,
                jmp::JSGE => Cond::Sge,
                jmp::JLT => Cond::Lt,
                jmp::JLE => Cond::Le,
                jmp::JSLT => Cond::Slt,
                jmp::JSLE => Cond::Sle,
                _ => return Err(DecodeError::InvalidOpcode(code)),
            };
            let src = if is_x {
                field(code, r.imm == 0, "imm")?;
                Operand::Reg(r.src)
            } else {
                field(code, r.src == 0, "src")?;
                Operand::Imm(r.imm)
            };
            Ok(Insn::Jump {
                width: if is32 { Width::W32 } else { Width::W64 },
                cond,
                dst: r.dst,
                src,
                off: r.off,
            })
        }
    }
}

fn decode_ld(prog: &[RawInsn], pc: usize) -> Result<Insn, DecodeError> {
    let r = prog[pc];
    let code = r.code;
    let size = Size::from_code(code);
    match code & 0xe0 {
        mode::IMM if size == Size::DW => {
            field(code, r.off == 0, "off")?;
            let Some(&next) = prog.get(pc + 1) else {
                return Err(DecodeError::TruncatedLddw);
            };
            if next.code != 0 || next.dst != 0 || next.src != 0 || next.off != 0 {
                return Err(DecodeError::InvalidField {
                    code,
                    field: "second slot",
                });
            }
            let value = match r.src {
                pseudo::IMM => {
                    Imm64::Value(u64::from(r.imm as u32) | (u64::from(next.imm as u32) << 32))
                }
                pseudo::MAP_FD | pseudo::MAP_IDX => {
                    field(code, next.imm == 0, "second imm")?;
                    Imm64::Map(r.imm as u32)
                }
                pseudo::MAP_VALUE | pseudo::MAP_IDX_VALUE => Imm64::MapValue {
                    map: r.imm as u32,
                    offset: next.imm as u32,
                },
                s @ (pseudo::BTF_ID | pseudo::FUNC) => {
                    return Err(DecodeError::UnsupportedPseudo(s));
                }
                _ => return Err(DecodeError::InvalidField { code, field: "src" }),
            };
            Ok(Insn::LoadImm64 { dst: r.dst, value })
        }
        m @ (mode::ABS | mode::IND) if size != Size::DW => {
            field(code, r.off == 0 && r.dst == 0, "off/dst")?;
            let index = if m == mode::IND {
                if r.src >= NUM_REGS {
                    return Err(DecodeError::InvalidRegister(r.src));
                }
                Some(r.src)
            } else {
                field(code, r.src == 0, "src")?;
                None
            };
            Ok(Insn::LegacyPacketLoad {
                size,
                index,
                imm: r.imm,
            })
        }
        _ => Err(DecodeError::InvalidOpcode(code)),
    }
}
