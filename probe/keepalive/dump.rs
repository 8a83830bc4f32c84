//! An Envoy `/config_dump` read into the parts routing and keep-alive need:
//! clusters (with their HTTP protocol options as Envoy applies them),
//! listeners (filter chains and their network filters) and route
//! configurations. v3 snake_case and the old v2alpha camelCase both parse.
//!
//! Memory: the dump is parsed straight from its bytes into these structs;
//! strings borrow from the input where JSON allows it and everything else
//! in the dump (endpoints, secrets, HTTP filters, TLS contexts) is skipped
//! without being built, so a dump costs little more than its own bytes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// Envoy's upstream idle timeout when a cluster sets none (1 hour).
pub const DEFAULT_IDLE_TIMEOUT_S: f64 = 3600.0;

/// The typed protocol options Envoy reads for HTTP upstreams.
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

pub type Str<'a> = Cow<'a, str>;

/// A dump, parsed.
#[derive(Debug, Default)]
pub struct Dump<'a> {
    pub clusters: Vec<Cluster>,
    pub listeners: Vec<Listener<'a>>,
    pub route_configs: Vec<RouteConfig<'a>>,
    /// Positions by name (the first of a name, as listed), for lookups in
    /// dumps of thousands.
    cluster_index: HashMap<String, usize>,
    route_index: HashMap<String, usize>,
}

impl<'a> Dump<'a> {
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.cluster_index.get(name).map(|&i| &self.clusters[i])
    }

    pub fn route_config(&self, name: &str) -> Option<&RouteConfig<'a>> {
        self.route_index.get(name).map(|&i| &self.route_configs[i])
    }
}

/// Parses a dump from its bytes; errors say what the input was instead.
pub fn parse(bytes: &[u8]) -> Result<Dump<'_>, String> {
    let root: Root = serde_json::from_slice(bytes).map_err(|e| {
        let start = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]);
        let start: String = start.trim_start().chars().take(40).collect();
        if e.is_syntax() || e.is_eof() {
            format!("not JSON ({e}); it starts with {start:?}")
        } else {
            format!("not an Envoy config dump ({e})")
        }
    })?;
    let configs = root
        .configs
        .ok_or("JSON without a \"configs\" list, so not an Envoy config dump")?;
    if !configs
        .iter()
        .any(|s| s.kind.ends_with("ClustersConfigDump"))
    {
        return Err("an Envoy config dump without a ClustersConfigDump section".into());
    }
    let mut dump = Dump::default();
    for section in configs {
        let clusters = [
            section.static_clusters,
            section.dynamic_active_clusters,
            section.dynamic_warming_clusters,
        ];
        dump.clusters.extend(
            clusters
                .into_iter()
                .flatten()
                .filter_map(|e| e.cluster)
                .map(Cluster::from),
        );
        let listeners = section
            .static_listeners
            .into_iter()
            .chain(section.dynamic_active_listeners)
            .filter_map(|e| e.listener)
            .chain(
                section
                    .dynamic_listeners
                    .into_iter()
                    .filter_map(|e| e.active_state?.listener),
            );
        dump.listeners.extend(listeners);
        let routes = section
            .static_route_configs
            .into_iter()
            .chain(section.dynamic_route_configs)
            .filter_map(|e| e.route_config);
        dump.route_configs.extend(routes);
    }
    for (i, c) in dump.clusters.iter().enumerate().rev() {
        dump.cluster_index.insert(c.name.clone(), i);
    }
    for (i, r) in dump.route_configs.iter().enumerate().rev() {
        if let Some(name) = &r.name {
            dump.route_index.insert(name.to_string(), i);
        }
    }
    Ok(dump)
}

#[derive(Deserialize)]
struct Root<'a> {
    #[serde(borrow)]
    configs: Option<Vec<Section<'a>>>,
}

