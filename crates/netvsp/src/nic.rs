//! One synthetic NIC on the host: the VMBus device, its NVSP server, its channels'
//! threads and its port on the virtual switch.
//!
//! Each open channel gets a thread that drains the guest's ring NAPI-style (mask, drain
//! a budget, unmask, re-check, sleep on the eventfd). NVSP control messages arrive on the
//! primary channel; data (NVSP 107 carrying RNDIS) on any channel. Frames for the guest
//! come from the switch on other NICs' threads and are posted on the guest's inbound
//! ring under that queue's lock.
//!
//! Multi-queue (NVSP 5 and later): the guest asks for subchannels on the primary
//! (NVSP 133); the host grants up to its configured queue count less one, completes the
//! request, then has the VMBus server offer them. Each opened subchannel gets its queue
//! and thread; once all are open the host sends the send indirection table (134) on the
//! primary. With RSS on (OID_GEN_RECEIVE_SCALE_PARAMETERS) each frame for the guest goes
//! to the queue its Toeplitz hash selects, with the hash in its per-packet info;
//! control replies and status indications always go on queue 0 (PROTOCOL.md §9.2).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use vmbus::channel::HostRings;
use vmbus::event::{EventFd, wait_any};
use vmbus::guid::{Guid, NETVSC_CLASS};
use vmbus::memory::GpadlMapping;
use vmbus::packet::{self, COMPLETION_REQUESTED, PacketType, TransferPageRange};
use vmbus::ring::{OutgoingPacket, RingReader, RingWriter, WriteError};
use vmbus::server::{Connection, Device, OpenRequest};
use vmbus::trace::{Dir, Tracer};
use zerocopy::little_endian::U32;

use nvsp::NvspMessage;
use nvsp::wire as nw;

use crate::offload::{self, OffloadState, flag};
use crate::profile::HostProfile;
use crate::queues::{QueueTable, SubchannelError};
use crate::rndis_dev::{self, RndisState};
use crate::rss::{Rss, RssConfig, Steering};
use crate::rx_buffer::{Purpose, ReceiveBuffer};
use crate::stats::NicStats;
use crate::vswitch::{DeliveryBatch, Frame, PortId, PortSink, Switch};

/// Packets drained from a guest ring before the thread checks for other work.
const BUDGET: usize = 256;
/// Largest packet the host copies out of a guest ring (a hostile larger one is fatal to
/// that channel).
const MAX_INCOMING_PACKET: usize = 64 * 1024;
/// Largest RNDIS stream one guest send may carry (§14: ≤ 256 KiB per packet).
pub const MAX_SEND_BYTES: usize = 256 * 1024;

/// Static configuration of a NIC.
#[derive(Clone)]
pub struct NicConfig {
    /// Name (the VM's name), for logs and stats.
    pub name: String,
    /// The MAC address the host assigns.
    pub mac: [u8; 6],
    /// Which Windows host to behave like.
    pub profile: HostProfile,
    /// Instance GUID of the device.
    pub instance_id: Guid,
    /// Link speed reported, in 100 bit/s units.
    pub link_speed: u32,
    /// Queues offered with NVSP 5 and later: the primary plus up to `queues − 1`
    /// subchannels (clamped to 1..=64; [`crate::queues::DEFAULT_QUEUES`] by default).
    pub queues: u16,
    /// Trace sink, if tracing.
    pub tracer: Option<Arc<Tracer>>,
}

impl NicConfig {
    /// The queue count in force: `queues` clamped to 1..=[`crate::queues::MAX_QUEUES`].
    pub fn queue_count(&self) -> u16 {
        self.queues.clamp(1, crate::queues::MAX_QUEUES as u16)
    }
}

/// A queue: the host-to-guest ring of one channel.
pub(crate) struct Queue {
    pub(crate) relid: u32,
    pub(crate) out: Mutex<QueueOut>,
    pub(crate) signal: EventFd,
}

pub(crate) struct QueueOut {
    pub(crate) writer: RingWriter,
    /// Completions for guest sends that did not fit the ring yet: never dropped.
    backlog: Vec<(u64, u32)>,
    dirty: bool,
}

impl Queue {
    /// Publishes what was written and signals the guest if the rules say so.
    pub(crate) fn flush(&self) {
        let mut out = self.out.lock().unwrap();
        if out.dirty {
            out.dirty = false;
            if matches!(out.writer.commit(), Ok(true)) {
                self.signal.signal();
            }
        }
    }

    /// Writes one packet (not yet published). On a full ring nothing is written.
    pub(crate) fn write(&self, pkt: &OutgoingPacket<'_>) -> Result<(), WriteError> {
        let mut out = self.out.lock().unwrap();
        out.writer.write(pkt)?;
        out.dirty = true;
        Ok(())
    }
}

/// The NVSP state of one guest session.
#[derive(Default)]
pub(crate) struct NvspState {
    pub(crate) version: Option<u32>,
    pub(crate) ndis_config: bool,
    pub(crate) ndis_version: bool,
    pub(crate) mtu: u32,
    pub(crate) capability: u64,
}

/// What the NIC knows of its current guest (one VMBus connection's worth).
pub(crate) struct Session {
    pub(crate) connection: Arc<Connection>,
    pub(crate) nvsp: Mutex<NvspState>,
    pub(crate) recv: RwLock<Option<Arc<ReceiveBuffer>>>,
    pub(crate) send: RwLock<Option<(Arc<GpadlMapping>, u32)>>,
    /// Queue `i` = channel with `sub_channel_index` `i`; empty slots fall back to 0.
    pub(crate) queues: RwLock<QueueTable<Queue>>,
    /// RSS as the guest set it (off until it does).
    pub(crate) rss: Rss,
    pub(crate) rndis: Mutex<RndisState>,
    /// RNDIS initialized, a packet filter set and not halted: frames may be posted.
    pub(crate) ready: AtomicBool,
    pub(crate) filter: std::sync::atomic::AtomicU32,
    /// Offloads the guest turned on.
    pub(crate) offload: OffloadState,
}

