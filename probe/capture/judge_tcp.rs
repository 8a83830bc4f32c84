//! `capture.tcp` (refused and unanswered connects, retransmissions never
//! acknowledged, zero windows, who reset what) and
//! `capture.conntrack-invalid` (a backend's reply that escaped the
//! Service's DNAT and was reset by the client).

use crate::report::{Check, Status};

use super::judge::{ms, plural};
use super::measure_tcp::{EscapeEvidence, Phase, Role, TcpEvidence, Then};

pub const TCP_ID: &str = "capture.tcp";
const TCP_TITLE: &str = "TCP on the wire";
pub const INVALID_ID: &str = "capture.conntrack-invalid";
const INVALID_TITLE: &str = "Replies that escaped a Service's DNAT";

/// A run of retransmissions or a zero window this long is a stall a user
/// notices.
const STALL_MS: f64 = 1000.0;
const REF_74839: &str = "https://github.com/kubernetes/kubernetes/issues/74839";
const REF_SUBTLETIES: &str =
    "https://kubernetes.io/blog/2019/03/29/kube-proxy-subtleties-debugging-an-intermittent-connection-reset/";

pub fn judge_tcp(ev: &TcpEvidence, undecoded: u64) -> Check {
    if ev.connections == 0 {
        let mut summary = "no TCP in the capture".to_string();
        if undecoded > 0 {
            summary.push_str(&format!(
                "; {} could not be decoded (see capture.decode)",
                plural(undecoded, "packet", "packets")
            ));
        }
        return Check::new(TCP_ID, TCP_TITLE, Status::Skip, summary, ev);
    }
    let counts = format!(
        "{}, {}, {}, {}",
        plural(ev.connections, "connection", "connections"),
        plural(ev.resets_total, "reset", "resets"),
        plural(ev.retransmissions, "retransmission", "retransmissions"),
        plural(
            ev.zero_windows,
            "zero-window segment",
            "zero-window segments"
        )
    );
    let mut details = Vec::new();
    for r in ev.refused.iter().take(10) {
        details.push(format!(
            "refused: {} -> {} at {:.3} s, answered by {} after {:.1} ms",
            r.client, r.server, r.at_s, r.by, r.after_ms
        ));
    }
    for s in ev.unanswered_syns.iter().take(10) {
        details.push(format!(
            "no answer: {} -> {} at {:.3} s, {} over {:.0} ms",
            s.client,
            s.server,
            s.at_s,
            plural(u64::from(s.syns), "SYN", "SYNs"),
            s.duration_ms
        ));
    }
    for run in ev.retransmission_runs.iter().take(10) {
        details.push(format!(
            "retransmitted: {} -> {} at {:.3} s, {} over {:.0} ms, {}",
            run.from,
            run.to,
            run.at_s,
            plural(u64::from(run.retransmits), "time", "times"),
            run.duration_ms,
            if run.acknowledged {
                "then acknowledged".to_string()
            } else {
                format!("never acknowledged ({})", run.ended)
            }
        ));
    }
    for z in ev.zero_window_stalls.iter().take(10) {
        details.push(format!(
            "zero window: {} stopped reading at {:.3} s for {:.0} ms ({} waiting), {}",
            z.receiver, z.at_s, z.duration_ms, z.sender, z.ended
        ));
    }
    for r in ev.resets.iter().take(10) {
        details.push(format!(
            "RST {} -> {}{} at {:.3} s, {} {:.0} ms into the connection after {} bytes, idle {}{}",
            r.from,
            r.to,
            match r.by {
                Role::Client => " (client)",
                Role::Server => " (server)",
                Role::Unknown => "",
            },
            r.at_s,
            phase_name(r.phase),
            r.after_ms,
            r.after_bytes,
            ms(r.idle_ms),
            if r.request_after_fin {
                ", request sent after the peer's FIN"
            } else {
                ""
            }
        ));
    }

    let mut findings = Vec::new();
    let mut remedy = Vec::new();
    let mut status = Status::Pass;
    if ev.refused_total > 0 {
        status = Status::Fail;
        let first = &ev.refused[0];
        findings.push(format!(
            "{} refused (first {} -> {}, by {})",
            plural(ev.refused_total, "connect", "connects"),
            first.client,
            first.server,
            first.by
        ));
        remedy.push("a refused connect means nothing listens on that port, the Service has no ready endpoints, or a REJECT rule answered: check `kubectl get endpoints` and the container's port".to_string());
    }
    if ev.unanswered_syns_total > 0 {
        status = Status::Fail;
        let first = &ev.unanswered_syns[0];
        findings.push(format!(
            "{} never answered (first {} -> {}: {} over {:.1} s)",
            plural(ev.unanswered_syns_total, "connect", "connects"),
            first.client,
            first.server,
            plural(u64::from(first.syns), "SYN", "SYNs"),
            first.duration_ms / 1000.0
        ));
        remedy.push("SYNs that get no answer were silently dropped: check the NetworkPolicies selecting this pod (egress) and the target (ingress); on Cilium, `hubble observe --verdict DROPPED`; or the target host is gone".to_string());
    }
    let dead: Vec<_> = ev
        .retransmission_runs
        .iter()
        .filter(|r| !r.acknowledged && (r.duration_ms >= STALL_MS || r.retransmits >= 3))
        .collect();
    if let Some(worst) = dead
        .iter()
        .max_by(|a, b| a.duration_ms.total_cmp(&b.duration_ms))
    {
        status = Status::Fail;
        findings.push(format!(
            "{} -> {}: a segment retransmitted {} over {:.1} s and never acknowledged ({}): the peer or the path is gone",
            worst.from,
            worst.to,
            plural(u64::from(worst.retransmits), "time", "times"),
            worst.duration_ms / 1000.0,
            worst.ended
        ));
        remedy.push("segments never acknowledged: the peer went away without a reset (pod deleted, node down), or the path drops packets (an MTU too small drops large segments while small ones pass); the application waits for the kernel's retransmission timeout (tcp_retries2, about 15 minutes) unless it sets TCP_USER_TIMEOUT or keep-alives".to_string());
    }
    let slow_recoveries = ev
        .retransmission_runs
        .iter()
        .filter(|r| r.acknowledged && r.duration_ms >= STALL_MS)
        .count() as u64;
    if slow_recoveries > 0 {
        if status == Status::Pass {
            status = Status::Warn;
        }
        findings.push(format!(
            "{} waited a second or more for a retransmission timeout",
            plural(slow_recoveries, "segment", "segments")
        ));
        remedy.push("loss on the path made senders wait for their retransmission timeout: check interface drops, the MTU and the node's conntrack".to_string());
    }
    if let Some(worst) = ev
        .zero_window_stalls
        .iter()
        .filter(|z| z.duration_ms >= STALL_MS)
        .max_by(|a, b| a.duration_ms.total_cmp(&b.duration_ms))
    {
        if status == Status::Pass {
            status = Status::Warn;
        }
        findings.push(format!(
            "{} stopped reading: zero window for {:.1} s ({} waiting to send)",
            worst.receiver,
            worst.duration_ms / 1000.0,
            worst.sender
        ));
        remedy.push("a zero window means the receiving application stopped reading its socket (slow, stuck or overloaded), not a network fault: look at that process".to_string());
    }
    let established: Vec<_> = ev.resets.iter().filter(|r| r.established).collect();
    if let Some(first) = established.first() {
        if status == Status::Pass {
            status = Status::Warn;
        }
        findings.push(format!(
            "{} reset (first by {}{} after {} bytes)",
            plural(
                established.len() as u64,
                "established connection",
                "established connections"
            ),
            first.from,
            match first.by {
                Role::Client => ", the client",
                Role::Server => ", the server",
                Role::Unknown => "",
            },
            first.after_bytes
        ));
        if established.iter().any(|r| r.request_after_fin) {
            remedy.push("a request went out on a connection its peer had already closed (FIN, then RST): the keep-alive idle-timeout race. Run `podprobe keepalive UPSTREAM` (check keepalive.*) to compare the app's idle timeout with the proxy's, and keep the client's below the server's".to_string());
        }
        remedy.push("look at who sent each RST: the server process (crashed or closed the socket), a proxy in between, or the node (conntrack INVALID packets: see capture.conntrack-invalid and `podprobe doctor`'s conntrack counters)".to_string());
    }
    let summary = if findings.is_empty() {
        counts
    } else {
        format!("{}; {counts}", findings.join("; "))
    };
    Check::new(TCP_ID, TCP_TITLE, status, summary, ev)
        .with_remedy(remedy)
        .with_details(details)
}

