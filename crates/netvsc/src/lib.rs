//! netvsc: the Hyper-V synthetic network driver (the guest's Virtual Service Client), in
//! user space.
//!
//! In ARCHITECTURE.md's picture this crate is the guest process: it connects to VMBus,
//! brings the synthetic NIC up the way the Linux driver does (NVSP init and version
//! negotiation, NDIS config and version, receive and send buffers, then RNDIS
//! initialize, queries and packet filter), exposes it to Linux as a TAP interface and
//! runs the NAPI-style data path between the TAP and the channel's rings.

pub mod buffers;
pub mod driver;
pub mod offload;
pub mod rndis_io;
pub mod stats;
pub mod tap;
mod trace;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use vmbus::channel::GuestRings;
use vmbus::client::{Client, ClientError, Event, OpenedChannel};
use vmbus::guid::NETVSC_CLASS;
use vmbus::memory::{GuestMemory, MemoryError};
use vmbus::trace::Tracer;
use zerocopy::little_endian::{U16, U32, U64};

use nvsp::NvspMessage;
use nvsp::wire as nw;

use crate::buffers::SlotPool;
use crate::driver::{CommandQueue, Driver, LinkState, ReceiveBuffer};
use crate::stats::GuestStats;
use crate::tap::Tap;

/// Errors of the guest driver.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The VMBus control plane failed.
    #[error(transparent)]
    Vmbus(#[from] ClientError),
    /// Guest memory could not be set up.
    #[error("guest memory: {0}")]
    Memory(#[from] MemoryError),
    /// A ring is unusable (corrupt indices or lengths from the host).
    #[error("ring buffer: {0}")]
    Ring(String),
    /// The host did not answer in time.
    #[error("no {0} from the host in time")]
    Timeout(&'static str),
    /// The host broke the protocol.
    #[error("host protocol error: {0}")]
    Protocol(String),
    /// The host refused something.
    #[error("the host refused {what} (status {status:#x})")]
    Refused {
        /// What was refused.
        what: &'static str,
        /// The status it gave.
        status: u32,
    },
    /// The host offers no synthetic NIC.
    #[error("the host offers no synthetic network adapter")]
    NoNic,
    /// The TAP interface failed.
    #[error("TAP interface: {0}")]
    Tap(std::io::Error),
    /// A feature cannot be changed.
    #[error("{0} is fixed")]
    Fixed(&'static str),
    /// Something else in the system failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<vmbus::ring::RingError> for GuestError {
    fn from(e: vmbus::ring::RingError) -> Self {
        GuestError::Ring(e.to_string())
    }
}

impl From<vmbus::ring::WriteError> for GuestError {
    fn from(e: vmbus::ring::WriteError) -> Self {
        GuestError::Ring(e.to_string())
    }
}

impl From<nvsp::NvspError> for GuestError {
    fn from(e: nvsp::NvspError) -> Self {
        GuestError::Protocol(e.to_string())
    }
}

impl From<vmbus::packet::PacketError> for GuestError {
    fn from(e: vmbus::packet::PacketError) -> Self {
        GuestError::Protocol(e.to_string())
    }
}

impl From<rndis::RndisError> for GuestError {
    fn from(e: rndis::RndisError) -> Self {
        GuestError::Protocol(e.to_string())
    }
}

/// How to bring a guest NIC up.
#[derive(Clone)]
pub struct GuestConfig {
    /// The host's VMBus socket for this VM.
    pub vmbus_socket: PathBuf,
    /// Name of the TAP interface.
    pub ifname: String,
    /// MTU (68…65521; the host may lower it).
    pub mtu: u32,
    /// Receive-buffer sections to ask for (`ethtool -G rx`).
    pub rx_sections: u32,
    /// Send-buffer sections (`ethtool -G tx`).
    pub tx_sections: u32,
    /// Pages per ring, control page included (Linux: 1 + 128 data pages).
    pub ring_pages: u32,
    /// Staging buffers for page-buffer sends.
    pub staging_slots: u32,
    /// Trace sink.
    pub tracer: Option<Arc<Tracer>>,
}

impl Default for GuestConfig {
    fn default() -> Self {
        Self {
            vmbus_socket: PathBuf::new(),
            ifname: "eth0".into(),
            mtu: 1500,
            rx_sections: 9709,
            tx_sections: 170,
            ring_pages: 129,
            staging_slots: 64,
            tracer: None,
        }
    }
}

/// What bring-up learned.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct NicInfo {
    /// VMBus version.
    pub vmbus_version: u32,
    /// NVSP version.
    pub nvsp_version: u32,
    /// NDIS version announced (major, minor).
    pub ndis_version: (u32, u32),
    /// MAC address (permanent).
    pub mac: [u8; 6],
    /// MTU in use.
    pub mtu: u32,
    /// Link speed in 100 bit/s units (0 if not queried).
    pub link_speed: u32,
    /// Receive sections: size and count.
    pub rx_section_size: u32,
    /// Receive section count.
    pub rx_sections: u32,
    /// Send section size and count.
    pub tx_section_size: u32,
    /// Send section count.
    pub tx_sections: u32,
    /// RNDIS: messages per send-buffer batch.
    pub max_pkt_per_msg: u32,
    /// The NIC's VMBus instance GUID (ethtool's bus-info).
    pub instance_id: String,
    /// Offloads the host offered and the guest enabled.
    #[serde(skip)]
    pub offloads: rndis::offload::GuestOffloads,
}

/// A running guest NIC.
pub struct Guest {
    client: Client,
    channel: Option<OpenedChannel>,
    info: NicInfo,
    stats: Arc<GuestStats>,
    link: Arc<LinkState>,
    commands: CommandQueue,
    features: Arc<offload::Features>,
    tap: Arc<Tap>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Driver, GuestError>>>,
    next_request: Arc<AtomicU32>,
    tap_name: String,
    failure: Arc<Mutex<Option<String>>>,
}

/// Why [`Guest::wait`] returned.
#[derive(Debug)]
pub enum Exit {
    /// The stop flag was set.
    Stopped,
    /// The host closed the VMBus connection (it died or shut down).
    HostGone,
    /// The host rescinded the NIC.
    Rescinded,
    /// The data path stopped on an error.
    Failed(String),
}

impl Guest {
    /// Connects, brings the NIC up, creates the TAP (in the calling thread's network
    /// namespace) and starts the data path.
    pub fn start(config: &GuestConfig) -> Result<Self, GuestError> {
        let recv_bytes = rx_buffer_bytes(config.rx_sections, 1728);
        let send_bytes =
            (config.tx_sections as usize * nw::SEND_SECTION_SIZE as usize).next_multiple_of(4096);
        let memory_bytes = recv_bytes
            + send_bytes
            + 2 * config.ring_pages as usize * 4096
            + config.staging_slots as usize * driver::STAGING_SLOT
            + (1 << 20);
        let memory = Arc::new(GuestMemory::new(memory_bytes)?);
        let mut client =
            Client::connect(&config.vmbus_socket, memory.clone(), config.tracer.clone())?;
        let offers = client.request_offers()?;
        let offer = offers
            .iter()
            .find(|o| o.class_id == NETVSC_CLASS && o.sub_channel_index == 0)
            .copied()
            .ok_or(GuestError::NoNic)?;
        let channel = client.open_channel(offer.relid, config.ring_pages)?;
        let rings = GuestRings::new(&channel)?;
        let mut driver = Driver::new(
            rings,
            channel
                .guest_to_host
                .try_clone_fd()
                .map(vmbus::event::EventFd::from_fd)??,
            channel
                .host_to_guest
                .try_clone_fd()
                .map(vmbus::event::EventFd::from_fd)??,
            offer.relid,
            &memory,
            config.staging_slots,
            config.tracer.clone(),
        )?;
        let mut info = NicInfo {
            vmbus_version: client.version(),
            instance_id: offer.instance_id.to_string(),
            ..Default::default()
        };
        let next_request = Arc::new(AtomicU32::new(1));
        bring_up(
            &mut client,
            &mut driver,
            offer.relid,
            config,
            &mut info,
            &memory,
            &next_request,
        )?;

        let tap = Tap::create(&config.ifname).map_err(GuestError::Tap)?;
        tap.set_offload(driver.features.tun_flags())
            .map_err(GuestError::Tap)?;
        tap.set_mac(info.mac).map_err(GuestError::Tap)?;
        tap.set_mtu(info.mtu).map_err(GuestError::Tap)?;
        tap.set_carrier(driver.link.up.load(Ordering::Relaxed))
            .map_err(GuestError::Tap)?;
        tap.set_up(true).map_err(GuestError::Tap)?;
        let control_tap = Arc::new(tap.try_clone().map_err(GuestError::Tap)?);
        driver.tap = Some(tap);

        // The interface is up: set the packet filter as Linux does on open (§4.5 step 9).
        let id = next_request.fetch_add(1, Ordering::Relaxed);
        let set = rndis_io::set(
            id,
            rndis::oid::GEN_CURRENT_PACKET_FILTER,
            &rndis::oid::packet_filter::LINUX_OPEN.to_le_bytes(),
        );
        let reply = driver.rndis_request(&set, id, "SET_C (packet filter)")?;
        rndis_io::expect_set_complete(&reply, "packet filter")?;

        let stats = driver.stats.clone();
        let link = driver.link.clone();
        let commands = driver.commands.clone();
        let features = driver.features.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let thread = {
            let stop = stop.clone();
            let failure = failure.clone();
            std::thread::Builder::new()
                .name(format!("netvsc-ch{}", offer.relid))
                .spawn(move || {
                    let stop2 = stop.clone();
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let mut d = driver;
                        let r = d.run_until(stop2);
                        r.map(|()| d)
                    }))
                    .unwrap_or_else(|_| Err(GuestError::Protocol("data path panicked".into())));
                    if let Err(e) = &r {
                        *failure.lock().unwrap() = Some(e.to_string());
                    }
                    r
                })?
        };
        Ok(Self {
            client,
            channel: Some(channel),
            info,
            stats,
            link,
            commands,
            features,
            tap: control_tap,
            stop,
            thread: Some(thread),
            next_request,
            tap_name: config.ifname.clone(),
            failure,
        })
    }

    /// What bring-up negotiated.
    pub fn info(&self) -> &NicInfo {
        &self.info
    }

    /// The driver's counters.
    pub fn stats(&self) -> &Arc<GuestStats> {
        &self.stats
    }

    /// Whether the host says the link is up.
    pub fn link_up(&self) -> bool {
        self.link.up.load(Ordering::Relaxed)
    }

    /// The link state, shared with the data path.
    pub fn link_state(&self) -> Arc<LinkState> {
        self.link.clone()
    }

    /// The TAP's name.
    pub fn ifname(&self) -> &str {
        &self.tap_name
    }

    /// A handle for run-time requests from other threads.
    pub fn control(&self) -> GuestControl {
        GuestControl {
            commands: self.commands.clone(),
            next_request: self.next_request.clone(),
            features: self.features.clone(),
            tap: self.tap.clone(),
            nvsp_version: self.info.nvsp_version,
        }
    }

    /// Watches the VMBus connection until `stop` is set, the host goes away, the NIC is
    /// rescinded or the data path fails.
    pub fn wait(&mut self, stop: &AtomicBool) -> Exit {
        loop {
            if stop.load(Ordering::Relaxed) {
                return Exit::Stopped;
            }
            if let Some(f) = self.failure.lock().unwrap().take() {
                return Exit::Failed(f);
            }
            match self.client.next_event(Duration::from_millis(200)) {
                Ok(None) => {}
                Ok(Some(Event::Rescind(relid)))
                    if self.channel.as_ref().is_some_and(|c| c.relid == relid) =>
                {
                    return Exit::Rescinded;
                }
                Ok(Some(_)) => {}
                Err(ClientError::HostGone) => return Exit::HostGone,
                Err(e) => return Exit::Failed(e.to_string()),
            }
        }
    }

    /// Stops the data path and tears the NIC down in the Linux driver's order (§4.14):
    /// RNDIS HALT, revoke buffers, close the channel, tear GPADLs down, unload.
    /// With `host_alive` false only local state is dropped.
    pub fn shutdown(mut self, host_alive: bool) -> Result<(), GuestError> {
        self.stop.store(true, Ordering::Release);
        self.commands.wake();
        let driver = match self.thread.take().map(|t| t.join()) {
            Some(Ok(Ok(d))) => Some(d),
            _ => None,
        };
        if let Some(tap) = driver.as_ref().and_then(|d| d.tap.as_ref()) {
            let _ = tap.set_carrier(false);
        }
        if !host_alive {
            return Ok(());
        }
        let Some(mut driver) = driver else {
            return Ok(());
        };
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let _ = driver.send_halt(id);
        let _ = driver.drain(Duration::from_secs(2));
        let _ = driver.send_nvsp(
            &NvspMessage::RevokeReceiveBuffer(nw::RevokeBuffer {
                id: U16::new(nw::RECEIVE_BUFFER_ID),
            }),
            false,
        );
        let _ = driver.send_nvsp(
            &NvspMessage::RevokeSendBuffer(nw::RevokeBuffer {
                id: U16::new(nw::SEND_BUFFER_ID),
            }),
            false,
        );
        let relid = driver.relid;
        let recv = driver.recv.take();
        let send = driver.send.take();
        drop(driver);
        if let Some(channel) = self.channel.take() {
            self.client.close_channel(channel)?;
        }
        if let Some(r) = recv {
            self.client.teardown_gpadl(relid, r.gpadl)?;
            self.client.memory().free(r.region);
        }
        if let Some((pool, gpadl)) = send {
            self.client.teardown_gpadl(relid, gpadl)?;
            self.client.memory().free(pool.into_region());
        }
        self.client.unload()?;
        Ok(())
    }
}

