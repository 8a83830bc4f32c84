//! `tcp.reachability` and `net.conntrack` evidence as metrics. Reads only
//! the evidence keys the README documents.

use serde::Deserialize;

use crate::metrics::{evidence, seconds, Family, Sample};
use crate::report::Check;

#[derive(Deserialize)]
struct Reachability {
    targets: Vec<Target>,
}

#[derive(Deserialize)]
pub(crate) struct Target {
    target: String,
    outcome: String,
    connect_ms: Option<f64>,
}

#[derive(Deserialize)]
struct Conntrack {
    count: u64,
    max: u64,
}

pub fn samples(check: &Check) -> Vec<Sample> {
    match check.id.as_str() {
        "tcp.reachability" => evidence::<Reachability>(check)
            .map(|e| e.targets.iter().flat_map(connect).collect())
            .unwrap_or_default(),
        "net.conntrack" => evidence::<Conntrack>(check)
            .map(|e| {
                vec![
                    Sample::new(Family::ConntrackEntries, &[], e.count as f64),
                    Sample::new(Family::ConntrackMax, &[], e.max as f64),
                ]
            })
            .unwrap_or_default(),
        "net.egress" => crate::svc::metrics::samples(check),
        _ => Vec::new(),
    }
}

/// A connect counted by outcome and, when it succeeded, its time observed.
pub(crate) fn connect(target: &Target) -> Vec<Sample> {
    let mut samples = vec![Sample::new(
        Family::TcpConnect,
        &[&target.target, &target.outcome],
        1.0,
    )];
    if let ("ok", Some(ms)) = (target.outcome.as_str(), target.connect_ms) {
        samples.push(Sample::new(
            Family::TcpConnectDuration,
            &[&target.target],
            seconds(ms),
        ));
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;
    use serde_json::json;

    #[test]
    fn connects_by_outcome_and_time_of_the_good_ones() {
        let check = Check::new(
            "tcp.reachability",
            "t",
            Status::Fail,
            "s",
            &json!({"targets": [
                {"target": "web:80", "resolved": ["10.96.0.20"], "outcome": "ok", "connect_ms": 0.5, "error": null},
                {"target": "db:5432", "resolved": ["10.96.0.30"], "outcome": "timeout", "connect_ms": 1000.2, "error": "connection timed out"}]}),
        );
        assert_eq!(
            samples(&check),
            vec![
                Sample::new(Family::TcpConnect, &["web:80", "ok"], 1.0),
                Sample::new(Family::TcpConnectDuration, &["web:80"], 0.0005),
                Sample::new(Family::TcpConnect, &["db:5432", "timeout"], 1.0),
            ]
        );
    }

    #[test]
    fn conntrack_table_fill() {
        let check = Check::new(
            "net.conntrack",
            "t",
            Status::Warn,
            "s",
            &json!({"count": 210, "max": 256, "insert_failed": 0, "drop": 0, "early_drop": 0, "invalid": 0}),
        );
        assert_eq!(
            samples(&check),
            vec![
                Sample::new(Family::ConntrackEntries, &[], 210.0),
                Sample::new(Family::ConntrackMax, &[], 256.0),
            ]
        );
        let unreadable = Check::skipped("net.conntrack", "t", "not readable");
        assert!(samples(&unreadable).is_empty());
    }
}
