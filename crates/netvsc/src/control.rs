//! Run-time control of a running guest NIC from other threads: ethtool's features and
//! RNDIS requests through the data path's command queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::driver::{self, CommandQueue};
use crate::tap::Tap;
use crate::{GuestError, offload, rndis_io};

/// Run-time requests to a running guest NIC, from any thread.
#[derive(Clone)]
pub struct GuestControl {
    pub(crate) commands: CommandQueue,
    pub(crate) next_request: Arc<AtomicU32>,
    pub(crate) features: Arc<offload::Features>,
    pub(crate) tap: Arc<Tap>,
    pub(crate) nvsp_version: u32,
}

/// A feature ethtool can show or toggle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// rx-checksumming.
    RxCsum,
    /// tx-checksumming.
    TxCsum,
    /// scatter-gather.
    Sg,
    /// tcp-segmentation-offload.
    Tso,
    /// generic-receive-offload.
    Gro,
    /// large-receive-offload (RSC at the host).
    Lro,
    /// receive-hashing.
    RxHash,
}

impl Feature {
    /// Every toggleable feature with its control-socket name.
    pub const ALL: [(Feature, &'static str); 7] = [
        (Feature::RxCsum, "rx_csum"),
        (Feature::TxCsum, "tx_csum"),
        (Feature::Sg, "sg"),
        (Feature::Tso, "tso"),
        (Feature::Gro, "gro"),
        (Feature::Lro, "lro"),
        (Feature::RxHash, "rxhash"),
    ];
}

/// A feature's state: on, and whether it is fixed (the host cannot do it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FeatureState {
    /// On now.
    pub on: bool,
    /// Cannot be changed.
    pub fixed: bool,
}

impl GuestControl {
    fn flag(&self, f: Feature) -> &AtomicBool {
        let x = &self.features;
        match f {
            Feature::RxCsum => &x.rx_csum,
            Feature::TxCsum => &x.tx_csum,
            Feature::Sg => &x.sg,
            Feature::Tso => &x.tso,
            Feature::Gro => &x.gro,
            Feature::Lro => &x.lro,
            Feature::RxHash => &x.rxhash,
        }
    }

    /// What the host offered and bring-up enabled.
    pub fn offloads(&self) -> rndis::offload::GuestOffloads {
        self.features.caps
    }

    /// The state of every feature ethtool shows, by control-socket name (toggleable
    /// ones plus the per-family sub-features).
    pub fn features(&self) -> Vec<(&'static str, FeatureState)> {
        let caps = &self.features.caps;
        let on = |f: Feature| self.flag(f).load(Ordering::Relaxed);
        let tx_any = caps.tx_csum_v4 || caps.tx_csum_v6;
        let tso_any = caps.tso_v4.is_some() || caps.tso_v6.is_some();
        let st = |on: bool, fixed: bool| FeatureState { on, fixed };
        vec![
            ("rx_csum", st(on(Feature::RxCsum), false)),
            ("tx_csum", st(on(Feature::TxCsum), !tx_any)),
            (
                "tx_csum_ipv4",
                st(on(Feature::TxCsum) && caps.tx_csum_v4, !caps.tx_csum_v4),
            ),
            (
                "tx_csum_ipv6",
                st(on(Feature::TxCsum) && caps.tx_csum_v6, !caps.tx_csum_v6),
            ),
            ("sg", st(on(Feature::Sg), false)),
            ("tso", st(on(Feature::Tso), !tso_any)),
            (
                "tso_v4",
                st(
                    on(Feature::Tso) && caps.tso_v4.is_some(),
                    caps.tso_v4.is_none(),
                ),
            ),
            (
                "tso_v6",
                st(
                    on(Feature::Tso) && caps.tso_v6.is_some(),
                    caps.tso_v6.is_none(),
                ),
            ),
            ("gro", st(on(Feature::Gro), false)),
            ("lro", st(on(Feature::Lro), !caps.rsc)),
            ("rxhash", st(on(Feature::RxHash), false)),
        ]
    }

    /// Turns a feature on or off. Only LRO reaches the host (NDIS offload parameters
    /// with only the RSC fields set, §10); the others change what the guest and its TAP
    /// do. A change the host refuses is rolled back.
    pub fn set_feature(&self, f: Feature, on: bool) -> Result<bool, GuestError> {
        let caps = &self.features.caps;
        let fixed = match f {
            Feature::Lro => !caps.rsc,
            Feature::TxCsum => !(caps.tx_csum_v4 || caps.tx_csum_v6),
            Feature::Tso => caps.tso_v4.is_none() && caps.tso_v6.is_none(),
            _ => false,
        };
        let flag = self.flag(f);
        if flag.load(Ordering::Relaxed) == on {
            return Ok(false);
        }
        if fixed {
            return Err(GuestError::Fixed(match f {
                Feature::Lro => {
                    "large-receive-offload (the host offers no receive segment coalescing: RSC needs a ws2019 or azure host and NVSP 6.1)"
                }
                Feature::TxCsum => "tx-checksumming (the host offers no transmit checksum offload)",
                _ => "tcp-segmentation-offload (the host offers no LSO)",
            }));
        }
        if f == Feature::Lro {
            let mut p = rndis::offload::OffloadParameters::no_change();
            let v = if on {
                rndis::offload::param::ENABLED
            } else {
                rndis::offload::param::DISABLED
            };
            p.rsc_ipv4 = v;
            p.rsc_ipv6 = v;
            let size = if self.nvsp_version >= nvsp::version::V5 {
                rndis::offload::OFFLOAD_PARAMETERS_SIZE
            } else {
                rndis::offload::OFFLOAD_PARAMETERS_SIZE_REV2
            };
            let mut buf = [0u8; rndis::offload::OFFLOAD_PARAMETERS_SIZE];
            let n = p.emit(size, &mut buf)?;
            self.rndis_set(rndis::oid::TCP_OFFLOAD_PARAMETERS, &buf[..n])?;
        }
        flag.store(on, Ordering::Relaxed);
        if matches!(f, Feature::TxCsum | Feature::Sg | Feature::Tso)
            && let Err(e) = self.tap.set_offload(self.features.tun_flags())
        {
            flag.store(!on, Ordering::Relaxed);
            return Err(GuestError::Tap(e));
        }
        Ok(true)
    }

    /// Sends an RNDIS SET and waits for its status.
    pub fn rndis_set(&self, oid: u32, data: &[u8]) -> Result<(), GuestError> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        self.commands.push(driver::Command::Rndis {
            message: rndis_io::set(id, oid, data),
            request_id: id,
            reply: tx,
        });
        let reply = rx
            .recv_timeout(driver::REQUEST_TIMEOUT)
            .map_err(|_| GuestError::Timeout("SET_C"))??;
        rndis_io::expect_set_complete(&reply, rndis::oid::name(oid).unwrap_or("OID"))
    }

    /// Sends an RNDIS QUERY and returns the information buffer.
    pub fn rndis_query(&self, oid: u32, info_len: usize) -> Result<Vec<u8>, GuestError> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        self.commands.push(driver::Command::Rndis {
            message: rndis_io::query(id, oid, &vec![0; info_len]),
            request_id: id,
            reply: tx,
        });
        let reply = rx
            .recv_timeout(driver::REQUEST_TIMEOUT)
            .map_err(|_| GuestError::Timeout("QUERY_C"))??;
        rndis_io::query_data(&reply, "QUERY")
    }
}
