//! Envoy's routing, emulated on a parsed config dump: which cluster carries
//! a request for UPSTREAM. It follows Envoy's own steps: the listener (one
//! bound to the address, or the capture listener with `use_original_dst`
//! handing the connection to the listener of the original destination),
//! the filter chain by `filter_chain_match` (no backtracking, as Envoy),
//! the HTTP connection manager's route configuration (inline or RDS), the
//! virtual host by Host, the first route that matches, and its cluster.
//! Cluster-name rules are only a fallback, and the result says which way
//! the cluster was found.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::dump::{
    ChainMatch, Dump, Filter, FilterChain, HeaderMatcher, Listener, Route, RouteConfig,
    StringMatcher, VirtualHost, WeightedClusters,
};

/// The request podprobe sends, as Envoy would see it.
pub struct Request<'r> {
    /// UPSTREAM's host as written (`details`, `10.96.0.7`, `127.0.0.1`).
    pub host: &'r str,
    pub port: u16,
    /// The addresses the app connects to (UPSTREAM resolved as it resolves).
    pub destinations: &'r [SocketAddr],
    /// The Host header.
    pub authority: &'r str,
    pub path: &'r str,
    /// Request headers other than Host, lowercase names.
    pub headers: &'r [(&'r str, &'r str)],
}

/// How the cluster was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FoundBy {
    /// Listener, filter chain, HTTP route: as Envoy routes the request.
    Route,
    /// Listener, filter chain, TCP proxy: Envoy relays bytes.
    TcpProxy,
    /// No listener matched: a static cluster whose endpoint is UPSTREAM.
    Endpoint,
    /// No listener matched: Istio's and Kuma's cluster names.
    NameRule,
}

/// Where the route ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Target {
    Cluster {
        name: String,
        weight: Option<u64>,
    },
    /// The cluster is named per request by this header.
    ClusterHeader {
        header: String,
    },
    /// Envoy answers itself (direct response, redirect) or a plugin picks.
    NoCluster {
        why: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Routed {
    pub found_by: FoundBy,
    /// Each step Envoy takes, in words.
    pub steps: Vec<String>,
    pub targets: Vec<Target>,
}

/// Routes `req` through the dump; `Err` holds why no listener took it
/// (after the name-rule fallback also found nothing).
pub fn route(dump: &Dump, req: &Request) -> Result<Routed, Vec<String>> {
    let mut why_not = Vec::new();
    for &dst in req.destinations {
        let attempt = if dst.ip().is_loopback() {
            route_loopback(dump, req, dst)
        } else {
            route_remote(dump, req, dst)
        };
        match attempt {
            Ok(Some(routed)) => return Ok(routed),
            Ok(None) => {}
            Err(why) => why_not.push(why),
        }
    }
    if let Some(routed) = by_endpoint(dump, req).or_else(|| by_name(dump, req)) {
        return Ok(Routed {
            steps: std::iter::once(if why_not.is_empty() {
                "no listener in the dump receives this address".to_string()
            } else {
                why_not.join("; ")
            })
            .chain(routed.steps)
            .collect(),
            ..routed
        });
    }
    if why_not.is_empty() {
        why_not.push("no listener in the dump receives this address".into());
    }
    Err(why_not)
}

/// A connection as filter-chain matching sees it.
struct Conn {
    /// `None` when unknown (the pod's own address, for inbound).
    ip: Option<IpAddr>,
    port: u16,
}

fn route_remote(dump: &Dump, req: &Request, dst: SocketAddr) -> Result<Option<Routed>, String> {
    let conn = Conn {
        ip: Some(dst.ip()),
        port: dst.port(),
    };
    if let Some(l) = dump
        .listeners
        .iter()
        .find(|l| l.binds() && listens_on(l, dst, false))
    {
        let step = format!("listener {} is bound to {dst}", l.name());
        return through_listener(dump, req, l, &conn, vec![step]).map(Some);
    }
    if let Some(capture) = dump
        .listeners
        .iter()
        .find(|l| l.use_original_dst == Some(true))
    {
        // Envoy hands the connection to the listener of the original
        // destination: exact address first, then the wildcard one.
        let handed = dump
            .listeners
            .iter()
            .find(|l| !std::ptr::eq(*l, capture) && listens_on(l, dst, false))
            .or_else(|| {
                dump.listeners
                    .iter()
                    .find(|l| !std::ptr::eq(*l, capture) && listens_on(l, dst, true))
            });
        let mut steps = vec![format!(
            "listener {} (use_original_dst) takes the connection to {dst}",
            capture.name()
        )];
        let target = match handed {
            Some(l) => {
                steps.push(format!("and hands it to listener {}", l.name()));
                l
            }
            None => {
                steps.push("no listener for that address: it keeps it".into());
                capture
            }
        };
        return through_listener(dump, req, target, &conn, steps).map(Some);
    }
    if let Some(capture) = dump.listeners.iter().find(|l| {
        l.has_listener_filter("original_dst") && l.traffic_direction.as_deref() == Some("OUTBOUND")
    }) {
        let steps = vec![format!(
            "listener {} (original_dst listener filter) takes the connection to {dst}",
            capture.name()
        )];
        return through_listener(dump, req, capture, &conn, steps).map(Some);
    }
    // Listeners that bind no port only ever get connections from a capture
    // listener; a partial dump (istioctl's) may lack that one.
    let unbound = |wildcard| {
        dump.listeners
            .iter()
            .find(|l| !l.binds() && listens_on(l, dst, wildcard))
    };
    if let Some(l) = unbound(false).or_else(|| unbound(true)) {
        let steps = vec![format!(
            "listener {} (bind_to_port false: handed connections to {dst} by the capture listener, which this dump lacks)",
            l.name()
        )];
        return through_listener(dump, req, l, &conn, steps).map(Some);
    }
    Ok(None)
}

fn route_loopback(dump: &Dump, req: &Request, dst: SocketAddr) -> Result<Option<Routed>, String> {
    // An upstream listener of the proxy itself (Consul, Kuma), or a plain
    // Envoy bound to every address.
    let bound = |wildcard| {
        dump.listeners
            .iter()
            .find(|l| l.binds() && listens_on(l, dst, wildcard))
    };
    if let Some(l) = bound(false).or_else(|| bound(true)) {
        let conn = Conn {
            ip: Some(dst.ip()),
            port: dst.port(),
        };
        let step = format!("listener {} is bound to {dst}", l.name());
        return through_listener(dump, req, l, &conn, vec![step]).map(Some);
    }
    // The app's own port: what the inbound capture listener does with a
    // connection to the pod's address on that port.
    let inbound = dump.listeners.iter().find(|l| {
        l.name() == "virtualInbound"
            || (l.traffic_direction.as_deref() == Some("INBOUND")
                && (l.use_original_dst == Some(true) || l.has_listener_filter("original_dst")))
    });
    if let Some(l) = inbound {
        let conn = Conn {
            ip: None,
            port: dst.port(),
        };
        let steps = vec![format!(
            "inbound listener {} takes connections to the pod's port {}",
            l.name(),
            dst.port()
        )];
        match through_listener(dump, req, l, &conn, steps) {
            Ok(routed) => return Ok(Some(routed)),
            Err(why) => return Err(why),
        }
    }
    // Inbound listeners of their own (Consul's public_listener, Kuma's
    // inbound:IP:PORT): the one whose route ends at a cluster whose
    // endpoint is this loopback port.
    for l in &dump.listeners {
        let Some((ip, port)) = listener_addr(l) else {
            continue;
        };
        let conn = Conn {
            ip: ip.parse().ok(),
            port,
        };
        let steps = vec![format!("listener {} (inbound)", l.name())];
        let Ok(routed) = through_listener(dump, req, l, &conn, steps) else {
            continue;
        };
        let reaches_app = routed.targets.iter().any(|t| match t {
            Target::Cluster { name, .. } => dump.cluster(name).is_some_and(|c| {
                c.endpoints
                    .iter()
                    .any(|(a, p)| *p == dst.port() && is_loopback_name(a))
            }),
            _ => false,
        });
        if reaches_app {
            return Ok(Some(routed));
        }
    }
    Ok(None)
}

fn listener_addr<'l>(l: &'l Listener) -> Option<(&'l str, u16)> {
    let s = l.address.as_ref()?.socket_address.as_ref()?;
    let port = u16::try_from(s.port_value?.as_u64()?).ok()?;
    Some((s.address.as_ref(), port))
}

