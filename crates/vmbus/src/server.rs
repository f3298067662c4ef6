//! The emulated VMBus host: the control plane one VM's guest talks to.
//!
//! A [`Server`] listens on one Unix socket per VM and serves one guest connection at a
//! time, following PROTOCOL.md §3: contact and version (with the guest-memory memfd),
//! offers, GPADLs, open and close, rescind, unload. Channels are handed to a [`Device`]
//! (netvsp) when opened; the device owns their rings and threads. The guest is hostile:
//! every message is validated, malformed ones are counted and answered with a failure
//! status or dropped, and a protocol violation that leaves no sane state ends the
//! connection — never the process.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zerocopy::little_endian::{U16, U32};

use crate::channel_msg::{
    self as msg, ChannelMessage, ChannelRelid, GpadlCreated, GpadlTorndown, ModifyChannelResponse,
    OfferChannel, OpenChannelResult, VersionResponse, version,
};
use crate::event::{EventFd, wait_any};
use crate::guid::Guid;
use crate::memory::{GpadlMapping, HostMemory};
use crate::socket::{ControlListener, ControlSocket, Received};
use crate::trace::{Dir, Tracer};

/// A channel the guest opened, handed to the device that offered it.
pub struct OpenRequest {
    /// The channel's relid.
    pub relid: u32,
    /// 0 for the primary channel, 1… for subchannels.
    pub sub_channel_index: u16,
    /// The ring GPADL, mapped: outbound (G→H) ring at offset 0.
    pub ring: Arc<GpadlMapping>,
    /// Pages from the start of `ring` to the inbound (H→G) ring.
    pub downstream_offset_pages: u32,
    /// Signalled by the guest when it writes the G→H ring (the host waits on it).
    pub guest_to_host: EventFd,
    /// Signalled by the host when it writes the H→G ring.
    pub host_to_guest: EventFd,
    /// The connection, for guest memory and buffer GPADLs.
    pub connection: Arc<Connection>,
}

/// A synthetic device (netvsp's NIC) behind the VMBus server.
pub trait Device: Send + Sync {
    /// The device class GUID (the NIC class for netvsp).
    fn class_id(&self) -> Guid;
    /// The device instance GUID, stable per device.
    fn instance_id(&self) -> Guid;
    /// Starts serving an opened channel. An error is returned to the guest as a non-zero
    /// OPENCHANNEL_RESULT status.
    fn open(&self, request: OpenRequest) -> Result<(), String>;
    /// Stops serving a channel (CLOSECHANNEL, rescind or disconnect); returns once the
    /// device no longer touches its ring.
    fn close(&self, relid: u32);
    /// The guest connection ended (UNLOAD or EOF): every channel is already closed.
    fn disconnected(&self);
}

/// Configuration of one VM's VMBus endpoint.
pub struct ServerConfig {
    /// Socket path.
    pub path: PathBuf,
    /// Highest VMBus version accepted (the profile's); the lowest is 3.0.
    pub max_version: u32,
    /// Where to trace control messages, if anywhere.
    pub tracer: Option<Arc<Tracer>>,
}

/// Counters of the control plane.
#[derive(Default, Debug)]
pub struct ServerStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Malformed or out-of-state messages.
    pub protocol_errors: AtomicU64,
}

/// Requests from a device's thread to the connection's control thread.
enum Command {
    /// Offer subchannels `1..=count` of the device's primary channel.
    OfferSubchannels { count: u16 },
    /// A device released a GPADL it held: deferred teardowns may complete now.
    Recheck,
}

/// State shared between the control thread and the device's channel threads.
pub struct Connection {
    memory: HostMemory,
    gpadls: Mutex<HashMap<u32, Gpadl>>,
    commands: Mutex<Vec<Command>>,
    wake: EventFd,
}

struct Gpadl {
    relid: u32,
    pfns: Vec<u64>,
    /// Pages still expected in GPADL_BODY messages.
    missing: usize,
    mapping: Option<Arc<GpadlMapping>>,
    teardown_requested: bool,
}

