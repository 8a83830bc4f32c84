//! Pure judges for the `net.*` and `tcp.*` checks.

use super::measure::{
    ConntrackEvidence, ContextEvidence, Outcome, ReachabilityEvidence, TableScope,
};
use crate::report::{Check, Status};

/// Table fill at which new connections are close to being dropped.
pub const CONNTRACK_FULL_WARN: f64 = 0.75;

pub fn context(evidence: &ContextEvidence) -> Check {
    let ifaces: Vec<String> = evidence
        .interfaces
        .iter()
        .filter(|i| i.name != "lo")
        .map(|i| {
            let mtu = i.mtu.map(|m| format!(" mtu {m}")).unwrap_or_default();
            let state = if i.up { "" } else { " DOWN" };
            format!("{} {}{mtu}{state}", i.name, i.addresses.join(" "))
        })
        .collect();
    let routes: Vec<String> = evidence
        .default_routes
        .iter()
        .map(|r| match r.gateway {
            Some(gw) => format!("default via {gw} dev {}", r.interface),
            None => format!("default dev {}", r.interface),
        })
        .collect();
    let mut summary = if ifaces.is_empty() {
        "no interface besides lo".to_string()
    } else {
        ifaces.join(", ")
    };
    summary.push_str("; ");
    summary.push_str(&if routes.is_empty() {
        "no default route".to_string()
    } else {
        routes.join(", ")
    });
    let c = &evidence.context;
    let mut details = vec![format!(
        "host {}{}{}{}",
        c.hostname,
        c.pod
            .as_ref()
            .map(|p| format!(", pod {}/{p}", c.namespace.as_deref().unwrap_or("?")))
            .unwrap_or_default(),
        c.node
            .as_ref()
            .map(|n| format!(", node {n}"))
            .unwrap_or_default(),
        c.netns
            .as_ref()
            .map(|n| format!(", {n}"))
            .unwrap_or_default(),
    )];
    details.retain(|d| !d.trim().is_empty());
    Check::new(
        "net.context",
        "Pod network context",
        Status::Pass,
        summary,
        evidence,
    )
    .with_details(details)
}

/// How to see the node's table from a pod's point of view.
pub const NODE_RECIPE: &str =
    "kubectl debug node/NODE -it --image=IMAGE --profile=sysadmin --custom=manifests/debug/node.json -- podprobe node";

pub fn conntrack(evidence: &ConntrackEvidence) -> Check {
    let fill = if evidence.max > 0 {
        evidence.count as f64 / evidence.max as f64
    } else {
        0.0
    };
    let mut problems = Vec::new();
    if fill >= CONNTRACK_FULL_WARN {
        problems.push(format!("table {:.0}% full", fill * 100.0));
    }
    if evidence.insert_failed > 0 {
        problems.push(format!("{} insert_failed", evidence.insert_failed));
    }
    if evidence.drop > 0 {
        problems.push(format!("{} dropped", evidence.drop));
    }
    let whose = match evidence.scope {
        TableScope::Node => "node's table",
        TableScope::Pod => "this pod's own table",
    };
    let table = format!(
        "{whose}: {}/{} entries ({:.1}%), insert_failed {}, drop {}, early_drop {}, invalid {}",
        evidence.count,
        evidence.max,
        fill * 100.0,
        evidence.insert_failed,
        evidence.drop,
        evidence.early_drop,
        evidence.invalid
    );
    let see_node = format!(
        "the node's conntrack table (Service NAT, the DNS insert race, SNAT) is not visible from a pod: \
         run `podprobe node` in the node's namespace: {NODE_RECIPE}"
    );
    if problems.is_empty() {
        return match evidence.scope {
            TableScope::Node => Check::new(
                "net.conntrack",
                "Conntrack table",
                Status::Pass,
                format!("{table}; `podprobe node` samples its rates"),
                evidence,
            ),
            // A clean pod table says nothing about the node's: no PASS.
            TableScope::Pod => Check::new(
                "net.conntrack",
                "Conntrack table",
                Status::Skip,
                format!(
                    "the node's table is not visible from a pod: run `podprobe node` on the node ({table})"
                ),
                evidence,
            )
            .with_remedy([see_node]),
        };
    }
    let mut remedy = Vec::new();
    if fill >= CONNTRACK_FULL_WARN {
        remedy.push(match evidence.scope {
            TableScope::Node => format!(
                "raise the node's nf_conntrack_max (now {}), e.g. sysctl -w net.netfilter.nf_conntrack_max={}, or kube-proxy --conntrack-max-per-core",
                evidence.max,
                evidence.max.saturating_mul(2)
            ),
            TableScope::Pod => "this pod tracks its own connections (a sidecar's or the app's iptables rules): \
                 its flows share the kernel's nf_conntrack_max with the node's"
                .to_string(),
        });
    }
    if evidence.insert_failed > 0 || evidence.drop > 0 {
        remedy.push(
            "insert_failed counts the conntrack insert race (DNS A/AAAA from one socket, SNAT port clashes): \
             use options single-request-reopen or NodeLocal DNSCache for DNS, --random-fully for SNAT, or a newer kernel"
                .to_string(),
        );
    }
    if evidence.invalid > 0 && evidence.scope == TableScope::Node {
        remedy.push(
            "drop INVALID packets before they reach the pod (iptables -A FORWARD -m conntrack --ctstate INVALID -j DROP) so they do not trigger resets"
                .to_string(),
        );
    }
    if evidence.scope == TableScope::Pod {
        remedy.push(see_node);
    }
    Check::new(
        "net.conntrack",
        "Conntrack table",
        Status::Warn,
        format!("{}: {table}", problems.join(", ")),
        evidence,
    )
    .with_remedy(remedy)
    .with_refs(&["https://github.com/kubernetes/kubernetes/issues/56903"])
}

