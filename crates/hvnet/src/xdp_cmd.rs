//! `hvnet xdp test`: runs an XDP program of a clang-built object on one packet, like
//! `bpftool prog run` (`BPF_PROG_TEST_RUN`), in hvnet's own eBPF runtime (the `xdp` crate).
//!
//! The packet is placed in a page at the driver's headroom, the program runs `--repeat`
//! times on a fresh copy each time, and the verdict, the output packet (from the metadata on),
//! every map's contents and the mean time per run are printed, as text or as one JSON object.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use xdp::elf::Object;
use xdp::{Map, Program, RunResult, XdpBuffer};

/// Arguments of `hvnet xdp`.
#[derive(Args, Debug)]
pub struct XdpArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: XdpCommand,
}

/// Subcommands of `hvnet xdp`.
#[derive(Subcommand, Debug)]
pub enum XdpCommand {
    /// Run a program on one packet and print the verdict, output packet, maps and time per run.
    Test(TestArgs),
    /// Attach a program to a running VM's NIC (native, in netvsc's receive path).
    Load(LoadArgs),
    /// Detach a VM's program.
    Unload(VmArgs),
    /// Show a VM's program, its maps and per-verdict counters.
    Status(VmArgs),
    /// Map operations on a VM's program.
    Map(MapArgs),
    /// Run programs in hvnet's runtime and in the kernel's on the same packets and compare
    /// return codes, output packets and maps (needs root).
    Diff(crate::xdp_diff::DiffArgs),
}

