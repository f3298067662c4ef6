//! Multi-queue and RSS on the real host (PROTOCOL.md §3.5, §4.11, §4.12, §7.4, §7.5, §9.2).
//!
//! Each test starts a real [`netvsp::Host`] (its VMBus server on a real Unix socket, its
//! NICs, its channel threads) and drives it from hand-made guests, as `hostile_guest.rs`
//! does: the real `vmbus::client::Client`, real rings in a memfd, NVSP and RNDIS written
//! by hand. The guest under test asks for subchannels, opens the offers with their own
//! rings and sets RSS parameters; a second VM on the same switch sends it frames, and
//! the test checks on which queue each lands and with which hash, computing the hash
//! itself with netpkt's bit-by-bit reference Toeplitz (not the host's table-driven one).
//! Every wait is bounded, so a hang is a failure.

mod common;

use std::time::{Duration, Instant};

use common::*;
use netvsp::HostProfile;
use nvsp::NvspMessage;
use nvsp::wire as nw;
use rndis::header;
use rndis::rss::{DEFAULT_KEY, emit_rss_parameters, flags as rss_flags, hash};
use vmbus::client::Event;
use vmbus::guid::NETVSC_CLASS;
use vmbus::packet::PacketType;
use zerocopy::little_endian::U32;

/// Receive buffer: 2 MiB = 1213 sections of 1728 bytes.
const RECV_BYTES: usize = 2 << 20;
/// 16 MiB of guest memory; 64 KiB of scratch for GPA-direct RNDIS messages.
const SIZES: GuestSizes = GuestSizes {
    memory: 16 << 20,
    scratch: 64 * 1024,
    recv_buffer: RECV_BYTES,
};
/// The multi-queue guest's MAC and addresses.
const RX_MAC: [u8; 6] = [0x00, 0x15, 0x5d, 0x43, 0x00, 0x01];
const RX_IP: [u8; 4] = [198, 18, 0, 1];
const RX_IP6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// The sending guest's.
const TX_MAC: [u8; 6] = [0x00, 0x15, 0x5d, 0x43, 0x00, 0x02];
const TX_IP: [u8; 4] = [198, 18, 0, 2];
const TX_IP6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

// ---------------------------------------------------------------------------------------
// The host under test
// ---------------------------------------------------------------------------------------

/// A running host with two VMs on one switch: `rx` (multi-queue) and `tx` (one queue).
impl Lab {
    fn start(profile: HostProfile, queues: u16) -> Lab {
        Lab::launch(
            "multiqueue",
            profile,
            queues,
            &[("rx", RX_MAC), ("tx", TX_MAC)],
            SIZES,
        )
    }

    /// The rx VM's guest: connected, its primary open, nothing sent.
    fn guest(&self) -> Guest {
        self.connect("rx")
    }

    /// The sending VM, brought up (one queue, as the current netvsc).
    fn sender(&self) -> Guest {
        let mut g = self.connect("tx");
        g.bring_up(nvsp::version::V6_1);
        g
    }
}

// ---------------------------------------------------------------------------------------
// A hand-made guest with any number of channels
// ---------------------------------------------------------------------------------------

/// A received frame (one transfer-page packet; RSC pieces joined): the queue it arrived
/// on, its bytes and the hash PPIs of its first piece.
#[derive(Clone, Debug)]
struct Rx {
    queue: usize,
    frame: Vec<u8>,
    hash_value: Option<u32>,
    hash_info: Option<u32>,
    /// RNDIS PACKETs in the transfer-page packet (RSC pieces).
    pieces: usize,
    /// Whether a piece after the first carried a hash PPI.
    hash_in_later_pieces: bool,
}

impl Guest {
    /// Sends an RNDIS control message GPA-direct on the primary and returns the reply
    /// the host posts through the receive buffer (on queue 0).
    fn rndis_request(&mut self, msg: &[u8]) -> Vec<u8> {
        let tid = self.rndis_gpa(msg);
        assert_eq!(
            self.expect_status(tid, "RNDIS control send"),
            nvsp::status::SUCCESS
        );
        // Control replies are posted with channel type 1 (data frames may be interleaved).
        let p = self
            .primary()
            .wait_for(REPLY, |p| {
                p.ty == PacketType::DATA_USING_XFER_PAGES
                    && u32_at(&p.payload, 4) == nw::CHANNEL_TYPE_CONTROL
            })
            .expect("an RNDIS reply on queue 0");
        let msgs = self.read_xfer(0, &p);
        assert_eq!(msgs.len(), 1, "one reply per transfer-page packet");
        msgs.into_iter().next().expect("one")
    }

    /// QUERY `oid` with `data`; returns (status, answer).
    fn query(&mut self, oid: u32, data: &[u8]) -> (u32, Vec<u8>) {
        let req = self.req();
        let reply = self.rndis_request(&info_request(header::QUERY, req, oid, data));
        assert_eq!(u32_at(&reply, 0), header::QUERY_COMPLETE);
        assert_eq!(u32_at(&reply, 8), req);
        let (len, offset) = (u32_at(&reply, 16) as usize, u32_at(&reply, 20) as usize);
        let answer = if len == 0 {
            Vec::new()
        } else {
            reply[8 + offset..8 + offset + len].to_vec()
        };
        (u32_at(&reply, 12), answer)
    }

