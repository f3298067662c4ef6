//! The load-time check.
//!
//! This is not the kernel's path-exploring verifier: memory safety does not depend on it,
//! because the interpreter checks every access at run time (see [`crate::vm`]). What it
//! refuses, it refuses with the index of the offending instruction and the reason:
//!
//! - slots that do not decode (opcode, registers above r10, reserved fields, constant division
//!   by zero, constant shifts out of range, unsupported `lddw` pseudo sources);
//! - writes to the frame pointer r10;
//! - legacy packet loads (`LD_ABS`/`LD_IND`, not allowed in XDP programs) and kfunc calls;
//! - jumps outside their function or into the second slot of a `lddw`;
//! - calls to unknown helpers, BPF-to-BPF calls to a bad target, recursion and call chains
//!   deeper than [`MAX_CALL_FRAMES`];
//! - constant-offset stack accesses (through r10) outside `[-512, 0)`;
//! - `lddw` map references to maps the program does not have, direct value addresses into
//!   anything but an array map or past its value;
//! - functions whose last instruction is not `exit` or an unconditional jump.

use std::sync::Arc;

use thiserror::Error;

use crate::helpers;
use crate::insn::{self, DecodeError, Imm64, Insn, RawInsn};
use crate::maps::{Map, MapKind};

/// Largest program, in slots (the kernel's complexity limit for privileged programs).
pub const MAX_INSNS: usize = 1_000_000;
/// Stack bytes of one function frame.
pub const STACK_SIZE: usize = 512;
/// Deepest chain of BPF-to-BPF calls, counting the main function.
pub const MAX_CALL_FRAMES: usize = 8;
/// Most maps one program can reference (the kernel's `MAX_USED_MAPS`).
pub const MAX_MAPS: usize = 64;

/// Why a program was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum VerifyErrorKind {
    /// The slot does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The program has no instructions.
    #[error("empty program")]
    Empty,
    /// The program has more than [`MAX_INSNS`] slots.
    #[error("program too long ({0} instructions)")]
    TooLong(usize),
    /// An instruction writes r10.
    #[error("frame pointer r10 is read-only")]
    WriteToFramePointer,
    /// `LD_ABS` / `LD_IND`.
    #[error("legacy LD_ABS/LD_IND packet loads are not allowed in XDP programs")]
    LegacyPacketLoad,
    /// A kfunc call.
    #[error("kfunc calls are not supported (btf id {0})")]
    Kfunc(i32),
    /// A jump target outside the function (or the program).
    #[error("jump out of range to {0}")]
    JumpOutOfRange(i64),
    /// A jump or call to the second slot of a `lddw`.
    #[error("jump into the middle of lddw at {0}")]
    JumpIntoLddw(i64),
    /// A helper this runtime does not provide.
    #[error("unknown or unsupported helper {0}")]
    UnknownHelper(i32),
    /// A BPF-to-BPF call target outside the program or into a `lddw`.
    #[error("bad call target {0}")]
    BadCallTarget(i64),
    /// The call graph has a cycle.
    #[error("recursive call to function at {0}")]
    Recursion(usize),
    /// More than [`MAX_CALL_FRAMES`] nested functions.
    #[error("call chain deeper than {MAX_CALL_FRAMES} frames")]
    CallTooDeep,
    /// A stack access through r10 outside `[-512, 0)`.
    #[error("stack access at r10{off:+} of {size} bytes outside [-512, 0)")]
    StackOutOfBounds {
        /// Offset from r10.
        off: i16,
        /// Access size.
        size: usize,
    },
    /// `lddw` of a map the program was not given.
    #[error("lddw references map {0}, the program has {1}")]
    UnknownMap(u32, usize),
    /// `lddw` of a value address that is not inside an array map's value.
    #[error("direct value access to map {map} at offset {offset} not allowed")]
    BadMapValue {
        /// Map index.
        map: u32,
        /// Offset.
        offset: u32,
    },
    /// The last instruction of a function is neither `exit` nor `ja`.
    #[error("function ending at {0} falls through its last instruction")]
    FallsOff(usize),
    /// More maps than [`MAX_MAPS`].
    #[error("too many maps ({0})")]
    TooManyMaps(usize),
}

/// A refused program: the instruction index and the reason.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("instruction {pc}: {kind}")]
pub struct VerifyError {
    /// Index of the offending slot (0 for whole-program errors).
    pub pc: usize,
    /// Reason.
    pub kind: VerifyErrorKind,
}

fn err<T>(pc: usize, kind: VerifyErrorKind) -> Result<T, VerifyError> {
    Err(VerifyError { pc, kind })
}

