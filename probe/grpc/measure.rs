//! The I/O of `grpc.distribution`: send N RPCs over one channel to the target
//! as an ordinary client does, then over one channel per known endpoint, and
//! record which replica answered each one and how many connections it took.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::pb::identity_client::IdentityClient;
use super::pb::WhoamiRequest;
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
    pub rpcs: u32,
    pub concurrency: u32,
    pub headless: Option<String>,
    pub tls: bool,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Evidence {
    pub target: String,
    /// `pick_first` (one connection, as an ordinary client dials HOST:PORT)
    /// or `round_robin` (dns:///HOST:PORT: one connection per address).
    pub balancing: String,
    /// The endpoints known besides the target: the headless name's A records,
    /// or the target's own addresses.
    pub endpoints: Vec<String>,
    /// `whoami` when the server answers podprobe.v1.Identity, `health` when
    /// only grpc.health.v1 could be called.
    pub rpc: String,
    pub runs: Vec<Run>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Run {
    pub mode: String,
    /// How an RPC's replica is known: `whoami` (its answer), `endpoint` (the
    /// address its connection went to) or `unknown`.
    pub identity: String,
    pub rpcs: u32,
    pub ok: u32,
    pub failed: u32,
    /// TCP connections really opened during the run.
    pub connections: u32,
    pub replicas_seen: Option<u32>,
    pub per_replica: BTreeMap<String, u32>,
    pub max_share: Option<f64>,
    pub fair_share: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Failed RPCs by cause.
    pub errors: BTreeMap<String, u32>,
    /// RPCs sent again because their connection closed before they left
    /// (gRPC's transparent retry).
    pub retried: u32,
}

/// Which RPC tells us about the server.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rpc {
    Whoami,
    Health,
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

/// Dials one of its addresses, in order, for every connection a channel
/// opens, and counts the connections that succeed.
#[derive(Clone)]
struct Dialer {
    addrs: Arc<Vec<SocketAddr>>,
    timeout: Duration,
    opened: Arc<AtomicU32>,
}

impl Dialer {
    fn new(addrs: Vec<SocketAddr>, timeout: Duration) -> Self {
        Dialer {
            addrs: Arc::new(addrs),
            timeout,
            opened: Arc::new(AtomicU32::new(0)),
        }
    }

    async fn dial(self) -> std::io::Result<TokioIo<TcpStream>> {
        let mut last = None;
        for addr in self.addrs.iter() {
            match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    return Ok(TokioIo::new(stream));
                }
                Ok(Err(e)) => {
                    last = Some(std::io::Error::new(
                        e.kind(),
                        format!("connect to {addr}: {e}"),
                    ))
                }
                Err(_) => {
                    last = Some(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connect to {addr}: timed out after {:?}", self.timeout),
                    ))
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no address to connect to")))
    }
}

/// One channel: a tonic channel whose connections go through a dialer.
struct Subchannel {
    channel: Channel,
    dialer: Dialer,
    /// The replica key for RPCs whose answer does not name one.
    endpoint: Option<String>,
}

fn subchannel(
    host: &str,
    port: u16,
    addrs: Vec<SocketAddr>,
    endpoint: Option<String>,
    options: &Options,
) -> crate::Result<Subchannel> {
    let scheme = if options.tls { "https" } else { "http" };
    let authority = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{host}:{port}"),
    };
    let mut endpoint_cfg = Endpoint::from_shared(format!("{scheme}://{authority}"))
        .map_err(|e| Error::usage(format!("'{}': {e}", options.target)))?
        .connect_timeout(options.timeout);
    if options.tls {
        let tls = ClientTlsConfig::new()
            .with_native_roots()
            .domain_name(host.to_string());
        endpoint_cfg = endpoint_cfg
            .tls_config(tls)
            .map_err(|e| Error::unavailable(format!("TLS setup: {e}")))?;
    }
    let dialer = Dialer::new(addrs, options.timeout);
    let dial = dialer.clone();
    let channel =
        endpoint_cfg.connect_with_connector_lazy(tower::service_fn(move |_| dial.clone().dial()));
    Ok(Subchannel {
        channel,
        dialer,
        endpoint,
    })
}

