//! The Linux kernel's own XDP runtime, as the reference hvnet's runtime is checked against:
//! loads a linked program ([`xdp::elf::LinkedProgram`]) and its maps with the `bpf(2)`
//! system call and runs it with `BPF_PROG_TEST_RUN`, which the kernel verifies and JITs.
//!
//! Used by `hvnet xdp diff` (same program, same packets, both runtimes; return codes,
//! output bytes and map contents compared). Needs root (`CAP_BPF` + `CAP_SYS_ADMIN`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};
use xdp::elf::{LinkedProgram, MapSpec};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_MAP_FREEZE: libc::c_long = 22;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `lddw` opcode; its `src` 1 (`MAP_FD`) and 2 (`MAP_VALUE`) carry a map in `imm`.
const LDDW: u8 = 0x18;

/// `union bpf_attr`, as bytes: every command's fields live at fixed little-endian offsets.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().unwrap_or_default())
    }
    fn name(&mut self, off: usize, name: &str) -> &mut Self {
        // The kernel takes [A-Za-z0-9_.], at most 15 characters.
        for (i, c) in name
            .bytes()
            .filter(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'.')
            .take(15)
            .enumerate()
        {
            self.0[off + i] = c;
        }
        self
    }
    /// Issues `bpf(cmd, self)`; the non-negative result (an fd for the creating commands).
    fn call(&mut self, cmd: libc::c_long) -> io::Result<i64> {
        // SAFETY: the attribute is a 128-byte, 8-aligned buffer that outlives the call; any
        // pointers written into it point at buffers the caller keeps alive across the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                self.0.as_mut_ptr(),
                self.0.len() as libc::c_uint,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }
}

/// One map created in the kernel.
pub struct KernelMap {
    fd: OwnedFd,
    spec: MapSpec,
}

impl KernelMap {
    fn create(spec: &MapSpec) -> Result<KernelMap> {
        let d = &spec.def;
        let fd = Attr::new()
            .u32(0, d.kind.to_type())
            .u32(4, d.key_size)
            .u32(8, d.value_size)
            .u32(12, d.max_entries)
            .u32(16, d.flags)
            .name(28, &d.name)
            .call(BPF_MAP_CREATE)
            .with_context(|| format!("creating map {} in the kernel", d.name))?;
        // SAFETY: BPF_MAP_CREATE returned a new file descriptor that we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let map = KernelMap {
            fd,
            spec: spec.clone(),
        };
        if !spec.initial.is_empty() {
            map.update(&0u32.to_ne_bytes(), &spec.initial)
                .with_context(|| format!("initial contents of map {}", d.name))?;
        }
        if spec.frozen {
            Attr::new()
                .u32(0, map.fd.as_raw_fd() as u32)
                .call(BPF_MAP_FREEZE)
                .with_context(|| format!("freezing map {}", d.name))?;
        }
        Ok(map)
    }

    fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        Attr::new()
            .u32(0, self.fd.as_raw_fd() as u32)
            .u64(8, key.as_ptr() as u64)
            .u64(16, value.as_ptr() as u64)
            .call(BPF_MAP_UPDATE_ELEM)
            .map(drop)
    }

    /// Every entry, sorted by key. Per-CPU maps give the values of all possible CPUs,
    /// each rounded up to 8 bytes, as the kernel returns them.
    pub fn entries(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let d = &self.spec.def;
        let value_len = if d.kind.per_cpu() {
            (d.value_size as usize).next_multiple_of(8) * possible_cpus()?
        } else {
            d.value_size as usize
        };
        let mut out = Vec::new();
        let mut key: Option<Vec<u8>> = None;
        loop {
            let mut next = vec![0u8; d.key_size as usize];
            let mut a = Attr::new();
            a.u32(0, self.fd.as_raw_fd() as u32)
                .u64(8, key.as_ref().map_or(0, |k| k.as_ptr() as u64))
                .u64(16, next.as_mut_ptr() as u64);
            match a.call(BPF_MAP_GET_NEXT_KEY) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                Err(e) => return Err(e).context(format!("iterating map {}", d.name)),
            }
            let mut value = vec![0u8; value_len];
            Attr::new()
                .u32(0, self.fd.as_raw_fd() as u32)
                .u64(8, next.as_ptr() as u64)
                .u64(16, value.as_mut_ptr() as u64)
                .call(BPF_MAP_LOOKUP_ELEM)
                .with_context(|| format!("reading map {}", d.name))?;
            out.push((next.clone(), value));
            key = Some(next);
            if out.len() > d.max_entries as usize {
                bail!(
                    "map {} yields more keys than its {} entries",
                    d.name,
                    d.max_entries
                );
            }
        }
        out.sort();
        Ok(out)
    }
}

