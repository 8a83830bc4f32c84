//! `http.keepalive-mismatch`: does Envoy keep upstream connections idle
//! longer than the app behind it does? Then Envoy can send a request on a
//! connection the app is closing and answer 503 with flag UC.

use serde::Serialize;

use super::envoy::{ProxyKind, ProxySide, ProxySource};
use super::measure::{AppSide, ClosedBy};
use super::route::FoundBy;
use super::servers::{self, ServerKind};
use crate::report::{Check, Status};

pub const ID: &str = "http.keepalive-mismatch";
pub const TITLE: &str = "Envoy upstream idle timeout vs the app's keep-alive";

/// The race window is the time between the app's FIN and Envoy noticing
/// it; a proxy that idles out this much sooner is safe.
const MARGIN_S: f64 = 1.0;
/// The wire measurement starts when the response's last byte is read, a
/// little after the server started its timer: samples land a few ms short.
const SLACK_S: f64 = 0.05;
/// A server that closes on a once-a-second sweep may close up to this much
/// earlier than a sample shows.
const TICK_S: f64 = 1.0;

const REFS: &[&str] = &[
    "https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/core/v3/protocol.proto#envoy-v3-api-field-config-core-v3-httpprotocoloptions-idle-timeout",
    "https://istio.io/latest/docs/reference/config/networking/destination-rule/#ConnectionPoolSettings-HTTPSettings",
];

#[derive(Serialize)]
struct Evidence<'a> {
    #[serde(flatten)]
    app: &'a AppSide,
    #[serde(flatten)]
    proxy: &'a ProxySide,
}

pub fn judge(app: &AppSide, proxy: &ProxySide) -> Check {
    let (status, summary) = verdict(app, proxy);
    let details = details(app, proxy, &summary);
    let mut check =
        Check::new(ID, TITLE, status, summary, &Evidence { app, proxy }).with_details(details);
    if matches!(status, Status::Warn | Status::Fail) {
        check = check.with_remedy(remedy(app, proxy)).with_refs(REFS);
    }
    check
}

fn secs(s: f64) -> String {
    let r = (s * 1000.0).round() / 1000.0;
    format!("{r} s")
}

/// The proxy's idle timeout in words (`0s` disables it).
fn idle_words(t: Option<f64>) -> String {
    t.map_or("never (idle_timeout 0s disables it)".to_string(), secs)
}

fn cluster_name(proxy: &ProxySide) -> String {
    proxy.cluster.clone().unwrap_or_else(|| "-".into())
}

/// The app closes on a timer tick: its samples spread, or it is lighttpd.
fn ticks(app: &AppSide) -> bool {
    app.spread_note().is_some() || app.server_kind == ServerKind::Lighttpd
}

/// How much sooner than the app's shortest sample the proxy must idle out.
fn margin(app: &AppSide) -> f64 {
    if ticks(app) {
        MARGIN_S + TICK_S - SLACK_S
    } else {
        MARGIN_S - SLACK_S
    }
}

