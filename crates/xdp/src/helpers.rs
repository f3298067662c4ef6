//! Helper functions callable from programs (`call imm`), with the kernel's ids.
//!
//! Arguments come in r1..r5, the result goes to r0; a helper that gets an argument of the
//! wrong kind (a number where a map or the context is expected, memory outside the program's
//! regions) ends the run with a fault, where the kernel would have refused the program at
//! load time. Failures the kernel reports at run time are negative errnos in r0.

use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::maps::errno;
use crate::vm::{ETH_HLEN, FaultKind, SKB_SHARED_INFO_SIZE, Vm, XDP_FRAME_SIZE};

/// Helper ids (`enum bpf_func_id`).
pub mod id {
    /// `void *bpf_map_lookup_elem(map, key)`
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    /// `long bpf_map_update_elem(map, key, value, flags)`
    pub const MAP_UPDATE_ELEM: i32 = 2;
    /// `long bpf_map_delete_elem(map, key)`
    pub const MAP_DELETE_ELEM: i32 = 3;
    /// `u64 bpf_ktime_get_ns(void)`
    pub const KTIME_GET_NS: i32 = 5;
    /// `long bpf_trace_printk(fmt, fmt_size, ...)`
    pub const TRACE_PRINTK: i32 = 6;
    /// `u32 bpf_get_prandom_u32(void)`
    pub const GET_PRANDOM_U32: i32 = 7;
    /// `u32 bpf_get_smp_processor_id(void)`
    pub const GET_SMP_PROCESSOR_ID: i32 = 8;
    /// `s64 bpf_csum_diff(from, from_size, to, to_size, seed)`
    pub const CSUM_DIFF: i32 = 28;
    /// `long bpf_xdp_adjust_head(xdp_md, delta)`
    pub const XDP_ADJUST_HEAD: i32 = 44;
    /// `long bpf_xdp_adjust_meta(xdp_md, delta)`
    pub const XDP_ADJUST_META: i32 = 54;
    /// `long bpf_xdp_adjust_tail(xdp_md, delta)`
    pub const XDP_ADJUST_TAIL: i32 = 65;
}

/// Largest metadata (`xdp_metalen_invalid`: a multiple of 4, at most the u8 `meta_len`).
pub const XDP_META_MAX: usize = 255;

/// Whether this runtime provides helper `id`.
pub fn is_supported(helper: i32) -> bool {
    name(helper).is_some()
}

/// The helper's name (without `bpf_`), if supported.
pub fn name(helper: i32) -> Option<&'static str> {
    Some(match helper {
        id::MAP_LOOKUP_ELEM => "map_lookup_elem",
        id::MAP_UPDATE_ELEM => "map_update_elem",
        id::MAP_DELETE_ELEM => "map_delete_elem",
        id::KTIME_GET_NS => "ktime_get_ns",
        id::TRACE_PRINTK => "trace_printk",
        id::GET_PRANDOM_U32 => "get_prandom_u32",
        id::GET_SMP_PROCESSOR_ID => "get_smp_processor_id",
        id::CSUM_DIFF => "csum_diff",
        id::XDP_ADJUST_HEAD => "xdp_adjust_head",
        id::XDP_ADJUST_META => "xdp_adjust_meta",
        id::XDP_ADJUST_TAIL => "xdp_adjust_tail",
        _ => return None,
    })
}

fn neg(e: i64) -> u64 {
    (-e) as u64
}

