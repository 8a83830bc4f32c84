//! The I/O of `podprobe node`: conntrack sampled twice, the node's rules
//! read with the image's tools or the host's (chroot into the host root),
//! IPVS, interfaces and NodeLocal DNSCache. Everything returned is plain
//! evidence for the judges in `judge.rs`.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::iptables::{self, Backend};
use super::links::Link;
use super::rules::{self, RuleFacts};
use super::{ipvs, nft};
use crate::net::measure::{
    parse_conntrack_stat_table, read_proc, read_proc_number, saturating_sum, ConntrackStat,
    DefaultRoute, Interface,
};
use crate::report::millis;

/// A table with more chains than this is not saved whole: iptables-nft-save
/// and nft take tens of seconds on kube-proxy's 60,000 chains of 30,000
/// Services, so only the chains the checks need are listed.
pub const BIG_TABLE_CHAINS: usize = 8_000;
/// At most this many chains are listed one by one in a big table.
const TARGETED_CHAINS: usize = 32;
/// Chains of one Service each: never needed one by one.
const PER_SERVICE_PREFIXES: [&str; 6] = [
    "KUBE-SVC-",
    "KUBE-SEP-",
    "KUBE-EXT-",
    "KUBE-FW-",
    "KUBE-SVL-",
    "KUBE-XLB-",
];
/// The privilege rules need, said the way a user can get it.
pub const RULES_PRIVILEGE: &str =
    "CAP_NET_ADMIN in the node's network namespace: run as root in a privileged debug pod \
     (kubectl debug node/NAME --profile=sysadmin --custom=manifests/debug/node.json)";
/// Counters of /proc/net/stat/nf_conntrack the node checks follow.
pub const CONNTRACK_COUNTERS: [&str; 6] = [
    "insert_failed",
    "drop",
    "early_drop",
    "invalid",
    "search_restart",
    "clashres",
];

/// How reading one source of rules went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceStatus {
    /// Read whole.
    Read,
    /// Only the chains the checks need (a table too large to save in time).
    Partial,
    /// Nothing there (no legacy tables, no IPVS, no such table).
    Absent,
    /// Present but not readable here: `reason` says what would make it readable.
    Unreadable,
    /// Did not finish within the sampling interval.
    Timeout,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// `iptables-nft`, `iptables-legacy`, `ip6tables-nft`, `nftables`, `ipvs`.
    pub source: String,
    /// What was run or read.
    pub command: String,
    pub status: SourceStatus,
    pub reason: Option<String>,
    pub rules: usize,
    pub read_ms: f64,
    pub parse_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IpvsSummary {
    pub virtual_services: usize,
    pub real_servers: usize,
}

/// Every rule source of the node, what was learnt from them, and IPVS.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RulesEvidence {
    pub sources: Vec<SourceReport>,
    pub facts: RuleFacts,
    pub ipvs: Option<IpvsSummary>,
}

impl SourceReport {
    /// A source with nothing to read here.
    fn absent(source: &str, command: String, reason: &str) -> SourceReport {
        SourceReport {
            source: source.to_string(),
            command,
            status: SourceStatus::Absent,
            reason: Some(reason.to_string()),
            rules: 0,
            read_ms: 0.0,
            parse_ms: 0.0,
        }
    }
}

impl RulesEvidence {
    /// True when at least one iptables or nftables source was read.
    pub fn readable(&self) -> bool {
        self.sources.iter().any(|s| {
            s.source != "ipvs" && matches!(s.status, SourceStatus::Read | SourceStatus::Partial)
        })
    }

    /// True when every source there is was read (whole or in part).
    pub fn complete(&self) -> bool {
        !self.sources.iter().any(|s| {
            matches!(
                s.status,
                SourceStatus::Unreadable | SourceStatus::Failed | SourceStatus::Timeout
            )
        })
    }