/// One attempt at an RPC; the replica that answered when the server says so.
async fn attempt(
    channel: Channel,
    rpc: Rpc,
    timeout: Duration,
) -> Result<Option<String>, tonic::Status> {
    match rpc {
        Rpc::Whoami => {
            let mut request = tonic::Request::new(WhoamiRequest {});
            request.set_timeout(timeout);
            let reply = IdentityClient::new(channel)
                .whoami(request)
                .await?
                .into_inner();
            let name = if reply.name.is_empty() {
                reply.pod_ip
            } else {
                reply.name
            };
            Ok(Some(name))
        }
        Rpc::Health => {
            let mut request = tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            });
            request.set_timeout(timeout);
            HealthClient::new(channel).check(request).await?;
            Ok(None)
        }
    }
}

/// True for an RPC the server did not process: one whose connection closed
/// before it was sent (nothing here cancels RPCs, so `Cancelled` can only be
/// that), one refused, or one above a GOAWAY's last stream id.
fn never_processed(status: &tonic::Status) -> bool {
    if status.code() == tonic::Code::Cancelled {
        return true;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = cause {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away()
                    && h2.is_remote()
                    && h2.reason() == Some(h2::Reason::NO_ERROR));
        }
        cause = err.source();
    }
    false
}

/// The answer to an RPC within `timeout`, and how many attempts it took.
///
/// Like gRPC's transparent retry, an RPC the server never saw is sent
/// again: reporting it as failed would blame the server for what no real
/// client sees (e.g. around a GOAWAY for MaxConnectionAge).
async fn call(
    channel: Channel,
    rpc: Rpc,
    timeout: Duration,
) -> (Result<Option<String>, tonic::Status>, u32) {
    let mut attempts = 0;
    let answer = async {
        loop {
            attempts += 1;
            match attempt(channel.clone(), rpc, timeout).await {
                Err(status) if never_processed(&status) && attempts < 3 => {}
                result => return result,
            }
        }
    };
    let result = tokio::time::timeout(timeout, answer)
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {timeout:?}"
            )))
        });
    (result, attempts)
}

/// A failed RPC in a few words: its status code and the innermost cause.
fn describe(status: &tonic::Status) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut innermost = None;
    while let Some(err) = cause {
        innermost = Some(err.to_string());
        cause = err.source();
    }
    let detail = innermost.unwrap_or_else(|| status.message().to_string());
    format!("{:?}: {detail}", status.code())
}

#[derive(Default)]
struct Tally {
    ok_ms: Vec<f64>,
    per_replica: BTreeMap<String, u32>,
    errors: BTreeMap<String, u32>,
    retried: u32,
}

/// Sends `rpcs` RPCs, `concurrency` at a time, round robin over `subchannels`.
async fn run(mode: &str, subchannels: &[Subchannel], rpc: Rpc, options: &Options) -> Run {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicU32::new(0));
    let targets: Arc<Vec<(Channel, Option<String>)>> = Arc::new(
        subchannels
            .iter()
            .map(|s| (s.channel.clone(), s.endpoint.clone()))
            .collect(),
    );
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..options.concurrency.min(options.rpcs) {
        let (tally, next, targets) = (tally.clone(), next.clone(), targets.clone());
        let (rpcs, timeout) = (options.rpcs, options.timeout);
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= rpcs {
                    break;
                }
                let (channel, endpoint) = &targets[i as usize % targets.len()];
                let started = Instant::now();
                let (result, attempts) = call(channel.clone(), rpc, timeout).await;
                let ms = crate::report::millis(started.elapsed());
                let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
                tally.retried += attempts - 1;
                match result {
                    Ok(name) => {
                        tally.ok_ms.push(ms);
                        if let Some(key) = name.or_else(|| endpoint.clone()) {
                            *tally.per_replica.entry(key).or_default() += 1;
                        }
                    }
                    Err(status) => *tally.errors.entry(describe(&status)).or_default() += 1,
                }
            }
        });
    }
    let limit = options.timeout * RUN_TIMEOUTS;
    let finished = tokio::time::timeout(limit, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    workers.abort_all();
    // Every connection these channels opened, the first call's included.
    let connections: u32 = subchannels
        .iter()
        .map(|s| s.dialer.opened.load(Ordering::Relaxed))
        .sum();
    let mut tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    let ok = tally.ok_ms.len() as u32;
    let mut failed: u32 = tally.errors.values().sum();
    if finished.is_err() {
        let unfinished = options.rpcs.saturating_sub(ok + failed);
        if unfinished > 0 {
            tally
                .errors
                .insert(format!("run stopped after {limit:?}"), unfinished);
            failed += unfinished;
        }
    }
    tally.ok_ms.sort_by(f64::total_cmp);
    let identity = match (rpc, subchannels.iter().all(|s| s.endpoint.is_some())) {
        (Rpc::Whoami, _) => "whoami",
        (Rpc::Health, true) => "endpoint",
        (Rpc::Health, false) => "unknown",
    };
    let known = identity != "unknown";
    Run {
        mode: mode.to_string(),
        identity: identity.to_string(),
        rpcs: options.rpcs,
        ok,
        failed,
        connections,
        replicas_seen: known.then_some(tally.per_replica.len() as u32),
        per_replica: tally.per_replica,
        max_share: None,
        fair_share: None,
        p50_ms: crate::stats::percentile(&tally.ok_ms, 50.0),
        p99_ms: crate::stats::percentile(&tally.ok_ms, 99.0),
        errors: tally.errors,
        retried: tally.retried,
    }
}

