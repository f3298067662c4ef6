//! The Linux driver's bring-up sequence on the primary channel: NVSP, buffers, RNDIS.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use vmbus::client::Client;
use vmbus::memory::GuestMemory;
use zerocopy::little_endian::{U16, U32, U64};

use nvsp::NvspMessage;
use nvsp::wire as nw;

use crate::buffers::SlotPool;
use crate::driver::{Driver, ReceiveBuffer};
use crate::{GuestConfig, GuestError, NicInfo, offload, rndis_io};

/// Receive buffer size for `sections` of `section_size`, page-rounded, capped at 31 MiB.
pub(crate) fn rx_buffer_bytes(sections: u32, section_size: u32) -> usize {
    (sections.max(10) as usize * section_size as usize)
        .next_multiple_of(4096)
        .min(31 << 20)
}

/// The Linux driver's bring-up sequence on the primary channel (§4.5, §7.1).
pub(crate) fn bring_up(
    client: &mut Client,
    d: &mut Driver,
    relid: u32,
    config: &GuestConfig,
    info: &mut NicInfo,
    memory: &GuestMemory,
    next_request: &AtomicU32,
) -> Result<(), GuestError> {
    // 1. NVSP INIT, newest version first.
    let mut negotiated = None;
    for v in nvsp::version::GUEST_TRY_ORDER {
        let reply = d.nvsp_request(&NvspMessage::Init(nw::Init::exact(v)), "INIT_COMPLETE")?;
        match NvspMessage::parse_completion(&reply) {
            Ok(NvspMessage::InitComplete(c)) if c.status.get() == nvsp::status::SUCCESS => {
                negotiated = Some(v);
                break;
            }
            Ok(NvspMessage::InitComplete(_)) => continue,
            _ => {
                return Err(GuestError::Protocol(
                    "INIT completion is not INIT_COMPLETE".into(),
                ));
            }
        }
    }
    let v = negotiated.ok_or(GuestError::Refused {
        what: "every NVSP version",
        status: 0,
    })?;
    d.nvsp_version = v;
    info.nvsp_version = v;

    // 2. NDIS config (v ≥ 2): MTU + 14 and the capability bits Linux sends.
    if v >= nvsp::version::V2 {
        let capability: u64 = if v >= nvsp::version::V6_1 {
            0xAC
        } else if v >= nvsp::version::V5 {
            0x2C
        } else {
            0x08
        };
        d.send_nvsp(
            &NvspMessage::SendNdisConfig(nw::SendNdisConfig {
                mtu: U32::new(config.mtu + 14),
                reserved: U32::ZERO,
                capability: U64::new(capability),
            }),
            false,
        )?;
    }
    // 3. NDIS version.
    let ndis = nw::SendNdisVersion::for_nvsp(v);
    info.ndis_version = (ndis.major.get(), ndis.minor.get());
    d.send_nvsp(&NvspMessage::SendNdisVersion(ndis), false)?;

    // 4. Receive buffer.
    let recv_region = memory.alloc(rx_buffer_bytes(config.rx_sections, 1728))?;
    let recv_gpadl = client.create_gpadl(relid, &recv_region)?;
    let reply = d.nvsp_request(
        &NvspMessage::SendReceiveBuffer(nw::SendBuffer {
            gpadl: U32::new(recv_gpadl),
            id: U16::new(nw::RECEIVE_BUFFER_ID),
        }),
        "SEND_RECV_BUF_COMPLETE",
    )?;
    let Ok(NvspMessage::SendReceiveBufferComplete(c)) = NvspMessage::parse_completion(&reply)
    else {
        return Err(GuestError::Protocol(
            "receive-buffer completion malformed".into(),
        ));
    };
    let (size, count) = (
        c.section.sub_alloc_size.get(),
        c.section.num_sub_allocs.get(),
    );
    if c.status.get() != nvsp::status::SUCCESS {
        return Err(GuestError::Refused {
            what: "the receive buffer",
            status: c.status.get(),
        });
    }
    // §4.5: one section, offset 0, size ≥ 68, size × count within the buffer.
    if c.num_sections.get() != 1
        || c.section.offset.get() != 0
        || size < nw::MIN_SECTION_SIZE
        || u64::from(size) * u64::from(count) > recv_region.len() as u64
    {
        return Err(GuestError::Protocol(format!(
            "receive-buffer section table refused: {} sections, size {size}, count {count}",
            c.num_sections.get()
        )));
    }
    info.rx_section_size = size;
    info.rx_sections = count;
    d.recv = Some(Arc::new(ReceiveBuffer {
        region: recv_region,
        gpadl: recv_gpadl,
        section_size: size,
    }));

    // 5. Send buffer.
    let send_region =
        memory.alloc(config.tx_sections.max(10) as usize * nw::SEND_SECTION_SIZE as usize)?;
    let send_gpadl = client.create_gpadl(relid, &send_region)?;
    let reply = d.nvsp_request(
        &NvspMessage::SendSendBuffer(nw::SendBuffer {
            gpadl: U32::new(send_gpadl),
            id: U16::new(nw::SEND_BUFFER_ID),
        }),
        "SEND_SEND_BUF_COMPLETE",
    )?;
    let Ok(NvspMessage::SendSendBufferComplete(c)) = NvspMessage::parse_completion(&reply) else {
        return Err(GuestError::Protocol(
            "send-buffer completion malformed".into(),
        ));
    };
    if c.status.get() != nvsp::status::SUCCESS {
        return Err(GuestError::Refused {
            what: "the send buffer",
            status: c.status.get(),
        });
    }
    let section = c.section_size.get();
    if section < nw::MIN_SECTION_SIZE || section != nw::SEND_SECTION_SIZE {
        return Err(GuestError::Protocol(format!(
            "send section size {section} not supported"
        )));
    }
    let pool = SlotPool::from_region(send_region, section as usize);
    info.tx_section_size = section;
    info.tx_sections = pool.count();
    d.send = Some(pool);
    d.send_gpadl = send_gpadl;

    // 6. RNDIS initialize.
    let id = next_request.fetch_add(1, Ordering::Relaxed);
    let reply = d.rndis_request(&rndis_io::initialize(id), id, "INIT_C")?;
    let init = rndis_io::parse_init_complete(&reply)?;
    d.max_pkt_per_msg = init.max_pkt_per_msg.get().clamp(1, 64);
    info.max_pkt_per_msg = d.max_pkt_per_msg;

    // 7. Queries, in Linux's order.
    let request = std::cell::RefCell::new(d);
    let query_data = |oid: u32, data: &[u8], what: &'static str| -> Result<Vec<u8>, GuestError> {
        let id = next_request.fetch_add(1, Ordering::Relaxed);
        let reply =
            request
                .borrow_mut()
                .rndis_request(&rndis_io::query(id, oid, data), id, what)?;
        rndis_io::query_data(&reply, what)
    };
    let query = |oid: u32, len: usize, what: &'static str| query_data(oid, &vec![0; len], what);
    let query_with = |data: &[u8], what: &'static str| {
        query_data(rndis::oid::TCP_OFFLOAD_HARDWARE_CAPABILITIES, data, what)
    };
    let set = |oid: u32, data: &[u8], what: &'static str| -> Result<(), GuestError> {
        let id = next_request.fetch_add(1, Ordering::Relaxed);
        let reply = request
            .borrow_mut()
            .rndis_request(&rndis_io::set(id, oid, data), id, what)?;
        rndis_io::expect_set_complete(&reply, what)
    };
    let frame = query(rndis::oid::GEN_MAXIMUM_FRAME_SIZE, 4, "maximum frame size")?;
    let max_frame = rndis_io::u32_of(&frame, "maximum frame size")?;
    info.mtu = config.mtu.min(max_frame).max(68);
    let mac = query(
        rndis::oid::OID_802_3_PERMANENT_ADDRESS,
        6,
        "permanent address",
    )?;
    info.mac = mac
        .get(..6)
        .and_then(|m| m.try_into().ok())
        .filter(|_| mac.len() == 6)
        .ok_or_else(|| GuestError::Protocol(format!("MAC address of {} bytes", mac.len())))?;
    // The friendly name is only logged (and "Network Adapter" ignored), as Linux does.
    let name = query(rndis::oid::GEN_FRIENDLY_NAME, 512, "friendly name")?;
    let name: String = char::decode_utf16(
        name.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0),
    )
    .map(|c| c.unwrap_or('?'))
    .collect();
    tracing::debug!(%name, "host adapter name");
    // Offloads: capabilities, then the parameters enabling what Linux enables (§8.1).
    let revision = rndis::offload::offload_revision_for_nvsp(v);
    let mut q = [0u8; rndis::offload::OFFLOAD_SIZE_REV3];
    let n = rndis::offload::NdisOffload::emit_query(revision, &mut q)?;
    let caps = query_with(&q[..n], "offload capabilities")?;
    let mut offloads = rndis::offload::NdisOffload::parse(&caps)?.guest_offloads();
    // RSC needs NVSP 6.1 as well (§10).
    offloads.rsc &= v >= nvsp::version::V6_1;
    let params = rndis::offload::OffloadParameters::linux(&offloads, true);
    let size = if v >= nvsp::version::V5 {
        rndis::offload::OFFLOAD_PARAMETERS_SIZE
    } else {
        rndis::offload::OFFLOAD_PARAMETERS_SIZE_REV2
    };
    let mut pbuf = [0u8; rndis::offload::OFFLOAD_PARAMETERS_SIZE];
    let n = params.emit(size, &mut pbuf)?;
    set(
        rndis::oid::TCP_OFFLOAD_PARAMETERS,
        &pbuf[..n],
        "offload parameters",
    )?;
    info.offloads = offloads;
    let media = query(
        rndis::oid::GEN_MEDIA_CONNECT_STATUS,
        4,
        "media connect status",
    )?;
    let connected = rndis_io::u32_of(&media, "media status")? == rndis::oid::MEDIA_STATE_CONNECTED;
    if v >= nvsp::version::V5 {
        let speed = query(rndis::oid::GEN_LINK_SPEED, 4, "link speed")?;
        info.link_speed = rndis_io::u32_of(&speed, "link speed")?;
    }
    let d = request.into_inner();
    d.set_link(connected);
    d.mtu = info.mtu;
    d.features = Arc::new(offload::Features::new(info.offloads, true));
    Ok(())
}

