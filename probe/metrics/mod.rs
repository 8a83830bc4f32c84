//! The metrics podprobe exports, for `watch`'s `/metrics` and `doctor
//! --push`: one catalogue of families (name, type, unit, bounded labels),
//! the [`Sample`]s each area derives from its checks' evidence (the area's
//! `metrics.rs`, walked through the registry in `checks.rs`), and
//! [`Metrics`], which keeps them in prometheus-client's types and encodes
//! them as Prometheus text or OpenMetrics.
//!
//! Labels carry only bounded values: check ids, statuses, nameservers,
//! query types, rcodes and the targets given on the command line. Pod,
//! namespace and node are target labels (the scrape config's, or the
//! Pushgateway's grouping key), never labels of the series themselves.

pub mod push;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family as LabelledFamily, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};

use crate::report::{Check, Status};

/// Every metric family podprobe exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    CheckStatus,
    CheckDuration,
    Cycles,
    CycleOverruns,
    DnsLookupDuration,
    DnsQueries,
    DnsRaceLost,
    TcpConnectDuration,
    TcpConnect,
    GrpcReplicaMaxShare,
    KeepaliveIdleTimeout,
    ConntrackEntries,
    ConntrackMax,
    ConntrackInsertFailed,
}

/// How a family's samples are applied.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// The state of the last cycle: every cycle replaces all of its series,
    /// so a check that did not run this time leaves no stale value.
    Gauge,
    /// Counts of events since start: a sample adds its value.
    Counter,
    /// Observations since start: a sample is one observation.
    Histogram(&'static [f64]),
}

/// Latency buckets in seconds: sub-millisecond answers up to the resolver's
/// 5 s timeout and its second attempt.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

struct Spec {
    /// The name as registered: prometheus-client adds the unit and, for
    /// counters, `_total`.
    name: &'static str,
    unit: Option<Unit>,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
}

impl Family {
    const ALL: [Family; 14] = [
        Family::CheckStatus,
        Family::CheckDuration,
        Family::Cycles,
        Family::CycleOverruns,
        Family::DnsLookupDuration,
        Family::DnsQueries,
        Family::DnsRaceLost,
        Family::TcpConnectDuration,
        Family::TcpConnect,
        Family::GrpcReplicaMaxShare,
        Family::KeepaliveIdleTimeout,
        Family::ConntrackEntries,
        Family::ConntrackMax,
        Family::ConntrackInsertFailed,
    ];

    fn spec(self) -> Spec {
        let spec = |name, unit, help, kind, labels| Spec {
            name,
            unit,
            help,
            kind,
            labels,
        };
        match self {
            Family::CheckStatus => spec(
                "podprobe_check_status",
                None,
                "1 for the status the check has now, 0 for the others",
                Kind::Gauge,
                &["check", "status"],
            ),
            Family::CheckDuration => spec(
                "podprobe_check_duration",
                Some(Unit::Seconds),
                "How long the check took in the last cycle",
                Kind::Gauge,
                &["check"],
            ),
            Family::Cycles => spec(
                "podprobe_cycles",
                None,
                "Cycles of checks run",
                Kind::Counter,
                &[],
            ),
            Family::CycleOverruns => spec(
                "podprobe_cycle_overruns",
                None,
                "Cycles that took longer than the interval (the next one waited; cycles never overlap)",
                Kind::Counter,
                &[],
            ),
            Family::DnsLookupDuration => spec(
                "podprobe_dns_lookup_duration",
                Some(Unit::Seconds),
                "Time to a DNS reply, per query sent (queries without a reply are counted in podprobe_dns_queries_total with rcode TIMEOUT)",
                Kind::Histogram(LATENCY_BUCKETS),
                &["nameserver", "qtype", "candidate"],
            ),
            Family::DnsQueries => spec(
                "podprobe_dns_queries",
                None,
                "DNS queries sent, by nameserver and response code (TIMEOUT: no reply)",
                Kind::Counter,
                &["nameserver", "rcode"],
            ),
            Family::DnsRaceLost => spec(
                "podprobe_dns_race_lost",
                None,
                "A/AAAA lookups that lost a reply, by sending pattern (parallel-same-socket losing alone is the conntrack insert race)",
                Kind::Counter,
                &["pattern"],
            ),
            Family::TcpConnectDuration => spec(
                "podprobe_tcp_connect_duration",
                Some(Unit::Seconds),
                "Time of successful TCP connects",
                Kind::Histogram(LATENCY_BUCKETS),
                &["target"],
            ),
            Family::TcpConnect => spec(
                "podprobe_tcp_connect",
                None,
                "TCP connects, by outcome (ok, refused, timeout, unreachable, error)",
                Kind::Counter,
                &["target", "outcome"],
            ),
            Family::GrpcReplicaMaxShare => spec(
                "podprobe_grpc_replica_max_share",
                None,
                "Share of one channel's RPCs that reached the busiest replica (1: pinned to one)",
                Kind::Gauge,
                &["target"],
            ),
            Family::KeepaliveIdleTimeout => spec(
                "podprobe_keepalive_idle_timeout",
                Some(Unit::Seconds),
                "HTTP keep-alive idle timeout: the app's measured on the wire, the proxy's read from its config",
                Kind::Gauge,
                &["upstream", "side"],
            ),
            Family::ConntrackEntries => spec(
                "podprobe_conntrack_entries",
                None,
                "Entries in the conntrack table (nf_conntrack_count)",
                Kind::Gauge,
                &[],
            ),
            Family::ConntrackMax => spec(
                "podprobe_conntrack_max",
                None,
                "Size of the conntrack table (nf_conntrack_max)",
                Kind::Gauge,
                &[],
            ),
            Family::ConntrackInsertFailed => spec(
                "podprobe_conntrack_insert_failed",
                None,
                "The node's conntrack insert_failed events, summed over CPUs",
                Kind::Counter,
                &[],
            ),
        }
    }

