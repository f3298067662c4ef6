//! The host's task offloads: what it reports (OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES),
//! what the guest turned on (OID_TCP_OFFLOAD_PARAMETERS), and the work it does for the
//! guest: filling transmit checksums, validating received ones, and taking LSO
//! super-frames apart (PROTOCOL.md §7.2, §7.3, §8).

use std::sync::atomic::{AtomicU32, Ordering};

use rndis::offload::{NdisOffload, OFFLOAD_PARAMETERS_SIZE, OffloadParameters, param};
use rndis::ppi::{LsoV2Info, PacketInfo, RxChecksumInfo, TxChecksumInfo};
use zerocopy::FromZeros;

use netpkt::checksum::{ChecksumStatus, L4Protocol};
use netpkt::frame::{FrameInfo, L3, L4, parse_frame, parse_lso_frame};

use crate::profile::HostProfile;

/// Offload flags of one guest session.
pub mod flag {
    /// Validate received TCP/IPv4 checksums for the guest.
    pub const RX_TCP4: u32 = 1 << 0;
    /// UDP/IPv4.
    pub const RX_UDP4: u32 = 1 << 1;
    /// TCP/IPv6.
    pub const RX_TCP6: u32 = 1 << 2;
    /// UDP/IPv6.
    pub const RX_UDP6: u32 = 1 << 3;
    /// Fill transmitted TCP/IPv4 checksums.
    pub const TX_TCP4: u32 = 1 << 4;
    /// UDP/IPv4.
    pub const TX_UDP4: u32 = 1 << 5;
    /// TCP/IPv6.
    pub const TX_TCP6: u32 = 1 << 6;
    /// UDP/IPv6.
    pub const TX_UDP6: u32 = 1 << 7;
    /// LSOv2 over IPv4.
    pub const LSO4: u32 = 1 << 8;
    /// LSOv2 over IPv6.
    pub const LSO6: u32 = 1 << 9;
    /// RSC (the guest's LRO) on: large TCP sends arrive coalesced.
    pub const RSC: u32 = 1 << 10;
}

/// The offloads a guest session has turned on.
#[derive(Default, Debug)]
pub struct OffloadState(AtomicU32);

