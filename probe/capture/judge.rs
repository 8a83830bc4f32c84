//! Judges for what a capture saw: evidence in, checks out, no I/O.
//! `capture.decode` says what was in the capture and what could not be
//! decoded; `capture.dns`, `capture.tcp` and `capture.conntrack-invalid`
//! live in their own files.

use crate::report::{Check, Status};

use super::analyze::{Analysis, DecodeEvidence};

pub use super::judge_dns::{judge_dns, DNS_ID};
pub use super::judge_tcp::{judge_conntrack_invalid, judge_tcp, INVALID_ID, TCP_ID};

pub const DECODE_ID: &str = "capture.decode";
const DECODE_TITLE: &str = "Packets decoded";

/// Every capture check, in report order.
pub fn judge_all(analysis: &Analysis) -> Vec<Check> {
    let undecoded = analysis.decode.undecoded_total;
    vec![
        judge_decode(&analysis.decode),
        judge_dns(&analysis.dns, undecoded),
        judge_tcp(&analysis.tcp, undecoded),
        judge_conntrack_invalid(&analysis.escapes),
    ]
}

/// Warns when packets could not be decoded, fragments never completed or
/// state was evicted: the other checks then saw only part of the capture.
pub fn judge_decode(ev: &DecodeEvidence) -> Check {
    let mut details = Vec::new();
    let link_types: Vec<String> = ev
        .link_types
        .iter()
        .map(|l| format!("{} {}", l.packets, l.name))
        .collect();
    details.push(format!("link types: {}", link_types.join(", ")));
    if !ev.other.is_empty() {
        let other: Vec<String> = ev
            .other
            .iter()
            .map(|o| format!("{} {}", o.packets, o.protocol))
            .collect();
        details.push(format!("not analysed: {}", other.join(", ")));
    }
    for u in &ev.undecoded {
        details.push(format!(
            "undecoded: {} packets, {} (first: packet {})",
            u.packets, u.description, u.first_packet
        ));
    }
    let f = &ev.fragments;
    if f.fragments > 0 {
        details.push(format!(
            "IP fragments: {} in {} reassembled datagrams, {} incomplete",
            f.fragments, f.reassembled, f.incomplete
        ));
    }
    for lost in f.incomplete_listed.iter().take(5) {
        details.push(format!(
            "incomplete datagram {} -> {} ({} fragments, {} bytes): {}",
            lost.src, lost.dst, lost.fragments, lost.bytes, lost.reason
        ));
    }

    let mut problems = Vec::new();
    if ev.undecoded_total > 0 {
        let reasons: Vec<&str> = ev
            .undecoded
            .iter()
            .map(|u| u.description.as_str())
            .collect();
        problems.push(format!(
            "{} of {} packets could not be decoded ({})",
            ev.undecoded_total,
            ev.packets,
            reasons.join(", ")
        ));
    }
    if f.incomplete > 0 {
        problems.push(format!(
            "{} never completed",
            plural(f.incomplete, "fragmented datagram", "fragmented datagrams")
        ));
    }
    if ev.dns_malformed > 0 {
        problems.push(format!(
            "{} on port 53 did not parse as DNS",
            plural(ev.dns_malformed, "message", "messages")
        ));
    }
    if ev.dns_tcp_gaps > 0 {
        problems.push(format!(
            "{} missed segments",
            plural(
                ev.dns_tcp_gaps,
                "DNS-over-TCP stream",
                "DNS-over-TCP streams"
            )
        ));
    }
    if ev.evicted.total() > 0 {
        problems.push(format!(
            "the analysis kept within its {} MiB budget by finalising state early ({} DNS queries, {} TCP connections, {} fragmented datagrams, {} DNS-over-TCP streams still open)",
            ev.memory_budget_mib,
            ev.evicted.dns_queries,
            ev.evicted.tcp_connections,
            ev.evicted.fragmented_datagrams,
            ev.evicted.dns_tcp_streams
        ));
    }
    let counts = format!(
        "{} over {:.1} s: {} TCP, {} UDP, {}",
        plural(ev.packets, "packet", "packets"),
        ev.duration_s,
        ev.tcp,
        ev.udp,
        plural(ev.icmp_errors, "ICMP error", "ICMP errors")
    );
    if problems.is_empty() {
        let summary = if ev.packets == 0 {
            "no packets".to_string()
        } else {
            format!("{counts}; every packet decoded")
        };
        return Check::new(DECODE_ID, DECODE_TITLE, Status::Pass, summary, ev)
            .with_details(details);
    }
    let mut remedy = Vec::new();
    if ev
        .undecoded
        .iter()
        .any(|u| u.reason.starts_with("link-type"))
    {
        remedy.push("capture on an interface with a link type podprobe decodes (Ethernet, Linux cooked v1/v2, raw IP, loopback, NFLOG), e.g. `-i eth0` or `-i any`".to_string());
    }
    if ev
        .undecoded
        .iter()
        .any(|u| u.reason.starts_with("truncated"))
        || f.incomplete_listed
            .iter()
            .any(|l| l.reason.contains("snapshot"))
    {
        remedy.push(
            "headers were cut short: capture with the default snaplen (262144), not `-s 96`"
                .to_string(),
        );
    }
    if ev.evicted.total() > 0 {
        remedy.push("for a capture this busy, narrow it with a filter (`-f 'port 53'`) so the analysis follows every flow".to_string());
    }
    Check::new(
        DECODE_ID,
        DECODE_TITLE,
        Status::Warn,
        format!("{}; {counts}", problems.join("; ")),
        ev,
    )
    .with_remedy(remedy)
    .with_details(details)
}

pub(super) fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"))
}

pub(super) fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::analyze::{LinkTypeCount, UndecodedCount};

    #[test]
    fn undecoded_packets_warn_and_say_why() {
        let mut ev = DecodeEvidence {
            packets: 10,
            tcp: 10,
            link_types: vec![LinkTypeCount {
                linktype: 1,
                name: "EN10MB (1)".into(),
                packets: 10,
            }],
            memory_budget_mib: 64,
            ..DecodeEvidence::default()
        };
        assert_eq!(judge_decode(&ev).status, Status::Pass);
        ev.undecoded = vec![UndecodedCount {
            reason: "link-type-147".into(),
            description: "link type USER (147) not supported".into(),
            packets: 3,
            first_packet: 4,
        }];
        ev.undecoded_total = 3;
        let c = judge_decode(&ev);
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.summary.starts_with(
                "3 of 10 packets could not be decoded (link type USER (147) not supported)"
            ),
            "{}",
            c.summary
        );
        assert!(c.remedy[0].contains("-i any"));
    }
}
