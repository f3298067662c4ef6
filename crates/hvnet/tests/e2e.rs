//! End-to-end tests: real processes, real namespaces, real TAPs, real Linux traffic
//! over our driver. They need root; without it they fail loudly unless
//! HVNET_SKIP_ROOT_TESTS=1 says to skip them (and then they say so, loudly).
//!
//! The lab's namespaces are named `vm1` and `vm2`, so these tests take a file lock and
//! run one at a time, even under nextest's process-per-test model.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const HVNET: &str = env!("CARGO_BIN_EXE_hvnet");

/// Holds the lab lock for the test's duration.
struct LabLock(#[allow(dead_code)] File);

fn lab_lock() -> Option<LabLock> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var_os("HVNET_SKIP_ROOT_TESTS").is_some() {
            eprintln!(
                "\n!!!!!!!! SKIPPED: this end-to-end test needs root (namespaces, TAP); \
                 HVNET_SKIP_ROOT_TESTS is set !!!!!!!!\n"
            );
            return None;
        }
        panic!(
            "this end-to-end test needs root (network namespaces and TAP devices); \
             run the suite as root, or set HVNET_SKIP_ROOT_TESTS=1 to skip it knowingly"
        );
    }
    let f = File::create("/run/hvnet-e2e.lock").expect("create /run/hvnet-e2e.lock");
    // SAFETY: flock on an fd we own.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    for ns in ["vm1", "vm2"] {
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
    }
    Some(LabLock(f))
}

fn assert_clean(lab: &str) {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        !list
            .lines()
            .any(|l| l.starts_with("vm1") || l.starts_with("vm2")),
        "namespaces left behind: {list}"
    );
    assert!(
        !Path::new("/run/hvnet").join(lab).exists(),
        "run directory left behind"
    );
    let out = Command::new("pgrep")
        .args(["-f", &format!("--lab {lab}")])
        .output();
    if let Ok(out) = out {
        assert!(
            out.stdout.is_empty(),
            "processes left behind: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

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

/// Processes started by hand, as a user would: host, then guests.
struct Manual {
    lab: String,
    children: Vec<Child>,
}

impl Manual {
    fn new(lab: &str) -> Self {
        for ns in ["vm1", "vm2"] {
            assert!(
                Command::new("ip")
                    .args(["netns", "add", ns])
                    .status()
                    .unwrap()
                    .success()
            );
            Command::new("ip")
                .args(["-n", ns, "link", "set", "lo", "up"])
                .status()
                .unwrap();
        }
        let mut m = Self {
            lab: lab.into(),
            children: Vec::new(),
        };
        m.spawn(&["host", "--lab", lab, "--vm", "vm1", "--vm", "vm2"]);
        m.wait_for(&Path::new("/run/hvnet").join(lab).join("host.ctl"));
        m
    }

    fn spawn(&mut self, args: &[&str]) -> usize {
        let child = Command::new(HVNET)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    fn guest_args(&self, vm: &str, n: u8) -> Vec<String> {
        [
            "guest",
            "--lab",
            &self.lab,
            "--vm",
            vm,
            "--netns",
            vm,
            "--address",
            &format!("198.18.0.{n}/24"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn start_guest(&mut self, vm: &str, n: u8) -> usize {
        let args = self.guest_args(vm, n);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let i = self.spawn(&refs);
        self.wait_for(
            &Path::new("/run/hvnet")
                .join(&self.lab)
                .join(format!("{vm}.ctl")),
        );
        i
    }

    fn wait_for(&self, p: &Path) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !p.exists() {
            assert!(Instant::now() < deadline, "{} never appeared", p.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Manual {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            if matches!(c.try_wait(), Ok(Some(_))) {
                continue;
            }
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in ["vm1", "vm2"] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(Path::new("/run/hvnet").join(&self.lab));
    }
}

fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = PathBuf::from("/run/netns").join(ns);
    std::thread::spawn(move || {
        let f_ns = File::open(path).unwrap();
        // SAFETY: setns on an fd we own, for this thread only.
        assert_eq!(
            unsafe { libc::setns(f_ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
    .join()
    .unwrap()
}

/// Moves `bytes` over TCP from vm1 to 198.18.0.2:port in vm2; returns bytes received.
fn tcp_transfer(port: u16, bytes: usize) -> std::io::Result<usize> {
    let listener = in_netns("vm2", move || {
        TcpListener::bind(SocketAddr::from(([198, 18, 0, 2], port)))
    })?;
    let server = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    });
    in_netns("vm1", move || -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(
            &SocketAddr::from(([198, 18, 0, 2], port)),
            Duration::from_secs(5),
        )?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        let chunk = vec![0x5au8; 1 << 16];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n])?;
            left -= n;
        }
        Ok(())
    })?;
    server.join().unwrap()
}

/// Retries `f` until it succeeds or `timeout` passes.
fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> std::io::Result<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(t) => return t,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("gave up: {e}"),
        }
    }
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