    /// SET `oid` to `data`; returns the SET_C status.
    fn set(&mut self, oid: u32, data: &[u8]) -> u32 {
        let req = self.req();
        let reply = self.rndis_request(&info_request(header::SET, req, oid, data));
        assert_eq!(u32_at(&reply, 0), header::SET_COMPLETE);
        assert_eq!(u32_at(&reply, 8), req);
        u32_at(&reply, 12)
    }

    /// Sends the 133 request on channel `q`; returns its transaction id.
    fn request_subchannels_on(&mut self, q: usize, op: u32, n: u32) -> u64 {
        self.nvsp_on(
            q,
            &NvspMessage::SubchannelRequest(nw::SubchannelRequest {
                op: U32::new(op),
                num_subchannels: U32::new(n),
            }),
        )
    }

    /// Asks for `n` subchannels on the primary; returns the completion's (status, count).
    fn request_subchannels(&mut self, n: u32) -> (u32, u32) {
        let tid = self.request_subchannels_on(0, nw::SUBCHANNEL_OP_ALLOCATE, n);
        let p = self
            .completion_on(0, tid, REPLY)
            .expect("SUBCHANNEL completion");
        match NvspMessage::parse_completion(&p.payload) {
            Ok(NvspMessage::SubchannelComplete(c)) => (c.status.get(), c.num_subchannels.get()),
            other => panic!("SUBCHANNEL answered with {other:?}"),
        }
    }

    /// The subchannel offers that arrive within `timeout` (relid, sub_channel_index).
    fn offers(&mut self, timeout: Duration) -> Vec<(u32, u16)> {
        let deadline = Instant::now() + timeout;
        let mut offers = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.client.next_event(left).expect("VMBus events") {
                Some(Event::Offer(o)) => {
                    assert_eq!(o.class_id, NETVSC_CLASS, "subchannel class");
                    offers.push((o.relid, o.sub_channel_index));
                }
                Some(Event::Rescind(r)) => panic!("unexpected rescind of {r}"),
                None => return offers,
            }
            if left.is_zero() {
                return offers;
            }
        }
    }

    /// Opens a subchannel offer with its own ring pair.
    fn open_subchannel(&mut self, relid: u32, index: u16) {
        let channel = self
            .client
            .open_channel(relid, RING_PAGES)
            .expect("open subchannel");
        let i = usize::from(index);
        if self.chans.len() <= i {
            self.chans.resize_with(i + 1, || None);
        }
        self.chans[i] = Some(Chan::new(channel));
    }

    /// Closes subchannel `index` (CLOSECHANNEL, then its ring GPADL's teardown).
    fn close_subchannel(&mut self, index: usize) {
        let chan = self.chans[index].take().expect("open");
        let channel = chan.channel;
        self.client
            .close_channel(channel)
            .expect("close subchannel");
    }

    /// Sets RSS parameters (Linux's layout) with `flags`, the Linux hash info and `table`.
    fn set_rss(&mut self, flags: u16, table: &[u32]) -> u32 {
        let mut buf = [0u8; 600];
        let n = emit_rss_parameters(&mut buf, flags, hash::LINUX, table, &DEFAULT_KEY)
            .expect("RSS parameters");
        self.set(rndis::oid::GEN_RECEIVE_SCALE_PARAMETERS, &buf[..n])
    }

    /// Sends frames as RNDIS PACKETs through the send buffer, up to 16 at a time, each
    /// answered SUCCESS.
    fn send_frames(&mut self, frames: &[Vec<u8>]) {
        let msgs: Vec<Vec<u8>> = frames.iter().map(|f| packet_msg(f)).collect();
        self.send_messages(&msgs);
    }

    /// Sends RNDIS messages, one per send section, up to 16 at a time, each answered
    /// SUCCESS.
    fn send_messages(&mut self, msgs: &[Vec<u8>]) {
        for batch in msgs.chunks(SEND_SECTIONS) {
            let mut tids = Vec::new();
            for (i, msg) in batch.iter().enumerate() {
                assert!(self.send.is_some(), "a send buffer");
                tids.push(self.rndis_section(i as u32, msg.len() as u32, msg));
            }
            for tid in tids {
                assert_eq!(self.expect_status(tid, "a send"), nvsp::status::SUCCESS);
            }
        }
    }

    /// Reads frames from every open queue until `n` have arrived (or `timeout`).
    fn receive(&mut self, n: usize, timeout: Duration) -> Vec<Rx> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            let mut idle = true;
            for q in 0..self.chans.len() {
                if self.chans[q].is_none() {
                    continue;
                }
                while let Some(p) = self.chan(q).next(Duration::ZERO) {
                    idle = false;
                    if p.ty != PacketType::DATA_USING_XFER_PAGES {
                        continue;
                    }
                    let msgs = self.read_xfer(q, &p);
                    let mut rx = Rx {
                        queue: q,
                        frame: Vec::new(),
                        hash_value: None,
                        hash_info: None,
                        pieces: msgs.len(),
                        hash_in_later_pieces: false,
                    };
                    for (i, m) in msgs.iter().enumerate() {
                        let pkt = rndis::packet::parse_packet(m).expect("host PACKET");
                        rx.frame.extend_from_slice(pkt.frame);
                        if i == 0 {
                            rx.hash_value = pkt.info.hash_value;
                            rx.hash_info = pkt.info.hash_info;
                        } else {
                            rx.hash_in_later_pieces |=
                                pkt.info.hash_value.is_some() || pkt.info.hash_info.is_some();
                        }
                    }
                    got.push(rx);
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        got
    }
}

