//! Pure decoding of captured bytes: the link layer (Ethernet with VLAN
//! tags, Linux cooked capture v1 and v2, raw IP, BSD and OpenBSD loopback,
//! NFLOG), IPv4 and IPv6 (extension headers, fragments, TSO and BIG TCP
//! packets whose length field is 0, jumbograms), then UDP, TCP and the ICMP
//! errors that answer them. Every length is checked against the bytes
//! captured; what cannot be decoded says why ([`Undecoded`]), so nothing is
//! skipped silently, and nothing panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// libpcap link-layer types (LINKTYPE_*) this module understands.
pub const LINKTYPE_NULL: u32 = 0;
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_LOOP: u32 = 108;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_IPV4: u32 = 228;
pub const LINKTYPE_IPV6: u32 = 229;
pub const LINKTYPE_NFLOG: u32 = 239;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;
/// DLT_RAW as some BSDs number it in live captures.
const DLT_RAW_BSD: [u32; 2] = [12, 14];

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;
/// The hop-by-hop option that carries a jumbogram's length (RFC 2675).
const OPTION_JUMBO: u8 = 0xc2;

/// TCP header flags, as on the wire.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// What one captured packet is, as far as the analysis is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A UDP datagram or TCP segment.
    Segment(Segment<'a>),
    /// A piece of a fragmented IP datagram: reassemble before decoding.
    Fragment(Fragment<'a>),
    /// An ICMP error about a UDP or TCP packet (port unreachable, ...).
    IcmpError(IcmpError),
    /// Decoded, but not something the analysis looks at (ARP, ICMP echo, ...).
    Other(Other),
    /// Could not be decoded, and why.
    Undecoded(Undecoded),
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

/// One fragment of an IPv4 or IPv6 datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4's 16-bit identification or IPv6's 32-bit one.
    pub id: u32,
    /// The protocol of the reassembled payload (IPv6: the header that
    /// follows the fragment header).
    pub protocol: u8,
    /// Byte offset of this piece in the reassembled payload.
    pub offset: usize,
    pub more: bool,
    /// The captured bytes of this piece.
    pub payload: &'a [u8],
    /// Its length on the wire (more than `payload` when cut by snaplen).
    pub wire_len: usize,
}

/// An ICMP or ICMPv6 error, with the flow of the packet it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    /// Who sent the error (the host itself or a router on the way).
    pub from: IpAddr,
    /// What it says, as tcpdump words it.
    pub reason: &'static str,
    /// The protocol of the packet it answers (TCP or UDP).
    pub protocol: u8,
    /// The answered packet's source and destination.
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// Packets decoded but not analysed, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Other {
    /// A non-IP frame (ARP, LLDP, ...), by ethertype.
    Ethertype(u16),
    /// An 802.3 frame with an LLC header instead of an ethertype (STP, ...).
    Llc,
    /// An IP protocol other than TCP and UDP (GRE, ESP, VRRP, ...).
    IpProtocol(u8),
    /// ICMP or ICMPv6 other than the errors above (echo, neighbour discovery).
    Icmp,
}

/// Why a packet could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Undecoded {
    /// A link-layer type this decoder does not know.
    LinkType(u32),
    /// The bytes end inside a header (snaplen, or a broken packet).
    Truncated(Layer),
    /// A header that cannot be right: wrong version, impossible lengths.
    Malformed(Layer),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    Link,
    Ipv4,
    Ipv6,
    Udp,
    Tcp,
}

impl Undecoded {
    /// A stable key for the evidence.
    pub fn key(self) -> String {
        match self {
            Undecoded::LinkType(lt) => format!("link-type-{lt}"),
            Undecoded::Truncated(layer) => format!("truncated-{}", layer.name()),
            Undecoded::Malformed(layer) => format!("malformed-{}", layer.name()),
        }
    }

    /// For people.
    pub fn describe(self) -> String {
        match self {
            Undecoded::LinkType(lt) => format!("link type {} not supported", linktype_name(lt)),
            Undecoded::Truncated(layer) => format!("{} header cut short", layer.title()),
            Undecoded::Malformed(layer) => format!("malformed {} header", layer.title()),
        }
    }
}