/// The listener's address is `dst` (exactly, or with `wildcard` its port on
/// 0.0.0.0 / ::).
fn listens_on(l: &Listener, dst: SocketAddr, wildcard: bool) -> bool {
    let Some((addr, port)) = listener_addr(l) else {
        return false;
    };
    if port != dst.port() {
        return false;
    }
    match addr.parse::<IpAddr>() {
        Ok(ip) if wildcard => ip.is_unspecified() && ip.is_ipv4() == dst.is_ipv4(),
        Ok(ip) => ip == dst.ip(),
        Err(_) => false,
    }
}

fn through_listener(
    dump: &Dump,
    req: &Request,
    listener: &Listener,
    conn: &Conn,
    mut steps: Vec<String>,
) -> Result<Routed, String> {
    let (chain, how) = select_chain(listener, conn).ok_or_else(|| {
        format!(
            "listener {} has no filter chain for {}:{} (Envoy closes such connections)",
            listener.name(),
            conn.ip
                .map_or("the pod's address".to_string(), |ip| ip.to_string()),
            conn.port
        )
    })?;
    steps.push(how);
    let filter = chain
        .filters
        .iter()
        .rev()
        .find(|f| f.is_http_connection_manager() || f.is_tcp_proxy())
        .ok_or_else(|| {
            format!(
                "the filter chain of listener {} has neither an HTTP connection manager nor a TCP proxy",
                listener.name()
            )
        })?;
    if filter.is_tcp_proxy() {
        let targets = tcp_proxy_targets(filter, conn)?;
        steps.push(format!("{} relays the bytes", filter.name));
        return Ok(Routed {
            found_by: FoundBy::TcpProxy,
            steps,
            targets,
        });
    }
    http_route(dump, req, filter, conn, steps)
}

