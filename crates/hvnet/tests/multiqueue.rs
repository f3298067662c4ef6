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
