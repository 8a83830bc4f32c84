//! Pure judges of `svc.reachability` and `net.egress`.

use super::measure::{TargetEvidence, Via};
use crate::dns::judge::seconds;
use crate::net::judge::outcome_word;
use crate::net::measure::Outcome;
use crate::report::{Check, Status};

const SVC_ID: &str = "svc.reachability";
const SVC_TITLE: &str = "Services reachable (the API server's, by address and by name)";
const EGRESS_ID: &str = "net.egress";
const EGRESS_TITLE: &str = "The outside reachable";

pub fn not_in_kubernetes() -> Check {
    Check::skipped(
        SVC_ID,
        SVC_TITLE,
        "not in a Kubernetes pod: KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set \
         (kubelet sets them in every container); `--tcp HOST:PORT` checks a Service by hand",
    )
}

/// How one target came out, in a word the flowchart and the metrics share.
fn target_outcome(t: &TargetEvidence) -> Option<Outcome> {
    t.connect.as_ref().map(|c| c.outcome)
}

fn target_phrase(t: &TargetEvidence) -> String {
    let looked_up = t
        .lookup
        .as_ref()
        .map(|l| match &l.resolved_as {
            Some(fqdn) => format!(
                " (resolved as {fqdn} in {}, {} queries)",
                seconds(l.total_ms),
                l.queries_sent
            ),
            None => String::new(),
        })
        .unwrap_or_default();
    match (&t.connect, &t.lookup) {
        (Some(c), _) => format!(
            "{} {}{}{looked_up}",
            t.target,
            outcome_word(c.outcome),
            c.connect_ms
                .map(|ms| format!(" after {ms:.1} ms"))
                .unwrap_or_default()
        ),
        (None, Some(l)) => format!(
            "{} does not resolve ({} after {} queries, {})",
            t.target,
            l.outcome,
            l.queries_sent,
            seconds(l.total_ms)
        ),
        (None, None) => format!("{} not connected", t.target),
    }
}

fn ok(t: &TargetEvidence) -> bool {
    target_outcome(t) == Some(Outcome::Ok)
}

/// `svc.reachability`: fails when any Service does not take a connection,
/// or the API server's name does not resolve.
pub fn reachability(targets: &[TargetEvidence], left_out: usize) -> Check {
    let status = if targets.iter().all(ok) {
        Status::Pass
    } else {
        Status::Fail
    };
    let mut by_service: Vec<String> = Vec::new();
    for t in targets {
        let phrase = target_phrase(t);
        match by_service.last_mut() {
            Some(last) if last.starts_with(&format!("{} ", t.service)) => {
                last.push_str(&format!(", by name {phrase}"));
            }
            _ => by_service.push(format!("{} {phrase}", t.service)),
        }
    }
    let mut summary = by_service.join("; ");
    if left_out > 0 {
        summary.push_str(&format!(
            "; {left_out} more Services in the environment not tried"
        ));
    }
    let mut remedy = Vec::new();
    let has = |o: Outcome| targets.iter().any(|t| target_outcome(t) == Some(o));
    if has(Outcome::Timeout) {
        remedy.push(
            "connects to a ClusterIP that time out are dropped: a NetworkPolicy (this pod's egress, the \
             endpoints' ingress), or a node whose kube-proxy rules do not DNAT them; check \
             `kubectl get endpointslices -l kubernetes.io/service-name=NAME` and the node's rules with `podprobe node`"
                .to_string(),
        );
    }
    if has(Outcome::Refused) {
        remedy.push(
            "a refused connect to a ClusterIP: the Service has no ready endpoints (kube-proxy rejects), \
             nothing listens on its targetPort, or a REJECT policy answered: `kubectl get endpointslices \
             -l kubernetes.io/service-name=NAME`"
                .to_string(),
        );
    }
    if has(Outcome::Unreachable) {
        remedy.push(
            "no route to the Service range: check the pod's routes and the CNI on the node"
                .to_string(),
        );
    }
    if targets
        .iter()
        .any(|t| t.via == Via::Name && t.connect.is_none())
    {
        remedy.push(
            "the API server's address answers but its name does not resolve: see dns.cluster, \
             `podprobe dns kubernetes.default.svc`"
                .to_string(),
        );
    }
    Check::new(
        SVC_ID,
        SVC_TITLE,
        status,
        summary,
        &serde_json::json!({ "targets": targets }),
    )
    .with_remedy(remedy)
}

