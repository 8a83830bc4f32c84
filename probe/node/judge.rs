//! Pure judges for the `node.*` checks. Thresholds are constants here and
//! documented in the README's node section.

use serde::Serialize;

use super::cni::{self, CniEvidence};
use super::measure::{ConntrackEvidence, DnsProbe, RulesEvidence};
use super::rules::{IptablesKubeProxy, NftKubeProxy, NotrackRule, RuleRef, SnatRule};
use crate::report::{Check, Status};

/// Table fill that warns: new flows are close to being dropped.
pub const CONNTRACK_WARN_PCT: f64 = 75.0;
/// Table fill that fails: a burst fills the rest.
pub const CONNTRACK_FAIL_PCT: f64 = 90.0;
/// Services above which kube-proxy's iptables mode costs first packets
/// measurable time (the seed articles' "about 1,000").
pub const IPTABLES_SERVICES_WARN: usize = 1_000;
/// NodeLocal DNSCache's usual link-local address.
pub const NODELOCAL_ADDRESS: &str = "169.254.20.10";

const CONNTRACK_REFS: [&str; 2] = [
    "https://github.com/kubernetes/kubernetes/issues/56903",
    "https://www.kernel.org/doc/html/latest/networking/nf_conntrack-sysctl.html",
];

pub fn conntrack(evidence: &Result<ConntrackEvidence, String>) -> Check {
    const ID: &str = "node.conntrack";
    const TITLE: &str = "Node conntrack table";
    let e = match evidence {
        Ok(e) => e,
        Err(reason) => {
            return Check::skipped(
                ID,
                TITLE,
                format!("conntrack state not readable ({reason}): the nf_conntrack module is not loaded, or /proc is not the node's"),
            )
        }
    };
    let grew = |name: &str| e.increases.get(name).copied().unwrap_or(0);
    let rate = |name: &str| e.rates_per_s.get(name).copied().unwrap_or(0.0);
    let table_full_drops = grew("drop").saturating_sub(grew("insert_failed"));
    let mut problems = Vec::new();
    let mut status = Status::Pass;
    let mut raise = |s: Status, what: String| {
        if s == Status::Fail || status == Status::Pass {
            status = s;
        }
        problems.push(what);
    };
    if e.fill_pct >= CONNTRACK_FAIL_PCT {
        raise(Status::Fail, format!("table {:.1}% full", e.fill_pct));
    } else if e.fill_pct >= CONNTRACK_WARN_PCT {
        raise(Status::Warn, format!("table {:.1}% full", e.fill_pct));
    }
    if table_full_drops > 0 {
        raise(
            Status::Fail,
            format!(
                "{table_full_drops} packets dropped for want of an entry ({:.2}/s)",
                rate("drop")
            ),
        );
    }
    if grew("insert_failed") > 0 {
        raise(
            Status::Warn,
            format!(
                "insert_failed grew by {} ({:.2}/s): the insert race",
                grew("insert_failed"),
                rate("insert_failed")
            ),
        );
    }
    if grew("early_drop") > 0 {
        raise(
            Status::Warn,
            format!("{} entries evicted early to make room", grew("early_drop")),
        );
    }
    let table = format!(
        "{}/{} entries ({:.1}%){}",
        e.count,
        e.max,
        e.fill_pct,
        e.buckets
            .map(|b| format!(", {b} buckets"))
            .unwrap_or_default()
    );
    let rates: Vec<String> = super::measure::CONNTRACK_COUNTERS
        .iter()
        .filter(|c| e.rates_per_s.contains_key(**c))
        .map(|c| format!("{c} {:.2}", rate(c)))
        .collect();
    let mut details = vec![format!(
        "per second over {:.1} s: {}",
        e.interval_s,
        rates.join(", ")
    )];
    for (counter, cpus) in &e.per_cpu_increases {
        details.push(format!("{counter} by CPU: {cpus:?}"));
    }
    let summary = if problems.is_empty() {
        format!(
            "{table}; no insert failures, drops or early drops in {:.1} s",
            e.interval_s
        )
    } else {
        format!("{}: {table}", problems.join(", "))
    };
    let mut remedy = Vec::new();
    if e.fill_pct >= CONNTRACK_WARN_PCT || table_full_drops > 0 || grew("early_drop") > 0 {
        remedy.push(format!(
            "raise the table: sysctl -w net.netfilter.nf_conntrack_max={} (kube-proxy sets it from --conntrack-max-per-core, default 32768 per CPU), \
             and the hash with it: echo {} > /sys/module/nf_conntrack/parameters/hashsize (buckets = max/4 or more); \
             or shorten idle entries (net.netfilter.nf_conntrack_tcp_timeout_established, kube-proxy --conntrack-tcp-timeout-established)",
            e.max.saturating_mul(2).max(262_144),
            (e.max.saturating_mul(2) / 4).max(e.buckets.unwrap_or(0)).max(65_536)
        ));
    }
    if grew("insert_failed") > 0 {
        remedy.push(format!(
            "insert_failed counts two packets of one new flow racing into the table: glibc's A and AAAA queries from one socket \
             (options single-request-reopen, or NodeLocal DNSCache, whose NOTRACK rules keep DNS out of conntrack) \
             and SNAT port clashes (--random-fully); kernel {} — UDP clash resolution came in 5.0 and was widened in 5.7",
            if e.kernel.is_empty() { "unknown" } else { &e.kernel }
        ));
    }
    Check::new(ID, TITLE, status, summary, e)
        .with_details(details)
        .with_remedy(remedy)
        .with_refs(&CONNTRACK_REFS)
}