impl Layer {
    fn name(self) -> &'static str {
        match self {
            Layer::Link => "link",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Udp => "udp",
            Layer::Tcp => "tcp",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Layer::Link => "link-layer",
            Layer::Ipv4 => "IPv4",
            Layer::Ipv6 => "IPv6",
            Layer::Udp => "UDP",
            Layer::Tcp => "TCP",
        }
    }
}

impl Other {
    pub fn describe(self) -> String {
        match self {
            Other::Ethertype(0x0806) => "ARP".to_string(),
            Other::Ethertype(0x88cc) => "LLDP".to_string(),
            Other::Ethertype(t) => format!("ethertype 0x{t:04x}"),
            Other::Llc => "802.3 LLC".to_string(),
            Other::IpProtocol(p) => format!("IP protocol {p}"),
            Other::Icmp => "ICMP (not errors)".to_string(),
        }
    }
}

/// The link type's name as libpcap spells it, with its number.
pub fn linktype_name(linktype: u32) -> String {
    let name = match linktype {
        LINKTYPE_NULL => "NULL",
        LINKTYPE_ETHERNET => "EN10MB",
        LINKTYPE_RAW => "RAW",
        LINKTYPE_LOOP => "LOOP",
        LINKTYPE_LINUX_SLL => "LINUX_SLL",
        LINKTYPE_IPV4 => "IPV4",
        LINKTYPE_IPV6 => "IPV6",
        LINKTYPE_NFLOG => "NFLOG",
        LINKTYPE_LINUX_SLL2 => "LINUX_SLL2",
        9 => "PPP",
        105 => "IEEE802_11",
        127 => "IEEE802_11_RADIOTAP",
        147..=162 => "USER",
        _ => return format!("{linktype}"),
    };
    format!("{name} ({linktype})")
}

/// Decodes one captured packet of `linktype`; `orig_len` is its length on
/// the wire (the pcap record's), which TSO packets need.
pub fn decode(linktype: u32, data: &[u8], orig_len: u32) -> Decoded<'_> {
    let (ethertype, ip) = match link(linktype, data) {
        Ok(found) => found,
        Err(why) => return why,
    };
    // The IP packet's length on the wire: the record's length less the
    // link-layer bytes before it.
    let link_len = data.len() - ip.len();
    let ip_wire = (orig_len as usize).max(data.len()) - link_len;
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(ip, ip_wire),
        ETHERTYPE_IPV6 => ipv6(ip, ip_wire),
        t if t < 0x0600 => Decoded::Other(Other::Llc),
        t => Decoded::Other(Other::Ethertype(t)),
    }
}

/// The IP source and destination of a packet, whatever it carries: what a
/// listing shows for ICMP and other protocols, as tcpdump does.
pub fn ip_addresses(linktype: u32, data: &[u8]) -> Option<(IpAddr, IpAddr)> {
    let (ethertype, ip) = link(linktype, data).ok()?;
    let at = |from: usize, to: usize| ip.get(from..to);
    match ethertype {
        ETHERTYPE_IPV4 => {
            let src: [u8; 4] = at(12, 16)?.try_into().ok()?;
            let dst: [u8; 4] = at(16, 20)?.try_into().ok()?;
            Some((src.into(), dst.into()))
        }
        ETHERTYPE_IPV6 => {
            let src: [u8; 16] = at(8, 24)?.try_into().ok()?;
            let dst: [u8; 16] = at(24, 40)?.try_into().ok()?;
            Some((src.into(), dst.into()))
        }
        _ => None,
    }
}