    /// Why nothing (or not everything) could be read, for a skipped check.
    pub fn why_unreadable(&self) -> String {
        let reasons: Vec<String> = self
            .sources
            .iter()
            .filter(|s| {
                matches!(
                    s.status,
                    SourceStatus::Unreadable | SourceStatus::Failed | SourceStatus::Timeout
                )
            })
            .map(|s| format!("{}: {}", s.command, s.reason.as_deref().unwrap_or("failed")))
            .collect();
        if reasons.is_empty() {
            "no iptables or nftables rules could be read".to_string()
        } else {
            reasons.join("; ")
        }
    }
}

/// The node's tools: the image's own when it has them (the `full` target),
/// else the host's, run in a chroot of the host's root (`kubectl debug
/// node/...` mounts it at /host).
#[derive(Debug, Clone)]
pub struct Tools {
    host_root: Option<PathBuf>,
    /// Where the image's own tools are looked up (`$PATH`).
    search_path: std::ffi::OsString,
}

const BIN_DIRS: [&str; 5] = ["usr/sbin", "sbin", "usr/bin", "bin", "usr/local/sbin"];

#[derive(Debug)]
enum RunError {
    Missing,
    Denied(String),
    Timeout,
    Failed(String),
}

impl Tools {
    pub fn new(host_root: &Path) -> Tools {
        Tools {
            host_root: host_root.is_dir().then(|| host_root.to_path_buf()),
            search_path: std::env::var_os("PATH").unwrap_or_default(),
        }
    }

    fn command(&self, tool: &str) -> Option<(Command, String)> {
        if let Some(own) = std::env::split_paths(&self.search_path)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
        {
            return Some((Command::new(own), tool.to_string()));
        }
        let root = self.host_root.as_ref()?;
        let inside = BIN_DIRS
            .iter()
            .map(|dir| Path::new("/").join(dir).join(tool))
            .find(|p| root.join(p.strip_prefix("/").unwrap_or(p)).is_file())?;
        let mut cmd = Command::new(&inside);
        let c_root = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).ok()?;
        use std::os::unix::process::CommandExt;
        // SAFETY: chroot(2) and chdir(2) are async-signal-safe; the closure
        // allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::chroot(c_root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Some((cmd, format!("chroot {} {tool}", root.display())))
    }

    /// Runs a tool to completion or until `deadline`; stdout on success.
    fn run(
        &self,
        tool: &str,
        args: &[&str],
        deadline: Instant,
    ) -> (String, Result<(String, f64), RunError>) {
        let Some((mut cmd, via)) = self.command(tool) else {
            return (format!("{tool} {}", args.join(" ")), Err(RunError::Missing));
        };
        let line = std::iter::once(via.as_str())
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let start = Instant::now();
        let spawned = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => return (line, Err(RunError::Failed(e.to_string()))),
        };
        let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return (line, Err(RunError::Failed("no pipes".into())));
        };
        let result = std::thread::scope(|s| {
            let stdout = s.spawn(move || {
                let mut text = String::new();
                out.read_to_string(&mut text).map(|_| text)
            });
            let stderr = s.spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                text
            });
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Ok(status),
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break Err(RunError::Timeout);
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    Err(e) => break Err(RunError::Failed(e.to_string())),
                }
            };
            let stdout = crate::checks::joined(stdout.join());
            let stderr = crate::checks::joined(stderr.join());
            let status = status?;
            let first = stderr
                .lines()
                .find(|l| !l.trim().is_empty() && !l.starts_with("# Warning"))
                .unwrap_or("")
                .trim()
                .to_string();
            if !status.success() {
                let denied = [
                    "Permission denied",
                    "Operation not permitted",
                    "must be root",
                ];
                return Err(if denied.iter().any(|d| stderr.contains(d)) {
                    RunError::Denied(first)
                } else {
                    RunError::Failed(if first.is_empty() {
                        status.to_string()
                    } else {
                        first
                    })
                });
            }
            stdout.map_err(|e| RunError::Failed(format!("output: {e}")))
        });
        (line, result.map(|text| (text, millis(start.elapsed()))))
    }
}

