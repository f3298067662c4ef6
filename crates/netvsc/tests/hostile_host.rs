//! A hostile host against the real guest driver (PROTOCOL.md §14, "guest, on host input").
//!
//! Each case starts a real `vmbus::server::Server` on a real Unix socket, with a scripted
//! [`Device`] behind it: when the guest opens the NIC's channel, a thread takes the host's
//! rings and plays the NVSP/RNDIS bring-up — correctly, except for the one thing the case
//! breaks. The guest is the real `netvsc::Guest::start`, run on a thread inside a private
//! network namespace (it creates a TAP once bring-up succeeds). The rule under test: the
//! guest returns a typed error naming what went wrong, or ignores and counts the bad
//! input; it never panics, never hangs and never queues without bound.
//!
//! Needs root (network namespaces, TAP). Without it the tests fail, unless
//! `HVNET_SKIP_ROOT_TESTS=1` says to skip them, and then they say so loudly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netvsc::{Exit, Guest, GuestConfig, GuestError, NicInfo};
use nvsp::NvspMessage;
use nvsp::wire as nw;
use rndis::header;
use vmbus::channel::HostRings;
use vmbus::channel_msg::version;
use vmbus::client::ClientError;
use vmbus::event::EventFd;
use vmbus::guid::{Guid, NETVSC_CLASS};
use vmbus::memory::{GpadlMapping, PAGE_SIZE};
use vmbus::packet::{self, COMPLETION_REQUESTED, PacketType, TransferPageRange};
use vmbus::ring::{OutgoingPacket, RingReader, RingWriter, WriteError};
use vmbus::server::{Connection, Device, OpenRequest, Server, ServerConfig};
use zerocopy::IntoBytes;
use zerocopy::little_endian::U32;

const MAC: [u8; 6] = [0x00, 0x15, 0x5d, 0x66, 0x00, 0x02];
/// The receive section size the scripted host announces (what our host uses for 1514).
const SECTION: u32 = 1728;
/// How long one case may take before it counts as a hang (the guest's own request
/// timeout is 10 s).
const CASE_TIMEOUT: Duration = Duration::from_secs(40);
/// Transfer-page packets a flooding host writes at most.
const FLOOD_LIMIT: u64 = 100_000;
const FLOOD_TID: u64 = 0xF100_0000_0000;

// ---------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------

/// What the scripted host breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    /// Nothing: the baseline every other case departs from.
    Good,
    /// The device offered is not a NIC.
    NoNic,
    /// The device refuses to open the channel.
    RefuseOpen,
    /// INIT_COMPLETE of 8 bytes (needs 16).
    InitTruncated,
    /// An empty completion for INIT.
    InitEmpty,
    /// INIT_COMPLETE with status FAIL for every version.
    InitFailsAll,
    /// A completion for INIT carrying another message type.
    InitWrongType,
    /// Never answers INIT.
    Silent,
    /// SEND_RECV_BUF_COMPLETE with 2 sections.
    RecvTwoSections,
    /// SEND_RECV_BUF_COMPLETE with the section at offset 4096.
    RecvOffset,
    /// SEND_RECV_BUF_COMPLETE with 67-byte sections.
    RecvSmallSections,
    /// SEND_RECV_BUF_COMPLETE with size × count one section past the buffer.
    RecvTooMany,
    /// SEND_RECV_BUF_COMPLETE whose size × count overflows 32 bits.
    RecvOverflow,
    /// SEND_RECV_BUF_COMPLETE with status FAIL.
    RecvRefused,
    /// SEND_RECV_BUF_COMPLETE of 12 bytes.
    RecvTruncated,
    /// SEND_SEND_BUF_COMPLETE with 67-byte sections.
    SendSmallSections,
    /// SEND_SEND_BUF_COMPLETE with 0-byte sections.
    SendZeroSections,
    /// SEND_SEND_BUF_COMPLETE with status FAIL.
    SendRefused,
    /// SEND_SEND_BUF_COMPLETE of 8 bytes.
    SendTruncated,
    /// Completions with made-up ids, including answers for requests not sent yet.
    UnknownCompletions,
    /// Transfer-page packets with every kind of bad range, before INIT_C.
    BadTransferPages,
    /// RNDIS messages with bad lengths, types and request ids, before INIT_C.
    BadRndisReplies,
    /// INIT_C with status FAILURE.
    InitCFailed,
    /// INIT_C with `pkt_align_factor` 13.
    InitCAlign,
    /// INIT_C with `max_pkt_per_msg` 0.
    InitCZeroPackets,
    /// INIT_C of 12 bytes.
    InitCTruncated,
    /// QUERY_C whose data lies past the message.
    QueryOutside,
    /// QUERY_C with `info_offset` 8 (< 16).
    QueryOffsetLow,
    /// QUERY_C with status FAILURE.
    QueryFailed,
    /// A 5-byte MAC address.
    ShortMac,
    /// Offload capabilities whose header claims more bytes than were sent.
    OffloadCapsLying,
    /// SET_C with status FAILURE for the packet filter.
    FilterRefused,
    /// Odd but valid answers the guest must accept.
    Quirky,
    /// `write_index` of the guest's inbound ring not a multiple of 8.
    BadInboundWriteIndex,
    /// `read_index` of the guest's outbound ring not a multiple of 8.
    BadOutboundReadIndex,
    /// A packet whose `len8` is shorter than its descriptor.
    BadLen8,
    /// A packet larger than the guest's 4624-byte copy buffer.
    Oversized,
    /// After bring-up, floods transfer-page packets and never reads a completion.
    Flood,
    /// After bring-up, bad RSC piece sequences and odd frames on the data path.
    BadDataPath,
}

/// What the scripted host saw and did, for the test's assertions.
#[derive(Default, Debug)]
struct Observed {
    /// NVSP versions the guest asked for, in order.
    inits: Vec<u32>,
    /// The guest's completions of our transfer-page packets: id → status.
    rx_completions: HashMap<u64, u32>,
    /// Ids of the hostile transfer-page packets sent.
    hostile: Vec<u64>,
    /// Ids of odd but valid transfer-page packets sent (to complete with SUCCESS).
    tolerated: Vec<u64>,
    /// Completions with made-up ids sent.
    forged: u64,
    /// Flood: packets written, and whether the guest stopped taking them.
    flood: Option<(u64, bool)>,
    /// The flood is over and the host reads completions again.
    flood_done: bool,
    /// Anything unexpected, for failure messages.
    notes: Vec<String>,
}

type Shared = Arc<Mutex<Observed>>;

// ---------------------------------------------------------------------------------------
// The scripted host
// ---------------------------------------------------------------------------------------

/// A running script: its relid, stop flag and thread.
type Script = (u32, Arc<AtomicBool>, JoinHandle<()>);

struct HostileNic {
    case: Case,
    obs: Shared,
    sims: Mutex<Vec<Script>>,
}

impl Device for HostileNic {
    fn class_id(&self) -> Guid {
        if self.case == Case::NoNic {
            Guid::from_fields(0xdead_beef, 1, 2, [3; 8])
        } else {
            NETVSC_CLASS
        }
    }

    fn instance_id(&self) -> Guid {
        Guid::from_fields(0x0bad_1057, 0x66, 0x77, [8; 8])
    }

