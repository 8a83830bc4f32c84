//! The pod's own network: where we are (context, interfaces, routes),
//! whether targets can be reached, and the node's conntrack table.

pub mod judge;
pub mod measure;
pub mod resolve;

use crate::report::Context;

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
