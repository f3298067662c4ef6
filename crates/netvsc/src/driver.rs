//! The guest driver's channel state machine: NVSP and RNDIS over one channel's rings,
//! the send and receive buffers, and the NAPI-style data path between the rings and the
//! TAP.
//!
//! The same [`Driver`] runs the bring-up synchronously (requests are written, then the
//! inbound ring is polled until the matching completion or reply arrives, with a
//! timeout) and then, moved to its own thread, the data path ([`Driver::run`]).

use std::collections::{HashMap, HashSet};
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmbus::event::{EventFd, wait_any};
use vmbus::memory::{GuestMemory, GuestRegion};
use vmbus::packet::{self, COMPLETION_REQUESTED, GpaRangeSpec, PacketType};
use vmbus::ring::{OutgoingPacket, RingReader, RingWriter, WriteError};
use vmbus::trace::{Dir, Tracer};
use zerocopy::little_endian::U32;

use nvsp::NvspMessage;
use nvsp::wire as nw;

use crate::buffers::SlotPool;
use crate::offload::{Features, TxAction};
use crate::stats::{GuestStats, QueueStats};
use crate::tap::{Tap, VNET_HDR_LEN, VnetHdr};
use crate::{GuestError, rndis_io};
use netpkt::coalesce::{CoalesceConfig, CoalescedFrame, Coalescer, TcpChecksumMode};
use rndis::PacketInfo;

/// Packets handled per poll before the loop looks at the other direction.
const BUDGET: usize = 64;
/// How long bring-up waits for any one answer from the host.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The guest's inbound packet copy buffer (§1.6: netvsc's 4624 bytes).
const INBOUND_COPY: usize = 4624;
/// Bytes reserved before a frame in a staging slot for the RNDIS header and PPIs.
pub(crate) const HEADROOM: usize = 256;
/// Header bytes of an RSC frame copied privately (Ethernet, IP and TCP headers fit).
const RSC_HEAD: usize = 256;
/// Staging slot size: headroom, virtio-net header and the largest frame.
pub(crate) const STAGING_SLOT: usize = HEADROOM + 65536 + 512;

/// Transaction-id tags, so a completion tells what it completes.
mod tag {
    pub const SECTION: u64 = 1 << 40;
    pub const STAGING: u64 = 2 << 40;
    pub const REQUEST: u64 = 3 << 40;
    pub const CONTROL: u64 = 4 << 40;
    pub const MASK: u64 = 0xFF << 40;
}

/// The guest's receive buffer.
pub(crate) struct ReceiveBuffer {
    pub(crate) region: GuestRegion,
    pub(crate) gpadl: u32,
    pub(crate) section_size: u32,
}

/// A send-buffer section being filled with frames.
struct OpenSection {
    index: u32,
    used: usize,
    packets: u32,
}

/// A GSO frame being segmented in software (the host cannot take it whole).
struct Segmenting {
    slot: u32,
    start: usize,
    len: usize,
    mss: u16,
    next: usize,
}

/// A send waiting for ring space, retried in order when completions free space.
enum Send {
    Section(OpenSection),
    Staging { slot: u32, start: usize, len: usize },
}

/// Where a reply to an RNDIS control request goes.
enum ReplySlot {
    /// Bring-up: kept here until the waiter takes it.
    Waiting(Option<Vec<u8>>),
    /// Run time: sent to whoever asked.
    Sender(Sender<Result<Vec<u8>, GuestError>>),
}

/// Requests from other threads to the data-path thread.
pub enum Command {
    /// Send an RNDIS control message (its request id already set) and return the reply.
    Rndis {
        /// The message bytes.
        message: Vec<u8>,
        /// Its request id.
        request_id: u32,
        /// Where the reply goes.
        reply: Sender<Result<Vec<u8>, GuestError>>,
    },
}

/// The command queue of a running data path.
#[derive(Clone)]
pub struct CommandQueue {
    queue: Arc<Mutex<Vec<Command>>>,
    wake: Arc<EventFd>,
}

impl CommandQueue {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(Self {
            queue: Arc::default(),
            wake: Arc::new(EventFd::new()?),
        })
    }

    /// Wakes the data path (e.g. to notice its stop flag).
    pub fn wake(&self) {
        self.wake.signal();
    }

    /// Queues a command and wakes the data path.
    pub fn push(&self, c: Command) {
        self.queue.lock().unwrap().push(c);
        self.wake.signal();
    }
}

/// Link state shared with the control thread.
#[derive(Default)]
pub struct LinkState {
    /// Media connected, as the host last said.
    pub up: AtomicBool,
}

/// One channel's driver state.
pub struct Driver {
    pub(crate) writer: RingWriter,
    pub(crate) reader: RingReader,
    pub(crate) to_host: EventFd,
    pub(crate) from_host: EventFd,
    pub(crate) relid: u32,
    pub(crate) nvsp_version: u32,
    pub(crate) recv: Option<Arc<ReceiveBuffer>>,
    pub(crate) send: Option<SlotPool>,
    /// The send buffer's GPADL (for teardown).
    pub(crate) send_gpadl: u32,
    pub(crate) staging: SlotPool,
    control: SlotPool,
    open_section: Option<OpenSection>,
    blocked: std::collections::VecDeque<Send>,
    next_request: u64,
    done_requests: HashMap<u64, Vec<u8>>,
    /// Ids of NVSP requests waiting for their completion: no other id is accepted.
    outstanding: HashSet<u64>,
    replies: HashMap<u32, ReplySlot>,
    pub(crate) max_pkt_per_msg: u32,
    pub(crate) tap: Option<Tap>,
    pub(crate) stats: Arc<GuestStats>,
    /// This channel's (queue's) counters.
    pub(crate) queue: Arc<QueueStats>,
    pub(crate) link: Arc<LinkState>,
    pub(crate) tracer: Option<Arc<Tracer>>,
    pub(crate) commands: CommandQueue,
    inbound: Vec<u8>,
    rx_copy: Vec<u8>,
    /// Offloads and ethtool features (set at bring-up).
    pub(crate) features: Arc<Features>,
    /// MTU, for the segment size of coalesced frames handed to the kernel.
    pub(crate) mtu: u32,
    /// GRO: merges received TCP segments of one flow within a poll.
    gro: Coalescer<Box<[u8]>>,
    /// An RSC packet being reassembled from its pieces (§10): its first piece's info
    /// and the pieces so far; the bytes are in `rsc_buf`.
    rsc: Option<(PacketInfo, u32)>,
    rsc_buf: Vec<u8>,
    /// The pieces of the RSC packet in progress: (offset, length) in the receive buffer.
    rsc_spans: Vec<(usize, usize)>,
    /// Bytes in those pieces.
    rsc_total: usize,
    /// Scratch for frames segmented in software.
    seg_buf: Vec<u8>,
    /// A frame being segmented in software, waiting for send resources.
    segmenting: Option<Segmenting>,
    /// Cross-queue transmit steering (multi-queue only).
    pub(crate) steer: Option<Arc<crate::steer::Steer>>,
    /// This driver's queue (sub_channel_index).
    pub(crate) queue_index: u32,
    /// The host's send indirection table, once it sent one (shared by the queues).
    pub(crate) send_table: Arc<Mutex<Option<[u32; 16]>>>,
    /// The NIC's XDP attachment point (shared by its queues).
    pub(crate) xdp: Arc<crate::xdp_hook::Slot>,
    /// The page XDP programs run on, reused.
    xdp_buf: Option<xdp::vm::XdpBuffer>,
    /// Host keepalives to answer once the current poll is over.
    keepalive_replies: Vec<u32>,
    /// Receive completions not yet written (ring full): (transaction id, status,
    /// sections the packet held).
    rx_completions: Vec<(u64, u32, u32)>,
    sections_held: u64,
}