/// The rx guest with NVSP 6.1, RNDIS up, `subchannels` granted and open (opened in
/// reverse order, to show the host takes any order), the send table checked.
fn multiqueue_guest(lab: &Lab, subchannels: u32) -> Guest {
    let mut g = lab.guest();
    g.bring_up(nvsp::version::V6_1);
    let (status, granted) = g.request_subchannels(subchannels);
    assert_eq!(status, nvsp::status::SUCCESS);
    assert_eq!(granted, subchannels);
    let mut offers = g.offers(Duration::from_millis(500));
    offers.sort_by_key(|&(_, i)| i);
    let indexes: Vec<u16> = offers.iter().map(|&(_, i)| i).collect();
    assert_eq!(indexes, (1..=subchannels as u16).collect::<Vec<_>>());
    for &(relid, index) in offers.iter().rev() {
        g.open_subchannel(relid, index);
    }
    let table = g
        .primary()
        .wait_for(REPLY, |p| p.ty == PacketType::DATA_INBAND)
        .expect("the send indirection table after the last open");
    check_send_table(&table, subchannels + 1);
    g
}

/// §4.11 decision: 104 bytes, count 16 @4, offset 40 @8, entries `i mod channels` at 40.
fn check_send_table(p: &Pkt, channels: u32) {
    assert_eq!(
        u32_at(&p.payload, 0),
        nvsp::msg_type::SEND_INDIRECTION_TABLE
    );
    assert_eq!(p.payload.len(), 104, "Windows layout: 104 bytes");
    assert_eq!(u32_at(&p.payload, 4), 16, "count");
    assert_eq!(u32_at(&p.payload, 8), 40, "offset");
    for i in 0..16 {
        assert_eq!(
            u32_at(&p.payload, 40 + 4 * i),
            i as u32 % channels,
            "entry {i}"
        );
    }
    let parsed =
        nvsp::parse_send_indirection_table(&p.payload, nvsp::version::V6_1).expect("a valid table");
    assert_eq!(parsed, nvsp::send_table::default_table(channels));
}

// ---------------------------------------------------------------------------------------
// Frames and the test's own hash
// ---------------------------------------------------------------------------------------

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&RX_MAC);
    f.extend_from_slice(&TX_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// IPv4 to the rx guest: `proto` with `l4` bytes, `frag` = flags|offset word.
fn ipv4(proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
    let mut f = eth(0x0800);
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34]);
    f.extend_from_slice(&frag.to_be_bytes());
    f.extend_from_slice(&[64, proto, 0, 0]);
    f.extend_from_slice(&TX_IP);
    f.extend_from_slice(&RX_IP);
    f.extend_from_slice(l4);
    f
}

fn tcp_header(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(36);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&1u32.to_be_bytes());
    h.extend_from_slice(&1u32.to_be_bytes());
    h.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    h.extend_from_slice(b"0123456789abcdef");
    h
}

fn udp_header(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&24u16.to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(b"0123456789abcdef");
    h
}

fn tcp4(sport: u16, dport: u16) -> Vec<u8> {
    ipv4(6, 0x4000, &tcp_header(sport, dport))
}

fn udp4(sport: u16, dport: u16) -> Vec<u8> {
    ipv4(17, 0x4000, &udp_header(sport, dport))
}

fn tcp6(sport: u16, dport: u16) -> Vec<u8> {
    let l4 = tcp_header(sport, dport);
    let mut f = eth(0x86DD);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[6, 64]);
    f.extend_from_slice(&TX_IP6);
    f.extend_from_slice(&RX_IP6);
    f.extend_from_slice(&l4);
    f
}

/// The hash the test expects, from the addresses and ports it put in the frame, with
/// netpkt's bit-by-bit reference Toeplitz and the default key.
fn expected_hash(src: &[u8], dst: &[u8], ports: Option<(u16, u16)>) -> u32 {
    let mut input = src.to_vec();
    input.extend_from_slice(dst);
    if let Some((s, d)) = ports {
        input.extend_from_slice(&s.to_be_bytes());
        input.extend_from_slice(&d.to_be_bytes());
    }
    netpkt::toeplitz::reference_hash(&DEFAULT_KEY, &input)
}

/// The TCP/UDP ports of an IPv4 frame built by [`ipv4`].
fn ports4(f: &[u8]) -> (u16, u16) {
    (
        u16::from_be_bytes([f[34], f[35]]),
        u16::from_be_bytes([f[36], f[37]]),
    )
}

/// Table `i mod 4`, as Linux sets it for 4 channels.
fn linux_table(channels: u32) -> Vec<u32> {
    (0..128).map(|i| i % channels).collect()
}

// ---------------------------------------------------------------------------------------
// Nominal multi-queue
// ---------------------------------------------------------------------------------------

