//! Cross-process stress test of the ring: a writer process and a reader process share one
//! ring in a memfd and signal each other through two eventfds exactly as the rules say
//! (PROTOCOL.md §1.4, §1.5): the writer signals only when `commit` says so and blocks with
//! `pending_send_sz` when the ring is full; the reader drains NAPI style, masked, and
//! signals the writer only when its `commit` says so. The reader checks the order and every
//! byte of ≥ 10 million packets (release build) of random sizes; a lost wake-up shows as a
//! timeout.
//!
//! `cargo test --release -p vmbus --test ring_stress`; `HVNET_RING_STRESS_PACKETS=n`
//! overrides the count (debug builds default to 300 000). The test binary re-executes itself
//! with `HVNET_RING_STRESS_ROLE=reader` for the reader side (no fork in a threaded process).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec, eventfd, poll};
use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
use rustix::mm::{MapFlags, ProtFlags, mmap};
use vmbus::packet::PacketType;
use vmbus::ring::{
    OutgoingPacket, RING_HEADER_SIZE, RingMemory, RingReader, RingWriter, WriteError,
};

const ROLE: &str = "HVNET_RING_STRESS_ROLE";
const FDS: &str = "HVNET_RING_STRESS_FDS";
const COUNT: &str = "HVNET_RING_STRESS_PACKETS";
const DATA_SIZE: usize = 256 * 1024;
const SEED: u64 = 0x6876_6e65_7472_696e;
/// The writer publishes after this many packets (or when the ring is full).
const WRITER_BATCH: u32 = 32;
/// The reader publishes after this many packets (and when it runs dry).
const READER_BATCH: u32 = 64;
/// A wait longer than this is a lost wake-up.
const WAIT_TIMEOUT: Duration = Duration::from_secs(20);

type Result<T> = std::result::Result<T, String>;

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What packet `seq` looks like; both processes derive it from the sequence number.
struct Shape {
    random: u64,
    packet_type: u16,
    header_len: usize,
    payload_len: usize,
}

impl Shape {
    fn of(seq: u64) -> Self {
        let random = splitmix64(SEED ^ seq);
        Self {
            random,
            packet_type: if random & 1 == 0 {
                PacketType::DATA_INBAND
            } else {
                PacketType::COMP
            },
            header_len: ((random >> 8) % 3) as usize * 8,
            payload_len: 1 + ((random >> 16) % 512) as usize,
        }
    }

    /// Fills `out` with the header then the payload bytes: the sequence number first, then
    /// words derived from it.
    fn fill(&self, seq: u64, out: &mut [u8]) {
        let (header, payload) = out.split_at_mut(self.header_len);
        for (k, chunk) in header.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&(!seq ^ k as u64).to_le_bytes());
        }
        let mut word = seq;
        for (k, chunk) in payload.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
            word = self.random ^ (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

/// The shared ring: a memfd mapped shared.
fn map_ring(fd: BorrowedFd<'_>) -> Result<RingMemory> {
    let len = RING_HEADER_SIZE + DATA_SIZE;
    // SAFETY: a fresh shared mapping of the memfd, never unmapped while the process runs.
    let ptr = unsafe {
        mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd,
            0,
        )
    }
    .map_err(|e| format!("mmap: {e}"))?;
    // SAFETY: the mapping is `len` bytes, page aligned, and lives until the process exits.
    unsafe { RingMemory::new(ptr.cast(), len) }.map_err(|e| format!("ring: {e}"))
}

fn signal(fd: BorrowedFd<'_>) -> Result<()> {
    rustix::io::write(fd, &1u64.to_ne_bytes()).map_err(|e| format!("eventfd write: {e}"))?;
    Ok(())
}

fn wait(fd: BorrowedFd<'_>, what: &str) -> Result<()> {
    let timeout = Timespec {
        tv_sec: WAIT_TIMEOUT.as_secs() as _,
        tv_nsec: 0,
    };
    loop {
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => {
                return Err(format!(
                    "lost wake-up: no {what} signal for {WAIT_TIMEOUT:?}"
                ));
            }
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
    let mut buf = [0u8; 8];
    rustix::io::read(fd, &mut buf).map_err(|e| format!("eventfd read: {e}"))?;
    Ok(())
}

fn packet_count() -> u64 {
    std::env::var(COUNT)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            300_000
        } else {
            10_000_000
        })
}