fn verdict(app: &AppSide, proxy: &ProxySide) -> (Status, String) {
    let up = &app.upstream;
    let proxy_t = proxy.proxy_idle_timeout_s;
    let destroyed = proxy
        .counters
        .get("upstream_cx_destroy_remote_with_active_rq")
        .copied()
        .unwrap_or(0);
    let app_said = match app.app_idle_timeout_s {
        Some(t) => format!("{up} closes idle connections after {}", secs(t)),
        None => format!(
            "{up} kept idle connections open past --max-wait ({})",
            secs(app.max_wait_s)
        ),
    };
    if destroyed > 0 {
        return (
            Status::Fail,
            format!(
                "it is happening: Envoy cluster {} lost {destroyed} upstream connection(s) closed by the app with a request on them (upstream_cx_destroy_remote_with_active_rq); {app_said}, Envoy after {}",
                cluster_name(proxy),
                idle_words(proxy_t)
            ),
        );
    }
    if app.closed_by == ClosedBy::Immediate {
        return (
            Status::Pass,
            format!("{up} closes every connection right after its response ({} {}), so the proxy never reuses an idle one", app.http_version, app.connection_header.as_deref().map_or("without keep-alive".to_string(), |c| format!("Connection: {c}"))),
        );
    }
    if app.server_kind == ServerKind::Envoy {
        return (
            Status::Warn,
            format!(
                "{up} answered through an Envoy ({}): {app_said}, but that is Envoy's downstream idle timeout, not the app's; measure the app where no proxy is in between (127.0.0.1:PORT in its own pod)",
                app.server_identified_by
            ),
        );
    }
    if proxy.proxy_source == ProxySource::Default {
        let why = proxy.notes.first().map_or("", String::as_str);
        return (
            Status::Warn,
            format!(
                "{app_said}; {why}, so the proxy's idle timeout of {} is an assumption (Envoy's default, which Istio keeps)",
                idle_words(proxy_t)
            ),
        );
    }
    let cluster = cluster_name(proxy);
    if proxy.cluster_found_by == Some(FoundBy::TcpProxy) {
        return (
            Status::Pass,
            format!("Envoy relays this port as plain TCP (tcp_proxy to cluster {cluster}): every client connection has an upstream connection of its own, so Envoy never reuses an idle one (the client's own pool must idle out before the app: {app_said})"),
        );
    }
    if proxy.max_requests_per_connection == Some(1) {
        return (
            Status::Pass,
            format!("Envoy cluster {cluster} sends one request per upstream connection (max_requests_per_connection: 1), so it never reuses an idle one; {app_said}"),
        );
    }
    let weighted = if proxy.clusters.len() > 1 {
        format!(
            " (the longest of the {} weighted clusters the route picks)",
            proxy.clusters.len()
        )
    } else {
        String::new()
    };
    let margin = margin(app);
    match (app.app_idle_timeout_s, proxy_t) {
        (Some(app_t), Some(proxy_t)) if app_t >= proxy_t + margin => (
            Status::Pass,
            format!("Envoy cluster {cluster} idles out after {}{weighted}, before the app: {app_said}", secs(proxy_t)),
        ),
        (Some(_), _) => (
            Status::Fail,
            format!(
                "{app_said} but Envoy cluster {cluster} keeps them {}{weighted}: Envoy can send a request on a connection the app is closing (503 UC)",
                proxy_t.map_or("open forever (idle_timeout 0s disables the timeout)".to_string(), |t| format!("up to {}", secs(t)))
            ),
        ),
        (None, Some(proxy_t)) if app.max_wait_s >= proxy_t + margin => (
            Status::Pass,
            format!("Envoy cluster {cluster} idles out after {}{weighted}, before the app: {app_said}", secs(proxy_t)),
        ),
        (None, _) => (
            Status::Warn,
            format!(
                "{app_said}, but Envoy cluster {cluster} keeps them {}{weighted}: wait longer than that to compare",
                proxy_t.map_or("forever (idle_timeout 0s)".to_string(), |t| format!("up to {}", secs(t)))
            ),
        ),
    }
}

fn details(app: &AppSide, proxy: &ProxySide, summary: &str) -> Vec<String> {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), secs);
    let samples: Vec<String> = app
        .samples_s
        .iter()
        .map(|s| s.map_or("open".to_string(), |s| format!("{s}")))
        .collect();
    let mut lines = vec![
        format!(
            "app:   {} {} server={} ({}: {}) advertised Keep-Alive timeout={} measured={} closed_by={} samples=[{}]",
            app.http_version,
            app.status_code,
            app.server.as_deref().unwrap_or("-"),
            app.server_kind.name(),
            app.server_identified_by,
            opt(app.advertised_keepalive_s),
            opt(app.app_idle_timeout_s),
            app.closed_by.label(),
            samples.join(", ")
        ),
        format!(
            "proxy: {} cluster={} idle_timeout={} ({}) max_requests_per_connection={} found_by={}",
            if proxy.proxy == ProxyKind::Envoy { "envoy" } else { "none" },
            cluster_name(proxy),
            idle_words(proxy.proxy_idle_timeout_s),
            match (&proxy.proxy_source, &proxy.idle_timeout_field) {
                (ProxySource::Default, _) => "assumed default".to_string(),
                (ProxySource::ConfigDump, Some(field)) => field.clone(),
                (ProxySource::ConfigDump, None) => "not set: Envoy's default".to_string(),
            },
            proxy
                .max_requests_per_connection
                .map_or("-".to_string(), |n| n.to_string()),
            proxy
                .cluster_found_by
                .map_or("-".to_string(), |f| format!("{f:?}").to_lowercase())
        ),
    ];
    for step in &proxy.route {
        lines.push(format!("route: {step}"));
    }
    if proxy.clusters.len() > 1 {
        for c in &proxy.clusters {
            lines.push(format!(
                "weighted: {} weight={} idle_timeout={}",
                c.name,
                c.weight.map_or("-".to_string(), |w| w.to_string()),
                idle_words(c.idle_timeout_s)
            ));
        }
    }
    if !proxy.counters.is_empty() {
        let counters: Vec<String> = proxy
            .counters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        lines.push(format!("stats: {}", counters.join(" ")));
    }
    if let Some(note) = app.spread_note() {
        lines.push(format!("note: {note}"));
    }
    if let (Some(adv), Some(measured)) = (app.advertised_keepalive_s, app.app_idle_timeout_s) {
        if (adv - measured).abs() >= 0.5 {
            lines.push(format!(
                "note: the app advertises Keep-Alive timeout={adv} but closed after {}: the wire is what counts",
                secs(measured)
            ));
        }
    }
    lines.extend(
        proxy
            .notes
            .iter()
            .filter(|n| !summary.contains(n.as_str()))
            .map(|n| format!("note: {n}")),
    );
    lines
}

