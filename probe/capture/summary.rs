//! One line per packet, as tcpdump prints them, for a capture that neither
//! writes a file nor analyses.

use super::decode::{self, flags, Decoded, Transport};

pub fn line(linktype: u32, ts_us: i64, data: &[u8], wire_len: u32) -> String {
    let secs = ts_us.div_euclid(1_000_000);
    let micros = ts_us.rem_euclid(1_000_000);
    let day = secs.rem_euclid(86_400);
    let clock = format!(
        "{:02}:{:02}:{:02}.{micros:06}",
        day / 3600,
        day % 3600 / 60,
        day % 60
    );
    let seg = match decode::decode(linktype, data, wire_len) {
        Decoded::Segment(seg) => seg,
        Decoded::Fragment(f) => {
            return format!(
                "{clock} IP {} > {}: fragment at offset {}, length {}\n",
                f.src, f.dst, f.offset, f.wire_len
            )
        }
        Decoded::IcmpError(e) => {
            return format!(
                "{clock} ICMP {} {}: {} for {} > {}\n",
                e.from,
                e.reason,
                if e.protocol == decode::PROTO_TCP {
                    "TCP"
                } else {
                    "UDP"
                },
                e.src,
                e.dst
            )
        }
        Decoded::Other(other) => {
            return format!("{clock} {} length {wire_len}\n", other.describe())
        }
        Decoded::Undecoded(why) => {
            return format!(
                "{clock} length {wire_len} (not decoded: {})\n",
                why.describe()
            )
        }
    };
    match seg.transport {
        Transport::Udp => format!(
            "{clock} UDP {} > {}: length {}\n",
            seg.src, seg.dst, seg.wire_len
        ),
        Transport::Tcp { flags: f, .. } => {
            let mut names = String::new();
            for (bit, name) in [
                (flags::SYN, 'S'),
                (flags::FIN, 'F'),
                (flags::RST, 'R'),
                (flags::PSH, 'P'),
                (flags::ACK, '.'),
            ] {
                if f & bit != 0 {
                    names.push(name);
                }
            }
            format!(
                "{clock} TCP {} > {}: [{names}] length {}\n",
                seg.src, seg.dst, seg.wire_len
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn non_ip_is_named_not_decoded() {
        let line = super::line(1, 3_723_000_001, &[0u8; 20], 60);
        assert_eq!(line, "01:02:03.000001 802.3 LLC length 60\n");
        let line = super::line(147, 0, &[0u8; 20], 60);
        assert_eq!(
            line,
            "00:00:00.000000 length 60 (not decoded: link type USER (147) not supported)\n"
        );
    }
}
