//! VMBus channel messages: the control plane between a guest and its host (PROTOCOL.md §3).
//!
//! Offers, GPADLs, channel open and close, contact and unload. Hyper-V carries each message
//! as one SynIC message; our emulation carries each as one `SOCK_SEQPACKET` datagram
//! (rule E1): the bytes from the 8-byte header on, at most [`MAX_MESSAGE_SIZE`] bytes.
//!
//! Each message body is one zerocopy struct whose layout is PROTOCOL.md §3.3 (offsets in the
//! field docs are from the message start, i.e. including the header). [`ChannelMessage`] is
//! the parsed form the rest of the code uses: [`ChannelMessage::parse`] validates a datagram
//! once, [`ChannelMessage::emit`] writes one. GPADL page lists are borrowed, never copied;
//! [`GpadlMessages`] splits a page list into one GPADL_HEADER and its GPADL_BODYs.

use core::fmt;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::guid::Guid;

/// Size of the message header (`msgtype` u32 @0, `padding` u32 @4).
pub const HEADER_SIZE: usize = 8;

/// Largest channel message: a SynIC message payload (PROTOCOL.md §3.1).
pub const MAX_MESSAGE_SIZE: usize = 240;

/// Most PFNs a GPADL_HEADER can carry (28 + 8 × 26 = 236 bytes).
pub const GPADL_HEADER_MAX_PFNS: usize = 26;

/// Most PFNs a GPADL_BODY can carry (16 + 8 × 28 = 240 bytes).
pub const GPADL_BODY_MAX_PFNS: usize = 28;

/// Most pages in a single-range GPADL: `range_buflen` (u16) = 8 + 8 × pages (PROTOCOL.md §3.3).
pub const GPADL_MAX_PAGES: usize = 8190;

/// Channel message type numbers (`msgtype` @0, PROTOCOL.md §3.2).
pub mod msgtype {
    /// H→G: a channel offer (196 bytes).
    pub const OFFERCHANNEL: u32 = 1;
    /// H→G: an offer is withdrawn.
    pub const RESCIND_CHANNELOFFER: u32 = 2;
    /// G→H: ask for all offers (header only).
    pub const REQUESTOFFERS: u32 = 3;
    /// H→G: all offers have been sent (header only).
    pub const ALLOFFERS_DELIVERED: u32 = 4;
    /// G→H: open a channel on a ring GPADL.
    pub const OPENCHANNEL: u32 = 5;
    /// H→G: result of OPENCHANNEL.
    pub const OPENCHANNEL_RESULT: u32 = 6;
    /// G→H: close a channel (no reply).
    pub const CLOSECHANNEL: u32 = 7;
    /// G→H: first part of a GPADL (range header and up to 26 PFNs).
    pub const GPADL_HEADER: u32 = 8;
    /// G→H: continuation of a GPADL (up to 28 PFNs).
    pub const GPADL_BODY: u32 = 9;
    /// H→G: a GPADL is complete (or failed).
    pub const GPADL_CREATED: u32 = 10;
    /// G→H: tear down a GPADL.
    pub const GPADL_TEARDOWN: u32 = 11;
    /// H→G: a GPADL is torn down.
    pub const GPADL_TORNDOWN: u32 = 12;
    /// G→H: the guest is done with a rescinded relid.
    pub const RELID_RELEASED: u32 = 13;
    /// G→H: start a connection at a protocol version.
    pub const INITIATE_CONTACT: u32 = 14;
    /// H→G: answer to INITIATE_CONTACT.
    pub const VERSION_RESPONSE: u32 = 15;
    /// G→H: end the connection (header only).
    pub const UNLOAD: u32 = 16;
    /// H→G: the connection is ended (header only).
    pub const UNLOAD_RESPONSE: u32 = 17;
    /// hv_sock connect request (unused by hvnet).
    pub const TL_CONNECT_REQUEST: u32 = 21;
    /// G→H: retarget a channel's interrupt (version ≥ 5.3 answers it).
    pub const MODIFYCHANNEL: u32 = 22;
    /// hv_sock connect result (unused by hvnet).
    pub const TL_CONNECT_RESULT: u32 = 23;
    /// H→G: answer to MODIFYCHANNEL.
    pub const MODIFYCHANNEL_RESPONSE: u32 = 24;
}

/// The PROTOCOL.md name of a channel message type, e.g. `"GPADL_HEADER"`, if it has one.
pub const fn message_type_name(msgtype: u32) -> Option<&'static str> {
    Some(match msgtype {
        msgtype::OFFERCHANNEL => "OFFERCHANNEL",
        msgtype::RESCIND_CHANNELOFFER => "RESCIND_CHANNELOFFER",
        msgtype::REQUESTOFFERS => "REQUESTOFFERS",
        msgtype::ALLOFFERS_DELIVERED => "ALLOFFERS_DELIVERED",
        msgtype::OPENCHANNEL => "OPENCHANNEL",
        msgtype::OPENCHANNEL_RESULT => "OPENCHANNEL_RESULT",
        msgtype::CLOSECHANNEL => "CLOSECHANNEL",
        msgtype::GPADL_HEADER => "GPADL_HEADER",
        msgtype::GPADL_BODY => "GPADL_BODY",
        msgtype::GPADL_CREATED => "GPADL_CREATED",
        msgtype::GPADL_TEARDOWN => "GPADL_TEARDOWN",
        msgtype::GPADL_TORNDOWN => "GPADL_TORNDOWN",
        msgtype::RELID_RELEASED => "RELID_RELEASED",
        msgtype::INITIATE_CONTACT => "INITIATE_CONTACT",
        msgtype::VERSION_RESPONSE => "VERSION_RESPONSE",
        msgtype::UNLOAD => "UNLOAD",
        msgtype::UNLOAD_RESPONSE => "UNLOAD_RESPONSE",
        msgtype::TL_CONNECT_REQUEST => "TL_CONNECT_REQUEST",
        msgtype::MODIFYCHANNEL => "MODIFYCHANNEL",
        msgtype::TL_CONNECT_RESULT => "TL_CONNECT_RESULT",
        msgtype::MODIFYCHANNEL_RESPONSE => "MODIFYCHANNEL_RESPONSE",
        _ => return None,
    })
}

/// The smallest valid message of a type hvnet parses (header included), per PROTOCOL.md
/// §3.2; `None` for types it does not parse. GPADL messages may carry zero PFNs here; the
/// GPADL rules (§3.4) are the host's to check.
pub const fn min_message_size(msgtype: u32) -> Option<usize> {
    Some(match msgtype {
        msgtype::OFFERCHANNEL => HEADER_SIZE + size_of::<OfferChannel>(),
        msgtype::RESCIND_CHANNELOFFER | msgtype::CLOSECHANNEL | msgtype::RELID_RELEASED => {
            HEADER_SIZE + size_of::<ChannelRelid>()
        }
        msgtype::REQUESTOFFERS
        | msgtype::ALLOFFERS_DELIVERED
        | msgtype::UNLOAD
        | msgtype::UNLOAD_RESPONSE => HEADER_SIZE,
        msgtype::OPENCHANNEL => HEADER_SIZE + size_of::<OpenChannel>(),
        msgtype::OPENCHANNEL_RESULT => HEADER_SIZE + size_of::<OpenChannelResult>(),
        msgtype::GPADL_HEADER => HEADER_SIZE + size_of::<GpadlHeaderFixed>(),
        msgtype::GPADL_BODY => HEADER_SIZE + size_of::<GpadlBodyFixed>(),
        msgtype::GPADL_CREATED => HEADER_SIZE + size_of::<GpadlCreated>(),
        msgtype::GPADL_TEARDOWN => HEADER_SIZE + size_of::<GpadlTeardown>(),
        msgtype::GPADL_TORNDOWN => HEADER_SIZE + size_of::<GpadlTorndown>(),
        msgtype::INITIATE_CONTACT => HEADER_SIZE + size_of::<InitiateContact>(),
        msgtype::VERSION_RESPONSE => HEADER_SIZE + size_of::<VersionResponse>(),
        msgtype::MODIFYCHANNEL => HEADER_SIZE + size_of::<ModifyChannel>(),
        msgtype::MODIFYCHANNEL_RESPONSE => HEADER_SIZE + size_of::<ModifyChannelResponse>(),
        _ => return None,
    })
}

