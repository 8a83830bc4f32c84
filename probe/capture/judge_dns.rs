//! `capture.dns`: DNS on the wire judged the way a packet analyst would.
//! The conntrack race is named only for its signature; other waits are a
//! server stall, lost fragments, an ICMP error or plain loss, each with its
//! own fix. Latency is graded per server with `dns.latency`'s thresholds.

use crate::dns::judge::{LATENCY_FAIL_MS, LATENCY_WARN_MS};
use crate::report::{Check, Status};

use super::judge::{ms, plural};
use super::measure_dns::{Cause, DnsEvidence};

pub const DNS_ID: &str = "capture.dns";
const DNS_TITLE: &str = "DNS on the wire";

const REF_RACE: &str = "https://github.com/kubernetes/kubernetes/issues/56903";
const REF_NDOTS: &str = "https://github.com/kubernetes/dns/issues/341";
const REF_NODELOCAL: &str = "https://kubernetes.io/docs/tasks/administer-cluster/nodelocaldns/";
const REF_FLAG_DAY: &str = "https://www.dnsflagday.net/2020/";

pub fn judge_dns(ev: &DnsEvidence, undecoded: u64) -> Check {
    if ev.queries == 0 && ev.responses == 0 {
        let mut summary = "no DNS (port 53) in the capture".to_string();
        if undecoded > 0 {
            summary.push_str(&format!(
                "; {} could not be decoded (see capture.decode)",
                plural(undecoded, "packet", "packets")
            ));
        }
        return Check::new(DNS_ID, DNS_TITLE, Status::Skip, summary, ev);
    }
    let mut details = vec![format!(
        "{} ({} distinct, {} resent), {}, {} NXDOMAIN, latency p50 {} p99 {} max {}",
        plural(ev.queries, "query", "queries"),
        ev.transactions,
        ev.retransmitted,
        plural(ev.responses, "response", "responses"),
        ev.nxdomain,
        ms(ev.p50_ms),
        ms(ev.p99_ms),
        ms(ev.max_ms)
    )];
    for s in &ev.servers {
        details.push(format!(
            "server {}: {}, {} answered, {} lost; p50 {} p90 {} p99 {} max {}{}",
            s.server,
            plural(s.queries, "query", "queries"),
            s.answered,
            s.lost,
            ms(s.p50_ms),
            ms(s.p90_ms),
            ms(s.p99_ms),
            ms(s.max_ms),
            if s.sampled { " (sampled)" } else { "" }
        ));
        for stall in &s.stalls {
            details.push(format!(
                "stall: {} answered nothing for {:.0} ms from {:.3} s while {} queries were sent to it{}",
                s.server,
                stall.duration_ms,
                stall.at_s,
                stall.queries,
                if stall.until_end { ", until the capture ended" } else { "" }
            ));
        }
    }
    for late in ev.late.iter().take(10) {
        let answer = match late.answered_ms {
            Some(a) => format!("answered after {a:.0} ms"),
            None => "never answered".to_string(),
        };
        let twin = late
            .twin_answered_ms
            .map(|t| format!(", its A/AAAA twin answered in {t:.1} ms"))
            .unwrap_or_default();
        details.push(format!(
            "waited: {} {} from {} (id {}) at {:.3} s: {:.0} ms before {}, {}, {}{twin}: {}",
            late.qtype,
            late.name,
            late.client,
            late.id,
            late.at_s,
            late.waited_ms,
            if late.sends > 1 {
                "its first resend"
            } else {
                "an answer"
            },
            plural(u64::from(late.sends), "send", "sends"),
            answer,
            cause_name(late.cause)
        ));
    }
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

    let c = &ev.causes;
    let mut findings: Vec<String> = Vec::new();
    let mut remedy: Vec<String> = Vec::new();
    let mut refs: Vec<&str> = Vec::new();
    let mut status = Status::Pass;
    let mut worsen = |s: Status| {
        if s == Status::Fail || status == Status::Pass {
            status = s;
        }
    };

    if c.conntrack_race > 0 {
        worsen(Status::Fail);
        let example = ev.late.iter().find(|l| l.cause == Cause::ConntrackRace);
        let mut text = format!(
            "{} the conntrack insert race's signature: one of an A/AAAA pair sent from one socket went unanswered while its twin was answered",
            if c.conntrack_race == 1 { "1 query shows".to_string() } else { format!("{} queries show", c.conntrack_race) },
        );
        if let Some(l) = example {
            if let Some(t) = l.twin_answered_ms {
                text.push_str(&format!(" in {t:.1} ms"));
            }
            text.push_str(&format!(
                ", and it was resent after {:.0} ms (the resolver's timeout)",
                l.waited_ms
            ));
        }
        findings.push(text);
        remedy.push("add `options single-request-reopen` to the pod's dnsConfig (glibc), so A and AAAA leave from separate sockets:\ndnsConfig:\n  options:\n    - name: single-request-reopen".to_string());
        remedy.push("musl (Alpine) ignores that option: run NodeLocal DNSCache (169.254.20.10) so pod DNS does not cross conntrack DNAT".to_string());
        remedy.push("on the nodes: a kernel with the conntrack race fixes (5.0+), or kube-proxy/iptables `--random-fully`; `conntrack -S` shows insert_failed rising".to_string());
        refs.push(REF_RACE);
        refs.push(REF_NODELOCAL);
    }
    for s in &ev.servers {
        if let Some(stall) = s
            .stalls
            .iter()
            .max_by(|a, b| a.duration_ms.total_cmp(&b.duration_ms))
        {
            worsen(Status::Fail);
            findings.push(format!(
                "server stall: {} answered nothing for {:.1} s while {} queries waited{}",
                s.server,
                stall.duration_ms / 1000.0,
                stall.queries,
                if s.stalls.len() > 1 {
                    format!(" ({} stalls)", s.stalls.len())
                } else {
                    String::new()
                }
            ));
        }
    }
    if c.server_stall > 0 {
        remedy.push("the DNS server stopped answering everyone for seconds (not the conntrack race: both halves of each A/AAAA pair waited): look at the server (CoreDNS: `kubectl -n kube-system logs -l k8s-app=kube-dns`, CPU throttling, restarts, its upstream `forward` timeouts); more replicas or NodeLocal DNSCache take the load off it".to_string());
        refs.push(REF_NODELOCAL);
    }
    if c.fragments_lost > 0 {
        worsen(Status::Fail);
        findings.push(format!(
            "{} lost in IP fragments: the answer left the server fragmented and a fragment never arrived",
            plural(c.fragments_lost, "answer", "answers")
        ));
        remedy.push("answers larger than the path MTU travel as IP fragments, and something on the way drops fragments (a firewall, an overlay with a smaller MTU): keep answers small (CoreDNS `bufsize 1232`, EDNS buffer 1232) so large ones fall back to TCP".to_string());
        refs.push(REF_FLAG_DAY);
    }
    if c.unreachable > 0 {
        worsen(Status::Fail);
        findings.push(format!(
            "{} answered by an ICMP error instead (port unreachable: nothing listens; prohibited: a REJECT rule)",
            plural(c.unreachable, "query", "queries")
        ));
        remedy.push("check that the DNS server listens on port 53 and that the Service has endpoints: `kubectl -n kube-system get endpoints kube-dns`".to_string());
    }
    if c.loss > 0 {
        worsen(Status::Fail);
        findings.push(format!(
            "{} lost while the server answered others (loss, without the race's A/AAAA signature)",
            plural(c.loss, "query", "queries")
        ));
        remedy.push("queries or answers were lost one by one: look for packet loss on the path, the server's rate limits and drops (CoreDNS/dnsmasq logs), a full conntrack table on the node (`podprobe doctor`: net.conntrack) and UDP receive-buffer errors (`netstat -su`)".to_string());
    }
    let unexplained = ev.unanswered.saturating_sub(
        c.loss + c.conntrack_race + c.server_stall + c.fragments_lost + c.unreachable,
    );
    if unexplained > 0 {
        worsen(Status::Fail);
        findings.push(format!(
            "{} never answered",
            plural(unexplained, "query", "queries")
        ));
    }
    if ev.unanswered > 0 {
        let names: Vec<&str> = ev
            .unanswered_names
            .iter()
            .take(5)
            .map(String::as_str)
            .collect();
        details.push(format!("unanswered: {}", names.join(", ")));
    }
    // Latency, per server.
    for s in &ev.servers {
        let Some(p99) = s.p99_ms else { continue };
        if p99 >= LATENCY_FAIL_MS {
            worsen(Status::Fail);
        } else if p99 > LATENCY_WARN_MS {
            worsen(Status::Warn);
        } else {
            continue;
        }
        findings.push(format!(
            "{} answers slowly: p99 {p99:.0} ms (max {})",
            s.server,
            ms(s.max_ms)
        ));
        remedy.push(format!("slow answers from {}: cache misses going upstream, or an overloaded server; CoreDNS's cache and NodeLocal DNSCache keep answers local (warn above {LATENCY_WARN_MS:.0} ms at p99, fail at {LATENCY_FAIL_MS:.0} ms)", s.server));
    }
    let late_resends = ev.late.iter().filter(|l| l.sends > 1).count() as u64;
    if ev.retransmitted > late_resends && findings.is_empty() {
        worsen(Status::Warn);
        findings.push(format!(
            "{} before an answer",
            plural(ev.retransmitted, "query was resent", "queries were resent")
        ));
    }
    if let Some(worst) = ev.search_chains.iter().max_by_key(|c| c.queries) {
        worsen(Status::Warn);
        findings.push(format!(
            "{}: {} took {} queries ({} NXDOMAIN) over {:.1} ms across search domains",
            plural(
                ev.search_chains.len() as u64,
                "search chain",
                "search chains"
            ),
            worst.base,
            worst.queries,
            worst.nxdomain,
            worst.duration_ms
        ));
        remedy.push(format!(
            "use the fully qualified name with a trailing dot: `{}.`",
            worst.base
        ));
        remedy.push(
            "lower ndots for the pod:\ndnsConfig:\n  options:\n    - name: ndots\n      value: \"2\""
                .to_string(),
        );
        refs.push(REF_NDOTS);
    }

    let mut summary = if findings.is_empty() && ev.transactions == 0 {
        format!(
            "no queries, {} to queries sent before the capture began",
            plural(ev.responses, "response", "responses")
        )
    } else if findings.is_empty() {
        format!(
            "{}, all answered without a resend (p99 {})",
            plural(ev.transactions, "query", "queries"),
            ms(ev.p99_ms)
        )
    } else {
        findings.join("; ")
    };
    if ev.unanswered_at_end > 0 {
        summary.push_str(&format!(
            "; {} sent in the capture's last second may have been cut off by its end",
            plural(ev.unanswered_at_end, "query", "queries")
        ));
    }
    refs.dedup();
    Check::new(DNS_ID, DNS_TITLE, status, summary, ev)
        .with_remedy(remedy)
        .with_refs(&refs)
        .with_details(details)
}

