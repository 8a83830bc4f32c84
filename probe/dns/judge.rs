//! Pure judges: DNS evidence in, `Check` out.

use serde::Serialize;

use super::measure::{
    LatencyEvidence, LookupEvidence, NameserversEvidence, RaceEvidence, SearchExpansionEvidence,
    REOPEN, SAME_SOCKET,
};
use super::resolvconf::{ResolvConf, MAX_NAMESERVERS};
use crate::report::{Check, Status};

const REF_NDOTS: &str =
    "https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/#pod-dns-config";
const REF_RESOLV_CONF: &str = "https://man7.org/linux/man-pages/man5/resolv.conf.5.html";

#[derive(Serialize)]
struct ResolvConfEvidence<'a> {
    path: &'a str,
    nameservers: Vec<String>,
    search: &'a [String],
    ndots: u32,
    timeout_s: u32,
    attempts: u32,
    options: &'a [String],
    search_source: &'a str,
    ignored_nameservers: &'a [String],
    unknown_options: &'a [String],
}

/// `dns.resolv-conf`: what glibc will do with this configuration.
pub fn resolv_conf(path: &str, conf: &ResolvConf) -> Check {
    let evidence = ResolvConfEvidence {
        path,
        nameservers: conf.nameservers.iter().map(|ip| ip.to_string()).collect(),
        search: &conf.search,
        ndots: conf.ndots,
        timeout_s: conf.timeout_s,
        attempts: conf.attempts,
        options: &conf.options,
        search_source: &conf.search_source,
        ignored_nameservers: &conf.ignored_nameservers,
        unknown_options: &conf.unknown_options,
    };
    let mut problems = Vec::new();
    let mut remedy = Vec::new();
    if conf.nameservers.is_empty() {
        problems.push("no usable nameserver (glibc falls back to 127.0.0.1)".to_string());
        remedy.push(format!(
            "add a `nameserver ADDR` line to {path} (in Kubernetes: check the pod's dnsPolicy and dnsConfig.nameservers)"
        ));
    }
    if conf.nameservers.len() == MAX_NAMESERVERS && !conf.ignored_nameservers.is_empty() {
        problems.push(format!(
            "{} nameserver line(s) beyond the third are ignored by glibc: {}",
            conf.ignored_nameservers.len(),
            conf.ignored_nameservers.join(", ")
        ));
        remedy.push(
            "keep at most 3 nameservers (the kubelet also truncates to 3 and logs 'Nameserver limits were exceeded')"
                .to_string(),
        );
    } else if !conf.ignored_nameservers.is_empty() {
        problems.push(format!(
            "unparsable nameserver line(s) ignored: {}",
            conf.ignored_nameservers.join(", ")
        ));
    }
    if conf.ndots >= 2 && !conf.search.is_empty() {
        let n = conf.search.len() + 1;
        problems.push(format!(
            "ndots:{} with {} search domains: a name with fewer than {} dots costs up to {} lookups x (A+AAAA) = {} queries",
            conf.ndots,
            conf.search.len(),
            conf.ndots,
            n,
            2 * n
        ));
        remedy.push(format!(
            "end external names with a dot (api.example.com.), or lower ndots in the pod spec (`podprobe dns NAME...` names the value for your names):\n{}",
            dns_config_snippet(2)
        ));
    }
    let status = if problems.is_empty() {
        Status::Pass
    } else {
        Status::Warn
    };
    let summary = if problems.is_empty() {
        format!(
            "{} nameserver(s), {} search domain(s), ndots:{}, timeout {}s x {} attempts",
            conf.nameservers.len(),
            conf.search.len(),
            conf.ndots,
            conf.timeout_s,
            conf.attempts
        )
    } else {
        problems.join("; ")
    };
    Check::new(
        "dns.resolv-conf",
        "resolv.conf as glibc reads it",
        status,
        summary,
        &evidence,
    )
    .with_remedy(remedy)
    .with_refs(&[REF_RESOLV_CONF, REF_NDOTS])
}

/// The pod spec fragment that sets ndots.
pub fn dns_config_snippet(ndots: u32) -> String {
    format!("spec:\n  dnsConfig:\n    options:\n      - name: ndots\n        value: \"{ndots}\"")
}

