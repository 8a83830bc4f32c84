//! One run: N unary calls, C at a time, over one channel, with gRPC's
//! transparent-retry rule (gRFC A6): a call that never left the client is
//! sent again until its deadline; one the server's HTTP/2 layer provably
//! refused is sent again once; anything else counts as it came, and a call
//! that hits its deadline is a failure, never a resend.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tokio::sync::watch;

use super::channel::Channel;
use super::conn::{Attempt, Connection};
use super::pb::WhoamiReply;
use super::wire::{self, Code};

/// Which call probes the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// podprobe.v1.Identity/Whoami: the answer names the replica.
    Whoami,
    /// grpc.health.v1.Health/Check: NOT_SERVING is a failure.
    Health,
    /// The user's `--method`, with an empty request.
    Method,
    /// An empty call to a method the server lacks: its UNIMPLEMENTED answer
    /// proves the connection reached a working gRPC server.
    Unimplemented,
}

impl ProbeKind {
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Whoami => "whoami",
            ProbeKind::Health => "health",
            ProbeKind::Method => "method",
            ProbeKind::Unimplemented => "unimplemented",
        }
    }
}

pub const WHOAMI_PATH: &str = "/podprobe.v1.Identity/Whoami";
pub const HEALTH_PATH: &str = "/grpc.health.v1.Health/Check";

/// The call every RPC of a run makes.
#[derive(Debug, Clone)]
pub struct Probe {
    pub kind: ProbeKind,
    pub uri: http::Uri,
    /// The framed (empty) request message.
    pub request: Bytes,
}

impl Probe {
    pub fn new(kind: ProbeKind, path: &str, scheme: &str, authority: &str) -> crate::Result<Probe> {
        let uri = format!("{scheme}://{authority}{path}")
            .parse::<http::Uri>()
            .map_err(|e| {
                crate::Error::usage(format!("'{authority}{path}' is not a valid gRPC URI: {e}"))
            })?;
        Ok(Probe {
            kind,
            uri,
            request: Bytes::from(wire::frame_message(&[])),
        })
    }
}

/// What one answered call tells.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The replica served it; its name when the answer says it.
    Ok(Option<String>),
    /// The replica could not serve it.
    Failed { code: Code, cause: String },
}

/// Judges one answer by the probe's rules.
pub fn interpret(kind: ProbeKind, code: Code, message: &str, reply: &[u8]) -> Verdict {
    if code.is_failure() {
        let cause = if message.is_empty() {
            code.name()
        } else {
            format!("{}: {message}", code.name())
        };
        return Verdict::Failed { code, cause };
    }
    match (kind, code) {
        (ProbeKind::Whoami, Code::OK) => match WhoamiReply::decode(reply) {
            Ok(who) if !who.name.is_empty() => Verdict::Ok(Some(who.name)),
            Ok(who) if !who.pod_ip.is_empty() => Verdict::Ok(Some(who.pod_ip)),
            _ => Verdict::Ok(None),
        },
        (ProbeKind::Health, Code::OK) => {
            match tonic_health::pb::HealthCheckResponse::decode(reply).map(|r| r.status) {
                Ok(1) => Verdict::Ok(None),
                Ok(status) => Verdict::Failed {
                    code: Code::UNAVAILABLE,
                    cause: format!(
                        "health {}",
                        match status {
                            2 => "NOT_SERVING",
                            3 => "SERVICE_UNKNOWN",
                            _ => "UNKNOWN",
                        }
                    ),
                },
                Err(e) => Verdict::Failed {
                    code: Code::INTERNAL,
                    cause: format!("health reply undecodable: {e}"),
                },
            }
        }
        // Any other status the server's application chose is an answer.
        _ => Verdict::Ok(None),
    }
}

/// How one RPC (all its attempts) ended.
enum Outcome {
    Ok {
        connection: Arc<Connection>,
        replica: Option<String>,
        code: Code,
        latency: Duration,
    },
    Failed {
        connection: Arc<Connection>,
        code: Option<Code>,
        cause: String,
    },
    NotSent(String),
}

