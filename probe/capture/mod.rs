//! `podprobe capture`: live capture in the pod's network namespace (or a
//! pcap/pcapng file with `-r`), written as pcap to a file or streamed on
//! stdout for Wireshark, and with `--analyze` judged by the same kind of
//! checks a live probe gives: `capture.decode`, `capture.dns`,
//! `capture.tcp` and `capture.conntrack-invalid`.
//!
//! Output: with `-w -` stdout carries only pcap, so the statistics line and
//! the `--analyze` report go to stderr; otherwise the report goes to stdout.

pub mod analyze;
mod bounded;
pub mod decode;
pub mod judge;
mod judge_dns;
mod judge_tcp;
mod measure;
pub mod measure_dns;
pub mod measure_tcp;
pub mod pcapfile;
mod reassemble;
mod signals;
mod stream;
mod summary;

use std::io::{IsTerminal, Write};
use std::path::Path;

use crate::cli::{CaptureArgs, GlobalArgs, OutputFormat};
use crate::report::Report;
use crate::Error;

/// What the command leaves for `main`.
pub enum Done {
    /// A report for stdout.
    Report(Box<Report>),
    /// Nothing more to print (no report, or it went to stderr); exit so.
    Exit(i32),
}

pub fn run(args: &CaptureArgs, global: &GlobalArgs) -> crate::Result<Done> {
    let to_stdout = args.write.as_deref() == Some(Path::new("-"));
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(Error::usage(
            "refusing to write pcap to a terminal: `kubectl debug -it` gives the container a TTY; use `-i` alone (kubectl debug -q -i POD ... -- podprobe capture -w - | wireshark -k -i -)",
        ));
    }
    let source = match &args.read {
        Some(path) => measure::Source::File(path.clone()),
        None => measure::Source::Live(args.interface.clone().unwrap_or_else(default_interface)),
    };
    let live = matches!(source, measure::Source::Live(_));
    let sink = match &args.write {
        None => measure::Sink::None,
        Some(_) if to_stdout => measure::Sink::Stdout,
        Some(path) => measure::Sink::File(path.clone()),
    };
    let plan = measure::Plan {
        summaries: args.write.is_none() && !args.analyze,
        source,
        filter: args.filter.clone(),
        sink,
        count: args.count,
        duration: args.duration,
        snaplen: args.snaplen,
        max_size: args.max_size,
        analyze: args.analyze,
    };

    let report = Report::start(crate::net::report_context());
    let outcome = measure::run(&plan)?;
    // stderr may be the same closed pipe as stdout (`2>&1 | head`): a
    // failed write there is no reason to fail, let alone panic.
    let mut stderr = std::io::stderr();
    if live {
        let gone = outcome
            .reader_gone_after
            .map(|bytes| format!(" (the reader went away after {bytes} bytes)"))
            .unwrap_or_default();
        let _ = writeln!(
            stderr,
            "{} packets captured, {} dropped by kernel{gone}",
            outcome.captured,
            outcome.dropped.unwrap_or(0)
        );
    }
    if let Some(why) = &outcome.truncated {
        let _ = writeln!(
            stderr,
            "podprobe: {}: {why}; used the {} packets before it",
            args.read.as_deref().unwrap_or(Path::new("-")).display(),
            outcome.captured
        );
    }
    let Some(analysis) = outcome.analysis else {
        return Ok(Done::Exit(crate::report::EXIT_OK));
    };
    let checks = judge::judge_all(&analysis);
    let report = report.finish(checks);
    if !to_stdout {
        return Ok(Done::Report(Box::new(report)));
    }
    let text = match global.output {
        OutputFormat::Json => report.to_json() + "\n",
        OutputFormat::Text => {
            report.to_text(stderr.is_terminal() && std::env::var_os("NO_COLOR").is_none())
        }
    };
    let _ = stderr.lock().write_all(text.as_bytes());
    Ok(Done::Exit(report.exit_code(global.fail_on)))
}

/// A pod's interface is eth0; elsewhere capture on every interface.
fn default_interface() -> String {
    if Path::new("/sys/class/net/eth0").exists() {
        "eth0".to_string()
    } else {
        "any".to_string()
    }
}
