//! Offload objects: NDIS_OFFLOAD capabilities (PROTOCOL.md §7.2, OID
//! TCP_OFFLOAD_HARDWARE_CAPABILITIES) and NDIS_OFFLOAD_PARAMETERS (§7.3, OID
//! TCP_OFFLOAD_PARAMETERS), with the host's per-profile answer, the guest's acceptance
//! rules and what the guest enables from it (§8.1).

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::error::RndisError;
use crate::ndis_object::{NdisObjectHeader, TYPE_DEFAULT, TYPE_OFFLOAD};

/// NDIS_OFFLOAD size for revision 1.
pub const OFFLOAD_SIZE_REV1: usize = 112;
/// NDIS_OFFLOAD size for revision 2.
pub const OFFLOAD_SIZE_REV2: usize = 144;
/// NDIS_OFFLOAD size for revision 3.
pub const OFFLOAD_SIZE_REV3: usize = 156;

/// Encapsulation value: 802.3.
pub const ENCAP_802_3: u32 = 0x2;

/// Checksum capability bits (2-bit fields, 1 = supported) of the checksum words.
pub mod csum {
    /// IPv4: IP options.
    pub const IP4OPT: u32 = 0x1;
    /// IPv4: TCP options.
    pub const TCP4OPT: u32 = 0x4;
    /// IPv4: TCP checksum.
    pub const TCP4: u32 = 0x10;
    /// IPv4: UDP checksum.
    pub const UDP4: u32 = 0x40;
    /// IPv4: IP header checksum.
    pub const IP4: u32 = 0x100;
    /// IPv6: extension headers.
    pub const IP6EXT: u32 = 0x1;
    /// IPv6: TCP options.
    pub const TCP6OPT: u32 = 0x4;
    /// IPv6: TCP checksum.
    pub const TCP6: u32 = 0x10;
    /// IPv6: UDP checksum.
    pub const UDP6: u32 = 0x40;
}

/// LSOv2 IPv6 option bits (`ip6_opts`).
pub mod lso_opts {
    /// IPv6 extension headers supported.
    pub const IP6_EXT_HEADERS: u32 = 0x1;
    /// TCP options supported.
    pub const TCP_OPTIONS: u32 = 0x4;
}

/// Largest LSO payload vmswitch accepts (per OpenVMM).
pub const HOST_LSO_MAX_SIZE: u32 = 62780;
/// Fewest segments vmswitch offloads (per OpenVMM).
pub const HOST_LSO_MIN_SEGMENTS: u32 = 2;

/// Checksum offload capabilities (NDIS_OFFLOAD @4, 32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ChecksumOffload {
    /// @4: IPv4 TX encapsulation.
    pub ip4_tx_encap: U32,
    /// @8: IPv4 TX bits ([`csum`]).
    pub ip4_tx: U32,
    /// @12: IPv4 RX encapsulation.
    pub ip4_rx_encap: U32,
    /// @16: IPv4 RX bits.
    pub ip4_rx: U32,
    /// @20: IPv6 TX encapsulation.
    pub ip6_tx_encap: U32,
    /// @24: IPv6 TX bits.
    pub ip6_tx: U32,
    /// @28: IPv6 RX encapsulation.
    pub ip6_rx_encap: U32,
    /// @32: IPv6 RX bits.
    pub ip6_rx: U32,
}
const _: () = assert!(size_of::<ChecksumOffload>() == 32);

/// LSOv1 capabilities (NDIS_OFFLOAD @36, 16 bytes; unused by hvnet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct LsoV1Offload {
    /// @36: encapsulation.
    pub ip4_encap: U32,
    /// @40: largest offload.
    pub ip4_max: U32,
    /// @44: fewest segments.
    pub ip4_minsegs: U32,
    /// @48: option bits.
    pub ip4_opts: U32,
}
const _: () = assert!(size_of::<LsoV1Offload>() == 16);

