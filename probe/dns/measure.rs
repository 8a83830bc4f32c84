//! DNS measurements: queries really sent with [`super::client`], timed,
//! returned as serializable evidence for the judges. Lookups go through
//! the model of the application's resolver, so the queries sent, the
//! outcome and the stall are the application's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client::{self, fate_label, Wire};
use super::model::{Exchange, Fate, Model, Outcome, Qtype, Resolver, Trace, Transport};
use crate::report::millis;
use crate::stats::{max, percentile};

/// One nameserver's answer to the health query.
#[derive(Debug, Clone, Serialize)]
pub struct ServerAnswer {
    pub server: String,
    /// dig's rcode name, or `TIMEOUT` (no reply) / `UNREACHABLE` (an ICMP
    /// error or a socket error came back).
    pub rcode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NameserversEvidence {
    pub name: String,
    pub qtype: String,
    pub timeout_ms: f64,
    pub servers: Vec<ServerAnswer>,
}

/// Asks every server for `name`'s A record, all servers at once.
pub fn nameservers(servers: &[SocketAddr], name: &str, timeout: Duration) -> NameserversEvidence {
    let fates = crate::checks::in_parallel(servers, |&server| {
        client::query(server, name, Qtype::A, timeout)
    });
    NameserversEvidence {
        name: name.to_string(),
        qtype: "A".to_string(),
        timeout_ms: millis(timeout),
        servers: servers
            .iter()
            .zip(&fates)
            .map(|(server, fate)| ServerAnswer {
                server: server.to_string(),
                rcode: fate_label(fate),
                latency_ms: match fate {
                    Fate::Reply { after, .. } => Some(millis(*after)),
                    _ => None,
                },
                error: match fate {
                    Fate::Reply { .. } => None,
                    Fate::Silent => Some(format!("no reply within {} ms", millis(timeout))),
                    Fate::Unreachable { .. } => Some(
                        "port unreachable: an ICMP error came back (nothing listens on UDP 53 there, or a REJECT rule)"
                            .to_string(),
                    ),
                },
            })
            .collect(),
    }
}

/// One query of a lookup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryEvidence {
    pub qtype: String,
    /// dig's rcode name; `TIMEOUT` when no reply came within the
    /// application's wait, `UNREACHABLE` for an ICMP error or TCP reset.
    pub rcode: String,
    /// Until the reply (or the error); for a timeout, how long the
    /// application waits for it.
    pub latency_ms: f64,
    pub server: String,
    /// Answer records in the reply (0 with NOERROR is NODATA).
    pub answers: usize,
    #[serde(default = "udp")]
    pub transport: Transport,
    /// When the application sends it, from the start of the lookup.
    #[serde(default)]
    pub sent_at_ms: f64,
    /// The application's socket (equal numbers: the same source port).
    #[serde(default)]
    pub socket: u32,
    #[serde(default)]
    pub truncated: bool,
}

fn udp() -> Transport {
    Transport::Udp
}

impl From<&Exchange> for QueryEvidence {
    fn from(e: &Exchange) -> Self {
        let q = &e.query;
        let (latency, answers, truncated) = match &e.fate {
            Fate::Reply { reply, after } => {
                (*after, usize::from(reply.answer_count), reply.truncated)
            }
            Fate::Unreachable { after } => (*after, 0, false),
            Fate::Silent => (q.wait.unwrap_or(Duration::ZERO), 0, false),
        };
        QueryEvidence {
            qtype: q.qtype.to_string(),
            rcode: fate_label(&e.fate),
            latency_ms: round3(millis(latency)),
            server: q.server.to_string(),
            answers,
            transport: q.transport,
            sent_at_ms: round3(millis(q.sent_at)),
            socket: q.socket,
            truncated,
        }
    }
}

impl QueryEvidence {
    /// rcode as a person reads it: NOERROR without answers is NODATA.
    pub fn label(&self) -> &str {
        if self.rcode == "NOERROR" && self.answers == 0 {
            "NODATA"
        } else {
            &self.rcode
        }
    }

