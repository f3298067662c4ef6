//! Maps (userspace and program side), atomics on map values and the helpers.

mod common;

use std::sync::{Arc, Mutex};

use common::{load, map, udp_frame};
use xdp::asm::Asm;
use xdp::helpers::id;
use xdp::insn::{alu, atomic, jmp, size};
use xdp::maps::{BPF_ANY, BPF_EXIST, BPF_NOEXIST, errno};
use xdp::{MapError, MapKind, XDP_ABORTED, XdpBuffer};

const EINVAL: u64 = (-errno::EINVAL) as u64;

#[test]
fn array_semantics() {
    let m = map(MapKind::Array, 4, 8, 4, 1);
    let k = |i: u32| i.to_le_bytes();
    assert_eq!(m.lookup(&k(3)).unwrap(), vec![0; 8]);
    assert_eq!(m.lookup(&k(4)), Err(MapError::Errno(errno::ENOENT)));
    m.update(&k(1), &7u64.to_le_bytes(), BPF_ANY).unwrap();
    m.update(&k(1), &8u64.to_le_bytes(), BPF_EXIST).unwrap();
    assert_eq!(m.lookup(&k(1)).unwrap(), 8u64.to_le_bytes());
    assert_eq!(
        m.update(&k(1), &[0; 8], BPF_NOEXIST),
        Err(MapError::Errno(errno::EEXIST))
    );
    assert_eq!(
        m.update(&k(9), &[0; 8], BPF_ANY),
        Err(MapError::Errno(errno::E2BIG))
    );
    assert_eq!(
        m.update(&k(1), &[0; 8], 3),
        Err(MapError::Errno(errno::EINVAL))
    );
    assert_eq!(m.delete(&k(1)), Err(MapError::Errno(errno::EINVAL)));
    assert!(matches!(
        m.update(&k(1), &[0; 7], BPF_ANY),
        Err(MapError::ValueSize { .. })
    ));
    assert!(matches!(m.lookup(&[0; 3]), Err(MapError::KeySize { .. })));
}

#[test]
fn hash_semantics() {
    let m = map(MapKind::Hash, 2, 4, 2, 1);
    assert_eq!(
        m.update(b"aa", &[1; 4], BPF_EXIST),
        Err(MapError::Errno(errno::ENOENT))
    );
    m.update(b"aa", &[1; 4], BPF_NOEXIST).unwrap();
    assert_eq!(
        m.update(b"aa", &[2; 4], BPF_NOEXIST),
        Err(MapError::Errno(errno::EEXIST))
    );
    m.update(b"aa", &[2; 4], BPF_EXIST).unwrap();
    m.update(b"bb", &[3; 4], BPF_ANY).unwrap();
    assert_eq!(
        m.update(b"cc", &[4; 4], BPF_ANY),
        Err(MapError::Errno(errno::E2BIG))
    );
    // Updating an existing key of a full map is fine.
    m.update(b"bb", &[5; 4], BPF_ANY).unwrap();
    assert_eq!(m.lookup(b"aa").unwrap(), vec![2; 4]);
    m.delete(b"aa").unwrap();
    assert_eq!(m.delete(b"aa"), Err(MapError::Errno(errno::ENOENT)));
    assert_eq!(m.lookup(b"aa"), Err(MapError::Errno(errno::ENOENT)));
    m.update(b"cc", &[4; 4], BPF_ANY).unwrap();
    let mut keys = m.keys();
    keys.sort();
    assert_eq!(keys, vec![b"bb".to_vec(), b"cc".to_vec()]);
}

