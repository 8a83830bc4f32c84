//! The I/O of `grpc.distribution` and `grpc.endpoints`: find a call the
//! server answers, send N of them over one channel to the target as an
//! ordinary client does, then over one channel per known endpoint, and
//! record every connection (where it went, when it opened and closed, the
//! calls it carried) and every failure, by endpoint.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::channel::{Channel, ChannelRecord};
use super::conn::{self, Attempt, DialConfig, DialError};
use super::run::{self, Counted, Plan, Probe, ProbeKind, Stopped, Verdict};
use super::tls::{self, TlsOptions};
use super::wire::Code;
use crate::net::resolve::{resolve_host, split_host_port};
use crate::Error;

pub const SINGLE_CHANNEL: &str = "single-channel";
pub const PER_ENDPOINT: &str = "per-endpoint";

/// A run may last this many `--timeout`s in all, so a dead backend ends it
/// instead of hanging it, however many RPCs were asked for.
const RUN_TIMEOUTS: u32 = 10;

/// What `podprobe grpc` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: String,
    pub rpcs: u64,
    pub concurrency: u32,
    pub headless: Option<String>,
    pub tls: bool,
    pub tls_options: TlsOptions,
    /// `:authority` and TLS server name instead of the target's HOST:PORT.
    pub authority: Option<String>,
    /// A method to call (`pkg.Service/Method`) when the server has no
    /// podprobe.v1.Identity.
    pub method: Option<String>,
    pub timeout: Duration,
    /// Progress on stderr when it is a terminal.
    pub progress: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Evidence {
    pub target: String,
    /// `pick_first` (one connection, as an ordinary client dials HOST:PORT)
    /// or `round_robin` (dns:///HOST:PORT: one connection per address).
    pub balancing: String,
    /// `:authority` of every call.
    pub authority: String,
    /// TLS, when spoken: the name checked and what was trusted.
    pub tls: Option<TlsEvidence>,
    /// The endpoints known: the headless name's A records, or the target's
    /// own addresses when it has several.
    pub endpoints: Vec<String>,
    /// Where `endpoints` came from: `headless NAME`, `target`.
    pub endpoints_from: String,
    /// The probe call: `whoami` (names the replica), `health`, `method`
    /// (--method) or `unimplemented` (an empty call; UNIMPLEMENTED counts).
    pub rpc: String,
    pub method: String,
    /// Ctrl-C or SIGTERM stopped the measurement.
    pub interrupted: bool,
    pub runs: Vec<Run>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TlsEvidence {
    pub server_name: String,
    pub verified: bool,
    pub trust: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Run {
    pub mode: String,
    /// How an RPC's replica is known: `whoami` (its answer), `endpoint` (the
    /// address its connection went to) or `unknown` (behind a virtual IP:
    /// only its connection is known).
    pub identity: String,
    pub rpcs: u64,
    /// Answered by a working replica.
    pub ok: u64,
    /// Sent and failed: an error status, NOT_SERVING, a reset, a deadline.
    pub failed: u64,
    /// Never sent: no endpoint was ready within the deadline, or the run
    /// stopped first. `rpcs = ok + failed + not_sent`.
    pub not_sent: u64,
    /// RPCs sent again because the server's HTTP/2 layer provably refused
    /// them unseen (REFUSED_STREAM, above a GOAWAY's last stream).
    pub retried: u64,
    /// TCP connections that became ready during the run.
    pub connections: u32,
    /// Failed connection attempts.
    pub connect_failures: u64,
    pub replicas_seen: Option<u32>,
    pub per_replica: BTreeMap<String, u64>,
    /// The busiest replica's share of the answered RPCs.
    pub max_share: Option<f64>,
    /// The busiest connection's share of the RPCs sent: a lower bound of
    /// its replica's share, known even when replicas are not.
    pub max_connection_share: Option<f64>,
    pub fair_share: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// grpc-status of the answered RPCs, by name.
    pub statuses: BTreeMap<String, u64>,
    /// Failed RPCs by cause.
    pub errors: BTreeMap<String, u64>,
    /// Unsent RPCs by reason.
    pub not_sent_reasons: BTreeMap<String, u64>,
    /// Why the run stopped sending early, if it did.
    pub stopped: Option<String>,
    pub duration_ms: f64,
    pub per_connection: Vec<ConnectionEvidence>,
    pub per_endpoint: Vec<EndpointEvidence>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnectionEvidence {
    pub id: u32,
    /// The address connected to (a Service's virtual IP stays that).
    pub endpoint: String,
    /// This side's address, as the server logs its peer.
    pub local: String,
    /// Replicas named by the answers it carried (one, unless an L7 proxy
    /// balances per call behind it).
    pub replicas: BTreeMap<String, u64>,
    pub opened_ms: f64,
    pub closed_ms: f64,
    pub closed_by: String,
    pub ok: u64,
    pub failed: u64,
    /// Calls the server refused unseen on it (each sent again elsewhere).
    pub refused: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndpointEvidence {
    pub endpoint: String,
    pub replica: Option<String>,
    pub connections: u32,
    pub connect_failures: u64,
    pub ok: u64,
    pub failed: u64,
    /// Failed RPCs and failed connection attempts by cause.
    pub errors: BTreeMap<String, u64>,
    pub last_ok_ms: Option<f64>,
    pub last_failure_ms: Option<f64>,
}

impl EndpointEvidence {
    /// Its last word was a failure: it is failing now.
    pub fn failing(&self) -> bool {
        match (self.last_ok_ms, self.last_failure_ms) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(ok), Some(failure)) => failure > ok,
        }
    }
}

/// The target as written: HOST:PORT, or dns:///HOST:PORT for round_robin.
fn parse_target(target: &str) -> crate::Result<(String, u16, bool)> {
    let (rest, round_robin) = match target.strip_prefix("dns:///") {
        Some(rest) => (rest, true),
        None => (target, false),
    };
    if rest.contains("://") {
        return Err(Error::usage(format!(
            "'{target}' is not HOST:PORT or dns:///HOST:PORT"
        )));
    }
    let (host, port) = split_host_port(rest)?;
    Ok((host, port, round_robin))
}

/// `--method` as grpcurl takes it: `pkg.Service/Method`, `pkg.Service.Method`
/// or `/pkg.Service/Method`; the HTTP/2 path.
pub fn method_path(method: &str) -> crate::Result<String> {
    let trimmed = method.trim().trim_start_matches('/');
    let split = trimmed
        .rsplit_once('/')
        .or_else(|| trimmed.rsplit_once('.'));
    match split {
        Some((service, name))
            if !service.is_empty()
                && !name.is_empty()
                && !name.contains('/')
                && trimmed
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._/".contains(c)) =>
        {
            Ok(format!("/{service}/{name}"))
        }
        _ => Err(Error::usage(format!(
            "--method '{method}' is not pkg.Service/Method"
        ))),
    }
}

fn host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{host}:{port}"),
    }
}

