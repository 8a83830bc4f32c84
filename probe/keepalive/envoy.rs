//! Reading Envoy's side of a keep-alive: a `/config_dump` (v3 snake_case or
//! the old v2alpha camelCase) and `/stats` text (plain or Prometheus). Pure
//! functions on text, no I/O, so saved dumps and live admin answers are judged
//! alike.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

/// Envoy's upstream idle timeout when a cluster sets none (1 hour).
pub const DEFAULT_IDLE_TIMEOUT_S: f64 = 3600.0;

/// The counters that show connections closed under Envoy by the app.
pub const COUNTERS: [&str; 4] = [
    "upstream_cx_destroy_remote_with_active_rq",
    "upstream_cx_destroy_remote",
    "upstream_cx_idle_timeout",
    "upstream_rq_503",
];

const HTTP_OPTIONS_EXT: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// What one cluster says about reusing upstream connections.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    pub name: String,
    /// The name its stats carry (`alt_stat_name` when set).
    pub stat_name: String,
    /// The configured idle timeout; `None` means Envoy's default.
    pub idle_timeout_s: Option<f64>,
    /// Where `idle_timeout_s` was read from.
    pub idle_timeout_field: Option<String>,
    pub max_requests_per_connection: Option<u64>,
    pub tcp_keepalive: Option<Value>,
    /// The Kubernetes service Istio attached to the cluster, for the remedy.
    pub service_host: Option<String>,
    /// Static endpoints as (address, port).
    #[serde(skip)]
    pub endpoints: Vec<(String, u16)>,
}

impl Cluster {
    /// The idle timeout in force: the configured one or Envoy's default.
    pub fn effective_idle_timeout_s(&self) -> f64 {
        self.idle_timeout_s.unwrap_or(DEFAULT_IDLE_TIMEOUT_S)
    }
}

/// A field by its v3 snake_case name or the camelCase a v2alpha dump uses.
fn field<'a>(obj: &'a Value, snake: &str) -> Option<&'a Value> {
    obj.get(snake).or_else(|| obj.get(camel_case(snake)))
}

fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn path<'a>(obj: &'a Value, fields: &[&str]) -> Option<&'a Value> {
    fields.iter().try_fold(obj, |v, f| field(v, f))
}

/// A protobuf JSON Duration (`"300s"`, `"0.250s"`); old dumps may carry
/// `{"seconds": N, "nanos": M}`.
pub fn parse_proto_duration(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => s.strip_suffix('s')?.parse::<f64>().ok(),
        Value::Object(_) => {
            let secs = field(v, "seconds").map_or(Some(0.0), number)?;
            let nanos = field(v, "nanos").map_or(Some(0.0), number)?;
            Some(secs + nanos / 1e9)
        }
        _ => None,
    }
    .filter(|s| s.is_finite() && *s >= 0.0)
}

/// A JSON number, a 64-bit integer as protobuf JSON writes it (a string), or
/// a `{"value": N}` wrapper.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        Value::Object(_) => field(v, "value").and_then(number),
        _ => None,
    }
}

/// Every cluster in a config dump, static, active and warming.
pub fn parse_config_dump(text: &str) -> Result<Vec<Cluster>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        let start: String = text.trim_start().chars().take(40).collect();
        format!("not JSON ({e}); it starts with {start:?}")
    })?;
    let configs = doc
        .get("configs")
        .and_then(Value::as_array)
        .ok_or("JSON without a \"configs\" list, so not an Envoy config dump")?;
    let sections: Vec<&Value> = configs
        .iter()
        .filter(|c| {
            c.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("ClustersConfigDump"))
        })
        .collect();
    if sections.is_empty() {
        return Err("an Envoy config dump without a ClustersConfigDump section".into());
    }
    let mut clusters = Vec::new();
    for section in sections {
        for list in [
            "static_clusters",
            "dynamic_active_clusters",
            "dynamic_warming_clusters",
        ] {
            let entries = field(section, list).and_then(Value::as_array);
            for entry in entries.into_iter().flatten() {
                // Dumps wrap each cluster with its version; very old ones do not.
                let cluster = entry.get("cluster").unwrap_or(entry);
                if let Some(c) = parse_cluster(cluster) {
                    clusters.push(c);
                }
            }
        }
    }
    Ok(clusters)
}