/// VMBus protocol versions, `major << 16 | minor` (PROTOCOL.md §3.3 "Versions").
pub mod version {
    /// 0.13, Windows Server 2008.
    pub const WS2008: u32 = 0x0000_000D;
    /// 1.1, Windows 7.
    pub const WIN7: u32 = 0x0001_0001;
    /// 2.4, Windows Server 2012.
    pub const WS2012: u32 = 0x0002_0004;
    /// 3.0, Windows Server 2012 R2.
    pub const WS2012R2: u32 = 0x0003_0000;
    /// 4.0, Windows Server 2016.
    pub const WS2016: u32 = 0x0004_0000;
    /// 4.1.
    pub const V4_1: u32 = 0x0004_0001;
    /// 5.0: first version with `msg_sint` instead of an interrupt page.
    pub const V5_0: u32 = 0x0005_0000;
    /// 5.1.
    pub const V5_1: u32 = 0x0005_0001;
    /// 5.2, Windows Server 2019.
    pub const WS2019: u32 = 0x0005_0002;
    /// 5.3, Windows Server 2022.
    pub const WS2022: u32 = 0x0005_0003;
    /// 6.0: feature flags, 20-byte version response.
    pub const V6_0: u32 = 0x0006_0000;

    /// The versions Linux tries, newest first, one exact version per INITIATE_CONTACT.
    pub const LINUX_ORDER: [u32; 9] = [
        V6_0, WS2022, WS2019, V5_1, V5_0, V4_1, WS2016, WS2012R2, WS2012,
    ];

    /// The oldest version our host accepts (PROTOCOL.md §3.3 Decision).
    pub const HOST_MIN: u32 = WS2012R2;

    /// The version our guest starts at (PROTOCOL.md §3.3 Decision).
    pub const GUEST_START: u32 = WS2022;

    /// Major part of a version word.
    pub const fn major(v: u32) -> u16 {
        (v >> 16) as u16
    }

    /// Minor part of a version word.
    pub const fn minor(v: u32) -> u16 {
        v as u16
    }

    /// Builds a version word from its parts.
    pub const fn make(major: u16, minor: u16) -> u32 {
        (major as u32) << 16 | minor as u32
    }

    /// The dotted name of a known version, e.g. `"5.2"`.
    pub const fn name(v: u32) -> Option<&'static str> {
        Some(match v {
            WS2008 => "0.13",
            WIN7 => "1.1",
            WS2012 => "2.4",
            WS2012R2 => "3.0",
            WS2016 => "4.0",
            V4_1 => "4.1",
            V5_0 => "5.0",
            V5_1 => "5.1",
            WS2019 => "5.2",
            WS2022 => "5.3",
            V6_0 => "6.0",
            _ => return None,
        })
    }
}

/// `connection_state` values of VERSION_RESPONSE (PROTOCOL.md §3.3).
pub mod connection_state {
    /// The connection is established.
    pub const SUCCESSFUL: u8 = 0;
    /// The host lacks resources.
    pub const LOW_RESOURCES: u8 = 1;
    /// The contact failed (bad memfd, bad monitor pages, …).
    pub const FAILURE: u8 = 2;
}

/// `chn_flags` bits of OFFERCHANNEL.
pub mod offer_flags {
    /// Enumerate the device interface.
    pub const ENUMERATE_DEVICE_INTERFACE: u16 = 0x1;
    /// Named-pipe mode.
    pub const NAMED_PIPE_MODE: u16 = 0x10;
    /// hv_sock provider offer.
    pub const TLNPI_PROVIDER_OFFER: u16 = 0x2000;
}

/// `monitorid` meaning "no monitor page slot" (our host's offers, PROTOCOL.md E6).
pub const MONITOR_ID_NONE: u8 = 0xFF;

/// Our host's offer `connection_id` is `CONNECTION_ID_BASE | relid` (PROTOCOL.md E6).
pub const CONNECTION_ID_BASE: u32 = 0x2000;

/// Highest `child_relid` our host hands out.
pub const MAX_RELID: u32 = 2047;

/// GPADL_CREATED `creation_status` for a failed GPADL (as OpenVMM).
pub const GPADL_CREATION_FAILED: u32 = 0x8000_FFFF;

/// Number of 4096-byte pages, i.e. PFNs, a GPADL range of `byte_count` bytes starting
/// `byte_offset` bytes into its first page needs: `ceil((offset + count) / 4096)`.
pub const fn pages_for_range(byte_offset: u32, byte_count: u32) -> u64 {
    (byte_offset as u64 + byte_count as u64).div_ceil(4096)
}

/// The 8-byte header of every channel message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MessageHeader {
    /// Message type @0 (see [`msgtype`]).
    pub msgtype: U32,
    /// Padding @4, sent as 0, ignored on receipt.
    pub padding: U32,
}
const _: () = assert!(size_of::<MessageHeader>() == HEADER_SIZE);

/// OFFERCHANNEL body (message bytes 8..196).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct OfferChannel {
    /// @8: device class; [`crate::guid::NETVSC_CLASS`] for a NIC.
    pub if_type: Guid,
    /// @24: device instance; the same on a NIC's subchannels.
    pub if_instance: Guid,
    /// @40: reserved, 0.
    pub reserved: [u8; 16],
    /// @56: [`offer_flags`].
    pub chn_flags: U16,
    /// @58: MMIO space wanted, 0.
    pub mmio_megabytes: U16,
    /// @60: device-defined data, 0 for netvsc.
    pub user_defined: [u8; 120],
    /// @180: 0 for a primary channel, 1…N for subchannels.
    pub sub_channel_index: U16,
    /// @182: reserved, 0.
    pub reserved2: U16,
    /// @184: the channel's relid, 1…2047.
    pub child_relid: U32,
    /// @188: monitor slot, [`MONITOR_ID_NONE`] from our host.
    pub monitorid: u8,
    /// @189: bit 0 = monitor allocated.
    pub monitor_allocated: u8,
    /// @190: bit 0 = dedicated interrupt.
    pub is_dedicated_interrupt: U16,
    /// @192: connection id for guest→host signals.
    pub connection_id: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<OfferChannel>() == 196);

/// Body of the messages that carry only a relid: RESCIND_CHANNELOFFER, CLOSECHANNEL,
/// RELID_RELEASED (12 bytes with the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ChannelRelid {
    /// @8: the channel.
    pub child_relid: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<ChannelRelid>() == 12);

/// OPENCHANNEL body (message bytes 8..148).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct OpenChannel {
    /// @8: the channel.
    pub child_relid: U32,
    /// @12: echoed in the result (Linux: = relid).
    pub openid: U32,
    /// @16: the GPADL holding both rings.
    pub ringbuffer_gpadlhandle: U32,
    /// @20: virtual processor for interrupts (`0xFFFFFFFF`: none, OpenVMM).
    pub target_vp: U32,
    /// @24: page offset of the host→guest ring inside the GPADL.
    pub downstream_ringbuffer_pageoffset: U32,
    /// @28: device-defined data, 0 for netvsc.
    pub userdata: [u8; 120],
}
const _: () = assert!(HEADER_SIZE + size_of::<OpenChannel>() == 148);

/// OPENCHANNEL_RESULT body (20 bytes with the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct OpenChannelResult {
    /// @8: the channel.
    pub child_relid: U32,
    /// @12: the request's `openid`.
    pub openid: U32,
    /// @16: 0 = open, else failure.
    pub status: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<OpenChannelResult>() == 20);

/// Fixed part of GPADL_HEADER (message bytes 8..28), single range; PFNs follow @28.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GpadlHeaderFixed {
    /// @8: the channel the GPADL belongs to.
    pub child_relid: U32,
    /// @12: the GPADL handle, chosen by the guest.
    pub gpadl: U32,
    /// @16: bytes of all range data, PFNs in bodies included (8 + 8 × pages for one range).
    pub range_buflen: U16,
    /// @18: number of ranges (Linux: 1).
    pub rangecount: U16,
    /// @20: bytes in the first range.
    pub byte_count: U32,
    /// @24: offset of the range in its first page (Linux: 0).
    pub byte_offset: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<GpadlHeaderFixed>() == 28);

