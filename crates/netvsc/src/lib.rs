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
pub mod steer;
pub mod tap;
mod trace;
pub mod xdp_hook;

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
    memory: Arc<GuestMemory>,
    config: GuestConfig,
    primary: vmbus::client::Offer,
    /// The channels, the primary first, then the subchannels by index (empty while
    /// detached).
    channels: Vec<OpenedChannel>,
    /// The TAP's queues (its first handle also serves ioctls).
    taps: Vec<Tap>,
    info: Arc<Mutex<NicInfo>>,
    stats: Arc<Mutex<StatsView>>,
    link: Arc<LinkState>,
    /// Each running channel's command queue (the primary's carries RNDIS requests).
    commands: Vec<CommandQueue>,
    shared: Arc<control::Shared>,
    tap: Arc<Tap>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<Driver, GuestError>>>,
    next_request: Arc<AtomicU32>,
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
        // Room for the largest buffers ethtool -G allows and up to 8 queues' rings and
        // staging buffers; a memfd costs only the pages used.
        let per_queue = 2 * config.ring_pages as usize * 4096
            + config.staging_slots as usize * driver::STAGING_SLOT
            + 8 * 4096;
        let memory_bytes =
            (31 << 20) + (15 << 20) + usize::from(config.queues.max(8)) * per_queue + (1 << 20);
        let memory = Arc::new(GuestMemory::new(memory_bytes)?);
        let mut client =
            Client::connect(&config.vmbus_socket, memory.clone(), config.tracer.clone())?;
        let offers = client.request_offers()?;
        let primary = offers
            .iter()
            .find(|o| o.class_id == NETVSC_CLASS && o.sub_channel_index == 0)
            .copied()
            .ok_or(GuestError::NoNic)?;
        // Always a multi-queue TAP, so that `ethtool -L` can add queues later.
        let tap = Tap::create_queues(&config.ifname, 2)
            .map_err(GuestError::Tap)?
            .into_iter()
            .next()
            .expect("one queue");
        let control_tap = Arc::new(tap.try_clone().map_err(GuestError::Tap)?);
        let mut guest = Self {
            client,
            memory,
            config: config.clone(),
            primary,
            channels: Vec::new(),
            taps: vec![tap],
            info: Arc::default(),
            stats: Arc::default(),
            link: Arc::default(),
            commands: Vec::new(),
            shared: Arc::new(control::Shared::default()),
            tap: control_tap,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            next_request: Arc::new(AtomicU32::new(1)),
            failure: Arc::default(),
            recv_gpadl: 0,
            send_gpadl: 0,
        };
        // Default: L4 hashing for all four flow types (§9.3).
        guest.shared.l4_hash.store(0xF, Ordering::Relaxed);
        guest.attach(None)?;
        Ok(guest)
    }

    /// Brings the data path up on the (closed) primary channel: NVSP and RNDIS bring-up,
    /// subchannels, RSS, packet filter, one thread per queue. `previous` carries the
    /// features a re-attach keeps.
    fn attach(&mut self, previous: Option<Arc<offload::Features>>) -> Result<(), GuestError> {
        let config = self.config.clone();
        let relid = self.primary.relid;
        let channel = self.client.open_channel(relid, config.ring_pages)?;
        let rings = GuestRings::new(&channel)?;
        let mut driver = Driver::new(
            rings,
            vmbus::event::EventFd::from_fd(channel.guest_to_host.try_clone_fd()?)?,
            vmbus::event::EventFd::from_fd(channel.host_to_guest.try_clone_fd()?)?,
            relid,
            &self.memory,
            config.staging_slots,
            config.tracer.clone(),
        )?;
        driver.link = self.link.clone();
        let nic_stats = self.stats.lock().unwrap().nic.clone();
        driver.stats = nic_stats.clone();
        self.channels = vec![channel];
        let mut info = NicInfo {
            vmbus_version: self.client.version(),
            instance_id: self.primary.instance_id.to_string(),
            ..Default::default()
        };
        bringup::bring_up(
            &mut self.client,
            &mut driver,
            relid,
            &config,
            &mut info,
            &self.memory,
            &self.next_request,
        )?;
        // A re-attach keeps the user's feature switches (LRO goes back to the host).
        if let Some(prev) = previous {
            driver.features = prev.clone();
            if prev.caps.rsc && !prev.lro.load(Ordering::Relaxed) {
                let id = self.next_request.fetch_add(1, Ordering::Relaxed);
                let set = rndis_io::set(
                    id,
                    rndis::oid::TCP_OFFLOAD_PARAMETERS,
                    &control::lro_parameters(false, info.nvsp_version)?,
                );
                let reply = driver.rndis_request(&set, id, "SET_C (LRO)")?;
                rndis_io::expect_set_complete(&reply, "LRO")?;
            }
        }
        let subchannels = bringup::open_subchannels(
            &mut self.client,
            &mut driver,
            self.primary.instance_id,
            &config,
            &self.memory,
            &self.next_request,
            &self.shared,
        )?;
        info.queues = 1 + subchannels.len() as u32;

        // One TAP queue per channel: open more, or close the extra ones.
        let queues = info.queues as usize;
        while self.taps.len() < queues {
            let more = Tap::create_queues(&config.ifname, 2).map_err(GuestError::Tap)?;
            self.taps.extend(more.into_iter().take(1));
        }
        self.taps.truncate(queues.max(1));
        let mut taps = self.taps.iter();
        let tap = taps
            .next()
            .expect("one queue")
            .try_clone()
            .map_err(GuestError::Tap)?;
        tap.set_offload(driver.features.tun_flags())
            .map_err(GuestError::Tap)?;
        tap.set_mac(info.mac).map_err(GuestError::Tap)?;
        tap.set_mtu(info.mtu).map_err(GuestError::Tap)?;
        tap.set_carrier(self.link.up.load(Ordering::Relaxed))
            .map_err(GuestError::Tap)?;
        tap.set_up(true).map_err(GuestError::Tap)?;
        driver.tap = Some(tap);

        // The interface is up: set the packet filter as Linux does on open (§4.5 step 9).
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let set = rndis_io::set(
            id,
            rndis::oid::GEN_CURRENT_PACKET_FILTER,
            &rndis::oid::packet_filter::LINUX_OPEN.to_le_bytes(),
        );
        let reply = driver.rndis_request(&set, id, "SET_C (packet filter)")?;
        rndis_io::expect_set_complete(&reply, "packet filter")?;

        self.recv_gpadl = driver.recv.as_ref().map_or(0, |r| r.gpadl);
        self.send_gpadl = driver.send_gpadl;
        {
            let mut stats = self.stats.lock().unwrap();
            while stats.queues.len() < queues {
                stats.queues.push(Arc::default());
            }
            stats.active = queues;
            driver.queue = stats.queues[0].clone();
        }
        *self.info.lock().unwrap() = info;
        let features = driver.features.clone();
        driver.xdp = self.shared.xdp.clone();
        let mut drivers = vec![driver];
        for (q, (opened, mut d)) in subchannels.into_iter().enumerate() {
            d.tap = Some(
                taps.next()
                    .expect("one TAP queue per channel")
                    .try_clone()
                    .map_err(GuestError::Tap)?,
            );
            d.queue = self.stats.lock().unwrap().queues[q + 1].clone();
            d.xdp = self.shared.xdp.clone();
            self.channels.push(opened);
            drivers.push(d);
        }
        self.commands = drivers.iter().map(|d| d.commands.clone()).collect();
        if drivers.len() > 1 {
            let steer = Arc::new(steer::Steer::new(drivers.len() as u32, self.shared.clone()));
            steer.set_wakers(self.commands.clone());
            let table = *drivers[0].send_table.lock().unwrap();
            if let Some(t) = table {
                steer.set_table(&t);
            }
            for (q, d) in drivers.iter_mut().enumerate() {
                d.steer = Some(steer.clone());
                d.queue_index = q as u32;
            }
        }
        self.stop = Arc::new(AtomicBool::new(false));
        for (q, driver) in drivers.into_iter().enumerate() {
            let stop = self.stop.clone();
            let failure = self.failure.clone();
            self.threads.push(
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
        let (nvsp_version, queues) = {
            let info = self.info.lock().unwrap();
            (info.nvsp_version, info.queues)
        };
        self.shared.set_control(Some(control::Handles {
            commands: self.commands[0].clone(),
            features,
            nvsp_version,
            queues,
        }));
        Ok(())
    }

    /// Stops the data path and tears it down to the closed primary channel (§13
    /// "Detach", §4.14): HALT, drain, revoke buffers, close subchannels then the
    /// primary, tear the buffers' GPADLs down. The TAP and the VMBus connection stay.
    fn detach(&mut self) -> Result<Option<Arc<offload::Features>>, GuestError> {
        self.shared.set_control(None);
        let rss = self.shared.rss.lock().unwrap().clone();
        *self.shared.kept_rss.lock().unwrap() = rss;
        self.stop.store(true, Ordering::Release);
        for c in &self.commands {
            c.wake();
        }
        let drivers: Vec<Option<Driver>> = self
            .threads
            .drain(..)
            .map(|t| t.join().ok().and_then(Result::ok))
            .collect();
        self.commands.clear();
        if drivers.is_empty() || drivers.iter().any(Option::is_none) {
            return Err(GuestError::Protocol("a data path thread failed".into()));
        }
        let mut drivers: Vec<Driver> = drivers.into_iter().flatten().collect();
        let features = drivers[0].features.clone();
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
        let mut recv: Vec<_> = drivers.iter_mut().filter_map(|d| d.recv.take()).collect();
        let sends: Vec<_> = drivers.iter_mut().filter_map(|d| d.send.take()).collect();
        let own: Vec<_> = drivers.into_iter().flat_map(Driver::into_regions).collect();
        // Keep one handle on the receive buffer; with the others gone it can be freed.
        let last = recv.pop();
        drop(recv);
        let recv = last;
        let mut channels = std::mem::take(&mut self.channels);
        let primary_channel = channels.remove(0);
        let subs: Vec<u32> = channels.iter().map(|c| c.relid).collect();
        for sub in channels {
            self.client.close_channel(sub)?;
        }
        self.client.close_channel(primary_channel)?;
        self.client.teardown_gpadl(relid, self.recv_gpadl)?;
        if let Some(r) = recv.and_then(|r| Arc::try_unwrap(r).ok()) {
            self.client.memory().free(r.region);
        }
        for r in own {
            self.client.memory().free(r);
        }
        self.client.teardown_gpadl(relid, self.send_gpadl)?;
        let regions: Vec<_> = sends.into_iter().filter_map(|p| p.into_region()).collect();
        for r in regions {
            self.client.memory().free(r);
        }
        // Closing the primary rescinds the subchannels: release their relids.
        let deadline = std::time::Instant::now() + driver::REQUEST_TIMEOUT;
        let mut pending = subs;
        while !pending.is_empty() && std::time::Instant::now() < deadline {
            if let Some(Event::Rescind(r)) = self.client.next_event(Duration::from_millis(100))?
                && let Some(i) = pending.iter().position(|&p| p == r)
            {
                pending.remove(i);
                self.client.release_relid(r)?;
            }
        }
        Ok(Some(features))
    }

    /// Rebuilds the data path with new queue and buffer settings (ethtool -L/-G), as
    /// the Linux driver does: detach, then attach; the TAP and its addresses stay. On
    /// failure the old settings are tried again.
    pub fn reconfigure(
        &mut self,
        queues: Option<u16>,
        rx: Option<u32>,
        tx: Option<u32>,
    ) -> Result<(), GuestError> {
        let old = self.config.clone();
        if let Some(q) = queues {
            self.config.queues = q;
        }
        if let Some(r) = rx {
            self.config.rx_sections = r;
        }
        if let Some(t) = tx {
            self.config.tx_sections = t;
        }
        let features = self.detach()?;
        match self.attach(features.clone()) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.config = old;
                let _ = self.detach_partial();
                self.attach(features)?;
                Err(e)
            }
        }
    }

    /// After a failed attach: closes whatever channels were opened.
    fn detach_partial(&mut self) -> Result<(), GuestError> {
        for c in std::mem::take(&mut self.channels).into_iter().rev() {
            self.client.close_channel(c)?;
        }
        Ok(())
    }

    /// What bring-up negotiated.
    pub fn info(&self) -> NicInfo {
        self.info.lock().unwrap().clone()
    }

    /// The negotiated state, shared (it changes when ethtool rebuilds the data path).
    pub fn info_shared(&self) -> Arc<Mutex<NicInfo>> {
        self.info.clone()
    }

    /// The driver's counters, NIC-wide and per queue.
    pub fn stats(&self) -> Arc<Mutex<StatsView>> {
        self.stats.clone()
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
        &self.config.ifname
    }

    /// A handle for run-time requests from other threads.
    pub fn control(&self) -> GuestControl {
        GuestControl {
            shared: self.shared.clone(),
            next_request: self.next_request.clone(),
            tap: self.tap.clone(),
        }
    }

    /// Watches the VMBus connection until `stop` is set, the host goes away, the NIC is
    /// rescinded or the data path fails; carries out data-path rebuilds asked for
    /// through [`GuestControl`] meanwhile.
    pub fn wait(&mut self, stop: &AtomicBool) -> Exit {
        loop {
            if stop.load(Ordering::Relaxed) {
                return Exit::Stopped;
            }
            if let Some(f) = self.failure.lock().unwrap().take() {
                return Exit::Failed(f);
            }
            if let Some((req, reply)) = self.shared.take_rebuild() {
                let r = self.reconfigure(req.queues, req.rx, req.tx);
                if let Err(e) = &r {
                    tracing::warn!("data path rebuild failed: {e}");
                }
                let _ = reply.send(r.map_err(|e| e.to_string()));
                if self.threads.is_empty() {
                    return Exit::Failed("the data path could not be rebuilt".into());
                }
                continue;
            }
            match self.client.next_event(Duration::from_millis(100)) {
                Ok(None) => {}
                Ok(Some(Event::Rescind(relid))) if relid == self.primary.relid => {
                    return Exit::Rescinded;
                }
                Ok(Some(_)) => {}
                Err(ClientError::HostGone) => return Exit::HostGone,
                Err(e) => return Exit::Failed(e.to_string()),
            }
        }
    }

    /// Stops the data path and tears the NIC down in the Linux driver's order (§4.14),
    /// then unloads. With `host_alive` false only local state is dropped.
    pub fn shutdown(mut self, host_alive: bool) -> Result<(), GuestError> {
        if let Some(tap) = self.taps.first() {
            let _ = tap.set_carrier(false);
        }
        if !host_alive {
            self.stop.store(true, Ordering::Release);
            for c in &self.commands {
                c.wake();
            }
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
            return Ok(());
        }
        self.detach()?;
        self.client.unload()?;
        Ok(())
    }
}

pub use control::{Feature, FeatureState, GuestControl};