    /// The label names of this family, in the order samples give values.
    pub fn labels(self) -> &'static [&'static str] {
        self.spec().labels
    }
}

/// One value an area derived from its evidence: set (gauge), added
/// (counter) or observed (histogram), by the family's type.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub family: Family,
    /// Values for the family's labels, in order.
    pub labels: Vec<String>,
    pub value: f64,
}

impl Sample {
    pub fn new(family: Family, labels: &[&str], value: f64) -> Sample {
        debug_assert_eq!(labels.len(), family.labels().len(), "{family:?}");
        Sample {
            family,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            value,
        }
    }
}

/// Milliseconds (the report's `*_ms`) as the seconds metrics are in,
/// rounded to the microsecond the report keeps.
pub fn seconds(ms: f64) -> f64 {
    (ms * 1e3).round() / 1e6
}

/// A check's evidence as the area's own typed view of it (the documented
/// keys it needs); `None` for a check that has none (skipped, in error).
pub fn evidence<'a, T: serde::Deserialize<'a>>(check: &'a Check) -> Option<T> {
    if matches!(check.status, Status::Skip | Status::Error) {
        return None;
    }
    T::deserialize(&check.evidence).ok()
}

/// The samples every check yields whatever its area: its status and time.
/// Checks sharing an id (one per `--grpc` target) report the worst status
/// and their summed time.
pub fn check_samples(checks: &[Check]) -> Vec<Sample> {
    let mut ids: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut samples = Vec::new();
    for id in ids {
        let same: Vec<&Check> = checks.iter().filter(|c| c.id == id).collect();
        let status = same
            .iter()
            .map(|c| c.status)
            .max_by_key(|s| (s.severity(), *s != Status::Skip))
            .unwrap_or(Status::Skip);
        for candidate in STATUSES {
            let current = if candidate == status { 1.0 } else { 0.0 };
            samples.push(Sample::new(
                Family::CheckStatus,
                &[id, status_label(candidate)],
                current,
            ));
        }
        let ms = same.iter().map(|c| c.duration_ms).sum::<f64>();
        samples.push(Sample::new(Family::CheckDuration, &[id], seconds(ms)));
    }
    samples
}

const STATUSES: [Status; 5] = [
    Status::Pass,
    Status::Warn,
    Status::Fail,
    Status::Skip,
    Status::Error,
];

