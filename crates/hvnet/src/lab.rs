//! `hvnet lab`: an emulated host and two VMs in namespaces, real traffic, a report.
//!
//! The lab starts `hvnet host` and one `hvnet guest` per VM as child processes (the same
//! commands a user can run by hand), waits for each VM's `eth0`, runs an ICMP echo test
//! and a bulk TCP transfer (IPv4 and IPv6) from sockets opened inside the namespaces,
//! prints a report and removes everything it made — on success, failure or Ctrl-C.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::traffic::{self, EchoResult, TcpResult};
use crate::{RunDir, ctl, netns, signals};

/// Arguments of `hvnet lab`.
#[derive(Args, Clone, Debug)]
pub struct LabArgs {
    #[command(flatten)]
    pub dir: RunDir,
    /// Which Windows host to emulate: ws2012r2, ws2016, ws2019 or azure.
    #[arg(long, default_value = "azure")]
    pub profile: netvsp::HostProfile,
    /// Bytes for the IPv4 TCP transfer (suffixes K, M, G).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    pub bytes: u64,
    /// Bytes for the IPv6 TCP transfer.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub bytes6: u64,
    /// ICMP echo requests per address family.
    #[arg(long, default_value_t = 20)]
    pub pings: u32,
    /// Queues (VMBus channels) each VM asks for.
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    /// Leave the lab running after the tests until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// Write each process's control-message trace into DIR (host.jsonl, vm1.jsonl, …).
    #[arg(long, value_name = "DIR")]
    pub trace: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|e| format!("bad size {s:?}: {e}"))
}

/// The VMs of the lab: name, IPv4 and IPv6 address.
pub(crate) const VMS: [(&str, &str, &str); 2] = [
    ("vm1", "198.18.0.1", "2001:2::1"),
    ("vm2", "198.18.0.2", "2001:2::2"),
];

/// Everything the lab made, removed on drop.
pub(crate) struct Lab {
    dir: RunDir,
    children: Vec<(String, Child)>,
    namespaces: Vec<String>,
}

impl Lab {
    /// An empty lab: nothing made yet.
    pub(crate) fn new(dir: &RunDir) -> Self {
        Self {
            dir: dir.clone(),
            children: Vec::new(),
            namespaces: Vec::new(),
        }
    }

    /// Creates a namespace that the lab removes on drop.
    pub(crate) fn add_namespace(&mut self, name: &str) -> Result<()> {
        netns::create(name)?;
        self.namespaces.push(name.to_owned());
        Ok(())
    }

    fn spawn(&mut self, name: &str, args: &[String]) -> Result<()> {
        let exe = std::env::current_exe().context("find the hvnet executable")?;
        let mut cmd = Command::new(exe);
        cmd.args(args).stdin(Stdio::null());
        // SAFETY: prctl in the child before exec is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // Die with the lab, even if it is killed with SIGKILL.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("start {name}"))?;
        self.children.push((name.to_owned(), child));
        Ok(())
    }

    /// Fails if a child exited.
    pub(crate) fn check_children(&mut self) -> Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited early ({status})");
            }
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Guests first (they tear their NICs down cleanly), then the host.
        for (_, child) in self.children.iter_mut().rev() {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.namespaces {
            if let Err(e) = netns::delete(ns) {
                eprintln!("hvnet lab: cleanup: {e:#}");
            }
        }
        let dir = ctl::lab_dir(&self.dir.run_dir, &self.dir.lab);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Shows progress: rewritten in place on a terminal, a line every 2 s otherwise.
pub(crate) fn progress(msg: &str) {
    use std::io::IsTerminal;
    use std::sync::Mutex;
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K{msg}");
        let _ = std::io::stderr().flush();
        return;
    }
    let mut last = LAST.lock().unwrap();
    if !msg.is_empty() && last.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) {
        eprintln!("{msg}");
        *last = Some(Instant::now());
    }
}

