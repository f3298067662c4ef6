//! The ELF loader on clang-built fixtures (`tests/fixtures/*.c`, objects checked in so the
//! tests never need clang).

use xdp::elf::{ElfError, Object};
use xdp::{XDP_DROP, XDP_PASS, XDP_TX, XdpBuffer};

const LEGACY: &[u8] = include_bytes!("fixtures/legacy.o");
const BTF: &[u8] = include_bytes!("fixtures/btf.o");

fn u64_at(v: &[u8]) -> u64 {
    u64::from_le_bytes(v[..8].try_into().unwrap())
}

#[test]
fn legacy_maps_section() {
    let obj = Object::parse(LEGACY).unwrap();
    assert_eq!(obj.map_names(), ["counters"]);
    let prog = obj.program(None).unwrap();
    let m = &prog.maps()[0];
    assert_eq!(m.def().value_size, 8);
    assert_eq!(m.def().max_entries, 2);
    let mut pass = XdpBuffer::new(&[0u8; 60]);
    assert_eq!(prog.run(&mut pass, 0).action, XDP_PASS);
    let mut drop = XdpBuffer::new(&[0xffu8; 60]);
    let r = prog.run(&mut drop, 0);
    assert_eq!(r.action, XDP_DROP, "{r:?}");
    prog.run(&mut drop, 0);
    assert_eq!(u64_at(&m.lookup(&0u32.to_le_bytes()).unwrap()), 1);
    assert_eq!(u64_at(&m.lookup(&1u32.to_le_bytes()).unwrap()), 2);
}

#[test]
fn btf_maps_global_data_and_calls() {
    let obj = Object::parse(BTF).unwrap();
    let names = obj.map_names().to_vec();
    for n in ["by_len", "runs", ".data", ".rodata", ".bss"] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    // Two xdp sections: the default is ambiguous.
    assert!(matches!(obj.program(None), Err(ElfError::Ambiguous { .. })));
    let prog = obj.program_with_cpus(Some("xdp"), 2).unwrap();
    let map = |n: &str| prog.maps()[names.iter().position(|x| x == n).unwrap()].clone();
    let mut small = XdpBuffer::new(&[1u8; 60]);
    let r = prog.run(&mut small, 1);
    assert_eq!(r.action, XDP_PASS, "{r:?}");
    let mut big = XdpBuffer::new(&[1u8; 100]);
    assert_eq!(prog.run(&mut big, 1).action, XDP_DROP);
    prog.run(&mut big, 0);
    let zero = 0u32.to_le_bytes();
    // .data started at 7.
    assert_eq!(u64_at(&map(".data").lookup(&zero).unwrap()), 10);
    assert_eq!(
        map(".bss").lookup(&zero).unwrap()[..4],
        100u32.to_le_bytes()
    );
    assert_eq!(
        map(".rodata").lookup(&zero).unwrap()[..4],
        64u32.to_le_bytes()
    );
    assert!(!map(".rodata").writable_by_program());
    let by_len = map("by_len");
    assert_eq!(u64_at(&by_len.lookup(&60u32.to_le_bytes()).unwrap()), 1);
    assert_eq!(u64_at(&by_len.lookup(&100u32.to_le_bytes()).unwrap()), 2);
    // Per-CPU values, CPU order, each padded to 8 bytes as the kernel returns them.
    let runs = map("runs").lookup(&zero).unwrap();
    assert_eq!(runs, [1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn section_and_name_selection() {
    let obj = Object::parse(BTF).unwrap();
    let p = obj.program(Some("xdp/other")).unwrap();
    assert_eq!(p.run(&mut XdpBuffer::new(&[0; 14]), 0).action, XDP_TX);
    let p = obj.program(Some("other_prog")).unwrap();
    assert_eq!(p.run(&mut XdpBuffer::new(&[0; 14]), 0).action, XDP_TX);
    let e = obj.program(Some("tc")).unwrap_err();
    assert!(e.to_string().contains("xdp/other:other_prog"), "{e}");
}

#[test]
fn garbage_is_refused() {
    assert!(matches!(
        Object::parse(b"not an elf"),
        Err(ElfError::Parse(_))
    ));
}

#[test]
fn unsupported_map_type_is_named() {
    let obj = Object::parse(include_bytes!("fixtures/ringbuf.o")).unwrap();
    let e = obj.program(None).unwrap_err();
    assert!(
        matches!(&e, ElfError::Map { name, .. } if name == "events"),
        "{e}"
    );
    assert!(e.to_string().contains("map type 27"), "{e}");
}

#[test]
fn core_relocations_are_refused() {
    let obj = Object::parse(include_bytes!("fixtures/core.o")).unwrap();
    let e = obj.program(None).unwrap_err();
    assert!(matches!(e, ElfError::Unsupported(_)), "{e}");
    assert!(e.to_string().contains("CO-RE"), "{e}");
}