/// Run-time requests to a running guest NIC, from any thread.
#[derive(Clone)]
pub struct GuestControl {
    commands: CommandQueue,
    next_request: Arc<AtomicU32>,
    features: Arc<offload::Features>,
    tap: Arc<Tap>,
    nvsp_version: u32,
}

/// A feature ethtool can show or toggle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// rx-checksumming.
    RxCsum,
    /// tx-checksumming.
    TxCsum,
    /// scatter-gather.
    Sg,
    /// tcp-segmentation-offload.
    Tso,
    /// generic-receive-offload.
    Gro,
    /// large-receive-offload (RSC at the host).
    Lro,
    /// receive-hashing.
    RxHash,
}

impl Feature {
    /// Every toggleable feature with its control-socket name.
    pub const ALL: [(Feature, &'static str); 7] = [
        (Feature::RxCsum, "rx_csum"),
        (Feature::TxCsum, "tx_csum"),
        (Feature::Sg, "sg"),
        (Feature::Tso, "tso"),
        (Feature::Gro, "gro"),
        (Feature::Lro, "lro"),
        (Feature::RxHash, "rxhash"),
    ];
}

/// A feature's state: on, and whether it is fixed (the host cannot do it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FeatureState {
    /// On now.
    pub on: bool,
    /// Cannot be changed.
    pub fixed: bool,
}

