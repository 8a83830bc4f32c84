//! `svc.reachability` and `net.egress` as metrics: each connect counted by
//! outcome and timed when it succeeded, in the families of
//! `tcp.reachability` (targets: the environment's Services, at most
//! [`super::MAX_ENV_SERVICES`] and the API server's name, and the
//! `--external` targets given).

use serde::Deserialize;

use crate::metrics::{evidence, Sample};
use crate::net::metrics::{connect, Target};
use crate::report::Check;

#[derive(Deserialize)]
struct Targets {
    targets: Vec<Reached>,
}

#[derive(Deserialize)]
struct Reached {
    connect: Option<Target>,
}

pub fn samples(check: &Check) -> Vec<Sample> {
    evidence::<Targets>(check)
        .map(|e| {
            e.targets
                .iter()
                .filter_map(|t| t.connect.as_ref())
                .flat_map(connect)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Family;
    use crate::report::Status;
    use serde_json::json;

    #[test]
    fn connects_of_services_count_like_tcp_targets() {
        let check = Check::new(
            "svc.reachability",
            "t",
            Status::Fail,
            "s",
            &json!({"targets": [
                {"service": "kubernetes", "via": "address", "target": "10.96.0.1:443",
                 "connect": {"target": "10.96.0.1:443", "resolved": ["10.96.0.1"], "outcome": "ok", "connect_ms": 0.5, "error": null}},
                {"service": "kubernetes", "via": "name", "target": "kubernetes.default.svc:443", "connect": null}]}),
        );
        assert_eq!(
            samples(&check),
            vec![
                Sample::new(Family::TcpConnect, &["10.96.0.1:443", "ok"], 1.0),
                Sample::new(Family::TcpConnectDuration, &["10.96.0.1:443"], 0.0005),
            ]
        );
    }
}
