//! A hostile guest against the real host (PROTOCOL.md §14, "host, on guest input").
//!
//! Each test starts a real [`netvsp::Host`] (its VMBus server on a real Unix socket, its
//! NIC, its channel threads) and talks to it as a guest that breaks the rules: it connects
//! with the real `vmbus::client::Client`, opens the NIC's channel over real rings in a
//! memfd, and then writes hand-made packets into the guest-to-host ring. What the host
//! answers is read back from the host-to-guest ring; its counters come from `Nic::stats()`.
//!
//! The rule under test: every bad input gets a typed answer (a FAIL completion) or is
//! dropped and counted; nothing panics, nothing hangs, nothing grows without bound; a
//! corrupt ring stops only that channel. Every test ends by checking that the host still
//! works for a well-behaved guest. Every wait is bounded, so a hang is a failure.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use netvsp::HostProfile;
use nvsp::NvspMessage;
use nvsp::wire as nw;
use rndis::header;
use vmbus::memory::PAGE_SIZE;
use vmbus::packet::{COMPLETION_REQUESTED, PacketType};
use vmbus::ring::WriteError;
use zerocopy::little_endian::{U16, U32, U64};

/// Receive buffer: 256 KiB = 151 sections of 1728 bytes.
const RECV_BYTES: usize = 256 * 1024;
/// 8 MiB of guest memory; 256 KiB of scratch for GPA-direct RNDIS messages (the largest
/// send).
const SIZES: GuestSizes = GuestSizes {
    memory: 8 << 20,
    scratch: 256 * 1024,
    recv_buffer: RECV_BYTES,
};
const MAC: [u8; 6] = [0x00, 0x15, 0x5d, 0x42, 0x00, 0x01];
const VICTIM_MAC: [u8; 6] = [0x00, 0x15, 0x5d, 0x42, 0x00, 0x02];

// ---------------------------------------------------------------------------------------
// The host under test
// ---------------------------------------------------------------------------------------

/// A running host with one VM (`vm`, the hostile guest's) and maybe a second one
/// (`victim`, on the same switch).
impl Lab {
    fn start(profile: HostProfile) -> Lab {
        Self::start_with(profile, false)
    }

    fn start_with(profile: HostProfile, victim: bool) -> Lab {
        let mut vms = vec![("vm", MAC)];
        if victim {
            vms.push(("victim", VICTIM_MAC));
        }
        Lab::launch(
            "hostile-guest",
            profile,
            netvsp::queues::DEFAULT_QUEUES,
            &vms,
            SIZES,
        )
    }

    /// The hostile guest: connected, its channel open, nothing sent.
    fn guest(&self) -> Guest {
        self.connect("vm")
    }

    /// A fresh, well-behaved guest brings the NIC all the way up and sends a frame.
    fn assert_a_new_guest_works(&self) {
        let mut g = self.guest();
        g.bring_up(nvsp::version::V6_1);
        assert!(self.nic().guest_ready(), "NIC not ready after bring-up");
        g.assert_healthy(self);
    }
}

// ---------------------------------------------------------------------------------------
// The hostile guest: a [`Guest`] that writes whatever it likes into its one ring
// ---------------------------------------------------------------------------------------

impl Guest {
    /// Byte offset of the outbound ring's data area in the ring GPADL.
    const OUT_DATA: usize = PAGE_SIZE;

    fn memory_pages(&self) -> u64 {
        (self.memory.size() / PAGE_SIZE) as u64
    }

    /// A frame in a send section: SUCCESS and counted by the host.
    fn send_frame(&mut self, lab: &Lab, section: u32) {
        let before = lab.stat("tx_packets");
        let msg = packet_msg(&frame());
        let tid = self.rndis_section(section, msg.len() as u32, &msg);
        assert_eq!(
            self.expect_status(tid, "a well-formed frame"),
            nvsp::status::SUCCESS
        );
        assert_eq!(lab.stat("tx_packets"), before + 1, "frame not counted");
    }

    /// The host still answers NVSP, RNDIS control (a MAC query) and data.
    fn assert_healthy(&mut self, lab: &Lab) {
        self.sync();
        let req = self.req();
        let msg = info_request(
            header::QUERY,
            req,
            rndis::oid::OID_802_3_PERMANENT_ADDRESS,
            &[0; 6],
        );
        let tid = self.rndis_gpa(&msg);
        assert_eq!(self.expect_status(tid, "QUERY send"), nvsp::status::SUCCESS);
        let reply = self.next_rndis().expect("QUERY_C");
        assert_eq!(u32_at(&reply, 0), header::QUERY_COMPLETE);
        assert_eq!(u32_at(&reply, 8), req);
        assert_eq!(u32_at(&reply, 12), rndis::status::SUCCESS);
        assert_eq!(&reply[24..30], &MAC, "QUERY_C MAC");
        self.send_frame(lab, 3);
    }

    /// Pokes a u32 into the ring memory (offset from the start of the ring GPADL).
    fn poke(&self, offset: usize, value: u32) {
        self.primary_channel()
            .region
            .write(offset, &value.to_le_bytes());
    }

    fn peek(&self, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        self.primary_channel().region.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn out_data_size(&mut self) -> u32 {
        self.primary().rings.writer.data_size() as u32
    }

    /// Byte offset of the inbound ring's control page in the ring GPADL.
    fn in_control(&self) -> usize {
        self.primary_channel().inbound_offset_pages as usize * PAGE_SIZE
    }
}

fn keepalive(req: u32) -> Vec<u8> {
    rndis_msg(header::KEEPALIVE, &le(&[req]))
}

/// A 60-byte frame to a MAC no port owns (the switch drops it after the NIC counted it).
fn frame() -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    f[6..12].copy_from_slice(&MAC);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f
}

