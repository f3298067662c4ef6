//! End-to-end tests of the offloads: what each host profile lets the guest enable,
//! checksums (good ones delivered, corrupted ones dropped and counted by the receiving
//! kernel) for TCP and UDP over IPv4 and IPv6 under every profile, and LRO switched at
//! run time under a live TCP stream. Root required (see `common::lab_lock`).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const PROFILES: [&str; 4] = ["ws2012r2", "ws2016", "ws2019", "azure"];

fn ctl(m: &Manual, vm: &str, req: Value) -> Value {
    use std::io::{BufRead, BufReader, Write};
    let path = Path::new("/run/hvnet")
        .join(&m.lab)
        .join(format!("{vm}.ctl"));
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    writeln!(s, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap()
}

fn host_stats(m: &Manual, vm: &str) -> Value {
    use std::io::{BufRead, BufReader, Write};
    let path = Path::new("/run/hvnet").join(&m.lab).join("host.ctl");
    let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
    writeln!(s, "{}", json!({"cmd": "stats"})).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["vm"] == vm)
        .unwrap()["stats"]
        .clone()
}

/// Host and two guests with IPv4 and IPv6 addresses, for one profile.
fn start(profile: &str, lab: &str) -> Manual {
    let mut m = Manual::with_profile(lab, profile);
    for (vm, n) in [("vm1", 1u8), ("vm2", 2)] {
        let mut a = m.guest_args(vm, n);
        a.extend(["--address".into(), format!("2001:2::{n}/64")]);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        m.spawn(&refs);
        m.wait_for(&Path::new("/run/hvnet").join(lab).join(format!("{vm}.ctl")));
    }
    m
}

#[test]
fn each_profile_enables_what_its_host_offers() {
    let Some(_lock) = lab_lock() else { return };
    for profile in PROFILES {
        let m = start(profile, "off-prof");
        let f = ctl(&m, "vm1", json!({"cmd": "features"}));
        let n = &f["negotiated"];
        let info = ctl(&m, "vm1", json!({"cmd": "info"}));
        assert_eq!(info["host_profile"], profile, "{info}");
        // TCP checksum and LSO everywhere, both families.
        assert_eq!(n["tx_csum_tcp4"], true, "{profile}: {f}");
        assert_eq!(n["tx_csum_tcp6"], true, "{profile}: {f}");
        assert!(
            n["tso4"].as_u64().is_some() && n["tso6"].as_u64().is_some(),
            "{profile}: {f}"
        );
        // UDP checksum from 2016 on.
        let udp = profile != "ws2012r2";
        assert_eq!(n["tx_csum_udp4"], udp, "{profile}: {f}");
        assert_eq!(n["tx_csum_udp6"], udp, "{profile}: {f}");
        // RSC (LRO) from 2019 on, on by default; fixed off before.
        let rsc = matches!(profile, "ws2019" | "azure");
        assert_eq!(n["rsc"], rsc, "{profile}: {f}");
        assert_eq!(f["features"]["lro"]["on"], rsc, "{profile}: {f}");
        assert_eq!(f["features"]["lro"]["fixed"], !rsc, "{profile}: {f}");
        // Setting a fixed LRO is refused with a reason.
        if !rsc {
            let r = ctl(
                &m,
                "vm1",
                json!({"cmd": "set_features", "set": {"lro": true}}),
            );
            let e = r["error"].as_str().unwrap_or_default();
            assert!(
                e.contains("large-receive-offload") && e.contains("fixed"),
                "{r}"
            );
        }
        drop(m);
    }
}

fn snmp(ns: &str, proto: &str, field: &str) -> u64 {
    // /proc/net follows the process's namespace; the thread's is under thread-self.
    let path = if proto.ends_with('6') {
        "/proc/thread-self/net/snmp6"
    } else {
        "/proc/thread-self/net/snmp"
    };
    let proto = proto.to_owned();
    let field = field.to_owned();
    in_netns(ns, move || {
        let text = std::fs::read_to_string(path).unwrap();
        if path.ends_with('6') {
            // "Udp6InCsumErrors   N"
            let key = format!("{proto}{field}");
            return text
                .lines()
                .find_map(|l| {
                    let mut it = l.split_whitespace();
                    (it.next() == Some(&key)).then(|| it.next().unwrap().parse().unwrap())
                })
                .unwrap_or(0);
        }
        let mut lines = text.lines().filter(|l| l.starts_with(&format!("{proto}:")));
        let names: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let values: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let i = names.iter().position(|n| *n == field).unwrap();
        values[i].parse().unwrap()
    })
}

