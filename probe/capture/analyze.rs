//! The measurement side of `--analyze`: captured packets in, `capture.dns`
//! and `capture.tcp` evidence out. Pure over bytes, so fixtures and random
//! input exercise exactly what a live capture runs.

use super::decode::{self, Transport};
use super::measure_dns::{self, DnsEvidence, DnsTracker};
use super::measure_tcp::{TcpEvidence, TcpSegment, TcpTracker};

#[derive(Debug, Default)]
pub struct Analyzer {
    dns: DnsTracker,
    tcp: TcpTracker,
}

impl Analyzer {
    /// Takes one captured packet of the given link type.
    pub fn packet(&mut self, linktype: i32, ts_us: i64, data: &[u8]) {
        let Some(seg) = decode::decode(linktype, data) else {
            return;
        };
        let dns_ports =
            measure_dns::is_dns_port(seg.src.port()) || measure_dns::is_dns_port(seg.dst.port());
        match seg.transport {
            Transport::Udp => {
                if dns_ports {
                    if let Some(msg) = measure_dns::parse_message(seg.payload) {
                        self.dns.observe(ts_us, seg.src, seg.dst, &msg);
                    }
                }
            }
            Transport::Tcp {
                seq, flags, window, ..
            } => {
                self.tcp.observe(TcpSegment {
                    ts_us,
                    src: seg.src,
                    dst: seg.dst,
                    seq,
                    flags,
                    window,
                    len: u32::try_from(seg.wire_len).unwrap_or(u32::MAX),
                });
                if dns_ports {
                    // DNS over TCP: each message carries a 2-byte length.
                    // Messages split across segments are not reassembled.
                    let mut rest = seg.payload;
                    while let Some(len) = rest.get(..2) {
                        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                        let Some(message) = rest.get(2..2 + len) else {
                            break;
                        };
                        if let Some(msg) = measure_dns::parse_message(message) {
                            self.dns.observe(ts_us, seg.src, seg.dst, &msg);
                        }
                        rest = &rest[2 + len..];
                    }
                }
            }
        }
    }

    pub fn finish(self) -> (DnsEvidence, TcpEvidence) {
        (self.dns.finish(), self.tcp.finish())
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
        // Random bytes behind a valid Ethernet/IPv4/UDP-53 header reach the
        // DNS parser; fully random bytes exercise the link decoders.
        let header: [u8; 42] = [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0x45, 0, 0x05, 0xdc, 0, 0, 0, 0, 64, 17, 0,
            0, 10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0, 53, 0x05, 0xc8, 0, 0,
        ];
        for i in 0..20_000 {
            let len = (next() % 200) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 2 == 0 {
                bytes.splice(0..0, header);
            }
            for lt in [1, 101, 113, 276, 0] {
                a.packet(lt, i, &bytes);
            }
        }
        let _ = a.finish();
    }
}
