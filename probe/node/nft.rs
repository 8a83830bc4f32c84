//! `nft -j list ruleset` (libnftables' JSON, schema version 1), parsed into
//! tables, chains, rules and sets, with the questions the node checks ask of
//! a rule's statements. Pure.

use std::collections::{HashMap, HashSet};

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Default)]
pub struct Ruleset {
    pub tables: Vec<Table>,
}

#[derive(Debug, Default)]
pub struct Table {
    /// `ip`, `ip6`, `inet`, `arp`, `bridge`, `netdev`.
    pub family: String,
    pub name: String,
    pub chains: Vec<Chain>,
    pub rules: Vec<Rule>,
    pub sets: Vec<Set>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    /// A base chain's hook (`prerouting`, `forward`, ...); `None` for a
    /// regular chain reached only by jumps.
    pub hook: Option<String>,
}

#[derive(Debug)]
pub struct Rule {
    pub chain: String,
    pub expr: Vec<Value>,
}

/// A named set or map, with its element count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub is_map: bool,
    pub elements: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("not nft JSON: {0}")]
pub struct ParseError(String);

#[derive(Deserialize)]
struct Root {
    nftables: Vec<Item>,
}

/// Each array item is an object with one key naming its kind; other kinds
/// (metainfo, counters, flowtables, ...) are skipped.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Item {
    table: Option<TableItem>,
    chain: Option<ChainItem>,
    rule: Option<RuleItem>,
    set: Option<SetItem>,
    map: Option<SetItem>,
}

#[derive(Deserialize)]
struct TableItem {
    family: String,
    name: String,
}

#[derive(Deserialize)]
struct ChainItem {
    family: String,
    table: String,
    name: String,
    #[serde(default)]
    hook: Option<String>,
}

#[derive(Deserialize)]
struct RuleItem {
    family: String,
    table: String,
    chain: String,
    #[serde(default)]
    expr: Vec<Value>,
}

#[derive(Deserialize)]
struct SetItem {
    family: String,
    table: String,
    name: String,
    #[serde(default)]
    elem: Vec<IgnoredAny>,
}

/// Parses the output of `nft -j list ruleset` (or of `nft -j list table`,
/// `list chains`, `list map`: the same document with fewer objects).
pub fn parse(text: &str) -> Result<Ruleset, ParseError> {
    let root: Root = serde_json::from_str(text).map_err(|e| ParseError(e.to_string()))?;
    let mut tables: Vec<Table> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    let mut table_at = |tables: &mut Vec<Table>, family: String, name: String| -> usize {
        *index
            .entry((family.clone(), name.clone()))
            .or_insert_with(|| {
                tables.push(Table {
                    family,
                    name,
                    ..Default::default()
                });
                tables.len() - 1
            })
    };
    for item in root.nftables {
        if let Some(t) = item.table {
            table_at(&mut tables, t.family, t.name);
        }
        if let Some(c) = item.chain {
            let at = table_at(&mut tables, c.family, c.table);
            tables[at].chains.push(Chain {
                name: c.name,
                hook: c.hook,
            });
        }
        if let Some(r) = item.rule {
            let at = table_at(&mut tables, r.family, r.table);
            tables[at].rules.push(Rule {
                chain: r.chain,
                expr: r.expr,
            });
        }
        for (set, is_map) in [(item.set, false), (item.map, true)] {
            if let Some(s) = set {
                let at = table_at(&mut tables, s.family, s.table);
                tables[at].sets.push(Set {
                    name: s.name,
                    is_map,
                    elements: s.elem.len(),
                });
            }
        }
    }
    Ok(Ruleset { tables })
}

impl Ruleset {
    pub fn table(&self, family: &str, name: &str) -> Option<&Table> {
        self.tables
            .iter()
            .find(|t| t.family == family && t.name == name)
    }
}