impl GuestControl {
    fn flag(&self, f: Feature) -> &AtomicBool {
        let x = &self.features;
        match f {
            Feature::RxCsum => &x.rx_csum,
            Feature::TxCsum => &x.tx_csum,
            Feature::Sg => &x.sg,
            Feature::Tso => &x.tso,
            Feature::Gro => &x.gro,
            Feature::Lro => &x.lro,
            Feature::RxHash => &x.rxhash,
        }
    }

    /// What the host offered and bring-up enabled.
    pub fn offloads(&self) -> rndis::offload::GuestOffloads {
        self.features.caps
    }

    /// The state of every feature ethtool shows, by control-socket name (toggleable
    /// ones plus the per-family sub-features).
    pub fn features(&self) -> Vec<(&'static str, FeatureState)> {
        let caps = &self.features.caps;
        let on = |f: Feature| self.flag(f).load(Ordering::Relaxed);
        let tx_any = caps.tx_csum_v4 || caps.tx_csum_v6;
        let tso_any = caps.tso_v4.is_some() || caps.tso_v6.is_some();
        let st = |on: bool, fixed: bool| FeatureState { on, fixed };
        vec![
            ("rx_csum", st(on(Feature::RxCsum), false)),
            ("tx_csum", st(on(Feature::TxCsum), !tx_any)),
            (
                "tx_csum_ipv4",
                st(on(Feature::TxCsum) && caps.tx_csum_v4, !caps.tx_csum_v4),
            ),
            (
                "tx_csum_ipv6",
                st(on(Feature::TxCsum) && caps.tx_csum_v6, !caps.tx_csum_v6),
            ),
            ("sg", st(on(Feature::Sg), false)),
            ("tso", st(on(Feature::Tso), !tso_any)),
            (
                "tso_v4",
                st(
                    on(Feature::Tso) && caps.tso_v4.is_some(),
                    caps.tso_v4.is_none(),
                ),
            ),
            (
                "tso_v6",
                st(
                    on(Feature::Tso) && caps.tso_v6.is_some(),
                    caps.tso_v6.is_none(),
                ),
            ),
            ("gro", st(on(Feature::Gro), false)),
            ("lro", st(on(Feature::Lro), !caps.rsc)),
            ("rxhash", st(on(Feature::RxHash), false)),
        ]
    }