/// Which VM (its guest's control socket).
#[derive(Args, Debug)]
pub struct VmArgs {
    #[command(flatten)]
    pub dir: crate::RunDir,
    /// The VM.
    #[arg(long)]
    pub vm: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `hvnet xdp load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    #[command(flatten)]
    pub vm: VmArgs,
    /// The BPF object.
    #[arg(value_name = "PROG.o")]
    pub object: PathBuf,
    /// The program's ELF section (or function name).
    #[arg(long, value_name = "S")]
    pub section: Option<String>,
}

/// Arguments of `hvnet xdp map`.
#[derive(Args, Debug)]
pub struct MapArgs {
    #[command(subcommand)]
    pub op: MapOp,
}

/// Map operations.
#[derive(Subcommand, Debug)]
pub enum MapOp {
    /// Print every entry of a map.
    Dump {
        #[command(flatten)]
        vm: VmArgs,
        /// The map's name.
        map: String,
    },
}

/// Arguments of `hvnet xdp test`.
#[derive(Args, Debug)]
pub struct TestArgs {
    /// The BPF object (`clang -O2 -g -target bpf -c prog.c -o prog.o`).
    #[arg(value_name = "PROG.o")]
    pub object: PathBuf,
    /// The program's ELF section (or function name); default: the object's only `xdp`
    /// section.
    #[arg(long, value_name = "S")]
    pub section: Option<String>,
    /// The packet: a file holding the raw frame from its Ethernet header on.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "hex",
        required_unless_present = "hex"
    )]
    pub packet: Option<PathBuf>,
    /// The packet as hex digits (spaces, `:` and a `0x` prefix allowed).
    #[arg(long, value_name = "HEX")]
    pub hex: Option<String>,
    /// Runs; each starts from the original packet, maps keep their changes.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub repeat: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `hvnet xdp`.
pub fn run(args: XdpArgs) -> Result<i32> {
    match args.command {
        XdpCommand::Test(a) => test(a),
        XdpCommand::Diff(a) => crate::xdp_diff::run(a),
        XdpCommand::Load(a) => {
            let path = std::fs::canonicalize(&a.object)
                .with_context(|| format!("{}", a.object.display()))?;
            let r = guest_request(
                &a.vm,
                json!({"cmd": "xdp_load", "path": path, "section": a.section}),
            )?;
            print_reply(&a.vm, &r, |r| {
                format!("attached ({} instructions)", r["instructions"])
            })
        }
        XdpCommand::Unload(v) => {
            let r = guest_request(&v, json!({"cmd": "xdp_unload"}))?;
            print_reply(&v, &r, |_| "detached".into())
        }
        XdpCommand::Status(v) => {
            let r = guest_request(&v, json!({"cmd": "xdp_status"}))?;
            print_reply(&v, &r, |r| {
                if r["attached"] != true {
                    return "no XDP program attached".into();
                }
                let mut out = format!(
                    "program: {}\ninstructions: {} ({})\nruns: {} (faults {})\nverdicts:",
                    r["program"].as_str().unwrap_or("?"),
                    r["instructions"],
                    r["runtime"].as_str().unwrap_or("?"),
                    r["runs"],
                    r["faults"]
                );
                if let Some(v) = r["verdicts"].as_object() {
                    for (k, n) in v {
                        let _ = write!(out, " {k} {n}");
                    }
                }
                for m in r["maps"].as_array().into_iter().flatten() {
                    let _ = write!(
                        out,
                        "\nmap {}: {} key {} value {} max {}",
                        m["name"].as_str().unwrap_or("?"),
                        m["type"].as_str().unwrap_or("?"),
                        m["key_size"],
                        m["value_size"],
                        m["max_entries"]
                    );
                }
                out
            })
        }
        XdpCommand::Map(MapArgs {
            op: MapOp::Dump { vm, map },
        }) => {
            let r = guest_request(&vm, json!({"cmd": "xdp_map_dump", "map": map}))?;
            print_reply(&vm, &r, |r| {
                let mut out = String::new();
                for e in r["entries"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "key: {}  value: {}",
                        e["key"].as_str().unwrap_or(""),
                        e["value"].as_str().unwrap_or("")
                    );
                }
                let n = r["entries"].as_array().map_or(0, Vec::len);
                let _ = write!(out, "Found {n} elements");
                out
            })
        }
    }
}

/// Sends a request to the VM's guest.
fn guest_request(v: &VmArgs, req: Value) -> Result<Value> {
    crate::ctl::request(
        &crate::ctl::guest_socket(&v.dir.run_dir, &v.dir.lab, &v.vm),
        &req,
    )
    .with_context(|| format!("VM {}", v.vm))
}

/// Prints a reply as JSON or text; exit code 0.
fn print_reply(v: &VmArgs, r: &Value, text: impl Fn(&Value) -> String) -> Result<i32> {
    if v.json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        println!("{}", text(r));
    }
    Ok(0)
}

fn test(a: TestArgs) -> Result<i32> {
    let bytes =
        std::fs::read(&a.object).with_context(|| format!("reading {}", a.object.display()))?;
    let packet = match (&a.packet, &a.hex) {
        (Some(p), _) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        (None, Some(h)) => parse_hex(h)?,
        (None, None) => bail!("give the packet with --packet FILE or --hex HEX"),
    };
    let obj = Object::parse(&bytes).with_context(|| a.object.display().to_string())?;
    let prog = obj
        .program(a.section.as_deref())
        .with_context(|| a.object.display().to_string())?;
    let out = run_test(&prog, obj.map_names(), &packet, a.repeat.max(1));
    if a.json {
        println!("{}", out.to_json());
    } else {
        print!("{}", out.to_text());
    }
    Ok(0)
}

/// A map's entries: (key, value) pairs.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The outcome of `hvnet xdp test`.
#[derive(Debug)]
pub struct TestOutput {
    /// The last run's result.
    pub result: RunResult,
    /// The last run's packet, from the metadata on.
    pub data_out: Vec<u8>,
    /// Maps by name: (key, value) pairs sorted by key, per-CPU values concatenated.
    pub maps: Vec<(String, Entries)>,
    /// Mean time per run.
    pub ns_per_run: u64,
    /// `"jit"` or `"interpreter"`: what ran the program.
    pub runtime: &'static str,
}

/// Runs `prog` `repeat` times on a fresh copy of `packet` and collects the outcome.
pub fn run_test(prog: &Program, map_names: &[String], packet: &[u8], repeat: u32) -> TestOutput {
    // Fresh copies are made in batches outside the timed part: reading the clock around
    // each run cost more than a short program's run.
    const BATCH: u32 = 32;
    let template = XdpBuffer::new(packet);
    let mut total = Duration::ZERO;
    let mut last = None;
    let mut done = 0;
    while done < repeat {
        let n = BATCH.min(repeat - done);
        let mut bufs: Vec<XdpBuffer> = (0..n).map(|_| template.clone()).collect();
        let t = Instant::now();
        let mut result = None;
        for buf in bufs.iter_mut() {
            result = Some(prog.run(buf, 0));
        }
        total += t.elapsed();
        last = result.zip(bufs.pop());
        done += n;
    }
    let (result, buf) = last.expect("repeat >= 1");
    let mut data_out = buf.meta().to_vec();
    data_out.extend_from_slice(buf.frame());
    let maps = prog
        .maps()
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let name = map_names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("map{i}"));
            (name, dump(m))
        })
        .collect();
    TestOutput {
        result,
        data_out,
        maps,
        ns_per_run: (total.as_nanos() / u128::from(repeat)) as u64,
        runtime: runtime_name(prog),
    }
}

/// A map's entries sorted by key; per-CPU values are the CPUs' values back to back (without
/// the kernel's 8-byte padding of each).
pub(crate) fn dump(m: &Map) -> Entries {
    let mut keys = m.keys();
    keys.sort();
    let size = m.def().value_size as usize;
    keys.into_iter()
        .filter_map(|k| {
            let v = m.lookup(&k).ok()?;
            let v = if m.def().kind.per_cpu() {
                let stride = size.next_multiple_of(8);
                v.chunks(stride).flat_map(|c| &c[..size]).copied().collect()
            } else {
                v
            };
            Some((k, v))
        })
        .collect()
}

/// The name of an XDP action.
pub fn verdict_name(action: u32) -> String {
    match action {
        xdp::XDP_ABORTED => "XDP_ABORTED".into(),
        xdp::XDP_DROP => "XDP_DROP".into(),
        xdp::XDP_PASS => "XDP_PASS".into(),
        xdp::XDP_TX => "XDP_TX".into(),
        xdp::XDP_REDIRECT => "XDP_REDIRECT".into(),
        n => format!("unknown ({n})"),
    }
}

/// What runs `prog`: `"jit"` or `"interpreter"`.
pub(crate) fn runtime_name(prog: &Program) -> &'static str {
    if prog.is_jitted() {
        "jit"
    } else {
        "interpreter"
    }
}

impl TestOutput {
    /// The JSON form: `retval`, `verdict`, `data_out`, `maps`, `ns_per_run`, `insns` (of
    /// the last run), `runtime` (and `fault` when the run faulted).
    pub fn to_json(&self) -> Value {
        let maps: serde_json::Map<String, Value> = self
            .maps
            .iter()
            .map(|(n, entries)| {
                let list = entries
                    .iter()
                    .map(|(k, v)| json!({"key": hex(k), "value": hex(v)}))
                    .collect();
                (n.clone(), Value::Array(list))
            })
            .collect();
        let mut o = json!({
            "retval": self.result.action,
            "verdict": verdict_name(self.result.action),
            "data_out": hex(&self.data_out),
            "maps": maps,
            "ns_per_run": self.ns_per_run,
            "insns": self.result.insns,
            "runtime": self.runtime,
        });
        if let Some(f) = &self.result.faulted {
            o["fault"] = Value::String(f.to_string());
        }
        o
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "verdict: {} (retval {})",
            verdict_name(self.result.action),
            self.result.action
        );
        if let Some(f) = &self.result.faulted {
            let _ = writeln!(s, "fault: {f}");
        }
        let _ = writeln!(s, "data_out: {} bytes", self.data_out.len());
        for (i, c) in self.data_out.chunks(16).enumerate() {
            let _ = writeln!(s, "  {:04x}  {}", i * 16, spaced_hex(c));
        }
        for (n, entries) in &self.maps {
            let _ = writeln!(s, "map {n}: {} entries", entries.len());
            for (k, v) in entries {
                let _ = writeln!(s, "  key {}  value {}", spaced_hex(k), spaced_hex(v));
            }
        }
        let _ = writeln!(
            s,
            "time: {} ns per run ({}, {} instructions)",
            self.ns_per_run, self.runtime, self.result.insns
        );
        s
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

fn spaced_hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses hex digits, ignoring whitespace, `:` and a leading `0x`.
pub fn parse_hex(s: &str) -> Result<Vec<u8>> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let digits: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b':')
        .collect();
    if !digits.len().is_multiple_of(2) {
        bail!("--hex: odd number of hex digits");
    }
    digits
        .chunks(2)
        .map(|p| {
            let t = std::str::from_utf8(p).map_err(|_| anyhow!("--hex: not hex"))?;
            u8::from_str_radix(t, 16).map_err(|_| anyhow!("--hex: {t:?} is not a hex byte"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BTF: &[u8] = include_bytes!("../../xdp/tests/fixtures/btf.o");

    #[test]
    fn hex_parsing() {
        assert_eq!(parse_hex("0x01:ab cd").unwrap(), [1, 0xab, 0xcd]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
    }

    #[test]
    fn json_output() {
        let obj = Object::parse(BTF).unwrap();
        let prog = obj.program(Some("xdp")).unwrap();
        let out = run_test(&prog, obj.map_names(), &[0xaa; 20], 3);
        let j = out.to_json();
        assert_eq!(j["retval"], 2);
        assert_eq!(j["verdict"], "XDP_PASS");
        assert_eq!(j["data_out"], "aa".repeat(20));
        assert_eq!(j["maps"]["runs"][0]["value"], "03000000");
        assert_eq!(j["maps"]["by_len"][0]["key"], "14000000");
        assert_eq!(j["maps"]["by_len"][0]["value"], "0300000000000000");
        assert!(j["ns_per_run"].is_u64());
        assert!(out.to_text().contains("verdict: XDP_PASS"));
    }
}