async fn resolve(host: &str, port: u16, timeout: Duration) -> crate::Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for ip in resolve_host(host, timeout).await? {
        let addr = SocketAddr::new(ip, port);
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    Ok(addrs)
}

/// The TLS part of the dial configuration, and its evidence.
fn tls_setup(
    options: &Options,
    authority: &str,
) -> crate::Result<Option<(Arc<rustls::ClientConfig>, ServerName<'static>, TlsEvidence)>> {
    if !options.tls {
        return Ok(None);
    }
    let host = match split_host_port(authority) {
        Ok((host, _)) => host,
        Err(_) => authority.to_string(),
    };
    let name = ServerName::try_from(host.clone())
        .map_err(|_| Error::usage(format!("'{host}' is not a server name for TLS")))?;
    let config = tls::client_config(&options.tls_options)?;
    let evidence = TlsEvidence {
        server_name: host,
        verified: !options.tls_options.insecure,
        trust: tls::trust_description(&options.tls_options),
    };
    Ok(Some((config, name, evidence)))
}

/// The probe that works on this server, tried on the target, then on each
/// endpoint, until one answers: Whoami, else --method, else Health, else an
/// empty call whose UNIMPLEMENTED answer counts.
/// One call of `path` on `connection`, bounded by the timeout.
async fn ask(
    connection: &conn::Connection,
    kind: ProbeKind,
    path: &str,
    scheme: &str,
    config: &DialConfig,
) -> crate::Result<Attempt> {
    let probe = Probe::new(kind, path, scheme, &config.authority)?;
    let deadline = crate::clock::deadline(config.timeout);
    Ok(tokio::time::timeout(
        config.timeout,
        connection.unary(&probe.uri, &probe.request, deadline),
    )
    .await
    .unwrap_or_else(|_| Attempt::Failed {
        code: Code::DEADLINE_EXCEEDED,
        cause: format!("no answer within {:?}", config.timeout),
    }))
}

