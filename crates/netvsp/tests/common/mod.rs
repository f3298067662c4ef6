//! What `hostile_guest.rs` and `multiqueue.rs` share: a real [`netvsp::Host`] on temp
//! sockets ([`Lab`]) and a hand-made guest over real rings ([`Guest`], one [`Chan`] per
//! open channel) that writes NVSP and RNDIS by hand. Each test file adds its own methods
//! to both (inherent impls in the test crate) and its own constructors.

#![allow(dead_code)] // each test binary uses a part of it

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netvsp::nic::Nic;
use netvsp::{Host, HostConfig, HostProfile, VmSpec};
use nvsp::NvspMessage;
use nvsp::wire as nw;
use rndis::header;
use vmbus::channel::GuestRings;
use vmbus::client::{Client, OpenedChannel};
use vmbus::guid::NETVSC_CLASS;
use vmbus::memory::{GuestMemory, GuestRegion, PAGE_SIZE};
use vmbus::packet::{self, COMPLETION_REQUESTED, GpaRangeSpec, PacketType};
use vmbus::ring::{OutgoingPacket, WriteError};
use zerocopy::little_endian::{U16, U32, U64};

/// How long any one answer from the host may take.
pub const REPLY: Duration = Duration::from_secs(5);
/// Pages per ring, control page included: a 128 KiB data area.
pub const RING_PAGES: u32 = 33;
/// Send buffer: 16 sections of 6144 bytes.
pub const SEND_SECTIONS: usize = 16;
pub const SECTION: usize = nw::SEND_SECTION_SIZE as usize;

// ---------------------------------------------------------------------------------------
// The host under test
// ---------------------------------------------------------------------------------------

/// How much memory a guest of a [`Lab`] takes, and for what.
#[derive(Clone, Copy, Debug)]
pub struct GuestSizes {
    /// All of the guest's memory.
    pub memory: usize,
    /// Where GPA-direct RNDIS messages are built.
    pub scratch: usize,
    /// The receive buffer of [`Guest::bring_up_nvsp`].
    pub recv_buffer: usize,
}