impl GpadlHeaderFixed {
    /// For a single-range GPADL, the number of PFNs `range_buflen` promises in total
    /// (header and bodies); `None` if `rangecount ≠ 1` or `range_buflen` is not 8 + 8n.
    pub fn promised_pfn_count(&self) -> Option<usize> {
        let buflen = usize::from(self.range_buflen.get());
        if self.rangecount.get() != 1 || buflen < 8 || !buflen.is_multiple_of(8) {
            return None;
        }
        Some((buflen - 8) / 8)
    }
}

/// GPADL_HEADER: the fixed part and the PFNs it carries (borrowed from the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpadlHeader<'a> {
    /// Relid, handle and range descriptor.
    pub fixed: GpadlHeaderFixed,
    /// The PFNs from @28 (whole 8-byte entries present in the message; at most 26).
    pub pfns: &'a [U64],
}

/// Fixed part of GPADL_BODY (message bytes 8..16); PFNs follow @16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GpadlBodyFixed {
    /// @8: sequence number; Linux leaves it 0, so it is ignored.
    pub msgnumber: U32,
    /// @12: the GPADL handle being continued.
    pub gpadl: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<GpadlBodyFixed>() == 16);

/// GPADL_BODY: the fixed part and the PFNs it carries (borrowed from the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpadlBody<'a> {
    /// Sequence number and handle.
    pub fixed: GpadlBodyFixed,
    /// The PFNs from @16 (whole 8-byte entries present in the message; at most 28).
    pub pfns: &'a [U64],
}

/// GPADL_CREATED body (20 bytes with the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GpadlCreated {
    /// @8: the channel.
    pub child_relid: U32,
    /// @12: the GPADL handle.
    pub gpadl: U32,
    /// @16: 0 = created, else failure (e.g. [`GPADL_CREATION_FAILED`]).
    pub creation_status: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<GpadlCreated>() == 20);

/// GPADL_TEARDOWN body (16 bytes with the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GpadlTeardown {
    /// @8: the channel.
    pub child_relid: U32,
    /// @12: the GPADL handle.
    pub gpadl: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<GpadlTeardown>() == 16);

/// GPADL_TORNDOWN body (12 bytes with the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct GpadlTorndown {
    /// @8: the GPADL handle.
    pub gpadl: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<GpadlTorndown>() == 12);

/// INITIATE_CONTACT body (40 bytes with the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct InitiateContact {
    /// @8: the one version asked for (see [`version`]).
    pub version_requested: U32,
    /// @12: virtual CPU for host messages.
    pub target_vcpu: U32,
    /// @16: interrupt page GPA for versions < 5.0; from 5.0 the target info, read with
    /// [`InitiateContact::msg_sint`], [`InitiateContact::msg_vtl`],
    /// [`InitiateContact::feature_flags`], built with [`InitiateContact::target_info`].
    pub interrupt_page_or_target_info: U64,
    /// @24: monitor page 1 GPA (host→guest), 0 from our guest.
    pub monitor_page1: U64,
    /// @32: monitor page 2 GPA (guest→host), 0 from our guest.
    pub monitor_page2: U64,
}
const _: () = assert!(HEADER_SIZE + size_of::<InitiateContact>() == 40);

impl InitiateContact {
    /// Whether `version` carries an interrupt page GPA @16 (versions before 5.0).
    pub const fn uses_interrupt_page(version: u32) -> bool {
        version < version::V5_0
    }

    /// The @16 word for versions ≥ 5.0: `msg_sint` u8 @16, `msg_vtl` u8 @17, reserved,
    /// `feature_flags` u32 @20 (6.0 only).
    pub const fn target_info(msg_sint: u8, msg_vtl: u8, feature_flags: u32) -> u64 {
        msg_sint as u64 | (msg_vtl as u64) << 8 | (feature_flags as u64) << 32
    }

    /// `msg_sint` @16 (versions ≥ 5.0; Linux sends 2).
    pub fn msg_sint(&self) -> u8 {
        self.interrupt_page_or_target_info.get() as u8
    }

    /// `msg_vtl` @17 (versions ≥ 5.0; 0).
    pub fn msg_vtl(&self) -> u8 {
        (self.interrupt_page_or_target_info.get() >> 8) as u8
    }

    /// `feature_flags` @20 (version 6.0).
    pub fn feature_flags(&self) -> u32 {
        (self.interrupt_page_or_target_info.get() >> 32) as u32
    }
}

/// VERSION_RESPONSE body (16 bytes with the header; 6.0 hosts send 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VersionResponse {
    /// @8: 1 if the requested version is supported.
    pub version_supported: u8,
    /// @9: [`connection_state`].
    pub connection_state: u8,
    /// @10: padding.
    pub padding: U16,
    /// @12: the message connection id for versions ≥ 5.0 (OpenVMM: 1), else the version.
    pub msg_conn_id: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<VersionResponse>() == 16);

/// MODIFYCHANNEL body (16 bytes with the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ModifyChannel {
    /// @8: the channel.
    pub child_relid: U32,
    /// @12: new target virtual processor.
    pub target_vp: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<ModifyChannel>() == 16);

/// MODIFYCHANNEL_RESPONSE body (16 bytes with the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ModifyChannelResponse {
    /// @8: the channel.
    pub child_relid: U32,
    /// @12: 0 = done.
    pub status: U32,
}
const _: () = assert!(HEADER_SIZE + size_of::<ModifyChannelResponse>() == 16);

/// Why bytes are not a valid channel message, or a message cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelMessageError {
    /// Fewer bytes than the 8-byte header.
    #[error("channel message of {len} bytes is shorter than its 8-byte header")]
    NoHeader {
        /// Bytes received.
        len: usize,
    },
    /// More bytes than a SynIC message holds.
    #[error("channel message type {msgtype} has {len} bytes, more than {max}")]
    TooLong {
        /// The message type.
        msgtype: u32,
        /// Bytes received (or to be written).
        len: usize,
        /// [`MAX_MESSAGE_SIZE`].
        max: usize,
    },
    /// Fewer bytes than the type's layout.
    #[error("channel message type {msgtype} has {len} bytes, its layout needs {min}")]
    TooShort {
        /// The message type.
        msgtype: u32,
        /// Bytes received.
        len: usize,
        /// The layout's size.
        min: usize,
    },
    /// A GPADL message to write has more PFNs than fit.
    #[error("channel message type {msgtype} with {count} PFNs, at most {max} fit")]
    TooManyPfns {
        /// GPADL_HEADER or GPADL_BODY.
        msgtype: u32,
        /// PFNs given.
        count: usize,
        /// [`GPADL_HEADER_MAX_PFNS`] or [`GPADL_BODY_MAX_PFNS`].
        max: usize,
    },
    /// The output buffer is too small for the message.
    #[error("channel message type {msgtype} needs {needed} bytes, buffer has {available}")]
    BufferTooSmall {
        /// The message type.
        msgtype: u32,
        /// Bytes the message takes.
        needed: usize,
        /// Bytes in the buffer.
        available: usize,
    },
}

/// Why a page list cannot be described as one GPADL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GpadlSplitError {
    /// More pages than `range_buflen` (u16) can describe.
    #[error("GPADL of {pages} pages, a single range holds at most {max}")]
    TooManyPages {
        /// Pages given.
        pages: usize,
        /// [`GPADL_MAX_PAGES`].
        max: usize,
    },
    /// No pages at all.
    #[error("GPADL with no pages")]
    Empty,
}

