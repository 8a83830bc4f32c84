//! `dns.timeout-race`: the conntrack race only when the pattern that races
//! loses significantly more than a control that cannot race; plain loss and
//! server stalls are findings of their own; fixes in effect are named, and
//! whether they work is read off the application's own lookups.

use super::judge::{capped, REF_NODELOCAL};
use super::measure_race::{PatternEvidence, RaceEvidence, APP, CONTROL, SAME_SOCKET, SLOW_MS};
use crate::report::{Check, Status};

const REF_RACE: &str = "https://github.com/kubernetes/kubernetes/issues/56903";
/// How unlikely the same-socket pattern's excess loss must be by chance
/// before it is called the race: one false alarm in a thousand runs.
pub const ALPHA: f64 = 0.001;

const ID: &str = "dns.timeout-race";
const TITLE: &str = "DNS 5 s timeouts (A/AAAA conntrack race)";

fn empty(name: &str) -> PatternEvidence {
    PatternEvidence {
        pattern: name.to_string(),
        attempts: 0,
        lost: 0,
        lost_qtypes: Default::default(),
        p50_ms: None,
        max_ms: None,
        slow: 0,
    }
}

fn rate(p: &PatternEvidence) -> f64 {
    f64::from(p.lost) / f64::from(p.attempts.max(1))
}

pub fn timeout_race(ev: &RaceEvidence) -> Check {
    let find = |name: &str| {
        ev.patterns
            .iter()
            .find(|p| p.pattern == name)
            .cloned()
            .unwrap_or_else(|| empty(name))
    };
    let (same, control, app) = (find(SAME_SOCKET), find(CONTROL), find(APP));
    let p = ev.p_value.unwrap_or(1.0);
    let race = rate(&same) > rate(&control) && p < ALPHA;
    let counts = format!(
        "A+AAAA from one socket lost replies in {} of {} attempts, single queries from fresh sockets in {} of {} (p = {})",
        same.lost,
        same.attempts,
        control.lost,
        control.attempts,
        p_text(p)
    );
    let app_stall = format!(
        "the app's {} lookups lost replies in {} of {} and waited up to {}",
        ev.resolver,
        app.lost,
        app.attempts,
        ms_text(app.max_ms)
    );
    let fixes = capped(&ev.fixes_in_effect, ", ");
    let (status, summary) = if race && !ev.fixes_in_effect.is_empty() && app.lost == 0 {
        (
            Status::Pass,
            format!("the conntrack race is on this path ({counts}), but {fixes} is in effect and works: {app_stall}"),
        )
    } else if race && !ev.fixes_in_effect.is_empty() {
        (
            Status::Fail,
            format!(
                "the conntrack race: {counts}; {fixes} is in effect but does not help: {app_stall}"
            ),
        )
    } else if race {
        (
            Status::Fail,
            format!("the conntrack race: {counts}; {app_stall}"),
        )
    } else if same.lost + control.lost > 0 {
        (
            Status::Warn,
            format!(
                "plain packet loss to {}, not the race: {counts}; {app_stall}",
                ev.server
            ),
        )
    } else if same.slow + control.slow > 0 {
        (
            Status::Warn,
            format!(
                "server stalls, nothing lost: {} of {} attempts had a reply slower than {SLOW_MS:.0} ms (slowest {})",
                same.slow + control.slow,
                same.attempts + control.attempts,
                ms_text(crate::stats::max(&[same.max_ms, control.max_ms].into_iter().flatten().collect::<Vec<_>>()))
            ),
        )
    } else {
        let mut text = format!(
            "no reply lost in {} attempts per pattern to {}",
            same.attempts, ev.server
        );
        if !ev.fixes_in_effect.is_empty() {
            text.push_str(&format!("; in effect: {fixes}"));
        }
        (Status::Pass, text)
    };
    let mut details = vec![format!(
        "{:<22}  {:>8}  {:>5}  {:>4}  {:<16}  {:>8}  {:>8}",
        "pattern", "attempts", "lost", "slow", "lost qtypes", "p50 ms", "max ms"
    )];
    for p in &ev.patterns {
        let qtypes: Vec<String> = p
            .lost_qtypes
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| format!("{t} x{n}"))
            .collect();
        details.push(format!(
            "{:<22}  {:>8}  {:>5}  {:>4}  {:<16}  {:>8}  {:>8}",
            p.pattern,
            p.attempts,
            p.lost,
            p.slow,
            if qtypes.is_empty() {
                "-".to_string()
            } else {
                qtypes.join(", ")
            },
            ms(p.p50_ms),
            ms(p.max_ms)
        ));
    }
    details.push(format!(
        "same socket vs control: one-sided Fisher exact p = {} (the race needs p < {ALPHA}); app-resolver is the app's own lookup through its {} model, its times what the app waits",
        p_text(p),
        ev.resolver
    ));
    if let Some(ct) = &ev.conntrack {
        details.push(format!(
            "conntrack during the test: insert_failed +{}, drop +{}",
            ct.insert_failed, ct.drop
        ));
    }
    if !ev.ignored_options.is_empty() {
        details.push(format!(
            "set in resolv.conf but ignored by {}: {}",
            ev.resolver,
            ev.ignored_options.join(", ")
        ));
    }
    if !ev.processes.is_empty() {
        let list: Vec<String> = ev
            .processes
            .iter()
            .map(|p| format!("{} (pid {}): {}", p.comm, p.pid, p.libc))
            .collect();
        details.push(format!("pod processes: {}", list.join(", ")));
    }
    let remedy = match status {
        Status::Fail => race_remedy(ev),
        Status::Warn if same.lost + control.lost > 0 => vec![format!(
            "look for loss between the pod and {} (node and CNI drops: `podprobe capture -f 'udp port 53' --analyze`, conntrack drop counters, the DNS pods' load); it hits every resolver, fixes for the race do not help",
            ev.server
        )],
        Status::Warn => vec!["look at the DNS pods' load and upstreams (CoreDNS: coredns_dns_request_duration_seconds, the forward plugin's health)".to_string()],
        _ => Vec::new(),
    };
    Check::new(ID, TITLE, status, summary, ev)
        .with_details(details)
        .with_remedy(remedy)
        .with_refs(&[REF_RACE, REF_NODELOCAL])
}

