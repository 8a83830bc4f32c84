//! Pure judge of `dns.cluster`: does the cluster's own Service name resolve
//! through the search list, as the application's resolver resolves it? The
//! flowchart's first question.

use serde::{Deserialize, Serialize};

use super::judge::{lookup_summary, seconds, STALL_MS_FAIL};
use super::measure::LookupEvidence;
use crate::report::{Check, Status};

pub const ID: &str = "dns.cluster";
pub const TITLE: &str = "The cluster's own Service name resolves";
/// The name every cluster has, in the short form applications write.
pub const CLUSTER_NAME: &str = "kubernetes.default";

/// Evidence of `dns.cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterDnsEvidence {
    /// `KUBERNETES_SERVICE_HOST`: the address the name should resolve to.
    pub service_host: String,
    /// Why the application's resolver model was chosen.
    pub resolver_source: String,
    pub lookup: LookupEvidence,
}

/// Skipped outside Kubernetes: with no service environment there is no
/// cluster name to expect.
pub fn not_in_kubernetes() -> Check {
    Check::skipped(
        ID,
        TITLE,
        "not in a Kubernetes pod: KUBERNETES_SERVICE_HOST is not set (kubelet sets it in every container)",
    )
}

pub fn cluster(ev: &ClusterDnsEvidence) -> Check {
    let l = &ev.lookup;
    let said = lookup_summary(l);
    let assumed = if ev.resolver_source == "assumed" {
        format!("assuming {}: ", l.resolver)
    } else {
        String::new()
    };
    let (status, summary, remedy) = if !l.resolved() {
        (
            Status::Fail,
            format!("{assumed}{said}"),
            vec![
                format!(
                    "the cluster DNS does not answer for its own Service: check CoreDNS \
                     (`kubectl -n kube-system get pods -l k8s-app=kube-dns`, its logs) and that resolv.conf's \
                     nameserver is the kube-dns ClusterIP; `podprobe dns {CLUSTER_NAME}` shows every query"
                ),
            ],
        )
    } else if !l.addresses.iter().any(|a| a == &ev.service_host) {
        (
            Status::Warn,
            format!(
                "{assumed}{said}, to {} while KUBERNETES_SERVICE_HOST is {}",
                l.addresses.join(" "),
                ev.service_host
            ),
            vec![
                "the name and the environment disagree on the API server's Service: a stale DNS \
                 cache, a search domain that answers for the cluster's names, or a resolv.conf \
                 pointing at another cluster's DNS"
                    .to_string(),
            ],
        )
    } else if l.total_ms >= STALL_MS_FAIL {
        (
            Status::Warn,
            format!("{assumed}{said}"),
            vec![format!(
                "the lookup resolves but the app waits {}: see dns.timeout-race and `podprobe dns {CLUSTER_NAME} --race 50`",
                seconds(l.total_ms)
            )],
        )
    } else {
        (Status::Pass, format!("{assumed}{said}"), Vec::new())
    };
    Check::new(ID, TITLE, status, summary, ev).with_remedy(remedy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(outcome: &str, addresses: &[&str], total_ms: f64) -> LookupEvidence {
        LookupEvidence {
            name: CLUSTER_NAME.into(),
            dots: 1,
            candidates: vec![],
            resolved_as: (outcome == "resolved")
                .then(|| "kubernetes.default.svc.cluster.local.".to_string()),
            queries_sent: 4,
            wasted_queries: 2,
            total_ms,
            wasted_ms: 0.4,
            resolver: "glibc".into(),
            outcome: outcome.into(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            notes: vec![],
        }
    }

    fn judged(l: LookupEvidence) -> Check {
        cluster(&ClusterDnsEvidence {
            service_host: "10.96.0.1".into(),
            resolver_source: "assumed".into(),
            lookup: l,
        })
    }

    #[test]
    fn passes_warns_and_fails() {
        assert_eq!(
            judged(lookup("resolved", &["10.96.0.1"], 1.2)).status,
            Status::Pass
        );
        let stalled = judged(lookup("resolved", &["10.96.0.1"], 5003.0));
        assert_eq!(stalled.status, Status::Warn);
        assert!(stalled.remedy[0].contains("dns.timeout-race"));
        let elsewhere = judged(lookup("resolved", &["10.0.0.1"], 1.0));
        assert_eq!(elsewhere.status, Status::Warn);
        assert!(elsewhere
            .summary
            .contains("KUBERNETES_SERVICE_HOST is 10.96.0.1"));
        let failed = judged(lookup("EAI_AGAIN", &[], 10_000.0));
        assert_eq!(failed.status, Status::Fail);
        assert!(failed.remedy[0].contains("CoreDNS"));
        assert_eq!(not_in_kubernetes().status, Status::Skip);
    }
}