/// One decoded field value, for the JSON trace writer (see [`ChannelMessage::visit_fields`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// A number, rendered in decimal.
    U64(u64),
    /// A number best read in hex (status codes, flags, versions, addresses).
    Hex(u64),
    /// A symbolic name.
    Str(&'static str),
    /// Raw bytes, rendered as hex.
    Bytes(&'a [u8]),
    /// A GUID, rendered in its string form.
    Guid(Guid),
    /// A list of numbers (GPADL PFNs).
    U64List(&'a [U64]),
}

/// A parsed VMBus channel message (PROTOCOL.md §3.2, types 1–17, 22, 24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelMessage<'a> {
    /// 1, H→G.
    OfferChannel(OfferChannel),
    /// 2, H→G.
    RescindChannelOffer(ChannelRelid),
    /// 3, G→H.
    RequestOffers,
    /// 4, H→G.
    AllOffersDelivered,
    /// 5, G→H.
    OpenChannel(OpenChannel),
    /// 6, H→G.
    OpenChannelResult(OpenChannelResult),
    /// 7, G→H.
    CloseChannel(ChannelRelid),
    /// 8, G→H.
    GpadlHeader(GpadlHeader<'a>),
    /// 9, G→H.
    GpadlBody(GpadlBody<'a>),
    /// 10, H→G.
    GpadlCreated(GpadlCreated),
    /// 11, G→H.
    GpadlTeardown(GpadlTeardown),
    /// 12, H→G.
    GpadlTorndown(GpadlTorndown),
    /// 13, G→H.
    RelidReleased(ChannelRelid),
    /// 14, G→H.
    InitiateContact(InitiateContact),
    /// 15, H→G.
    VersionResponse(VersionResponse),
    /// 16, G→H.
    Unload,
    /// 17, H→G.
    UnloadResponse,
    /// 22, G→H.
    ModifyChannel(ModifyChannel),
    /// 24, H→G.
    ModifyChannelResponse(ModifyChannelResponse),
    /// Any other type (18–21, 23, 25–29, or garbage): the host ignores these.
    Unknown {
        /// The message type.
        msgtype: u32,
        /// Bytes after the header.
        body: &'a [u8],
    },
}

fn read_body<T: FromBytes>(msgtype: u32, bytes: &[u8]) -> Result<T, ChannelMessageError> {
    bytes
        .get(HEADER_SIZE..)
        .and_then(|b| T::read_from_prefix(b).ok())
        .map(|(t, _)| t)
        .ok_or(ChannelMessageError::TooShort {
            msgtype,
            len: bytes.len(),
            min: HEADER_SIZE + size_of::<T>(),
        })
}

/// The whole 8-byte entries in `bytes` as a PFN slice.
fn pfn_slice(bytes: &[u8]) -> &[U64] {
    let n = bytes.len() / 8;
    match <[U64]>::ref_from_prefix_with_elems(bytes, n) {
        Ok((pfns, _)) => pfns,
        // Unreachable: U64 has alignment 1 and `n * 8 <= len`.
        Err(_) => &[],
    }
}

impl<'a> ChannelMessage<'a> {
    /// Validates one received message (rule E1): at least 8 and at most 240 bytes, at least
    /// the type's layout. Longer messages are accepted and the excess ignored (except that a
    /// GPADL message's PFNs are all the whole 8-byte entries it holds). Types hvnet does not
    /// implement parse as [`ChannelMessage::Unknown`].
    pub fn parse(bytes: &'a [u8]) -> Result<ChannelMessage<'a>, ChannelMessageError> {
        let Ok((header, body)) = MessageHeader::read_from_prefix(bytes) else {
            return Err(ChannelMessageError::NoHeader { len: bytes.len() });
        };
        let t = header.msgtype.get();
        if bytes.len() > MAX_MESSAGE_SIZE {
            return Err(ChannelMessageError::TooLong {
                msgtype: t,
                len: bytes.len(),
                max: MAX_MESSAGE_SIZE,
            });
        }
        use ChannelMessage as M;
        Ok(match t {
            msgtype::OFFERCHANNEL => M::OfferChannel(read_body(t, bytes)?),
            msgtype::RESCIND_CHANNELOFFER => M::RescindChannelOffer(read_body(t, bytes)?),
            msgtype::REQUESTOFFERS => M::RequestOffers,
            msgtype::ALLOFFERS_DELIVERED => M::AllOffersDelivered,
            msgtype::OPENCHANNEL => M::OpenChannel(read_body(t, bytes)?),
            msgtype::OPENCHANNEL_RESULT => M::OpenChannelResult(read_body(t, bytes)?),
            msgtype::CLOSECHANNEL => M::CloseChannel(read_body(t, bytes)?),
            msgtype::GPADL_HEADER => {
                let fixed: GpadlHeaderFixed = read_body(t, bytes)?;
                let rest = &body[size_of::<GpadlHeaderFixed>()..];
                M::GpadlHeader(GpadlHeader {
                    fixed,
                    pfns: pfn_slice(rest),
                })
            }
            msgtype::GPADL_BODY => {
                let fixed: GpadlBodyFixed = read_body(t, bytes)?;
                let rest = &body[size_of::<GpadlBodyFixed>()..];
                M::GpadlBody(GpadlBody {
                    fixed,
                    pfns: pfn_slice(rest),
                })
            }
            msgtype::GPADL_CREATED => M::GpadlCreated(read_body(t, bytes)?),
            msgtype::GPADL_TEARDOWN => M::GpadlTeardown(read_body(t, bytes)?),
            msgtype::GPADL_TORNDOWN => M::GpadlTorndown(read_body(t, bytes)?),
            msgtype::RELID_RELEASED => M::RelidReleased(read_body(t, bytes)?),
            msgtype::INITIATE_CONTACT => M::InitiateContact(read_body(t, bytes)?),
            msgtype::VERSION_RESPONSE => M::VersionResponse(read_body(t, bytes)?),
            msgtype::UNLOAD => M::Unload,
            msgtype::UNLOAD_RESPONSE => M::UnloadResponse,
            msgtype::MODIFYCHANNEL => M::ModifyChannel(read_body(t, bytes)?),
            msgtype::MODIFYCHANNEL_RESPONSE => M::ModifyChannelResponse(read_body(t, bytes)?),
            msgtype => M::Unknown { msgtype, body },
        })
    }

    /// The message type number.
    pub fn msgtype(&self) -> u32 {
        use ChannelMessage as M;
        match self {
            M::OfferChannel(_) => msgtype::OFFERCHANNEL,
            M::RescindChannelOffer(_) => msgtype::RESCIND_CHANNELOFFER,
            M::RequestOffers => msgtype::REQUESTOFFERS,
            M::AllOffersDelivered => msgtype::ALLOFFERS_DELIVERED,
            M::OpenChannel(_) => msgtype::OPENCHANNEL,
            M::OpenChannelResult(_) => msgtype::OPENCHANNEL_RESULT,
            M::CloseChannel(_) => msgtype::CLOSECHANNEL,
            M::GpadlHeader(_) => msgtype::GPADL_HEADER,
            M::GpadlBody(_) => msgtype::GPADL_BODY,
            M::GpadlCreated(_) => msgtype::GPADL_CREATED,
            M::GpadlTeardown(_) => msgtype::GPADL_TEARDOWN,
            M::GpadlTorndown(_) => msgtype::GPADL_TORNDOWN,
            M::RelidReleased(_) => msgtype::RELID_RELEASED,
            M::InitiateContact(_) => msgtype::INITIATE_CONTACT,
            M::VersionResponse(_) => msgtype::VERSION_RESPONSE,
            M::Unload => msgtype::UNLOAD,
            M::UnloadResponse => msgtype::UNLOAD_RESPONSE,
            M::ModifyChannel(_) => msgtype::MODIFYCHANNEL,
            M::ModifyChannelResponse(_) => msgtype::MODIFYCHANNEL_RESPONSE,
            M::Unknown { msgtype, .. } => *msgtype,
        }
    }

    /// The message's name as PROTOCOL.md writes it (`"OFFERCHANNEL"`, …; `"UNKNOWN"` for
    /// unnamed types).
    pub fn name(&self) -> &'static str {
        message_type_name(self.msgtype()).unwrap_or("UNKNOWN")
    }

    /// The bytes the body takes after the header, when emitted.
    fn body_bytes(&self) -> (&[u8], &[u8]) {
        use ChannelMessage as M;
        match self {
            M::OfferChannel(m) => (m.as_bytes(), &[]),
            M::RescindChannelOffer(m) | M::CloseChannel(m) | M::RelidReleased(m) => {
                (m.as_bytes(), &[])
            }
            M::RequestOffers | M::AllOffersDelivered | M::Unload | M::UnloadResponse => (&[], &[]),
            M::OpenChannel(m) => (m.as_bytes(), &[]),
            M::OpenChannelResult(m) => (m.as_bytes(), &[]),
            M::GpadlHeader(m) => (m.fixed.as_bytes(), m.pfns.as_bytes()),
            M::GpadlBody(m) => (m.fixed.as_bytes(), m.pfns.as_bytes()),
            M::GpadlCreated(m) => (m.as_bytes(), &[]),
            M::GpadlTeardown(m) => (m.as_bytes(), &[]),
            M::GpadlTorndown(m) => (m.as_bytes(), &[]),
            M::InitiateContact(m) => (m.as_bytes(), &[]),
            M::VersionResponse(m) => (m.as_bytes(), &[]),
            M::ModifyChannel(m) => (m.as_bytes(), &[]),
            M::ModifyChannelResponse(m) => (m.as_bytes(), &[]),
            M::Unknown { body, .. } => (body, &[]),
        }
    }

    /// Size of the emitted message, header included.
    pub fn len(&self) -> usize {
        let (a, b) = self.body_bytes();
        HEADER_SIZE + a.len() + b.len()
    }

    /// Always false: a message has at least its header. (For clippy's `len` convention.)
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the message into the start of `buf` (padding 0) and returns its size. Fails
    /// if the buffer is too small, a GPADL message holds too many PFNs, or an `Unknown`
    /// body would exceed [`MAX_MESSAGE_SIZE`]; a `[u8; MAX_MESSAGE_SIZE]` buffer always
    /// suffices for a valid message.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, ChannelMessageError> {
        let msgtype = self.msgtype();
        let pfn_limit = match self {
            ChannelMessage::GpadlHeader(m) => Some((m.pfns.len(), GPADL_HEADER_MAX_PFNS)),
            ChannelMessage::GpadlBody(m) => Some((m.pfns.len(), GPADL_BODY_MAX_PFNS)),
            _ => None,
        };
        if let Some((count, max)) = pfn_limit
            && count > max
        {
            return Err(ChannelMessageError::TooManyPfns {
                msgtype,
                count,
                max,
            });
        }
        let len = self.len();
        if len > MAX_MESSAGE_SIZE {
            return Err(ChannelMessageError::TooLong {
                msgtype,
                len,
                max: MAX_MESSAGE_SIZE,
            });
        }
        let Some(out) = buf.get_mut(..len) else {
            return Err(ChannelMessageError::BufferTooSmall {
                msgtype,
                needed: len,
                available: buf.len(),
            });
        };
        let header = MessageHeader {
            msgtype: U32::new(msgtype),
            padding: U32::ZERO,
        };
        let (a, b) = self.body_bytes();
        out[..HEADER_SIZE].copy_from_slice(header.as_bytes());
        out[HEADER_SIZE..HEADER_SIZE + a.len()].copy_from_slice(a);
        out[HEADER_SIZE + a.len()..].copy_from_slice(b);
        Ok(len)
    }

    /// Calls `f` with each decoded field (name, value) in wire order, for the trace writer.
    /// Reserved fields that are zero are left out.
    pub fn visit_fields<'s>(&'s self, f: &mut dyn FnMut(&'static str, FieldValue<'s>)) {
        use ChannelMessage as M;
        use FieldValue::{Bytes, Hex, U64 as N, U64List};
        match self {
            M::OfferChannel(m) => {
                f("if_type", FieldValue::Guid(m.if_type));
                f("if_instance", FieldValue::Guid(m.if_instance));
                if m.reserved != [0; 16] {
                    f("reserved", Bytes(&m.reserved));
                }
                f("chn_flags", Hex(m.chn_flags.get().into()));
                f("mmio_megabytes", N(m.mmio_megabytes.get().into()));
                if m.user_defined.iter().any(|&b| b != 0) {
                    f("user_defined", Bytes(&m.user_defined));
                }
                f("sub_channel_index", N(m.sub_channel_index.get().into()));
                f("child_relid", N(m.child_relid.get().into()));
                f("monitorid", N(m.monitorid.into()));
                f("monitor_allocated", N(m.monitor_allocated.into()));
                f(
                    "is_dedicated_interrupt",
                    N(m.is_dedicated_interrupt.get().into()),
                );
                f("connection_id", Hex(m.connection_id.get().into()));
            }
            M::RescindChannelOffer(m) | M::CloseChannel(m) | M::RelidReleased(m) => {
                f("child_relid", N(m.child_relid.get().into()));
            }
            M::RequestOffers | M::AllOffersDelivered | M::Unload | M::UnloadResponse => {}
            M::OpenChannel(m) => {
                f("child_relid", N(m.child_relid.get().into()));
                f("openid", N(m.openid.get().into()));
                f(
                    "ringbuffer_gpadlhandle",
                    Hex(m.ringbuffer_gpadlhandle.get().into()),
                );
                f("target_vp", N(m.target_vp.get().into()));
                f(
                    "downstream_ringbuffer_pageoffset",
                    N(m.downstream_ringbuffer_pageoffset.get().into()),
                );
                if m.userdata.iter().any(|&b| b != 0) {
                    f("userdata", Bytes(&m.userdata));
                }
            }
            M::OpenChannelResult(m) => {
                f("child_relid", N(m.child_relid.get().into()));
                f("openid", N(m.openid.get().into()));
                f("status", Hex(m.status.get().into()));
            }
            M::GpadlHeader(m) => {
                f("child_relid", N(m.fixed.child_relid.get().into()));
                f("gpadl", Hex(m.fixed.gpadl.get().into()));
                f("range_buflen", N(m.fixed.range_buflen.get().into()));
                f("rangecount", N(m.fixed.rangecount.get().into()));
                f("byte_count", N(m.fixed.byte_count.get().into()));
                f("byte_offset", N(m.fixed.byte_offset.get().into()));
                f("pfns", U64List(m.pfns));
            }
            M::GpadlBody(m) => {
                f("msgnumber", N(m.fixed.msgnumber.get().into()));
                f("gpadl", Hex(m.fixed.gpadl.get().into()));
                f("pfns", U64List(m.pfns));
            }
            M::GpadlCreated(m) => {
                f("child_relid", N(m.child_relid.get().into()));
                f("gpadl", Hex(m.gpadl.get().into()));
                f("creation_status", Hex(m.creation_status.get().into()));
            }
            M::GpadlTeardown(m) => {
                f("child_relid", N(m.child_relid.get().into()));
                f("gpadl", Hex(m.gpadl.get().into()));
            }
            M::GpadlTorndown(m) => f("gpadl", Hex(m.gpadl.get().into())),
            M::InitiateContact(m) => {
                let v = m.version_requested.get();
                f("version_requested", Hex(v.into()));
                if let Some(name) = version::name(v) {
                    f("version_name", FieldValue::Str(name));
                }
                f("target_vcpu", N(m.target_vcpu.get().into()));
                if InitiateContact::uses_interrupt_page(v) {
                    f("interrupt_page", Hex(m.interrupt_page_or_target_info.get()));
                } else {
                    f("msg_sint", N(m.msg_sint().into()));
                    f("msg_vtl", N(m.msg_vtl().into()));
                    f("feature_flags", Hex(m.feature_flags().into()));
                }
                f("monitor_page1", Hex(m.monitor_page1.get()));
                f("monitor_page2", Hex(m.monitor_page2.get()));
            }
            M::VersionResponse(m) => {
                f("version_supported", N(m.version_supported.into()));
                f("connection_state", N(m.connection_state.into()));
                f("msg_conn_id", Hex(m.msg_conn_id.get().into()));
            }
            M::ModifyChannel(m) => {
                f("child_relid", N(m.child_relid.get().into()));
                f("target_vp", N(m.target_vp.get().into()));
            }
            M::ModifyChannelResponse(m) => {
                f("child_relid", N(m.child_relid.get().into()));
                f("status", Hex(m.status.get().into()));
            }
            M::Unknown { msgtype, body } => {
                f("msgtype", N((*msgtype).into()));
                f("body", Bytes(body));
            }
        }
    }
}

impl fmt::Display for ChannelMessage<'_> {
    /// `NAME field=value …`, a one-line summary for logs.
    fn fmt(&self, fm: &mut fmt::Formatter<'_>) -> fmt::Result {
        fm.write_str(self.name())?;
        let mut result = Ok(());
        self.visit_fields(&mut |name, value| {
            if result.is_err() {
                return;
            }
            result = match value {
                FieldValue::U64(v) => write!(fm, " {name}={v}"),
                FieldValue::Hex(v) => write!(fm, " {name}={v:#x}"),
                FieldValue::Str(s) => write!(fm, " {name}={s}"),
                FieldValue::Guid(g) => write!(fm, " {name}={g}"),
                FieldValue::Bytes(b) => write!(fm, " {name}=")
                    .and_then(|()| b.iter().try_for_each(|x| write!(fm, "{x:02x}"))),
                FieldValue::U64List(l) => write!(fm, " {name}=[{} entries]", l.len()),
            };
        });
        result
    }
}