/// Strips the link layer: the ethertype of what follows, and its bytes.
fn link(linktype: u32, data: &[u8]) -> Result<(u16, &[u8]), Decoded<'_>> {
    let short = Decoded::Undecoded(Undecoded::Truncated(Layer::Link));
    let found = match linktype {
        LINKTYPE_ETHERNET => {
            let mut ethertype = be16(data, 12).ok_or(short.clone())?;
            let mut offset = 14;
            // 802.1Q / 802.1ad tags, possibly stacked (QinQ).
            while ETHERTYPE_VLAN.contains(&ethertype) {
                ethertype = be16(data, offset + 2).ok_or(short.clone())?;
                offset += 4;
            }
            data.get(offset..).map(|rest| (ethertype, rest))
        }
        LINKTYPE_LINUX_SLL => be16(data, 14).zip(data.get(16..)),
        LINKTYPE_LINUX_SLL2 => be16(data, 0).zip(data.get(20..)),
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            let family: [u8; 4] = data
                .get(..4)
                .ok_or(short.clone())?
                .try_into()
                .unwrap_or_default();
            let family = if linktype == LINKTYPE_LOOP {
                u32::from_be_bytes(family)
            } else {
                // DLT_NULL stores the family in the capturing host's byte
                // order; the family numbers are small, so either order tells.
                let le = u32::from_le_bytes(family);
                if le < 0x1_0000 {
                    le
                } else {
                    u32::from_be_bytes(family)
                }
            };
            // AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24, 28 or 30 (BSDs).
            let ethertype = match family {
                2 => ETHERTYPE_IPV4,
                10 | 24 | 28 | 30 => ETHERTYPE_IPV6,
                _ => return Err(Decoded::Undecoded(Undecoded::Malformed(Layer::Link))),
            };
            data.get(4..).map(|rest| (ethertype, rest))
        }
        LINKTYPE_NFLOG => return nflog(data),
        LINKTYPE_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 => return raw_ip(data),
        lt if DLT_RAW_BSD.contains(&lt) => return raw_ip(data),
        lt => return Err(Decoded::Undecoded(Undecoded::LinkType(lt))),
    };
    found.ok_or(short)
}

fn raw_ip(data: &[u8]) -> Result<(u16, &[u8]), Decoded<'_>> {
    match data.first().map(|b| b >> 4) {
        Some(4) => Ok((ETHERTYPE_IPV4, data)),
        Some(6) => Ok((ETHERTYPE_IPV6, data)),
        Some(_) => Err(Decoded::Undecoded(Undecoded::Malformed(Layer::Link))),
        None => Err(Decoded::Undecoded(Undecoded::Truncated(Layer::Link))),
    }
}

/// NFLOG (`tcpdump -i nflog:N`): a 4-byte header (address family, version,
/// group), then TLVs whose length and type are in the capturing host's
/// byte order; the packet is the NFULA_PAYLOAD TLV (type 9).
fn nflog(data: &[u8]) -> Result<(u16, &[u8]), Decoded<'_>> {
    const NFULA_PAYLOAD: u16 = 9;
    let short = || Decoded::Undecoded(Undecoded::Truncated(Layer::Link));
    let family = *data.first().ok_or_else(short)?;
    let ethertype = match family {
        2 => ETHERTYPE_IPV4,
        10 => ETHERTYPE_IPV6,
        _ => return Err(Decoded::Undecoded(Undecoded::Malformed(Layer::Link))),
    };
    let mut rest = data.get(4..).ok_or_else(short)?;
    while rest.len() >= 4 {
        // The order is the host's: a length that fits tells which.
        let le = u16::from_le_bytes([rest[0], rest[1]]);
        let be = u16::from_be_bytes([rest[0], rest[1]]);
        let (len, kind) = if (4..=rest.len() as u16 + 3).contains(&le) {
            (le, u16::from_le_bytes([rest[2], rest[3]]))
        } else {
            (be, u16::from_be_bytes([rest[2], rest[3]]))
        };
        let len = usize::from(len);
        if len < 4 {
            return Err(Decoded::Undecoded(Undecoded::Malformed(Layer::Link)));
        }
        // The nested-attribute bit is not used for the payload.
        if kind & 0x7fff == NFULA_PAYLOAD {
            let payload = rest.get(4..len).unwrap_or(&rest[4..]);
            return Ok((ethertype, payload));
        }
        rest = rest.get((len + 3) & !3..).unwrap_or_default();
    }
    Err(short())
}

