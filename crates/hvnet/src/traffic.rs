//! The lab's own traffic: ICMP echo and a bulk TCP stream, from sockets opened inside the
//! VMs' namespaces, so the lab needs neither ping nor iperf3.

use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::netns;

/// Result of an echo test.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EchoResult {
    /// Requests sent.
    pub sent: u32,
    /// Replies received.
    pub received: u32,
    /// Round-trip times in microseconds: min, average, max.
    pub rtt_us: (f64, f64, f64),
}

fn icmp_checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `count` ICMP (or ICMPv6) echo requests from inside namespace `ns` to `dst`,
/// `interval` apart, and waits up to a second for each reply.
pub fn ping(ns: &str, dst: IpAddr, count: u32, interval: Duration) -> Result<EchoResult> {
    let ns = ns.to_owned();
    netns::run_in(&ns, move || ping_here(dst, count, interval))
        .join()
        .map_err(|_| anyhow::anyhow!("ping thread panicked"))?
}

fn ping_here(dst: IpAddr, count: u32, interval: Duration) -> Result<EchoResult> {
    let (domain, proto, request_type, reply_type) = match dst {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8),
    };
    let sock = Socket::new(domain, Type::RAW, Some(proto))
        .context("open a raw ICMP socket (needs root)")?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let to = SockAddr::from(SocketAddr::new(dst, 0));
    let ident = (std::process::id() & 0xffff) as u16;
    let mut rtts = Vec::new();
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    for seq in 0..count {
        let mut pkt = vec![request_type, 0, 0, 0];
        pkt.extend_from_slice(&ident.to_be_bytes());
        pkt.extend_from_slice(&(seq as u16).to_be_bytes());
        pkt.extend((0..56u8).map(|i| i.wrapping_mul(7)));
        if dst.is_ipv4() {
            let c = icmp_checksum(&pkt);
            pkt[2..4].copy_from_slice(&c.to_be_bytes());
        } // The kernel fills the ICMPv6 checksum on raw ICMPv6 sockets.
        let start = Instant::now();
        sock.send_to(&pkt, &to)?;
        let deadline = start + Duration::from_secs(1);
        while Instant::now() < deadline {
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                continue;
            };
            // SAFETY: recv_from initialised the first n bytes.
            let got: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
            // IPv4 raw sockets include the IP header; IPv6 ones do not.
            let icmp = if dst.is_ipv4() {
                let ihl = usize::from(got.first().map_or(0, |b| b & 0xf)) * 4;
                got.get(ihl..).unwrap_or(&[])
            } else {
                got
            };
            if icmp.len() >= 8
                && icmp[0] == reply_type
                && icmp[4..6] == ident.to_be_bytes()
                && icmp[6..8] == (seq as u16).to_be_bytes()
            {
                rtts.push(start.elapsed().as_secs_f64() * 1e6);
                break;
            }
        }
        std::thread::sleep(interval);
    }
    let received = rtts.len() as u32;
    let rtt_us = if rtts.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            rtts.iter().copied().fold(f64::MAX, f64::min),
            rtts.iter().sum::<f64>() / rtts.len() as f64,
            rtts.iter().copied().fold(0.0, f64::max),
        )
    };
    Ok(EchoResult {
        sent: count,
        received,
        rtt_us,
    })
}

/// Result of a bulk TCP transfer.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TcpResult {
    /// Bytes the receiver counted.
    pub bytes: u64,
    /// Seconds from connect to the receiver's last byte.
    pub seconds: f64,
    /// Throughput in Gbit/s.
    pub gbit_per_s: f64,
}

/// Moves `bytes` over one TCP connection from namespace `src_ns` to `dst` (listening
/// inside `dst_ns`), calling `progress` with the bytes received so far about every
/// half second; `progress` returning an error abandons the transfer.
pub fn tcp_bulk(
    src_ns: &str,
    dst_ns: &str,
    dst: IpAddr,
    port: u16,
    bytes: u64,
    progress: impl FnMut(u64) -> Result<()>,
) -> Result<TcpResult> {
    tcp_transfer(src_ns, dst_ns, dst, port, Limit::Bytes(bytes), progress)
}

/// How long a transfer runs.
#[derive(Clone, Copy, Debug)]
pub enum Limit {
    /// Exactly this many bytes.
    Bytes(u64),
    /// As many bytes as go in this time.
    Time(Duration),
}

/// Moves data over one TCP connection from `src_ns` to `dst` in `dst_ns` until the limit.
pub fn tcp_transfer(
    src_ns: &str,
    dst_ns: &str,
    dst: IpAddr,
    port: u16,
    limit: Limit,
    mut progress: impl FnMut(u64) -> Result<()>,
) -> Result<TcpResult> {
    let (bytes, deadline) = match limit {
        Limit::Bytes(b) => (b, None),
        Limit::Time(d) => (u64::MAX, Some(d)),
    };
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let listener = {
        let addr = SocketAddr::new(dst, port);
        netns::run_in(dst_ns, move || {
            TcpListener::bind(addr).with_context(|| format!("listen on {addr}"))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("listener thread panicked"))??
    };
    let server = {
        let received = received.clone();
        let done = done.clone();
        std::thread::spawn(move || -> Result<Instant> {
            let (mut s, _) = listener.accept()?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
            let end = Instant::now();
            done.store(true, Ordering::Relaxed);
            Ok(end)
        })
    };
    let start = Instant::now();
    let client = netns::run_in(src_ns, move || -> Result<()> {
        let addr = SocketAddr::new(dst, port);
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connect to {addr}"))?;
        s.set_write_timeout(Some(Duration::from_secs(10)))?;
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
        let mut left = bytes;
        let started = Instant::now();
        while left > 0 && deadline.is_none_or(|d| started.elapsed() < d) {
            let n = left.min(chunk.len() as u64) as usize;
            s.write_all(&chunk[..n])
                .context("TCP send stalled for 10 s")?;
            left -= n as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        Ok(())
    });
    let mut last = (Instant::now(), 0);
    while !done.load(Ordering::Relaxed) && !client.is_finished() {
        std::thread::sleep(Duration::from_millis(500));
        let got = received.load(Ordering::Relaxed);
        // Abandoned transfers leave their threads blocked; the process is about to end.
        progress(got)?;
        if got != last.1 {
            last = (Instant::now(), got);
        } else if last.0.elapsed() > Duration::from_secs(15) {
            bail!("TCP transfer made no progress for 15 s ({got} of {bytes} bytes)");
        }
    }
    // On a client failure the server thread is left behind (it may sit in accept).
    client
        .join()
        .map_err(|_| anyhow::anyhow!("TCP client thread panicked"))??;
    let end = server
        .join()
        .map_err(|_| anyhow::anyhow!("TCP server thread panicked"))??;
    progress(received.load(Ordering::Relaxed))?;
    let got = received.load(Ordering::Relaxed);
    if deadline.is_none() && got != bytes {
        bail!("TCP transfer delivered {got} of {bytes} bytes");
    }
    let seconds = end.duration_since(start).as_secs_f64();
    Ok(TcpResult {
        bytes: got,
        seconds,
        gbit_per_s: got as f64 * 8.0 / seconds / 1e9,
    })
}