#[test]
fn subchannels_are_granted_offered_opened_in_any_order_and_rss_spreads_tcp_flows() {
    let lab = Lab::start(HostProfile::Azure, 4);
    let mut g = lab.guest();
    g.bring_up(nvsp::version::V6_1);

    // §7.4: {0x88, 2, 18}, flags 0x300, 1 message, 4 queues, 128 entries.
    let q = rndis::rss::RssCapabilities::query();
    let (status, caps) = g.query(
        rndis::oid::GEN_RECEIVE_SCALE_CAPABILITIES,
        zerocopy::IntoBytes::as_bytes(&q),
    );
    assert_eq!(status, rndis::status::SUCCESS);
    assert_eq!(
        caps,
        [0x88, 2, 18, 0, 0, 3, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 128, 0]
    );

    // §4.12: 3 asked, 3 granted, then 3 offers with indexes 1..=3 and the NIC's GUIDs.
    let (status, granted) = g.request_subchannels(3);
    assert_eq!((status, granted), (nvsp::status::SUCCESS, 3));
    let mut offers = g.offers(Duration::from_millis(500));
    offers.sort_by_key(|&(_, i)| i);
    assert_eq!(
        offers.iter().map(|&(_, i)| i).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(lab.stat("subchannels_granted"), 3);
    // Out of order: 2, 3, then 1. No table until the last one is open.
    g.open_subchannel(offers[1].0, 2);
    g.open_subchannel(offers[2].0, 3);
    assert!(
        g.primary()
            .wait_for(Duration::from_millis(200), |p| p.ty
                == PacketType::DATA_INBAND)
            .is_none(),
        "send table before every subchannel was open"
    );
    g.open_subchannel(offers[0].0, 1);
    let table = g
        .primary()
        .wait_for(REPLY, |p| p.ty == PacketType::DATA_INBAND)
        .expect("the send indirection table");
    assert_eq!(table.tid, 0);
    check_send_table(&table, 4);

    // Linux's RSS sequence: disabled first, then enabled, both with table and key.
    assert_eq!(
        g.set_rss(rss_flags::DISABLE_RSS, &linux_table(4)),
        rndis::status::SUCCESS
    );
    assert_eq!(g.set_rss(0, &linux_table(4)), rndis::status::SUCCESS);

    // 256 TCP flows from the other VM, distinct source ports.
    let mut tx = lab.sender();
    let frames: Vec<Vec<u8>> = (0..256u16).map(|i| tcp4(10_000 + i * 7, 80)).collect();
    tx.send_frames(&frames);
    let got = g.receive(frames.len(), REPLY);
    assert_eq!(got.len(), frames.len(), "every frame delivered");
    let mut per_queue = [0usize; 4];
    for rx in &got {
        let want = expected_hash(&TX_IP, &RX_IP, Some(ports4(&rx.frame)));
        assert_eq!(rx.hash_value, Some(want), "NBL_HASH_VALUE");
        assert_eq!(
            rx.hash_info,
            Some(hash::FUNCTION_TOEPLITZ | hash::TCP_IPV4),
            "hash info"
        );
        assert_eq!(
            rx.queue,
            (want & 127) as usize % 4,
            "frame from port {} on the wrong queue",
            ports4(&rx.frame).0
        );
        per_queue[rx.queue] += 1;
    }
    assert!(
        per_queue.iter().all(|&n| n > 0),
        "every queue gets traffic: {per_queue:?}"
    );
    // The host's per-queue counters agree.
    for (q, &n) in per_queue.iter().enumerate() {
        assert_eq!(lab.stat(&format!("rx_queue_{q}_packets")), n as u64);
        assert!(lab.stat(&format!("rx_queue_{q}_bytes")) >= n as u64 * 60);
    }
    assert_eq!(lab.stat("rx_queue_fallback"), 0);
    assert_eq!(lab.stat("rx_rss_hashed"), 256);
    assert!(!lab.has_stat("rx_queue_4_packets"));

    // IPv6 TCP: 4-tuple with the IPv6 type.
    let frames: Vec<Vec<u8>> = (0..32u16).map(|i| tcp6(20_000 + i, 443)).collect();
    tx.send_frames(&frames);
    let got = g.receive(frames.len(), REPLY);
    assert_eq!(got.len(), frames.len());
    for rx in &got {
        let f = &rx.frame;
        let ports = (
            u16::from_be_bytes([f[54], f[55]]),
            u16::from_be_bytes([f[56], f[57]]),
        );
        let want = expected_hash(&TX_IP6, &RX_IP6, Some(ports));
        assert_eq!(rx.hash_value, Some(want));
        assert_eq!(rx.hash_info, Some(hash::FUNCTION_TOEPLITZ | hash::TCP_IPV6));
        assert_eq!(rx.queue, (want & 127) as usize % 4);
    }

    // Control replies stay on queue 0 (the caps query again, answered on the primary).
    let (status, _) = g.query(rndis::oid::GEN_RECEIVE_SCALE_CAPABILITIES, &[]);
    assert_eq!(status, rndis::status::SUCCESS);
}

#[test]
fn udp_and_fragments_land_by_addresses_and_a_short_table_is_repeated() {
    let lab = Lab::start(HostProfile::Azure, 4);
    let mut g = multiqueue_guest(&lab, 3);
    // A 16-entry table, not i mod 4: entries name queues, repeated to 128.
    let table: Vec<u32> = [3, 1, 2, 0, 0, 2, 1, 3, 1, 1, 3, 3, 2, 0, 2, 0].to_vec();
    assert_eq!(g.set_rss(0, &table), rndis::status::SUCCESS);
    let mut tx = lab.sender();

    // UDP: same addresses, different ports → one queue, 2-tuple hash (0x1701 has no UDP
    // type, §9.2).
    let frames: Vec<Vec<u8>> = (0..64u16).map(|i| udp4(5000 + i * 13, 53 + i)).collect();
    tx.send_frames(&frames);
    let got = g.receive(frames.len(), REPLY);
    assert_eq!(got.len(), frames.len());
    let want = expected_hash(&TX_IP, &RX_IP, None);
    let want_queue = table[(want & 127) as usize % 16] as usize;
    for rx in &got {
        assert_eq!(rx.hash_value, Some(want));
        assert_eq!(rx.hash_info, Some(hash::FUNCTION_TOEPLITZ | hash::IPV4));
        assert_eq!(rx.queue, want_queue, "UDP by its addresses");
    }

    // TCP fragments (MF set, and a later piece): 2-tuple too, so the same queue as UDP;
    // unfragmented TCP of the same addresses hashes its ports (table lookup checked).
    let first = ipv4(6, 0x2000, &tcp_header(1234, 80));
    let later = ipv4(6, 0x0003, b"later fragment bytes....");
    let whole = tcp4(1234, 80);
    tx.send_frames(&[first, later, whole]);
    let got = g.receive(3, REPLY);
    assert_eq!(got.len(), 3);
    let want4 = expected_hash(&TX_IP, &RX_IP, Some((1234, 80)));
    for rx in &got {
        // Flags/offset word: 0x4000 (DF) for the whole segment.
        if u16::from_be_bytes([rx.frame[20], rx.frame[21]]) == 0x4000 {
            assert_eq!(rx.hash_value, Some(want4), "whole TCP hashes its ports");
            assert_eq!(rx.queue, table[(want4 & 127) as usize % 16] as usize);
        } else {
            assert_eq!(rx.hash_value, Some(want), "a fragment hashes its addresses");
            assert_eq!(rx.hash_info, Some(hash::FUNCTION_TOEPLITZ | hash::IPV4));
            assert_eq!(rx.queue, want_queue);
        }
    }

    // Non-IP (ARP-like): not hashed, queue 0, no hash PPIs.
    let mut arp = eth(0x0806);
    arp.resize(60, 0);
    tx.send_frames(&[arp]);
    let got = g.receive(1, REPLY);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].queue, got[0].hash_value, got[0].hash_info),
        (0, None, None)
    );
}

