//! End-to-end tests: real processes, real namespaces, real TAPs, real Linux traffic
//! over our driver. They need root; without it they fail loudly unless
//! HVNET_SKIP_ROOT_TESTS=1 says to skip them (and then they say so, loudly).
//!
//! The lab's namespaces are named `vm1` and `vm2`, so these tests take a file lock and
//! run one at a time, even under nextest's process-per-test model.

mod common;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

#[test]
fn lab_passes_icmp_and_tcp_over_ipv4_and_ipv6_and_cleans_up() {
    let Some(_lock) = lab_lock() else { return };
    let trace = std::env::temp_dir().join(format!("hvnet-e2e-trace-{}", std::process::id()));
    let out = Command::new(HVNET)
        .args([
            "lab", "--lab", "e2e", "--bytes", "256M", "--bytes6", "64M", "--pings", "10", "--json",
            "--trace",
        ])
        .arg(&trace)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lab failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    for icmp in report["icmp"].as_array().unwrap() {
        let r = &icmp["result"];
        assert_eq!(r["received"], r["sent"], "ICMP loss: {icmp}");
        assert!(r["sent"].as_u64().unwrap() >= 10);
    }
    let tcp = report["tcp"].as_array().unwrap();
    assert_eq!(tcp[0]["result"]["bytes"], 256u64 << 20);
    assert_eq!(tcp[1]["result"]["bytes"], 64u64 << 20);
    for g in report["guests"].as_array().unwrap() {
        assert_eq!(g["stats"]["bad_completions"], 0, "{g}");
        assert_eq!(g["stats"]["rx_bad_messages"], 0, "{g}");
    }
    // Both transmit paths were used: copies into sections and page buffers.
    let vm1 = &report["guests"][0]["stats"];
    assert!(vm1["tx_send_buffer"].as_u64().unwrap() > 0);
    for vm in report["host"]["vms"].as_array().unwrap() {
        assert_eq!(vm["stats"]["protocol_errors"], 0, "{vm}");
    }
    assert_clean("e2e");

    // The trace shows the Linux driver's bring-up sequence, in order.
    let names: Vec<(String, String, String)> = std::fs::read_to_string(trace.join("vm1.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(v["hex"].is_string() && v["time"].is_string() && v["fields"].is_object());
            (
                v["dir"].as_str().unwrap().into(),
                v["layer"].as_str().unwrap().into(),
                v["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("tx", "vmbus", "INITIATE_CONTACT"),
        ("rx", "vmbus", "VERSION_RESPONSE"),
        ("tx", "vmbus", "REQUESTOFFERS"),
        ("rx", "vmbus", "OFFERCHANNEL"),
        ("tx", "vmbus", "GPADL_HEADER"),
        ("rx", "vmbus", "GPADL_CREATED"),
        ("tx", "vmbus", "OPENCHANNEL"),
        ("rx", "vmbus", "OPENCHANNEL_RESULT"),
        ("tx", "nvsp", "INIT"),
        ("rx", "nvsp", "INIT_COMPLETE"),
        ("tx", "nvsp", "SEND_NDIS_CONFIG"),
        ("tx", "nvsp", "SEND_NDIS_VER"),
        ("tx", "nvsp", "SEND_RECV_BUF"),
        ("rx", "nvsp", "SEND_RECV_BUF_COMPLETE"),
        ("tx", "nvsp", "SEND_SEND_BUF"),
        ("rx", "nvsp", "SEND_SEND_BUF_COMPLETE"),
        ("tx", "rndis", "INITIALIZE"),
        ("rx", "rndis", "INIT_C"),
        ("tx", "rndis", "QUERY"),
        ("rx", "rndis", "QUERY_C"),
        ("tx", "rndis", "SET"),
        ("rx", "rndis", "SET_C"),
        ("tx", "rndis", "HALT"),
        ("tx", "vmbus", "CLOSECHANNEL"),
        ("tx", "vmbus", "GPADL_TEARDOWN"),
        ("rx", "vmbus", "GPADL_TORNDOWN"),
        ("tx", "vmbus", "UNLOAD"),
        ("rx", "vmbus", "UNLOAD_RESPONSE"),
    ];
    let mut at = 0;
    for (dir, layer, name) in want {
        match names[at..]
            .iter()
            .position(|(d, l, n)| d == dir && l == layer && n == name)
        {
            Some(i) => at += i + 1,
            None => panic!("trace lacks {dir} {layer} {name} after entry {at}: {names:?}"),
        }
    }
    let host = std::fs::read_to_string(trace.join("host.jsonl")).unwrap();
    assert!(host.contains("\"OFFERCHANNEL\"") && host.contains("\"INIT_C\""));
    let _ = std::fs::remove_dir_all(&trace);
}

#[test]
fn killed_guest_restarts_with_its_own_command_line_and_host_keeps_serving() {
    let Some(_lock) = lab_lock() else { return };
    let mut m = Manual::new("e2e-restart");
    m.start_guest("vm1", 1);
    let vm2 = m.start_guest("vm2", 2);
    assert_eq!(
        eventually(Duration::from_secs(10), || tcp_transfer(6001, 8 << 20)),
        8 << 20
    );

    // Kill vm2's guest in the middle of a transfer.
    let transfer = std::thread::spawn(|| tcp_transfer(6002, 1 << 30));
    std::thread::sleep(Duration::from_millis(500));
    m.children[vm2].kill().unwrap();
    m.children[vm2].wait().unwrap();
    let _ = transfer.join();

    // The host noticed and serves the restarted guest; the other VM is unaffected.
    m.start_guest("vm2", 2);
    assert_eq!(
        eventually(Duration::from_secs(15), || tcp_transfer(6003, 8 << 20)),
        8 << 20
    );
    let stats = Command::new(HVNET).args(["--version"]).output().unwrap();
    assert!(stats.status.success());
    drop(m);
    assert_clean("e2e-restart");
}

#[test]
fn killed_host_takes_the_link_down_and_the_guest_exits_clearly() {
    let Some(_lock) = lab_lock() else { return };
    let mut m = Manual::new("e2e-hostdeath");
    let vm1 = m.start_guest("vm1", 1);
    let host = 0;
    m.children[host].kill().unwrap();
    m.children[host].wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = m.children[vm1].try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "guest did not notice the host's death"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(3));
    let mut err = String::new();
    m.children[vm1]
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("the host closed the VMBus connection"),
        "{err}"
    );
    drop(m);
    assert_clean("e2e-hostdeath");
}

#[test]
fn host_link_changes_reach_the_guest_interface() {
    let Some(_lock) = lab_lock() else { return };
    let mut m = Manual::new("e2e-link");
    m.start_guest("vm1", 1);
    let host = std::path::Path::new("/run/hvnet/e2e-link/host.ctl");
    let carrier = || {
        let out = Command::new("ip")
            .args(["-n", "vm1", "link", "show", "eth0"])
            .output()
            .unwrap();
        !String::from_utf8_lossy(&out.stdout).contains("NO-CARRIER")
    };
    let set = |up: bool| {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::os::unix::net::UnixStream::connect(host).unwrap();
        writeln!(
            s,
            "{}",
            serde_json::json!({"cmd": "link", "vm": "vm1", "up": up})
        )
        .unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        assert!(line.contains("\"ok\""), "{line}");
    };
    let wait = |want: bool| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while carrier() != want {
            assert!(Instant::now() < deadline, "carrier never became {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait(true);
    set(false);
    wait(false);
    set(true);
    wait(true);
    drop(m);
    assert_clean("e2e-link");
}