/// LSOv2 capabilities (NDIS_OFFLOAD @80, 28 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct LsoV2Offload {
    /// @80: IPv4 encapsulation ([`ENCAP_802_3`] if supported).
    pub ip4_encap: U32,
    /// @84: IPv4 largest offload.
    pub ip4_max: U32,
    /// @88: IPv4 fewest segments.
    pub ip4_minsegs: U32,
    /// @92: IPv6 encapsulation.
    pub ip6_encap: U32,
    /// @96: IPv6 largest offload.
    pub ip6_max: U32,
    /// @100: IPv6 fewest segments.
    pub ip6_minsegs: U32,
    /// @104: IPv6 option bits ([`lso_opts`]).
    pub ip6_opts: U32,
}
const _: () = assert!(size_of::<LsoV2Offload>() == 28);

/// RSC capabilities (NDIS_OFFLOAD @144, 4 bytes with padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct RscOffload {
    /// @144: IPv4 RSC supported (≠ 0).
    pub ip4: u8,
    /// @145: IPv6 RSC supported (≠ 0).
    pub ip6: u8,
    /// @146: padding.
    pub pad: [u8; 2],
}
const _: () = assert!(size_of::<RscOffload>() == 4);

/// NDIS_OFFLOAD, revision 3 layout (156 bytes); revisions 1 and 2 are its first 112 and
/// 144 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NdisOffload {
    /// @0: {0xA7, revision, size}.
    pub header: NdisObjectHeader,
    /// @4: checksum offload.
    pub checksum: ChecksumOffload,
    /// @36: LSOv1.
    pub lso_v1: LsoV1Offload,
    /// @52: IPsecv1 (28 bytes, unused).
    pub ipsec_v1: [u8; 28],
    /// @80: LSOv2.
    pub lso_v2: LsoV2Offload,
    /// @108: flags; end of revision 1.
    pub flags: U32,
    /// @112: IPsecv2 (32 bytes, unused); end of revision 2.
    pub ipsec_v2: [u8; 32],
    /// @144: RSC.
    pub rsc: RscOffload,
    /// @148: GRE encapsulation offload (8 bytes, unused); end of revision 3.
    pub encapsulation: [u8; 8],
}
const _: () = assert!(size_of::<NdisOffload>() == OFFLOAD_SIZE_REV3);

/// The offloads a Linux guest turns on from the host's capabilities (PROTOCOL.md §8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuestOffloads {
    /// IPv4 TCP TX checksum (`ip4_tx ⊇ TCP4OPT | TCP4`).
    pub tx_csum_v4: bool,
    /// IPv4 UDP TX checksum (needs `tx_csum_v4`).
    pub udp_csum_v4: bool,
    /// IPv4 TSO and its GSO max size, min(65536, `ip4_max`) (needs `tx_csum_v4`).
    pub tso_v4: Option<u32>,
    /// IPv6 TCP TX checksum (`ip6_tx ⊇ IP6EXT | TCP6OPT | TCP6`).
    pub tx_csum_v6: bool,
    /// IPv6 UDP TX checksum (needs `tx_csum_v6`).
    pub udp_csum_v6: bool,
    /// IPv6 TSO and its GSO max size (needs `tx_csum_v6` and `ip6_opts ⊇ 0x5`).
    pub tso_v6: Option<u32>,
    /// RSC for both families: LRO can be offered.
    pub rsc: bool,
}

/// Size of an NDIS_OFFLOAD revision (1 → 112, 2 → 144, 3 and above → 156, 0 → 112).
pub const fn offload_size(revision: u8) -> usize {
    match revision {
        0 | 1 => OFFLOAD_SIZE_REV1,
        2 => OFFLOAD_SIZE_REV2,
        _ => OFFLOAD_SIZE_REV3,
    }
}

/// The NDIS_OFFLOAD revision a guest asks for at a negotiated NVSP version: 3 for
/// NVSP ≥ 5 (`0x50000`), 2 for NVSP 4 (`0x40000`), else 1.
pub const fn offload_revision_for_nvsp(nvsp_version: u32) -> u8 {
    if nvsp_version >= 0x0005_0000 {
        3
    } else if nvsp_version >= 0x0004_0000 {
        2
    } else {
        1
    }
}

