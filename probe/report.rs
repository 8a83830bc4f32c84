//! The structured verdict: `Report`, `Check`, `Status`, their text and JSON
//! renderings, and the exit codes Jobs rely on.

use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "podprobe.report/v1";

/// Exit codes (README "Exit codes").
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAIL: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_UNAVAILABLE: i32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
    Error,
}

impl Status {
    /// Severity for the verdict: a failure outranks a check that could not
    /// run, which outranks a warning.
    pub fn severity(self) -> u8 {
        match self {
            Status::Pass | Status::Skip => 0,
            Status::Warn => 1,
            Status::Error => 2,
            Status::Fail => 3,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
            Status::Error => "ERROR",
        }
    }

    fn ansi_colour(self) -> &'static str {
        match self {
            Status::Pass => "\x1b[32m",
            Status::Warn => "\x1b[33m",
            Status::Fail | Status::Error => "\x1b[31m",
            Status::Skip => "\x1b[2m",
        }
    }
}

/// One finding: what was checked, how it came out, the measured evidence
/// behind it and what to do about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub id: String,
    pub title: String,
    pub status: Status,
    pub summary: String,
    pub evidence: serde_json::Value,
    pub remedy: Vec<String>,
    pub refs: Vec<String>,
    pub duration_ms: f64,
    /// Lines a person wants to see under the check in text output (tables,
    /// bars); JSON readers have the evidence instead.
    #[serde(skip)]
    pub details: Vec<String>,
}

impl Check {
    /// A check with its evidence; judges add remedy, refs and details.
    pub fn new(
        id: &str,
        title: &str,
        status: Status,
        summary: impl Into<String>,
        evidence: &impl Serialize,
    ) -> Self {
        Check {
            id: id.to_string(),
            title: title.to_string(),
            status,
            summary: summary.into(),
            evidence: serde_json::to_value(evidence).unwrap_or(serde_json::Value::Null),
            remedy: Vec::new(),
            refs: Vec::new(),
            duration_ms: 0.0,
            details: Vec::new(),
        }
    }

    /// A check whose measurement could not be taken at all.
    pub fn errored(id: &str, title: &str, err: &crate::Error) -> Self {
        Check::new(
            id,
            title,
            Status::Error,
            err.to_string(),
            &serde_json::json!({ "error": err.to_string() }),
        )
    }

    /// A check that does not apply here, with the reason.
    pub fn skipped(id: &str, title: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Check::new(
            id,
            title,
            Status::Skip,
            reason.clone(),
            &serde_json::json!({ "reason": reason }),
        )
    }

    pub fn with_remedy(mut self, remedy: impl IntoIterator<Item = String>) -> Self {
        self.remedy.extend(remedy);
        self
    }

    pub fn with_refs(mut self, refs: &[&str]) -> Self {
        self.refs.extend(refs.iter().map(|r| r.to_string()));
        self
    }

    pub fn with_details(mut self, details: impl IntoIterator<Item = String>) -> Self {
        self.details.extend(details);
        self
    }
}

/// `n noun` in English: `1 query`, `2 queries`, `1 dot`, `3 addresses`.
/// Every count a person reads goes through here.
pub fn plural(n: impl Into<u64>, noun: &str) -> String {
    let n: u64 = n.into();
    if n == 1 {
        return format!("1 {noun}");
    }
    let consonant_y = noun
        .strip_suffix('y')
        .filter(|stem| !stem.ends_with(['a', 'e', 'i', 'o', 'u']) && !stem.is_empty());
    match consonant_y {
        Some(stem) => format!("{n} {stem}ies"),
        None if noun.ends_with(['s', 'x']) || noun.ends_with("sh") || noun.ends_with("ch") => {
            format!("{n} {noun}es")
        }
        None => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod plural_tests {
    #[test]
    fn counts_read_as_english() {
        use super::plural;
        assert_eq!(plural(1u64, "query"), "1 query");
        assert_eq!(plural(2u64, "query"), "2 queries");
        assert_eq!(plural(0u64, "dot"), "0 dots");
        assert_eq!(plural(1u32, "connection"), "1 connection");
        assert_eq!(plural(3u64, "address"), "3 addresses");
        assert_eq!(plural(2u64, "key"), "2 keys");
        assert_eq!(plural(2u64, "RPC"), "2 RPCs");
    }
}

/// Runs one measure → judge step and stamps the check with how long it took.
pub fn timed(check: impl FnOnce() -> Check) -> Check {
    let start = Instant::now();
    let mut check = check();
    check.duration_ms = millis(start.elapsed());
    check
}

/// [`timed`] for a check measured asynchronously.
pub async fn timed_async(check: impl std::future::Future<Output = Check>) -> Check {
    let start = Instant::now();
    let mut check = check.await;
    check.duration_ms = millis(start.elapsed());
    check
}

/// A duration as the report's `*_ms` float, rounded to microseconds.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

/// Where the probe ran: the pod as the downward API names it and the network
/// namespace it measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Context {
    pub hostname: String,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub node: Option<String>,
    pub netns: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub tool: Tool,
    pub started_at: String,
    pub duration_ms: f64,
    pub context: Context,
    pub verdict: Status,
    pub checks: Vec<Check>,
}

/// When a warning should fail the run (`--fail-on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FailOn {
    Warn,
    #[default]
    Fail,
}