    pub fn answered(&self) -> bool {
        self.rcode == "NOERROR" && self.answers > 0
    }

    /// No usable reply: silence, an error back, or a refusing or failing
    /// server.
    pub fn failed(&self) -> bool {
        matches!(
            self.rcode.as_str(),
            "TIMEOUT" | "UNREACHABLE" | "SERVFAIL" | "REFUSED" | "NOTIMP" | "FORMERR"
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateEvidence {
    pub fqdn: String,
    pub search_domain: Option<String>,
    pub queries: Vec<QueryEvidence>,
}

/// One name looked up the way the application's resolver looks it up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookupEvidence {
    pub name: String,
    pub dots: usize,
    /// Every candidate the resolver tried, with the queries it sent.
    pub candidates: Vec<CandidateEvidence>,
    pub resolved_as: Option<String>,
    pub queries_sent: usize,
    /// Queries before the resolving candidate (all of them when the name did
    /// not resolve).
    pub wasted_queries: usize,
    /// What the application waits for the lookup.
    pub total_ms: f64,
    /// ... of which before the resolving candidate's first query.
    pub wasted_ms: f64,
    /// The model that drove the lookup (`glibc`, `musl`, `go`, ...).
    #[serde(default)]
    pub resolver: String,
    /// `resolved`, or the error the application gets (`EAI_AGAIN`,
    /// `no such host`, ...), `hangs` or `crashes`.
    #[serde(default)]
    pub outcome: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    /// What the library did that a person would not guess.
    #[serde(default)]
    pub notes: Vec<String>,
}

impl LookupEvidence {
    pub fn from_trace(trace: &Trace) -> Self {
        let mut candidates: Vec<CandidateEvidence> = Vec::new();
        let reached = trace
            .exchanges
            .iter()
            .map(|e| e.candidate)
            .max()
            .map_or(0, |c| c + 1);
        for index in 0..reached.min(trace.candidates.len()) {
            let mut queries: Vec<&Exchange> = trace
                .exchanges
                .iter()
                .filter(|e| e.candidate == index)
                .collect();
            queries.sort_by_key(|e| e.query.sent_at);
            candidates.push(CandidateEvidence {
                fqdn: trace.candidates[index].clone(),
                search_domain: trace.search_domains[index].clone(),
                queries: queries.into_iter().map(QueryEvidence::from).collect(),
            });
        }
        let answered = trace.answered_by.filter(|&i| i < candidates.len());
        let wasted = candidates
            .get(..answered.unwrap_or(candidates.len()))
            .unwrap_or(&[]);
        let wasted_queries = wasted.iter().map(|c| c.queries.len()).sum();
        let total_ms = round3(millis(trace.elapsed));
        let wasted_ms = match answered.and_then(|i| candidates.get(i)) {
            Some(c) => c.queries.first().map_or(0.0, |q| q.sent_at_ms),
            None => total_ms,
        };
        let (outcome, addresses) = match &trace.outcome {
            Outcome::Resolved { addresses } => (
                "resolved".to_string(),
                addresses.iter().map(ToString::to_string).collect(),
            ),
            Outcome::Failed { error } => (error.clone(), Vec::new()),
            Outcome::Hangs => ("hangs".to_string(), Vec::new()),
            Outcome::Crashes { signal } => (format!("crashes ({signal})"), Vec::new()),
        };
        LookupEvidence {
            name: trace.name.clone(),
            dots: super::search::dots(&trace.name),
            resolved_as: answered.map(|i| candidates[i].fqdn.clone()),
            queries_sent: candidates.iter().map(|c| c.queries.len()).sum(),
            wasted_queries,
            total_ms,
            wasted_ms,
            candidates,
            resolver: trace.resolver.name().to_string(),
            outcome,
            addresses,
            notes: trace.notes.clone(),
        }
    }

    /// The candidate that resolved.
    pub fn resolving(&self) -> Option<&CandidateEvidence> {
        let fqdn = self.resolved_as.as_deref()?;
        self.candidates.iter().find(|c| c.fqdn == fqdn)
    }

    pub fn resolved(&self) -> bool {
        self.outcome == "resolved"
    }
}

/// Every query sent to one search domain, over all names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainStats {
    pub domain: String,
    pub queries: usize,
    pub nxdomain: usize,
    pub timeouts: usize,
    pub p50_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchExpansionEvidence {
    /// The resolver model the lookups went through.
    #[serde(default)]
    pub resolver: String,
    /// What the model follows (`glibc 2.36 (Debian 12)`, ...).
    #[serde(default)]
    pub resolver_model: String,
    /// Why this model: `--resolver`, the pod's processes, or `assumed`.
    #[serde(default)]
    pub resolver_source: String,
    pub ndots: u32,
    pub search: Vec<String>,
    pub lookups: Vec<LookupEvidence>,
    pub by_search_domain: Vec<DomainStats>,
}

impl SearchExpansionEvidence {
    pub fn new(model: &Model, source: &str, lookups: Vec<LookupEvidence>) -> Self {
        let mut order: Vec<String> = Vec::new();
        let mut samples: BTreeMap<String, Vec<&QueryEvidence>> = BTreeMap::new();
        for c in lookups.iter().flat_map(|l| &l.candidates) {
            if let Some(domain) = &c.search_domain {
                if !order.contains(domain) {
                    order.push(domain.clone());
                }
                samples
                    .entry(domain.clone())
                    .or_default()
                    .extend(&c.queries);
            }
        }
        let by_search_domain = order
            .into_iter()
            .map(|domain| {
                let qs = samples.remove(&domain).unwrap_or_default();
                let ms: Vec<f64> = qs.iter().map(|q| q.latency_ms).collect();
                DomainStats {
                    queries: qs.len(),
                    nxdomain: qs.iter().filter(|q| q.rcode == "NXDOMAIN").count(),
                    timeouts: qs.iter().filter(|q| q.rcode == "TIMEOUT").count(),
                    p50_ms: percentile(&ms, 50.0),
                    max_ms: max(&ms),
                    domain,
                }
            })
            .collect();
        let settings = model.settings();
        SearchExpansionEvidence {
            resolver: model.resolver.name().to_string(),
            resolver_model: model.resolver.describe().to_string(),
            resolver_source: source.to_string(),
            ndots: settings.ndots,
            search: settings.search,
            lookups,
            by_search_domain,
        }
    }
}

/// Rounded to microseconds; `+ 0.0` turns the -0.0 of an empty sum into 0.
pub(crate) fn round3(ms: f64) -> f64 {
    (ms * 1e3).round() / 1e3 + 0.0
}

/// Every name looked up through `model` on the real network, one after
/// another; no wait lasts longer than `timeout`.
pub fn lookups(names: &[String], model: &Model, timeout: Duration) -> Vec<LookupEvidence> {
    names
        .iter()
        .map(|name| LookupEvidence::from_trace(&model.resolve(name, &mut Wire::new(timeout))))
        .collect()
}

/// A process of the pod and the C library its resolver code comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessLibc {
    pub pid: u32,
    pub comm: String,
    /// `glibc`, `musl`, `go` (Go's own resolver), `static` (statically
    /// linked, C library not recognisable) or `unknown` (binary unreadable).
    pub libc: String,
    /// The version of a dynamically linked musl, when its file says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl ProcessLibc {
    /// The resolver model for this process, if its library is known:
    /// musl 1.2.3 and older without TCP fallback, any other musl (Alpine
    /// 3.18+ ships 1.2.4 and later) with it.
    pub fn resolver(&self) -> Option<Resolver> {
        match self.libc.as_str() {
            "glibc" => Some(Resolver::Glibc),
            "go" => Some(Resolver::Go),
            "musl" => Some(match self.version.as_deref().and_then(version_triple) {
                Some(v) if v < (1, 2, 4) => Resolver::Musl123,
                _ => Resolver::Musl,
            }),
            _ => None,
        }
    }
}

/// `1.2.3` (or `1.2.4_git20230717`) as numbers.
fn version_triple(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.split(['.', '_', '-']).map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

/// The version string musl's dynamic loader prints (`Version %s`), read
/// from the mapped musl library: a NUL-delimited `1.2.N...` after it.
pub fn musl_version(maps: &str) -> Option<String> {
    let path = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            p.contains("ld-musl") || p.contains("libc.musl") || p.contains("-linux-musl/libc")
        })?;
    let bytes = std::fs::read(path).ok()?;
    let start = bytes.windows(10).position(|w| w == b"Version %s")?;
    bytes[start..]
        .split(|&b| b == 0)
        .filter_map(|s| std::str::from_utf8(s).ok())
        .find(|s| version_triple(s).is_some() && s.len() < 32)
        .map(str::to_string)
}

