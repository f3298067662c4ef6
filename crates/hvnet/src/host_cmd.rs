//! `hvnet host`: the emulated Hyper-V host.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use netvsp::{Host, HostConfig, HostProfile, VmSpec};
use vmbus::trace::Tracer;

use crate::{RunDir, ctl, signals};

/// Arguments of `hvnet host`.
#[derive(Args, Clone, Debug)]
pub struct HostArgs {
    #[command(flatten)]
    pub dir: RunDir,
    /// A VM to serve (repeat for each); its VMBus socket is RUN_DIR/LAB/NAME.vmbus.
    #[arg(long = "vm", required = true)]
    pub vms: Vec<String>,
    /// Which Windows host to behave like: ws2012r2, ws2016, ws2019 or azure.
    #[arg(long, default_value = "azure")]
    pub profile: HostProfile,
    /// Write every control message sent and received to FILE as JSON Lines.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<std::path::PathBuf>,
    /// Also trace per-packet data messages.
    #[arg(long)]
    pub trace_data: bool,
}

/// The MAC the host gives the `index`th VM: Hyper-V's OUI 00:15:5D, locally unique.
pub fn mac_for(index: usize) -> [u8; 6] {
    [0x00, 0x15, 0x5d, 0xc6, 0x12, (index + 1) as u8]
}

/// Runs the host until SIGINT/SIGTERM.
pub fn run(args: HostArgs) -> Result<()> {
    signals::install();
    if args.vms.len() > 250 {
        bail!("at most 250 VMs per host");
    }
    let tracer = match &args.trace {
        Some(p) => Some(Arc::new(
            Tracer::create(p, args.trace_data)
                .with_context(|| format!("create trace {}", p.display()))?,
        )),
        None => None,
    };
    let vms: Vec<VmSpec> = args
        .vms
        .iter()
        .enumerate()
        .map(|(i, name)| VmSpec {
            name: name.clone(),
            socket: ctl::vmbus_socket(&args.dir.run_dir, &args.dir.lab, name),
            mac: mac_for(i),
        })
        .collect();
    let host = Arc::new(std::sync::Mutex::new(
        Host::start(HostConfig {
            vms,
            profile: args.profile,
            tracer,
            queues: netvsp::queues::DEFAULT_QUEUES,
        })
        .context("start the host")?,
    ));
    let ctl_path = ctl::host_socket(&args.dir.run_dir, &args.dir.lab);
    {
        let host = host.clone();
        ctl::serve(
            &ctl_path,
            Arc::new(move |req: &Value| handle(&host.lock().unwrap(), req)),
        )?;
    }
    eprintln!(
        "hvnet host: serving {} VM(s) as {} in {}",
        args.vms.len(),
        args.profile,
        ctl::lab_dir(&args.dir.run_dir, &args.dir.lab).display()
    );
    while !signals::stop_requested() {
        std::thread::sleep(Duration::from_millis(200));
    }
    host.lock().unwrap().stop();
    let _ = std::fs::remove_file(&ctl_path);
    Ok(())
}

fn handle(host: &Host, req: &Value) -> Value {
    match req.get("cmd").and_then(Value::as_str) {
        Some("stats") => {
            let vms: Vec<Value> = host
                .vms()
                .map(|(spec, nic, server)| {
                    let mut stats = serde_json::Map::new();
                    for (k, v) in nic.stats().snapshot() {
                        stats.insert(k.into(), v.into());
                    }
                    let (now, peak, count) = nic.receive_sections();
                    stats.insert("rx_sections_in_use".into(), now.into());
                    stats.insert("rx_sections_peak".into(), peak.into());
                    stats.insert("rx_sections".into(), count.into());
                    stats.insert(
                        "vmbus_protocol_errors".into(),
                        server
                            .protocol_errors
                            .load(std::sync::atomic::Ordering::Relaxed)
                            .into(),
                    );
                    json!({
                        "vm": spec.name,
                        "mac": format_mac(spec.mac),
                        "ready": nic.guest_ready(),
                        "stats": stats,
                    })
                })
                .collect();
            let sw = host.switch().stats();
            let r = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            json!({
                "profile": host.profile().name(),
                "vms": vms,
                "switch": {
                    "delivered": r(&sw.delivered),
                    "unknown_unicast": r(&sw.unknown_unicast),
                    "port_drops": r(&sw.port_drops),
                    "runts": r(&sw.runts),
                },
            })
        }
        Some("link") => {
            let (Some(vm), Some(up)) = (
                req.get("vm").and_then(Value::as_str),
                req.get("up").and_then(Value::as_bool),
            ) else {
                return json!({"error": "link needs \"vm\" and \"up\""});
            };
            match host.nic(vm) {
                Some(nic) => {
                    nic.set_link(up);
                    json!({"ok": true})
                }
                None => json!({"error": format!("no VM named {vm}")}),
            }
        }
        other => json!({"error": format!("unknown command {other:?}")}),
    }
}

/// `00:15:5d:…` form of a MAC.
pub fn format_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
