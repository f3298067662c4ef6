//! Flow parsing: where the headers of an Ethernet frame are and what their flow fields say.
//!
//! [`parse_frame`] walks Ethernet, at most one 802.1Q/802.1ad tag, IPv4 or IPv6 (with a
//! bounded walk over hop-by-hop, routing, fragment, destination-options and AH extension
//! headers) and the TCP, UDP or ICMP header, and returns a [`FrameInfo`] of offsets and
//! fields. Every length is checked against the frame before it is used; the input may be any
//! bytes at all.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};

use crate::wire::{
    self, be16_at, be32_at, eth, ethertype, ipv4, ipv6, ipv6_ext, proto, slice_at, u8_at,
};

/// Most IPv6 extension headers walked before the frame is refused.
pub const MAX_IPV6_EXTENSION_HEADERS: usize = 8;

/// Ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = ethertype::IPV4;
/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = ethertype::IPV6;
/// Ethertype of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = ethertype::VLAN;
/// Ethertype of an 802.1ad (QinQ service) tag.
pub const ETHERTYPE_QINQ: u16 = ethertype::QINQ;

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = proto::TCP;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = proto::UDP;
/// IP protocol number of ICMP (IPv4).
pub const IPPROTO_ICMP: u8 = proto::ICMP;
/// IPv6 next-header number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = proto::ICMPV6;

/// TCP flag bits, as in the 14th byte of the TCP header.
pub mod tcp_flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push: deliver to the application now.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// The header that was being read when parsing failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// The 14-byte Ethernet header.
    Ethernet,
    /// An 802.1Q / 802.1ad tag.
    Vlan,
    /// The IPv4 header.
    Ipv4,
    /// The IPv6 fixed header.
    Ipv6,
    /// An IPv6 extension header.
    Ipv6Extension,
    /// The TCP header.
    Tcp,
    /// The UDP header.
    Udp,
    /// The ICMP or ICMPv6 header.
    Icmp,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Ethernet => "Ethernet",
            Layer::Vlan => "VLAN tag",
            Layer::Ipv4 => "IPv4",
            Layer::Ipv6 => "IPv6",
            Layer::Ipv6Extension => "IPv6 extension",
            Layer::Tcp => "TCP",
            Layer::Udp => "UDP",
            Layer::Icmp => "ICMP",
        })
    }
}

/// Why a frame could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A header runs past the end of the frame (or of its IP packet).
    #[error(
        "{layer} header truncated: needs {needed} bytes at offset {offset}, only {available} there"
    )]
    Truncated {
        /// The header being read.
        layer: Layer,
        /// Its offset in the frame.
        offset: usize,
        /// The bytes it needs.
        needed: usize,
        /// The bytes there are from `offset` to the end of the frame or IP packet.
        available: usize,
    },
    /// The IP version nibble does not match the ethertype.
    #[error("IP version {version} in a frame of ethertype {ethertype:#06x}")]
    IpVersionMismatch {
        /// The frame's (inner) ethertype.
        ethertype: u16,
        /// The version nibble found.
        version: u8,
    },
    /// The IPv4 IHL is below 5 (20 bytes).
    #[error("IPv4 header length {header_len} is below 20")]
    Ipv4HeaderLength {
        /// IHL × 4.
        header_len: usize,
    },
    /// The IPv4 total length is shorter than its header or longer than the frame.
    #[error("IPv4 total length {total_len} is outside {header_len}..={available}")]
    Ipv4TotalLength {
        /// The total-length field.
        total_len: u16,
        /// The header length (IHL × 4).
        header_len: usize,
        /// Bytes from the IPv4 header to the end of the frame.
        available: usize,
    },
    /// The IPv6 payload length is longer than the frame.
    #[error("IPv6 payload length {payload_len} exceeds the {available} bytes after the header")]
    Ipv6PayloadLength {
        /// The payload-length field.
        payload_len: u16,
        /// Bytes after the fixed header to the end of the frame.
        available: usize,
    },
    /// More IPv6 extension headers than [`MAX_IPV6_EXTENSION_HEADERS`].
    #[error("more than {limit} IPv6 extension headers")]
    TooManyExtensionHeaders {
        /// The limit.
        limit: usize,
    },
    /// The TCP data offset is below 5 (20 bytes).
    #[error("TCP header length {header_len} is below 20")]
    TcpHeaderLength {
        /// Data offset × 4.
        header_len: usize,
    },
}