    fn open(&self, r: OpenRequest) -> Result<(), String> {
        if self.case == Case::RefuseOpen {
            return Err("refused by the hostile host".into());
        }
        let rings =
            HostRings::new(r.ring.clone(), r.downstream_offset_pages).map_err(|e| e.to_string())?;
        let (reader, writer, ring) = rings.split();
        let stop = Arc::new(AtomicBool::new(false));
        let sim = Sim {
            case: self.case,
            reader,
            writer,
            ring,
            inbound_at: r.downstream_offset_pages as usize * PAGE_SIZE,
            g2h: r.guest_to_host,
            h2g: r.host_to_guest,
            conn: r.connection,
            relid: r.relid,
            stop: stop.clone(),
            obs: self.obs.clone(),
            recv: None,
            next_section: 0,
            next_tid: 0x5000_0000,
            frozen: false,
            flood_pending: false,
            data_path_pending: false,
            forged_control: false,
        };
        let t = std::thread::Builder::new()
            .name(format!("hostile-host-{}", r.relid))
            .spawn(move || sim.run())
            .map_err(|e| e.to_string())?;
        self.sims.lock().unwrap().push((r.relid, stop, t));
        Ok(())
    }

    fn close(&self, relid: u32) {
        let mut sims = self.sims.lock().unwrap();
        if let Some(i) = sims.iter().position(|(r, _, _)| *r == relid) {
            let (_, stop, t) = sims.remove(i);
            stop.store(true, Ordering::Release);
            let _ = t.join();
        }
    }

    fn disconnected(&self) {}
}

/// One channel's script.
struct Sim {
    case: Case,
    reader: RingReader,
    writer: RingWriter,
    ring: Arc<GpadlMapping>,
    /// Byte offset of the inbound (host-to-guest) ring in the ring GPADL.
    inbound_at: usize,
    g2h: EventFd,
    h2g: EventFd,
    conn: Arc<Connection>,
    relid: u32,
    stop: Arc<AtomicBool>,
    obs: Shared,
    recv: Option<(Arc<GpadlMapping>, u32)>,
    next_section: u32,
    next_tid: u64,
    /// Not reading the guest's ring (after corrupting it, or while flooding).
    frozen: bool,
    flood_pending: bool,
    data_path_pending: bool,
    forged_control: bool,
}

