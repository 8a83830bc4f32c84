//! `--push URL`: the metrics of a run sent to a Prometheus Pushgateway, so
//! a Job's or CronJob's results reach Prometheus too.
//!
//! The group is job `podprobe` with the grouping key `namespace` and `pod`
//! (the downward API's `POD_NAMESPACE` and `POD_NAME`; the host name when
//! there is no pod name). A URL that already names a group
//! (`.../metrics/job/...`) is used as given, so a CronJob can keep one
//! stable group instead of one per run's pod.

use std::time::Duration;

use base64::Engine as _;

use super::{Format, Metrics};
use crate::report::{Context, Report};
use crate::Error;

/// The job label of every pushed group.
pub const JOB: &str = "podprobe";

/// Checks `--push URL` up front: bad input is exit 2 before any probing.
pub fn parse_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| match url.strip_prefix("https://") {
            Some(_) => format!(
                "--push '{url}': only http:// is supported (the Pushgateway's own port, 9091, speaks plain HTTP)"
            ),
            None => format!("--push '{url}' is not an http:// URL, e.g. http://pushgateway:9091"),
        })?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || rest.contains(char::is_whitespace) {
        return Err(format!(
            "--push '{url}' has no host, e.g. http://pushgateway:9091"
        ));
    }
    Ok(url.to_string())
}

/// The URL of this run's group under the Pushgateway at `url`.
pub fn group_url(url: &str, context: &Context) -> String {
    let base = url.trim_end_matches('/');
    if base.contains("/metrics/job/") {
        return base.to_string();
    }
    let mut group = format!("{base}/metrics/job/{JOB}");
    if let Some(namespace) = &context.namespace {
        group.push_str(&format!("/namespace{}", path_value(namespace)));
    }
    let pod = context.pod.as_deref().unwrap_or(&context.hostname);
    group.push_str(&format!("/pod{}", path_value(pod)));
    group
}

/// A grouping-key value as a path segment (with its leading slash): plain
/// when it is a DNS name, else in the Pushgateway's `@base64` form, which
/// carries any value (slashes, empty) intact.
fn path_value(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if plain {
        format!("/{value}")
    } else if value.is_empty() {
        // base64 of nothing is nothing; the Pushgateway takes `=` for it.
        "@base64/=".to_string()
    } else {
        format!(
            "@base64/{}",
            base64::engine::general_purpose::URL_SAFE.encode(value)
        )
    }
}

/// `doctor --push`: the metrics of one report, pushed.
pub async fn push_report(url: &str, report: &Report, timeout: Duration) -> crate::Result<()> {
    let metrics = Metrics::new();
    metrics.record_cycle(&report.checks, &crate::checks::samples(&report.checks));
    push_text(url, &report.context, metrics.encode(Format::Text), timeout).await
}

/// Replaces the group's metrics with `exposition` (Prometheus text; HTTP
/// PUT, as the Pushgateway documents for a run's complete set).
pub async fn push_text(
    url: &str,
    context: &Context,
    exposition: String,
    timeout: Duration,
) -> crate::Result<()> {
    let group = group_url(url, context);
    let failed = |why: String| Error::unavailable(format!("pushing to {group}: {why}"));
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout * 5)
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let response = client
        .put(&group)
        .header("Content-Type", Format::Text.content_type())
        .body(exposition)
        .send()
        .await
        .map_err(|e| {
            failed(if e.is_timeout() {
                "no answer in time".to_string()
            } else if e.is_connect() {
                "nothing answers there".to_string()
            } else {
                e.to_string()
            })
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    // The Pushgateway says why in the body (e.g. inconsistent metrics).
    let body = response.text().await.unwrap_or_default();
    let why = body.lines().next().unwrap_or("").trim();
    Err(failed(
        format!("HTTP {status} {why}").trim_end().to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(pod: Option<&str>, namespace: Option<&str>) -> Context {
        Context {
            hostname: "node-3".into(),
            pod: pod.map(String::from),
            namespace: namespace.map(String::from),
            ..Context::default()
        }
    }

    #[test]
    fn groups_by_namespace_and_pod() {
        assert_eq!(
            group_url(
                "http://pgw:9091/",
                &context(Some("podprobe-7x"), Some("shop"))
            ),
            "http://pgw:9091/metrics/job/podprobe/namespace/shop/pod/podprobe-7x"
        );
        assert_eq!(
            group_url("http://pgw:9091", &context(None, None)),
            "http://pgw:9091/metrics/job/podprobe/pod/node-3"
        );
        assert_eq!(
            group_url("http://pgw:9091", &context(Some("a/b"), Some(""))),
            "http://pgw:9091/metrics/job/podprobe/namespace@base64/=/pod@base64/YS9i"
        );
        let given = "http://pgw:9091/metrics/job/podprobe/namespace/shop/pod/nightly";
        assert_eq!(group_url(given, &context(Some("x"), Some("y"))), given);
    }

    #[test]
    fn only_plain_http_urls_are_taken() {
        assert!(parse_url("http://pushgateway.monitoring:9091").is_ok());
        assert!(parse_url("https://pgw:9091")
            .unwrap_err()
            .contains("only http://"));
        assert!(parse_url("pgw:9091").is_err());
        assert!(parse_url("http://").is_err());
        assert!(parse_url("http:///metrics").is_err());
    }
}