#[test]
fn lru_evicts_least_recently_used() {
    let m = map(MapKind::LruHash, 1, 1, 3, 1);
    for k in [b"a", b"b", b"c"] {
        m.update(k, k, BPF_ANY).unwrap();
    }
    // A program-side lookup of "a" makes "b" the oldest.
    let p = load(
        Asm::new()
            .st(size::B, 10, -1, i32::from(b'a'))
            .ld_map(1, 0)
            .mov64_reg(2, 10)
            .alu64_imm(alu::ADD, 2, -1)
            .call(id::MAP_LOOKUP_ELEM)
            .ret(2),
        vec![m.clone()],
    );
    p.run(&mut XdpBuffer::new(&udp_frame(1)), 0);
    m.update(b"d", b"d", BPF_ANY).unwrap();
    assert_eq!(m.lookup(b"b"), Err(MapError::Errno(errno::ENOENT)));
    for k in [b"a", b"c", b"d"] {
        assert_eq!(m.lookup(k).unwrap(), k.to_vec());
    }
    // NOEXIST on a present key still fails.
    assert_eq!(
        m.update(b"a", b"x", BPF_NOEXIST),
        Err(MapError::Errno(errno::EEXIST))
    );
}

/// `counter[0] += 1` through a lookup and an atomic add; returns PASS.
fn counter_prog() -> Asm {
    Asm::new()
        .st(size::W, 10, -4, 0)
        .ld_map(1, 0)
        .mov64_reg(2, 10)
        .alu64_imm(alu::ADD, 2, -4)
        .call(id::MAP_LOOKUP_ELEM)
        .jmp_imm(jmp::JEQ, 0, 0, 2)
        .mov64_imm(1, 1)
        .atomic(size::DW, atomic::ADD, 0, 1, 0)
        .ret(2)
}

#[test]
fn per_cpu_values_are_separate() {
    let m = map(MapKind::PerCpuArray, 4, 8, 1, 3);
    let p = load(counter_prog(), vec![m.clone()]);
    for cpu in [0, 1, 1, 2, 2, 2] {
        assert_eq!(p.run(&mut XdpBuffer::new(&udp_frame(1)), cpu).faulted, None);
    }
    let v = m.lookup(&0u32.to_le_bytes()).unwrap();
    let per: Vec<u64> = v
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(per, vec![1, 2, 3]);
}

#[test]
fn per_cpu_hash_update_from_program_zeroes_other_cpus() {
    let m = map(MapKind::PerCpuHash, 4, 4, 4, 2);
    m.update(&[9; 4], &[0xff; 16], BPF_ANY).unwrap();
    // Program on CPU 1: update key 1 → value 0x2a (new), key 9 → 0x2b (existing).
    let upd = |key: i32, val: i32| {
        Asm::new()
            .st(size::W, 10, -4, key)
            .st(size::W, 10, -8, val)
            .ld_map(1, 0)
            .mov64_reg(2, 10)
            .alu64_imm(alu::ADD, 2, -4)
            .mov64_reg(3, 10)
            .alu64_imm(alu::ADD, 3, -8)
            .mov64_imm(4, BPF_ANY as i32)
            .call(id::MAP_UPDATE_ELEM)
            .exit()
    };
    let p = load(upd(1, 0x2a), vec![m.clone()]);
    assert_eq!(p.run(&mut XdpBuffer::new(&[0; 60]), 1).r0, 0);
    assert_eq!(
        m.lookup(&1u32.to_le_bytes()).unwrap(),
        [0, 0, 0, 0, 0, 0, 0, 0, 0x2a, 0, 0, 0, 0, 0, 0, 0]
    );
    let p = load(upd(0x0909_0909, 0x2b), vec![m.clone()]);
    assert_eq!(p.run(&mut XdpBuffer::new(&[0; 60]), 1).r0, 0);
    assert_eq!(
        &m.lookup(&[9; 4]).unwrap()[..12],
        &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x2b, 0, 0, 0]
    );
}

