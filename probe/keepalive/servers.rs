//! Which HTTP server answered, from its `Server` header and behaviour, and
//! the setting that sets its keep-alive idle timeout.

use serde::Serialize;

use super::measure::ResponseHead;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    Node,
    Express,
    Gunicorn,
    Uvicorn,
    Apache,
    Nginx,
    Tomcat,
    SpringBoot,
    Jetty,
    Lighttpd,
    Haproxy,
    Caddy,
    Aiohttp,
    GoNetHttp,
    /// An Envoy answered (it proxied the request): the idle timeout
    /// measured is Envoy's downstream one, not the app's.
    Envoy,
    Unknown,
}

impl ServerKind {
    /// The name in the evidence (`tomcat`, `go_net_http`).
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// Identifies the server: its kind and what showed it.
pub fn identify(head: &ResponseHead, body: &[u8], measured_s: Option<f64>) -> (ServerKind, String) {
    let server = head.header("server").unwrap_or("");
    let lower = server.to_ascii_lowercase();
    let said = |kind, why: &str| (kind, why.to_string());
    let by_header = |kind| (kind, format!("Server: {server}"));
    if head.header("x-envoy-upstream-service-time").is_some() {
        return said(
            ServerKind::Envoy,
            "x-envoy-upstream-service-time: the request went through an Envoy",
        );
    }
    if lower == "envoy" || lower == "istio-envoy" {
        return by_header(ServerKind::Envoy);
    }
    let body = String::from_utf8_lossy(body);
    if is_spring_error(&body) {
        return said(ServerKind::SpringBoot, "Spring Boot's error answer");
    }
    let named = [
        ("gunicorn", ServerKind::Gunicorn),
        ("uvicorn", ServerKind::Uvicorn),
        ("apache-coyote", ServerKind::Tomcat),
        ("apache", ServerKind::Apache),
        ("nginx", ServerKind::Nginx),
        ("openresty", ServerKind::Nginx),
        ("jetty", ServerKind::Jetty),
        ("lighttpd", ServerKind::Lighttpd),
        ("caddy", ServerKind::Caddy),
        ("aiohttp", ServerKind::Aiohttp),
        ("haproxy", ServerKind::Haproxy),
    ];
    if let Some((_, kind)) = named.iter().find(|(name, _)| lower.contains(name)) {
        return by_header(*kind);
    }
    if !server.is_empty() {
        return by_header(ServerKind::Unknown);
    }
    if head
        .header("x-powered-by")
        .is_some_and(|p| p.eq_ignore_ascii_case("express"))
    {
        return said(ServerKind::Express, "X-Powered-By: Express");
    }
    let position = |name: &str| {
        head.headers
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(name))
    };
    if let Some(advertised) = head.advertised_keepalive_s() {
        // Tomcat sends no reason phrase and Keep-Alive before Connection;
        // Node sends "OK" and Connection first.
        let keep_alive_first = position("keep-alive") < position("connection");
        if head.reason.is_empty() && keep_alive_first {
            return said(
                ServerKind::Tomcat,
                "no Server header, an empty reason phrase and Keep-Alive: timeout=N before Connection (Tomcat's)",
            );
        }
        let node_buffer = measured_s.is_some_and(|m| (m - advertised - 1.0).abs() < 0.3);
        return said(
            ServerKind::Node,
            if node_buffer {
                "no Server header, Keep-Alive: timeout=N and a close 1 s after it (Node's)"
            } else {
                "no Server header and Keep-Alive: timeout=N after Connection (Node's)"
            },
        );
    }
    let all_lowercase = !head.headers.is_empty()
        && head
            .headers
            .iter()
            .all(|(k, _)| !k.chars().any(|c| c.is_ascii_uppercase()));
    if all_lowercase && position("date").is_none() {
        return said(
            ServerKind::Haproxy,
            "no Server or Date header and lowercase header names (HAProxy's own answers)",
        );
    }
    // Go's net/http writes the handler's headers, then Date, then
    // Content-Length, canonically capitalised.
    let names: Vec<&str> = head.headers.iter().map(|(k, _)| k.as_str()).collect();
    if names.ends_with(&["Date", "Content-Length"])
        || names.ends_with(&["Date", "Content-Length", "Content-Type"])
    {
        return said(
            ServerKind::GoNetHttp,
            "no Server header and Date then Content-Length last (Go's net/http)",
        );
    }
    said(ServerKind::Unknown, "no Server header")
}

fn is_spring_error(body: &str) -> bool {
    body.contains("Whitelabel Error Page")
        || (body.trim_start().starts_with('{')
            && ["\"timestamp\"", "\"status\"", "\"error\"", "\"path\""]
                .iter()
                .all(|k| body.contains(k)))
}

/// The app-side fix: the setting that keeps idle connections open for
/// `keep_s` seconds, named for the server.
pub fn setting(kind: ServerKind, keep_s: f64) -> String {
    let ms = keep_s * 1000.0;
    match kind {
        ServerKind::Node => format!(
            "Node.js: server.keepAliveTimeout = {ms} (and server.headersTimeout above it); Fastify: fastify({{ keepAliveTimeout: {ms} }})"
        ),
        ServerKind::Express => format!(
            "Express: const server = app.listen(...); server.keepAliveTimeout = {ms}; server.headersTimeout = {}",
            ms + 1000.0
        ),
        ServerKind::Gunicorn => format!("gunicorn --keep-alive {keep_s}"),
        ServerKind::Uvicorn => format!("uvicorn --timeout-keep-alive {keep_s}"),
        ServerKind::Apache => format!("Apache: KeepAliveTimeout {keep_s}"),
        ServerKind::Nginx => format!("nginx: keepalive_timeout {keep_s}s;"),
        ServerKind::Tomcat => format!(
            "Tomcat: keepAliveTimeout=\"{ms}\" on the <Connector> in server.xml (embedded in Spring Boot: server.tomcat.keep-alive-timeout={keep_s}s)"
        ),
        ServerKind::SpringBoot => format!(
            "Spring Boot: server.tomcat.keep-alive-timeout={keep_s}s (Jetty: server.jetty.connection-idle-timeout={keep_s}s; Undertow: server.undertow.no-request-timeout={keep_s}s)"
        ),
        ServerKind::Jetty => format!(
            "Jetty: idleTimeout of the ServerConnector, connector.setIdleTimeout({ms}) (jetty.http.idleTimeout={ms})"
        ),
        ServerKind::Lighttpd => format!(
            "lighttpd: server.max-keep-alive-idle = {keep_s} (it closes on a once-a-second sweep, up to 1 s late)"
        ),
        ServerKind::Haproxy => format!("HAProxy: timeout http-keep-alive {keep_s}s (defaults or frontend)"),
        ServerKind::Caddy => format!("Caddy: servers {{ timeouts {{ idle {keep_s}s }} }} in the global options"),
        ServerKind::Aiohttp => format!("aiohttp: web.run_app(app, keepalive_timeout={keep_s}) (AppRunner(app, keepalive_timeout={keep_s}))"),
        ServerKind::GoNetHttp => format!("Go net/http: http.Server{{IdleTimeout: {keep_s} * time.Second}}"),
        ServerKind::Envoy | ServerKind::Unknown => format!(
            "Node.js server.keepAliveTimeout = {ms}, gunicorn --keep-alive {keep_s}, uvicorn --timeout-keep-alive {keep_s}, nginx keepalive_timeout {keep_s}s, Apache KeepAliveTimeout {keep_s}, Tomcat keepAliveTimeout=\"{ms}\", Go http.Server IdleTimeout"
        ),
    }
}