impl Connection {
    /// The guest's memory, for GPA-direct ranges.
    pub fn memory(&self) -> &HostMemory {
        &self.memory
    }

    /// Maps a completed GPADL that belongs to `relid` (a receive or send buffer).
    /// Returns None for an unknown, incomplete, foreign or torn-down handle.
    pub fn gpadl(&self, relid: u32, handle: u32) -> Option<Arc<GpadlMapping>> {
        let mut gpadls = self.gpadls.lock().unwrap();
        let g = gpadls.get_mut(&handle)?;
        if g.relid != relid || g.missing != 0 || g.teardown_requested {
            return None;
        }
        if g.mapping.is_none() {
            g.mapping = Some(Arc::new(self.memory.map_gpadl(&g.pfns).ok()?));
        }
        g.mapping.clone()
    }

    /// Asks the control thread to offer `count` subchannels (after the device granted an
    /// NVSP subchannel request).
    pub fn offer_subchannels(&self, count: u16) {
        self.commands
            .lock()
            .unwrap()
            .push(Command::OfferSubchannels { count });
        self.wake.signal();
    }

    /// Tells the control thread that the device dropped a GPADL mapping it held.
    pub fn gpadl_released(&self) {
        self.commands.lock().unwrap().push(Command::Recheck);
        self.wake.signal();
    }
}

/// The VMBus server for one VM.
pub struct Server {
    config: ServerConfig,
    listener: ControlListener,
    device: Arc<dyn Device>,
    stats: Arc<ServerStats>,
    stop: Arc<AtomicBool>,
}

/// One offered channel in a connection.
struct ChannelState {
    sub_channel_index: u16,
    open: bool,
    rescinded: bool,
    ring_gpadl: Option<u32>,
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The guest went away (EOF or socket error).
    Gone,
    /// The server is shutting down.
    Stop,
}

impl Server {
    /// Binds the VM's socket.
    pub fn bind(config: ServerConfig, device: Arc<dyn Device>) -> std::io::Result<Self> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let listener = ControlListener::bind(&config.path)?;
        Ok(Self {
            config,
            listener,
            device,
            stats: Arc::default(),
            stop: Arc::default(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// Counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// A flag that makes [`Server::run`] return when set.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Serves guests one connection after another until the stop flag is set. A guest
    /// that dies is cleaned up after (implicit unload) and the next one is accepted.
    pub fn run(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            if wait_any(&[self.listener.as_fd()], Some(Duration::from_millis(200)))
                .is_none_or(|m| m == 0)
            {
                continue;
            }
            let sock = match self.listener.accept() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(path = %self.config.path.display(), "accept failed: {e}");
                    continue;
                }
            };
            self.stats.connections.fetch_add(1, Ordering::Relaxed);
            tracing::info!(path = %self.config.path.display(), "guest connected");
            let mut conn = ConnectionLoop::new(self, sock);
            let end = conn.run();
            conn.unload();
            tracing::info!(path = %self.config.path.display(), ?end, "guest disconnected");
        }
    }
}

/// The control thread's state for one guest connection.
struct ConnectionLoop<'s> {
    server: &'s Server,
    sock: ControlSocket,
    version: Option<u32>,
    shared: Option<Arc<Connection>>,
    channels: HashMap<u32, ChannelState>,
    next_relid: u32,
    offers_requested: bool,
}

impl<'s> ConnectionLoop<'s> {
    fn new(server: &'s Server, sock: ControlSocket) -> Self {
        Self {
            server,
            sock,
            version: None,
            shared: None,
            channels: HashMap::new(),
            next_relid: 1,
            offers_requested: false,
        }
    }

    fn protocol_error(&self, what: &str) {
        self.server
            .stats
            .protocol_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(path = %self.server.config.path.display(), "guest protocol error: {what}");
    }

    fn send(&self, m: &ChannelMessage<'_>) -> Result<(), End> {
        let mut buf = [0u8; msg::MAX_MESSAGE_SIZE];
        let n = m.emit(&mut buf).expect("host messages are well formed");
        trace_message(self.server.config.tracer.as_deref(), Dir::Tx, m, &buf[..n]);
        self.sock.send(&buf[..n], &[]).map_err(|_| End::Gone)
    }