impl Session {
    pub(crate) fn nvsp_version(&self) -> u32 {
        self.nvsp
            .lock()
            .unwrap()
            .version
            .unwrap_or(nvsp::version::V1)
    }

    /// Size of NVSP messages the host sends (§4.2).
    pub(crate) fn message_size(&self) -> usize {
        nw::host_message_size(self.nvsp_version())
    }

    /// Posts one RNDIS message (given as pieces) to the guest on queue `q` through a
    /// receive-buffer section. Returns false (nothing posted) if no section or no ring
    /// space.
    pub(crate) fn post(&self, q: usize, purpose: Purpose, parts: &[&[u8]]) -> bool {
        self.post_messages(q, purpose, &[parts]).is_some()
    }

    /// Posts several RNDIS messages (each given as pieces) as one transfer-page packet,
    /// one section and one range each; all or nothing. The packet goes on queue `q`, or
    /// on queue 0 if `q` is not open; returns the queue used, None if nothing was posted.
    pub(crate) fn post_messages(
        &self,
        q: usize,
        purpose: Purpose,
        messages: &[&[&[u8]]],
    ) -> Option<usize> {
        let recv = self.recv.read().unwrap().clone()?;
        let queues = self.queues.read().unwrap();
        let (used, queue) = queues.pick(q)?;
        let mut sections = Vec::with_capacity(messages.len());
        recv.lend_group(purpose, &mut sections, messages.len())?;
        let mut ranges = Vec::with_capacity(messages.len());
        for (m, &section) in messages.iter().zip(&sections) {
            if !recv.fill(section, m) {
                recv.unlend(sections[0]);
                return None;
            }
            let len: usize = m.iter().map(|p| p.len()).sum();
            ranges.push(TransferPageRange {
                byte_count: len as u32,
                byte_offset: recv.offset(section),
            });
        }
        let mut header = vec![0u8; packet::transfer_page_header_len(ranges.len())];
        let hlen = packet::write_transfer_page_header(&mut header, nw::RECEIVE_BUFFER_ID, &ranges)
            .expect("sized above");
        let channel_type = match purpose {
            Purpose::Data => nw::CHANNEL_TYPE_DATA,
            Purpose::Control => nw::CHANNEL_TYPE_CONTROL,
        };
        let mut nvsp_buf = [0u8; nw::V6_1_MESSAGE_SIZE];
        let n = NvspMessage::SendRndisPacket(nw::SendRndisPacket {
            channel_type: U32::new(channel_type),
            section_index: U32::new(nw::NO_SECTION),
            section_size: U32::ZERO,
        })
        .emit_padded(&mut nvsp_buf, self.message_size())
        .expect("fits");
        let pkt = OutgoingPacket {
            packet_type: PacketType::DATA_USING_XFER_PAGES,
            flags: COMPLETION_REQUESTED,
            transaction_id: ReceiveBuffer::transaction_id(sections[0]),
            header: &header[..hlen],
            payload: &[&nvsp_buf[..n]],
        };
        if queue.write(&pkt).is_err() {
            recv.unlend(sections[0]);
            return None;
        }
        Some(used)
    }

    /// Posts one received frame with its per-packet info on queue `q` (or 0); returns
    /// the queue used.
    fn post_frame(&self, q: usize, info: &rndis::PacketInfo, frame: &[u8]) -> Option<usize> {
        let mut header = [0u8; rndis_dev::MAX_PACKET_HEADER];
        let hlen = rndis_dev::packet_header(&mut header, info, frame.len())?;
        self.post_messages(q, Purpose::Data, &[&[&header[..hlen], frame]])
    }