/// A GPA-direct type header from raw ranges: (byte_count, byte_offset, pfns).
fn gpa_header(range_cnt: u32, ranges: &[(u32, u32, &[u64])]) -> Vec<u8> {
    let mut h = le(&[0xFFFF_FFFF, range_cnt]); // reserved: garbage is allowed
    for (count, offset, pfns) in ranges {
        h.extend_from_slice(&le(&[*count, *offset]));
        for p in *pfns {
            h.extend_from_slice(&p.to_le_bytes());
        }
    }
    h
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn nvsp_and_rndis_before_init_are_refused_and_counted() {
    let lab = Lab::start(HostProfile::Azure);
    let mut g = lab.guest();
    let before = lab.errors();
    let quiet = [
        g.recv_buffer_request(0x1234, nw::RECEIVE_BUFFER_ID),
        g.send_buffer_request(0x1234, nw::SEND_BUFFER_ID),
        g.nvsp(&NvspMessage::SendNdisVersion(
            nw::SendNdisVersion::for_nvsp(nvsp::version::V6_1),
        )),
        g.nvsp(&NvspMessage::SendNdisConfig(nw::SendNdisConfig {
            mtu: U32::new(1514),
            reserved: U32::ZERO,
            capability: U64::ZERO,
        })),
        g.nvsp(&NvspMessage::RevokeReceiveBuffer(nw::RevokeBuffer {
            id: U16::new(nw::RECEIVE_BUFFER_ID),
        })),
        g.nvsp(&NvspMessage::SubchannelRequest(nw::SubchannelRequest {
            op: U32::new(nw::SUBCHANNEL_OP_ALLOCATE),
            num_subchannels: U32::new(7),
        })),
    ];
    // Sends before INIT: answered FAIL (there is no send buffer, no RNDIS device yet).
    let msg = packet_msg(&frame());
    let in_section = g.rndis_section(0, msg.len() as u32, &msg);
    let initialize = g.rndis_gpa(&rndis_msg(header::INITIALIZE, &initialize_body(1)));
    let packet = g.rndis_gpa(&packet_msg(&frame()));
    g.sync();
    for tid in quiet {
        if let Some(p) = g.arrived(tid) {
            assert_ne!(nvsp_status(&p.payload), nvsp::status::SUCCESS, "tid {tid}");
        }
    }
    g.expect_fail(in_section, "107 with a section before INIT");
    g.expect_fail(initialize, "RNDIS INITIALIZE before INIT");
    g.expect_fail(packet, "RNDIS PACKET before INIT");
    assert_eq!(
        lab.errors() - before,
        9,
        "each refused message counted once"
    );
    assert_eq!(lab.stat("tx_packets"), 0);
    assert!(!lab.nic().guest_ready());

    // The same connection can still do everything right.
    g.bring_up(nvsp::version::V6_1);
    assert!(lab.nic().guest_ready());
    g.assert_healthy(&lab);
}

#[test]
fn init_with_unknown_or_too_new_versions_is_refused() {
    let lab = Lab::start(HostProfile::Azure);
    let mut g = lab.guest();
    let before = lab.errors();
    for v in [0x0007_0000, 0x0006_0002, 0xFFFF_FFFF, 0, 3, 0x0005_0001] {
        let s = g.init(v);
        assert_ne!(s, nvsp::status::SUCCESS, "INIT {v:#x} accepted");
    }
    // min_ver decides (PROTOCOL.md §4.4): a bad min with a good max is refused.
    let tid = g.nvsp(&NvspMessage::Init(nw::Init {
        min_ver: U32::new(0x0009_0000),
        max_ver: U32::new(nvsp::version::V6_1),
    }));
    assert_ne!(g.expect_status(tid, "INIT 9.0..6.1"), nvsp::status::SUCCESS);
    // Refused INITs leave the NIC uninitialised: what needs INIT is still refused.
    let tid = g.recv_buffer_request(0x1234, nw::RECEIVE_BUFFER_ID);
    g.sync();
    if let Some(p) = g.arrived(tid) {
        assert_ne!(nvsp_status(&p.payload), nvsp::status::SUCCESS);
    }
    assert_eq!(lab.errors() - before, 1);
    g.bring_up(nvsp::version::V6_1);
    g.assert_healthy(&lab);

    // A Windows Server 2012 R2 host stops at NVSP 5: 6 and 6.1 are too new for it.
    let old = Lab::start(HostProfile::Ws2012R2);
    let mut g = old.guest();
    assert_ne!(g.init(nvsp::version::V6_1), nvsp::status::SUCCESS);
    assert_ne!(g.init(nvsp::version::V6), nvsp::status::SUCCESS);
    g.bring_up(nvsp::version::V5);
    assert!(old.nic().guest_ready());
    g.assert_healthy(&old);
}

#[test]
fn truncated_and_unexpected_nvsp_messages_are_counted_never_accepted() {
    let lab = Lab::start(HostProfile::Azure);
    let mut g = lab.guest();
    assert_eq!(g.init(nvsp::version::V6_1), nvsp::status::SUCCESS);
    let before = lab.errors();
    let inband = PacketType::DATA_INBAND;
    // Payloads are zero-padded to 8 bytes by the ring, so lengths are chosen to stay
    // short of each type's layout after padding.
    let mut bad = vec![
        g.send(inband, &[], &[]), // no header at all
        g.send(inband, &[], &le(&[nvsp::msg_type::INIT, 6])[..8]), // INIT needs 12
        g.send(inband, &[], &le(&[nvsp::msg_type::SEND_RECV_BUF, 5])), // needs 10
        g.send(inband, &[], &le(&[nvsp::msg_type::SEND_RNDIS_PKT, 0])), // needs 16
        g.send(
            inband,
            &[],
            &le(&[nvsp::msg_type::SEND_NDIS_CONFIG, 1514, 0, 0]),
        ), // needs 20
        g.send(inband, &[], &[101, 0, 0]), // 3 bytes of a type
        g.send(
            PacketType::DATA_USING_GPA_DIRECT,
            &gpa_header(0, &[]),
            &le(&[nvsp::msg_type::SEND_RNDIS_PKT, 1]),
        ),
    ];
    // Types a guest never sends, or does not exist.
    for t in [
        9999,
        nvsp::msg_type::PD_API,
        nvsp::msg_type::PD_POST_BATCH,
        nvsp::msg_type::INIT_COMPLETE,
        nvsp::msg_type::SEND_RECV_BUF_COMPLETE,
        nvsp::msg_type::SEND_SEND_BUF_COMPLETE,
        nvsp::msg_type::SEND_RNDIS_PKT_COMPLETE,
        nvsp::msg_type::SEND_VF_ASSOCIATION,
        nvsp::msg_type::SEND_INDIRECTION_TABLE,
        nvsp::msg_type::OID_QUERY_EX_COMPLETE,
    ] {
        let mut m = le(&[t]);
        m.resize(nw::V6_1_MESSAGE_SIZE, 0);
        bad.push(g.send(inband, &[], &m));
    }
    // A control message in a GPA-direct packet is not control.
    let init = nvsp_bytes(&NvspMessage::Init(nw::Init::exact(nvsp::version::V6_1)));
    bad.push(g.send(
        PacketType::DATA_USING_GPA_DIRECT,
        &gpa_header(0, &[]),
        &init,
    ));
    g.sync();
    for tid in &bad {
        if let Some(p) = g.arrived(*tid) {
            assert_ne!(nvsp_status(&p.payload), nvsp::status::SUCCESS, "tid {tid}");
        }
    }
    assert_eq!(lab.errors() - before, bad.len() as u64);
    g.bring_up(nvsp::version::V6_1);
    g.assert_healthy(&lab);
}

#[test]
fn buffer_requests_with_bad_gpadls_ids_or_repeats_fail() {
    let lab = Lab::start(HostProfile::Azure);
    let mut g = lab.guest();
    assert_eq!(g.init(nvsp::version::V6_1), nvsp::status::SUCCESS);
    let before = lab.errors();
    let (recv, recv_gpadl) = g.gpadl(RECV_BYTES);
    // NVSP ≥ 2: the receive buffer needs SEND_NDIS_CONFIG first (its MTU sizes sections).
    let t = g.recv_buffer_request(recv_gpadl, nw::RECEIVE_BUFFER_ID);
    g.expect_fail(t, "SEND_RECV_BUF before SEND_NDIS_CONFIG");
    g.ndis_config_and_version(nvsp::version::V6_1);
    let t = g.recv_buffer_request(0xDEAD, nw::RECEIVE_BUFFER_ID);
    g.expect_fail(t, "SEND_RECV_BUF with an unknown GPADL");
    let t = g.recv_buffer_request(0, nw::RECEIVE_BUFFER_ID);
    g.expect_fail(t, "SEND_RECV_BUF with GPADL 0");
    let t = g.recv_buffer_request(
        g.primary_channel().gpadl ^ 0x8000_0000,
        nw::RECEIVE_BUFFER_ID,
    );
    g.expect_fail(t, "SEND_RECV_BUF with a mangled ring GPADL");
    let t = g.recv_buffer_request(recv_gpadl, 0x1234);
    g.expect_fail(t, "SEND_RECV_BUF with id 0x1234");
    let (_tiny, tiny_gpadl) = g.gpadl(4 * PAGE_SIZE);
    let t = g.recv_buffer_request(tiny_gpadl, nw::RECEIVE_BUFFER_ID);
    g.expect_fail(t, "SEND_RECV_BUF of 9 sections (≤ the 16 reserved)");
    let t = g.recv_buffer_request(recv_gpadl, nw::RECEIVE_BUFFER_ID);
    assert_eq!(
        g.expect_status(t, "good SEND_RECV_BUF"),
        nvsp::status::SUCCESS
    );
    g.recv = Some((recv, recv_gpadl));
    let (_other, other_gpadl) = g.gpadl(RECV_BYTES);
    let t = g.recv_buffer_request(other_gpadl, nw::RECEIVE_BUFFER_ID);
    g.expect_fail(t, "a second SEND_RECV_BUF");
    let t = g.recv_buffer_request(recv_gpadl, nw::RECEIVE_BUFFER_ID);
    g.expect_fail(t, "the same SEND_RECV_BUF again");

    let (send, send_gpadl) = g.gpadl(SEND_SECTIONS * SECTION);
    let t = g.send_buffer_request(0xDEAD, nw::SEND_BUFFER_ID);
    g.expect_fail(t, "SEND_SEND_BUF with an unknown GPADL");
    let t = g.send_buffer_request(send_gpadl, 5);
    g.expect_fail(t, "SEND_SEND_BUF with id 5");
    let t = g.send_buffer_request(send_gpadl, nw::SEND_BUFFER_ID);
    assert_eq!(
        g.expect_status(t, "good SEND_SEND_BUF"),
        nvsp::status::SUCCESS
    );
    g.send = Some((send, send_gpadl));
    let t = g.send_buffer_request(other_gpadl, nw::SEND_BUFFER_ID);
    g.expect_fail(t, "a second SEND_SEND_BUF");
    assert_eq!(lab.errors() - before, 11);

    // The buffers that were accepted work.
    g.rndis_initialize();
    g.set_filter();
    assert!(lab.nic().guest_ready());
    assert_eq!(lab.nic().receive_sections().2, (RECV_BYTES / 1728) as u32);
    g.assert_healthy(&lab);
}

#[test]
fn sends_naming_bad_send_sections_fail_and_are_counted() {
    let lab = Lab::start(HostProfile::Azure);
    let mut g = lab.guest();
    g.bring_up(nvsp::version::V6_1);
    let before = lab.errors();
    let tx_before = lab.stat("tx_packets");
    let msg = packet_msg(&frame());
    let len = msg.len() as u32;
    let cases: [(u32, u32, &str); 7] = [
        (SEND_SECTIONS as u32, len, "section index = count"),
        (0xFFFF_FFFE, len, "section index 0xFFFFFFFE"),
        (0, nw::SEND_SECTION_SIZE + 1, "section_size 6145"),
        (0, 0xFFFF_FFFF, "section_size 0xFFFFFFFF"),
        (0, 0, "section_size 0"),
        (0, 7, "section_size 7 (no room for a header)"),
        (1, nw::SEND_SECTION_SIZE, "a section of zeros (msg_len 0)"),
    ];
    for (index, size, what) in cases {
        let data = if index == 1 {
            vec![0; SECTION]
        } else {
            msg.clone()
        };
        let t = g.rndis_section(index, size, &data);
        g.expect_fail(t, what);
    }
    // In-band 107 that names no section carries nothing.
    let nvsp = rndis_pkt(nw::CHANNEL_TYPE_DATA, nw::NO_SECTION, 0);
    let t = g.send(PacketType::DATA_INBAND, &[], &nvsp);
    g.expect_fail(t, "in-band 107 without a section");
    assert_eq!(lab.errors() - before, cases.len() as u64 + 1);
    assert_eq!(lab.stat("tx_packets"), tx_before, "nothing was forwarded");
    // The last section works.
    g.send_frame(&lab, SEND_SECTIONS as u32 - 1);
    g.assert_healthy(&lab);
}

#[test]
fn gpa_direct_ranges_are_validated() {
    let lab = Lab::start(HostProfile::Azure);
    let mut g = lab.guest();
    g.bring_up(nvsp::version::V6_1);
    let before = lab.errors();
    let pages = g.memory_pages();
    let scratch = g.scratch.gpa() / PAGE_SIZE as u64;
    // A good KEEPALIVE sits at the start of the scratch page for ranges that need data.
    g.scratch.write(0, &keepalive(77));
    let one = [scratch];
    let two = [scratch, scratch + 1];
    let outside = [pages + 10];
    let at_end = [pages - 1, pages];
    let huge = [u64::MAX];
    let top = [u64::MAX / PAGE_SIZE as u64, 0];
    let twelve = [scratch; 12];
    let max_ranges: Vec<(u32, u32, &[u64])> = (0..33).map(|_| (12u32, 0u32, &one[..])).collect();
    let big_ranges: Vec<(u32, u32, &[u64])> = (0..32)
        .map(|_| (12 * PAGE_SIZE as u32, 0u32, &twelve[..]))
        .collect();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            gpa_header(1, &[(12, 0, &outside)]),
            "a page outside guest memory",
        ),
        (
            gpa_header(1, &[(12, 4090, &at_end)]),
            "a range running off the end of memory",
        ),
        (gpa_header(1, &[(12, 0, &huge)]), "PFN u64::MAX"),
        (
            gpa_header(1, &[(12, 4090, &top)]),
            "a range whose address overflows u64",
        ),
        (gpa_header(1, &[(12, 4096, &one)]), "byte_offset 4096"),
        (
            gpa_header(1, &[(12, 0xFFFF_FFFF, &one)]),
            "byte_offset 0xFFFFFFFF",
        ),
        (gpa_header(1, &[(0, 0, &one)]), "byte_count 0"),
        (
            gpa_header(1, &[(200, 4000, &one)]),
            "one PFN where two are needed",
        ),
        (
            gpa_header(1, &[(0xFFFF_FFFF, 0, &one)]),
            "byte_count 4 GiB with one PFN",
        ),
        (
            gpa_header(2, &[(12, 0, &one)]),
            "range_cnt 2 with one range",
        ),
        (
            gpa_header(0xFFFF_FFFF, &[(12, 0, &one)]),
            "range_cnt 0xFFFFFFFF",
        ),
        (
            gpa_header(33, &max_ranges),
            "33 ranges (Linux sends at most 32)",
        ),
        (
            gpa_header(32, &big_ranges),
            "1.5 MiB in one send (more than 256 KiB)",
        ),
        (
            gpa_header(0, &[]),
            "no ranges and no section: no RNDIS message",
        ),
        (gpa_header(1, &[(4, 0, &one)]), "a 4-byte RNDIS stream"),
        (Vec::new(), "no GPA-direct header at all"),
    ];
    for (header, what) in &cases {
        let t = g.rndis_gpa_header(header);
        g.expect_fail(t, what);
    }
    assert_eq!(lab.errors() - before, cases.len() as u64);
    // INITIALIZE and SET of the bring-up, nothing from a bad range.
    assert_eq!(
        lab.stat("rndis_control"),
        2,
        "a bad range reached the RNDIS device"
    );

    // A message straddling a page boundary, in two pages: good.
    let t = g.rndis_gpa_at(PAGE_SIZE - 6, &keepalive(78));
    assert_eq!(
        g.expect_status(t, "KEEPALIVE over two pages"),
        nvsp::status::SUCCESS
    );
    let reply = g.next_rndis().expect("KEEPALIVE_C");
    assert_eq!(u32_at(&reply, 0), header::KEEPALIVE_COMPLETE);
    assert_eq!(u32_at(&reply, 8), 78);
    // Two ranges, one message split across them: good.
    g.scratch.write(PAGE_SIZE + 100, &keepalive(79)[6..]);
    g.scratch.write(0, &keepalive(79)[..6]);
    let h = gpa_header(2, &[(6, 0, &one), (6, 100, &two[1..])]);
    let t = g.rndis_gpa_header(&h);
    assert_eq!(
        g.expect_status(t, "KEEPALIVE in two ranges"),
        nvsp::status::SUCCESS
    );
    assert_eq!(u32_at(&g.next_rndis().expect("KEEPALIVE_C"), 8), 79);
    g.assert_healthy(&lab);
}

