//! The differential test of hvnet's eBPF runtime against the Linux kernel's: every checked-in
//! clang-built XDP program (`tests/fixtures/*.o`, `tests/fixtures/corpus/*.o`) runs on the
//! same 1000 packets in both (`hvnet xdp diff`, the kernel through `BPF_PROG_TEST_RUN`), and
//! the return codes, output packets and maps must agree after every packet.
//! Needs root (loading BPF programs); fails loudly otherwise.

use std::path::Path;
use std::process::Command;

fn objects() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut v = Vec::new();
    for d in [dir.clone(), dir.join("corpus")] {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "o") {
                v.push(p.to_string_lossy().into_owned());
            }
        }
    }
    v.sort();
    v
}

#[test]
fn every_corpus_program_agrees_with_the_kernel_on_1000_packets() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var_os("HVNET_SKIP_ROOT_TESTS").is_some() {
            eprintln!(
                "\n!!!!!!!! SKIPPED: the kernel differential test needs root (bpf(2)); \
                 HVNET_SKIP_ROOT_TESTS is set !!!!!!!!\n"
            );
            return;
        }
        panic!("the kernel differential test needs root (bpf(2)); run the suite as root");
    }
    let objs = objects();
    assert!(objs.len() >= 2, "no XDP objects found: {objs:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_hvnet"))
        .args(["xdp", "diff", "--packets", "1000", "--json"])
        .args(&objs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hvnet xdp diff failed:\n{stdout}\n{stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["agree"], true, "{v:#}");
    let programs = v["programs"].as_array().unwrap();
    assert_eq!(programs.len(), objs.len());
    for p in programs {
        assert_eq!(p["packets"], 1000, "{p}");
        assert_eq!(p["mismatches"].as_array().unwrap().len(), 0, "{p}");
    }
}