pub fn reachability(evidence: &[ReachabilityEvidence]) -> Check {
    let worst = evidence
        .iter()
        .map(|e| match e.outcome {
            Outcome::Ok => Status::Pass,
            _ => Status::Fail,
        })
        .find(|s| *s == Status::Fail)
        .unwrap_or(Status::Pass);
    let lines: Vec<String> = evidence
        .iter()
        .map(|e| {
            let took = e
                .connect_ms
                .map(|ms| format!(" after {ms:.1} ms"))
                .unwrap_or_default();
            format!("{} {}{took}", e.target, outcome_word(e.outcome))
        })
        .collect();
    let mut remedy = Vec::new();
    let has = |o: Outcome| evidence.iter().any(|e| e.outcome == o);
    if has(Outcome::Timeout) {
        remedy.push(
            "a connect that times out was silently dropped: check the NetworkPolicies selecting this pod (egress) and the target (ingress); on Cilium, `hubble observe --verdict DROPPED`"
                .to_string(),
        );
    }
    if has(Outcome::Refused) {
        remedy.push(
            "a refused connect means nothing listens on that port, the Service has no ready endpoints, or a REJECT rule answered: check `kubectl get endpoints` and the container's port"
                .to_string(),
        );
    }
    if has(Outcome::Unreachable) {
        remedy.push(
            "no route to the target: check the pod's routes and the CNI, or an ICMP-rejecting policy"
                .to_string(),
        );
    }
    let summary = if lines.is_empty() {
        "no targets".to_string()
    } else {
        lines.join(", ")
    };
    Check::new(
        "tcp.reachability",
        "TCP reachability",
        worst,
        summary,
        &serde_json::json!({ "targets": evidence }),
    )
    .with_remedy(remedy)
}

pub(crate) fn outcome_word(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "ok",
        Outcome::Refused => "refused",
        Outcome::Timeout => "timed out",
        Outcome::Unreachable => "unreachable",
        Outcome::Error => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(count: u64, max: u64, insert_failed: u64, drop: u64) -> ConntrackEvidence {
        ConntrackEvidence {
            count,
            max,
            insert_failed,
            drop,
            scope: TableScope::Node,
            ..Default::default()
        }
    }

    #[test]
    fn conntrack_warns_when_full_or_racing() {
        assert_eq!(conntrack(&ct(10, 262144, 0, 0)).status, Status::Pass);
        assert_eq!(conntrack(&ct(196608, 262144, 0, 0)).status, Status::Warn);
        assert_eq!(conntrack(&ct(196607, 262144, 0, 0)).status, Status::Pass);
        let racing = conntrack(&ct(10, 262144, 3, 0));
        assert_eq!(racing.status, Status::Warn);
        assert!(
            racing.summary.contains("3 insert_failed"),
            "{}",
            racing.summary
        );
        assert_eq!(conntrack(&ct(10, 262144, 0, 1)).status, Status::Warn);
    }

    #[test]
    fn a_pods_own_table_never_passes_for_the_node() {
        let pod = |e: ConntrackEvidence| ConntrackEvidence {
            scope: TableScope::Pod,
            ..e
        };
        let clean = conntrack(&pod(ct(0, 262144, 0, 0)));
        assert_eq!(clean.status, Status::Skip);
        assert!(
            clean.summary.contains("not visible from a pod"),
            "{}",
            clean.summary
        );
        assert!(
            clean.summary.contains("this pod's own table: 0/262144"),
            "{}",
            clean.summary
        );
        assert!(clean.remedy[0].contains("podprobe node"));
        // A pod that tracks its own flows (a mesh's iptables) can still be in trouble.
        let full = conntrack(&pod(ct(200000, 262144, 0, 0)));
        assert_eq!(full.status, Status::Warn);
        assert!(full.remedy.iter().any(|r| r.contains("podprobe node")));
    }

    fn target(outcome: Outcome) -> ReachabilityEvidence {
        ReachabilityEvidence {
            target: "web:80".into(),
            resolved: vec![],
            outcome,
            connect_ms: Some(1.0),
            error: None,
        }
    }

    #[test]
    fn reachability_fails_on_any_unreachable_target() {
        assert_eq!(reachability(&[target(Outcome::Ok)]).status, Status::Pass);
        let dropped = reachability(&[target(Outcome::Ok), target(Outcome::Timeout)]);
        assert_eq!(dropped.status, Status::Fail);
        assert!(dropped.remedy[0].contains("NetworkPolicies"));
        assert_eq!(
            reachability(&[target(Outcome::Refused)]).status,
            Status::Fail
        );
    }
}