impl Report {
    /// Starts a report now; `finish` stamps the duration and the verdict.
    pub fn start(context: Context) -> ReportBuilder {
        ReportBuilder {
            started: Instant::now(),
            started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            context,
        }
    }

    /// The worst status among the checks: fail, then error (a check could
    /// not run), then warn; pass when there is nothing worse.
    pub fn verdict_of(checks: &[Check]) -> Status {
        checks
            .iter()
            .map(|c| c.status)
            .max_by_key(|s| s.severity())
            .filter(|s| s.severity() > 0)
            .unwrap_or(Status::Pass)
    }

    pub fn exit_code(&self, fail_on: FailOn) -> i32 {
        match (self.verdict, fail_on) {
            (Status::Fail, _) | (Status::Warn, FailOn::Warn) => EXIT_FAIL,
            (Status::Error, _) => EXIT_UNAVAILABLE,
            _ => EXIT_OK,
        }
    }

    pub fn to_json(&self) -> String {
        // A report is plain data: serializing it cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The text a person reads: one line per check, the details, and for
    /// anything not passing, the fix.
    pub fn to_text(&self, colour: bool) -> String {
        let paint = |status: Status, text: &str| {
            if colour {
                format!("{}{text}\x1b[0m", status.ansi_colour())
            } else {
                text.to_string()
            }
        };
        let mut out = String::new();
        let id_width = self.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
        for check in &self.checks {
            let _ = writeln!(
                out,
                "{} {:<id_width$}  {}",
                paint(check.status, &format!("{:<5}", check.status.label())),
                check.id,
                check.summary
            );
            for line in &check.details {
                let _ = writeln!(out, "      {line}");
            }
            if !matches!(check.status, Status::Pass | Status::Skip) {
                for fix in &check.remedy {
                    let mut lines = fix.lines();
                    if let Some(first) = lines.next() {
                        let _ = writeln!(out, "      fix: {first}");
                    }
                    for line in lines {
                        let _ = writeln!(out, "           {line}");
                    }
                }
                for r in &check.refs {
                    let _ = writeln!(out, "      see: {r}");
                }
            }
        }
        let mut counts = String::new();
        for status in [
            Status::Pass,
            Status::Warn,
            Status::Fail,
            Status::Skip,
            Status::Error,
        ] {
            let n = self.checks.iter().filter(|c| c.status == status).count();
            if n > 0 {
                let sep = if counts.is_empty() { "" } else { ", " };
                let _ = write!(counts, "{sep}{n} {}", status.label().to_lowercase());
            }
        }
        let _ = writeln!(
            out,
            "\nverdict: {} ({counts}) in {:.0} ms",
            paint(self.verdict, self.verdict.label()),
            self.duration_ms
        );
        out
    }
}

pub struct ReportBuilder {
    started: Instant,
    started_at: String,
    context: Context,
}

impl ReportBuilder {
    pub fn finish(self, checks: Vec<Check>) -> Report {
        Report {
            schema: SCHEMA.to_string(),
            tool: Tool {
                name: env!("CARGO_PKG_NAME").to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
            },
            started_at: self.started_at,
            duration_ms: millis(self.started.elapsed()),
            context: self.context,
            verdict: Report::verdict_of(&checks),
            checks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: Status) -> Check {
        Check::new("t.x", "t", status, "s", &serde_json::json!({}))
    }

    #[test]
    fn verdict_is_the_worst_status() {
        use Status::*;
        let v = |s: &[Status]| Report::verdict_of(&s.iter().map(|s| check(*s)).collect::<Vec<_>>());
        assert_eq!(v(&[]), Pass);
        assert_eq!(v(&[Pass, Skip]), Pass);
        assert_eq!(v(&[Pass, Warn]), Warn);
        assert_eq!(v(&[Warn, Error]), Error);
        assert_eq!(v(&[Error, Fail, Warn]), Fail);
    }

    #[test]
    fn exit_codes_follow_verdict_and_fail_on() {
        let report = |s| Report::start(Context::default()).finish(vec![check(s)]);
        assert_eq!(report(Status::Pass).exit_code(FailOn::Warn), EXIT_OK);
        assert_eq!(report(Status::Warn).exit_code(FailOn::Fail), EXIT_OK);
        assert_eq!(report(Status::Warn).exit_code(FailOn::Warn), EXIT_FAIL);
        assert_eq!(report(Status::Fail).exit_code(FailOn::Fail), EXIT_FAIL);
        assert_eq!(
            report(Status::Error).exit_code(FailOn::Fail),
            EXIT_UNAVAILABLE
        );
    }

    #[test]
    fn text_shows_remedy_only_for_problems() {
        let mut warn = check(Status::Warn).with_remedy(["do this".to_string()]);
        warn.id = "a.warn".into();
        let pass = check(Status::Pass).with_remedy(["never shown".to_string()]);
        let text = Report::start(Context::default())
            .finish(vec![warn, pass])
            .to_text(false);
        assert!(text.contains("fix: do this"), "{text}");
        assert!(!text.contains("never shown"), "{text}");
        assert!(text.contains("verdict: WARN (1 pass, 1 warn)"), "{text}");
        assert!(!text.contains('\x1b'));
    }
}