/// Envoy's filter chain selection: destination port, destination IP
/// (longest prefix), server name, transport protocol, application
/// protocols; at each step the most specific group wins and later steps
/// never go back to a less specific one. No match: the default chain.
fn select_chain<'c>(l: &'c Listener, conn: &Conn) -> Option<(&'c FilterChain<'c>, String)> {
    let m = chain_match;
    let all: Vec<&FilterChain> = l.filter_chains.iter().collect();
    let port_of = |c: &&FilterChain| m(c).destination_port.and_then(|p| p.as_u64());
    let by_port: Vec<_> = all
        .iter()
        .copied()
        .filter(|c| port_of(c) == Some(u64::from(conn.port)))
        .collect();
    let level = if by_port.is_empty() {
        all.iter()
            .copied()
            .filter(|c| port_of(c).is_none())
            .collect()
    } else {
        by_port
    };
    let level = match conn.ip {
        Some(ip) => {
            let best = |c: &&FilterChain| {
                m(c).prefix_ranges
                    .iter()
                    .filter_map(|r| {
                        let len = r.prefix_len.and_then(|n| n.as_u64()).unwrap_or(0) as u32;
                        contains(&r.address_prefix, len, ip).then_some(len)
                    })
                    .max()
            };
            let longest = level.iter().filter_map(best).max();
            match longest {
                Some(len) => level.into_iter().filter(|c| best(c) == Some(len)).collect(),
                None => level
                    .into_iter()
                    .filter(|c| m(c).prefix_ranges.is_empty())
                    .collect::<Vec<_>>(),
            }
        }
        None => level,
    };
    // A plain HTTP/1.1 request: no SNI, raw_buffer, "http/1.1" as the HTTP
    // inspector reports it.
    let level: Vec<_> = level
        .into_iter()
        .filter(|c| m(c).server_names.is_empty())
        .collect();
    let level = narrow(level, |c| {
        m(c).transport_protocol
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| t == "raw_buffer")
    });
    let level = narrow(level, |c| {
        let protos = &m(c).application_protocols;
        (!protos.is_empty()).then(|| protos.iter().any(|p| p == "http/1.1"))
    });
    if let Some(c) = level.first() {
        return Some((c, describe_chain(l, c)));
    }
    l.default_filter_chain.as_ref().map(|c| {
        (
            c,
            format!(
                "no filter chain matches: the default filter chain of {}",
                l.name()
            ),
        )
    })
}

static ANY_CONNECTION: ChainMatch<'static> = ChainMatch {
    destination_port: None,
    prefix_ranges: Vec::new(),
    server_names: Vec::new(),
    transport_protocol: None,
    application_protocols: Vec::new(),
};

fn chain_match<'c>(c: &&'c FilterChain<'c>) -> &'c ChainMatch<'c> {
    c.filter_chain_match.as_ref().unwrap_or(&ANY_CONNECTION)
}

/// Keeps the chains that name the criterion and match it, or when none
/// names it, those that do not name it.
fn narrow<'c>(
    level: Vec<&'c FilterChain<'c>>,
    judge: impl Fn(&&'c FilterChain<'c>) -> Option<bool>,
) -> Vec<&'c FilterChain<'c>> {
    let specific: Vec<_> = level
        .iter()
        .copied()
        .filter(|c| judge(c) == Some(true))
        .collect();
    if specific.is_empty() {
        level.into_iter().filter(|c| judge(c).is_none()).collect()
    } else {
        specific
    }
}

fn describe_chain(l: &Listener, c: &FilterChain) -> String {
    let index = l
        .filter_chains
        .iter()
        .position(|x| std::ptr::eq(x, c))
        .unwrap_or(0);
    let name = c
        .name
        .as_deref()
        .map_or(format!("#{index}"), |n| format!("{n:?}"));
    let mut what = Vec::new();
    if let Some(m) = &c.filter_chain_match {
        if let Some(p) = m.destination_port.and_then(|p| p.as_u64()) {
            what.push(format!("destination_port {p}"));
        }
        if !m.prefix_ranges.is_empty() {
            let ranges: Vec<String> = m
                .prefix_ranges
                .iter()
                .map(|r| {
                    format!(
                        "{}/{}",
                        r.address_prefix,
                        r.prefix_len.and_then(|n| n.as_u64()).unwrap_or(0)
                    )
                })
                .collect();
            what.push(format!("prefix_ranges {}", ranges.join(",")));
        }
        if let Some(t) = m.transport_protocol.as_deref().filter(|t| !t.is_empty()) {
            what.push(format!("transport_protocol {t}"));
        }
        if !m.application_protocols.is_empty() {
            let protos: Vec<&str> = m.application_protocols.iter().map(|p| p.as_ref()).collect();
            what.push(format!("application_protocols {}", protos.join(",")));
        }
    }
    if what.is_empty() {
        format!(
            "filter chain {name} of {} (matches any connection)",
            l.name()
        )
    } else {
        format!("filter chain {name} of {} ({})", l.name(), what.join(", "))
    }
}

