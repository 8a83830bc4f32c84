//! The A/AAAA conntrack race (kubernetes#56903), measured beside a control
//! so that plain packet loss and slow servers are not taken for it.
//!
//! Three patterns, their attempts interleaved and spread over time so that
//! a timing race, transient loss or a server stall falls on all of them
//! alike: glibc's A+AAAA back to back from one socket (the pattern that
//! races), single queries from fresh sockets (the control, which cannot
//! race), and the application's own lookup through its resolver model
//! (which shows whether a fix in effect works and what stall it sees).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::client::{self, Wire};
use super::measure::{round3, ProcessLibc};
use super::model::{Fate, Model, Qtype, Trace};
use crate::report::millis;
use crate::stats::{fisher_greater, max, percentile};

pub const SAME_SOCKET: &str = "parallel-same-socket";
pub const CONTROL: &str = "control-fresh-sockets";
pub const APP: &str = "app-resolver";

/// Between the starts of consecutive attempts (of any pattern).
const SPACING: Duration = Duration::from_millis(25);
/// The longest a race attempt waits for a reply: lost is lost, a longer
/// wait would only make the measurement slower.
pub const RACE_WAIT: Duration = Duration::from_secs(1);
/// A reply slower than this is a server stall, not a healthy answer.
pub const SLOW_MS: f64 = 200.0;

/// How one way of sending fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternEvidence {
    /// `parallel-same-socket`, `control-fresh-sockets` or `app-resolver`.
    pub pattern: String,
    pub attempts: u32,
    /// Attempts that lost at least one reply.
    pub lost: u32,
    /// Replies lost, per query type.
    pub lost_qtypes: BTreeMap<String, u32>,
    /// Time for an attempt's replies (a lost one counts as the wait); for
    /// the app pattern, what the application waits per lookup.
    pub p50_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Attempts that lost nothing but had a reply slower than `SLOW_MS`.
    #[serde(default)]
    pub slow: u32,
}

/// conntrack's drop counters, as the change during the race measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConntrackDelta {
    pub insert_failed: u64,
    pub drop: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaceEvidence {
    pub name: String,
    pub server: String,
    /// The wait per attempt.
    pub timeout_ms: f64,
    pub patterns: Vec<PatternEvidence>,
    /// One-sided Fisher exact test: how likely the same-socket pattern loses
    /// this many more attempts than the control by chance alone.
    #[serde(default)]
    pub p_value: Option<f64>,
    /// The application's resolver model.
    #[serde(default)]
    pub resolver: String,
    /// Fixes against the race in effect for this application.
    #[serde(default)]
    pub fixes_in_effect: Vec<String>,
    /// Race options in resolv.conf the application's library ignores.
    #[serde(default)]
    pub ignored_options: Vec<String>,
    /// `None` when this namespace's conntrack counters cannot be read.
    pub conntrack: Option<ConntrackDelta>,
    /// The pod's other processes, when they are visible.
    pub processes: Vec<ProcessLibc>,
}

/// What the judge needs besides the measurement.
pub struct RaceContext {
    pub fixes_in_effect: Vec<String>,
    pub ignored_options: Vec<String>,
    pub processes: Vec<ProcessLibc>,
}

enum Job {
    SameSocket,
    Control(Qtype),
    App,
}

enum Done {
    Fates(Vec<Fate>),
    Trace(Box<Trace>),
}