/// The initial PID namespace's inode (PROC_PID_INIT_INO): there, /proc shows
/// the whole host, not a pod.
const INIT_PID_NS: &str = "pid:[4026531836]";

/// The pod's other processes and their C library, when podprobe shares the
/// pod's process namespace (`kubectl debug --target`, shareProcessNamespace).
/// Nothing on a host's initial namespace, where the processes are not a pod's.
pub fn pod_processes(proc_root: &Path) -> Vec<ProcessLibc> {
    let own_ns = std::fs::read_link(proc_root.join("self/ns/pid")).ok();
    if own_ns
        .as_deref()
        .is_none_or(|ns| ns == Path::new(INIT_PID_NS))
    {
        return Vec::new();
    }
    let ancestors = ancestors(proc_root);
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut found: Vec<ProcessLibc> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !ancestors.contains(pid))
        .filter_map(|pid| {
            let dir = proc_root.join(pid.to_string());
            let maps = std::fs::read_to_string(dir.join("maps")).ok()?;
            // Kernel threads map nothing.
            if maps.is_empty() {
                return None;
            }
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let libc = libc_of(&maps, &dir.join("exe"));
            Some(ProcessLibc {
                pid,
                comm: comm.trim().to_string(),
                libc: libc.to_string(),
                version: (libc == "musl").then(|| musl_version(&maps)).flatten(),
            })
        })
        .collect();
    found.sort_by_key(|p| p.pid);
    found
}