/// `ip` is in `prefix/len`.
fn contains(prefix: &str, len: u32, ip: IpAddr) -> bool {
    match (prefix.parse::<IpAddr>(), ip) {
        (Ok(IpAddr::V4(p)), IpAddr::V4(a)) => {
            let len = len.min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(p) & mask == u32::from(a) & mask
        }
        (Ok(IpAddr::V6(p)), IpAddr::V6(a)) => {
            let len = len.min(128);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(p) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

fn weighted(w: &WeightedClusters) -> Vec<Target> {
    w.clusters
        .iter()
        .map(|c| Target::Cluster {
            name: c.name.to_string(),
            weight: c.weight.and_then(|n| n.as_u64()),
        })
        .collect()
}

fn tcp_proxy_targets(filter: &Filter, conn: &Conn) -> Result<Vec<Target>, String> {
    let config = filter.typed_config.as_ref();
    if let Some(w) = config.and_then(|c| c.weighted_clusters.as_ref()) {
        return Ok(weighted(w));
    }
    if let Some(name) = config.and_then(|c| c.cluster.as_deref()) {
        return Ok(vec![Target::Cluster {
            name: name.to_string(),
            weight: None,
        }]);
    }
    // v2's deprecated_v1 TCP proxy routes by destination address and port.
    let routes = config
        .and_then(|c| c.value.as_ref()?.route_config.as_ref())
        .map(|r| r.routes.as_slice())
        .unwrap_or_default();
    let hit = routes.iter().find(|r| {
        let ip_ok = r.destination_ip_list.is_empty()
            || conn.ip.is_some_and(|ip| {
                r.destination_ip_list.iter().any(|cidr| {
                    let (prefix, len) = cidr.split_once('/').unwrap_or((cidr, "32"));
                    contains(prefix, len.parse().unwrap_or(32), ip)
                })
            });
        let port_ok = r.destination_ports.as_deref().is_none_or(|ports| {
            ports.split(',').any(|p| match p.split_once('-') {
                Some((a, b)) => {
                    a.trim().parse::<u16>().is_ok_and(|a| a <= conn.port)
                        && b.trim().parse::<u16>().is_ok_and(|b| conn.port <= b)
                }
                None => p.trim().parse::<u16>() == Ok(conn.port),
            })
        });
        ip_ok && port_ok
    });
    hit.map(|r| {
        vec![Target::Cluster {
            name: r.cluster.to_string(),
            weight: None,
        }]
    })
    .ok_or_else(|| format!("{} names no cluster for this connection", filter.name))
}

fn http_route(
    dump: &Dump,
    req: &Request,
    filter: &Filter,
    conn: &Conn,
    mut steps: Vec<String>,
) -> Result<Routed, String> {
    let hcm = filter
        .typed_config
        .as_ref()
        .ok_or("an HTTP connection manager without configuration")?;
    let config: &RouteConfig = if let Some(inline) = &hcm.route_config {
        steps.push(format!(
            "HTTP connection manager, inline route config {}",
            inline.name.as_deref().unwrap_or("(unnamed)")
        ));
        inline
    } else if let Some(name) = hcm
        .rds
        .as_ref()
        .and_then(|r| r.route_config_name.as_deref())
    {
        steps.push(format!("HTTP connection manager, RDS route config {name}"));
        dump.route_config(name)
            .ok_or_else(|| format!("route config {name} (RDS) is not in the dump"))?
    } else if hcm.scoped_routes.is_some() {
        return Err(
            "the HTTP connection manager uses scoped routes, which podprobe does not emulate"
                .into(),
        );
    } else {
        return Err("an HTTP connection manager without routes".into());
    };
    let strip_port = hcm.strip_any_host_port == Some(true)
        || config.ignore_port_in_host_matching == Some(true)
        || (hcm.strip_matching_host_port == Some(true)
            && req
                .authority
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse() == Ok(conn.port)));
    let host = if strip_port {
        strip_host_port(req.authority)
    } else {
        req.authority
    };
    let (vhost, domain) = virtual_host(config, host).ok_or_else(|| {
        format!(
            "no virtual host of route config {} takes Host {host} (Envoy answers 404)",
            config.name.as_deref().unwrap_or("(unnamed)")
        )
    })?;
    steps.push(format!(
        "virtual host {} (domain {domain:?} matches Host {host}{})",
        vhost.name.as_deref().unwrap_or("(unnamed)"),
        if strip_port && host != req.authority {
            ", its port stripped as the connection manager says"
        } else {
            ""
        }
    ));
    let mut skipped = Vec::new();
    let (index, route) = vhost
        .routes
        .iter()
        .enumerate()
        .find(|(_, r)| match route_matches(r, req) {
            Ok(hit) => hit,
            Err(why) => {
                skipped.push(why);
                false
            }
        })
        .ok_or_else(|| {
            let mut why = format!(
                "no route of virtual host {} matches {} (Envoy answers 404)",
                vhost.name.as_deref().unwrap_or("(unnamed)"),
                req.path
            );
            for s in &skipped {
                why.push_str(&format!("; {s}"));
            }
            why
        })?;
    steps.extend(skipped.into_iter().map(|s| format!("skipped: {s}")));
    steps.push(format!(
        "route {} ({})",
        route
            .name
            .as_deref()
            .map_or(format!("#{index}"), |n| format!("{n:?}")),
        describe_match(route)
    ));
    let targets = if let Some(action) = &route.route {
        if let Some(w) = &action.weighted_clusters {
            weighted(w)
        } else if let Some(c) = action.cluster.as_deref() {
            vec![Target::Cluster {
                name: c.to_string(),
                weight: None,
            }]
        } else if let Some(h) = action.cluster_header.as_deref() {
            vec![Target::ClusterHeader {
                header: h.to_string(),
            }]
        } else {
            vec![Target::NoCluster {
                why: "a cluster specifier plugin picks the cluster".into(),
            }]
        }
    } else if route.redirect.is_some() {
        vec![Target::NoCluster {
            why: "the route redirects".into(),
        }]
    } else {
        let status = route
            .direct_response
            .as_ref()
            .and_then(|d| d.status?.as_u64())
            .map_or("a direct response".to_string(), |s| {
                format!("a direct {s} response")
            });
        vec![Target::NoCluster {
            why: format!("Envoy answers with {status}"),
        }]
    };
    Ok(Routed {
        found_by: FoundBy::Route,
        steps,
        targets,
    })
}

fn strip_host_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        // Not an IPv6 literal without brackets.
        Some((h, p)) if p.parse::<u16>().is_ok() && (!h.contains(':') || h.ends_with(']')) => h,
        _ => authority,
    }
}

