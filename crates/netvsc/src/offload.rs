//! The guest's offloads: what the host offered, what is on (ethtool's features), and the
//! translation between the TAP's virtio-net headers and RNDIS per-packet info
//! (PROTOCOL.md §8).

use std::sync::atomic::{AtomicBool, Ordering};

use netpkt::checksum;
use netpkt::frame::{L3, L4, parse_frame};
use rndis::offload::GuestOffloads;
use rndis::ppi::{LsoV2Info, PacketInfo, RxChecksumInfo, TxChecksumInfo};

use crate::tap::{VNET_HDR_F_NEEDS_CSUM, VnetHdr, gso};

/// `TUNSETOFFLOAD` flags.
pub mod tun {
    /// The kernel may hand us partial checksums.
    pub const CSUM: u32 = 0x01;
    /// TSO over IPv4.
    pub const TSO4: u32 = 0x02;
    /// TSO over IPv6.
    pub const TSO6: u32 = 0x04;
}

/// The NIC's features: negotiated capabilities and ethtool's on/off switches.
#[derive(Debug)]
pub struct Features {
    /// What the host offered and the guest enabled at bring-up.
    pub caps: GuestOffloads,
    /// `rx-checksumming`: trust the host's RX checksum results.
    pub rx_csum: AtomicBool,
    /// `tx-checksumming`: hand partial checksums to the host.
    pub tx_csum: AtomicBool,
    /// `scatter-gather`.
    pub sg: AtomicBool,
    /// `tcp-segmentation-offload`.
    pub tso: AtomicBool,
    /// `generic-receive-offload`: merge received TCP segments.
    pub gro: AtomicBool,
    /// `large-receive-offload`: the host coalesces (RSC); only if `caps.rsc`.
    pub lro: AtomicBool,
    /// `receive-hashing`.
    pub rxhash: AtomicBool,
}

impl Features {
    /// Features after bring-up: everything negotiated is on, LRO as asked.
    pub fn new(caps: GuestOffloads, lro: bool) -> Self {
        Self {
            caps,
            rx_csum: AtomicBool::new(true),
            tx_csum: AtomicBool::new(caps.tx_csum_v4 || caps.tx_csum_v6),
            sg: AtomicBool::new(true),
            tso: AtomicBool::new(caps.tso_v4.is_some() || caps.tso_v6.is_some()),
            gro: AtomicBool::new(true),
            lro: AtomicBool::new(caps.rsc && lro),
            rxhash: AtomicBool::new(true),
        }
    }

    /// The TAP offload flags these features allow.
    pub fn tun_flags(&self) -> u32 {
        let mut f = 0;
        if self.tx_csum.load(Ordering::Relaxed) {
            f |= tun::CSUM;
            if self.tso.load(Ordering::Relaxed) && self.sg.load(Ordering::Relaxed) {
                if self.caps.tso_v4.is_some() {
                    f |= tun::TSO4;
                }
                if self.caps.tso_v6.is_some() {
                    f |= tun::TSO6;
                }
            }
        }
        f
    }
}

/// What the transmit path does with one frame from the TAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxAction {
    /// Send as is (checksum complete or none needed).
    Plain,
    /// Send with this per-packet info (checksum or LSO request).
    Offload(PacketInfo),
    /// A GSO frame the host cannot take whole (larger than its LSO limit, or LSO not
    /// offered for its family): segment it here into frames of this MSS.
    Segment(u16),
}

/// Errors preparing a frame for transmit.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// The TAP gave a GSO frame the host cannot segment.
    #[error("GSO frame not supported: {0}")]
    Gso(String),
}

