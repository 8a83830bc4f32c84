//! The proxy-side evidence: the cluster(s) Envoy's routing gives for
//! UPSTREAM, their idle timeouts as Envoy applies them, and their counters
//! from `/stats` (plain, or Prometheus in Envoy's or Istio's label names).
//! Pure functions on parsed input, so saved dumps and live admin answers
//! are judged alike.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::dump::{Cluster, Dump, UpstreamProtocol, DEFAULT_IDLE_TIMEOUT_S};
use super::route::{self, FoundBy, Request, Target};

/// The counters that show connections closed under Envoy by the app.
pub const COUNTERS: [&str; 4] = [
    "upstream_cx_destroy_remote_with_active_rq",
    "upstream_cx_destroy_remote",
    "upstream_cx_idle_timeout",
    "upstream_rq_503",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    Envoy,
    None,
}

/// Where the proxy's idle timeout came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxySource {
    /// A real configuration (the admin API or a saved dump); an unset
    /// timeout there is Envoy's default, as Envoy itself applies it.
    ConfigDump,
    /// Nothing was read: Envoy's default is assumed.
    Default,
}

/// One cluster the route can pick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterSide {
    pub name: String,
    /// Its share of `weighted_clusters`.
    pub weight: Option<u64>,
    /// The idle timeout in force; null when disabled (`0s`).
    pub idle_timeout_s: Option<f64>,
    pub idle_timeout_field: Option<String>,
    pub max_requests_per_connection: Option<u64>,
    pub upstream_protocol: Option<UpstreamProtocol>,
    pub counters: BTreeMap<String, u64>,
    /// False when the route names a cluster the dump does not have.
    pub in_dump: bool,
}

impl ClusterSide {
    /// Reuses idle connections at all.
    pub fn reuses(&self) -> bool {
        self.max_requests_per_connection != Some(1)
    }

    /// For ordering: a disabled timeout is the longest.
    fn idle_key(&self) -> f64 {
        self.idle_timeout_s.unwrap_or(f64::INFINITY)
    }
}

/// The proxy-side evidence (keys are the check's API).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxySide {
    pub proxy: ProxyKind,
    /// The admin URL or dump file read.
    pub config_from: Option<String>,
    /// The cluster judged: of those the route can pick, the one that keeps
    /// idle connections longest.
    pub cluster: Option<String>,
    /// How the cluster was found: `route`, `tcp_proxy`, `endpoint`, `name_rule`.
    pub cluster_found_by: Option<FoundBy>,
    /// Envoy's steps from listener to cluster, in words.
    pub route: Vec<String>,
    /// Every cluster the route can pick (several with `weighted_clusters`).
    pub clusters: Vec<ClusterSide>,
    /// The judged cluster's idle timeout; null when disabled (`0s`).
    pub proxy_idle_timeout_s: Option<f64>,
    pub proxy_source: ProxySource,
    pub idle_timeout_field: Option<String>,
    pub max_requests_per_connection: Option<u64>,
    pub upstream_protocol: Option<UpstreamProtocol>,
    pub tcp_keepalive: Option<Value>,
    pub service_host: Option<String>,
    /// The route picks the cluster per request from this header.
    pub cluster_header: Option<String>,
    pub counters: BTreeMap<String, u64>,
    /// Why something could not be read, in words.
    pub notes: Vec<String>,
}

impl ProxySide {
    /// No proxy configuration could be read: assume Envoy's default.
    pub fn assumed(config_from: Option<String>, note: String) -> Self {
        ProxySide {
            proxy: ProxyKind::None,
            config_from,
            cluster: None,
            cluster_found_by: None,
            route: Vec::new(),
            clusters: Vec::new(),
            proxy_idle_timeout_s: Some(DEFAULT_IDLE_TIMEOUT_S),
            proxy_source: ProxySource::Default,
            idle_timeout_field: None,
            max_requests_per_connection: None,
            upstream_protocol: None,
            tcp_keepalive: None,
            service_host: None,
            cluster_header: None,
            counters: BTreeMap::new(),
            notes: vec![note],
        }
    }