fn ipv4(data: &[u8], ip_wire: usize) -> Decoded<'_> {
    let Some(header) = data.get(..20) else {
        return Decoded::Undecoded(Undecoded::Truncated(Layer::Ipv4));
    };
    let header_len = usize::from(header[0] & 0x0f) * 4;
    if header[0] >> 4 != 4 || header_len < 20 {
        return Decoded::Undecoded(Undecoded::Malformed(Layer::Ipv4));
    }
    if data.len() < header_len {
        return Decoded::Undecoded(Undecoded::Truncated(Layer::Ipv4));
    }
    let total_len = match usize::from(u16::from_be_bytes([header[2], header[3]])) {
        // TSO and BIG TCP: the kernel hands the packet to the capture before
        // the NIC splits it, with the length field 0 (or wrong); the
        // record's length is the packet's.
        0 => ip_wire,
        n if n < header_len => return Decoded::Undecoded(Undecoded::Malformed(Layer::Ipv4)),
        n => n,
    };
    let src = IpAddr::V4(Ipv4Addr::new(
        header[12], header[13], header[14], header[15],
    ));
    let dst = IpAddr::V4(Ipv4Addr::new(
        header[16], header[17], header[18], header[19],
    ));
    let protocol = header[9];
    let payload = &data[header_len..total_len.min(data.len())];
    let wire_len = total_len - header_len;
    let frag = u16::from_be_bytes([header[6], header[7]]);
    let offset = usize::from(frag & 0x1fff) * 8;
    let more = frag & 0x2000 != 0;
    if offset != 0 || more {
        return Decoded::Fragment(Fragment {
            src,
            dst,
            id: u32::from(u16::from_be_bytes([header[4], header[5]])),
            protocol,
            offset,
            more,
            payload,
            wire_len,
        });
    }
    transport(protocol, src, dst, payload, wire_len)
}

fn ipv6(data: &[u8], ip_wire: usize) -> Decoded<'_> {
    let Some(header) = data.get(..40) else {
        return Decoded::Undecoded(Undecoded::Truncated(Layer::Ipv6));
    };
    if header[0] >> 4 != 6 {
        return Decoded::Undecoded(Undecoded::Malformed(Layer::Ipv6));
    }
    let src = IpAddr::V6(Ipv6Addr::from(
        <[u8; 16]>::try_from(&header[8..24]).unwrap_or_default(),
    ));
    let dst = IpAddr::V6(Ipv6Addr::from(
        <[u8; 16]>::try_from(&header[24..40]).unwrap_or_default(),
    ));
    let next = header[6];
    let mut wire_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    if wire_len == 0 && next != 59 {
        // A jumbogram's length is in its hop-by-hop header; without one,
        // a BIG TCP or TSO packet's is the record's.
        wire_len = jumbo_length(&data[40..]).unwrap_or_else(|| ip_wire.saturating_sub(40));
    }
    let payload = &data[40..(40 + wire_len).min(data.len())];
    after_ipv6_header(next, src, dst, payload, wire_len)
}

/// The length in a jumbo payload option, if the hop-by-hop header has one.
fn jumbo_length(hop_by_hop: &[u8]) -> Option<usize> {
    let len = (usize::from(*hop_by_hop.get(1)?) + 1) * 8;
    let mut options = hop_by_hop.get(2..len)?;
    while let Some(&kind) = options.first() {
        if kind == 0 {
            options = &options[1..];
            continue;
        }
        let opt_len = usize::from(*options.get(1)?);
        if kind == OPTION_JUMBO && opt_len == 4 {
            let v = options.get(2..6)?;
            // The jumbo length counts everything after the IPv6 header.
            return Some(u32::from_be_bytes(v.try_into().ok()?) as usize);
        }
        options = options.get(2 + opt_len..)?;
    }
    None
}

/// Walks IPv6 extension headers from `next` to the transport header (or a
/// fragment header).
fn after_ipv6_header<'a>(
    mut next: u8,
    src: IpAddr,
    dst: IpAddr,
    mut rest: &'a [u8],
    mut wire_len: usize,
) -> Decoded<'a> {
    let short = Decoded::Undecoded(Undecoded::Truncated(Layer::Ipv6));
    loop {
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AH => {
                let (Some(&following), Some(&units)) = (rest.first(), rest.get(1)) else {
                    return short;
                };
                let len = if next == IPV6_AH {
                    (usize::from(units) + 2) * 4
                } else {
                    (usize::from(units) + 1) * 8
                };
                let (Some(after), Some(wire)) = (rest.get(len..), wire_len.checked_sub(len)) else {
                    return short;
                };
                next = following;
                rest = after;
                wire_len = wire;
            }
            IPV6_FRAGMENT => {
                let Some(header) = rest.get(..8) else {
                    return short;
                };
                let Some(wire) = wire_len.checked_sub(8) else {
                    return Decoded::Undecoded(Undecoded::Malformed(Layer::Ipv6));
                };
                let field = u16::from_be_bytes([header[2], header[3]]);
                let offset = usize::from(field & 0xfff8);
                let more = field & 1 != 0;
                rest = &rest[8..];
                wire_len = wire;
                next = header[0];
                if offset == 0 && !more {
                    // An atomic fragment: the whole datagram in one piece.
                    continue;
                }
                return Decoded::Fragment(Fragment {
                    src,
                    dst,
                    id: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
                    protocol: next,
                    offset,
                    more,
                    payload: rest,
                    wire_len,
                });
            }
            _ => return transport(next, src, dst, rest, wire_len),
        }
    }
}

