//! Pure decoding of captured bytes: link layer (Ethernet with VLAN tags,
//! Linux cooked capture v1 and v2, raw IP, BSD and OpenBSD loopback), IPv4
//! and IPv6, then UDP and TCP. Every length is checked against the bytes
//! actually captured, so truncated or hostile packets decode to `None` or
//! to a shorter payload, never to a panic.

use std::net::{IpAddr, SocketAddr};

use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::tcp::TcpPacket;
use pnet_packet::udp::UdpPacket;

/// libpcap link-layer types (LINKTYPE_*) this module understands.
pub const LINKTYPE_NULL: i32 = 0;
pub const LINKTYPE_ETHERNET: i32 = 1;
pub const LINKTYPE_RAW: i32 = 101;
pub const LINKTYPE_LOOP: i32 = 108;
pub const LINKTYPE_LINUX_SLL: i32 = 113;
pub const LINKTYPE_IPV4: i32 = 228;
pub const LINKTYPE_IPV6: i32 = 229;
pub const LINKTYPE_LINUX_SLL2: i32 = 276;
/// DLT_RAW as some BSDs number it in live captures.
const DLT_RAW_BSD: [i32; 2] = [12, 14];

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];

/// TCP header flags, as on the wire.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// A decoded UDP datagram or TCP segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transport: Transport,
    /// The payload bytes that were captured (may be cut short by snaplen).
    pub payload: &'a [u8],
    /// The payload length on the wire, from the IP and transport headers.
    pub wire_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp {
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
    },
}

/// Decodes one captured packet down to UDP or TCP. `None` for anything else
/// (ARP, ICMP, later fragments, undecodable bytes).
pub fn decode(linktype: i32, data: &[u8]) -> Option<Segment<'_>> {
    let (ethertype, ip) = link(linktype, data)?;
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(ip),
        ETHERTYPE_IPV6 => ipv6(ip),
        _ => None,
    }
}

/// Strips the link layer: the ethertype of what follows, and its bytes.
fn link(linktype: i32, data: &[u8]) -> Option<(u16, &[u8])> {
    match linktype {
        LINKTYPE_ETHERNET => {
            let mut ethertype = be16(data, 12)?;
            let mut offset = 14;
            // 802.1Q / 802.1ad tags, possibly stacked (QinQ).
            while ETHERTYPE_VLAN.contains(&ethertype) {
                ethertype = be16(data, offset + 2)?;
                offset += 4;
            }
            Some((ethertype, data.get(offset..)?))
        }
        LINKTYPE_LINUX_SLL => Some((be16(data, 14)?, data.get(16..)?)),
        LINKTYPE_LINUX_SLL2 => Some((be16(data, 0)?, data.get(20..)?)),
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            let family = data.get(..4)?;
            let family = if linktype == LINKTYPE_LOOP {
                u32::from_be_bytes(family.try_into().ok()?)
            } else {
                // DLT_NULL stores the family in the capturing host's byte
                // order; the family numbers are small, so either order tells.
                let le = u32::from_le_bytes(family.try_into().ok()?);
                if le < 0x1_0000 {
                    le
                } else {
                    u32::from_be_bytes(family.try_into().ok()?)
                }
            };
            // AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24, 28 or 30 (BSDs).
            let ethertype = match family {
                2 => ETHERTYPE_IPV4,
                10 | 24 | 28 | 30 => ETHERTYPE_IPV6,
                _ => return None,
            };
            Some((ethertype, data.get(4..)?))
        }
        LINKTYPE_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 => raw_ip(data),
        lt if DLT_RAW_BSD.contains(&lt) => raw_ip(data),
        _ => None,
    }
}

fn raw_ip(data: &[u8]) -> Option<(u16, &[u8])> {
    match data.first()? >> 4 {
        4 => Some((ETHERTYPE_IPV4, data)),
        6 => Some((ETHERTYPE_IPV6, data)),
        _ => None,
    }
}

fn ipv4(data: &[u8]) -> Option<Segment<'_>> {
    let ip = Ipv4Packet::new(data)?;
    let header_len = usize::from(ip.get_header_length()) * 4;
    let total_len = usize::from(ip.get_total_length());
    if ip.get_version() != 4 || header_len < 20 || total_len < header_len {
        return None;
    }
    // Only the first fragment carries the transport header.
    if ip.get_fragment_offset() != 0 {
        return None;
    }
    let captured = data.get(header_len..total_len.min(data.len()))?;
    transport(
        ip.get_next_level_protocol().0,
        IpAddr::V4(ip.get_source()),
        IpAddr::V4(ip.get_destination()),
        captured,
        total_len - header_len,
    )
}

fn ipv6(data: &[u8]) -> Option<Segment<'_>> {
    let ip = Ipv6Packet::new(data)?;
    if ip.get_version() != 6 {
        return None;
    }
    let src = IpAddr::V6(ip.get_source());
    let dst = IpAddr::V6(ip.get_destination());
    let mut wire_len = usize::from(ip.get_payload_length());
    let mut rest = data.get(40..(40 + wire_len).min(data.len()))?;
    let mut next = ip.get_next_header().0;
    // Skip the extension headers that may precede UDP/TCP in an unfragmented
    // packet: hop-by-hop (0), routing (43), destination options (60).
    while matches!(next, 0 | 43 | 60) {
        let len = (usize::from(*rest.get(1)?) + 1) * 8;
        next = *rest.first()?;
        rest = rest.get(len..)?;
        wire_len = wire_len.checked_sub(len)?;
    }
    transport(next, src, dst, rest, wire_len)
}