impl Table {
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// Rules written by iptables-nft carry `xt` statements that nft cannot
    /// show: such a table is read through iptables-nft-save instead.
    pub fn written_by_iptables_nft(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.expr.iter().any(|e| e.get("xt").is_some()))
    }

    /// Chains a packet can traverse from the base chains hooked at `hook`.
    pub fn reachable_from_hook(&self, hook: &str) -> HashSet<&str> {
        let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
        for rule in &self.rules {
            edges
                .entry(rule.chain.as_str())
                .or_default()
                .extend(rule.chain_targets());
        }
        let mut seen = HashSet::new();
        let mut queue: Vec<&str> = self
            .chains
            .iter()
            .filter(|c| c.hook.as_deref() == Some(hook))
            .map(|c| c.name.as_str())
            .collect();
        while let Some(chain) = queue.pop() {
            if seen.insert(chain) {
                if let Some(next) = edges.get(chain) {
                    queue.extend(next.iter().copied());
                }
            }
        }
        seen
    }
}

impl Rule {
    /// Chains this rule can jump or go to, including through verdict maps.
    pub fn chain_targets(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for e in &self.expr {
            collect_targets(e, &mut out);
        }
        out
    }

    /// `drop`, `accept`, `reject`, `return` as a final statement.
    pub fn has_verdict(&self, verdict: &str) -> bool {
        self.expr.iter().any(|e| e.get(verdict).is_some())
    }

    /// True when the rule matches conntrack state `state` (`ct state
    /// invalid`, `ct state { invalid, untracked }`), not negated.
    pub fn matches_ct_state(&self, state: &str) -> bool {
        self.matches().any(|(op, left, right)| {
            matches!(op, "==" | "in")
                && left.pointer("/ct/key").and_then(Value::as_str) == Some("state")
                && value_contains(right, state)
        })
    }

    /// The flags of a `masquerade` or `snat` statement, when the rule has one:
    /// (`"masquerade"`/`"snat"`, flags such as `fully-random`, `random`).
    pub fn nat_source(&self) -> Option<(&'static str, Vec<String>)> {
        self.expr.iter().find_map(|e| {
            let (kind, body) = if let Some(b) = e.get("masquerade") {
                ("masquerade", b)
            } else if let Some(b) = e.get("snat") {
                ("snat", b)
            } else {
                return None;
            };
            let flags = match body.get("flags") {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|f| f.as_str().map(String::from))
                    .collect(),
                _ => Vec::new(),
            };
            Some((kind, flags))
        })
    }

    pub fn has_notrack(&self) -> bool {
        self.expr.iter().any(|e| e.get("notrack").is_some())
    }

    /// The value compared with `==` against a packet field
    /// (`ip daddr 169.254.20.10` → `daddr` gives `"169.254.20.10"`).
    pub fn compared(&self, field: &str) -> Vec<&Value> {
        self.matches()
            .filter(|(op, left, _)| {
                *op == "==" && left.pointer("/payload/field").and_then(Value::as_str) == Some(field)
            })
            .map(|(_, _, right)| right)
            .collect()
    }

    /// The protocol of a port match (`udp dport 53` → `udp`).
    pub fn port_protocol(&self) -> Option<&str> {
        self.matches().find_map(|(_, left, _)| {
            let payload = left.get("payload")?;
            matches!(payload.get("field")?.as_str()?, "dport" | "sport")
                .then(|| payload.get("protocol")?.as_str())
                .flatten()
        })
    }

    fn matches(&self) -> impl Iterator<Item = (&str, &Value, &Value)> {
        self.expr.iter().filter_map(|e| {
            let m = e.get("match")?;
            Some((m.get("op")?.as_str()?, m.get("left")?, m.get("right")?))
        })
    }
}

fn collect_targets<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "jump" || key == "goto" {
                    if let Some(t) = inner.get("target").and_then(Value::as_str) {
                        out.push(t);
                    }
                } else {
                    collect_targets(inner, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_targets(i, out)),
        _ => {}
    }
}

