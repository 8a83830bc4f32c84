//! `podprobe doctor`: every applicable check, in one report.

use crate::checks::{self, Plan};
use crate::report::Report;

pub async fn run(plan: &Plan) -> crate::Result<Report> {
    let report = Report::start(crate::net::report_context());
    let checks = checks::run(plan).await?;
    let mut report = report.finish(checks);
    report.flowchart = Some(crate::flowchart::walk(
        &report.checks,
        report.context.node.as_deref(),
    ));
    Ok(report)
}
