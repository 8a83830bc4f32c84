//! `podprobe doctor`: every applicable check, in one report.

use crate::cli::{DoctorArgs, GlobalArgs};
use crate::report::Report;

pub fn run(args: &DoctorArgs, global: &GlobalArgs) -> crate::Result<Report> {
    let report = Report::start(crate::net::report_context());
    let mut checks = Vec::new();
    checks.extend(crate::keepalive::doctor_check(args, global));
    Ok(report.finish(checks))
}