/// `dns.nameservers`: every configured nameserver answers in time.
pub fn nameservers(ev: &NameserversEvidence) -> Check {
    let silent: Vec<&str> = ev
        .servers
        .iter()
        .filter(|s| s.latency_ms.is_none())
        .map(|s| s.server.as_str())
        .collect();
    let unhealthy: Vec<String> = ev
        .servers
        .iter()
        .filter(|s| {
            matches!(
                s.rcode.as_str(),
                "SERVFAIL" | "REFUSED" | "NOTIMP" | "FORMERR"
            )
        })
        .map(|s| format!("{} ({})", s.server, s.rcode))
        .collect();
    let (status, summary) = if !silent.is_empty() {
        (
            Status::Fail,
            format!(
                "no answer for {} from {} within {:.0} ms",
                ev.name,
                silent.join(", "),
                ev.timeout_ms
            ),
        )
    } else if !unhealthy.is_empty() {
        (
            Status::Warn,
            format!(
                "{} answered but cannot resolve: {}",
                ev.name,
                unhealthy.join(", ")
            ),
        )
    } else {
        let list: Vec<String> = ev
            .servers
            .iter()
            .map(|s| {
                format!(
                    "{} {} in {:.1} ms",
                    s.server,
                    s.rcode,
                    s.latency_ms.unwrap_or(0.0)
                )
            })
            .collect();
        (Status::Pass, format!("{}: {}", ev.name, list.join(", ")))
    };
    let details = ev
        .servers
        .iter()
        .map(|s| match (&s.latency_ms, &s.error) {
            (Some(ms), _) => format!("{:<24} {:<9} {ms:>8.1} ms", s.server, s.rcode),
            (None, Some(e)) => format!("{:<24} {:<9} {e}", s.server, s.rcode),
            (None, None) => format!("{:<24} {}", s.server, s.rcode),
        })
        .collect::<Vec<_>>();
    let remedy = if status == Status::Pass {
        Vec::new()
    } else {
        vec![
            "check that the DNS Service's pods are running and reachable (kubectl -n kube-system get pods -l k8s-app=kube-dns -o wide) and that no NetworkPolicy blocks UDP/TCP 53 egress".to_string(),
        ]
    };
    Check::new("dns.nameservers", "Nameservers answer", status, summary, ev)
        .with_details(details)
        .with_remedy(remedy)
}

/// A lookup is slow when its wasted time exceeds this.
pub const WASTED_MS_FAIL: f64 = 100.0;

const REF_SEARCH: &str = "https://github.com/kubernetes/dns/issues/341";
const REF_RACE: &str = "https://github.com/kubernetes/kubernetes/issues/56903";
const REF_NODELOCAL: &str = "https://kubernetes.io/docs/tasks/administer-cluster/nodelocaldns/";