/// kube-proxy's mode in effect, from what its rules look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    Iptables,
    Ipvs,
    Nftables,
    /// Rules of more than one mode are programmed.
    Mixed,
    None,
}

#[derive(Debug, Clone, Serialize)]
pub struct KubeProxyEvidence {
    pub mode: ProxyMode,
    /// The iptables backends holding kube-proxy's rules (`nft`, `legacy`).
    pub iptables_backends: Vec<String>,
    pub services: usize,
    pub endpoints: usize,
    pub rules: Option<usize>,
    /// Rules a Service's first packet walks in KUBE-SERVICES (iptables mode).
    pub services_chain_rules: Option<usize>,
    pub iptables: Vec<IptablesKubeProxy>,
    pub nftables: Vec<NftKubeProxy>,
    pub ipvs_virtual_services: Option<usize>,
    pub replaced_by: Option<String>,
    pub sources: Vec<super::measure::SourceReport>,
}

pub fn kube_proxy_mode(rules: &RulesEvidence, ipvs_interface: bool) -> ProxyMode {
    let facts = &rules.facts;
    let ipvs = ipvs_interface
        || facts.kube_proxy_iptables.iter().any(|k| k.ipvs_ipsets)
        || rules.ipvs.as_ref().is_some_and(|i| i.virtual_services > 0);
    let iptables = facts
        .kube_proxy_iptables
        .iter()
        .any(|k| k.services > 0 || k.services_chain_rules > 0)
        && !ipvs;
    let nftables = !facts.kube_proxy_nftables.is_empty();
    match (iptables, ipvs, nftables) {
        (false, false, false) => ProxyMode::None,
        (true, false, false) => ProxyMode::Iptables,
        (false, true, false) => ProxyMode::Ipvs,
        (false, false, true) => ProxyMode::Nftables,
        _ => ProxyMode::Mixed,
    }
}

