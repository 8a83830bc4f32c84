//! The pod's own network: where we are (context, interfaces, routes),
//! whether targets can be reached, and the node's conntrack table.

pub mod judge;
pub mod measure;
pub mod metrics;
pub mod resolve;

use std::path::Path;
use std::time::Duration;

use crate::checks::blocking;
use crate::report::{timed, Check, Context};

/// What `doctor` asks of this area.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `HOST:PORT` targets for `tcp.reachability`.
    pub tcp: Vec<String>,
    pub timeout: Duration,
}

/// `net.context`: never fails; it is the context of the report.
pub async fn context_checks(_options: &Options) -> crate::Result<Vec<Check>> {
    blocking(|| vec![timed(|| judge::context(&measure::context()))]).await
}

/// `tcp.reachability` for the `--tcp` targets, none without them. A target
/// that does not resolve is bad input, as it is for curl.
pub async fn reachability_checks(options: &Options) -> crate::Result<Vec<Check>> {
    if options.tcp.is_empty() {
        return Ok(Vec::new());
    }
    let started = std::time::Instant::now();
    let targets = measure::resolve_targets(&options.tcp, options.timeout).await?;
    let timeout = options.timeout;
    let mut check = blocking(move || {
        crate::checks::guarded("tcp.reachability", "TCP reachability", || {
            judge::reachability(&measure::reachability(targets, timeout))
        })
    })
    .await?;
    check.duration_ms = crate::report::millis(started.elapsed());
    Ok(vec![check])
}

/// `net.conntrack`: this namespace's conntrack table, said to be the pod's
/// own unless the namespace is a node's; skipped where it cannot be read.
pub async fn conntrack_checks(_options: &Options) -> crate::Result<Vec<Check>> {
    blocking(|| {
        vec![timed(|| {
            match measure::conntrack(Path::new(measure::CONNTRACK_PROC)) {
                Ok(mut evidence) => {
                    evidence.scope = crate::node::table_scope();
                    judge::conntrack(&evidence)
                }
                Err(reason) => Check::skipped(
                    "net.conntrack",
                    "Conntrack table",
                    format!("conntrack state not readable here ({reason})"),
                ),
            }
        })]
    })
    .await
}

/// The report's context block: who and where this probe ran. Cheap: no
/// network I/O.
pub fn report_context() -> Context {
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    Context {
        hostname: hostname(),
        pod: env("POD_NAME"),
        namespace: env("POD_NAMESPACE"),
        node: env("NODE_NAME"),
        netns: std::fs::read_link("/proc/self/ns/net")
            .ok()
            .map(|p| p.to_string_lossy().into_owned()),
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
