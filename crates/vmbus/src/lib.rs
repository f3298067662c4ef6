//! VMBus: the transport under netvsc and netvsp.
//!
//! In ARCHITECTURE.md's picture this crate is the lowest layer on both sides of the wire:
//! the ring buffer shared by a guest and its host (`ring`, `packet`), the VMBus channel
//! messages of the control plane (`channel_msg`, `guid`), and — with the `std` feature —
//! the emulated transport that stands in for Hyper-V: guest memory in a memfd, eventfd
//! signals, and a Unix `SOCK_SEQPACKET` control socket (`memory`, `event`, `server`,
//! `client`, `trace`).
//!
//! Everything read from shared memory or from the peer is untrusted: parsers return typed
//! errors, never panic, and never index out of bounds.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod channel_msg;
pub mod guid;
pub mod packet;
pub mod ring;

#[cfg(feature = "std")]
pub mod channel;
#[cfg(feature = "std")]
pub mod client;
#[cfg(feature = "std")]
pub mod event;
#[cfg(feature = "std")]
pub mod memory;
#[cfg(feature = "std")]
pub mod server;
#[cfg(feature = "std")]
pub mod socket;
#[cfg(feature = "std")]
pub mod trace;