fn parse_cluster(c: &Value) -> Option<Cluster> {
    let name = field(c, "name")?.as_str()?.to_string();
    let typed = field(c, "typed_extension_protocol_options").and_then(|t| t.get(HTTP_OPTIONS_EXT));
    // The typed extension replaced the cluster-level fields; Envoy prefers it.
    let idle = [
        (
            typed.and_then(|t| path(t, &["common_http_protocol_options", "idle_timeout"])),
            "typed_extension_protocol_options.HttpProtocolOptions.common_http_protocol_options.idle_timeout",
        ),
        (
            path(c, &["common_http_protocol_options", "idle_timeout"]),
            "common_http_protocol_options.idle_timeout",
        ),
    ]
    .into_iter()
    .find_map(|(v, place)| Some((parse_proto_duration(v?)?, place)));
    let max_requests = typed
        .and_then(|t| {
            path(
                t,
                &[
                    "common_http_protocol_options",
                    "max_requests_per_connection",
                ],
            )
        })
        .or_else(|| {
            path(
                c,
                &[
                    "common_http_protocol_options",
                    "max_requests_per_connection",
                ],
            )
        })
        .or_else(|| field(c, "max_requests_per_connection"))
        .and_then(number)
        .map(|n| n as u64);
    let endpoints = endpoints(c);
    Some(Cluster {
        stat_name: field(c, "alt_stat_name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(&name)
            .to_string(),
        name,
        idle_timeout_s: idle.map(|(s, _)| s),
        idle_timeout_field: idle.map(|(_, place)| place.to_string()),
        max_requests_per_connection: max_requests,
        tcp_keepalive: path(c, &["upstream_connection_options", "tcp_keepalive"]).cloned(),
        service_host: path(c, &["metadata", "filter_metadata", "istio", "services"])
            .and_then(Value::as_array)
            .and_then(|s| s.first())
            .and_then(|s| s.get("host"))
            .and_then(Value::as_str)
            .map(str::to_string),
        endpoints,
    })
}

fn endpoints(c: &Value) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    let localities = path(c, &["load_assignment", "endpoints"]).and_then(Value::as_array);
    for locality in localities.into_iter().flatten() {
        let lb = field(locality, "lb_endpoints").and_then(Value::as_array);
        for e in lb.into_iter().flatten() {
            let sock = path(e, &["endpoint", "address", "socket_address"]);
            let addr = sock
                .and_then(|s| field(s, "address"))
                .and_then(Value::as_str);
            let port = sock
                .and_then(|s| field(s, "port_value"))
                .and_then(number)
                .and_then(|p| u16::try_from(p as u64).ok());
            if let (Some(addr), Some(port)) = (addr, port) {
                out.push((addr.to_string(), port));
            }
        }
    }
    out
}

/// How the cluster for an upstream was found, for the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// Istio's `inbound|PORT||` or Kuma's `localhost:PORT` (the app's pod).
    Inbound,
    /// Istio's `outbound|PORT|SUBSET|HOST` or a waypoint's `inbound-vip|…`.
    Outbound,
    /// A static cluster whose endpoint is the upstream address.
    Endpoint,
    /// Istio's passthrough cluster, which carries ports it has no cluster for.
    Passthrough,
}

/// The cluster that carries traffic to `host:port`: in the app's pod
/// (`host` loopback) the inbound cluster, from a client pod the outbound one.
pub fn find_cluster<'a>(
    clusters: &'a [Cluster],
    host: &str,
    port: u16,
) -> Option<(&'a Cluster, Match)> {
    let ip = host.parse::<IpAddr>().ok();
    let local = ip.is_some_and(|ip| ip.is_loopback()) || host.eq_ignore_ascii_case("localhost");
    let by_name = |f: &dyn Fn(&str) -> bool| clusters.iter().find(|c| f(&c.name));
    let port_s = port.to_string();
    if local {
        let inbound = by_name(&|n| {
            let mut parts = n.split('|');
            parts.next() == Some("inbound") && parts.next() == Some(port_s.as_str())
        })
        .or_else(|| by_name(&|n| n == format!("localhost:{port}")));
        if let Some(c) = inbound {
            return Some((c, Match::Inbound));
        }
    }
    let host_lc = host.trim_end_matches('.').to_ascii_lowercase();
    let outbound = by_name(&|n| {
        let parts: Vec<&str> = n.split('|').collect();
        matches!(parts.as_slice(), [kind, p, _, h]
            if (*kind == "outbound" || *kind == "inbound-vip")
                && *p == port_s
                && (h.eq_ignore_ascii_case(&host_lc)
                    || h.to_ascii_lowercase().starts_with(&format!("{host_lc}."))))
    });
    if let Some(c) = outbound {
        return Some((c, Match::Outbound));
    }
    let same_addr = |a: &str| {
        a.eq_ignore_ascii_case(host)
            || (local && a.parse::<IpAddr>().is_ok_and(|a| a.is_loopback()))
    };
    if let Some(c) = clusters
        .iter()
        .find(|c| c.endpoints.iter().any(|(a, p)| *p == port && same_addr(a)))
    {
        return Some((c, Match::Endpoint));
    }
    let passthrough = if local {
        if ip.is_some_and(|ip| ip.is_ipv6()) {
            "InboundPassthroughClusterIpv6"
        } else {
            "InboundPassthroughClusterIpv4"
        }
    } else {
        "PassthroughCluster"
    };
    by_name(&|n| n == passthrough).map(|c| (c, Match::Passthrough))
}

