//! `hvnet bench xdp`: what XDP costs.
//!
//! 1. Per program of a corpus: mean ns per run in hvnet's runtime and in the kernel's
//!    (`BPF_PROG_TEST_RUN`, JITed) on the same frame, their ratio and the geometric mean.
//! 2. The lab's receive path: a UDP flood (18-byte datagrams) from vm1 to vm2 for the same
//!    time with no program, with a program that returns `XDP_PASS` and with one that returns
//!    `XDP_DROP` on vm2, counted as frames vm2's driver handled per second (delivered +
//!    dropped + transmitted by XDP, from its `ethtool -S` counters).

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::lab;
use crate::{RunDir, ctl, netns, signals};

/// Arguments of `hvnet bench xdp`.
#[derive(Args, Clone, Debug)]
pub struct XdpBenchArgs {
    #[command(flatten)]
    pub dir: RunDir,
    /// XDP objects to time against the kernel (default: the repository's corpus,
    /// `crates/hvnet/tests/fixtures/corpus/*.o`, when run from the checkout).
    #[arg(value_name = "PROG.o")]
    pub objects: Vec<PathBuf>,
    /// Seconds of UDP flood per lab phase.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Only the corpus timing, no lab.
    #[arg(long)]
    pub no_lab: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

const PASS_O: &[u8] = include_bytes!("bench_xdp/xdp_pass.o");
const DROP_O: &[u8] = include_bytes!("bench_xdp/xdp_drop.o");

/// Runs `hvnet bench xdp`.
pub fn run(args: XdpBenchArgs) -> Result<i32> {
    let objects = if args.objects.is_empty() {
        default_corpus()
    } else {
        args.objects.clone()
    };
    let mut report = serde_json::Map::new();
    if !objects.is_empty() {
        let t = crate::xdp_diff::timings(&objects)?;
        let geomean = |f: &dyn Fn(&crate::xdp_diff::Timing) -> f64| {
            (t.iter().map(|x| f(x).ln()).sum::<f64>() / t.len() as f64).exp()
        };
        report.insert(
            "programs".into(),
            t.iter()
                .map(|x| {
                    json!({"program": x.name, "runtime": x.runtime,
                           "ours_ns_per_run": x.ours_ns,
                           "interpreter_ns_per_run": x.interpreter_ns,
                           "kernel_ns_per_run": x.kernel_ns,
                           "ratio": x.ours_ns / x.kernel_ns.max(1.0)})
                })
                .collect(),
        );
        report.insert(
            "geomean_ratio".into(),
            geomean(&|x| x.ours_ns / x.kernel_ns.max(1.0)).into(),
        );
        report.insert(
            "interpreter_geomean_ratio".into(),
            geomean(&|x| x.interpreter_ns / x.kernel_ns.max(1.0)).into(),
        );
    }
    if !args.no_lab {
        report.insert("lab".into(), lab_phases(&args)?);
    }
    let report = Value::Object(report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    let _ = std::io::stdout().flush();
    Ok(0)
}

/// The corpus, when run from a checkout.
fn default_corpus() -> Vec<PathBuf> {
    let dir = PathBuf::from("crates/hvnet/tests/fixtures/corpus");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    v.sort();
    v
}

fn lab_phases(args: &XdpBenchArgs) -> Result<Value> {
    lab::preflight()?;
    signals::install();
    crate::bench::ensure_free(lab::VMS.iter().map(|v| v.0))?;
    // Ws2016: no RSC, and XDP needs LRO off.
    let (l, guest) = crate::bench::start_lab(&args.dir, netvsp::HostProfile::Ws2016)?;
    let objs = std::env::temp_dir().join(format!("hvnet-bench-xdp-{}", std::process::id()));
    std::fs::create_dir_all(&objs).with_context(|| format!("{}", objs.display()))?;
    let mut phases = Vec::new();
    for (name, obj) in [
        ("none", None),
        ("pass", Some(PASS_O)),
        ("drop", Some(DROP_O)),
    ] {
        if let Some(bytes) = obj {
            let path = objs.join(format!("xdp_{name}.o"));
            std::fs::write(&path, bytes).with_context(|| format!("{}", path.display()))?;
            let r = ctl::request(&guest, &json!({"cmd": "xdp_load", "path": path}))?;
            if r["ok"] != true {
                bail!("loading the {name} program on vm2: {}", r["error"]);
            }
        }
        let before = handled(&guest)?;
        let (sent, secs) = flood(args.seconds, name)?;
        let after = handled(&guest)?;
        phases.push(json!({
            "program": name,
            "sent_per_s": sent as f64 / secs,
            "handled_per_s": (after - before) as f64 / secs,
        }));
        if obj.is_some() {
            ctl::request(&guest, &json!({"cmd": "xdp_unload"}))?;
        }
    }
    let _ = std::fs::remove_dir_all(&objs);
    drop(l);
    lab::progress("");
    Ok(Value::Array(phases))
}

/// Frames vm2's driver has handled: delivered, dropped, sent or redirected by XDP.
fn handled(guest: &std::path::Path) -> Result<u64> {
    let s = ctl::request(guest, &json!({"cmd": "stats"}))?;
    let obj = s.as_object().context("stats reply is not an object")?;
    Ok(obj
        .iter()
        .filter(|(k, _)| {
            k.starts_with("rx_queue_")
                && ["_packets", "_xdp_drop", "_xdp_tx", "_xdp_redirect"]
                    .iter()
                    .any(|s| k.ends_with(s))
        })
        .filter_map(|(_, v)| v.as_u64())
        .sum())
}

/// Floods vm2's UDP port 9 from vm1 for `secs`; returns datagrams sent and the seconds taken.
/// A socket on vm2 drains what reaches its kernel.
fn flood(secs: u64, label: &str) -> Result<(u64, f64)> {
    let dst: SocketAddr = SocketAddr::new(lab::VMS[1].1.parse()?, 9);
    let sink = netns::run_in(lab::VMS[1].0, move || {
        let s = UdpSocket::bind(dst).context("binding vm2's UDP port 9")?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = [0u8; 64];
        let mut n = 0u64;
        while s.recv(&mut buf).is_ok() {
            n += 1;
        }
        Ok(n)
    });
    std::thread::sleep(Duration::from_millis(100));
    let label = label.to_owned();
    let sender = netns::run_in(lab::VMS[0].0, move || {
        let s = UdpSocket::bind("0.0.0.0:0").context("UDP socket on vm1")?;
        let payload = [0x5au8; 18];
        let start = Instant::now();
        let mut sent = 0u64;
        let mut last = start;
        while start.elapsed() < Duration::from_secs(secs) {
            for _ in 0..256 {
                if s.send_to(&payload, dst).is_ok() {
                    sent += 1;
                }
            }
            if last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                lab::progress(&format!("xdp {label}: {sent} datagrams sent"));
            }
            if signals::stop_requested() {
                bail!("interrupted");
            }
        }
        Ok((sent, start.elapsed().as_secs_f64()))
    });
    let r = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let _ = sink.join();
    Ok(r)
}

fn print_table(r: &Value) {
    if let Some(p) = r["programs"].as_array() {
        println!(
            "{:<24} {:>12} {:>12} {:>13} {:>15} {:>7}",
            "program", "runtime", "ours ns/run", "interp ns/run", "kernel ns/run", "ratio"
        );
        for x in p {
            println!(
                "{:<24} {:>12} {:>12.1} {:>13.1} {:>15.1} {:>7.2}",
                x["program"].as_str().unwrap_or(""),
                x["runtime"].as_str().unwrap_or(""),
                x["ours_ns_per_run"].as_f64().unwrap_or(0.0),
                x["interpreter_ns_per_run"].as_f64().unwrap_or(0.0),
                x["kernel_ns_per_run"].as_f64().unwrap_or(0.0),
                x["ratio"].as_f64().unwrap_or(0.0)
            );
        }
        println!(
            "geometric mean ratio (ours / kernel JIT): {:.2} (interpreter alone: {:.2})",
            r["geomean_ratio"].as_f64().unwrap_or(0.0),
            r["interpreter_geomean_ratio"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(l) = r["lab"].as_array() {
        println!();
        println!(
            "{:<10} {:>14} {:>18}",
            "program", "sent/s (vm1)", "handled/s (vm2)"
        );
        for x in l {
            println!(
                "{:<10} {:>14.0} {:>18.0}",
                x["program"].as_str().unwrap_or(""),
                x["sent_per_s"].as_f64().unwrap_or(0.0),
                x["handled_per_s"].as_f64().unwrap_or(0.0)
            );
        }
    }
}
