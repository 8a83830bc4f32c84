//! The registry of checks: what `doctor` runs and what `watch` runs on a
//! schedule. Each area contributes one entry; both commands walk the same
//! list, so no area's logic is written twice.

use std::future::Future;
use std::pin::Pin;

use crate::metrics::Sample;
use crate::report::Check;

/// Every area's options for one run of the registry. An area with nothing
/// to do (no `--tcp`, no `--upstream`) still gets its entry; it returns the
/// checks that apply, possibly none.
#[derive(Debug, Clone)]
pub struct Plan {
    pub net: crate::net::Options,
    pub dns: crate::dns::DoctorOptions,
    /// One entry per `--grpc` target.
    pub grpc: Vec<crate::grpc::Options>,
    pub keepalive: Option<crate::keepalive::Options>,
    /// The node's checks (`watch --node`); `doctor` runs in a pod and has none.
    pub node: Option<crate::node::NodeOptions>,
}

/// The checks an entry produced. An `Err` is bad input (an unknown target,
/// an unreadable file): `doctor` exits 2 on it; a failed measurement is a
/// check with status `error` instead.
pub type Checks<'a> = Pin<Box<dyn Future<Output = crate::Result<Vec<Check>>> + Send + 'a>>;

/// One area's contribution.
pub struct Entry {
    /// The area, as check ids begin (`dns` for `dns.*`).
    pub area: &'static str,
    pub run: for<'a> fn(&'a Plan) -> Checks<'a>,
    /// The metrics the area derives from one of its checks' evidence: a
    /// pure function in the area's `metrics.rs`, for `watch` and `--push`.
    pub metrics: fn(&Check) -> Vec<Sample>,
}

/// In report order: where the probe runs first, then what it reaches.
pub const REGISTRY: &[Entry] = &[
    Entry {
        area: "net",
        run: |plan| Box::pin(crate::net::context_checks(&plan.net)),
        metrics: crate::net::metrics::samples,
    },
    Entry {
        area: "dns",
        run: |plan| Box::pin(crate::dns::doctor_checks(&plan.dns)),
        metrics: crate::dns::metrics::samples,
    },
    Entry {
        area: "tcp",
        run: |plan| Box::pin(crate::net::reachability_checks(&plan.net)),
        metrics: crate::net::metrics::samples,
    },
    Entry {
        area: "grpc",
        run: |plan| Box::pin(crate::grpc::doctor_checks(&plan.grpc)),
        metrics: crate::grpc::metrics::samples,
    },
    Entry {
        area: "net",
        run: |plan| Box::pin(crate::net::conntrack_checks(&plan.net)),
        metrics: crate::net::metrics::samples,
    },
    Entry {
        area: "http",
        run: |plan| Box::pin(crate::keepalive::doctor_checks(plan.keepalive.as_ref())),
        metrics: crate::keepalive::metrics::samples,
    },
    Entry {
        area: "node",
        run: |plan| Box::pin(crate::node::registry_checks(plan.node.as_ref())),
        metrics: crate::node::metrics::samples,
    },
];

/// Walks the registry in order: checks run one after another so that one
/// area's load does not skew another's timings.
pub async fn run(plan: &Plan) -> crate::Result<Vec<Check>> {
    let mut checks = Vec::new();
    for entry in REGISTRY {
        checks.extend((entry.run)(plan).await?);
    }
    Ok(checks)
}

/// The metrics the areas derive from these checks' evidence: each check
/// goes to the entry of its area (the id's first part).
pub fn samples(checks: &[Check]) -> Vec<Sample> {
    checks
        .iter()
        .flat_map(|check| {
            let area = check.id.split('.').next().unwrap_or_default();
            REGISTRY
                .iter()
                .find(|entry| entry.area == area)
                .map(|entry| (entry.metrics)(check))
                .unwrap_or_default()
        })
        .collect()
}

/// Runs blocking measurement code (plain sockets, threads, /proc reads)
/// from the runtime without stalling its other tasks.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> crate::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        let why = if e.is_panic() {
            panic_message(e.into_panic().as_ref())
        } else {
            e.to_string()
        };
        crate::Error::unavailable(format!("a measurement stopped: {why}"))
    })
}

/// `f` over `items`, each on its own thread, results in the items' order.
/// Measurements run in parallel so that one slow server or target does not
/// delay the timing of the others. A worker that panicked panics the
/// caller (see [`joined`]): no result is silently left out.
pub fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = items.iter().map(|item| scope.spawn(|| f(item))).collect();
        handles.into_iter().map(|h| joined(h.join())).collect()
    })
}

/// A worker thread's result. A worker that panicked re-raises its panic
/// in the caller, so the check it measured for ends `error` through
/// [`guarded`] instead of being judged on what the other workers found.
pub fn joined<R>(result: std::thread::Result<R>) -> R {
    result.unwrap_or_else(|payload| std::panic::resume_unwind(payload))
}

/// The check `check` makes, timed; if its measurement panicked (here or in
/// a worker joined by [`joined`]), an `error` check with the panic's
/// message instead: never a pass on partial data.
pub fn guarded(id: &str, title: &str, check: impl FnOnce() -> Check) -> Check {
    let start = std::time::Instant::now();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| crate::report::timed(check))) {
        Ok(check) => check,
        Err(payload) => {
            let why = format!(
                "the measurement failed: {}",
                panic_message(payload.as_ref())
            );
            let mut check = Check::errored(id, title, &crate::Error::unavailable(why));
            check.duration_ms = start.elapsed().as_secs_f64() * 1000.0;
            check
        }
    }
}

/// What a panic said, for a report.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a worker panicked".to_string())
}

#[cfg(test)]
mod parallel_tests {
    use super::*;
    use crate::report::Status;

    #[test]
    fn parallel_results_keep_their_order() {
        assert_eq!(in_parallel(&[3, 1, 2], |n| n * 10), vec![30, 10, 20]);
    }

    #[test]
    fn a_failed_worker_makes_its_check_an_error_not_a_pass() {
        let check = guarded("test.parallel", "Parallel", || {
            let found = in_parallel(&[1, 2, 3], |&n| {
                if n == 2 {
                    panic!("worker {n} lost its socket");
                }
                n
            });
            Check::new(
                "test.parallel",
                "Parallel",
                Status::Pass,
                format!("{found:?}"),
                &(),
            )
        });
        assert_eq!(check.status, Status::Error);
        assert!(
            check.summary.contains("worker 2 lost its socket"),
            "{}",
            check.summary
        );
    }

    #[tokio::test]
    async fn a_panicked_blocking_measurement_is_an_error_with_its_message() {
        let err = blocking(|| -> u32 { panic!("no /proc here") })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no /proc here"), "{err}");
    }
}