#[derive(Default, Debug)]
struct Stats {
    signals: u64,
    waits: u64,
    commits: u64,
}

fn run_writer(
    mut writer: RingWriter,
    count: u64,
    data: BorrowedFd<'_>,
    space: BorrowedFd<'_>,
) -> Result<Stats> {
    if !writer.peer_supports_pending_send() {
        return Err("feature_bits bit 0 not set".into());
    }
    let mut stats = Stats::default();
    let mut bytes = vec![0u8; 1024];
    let mut since_commit = 0;
    let commit = |writer: &mut RingWriter, stats: &mut Stats| -> Result<()> {
        stats.commits += 1;
        if writer.commit().map_err(|e| format!("writer commit: {e}"))? {
            stats.signals += 1;
            signal(data)?;
        }
        Ok(())
    };
    for seq in 0..count {
        let shape = Shape::of(seq);
        let used = shape.header_len + shape.payload_len;
        shape.fill(seq, &mut bytes[..used]);
        let (header, payload) = bytes[..used].split_at(shape.header_len);
        let pieces: [&[u8]; 2] = payload.split_at(payload.len() / 3).into();
        let pkt = OutgoingPacket {
            packet_type: shape.packet_type,
            flags: (seq & 1) as u16,
            transaction_id: seq,
            header,
            payload: &pieces,
        };
        loop {
            match writer.write(&pkt) {
                Ok(()) => break,
                Err(WriteError::Full { needed }) => {
                    // Publish what we have before blocking, then block (§1.4).
                    commit(&mut writer, &mut stats)?;
                    since_commit = 0;
                    if !writer
                        .set_pending_send(needed)
                        .map_err(|e| format!("pending: {e}"))?
                    {
                        stats.waits += 1;
                        wait(space, "space")?;
                    }
                }
                Err(e) => return Err(format!("write {seq}: {e}")),
            }
        }
        writer.clear_pending_send();
        since_commit += 1;
        if since_commit == WRITER_BATCH {
            commit(&mut writer, &mut stats)?;
            since_commit = 0;
        }
    }
    commit(&mut writer, &mut stats)?;
    Ok(stats)
}

fn check_packet(seq: u64, p: &vmbus::ring::IncomingPacket<'_>, expected: &mut [u8]) -> Result<()> {
    let shape = Shape::of(seq);
    if p.transaction_id != seq {
        return Err(format!("packet {seq}: transaction id {}", p.transaction_id));
    }
    if p.packet_type != shape.packet_type || p.flags != (seq & 1) as u16 {
        return Err(format!(
            "packet {seq}: type {} flags {}",
            p.packet_type, p.flags
        ));
    }
    let padded = shape.payload_len.div_ceil(8) * 8;
    if p.header.len() != shape.header_len || p.payload.len() != padded {
        return Err(format!(
            "packet {seq}: header {} payload {} (expected {} / {padded})",
            p.header.len(),
            p.payload.len(),
            shape.header_len
        ));
    }
    let used = shape.header_len + shape.payload_len;
    shape.fill(seq, &mut expected[..used]);
    let (header, payload) = expected[..used].split_at(shape.header_len);
    if p.header != header || &p.payload[..shape.payload_len] != payload {
        return Err(format!("packet {seq}: bytes differ"));
    }
    if p.payload[shape.payload_len..].iter().any(|&b| b != 0) {
        return Err(format!("packet {seq}: padding not zero"));
    }
    Ok(())
}