fn transport(
    protocol: u8,
    src: IpAddr,
    dst: IpAddr,
    data: &[u8],
    wire_len: usize,
) -> Option<Segment<'_>> {
    if protocol == IpNextHeaderProtocols::Udp.0 {
        let udp = UdpPacket::new(data)?;
        let udp_len = usize::from(udp.get_length());
        // The UDP length field bounds the payload (it may claim less than
        // the IP packet carries); below 8 it is invalid.
        if udp_len < 8 {
            return None;
        }
        let wire = udp_len.min(wire_len).saturating_sub(8);
        let payload = data.get(8..(8 + wire).min(data.len()))?;
        Some(Segment {
            src: SocketAddr::new(src, udp.get_source()),
            dst: SocketAddr::new(dst, udp.get_destination()),
            transport: Transport::Udp,
            payload,
            wire_len: wire,
        })
    } else if protocol == IpNextHeaderProtocols::Tcp.0 {
        let tcp = TcpPacket::new(data)?;
        let header_len = usize::from(tcp.get_data_offset()) * 4;
        if header_len < 20 || header_len > wire_len {
            return None;
        }
        // A header cut short by snaplen still tells flags and ports.
        let payload = data.get(header_len.min(data.len())..).unwrap_or_default();
        Some(Segment {
            src: SocketAddr::new(src, tcp.get_source()),
            dst: SocketAddr::new(dst, tcp.get_destination()),
            transport: Transport::Tcp {
                seq: tcp.get_sequence(),
                ack: tcp.get_acknowledgement(),
                flags: tcp.get_flags(),
                window: tcp.get_window(),
            },
            payload,
            wire_len: wire_len - header_len,
        })
    } else {
        None
    }
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet/IPv4/UDP frame from 10.0.0.1:1024 to 10.0.0.2:53.
    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
        ]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        let ulen = (8 + payload.len()) as u16;
        f.extend_from_slice(&[4, 0, 0, 53, (ulen >> 8) as u8, ulen as u8, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn ethernet_ipv4_udp_decodes() {
        let frame = udp_frame(b"hello");
        let seg = decode(LINKTYPE_ETHERNET, &frame).unwrap();
        assert_eq!(seg.src, "10.0.0.1:1024".parse().unwrap());
        assert_eq!(seg.dst, "10.0.0.2:53".parse().unwrap());
        assert_eq!(seg.payload, b"hello");
        assert_eq!(seg.wire_len, 5);
    }

    #[test]
    fn cooked_v1_and_v2_and_raw_decode_the_same_datagram() {
        let frame = udp_frame(b"x");
        let ip = &frame[14..];
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(ip);
        let mut sll2 = vec![0x08, 0x00];
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(ip);
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(ip);
        let want = decode(LINKTYPE_ETHERNET, &frame);
        assert!(want.is_some());
        assert_eq!(decode(LINKTYPE_LINUX_SLL, &sll), want);
        assert_eq!(decode(LINKTYPE_LINUX_SLL2, &sll2), want);
        assert_eq!(decode(LINKTYPE_RAW, ip), want);
        assert_eq!(decode(LINKTYPE_NULL, &null), want);
    }

    #[test]
    fn ipv6_with_a_hop_by_hop_header_decodes_to_tcp() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x86, 0xdd]);
        // IPv6: payload 8 (hop-by-hop) + 20 (TCP) + 3, next header 0.
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 31, 0, 64]);
        let src: std::net::Ipv6Addr = "fd00::1".parse().unwrap();
        let dst: std::net::Ipv6Addr = "fd00::2".parse().unwrap();
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0, 0]);
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(b"GET");
        let seg = decode(LINKTYPE_ETHERNET, &f).unwrap();
        assert_eq!(seg.src, "[fd00::1]:40000".parse().unwrap());
        assert_eq!(seg.dst, "[fd00::2]:80".parse().unwrap());
        assert_eq!(seg.payload, b"GET");
        assert!(matches!(
            seg.transport,
            Transport::Tcp {
                seq: 1,
                flags: 0x18,
                ..
            }
        ));
    }

    #[test]
    fn truncation_shortens_payload_but_keeps_wire_length() {
        let frame = udp_frame(&[7u8; 100]);
        let seg = decode(LINKTYPE_ETHERNET, &frame[..60]).unwrap();
        assert_eq!(seg.payload.len(), 60 - 14 - 20 - 8);
        assert_eq!(seg.wire_len, 100);
    }

    #[test]
    fn every_prefix_and_garbage_is_harmless() {
        let frame = udp_frame(&[1u8; 40]);
        for lt in [0, 1, 12, 101, 108, 113, 228, 229, 276] {
            for end in 0..frame.len() {
                let _ = decode(lt, &frame[..end]);
            }
        }
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..20_000 {
            let len = (x % 120) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            for lt in [1, 101, 113, 276] {
                let _ = decode(lt, &bytes);
            }
        }
    }
}