/// Prepares a frame read from the TAP: builds the LSO or checksum PPI the host can act
/// on, or completes the checksum in software where the host cannot (§8.1, §8.2, §8.3).
pub fn prepare_tx(
    features: &Features,
    vnet: &VnetHdr,
    frame: &mut [u8],
) -> Result<TxAction, TxError> {
    let caps = &features.caps;
    let gso_type = vnet.gso_type & !gso::ECN;
    if gso_type == gso::TCPV4 || gso_type == gso::TCPV6 {
        let v6 = gso_type == gso::TCPV6;
        let tcp_at = usize::from(vnet.csum_start);
        let info = parse_frame(frame).map_err(|e| TxError::Gso(e.to_string()))?;
        let L4::Tcp { header_len, .. } = info.l4 else {
            return Err(TxError::Gso("GSO frame is not TCP".into()));
        };
        if info.l4_offset != Some(tcp_at) {
            return Err(TxError::Gso(format!(
                "TCP header not at csum_start {tcp_at}"
            )));
        }
        let payload = info.ip_end.saturating_sub(tcp_at + usize::from(header_len));
        let limit = if v6 { caps.tso_v6 } else { caps.tso_v4 };
        let enabled = features.tso.load(Ordering::Relaxed);
        if !enabled || limit.is_none_or(|max| payload > max as usize) {
            return Ok(TxAction::Segment(vnet.gso_size.max(1)));
        }
        // The LSO form the host expects (§8.3): IPv4 total length and header checksum
        // zero (IPv6 payload length zero), TCP checksum seeded with the pseudo-header
        // sum for length 0.
        let l3 = info.l3_offset;
        let seed = match info.l3 {
            L3::Ipv4 { src, dst, .. } if !v6 => {
                frame[l3 + 2..l3 + 4].fill(0);
                frame[l3 + 10..l3 + 12].fill(0);
                checksum::fold(checksum::pseudo_header_v4(src, dst, 6, 0))
            }
            L3::Ipv6 { src, dst, .. } if v6 => {
                frame[l3 + 4..l3 + 6].fill(0);
                checksum::fold(checksum::pseudo_header_v6(src, dst, 6, 0))
            }
            _ => {
                return Err(TxError::Gso(
                    "GSO type does not match the IP version".into(),
                ));
            }
        };
        frame[tcp_at + 16..tcp_at + 18].copy_from_slice(&seed.to_be_bytes());
        return Ok(TxAction::Offload(PacketInfo {
            lso: Some(LsoV2Info::new(u32::from(vnet.gso_size), tcp_at as u16, v6).0),
            ..Default::default()
        }));
    }
    if vnet.flags & VNET_HDR_F_NEEDS_CSUM == 0 {
        return Ok(TxAction::Plain);
    }
    let start = usize::from(vnet.csum_start);
    let offset = usize::from(vnet.csum_offset);
    if let Ok(info) = parse_frame(frame)
        && info.l4_offset == Some(start)
        && !info.l3.is_fragment()
    {
        let v6 = matches!(info.l3, L3::Ipv6 { .. });
        let (tcp, udp) = (
            matches!(info.l4, L4::Tcp { .. }) && offset == 16,
            matches!(info.l4, L4::Udp { .. }) && offset == 6,
        );
        let host_can = match (v6, tcp, udp) {
            (false, true, _) => caps.tx_csum_v4,
            (true, true, _) => caps.tx_csum_v6,
            (false, _, true) => caps.udp_csum_v4,
            (true, _, true) => caps.udp_csum_v6,
            _ => false,
        };
        if host_can && features.tx_csum.load(Ordering::Relaxed) {
            return Ok(TxAction::Offload(PacketInfo {
                checksum: Some(TxChecksumInfo::new(v6, udp, start as u16).0),
                ..Default::default()
            }));
        }
    }
    // The host cannot (e.g. UDP on 2012 R2): finish the checksum here.
    let _ = checksum::complete_partial_checksum(frame, start, offset);
    Ok(TxAction::Plain)
}

/// Whether the host validated a received frame's L4 checksum (§8.4, with RX checksum
/// offload on); fixes a stale IPv4 header checksum the host validated (bits 5 + 8).
pub fn rx_validated(features: &Features, info: &PacketInfo, frame: &mut [u8]) -> bool {
    let Some(c) = info.checksum.map(RxChecksumInfo) else {
        return false;
    };
    if !features.rx_csum.load(Ordering::Relaxed) {
        return false;
    }
    if c.has(RxChecksumInfo::IP_OK | RxChecksumInfo::IP_VALUE_INVALID) {
        let _ = checksum::fill_ipv4_header_checksum(frame);
    }
    c.l4_verified()
}