/// Envoy's virtual host selection: exact domain, then the longest suffix
/// wildcard (`*.example.com`, `*-bar.example.com`), then the longest prefix
/// wildcard (`foo.*`), then `*`. Case-insensitive.
fn virtual_host<'c, 'a>(
    config: &'c RouteConfig<'a>,
    host: &str,
) -> Option<(&'c VirtualHost<'a>, &'c str)> {
    let host = host.to_ascii_lowercase();
    let domains = || {
        config
            .virtual_hosts
            .iter()
            .flat_map(|v| v.domains.iter().map(move |d| (v, d.as_ref())))
    };
    if let Some(hit) = domains().find(|(_, d)| d.eq_ignore_ascii_case(&host)) {
        return Some(hit);
    }
    // The longest wildcard of one kind that fits the host.
    let longest =
        |part: fn(&str) -> Option<&str>, fits: fn(&str, &str) -> bool| {
            domains()
                .filter_map(|(v, d)| {
                    let fixed = part(d).filter(|p| !p.is_empty())?;
                    (host.len() > fixed.len() && fits(&host, &fixed.to_ascii_lowercase()))
                        .then_some((v, d, fixed.len()))
                })
                .max_by_key(|(_, _, len)| *len)
                .map(|(v, d, _)| (v, d))
        };
    if let Some(hit) = longest(|d| d.strip_prefix('*'), |h, s| h.ends_with(s))
        .or_else(|| longest(|d| d.strip_suffix('*'), |h, p| h.starts_with(p)))
    {
        return Some(hit);
    }
    domains().find(|(_, d)| *d == "*")
}