/// One RPC with gRPC's transparent retries, within `timeout`.
async fn call(
    channel: &Channel,
    probe: &Probe,
    timeout: Duration,
    epoch: Instant,
) -> (Outcome, u64) {
    let started = Instant::now();
    let deadline = crate::clock::later(started, timeout);
    let mut sent_again = 0;
    loop {
        let connection = match channel.pick(deadline).await {
            Ok(c) => c,
            Err(why) => return (Outcome::NotSent(why), sent_again),
        };
        let attempt = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            connection.unary(&probe.uri, &probe.request, deadline),
        )
        .await;
        let since_epoch = epoch.elapsed().as_micros() as u64;
        let outcome = match attempt {
            Err(_) => Outcome::Failed {
                connection: connection.clone(),
                code: Some(Code::DEADLINE_EXCEEDED),
                cause: format!("DEADLINE_EXCEEDED: no answer within {timeout:?}"),
            },
            Ok(Attempt::NotSent(_)) => continue,
            Ok(Attempt::Refused(why)) => {
                connection.tally.refused.fetch_add(1, Ordering::Relaxed);
                if sent_again == 0 {
                    sent_again = 1;
                    continue;
                }
                Outcome::Failed {
                    connection: connection.clone(),
                    code: Some(Code::UNAVAILABLE),
                    cause: format!("UNAVAILABLE: refused again after one resend ({why})"),
                }
            }
            Ok(Attempt::Failed { code, cause }) => Outcome::Failed {
                connection: connection.clone(),
                code: Some(code),
                cause: format!("{}: {cause}", code.name()),
            },
            Ok(Attempt::Answered {
                code,
                message,
                reply,
            }) => match interpret(probe.kind, code, &message, &reply) {
                Verdict::Ok(replica) => Outcome::Ok {
                    connection: connection.clone(),
                    replica,
                    code,
                    latency: started.elapsed(),
                },
                Verdict::Failed { code, cause } => Outcome::Failed {
                    connection: connection.clone(),
                    code: Some(code),
                    cause,
                },
            },
        };
        match &outcome {
            Outcome::Ok { connection, .. } => {
                connection.tally.ok.fetch_add(1, Ordering::Relaxed);
                connection
                    .tally
                    .last_ok_us
                    .fetch_max(since_epoch.max(1), Ordering::Relaxed);
            }
            Outcome::Failed { connection, .. } => {
                connection.tally.failed.fetch_add(1, Ordering::Relaxed);
                connection
                    .tally
                    .last_failed_us
                    .fetch_max(since_epoch.max(1), Ordering::Relaxed);
            }
            Outcome::NotSent(_) => {}
        }
        return (outcome, sent_again);
    }
}

/// Latencies in log-linear buckets (128 per power of two, under 1% apart):
/// fixed memory however many RPCs a run makes.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const SUB_BUCKETS: u64 = 128;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; 64 * SUB_BUCKETS as usize],
            total: 0,
        }
    }
}

impl Histogram {
    fn index(micros: u64) -> usize {
        if micros < SUB_BUCKETS {
            return micros as usize;
        }
        let exp = 63 - micros.leading_zeros() as u64; // >= 7
        let sub = (micros >> (exp - 7)) - SUB_BUCKETS;
        ((exp - 6) * SUB_BUCKETS + sub) as usize
    }

    /// The lowest value of bucket `index`, in microseconds.
    fn floor(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB_BUCKETS {
            return index;
        }
        let exp = index / SUB_BUCKETS + 6;
        let sub = index % SUB_BUCKETS;
        (SUB_BUCKETS + sub) << (exp - 7)
    }

    pub fn record(&mut self, d: Duration) {
        let micros = d.as_micros().min(u64::MAX as u128) as u64;
        let i = Self::index(micros).min(self.counts.len() - 1);
        self.counts[i] += 1;
        self.total += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    /// Nearest-rank percentile, as the midpoint of its bucket, in ms.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let low = Self::floor(i) as f64;
                let high = Self::floor(i + 1) as f64;
                return Some(((low + high) / 2.0).round() / 1000.0);
            }
        }
        None
    }
}

/// What a run's workers counted, merged.
#[derive(Debug, Default)]
pub struct Counted {
    pub ok: u64,
    pub failed: u64,
    pub not_sent: u64,
    pub sent_again: u64,
    pub latencies: Histogram,
    /// grpc-status of every answered call, by code.
    pub statuses: BTreeMap<Code, u64>,
    /// Failed calls by (connection id, cause).
    pub failures: BTreeMap<(u32, String), u64>,
    /// Answered calls naming a replica, by (connection id, replica).
    pub named: BTreeMap<(u32, String), u64>,
    pub not_sent_reasons: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Local {
    counted: Counted,
    named: HashMap<(u32, String), u64>,
}

impl Local {
    fn add(&mut self, outcome: Outcome) {
        let c = &mut self.counted;
        match outcome {
            Outcome::Ok {
                connection,
                replica,
                code,
                latency,
            } => {
                c.ok += 1;
                c.latencies.record(latency);
                *c.statuses.entry(code).or_default() += 1;
                if let Some(name) = replica {
                    *self.named.entry((connection.id, name)).or_default() += 1;
                }
            }
            Outcome::Failed {
                connection,
                code,
                cause,
            } => {
                c.failed += 1;
                if let Some(code) = code {
                    *c.statuses.entry(code).or_default() += 1;
                }
                *c.failures.entry((connection.id, cause)).or_default() += 1;
            }
            Outcome::NotSent(why) => {
                c.not_sent += 1;
                *c.not_sent_reasons.entry(why).or_default() += 1;
            }
        }
    }

