//! Run-time control of a running guest NIC from other threads: ethtool's features, RSS
//! and flow-hash settings, RNDIS requests through the data path's command queue, and
//! data-path rebuilds (ethtool -L/-G) handed to the thread that owns the NIC.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::driver::{self, CommandQueue};
use crate::tap::Tap;
use crate::{GuestError, offload, rndis_io};

/// What the control side may use of a running data path (None while it is rebuilt).
#[derive(Clone)]
pub(crate) struct Handles {
    pub(crate) commands: CommandQueue,
    pub(crate) features: Arc<offload::Features>,
    pub(crate) nvsp_version: u32,
    pub(crate) queues: u32,
}

/// A data-path rebuild asked for by ethtool.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rebuild {
    /// New queue count (`-L combined`).
    pub queues: Option<u16>,
    /// New receive-section count (`-G rx`).
    pub rx: Option<u32>,
    /// New send-section count (`-G tx`).
    pub tx: Option<u32>,
}

/// The RSS settings the guest sent (§7.5), kept for `ethtool -x` and re-attach.
#[derive(Clone, Debug)]
pub struct RssSettings {
    /// The Toeplitz key.
    pub key: [u8; 40],
    /// The indirection table (queue per entry).
    pub table: Vec<u32>,
    /// Hash function and types.
    pub hash_info: u32,
}

/// A rebuild request and where its outcome goes.
pub(crate) type PendingRebuild = (Rebuild, Sender<Result<(), String>>);

/// State shared between the NIC's owner and its control handles.
#[derive(Default)]
pub(crate) struct Shared {
    handles: Mutex<Option<Handles>>,
    rebuild: Mutex<Option<PendingRebuild>>,
    /// RSS as last sent; None for a single-queue NIC.
    pub(crate) rss: Mutex<Option<RssSettings>>,
    /// RSS kept across a rebuild (the user's `ethtool -X` choices).
    pub(crate) kept_rss: Mutex<Option<RssSettings>>,
    /// The user set the indirection table (`ethtool -X` with a table other than the
    /// default): a channel change must keep every entry's queue.
    pub(crate) rss_configured: std::sync::atomic::AtomicBool,
    /// Most queues the host offers (its RSS capabilities), 1 without RSS.
    pub(crate) max_queues: AtomicU32,
    /// `ethtool -N rx-flow-hash` L4 bits: TCP4 1, TCP6 2, UDP4 4, UDP6 8 (default all).
    pub(crate) l4_hash: AtomicU8,
    pub(crate) features: Mutex<Option<Arc<offload::Features>>>,
    /// The NIC's XDP program (kept across rebuilds).
    pub(crate) xdp: Arc<crate::xdp_hook::Slot>,
}

impl Shared {
    pub(crate) fn set_control(&self, h: Option<Handles>) {
        *self.features.lock().unwrap() = h.as_ref().map(|h| h.features.clone());
        *self.handles.lock().unwrap() = h;
    }

    fn handles(&self) -> Result<Handles, GuestError> {
        self.handles
            .lock()
            .unwrap()
            .clone()
            .ok_or(GuestError::Protocol(
                "the NIC's data path is being rebuilt; try again".into(),
            ))
    }

    /// The pending rebuild request, if any (taken by the NIC's owner).
    pub(crate) fn take_rebuild(&self) -> Option<PendingRebuild> {
        self.rebuild.lock().unwrap().take()
    }
}

