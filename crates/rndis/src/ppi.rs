//! Per-packet information (PPI) of RNDIS PACKET messages (PROTOCOL.md §6.4) and the
//! bitfields they carry: TX checksum (§8.2), LSOv2 (§8.3), RX checksum (§8.4), 802.1Q.
//!
//! A PPI is `size` u32 (whole entry), `type` u32 (bits 0–30 type, bit 31 internal),
//! `ppi_offset` u32 (from the entry start to its data), data. Every PPI hvnet uses is
//! 16 bytes with a u32 datum. [`PpiIter`] walks a PPI area with the §14 checks and stops
//! at the first bad entry (never loops on `size` 0); [`PacketInfo`] is the decoded set.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::error::RndisError;

/// Size of a PPI header.
pub const PPI_HEADER_SIZE: usize = 12;

/// Size of a PPI with one u32 of data (all that hvnet sends).
pub const U32_PPI_SIZE: usize = 16;

/// PPI type numbers (`type` field, bit 31 = internal).
pub mod ppi_type {
    /// TCP/IP checksum info (§8.2 TX, §8.4 RX).
    pub const TCPIP_CHKSUM: u32 = 0;
    /// IPsec (unused).
    pub const IPSEC: u32 = 1;
    /// TCP large send (LSOv2, §8.3).
    pub const TCP_LARGESEND: u32 = 2;
    /// Classification handle (unused).
    pub const CLASSIFICATION_HANDLE: u32 = 3;
    /// Reserved (unused).
    pub const RESERVED: u32 = 4;
    /// Scatter-gather list (unused).
    pub const SG_LIST: u32 = 5;
    /// 802.1Q priority and VLAN id.
    pub const IEEE_8021Q: u32 = 6;
    /// Original packet info (unused).
    pub const ORIGINAL_PKTINFO: u32 = 7;
    /// RSS hash value (= PACKET_CANCEL_ID).
    pub const NBL_HASH_VALUE: u32 = 8;
    /// RSS hash function and type (= ORIGINAL_NET_BUFLIST).
    pub const NBL_HASH_INFO: u32 = 9;
    /// Cached net buffer list (unused).
    pub const CACHED_NET_BUFLIST: u32 = 10;
    /// Short packet padding info (unused).
    pub const SHORT_PKT_PADINFO: u32 = 11;
    /// The internal flag, bit 31.
    pub const INTERNAL: u32 = 0x8000_0000;
    /// Packet id / RSC fragment info: type 1 + internal.
    pub const PKTINFO_ID: u32 = 1 | INTERNAL;

    /// The name of a PPI type word (internal bit included), for traces.
    pub const fn name(t: u32) -> Option<&'static str> {
        Some(match t {
            TCPIP_CHKSUM => "TCPIP_CHKSUM",
            IPSEC => "IPSEC",
            TCP_LARGESEND => "TCP_LARGESEND",
            CLASSIFICATION_HANDLE => "CLASSIFICATION_HANDLE",
            RESERVED => "RESERVED",
            SG_LIST => "SG_LIST",
            IEEE_8021Q => "IEEE_8021Q",
            ORIGINAL_PKTINFO => "ORIGINAL_PKTINFO",
            NBL_HASH_VALUE => "NBL_HASH_VALUE",
            NBL_HASH_INFO => "NBL_HASH_INFO",
            CACHED_NET_BUFLIST => "CACHED_NET_BUFLIST",
            SHORT_PKT_PADINFO => "SHORT_PKT_PADINFO",
            PKTINFO_ID => "PKTINFO_ID",
            _ => return None,
        })
    }
}

/// The PPI header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PpiHeader {
    /// @0: size of the whole entry.
    pub size: U32,
    /// @4: type (bits 0–30) and internal flag (bit 31).
    pub ppi_type: U32,
    /// @8: offset of the data from the entry start (12).
    pub ppi_offset: U32,
}
const _: () = assert!(size_of::<PpiHeader>() == PPI_HEADER_SIZE);

/// A 16-byte PPI with one u32 datum, as hvnet writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct U32Ppi {
    /// Header: size 16, the type, offset 12.
    pub header: PpiHeader,
    /// @12: the datum.
    pub value: U32,
}
const _: () = assert!(size_of::<U32Ppi>() == U32_PPI_SIZE);