impl NdisOffload {
    /// The guest's QUERY data: the full revision size with only the header set, written
    /// into `buf`; returns its size.
    pub fn emit_query(revision: u8, buf: &mut [u8]) -> Result<usize, RndisError> {
        let revision = revision.clamp(1, 3);
        let size = offload_size(revision);
        let Some(out) = buf.get_mut(..size) else {
            return Err(RndisError::BufferTooSmall {
                what: "NDIS_OFFLOAD query",
                needed: size,
                available: buf.len(),
            });
        };
        out.fill(0);
        out[..4]
            .copy_from_slice(NdisObjectHeader::new(TYPE_OFFLOAD, revision, size as u16).as_bytes());
        Ok(size)
    }

    /// The revision the host answers a query with: the request header's revision clamped
    /// to 1..=3 (1 if the request carries no header).
    pub fn requested_revision(query_info: &[u8]) -> u8 {
        NdisObjectHeader::parse(query_info).map_or(1, |h| h.revision.clamp(1, 3))
    }

    /// Our host's capabilities (§7.2 "Host answer"): 802.3 encapsulation everywhere; TX/RX
    /// words 0x115/0x015 for IPv4 (TCP only) or 0x155/0x055 (`udp`: TCP and UDP); IPv6
    /// words the same without the IPv4-only header bit 0x100; LSOv2 for both families with
    /// max 62780 and 2 segments, `ip6_opts` 0x5; RSC 1/1 if `rsc`. Header revision 3.
    pub fn host(udp: bool, rsc: bool) -> NdisOffload {
        let mut o = NdisOffload::new_zeroed();
        o.header = NdisObjectHeader::new(TYPE_OFFLOAD, 3, OFFLOAD_SIZE_REV3 as u16);
        let l4 = csum::TCP4OPT | csum::TCP4 | if udp { csum::UDP4 } else { 0 };
        let encap = U32::new(ENCAP_802_3);
        o.checksum = ChecksumOffload {
            ip4_tx_encap: encap,
            ip4_tx: U32::new(csum::IP4OPT | l4 | csum::IP4),
            ip4_rx_encap: encap,
            ip4_rx: U32::new(csum::IP4OPT | l4),
            ip6_tx_encap: encap,
            ip6_tx: U32::new(csum::IP6EXT | l4),
            ip6_rx_encap: encap,
            ip6_rx: U32::new(csum::IP6EXT | l4),
        };
        o.lso_v2 = LsoV2Offload {
            ip4_encap: encap,
            ip4_max: U32::new(HOST_LSO_MAX_SIZE),
            ip4_minsegs: U32::new(HOST_LSO_MIN_SEGMENTS),
            ip6_encap: encap,
            ip6_max: U32::new(HOST_LSO_MAX_SIZE),
            ip6_minsegs: U32::new(HOST_LSO_MIN_SEGMENTS),
            ip6_opts: U32::new(lso_opts::IP6_EXT_HEADERS | lso_opts::TCP_OPTIONS),
        };
        if rsc {
            o.rsc = RscOffload {
                ip4: 1,
                ip6: 1,
                pad: [0; 2],
            };
        }
        o
    }

    /// Writes the object as `revision` (clamped to 1..=3): header {0xA7, revision, size}
    /// and the first 112/144/156 bytes. Returns the size.
    pub fn emit(&self, revision: u8, buf: &mut [u8]) -> Result<usize, RndisError> {
        let revision = revision.clamp(1, 3);
        let size = offload_size(revision);
        let Some(out) = buf.get_mut(..size) else {
            return Err(RndisError::BufferTooSmall {
                what: "NDIS_OFFLOAD",
                needed: size,
                available: buf.len(),
            });
        };
        let mut o = *self;
        o.header = NdisObjectHeader::new(TYPE_OFFLOAD, revision, size as u16);
        out.copy_from_slice(&o.as_bytes()[..size]);
        Ok(size)
    }