    /// Passes an LSO super-frame on as one RSC packet on queue `q` (or 0): pieces in
    /// consecutive sections, each a full RNDIS PACKET with PKTINFO_ID, checksums left
    /// stale; the first piece carries the hash, if any (§8.4, §10). Returns the queue
    /// used.
    fn post_rsc(
        &self,
        q: usize,
        frame: &[u8],
        parsed: &netpkt::frame::FrameInfo,
        pkt_id: u16,
        steering: Option<Steering>,
    ) -> Option<usize> {
        let recv = self.recv.read().unwrap().clone()?;
        let parsed = *parsed;
        let l3 = parsed.l3_offset;
        let mut head = frame[..parsed.l4_offset.unwrap_or(l3).min(frame.len())].to_vec();
        let v6 = match parsed.l3 {
            netpkt::frame::L3::Ipv4 { .. } => {
                let total = (frame.len() - l3) as u16;
                head[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
                false
            }
            netpkt::frame::L3::Ipv6 { .. } => {
                let payload = (frame.len() - l3 - 40) as u16;
                head[l3 + 4..l3 + 6].copy_from_slice(&payload.to_be_bytes());
                true
            }
            netpkt::frame::L3::Other => return None,
        };
        let rest = &frame[head.len()..];
        let piece_room = recv.section_size() as usize - rndis_dev::RSC_PIECE_HEADER;
        // The first piece's header also carries the two hash PPIs.
        let hash_ppis = if steering.is_some() {
            rndis_dev::HASH_PPIS
        } else {
            0
        };
        let first_room = piece_room.saturating_sub(head.len() + hash_ppis);
        let pieces = 1 + rest.len().saturating_sub(first_room).div_ceil(piece_room);
        if pieces > rndis_dev::MAX_RSC_PIECES || first_room == 0 {
            return None;
        }
        use rndis::ppi::{PktInfoId, RxChecksumInfo as R};
        let csum = if v6 {
            R::TCP_OK | R::TCP_VALUE_INVALID
        } else {
            R::TCP_OK | R::TCP_VALUE_INVALID | R::IP_OK | R::IP_VALUE_INVALID
        };
        let mut headers = vec![[0u8; rndis_dev::MAX_PACKET_HEADER]; pieces];
        let mut spans = Vec::with_capacity(pieces);
        let mut at = 0;
        for (i, h) in headers.iter_mut().enumerate() {
            let room = if i == 0 { first_room } else { piece_room };
            let end = (at + room).min(rest.len());
            let mut flag = PktInfoId::SUBALLOC;
            if i == 0 {
                flag |= PktInfoId::FIRST_FRAG;
            }
            if i == pieces - 1 {
                flag |= PktInfoId::LAST_FRAG;
            }
            let first = (i == 0).then_some(());
            let info = rndis::PacketInfo {
                checksum: first.map(|()| csum),
                hash_value: first.and(steering).map(|s| s.hash),
                hash_info: first.and(steering).map(|s| s.hash_info),
                pktinfo_id: Some(PktInfoId::new(flag, pkt_id)),
                ..Default::default()
            };
            let data_len = end - at + if i == 0 { head.len() } else { 0 };
            let hlen = rndis_dev::packet_header(h, &info, data_len)?;
            spans.push((hlen, at, end));
            at = end;
        }
        let messages: Vec<Vec<&[u8]>> = headers
            .iter()
            .zip(&spans)
            .enumerate()
            .map(|(i, (h, &(hlen, a, e)))| {
                if i == 0 {
                    vec![&h[..hlen], &head[..], &rest[a..e]]
                } else {
                    vec![&h[..hlen], &rest[a..e]]
                }
            })
            .collect();
        let refs: Vec<&[&[u8]]> = messages.iter().map(Vec::as_slice).collect();
        self.post_messages(q, Purpose::Data, &refs)
    }
}

/// The receive side of the NIC's switch port.
pub(crate) struct NicPort {
    pub(crate) session: RwLock<Option<Arc<Session>>>,
    pub(crate) stats: Arc<NicStats>,
}

impl NicPort {
    /// Counts a frame posted on queue `q` (or dropped for want of a section or ring
    /// space when `q` is None); `wanted` is the queue RSS chose.
    #[inline]
    fn count(&self, posted: Option<usize>, wanted: usize, bytes: usize) -> bool {
        let st = &self.stats;
        let Some(q) = posted else {
            st.rx_dropped_no_section.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        st.rx_packets.fetch_add(1, Ordering::Relaxed);
        st.rx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        st.rx_queue_packets.add(q, 1);
        st.rx_queue_bytes.add(q, bytes as u64);
        if q != wanted {
            st.rx_queue_fallback.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Hashes a frame under the guest's RSS configuration: the queue it goes to and the
    /// hash PPIs it carries (queue 0 and none when RSS is off or nothing is hashed).
    #[inline]
    fn steer(
        &self,
        rss: Option<&RssConfig>,
        parsed: Option<&netpkt::frame::FrameInfo>,
    ) -> (usize, Option<Steering>) {
        match rss.zip(parsed).and_then(|(r, p)| r.steer(p)) {
            Some(s) => {
                self.stats.rx_rss_hashed.fetch_add(1, Ordering::Relaxed);
                (s.queue, Some(s))
            }
            None => (0, None),
        }
    }
}

impl PortSink for NicPort {
    fn deliver(&self, frame: &Frame<'_>) -> bool {
        let session = self.session.read().unwrap();
        let Some(s) = session.as_ref().filter(|s| s.ready.load(Ordering::Acquire)) else {
            self.stats
                .rx_dropped_not_ready
                .fetch_add(1, Ordering::Relaxed);
            return false;
        };
        if !rndis_dev::filter_accepts(s.filter.load(Ordering::Relaxed), frame.bytes) {
            self.stats.rx_filtered.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let flags = s.offload.flags();
        let rss = s.rss.current();
        let Some(mss) = frame.lso_mss else {
            let parsed = offload::parse(frame.bytes);
            let (q, steering) = self.steer(rss.as_deref(), parsed.as_ref());
            let info = rndis::PacketInfo {
                checksum: parsed.as_ref().and_then(|p| {
                    offload::rx_checksum_parsed(flags, frame.bytes, p, frame.checksum_good)
                }),
                hash_value: steering.map(|s| s.hash),
                hash_info: steering.map(|s| s.hash_info),
                ..Default::default()
            };
            let posted = s.post_frame(q, &info, frame.bytes);
            return self.count(posted, q, frame.bytes.len());
        };
        // An LSO super-frame: one flow, so one hash and one queue for all of it.
        let Ok(parsed) = netpkt::frame::parse_lso_frame(frame.bytes) else {
            self.stats
                .rx_dropped_bad_lso
                .fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let (q, steering) = self.steer(rss.as_deref(), Some(&parsed));
        if flags & flag::RSC != 0 {
            let id = self.stats.rx_rsc_packets.fetch_add(1, Ordering::Relaxed) as u16;
            let posted = s.post_rsc(q, frame.bytes, &parsed, id, steering);
            return self.count(posted, q, frame.bytes.len());
        }
        // The receiver takes MTU-sized frames only: segment (§8.3).
        let Ok(plan) = netpkt::lso::LsoPlan::new_gso(frame.bytes, mss) else {
            self.stats
                .rx_dropped_bad_lso
                .fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let mut seg = vec![0u8; plan.max_segment_len()];
        let mut all = true;
        for i in 0..plan.segment_count() {
            let Ok(n) = plan.write_segment(i, &mut seg) else {
                self.stats
                    .rx_dropped_bad_lso
                    .fetch_add(1, Ordering::Relaxed);
                return false;
            };
            let info = rndis::PacketInfo {
                checksum: offload::rx_checksum(flags, &seg[..n], true),
                hash_value: steering.map(|s| s.hash),
                hash_info: steering.map(|s| s.hash_info),
                ..Default::default()
            };
            all &= self.count(s.post_frame(q, &info, &seg[..n]), q, n);
        }
        self.stats.rx_lso_segmented.fetch_add(1, Ordering::Relaxed);
        all
    }

    fn flush(&self) {
        if let Some(s) = self.session.read().unwrap().as_ref() {
            for q in s.queues.read().unwrap().iter() {
                q.flush();
            }
        }
    }
}

struct Worker {
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
    sub_channel_index: u16,
}

/// A synthetic NIC.
pub struct Nic {
    config: NicConfig,
    switch: Arc<Switch>,
    port_id: PortId,
    port: Arc<NicPort>,
    workers: Mutex<HashMap<u32, Worker>>,
    stats: Arc<NicStats>,
}

impl Nic {
    /// Creates the NIC and plugs it into the switch.
    pub fn new(config: NicConfig, switch: Arc<Switch>) -> Arc<Self> {
        let stats = Arc::new(NicStats::default());
        let port = Arc::new(NicPort {
            session: RwLock::new(None),
            stats: stats.clone(),
        });
        let port_id = switch.add_port(config.mac, port.clone());
        Arc::new(Self {
            config,
            switch,
            port_id,
            port,
            workers: Mutex::default(),
            stats,
        })
    }

    /// The NIC's configuration.
    pub fn config(&self) -> &NicConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<NicStats> {
        &self.stats
    }

    /// Receive sections lent now and at most (0, 0 without a guest).
    pub fn receive_sections(&self) -> (u32, u32, u32) {
        let session = self.port.session.read().unwrap();
        match session
            .as_ref()
            .and_then(|s| s.recv.read().unwrap().clone())
        {
            Some(r) => {
                let (now, peak) = r.usage();
                (now, peak, r.count())
            }
            None => (0, 0, 0),
        }
    }

    /// Whether a guest is attached and its NIC is up.
    pub fn guest_ready(&self) -> bool {
        self.port
            .session
            .read()
            .unwrap()
            .as_ref()
            .is_some_and(|s| s.ready.load(Ordering::Relaxed))
    }

    /// Sends the send indirection table (NVSP 134, in-band, no completion) on the
    /// primary once every granted subchannel is open (PROTOCOL.md §4.11 decision).
    fn send_indirection_table(&self, session: &Session) {
        let (channels, primary) = {
            let queues = session.queues.read().unwrap();
            (queues.channels(), queues.pick(0).map(|(_, q)| q.clone()))
        };
        let Some(primary) = primary else {
            return;
        };
        let msg = crate::queues::send_table_message(channels as u32);
        if let Some(t) = &self.config.tracer
            && let Ok(m) = NvspMessage::parse(&msg)
        {
            t.record(
                Dir::Tx,
                primary.relid,
                "nvsp",
                m.name(),
                m.fields_json(),
                &msg,
            );
        }
        let pkt = OutgoingPacket {
            packet_type: PacketType::DATA_INBAND,
            flags: 0,
            transaction_id: 0,
            header: &[],
            payload: &[&msg],
        };
        if let Err(e) = primary.write(&pkt) {
            tracing::warn!(nic = %self.config.name, "send indirection table not sent: {e}");
        }
        primary.flush();
    }

    /// Tells the guest the link went up or down (RNDIS media status indication).
    pub fn set_link(&self, up: bool) {
        self.stats.link_down.store(!up, Ordering::Relaxed);
        if let Some(s) = self.port.session.read().unwrap().as_ref() {
            rndis_dev::indicate_link(s, up, &self.config);
            for q in s.queues.read().unwrap().iter() {
                q.flush();
            }
        }
    }
}

impl Device for Nic {
    fn class_id(&self) -> Guid {
        NETVSC_CLASS
    }

    fn instance_id(&self) -> Guid {
        self.config.instance_id
    }

    fn open(&self, request: OpenRequest) -> Result<(), String> {
        let rings = HostRings::new(request.ring.clone(), request.downstream_offset_pages)
            .map_err(|e| format!("ring: {e}"))?;
        let (reader, writer, mapping) = rings.split();
        let queue = Arc::new(Queue {
            relid: request.relid,
            out: Mutex::new(QueueOut {
                writer,
                backlog: Vec::new(),
                dirty: false,
            }),
            signal: request.host_to_guest,
        });
        let index = request.sub_channel_index;
        let (session, all_open) = if index == 0 {
            let s = Arc::new(Session {
                connection: request.connection.clone(),
                nvsp: Mutex::default(),
                recv: RwLock::new(None),
                send: RwLock::new(None),
                queues: RwLock::new(QueueTable::new(queue.clone())),
                rss: Rss::default(),
                rndis: Mutex::default(),
                ready: AtomicBool::new(false),
                filter: Default::default(),
                offload: OffloadState::default(),
            });
            *self.port.session.write().unwrap() = Some(s.clone());
            self.stats.subchannels_granted.store(0, Ordering::Relaxed);
            (s, false)
        } else {
            // Offers may be opened in any order: each takes its own slot.
            let s = self
                .port
                .session
                .read()
                .unwrap()
                .clone()
                .ok_or("subchannel opened without a primary")?;
            let all_open = s
                .queues
                .write()
                .unwrap()
                .open(index, queue.clone())
                .map_err(|e| e.to_string())?;
            (s, all_open)
        };
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(EventFd::new().map_err(|e| e.to_string())?);
        let ctx = ChannelContext {
            nic: NicRef {
                config: self.config.clone(),
                switch: self.switch.clone(),
                port_id: self.port_id,
                stats: self.stats.clone(),
            },
            session: session.clone(),
            queue,
            reader,
            _mapping: mapping,
            guest_signal: request.guest_to_host,
            stop: stop.clone(),
            wake: wake.clone(),
            primary: request.sub_channel_index == 0,
        };
        let relid = request.relid;
        let spawned = std::thread::Builder::new()
            .name(format!("{}-ch{}", self.config.name, relid))
            .spawn(move || ctx.run());
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => {
                if index == 0 {
                    self.port.session.write().unwrap().take();
                } else {
                    session.queues.write().unwrap().close(index);
                }
                return Err(e.to_string());
            }
        };
        self.workers.lock().unwrap().insert(
            relid,
            Worker {
                stop,
                wake,
                thread: Some(thread),
                sub_channel_index: index,
            },
        );
        if all_open {
            self.send_indirection_table(&session);
        }
        Ok(())
    }

    fn close(&self, relid: u32) {
        let Some(mut w) = self.workers.lock().unwrap().remove(&relid) else {
            return;
        };
        // Delivery stops using the queue before its thread and ring go away.
        let ended = if w.sub_channel_index == 0 {
            // The primary's close ends the NIC's NVSP/RNDIS state; buffers are revoked,
            // the queue table and RSS go with it (the server rescinds the subchannels).
            let s = self.port.session.write().unwrap().take();
            if let Some(s) = &s {
                s.ready.store(false, Ordering::Release);
                s.queues.write().unwrap().clear();
                s.rss.clear();
            }
            self.stats.subchannels_granted.store(0, Ordering::Relaxed);
            s
        } else {
            // A subchannel's close empties its slot: its frames go to queue 0.
            if let Some(s) = self.port.session.read().unwrap().as_ref() {
                s.queues.write().unwrap().close(w.sub_channel_index);
            }
            None
        };
        w.stop.store(true, Ordering::Release);
        w.wake.signal();
        if let Some(t) = w.thread.take() {
            let _ = t.join();
        }
        if let Some(s) = ended {
            s.recv.write().unwrap().take();
            s.send.write().unwrap().take();
            s.connection.gpadl_released();
        }
    }

    fn disconnected(&self) {
        if let Some(s) = self.port.session.write().unwrap().take() {
            s.ready.store(false, Ordering::Release);
            s.queues.write().unwrap().clear();
            s.rss.clear();
        }
        self.stats.subchannels_granted.store(0, Ordering::Relaxed);
        self.stats.guest_disconnects.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Nic {
    fn drop(&mut self) {
        self.switch.remove_port(self.port_id);
    }
}

/// What a channel thread needs of its NIC.
#[derive(Clone)]
pub(crate) struct NicRef {
    pub(crate) config: NicConfig,
    pub(crate) switch: Arc<Switch>,
    pub(crate) port_id: PortId,
    pub(crate) stats: Arc<NicStats>,
}

/// One channel's thread state.
struct ChannelContext {
    nic: NicRef,
    session: Arc<Session>,
    queue: Arc<Queue>,
    reader: RingReader,
    _mapping: Arc<GpadlMapping>,
    guest_signal: EventFd,
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    primary: bool,
}

/// Why a guest message was refused.
#[derive(Debug)]
pub(crate) struct ProtocolError(pub(crate) String);

impl ChannelContext {
    fn run(mut self) {
        let mut buf = vec![0u8; MAX_INCOMING_PACKET];
        let mut scratch = vec![0u8; MAX_SEND_BYTES];
        let mut batch = DeliveryBatch::default();
        loop {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            self.reader.mask_interrupts();
            let mut drained = 0;
            // Backpressure (§14: bounded work per guest): while completions wait for room
            // in the guest's inbound ring, the guest's ring is not read.
            let budget = if self.backlogged() { 0 } else { BUDGET };
            while drained < budget {
                match self.reader.read(&mut buf) {
                    Ok(Some(pkt)) => {
                        let (ty, flags, id) = (pkt.packet_type, pkt.flags, pkt.transaction_id);
                        let (header, payload) = (pkt.header.to_vec(), pkt.payload);
                        if let Err(e) =
                            self.handle(ty, flags, id, &header, payload, &mut scratch, &mut batch)
                        {
                            self.nic
                                .stats
                                .protocol_errors
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(nic = %self.nic.config.name, "guest protocol error: {}", e.0);
                        }
                    }
                    Ok(None) => break,
                    Err(e) if e.is_fatal() => {
                        self.stop_broken(&e);
                        return;
                    }
                    Err(e) => {
                        self.nic
                            .stats
                            .protocol_errors
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(nic = %self.nic.config.name, "guest packet dropped: {e}");
                    }
                }
                drained += 1;
            }
            match self.reader.commit() {
                Ok(true) => self.queue.signal.signal(),
                Ok(false) => {}
                Err(e) => {
                    self.stop_broken(&e);
                    return;
                }
            }
            batch.flush();
            self.flush_backlog();
            self.queue.flush();
            // Still backlogged: sleep until the guest frees the space `flush_backlog`
            // asked for (its reader signals the pending send size), new data or not.
            let backlogged = self.backlogged();
            if drained == BUDGET && !backlogged {
                continue;
            }
            if !backlogged {
                match self.reader.unmask_interrupts() {
                    Ok(false) => {}
                    Ok(true) => continue,
                    Err(e) => {
                        self.stop_broken(&e);
                        return;
                    }
                }
            }
            let ready = wait_any(
                &[
                    std::os::fd::AsFd::as_fd(&self.guest_signal),
                    std::os::fd::AsFd::as_fd(&*self.wake),
                ],
                Some(Duration::from_secs(1)),
            )
            .unwrap_or(0);
            if ready & 1 != 0 {
                self.guest_signal.consume();
            }
            if ready & 2 != 0 {
                self.wake.consume();
            }
        }
    }

    /// Whether completions wait for room in the guest's inbound ring.
    fn backlogged(&self) -> bool {
        !self.queue.out.lock().unwrap().backlog.is_empty()
    }

    /// Counts a corrupt ring and stops serving it: the channel waits for its close
    /// without touching the ring again.
    fn stop_broken(&self, e: &dyn std::fmt::Display) {
        self.nic
            .stats
            .protocol_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(nic = %self.nic.config.name, "guest ring corrupt, channel stopped: {e}");
        self.park();
    }

    /// A broken channel waits for its close without touching the ring again.
    fn park(&self) {
        while !self.stop.load(Ordering::Acquire) {
            self.wake.wait(Some(Duration::from_millis(500)));
        }
    }

    /// Sends a completion for a guest request, keeping it if the ring is full.
    fn complete(&self, transaction_id: u64, msg: &NvspMessage<'_>) {
        let mut buf = [0u8; nw::V6_1_MESSAGE_SIZE];
        let n = msg
            .emit_padded(&mut buf, self.session.message_size().max(msg.len()))
            .expect("fits");
        self.trace(Dir::Tx, msg, &buf[..n]);
        let pkt = OutgoingPacket {
            packet_type: PacketType::COMP,
            flags: 0,
            transaction_id,
            header: &[],
            payload: &[&buf[..n]],
        };
        match self.queue.write(&pkt) {
            Ok(()) => {}
            Err(WriteError::Full { .. }) => {
                if let NvspMessage::SendRndisPacketComplete(c) = msg {
                    self.queue
                        .out
                        .lock()
                        .unwrap()
                        .backlog
                        .push((transaction_id, c.status.get()));
                }
            }
            Err(e) => self.write_failed(&e),
        }
    }

    /// A write to the guest's inbound ring failed for a reason other than space: the
    /// guest corrupted the ring's indices. Counted and logged; the channel stays up
    /// until the guest closes it, but nothing more is lost silently.
    fn write_failed(&self, e: &WriteError) {
        self.nic
            .stats
            .protocol_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(nic = %self.nic.config.name, "cannot write the guest's ring: {e}");
    }

    fn flush_backlog(&self) {
        let mut out = self.queue.out.lock().unwrap();
        if out.backlog.is_empty() {
            return;
        }
        let size = self.session.message_size();
        let backlog = std::mem::take(&mut out.backlog);
        let mut left = Vec::new();
        for (id, status) in backlog {
            let mut buf = [0u8; nw::V6_1_MESSAGE_SIZE];
            let n = NvspMessage::SendRndisPacketComplete(nw::SendRndisPacketComplete {
                status: U32::new(status),
            })
            .emit_padded(&mut buf, size)
            .expect("fits");
            let pkt = OutgoingPacket {
                packet_type: PacketType::COMP,
                flags: 0,
                transaction_id: id,
                header: &[],
                payload: &[&buf[..n]],
            };
            if left.is_empty() && out.writer.write(&pkt).is_ok() {
                out.dirty = true;
            } else {
                left.push((id, status));
            }
        }
        if !left.is_empty() {
            // Ask the guest to wake us when it has read enough.
            let _ = out.writer.set_pending_send(size + 32);
        } else {
            out.writer.clear_pending_send();
        }
        out.backlog = left;
    }

    fn trace(&self, dir: Dir, m: &NvspMessage<'_>, bytes: &[u8]) {
        let Some(t) = &self.nic.config.tracer else {
            return;
        };
        if matches!(
            m,
            NvspMessage::SendRndisPacket(_) | NvspMessage::SendRndisPacketComplete(_)
        ) && !t.wants_data()
        {
            return;
        }
        t.record(
            dir,
            self.queue.relid,
            "nvsp",
            m.name(),
            m.fields_json(),
            bytes,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn handle(
        &mut self,
        ty: u16,
        flags: u16,
        id: u64,
        header: &[u8],
        payload: &[u8],
        scratch: &mut [u8],
        batch: &mut DeliveryBatch,
    ) -> Result<(), ProtocolError> {
        let err = |s: String| ProtocolError(s);
        match ty {
            PacketType::COMP => {
                // A receive completion (NVSP 108): the sections come back.
                if let Some(recv) = self.session.recv.read().unwrap().as_ref() {
                    recv.complete(id);
                }
                Ok(())
            }
            PacketType::DATA_INBAND | PacketType::DATA_USING_GPA_DIRECT => {
                let m = NvspMessage::parse(payload).map_err(|e| err(e.to_string()))?;
                self.trace(Dir::Rx, &m, payload);
                let wants_completion = flags & COMPLETION_REQUESTED != 0;
                if let NvspMessage::SendRndisPacket(p) = m {
                    let status = match self.rndis_send(ty, header, p, scratch, batch) {
                        Ok(()) => nvsp::status::SUCCESS,
                        Err(e) => {
                            self.nic
                                .stats
                                .protocol_errors
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(nic = %self.nic.config.name, "bad guest send: {}", e.0);
                            nvsp::status::FAIL
                        }
                    };
                    if wants_completion {
                        self.complete(
                            id,
                            &NvspMessage::SendRndisPacketComplete(nw::SendRndisPacketComplete {
                                status: U32::new(status),
                            }),
                        );
                    }
                    return Ok(());
                }
                if ty != PacketType::DATA_INBAND || !self.primary {
                    return Err(err(format!(
                        "{} outside the primary's in-band control",
                        m.name()
                    )));
                }
                self.control(m, id, wants_completion)
            }
            other => {
                self.nic
                    .stats
                    .unsupported_packets
                    .fetch_add(1, Ordering::Relaxed);
                Err(err(format!(
                    "packet type {other:#x} ({}) not used by netvsc",
                    PacketType::name(other).unwrap_or("unknown")
                )))
            }
        }
    }

    /// NVSP control on the primary channel (§4.5).
    fn control(
        &mut self,
        m: NvspMessage<'_>,
        id: u64,
        wants_completion: bool,
    ) -> Result<(), ProtocolError> {
        let err = |s: &str| Err(ProtocolError(s.to_owned()));
        let version = self.session.nvsp.lock().unwrap().version;
        match m {
            NvspMessage::Init(init) => {
                let v = init.min_ver.get();
                let ok =
                    nvsp::version::is_known(v) && v <= self.nic.config.profile.max_nvsp_version();
                let status = if ok {
                    let mut st = self.session.nvsp.lock().unwrap();
                    *st = NvspState {
                        version: Some(v),
                        ..Default::default()
                    };
                    nvsp::status::SUCCESS
                } else {
                    nvsp::status::FAIL
                };
                self.complete(
                    id,
                    &NvspMessage::InitComplete(nw::InitComplete::answer(v, status)),
                );
                Ok(())
            }
            _ if version.is_none() => err("NVSP message before INIT"),
            NvspMessage::SendNdisConfig(c) => {
                let mut st = self.session.nvsp.lock().unwrap();
                if st.ndis_config {
                    return err("second SEND_NDIS_CONFIG");
                }
                st.ndis_config = true;
                let mtu = c.mtu.get();
                // vmswitch rule: an MTU outside [1514, max frame] becomes 1514.
                st.mtu = if (1514..=crate::MAX_FRAME_MTU).contains(&mtu) {
                    mtu
                } else {
                    1514
                };
                st.capability = c.capability.get();
                drop(st);
                if wants_completion {
                    self.empty_completion(id);
                }
                Ok(())
            }
            NvspMessage::SendNdisVersion(_) => {
                self.session.nvsp.lock().unwrap().ndis_version = true;
                if wants_completion {
                    self.empty_completion(id);
                }
                Ok(())
            }
            NvspMessage::SendReceiveBuffer(b) => {
                let (gpadl, buf_id) = (b.gpadl.get(), b.id.get());
                let mtu = {
                    let st = self.session.nvsp.lock().unwrap();
                    if version.unwrap_or(0) >= nvsp::version::V2 && !st.ndis_config {
                        drop(st);
                        self.complete(id, &NvspMessage::SendReceiveBufferComplete(fail_recv()));
                        return err("SEND_RECV_BUF before SEND_NDIS_CONFIG");
                    }
                    if st.mtu == 0 { 1514 } else { st.mtu }
                };
                let mapping = self.session.connection.gpadl(self.queue.relid, gpadl);
                let already = self.session.recv.read().unwrap().is_some();
                match mapping {
                    Some(m) if buf_id == nw::RECEIVE_BUFFER_ID && !already => {
                        let section = crate::receive_section_size(mtu);
                        let recv = ReceiveBuffer::new(m, gpadl, section);
                        let count = recv.count();
                        if count <= crate::rx_buffer::RESERVED_SECTIONS {
                            self.complete(id, &NvspMessage::SendReceiveBufferComplete(fail_recv()));
                            return err("receive buffer too small");
                        }
                        *self.session.recv.write().unwrap() = Some(Arc::new(recv));
                        self.complete(
                            id,
                            &NvspMessage::SendReceiveBufferComplete(
                                nw::SendReceiveBufferComplete::single_section(section, count),
                            ),
                        );
                        Ok(())
                    }
                    _ => {
                        self.complete(id, &NvspMessage::SendReceiveBufferComplete(fail_recv()));
                        err("SEND_RECV_BUF with a bad GPADL or id, or twice")
                    }
                }
            }
            NvspMessage::SendSendBuffer(b) => {
                let mapping = self
                    .session
                    .connection
                    .gpadl(self.queue.relid, b.gpadl.get());
                let already = self.session.send.read().unwrap().is_some();
                let (status, size) = match mapping {
                    Some(m) if b.id.get() == nw::SEND_BUFFER_ID && !already => {
                        *self.session.send.write().unwrap() = Some((m, b.gpadl.get()));
                        (nvsp::status::SUCCESS, nw::SEND_SECTION_SIZE)
                    }
                    _ => (nvsp::status::FAIL, 0),
                };
                self.complete(
                    id,
                    &NvspMessage::SendSendBufferComplete(nw::SendSendBufferComplete {
                        status: U32::new(status),
                        section_size: U32::new(size),
                    }),
                );
                if status != nvsp::status::SUCCESS {
                    return err("SEND_SEND_BUF with a bad GPADL or id, or twice");
                }
                Ok(())
            }
            NvspMessage::RevokeReceiveBuffer(_) => {
                self.session.ready.store(false, Ordering::Release);
                self.session.recv.write().unwrap().take();
                self.session.connection.gpadl_released();
                Ok(())
            }
            NvspMessage::RevokeSendBuffer(_) => {
                self.session.send.write().unwrap().take();
                self.session.connection.gpadl_released();
                Ok(())
            }
            NvspMessage::SubchannelRequest(r) => {
                // §4.12: grant min(n, queues − 1), complete, and only then offer.
                let result = {
                    let mut table = self.session.queues.write().unwrap();
                    let result = crate::queues::grant_subchannels(
                        version.unwrap_or(0),
                        r.op.get(),
                        r.num_subchannels.get(),
                        self.nic.config.queue_count(),
                        table.granted(),
                    );
                    if let Ok(n) = result {
                        table.grant(n);
                    }
                    result
                };
                let (status, granted) = match result {
                    Ok(n) => (nvsp::status::SUCCESS, n),
                    Err(_) => (nvsp::status::FAIL, 0),
                };
                self.complete(
                    id,
                    &NvspMessage::SubchannelComplete(nw::SubchannelComplete {
                        status: U32::new(status),
                        num_subchannels: U32::new(u32::from(granted)),
                    }),
                );
                let granted = result.map_err(|e: SubchannelError| ProtocolError(e.to_string()))?;
                self.nic
                    .stats
                    .subchannels_granted
                    .store(u32::from(granted), Ordering::Relaxed);
                // Publish the completion before the offers: Linux ignores offers beyond
                // the count it has not yet read.
                self.queue.flush();
                if granted > 0 {
                    self.session.connection.offer_subchannels(granted);
                }
                Ok(())
            }
            NvspMessage::SwitchDataPath(_) => {
                if wants_completion {
                    self.empty_completion(id);
                }
                Ok(())
            }
            other => err(&format!("unexpected {} from the guest", other.name())),
        }
    }

    fn empty_completion(&self, id: u64) {
        let pkt = OutgoingPacket {
            packet_type: PacketType::COMP,
            flags: 0,
            transaction_id: id,
            header: &[],
            payload: &[],
        };
        if let Err(e) = self.queue.write(&pkt)
            && !matches!(e, WriteError::Full { .. })
        {
            self.write_failed(&e);
        }
    }

    /// Gathers the RNDIS bytes of one guest send (section and/or GPA ranges) and
    /// processes each message in it.
    fn rndis_send(
        &mut self,
        ty: u16,
        header: &[u8],
        p: nw::SendRndisPacket,
        scratch: &mut [u8],
        batch: &mut DeliveryBatch,
    ) -> Result<(), ProtocolError> {
        let err = |s: String| Err(ProtocolError(s));
        let mut len = 0usize;
        let section = p.section_index.get();
        let via_section = section != nw::NO_SECTION;
        if via_section {
            let size = p.section_size.get() as usize;
            let send = self.session.send.read().unwrap();
            let Some((mapping, _)) = send.as_ref() else {
                return err("send-buffer section without a send buffer".into());
            };
            let count = mapping.len() / nw::SEND_SECTION_SIZE as usize;
            if section as usize >= count || size > nw::SEND_SECTION_SIZE as usize || size < 8 {
                return err(format!(
                    "send section {section} size {size} out of range ({count} sections)"
                ));
            }
            mapping
                .read(
                    section as usize * nw::SEND_SECTION_SIZE as usize,
                    &mut scratch[..size],
                )
                .ok_or_else(|| ProtocolError("send section outside the buffer".into()))?;
            len = size;
        }
        if ty == PacketType::DATA_USING_GPA_DIRECT {
            let ranges = packet::GpaDirectRanges::parse(header, packet::MAX_GPA_RANGES)
                .map_err(|e| ProtocolError(e.to_string()))?;
            let memory = self.session.connection.memory();
            for r in ranges {
                let mut left = r.byte_count as usize;
                let mut offset = r.byte_offset as usize;
                for pfn in r.pfn_iter() {
                    if left == 0 {
                        break;
                    }
                    let n = left.min(4096 - offset);
                    let Some(dst) = scratch.get_mut(len..len + n) else {
                        return err(format!("guest send larger than {MAX_SEND_BYTES} bytes"));
                    };
                    let gpa = pfn
                        .checked_mul(4096)
                        .and_then(|a| a.checked_add(offset as u64));
                    match gpa {
                        Some(gpa) if memory.read(gpa, dst).is_ok() => {}
                        _ => return err(format!("GPA range page {pfn:#x} outside guest memory")),
                    }
                    len += n;
                    left -= n;
                    offset = 0;
                }
            }
            self.nic.stats.tx_gpa_direct.fetch_add(1, Ordering::Relaxed);
        } else if !via_section {
            return err("in-band send without a section".into());
        } else {
            self.nic
                .stats
                .tx_send_buffer
                .fetch_add(1, Ordering::Relaxed);
        }
        rndis_dev::process_stream(&self.nic, &self.session, &mut scratch[..len], batch)
    }
}

fn fail_recv() -> nw::SendReceiveBufferComplete {
    let mut c = nw::SendReceiveBufferComplete::single_section(0, 0);
    c.status = U32::new(nvsp::status::FAIL);
    c.num_sections = U32::ZERO;
    c
}
