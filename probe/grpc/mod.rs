//! gRPC distribution across replicas: does a client's stream of RPCs reach
//! every replica behind a Service, or is it pinned to one connection?

/// Code generated from proto/podprobe/v1/identity.proto.
pub mod pb {
    tonic::include_proto!("podprobe.v1");
}

pub mod judge;
pub mod measure;
pub mod metrics;

use std::time::Duration;

use crate::report::{millis, timed_async, Check, Report};
pub use measure::Options;

/// RPCs and concurrency when `doctor --grpc` runs the check.
const DOCTOR_RPCS: u32 = 300;
const DOCTOR_CONCURRENCY: u32 = 10;

impl Options {
    /// What `doctor --grpc TARGET` runs: a short series over plaintext.
    pub fn doctor(target: &str, timeout: Duration) -> Self {
        Options {
            target: target.to_string(),
            rpcs: DOCTOR_RPCS,
            concurrency: DOCTOR_CONCURRENCY,
            headless: None,
            tls: false,
            timeout,
        }
    }
}

async fn measure_and_judge(options: &Options) -> crate::Result<Check> {
    let evidence = measure::measure(options).await?;
    Ok(judge::judge(&evidence))
}

/// `podprobe grpc`: a target that cannot be reached is one line and an exit
/// code, not a report.
pub async fn run(options: &Options) -> crate::Result<Report> {
    let report = Report::start(crate::net::report_context());
    let started = std::time::Instant::now();
    let mut check = measure_and_judge(options).await?;
    check.duration_ms = millis(started.elapsed());
    Ok(report.finish(vec![check]))
}

/// `doctor --grpc TARGET...`: the same check per target, inside a larger
/// report, where a target that cannot be reached is a check in error.
pub async fn doctor_checks(targets: &[Options]) -> crate::Result<Vec<Check>> {
    let mut checks = Vec::with_capacity(targets.len());
    for options in targets {
        checks.push(
            timed_async(async {
                measure_and_judge(options)
                    .await
                    .unwrap_or_else(|e| Check::errored(judge::ID, judge::TITLE, &e))
            })
            .await,
        );
    }
    Ok(checks)
}