/// `net.egress`: every `--external` target resolves (names, as the app's
/// resolver does) and takes a connection.
pub fn egress(targets: &[TargetEvidence]) -> Check {
    let status = if targets.iter().all(ok) {
        Status::Pass
    } else {
        Status::Fail
    };
    let summary = targets
        .iter()
        .map(target_phrase)
        .collect::<Vec<_>>()
        .join(", ");
    let mut remedy = Vec::new();
    let failed: Vec<&TargetEvidence> = targets.iter().filter(|t| !ok(t)).collect();
    if failed.iter().any(|t| t.connect.is_none()) {
        remedy.push(
            "the name does not resolve from this pod: `podprobe dns NAME` shows each query; an external \
             name needs CoreDNS's upstream (its `forward` plugin) to answer"
                .to_string(),
        );
    }
    if let Some(t) = failed.iter().find(|t| t.connect.is_some()) {
        let host = t
            .connect
            .as_ref()
            .and_then(|c| c.resolved.first())
            .map_or(t.target.clone(), ToString::to_string);
        remedy.push(format!(
            "egress is blocked or lost: the NetworkPolicies selecting this pod (egress rules, \
             `kubectl get networkpolicy`), the node's firewall and masquerading, the CNI; watch it with \
             `podprobe capture -f 'host {host}' --analyze --duration 10s`"
        ));
    }
    Check::new(
        EGRESS_ID,
        EGRESS_TITLE,
        status,
        summary,
        &serde_json::json!({ "targets": targets }),
    )
    .with_remedy(remedy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::measure::ReachabilityEvidence;

    fn target(service: &str, via: Via, outcome: Option<Outcome>) -> TargetEvidence {
        TargetEvidence {
            service: service.into(),
            via,
            target: "10.96.0.1:443".into(),
            lookup: None,
            connect: outcome.map(|outcome| ReachabilityEvidence {
                target: "10.96.0.1:443".into(),
                resolved: vec!["10.96.0.1".parse().unwrap()],
                outcome,
                connect_ms: Some(0.3),
                error: None,
            }),
        }
    }

    #[test]
    fn services_pass_only_when_every_one_connects() {
        let good = reachability(
            &[
                target("kubernetes", Via::Address, Some(Outcome::Ok)),
                target("kubernetes", Via::Name, Some(Outcome::Ok)),
            ],
            0,
        );
        assert_eq!(good.status, Status::Pass);
        assert!(
            good.summary
                .starts_with("kubernetes 10.96.0.1:443 ok after 0.3 ms, by name"),
            "{}",
            good.summary
        );
        let dropped = reachability(
            &[
                target("kubernetes", Via::Address, Some(Outcome::Ok)),
                target("web", Via::Address, Some(Outcome::Timeout)),
            ],
            2,
        );
        assert_eq!(dropped.status, Status::Fail);
        assert!(dropped.remedy[0].contains("NetworkPolicy"));
        assert!(dropped.summary.contains("2 more Services"));
        let unnamed = reachability(
            &[
                target("kubernetes", Via::Address, Some(Outcome::Ok)),
                target("kubernetes", Via::Name, None),
            ],
            0,
        );
        assert_eq!(unnamed.status, Status::Fail);
        assert!(unnamed.remedy.iter().any(|r| r.contains("dns.cluster")));
        assert_eq!(not_in_kubernetes().status, Status::Skip);
    }

    #[test]
    fn egress_fails_on_a_lost_connect_or_an_unresolved_name() {
        assert_eq!(
            egress(&[target("x", Via::Address, Some(Outcome::Ok))]).status,
            Status::Pass
        );
        let lost = egress(&[target("x", Via::Address, Some(Outcome::Timeout))]);
        assert_eq!(lost.status, Status::Fail);
        assert!(lost.remedy[0].contains("podprobe capture -f 'host 10.96.0.1'"));
        let unresolved = egress(&[target("x", Via::Name, None)]);
        assert_eq!(unresolved.status, Status::Fail);
        assert!(unresolved.remedy[0].contains("podprobe dns"));
    }
}
