//! `hvnet xdp diff`: runs one XDP program in hvnet's runtime and in the Linux kernel's
//! (`BPF_PROG_TEST_RUN`, verified and JITed) on the same packets and compares the return
//! codes, the output bytes and, after every packet, the maps.
//!
//! Packets are a fixed set of well-formed frames (IPv4/IPv6 TCP, UDP incl. port 9, ICMP echo,
//! ARP, VLAN, fragments, truncated headers) followed by random ones (random bytes with a
//! random valid-looking prefix) from a seeded generator, so a run is reproducible.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use xdp::elf::Object;
use xdp::{Program, XdpBuffer};

use crate::kernel_bpf::KernelProgram;

/// Arguments of `hvnet xdp diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The BPF objects (`clang -O2 -g -target bpf -c prog.c -o prog.o`).
    #[arg(value_name = "PROG.o", required = true)]
    pub objects: Vec<PathBuf>,
    /// Packets per program (the fixed frames first, then random ones).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub packets: u32,
    /// Seed of the random packets.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One program's differential result.
struct ProgramDiff {
    name: String,
    packets: u32,
    mismatches: Vec<String>,
    ours_ns: f64,
    kernel_ns: f64,
}

/// Runs `hvnet xdp diff`; exit code 1 when any program disagrees.
pub fn run(a: DiffArgs) -> Result<i32> {
    let mut results = Vec::new();
    for path in &a.objects {
        let (name, ours, kernel) = load_both(path)?;
        results.push(compare(&name, &ours, &kernel, a.packets, a.seed)?);
    }
    let failed = results.iter().any(|r| !r.mismatches.is_empty());
    if a.json {
        let v: Vec<_> = results
            .iter()
            .map(|r| {
                json!({"program": r.name, "packets": r.packets, "mismatches": r.mismatches,
                       "ours_ns_per_run": r.ours_ns, "kernel_ns_per_run": r.kernel_ns})
            })
            .collect();
        println!("{}", json!({"programs": v, "agree": !failed}));
    } else {
        println!(
            "{:<24} {:>8} {:>10} {:>12} {:>15} {:>7}",
            "program", "packets", "mismatches", "ours ns/run", "kernel ns/run", "ratio"
        );
        for r in &results {
            println!(
                "{:<24} {:>8} {:>10} {:>12.1} {:>15.1} {:>7.2}",
                r.name,
                r.packets,
                r.mismatches.len(),
                r.ours_ns,
                r.kernel_ns,
                r.ours_ns / r.kernel_ns.max(1.0)
            );
            for m in r.mismatches.iter().take(5) {
                println!("  {m}");
            }
        }
    }
    Ok(i32::from(failed))
}

/// Loads one object's XDP program into both runtimes; returns its file name with them.
fn load_both(path: &Path) -> Result<(String, Program, KernelProgram)> {
    let at = || path.display().to_string();
    let bytes = std::fs::read(path).with_context(at)?;
    let obj = Object::parse(&bytes).with_context(at)?;
    let ours = obj.program(None).with_context(at)?;
    let kernel = KernelProgram::load(&obj.link(None).with_context(at)?).with_context(|| {
        format!(
            "{} in the kernel (hvnet xdp diff needs root and a kernel with BPF)",
            path.display()
        )
    })?;
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    Ok((name, ours, kernel))
}

fn compare(
    name: &str,
    ours: &Program,
    kernel: &KernelProgram,
    packets: u32,
    seed: u64,
) -> Result<ProgramDiff> {
    let mut mismatches = Vec::new();
    let mut packets_gen = Packets::new(seed);
    for n in 0..packets {
        let pkt = packets_gen.next_packet(n);
        let mut buf = XdpBuffer::new(&pkt);
        let r = ours.run(&mut buf, 0);
        let mut out = buf.meta().to_vec();
        out.extend_from_slice(buf.frame());
        let k = kernel.run(&pkt, 1)?;
        if r.action != k.retval {
            mismatches.push(format!(
                "packet {n} ({} bytes): ours returned {}, the kernel {}{}",
                pkt.len(),
                r.action,
                k.retval,
                r.faulted
                    .map_or(String::new(), |f| format!(" (ours faulted: {f})"))
            ));
        } else if out != k.packet {
            mismatches.push(format!(
                "packet {n} ({} bytes): output differs (ours {} bytes, kernel {} bytes)",
                pkt.len(),
                out.len(),
                k.packet.len()
            ));
        }
        for (i, (m, km)) in ours.maps().iter().zip(&kernel.maps).enumerate() {
            if m.def().kind.per_cpu() {
                continue; // which CPU the kernel ran on is not ours to choose
            }
            if crate::xdp_cmd::dump(m) != km.entries()? {
                mismatches.push(format!(
                    "packet {n}: map {i} ({}) differs after the run",
                    m.def().name
                ));
            }
        }
        if mismatches.len() >= 20 {
            break;
        }
    }
    let ([ours_ns], kernel_ns) = timing([ours], kernel)?;
    Ok(ProgramDiff {
        name: name.to_string(),
        packets,
        mismatches,
        ours_ns,
        kernel_ns,
    })
}

/// One program's time per run in each runtime.
pub struct Timing {
    /// Object file name.
    pub name: String,
    /// `"jit"` or `"interpreter"`: what runs it by default.
    pub runtime: &'static str,
    /// ns per run as it runs by default.
    pub ours_ns: f64,
    /// ns per run in the interpreter.
    pub interpreter_ns: f64,
    /// ns per run in the kernel (JITed).
    pub kernel_ns: f64,
}

