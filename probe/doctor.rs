//! `podprobe doctor`: every applicable check, in one report.

use std::path::Path;

use crate::cli::{DoctorArgs, GlobalArgs};
use crate::net::{judge, measure};
use crate::report::{timed, Check, Report};

pub fn run(args: &DoctorArgs, global: &GlobalArgs) -> crate::Result<Report> {
    let report = Report::start(crate::net::report_context());
    let mut checks = vec![timed(|| judge::context(&measure::context()))];
    checks.extend(crate::dns::doctor_checks(args, global)?);
    if !args.tcp.is_empty() {
        let targets = measure::resolve_targets(&args.tcp, global.timeout)?;
        checks.push(timed(|| {
            judge::reachability(&measure::reachability(targets, global.timeout))
        }));
    }
    checks.extend(
        args.grpc
            .iter()
            .map(|t| crate::grpc::doctor_check(t, global)),
    );
    checks.push(timed(|| {
        match measure::conntrack(Path::new(measure::CONNTRACK_PROC)) {
            Ok(mut evidence) => {
                evidence.scope = crate::node::table_scope();
                judge::conntrack(&evidence)
            }
            Err(reason) => Check::skipped(
                "net.conntrack",
                "Conntrack table",
                format!("conntrack state not readable here ({reason})"),
            ),
        }
    }));
    checks.extend(crate::keepalive::doctor_check(args, global));
    Ok(report.finish(checks))
}