/// Each run's busiest replica's share of its successful RPCs, against the
/// fair share over every replica known from any run or the endpoint list.
fn fill_shares(endpoints: usize, runs: &mut [Run]) {
    let known = runs
        .iter()
        .filter_map(|r| r.replicas_seen)
        .map(|n| n as usize)
        .chain([endpoints])
        .max()
        .unwrap_or(0);
    for run in runs {
        if known > 0 {
            run.fair_share = Some(round4(1.0 / known as f64));
        }
        if run.replicas_seen.is_some() && run.ok > 0 {
            let max = run.per_replica.values().max().copied().unwrap_or(0);
            run.max_share = Some(round4(f64::from(max) / f64::from(run.ok)));
        }
    }
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// The HTTP/2 client preface and an empty SETTINGS frame: a plaintext
/// HTTP/2 server answers with its own SETTINGS.
fn h2_preface() -> Vec<u8> {
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    hello
}

/// A TLS ClientHello: a TLS server answers with a handshake record or an
/// alert, whatever it thinks of the offer.
fn tls_client_hello() -> Option<Vec<u8>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("podprobe.invalid").ok()?;
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    let mut hello = Vec::new();
    connection.write_tls(&mut hello).ok()?;
    Some(hello)
}

/// What the server at `addr` speaks, from its first bytes in answer to
/// `hello`: used to name a TLS/plaintext mismatch plainly.
async fn sniff(addr: SocketAddr, hello: &[u8], timeout: Duration) -> Option<&'static str> {
    let probe = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(hello).await.ok()?;
        let mut first = [0u8; 9];
        let mut got = 0;
        while got < first.len() {
            let n = stream.read(&mut first[got..]).await.ok()?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let first = &first[..got];
        match first {
            [0x15 | 0x16, 0x03, ..] => Some("TLS"),
            _ if first.starts_with(b"HTTP/1") => Some("HTTP/1.x"),
            [_, _, _, 0x04, ..] if got == 9 => Some("plaintext HTTP/2"),
            _ => None,
        }
    };
    tokio::time::timeout(timeout, probe).await.ok().flatten()
}

