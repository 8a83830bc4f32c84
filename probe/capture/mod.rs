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
pub(crate) mod summary;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::report::Report;
use crate::Error;

/// What `podprobe capture` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// `None`: eth0 when it exists, else any.
    pub interface: Option<String>,
    /// A BPF filter, as tcpdump takes it.
    pub filter: Option<String>,
    /// A pcap file, or `-` for stdout.
    pub write: Option<PathBuf>,
    /// A pcap or pcapng file to read instead of capturing.
    pub read: Option<PathBuf>,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub snaplen: u32,
    pub max_size: Option<u64>,
    pub analyze: bool,
    /// `-o json`: the packet listing as JSON lines.
    pub json: bool,
}

/// What the command leaves for `main`.
pub enum Done {
    /// A report to render; on stderr when stdout carries the pcap stream.
    Report {
        report: Box<Report>,
        to_stderr: bool,
    },
    /// Nothing more to print; exit so.
    Exit(i32),
}

pub fn run(args: &Options) -> crate::Result<Done> {
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
    if args.json && args.write.is_some() && !args.analyze {
        // Only packets would be written: no result to give as JSON.
        return Err(Error::usage(
            "-o json: with -w and without --analyze capture prints no result; add --analyze for a JSON report",
        ));
    }
    let plan = measure::Plan {
        json: args.json,
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
        // Packets written (for a stream: read whole by its reader), and
        // whether that reader went away.
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
    Ok(Done::Report {
        report: Box::new(report.finish(checks)),
        to_stderr: to_stdout,
    })
}

/// A pod's interface is eth0; elsewhere capture on every interface.
fn default_interface() -> String {
    if Path::new("/sys/class/net/eth0").exists() {
        "eth0".to_string()
    } else {
        "any".to_string()
    }
}
