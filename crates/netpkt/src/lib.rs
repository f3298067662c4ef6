//! Packet algorithms shared by both ends of hvnet's synthetic NIC.
//!
//! In ARCHITECTURE.md's picture this crate sits beside `vmbus`, `nvsp` and `rndis` at the
//! bottom of the stack and depends on none of them: the guest driver (`netvsc`) uses it for
//! queue selection, checksum offload translation, segmentation of TAP TSO frames and GRO;
//! the host (`netvsp` and its vswitch) for flow parsing, RSS delivery (Toeplitz over the
//! configured hash types), LSO segmentation, RSC coalescing and checksum fill/validate.
//! Everything here works on plain Ethernet frames in byte slices: [`frame`] finds the
//! headers, [`checksum`] computes and checks Internet checksums, [`toeplitz`] hashes flows,
//! [`lso`] splits a large TCP frame into MSS-sized ones and [`coalesce`] merges them back.
//!
//! Input is untrusted (frames come from the other side of the VMBus): no function panics or
//! reads out of bounds on any bytes, failures are typed errors naming the offending value,
//! and nothing allocates per packet. The crate is `no_std` without the default `std`
//! feature; `alloc` only adds [`coalesce::Coalescer::new`].
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod checksum;
pub mod coalesce;
pub mod frame;
pub mod lso;
pub mod toeplitz;
mod wire;

pub use checksum::{ChecksumError, ChecksumStatus};
pub use coalesce::{CoalesceConfig, CoalescedFrame, Coalescer};
pub use frame::{FrameInfo, L3, L4, ParseError, parse_frame};
pub use lso::LsoError;
pub use toeplitz::{DEFAULT_KEY, FlowHashType, Toeplitz};