pub fn kube_proxy(rules: &RulesEvidence, ipvs_interface: bool, cnis: &[String]) -> Check {
    const ID: &str = "node.kube-proxy";
    const TITLE: &str = "kube-proxy mode and size";
    if !rules.readable() {
        return Check::skipped(
            ID,
            TITLE,
            format!("no ruleset readable: {}", rules.why_unreadable()),
        );
    }
    let facts = &rules.facts;
    let mode = kube_proxy_mode(rules, ipvs_interface);
    let mut backends: Vec<String> = facts
        .kube_proxy_iptables
        .iter()
        .filter(|k| k.services > 0 || k.services_chain_rules > 0)
        .map(|k| k.source.rsplit('-').next().unwrap_or_default().to_string())
        .collect();
    backends.sort();
    backends.dedup();
    let ipvs_services = rules.ipvs.as_ref().map(|i| i.virtual_services);
    let services = match mode {
        ProxyMode::Nftables => facts.kube_proxy_nftables.iter().map(|k| k.services).sum(),
        ProxyMode::Ipvs => ipvs_services.unwrap_or(0),
        _ => {
            facts
                .kube_proxy_iptables
                .iter()
                .map(|k| k.services)
                .sum::<usize>()
                + facts
                    .kube_proxy_nftables
                    .iter()
                    .map(|k| k.services)
                    .sum::<usize>()
        }
    };
    let endpoints = match mode {
        ProxyMode::Nftables => facts.kube_proxy_nftables.iter().map(|k| k.endpoints).sum(),
        ProxyMode::Ipvs => rules.ipvs.as_ref().map_or(0, |i| i.real_servers),
        _ => {
            facts
                .kube_proxy_iptables
                .iter()
                .map(|k| k.endpoints)
                .sum::<usize>()
                + facts
                    .kube_proxy_nftables
                    .iter()
                    .map(|k| k.endpoints)
                    .sum::<usize>()
        }
    };
    let rule_counts: Vec<Option<usize>> = facts
        .kube_proxy_iptables
        .iter()
        .map(|k| k.rules)
        .chain(facts.kube_proxy_nftables.iter().map(|k| k.rules))
        .collect();
    let kube_rules = (!rule_counts.is_empty() && rule_counts.iter().all(Option::is_some))
        .then(|| rule_counts.iter().flatten().sum());
    let walk = facts
        .kube_proxy_iptables
        .iter()
        .map(|k| k.services_chain_rules)
        .max();
    let replaced_by = (mode == ProxyMode::None && cnis.iter().any(|c| c == "cilium"))
        .then(|| "cilium".to_string());
    let evidence = KubeProxyEvidence {
        mode,
        iptables_backends: backends.clone(),
        services,
        endpoints,
        rules: kube_rules,
        services_chain_rules: walk.filter(|_| mode == ProxyMode::Iptables),
        iptables: facts.kube_proxy_iptables.clone(),
        nftables: facts.kube_proxy_nftables.clone(),
        ipvs_virtual_services: ipvs_services,
        replaced_by: replaced_by.clone(),
        sources: rules.sources.clone(),
    };
    let counts = format!(
        "{services} Services, {endpoints} endpoints{}",
        kube_rules
            .map(|r| format!(", {r} rules"))
            .unwrap_or_default()
    );
    let details: Vec<String> = rules
        .sources
        .iter()
        .map(|s| {
            format!(
                "{:<16} {:<10} {:>7} rules  read {:>8.1} ms  parse {:>6.1} ms  {}{}",
                s.source,
                format!("{:?}", s.status).to_lowercase(),
                s.rules,
                s.read_ms,
                s.parse_ms,
                s.command,
                s.reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )
        })
        .collect();
    let alternatives = "switch kube-proxy to nftables mode (GA in Kubernetes 1.33; `mode: nftables` in the KubeProxyConfiguration, \
         kernel 5.13+): its verdict map finds a Service in one lookup whatever their number; IPVS mode also hashes, but is in maintenance";
    let bench = "measured in podprobe's lab (bench/services.md): at 30,000 Services a new connection's first packet to a Service \
         halfway down KUBE-SERVICES took about 250 us (p50) in iptables mode against about 20 us through nftables mode's verdict map";
    let (status, summary, remedy, refs): (Status, String, Vec<String>, Vec<&str>) = match mode {
        ProxyMode::Iptables if backends.len() > 1 => (
            Status::Warn,
            format!("iptables mode with rules in both backends ({}): {counts}", backends.join(" and ")),
            vec![
                "kube-proxy's rules are in both iptables-legacy and iptables-nft: the kernel runs both, and the tools on the node show only one; \
                 remove the stale set (kube-proxy --cleanup with the other backend's iptables, or reboot) and align the node's iptables with kube-proxy's"
                    .to_string(),
            ],
            vec!["https://github.com/kubernetes-sigs/iptables-wrappers"],
        ),
        ProxyMode::Iptables if services > IPTABLES_SERVICES_WARN => (
            Status::Warn,
            format!(
                "iptables mode ({}) with {counts}: a new connection's first packet walks up to {} rules in KUBE-SERVICES, one by one",
                backends.join(", "),
                walk.unwrap_or(services)
            ),
            vec![alternatives.to_string(), bench.to_string()],
            vec!["https://kubernetes.io/blog/2025/02/28/nftables-kube-proxy/"],
        ),
        ProxyMode::Iptables => (
            Status::Pass,
            format!("iptables mode ({}) with {counts}", backends.join(", ")),
            vec![],
            vec![],
        ),
        ProxyMode::Ipvs => (
            Status::Pass,
            format!("IPVS mode with {counts}"),
            vec![],
            vec![],
        ),
        ProxyMode::Nftables => (
            Status::Pass,
            format!("nftables mode with {counts}: Services found through the service-ips verdict map"),
            vec![],
            vec![],
        ),
        ProxyMode::Mixed => (
            Status::Warn,
            format!("rules of more than one kube-proxy mode are programmed: {counts}"),
            vec![
                "a mode switch left the old mode's rules behind, or two proxies run: the first matching rule wins; \
                 clean up with `kube-proxy --cleanup` (run with the old mode's settings) and check that one kube-proxy runs per node"
                    .to_string(),
            ],
            vec![],
        ),
        ProxyMode::None if !rules.complete() => {
            return Check::skipped(
                ID,
                TITLE,
                format!("no kube-proxy rules among those read, and not every source was read: {}", rules.why_unreadable()),
            )
        }
        ProxyMode::None => match &replaced_by {
            Some(by) => (
                Status::Pass,
                format!("no kube-proxy rules: Services are implemented by {by} (kube-proxy replacement)"),
                vec![],
                vec![],
            ),
            None => (
                Status::Warn,
                "no kube-proxy rules found (iptables, IPVS or nftables): ClusterIP Services do not work through this node unless something else implements them"
                    .to_string(),
                vec![
                    "check that kube-proxy runs on this node (`kubectl -n kube-system get pods -o wide | grep kube-proxy`) and its logs for sync errors"
                        .to_string(),
                ],
                vec![],
            ),
        },
    };
    Check::new(ID, TITLE, status, summary, &evidence)
        .with_details(details)
        .with_remedy(remedy)
        .with_refs(&refs)
}

#[derive(Debug, Clone, Serialize)]
struct SnatEvidence<'a> {
    rules: &'a [SnatRule],
    without_random_fully: usize,
}

