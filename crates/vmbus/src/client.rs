//! The guest's side of the emulated VMBus control plane.
//!
//! A [`Client`] connects to the host's socket, negotiates the version (newest first,
//! passing the guest-memory memfd on every attempt), asks for offers, creates GPADLs,
//! opens and closes channels (PROTOCOL.md §3.4). Messages that arrive while it waits for
//! a particular reply (a subchannel offer, a rescind) are kept for [`Client::next_event`].
//! Every wait has a timeout: a host that stops answering is an error, not a hang.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zerocopy::little_endian::{U32, U64};

use crate::channel_msg::{
    self as msg, ChannelMessage, ChannelRelid, GpadlMessages, OpenChannel, version,
};
use crate::event::EventFd;
use crate::guid::Guid;
use crate::memory::{GuestMemory, GuestRegion, PAGE_SIZE};
use crate::socket::{ControlSocket, Received};
use crate::trace::{Dir, Tracer};

/// How long the guest waits for any one reply from the host.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the guest's control plane.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached or used.
    #[error("VMBus socket {path}: {source} (is `hvnet host` running?)")]
    Connect {
        /// Socket path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The host closed the connection.
    #[error("the host closed the VMBus connection")]
    HostGone,
    /// A socket error.
    #[error("VMBus socket: {0}")]
    Io(#[from] std::io::Error),
    /// No reply in time.
    #[error("no {what} from the host within {timeout:?}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long.
        timeout: Duration,
    },
    /// The host accepted no version the guest speaks.
    #[error("the host accepts none of VMBus versions 5.3 down to 3.0")]
    NoVersion,
    /// The host refused the connection (memory refused or failure state).
    #[error("the host refused the connection (connection state {0})")]
    Refused(u8),
    /// A GPADL could not be created.
    #[error("the host refused GPADL {gpadl} on relid {relid} (status {status:#x})")]
    Gpadl {
        /// Relid.
        relid: u32,
        /// GPADL handle.
        gpadl: u32,
        /// Status.
        status: u32,
    },
    /// A GPADL is too large for one message sequence.
    #[error("GPADL of {pages} pages is too large (at most 8190)")]
    GpadlTooLarge {
        /// Pages.
        pages: usize,
    },
    /// A channel could not be opened.
    #[error("the host refused to open channel {relid} (status {status:#x})")]
    Open {
        /// Relid.
        relid: u32,
        /// Status.
        status: u32,
    },
}

/// A channel offer as the guest keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// Relid.
    pub relid: u32,
    /// Device class (the NIC class for a synthetic NIC).
    pub class_id: Guid,
    /// Device instance.
    pub instance_id: Guid,
    /// 0 primary, 1… subchannel.
    pub sub_channel_index: u16,
    /// Connection id for signals (carried, unused by the emulation).
    pub connection_id: u32,
}

/// Unsolicited host messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new offer (a subchannel, or a device that appeared).
    Offer(Offer),
    /// A channel was rescinded.
    Rescind(u32),
}

/// A message received and kept for later.
#[derive(Clone)]
struct Stored {
    bytes: [u8; msg::MAX_MESSAGE_SIZE],
    len: usize,
}

impl Stored {
    fn message(&self) -> Option<ChannelMessage<'_>> {
        ChannelMessage::parse(&self.bytes[..self.len]).ok()
    }
}

/// The guest's VMBus connection.
pub struct Client {
    sock: ControlSocket,
    memory: Arc<GuestMemory>,
    version: u32,
    tracer: Option<Arc<Tracer>>,
    pending: VecDeque<Stored>,
    next_gpadl: u32,
}

/// A channel opened with its ring pair, ready for the data path.
pub struct OpenedChannel {
    /// Relid.
    pub relid: u32,
    /// The rings' memory (outbound ring first, then inbound).
    pub region: GuestRegion,
    /// The ring GPADL handle.
    pub gpadl: u32,
    /// Pages from the start of `region` to the inbound ring.
    pub inbound_offset_pages: u32,
    /// The guest signals this after writing the outbound ring.
    pub guest_to_host: EventFd,
    /// The host signals this after writing the inbound ring.
    pub host_to_guest: EventFd,
}