    fn merge_into(self, total: &mut Counted) {
        let c = self.counted;
        total.ok += c.ok;
        total.failed += c.failed;
        total.not_sent += c.not_sent;
        total.sent_again += c.sent_again;
        total.latencies.merge(&c.latencies);
        for (k, v) in c.statuses {
            *total.statuses.entry(k).or_default() += v;
        }
        for (k, v) in c.failures {
            *total.failures.entry(k).or_default() += v;
        }
        for (k, v) in self.named {
            *total.named.entry(k).or_default() += v;
        }
        for (k, v) in c.not_sent_reasons {
            *total.not_sent_reasons.entry(k).or_default() += v;
        }
    }
}

/// How many RPCs, how many at once, and the bounds on them.
#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: &'static str,
    pub rpcs: u64,
    pub concurrency: u32,
    /// Each RPC's deadline.
    pub timeout: Duration,
    /// The run stops sending after this long; what was not sent is counted
    /// as such.
    pub limit: Duration,
    /// Progress on stderr (a terminal) for runs over a second.
    pub progress: bool,
}

/// Progress counters the workers bump and the progress line reads.
#[derive(Default)]
struct Live {
    ok: AtomicU64,
    failed: AtomicU64,
    not_sent: AtomicU64,
}

/// Why a run ended before sending everything.
#[derive(Debug, Clone, PartialEq)]
pub enum Stopped {
    Limit(Duration),
    Interrupted,
    /// Every endpoint failed to connect for a whole deadline.
    Unreachable(String),
    /// A worker task panicked: its calls are not counted, so the run's
    /// counts must not be judged.
    WorkerFailed(String),
}

