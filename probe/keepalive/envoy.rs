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

#[cfg(test)]
mod tests {
    use super::*;

    const ISTIO_SIDECAR: &str =
        include_str!("../../tests/fixtures/envoy/istio-1.18-deathstarbench-config_dump.json");
    const ISTIO_WAYPOINT: &str =
        include_str!("../../tests/fixtures/envoy/istio-proxyconfig-config_dump.json");
    const KUMA: &str = include_str!("../../tests/fixtures/envoy/kuma-full_config.json");
    const GATEWAY: &str = include_str!("../../tests/fixtures/envoy/envoy-gateway-in.all.json");
    const KUMA_STATS: &str =
        include_str!("../../tests/fixtures/envoy/kuma-envoy-stats-prometheus.txt");

    fn clusters(text: &str) -> Vec<Cluster> {
        parse_config_dump(text).unwrap()
    }

    fn lookup(text: &str, host: &str, port: u16) -> Option<(String, Match, Option<f64>)> {
        let all = clusters(text);
        find_cluster(&all, host, port).map(|(c, m)| (c.name.clone(), m, c.idle_timeout_s))
    }

    fn named<'a>(all: &'a [Cluster], name: &str) -> &'a Cluster {
        all.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn every_real_dump_parses_with_its_clusters() {
        assert_eq!(clusters(ISTIO_SIDECAR).len(), 143);
        assert_eq!(clusters(ISTIO_WAYPOINT).len(), 3);
        assert_eq!(clusters(KUMA).len(), 5);
        assert_eq!(clusters(GATEWAY).len(), 2);
    }

    #[test]
    fn only_the_passthrough_clusters_set_an_idle_timeout() {
        for dump in [ISTIO_SIDECAR, ISTIO_WAYPOINT, KUMA, GATEWAY] {
            let with: Vec<(String, f64)> = clusters(dump)
                .into_iter()
                .filter_map(|c| Some((c.name, c.idle_timeout_s?)))
                .collect();
            if dump == ISTIO_SIDECAR {
                assert_eq!(
                    with,
                    vec![
                        ("InboundPassthroughClusterIpv4".to_string(), 300.0),
                        ("PassthroughCluster".to_string(), 300.0)
                    ]
                );
            } else {
                assert!(with.is_empty(), "{with:?}");
            }
        }
        let all = clusters(ISTIO_SIDECAR);
        let pass = named(&all, "PassthroughCluster");
        assert_eq!(
            pass.idle_timeout_field.as_deref(),
            Some("typed_extension_protocol_options.HttpProtocolOptions.common_http_protocol_options.idle_timeout")
        );
        assert_eq!(
            named(&all, "inbound|8083||").effective_idle_timeout_s(),
            3600.0
        );
    }

    #[test]
    fn istio_sidecar_lookup() {
        assert_eq!(
            lookup(ISTIO_SIDECAR, "127.0.0.1", 8083),
            Some(("inbound|8083||".into(), Match::Inbound, None))
        );
        for host in [
            "geo.hr2",
            "geo.hr2.svc.cluster.local",
            "GEO.hr2.svc.cluster.local.",
        ] {
            assert_eq!(
                lookup(ISTIO_SIDECAR, host, 8083),
                Some((
                    "outbound|8083||geo.hr2.svc.cluster.local".into(),
                    Match::Outbound,
                    None
                )),
                "{host}"
            );
        }
        // Ports without a cluster of their own go through the passthroughs.
        assert_eq!(
            lookup(ISTIO_SIDECAR, "127.0.0.1", 9999),
            Some((
                "InboundPassthroughClusterIpv4".into(),
                Match::Passthrough,
                Some(300.0)
            ))
        );
        assert_eq!(
            lookup(ISTIO_SIDECAR, "example.org", 80),
            Some(("PassthroughCluster".into(), Match::Passthrough, Some(300.0)))
        );
        let all = clusters(ISTIO_SIDECAR);
        let inbound = named(&all, "inbound|8083||");
        assert_eq!(
            inbound.service_host.as_deref(),
            Some("geo.hr2.svc.cluster.local")
        );
        assert_eq!(inbound.max_requests_per_connection, None);
        let xds = named(&all, "xds-grpc");
        assert_eq!(xds.max_requests_per_connection, Some(1));
        assert_eq!(
            xds.tcp_keepalive,
            Some(serde_json::json!({"keepalive_time": 300}))
        );
    }

    #[test]
    fn waypoint_kuma_and_gateway_lookup() {
        assert_eq!(
            lookup(ISTIO_WAYPOINT, "httpbin.default", 8000),
            Some((
                "inbound-vip|8000|http|httpbin.default.svc.cluster.local".into(),
                Match::Outbound,
                None
            ))
        );
        assert_eq!(lookup(ISTIO_WAYPOINT, "127.0.0.1", 8000), None);
        assert_eq!(
            lookup(KUMA, "127.0.0.1", 10011),
            Some(("localhost:10011".into(), Match::Inbound, None))
        );
        let kuma = clusters(KUMA);
        assert_eq!(named(&kuma, "localhost:10011").stat_name, "localhost_10011");
        // v2 clusters in the same dump keep their fields.
        assert_eq!(
            named(&kuma, "ads_cluster").tcp_keepalive,
            Some(
                serde_json::json!({"keepalive_probes": 3, "keepalive_time": 10, "keepalive_interval": 10})
            )
        );
        assert_eq!(
            lookup(GATEWAY, "10.96.159.190", 3000),
            Some((
                "default-backend-rule-0-match-0-www.example.com".into(),
                Match::Endpoint,
                None
            ))
        );
        assert_eq!(lookup(GATEWAY, "127.0.0.1", 3000), None);
    }

    #[test]
    fn v2alpha_camel_case_dumps_parse() {
        let dump = r#"{"configs": [{"@type": "type.googleapis.com/envoy.admin.v2alpha.ClustersConfigDump",
            "dynamicActiveClusters": [{"cluster": {"name": "inbound|9080|http|reviews.default.svc.cluster.local",
              "commonHttpProtocolOptions": {"idleTimeout": "4.500s", "maxRequestsPerConnection": "100"},
              "upstreamConnectionOptions": {"tcpKeepalive": {"keepaliveTime": 300}}}}]}]}"#;
        let all = clusters(dump);
        assert_eq!(all[0].idle_timeout_s, Some(4.5));
        assert_eq!(
            all[0].idle_timeout_field.as_deref(),
            Some("common_http_protocol_options.idle_timeout")
        );
        assert_eq!(all[0].max_requests_per_connection, Some(100));
        assert!(all[0].tcp_keepalive.is_some());
        assert_eq!(
            find_cluster(&all, "127.0.0.1", 9080).map(|(c, m)| (c.name.as_str(), m)),
            Some((
                "inbound|9080|http|reviews.default.svc.cluster.local",
                Match::Inbound
            ))
        );
    }

    #[test]
    fn typed_options_win_over_the_deprecated_field() {
        let dump = r#"{"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "static_clusters": [{"cluster": {"name": "app",
              "common_http_protocol_options": {"idle_timeout": "10s"},
              "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "common_http_protocol_options": {"idle_timeout": "2s", "max_requests_per_connection": 7}}}}}]}]}"#;
        let all = clusters(dump);
        assert_eq!(all[0].idle_timeout_s, Some(2.0));
        assert_eq!(all[0].max_requests_per_connection, Some(7));
    }

    #[test]
    fn non_dumps_are_refused_in_words() {
        assert!(parse_config_dump("<html><body>Envoy Admin</body></html>")
            .unwrap_err()
            .contains("not JSON"));
        assert!(parse_config_dump("{}").unwrap_err().contains("configs"));
        assert!(parse_config_dump(r#"{"configs": []}"#)
            .unwrap_err()
            .contains("ClustersConfigDump"));
    }

    #[test]
    fn durations_in_protobuf_json() {
        assert_eq!(
            parse_proto_duration(&serde_json::json!("300s")),
            Some(300.0)
        );
        assert_eq!(
            parse_proto_duration(&serde_json::json!("0.250s")),
            Some(0.25)
        );
        assert_eq!(
            parse_proto_duration(&serde_json::json!({"seconds": "2", "nanos": 500000000})),
            Some(2.5)
        );
        assert_eq!(parse_proto_duration(&serde_json::json!("soon")), None);
        assert_eq!(parse_proto_duration(&serde_json::json!("-1s")), None);
    }

    #[test]
    fn prometheus_stats_of_one_cluster() {
        let counters = parse_stats(KUMA_STATS, "example");
        assert_eq!(
            counters.get("upstream_cx_destroy_remote_with_active_rq"),
            Some(&1)
        );
        // Not in the fixture: absent, not zero.
        assert_eq!(counters.get("upstream_cx_idle_timeout"), None);
        assert!(!parse_stats(KUMA_STATS, "ads_cluster")
            .contains_key("upstream_cx_destroy_remote_with_active_rq"));
        assert!(parse_stats(KUMA_STATS, "inbound|8083||").is_empty());
    }

    #[test]
    fn plain_stats_match_by_suffix_with_istio_semicolons() {
        let text = "cluster.inbound|8080||;.upstream_cx_destroy_remote_with_active_rq: 4\n\
                    cluster.inbound|8080||;.upstream_cx_destroy_remote: 9\n\
                    cluster.inbound|8080||;.upstream_rq_503: 2\n\
                    cluster.inbound|8080||;.upstream_cx_length_ms: P0(nan,1) P25(nan,2)\n\
                    cluster.inbound|9090||.upstream_cx_destroy_remote: 1\n";
        let counters = parse_stats(text, "inbound|8080||");
        assert_eq!(
            counters,
            BTreeMap::from([
                ("upstream_cx_destroy_remote".to_string(), 9),
                ("upstream_cx_destroy_remote_with_active_rq".to_string(), 4),
                ("upstream_rq_503".to_string(), 2),
            ])
        );
    }

    #[test]
    fn prometheus_response_codes_and_untagged_names() {
        let text = "envoy_cluster_upstream_rq{envoy_response_code=\"503\",envoy_cluster_name=\"inbound|8080||\"} 3\n\
                    envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"inbound|8080||\"} 50\n\
                    envoy_cluster_inbound_8080___upstream_cx_idle_timeout{} 6\n";
        let counters = parse_stats(text, "inbound|8080||");
        assert_eq!(counters.get("upstream_rq_503"), Some(&3));
        assert_eq!(counters.get("upstream_cx_idle_timeout"), Some(&6));
    }
}
