//! Pure judge of `dns.cluster`: does the cluster's own Service name resolve
//! through the search list, as the application's resolver resolves it? The
//! flowchart's first question.

use serde::Serialize;

use super::judge::{lookup_summary, seconds, STALL_MS_FAIL, WASTED_MS_FAIL};
use super::measure::{LookupEvidence, NameserversEvidence};
use crate::report::{Check, Status};

pub const ID: &str = "dns.cluster";
pub const TITLE: &str = "The cluster's own Service name resolves";
/// The name every cluster has, in the short form applications write.
pub const CLUSTER_NAME: &str = "kubernetes.default";

/// Evidence of `dns.cluster`.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterDnsEvidence {
    /// `KUBERNETES_SERVICE_HOST`: the address the name should resolve to.
    pub service_host: String,
    /// Why the application's resolver model was chosen.
    pub resolver_source: String,
    pub lookup: LookupEvidence,
    /// The search domains the lookup did not reach, each asked for
    /// `kubernetes.default.DOMAIN.` (what a name that is not the cluster's
    /// costs there): a slow or silent one stalls every external name.
    pub search_domains: Vec<NameserversEvidence>,
}

/// The search domains that answered slowly (at least the wasted time
/// `dns.search-expansion` fails on) or not at all, with what they took.
fn slow_domains(ev: &ClusterDnsEvidence) -> Vec<String> {
    ev.search_domains
        .iter()
        .flat_map(|probe| {
            probe.servers.iter().filter_map(move |s| {
                let domain = probe
                    .name
                    .trim_end_matches('.')
                    .strip_prefix(&format!("{CLUSTER_NAME}."))
                    .unwrap_or(&probe.name)
                    .to_string();
                match s.latency_ms {
                    Some(ms) if ms >= WASTED_MS_FAIL => {
                        Some(format!("{domain} ({} in {})", s.rcode, seconds(ms)))
                    }
                    Some(_) => None,
                    None => Some(format!("{domain} ({} from {})", s.rcode, s.server)),
                }
            })
        })
        .collect()
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
    } else if !slow_domains(ev).is_empty() {
        let slow = slow_domains(ev).join(", ");
        (
            Status::Fail,
            format!("{assumed}{said}; but search domain {slow}: every name that is not the cluster's waits for it before it resolves"),
            vec![
                "a slow or silent search domain (often the node's own, which kubelet copies into every pod's search list) \
                 stalls each external lookup: fix that domain's DNS path (CoreDNS's forward for it), or write external names \
                 with a trailing dot, or lower ndots in the pod's dnsConfig; `podprobe dns api.example.com` shows the walk"
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
            search_domains: vec![],
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

    #[test]
    fn a_slow_or_silent_search_domain_fails() {
        let probe = |latency_ms: Option<f64>, rcode: &str| NameserversEvidence {
            name: "kubernetes.default.corp.internal.".into(),
            qtype: "A".into(),
            timeout_ms: 2000.0,
            servers: vec![crate::dns::measure::ServerAnswer {
                server: "10.96.0.10:53".into(),
                rcode: rcode.into(),
                latency_ms,
                error: None,
            }],
        };
        let judged_with = |p: NameserversEvidence| {
            cluster(&ClusterDnsEvidence {
                service_host: "10.96.0.1".into(),
                resolver_source: "assumed".into(),
                lookup: lookup("resolved", &["10.96.0.1"], 1.0),
                search_domains: vec![p],
            })
        };
        assert_eq!(
            judged_with(probe(Some(2.0), "NXDOMAIN")).status,
            Status::Pass
        );
        let slow = judged_with(probe(Some(300.4), "NXDOMAIN"));
        assert_eq!(slow.status, Status::Fail);
        assert!(
            slow.summary
                .contains("search domain corp.internal (NXDOMAIN in 300.4 ms)"),
            "{}",
            slow.summary
        );
        let silent = judged_with(probe(None, "TIMEOUT"));
        assert_eq!(silent.status, Status::Fail);
        assert!(silent
            .summary
            .contains("corp.internal (TIMEOUT from 10.96.0.10:53)"));
    }
}