impl Driver {
    /// A driver over an opened channel's rings.
    pub(crate) fn new(
        rings: vmbus::channel::GuestRings,
        to_host: EventFd,
        from_host: EventFd,
        relid: u32,
        memory: &GuestMemory,
        staging_slots: u32,
        tracer: Option<Arc<Tracer>>,
    ) -> Result<Self, GuestError> {
        Ok(Self {
            writer: rings.writer,
            reader: rings.reader,
            to_host,
            from_host,
            relid,
            nvsp_version: 0,
            recv: None,
            send: None,
            send_gpadl: 0,
            staging: SlotPool::new(memory, STAGING_SLOT, staging_slots)?,
            control: SlotPool::new(memory, 4096, 8)?,
            open_section: None,
            blocked: Default::default(),
            next_request: 1,
            done_requests: HashMap::new(),
            outstanding: HashSet::new(),
            replies: HashMap::new(),
            max_pkt_per_msg: 1,
            tap: None,
            stats: Arc::default(),
            queue: Arc::default(),
            link: Arc::default(),
            tracer,
            commands: CommandQueue::new()?,
            inbound: vec![0; INBOUND_COPY],
            rx_copy: vec![0; 65536],
            features: Arc::new(Features::new(Default::default(), false)),
            mtu: 1500,
            gro: Coalescer::new(CoalesceConfig {
                tcp_checksum: TcpChecksumMode::LeaveStale,
                verify_checksums: false,
                ..Default::default()
            })
            .map_err(|e| GuestError::Protocol(e.to_string()))?,
            rsc: None,
            rsc_buf: Vec::with_capacity(65536 + 64),
            rsc_spans: Vec::with_capacity(64),
            rsc_total: 0,
            seg_buf: Vec::new(),
            segmenting: None,
            keepalive_replies: Vec::new(),
            xdp: Arc::default(),
            xdp_buf: None,
            steer: None,
            queue_index: 0,
            send_table: Arc::default(),
            rx_completions: Vec::new(),
            sections_held: 0,
        })
    }

