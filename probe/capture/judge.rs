//! Judges for what a capture saw: evidence in, `capture.dns` and
//! `capture.tcp` checks out. No I/O.

use crate::report::{Check, Status};

use super::measure_dns::DnsEvidence;
use super::measure_tcp::TcpEvidence;

pub const DNS_ID: &str = "capture.dns";
pub const DNS_TITLE: &str = "DNS on the wire";
pub const TCP_ID: &str = "capture.tcp";
pub const TCP_TITLE: &str = "TCP resets and retransmissions on the wire";

/// A resend this late means the client gave up waiting for an answer.
const LATE_RETRANSMIT_MS: f64 = 1000.0;
/// glibc waits 5 s (`options timeout:`) per try; with two nameservers or
/// `attempts` it may be half that.
const RACE_GAPS_MS: [f64; 2] = [5000.0, 2500.0];

const CONNTRACK_RACE_REF: &str = "https://github.com/kubernetes/kubernetes/issues/56903";
const NDOTS_REF: &str = "https://github.com/kubernetes/dns/issues/341";

pub fn judge_dns(ev: &DnsEvidence) -> Check {
    if ev.queries == 0 && ev.responses == 0 {
        return Check::new(
            DNS_ID,
            DNS_TITLE,
            Status::Skip,
            "no DNS (port 53) in the capture",
            ev,
        );
    }
    let late: Vec<f64> = ev
        .retransmit_gaps_ms
        .iter()
        .copied()
        .filter(|&g| g >= LATE_RETRANSMIT_MS)
        .collect();
    let lost = ev.unanswered - ev.unanswered_at_end;
    let mut details = vec![format!(
        "{} queries, {} responses, {} NXDOMAIN, latency p50 {} p99 {} max {}",
        ev.queries,
        ev.responses,
        ev.nxdomain,
        ms(ev.p50_ms),
        ms(ev.p99_ms),
        ms(ev.max_ms)
    )];
    if !ev.top_names.is_empty() {
        let top: Vec<String> = ev
            .top_names
            .iter()
            .take(5)
            .map(|n| format!("{} ({})", n.name, n.queries))
            .collect();
        details.push(format!("top names: {}", top.join(", ")));
    }
    for chain in &ev.search_chains {
        details.push(format!(
            "search chain from {}: {} -> {} queries, {} NXDOMAIN, {:.1} ms ({})",
            chain.client,
            chain.base,
            chain.queries,
            chain.nxdomain,
            chain.duration_ms,
            chain.variants.join(", ")
        ));
    }

    if !late.is_empty() || lost > 0 {
        let race = late
            .iter()
            .any(|&g| RACE_GAPS_MS.iter().any(|r| (g - r).abs() <= r * 0.15));
        let mut parts = Vec::new();
        if !late.is_empty() {
            let gaps: Vec<String> = late.iter().take(5).map(|g| format!("{g:.0} ms")).collect();
            parts.push(format!(
                "{} retransmitted after {}",
                plural(late.len(), "query", "queries"),
                gaps.join(", ")
            ));
        }
        if lost > 0 {
            parts.push(format!(
                "{} never answered",
                plural(lost as usize, "query", "queries")
            ));
            let names: Vec<&str> = ev
                .unanswered_names
                .iter()
                .take(5)
                .map(String::as_str)
                .collect();
            details.push(format!("unanswered: {}", names.join(", ")));
        }
        let mut summary = parts.join("; ");
        let mut remedy = Vec::new();
        if race {
            summary.push_str(
                ": the resolver's 5 s timeout, the signature of the conntrack insert race (replies lost when A and AAAA leave one socket together)",
            );
            remedy.push("add `options single-request-reopen` to the pod's dnsConfig (glibc), so A and AAAA use separate sockets:\ndnsConfig:\n  options:\n    - name: single-request-reopen".to_string());
            remedy.push(
                "run NodeLocal DNSCache (169.254.20.10) so pod DNS does not cross conntrack DNAT"
                    .to_string(),
            );
            remedy.push("on the nodes: a kernel with the conntrack race fixes (5.0+), or kube-proxy/iptables `--random-fully`".to_string());
        } else {
            remedy.push("find where the queries or replies are lost: the DNS server's health and load, NetworkPolicy on UDP/TCP 53, conntrack on the node (`podprobe dns --race`)".to_string());
        }
        return Check::new(DNS_ID, DNS_TITLE, Status::Fail, summary, ev)
            .with_remedy(remedy)
            .with_refs(&[CONNTRACK_RACE_REF])
            .with_details(details);
    }

    if let Some(worst) = ev.search_chains.iter().max_by_key(|c| c.queries) {
        let summary = format!(
            "{}: {} took {} queries ({} NXDOMAIN) over {:.1} ms across search domains",
            plural(ev.search_chains.len(), "search chain", "search chains"),
            worst.base,
            worst.queries,
            worst.nxdomain,
            worst.duration_ms
        );
        return Check::new(DNS_ID, DNS_TITLE, Status::Warn, summary, ev)
            .with_remedy([
                format!("use the fully qualified name with a trailing dot: `{}.`", worst.base),
                "lower ndots for the pod:\ndnsConfig:\n  options:\n    - name: ndots\n      value: \"2\"".to_string(),
            ])
            .with_refs(&[NDOTS_REF])
            .with_details(details);
    }

    let mut summary = format!(
        "{} queries, all answered without retransmission (p99 {})",
        ev.queries,
        ms(ev.p99_ms)
    );
    if ev.unanswered_at_end > 0 {
        summary.push_str(&format!(
            "; {} sent in the last second may have been cut off by the end of the capture",
            ev.unanswered_at_end
        ));
    }
    Check::new(DNS_ID, DNS_TITLE, Status::Pass, summary, ev).with_details(details)
}

