//! What the node checks need to know from a ruleset, derived from parsed
//! iptables dumps and nftables rulesets: kube-proxy's layout and size,
//! source NAT rules, INVALID drop rules, NOTRACK rules and which CNI wrote
//! chains. Pure: parsed input in, serializable facts out.

use std::collections::BTreeSet;

use serde::Serialize;

use super::iptables::{self, Backend};
use super::nft;

/// Where a rule lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// `iptables-nft`, `iptables-legacy`, `ip6tables-nft`, ... or `nftables`.
    pub source: String,
    pub table: String,
    pub chain: String,
    /// The rule as iptables-save writes it, or nft's statements as JSON.
    pub rule: String,
}

/// kube-proxy's rules found in one iptables backend and family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IptablesKubeProxy {
    pub source: String,
    /// Service ports with endpoints (`KUBE-SVC-*` chains).
    pub services: usize,
    /// Rules in nat `KUBE-SERVICES`: what a Service's first packet walks, one by one.
    pub services_chain_rules: usize,
    /// Endpoints (`KUBE-SEP-*` chains).
    pub endpoints: usize,
    /// Rules in kube-proxy's chains (`KUBE-*`), when the whole nat table was read.
    pub rules: Option<usize>,
    /// KUBE-SERVICES matches ipsets (`KUBE-CLUSTER-IP`): IPVS mode.
    pub ipvs_ipsets: bool,
}

/// kube-proxy's `kube-proxy` nftables table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NftKubeProxy {
    pub family: String,
    /// Service ports (`service-*` chains).
    pub services: usize,
    pub endpoints: usize,
    /// Elements of the `service-ips` verdict map, when read.
    pub service_ips: Option<usize>,
    /// Rules in the table, when the table was read whole.
    pub rules: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnatRule {
    #[serde(flatten)]
    pub at: RuleRef,
    /// `MASQUERADE`, `SNAT`, `masquerade`, `snat`.
    pub action: String,
    pub fully_random: bool,
    /// `--random` / `random`: a hashed port offset, still open to the race.
    pub random: bool,
    /// Who wrote it, from its chain or comment: kube-proxy, calico, flannel, ...
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotrackRule {
    #[serde(flatten)]
    pub at: RuleRef,
    pub destination: Option<String>,
    pub source_address: Option<String>,
    pub protocol: Option<String>,
    pub destination_port: Option<u16>,
    pub source_port: Option<u16>,
}

/// Everything the checks learn from rules, merged over every source read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleFacts {
    pub kube_proxy_iptables: Vec<IptablesKubeProxy>,
    pub kube_proxy_nftables: Vec<NftKubeProxy>,
    pub snat: Vec<SnatRule>,
    pub invalid_drops: Vec<RuleRef>,
    pub notrack: Vec<NotrackRule>,
    /// CNIs whose chains or tables are present (`calico`, `cilium`, ...).
    pub cni_chains: BTreeSet<String>,
    /// Rules read, over every source.
    pub rules: usize,
}

impl RuleFacts {
    pub fn merge(&mut self, other: RuleFacts) {
        self.kube_proxy_iptables.extend(other.kube_proxy_iptables);
        self.kube_proxy_nftables.extend(other.kube_proxy_nftables);
        self.snat.extend(other.snat);
        self.invalid_drops.extend(other.invalid_drops);
        self.notrack.extend(other.notrack);
        self.cni_chains.extend(other.cni_chains);
        self.rules += other.rules;
    }
}

/// The name a source goes by: `iptables-nft`, `ip6tables-legacy`.
pub fn iptables_source(backend: Backend, ipv6: bool) -> String {
    format!(
        "{}-{}",
        if ipv6 { "ip6tables" } else { "iptables" },
        backend.name()
    )
}