fn wait_for(
    what: &str,
    lab: &mut Lab,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if signals::stop_requested() {
            bail!("interrupted");
        }
        lab.check_children()?;
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub(crate) fn preflight() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab needs root (network namespaces and TAP devices): run it with sudo");
    }
    if !Path::new("/dev/net/tun").exists() {
        bail!("/dev/net/tun is missing: load the tun module (modprobe tun)");
    }
    netns::ip(&["-V"]).context("iproute2 is needed")?;
    Ok(())
}

/// Runs the lab; returns the exit code.
pub fn run(args: LabArgs) -> Result<i32> {
    preflight()?;
    signals::install();
    for (vm, _, _) in VMS {
        if netns::exists(vm) {
            bail!(
                "network namespace {vm} already exists: another lab is running, or one was \
                 killed; remove it with `ip netns del {vm}`"
            );
        }
    }
    let mut lab = Lab::new(&args.dir);
    let result = run_lab(&args, &mut lab);
    if let Err(e) = &result
        && signals::stop_requested()
    {
        eprintln!("\nhvnet lab: interrupted ({e:#}); cleaning up");
    }
    drop(lab);
    result
}

/// Starts the host and the guests and waits until every VM's NIC is up.
pub(crate) fn start(args: &LabArgs, lab: &mut Lab) -> Result<()> {
    for (vm, _, _) in VMS {
        lab.add_namespace(vm)?;
    }
    if let Some(t) = &args.trace {
        std::fs::create_dir_all(t).with_context(|| format!("create {}", t.display()))?;
    }
    let common = vec![
        "--lab".to_string(),
        args.dir.lab.clone(),
        "--run-dir".into(),
        args.dir.run_dir.display().to_string(),
    ];
    let mut host_args = vec!["host".to_string()];
    host_args.extend(common.clone());
    host_args.extend(["--profile".into(), args.profile.name().into()]);
    for (vm, _, _) in VMS {
        host_args.extend(["--vm".into(), vm.into()]);
    }
    if let Some(t) = &args.trace {
        host_args.extend(["--trace".into(), t.join("host.jsonl").display().to_string()]);
    }
    progress("starting the host…");
    lab.spawn("hvnet host", &host_args)?;
    let dir = args.dir.clone();
    wait_for("the host's sockets", lab, Duration::from_secs(10), || {
        VMS.iter()
            .all(|(vm, _, _)| ctl::vmbus_socket(&dir.run_dir, &dir.lab, vm).exists())
            && ctl::host_socket(&dir.run_dir, &dir.lab).exists()
    })?;
    for (vm, v4, v6) in VMS {
        let mut a = vec!["guest".to_string()];
        a.extend(common.clone());
        a.extend([
            "--vm".into(),
            vm.into(),
            "--netns".into(),
            vm.into(),
            "--address".into(),
            format!("{v4}/24"),
            "--address".into(),
            format!("{v6}/64"),
            "--queues".into(),
            args.queues.to_string(),
        ]);
        if let Some(t) = &args.trace {
            a.extend([
                "--trace".into(),
                t.join(format!("{vm}.jsonl")).display().to_string(),
            ]);
        }
        progress(&format!("starting {vm}…"));
        lab.spawn(&format!("hvnet guest {vm}"), &a)?;
    }
    for (vm, _, _) in VMS {
        let path = ctl::guest_socket(&dir.run_dir, &dir.lab, vm);
        wait_for(
            &format!("{vm}'s NIC to come up"),
            lab,
            Duration::from_secs(30),
            || {
                ctl::request(&path, &json!({"cmd": "status"}))
                    .is_ok_and(|s| s["link_up"].as_bool() == Some(true))
            },
        )?;
    }
    Ok(())
}

