//! netvsc: the Hyper-V synthetic network driver (the guest's Virtual Service Client), in
//! user space.
//!
//! In ARCHITECTURE.md's picture this crate is the guest process: it connects to VMBus,
//! brings the synthetic NIC up the way the Linux driver does (NVSP init and version
//! negotiation, NDIS config and version, receive and send buffers, then RNDIS
//! initialize, queries and packet filter), exposes it to Linux as a TAP interface and
//! runs the NAPI-style data path between the TAP and the channel's rings.

mod bringup;
pub mod buffers;
pub mod control;
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
use zerocopy::little_endian::U16;

use nvsp::NvspMessage;
use nvsp::wire as nw;

use crate::driver::{CommandQueue, Driver, LinkState};
use crate::stats::StatsView;
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
    /// Staging buffers for page-buffer sends, per queue.
    pub staging_slots: u32,
    /// Queues (channels) to ask for; the host may grant fewer (1: single queue).
    pub queues: u16,
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
            queues: 1,
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
    /// Queues (channels) in use: 1 + subchannels.
    pub queues: u32,
    /// The NIC's VMBus instance GUID (ethtool's bus-info).
    pub instance_id: String,
    /// Offloads the host offered and the guest enabled.
    #[serde(skip)]
    pub offloads: rndis::offload::GuestOffloads,
}

/// A running guest NIC.
pub struct Guest {
    client: Client,
    /// The channels, the primary first, then the subchannels by index.
    channels: Vec<OpenedChannel>,
    info: NicInfo,
    stats: StatsView,
    link: Arc<LinkState>,
    /// Each channel's command queue (the primary's carries RNDIS requests).
    commands: Vec<CommandQueue>,
    features: Arc<offload::Features>,
    tap: Arc<Tap>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<Driver, GuestError>>>,
    next_request: Arc<AtomicU32>,
    tap_name: String,
    failure: Arc<Mutex<Option<String>>>,
    recv_gpadl: u32,
    send_gpadl: u32,
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
        let recv_bytes = bringup::rx_buffer_bytes(config.rx_sections, 1728);
        let send_bytes =
            (config.tx_sections as usize * nw::SEND_SECTION_SIZE as usize).next_multiple_of(4096);
        let per_queue = 2 * config.ring_pages as usize * 4096
            + config.staging_slots as usize * driver::STAGING_SLOT
            + 8 * 4096;
        let memory_bytes =
            recv_bytes + send_bytes + usize::from(config.queues.max(1)) * per_queue + (1 << 20);
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
        bringup::bring_up(
            &mut client,
            &mut driver,
            offer.relid,
            config,
            &mut info,
            &memory,
            &next_request,
        )?;

        let subchannels = bringup::open_subchannels(
            &mut client,
            &mut driver,
            offer.instance_id,
            config,
            &memory,
            &next_request,
        )?;
        info.queues = 1 + subchannels.len() as u32;

        let mut taps = Tap::create_queues(&config.ifname, 1 + subchannels.len())
            .map_err(GuestError::Tap)?
            .into_iter();
        let tap = taps.next().expect("at least one queue");
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

        let recv_gpadl = driver.recv.as_ref().map_or(0, |r| r.gpadl);
        let send_gpadl = driver.send_gpadl;
        let stats = StatsView {
            nic: driver.stats.clone(),
            queues: std::iter::once(driver.queue.clone())
                .chain(subchannels.iter().map(|(_, d)| d.queue.clone()))
                .collect(),
        };
        let link = driver.link.clone();
        let features = driver.features.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));
        let mut channels = vec![channel];
        let mut drivers = vec![driver];
        for (opened, mut d) in subchannels {
            d.tap = taps.next();
            channels.push(opened);
            drivers.push(d);
        }
        let commands: Vec<CommandQueue> = drivers.iter().map(|d| d.commands.clone()).collect();
        let mut threads = Vec::new();
        for (q, driver) in drivers.into_iter().enumerate() {
            let stop = stop.clone();
            let failure = failure.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("netvsc-q{q}"))
                    .spawn(move || {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            let mut d = driver;
                            d.run_until(stop).map(|()| d)
                        }))
                        .unwrap_or_else(|_| Err(GuestError::Protocol("data path panicked".into())));
                        if let Err(e) = &r {
                            *failure.lock().unwrap() = Some(format!("queue {q}: {e}"));
                        }
                        r
                    })?,
            );
        }
        Ok(Self {
            client,
            channels,
            info,
            stats,
            link,
            commands,
            features,
            tap: control_tap,
            stop,
            threads,
            next_request,
            tap_name: config.ifname.clone(),
            failure,
            recv_gpadl,
            send_gpadl,
        })
    }

    /// What bring-up negotiated.
    pub fn info(&self) -> &NicInfo {
        &self.info
    }

    /// The driver's counters, NIC-wide and per queue.
    pub fn stats(&self) -> &StatsView {
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
            commands: self.commands[0].clone(),
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
                    if self.channels.first().is_some_and(|c| c.relid == relid) =>
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
    /// RNDIS HALT, drain, revoke buffers, close subchannels then the primary, tear the
    /// GPADLs down, unload. With `host_alive` false only local state is dropped.
    pub fn shutdown(mut self, host_alive: bool) -> Result<(), GuestError> {
        self.stop.store(true, Ordering::Release);
        for c in &self.commands {
            c.wake();
        }
        let drivers: Vec<Option<Driver>> = self
            .threads
            .drain(..)
            .map(|t| t.join().ok().and_then(Result::ok))
            .collect();
        if let Some(tap) = drivers
            .first()
            .and_then(|d| d.as_ref())
            .and_then(|d| d.tap.as_ref())
        {
            let _ = tap.set_carrier(false);
        }
        if !host_alive || drivers.iter().any(Option::is_none) {
            return Ok(());
        }
        let mut drivers: Vec<Driver> = drivers.into_iter().flatten().collect();
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let _ = drivers[0].send_halt(id);
        for d in &mut drivers {
            let _ = d.drain(Duration::from_secs(2));
        }
        let primary = &mut drivers[0];
        let _ = primary.send_nvsp(
            &NvspMessage::RevokeReceiveBuffer(nw::RevokeBuffer {
                id: U16::new(nw::RECEIVE_BUFFER_ID),
            }),
            false,
        );
        let _ = primary.send_nvsp(
            &NvspMessage::RevokeSendBuffer(nw::RevokeBuffer {
                id: U16::new(nw::SEND_BUFFER_ID),
            }),
            false,
        );
        let relid = primary.relid;
        let recv = drivers
            .iter_mut()
            .filter_map(|d| d.recv.take())
            .collect::<Vec<_>>();
        let sends = drivers
            .iter_mut()
            .filter_map(|d| d.send.take())
            .collect::<Vec<_>>();
        drop(drivers);
        let mut channels = std::mem::take(&mut self.channels);
        let primary_channel = channels.remove(0);
        for sub in channels {
            self.client.close_channel(sub)?;
        }
        self.client.close_channel(primary_channel)?;
        self.client.teardown_gpadl(relid, self.recv_gpadl)?;
        if let Some(r) = recv
            .into_iter()
            .next()
            .and_then(|r| Arc::try_unwrap(r).ok())
        {
            self.client.memory().free(r.region);
        }
        self.client.teardown_gpadl(relid, self.send_gpadl)?;
        let regions: Vec<_> = sends.into_iter().filter_map(|p| p.into_region()).collect();
        for r in regions {
            self.client.memory().free(r);
        }
        self.client.unload()?;
        Ok(())
    }
}

pub use control::{Feature, FeatureState, GuestControl};