/// One source's report when running its tool failed.
fn failed_source(source: &str, command: String, error: RunError, host_root: &str) -> SourceReport {
    let (status, reason) = match error {
        RunError::Missing => (
            SourceStatus::Unreadable,
            format!(
                "not in the image or under {host_root}: use the image's full target, or mount the host's root at {host_root}"
            ),
        ),
        RunError::Denied(said) => (
            SourceStatus::Unreadable,
            format!("{said}; needs {RULES_PRIVILEGE}"),
        ),
        RunError::Timeout => (
            SourceStatus::Timeout,
            "did not finish within the sampling interval (raise --interval)".to_string(),
        ),
        RunError::Failed(said) => (SourceStatus::Failed, said),
    };
    SourceReport {
        source: source.to_string(),
        command,
        status,
        reason: Some(reason),
        rules: 0,
        read_ms: 0.0,
        parse_ms: 0.0,
    }
}

fn timed_parse<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let value = f();
    (value, millis(start.elapsed()))
}

/// Reads every source of rules there is, in parallel, each bounded by
/// `deadline`.
pub fn read_rules(tools: &Tools, proc_root: &Path, deadline: Instant) -> RulesEvidence {
    let host_root = tools
        .host_root
        .as_ref()
        .map_or("/host".to_string(), |p| p.display().to_string());
    let host = host_root.as_str();
    let mut evidence = RulesEvidence::default();
    let results: Vec<(SourceReport, RuleFacts)> = std::thread::scope(|s| {
        let legacy: Vec<_> = [false, true]
            .map(|ipv6| s.spawn(move || read_legacy(tools, proc_root, ipv6, deadline, host)))
            .into_iter()
            .collect();
        let ipvs = s.spawn(|| read_ipvs(tools, proc_root, deadline, host));
        let mut all = read_nft_side(tools, deadline, host);
        for handle in legacy {
            all.push(crate::checks::joined(handle.join()));
        }
        let (report, summary) = crate::checks::joined(ipvs.join());
        evidence.ipvs = summary;
        all.push((report, RuleFacts::default()));
        all
    });
    for (report, facts) in results {
        evidence.sources.push(report);
        evidence.facts.merge(facts);
    }
    evidence
}

fn read_legacy(
    tools: &Tools,
    proc_root: &Path,
    ipv6: bool,
    deadline: Instant,
    host: &str,
) -> (SourceReport, RuleFacts) {
    let source = rules::iptables_source(Backend::Legacy, ipv6);
    let names = proc_root.join(if ipv6 {
        "net/ip6_tables_names"
    } else {
        "net/ip_tables_names"
    });
    let tables = std::fs::read_to_string(&names).unwrap_or_default();
    if tables.trim().is_empty() {
        return (
            SourceReport::absent(
                &source,
                names.display().to_string(),
                "no legacy iptables tables in this namespace",
            ),
            RuleFacts::default(),
        );
    }
    let tool = format!(
        "{}-legacy-save",
        if ipv6 { "ip6tables" } else { "iptables" }
    );
    let (command, result) = tools.run(&tool, &[], deadline);
    match result {
        Ok((text, read_ms)) => parse_iptables_source(
            &source,
            command,
            &text,
            read_ms,
            SourceStatus::Read,
            "filter",
        ),
        Err(e) => (
            failed_source(&source, command, e, host),
            RuleFacts::default(),
        ),
    }
}

fn parse_iptables_source(
    source: &str,
    command: String,
    text: &str,
    read_ms: f64,
    status: SourceStatus,
    default_table: &str,
) -> (SourceReport, RuleFacts) {
    let (parsed, parse_ms) = timed_parse(|| iptables::parse(text, default_table));
    match parsed {
        Ok(dump) => {
            let facts = rules::from_iptables(&dump, source, status == SourceStatus::Read);
            (
                SourceReport {
                    source: source.to_string(),
                    command,
                    status,
                    reason: None,
                    rules: dump.rule_count(),
                    read_ms,
                    parse_ms,
                },
                facts,
            )
        }
        Err(e) => (
            SourceReport {
                source: source.to_string(),
                command,
                status: SourceStatus::Failed,
                reason: Some(format!("unparseable output: {e}")),
                rules: 0,
                read_ms,
                parse_ms,
            },
            RuleFacts::default(),
        ),
    }
}