#[test]
fn malformed_rndis_messages_fail_the_send_and_never_hang() {
    let lab = Lab::start(HostProfile::Azure);
    let mut g = lab.guest();
    g.bring_up(nvsp::version::V6_1);
    let before = lab.errors();
    let f = frame();
    let flen = f.len() as u32;
    // A PPI area of one entry: (size, type, ppi_offset) then 4 bytes of data.
    let ppi = |size: u32, offset: u32| le(&[size, 0, offset, 0]);
    let mut msg_len_0 = keepalive(1);
    msg_len_0[4..8].copy_from_slice(&0u32.to_le_bytes());
    let mut msg_len_7 = keepalive(1);
    msg_len_7[4..8].copy_from_slice(&7u32.to_le_bytes());
    let mut msg_len_long = keepalive(1);
    msg_len_long[4..8].copy_from_slice(&100u32.to_le_bytes());
    let mut msg_len_max = keepalive(1);
    msg_len_max[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (msg_len_0, "msg_len 0"),
        (msg_len_7, "msg_len 7"),
        (msg_len_long, "msg_len 100 in a 12-byte range"),
        (msg_len_max, "msg_len 0xFFFFFFFF"),
        (le(&[header::KEEPALIVE])[..4].to_vec(), "a 4-byte range"),
        (
            packet_raw(1000, flen, 0, 0, &[], &f),
            "PACKET data_offset past the end",
        ),
        (
            packet_raw(36, 1000, 0, 0, &[], &f),
            "PACKET data_len past the end",
        ),
        (
            packet_raw(0xFFFF_FFF0, 0x20, 0, 0, &[], &f),
            "PACKET data_offset + data_len overflow",
        ),
        (
            packet_raw(52, flen, 500, 16, &ppi(16, 12), &f),
            "PACKET ppi_offset past the end",
        ),
        (
            packet_raw(52, flen, 8, 16, &ppi(16, 12), &f),
            "PACKET ppi_offset 8 (< 36)",
        ),
        (
            packet_raw(52, flen, 36, 4, &ppi(16, 12), &f),
            "PACKET ppi_len 4 (< 12)",
        ),
        (
            packet_raw(52, flen, 36, 0xFFFF_FFF0, &ppi(16, 12), &f),
            "PACKET ppi_len overflow",
        ),
        (
            packet_raw(52, flen, 36, 16, &ppi(0, 12), &f),
            "a PPI of size 0",
        ),
        (
            packet_raw(52, flen, 36, 16, &ppi(16, 16), &f),
            "a PPI whose data offset = its size",
        ),
        (
            packet_raw(52, flen, 36, 16, &ppi(100, 12), &f),
            "a PPI larger than the PPI area",
        ),
        (
            packet_raw(52, flen, 36, 16, &ppi(8, 12), &f),
            "a PPI smaller than its header",
        ),
        (
            rndis_msg(header::PACKET, &le(&[36, 0, 0])),
            "a PACKET shorter than 44 bytes",
        ),
        (
            info_request_raw(header::QUERY, 5, rndis::oid::GEN_LINK_SPEED, 4, 0, &[0; 4]),
            "QUERY info_offset 0",
        ),
        (
            info_request_raw(header::QUERY, 5, rndis::oid::GEN_LINK_SPEED, 4, 16, &[0; 4]),
            "QUERY info_offset 16 (< 20)",
        ),
        (
            info_request_raw(
                header::QUERY,
                5,
                rndis::oid::GEN_LINK_SPEED,
                1000,
                20,
                &[0; 4],
            ),
            "QUERY data past the message",
        ),
        (
            info_request_raw(
                header::SET,
                5,
                rndis::oid::GEN_CURRENT_PACKET_FILTER,
                0x20,
                0xFFFF_FFF0,
                &[0; 4],
            ),
            "SET info_offset + info_len overflow",
        ),
        (
            info_request_raw(
                header::SET,
                5,
                rndis::oid::GEN_CURRENT_PACKET_FILTER,
                4,
                8,
                &[0; 4],
            ),
            "SET info_offset 8",
        ),
        (
            rndis_msg(header::QUERY, &le(&[5, 0x0001_0106, 0])),
            "QUERY of 12 body bytes (needs 20)",
        ),
        (
            rndis_msg(header::INITIALIZE, &[1, 0]),
            "INITIALIZE of 2 body bytes",
        ),
        (
            rndis_msg(header::KEEPALIVE, &[]),
            "KEEPALIVE without a request id",
        ),
        (
            rndis_msg(0x55, &le(&[1, 2, 3])),
            "unknown message type 0x55",
        ),
        (rndis_msg(0, &le(&[1])), "message type 0"),
        (
            rndis_msg(header::INITIALIZE_COMPLETE, &[0; 44]),
            "INIT_C from a guest",
        ),
        (
            rndis_msg(header::QUERY_COMPLETE, &le(&[1, 0, 0, 0])),
            "QUERY_C from a guest",
        ),
        (
            rndis_msg(header::INDICATE_STATUS, &le(&[0x4001_000B, 0, 0])),
            "INDICATE_STATUS from a guest",
        ),
        (rndis_msg(header::SET_EX, &[0; 20]), "SET_EX"),
    ];
    for (msg, what) in &cases {
        let t = g.rndis_gpa(msg);
        g.expect_fail(t, what);
    }
    assert_eq!(lab.errors() - before, cases.len() as u64);
    assert_eq!(
        lab.stat("tx_packets"),
        0,
        "no malformed PACKET was forwarded"
    );

    // Batches in a send section: at most 8 messages (INIT_C's max_pkt_per_msg).
    let batch = |n: u32| -> Vec<u8> { (0..n).flat_map(|i| keepalive(100 + i)).collect() };
    let eight = batch(8);
    let t = g.rndis_section(2, eight.len() as u32, &eight);
    assert_eq!(
        g.expect_status(t, "8 KEEPALIVEs in one section"),
        nvsp::status::SUCCESS
    );
    for i in 0..8 {
        assert_eq!(u32_at(&g.next_rndis().expect("KEEPALIVE_C"), 8), 100 + i);
    }
    let nine = batch(9);
    let t = g.rndis_section(2, nine.len() as u32, &nine);
    g.expect_fail(t, "9 messages in one section");
    // The first 8 were handled before the 9th was refused; their replies still come.
    for i in 0..8 {
        assert_eq!(u32_at(&g.next_rndis().expect("KEEPALIVE_C"), 8), 100 + i);
    }
    // A good message followed by garbage: the send fails, the good one was answered.
    let mut tail = keepalive(200);
    tail.extend_from_slice(&le(&[header::KEEPALIVE, 3]));
    let t = g.rndis_section(2, tail.len() as u32, &tail);
    g.expect_fail(t, "KEEPALIVE then msg_len 3");
    assert_eq!(u32_at(&g.next_rndis().expect("KEEPALIVE_C"), 8), 200);
    // Trailing zero padding after the last message is allowed (§4.7 batches).
    let mut padded = keepalive(201);
    padded.resize(64, 0);
    let t = g.rndis_section(2, padded.len() as u32, &padded);
    assert_eq!(
        g.expect_status(t, "a padded KEEPALIVE"),
        nvsp::status::SUCCESS
    );
    assert_eq!(u32_at(&g.next_rndis().expect("KEEPALIVE_C"), 8), 201);
    assert_eq!(lab.errors() - before, cases.len() as u64 + 2);
    g.assert_healthy(&lab);
}