/// How to hand a validated frame to the kernel: as a partial checksum (virtio
/// NEEDS_CSUM, the kernel's CHECKSUM_PARTIAL, which its stack trusts on receive and
/// completes if it forwards), and for a merged super-frame as a GSO packet of `mss`
/// segments. The L4 checksum field must then hold the pseudo-header sum: the returned
/// offset and bytes patch it when the frame is written (the bytes may be stale).
pub fn validated_vnet(frame: &[u8], mss: Option<u16>) -> Option<(VnetHdr, usize, [u8; 2])> {
    let info = parse_frame(frame).ok()?;
    if info.l3.is_fragment() {
        return None;
    }
    let l4 = info.l4_offset?;
    let l4_len = info.ip_end.checked_sub(l4)?;
    let (proto, field, header_len) = match info.l4 {
        L4::Tcp { header_len, .. } => (6u8, 16usize, usize::from(header_len)),
        L4::Udp { .. } if mss.is_none() => (17, 6, 8),
        _ => return None,
    };
    let (seed, gso_type) = match info.l3 {
        L3::Ipv4 { src, dst, .. } => (
            checksum::pseudo_header_v4(src, dst, proto, l4_len as u16),
            gso::TCPV4,
        ),
        L3::Ipv6 { src, dst, .. } => (
            checksum::pseudo_header_v6(src, dst, proto, l4_len as u32),
            gso::TCPV6,
        ),
        L3::Other => return None,
    };
    let mut hdr = VnetHdr {
        flags: VNET_HDR_F_NEEDS_CSUM,
        csum_start: l4 as u16,
        csum_offset: field as u16,
        ..Default::default()
    };
    if let Some(mss) = mss {
        hdr.gso_type = gso_type;
        hdr.gso_size = mss;
        hdr.hdr_len = (l4 + header_len) as u16;
    }
    Some((hdr, l4 + field, checksum::fold(seed).to_be_bytes()))
}

/// Prepares the private header copy of an RSC frame of `total` bytes for the kernel
/// (PROTOCOL.md §8.4, §10): recomputes a stale IPv4 header checksum (bits 5 + 8), seeds
/// the TCP checksum with the pseudo-header sum and returns the virtio-net header that
/// hands the frame over as one GSO packet with a trusted partial checksum. None if the
/// host did not validate the frame, it is not TCP, or its headers reach past `head`.
pub fn rsc_headers(
    features: &Features,
    info: &PacketInfo,
    head: &mut [u8],
    total: usize,
    mtu: u32,
) -> Option<VnetHdr> {
    let c = info.checksum.map(RxChecksumInfo)?;
    if !features.rx_csum.load(Ordering::Relaxed) || !c.has(RxChecksumInfo::TCP_OK) {
        return None;
    }
    // Parse the headers alone: the IP length field is read as "to the end".
    let mut probe = [0u8; 256];
    let probe = probe.get_mut(..head.len())?;
    probe.copy_from_slice(head);
    let ethertype_at = 12;
    let l3 = 14;
    let v4 = head.get(ethertype_at..ethertype_at + 2)? == [0x08, 0x00];
    if v4 {
        probe.get_mut(l3 + 2..l3 + 4)?.fill(0);
    } else {
        probe.get_mut(l3 + 4..l3 + 6)?.fill(0);
    }
    let parsed = netpkt::frame::parse_lso_frame(probe).ok()?;
    let L4::Tcp { header_len, .. } = parsed.l4 else {
        return None;
    };
    let l4 = parsed.l4_offset?;
    if parsed.l3_offset != l3 || l4 + usize::from(header_len) > head.len() || total < l4 {
        return None;
    }
    let l4_len = total - l4;
    let seed = match parsed.l3 {
        L3::Ipv4 {
            src,
            dst,
            header_len: ihl,
            ..
        } => {
            let ip_len = u16::try_from(total - l3).ok()?;
            if head.get(l3 + 2..l3 + 4)? != ip_len.to_be_bytes() {
                return None;
            }
            if c.has(RxChecksumInfo::IP_OK | RxChecksumInfo::IP_VALUE_INVALID) {
                let end = l3 + usize::from(ihl);
                head.get_mut(l3 + 10..l3 + 12)?.fill(0);
                let sum = checksum::finish(checksum::sum(head.get(l3..end)?, 0));
                head[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
            }
            checksum::pseudo_header_v4(src, dst, 6, u16::try_from(l4_len).ok()?)
        }
        L3::Ipv6 { src, dst, .. } => checksum::pseudo_header_v6(src, dst, 6, l4_len as u32),
        L3::Other => return None,
    };
    head.get_mut(l4 + 16..l4 + 18)?
        .copy_from_slice(&checksum::fold(seed).to_be_bytes());
    let headers = l4 - l3 + usize::from(header_len);
    let mss = (mtu as usize).checked_sub(headers)? as u16;
    let gso_type = if v4 { gso::TCPV4 } else { gso::TCPV6 };
    let big = total > mtu as usize + 14;
    Some(VnetHdr {
        flags: VNET_HDR_F_NEEDS_CSUM,
        gso_type: if big { gso_type } else { gso::NONE },
        hdr_len: if big {
            (l4 + usize::from(header_len)) as u16
        } else {
            0
        },
        gso_size: if big { mss } else { 0 },
        csum_start: l4 as u16,
        csum_offset: 16,
    })
}
