//! Pure judges: DNS evidence in, `Check` out.

use std::collections::BTreeMap;

use serde::Serialize;

use super::fixes;
use super::measure::{
    DomainStats, LatencyEvidence, LookupEvidence, NameserversEvidence, QueryEvidence,
    SearchExpansionEvidence,
};
use super::model::{Model, Settings};
use super::resolvconf::{ResolvConf, MAX_NAMESERVERS};
use crate::report::{plural, Check, Status};

const REF_NDOTS: &str =
    "https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/#pod-dns-config";
const REF_RESOLV_CONF: &str = "https://man7.org/linux/man-pages/man5/resolv.conf.5.html";
pub(crate) const REF_NODELOCAL: &str =
    "https://kubernetes.io/docs/tasks/administer-cluster/nodelocaldns/";

/// Items in a summary before "and N more": summaries stay one line, the
/// rest is in the details and the evidence.
pub const SUMMARY_ITEMS: usize = 3;

/// `items` joined with `sep`, at most [`SUMMARY_ITEMS`] of them, then
/// "and N more".
pub fn capped(items: &[String], sep: &str) -> String {
    let shown = items.len().min(SUMMARY_ITEMS);
    let mut text = items[..shown].join(sep);
    if items.len() > shown {
        text.push_str(&format!("{sep}and {} more", items.len() - shown));
    }
    text
}

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
    /// The resolver the pod's application uses (see `dns.search-expansion`).
    resolver: &'a str,
    /// How that resolver reads the file, when it is not glibc.
    #[serde(skip_serializing_if = "Option::is_none")]
    as_read_by_resolver: Option<Settings>,
    /// Options in the file the application's resolver ignores.
    ignored_by_resolver: Vec<String>,
    /// What a name with fewer than `ndots` dots costs at most.
    worst_case_queries: usize,
}