/// Splits one page list into the GPADL_HEADER and GPADL_BODY messages that describe it as a
/// single range (PROTOCOL.md §3.3, §3.4 step 3): the header with up to 26 PFNs, then bodies
/// with up to 28 each. Messages borrow the page list; emit each into a 240-byte buffer.
#[derive(Debug, Clone)]
pub struct GpadlMessages<'a> {
    child_relid: u32,
    gpadl: u32,
    byte_offset: u32,
    byte_count: u32,
    pfns: &'a [U64],
    /// Index of the next PFN to send; `None` before the header is produced.
    next: Option<usize>,
}

impl<'a> GpadlMessages<'a> {
    /// A splitter for the GPADL `gpadl` on `child_relid` covering `pfns`, whose range is
    /// `byte_count` bytes from `byte_offset` into the first page. Pass `byte_offset` 0 and
    /// `byte_count` = 4096 × pages for a whole-page buffer ([`GpadlMessages::whole_pages`]).
    pub fn new(
        child_relid: u32,
        gpadl: u32,
        byte_offset: u32,
        byte_count: u32,
        pfns: &'a [U64],
    ) -> Result<GpadlMessages<'a>, GpadlSplitError> {
        if pfns.is_empty() {
            return Err(GpadlSplitError::Empty);
        }
        if pfns.len() > GPADL_MAX_PAGES {
            return Err(GpadlSplitError::TooManyPages {
                pages: pfns.len(),
                max: GPADL_MAX_PAGES,
            });
        }
        Ok(GpadlMessages {
            child_relid,
            gpadl,
            byte_offset,
            byte_count,
            pfns,
            next: None,
        })
    }

    /// A splitter for whole pages: `byte_offset` 0, `byte_count` = 4096 × pages.
    pub fn whole_pages(
        child_relid: u32,
        gpadl: u32,
        pfns: &'a [U64],
    ) -> Result<GpadlMessages<'a>, GpadlSplitError> {
        // ≤ 8190 pages × 4096 fits in u32.
        let count = (pfns.len().min(GPADL_MAX_PAGES) * 4096) as u32;
        GpadlMessages::new(child_relid, gpadl, 0, count, pfns)
    }

    /// Total number of messages (1 header + bodies).
    pub fn message_count(&self) -> usize {
        let rest = self.pfns.len().saturating_sub(GPADL_HEADER_MAX_PFNS);
        1 + rest.div_ceil(GPADL_BODY_MAX_PFNS)
    }
}