/// Decodes a datagram put back together from its fragments.
pub fn reassembled(protocol: u8, src: IpAddr, dst: IpAddr, payload: &[u8]) -> Decoded<'_> {
    match (src, protocol) {
        (IpAddr::V6(_), _) => after_ipv6_header(protocol, src, dst, payload, payload.len()),
        _ => transport(protocol, src, dst, payload, payload.len()),
    }
}

fn transport(protocol: u8, src: IpAddr, dst: IpAddr, data: &[u8], wire_len: usize) -> Decoded<'_> {
    match protocol {
        PROTO_UDP => {
            let Some(header) = data.get(..8) else {
                return Decoded::Undecoded(Undecoded::Truncated(Layer::Udp));
            };
            let udp_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
            // The UDP length bounds the payload (it may claim less than the
            // IP packet carries); 0 in a jumbogram means "see IP".
            let wire = match udp_len {
                0 if wire_len > 0xffff => wire_len - 8,
                n if n < 8 => return Decoded::Undecoded(Undecoded::Malformed(Layer::Udp)),
                n => n.min(wire_len).saturating_sub(8),
            };
            Decoded::Segment(Segment {
                src: SocketAddr::new(src, u16::from_be_bytes([header[0], header[1]])),
                dst: SocketAddr::new(dst, u16::from_be_bytes([header[2], header[3]])),
                transport: Transport::Udp,
                payload: &data[8..(8 + wire).min(data.len())],
                wire_len: wire,
            })
        }
        PROTO_TCP => {
            let Some(header) = data.get(..20) else {
                return Decoded::Undecoded(Undecoded::Truncated(Layer::Tcp));
            };
            let header_len = usize::from(header[12] >> 4) * 4;
            if header_len < 20 || header_len > wire_len {
                return Decoded::Undecoded(Undecoded::Malformed(Layer::Tcp));
            }
            let be32 = |at: usize| {
                u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
            };
            Decoded::Segment(Segment {
                src: SocketAddr::new(src, u16::from_be_bytes([header[0], header[1]])),
                dst: SocketAddr::new(dst, u16::from_be_bytes([header[2], header[3]])),
                transport: Transport::Tcp {
                    seq: be32(4),
                    ack: be32(8),
                    flags: header[13],
                    window: u16::from_be_bytes([header[14], header[15]]),
                },
                // Options cut short by snaplen still leave flags and ports.
                payload: data.get(header_len..).unwrap_or_default(),
                wire_len: wire_len - header_len,
            })
        }
        PROTO_ICMP | PROTO_ICMPV6 => icmp(protocol, src, data),
        p => Decoded::Other(Other::IpProtocol(p)),
    }
}

