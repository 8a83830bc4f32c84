//! `podprobe keepalive`: the app's real idle timeout on the wire against the
//! Envoy sidecar's upstream idle timeout, the cause of sporadic 503 UC.

pub mod admin;
pub mod dump;
pub mod envoy;
pub mod judge;
pub mod measure;
pub mod route;
pub mod servers;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::cli::{DoctorArgs, GlobalArgs, KeepaliveArgs};
use crate::net::resolve;
use crate::report::{timed, Check, Report};
use crate::Error;

use admin::SavedDump;

/// What to measure and where to read the proxy's side.
struct Plan<'a> {
    upstream: &'a str,
    path: &'a str,
    max_wait: Duration,
    /// `--envoy-admin`; `None` means the default (or, with a saved dump,
    /// judging offline).
    admin: Option<&'a str>,
    saved: Option<SavedDump>,
    io_timeout: Duration,
}

pub fn run(args: &KeepaliveArgs, global: &GlobalArgs) -> crate::Result<Report> {
    let report = Report::start(crate::net::report_context());
    if !args.path.starts_with('/')
        || args
            .path
            .contains(|c: char| c.is_whitespace() || c.is_control())
    {
        return Err(Error::usage(format!(
            "--path {:?} must start with / and hold no spaces",
            args.path
        )));
    }
    if let Some(url) = args.envoy_admin.as_deref() {
        admin::check_admin_url(url)?;
    }
    let saved = args
        .config_dump
        .as_deref()
        .map(read_saved_dump)
        .transpose()?;
    let plan = Plan {
        upstream: &args.upstream,
        path: &args.path,
        max_wait: args.max_wait,
        admin: args.envoy_admin.as_deref(),
        saved,
        io_timeout: global.timeout,
    };
    let addrs = resolve::resolve_target(plan.upstream, plan.io_timeout)?;
    let check = timed(|| {
        measure_and_judge(plan, &addrs)
            .unwrap_or_else(|e| Check::errored(judge::ID, judge::TITLE, &e))
    });
    Ok(report.finish(vec![check]))
}

/// The check for `doctor --upstream` (none without it): every failure
/// becomes an errored check, so the other checks still report.
pub fn doctor_check(args: &DoctorArgs, global: &GlobalArgs) -> Option<Check> {
    if let Some(Err(e)) = args.envoy_admin.as_deref().map(admin::check_admin_url) {
        return Some(Check::errored(judge::ID, judge::TITLE, &e));
    }
    let plan = Plan {
        upstream: args.upstream.as_deref()?,
        path: "/",
        max_wait: args.max_wait,
        admin: args.envoy_admin.as_deref(),
        saved: None,
        io_timeout: global.timeout,
    };
    Some(timed(|| {
        resolve::resolve_target(plan.upstream, plan.io_timeout)
            .and_then(|addrs| measure_and_judge(plan, &addrs))
            .unwrap_or_else(|e| Check::errored(judge::ID, judge::TITLE, &e))
    }))
}

fn measure_and_judge(plan: Plan<'_>, addrs: &[SocketAddr]) -> crate::Result<Check> {
    let (host, port) = resolve::split_host_port(plan.upstream)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    let user_agent = measure::user_agent();
    let headers = [
        ("user-agent", user_agent.as_str()),
        ("accept", "*/*"),
        ("connection", "keep-alive"),
    ];
    let request = route::Request {
        host: &host,
        port,
        destinations: addrs,
        authority: plan.upstream,
        path: plan.path,
        headers: &headers,
    };
    let (app, proxy) = runtime.block_on(async {
        tokio::join!(
            measure::measure_app(
                plan.upstream,
                addrs,
                plan.path,
                plan.io_timeout,
                plan.max_wait
            ),
            admin::read_proxy(&request, plan.saved, plan.admin, plan.io_timeout),
        )
    });
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