impl<'a> Iterator for GpadlMessages<'a> {
    type Item = ChannelMessage<'a>;

    fn next(&mut self) -> Option<ChannelMessage<'a>> {
        match self.next {
            None => {
                let n = self.pfns.len().min(GPADL_HEADER_MAX_PFNS);
                self.next = Some(n);
                // 8 + 8 × pages ≤ 65528 (checked in `new`).
                let range_buflen = (8 + 8 * self.pfns.len()) as u16;
                Some(ChannelMessage::GpadlHeader(GpadlHeader {
                    fixed: GpadlHeaderFixed {
                        child_relid: U32::new(self.child_relid),
                        gpadl: U32::new(self.gpadl),
                        range_buflen: U16::new(range_buflen),
                        rangecount: U16::new(1),
                        byte_count: U32::new(self.byte_count),
                        byte_offset: U32::new(self.byte_offset),
                    },
                    pfns: &self.pfns[..n],
                }))
            }
            Some(start) if start < self.pfns.len() => {
                let end = self.pfns.len().min(start + GPADL_BODY_MAX_PFNS);
                self.next = Some(end);
                Some(ChannelMessage::GpadlBody(GpadlBody {
                    fixed: GpadlBodyFixed {
                        msgnumber: U32::ZERO,
                        gpadl: U32::new(self.gpadl),
                    },
                    pfns: &self.pfns[start..end],
                }))
            }
            Some(_) => None,
        }
    }
}

impl OfferChannel {
    /// An all-zero offer, to fill in.
    pub fn zeroed() -> OfferChannel {
        OfferChannel::new_zeroed()
    }
}

impl OpenChannel {
    /// An all-zero open request, to fill in.
    pub fn zeroed() -> OpenChannel {
        OpenChannel::new_zeroed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guid::NETVSC_CLASS;
    use proptest::prelude::*;

    fn parse_emit(bytes: &[u8]) -> ChannelMessage<'_> {
        let m = ChannelMessage::parse(bytes).unwrap();
        let mut buf = [0u8; MAX_MESSAGE_SIZE];
        let n = m.emit(&mut buf).unwrap();
        assert_eq!(&buf[..n], bytes, "{}", m.name());
        m
    }

