//! `http.keepalive-mismatch`: does Envoy keep upstream connections idle
//! longer than the app behind it does? Then Envoy can send a request on a
//! connection the app is closing and answer 503 with flag UC.

use serde::Serialize;

use super::envoy::{Match, ProxyKind, ProxySide, ProxySource};
use super::measure::{AppSide, ClosedBy};
use crate::report::{Check, Status};

pub const ID: &str = "http.keepalive-mismatch";
pub const TITLE: &str = "Envoy upstream idle timeout vs the app's keep-alive";

/// The race window is the time between the app's FIN and Envoy noticing
/// it; a proxy that idles out this much sooner is safe.
const MARGIN_S: f64 = 1.0;

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

fn cluster_name(proxy: &ProxySide) -> String {
    proxy.cluster.clone().unwrap_or_else(|| "-".into())
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
                secs(proxy_t)
            ),
        );
    }
    if app.closed_by == ClosedBy::Immediate {
        return (
            Status::Pass,
            format!("{up} closes every connection right after its response ({} {}), so the proxy never reuses an idle one", app.http_version, app.connection_header.as_deref().map_or("without keep-alive".to_string(), |c| format!("Connection: {c}"))),
        );
    }
    if proxy.proxy_source == ProxySource::Default {
        let why = proxy.notes.first().map_or("", String::as_str);
        return (
            Status::Warn,
            format!(
                "{app_said}; {why}, so the proxy's idle timeout of {} is an assumption (Envoy's default, which Istio keeps)",
                secs(proxy_t)
            ),
        );
    }
    let cluster = cluster_name(proxy);
    if proxy.max_requests_per_connection == Some(1) {
        return (
            Status::Pass,
            format!("Envoy cluster {cluster} sends one request per upstream connection (max_requests_per_connection: 1), so it never reuses an idle one; {app_said}"),
        );
    }
    match app.app_idle_timeout_s {
        Some(app_t) if app_t >= proxy_t + MARGIN_S => (
            Status::Pass,
            format!("Envoy cluster {cluster} idles out after {}, before the app: {app_said}", secs(proxy_t)),
        ),
        Some(_) => (
            Status::Fail,
            format!(
                "{app_said} but Envoy cluster {cluster} keeps them up to {}: Envoy can send a request on a connection the app is closing (503 UC)",
                secs(proxy_t)
            ),
        ),
        None if app.max_wait_s >= proxy_t + MARGIN_S => (
            Status::Pass,
            format!("Envoy cluster {cluster} idles out after {}, before the app: {app_said}", secs(proxy_t)),
        ),
        None => (
            Status::Warn,
            format!(
                "{app_said}, but Envoy cluster {cluster} keeps them up to {}: wait longer than that to compare",
                secs(proxy_t)
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
            "app:   {} {} server={} advertised Keep-Alive timeout={} measured={} closed_by={} samples=[{}]",
            app.http_version,
            app.status_code,
            app.server.as_deref().unwrap_or("-"),
            opt(app.advertised_keepalive_s),
            opt(app.app_idle_timeout_s),
            app.closed_by.label(),
            samples.join(", ")
        ),
        format!(
            "proxy: {} cluster={} idle_timeout={} ({}) max_requests_per_connection={}",
            if proxy.proxy == ProxyKind::Envoy { "envoy" } else { "none" },
            cluster_name(proxy),
            secs(proxy.proxy_idle_timeout_s),
            match (&proxy.proxy_source, &proxy.idle_timeout_field) {
                (ProxySource::Default, _) => "assumed default".to_string(),
                (ProxySource::ConfigDump, Some(field)) => field.clone(),
                (ProxySource::ConfigDump, None) => "not set: Envoy's default".to_string(),
            },
            proxy
                .max_requests_per_connection
                .map_or("-".to_string(), |n| n.to_string())
        ),
    ];
    if !proxy.counters.is_empty() {
        let counters: Vec<String> = proxy
            .counters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        lines.push(format!("stats: {}", counters.join(" ")));
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
    let Some(app_t) = app.app_idle_timeout_s else {
        out.push(format!(
            "measure longer: podprobe keepalive {} --max-wait {}s",
            app.upstream,
            (proxy.proxy_idle_timeout_s + 5.0).ceil()
        ));
        return out;
    };
    // Below the app's timeout by the race margin, but never zero.
    let idle = if app_t >= 2.0 * MARGIN_S {
        (app_t - MARGIN_S).floor()
    } else {
        app_t / 2.0
    };
    let host = proxy
        .service_host
        .clone()
        .or_else(|| {
            (proxy.cluster_match == Some(Match::Outbound))
                .then(|| {
                    proxy
                        .cluster
                        .as_deref()?
                        .rsplit('|')
                        .next()
                        .map(str::to_string)
                })
                .flatten()
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
    let keep = (proxy.proxy_idle_timeout_s + 5.0).ceil();
    let server = app.server.as_deref().unwrap_or("").to_ascii_lowercase();
    let app_side = if server.contains("uvicorn") {
        format!("uvicorn --timeout-keep-alive {keep}")
    } else if server.contains("gunicorn") {
        format!("gunicorn --keep-alive {keep}")
    } else if server.contains("nginx") {
        format!("nginx: keepalive_timeout {keep}s;")
    } else if server.contains("apache") {
        format!("Apache: KeepAliveTimeout {keep}")
    } else if app.server.is_none() && app.advertised_keepalive_s.is_some() {
        // Node's http server sends Keep-Alive: timeout=N and no Server header.
        format!(
            "Node.js: server.keepAliveTimeout = {}; server.headersTimeout above it",
            keep * 1000.0
        )
    } else {
        format!(
            "Node.js server.keepAliveTimeout = {}, gunicorn --keep-alive {keep}, uvicorn --timeout-keep-alive {keep}, nginx keepalive_timeout {keep}s",
            keep * 1000.0
        )
    };
    out.push(format!(
        "or keep idle connections open in the app longer than Envoy's {}: {app_side}",
        secs(proxy.proxy_idle_timeout_s)
    ));
    out.push(
        "and retry idempotent routes on a reset (VirtualService http[].retries: attempts: 2, retryOn: reset,connect-failure)"
            .to_string(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keepalive::envoy::{self, ProxySide};

    fn app(timeout: Option<f64>, closed_by: ClosedBy, server: Option<&str>) -> AppSide {
        AppSide {
            upstream: "127.0.0.1:8083".into(),
            http_version: "HTTP/1.1".into(),
            status_code: 200,
            server: server.map(str::to_string),
            connection_header: Some("keep-alive".into()),
            advertised_keepalive_s: None,
            app_idle_timeout_s: timeout,
            closed_by,
            samples_s: vec![timeout; 3],
            max_wait_s: 10.0,
        }
    }

    fn sidecar(idle: Option<&str>, stats: &str) -> ProxySide {
        let mut dump =
            include_str!("../../tests/fixtures/envoy/istio-1.18-deathstarbench-config_dump.json")
                .to_string();
        if let Some(idle) = idle {
            dump = dump.replacen(
                r#""name": "inbound|8083||","#,
                &format!(r#""name": "inbound|8083||", "common_http_protocol_options": {{"idle_timeout": "{idle}"}},"#),
                1,
            );
        }
        let clusters = envoy::parse_config_dump(&dump).unwrap();
        ProxySide::from_config("dump".into(), &clusters, "127.0.0.1", 8083, Ok(stats))
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