fn le(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn rndis_msg(msg_type: u32, body: &[u8]) -> Vec<u8> {
    let mut m = le(&[msg_type, 8 + body.len() as u32]);
    m.extend_from_slice(body);
    m
}

fn nvsp_bytes(m: &NvspMessage<'_>) -> Vec<u8> {
    let mut buf = [0u8; nw::V6_1_MESSAGE_SIZE];
    let n = m.emit_padded(&mut buf, nw::V6_1_MESSAGE_SIZE).unwrap();
    buf[..n].to_vec()
}

fn rndis_pkt_nvsp(channel_type: u32) -> Vec<u8> {
    nvsp_bytes(&NvspMessage::SendRndisPacket(nw::SendRndisPacket {
        channel_type: U32::new(channel_type),
        section_index: U32::new(nw::NO_SECTION),
        section_size: U32::ZERO,
    }))
}

impl Sim {
    fn note(&self, s: String) {
        self.obs.lock().unwrap().notes.push(s);
    }

    fn run(mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        while !self.stop.load(Ordering::Acquire) {
            while !self.frozen {
                let p = match self.reader.read(&mut buf) {
                    Ok(Some(p)) => (
                        p.packet_type,
                        p.transaction_id,
                        p.header.to_vec(),
                        p.payload.to_vec(),
                    ),
                    Ok(None) => break,
                    Err(e) => {
                        self.note(format!("guest ring: {e}"));
                        if e.is_fatal() {
                            self.frozen = true;
                        }
                        continue;
                    }
                };
                self.handle(p.0, p.1, &p.2, &p.3);
                if self.reader.commit().unwrap_or(false) {
                    self.h2g.signal();
                }
            }
            if self.flood_pending {
                self.flood_pending = false;
                self.flood();
            }
            if self.data_path_pending {
                self.data_path_pending = false;
                self.bad_data_path();
            }
            self.g2h.wait(Some(Duration::from_millis(20)));
        }
    }

    /// Writes one packet, waiting (bounded) for room; publishes and signals.
    fn write(&mut self, ty: u16, flags: u16, tid: u64, header: &[u8], payload: &[u8]) {
        let pkt = OutgoingPacket {
            packet_type: ty,
            flags,
            transaction_id: tid,
            header,
            payload: &[payload],
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.writer.write(&pkt) {
                Ok(()) => break,
                Err(WriteError::Full { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => {
                    self.note(format!("host write: {e}"));
                    return;
                }
            }
        }
        if self.writer.commit().unwrap_or(false) {
            self.h2g.signal();
        }
    }

    fn comp(&mut self, tid: u64, payload: &[u8]) {
        self.write(PacketType::COMP, 0, tid, &[], payload);
    }

    fn nvsp_comp(&mut self, tid: u64, m: &NvspMessage<'_>) {
        self.comp(tid, &nvsp_bytes(m));
    }

    fn poke(&self, offset: usize, value: u32) {
        self.ring
            .write(offset, &value.to_le_bytes())
            .expect("inside the ring");
    }

    fn peek(&self, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        self.ring.read(offset, &mut b).expect("inside the ring");
        u32::from_le_bytes(b)
    }

    fn handle(&mut self, ty: u16, tid: u64, header: &[u8], payload: &[u8]) {
        match ty {
            PacketType::COMP => {
                if let Ok(NvspMessage::SendRndisPacketComplete(c)) =
                    NvspMessage::parse_completion(payload)
                {
                    self.obs
                        .lock()
                        .unwrap()
                        .rx_completions
                        .insert(tid, c.status.get());
                } else {
                    self.note(format!("guest completion {tid:#x} without a 108"));
                }
            }
            PacketType::DATA_INBAND => match NvspMessage::parse(payload) {
                Ok(NvspMessage::Init(i)) => self.on_init(tid, i.min_ver.get()),
                Ok(NvspMessage::SendReceiveBuffer(b)) => self.on_recv_buf(tid, b.gpadl.get()),
                Ok(NvspMessage::SendSendBuffer(b)) => self.on_send_buf(tid, b.gpadl.get()),
                Ok(_) => {}
                Err(e) => self.note(format!("guest NVSP: {e}")),
            },
            PacketType::DATA_USING_GPA_DIRECT => self.on_gpa_direct(tid, header, payload),
            other => self.note(format!("guest packet type {other:#x}")),
        }
    }

    fn on_init(&mut self, tid: u64, v: u32) {
        self.obs.lock().unwrap().inits.push(v);
        let ok = NvspMessage::InitComplete(nw::InitComplete::answer(v, nvsp::status::SUCCESS));
        match self.case {
            Case::Silent => {}
            Case::InitTruncated => self.comp(tid, &le(&[nvsp::msg_type::INIT_COMPLETE, !0])),
            Case::InitEmpty => self.comp(tid, &[]),
            Case::InitFailsAll => self.nvsp_comp(
                tid,
                &NvspMessage::InitComplete(nw::InitComplete::answer(v, nvsp::status::FAIL)),
            ),
            Case::InitWrongType => self.nvsp_comp(
                tid,
                &NvspMessage::SendSendBufferComplete(nw::SendSendBufferComplete {
                    status: U32::new(nvsp::status::SUCCESS),
                    section_size: U32::new(nw::SEND_SECTION_SIZE),
                }),
            ),
            Case::BadInboundWriteIndex => {
                let w = self.peek(self.inbound_at);
                self.poke(self.inbound_at, w + 13);
                self.h2g.signal();
            }
            Case::BadLen8 => {
                // A descriptor with len8 1 (8 bytes < 16) and enough bytes published.
                let w = self.peek(self.inbound_at) as usize;
                let mut desc = [0u8; 24];
                desc[..2].copy_from_slice(&PacketType::COMP.to_le_bytes());
                desc[2..4].copy_from_slice(&2u16.to_le_bytes());
                desc[4..6].copy_from_slice(&1u16.to_le_bytes());
                desc[8..16].copy_from_slice(&tid.to_le_bytes());
                self.ring
                    .write(self.inbound_at + PAGE_SIZE + w, &desc)
                    .expect("inside the ring");
                self.poke(self.inbound_at, (w + 24) as u32);
                self.h2g.signal();
            }
            Case::Oversized => {
                let mut big = nvsp_bytes(&ok);
                big.resize(5000, 0);
                self.comp(tid, &big);
            }
            Case::BadOutboundReadIndex => {
                // Publish what was read, then break the index the guest's writer reads,
                // and never read (or repair) the ring again.
                let _ = self.reader.commit();
                let r = self.peek(4);
                self.poke(4, r + 13);
                self.frozen = true;
                self.nvsp_comp(tid, &ok);
            }
            Case::UnknownCompletions => {
                let init_c = nvsp_bytes(&ok);
                let refused = nvsp_bytes(&NvspMessage::SendReceiveBufferComplete({
                    let mut c = nw::SendReceiveBufferComplete::single_section(0, 0);
                    c.status = U32::new(nvsp::status::FAIL);
                    c
                }));
                let mut forged = 0;
                for id in [
                    0,
                    1,
                    u64::MAX,
                    0x7777 << 40,
                    tid ^ (1 << 63),
                    tid.wrapping_sub(1),
                ] {
                    self.comp(id, &init_c);
                    forged += 1;
                }
                // Answers to requests the guest has not made yet: poisoned, and they
                // must not be taken for the real answers later.
                for k in 1..=16 {
                    self.comp(tid + k, &refused);
                    forged += 1;
                }
                // Answers to ids the guest will never use: nothing may keep them.
                for k in 0..256 {
                    self.comp(tid + (1 << 20) + k, &[0xAB; 2048]);
                    forged += 1;
                }
                self.obs.lock().unwrap().forged += forged;
                self.nvsp_comp(tid, &ok);
            }
            _ => self.nvsp_comp(tid, &ok),
        }
    }

    fn on_recv_buf(&mut self, tid: u64, gpadl: u32) {
        let Some(mapping) = self.conn.gpadl(self.relid, gpadl) else {
            self.note(format!("receive buffer GPADL {gpadl} unknown"));
            return;
        };
        let len = mapping.len() as u32;
        let count = len / SECTION;
        self.recv = Some((mapping, count));
        let mut c = nw::SendReceiveBufferComplete::single_section(SECTION, count);
        match self.case {
            Case::RecvTwoSections => c.num_sections = U32::new(2),
            Case::RecvOffset => c.section.offset = U32::new(4096),
            Case::RecvSmallSections => {
                c = nw::SendReceiveBufferComplete::single_section(67, len / 67)
            }
            Case::RecvTooMany => {
                c = nw::SendReceiveBufferComplete::single_section(SECTION, len / SECTION + 1)
            }
            Case::RecvOverflow => {
                c = nw::SendReceiveBufferComplete::single_section(0x1_0000, 0x1_0001)
            }
            Case::RecvRefused => c.status = U32::new(nvsp::status::FAIL),
            Case::RecvTruncated => {
                return self.comp(tid, &le(&[nvsp::msg_type::SEND_RECV_BUF_COMPLETE, 1, 1]));
            }
            _ => {}
        }
        self.nvsp_comp(tid, &NvspMessage::SendReceiveBufferComplete(c));
    }

    fn on_send_buf(&mut self, tid: u64, gpadl: u32) {
        if self.conn.gpadl(self.relid, gpadl).is_none() {
            self.note(format!("send buffer GPADL {gpadl} unknown"));
        }
        let (status, size) = match self.case {
            Case::SendSmallSections => (nvsp::status::SUCCESS, 67),
            Case::SendZeroSections => (nvsp::status::SUCCESS, 0),
            Case::SendRefused => (nvsp::status::FAIL, nw::SEND_SECTION_SIZE),
            Case::SendTruncated => {
                return self.comp(tid, &le(&[nvsp::msg_type::SEND_SEND_BUF_COMPLETE, 1]));
            }
            _ => (nvsp::status::SUCCESS, nw::SEND_SECTION_SIZE),
        };
        self.nvsp_comp(
            tid,
            &NvspMessage::SendSendBufferComplete(nw::SendSendBufferComplete {
                status: U32::new(status),
                section_size: U32::new(size),
            }),
        );
    }

    fn on_gpa_direct(&mut self, tid: u64, header: &[u8], payload: &[u8]) {
        let Ok(ranges) = packet::GpaDirectRanges::parse(header, packet::MAX_GPA_RANGES) else {
            return self.note("guest GPA-direct header".into());
        };
        let mut msg = Vec::new();
        for r in ranges {
            let mut left = r.byte_count as usize;
            let mut offset = r.byte_offset as usize;
            for pfn in r.pfn_iter() {
                let n = left.min(PAGE_SIZE - offset);
                let mut chunk = vec![0u8; n];
                if self
                    .conn
                    .memory()
                    .read(pfn * PAGE_SIZE as u64 + offset as u64, &mut chunk)
                    .is_err()
                {
                    return self.note("guest GPA range outside memory".into());
                }
                msg.extend_from_slice(&chunk);
                left -= n;
                offset = 0;
            }
        }
        if !matches!(
            NvspMessage::parse(payload),
            Ok(NvspMessage::SendRndisPacket(_))
        ) {
            return self.note("GPA-direct packet without a 107".into());
        }
        self.nvsp_comp(
            tid,
            &NvspMessage::SendRndisPacketComplete(nw::SendRndisPacketComplete {
                status: U32::new(nvsp::status::SUCCESS),
            }),
        );
        if self.case == Case::UnknownCompletions && !self.forged_control {
            // The guest's id for this control send, give or take: neighbours are not
            // outstanding.
            self.forged_control = true;
            let ok = le(&[
                nvsp::msg_type::SEND_RNDIS_PKT_COMPLETE,
                nvsp::status::SUCCESS,
            ]);
            for id in [tid + 1, tid + 7, tid | 0xFFFF_FFFF] {
                self.comp(id, &ok);
            }
            self.obs.lock().unwrap().forged += 3;
        }
        self.on_rndis(&msg);
    }

    /// Posts one RNDIS message through a receive section; returns the packet's id.
    fn post(&mut self, msg: &[u8]) -> u64 {
        let Some((mapping, count)) = self.recv.clone() else {
            self.note("RNDIS reply before the receive buffer".into());
            return 0;
        };
        let section = self.next_section % count;
        self.next_section += 1;
        let offset = section * SECTION;
        mapping
            .write(offset as usize, msg)
            .expect("inside the buffer");
        self.post_raw(
            nw::RECEIVE_BUFFER_ID,
            None,
            &[(msg.len() as u32, offset)],
            &rndis_pkt_nvsp(nw::CHANNEL_TYPE_CONTROL),
        )
    }

    /// A transfer-page packet with any pageset, range count and ranges.
    fn post_raw(
        &mut self,
        pageset: u16,
        range_cnt: Option<u32>,
        ranges: &[(u32, u32)],
        nvsp: &[u8],
    ) -> u64 {
        let ranges: Vec<TransferPageRange> = ranges
            .iter()
            .map(|&(byte_count, byte_offset)| TransferPageRange {
                byte_count,
                byte_offset,
            })
            .collect();
        let mut header = vec![0u8; packet::transfer_page_header_len(ranges.len())];
        packet::write_transfer_page_header(&mut header, pageset, &ranges).unwrap();
        if let Some(n) = range_cnt {
            header[4..8].copy_from_slice(&n.to_le_bytes());
        }
        let tid = self.next_tid;
        self.next_tid += 1;
        self.write(
            PacketType::DATA_USING_XFER_PAGES,
            COMPLETION_REQUESTED,
            tid,
            &header,
            nvsp,
        );
        tid
    }

    /// Posts `msg` as a hostile packet whose completion the test checks.
    fn post_hostile(&mut self, msg: &[u8]) {
        let tid = self.post(msg);
        self.obs.lock().unwrap().hostile.push(tid);
    }

    fn on_rndis(&mut self, msg: &[u8]) {
        let word = |i: usize| {
            msg.get(i * 4..i * 4 + 4)
                .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()))
        };
        let (msg_type, req) = (word(0), word(2));
        match msg_type {
            header::INITIALIZE => self.on_initialize(req),
            header::QUERY => {
                let (oid, info_len, info_offset) = (word(3), word(4), word(5));
                let info = msg
                    .get(8 + info_offset as usize..8 + info_offset as usize + info_len as usize)
                    .unwrap_or(&[])
                    .to_vec();
                self.on_query(req, oid, &info);
            }
            header::SET => {
                let oid = word(3);
                let status = if self.case == Case::FilterRefused
                    && oid == rndis::oid::GEN_CURRENT_PACKET_FILTER
                {
                    rndis::status::FAILURE
                } else {
                    rndis::status::SUCCESS
                };
                self.post(&rndis_msg(header::SET_COMPLETE, &le(&[req, status])));
                if oid == rndis::oid::GEN_CURRENT_PACKET_FILTER {
                    self.flood_pending = self.case == Case::Flood;
                    self.data_path_pending = self.case == Case::BadDataPath;
                }
            }
            _ => {}
        }
    }

    fn on_initialize(&mut self, req: u32) {
        let mut c = rndis::control::InitializeComplete::host(req);
        match self.case {
            Case::BadTransferPages => self.bad_transfer_pages(),
            Case::BadRndisReplies => self.bad_rndis_replies(req),
            Case::InitCFailed => c.status = U32::new(rndis::status::FAILURE),
            Case::InitCAlign => c.pkt_align_factor = U32::new(13),
            Case::InitCZeroPackets => c.max_pkt_per_msg = U32::ZERO,
            Case::InitCTruncated => {
                self.post(&rndis_msg(header::INITIALIZE_COMPLETE, &le(&[req])));
                return;
            }
            Case::Quirky => {
                // A status indication nobody asked for, a keepalive, a reply nobody
                // waits for: all fine.
                self.post(&rndis_msg(
                    header::INDICATE_STATUS,
                    &le(&[0x4002_0006, 0, 0]),
                ));
                self.post(&rndis_msg(header::KEEPALIVE, &le(&[0x4242])));
                self.post(&rndis_msg(header::SET_COMPLETE, &le(&[req + 1000, 0])));
            }
            _ => {}
        }
        self.post(&rndis_msg(header::INITIALIZE_COMPLETE, c.as_bytes()));
    }

    fn on_query(&mut self, req: u32, oid: u32, info: &[u8]) {
        let mut status = rndis::status::SUCCESS;
        let mut data: Vec<u8> = match oid {
            rndis::oid::GEN_MAXIMUM_FRAME_SIZE => 1500u32.to_le_bytes().to_vec(),
            rndis::oid::OID_802_3_PERMANENT_ADDRESS => MAC.to_vec(),
            rndis::oid::GEN_FRIENDLY_NAME => "Hostile Host\0"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect(),
            rndis::oid::TCP_OFFLOAD_HARDWARE_CAPABILITIES => {
                let revision = rndis::offload::NdisOffload::requested_revision(info);
                let mut buf = [0u8; rndis::offload::OFFLOAD_SIZE_REV3];
                let n = rndis::offload::NdisOffload::host(false, false)
                    .emit(revision, &mut buf)
                    .unwrap();
                buf[..n].to_vec()
            }
            rndis::oid::GEN_MEDIA_CONNECT_STATUS => 0u32.to_le_bytes().to_vec(),
            rndis::oid::GEN_LINK_SPEED => 100_000u32.to_le_bytes().to_vec(),
            _ => {
                status = rndis::status::NOT_SUPPORTED;
                Vec::new()
            }
        };
        // (info_len, info_offset) as written, and the gap before the data.
        let mut layout = None;
        let first = oid == rndis::oid::GEN_MAXIMUM_FRAME_SIZE;
        match self.case {
            Case::QueryOutside if first => layout = Some((1000, 16)),
            Case::QueryOffsetLow if first => layout = Some((4, 8)),
            Case::QueryFailed if first => status = rndis::status::FAILURE,
            Case::ShortMac if oid == rndis::oid::OID_802_3_PERMANENT_ADDRESS => data.truncate(5),
            Case::OffloadCapsLying if oid == rndis::oid::TCP_OFFLOAD_HARDWARE_CAPABILITIES => {
                data.truncate(rndis::offload::OFFLOAD_SIZE_REV1);
                data[2..4].copy_from_slice(&156u16.to_le_bytes());
            }
            Case::Quirky if oid == rndis::oid::GEN_FRIENDLY_NAME => {
                // 511 bytes, unpaired surrogates, no NUL: odd, but only logged.
                data = (0..511)
                    .map(|i| if i % 2 == 1 { 0xD8 } else { 0x41 })
                    .collect();
            }
            Case::Quirky if first => layout = Some((4, 24)), // data 8 bytes after the fixed part
            _ => {}
        }
        let (info_len, info_offset) = layout.unwrap_or((data.len() as u32, 16));
        let gap = (info_offset as usize).saturating_sub(16).min(64);
        let mut body = le(&[
            req,
            status,
            info_len,
            if data.is_empty() { 0 } else { info_offset },
        ]);
        body.resize(body.len() + gap, 0);
        body.extend_from_slice(&data);
        self.post(&rndis_msg(header::QUERY_COMPLETE, &body));
    }

    /// Transfer-page packets that break each §14 rule; the guest must complete each
    /// with FAIL and keep going.
    fn bad_transfer_pages(&mut self) {
        let Some((mapping, count)) = self.recv.clone() else {
            return;
        };
        let buf = mapping.len() as u32;
        let keepalive = rndis_msg(header::KEEPALIVE, &le(&[0x77]));
        let section = (self.next_section % count) * SECTION;
        self.next_section += 1;
        mapping.write(section as usize, &keepalive).unwrap();
        let data = rndis_pkt_nvsp(nw::CHANNEL_TYPE_DATA);
        let good = (keepalive.len() as u32, section);
        let mut tids = vec![
            self.post_raw(0xBEEF, None, &[good], &data),
            self.post_raw(nw::RECEIVE_BUFFER_ID, None, &[(12, buf + 8)], &data),
            self.post_raw(nw::RECEIVE_BUFFER_ID, None, &[(64, buf - 8)], &data),
            self.post_raw(nw::RECEIVE_BUFFER_ID, None, &[(SECTION + 8, 0)], &data),
            self.post_raw(nw::RECEIVE_BUFFER_ID, None, &[(u32::MAX, u32::MAX)], &data),
            self.post_raw(nw::RECEIVE_BUFFER_ID, None, &[(0, section)], &data),
            self.post_raw(nw::RECEIVE_BUFFER_ID, Some(u32::MAX), &[good], &data),
            self.post_raw(nw::RECEIVE_BUFFER_ID, Some(2), &[good], &data),
            // A good range, then a bad one: the packet fails as a whole.
            self.post_raw(nw::RECEIVE_BUFFER_ID, None, &[good, (8, buf)], &data),
            // Not an NVSP 107, or no NVSP message at all.
            self.post_raw(
                nw::RECEIVE_BUFFER_ID,
                None,
                &[good],
                &nvsp_bytes(&NvspMessage::Init(nw::Init::exact(nvsp::version::V6_1))),
            ),
            self.post_raw(nw::RECEIVE_BUFFER_ID, None, &[good], &[]),
        ];
        // Frames the RNDIS parser must refuse, each in its own good range.
        let ppi = |size: u32, offset: u32| le(&[size, 0, offset, 0]);
        let packet =
            |data_offset: u32, data_len: u32, ppi_offset: u32, ppi_len: u32, ppis: &[u8]| {
                let mut body = le(&[data_offset, data_len, 0, 0, 0, ppi_offset, ppi_len, 0, 0]);
                body.extend_from_slice(ppis);
                body.extend_from_slice(&[0u8; 60]);
                rndis_msg(header::PACKET, &body)
            };
        for msg in [
            packet(52, 60, 36, 16, &ppi(0, 12)),  // PPI size 0: must not loop
            packet(52, 60, 36, 16, &ppi(16, 16)), // PPI data offset = its size
            packet(52, 60, 36, 16, &ppi(99, 12)), // PPI past its area
            packet(52, 60, 8, 16, &ppi(16, 12)),  // PPIs inside the body
            packet(1000, 60, 0, 0, &[]),          // frame past the message
            packet(36, 1000, 0, 0, &[]),          // frame longer than the message
            rndis_msg(header::PACKET, &le(&[36, 0])), // shorter than a PACKET
        ] {
            tids.push(self.post(&msg));
        }
        self.obs.lock().unwrap().hostile.extend(tids);
    }

    /// RNDIS messages with bad framing, types or request ids (each in a good range).
    fn bad_rndis_replies(&mut self, req: u32) {
        let mut msg_len_0 = rndis_msg(header::INITIALIZE_COMPLETE, &[0; 44]);
        msg_len_0[4..8].copy_from_slice(&0u32.to_le_bytes());
        let mut msg_len_long = rndis_msg(header::INITIALIZE_COMPLETE, &[0; 44]);
        msg_len_long[4..8].copy_from_slice(&4096u32.to_le_bytes());
        let mut msg_len_max = rndis_msg(header::QUERY_COMPLETE, &[0; 16]);
        msg_len_max[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        for msg in [
            msg_len_0,
            msg_len_long,
            msg_len_max,
            le(&[header::INITIALIZE_COMPLETE])[..4].to_vec(), // 4-byte range
            rndis_msg(0x55, &le(&[req])),                     // unknown type
            rndis_msg(header::INITIALIZE, &le(&[req, 1, 0, 0])), // a guest's message
            rndis_msg(header::QUERY, &[0; 20]),
            rndis_msg(header::INITIALIZE_COMPLETE, &[]), // no request id
            rndis_msg(header::INDICATE_STATUS, &le(&[1])), // short status body
        ] {
            self.post_hostile(&msg);
        }
        // Well-formed replies to requests never made: ignored (counted), not failed.
        let c = rndis::control::InitializeComplete::host(req + 5000);
        self.post(&rndis_msg(header::INITIALIZE_COMPLETE, c.as_bytes()));
        self.post(&rndis_msg(header::SET_COMPLETE, &le(&[0xFFFF_FFFF, 0])));
    }

    /// Writes `msg` into the next receive section; returns its range (count, offset).
    fn put(&mut self, msg: &[u8]) -> (u32, u32) {
        let (mapping, count) = self.recv.clone().expect("a receive buffer");
        let offset = (self.next_section % count) * SECTION;
        self.next_section += 1;
        mapping
            .write(offset as usize, msg)
            .expect("inside the buffer");
        (msg.len() as u32, offset)
    }

    /// Data-path packets that break the RSC rules (§10) and frames with odd headers
    /// under RX-checksum PPIs that send them to GRO: the guest fails the first kind,
    /// takes the second, and its data path keeps running.
    fn bad_data_path(&mut self) {
        use rndis::ppi::{PktInfoId, ppi_type};
        let data = rndis_pkt_nvsp(nw::CHANNEL_TYPE_DATA);
        let csum_ok = (1 << 3) | (1 << 5) | (1 << 8); // TCP_OK, IP_OK, IP_VALUE_INVALID
        let packet = |ppis: &[(u32, u32)], frame: &[u8]| {
            let area: Vec<u8> = ppis
                .iter()
                .flat_map(|&(t, v)| le(&[16, t, 12, v]))
                .collect();
            let ppi_len = area.len() as u32;
            let ppi_offset = if ppis.is_empty() { 0 } else { 36 };
            let mut body = le(&[
                36 + ppi_len,
                frame.len() as u32,
                0,
                0,
                0,
                ppi_offset,
                ppi_len,
                0,
                0,
            ]);
            body.extend_from_slice(&area);
            body.extend_from_slice(frame);
            rndis_msg(header::PACKET, &body)
        };
        let piece = |flag: u8, frame: &[u8]| {
            let id = PktInfoId::new(PktInfoId::SUBALLOC | flag, 7).to_u32();
            let mut ppis = vec![(ppi_type::PKTINFO_ID, id)];
            if flag & PktInfoId::FIRST_FRAG != 0 {
                ppis.push((ppi_type::TCPIP_CHKSUM, csum_ok));
            }
            packet(&ppis, frame)
        };
        let tcp = |seq: u32, ihl: u8, doff: u8, payload: usize| {
            let mut f = Vec::new();
            f.extend_from_slice(&MAC);
            f.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x08, 0x00]);
            let total = (20 + 20 + payload) as u16;
            f.extend_from_slice(&[0x40 | ihl, 0]);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1]);
            f.extend_from_slice(&[0, 80, 0x04, 0xd2]);
            f.extend_from_slice(&seq.to_be_bytes());
            f.extend_from_slice(&1u32.to_be_bytes());
            f.extend_from_slice(&[doff << 4, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
            f.extend(std::iter::repeat_n(0x5a, payload));
            f
        };
        let small = vec![0x11u8; 100];
        let big = vec![0x22u8; 1600];
        let first = self.put(&piece(PktInfoId::FIRST_FRAG, &small));
        let middle = self.put(&piece(0, &small));
        let last = self.put(&piece(PktInfoId::LAST_FRAG, &small));
        let big_first = self.put(&piece(PktInfoId::FIRST_FRAG, &big));
        let big_middle = self.put(&piece(0, &big));
        let many: Vec<(u32, u32)> = std::iter::once(first)
            .chain(std::iter::repeat_n(middle, 563))
            .chain(std::iter::once(last))
            .collect();
        let long: Vec<(u32, u32)> = std::iter::once(big_first)
            .chain(std::iter::repeat_n(big_middle, 45))
            .chain(std::iter::once(last))
            .collect();
        let cafe = nw::RECEIVE_BUFFER_ID;
        let hostile = vec![
            self.post_raw(cafe, None, &[middle], &data), // a piece with nothing in progress
            self.post_raw(cafe, None, &[last], &data),
            self.post_raw(cafe, None, &[first, middle], &data), // never ends
            self.post_raw(cafe, None, &many, &data),            // 565 pieces (> 562)
            self.post_raw(cafe, None, &long, &data),            // more than 64 KiB
        ];
        let mut tolerated = vec![
            self.post_raw(cafe, None, &[first, middle, last], &data), // garbage, but an RSC packet
            self.post_raw(cafe, None, &[first, last, first, last], &data), // two in one
        ];
        for frame in [
            vec![0u8; 14],
            tcp(1, 15, 5, 0)[..40].to_vec(), // IHL 15, cut short
            tcp(1, 5, 15, 10),               // TCP data offset 15 (60 bytes) in 30
            tcp(1, 5, 1, 10),                // TCP data offset 1
            tcp(1, 5, 5, 1000),              // three segments of one flow: GRO merges
            tcp(1001, 5, 5, 1000),
            tcp(2001, 5, 5, 1000),
            tcp(2001, 5, 5, 1000), // a duplicate
            {
                let mut f = tcp(3001, 5, 5, 100);
                f[16..18].copy_from_slice(&0xFFFFu16.to_be_bytes()); // total length lies
                f
            },
        ] {
            let range = self.put(&packet(&[(ppi_type::TCPIP_CHKSUM, csum_ok)], &frame));
            tolerated.push(self.post_raw(cafe, None, &[range], &data));
        }
        // PKTINFO_ID without SUBALLOC: a plain frame.
        let id = PktInfoId::new(PktInfoId::FIRST_FRAG, 9).to_u32();
        let range = self.put(&packet(&[(ppi_type::PKTINFO_ID, id)], &tcp(1, 5, 5, 10)));
        tolerated.push(self.post_raw(cafe, None, &[range], &data));
        let mut obs = self.obs.lock().unwrap();
        obs.hostile.extend(hostile);
        obs.tolerated.extend(tolerated);
    }

    /// Writes transfer-page packets without reading a single completion, until the
    /// guest stops taking them (its inbound ring stays full) or the limit.
    fn flood(&mut self) {
        self.frozen = true;
        let _ = self.reader.commit();
        let data = rndis_pkt_nvsp(nw::CHANNEL_TYPE_DATA);
        let header = {
            let mut h = vec![0u8; packet::transfer_page_header_len(1)];
            let r = [TransferPageRange {
                byte_count: 64,
                byte_offset: 0,
            }];
            packet::write_transfer_page_header(&mut h, 0xBEEF, &r).unwrap();
            h
        };
        let mut written = 0u64;
        let mut full_since: Option<Instant> = None;
        let stalled = loop {
            if written == FLOOD_LIMIT || self.stop.load(Ordering::Acquire) {
                break false;
            }
            let pkt = OutgoingPacket {
                packet_type: PacketType::DATA_USING_XFER_PAGES,
                flags: COMPLETION_REQUESTED,
                transaction_id: FLOOD_TID + written,
                header: &header,
                payload: &[&data],
            };
            match self.writer.write(&pkt) {
                Ok(()) => {
                    written += 1;
                    full_since = None;
                    if written.is_multiple_of(32) && self.writer.commit().unwrap_or(false) {
                        self.h2g.signal();
                    }
                }
                Err(WriteError::Full { .. }) => {
                    if self.writer.commit().unwrap_or(false) {
                        self.h2g.signal();
                    }
                    let since = *full_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(3) {
                        break true;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => {
                    self.note(format!("flood: {e}"));
                    break false;
                }
            }
        };
        if self.writer.commit().unwrap_or(false) {
            self.h2g.signal();
        }
        self.obs.lock().unwrap().flood = Some((written, stalled));
        // Read again: what the guest kept comes now.
        self.frozen = false;
        self.obs.lock().unwrap().flood_done = true;
    }
}

// ---------------------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------------------

/// Root is needed for the network namespace and the TAP. Returns false to skip.
fn have_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("HVNET_SKIP_ROOT_TESTS").is_some() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: the hostile-host tests need root (network namespace, TAP); \
             HVNET_SKIP_ROOT_TESTS is set !!!!!!!!\n"
        );
        return false;
    }
    panic!(
        "the hostile-host tests need root (a private network namespace and a TAP per case); \
         run them as root, or set HVNET_SKIP_ROOT_TESTS=1 to skip them knowingly"
    );
}