/// ICMP destination unreachable (and ICMPv6's) and "fragmentation needed" /
/// "packet too big", with the flow of the packet they answer; other ICMP is
/// [`Other::Icmp`].
fn icmp(protocol: u8, from: IpAddr, data: &[u8]) -> Decoded<'_> {
    let (Some(&kind), Some(&code)) = (data.first(), data.get(1)) else {
        return Decoded::Other(Other::Icmp);
    };
    let reason = match (protocol, kind, code) {
        (PROTO_ICMP, 3, 0) => "net unreachable",
        (PROTO_ICMP, 3, 1) => "host unreachable",
        (PROTO_ICMP, 3, 2) => "protocol unreachable",
        (PROTO_ICMP, 3, 3) => "port unreachable",
        (PROTO_ICMP, 3, 4) => "fragmentation needed",
        (PROTO_ICMP, 3, 9 | 10 | 13) => "administratively prohibited",
        (PROTO_ICMP, 3, _) => "unreachable",
        (PROTO_ICMPV6, 1, 0) => "no route",
        (PROTO_ICMPV6, 1, 1) => "administratively prohibited",
        (PROTO_ICMPV6, 1, 3) => "address unreachable",
        (PROTO_ICMPV6, 1, 4) => "port unreachable",
        (PROTO_ICMPV6, 1, _) => "unreachable",
        (PROTO_ICMPV6, 2, _) => "packet too big",
        _ => return Decoded::Other(Other::Icmp),
    };
    let Some(inner) = data.get(8..) else {
        return Decoded::Other(Other::Icmp);
    };
    // The answered packet: its IP header and at least 8 bytes of transport.
    let quoted = match inner.first().map(|b| b >> 4) {
        Some(4) => {
            let header_len = usize::from(inner[0] & 0x0f) * 4;
            inner.get(..20).zip(inner.get(header_len..)).map(|(h, t)| {
                (
                    h[9],
                    IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
                    IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
                    t,
                )
            })
        }
        Some(6) => inner.get(..40).map(|h| {
            (
                h[6],
                IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(&h[8..24]).unwrap_or_default(),
                )),
                IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(&h[24..40]).unwrap_or_default(),
                )),
                &inner[40..],
            )
        }),
        _ => None,
    };
    match quoted {
        Some((p @ (PROTO_TCP | PROTO_UDP), src, dst, t)) if t.len() >= 4 => {
            Decoded::IcmpError(IcmpError {
                from,
                reason,
                protocol: p,
                src: SocketAddr::new(src, u16::from_be_bytes([t[0], t[1]])),
                dst: SocketAddr::new(dst, u16::from_be_bytes([t[2], t[3]])),
            })
        }
        _ => Decoded::Other(Other::Icmp),
    }
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_header(protocol: u8, payload_len: usize, frag: u16) -> Vec<u8> {
        let total = (20 + payload_len) as u16;
        let mut h = vec![0x45, 0, (total >> 8) as u8, total as u8, 0x12, 0x34];
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[64, protocol, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        h
    }

    /// An Ethernet/IPv4/UDP frame from 10.0.0.1:1024 to 10.0.0.2:53.
    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend(ipv4_header(PROTO_UDP, 8 + payload.len(), 0));
        let ulen = (8 + payload.len()) as u16;
        f.extend_from_slice(&[4, 0, 0, 53, (ulen >> 8) as u8, ulen as u8, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    fn segment(d: Decoded<'_>) -> Segment<'_> {
        match d {
            Decoded::Segment(s) => s,
            other => panic!("not a segment: {other:?}"),
        }
    }

    #[test]
    fn ethernet_ipv4_udp_decodes() {
        let frame = udp_frame(b"hello");
        let seg = segment(decode(LINKTYPE_ETHERNET, &frame, frame.len() as u32));
        assert_eq!(seg.src, "10.0.0.1:1024".parse().unwrap());
        assert_eq!(seg.dst, "10.0.0.2:53".parse().unwrap());
        assert_eq!(seg.payload, b"hello");
        assert_eq!(seg.wire_len, 5);
    }

    #[test]
    fn cooked_v1_v2_raw_null_and_nflog_decode_the_same_datagram() {
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
        // NFLOG: header, a prefix TLV (padded), then the payload TLV.
        let mut nflog = vec![2, 0, 0, 5];
        nflog.extend_from_slice(&7u16.to_le_bytes());
        nflog.extend_from_slice(&10u16.to_le_bytes());
        nflog.extend_from_slice(b"ab\0\0");
        nflog.extend_from_slice(&((4 + ip.len()) as u16).to_le_bytes());
        nflog.extend_from_slice(&9u16.to_le_bytes());
        nflog.extend_from_slice(ip);
        let want = decode(LINKTYPE_ETHERNET, &frame, frame.len() as u32);
        assert!(matches!(want, Decoded::Segment(_)));
        for (lt, bytes) in [
            (LINKTYPE_LINUX_SLL, &sll),
            (LINKTYPE_LINUX_SLL2, &sll2),
            (LINKTYPE_NULL, &null),
            (LINKTYPE_NFLOG, &nflog),
        ] {
            assert_eq!(
                decode(lt, bytes, bytes.len() as u32),
                want,
                "link type {lt}"
            );
        }
        assert_eq!(decode(LINKTYPE_RAW, ip, ip.len() as u32), want);
        assert_eq!(
            decode(147, ip, ip.len() as u32),
            Decoded::Undecoded(Undecoded::LinkType(147))
        );
    }

    #[test]
    fn ipv6_with_a_hop_by_hop_header_decodes_to_tcp() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x86, 0xdd]);
        // IPv6: payload 8 (hop-by-hop) + 20 (TCP) + 3, next header 0.
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 31, 0, 64]);
        let src: Ipv6Addr = "fd00::1".parse().unwrap();
        let dst: Ipv6Addr = "fd00::2".parse().unwrap();
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0, 0]);
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(b"GET");
        let seg = segment(decode(LINKTYPE_ETHERNET, &f, f.len() as u32));
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
    fn tso_length_zero_takes_the_records_length() {
        let mut frame = udp_frame(&[7u8; 3000]);
        frame[16] = 0;
        frame[17] = 0;
        let seg = segment(decode(LINKTYPE_ETHERNET, &frame[..200], frame.len() as u32));
        assert_eq!(seg.wire_len, 3000);
        assert_eq!(seg.payload.len(), 200 - 14 - 20 - 8);
    }

    #[test]
    fn fragments_are_handed_over_with_offset_and_protocol() {
        let mut f = ipv4_header(PROTO_UDP, 16, 0x2000);
        f.extend_from_slice(&[1u8; 16]);
        match decode(LINKTYPE_RAW, &f, f.len() as u32) {
            Decoded::Fragment(frag) => {
                assert_eq!(
                    (frag.id, frag.offset, frag.more, frag.protocol),
                    (0x1234, 0, true, 17)
                );
                assert_eq!(frag.payload.len(), 16);
            }
            other => panic!("{other:?}"),
        }
        let mut f = ipv4_header(PROTO_UDP, 8, 2);
        f.extend_from_slice(&[1u8; 8]);
        assert!(matches!(
            decode(LINKTYPE_RAW, &f, f.len() as u32),
            Decoded::Fragment(Fragment {
                offset: 16,
                more: false,
                ..
            })
        ));
    }

    #[test]
    fn port_unreachable_names_the_flow_it_answers() {
        let udp = udp_frame(b"q");
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&udp[14..14 + 28]);
        let mut f = ipv4_header(PROTO_ICMP, icmp.len(), 0);
        f.extend(icmp);
        match decode(LINKTYPE_RAW, &f, f.len() as u32) {
            Decoded::IcmpError(e) => {
                assert_eq!(e.reason, "port unreachable");
                assert_eq!(e.dst, "10.0.0.2:53".parse().unwrap());
                assert_eq!(e.protocol, PROTO_UDP);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncation_shortens_payload_but_keeps_wire_length() {
        let frame = udp_frame(&[7u8; 100]);
        let seg = segment(decode(LINKTYPE_ETHERNET, &frame[..60], frame.len() as u32));
        assert_eq!(seg.payload.len(), 60 - 14 - 20 - 8);
        assert_eq!(seg.wire_len, 100);
        assert_eq!(
            decode(LINKTYPE_ETHERNET, &frame[..30], frame.len() as u32),
            Decoded::Undecoded(Undecoded::Truncated(Layer::Ipv4))
        );
    }

    #[test]
    fn every_prefix_and_garbage_is_harmless() {
        let frame = udp_frame(&[1u8; 40]);
        for lt in [0, 1, 12, 101, 108, 113, 228, 229, 239, 276] {
            for end in 0..frame.len() {
                let _ = decode(lt, &frame[..end], frame.len() as u32);
            }
        }
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..20_000 {
            let len = (x % 120) as usize;
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            for lt in [1, 101, 113, 239, 276] {
                let _ = decode(lt, &bytes, x % 3000);
            }
            // IPv4 and IPv6 version nibbles reach the IP decoders.
            if let Some(b) = bytes.first_mut() {
                *b = if x % 2 == 0 { 0x45 } else { 0x60 };
            }
            let _ = decode(LINKTYPE_RAW, &bytes, x % 70_000);
        }
    }
}