fn status_label(status: Status) -> &'static str {
    match status {
        Status::Pass => "pass",
        Status::Warn => "warn",
        Status::Fail => "fail",
        Status::Skip => "skip",
        Status::Error => "error",
    }
}

type Labels = Vec<(&'static str, String)>;

enum Store {
    Gauge(LabelledFamily<Labels, Gauge<f64, AtomicU64>>),
    /// Every counter counts events: whole numbers.
    Counter(LabelledFamily<Labels, Counter>),
    Histogram(LabelledFamily<Labels, Histogram, Buckets>),
}

/// Makes a family's histograms, each with the family's buckets.
#[derive(Clone, Copy)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

fn register(registry: &mut Registry, spec: &Spec, metric: impl Metric) {
    match spec.unit.clone() {
        Some(unit) => registry.register_with_unit(spec.name, spec.help, unit, metric),
        None => registry.register(spec.name, spec.help, metric),
    }
}

/// The exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: what a plain `curl` and the
    /// Pushgateway get.
    Text,
    /// OpenMetrics 1.0 text: what Prometheus asks for first.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format an `Accept` header prefers (by q-value; OpenMetrics on a
    /// tie, as the Prometheus server's own header ranks it first), text
    /// when it names neither.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let mut best = (0.0_f64, Format::Text);
        let mut text_q = None;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f64>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" if q > best.0 => best = (q, Format::OpenMetrics),
                "text/plain" | "*/*" | "text/*" => {
                    text_q = Some(text_q.map_or(q, |t: f64| t.max(q)));
                }
                _ => {}
            }
        }
        match (best, text_q) {
            ((q, Format::OpenMetrics), Some(t)) if t > q => Format::Text,
            ((q, Format::OpenMetrics), _) if q > 0.0 => Format::OpenMetrics,
            _ => Format::Text,
        }
    }
}