/// The first RPC: which service answers, or one clear reason why none does.
async fn first_call(sub: &Subchannel, options: &Options) -> crate::Result<Rpc> {
    let (whoami, _) = call(sub.channel.clone(), Rpc::Whoami, options.timeout).await;
    let status = match whoami {
        Ok(_) => return Ok(Rpc::Whoami),
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            match call(sub.channel.clone(), Rpc::Health, options.timeout)
                .await
                .0
            {
                Ok(_) => return Ok(Rpc::Health),
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    return Err(Error::unavailable(format!(
                        "{} implements neither podprobe.v1.Identity nor grpc.health.v1.Health",
                        options.target
                    )))
                }
                Err(status) => status,
            }
        }
        Err(status) => status,
    };
    let target = &options.target;
    let addr = sub.dialer.addrs.first().copied();
    // Ask in the language the server might speak instead of ours.
    let hello = if options.tls {
        Some(h2_preface())
    } else {
        tls_client_hello()
    };
    let speaks = match (addr, hello) {
        (Some(addr), Some(hello)) => sniff(addr, &hello, options.timeout).await,
        _ => None,
    };
    Err(match (options.tls, speaks) {
        (false, Some("TLS")) => Error::usage(format!("{target} speaks TLS: add --tls")),
        (true, Some("plaintext HTTP/2")) => Error::usage(format!(
            "{target} speaks plaintext HTTP/2, not TLS: use --plaintext"
        )),
        (_, Some("HTTP/1.x")) => {
            Error::unavailable(format!("{target} answers HTTP/1.x, not gRPC over HTTP/2"))
        }
        _ => Error::unavailable(format!("cannot call {target}: {}", describe(&status))),
    })
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

pub async fn measure(options: &Options) -> crate::Result<Evidence> {
    let (host, port, round_robin) = parse_target(&options.target)?;
    let target_addrs = resolve(&host, port, options.timeout).await?;
    let endpoints = match &options.headless {
        Some(name) => {
            let (name, headless_port) = match split_host_port(name) {
                Ok((name, p)) => (name, p),
                Err(_) => (name.clone(), port),
            };
            resolve(&name, headless_port, options.timeout).await?
        }
        None => target_addrs.clone(),
    };

    // The single channel, as the application would have it.
    let single: Vec<Subchannel> = if round_robin {
        target_addrs
            .iter()
            .map(|a| subchannel(&host, port, vec![*a], Some(a.to_string()), options))
            .collect::<crate::Result<_>>()?
    } else {
        vec![subchannel(
            &host,
            port,
            target_addrs.clone(),
            None,
            options,
        )?]
    };
    let rpc = first_call(&single[0], options).await?;
    let mut runs = vec![run(SINGLE_CHANNEL, &single, rpc, options).await];

    if endpoints.len() >= 2 {
        let per: Vec<Subchannel> = endpoints
            .iter()
            .map(|a| subchannel(&host, port, vec![*a], Some(a.to_string()), options))
            .collect::<crate::Result<_>>()?;
        runs.push(run(PER_ENDPOINT, &per, rpc, options).await);
    }
    fill_shares(endpoints.len(), &mut runs);
    Ok(Evidence {
        target: options.target.clone(),
        balancing: if round_robin {
            "round_robin"
        } else {
            "pick_first"
        }
        .to_string(),
        endpoints: endpoints.iter().map(SocketAddr::to_string).collect(),
        rpc: match rpc {
            Rpc::Whoami => "whoami",
            Rpc::Health => "health",
        }
        .to_string(),
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

    fn run_of(per_replica: &[(&str, u32)], identity: &str) -> Run {
        let ok = per_replica.iter().map(|(_, n)| n).sum();
        Run {
            mode: SINGLE_CHANNEL.into(),
            identity: identity.into(),
            rpcs: ok,
            ok,
            failed: 0,
            connections: 1,
            replicas_seen: (identity != "unknown").then_some(per_replica.len() as u32),
            per_replica: per_replica
                .iter()
                .map(|(k, n)| (k.to_string(), *n))
                .collect(),
            max_share: None,
            fair_share: None,
            p50_ms: None,
            p99_ms: None,
            errors: BTreeMap::new(),
            retried: 0,
        }
    }

    #[test]
    fn shares_use_every_replica_known() {
        let mut runs = vec![
            run_of(&[("a", 300)], "whoami"),
            run_of(&[("a", 100), ("b", 100), ("c", 100)], "whoami"),
        ];
        fill_shares(3, &mut runs);
        assert_eq!(runs[0].max_share, Some(1.0));
        assert_eq!(runs[0].fair_share, Some(0.3333));
        assert_eq!(runs[1].max_share, Some(0.3333));
        let mut unknown = vec![run_of(&[], "unknown")];
        fill_shares(3, &mut unknown);
        assert_eq!(unknown[0].max_share, None);
        assert_eq!(unknown[0].fair_share, Some(0.3333));
    }
}