/// The [`COUNTERS`] of one cluster (by its stat name) from Envoy's `/stats`
/// text, plain (`cluster.NAME.counter: N`) or Prometheus. Names are matched
/// by suffix, since newer Istio ends cluster stat names with `;`. Empty
/// when the proxy does not publish them (Istio hides per-cluster stats
/// unless `proxyStatsMatcher` includes them).
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
            let label = |key: &str| {
                labels
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            };
            let cluster = labels
                .iter()
                .find(|(k, _)| k == "envoy_cluster_name" || k == "cluster_name")
                .map(|(_, v)| v.as_str());
            for counter in COUNTERS {
                let matched = match cluster {
                    Some(cluster) => {
                        is_ours(cluster)
                            && (name.ends_with(&format!("_{counter}"))
                                || (counter == "upstream_rq_503"
                                    && name.ends_with("_upstream_rq")
                                    && label("envoy_response_code") == Some("503")))
                    }
                    None => sanitized
                        .iter()
                        .any(|s| name.ends_with(&format!("{s}_{counter}"))),
                };
                if matched {
                    *found.entry(counter.to_string()).or_insert(0) += value;
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

/// One Prometheus text sample: name, labels, value (rounded to a count).
fn prometheus_sample(line: &str) -> Option<(&str, Vec<(String, String)>, u64)> {
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

/// The proxy-side evidence (keys are the check's API).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxySide {
    pub proxy: ProxyKind,
    /// The admin URL or dump file read.
    pub config_from: Option<String>,
    pub cluster: Option<String>,
    pub cluster_match: Option<Match>,
    pub proxy_idle_timeout_s: f64,
    pub proxy_source: ProxySource,
    pub idle_timeout_field: Option<String>,
    pub max_requests_per_connection: Option<u64>,
    pub tcp_keepalive: Option<Value>,
    pub service_host: Option<String>,
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
            cluster_match: None,
            proxy_idle_timeout_s: DEFAULT_IDLE_TIMEOUT_S,
            proxy_source: ProxySource::Default,
            idle_timeout_field: None,
            max_requests_per_connection: None,
            tcp_keepalive: None,
            service_host: None,
            counters: BTreeMap::new(),
            notes: vec![note],
        }
    }

    /// The proxy side from a parsed dump and, when the admin API gave them,
    /// its stats.
    pub fn from_config(
        config_from: String,
        clusters: &[Cluster],
        host: &str,
        port: u16,
        stats: Result<&str, String>,
    ) -> Self {
        let mut side = ProxySide::assumed(Some(config_from), String::new());
        side.proxy = ProxyKind::Envoy;
        side.notes.clear();
        let Some((cluster, how)) = find_cluster(clusters, host, port) else {
            side.notes.push(format!(
                "no cluster in the config dump carries traffic to {host}:{port} (looked for inbound|{port}||, outbound|{port}||{host}, an endpoint {host}:{port} and the passthrough clusters)"
            ));
            return side;
        };
        side.cluster = Some(cluster.name.clone());
        side.cluster_match = Some(how);
        side.proxy_idle_timeout_s = cluster.effective_idle_timeout_s();
        side.proxy_source = ProxySource::ConfigDump;
        side.idle_timeout_field = cluster.idle_timeout_field.clone();
        side.max_requests_per_connection = cluster.max_requests_per_connection;
        side.tcp_keepalive = cluster.tcp_keepalive.clone();
        side.service_host = cluster.service_host.clone();
        match stats {
            Ok(text) => {
                side.counters = parse_stats(text, &cluster.stat_name);
                if side.counters.is_empty() {
                    side.notes.push(format!(
                        "the proxy publishes no stats for cluster {} (Istio hides per-cluster stats unless proxyStatsMatcher includes them)",
                        cluster.stat_name
                    ));
                }
            }
            Err(why) => side.notes.push(why),
        }
        side
    }
}
