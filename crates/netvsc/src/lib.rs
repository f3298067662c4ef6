//! netvsc: the Hyper-V synthetic network driver (the guest's Virtual Service Client), in
//! user space.
//!
//! In ARCHITECTURE.md's picture this crate is the guest process: it brings a synthetic
//! NIC up over VMBus (NVSP, then RNDIS), runs one NAPI-style data-path thread per
//! channel, and exposes the NIC to Linux as a TAP interface.

pub mod tap;
