//! `hvnet bench`: measurements in one run, each against a reference.
//!
//! `hvnet bench tcp` moves one TCP stream for the same time over a kernel veth pair
//! between two fresh namespaces and over the hvnet lab (our driver and host), and
//! reports both throughputs, their ratio and the CPU time each spends per GiB (all
//! CPUs, user + system + interrupts, from /proc/stat: the whole machine's cost).

use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::lab::{self, Lab, LabArgs};
use crate::traffic::{self, Limit};
use crate::{RunDir, ctl, netns, signals};

/// Arguments of `hvnet bench`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

/// What to measure.
#[derive(Subcommand, Clone, Debug)]
pub enum BenchWhat {
    /// One TCP stream over a veth pair and over the hvnet lab, same time each.
    Tcp(TcpArgs),
    /// XDP: per-program time in our runtime and the kernel's, and the lab's receive rate
    /// with no program, a PASS and a DROP program.
    Xdp(crate::bench_xdp::XdpBenchArgs),
}

/// Arguments of `hvnet bench tcp`.
#[derive(Args, Clone, Debug)]
pub struct TcpArgs {
    #[command(flatten)]
    pub dir: RunDir,
    /// Seconds per transfer.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Which Windows host the lab emulates.
    #[arg(long, default_value = "azure")]
    pub profile: netvsp::HostProfile,
    /// LRO (host RSC) on the receiving VM: on or off (default: the profile's default).
    #[arg(long)]
    pub lro: Option<OnOff>,
    /// GRO on the receiving VM: on or off (default on).
    #[arg(long)]
    pub gro: Option<OnOff>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// ethtool's on/off.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// Runs a benchmark.
pub fn run(args: BenchArgs) -> Result<i32> {
    match args.what {
        BenchWhat::Tcp(a) => tcp(a),
        BenchWhat::Xdp(a) => crate::bench_xdp::run(a),
    }
}

/// CPU time used by the whole machine so far, in seconds.
fn machine_cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let line = stat.lines().next().unwrap_or_default();
    // cpu user nice system idle iowait irq softirq steal …: everything but idle/iowait.
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        bail!("unexpected /proc/stat format");
    }
    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(busy as f64 / hz)
}

/// One measured transfer.
#[derive(Debug, serde::Serialize)]
struct Measured {
    gbit_per_s: f64,
    bytes: u64,
    seconds: f64,
    cpu_seconds_per_gib: f64,
}

fn measure(
    src: &str,
    dst_ns: &str,
    dst: IpAddr,
    port: u16,
    secs: u64,
    label: &str,
) -> Result<Measured> {
    let cpu0 = machine_cpu_seconds()?;
    let r = traffic::tcp_transfer(
        src,
        dst_ns,
        dst,
        port,
        Limit::Time(Duration::from_secs(secs)),
        |got| {
            lab::progress(&format!(
                "{label}: {:.1} GiB",
                got as f64 / (1u64 << 30) as f64
            ));
            if signals::stop_requested() {
                bail!("interrupted");
            }
            Ok(())
        },
    )?;
    let cpu = machine_cpu_seconds()? - cpu0;
    let gib = r.bytes as f64 / (1u64 << 30) as f64;
    Ok(Measured {
        gbit_per_s: r.gbit_per_s,
        bytes: r.bytes,
        seconds: r.seconds,
        cpu_seconds_per_gib: cpu / gib.max(1e-9),
    })
}

/// Fails, naming the namespace and the fix, when one of `names` exists already (a lab or
/// bench running, or a stale one).
pub(crate) fn ensure_free<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<()> {
    for ns in names {
        if netns::exists(ns) {
            bail!(
                "network namespace {ns} already exists (a lab or bench running?); `ip netns del {ns}` if stale"
            );
        }
    }
    Ok(())
}