fn run_reader(
    mut reader: RingReader,
    count: u64,
    data: BorrowedFd<'_>,
    space: BorrowedFd<'_>,
) -> Result<Stats> {
    let mut stats = Stats::default();
    let mut buf = vec![0u8; 4624];
    let mut expected = vec![0u8; 1024];
    let mut seq = 0u64;
    let commit = |reader: &mut RingReader, stats: &mut Stats| -> Result<()> {
        stats.commits += 1;
        if reader.commit().map_err(|e| format!("reader commit: {e}"))? {
            stats.signals += 1;
            signal(space)?;
        }
        Ok(())
    };
    reader.mask_interrupts();
    loop {
        let mut drained = 0u32;
        while let Some(p) = reader
            .read(&mut buf)
            .map_err(|e| format!("read {seq}: {e}"))?
        {
            check_packet(seq, &p, &mut expected)?;
            seq += 1;
            drained += 1;
            if drained.is_multiple_of(READER_BATCH) {
                commit(&mut reader, &mut stats)?;
            }
        }
        commit(&mut reader, &mut stats)?;
        if seq == count {
            return Ok(stats);
        }
        if reader
            .unmask_interrupts()
            .map_err(|e| format!("unmask: {e}"))?
        {
            reader.mask_interrupts();
            continue;
        }
        stats.waits += 1;
        wait(data, "data")?;
        reader.mask_interrupts();
    }
}

fn reader_main() -> Result<()> {
    let fds = std::env::var(FDS).map_err(|_| "no fds".to_string())?;
    let fds: Vec<i32> = fds
        .split(',')
        .map(|s| s.parse().map_err(|_| "bad fd".to_string()))
        .collect::<Result<_>>()?;
    let [memfd, data, space] = fds[..] else {
        return Err("need 3 fds".into());
    };
    // SAFETY: the parent created these fds without CLOEXEC for this process; they stay open
    // until it exits.
    let (memfd, data, space) = unsafe {
        (
            BorrowedFd::borrow_raw(memfd),
            BorrowedFd::borrow_raw(data),
            BorrowedFd::borrow_raw(space),
        )
    };
    let reader = RingReader::new(map_ring(memfd)?).map_err(|e| format!("reader: {e}"))?;
    let stats = run_reader(reader, packet_count(), data, space)?;
    println!("ring_stress reader: {stats:?}");
    Ok(())
}

fn writer_main() -> Result<()> {
    let count = packet_count();
    let memfd = memfd_create("hvnet-ring-stress", MemfdFlags::empty())
        .map_err(|e| format!("memfd: {e}"))?;
    ftruncate(&memfd, (RING_HEADER_SIZE + DATA_SIZE) as u64)
        .map_err(|e| format!("ftruncate: {e}"))?;
    let mem = map_ring(memfd.as_fd_borrowed())?;
    mem.init_header();
    let writer = RingWriter::new(mem).map_err(|e| format!("writer: {e}"))?;
    let data: OwnedFd = eventfd(0, EventfdFlags::empty()).map_err(|e| format!("eventfd: {e}"))?;
    let space: OwnedFd = eventfd(0, EventfdFlags::empty()).map_err(|e| format!("eventfd: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let start = Instant::now();
    let mut child = Command::new(exe)
        .env(ROLE, "reader")
        .env(COUNT, count.to_string())
        .env(
            FDS,
            format!(
                "{},{},{}",
                memfd.as_raw_fd(),
                data.as_raw_fd(),
                space.as_raw_fd()
            ),
        )
        .spawn()
        .map_err(|e| format!("spawn reader: {e}"))?;
    let result = run_writer(writer, count, data.as_fd_borrowed(), space.as_fd_borrowed());
    if let Err(e) = &result {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("writer: {e}"));
    }
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    let elapsed = start.elapsed();
    if !status.success() {
        return Err(format!("reader process failed: {status}"));
    }
    println!("ring_stress writer: {:?}", result.unwrap());
    println!(
        "ring_stress: {count} packets in {:.2} s = {:.2} M packets/s",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64() / 1e6
    );
    Ok(())
}

trait Borrowed {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_>;
}

impl Borrowed for OwnedFd {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

fn main() -> ExitCode {
    // Speak just enough of the libtest protocol for cargo-nextest: list one test
    // (`--list --format terse`; no ignored tests), run it for anything else.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("ring_stress: test");
        }
        return ExitCode::SUCCESS;
    }
    let reader = std::env::var(ROLE).is_ok_and(|r| r == "reader");
    let result = if reader { reader_main() } else { writer_main() };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "ring_stress {}: FAILED: {e}",
                if reader { "reader" } else { "writer" }
            );
            ExitCode::FAILURE
        }
    }
}