    /// Parses a host's answer with the Linux acceptance rules: type 0xA7, revision ≥ 1,
    /// `112 ≤ size ≤ data.len()`. Fields beyond `size` read as zero.
    pub fn parse(data: &[u8]) -> Result<NdisOffload, RndisError> {
        let header = NdisObjectHeader::parse(data).ok_or(RndisError::ObjectTooShort {
            object: "NDIS_OFFLOAD",
            len: data.len(),
            min: OFFLOAD_SIZE_REV1,
        })?;
        let size = usize::from(header.size.get());
        if header.object_type != TYPE_OFFLOAD || header.revision < 1 || size < OFFLOAD_SIZE_REV1 {
            return Err(RndisError::BadObjectHeader {
                object: "NDIS_OFFLOAD",
                object_type: header.object_type,
                revision: header.revision,
                size: header.size.get(),
            });
        }
        if size > data.len() {
            return Err(RndisError::ObjectTooShort {
                object: "NDIS_OFFLOAD",
                len: data.len(),
                min: size,
            });
        }
        let mut o = NdisOffload::new_zeroed();
        let n = size.min(OFFLOAD_SIZE_REV3);
        o.as_mut_bytes()[..n].copy_from_slice(&data[..n]);
        Ok(o)
    }

    /// What a Linux guest enables from these capabilities (PROTOCOL.md §8.1).
    pub fn guest_offloads(&self) -> GuestOffloads {
        let c = &self.checksum;
        let l = &self.lso_v2;
        let has = |word: U32, bits: u32| word.get() & bits == bits;
        let mut g = GuestOffloads::default();
        if has(c.ip4_tx, csum::TCP4OPT | csum::TCP4) {
            g.tx_csum_v4 = true;
            if l.ip4_encap.get() & ENCAP_802_3 != 0 {
                g.tso_v4 = Some(l.ip4_max.get().min(65536));
            }
            g.udp_csum_v4 = has(c.ip4_tx, csum::UDP4);
        }
        if has(c.ip6_tx, csum::IP6EXT | csum::TCP6OPT | csum::TCP6) {
            g.tx_csum_v6 = true;
            if l.ip6_encap.get() & ENCAP_802_3 != 0
                && has(
                    l.ip6_opts,
                    lso_opts::IP6_EXT_HEADERS | lso_opts::TCP_OPTIONS,
                )
            {
                g.tso_v6 = Some(l.ip6_max.get().min(65536));
            }
            g.udp_csum_v6 = has(c.ip6_tx, csum::UDP6);
        }
        g.rsc = self.rsc.ip4 != 0 && self.rsc.ip6 != 0;
        g
    }
}

/// NDIS_OFFLOAD_PARAMETERS sizes: revision 1 (20), revision 2 (22), Linux's full (28).
pub const OFFLOAD_PARAMETERS_SIZE_REV1: usize = 20;
/// Revision 2 size.
pub const OFFLOAD_PARAMETERS_SIZE_REV2: usize = 22;
/// The size Linux sends at NVSP ≥ 5.
pub const OFFLOAD_PARAMETERS_SIZE: usize = 28;

/// Values of the offload-parameter bytes.
pub mod param {
    /// Leave the setting as it is.
    pub const NO_CHANGE: u8 = 0;
    /// Checksum: TX and RX off.
    pub const CSUM_OFF: u8 = 1;
    /// Checksum: TX only.
    pub const CSUM_TX: u8 = 2;
    /// Checksum: RX only.
    pub const CSUM_RX: u8 = 3;
    /// Checksum: TX and RX.
    pub const CSUM_TX_RX: u8 = 4;
    /// LSO/RSC: off.
    pub const DISABLED: u8 = 1;
    /// LSO/RSC: on.
    pub const ENABLED: u8 = 2;
}

