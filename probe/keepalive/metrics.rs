//! `http.keepalive-mismatch` evidence as metrics: the two idle timeouts
//! side by side. Reads only the evidence keys the README documents.

use serde::Deserialize;

use crate::metrics::{evidence, Family, Sample};
use crate::report::Check;

#[derive(Deserialize)]
struct Mismatch {
    upstream: String,
    app_idle_timeout_s: Option<f64>,
    proxy_idle_timeout_s: Option<f64>,
    proxy_source: Option<String>,
}

pub fn samples(check: &Check) -> Vec<Sample> {
    if check.id != super::judge::ID {
        return Vec::new();
    }
    let Some(e) = evidence::<Mismatch>(check) else {
        return Vec::new();
    };
    let mut samples = Vec::new();
    if let Some(app) = e.app_idle_timeout_s {
        samples.push(Sample::new(
            Family::KeepaliveIdleTimeout,
            &[&e.upstream, "app"],
            app,
        ));
    }
    // Envoy's default assumed when no config was read is not a measurement.
    if let (Some(proxy), Some("config_dump")) = (e.proxy_idle_timeout_s, e.proxy_source.as_deref())
    {
        samples.push(Sample::new(
            Family::KeepaliveIdleTimeout,
            &[&e.upstream, "proxy"],
            proxy,
        ));
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;
    use serde_json::json;

    fn check(source: &str) -> Check {
        Check::new(
            "http.keepalive-mismatch",
            "t",
            Status::Fail,
            "s",
            &json!({"upstream": "127.0.0.1:8080", "app_idle_timeout_s": 5.002, "closed_by": "fin",
                    "proxy": "envoy", "proxy_idle_timeout_s": 3600.0, "proxy_source": source}),
        )
    }

    #[test]
    fn both_sides_when_the_proxy_config_was_read() {
        assert_eq!(
            samples(&check("config_dump")),
            vec![
                Sample::new(
                    Family::KeepaliveIdleTimeout,
                    &["127.0.0.1:8080", "app"],
                    5.002
                ),
                Sample::new(
                    Family::KeepaliveIdleTimeout,
                    &["127.0.0.1:8080", "proxy"],
                    3600.0
                ),
            ]
        );
        assert_eq!(samples(&check("default")).len(), 1);
    }
}
