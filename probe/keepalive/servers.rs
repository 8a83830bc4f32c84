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

#[cfg(test)]
mod tests {
    use super::*;

    /// A response head as recorded from the real server (bare CRLF lines).
    fn head(text: &str) -> ResponseHead {
        let mut lines = text.split("\r\n");
        let mut status = lines.next().unwrap().splitn(3, ' ');
        ResponseHead {
            version: status.next().unwrap().to_string(),
            status: status.next().unwrap().parse().unwrap(),
            reason: status.next().unwrap_or("").to_string(),
            headers: lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
        }
    }

    fn kind(text: &str, body: &str, measured: Option<f64>) -> ServerKind {
        identify(&head(text), body.as_bytes(), measured).0
    }

    #[test]
    fn servers_by_header_and_behaviour() {
        // Recorded from Debian 12's servers and PyPI's aiohttp.
        let tomcat = "HTTP/1.1 200 \r\nAccept-Ranges: bytes\r\nETag: W/\"3-1796076281699\"\r\nContent-Type: text/html\r\nContent-Length: 3\r\nDate: Mon, 30 Nov 2026 22:04:49 GMT\r\nKeep-Alive: timeout=4\r\nConnection: keep-alive";
        assert_eq!(kind(tomcat, "ok\n", Some(4.0)), ServerKind::Tomcat);
        let node = "HTTP/1.1 200 OK\r\nDate: Mon, 30 Nov 2026 22:04:49 GMT\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 3";
        assert_eq!(kind(node, "ok\n", Some(6.0)), ServerKind::Node);
        assert!(identify(&head(node), b"", Some(6.0))
            .1
            .contains("1 s after"));
        let express = "HTTP/1.1 200 OK\r\nX-Powered-By: Express\r\nContent-Type: text/html; charset=utf-8\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5";
        assert_eq!(kind(express, "ok", None), ServerKind::Express);
        let haproxy = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain";
        assert_eq!(kind(haproxy, "ok", None), ServerKind::Haproxy);
        let go = "HTTP/1.1 200 OK\r\nDate: Mon, 30 Nov 2026 22:55:21 GMT\r\nContent-Length: 3\r\nContent-Type: text/plain; charset=utf-8";
        assert_eq!(kind(go, "ok\n", Some(2.0)), ServerKind::GoNetHttp);
        for (server, expected) in [
            ("Caddy", ServerKind::Caddy),
            ("Python/3.11 aiohttp/3.14.5", ServerKind::Aiohttp),
            ("lighttpd/1.4.69", ServerKind::Lighttpd),
            ("Apache/2.4.71 (Debian)", ServerKind::Apache),
            ("Apache-Coyote/1.1", ServerKind::Tomcat),
            ("nginx/1.22.1", ServerKind::Nginx),
            ("gunicorn", ServerKind::Gunicorn),
            ("uvicorn", ServerKind::Uvicorn),
            ("Jetty(10.0.20)", ServerKind::Jetty),
            ("istio-envoy", ServerKind::Envoy),
            ("Kestrel", ServerKind::Unknown),
        ] {
            let text = format!("HTTP/1.1 200 OK\r\nServer: {server}\r\nContent-Length: 2");
            assert_eq!(kind(&text, "ok", None), expected, "{server}");
        }
        // Spring Boot's error answer, whatever server embeds it.
        let spring = r#"{"timestamp":"2026-11-30T22:00:00.000+00:00","status":404,"error":"Not Found","path":"/"}"#;
        assert_eq!(
            kind("HTTP/1.1 404 \r\nContent-Type: application/json\r\nKeep-Alive: timeout=60\r\nConnection: keep-alive", spring, None),
            ServerKind::SpringBoot
        );
        let through_envoy = "HTTP/1.1 200 OK\r\nserver: nginx\r\nx-envoy-upstream-service-time: 3";
        assert_eq!(kind(through_envoy, "ok", None), ServerKind::Envoy);
    }

    #[test]
    fn every_server_gets_its_own_setting() {
        for (kind, text) in [
            (
                ServerKind::Tomcat,
                "keepAliveTimeout=\"65000\" on the <Connector>",
            ),
            (ServerKind::Lighttpd, "server.max-keep-alive-idle = 65"),
            (ServerKind::Haproxy, "timeout http-keep-alive 65s"),
            (ServerKind::Caddy, "servers { timeouts { idle 65s } }"),
            (ServerKind::Aiohttp, "keepalive_timeout=65"),
            (ServerKind::GoNetHttp, "IdleTimeout: 65 * time.Second"),
            (ServerKind::Apache, "KeepAliveTimeout 65"),
            (
                ServerKind::SpringBoot,
                "server.tomcat.keep-alive-timeout=65s",
            ),
            (ServerKind::Jetty, "setIdleTimeout(65000)"),
            (ServerKind::Express, "server.keepAliveTimeout = 65000"),
            (ServerKind::Node, "keepAliveTimeout: 65000"),
        ] {
            assert!(
                setting(kind, 65.0).contains(text),
                "{kind:?}: {}",
                setting(kind, 65.0)
            );
        }
    }
}