/// The nf_tables side: an inventory of chains (`nft -j list chains`), then
/// iptables-nft's tables through iptables-nft-save and every other table
/// through `nft -j`, each whole when small and chain by chain when huge.
fn read_nft_side(tools: &Tools, deadline: Instant, host: &str) -> Vec<(SourceReport, RuleFacts)> {
    let (command, inventory) = tools.run("nft", &["-j", "list", "chains"], deadline);
    let inventory = match inventory {
        Ok((text, read_ms)) => match nft::parse(&text) {
            Ok(ruleset) => (ruleset, read_ms),
            Err(e) => {
                let report =
                    failed_source("nftables", command, RunError::Failed(e.to_string()), host);
                return vec![(report, RuleFacts::default())];
            }
        },
        Err(RunError::Missing) => {
            // No nft: iptables-nft's tables whole, native tables unread.
            let mut out: Vec<_> = [false, true]
                .iter()
                .map(|&ipv6| {
                    let source = rules::iptables_source(Backend::Nft, ipv6);
                    let tool = format!("{}-nft-save", if ipv6 { "ip6tables" } else { "iptables" });
                    match tools.run(&tool, &[], deadline) {
                        (command, Ok((text, ms))) => parse_iptables_source(
                            &source,
                            command,
                            &text,
                            ms,
                            SourceStatus::Read,
                            "filter",
                        ),
                        (command, Err(e)) => (
                            failed_source(&source, command, e, host),
                            RuleFacts::default(),
                        ),
                    }
                })
                .collect();
            out.push((
                failed_source("nftables", command, RunError::Missing, host),
                RuleFacts::default(),
            ));
            return out;
        }
        Err(e) => {
            return vec![(
                failed_source("nftables", command, e, host),
                RuleFacts::default(),
            )]
        }
    };
    let (inventory, _) = inventory;
    std::thread::scope(|s| {
        let handles: Vec<_> = inventory
            .tables
            .iter()
            .filter_map(|table| {
                let iptables_table = matches!(table.family.as_str(), "ip" | "ip6")
                    && matches!(
                        table.name.as_str(),
                        "filter" | "nat" | "raw" | "mangle" | "security"
                    );
                if iptables_table {
                    // Checks look at filter, nat and raw only.
                    matches!(table.name.as_str(), "filter" | "nat" | "raw").then(|| {
                        s.spawn(move || read_iptables_nft_table(tools, table, deadline, host))
                    })
                } else {
                    Some(s.spawn(move || read_nft_table(tools, table, deadline, host)))
                }
            })
            .collect();
        handles
            .into_iter()
            .map(|h| crate::checks::joined(h.join()))
            .collect()
    })
}

