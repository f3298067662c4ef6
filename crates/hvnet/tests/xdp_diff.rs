//! The differential test of hvnet's eBPF runtime against the Linux kernel's: every XDP
//! program in C in the repository (`tests/fixtures/*.c`, `tests/fixtures/corpus/*.c`) is
//! compiled here with clang (`clang -O2 -g -target bpf`, as their headers say), and each
//! object runs on the same 1000 packets in both runtimes (`hvnet xdp diff`, the kernel
//! through `BPF_PROG_TEST_RUN`): the return codes, output packets and maps must agree after
//! every packet.
//!
//! Needs root (loading BPF programs) and clang (`.ci/run` installs it); fails loudly without
//! either. `HVNET_SKIP_CLANG=1` runs the checked-in objects instead, and says so.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The C sources (with `ext == "c"`) or checked-in objects (`"o"`), sorted.
fn files(ext: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut v = Vec::new();
    for d in [dir.clone(), dir.join("corpus")] {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == ext) {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

/// Compiles every C program into a fresh directory; returns the objects.
fn compile_all() -> Vec<PathBuf> {
    let out = std::env::temp_dir().join(format!("hvnet-xdp-corpus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let mut objs = Vec::new();
    for src in files("c") {
        let obj = out.join(src.with_extension("o").file_name().unwrap());
        let r = Command::new("clang")
            .args(["-O2", "-g", "-target", "bpf", "-c"])
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run clang ({e}): the differential test compiles the corpus; \
                     install it (apt-get install clang llvm libbpf-dev, as .ci/run does) \
                     or set HVNET_SKIP_CLANG=1 to run the checked-in objects"
                )
            });
        assert!(
            r.status.success(),
            "clang failed on {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&r.stderr)
        );
        objs.push(obj);
    }
    objs
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
    let objs = if std::env::var_os("HVNET_SKIP_CLANG").is_some() {
        eprintln!(
            "\n!!!!!!!! HVNET_SKIP_CLANG is set: diffing the checked-in objects, \
             not freshly compiled ones !!!!!!!!\n"
        );
        files("o")
    } else {
        compile_all()
    };
    let corpus = files("c")
        .iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("corpus")))
        .count();
    assert!(
        corpus >= 20,
        "the corpus must hold at least 20 C programs, has {corpus}"
    );
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
    if let Some(dir) = objs.first().and_then(|o| o.parent())
        && dir.starts_with(std::env::temp_dir())
    {
        let _ = std::fs::remove_dir_all(dir);
    }
}