#[test]
fn with_rss_disabled_everything_lands_on_queue_0_without_a_hash() {
    let lab = Lab::start(HostProfile::Azure, 4);
    let mut g = multiqueue_guest(&lab, 3);
    let mut tx = lab.sender();
    // Before any RSS parameters: off.
    tx.send_frames(&[tcp4(1, 2), tcp4(3, 4)]);
    // Enabled, then DISABLE_RSS.
    assert_eq!(g.set_rss(0, &linux_table(4)), rndis::status::SUCCESS);
    assert_eq!(
        g.set_rss(rss_flags::DISABLE_RSS, &linux_table(4)),
        rndis::status::SUCCESS
    );
    let frames: Vec<Vec<u8>> = (0..64u16).map(|i| tcp4(30_000 + i, 22)).collect();
    tx.send_frames(&frames);
    // Hash function 0 also means off (§7.5).
    let mut buf = [0u8; 600];
    let n = emit_rss_parameters(&mut buf, 0, 0x1700, &linux_table(4), &DEFAULT_KEY).unwrap();
    assert_eq!(
        g.set(rndis::oid::GEN_RECEIVE_SCALE_PARAMETERS, &buf[..n]),
        rndis::status::SUCCESS
    );
    tx.send_frames(&[udp4(7, 8), tcp6(9, 10)]);
    let got = g.receive(68, REPLY);
    assert_eq!(got.len(), 68);
    for rx in &got {
        assert_eq!(rx.queue, 0);
        assert_eq!((rx.hash_value, rx.hash_info), (None, None));
    }
    assert_eq!(lab.stat("rx_queue_0_packets"), 68);
    for q in 1..4 {
        assert_eq!(lab.stat(&format!("rx_queue_{q}_packets")), 0);
    }
    assert_eq!(lab.stat("rx_rss_hashed"), 0);
}