    fn u32s(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    #[test]
    fn offerchannel() {
        let mut v = vec![0u8; 196];
        v[0] = 1;
        v[8..24].copy_from_slice(&[
            0x63, 0x51, 0x61, 0xf8, 0x3e, 0xdf, 0xc5, 0x46, 0x91, 0x3f, 0xf2, 0xd2, 0xf9, 0x65,
            0xed, 0x0e,
        ]);
        v[24..40].copy_from_slice(&[
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
            0x0f, 0x10,
        ]);
        v[180] = 3; // sub_channel_index
        v[184] = 0x11; // child_relid 0x111
        v[185] = 0x01;
        v[188] = 0xff; // monitorid
        v[190] = 1; // dedicated interrupt
        v[192..196].copy_from_slice(&[0x11, 0x21, 0x00, 0x00]); // 0x2111
        let m = parse_emit(&v);
        let ChannelMessage::OfferChannel(o) = m else {
            panic!("{m:?}")
        };
        assert_eq!(o.if_type, NETVSC_CLASS);
        assert_eq!(
            o.if_instance.to_string(),
            "04030201-0605-0807-090a-0b0c0d0e0f10"
        );
        assert_eq!(o.sub_channel_index.get(), 3);
        assert_eq!(o.child_relid.get(), 0x111);
        assert_eq!(o.monitorid, MONITOR_ID_NONE);
        assert_eq!(o.is_dedicated_interrupt.get(), 1);
        assert_eq!(o.connection_id.get(), CONNECTION_ID_BASE | 0x111);
        assert_eq!(m.name(), "OFFERCHANNEL");
        assert_eq!(m.len(), 196);
        // Built from scratch: same bytes.
        let mut o2 = OfferChannel::zeroed();
        o2.if_type = NETVSC_CLASS;
        o2.if_instance = Guid::parse("04030201-0605-0807-090a-0b0c0d0e0f10").unwrap();
        o2.sub_channel_index = U16::new(3);
        o2.child_relid = U32::new(0x111);
        o2.monitorid = MONITOR_ID_NONE;
        o2.is_dedicated_interrupt = U16::new(1);
        o2.connection_id = U32::new(CONNECTION_ID_BASE | 0x111);
        assert_eq!(o2, o);
        // One byte short.
        assert_eq!(
            ChannelMessage::parse(&v[..195]),
            Err(ChannelMessageError::TooShort {
                msgtype: 1,
                len: 195,
                min: 196
            })
        );
    }

    #[test]
    fn relid_only_messages() {
        for (t, name) in [
            (2, "RESCIND_CHANNELOFFER"),
            (7, "CLOSECHANNEL"),
            (13, "RELID_RELEASED"),
        ] {
            let v = u32s(&[t, 0, 7]);
            let m = parse_emit(&v);
            assert_eq!(m.name(), name);
            let relid = match m {
                ChannelMessage::RescindChannelOffer(r)
                | ChannelMessage::CloseChannel(r)
                | ChannelMessage::RelidReleased(r) => r.child_relid.get(),
                _ => panic!("{m:?}"),
            };
            assert_eq!(relid, 7);
            assert!(matches!(
                ChannelMessage::parse(&v[..11]),
                Err(ChannelMessageError::TooShort {
                    len: 11,
                    min: 12,
                    ..
                })
            ));
        }
    }

    #[test]
    fn header_only_messages() {
        for (t, name) in [
            (3, "REQUESTOFFERS"),
            (4, "ALLOFFERS_DELIVERED"),
            (16, "UNLOAD"),
            (17, "UNLOAD_RESPONSE"),
        ] {
            let v = u32s(&[t, 0]);
            let m = parse_emit(&v);
            assert_eq!(m.name(), name);
            assert_eq!(m.len(), 8);
        }
        assert_eq!(
            ChannelMessage::parse(&[3, 0, 0, 0, 0, 0, 0]),
            Err(ChannelMessageError::NoHeader { len: 7 })
        );
    }

    #[test]
    fn openchannel() {
        let mut v = u32s(&[5, 0, 4, 4, 0x1234, 0xffff_ffff, 129]);
        v.resize(148, 0);
        let m = parse_emit(&v);
        let ChannelMessage::OpenChannel(o) = m else {
            panic!()
        };
        assert_eq!(o.child_relid.get(), 4);
        assert_eq!(o.openid.get(), 4);
        assert_eq!(o.ringbuffer_gpadlhandle.get(), 0x1234);
        assert_eq!(o.target_vp.get(), 0xffff_ffff);
        assert_eq!(o.downstream_ringbuffer_pageoffset.get(), 129);
        assert_eq!(
            &v[..28],
            &[
                5, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 0x34, 0x12, 0, 0, 0xff, 0xff, 0xff,
                0xff, 129, 0, 0, 0
            ]
        );
        assert!(ChannelMessage::parse(&v[..147]).is_err());
        // 6.0 feature variant: longer, accepted, the excess ignored.
        let mut long = v.clone();
        long.resize(156, 0xaa);
        assert_eq!(ChannelMessage::parse(&long), Ok(m));
    }

    #[test]
    fn openchannel_result() {
        let v = [6, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0];
        let ChannelMessage::OpenChannelResult(r) = parse_emit(&v) else {
            panic!()
        };
        assert_eq!(
            (r.child_relid.get(), r.openid.get(), r.status.get()),
            (4, 5, 1)
        );
    }

    #[test]
    fn gpadl_header_and_body() {
        let v: [u8; 44] = [
            8, 0, 0, 0, 0, 0, 0, 0, // header
            1, 0, 0, 0, // relid 1
            0x0d, 0xf0, 0, 0, // gpadl 0xf00d
            40, 0, // range_buflen 8 + 8 × 4 (2 in bodies)
            1, 0, // rangecount
            0, 0x40, 0, 0, // byte_count 0x4000
            0, 0, 0, 0, // byte_offset
            0x10, 0, 0, 0, 0, 0, 0, 0, // pfn 0x10
            0x22, 0x11, 0, 0, 0, 0, 0, 0, // pfn 0x1122
        ];
        let m = parse_emit(&v);
        let ChannelMessage::GpadlHeader(h) = m else {
            panic!()
        };
        assert_eq!(h.fixed.child_relid.get(), 1);
        assert_eq!(h.fixed.gpadl.get(), 0xf00d);
        assert_eq!(h.fixed.range_buflen.get(), 40);
        assert_eq!(h.fixed.promised_pfn_count(), Some(4));
        assert_eq!(h.fixed.byte_count.get(), 0x4000);
        let pfns: Vec<u64> = h.pfns.iter().map(|p| p.get()).collect();
        assert_eq!(pfns, [0x10, 0x1122]);
        // A trailing partial entry is not a PFN.
        let mut long = v.to_vec();
        long.extend_from_slice(&[1, 2, 3]);
        assert_eq!(ChannelMessage::parse(&long), Ok(m));
        assert!(ChannelMessage::parse(&v[..27]).is_err());

        let b: [u8; 32] = [
            9, 0, 0, 0, 0, 0, 0, 0, // header
            0, 0, 0, 0, // msgnumber
            0x0d, 0xf0, 0, 0, // gpadl
            0x30, 0, 0, 0, 0, 0, 0, 0, // pfn 0x30
            0x31, 0, 0, 0, 0, 0, 0, 0x80, // pfn 0x8000000000000031
        ];
        let ChannelMessage::GpadlBody(body) = parse_emit(&b) else {
            panic!()
        };
        assert_eq!(body.fixed.gpadl.get(), 0xf00d);
        assert_eq!(body.pfns[1].get(), 0x8000_0000_0000_0031);
    }

    #[test]
    fn gpadl_created_teardown_torndown() {
        let v = [
            10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0xff, 0xff, 0, 0x80,
        ];
        let ChannelMessage::GpadlCreated(c) = parse_emit(&v) else {
            panic!()
        };
        assert_eq!(c.creation_status.get(), GPADL_CREATION_FAILED);
        assert_eq!((c.child_relid.get(), c.gpadl.get()), (1, 2));
        let v = [11, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];
        let ChannelMessage::GpadlTeardown(t) = parse_emit(&v) else {
            panic!()
        };
        assert_eq!((t.child_relid.get(), t.gpadl.get()), (1, 2));
        let v = [12, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0];
        let ChannelMessage::GpadlTorndown(t) = parse_emit(&v) else {
            panic!()
        };
        assert_eq!(t.gpadl.get(), 2);
    }

    #[test]
    fn initiate_contact() {
        let v: [u8; 40] = [
            14, 0, 0, 0, 0, 0, 0, 0, // header
            3, 0, 5, 0, // version 5.3
            0, 0, 0, 0, // target_vcpu
            2, 0, 0, 0, 0, 0, 0, 0, // msg_sint 2, vtl 0
            0, 0, 0, 0, 0, 0, 0, 0, // monitor 1
            0, 0, 0, 0, 0, 0, 0, 0, // monitor 2
        ];
        let m = parse_emit(&v);
        let ChannelMessage::InitiateContact(c) = m else {
            panic!()
        };
        assert_eq!(c.version_requested.get(), version::WS2022);
        assert_eq!(c.msg_sint(), 2);
        assert_eq!(c.msg_vtl(), 0);
        assert_eq!(c.feature_flags(), 0);
        assert_eq!(InitiateContact::target_info(2, 0, 0), 2);
        assert_eq!(
            InitiateContact::target_info(2, 1, 0xabcd),
            0x0000_abcd_0000_0102
        );
        assert!(!InitiateContact::uses_interrupt_page(version::V5_0));
        assert!(InitiateContact::uses_interrupt_page(version::WS2016));
        let mut names = Vec::new();
        m.visit_fields(&mut |n, v| names.push((n, v)));
        assert!(names.contains(&("version_name", FieldValue::Str("5.3"))));
        assert!(names.contains(&("msg_sint", FieldValue::U64(2))));
    }

    #[test]
    fn version_response() {
        let v = [15, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0];
        let ChannelMessage::VersionResponse(r) = parse_emit(&v) else {
            panic!()
        };
        assert_eq!(r.version_supported, 1);
        assert_eq!(r.connection_state, connection_state::SUCCESSFUL);
        assert_eq!(r.msg_conn_id.get(), 1);
        // 6.0's 20-byte response parses too.
        let mut long = v.to_vec();
        long.extend_from_slice(&[1, 0, 0, 0]);
        assert!(matches!(
            ChannelMessage::parse(&long),
            Ok(ChannelMessage::VersionResponse(_))
        ));
    }

    #[test]
    fn modifychannel() {
        let v = [22, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0];
        let m = parse_emit(&v);
        assert_eq!(m.name(), "MODIFYCHANNEL");
        let ChannelMessage::ModifyChannel(c) = m else {
            panic!()
        };
        assert_eq!((c.child_relid.get(), c.target_vp.get()), (3, 1));
        let v = [24, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0];
        let m = parse_emit(&v);
        assert_eq!(m.name(), "MODIFYCHANNEL_RESPONSE");
    }

    #[test]
    fn unknown_and_limits() {
        let v = [21, 0, 0, 0, 0, 0, 0, 0, 9, 9];
        let m = parse_emit(&v);
        assert_eq!(
            m,
            ChannelMessage::Unknown {
                msgtype: 21,
                body: &[9, 9]
            }
        );
        assert_eq!(m.name(), "TL_CONNECT_REQUEST");
        assert_eq!(
            ChannelMessage::parse(&[99, 0, 0, 0, 0, 0, 0, 0])
                .unwrap()
                .name(),
            "UNKNOWN"
        );
        let big = [0u8; 241];
        assert_eq!(
            ChannelMessage::parse(&big),
            Err(ChannelMessageError::TooLong {
                msgtype: 0,
                len: 241,
                max: 240
            })
        );
        let mut small = [0u8; 10];
        assert!(matches!(
            ChannelMessage::OfferChannel(OfferChannel::zeroed()).emit(&mut small),
            Err(ChannelMessageError::BufferTooSmall {
                needed: 196,
                available: 10,
                ..
            })
        ));
        let pfns = [U64::new(1); 27];
        let m = ChannelMessage::GpadlHeader(GpadlHeader {
            fixed: GpadlHeaderFixed::new_zeroed(),
            pfns: &pfns,
        });
        assert!(matches!(
            m.emit(&mut [0u8; 300]),
            Err(ChannelMessageError::TooManyPfns {
                count: 27,
                max: 26,
                ..
            })
        ));
    }

    #[test]
    fn message_sizes() {
        assert_eq!(min_message_size(1), Some(196));
        assert_eq!(min_message_size(5), Some(148));
        assert_eq!(min_message_size(8), Some(28));
        assert_eq!(min_message_size(9), Some(16));
        assert_eq!(min_message_size(14), Some(40));
        assert_eq!(min_message_size(15), Some(16));
        assert_eq!(min_message_size(20), None);
        assert_eq!(28 + 8 * GPADL_HEADER_MAX_PFNS, 236);
        assert_eq!(16 + 8 * GPADL_BODY_MAX_PFNS, MAX_MESSAGE_SIZE);
        assert_eq!(pages_for_range(0, 4096), 1);
        assert_eq!(pages_for_range(1, 4096), 2);
        assert_eq!(pages_for_range(0, 0), 0);
        assert_eq!(version::name(version::LINUX_ORDER[0]), Some("6.0"));
        assert_eq!(version::make(3, 0), version::WS2012R2);
        assert_eq!(
            (version::major(0x0005_0002), version::minor(0x0005_0002)),
            (5, 2)
        );
    }

    #[test]
    fn gpadl_split() {
        let pfns: Vec<U64> = (100..100 + 26 + 28 + 1).map(U64::new).collect();
        let split = GpadlMessages::whole_pages(3, 0x77, &pfns).unwrap();
        assert_eq!(split.message_count(), 3);
        let msgs: Vec<_> = split.collect();
        assert_eq!(msgs.len(), 3);
        let mut buf = [0u8; MAX_MESSAGE_SIZE];
        assert_eq!(msgs[0].emit(&mut buf), Ok(236));
        assert_eq!(
            &buf[..28],
            &[
                8, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0x77, 0, 0, 0, 0xc0, 0x01, 1, 0, 0, 0x70, 0x03,
                0, 0, 0, 0, 0
            ]
        );
        assert_eq!(&buf[28..36], &[100, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(msgs[1].emit(&mut buf), Ok(240));
        assert_eq!(
            &buf[..24],
            &[
                9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x77, 0, 0, 0, 126, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(msgs[2].emit(&mut buf), Ok(24));
        assert_eq!(&buf[16..24], &[154, 0, 0, 0, 0, 0, 0, 0]);

        let one = [U64::new(5)];
        assert_eq!(GpadlMessages::whole_pages(1, 1, &one).unwrap().count(), 1);
        assert_eq!(
            GpadlMessages::whole_pages(1, 1, &[]).unwrap_err(),
            GpadlSplitError::Empty
        );
        let many = vec![U64::ZERO; GPADL_MAX_PAGES + 1];
        assert_eq!(
            GpadlMessages::whole_pages(1, 1, &many).unwrap_err(),
            GpadlSplitError::TooManyPages {
                pages: 8191,
                max: 8190
            }
        );
        let max = vec![U64::ZERO; GPADL_MAX_PAGES];
        let mut it = GpadlMessages::whole_pages(1, 1, &max).unwrap();
        let ChannelMessage::GpadlHeader(h) = it.next().unwrap() else {
            panic!()
        };
        assert_eq!(h.fixed.range_buflen.get(), 65528);
        assert_eq!(h.fixed.promised_pfn_count(), Some(8190));
    }

    #[test]
    fn display() {
        let v = [12, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0];
        let m = ChannelMessage::parse(&v).unwrap();
        assert_eq!(m.to_string(), "GPADL_TORNDOWN gpadl=0x2");
    }

    fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
        (0u32..30, proptest::collection::vec(any::<u8>(), 0..260)).prop_map(|(t, mut rest)| {
            let mut v = t.to_le_bytes().to_vec();
            v.append(&mut rest);
            v
        })
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ChannelMessage::parse(&bytes);
        }

        #[test]
        fn parse_emit_round_trip(bytes in message_bytes()) {
            if let Ok(m) = ChannelMessage::parse(&bytes) {
                let mut buf = [0u8; MAX_MESSAGE_SIZE];
                let n = m.emit(&mut buf).unwrap();
                prop_assert!(n <= bytes.len());
                prop_assert_eq!(&buf[..4], &bytes[..4]);
                prop_assert_eq!(&buf[4..8], &[0u8; 4]);
                prop_assert_eq!(&buf[8..n], &bytes[8..n]);
                prop_assert_eq!(ChannelMessage::parse(&buf[..n]), Ok(m));
                let mut sink = |_: &'static str, _: FieldValue<'_>| {};
                m.visit_fields(&mut sink);
            }
        }

        #[test]
        fn gpadl_split_reassembles(n in 1usize..300, offset in 0u32..4096) {
            let pfns: Vec<U64> = (0..n as u64).map(|p| U64::new(p * 3)).collect();
            let split = GpadlMessages::new(9, 42, offset, 100, &pfns).unwrap();
            let expected = split.message_count();
            let mut got: Vec<U64> = Vec::new();
            let mut count = 0;
            for m in split {
                let mut buf = [0u8; MAX_MESSAGE_SIZE];
                let len = m.emit(&mut buf).unwrap();
                match ChannelMessage::parse(&buf[..len]).unwrap() {
                    ChannelMessage::GpadlHeader(h) => {
                        prop_assert_eq!(count, 0);
                        prop_assert_eq!(h.fixed.promised_pfn_count(), Some(n));
                        prop_assert_eq!(h.fixed.byte_offset.get(), offset);
                        got.extend_from_slice(h.pfns);
                    }
                    ChannelMessage::GpadlBody(b) => {
                        prop_assert!(count > 0);
                        prop_assert_eq!(b.fixed.gpadl.get(), 42);
                        got.extend_from_slice(b.pfns);
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
                count += 1;
            }
            prop_assert_eq!(count, expected);
            prop_assert_eq!(got, pfns);
        }
    }
}
