//! `grpc.distribution`: from the runs' per-replica counts to a verdict.
//! Pure: evidence in, `Check` out.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::measure::{Evidence, Run, PER_ENDPOINT, SINGLE_CHANNEL};
use crate::report::{Check, Status};

pub const ID: &str = "grpc.distribution";
pub const TITLE: &str = "gRPC calls spread over replicas";
const BAR_WIDTH: usize = 40;

const REFS: &[&str] = &[
    "https://kubernetes.io/blog/2018/11/07/grpc-load-balancing-on-kubernetes-without-tears/",
    "https://github.com/grpc/grpc/blob/master/doc/load-balancing.md",
    "https://github.com/grpc/proposal/blob/master/A9-server-side-conn-mgt.md",
];

fn remedy() -> Vec<String> {
    vec![
        "Make the Service headless (clusterIP: None) and balance in the client: dial \
         dns:///NAME.NAMESPACE.svc.cluster.local:PORT with the service config \
         {\"loadBalancingConfig\": [{\"round_robin\": {}}]}, then check with \
         podprobe grpc dns:///NAME:PORT"
            .to_string(),
        "Or put an L7 proxy or a mesh in the path (Envoy, Linkerd, Istio) that balances \
         each request, not each connection"
            .to_string(),
        "Or set MaxConnectionAge on the server (e.g. 1-5 min, with a grace period) so \
         clients reconnect and rebalance as replicas come and go"
            .to_string(),
    ]
}