/// A program loaded into the kernel with its own maps.
pub struct KernelProgram {
    fd: OwnedFd,
    /// Its maps, in the linked program's order.
    pub maps: Vec<KernelMap>,
}

/// The result of one `BPF_PROG_TEST_RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRun {
    /// The program's return value.
    pub retval: u32,
    /// The packet after the run.
    pub packet: Vec<u8>,
    /// Mean nanoseconds per run, as the kernel measured it.
    pub ns_per_run: u32,
}

impl KernelProgram {
    /// Creates the maps and loads the program (the kernel's verifier runs; its log is in
    /// the error when it refuses).
    pub fn load(linked: &LinkedProgram) -> Result<KernelProgram> {
        let maps = linked
            .maps
            .iter()
            .map(KernelMap::create)
            .collect::<Result<Vec<_>>>()?;
        let mut insns = Vec::with_capacity(linked.insns.len() * 8);
        for i in &linked.insns {
            let mut imm = i.imm;
            if i.code == LDDW && matches!(i.src, 1 | 2) {
                let m = maps.get(imm as usize).with_context(|| {
                    format!("lddw refers to map {imm}, the object has {}", maps.len())
                })?;
                imm = m.fd.as_raw_fd();
            }
            insns.extend_from_slice(&[i.code, i.dst | (i.src << 4)]);
            insns.extend_from_slice(&i.off.to_le_bytes());
            insns.extend_from_slice(&imm.to_le_bytes());
        }
        let license = CString::new("GPL").expect("no NUL");
        let mut log = vec![0u8; 1 << 20];
        let r = Attr::new()
            .u32(0, BPF_PROG_TYPE_XDP)
            .u32(4, linked.insns.len() as u32)
            .u64(8, insns.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64)
            .u32(24, 1)
            .u32(28, log.len() as u32)
            .u64(32, log.as_mut_ptr() as u64)
            .name(48, &linked.name)
            .call(BPF_PROG_LOAD);
        let fd = match r {
            Ok(fd) => fd,
            Err(e) => {
                let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                let text = String::from_utf8_lossy(&log[..end]);
                let tail: Vec<&str> = text.lines().rev().take(12).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "the kernel refused program {}: {e}\n{}",
                    linked.name,
                    tail.join("\n")
                );
            }
        };
        // SAFETY: BPF_PROG_LOAD returned a new file descriptor that we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(KernelProgram { fd, maps })
    }

    /// Runs the program `repeat` times on `packet` (the kernel copies it in afresh for
    /// each run); the last run's result.
    pub fn run(&self, packet: &[u8], repeat: u32) -> Result<KernelRun> {
        let mut out = vec![0u8; 4096];
        let mut a = Attr::new();
        a.u32(0, self.fd.as_raw_fd() as u32)
            .u32(8, packet.len() as u32)
            .u32(12, out.len() as u32)
            .u64(16, packet.as_ptr() as u64)
            .u64(24, out.as_mut_ptr() as u64)
            .u32(32, repeat.max(1));
        a.call(BPF_PROG_TEST_RUN)
            .with_context(|| format!("BPF_PROG_TEST_RUN on a {}-byte packet", packet.len()))?;
        out.truncate((a.get_u32(12) as usize).min(4096));
        Ok(KernelRun {
            retval: a.get_u32(4),
            packet: out,
            ns_per_run: a.get_u32(36),
        })
    }
}

/// The number of possible CPUs (the kernel's per-CPU map value count).
fn possible_cpus() -> Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .context("reading /sys/devices/system/cpu/possible")?;
    let mut n = 0;
    for part in s.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.parse()?, b.parse()?);
        n += b + 1 - a;
    }
    Ok(n)
}