fn read_iptables_nft_table(
    tools: &Tools,
    chains: &nft::Table,
    deadline: Instant,
    host: &str,
) -> (SourceReport, RuleFacts) {
    let ipv6 = chains.family == "ip6";
    let source = rules::iptables_source(Backend::Nft, ipv6);
    let family = if ipv6 { "ip6tables" } else { "iptables" };
    let name = chains.name.as_str();
    if chains.chains.len() <= BIG_TABLE_CHAINS {
        let (command, result) = tools.run(&format!("{family}-nft-save"), &["-t", name], deadline);
        return match result {
            Ok((text, ms)) => {
                parse_iptables_source(&source, command, &text, ms, SourceStatus::Read, name)
            }
            Err(e) => (
                failed_source(&source, command, e, host),
                RuleFacts::default(),
            ),
        };
    }
    // A huge table: the chains a packet enters by, and what they jump to,
    // skipping the per-Service chains.
    let starts: &[&str] = match name {
        "nat" => &["KUBE-SERVICES", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        _ => &["FORWARD"],
    };
    let known: std::collections::HashSet<&str> =
        chains.chains.iter().map(|c| c.name.as_str()).collect();
    let tool = format!("{family}-nft");
    let mut queue: std::collections::VecDeque<String> = starts
        .iter()
        .filter(|c| known.contains(*c))
        .map(|c| c.to_string())
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut text = String::new();
    let mut read_ms = 0.0;
    let command = format!(
        "{tool} -t {name} -S CHAIN (chain by chain: {} chains)",
        chains.chains.len()
    );
    while let Some(chain) = queue.pop_front() {
        if seen.len() >= TARGETED_CHAINS || !seen.insert(chain.clone()) {
            continue;
        }
        match tools.run(&tool, &["-t", name, "-S", &chain], deadline) {
            (_, Ok((out, ms))) => {
                read_ms += ms;
                if let Ok(dump) = iptables::parse(&out, name) {
                    let next = dump
                        .tables
                        .iter()
                        .flat_map(|t| t.rules.iter().filter_map(|r| r.jump()))
                        .filter(|j| known.contains(j))
                        .filter(|j| !PER_SERVICE_PREFIXES.iter().any(|p| j.starts_with(p)))
                        .map(String::from)
                        .collect::<Vec<_>>();
                    queue.extend(next);
                }
                text.push_str(&out);
            }
            (_, Err(e)) => {
                return (
                    failed_source(&source, command, e, host),
                    RuleFacts::default(),
                )
            }
        }
    }
    let (mut report, mut facts) = parse_iptables_source(
        &source,
        command,
        &text,
        read_ms,
        SourceStatus::Partial,
        name,
    );
    report.reason = Some(format!(
        "{} chains: listed {} of them (the ones packets enter by and their non-Service jumps)",
        chains.chains.len(),
        seen.len()
    ));
    // Service and endpoint counts come from the chain names of the inventory.
    let count = |prefix: &str| {
        chains
            .chains
            .iter()
            .filter(|c| c.name.starts_with(prefix))
            .count()
    };
    for kp in &mut facts.kube_proxy_iptables {
        kp.services = kp.services.max(count("KUBE-SVC-"));
        kp.endpoints = count("KUBE-SEP-");
    }
    (report, facts)
}

fn read_nft_table(
    tools: &Tools,
    chains: &nft::Table,
    deadline: Instant,
    host: &str,
) -> (SourceReport, RuleFacts) {
    let (family, name) = (chains.family.as_str(), chains.name.as_str());
    if chains.chains.len() <= BIG_TABLE_CHAINS {
        let (command, result) = tools.run("nft", &["-j", "list", "table", family, name], deadline);
        return match result {
            Ok((text, read_ms)) => {
                let (parsed, parse_ms) = timed_parse(|| nft::parse(&text));
                match parsed {
                    Ok(ruleset) => {
                        let facts = rules::from_nft(&ruleset, &|_| false);
                        let rules = ruleset.tables.iter().map(|t| t.rules.len()).sum();
                        (
                            SourceReport {
                                source: "nftables".into(),
                                command,
                                status: SourceStatus::Read,
                                reason: None,
                                rules,
                                read_ms,
                                parse_ms,
                            },
                            facts,
                        )
                    }
                    Err(e) => (
                        failed_source("nftables", command, RunError::Failed(e.to_string()), host),
                        RuleFacts::default(),
                    ),
                }
            }
            Err(e) => (
                failed_source("nftables", command, e, host),
                RuleFacts::default(),
            ),
        };
    }
    let mut facts = RuleFacts::default();
    let mut command = format!(
        "nft -j list chains ({family} {name}: {} chains)",
        chains.chains.len()
    );
    let mut read_ms = 0.0;
    if name == "kube-proxy" {
        let (map_command, result) = tools.run(
            "nft",
            &["-j", "list", "map", family, name, "service-ips"],
            deadline,
        );
        let elements = result.ok().and_then(|(text, ms)| {
            read_ms = ms;
            let ruleset = nft::parse(&text).ok()?;
            ruleset
                .tables
                .first()?
                .set("service-ips")
                .map(|s| s.elements)
        });
        command = format!("{command}; {map_command}");
        facts
            .kube_proxy_nftables
            .push(rules::nft_kube_proxy_partial(chains, elements));
    }
    facts.cni_chains.extend(
        chains
            .chains
            .iter()
            .filter_map(|c| rules::cni_of_chain(&c.name))
            .map(String::from),
    );
    (
        SourceReport {
            source: "nftables".into(),
            command,
            status: SourceStatus::Partial,
            reason: Some(format!(
                "{} chains: too many to list every rule within the interval; chains counted by name",
                chains.chains.len()
            )),
            rules: 0,
            read_ms,
            parse_ms: 0.0,
        },
        facts,
    )
}

fn read_ipvs(
    tools: &Tools,
    proc_root: &Path,
    deadline: Instant,
    host: &str,
) -> (SourceReport, Option<IpvsSummary>) {
    let path = proc_root.join("net/ip_vs");
    let start = Instant::now();
    let (command, text, format) = match std::fs::read_to_string(&path) {
        Ok(text) => (path.display().to_string(), text, ipvs::Format::Proc),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (
                SourceReport::absent("ipvs", path.display().to_string(), "IPVS is not loaded"),
                None,
            )
        }
        Err(_) => match tools.run("ipvsadm", &["-Ln"], deadline) {
            (command, Ok((text, _))) => (command, text, ipvs::Format::Ipvsadm),
            (command, Err(e)) => return (failed_source("ipvs", command, e, host), None),
        },
    };
    let read_ms = millis(start.elapsed());
    let (parsed, parse_ms) = timed_parse(|| ipvs::parse(&text, format));
    match parsed {
        Ok(services) => {
            let summary = IpvsSummary {
                virtual_services: services.len(),
                real_servers: services.iter().map(|s| s.real_servers.len()).sum(),
            };
            (
                SourceReport {
                    source: "ipvs".into(),
                    command,
                    status: SourceStatus::Read,
                    reason: None,
                    rules: services.len(),
                    read_ms,
                    parse_ms,
                },
                Some(summary),
            )
        }
        Err(e) => (
            failed_source("ipvs", command, RunError::Failed(e.to_string()), host),
            None,
        ),
    }
}