#[test]
fn a_closed_subchannel_falls_back_to_queue_0_and_closing_the_primary_starts_over() {
    let lab = Lab::start(HostProfile::Azure, 4);
    let mut g = multiqueue_guest(&lab, 3);
    assert_eq!(g.set_rss(0, &linux_table(4)), rndis::status::SUCCESS);
    let mut tx = lab.sender();
    // Flows for every queue, found with the test's own hash.
    let port_for = |q: usize| {
        (1000u16..)
            .find(|&p| (expected_hash(&TX_IP, &RX_IP, Some((p, 80))) & 127) as usize % 4 == q)
            .expect("a port")
    };
    let ports: Vec<u16> = (0..4).map(port_for).collect();
    g.close_subchannel(2);
    let frames: Vec<Vec<u8>> = ports.iter().map(|&p| tcp4(p, 80)).collect();
    tx.send_frames(&frames);
    let mut got = g.receive(4, REPLY);
    got.sort_by_key(|rx| ports4(&rx.frame).0);
    let mut by_port: Vec<(u16, usize)> = got
        .iter()
        .map(|rx| (ports4(&rx.frame).0, rx.queue))
        .collect();
    by_port.sort();
    let mut want: Vec<(u16, usize)> = ports
        .iter()
        .enumerate()
        .map(|(q, &p)| (p, if q == 2 { 0 } else { q }))
        .collect();
    want.sort();
    assert_eq!(by_port, want, "queue 2's flow goes to queue 0");
    // The hash still says what it is.
    assert!(got.iter().all(|rx| rx.hash_value.is_some()));
    assert_eq!(lab.stat("rx_queue_fallback"), 1);

    // Closing the primary: the host rescinds the open subchannels (1 and 3) and the
    // closed one (2); the NIC's state goes, RSS with it.
    let primary = g.chans[0].take().expect("primary");
    let others: Vec<Chan> = g.chans.drain(..).flatten().collect();
    let channel = primary.channel;
    g.client.close_channel(channel).expect("close primary");
    let mut rescinded = Vec::new();
    let deadline = Instant::now() + REPLY;
    while rescinded.len() < 3 && Instant::now() < deadline {
        if let Some(Event::Rescind(r)) = g.client.next_event(Duration::from_millis(100)).unwrap() {
            rescinded.push(r);
        }
    }
    assert_eq!(rescinded.len(), 3, "all three subchannels rescinded");
    // The guest side of the rescinded subchannels goes away with RELID_RELEASED (the
    // host frees their ring GPADLs), as Linux does for channels it had already closed.
    for c in others {
        let channel = c.channel;
        g.memory.free(channel.region);
    }
    for r in rescinded {
        g.client.release_relid(r).expect("release");
    }
    assert!(!lab.nic().guest_ready());
    assert_eq!(lab.stat("subchannels_granted"), 0);

    // A new session on the same connection: fresh offers, RSS off until set again.
    let channel = g
        .client
        .open_channel(g.relid, RING_PAGES)
        .expect("reopen primary");
    g.chans = vec![Some(Chan::new(channel))];
    g.bring_up(nvsp::version::V6_1);
    let (status, granted) = g.request_subchannels(3);
    assert_eq!((status, granted), (nvsp::status::SUCCESS, 3));
    let offers = g.offers(Duration::from_millis(500));
    assert_eq!(
        offers.len(),
        3,
        "new offers for the new session: {offers:?}"
    );
    for &(relid, index) in &offers {
        g.open_subchannel(relid, index);
    }
    let table = g
        .primary()
        .wait_for(REPLY, |p| p.ty == PacketType::DATA_INBAND)
        .expect("send table");
    check_send_table(&table, 4);
    tx.send_frames(&[tcp4(ports[3], 80)]);
    let got = g.receive(1, REPLY);
    assert_eq!(
        (got[0].queue, got[0].hash_value),
        (0, None),
        "RSS off in a new session"
    );
}

#[test]
fn a_guest_that_never_asks_stays_single_queue() {
    // What the current netvsc does: no 133, no RSS. Frames on queue 0, no hash PPIs,
    // counters for queue 0 only.
    let lab = Lab::start(HostProfile::Azure, 8);
    let mut g = lab.guest();
    g.bring_up(nvsp::version::V6_1);
    let mut tx = lab.sender();
    let frames: Vec<Vec<u8>> = (0..32u16).map(|i| tcp4(40_000 + i, 80)).collect();
    tx.send_frames(&frames);
    let got = g.receive(32, REPLY);
    assert_eq!(got.len(), 32);
    assert!(
        got.iter()
            .all(|rx| rx.queue == 0 && rx.hash_value.is_none())
    );
    assert_eq!(lab.stat("rx_queue_0_packets"), 32);
    assert!(!lab.has_stat("rx_queue_1_packets"));
    assert!(g.offers(Duration::from_millis(100)).is_empty());

    // A host configured with one queue grants none, offers none, sends no table.
    let lab = Lab::start(HostProfile::Azure, 1);
    let mut g = lab.guest();
    g.bring_up(nvsp::version::V6_1);
    let (_, caps) = g.query(rndis::oid::GEN_RECEIVE_SCALE_CAPABILITIES, &[]);
    assert_eq!(u32_at(&caps, 12), 1, "one receive queue");
    assert_eq!(g.request_subchannels(7), (nvsp::status::SUCCESS, 0));
    assert!(g.offers(Duration::from_millis(200)).is_empty());
    assert!(
        g.primary()
            .wait_for(Duration::from_millis(100), |p| p.ty
                == PacketType::DATA_INBAND)
            .is_none()
    );
}

