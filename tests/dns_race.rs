//! `dns.timeout-race` against real packet loss and a real induced race, in
//! the lab: it must stay quiet about the race under plain loss of 2 % and
//! 10 % in at least 19 of 20 runs, catch the lab's dns-race scenario in at
//! least 19 of 20, and recognise a fix in effect (and that it works).
//!
//! The 20 runs of a condition go at once, as separate podprobe processes
//! in one lab: loss is per packet and the race per socket (the
//! scenario's hashlimit is keyed on the 4-tuple), so runs do not disturb
//! each other, and the test takes seconds, not minutes.

mod support;

use std::process::{Child, Stdio};

use podprobe::lab::{cluster_first_resolv_conf, Lab, LabSpec, Pod, Scenario};
use support::check;

const RUNS: usize = 20;
/// Runs at a time: each one has some 80 short-lived threads.
const AT_ONCE: usize = 10;
const RACE_ARGS: [&str; 9] = [
    "dns",
    "-o",
    "json",
    "kubernetes.default.svc.cluster.local.",
    "--race",
    "20",
    "--count",
    "0",
    "--timeout=1s",
];

#[derive(Debug, Clone, Copy)]
enum Condition {
    /// Each UDP/53 packet, either way, dropped with this probability.
    Loss(f64),
    /// The lab's dns-race scenario.
    Race,
}

fn lab(condition: Condition) -> Lab {
    let mut lab = Lab::up(&LabSpec::new(env!("CARGO_BIN_EXE_podprobe"))).expect("lab up");
    match condition {
        Condition::Race => lab.add_scenario(Scenario::DnsRace).unwrap(),
        Condition::Loss(p) => {
            for port in ["--dport", "--sport"] {
                let rule = format!(
                    "iptables -w -A FORWARD -p udp {port} 53 -m statistic --mode random --probability {p} -j DROP"
                );
                support::run(lab.command(Pod::Node, "sh").args(["-c", &rule]));
            }
        }
    }
    lab
}

/// `RUNS` runs of `args` in the client pod, `AT_ONCE` at a time: the
/// race check of each.
fn race_checks(lab: &Lab, args: &[&str]) -> Vec<serde_json::Value> {
    let mut checks = Vec::new();
    for _ in 0..RUNS / AT_ONCE {
        let children: Vec<Child> = (0..AT_ONCE)
            .map(|_| {
                lab.podprobe(Pod::Client)
                    .args(args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("podprobe starts")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("podprobe runs");
            let report = support::report(&out);
            checks.push(check(&report, "dns.timeout-race").clone());
        }
    }
    checks
}

fn calls_it_the_race(c: &serde_json::Value) -> bool {
    c["status"] == "fail"
        && c["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("the conntrack race"))
}

#[test]
fn race_judge_is_quiet_under_plain_loss_and_catches_the_race() {
    let conditions = [
        Condition::Loss(0.02),
        Condition::Loss(0.10),
        Condition::Race,
    ];
    let results = support::parallel(&conditions, |&condition| {
        let lab = lab(condition);
        (condition, race_checks(&lab, &RACE_ARGS))
    });
    for (condition, checks) in results {
        let race = checks.iter().filter(|c| calls_it_the_race(c)).count();
        let statuses: Vec<&str> = checks.iter().filter_map(|c| c["status"].as_str()).collect();
        eprintln!("{condition:?}: the race in {race} of {RUNS}; {statuses:?}");
        let summaries: Vec<&str> = checks
            .iter()
            .filter_map(|c| c["summary"].as_str())
            .collect();
        match condition {
            Condition::Loss(p) => {
                assert!(
                    race <= RUNS - 19,
                    "{p} loss called the race in {race} of {RUNS} runs: {summaries:#?}"
                );
                // What loss there was is reported as loss.
                for c in checks.iter().filter(|c| c["status"] == "warn") {
                    let s = c["summary"].as_str().unwrap_or_default();
                    assert!(
                        s.starts_with("plain packet loss") || s.starts_with("server stalls"),
                        "{s}"
                    );
                }
            }
            Condition::Race => assert!(
                race >= 19,
                "the race caught in {race} of {RUNS} runs: {summaries:#?}"
            ),
        }
    }
}

/// With the race on the path, a pod whose resolv.conf already has a fix
/// is told so, the fix is shown to work on the app's own lookups, and it
/// is not recommended again.
#[test]
fn fixes_in_effect_are_recognised_and_checked() {
    let lab = lab(Condition::Race);
    for option in ["single-request-reopen", "use-vc"] {
        lab.set_resolv_conf(
            Pod::Client,
            &format!("{}options {option}\n", cluster_first_resolv_conf()),
        )
        .unwrap();
        let out = support::run(
            lab.podprobe(Pod::Client)
                .args(["dns", "-o", "json", "kubernetes.default", "--race", "10"])
                .args(["--count", "0", "--timeout", "1s"]),
        );
        let report = support::report(&out);
        let race = check(&report, "dns.timeout-race");
        assert_eq!(race["status"], "pass", "{option}: {race:#}");
        let summary = race["summary"].as_str().unwrap();
        assert!(
            summary.starts_with("the conntrack race is on this path")
                && summary.contains(&format!("options {option} is in effect and works")),
            "{summary}"
        );
        assert!(race["remedy"].as_array().unwrap().is_empty());
        assert_eq!(race["evidence"]["patterns"][2]["lost"], 0, "{race:#}");
        // The app's lookup itself does not stall.
        let lookup = &check(&report, "dns.search-expansion")["evidence"]["lookups"][0];
        assert!(lookup["total_ms"].as_f64().unwrap() < 1000.0, "{lookup:#}");
    }
}