/// NDIS_OFFLOAD_PARAMETERS (28 bytes; revisions 1/2 are the first 20/22). Byte fields
/// take the [`param`] values; 0 = no change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct OffloadParameters {
    /// @0: {0x80, 3, size}.
    pub header: NdisObjectHeader,
    /// @4: IPv4 header checksum.
    pub ipv4_csum: u8,
    /// @5: TCP over IPv4 checksum.
    pub tcp4: u8,
    /// @6: UDP over IPv4 checksum.
    pub udp4: u8,
    /// @7: TCP over IPv6 checksum.
    pub tcp6: u8,
    /// @8: UDP over IPv6 checksum.
    pub udp6: u8,
    /// @9: LSOv1.
    pub lso_v1: u8,
    /// @10: IPsecv1.
    pub ipsec_v1: u8,
    /// @11: LSOv2 IPv4.
    pub lso_v2_ipv4: u8,
    /// @12: LSOv2 IPv6.
    pub lso_v2_ipv6: u8,
    /// @13: TCP connection offload IPv4.
    pub tcp_connection_ipv4: u8,
    /// @14: TCP connection offload IPv6.
    pub tcp_connection_ipv6: u8,
    /// @15: reserved.
    pub reserved: u8,
    /// @16: flags; end of revision 1.
    pub flags: U32,
    /// @20: IPsecv2.
    pub ipsec_v2: u8,
    /// @21: IPsecv2 IPv4; end of revision 2.
    pub ipsec_v2_ipv4: u8,
    /// @22: RSC IPv4.
    pub rsc_ipv4: u8,
    /// @23: RSC IPv6.
    pub rsc_ipv6: u8,
    /// @24: encapsulated-packet task offload.
    pub encap_task_offload: u8,
    /// @25: encapsulation types.
    pub encap_types: u8,
    /// @26: padding.
    pub pad: [u8; 2],
}
const _: () = assert!(size_of::<OffloadParameters>() == OFFLOAD_PARAMETERS_SIZE);

impl OffloadParameters {
    /// All "no change".
    pub fn no_change() -> OffloadParameters {
        OffloadParameters::new_zeroed()
    }

    /// What a Linux guest sets from `caps` (§8.1): IPv4 header checksum off; TCP/UDP
    /// checksum TX+RX and LSOv2 on where enabled; RSC 2 (LRO on) or 1 where offered.
    pub fn linux(caps: &GuestOffloads, lro: bool) -> OffloadParameters {
        let mut p = OffloadParameters::no_change();
        let on = |b: bool| {
            if b {
                param::CSUM_TX_RX
            } else {
                param::NO_CHANGE
            }
        };
        p.ipv4_csum = param::CSUM_OFF;
        p.tcp4 = on(caps.tx_csum_v4);
        p.udp4 = on(caps.udp_csum_v4);
        p.tcp6 = on(caps.tx_csum_v6);
        p.udp6 = on(caps.udp_csum_v6);
        if caps.tso_v4.is_some() {
            p.lso_v2_ipv4 = param::ENABLED;
        }
        if caps.tso_v6.is_some() {
            p.lso_v2_ipv6 = param::ENABLED;
        }
        if caps.rsc {
            let v = if lro { param::ENABLED } else { param::DISABLED };
            p.rsc_ipv4 = v;
            p.rsc_ipv6 = v;
        }
        p
    }

    /// Parses a guest's SET data (host rule): at least 20 bytes and header `size ≥ 20`;
    /// only fields within both `size` and the data are read, the rest stay "no change".
    /// The header's type and revision are not checked (they are kept in `header`).
    pub fn parse(data: &[u8]) -> Result<OffloadParameters, RndisError> {
        let header = NdisObjectHeader::parse(data)
            .filter(|_| data.len() >= OFFLOAD_PARAMETERS_SIZE_REV1)
            .ok_or(RndisError::ObjectTooShort {
                object: "NDIS_OFFLOAD_PARAMETERS",
                len: data.len(),
                min: OFFLOAD_PARAMETERS_SIZE_REV1,
            })?;
        let size = usize::from(header.size.get());
        if size < OFFLOAD_PARAMETERS_SIZE_REV1 {
            return Err(RndisError::BadObjectHeader {
                object: "NDIS_OFFLOAD_PARAMETERS",
                object_type: header.object_type,
                revision: header.revision,
                size: header.size.get(),
            });
        }
        let n = size.min(data.len()).min(OFFLOAD_PARAMETERS_SIZE);
        let mut p = OffloadParameters::new_zeroed();
        p.as_mut_bytes()[..n].copy_from_slice(&data[..n]);
        Ok(p)
    }