#[test]
fn rndis_before_its_prerequisites_is_refused() {
    let lab = Lab::start(HostProfile::Azure);
    let mut g = lab.guest();
    // RNDIS INITIALIZE before SEND_NDIS_VER and SEND_RECV_BUF (§4.5 host order rule).
    assert_eq!(g.init(nvsp::version::V6_1), nvsp::status::SUCCESS);
    let before = lab.errors();
    let t = g.rndis_gpa(&rndis_msg(header::INITIALIZE, &initialize_body(1)));
    g.expect_fail(t, "INITIALIZE before the receive buffer");
    assert_eq!(lab.errors() - before, 1);
    drop(g);

    let mut g = lab.guest();
    g.bring_up_nvsp(nvsp::version::V6_1);
    let before = lab.errors();
    // PACKET before RNDIS INITIALIZE, both ways a guest can send it.
    let msg = packet_msg(&frame());
    let t = g.rndis_section(0, msg.len() as u32, &msg);
    g.expect_fail(t, "PACKET in a section before INITIALIZE");
    let t = g.rndis_gpa(&msg);
    g.expect_fail(t, "GPA-direct PACKET before INITIALIZE");
    assert_eq!(lab.errors() - before, 2);
    assert_eq!(lab.stat("tx_packets"), 0);
    g.rndis_initialize();
    g.send_frame(&lab, 0);
    g.set_filter();
    assert!(lab.nic().guest_ready());
    g.assert_healthy(&lab);
}