/// `attempts` attempts of each pattern for `fqdn` at `server`.
pub fn race(
    fqdn: &str,
    server: SocketAddr,
    model: &Model,
    attempts: u32,
    timeout: Duration,
    context: RaceContext,
) -> RaceEvidence {
    let wait = timeout.min(RACE_WAIT);
    let app = model.clone().with_servers(vec![server]);
    let mut jobs: Vec<(Duration, usize, Job)> = Vec::new();
    for i in 0..attempts as usize {
        let slot = |k: u32| SPACING * (3 * i as u32 + k);
        jobs.push((slot(0), i, Job::SameSocket));
        jobs.push((slot(1), i, Job::Control(Qtype::A)));
        jobs.push((slot(1) + SPACING / 2, i, Job::Control(Qtype::Aaaa)));
        jobs.push((slot(2), i, Job::App));
    }
    let before = conntrack_counters();
    let start = Instant::now();
    let results = crate::checks::in_parallel(&jobs, |(offset, _, job)| {
        if let Some(pause) = (start + *offset).checked_duration_since(Instant::now()) {
            std::thread::sleep(pause);
        }
        match job {
            Job::SameSocket => Done::Fates(client::query_same_socket(
                server,
                fqdn,
                &[Qtype::A, Qtype::Aaaa],
                wait,
            )),
            Job::Control(qtype) => Done::Fates(vec![client::query(server, fqdn, *qtype, wait)]),
            Job::App => Done::Trace(Box::new(app.resolve(fqdn, &mut Wire::new(wait)))),
        }
    });
    let after = conntrack_counters();
    let n = attempts as usize;
    let mut same: Vec<Vec<Fate>> = vec![Vec::new(); n];
    let mut control: Vec<Vec<Fate>> = vec![Vec::new(); n];
    let mut traces: Vec<Trace> = Vec::new();
    for ((_, i, job), result) in jobs.iter().zip(results) {
        match (job, result) {
            (Job::SameSocket, Done::Fates(f)) => same[*i] = f,
            (Job::Control(_), Done::Fates(f)) => control[*i].extend(f),
            (Job::App, Done::Trace(t)) => traces.push(*t),
            _ => {}
        }
    }
    let same = fates_pattern(SAME_SOCKET, &same, wait);
    let control = fates_pattern(CONTROL, &control, wait);
    let app = app_pattern(&traces);
    RaceEvidence {
        name: fqdn.to_string(),
        server: server.to_string(),
        timeout_ms: millis(wait),
        p_value: Some(fisher_greater(
            same.lost,
            same.attempts,
            control.lost,
            control.attempts,
        )),
        patterns: vec![same, control, app],
        resolver: model.resolver.name().to_string(),
        fixes_in_effect: context.fixes_in_effect,
        ignored_options: context.ignored_options,
        conntrack: before.zip(after).map(|(b, a)| ConntrackDelta {
            insert_failed: a.insert_failed.saturating_sub(b.insert_failed),
            drop: a.drop.saturating_sub(b.drop),
        }),
        processes: context.processes,
    }
}

/// Attempts of A and AAAA (in that order) as plain fates.
fn fates_pattern(name: &str, attempts: &[Vec<Fate>], wait: Duration) -> PatternEvidence {
    let mut summary = Summary::new(name);
    for attempt in attempts {
        let lost: Vec<&str> = attempt
            .iter()
            .zip(["A", "AAAA"])
            .filter(|(f, _)| !matches!(f, Fate::Reply { .. }))
            .map(|(_, t)| t)
            .collect();
        let times: Vec<f64> = attempt
            .iter()
            .map(|f| match f {
                Fate::Reply { after, .. } => millis(*after),
                _ => millis(wait),
            })
            .collect();
        summary.add(&lost, max(&times).unwrap_or(0.0));
    }
    summary.finish()
}

/// The application's lookups: lost replies and what it waited.
fn app_pattern(traces: &[Trace]) -> PatternEvidence {
    let mut summary = Summary::new(APP);
    for trace in traces {
        let lost: Vec<String> = trace
            .exchanges
            .iter()
            .filter(|e| !matches!(e.fate, Fate::Reply { .. }))
            .map(|e| e.query.qtype.to_string())
            .collect();
        let lost: Vec<&str> = lost.iter().map(String::as_str).collect();
        summary.add(&lost, millis(trace.elapsed));
    }
    summary.finish()
}

struct Summary {
    evidence: PatternEvidence,
    times: Vec<f64>,
}

impl Summary {
    fn new(name: &str) -> Summary {
        Summary {
            evidence: PatternEvidence {
                pattern: name.to_string(),
                attempts: 0,
                lost: 0,
                lost_qtypes: BTreeMap::new(),
                p50_ms: None,
                max_ms: None,
                slow: 0,
            },
            times: Vec::new(),
        }
    }

    fn add(&mut self, lost: &[&str], ms: f64) {
        let e = &mut self.evidence;
        e.attempts += 1;
        if lost.is_empty() {
            e.slow += u32::from(ms > SLOW_MS);
        } else {
            e.lost += 1;
        }
        for qtype in lost {
            *e.lost_qtypes.entry(qtype.to_string()).or_default() += 1;
        }
        self.times.push(round3(ms));
    }

    fn finish(mut self) -> PatternEvidence {
        self.evidence.p50_ms = percentile(&self.times, 50.0);
        self.evidence.max_ms = max(&self.times);
        self.evidence
    }
}

fn conntrack_counters() -> Option<crate::net::measure::ConntrackEvidence> {
    crate::net::measure::conntrack(Path::new(crate::net::measure::CONNTRACK_PROC)).ok()
}