#[derive(Deserialize)]
struct Section<'a> {
    #[serde(rename = "@type", default, borrow)]
    kind: Str<'a>,
    #[serde(default, alias = "staticClusters")]
    static_clusters: Vec<ClusterEntry<'a>>,
    #[serde(default, alias = "dynamicActiveClusters")]
    dynamic_active_clusters: Vec<ClusterEntry<'a>>,
    #[serde(default, alias = "dynamicWarmingClusters")]
    dynamic_warming_clusters: Vec<ClusterEntry<'a>>,
    #[serde(default, alias = "staticListeners", borrow)]
    static_listeners: Vec<ListenerEntry<'a>>,
    #[serde(default, alias = "dynamicActiveListeners", borrow)]
    dynamic_active_listeners: Vec<ListenerEntry<'a>>,
    #[serde(default, alias = "dynamicListeners", borrow)]
    dynamic_listeners: Vec<DynamicListener<'a>>,
    #[serde(default, alias = "staticRouteConfigs", borrow)]
    static_route_configs: Vec<RouteEntry<'a>>,
    #[serde(default, alias = "dynamicRouteConfigs", borrow)]
    dynamic_route_configs: Vec<RouteEntry<'a>>,
}

#[derive(Deserialize)]
struct ClusterEntry<'a> {
    #[serde(borrow)]
    cluster: Option<RawCluster<'a>>,
}

#[derive(Deserialize)]
struct ListenerEntry<'a> {
    #[serde(borrow)]
    listener: Option<Listener<'a>>,
}

#[derive(Deserialize)]
struct DynamicListener<'a> {
    #[serde(alias = "activeState", borrow)]
    active_state: Option<ListenerEntry<'a>>,
}

#[derive(Deserialize)]
struct RouteEntry<'a> {
    #[serde(alias = "routeConfig", borrow)]
    route_config: Option<RouteConfig<'a>>,
}

// ---- clusters ----

#[derive(Deserialize)]
struct RawCluster<'a> {
    name: String,
    #[serde(default, alias = "altStatName")]
    alt_stat_name: Option<String>,
    #[serde(default, alias = "commonHttpProtocolOptions")]
    common_http_protocol_options: Option<CommonHttpOptions>,
    #[serde(default, alias = "http2ProtocolOptions")]
    http2_protocol_options: Option<IgnoredAny>,
    #[serde(default, alias = "maxRequestsPerConnection")]
    max_requests_per_connection: Option<Num>,
    #[serde(
        default,
        alias = "typedExtensionProtocolOptions",
        deserialize_with = "typed_http_options"
    )]
    typed_extension_protocol_options: Option<TypedHttpOptions>,
    #[serde(default, alias = "upstreamConnectionOptions")]
    upstream_connection_options: Option<ConnectionOptions>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default, alias = "loadAssignment", borrow)]
    load_assignment: Option<LoadAssignment<'a>>,
    /// v2's static endpoints.
    #[serde(default, borrow)]
    hosts: Vec<Address<'a>>,
}

#[derive(Deserialize, Default)]
struct CommonHttpOptions {
    #[serde(default, alias = "idleTimeout")]
    idle_timeout: Option<ProtoDuration>,
    #[serde(default, alias = "maxRequestsPerConnection")]
    max_requests_per_connection: Option<Num>,
}

/// `typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]`.
#[derive(Deserialize, Default)]
struct TypedHttpOptions {
    #[serde(default, alias = "commonHttpProtocolOptions")]
    common_http_protocol_options: Option<CommonHttpOptions>,
    #[serde(default, alias = "explicitHttpConfig")]
    explicit_http_config: Option<ExplicitHttpConfig>,
    #[serde(default, alias = "autoConfig")]
    auto_config: Option<IgnoredAny>,
    #[serde(default, alias = "useDownstreamProtocolConfig")]
    use_downstream_protocol_config: Option<IgnoredAny>,
}

#[derive(Deserialize, Default)]
struct ExplicitHttpConfig {
    #[serde(default, alias = "http2ProtocolOptions")]
    http2_protocol_options: Option<IgnoredAny>,
    #[serde(default, alias = "http3ProtocolOptions")]
    http3_protocol_options: Option<IgnoredAny>,
}

/// Reads only the HttpProtocolOptions entry of the typed options map (by
/// extension name or type URL); other extensions are skipped unread.
fn typed_http_options<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<TypedHttpOptions>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<TypedHttpOptions>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of typed extension protocol options")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if key == HTTP_OPTIONS || key.ends_with(&format!("/{HTTP_OPTIONS}")) {
                    found = Some(map.next_value::<TypedHttpOptions>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

#[derive(Deserialize)]
struct ConnectionOptions {
    #[serde(default, alias = "tcpKeepalive")]
    tcp_keepalive: Option<Value>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default, alias = "filterMetadata")]
    filter_metadata: Option<FilterMetadata>,
}