/// The escaped-DNAT reset, said in the words of what the wire shows.
pub fn judge_conntrack_invalid(ev: &EscapeEvidence) -> Check {
    if ev.connections == 0 {
        return Check::new(
            INVALID_ID,
            INVALID_TITLE,
            Status::Skip,
            "no TCP in the capture",
            ev,
        );
    }
    let Some(first) = ev.escaped.first() else {
        return Check::new(
            INVALID_ID,
            INVALID_TITLE,
            Status::Pass,
            format!(
                "no segment arrived from an address the client never connected to ({})",
                plural(ev.connections, "connection", "connections")
            ),
            ev,
        );
    };
    let then = match first.then {
        Then::ResetByService => format!(
            "that connection was then reset by {}{}",
            first.service,
            first
                .then_after_ms
                .map(|t| format!(" {t:.0} ms later"))
                .unwrap_or_default()
        ),
        Then::ResetByClient => "the client then reset that connection itself".to_string(),
        Then::RetransmittedUnacknowledged => {
            "the client's segments on that connection were then never acknowledged".to_string()
        }
        Then::Closed => "that connection was then closed".to_string(),
        Then::CarriedOn => "that connection carried on".to_string(),
        Then::NoMorePackets => "that connection saw no packet after it".to_string(),
    };
    let reset = ev.escaped.iter().filter(|e| e.client_reset).count();
    let mut summary = if first.client_reset {
        format!(
            "{} reset a segment from {}, an address it never opened a connection to, arriving on the local port of its connection to {}; {then}: the backend's reply escaped the Service's DNAT",
            first.client, first.stray_from, first.service
        )
    } else {
        format!(
            "a segment from {}, an address {} never opened a connection to, arrived on the local port of its connection to {} (the client ignored it); {then}: a reply escaped the Service's DNAT",
            first.stray_from, first.client, first.service
        )
    };
    if ev.escaped_total > 1 {
        summary.push_str(&format!(" ({} times in the capture)", ev.escaped_total));
    }
    let mut details: Vec<String> = ev
        .escaped
        .iter()
        .take(10)
        .map(|e| {
            format!(
                "{} -> {} at {:.3} s ({}), {:.0} ms into {} <-> {}{}; then {}",
                e.stray_from,
                e.client,
                e.at_s,
                plural(e.stray_packets, "packet", "packets"),
                e.connection_age_ms,
                e.client,
                e.service,
                if e.client_reset {
                    format!(", reset by the client after {:.1} ms", e.reset_after_ms)
                } else {
                    String::new()
                },
                then_name(e.then)
            )
        })
        .collect();
    details.push("on the node: conntrack marked the backend's segment INVALID (outside the TCP window it tracks), no rule dropped INVALID packets, and nf_conntrack_tcp_be_liberal is 0; an INVALID packet skips the reverse NAT, so it arrived from the backend pod's own address, and the client's RST went back to the backend and killed its side of the connection: the application sees `connection reset by peer`".to_string());
    let remedy = vec![
        "drop INVALID packets on the node before they are forwarded, as kube-proxy's iptables mode does (kubernetes#74839): `iptables -I FORWARD -m conntrack --ctstate INVALID -j DROP` (kube-proxy puts it in KUBE-FORWARD: `iptables -S KUBE-FORWARD`; its metric iptables_ct_state_invalid_dropped_packets_total counts the drops); `podprobe node` checks the node (node.conntrack-invalid)".to_string(),
        "or make conntrack accept out-of-window segments: `sysctl -w net.netfilter.nf_conntrack_tcp_be_liberal=1` on the nodes (kube-proxy `--conntrack-tcp-be-liberal`)".to_string(),
        "where the CNI forwards around kube-proxy's chains, a DaemonSet that installs the drop rule on every node (e.g. network-node-manager) does the same".to_string(),
    ];
    let status = if reset > 0 {
        Status::Fail
    } else {
        Status::Warn
    };
    Check::new(INVALID_ID, INVALID_TITLE, status, summary, ev)
        .with_remedy(remedy)
        .with_refs(&[REF_74839, REF_SUBTLETIES])
        .with_details(details)
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Refused => "answering the SYN,",
        Phase::Handshake => "during the handshake,",
        Phase::Established => "established,",
        Phase::Closing => "while closing,",
        Phase::Unknown => "on a connection begun before the capture,",
        Phase::NoConnection => "answering segments of a connection it did not have,",
    }
}