/// Subchannels the guest opened, with a driver for each, queue 1 first.
pub(crate) type Subchannels = Vec<(vmbus::client::OpenedChannel, Driver)>;

/// Multi-queue (§4.12, §9.3): with NVSP ≥ 5 and a host offering ≥ 2 queues, asks for
/// `wanted − 1` subchannels, opens each granted one with its own rings and eventfds,
/// shares the receive buffer and splits the send buffer between the channels, then
/// sends the RSS parameters (twice: disabled, then enabled, as Linux does). Any failure
/// before the subchannels open leaves the NIC single-queue, as Linux does.
pub(crate) fn open_subchannels(
    client: &mut Client,
    primary: &mut Driver,
    instance: vmbus::guid::Guid,
    config: &GuestConfig,
    memory: &GuestMemory,
    next_request: &AtomicU32,
    shared: &crate::control::Shared,
) -> Result<Subchannels, GuestError> {
    *shared.rss.lock().unwrap() = None;
    let wanted = u32::from(config.queues).min(64);
    if wanted < 2 || primary.nvsp_version < nvsp::version::V5 {
        return Ok(Vec::new());
    }
    let id = next_request.fetch_add(1, Ordering::Relaxed);
    let q = rndis::rss::RssCapabilities::query();
    let reply = primary.rndis_request(
        &rndis_io::query(
            id,
            rndis::oid::GEN_RECEIVE_SCALE_CAPABILITIES,
            zerocopy::IntoBytes::as_bytes(&q),
        ),
        id,
        "RSS capabilities",
    )?;
    let Ok(data) = rndis_io::query_data(&reply, "RSS capabilities") else {
        return Ok(Vec::new());
    };
    let caps = rndis::rss::RssCapabilities::parse(&data)?;
    shared
        .max_queues
        .store(caps.num_recv_queues.get(), Ordering::Relaxed);
    let wanted = wanted.min(caps.num_recv_queues.get());
    if wanted < 2 {
        return Ok(Vec::new());
    }
    let reply = primary.nvsp_request(
        &NvspMessage::SubchannelRequest(nw::SubchannelRequest {
            op: U32::new(nw::SUBCHANNEL_OP_ALLOCATE),
            num_subchannels: U32::new(wanted - 1),
        }),
        "SUBCHANNEL completion",
    )?;
    let granted = match NvspMessage::parse_completion(&reply) {
        Ok(NvspMessage::SubchannelComplete(c)) if c.status.get() == nvsp::status::SUCCESS => {
            c.num_subchannels.get()
        }
        _ => return Ok(Vec::new()),
    };
    if granted > wanted - 1 {
        return Err(GuestError::Protocol(format!(
            "host granted {granted} subchannels, {} asked",
            wanted - 1
        )));
    }
    if granted == 0 {
        return Ok(Vec::new());
    }
    // The offers follow the completion; indices ≥ the channel count are ignored.
    let deadline = std::time::Instant::now() + crate::driver::REQUEST_TIMEOUT;
    let mut offers = Vec::new();
    while offers.len() < granted as usize {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(GuestError::Timeout("subchannel offers"));
        }
        match client.next_event(left)? {
            Some(vmbus::client::Event::Offer(o))
                if o.instance_id == instance
                    && (1..=granted as u16).contains(&o.sub_channel_index)
                    && !offers.iter().any(|x: &vmbus::client::Offer| {
                        x.sub_channel_index == o.sub_channel_index
                    }) =>
            {
                offers.push(o)
            }
            _ => {}
        }
    }
    offers.sort_by_key(|o| o.sub_channel_index);
    let channels = 1 + granted;
    let mut shares = primary
        .send
        .take()
        .map(|p| p.split(channels))
        .unwrap_or_default()
        .into_iter();
    primary.send = shares.next();
    let mut subs = Vec::new();
    for o in offers {
        let opened = client.open_channel(o.relid, config.ring_pages)?;
        let rings = vmbus::channel::GuestRings::new(&opened)?;
        let mut d = Driver::new(
            rings,
            vmbus::event::EventFd::from_fd(opened.guest_to_host.try_clone_fd()?)?,
            vmbus::event::EventFd::from_fd(opened.host_to_guest.try_clone_fd()?)?,
            o.relid,
            memory,
            config.staging_slots,
            config.tracer.clone(),
        )?;
        d.join(primary, shares.next());
        subs.push((opened, d));
    }
    // RSS parameters: Toeplitz over the default key, table i mod channels (§7.5).
    let entries = caps.guest_table_entries();
    // A table kept from before (ethtool -X) is reused if it still fits the channels.
    let kept = shared
        .kept_rss
        .lock()
        .unwrap()
        .clone()
        .filter(|r| r.table.len() == entries && r.table.iter().all(|&q| q < channels));
    let table: Vec<u32> = kept.as_ref().map_or_else(
        || (0..entries as u32).map(|i| i % channels).collect(),
        |r| r.table.clone(),
    );
    let key = kept.as_ref().map_or(rndis::rss::DEFAULT_KEY, |r| r.key);
    for flags in [rndis::rss::flags::DISABLE_RSS, 0] {
        let mut buf = vec![0u8; 40 + 4 * entries + 40];
        let n = rndis::rss::emit_rss_parameters(
            &mut buf,
            flags,
            rndis::rss::hash::LINUX,
            &table,
            &key,
        )?;
        let id = next_request.fetch_add(1, Ordering::Relaxed);
        let reply = primary.rndis_request(
            &rndis_io::set(id, rndis::oid::GEN_RECEIVE_SCALE_PARAMETERS, &buf[..n]),
            id,
            "RSS parameters",
        )?;
        rndis_io::expect_set_complete(&reply, "RSS parameters")?;
    }
    *shared.rss.lock().unwrap() = Some(crate::control::RssSettings {
        key,
        table,
        hash_info: rndis::rss::hash::LINUX,
    });
    Ok(subs)
}