impl U32Ppi {
    /// A 16-byte PPI of type `ppi_type` carrying `value`.
    pub const fn new(ppi_type: u32, value: u32) -> U32Ppi {
        U32Ppi {
            header: PpiHeader {
                size: U32::new(U32_PPI_SIZE as u32),
                ppi_type: U32::new(ppi_type),
                ppi_offset: U32::new(PPI_HEADER_SIZE as u32),
            },
            value: U32::new(value),
        }
    }
}

/// PKTINFO_ID data: RSC fragment marking (PROTOCOL.md §6.4, §10).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct PktInfoId {
    /// @0: version, [`PktInfoId::VERSION`].
    pub ver: u8,
    /// @1: [`PktInfoId::SUBALLOC`], [`PktInfoId::FIRST_FRAG`], [`PktInfoId::LAST_FRAG`].
    pub flag: u8,
    /// @2: packet id.
    pub pkt_id: U16,
}
const _: () = assert!(size_of::<PktInfoId>() == 4);

impl PktInfoId {
    /// The version hosts send.
    pub const VERSION: u8 = 1;
    /// The frame is one piece of a coalesced (RSC) frame.
    pub const SUBALLOC: u8 = 0x1;
    /// The first piece.
    pub const FIRST_FRAG: u8 = 0x2;
    /// The last piece.
    pub const LAST_FRAG: u8 = 0x4;

    /// A version-1 id with `flag` and `pkt_id`.
    pub const fn new(flag: u8, pkt_id: u16) -> PktInfoId {
        PktInfoId {
            ver: Self::VERSION,
            flag,
            pkt_id: U16::new(pkt_id),
        }
    }

    /// The PPI datum as a u32.
    pub fn to_u32(self) -> u32 {
        u32::from_le_bytes(self.as_bytes().try_into().unwrap_or([0; 4]))
    }

    /// From the PPI datum.
    pub fn from_u32(v: u32) -> PktInfoId {
        let b = v.to_le_bytes();
        PktInfoId {
            ver: b[0],
            flag: b[1],
            pkt_id: U16::new(u16::from_le_bytes([b[2], b[3]])),
        }
    }
}

/// TX checksum request (TCPIP_CHKSUM PPI, guest → host, PROTOCOL.md §8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct TxChecksumInfo(pub u32);

impl TxChecksumInfo {
    /// Bit 0: the frame is IPv4.
    pub const IS_IPV4: u32 = 1 << 0;
    /// Bit 1: the frame is IPv6.
    pub const IS_IPV6: u32 = 1 << 1;
    /// Bit 2: compute the TCP checksum.
    pub const TCP: u32 = 1 << 2;
    /// Bit 3: compute the UDP checksum.
    pub const UDP: u32 = 1 << 3;
    /// Bit 4: compute the IPv4 header checksum (Linux never sets it).
    pub const IP_HEADER: u32 = 1 << 4;
    const L4_OFFSET_SHIFT: u32 = 16;
    const L4_OFFSET_MASK: u32 = 0x3FF;

    /// A TCP (`udp == false`) or UDP checksum request for a frame of the given IP version
    /// whose L4 header starts `l4_header_offset` bytes into the frame (10 bits).
    pub const fn new(ipv6: bool, udp: bool, l4_header_offset: u16) -> TxChecksumInfo {
        let ip = if ipv6 { Self::IS_IPV6 } else { Self::IS_IPV4 };
        let l4 = if udp { Self::UDP } else { Self::TCP };
        TxChecksumInfo(
            ip | l4 | ((l4_header_offset as u32 & Self::L4_OFFSET_MASK) << Self::L4_OFFSET_SHIFT),
        )
    }
    /// Bit 0.
    pub const fn is_ipv4(self) -> bool {
        self.0 & Self::IS_IPV4 != 0
    }
    /// Bit 1.
    pub const fn is_ipv6(self) -> bool {
        self.0 & Self::IS_IPV6 != 0
    }
    /// Bit 2.
    pub const fn tcp(self) -> bool {
        self.0 & Self::TCP != 0
    }
    /// Bit 3.
    pub const fn udp(self) -> bool {
        self.0 & Self::UDP != 0
    }
    /// Bit 4.
    pub const fn ip_header(self) -> bool {
        self.0 & Self::IP_HEADER != 0
    }
    /// Bits 16–25: the L4 header offset from the frame start.
    pub const fn l4_header_offset(self) -> u16 {
        ((self.0 >> Self::L4_OFFSET_SHIFT) & Self::L4_OFFSET_MASK) as u16
    }
}