/// `dns.search-expansion`: what the search list costs each name.
pub fn search_expansion(ev: &SearchExpansionEvidence) -> Check {
    // A walk that sent nothing measured nothing: never a pass.
    if let Some(silent) = ev.lookups.iter().find(|l| l.queries_sent == 0) {
        return Check::new(
            "dns.search-expansion",
            "DNS search-list amplification",
            Status::Error,
            format!("no query could be sent for {}", silent.name),
            ev,
        );
    }
    let timed_out: Vec<&str> = ev
        .by_search_domain
        .iter()
        .filter(|d| d.timeouts > 0)
        .map(|d| d.domain.as_str())
        .collect();
    let slow: Vec<&LookupEvidence> = ev
        .lookups
        .iter()
        .filter(|l| l.wasted_ms > WASTED_MS_FAIL)
        .collect();
    let wasteful: Vec<&LookupEvidence> =
        ev.lookups.iter().filter(|l| l.wasted_queries > 0).collect();
    let status = if !timed_out.is_empty() || !slow.is_empty() {
        Status::Fail
    } else if !wasteful.is_empty() {
        Status::Warn
    } else {
        Status::Pass
    };
    let mut summary: Vec<String> = if wasteful.is_empty() {
        ev.lookups.iter().map(lookup_summary).collect()
    } else {
        wasteful.iter().map(|l| lookup_summary(l)).collect()
    };
    if !slow.is_empty() {
        let culprit = ev
            .by_search_domain
            .iter()
            .filter_map(|d| Some((d, d.max_ms?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(d, ms)| format!("; slowest search domain {} (max {ms:.1} ms)", d.domain))
            .unwrap_or_default();
        summary.insert(
            0,
            format!(
                "{} lookup(s) lost more than {WASTED_MS_FAIL:.0} ms to the search list{culprit}",
                slow.len()
            ),
        );
    }
    if !timed_out.is_empty() {
        summary.insert(
            0,
            format!("search domain(s) timing out: {}", timed_out.join(", ")),
        );
    }
    let mut details = Vec::new();
    for l in &ev.lookups {
        details.extend(lookup_table(l, ev.ndots));
        details.push(String::new());
    }
    details.extend(domain_table(ev));
    Check::new(
        "dns.search-expansion",
        "DNS search-list amplification",
        status,
        summary.join("; "),
        ev,
    )
    .with_details(details)
    .with_remedy(search_remedy(ev))
    .with_refs(&[REF_SEARCH, REF_NDOTS])
}

fn lookup_summary(l: &LookupEvidence) -> String {
    let nx = l
        .candidates
        .iter()
        .flat_map(|c| &c.queries)
        .take(l.wasted_queries)
        .filter(|q| q.rcode == "NXDOMAIN")
        .count();
    match &l.resolved_as {
        Some(fqdn) if l.wasted_queries == 0 => format!(
            "{} resolved as {fqdn} with {} queries in {:.1} ms",
            l.name, l.queries_sent, l.total_ms
        ),
        Some(fqdn) => format!(
            "{} took {} queries ({} wasted, {nx} NXDOMAIN) and {:.1} ms, {:.1} ms of it on search domains, resolved as {fqdn}",
            l.name, l.queries_sent, l.wasted_queries, l.total_ms, l.wasted_ms
        ),
        None => format!(
            "{} did not resolve: {} queries ({nx} NXDOMAIN) in {:.1} ms{}",
            l.name,
            l.queries_sent,
            l.total_ms,
            l.candidates
                .last()
                .and_then(|c| c.queries.iter().find(|q| !q.keeps_walking()))
                .map(|q| format!(", walk stopped by {} from {}", q.rcode, q.server))
                .unwrap_or_default()
        ),
    }
}

/// One row per candidate with both query types, then the totals.
fn lookup_table(l: &LookupEvidence, ndots: u32) -> Vec<String> {
    let order = if l.name.ends_with('.') {
        "trailing dot: as is only".to_string()
    } else if l.dots >= ndots as usize {
        format!("{} dots >= ndots:{ndots}: as is first", l.dots)
    } else {
        format!("{} dots < ndots:{ndots}: search list first", l.dots)
    };
    let width = l
        .candidates
        .iter()
        .map(|c| c.fqdn.len())
        .max()
        .unwrap_or(0)
        .max(9);
    let mut out = vec![
        format!("{} ({order})", l.name),
        format!("  {:<width$}  {:<22}  {:<22}", "candidate", "A", "AAAA"),
    ];
    for c in &l.candidates {
        let cell = |qtype: &str| {
            let qs: Vec<String> = c
                .queries
                .iter()
                .filter(|q| q.qtype == qtype)
                .map(|q| format!("{:<8} {:>7.1} ms", q.label(), q.latency_ms))
                .collect();
            if qs.is_empty() {
                "-".to_string()
            } else {
                qs.join(", ")
            }
        };
        let mark = if l.resolved_as.as_deref() == Some(c.fqdn.as_str()) {
            "  <- answer"
        } else {
            ""
        };
        out.push(format!(
            "  {:<width$}  {:<22}  {:<22}{mark}",
            c.fqdn,
            cell("A"),
            cell("AAAA")
        ));
    }
    out.push(format!(
        "  {} queries, {} wasted, {:.1} of {:.1} ms on search domains",
        l.queries_sent, l.wasted_queries, l.wasted_ms, l.total_ms
    ));
    // Padding of the last column is not worth keeping in a pasted ticket.
    out.into_iter()
        .map(|row| row.trim_end().to_string())
        .collect()
}

/// The per-search-domain table a person pastes into a ticket.
fn domain_table(ev: &SearchExpansionEvidence) -> Vec<String> {
    if ev.by_search_domain.is_empty() {
        return Vec::new();
    }
    let width = ev
        .by_search_domain
        .iter()
        .map(|d| d.domain.len())
        .max()
        .unwrap_or(0)
        .max(13);
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let mut out = vec![format!(
        "{:<width$}  {:>7}  {:>8}  {:>8}  {:>8}  {:>8}",
        "search domain", "queries", "NXDOMAIN", "timeouts", "p50 ms", "max ms"
    )];
    for d in &ev.by_search_domain {
        out.push(format!(
            "{:<width$}  {:>7}  {:>8}  {:>8}  {:>8}  {:>8}",
            d.domain,
            d.queries,
            d.nxdomain,
            d.timeouts,
            ms(d.p50_ms),
            ms(d.max_ms)
        ));
    }
    out
}

/// The cheapest fix per wasteful name, then the ndots value that removes
/// the waste for names found as is.
fn search_remedy(ev: &SearchExpansionEvidence) -> Vec<String> {
    let mut remedy = Vec::new();
    let mut as_is_dots: Vec<usize> = Vec::new();
    for l in &ev.lookups {
        if l.wasted_queries == 0 {
            continue;
        }
        let per_lookup = l.queries_sent - l.wasted_queries;
        match l.resolving().map(|c| c.search_domain.as_deref()) {
            Some(None) => {
                remedy.push(format!(
                    "{}: write it with a trailing dot, `{}` ({per_lookup} queries instead of {})",
                    l.name,
                    l.resolved_as.as_deref().unwrap_or_default(),
                    l.queries_sent
                ));
                if l.dots > 0 {
                    as_is_dots.push(l.dots);
                }
            }
            Some(Some(domain)) => remedy.push(format!(
                "{}: it lives under {domain}; use the FQDN `{}` ({per_lookup} queries instead of {})",
                l.name,
                l.resolved_as.as_deref().unwrap_or_default(),
                l.queries_sent
            )),
            None => remedy.push(format!(
                "{}: does not resolve under any search domain; check the name and namespace (kubectl get svc -A) or the DNS server",
                l.name
            )),
        }
    }
    if let Some(&ndots) = as_is_dots.iter().min() {
        let ndots = u32::try_from(ndots).unwrap_or(u32::MAX).min(ev.ndots);
        if ndots < ev.ndots {
            remedy.push(format!(
                "or lower ndots to {ndots} for the pod (names with {ndots}+ dots are then tried as is first; shorter names like `svc.ns` still walk the search list):\n{}",
                dns_config_snippet(ndots)
            ));
        }
    }
    for d in ev.by_search_domain.iter().filter(|d| d.timeouts > 0) {
        remedy.push(format!(
            "search domain {} does not answer in time: fix or remove it from the node's resolv.conf (the kubelet copies the host's search domains into pods), or set dnsPolicy: None with an explicit dnsConfig.searches",
            d.domain
        ));
    }
    remedy
}

/// `dns.timeout-race`: glibc's one-socket A+AAAA against reopen.
pub fn timeout_race(ev: &RaceEvidence) -> Check {
    let lost = |name: &str| {
        ev.patterns
            .iter()
            .find(|p| p.pattern == name)
            .map_or(0, |p| p.lost)
    };
    let (same, reopen) = (lost(SAME_SOCKET), lost(REOPEN));
    let attempts = ev.patterns.first().map_or(0, |p| p.attempts);
    let (status, summary) = match (same > 0, reopen > 0) {
        (true, false) => (
            Status::Fail,
            format!(
                "A+AAAA from one socket lost replies in {same} of {attempts} lookups, A then AAAA from a new socket lost none: the conntrack insert race (each loss stalls a glibc lookup for the resolv.conf timeout, 5 s by default)"
            ),
        ),
        (_, true) => (
            Status::Warn,
            format!(
                "replies lost with both patterns ({same} and {reopen} of {attempts} lookups): plain packet loss to {}, not the race",
                ev.server
            ),
        ),
        (false, false) => (
            Status::Pass,
            format!("no reply lost in {attempts} lookups per pattern to {}", ev.server),
        ),
    };
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let mut details = vec![format!(
        "{:<22}  {:>8}  {:>5}  {:<16}  {:>8}  {:>8}",
        "pattern", "attempts", "lost", "lost qtypes", "p50 ms", "max ms"
    )];
    for p in &ev.patterns {
        let qtypes: Vec<String> = p
            .lost_qtypes
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| format!("{t} x{n}"))
            .collect();
        details.push(format!(
            "{:<22}  {:>8}  {:>5}  {:<16}  {:>8}  {:>8}",
            p.pattern,
            p.attempts,
            p.lost,
            if qtypes.is_empty() {
                "-".to_string()
            } else {
                qtypes.join(", ")
            },
            ms(p.p50_ms),
            ms(p.max_ms)
        ));
    }
    if let Some(ct) = &ev.conntrack {
        details.push(format!(
            "conntrack during the test: insert_failed +{}, drop +{}",
            ct.insert_failed, ct.drop
        ));
    }
    if !ev.processes.is_empty() {
        let list: Vec<String> = ev
            .processes
            .iter()
            .map(|p| format!("{} (pid {}): {}", p.comm, p.pid, p.libc))
            .collect();
        details.push(format!("pod processes: {}", list.join(", ")));
    }
    let remedy = if status == Status::Fail {
        race_remedy(ev)
    } else {
        Vec::new()
    };
    Check::new(
        "dns.timeout-race",
        "DNS 5 s timeouts (A/AAAA conntrack race)",
        status,
        summary,
        ev,
    )
    .with_details(details)
    .with_remedy(remedy)
    .with_refs(&[REF_RACE, REF_NODELOCAL])
}

/// Which fix applies depends on the application's C library.
fn race_remedy(ev: &RaceEvidence) -> Vec<String> {
    let has = |libc: &str| ev.processes.iter().any(|p| p.libc == libc);
    let names = |libc: &str| {
        ev.processes
            .iter()
            .filter(|p| p.libc == libc)
            .map(|p| p.comm.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let glibc_fix = "add `options single-request-reopen` (A and AAAA from different sockets, so they never share a conntrack entry):\nspec:\n  dnsConfig:\n    options:\n      - name: single-request-reopen";
    let musl_fix = "single-request-reopen does not help, musl ignores it: run NodeLocal DNSCache (pods query 169.254.20.10 on the node, no DNAT, no race), have the app query over TCP (musl has no use-vc option: only the app's own resolver or a TCP-forwarding sidecar does it), or move nodes to a kernel with the conntrack race fixes (5.0+) and masquerade with --random-fully";
    let known = has("glibc") || has("musl");
    let mut remedy = Vec::new();
    if has("glibc") || !known {
        let who = if has("glibc") {
            format!("glibc apps ({})", names("glibc"))
        } else {
            "for glibc apps (Debian, Ubuntu, RHEL based images)".to_string()
        };
        remedy.push(format!("{who}: {glibc_fix}"));
    }
    if has("musl") || !known {
        let who = if has("musl") {
            format!("musl apps ({})", names("musl"))
        } else {
            "for musl apps (Alpine based images)".to_string()
        };
        remedy.push(format!("{who}: {musl_fix}"));
    }
    if has("go") {
        remedy.push(format!(
            "Go programs ({}) resolve on their own (with cgo disabled), one socket per query; they do not hit this race, glibc and musl clients of the same nameserver do",
            names("go")
        ));
    }
    remedy
}

/// Latency below which a nameserver is healthy, and the one that fails.
pub const LATENCY_WARN_MS: f64 = 100.0;
pub const LATENCY_FAIL_MS: f64 = 1000.0;

/// `dns.latency`: each nameserver's round trip per name.
pub fn latency(ev: &LatencyEvidence) -> Check {
    let failing: Vec<String> = ev
        .results
        .iter()
        .filter(|r| r.p99_ms.is_none_or(|p| p >= LATENCY_FAIL_MS))
        .map(|r| format!("{} for {}", r.server, r.name))
        .collect();
    let warning: Vec<String> = ev
        .results
        .iter()
        .filter(|r| r.lost > 0 || r.p99_ms.is_some_and(|p| p > LATENCY_WARN_MS))
        .map(|r| {
            format!(
                "{} for {} (p99 {}, {} of {} lost)",
                r.server,
                r.name,
                fmt_ms(r.p99_ms),
                r.lost,
                r.count
            )
        })
        .collect();
    let (status, summary) = if !failing.is_empty() {
        (
            Status::Fail,
            format!("p99 of 1 s or more, or no answer: {}", failing.join(", ")),
        )
    } else if !warning.is_empty() {
        (
            Status::Warn,
            format!("slow or lossy: {}", warning.join(", ")),
        )
    } else {
        let worst = ev
            .results
            .iter()
            .filter_map(|r| r.p99_ms)
            .fold(0.0, f64::max);
        (
            Status::Pass,
            format!(
                "{} server/name pair(s), no loss, worst p99 {worst:.1} ms",
                ev.results.len()
            ),
        )
    };
    let width = ev
        .results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut details = vec![format!(
        "{:<21}  {:<width$}  {:>5}  {:>4}  {:>7}  {:>7}  {:>7}  {:>7}",
        "server", "name", "count", "lost", "p50 ms", "p90 ms", "p99 ms", "max ms"
    )];
    for r in &ev.results {
        details.push(format!(
            "{:<21}  {:<width$}  {:>5}  {:>4}  {:>7}  {:>7}  {:>7}  {:>7}",
            r.server,
            r.name,
            r.count,
            r.lost,
            fmt_ms(r.p50_ms),
            fmt_ms(r.p90_ms),
            fmt_ms(r.p99_ms),
            fmt_ms(r.max_ms)
        ));
    }
    let remedy = if status == Status::Pass {
        Vec::new()
    } else {
        vec!["look at the DNS pods' load and upstreams (CoreDNS metrics coredns_dns_request_duration_seconds, forward plugin health); NodeLocal DNSCache takes the network hop out of most lookups".to_string()]
    };
    Check::new(
        "dns.latency",
        "DNS latency per nameserver",
        status,
        summary,
        ev,
    )
    .with_details(details)
    .with_remedy(remedy)
    .with_refs(&[REF_NODELOCAL])
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::measure::ServerAnswer;
    use crate::dns::resolvconf::Env;

    fn judge(text: &str) -> Check {
        resolv_conf(
            "/etc/resolv.conf",
            &ResolvConf::parse(text, &Env::default()),
        )
    }

    #[test]
    fn resolv_conf_judgements() {
        let plain = judge("nameserver 10.96.0.10\nsearch default.svc.cluster.local\n");
        assert_eq!(plain.status, Status::Pass, "{}", plain.summary);
        assert_eq!(plain.evidence["ndots"], 1);
        assert_eq!(plain.evidence["timeout_s"], 5);
        assert_eq!(plain.evidence["attempts"], 2);
        assert_eq!(plain.evidence["nameservers"][0], "10.96.0.10");

        let k8s = judge("search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n");
        assert_eq!(k8s.status, Status::Warn);
        assert!(
            k8s.summary.contains("ndots:5 with 3 search domains"),
            "{}",
            k8s.summary
        );
        assert!(k8s.remedy.iter().any(|r| r.contains("dnsConfig")));

        // ndots:2 with search domains is still amplification; without them it is not.
        assert_eq!(
            judge("nameserver 1.1.1.1\nsearch a.example\noptions ndots:2\n").status,
            Status::Warn
        );
        assert_eq!(
            judge("nameserver 1.1.1.1\noptions ndots:2\n").status,
            Status::Pass
        );

        let four = judge(
            "nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n",
        );
        assert_eq!(four.status, Status::Warn);
        assert!(four.summary.contains("10.0.0.4"), "{}", four.summary);

        let none = judge("search example.com\n");
        assert_eq!(none.status, Status::Warn);
        assert!(none.summary.contains("no usable nameserver"));
    }

    fn answer(server: &str, rcode: &str, latency_ms: Option<f64>) -> ServerAnswer {
        ServerAnswer {
            server: server.into(),
            rcode: rcode.into(),
            latency_ms,
            error: latency_ms
                .is_none()
                .then(|| "no reply within 2000 ms".into()),
        }
    }

    fn servers(list: Vec<ServerAnswer>) -> NameserversEvidence {
        NameserversEvidence {
            name: "kubernetes.default.svc.cluster.local.".into(),
            qtype: "A".into(),
            timeout_ms: 2000.0,
            servers: list,
        }
    }

    #[test]
    fn nameserver_judgements() {
        let ok = nameservers(&servers(vec![
            answer("10.96.0.10:53", "NOERROR", Some(1.2)),
            answer("10.96.0.11:53", "NXDOMAIN", Some(3.4)),
        ]));
        assert_eq!(ok.status, Status::Pass, "{}", ok.summary);
        let refused = nameservers(&servers(vec![answer(
            "10.96.0.10:53",
            "REFUSED",
            Some(0.5),
        )]));
        assert_eq!(refused.status, Status::Warn);
        let silent = nameservers(&servers(vec![
            answer("10.96.0.10:53", "NOERROR", Some(1.0)),
            answer("10.96.0.11:53", "TIMEOUT", None),
        ]));
        assert_eq!(silent.status, Status::Fail);
        assert!(
            silent.summary.contains("10.96.0.11:53"),
            "{}",
            silent.summary
        );
        assert_eq!(silent.evidence["servers"][1]["rcode"], "TIMEOUT");
        assert!(silent.evidence["servers"][1].get("latency_ms").is_none());
    }

    use crate::dns::measure::{
        CandidateEvidence, ConntrackDelta, LatencyResult, PatternEvidence, ProcessLibc,
        QueryEvidence,
    };

    const K8S: &str = "search default.svc.cluster.local svc.cluster.local cluster.local corp.internal\nnameserver 10.96.0.10\noptions ndots:5\n";

    fn q(qtype: &str, rcode: &str, latency_ms: f64, answers: usize) -> QueryEvidence {
        QueryEvidence {
            qtype: qtype.into(),
            rcode: rcode.into(),
            latency_ms,
            server: "10.96.0.10:53".into(),
            answers,
        }
    }

    /// A candidate answered with `rcode` for both types in `ms` each.
    fn cand(fqdn: &str, domain: Option<&str>, rcode: &str, ms: f64) -> CandidateEvidence {
        let answers = usize::from(rcode == "NOERROR");
        CandidateEvidence {
            fqdn: fqdn.into(),
            search_domain: domain.map(str::to_string),
            queries: vec![q("A", rcode, ms, answers), q("AAAA", rcode, ms, answers)],
        }
    }

    /// api.example.com under the Kubernetes search list, every query taking
    /// `ms` (the host domain `slow_ms`).
    fn external(ms: f64, slow_ms: f64, host_rcode: &str) -> LookupEvidence {
        LookupEvidence::new(
            "api.example.com",
            vec![
                cand(
                    "api.example.com.default.svc.cluster.local.",
                    Some("default.svc.cluster.local"),
                    "NXDOMAIN",
                    ms,
                ),
                cand(
                    "api.example.com.svc.cluster.local.",
                    Some("svc.cluster.local"),
                    "NXDOMAIN",
                    ms,
                ),
                cand(
                    "api.example.com.cluster.local.",
                    Some("cluster.local"),
                    "NXDOMAIN",
                    ms,
                ),
                cand(
                    "api.example.com.corp.internal.",
                    Some("corp.internal"),
                    host_rcode,
                    slow_ms,
                ),
                cand("api.example.com.", None, "NOERROR", ms),
            ],
        )
    }

    fn expansion(lookups: Vec<LookupEvidence>) -> SearchExpansionEvidence {
        SearchExpansionEvidence::new(&ResolvConf::parse(K8S, &Env::default()), lookups)
    }

    #[test]
    fn lookup_totals() {
        let l = external(0.5, 0.5, "NXDOMAIN");
        assert_eq!((l.queries_sent, l.wasted_queries), (10, 8));
        assert_eq!(l.resolved_as.as_deref(), Some("api.example.com."));
        assert_eq!((l.total_ms, l.wasted_ms), (2.5, 2.0));
        assert_eq!(l.dots, 2);
        let unresolved = LookupEvidence::new(
            "nosuch",
            vec![cand(
                "nosuch.default.svc.cluster.local.",
                Some("default.svc.cluster.local"),
                "NXDOMAIN",
                1.0,
            )],
        );
        assert_eq!(unresolved.resolved_as, None);
        assert_eq!(unresolved.wasted_queries, 2);
        let direct = LookupEvidence::new(
            "api.example.com.",
            vec![cand("api.example.com.", None, "NOERROR", 0.3)],
        );
        assert_eq!((direct.wasted_queries, direct.wasted_ms), (0, 0.0));
    }

    #[test]
    fn search_expansion_warns_on_waste_and_names_the_fix() {
        let check = search_expansion(&expansion(vec![external(0.4, 0.4, "NXDOMAIN")]));
        assert_eq!(check.status, Status::Warn, "{}", check.summary);
        assert!(
            check.summary.contains("10 queries (8 wasted, 8 NXDOMAIN)"),
            "{}",
            check.summary
        );
        assert!(
            check.remedy[0].contains("`api.example.com.`"),
            "{:?}",
            check.remedy
        );
        // ndots:2 is the value that puts a 2-dot name first.
        assert!(
            check.remedy[1].contains("value: \"2\""),
            "{:?}",
            check.remedy
        );
        assert!(
            check
                .details
                .iter()
                .any(|l| l.contains("10 queries, 8 wasted, 1.6 of 2.0 ms on search domains")),
            "{:#?}",
            check.details
        );
        let table = check
            .details
            .iter()
            .position(|l| l.starts_with("search domain"))
            .unwrap();
        assert!(
            check.details[table + 4].starts_with("corp.internal"),
            "{:#?}",
            check.details
        );
        assert_eq!(check.evidence["by_search_domain"][0]["nxdomain"], 2);
    }

    #[test]
    fn search_expansion_passes_without_waste() {
        let direct = LookupEvidence::new(
            "api.example.com.",
            vec![cand("api.example.com.", None, "NOERROR", 0.3)],
        );
        let first = LookupEvidence::new(
            "web",
            vec![cand(
                "web.default.svc.cluster.local.",
                Some("default.svc.cluster.local"),
                "NOERROR",
                0.3,
            )],
        );
        let check = search_expansion(&expansion(vec![direct, first]));
        assert_eq!(check.status, Status::Pass, "{}", check.summary);
        assert!(check.remedy.is_empty());
    }

    #[test]
    fn a_walk_that_sent_nothing_is_an_error_not_a_pass() {
        let silent = LookupEvidence::new(
            "web",
            vec![CandidateEvidence {
                fqdn: "web.default.svc.cluster.local.".into(),
                search_domain: Some("default.svc.cluster.local".into()),
                queries: vec![],
            }],
        );
        let check = search_expansion(&expansion(vec![silent]));
        assert_eq!(check.status, Status::Error, "{}", check.summary);
        assert!(check.summary.contains("web"));
    }

    #[test]
    fn cross_namespace_names_get_the_fqdn_fix() {
        let web = LookupEvidence::new(
            "web.prod",
            vec![
                cand(
                    "web.prod.default.svc.cluster.local.",
                    Some("default.svc.cluster.local"),
                    "NXDOMAIN",
                    0.3,
                ),
                cand(
                    "web.prod.svc.cluster.local.",
                    Some("svc.cluster.local"),
                    "NOERROR",
                    0.3,
                ),
            ],
        );
        let check = search_expansion(&expansion(vec![web]));
        assert_eq!(check.status, Status::Warn);
        assert_eq!(
            check.remedy.len(),
            1,
            "no ndots advice for a search-list name: {:?}",
            check.remedy
        );
        assert!(check.remedy[0].contains("`web.prod.svc.cluster.local.`"));
    }

    #[test]
    fn search_expansion_fails_on_slow_or_silent_search_domains() {
        let slow = search_expansion(&expansion(vec![external(0.4, 300.0, "NXDOMAIN")]));
        assert_eq!(slow.status, Status::Fail, "{}", slow.summary);
        assert!(
            slow.summary.starts_with("1 lookup(s) lost more than 100 ms to the search list; slowest search domain corp.internal (max 300.0 ms)"),
            "{}",
            slow.summary
        );
        assert_eq!(
            slow.evidence["by_search_domain"][3]["domain"],
            "corp.internal"
        );
        assert_eq!(slow.evidence["by_search_domain"][3]["max_ms"], 300.0);

        let silent = LookupEvidence::new(
            "api.example.com",
            vec![
                cand(
                    "api.example.com.default.svc.cluster.local.",
                    Some("default.svc.cluster.local"),
                    "NXDOMAIN",
                    0.3,
                ),
                cand(
                    "api.example.com.corp.internal.",
                    Some("corp.internal"),
                    "TIMEOUT",
                    2000.0,
                ),
            ],
        );
        let check = search_expansion(&expansion(vec![silent]));
        assert_eq!(check.status, Status::Fail);
        assert!(
            check
                .summary
                .starts_with("search domain(s) timing out: corp.internal"),
            "{}",
            check.summary
        );
        assert!(
            check.summary.contains("did not resolve"),
            "{}",
            check.summary
        );
        assert!(check
            .remedy
            .iter()
            .any(|r| r.contains("corp.internal does not answer")));
    }

    fn race(same: u32, reopen: u32, processes: Vec<ProcessLibc>) -> RaceEvidence {
        let pattern = |name: &str, lost: u32| PatternEvidence {
            pattern: name.into(),
            attempts: 20,
            lost,
            lost_qtypes: [("A".to_string(), 0), ("AAAA".to_string(), lost)].into(),
            p50_ms: Some(0.4),
            max_ms: Some(if lost > 0 { 2000.0 } else { 0.9 }),
        };
        RaceEvidence {
            name: "kubernetes.default.svc.cluster.local.".into(),
            server: "10.96.0.10:53".into(),
            timeout_ms: 2000.0,
            patterns: vec![pattern(SAME_SOCKET, same), pattern(REOPEN, reopen)],
            conntrack: Some(ConntrackDelta {
                insert_failed: u64::from(same),
                drop: 0,
            }),
            processes,
        }
    }

    fn process(comm: &str, libc: &str) -> ProcessLibc {
        ProcessLibc {
            pid: 7,
            comm: comm.into(),
            libc: libc.into(),
        }
    }

    #[test]
    fn race_signature_fails_plain_loss_warns() {
        let sig = timeout_race(&race(9, 0, vec![]));
        assert_eq!(sig.status, Status::Fail, "{}", sig.summary);
        assert!(sig.summary.contains("9 of 20"), "{}", sig.summary);
        assert!(
            sig.details.iter().any(|l| l.contains("AAAA x9")),
            "{:#?}",
            sig.details
        );
        // Not knowing the app's libc: both fixes.
        assert_eq!(sig.remedy.len(), 2);
        assert_eq!(timeout_race(&race(3, 4, vec![])).status, Status::Warn);
        assert_eq!(timeout_race(&race(0, 2, vec![])).status, Status::Warn);
        let ok = timeout_race(&race(0, 0, vec![]));
        assert_eq!(ok.status, Status::Pass);
        assert!(ok.remedy.is_empty());
    }

    #[test]
    fn race_remedy_follows_the_apps_libc() {
        let musl = timeout_race(&race(5, 0, vec![process("app", "musl")]));
        assert_eq!(musl.remedy.len(), 1);
        assert!(
            musl.remedy[0].starts_with("musl apps (app)"),
            "{:?}",
            musl.remedy
        );
        assert!(musl.remedy[0].contains("NodeLocal DNSCache"));
        let glibc = timeout_race(&race(5, 0, vec![process("nginx", "glibc")]));
        assert_eq!(glibc.remedy.len(), 1);
        assert!(glibc.remedy[0].contains("single-request-reopen"));
        assert!(glibc
            .details
            .iter()
            .any(|l| l.contains("nginx (pid 7): glibc")));
    }

    fn lat(p99: Option<f64>, lost: u32) -> LatencyEvidence {
        LatencyEvidence {
            timeout_ms: 2000.0,
            results: vec![LatencyResult {
                server: "10.96.0.10:53".into(),
                name: "kubernetes.default.svc.cluster.local.".into(),
                count: 10,
                lost,
                p50_ms: p99.map(|p| p / 2.0),
                p90_ms: p99,
                p99_ms: p99,
                max_ms: p99,
            }],
        }
    }

    #[test]
    fn latency_thresholds() {
        assert_eq!(latency(&lat(Some(3.0), 0)).status, Status::Pass);
        assert_eq!(latency(&lat(Some(150.0), 0)).status, Status::Warn);
        assert_eq!(latency(&lat(Some(3.0), 1)).status, Status::Warn);
        assert_eq!(latency(&lat(Some(1000.0), 0)).status, Status::Fail);
        let silent = latency(&lat(None, 10));
        assert_eq!(silent.status, Status::Fail);
        assert!(silent.evidence["results"][0]["p99_ms"].is_null());
    }

    /// Evidence recorded in the lab, judged again: the same verdicts.
    #[test]
    fn recorded_lab_evidence_judges_the_same() {
        for text in [
            include_str!("../../tests/fixtures/dns/lab-slow-dns-race.json"),
            include_str!("../../tests/fixtures/dns/lab-healthy.json"),
        ] {
            let report: serde_json::Value = serde_json::from_str(text).unwrap();
            for recorded in report["checks"].as_array().unwrap() {
                let ev = recorded["evidence"].clone();
                let again = match recorded["id"].as_str().unwrap() {
                    "dns.search-expansion" => {
                        search_expansion(&serde_json::from_value(ev).unwrap())
                    }
                    "dns.timeout-race" => timeout_race(&serde_json::from_value(ev).unwrap()),
                    "dns.latency" => latency(&serde_json::from_value(ev).unwrap()),
                    _ => continue,
                };
                assert_eq!(
                    serde_json::to_value(again.status).unwrap(),
                    recorded["status"]
                );
                assert_eq!(again.summary, recorded["summary"].as_str().unwrap());
            }
        }
        let slow: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/dns/lab-slow-dns-race.json"
        ))
        .unwrap();
        let race = slow["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "dns.timeout-race")
            .unwrap();
        assert_eq!(race["status"], "fail");
        assert_eq!(race["evidence"]["patterns"][1]["lost"], 0);
    }
}
