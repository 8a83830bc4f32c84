//! `podprobe node`: the node's side of pod failures, run in the node's
//! network namespace (`kubectl debug node/NAME`, or root on the node):
//! conntrack sampled over an interval, kube-proxy's mode and size, SNAT port
//! allocation, INVALID handling, NodeLocal DNSCache and the CNI's MTU.

pub mod cni;
pub mod iptables;
pub mod ipvs;
pub mod judge;
pub mod links;
pub mod measure;
pub mod metrics;
pub mod nft;
#[cfg(test)]
mod proptests;
pub mod rules;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::report::{timed, Check, Report};
use crate::{Error, Result};

/// What `podprobe node` is asked to do.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The window over which conntrack's counters become rates; rules are
    /// read within it.
    pub interval: Duration,
    /// Where the host's root is mounted (`kubectl debug node/...`: /host).
    pub host_root: PathBuf,
    /// Bound on a single network wait (the NodeLocal DNSCache probe).
    pub timeout: Duration,
}

/// The sampling window when none is given (`watch --node`).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Where `kubectl debug node/...` mounts the host's root.
pub const DEFAULT_HOST_ROOT: &str = "/host";

/// Where this process's kernel state is read: its own network namespace.
const PROC: &str = "/proc";

/// Everything measured, for the judges.
#[derive(Debug)]
pub struct NodeEvidence {
    pub conntrack: std::result::Result<measure::ConntrackEvidence, String>,
    pub rules: measure::RulesEvidence,
    pub interfaces: measure::Interfaces,
    pub tcp_be_liberal: Option<bool>,
    pub nodelocal: Option<judge::NodeLocal>,
}

/// The usage error for a pod's namespace, with the way to the node's.
pub fn not_a_node(links: &[links::Link]) -> Error {
    let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    Error::usage(format!(
        "this is not a node's network namespace (interfaces: {}; no pod veths, CNI or kube-proxy devices): \
         run it in the node's: {}",
        names.join(", "),
        crate::net::judge::NODE_RECIPE
    ))
}

/// Measures the node: conntrack at the start and after `interval`, and in
/// between, in parallel, its rules, interfaces and NodeLocal DNSCache.
pub fn measure(opts: &NodeOptions, links: Vec<links::Link>) -> NodeEvidence {
    let proc_root = Path::new(PROC);
    let start = Instant::now();
    let deadline = crate::clock::later(start, opts.interval);
    let first = measure::read_conntrack(proc_root);
    let tools = measure::Tools::new(&opts.host_root);
    let addresses = crate::net::measure::interfaces().unwrap_or_default();
    let interfaces = measure::Interfaces {
        links,
        addresses,
        default_routes: crate::net::measure::default_routes(),
    };
    let nodelocal_at = nodelocal_address(&interfaces);
    let (rules, nodelocal) = std::thread::scope(|s| {
        let rules = s.spawn(|| measure::read_rules(&tools, proc_root, deadline));
        let probe = nodelocal_at.map(|(address, interface)| {
            s.spawn(move || {
                let wait = opts.timeout.min(opts.interval);
                judge::NodeLocal {
                    probe: measure::probe_dns(SocketAddr::new(address, 53), wait),
                    address: address.to_string(),
                    interface,
                }
            })
        });
        let nodelocal = probe.map(|p| crate::checks::joined(p.join()));
        (crate::checks::joined(rules.join()), nodelocal)
    });
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    let second = measure::read_conntrack(proc_root);
    let kernel = std::fs::read_to_string(proc_root.join("sys/kernel/osrelease"))
        .map(|k| k.trim().to_string())
        .unwrap_or_default();
    let conntrack = first.and_then(|first| {
        let second = second?;
        let mut evidence = measure::conntrack_evidence(&first, &second, start.elapsed(), &kernel);
        if evidence
            .increases
            .get("insert_failed")
            .copied()
            .unwrap_or(0)
            > 0
        {
            evidence.udp_dns_flows = measure::udp_dns_flows(proc_root, Duration::from_millis(500));
        }
        Ok(evidence)
    });
    NodeEvidence {
        conntrack,
        rules,
        tcp_be_liberal: measure::sysctl(proc_root, "net.netfilter.nf_conntrack_tcp_be_liberal")
            .map(|v| v != 0),
        interfaces,
        nodelocal,
    }
}