/// podprobe itself and the processes that started it.
fn ancestors(proc_root: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let mut pid = std::process::id();
    while pid > 0 && !out.contains(&pid) {
        out.push(pid);
        pid = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat"))
            .ok()
            .and_then(|stat| {
                // "pid (comm) state ppid ...": comm may hold spaces and parens.
                let after = stat.rsplit_once(')')?.1;
                after.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0);
    }
    out
}

/// Tells the C library from a process's mappings: musl's loader and libc are
/// one `ld-musl-*`/`libc.musl-*` object (or Debian's `.../x86_64-linux-musl/`),
/// glibc's are `ld-linux*` and `libc.so.6`. A Go program resolves on its own
/// (cgo builds too, unless resolv.conf has options Go does not know). A
/// static binary maps neither; its file then says what was linked in:
/// glibc's or musl's marks, Go's build info, or nothing recognisable
/// (`static`).
pub fn libc_of(maps: &str, exe: &Path) -> &'static str {
    let paths = maps.lines().filter_map(|l| l.split_whitespace().nth(5));
    let mut glibc = false;
    for path in paths {
        let file = path.rsplit('/').next().unwrap_or(path);
        if file.starts_with("ld-musl")
            || file.starts_with("libc.musl")
            || path.contains("-linux-musl/")
        {
            return "musl";
        }
        if file.starts_with("libc.so.6")
            || file.starts_with("ld-linux")
            || file.starts_with("libc-2.")
        {
            glibc = true;
        }
    }
    let file = std::fs::read(exe);
    if glibc {
        return match file {
            Ok(bytes) if contains(&bytes, b"Go buildinf:") => "go",
            _ => "glibc",
        };
    }
    match file {
        Ok(bytes) if contains(&bytes, b"Go buildinf:") => "go",
        Ok(bytes) if contains(&bytes, b"GLIBC_") || contains(&bytes, b"glibc") => "glibc",
        Ok(bytes) if contains(&bytes, b"musl") => "musl",
        Ok(_) => "static",
        Err(_) => "unknown",
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Latency of one nameserver for one name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyResult {
    pub server: String,
    pub name: String,
    pub count: u32,
    pub lost: u32,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyEvidence {
    pub timeout_ms: f64,
    pub results: Vec<LatencyResult>,
}

/// `count` A queries one after another for each name at each server, the
/// servers measured at the same time.
pub fn latency(
    servers: &[SocketAddr],
    names: &[String],
    count: u32,
    timeout: Duration,
) -> LatencyEvidence {
    let per_server = crate::checks::in_parallel(servers, |&server| {
        names
            .iter()
            .map(|name| {
                let ms: Vec<f64> = (0..count)
                    .filter_map(|_| match client::query(server, name, Qtype::A, timeout) {
                        Fate::Reply { after, .. } => Some(millis(after)),
                        _ => None,
                    })
                    .collect();
                LatencyResult {
                    server: server.to_string(),
                    name: name.clone(),
                    count,
                    lost: count.saturating_sub(u32::try_from(ms.len()).unwrap_or(u32::MAX)),
                    p50_ms: percentile(&ms, 50.0),
                    p90_ms: percentile(&ms, 90.0),
                    p99_ms: percentile(&ms, 99.0),
                    max_ms: max(&ms),
                }
            })
            .collect::<Vec<_>>()
    });
    let results = per_server.into_iter().flatten().collect();
    LatencyEvidence {
        timeout_ms: millis(timeout),
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libc_from_mappings() {
        let glibc = "7f0 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n7f1 r-xp 0 08:01 2 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2\n";
        let alpine = "55 r-xp 0 08:01 3 /usr/bin/app\n7f r-xp 0 08:01 4 /lib/ld-musl-x86_64.so.1\n";
        let debian_musl = "7f r-xp 0 08:01 4 /usr/lib/x86_64-linux-musl/libc.so\n";
        let none = Path::new("/nonexistent");
        assert_eq!(libc_of(glibc, none), "glibc");
        assert_eq!(libc_of(alpine, none), "musl");
        assert_eq!(libc_of(debian_musl, none), "musl");
        assert_eq!(libc_of("55 r-xp 0 08:01 3 /app\n", none), "unknown");
    }

    #[test]
    fn musl_versions_pick_the_model() {
        let p = |libc: &str, version: Option<&str>| ProcessLibc {
            pid: 1,
            comm: "app".into(),
            libc: libc.into(),
            version: version.map(str::to_string),
        };
        assert_eq!(p("musl", Some("1.2.3")).resolver(), Some(Resolver::Musl123));
        assert_eq!(
            p("musl", Some("1.2.4_git20230717")).resolver(),
            Some(Resolver::Musl)
        );
        assert_eq!(p("musl", None).resolver(), Some(Resolver::Musl));
        assert_eq!(p("go", None).resolver(), Some(Resolver::Go));
        assert_eq!(p("static", None).resolver(), None);
        // Debian's musl: the loader's version string in the mapped library.
        let debian = "7f r-xp 0 08:01 4 /lib/x86_64-linux-musl/libc.so\n";
        if Path::new("/lib/x86_64-linux-musl/libc.so").exists() {
            assert_eq!(musl_version(debian).as_deref(), Some("1.2.3"));
        }
    }

    #[test]
    fn query_labels() {
        let q = |rcode: &str, answers| QueryEvidence {
            qtype: "A".into(),
            rcode: rcode.into(),
            latency_ms: 1.0,
            server: "s".into(),
            answers,
            transport: Transport::Udp,
            sent_at_ms: 0.0,
            socket: 1,
            truncated: false,
        };
        assert!(q("SERVFAIL", 0).failed());
        assert!(q("UNREACHABLE", 0).failed());
        assert!(!q("NXDOMAIN", 0).failed());
        assert!(q("NOERROR", 1).answered());
        assert_eq!(q("NOERROR", 0).label(), "NODATA");
    }
}