async fn discover(
    candidates: &[SocketAddr],
    config: &DialConfig,
    options: &Options,
    scheme: &str,
) -> crate::Result<(ProbeKind, String)> {
    let mut errors: Vec<DialError> = Vec::new();
    let mut answered_failure: Option<String> = None;
    for &addr in candidates {
        let connection = match conn::dial_named(addr, 0, config).await {
            Ok(c) => c,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let whoami = ask(
            &connection,
            ProbeKind::Whoami,
            run::WHOAMI_PATH,
            scheme,
            config,
        )
        .await?;
        let next = match whoami {
            Attempt::Answered {
                code,
                message,
                reply,
                ..
            } => match run::interpret(ProbeKind::Whoami, code, &message, &reply) {
                Verdict::Ok(Some(_)) => {
                    return Ok((ProbeKind::Whoami, run::WHOAMI_PATH.to_string()))
                }
                Verdict::Ok(None) => true,
                Verdict::Failed { cause, .. } => {
                    answered_failure.get_or_insert(format!("{addr} answered {cause}"));
                    false
                }
            },
            Attempt::Failed { cause, .. } | Attempt::Refused(cause) | Attempt::NotSent(cause) => {
                answered_failure.get_or_insert(format!("{addr}: {cause}"));
                false
            }
        };
        if !next {
            continue;
        }
        if let Some(method) = &options.method {
            return Ok((ProbeKind::Method, method_path(method)?));
        }
        match ask(
            &connection,
            ProbeKind::Health,
            run::HEALTH_PATH,
            scheme,
            config,
        )
        .await?
        {
            Attempt::Answered { code: Code::OK, .. } => {
                return Ok((ProbeKind::Health, run::HEALTH_PATH.to_string()))
            }
            Attempt::Answered { code, .. } if !code.is_failure() => {
                return Ok((ProbeKind::Unimplemented, run::HEALTH_PATH.to_string()))
            }
            Attempt::Answered { code, message, .. } => {
                answered_failure
                    .get_or_insert(format!("{addr} answered {}: {message}", code.name()));
            }
            Attempt::Failed { cause, .. } | Attempt::Refused(cause) | Attempt::NotSent(cause) => {
                answered_failure.get_or_insert(format!("{addr}: {cause}"));
            }
        }
    }
    let target = &options.target;
    // Something answered, if only with failures: measure and report it.
    if answered_failure.is_some()
        || errors
            .iter()
            .any(|e| e.reached() && !e.is_mismatch() && !is_certificate(e))
    {
        return Ok(match &options.method {
            Some(method) => (ProbeKind::Method, method_path(method)?),
            None => (ProbeKind::Health, run::HEALTH_PATH.to_string()),
        });
    }
    if let Some(mismatch) = errors.iter().find(|e| e.is_mismatch()) {
        return Err(Error::usage(match mismatch {
            DialError::NotHttp2 { .. } => format!("{target} speaks TLS: add --tls"),
            other => format!("{target} {}: use --plaintext", other.describe()),
        }));
    }
    if let Some(certificate) = errors.iter().find(|e| is_certificate(e)) {
        return Err(Error::usage(format!(
            "{target}: {}",
            certificate.describe()
        )));
    }
    let cause = errors
        .first()
        .map_or("no address to connect to".to_string(), DialError::describe);
    Err(Error::unavailable(format!(
        "cannot reach {target}: {cause}"
    )))
}

fn is_certificate(error: &DialError) -> bool {
    matches!(
        error,
        DialError::Tls {
            certificate: true,
            ..
        }
    )
}

/// Builds a run's evidence from what its workers counted and what its
/// channel saw.
fn build_run(
    plan: &Plan,
    kind: ProbeKind,
    counted: Counted,
    stopped: Option<Stopped>,
    record: &ChannelRecord,
    epoch: Instant,
    endpoints: &[SocketAddr],
) -> Run {
    let ms = |at: Instant| crate::report::millis(at.saturating_duration_since(epoch));
    let mut per_connection: Vec<ConnectionEvidence> = record
        .connections
        .iter()
        .map(|c| {
            let closed = c.closed();
            ConnectionEvidence {
                id: c.id,
                endpoint: c.peer.to_string(),
                local: c.local.to_string(),
                replicas: counted
                    .named
                    .iter()
                    .filter(|((id, _), _)| *id == c.id)
                    .map(|((_, name), n)| (name.clone(), *n))
                    .collect(),
                opened_ms: ms(c.opened),
                closed_ms: ms(closed.as_ref().map_or(record.closed_at, |c| c.at)),
                closed_by: closed.map_or("podprobe: end of run".to_string(), |c| c.by),
                ok: c.tally.ok.load(Ordering::Relaxed),
                failed: c.tally.failed.load(Ordering::Relaxed),
                refused: c.tally.refused.load(Ordering::Relaxed),
            }
        })
        .collect();
    per_connection.sort_by_key(|c| c.id);

    let identity = if kind == ProbeKind::Whoami {
        "whoami"
    } else if !record.connections.is_empty()
        && record
            .connections
            .iter()
            .all(|c| endpoints.contains(&c.peer))
    {
        "endpoint"
    } else {
        "unknown"
    };
    let mut per_replica: BTreeMap<String, u64> = BTreeMap::new();
    match identity {
        "whoami" => {
            for ((_, name), n) in &counted.named {
                *per_replica.entry(name.clone()).or_default() += n;
            }
        }
        "endpoint" => {
            for c in &per_connection {
                *per_replica.entry(c.endpoint.clone()).or_default() += c.ok;
            }
            per_replica.retain(|_, n| *n > 0);
        }
        _ => {}
    }
    let known = identity != "unknown";
    let max_share = (known && counted.ok > 0).then(|| {
        let max = per_replica.values().max().copied().unwrap_or(0);
        round4(max as f64 / counted.ok as f64)
    });
    let carried: u64 = per_connection.iter().map(|c| c.ok + c.failed).sum();
    let max_connection_share = (carried > 0).then(|| {
        let max = per_connection
            .iter()
            .map(|c| c.ok + c.failed)
            .max()
            .unwrap_or(0);
        round4(max as f64 / carried as f64)
    });

    // Failures by endpoint: the calls' and the connection attempts'.
    let mut by_endpoint: BTreeMap<SocketAddr, EndpointEvidence> = BTreeMap::new();
    let blank = |endpoint: &str| EndpointEvidence {
        endpoint: endpoint.to_string(),
        replica: None,
        connections: 0,
        connect_failures: 0,
        ok: 0,
        failed: 0,
        errors: BTreeMap::new(),
        last_ok_ms: None,
        last_failure_ms: None,
    };
    let us_ms = |us: u64| (us > 0).then(|| crate::report::millis(Duration::from_micros(us)));
    for c in &record.connections {
        let e = by_endpoint
            .entry(c.peer)
            .or_insert_with(|| blank(&c.peer.to_string()));
        e.connections += 1;
        e.ok += c.tally.ok.load(Ordering::Relaxed);
        e.failed += c.tally.failed.load(Ordering::Relaxed);
        e.last_ok_ms = later(
            e.last_ok_ms,
            us_ms(c.tally.last_ok_us.load(Ordering::Relaxed)),
        );
        e.last_failure_ms = later(
            e.last_failure_ms,
            us_ms(c.tally.last_failed_us.load(Ordering::Relaxed)),
        );
    }
    let peer_of: BTreeMap<u32, SocketAddr> =
        record.connections.iter().map(|c| (c.id, c.peer)).collect();
    for ((id, cause), n) in &counted.failures {
        if let Some(e) = peer_of.get(id).and_then(|p| by_endpoint.get_mut(p)) {
            *e.errors.entry(cause.clone()).or_default() += n;
        }
    }
    for (addr, failures) in &record.failures {
        let e = by_endpoint
            .entry(*addr)
            .or_insert_with(|| blank(&addr.to_string()));
        e.connect_failures += failures.count;
        *e.errors.entry(failures.last.describe()).or_default() += failures.count;
        e.last_failure_ms = later(e.last_failure_ms, Some(ms(failures.last_at)));
    }
    if identity == "whoami" {
        for e in by_endpoint.values_mut() {
            let names: std::collections::BTreeSet<&String> = per_connection
                .iter()
                .filter(|c| c.endpoint == e.endpoint)
                .flat_map(|c| c.replicas.keys())
                .collect();
            if names.len() == 1 {
                e.replica = names.into_iter().next().cloned();
            }
        }
    }

    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for ((_, cause), n) in &counted.failures {
        *errors.entry(cause.clone()).or_default() += n;
    }
    Run {
        mode: plan.mode.to_string(),
        identity: identity.to_string(),
        rpcs: plan.rpcs,
        ok: counted.ok,
        failed: counted.failed,
        not_sent: counted.not_sent,
        retried: counted.sent_again,
        connections: record.connections.len() as u32,
        connect_failures: record.failures.values().map(|f| f.count).sum(),
        replicas_seen: known.then_some(per_replica.len() as u32),
        per_replica,
        max_share,
        max_connection_share,
        fair_share: None,
        p50_ms: counted.latencies.percentile_ms(50.0),
        p99_ms: counted.latencies.percentile_ms(99.0),
        statuses: counted
            .statuses
            .iter()
            .map(|(code, n)| (code.name(), *n))
            .collect(),
        errors,
        not_sent_reasons: counted.not_sent_reasons,
        stopped: stopped.map(|s| match s {
            Stopped::Limit(limit) => format!("run limit of {limit:?} reached"),
            Stopped::Interrupted => "interrupted".to_string(),
            Stopped::Unreachable(why) => format!("nothing reachable: {why}"),
            Stopped::WorkerFailed(why) => format!("a worker failed: {why}"),
        }),
        duration_ms: ms(record.closed_at),
        per_connection,
        per_endpoint: by_endpoint.into_values().collect(),
    }
}

/// Every run's fair share: one over every replica known from any run or
/// the endpoint list.
fn fill_fair_shares(endpoints: usize, runs: &mut [Run]) {
    let known = runs
        .iter()
        .filter_map(|r| r.replicas_seen)
        .map(|n| n as usize)
        .chain([endpoints])
        .max()
        .unwrap_or(0);
    if known > 0 {
        for run in runs {
            run.fair_share = Some(round4(1.0 / known as f64));
        }
    }
}

fn later(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// What every run of one measurement shares.
struct Session<'a> {
    config: DialConfig,
    probe: Probe,
    options: &'a Options,
    endpoints: Vec<SocketAddr>,
    interrupt: watch::Receiver<bool>,
}

impl Session<'_> {
    /// One run over a new channel with these subchannels.
    async fn run(
        &self,
        mode: &'static str,
        subchannels: Vec<Vec<SocketAddr>>,
        first_id: u32,
    ) -> crate::Result<Run> {
        let plan = Plan {
            mode,
            rpcs: self.options.rpcs,
            concurrency: self.options.concurrency,
            timeout: self.options.timeout,
            limit: self.options.timeout * RUN_TIMEOUTS,
            progress: self.options.progress,
        };
        let epoch = Instant::now();
        let channel = Arc::new(Channel::new(subchannels, self.config.clone(), first_id));
        let (counted, stopped) =
            run::run(&channel, &self.probe, &plan, epoch, self.interrupt.clone()).await;
        let record = channel.close().await;
        // Counts missing a worker's calls would judge a spread never sent.
        if let Some(Stopped::WorkerFailed(why)) = &stopped {
            return Err(crate::Error::unavailable(format!(
                "a worker of the {mode} run failed: {why}"
            )));
        }
        Ok(build_run(
            &plan,
            self.probe.kind,
            counted,
            stopped,
            &record,
            epoch,
            &self.endpoints,
        ))
    }
}

