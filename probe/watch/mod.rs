//! `podprobe watch`: the registry's checks on a schedule, served as
//! Prometheus metrics. The same entries `doctor` walks run every
//! `--interval`; each area's metrics come from its checks' evidence
//! (`checks::samples`), so nothing of an area is written twice.

mod schedule;
mod server;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use tokio::net::TcpListener;

use crate::checks::{self, Plan, REGISTRY};
use crate::metrics::{push, Format, Metrics};
use crate::report::{Check, Report, Status};
use crate::Error;
use schedule::Schedule;

/// What `podprobe watch` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The checks of every cycle, as `doctor` takes them.
    pub plan: Plan,
    pub interval: Duration,
    pub listen: SocketAddr,
    /// A Pushgateway to push to after every cycle.
    pub push: Option<String>,
    /// `--timeout`, which also bounds a push.
    pub timeout: Duration,
    /// `-o json`: each cycle's report on stdout, one JSON document a line
    /// (as `kubectl get -w -o json` streams), besides the text on stderr.
    pub json: bool,
}

/// What the HTTP side serves: the metrics and the last report.
#[derive(Default)]
pub(crate) struct State {
    // One lock, so a scrape never sees a cycle half applied.
    metrics: Mutex<Metrics>,
    report: Mutex<Option<Bytes>>,
}

impl State {
    fn exposition(&self, format: Format) -> String {
        self.metrics
            .lock()
            .map(|m| m.encode(format))
            .unwrap_or_default()
    }

    fn last_report(&self) -> Option<Bytes> {
        self.report.lock().ok().and_then(|r| r.clone())
    }

    fn record(&self, report: &Report) {
        let samples = checks::samples(&report.checks);
        if let Ok(metrics) = self.metrics.lock() {
            metrics.record_cycle(&report.checks, &samples);
        }
        if let Ok(mut last) = self.report.lock() {
            *last = Some(Bytes::from(report.to_json() + "\n"));
        }
    }

    fn record_overrun(&self) {
        if let Ok(metrics) = self.metrics.lock() {
            metrics.record_overrun();
        }
    }
}

/// Serves and runs cycles until SIGTERM or SIGINT. Bad input found by the
/// first cycle (a flag's value, a target that does not resolve) is an
/// error (exit 2), as for `doctor`; later cycles report failures as checks.
pub async fn run(options: &Options) -> crate::Result<()> {
    let listener = TcpListener::bind(options.listen).await.map_err(|e| {
        Error::usage(format!(
            "cannot listen for /metrics on {}: {e}",
            options.listen
        ))
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("the /metrics listener", e))?;
    let state = Arc::new(State::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Serving from the start: /healthz answers during a long first cycle.
    let server = tokio::spawn(server::serve(listener, state.clone(), stop_rx));
    let result = cycles(options, local, &state).await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    result
}

/// Runs cycles until a signal; returns at once from a cycle or a wait.
async fn cycles(options: &Options, local: SocketAddr, state: &State) -> crate::Result<()> {
    let stop = crate::serve::shutdown_signal();
    tokio::pin!(stop);
    let schedule = Schedule::jittered(Instant::now(), options.interval);
    let mut last = vec![Vec::new(); REGISTRY.len()];
    let mut count: u64 = 0;
    loop {
        let started = Instant::now();
        let report = tokio::select! {
            report = cycle(&options.plan, &mut last, count == 0) => report?,
            signal = &mut stop => return stopped(signal, count),
        };
        if count == 0 {
            // Said once the flags proved good, so bad input stays one line.
            // Scripts read the bound address (port 0 picks a free one).
            eprintln!(
                "podprobe watch: serving /metrics, /healthz and /report on http://{local}, a cycle every {}",
                humantime::format_duration(options.interval)
            );
        }
        count += 1;
        state.record(&report);
        eprintln!("podprobe watch: cycle {count}: {}", summary(&report));
        if options.json {
            use std::io::Write;
            let line = serde_json::to_string(&report).unwrap_or_default();
            // A reader that went away does not stop the schedule.
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        }
        if let Some(url) = &options.push {
            let pushed = tokio::select! {
                pushed = push_metrics(url, &report, state, options.timeout) => pushed,
                signal = &mut stop => return stopped(signal, count),
            };
            if let Err(e) = pushed {
                eprintln!("podprobe watch: {e}");
            }
        }
        let next = schedule.next(started, Instant::now());
        if next.overran {
            state.record_overrun();
            eprintln!(
                "podprobe watch: cycle {count} took {:.1} s, longer than the interval; the cycle it overlapped was skipped",
                started.elapsed().as_secs_f64()
            );
        }
        tokio::select! {
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(next.at)) => {}
            signal = &mut stop => return stopped(signal, count),
        }
    }
}

fn stopped(signal: crate::Result<&'static str>, cycles: u64) -> crate::Result<()> {
    eprintln!(
        "podprobe watch: {}, stopping after {}",
        signal?,
        crate::report::plural(cycles, "cycle")
    );
    Ok(())
}

/// One walk of the registry. An entry that cannot run (bad input) fails the
/// first cycle; later, its checks of the last cycle are reported in error
/// with the reason, so they do not go missing from the metrics.
async fn cycle(
    plan: &Plan,
    last: &mut [Vec<(String, String)>],
    first: bool,
) -> crate::Result<Report> {
    let report = Report::start(crate::net::report_context());
    let mut checks = Vec::new();
    for (entry, last) in REGISTRY.iter().zip(last.iter_mut()) {
        match (entry.run)(plan).await {
            Ok(produced) => {
                *last = produced
                    .iter()
                    .map(|c| (c.id.clone(), c.title.clone()))
                    .collect();
                checks.extend(produced);
            }
            Err(e) if first => return Err(e),
            Err(e) => checks.extend(last.iter().map(|(id, title)| Check::errored(id, title, &e))),
        }
    }
    Ok(report.finish(checks))
}

async fn push_metrics(
    url: &str,
    report: &Report,
    state: &State,
    timeout: Duration,
) -> crate::Result<()> {
    let body = state.exposition(Format::Text);
    push::push_text(url, &report.context, body, timeout).await
}

/// One line for the log: the verdict, its time and what is not passing.
fn summary(report: &Report) -> String {
    let problems: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !matches!(c.status, Status::Pass | Status::Skip))
        .map(|c| format!("{} {}", c.id, c.status.label().to_lowercase()))
        .collect();
    let mut line = format!("{} in {:.0} ms", report.verdict.label(), report.duration_ms);
    if !problems.is_empty() {
        line.push_str(": ");
        line.push_str(&problems.join(", "));
    }
    line
}
