//! End-to-end multi-queue: subchannels, RSS spreading received flows over the guest's
//! queues. Root required (see `common::lab_lock`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn stats(lab: &str, vm: &str) -> Value {
    let path = Path::new("/run/hvnet").join(lab).join(format!("{vm}.ctl"));
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    writeln!(s, "{}", json!({"cmd": "stats"})).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn queue_rx(st: &Value, queues: usize) -> Vec<u64> {
    (0..queues)
        .map(|q| st[format!("rx_queue_{q}_packets")].as_u64().unwrap_or(0))
        .collect()
}

#[test]
fn sixty_four_flows_spread_over_four_queues() {
    let Some(_lock) = lab_lock() else { return };
    let mut m = Manual::new("mq");
    for (vm, n) in [("vm1", 1u8), ("vm2", 2)] {
        let mut a = m.guest_args(vm, n);
        a.extend(["--queues".into(), "4".into()]);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        m.spawn(&refs);
        m.wait_for(&Path::new("/run/hvnet/mq").join(format!("{vm}.ctl")));
    }
    // Warm up (ARP) and make sure the path works.
    assert_eq!(
        eventually(Duration::from_secs(10), || tcp_transfer(6300, 1 << 20)),
        1 << 20
    );
    let before = queue_rx(&stats("mq", "vm2"), 4);
    let listener = in_netns("vm2", || {
        TcpListener::bind(SocketAddr::from(([198, 18, 0, 2], 6301))).unwrap()
    });
    let server = std::thread::spawn(move || {
        let mut handles = Vec::new();
        for _ in 0..64 {
            let (mut s, _) = listener.accept().unwrap();
            handles.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                let mut total = 0;
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    total += n;
                }
                total
            }));
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>()
    });
    in_netns("vm1", || {
        let flows: Vec<_> = (0..64)
            .map(|_| {
                TcpStream::connect_timeout(
                    &SocketAddr::from(([198, 18, 0, 2], 6301)),
                    Duration::from_secs(5),
                )
                .unwrap()
            })
            .collect();
        let chunk = vec![0x33u8; 1 << 16];
        for mut f in flows {
            for _ in 0..32 {
                f.write_all(&chunk).unwrap();
            }
        }
    });
    assert_eq!(server.join().unwrap(), 64 * (32 << 16));
    let after = queue_rx(&stats("mq", "vm2"), 4);
    let got: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let total: u64 = got.iter().sum();
    eprintln!("64 flows over 4 queues: packets per queue {got:?} (total {total})");
    assert!(
        got.iter().all(|&n| n > 0),
        "every queue receives traffic: {got:?}"
    );
    assert!(
        got.iter().all(|&n| n <= 2 * total / 4),
        "no queue carries more than twice its fair share: {got:?}"
    );
    drop(m);
    assert_clean("mq");
}

