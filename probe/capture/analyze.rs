//! The measurement side of `--analyze`: captured packets in, evidence for
//! `capture.decode`, `capture.dns`, `capture.tcp` and
//! `capture.conntrack-invalid` out. Pure over bytes, so fixtures and random
//! input exercise exactly what a live capture runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::decode::{self, Decoded, Segment, Transport};
use super::measure_dns::{self, DnsEvidence, DnsTracker};
use super::measure_tcp::{EscapeEvidence, TcpEvidence, TcpSegment, TcpTracker};
use super::reassemble::{FragmentEvidence, Reassembler};
use super::stream::DnsStreams;

/// The memory the analysis state may take, all tables together (the
/// README's budget; each table's cap is sized from it).
pub const MEMORY_BUDGET_MIB: u64 = 64;

#[derive(Debug, Default)]
pub struct Analyzer {
    dns: DnsTracker,
    tcp: TcpTracker,
    fragments: Reassembler,
    streams: DnsStreams,
    decode: Counts,
    first_us: Option<i64>,
    last_us: i64,
}

#[derive(Debug, Default)]
struct Counts {
    packets: u64,
    tcp: u64,
    udp: u64,
    icmp_errors: u64,
    link_types: BTreeMap<u32, u64>,
    other: BTreeMap<decode::Other, u64>,
    undecoded: BTreeMap<decode::Undecoded, (u64, u64)>,
    dns_malformed: u64,
}

/// Everything the judges need.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub decode: DecodeEvidence,
    pub dns: DnsEvidence,
    pub tcp: TcpEvidence,
    pub escapes: EscapeEvidence,
}

impl Analyzer {
    /// Takes one captured packet: its link type, time, the captured bytes
    /// and its length on the wire.
    pub fn packet(&mut self, linktype: u32, ts_us: i64, data: &[u8], orig_len: u32) {
        self.decode.packets += 1;
        *self.decode.link_types.entry(linktype).or_default() += 1;
        self.first_us.get_or_insert(ts_us);
        self.dns.start(ts_us);
        self.last_us = self.last_us.max(ts_us);
        match decode::decode(linktype, data, orig_len) {
            Decoded::Segment(seg) => self.segment(ts_us, &seg),
            Decoded::Fragment(frag) => {
                if let Some(datagram) = self.fragments.add(ts_us, &frag) {
                    match decode::reassembled(
                        datagram.protocol,
                        datagram.src,
                        datagram.dst,
                        &datagram.payload,
                    ) {
                        Decoded::Segment(seg) => self.segment(ts_us, &seg),
                        Decoded::IcmpError(err) => self.icmp_error(ts_us, &err),
                        Decoded::Other(other) => *self.decode.other.entry(other).or_default() += 1,
                        Decoded::Undecoded(why) => self.undecoded(why),
                        // Fragments inside a reassembled datagram do not exist.
                        Decoded::Fragment(_) => {
                            self.undecoded(decode::Undecoded::Malformed(decode::Layer::Ipv6))
                        }
                    }
                }
                for lost in self.fragments.take_incomplete() {
                    self.dns.incomplete(lost);
                }
            }
            Decoded::IcmpError(err) => self.icmp_error(ts_us, &err),
            Decoded::Other(other) => *self.decode.other.entry(other).or_default() += 1,
            Decoded::Undecoded(why) => self.undecoded(why),
        }
    }

    fn undecoded(&mut self, why: decode::Undecoded) {
        let entry = self
            .decode
            .undecoded
            .entry(why)
            .or_insert((0, self.decode.packets));
        entry.0 += 1;
    }

    fn icmp_error(&mut self, ts_us: i64, err: &decode::IcmpError) {
        self.decode.icmp_errors += 1;
        if err.protocol == decode::PROTO_TCP {
            self.tcp.icmp_error(ts_us, err);
        } else {
            self.dns.icmp_error(ts_us, err);
        }
    }

    fn segment(&mut self, ts_us: i64, seg: &Segment<'_>) {
        let dns_ports =
            measure_dns::is_dns_port(seg.src.port()) || measure_dns::is_dns_port(seg.dst.port());
        match seg.transport {
            Transport::Udp => {
                self.decode.udp += 1;
                if dns_ports {
                    self.dns_message(ts_us, seg.src, seg.dst, seg.payload);
                }
            }
            Transport::Tcp {
                seq,
                ack,
                flags,
                window,
            } => {
                self.decode.tcp += 1;
                self.tcp.observe(TcpSegment {
                    ts_us,
                    src: seg.src,
                    dst: seg.dst,
                    seq,
                    ack,
                    flags,
                    window,
                    len: u32::try_from(seg.wire_len).unwrap_or(u32::MAX),
                });
                if dns_ports {
                    let (dns, counts) = (&mut self.dns, &mut self.decode);
                    self.streams.segment(
                        ts_us,
                        seg.src,
                        seg.dst,
                        seq,
                        flags,
                        seg.payload,
                        seg.wire_len,
                        |message| match measure_dns::parse_message(message) {
                            Some(msg) => dns.observe(ts_us, seg.src, seg.dst, &msg),
                            None => counts.dns_malformed += 1,
                        },
                    );
                }
            }
        }
    }

    fn dns_message(
        &mut self,
        ts_us: i64,
        src: std::net::SocketAddr,
        dst: std::net::SocketAddr,
        bytes: &[u8],
    ) {
        match measure_dns::parse_message(bytes) {
            Some(msg) => self.dns.observe(ts_us, src, dst, &msg),
            // An empty datagram is no DNS message at all (tshark agrees).
            None if bytes.is_empty() => {}
            None => self.decode.dns_malformed += 1,
        }
    }