/// LSOv2 request (TCP_LARGESEND PPI, guest → host, PROTOCOL.md §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct LsoV2Info(pub u32);

impl LsoV2Info {
    const MSS_MASK: u32 = 0xF_FFFF;
    const OFFSET_SHIFT: u32 = 20;
    const OFFSET_MASK: u32 = 0x3FF;
    /// Bit 30: LSOv2 (always set in an LSOv2 request).
    pub const TYPE_V2: u32 = 1 << 30;
    /// Bit 31: IPv6 (0 = IPv4).
    pub const IPV6: u32 = 1 << 31;

    /// An LSOv2 request: `mss` (20 bits), TCP header offset from the frame start (10 bits).
    pub const fn new(mss: u32, tcp_header_offset: u16, ipv6: bool) -> LsoV2Info {
        LsoV2Info(
            (mss & Self::MSS_MASK)
                | ((tcp_header_offset as u32 & Self::OFFSET_MASK) << Self::OFFSET_SHIFT)
                | Self::TYPE_V2
                | if ipv6 { Self::IPV6 } else { 0 },
        )
    }
    /// Bits 0–19: the MSS.
    pub const fn mss(self) -> u32 {
        self.0 & Self::MSS_MASK
    }
    /// Bits 20–29: the TCP header offset.
    pub const fn tcp_header_offset(self) -> u16 {
        ((self.0 >> Self::OFFSET_SHIFT) & Self::OFFSET_MASK) as u16
    }
    /// Bit 30.
    pub const fn is_v2(self) -> bool {
        self.0 & Self::TYPE_V2 != 0
    }
    /// Bit 31.
    pub const fn is_ipv6(self) -> bool {
        self.0 & Self::IPV6 != 0
    }
}

/// RX checksum result (TCPIP_CHKSUM PPI, host → guest, PROTOCOL.md §8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct RxChecksumInfo(pub u32);

impl RxChecksumInfo {
    /// Bit 0: TCP checksum failed (Linux: "not verified").
    pub const TCP_FAILED: u32 = 1 << 0;
    /// Bit 1: UDP checksum failed.
    pub const UDP_FAILED: u32 = 1 << 1;
    /// Bit 2: IPv4 header checksum failed.
    pub const IP_FAILED: u32 = 1 << 2;
    /// Bit 3: TCP checksum verified.
    pub const TCP_OK: u32 = 1 << 3;
    /// Bit 4: UDP checksum verified.
    pub const UDP_OK: u32 = 1 << 4;
    /// Bit 5: IPv4 header checksum verified.
    pub const IP_OK: u32 = 1 << 5;
    /// Bit 6: loopback.
    pub const LOOPBACK: u32 = 1 << 6;
    /// Bit 7: TCP validated but the field in the frame is stale (RSC).
    pub const TCP_VALUE_INVALID: u32 = 1 << 7;
    /// Bit 8: IPv4 header validated but the field in the frame is stale (RSC).
    pub const IP_VALUE_INVALID: u32 = 1 << 8;

    /// Whether all bits of `mask` are set.
    pub const fn has(self, mask: u32) -> bool {
        self.0 & mask == mask
    }
    /// Linux's rule: bit 3 or 4 → checksum unnecessary.
    pub const fn l4_verified(self) -> bool {
        self.0 & (Self::TCP_OK | Self::UDP_OK) != 0
    }
}

/// 802.1Q info (IEEE_8021Q PPI, both ways).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct VlanInfo(pub u32);

impl VlanInfo {
    /// Priority (3 bits), CFI/DEI, VLAN id (12 bits).
    pub const fn new(vlan_id: u16, priority: u8, cfi: bool) -> VlanInfo {
        VlanInfo((priority as u32 & 7) | (cfi as u32) << 3 | (vlan_id as u32 & 0xFFF) << 4)
    }
    /// Bits 0–2.
    pub const fn priority(self) -> u8 {
        (self.0 & 7) as u8
    }
    /// Bit 3.
    pub const fn cfi(self) -> bool {
        self.0 & 8 != 0
    }
    /// Bits 4–15.
    pub const fn vlan_id(self) -> u16 {
        ((self.0 >> 4) & 0xFFF) as u16
    }
    /// The 802.1Q TCI (priority << 13 | DEI << 12 | id) for a VLAN header.
    pub const fn tci(self) -> u16 {
        (self.priority() as u16) << 13 | (self.cfi() as u16) << 12 | self.vlan_id()
    }
    /// From an 802.1Q TCI.
    pub const fn from_tci(tci: u16) -> VlanInfo {
        VlanInfo::new(tci & 0xFFF, (tci >> 13) as u8, tci & 0x1000 != 0)
    }
}