#[derive(Deserialize)]
struct FilterMetadata {
    istio: Option<IstioMetadata>,
}

#[derive(Deserialize)]
struct IstioMetadata {
    #[serde(default)]
    services: Vec<IstioService>,
}

#[derive(Deserialize)]
struct IstioService {
    host: Option<String>,
}

#[derive(Deserialize)]
struct LoadAssignment<'a> {
    #[serde(default, borrow)]
    endpoints: Vec<Locality<'a>>,
}

#[derive(Deserialize)]
struct Locality<'a> {
    #[serde(default, alias = "lbEndpoints", borrow)]
    lb_endpoints: Vec<LbEndpoint<'a>>,
}

#[derive(Deserialize)]
struct LbEndpoint<'a> {
    #[serde(borrow)]
    endpoint: Option<Endpoint<'a>>,
}

#[derive(Deserialize)]
struct Endpoint<'a> {
    #[serde(borrow)]
    address: Option<Address<'a>>,
}

/// Which HTTP version Envoy speaks to the cluster's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    Http1,
    Http2,
    Http3,
    /// `auto_config`: ALPN decides.
    Auto,
    /// `use_downstream_protocol_config`: as the client spoke.
    Downstream,
}

/// What one cluster says about reusing upstream connections, as Envoy
/// applies it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    /// The name its stats carry (`alt_stat_name` when set).
    pub stat_name: String,
    /// The configured idle timeout; `None` means Envoy's default. `Some(0)`
    /// disables idling out.
    pub idle_timeout_s: Option<f64>,
    /// Where `idle_timeout_s` was read from, or where the options in force
    /// came from when it is unset.
    pub idle_timeout_field: Option<String>,
    pub max_requests_per_connection: Option<u64>,
    pub upstream_protocol: UpstreamProtocol,
    pub tcp_keepalive: Option<Value>,
    /// The Kubernetes service Istio attached to the cluster, for the remedy.
    pub service_host: Option<String>,
    /// Static endpoints as (address or name, port).
    pub endpoints: Vec<(String, u16)>,
}

impl Cluster {
    /// The idle timeout in force in seconds; `None` when disabled (`0s`).
    pub fn effective_idle_timeout_s(&self) -> Option<f64> {
        match self.idle_timeout_s {
            Some(0.0) => None,
            Some(t) => Some(t),
            None => Some(DEFAULT_IDLE_TIMEOUT_S),
        }
    }
}

const TYPED_IDLE: &str =
    "typed_extension_protocol_options.HttpProtocolOptions.common_http_protocol_options.idle_timeout";
const DEPRECATED_IDLE: &str = "common_http_protocol_options.idle_timeout";

impl From<RawCluster<'_>> for Cluster {
    fn from(c: RawCluster<'_>) -> Self {
        // Envoy uses the typed HttpProtocolOptions whole when it is there:
        // the deprecated cluster fields are then not read at all.
        let typed = c.typed_extension_protocol_options.is_some();
        let (common, place, protocol) = match c.typed_extension_protocol_options {
            Some(t) => {
                let protocol = if let Some(explicit) = &t.explicit_http_config {
                    if explicit.http2_protocol_options.is_some() {
                        UpstreamProtocol::Http2
                    } else if explicit.http3_protocol_options.is_some() {
                        UpstreamProtocol::Http3
                    } else {
                        UpstreamProtocol::Http1
                    }
                } else if t.auto_config.is_some() {
                    UpstreamProtocol::Auto
                } else if t.use_downstream_protocol_config.is_some() {
                    UpstreamProtocol::Downstream
                } else {
                    UpstreamProtocol::Http1
                };
                (t.common_http_protocol_options, TYPED_IDLE, protocol)
            }
            None => (
                c.common_http_protocol_options,
                DEPRECATED_IDLE,
                if c.http2_protocol_options.is_some() {
                    UpstreamProtocol::Http2
                } else {
                    UpstreamProtocol::Http1
                },
            ),
        };
        let common = common.unwrap_or_default();
        let idle = common.idle_timeout.map(|d| d.0);
        let idle_field = match (idle, typed) {
            (Some(_), _) => Some(place.to_string()),
            // Said, because a deprecated idle_timeout beside it is ignored.
            (None, true) => Some(format!("{TYPED_IDLE} unset")),
            (None, false) => None,
        };
        // Envoy takes max_requests_per_connection from the protocol options
        // in force, else from the cluster's own (deprecated) field.
        let max_requests = common
            .max_requests_per_connection
            .or(c.max_requests_per_connection)
            .and_then(|n| n.as_u64());
        let endpoints = c
            .load_assignment
            .into_iter()
            .flat_map(|l| l.endpoints)
            .flat_map(|l| l.lb_endpoints)
            .filter_map(|e| e.endpoint?.address)
            .chain(c.hosts)
            .filter_map(|a| a.host_port())
            .collect();
        Cluster {
            stat_name: c
                .alt_stat_name
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| c.name.clone()),
            name: c.name,
            idle_timeout_s: idle,
            idle_timeout_field: idle_field,
            max_requests_per_connection: max_requests,
            upstream_protocol: protocol,
            tcp_keepalive: c.upstream_connection_options.and_then(|o| o.tcp_keepalive),
            service_host: c
                .metadata
                .and_then(|m| m.filter_metadata?.istio?.services.into_iter().next()?.host),
            endpoints,
        }
    }
}