/// NDIS offload parameters with only the RSC bytes set (what ethtool -K lro sends).
pub(crate) fn lro_parameters(on: bool, nvsp_version: u32) -> Result<Vec<u8>, GuestError> {
    let mut p = rndis::offload::OffloadParameters::no_change();
    let v = if on {
        rndis::offload::param::ENABLED
    } else {
        rndis::offload::param::DISABLED
    };
    p.rsc_ipv4 = v;
    p.rsc_ipv6 = v;
    let size = if nvsp_version >= nvsp::version::V5 {
        rndis::offload::OFFLOAD_PARAMETERS_SIZE
    } else {
        rndis::offload::OFFLOAD_PARAMETERS_SIZE_REV2
    };
    let mut buf = vec![0u8; rndis::offload::OFFLOAD_PARAMETERS_SIZE];
    let n = p.emit(size, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Run-time requests to a running guest NIC, from any thread.
#[derive(Clone)]
pub struct GuestControl {
    pub(crate) shared: Arc<Shared>,
    pub(crate) next_request: Arc<AtomicU32>,
    pub(crate) tap: Arc<Tap>,
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

fn flag(x: &offload::Features, f: Feature) -> &AtomicBool {
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

/// `ethtool -N rx-flow-hash` flow types and their `l4_hash` bit (§9.3).
pub const FLOW_TYPES: [(&str, u8); 4] = [("tcp4", 1), ("tcp6", 2), ("udp4", 4), ("udp6", 8)];

impl GuestControl {
    fn feature_set(&self) -> Result<Arc<offload::Features>, GuestError> {
        self.shared
            .features
            .lock()
            .unwrap()
            .clone()
            .ok_or(GuestError::Protocol(
                "the NIC's data path is being rebuilt; try again".into(),
            ))
    }

    /// What the host offered and bring-up enabled.
    pub fn offloads(&self) -> rndis::offload::GuestOffloads {
        self.feature_set().map(|f| f.caps).unwrap_or_default()
    }

    /// The state of every feature ethtool shows, by control-socket name (toggleable
    /// ones plus the per-family sub-features).
    pub fn features(&self) -> Vec<(&'static str, FeatureState)> {
        let Ok(x) = self.feature_set() else {
            return Vec::new();
        };
        let caps = &x.caps;
        let on = |f: Feature| flag(&x, f).load(Ordering::Relaxed);
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
        let x = self.feature_set()?;
        let caps = &x.caps;
        let fixed = match f {
            Feature::Lro => !caps.rsc,
            Feature::TxCsum => !(caps.tx_csum_v4 || caps.tx_csum_v6),
            Feature::Tso => caps.tso_v4.is_none() && caps.tso_v6.is_none(),
            _ => false,
        };
        let flag = flag(&x, f);
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
        if f == Feature::Lro && on && self.shared.xdp.current().is_some() {
            return Err(GuestError::Protocol(
                "large-receive-offload cannot be turned on while an XDP program is attached \
                 (hvnet xdp unload first)"
                    .into(),
            ));
        }
        if f == Feature::Lro {
            let h = self.shared.handles()?;
            self.rndis_set(
                rndis::oid::TCP_OFFLOAD_PARAMETERS,
                &lro_parameters(on, h.nvsp_version)?,
            )?;
        }
        flag.store(on, Ordering::Relaxed);
        if matches!(f, Feature::TxCsum | Feature::Sg | Feature::Tso)
            && let Err(e) = self.tap.set_offload(x.tun_flags())
        {
            flag.store(!on, Ordering::Relaxed);
            return Err(GuestError::Tap(e));
        }
        Ok(true)
    }

    /// Attaches an XDP program to the NIC (§12): refused while LRO is on, and when the
    /// MTU leaves no room in a page for the frame after the 256-byte headroom.
    pub fn xdp_attach(
        &self,
        program: xdp::vm::Program,
        label: String,
        mtu: u32,
    ) -> Result<(), GuestError> {
        let x = self.feature_set()?;
        if x.lro.load(Ordering::Relaxed) {
            return Err(GuestError::Protocol(
                "XDP cannot be attached while large-receive-offload (LRO) is on: \
                 run `hvnet ethtool -K eth0 lro off` first"
                    .into(),
            ));
        }
        // 256 + align(MTU + 14) + align(skb_shared_info) must fit a page (≈ MTU 3506).
        let need = 256 + (mtu as usize + 14).next_multiple_of(64) + 320;
        if need > 4096 {
            return Err(GuestError::Protocol(format!(
                "XDP needs MTU ≤ 3506 (the frame must fit a page after 256 bytes of headroom); MTU is {mtu}"
            )));
        }
        self.shared
            .xdp
            .set(Some(Arc::new(crate::xdp_hook::Attachment::new(
                program, label,
            ))));
        Ok(())
    }

    /// Detaches the NIC's XDP program; false if none was attached.
    pub fn xdp_detach(&self) -> bool {
        let had = self.shared.xdp.current().is_some();
        self.shared.xdp.set(None);
        had
    }

    /// The attached program, for status and map dumps.
    pub fn xdp(&self) -> Option<Arc<crate::xdp_hook::Attachment>> {
        self.shared.xdp.current()
    }

    /// Queues in use and the most the host offers (`ethtool -l`).
    pub fn channels(&self) -> Result<(u32, u32), GuestError> {
        let h = self.shared.handles()?;
        let max = self
            .shared
            .max_queues
            .load(Ordering::Relaxed)
            .max(h.queues)
            .min(64);
        Ok((h.queues, max))
    }

    /// Whether the user set the indirection table (so `-L` must keep its queues).
    pub fn rss_configured(&self) -> bool {
        self.shared.rss_configured.load(Ordering::Relaxed)
    }

    /// RSS as last sent (`ethtool -x`); None on a single queue.
    pub fn rss(&self) -> Option<RssSettings> {
        self.shared.rss.lock().unwrap().clone()
    }

    /// Sends new RSS parameters (`ethtool -X`): the table (entries < queues) and/or the
    /// key, twice as Linux does (disabled, then enabled); kept if the host takes them.
    pub fn set_rss(
        &self,
        table: Option<Vec<u32>>,
        key: Option<[u8; 40]>,
    ) -> Result<(), GuestError> {
        let h = self.shared.handles()?;
        let Some(mut rss) = self.rss() else {
            return Err(GuestError::Protocol(
                "the NIC has a single queue: no RSS to configure".into(),
            ));
        };
        if let Some(t) = table {
            if t.is_empty() || t.len() > 128 || t.iter().any(|&q| q >= h.queues) {
                return Err(GuestError::Protocol(format!(
                    "indirection table must have 1 to 128 entries below {} (the queue count)",
                    h.queues
                )));
            }
            rss.table = (0..128).map(|i| t[i % t.len()]).collect();
            let default = rss
                .table
                .iter()
                .enumerate()
                .all(|(i, &q)| q == i as u32 % h.queues);
            self.shared
                .rss_configured
                .store(!default, Ordering::Relaxed);
        }
        if let Some(k) = key {
            rss.key = k;
        }
        for flags in [rndis::rss::flags::DISABLE_RSS, 0] {
            let mut buf = vec![0u8; 40 + 4 * rss.table.len() + 40];
            let n = rndis::rss::emit_rss_parameters(
                &mut buf,
                flags,
                rss.hash_info,
                &rss.table,
                &rss.key,
            )?;
            self.rndis_set(rndis::oid::GEN_RECEIVE_SCALE_PARAMETERS, &buf[..n])?;
        }
        *self.shared.rss.lock().unwrap() = Some(rss);
        Ok(())
    }

    /// Whether `ethtool -N` has flow type `proto` hashed with ports (`sdfn`) or by
    /// addresses only (`sd`); None for an unknown flow type.
    pub fn flow_hash_l4(&self, proto: &str) -> Option<bool> {
        let bit = FLOW_TYPES.iter().find(|(n, _)| *n == proto)?.1;
        Some(self.shared.l4_hash.load(Ordering::Relaxed) & bit != 0)
    }

    /// Sets a flow type's hash level (`ethtool -N rx-flow-hash`): transmit queue choice
    /// only, as in the Linux driver; nothing reaches the host.
    pub fn set_flow_hash_l4(&self, proto: &str, l4: bool) -> Result<(), GuestError> {
        let Some(bit) = FLOW_TYPES.iter().find(|(n, _)| *n == proto).map(|x| x.1) else {
            return Err(GuestError::Protocol(format!(
                "flow type {proto} not supported"
            )));
        };
        if l4 {
            self.shared.l4_hash.fetch_or(bit, Ordering::Relaxed);
        } else {
            self.shared.l4_hash.fetch_and(!bit, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Asks the NIC's owner to rebuild the data path (ethtool -L/-G) and waits for it.
    pub fn rebuild(&self, r: Rebuild) -> Result<(), GuestError> {
        let (tx, rx): (Sender<Result<(), String>>, Receiver<_>) = std::sync::mpsc::channel();
        {
            let mut slot = self.shared.rebuild.lock().unwrap();
            if slot.is_some() {
                return Err(GuestError::Protocol(
                    "another rebuild is in progress".into(),
                ));
            }
            *slot = Some((r, tx));
        }
        rx.recv_timeout(Duration::from_secs(60))
            .map_err(|_| GuestError::Timeout("data path rebuild"))?
            .map_err(GuestError::Protocol)
    }

    /// Sends an RNDIS SET and waits for its status.
    pub fn rndis_set(&self, oid: u32, data: &[u8]) -> Result<(), GuestError> {
        let h = self.shared.handles()?;
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        h.commands.push(driver::Command::Rndis {
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
        let h = self.shared.handles()?;
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        h.commands.push(driver::Command::Rndis {
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