/// Runs the plan over `channel`; `interrupt` (Ctrl-C, SIGTERM) stops
/// sending, and the calls in flight finish within their deadline.
pub async fn run(
    channel: &Arc<Channel>,
    probe: &Probe,
    plan: &Plan,
    epoch: Instant,
    mut interrupt: watch::Receiver<bool>,
) -> (Counted, Option<Stopped>) {
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(Live::default());
    let mut workers = tokio::task::JoinSet::new();
    let workers_wanted = u64::from(plan.concurrency).min(plan.rpcs);
    for _ in 0..workers_wanted {
        let (channel, probe, next, stop, live) = (
            channel.clone(),
            probe.clone(),
            next.clone(),
            stop.clone(),
            live.clone(),
        );
        let (rpcs, timeout) = (plan.rpcs, plan.timeout);
        workers.spawn(async move {
            let mut local = Local::default();
            while !stop.load(Ordering::Relaxed) {
                if next.fetch_add(1, Ordering::Relaxed) >= rpcs {
                    break;
                }
                let (outcome, sent_again) = call(&channel, &probe, timeout, epoch).await;
                local.counted.sent_again += sent_again;
                let counter = match outcome {
                    Outcome::Ok { .. } => &live.ok,
                    Outcome::Failed { .. } => &live.failed,
                    Outcome::NotSent(_) => &live.not_sent,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                local.add(outcome);
            }
            local
        });
    }
    let started = Instant::now();
    let mut stopped = None;
    let mut listening = true;
    let mut progress = Progress::new(plan, started);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let limit = tokio::time::sleep(plan.limit);
    tokio::pin!(limit);
    let mut total = Counted::default();
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(Ok(local)) => local.merge_into(&mut total),
                Some(Err(e)) => {
                    let why = if e.is_panic() {
                        crate::checks::panic_message(e.into_panic().as_ref())
                    } else {
                        e.to_string()
                    };
                    stopped = Some(Stopped::WorkerFailed(why));
                    stop.store(true, Ordering::Relaxed);
                }
                None => break,
            },
            _ = &mut limit, if stopped.is_none() => {
                stopped = Some(Stopped::Limit(plan.limit));
                stop.store(true, Ordering::Relaxed);
            }
            signalled = interrupt.wait_for(|i| *i), if stopped.is_none() && listening => {
                if signalled.is_ok() {
                    stopped = Some(Stopped::Interrupted);
                    stop.store(true, Ordering::Relaxed);
                } else {
                    // Nobody can interrupt this run.
                    listening = false;
                }
            }
            _ = tick.tick() => {
                progress.show(&live);
                if stopped.is_none() && channel.failing_for().is_some_and(|d| d > plan.timeout) {
                    stopped = Some(Stopped::Unreachable(channel.why_not_ready()));
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
    }
    progress.clear();
    // Exact: every RPC asked for is ok, failed or not sent.
    let accounted = total.ok + total.failed + total.not_sent;
    let unsent = plan.rpcs.saturating_sub(accounted);
    if unsent > 0 {
        total.not_sent += unsent;
        let why = match &stopped {
            Some(Stopped::Limit(limit)) => format!("run stopped after {limit:?}"),
            Some(Stopped::Unreachable(why) | Stopped::WorkerFailed(why)) => why.clone(),
            Some(Stopped::Interrupted) | None => "run interrupted".to_string(),
        };
        *total.not_sent_reasons.entry(why).or_default() += unsent;
    }
    (total, stopped)
}

/// The progress line: RPCs done, rate, failures, on stderr when it is a
/// terminal and the run has lasted a second.
struct Progress {
    enabled: bool,
    shown: bool,
    mode: &'static str,
    rpcs: u64,
    started: Instant,
}

impl Progress {
    fn new(plan: &Plan, started: Instant) -> Self {
        Progress {
            enabled: plan.progress && std::io::stderr().is_terminal(),
            shown: false,
            mode: plan.mode,
            rpcs: plan.rpcs,
            started,
        }
    }

    fn show(&mut self, live: &Live) {
        let elapsed = self.started.elapsed();
        if !self.enabled || elapsed < Duration::from_secs(1) {
            return;
        }
        let ok = live.ok.load(Ordering::Relaxed);
        let failed = live.failed.load(Ordering::Relaxed);
        let not_sent = live.not_sent.load(Ordering::Relaxed);
        let done = ok + failed + not_sent;
        let rate = done as f64 / elapsed.as_secs_f64();
        let mut line = format!(
            "podprobe grpc: {}: {done}/{} RPCs, {rate:.0}/s, {failed} failed",
            self.mode, self.rpcs
        );
        if not_sent > 0 {
            line.push_str(&format!(", {not_sent} not sent"));
        }
        let _ = write!(std::io::stderr(), "\r\x1b[K{line}");
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_within_a_percent() {
        let mut h = Histogram::default();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us * 10));
        }
        let p50 = h.percentile_ms(50.0).unwrap();
        let p99 = h.percentile_ms(99.0).unwrap();
        assert!((p50 - 50.0).abs() / 50.0 < 0.01, "{p50}");
        assert!((p99 - 99.0).abs() / 99.0 < 0.01, "{p99}");
        assert_eq!(Histogram::default().percentile_ms(50.0), None);
        for i in [0usize, 5, 127, 128, 129, 500, 4000] {
            assert_eq!(Histogram::index(Histogram::floor(i)), i);
        }
        let mut big = Histogram::default();
        big.record(Duration::from_secs(u64::MAX / 2));
        assert!(big.percentile_ms(50.0).is_some());
    }

    #[test]
    fn answers_are_judged_by_the_probe() {
        assert_eq!(
            interpret(
                ProbeKind::Unimplemented,
                Code::UNIMPLEMENTED,
                "Method not found!",
                b""
            ),
            Verdict::Ok(None)
        );
        assert_eq!(
            interpret(
                ProbeKind::Method,
                Code::INVALID_ARGUMENT,
                "name is required",
                b""
            ),
            Verdict::Ok(None)
        );
        assert_eq!(
            interpret(ProbeKind::Health, Code::UNAVAILABLE, "draining", b""),
            Verdict::Failed {
                code: Code::UNAVAILABLE,
                cause: "UNAVAILABLE: draining".into()
            }
        );
        // HealthCheckResponse{status: NOT_SERVING}
        assert_eq!(
            interpret(ProbeKind::Health, Code::OK, "", &[0x08, 0x02]),
            Verdict::Failed {
                code: Code::UNAVAILABLE,
                cause: "health NOT_SERVING".into()
            }
        );
        assert_eq!(
            interpret(ProbeKind::Health, Code::OK, "", &[0x08, 0x01]),
            Verdict::Ok(None)
        );
        let who = WhoamiReply {
            name: "web-1".into(),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(
            interpret(ProbeKind::Whoami, Code::OK, "", &who),
            Verdict::Ok(Some("web-1".into()))
        );
    }
}
