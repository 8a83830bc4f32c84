//! Shared by the capture tests: the real binary on files, tshark as the
//! reference analyst, temporary directories that go away.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;

use crate::support::{assert_valid_report, run};

pub const PODPROBE: &str = env!("CARGO_BIN_EXE_podprobe");
pub const DNS53: &str = "(udp.port==53 || tcp.port==53)";

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pcap")
        .join(name)
}

/// Every capture under tests/fixtures/pcap.
pub fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pcap");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    assert!(files.len() >= 33, "fixtures missing: {files:?}");
    files
}

/// Frames tshark dissects in a file that match a display filter (two-pass,
/// so reassembly and the TCP analysis are complete).
pub fn tshark_count(file: &Path, filter: &str) -> u64 {
    tshark_fields(file, filter, "frame.number").len() as u64
}

pub fn tshark_fields(file: &Path, filter: &str, field: &str) -> Vec<String> {
    let out = run(Command::new("tshark")
        .args(["-2", "-n", "-r"])
        .arg(file)
        .args(["-Y", filter, "-T", "fields", "-e", field]));
    assert!(out.status.success(), "tshark: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .flat_map(|l| l.split(','))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Fields of every frame, in one two-pass tshark run: `frame[field]` is
/// the field's values joined by ',' (empty when absent; FT_NONE fields such
/// as tcp.analysis.retransmission read "1" when present).
pub fn tshark_frames(
    file: &Path,
    fields: &[&str],
) -> Vec<std::collections::HashMap<String, String>> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-2", "-n", "-r"]).arg(file).args([
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
    ]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = run(&mut cmd);
    assert!(out.status.success(), "tshark: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|line| {
            fields
                .iter()
                .zip(line.split('\t').chain(std::iter::repeat("")))
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// tshark's expert analysis (`-qz expert`): (protocol, summary, frequency).
pub fn tshark_expert(file: &Path) -> Vec<(String, String, u64)> {
    let out = run(Command::new("tshark")
        .args(["-n", "-q", "-z", "expert", "-r"])
        .arg(file));
    assert!(out.status.success(), "tshark: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "   Frequency      Group   Protocol  Summary" rows, the
            // columns two or more spaces apart (a group may be two words).
            let mut columns = line.split("  ").map(str::trim).filter(|c| !c.is_empty());
            let frequency: u64 = columns.next()?.parse().ok()?;
            let _group = columns.next()?;
            let protocol = columns.next()?.to_string();
            let summary = columns.collect::<Vec<_>>().join(" ");
            Some((protocol, summary, frequency))
        })
        .collect()
}

/// The sum of tshark's expert items whose summary contains `needle`.
pub fn expert_count(expert: &[(String, String, u64)], protocol: &str, needle: &str) -> u64 {
    expert
        .iter()
        .filter(|(p, s, _)| p == protocol && s.contains(needle))
        .map(|(_, _, n)| n)
        .sum()
}

/// The report of `capture --analyze -o json`, wherever it was printed.
pub fn report_of(json: &str) -> Value {
    let start = json
        .find('{')
        .unwrap_or_else(|| panic!("no report in: {json}"));
    let report = serde_json::from_str(&json[start..]).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_valid_report(&report);
    report
}

/// `podprobe capture --analyze -o json -r FILE`, which must exit 0 or 1.
pub fn analyze_file(file: &Path) -> Value {
    let out = analyze_file_output(file);
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "{}: {}",
        file.display(),
        text(&out.stderr)
    );
    report_of(&text(&out.stdout))
}

pub fn analyze_file_output(file: &Path) -> Output {
    run(Command::new(PODPROBE)
        .args(["capture", "--analyze", "-o", "json", "-r"])
        .arg(file))
}

/// Removed on drop, or on a signal (`podprobe::cleanup`).
pub struct TempDir(PathBuf, podprobe::cleanup::Cleanup);

impl TempDir {
    pub fn new() -> TempDir {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("podprobe-capture-{}-{n}", std::process::id()));
        let removal = podprobe::cleanup::removing(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path, removal)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}
