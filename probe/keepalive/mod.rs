//! `podprobe keepalive`: the app's real idle timeout on the wire against the
//! Envoy sidecar's upstream idle timeout, the cause of sporadic 503 UC.

pub mod admin;
pub mod dump;
pub mod envoy;
pub mod judge;
pub mod measure;
pub mod metrics;
pub mod route;
pub mod servers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::net::resolve;
use crate::report::{timed_async, Check, Report};
use crate::Error;

use admin::SavedDump;

/// What to measure and where to read the proxy's side.
#[derive(Debug, Clone)]
pub struct Options {
    /// The app as `HOST:PORT`.
    pub upstream: String,
    /// The path of the one keep-alive request.
    pub path: String,
    /// How long to wait for the app to close an idle connection.
    pub max_wait: Duration,
    /// `--envoy-admin`; `None` means the default (or, with a saved dump,
    /// judging offline).
    pub envoy_admin: Option<String>,
    /// A saved `/config_dump` to judge instead of asking the admin API.
    pub config_dump: Option<PathBuf>,
    pub timeout: Duration,
}

pub async fn run(options: &Options) -> crate::Result<Report> {
    let report = Report::start(crate::net::report_context());
    if !options.path.starts_with('/')
        || options
            .path
            .contains(|c: char| c.is_whitespace() || c.is_control())
    {
        return Err(Error::usage(format!(
            "--path {:?} must start with / and hold no spaces",
            options.path
        )));
    }
    if let Some(url) = options.envoy_admin.as_deref() {
        admin::check_admin_url(url)?;
    }
    let saved = options
        .config_dump
        .as_deref()
        .map(read_saved_dump)
        .transpose()?;
    let addrs = resolve::resolve_target(&options.upstream, options.timeout).await?;
    let check = timed_async(async {
        measure_and_judge(options, saved, &addrs)
            .await
            .unwrap_or_else(|e| Check::errored(judge::ID, judge::TITLE, &e))
    })
    .await;
    Ok(report.finish(vec![check]))
}

/// The check for `doctor --upstream` (none without it): every failure
/// becomes an errored check, so the other checks still report.
pub async fn doctor_checks(options: Option<&Options>) -> crate::Result<Vec<Check>> {
    let Some(options) = options else {
        return Ok(Vec::new());
    };
    if let Some(url) = options.envoy_admin.as_deref() {
        admin::check_admin_url(url)?;
    }
    let check = timed_async(async {
        let measured = match resolve::resolve_target(&options.upstream, options.timeout).await {
            Ok(addrs) => measure_and_judge(options, None, &addrs).await,
            Err(e) => Err(e),
        };
        measured.unwrap_or_else(|e| Check::errored(judge::ID, judge::TITLE, &e))
    })
    .await;
    Ok(vec![check])
}

async fn measure_and_judge(
    options: &Options,
    saved: Option<SavedDump>,
    addrs: &[SocketAddr],
) -> crate::Result<Check> {
    let (host, port) = resolve::split_host_port(&options.upstream)?;
    let user_agent = measure::user_agent();
    let headers = [
        ("user-agent", user_agent.as_str()),
        ("accept", "*/*"),
        ("connection", "keep-alive"),
    ];
    // The request as Envoy would see it: what the app sends to UPSTREAM.
    let request = route::Request {
        host: &host,
        port,
        destinations: addrs,
        authority: &options.upstream,
        path: &options.path,
        headers: &headers,
    };
    let (app, proxy) = tokio::join!(
        measure::measure_app(
            &options.upstream,
            addrs,
            &options.path,
            options.timeout,
            options.max_wait
        ),
        admin::read_proxy(
            &request,
            saved,
            options.envoy_admin.as_deref(),
            options.timeout
        ),
    );
    Ok(judge::judge(&app?, &proxy))
}

/// Reads `--config-dump FILE`; a file that is not a dump is bad input.
fn read_saved_dump(path: &Path) -> crate::Result<SavedDump> {
    let input = |cause| Error::Input {
        path: path.display().to_string(),
        cause,
    };
    let bytes = std::fs::read(path).map_err(input)?;
    dump::parse(&bytes)
        .map_err(|why| input(std::io::Error::new(std::io::ErrorKind::InvalidData, why)))?;
    Ok(SavedDump {
        from: path.display().to_string(),
        bytes,
    })
}

/// Test data shared by the area's unit tests.
#[cfg(test)]
pub(crate) mod testdata {
    /// A fixture from tests/fixtures/envoy.
    pub fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/envoy/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Inputs for "never panics" tests: random bytes and a real dump cut
    /// short with bytes flipped, from a fixed xorshift seed.
    pub fn mutated_inputs() -> impl Iterator<Item = Vec<u8>> {
        let seed = fixture("consul-k8s-test_config_dump.json");
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..2000).map(move |round| {
            let len = (next() % 600) as usize;
            if round % 2 == 0 {
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut b = seed[..len.min(seed.len())].to_vec();
                for _ in 0..4 {
                    if !b.is_empty() {
                        let i = (next() as usize) % b.len();
                        b[i] = next() as u8;
                    }
                }
                b
            }
        })
    }
}
