//! `grpc.distribution` evidence as metrics: how much of one channel's RPCs
//! the busiest replica took (where replicas are unknown, the busiest
//! connection's share: its replica took at least that). Reads only the
//! evidence keys the README documents.

use serde::Deserialize;

use crate::metrics::{evidence, Family, Sample};
use crate::report::Check;

#[derive(Deserialize)]
struct Distribution {
    target: String,
    runs: Vec<Run>,
}

#[derive(Deserialize)]
struct Run {
    mode: String,
    max_share: Option<f64>,
    #[serde(default)]
    max_connection_share: Option<f64>,
}

/// The run that is what the application sees: its one channel.
const CLIENT_RUN: &str = "single-channel";

pub fn samples(check: &Check) -> Vec<Sample> {
    if check.id != super::judge::ID {
        return Vec::new();
    }
    evidence::<Distribution>(check)
        .and_then(|e| {
            let share = e
                .runs
                .iter()
                .find(|r| r.mode == CLIENT_RUN)
                .and_then(|r| r.max_share.or(r.max_connection_share))?;
            Some(vec![Sample::new(
                Family::GrpcReplicaMaxShare,
                &[&e.target],
                share,
            )])
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;
    use serde_json::json;

    #[test]
    fn without_replica_names_the_busiest_connection_bounds_the_share() {
        let check = Check::new(
            "grpc.distribution",
            "t",
            Status::Warn,
            "s",
            &json!({"target": "grpc.default:50051", "runs": [
                {"mode": "single-channel", "identity": "unknown", "max_share": null,
                 "max_connection_share": 0.69}]}),
        );
        assert_eq!(
            samples(&check),
            vec![Sample::new(
                Family::GrpcReplicaMaxShare,
                &["grpc.default:50051"],
                0.69
            )]
        );
    }

    #[test]
    fn the_single_channel_share() {
        let run = |mode: &str, share: f64| json!({"mode": mode, "identity": "whoami", "rpcs": 300, "ok": 300, "failed": 0, "connections": 1, "replicas_seen": 1, "per_replica": {}, "max_share": share, "fair_share": 0.3333, "p50_ms": 1.0, "p99_ms": 2.0, "errors": {}});
        let check = Check::new(
            "grpc.distribution",
            "t",
            Status::Fail,
            "s",
            &json!({"target": "grpc.default:50051", "balancing": "pick_first", "endpoints": [], "rpc": "whoami",
                    "runs": [run("single-channel", 1.0), run("per-endpoint", 0.3333)]}),
        );
        assert_eq!(
            samples(&check),
            vec![Sample::new(
                Family::GrpcReplicaMaxShare,
                &["grpc.default:50051"],
                1.0
            )]
        );
    }
}