/// One PPI entry found by [`PpiIter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ppi<'a> {
    /// Offset of the entry within the PPI area.
    pub at: usize,
    /// The full type word (internal bit included).
    pub ppi_type: u32,
    /// The entry's data: from its `ppi_offset` to its `size`.
    pub data: &'a [u8],
}

impl Ppi<'_> {
    /// The first u32 of the data, if there are 4 bytes.
    pub fn value_u32(&self) -> Option<u32> {
        self.data.first_chunk::<4>().map(|b| u32::from_le_bytes(*b))
    }
}

/// Walks a PPI area: each entry needs `12 ≤ size ≤ remaining` and `ppi_offset < size`
/// (PROTOCOL.md §14). The first bad entry yields an error and ends the walk.
#[derive(Debug, Clone)]
pub struct PpiIter<'a> {
    area: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> PpiIter<'a> {
    /// A walk over `area`, the `ppi_len` bytes at `ppi_offset`.
    pub fn new(area: &'a [u8]) -> PpiIter<'a> {
        PpiIter {
            area,
            pos: 0,
            failed: false,
        }
    }
}

impl<'a> Iterator for PpiIter<'a> {
    type Item = Result<Ppi<'a>, RndisError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.area.len() {
            return None;
        }
        let rest = &self.area[self.pos..];
        let bad = |size, data_offset| RndisError::BadPpi {
            at: self.pos,
            size,
            data_offset,
            remaining: rest.len(),
        };
        let Ok((h, _)) = PpiHeader::read_from_prefix(rest) else {
            self.failed = true;
            return Some(Err(bad(0, 0)));
        };
        let size = h.size.get();
        let offset = h.ppi_offset.get();
        let entry = usize::try_from(size)
            .ok()
            .filter(|&s| s >= PPI_HEADER_SIZE && s <= rest.len())
            .and_then(|s| rest.get(..s));
        let Some(entry) = entry.filter(|e| (offset as usize) < e.len()) else {
            self.failed = true;
            return Some(Err(bad(size, offset)));
        };
        self.pos += entry.len();
        Some(Ok(Ppi {
            at: self.pos - entry.len(),
            ppi_type: h.ppi_type.get(),
            data: &entry[offset as usize..],
        }))
    }
}

/// The per-packet information hvnet understands, decoded from (or to be written as) PPIs.
/// `checksum` is TX info ([`TxChecksumInfo`]) from a guest, RX info ([`RxChecksumInfo`])
/// from a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketInfo {
    /// TCPIP_CHKSUM datum.
    pub checksum: Option<u32>,
    /// TCP_LARGESEND datum ([`LsoV2Info`]).
    pub lso: Option<u32>,
    /// IEEE_8021Q datum ([`VlanInfo`]).
    pub vlan: Option<u32>,
    /// NBL_HASH_VALUE datum: the RSS hash.
    pub hash_value: Option<u32>,
    /// NBL_HASH_INFO datum: hash function | type bits (`crate::rss::hash`).
    pub hash_info: Option<u32>,
    /// PKTINFO_ID datum.
    pub pktinfo_id: Option<PktInfoId>,
}

impl PacketInfo {
    /// Decodes a PPI area with the §14 checks. A known PPI whose data is shorter than 4
    /// bytes is an error; unknown types are skipped; a repeated type keeps the last value.
    pub fn parse(area: &[u8]) -> Result<PacketInfo, RndisError> {
        let mut info = PacketInfo::default();
        let mut id: Option<u32> = None;
        for ppi in PpiIter::new(area) {
            let ppi = ppi?;
            let slot = match ppi.ppi_type {
                ppi_type::TCPIP_CHKSUM => &mut info.checksum,
                ppi_type::TCP_LARGESEND => &mut info.lso,
                ppi_type::IEEE_8021Q => &mut info.vlan,
                ppi_type::NBL_HASH_VALUE => &mut info.hash_value,
                ppi_type::NBL_HASH_INFO => &mut info.hash_info,
                ppi_type::PKTINFO_ID => &mut id,
                _ => continue,
            };
            let value = ppi.value_u32().ok_or(RndisError::PpiDataTooShort {
                ppi_type: ppi.ppi_type,
                at: ppi.at,
                len: ppi.data.len(),
            })?;
            *slot = Some(value);
        }
        info.pktinfo_id = id.map(PktInfoId::from_u32);
        Ok(info)
    }