/// IPv6 fragment header contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Fragment {
    /// Offset of this fragment's data, in 8-byte units.
    pub offset: u16,
    /// The M (more fragments) flag.
    pub more: bool,
    /// The identification.
    pub id: u32,
    /// Offset of the fragment header in the frame.
    pub header_offset: usize,
}

/// The network layer of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3 {
    /// IPv4.
    Ipv4 {
        /// Source address.
        src: Ipv4Addr,
        /// Destination address.
        dst: Ipv4Addr,
        /// Header length in bytes (IHL × 4, 20..=60).
        header_len: u8,
        /// Total-length field as found (0 only from [`parse_lso_frame`]).
        total_len: u16,
        /// Identification.
        id: u16,
        /// Type of service / DSCP+ECN byte.
        tos: u8,
        /// Time to live.
        ttl: u8,
        /// Protocol field.
        protocol: u8,
        /// The DF flag.
        dont_fragment: bool,
        /// Part of a fragmented datagram: MF set or fragment offset ≠ 0.
        fragment: bool,
        /// The first fragment of a fragmented datagram (MF set, offset 0).
        first_fragment: bool,
        /// Fragment offset, in 8-byte units.
        fragment_offset: u16,
    },
    /// IPv6.
    Ipv6 {
        /// Source address.
        src: Ipv6Addr,
        /// Destination address (of the fixed header; a routing header is not followed).
        dst: Ipv6Addr,
        /// Payload-length field as found (0 only from [`parse_lso_frame`]).
        payload_len: u16,
        /// Traffic class.
        traffic_class: u8,
        /// Flow label (20 bits).
        flow_label: u32,
        /// Hop limit.
        hop_limit: u8,
        /// Upper-layer protocol after the extension headers.
        next_header: u8,
        /// Bytes of extension headers walked (from the end of the fixed header to `l4_offset`,
        /// or to the end of the fragment header of a non-first fragment).
        ext_headers_len: u16,
        /// The fragment header, if there is one.
        fragment: Option<Ipv6Fragment>,
    },
    /// Not IP: ARP, LLDP, or anything else.
    Other,
}

impl L3 {
    /// True for any piece of a fragmented datagram (IPv6: fragment header with M set or a
    /// non-zero offset; an atomic fragment is not counted).
    pub fn is_fragment(&self) -> bool {
        match self {
            L3::Ipv4 { fragment, .. } => *fragment,
            L3::Ipv6 {
                fragment: Some(f), ..
            } => f.more || f.offset != 0,
            _ => false,
        }
    }

    /// The upper-layer protocol number, if this is IP.
    pub fn protocol(&self) -> Option<u8> {
        match self {
            L3::Ipv4 { protocol, .. } => Some(*protocol),
            L3::Ipv6 { next_header, .. } => Some(*next_header),
            L3::Other => None,
        }
    }
}

/// The transport layer of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// TCP.
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Sequence number.
        seq: u32,
        /// Acknowledgment number.
        ack: u32,
        /// Header length in bytes (data offset × 4, 20..=60).
        header_len: u8,
        /// Flags ([`tcp_flags`]).
        flags: u8,
        /// Window.
        window: u16,
        /// Checksum field as found.
        checksum: u16,
    },
    /// UDP.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Length field as found.
        length: u16,
        /// Checksum field as found.
        checksum: u16,
    },
    /// ICMP over IPv4 or ICMPv6 over IPv6.
    Icmp {
        /// Message type.
        ty: u8,
        /// Message code.
        code: u8,
    },
    /// A fragment other than the first: the L4 header is in another frame.
    NonFirstFragment(u8),
    /// An IP protocol whose header is not parsed.
    Other(u8),
    /// Not IP.
    None,
}

/// Offsets and flow fields of one Ethernet frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Ethertype after the VLAN tag, if any.
    pub ethertype: u16,
    /// The tag control information of the (outer) VLAN tag.
    pub vlan: Option<u16>,
    /// Offset of the network header (14, or 18 with a tag).
    pub l3_offset: usize,
    /// Network layer.
    pub l3: L3,
    /// Offset of the transport header, when it is in this frame.
    pub l4_offset: Option<usize>,
    /// Transport layer.
    pub l4: L4,
    /// Offset one past the IP packet's last byte (bytes from here on are Ethernet padding);
    /// the frame length for non-IP frames.
    pub ip_end: usize,
}