    /// Writes the first `size` bytes (20…28; Linux: 28 at NVSP ≥ 5, 22 below) with header
    /// {0x80, 3, size}; returns `size`.
    pub fn emit(&self, size: usize, buf: &mut [u8]) -> Result<usize, RndisError> {
        let size = size.clamp(OFFLOAD_PARAMETERS_SIZE_REV1, OFFLOAD_PARAMETERS_SIZE);
        let Some(out) = buf.get_mut(..size) else {
            return Err(RndisError::BufferTooSmall {
                what: "NDIS_OFFLOAD_PARAMETERS",
                needed: size,
                available: buf.len(),
            });
        };
        let mut p = *self;
        p.header = NdisObjectHeader::new(TYPE_DEFAULT, 3, size as u16);
        out.copy_from_slice(&p.as_bytes()[..size]);
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rev-3 answer of a ws2019 host (UDP, RSC), written out by hand.
    fn ws2019_bytes() -> [u8; 156] {
        let mut b = [0u8; 156];
        b[..4].copy_from_slice(&[0xA7, 3, 156, 0]);
        let words: [(usize, u32); 15] = [
            (4, 2),
            (8, 0x155),
            (12, 2),
            (16, 0x055),
            (20, 2),
            (24, 0x055),
            (28, 2),
            (32, 0x055),
            (80, 2),
            (84, 62780),
            (88, 2),
            (92, 2),
            (96, 62780),
            (100, 2),
            (104, 5),
        ];
        for (off, v) in words {
            b[off..off + 4].copy_from_slice(&v.to_le_bytes());
        }
        b[144] = 1;
        b[145] = 1;
        b
    }

    #[test]
    fn host_answer_bytes() {
        let o = NdisOffload::host(true, true);
        assert_eq!(o.as_bytes(), &ws2019_bytes());
        let mut buf = [0xffu8; 200];
        assert_eq!(o.emit(3, &mut buf), Ok(156));
        assert_eq!(&buf[..156], &ws2019_bytes());
        // Revision 1: 112 bytes, header {0xA7, 1, 112}.
        assert_eq!(o.emit(1, &mut buf), Ok(112));
        assert_eq!(&buf[..4], &[0xA7, 1, 112, 0]);
        assert_eq!(&buf[4..112], &ws2019_bytes()[4..112]);
        assert_eq!(o.emit(2, &mut buf), Ok(144));
        assert_eq!(&buf[..4], &[0xA7, 2, 144, 0]);
        // ws2012r2: TCP only, no RSC.
        let o = NdisOffload::host(false, false);
        assert_eq!(o.checksum.ip4_tx.get(), 0x115);
        assert_eq!(o.checksum.ip4_rx.get(), 0x015);
        assert_eq!(o.rsc.ip4, 0);
    }

    #[test]
    fn guest_view() {
        let g = NdisOffload::parse(&ws2019_bytes())
            .unwrap()
            .guest_offloads();
        assert_eq!(
            g,
            GuestOffloads {
                tx_csum_v4: true,
                udp_csum_v4: true,
                tso_v4: Some(62780),
                tx_csum_v6: true,
                udp_csum_v6: true,
                tso_v6: Some(62780),
                rsc: true,
            }
        );
        let p = OffloadParameters::linux(&g, true);
        let mut buf = [0u8; 28];
        assert_eq!(p.emit(28, &mut buf), Ok(28));
        assert_eq!(
            buf,
            [
                0x80, 3, 28, 0, 1, 4, 4, 4, 4, 0, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 0, 0,
                0, 0
            ]
        );
        let g = NdisOffload::parse(NdisOffload::host(false, false).as_bytes())
            .unwrap()
            .guest_offloads();
        assert!(g.tx_csum_v4 && !g.udp_csum_v4 && g.tso_v4.is_some() && !g.rsc);
        let p = OffloadParameters::linux(&g, true);
        assert_eq!(p.emit(22, &mut buf), Ok(22));
        assert_eq!(
            &buf[..22],
            &[
                0x80, 3, 22, 0, 1, 4, 0, 4, 0, 0, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn guest_acceptance() {
        let b = ws2019_bytes();
        // Revision 1 answer of 112 bytes is accepted, fields beyond read as 0.
        let mut r1 = [0u8; 112];
        r1.copy_from_slice(&b[..112]);
        r1[1] = 1;
        r1[2] = 112;
        let o = NdisOffload::parse(&r1).unwrap();
        assert_eq!(o.rsc.ip4, 0);
        assert_eq!(o.checksum.ip4_tx.get(), 0x155);
        // Size larger than the bytes returned.
        assert!(matches!(
            NdisOffload::parse(&b[..155]),
            Err(RndisError::ObjectTooShort { min: 156, .. })
        ));
        // Wrong type, revision 0, size < 112.
        for (i, v) in [(0, 0x80u8), (1, 0), (2, 100)] {
            let mut m = b;
            m[i] = v;
            assert!(
                matches!(
                    NdisOffload::parse(&m),
                    Err(RndisError::BadObjectHeader { .. })
                ),
                "{i}"
            );
        }
        assert!(NdisOffload::parse(&[0xA7, 3]).is_err());
    }

    #[test]
    fn query_data() {
        let mut buf = [0xffu8; 160];
        assert_eq!(
            NdisOffload::emit_query(offload_revision_for_nvsp(0x50000), &mut buf),
            Ok(156)
        );
        assert_eq!(&buf[..4], &[0xA7, 3, 156, 0]);
        assert!(buf[4..156].iter().all(|&b| b == 0));
        assert_eq!(offload_revision_for_nvsp(0x40000), 2);
        assert_eq!(offload_revision_for_nvsp(0x30002), 1);
        assert_eq!(NdisOffload::requested_revision(&buf[..156]), 3);
        assert_eq!(NdisOffload::requested_revision(&[0xA7, 9, 0, 0]), 3);
        assert_eq!(NdisOffload::requested_revision(&[]), 1);
    }

    #[test]
    fn parameters_parse() {
        let full = [
            0x80, 3, 28, 0, 1, 4, 4, 4, 4, 0, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0,
        ];
        let p = OffloadParameters::parse(&full).unwrap();
        assert_eq!(
            (p.tcp4, p.lso_v2_ipv6, p.rsc_ipv4, p.rsc_ipv6),
            (4, 2, 2, 1)
        );
        // Header says 22: RSC bytes beyond it are not read.
        let mut m = full;
        m[2] = 22;
        let p = OffloadParameters::parse(&m).unwrap();
        assert_eq!((p.rsc_ipv4, p.rsc_ipv6), (0, 0));
        // Header says 28 but only 22 bytes came.
        let p = OffloadParameters::parse(&full[..22]).unwrap();
        assert_eq!((p.tcp4, p.rsc_ipv4), (4, 0));
        // Too short.
        assert!(OffloadParameters::parse(&full[..19]).is_err());
        let mut m = full;
        m[2] = 19;
        assert!(matches!(
            OffloadParameters::parse(&m),
            Err(RndisError::BadObjectHeader { size: 19, .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            if let Ok(o) = NdisOffload::parse(&bytes) {
                let _ = o.guest_offloads();
            }
            let _ = OffloadParameters::parse(&bytes);
            let _ = NdisOffload::requested_revision(&bytes);
        }

        #[test]
        fn parameters_round_trip(bytes in proptest::array::uniform28(proptest::num::u8::ANY), size in 20usize..=28) {
            let mut p = OffloadParameters::read_from_bytes(&bytes[..]).unwrap();
            p.pad = [0; 2];
            let mut buf = [0u8; 28];
            let n = p.emit(size, &mut buf).unwrap();
            let q = OffloadParameters::parse(&buf[..n]).unwrap();
            proptest::prop_assert_eq!(&q.as_bytes()[4..n], &p.as_bytes()[4..n]);
            proptest::prop_assert!(q.as_bytes()[n..].iter().all(|&b| b == 0));
        }
    }
}
