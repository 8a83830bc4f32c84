//! The DNS checks' evidence as metrics: every query sent (its reply time and
//! rcode) and the race's lost lookups. Reads only the evidence keys the
//! README documents.

use serde::Deserialize;

use crate::metrics::{evidence, seconds, Family, Sample};
use crate::report::Check;

#[derive(Deserialize)]
struct Nameservers {
    #[serde(default = "a")]
    qtype: String,
    servers: Vec<Answer>,
}

fn a() -> String {
    "A".to_string()
}

/// One query: `dns.nameservers`' per-server answer, or a query of a
/// search-list candidate.
#[derive(Deserialize)]
struct Answer {
    server: String,
    #[serde(default = "a")]
    qtype: String,
    rcode: String,
    latency_ms: Option<f64>,
}

#[derive(Deserialize)]
struct SearchExpansion {
    lookups: Vec<Lookup>,
}

#[derive(Deserialize)]
struct Lookup {
    candidates: Vec<Candidate>,
}

#[derive(Deserialize)]
struct Candidate {
    search_domain: Option<String>,
    queries: Vec<Answer>,
}

#[derive(Deserialize)]
struct Race {
    patterns: Vec<Pattern>,
}

#[derive(Deserialize)]
struct Pattern {
    pattern: String,
    lost: u32,
}

pub fn samples(check: &Check) -> Vec<Sample> {
    match check.id.as_str() {
        "dns.nameservers" => evidence::<Nameservers>(check)
            .map(|e| {
                e.servers
                    .iter()
                    .flat_map(|s| query(s, &e.qtype, "as_is"))
                    .collect()
            })
            .unwrap_or_default(),
        "dns.search-expansion" => evidence::<SearchExpansion>(check)
            .map(|e| {
                e.lookups
                    .iter()
                    .flat_map(|l| &l.candidates)
                    .flat_map(|c| {
                        let candidate = if c.search_domain.is_some() {
                            "search"
                        } else {
                            "as_is"
                        };
                        c.queries
                            .iter()
                            .flat_map(move |q| query(q, &q.qtype, candidate))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        "dns.timeout-race" => evidence::<Race>(check)
            .map(|e| {
                e.patterns
                    .iter()
                    .map(|p| Sample::new(Family::DnsRaceLost, &[&p.pattern], f64::from(p.lost)))
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// A query counted by rcode and, when a reply came, its time observed.
fn query(answer: &Answer, qtype: &str, candidate: &str) -> Vec<Sample> {
    let mut samples = vec![Sample::new(
        Family::DnsQueries,
        &[&answer.server, &answer.rcode],
        1.0,
    )];
    let replied = !matches!(answer.rcode.as_str(), "TIMEOUT" | "UNREACHABLE" | "ERROR");
    if let (true, Some(ms)) = (replied, answer.latency_ms) {
        samples.push(Sample::new(
            Family::DnsLookupDuration,
            &[&answer.server, qtype, candidate],
            seconds(ms),
        ));
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;
    use serde_json::json;

    fn check(id: &str, status: Status, evidence: serde_json::Value) -> Check {
        Check::new(id, "t", status, "s", &evidence)
    }

    #[test]
    fn nameserver_answers_and_timeouts() {
        let samples = samples(&check(
            "dns.nameservers",
            Status::Fail,
            json!({"name": "kubernetes.default.svc.cluster.local.", "qtype": "A", "timeout_ms": 2000.0,
                   "servers": [{"server": "10.96.0.10:53", "rcode": "NOERROR", "latency_ms": 1.5},
                               {"server": "10.96.0.11:53", "rcode": "TIMEOUT", "error": "no reply"}]}),
        ));
        assert_eq!(
            samples,
            vec![
                Sample::new(Family::DnsQueries, &["10.96.0.10:53", "NOERROR"], 1.0),
                Sample::new(
                    Family::DnsLookupDuration,
                    &["10.96.0.10:53", "A", "as_is"],
                    0.0015
                ),
                Sample::new(Family::DnsQueries, &["10.96.0.11:53", "TIMEOUT"], 1.0),
            ]
        );
    }

    #[test]
    fn search_candidates_and_the_name_as_is() {
        let q = |qtype: &str, rcode: &str, ms: f64| json!({"qtype": qtype, "rcode": rcode, "latency_ms": ms, "server": "10.96.0.10:53", "answers": 0});
        let samples = samples(&check(
            "dns.search-expansion",
            Status::Warn,
            json!({"ndots": 5, "search": ["default.svc.cluster.local"], "lookups": [{
            "name": "api.example.com", "dots": 2,
            "candidates": [
                {"fqdn": "api.example.com.default.svc.cluster.local.", "search_domain": "default.svc.cluster.local",
                 "queries": [q("A", "NXDOMAIN", 1.0), q("AAAA", "TIMEOUT", 2000.0)]},
                {"fqdn": "api.example.com.", "search_domain": null,
                 "queries": [q("A", "NOERROR", 3.0)]}
            ]}]}),
        ));
        let observed: Vec<(&[String], f64)> = samples
            .iter()
            .filter(|s| s.family == Family::DnsLookupDuration)
            .map(|s| (s.labels.as_slice(), s.value))
            .collect();
        assert_eq!(observed.len(), 2, "{samples:?}");
        assert_eq!(observed[0].0, ["10.96.0.10:53", "A", "search"]);
        assert_eq!(observed[1].0, ["10.96.0.10:53", "A", "as_is"]);
        assert_eq!(observed[1].1, 0.003);
        let timeouts = samples
            .iter()
            .filter(|s| s.family == Family::DnsQueries && s.labels[1] == "TIMEOUT")
            .count();
        assert_eq!(timeouts, 1);
    }

    #[test]
    fn race_losses_per_pattern() {
        let samples = samples(&check(
            "dns.timeout-race",
            Status::Fail,
            json!({"name": "x.", "server": "10.96.0.10:53", "timeout_ms": 1000.0, "conntrack": null,
                   "patterns": [{"pattern": "parallel-same-socket", "attempts": 3, "lost": 3, "lost_qtypes": {"AAAA": 3}},
                                {"pattern": "single-request-reopen", "attempts": 3, "lost": 0, "lost_qtypes": {}}]}),
        ));
        assert_eq!(
            samples,
            vec![
                Sample::new(Family::DnsRaceLost, &["parallel-same-socket"], 3.0),
                Sample::new(Family::DnsRaceLost, &["single-request-reopen"], 0.0),
            ]
        );
    }

    #[test]
    fn skipped_and_unknown_checks_yield_nothing() {
        let skipped = Check::skipped("dns.timeout-race", "t", "disabled with --race 0");
        assert!(samples(&skipped).is_empty());
        assert!(samples(&check("dns.latency", Status::Pass, json!({}))).is_empty());
        assert!(samples(&check(
            "dns.nameservers",
            Status::Pass,
            json!({"servers": 3})
        ))
        .is_empty());
    }
}