// ---- listeners ----

#[derive(Debug, Deserialize)]
pub struct Listener<'a> {
    #[serde(default, borrow)]
    pub name: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub address: Option<Address<'a>>,
    #[serde(default, alias = "filterChains", borrow)]
    pub filter_chains: Vec<FilterChain<'a>>,
    #[serde(default, alias = "defaultFilterChain", borrow)]
    pub default_filter_chain: Option<FilterChain<'a>>,
    #[serde(default, alias = "useOriginalDst")]
    pub use_original_dst: Option<bool>,
    #[serde(default, alias = "bindToPort")]
    pub bind_to_port: Option<bool>,
    /// v2's `deprecated_v1.bind_to_port`.
    #[serde(default, alias = "deprecatedV1")]
    pub deprecated_v1: Option<DeprecatedV1>,
    #[serde(default, alias = "listenerFilters", borrow)]
    pub listener_filters: Vec<Named<'a>>,
    #[serde(default, alias = "trafficDirection", borrow)]
    pub traffic_direction: Option<Str<'a>>,
}

impl Listener<'_> {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("(unnamed)")
    }

    /// False when the listener only receives connections handed to it by a
    /// `use_original_dst` listener.
    pub fn binds(&self) -> bool {
        self.bind_to_port
            .or_else(|| self.deprecated_v1.as_ref()?.bind_to_port)
            .unwrap_or(true)
    }

    pub fn has_listener_filter(&self, suffix: &str) -> bool {
        self.listener_filters
            .iter()
            .any(|f| f.name.ends_with(suffix))
    }
}

#[derive(Debug, Deserialize)]
pub struct DeprecatedV1 {
    #[serde(default, alias = "bindToPort")]
    pub bind_to_port: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct Named<'a> {
    #[serde(default, borrow)]
    pub name: Str<'a>,
}

#[derive(Debug, Deserialize)]
pub struct Address<'a> {
    #[serde(default, alias = "socketAddress", borrow)]
    pub socket_address: Option<SocketAddress<'a>>,
}

impl Address<'_> {
    pub fn host_port(&self) -> Option<(String, u16)> {
        let s = self.socket_address.as_ref()?;
        let port = u16::try_from(s.port_value.as_ref()?.as_u64()?).ok()?;
        Some((s.address.to_string(), port))
    }
}

#[derive(Debug, Deserialize)]
pub struct SocketAddress<'a> {
    #[serde(default, borrow)]
    pub address: Str<'a>,
    #[serde(default, alias = "portValue")]
    pub port_value: Option<Num>,
}

#[derive(Debug, Deserialize)]
pub struct FilterChain<'a> {
    #[serde(default, borrow)]
    pub name: Option<Str<'a>>,
    #[serde(default, alias = "filterChainMatch", borrow)]
    pub filter_chain_match: Option<ChainMatch<'a>>,
    #[serde(default, borrow)]
    pub filters: Vec<Filter<'a>>,
}