    /// The evidence, as of `end_us` (when a live capture stopped); a file's
    /// end is its last packet.
    pub fn finish(mut self, end_us: Option<i64>) -> Analysis {
        let end_us = end_us.map_or(self.last_us, |e| e.max(self.last_us));
        let fragments = self.fragments.finish();
        for lost in self.fragments.take_incomplete() {
            self.dns.incomplete(lost);
        }
        let streams = self.streams.finish();
        let (tcp, escapes) = self.tcp.finish(end_us);
        let dns = self.dns.finish(end_us);
        let c = self.decode;
        let undecoded: Vec<UndecodedCount> = c
            .undecoded
            .iter()
            .map(|(why, (packets, first))| UndecodedCount {
                reason: why.key(),
                description: why.describe(),
                packets: *packets,
                first_packet: *first,
            })
            .collect();
        let decode = DecodeEvidence {
            packets: c.packets,
            duration_s: self.first_us.map_or(0.0, |f| (end_us - f) as f64 / 1e6),
            link_types: c
                .link_types
                .iter()
                .map(|(lt, n)| LinkTypeCount {
                    linktype: *lt,
                    name: decode::linktype_name(*lt),
                    packets: *n,
                })
                .collect(),
            tcp: c.tcp,
            udp: c.udp,
            icmp_errors: c.icmp_errors,
            other: c
                .other
                .iter()
                .map(|(o, n)| OtherCount {
                    protocol: o.describe(),
                    packets: *n,
                })
                .collect(),
            undecoded_total: undecoded.iter().map(|u| u.packets).sum(),
            undecoded,
            fragments,
            dns_malformed: c.dns_malformed,
            dns_tcp_gaps: streams.gaps,
            evicted: Evicted {
                dns_queries: dns.evicted_queries,
                tcp_connections: tcp.evicted_connections,
                fragmented_datagrams: 0,
                dns_tcp_streams: streams.evicted,
            },
            memory_budget_mib: MEMORY_BUDGET_MIB,
        };
        let mut decode = decode;
        decode.evicted.fragmented_datagrams = decode.fragments.evicted;
        Analysis {
            decode,
            dns,
            tcp,
            escapes,
        }
    }
}

/// Evidence of `capture.decode`: what was in the capture and what of it
/// could not be decoded, and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecodeEvidence {
    pub packets: u64,
    /// From the first packet to the end of the capture.
    pub duration_s: f64,
    pub link_types: Vec<LinkTypeCount>,
    /// Packets decoded down to TCP or UDP (fragments counted once
    /// reassembled).
    pub tcp: u64,
    pub udp: u64,
    /// ICMP errors about TCP or UDP packets (port unreachable, ...).
    pub icmp_errors: u64,
    /// Decoded, not analysed (ARP, other IP protocols, ICMP echo, ...).
    pub other: Vec<OtherCount>,
    pub undecoded_total: u64,
    pub undecoded: Vec<UndecodedCount>,
    pub fragments: FragmentEvidence,
    /// DNS payloads (port 53) that did not parse as DNS.
    pub dns_malformed: u64,
    /// DNS-over-TCP directions abandoned at a gap (a segment the capture
    /// missed, or cut by snaplen).
    pub dns_tcp_gaps: u64,
    pub evicted: Evicted,
    pub memory_budget_mib: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkTypeCount {
    pub linktype: u32,
    pub name: String,
    pub packets: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OtherCount {
    pub protocol: String,
    pub packets: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UndecodedCount {
    /// A stable key (`link-type-147`, `truncated-ipv4`, ...).
    pub reason: String,
    pub description: String,
    pub packets: u64,
    /// The first such packet's number (1-based, as Wireshark counts).
    pub first_packet: u64,
}

/// State dropped early to stay within the memory budget.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evicted {
    pub dns_queries: u64,
    pub tcp_connections: u64,
    pub fragmented_datagrams: u64,
    pub dns_tcp_streams: u64,
}

impl Evicted {
    pub fn total(&self) -> u64 {
        self.dns_queries + self.tcp_connections + self.fragmented_datagrams + self.dns_tcp_streams
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_packets_never_panic() {
        let mut a = Analyzer::default();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Random bytes behind valid Ethernet/IPv4/UDP-53, TCP-53 and
        // fragment headers reach the DNS parser, the stream reassembly and
        // the fragment table; fully random bytes exercise the link decoders.
        let udp: [u8; 42] = [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0x45, 0, 0x05, 0xdc, 0, 0, 0, 0, 64, 17, 0,
            0, 10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0, 53, 0x05, 0xc8, 0, 0,
        ];
        let tcp: [u8; 54] = [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0x45, 0, 0x05, 0xdc, 0, 0, 0, 0, 64, 6, 0, 0,
            10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0, 53, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 1, 0,
            0, 0, 0, 0,
        ];
        let frag: [u8; 34] = [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0x45, 0, 0x05, 0xdc, 0, 7, 0x20, 0, 64, 17,
            0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        for i in 0..30_000i64 {
            let len = (next() % 200) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            match i % 4 {
                0 => drop(bytes.splice(0..0, udp)),
                1 => drop(bytes.splice(0..0, tcp)),
                2 => drop(bytes.splice(0..0, frag)),
                _ => {}
            }
            for lt in [1, 101, 113, 239, 276, 0] {
                a.packet(lt, i, &bytes, (next() % 3000) as u32);
            }
        }
        let analysis = a.finish(None);
        assert!(analysis.decode.packets > 0);
    }
}