    /// The guest memory this driver alone owns (staging and control buffers), to free
    /// once its channel is closed.
    pub(crate) fn into_regions(self) -> Vec<vmbus::memory::GuestRegion> {
        let Driver {
            staging, control, ..
        } = self;
        [staging.into_region(), control.into_region()]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Makes this (subchannel) driver a queue of the same NIC as `primary`: shared
    /// receive buffer, features, link state and counters; its own share of the send
    /// buffer.
    pub(crate) fn join(&mut self, primary: &Driver, send: Option<SlotPool>) {
        self.recv = primary.recv.clone();
        self.send = send;
        self.nvsp_version = primary.nvsp_version;
        self.features = primary.features.clone();
        self.link = primary.link.clone();
        self.stats = primary.stats.clone();
        self.mtu = primary.mtu;
        self.max_pkt_per_msg = primary.max_pkt_per_msg;
    }

    fn trace_nvsp(&self, dir: Dir, m: &NvspMessage<'_>, bytes: &[u8]) {
        let Some(t) = &self.tracer else { return };
        let data = matches!(
            m,
            NvspMessage::SendRndisPacket(p) if p.channel_type.get() == nw::CHANNEL_TYPE_DATA
        ) || matches!(m, NvspMessage::SendRndisPacketComplete(_));
        if data && !t.wants_data() {
            return;
        }
        t.record(dir, self.relid, "nvsp", m.name(), m.fields_json(), bytes);
    }

    /// Publishes written packets and signals the host if the rules say so.
    pub(crate) fn commit(&mut self) -> Result<(), GuestError> {
        if self.writer.commit()? {
            self.to_host.signal();
        }
        Ok(())
    }

    /// Writes one NVSP message in-band, with a completion requested if `completion`.
    /// Returns the transaction id.
    pub(crate) fn send_nvsp(
        &mut self,
        msg: &NvspMessage<'_>,
        completion: bool,
    ) -> Result<u64, GuestError> {
        let mut buf = [0u8; nw::V6_1_MESSAGE_SIZE];
        let n = msg.emit_padded(&mut buf, nw::V6_1_MESSAGE_SIZE)?;
        self.trace_nvsp(Dir::Tx, msg, &buf[..n]);
        let id = tag::REQUEST | self.next_request;
        self.next_request += 1;
        if completion {
            self.outstanding.insert(id);
        }
        let pkt = OutgoingPacket {
            packet_type: PacketType::DATA_INBAND,
            flags: if completion { COMPLETION_REQUESTED } else { 0 },
            transaction_id: if completion { id } else { u64::MAX - 2 },
            header: &[],
            payload: &[&buf[..n]],
        };
        self.write_blocking(&pkt)?;
        self.commit()?;
        Ok(id)
    }

    /// Writes a packet, waiting (bounded) for ring space: for control traffic only.
    fn write_blocking(&mut self, pkt: &OutgoingPacket<'_>) -> Result<(), GuestError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            match self.writer.write(pkt) {
                Ok(()) => return Ok(()),
                Err(WriteError::Full { .. }) if Instant::now() < deadline => {
                    self.commit()?;
                    self.poll_rx(BUDGET)?;
                    self.from_host.wait(Some(Duration::from_millis(10)));
                }
                Err(WriteError::Full { .. }) => {
                    return Err(GuestError::Timeout("ring space for a control message"));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends an NVSP request and waits for its completion's payload.
    pub(crate) fn nvsp_request(
        &mut self,
        msg: &NvspMessage<'_>,
        what: &'static str,
    ) -> Result<Vec<u8>, GuestError> {
        let id = self.send_nvsp(msg, true)?;
        let reply = self.wait(what, |d| d.done_requests.remove(&id));
        self.outstanding.remove(&id);
        reply
    }

    /// Polls the inbound ring until `take` yields, or times out.
    fn wait<T>(
        &mut self,
        what: &'static str,
        mut take: impl FnMut(&mut Self) -> Option<T>,
    ) -> Result<T, GuestError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            if let Some(t) = take(self) {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                return Err(GuestError::Timeout(what));
            }
            self.poll_rx(BUDGET)?;
            self.flush_rx_completions()?;
            self.commit()?;
            if let Some(t) = take(self) {
                return Ok(t);
            }
            self.from_host.wait(Some(Duration::from_millis(20)));
        }
    }

    /// Sends an RNDIS control message (GPA direct, channel type 1, §4.7) without waiting.
    fn send_rndis_control(&mut self, message: &[u8]) -> Result<(), GuestError> {
        let slot = self
            .control
            .alloc()
            .ok_or(GuestError::Timeout("a free control buffer"))?;
        if message.len() > self.control.slot_size() {
            self.control.release(slot);
            return Err(GuestError::Protocol(
                "RNDIS control message too large".into(),
            ));
        }
        self.control.write(slot, 0, message);
        rndis_io::trace_rndis(self.tracer.as_deref(), Dir::Tx, self.relid, message);
        let gpa = self.control.gpa(slot, 0);
        let pfns = [gpa / 4096];
        let ranges = [GpaRangeSpec {
            byte_count: message.len() as u32,
            byte_offset: (gpa % 4096) as u32,
            pfns: &pfns,
        }];
        let mut header = [0u8; 64];
        let hlen = packet::write_gpa_direct_header(&mut header, &ranges, packet::MAX_GPA_RANGES)?;
        let msg = NvspMessage::SendRndisPacket(nw::SendRndisPacket {
            channel_type: U32::new(nw::CHANNEL_TYPE_CONTROL),
            section_index: U32::new(nw::NO_SECTION),
            section_size: U32::ZERO,
        });
        let mut buf = [0u8; nw::V6_1_MESSAGE_SIZE];
        let n = msg.emit_padded(&mut buf, nw::V6_1_MESSAGE_SIZE)?;
        self.trace_nvsp(Dir::Tx, &msg, &buf[..n]);
        let pkt = OutgoingPacket {
            packet_type: PacketType::DATA_USING_GPA_DIRECT,
            flags: COMPLETION_REQUESTED,
            transaction_id: tag::CONTROL | u64::from(slot),
            header: &header[..hlen],
            payload: &[&buf[..n]],
        };
        if let Err(e) = self.write_blocking(&pkt) {
            self.control.release(slot);
            return Err(e);
        }
        self.commit()
    }

    /// Sends an RNDIS control request and waits for the reply with its request id.
    pub(crate) fn rndis_request(
        &mut self,
        message: &[u8],
        request_id: u32,
        what: &'static str,
    ) -> Result<Vec<u8>, GuestError> {
        self.replies.insert(request_id, ReplySlot::Waiting(None));
        self.send_rndis_control(message)?;
        let r = self.wait(what, |d| match d.replies.get_mut(&request_id) {
            Some(ReplySlot::Waiting(r)) => r.take(),
            _ => None,
        });
        self.replies.remove(&request_id);
        r
    }

    /// Drains up to `budget` packets from the inbound ring. Returns how many.
    pub(crate) fn poll_rx(&mut self, budget: usize) -> Result<usize, GuestError> {
        let mut n = 0;
        let mut inbound = std::mem::take(&mut self.inbound);
        while n < budget {
            let pkt = match self.reader.read(&mut inbound) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) if e.is_fatal() => {
                    self.inbound = inbound;
                    return Err(GuestError::Ring(e.to_string()));
                }
                Err(_) => {
                    self.stats.rx_bad_messages.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                    continue;
                }
            };
            n += 1;
            let (ty, id) = (pkt.packet_type, pkt.transaction_id);
            match ty {
                PacketType::COMP => self.on_completion(id, pkt.payload),
                PacketType::DATA_USING_XFER_PAGES => {
                    let held = self.sections_held;
                    let status = self.on_transfer_pages(pkt.header, pkt.payload);
                    let ranges = (self.sections_held - held) as u32;
                    if self.rx_completions.len() < self.max_pending_rx_completions() {
                        self.rx_completions.push((id, status, ranges));
                    } else {
                        // More packets outstanding than the host has sections: it reads
                        // none of our completions. Dropped, as Linux does.
                        self.sections_held -= u64::from(ranges);
                        self.stats.rx_comp_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                PacketType::DATA_INBAND => self.on_inband(pkt.payload),
                _ => {
                    self.stats
                        .unsupported_packets
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.inbound = inbound;
        self.flush_gro();
        if self.reader.commit()? {
            self.to_host.signal();
        }
        Ok(n)
    }

    /// Receive completions kept while the ring is full: one per receive section (a host
    /// cannot lend more), at least a poll's worth.
    fn max_pending_rx_completions(&self) -> usize {
        let sections = self
            .recv
            .as_ref()
            .map_or(0, |r| r.region.len() / (r.section_size as usize).max(1));
        sections.max(BUDGET)
    }

    fn on_completion(&mut self, id: u64, payload: &[u8]) {
        let index = (id & 0xFFFF_FFFF) as u32;
        let known = match id & tag::MASK {
            tag::SECTION => self.send.as_mut().is_some_and(|s| s.release(index)),
            tag::STAGING => self.staging.release(index),
            tag::CONTROL => self.control.release(index),
            tag::REQUEST if self.outstanding.remove(&id) => {
                if let Ok(m) = NvspMessage::parse_completion(payload) {
                    self.trace_nvsp(Dir::Rx, &m, payload);
                }
                self.done_requests.insert(id, payload.to_vec());
                true
            }
            _ => false,
        };
        if !known {
            self.stats.bad_completions.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_inband(&mut self, payload: &[u8]) {
        match NvspMessage::parse(payload) {
            Ok(m) => {
                self.trace_nvsp(Dir::Rx, &m, payload);
                if let NvspMessage::SendIndirectionTable(t) = &m {
                    match t.table(self.nvsp_version) {
                        Ok(table) => {
                            *self.send_table.lock().unwrap() = Some(table);
                            if let Some(steer) = &self.steer {
                                steer.set_table(&table);
                            }
                        }
                        Err(_) => {
                            self.stats.rx_bad_messages.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // VF association, data-path notices and send tables are recorded by the
                // features that use them; nothing here needs an answer (§4.9).
            }
            Err(_) => {
                self.stats.rx_bad_messages.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Handles one transfer-page packet; returns the NVSP status for its completion.
    fn on_transfer_pages(&mut self, header: &[u8], payload: &[u8]) -> u32 {
        self.stats.rx_xfer_packets.fetch_add(1, Ordering::Relaxed);
        let bad = |d: &Self| {
            d.stats.rx_bad_messages.fetch_add(1, Ordering::Relaxed);
            nvsp::status::FAIL
        };
        match NvspMessage::parse(payload) {
            Ok(m @ NvspMessage::SendRndisPacket(_)) => self.trace_nvsp(Dir::Rx, &m, payload),
            _ => return bad(self),
        }
        let Ok((pageset, ranges)) = packet::parse_transfer_pages(header) else {
            return bad(self);
        };
        let Some(recv) = self.recv.as_ref() else {
            return bad(self);
        };
        if pageset != nw::RECEIVE_BUFFER_ID {
            return bad(self);
        }
        let (buf_len, section) = (recv.region.len() as u64, recv.section_size as u64);
        let ranges: Vec<(usize, usize)> = ranges
            .iter()
            .map(|r| (r.byte_offset as usize, r.byte_count as usize))
            .collect();
        self.sections_held += ranges.len() as u64;
        self.stats.note_sections_held(self.sections_held);
        let mut status = nvsp::status::SUCCESS;
        for (offset, count) in ranges {
            // §14: offset ≤ buf, count ≤ buf − offset, count ≤ section.
            if offset as u64 > buf_len
                || count as u64 > buf_len - offset as u64
                || count as u64 > section
                || count > self.rx_copy.len()
            {
                status = bad(self);
                continue;
            }
            // A PACKET is validated from its first bytes and its frame copied once,
            // to where it goes; anything else is copied whole first.
            let mut head = [0u8; rndis_io::PACKET_HEAD];
            let head_len = count.min(head.len());
            let region = &self.recv.as_ref().expect("checked").region;
            region.read(offset, &mut head[..head_len]);
            match rndis_io::packet_in_place(&head[..head_len], count) {
                Ok(Some((at, len, info))) => {
                    if !self.receive_from_region(offset + at, len, info) {
                        status = nvsp::status::FAIL;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(_) => {
                    status = bad(self);
                    continue;
                }
            }
            let mut copy = std::mem::take(&mut self.rx_copy);
            self.recv
                .as_ref()
                .expect("checked")
                .region
                .read(offset, &mut copy[..count]);
            if !self.on_rndis_message(&mut copy[..count]) {
                status = nvsp::status::FAIL;
            }
            self.rx_copy = copy;
        }
        // An RSC packet must end in its transfer-page packet's last range (§10).
        if self.rsc.take().is_some() {
            self.stats.rx_bad_messages.fetch_add(1, Ordering::Relaxed);
            status = nvsp::status::FAIL;
        }
        status
    }

    /// Handles one RNDIS message from the host; false if it failed validation.
    fn on_rndis_message(&mut self, msg: &mut [u8]) -> bool {
        match rndis_io::classify(msg) {
            Ok(rndis_io::Incoming::Packet(frame)) => {
                let (start, len) = (frame.as_ptr() as usize - msg.as_ptr() as usize, frame.len());
                let Ok(info) = rndis::packet::parse_packet(msg).map(|p| p.info) else {
                    return false;
                };
                self.receive(&mut msg[start..start + len], info)
            }
            Ok(rndis_io::Incoming::Reply { request_id }) => {
                rndis_io::trace_rndis(self.tracer.as_deref(), Dir::Rx, self.relid, msg);
                match self.replies.remove(&request_id) {
                    Some(ReplySlot::Waiting(_)) => {
                        self.replies
                            .insert(request_id, ReplySlot::Waiting(Some(msg.to_vec())));
                    }
                    Some(ReplySlot::Sender(s)) => {
                        let _ = s.send(Ok(msg.to_vec()));
                    }
                    None => {
                        self.stats.bad_completions.fetch_add(1, Ordering::Relaxed);
                    }
                }
                true
            }
            Ok(rndis_io::Incoming::Link(up)) => {
                rndis_io::trace_rndis(self.tracer.as_deref(), Dir::Rx, self.relid, msg);
                self.set_link(up);
                true
            }
            Ok(rndis_io::Incoming::Keepalive { request_id }) => {
                rndis_io::trace_rndis(self.tracer.as_deref(), Dir::Rx, self.relid, msg);
                self.stats.keepalives.fetch_add(1, Ordering::Relaxed);
                // Answered after the poll: sending may wait for ring space, which polls.
                self.keepalive_replies.push(request_id);
                true
            }
            Ok(rndis_io::Incoming::Ignored) => {
                rndis_io::trace_rndis(self.tracer.as_deref(), Dir::Rx, self.relid, msg);
                true
            }
            Err(_) => {
                self.stats.rx_bad_messages.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    pub(crate) fn set_link(&mut self, up: bool) {
        if self.link.up.swap(up, Ordering::Relaxed) != up {
            self.stats.link_changes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(up, "link state changed by the host");
        }
        if let Some(tap) = &self.tap
            && let Err(e) = tap.set_carrier(up)
        {
            tracing::warn!("cannot set carrier: {e}");
        }
    }

    /// Takes one received frame that lies at `at..at + len` of the receive buffer (already
    /// validated to be inside it): an RSC piece is appended to its packet straight from
    /// the section, a whole frame is copied out once. False if it broke the rules.
    fn receive_from_region(&mut self, at: usize, len: usize, info: PacketInfo) -> bool {
        use rndis::ppi::PktInfoId;
        let piece = info
            .pktinfo_id
            .is_some_and(|id| id.flag & PktInfoId::SUBALLOC != 0);
        let region = &self.recv.as_ref().expect("a packet arrived in it").region;
        if piece {
            let id = info.pktinfo_id.expect("checked");
            if id.flag & PktInfoId::FIRST_FRAG != 0 {
                self.rsc_spans.clear();
                self.rsc_total = 0;
                self.rsc = Some((info, 0));
            }
            let Some((_, pieces)) = self.rsc.as_mut() else {
                self.stats.rx_bad_messages.fetch_add(1, Ordering::Relaxed);
                return false;
            };
            *pieces += 1;
            if *pieces > 562 || self.rsc_total + len > 65535 + 18 {
                self.rsc = None;
                self.stats.rx_bad_messages.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            // The pieces stay in their sections until the frame is written (the
            // packet's completion goes out after that).
            self.rsc_spans.push((at, len));
            self.rsc_total += len;
            if id.flag & PktInfoId::LAST_FRAG != 0 {
                let (first, _) = self.rsc.take().expect("in progress");
                self.deliver_rsc(&first);
            }
            return true;
        }
        if len > self.rx_copy.len() {
            self.stats.rx_bad_messages.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let mut copy = std::mem::take(&mut self.rx_copy);
        region.read(at, &mut copy[..len]);
        let ok = self.receive(&mut copy[..len], info);
        self.rx_copy = copy;
        ok
    }

    /// Takes one received frame: an RSC piece joins its packet; a whole frame goes to
    /// GRO or straight to the kernel. False if it broke the rules.
    fn receive(&mut self, frame: &mut [u8], info: PacketInfo) -> bool {
        use rndis::ppi::PktInfoId;
        let Some(id) = info
            .pktinfo_id
            .filter(|id| id.flag & PktInfoId::SUBALLOC != 0)
        else {
            self.deliver(frame, &info);
            return true;
        };
        if id.flag & PktInfoId::FIRST_FRAG != 0 {
            self.rsc_buf.clear();
            self.rsc = Some((info, 0));
        }
        let Some((_, pieces)) = self.rsc.as_mut() else {
            // A later piece with nothing in progress.
            self.stats.rx_bad_messages.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        *pieces += 1;
        if *pieces > 562 || self.rsc_buf.len() + frame.len() > 65535 + 18 {
            self.rsc = None;
            self.stats.rx_bad_messages.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.rsc_buf.extend_from_slice(frame);
        if id.flag & PktInfoId::LAST_FRAG != 0 {
            let (first, _) = self.rsc.take().expect("in progress");
            let mut buf = std::mem::take(&mut self.rsc_buf);
            self.deliver_coalesced(&mut buf, &first);
            self.rsc_buf = buf;
        }
        true
    }

    /// Hands a whole frame to the NIC's XDP program (if one is attached), then to GRO
    /// or the kernel.
    fn deliver(&mut self, frame: &mut [u8], info: &PacketInfo) {
        let Some(a) = self.xdp.current() else {
            return self.deliver_plain(frame, info);
        };
        let mut buf = self
            .xdp_buf
            .take()
            .unwrap_or_else(crate::xdp_hook::new_buffer);
        match crate::xdp_hook::run(&a, &mut buf, frame, self.queue_index) {
            crate::xdp_hook::Verdict::Pass => {
                let (start, len) = (buf.headroom, buf.len);
                self.deliver_plain(&mut buf.data[start..start + len], info);
            }
            crate::xdp_hook::Verdict::Tx => {
                self.queue.xdp_tx.fetch_add(1, Ordering::Relaxed);
                self.xdp_transmit(buf.frame());
            }
            crate::xdp_hook::Verdict::Drop => {
                self.queue.xdp_drop.fetch_add(1, Ordering::Relaxed);
            }
            crate::xdp_hook::Verdict::Redirect => {
                self.queue.xdp_redirect.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.xdp_buf = Some(buf);
    }

    /// Sends a frame an XDP program returned with XDP_TX out on this queue (no
    /// batching, §12): copied to a staging buffer and sent like a frame from the TAP.
    fn xdp_transmit(&mut self, frame: &[u8]) {
        let Some(slot) = self.staging.alloc() else {
            self.stats.tx_no_memory.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let len = frame.len().min(STAGING_SLOT - HEADROOM - VNET_HDR_LEN);
        self.staging.write(slot, HEADROOM, &[0u8; VNET_HDR_LEN]);
        self.staging
            .write(slot, HEADROOM + VNET_HDR_LEN, &frame[..len]);
        if let Err(e) = self.transmit_staged(slot, VNET_HDR_LEN + len) {
            tracing::warn!("XDP_TX send failed: {e}");
        }
    }

    /// Hands a whole frame to GRO or the kernel.
    fn deliver_plain(&mut self, frame: &mut [u8], info: &PacketInfo) {
        let valid = crate::offload::rx_validated(&self.features, info, frame);
        let Some(tap) = &self.tap else {
            self.stats.rx_tap_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let stats: Counters<'_> = (&self.stats, &self.queue);
        let mut out = |cf: CoalescedFrame<'_>| {
            let mss = (cf.segments > 1).then_some(cf.mss);
            write_validated(tap, stats, cf.frame, mss);
        };
        if valid && self.features.gro.load(Ordering::Relaxed) {
            self.gro.push(frame, &mut out);
        } else {
            self.gro.flush(&mut out);
            if valid {
                write_validated(tap, stats, frame, None);
            } else {
                write_tap(tap, stats, &VnetHdr::default(), frame, None);
            }
        }
    }

    /// Hands an RSC frame whose pieces sit in receive sections to the kernel as one
    /// GSO packet: its headers from a private copy (validated and patched: IPv4 header
    /// checksum, TCP pseudo-header seed), the payload straight from the sections with
    /// writev, so the payload is copied once, by the kernel. Falls back to reassembling
    /// a private copy when the headers do not fit the copy.
    fn deliver_rsc(&mut self, info: &PacketInfo) {
        let recv = self.recv.clone().expect("pieces arrived in it");
        let region = &recv.region;
        let Some(&(first_at, first_len)) = self.rsc_spans.first() else {
            return;
        };
        let mut head = [0u8; RSC_HEAD];
        let head_len = first_len.min(RSC_HEAD);
        region.read(first_at, &mut head[..head_len]);
        let total = self.rsc_total;
        let plan = crate::offload::rsc_headers(
            &self.features,
            info,
            &mut head[..head_len],
            total,
            self.mtu,
        );
        let Some(plan) = plan else {
            // Headers beyond the copy or not TCP: assemble privately.
            let mut buf = std::mem::take(&mut self.rsc_buf);
            buf.clear();
            for &(at, len) in &self.rsc_spans {
                let have = buf.len();
                buf.resize(have + len, 0);
                region.read(at, &mut buf[have..]);
            }
            self.deliver_coalesced(&mut buf, info);
            self.rsc_buf = buf;
            return;
        };
        self.flush_gro();
        let Some(tap) = &self.tap else {
            self.stats.rx_tap_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.stats.rx_rsc_packets.fetch_add(1, Ordering::Relaxed);
        let vnet = plan.encode();
        let base = region.as_ptr();
        let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(self.rsc_spans.len() + 2);
        iov.push(IoSlice::new(&vnet));
        iov.push(IoSlice::new(&head[..head_len]));
        for (i, &(at, len)) in self.rsc_spans.iter().enumerate() {
            let skip = if i == 0 { head_len } else { 0 };
            if len > skip {
                // SAFETY: `at..at + len` was checked to lie in the receive buffer, which
                // outlives this call; the bytes are only handed to the kernel to copy,
                // never read here, so the host writing them meanwhile cannot mislead us.
                iov.push(IoSlice::new(unsafe {
                    std::slice::from_raw_parts(base.add(at + skip), len - skip)
                }));
            }
        }
        match tap.write(&iov) {
            Ok(true) => {
                let (stats, queue) = (&self.stats, &self.queue);
                stats.rx_packets.fetch_add(1, Ordering::Relaxed);
                stats.rx_bytes.fetch_add(total as u64, Ordering::Relaxed);
                queue.rx_packets.fetch_add(1, Ordering::Relaxed);
                queue.rx_bytes.fetch_add(total as u64, Ordering::Relaxed);
            }
            _ => {
                self.stats.rx_tap_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Hands a reassembled RSC frame to the kernel as one GSO packet.
    fn deliver_coalesced(&mut self, frame: &mut [u8], info: &PacketInfo) {
        let valid = crate::offload::rx_validated(&self.features, info, frame);
        self.flush_gro();
        let Some(tap) = &self.tap else {
            self.stats.rx_tap_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.stats.rx_rsc_packets.fetch_add(1, Ordering::Relaxed);
        if !valid {
            write_tap(
                tap,
                (&self.stats, &self.queue),
                &VnetHdr::default(),
                frame,
                None,
            );
            return;
        }
        // The segment size the sender's path would have used: MTU less the headers.
        let mss = netpkt::frame::parse_frame(frame).ok().and_then(|i| {
            let l4 = i.l4_offset?;
            let netpkt::frame::L4::Tcp { header_len, .. } = i.l4 else {
                return None;
            };
            let headers = l4 - i.l3_offset + usize::from(header_len);
            (self.mtu as usize).checked_sub(headers).map(|m| m as u16)
        });
        let mss = mss.filter(|_| frame.len() > self.mtu as usize + 14);
        write_validated(tap, (&self.stats, &self.queue), frame, mss);
    }

    /// Ends a poll: frames GRO holds go to the kernel.
    fn flush_gro(&mut self) {
        let Some(tap) = &self.tap else { return };
        let stats: Counters<'_> = (&self.stats, &self.queue);
        self.gro.flush(&mut |cf: CoalescedFrame<'_>| {
            let mss = (cf.segments > 1).then_some(cf.mss);
            write_validated(tap, stats, cf.frame, mss);
        });
    }

    /// Writes the receive completions collected so far; keeps those that do not fit.
    pub(crate) fn flush_rx_completions(&mut self) -> Result<(), GuestError> {
        let mut written = 0;
        let mut released = 0u64;
        for &(id, status, ranges) in &self.rx_completions {
            let mut buf = [0u8; nw::RECEIVE_COMPLETION_SIZE];
            NvspMessage::SendRndisPacketComplete(nw::SendRndisPacketComplete {
                status: U32::new(status),
            })
            .emit_padded(&mut buf, nw::RECEIVE_COMPLETION_SIZE)?;
            let pkt = OutgoingPacket {
                packet_type: PacketType::COMP,
                flags: 0,
                transaction_id: id,
                header: &[],
                payload: &[&buf],
            };
            match self.writer.write(&pkt) {
                Ok(()) => {
                    written += 1;
                    released += u64::from(ranges);
                }
                Err(WriteError::Full { .. }) => {
                    self.stats.rx_comp_busy.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.rx_completions.drain(..written);
        self.sections_held = self.sections_held.saturating_sub(released);
        Ok(())
    }

    /// Sends the open section (if any). False if it had to wait for ring space.
    fn flush_section(&mut self) -> Result<bool, GuestError> {
        match self.open_section.take() {
            Some(open) => self.send(Send::Section(open)),
            None => Ok(self.blocked.is_empty()),
        }
    }

    /// Sends now if nothing waits before it and the ring has room, else queues it
    /// behind the waiting sends. False if it waits.
    fn send(&mut self, s: Send) -> Result<bool, GuestError> {
        if !self.blocked.is_empty() {
            self.blocked.push_back(s);
            return Ok(false);
        }
        match self.try_send(s)? {
            None => Ok(true),
            Some(s) => {
                self.stats.tx_busy.fetch_add(1, Ordering::Relaxed);
                self.blocked.push_back(s);
                Ok(false)
            }
        }
    }

    /// Retries waiting sends in order; true if none is left waiting.
    fn retry_blocked(&mut self) -> Result<bool, GuestError> {
        while let Some(s) = self.blocked.pop_front() {
            if let Some(s) = self.try_send(s)? {
                self.blocked.push_front(s);
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Writes one send to the ring; gives it back if the ring is full.
    fn try_send(&mut self, s: Send) -> Result<Option<Send>, GuestError> {
        let msg;
        let mut header = [0u8; 24 + 8 + 8 * 20];
        let mut hlen = 0;
        let (packet_type, transaction_id) = match &s {
            Send::Section(open) => {
                msg = NvspMessage::SendRndisPacket(nw::SendRndisPacket {
                    channel_type: U32::new(nw::CHANNEL_TYPE_DATA),
                    section_index: U32::new(open.index),
                    section_size: U32::new(open.used as u32),
                });
                (
                    PacketType::DATA_INBAND,
                    tag::SECTION | u64::from(open.index),
                )
            }
            Send::Staging { slot, start, len } => {
                let gpa = self.staging.gpa(*slot, *start);
                let offset = (gpa % 4096) as u32;
                let pages = (offset as usize + len).div_ceil(4096) as u64;
                let pfns: Vec<u64> = (0..pages).map(|i| gpa / 4096 + i).collect();
                let ranges = [GpaRangeSpec {
                    byte_count: *len as u32,
                    byte_offset: offset,
                    pfns: &pfns,
                }];
                hlen =
                    packet::write_gpa_direct_header(&mut header, &ranges, packet::MAX_GPA_RANGES)?;
                msg = NvspMessage::SendRndisPacket(nw::SendRndisPacket {
                    channel_type: U32::new(nw::CHANNEL_TYPE_DATA),
                    section_index: U32::new(nw::NO_SECTION),
                    section_size: U32::ZERO,
                });
                (
                    PacketType::DATA_USING_GPA_DIRECT,
                    tag::STAGING | u64::from(*slot),
                )
            }
        };
        let mut buf = [0u8; nw::V6_1_MESSAGE_SIZE];
        let n = msg.emit_padded(&mut buf, nw::V6_1_MESSAGE_SIZE)?;
        let pkt = OutgoingPacket {
            packet_type,
            flags: COMPLETION_REQUESTED,
            transaction_id,
            header: &header[..hlen],
            payload: &[&buf[..n]],
        };
        match self.writer.write(&pkt) {
            Ok(()) => {
                self.trace_nvsp(Dir::Tx, &msg, &buf[..n]);
                if matches!(s, Send::Section(_)) {
                    self.stats.tx_sections.fetch_add(1, Ordering::Relaxed);
                }
                Ok(None)
            }
            Err(WriteError::Full { .. }) => Ok(Some(s)),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves up to `budget` frames from the TAP to the host. Returns how many.
    pub(crate) fn poll_tx(&mut self, budget: usize) -> Result<usize, GuestError> {
        if !self.retry_blocked()? || !self.continue_segmenting()? {
            return Ok(0);
        }
        let mut n = 0;
        // Frames other queues steered here go first.
        if let Some(steer) = self.steer.clone() {
            while n < budget {
                let Some(slot) = self.staging.alloc() else {
                    break;
                };
                let Some(bytes) = steer.take(self.queue_index) else {
                    self.staging.release(slot);
                    break;
                };
                let got = bytes.len().min(STAGING_SLOT - HEADROOM);
                self.staging.write(slot, HEADROOM, &bytes[..got]);
                steer.recycle(bytes);
                n += 1;
                if !self.transmit_staged(slot, got)? {
                    return Ok(n);
                }
            }
        }
        while n < budget {
            let Some(slot) = self.staging.alloc() else {
                self.stats.stop_queue.fetch_add(1, Ordering::Relaxed);
                break;
            };
            let read = {
                let Some(tap) = self.tap.as_ref() else {
                    self.staging.release(slot);
                    break;
                };
                let buf = self
                    .staging
                    .slice_mut(slot, HEADROOM, STAGING_SLOT - HEADROOM);
                // SAFETY-free reborrow dance: the TAP reads straight into guest memory.
                let ptr = buf.as_mut_ptr();
                let len = buf.len();
                // SAFETY: ptr/len come from the slice above, which is ours alone.
                tap.read(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
            };
            let got = match read {
                Ok(Some(got)) if got > VNET_HDR_LEN => got,
                Ok(Some(_)) => {
                    self.staging.release(slot);
                    continue;
                }
                Ok(None) => {
                    self.staging.release(slot);
                    break;
                }
                Err(e) => {
                    self.staging.release(slot);
                    return Err(GuestError::Tap(e));
                }
            };
            n += 1;
            if let Some(steer) = self.steer.clone()
                && steer.queues() > 1
            {
                // Our own queue choice (§9.3): a frame the kernel handed to this queue but
                // that belongs to another goes to that queue's thread.
                let frame =
                    self.staging
                        .slice_mut(slot, HEADROOM + VNET_HDR_LEN, got - VNET_HDR_LEN);
                let target = steer.select(frame);
                if target != self.queue_index {
                    let mut bytes = steer.buffer();
                    bytes.extend_from_slice(self.staging.slice_mut(slot, HEADROOM, got));
                    self.staging.release(slot);
                    if steer.hand_off(target, bytes) {
                        self.stats.tx_steered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.stats.tx_busy.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
            }
            if !self.transmit_staged(slot, got)? {
                break;
            }
        }
        if self.blocked.is_empty() {
            self.flush_section()?;
        }
        Ok(n)
    }

    /// Sends one frame that lies in staging `slot` (virtio-net header at HEADROOM, `got`
    /// bytes with it): offloads, then a send-buffer copy or a page buffer. Returns
    /// false if transmit must pause (waiting for ring space or completions).
    fn transmit_staged(&mut self, slot: u32, got: usize) -> Result<bool, GuestError> {
        let frame_start = HEADROOM + VNET_HDR_LEN;
        let frame_len = got - VNET_HDR_LEN;
        let vnet = {
            let mut h = [0u8; VNET_HDR_LEN];
            h.copy_from_slice(self.staging.slice_mut(slot, HEADROOM, VNET_HDR_LEN));
            crate::tap::VnetHdr::parse(&h)
        };
        let features = self.features.clone();
        let action = {
            let frame = self.staging.slice_mut(slot, frame_start, frame_len);
            crate::offload::prepare_tx(&features, &vnet, frame)
        };
        let info = match action {
            Ok(TxAction::Plain) => PacketInfo::default(),
            Ok(TxAction::Offload(info)) => {
                if info.lso.is_some() {
                    self.stats.tx_lso.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.stats
                        .tx_checksum_offload
                        .fetch_add(1, Ordering::Relaxed);
                }
                info
            }
            Ok(TxAction::Segment(mss)) => {
                self.stats.tx_gso_software.fetch_add(1, Ordering::Relaxed);
                self.segmenting = Some(Segmenting {
                    slot,
                    start: frame_start,
                    len: frame_len,
                    mss,
                    next: 0,
                });
                if !self.continue_segmenting()? || !self.blocked.is_empty() {
                    return Ok(false);
                }
                return Ok(true);
            }
            Err(e) => {
                tracing::debug!("frame from the TAP dropped: {e}");
                self.staging.release(slot);
                self.stats.tx_too_big.fetch_add(1, Ordering::Relaxed);
                return Ok(true);
            }
        };
        let mut hdr = [0u8; rndis_io::MAX_PACKET_HEADER];
        let hlen = rndis_io::packet_header(&mut hdr, &info, frame_len);
        self.stats.tx_packets.fetch_add(1, Ordering::Relaxed);
        self.queue.tx_packets.fetch_add(1, Ordering::Relaxed);
        self.queue
            .tx_bytes
            .fetch_add(frame_len as u64, Ordering::Relaxed);
        self.stats
            .tx_bytes
            .fetch_add(frame_len as u64, Ordering::Relaxed);
        let msg_len = (hlen + frame_len).next_multiple_of(8);
        let section_size = nw::SEND_SECTION_SIZE as usize;
        // SAFETY: the staging slot is ours and not lent while we copy from it.
        let frame =
            unsafe { std::slice::from_raw_parts(self.staging.ptr(slot, frame_start), frame_len) };
        if msg_len < section_size
            && info.lso.is_none()
            && self.copy_into_section(&hdr[..hlen], frame)?
        {
            self.staging.release(slot);
            self.stats.tx_send_buffer.fetch_add(1, Ordering::Relaxed);
            if !self.blocked.is_empty() {
                return Ok(false);
            }
            return Ok(true);
        }
        if frame_len > STAGING_SLOT - HEADROOM - VNET_HDR_LEN {
            self.staging.release(slot);
            self.stats.tx_too_big.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
        // Page-buffer path; the open section goes first to keep the order.
        let start = frame_start - hlen;
        self.staging.write(slot, start, &hdr[..hlen]);
        self.stats.tx_page_buffer.fetch_add(1, Ordering::Relaxed);
        let section_sent = self.flush_section()?;
        if !self.send(Send::Staging {
            slot,
            start,
            len: hlen + frame_len,
        })? || !section_sent
        {
            return Ok(false);
        }
        Ok(true)
    }

    /// Goes on sending the frame being segmented in software: MSS-sized frames with
    /// their checksums computed here, each copied into a section or, with none free, a
    /// staging buffer. Returns false if it has to wait for completions (the state is
    /// kept and resumed on the next poll); true when the frame is done.
    fn continue_segmenting(&mut self) -> Result<bool, GuestError> {
        let Some(mut job) = self.segmenting.take() else {
            return Ok(true);
        };
        // SAFETY: the staging slot is ours and not lent while we read it.
        let frame =
            unsafe { std::slice::from_raw_parts(self.staging.ptr(job.slot, job.start), job.len) };
        let Ok(plan) = netpkt::lso::LsoPlan::new_gso(frame, job.mss) else {
            self.stats.tx_too_big.fetch_add(1, Ordering::Relaxed);
            self.staging.release(job.slot);
            return Ok(true);
        };
        let mut seg = std::mem::take(&mut self.seg_buf);
        seg.resize(plan.max_segment_len(), 0);
        let mut done = true;
        while job.next < plan.segment_count() {
            let Ok(n) = plan.write_segment(job.next, &mut seg) else {
                self.stats.tx_too_big.fetch_add(1, Ordering::Relaxed);
                break;
            };
            let mut hdr = [0u8; rndis_io::MAX_PACKET_HEADER];
            let hlen = rndis_io::packet_header(&mut hdr, &PacketInfo::default(), n);
            let copied = hlen + n < nw::SEND_SECTION_SIZE as usize
                && self.copy_into_section(&hdr[..hlen], &seg[..n])?;
            if !copied {
                // No section: a staging buffer of its own, sent as a page buffer.
                let Some(s) = self.staging.alloc() else {
                    done = false;
                    break;
                };
                self.staging.write(s, HEADROOM, &hdr[..hlen]);
                self.staging.write(s, HEADROOM + hlen, &seg[..n]);
                self.flush_section()?;
                self.send(Send::Staging {
                    slot: s,
                    start: HEADROOM,
                    len: hlen + n,
                })?;
            }
            job.next += 1;
        }
        self.seg_buf = seg;
        if done {
            self.staging.release(job.slot);
        } else {
            self.segmenting = Some(job);
        }
        Ok(done)
    }

    /// Copies a frame (with its RNDIS header) into the open section, opening a new one
    /// when needed. False if no section is free (the caller sends a page buffer).
    fn copy_into_section(&mut self, header: &[u8], frame: &[u8]) -> Result<bool, GuestError> {
        let frame_len = frame.len();
        let msg_len = (header.len() + frame_len).next_multiple_of(8);
        let section_size = nw::SEND_SECTION_SIZE as usize;
        if let Some(open) = &self.open_section
            && (open.used + msg_len > section_size || open.packets >= self.max_pkt_per_msg)
        {
            // Sent now or queued in order behind earlier sends; either way it is gone.
            self.flush_section()?;
        }
        if self.open_section.is_none() {
            let Some(pool) = self.send.as_mut() else {
                return Ok(false);
            };
            let Some(index) = pool.alloc() else {
                self.stats.tx_send_full.fetch_add(1, Ordering::Relaxed);
                return Ok(false);
            };
            self.open_section = Some(OpenSection {
                index,
                used: 0,
                packets: 0,
            });
        }
        let open = self.open_section.as_mut().expect("opened above");
        let pool = self.send.as_ref().expect("has a send buffer");
        // The message length counts the pad, so the host can walk the batch (§4.7).
        let mut hdr = header.to_vec();
        rndis_io::set_message_length(&mut hdr, msg_len as u32);
        pool.write(open.index, open.used, &hdr);
        pool.write(open.index, open.used + hdr.len(), frame);
        let pad = msg_len - hdr.len() - frame_len;
        if pad > 0 {
            pool.write(
                open.index,
                open.used + hdr.len() + frame_len,
                &[0u8; 8][..pad],
            );
        }
        open.used += msg_len;
        open.packets += 1;
        Ok(true)
    }

    /// The data path: runs until `stop` is set or the channel breaks.
    pub fn run_until(&mut self, stop: Arc<AtomicBool>) -> Result<(), GuestError> {
        loop {
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
            self.reader.mask_interrupts();
            let rx = self.poll_rx(BUDGET)?;
            self.flush_rx_completions()?;
            let tx = self.poll_tx(BUDGET)?;
            self.commit()?;
            self.run_commands()?;
            if rx == BUDGET || tx == BUDGET {
                continue;
            }
            if self.reader.unmask_interrupts()? {
                continue;
            }
            let tap_ready = self.blocked.is_empty()
                && self.segmenting.is_none()
                && self.staging.free_count() > 0;
            let from_host = self.from_host.as_fd();
            let wake = self.commands.wake.as_fd();
            let ready = match (&self.tap, tap_ready) {
                (Some(tap), true) => wait_any(
                    &[from_host, wake, tap.as_fd()],
                    Some(Duration::from_secs(1)),
                ),
                _ => wait_any(&[from_host, wake], Some(Duration::from_secs(1))),
            }
            .unwrap_or(0);
            if ready & 1 != 0 {
                self.from_host.consume();
            }
            if ready & 2 != 0 {
                self.commands.wake.consume();
            }
        }
    }

    /// Sends RNDIS HALT (no reply, §4.14).
    pub(crate) fn send_halt(&mut self, request_id: u32) -> Result<(), GuestError> {
        self.send_rndis_control(&rndis_io::halt(request_id))
    }

    /// Processes host traffic until every send is completed and no receive completion
    /// is owed, or `timeout` passes.
    pub(crate) fn drain(&mut self, timeout: Duration) -> Result<(), GuestError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.poll_rx(BUDGET)?;
            self.flush_rx_completions()?;
            self.retry_blocked()?;
            self.commit()?;
            let sends_out = self
                .send
                .as_ref()
                .is_some_and(|p| p.free_count() < p.count() as usize)
                || self.staging.free_count() < self.staging.count() as usize
                || self.control.free_count() < self.control.count() as usize;
            if !sends_out && self.rx_completions.is_empty() && self.blocked.is_empty() {
                return Ok(());
            }
            self.from_host.wait(Some(Duration::from_millis(10)));
        }
        Err(GuestError::Timeout("completion of outstanding sends"))
    }

    fn run_commands(&mut self) -> Result<(), GuestError> {
        for id in std::mem::take(&mut self.keepalive_replies) {
            self.send_rndis_control(&rndis_io::keepalive_complete(id))?;
        }
        let commands = std::mem::take(&mut *self.commands.queue.lock().unwrap());
        for c in commands {
            match c {
                Command::Rndis {
                    message,
                    request_id,
                    reply,
                } => {
                    self.replies.insert(request_id, ReplySlot::Sender(reply));
                    if let Err(e) = self.send_rndis_control(&message)
                        && let Some(ReplySlot::Sender(s)) = self.replies.remove(&request_id)
                    {
                        let _ = s.send(Err(e));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The counters a received frame updates: the NIC's and its queue's.
type Counters<'a> = (&'a GuestStats, &'a QueueStats);

/// Writes a frame whose checksum the host validated, as a partial checksum the kernel
/// trusts (and, with `mss`, as one GSO packet).
fn write_validated(tap: &Tap, stats: Counters<'_>, frame: &[u8], mss: Option<u16>) {
    match crate::offload::validated_vnet(frame, mss) {
        Some((hdr, field, seed)) => write_tap(tap, stats, &hdr, frame, Some((field, seed))),
        None => write_tap(tap, stats, &VnetHdr::default(), frame, None),
    }
}

/// Writes one frame with its virtio-net header to the TAP, counting it; `patch`
/// replaces two bytes (the checksum field) on the way without touching the frame.
fn write_tap(
    tap: &Tap,
    (stats, queue): Counters<'_>,
    vnet: &VnetHdr,
    frame: &[u8],
    patch: Option<(usize, [u8; 2])>,
) {
    let hdr = vnet.encode();
    let written = match patch.filter(|(at, _)| at + 2 <= frame.len()) {
        Some((at, bytes)) => tap.write(&[
            IoSlice::new(&hdr),
            IoSlice::new(&frame[..at]),
            IoSlice::new(&bytes),
            IoSlice::new(&frame[at + 2..]),
        ]),
        None => tap.write(&[IoSlice::new(&hdr), IoSlice::new(frame)]),
    };
    match written {
        Ok(true) => {
            stats.rx_packets.fetch_add(1, Ordering::Relaxed);
            stats
                .rx_bytes
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
            queue.rx_packets.fetch_add(1, Ordering::Relaxed);
            queue
                .rx_bytes
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
        }
        _ => {
            stats.rx_tap_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