    fn run(&mut self) -> End {
        let mut buf = [0u8; 512];
        loop {
            if self.server.stop.load(Ordering::Relaxed) {
                return End::Stop;
            }
            let mut fds = vec![self.sock.as_fd()];
            if let Some(c) = &self.shared {
                fds.push(c.wake.as_fd());
            }
            let ready = wait_any(&fds, Some(Duration::from_millis(200))).unwrap_or(0);
            if let Some(c) = self.shared.clone() {
                if ready & 2 != 0 {
                    c.wake.consume();
                }
                let cmds = std::mem::take(&mut *c.commands.lock().unwrap());
                for cmd in cmds {
                    match cmd {
                        Command::OfferSubchannels { count } => {
                            if let Err(e) = self.offer_subchannels(count) {
                                return e;
                            }
                        }
                        Command::Recheck => {}
                    }
                }
                if let Err(e) = self.complete_teardowns() {
                    return e;
                }
            }
            if ready & 1 == 0 {
                continue;
            }
            let (n, fds) = match self.sock.recv(&mut buf) {
                Ok(Received::Message(n, fds)) => (n, fds),
                Ok(Received::Closed) | Err(_) => return End::Gone,
            };
            if n > buf.len() {
                self.protocol_error("message longer than 240 bytes");
                return End::Gone;
            }
            let bytes = &buf[..n];
            let m = match ChannelMessage::parse(bytes) {
                Ok(m) => m,
                Err(e) => {
                    self.protocol_error(&e.to_string());
                    if !fds.is_empty() {
                        return End::Gone;
                    }
                    continue;
                }
            };
            trace_message(self.server.config.tracer.as_deref(), Dir::Rx, &m, bytes);
            if let Err(e) = self.handle(m, fds) {
                return e;
            }
        }
    }

    fn handle(&mut self, m: ChannelMessage<'_>, fds: Vec<OwnedFd>) -> Result<(), End> {
        let fd_count = fds.len();
        match m {
            ChannelMessage::InitiateContact(c) => {
                return self.contact(c.version_requested.get(), c, fds);
            }
            ChannelMessage::OpenChannel(o) => return self.open(o, fds),
            _ if fd_count > 0 => {
                // E4: descriptors on any other message end the connection.
                self.protocol_error("descriptors attached to a message that takes none");
                return Err(End::Gone);
            }
            _ => {}
        }
        if self.version.is_none() {
            self.protocol_error("message before INITIATE_CONTACT");
            return Ok(());
        }
        match m {
            ChannelMessage::RequestOffers => {
                if self.offers_requested {
                    self.protocol_error("second REQUESTOFFERS");
                    return Ok(());
                }
                self.offers_requested = true;
                let relid = self.alloc_relid();
                self.channels.insert(
                    relid,
                    ChannelState {
                        sub_channel_index: 0,
                        open: false,
                        rescinded: false,
                        ring_gpadl: None,
                    },
                );
                self.send(&ChannelMessage::OfferChannel(self.offer(relid, 0)))?;
                self.send(&ChannelMessage::AllOffersDelivered)?;
            }
            ChannelMessage::GpadlHeader(h) => {
                let relid = h.fixed.child_relid.get();
                let handle = h.fixed.gpadl.get();
                let pfns: Vec<u64> = h.pfns.iter().map(|p| p.get()).collect();
                self.gpadl_header(relid, handle, h.fixed, pfns)?;
            }
            ChannelMessage::GpadlBody(b) => {
                let handle = b.fixed.gpadl.get();
                let pfns: Vec<u64> = b.pfns.iter().map(|p| p.get()).collect();
                self.gpadl_body(handle, pfns)?;
            }
            ChannelMessage::CloseChannel(c) => self.close(c.child_relid.get())?,
            ChannelMessage::GpadlTeardown(t) => {
                let (relid, handle) = (t.child_relid.get(), t.gpadl.get());
                let shared = self.shared.clone();
                let mut gpadls = shared.as_ref().map(|s| s.gpadls.lock().unwrap());
                match gpadls.as_mut().and_then(|g| g.get_mut(&handle)) {
                    Some(g) if g.relid == relid => g.teardown_requested = true,
                    _ => {
                        drop(gpadls);
                        self.protocol_error("GPADL_TEARDOWN of an unknown GPADL");
                        return Ok(());
                    }
                }
                drop(gpadls);
                self.complete_teardowns()?;
            }
            ChannelMessage::RelidReleased(r) => {
                let relid = r.child_relid.get();
                match self.channels.get(&relid) {
                    Some(c) if c.rescinded => {
                        self.channels.remove(&relid);
                        if let Some(s) = &self.shared {
                            s.gpadls.lock().unwrap().retain(|_, g| g.relid != relid);
                        }
                    }
                    _ => self.protocol_error("RELID_RELEASED of a channel not rescinded"),
                }
            }
            ChannelMessage::ModifyChannel(mc) => {
                if self.version.unwrap_or(0) >= version::WS2022 {
                    self.send(&ChannelMessage::ModifyChannelResponse(
                        ModifyChannelResponse {
                            child_relid: mc.child_relid,
                            status: U32::ZERO,
                        },
                    ))?;
                }
            }
            ChannelMessage::Unload => {
                self.unload();
                self.send(&ChannelMessage::UnloadResponse)?;
            }
            ChannelMessage::Unknown { .. } => {}
            _ => self.protocol_error("host-to-guest message sent by the guest"),
        }
        Ok(())
    }