#[derive(Debug, Deserialize, Default)]
pub struct ChainMatch<'a> {
    #[serde(default, alias = "destinationPort")]
    pub destination_port: Option<Num>,
    #[serde(default, alias = "prefixRanges", borrow)]
    pub prefix_ranges: Vec<CidrRange<'a>>,
    #[serde(default, alias = "serverNames", borrow)]
    pub server_names: Vec<Str<'a>>,
    #[serde(default, alias = "transportProtocol", borrow)]
    pub transport_protocol: Option<Str<'a>>,
    #[serde(default, alias = "applicationProtocols", borrow)]
    pub application_protocols: Vec<Str<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct CidrRange<'a> {
    #[serde(default, alias = "addressPrefix", borrow)]
    pub address_prefix: Str<'a>,
    #[serde(default, alias = "prefixLen")]
    pub prefix_len: Option<Num>,
}

#[derive(Debug, Deserialize)]
pub struct Filter<'a> {
    #[serde(default, borrow)]
    pub name: Str<'a>,
    /// v3 `typed_config`, or v2's `config` (a Struct, snake_case inside).
    #[serde(default, alias = "typedConfig", alias = "config", borrow)]
    pub typed_config: Option<FilterConfig<'a>>,
}

impl Filter<'_> {
    pub fn is_http_connection_manager(&self) -> bool {
        self.name.ends_with("http_connection_manager")
            || self.type_url().ends_with("HttpConnectionManager")
    }

    pub fn is_tcp_proxy(&self) -> bool {
        self.name.ends_with("tcp_proxy") || self.type_url().ends_with("TcpProxy")
    }

    fn type_url(&self) -> &str {
        self.typed_config
            .as_ref()
            .and_then(|c| c.type_url.as_deref())
            .unwrap_or("")
    }
}

/// The fields of the network filters that pick a cluster: the HTTP
/// connection manager's and TCP proxy's (unknown fields of other filters
/// are skipped).
#[derive(Debug, Deserialize, Default)]
pub struct FilterConfig<'a> {
    #[serde(rename = "@type", default, borrow)]
    pub type_url: Option<Str<'a>>,
    #[serde(default, alias = "routeConfig", borrow)]
    pub route_config: Option<RouteConfig<'a>>,
    #[serde(default, borrow)]
    pub rds: Option<Rds<'a>>,
    #[serde(default, alias = "scopedRoutes")]
    pub scoped_routes: Option<IgnoredAny>,
    #[serde(default, alias = "stripAnyHostPort")]
    pub strip_any_host_port: Option<bool>,
    #[serde(default, alias = "stripMatchingHostPort")]
    pub strip_matching_host_port: Option<bool>,
    #[serde(default, deserialize_with = "lenient_str", borrow)]
    pub cluster: Option<Str<'a>>,
    #[serde(default, alias = "weightedClusters", borrow)]
    pub weighted_clusters: Option<WeightedClusters<'a>>,
    /// v2's `deprecated_v1` TCP proxy: `value.route_config.routes`.
    #[serde(default, borrow)]
    pub value: Option<DeprecatedTcpProxy<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Rds<'a> {
    #[serde(default, alias = "routeConfigName", borrow)]
    pub route_config_name: Option<Str<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct DeprecatedTcpProxy<'a> {
    #[serde(default, borrow)]
    pub route_config: Option<DeprecatedTcpRoutes<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct DeprecatedTcpRoutes<'a> {
    #[serde(default, borrow)]
    pub routes: Vec<DeprecatedTcpRoute<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct DeprecatedTcpRoute<'a> {
    #[serde(default, borrow)]
    pub cluster: Str<'a>,
    #[serde(default, borrow)]
    pub destination_ip_list: Vec<Str<'a>>,
    #[serde(default, borrow)]
    pub destination_ports: Option<Str<'a>>,
}

// ---- routes ----

#[derive(Debug, Deserialize)]
pub struct RouteConfig<'a> {
    #[serde(default, borrow)]
    pub name: Option<Str<'a>>,
    #[serde(default, alias = "virtualHosts", borrow)]
    pub virtual_hosts: Vec<VirtualHost<'a>>,
    #[serde(default, alias = "ignorePortInHostMatching")]
    pub ignore_port_in_host_matching: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct VirtualHost<'a> {
    #[serde(default, borrow)]
    pub name: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub domains: Vec<Str<'a>>,
    #[serde(default, borrow)]
    pub routes: Vec<Route<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Route<'a> {
    #[serde(default, borrow)]
    pub name: Option<Str<'a>>,
    #[serde(rename = "match", default, borrow)]
    pub matcher: RouteMatch<'a>,
    #[serde(default, borrow)]
    pub route: Option<RouteAction<'a>>,
    #[serde(default)]
    pub redirect: Option<IgnoredAny>,
    #[serde(default, alias = "directResponse")]
    pub direct_response: Option<DirectResponse>,
}