/// One reading of the conntrack table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackReading {
    pub count: u64,
    pub max: u64,
    pub buckets: Option<u64>,
    pub stat: ConntrackStat,
}

pub fn read_conntrack(proc_root: &Path) -> Result<ConntrackReading, String> {
    let number = |rel: &str| read_proc_number(proc_root, rel);
    Ok(ConntrackReading {
        stat: parse_conntrack_stat_table(&read_proc(proc_root, "net/stat/nf_conntrack")?)?,
        count: number("sys/net/netfilter/nf_conntrack_count")?,
        max: number("sys/net/netfilter/nf_conntrack_max")?,
        buckets: number("sys/net/netfilter/nf_conntrack_buckets").ok(),
    })
}

/// Evidence of `node.conntrack`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConntrackEvidence {
    pub count: u64,
    pub max: u64,
    pub buckets: Option<u64>,
    pub fill_pct: f64,
    pub interval_s: f64,
    /// Since boot (or since the namespace was made), summed over CPUs.
    pub totals: BTreeMap<String, u64>,
    /// Growth over the interval, summed over CPUs.
    pub increases: BTreeMap<String, u64>,
    pub rates_per_s: BTreeMap<String, f64>,
    /// Growth per CPU, for the counters that grew.
    pub per_cpu_increases: BTreeMap<String, Vec<u64>>,
    /// The kernel release (the insert-race fixes depend on it).
    pub kernel: String,
    /// UDP flows to port 53 in the table, counted when insert_failed grew
    /// (null when not counted or /proc/net/nf_conntrack is missing).
    pub udp_dns_flows: Option<u64>,
}

/// Turns two readings `elapsed` apart into rates. Pure.
pub fn conntrack_evidence(
    first: &ConntrackReading,
    second: &ConntrackReading,
    elapsed: Duration,
    kernel: &str,
) -> ConntrackEvidence {
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let mut evidence = ConntrackEvidence {
        count: second.count,
        max: second.max,
        buckets: second.buckets,
        fill_pct: if second.max > 0 {
            (second.count as f64 * 1000.0 / second.max as f64).round() / 10.0
        } else {
            0.0
        },
        interval_s: (seconds * 1000.0).round() / 1000.0,
        kernel: kernel.to_string(),
        ..Default::default()
    };
    for name in CONNTRACK_COUNTERS {
        let (Some(before), Some(after)) = (first.stat.per_cpu(name), second.stat.per_cpu(name))
        else {
            continue;
        };
        // A CPU that went offline between readings has no row to compare.
        let per_cpu: Vec<u64> = after
            .iter()
            .zip(before.iter().chain(std::iter::repeat(&0)))
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let grew = saturating_sum(&per_cpu);
        evidence
            .totals
            .insert(name.to_string(), saturating_sum(&after));
        evidence.increases.insert(name.to_string(), grew);
        evidence.rates_per_s.insert(
            name.to_string(),
            (grew as f64 / seconds * 100.0).round() / 100.0,
        );
        if grew > 0 {
            evidence.per_cpu_increases.insert(name.to_string(), per_cpu);
        }
    }
    evidence
}

