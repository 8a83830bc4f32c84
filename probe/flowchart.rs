//! The troubleshooting flowchart `doctor` walks (the source articles'
//! "Kubernetes network troubleshooting flowchart"): does DNS resolve, is a
//! Service reachable, is the outside reachable, are there intermittent
//! timeouts. A pure function of the checks: which step failed first, and
//! the command to run next.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::report::{Check, Status};

/// One question of the flowchart and the checks that answer it.
struct StepSpec {
    step: &'static str,
    question: &'static str,
    checks: &'static [&'static str],
}

const STEPS: &[StepSpec] = &[
    StepSpec {
        step: "dns",
        question: "Does DNS resolve?",
        checks: &[
            "dns.resolv-conf",
            "dns.nameservers",
            "dns.cluster",
            "dns.search-expansion",
        ],
    },
    StepSpec {
        step: "service",
        question: "Is a Service reachable?",
        checks: &["svc.reachability", "tcp.reachability", "grpc.endpoints"],
    },
    StepSpec {
        step: "external",
        question: "Is the outside reachable?",
        checks: &["net.egress"],
    },
    StepSpec {
        step: "intermittent",
        question: "Are there intermittent timeouts?",
        checks: &[
            "dns.timeout-race",
            "net.conntrack",
            "http.keepalive-mismatch",
        ],
    },
];

/// How a step came out: the worst of its checks that ran; `skip` when none
/// ran (not asked, or not in Kubernetes).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub step: String,
    pub question: String,
    pub status: Status,
    /// The checks of the step in this report.
    pub checks: Vec<String>,
    /// Those that failed or could not run.
    pub failing: Vec<String>,
}

/// The `flowchart` object of doctor's report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Flowchart {
    pub steps: Vec<Step>,
    /// The first step that failed (or could not be measured), in order.
    pub first_failing: Option<String>,
    /// Commands to run next, the first the most useful.
    pub next: Vec<String>,
}

/// How to run `podprobe node` on the pod's node.
fn node_recipe(node: Option<&str>) -> String {
    format!(
        "kubectl debug node/{} -it --image=IMAGE --profile=sysadmin --custom=manifests/debug/node.json -- podprobe node",
        node.unwrap_or("NODE")
    )
}

/// Walks the flowchart over doctor's checks; `node` is the pod's node when
/// the downward API names it.
pub fn walk(checks: &[Check], node: Option<&str>) -> Flowchart {
    let steps: Vec<Step> = STEPS
        .iter()
        .map(|spec| {
            let mine: Vec<&Check> = checks
                .iter()
                .filter(|c| spec.checks.contains(&c.id.as_str()))
                .collect();
            let status = mine
                .iter()
                .map(|c| c.status)
                .filter(|s| *s != Status::Skip)
                .max_by_key(|s| s.severity())
                .unwrap_or(Status::Skip);
            let mut ids: Vec<String> = Vec::new();
            let mut failing: Vec<String> = Vec::new();
            for c in &mine {
                if !ids.contains(&c.id) {
                    ids.push(c.id.clone());
                }
                if matches!(c.status, Status::Fail | Status::Error) && !failing.contains(&c.id) {
                    failing.push(c.id.clone());
                }
            }
            Step {
                step: spec.step.to_string(),
                question: spec.question.to_string(),
                status,
                checks: ids,
                failing,
            }
        })
        .collect();
    let first = steps.iter().find(|s| !s.failing.is_empty());
    let next = match first {
        Some(step) => next_commands(&step.step, checks, node),
        None => {
            let mut next = Vec::new();
            if steps
                .iter()
                .any(|s| s.step == "external" && s.status == Status::Skip)
            {
                next.push("podprobe doctor --external HOST:PORT".to_string());
            }
            next.push(node_recipe(node));
            next
        }
    };
    Flowchart {
        first_failing: first.map(|s| s.step.clone()),
        steps,
        next,
    }
}