    /// The PPIs to write, in the order hvnet writes them: checksum, LSO, VLAN, hash value,
    /// hash info, PKTINFO_ID.
    pub fn ppis(&self) -> impl Iterator<Item = U32Ppi> + '_ {
        [
            (ppi_type::TCPIP_CHKSUM, self.checksum),
            (ppi_type::TCP_LARGESEND, self.lso),
            (ppi_type::IEEE_8021Q, self.vlan),
            (ppi_type::NBL_HASH_VALUE, self.hash_value),
            (ppi_type::NBL_HASH_INFO, self.hash_info),
            (ppi_type::PKTINFO_ID, self.pktinfo_id.map(PktInfoId::to_u32)),
        ]
        .into_iter()
        .filter_map(|(t, v)| v.map(|v| U32Ppi::new(t, v)))
    }

    /// Bytes the PPIs take when written (16 each).
    pub fn ppi_len(&self) -> usize {
        self.ppis().count() * U32_PPI_SIZE
    }

    /// Writes the PPIs at the start of `buf`; returns the bytes written.
    pub fn write_ppis(&self, buf: &mut [u8]) -> Result<usize, RndisError> {
        let needed = self.ppi_len();
        let Some(out) = buf.get_mut(..needed) else {
            return Err(RndisError::BufferTooSmall {
                what: "PPIs",
                needed,
                available: buf.len(),
            });
        };
        for (chunk, ppi) in out.chunks_exact_mut(U32_PPI_SIZE).zip(self.ppis()) {
            chunk.copy_from_slice(ppi.as_bytes());
        }
        Ok(needed)
    }

    /// The checksum datum read as a TX request (guest → host).
    pub fn tx_checksum(&self) -> Option<TxChecksumInfo> {
        self.checksum.map(TxChecksumInfo)
    }
    /// The checksum datum read as an RX result (host → guest).
    pub fn rx_checksum(&self) -> Option<RxChecksumInfo> {
        self.checksum.map(RxChecksumInfo)
    }
    /// The LSOv2 request.
    pub fn lso_v2(&self) -> Option<LsoV2Info> {
        self.lso.map(LsoV2Info)
    }
    /// The 802.1Q info.
    pub fn vlan_info(&self) -> Option<VlanInfo> {
        self.vlan.map(VlanInfo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitfields() {
        let c = TxChecksumInfo::new(false, false, 34);
        assert_eq!(c.0, 0x0022_0005);
        assert!(c.is_ipv4() && c.tcp() && !c.udp() && !c.is_ipv6() && !c.ip_header());
        assert_eq!(c.l4_header_offset(), 34);
        let c = TxChecksumInfo::new(true, true, 54);
        assert_eq!(c.0, 0x0036_000A);

        let l = LsoV2Info::new(1448, 34, false);
        assert_eq!(l.0, 0x4220_05A8);
        assert_eq!(
            (l.mss(), l.tcp_header_offset(), l.is_v2(), l.is_ipv6()),
            (1448, 34, true, false)
        );
        assert_eq!(LsoV2Info::new(1428, 54, true).0, 0xC360_0594);

        let r = RxChecksumInfo(RxChecksumInfo::TCP_OK | RxChecksumInfo::IP_OK);
        assert_eq!(r.0, 0x28);
        assert!(r.l4_verified() && r.has(RxChecksumInfo::IP_OK));
        assert!(!RxChecksumInfo(RxChecksumInfo::TCP_FAILED).l4_verified());

        let v = VlanInfo::new(100, 5, false);
        assert_eq!(v.0, 0x645);
        assert_eq!((v.vlan_id(), v.priority(), v.cfi()), (100, 5, false));
        assert_eq!(v.tci(), 0xA064);
        assert_eq!(VlanInfo::from_tci(0xA064), v);

        let id = PktInfoId::new(PktInfoId::SUBALLOC | PktInfoId::FIRST_FRAG, 0x1234);
        assert_eq!(id.as_bytes(), &[1, 3, 0x34, 0x12]);
        assert_eq!(id.to_u32(), 0x1234_0301);
        assert_eq!(PktInfoId::from_u32(0x1234_0301), id);
    }

    #[test]
    fn ppi_bytes() {
        let p = U32Ppi::new(ppi_type::PKTINFO_ID, 0x0000_0701);
        assert_eq!(
            p.as_bytes(),
            &[16, 0, 0, 0, 1, 0, 0, 0x80, 12, 0, 0, 0, 1, 7, 0, 0]
        );
        assert_eq!(ppi_type::name(ppi_type::PKTINFO_ID), Some("PKTINFO_ID"));
        assert_eq!(ppi_type::name(ppi_type::IPSEC), Some("IPSEC"));
    }

    #[test]
    fn parse_and_write() {
        let area: [u8; 48] = [
            16, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 0x28, 0, 0, 0, // checksum 0x28
            16, 0, 0, 0, 6, 0, 0, 0, 12, 0, 0, 0, 0x45, 0x06, 0, 0, // vlan 0x645
            16, 0, 0, 0, 8, 0, 0, 0, 12, 0, 0, 0, 0x78, 0x56, 0x34, 0x12, // hash
        ];
        let info = PacketInfo::parse(&area).unwrap();
        let want = PacketInfo {
            checksum: Some(0x28),
            vlan: Some(0x645),
            hash_value: Some(0x1234_5678),
            ..Default::default()
        };
        assert_eq!(info, want);
        let mut out = [0u8; 64];
        assert_eq!(info.write_ppis(&mut out), Ok(48));
        assert_eq!(&out[..48], &area);
        assert!(matches!(
            info.write_ppis(&mut out[..47]),
            Err(RndisError::BufferTooSmall { needed: 48, .. })
        ));
    }

    #[test]
    fn unknown_and_bigger_entries() {
        // An unknown 20-byte PPI, then a checksum with data at offset 16 in a 20-byte entry.
        let area: [u8; 40] = [
            20, 0, 0, 0, 11, 0, 0, 0, 12, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, //
            20, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 9, 9, 9, 9, 5, 0, 0, 0, //
        ];
        let info = PacketInfo::parse(&area).unwrap();
        assert_eq!(
            info,
            PacketInfo {
                checksum: Some(5),
                ..Default::default()
            }
        );
        // Type 0 with the internal bit is not TCPIP_CHKSUM: skipped.
        let area = [16, 0, 0, 0, 0, 0, 0, 0x80, 12, 0, 0, 0, 1, 0, 0, 0];
        assert_eq!(PacketInfo::parse(&area), Ok(PacketInfo::default()));
    }

    #[test]
    fn bad_entries_stop() {
        // size 0: must not loop.
        let area = [0u8; 16];
        assert_eq!(
            PacketInfo::parse(&area),
            Err(RndisError::BadPpi {
                at: 0,
                size: 0,
                data_offset: 0,
                remaining: 16
            })
        );
        // ppi_offset == size.
        let area = [16, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0];
        assert!(PacketInfo::parse(&area).is_err());
        // size beyond the area.
        let area = [17, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0];
        assert!(PacketInfo::parse(&area).is_err());
        // Known type with 2 bytes of data.
        let area = [16, 0, 0, 0, 0, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0];
        assert!(PacketInfo::parse(&area).is_err());
        // Fewer than 12 bytes left after a good entry.
        let area = [16, 0, 0, 0, 8, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0];
        assert!(matches!(
            PacketInfo::parse(&area),
            Err(RndisError::BadPpi {
                at: 16,
                remaining: 2,
                ..
            })
        ));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(area in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            let _ = PacketInfo::parse(&area);
            // The walk always terminates within area.len() / 12 + 1 steps.
            proptest::prop_assert!(PpiIter::new(&area).count() <= area.len() / 12 + 1);
        }

        #[test]
        fn write_parse_round_trip(
            c in proptest::option::of(proptest::num::u32::ANY),
            l in proptest::option::of(proptest::num::u32::ANY),
            v in proptest::option::of(proptest::num::u32::ANY),
            h in proptest::option::of(proptest::num::u32::ANY),
            hi in proptest::option::of(proptest::num::u32::ANY),
            id in proptest::option::of(proptest::num::u32::ANY),
        ) {
            let info = PacketInfo { checksum: c, lso: l, vlan: v, hash_value: h, hash_info: hi, pktinfo_id: id.map(PktInfoId::from_u32) };
            let mut buf = [0u8; 96];
            let n = info.write_ppis(&mut buf).unwrap();
            proptest::prop_assert_eq!(n, info.ppi_len());
            proptest::prop_assert_eq!(PacketInfo::parse(&buf[..n]), Ok(info));
        }
    }
}
