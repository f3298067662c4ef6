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
    /// Queues (VMBus channels) to ask the host for: the primary plus subchannels.
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
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
        queues: args.queues,
        tracer,
        ..Default::default()
    };
    let guest = Guest::start(&config).context("bring the synthetic NIC up")?;
    // The largest TSO frame the host takes (Linux: netif_set_tso_max_size); larger GSO
    // frames would be segmented in software.
    let o = guest.control().offloads();
    if let Some(max) = [o.tso_v4, o.tso_v6].into_iter().flatten().min() {
        netns::ip(&[
            "link",
            "set",
            "dev",
            &args.ifname,
            "gso_max_size",
            &max.to_string(),
        ])?;
    }
    for a in &args.addresses {
        let mut cmd = vec!["addr", "replace", a.as_str(), "dev", args.ifname.as_str()];
        if a.contains(':') {
            cmd.push("nodad");
        }
        netns::ip(&cmd)?;
    }
    let ctl_path = ctl::guest_socket(&args.dir.run_dir, &args.dir.lab, &args.vm);
    {
        let shared_info = guest.info_shared();
        let stats = guest.stats();
        let link = guest.link_state();
        let control = guest.control();
        let ifname = args.ifname.clone();
        let handler = move |req: &Value| {
            let info = shared_info.lock().unwrap().clone();
            handle(&control, &info, &stats, &link, &ifname, req)
        };
        ctl::serve(&ctl_path, Arc::new(handler))?;
    }
    let info = guest.info();
    eprintln!(
        "hvnet guest {}: {} up, MAC {}, NVSP {:#x}, VMBus {:#x}, link {}, {} queue(s)",
        args.vm,
        args.ifname,
        format_mac(info.mac),
        info.nvsp_version,
        info.vmbus_version,
        if guest.link_up() { "up" } else { "down" },
        info.queues
    );
    finish(guest, &args, &ctl_path)
}