/// Facts from one iptables dump. `nat_complete` is false when only some nat
/// chains were read (a node too large to save the whole table in time).
pub fn from_iptables(dump: &iptables::Dump, source: &str, nat_complete: bool) -> RuleFacts {
    let mut facts = RuleFacts {
        rules: dump.rule_count(),
        ..Default::default()
    };
    for table in &dump.tables {
        let chain_names = table
            .chains
            .iter()
            .map(|c| c.name)
            .chain(table.rules.iter().map(|r| r.chain));
        facts
            .cni_chains
            .extend(chain_names.filter_map(cni_of_chain).map(String::from));
        let rule_ref = |rule: &iptables::Rule| RuleRef {
            source: source.to_string(),
            table: table.name.to_string(),
            chain: rule.chain.to_string(),
            rule: rule.line.to_string(),
        };
        match table.name {
            "nat" => {
                if table.has_chain("KUBE-SERVICES") {
                    facts
                        .kube_proxy_iptables
                        .push(kube_proxy_of(table, source, nat_complete));
                }
                for rule in &table.rules {
                    let Some(action @ ("MASQUERADE" | "SNAT")) = rule.target() else {
                        continue;
                    };
                    facts.snat.push(SnatRule {
                        at: rule_ref(rule),
                        action: action.to_string(),
                        fully_random: rule.has("--random-fully"),
                        random: rule.has("--random"),
                        owner: owner(rule.chain, rule.comment()),
                    });
                }
            }
            "filter" | "mangle" => {
                let forward = table.reachable_from("FORWARD");
                facts.invalid_drops.extend(
                    table
                        .rules
                        .iter()
                        .filter(|r| forward.contains(r.chain))
                        .filter(|r| r.matches_ct_state("INVALID") && r.target() == Some("DROP"))
                        .map(rule_ref),
                );
            }
            "raw" => {
                for rule in &table.rules {
                    let notrack = rule.target() == Some("NOTRACK")
                        || (rule.target() == Some("CT") && rule.has("--notrack"));
                    if !notrack {
                        continue;
                    }
                    let port = |flag: &str| rule.value(flag).and_then(|p| p.parse().ok());
                    facts.notrack.push(NotrackRule {
                        at: rule_ref(rule),
                        destination: rule.value("-d").map(String::from),
                        source_address: rule.value("-s").map(String::from),
                        protocol: rule.value("-p").map(String::from),
                        destination_port: port("--dport"),
                        source_port: port("--sport"),
                    });
                }
            }
            _ => {}
        }
    }
    facts
}

fn kube_proxy_of(table: &iptables::Table, source: &str, complete: bool) -> IptablesKubeProxy {
    let mut svc = BTreeSet::new();
    let mut sep = BTreeSet::new();
    for name in table
        .chains
        .iter()
        .map(|c| c.name)
        .chain(table.rules.iter().map(|r| r.chain))
        .chain(table.rules.iter().filter_map(|r| r.jump()))
    {
        if name.starts_with("KUBE-SVC-") {
            svc.insert(name);
        } else if name.starts_with("KUBE-SEP-") {
            sep.insert(name);
        }
    }
    let services_chain: Vec<_> = table.rules_in("KUBE-SERVICES").collect();
    IptablesKubeProxy {
        source: source.to_string(),
        services: svc.len(),
        services_chain_rules: services_chain.len(),
        endpoints: sep.len(),
        rules: complete.then(|| {
            table
                .rules
                .iter()
                .filter(|r| r.chain.starts_with("KUBE-"))
                .count()
        }),
        ipvs_ipsets: services_chain.iter().any(|r| {
            r.value("--match-set")
                .is_some_and(|s| s.starts_with("KUBE-"))
        }),
    }
}