    /// The proxy side from a parsed dump, the request as Envoy sees it and,
    /// when the admin API gave them, its stats.
    pub fn from_config(
        config_from: String,
        dump: &Dump,
        req: &Request,
        stats: Result<&str, String>,
    ) -> Self {
        let mut side = ProxySide::assumed(Some(config_from), String::new());
        side.proxy = ProxyKind::Envoy;
        side.notes.clear();
        let routed = match route::route(dump, req) {
            Ok(routed) => routed,
            Err(why) => {
                side.notes.push(format!(
                    "the config dump routes no request for {}:{} to a cluster: {}",
                    req.host,
                    req.port,
                    why.join("; ")
                ));
                return side;
            }
        };
        side.cluster_found_by = Some(routed.found_by);
        side.route = routed.steps;
        for target in &routed.targets {
            match target {
                Target::Cluster { name, weight } => {
                    let found = dump.cluster(name);
                    if found.is_none() {
                        side.notes.push(format!(
                            "the route names cluster {name}, which is not in the dump"
                        ));
                    }
                    side.clusters
                        .push(cluster_side(name, *weight, found, &stats));
                }
                Target::ClusterHeader { header } => {
                    side.cluster_header = Some(header.clone());
                    side.notes.push(format!(
                        "the route takes the cluster's name from the request header {header}: the config alone does not say which cluster carries the app's requests"
                    ));
                }
                Target::NoCluster { why } => side
                    .notes
                    .push(format!("the route sends the request to no cluster: {why}")),
            }
        }
        // Judge the cluster that keeps idle connections longest, among
        // those that reuse them at all.
        let judged = side
            .clusters
            .iter()
            .filter(|c| c.in_dump)
            .max_by(|a, b| {
                a.reuses()
                    .cmp(&b.reuses())
                    .then(a.idle_key().total_cmp(&b.idle_key()))
            })
            .cloned();
        let Some(judged) = judged else {
            return side;
        };
        let cluster = dump.cluster(&judged.name);
        side.cluster = Some(judged.name.clone());
        side.proxy_idle_timeout_s = judged.idle_timeout_s;
        side.proxy_source = ProxySource::ConfigDump;
        side.idle_timeout_field = judged.idle_timeout_field.clone();
        side.max_requests_per_connection = judged.max_requests_per_connection;
        side.upstream_protocol = judged.upstream_protocol;
        side.tcp_keepalive = cluster.and_then(|c| c.tcp_keepalive.clone());
        side.service_host = cluster.and_then(|c| c.service_host.clone());
        side.counters = judged.counters.clone();
        match &stats {
            Ok(_) if side.clusters.iter().all(|c| c.counters.is_empty()) => {
                side.notes.push(format!(
                    "the proxy publishes no stats for cluster {} (Istio hides per-cluster stats unless proxyStatsMatcher includes them)",
                    cluster.map_or(judged.name.as_str(), |c| c.stat_name.as_str())
                ));
            }
            Ok(_) => {}
            Err(why) => side.notes.push(why.clone()),
        }
        side
    }
}

fn cluster_side(
    name: &str,
    weight: Option<u64>,
    cluster: Option<&Cluster>,
    stats: &Result<&str, String>,
) -> ClusterSide {
    match cluster {
        Some(c) => ClusterSide {
            name: name.to_string(),
            weight,
            idle_timeout_s: c.effective_idle_timeout_s(),
            idle_timeout_field: c.idle_timeout_field.clone(),
            max_requests_per_connection: c.max_requests_per_connection,
            upstream_protocol: Some(c.upstream_protocol),
            counters: stats
                .as_ref()
                .map(|text| parse_stats(text, &c.stat_name))
                .unwrap_or_default(),
            in_dump: true,
        },
        None => ClusterSide {
            name: name.to_string(),
            weight,
            idle_timeout_s: None,
            idle_timeout_field: None,
            max_requests_per_connection: None,
            upstream_protocol: None,
            counters: BTreeMap::new(),
            in_dump: false,
        },
    }
}

/// The [`COUNTERS`] of one cluster (by its stat name) from Envoy's `/stats`
/// text: plain (`cluster.NAME.counter: N`) or Prometheus, with Envoy's
/// default tag names (`envoy_cluster_name`, `envoy_response_code`) or
/// Istio's (`cluster_name`, `response_code`, `response_code_class`).
/// Names are matched by suffix, since newer Istio ends cluster stat names
/// with `;`. Empty when the proxy does not publish them.
pub fn parse_stats(text: &str, stat_name: &str) -> BTreeMap<String, u64> {
    let mut found = BTreeMap::new();
    let is_ours = |name: &str| name.trim_end_matches(';') == stat_name;
    let sanitized: Vec<String> = [stat_name.to_string(), format!("{stat_name};")]
        .iter()
        .map(|n| prometheus_sanitize(n))
        .collect();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((name, labels, value)) = prometheus_sample(line) {
            let label = |keys: &[&str]| {
                labels
                    .iter()
                    .find(|(k, _)| keys.contains(&k.as_str()))
                    .map(|(_, v)| v.as_str())
            };
            let cluster = label(&["envoy_cluster_name", "cluster_name"]);
            let code = label(&["envoy_response_code", "response_code"]);
            for counter in COUNTERS {
                let matched = match cluster {
                    Some(cluster) => {
                        is_ours(cluster)
                            && (name.ends_with(&format!("_{counter}"))
                                || (counter == "upstream_rq_503"
                                    && name.ends_with("_upstream_rq")
                                    && code == Some("503")))
                    }
                    None => sanitized
                        .iter()
                        .any(|s| name.ends_with(&format!("{s}_{counter}"))),
                };
                if matched {
                    let sum = found.entry(counter.to_string()).or_insert(0);
                    *sum = value.saturating_add(*sum);
                }
            }
        } else if let Some((key, value)) = line.split_once(": ") {
            let (Some(rest), Ok(value)) =
                (key.strip_prefix("cluster."), value.trim().parse::<u64>())
            else {
                continue;
            };
            for counter in COUNTERS {
                if rest
                    .strip_suffix(counter)
                    .and_then(|r| r.strip_suffix('.'))
                    .is_some_and(is_ours)
                {
                    found.insert(counter.to_string(), value);
                }
            }
        }
    }
    found
}