    fn alloc_relid(&mut self) -> u32 {
        while self.channels.contains_key(&self.next_relid) {
            self.next_relid = self.next_relid % msg::MAX_RELID + 1;
        }
        let r = self.next_relid;
        self.next_relid = self.next_relid % msg::MAX_RELID + 1;
        r
    }

    fn offer(&self, relid: u32, sub_channel_index: u16) -> OfferChannel {
        let mut o = OfferChannel::zeroed();
        o.if_type = self.server.device.class_id();
        o.if_instance = self.server.device.instance_id();
        o.sub_channel_index = U16::new(sub_channel_index);
        o.child_relid = U32::new(relid);
        o.monitorid = msg::MONITOR_ID_NONE;
        o.monitor_allocated = 0;
        o.is_dedicated_interrupt = U16::new(1);
        o.connection_id = U32::new(msg::CONNECTION_ID_BASE | relid);
        o
    }

    fn contact(
        &mut self,
        requested: u32,
        _c: msg::InitiateContact,
        fds: Vec<OwnedFd>,
    ) -> Result<(), End> {
        let reply = |supported: bool, state: u8| {
            ChannelMessage::VersionResponse(VersionResponse {
                version_supported: supported.into(),
                connection_state: state,
                padding: U16::ZERO,
                msg_conn_id: U32::new(if requested >= version::V5_0 {
                    1
                } else {
                    requested
                }),
            })
        };
        if self.version.is_some() {
            self.protocol_error("INITIATE_CONTACT on a live connection");
            return self.send(&reply(false, msg::connection_state::FAILURE));
        }
        let ok_version = (version::HOST_MIN..=self.server.config.max_version).contains(&requested);
        if !ok_version {
            return self.send(&reply(false, msg::connection_state::SUCCESSFUL));
        }
        let mut fds = fds.into_iter();
        let (Some(fd), None) = (fds.next(), fds.next()) else {
            self.protocol_error("INITIATE_CONTACT without exactly one memfd");
            return self.send(&reply(true, msg::connection_state::FAILURE));
        };
        let memory = match HostMemory::new(fd) {
            Ok(m) => m,
            Err(e) => {
                self.protocol_error(&format!("guest memory refused: {e}"));
                return self.send(&reply(true, msg::connection_state::FAILURE));
            }
        };
        self.shared = Some(Arc::new(Connection {
            memory,
            gpadls: Mutex::default(),
            commands: Mutex::default(),
            wake: EventFd::new().map_err(|_| End::Gone)?,
        }));
        self.version = Some(requested);
        self.send(&reply(true, msg::connection_state::SUCCESSFUL))
    }