fn p_text(p: f64) -> String {
    if p < 1e-4 {
        format!("{p:.1e}")
    } else {
        format!("{p:.4}")
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.1}"))
}

fn ms_text(v: Option<f64>) -> String {
    match v {
        Some(ms) if ms >= 1000.0 => format!("{:.1} s", ms / 1000.0),
        Some(ms) => format!("{ms:.1} ms"),
        None => "-".to_string(),
    }
}

/// What helps depends on the application's resolver and on what is
/// already in effect; nothing in effect is recommended again.
fn race_remedy(ev: &RaceEvidence) -> Vec<String> {
    let in_effect = |what: &str| ev.fixes_in_effect.iter().any(|f| f.contains(what));
    let nodelocal = "run NodeLocal DNSCache (pods query 169.254.20.10 on their node: no DNAT, no conntrack race), or move nodes to a kernel with the conntrack race fixes (5.0+) and masquerade with --random-fully";
    let glibc = "add `options single-request-reopen` (A and AAAA from different sockets, so they never share a conntrack entry):\nspec:\n  dnsConfig:\n    options:\n      - name: single-request-reopen";
    let musl = "musl has no resolv.conf option against it (it ignores single-request-reopen)";
    let assumed = ev.processes.is_empty();
    let mut remedy = Vec::new();
    let reopen = in_effect("single-request") || in_effect("use-vc");
    if assumed {
        if !reopen {
            remedy.push(format!(
                "for glibc apps (Debian, Ubuntu, RHEL based images): {glibc}"
            ));
        }
        remedy.push(format!(
            "for musl apps (Alpine based images): {musl}; {nodelocal}"
        ));
    } else if ev.resolver == "glibc" && !reopen {
        remedy.push(format!("glibc apps: {glibc}"));
    } else if ev.resolver.starts_with("musl") {
        remedy.push(format!("musl apps: {musl}; {nodelocal}"));
    } else if !in_effect("NodeLocal") {
        remedy.push(nodelocal.to_string());
    }
    remedy
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::measure::ProcessLibc;
    use crate::stats::fisher_greater;

    fn pattern(name: &str, lost: u32, app_max: f64) -> PatternEvidence {
        PatternEvidence {
            pattern: name.into(),
            attempts: 20,
            lost,
            lost_qtypes: [("AAAA".to_string(), lost)].into(),
            p50_ms: Some(0.4),
            max_ms: Some(app_max),
            slow: 0,
        }
    }

    fn race(same: u32, control: u32, app: u32, fixes: &[&str], resolver: &str) -> RaceEvidence {
        RaceEvidence {
            name: "kubernetes.default.svc.cluster.local.".into(),
            server: "10.96.0.10:53".into(),
            timeout_ms: 1000.0,
            patterns: vec![
                pattern(SAME_SOCKET, same, 1000.0),
                pattern(CONTROL, control, 1.0),
                pattern(APP, app, if app > 0 { 5000.0 } else { 1.0 }),
            ],
            p_value: Some(fisher_greater(same, 20, control, 20)),
            resolver: resolver.into(),
            fixes_in_effect: fixes.iter().map(|f| f.to_string()).collect(),
            ignored_options: Vec::new(),
            conntrack: None,
            processes: Vec::new(),
        }
    }

    #[test]
    fn the_race_needs_significance_against_the_control() {
        let sig = timeout_race(&race(18, 0, 18, &[], "glibc"));
        assert_eq!(sig.status, Status::Fail, "{}", sig.summary);
        assert!(sig.summary.contains("18 of 20"), "{}", sig.summary);
        assert!(
            sig.summary.contains("waited up to 5.0 s"),
            "{}",
            sig.summary
        );
        assert_eq!(
            sig.remedy.len(),
            2,
            "glibc and musl fixes when the app is not visible"
        );
        // Plain loss: both patterns lose alike.
        let loss = timeout_race(&race(3, 4, 3, &[], "glibc"));
        assert_eq!(loss.status, Status::Warn, "{}", loss.summary);
        assert!(
            loss.summary.contains("plain packet loss"),
            "{}",
            loss.summary
        );
        // A few more same-socket losses are not yet the race.
        assert_eq!(
            timeout_race(&race(5, 1, 5, &[], "glibc")).status,
            Status::Warn
        );
        let ok = timeout_race(&race(0, 0, 0, &[], "glibc"));
        assert_eq!(ok.status, Status::Pass);
        assert!(ok.remedy.is_empty());
    }

    #[test]
    fn fixes_in_effect_are_named_checked_and_never_recommended_again() {
        let works = timeout_race(&race(20, 0, 0, &["options single-request-reopen"], "glibc"));
        assert_eq!(works.status, Status::Pass, "{}", works.summary);
        assert!(
            works.summary.contains("is in effect and works"),
            "{}",
            works.summary
        );
        let useless = timeout_race(&race(20, 0, 7, &["options single-request-reopen"], "glibc"));
        assert_eq!(useless.status, Status::Fail);
        assert!(useless.summary.contains("does not help"));
        assert!(
            useless
                .remedy
                .iter()
                .all(|r| !r.contains("add `options single-request-reopen`")),
            "{:?}",
            useless.remedy
        );
        assert!(useless.remedy.iter().any(|r| r.contains("NodeLocal")));
        let go = timeout_race(&race(
            20,
            0,
            0,
            &["separate sockets per query (Go's resolver)"],
            "go",
        ));
        assert_eq!(go.status, Status::Pass, "{}", go.summary);
    }

    #[test]
    fn musl_apps_get_musl_advice() {
        let mut ev = race(20, 0, 20, &[], "musl");
        ev.processes = vec![ProcessLibc {
            pid: 7,
            comm: "app".into(),
            libc: "musl".into(),
            version: None,
            uid: None,
        }];
        ev.ignored_options = vec!["single-request-reopen".into()];
        let check = timeout_race(&ev);
        assert_eq!(check.remedy.len(), 1, "{:?}", check.remedy);
        assert!(check.remedy[0].starts_with("musl apps"));
        assert!(check
            .details
            .iter()
            .any(|d| d.contains("ignored by musl: single-request-reopen")));
    }
}