fn ctl(lab: &str, vm: &str, req: Value) -> Value {
    let path = Path::new("/run/hvnet").join(lab).join(format!("{vm}.ctl"));
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    writeln!(s, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn channels_rings_and_rss_change_under_a_live_tcp_stream() {
    let Some(_lock) = lab_lock() else { return };
    let mut m = Manual::new("mq-live");
    for (vm, n) in [("vm1", 1u8), ("vm2", 2)] {
        let mut a = m.guest_args(vm, n);
        a.extend(["--queues".into(), "4".into()]);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        m.spawn(&refs);
        m.wait_for(&Path::new("/run/hvnet/mq-live").join(format!("{vm}.ctl")));
    }
    assert_eq!(
        eventually(Duration::from_secs(10), || tcp_transfer(6400, 1 << 20)),
        1 << 20
    );
    assert_eq!(
        ctl("mq-live", "vm2", json!({"cmd": "channels"}))["combined"],
        4
    );
    let stream = std::thread::spawn(|| tcp_transfer(6401, 4 << 30));
    std::thread::sleep(Duration::from_millis(500));
    // -L combined 2, -G rx 4000 tx 100, -X equal 1: each rebuilds or reprograms the NIC
    // while the stream runs.
    let r = ctl(
        "mq-live",
        "vm2",
        json!({"cmd": "set_channels", "combined": 2}),
    );
    assert_eq!(r["combined"], 2, "{r}");
    assert_eq!(
        ctl("mq-live", "vm2", json!({"cmd": "channels"}))["combined"],
        2
    );
    let r = ctl(
        "mq-live",
        "vm2",
        json!({"cmd": "set_rings", "rx": 4000, "tx": 100}),
    );
    assert!(r.get("error").is_none(), "{r}");
    let rings = ctl("mq-live", "vm2", json!({"cmd": "rings"}));
    assert!(rings["rx"].as_u64().unwrap().abs_diff(4000) <= 2, "{rings}");
    assert_eq!(rings["tx"], 100, "{rings}");
    // Rebuilds return every page they took: many in a row still work.
    for combined in [4, 2, 3, 2, 4, 2] {
        let r = ctl(
            "mq-live",
            "vm2",
            json!({"cmd": "set_channels", "combined": combined}),
        );
        assert_eq!(r["combined"], combined, "{r}");
    }
    let r = ctl("mq-live", "vm2", json!({"cmd": "set_rss", "table": [0]}));
    assert_eq!(r["ok"], true, "{r}");
    let got = stream
        .join()
        .unwrap()
        .expect("the stream survives the changes");
    assert_eq!(got, 4 << 30);
    // With every table entry on queue 0, 64 flows all land there.
    let before = queue_rx(&stats("mq-live", "vm2"), 2);
    for port in 0..16 {
        tcp_transfer(6500 + port, 256 << 10).unwrap();
    }
    let after = queue_rx(&stats("mq-live", "vm2"), 2);
    assert!(after[0] > before[0], "{before:?} → {after:?}");
    assert_eq!(
        after[1], before[1],
        "nothing on queue 1: {before:?} → {after:?}"
    );
    drop(m);
    assert_clean("mq-live");
}

/// Sends one 4000-byte UDP datagram (three IPv4 fragments) from vm1 and returns the
/// most packets one of vm1's queues sent meanwhile: 3 if the fragments stayed together
/// (other traffic may add to a queue, never take away).
fn fragmented_datagram_queues(lab: &str, sport: u16) -> u64 {
    let before = tx_queues(&stats(lab, "vm1"), 4);
    in_netns("vm1", move || {
        let s = std::net::UdpSocket::bind(SocketAddr::from(([198, 18, 0, 1], sport))).unwrap();
        s.send_to(&[0x5a; 4000], SocketAddr::from(([198, 18, 0, 2], 9)))
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    let after = tx_queues(&stats(lab, "vm1"), 4);
    after
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .max()
        .unwrap_or(0)
}

fn tx_queues(st: &Value, queues: usize) -> Vec<u64> {
    (0..queues)
        .map(|q| st[format!("tx_queue_{q}_packets")].as_u64().unwrap_or(0))
        .collect()
}

#[test]
fn udp_flow_hash_level_decides_whether_fragments_share_a_queue() {
    let Some(_lock) = lab_lock() else { return };
    let mut m = Manual::new("mq-frag");
    for (vm, n) in [("vm1", 1u8), ("vm2", 2)] {
        let mut a = m.guest_args(vm, n);
        a.extend(["--queues".into(), "4".into()]);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        m.spawn(&refs);
        m.wait_for(&Path::new("/run/hvnet/mq-frag").join(format!("{vm}.ctl")));
    }
    assert_eq!(
        eventually(Duration::from_secs(10), || tcp_transfer(6600, 1 << 20)),
        1 << 20
    );
    // Default (sdfn, L4): the first fragment carries the ports, the others do not, so a
    // datagram's fragments are spread over queues.
    let l4: Vec<u64> = (0..16)
        .map(|i| fragmented_datagram_queues("mq-frag", 7000 + i))
        .collect();
    assert!(
        l4.iter().any(|&n| n < 3),
        "with L4 hashing some datagram spans queues: {l4:?}"
    );
    // sd (L3): every fragment hashes by addresses only: one queue per datagram.
    let r = ctl(
        "mq-frag",
        "vm1",
        json!({"cmd": "set_flow_hash", "proto": "udp4", "fields": "sd"}),
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        ctl(
            "mq-frag",
            "vm1",
            json!({"cmd": "flow_hash", "proto": "udp4"})
        )["fields"],
        "sd"
    );
    let l3: Vec<u64> = (0..16)
        .map(|i| fragmented_datagram_queues("mq-frag", 7100 + i))
        .collect();
    assert!(
        l3.iter().all(|&n| n >= 3),
        "with L3 hashing each datagram stays on one queue: {l3:?}"
    );
    drop(m);
    assert_clean("mq-frag");
}