pub fn snat(rules: &RulesEvidence) -> Check {
    const ID: &str = "node.snat";
    const TITLE: &str = "SNAT port allocation";
    if !rules.readable() {
        return Check::skipped(
            ID,
            TITLE,
            format!("no ruleset readable: {}", rules.why_unreadable()),
        );
    }
    let all = &rules.facts.snat;
    let weak: Vec<&SnatRule> = all.iter().filter(|r| !r.fully_random).collect();
    let evidence = SnatEvidence {
        rules: all,
        without_random_fully: weak.len(),
    };
    let describe = |r: &SnatRule| {
        format!(
            "{} {} in {}/{} ({}): {}",
            if r.fully_random {
                "fully-random"
            } else if r.random {
                "random (hashed)"
            } else {
                "sequential ports"
            },
            r.action,
            r.at.table,
            r.at.chain,
            r.owner,
            r.at.rule
        )
    };
    let details: Vec<String> = all.iter().map(describe).collect();
    if weak.is_empty() && !rules.complete() {
        return Check::skipped(
            ID,
            TITLE,
            format!(
                "{} MASQUERADE/SNAT rules read, all fully-random, but not every source was read: {}",
                all.len(),
                rules.why_unreadable()
            ),
        );
    }
    if all.is_empty() {
        return Check::new(
            ID,
            TITLE,
            Status::Pass,
            "no MASQUERADE or SNAT rules: traffic leaves this node with the pods' own addresses",
            &evidence,
        );
    }
    if weak.is_empty() {
        return Check::new(
            ID,
            TITLE,
            Status::Pass,
            format!("{} MASQUERADE/SNAT rules, all fully-random", all.len()),
            &evidence,
        )
        .with_details(details);
    }
    let owners: Vec<&str> = {
        let mut o: Vec<&str> = weak.iter().map(|r| r.owner.as_str()).collect();
        o.sort();
        o.dedup();
        o
    };
    Check::new(
        ID,
        TITLE,
        Status::Warn,
        format!(
            "{} of {} MASQUERADE/SNAT rules lack --random-fully ({}): parallel connections to one destination can pick the same source port and one is dropped (conntrack insert_failed)",
            weak.len(),
            all.len(),
            owners.join(", ")
        ),
        &evidence,
    )
    .with_details(details)
    .with_remedy([
        "use fully random source ports: iptables `-j MASQUERADE --random-fully` (iptables 1.6.2+, kernel 3.14+), nft `masquerade fully-random`; \
         kube-proxy, flannel and Calico add it when the iptables they run supports it, so an old iptables in their image or on the node is the usual cause: \
         upgrade the component that wrote the rule (its owner above)"
            .to_string(),
    ])
    .with_refs(&["https://tech.xing.com/a-reason-for-unexplained-connection-timeouts-on-kubernetes-docker-abd041cf7e02"])
}

#[derive(Debug, Clone, Serialize)]
struct InvalidEvidence<'a> {
    drop_rules: &'a [RuleRef],
    tcp_be_liberal: Option<bool>,
    invalid_per_s: Option<f64>,
}

pub fn conntrack_invalid(
    rules: &RulesEvidence,
    tcp_be_liberal: Option<bool>,
    conntrack: Option<&ConntrackEvidence>,
) -> Check {
    const ID: &str = "node.conntrack-invalid";
    const TITLE: &str = "INVALID packets kept from pods";
    let drops = &rules.facts.invalid_drops;
    let invalid_per_s = conntrack.and_then(|c| c.rates_per_s.get("invalid").copied());
    let evidence = InvalidEvidence {
        drop_rules: drops,
        tcp_be_liberal,
        invalid_per_s,
    };
    let details: Vec<String> = drops
        .iter()
        .map(|r| format!("{} {}/{}: {}", r.source, r.table, r.chain, r.rule))
        .collect();
    if tcp_be_liberal == Some(true) {
        return Check::new(
            ID,
            TITLE,
            Status::Pass,
            "nf_conntrack_tcp_be_liberal=1: out-of-window TCP segments are not marked INVALID",
            &evidence,
        )
        .with_details(details);
    }
    if !drops.is_empty() {
        return Check::new(
            ID,
            TITLE,
            Status::Pass,
            format!(
                "INVALID packets are dropped in the forward path ({} rule(s), e.g. {}/{})",
                drops.len(),
                drops[0].table,
                drops[0].chain
            ),
            &evidence,
        )
        .with_details(details);
    }
    if !rules.readable() {
        return Check::skipped(
            ID,
            TITLE,
            format!(
                "nf_conntrack_tcp_be_liberal is off and the ruleset is not readable: {}",
                rules.why_unreadable()
            ),
        );
    }
    let rate = invalid_per_s
        .filter(|r| *r > 0.0)
        .map(|r| format!("; conntrack marks {r:.2} packets/s INVALID here"))
        .unwrap_or_default();
    Check::new(
        ID,
        TITLE,
        Status::Warn,
        format!(
            "no INVALID drop rule in the forward path and nf_conntrack_tcp_be_liberal=0{rate}: a reply conntrack marks INVALID skips the Service's reverse NAT, \
             reaches the client from the pod's own address and is answered with a RST (intermittent `connection reset by peer` under load)"
        ),
        &evidence,
    )
    .with_remedy([
        "drop INVALID packets before they reach pods, as kube-proxy's iptables mode does: \
         iptables -I FORWARD -m conntrack --ctstate INVALID -j DROP (kakao/network-node-manager maintains it on every node)"
            .to_string(),
        "or stop marking out-of-window segments INVALID: sysctl -w net.netfilter.nf_conntrack_tcp_be_liberal=1 \
         (kube-proxy --conntrack-tcp-be-liberal; what kube-proxy's nftables mode expects, kubernetes#117924)"
            .to_string(),
    ])
    .with_refs(&[
        "https://github.com/kubernetes/kubernetes/issues/74839",
        "https://kubernetes.io/blog/2019/03/29/kube-proxy-subtleties-debugging-an-intermittent-connection-reset/",
        "https://github.com/kubernetes/kubernetes/issues/117924",
    ])
}