/// What a guest that came up reported before shutting down.
#[derive(Debug)]
struct Up {
    info: NicInfo,
    stats: HashMap<String, u64>,
    /// Whether the data path was still running at the end.
    alive: bool,
}

struct Outcome {
    result: Result<Up, GuestError>,
    obs: Shared,
    took: Duration,
}

impl Outcome {
    fn err(&self) -> &GuestError {
        match &self.result {
            Err(e) => e,
            Ok(up) => panic!(
                "the guest came up against a hostile host: {up:?}; host saw {:?}",
                self.obs.lock().unwrap()
            ),
        }
    }

    fn up(&self) -> &Up {
        match &self.result {
            Ok(up) => up,
            Err(e) => panic!(
                "the guest failed: {e}; host saw {:?}",
                self.obs.lock().unwrap()
            ),
        }
    }
}

/// Runs the real guest against a scripted host for `case`, the guest on a thread in a
/// fresh network namespace, bounded by [`CASE_TIMEOUT`]. `after` runs once the guest
/// is up (before it shuts down).
fn run_case_with(case: Case, after: fn(&mut Guest, &Shared)) -> Outcome {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "hvnet-hostile-host-{}-{}.vmbus",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let obs: Shared = Arc::default();
    let device = Arc::new(HostileNic {
        case,
        obs: obs.clone(),
        sims: Mutex::default(),
    });
    let server = Server::bind(
        ServerConfig {
            path: path.clone(),
            max_version: version::WS2022,
            tracer: None,
        },
        device,
    )
    .expect("bind the VMBus socket");
    let stop = server.stop_flag();
    let server_thread = std::thread::spawn(move || server.run());

    let config = GuestConfig {
        vmbus_socket: path.clone(),
        ifname: "eth0".into(),
        mtu: 1500,
        rx_sections: 64,
        tx_sections: 16,
        ring_pages: 33,
        staging_slots: 4,
        queues: 1,
        tracer: None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let guest_obs = obs.clone();
    let started = Instant::now();
    std::thread::Builder::new()
        .name(format!("guest-{case:?}"))
        .spawn(move || {
            // SAFETY: unshare affects only this thread's namespaces.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            let result = Guest::start(&config).map(|mut guest| {
                after(&mut guest, &guest_obs);
                let alive = data_path_alive(&mut guest);
                let up = Up {
                    info: guest.info().clone(),
                    stats: guest
                        .stats()
                        .lock()
                        .unwrap()
                        .snapshot()
                        .into_iter()
                        .collect(),
                    alive,
                };
                let _ = guest.shutdown(false);
                up
            });
            let _ = tx.send(result);
        })
        .expect("spawn the guest thread");
    let result = match rx.recv_timeout(CASE_TIMEOUT) {
        Ok(r) => r,
        Err(RecvTimeoutError::Timeout) => panic!(
            "{case:?}: the guest hung for {CASE_TIMEOUT:?}; host saw {:?}",
            obs.lock().unwrap()
        ),
        Err(RecvTimeoutError::Disconnected) => panic!(
            "{case:?}: the guest thread panicked; host saw {:?}",
            obs.lock().unwrap()
        ),
    };
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    server_thread.join().expect("the VMBus server thread");
    let _ = std::fs::remove_file(&path);
    Outcome { result, obs, took }
}