/// Answers one control request.
fn handle(
    control: &netvsc::GuestControl,
    info: &netvsc::NicInfo,
    stats: &std::sync::Mutex<netvsc::stats::StatsView>,
    link: &netvsc::driver::LinkState,
    ifname: &str,
    req: &Value,
) -> Value {
    match req.get("cmd").and_then(Value::as_str) {
        Some("status") => json!({
            "ifname": ifname,
            "link_up": link.up.load(std::sync::atomic::Ordering::Relaxed),
            "mac": format_mac(info.mac),
            "info": info,
        }),
        Some("stats") => {
            let mut m = serde_json::Map::new();
            for (k, v) in stats.lock().unwrap().snapshot() {
                m.insert(k, v.into());
            }
            Value::Object(m)
        }
        Some("rss") => match control.rss() {
            Some(r) => json!({
                "key": r.key.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "table": r.table,
                "hash_info": r.hash_info,
                "queues": info.queues,
            }),
            None => json!({"error": "single queue: no RSS configuration"}),
        },
        Some("set_rss") => set_rss(control, req),
        Some("channels") => match control.channels() {
            Ok((combined, max)) => json!({"combined": combined, "max_combined": max}),
            Err(e) => json!({"error": e.to_string()}),
        },
        Some("set_channels") => {
            let Some(n) = req.get("combined").and_then(Value::as_u64) else {
                return json!({"error": "set_channels needs \"combined\""});
            };
            let max = control.channels().map(|c| c.1).unwrap_or(1);
            if n == 0 || n > u64::from(max) {
                return json!({"error": format!("combined {n} is outside 1 to {max} (the host's queue count)")});
            }
            if n > 1 && info.nvsp_version < nvsp::version::V5 {
                return json!({"error": "the NIC needs NVSP 5 for more than one channel"});
            }
            match control.rebuild(netvsc::control::Rebuild {
                queues: Some(n as u16),
                ..Default::default()
            }) {
                Ok(()) => json!({"combined": n}),
                Err(e) => json!({"error": e.to_string()}),
            }
        }
        Some("rings") => json!({
            "rx_max": (31u32 << 20) / info.rx_section_size.max(1),
            "tx_max": (15u32 << 20) / info.tx_section_size.max(1),
            "rx": info.rx_sections,
            "tx": info.tx_sections,
        }),
        Some("set_rings") => {
            let rx_max = (31u32 << 20) / info.rx_section_size.max(1);
            let tx_max = (15u32 << 20) / info.tx_section_size.max(1);
            let rx = req
                .get("rx")
                .and_then(Value::as_u64)
                .map(|v| (v as u32).clamp(10, rx_max));
            let tx = req
                .get("tx")
                .and_then(Value::as_u64)
                .map(|v| (v as u32).clamp(10, tx_max));
            if rx.is_none_or(|r| r == info.rx_sections) && tx.is_none_or(|t| t == info.tx_sections)
            {
                return json!({"rx": info.rx_sections, "tx": info.tx_sections});
            }
            match control.rebuild(netvsc::control::Rebuild {
                rx,
                tx,
                ..Default::default()
            }) {
                Ok(()) => {
                    json!({"rx": rx.unwrap_or(info.rx_sections), "tx": tx.unwrap_or(info.tx_sections)})
                }
                Err(e) => json!({"error": e.to_string()}),
            }
        }
        Some("flow_hash") => {
            let proto = req.get("proto").and_then(Value::as_str).unwrap_or("");
            match proto {
                "ip4" | "ip6" => json!({"fields": "sd"}),
                p => match control.flow_hash_l4(p) {
                    Some(l4) => json!({"fields": if l4 { "sdfn" } else { "sd" }}),
                    None => json!({"error": format!("flow type {p} not supported")}),
                },
            }
        }
        Some("set_flow_hash") => {
            let proto = req.get("proto").and_then(Value::as_str).unwrap_or("");
            let l4 = match req.get("fields").and_then(Value::as_str) {
                Some("sdfn") => true,
                Some("sd") => false,
                other => {
                    return json!({"error": format!("fields {other:?} not supported: use sd or sdfn")});
                }
            };
            match control.set_flow_hash_l4(proto, l4) {
                Ok(()) => json!({"ok": true}),
                Err(e) => json!({"error": e.to_string()}),
            }
        }
        Some("info") => json!({
            "driver": "hv_netvsc",
            "version": env!("CARGO_PKG_VERSION"),
            "firmware": "N/A",
            "bus_info": info.instance_id,
            "nvsp_version": nvsp_version_name(info.nvsp_version),
            "ndis_version": format!("{}.{}", info.ndis_version.0, info.ndis_version.1),
            "vmbus_version": format!("{}.{}", info.vmbus_version >> 16, info.vmbus_version & 0xffff),
            "host_profile": host_profile_of(info.vmbus_version),
            "ifname": ifname,
        }),
        Some("features") => {
            let mut m = serde_json::Map::new();
            for (name, st) in control.features() {
                m.insert(name.into(), json!({"on": st.on, "fixed": st.fixed}));
            }
            let o = control.offloads();
            json!({
                "ifname": ifname,
                "features": m,
                "negotiated": {
                    "tx_csum_tcp4": o.tx_csum_v4,
                    "tx_csum_udp4": o.udp_csum_v4,
                    "tx_csum_tcp6": o.tx_csum_v6,
                    "tx_csum_udp6": o.udp_csum_v6,
                    "tso4": o.tso_v4,
                    "tso6": o.tso_v6,
                    "rsc": o.rsc,
                },
            })
        }
        Some("set_features") => set_features(control, req),
        Some("xdp_load") => xdp_load(control, info, req),
        Some("xdp_unload") => {
            if control.xdp_detach() {
                json!({"ok": true})
            } else {
                json!({"error": "no XDP program is attached"})
            }
        }
        Some("xdp_status") => xdp_status(control),
        Some("xdp_map_dump") => xdp_map_dump(control, req),
        other => json!({"error": format!("unknown command {other:?}")}),
    }
}

/// Loads an XDP object (`{"path": ..., "section": ...}`) and attaches its program.
fn xdp_load(control: &netvsc::GuestControl, info: &netvsc::NicInfo, req: &Value) -> Value {
    let Some(path) = req.get("path").and_then(Value::as_str) else {
        return json!({"error": "xdp_load needs \"path\""});
    };
    let section = req.get("section").and_then(Value::as_str);
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return json!({"error": format!("read {path}: {e}")}),
    };
    let program = match xdp::elf::Object::parse(&bytes).and_then(|o| o.program(section)) {
        Ok(p) => p,
        Err(e) => return json!({"error": format!("{path}: {e}")}),
    };
    let label = format!("{path} [{}]", section.unwrap_or("xdp"));
    let insns = program.len();
    match control.xdp_attach(program, label, info.mtu) {
        Ok(()) => json!({"ok": true, "instructions": insns}),
        Err(e) => json!({"error": e.to_string()}),
    }
}

/// The attached program, its maps and per-verdict counters.
fn xdp_status(control: &netvsc::GuestControl) -> Value {
    let Some(a) = control.xdp() else {
        return json!({"attached": false});
    };
    let g = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let stats = a.program.stats();
    let maps: Vec<Value> = a
        .program
        .maps()
        .iter()
        .map(|m| {
            let d = m.def();
            json!({"name": d.name, "type": format!("{:?}", d.kind), "key_size": d.key_size,
                   "value_size": d.value_size, "max_entries": d.max_entries})
        })
        .collect();
    json!({
        "attached": true,
        "program": a.label,
        "instructions": a.program.len(),
        "runtime": crate::xdp_cmd::runtime_name(&a.program),
        "maps": maps,
        "verdicts": {
            "pass": g(&a.pass), "drop": g(&a.drop), "tx": g(&a.tx),
            "aborted": g(&a.aborted), "redirect": g(&a.redirect),
        },
        "runs": stats.runs,
        "faults": stats.faults,
    })
}