/// Facts from an nftables ruleset, skipping tables another source covers
/// (iptables-nft's tables, read through iptables-nft-save).
pub fn from_nft(ruleset: &nft::Ruleset, skip: &dyn Fn(&nft::Table) -> bool) -> RuleFacts {
    let mut facts = RuleFacts::default();
    for table in ruleset.tables.iter().filter(|t| !skip(t)) {
        facts.rules += table.rules.len();
        if let Some(cni) = cni_of_table(&table.name) {
            facts.cni_chains.insert(cni.to_string());
        }
        facts.cni_chains.extend(
            table
                .chains
                .iter()
                .filter_map(|c| cni_of_chain(&c.name))
                .map(String::from),
        );
        if table.name == "kube-proxy" {
            facts.kube_proxy_nftables.push(NftKubeProxy {
                family: table.family.clone(),
                services: count_prefix(table, "service-"),
                endpoints: count_prefix(table, "endpoint-"),
                service_ips: table.set("service-ips").map(|s| s.elements),
                rules: Some(table.rules.len()),
            });
        }
        let forward = table.reachable_from_hook("forward");
        for rule in &table.rules {
            let rule_ref = || RuleRef {
                source: "nftables".to_string(),
                table: format!("{} {}", table.family, table.name),
                chain: rule.chain.clone(),
                rule: serde_json::to_string(&rule.expr).unwrap_or_default(),
            };
            if let Some((action, flags)) = rule.nat_source() {
                facts.snat.push(SnatRule {
                    at: rule_ref(),
                    action: action.to_string(),
                    // nft writes `fully-random`; some versions spelt it `random-fully`.
                    fully_random: flags
                        .iter()
                        .any(|f| f == "fully-random" || f == "random-fully"),
                    random: flags.iter().any(|f| f == "random"),
                    owner: if table.name == "kube-proxy" {
                        "kube-proxy".to_string()
                    } else {
                        owner(&rule.chain, None)
                    },
                });
            }
            if forward.contains(rule.chain.as_str())
                && rule.matches_ct_state("invalid")
                && rule.has_verdict("drop")
            {
                facts.invalid_drops.push(rule_ref());
            }
            if rule.has_notrack() {
                let text = |field: &str| {
                    rule.compared(field).first().and_then(|v| match v {
                        serde_json::Value::String(s) => Some(s.clone()),
                        _ => None,
                    })
                };
                let port = |field: &str| {
                    rule.compared(field)
                        .first()
                        .and_then(|v| v.as_u64())
                        .and_then(|p| u16::try_from(p).ok())
                };
                facts.notrack.push(NotrackRule {
                    at: rule_ref(),
                    destination: text("daddr"),
                    source_address: text("saddr"),
                    protocol: rule.port_protocol().map(String::from),
                    destination_port: port("dport"),
                    source_port: port("sport"),
                });
            }
        }
    }
    facts
}

/// kube-proxy's table when only its chain names and service map could be
/// listed in time (nft lists a 30,000-Service table in about a minute).
pub fn nft_kube_proxy_partial(chains: &nft::Table, service_ips: Option<usize>) -> NftKubeProxy {
    NftKubeProxy {
        family: chains.family.clone(),
        services: count_prefix(chains, "service-"),
        endpoints: count_prefix(chains, "endpoint-"),
        service_ips,
        rules: None,
    }
}

/// kube-proxy's per-Service chains: `service-ULMVA6XW-ns1/svc1/tcp/p80`
/// (its fixed chains, like `service-endpoints-check`, have no slash).
fn count_prefix(table: &nft::Table, prefix: &str) -> usize {
    table
        .chains
        .iter()
        .filter(|c| c.name.starts_with(prefix) && c.name.contains('/'))
        .count()
}

/// The component that writes chains named like this.
pub fn cni_of_chain(chain: &str) -> Option<&'static str> {
    const PREFIXES: [(&str, &str); 9] = [
        ("cali-", "calico"),
        ("CILIUM_", "cilium"),
        ("FLANNEL-", "flannel"),
        ("WEAVE", "weave"),
        ("KUBE-ROUTER", "kube-router"),
        ("ANTREA", "antrea"),
        ("AWS-SNAT-CHAIN", "aws-vpc-cni"),
        ("OVN-KUBE", "ovn-kubernetes"),
        ("CNI-", "cni-plugins"),
    ];
    PREFIXES
        .iter()
        .find(|(prefix, _)| chain.starts_with(prefix))
        .map(|(_, cni)| *cni)
}

fn cni_of_table(table: &str) -> Option<&'static str> {
    match table {
        "calico" => Some("calico"),
        "cilium" => Some("cilium"),
        "flannel" => Some("flannel"),
        "antrea" => Some("antrea"),
        _ => None,
    }
}