fn run_lab(args: &LabArgs, lab: &mut Lab) -> Result<i32> {
    let started = Instant::now();
    start(args, lab)?;
    let bring_up = started.elapsed();
    let dir = args.dir.clone();

    // ICMP echo, both families.
    let mut echoes = Vec::new();
    for (i, family) in ["IPv4", "IPv6"].iter().enumerate() {
        progress(&format!("ICMP echo over {family}…"));
        let dst: IpAddr = if i == 0 { VMS[1].1 } else { VMS[1].2 }.parse()?;
        let r = traffic::ping(VMS[0].0, dst, args.pings, Duration::from_millis(20))?;
        echoes.push((*family, r));
        if signals::stop_requested() {
            bail!("interrupted");
        }
    }
    // TCP bulk, both families.
    let mut tcps = Vec::new();
    for (i, (family, bytes)) in [("IPv4", args.bytes), ("IPv6", args.bytes6)]
        .into_iter()
        .enumerate()
    {
        let dst: IpAddr = if i == 0 { VMS[1].1 } else { VMS[1].2 }.parse()?;
        let t0 = Instant::now();
        let packets0 = ring_packets(&dir)?;
        let r = traffic::tcp_bulk(VMS[0].0, VMS[1].0, dst, 5201 + i as u16, bytes, |got| {
            let secs = t0.elapsed().as_secs_f64().max(1e-3);
            progress(&format!(
                "TCP over {family}: {:>6.1} / {:.1} MiB  {:>6.2} Gbit/s",
                got as f64 / (1 << 20) as f64,
                bytes as f64 / (1 << 20) as f64,
                got as f64 * 8.0 / secs / 1e9
            ));
            if signals::stop_requested() {
                bail!("interrupted");
            }
            lab.check_children()
        })?;
        // The data path's own packet rate: RNDIS packets both ways through the rings
        // (data and ACKs, each a TSO/LRO super-frame or a plain frame).
        let packets = ring_packets(&dir)? - packets0;
        let secs = t0.elapsed().as_secs_f64();
        tcps.push((family, r, packets as f64 / secs));
        if signals::stop_requested() {
            bail!("interrupted");
        }
    }
    progress("");
    let host = ctl::request(
        &ctl::host_socket(&dir.run_dir, &dir.lab),
        &json!({"cmd": "stats"}),
    )?;
    let mut guests = Vec::new();
    for (vm, _, _) in VMS {
        let path = ctl::guest_socket(&dir.run_dir, &dir.lab, vm);
        guests.push((
            vm,
            ctl::request(&path, &json!({"cmd": "status"}))?,
            ctl::request(&path, &json!({"cmd": "stats"}))?,
        ));
    }
    let ok = echoes.iter().all(|(_, e)| e.received == e.sent)
        && tcps.iter().all(|(_, t, _)| t.bytes > 0);
    let report = Report {
        profile: args.profile.name(),
        bring_up,
        echoes: &echoes,
        tcps: &tcps,
        host: &host,
        guests: &guests,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        report.print();
    }
    if args.keep {
        eprintln!(
            "\nThe lab keeps running: try `ip netns exec vm1 ping 198.18.0.2`. Ctrl-C ends it."
        );
        while !signals::stop_requested() {
            lab.check_children()?;
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(if ok { 0 } else { 1 })
}

/// RNDIS packets the host has moved between the VMs so far (both directions).
fn ring_packets(dir: &RunDir) -> Result<u64> {
    let host = ctl::request(
        &ctl::host_socket(&dir.run_dir, &dir.lab),
        &json!({"cmd": "stats"}),
    )?;
    Ok(host["vms"]
        .as_array()
        .map(|vms| {
            vms.iter()
                .map(|v| v["stats"]["tx_packets"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0))
}

struct Report<'a> {
    profile: &'a str,
    bring_up: Duration,
    echoes: &'a [(&'a str, EchoResult)],
    tcps: &'a [(&'a str, TcpResult, f64)],
    host: &'a Value,
    guests: &'a [(&'a str, Value, Value)],
}