/// Runs helper `helper` on the VM's registers.
pub(crate) fn call(vm: &mut Vm<'_>, helper: i32) -> Result<(), FaultKind> {
    let r = vm.regs;
    let r0 = match helper {
        // The map is borrowed from the program (not cloned: an Arc clone is two atomic
        // operations per call) and keys and values are read in place where they lie on
        // the stack or in the packet.
        id::MAP_LOOKUP_ELEM => {
            let m = vm.map_arg(helper, 1)?;
            let (map, cpu) = (&vm.prog.maps[m], vm.cpu());
            let ks = map.def().key_size as usize;
            match vm.with_bytes(r[2], ks, |key| map.prog_lookup(key, cpu))? {
                Some(slot) => Vm::value_ptr(m, slot),
                None => 0,
            }
        }
        id::MAP_UPDATE_ELEM => {
            let m = vm.map_arg(helper, 1)?;
            let (map, cpu) = (&vm.prog.maps[m], vm.cpu());
            let (ks, vs) = (map.def().key_size as usize, map.def().value_size as usize);
            vm.with_bytes(r[2], ks, |key| {
                vm.with_bytes(r[3], vs, |value| map.prog_update(key, value, r[4], cpu))
            })?? as u64
        }
        id::MAP_DELETE_ELEM => {
            let m = vm.map_arg(helper, 1)?;
            let map = &vm.prog.maps[m];
            let ks = map.def().key_size as usize;
            vm.with_bytes(r[2], ks, |key| map.prog_delete(key))? as u64
        }
        id::KTIME_GET_NS => {
            static START: OnceLock<Instant> = OnceLock::new();
            let start = *START.get_or_init(Instant::now);
            (start.elapsed().as_nanos() as u64).wrapping_add(1_000_000_000)
        }
        id::GET_PRANDOM_U32 => {
            let s = &vm.prog.prandom[vm.cpu() as usize % vm.prog.prandom.len()];
            // xorshift64* per CPU.
            let step = |mut x: u64| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                x
            };
            let old = match s.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(step(x)))
            {
                Ok(x) | Err(x) => x,
            };
            (step(old).wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) & 0xffff_ffff
        }
        id::GET_SMP_PROCESSOR_ID => u64::from(vm.cpu()),
        id::CSUM_DIFF => csum_diff(vm, r)?,
        id::XDP_ADJUST_HEAD => {
            vm.ctx_arg(helper, 1)?;
            adjust_head(vm, r[2] as i32)
        }
        id::XDP_ADJUST_META => {
            vm.ctx_arg(helper, 1)?;
            adjust_meta(vm, r[2] as i32)
        }
        id::XDP_ADJUST_TAIL => {
            vm.ctx_arg(helper, 1)?;
            adjust_tail(vm, r[2] as i32)
        }
        id::TRACE_PRINTK => trace_printk(vm, r)?,
        _ => return Err(FaultKind::HelperArg { helper, arg: 0 }),
    };
    vm.regs[0] = r0;
    Ok(())
}

fn adjust_head(vm: &mut Vm<'_>, offset: i32) -> u64 {
    let buf = &mut *vm.buf;
    let metalen = buf.meta_len.unwrap_or(0);
    let data = buf.headroom as i64 + i64::from(offset);
    let end = buf.data_end() as i64;
    if data < (XDP_FRAME_SIZE + metalen) as i64 || data > end - ETH_HLEN as i64 {
        return neg(errno::EINVAL);
    }
    let data = data as usize;
    if metalen > 0 {
        let from = buf.headroom - metalen;
        buf.data.copy_within(from..buf.headroom, data - metalen);
    }
    buf.len = end as usize - data;
    buf.headroom = data;
    0
}

fn adjust_meta(vm: &mut Vm<'_>, offset: i32) -> u64 {
    let buf = &mut *vm.buf;
    let Some(metalen) = buf.meta_len else {
        return neg(errno::ENOTSUPP);
    };
    let meta = (buf.headroom - metalen) as i64 + i64::from(offset);
    if meta < XDP_FRAME_SIZE as i64 || meta > buf.headroom as i64 {
        return neg(errno::EINVAL);
    }
    let new_len = buf.headroom - meta as usize;
    if !new_len.is_multiple_of(4) || new_len > XDP_META_MAX {
        return neg(errno::EACCES);
    }
    buf.meta_len = Some(new_len);
    0
}

fn adjust_tail(vm: &mut Vm<'_>, offset: i32) -> u64 {
    let buf = &mut *vm.buf;
    let hard_end = buf.data.len().saturating_sub(SKB_SHARED_INFO_SIZE) as i64;
    let old_end = buf.data_end();
    let end = old_end as i64 + i64::from(offset);
    if end > hard_end || end < (buf.headroom + ETH_HLEN) as i64 {
        return neg(errno::EINVAL);
    }
    let end = end as usize;
    if end > old_end {
        buf.data[old_end..end].fill(0);
    }
    buf.len = end - buf.headroom;
    0
}