#[test]
fn unknown_completions_and_unused_packet_types_are_ignored() {
    let lab = Lab::start(HostProfile::Azure);
    let mut g = lab.guest();
    g.bring_up(nvsp::version::V6_1);
    let before = lab.errors();
    let count = lab.nic().receive_sections().2;
    // One control reply outstanding: its section is lent until we complete it.
    let t = g.rndis_gpa(&keepalive(9));
    assert_eq!(g.expect_status(t, "KEEPALIVE"), nvsp::status::SUCCESS);
    let (real, reply) = g.next_rndis_raw(false).expect("KEEPALIVE_C");
    assert_eq!(u32_at(&reply, 8), 9);
    assert_eq!(lab.nic().receive_sections().0, 1);

    let comp = |g: &mut Guest, tid: u64, payload: &[u8]| {
        g.send_with(PacketType::COMP, 0, tid, &[], payload);
    };
    let ok = le(&[
        nvsp::msg_type::SEND_RNDIS_PKT_COMPLETE,
        nvsp::status::SUCCESS,
    ]);
    let tag = real & !0xFFFF_FFFF;
    for tid in [
        0,
        1,
        u64::MAX,
        real ^ (1 << 60),
        tag | 0xFFFF_FFFF,
        tag | u64::from(count),
        tag | ((real as u32 as u64 + 1) % u64::from(count)),
    ] {
        comp(&mut g, tid, &ok);
    }
    comp(&mut g, 5, &[]);
    comp(&mut g, 6, &[0xFF; 40]);
    g.sync();
    assert_eq!(
        lab.nic().receive_sections().0,
        1,
        "a made-up completion freed a section"
    );
    // The real one returns the section; completing it again changes nothing.
    comp(&mut g, real, &ok);
    g.sync();
    assert_eq!(lab.nic().receive_sections().0, 0);
    comp(&mut g, real, &ok);
    comp(&mut g, real, &ok);
    g.sync();
    let (now, peak, total) = lab.nic().receive_sections();
    assert_eq!((now, total), (0, count), "double completion");
    assert!(peak <= count);
    assert_eq!(
        lab.errors() - before,
        0,
        "completions are not protocol errors"
    );

    // Packet types netvsc never uses: dropped, counted, never completed.
    let unsupported = lab.stat("unsupported_packets");
    let mut tids = Vec::new();
    for ty in [
        0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x7, 0x8, 0xA, 0xC, 0xD, 0xE, 0xFFFF,
    ] {
        let nvsp = nvsp_bytes(&NvspMessage::Init(nw::Init::exact(nvsp::version::V6_1)));
        tids.push(g.send(ty, &[0; 8], &nvsp));
    }
    g.sync();
    for t in &tids {
        assert!(
            g.arrived(*t).is_none(),
            "unused packet type {t} was answered"
        );
    }
    assert_eq!(
        lab.stat("unsupported_packets") - unsupported,
        tids.len() as u64
    );
    assert_eq!(lab.errors() - before, tids.len() as u64);

    // A packet whose offset8 points outside it is dropped; the channel goes on.
    let write_index = g.peek(0);
    let init = nvsp_bytes(&NvspMessage::Init(nw::Init::exact(nvsp::version::V6_1)));
    let (tid_a, tid_b) = (0x0BAD_0FF5, 0x0BAD_0FF6);
    g.primary()
        .try_write(
            PacketType::DATA_INBAND,
            COMPLETION_REQUESTED,
            tid_a,
            &[],
            &init,
        )
        .unwrap();
    let desc = Guest::OUT_DATA + write_index as usize;
    g.primary_channel()
        .region
        .write(desc + 2, &1u16.to_le_bytes()); // offset8 1: inside the descriptor
    g.primary().commit();
    let write_index = g.peek(0);
    g.primary()
        .try_write(
            PacketType::DATA_INBAND,
            COMPLETION_REQUESTED,
            tid_b,
            &[],
            &init,
        )
        .unwrap();
    let desc = Guest::OUT_DATA + write_index as usize;
    g.primary_channel()
        .region
        .write(desc + 2, &0x100u16.to_le_bytes()); // past len8
    g.primary().commit();
    g.sync();
    assert!(g.arrived(tid_a).is_none() && g.arrived(tid_b).is_none());
    assert_eq!(lab.errors() - before, tids.len() as u64 + 2);
    g.assert_healthy(&lab);
}