fn prometheus_sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

type Labels = Vec<(String, String)>;

/// One Prometheus text sample: name, labels, value (rounded to a count).
fn prometheus_sample(line: &str) -> Option<(&str, Labels, u64)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    let (_, '"') = chars.next()? else { return None };
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        };
        rest = &body[end + 1..];
    }
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    (value.is_finite() && value >= 0.0).then_some((name, labels, value as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUMA_STATS: &str =
        include_str!("../../tests/fixtures/envoy/kuma-envoy-stats-prometheus.txt");
    const ISTIO_TAGS: &str = include_str!(
        "../../tests/fixtures/envoy/kuma-envoy-stats-prometheus.istio-tags.edited.txt"
    );

    #[test]
    fn prometheus_stats_in_both_label_styles() {
        for text in [KUMA_STATS, ISTIO_TAGS] {
            let counters = parse_stats(text, "example");
            assert_eq!(
                counters.get("upstream_cx_destroy_remote_with_active_rq"),
                Some(&1)
            );
            // Not in the fixture: absent, not zero.
            assert_eq!(counters.get("upstream_cx_idle_timeout"), None);
            assert!(parse_stats(text, "inbound|8083||").is_empty());
        }
    }

    #[test]
    fn plain_stats_match_by_suffix_with_istio_semicolons() {
        let text = "cluster.inbound|8080||;.upstream_cx_destroy_remote_with_active_rq: 4\n\
                    cluster.inbound|8080||;.upstream_cx_destroy_remote: 9\n\
                    cluster.inbound|8080||;.upstream_rq_503: 2\n\
                    cluster.inbound|8080||;.upstream_cx_length_ms: P0(nan,1) P25(nan,2)\n\
                    cluster.inbound|9090||.upstream_cx_destroy_remote: 1\n";
        assert_eq!(
            parse_stats(text, "inbound|8080||"),
            BTreeMap::from([
                ("upstream_cx_destroy_remote".to_string(), 9),
                ("upstream_cx_destroy_remote_with_active_rq".to_string(), 4),
                ("upstream_rq_503".to_string(), 2),
            ])
        );
    }

    #[test]
    fn response_codes_as_labels_in_both_styles() {
        let text = "envoy_cluster_upstream_rq{envoy_response_code=\"503\",envoy_cluster_name=\"inbound|8080||\"} 3\n\
                    envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"inbound|8080||\"} 50\n\
                    envoy_cluster_upstream_rq{response_code_class=\"5xx\",response_code=\"503\",cluster_name=\"inbound|8080||\"} 4\n\
                    envoy_cluster_inbound_8080___upstream_cx_idle_timeout{} 6\n";
        let counters = parse_stats(text, "inbound|8080||");
        assert_eq!(counters.get("upstream_rq_503"), Some(&7));
        assert_eq!(counters.get("upstream_cx_idle_timeout"), Some(&6));
    }

    /// Found reading the parser for its fuzz target (envoy_stats): series
    /// of one counter whose sum passes u64 overflowed.
    #[test]
    fn counters_past_u64_saturate() {
        let text = include_str!("../../fuzz/regressions/envoy_stats/counters-past-u64");
        let counters = parse_stats(text, "inbound|8080||");
        assert_eq!(counters.get("upstream_rq_503"), Some(&u64::MAX));
    }

    /// Random and mutated inputs never panic.
    #[test]
    fn random_stats_never_panic() {
        for bytes in crate::keepalive::testdata::mutated_inputs() {
            let _ = parse_stats(&String::from_utf8_lossy(&bytes), "example");
        }
    }
}