/// For each object, ns per run in our runtime (as it runs by default, and in the
/// interpreter) and in the kernel's (see [`timing`]). For `hvnet bench xdp`.
pub fn timings(objects: &[PathBuf]) -> Result<Vec<Timing>> {
    let mut out = Vec::new();
    for path in objects {
        let (name, ours, kernel) = load_both(path)?;
        let runtime = crate::xdp_cmd::runtime_name(&ours);
        // A second load for the interpreter, so that both start from the same maps.
        let interp = Object::parse(&std::fs::read(path)?)?
            .program(None)?
            .without_jit();
        let ([ours_ns, interpreter_ns], kernel_ns) = timing([&ours, &interp], &kernel)?;
        out.push(Timing {
            name,
            runtime,
            ours_ns,
            interpreter_ns,
            kernel_ns,
        });
    }
    Ok(out)
}

/// ns per run on a 64-byte UDP frame in both runtimes: the best of 5 rounds of
/// 20 000 runs each, alternating between the runtimes so that both see the same moments of a
/// shared machine. Like the kernel's `BPF_PROG_TEST_RUN` repeat loop, every run works on the
/// buffer the previous run left (a program that grows the frame grows it once; later runs
/// take its other branch), so both runtimes do the same work.
fn timing<const N: usize>(ours: [&Program; N], kernel: &KernelProgram) -> Result<([f64; N], f64)> {
    const ROUNDS: u32 = 5;
    const RUNS: u32 = 20_000;
    let pkt = Packets::new(0).next_packet(0);
    let mut bufs = ours.map(|_| XdpBuffer::new(&pkt));
    let (mut best_ours, mut best_kernel) = ([f64::INFINITY; N], f64::INFINITY);
    for _ in 0..ROUNDS {
        for ((prog, buf), best) in ours.iter().zip(&mut bufs).zip(&mut best_ours) {
            let t = std::time::Instant::now();
            for _ in 0..RUNS {
                std::hint::black_box(prog.run(buf, 0));
            }
            *best = best.min(t.elapsed().as_nanos() as f64 / f64::from(RUNS));
        }
        let k = kernel.run(&pkt, RUNS)?;
        best_kernel = best_kernel.min(f64::from(k.ns_per_run));
    }
    Ok((best_ours, best_kernel))
}

/// The packet generator: fixed frames, then seeded random ones (xorshift64*).
struct Packets {
    state: u64,
}

impl Packets {
    fn new(seed: u64) -> Packets {
        Packets {
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        }
    }

    fn rand(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn next_packet(&mut self, n: u32) -> Vec<u8> {
        let fixed = fixed_frames();
        if let Some(f) = fixed.get(n as usize) {
            return f.clone();
        }
        // A random well-formed prefix (so programs get past their header checks), random
        // bytes after it, a random length, sometimes cut short.
        let base = &fixed[(self.rand() % fixed.len() as u64) as usize];
        let len = 14 + (self.rand() % 1501) as usize;
        let mut p = vec![0u8; len];
        for b in p.iter_mut() {
            *b = self.rand() as u8;
        }
        let keep = (self.rand() % (base.len() as u64 + 1)) as usize;
        let keep = keep.min(len);
        p[..keep].copy_from_slice(&base[..keep]);
        p
    }
}

/// Well-formed frames between the lab's addresses (198.18.0.0/15, 2001:2::/48).
fn fixed_frames() -> Vec<Vec<u8>> {
    let eth = |ty: u16| {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        f.extend_from_slice(&ty.to_be_bytes());
        f
    };
    let ipv4 = |proto: u8, frag: u16, payload: &[u8]| {
        let mut f = eth(0x0800);
        let total = (20 + payload.len()) as u16;
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0x12, 0x34]);
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, proto, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
        let sum = netpkt::checksum::finish(netpkt::checksum::sum(&h, 0));
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&h);
        f.extend_from_slice(payload);
        f
    };
    let ipv6 = |next: u8, payload: &[u8]| {
        let mut f = eth(0x86dd);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        f.extend_from_slice(&[next, 64]);
        f.extend_from_slice(&[0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(payload);
        f
    };
    let udp = |dport: u16, len: usize| {
        let mut u = vec![0x9c, 0x40];
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + len) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend((0..len).map(|i| i as u8));
        u
    };
    let tcp = |dport: u16, flags: u8, len: usize| {
        let mut t = vec![0x9c, 0x40];
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend((0..len).map(|i| (i * 7) as u8));
        t
    };
    let icmp_echo = {
        let mut i = vec![8, 0, 0, 0, 0x4e, 0x56, 0, 1];
        i.extend(0..32u8);
        let sum = netpkt::checksum::finish(netpkt::checksum::sum(&i, 0));
        i[2..4].copy_from_slice(&sum.to_be_bytes());
        i
    };
    let mut arp = eth(0x0806);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 198, 18, 0, 1]);
    arp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 198, 18, 0, 2]);
    let mut vlan = eth(0x8100);
    vlan.extend_from_slice(&[0, 5, 0x08, 0x00]);
    vlan.extend_from_slice(&ipv4(17, 0, &udp(9, 18))[14..]);
    let short_ip = ipv4(17, 0, &udp(9, 0))[..30].to_vec();
    vec![
        ipv4(17, 0, &udp(9, 18)),
        ipv4(17, 0, &udp(53, 100)),
        ipv4(6, 0, &tcp(80, 0x02, 0)),
        ipv4(6, 0, &tcp(5201, 0x18, 1400)),
        ipv4(1, 0, &icmp_echo),
        ipv4(17, 0x2000, &udp(9, 64)),
        ipv4(17, 0x00b9, &[0xaa; 40]),
        ipv6(17, &udp(9, 18)),
        ipv6(6, &tcp(443, 0x10, 200)),
        ipv6(58, &[128, 0, 0, 0, 0, 1, 0, 1]),
        arp,
        vlan,
        short_ip,
        eth(0x0800),
        eth(0x88cc),
    ]
}