/// Starts the lab (one queue, no traffic of its own) for a benchmark; returns it and vm2's
/// control socket.
pub(crate) fn start_lab(
    dir: &RunDir,
    profile: netvsp::HostProfile,
) -> Result<(Lab, std::path::PathBuf)> {
    let lab_args = LabArgs {
        dir: dir.clone(),
        profile,
        bytes: 0,
        bytes6: 0,
        pings: 0,
        queues: 1,
        keep: false,
        trace: None,
        json: false,
    };
    let mut l = Lab::new(dir);
    lab::start(&lab_args, &mut l)?;
    let guest = ctl::guest_socket(&dir.run_dir, &dir.lab, lab::VMS[1].0);
    Ok((l, guest))
}

fn tcp(args: TcpArgs) -> Result<i32> {
    lab::preflight()?;
    signals::install();
    const VETH: [(&str, &str); 2] = [("hvbench-a", "198.19.0.1"), ("hvbench-b", "198.19.0.2")];
    ensure_free(VETH.iter().map(|v| v.0).chain(lab::VMS.iter().map(|v| v.0)))?;
    // The kernel's own path: a veth pair between two fresh namespaces.
    let veth = {
        let mut l = Lab::new(&args.dir);
        for (ns, _) in VETH {
            l.add_namespace(ns)?;
        }
        netns::ip(&[
            "link", "add", "hvb0", "netns", VETH[0].0, "type", "veth", "peer", "name", "hvb1",
            "netns", VETH[1].0,
        ])?;
        for (i, (ns, addr)) in VETH.iter().enumerate() {
            let dev = format!("hvb{i}");
            netns::ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", &dev])?;
            netns::ip(&["-n", ns, "link", "set", &dev, "up"])?;
        }
        let m = measure(
            VETH[0].0,
            VETH[1].0,
            VETH[1].1.parse()?,
            5301,
            args.seconds,
            "veth",
        );
        drop(l);
        m?
    };
    // Ours: the lab.
    let (l, guest) = start_lab(&args.dir, args.profile)?;
    let mut set = serde_json::Map::new();
    if let Some(v) = args.lro {
        set.insert("lro".into(), (v == OnOff::On).into());
    }
    if let Some(v) = args.gro {
        set.insert("gro".into(), (v == OnOff::On).into());
    }
    if !set.is_empty() {
        ctl::request(&guest, &json!({"cmd": "set_features", "set": set}))?;
    }
    let features = ctl::request(&guest, &json!({"cmd": "features"}))?;
    let ours = measure(
        lab::VMS[0].0,
        lab::VMS[1].0,
        lab::VMS[1].1.parse()?,
        5302,
        args.seconds,
        "hvnet",
    )?;
    drop(l);
    lab::progress("");
    let on = |f: &str| features["features"][f]["on"].as_bool().unwrap_or(false);
    let ratio = ours.gbit_per_s / veth.gbit_per_s.max(1e-9);
    let report = json!({
        "profile": args.profile.name(),
        "seconds": args.seconds,
        "lro": on("lro"),
        "gro": on("gro"),
        "veth": veth,
        "hvnet": ours,
        "ratio": ratio,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    let _ = std::io::stdout().flush();
    Ok(0)
}

fn print_table(r: &Value) {
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    println!(
        "hvnet bench tcp — one stream, {} s each; profile {}, LRO {}, GRO {}",
        r["seconds"],
        r["profile"].as_str().unwrap_or("?"),
        if r["lro"].as_bool() == Some(true) {
            "on"
        } else {
            "off"
        },
        if r["gro"].as_bool() == Some(true) {
            "on"
        } else {
            "off"
        },
    );
    println!("{:<8} {:>12} {:>16}", "path", "Gbit/s", "CPU s per GiB");
    for k in ["veth", "hvnet"] {
        println!(
            "{:<8} {:>12.2} {:>16.3}",
            k,
            f(&r[k], "gbit_per_s"),
            f(&r[k], "cpu_seconds_per_gib")
        );
    }
    println!("hvnet ÷ veth = {:.2}", f(r, "ratio"));
}