#[derive(Debug, Deserialize)]
pub struct DirectResponse {
    #[serde(default)]
    pub status: Option<Num>,
}

#[derive(Debug, Deserialize, Default)]
pub struct RouteMatch<'a> {
    #[serde(default, borrow)]
    pub prefix: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub path: Option<Str<'a>>,
    #[serde(default, alias = "pathSeparatedPrefix", borrow)]
    pub path_separated_prefix: Option<Str<'a>>,
    #[serde(default, alias = "safeRegex", borrow)]
    pub safe_regex: Option<Regex<'a>>,
    /// v2's plain `regex`.
    #[serde(default, deserialize_with = "lenient_str", borrow)]
    pub regex: Option<Str<'a>>,
    #[serde(default, alias = "connectMatcher")]
    pub connect_matcher: Option<IgnoredAny>,
    #[serde(default, alias = "pathMatchPolicy")]
    pub path_match_policy: Option<IgnoredAny>,
    #[serde(default, alias = "caseSensitive")]
    pub case_sensitive: Option<bool>,
    #[serde(default, borrow)]
    pub headers: Vec<HeaderMatcher<'a>>,
    #[serde(default, alias = "queryParameters")]
    pub query_parameters: Vec<IgnoredAny>,
    #[serde(default)]
    pub grpc: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
pub struct Regex<'a> {
    #[serde(default, borrow)]
    pub regex: Str<'a>,
}

#[derive(Debug, Deserialize)]
pub struct HeaderMatcher<'a> {
    #[serde(default, borrow)]
    pub name: Str<'a>,
    #[serde(default, alias = "exactMatch", borrow)]
    pub exact_match: Option<Str<'a>>,
    #[serde(default, alias = "prefixMatch", borrow)]
    pub prefix_match: Option<Str<'a>>,
    #[serde(default, alias = "suffixMatch", borrow)]
    pub suffix_match: Option<Str<'a>>,
    #[serde(default, alias = "containsMatch", borrow)]
    pub contains_match: Option<Str<'a>>,
    #[serde(default, alias = "presentMatch")]
    pub present_match: Option<bool>,
    #[serde(default, alias = "invertMatch")]
    pub invert_match: Option<bool>,
    #[serde(default, alias = "stringMatch", borrow)]
    pub string_match: Option<StringMatcher<'a>>,
    #[serde(default, alias = "safeRegexMatch", borrow)]
    pub safe_regex_match: Option<Regex<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct StringMatcher<'a> {
    #[serde(default, borrow)]
    pub exact: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub prefix: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub suffix: Option<Str<'a>>,
    #[serde(default, borrow)]
    pub contains: Option<Str<'a>>,
    #[serde(default, alias = "safeRegex", borrow)]
    pub safe_regex: Option<Regex<'a>>,
    #[serde(default, alias = "ignoreCase")]
    pub ignore_case: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct RouteAction<'a> {
    #[serde(default, deserialize_with = "lenient_str", borrow)]
    pub cluster: Option<Str<'a>>,
    #[serde(default, alias = "weightedClusters", borrow)]
    pub weighted_clusters: Option<WeightedClusters<'a>>,
    #[serde(default, alias = "clusterHeader", borrow)]
    pub cluster_header: Option<Str<'a>>,
    #[serde(default, alias = "clusterSpecifierPlugin")]
    pub cluster_specifier_plugin: Option<IgnoredAny>,
    #[serde(default, alias = "inlineClusterSpecifierPlugin")]
    pub inline_cluster_specifier_plugin: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
pub struct WeightedClusters<'a> {
    #[serde(default, borrow)]
    pub clusters: Vec<WeightedCluster<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct WeightedCluster<'a> {
    #[serde(default, borrow)]
    pub name: Str<'a>,
    #[serde(default)]
    pub weight: Option<Num>,
}

// ---- protobuf JSON scalars ----

/// A protobuf JSON number: a JSON number, a 64-bit integer written as a
/// string, or a `{"value": N}` wrapper.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Num(f64);