/// The exported families and their current values.
pub struct Metrics {
    registry: Registry,
    stores: Vec<(Family, Store)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let mut stores = Vec::with_capacity(Family::ALL.len());
        for family in Family::ALL {
            let spec = family.spec();
            let store = match spec.kind {
                Kind::Gauge => {
                    let f = LabelledFamily::default();
                    register(&mut registry, &spec, f.clone());
                    Store::Gauge(f)
                }
                Kind::Counter => {
                    let f = LabelledFamily::default();
                    register(&mut registry, &spec, f.clone());
                    Store::Counter(f)
                }
                Kind::Histogram(buckets) => {
                    let f = LabelledFamily::new_with_constructor(Buckets(buckets));
                    register(&mut registry, &spec, f.clone());
                    Store::Histogram(f)
                }
            };
            stores.push((family, store));
        }
        let metrics = Metrics { registry, stores };
        // The process's own counters exist from the start, so that rate()
        // and increase() see their first events.
        for family in [Family::Cycles, Family::CycleOverruns] {
            metrics.apply(&Sample::new(family, &[], 0.0));
        }
        metrics
    }

    fn store(&self, family: Family) -> &Store {
        // Every family is registered in `new`.
        &self
            .stores
            .iter()
            .find(|(f, _)| *f == family)
            .expect("every family has a store")
            .1
    }

    /// One finished cycle: its checks' status and time, the samples the
    /// areas derived from their evidence, and the cycle counted. Gauges
    /// take this cycle's values only.
    pub fn record_cycle(&self, checks: &[Check], samples: &[Sample]) {
        for (_, store) in &self.stores {
            if let Store::Gauge(f) = store {
                f.clear();
            }
        }
        for sample in check_samples(checks).iter().chain(samples) {
            self.apply(sample);
        }
        self.apply(&Sample::new(Family::Cycles, &[], 1.0));
    }

    /// A cycle that ran past its interval.
    pub fn record_overrun(&self) {
        self.apply(&Sample::new(Family::CycleOverruns, &[], 1.0));
    }

    fn apply(&self, sample: &Sample) {
        let labels: Labels = sample
            .family
            .labels()
            .iter()
            .copied()
            .zip(sample.labels.iter().cloned())
            .collect();
        match self.store(sample.family) {
            Store::Gauge(f) => {
                f.get_or_create(&labels).set(sample.value);
            }
            Store::Counter(f) => {
                // A zero still makes the series exist, so rate() and alerts
                // see a 0 rather than nothing.
                f.get_or_create(&labels)
                    .inc_by(sample.value.max(0.0).round() as u64);
            }
            Store::Histogram(f) => f.get_or_create(&labels).observe(sample.value),
        }
    }

    pub fn encode(&self, format: Format) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = match format {
            Format::Text => prometheus_text::encode(&mut out, &self.registry),
            Format::OpenMetrics => text::encode(&mut out, &self.registry),
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: &str, status: Status, ms: f64) -> Check {
        let mut c = Check::new(id, "t", status, "s", &serde_json::json!({}));
        c.duration_ms = ms;
        c
    }

    #[test]
    fn accept_headers_pick_the_format() {
        let prometheus_2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus_2)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(
            Format::negotiate(Some(
                "text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5"
            )),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0")),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some("application/OpenMetrics-Text")),
            Format::OpenMetrics
        );
    }

    #[test]
    fn check_status_is_one_for_the_worst_of_checks_sharing_an_id() {
        let samples = check_samples(&[
            check("grpc.distribution", Status::Pass, 100.0),
            check("grpc.distribution", Status::Fail, 50.0),
            check("net.context", Status::Skip, 1.0),
        ]);
        let value = |family, labels: &[&str]| {
            samples
                .iter()
                .find(|s| s.family == family && s.labels == labels)
                .map(|s| s.value)
        };
        assert_eq!(
            value(Family::CheckStatus, &["grpc.distribution", "fail"]),
            Some(1.0)
        );
        assert_eq!(
            value(Family::CheckStatus, &["grpc.distribution", "pass"]),
            Some(0.0)
        );
        assert_eq!(
            value(Family::CheckDuration, &["grpc.distribution"]),
            Some(0.15)
        );
        assert_eq!(
            value(Family::CheckStatus, &["net.context", "skip"]),
            Some(1.0)
        );
        assert_eq!(samples.len(), 2 * 6);
    }

    #[test]
    fn names_follow_prometheus_conventions_in_both_formats() {
        let metrics = Metrics::new();
        metrics.record_cycle(
            &[check("dns.nameservers", Status::Pass, 2.0)],
            &[
                Sample::new(
                    Family::DnsLookupDuration,
                    &["10.96.0.10:53", "A", "as_is"],
                    0.002,
                ),
                Sample::new(Family::DnsQueries, &["10.96.0.10:53", "NOERROR"], 1.0),
            ],
        );
        metrics.record_overrun();
        let text = metrics.encode(Format::Text);
        for line in [
            "# TYPE podprobe_cycles_total counter",
            "podprobe_cycles_total 1",
            "podprobe_cycle_overruns_total 1",
            "# TYPE podprobe_check_duration_seconds gauge",
            "podprobe_check_duration_seconds{check=\"dns.nameservers\"} 0.002",
            "podprobe_check_status{check=\"dns.nameservers\",status=\"pass\"} 1.0",
            "# TYPE podprobe_dns_lookup_duration_seconds histogram",
            "podprobe_dns_lookup_duration_seconds_bucket{nameserver=\"10.96.0.10:53\",qtype=\"A\",candidate=\"as_is\",le=\"0.0025\"} 1",
            "podprobe_dns_queries_total{nameserver=\"10.96.0.10:53\",rcode=\"NOERROR\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
        assert!(!text.contains("# EOF"));
        let open = metrics.encode(Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(open.contains("# UNIT podprobe_dns_lookup_duration_seconds seconds"));
        assert!(open.contains("# TYPE podprobe_cycles counter"));
    }

    #[test]
    fn gauges_hold_the_last_cycle_only() {
        let metrics = Metrics::new();
        metrics.record_cycle(
            &[check("grpc.distribution", Status::Fail, 1.0)],
            &[Sample::new(Family::GrpcReplicaMaxShare, &["a:1"], 1.0)],
        );
        metrics.record_cycle(&[check("net.context", Status::Pass, 1.0)], &[]);
        let text = metrics.encode(Format::Text);
        assert!(!text.contains("grpc.distribution"), "{text}");
        assert!(!text.contains("a:1"), "{text}");
        assert!(text.contains("podprobe_cycles_total 2"), "{text}");
    }
}
