//! gRPC distribution across replicas: does a client's stream of RPCs reach
//! every replica behind a Service, or is it pinned to one connection?

/// Code generated from proto/podprobe/v1/identity.proto.
pub mod pb {
    tonic::include_proto!("podprobe.v1");
}

pub mod judge;
pub mod measure;

use crate::cli::{GlobalArgs, GrpcArgs};
use crate::report::{millis, timed, Check, Report};
use crate::Error;

/// RPCs and concurrency when `doctor --grpc` runs the check.
const DOCTOR_RPCS: u32 = 300;
const DOCTOR_CONCURRENCY: u32 = 10;

fn measure_and_judge(options: &measure::Options) -> crate::Result<Check> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the runtime", e))?;
    let evidence = runtime.block_on(measure::measure(options))?;
    Ok(judge::judge(&evidence))
}

/// `podprobe grpc`: a target that cannot be reached is one line and an exit
/// code, not a report.
pub fn run(args: &GrpcArgs, global: &GlobalArgs) -> crate::Result<Report> {
    let report = Report::start(crate::net::report_context());
    let options = measure::Options {
        target: args.target.clone(),
        rpcs: args.rpcs,
        concurrency: args.concurrency,
        headless: args.headless.clone(),
        tls: args.tls,
        timeout: global.timeout,
    };
    let started = std::time::Instant::now();
    let mut check = measure_and_judge(&options)?;
    check.duration_ms = millis(started.elapsed());
    Ok(report.finish(vec![check]))
}

/// `doctor --grpc TARGET`: the same check, inside a larger report, where a
/// target that cannot be reached is a check in error.
pub fn doctor_check(target: &str, global: &GlobalArgs) -> Check {
    let options = measure::Options {
        target: target.to_string(),
        rpcs: DOCTOR_RPCS,
        concurrency: DOCTOR_CONCURRENCY,
        headless: None,
        tls: false,
        timeout: global.timeout,
    };
    timed(|| {
        measure_and_judge(&options).unwrap_or_else(|e| Check::errored(judge::ID, judge::TITLE, &e))
    })
}