impl FrameInfo {
    /// Offset of the TCP/UDP/ICMP payload, if the L4 header was parsed.
    pub fn l4_payload_offset(&self) -> Option<usize> {
        let l4 = self.l4_offset?;
        let len = match self.l4 {
            L4::Tcp { header_len, .. } => usize::from(header_len),
            L4::Udp { .. } => wire::udp::HEADER_LEN,
            L4::Icmp { .. } => wire::icmp::HEADER_LEN,
            _ => return None,
        };
        Some(l4 + len)
    }

    /// Bytes of TCP/UDP/ICMP payload in the IP packet, if the L4 header was parsed.
    pub fn l4_payload_len(&self) -> Option<usize> {
        self.ip_end.checked_sub(self.l4_payload_offset()?)
    }
}

/// True for ff:ff:ff:ff:ff:ff.
pub fn is_broadcast(mac: &[u8; 6]) -> bool {
    mac.iter().all(|&b| b == 0xFF)
}

/// True for group addresses (I/G bit set), broadcast included.
pub fn is_multicast(mac: &[u8; 6]) -> bool {
    mac[0] & 0x01 != 0
}

/// True for individual (unicast) addresses.
pub fn is_unicast(mac: &[u8; 6]) -> bool {
    !is_multicast(mac)
}

/// How IP length fields are read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lengths {
    /// They must be consistent with the frame.
    Strict,
    /// A zero IPv4 total length or IPv6 payload length means "to the end of the frame".
    ZeroMeansRest,
}

/// Parses an Ethernet frame. Bytes after the IP packet (Ethernet padding) are ignored.
pub fn parse_frame(frame: &[u8]) -> Result<FrameInfo, ParseError> {
    parse(frame, Lengths::Strict)
}

/// As [`parse_frame`], but an IPv4 total length or IPv6 payload length of 0 means "the IP
/// packet runs to the end of the frame": the form in which a guest hands an LSO packet to
/// the host (PROTOCOL.md §8.3).
pub fn parse_lso_frame(frame: &[u8]) -> Result<FrameInfo, ParseError> {
    parse(frame, Lengths::ZeroMeansRest)
}

fn truncated(layer: Layer, buf: &[u8], offset: usize, needed: usize) -> ParseError {
    ParseError::Truncated {
        layer,
        offset,
        needed,
        available: buf.len().saturating_sub(offset),
    }
}

/// `buf[offset..offset + needed]` or a truncation error.
fn need(layer: Layer, buf: &[u8], offset: usize, needed: usize) -> Result<&[u8], ParseError> {
    offset
        .checked_add(needed)
        .and_then(|end| buf.get(offset..end))
        .ok_or_else(|| truncated(layer, buf, offset, needed))
}

fn mac(bytes: Option<&[u8]>) -> [u8; 6] {
    let mut out = [0u8; 6];
    if let Some(b) = bytes
        && b.len() == 6
    {
        out.copy_from_slice(b);
    }
    out
}

fn parse(frame: &[u8], lengths: Lengths) -> Result<FrameInfo, ParseError> {
    need(Layer::Ethernet, frame, 0, eth::HEADER_LEN)?;
    let dst_mac = mac(frame.get(eth::DST));
    let src_mac = mac(frame.get(eth::SRC));
    let mut ethertype = be16_at(frame, 0, eth::ETHERTYPE).unwrap_or(0);
    let mut l3_offset = eth::HEADER_LEN;
    let mut vlan = None;
    if ethertype == ethertype::VLAN || ethertype == ethertype::QINQ {
        need(Layer::Vlan, frame, l3_offset, wire::vlan::TAG_LEN)?;
        vlan = be16_at(frame, l3_offset, wire::vlan::TCI);
        ethertype = be16_at(frame, l3_offset, wire::vlan::ETHERTYPE).unwrap_or(0);
        l3_offset += wire::vlan::TAG_LEN;
    }
    let mut info = FrameInfo {
        dst_mac,
        src_mac,
        ethertype,
        vlan,
        l3_offset,
        l3: L3::Other,
        l4_offset: None,
        l4: L4::None,
        ip_end: frame.len(),
    };
    match ethertype {
        ethertype::IPV4 => parse_ipv4(frame, lengths, &mut info)?,
        ethertype::IPV6 => parse_ipv6(frame, lengths, &mut info)?,
        _ => {}
    }
    Ok(info)
}