/// Decodes and checks a program; returns one decoded [`Insn`] per slot (the second slot of a
/// `lddw` as [`Insn::LoadImm64Tail`]).
pub fn verify(prog: &[RawInsn], maps: &[Arc<Map>]) -> Result<Vec<Insn>, VerifyError> {
    use VerifyErrorKind as K;
    if prog.is_empty() {
        return err(0, K::Empty);
    }
    if prog.len() > MAX_INSNS {
        return err(0, K::TooLong(prog.len()));
    }
    if maps.len() > MAX_MAPS {
        return err(0, K::TooManyMaps(maps.len()));
    }
    let mut code = Vec::with_capacity(prog.len());
    let mut pc = 0;
    while pc < prog.len() {
        let i = insn::decode(prog, pc).map_err(|e| VerifyError {
            pc,
            kind: K::Decode(e),
        })?;
        code.push(i);
        if matches!(i, Insn::LoadImm64 { .. }) {
            code.push(Insn::LoadImm64Tail);
            pc += 1;
        }
        pc += 1;
    }
    let len = code.len() as i64;
    let target_ok = |t: i64| (0..len).contains(&t);

    let mut entries = vec![0usize];
    for (pc, i) in code.iter().enumerate() {
        check_one(pc, i, maps)?;
        if let Insn::CallLocal { off } = *i {
            let t = pc as i64 + 1 + i64::from(off);
            if !target_ok(t) || matches!(code[t as usize], Insn::LoadImm64Tail) {
                return err(pc, K::BadCallTarget(t));
            }
            entries.push(t as usize);
        }
    }
    entries.sort_unstable();
    entries.dedup();

    // Functions: [entries[k], entries[k + 1]).
    let func_of = |pc: usize| entries.partition_point(|&e| e <= pc) - 1;
    let mut calls: Vec<Vec<usize>> = vec![Vec::new(); entries.len()];
    for (k, &start) in entries.iter().enumerate() {
        let end = entries.get(k + 1).copied().unwrap_or(code.len());
        for pc in start..end {
            let target = match code[pc] {
                Insn::Ja { off } => Some(i64::from(off)),
                Insn::Jump { off, .. } | Insn::MayGoto { off } => Some(i64::from(off)),
                Insn::CallLocal { off } => {
                    let t = (pc as i64 + 1 + i64::from(off)) as usize;
                    calls[k].push(func_of(t));
                    None
                }
                _ => None,
            };
            if let Some(off) = target {
                let t = pc as i64 + 1 + off;
                if !(start as i64..end as i64).contains(&t) {
                    return err(pc, K::JumpOutOfRange(t));
                }
                if matches!(code[t as usize], Insn::LoadImm64Tail) {
                    return err(pc, K::JumpIntoLddw(t));
                }
            }
        }
        if !matches!(code[end - 1], Insn::Exit | Insn::Ja { .. }) {
            return err(end - 1, K::FallsOff(end - 1));
        }
    }

    // Call graph: no cycles, depth at most MAX_CALL_FRAMES.
    fn depth(
        f: usize,
        calls: &[Vec<usize>],
        entries: &[usize],
        state: &mut [u8],
        memo: &mut [usize],
    ) -> Result<usize, VerifyError> {
        match state[f] {
            2 => return Ok(memo[f]),
            1 => return err(entries[f], VerifyErrorKind::Recursion(entries[f])),
            _ => {}
        }
        state[f] = 1;
        let mut d = 0;
        for &c in &calls[f] {
            d = d.max(depth(c, calls, entries, state, memo)?);
        }
        state[f] = 2;
        memo[f] = d + 1;
        Ok(d + 1)
    }
    let mut state = vec![0u8; entries.len()];
    let mut memo = vec![0usize; entries.len()];
    if depth(0, &calls, &entries, &mut state, &mut memo)? > MAX_CALL_FRAMES {
        return err(0, K::CallTooDeep);
    }
    Ok(code)
}

fn check_one(pc: usize, i: &Insn, maps: &[Arc<Map>]) -> Result<(), VerifyError> {
    use VerifyErrorKind as K;
    let fp = insn::FRAME_POINTER;
    let stack = |base: u8, off: i16, size: usize| {
        if base == fp {
            let end = i32::from(off) + size as i32;
            if i32::from(off) < -(STACK_SIZE as i32) || end > 0 {
                return err(pc, K::StackOutOfBounds { off, size });
            }
        }
        Ok(())
    };
    let writes = match *i {
        Insn::Alu { dst, .. }
        | Insn::Neg { dst, .. }
        | Insn::MovSx { dst, .. }
        | Insn::Endian { dst, .. }
        | Insn::LoadImm64 { dst, .. } => Some(dst),
        Insn::Load {
            size,
            dst,
            src,
            off,
        }
        | Insn::LoadSx {
            size,
            dst,
            src,
            off,
        } => {
            stack(src, off, size.bytes())?;
            Some(dst)
        }
        Insn::Store { size, dst, off, .. } => {
            stack(dst, off, size.bytes())?;
            None
        }
        Insn::Atomic {
            size,
            op,
            fetch,
            dst,
            src,
            off,
        } => {
            if op == insn::AtomicOp::LoadAcquire {
                stack(src, off, size.bytes())?;
                Some(dst)
            } else {
                stack(dst, off, size.bytes())?;
                (fetch && op != insn::AtomicOp::CmpXchg).then_some(src)
            }
        }
        Insn::LegacyPacketLoad { .. } => return err(pc, K::LegacyPacketLoad),
        Insn::CallKfunc { id } => return err(pc, K::Kfunc(id)),
        Insn::Call { id } => {
            if !helpers::is_supported(id) {
                return err(pc, K::UnknownHelper(id));
            }
            None
        }
        _ => None,
    };
    if writes == Some(fp) {
        return err(pc, K::WriteToFramePointer);
    }
    if let Insn::LoadImm64 { value, .. } = *i {
        match value {
            Imm64::Value(_) => {}
            Imm64::Map(m) => {
                if m as usize >= maps.len() {
                    return err(pc, K::UnknownMap(m, maps.len()));
                }
            }
            Imm64::MapValue { map, offset } => {
                let Some(m) = maps.get(map as usize) else {
                    return err(pc, K::UnknownMap(map, maps.len()));
                };
                if m.def().kind != MapKind::Array || offset >= m.def().value_size {
                    return err(pc, K::BadMapValue { map, offset });
                }
            }
        }
    }
    Ok(())
}