#[test]
fn program_map_helpers_return_kernel_errors() {
    let m = map(MapKind::Hash, 4, 8, 1, 1);
    let op = |helper: i32, key: i32, flags: i32| {
        let a = Asm::new()
            .st(size::W, 10, -4, key)
            .st(size::DW, 10, -16, 77)
            .ld_map(1, 0)
            .mov64_reg(2, 10)
            .alu64_imm(alu::ADD, 2, -4)
            .mov64_reg(3, 10)
            .alu64_imm(alu::ADD, 3, -16)
            .mov64_imm(4, flags)
            .call(helper)
            .exit();
        load(a, vec![m.clone()])
            .run(&mut XdpBuffer::new(&[0; 60]), 0)
            .r0 as i64
    };
    assert_eq!(op(id::MAP_UPDATE_ELEM, 1, BPF_EXIST as i32), -errno::ENOENT);
    assert_eq!(op(id::MAP_UPDATE_ELEM, 1, BPF_NOEXIST as i32), 0);
    assert_eq!(
        op(id::MAP_UPDATE_ELEM, 1, BPF_NOEXIST as i32),
        -errno::EEXIST
    );
    assert_eq!(op(id::MAP_UPDATE_ELEM, 2, BPF_ANY as i32), -errno::E2BIG);
    assert_eq!(op(id::MAP_UPDATE_ELEM, 1, 7), -errno::EINVAL);
    assert_ne!(op(id::MAP_LOOKUP_ELEM, 1, 0), 0);
    assert_eq!(op(id::MAP_LOOKUP_ELEM, 2, 0), 0);
    assert_eq!(op(id::MAP_DELETE_ELEM, 1, 0), 0);
    assert_eq!(op(id::MAP_DELETE_ELEM, 1, 0), -errno::ENOENT);
    assert_eq!(
        m.lookup(&1u32.to_le_bytes()),
        Err(MapError::Errno(errno::ENOENT))
    );
    // A number instead of a map faults.
    let bad = load(
        Asm::new()
            .mov64_imm(1, 0)
            .mov64_reg(2, 10)
            .alu64_imm(alu::ADD, 2, -8)
            .call(1)
            .exit(),
        vec![m.clone()],
    );
    assert_eq!(
        bad.run(&mut XdpBuffer::new(&[0; 60]), 0).action,
        XDP_ABORTED
    );
}

