//! `hvnet guest`: one VM's guest driver, its NIC a TAP interface.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};

use netvsc::{Exit, Guest, GuestConfig};
use vmbus::trace::Tracer;

use crate::{RunDir, ctl, host_cmd::format_mac, netns, signals};

/// Arguments of `hvnet guest`.
#[derive(Args, Clone, Debug)]
pub struct GuestArgs {
    #[command(flatten)]
    pub dir: RunDir,
    /// The VM's name: its VMBus socket is RUN_DIR/LAB/NAME.vmbus.
    #[arg(long)]
    pub vm: String,
    /// Network namespace to create the interface in (default: the current one).
    #[arg(long)]
    pub netns: Option<String>,
    /// Interface name.
    #[arg(long, default_value = "eth0")]
    pub ifname: String,
    /// Address to give the interface, e.g. 198.18.0.1/24 (repeatable).
    #[arg(long = "address")]
    pub addresses: Vec<String>,
    /// MTU.
    #[arg(long, default_value_t = 1500)]
    pub mtu: u32,
    /// Write every control message sent and received to FILE as JSON Lines.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<std::path::PathBuf>,
    /// Also trace per-packet data messages.
    #[arg(long)]
    pub trace_data: bool,
}

/// Runs the guest until SIGINT/SIGTERM or the host goes away. Exit code 0 on a clean
/// stop, 3 if the host went away.
pub fn run(args: GuestArgs) -> Result<i32> {
    signals::install();
    if let Some(ns) = &args.netns {
        netns::enter(ns)?;
    }
    let tracer = match &args.trace {
        Some(p) => Some(Arc::new(
            Tracer::create(p, args.trace_data)
                .with_context(|| format!("create trace {}", p.display()))?,
        )),
        None => None,
    };
    let config = GuestConfig {
        vmbus_socket: ctl::vmbus_socket(&args.dir.run_dir, &args.dir.lab, &args.vm),
        ifname: args.ifname.clone(),
        mtu: args.mtu,
        tracer,
        ..Default::default()
    };
    let mut guest = Guest::start(&config).context("bring the synthetic NIC up")?;
    for a in &args.addresses {
        let mut cmd = vec!["addr", "replace", a.as_str(), "dev", args.ifname.as_str()];
        if a.contains(':') {
            cmd.push("nodad");
        }
        netns::ip(&cmd)?;
    }
    let ctl_path = ctl::guest_socket(&args.dir.run_dir, &args.dir.lab, &args.vm);
    {
        let info = guest.info().clone();
        let stats = guest.stats().clone();
        let link = guest.link_state();
        let ifname = args.ifname.clone();
        ctl::serve(
            &ctl_path,
            Arc::new(
                move |req: &Value| match req.get("cmd").and_then(Value::as_str) {
                    Some("status") => json!({
                        "ifname": ifname,
                        "link_up": link.up.load(std::sync::atomic::Ordering::Relaxed),
                        "mac": format_mac(info.mac),
                        "info": info,
                    }),
                    Some("stats") => {
                        let mut m = serde_json::Map::new();
                        for (k, v) in stats.snapshot() {
                            m.insert(k.into(), v.into());
                        }
                        Value::Object(m)
                    }
                    other => json!({"error": format!("unknown command {other:?}")}),
                },
            ),
        )?;
    }
    let info = guest.info();
    eprintln!(
        "hvnet guest {}: {} up, MAC {}, NVSP {:#x}, VMBus {:#x}, link {}",
        args.vm,
        args.ifname,
        format_mac(info.mac),
        info.nvsp_version,
        info.vmbus_version,
        if guest.link_up() { "up" } else { "down" }
    );
    let exit = guest.wait(signals::flag());
    let _ = std::fs::remove_file(&ctl_path);
    match exit {
        Exit::Stopped => {
            guest.shutdown(true).context("tear the NIC down")?;
            Ok(0)
        }
        Exit::HostGone => {
            let _ = guest.shutdown(false);
            eprintln!(
                "hvnet guest {}: the host closed the VMBus connection (it stopped or died); \
                 link down, exiting. Start `hvnet host` again, then this command.",
                args.vm
            );
            Ok(3)
        }
        Exit::Rescinded => {
            let _ = guest.shutdown(false);
            eprintln!("hvnet guest {}: the host removed the NIC; exiting", args.vm);
            Ok(3)
        }
        Exit::Failed(e) => {
            let _ = guest.shutdown(false);
            anyhow::bail!("data path failed: {e}")
        }
    }
}
