//! The command line as a user meets it: bad input is one line and exit 2
//! (never a panic), `-o json` is honoured or refused, manual pages and
//! completions cover every visible command. No privileges, no network
//! beyond loopback.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use support::{podprobe, run, Child};

/// Runs podprobe with `args`; its exit code and its stderr.
fn usage(args: &[&str]) -> (Option<i32>, String) {
    let out = run(podprobe().args(args).stdin(Stdio::null()));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Exit 2 and exactly one line on stderr that contains every `wanted`.
fn assert_one_line(args: &[&str], wanted: &[&str]) {
    let (code, stderr) = usage(args);
    assert_eq!(code, Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(!stderr.contains("internal error"), "{args:?}: {stderr}");
    for w in wanted {
        assert!(stderr.contains(w), "{args:?} lacks {w:?}: {stderr}");
    }
}

#[test]
fn usage_errors_keep_their_detail_on_one_line() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["keepalive"], &["<UPSTREAM>", "podprobe keepalive --help"]),
        (&["-o", "yaml", "doctor"], &["possible values: text, json"]),
        (
            &["lab", "up", "--scenario", "nosuch"],
            &["possible values:", "dns-race"],
        ),
        (&["dosctor"], &["similar subcommand exists: 'doctor'"]),
        (&["doctor", "--nme", "x"], &["'--name'"]),
    ];
    for (args, wanted) in cases {
        assert_one_line(args, wanted);
    }
}

#[test]
fn out_of_range_durations_and_counts_are_bad_input_not_crashes() {
    let cases: &[(&[&str], &str)] = &[
        (&["--timeout", "-1s", "doctor"], "must be positive"),
        (&["--timeout", "0", "doctor"], "must be positive"),
        (&["--timeout", "1e19", "doctor"], "maximum of 1h"),
        (
            &["grpc", "127.0.0.1:1", "--timeout", "1e12"],
            "maximum of 1h",
        ),
        (
            &["keepalive", "127.0.0.1:1", "--timeout", "1e19"],
            "maximum of 1h",
        ),
        (
            &["keepalive", "127.0.0.1:1", "--max-wait", "-5s"],
            "must be positive",
        ),
        (&["capture", "--duration", "1e19"], "maximum of 30days"),
        (&["watch", "--interval", "1e19"], "maximum of 30days"),
        (&["serve", "--delay", "2h"], "maximum of 1h"),
        (&["node", "--interval", "100ms"], "minimum of 1s"),
        // tcpdump: "invalid packet count 0".
        (&["capture", "-c", "0"], "1..=2147483647"),
        (&["capture", "-c", "-1"], "1..=2147483647"),
        (&["grpc", "x:1", "--rpcs", "0"], "1..=10000000000"),
        (&["grpc", "x:1", "--rpcs", "-5"], "1..=10000000000"),
        (&["dns", "--race", "100000"], "0..=1000"),
        (&["doctor", "--tcp", "127.0.0.1:0"], "port 0"),
    ];
    for (args, wanted) in cases {
        assert_one_line(args, &[wanted]);
    }
}

#[test]
fn commands_without_a_json_form_refuse_it() {
    for args in [
        &["-o", "json", "man"][..],
        &["-o", "json", "completions", "bash"],
        &[
            "-o",
            "json",
            "capture",
            "-r",
            "/dev/null",
            "-w",
            "/dev/null",
        ],
    ] {
        assert_one_line(args, &["-o json"]);
    }
}

#[test]
fn the_capture_listing_is_json_lines_with_o_json() {
    let pcap = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pcap/dns_udp.pcap"
    );
    let out = run(podprobe().args(["-o", "json", "capture", "-r", pcap, "-c", "2"]));
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(lines.len(), 2);
    for packet in &lines {
        assert!(packet["ts_us"].is_i64(), "{packet}");
        assert!(packet["protocol"].is_string(), "{packet}");
        assert!(
            packet["src"].is_string() && packet["dst"].is_string(),
            "{packet}"
        );
        assert!(packet["length"].is_u64(), "{packet}");
    }
}

#[test]
fn serve_says_where_it_listens_as_json_with_o_json() {
    let mut child = podprobe()
        .args([
            "-o",
            "json",
            "serve",
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--http-idle-timeout",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("podprobe serve");
    let stdout = child.stdout.take().expect("stdout");
    let server = Child::guard(child);
    let events: Vec<serde_json::Value> = BufReader::new(stdout)
        .lines()
        .take(3)
        .map(|l| serde_json::from_str(&l.expect("a line")).expect("JSON"))
        .collect();
    server.stop();
    assert_eq!(events[0]["event"], "listening", "{events:?}");
    assert_eq!(events[0]["protocol"], "grpc");
    assert!(events[1]["address"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    assert_eq!(events[2]["event"], "ready");
    // 0 turns the idle timeout off: null, not "0ns".
    assert!(events[2]["http_idle_timeout_s"].is_null(), "{events:?}");
}

#[test]
fn man_pages_cover_nested_commands_and_completions_hide_internals() {
    let page = run(podprobe().args(["man", "lab", "up"]));
    assert!(page.status.success(), "{page:?}");
    let text = String::from_utf8_lossy(&page.stdout);
    assert!(text.contains("\\fBpodprobe lab up\\fR"), "{text}");
    assert!(text.contains("\\-\\-timeout"), "{text}");
    assert_one_line(
        &["man", "lab", "dns-delay"],
        &["no command 'lab dns-delay'"],
    );
    for shell in ["bash", "zsh", "fish"] {
        let script = run(podprobe().args(["completions", shell]));
        let script = String::from_utf8_lossy(&script.stdout);
        assert!(script.contains("doctor"), "{shell}");
        assert!(!script.contains("dns-delay"), "{shell} offers dns-delay");
    }
}