impl OffloadState {
    /// The flags now.
    pub fn flags(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// Whether every flag of `mask` is on.
    pub fn has(&self, mask: u32) -> bool {
        self.flags() & mask == mask
    }

    /// Applies NDIS_OFFLOAD_PARAMETERS (`data` as the guest sent it, ≥ 20 bytes; fields
    /// beyond the object's size are not read). Returns the RNDIS status.
    pub fn apply(&self, data: &[u8], profile: HostProfile, rsc_offered: bool) -> u32 {
        if data.len() < rndis::offload::OFFLOAD_PARAMETERS_SIZE_REV1 {
            return rndis::status::INVALID_DATA;
        }
        // Zero-extend to the full layout; "0 = no change" covers what was not sent.
        let declared = usize::from(u16::from_le_bytes([data[2], data[3]]));
        let n = data
            .len()
            .min(OFFLOAD_PARAMETERS_SIZE)
            .min(declared.max(20));
        let mut full = [0u8; OFFLOAD_PARAMETERS_SIZE];
        full[..n].copy_from_slice(&data[..n]);
        let Ok(p) = zerocopy::FromBytes::read_from_bytes(&full[..]) else {
            return rndis::status::INVALID_DATA;
        };
        let p: OffloadParameters = p;
        let mut f = self.flags();
        let csum = |f: &mut u32, v: u8, rx: u32, tx: u32, offered: bool| -> bool {
            match v {
                param::NO_CHANGE => true,
                param::CSUM_OFF => {
                    *f &= !(rx | tx);
                    true
                }
                param::CSUM_TX | param::CSUM_RX | param::CSUM_TX_RX if !offered => false,
                param::CSUM_TX => {
                    *f = (*f & !rx) | tx;
                    true
                }
                param::CSUM_RX => {
                    *f = (*f & !tx) | rx;
                    true
                }
                param::CSUM_TX_RX => {
                    *f |= rx | tx;
                    true
                }
                _ => false,
            }
        };
        let on_off = |f: &mut u32, v: u8, bit: u32, offered: bool| -> bool {
            match v {
                param::NO_CHANGE => true,
                param::DISABLED => {
                    *f &= !bit;
                    true
                }
                param::ENABLED if offered => {
                    *f |= bit;
                    true
                }
                _ => false,
            }
        };
        let udp = profile.udp_checksum_offload();
        let ok = csum(&mut f, p.tcp4, flag::RX_TCP4, flag::TX_TCP4, true)
            && csum(&mut f, p.udp4, flag::RX_UDP4, flag::TX_UDP4, udp)
            && csum(&mut f, p.tcp6, flag::RX_TCP6, flag::TX_TCP6, true)
            && csum(&mut f, p.udp6, flag::RX_UDP6, flag::TX_UDP6, udp)
            && on_off(&mut f, p.lso_v2_ipv4, flag::LSO4, true)
            && on_off(&mut f, p.lso_v2_ipv6, flag::LSO6, true)
            && (n <= 22 || on_off(&mut f, p.rsc_ipv4.max(p.rsc_ipv6), flag::RSC, rsc_offered));
        if !ok {
            return rndis::status::NOT_SUPPORTED;
        }
        self.0.store(f, Ordering::Relaxed);
        rndis::status::SUCCESS
    }
}

/// The capabilities the host reports for a profile and NVSP version.
pub fn capabilities(profile: HostProfile, rsc_offered: bool) -> NdisOffload {
    NdisOffload::host(profile.udp_checksum_offload(), rsc_offered)
}

/// Whether RSC can be offered: the profile has it and NVSP 6.1 was negotiated.
pub fn rsc_offered(profile: HostProfile, nvsp_version: u32) -> bool {
    profile.rsc() && nvsp_version >= nvsp::version::V6_1
}

/// What the host learned from a guest send's PPIs, after doing its part.
#[derive(Clone, Copy, Debug, Default)]
pub struct TxResult {
    /// The MSS of an LSO super-frame still to be segmented (or coalesced).
    pub lso_mss: Option<u16>,
    /// The L4 checksum was filled by the host.
    pub checksum_good: bool,
}

/// Applies a guest send's offload requests to its frame (in the host's private copy):
/// fills a requested TCP/UDP checksum, validates an LSO request against the frame.
pub fn prepare_tx(frame: &mut [u8], info: &PacketInfo) -> Result<TxResult, String> {
    if let Some(lso) = info.lso.map(LsoV2Info) {
        let mss = lso.mss();
        if mss == 0 || mss > 0xFFFF {
            return Err(format!("LSO MSS {mss} out of range"));
        }
        let parsed = parse_lso_frame(frame).map_err(|e| format!("LSO frame: {e}"))?;
        let tcp_at = parsed.l4_offset.unwrap_or(0);
        let is_v6 = matches!(parsed.l3, L3::Ipv6 { .. });
        if !matches!(parsed.l4, L4::Tcp { .. })
            || tcp_at != usize::from(lso.tcp_header_offset())
            || is_v6 != lso.is_ipv6()
        {
            return Err(format!(
                "LSO request (TCP at {}, IPv6 {}) does not match the frame (TCP at {tcp_at}, IPv6 {is_v6})",
                lso.tcp_header_offset(),
                lso.is_ipv6()
            ));
        }
        // §8.3: no more TCP payload than the host advertised (62780), no fragment.
        netpkt::lso::LsoPlan::new(frame, mss as u16, tcp_at)
            .map_err(|e| format!("LSO request: {e}"))?;
        return Ok(TxResult {
            lso_mss: Some(mss as u16),
            checksum_good: true,
        });
    }
    if let Some(c) = info.checksum.map(TxChecksumInfo) {
        if !(c.tcp() || c.udp()) {
            return Ok(TxResult::default());
        }
        let parsed = parse_frame(frame).map_err(|e| format!("checksum frame: {e}"))?;
        if parsed.l4_offset != Some(usize::from(c.l4_header_offset())) {
            return Err(format!(
                "checksum request names L4 offset {} but the frame's is {:?}",
                c.l4_header_offset(),
                parsed.l4_offset
            ));
        }
        let proto = netpkt::checksum::fill_l4_checksum_parsed(frame, &parsed)
            .map_err(|e| format!("checksum: {e}"))?;
        if (proto == L4Protocol::Tcp) != c.tcp() {
            return Err("checksum request names the wrong L4 protocol".into());
        }
        return Ok(TxResult {
            lso_mss: None,
            checksum_good: true,
        });
    }
    Ok(TxResult::default())
}

/// The RX checksum PPI for a frame delivered to a guest with `flags`, or None if the
/// guest validates that class itself. `known_good` skips the verification.
pub fn rx_checksum(flags: u32, frame: &[u8], known_good: bool) -> Option<u32> {
    rx_checksum_parsed(flags, frame, &parse_frame(frame).ok()?, known_good)
}

/// As [`rx_checksum`], for a frame the caller already parsed into `info`.
pub fn rx_checksum_parsed(
    flags: u32,
    frame: &[u8],
    info: &FrameInfo,
    known_good: bool,
) -> Option<u32> {
    if info.l3.is_fragment() {
        return None;
    }
    let (v6, l4) = match (&info.l3, &info.l4) {
        (L3::Ipv4 { .. }, l4) => (false, l4),
        (L3::Ipv6 { .. }, l4) => (true, l4),
        _ => return None,
    };
    let (ok, failed, enabled) = match (l4, v6) {
        (L4::Tcp { .. }, false) => (
            RxChecksumInfo::TCP_OK,
            RxChecksumInfo::TCP_FAILED,
            flag::RX_TCP4,
        ),
        (L4::Tcp { .. }, true) => (
            RxChecksumInfo::TCP_OK,
            RxChecksumInfo::TCP_FAILED,
            flag::RX_TCP6,
        ),
        (L4::Udp { .. }, false) => (
            RxChecksumInfo::UDP_OK,
            RxChecksumInfo::UDP_FAILED,
            flag::RX_UDP4,
        ),
        (L4::Udp { .. }, true) => (
            RxChecksumInfo::UDP_OK,
            RxChecksumInfo::UDP_FAILED,
            flag::RX_UDP6,
        ),
        _ => return None,
    };
    if flags & enabled == 0 {
        return None;
    }
    if known_good {
        return Some(ok);
    }
    match netpkt::checksum::verify_l4_checksum_parsed(frame, info) {
        Ok(ChecksumStatus::Valid) => Some(ok),
        // No checksum to check (UDP/IPv4 with 0): let the guest decide.
        Ok(ChecksumStatus::Absent) => None,
        Ok(ChecksumStatus::Invalid { .. }) | Err(_) => Some(failed),
    }
}

/// Parses a frame for the host's purposes (exported for the delivery path).
pub fn parse(frame: &[u8]) -> Option<FrameInfo> {
    parse_frame(frame).ok()
}

/// An all-zero capability object, for tests.
pub fn empty_capabilities() -> NdisOffload {
    NdisOffload::new_zeroed()
}