/// How a test corrupts the guest-to-host ring.
#[derive(Clone, Copy, Debug)]
enum Corruption {
    /// `write_index` not a multiple of 8.
    UnalignedWriteIndex,
    /// `write_index` past the data area.
    WriteIndexPastEnd,
    /// A descriptor whose `len8` is shorter than the descriptor.
    Len8TooShort,
    /// A descriptor whose `len8` runs past the written bytes.
    Len8Overrun,
    /// A well-formed packet larger than the host's 64 KiB copy buffer.
    Oversized,
}

#[test]
fn a_corrupt_ring_stops_only_that_channel_and_a_new_guest_comes_up() {
    let lab = Lab::start(HostProfile::Azure);
    let disconnects = lab.stat("guest_disconnects");
    let variants = [
        Corruption::UnalignedWriteIndex,
        Corruption::WriteIndexPastEnd,
        Corruption::Len8TooShort,
        Corruption::Len8Overrun,
        Corruption::Oversized,
    ];
    for (i, variant) in variants.into_iter().enumerate() {
        let mut g = lab.guest();
        g.bring_up(nvsp::version::V6_1);
        // Leave a control reply outstanding, to be abandoned with the channel.
        let t = g.rndis_gpa(&keepalive(1));
        assert_eq!(g.expect_status(t, "KEEPALIVE"), nvsp::status::SUCCESS);
        let before = lab.errors();
        let data_size = g.out_data_size();
        let w = g.peek(0);
        match variant {
            Corruption::UnalignedWriteIndex => g.poke(0, w + 13),
            Corruption::WriteIndexPastEnd => g.poke(0, data_size + 8),
            Corruption::Len8TooShort | Corruption::Len8Overrun => {
                let len8: u16 = if matches!(variant, Corruption::Len8TooShort) {
                    1
                } else {
                    0xFFFF
                };
                let mut desc = [0u8; 24];
                desc[..2].copy_from_slice(&PacketType::DATA_INBAND.to_le_bytes());
                desc[2..4].copy_from_slice(&2u16.to_le_bytes());
                desc[4..6].copy_from_slice(&len8.to_le_bytes());
                g.primary_channel()
                    .region
                    .write(Guest::OUT_DATA + w as usize, &desc);
                g.poke(0, (w + 24) % data_size);
            }
            Corruption::Oversized => {
                let big = vec![0u8; 70 * 1024];
                g.primary()
                    .try_write(PacketType::DATA_INBAND, COMPLETION_REQUESTED, 7, &[], &big)
                    .expect("a 70 KiB packet fits a 128 KiB ring");
                g.primary().rings.writer.commit().unwrap();
            }
        }
        g.primary_channel().guest_to_host.signal();
        lab.wait_until(&format!("{variant:?} to be detected"), |l| {
            l.errors() > before
        });
        assert_eq!(lab.errors() - before, 1, "{variant:?}");
        // The channel is stopped: nothing the guest writes now is answered.
        if !matches!(variant, Corruption::Oversized) {
            g.poke(0, w);
        }
        let tid = g.nvsp(&NvspMessage::Init(nw::Init::exact(0xDEAD_0002)));
        assert!(
            g.wait_for(Duration::from_millis(500), |p| p.tid == tid)
                .is_none(),
            "{variant:?}: a stopped channel answered"
        );
        // The guest goes away; the host cleans up.
        drop(g);
        lab.wait_until("the guest's disconnect", |l| {
            l.stat("guest_disconnects") > disconnects + i as u64
        });
        assert!(!lab.nic().guest_ready());
    }
    lab.assert_a_new_guest_works();
}

