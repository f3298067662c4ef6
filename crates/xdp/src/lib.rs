//! hvnet's own eBPF runtime for XDP programs.
//!
//! In ARCHITECTURE.md's crate table this is the `xdp` crate: a leaf with no hvnet
//! dependencies, used by the guest driver `netvsc`, which runs the attached program natively
//! in its receive path on each frame, in place in a page at offset 256 (PROTOCOL.md §12),
//! before anything reaches the TAP. It implements the eBPF instruction set as the kernel runs
//! it ([`insn`]), a load-time check ([`verifier`]), a load-time compilation into flat slots
//! with common sequences fused and the context rewritten (`code`), a JIT to x86-64 (`jit`)
//! and an interpreter ([`vm`]): in both every memory access is bounds-checked against the
//! packet, stack, context and map-value regions and every run has an instruction budget.
//! The maps ([`maps`]) and helpers ([`helpers`]) are those XDP programs use. No program can
//! crash, hang or read the driver's memory: a faulting run ends as `XDP_ABORTED` and is
//! counted. [`elf`] loads clang-built ELF objects (sections, BTF and legacy maps,
//! relocations, global data, BPF-to-BPF calls) on top of [`Program::load`]; [`asm`]
//! assembles programs by hand for tests.
// Unsafe code only in `jit` (executable memory and calls into it).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod asm;
mod code;
pub mod elf;
pub mod helpers;
pub mod insn;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod jit;
pub mod maps;
pub mod verifier;
pub mod vm;

pub use insn::{Insn, RawInsn};
pub use maps::{Map, MapDef, MapError, MapKind};
pub use verifier::{VerifyError, VerifyErrorKind};
pub use vm::{
    Fault, FaultKind, LoadError, Program, ProgramStats, RunResult, XDP_ABORTED, XDP_DROP, XDP_PASS,
    XDP_REDIRECT, XDP_TX, XdpBuffer,
};
