//! The benchmark script as a smoke test: `bench/run --quick` against this
//! build completes and writes a well-formed table. Never a timing assertion:
//! the numbers of a quick run on a shared machine mean nothing.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn bench_quick_run_writes_a_table() {
    let dir = std::env::temp_dir().join(format!("podprobe-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("results.md");
    let result = Command::new(Path::new(ROOT).join("bench/run"))
        .args(["--quick", "--out"])
        .arg(&out)
        .env("PODPROBE", env!("CARGO_BIN_EXE_podprobe"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "bench/run --quick failed:\n{stderr}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    assert!(text.contains("## Machine"), "{text}");
    assert!(
        !text.contains("Not measured"),
        "a section was skipped:\n{text}"
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(
        rows[0],
        ["figure", "podprobe", "baseline", "ratio", "target"]
    );
    assert!(rows[1].iter().all(|c| c.chars().all(|ch| ch == '-')));
    for row in &rows[2..] {
        assert_eq!(row.len(), 5, "malformed row {row:?}");
        assert!(
            !row[0].is_empty() && !row[1].is_empty(),
            "empty cell in {row:?}"
        );
        assert!(
            row[3] == "-" || row[3].parse::<f64>().is_ok_and(f64::is_finite),
            "ratio not a number in {row:?}"
        );
    }
    for figure in [
        "--version",
        "binary size",
        "DNS latency",
        "capture to a file",
        "capture to a pipe",
        "streaming latency",
        "gRPC",
        "`--analyze` CPU",
        "`--analyze` peak RSS",
        "Envoy config dump",
    ] {
        assert!(
            rows.iter().any(|r| r[0].contains(figure)),
            "no `{figure}` row in:\n{text}"
        );
    }
    // The table printed on stdout is the one written.
    assert!(String::from_utf8_lossy(&result.stdout).contains("| figure | podprobe |"));
}