/// Every entry of one map of the attached program (`{"map": name}`).
fn xdp_map_dump(control: &netvsc::GuestControl, req: &Value) -> Value {
    let Some(a) = control.xdp() else {
        return json!({"error": "no XDP program is attached"});
    };
    let Some(name) = req.get("map").and_then(Value::as_str) else {
        return json!({"error": "xdp_map_dump needs \"map\""});
    };
    let Some(map) = a.program.maps().iter().find(|m| m.def().name == name) else {
        return json!({"error": format!("the program has no map named {name}")});
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let entries: Vec<Value> = map
        .keys()
        .into_iter()
        .filter_map(|k| {
            map.lookup(&k)
                .ok()
                .map(|v| json!({"key": hex(&k), "value": hex(&v)}))
        })
        .collect();
    json!({"map": name, "entries": entries})
}

/// Waits for the end and tears down: exit code 0 on a clean stop, 3 if the host went.
fn finish(mut guest: Guest, args: &GuestArgs, ctl_path: &std::path::Path) -> Result<i32> {
    let exit = guest.wait(signals::flag());
    let _ = std::fs::remove_file(ctl_path);
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

/// The Windows release whose VMBus version the host negotiated (the profile it runs).
fn host_profile_of(vmbus_version: u32) -> &'static str {
    match vmbus_version {
        0x0003_0000 => "ws2012r2",
        0x0004_0000 | 0x0004_0001 => "ws2016",
        0x0005_0000..=0x0005_0002 => "ws2019",
        v if v >= 0x0005_0003 => "azure",
        _ => "unknown",
    }
}

/// "6.1", "5", … for an NVSP version.
fn nvsp_version_name(v: u32) -> String {
    nvsp::version::name(v).map_or_else(|| format!("{v:#x}"), str::to_owned)
}

/// Applies `{"set": {"lro": false, ...}}`; every change or the first error.
fn set_features(control: &netvsc::GuestControl, req: &Value) -> Value {
    let Some(set) = req.get("set").and_then(Value::as_object) else {
        return json!({"error": "set_features needs \"set\": {feature: bool}"});
    };
    let mut changed = serde_json::Map::new();
    for (name, on) in set {
        let Some(on) = on.as_bool() else {
            return json!({"error": format!("feature {name}: expected true or false")});
        };
        let Some((f, _)) = netvsc::Feature::ALL.iter().find(|(_, n)| n == name) else {
            return json!({"error": format!("unknown feature {name}")});
        };
        match control.set_feature(*f, on) {
            Ok(true) => {
                changed.insert(name.clone(), on.into());
            }
            Ok(false) => {}
            Err(e) => return json!({"error": e.to_string(), "changed": changed}),
        }
    }
    // The kernel's dependency: segmentation offload needs scatter-gather and transmit
    // checksumming, so turning either off turns TSO off too.
    let on = |n: &str| {
        control
            .features()
            .iter()
            .any(|(name, st)| *name == n && st.on)
    };
    if on("tso")
        && (!on("sg") || !on("tx_csum"))
        && matches!(control.set_feature(netvsc::Feature::Tso, false), Ok(true))
    {
        changed.insert("tso".into(), false.into());
    }
    json!({"changed": changed})
}

/// Applies `{"table": [...]}` and/or `{"key": "hex"}` (ethtool -X).
fn set_rss(control: &netvsc::GuestControl, req: &Value) -> Value {
    let table = match req.get("table") {
        None => None,
        Some(t) => match t.as_array().map(|a| {
            a.iter()
                .map(|v| v.as_u64().map(|x| x as u32))
                .collect::<Option<Vec<u32>>>()
        }) {
            Some(Some(t)) => Some(t),
            _ => return json!({"error": "table must be a list of queue numbers"}),
        },
    };
    let key = match req.get("key").and_then(Value::as_str) {
        None => None,
        Some(k) => {
            let hex: String = k.chars().filter(|c| *c != ':').collect();
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| {
                    hex.get(i..i + 2)
                        .and_then(|b| u8::from_str_radix(b, 16).ok())
                })
                .collect();
            match bytes.and_then(|b| <[u8; 40]>::try_from(b).ok()) {
                Some(k) => Some(k),
                None => return json!({"error": "key must be 40 bytes of hex"}),
            }
        }
    };
    match control.set_rss(table, key) {
        Ok(()) => json!({"ok": true}),
        Err(e) => json!({"error": e.to_string()}),
    }
}