/// NodeLocal DNSCache's address: on its `nodelocaldns` interface, or the
/// well-known link-local address on any interface.
fn nodelocal_address(interfaces: &measure::Interfaces) -> Option<(IpAddr, String)> {
    let host = |a: &str| a.split('/').next().and_then(|h| h.parse::<IpAddr>().ok());
    let on = |name: &str| {
        interfaces
            .addresses
            .iter()
            .find(|i| i.name == name)
            .and_then(|i| {
                i.addresses
                    .iter()
                    .filter_map(|a| host(a))
                    .find(IpAddr::is_ipv4)
            })
    };
    if let Some(ip) = on("nodelocaldns") {
        return Some((ip, "nodelocaldns".into()));
    }
    interfaces.addresses.iter().find_map(|i| {
        i.addresses
            .iter()
            .filter_map(|a| host(a))
            .find(|ip| ip.to_string() == judge::NODELOCAL_ADDRESS)
            .map(|ip| (ip, i.name.clone()))
    })
}

/// Whose conntrack table this namespace has: a node's when its interfaces
/// are a node's (unknown interfaces count as a pod's: no PASS for the node
/// on a guess).
pub fn table_scope() -> crate::net::measure::TableScope {
    match links::dump(Duration::from_secs(1)) {
        Ok(links) if cni::looks_like_node(&links) => crate::net::measure::TableScope::Node,
        _ => crate::net::measure::TableScope::Pod,
    }
}

/// The six node checks, judged from one measurement.
pub fn checks(evidence: &NodeEvidence) -> Vec<Check> {
    let cni = cni::analyse(&evidence.interfaces, &evidence.rules.facts.cni_chains);
    let ipvs_interface = evidence
        .interfaces
        .links
        .iter()
        .any(|l| l.name == "kube-ipvs0");
    let conntrack = evidence.conntrack.as_ref().ok();
    vec![
        timed(|| judge::conntrack(&evidence.conntrack)),
        timed(|| judge::kube_proxy(&evidence.rules, ipvs_interface, &cni.cnis)),
        timed(|| judge::snat(&evidence.rules)),
        timed(|| judge::conntrack_invalid(&evidence.rules, evidence.tcp_be_liberal, conntrack)),
        timed(|| judge::dns_cache(evidence.nodelocal.as_ref(), &evidence.rules, conntrack)),
        timed(|| judge::cni(&cni)),
    ]
}

/// The node checks as the registry runs them (`watch --node`): none unless
/// asked for, and none outside a node's namespace.
pub async fn registry_checks(options: Option<&NodeOptions>) -> Result<Vec<Check>> {
    let Some(opts) = options.cloned() else {
        return Ok(Vec::new());
    };
    crate::checks::blocking(move || {
        let links = links::dump(opts.timeout)
            .map_err(|e| Error::io("listing the network namespace's interfaces", e))?;
        if !cni::looks_like_node(&links) {
            return Err(not_a_node(&links));
        }
        let started = Instant::now();
        let evidence = measure(&opts, links);
        let mut checks = checks(&evidence);
        // The measurement is shared: each check's time is the whole sample.
        let took = crate::report::millis(started.elapsed());
        for check in &mut checks {
            check.duration_ms += took;
        }
        Ok(checks)
    })
    .await?
}

/// `podprobe node`.
pub async fn run(opts: &NodeOptions) -> Result<Report> {
    let report = Report::start(crate::net::report_context());
    let checks = registry_checks(Some(opts)).await?;
    Ok(report.finish(checks))
}