#[test]
fn a_guest_that_corrupts_the_hosts_ring_indices_cannot_hurt_the_host() {
    let lab = Lab::start(HostProfile::Azure);
    let mut g = lab.guest();
    g.bring_up(nvsp::version::V6_1);
    // The host writes the inbound ring: make its read_index (the guest's) garbage, and
    // the mask and pending-send fields nonsense.
    let c = g.in_control();
    g.poke(c + 4, 13);
    g.poke(c + 8, 0xFFFF_FFFF);
    g.poke(c + 12, 0xFFFF_FFFF);
    g.poke(12, 0xFFFF_FFFF); // the outbound ring's pending_send_sz (the host reads it)
    let before = lab.errors();
    // Enough failing sends that their completions would fill the inbound ring twice.
    let nvsp = rndis_pkt(nw::CHANNEL_TYPE_DATA, 0xFFFF_FFFE, 100);
    let written = g.flood(&nvsp, 5000, 1_000_000);
    g.sync_best_effort();
    lab.wait_until("the host to handle what it could read", |l| {
        l.errors() > before
    });
    assert!(written > 0);
    drop(g);
    lab.wait_until("the guest's disconnect", |l| {
        l.stat("guest_disconnects") >= 1
    });
    lab.assert_a_new_guest_works();
}

impl Guest {
    /// Writes up to `n` copies of an in-band packet with ids from `first`, without reading
    /// anything; stops early once the ring stays full for 1.5 s. Returns how many it wrote.
    fn flood(&mut self, payload: &[u8], n: u64, first: u64) -> u64 {
        let mut written = 0;
        let mut full_since: Option<Instant> = None;
        while written < n {
            match self.primary().try_write(
                PacketType::DATA_INBAND,
                COMPLETION_REQUESTED,
                first + written,
                &[],
                payload,
            ) {
                Ok(()) => {
                    written += 1;
                    full_since = None;
                    if written.is_multiple_of(64) {
                        self.primary().commit();
                    }
                }
                Err(WriteError::Full { .. }) => {
                    self.primary().commit();
                    let since = *full_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(1500) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("outbound ring: {e}"),
            }
        }
        self.primary().commit();
        written
    }

    /// Like [`Guest::sync`], but the answer may never come (the guest broke its own
    /// inbound ring); waits a bounded time either way.
    fn sync_best_effort(&mut self) {
        let tid = self.nvsp(&NvspMessage::Init(nw::Init::exact(0xDEAD_0003)));
        let _ = self.wait_for(Duration::from_millis(500), |p| p.tid == tid);
    }
}

#[test]
fn a_guest_that_never_reads_completions_is_throttled_not_queued_without_bound() {
    let lab = Lab::start(HostProfile::Azure);
    let mut g = lab.guest();
    g.bring_up(nvsp::version::V6_1);
    let before = lab.errors();
    // Each of these fails (bad section index) and is answered with a FAIL completion.
    let nvsp = rndis_pkt(nw::CHANNEL_TYPE_DATA, 0xFFFF_FFFE, 100);
    const LIMIT: u64 = 100_000;
    let first = 1_000_000u64;
    let written = g.flood(&nvsp, LIMIT, first);
    assert!(
        written < LIMIT,
        "the host kept taking sends ({written}) while the guest read none of their \
         completions: it must stop reading the ring, not queue completions without bound"
    );
    // Now read: every send gets exactly one completion, FAIL, none lost.
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (seen.len() as u64) < written {
        assert!(
            Instant::now() < deadline,
            "only {} of {written} completions arrived",
            seen.len()
        );
        if let Some(p) = g.primary().recv(Duration::from_millis(100)) {
            assert_eq!(p.ty, PacketType::COMP);
            assert!((first..first + written).contains(&p.tid), "tid {}", p.tid);
            let dup = seen.insert(p.tid, nvsp_status(&p.payload));
            assert!(dup.is_none(), "completion {} twice", p.tid);
        }
    }
    assert!(seen.values().all(|&s| s == nvsp::status::FAIL));
    assert_eq!(lab.errors() - before, written);
    g.assert_healthy(&lab);
}

// ---------------------------------------------------------------------------------------
// Offload requests (PROTOCOL.md §8.2, §8.3): checked against the frame they come with
// ---------------------------------------------------------------------------------------

/// An IPv4 frame from the hostile guest to the victim: TCP (proto 6) or UDP (17) with
/// `payload` bytes; `lso` leaves the total length 0 as an LSO sender does (§8.3).
fn ipv4_frame(proto: u8, payload: usize, lso: bool) -> Vec<u8> {
    let l4 = if proto == 6 { 20 } else { 8 };
    let mut f = Vec::with_capacity(14 + 20 + l4 + payload);
    f.extend_from_slice(&VICTIM_MAC);
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = if lso { 0 } else { (20 + l4 + payload) as u16 };
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2]);
    if proto == 6 {
        f.extend_from_slice(&[0x04, 0xd2, 0, 80]); // ports 1234 → 80
        f.extend_from_slice(&1u32.to_be_bytes()); // seq
        f.extend_from_slice(&1u32.to_be_bytes()); // ack
        f.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]); // ACK|PSH
    } else {
        let len = (8 + payload) as u16;
        f.extend_from_slice(&[0x04, 0xd2, 0, 53]);
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend((0..payload).map(|i| i as u8));
    f
}