#[test]
fn map_value_bounds_and_read_only() {
    let m = map(MapKind::Array, 4, 12, 1, 1);
    // lookup, then write 8 bytes at value + 8 (past 12) → fault.
    let p = |off: i16| {
        Asm::new()
            .st(size::W, 10, -4, 0)
            .ld_map(1, 0)
            .mov64_reg(2, 10)
            .alu64_imm(alu::ADD, 2, -4)
            .call(id::MAP_LOOKUP_ELEM)
            .jmp_imm(jmp::JEQ, 0, 0, 1)
            .st(size::DW, 0, off, -1)
            .ret(2)
    };
    assert_eq!(
        load(p(4), vec![m.clone()])
            .run(&mut XdpBuffer::new(&[0; 60]), 0)
            .action,
        2
    );
    assert_eq!(
        m.lookup(&[0; 4]).unwrap(),
        [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
    );
    assert_eq!(
        load(p(8), vec![m.clone()])
            .run(&mut XdpBuffer::new(&[0; 60]), 0)
            .action,
        XDP_ABORTED
    );
    assert_eq!(
        load(p(-1), vec![m.clone()])
            .run(&mut XdpBuffer::new(&[0; 60]), 0)
            .action,
        XDP_ABORTED
    );
    m.freeze();
    assert_eq!(
        load(p(0), vec![m.clone()])
            .run(&mut XdpBuffer::new(&[0; 60]), 0)
            .action,
        XDP_ABORTED
    );
}

#[test]
fn global_data_via_direct_value_address() {
    let data = map(MapKind::Array, 4, 16, 1, 1);
    data.update(
        &[0; 4],
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
        BPF_ANY,
    )
    .unwrap();
    let p = load(
        Asm::new()
            .ld_map_value(1, 0, 8)
            .ldx(size::W, 0, 1, 0)
            .st(size::B, 1, 4, 0x55)
            .exit(),
        vec![data.clone()],
    );
    assert_eq!(p.run(&mut XdpBuffer::new(&[0; 60]), 0).r0, 0x0c0b_0a09);
    assert_eq!(data.lookup(&[0; 4]).unwrap()[12], 0x55);
    // Offsets past the value, or into a non-array map, are refused at load.
    assert!(
        xdp::Program::load(
            &Asm::new().ld_map_value(1, 0, 16).ret(2).build(),
            vec![data.clone()]
        )
        .is_err()
    );
    let h = map(MapKind::Hash, 4, 16, 1, 1);
    assert!(xdp::Program::load(&Asm::new().ld_map_value(1, 0, 0).ret(2).build(), vec![h]).is_err());
}

#[test]
fn atomics_on_map_values_are_real_atomics() {
    let m = map(MapKind::Array, 4, 8, 1, 1);
    let p = Arc::new(load(counter_prog(), vec![m.clone()]));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut b = XdpBuffer::new(&[0; 60]);
                for _ in 0..2000 {
                    assert_eq!(p.run(&mut b, t).faulted, None);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(m.lookup(&[0; 4]).unwrap(), 8000u64.to_le_bytes());
    // 32-bit fetch-and on a map value, cmpxchg on a map value.
    let a = Asm::new()
        .st(size::W, 10, -4, 0)
        .ld_map(1, 0)
        .mov64_reg(2, 10)
        .alu64_imm(alu::ADD, 2, -4)
        .call(id::MAP_LOOKUP_ELEM)
        .jmp_imm(jmp::JEQ, 0, 0, 6)
        .mov64_reg(6, 0)
        .mov64_imm(1, 0x0f)
        .atomic(size::W, atomic::AND | atomic::FETCH, 6, 1, 4)
        .mov64_imm(0, 0)
        .mov64_imm(2, 0x99)
        .atomic(size::W, atomic::CMPXCHG, 6, 2, 4)
        .exit();
    m.update(&[0; 4], &0x0000_00ff_0000_0000u64.to_le_bytes(), BPF_ANY)
        .unwrap();
    let r = load(a, vec![m.clone()]).run(&mut XdpBuffer::new(&[0; 60]), 0);
    // After the and: high word 0x0f; cmpxchg expected 0 ≠ 0x0f → unchanged, r0 = 0x0f.
    assert_eq!(r.r0, 0x0f);
    assert_eq!(
        m.lookup(&[0; 4]).unwrap(),
        0x0000_000f_0000_0000u64.to_le_bytes()
    );
}

fn helper_on(buf: &mut XdpBuffer, helper: i32, arg: i32) -> (i64, u64) {
    // r0 = helper(ctx, arg); r1 = data_end - data in r0's high half is awkward: return r0 only
    let p = load(
        Asm::new()
            .mov64_reg(6, 1)
            .mov64_imm(2, arg)
            .call(helper)
            .mov64_reg(7, 0)
            .ldx(size::W, 2, 6, 0)
            .ldx(size::W, 3, 6, 4)
            .alu64_reg(alu::SUB, 3, 2)
            .mov64_reg(0, 7)
            .alu64_imm(alu::LSH, 0, 32)
            .alu64_reg(alu::OR, 0, 3)
            .exit(),
        vec![],
    );
    let r = p.run(buf, 0);
    assert_eq!(r.faulted, None);
    ((r.r0 as i64) >> 32, r.r0 & 0xffff_ffff)
}

#[test]
fn adjust_head_tail_meta() {
    let frame = udp_frame(1);
    let mut b = XdpBuffer::new(&frame);
    // Grow the head by 14: len + 14, the new bytes are the old headroom.
    assert_eq!(helper_on(&mut b, id::XDP_ADJUST_HEAD, -14), (0, 64));
    assert_eq!((b.headroom, &b.frame()[14..]), (242, &frame[..]));
    // Shrink the head by 20.
    assert_eq!(helper_on(&mut b, id::XDP_ADJUST_HEAD, 20), (0, 44));
    // Beyond the headroom (keeps 40 bytes for struct xdp_frame) or leaving < 14 bytes.
    assert_eq!(
        helper_on(&mut b, id::XDP_ADJUST_HEAD, -300).0,
        -errno::EINVAL
    );
    assert_eq!(helper_on(&mut b, id::XDP_ADJUST_HEAD, 31).0, -errno::EINVAL);
    assert_eq!(
        helper_on(&mut b, id::XDP_ADJUST_HEAD, -(262 - 40)),
        (0, 44 + 222)
    );
    // Tail: shrink, grow (zero-filled), past the tailroom.
    let mut b = XdpBuffer::new(&frame);
    assert_eq!(helper_on(&mut b, id::XDP_ADJUST_TAIL, -8), (0, 42));
    b.data[256 + 42] = 0xaa;
    assert_eq!(helper_on(&mut b, id::XDP_ADJUST_TAIL, 100), (0, 142));
    assert!(b.frame()[42..].iter().all(|&x| x == 0));
    assert_eq!(
        helper_on(&mut b, id::XDP_ADJUST_TAIL, -129).0,
        -errno::EINVAL
    );
    let max = 4096 - 320 - 256;
    assert_eq!(
        helper_on(&mut b, id::XDP_ADJUST_TAIL, max - 142),
        (0, max as u64)
    );
    assert_eq!(helper_on(&mut b, id::XDP_ADJUST_TAIL, 1).0, -errno::EINVAL);
    // Meta: unsupported on netvsc-style buffers; with support, multiples of 4 only.
    let mut b = XdpBuffer::new(&frame);
    assert_eq!(
        helper_on(&mut b, id::XDP_ADJUST_META, -8).0,
        -errno::ENOTSUPP
    );
    b.meta_len = Some(0);
    assert_eq!(helper_on(&mut b, id::XDP_ADJUST_META, -8).0, 0);
    assert_eq!(b.meta_len, Some(8));
    assert_eq!(helper_on(&mut b, id::XDP_ADJUST_META, -2).0, -errno::EACCES);
    assert_eq!(helper_on(&mut b, id::XDP_ADJUST_META, 9).0, -errno::EINVAL);
    // adjust_head carries the metadata along.
    b.data[248..256].copy_from_slice(b"METADATA");
    assert_eq!(helper_on(&mut b, id::XDP_ADJUST_HEAD, 4).0, 0);
    assert_eq!(b.meta(), b"METADATA");
    // The context argument must be the context.
    let p = load(
        Asm::new()
            .mov64_imm(1, 0)
            .mov64_imm(2, 0)
            .call(id::XDP_ADJUST_HEAD)
            .exit(),
        vec![],
    );
    assert_eq!(p.run(&mut XdpBuffer::new(&frame), 0).action, XDP_ABORTED);
}

#[test]
fn packet_pointers_follow_adjust_head() {
    // After adjust_head(-4), the program writes 4 bytes at the new data.
    let p = load(
        Asm::new()
            .mov64_reg(6, 1)
            .mov64_imm(2, -4)
            .call(id::XDP_ADJUST_HEAD)
            .ldx(size::W, 2, 6, 0)
            .ldx(size::W, 3, 6, 4)
            .mov64_reg(4, 2)
            .alu64_imm(alu::ADD, 4, 4)
            .jmp_reg(jmp::JGT, 4, 3, 1)
            .st(size::W, 2, 0, 0x0403_0201)
            .ret(3),
        vec![],
    );
    let mut b = XdpBuffer::new(&udp_frame(1));
    assert_eq!(p.run(&mut b, 0).action, 3);
    assert_eq!(&b.frame()[..4], &[1, 2, 3, 4]);
}

#[test]
fn csum_diff_matches_ones_complement() {
    // csum_diff(from = 4 bytes on stack, 4, to = 4 bytes, 4, seed).
    let run = |from: u32, to: u32, seed: i32, from_size: i32| {
        let a = Asm::new()
            .st(size::W, 10, -4, from as i32)
            .st(size::W, 10, -8, to as i32)
            .mov64_reg(1, 10)
            .alu64_imm(alu::ADD, 1, -4)
            .mov64_imm(2, from_size)
            .mov64_reg(3, 10)
            .alu64_imm(alu::ADD, 3, -8)
            .mov64_imm(4, 4)
            .mov64_imm(5, seed)
            .call(id::CSUM_DIFF)
            .exit();
        load(a, vec![]).run(&mut XdpBuffer::new(&[0; 60]), 0).r0
    };
    // Folded to 16 bits, as kernels since 6.13 return it on every architecture.
    let fold = |mut x: u64| {
        while x >> 16 != 0 {
            x = (x & 0xffff) + (x >> 16);
        }
        x
    };
    assert_eq!(
        run(0x1234_5678, 0x1234_5679, 0, 4),
        fold(u64::from(!0x1234_5678u32) + 0x1234_5679)
    );
    assert_eq!(
        run(0, 0xffff_ffff, 5, 4),
        fold(0xffff_ffff + 0xffff_ffff + 5)
    );
    // Byte-exact: ~0x12345678 + 0x12345679 = 0xffff_ffff + 1 carries to 0x1_0000_0000,
    // which folds to 1.
    assert_eq!(run(0x1234_5678, 0x1234_5679, 0, 4), 1);
    assert_eq!(run(0, 0, 0, 3), EINVAL);
    // Replacing a word and folding keeps an Internet checksum valid: 16-bit fold of
    // diff(old, new) added to ~csum(old data) equals ~csum(new data).
    let d = run(0x0000_0001, 0x0000_0002, 0, 4);
    let f16 = |mut x: u64| {
        while x >> 16 != 0 {
            x = (x & 0xffff) + (x >> 16);
        }
        x
    };
    assert_eq!(f16(d + f16(1)), f16(2));
}

#[test]
fn small_helpers_and_trace_printk() {
    let cpu = load(Asm::new().call(id::GET_SMP_PROCESSOR_ID).exit(), vec![]);
    assert_eq!(cpu.run(&mut XdpBuffer::new(&[0; 60]), 5).r0, 5);
    let rnd = load(
        Asm::new()
            .call(id::GET_PRANDOM_U32)
            .mov64_reg(6, 0)
            .call(id::GET_PRANDOM_U32)
            .alu64_imm(alu::LSH, 0, 32)
            .alu64_reg(alu::OR, 0, 6)
            .exit(),
        vec![],
    );
    let v = rnd.run(&mut XdpBuffer::new(&[0; 60]), 0).r0;
    assert_ne!(v >> 32, v & 0xffff_ffff);
    let t = load(
        Asm::new()
            .call(id::KTIME_GET_NS)
            .mov64_reg(6, 0)
            .call(id::KTIME_GET_NS)
            .alu64_reg(alu::SUB, 0, 6)
            .exit(),
        vec![],
    );
    assert!((t.run(&mut XdpBuffer::new(&[0; 60]), 0).r0 as i64) >= 0);
    // trace_printk("x=%d y=%llx\n", 13, -5, 255)
    let fmt = b"x=%d y=%llx %u\n\0\0\0\0\0";
    let mut a = Asm::new();
    for (i, c) in fmt.chunks(4).enumerate() {
        a = a.st(
            size::W,
            10,
            -20 + 4 * i as i16,
            i32::from_le_bytes(c.try_into().unwrap()),
        );
    }
    let a = a
        .mov64_reg(1, 10)
        .alu64_imm(alu::ADD, 1, -20)
        .mov64_imm(2, 16)
        .mov64_imm(3, -5)
        .mov64_imm(4, 255)
        .mov64_imm(5, -1)
        .call(id::TRACE_PRINTK)
        .exit();
    let p = load(a, vec![]);
    let out = Arc::new(Mutex::new(String::new()));
    let o = out.clone();
    p.set_trace_sink(Some(Box::new(move |s: &str| o.lock().unwrap().push_str(s))));
    let r = p.run(&mut XdpBuffer::new(&[0; 60]), 0);
    assert_eq!(*out.lock().unwrap(), "x=-5 y=ff 4294967295\n");
    assert_eq!(r.r0, 21);
}