/// A duration in the form Istio's YAML takes: whole seconds when possible.
fn yaml_duration(s: f64) -> String {
    let ms = (s * 1000.0).floor() as u64;
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn remedy(app: &AppSide, proxy: &ProxySide) -> Vec<String> {
    let mut out = Vec::new();
    if app.server_kind == ServerKind::Envoy {
        out.push(format!(
            "run podprobe keepalive 127.0.0.1:PORT in the app's own pod (kubectl debug -it POD --image=podprobe --target=APP), where no Envoy answers for the app{}",
            proxy
                .cluster
                .as_deref()
                .map_or(String::new(), |c| format!("; the Envoy cluster judged there is {c}"))
        ));
        return out;
    }
    let proxy_t = proxy.proxy_idle_timeout_s;
    let Some(app_t) = app.app_idle_timeout_s else {
        out.push(format!(
            "measure longer: podprobe keepalive {} --max-wait {}s",
            app.upstream,
            proxy_t.map_or(3605.0, |t| (t + 5.0).ceil())
        ));
        return out;
    };
    // Below the app's shortest close by the race margin, but never zero.
    let margin = margin(app);
    let idle = if app_t >= 2.0 * margin {
        (app_t - margin).floor()
    } else {
        app_t / 2.0
    };
    let host = proxy
        .service_host
        .clone()
        .or_else(|| {
            let name = proxy.cluster.as_deref()?;
            let parts: Vec<&str> = name.split('|').collect();
            matches!(parts.first(), Some(&"outbound") | Some(&"inbound-vip"))
                .then(|| parts.last().map(|h| h.to_string()))
                .flatten()
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "SERVICE.NAMESPACE.svc.cluster.local".to_string());
    let name = host.split('.').next().unwrap_or("app");
    out.push(format!(
        "make Envoy drop idle upstream connections before the app does, with a DestinationRule for the service:\n\
         apiVersion: networking.istio.io/v1\n\
         kind: DestinationRule\n\
         metadata:\n  name: {name}-idle-timeout\n\
         spec:\n  host: {host}\n  trafficPolicy:\n    connectionPool:\n      http:\n        idleTimeout: {}",
        yaml_duration(idle)
    ));
    if let Some(proxy_t) = proxy_t {
        let keep = (proxy_t + 5.0).ceil();
        out.push(format!(
            "or keep idle connections open in the app longer than Envoy's {}: {}",
            secs(proxy_t),
            servers::setting(app.server_kind, keep)
        ));
    }
    out.push(
        "and retry idempotent routes on a reset (VirtualService http[].retries: attempts: 2, retryOn: reset,connect-failure)"
            .to_string(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keepalive::envoy::ProxySide;
    use crate::keepalive::{dump, route};

    fn app(timeout: Option<f64>, closed_by: ClosedBy, server: Option<&str>) -> AppSide {
        AppSide {
            upstream: "127.0.0.1:8083".into(),
            http_version: "HTTP/1.1".into(),
            status_code: 200,
            server: server.map(str::to_string),
            server_kind: match server {
                Some(s) if s.starts_with("nginx") => ServerKind::Nginx,
                Some("uvicorn") => ServerKind::Uvicorn,
                _ => ServerKind::Unknown,
            },
            server_identified_by: "test".into(),
            connection_header: Some("keep-alive".into()),
            advertised_keepalive_s: None,
            app_idle_timeout_s: timeout,
            closed_by,
            samples_s: vec![timeout; 4],
            samples_spread_s: timeout.map(|_| 0.0),
            max_wait_s: 10.0,
        }
    }

    /// The Istio 1.18 sidecar dump judged for 127.0.0.1:8083, with an idle
    /// timeout put where Istio puts it (the typed HttpProtocolOptions).
    fn sidecar(idle: Option<&str>, stats: &str) -> ProxySide {
        let mut dump =
            include_str!("../../tests/fixtures/envoy/istio-1.18-deathstarbench-config_dump.json")
                .to_string();
        if let Some(idle) = idle {
            let typed = r#""name": "inbound|8083||","#;
            let at = dump.find(typed).unwrap();
            let options = r#""use_downstream_protocol_config": {"#;
            let at = at + dump[at..].find(options).unwrap();
            dump.insert_str(
                at,
                &format!(r#""common_http_protocol_options": {{"idle_timeout": "{idle}"}}, "#),
            );
        }
        let parsed = dump::parse(dump.as_bytes()).unwrap();
        let destinations = ["127.0.0.1:8083".parse().unwrap()];
        let req = route::Request {
            host: "127.0.0.1",
            port: 8083,
            destinations: &destinations,
            authority: "127.0.0.1:8083",
            path: "/",
            headers: &[],
        };
        ProxySide::from_config("dump".into(), &parsed, &req, Ok(stats))
    }

    fn no_admin() -> ProxySide {
        ProxySide::assumed(
            Some("http://127.0.0.1:15000".into()),
            "nothing answers there".into(),
        )
    }

    #[test]
    fn an_app_that_closes_first_fails_against_a_real_config() {
        let check = judge(
            &app(Some(3.0), ClosedBy::Fin, Some("nginx/1.22.1")),
            &sidecar(None, ""),
        );
        assert_eq!(check.status, Status::Fail, "{}", check.summary);
        assert_eq!(check.evidence["proxy_source"], "config_dump");
        assert_eq!(check.evidence["proxy_idle_timeout_s"], 3600.0);
        assert_eq!(check.evidence["cluster"], "inbound|8083||");
        assert_eq!(check.evidence["cluster_found_by"], "name_rule");
        assert!(
            check.remedy[0].contains("idleTimeout: 2s"),
            "{:?}",
            check.remedy
        );
        assert!(
            check.remedy[0].contains("host: geo.hr2.svc.cluster.local"),
            "{:?}",
            check.remedy
        );
        assert!(
            check.remedy[1].contains("keepalive_timeout 3605s"),
            "{:?}",
            check.remedy
        );
        // Within the race margin is still a race.
        let near = judge(
            &app(Some(2.5), ClosedBy::Fin, None),
            &sidecar(Some("2s"), ""),
        );
        assert_eq!(near.status, Status::Fail, "{}", near.summary);
    }

    #[test]
    fn a_proxy_that_idles_out_first_passes() {
        let check = judge(
            &app(Some(5.0), ClosedBy::Fin, Some("uvicorn")),
            &sidecar(Some("2s"), ""),
        );
        assert_eq!(check.status, Status::Pass, "{}", check.summary);
        assert!(check.remedy.is_empty());
        let open = judge(&app(None, ClosedBy::None, None), &sidecar(Some("2s"), ""));
        assert_eq!(open.status, Status::Pass, "{}", open.summary);
    }

    #[test]
    fn counters_fail_whatever_the_timeouts_say() {
        let stats = "envoy_cluster_upstream_cx_destroy_remote_with_active_rq{envoy_cluster_name=\"inbound|8083||\"} 7\n";
        let check = judge(
            &app(Some(5.0), ClosedBy::Fin, None),
            &sidecar(Some("2s"), stats),
        );
        assert_eq!(check.status, Status::Fail, "{}", check.summary);
        assert!(
            check.summary.contains("it is happening"),
            "{}",
            check.summary
        );
    }

    #[test]
    fn no_admin_warns_with_the_assumed_default() {
        let check = judge(&app(Some(3.0), ClosedBy::Fin, None), &no_admin());
        assert_eq!(check.status, Status::Warn, "{}", check.summary);
        assert_eq!(check.evidence["proxy"], "none");
        assert_eq!(check.evidence["proxy_source"], "default");
        assert_eq!(check.evidence["proxy_idle_timeout_s"], 3600.0);
        assert!(check.summary.contains("assumption"), "{}", check.summary);
    }

    #[test]
    fn an_app_outliving_max_wait_warns_when_the_proxy_waits_longer() {
        let check = judge(&app(None, ClosedBy::None, None), &sidecar(None, ""));
        assert_eq!(check.status, Status::Warn, "{}", check.summary);
        assert!(
            check.remedy[0].contains("--max-wait 3605s"),
            "{:?}",
            check.remedy
        );
        assert_eq!(
            check.evidence["app_idle_timeout_s"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn an_app_closing_every_connection_passes() {
        let check = judge(
            &app(Some(0.0), ClosedBy::Immediate, None),
            &sidecar(None, ""),
        );
        assert_eq!(check.status, Status::Pass, "{}", check.summary);
    }

    #[test]
    fn one_request_per_connection_never_reuses() {
        let mut proxy = sidecar(None, "");
        proxy.max_requests_per_connection = Some(1);
        let check = judge(&app(Some(3.0), ClosedBy::Fin, None), &proxy);
        assert_eq!(check.status, Status::Pass, "{}", check.summary);
    }

    #[test]
    fn yaml_durations() {
        assert_eq!(yaml_duration(4.0), "4s");
        assert_eq!(yaml_duration(0.6), "600ms");
    }
}