fn run_case(case: Case) -> Outcome {
    run_case_with(case, |_, _| {})
}

/// Whether the guest's data path still runs (it has not stopped on an error).
fn data_path_alive(guest: &mut Guest) -> bool {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let timer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        s.store(true, Ordering::Relaxed);
    });
    let exit = guest.wait(&stop);
    timer.join().unwrap();
    matches!(exit, Exit::Stopped)
}

fn assert_protocol_error(case: Case, o: &Outcome, needle: &str) {
    let e = o.err();
    assert!(
        matches!(e, GuestError::Protocol(_)),
        "{case:?}: expected a protocol error, got {e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains(needle),
        "{case:?}: {msg:?} does not mention {needle:?}"
    );
}

fn assert_refused(case: Case, o: &Outcome, what: &str) {
    match o.err() {
        GuestError::Refused { what: w, .. } => {
            assert!(
                w.contains(what),
                "{case:?}: refused {w:?}, expected {what:?}"
            )
        }
        e => panic!("{case:?}: expected Refused({what}), got {e:?}"),
    }
}

fn assert_ring_error(case: Case, o: &Outcome, needle: &str) {
    let e = o.err();
    assert!(
        matches!(e, GuestError::Ring(_)),
        "{case:?}: expected a ring error, got {e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains(needle),
        "{case:?}: {msg:?} does not mention {needle:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn a_well_behaved_scripted_host_brings_the_guest_up() {
    if !have_root() {
        return;
    }
    let o = run_case(Case::Good);
    let up = o.up();
    assert!(up.alive);
    assert_eq!(up.info.mac, MAC);
    assert_eq!(up.info.nvsp_version, nvsp::version::V6_1);
    assert_eq!(up.info.rx_section_size, SECTION);
    assert_eq!(up.info.tx_section_size, nw::SEND_SECTION_SIZE);
    assert_eq!(up.info.max_pkt_per_msg, 8);
    assert_eq!(up.stats["bad_completions"], 0);
    assert_eq!(up.stats["rx_bad_messages"], 0);
    assert!(
        o.obs.lock().unwrap().notes.is_empty(),
        "{:?}",
        o.obs.lock().unwrap()
    );
    let o = run_case(Case::Quirky);
    let up = o.up();
    assert!(up.alive);
    assert_eq!(up.info.mtu, 1500);
    assert_eq!(up.stats["keepalives"], 1);
    assert_eq!(up.stats["bad_completions"], 1, "the SET_C nobody asked for");
}

#[test]
fn the_wrong_device_or_a_refused_open_is_an_error() {
    if !have_root() {
        return;
    }
    let o = run_case(Case::NoNic);
    assert!(matches!(o.err(), GuestError::NoNic), "{:?}", o.err());
    let o = run_case(Case::RefuseOpen);
    assert!(
        matches!(o.err(), GuestError::Vmbus(ClientError::Open { .. })),
        "{:?}",
        o.err()
    );
}

#[test]
fn hostile_init_completions_fail_bring_up() {
    if !have_root() {
        return;
    }
    for case in [Case::InitTruncated, Case::InitEmpty, Case::InitWrongType] {
        let o = run_case(case);
        assert_protocol_error(case, &o, "INIT");
        assert_eq!(o.obs.lock().unwrap().inits, [nvsp::version::V6_1]);
    }
    let o = run_case(Case::InitFailsAll);
    assert_refused(Case::InitFailsAll, &o, "every NVSP version");
    assert_eq!(
        o.obs.lock().unwrap().inits,
        nvsp::version::GUEST_TRY_ORDER,
        "one INIT per version, newest first"
    );
}

#[test]
fn a_host_that_never_answers_times_out_naming_what_it_waited_for() {
    if !have_root() {
        return;
    }
    let o = run_case(Case::Silent);
    let e = o.err();
    assert!(matches!(e, GuestError::Timeout(_)), "{e:?}");
    assert!(e.to_string().contains("INIT_COMPLETE"), "{e}");
    assert!(
        o.took >= Duration::from_secs(9) && o.took < Duration::from_secs(20),
        "gave up after {:?}",
        o.took
    );
}

#[test]
fn hostile_buffer_completions_fail_bring_up() {
    if !have_root() {
        return;
    }
    for case in [
        Case::RecvTwoSections,
        Case::RecvOffset,
        Case::RecvSmallSections,
        Case::RecvTooMany,
        Case::RecvOverflow,
    ] {
        assert_protocol_error(case, &run_case(case), "receive-buffer section table");
    }
    assert_protocol_error(
        Case::RecvTruncated,
        &run_case(Case::RecvTruncated),
        "receive-buffer completion",
    );
    assert_refused(
        Case::RecvRefused,
        &run_case(Case::RecvRefused),
        "receive buffer",
    );
    assert_protocol_error(
        Case::SendSmallSections,
        &run_case(Case::SendSmallSections),
        "send section size 67",
    );
    assert_protocol_error(
        Case::SendZeroSections,
        &run_case(Case::SendZeroSections),
        "send section size 0",
    );
    assert_protocol_error(
        Case::SendTruncated,
        &run_case(Case::SendTruncated),
        "send-buffer completion",
    );
    assert_refused(
        Case::SendRefused,
        &run_case(Case::SendRefused),
        "send buffer",
    );
}

#[test]
fn completions_with_unknown_ids_are_ignored_and_counted() {
    if !have_root() {
        return;
    }
    let o = run_case(Case::UnknownCompletions);
    let up = o.up();
    let forged = o.obs.lock().unwrap().forged;
    assert!(up.alive);
    assert!(forged > 256);
    assert_eq!(
        up.stats["bad_completions"], forged,
        "every made-up completion counted, none taken for a real answer"
    );
}

#[test]
fn bad_transfer_pages_and_rndis_messages_are_completed_with_fail() {
    if !have_root() {
        return;
    }
    for case in [Case::BadTransferPages, Case::BadRndisReplies] {
        let o = run_case(case);
        let up = o.up();
        assert!(up.alive, "{case:?}");
        let obs = o.obs.lock().unwrap();
        assert!(obs.hostile.len() >= 9, "{case:?}");
        for tid in &obs.hostile {
            assert_eq!(
                obs.rx_completions.get(tid),
                Some(&nvsp::status::FAIL),
                "{case:?}: packet {tid:#x} not completed with FAIL; host saw {obs:?}"
            );
        }
        assert_eq!(
            up.stats["rx_bad_messages"],
            obs.hostile.len() as u64,
            "{case:?}"
        );
        // Everything else the host posted was completed with SUCCESS.
        let good = obs
            .rx_completions
            .iter()
            .filter(|(t, _)| !obs.hostile.contains(t))
            .all(|(_, s)| *s == nvsp::status::SUCCESS);
        assert!(good, "{case:?}: {obs:?}");
        if case == Case::BadRndisReplies {
            assert_eq!(
                up.stats["bad_completions"], 2,
                "replies to requests never made"
            );
        }
    }
}

#[test]
fn hostile_rndis_replies_fail_bring_up() {
    if !have_root() {
        return;
    }
    assert_refused(
        Case::InitCFailed,
        &run_case(Case::InitCFailed),
        "RNDIS INITIALIZE",
    );
    assert_protocol_error(
        Case::InitCAlign,
        &run_case(Case::InitCAlign),
        "pkt_align_factor 13",
    );
    assert_protocol_error(
        Case::InitCZeroPackets,
        &run_case(Case::InitCZeroPackets),
        "max_pkt_per_msg 0",
    );
    assert_protocol_error(
        Case::InitCTruncated,
        &run_case(Case::InitCTruncated),
        "INIT_C",
    );
    assert_protocol_error(
        Case::QueryOutside,
        &run_case(Case::QueryOutside),
        "maximum frame size: QUERY_C data outside the message",
    );
    assert_protocol_error(
        Case::QueryOffsetLow,
        &run_case(Case::QueryOffsetLow),
        "maximum frame size: QUERY_C data outside the message",
    );
    assert_protocol_error(
        Case::QueryFailed,
        &run_case(Case::QueryFailed),
        "maximum frame size: the host answered status 0xc0000001",
    );
    assert_protocol_error(
        Case::ShortMac,
        &run_case(Case::ShortMac),
        "MAC address of 5 bytes",
    );
    assert_protocol_error(
        Case::OffloadCapsLying,
        &run_case(Case::OffloadCapsLying),
        "NDIS_OFFLOAD",
    );
    assert_refused(
        Case::FilterRefused,
        &run_case(Case::FilterRefused),
        "RNDIS SET",
    );
}

#[test]
fn garbage_ring_indices_and_lengths_stop_the_guest_with_a_ring_error() {
    if !have_root() {
        return;
    }
    assert_ring_error(
        Case::BadInboundWriteIndex,
        &run_case(Case::BadInboundWriteIndex),
        "write_index",
    );
    assert_ring_error(
        Case::BadOutboundReadIndex,
        &run_case(Case::BadOutboundReadIndex),
        "read_index",
    );
    assert_ring_error(Case::BadLen8, &run_case(Case::BadLen8), "len8");
    assert_ring_error(Case::Oversized, &run_case(Case::Oversized), "copy buffer");
}

#[test]
fn a_host_that_never_reads_completions_cannot_make_the_guest_queue_without_bound() {
    if !have_root() {
        return;
    }
    let o = run_case_with(Case::Flood, |_, obs| {
        // Wait for the flood, then for the guest to hand over what it kept.
        let deadline = Instant::now() + Duration::from_secs(25);
        while !obs.lock().unwrap().flood_done {
            assert!(Instant::now() < deadline, "the flood did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The guest retries completions that did not fit when it next wakes (at least
        // once a second): wait until nothing more comes for longer than that.
        let mut last = usize::MAX;
        loop {
            std::thread::sleep(Duration::from_millis(1500));
            let now = obs.lock().unwrap().rx_completions.len();
            if now == last || Instant::now() > deadline {
                break;
            }
            last = now;
        }
    });
    let up = o.up();
    let obs = o.obs.lock().unwrap();
    let (written, stalled) = obs.flood.expect("flood result");
    assert!(up.alive, "the guest's data path died under the flood");
    assert!(
        !stalled && written == FLOOD_LIMIT,
        "the guest stopped taking packets after {written}: it must keep reading (a host \
         that waits for its reads would deadlock)"
    );
    let completed = obs
        .rx_completions
        .keys()
        .filter(|t| (FLOOD_TID..FLOOD_TID + written).contains(t))
        .count() as u64;
    // What the host can get back once it reads again: a full outbound ring of 32-byte
    // completions, the flood packets still unread in the inbound ring (80 bytes each),
    // and what the guest kept meanwhile: one completion per receive section at most (a
    // host cannot have more outstanding), 64 sections here.
    let ring = 32 * PAGE_SIZE as u64;
    let bound = ring / 32 + ring / 80 + 64;
    assert!(
        completed <= bound,
        "the guest kept {completed} of {written} completions (more than {bound}) for a \
         host that read none: it queues them without bound"
    );
    let dropped = up.stats.get("rx_comp_dropped").copied().unwrap_or(0);
    assert_eq!(
        completed + dropped,
        written,
        "every flood packet either completed or counted as dropped"
    );
    assert_eq!(
        up.stats["rx_bad_messages"], written,
        "pageset 0xBEEF is bad"
    );
}

#[test]
fn a_hostile_data_path_fails_bad_rsc_packets_and_keeps_running() {
    if !have_root() {
        return;
    }
    let o = run_case_with(Case::BadDataPath, |_, obs| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let done = {
                let o = obs.lock().unwrap();
                !o.hostile.is_empty()
                    && o.hostile
                        .iter()
                        .chain(&o.tolerated)
                        .all(|t| o.rx_completions.contains_key(t))
            };
            if done || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let up = o.up();
    assert!(up.alive, "the data path stopped");
    let obs = o.obs.lock().unwrap();
    assert_eq!(obs.hostile.len(), 5);
    for t in &obs.hostile {
        assert_eq!(
            obs.rx_completions.get(t),
            Some(&nvsp::status::FAIL),
            "bad RSC packet {t:#x}; host saw {obs:?}"
        );
    }
    for t in &obs.tolerated {
        assert_eq!(
            obs.rx_completions.get(t),
            Some(&nvsp::status::SUCCESS),
            "odd frame {t:#x}; host saw {obs:?}"
        );
    }
    assert!(up.stats["rx_bad_messages"] >= 5);
}