    /// Turns a feature on or off. Only LRO reaches the host (NDIS offload parameters
    /// with only the RSC fields set, §10); the others change what the guest and its TAP
    /// do. A change the host refuses is rolled back.
    pub fn set_feature(&self, f: Feature, on: bool) -> Result<bool, GuestError> {
        let caps = &self.features.caps;
        let fixed = match f {
            Feature::Lro => !caps.rsc,
            Feature::TxCsum => !(caps.tx_csum_v4 || caps.tx_csum_v6),
            Feature::Tso => caps.tso_v4.is_none() && caps.tso_v6.is_none(),
            _ => false,
        };
        let flag = self.flag(f);
        if flag.load(Ordering::Relaxed) == on {
            return Ok(false);
        }
        if fixed {
            return Err(GuestError::Fixed(match f {
                Feature::Lro => {
                    "large-receive-offload (the host offers no receive segment coalescing: RSC needs a ws2019 or azure host and NVSP 6.1)"
                }
                Feature::TxCsum => "tx-checksumming (the host offers no transmit checksum offload)",
                _ => "tcp-segmentation-offload (the host offers no LSO)",
            }));
        }
        if f == Feature::Lro {
            let mut p = rndis::offload::OffloadParameters::no_change();
            let v = if on {
                rndis::offload::param::ENABLED
            } else {
                rndis::offload::param::DISABLED
            };
            p.rsc_ipv4 = v;
            p.rsc_ipv6 = v;
            let size = if self.nvsp_version >= nvsp::version::V5 {
                rndis::offload::OFFLOAD_PARAMETERS_SIZE
            } else {
                rndis::offload::OFFLOAD_PARAMETERS_SIZE_REV2
            };
            let mut buf = [0u8; rndis::offload::OFFLOAD_PARAMETERS_SIZE];
            let n = p.emit(size, &mut buf)?;
            self.rndis_set(rndis::oid::TCP_OFFLOAD_PARAMETERS, &buf[..n])?;
        }
        flag.store(on, Ordering::Relaxed);
        if matches!(f, Feature::TxCsum | Feature::Sg | Feature::Tso)
            && let Err(e) = self.tap.set_offload(self.features.tun_flags())
        {
            flag.store(!on, Ordering::Relaxed);
            return Err(GuestError::Tap(e));
        }
        Ok(true)
    }