fn parse_ipv4(frame: &[u8], lengths: Lengths, info: &mut FrameInfo) -> Result<(), ParseError> {
    let off = info.l3_offset;
    let hdr = need(Layer::Ipv4, frame, off, ipv4::MIN_HEADER_LEN)?;
    let ver_ihl = hdr[ipv4::VER_IHL];
    let version = ver_ihl >> 4;
    if version != 4 {
        return Err(ParseError::IpVersionMismatch {
            ethertype: info.ethertype,
            version,
        });
    }
    let header_len = usize::from(ver_ihl & 0x0F) * 4;
    if header_len < ipv4::MIN_HEADER_LEN {
        return Err(ParseError::Ipv4HeaderLength { header_len });
    }
    need(Layer::Ipv4, frame, off, header_len)?;
    let available = frame.len() - off;
    let total_len = be16_at(frame, off, ipv4::TOTAL_LEN).unwrap_or(0);
    let ip_len = if total_len == 0 && lengths == Lengths::ZeroMeansRest {
        available
    } else {
        usize::from(total_len)
    };
    if ip_len < header_len || ip_len > available {
        return Err(ParseError::Ipv4TotalLength {
            total_len,
            header_len,
            available,
        });
    }
    let flags_frag = be16_at(frame, off, ipv4::FLAGS_FRAG).unwrap_or(0);
    let fragment_offset = flags_frag & ipv4::FRAG_OFFSET_MASK;
    let more = flags_frag & ipv4::FLAG_MF != 0;
    let protocol = u8_at(frame, off, ipv4::PROTOCOL).unwrap_or(0);
    info.ip_end = off + ip_len;
    info.l3 = L3::Ipv4 {
        src: ipv4_addr(slice_at(frame, off, ipv4::SRC)),
        dst: ipv4_addr(slice_at(frame, off, ipv4::DST)),
        header_len: header_len as u8,
        total_len,
        id: be16_at(frame, off, ipv4::ID).unwrap_or(0),
        tos: u8_at(frame, off, ipv4::TOS).unwrap_or(0),
        ttl: u8_at(frame, off, ipv4::TTL).unwrap_or(0),
        protocol,
        dont_fragment: flags_frag & ipv4::FLAG_DF != 0,
        fragment: more || fragment_offset != 0,
        first_fragment: more && fragment_offset == 0,
        fragment_offset,
    };
    if fragment_offset != 0 {
        info.l4 = L4::NonFirstFragment(protocol);
        return Ok(());
    }
    parse_l4(frame, off + header_len, protocol, false, info)
}

