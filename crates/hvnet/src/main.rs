//! hvnet: the Hyper-V synthetic NIC lab and its tools.
//!
//! `hvnet lab` brings up an emulated Hyper-V host and two VMs in network namespaces and
//! passes real Linux traffic between them over our netvsc driver; `hvnet host` and
//! `hvnet guest` are the processes the lab starts, and can be started by hand.

mod bench;
mod bench_xdp;
mod ctl;
mod ethtool;
mod guest_cmd;
mod host_cmd;
mod kernel_bpf;
mod lab;
mod netns;
mod rss;
mod signals;
mod traffic;
mod xdp_cmd;
mod xdp_diff;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Hyper-V synthetic network device (netvsc) in user space: emulated host, guest
/// driver and lab.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the lab: an emulated host and two VMs passing real traffic, with a report.
    Lab(lab::LabArgs),
    /// Run the emulated Hyper-V host serving one synthetic NIC per VM.
    Host(host_cmd::HostArgs),
    /// Run one VM's guest driver: its NIC appears as a TAP interface.
    Guest(guest_cmd::GuestArgs),
    /// Benchmarks against a reference in the same run (`tcp`: veth versus the lab).
    Bench(bench::BenchArgs),
    /// ethtool for a running guest's NIC: `hvnet ethtool [--vm NAME] -k|-K|-i|-S eth0 ...`
    /// (ethtool's own arguments, output and exit status; `hvnet ethtool -h` for more).
    Ethtool(ethtool::EthtoolArgs),
    /// Receive-side scaling: `hash` prints a flow's Toeplitz hash and the queue it lands on.
    Rss(rss::RssArgs),
    /// XDP programs in hvnet's eBPF runtime: `test` runs one on a packet (like `bpftool
    /// prog run`).
    Xdp(xdp_cmd::XdpArgs),
}

/// Options every process shares: where the sockets live.
#[derive(clap::Args, Clone, Debug)]
pub struct RunDir {
    /// Lab name: sockets live in RUN_DIR/LAB/.
    #[arg(long, default_value = "lab")]
    pub lab: String,
    /// Directory for runtime sockets.
    #[arg(long, default_value = ctl::RUN_DIR)]
    pub run_dir: PathBuf,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HVNET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result: Result<i32> = match cli.command {
        Command::Lab(a) => lab::run(a),
        Command::Host(a) => host_cmd::run(a).map(|()| 0),
        Command::Guest(a) => guest_cmd::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Ethtool(a) => ethtool::run(a),
        Command::Rss(a) => rss::run(a),
        Command::Xdp(a) => xdp_cmd::run(a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("hvnet: {e:#}");
            std::process::exit(1);
        }
    }
}