/// Counts UDP flows to port 53 in /proc/net/nf_conntrack, giving up after
/// `budget` (a full table has hundreds of thousands of lines).
pub fn udp_dns_flows(proc_root: &Path, budget: Duration) -> Option<u64> {
    use std::io::BufRead;
    let file = std::fs::File::open(proc_root.join("net/nf_conntrack")).ok()?;
    let start = Instant::now();
    let mut count = 0;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.ok()?;
        if count_dns_flow(&line) {
            count += 1;
        }
        if start.elapsed() > budget {
            return None;
        }
    }
    Some(count)
}

/// `ipv4 2 udp 17 25 src=10.244.0.2 dst=10.96.0.10 sport=41234 dport=53 ...`:
/// the first dport is the original direction's.
pub(crate) fn count_dns_flow(line: &str) -> bool {
    let mut fields = line.split_whitespace();
    fields.nth(2) == Some("udp")
        && line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("dport="))
            == Some("53")
}

/// What answered (or did not) at NodeLocal DNSCache's address.
#[derive(Debug, Clone, Serialize)]
pub struct DnsProbe {
    pub server: SocketAddr,
    /// `NOERROR`, `NXDOMAIN`, ... or `TIMEOUT` / `UNREACHABLE`.
    pub rcode: String,
    pub latency_ms: f64,
}

pub fn probe_dns(server: SocketAddr, timeout: Duration) -> DnsProbe {
    use crate::dns::model::{Fate, Qtype};
    let fate = crate::dns::client::query(
        server,
        "kubernetes.default.svc.cluster.local.",
        Qtype::A,
        timeout,
    );
    let after = match &fate {
        Fate::Reply { after, .. } | Fate::Unreachable { after } => *after,
        Fate::Silent => timeout,
    };
    DnsProbe {
        server,
        rcode: crate::dns::client::fate_label(&fate),
        latency_ms: millis(after),
    }
}

/// The namespace's interfaces, routes and addresses.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Interfaces {
    pub links: Vec<Link>,
    pub addresses: Vec<Interface>,
    pub default_routes: Vec<DefaultRoute>,
}