fn parse_ipv6(frame: &[u8], lengths: Lengths, info: &mut FrameInfo) -> Result<(), ParseError> {
    let off = info.l3_offset;
    let hdr = need(Layer::Ipv6, frame, off, ipv6::HEADER_LEN)?;
    let version = hdr[0] >> 4;
    if version != 6 {
        return Err(ParseError::IpVersionMismatch {
            ethertype: info.ethertype,
            version,
        });
    }
    let vtf = be32_at(frame, off, ipv6::VER_TC_FLOW).unwrap_or(0);
    let available = frame.len() - off - ipv6::HEADER_LEN;
    let payload_len = be16_at(frame, off, ipv6::PAYLOAD_LEN).unwrap_or(0);
    let pl = if payload_len == 0 && lengths == Lengths::ZeroMeansRest {
        available
    } else {
        usize::from(payload_len)
    };
    if pl > available {
        return Err(ParseError::Ipv6PayloadLength {
            payload_len,
            available,
        });
    }
    let ip_end = off + ipv6::HEADER_LEN + pl;
    info.ip_end = ip_end;
    // Extension headers are read from the IP packet only, never from padding.
    let packet = &frame[..ip_end];
    let mut next = u8_at(frame, off, ipv6::NEXT_HEADER).unwrap_or(0);
    let mut cursor = off + ipv6::HEADER_LEN;
    let mut fragment = None;
    let mut walked = 0;
    let mut non_first_fragment = false;
    loop {
        let len = match next {
            proto::HOP_BY_HOP | proto::ROUTING | proto::DEST_OPTS => {
                let h = need(Layer::Ipv6Extension, packet, cursor, ipv6_ext::MIN_LEN)?;
                (usize::from(h[ipv6_ext::LEN]) + 1) * 8
            }
            proto::AH => {
                let h = need(Layer::Ipv6Extension, packet, cursor, ipv6_ext::MIN_LEN)?;
                (usize::from(h[ipv6_ext::LEN]) + 2) * 4
            }
            proto::FRAGMENT => ipv6_ext::fragment::LEN,
            _ => break,
        };
        if walked == MAX_IPV6_EXTENSION_HEADERS {
            return Err(ParseError::TooManyExtensionHeaders {
                limit: MAX_IPV6_EXTENSION_HEADERS,
            });
        }
        walked += 1;
        need(Layer::Ipv6Extension, packet, cursor, len)?;
        let this = next;
        next = u8_at(packet, cursor, ipv6_ext::NEXT_HEADER).unwrap_or(0);
        if this == proto::FRAGMENT {
            let of = be16_at(packet, cursor, ipv6_ext::fragment::OFFSET_FLAGS).unwrap_or(0);
            let f = Ipv6Fragment {
                offset: of >> 3,
                more: of & ipv6_ext::fragment::FLAG_M != 0,
                id: be32_at(packet, cursor, ipv6_ext::fragment::ID).unwrap_or(0),
                header_offset: cursor,
            };
            fragment = Some(f);
            cursor += len;
            if f.offset != 0 {
                non_first_fragment = true;
                break;
            }
        } else {
            cursor += len;
        }
    }
    let ext_len = cursor - off - ipv6::HEADER_LEN;
    let fixed_src = slice_at(frame, off, ipv6::SRC);
    let fixed_dst = slice_at(frame, off, ipv6::DST);
    info.l3 = L3::Ipv6 {
        src: ipv6_addr(fixed_src),
        dst: ipv6_addr(fixed_dst),
        payload_len,
        traffic_class: ((vtf >> 20) & 0xFF) as u8,
        flow_label: vtf & 0x000F_FFFF,
        hop_limit: u8_at(frame, off, ipv6::HOP_LIMIT).unwrap_or(0),
        next_header: next,
        // At most 8 headers of at most 2 KiB each: fits.
        ext_headers_len: ext_len.min(usize::from(u16::MAX)) as u16,
        fragment,
    };
    if non_first_fragment {
        info.l4 = L4::NonFirstFragment(next);
        return Ok(());
    }
    parse_l4(frame, cursor, next, true, info)
}

fn parse_l4(
    frame: &[u8],
    off: usize,
    protocol: u8,
    v6: bool,
    info: &mut FrameInfo,
) -> Result<(), ParseError> {
    let packet = frame.get(..info.ip_end).unwrap_or(&[]);
    match protocol {
        proto::TCP => {
            let h = need(Layer::Tcp, packet, off, wire::tcp::MIN_HEADER_LEN)?;
            let header_len = usize::from(h[wire::tcp::DATA_OFFSET] >> 4) * 4;
            if header_len < wire::tcp::MIN_HEADER_LEN {
                return Err(ParseError::TcpHeaderLength { header_len });
            }
            need(Layer::Tcp, packet, off, header_len)?;
            info.l4 = L4::Tcp {
                src_port: be16_at(h, 0, wire::tcp::SRC_PORT).unwrap_or(0),
                dst_port: be16_at(h, 0, wire::tcp::DST_PORT).unwrap_or(0),
                seq: be32_at(h, 0, wire::tcp::SEQ).unwrap_or(0),
                ack: be32_at(h, 0, wire::tcp::ACK).unwrap_or(0),
                header_len: header_len as u8,
                flags: h[wire::tcp::FLAGS],
                window: be16_at(h, 0, wire::tcp::WINDOW).unwrap_or(0),
                checksum: be16_at(h, 0, wire::tcp::CHECKSUM).unwrap_or(0),
            };
        }
        proto::UDP => {
            let h = need(Layer::Udp, packet, off, wire::udp::HEADER_LEN)?;
            info.l4 = L4::Udp {
                src_port: be16_at(h, 0, wire::udp::SRC_PORT).unwrap_or(0),
                dst_port: be16_at(h, 0, wire::udp::DST_PORT).unwrap_or(0),
                length: be16_at(h, 0, wire::udp::LENGTH).unwrap_or(0),
                checksum: be16_at(h, 0, wire::udp::CHECKSUM).unwrap_or(0),
            };
        }
        proto::ICMP if !v6 => parse_icmp(packet, off, info)?,
        proto::ICMPV6 if v6 => parse_icmp(packet, off, info)?,
        other => {
            info.l4 = L4::Other(other);
        }
    }
    info.l4_offset = Some(off);
    Ok(())
}