#[test]
fn lso_sends_reach_their_flows_queue_whole_as_rsc_or_segmented() {
    let lab = Lab::start(HostProfile::Azure, 4);
    let mut g = multiqueue_guest(&lab, 3);
    assert_eq!(g.set_rss(0, &linux_table(4)), rndis::status::SUCCESS);
    let mut tx = lab.sender();
    // An LSO super-frame in the guest's form (IPv4 total length 0), 3000 bytes of TCP.
    let lso_frame = |sport: u16| {
        let mut l4 = tcp_header(sport, 80);
        l4.truncate(20);
        l4.extend((0..3000u32).map(|i| i as u8));
        let mut f = ipv4(6, 0x4000, &l4);
        f[16..18].copy_from_slice(&[0, 0]);
        f
    };
    let ports: Vec<u16> = (0..8).map(|i| 6000 + i * 101).collect();

    // RSC off: each super-frame is segmented; every segment carries the flow's hash and
    // lands on its queue.
    let msgs: Vec<Vec<u8>> = ports
        .iter()
        .map(|&p| lso_packet_msg(&lso_frame(p), 1448))
        .collect();
    tx.send_messages(&msgs);
    let got = g.receive(3 * ports.len(), REPLY);
    assert_eq!(got.len(), 3 * ports.len(), "3 segments per super-frame");
    for rx in &got {
        let want = expected_hash(&TX_IP, &RX_IP, Some(ports4(&rx.frame)));
        assert_eq!(rx.hash_value, Some(want));
        assert_eq!(rx.queue, (want & 127) as usize % 4);
        assert_eq!(rx.pieces, 1);
    }

    // RSC on: each super-frame goes whole, in pieces; the first piece carries the hash.
    let mut params = [0u8; 28];
    params[..4].copy_from_slice(&[0x80, 3, 28, 0]);
    params[22] = 2;
    params[23] = 2;
    assert_eq!(
        g.set(rndis::oid::TCP_OFFLOAD_PARAMETERS, &params),
        rndis::status::SUCCESS
    );
    tx.send_messages(&msgs);
    let got = g.receive(ports.len(), REPLY);
    assert_eq!(got.len(), ports.len(), "one RSC packet per super-frame");
    for rx in &got {
        assert!(rx.pieces >= 2, "RSC pieces: {}", rx.pieces);
        assert_eq!(rx.frame.len(), 14 + 20 + 20 + 3000);
        let want = expected_hash(&TX_IP, &RX_IP, Some(ports4(&rx.frame)));
        assert_eq!(rx.hash_value, Some(want));
        assert_eq!(rx.hash_info, Some(hash::FUNCTION_TOEPLITZ | hash::TCP_IPV4));
        assert!(!rx.hash_in_later_pieces, "hash only on the first piece");
        assert_eq!(rx.queue, (want & 127) as usize % 4);
    }
    assert_eq!(lab.stat("rx_queue_fallback"), 0);
}

// ---------------------------------------------------------------------------------------
// Hardening (§14)
// ---------------------------------------------------------------------------------------