/// Who wrote a rule, from its chain and comment.
fn owner(chain: &str, comment: Option<&str>) -> String {
    if chain.starts_with("KUBE-") {
        return "kube-proxy".to_string();
    }
    if chain.starts_with("IP-MASQ") {
        return "ip-masq-agent".to_string();
    }
    if let Some(cni) = cni_of_chain(chain) {
        return cni.to_string();
    }
    let comment = comment.unwrap_or_default().to_ascii_lowercase();
    for (word, who) in [
        ("cali:", "calico"),
        ("flannel", "flannel"),
        ("cilium", "cilium"),
        ("ip-masq", "ip-masq-agent"),
        ("kube", "kube-proxy"),
    ] {
        if comment.contains(word) {
            return who.to_string();
        }
    }
    "unknown".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NFT_SAVE: &str = include_str!("../../tests/fixtures/node/kube-proxy-iptables-nft.save");
    const NFT_JSON: &str = include_str!("../../tests/fixtures/node/kube-proxy-nftables.json");

    #[test]
    fn kube_proxy_iptables_layout_is_counted() {
        let dump = iptables::parse(NFT_SAVE, "filter").unwrap();
        let facts = from_iptables(&dump, "iptables-nft", true);
        assert_eq!(
            facts.kube_proxy_iptables,
            vec![IptablesKubeProxy {
                source: "iptables-nft".into(),
                services: 5,
                services_chain_rules: 10,
                endpoints: 6,
                rules: Some(dump.table("nat").unwrap().rules.len()),
                ipvs_ipsets: false,
            }]
        );
        assert_eq!(
            facts.invalid_drops.len(),
            0,
            "KUBE-FORWARD is not jumped to from FORWARD here"
        );
        assert_eq!(facts.snat.len(), 1);
        assert_eq!(facts.snat[0].owner, "kube-proxy");
        assert!(!facts.snat[0].fully_random);
        assert_eq!(facts.rules, dump.rule_count());
    }

    #[test]
    fn invalid_drop_counts_only_when_forward_reaches_it() {
        let text = format!(
            "{}*filter\n:FORWARD ACCEPT [0:0]\n:KUBE-FORWARD - [0:0]\n-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n",
            ""
        );
        let dump = iptables::parse(&text, "filter").unwrap();
        let facts = from_iptables(&dump, "iptables-nft", true);
        assert_eq!(facts.invalid_drops.len(), 1);
        assert_eq!(facts.invalid_drops[0].chain, "KUBE-FORWARD");
    }

    #[test]
    fn nodelocal_dns_notrack_and_cni_snat() {
        let text = "*raw\n\
            -A PREROUTING -d 169.254.20.10/32 -p udp -m udp --dport 53 -j NOTRACK\n\
            -A OUTPUT -s 169.254.20.10/32 -p tcp -m tcp --sport 53 -j NOTRACK\n\
            COMMIT\n*nat\n:cali-nat-outgoing - [0:0]\n\
            -A cali-nat-outgoing -m comment --comment \"cali:flqWnvo8yq4ULQLa\" -m set --match-set cali40masq-ipam-pools src -j MASQUERADE --random-fully\n\
            -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE\n\
            COMMIT\n";
        let dump = iptables::parse(text, "filter").unwrap();
        let facts = from_iptables(&dump, "iptables-legacy", true);
        assert_eq!(facts.notrack.len(), 2);
        assert_eq!(
            facts.notrack[0].destination.as_deref(),
            Some("169.254.20.10/32")
        );
        assert_eq!(facts.notrack[0].destination_port, Some(53));
        assert_eq!(facts.notrack[1].source_port, Some(53));
        assert_eq!(facts.snat.len(), 2);
        assert_eq!(facts.snat[0].owner, "calico");
        assert!(facts.snat[0].fully_random);
        assert_eq!(facts.snat[1].owner, "unknown");
        assert!(facts.cni_chains.contains("calico"));
        assert!(facts.kube_proxy_iptables.is_empty());
    }

    #[test]
    fn kube_proxy_nftables_table_is_counted() {
        let ruleset = nft::parse(NFT_JSON).unwrap();
        let facts = from_nft(&ruleset, &|_| false);
        assert_eq!(
            facts.kube_proxy_nftables,
            vec![NftKubeProxy {
                family: "ip".into(),
                services: 5,
                endpoints: 6,
                service_ips: Some(9),
                rules: Some(57),
            }]
        );
        assert_eq!(facts.snat.len(), 1);
        assert!(facts.snat[0].fully_random);
        assert_eq!(facts.snat[0].owner, "kube-proxy");
        assert!(facts.invalid_drops.is_empty());
        let skipped = from_nft(&ruleset, &|t| t.name == "kube-proxy");
        assert!(skipped.kube_proxy_nftables.is_empty());
    }
}