/// A sysctl under the proc root, as a number.
pub fn sysctl(proc_root: &Path, name: &str) -> Option<u64> {
    read_proc_number(proc_root, &format!("sys/{}", name.replace('.', "/"))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found with net.conntrack's (see net::measure): two readings whose
    /// per-CPU counters sum past u64.
    #[test]
    fn counters_past_u64_saturate() {
        let text = include_str!("../../fuzz/regressions/proc_files/counters-past-u64");
        let stat = parse_conntrack_stat_table(text).unwrap();
        let first = ConntrackReading {
            count: 1,
            max: 2,
            buckets: None,
            stat: ConntrackStat {
                columns: stat.columns.clone(),
                cpus: vec![vec![0, 0], vec![0, 0]],
            },
        };
        let second = ConntrackReading {
            stat,
            ..first.clone()
        };
        let ev = conntrack_evidence(&first, &second, Duration::from_secs(1), "6.1.0");
        assert_eq!(ev.totals["insert_failed"], u64::MAX);
        assert_eq!(ev.increases["insert_failed"], u64::MAX);
    }

    fn reading(count: u64, rows: &[&[u64]]) -> ConntrackReading {
        ConntrackReading {
            count,
            max: 262_144,
            buckets: Some(262_144),
            stat: ConntrackStat {
                columns: [
                    "entries",
                    "clashres",
                    "invalid",
                    "insert_failed",
                    "drop",
                    "early_drop",
                    "search_restart",
                ]
                .map(String::from)
                .to_vec(),
                cpus: rows.iter().map(|r| r.to_vec()).collect(),
            },
        }
    }

    #[test]
    fn counters_become_per_cpu_increases_and_rates() {
        let first = reading(100, &[&[0, 0, 1, 2, 2, 0, 0], &[0, 0, 0, 0, 0, 0, 0]]);
        let second = reading(200, &[&[0, 0, 1, 2, 2, 0, 0], &[0, 3, 0, 10, 10, 0, 0]]);
        let ev = conntrack_evidence(&first, &second, Duration::from_secs(5), "6.1.0");
        assert_eq!(ev.increases["insert_failed"], 10);
        assert_eq!(ev.rates_per_s["insert_failed"], 2.0);
        assert_eq!(ev.totals["insert_failed"], 12);
        assert_eq!(ev.per_cpu_increases["insert_failed"], vec![0, 10]);
        assert_eq!(ev.increases["clashres"], 3);
        assert!(!ev.per_cpu_increases.contains_key("invalid"));
        assert_eq!(ev.fill_pct, 0.1);
        assert_eq!(ev.interval_s, 5.0);
    }

    #[test]
    fn a_counter_that_went_back_is_no_growth() {
        let first = reading(1, &[&[0, 0, 9, 9, 9, 9, 9]]);
        let second = reading(1, &[&[0, 0, 1, 1, 1, 1, 1], &[0, 0, 0, 0, 2, 0, 0]]);
        let ev = conntrack_evidence(&first, &second, Duration::from_millis(0), "");
        assert_eq!(ev.increases["insert_failed"], 0);
        assert_eq!(ev.increases["drop"], 2);
        assert!(ev.rates_per_s["drop"].is_finite());
    }

    #[test]
    fn dns_flows_are_udp_to_port_53_in_the_original_direction() {
        assert!(count_dns_flow("ipv4     2 udp      17 25 src=10.244.0.2 dst=10.96.0.10 sport=41234 dport=53 [UNREPLIED] src=10.244.0.10 dst=10.244.0.2 sport=53 dport=41234 mark=0 zone=0 use=2"));
        assert!(!count_dns_flow("ipv4     2 udp      17 25 src=10.244.0.10 dst=10.244.0.2 sport=53 dport=41234 src=10.244.0.2 dst=10.244.0.10 sport=41234 dport=53"));
        assert!(!count_dns_flow("ipv4     2 tcp      6 25 ESTABLISHED src=10.244.0.2 dst=10.96.0.10 sport=41234 dport=53"));
        assert!(!count_dns_flow(""));
    }

    #[test]
    fn missing_tools_are_unreadable_with_the_way_to_get_them() {
        let tools = Tools::new(Path::new("/nonexistent-host-root"));
        let (command, result) = tools.run(
            "podprobe-no-such-tool",
            &["-x"],
            Instant::now() + Duration::from_secs(1),
        );
        let report = failed_source("nftables", command, result.unwrap_err(), "/host");
        assert_eq!(report.status, SourceStatus::Unreadable);
        assert!(report.reason.unwrap().contains("full target"));
    }

    #[test]
    fn tools_are_cut_off_at_the_deadline() {
        let tools = Tools::new(Path::new("/nonexistent-host-root"));
        let start = Instant::now();
        let (_, result) = tools.run("sleep", &["5"], Instant::now() + Duration::from_millis(200));
        assert!(matches!(result, Err(RunError::Timeout)));
        assert!(start.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn the_host_root_runs_tools_in_a_chroot() {
        // Root can chroot into "/" itself: the same path as a real /host.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let tools = Tools {
            host_root: Some(PathBuf::from("/")),
            search_path: "/nonexistent".into(),
        };
        let (mut cmd, via) = tools.command("true").unwrap();
        assert!(via.starts_with("chroot / "), "{via}");
        assert!(cmd.status().unwrap().success());
    }
}