fn then_name(then: Then) -> &'static str {
    match then {
        Then::ResetByService => "reset by the Service address",
        Then::ResetByClient => "reset by the client",
        Then::RetransmittedUnacknowledged => "retransmissions never acknowledged",
        Then::Closed => "closed",
        Then::CarriedOn => "carried on",
        Then::NoMorePackets => "no more packets",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::measure_tcp::{
        Escape, Refused, Reset, RetransmissionRun, SynUnanswered, ZeroWindowStall,
    };

    fn tcp() -> TcpEvidence {
        TcpEvidence {
            connections: 1,
            ..TcpEvidence::default()
        }
    }

    fn reset(established: bool, request_after_fin: bool) -> Reset {
        Reset {
            from: "10.0.0.9:80".parse().unwrap(),
            to: "10.0.0.5:4000".parse().unwrap(),
            by: Role::Server,
            phase: Phase::Established,
            at_s: 1.0,
            after_ms: 10.0,
            after_bytes: 10,
            idle_ms: Some(5.0),
            established,
            request_after_fin,
        }
    }

    #[test]
    fn tcp_warns_only_on_established_resets_and_points_at_keepalive() {
        let ev = TcpEvidence {
            resets: vec![reset(false, false)],
            resets_total: 1,
            ..tcp()
        };
        assert_eq!(judge_tcp(&ev, 0).status, Status::Pass);
        let ev = TcpEvidence {
            resets: vec![reset(true, true)],
            ..ev
        };
        let c = judge_tcp(&ev, 0);
        assert_eq!(c.status, Status::Warn);
        assert!(c.remedy[0].contains("podprobe keepalive"));
        assert_eq!(judge_tcp(&TcpEvidence::default(), 0).status, Status::Skip);
    }

    #[test]
    fn refused_and_unanswered_connects_fail() {
        let ev = TcpEvidence {
            refused: vec![Refused {
                client: "10.0.0.5:4000".parse().unwrap(),
                server: "10.0.0.9:81".parse().unwrap(),
                at_s: 0.0,
                after_ms: 0.1,
                by: "RST".into(),
            }],
            refused_total: 3,
            unanswered_syns: vec![SynUnanswered {
                client: "10.0.0.5:4001".parse().unwrap(),
                server: "10.0.0.9:82".parse().unwrap(),
                at_s: 0.0,
                syns: 3,
                duration_ms: 3000.0,
            }],
            unanswered_syns_total: 1,
            ..tcp()
        };
        let c = judge_tcp(&ev, 0);
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.starts_with("3 connects refused"), "{}", c.summary);
        assert!(
            c.summary.contains("1 connect never answered"),
            "{}",
            c.summary
        );
        assert!(c.remedy[1].contains("NetworkPolicies"));
    }

    #[test]
    fn a_dead_peer_fails_and_a_zero_window_warns() {
        let run = RetransmissionRun {
            from: "10.0.0.5:4000".parse().unwrap(),
            to: "10.0.0.9:80".parse().unwrap(),
            at_s: 0.0,
            retransmits: 5,
            duration_ms: 9200.0,
            acknowledged: false,
            ended: "the capture ended".into(),
        };
        let c = judge_tcp(
            &TcpEvidence {
                retransmission_runs: vec![run],
                ..tcp()
            },
            0,
        );
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.summary
                .contains("retransmitted 5 times over 9.2 s and never acknowledged"),
            "{}",
            c.summary
        );
        let stall = ZeroWindowStall {
            receiver: "10.0.0.9:80".parse().unwrap(),
            sender: "10.0.0.5:4000".parse().unwrap(),
            at_s: 0.0,
            duration_ms: 24000.0,
            ended: "the window opened".into(),
        };
        let c = judge_tcp(
            &TcpEvidence {
                zero_window_stalls: vec![stall],
                ..tcp()
            },
            0,
        );
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.summary
                .starts_with("10.0.0.9:80 stopped reading: zero window for 24.0 s"),
            "{}",
            c.summary
        );
    }

    #[test]
    fn the_escaped_dnat_reset_is_said_in_words_with_the_fix() {
        let ev = EscapeEvidence {
            connections: 2,
            escaped: vec![Escape {
                client: "10.244.0.2:49384".parse().unwrap(),
                service: "10.96.0.20:80".parse().unwrap(),
                stray_from: "10.244.0.12:8080".parse().unwrap(),
                at_s: 0.008,
                stray_us: 8000,
                stray_packets: 1,
                client_reset: true,
                reset_after_ms: 0.1,
                connection_age_ms: 8.0,
                then: Then::ResetByService,
                then_after_ms: Some(504.0),
            }],
            escaped_total: 1,
        };
        let c = judge_conntrack_invalid(&ev);
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.summary, "10.244.0.2:49384 reset a segment from 10.244.0.12:8080, an address it never opened a connection to, arriving on the local port of its connection to 10.96.0.20:80; that connection was then reset by 10.96.0.20:80 504 ms later: the backend's reply escaped the Service's DNAT");
        assert!(c
            .details
            .iter()
            .any(|d| d.contains("INVALID") && d.contains("nf_conntrack_tcp_be_liberal")));
        assert!(c.remedy[0].contains("--ctstate INVALID -j DROP"));
        assert!(c.refs.iter().any(|r| r.contains("74839")));
        assert!(c.refs.iter().any(|r| r.contains("kube-proxy-subtleties")));
        let none = EscapeEvidence {
            connections: 2,
            ..EscapeEvidence::default()
        };
        assert_eq!(judge_conntrack_invalid(&none).status, Status::Pass);
        assert_eq!(
            judge_conntrack_invalid(&EscapeEvidence::default()).status,
            Status::Skip
        );
    }
}