/// `"invalid"`, `["invalid", "untracked"]` or `{"set": [...]}` holding `want`.
fn value_contains(value: &Value, want: &str) -> bool {
    match value {
        Value::String(s) => s == want,
        Value::Array(items) => items.iter().any(|v| value_contains(v, want)),
        Value::Object(map) => map.get("set").is_some_and(|v| value_contains(v, want)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBE_PROXY: &str = include_str!("../../tests/fixtures/node/kube-proxy-nftables.json");

    #[test]
    fn kube_proxy_nftables_ruleset_parses() {
        let ruleset = parse(KUBE_PROXY).unwrap();
        let table = ruleset.table("ip", "kube-proxy").unwrap();
        assert_eq!(table.chains.len(), 32);
        assert_eq!(table.rules.len(), 57);
        let service_ips = table.set("service-ips").unwrap();
        assert!(service_ips.is_map);
        assert_eq!(service_ips.elements, 9);
        assert_eq!(
            table
                .chains
                .iter()
                .filter(|c| c.name.starts_with("service-"))
                .count(),
            6,
            "5 Services and service-endpoints-check"
        );
        assert!(!table.written_by_iptables_nft());
        let masq: Vec<_> = table.rules.iter().filter_map(Rule::nat_source).collect();
        assert_eq!(masq, vec![("masquerade", vec!["fully-random".to_string()])]);
        // kube-proxy's nftables mode drops no INVALID packets.
        assert!(!table
            .rules
            .iter()
            .any(|r| r.matches_ct_state("invalid") && r.has_verdict("drop")));
        assert!(table.rules.iter().any(|r| r.matches_ct_state("new")));
        let forward = table.reachable_from_hook("forward");
        assert!(forward.contains("cluster-ips-check"));
        assert!(!forward.contains("masquerading"));
        // Verdict maps are followed too.
        let svc = table
            .rules
            .iter()
            .find(|r| r.chain.starts_with("service-LAUZTJTB"))
            .unwrap();
        assert!(svc.chain_targets().contains(&"mark-for-masquerade"));
    }

    #[test]
    fn statements_are_read_in_every_json_shape() {
        let text = r#"{"nftables":[
          {"chain":{"family":"inet","table":"t","name":"fwd","handle":1,"type":"filter","hook":"forward","prio":0,"policy":"accept"}},
          {"rule":{"family":"inet","table":"t","chain":"fwd","handle":2,"expr":[
            {"match":{"op":"in","left":{"ct":{"key":"state"}},"right":["invalid","untracked"]}},{"drop":null}]}},
          {"rule":{"family":"inet","table":"t","chain":"fwd","handle":3,"expr":[
            {"match":{"op":"!=","left":{"ct":{"key":"state"}},"right":"invalid"}},{"accept":null}]}},
          {"rule":{"family":"inet","table":"t","chain":"raw","handle":4,"expr":[
            {"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"daddr"}},"right":"169.254.20.10"}},
            {"match":{"op":"==","left":{"payload":{"protocol":"udp","field":"dport"}},"right":53}},{"notrack":null}]}},
          {"rule":{"family":"inet","table":"t","chain":"post","handle":5,"expr":[{"snat":{"addr":"192.0.2.1","flags":["random","persistent"]}}]}},
          {"rule":{"family":"inet","table":"t","chain":"post","handle":6,"expr":[{"masquerade":null}]}},
          {"counter":{"family":"inet","table":"t","name":"c","packets":0,"bytes":0}}
        ]}"#;
        let ruleset = parse(text).unwrap();
        let t = &ruleset.tables[0];
        assert!(t.rules[0].matches_ct_state("invalid") && t.rules[0].has_verdict("drop"));
        assert!(!t.rules[1].matches_ct_state("invalid"));
        assert!(t.rules[2].has_notrack());
        assert_eq!(
            t.rules[2].compared("daddr"),
            vec![&Value::from("169.254.20.10")]
        );
        assert_eq!(t.rules[2].compared("dport"), vec![&Value::from(53)]);
        assert_eq!(t.rules[2].port_protocol(), Some("udp"));
        assert_eq!(
            t.rules[3].nat_source(),
            Some(("snat", vec!["random".to_string(), "persistent".to_string()]))
        );
        assert_eq!(t.rules[4].nat_source(), Some(("masquerade", vec![])));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse("").is_err());
        assert!(parse("{\"nftables\": 3}").is_err());
        assert!(parse("[1,2]").is_err());
        assert!(parse("{\"nftables\": []}").unwrap().tables.is_empty());
    }
}