pub fn judge_tcp(ev: &TcpEvidence) -> Check {
    if ev.connections == 0 {
        return Check::new(TCP_ID, TCP_TITLE, Status::Skip, "no TCP in the capture", ev);
    }
    let counts = format!(
        "{} connections, {} resets, {} retransmissions, {} zero windows",
        ev.connections, ev.resets_total, ev.retransmissions, ev.zero_windows
    );
    let details: Vec<String> = ev
        .resets
        .iter()
        .take(10)
        .map(|r| {
            format!(
                "RST {} -> {} after {} bytes, idle {}{}{}",
                r.from,
                r.to,
                r.after_bytes,
                ms(r.idle_ms),
                if r.established { ", established" } else { "" },
                if r.request_after_fin {
                    ", request sent after the peer's FIN"
                } else {
                    ""
                }
            )
        })
        .collect();
    let established: Vec<_> = ev.resets.iter().filter(|r| r.established).collect();
    let Some(first) = established.first() else {
        return Check::new(TCP_ID, TCP_TITLE, Status::Pass, counts, ev).with_details(details);
    };
    let summary = format!(
        "{} reset (first by {} after {} bytes); {counts}",
        plural(
            established.len(),
            "established connection",
            "established connections"
        ),
        first.from,
        first.after_bytes
    );
    let mut remedy = Vec::new();
    if established.iter().any(|r| r.request_after_fin) {
        remedy.push("a request went out on a connection its peer had already closed (FIN, then RST): the keep-alive idle-timeout race. Run `podprobe keepalive UPSTREAM` (check keepalive.*) to compare the app's idle timeout with the proxy's, and keep the client's below the server's".to_string());
    }
    remedy.push("look at who sent each RST: the server process (crashed or closed the socket), a proxy in between, or the node (conntrack INVALID packets: check `podprobe doctor`'s conntrack counters)".to_string());
    Check::new(TCP_ID, TCP_TITLE, Status::Warn, summary, ev)
        .with_remedy(remedy)
        .with_details(details)
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.2} ms"))
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::measure_dns::{NameCount, SearchChain};
    use crate::capture::measure_tcp::Reset;

    fn dns() -> DnsEvidence {
        DnsEvidence {
            queries: 4,
            responses: 4,
            p50_ms: Some(1.0),
            p99_ms: Some(2.0),
            max_ms: Some(2.0),
            top_names: vec![NameCount {
                name: "a".into(),
                queries: 4,
            }],
            ..DnsEvidence::default()
        }
    }

    #[test]
    fn healthy_dns_passes_and_empty_skips() {
        assert_eq!(judge_dns(&dns()).status, Status::Pass);
        assert_eq!(judge_dns(&DnsEvidence::default()).status, Status::Skip);
    }

    #[test]
    fn five_second_retransmission_fails_and_names_the_race() {
        let ev = DnsEvidence {
            retransmitted: 1,
            retransmit_gaps_ms: vec![5003.0],
            ..dns()
        };
        let c = judge_dns(&ev);
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("conntrack insert race"), "{}", c.summary);
        assert!(c.remedy[0].contains("single-request-reopen"));
    }

    #[test]
    fn unanswered_fails_without_naming_the_race_unless_cut_off_at_the_end() {
        let lost = DnsEvidence {
            unanswered: 1,
            unanswered_names: vec!["x A".into()],
            ..dns()
        };
        let c = judge_dns(&lost);
        assert_eq!(c.status, Status::Fail);
        assert!(!c.summary.contains("race"));
        let cut = DnsEvidence {
            unanswered_at_end: 1,
            ..lost
        };
        assert_eq!(judge_dns(&cut).status, Status::Pass);
    }

    #[test]
    fn search_chain_warns() {
        let ev = DnsEvidence {
            search_chains: vec![SearchChain {
                client: "10.0.0.5".parse().unwrap(),
                base: "api.example.com".into(),
                variants: vec!["api.example.com.svc.cluster.local".into()],
                queries: 10,
                nxdomain: 8,
                duration_ms: 12.0,
            }],
            ..dns()
        };
        let c = judge_dns(&ev);
        assert_eq!(c.status, Status::Warn);
        assert!(c.remedy[0].contains("api.example.com."));
    }

    fn reset(established: bool, request_after_fin: bool) -> Reset {
        Reset {
            from: "10.0.0.9:80".parse().unwrap(),
            to: "10.0.0.5:4000".parse().unwrap(),
            after_bytes: 10,
            idle_ms: Some(5.0),
            established,
            request_after_fin,
        }
    }

    #[test]
    fn tcp_warns_only_on_established_resets_and_points_at_keepalive() {
        let ev = TcpEvidence {
            connections: 1,
            resets: vec![reset(false, false)],
            resets_total: 1,
            ..TcpEvidence::default()
        };
        assert_eq!(judge_tcp(&ev).status, Status::Pass);
        let ev = TcpEvidence {
            resets: vec![reset(true, true)],
            ..ev
        };
        let c = judge_tcp(&ev);
        assert_eq!(c.status, Status::Warn);
        assert!(c.remedy[0].contains("podprobe keepalive"));
        assert_eq!(judge_tcp(&TcpEvidence::default()).status, Status::Skip);
    }
}
