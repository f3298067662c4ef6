//! Native XDP in netvsc's receive path, end to end: a program on vm2 drops UDP to port 9
//! (counted) while TCP carries on; it is refused while LRO is on; unloading restores
//! delivery. Root required (see `common::lab_lock`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn ctl(lab: &str, vm: &str, req: Value) -> Value {
    let path = Path::new("/run/hvnet").join(lab).join(format!("{vm}.ctl"));
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    writeln!(s, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

/// Sends `n` datagrams to vm2's port 9; returns how many vm2's socket received.
fn udp9(n: usize) -> usize {
    let rx = in_netns("vm2", || {
        let s = UdpSocket::bind(SocketAddr::from(([198, 18, 0, 2], 9))).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s
    });
    in_netns("vm1", move || {
        let s = UdpSocket::bind(SocketAddr::from(([198, 18, 0, 1], 0))).unwrap();
        for _ in 0..n {
            s.send_to(b"discard me", SocketAddr::from(([198, 18, 0, 2], 9)))
                .unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let mut got = 0;
    let mut buf = [0u8; 64];
    while rx.recv(&mut buf).is_ok() {
        got += 1;
    }
    got
}

#[test]
fn a_program_on_vm2_drops_udp_to_port_9_and_tcp_carries_on() {
    let Some(_lock) = lab_lock() else { return };
    let lab = "xdp-e2e";
    let mut m = Manual::new(lab);
    m.start_guest("vm1", 1);
    m.start_guest("vm2", 2);
    assert_eq!(
        eventually(Duration::from_secs(10), || tcp_transfer(6700, 1 << 20)),
        1 << 20
    );
    assert_eq!(udp9(5), 5, "before any program every datagram arrives");

    let obj = std::fs::canonicalize(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/drop_udp9.o"
    ))
    .unwrap();
    // Refused while LRO is on (azure turns it on), with a message naming LRO.
    let r = ctl(lab, "vm2", json!({"cmd": "xdp_load", "path": obj}));
    let e = r["error"].as_str().unwrap_or_default();
    assert!(e.contains("LRO") && e.contains("lro off"), "{r}");
    let r = ctl(
        lab,
        "vm2",
        json!({"cmd": "set_features", "set": {"lro": false}}),
    );
    assert_eq!(r["changed"]["lro"], false, "{r}");
    let r = ctl(lab, "vm2", json!({"cmd": "xdp_load", "path": obj}));
    assert_eq!(r["ok"], true, "{r}");
    // LRO cannot come back while the program is attached.
    let r = ctl(
        lab,
        "vm2",
        json!({"cmd": "set_features", "set": {"lro": true}}),
    );
    assert!(
        r["error"].as_str().unwrap_or_default().contains("XDP"),
        "{r}"
    );

    let stream = std::thread::spawn(|| tcp_transfer(6701, 512 << 20));
    assert_eq!(udp9(20), 0, "every datagram to port 9 is dropped");
    assert_eq!(stream.join().unwrap().expect("TCP carries on"), 512 << 20);
    let st = ctl(lab, "vm2", json!({"cmd": "xdp_status"}));
    assert_eq!(st["verdicts"]["drop"], 20, "{st}");
    assert!(st["verdicts"]["pass"].as_u64().unwrap() > 1000, "{st}");
    let dump = ctl(lab, "vm2", json!({"cmd": "xdp_map_dump", "map": "dropped"}));
    assert_eq!(dump["entries"][0]["value"], "1400000000000000", "{dump}");
    let stats = ctl(lab, "vm2", json!({"cmd": "stats"}));
    assert_eq!(stats["rx_queue_0_xdp_drop"], 20, "{stats}");

    let r = ctl(lab, "vm2", json!({"cmd": "xdp_unload"}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(udp9(5), 5, "unloading restores delivery");
    drop(m);
    assert_clean(lab);
}

/// Sends `n` ICMP echo requests from vm1 to vm2 (raw socket); returns the replies.
fn pings(n: u16) -> u16 {
    in_netns("vm1", move || {
        use std::mem::MaybeUninit;
        let s = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::ICMPV4),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let to: socket2::SockAddr = SocketAddr::from(([198, 18, 0, 2], 0)).into();
        let mut replies = 0;
        for seq in 0..n {
            let mut p = vec![8u8, 0, 0, 0, 0x4e, 0x56, (seq >> 8) as u8, seq as u8];
            p.extend(0..32u8);
            let mut sum: u32 = p
                .chunks(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                .sum();
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            p[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
            s.send_to(&p, &to).unwrap();
            let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
            while let Ok((len, _)) = s.recv_from(&mut buf) {
                // SAFETY: recv_from initialised the first `len` bytes.
                let got: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), len) };
                let icmp = &got[usize::from(got[0] & 0xf) * 4..];
                if icmp[0] == 0
                    && icmp[4..6] == [0x4e, 0x56]
                    && icmp[6..8] == [(seq >> 8) as u8, seq as u8]
                {
                    replies += 1;
                    break;
                }
            }
        }
        replies
    })
}

#[test]
fn an_xdp_tx_program_on_vm2_answers_pings_its_kernel_ignores() {
    let Some(_lock) = lab_lock() else { return };
    let lab = "xdp-tx";
    let mut m = Manual::with_profile(lab, "ws2016"); // no RSC: LRO is off from the start
    m.start_guest("vm1", 1);
    m.start_guest("vm2", 2);
    assert_eq!(
        eventually(Duration::from_secs(10), || tcp_transfer(6800, 1 << 20)),
        1 << 20
    );
    in_netns("vm2", || {
        std::fs::write("/proc/sys/net/ipv4/icmp_echo_ignore_all", "1").unwrap();
    });
    assert_eq!(pings(3), 0, "vm2's kernel ignores echo requests");
    let obj = std::fs::canonicalize(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/icmp_echo_tx.o"
    ))
    .unwrap();
    let r = ctl(lab, "vm2", json!({"cmd": "xdp_load", "path": obj}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(pings(10), 10, "the XDP program answers every echo request");
    let st = ctl(lab, "vm2", json!({"cmd": "xdp_status"}));
    assert!(st["verdicts"]["tx"].as_u64().unwrap() >= 10, "{st}");
    let stats = ctl(lab, "vm2", json!({"cmd": "stats"}));
    assert!(
        stats["rx_queue_0_xdp_tx"].as_u64().unwrap() >= 10,
        "{stats}"
    );
    drop(m);
    assert_clean(lab);
}

#[test]
fn bench_xdp_times_programs_against_the_kernel_and_floods_the_lab() {
    let Some(_lock) = lab_lock() else { return };
    let lab = "bench-xdp";
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let out = std::process::Command::new(HVNET)
        .args(["bench", "xdp", "--lab", lab, "--seconds", "1", "--json"])
        .arg(format!("{fixtures}/drop_udp9.o"))
        .arg(format!("{fixtures}/corpus/tail_trim.o"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let programs = v["programs"].as_array().unwrap();
    assert_eq!(programs.len(), 2, "{v:#}");
    for p in programs {
        assert!(p["ours_ns_per_run"].as_f64().unwrap() > 0.0, "{p}");
        assert!(p["kernel_ns_per_run"].as_f64().unwrap() > 0.0, "{p}");
    }
    let phases = v["lab"].as_array().unwrap();
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["program"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["none", "pass", "drop"]);
    for p in phases {
        // Every phase moved traffic through vm2's driver.
        assert!(p["handled_per_s"].as_f64().unwrap() > 100.0, "{p}");
    }
    assert_clean(lab);
}
