//! gRPC distribution across replicas: does a client's stream of RPCs reach
//! every replica behind a Service, or is it pinned to one connection? And
//! does every endpoint answer?

/// Code generated from proto/podprobe/v1/identity.proto.
pub mod pb {
    tonic::include_proto!("podprobe.v1");
}

mod channel;
pub(crate) mod conn;
pub mod judge;
pub mod measure;
pub mod metrics;
pub(crate) mod run;
pub mod tls;
pub mod wire;

use std::time::Duration;

use tokio::sync::watch;

use crate::report::{millis, Check, Report};
pub use measure::Options;
pub use tls::TlsOptions;

/// RPCs and concurrency when `doctor --grpc` runs the check.
const DOCTOR_RPCS: u64 = 300;
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
            tls_options: TlsOptions::default(),
            authority: None,
            method: None,
            timeout,
            progress: false,
        }
    }
}

/// A watch that turns true on Ctrl-C or SIGTERM: the run stops sending and
/// reports what it measured. (Only `podprobe grpc` installs it: the signal
/// handlers stay for the life of the process.)
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

async fn measure_and_judge(
    options: &Options,
    interrupt: watch::Receiver<bool>,
) -> crate::Result<Vec<Check>> {
    let started = std::time::Instant::now();
    let evidence = measure::measure(options, interrupt).await?;
    let mut checks = judge::judge(&evidence);
    let ms = millis(started.elapsed());
    for check in &mut checks {
        check.duration_ms = ms;
    }
    Ok(checks)
}

/// `podprobe grpc`: a target that cannot be reached at all is one line and
/// an exit code, not a report.
pub async fn run(options: &Options) -> crate::Result<Report> {
    let report = Report::start(crate::net::report_context());
    let checks = measure_and_judge(options, interrupt_signal()).await?;
    Ok(report.finish(checks))
}

/// `doctor --grpc TARGET...`: the same checks per target, inside a larger
/// report, where a target that cannot be reached is a check in error.
pub async fn doctor_checks(targets: &[Options]) -> crate::Result<Vec<Check>> {
    let mut checks = Vec::with_capacity(targets.len());
    for options in targets {
        // Never interrupted: the receiver's sender is gone at once.
        let (_, never) = watch::channel(false);
        match measure_and_judge(options, never).await {
            Ok(found) => checks.extend(found),
            Err(e) => checks.push(Check::errored(judge::ID, judge::TITLE, &e)),
        }
    }
    Ok(checks)
}