#[test]
fn subchannel_requests_that_break_the_rules_are_refused_and_counted() {
    let lab = Lab::start(HostProfile::Azure, 4);

    // Before INIT: refused (no SUCCESS), counted, nothing offered.
    let mut g = lab.guest();
    let before = lab.errors();
    let tid = g.request_subchannels_on(0, nw::SUBCHANNEL_OP_ALLOCATE, 3);
    g.sync();
    if let Some(p) = g.completion_on(0, tid, Duration::ZERO) {
        assert_ne!(nvsp_status(&p.payload), nvsp::status::SUCCESS);
    }
    assert_eq!(lab.errors() - before, 1);
    assert!(g.offers(Duration::from_millis(200)).is_empty());

    g.bring_up(nvsp::version::V6_1);
    // n = 0 and an unknown operation: FAIL, counted, nothing offered.
    let before = lab.errors();
    assert_eq!(g.request_subchannels(0), (nvsp::status::FAIL, 0));
    let tid = g.request_subchannels_on(0, 2, 3);
    let p = g.completion_on(0, tid, REPLY).expect("completion");
    assert_eq!(nvsp_status(&p.payload), nvsp::status::FAIL);
    assert_eq!(lab.errors() - before, 2);
    assert!(g.offers(Duration::from_millis(200)).is_empty());

    // A huge n: clamped to queues − 1, exactly that many offers.
    assert_eq!(g.request_subchannels(u32::MAX), (nvsp::status::SUCCESS, 3));
    let mut offers = g.offers(Duration::from_millis(500));
    offers.sort_by_key(|&(_, i)| i);
    assert_eq!(
        offers.iter().map(|&(_, i)| i).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // Twice: FAIL, counted, no new offers.
    let before = lab.errors();
    assert_eq!(g.request_subchannels(3), (nvsp::status::FAIL, 0));
    assert_eq!(lab.errors() - before, 1);
    assert!(g.offers(Duration::from_millis(200)).is_empty());
    for &(relid, index) in &offers {
        g.open_subchannel(relid, index);
    }
    g.primary()
        .wait_for(REPLY, |p| p.ty == PacketType::DATA_INBAND)
        .expect("send table");
    // On a subchannel: control is for the primary only; counted, nothing offered.
    let before = lab.errors();
    let tid = g.request_subchannels_on(2, nw::SUBCHANNEL_OP_ALLOCATE, 3);
    // The subchannel has its own thread: the primary is no barrier for it.
    lab.wait_until("the refusal counted", |l| l.errors() > before);
    if let Some(p) = g.completion_on(2, tid, Duration::from_millis(100)) {
        assert_ne!(nvsp_status(&p.payload), nvsp::status::SUCCESS);
    }
    assert_eq!(lab.errors() - before, 1);
    assert!(g.offers(Duration::from_millis(200)).is_empty());
    // The NIC still works: RSS and traffic on all queues.
    assert_eq!(g.set_rss(0, &linux_table(4)), rndis::status::SUCCESS);
    let mut tx = lab.sender();
    let frames: Vec<Vec<u8>> = (0..64u16).map(|i| tcp4(50_000 + i, 80)).collect();
    tx.send_frames(&frames);
    let got = g.receive(64, REPLY);
    assert_eq!(got.len(), 64);

    // Below NVSP 5 (a ws2012r2-era guest at NVSP 4): no subchannels, no RSS.
    let lab = Lab::start(HostProfile::Azure, 4);
    let mut g = lab.guest();
    g.bring_up(nvsp::version::V4);
    let before = lab.errors();
    assert_eq!(g.request_subchannels(3), (nvsp::status::FAIL, 0));
    assert_eq!(lab.errors() - before, 1);
    assert!(g.offers(Duration::from_millis(200)).is_empty());
    let (status, caps) = g.query(rndis::oid::GEN_RECEIVE_SCALE_CAPABILITIES, &[]);
    assert_eq!((status, caps.len()), (rndis::status::NOT_SUPPORTED, 0));
    assert_eq!(g.set_rss(0, &linux_table(1)), rndis::status::NOT_SUPPORTED);
}

#[test]
fn rss_parameters_that_break_the_rules_are_refused_and_change_nothing() {
    let lab = Lab::start(HostProfile::Azure, 4);
    let mut g = multiqueue_guest(&lab, 3);
    let good = {
        let mut buf = vec![0u8; 600];
        let n = emit_rss_parameters(&mut buf, 0, hash::LINUX, &linux_table(4), &DEFAULT_KEY)
            .expect("params");
        buf.truncate(n);
        buf
    };
    assert_eq!(good.len(), 592);
    let patch = |at: usize, bytes: &[u8]| {
        let mut p = good.clone();
        p[at..at + bytes.len()].copy_from_slice(bytes);
        p
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (good[..39].to_vec(), "shorter than the fixed part"),
        (patch(12, &0u16.to_le_bytes()), "table size 0"),
        (
            patch(12, &6u16.to_le_bytes()),
            "table size not a multiple of 4",
        ),
        (patch(12, &516u16.to_le_bytes()), "table size above 512"),
        (patch(20, &32u16.to_le_bytes()), "key size 32"),
        (
            patch(16, &u32::MAX.to_le_bytes()),
            "table offset past the end",
        ),
        (patch(24, &560u32.to_le_bytes()), "key runs past the end"),
        (good[..591].to_vec(), "key cut short"),
        (
            patch(40 + 4 * 9, &4u32.to_le_bytes()),
            "entry 4 with 4 queues",
        ),
        (
            patch(40 + 4 * 127, &u32::MAX.to_le_bytes()),
            "entry 0xFFFFFFFF",
        ),
        (patch(8, &0x1702u32.to_le_bytes()), "hash function 2"),
    ];
    let before = lab.stat("rss_parameters_rejected");
    for (data, what) in &cases {
        assert_eq!(
            g.set(rndis::oid::GEN_RECEIVE_SCALE_PARAMETERS, data),
            rndis::status::INVALID_DATA,
            "{what}"
        );
    }
    assert_eq!(
        lab.stat("rss_parameters_rejected") - before,
        cases.len() as u64
    );
    // None of them turned RSS on.
    let mut tx = lab.sender();
    tx.send_frames(&[tcp4(1, 2)]);
    let got = g.receive(1, REPLY);
    assert_eq!((got[0].queue, got[0].hash_value), (0, None));
    // The good one does; a bad one after it leaves it in force.
    assert_eq!(
        g.set(rndis::oid::GEN_RECEIVE_SCALE_PARAMETERS, &good),
        rndis::status::SUCCESS
    );
    assert_eq!(
        g.set(rndis::oid::GEN_RECEIVE_SCALE_PARAMETERS, &cases[8].0),
        rndis::status::INVALID_DATA
    );
    tx.send_frames(&[tcp4(1, 2)]);
    let got = g.receive(1, REPLY);
    let want = expected_hash(&TX_IP, &RX_IP, Some((1, 2)));
    assert_eq!(got[0].hash_value, Some(want));
    assert_eq!(got[0].queue, (want & 127) as usize % 4);
    // A caps query with a buffer too small for the 18 bytes.
    let (status, caps) = g.query(
        rndis::oid::GEN_RECEIVE_SCALE_CAPABILITIES,
        &[0x88, 2, 18, 0],
    );
    assert_eq!((status, caps.len()), (rndis::status::BUFFER_OVERFLOW, 0));
    // Nothing counted as a protocol error: these are well-formed requests refused.
    assert_eq!(lab.errors(), 0);
}

// ---------------------------------------------------------------------------------------
// Wire helpers
// ---------------------------------------------------------------------------------------

/// A PACKET with an LSOv2 PPI (MSS, TCP header at 34, IPv4), then the frame.
fn lso_packet_msg(frame: &[u8], mss: u32) -> Vec<u8> {
    packet_with_ppis(&[lso_ppi(mss, 34, false)], frame)
}
