//! From the runs' evidence to two verdicts. Pure: evidence in, checks out.
//!
//! - `grpc.distribution`: do one channel's calls reach more than one
//!   replica? Judged from what each connection carried: a connection goes
//!   to one replica, so a replica's share is at least its largest
//!   connection's share, whether or not the server names itself.
//! - `grpc.endpoints`: does every endpoint answer? Failures are attributed
//!   to the endpoint (and replica) that gave them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::measure::{EndpointEvidence, Evidence, Run, PER_ENDPOINT, SINGLE_CHANNEL};
use crate::report::{plural, Check, Status};

pub const ID: &str = "grpc.distribution";
pub const TITLE: &str = "gRPC calls spread over replicas";
pub const ENDPOINTS_ID: &str = "grpc.endpoints";
pub const ENDPOINTS_TITLE: &str = "gRPC endpoints answer";
const BAR_WIDTH: usize = 40;
/// Connections drawn one bar each before the rest are summed up.
const MAX_BARS: usize = 12;

const REFS: &[&str] = &[
    "https://kubernetes.io/blog/2018/11/07/grpc-load-balancing-on-kubernetes-without-tears/",
    "https://github.com/grpc/grpc/blob/master/doc/load-balancing.md",
    "https://github.com/grpc/proposal/blob/master/A9-server-side-conn-mgt.md",
];
const ENDPOINT_REFS: &[&str] = &[
    "https://kubernetes.io/docs/tasks/configure-pod-container/configure-liveness-readiness-startup-probes/#define-a-grpc-liveness-probe",
    "https://github.com/grpc/grpc/blob/master/doc/health-checking.md",
    "https://github.com/grpc/grpc/blob/master/doc/statuscodes.md",
];

fn balancing_remedy() -> Vec<String> {
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

fn failing_pin_remedy() -> Vec<String> {
    vec![
        "The client stays on the failing replica until its connection closes, so every \
         call fails while the other replicas idle: find why it fails (kubectl logs / \
         describe the pod), and restart or delete that pod to move the connection now"
            .to_string(),
        "Give the pods a gRPC readiness probe (readinessProbe.grpc, Kubernetes 1.24+, or \
         grpc_health_probe) so a replica that cannot serve leaves the endpoints"
            .to_string(),
        "Then balance per call, so one bad replica costs 1/N of the calls, not all: a \
         headless Service with client-side round_robin (dns:///NAME:PORT), or an L7 \
         proxy or mesh"
            .to_string(),
    ]
}

fn percent(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn find<'a>(ev: &'a Evidence, mode: &str) -> Option<&'a Run> {
    ev.runs.iter().find(|r| r.mode == mode)
}

/// Replicas known: the endpoint list, or more if a run saw more.
fn known_replicas(ev: &Evidence) -> usize {
    ev.runs
        .iter()
        .filter_map(|r| r.replicas_seen)
        .map(|n| n as usize)
        .chain([ev.endpoints.len()])
        .max()
        .unwrap_or(0)
}

/// Where a run's calls went: by replica where the answers name it (or the
/// connection went straight to an endpoint), else by connection, one
/// replica each.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Sent {
    calls: u64,
    failed: u64,
}