/// `dns.resolv-conf`: the configuration as glibc reads it, and as the
/// application's resolver does. ndots:5 alone is what every ClusterFirst
/// pod has: its cost is stated, and judged where a name really pays it.
pub fn resolv_conf(path: &str, conf: &ResolvConf, model: &Model) -> Check {
    let settings = model.settings();
    let ignored_by_resolver = model.ignored_options(&conf.options);
    let worst_case_queries = 2 * (settings.search.len() + 1);
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
        resolver: model.resolver.name(),
        as_read_by_resolver: (model.resolver != super::model::Resolver::Glibc)
            .then(|| settings.clone()),
        ignored_by_resolver: ignored_by_resolver.clone(),
        worst_case_queries,
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
            "{} nameserver line(s) beyond the third are ignored: {}",
            conf.ignored_nameservers.len(),
            capped(&conf.ignored_nameservers, ", ")
        ));
        remedy.push(
            "keep at most 3 nameservers (the kubelet also truncates to 3 and logs 'Nameserver limits were exceeded')"
                .to_string(),
        );
    } else if !conf.ignored_nameservers.is_empty() {
        problems.push(format!(
            "unparsable nameserver line(s) ignored: {}",
            capped(&conf.ignored_nameservers, ", ")
        ));
    }
    let status = if problems.is_empty() {
        Status::Pass
    } else {
        Status::Warn
    };
    let mut summary = format!(
        "{}, {}, ndots:{}, timeout {}s x {}",
        plural(settings.nameservers.len() as u64, "nameserver"),
        plural(settings.search.len() as u64, "search domain"),
        settings.ndots,
        settings.timeout_s,
        plural(u64::from(settings.attempts), "attempt")
    );
    if settings.ndots >= 2 && !settings.search.is_empty() {
        summary.push_str(&format!(
            "; a name with fewer than {} dots costs up to {worst_case_queries} queries (`podprobe dns NAME` measures yours)",
            settings.ndots
        ));
    }
    if !ignored_by_resolver.is_empty() {
        summary.push_str(&format!(
            "; {} ignores {}",
            model.resolver.name(),
            capped(&ignored_by_resolver, ", ")
        ));
    }
    if !problems.is_empty() {
        summary = problems.join("; ");
    }
    Check::new(
        "dns.resolv-conf",
        "resolv.conf as the app's resolver reads it",
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
    let with = |rcode: &str| -> Vec<String> {
        ev.servers
            .iter()
            .filter(|s| s.rcode == rcode)
            .map(|s| s.server.clone())
            .collect()
    };
    let (silent, unreachable) = (with("TIMEOUT"), with("UNREACHABLE"));
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
    let mut failures = Vec::new();
    if !unreachable.is_empty() {
        failures.push(format!(
            "port unreachable at {} (ICMP: nothing listens there, or a REJECT rule)",
            capped(&unreachable, ", ")
        ));
    }
    if !silent.is_empty() {
        failures.push(format!(
            "no answer for {} from {} within {:.0} ms",
            ev.name,
            capped(&silent, ", "),
            ev.timeout_ms
        ));
    }
    let (status, summary) = if !failures.is_empty() {
        (Status::Fail, failures.join("; "))
    } else if !unhealthy.is_empty() {
        (
            Status::Warn,
            format!(
                "{} answered but cannot resolve: {}",
                ev.name,
                capped(&unhealthy, ", ")
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
        (
            Status::Pass,
            format!("{}: {}", ev.name, capped(&list, ", ")),
        )
    };
    let details = ev
        .servers
        .iter()
        .map(|s| match (&s.latency_ms, &s.error) {
            (Some(ms), _) => format!("{:<24} {:<11} {ms:>8.1} ms", s.server, s.rcode),
            (None, Some(e)) => format!("{:<24} {:<11} {e}", s.server, s.rcode),
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
/// A lookup that makes the application wait this long has stalled.
pub const STALL_MS_FAIL: f64 = 1000.0;

const REF_SEARCH: &str = "https://github.com/kubernetes/dns/issues/341";

/// Failed queries of a lookup, per server and kind: `10.0.0.1:53 REFUSED
/// x2`, and replies truncated (answered again over TCP, or not).
fn troubles(l: &LookupEvidence) -> Vec<String> {
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for q in l.candidates.iter().flat_map(|c| &c.queries) {
        if q.failed() {
            *counts
                .entry((q.server.clone(), q.rcode.clone()))
                .or_default() += 1;
        }
        if q.truncated {
            *counts
                .entry((q.server.clone(), "truncated".to_string()))
                .or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|((server, what), n)| {
            if n > 1 {
                format!("{server} {what} x{n}")
            } else {
                format!("{server} {what}")
            }
        })
        .collect()
}

/// Search domains that never answered: timeouts under them and no reply
/// at all (a lost reply beside answers is the race's or the network's,
/// and a refusal is the server's, not the domain's).
fn silent_domains(ev: &SearchExpansionEvidence) -> impl Iterator<Item = &DomainStats> {
    let answered = |domain: &str| {
        ev.lookups
            .iter()
            .flat_map(|l| &l.candidates)
            .filter(|c| c.search_domain.as_deref() == Some(domain))
            .flat_map(|c| &c.queries)
            .any(|q| matches!(q.rcode.as_str(), "NOERROR" | "NXDOMAIN"))
    };
    ev.by_search_domain
        .iter()
        .filter(move |d| d.timeouts > 0 && !answered(&d.domain))
}

/// The error for a name that simply does not exist.
fn not_found(outcome: &str) -> bool {
    matches!(outcome, "EAI_NONAME" | "EAI_NODATA" | "no such host")
}

/// How bad one lookup is.
fn lookup_status(l: &LookupEvidence) -> Status {
    let failed_queries = l
        .candidates
        .iter()
        .flat_map(|c| &c.queries)
        .any(QueryEvidence::failed);
    let broken = !l.resolved() && (failed_queries || !not_found(&l.outcome));
    if broken || l.total_ms >= STALL_MS_FAIL || l.wasted_ms > WASTED_MS_FAIL {
        Status::Fail
    } else if l.wasted_queries > 0 || !l.resolved() || !troubles(l).is_empty() {
        Status::Warn
    } else {
        Status::Pass
    }
}

/// `dns.search-expansion`: every name looked up as the application's
/// resolver looks it up: the queries it sends, what it gets and how long it
/// waits; the search list's cost; misbehaving servers on the way.
pub fn search_expansion(ev: &SearchExpansionEvidence) -> Check {
    const ID: &str = "dns.search-expansion";
    const TITLE: &str = "DNS lookups as the app's resolver makes them";
    // A lookup that sent nothing measured nothing: never a pass.
    if let Some(silent) = ev
        .lookups
        .iter()
        .find(|l| l.queries_sent == 0 && !l.notes.iter().any(|n| n.contains("rejects")))
    {
        return Check::new(
            ID,
            TITLE,
            Status::Error,
            format!("no query could be sent for {}", silent.name),
            ev,
        );
    }
    let statuses: Vec<Status> = ev.lookups.iter().map(lookup_status).collect();
    let rank = |s: Status| match s {
        Status::Fail => 2,
        Status::Warn => 1,
        _ => 0,
    };
    let status = statuses
        .iter()
        .copied()
        .max_by_key(|s| rank(*s))
        .unwrap_or(Status::Pass);
    // The worst lookups first, each in one phrase.
    let mut order: Vec<usize> = (0..ev.lookups.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(rank(statuses[i])));
    let phrases: Vec<String> = order
        .iter()
        .filter(|&&i| status == Status::Pass || statuses[i] != Status::Pass)
        .map(|&i| lookup_summary(&ev.lookups[i]))
        .collect();
    let timed_out: Vec<String> = silent_domains(ev).map(|d| d.domain.clone()).collect();
    let mut summary = String::new();
    if ev.resolver_source == "assumed" {
        summary.push_str(&format!("assuming {}: ", ev.resolver));
    }
    if !timed_out.is_empty() {
        summary.push_str(&format!(
            "search domain(s) timing out: {}; ",
            capped(&timed_out, ", ")
        ));
    }
    summary.push_str(&capped(&phrases, "; "));
    let in_effect = search_fixes(ev);
    if !in_effect.is_empty() {
        summary.push_str(&format!("; in effect: {}", capped(&in_effect, ", ")));
    }
    let mut details = vec![format!(
        "resolver: {} ({})",
        ev.resolver_model,
        match ev.resolver_source.as_str() {
            "assumed" => "assumed: no application process visible; --resolver glibc|musl|musl-1.2.3|go picks another",
            "--resolver" => "as --resolver says",
            other => other,
        }
    )];
    for l in &ev.lookups {
        details.push(String::new());
        details.extend(lookup_table(l, ev.ndots));
    }
    let domains = domain_table(ev);
    if !domains.is_empty() {
        details.push(String::new());
        details.extend(domains);
    }
    Check::new(ID, TITLE, status, summary, ev)
        .with_details(details)
        .with_remedy(search_remedy(ev))
        .with_refs(&[REF_SEARCH, REF_NDOTS])
}

/// Fixes against the search list's cost already in effect, and whether
/// they work (the names they apply to went without waste).
fn search_fixes(ev: &SearchExpansionEvidence) -> Vec<String> {
    let mut in_effect = Vec::new();
    if let Some(fix) = fixes::ndots_lowered(ev.ndots, &ev.search) {
        let helped: Vec<&LookupEvidence> = ev
            .lookups
            .iter()
            .filter(|l| !l.name.ends_with('.') && l.dots >= ev.ndots as usize && l.dots < 5)
            .collect();
        in_effect.push(if helped.is_empty() {
            fix
        } else if helped.iter().all(|l| l.wasted_queries == 0) {
            format!("{fix} (works: {} tried as is first)", helped[0].name)
        } else {
            format!("{fix} (did not help {})", helped[0].name)
        });
    }
    let dotted: Vec<&LookupEvidence> = ev
        .lookups
        .iter()
        .filter(|l| l.name.ends_with('.') && l.resolved())
        .collect();
    if let Some(l) = dotted.first() {
        in_effect.push(format!(
            "trailing dot ({}: {}, none on the search list)",
            l.name,
            plural(l.queries_sent as u64, "query")
        ));
    }
    in_effect
}

fn seconds(ms: f64) -> String {
    if ms >= STALL_MS_FAIL {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

fn lookup_summary(l: &LookupEvidence) -> String {
    let nx = l
        .candidates
        .iter()
        .flat_map(|c| &c.queries)
        .take(l.wasted_queries)
        .filter(|q| q.rcode == "NXDOMAIN")
        .count();
    let trouble = troubles(l);
    let why = if trouble.is_empty() {
        String::new()
    } else {
        format!(" ({})", capped(&trouble, ", "))
    };
    match &l.resolved_as {
        Some(fqdn) if l.total_ms >= STALL_MS_FAIL => format!(
            "the app waits {} for {}{why}, then it resolves as {fqdn}",
            seconds(l.total_ms),
            l.name
        ),
        Some(fqdn) if l.wasted_queries == 0 => format!(
            "{} resolved as {fqdn} with {} in {}{why}",
            l.name,
            plural(l.queries_sent as u64, "query"),
            seconds(l.total_ms)
        ),
        Some(fqdn) => format!(
            "{} took {} ({} wasted, {nx} NXDOMAIN) and {}, {} of it before {fqdn} answered{why}",
            l.name,
            plural(l.queries_sent as u64, "query"),
            l.wasted_queries,
            seconds(l.total_ms),
            seconds(l.wasted_ms)
        ),
        None if not_found(&l.outcome) && why.is_empty() => format!(
            "{} does not exist ({}): {} ({nx} NXDOMAIN) in {}",
            l.name,
            l.outcome,
            plural(l.queries_sent as u64, "query"),
            seconds(l.total_ms)
        ),
        None => format!(
            "{} fails with {} after {}{why}",
            l.name,
            l.outcome,
            seconds(l.total_ms)
        ),
    }
}

/// One row per candidate with both query types, then the totals.
fn lookup_table(l: &LookupEvidence, ndots: u32) -> Vec<String> {
    let order = if l.name.ends_with('.') {
        "trailing dot: as is only".to_string()
    } else if l.dots >= ndots as usize {
        format!(
            "{} >= ndots:{ndots}: as is first",
            plural(l.dots as u64, "dot")
        )
    } else {
        format!(
            "{} < ndots:{ndots}: search list first",
            plural(l.dots as u64, "dot")
        )
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
                .map(|q| {
                    let tcp = if q.transport == super::model::Transport::Tcp {
                        " tcp"
                    } else {
                        ""
                    };
                    format!("{:<8} {:>7.1} ms{tcp}", q.label(), q.latency_ms)
                })
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
        "  {}, {} wasted, {:.1} of {:.1} ms before the answer; {}: {}",
        plural(l.queries_sent as u64, "query"),
        l.wasted_queries,
        l.wasted_ms,
        l.total_ms,
        l.resolver,
        if l.resolved() {
            format!("resolves to {}", l.addresses.join(", "))
        } else {
            l.outcome.clone()
        }
    ));
    out.extend(l.notes.iter().map(|n| format!("  note: {n}")));
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
            fmt_ms(d.p50_ms),
            fmt_ms(d.max_ms)
        ));
    }
    out
}

/// The cheapest fix per wasteful name, the ndots value that removes the
/// waste for names found as is (unless already lowered that far), then
/// what to do about each misbehaving server.
fn search_remedy(ev: &SearchExpansionEvidence) -> Vec<String> {
    let mut remedy = Vec::new();
    let mut as_is_dots: Vec<usize> = Vec::new();
    for l in &ev.lookups {
        if l.wasted_queries == 0 || (!l.resolved() && !not_found(&l.outcome)) {
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
                "{}: does not resolve under any search domain; check the name and namespace (kubectl get svc -A)",
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
    for d in silent_domains(ev) {
        remedy.push(format!(
            "search domain {} does not answer in time: fix or remove it from the node's resolv.conf (the kubelet copies the host's search domains into pods), or set dnsPolicy: None with an explicit dnsConfig.searches",
            d.domain
        ));
    }
    // Queries under a silent search domain have their own advice above.
    let silent: Vec<&str> = silent_domains(ev).map(|d| d.domain.as_str()).collect();
    let queries: Vec<&QueryEvidence> = ev
        .lookups
        .iter()
        .flat_map(|l| &l.candidates)
        .filter(|c| {
            c.search_domain
                .as_deref()
                .is_none_or(|d| !silent.contains(&d))
        })
        .flat_map(|c| &c.queries)
        .collect();
    let servers_with = |rcode: &str| -> Vec<String> {
        let mut list: Vec<String> = queries
            .iter()
            .filter(|q| q.rcode == rcode)
            .map(|q| q.server.clone())
            .collect();
        list.sort();
        list.dedup();
        list
    };
    let musl = ev.resolver.starts_with("musl");
    let replied = |server: &str| {
        queries
            .iter()
            .any(|q| q.server == server && !matches!(q.rcode.as_str(), "TIMEOUT" | "UNREACHABLE"))
    };
    for (rcode, one, many, advice) in [
        ("REFUSED", "refuses", "refuse", "queries: it is not a recursive resolver for this pod, or its ACL (allow-query, access-control) leaves the pod out; glibc and Go move on to the next nameserver, musl waits for another server or its whole timeout"),
        ("SERVFAIL", "answers", "answer", "SERVFAIL: its upstream or zone is broken (CoreDNS: `kubectl -n kube-system logs -l k8s-app=kube-dns`, the forward plugin's health)"),
        ("UNREACHABLE", "sends", "send", "ICMP port unreachable: nothing listens on port 53 there, or a REJECT rule; fix the nameserver address in the pod's dnsConfig or bring the server back"),
        ("TIMEOUT", "does", "do", "not answer: check that it runs and that no NetworkPolicy or firewall drops UDP 53 on the way"),
    ] {
        let mut servers = servers_with(rcode);
        if rcode == "TIMEOUT" {
            // A server that answers, but not every query, loses replies.
            let (lossy, dead): (Vec<String>, Vec<String>) =
                servers.into_iter().partition(|s| replied(s));
            if !lossy.is_empty() {
                remedy.push(format!(
                    "replies from {} were lost now and then: `podprobe dns --race 20` tells the conntrack race from plain loss",
                    capped(&lossy, ", ")
                ));
            }
            servers = dead;
        }
        if !servers.is_empty() {
            let verb = if servers.len() == 1 { one } else { many };
            remedy.push(format!("{} {verb} {advice}", capped(&servers, ", ")));
        }
    }
    if musl && ev.resolver == "musl-1.2.3" && queries.iter().any(|q| q.truncated) {
        remedy.push("musl before 1.2.4 has no TCP fallback: the app gets only what fits in a 512-byte UDP reply; move the image to Alpine 3.18+ (musl 1.2.4) or keep the answer small".to_string());
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
    use crate::dns::measure::{LatencyResult, ServerAnswer};
    use crate::dns::model::testnet::{Behaviour, TestNet};
    use crate::dns::model::{Reply, Resolver};
    use crate::dns::resolvconf::Env;

    const K8S: &str = "search default.svc.cluster.local svc.cluster.local cluster.local corp.internal\nnameserver 10.0.0.1\noptions ndots:5\n";

    fn judge_conf(text: &str, resolver: Resolver) -> Check {
        let conf = ResolvConf::parse(text, &Env::default());
        resolv_conf(
            "/etc/resolv.conf",
            &conf,
            &Model::new(resolver, text, &Env::default()),
        )
    }

    #[test]
    fn a_cluster_first_resolv_conf_passes_and_states_its_cost() {
        let k8s = judge_conf(K8S, Resolver::Glibc);
        assert_eq!(k8s.status, Status::Pass, "{}", k8s.summary);
        assert!(
            k8s.summary.contains("costs up to 10 queries"),
            "{}",
            k8s.summary
        );
        assert_eq!(k8s.evidence["worst_case_queries"], 10);
        assert_eq!(k8s.evidence["ndots"], 5);
        assert!(k8s.remedy.is_empty());
        let four = judge_conf(
            "nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n",
            Resolver::Glibc,
        );
        assert_eq!(four.status, Status::Warn);
        assert!(four.summary.contains("10.0.0.4"), "{}", four.summary);
        let none = judge_conf("search example.com\n", Resolver::Glibc);
        assert_eq!(none.status, Status::Warn);
        assert!(none.summary.contains("no usable nameserver"));
        let musl = judge_conf(
            &format!("{K8S}options single-request-reopen\n"),
            Resolver::Musl,
        );
        assert!(
            musl.summary.contains("musl ignores single-request-reopen"),
            "{}",
            musl.summary
        );
        assert_eq!(musl.evidence["as_read_by_resolver"]["ndots"], 5);
    }

    fn answer(server: &str, rcode: &str, latency_ms: Option<f64>) -> ServerAnswer {
        ServerAnswer {
            server: server.into(),
            rcode: rcode.into(),
            latency_ms,
            error: latency_ms.is_none().then(|| "x".into()),
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
            answer("10.96.0.12:53", "UNREACHABLE", None),
        ]));
        assert_eq!(silent.status, Status::Fail);
        assert!(
            silent
                .summary
                .starts_with("port unreachable at 10.96.0.12:53 (ICMP"),
            "{}",
            silent.summary
        );
        assert!(silent
            .summary
            .contains("no answer for kubernetes.default.svc.cluster.local. from 10.96.0.11:53"));
        assert!(!silent.summary.contains("10.96.0.12:53 within"));
    }

    /// Names looked up through `resolver`'s model on a test network.
    fn expansion(
        text: &str,
        resolver: Resolver,
        names: &[&str],
        net: &mut TestNet,
    ) -> SearchExpansionEvidence {
        let model = Model::new(resolver, text, &Env::default());
        let lookups = names
            .iter()
            .map(|n| LookupEvidence::from_trace(&model.resolve(n, net)))
            .collect();
        SearchExpansionEvidence::new(&model, "--resolver", lookups)
    }

    #[test]
    fn search_expansion_warns_on_waste_and_names_the_fix() {
        let ev = expansion(
            K8S,
            Resolver::Glibc,
            &["api.example.com"],
            &mut TestNet::new(),
        );
        let check = search_expansion(&ev);
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
        assert!(
            check.remedy[1].contains("value: \"2\""),
            "{:?}",
            check.remedy
        );
        assert!(
            check
                .details
                .iter()
                .any(|l| l.contains("10 queries, 8 wasted")),
            "{:#?}",
            check.details
        );
        assert_eq!(check.evidence["by_search_domain"][0]["nxdomain"], 2);
        assert_eq!(check.evidence["lookups"][0]["resolver"], "glibc");
        assert_eq!(check.evidence["lookups"][0]["outcome"], "resolved");
    }

    #[test]
    fn fixes_in_effect_pass_and_are_not_recommended() {
        let ev = expansion(
            K8S,
            Resolver::Glibc,
            &["api.example.com.", "web"],
            &mut TestNet::new(),
        );
        let check = search_expansion(&ev);
        assert_eq!(check.status, Status::Pass, "{}", check.summary);
        assert!(
            check
                .summary
                .contains("in effect: trailing dot (api.example.com.: 2 queries"),
            "{}",
            check.summary
        );
        assert!(check.remedy.is_empty());
        let lowered = K8S.replace("ndots:5", "ndots:2");
        let ev = expansion(
            &lowered,
            Resolver::Glibc,
            &["api.example.com"],
            &mut TestNet::new(),
        );
        let check = search_expansion(&ev);
        assert_eq!(check.status, Status::Pass, "{}", check.summary);
        assert!(
            check.summary.contains("options ndots:2 (works"),
            "{}",
            check.summary
        );
    }

    #[test]
    fn a_silent_search_domain_shows_the_apps_stall_and_that_it_resolves() {
        let mut net = TestNet::new().with(1, Behaviour::SilentFor("corp.internal."));
        let check = search_expansion(&expansion(
            K8S,
            Resolver::Glibc,
            &["api.example.com"],
            &mut net,
        ));
        assert_eq!(check.status, Status::Fail, "{}", check.summary);
        assert!(
            check.summary.contains("the app waits 10.0 s for api.example.com (10.0.0.1:53 TIMEOUT x4), then it resolves as api.example.com."),
            "{}",
            check.summary
        );
        assert!(check
            .remedy
            .iter()
            .any(|r| r.contains("corp.internal does not answer")));
    }

    #[test]
    fn a_refusing_first_server_is_a_warning_when_the_app_still_resolves() {
        let mut net = TestNet::new()
            .with(1, Behaviour::Rcode(Reply::REFUSED))
            .with(2, Behaviour::Healthy);
        let text = "nameserver 10.0.0.1\nnameserver 10.0.0.2\n";
        let check = search_expansion(&expansion(
            text,
            Resolver::Glibc,
            &["api.example.com."],
            &mut net,
        ));
        assert_eq!(check.status, Status::Warn, "{}", check.summary);
        assert!(
            check.summary.contains("resolved as api.example.com."),
            "{}",
            check.summary
        );
        assert!(
            check.summary.contains("10.0.0.1:53 REFUSED x2"),
            "{}",
            check.summary
        );
        assert!(check
            .remedy
            .iter()
            .any(|r| r.starts_with("10.0.0.1:53 refuses queries")));
        // musl waits out its timeout on the refusal, then gets the answer.
        let check = search_expansion(&expansion(
            text,
            Resolver::Musl,
            &["api.example.com."],
            &mut net,
        ));
        assert_eq!(check.status, Status::Warn, "{}", check.summary);
        let mut refused = TestNet::new().with(1, Behaviour::Rcode(Reply::REFUSED));
        let check = search_expansion(&expansion(
            "nameserver 10.0.0.1\n",
            Resolver::Musl,
            &["api.example.com."],
            &mut refused,
        ));
        assert_eq!(check.status, Status::Fail);
        assert!(
            check
                .summary
                .contains("api.example.com. fails with EAI_AGAIN after 5.0 s"),
            "{}",
            check.summary
        );
    }

    #[test]
    fn names_that_do_not_exist_warn_and_summaries_are_capped() {
        let names: Vec<String> = (0..200)
            .map(|i| format!("nosuch{i}.example.com."))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let check = search_expansion(&expansion(K8S, Resolver::Glibc, &refs, &mut TestNet::new()));
        assert_eq!(check.status, Status::Warn);
        assert!(
            check.summary.contains("does not exist (EAI_NONAME)"),
            "{}",
            check.summary
        );
        assert!(check.summary.ends_with("and 197 more"), "{}", check.summary);
        assert!(check.summary.len() < 400, "{}", check.summary.len());
    }

    #[test]
    fn an_assumed_resolver_is_said() {
        let model = Model::new(Resolver::Glibc, K8S, &Env::default());
        let lookups = vec![LookupEvidence::from_trace(
            &model.resolve("web", &mut TestNet::new()),
        )];
        let check = search_expansion(&SearchExpansionEvidence::new(&model, "assumed", lookups));
        assert!(
            check.summary.starts_with("assuming glibc: web resolved"),
            "{}",
            check.summary
        );
        assert!(check.details[0].contains("assumed"), "{}", check.details[0]);
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
            include_str!("../../tests/fixtures/dns/lab-misbehaving.json"),
        ] {
            let report: serde_json::Value = serde_json::from_str(text).unwrap();
            for recorded in report["checks"].as_array().unwrap() {
                let ev = recorded["evidence"].clone();
                let again = match recorded["id"].as_str().unwrap() {
                    "dns.search-expansion" => {
                        search_expansion(&serde_json::from_value(ev).unwrap())
                    }
                    "dns.timeout-race" if recorded["status"] != "skip" => {
                        crate::dns::judge_race::timeout_race(&serde_json::from_value(ev).unwrap())
                    }
                    "dns.latency" if recorded["status"] != "skip" => {
                        latency(&serde_json::from_value(ev).unwrap())
                    }
                    _ => continue,
                };
                assert_eq!(
                    serde_json::to_value(again.status).unwrap(),
                    recorded["status"]
                );
                assert_eq!(again.summary, recorded["summary"].as_str().unwrap());
            }
        }
    }
}