fn plural(n: u32, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

fn percent(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// The replica names that reached the most RPCs in a run.
fn busiest(run: &Run) -> Option<(&str, u32)> {
    run.per_replica
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(k, n)| (k.as_str(), *n))
}

pub fn judge(evidence: &Evidence) -> Check {
    let status_and_summary = verdict(evidence);
    let (status, summary) = status_and_summary;
    let check = Check::new(ID, TITLE, status, summary, evidence)
        .with_details(bars(evidence))
        .with_refs(REFS);
    if status == Status::Pass {
        check
    } else {
        check.with_remedy(remedy())
    }
}

fn verdict(ev: &Evidence) -> (Status, String) {
    let single = ev.runs.iter().find(|r| r.mode == SINGLE_CHANNEL);
    let per = ev.runs.iter().find(|r| r.mode == PER_ENDPOINT);
    let Some(single) = single else {
        return (Status::Error, "no single-channel run was made".to_string());
    };
    if single.ok == 0 {
        let cause = single
            .errors
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or("no answer", |(e, _)| e.as_str());
        return (
            Status::Error,
            format!(
                "none of {} RPCs to {} succeeded ({cause})",
                single.rpcs, ev.target
            ),
        );
    }
    let endpoints = ev.endpoints.len();
    let per_seen = per.and_then(|r| r.replicas_seen).unwrap_or(0) as usize;
    let known = endpoints.max(per_seen);
    let failures: Vec<String> = ev
        .runs
        .iter()
        .filter(|r| r.failed > 0)
        .map(|r| format!("{} of {} RPCs failed ({})", r.failed, r.rpcs, r.mode))
        .collect();
    let failure_note = if failures.is_empty() {
        String::new()
    } else {
        format!("; {}", failures.join(", "))
    };

    if single.replicas_seen == Some(1) && per_seen.max(endpoints) >= 2 {
        let (replica, n) = busiest(single).unwrap_or(("?", 0));
        let elsewhere = match per {
            Some(p) if per_seen >= 2 => format!(
                "one channel per endpoint reached {per_seen} of {endpoints} ({})",
                p.per_replica.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
            _ => format!("{endpoints} endpoints exist"),
        };
        return (
            Status::Fail,
            format!(
                "all {n} RPCs over one channel to {} reached one replica ({replica}) \
                 over {}, while {elsewhere}{failure_note}",
                ev.target,
                plural(single.connections, "connection")
            ),
        );
    }
    if single.replicas_seen.is_none() && single.connections == 1 && endpoints >= 2 {
        return (
            Status::Warn,
            format!(
                "one connection carried all {} RPCs to {} while {endpoints} endpoints exist; \
                 which replicas answered is unknown ({} has no podprobe.v1.Identity, \
                 health checks were used){failure_note}",
                single.ok, ev.target, ev.target
            ),
        );
    }
    for run in &ev.runs {
        if let (Some(max), Some(fair)) = (run.max_share, run.fair_share) {
            if max > 2.0 * fair {
                let (replica, _) = busiest(run).unwrap_or(("?", 0));
                return (
                    Status::Warn,
                    format!(
                        "{replica} took {} of the RPCs over the {} run, more than twice \
                         its fair share of {}{failure_note}",
                        percent(max),
                        run.mode,
                        percent(fair)
                    ),
                );
            }
        }
    }
    if !failures.is_empty() {
        return (
            Status::Warn,
            format!("{} to {}", failures.join(", "), ev.target),
        );
    }
    let summary = match (single.replicas_seen, known) {
        (Some(1), k) if k <= 1 => format!(
            "all {} RPCs to {} reached {}, the only replica known (give --headless NAME \
             to compare with every ready pod)",
            single.ok,
            ev.target,
            busiest(single).map_or("?", |(r, _)| r)
        ),
        (Some(seen), _) => format!(
            "{} RPCs over one channel to {} spread over {seen} replicas (busiest {})",
            single.ok,
            ev.target,
            single.max_share.map_or("?".to_string(), percent)
        ),
        (None, _) => format!(
            "{} RPCs to {} used {} connections; which replicas answered is unknown \
             (no podprobe.v1.Identity)",
            single.ok, ev.target, single.connections
        ),
    };
    (Status::Pass, summary)
}

/// A bar per replica for each run, every replica of the same kind listed in
/// every run, so a pinned channel shows as one full bar and empty ones.
fn bars(ev: &Evidence) -> Vec<String> {
    let mut lines = Vec::new();
    for run in &ev.runs {
        let mut head = format!(
            "{}: {} RPCs, {} ok, {} failed, {}",
            run.mode,
            run.rpcs,
            run.ok,
            run.failed,
            plural(run.connections, "connection")
        );
        if let (Some(p50), Some(p99)) = (run.p50_ms, run.p99_ms) {
            let _ = write!(head, ", p50 {p50:.2} ms, p99 {p99:.2} ms");
        }
        if run.retried > 0 {
            let _ = write!(head, ", {} sent again", run.retried);
        }
        lines.push(head);
        if run.identity == "unknown" {
            lines.push(format!(
                "  (replicas unknown: {} RPCs went over {})",
                run.ok,
                plural(run.connections, "connection")
            ));
            continue;
        }
        let names: BTreeSet<&str> = ev
            .runs
            .iter()
            .filter(|r| r.identity == run.identity)
            .flat_map(|r| r.per_replica.keys().map(String::as_str))
            .collect();
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        for name in names {
            let n = run.per_replica.get(name).copied().unwrap_or(0);
            let share = if run.ok > 0 {
                f64::from(n) / f64::from(run.ok)
            } else {
                0.0
            };
            let filled = (share * BAR_WIDTH as f64).round() as usize;
            lines.push(format!(
                "  {name:<width$} {}{} {n:>6} {:>5.1}%",
                "█".repeat(filled),
                "·".repeat(BAR_WIDTH - filled),
                share * 100.0
            ));
        }
        for (cause, n) in &run.errors {
            lines.push(format!("  failed {n}: {cause}"));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(json: serde_json::Value) -> Evidence {
        serde_json::from_value(json).unwrap()
    }

    fn run(mode: &str, identity: &str, per: &[(&str, u32)], connections: u32) -> serde_json::Value {
        // A run without identities has its RPCs in `ok` only.
        let ok: u32 = if identity == "unknown" {
            300
        } else {
            per.iter().map(|(_, n)| n).sum()
        };
        let max = per.iter().map(|(_, n)| *n).max().unwrap_or(0);
        serde_json::json!({
            "mode": mode, "identity": identity, "rpcs": 300, "ok": ok, "failed": 300 - ok,
            "connections": connections,
            "replicas_seen": if identity == "unknown" { None } else { Some(per.len()) },
            "per_replica": per.iter().map(|(k, n)| (k.to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
            "max_share": if identity == "unknown" || ok == 0 { None } else { Some(f64::from(max) / f64::from(ok)) },
            "fair_share": null,
            "p50_ms": 0.4, "p99_ms": 1.2, "retried": 0,
            "errors": if ok < 300 { serde_json::json!({"Unavailable: connection refused": 300 - ok}) } else { serde_json::json!({}) },
        })
    }

    fn ev(mut runs: Vec<serde_json::Value>, endpoints: usize) -> Evidence {
        let known = runs
            .iter()
            .filter_map(|r| r["replicas_seen"].as_u64())
            .fold(endpoints as u64, u64::max);
        for run in &mut runs {
            run["fair_share"] = serde_json::json!(1.0 / known as f64);
        }
        evidence(serde_json::json!({
            "target": "10.96.0.10:50051",
            "balancing": "pick_first",
            "endpoints": (0..endpoints).map(|i| format!("10.0.0.{}:50051", i + 1)).collect::<Vec<_>>(),
            "rpc": "whoami",
            "runs": runs,
        }))
    }

    const EVEN: &[(&str, u32)] = &[("web-a", 100), ("web-b", 100), ("web-c", 100)];

    #[test]
    fn pinned_single_channel_fails_and_shows_bars() {
        let check = judge(&ev(
            vec![
                run(SINGLE_CHANNEL, "whoami", &[("web-b", 300)], 1),
                run(PER_ENDPOINT, "whoami", EVEN, 3),
            ],
            3,
        ));
        assert_eq!(check.status, Status::Fail, "{}", check.summary);
        assert!(check.summary.contains("web-b"), "{}", check.summary);
        assert_eq!(check.remedy.len(), 3);
        let text = check.details.join("\n");
        assert!(
            text.contains(&format!("web-b {}", "█".repeat(BAR_WIDTH))),
            "{text}"
        );
        assert!(
            text.contains(&format!("web-a {}", "·".repeat(BAR_WIDTH))),
            "{text}"
        );
    }

    #[test]
    fn spread_passes() {
        let check = judge(&ev(
            vec![
                run(SINGLE_CHANNEL, "whoami", EVEN, 3),
                run(PER_ENDPOINT, "whoami", EVEN, 3),
            ],
            3,
        ));
        assert_eq!(check.status, Status::Pass, "{}", check.summary);
        assert!(check.remedy.is_empty());
    }

    #[test]
    fn skew_beyond_twice_the_fair_share_warns() {
        let skewed = &[("web-a", 250), ("web-b", 40), ("web-c", 10)];
        let check = judge(&ev(
            vec![
                run(SINGLE_CHANNEL, "whoami", skewed, 3),
                run(PER_ENDPOINT, "whoami", EVEN, 3),
            ],
            3,
        ));
        assert_eq!(check.status, Status::Warn, "{}", check.summary);
        assert!(
            check.summary.contains("web-a took 83%"),
            "{}",
            check.summary
        );
    }

    #[test]
    fn unknown_identity_on_one_connection_warns() {
        let by_endpoint = &[
            ("10.0.0.1:50051", 100),
            ("10.0.0.2:50051", 100),
            ("10.0.0.3:50051", 100),
        ];
        let check = judge(&ev(
            vec![
                run(SINGLE_CHANNEL, "unknown", &[], 1),
                run(PER_ENDPOINT, "endpoint", by_endpoint, 3),
            ],
            3,
        ));
        assert_eq!(check.status, Status::Warn, "{}", check.summary);
        assert!(
            check.summary.contains("one connection"),
            "{}",
            check.summary
        );
        assert!(check.details.join("\n").contains("replicas unknown"));
    }

    #[test]
    fn nothing_answered_is_an_error() {
        let check = judge(&ev(vec![run(SINGLE_CHANNEL, "whoami", &[], 1)], 3));
        assert_eq!(check.status, Status::Error, "{}", check.summary);
        assert!(
            check.summary.contains("connection refused"),
            "{}",
            check.summary
        );
    }

    #[test]
    fn one_known_replica_passes() {
        let check = judge(&ev(
            vec![run(SINGLE_CHANNEL, "whoami", &[("web-a", 300)], 1)],
            1,
        ));
        assert_eq!(check.status, Status::Pass, "{}", check.summary);
        assert!(check.summary.contains("--headless"), "{}", check.summary);
    }

    #[test]
    fn failed_rpcs_warn() {
        let partial = &[("web-a", 100), ("web-b", 100), ("web-c", 60)];
        let check = judge(&ev(
            vec![
                run(SINGLE_CHANNEL, "whoami", partial, 4),
                run(PER_ENDPOINT, "whoami", EVEN, 3),
            ],
            3,
        ));
        assert_eq!(check.status, Status::Warn, "{}", check.summary);
        assert!(
            check.summary.contains("40 of 300 RPCs failed"),
            "{}",
            check.summary
        );
        assert!(check.details.join("\n").contains("failed 40: Unavailable"));
    }
}
