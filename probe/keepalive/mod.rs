//! `podprobe keepalive`: the app's real idle timeout on the wire against the
//! Envoy sidecar's upstream idle timeout, the cause of sporadic 503 UC.

pub mod admin;
pub mod envoy;
pub mod judge;
pub mod measure;
pub mod metrics;

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
    let (app, proxy) = tokio::join!(
        measure::measure_app(
            &options.upstream,
            addrs,
            &options.path,
            options.timeout,
            options.max_wait
        ),
        admin::read_proxy(
            &host,
            port,
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
    let text = std::fs::read_to_string(path).map_err(input)?;
    let clusters = envoy::parse_config_dump(&text)
        .map_err(|why| input(std::io::Error::new(std::io::ErrorKind::InvalidData, why)))?;
    Ok(SavedDump {
        from: path.display().to_string(),
        clusters,
    })
}