    fn gpadl_created(&self, relid: u32, handle: u32, status: u32) -> Result<(), End> {
        self.send(&ChannelMessage::GpadlCreated(GpadlCreated {
            child_relid: U32::new(relid),
            gpadl: U32::new(handle),
            creation_status: U32::new(status),
        }))
    }

    fn gpadl_header(
        &mut self,
        relid: u32,
        handle: u32,
        fixed: msg::GpadlHeaderFixed,
        pfns: Vec<u64>,
    ) -> Result<(), End> {
        let shared = self.shared.clone().expect("contacted");
        let fail = |this: &Self, why: &str| {
            this.protocol_error(why);
            this.gpadl_created(relid, handle, msg::GPADL_CREATION_FAILED)
        };
        if self.channels.get(&relid).is_none_or(|c| c.rescinded) {
            return fail(self, "GPADL_HEADER for an unknown relid");
        }
        if handle == 0 || shared.gpadls.lock().unwrap().contains_key(&handle) {
            return fail(self, "GPADL handle 0 or already in use");
        }
        let Some(promised) = fixed.promised_pfn_count() else {
            return fail(self, "GPADL_HEADER with a bad range count or length");
        };
        let (offset, count) = (fixed.byte_offset.get(), fixed.byte_count.get());
        if offset >= 4096
            || count == 0
            || msg::pages_for_range(offset, count) != promised as u64
            || pfns.len() > promised
        {
            return fail(self, "GPADL_HEADER range does not match its page count");
        }
        let missing = promised - pfns.len();
        shared.gpadls.lock().unwrap().insert(
            handle,
            Gpadl {
                relid,
                pfns,
                missing,
                mapping: None,
                teardown_requested: false,
            },
        );
        if missing == 0 {
            self.finish_gpadl(handle)?;
        }
        Ok(())
    }

    fn gpadl_body(&mut self, handle: u32, pfns: Vec<u64>) -> Result<(), End> {
        let shared = self.shared.clone().expect("contacted");
        let mut gpadls = shared.gpadls.lock().unwrap();
        let Some(g) = gpadls.get_mut(&handle).filter(|g| g.missing > 0) else {
            drop(gpadls);
            self.protocol_error("GPADL_BODY for no GPADL in progress");
            return Ok(());
        };
        if pfns.len() > g.missing {
            let relid = g.relid;
            gpadls.remove(&handle);
            drop(gpadls);
            self.protocol_error("GPADL_BODY carries more pages than promised");
            return self.gpadl_created(relid, handle, msg::GPADL_CREATION_FAILED);
        }
        g.missing -= pfns.len();
        g.pfns.extend(pfns);
        let done = g.missing == 0;
        drop(gpadls);
        if done {
            self.finish_gpadl(handle)?;
        }
        Ok(())
    }

    fn finish_gpadl(&mut self, handle: u32) -> Result<(), End> {
        let shared = self.shared.clone().expect("contacted");
        let mut gpadls = shared.gpadls.lock().unwrap();
        let g = gpadls.get(&handle).expect("in progress");
        let relid = g.relid;
        let pages = shared.memory.pages();
        if g.pfns.iter().any(|&p| p >= pages) {
            gpadls.remove(&handle);
            drop(gpadls);
            self.protocol_error("GPADL names a page outside guest memory");
            return self.gpadl_created(relid, handle, msg::GPADL_CREATION_FAILED);
        }
        drop(gpadls);
        self.gpadl_created(relid, handle, 0)
    }