impl Report<'_> {
    fn json(&self) -> Value {
        json!({
            "profile": self.profile,
            "bring_up_seconds": self.bring_up.as_secs_f64(),
            "icmp": self.echoes.iter().map(|(f, e)| json!({"family": f, "result": e})).collect::<Vec<_>>(),
            "tcp": self.tcps.iter().map(|(f, t, pps)| json!({"family": f, "result": t, "ring_packets_per_second": pps})).collect::<Vec<_>>(),
            "host": self.host,
            "guests": self.guests.iter().map(|(vm, status, stats)| json!({"vm": vm, "status": status, "stats": stats})).collect::<Vec<_>>(),
        })
    }

    fn print(&self) {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        println!(
            "hvnet lab report — host profile {}, bring-up {:.2} s",
            self.profile,
            self.bring_up.as_secs_f64()
        );
        println!();
        println!("ICMP echo vm1 → vm2");
        for (family, e) in self.echoes {
            println!(
                "  {family}: {}/{} replies, loss {:.1} %, RTT min/avg/max {:.0}/{:.0}/{:.0} µs",
                e.received,
                e.sent,
                100.0 * f64::from(e.sent - e.received) / f64::from(e.sent.max(1)),
                e.rtt_us.0,
                e.rtt_us.1,
                e.rtt_us.2
            );
        }
        println!();
        println!("TCP bulk vm1 → vm2 (one stream)");
        for (family, t, pps) in self.tcps {
            println!(
                "  {family}: {:.1} MiB in {:.2} s = {:.2} Gbit/s; data path {:.0} packets/s (both ways)",
                t.bytes as f64 / (1 << 20) as f64,
                t.seconds,
                t.gbit_per_s,
                pps
            );
        }
        println!();
        println!(
            "{:<6} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10} {:>9} {:>10} {:>8}",
            "VM",
            "tx packets",
            "tx bytes",
            "rx packets",
            "rx bytes",
            "tx copied",
            "tx pagebuf",
            "tx full",
            "rx peak",
            "drops"
        );
        for (vm, _, st) in self.guests {
            let drops = s(st, "rx_tap_dropped") + s(st, "tx_no_memory") + s(st, "tx_too_big");
            println!(
                "{:<6} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10} {:>9} {:>10} {:>8}",
                vm,
                s(st, "tx_packets"),
                s(st, "tx_bytes"),
                s(st, "rx_packets"),
                s(st, "rx_bytes"),
                s(st, "tx_send_buffer"),
                s(st, "tx_page_buffer"),
                s(st, "tx_send_full"),
                s(st, "rx_sections_peak"),
                drops
            );
        }
        for (vm, _, st) in self.guests {
            let queues: Vec<u64> = (0..)
                .map_while(|q| {
                    st.get(format!("rx_queue_{q}_packets"))
                        .and_then(Value::as_u64)
                })
                .collect();
            let total: u64 = queues.iter().sum();
            if queues.len() > 1 && total > 0 {
                let shares: Vec<String> = queues
                    .iter()
                    .enumerate()
                    .map(|(q, n)| format!("q{q} {n} ({:.0} %)", 100.0 * *n as f64 / total as f64))
                    .collect();
                println!("{vm} received per queue: {}", shares.join(", "));
            }
        }
        println!();
        println!("host (netvsp) per NIC: receive sections in use (peak of total), drops");
        if let Some(vms) = self.host.get("vms").and_then(Value::as_array) {
            for v in vms {
                let st = &v["stats"];
                println!(
                    "  {}: sections peak {}/{}; sends via send buffer {}, via page buffers {}; \
                     drops: no section {}, not ready {}; protocol errors {}",
                    v["vm"].as_str().unwrap_or("?"),
                    s(st, "rx_sections_peak"),
                    s(st, "rx_sections"),
                    s(st, "tx_send_buffer"),
                    s(st, "tx_gpa_direct"),
                    s(st, "rx_dropped_no_section"),
                    s(st, "rx_dropped_not_ready"),
                    s(st, "protocol_errors") + s(st, "vmbus_protocol_errors"),
                );
            }
        }
        let sw = &self.host["switch"];
        println!(
            "  switch: delivered {}, unknown unicast {}, port drops {}",
            s(sw, "delivered"),
            s(sw, "unknown_unicast"),
            s(sw, "port_drops")
        );
    }
}