fn cause_name(cause: Cause) -> &'static str {
    match cause {
        Cause::ConntrackRace => "the conntrack race's signature",
        Cause::ServerStall => "server stall",
        Cause::FragmentsLost => "answer lost in fragments",
        Cause::Loss => "loss",
        Cause::SlowAnswer => "slow answer",
        Cause::Unreachable => "ICMP error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::measure_dns::{
        Causes, LateQuery, NameCount, SearchChain, ServerEvidence, StallEvidence,
    };

    fn server(p99: f64) -> ServerEvidence {
        ServerEvidence {
            server: "10.96.0.10:53".parse().unwrap(),
            queries: 4,
            answered: 4,
            lost: 0,
            p50_ms: Some(1.0),
            p90_ms: Some(p99),
            p99_ms: Some(p99),
            max_ms: Some(p99),
            sampled: false,
            stalls: Vec::new(),
        }
    }

    fn dns() -> DnsEvidence {
        DnsEvidence {
            queries: 4,
            responses: 4,
            transactions: 4,
            answered: 4,
            p50_ms: Some(1.0),
            p99_ms: Some(2.0),
            max_ms: Some(2.0),
            servers: vec![server(2.0)],
            top_names: vec![NameCount {
                name: "a".into(),
                queries: 4,
            }],
            ..DnsEvidence::default()
        }
    }

    fn late(cause: Cause) -> LateQuery {
        LateQuery {
            client: "10.0.0.5:40000".parse().unwrap(),
            server: "10.96.0.10:53".parse().unwrap(),
            name: "web".into(),
            qtype: "AAAA".into(),
            id: 7,
            at_s: 0.0,
            waited_ms: 5003.0,
            sends: 2,
            answered_ms: None,
            twin_answered_ms: Some(0.4),
            cause,
        }
    }

    #[test]
    fn healthy_dns_passes_and_empty_skips() {
        assert_eq!(judge_dns(&dns(), 0).status, Status::Pass);
        let skip = judge_dns(&DnsEvidence::default(), 3);
        assert_eq!(skip.status, Status::Skip);
        assert!(skip.summary.contains("3 packets could not be decoded"));
    }

    #[test]
    fn the_race_fails_and_names_single_request_reopen() {
        let ev = DnsEvidence {
            retransmitted: 1,
            unanswered: 1,
            causes: Causes {
                conntrack_race: 1,
                ..Causes::default()
            },
            late: vec![late(Cause::ConntrackRace)],
            ..dns()
        };
        let c = judge_dns(&ev, 0);
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("conntrack insert race"), "{}", c.summary);
        assert!(c.summary.contains("resent after 5003 ms"), "{}", c.summary);
        assert!(c.remedy[0].contains("single-request-reopen"));
        assert!(c.refs.contains(&REF_RACE.to_string()));
    }

    #[test]
    fn a_stall_fails_without_the_race() {
        let mut s = server(6000.0);
        s.stalls.push(StallEvidence {
            at_s: 1.0,
            duration_ms: 6000.0,
            queries: 4,
            until_end: false,
        });
        let ev = DnsEvidence {
            retransmitted: 2,
            causes: Causes {
                server_stall: 2,
                ..Causes::default()
            },
            servers: vec![s],
            late: vec![late(Cause::ServerStall)],
            ..dns()
        };
        let c = judge_dns(&ev, 0);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.summary
                .starts_with("server stall: 10.96.0.10:53 answered nothing for 6.0 s"),
            "{}",
            c.summary
        );
        assert!(!c.summary.contains("race"), "{}", c.summary);
        assert!(!c.remedy.iter().any(|r| r.contains("single-request-reopen")));
    }

    #[test]
    fn latency_is_graded_per_server() {
        let ev = DnsEvidence {
            servers: vec![server(300.0)],
            ..dns()
        };
        assert_eq!(judge_dns(&ev, 0).status, Status::Warn);
        let ev = DnsEvidence {
            servers: vec![server(3000.0)],
            ..dns()
        };
        let c = judge_dns(&ev, 0);
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("p99 3000 ms"), "{}", c.summary);
    }

    #[test]
    fn unanswered_fails_unless_cut_off_at_the_end() {
        let lost = DnsEvidence {
            unanswered: 1,
            unanswered_names: vec!["x A".into()],
            causes: Causes {
                loss: 1,
                ..Causes::default()
            },
            ..dns()
        };
        let c = judge_dns(&lost, 0);
        assert_eq!(c.status, Status::Fail);
        assert!(
            !c.summary.contains("race ") && c.summary.contains("loss"),
            "{}",
            c.summary
        );
        let cut = DnsEvidence {
            unanswered_at_end: 1,
            ..dns()
        };
        let c = judge_dns(&cut, 0);
        assert_eq!(c.status, Status::Pass);
        assert!(c.summary.contains("cut off"));
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
        let c = judge_dns(&ev, 0);
        assert_eq!(c.status, Status::Warn);
        assert!(c.remedy[0].contains("api.example.com."));
    }
}