    fn open(&mut self, o: msg::OpenChannel, fds: Vec<OwnedFd>) -> Result<(), End> {
        let relid = o.child_relid.get();
        let result = |status: u32| {
            ChannelMessage::OpenChannelResult(OpenChannelResult {
                child_relid: o.child_relid,
                openid: o.openid,
                status: U32::new(status),
            })
        };
        const FAIL: u32 = 0xC000_0001;
        let Some(shared) = self.shared.clone() else {
            self.protocol_error("OPENCHANNEL before contact");
            return self.send(&result(FAIL));
        };
        let mut fds = fds.into_iter();
        let (Some(g2h), Some(h2g), None) = (fds.next(), fds.next(), fds.next()) else {
            self.protocol_error("OPENCHANNEL without exactly two eventfds");
            return self.send(&result(FAIL));
        };
        let Some(ch) = self.channels.get(&relid) else {
            self.protocol_error("OPENCHANNEL of an unknown relid");
            return self.send(&result(FAIL));
        };
        if ch.open || ch.rescinded {
            self.protocol_error("OPENCHANNEL of an open or rescinded channel");
            return self.send(&result(FAIL));
        }
        let sub_channel_index = ch.sub_channel_index;
        let handle = o.ringbuffer_gpadlhandle.get();
        let offset = o.downstream_ringbuffer_pageoffset.get();
        let ring = {
            let gpadls = shared.gpadls.lock().unwrap();
            match gpadls.get(&handle) {
                Some(g)
                    if g.relid == relid
                        && g.missing == 0
                        && !g.teardown_requested
                        && offset > 0
                        && (offset as usize) < g.pfns.len() =>
                {
                    Some(g.pfns.clone())
                }
                _ => None,
            }
        };
        let Some(pfns) = ring else {
            self.protocol_error("OPENCHANNEL with a bad ring GPADL or page offset");
            return self.send(&result(FAIL));
        };
        let mapping = match shared.memory.map_gpadl(&pfns) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                self.protocol_error(&format!("ring GPADL: {e}"));
                return self.send(&result(FAIL));
            }
        };
        let (Ok(g2h), Ok(h2g)) = (EventFd::from_fd(g2h), EventFd::from_fd(h2g)) else {
            self.protocol_error("OPENCHANNEL descriptors are not usable");
            return self.send(&result(FAIL));
        };
        shared
            .gpadls
            .lock()
            .unwrap()
            .get_mut(&handle)
            .expect("checked")
            .mapping = Some(mapping.clone());
        let request = OpenRequest {
            relid,
            sub_channel_index,
            ring: mapping,
            downstream_offset_pages: offset,
            guest_to_host: g2h,
            host_to_guest: h2g,
            connection: shared,
        };
        match self.server.device.open(request) {
            Ok(()) => {
                let ch = self.channels.get_mut(&relid).expect("checked");
                ch.open = true;
                ch.ring_gpadl = Some(handle);
                self.send(&result(0))
            }
            Err(e) => {
                self.protocol_error(&format!("device refused to open channel {relid}: {e}"));
                self.send(&result(FAIL))
            }
        }
    }

    fn close(&mut self, relid: u32) -> Result<(), End> {
        let Some(ch) = self.channels.get_mut(&relid) else {
            self.protocol_error("CLOSECHANNEL of an unknown relid");
            return Ok(());
        };
        if !ch.open {
            if !ch.rescinded {
                self.protocol_error("CLOSECHANNEL of a channel not open");
            }
            return Ok(());
        }
        ch.open = false;
        ch.ring_gpadl = None;
        let primary = ch.sub_channel_index == 0;
        self.server.device.close(relid);
        if primary {
            // Closing the primary ends the NIC's state; its subchannels are rescinded.
            let subs: Vec<u32> = self
                .channels
                .iter()
                .filter(|(_, c)| c.sub_channel_index != 0 && !c.rescinded)
                .map(|(r, _)| *r)
                .collect();
            for sub in subs {
                let c = self.channels.get_mut(&sub).expect("listed");
                if c.open {
                    self.server.device.close(sub);
                }
                let c = self.channels.get_mut(&sub).expect("listed");
                c.open = false;
                c.rescinded = true;
                // Its ring is no longer in use: a teardown is answered at once (§3.4 rule 8).
                c.ring_gpadl = None;
                self.send(&ChannelMessage::RescindChannelOffer(ChannelRelid {
                    child_relid: U32::new(sub),
                }))?;
            }
        }
        self.complete_teardowns()
    }

    fn offer_subchannels(&mut self, count: u16) -> Result<(), End> {
        let existing: Vec<u16> = self
            .channels
            .values()
            .filter(|c| !c.rescinded)
            .map(|c| c.sub_channel_index)
            .collect();
        for index in 1..=count {
            if existing.contains(&index) {
                continue;
            }
            let relid = self.alloc_relid();
            self.channels.insert(
                relid,
                ChannelState {
                    sub_channel_index: index,
                    open: false,
                    rescinded: false,
                    ring_gpadl: None,
                },
            );
            self.send(&ChannelMessage::OfferChannel(self.offer(relid, index)))?;
        }
        Ok(())
    }

    /// Answers deferred GPADL teardowns whose GPADL is no longer in use.
    fn complete_teardowns(&mut self) -> Result<(), End> {
        let Some(shared) = self.shared.clone() else {
            return Ok(());
        };
        let in_use_rings: Vec<u32> = self
            .channels
            .values()
            .filter_map(|c| c.ring_gpadl)
            .collect();
        let done: Vec<u32> = {
            let mut gpadls = shared.gpadls.lock().unwrap();
            let done: Vec<u32> = gpadls
                .iter()
                .filter(|(h, g)| {
                    g.teardown_requested
                        && !in_use_rings.contains(h)
                        && g.mapping.as_ref().is_none_or(|m| Arc::strong_count(m) == 1)
                })
                .map(|(h, _)| *h)
                .collect();
            for h in &done {
                gpadls.remove(h);
            }
            done
        };
        for h in done {
            self.send(&ChannelMessage::GpadlTorndown(GpadlTorndown {
                gpadl: U32::new(h),
            }))?;
        }
        Ok(())
    }

    /// Closes every channel and forgets the connection's GPADLs and memory (UNLOAD, or
    /// the guest gone).
    fn unload(&mut self) {
        let open: Vec<u32> = self
            .channels
            .iter()
            .filter(|(_, c)| c.open)
            .map(|(r, _)| *r)
            .collect();
        // Subchannels first, then the primary (as a guest closes them).
        let mut open = open;
        open.sort_by_key(|r| {
            std::cmp::Reverse(self.channels.get(r).map_or(0, |c| c.sub_channel_index))
        });
        for relid in open {
            self.server.device.close(relid);
        }
        if self.version.is_some() {
            self.server.device.disconnected();
        }
        self.channels.clear();
        self.shared = None;
        self.version = None;
        self.offers_requested = false;
    }
}