/// The 32-bit one's-complement sum as x86-64's `csum_partial` gives it.
fn csum_diff(vm: &mut Vm<'_>, r: [u64; 16]) -> Result<u64, FaultKind> {
    let from_size = r[2] as u32 as usize;
    let to_size = r[4] as u32 as usize;
    if !(from_size | to_size).is_multiple_of(4) || from_size + to_size > 512 {
        return Ok(neg(errno::EINVAL));
    }
    let mut buf = [0u8; 512];
    let (from, to) = buf[..from_size + to_size].split_at_mut(from_size);
    vm.read_bytes(r[1], from)?;
    vm.read_bytes(r[3], to)?;
    let mut acc = u64::from(r[5] as u32);
    for w in from.chunks_exact(4) {
        acc += u64::from(!u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
    for w in to.chunks_exact(4) {
        acc += u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
    // Kernels since 6.13 return the sum folded to 16 bits (ones' complement, not
    // inverted) on every architecture, the seed-only case included; before, x86 returned
    // the 32-bit partial sum. We follow the current kernel (checked by `hvnet xdp diff`).
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    Ok(acc)
}

fn trace_printk(vm: &mut Vm<'_>, r: [u64; 16]) -> Result<u64, FaultKind> {
    let size = r[2] as u32 as usize;
    if size == 0 || size > 4096 {
        return Ok(neg(errno::EINVAL));
    }
    let mut fmt = vec![0u8; size];
    vm.read_bytes(r[1], &mut fmt)?;
    let Some(nul) = fmt.iter().position(|&b| b == 0) else {
        return Ok(neg(errno::EINVAL));
    };
    let Some(out) = format(vm, &fmt[..nul], [r[3], r[4], r[5]]) else {
        return Ok(neg(errno::EINVAL));
    };
    if let Some(sink) = vm
        .prog
        .trace
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
    {
        sink(&out);
    }
    Ok(out.len() as u64)
}

/// A `printf` subset: `%d %i %u %x %X %c %p %s %%` with `l`/`ll`/`h`/`hh` modifiers, at most
/// three arguments. `None` for anything else.
fn format(vm: &Vm<'_>, fmt: &[u8], args: [u64; 3]) -> Option<String> {
    let mut out = String::new();
    let mut next = 0;
    let mut i = 0;
    while i < fmt.len() {
        let c = fmt[i];
        i += 1;
        if c != b'%' {
            out.push(char::from(c));
            continue;
        }
        let mut long = 0;
        while i < fmt.len() && fmt[i] == b'l' {
            long += 1;
            i += 1;
        }
        let conv = *fmt.get(i)?;
        i += 1;
        if conv == b'%' {
            out.push('%');
            continue;
        }
        if next == 3 || long > 2 {
            return None;
        }
        let a = args[next];
        next += 1;
        let v = if long > 0 { a } else { a & 0xffff_ffff };
        match conv {
            b'd' | b'i' => {
                let s = if long > 0 {
                    a as i64
                } else {
                    i64::from(a as u32 as i32)
                };
                out.push_str(&s.to_string());
            }
            b'u' => out.push_str(&v.to_string()),
            b'x' => out.push_str(&format!("{v:x}")),
            b'X' => out.push_str(&format!("{v:X}")),
            b'c' => out.push(char::from(a as u8)),
            b'p' => out.push_str(&format!("{a:#x}")),
            b's' => {
                let mut s = Vec::new();
                for k in 0..256u64 {
                    match vm.load(a.wrapping_add(k), 1) {
                        Ok(0) => break,
                        Ok(b) => s.push(b as u8),
                        Err(_) => {
                            s = b"(fault)".to_vec();
                            break;
                        }
                    }
                }
                out.push_str(&String::from_utf8_lossy(&s));
            }
            _ => return None,
        }
    }
    Some(out)
}