    /// Sends an RNDIS SET and waits for its status.
    pub fn rndis_set(&self, oid: u32, data: &[u8]) -> Result<(), GuestError> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        self.commands.push(driver::Command::Rndis {
            message: rndis_io::set(id, oid, data),
            request_id: id,
            reply: tx,
        });
        let reply = rx
            .recv_timeout(driver::REQUEST_TIMEOUT)
            .map_err(|_| GuestError::Timeout("SET_C"))??;
        rndis_io::expect_set_complete(&reply, rndis::oid::name(oid).unwrap_or("OID"))
    }

    /// Sends an RNDIS QUERY and returns the information buffer.
    pub fn rndis_query(&self, oid: u32, info_len: usize) -> Result<Vec<u8>, GuestError> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        self.commands.push(driver::Command::Rndis {
            message: rndis_io::query(id, oid, &vec![0; info_len]),
            request_id: id,
            reply: tx,
        });
        let reply = rx
            .recv_timeout(driver::REQUEST_TIMEOUT)
            .map_err(|_| GuestError::Timeout("QUERY_C"))??;
        rndis_io::query_data(&reply, "QUERY")
    }
}

/// Receive buffer size for `sections` of `section_size`, page-rounded, capped at 31 MiB.
fn rx_buffer_bytes(sections: u32, section_size: u32) -> usize {
    (sections.max(10) as usize * section_size as usize)
        .next_multiple_of(4096)
        .min(31 << 20)
}

/// The Linux driver's bring-up sequence on the primary channel (§4.5, §7.1).
fn bring_up(
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
    d.recv = Some(ReceiveBuffer {
        region: recv_region,
        gpadl: recv_gpadl,
        section_size: size,
    });

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
    d.send = Some((pool, send_gpadl));

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