/// Sends a UDP datagram from vm1 to vm2 through a raw socket with the checksum given
/// (None: correct), returns whether vm2's socket received it.
fn udp_probe(v6: bool, port: u16, checksum: Option<u16>) -> bool {
    let (src, dst): (std::net::IpAddr, std::net::IpAddr) = if v6 {
        ("2001:2::1".parse().unwrap(), "2001:2::2".parse().unwrap())
    } else {
        ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap())
    };
    let rx = in_netns("vm2", move || {
        let s = UdpSocket::bind(SocketAddr::new(dst, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        s
    });
    let payload = b"hvnet checksum probe";
    let mut udp = Vec::new();
    udp.extend_from_slice(&4000u16.to_be_bytes());
    udp.extend_from_slice(&port.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let good = udp_checksum(src, dst, &udp);
    let c = checksum.unwrap_or(good);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    in_netns("vm1", move || {
        let domain = if v6 {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        };
        let s =
            socket2::Socket::new(domain, socket2::Type::RAW, Some(socket2::Protocol::UDP)).unwrap();
        s.send_to(&udp, &SocketAddr::new(dst, 0).into()).unwrap();
    });
    let mut buf = [0u8; 64];
    matches!(rx.recv(&mut buf), Ok(n) if &buf[..n] == payload)
}

fn udp_checksum(src: std::net::IpAddr, dst: std::net::IpAddr, udp: &[u8]) -> u16 {
    let mut sum = 0u32;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    match (src, dst) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            add(&s.octets());
            add(&d.octets());
            add(&[0, 17]);
            add(&(udp.len() as u16).to_be_bytes());
        }
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => {
            add(&s.octets());
            add(&d.octets());
            add(&(udp.len() as u32).to_be_bytes());
            add(&[0, 0, 0, 17]);
        }
        _ => unreachable!(),
    }
    add(udp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    match !(sum as u16) {
        0 => 0xffff,
        c => c,
    }
}

#[test]
fn checksums_are_validated_and_corrupted_packets_dropped_under_every_profile() {
    let Some(_lock) = lab_lock() else { return };
    for profile in PROFILES {
        let m = start(profile, "off-csum");
        // TCP over IPv4 and IPv6 (offloaded checksums, LSO) end to end.
        assert_eq!(
            eventually(Duration::from_secs(10), || tcp_transfer(6101, 32 << 20)),
            32 << 20,
            "{profile}"
        );
        let v6: SocketAddr = "[2001:2::2]:6102".parse().unwrap();
        assert_eq!(
            eventually(Duration::from_secs(10), || tcp_transfer_to(v6, 32 << 20)),
            32 << 20,
            "{profile} IPv6"
        );
        // UDP through the kernel's own sockets (checksum offloaded where the host can,
        // in software where it cannot), both families.
        for v6 in [false, true] {
            let (src, dst): (std::net::IpAddr, std::net::IpAddr) = if v6 {
                ("2001:2::1".parse().unwrap(), "2001:2::2".parse().unwrap())
            } else {
                ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap())
            };
            let rx = in_netns("vm2", move || {
                let s = UdpSocket::bind(SocketAddr::new(dst, 7000)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                s
            });
            let got = eventually(Duration::from_secs(5), || {
                in_netns("vm1", move || {
                    let s = UdpSocket::bind(SocketAddr::new(src, 0))?;
                    s.send_to(&[0xab; 1200], SocketAddr::new(dst, 7000))
                })?;
                let mut buf = [0u8; 2000];
                rx.recv(&mut buf)
            });
            assert_eq!(got, 1200, "{profile} UDP v6={v6}");
        }
        // Corrupted on purpose: dropped by vm2's kernel, counted as checksum errors.
        for (v6, proto) in [(false, "Udp"), (true, "Udp6")] {
            assert!(
                udp_probe(v6, 7100, None),
                "{profile}: a correct probe must arrive (v6={v6})"
            );
            let before = snmp("vm2", proto, "InCsumErrors");
            assert!(
                !udp_probe(v6, 7101, Some(0x1234)),
                "{profile}: corrupted UDP delivered (v6={v6})"
            );
            let after = snmp("vm2", proto, "InCsumErrors");
            assert!(
                after > before,
                "{profile} {proto}: InCsumErrors {before} → {after}"
            );
        }
        drop(m);
    }
}

#[test]
fn lro_switched_off_and_on_under_a_live_tcp_stream() {
    let Some(_lock) = lab_lock() else { return };
    let m = start("azure", "off-lro");
    let lab = m.lab.clone();
    let stream = std::thread::spawn(|| tcp_transfer(6201, 3 << 30));
    std::thread::sleep(Duration::from_millis(400));
    let rsc_before = host_stats(&m, "vm2")["rx_rsc_packets"].as_u64().unwrap();
    assert!(rsc_before > 0, "RSC in use before the switch");
    let r = ctl(
        &m,
        "vm2",
        json!({"cmd": "set_features", "set": {"lro": false}}),
    );
    assert_eq!(r["changed"]["lro"], false, "{r}");
    std::thread::sleep(Duration::from_millis(400));
    let seg1 = host_stats(&m, "vm2")["rx_lso_segmented"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let seg2 = host_stats(&m, "vm2")["rx_lso_segmented"].as_u64().unwrap();
    assert!(
        seg2 > seg1,
        "the host segments once LRO is off ({seg1} → {seg2})"
    );
    let r = ctl(
        &m,
        "vm2",
        json!({"cmd": "set_features", "set": {"lro": true}}),
    );
    assert_eq!(r["changed"]["lro"], true, "{r}");
    let got = stream
        .join()
        .unwrap()
        .expect("the stream survives the switches");
    assert_eq!(got, 3 << 30);
    let f = ctl(&m, "vm2", json!({"cmd": "features"}));
    assert_eq!(f["features"]["lro"]["on"], true);
    drop(m);
    assert_clean(&lab);
}