impl Num {
    pub fn as_u64(&self) -> Option<u64> {
        (self.0.is_finite() && self.0 >= 0.0 && self.0.fract() == 0.0 && self.0 <= u64::MAX as f64)
            .then_some(self.0 as u64)
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
                v.trim()
                    .parse()
                    .map(Num)
                    .map_err(|_| E::custom(format!("{v:?} is not a number")))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Num, A::Error> {
                let mut value = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == "value" {
                        value = Some(map.next_value::<Num>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                value.ok_or_else(|| de::Error::missing_field("value"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A protobuf JSON Duration (`"300s"`, `"0.250s"`); old dumps may carry
/// `{"seconds": N, "nanos": M}`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProtoDuration(pub f64);

impl<'de> Deserialize<'de> for ProtoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ProtoDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a protobuf duration such as \"300s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ProtoDuration, E> {
                parse_duration(v).ok_or_else(|| E::custom(format!("{v:?} is not a duration")))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ProtoDuration, A::Error> {
                let (mut secs, mut nanos) = (0.0, 0.0);
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "seconds" => secs = map.next_value::<Num>()?.0,
                        "nanos" => nanos = map.next_value::<Num>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                let s = secs + nanos / 1e9;
                (s.is_finite() && s >= 0.0)
                    .then_some(ProtoDuration(s))
                    .ok_or_else(|| de::Error::custom("a negative duration"))
            }
        }
        d.deserialize_any(V)
    }
}

/// `"300s"` → 300.0; negative or malformed → `None`.
pub fn parse_duration(text: &str) -> Option<ProtoDuration> {
    let s: f64 = text.strip_suffix('s')?.parse().ok()?;
    (s.is_finite() && s >= 0.0).then_some(ProtoDuration(s))
}

/// A string field that some other filter may use for an object: anything
/// but a string reads as absent.
fn lenient_str<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Str<'a>>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<Str<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::keepalive::testdata::fixture;

    fn cluster(file: &str, name: &str) -> Cluster {
        let bytes = fixture(file);
        let dump = parse(&bytes).unwrap();
        dump.cluster(name)
            .unwrap_or_else(|| panic!("no {name} in {file}"))
            .clone()
    }

    #[test]
    fn every_real_dump_parses_with_its_parts() {
        for (file, clusters, listeners, routes) in [
            ("istio-1.18-deathstarbench-config_dump.json", 143, 142, 92),
            ("istio-proxyconfig-config_dump.json", 3, 2, 1),
            ("kuma-full_config.json", 5, 2, 0),
            ("envoy-gateway-in.all.json", 2, 1, 1),
            ("consul-k8s-test_config_dump.json", 5, 2, 1),
            ("istio-1.0-productpage-v2alpha-configdump.json", 2, 2, 2),
            ("istio-1.5-details-v3-configdump.json", 2, 2, 2),
        ] {
            let bytes = fixture(file);
            let dump = parse(&bytes).unwrap();
            assert_eq!(
                (
                    dump.clusters.len(),
                    dump.listeners.len(),
                    dump.route_configs.len()
                ),
                (clusters, listeners, routes),
                "{file}"
            );
        }
    }

    #[test]
    fn idle_timeouts_as_envoy_applies_them() {
        const CONSUL: &str = "consul-k8s-test_config_dump.json";
        // Unset: Envoy's default hour.
        let unset = cluster(CONSUL, "local_app");
        assert_eq!(
            (unset.idle_timeout_s, unset.effective_idle_timeout_s()),
            (None, Some(3600.0))
        );
        let set = cluster(
            "consul-k8s-test_config_dump.idle-2s.edited.json",
            "local_app",
        );
        assert_eq!(set.effective_idle_timeout_s(), Some(2.0));
        assert_eq!(set.upstream_protocol, UpstreamProtocol::Http1);
        assert_eq!(set.idle_timeout_field.as_deref(), Some(TYPED_IDLE));
        // 0s disables idling out.
        let zero = cluster(
            "consul-k8s-test_config_dump.idle-0s.edited.json",
            "local_app",
        );
        assert_eq!(
            (zero.idle_timeout_s, zero.effective_idle_timeout_s()),
            (Some(0.0), None)
        );
        // A typed block without idle_timeout wins whole over the deprecated
        // field's 10 s.
        let typed = cluster(
            "consul-k8s-test_config_dump.typed-vs-deprecated.edited.json",
            "local_app",
        );
        assert_eq!(typed.effective_idle_timeout_s(), Some(3600.0));
        assert_eq!(typed.upstream_protocol, UpstreamProtocol::Auto);
        assert!(typed
            .idle_timeout_field
            .as_deref()
            .unwrap()
            .ends_with("unset"));
        // Without a typed block the deprecated fields are read, and
        // max_requests_per_connection from the cluster itself.
        let old = cluster(
            "consul-k8s-test_config_dump.deprecated-only.edited.json",
            "local_app",
        );
        assert_eq!(old.effective_idle_timeout_s(), Some(10.0));
        assert_eq!(old.idle_timeout_field.as_deref(), Some(DEPRECATED_IDLE));
        assert_eq!(old.max_requests_per_connection, Some(1));
        // Istio's real typed options: only the passthrough clusters set one.
        let istio = "istio-1.18-deathstarbench-config_dump.json";
        assert_eq!(
            cluster(istio, "PassthroughCluster").idle_timeout_s,
            Some(300.0)
        );
        let inbound = cluster(istio, "inbound|8083||");
        assert_eq!(inbound.effective_idle_timeout_s(), Some(3600.0));
        assert_eq!(inbound.upstream_protocol, UpstreamProtocol::Downstream);
        assert_eq!(
            inbound.service_host.as_deref(),
            Some("geo.hr2.svc.cluster.local")
        );
        let xds = cluster(istio, "xds-grpc");
        assert_eq!(xds.max_requests_per_connection, Some(1));
        assert_eq!(
            xds.tcp_keepalive,
            Some(serde_json::json!({"keepalive_time": 300}))
        );
    }

    #[test]
    fn endpoints_by_name_address_and_v2_hosts() {
        // v2's `hosts:` with a name, camelCase.
        let xds = cluster("istio-1.0-productpage-v2alpha-configdump.json", "xds-grpc");
        assert_eq!(
            xds.endpoints,
            vec![("istio-pilot.istio-system".to_string(), 15010)]
        );
        assert_eq!(xds.upstream_protocol, UpstreamProtocol::Http2);
        let old = cluster(
            "istio-1.0-productpage-v2alpha-configdump.json",
            "outbound|15004||istio-policy.istio-system.svc.cluster.local",
        );
        assert_eq!(old.max_requests_per_connection, Some(10000));
        let app = cluster("consul-k8s-test_config_dump.json", "local_app");
        assert_eq!(app.endpoints, vec![("127.0.0.1".to_string(), 8080)]);
        let kuma = cluster("kuma-full_config.json", "localhost:10011");
        assert_eq!(kuma.stat_name, "localhost_10011");
    }

    #[test]
    fn durations_and_numbers_in_protobuf_json() {
        let d = |j: &str| serde_json::from_str::<ProtoDuration>(j).ok().map(|d| d.0);
        assert_eq!(d(r#""300s""#), Some(300.0));
        assert_eq!(d(r#""0.250s""#), Some(0.25));
        assert_eq!(d(r#"{"seconds": "2", "nanos": 500000000}"#), Some(2.5));
        assert_eq!(d(r#""soon""#), None);
        assert_eq!(d(r#""-1s""#), None);
        let n = |j: &str| serde_json::from_str::<Num>(j).ok().and_then(|n| n.as_u64());
        assert_eq!(n("7"), Some(7));
        assert_eq!(n(r#""100""#), Some(100));
        assert_eq!(n(r#"{"value": 1}"#), Some(1));
        assert_eq!(n("-1"), None);
    }

    #[test]
    fn non_dumps_are_refused_in_words() {
        assert!(parse(b"<html><body>Envoy Admin</body></html>")
            .unwrap_err()
            .contains("not JSON"));
        assert!(parse(b"{}").unwrap_err().contains("configs"));
        assert!(parse(br#"{"configs": []}"#)
            .unwrap_err()
            .contains("ClustersConfigDump"));
        assert!(parse(br#"{"configs": 3}"#)
            .unwrap_err()
            .contains("not an Envoy config dump"));
    }

    /// Random and mutated inputs never panic.
    #[test]
    fn random_bytes_never_panic() {
        for bytes in crate::keepalive::testdata::mutated_inputs() {
            let _ = parse(&bytes);
        }
    }
}
