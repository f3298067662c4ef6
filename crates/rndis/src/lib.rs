//! RNDIS: the messages netvsc and netvsp exchange inside NVSP SEND_RNDIS_PKT, the OIDs and
//! NDIS objects of the control path, and the per-packet info of the data path.
//!
//! In ARCHITECTURE.md's picture this crate sits above `nvsp` on both sides of the wire:
//! the netvsc guest builds RNDIS control requests and data packets and parses what arrives
//! in receive-buffer sections; the netvsp host (its RNDIS device) parses the guest's
//! messages out of send-buffer sections or GPA ranges and answers them. It holds wire types
//! and validation only (PROTOCOL.md §6, §7, §8.2–8.4, §10 wire form, §14), no state and no
//! I/O, and builds `no_std` without alloc.
//!
//! - [`header`]: message header and types; [`control`]: control-message bodies;
//!   [`message`]: [`RndisMessage`], the validated parse and emitter.
//! - [`packet`]: PACKET parse/emit; [`ppi`]: per-packet info and its bitfields;
//!   [`batch`]: walking a send-buffer section.
//! - [`oid`], [`status`]: the numbers, with names.
//! - [`ndis_object`], [`offload`], [`rss`], [`config_param`]: NDIS objects carried in OIDs.
//!
//! Input is hostile: parsing never panics, never reads out of bounds, never loops on a bad
//! PPI, and accepts messages longer than their layout (never shorter).
#![cfg_attr(not(feature = "std"), no_std)]

pub mod batch;
pub mod config_param;
pub mod control;
pub mod error;
pub mod header;
pub mod message;
pub mod ndis_object;
pub mod offload;
pub mod oid;
pub mod packet;
pub mod ppi;
pub mod rss;
pub mod status;

pub use batch::BatchWalker;
pub use error::RndisError;
pub use message::{FieldValue, RndisMessage};
pub use packet::{RndisPacket, emit_packet, emit_packet_header, parse_packet};
pub use ppi::PacketInfo;
#[cfg(feature = "json")]
pub mod json;
