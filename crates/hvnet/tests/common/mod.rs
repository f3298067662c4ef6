//! Shared helpers of the end-to-end tests: the lab lock, hand-started processes,
//! traffic from inside namespaces.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const HVNET: &str = env!("CARGO_BIN_EXE_hvnet");

/// Holds the lab lock for the test's duration.
pub struct LabLock(#[allow(dead_code)] File);

pub fn lab_lock() -> Option<LabLock> {
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

pub fn assert_clean(lab: &str) {
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

/// Processes started by hand, as a user would: host, then guests.
pub struct Manual {
    pub lab: String,
    pub children: Vec<Child>,
}

impl Manual {
    pub fn new(lab: &str) -> Self {
        Self::with_profile(lab, "azure")
    }

    pub fn with_profile(lab: &str, profile: &str) -> Self {
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
        m.spawn(&[
            "host",
            "--lab",
            lab,
            "--profile",
            profile,
            "--vm",
            "vm1",
            "--vm",
            "vm2",
        ]);
        m.wait_for(&Path::new("/run/hvnet").join(lab).join("host.ctl"));
        m
    }

    pub fn spawn(&mut self, args: &[&str]) -> usize {
        let child = Command::new(HVNET)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.children.push(child);
        self.children.len() - 1
    }

    pub fn guest_args(&self, vm: &str, n: u8) -> Vec<String> {
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

    pub fn start_guest(&mut self, vm: &str, n: u8) -> usize {
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

    pub fn wait_for(&self, p: &Path) {
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

pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
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
pub fn tcp_transfer(port: u16, bytes: usize) -> std::io::Result<usize> {
    tcp_transfer_to(SocketAddr::from(([198, 18, 0, 2], port)), bytes)
}

/// Moves `bytes` over TCP from vm1 to `dst` (an address of vm2); returns bytes received.
pub fn tcp_transfer_to(dst: SocketAddr, bytes: usize) -> std::io::Result<usize> {
    let listener = in_netns("vm2", move || TcpListener::bind(dst))?;
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
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(5))?;
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
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> std::io::Result<T>) -> T {
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