/// Writes a channel message to the trace.
pub(crate) fn trace_message(
    tracer: Option<&Tracer>,
    dir: Dir,
    m: &ChannelMessage<'_>,
    bytes: &[u8],
) {
    let Some(t) = tracer else { return };
    let mut fields = serde_json::Map::new();
    m.visit_fields(&mut |name, v| {
        fields.insert(name.into(), field_json(v));
    });
    let channel = match m {
        ChannelMessage::OfferChannel(o) => o.child_relid.get(),
        ChannelMessage::OpenChannel(o) => o.child_relid.get(),
        ChannelMessage::OpenChannelResult(o) => o.child_relid.get(),
        ChannelMessage::CloseChannel(c)
        | ChannelMessage::RescindChannelOffer(c)
        | ChannelMessage::RelidReleased(c) => c.child_relid.get(),
        ChannelMessage::GpadlHeader(h) => h.fixed.child_relid.get(),
        ChannelMessage::GpadlCreated(g) => g.child_relid.get(),
        ChannelMessage::GpadlTeardown(g) => g.child_relid.get(),
        _ => 0,
    };
    t.record(dir, channel, "vmbus", m.name(), fields, bytes);
}

fn field_json(v: msg::FieldValue<'_>) -> serde_json::Value {
    use msg::FieldValue as F;
    match v {
        F::U64(x) => x.into(),
        F::Hex(x) => format!("{x:#x}").into(),
        F::Str(s) => s.into(),
        F::Bytes(b) => crate::trace::hex(b).into(),
        F::Guid(g) => g.to_string().into(),
        F::U64List(l) => l.iter().map(|p| serde_json::Value::from(p.get())).collect(),
    }
}