fn parse_icmp(packet: &[u8], off: usize, info: &mut FrameInfo) -> Result<(), ParseError> {
    let h = need(Layer::Icmp, packet, off, wire::icmp::HEADER_LEN)?;
    info.l4 = L4::Icmp {
        ty: h[wire::icmp::TYPE],
        code: h[wire::icmp::CODE],
    };
    Ok(())
}

fn ipv4_addr(b: Option<&[u8]>) -> Ipv4Addr {
    match b {
        Some(&[a, b, c, d]) => Ipv4Addr::new(a, b, c, d),
        _ => Ipv4Addr::UNSPECIFIED,
    }
}

fn ipv6_addr(b: Option<&[u8]>) -> Ipv6Addr {
    let mut o = [0u8; 16];
    if let Some(b) = b
        && b.len() == 16
    {
        o.copy_from_slice(b);
    }
    Ipv6Addr::from(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

    fn eth(ethertype: u16) -> [u8; 14] {
        let mut h = [0u8; 14];
        h[0..6].copy_from_slice(&MAC_B);
        h[6..12].copy_from_slice(&MAC_A);
        h[12..14].copy_from_slice(&ethertype.to_be_bytes());
        h
    }

    /// 14 + 20 + 20 + 4 bytes: 198.18.0.1:1234 → 198.18.0.2:80, seq 1000, ack 2000, ACK|PSH.
    fn ipv4_tcp() -> [u8; 58] {
        let mut f = [0u8; 58];
        f[..14].copy_from_slice(&eth(0x0800));
        f[14..34].copy_from_slice(&[
            0x45, 0x00, 0x00, 44, 0x12, 0x34, 0x40, 0x00, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
        ]);
        f[34..54].copy_from_slice(&[
            0x04, 0xD2, 0x00, 0x50, 0, 0, 0x03, 0xE8, 0, 0, 0x07, 0xD0, 0x50, 0x18, 0xFF, 0xFF, 0,
            0, 0, 0,
        ]);
        f[54..].copy_from_slice(b"data");
        f
    }

    #[test]
    fn ipv4_tcp_fields() {
        let f = ipv4_tcp();
        let info = parse_frame(&f).unwrap();
        assert_eq!(info.dst_mac, MAC_B);
        assert_eq!(info.src_mac, MAC_A);
        assert_eq!(info.ethertype, 0x0800);
        assert_eq!(info.vlan, None);
        assert_eq!(info.l3_offset, 14);
        assert_eq!(info.l4_offset, Some(34));
        assert_eq!(info.ip_end, 58);
        assert_eq!(
            info.l3,
            L3::Ipv4 {
                src: Ipv4Addr::new(198, 18, 0, 1),
                dst: Ipv4Addr::new(198, 18, 0, 2),
                header_len: 20,
                total_len: 44,
                id: 0x1234,
                tos: 0,
                ttl: 64,
                protocol: 6,
                dont_fragment: true,
                fragment: false,
                first_fragment: false,
                fragment_offset: 0,
            }
        );
        assert_eq!(
            info.l4,
            L4::Tcp {
                src_port: 1234,
                dst_port: 80,
                seq: 1000,
                ack: 2000,
                header_len: 20,
                flags: tcp_flags::ACK | tcp_flags::PSH,
                window: 0xFFFF,
                checksum: 0,
            }
        );
        assert_eq!(info.l4_payload_offset(), Some(54));
        assert_eq!(info.l4_payload_len(), Some(4));
    }

    #[test]
    fn padding_is_not_payload() {
        let mut f = [0u8; 64];
        f[..58].copy_from_slice(&ipv4_tcp());
        let info = parse_frame(&f).unwrap();
        assert_eq!(info.ip_end, 58);
        assert_eq!(info.l4_payload_len(), Some(4));
    }

    #[test]
    fn vlan_tag() {
        let base = ipv4_tcp();
        let mut f = [0u8; 62];
        f[..12].copy_from_slice(&base[..12]);
        f[12..16].copy_from_slice(&[0x81, 0x00, 0x20, 0x05]);
        f[16..].copy_from_slice(&base[12..]);
        let info = parse_frame(&f).unwrap();
        assert_eq!(info.vlan, Some(0x2005));
        assert_eq!(info.ethertype, 0x0800);
        assert_eq!(info.l3_offset, 18);
        assert_eq!(info.l4_offset, Some(38));
    }

    #[test]
    fn ipv4_fragments() {
        let mut f = ipv4_tcp();
        f[20] = 0x20; // MF, offset 0
        let info = parse_frame(&f).unwrap();
        assert!(info.l3.is_fragment());
        assert!(matches!(
            info.l3,
            L3::Ipv4 {
                first_fragment: true,
                ..
            }
        ));
        assert!(matches!(info.l4, L4::Tcp { .. }));
        f[20] = 0x00;
        f[21] = 0x10; // offset 16 × 8
        let info = parse_frame(&f).unwrap();
        assert!(matches!(
            info.l3,
            L3::Ipv4 {
                fragment: true,
                first_fragment: false,
                fragment_offset: 16,
                ..
            }
        ));
        assert_eq!(info.l4, L4::NonFirstFragment(6));
        assert_eq!(info.l4_offset, None);
    }

    #[test]
    fn ipv4_errors() {
        let mut f = ipv4_tcp();
        f[14] = 0x44;
        assert_eq!(
            parse_frame(&f),
            Err(ParseError::Ipv4HeaderLength { header_len: 16 })
        );
        f[14] = 0x65;
        assert_eq!(
            parse_frame(&f),
            Err(ParseError::IpVersionMismatch {
                ethertype: 0x0800,
                version: 6
            })
        );
        let mut f = ipv4_tcp();
        f[17] = 45;
        assert_eq!(
            parse_frame(&f),
            Err(ParseError::Ipv4TotalLength {
                total_len: 45,
                header_len: 20,
                available: 44
            })
        );
        let mut f = ipv4_tcp();
        f[17] = 0;
        assert!(parse_frame(&f).is_err());
        assert_eq!(parse_lso_frame(&f).unwrap().ip_end, 58);
        let mut f = ipv4_tcp();
        f[46] = 0x40;
        assert_eq!(
            parse_frame(&f),
            Err(ParseError::TcpHeaderLength { header_len: 16 })
        );
        let f = ipv4_tcp();
        assert_eq!(
            parse_frame(&f[..40]),
            Err(ParseError::Ipv4TotalLength {
                total_len: 44,
                header_len: 20,
                available: 26
            })
        );
        assert_eq!(
            parse_frame(&f[..10]),
            Err(ParseError::Truncated {
                layer: Layer::Ethernet,
                offset: 0,
                needed: 14,
                available: 10
            })
        );
    }

    fn ipv6_with(ext: &[u8], first_next: u8, l4: &[u8]) -> ([u8; 256], usize) {
        let mut f = [0u8; 256];
        f[..14].copy_from_slice(&eth(0x86DD));
        let pl = ext.len() + l4.len();
        f[14] = 0x60;
        f[15] = 0x01;
        f[16] = 0x23;
        f[17] = 0x45;
        f[18..20].copy_from_slice(&(pl as u16).to_be_bytes());
        f[20] = first_next;
        f[21] = 64;
        f[22..38].copy_from_slice(&"2001:2::1".parse::<Ipv6Addr>().unwrap().octets());
        f[38..54].copy_from_slice(&"2001:2::2".parse::<Ipv6Addr>().unwrap().octets());
        f[54..54 + ext.len()].copy_from_slice(ext);
        f[54 + ext.len()..54 + pl].copy_from_slice(l4);
        (f, 54 + pl)
    }

    #[test]
    fn ipv6_extension_walk() {
        // hop-by-hop (8) → dest opts (16) → fragment (8, offset 0, M) → UDP.
        let ext = [
            60, 0, 1, 4, 0, 0, 0, 0, // hop-by-hop: next dest-opts, len 0, PadN
            44, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, // dest opts: next fragment, len 1
            17, 0, 0x00, 0x01, 0xDE, 0xAD, 0xBE, 0xEF, // fragment: next UDP, offset 0, M, id
        ];
        let udp = [0x30, 0x39, 0x00, 0x35, 0, 12, 0, 0, 1, 2, 3, 4];
        let (f, len) = ipv6_with(&ext, 0, &udp);
        let info = parse_frame(&f[..len]).unwrap();
        assert_eq!(info.l4_offset, Some(54 + 32));
        assert_eq!(
            info.l4,
            L4::Udp {
                src_port: 12345,
                dst_port: 53,
                length: 12,
                checksum: 0
            }
        );
        match info.l3 {
            L3::Ipv6 {
                next_header,
                ext_headers_len,
                fragment,
                traffic_class,
                flow_label,
                ..
            } => {
                assert_eq!(next_header, 17);
                assert_eq!(ext_headers_len, 32);
                assert_eq!(traffic_class, 0x00);
                assert_eq!(flow_label, 0x12345);
                assert_eq!(
                    fragment,
                    Some(Ipv6Fragment {
                        offset: 0,
                        more: true,
                        id: 0xDEADBEEF,
                        header_offset: 78
                    })
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(info.l3.is_fragment());
    }

    #[test]
    fn ipv6_non_first_fragment() {
        let ext = [6, 0, 0x00, 0x10, 0, 0, 0, 1];
        let (f, len) = ipv6_with(&ext, 44, &[0u8; 16]);
        let info = parse_frame(&f[..len]).unwrap();
        assert_eq!(info.l4, L4::NonFirstFragment(6));
        assert_eq!(info.l4_offset, None);
        assert!(info.l3.is_fragment());
    }

    #[test]
    fn ipv6_too_many_extension_headers() {
        let mut ext = [0u8; 9 * 8];
        for (i, h) in ext.chunks_mut(8).enumerate() {
            h[0] = if i == 8 { 59 } else { 60 };
        }
        let (f, len) = ipv6_with(&ext, 60, &[]);
        assert_eq!(
            parse_frame(&f[..len]),
            Err(ParseError::TooManyExtensionHeaders { limit: 8 })
        );
        // Eight are fine; 59 (no next header) is reported as Other.
        let (f, len) = ipv6_with(&ext[8..], 60, &[]);
        assert_eq!(parse_frame(&f[..len]).unwrap().l4, L4::Other(59));
    }

    #[test]
    fn ipv6_extension_header_past_packet() {
        let ext = [60, 4, 0, 0, 0, 0, 0, 0];
        let (f, len) = ipv6_with(&ext, 0, &[]);
        assert_eq!(
            parse_frame(&f[..len]),
            Err(ParseError::Truncated {
                layer: Layer::Ipv6Extension,
                offset: 54,
                needed: 40,
                available: 8
            })
        );
        // Padding after the packet must not be read as extension-header bytes.
        assert!(parse_frame(&f[..len + 64]).is_err());
    }

    #[test]
    fn icmp_and_other() {
        let (f, len) = ipv6_with(&[], 58, &[128, 0, 0, 0, 0, 1, 0, 1]);
        assert_eq!(
            parse_frame(&f[..len]).unwrap().l4,
            L4::Icmp { ty: 128, code: 0 }
        );
        // ICMP (1) in IPv6 is not ICMPv6.
        let (f, len) = ipv6_with(&[], 1, &[8, 0, 0, 0]);
        assert_eq!(parse_frame(&f[..len]).unwrap().l4, L4::Other(1));
    }

    #[test]
    fn non_ip() {
        let mut f = [0u8; 60];
        f[..14].copy_from_slice(&eth(0x0806));
        let info = parse_frame(&f).unwrap();
        assert_eq!(info.l3, L3::Other);
        assert_eq!(info.l4, L4::None);
        assert_eq!(info.ip_end, 60);
    }

    #[test]
    fn mac_classes() {
        assert!(is_broadcast(&[0xFF; 6]));
        assert!(is_multicast(&[0xFF; 6]));
        assert!(is_multicast(&[0x33, 0x33, 0, 0, 0, 1]));
        assert!(is_unicast(&MAC_A));
        assert!(!is_broadcast(&MAC_A));
    }
}