/// The failing targets of a reachability check: (service or target,
/// address, port).
fn failed_targets(checks: &[Check], id: &str) -> Vec<(String, String, String)> {
    checks
        .iter()
        .filter(|c| c.id == id)
        .flat_map(|c| {
            c.evidence["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|t| {
            // svc/egress targets carry the connect inside; tcp's are flat.
            let connect = if t.get("connect").is_some() {
                &t["connect"]
            } else {
                &t
            };
            if connect["outcome"] == "ok" {
                return None;
            }
            let target = t["target"].as_str()?.to_string();
            let port = target.rsplit_once(':').map(|(_, p)| p.to_string())?;
            let address = connect["resolved"][0]
                .as_str()
                .map(String::from)
                .unwrap_or_default();
            let service = t["service"].as_str().map_or(target.clone(), String::from);
            Some((service, address, port))
        })
        .collect()
}

fn capture(address: &str, port: &str) -> String {
    let filter = if address.is_empty() {
        format!("tcp port {port}")
    } else {
        format!("host {address} and tcp port {port}")
    };
    format!("podprobe capture -f '{filter}' --analyze --duration 10s")
}

fn next_commands(step: &str, checks: &[Check], node: Option<&str>) -> Vec<String> {
    match step {
        "dns" => {
            // The cluster's name resolved: what failed is the rest of the
            // search list, which names outside the cluster walk.
            let cluster_resolved = checks
                .iter()
                .any(|c| c.id == "dns.cluster" && c.evidence["lookup"]["outcome"] == "resolved");
            let name = if cluster_resolved {
                "NAME"
            } else {
                "kubernetes.default"
            };
            vec![
                format!("podprobe dns {name}"),
                "kubectl -n kube-system get pods -l k8s-app=kube-dns".to_string(),
            ]
        }
        "service" => {
            let mut next = Vec::new();
            let failed: Vec<_> = ["svc.reachability", "tcp.reachability"]
                .iter()
                .flat_map(|id| failed_targets(checks, id))
                .collect();
            if let Some((service, address, port)) = failed.first() {
                if !service.contains(':') {
                    next.push(format!(
                        "kubectl get endpointslices -l kubernetes.io/service-name={service}"
                    ));
                }
                next.push(capture(address, port));
            }
            next.push(node_recipe(node));
            next
        }
        "external" => {
            let mut next: Vec<String> = failed_targets(checks, "net.egress")
                .first()
                .map(|(_, address, port)| capture(address, port))
                .into_iter()
                .collect();
            next.push("kubectl get networkpolicy".to_string());
            next
        }
        _ => vec![
            "podprobe dns kubernetes.default --race 100".to_string(),
            node_recipe(node),
        ],
    }
}

impl Flowchart {
    /// The lines that end doctor's text report.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let walked: Vec<String> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let outcome = match s.status {
                    Status::Skip if s.step == "external" => "not asked (--external HOST:PORT)",
                    Status::Skip => "skip",
                    other => other.label(),
                };
                format!("  {}. {:<33} {outcome}", i + 1, s.question)
            })
            .collect();
        let _ = writeln!(out, "flowchart:\n{}", walked.join("\n"));
        match self
            .first_failing
            .as_ref()
            .and_then(|f| self.steps.iter().position(|s| &s.step == f))
        {
            Some(i) => {
                let step = &self.steps[i];
                let _ = writeln!(
                    out,
                    "first failing step: {}. {} ({})",
                    i + 1,
                    step.question,
                    step.failing.join(", ")
                );
            }
            None => {
                let _ = writeln!(out, "first failing step: none");
            }
        }
        for (i, command) in self.next.iter().enumerate() {
            let lead = if i == 0 { "next:" } else { "     " };
            let _ = writeln!(out, "{lead} {command}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(id: &str, status: Status, evidence: serde_json::Value) -> Check {
        Check::new(id, "t", status, "s", &evidence)
    }

    #[test]
    fn the_first_failing_step_in_order_wins() {
        let checks = vec![
            check("dns.cluster", Status::Warn, json!({})),
            check(
                "svc.reachability",
                Status::Fail,
                json!({"targets": [
                    {"service": "kubernetes", "target": "10.96.0.1:443", "connect": {"outcome": "ok", "resolved": ["10.96.0.1"]}},
                    {"service": "web", "target": "10.96.0.20:80", "connect": {"outcome": "timeout", "resolved": ["10.96.0.20"]}}]}),
            ),
            check("dns.timeout-race", Status::Fail, json!({})),
        ];
        let chart = walk(&checks, Some("node-3"));
        assert_eq!(chart.first_failing.as_deref(), Some("service"));
        assert_eq!(chart.steps[0].status, Status::Warn);
        assert_eq!(chart.steps[2].status, Status::Skip);
        assert_eq!(chart.steps[3].failing, vec!["dns.timeout-race"]);
        assert_eq!(
            chart.next[0],
            "kubectl get endpointslices -l kubernetes.io/service-name=web"
        );
        assert_eq!(
            chart.next[1],
            "podprobe capture -f 'host 10.96.0.20 and tcp port 80' --analyze --duration 10s"
        );
        assert!(chart.next[2].starts_with("kubectl debug node/node-3 "));
        let text = chart.to_text();
        assert!(
            text.contains("first failing step: 2. Is a Service reachable? (svc.reachability)"),
            "{text}"
        );
        assert!(
            text.contains("3. Is the outside reachable?         not asked"),
            "{text}"
        );
    }

    #[test]
    fn dns_failing_first_points_at_podprobe_dns() {
        let checks = vec![
            check("dns.cluster", Status::Fail, json!({})),
            check("svc.reachability", Status::Fail, json!({"targets": []})),
        ];
        let chart = walk(&checks, None);
        assert_eq!(chart.first_failing.as_deref(), Some("dns"));
        assert_eq!(chart.next[0], "podprobe dns kubernetes.default");
        let slow_domain = walk(
            &[check(
                "dns.cluster",
                Status::Fail,
                json!({"lookup": {"outcome": "resolved"}}),
            )],
            None,
        );
        assert_eq!(slow_domain.next[0], "podprobe dns NAME");
    }

    #[test]
    fn nothing_failing_points_at_the_node_and_the_outside() {
        let chart = walk(&[check("dns.cluster", Status::Pass, json!({}))], None);
        assert_eq!(chart.first_failing, None);
        assert_eq!(chart.next[0], "podprobe doctor --external HOST:PORT");
        assert!(chart.next[1].contains("kubectl debug node/NODE"));
        assert!(chart.to_text().contains("first failing step: none"));
    }

    #[test]
    fn egress_and_intermittent_steps() {
        let egress = walk(
            &[check(
                "net.egress",
                Status::Fail,
                json!({"targets": [{"service": "x:443", "target": "203.0.113.10:443", "connect": {"outcome": "timeout", "resolved": ["203.0.113.10"]}}]}),
            )],
            None,
        );
        assert_eq!(egress.first_failing.as_deref(), Some("external"));
        assert!(egress.next[0].contains("host 203.0.113.10 and tcp port 443"));
        let race = walk(&[check("dns.timeout-race", Status::Fail, json!({}))], None);
        assert_eq!(race.first_failing.as_deref(), Some("intermittent"));
        assert!(race.next[0].contains("--race"));
    }
}
