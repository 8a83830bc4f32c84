//! gRPC distribution across replicas: does a client's stream of RPCs reach
//! every replica behind a Service, or is it pinned to one connection? And
//! does every endpoint answer?

/// Code generated from proto/podprobe/v1/identity.proto.
pub mod pb {
    tonic::include_proto!("podprobe.v1");
}

mod channel;
mod conn;
pub mod judge;
pub mod measure;
mod run;
pub mod tls;
pub mod wire;

use std::io::IsTerminal;

use tokio::sync::watch;

use crate::cli::{GlobalArgs, GrpcArgs};
use crate::report::{Check, Report};
use crate::Error;

/// RPCs and concurrency when `doctor --grpc` runs the check.
const DOCTOR_RPCS: u64 = 300;
const DOCTOR_CONCURRENCY: u32 = 10;

/// A watch that turns true on Ctrl-C or SIGTERM: the run stops sending and
/// reports what it measured.
fn interrupt_signal() -> watch::Receiver<bool> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = tx.send(true);
    });
    rx
}

fn measure_and_judge(options: &measure::Options) -> crate::Result<Vec<Check>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the runtime", e))?;
    let started = std::time::Instant::now();
    let evidence = runtime.block_on(async {
        let interrupt = interrupt_signal();
        measure::measure(options, interrupt).await
    })?;
    let mut checks = judge::judge(&evidence);
    let ms = crate::report::millis(started.elapsed());
    for check in &mut checks {
        check.duration_ms = ms;
    }
    Ok(checks)
}

fn options(args: &GrpcArgs, global: &GlobalArgs) -> measure::Options {
    measure::Options {
        target: args.target.clone(),
        rpcs: args.rpcs,
        concurrency: args.concurrency,
        headless: args.headless.clone(),
        tls: args.tls || args.ca.is_some() || args.insecure,
        tls_options: tls::TlsOptions {
            ca: args.ca.clone(),
            insecure: args.insecure,
        },
        authority: args.authority.clone(),
        method: args.method.clone(),
        timeout: global.timeout,
        progress: std::io::stderr().is_terminal(),
    }
}

/// `podprobe grpc`: a target that cannot be reached at all is one line and
/// an exit code, not a report.
pub fn run(args: &GrpcArgs, global: &GlobalArgs) -> crate::Result<Report> {
    let report = Report::start(crate::net::report_context());
    let checks = measure_and_judge(&options(args, global))?;
    Ok(report.finish(checks))
}

/// `doctor --grpc TARGET`: the same checks, inside a larger report, where a
/// target that cannot be reached is a check in error.
pub fn doctor_checks(target: &str, global: &GlobalArgs) -> Vec<Check> {
    let options = measure::Options {
        target: target.to_string(),
        rpcs: DOCTOR_RPCS,
        concurrency: DOCTOR_CONCURRENCY,
        headless: None,
        tls: false,
        tls_options: tls::TlsOptions::default(),
        authority: None,
        method: None,
        timeout: global.timeout,
        progress: false,
    };
    measure_and_judge(&options)
        .unwrap_or_else(|e| vec![Check::errored(judge::ID, judge::TITLE, &e)])
}
