//! One line per packet, as tcpdump prints them, for a capture that neither
//! writes a file nor analyses; with `-o json`, one JSON object per line.

use serde::Serialize;

use super::decode::{self, flags, Decoded, Transport};

/// One packet of the listing. As JSON (`-o json`, one object a line):
/// `ts_us` microseconds since the Unix epoch; `protocol` `tcp`, `udp`,
/// `icmp`, `ip-fragment`, `ip` (another IP protocol), or the frame's kind
/// (`arp`, ...) when it carries no IP; `src`/`dst` ADDR:PORT for TCP and
/// UDP, ADDR otherwise, absent when not IP; `flags` TCP's flags as tcpdump
/// prints them (`S`, `F`, `R`, `P`, `.`); `length` the payload's bytes on
/// the wire for TCP and UDP, the packet's otherwise; `info` what else the
/// text line says (the ICMP error, the fragment's offset, why a packet was
/// not decoded).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub ts_us: i64,
    pub protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
    pub length: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
}

pub fn summarize(linktype: u32, ts_us: i64, data: &[u8], wire_len: u32) -> Summary {
    let addresses = decode::ip_addresses(linktype, data);
    let mut summary = Summary {
        ts_us,
        protocol: "ip",
        src: addresses.map(|(src, _)| src.to_string()),
        dst: addresses.map(|(_, dst)| dst.to_string()),
        flags: None,
        length: u64::from(wire_len),
        info: None,
    };
    match decode::decode(linktype, data, wire_len) {
        Decoded::Segment(seg) => {
            summary.src = Some(seg.src.to_string());
            summary.dst = Some(seg.dst.to_string());
            summary.length = seg.wire_len as u64;
            match seg.transport {
                Transport::Udp => summary.protocol = "udp",
                Transport::Tcp { flags: f, .. } => {
                    summary.protocol = "tcp";
                    summary.flags = Some(
                        [
                            (flags::SYN, 'S'),
                            (flags::FIN, 'F'),
                            (flags::RST, 'R'),
                            (flags::PSH, 'P'),
                            (flags::ACK, '.'),
                        ]
                        .into_iter()
                        .filter(|(bit, _)| f & bit != 0)
                        .map(|(_, name)| name)
                        .collect(),
                    );
                }
            }
        }
        Decoded::Fragment(f) => {
            summary.protocol = "ip-fragment";
            summary.src = Some(f.src.to_string());
            summary.dst = Some(f.dst.to_string());
            summary.length = f.wire_len as u64;
            summary.info = Some(format!("fragment at offset {}", f.offset));
        }
        Decoded::IcmpError(e) => {
            summary.protocol = "icmp";
            summary.src = Some(e.from.to_string());
            let about = if e.protocol == decode::PROTO_TCP {
                "TCP"
            } else {
                "UDP"
            };
            summary.info = Some(format!("{} for {about} {} > {}", e.reason, e.src, e.dst));
        }
        Decoded::Other(decode::Other::Icmp) => summary.protocol = "icmp",
        Decoded::Other(other @ decode::Other::IpProtocol(_)) => {
            summary.info = Some(other.describe());
        }
        Decoded::Other(other) => {
            summary.protocol = match other {
                decode::Other::Ethertype(0x0806) => "arp",
                decode::Other::Ethertype(0x88cc) => "lldp",
                decode::Other::Llc => "llc",
                _ => "other",
            };
            summary.info = Some(other.describe());
        }
        Decoded::Undecoded(why) => {
            summary.protocol = "undecoded";
            summary.info = Some(format!("not decoded: {}", why.describe()));
        }
    }
    summary
}

impl Summary {
    /// The line as tcpdump would print it (time of day in UTC).
    pub fn text(&self) -> String {
        let secs = self.ts_us.div_euclid(1_000_000);
        let micros = self.ts_us.rem_euclid(1_000_000);
        let day = secs.rem_euclid(86_400);
        let clock = format!(
            "{:02}:{:02}:{:02}.{micros:06}",
            day / 3600,
            day % 3600 / 60,
            day % 60
        );
        let flow = match (&self.src, &self.dst) {
            (Some(src), Some(dst)) => format!("{src} > {dst}"),
            _ => String::new(),
        };
        let info = self.info.as_deref().unwrap_or_default();
        let length = self.length;
        match self.protocol {
            "tcp" => format!(
                "{clock} TCP {flow}: [{}] length {length}\n",
                self.flags.as_deref().unwrap_or_default()
            ),
            "udp" => format!("{clock} UDP {flow}: length {length}\n"),
            "ip-fragment" => format!("{clock} IP {flow}: {info}, length {length}\n"),
            "icmp" if info.is_empty() => format!("{clock} IP {flow}: ICMP length {length}\n"),
            "icmp" => format!("{clock} ICMP {flow}: {info}\n"),
            "ip" => format!("{clock} IP {flow}: {info} length {length}\n"),
            "undecoded" => format!("{clock} length {length} ({info})\n"),
            _ => format!("{clock} {info} length {length}\n"),
        }
    }

    /// The JSON line of `-o json`.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default() + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(linktype: u32, ts_us: i64, data: &[u8], wire_len: u32) -> String {
        summarize(linktype, ts_us, data, wire_len).text()
    }

    #[test]
    fn non_ip_is_named_not_decoded() {
        let line1 = line(1, 3_723_000_001, &[0u8; 20], 60);
        assert_eq!(line1, "01:02:03.000001 802.3 LLC length 60\n");
        let line2 = line(147, 0, &[0u8; 20], 60);
        assert_eq!(
            line2,
            "00:00:00.000000 length 60 (not decoded: link type USER (147) not supported)\n"
        );
    }

    /// An IPv4 ICMP echo request from 10.0.0.1 to 10.0.0.2 (raw IP).
    fn echo() -> Vec<u8> {
        let mut packet = vec![
            0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        packet.extend([8, 0, 0, 0, 0, 1, 0, 1]);
        packet
    }

    #[test]
    fn icmp_shows_its_addresses_as_tcpdump_does() {
        let packet = echo();
        assert_eq!(
            line(101, 0, &packet, 28),
            "00:00:00.000000 IP 10.0.0.1 > 10.0.0.2: ICMP length 28\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&summarize(101, 5, &packet, 28).json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"ts_us": 5, "protocol": "icmp", "src": "10.0.0.1", "dst": "10.0.0.2", "length": 28})
        );
    }
}