/// A running host with VMs on one switch; the first VM is the one under test (its NIC is
/// [`Lab::nic`]).
pub struct Lab {
    pub host: Host,
    /// Each VM's name and socket, in the order given to [`Lab::launch`].
    pub vms: Vec<(&'static str, PathBuf)>,
    /// What [`Lab::connect`] gives a guest.
    pub sizes: GuestSizes,
}

impl Lab {
    /// Starts a host with `vms` (name, MAC), each on its own socket named after `tag`.
    pub fn launch(
        tag: &str,
        profile: HostProfile,
        queues: u16,
        vms: &[(&'static str, [u8; 6])],
        sizes: GuestSizes,
    ) -> Lab {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let vms: Vec<(&'static str, [u8; 6], PathBuf)> = vms
            .iter()
            .map(|&(name, mac)| {
                let socket = std::env::temp_dir().join(format!(
                    "hvnet-{tag}-{}-{n}-{name}.vmbus",
                    std::process::id()
                ));
                (name, mac, socket)
            })
            .collect();
        let host = Host::start(HostConfig {
            vms: vms
                .iter()
                .map(|(name, mac, socket)| VmSpec {
                    name: (*name).into(),
                    socket: socket.clone(),
                    mac: *mac,
                })
                .collect(),
            profile,
            tracer: None,
            queues,
        })
        .expect("start the host");
        Lab {
            host,
            vms: vms
                .into_iter()
                .map(|(name, _, socket)| (name, socket))
                .collect(),
            sizes,
        }
    }

    /// The socket of VM `name`.
    pub fn socket(&self, name: &str) -> &Path {
        self.vms
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, socket)| socket.as_path())
            .unwrap_or_else(|| panic!("no VM {name}"))
    }

    /// A guest connected to VM `name`, its primary channel open, nothing sent.
    pub fn connect(&self, name: &str) -> Guest {
        Guest::connect(self.socket(name), self.sizes)
    }

    /// The NIC of the VM under test.
    pub fn nic(&self) -> &Arc<Nic> {
        let name = self.vms[0].0;
        self.host
            .nic(name)
            .unwrap_or_else(|| panic!("the {name} VM's NIC"))
    }

    pub fn errors(&self) -> u64 {
        self.nic().stats().protocol_errors.load(Ordering::Relaxed)
    }

    pub fn stat(&self, name: &str) -> u64 {
        self.nic()
            .stats()
            .snapshot()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no counter {name}"))
            .1
    }

    pub fn has_stat(&self, name: &str) -> bool {
        self.nic()
            .stats()
            .snapshot()
            .iter()
            .any(|(n, _)| *n == name)
    }

    /// Waits (bounded) until `f` holds.
    pub fn wait_until(&self, what: &str, f: impl Fn(&Lab) -> bool) {
        let deadline = Instant::now() + REPLY;
        while !f(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; host counters: {:?}",
                self.nic().stats().snapshot()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

// ---------------------------------------------------------------------------------------
// A hand-made guest with any number of channels
// ---------------------------------------------------------------------------------------

/// A packet the host wrote, copied out of a ring.
#[derive(Clone, Debug)]
pub struct Pkt {
    pub ty: u16,
    pub tid: u64,
    pub header: Vec<u8>,
    pub payload: Vec<u8>,
}

/// One open channel: its rings and what was read from them but not yet wanted.
pub struct Chan {
    // Declared first so they are dropped before the channel that owns their memory.
    pub rings: GuestRings,
    pub channel: OpenedChannel,
    pub inbound: Vec<u8>,
    pub stash: VecDeque<Pkt>,
}

impl Chan {
    pub fn new(channel: OpenedChannel) -> Chan {
        Chan {
            rings: GuestRings::new(&channel).expect("ring views"),
            channel,
            inbound: vec![0; 128 * 1024],
            stash: VecDeque::new(),
        }
    }

    /// Publishes what was written and signals the host if the ring rules say so.
    pub fn commit(&mut self) {
        if self.rings.writer.commit().expect("outbound ring") {
            self.channel.guest_to_host.signal();
        }
    }

    /// Writes one packet without publishing it; returns the ring's refusal instead of
    /// panicking.
    pub fn try_write(
        &mut self,
        ty: u16,
        flags: u16,
        tid: u64,
        header: &[u8],
        payload: &[u8],
    ) -> Result<(), WriteError> {
        let pkt = OutgoingPacket {
            packet_type: ty,
            flags,
            transaction_id: tid,
            header,
            payload: &[payload],
        };
        self.rings.writer.write(&pkt)
    }

    /// Writes and publishes one packet.
    pub fn write(&mut self, ty: u16, flags: u16, tid: u64, header: &[u8], payload: &[u8]) {
        self.try_write(ty, flags, tid, header, payload)
            .expect("write to the outbound ring");
        self.commit();
    }

    /// The next packet: one kept earlier, else one read within `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<Pkt> {
        self.stash.pop_front().or_else(|| self.recv(timeout))
    }

    /// Reads the next packet from the ring, waiting up to `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<Pkt> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.rings.reader.read(&mut self.inbound) {
                Ok(Some(p)) => {
                    let pkt = Pkt {
                        ty: p.packet_type,
                        tid: p.transaction_id,
                        header: p.header.to_vec(),
                        payload: p.payload.to_vec(),
                    };
                    if self.rings.reader.commit().expect("inbound ring") {
                        self.channel.guest_to_host.signal();
                    }
                    return Some(pkt);
                }
                Ok(None) => {}
                Err(e) => panic!("the host wrote a bad packet: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.channel
                .host_to_guest
                .wait(Some(left.min(Duration::from_millis(20))));
        }
    }

    /// The first packet matching `want` (earlier non-matching packets are kept).
    pub fn wait_for(&mut self, timeout: Duration, want: impl Fn(&Pkt) -> bool) -> Option<Pkt> {
        if let Some(i) = self.stash.iter().position(&want) {
            return self.stash.remove(i);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let p = self.recv(left)?;
            if want(&p) {
                return Some(p);
            }
            self.stash.push_back(p);
        }
    }
}

/// A guest that writes NVSP and RNDIS by hand; `chans[i]` is the channel with
/// `sub_channel_index` i (None until opened). What it sends goes on the primary
/// (`chans[0]`) unless a method says otherwise.
pub struct Guest {
    // Declared first so they are dropped before the client that owns their memory.
    pub chans: Vec<Option<Chan>>,
    pub client: Client,
    pub memory: Arc<GuestMemory>,
    pub relid: u32,
    pub next_tid: u64,
    pub next_req: u32,
    pub recv: Option<(GuestRegion, u32)>,
    pub send: Option<(GuestRegion, u32)>,
    /// Where GPA-direct RNDIS messages are built.
    pub scratch: GuestRegion,
    pub sizes: GuestSizes,
}

impl Guest {
    /// Connects to the VMBus server at `path` and opens the NIC's primary channel.
    pub fn connect(path: &Path, sizes: GuestSizes) -> Guest {
        let memory = Arc::new(GuestMemory::new(sizes.memory).expect("guest memory"));
        let mut client = Client::connect(path, memory.clone(), None).expect("VMBus connect");
        let offers = client.request_offers().expect("offers");
        let relid = offers
            .iter()
            .find(|o| o.class_id == NETVSC_CLASS && o.sub_channel_index == 0)
            .expect("the host offers a NIC")
            .relid;
        let channel = client
            .open_channel(relid, RING_PAGES)
            .expect("open channel");
        let chan = Chan::new(channel);
        let scratch = memory.alloc(sizes.scratch).expect("scratch");
        Guest {
            chans: vec![Some(chan)],
            client,
            memory,
            relid,
            next_tid: 1,
            next_req: 1,
            recv: None,
            send: None,
            scratch,
            sizes,
        }
    }

    pub fn chan(&mut self, q: usize) -> &mut Chan {
        self.chans[q].as_mut().expect("channel open")
    }

    pub fn primary(&mut self) -> &mut Chan {
        self.chan(0)
    }

    /// The primary's VMBus channel (its ring GPADL and signals).
    pub fn primary_channel(&self) -> &OpenedChannel {
        &self.chans[0].as_ref().expect("channel open").channel
    }

    /// Writes and publishes one packet on channel `q` asking for a completion; returns
    /// its id.
    pub fn send_on(&mut self, q: usize, ty: u16, header: &[u8], payload: &[u8]) -> u64 {
        let tid = self.next_tid;
        self.next_tid += 1;
        self.chan(q)
            .write(ty, COMPLETION_REQUESTED, tid, header, payload);
        tid
    }

    /// Writes and publishes one packet asking for a completion; returns its id.
    pub fn send(&mut self, ty: u16, header: &[u8], payload: &[u8]) -> u64 {
        self.send_on(0, ty, header, payload)
    }

    pub fn send_with(&mut self, ty: u16, flags: u16, tid: u64, header: &[u8], payload: &[u8]) {
        self.primary().write(ty, flags, tid, header, payload);
    }

    /// Sends an in-band NVSP message on channel `q`, asking for a completion.
    pub fn nvsp_on(&mut self, q: usize, msg: &NvspMessage<'_>) -> u64 {
        self.send_on(q, PacketType::DATA_INBAND, &[], &nvsp_bytes(msg))
    }

    /// Sends an in-band NVSP message asking for a completion.
    pub fn nvsp(&mut self, msg: &NvspMessage<'_>) -> u64 {
        self.nvsp_on(0, msg)
    }

    /// The first packet on the primary matching `want` (earlier ones are kept).
    pub fn wait_for(&mut self, timeout: Duration, want: impl Fn(&Pkt) -> bool) -> Option<Pkt> {
        self.primary().wait_for(timeout, want)
    }

    /// The completion of `tid` on channel `q`, if one arrives in time.
    pub fn completion_on(&mut self, q: usize, tid: u64, timeout: Duration) -> Option<Pkt> {
        self.chan(q)
            .wait_for(timeout, |p| p.ty == PacketType::COMP && p.tid == tid)
    }

    /// The status of the NVSP completion of `tid`, if one arrives in time.
    pub fn status(&mut self, tid: u64) -> Option<u32> {
        let p = self.completion_on(0, tid, REPLY)?;
        Some(nvsp_status(&p.payload))
    }

    pub fn expect_status(&mut self, tid: u64, what: &str) -> u32 {
        self.status(tid)
            .unwrap_or_else(|| panic!("no completion for {what} within {REPLY:?}"))
    }

    pub fn expect_fail(&mut self, tid: u64, what: &str) {
        let s = self.expect_status(tid, what);
        assert_eq!(s, nvsp::status::FAIL, "{what}: completion status");
    }

    /// The completion of `tid` if it already arrived (call after [`Guest::sync`]).
    pub fn arrived(&mut self, tid: u64) -> Option<Pkt> {
        let stash = &mut self.primary().stash;
        let i = stash
            .iter()
            .position(|p| p.ty == PacketType::COMP && p.tid == tid)?;
        stash.remove(i)
    }

    /// A barrier: the host handles a guest's packets in order, so once the answer to an
    /// INIT with a made-up version arrives, everything sent on the primary before it has
    /// been handled. Also proves the channel is alive.
    pub fn sync(&mut self) {
        let tid = self.nvsp(&NvspMessage::Init(nw::Init::exact(0xDEAD_0001)));
        let s = self.expect_status(tid, "INIT(0xDEAD0001) used as a barrier");
        assert_ne!(
            s,
            nvsp::status::SUCCESS,
            "host accepted NVSP version 0xDEAD0001"
        );
    }

    pub fn init(&mut self, version: u32) -> u32 {
        let tid = self.nvsp(&NvspMessage::Init(nw::Init::exact(version)));
        self.expect_status(tid, "INIT")
    }

    pub fn ndis_config_and_version(&mut self, nvsp_version: u32) {
        self.nvsp(&NvspMessage::SendNdisConfig(nw::SendNdisConfig {
            mtu: U32::new(1514),
            reserved: U32::ZERO,
            capability: U64::new(nvsp::capability::linux_capabilities(nvsp_version)),
        }));
        self.nvsp(&NvspMessage::SendNdisVersion(
            nw::SendNdisVersion::for_nvsp(nvsp_version),
        ));
    }

    pub fn gpadl(&mut self, bytes: usize) -> (GuestRegion, u32) {
        let region = self.memory.alloc(bytes).expect("buffer memory");
        let gpadl = self
            .client
            .create_gpadl(self.relid, &region)
            .expect("buffer GPADL");
        (region, gpadl)
    }

    pub fn recv_buffer_request(&mut self, gpadl: u32, id: u16) -> u64 {
        self.nvsp(&NvspMessage::SendReceiveBuffer(nw::SendBuffer {
            gpadl: U32::new(gpadl),
            id: U16::new(id),
        }))
    }

    pub fn send_buffer_request(&mut self, gpadl: u32, id: u16) -> u64 {
        self.nvsp(&NvspMessage::SendSendBuffer(nw::SendBuffer {
            gpadl: U32::new(gpadl),
            id: U16::new(id),
        }))
    }

    /// NVSP INIT, NDIS config and version, receive and send buffers, all checked.
    pub fn bring_up_nvsp(&mut self, version: u32) {
        assert_eq!(
            self.init(version),
            nvsp::status::SUCCESS,
            "INIT {version:#x}"
        );
        self.ndis_config_and_version(version);
        let recv_bytes = self.sizes.recv_buffer;
        let (region, gpadl) = self.gpadl(recv_bytes);
        let tid = self.recv_buffer_request(gpadl, nw::RECEIVE_BUFFER_ID);
        let p = self
            .completion_on(0, tid, REPLY)
            .expect("SEND_RECV_BUF_COMPLETE");
        match NvspMessage::parse_completion(&p.payload) {
            Ok(NvspMessage::SendReceiveBufferComplete(c)) => {
                assert_eq!(c.status.get(), nvsp::status::SUCCESS);
                assert_eq!(c.num_sections.get(), 1);
                assert_eq!(c.section.offset.get(), 0);
                let (size, count) = (
                    c.section.sub_alloc_size.get(),
                    c.section.num_sub_allocs.get(),
                );
                assert_eq!(size, 1728);
                assert!(size as usize * count as usize <= recv_bytes);
                assert!(count > netvsp::rx_buffer::RESERVED_SECTIONS);
            }
            other => panic!("SEND_RECV_BUF answered with {other:?}"),
        }
        self.recv = Some((region, gpadl));
        let (region, gpadl) = self.gpadl(SEND_SECTIONS * SECTION);
        let tid = self.send_buffer_request(gpadl, nw::SEND_BUFFER_ID);
        let p = self
            .completion_on(0, tid, REPLY)
            .expect("SEND_SEND_BUF_COMPLETE");
        match NvspMessage::parse_completion(&p.payload) {
            Ok(NvspMessage::SendSendBufferComplete(c)) => {
                assert_eq!(c.status.get(), nvsp::status::SUCCESS);
                assert_eq!(c.section_size.get(), nw::SEND_SECTION_SIZE);
            }
            other => panic!("SEND_SEND_BUF answered with {other:?}"),
        }
        self.send = Some((region, gpadl));
    }

    /// The whole single-queue bring-up: NVSP, RNDIS INITIALIZE, packet filter.
    pub fn bring_up(&mut self, version: u32) {
        self.bring_up_nvsp(version);
        self.rndis_initialize();
        self.set_filter();
    }

    pub fn req(&mut self) -> u32 {
        self.next_req += 1;
        self.next_req
    }

    pub fn rndis_initialize(&mut self) {
        let req = self.req();
        let msg = rndis_msg(header::INITIALIZE, &initialize_body(req));
        let tid = self.rndis_gpa(&msg);
        assert_eq!(
            self.expect_status(tid, "RNDIS INITIALIZE send"),
            nvsp::status::SUCCESS
        );
        let reply = self.next_rndis().expect("INIT_C");
        assert_eq!(
            u32_at(&reply, 0),
            header::INITIALIZE_COMPLETE,
            "INIT_C type"
        );
        assert_eq!(u32_at(&reply, 8), req, "INIT_C req_id");
        assert_eq!(u32_at(&reply, 12), rndis::status::SUCCESS, "INIT_C status");
    }

    pub fn set_filter(&mut self) {
        let req = self.req();
        let msg = info_request(
            header::SET,
            req,
            rndis::oid::GEN_CURRENT_PACKET_FILTER,
            &rndis::oid::packet_filter::LINUX_OPEN.to_le_bytes(),
        );
        let tid = self.rndis_gpa(&msg);
        assert_eq!(self.expect_status(tid, "SET send"), nvsp::status::SUCCESS);
        let reply = self.next_rndis().expect("SET_C");
        assert_eq!(u32_at(&reply, 0), header::SET_COMPLETE);
        assert_eq!(u32_at(&reply, 8), req);
        assert_eq!(u32_at(&reply, 12), rndis::status::SUCCESS);
    }

    /// The next RNDIS message the host posted through the receive buffer on the primary;
    /// the transfer-page packet is completed unless `complete` is false. Returns
    /// (tid, bytes).
    pub fn next_rndis_raw(&mut self, complete: bool) -> Option<(u64, Vec<u8>)> {
        let p = self.wait_for(REPLY, |p| p.ty == PacketType::DATA_USING_XFER_PAGES)?;
        let (pageset, ranges) = packet::parse_transfer_pages(&p.header).expect("host xfer header");
        assert_eq!(
            pageset,
            nw::RECEIVE_BUFFER_ID,
            "host used pageset {pageset:#x}"
        );
        assert_eq!(ranges.len(), 1, "one RNDIS message per range");
        let (count, offset) = (ranges[0].byte_count, ranges[0].byte_offset);
        let (region, _) = self.recv.as_ref().expect("a receive buffer");
        assert!(offset as usize + count as usize <= region.len());
        let mut msg = vec![0u8; count as usize];
        region.read(offset as usize, &mut msg);
        if complete {
            self.complete_rx_on(0, p.tid);
        }
        Some((p.tid, msg))
    }

    pub fn next_rndis(&mut self) -> Option<Vec<u8>> {
        self.next_rndis_raw(true).map(|(_, m)| m)
    }

    /// Copies the RNDIS messages of a transfer-page packet out of the receive buffer
    /// and completes it on the channel it came on (`q`).
    pub fn read_xfer(&mut self, q: usize, p: &Pkt) -> Vec<Vec<u8>> {
        let (pageset, ranges) = packet::parse_transfer_pages(&p.header).expect("xfer header");
        assert_eq!(pageset, nw::RECEIVE_BUFFER_ID);
        let (region, _) = self.recv.as_ref().expect("a receive buffer");
        let msgs = ranges
            .iter()
            .map(|r| {
                let (count, offset) = (r.byte_count as usize, r.byte_offset as usize);
                assert!(offset + count <= region.len());
                let mut m = vec![0u8; count];
                region.read(offset, &mut m);
                m
            })
            .collect();
        self.complete_rx_on(q, p.tid);
        msgs
    }

    /// Completes a transfer-page packet on channel `q` (NVSP 108, SUCCESS, 8 bytes as
    /// Linux sends it).
    pub fn complete_rx_on(&mut self, q: usize, tid: u64) {
        let mut buf = [0u8; nw::RECEIVE_COMPLETION_SIZE];
        NvspMessage::SendRndisPacketComplete(nw::SendRndisPacketComplete {
            status: U32::new(nvsp::status::SUCCESS),
        })
        .emit(&mut buf)
        .expect("completion");
        self.chan(q).write(PacketType::COMP, 0, tid, &[], &buf);
    }

    /// Sends `msg` as one GPA-direct range over consecutive scratch pages.
    pub fn rndis_gpa(&mut self, msg: &[u8]) -> u64 {
        self.rndis_gpa_at(0, msg)
    }

    /// Like [`Guest::rndis_gpa`], with `msg` at `offset` in the scratch memory.
    pub fn rndis_gpa_at(&mut self, offset: usize, msg: &[u8]) -> u64 {
        self.scratch.write(offset, msg);
        let gpa = self.scratch.gpa() + offset as u64;
        let first = gpa / PAGE_SIZE as u64;
        let byte_offset = (gpa % PAGE_SIZE as u64) as u32;
        let pages = packet::gpa_range_pfn_count(byte_offset, msg.len() as u32);
        let pfns: Vec<u64> = (first..first + pages).collect();
        let mut header = vec![0u8; 8 + 8 + 8 * pfns.len()];
        let n = packet::write_gpa_direct_header(
            &mut header,
            &[GpaRangeSpec {
                byte_count: msg.len() as u32,
                byte_offset,
                pfns: &pfns,
            }],
            packet::MAX_GPA_RANGES,
        )
        .expect("GPA header");
        self.rndis_gpa_header(&header[..n])
    }

    /// Sends a GPA-direct NVSP 107 (control) with a hand-made type header.
    pub fn rndis_gpa_header(&mut self, header: &[u8]) -> u64 {
        let nvsp = rndis_pkt(nw::CHANNEL_TYPE_CONTROL, nw::NO_SECTION, 0);
        self.send(PacketType::DATA_USING_GPA_DIRECT, header, &nvsp)
    }

    /// Writes `data` into send section `index` (if it exists) and sends an NVSP 107 that
    /// names it with `size` bytes used.
    pub fn rndis_section(&mut self, index: u32, size: u32, data: &[u8]) -> u64 {
        if let Some((region, _)) = &self.send
            && (index as usize) < SEND_SECTIONS
        {
            region.write(index as usize * SECTION, data);
        }
        let nvsp = rndis_pkt(nw::CHANNEL_TYPE_DATA, index, size);
        self.send(PacketType::DATA_INBAND, &[], &nvsp)
    }
}

// ---------------------------------------------------------------------------------------
// Wire helpers
// ---------------------------------------------------------------------------------------

/// An NVSP message padded to the NVSP 6.1 message size.
pub fn nvsp_bytes(msg: &NvspMessage<'_>) -> Vec<u8> {
    let mut buf = [0u8; nw::V6_1_MESSAGE_SIZE];
    let n = msg
        .emit_padded(&mut buf, nw::V6_1_MESSAGE_SIZE)
        .expect("emit NVSP");
    buf[..n].to_vec()
}

/// An NVSP 107 (SEND_RNDIS_PKT).
pub fn rndis_pkt(channel_type: u32, section_index: u32, section_size: u32) -> Vec<u8> {
    nvsp_bytes(&NvspMessage::SendRndisPacket(nw::SendRndisPacket {
        channel_type: U32::new(channel_type),
        section_index: U32::new(section_index),
        section_size: U32::new(section_size),
    }))
}

/// The status of an NVSP completion payload (0 if it carries none).
pub fn nvsp_status(payload: &[u8]) -> u32 {
    match NvspMessage::parse_completion(payload) {
        Ok(NvspMessage::InitComplete(c)) => c.status.get(),
        Ok(NvspMessage::SendReceiveBufferComplete(c)) => c.status.get(),
        Ok(NvspMessage::SendSendBufferComplete(c)) => c.status.get(),
        Ok(NvspMessage::SendRndisPacketComplete(c)) => c.status.get(),
        Ok(NvspMessage::SubchannelComplete(c)) => c.status.get(),
        _ => 0,
    }
}

pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub fn le(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// An RNDIS message: header (type, msg_len = 8 + body) then the body.
pub fn rndis_msg(msg_type: u32, body: &[u8]) -> Vec<u8> {
    let mut m = le(&[msg_type, 8 + body.len() as u32]);
    m.extend_from_slice(body);
    m
}

/// An INITIALIZE body: request id, RNDIS 1.0, 16 KiB transfers.
pub fn initialize_body(req: u32) -> Vec<u8> {
    le(&[req, 1, 0, 0x4000])
}

/// QUERY or SET with the data right after the 20-byte fixed part (offset 20).
pub fn info_request(msg_type: u32, req: u32, oid: u32, data: &[u8]) -> Vec<u8> {
    info_request_raw(msg_type, req, oid, data.len() as u32, 20, data)
}

pub fn info_request_raw(
    msg_type: u32,
    req: u32,
    oid: u32,
    info_len: u32,
    info_offset: u32,
    data: &[u8],
) -> Vec<u8> {
    let mut body = le(&[req, oid, info_len, info_offset, 0]);
    body.extend_from_slice(data);
    rndis_msg(msg_type, &body)
}

/// A PACKET with the frame right after the body and no PPIs.
pub fn packet_msg(frame: &[u8]) -> Vec<u8> {
    packet_raw(36, frame.len() as u32, 0, 0, &[], frame)
}

/// A PACKET with chosen offsets, then `ppis` and `frame` after the 36-byte body.
pub fn packet_raw(
    data_offset: u32,
    data_len: u32,
    ppi_offset: u32,
    ppi_len: u32,
    ppis: &[u8],
    frame: &[u8],
) -> Vec<u8> {
    let mut body = le(&[data_offset, data_len, 0, 0, 0, ppi_offset, ppi_len, 0, 0]);
    body.extend_from_slice(ppis);
    body.extend_from_slice(frame);
    rndis_msg(header::PACKET, &body)
}

/// A PACKET carrying `ppis` (type, value) as 16-byte PPIs, then the frame.
pub fn packet_with_ppis(ppis: &[(u32, u32)], frame: &[u8]) -> Vec<u8> {
    let area: Vec<u8> = ppis
        .iter()
        .flat_map(|&(t, v)| le(&[16, t, 12, v]))
        .collect();
    let ppi_len = area.len() as u32;
    let ppi_offset = if ppis.is_empty() { 0 } else { 36 };
    packet_raw(
        36 + ppi_len,
        frame.len() as u32,
        ppi_offset,
        ppi_len,
        &area,
        frame,
    )
}

/// An LSOv2 PPI (type, value).
pub fn lso_ppi(mss: u32, tcp_offset: u16, ipv6: bool) -> (u32, u32) {
    let v = rndis::ppi::LsoV2Info::new(mss, tcp_offset, ipv6).0;
    (rndis::ppi::ppi_type::TCP_LARGESEND, v)
}
