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
use crate::report::{Check, Status};

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

fn plural(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
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
                    "  ... {} more connections carried {rest}",
                    conns.len() - MAX_BARS
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