impl Client {
    /// Connects and negotiates a version, newest first (5.3 down to 3.0, PROTOCOL.md
    /// §3.3), passing the guest memory with every INITIATE_CONTACT.
    pub fn connect(
        path: &Path,
        memory: Arc<GuestMemory>,
        tracer: Option<Arc<Tracer>>,
    ) -> Result<Self, ClientError> {
        let sock = ControlSocket::connect(path).map_err(|source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        let mut client = Self {
            sock,
            memory,
            version: 0,
            tracer,
            pending: VecDeque::new(),
            next_gpadl: 0x100,
        };
        for v in version::LINUX_ORDER
            .iter()
            .copied()
            .filter(|&v| (version::HOST_MIN..=version::GUEST_START).contains(&v))
        {
            let target_info = if msg::InitiateContact::uses_interrupt_page(v) {
                0
            } else {
                msg::InitiateContact::target_info(2, 0, 0)
            };
            let contact = ChannelMessage::InitiateContact(msg::InitiateContact {
                version_requested: U32::new(v),
                target_vcpu: U32::ZERO,
                interrupt_page_or_target_info: U64::new(target_info),
                monitor_page1: U64::ZERO,
                monitor_page2: U64::ZERO,
            });
            let memfd = client.memory.fd();
            client.send_with_fds(&contact, &[memfd])?;
            let reply = client.wait_for("VERSION_RESPONSE", |m| {
                matches!(m, ChannelMessage::VersionResponse(_))
            })?;
            let Some(ChannelMessage::VersionResponse(r)) = reply.message() else {
                unreachable!("matched above")
            };
            if r.version_supported != 0 {
                if r.connection_state != msg::connection_state::SUCCESSFUL {
                    return Err(ClientError::Refused(r.connection_state));
                }
                client.version = v;
                return Ok(client);
            }
        }
        Err(ClientError::NoVersion)
    }

    /// The negotiated VMBus version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The guest memory this connection shares.
    pub fn memory(&self) -> &Arc<GuestMemory> {
        &self.memory
    }

    fn send_with_fds(
        &self,
        m: &ChannelMessage<'_>,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<(), ClientError> {
        let mut buf = [0u8; msg::MAX_MESSAGE_SIZE];
        let n = m.emit(&mut buf).expect("guest messages are well formed");
        crate::server::trace_message(self.tracer.as_deref(), Dir::Tx, m, &buf[..n]);
        self.sock.send(&buf[..n], fds).map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe
                || e.kind() == std::io::ErrorKind::ConnectionReset
            {
                ClientError::HostGone
            } else {
                ClientError::Io(e)
            }
        })
    }

    fn send(&self, m: &ChannelMessage<'_>) -> Result<(), ClientError> {
        self.send_with_fds(m, &[])
    }

    /// Receives one message (waiting up to `timeout`), traced; None on timeout.
    fn recv(&mut self, timeout: Duration) -> Result<Option<Stored>, ClientError> {
        if !self.sock.wait_readable(Some(timeout)) {
            return Ok(None);
        }
        let mut s = Stored {
            bytes: [0; msg::MAX_MESSAGE_SIZE],
            len: 0,
        };
        match self.sock.recv(&mut s.bytes)? {
            Received::Closed => Err(ClientError::HostGone),
            Received::Message(n, _fds) => {
                // Descriptors from the host are never expected; dropping closes them.
                s.len = n.min(msg::MAX_MESSAGE_SIZE);
                match ChannelMessage::parse(&s.bytes[..s.len]) {
                    Ok(m) => {
                        crate::server::trace_message(
                            self.tracer.as_deref(),
                            Dir::Rx,
                            &m,
                            &s.bytes[..s.len],
                        );
                        Ok(Some(s))
                    }
                    Err(e) => {
                        tracing::warn!("malformed VMBus message from the host dropped: {e}");
                        Ok(Some(Stored {
                            bytes: [0; msg::MAX_MESSAGE_SIZE],
                            len: 0,
                        }))
                    }
                }
            }
        }
    }

    /// Waits for the first message matching `want`; others are kept for later.
    fn wait_for(
        &mut self,
        what: &'static str,
        want: impl Fn(&ChannelMessage<'_>) -> bool,
    ) -> Result<Stored, ClientError> {
        if let Some(i) = self
            .pending
            .iter()
            .position(|s| s.message().is_some_and(|m| want(&m)))
        {
            return Ok(self.pending.remove(i).expect("found"));
        }
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout {
                    what,
                    timeout: REPLY_TIMEOUT,
                });
            }
            let Some(s) = self.recv(left)? else { continue };
            match s.message() {
                Some(m) if want(&m) => return Ok(s),
                Some(_) => self.pending.push_back(s),
                None => {}
            }
        }
    }

    /// Asks for the host's offers and returns them (REQUESTOFFERS → OFFERCHANNEL… →
    /// ALLOFFERS_DELIVERED).
    pub fn request_offers(&mut self) -> Result<Vec<Offer>, ClientError> {
        self.send(&ChannelMessage::RequestOffers)?;
        self.wait_for("ALLOFFERS_DELIVERED", |m| {
            matches!(m, ChannelMessage::AllOffersDelivered)
        })?;
        let mut offers = Vec::new();
        self.pending.retain(|s| match s.message() {
            Some(ChannelMessage::OfferChannel(o)) => {
                offers.push(offer_of(&o));
                false
            }
            _ => true,
        });
        Ok(offers)
    }

    /// Waits up to `timeout` for an unsolicited event (offer or rescind).
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(s) = self.pending.pop_front() {
                match s.message() {
                    Some(ChannelMessage::OfferChannel(o)) => {
                        return Ok(Some(Event::Offer(offer_of(&o))));
                    }
                    Some(ChannelMessage::RescindChannelOffer(r)) => {
                        return Ok(Some(Event::Rescind(r.child_relid.get())));
                    }
                    _ => {}
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left)? {
                Some(s) => self.pending.push_back(s),
                None => return Ok(None),
            }
            if left.is_zero() && self.pending.is_empty() {
                return Ok(None);
            }
        }
    }

    /// Describes `region` to the host as a GPADL on `relid` and waits for its creation.
    pub fn create_gpadl(&mut self, relid: u32, region: &GuestRegion) -> Result<u32, ClientError> {
        let pfns: Vec<U64> = region.pfns().map(U64::new).collect();
        let gpadl = self.next_gpadl;
        self.next_gpadl = self.next_gpadl.wrapping_add(1).max(1);
        let messages = GpadlMessages::whole_pages(relid, gpadl, &pfns)
            .map_err(|_| ClientError::GpadlTooLarge { pages: pfns.len() })?;
        for m in messages {
            self.send(&m)?;
        }
        let reply = self.wait_for(
            "GPADL_CREATED",
            |m| matches!(m, ChannelMessage::GpadlCreated(c) if c.gpadl.get() == gpadl),
        )?;
        let Some(ChannelMessage::GpadlCreated(c)) = reply.message() else {
            unreachable!("matched above")
        };
        match c.creation_status.get() {
            0 => Ok(gpadl),
            status => Err(ClientError::Gpadl {
                relid,
                gpadl,
                status,
            }),
        }
    }

    /// Tears a GPADL down and waits until the host no longer uses it.
    pub fn teardown_gpadl(&mut self, relid: u32, gpadl: u32) -> Result<(), ClientError> {
        self.send(&ChannelMessage::GpadlTeardown(msg::GpadlTeardown {
            child_relid: U32::new(relid),
            gpadl: U32::new(gpadl),
        }))?;
        self.wait_for(
            "GPADL_TORNDOWN",
            |m| matches!(m, ChannelMessage::GpadlTorndown(t) if t.gpadl.get() == gpadl),
        )?;
        Ok(())
    }

    /// Allocates a ring pair (`ring_pages` pages each: one control page and the data
    /// area), initialises both control pages, creates the GPADL and opens the channel
    /// with a fresh pair of eventfds.
    pub fn open_channel(
        &mut self,
        relid: u32,
        ring_pages: u32,
    ) -> Result<OpenedChannel, ClientError> {
        let ring_bytes = ring_pages as usize * PAGE_SIZE;
        let region = self
            .memory
            .alloc(2 * ring_bytes)
            .map_err(|e| ClientError::Io(std::io::Error::other(e)))?;
        // The control pages start zeroed (alloc zeroes); set feature bit 0 in both
        // (PROTOCOL.md §1.1).
        for ring in 0..2 {
            region.write(ring * ring_bytes + 0x40, &1u32.to_le_bytes());
        }
        let gpadl = match self.create_gpadl(relid, &region) {
            Ok(g) => g,
            Err(e) => {
                self.memory.free(region);
                return Err(e);
            }
        };
        let g2h = EventFd::new()?;
        let h2g = EventFd::new()?;
        let mut open = OpenChannel::zeroed();
        open.child_relid = U32::new(relid);
        open.openid = U32::new(relid);
        open.ringbuffer_gpadlhandle = U32::new(gpadl);
        open.target_vp = U32::ZERO;
        open.downstream_ringbuffer_pageoffset = U32::new(ring_pages);
        self.send_with_fds(
            &ChannelMessage::OpenChannel(open),
            &[g2h.as_fd(), h2g.as_fd()],
        )?;
        let reply = self.wait_for(
            "OPENCHANNEL_RESULT",
            |m| matches!(m, ChannelMessage::OpenChannelResult(r) if r.child_relid.get() == relid),
        )?;
        let Some(ChannelMessage::OpenChannelResult(r)) = reply.message() else {
            unreachable!("matched above")
        };
        if r.status.get() != 0 {
            let _ = self.teardown_gpadl(relid, gpadl);
            self.memory.free(region);
            return Err(ClientError::Open {
                relid,
                status: r.status.get(),
            });
        }
        Ok(OpenedChannel {
            relid,
            region,
            gpadl,
            inbound_offset_pages: ring_pages,
            guest_to_host: g2h,
            host_to_guest: h2g,
        })
    }

    /// Closes a channel (no reply, PROTOCOL.md §3.4 step 6), tears its ring GPADL down
    /// and frees the rings.
    pub fn close_channel(&mut self, channel: OpenedChannel) -> Result<(), ClientError> {
        self.send(&ChannelMessage::CloseChannel(ChannelRelid {
            child_relid: U32::new(channel.relid),
        }))?;
        self.teardown_gpadl(channel.relid, channel.gpadl)?;
        self.memory.free(channel.region);
        Ok(())
    }

    /// Tells the host a rescinded relid may be reused.
    pub fn release_relid(&mut self, relid: u32) -> Result<(), ClientError> {
        self.send(&ChannelMessage::RelidReleased(ChannelRelid {
            child_relid: U32::new(relid),
        }))
    }

    /// Ends the connection cleanly (UNLOAD → UNLOAD_RESPONSE).
    pub fn unload(&mut self) -> Result<(), ClientError> {
        self.send(&ChannelMessage::Unload)?;
        self.wait_for("UNLOAD_RESPONSE", |m| {
            matches!(m, ChannelMessage::UnloadResponse)
        })?;
        Ok(())
    }

    /// The socket, to poll for host messages (or its disappearance).
    pub fn socket(&self) -> &ControlSocket {
        &self.sock
    }
}

fn offer_of(o: &msg::OfferChannel) -> Offer {
    Offer {
        relid: o.child_relid.get(),
        class_id: o.if_type,
        instance_id: o.if_instance,
        sub_channel_index: o.sub_channel_index.get(),
        connection_id: o.connection_id.get(),
    }
}
