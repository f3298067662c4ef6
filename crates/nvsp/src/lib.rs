//! NVSP: the Network Virtual Service Protocol spoken on every netvsc channel.
//!
//! In ARCHITECTURE.md's picture this crate sits between the `vmbus` rings and `rndis`, on
//! both sides of the wire: the netvsc guest uses it to negotiate the protocol, share its
//! receive and send buffers, open subchannels and hand RNDIS messages to the host; the
//! netvsp host parses the same messages and answers them. It holds only wire types and the
//! version rules (PROTOCOL.md §4), no state and no I/O, and builds `no_std` without alloc.
//!
//! - [`wire`]: one zerocopy layout per message type, and the size constants.
//! - [`message`]: [`NvspMessage`], the validated parse and the emitter.
//! - [`send_table`]: the send indirection table (type 134) and its version rule.
//! - [`version`], [`status`], [`msg_type`], [`capability`]: the numbers, with names.
//!
//! Input is hostile: parsing never panics, never reads out of bounds, and accepts messages
//! longer than their layout (never shorter).
#![cfg_attr(not(feature = "std"), no_std)]

pub mod capability;
pub mod message;
pub mod msg_type;
pub mod send_table;
pub mod status;
pub mod version;
pub mod wire;

pub use message::{FieldValue, NvspError, NvspMessage, SendIndirectionTable};
pub use send_table::{emit_send_indirection_table, parse_send_indirection_table};
#[cfg(feature = "json")]
pub mod json;