fn csum_ppi(ipv6: bool, udp: bool, l4_offset: u16) -> (u32, u32) {
    let v = rndis::ppi::TxChecksumInfo::new(ipv6, udp, l4_offset).0;
    (rndis::ppi::ppi_type::TCPIP_CHKSUM, v)
}

impl Guest {
    /// Turns RSC on (NDIS_OFFLOAD_PARAMETERS: only `rsc_ipv4/6` = 2, the rest "no change").
    fn enable_rsc(&mut self) {
        let mut params = [0u8; 28];
        params[..4].copy_from_slice(&[0x80, 3, 28, 0]);
        params[22] = 2;
        params[23] = 2;
        let req = self.req();
        let msg = info_request(
            header::SET,
            req,
            rndis::oid::TCP_OFFLOAD_PARAMETERS,
            &params,
        );
        let tid = self.rndis_gpa(&msg);
        assert_eq!(
            self.expect_status(tid, "offload parameters"),
            nvsp::status::SUCCESS
        );
        let reply = self.next_rndis().expect("SET_C");
        assert_eq!(u32_at(&reply, 12), rndis::status::SUCCESS, "RSC refused");
    }

    /// Every frame posted to this guest within `timeout`: the RNDIS PACKETs of each
    /// transfer-page packet (RSC pieces joined), each packet completed.
    fn frames(&mut self, timeout: Duration) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while let Some(p) = self.wait_for(timeout, |p| p.ty == PacketType::DATA_USING_XFER_PAGES) {
            let mut frame = Vec::new();
            for msg in self.read_xfer(0, &p) {
                let pkt = rndis::packet::parse_packet(&msg).expect("host PACKET");
                frame.extend_from_slice(pkt.frame);
            }
            frames.push(frame);
        }
        frames
    }
}

#[test]
fn offload_requests_that_do_not_match_their_frame_fail_and_reach_no_one() {
    let lab = Lab::start_with(HostProfile::Azure, true);
    let mut victim = lab.connect("victim");
    victim.bring_up(nvsp::version::V6_1);
    victim.enable_rsc();
    let victim_nic = lab.host.nic("victim").expect("the victim's NIC").clone();
    let mut g = lab.guest();
    g.bring_up(nvsp::version::V6_1);
    let before = lab.errors();
    let tcp_lso = ipv4_frame(6, 3000, true);
    let tcp = ipv4_frame(6, 100, false);
    let udp = ipv4_frame(17, 100, false);
    let arp = {
        let mut f = ipv4_frame(6, 100, false);
        f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        f
    };
    let mut short_ip = tcp.clone();
    short_ip[14] = 0x4F; // IHL 15: 60-byte header, the frame ends first
    short_ip.truncate(14 + 40);
    /// PPIs (type, value), the frame, what is wrong.
    type Case<'a> = (Vec<(u32, u32)>, &'a [u8], &'a str);
    let cases: Vec<Case<'_>> = vec![
        (vec![lso_ppi(0, 34, false)], &tcp_lso, "LSO MSS 0"),
        (
            vec![lso_ppi(1448, 38, false)],
            &tcp_lso,
            "LSO TCP offset 38 (it is 34)",
        ),
        (
            vec![lso_ppi(1448, 34, true)],
            &tcp_lso,
            "LSO IPv6 bit on an IPv4 frame",
        ),
        (vec![lso_ppi(1448, 34, false)], &udp, "LSO on a UDP frame"),
        (
            vec![lso_ppi(1448, 34, false)],
            &arp,
            "LSO on a non-IP frame",
        ),
        (
            vec![lso_ppi(1448, 34, false)],
            &tcp_lso[..30],
            "LSO on a cut IPv4 header",
        ),
        (
            vec![csum_ppi(false, false, 30)],
            &tcp,
            "TCP checksum at offset 30 (it is 34)",
        ),
        (
            vec![csum_ppi(false, false, 34)],
            &udp,
            "TCP checksum on a UDP frame",
        ),
        (
            vec![csum_ppi(false, true, 34)],
            &tcp,
            "UDP checksum on a TCP frame",
        ),
        (
            vec![csum_ppi(false, false, 34)],
            &arp,
            "TCP checksum on a non-IP frame",
        ),
        (
            vec![csum_ppi(false, false, 34)],
            &short_ip,
            "TCP checksum, IPv4 header past the end",
        ),
        (
            vec![csum_ppi(false, false, 34)],
            &tcp[..40],
            "TCP checksum, TCP header cut",
        ),
    ];
    for (ppis, frame, what) in &cases {
        let t = g.rndis_gpa(&packet_with_ppis(ppis, frame));
        g.expect_fail(t, what);
    }
    // More TCP payload than the LSO size the host advertised (62780, PROTOCOL.md §7.2,
    // §8.3): the host cannot deliver it as one IP packet.
    let huge = ipv4_frame(6, 70_000, true);
    let t = g.rndis_gpa(&packet_with_ppis(&[lso_ppi(1448, 34, false)], &huge));
    g.expect_fail(t, "LSO with 70000 bytes of TCP payload");
    assert_eq!(lab.errors() - before, cases.len() as u64 + 1);
    assert!(
        victim.frames(Duration::from_millis(300)).is_empty(),
        "a bad send reached the victim"
    );
    assert_eq!(victim_nic.stats().rx_packets.load(Ordering::Relaxed), 0);

    // The same requests, done right, reach the victim: an LSO send arrives as one RSC
    // packet with its lengths fixed, a checksum request with the checksum filled.
    let t = g.rndis_gpa(&packet_with_ppis(&[lso_ppi(1448, 34, false)], &tcp_lso));
    assert_eq!(g.expect_status(t, "a good LSO send"), nvsp::status::SUCCESS);
    let t = g.rndis_gpa(&packet_with_ppis(&[csum_ppi(false, false, 34)], &tcp));
    assert_eq!(
        g.expect_status(t, "a good checksum request"),
        nvsp::status::SUCCESS
    );
    let frames = victim.frames(Duration::from_millis(500));
    assert_eq!(
        frames.len(),
        2,
        "{:?}",
        frames.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(frames[0].len(), tcp_lso.len());
    assert_eq!(
        u16::from_be_bytes([frames[0][16], frames[0][17]]),
        20 + 20 + 3000
    );
    assert_eq!(frames[1].len(), tcp.len());
    assert_ne!(&frames[1][50..52], &[0, 0], "TCP checksum not filled");
    assert_eq!(lab.stat("tx_lso_packets"), 1);
    assert_eq!(lab.stat("tx_checksum_filled"), 1);
    g.assert_healthy(&lab);
}