/// NodeLocal DNSCache as found on the node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeLocal {
    pub address: String,
    pub interface: String,
    pub probe: DnsProbe,
}

#[derive(Debug, Clone, Serialize)]
struct DnsCacheEvidence<'a> {
    present: bool,
    nodelocal: Option<&'a NodeLocal>,
    notrack_rules: Vec<&'a NotrackRule>,
    insert_failed_per_s: Option<f64>,
    udp_dns_flows: Option<u64>,
}

pub fn dns_cache(
    nodelocal: Option<&NodeLocal>,
    rules: &RulesEvidence,
    conntrack: Option<&ConntrackEvidence>,
) -> Check {
    const ID: &str = "node.dns-cache";
    const TITLE: &str = "NodeLocal DNSCache";
    let insert_failed = conntrack.and_then(|c| c.increases.get("insert_failed").copied());
    let mut evidence = DnsCacheEvidence {
        present: nodelocal.is_some(),
        nodelocal,
        notrack_rules: Vec::new(),
        insert_failed_per_s: conntrack.and_then(|c| c.rates_per_s.get("insert_failed").copied()),
        udp_dns_flows: conntrack.and_then(|c| c.udp_dns_flows),
    };
    let refs = ["https://kubernetes.io/docs/tasks/administer-cluster/nodelocaldns/"];
    let Some(cache) = nodelocal else {
        return match insert_failed {
            Some(n) if n > 0 => Check::new(
                ID,
                TITLE,
                Status::Warn,
                format!(
                    "not installed, and conntrack insert_failed grew by {n} during the sample{}: pods' DNS queries race into the table and are dropped (5 s lookups)",
                    evidence
                        .udp_dns_flows
                        .map(|f| format!(" with {f} UDP flows to port 53 in the table"))
                        .unwrap_or_default()
                ),
                &evidence,
            )
            .with_remedy([format!(
                "deploy NodeLocal DNSCache: a cache on every node at {NODELOCAL_ADDRESS} whose NOTRACK rules keep pods' queries out of conntrack, \
                 and which talks to CoreDNS over TCP"
            )])
            .with_refs(&refs),
            Some(_) => Check::new(
                ID,
                TITLE,
                Status::Pass,
                "not installed; conntrack shows no insert failures now, so DNS is not racing into the table",
                &evidence,
            ),
            None => Check::skipped(
                ID,
                TITLE,
                "NodeLocal DNSCache is not installed, and the conntrack counters that would show whether it is needed are not readable",
            ),
        };
    };
    let ip = cache.address.as_str();
    let covers = |r: &&NotrackRule| {
        let is_cache =
            |a: &Option<String>| a.as_deref().map(|a| a.trim_end_matches("/32")) == Some(ip);
        (is_cache(&r.destination) && r.destination_port == Some(53))
            || (is_cache(&r.source_address) && r.source_port == Some(53))
    };
    evidence.notrack_rules = rules.facts.notrack.iter().filter(covers).collect();
    let to_cache = evidence.notrack_rules.iter().any(|r| {
        r.destination_port == Some(53) && r.protocol.as_deref().is_none_or(|p| p == "udp")
    });
    let answers = !matches!(cache.probe.rcode.as_str(), "TIMEOUT" | "UNREACHABLE");
    let at = format!("{ip} on {}", cache.interface);
    let details = evidence
        .notrack_rules
        .iter()
        .map(|r| format!("NOTRACK {}/{}: {}", r.at.table, r.at.chain, r.at.rule))
        .collect::<Vec<_>>();
    if !answers {
        return Check::new(
            ID,
            TITLE,
            Status::Fail,
            format!(
                "NodeLocal DNSCache's address {at} does not answer DNS ({} after {:.0} ms): pods pointed at it get no answers",
                cache.probe.rcode, cache.probe.latency_ms
            ),
            &evidence,
        )
        .with_details(details)
        .with_remedy(["check the node-local-dns pod on this node (`kubectl -n kube-system get pods -o wide -l k8s-app=node-local-dns`) and its logs".to_string()])
        .with_refs(&refs);
    }
    if !rules.readable() {
        return Check::new(
            ID,
            TITLE,
            Status::Pass,
            format!(
                "NodeLocal DNSCache answers at {at} ({} in {:.1} ms); its NOTRACK rules could not be checked: {}",
                cache.probe.rcode,
                cache.probe.latency_ms,
                rules.why_unreadable()
            ),
            &evidence,
        );
    }
    if !to_cache {
        return Check::new(
            ID,
            TITLE,
            Status::Warn,
            format!(
                "NodeLocal DNSCache answers at {at}, but no NOTRACK rule exempts UDP/53 to it from conntrack: queries still race into the table"
            ),
            &evidence,
        )
        .with_details(details)
        .with_remedy([format!(
            "restore node-local-dns's raw-table rules (it adds them unless started with -setupiptables=false): \
             iptables -t raw -A PREROUTING -d {ip}/32 -p udp --dport 53 -j NOTRACK (and tcp, and OUTPUT -s {ip} --sport 53)"
        )])
        .with_refs(&refs);
    }
    Check::new(
        ID,
        TITLE,
        Status::Pass,
        format!(
            "NodeLocal DNSCache at {at} answers ({} in {:.1} ms) and {} NOTRACK rule(s) keep its queries out of conntrack",
            cache.probe.rcode,
            cache.probe.latency_ms,
            evidence.notrack_rules.len()
        ),
        &evidence,
    )
    .with_details(details)
}