/// Whether Envoy's route matches the request; `Err` for a match podprobe
/// cannot evaluate (then treated as not matching, and said).
fn route_matches(route: &Route, req: &Request) -> Result<bool, String> {
    let m = &route.matcher;
    let path = req.path.split('?').next().unwrap_or(req.path);
    let sensitive = m.case_sensitive.unwrap_or(true);
    let starts = |p: &str| {
        path.len() >= p.len()
            && (if sensitive {
                path.starts_with(p)
            } else {
                path[..p.len()].eq_ignore_ascii_case(p)
            })
    };
    let path_ok = if let Some(p) = &m.prefix {
        starts(p)
    } else if let Some(p) = &m.path {
        if sensitive {
            path == p.as_ref()
        } else {
            path.eq_ignore_ascii_case(p)
        }
    } else if let Some(p) = &m.path_separated_prefix {
        path == p.as_ref() || (starts(p) && path[p.len()..].starts_with('/'))
    } else if let Some(re) = m
        .safe_regex
        .as_ref()
        .map(|r| r.regex.as_ref())
        .or(m.regex.as_deref())
    {
        match_all_regex(re).ok_or_else(|| {
            format!("a route matches paths by the regex {re:?}, which podprobe does not evaluate")
        })?
    } else if m.connect_matcher.is_some() {
        false
    } else if m.path_match_policy.is_some() {
        return Err(
            "a route matches paths by a URI template, which podprobe does not evaluate".into(),
        );
    } else {
        false
    };
    if !path_ok || m.grpc.is_some() || !m.query_parameters.is_empty() {
        return Ok(false);
    }
    for h in &m.headers {
        if !header_matches(h, req)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Regexes that match every path; others are not evaluated.
fn match_all_regex(re: &str) -> Option<bool> {
    matches!(
        re,
        ".*" | "^.*" | "^.*$" | ".*$" | "/.*" | "^/.*" | "^/.*$" | ".+" | "/.+"
    )
    .then_some(true)
}

fn header_matches(h: &HeaderMatcher, req: &Request) -> Result<bool, String> {
    let name = h.name.to_ascii_lowercase();
    let value = match name.as_str() {
        ":authority" | "host" => Some(req.authority),
        ":path" => Some(req.path),
        ":method" => Some("GET"),
        ":scheme" => Some("http"),
        n => req.headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v),
    };
    let string = |s: &StringMatcher| -> Result<Option<bool>, String> {
        let v = value.map(|v| {
            if s.ignore_case == Some(true) {
                v.to_ascii_lowercase()
            } else {
                v.to_string()
            }
        });
        let norm = |x: &str| {
            if s.ignore_case == Some(true) {
                x.to_ascii_lowercase()
            } else {
                x.to_string()
            }
        };
        let Some(v) = v else { return Ok(None) };
        Ok(Some(if let Some(x) = &s.exact {
            v == norm(x)
        } else if let Some(x) = &s.prefix {
            v.starts_with(&norm(x))
        } else if let Some(x) = &s.suffix {
            v.ends_with(&norm(x))
        } else if let Some(x) = &s.contains {
            v.contains(&norm(x))
        } else if let Some(re) = &s.safe_regex {
            match_all_regex(&re.regex).ok_or_else(|| {
                format!(
                    "a route matches header {name} by a regex, which podprobe does not evaluate"
                )
            })?
        } else {
            true
        }))
    };
    let hit = if let Some(present) = h.present_match {
        value.is_some() == present
    } else if let Some(x) = &h.exact_match {
        value == Some(x.as_ref())
    } else if let Some(x) = &h.prefix_match {
        value.is_some_and(|v| v.starts_with(x.as_ref()))
    } else if let Some(x) = &h.suffix_match {
        value.is_some_and(|v| v.ends_with(x.as_ref()))
    } else if let Some(x) = &h.contains_match {
        value.is_some_and(|v| v.contains(x.as_ref()))
    } else if let Some(s) = &h.string_match {
        string(s)?.unwrap_or(false)
    } else if h.safe_regex_match.is_some() {
        return Err(format!(
            "a route matches header {name} by a regex, which podprobe does not evaluate"
        ));
    } else {
        value.is_some()
    };
    Ok(hit != h.invert_match.unwrap_or(false))
}

fn describe_match(route: &Route) -> String {
    let m = &route.matcher;
    let mut out = if let Some(p) = &m.prefix {
        format!("prefix {p:?}")
    } else if let Some(p) = &m.path {
        format!("path {p:?}")
    } else if let Some(p) = &m.path_separated_prefix {
        format!("path_separated_prefix {p:?}")
    } else if let Some(r) = &m.safe_regex {
        format!("safe_regex {:?}", r.regex)
    } else {
        "regex".to_string()
    };
    if !m.headers.is_empty() {
        out.push_str(&format!(", {} header matcher(s)", m.headers.len()));
    }
    out
}

// ---- the fallbacks ----

fn is_loopback_name(addr: &str) -> bool {
    addr.eq_ignore_ascii_case("localhost")
        || addr.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A static cluster whose endpoint is UPSTREAM: its address, one the name
/// resolves to, the same name, or loopback written either way.
fn by_endpoint(dump: &Dump, req: &Request) -> Option<Routed> {
    let host = req.host.trim_end_matches('.');
    let local = is_loopback_name(host) || req.destinations.iter().any(|d| d.ip().is_loopback());
    let same = |a: &str| {
        let a = a.trim_end_matches('.');
        a.eq_ignore_ascii_case(host)
            || (local && is_loopback_name(a))
            || a.parse::<IpAddr>()
                .is_ok_and(|ip| req.destinations.iter().any(|d| d.ip() == ip))
    };
    let c = dump
        .clusters
        .iter()
        .find(|c| c.endpoints.iter().any(|(a, p)| *p == req.port && same(a)))?;
    let (a, p) = c
        .endpoints
        .iter()
        .find(|(a, p)| *p == req.port && same(a))?;
    Some(Routed {
        found_by: FoundBy::Endpoint,
        steps: vec![format!("cluster {} has the endpoint {a}:{p}", c.name)],
        targets: vec![Target::Cluster {
            name: c.name.clone(),
            weight: None,
        }],
    })
}

/// Istio's and Kuma's cluster names: `inbound|PORT||` or `localhost:PORT`
/// in the app's pod, `outbound|PORT||HOST` (a waypoint's
/// `inbound-vip|PORT|…|HOST`) otherwise, else the passthrough cluster.
fn by_name(dump: &Dump, req: &Request) -> Option<Routed> {
    let port = req.port.to_string();
    let ip = req.host.parse::<IpAddr>().ok();
    let local = is_loopback_name(req.host);
    let named = |f: &dyn Fn(&str) -> bool| dump.clusters.iter().find(|c| f(&c.name));
    let hit = |c: &super::dump::Cluster, rule: &str| Routed {
        found_by: FoundBy::NameRule,
        steps: vec![format!("by its name ({rule}): cluster {}", c.name)],
        targets: vec![Target::Cluster {
            name: c.name.clone(),
            weight: None,
        }],
    };
    if local {
        let inbound = named(&|n| {
            let mut parts = n.split('|');
            parts.next() == Some("inbound") && parts.next() == Some(port.as_str())
        })
        .map(|c| (c, "inbound|PORT||"))
        .or_else(|| named(&|n| n == format!("localhost:{port}")).map(|c| (c, "localhost:PORT")));
        if let Some((c, rule)) = inbound {
            return Some(hit(c, rule));
        }
    }
    let host = req.host.trim_end_matches('.').to_ascii_lowercase();
    // Istio's default subset (`outbound|PORT||HOST`) is what a route without
    // a subset names, so it goes before the subsets.
    let outbound = |default_subset: bool| {
        named(&|n| {
            let parts: Vec<&str> = n.split('|').collect();
            matches!(parts.as_slice(), [kind, p, subset, h]
                if (*kind == "outbound" || *kind == "inbound-vip")
                    && *p == port
                    && subset.is_empty() == default_subset
                    && (h.eq_ignore_ascii_case(&host)
                        || h.to_ascii_lowercase().starts_with(&format!("{host}."))))
        })
    };
    if let Some(c) = outbound(true).or_else(|| outbound(false)) {
        return Some(hit(c, "outbound|PORT|SUBSET|HOST"));
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
    named(&|n| n == passthrough).map(|c| hit(c, "Istio's passthrough cluster"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keepalive::dump;

    use crate::keepalive::testdata::fixture;

    /// Routes HOST:PORT (connecting to `ip`) through a dump.
    fn route_in(dump: &Dump, host: &str, port: u16, ip: &str) -> Result<Routed, Vec<String>> {
        let destinations = [SocketAddr::new(ip.parse().unwrap(), port)];
        let authority = format!("{host}:{port}");
        let req = Request {
            host,
            port,
            destinations: &destinations,
            authority: &authority,
            path: "/",
            headers: &[("user-agent", "podprobe/0.1.0"), ("accept", "*/*")],
        };
        route(dump, &req)
    }

    /// Routes through a fixture.
    fn routed(file: &str, host: &str, port: u16, ip: &str) -> Result<Routed, Vec<String>> {
        let bytes = fixture(file);
        route_in(&dump::parse(&bytes).unwrap(), host, port, ip)
    }

    /// The clusters a route ends at, and how it was found.
    fn clusters(r: &Routed) -> Vec<String> {
        r.targets
            .iter()
            .map(|t| match t {
                Target::Cluster { name, .. } => name.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    fn expect(
        file: &str,
        host: &str,
        port: u16,
        ip: &str,
        found_by: FoundBy,
        cluster: &str,
    ) -> Routed {
        let r =
            routed(file, host, port, ip).unwrap_or_else(|e| panic!("{file} {host}:{port}: {e:?}"));
        assert_eq!(
            (r.found_by, clusters(&r)),
            (found_by, vec![cluster.to_string()]),
            "{file} {host}:{port}: {:#?}",
            r.steps
        );
        r
    }

    #[test]
    fn istio_sidecar_routes_as_envoy() {
        const DUMP: &str = "istio-1.18-deathstarbench-config_dump.json";
        // A Service's ClusterIP: virtualOutbound hands it to the listener of
        // that address, whose route names the service's default subset.
        let r = expect(
            DUMP,
            "geo.hr2",
            8083,
            "10.68.200.178",
            FoundBy::Route,
            "outbound|8083||geo.hr2.svc.cluster.local",
        );
        assert!(
            r.steps[0].contains("virtualOutbound (use_original_dst)"),
            "{:?}",
            r.steps
        );
        assert!(r.steps[1].contains("10.68.200.178_8083"), "{:?}", r.steps);
        assert!(r
            .steps
            .iter()
            .any(|s| s.contains("RDS route config geo.hr2.svc.cluster.local:8083")));
        expect(
            DUMP,
            "10.68.83.238",
            8080,
            "10.68.83.238",
            FoundBy::Route,
            "outbound|8080||nginx-thrift.social-network.svc.cluster.local",
        );
        // No service there: the wildcard listener's allow_any route.
        let r = expect(
            DUMP,
            "93.184.216.34",
            80,
            "93.184.216.34",
            FoundBy::Route,
            "PassthroughCluster",
        );
        assert!(r.steps[1].contains("0.0.0.0_80"), "{:?}", r.steps);
        // This dump has no virtualInbound listener: the name rule, said so.
        let r = expect(
            DUMP,
            "127.0.0.1",
            8083,
            "127.0.0.1",
            FoundBy::NameRule,
            "inbound|8083||",
        );
        assert!(r.steps[0].contains("no listener"), "{:?}", r.steps);
    }

    #[test]
    fn old_istio_dumps_route_through_v2_filters() {
        // v2alpha: camelCase outside, snake_case filter configs, an inline
        // route config in the HTTP connection manager's `config`.
        for dump in [
            "istio-1.0-productpage-v2alpha-configdump.json",
            "istio-1.5-details-v3-configdump.json",
        ] {
            let r = expect(
                dump,
                "istio-pilot.istio-system",
                8080,
                "172.21.245.9",
                FoundBy::Route,
                "outbound|8080||istio-pilot.istio-system.svc.cluster.local",
            );
            assert!(
                r.steps
                    .iter()
                    .any(|s| s.contains("domain \"istio-pilot.istio-system:8080\"")),
                "{:?}",
                r.steps
            );
        }
        // The deprecated_v1 TCP proxy routes by destination address.
        expect(
            "istio-1.0-productpage-v2alpha-configdump.json",
            "172.21.134.116",
            443,
            "172.21.134.116",
            FoundBy::TcpProxy,
            "outbound|443||istio-galley.istio-system.svc.cluster.local",
        );
    }

    #[test]
    fn consul_kuma_gateway_and_waypoint() {
        const CONSUL: &str = "consul-k8s-test_config_dump.json";
        // The app's port: public_listener's route ends at local_app,
        // whose endpoint is 127.0.0.1:8080.
        let r = expect(
            CONSUL,
            "127.0.0.1",
            8080,
            "127.0.0.1",
            FoundBy::Route,
            "local_app",
        );
        assert!(r.steps[0].contains("public_listener"), "{:?}", r.steps);
        expect(
            CONSUL,
            "localhost",
            8080,
            "127.0.0.1",
            FoundBy::Route,
            "local_app",
        );
        // A transparent-proxy upstream: the outbound listener's chain for
        // the ClusterIP.
        expect(
            CONSUL,
            "frontend",
            80,
            "10.100.31.2",
            FoundBy::TcpProxy,
            "frontend.default.dc1.internal.bc3815c2-1a0f-f3ff-a2e9-20d791f08d00.consul",
        );
        expect(
            "kuma-full_config.json",
            "127.0.0.1",
            10011,
            "127.0.0.1",
            FoundBy::TcpProxy,
            "localhost:10011",
        );
        // Kuma's upstream listener, bound on loopback.
        let r = expect(
            "kuma-full_config.json",
            "127.0.0.1",
            10006,
            "127.0.0.1",
            FoundBy::TcpProxy,
            "gateway",
        );
        assert!(
            r.steps[0].contains("is bound to 127.0.0.1:10006"),
            "{:?}",
            r.steps
        );
        // The gateway's own listener, bound to 0.0.0.0: routed by Host.
        let err = routed("envoy-gateway-in.all.json", "127.0.0.1", 10080, "127.0.0.1").unwrap_err();
        assert!(err[0].contains("no virtual host"), "{err:?}");
        // Host keeps its port unless the connection manager strips it: as
        // Envoy, no domain matches.
        let err = routed(
            "envoy-gateway-in.all.json",
            "www.example.com",
            10080,
            "127.0.0.1",
        )
        .unwrap_err();
        assert!(
            err[0].contains("www.example.com:10080 (Envoy answers 404)"),
            "{err:?}"
        );
        expect(
            "envoy-gateway-in.all.json",
            "10.96.159.190",
            3000,
            "10.96.159.190",
            FoundBy::Endpoint,
            "default-backend-rule-0-match-0-www.example.com",
        );
        expect(
            "istio-proxyconfig-config_dump.json",
            "httpbin.default",
            8000,
            "10.96.1.1",
            FoundBy::NameRule,
            "inbound-vip|8000|http|httpbin.default.svc.cluster.local",
        );
    }

    #[test]
    fn weighted_clusters_are_each_a_target() {
        let r = routed(
            "consul-k8s-test_config_dump.weighted.edited.json",
            "127.0.0.1",
            8080,
            "127.0.0.1",
        )
        .unwrap();
        assert_eq!(
            r.targets,
            vec![
                Target::Cluster {
                    name: "local_app".into(),
                    weight: Some(90)
                },
                Target::Cluster {
                    name: "local_app_canary".into(),
                    weight: Some(10)
                },
            ]
        );
    }

    #[test]
    fn virtual_hosts_by_envoys_precedence() {
        let json = br#"{"name": "rc", "virtual_hosts": [
            {"name": "any", "domains": ["*"]},
            {"name": "suffix", "domains": ["*.example.com"]},
            {"name": "longer-suffix", "domains": ["*-api.example.com"]},
            {"name": "prefix", "domains": ["api.*"]},
            {"name": "exact", "domains": ["api.example.com:8080"]}]}"#;
        let config: crate::keepalive::dump::RouteConfig = serde_json::from_slice(json).unwrap();
        let pick = |h: &str| {
            virtual_host(&config, h).map(|(v, _)| v.name.as_deref().unwrap_or("").to_string())
        };
        assert_eq!(pick("API.example.com:8080").as_deref(), Some("exact"));
        assert_eq!(
            pick("web-api.example.com").as_deref(),
            Some("longer-suffix")
        );
        assert_eq!(pick("www.example.com").as_deref(), Some("suffix"));
        assert_eq!(pick("api.internal").as_deref(), Some("prefix"));
        assert_eq!(pick("other").as_deref(), Some("any"));
        assert_eq!(strip_host_port("details:9080"), "details");
        assert_eq!(strip_host_port("[::1]:80"), "[::1]");
    }

    #[test]
    fn filter_chains_by_envoys_order_without_backtracking() {
        let json = br#"{"name": "l", "filter_chains": [
            {"name": "port", "filter_chain_match": {"destination_port": 80, "transport_protocol": "tls"}},
            {"name": "ip", "filter_chain_match": {"prefix_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 8}]}},
            {"name": "ip32", "filter_chain_match": {"prefix_ranges": [{"address_prefix": "10.0.0.7", "prefix_len": 32}]}},
            {"name": "any"}],
            "default_filter_chain": {"name": "default"}}"#;
        let l: Listener = serde_json::from_slice(json).unwrap();
        let pick = |ip: &str, port| {
            select_chain(
                &l,
                &Conn {
                    ip: ip.parse().ok(),
                    port,
                },
            )
            .map(|(c, _)| c.name.as_deref().unwrap_or("").to_string())
        };
        // Port 80 has a chain, for TLS only: no going back to the others.
        assert_eq!(pick("10.0.0.7", 80).as_deref(), Some("default"));
        assert_eq!(pick("10.0.0.7", 81).as_deref(), Some("ip32"));
        assert_eq!(pick("10.1.0.7", 81).as_deref(), Some("ip"));
        assert_eq!(pick("192.168.0.1", 81).as_deref(), Some("any"));
        assert!(contains("::", 0, "::1".parse().unwrap()));
        assert!(!contains("10.0.0.0", 8, "11.0.0.1".parse().unwrap()));
    }

    /// Routes through an inline dump of clusters only.
    fn fallback(clusters: &str, host: &str, port: u16, ip: &str) -> Routed {
        let text = format!(
            r#"{{"configs": [{{"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "static_clusters": [{clusters}]}}]}}"#
        );
        route_in(&dump::parse(text.as_bytes()).unwrap(), host, port, ip).unwrap()
    }

    #[test]
    fn fallbacks_prefer_the_default_subset_and_read_localhost() {
        // Istio's subsets come before the default one in a dump; a route
        // without a subset names the default.
        let r = fallback(
            r#"{"cluster": {"name": "outbound|9080|v1|details.default.svc.cluster.local"}},
               {"cluster": {"name": "outbound|9080||details.default.svc.cluster.local"}}"#,
            "details",
            9080,
            "10.96.0.9",
        );
        assert_eq!(
            clusters(&r),
            ["outbound|9080||details.default.svc.cluster.local"]
        );
        // A static endpoint written as a name matches loopback.
        let r = fallback(
            r#"{"cluster": {"name": "local_app", "load_assignment": {"endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "localhost", "port_value": 8090}}}}]}]}}}"#,
            "127.0.0.1",
            8090,
            "127.0.0.1",
        );
        assert_eq!(
            (r.found_by, clusters(&r)),
            (FoundBy::Endpoint, vec!["local_app".to_string()])
        );
        // v2's hosts: by the name the app uses.
        let r = fallback(
            r#"{"cluster": {"name": "pilot", "hosts": [{"socketAddress": {"address": "istio-pilot.istio-system", "portValue": 15010}}]}}"#,
            "istio-pilot.istio-system",
            15010,
            "10.0.0.1",
        );
        assert_eq!(clusters(&r), ["pilot"]);
    }
}