pub async fn measure(
    options: &Options,
    interrupt: watch::Receiver<bool>,
) -> crate::Result<Evidence> {
    let (host, port, round_robin) = parse_target(&options.target)?;
    if let Some(method) = &options.method {
        method_path(method)?;
    }
    let authority = options
        .authority
        .clone()
        .unwrap_or_else(|| host_port(&host, port));
    let tls = tls_setup(options, &authority)?;
    let target_addrs = resolve(&host, port, options.timeout).await?;
    let (endpoints, endpoints_from) = match &options.headless {
        Some(name) => {
            let (name, headless_port) = match split_host_port(name) {
                Ok((name, p)) => (name, p),
                Err(_) => (name.clone(), port),
            };
            let addrs = resolve(&name, headless_port, options.timeout).await?;
            (addrs, format!("headless {name}"))
        }
        None => (target_addrs.clone(), "target".to_string()),
    };
    let scheme = if options.tls { "https" } else { "http" };
    let config = DialConfig {
        tls: tls.as_ref().map(|(c, n, _)| (c.clone(), n.clone())),
        authority: authority.clone(),
        timeout: options.timeout,
    };
    let mut candidates = target_addrs.clone();
    candidates.extend(endpoints.iter().filter(|e| !target_addrs.contains(e)));
    let (kind, path) = discover(&candidates, &config, options, scheme).await?;
    let probe = Probe::new(kind, &path, scheme, &authority)?;

    let single = if round_robin {
        target_addrs.iter().map(|a| vec![*a]).collect()
    } else {
        vec![target_addrs.clone()]
    };
    let per: Vec<Vec<SocketAddr>> = endpoints.iter().map(|a| vec![*a]).collect();
    let session = Session {
        config,
        probe,
        options,
        endpoints,
        interrupt,
    };
    let mut runs = vec![session.run(SINGLE_CHANNEL, single, 1).await?];
    let interrupted = || *session.interrupt.borrow();
    if per.len() >= 2 && !interrupted() {
        let first_id = runs[0]
            .per_connection
            .iter()
            .map(|c| c.id + 1)
            .max()
            .unwrap_or(1);
        runs.push(session.run(PER_ENDPOINT, per, first_id).await?);
    }
    let endpoints = session.endpoints.clone();
    fill_fair_shares(endpoints.len(), &mut runs);
    Ok(Evidence {
        target: options.target.clone(),
        balancing: if round_robin {
            "round_robin"
        } else {
            "pick_first"
        }
        .to_string(),
        authority,
        tls: tls.map(|(_, _, evidence)| evidence),
        endpoints: endpoints.iter().map(SocketAddr::to_string).collect(),
        endpoints_from,
        rpc: kind.name().to_string(),
        method: path,
        interrupted: interrupted(),
        runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("web:50051").ok(),
            Some(("web".into(), 50051, false))
        );
        assert_eq!(
            parse_target("dns:///web.ns.svc:50051").ok(),
            Some(("web.ns.svc".into(), 50051, true))
        );
        assert!(parse_target("http://web:50051").is_err());
        assert!(parse_target("web").is_err());
    }

    #[test]
    fn methods_parse_as_grpcurl_takes_them() {
        for m in [
            "helloworld.Greeter/SayHello",
            "/helloworld.Greeter/SayHello",
            "helloworld.Greeter.SayHello",
        ] {
            assert_eq!(
                method_path(m).unwrap(),
                "/helloworld.Greeter/SayHello",
                "{m}"
            );
        }
        for bad in ["", "Greeter", "a/b/c d", "/x/"] {
            assert!(method_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn endpoints_fail_when_their_last_word_is_a_failure() {
        let mut e = EndpointEvidence {
            endpoint: "10.0.0.1:50051".into(),
            replica: None,
            connections: 1,
            connect_failures: 0,
            ok: 10,
            failed: 2,
            errors: BTreeMap::new(),
            last_ok_ms: Some(900.0),
            last_failure_ms: Some(100.0),
        };
        assert!(!e.failing());
        e.last_failure_ms = Some(1000.0);
        assert!(e.failing());
        e.last_ok_ms = None;
        assert!(e.failing());
        e.last_failure_ms = None;
        assert!(!e.failing());
    }
}