pub fn cni(evidence: &CniEvidence) -> Check {
    const ID: &str = "node.cni";
    const TITLE: &str = "CNI and pod MTU";
    let named = if evidence.cnis.is_empty() {
        "no known CNI".to_string()
    } else {
        evidence.cnis.join(" + ")
    };
    let tools: Vec<String> = if evidence.cnis.is_empty() {
        vec![format!("to see drops: {}", cni::drop_tool(""))]
    } else {
        evidence
            .cnis
            .iter()
            .map(|c| format!("to see drops: {}", cni::drop_tool(c)))
            .collect()
    };
    let path = match (&evidence.uplink, evidence.overlays.first()) {
        (Some(u), Some(o)) => format!(
            "uplink {} mtu {} - {} {} overhead {} = pod MTU up to {}",
            u.name,
            u.mtu.map_or("?".into(), |m| m.to_string()),
            o.kind,
            o.name,
            o.overhead,
            evidence.max_pod_mtu.map_or("?".into(), |m| m.to_string())
        ),
        (Some(u), None) => format!(
            "uplink {} mtu {} ({}), no overlay",
            u.name,
            u.mtu.map_or("?".into(), |m| m.to_string()),
            u.found_by
        ),
        (None, Some(o)) => format!(
            "overlay {} ({}) mtu {:?}, uplink unknown",
            o.name, o.kind, o.mtu
        ),
        (None, None) => "no uplink found (no default route), no overlay".to_string(),
    };
    let mtus: Vec<u32> = evidence
        .pod_interfaces
        .iter()
        .filter_map(|p| p.mtu)
        .collect();
    let pods = match (mtus.iter().min(), mtus.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => format!("{} pod interfaces at mtu {lo}", mtus.len()),
        (Some(lo), Some(hi)) => format!("{} pod interfaces at mtu {lo}..{hi}", mtus.len()),
        _ => "no pod interfaces".to_string(),
    };
    let mut details = vec![format!("found by: {}", evidence.signals.join(", ")), path];
    details.extend(tools.clone());
    if evidence.oversized.is_empty() {
        return Check::new(
            ID,
            TITLE,
            Status::Pass,
            format!("{named}; {pods}"),
            evidence,
        )
        .with_details(details)
        .with_remedy(tools);
    }
    let names: Vec<String> = evidence
        .oversized
        .iter()
        .take(5)
        .map(|p| format!("{} ({})", p.name, p.mtu.unwrap_or(0)))
        .collect();
    let mut remedy = vec![format!(
        "set the pods' MTU to {} or less in the CNI's configuration (Calico: FelixConfiguration mtu / vxlanMTU; Cilium: --mtu; flannel: derived from the uplink) \
         and recreate the pods; or raise the uplink's MTU (jumbo frames) so the overlay fits",
        evidence.max_pod_mtu.unwrap_or(0)
    )];
    remedy.extend(tools);
    Check::new(
        ID,
        TITLE,
        Status::Warn,
        format!(
            "{named}: {} pod interface(s) have an MTU above the {} bytes the overlay carries ({}{}): large packets between nodes are dropped or fragmented, transfers stall",
            evidence.oversized.len(),
            evidence.max_pod_mtu.unwrap_or(0),
            names.join(", "),
            if evidence.oversized.len() > names.len() { ", ..." } else { "" }
        ),
        evidence,
    )
    .with_details(details)
    .with_remedy(remedy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::measure::{IpvsSummary, SourceReport, SourceStatus};
    use crate::node::rules::RuleFacts;

    fn readable(facts: RuleFacts) -> RulesEvidence {
        RulesEvidence {
            sources: vec![SourceReport {
                source: "iptables-nft".into(),
                command: "iptables-nft-save -t nat".into(),
                status: SourceStatus::Read,
                reason: None,
                rules: 10,
                read_ms: 1.0,
                parse_ms: 0.1,
            }],
            facts,
            ipvs: None,
        }
    }

    fn unreadable() -> RulesEvidence {
        RulesEvidence {
            sources: vec![SourceReport {
                source: "nftables".into(),
                command: "nft -j list chains".into(),
                status: SourceStatus::Unreadable,
                reason: Some(format!(
                    "Operation not permitted; needs {}",
                    crate::node::measure::RULES_PRIVILEGE
                )),
                rules: 0,
                read_ms: 0.0,
                parse_ms: 0.0,
            }],
            ..Default::default()
        }
    }

    fn ct(fill_pct: f64, grew: &[(&str, u64)]) -> ConntrackEvidence {
        let mut e = ConntrackEvidence {
            count: (fill_pct * 2621.44) as u64,
            max: 262_144,
            fill_pct,
            interval_s: 5.0,
            ..Default::default()
        };
        for name in crate::node::measure::CONNTRACK_COUNTERS {
            let n = grew.iter().find(|(k, _)| *k == name).map_or(0, |(_, v)| *v);
            e.increases.insert(name.into(), n);
            e.rates_per_s.insert(name.into(), n as f64 / 5.0);
        }
        e
    }

    #[test]
    fn conntrack_thresholds() {
        assert_eq!(conntrack(&Ok(ct(10.0, &[]))).status, Status::Pass);
        assert_eq!(conntrack(&Ok(ct(75.0, &[]))).status, Status::Warn);
        assert_eq!(conntrack(&Ok(ct(90.0, &[]))).status, Status::Fail);
        let racing = conntrack(&Ok(ct(1.0, &[("insert_failed", 4), ("drop", 4)])));
        assert_eq!(racing.status, Status::Warn, "{}", racing.summary);
        assert!(
            racing.summary.contains("insert_failed grew by 4"),
            "{}",
            racing.summary
        );
        assert!(racing
            .remedy
            .iter()
            .any(|r| r.contains("NodeLocal DNSCache")));
        let full = conntrack(&Ok(ct(99.0, &[("drop", 10), ("early_drop", 3)])));
        assert_eq!(full.status, Status::Fail);
        assert!(
            full.summary.contains("10 packets dropped"),
            "{}",
            full.summary
        );
        assert_eq!(
            conntrack(&Ok(ct(1.0, &[("early_drop", 1)]))).status,
            Status::Warn
        );
        // INVALID and search restarts alone are not a problem of the table.
        assert_eq!(
            conntrack(&Ok(ct(1.0, &[("invalid", 50), ("search_restart", 9)]))).status,
            Status::Pass
        );
        assert_eq!(conntrack(&Err("no such file".into())).status, Status::Skip);
    }

    fn iptables_kp(services: usize, source: &str) -> IptablesKubeProxy {
        IptablesKubeProxy {
            source: source.into(),
            services,
            services_chain_rules: services,
            endpoints: services,
            rules: Some(services * 4),
            ipvs_ipsets: false,
        }
    }

    #[test]
    fn kube_proxy_modes_and_the_iptables_threshold() {
        let small = readable(RuleFacts {
            kube_proxy_iptables: vec![iptables_kp(5, "iptables-nft")],
            ..Default::default()
        });
        let check = kube_proxy(&small, false, &[]);
        assert_eq!(check.status, Status::Pass);
        assert_eq!(check.evidence["mode"], "iptables");
        assert_eq!(check.evidence["iptables_backends"][0], "nft");
        let big = readable(RuleFacts {
            kube_proxy_iptables: vec![iptables_kp(1001, "iptables-legacy")],
            ..Default::default()
        });
        let check = kube_proxy(&big, false, &[]);
        assert_eq!(check.status, Status::Warn);
        assert!(
            check.summary.contains("walks up to 1001 rules"),
            "{}",
            check.summary
        );
        assert!(check.remedy[0].contains("nftables mode"));
        let both = readable(RuleFacts {
            kube_proxy_iptables: vec![
                iptables_kp(5, "iptables-nft"),
                iptables_kp(5, "iptables-legacy"),
            ],
            ..Default::default()
        });
        assert!(kube_proxy(&both, false, &[])
            .summary
            .contains("both backends"));
        let nft = readable(RuleFacts {
            kube_proxy_nftables: vec![NftKubeProxy {
                family: "ip".into(),
                services: 30_000,
                endpoints: 30_000,
                service_ips: Some(30_000),
                rules: None,
            }],
            ..Default::default()
        });
        let check = kube_proxy(&nft, false, &[]);
        assert_eq!(check.status, Status::Pass);
        assert_eq!(check.evidence["mode"], "nftables");
        let mut ipvs = readable(RuleFacts {
            kube_proxy_iptables: vec![IptablesKubeProxy {
                ipvs_ipsets: true,
                ..iptables_kp(0, "iptables-nft")
            }],
            ..Default::default()
        });
        ipvs.ipvs = Some(IpvsSummary {
            virtual_services: 3,
            real_servers: 3,
        });
        let check = kube_proxy(&ipvs, true, &[]);
        assert_eq!(check.evidence["mode"], "ipvs");
        assert!(check.summary.contains("3 Services"), "{}", check.summary);
        let none = readable(RuleFacts::default());
        assert_eq!(kube_proxy(&none, false, &[]).status, Status::Warn);
        let cilium = kube_proxy(&none, false, &["cilium".to_string()]);
        assert_eq!(cilium.status, Status::Pass);
        assert!(cilium.summary.contains("cilium"));
        let skipped = kube_proxy(&unreadable(), false, &[]);
        assert_eq!(skipped.status, Status::Skip);
        assert!(
            skipped.summary.contains("CAP_NET_ADMIN"),
            "{}",
            skipped.summary
        );
    }

    fn snat_rule(fully_random: bool, random: bool, owner: &str) -> SnatRule {
        SnatRule {
            at: RuleRef {
                source: "iptables-nft".into(),
                table: "nat".into(),
                chain: "POSTROUTING".into(),
                rule: "-A POSTROUTING -s 10.244.0.0/16 -j MASQUERADE".into(),
            },
            action: "MASQUERADE".into(),
            fully_random,
            random,
            owner: owner.into(),
        }
    }

    #[test]
    fn snat_wants_fully_random_everywhere() {
        let ok = readable(RuleFacts {
            snat: vec![snat_rule(true, false, "kube-proxy")],
            ..Default::default()
        });
        assert_eq!(snat(&ok).status, Status::Pass);
        let weak = readable(RuleFacts {
            snat: vec![
                snat_rule(true, false, "kube-proxy"),
                snat_rule(false, true, "calico"),
            ],
            ..Default::default()
        });
        let check = snat(&weak);
        assert_eq!(check.status, Status::Warn);
        assert!(check.summary.starts_with("1 of 2"), "{}", check.summary);
        assert!(check.summary.contains("calico"));
        assert_eq!(snat(&readable(RuleFacts::default())).status, Status::Pass);
        assert_eq!(snat(&unreadable()).status, Status::Skip);
    }

    #[test]
    fn invalid_needs_a_drop_rule_or_be_liberal() {
        let rule = RuleRef {
            source: "iptables-nft".into(),
            table: "filter".into(),
            chain: "KUBE-FORWARD".into(),
            rule: "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP".into(),
        };
        let with_rule = readable(RuleFacts {
            invalid_drops: vec![rule],
            ..Default::default()
        });
        assert_eq!(
            conntrack_invalid(&with_rule, Some(false), None).status,
            Status::Pass
        );
        let without = readable(RuleFacts::default());
        let check = conntrack_invalid(&without, Some(false), Some(&ct(1.0, &[("invalid", 10)])));
        assert_eq!(check.status, Status::Warn);
        assert!(
            check.summary.contains("2.00 packets/s INVALID"),
            "{}",
            check.summary
        );
        assert_eq!(
            conntrack_invalid(&without, Some(true), None).status,
            Status::Pass
        );
        assert_eq!(
            conntrack_invalid(&unreadable(), Some(false), None).status,
            Status::Skip
        );
        assert_eq!(
            conntrack_invalid(&unreadable(), Some(true), None).status,
            Status::Pass
        );
    }

    fn nodelocal(rcode: &str) -> NodeLocal {
        NodeLocal {
            address: NODELOCAL_ADDRESS.into(),
            interface: "nodelocaldns".into(),
            probe: DnsProbe {
                server: "169.254.20.10:53".parse().unwrap(),
                rcode: rcode.into(),
                latency_ms: 0.4,
            },
        }
    }

    fn notrack(dst: &str) -> NotrackRule {
        NotrackRule {
            at: RuleRef {
                source: "iptables-nft".into(),
                table: "raw".into(),
                chain: "PREROUTING".into(),
                rule: format!("-A PREROUTING -d {dst} -p udp -m udp --dport 53 -j NOTRACK"),
            },
            destination: Some(dst.into()),
            source_address: None,
            protocol: Some("udp".into()),
            destination_port: Some(53),
            source_port: None,
        }
    }

    #[test]
    fn dns_cache_present_tracked_silent_or_needed() {
        let with_notrack = readable(RuleFacts {
            notrack: vec![notrack("169.254.20.10/32")],
            ..Default::default()
        });
        let cache = nodelocal("NOERROR");
        assert_eq!(
            dns_cache(Some(&cache), &with_notrack, None).status,
            Status::Pass
        );
        let other_notrack = readable(RuleFacts {
            notrack: vec![notrack("10.0.0.1/32")],
            ..Default::default()
        });
        assert_eq!(
            dns_cache(Some(&cache), &other_notrack, None).status,
            Status::Warn
        );
        assert_eq!(
            dns_cache(Some(&nodelocal("TIMEOUT")), &with_notrack, None).status,
            Status::Fail
        );
        let none = readable(RuleFacts::default());
        assert_eq!(
            dns_cache(None, &none, Some(&ct(1.0, &[]))).status,
            Status::Pass
        );
        let racing = dns_cache(None, &none, Some(&ct(1.0, &[("insert_failed", 3)])));
        assert_eq!(racing.status, Status::Warn);
        assert!(racing.remedy[0].contains("169.254.20.10"));
        assert_eq!(dns_cache(None, &none, None).status, Status::Skip);
    }
}
