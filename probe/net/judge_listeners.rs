//! Pure judge of `net.listeners`: what the pod listens on, as `ss -tulpn`
//! shows it. Context for the flowchart, never a failure: podprobe cannot
//! know which ports the pod should serve.

use std::net::SocketAddr;

use super::measure_listeners::{Listener, ListenersEvidence};
use crate::report::{Check, Status};

const ID: &str = "net.listeners";
const TITLE: &str = "What the pod listens on";
/// Listeners named in the summary; the details list them all.
const SUMMARY_MAX: usize = 6;

pub fn listeners(evidence: &ListenersEvidence) -> Check {
    if evidence.listeners.is_empty() && !evidence.unreadable.is_empty() {
        return Check::new(
            ID,
            TITLE,
            Status::Skip,
            format!(
                "socket tables not readable: {}",
                evidence.unreadable.join("; ")
            ),
            evidence,
        );
    }
    let mut summary = if evidence.listeners.is_empty() {
        "nothing listens in this network namespace".to_string()
    } else {
        let mut named: Vec<String> = evidence
            .listeners
            .iter()
            .take(SUMMARY_MAX)
            .map(|l| format!("{} {} ({})", l.proto, endpoint(l), owner(l)))
            .collect();
        if evidence.listeners.len() > SUMMARY_MAX {
            named.push(format!("{} more", evidence.listeners.len() - SUMMARY_MAX));
        }
        named.join(", ")
    };
    let hidden = evidence.listeners.iter().filter(|l| l.owner_hidden).count();
    if hidden > 0 {
        summary.push_str(&format!(
            "; the process of {hidden} socket{} is not visible: it belongs to another user \
             (run podprobe as that user or as root)",
            if hidden == 1 { "" } else { "s" }
        ));
    }
    if !evidence.unreadable.is_empty() {
        summary.push_str(&format!(
            "; not readable: {}",
            evidence.unreadable.join("; ")
        ));
    }
    let mut details = Vec::new();
    if !evidence.listeners.is_empty() {
        details.push(format!(
            "{:<5} {:<40} {:>6}  process",
            "proto", "local address", "uid"
        ));
        details.extend(evidence.listeners.iter().map(|l| {
            format!(
                "{:<5} {:<40} {:>6}  {}",
                l.proto,
                endpoint(l),
                l.uid,
                owner(l)
            )
        }));
    }
    Check::new(ID, TITLE, Status::Pass, summary, evidence).with_details(details)
}

fn endpoint(l: &Listener) -> String {
    SocketAddr::new(l.address, l.port).to_string()
}

/// `python3 pid 12`, or why there is no name.
fn owner(l: &Listener) -> String {
    if !l.processes.is_empty() {
        return l
            .processes
            .iter()
            .map(|p| format!("{} pid {}", p.comm, p.pid))
            .collect::<Vec<_>>()
            .join(", ");
    }
    if l.owner_hidden {
        format!("uid {}, process not visible", l.uid)
    } else {
        // No process of this pod holds it: the kernel's (e.g. a socket of
        // another container whose processes this one cannot see at all).
        format!("uid {}, no visible process holds it", l.uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::measure_listeners::Owner;

    fn listener(port: u16, processes: Vec<Owner>, owner_hidden: bool) -> Listener {
        Listener {
            proto: "tcp".into(),
            address: "0.0.0.0".parse().unwrap(),
            port,
            uid: 65532,
            inode: 1,
            processes,
            owner_hidden,
        }
    }

    #[test]
    fn listeners_name_their_processes_and_say_when_hidden() {
        let ev = ListenersEvidence {
            listeners: vec![
                listener(
                    8080,
                    vec![Owner {
                        pid: 7,
                        comm: "web".into(),
                    }],
                    false,
                ),
                listener(9090, vec![], true),
            ],
            hidden_processes: 1,
            unreadable: vec![],
        };
        let check = listeners(&ev);
        assert_eq!(check.status, Status::Pass);
        assert!(
            check.summary.contains("tcp 0.0.0.0:8080 (web pid 7)"),
            "{}",
            check.summary
        );
        assert!(
            check.summary.contains("uid 65532, process not visible"),
            "{}",
            check.summary
        );
        assert!(check.summary.contains("another user"), "{}", check.summary);
        assert_eq!(check.details.len(), 3);
    }

    #[test]
    fn nothing_listening_and_nothing_readable() {
        let empty = ListenersEvidence {
            listeners: vec![],
            hidden_processes: 0,
            unreadable: vec![],
        };
        assert_eq!(listeners(&empty).status, Status::Pass);
        let unreadable = ListenersEvidence {
            unreadable: vec!["/proc/net/tcp: permission denied".into()],
            ..empty
        };
        assert_eq!(listeners(&unreadable).status, Status::Skip);
    }
}