/// Orders labels as people read them: addresses by address, then names.
fn label_order(a: &str, b: &str) -> std::cmp::Ordering {
    let addr = |s: &str| s.parse::<std::net::SocketAddr>().ok();
    match (addr(a), addr(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

fn units(ev: &Evidence, run: &Run) -> BTreeMap<String, Sent> {
    let mut units: BTreeMap<String, Sent> = BTreeMap::new();
    for c in run.per_connection.iter().filter(|c| c.ok + c.failed > 0) {
        let own = match c.replicas.keys().next() {
            Some(name) if c.replicas.len() == 1 => name.clone(),
            _ if ev.endpoints.contains(&c.endpoint) => c.endpoint.clone(),
            _ => format!("connection #{}", c.id),
        };
        if c.replicas.len() >= 2 {
            // An L7 proxy behind this connection balanced its calls; its
            // failures stay with the connection.
            for (name, n) in &c.replicas {
                units.entry(name.clone()).or_default().calls += n;
            }
            if c.failed > 0 {
                let unit = units.entry(format!("connection #{}", c.id)).or_default();
                unit.calls += c.failed;
                unit.failed += c.failed;
            }
            continue;
        }
        let unit = units.entry(own).or_default();
        unit.calls += c.ok + c.failed;
        unit.failed += c.failed;
    }
    units
}

/// The most common failure cause of a run.
fn top_cause(run: &Run) -> Option<&str> {
    run.errors
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(cause, _)| cause.as_str())
}

/// Both checks for one measurement.
pub fn judge(evidence: &Evidence) -> Vec<Check> {
    vec![distribution(evidence), endpoints(evidence)]
}

pub fn distribution(ev: &Evidence) -> Check {
    let (status, summary, remedy) = distribution_verdict(ev);
    let check = Check::new(ID, TITLE, status, summary, ev)
        .with_details(bars(ev))
        .with_refs(REFS);
    if status == Status::Pass {
        check
    } else {
        check.with_remedy(remedy)
    }
}

fn distribution_verdict(ev: &Evidence) -> (Status, String, Vec<String>) {
    let Some(single) = find(ev, SINGLE_CHANNEL) else {
        return (
            Status::Error,
            "no single-channel run was made".to_string(),
            Vec::new(),
        );
    };
    let per = find(ev, PER_ENDPOINT);
    let known = known_replicas(ev);
    let target = &ev.target;
    let sent = single.ok + single.failed;
    let answering = |p: &Run| p.per_endpoint.iter().filter(|e| e.ok > 0).count();
    if sent == 0 {
        let why = single
            .not_sent_reasons
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or("nothing answered", |(w, _)| w.as_str());
        if let Some(p) = per.filter(|p| p.ok > 0) {
            return (
                Status::Fail,
                format!(
                    "no RPC over one channel to {target} reached a server ({why}), while \
                     one channel per endpoint got answers from {} of {}",
                    answering(p),
                    p.per_endpoint.len()
                ),
                vec![
                    "The target itself does not lead to the replicas: check the Service's \
                     selector, port and targetPort (kubectl get svc,endpointslices), and \
                     any NetworkPolicy between this pod and the Service"
                        .to_string(),
                ],
            );
        }
        return (
            Status::Error,
            format!("no RPC over one channel to {target} reached a server ({why})"),
            Vec::new(),
        );
    }
    let units = units(ev, single);
    let by_connection = single.identity == "unknown";
    let elsewhere = match per {
        Some(p) => format!(
            "one channel per endpoint got answers from {} of {}",
            answering(p),
            p.per_endpoint.len()
        ),
        None => format!("{known} endpoints exist"),
    };
    let over = plural(u64::from(single.connections), "connection");
    if known >= 2 && units.len() == 1 {
        let unit = units.keys().next().cloned().unwrap_or_default();
        let went = if by_connection {
            format!(
                "went over one connection (to {}), so to one replica",
                ev_target_addr(single)
            )
        } else {
            format!("reached one replica ({unit}) over {over}")
        };
        if single.failed * 2 > sent {
            return (
                Status::Fail,
                format!(
                    "pinned to a failing replica: every RPC over one channel to {target} \
                     {went}, and {} of {sent} failed ({}), while {elsewhere}",
                    single.failed,
                    top_cause(single).unwrap_or("failed")
                ),
                failing_pin_remedy(),
            );
        }
        let failures = if single.failed > 0 {
            format!("; {} of them failed", single.failed)
        } else {
            String::new()
        };
        return (
            Status::Fail,
            format!(
                "all {sent} RPCs over one channel to {target} {went}, while {elsewhere}{failures}"
            ),
            balancing_remedy(),
        );
    }
    let busiest = units.iter().max_by_key(|(_, u)| u.calls);
    let share = busiest.map_or(0.0, |(_, u)| u.calls as f64 / sent as f64);
    if known >= 2 {
        let fair = 1.0 / known as f64;
        if share > 2.0 * fair {
            let (unit, n) = busiest
                .map(|(l, u)| (l.as_str(), u.calls))
                .unwrap_or(("?", 0));
            let who = if by_connection {
                format!(
                    "one connection ({unit}) carried {} ({n} of {sent}) of the RPCs over one \
                     channel to {target}, so its replica took at least that",
                    percent(share)
                )
            } else {
                format!(
                    "{unit} took {} ({n} of {sent}) of the RPCs over one channel to {target}",
                    percent(share)
                )
            };
            let idle = if by_connection {
                String::new()
            } else {
                format!(
                    "; {} of {known} replicas got none",
                    known.saturating_sub(units.len())
                )
            };
            return (
                Status::Warn,
                format!(
                    "{who}: more than twice the fair share of {} over {known} replicas{idle}",
                    percent(fair)
                ),
                balancing_remedy(),
            );
        }
    }
    let summary = if known <= 1 {
        format!(
            "all {sent} RPCs to {target} went to {} (the only endpoint known; give \
             --headless NAME to compare with every ready pod)",
            busiest.map_or("?", |(l, _)| l.as_str())
        )
    } else if by_connection {
        format!(
            "{sent} RPCs over one channel to {target} spread over {over}, the busiest \
             carrying {} (which replica each connection reached is unknown: the server \
             does not answer podprobe.v1.Identity)",
            percent(share)
        )
    } else {
        format!(
            "{sent} RPCs over one channel to {target} spread over {} replicas (busiest {})",
            units.len(),
            percent(share)
        )
    };
    (Status::Pass, summary, Vec::new())
}

/// The address a run's connections went to (the Service's virtual IP).
fn ev_target_addr(run: &Run) -> String {
    run.per_connection
        .first()
        .map_or_else(|| "?".to_string(), |c| c.endpoint.clone())
}

/// How an endpoint's failures read, worst first.
fn endpoint_problem(e: &EndpointEvidence, names: &BTreeMap<String, String>) -> String {
    let name = match e.replica.as_ref().or_else(|| names.get(&e.endpoint)) {
        Some(replica) => format!("{replica} ({})", e.endpoint),
        None => e.endpoint.clone(),
    };
    let causes: Vec<String> = {
        let mut causes: Vec<(&String, &u64)> = e.errors.iter().collect();
        causes.sort_by(|a, b| b.1.cmp(a.1));
        causes
            .iter()
            .take(2)
            .map(|(cause, n)| format!("{cause} (x{n})"))
            .collect()
    };
    let tried = e.ok + e.failed;
    let mut text = format!("{name}: ");
    if tried > 0 {
        let _ = write!(text, "{} of {tried} RPCs failed", e.failed);
    } else {
        text.push_str("no RPC reached it");
    }
    if e.connect_failures > 0 {
        let _ = write!(
            text,
            ", {}",
            plural(e.connect_failures, "failed connection attempt")
        );
    }
    if !causes.is_empty() {
        let _ = write!(text, ": {}", causes.join("; "));
    }
    text
}

/// Remedies for the kinds of failure seen.
fn endpoint_remedy(problems: &[&EndpointEvidence]) -> Vec<String> {
    let causes: String = problems
        .iter()
        .flat_map(|e| e.errors.keys())
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    let mut remedy = Vec::new();
    let has = |needle: &str| causes.contains(needle);
    if has("UNAVAILABLE:") || has("NOT_SERVING") || has("SERVICE_UNKNOWN") {
        remedy.push(
            "A replica that answers UNAVAILABLE or NOT_SERVING still gets traffic: give the pods \
             a gRPC readiness probe (readinessProbe.grpc, Kubernetes 1.24+) so they leave the \
             endpoints while they cannot serve, and read why in kubectl logs"
                .to_string(),
        );
    }
    if has("connect to") || has("closed the connection without answering") {
        remedy.push(
            "An endpoint that refuses or drops connections is listed but not listening: check \
             the pod listens on the targetPort (kubectl get endpointslices), whether it is \
             restarting (kubectl get pods), and NetworkPolicies (podprobe doctor --tcp \
             ADDR:PORT tells DROP from REJECT)"
                .to_string(),
        );
    }
    if has("HTTP/1") {
        remedy.push(
            "The port answers HTTP/1.x, not gRPC: the Service's targetPort points at an HTTP/1 \
             port, or a proxy in between speaks only HTTP/1.1; point it at the gRPC port or \
             enable HTTP/2 (h2c) on the proxy"
                .to_string(),
        );
    }
    if has("speaks TLS") || has("not TLS") || has("TLS") {
        remedy.push(
            "TLS does not match: use --tls for a TLS port and --plaintext for h2c; trust a \
             private CA with --ca FILE and give the certificate's name with --authority NAME"
                .to_string(),
        );
    }
    if has("DEADLINE_EXCEEDED") {
        remedy.push(
            "Calls hit the deadline (--timeout): that replica is slow or overloaded; compare its \
             CPU and latency with the others, or raise --timeout if the method is slow by design"
                .to_string(),
        );
    }
    if has("reset") || has("closed before the answer") || has("closed after GOAWAY") {
        remedy.push(
            "Connections cut mid-call: a replica crashing or restarting (kubectl get pods, \
             RESTARTS), a server closing connections without a grace period, or a middlebox \
             dropping the flow"
                .to_string(),
        );
    }
    if remedy.is_empty() {
        remedy.push(
            "Read the failing replica's logs (kubectl logs POD) for the status it returns"
                .to_string(),
        );
    }
    remedy
}

pub fn endpoints(ev: &Evidence) -> Check {
    let run = find(ev, PER_ENDPOINT).or_else(|| find(ev, SINGLE_CHANNEL));
    let Some(run) = run else {
        return Check::new(
            ENDPOINTS_ID,
            ENDPOINTS_TITLE,
            Status::Error,
            "no run was made",
            ev,
        );
    };
    // Replica names by endpoint, from whichever run's answers gave them (a
    // replica that died early answered only the first run).
    let names: BTreeMap<String, String> = ev
        .runs
        .iter()
        .flat_map(|r| &r.per_endpoint)
        .filter_map(|e| Some((e.endpoint.clone(), e.replica.clone()?)))
        .collect();
    let failing: Vec<&EndpointEvidence> = run.per_endpoint.iter().filter(|e| e.failing()).collect();
    let flaky: Vec<&EndpointEvidence> = run
        .per_endpoint
        .iter()
        .filter(|e| !e.failing() && (e.failed > 0 || e.connect_failures > 0))
        .collect();
    let total = run.per_endpoint.len() as u64;
    let answered = run.per_endpoint.iter().filter(|e| e.ok > 0).count() as u64;
    let mut notes = Vec::new();
    if run.not_sent > 0 {
        let why = run
            .not_sent_reasons
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or("", |(w, _)| w.as_str());
        notes.push(format!(
            "{} of {} RPCs not sent ({why})",
            run.not_sent, run.rpcs
        ));
    }
    if run.retried > 0 {
        notes.push(format!(
            "{} refused unseen by the server and sent again",
            plural(run.retried, "RPC")
        ));
    }
    let insecure = ev.tls.as_ref().is_some_and(|t| !t.verified);
    if insecure {
        notes.push(
            "TLS certificates were NOT verified (--insecure): anyone on the path could be \
             answering"
                .to_string(),
        );
    }
    let note = if notes.is_empty() {
        String::new()
    } else {
        format!("; {}", notes.join("; "))
    };
    let over = if run.mode == PER_ENDPOINT {
        "one channel per endpoint"
    } else {
        "one channel"
    };
    let (status, summary, remedy) = if !failing.is_empty() {
        let problems: Vec<String> = failing
            .iter()
            .map(|e| endpoint_problem(e, &names))
            .collect();
        (
            Status::Fail,
            format!(
                "{} of {total} endpoints fail ({over}): {}{note}",
                failing.len(),
                problems.join("; ")
            ),
            endpoint_remedy(&failing),
        )
    } else if !flaky.is_empty() {
        let problems: Vec<String> = flaky.iter().map(|e| endpoint_problem(e, &names)).collect();
        (
            Status::Warn,
            format!(
                "{} of {total} endpoints failed some RPCs, then answered again ({over}): {}{note}",
                flaky.len(),
                problems.join("; ")
            ),
            endpoint_remedy(&flaky),
        )
    } else if insecure {
        (
            Status::Warn,
            format!("{answered} of {total} endpoints answered every RPC ({over}){note}"),
            vec![
                "Trust the server's CA with --ca FILE (or SSL_CERT_FILE) instead of --insecure, \
                 and give its certificate's name with --authority NAME"
                    .to_string(),
            ],
        )
    } else {
        (
            Status::Pass,
            format!(
                "{} answered every RPC ({over}: {} ok){note}",
                if total == 1 {
                    "the endpoint".to_string()
                } else {
                    format!("all {total} endpoints")
                },
                run.ok
            ),
            Vec::new(),
        )
    };
    let details = run
        .per_endpoint
        .iter()
        .map(|e| {
            let state = if e.failing() {
                "FAILING"
            } else if e.failed > 0 || e.connect_failures > 0 {
                "recovered"
            } else {
                "ok"
            };
            let mut line = format!(
                "{:<21} {:<12} {:>7} ok {:>7} failed  {}",
                e.endpoint,
                e.replica
                    .as_ref()
                    .or_else(|| names.get(&e.endpoint))
                    .map_or("-", String::as_str),
                e.ok,
                e.failed,
                state
            );
            if let Some((cause, n)) = e.errors.iter().max_by_key(|(_, n)| **n) {
                let _ = write!(line, ": {cause} (x{n})");
            }
            line
        })
        .collect::<Vec<_>>();
    let check = Check::new(ENDPOINTS_ID, ENDPOINTS_TITLE, status, summary, ev)
        .with_details(details)
        .with_refs(ENDPOINT_REFS);
    if status == Status::Pass {
        check
    } else {
        check.with_remedy(remedy)
    }
}

fn bar(name: &str, width: usize, n: u64, total: u64) -> String {
    let share = if total > 0 {
        n as f64 / total as f64
    } else {
        0.0
    };
    let filled = ((share * BAR_WIDTH as f64).round() as usize).min(BAR_WIDTH);
    format!(
        "  {name:<width$} {}{} {n:>6} {:>5.1}%",
        "█".repeat(filled),
        "·".repeat(BAR_WIDTH - filled),
        share * 100.0
    )
}

/// How each run's calls spread: a bar per replica (every replica of the
/// same kind listed in every run, so a pinned channel shows as one full bar
/// and empty ones), or per connection when replicas are unknown.
fn bars(ev: &Evidence) -> Vec<String> {
    let mut lines = vec![format!("calls: {} ({})", ev.method, probe_note(&ev.rpc))];
    if let Some(tls) = &ev.tls {
        if !tls.verified {
            lines.push(
                "TLS NOT VERIFIED (--insecure): the server's certificate was not checked"
                    .to_string(),
            );
        }
    }
    for run in &ev.runs {
        let mut head = format!(
            "{}: {} RPCs, {} ok, {} failed",
            run.mode, run.rpcs, run.ok, run.failed
        );
        if run.not_sent > 0 {
            let _ = write!(head, ", {} not sent", run.not_sent);
        }
        let _ = write!(
            head,
            ", {}",
            plural(u64::from(run.connections), "connection")
        );
        if let (Some(p50), Some(p99)) = (run.p50_ms, run.p99_ms) {
            let _ = write!(head, ", p50 {p50:.2} ms, p99 {p99:.2} ms");
        }
        if run.retried > 0 {
            let _ = write!(head, ", {} sent again", run.retried);
        }
        lines.push(head);
        let sent = run.ok + run.failed;
        let failed_note = |u: &Sent| {
            if u.failed > 0 {
                format!("  ({} failed)", u.failed)
            } else {
                String::new()
            }
        };
        if run.identity == "unknown" {
            let mut conns: Vec<_> = run.per_connection.iter().collect();
            conns.sort_by(|a, b| {
                (b.ok + b.failed)
                    .cmp(&(a.ok + a.failed))
                    .then(a.id.cmp(&b.id))
            });
            let labels: Vec<String> = conns
                .iter()
                .map(|c| {
                    format!(
                        "#{} {:.1}-{:.1}s",
                        c.id,
                        c.opened_ms / 1000.0,
                        c.closed_ms / 1000.0
                    )
                })
                .collect();
            let width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
            for (c, label) in conns.iter().zip(&labels).take(MAX_BARS) {
                let unit = Sent {
                    calls: c.ok + c.failed,
                    failed: c.failed,
                };
                lines.push(format!(
                    "{}  {}{}",
                    bar(label, width, unit.calls, sent),
                    c.closed_by,
                    failed_note(&unit)
                ));
            }
            if conns.len() > MAX_BARS {
                let rest: u64 = conns[MAX_BARS..].iter().map(|c| c.ok + c.failed).sum();
                lines.push(format!(
                    "  ... {} more carried {rest}",
                    plural((conns.len() - MAX_BARS) as u64, "connection")
                ));
            }
            lines.push(format!(
                "  (replicas unknown: {sent} RPCs went over {}, each to one replica)",
                plural(u64::from(run.connections), "connection")
            ));
        } else {
            let mut names: Vec<String> = ev
                .runs
                .iter()
                .filter(|r| r.identity == run.identity)
                .flat_map(|r| units(ev, r).into_keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            names.sort_by(|a, b| label_order(a, b));
            let own = units(ev, run);
            let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
            for name in &names {
                let unit = own.get(name).copied().unwrap_or_default();
                lines.push(format!(
                    "{}{}",
                    bar(name, width, unit.calls, sent),
                    failed_note(&unit)
                ));
            }
        }
        for (cause, n) in &run.errors {
            lines.push(format!("  failed {n}: {cause}"));
        }
        for (why, n) in &run.not_sent_reasons {
            lines.push(format!("  not sent {n}: {why}"));
        }
    }
    lines
}

/// What the probe call tells, for people.
fn probe_note(rpc: &str) -> &'static str {
    match rpc {
        "whoami" => "podprobe.v1.Identity: each answer names its replica",
        "health" => {
            "grpc.health.v1: NOT_SERVING counts as failed; a connection goes to one replica"
        }
        "method" => "--method, empty request: any answer but an error of availability counts",
        _ => {
            "the server has neither podprobe.v1.Identity nor grpc.health.v1.Health: its \
             UNIMPLEMENTED answer counts as the connection's reply"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const ENDPOINTS: [&str; 3] = ["10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051"];
    const VIP: &str = "10.96.0.30:50051";

    /// A connection: id, where it went, the replicas its answers named, ok, failed.
    fn conn(id: u32, endpoint: &str, names: &[(&str, u64)], ok: u64, failed: u64) -> Value {
        json!({
            "id": id, "endpoint": endpoint, "local": format!("10.244.0.2:{}", 40000 + id),
            "replicas": names.iter().map(|(n, c)| (n.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
            "opened_ms": 0.0, "closed_ms": 100.0, "closed_by": "podprobe: end of run",
            "ok": ok, "failed": failed, "refused": 0,
        })
    }

    fn endpoint(addr: &str, ok: u64, failed: u64, failing: bool, errors: &[(&str, u64)]) -> Value {
        json!({
            "endpoint": addr, "replica": null, "connections": 1, "connect_failures": 0,
            "ok": ok, "failed": failed,
            "errors": errors.iter().map(|(c, n)| (c.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "last_ok_ms": if ok > 0 { Some(50.0) } else { None },
            "last_failure_ms": match (failing, failed) {
                (true, _) => Some(90.0),
                (false, 0) => None,
                (false, _) => Some(10.0),
            },
        })
    }

    fn run(mode: &str, identity: &str, conns: Vec<Value>, per_endpoint: Vec<Value>) -> Value {
        let ok: u64 = conns.iter().map(|c| c["ok"].as_u64().unwrap()).sum();
        let failed: u64 = conns.iter().map(|c| c["failed"].as_u64().unwrap()).sum();
        let mut per_replica = serde_json::Map::new();
        for c in &conns {
            for (name, n) in c["replicas"].as_object().unwrap() {
                let prev = per_replica.get(name).and_then(Value::as_u64).unwrap_or(0);
                per_replica.insert(name.clone(), json!(prev + n.as_u64().unwrap()));
            }
        }
        let mut errors = serde_json::Map::new();
        for e in &per_endpoint {
            for (cause, n) in e["errors"].as_object().unwrap() {
                errors.insert(cause.clone(), n.clone());
            }
        }
        json!({
            "mode": mode, "identity": identity, "rpcs": ok + failed, "ok": ok, "failed": failed,
            "not_sent": 0, "retried": 0, "connections": conns.len(), "connect_failures": 0,
            "replicas_seen": if identity == "unknown" { None } else { Some(per_replica.len().max(if identity == "endpoint" { per_endpoint.len() } else { 0 })) },
            "per_replica": per_replica, "max_share": null, "max_connection_share": null,
            "fair_share": null, "p50_ms": 0.4, "p99_ms": 1.2, "statuses": {}, "errors": errors,
            "not_sent_reasons": {}, "stopped": null, "duration_ms": 100.0,
            "per_connection": conns, "per_endpoint": per_endpoint,
        })
    }

    fn evidence(rpc: &str, runs: Vec<Value>, endpoints: &[&str]) -> Evidence {
        serde_json::from_value(json!({
            "target": "grpc.default:50051", "balancing": "pick_first", "authority": "grpc.default:50051",
            "tls": null, "endpoints": endpoints, "endpoints_from": "headless backends",
            "rpc": rpc, "method": "/podprobe.v1.Identity/Whoami", "interrupted": false, "runs": runs,
        }))
        .unwrap()
    }

    fn even_per_endpoint(identity: &str) -> Value {
        let conns = (0..3)
            .map(|i| {
                let names: Vec<(&str, u64)> = if identity == "whoami" {
                    vec![(["web-a", "web-b", "web-c"][i], 100)]
                } else {
                    vec![]
                };
                conn(10 + i as u32, ENDPOINTS[i], &names, 100, 0)
            })
            .collect();
        let eps = ENDPOINTS
            .iter()
            .map(|e| endpoint(e, 100, 0, false, &[]))
            .collect();
        run(PER_ENDPOINT, identity, conns, eps)
    }

    #[test]
    fn a_pinned_single_channel_fails_and_draws_one_full_bar() {
        let ev = evidence(
            "whoami",
            vec![
                run(
                    SINGLE_CHANNEL,
                    "whoami",
                    vec![conn(1, VIP, &[("web-b", 300)], 300, 0)],
                    vec![endpoint(VIP, 300, 0, false, &[])],
                ),
                even_per_endpoint("whoami"),
            ],
            &ENDPOINTS,
        );
        let check = distribution(&ev);
        assert_eq!(check.status, Status::Fail, "{}", check.summary);
        assert!(
            check
                .summary
                .contains("reached one replica (web-b) over 1 connection,"),
            "{}",
            check.summary
        );
        assert!(
            check.summary.contains("got answers from 3 of 3"),
            "{}",
            check.summary
        );
        assert_eq!(check.remedy, balancing_remedy());
        let text = check.details.join("\n");
        assert!(
            text.contains(&format!("web-b {}", "█".repeat(BAR_WIDTH))),
            "{text}"
        );
        assert!(
            text.contains(&format!("web-a {}", "·".repeat(BAR_WIDTH))),
            "{text}"
        );
        assert!(
            text.contains("single-channel: 300 RPCs, 300 ok, 0 failed, 1 connection,"),
            "{text}"
        );
    }

    #[test]
    fn one_connection_through_a_virtual_ip_fails_without_identity() {
        let ev = evidence(
            "health",
            vec![
                run(
                    SINGLE_CHANNEL,
                    "unknown",
                    vec![conn(1, VIP, &[], 300, 0)],
                    vec![endpoint(VIP, 300, 0, false, &[])],
                ),
                even_per_endpoint("endpoint"),
            ],
            &ENDPOINTS,
        );
        let check = distribution(&ev);
        assert_eq!(check.status, Status::Fail, "{}", check.summary);
        assert!(
            check
                .summary
                .contains("went over one connection (to 10.96.0.30:50051), so to one replica"),
            "{}",
            check.summary
        );
        assert!(check.details.join("\n").contains("replicas unknown"));
    }

    #[test]
    fn pinned_to_a_failing_replica_is_its_own_fail_with_its_own_fix() {
        let ev = evidence(
            "health",
            vec![
                run(
                    SINGLE_CHANNEL,
                    "unknown",
                    vec![conn(1, VIP, &[], 0, 300)],
                    vec![endpoint(
                        VIP,
                        0,
                        300,
                        true,
                        &[("UNAVAILABLE: draining", 300)],
                    )],
                ),
                even_per_endpoint("endpoint"),
            ],
            &ENDPOINTS,
        );
        let check = distribution(&ev);
        assert_eq!(check.status, Status::Fail);
        assert!(
            check.summary.starts_with("pinned to a failing replica"),
            "{}",
            check.summary
        );
        assert!(
            check
                .summary
                .contains("300 of 300 failed (UNAVAILABLE: draining)"),
            "{}",
            check.summary
        );
        assert_eq!(check.remedy, failing_pin_remedy());
    }

    #[test]
    fn spread_passes_and_an_l7_proxy_behind_one_connection_counts_as_spread() {
        let spread = (0..3)
            .map(|i| {
                conn(
                    1 + i,
                    ENDPOINTS[i as usize],
                    &[(["web-a", "web-b", "web-c"][i as usize], 100)],
                    100,
                    0,
                )
            })
            .collect();
        let ev = evidence(
            "whoami",
            vec![
                run(SINGLE_CHANNEL, "whoami", spread, vec![]),
                even_per_endpoint("whoami"),
            ],
            &ENDPOINTS,
        );
        let check = distribution(&ev);
        assert_eq!(check.status, Status::Pass, "{}", check.summary);
        assert!(check.remedy.is_empty());
        let proxied = vec![conn(
            1,
            VIP,
            &[("web-a", 100), ("web-b", 100), ("web-c", 100)],
            300,
            0,
        )];
        let ev = evidence(
            "whoami",
            vec![
                run(SINGLE_CHANNEL, "whoami", proxied, vec![]),
                even_per_endpoint("whoami"),
            ],
            &ENDPOINTS,
        );
        let check = distribution(&ev);
        assert_eq!(check.status, Status::Pass, "{}", check.summary);
        assert!(
            check
                .summary
                .contains("spread over 3 replicas (busiest 33%)"),
            "{}",
            check.summary
        );
    }

    #[test]
    fn skew_above_twice_the_fair_share_warns_by_replica_or_by_connection() {
        let mut ten: Vec<&str> = Vec::new();
        let names: Vec<String> = (0..10).map(|i| format!("10.0.1.{i}:50051")).collect();
        ten.extend(names.iter().map(String::as_str));
        // Three connections (MaxConnectionAge), named: 48% on one, 7 idle.
        let named = vec![
            conn(1, VIP, &[("web-a", 4800)], 4800, 0),
            conn(2, VIP, &[("web-b", 3000)], 3000, 0),
            conn(3, VIP, &[("web-c", 2200)], 2200, 0),
        ];
        let ev = evidence(
            "whoami",
            vec![run(SINGLE_CHANNEL, "whoami", named, vec![])],
            &ten,
        );
        let check = distribution(&ev);
        assert_eq!(check.status, Status::Warn, "{}", check.summary);
        assert!(
            check.summary.starts_with("web-a took 48% (4800 of 10000)"),
            "{}",
            check.summary
        );
        assert!(
            check.summary.contains("7 of 10 replicas got none"),
            "{}",
            check.summary
        );
        // Unnamed: the busiest connection's share bounds its replica's.
        let unnamed = vec![conn(1, VIP, &[], 6900, 0), conn(2, VIP, &[], 3100, 0)];
        let ev = evidence(
            "health",
            vec![run(SINGLE_CHANNEL, "unknown", unnamed, vec![])],
            &ENDPOINTS,
        );
        let check = distribution(&ev);
        assert_eq!(check.status, Status::Warn, "{}", check.summary);
        assert!(
            check
                .summary
                .contains("one connection (connection #1) carried 69%"),
            "{}",
            check.summary
        );
        assert!(check.summary.contains("at least that"), "{}", check.summary);
        let even = vec![conn(1, VIP, &[], 5000, 0), conn(2, VIP, &[], 5000, 0)];
        let ev = evidence(
            "health",
            vec![run(SINGLE_CHANNEL, "unknown", even, vec![])],
            &ENDPOINTS,
        );
        let check = distribution(&ev);
        assert_eq!(check.status, Status::Pass, "{}", check.summary);
        assert!(
            check
                .summary
                .contains("spread over 2 connections, the busiest carrying 50%"),
            "{}",
            check.summary
        );
    }

    #[test]
    fn without_other_endpoints_known_it_passes_and_says_how_to_compare() {
        let ev = evidence(
            "whoami",
            vec![run(
                SINGLE_CHANNEL,
                "whoami",
                vec![conn(1, VIP, &[("web-a", 300)], 300, 0)],
                vec![],
            )],
            &[VIP],
        );
        let check = distribution(&ev);
        assert_eq!(check.status, Status::Pass, "{}", check.summary);
        assert!(check.summary.contains("--headless"), "{}", check.summary);
    }

    #[test]
    fn a_single_channel_that_reached_nothing_is_an_error_or_a_broken_service() {
        let mut nothing = run(SINGLE_CHANNEL, "unknown", vec![], vec![]);
        nothing["rpcs"] = json!(300);
        nothing["not_sent"] = json!(300);
        nothing["not_sent_reasons"] =
            json!({"no endpoint ready: connect to 10.96.0.30:50051: Connection refused": 300});
        let ev = evidence("health", vec![nothing.clone()], &[VIP]);
        let check = distribution(&ev);
        assert_eq!(check.status, Status::Error, "{}", check.summary);
        assert!(
            check.summary.contains("Connection refused"),
            "{}",
            check.summary
        );
        let ev = evidence(
            "health",
            vec![nothing, even_per_endpoint("endpoint")],
            &ENDPOINTS,
        );
        let check = distribution(&ev);
        assert_eq!(check.status, Status::Fail, "{}", check.summary);
        assert!(check.remedy[0].contains("targetPort"));
    }

    #[test]
    fn endpoints_pass_warn_and_fail_by_their_last_word() {
        let ev = evidence(
            "health",
            vec![
                run(SINGLE_CHANNEL, "unknown", vec![], vec![]),
                even_per_endpoint("endpoint"),
            ],
            &ENDPOINTS,
        );
        let check = endpoints(&ev);
        assert_eq!(check.status, Status::Pass, "{}", check.summary);
        assert_eq!(
            check.summary,
            "all 3 endpoints answered every RPC (one channel per endpoint: 300 ok)"
        );

        let mut per = even_per_endpoint("endpoint");
        per["per_endpoint"][1] = endpoint(
            ENDPOINTS[1],
            0,
            100,
            true,
            &[("UNAVAILABLE: health NOT_SERVING", 100)],
        );
        let ev = evidence("health", vec![per], &ENDPOINTS);
        let check = endpoints(&ev);
        assert_eq!(check.status, Status::Fail, "{}", check.summary);
        assert!(
            check.summary.contains("1 of 3 endpoints fail"),
            "{}",
            check.summary
        );
        assert!(
            check.summary.contains(
                "10.0.0.2:50051: 100 of 100 RPCs failed: UNAVAILABLE: health NOT_SERVING (x100)"
            ),
            "{}",
            check.summary
        );
        assert!(
            check.remedy[0].contains("readinessProbe.grpc"),
            "{:?}",
            check.remedy
        );

        let mut per = even_per_endpoint("endpoint");
        per["per_endpoint"][2] = endpoint(
            ENDPOINTS[2],
            97,
            3,
            false,
            &[("UNAVAILABLE: connection reset by the server", 3)],
        );
        let ev = evidence("health", vec![per], &ENDPOINTS);
        let check = endpoints(&ev);
        assert_eq!(check.status, Status::Warn, "{}", check.summary);
        assert!(
            check.summary.contains("then answered again"),
            "{}",
            check.summary
        );
        assert!(
            check.remedy.iter().any(|r| r.contains("RESTARTS")),
            "{:?}",
            check.remedy
        );
    }

    #[test]
    fn endpoints_name_what_a_non_grpc_port_speaks_and_insecure_tls_is_loud() {
        let mut per = even_per_endpoint("endpoint");
        let mut http1 = endpoint(
            ENDPOINTS[0],
            0,
            0,
            true,
            &[(
                "speaks HTTP/1.1, not HTTP/2 (answered 'HTTP/1.1 400 Bad Request', server nginx)",
                2,
            )],
        );
        http1["connect_failures"] = json!(2);
        per["per_endpoint"][0] = http1;
        let ev = evidence("health", vec![per], &ENDPOINTS);
        let check = endpoints(&ev);
        assert_eq!(check.status, Status::Fail, "{}", check.summary);
        assert!(
            check
                .summary
                .contains("no RPC reached it, 2 failed connection attempts: speaks HTTP/1.1"),
            "{}",
            check.summary
        );
        assert!(
            check.remedy.iter().any(|r| r.contains("targetPort")),
            "{:?}",
            check.remedy
        );

        let mut ev = evidence("health", vec![even_per_endpoint("endpoint")], &ENDPOINTS);
        ev.tls = Some(super::super::measure::TlsEvidence {
            server_name: "grpc.default".into(),
            verified: false,
            trust: "none".into(),
        });
        let check = endpoints(&ev);
        assert_eq!(check.status, Status::Warn);
        assert!(
            check.summary.contains("NOT verified (--insecure)"),
            "{}",
            check.summary
        );
        assert!(distribution(&ev)
            .details
            .iter()
            .any(|l| l.starts_with("TLS NOT VERIFIED")));
    }

    #[test]
    fn a_replica_that_died_early_is_named_from_the_run_that_heard_it() {
        let mut single = run(
            SINGLE_CHANNEL,
            "whoami",
            vec![conn(1, ENDPOINTS[1], &[("web-b", 10)], 10, 0)],
            vec![],
        );
        single["per_endpoint"] = json!([endpoint(ENDPOINTS[1], 10, 0, false, &[])]);
        single["per_endpoint"][0]["replica"] = json!("web-b");
        let mut per = even_per_endpoint("whoami");
        per["per_endpoint"][1] = endpoint(
            ENDPOINTS[1],
            0,
            0,
            true,
            &[("connect to 10.0.0.2:50051: Connection refused", 3)],
        );
        per["per_endpoint"][1]["connect_failures"] = json!(3);
        let ev = evidence("whoami", vec![single, per], &ENDPOINTS);
        let check = endpoints(&ev);
        assert_eq!(check.status, Status::Fail, "{}", check.summary);
        assert!(
            check
                .summary
                .contains("web-b (10.0.0.2:50051): no RPC reached it"),
            "{}",
            check.summary
        );
    }
}
