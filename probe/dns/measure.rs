//! DNS measurements: queries really sent with [`super::client`], timed,
//! returned as serializable evidence for the judges.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};
use serde::Serialize;

use super::client::{self, Outcome};
use crate::report::millis;

/// One nameserver's answer to the health query.
#[derive(Debug, Clone, Serialize)]
pub struct ServerAnswer {
    pub server: String,
    /// dig's rcode name, or `TIMEOUT` / `ERROR` when nothing usable came back.
    pub rcode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NameserversEvidence {
    pub name: String,
    pub qtype: String,
    pub timeout_ms: f64,
    pub servers: Vec<ServerAnswer>,
}

/// Asks every server for `name`'s A record, all servers at once.
pub fn nameservers(servers: &[SocketAddr], name: &Name, timeout: Duration) -> NameserversEvidence {
    let sent: Vec<client::Sent> = std::thread::scope(|scope| {
        let handles: Vec<_> = servers
            .iter()
            .map(|&server| scope.spawn(move || client::query(server, name, RecordType::A, timeout)))
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    NameserversEvidence {
        name: name.to_ascii(),
        qtype: "A".to_string(),
        timeout_ms: millis(timeout),
        servers: sent
            .iter()
            .map(|s| ServerAnswer {
                server: s.server.to_string(),
                rcode: s.rcode_label(),
                latency_ms: matches!(s.outcome, Outcome::Reply { .. }).then(|| millis(s.elapsed)),
                error: match &s.outcome {
                    Outcome::Reply { .. } => None,
                    Outcome::Timeout => Some(format!("no reply within {} ms", millis(timeout))),
                    Outcome::Error(e) => Some(e.clone()),
                },
            })
            .collect(),
    }
}
