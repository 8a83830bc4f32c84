//! DNS seen on the wire: pairs queries with responses by (client, server,
//! id) and turns the pairs into `capture.dns` evidence. Pure: fed decoded
//! packets, no I/O.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::Query;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use serde::{Deserialize, Serialize};

use crate::stats;

/// Responses seen this long after the last packet of a capture are not
/// expected to have arrived yet: such a query may just have been cut off.
const IN_FLIGHT_US: i64 = 1_000_000;
const TOP_NAMES: usize = 10;
const MAX_LISTED: usize = 50;

/// The parts of a DNS message this analysis needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    pub response: bool,
    pub rcode: u8,
    /// The first question's name (without the trailing dot) and type.
    pub question: Option<(String, String)>,
}

pub const RCODE_NXDOMAIN: u8 = 3;

/// Parses the header and the first question. The rest (answers, EDNS) is
/// not needed and may be cut off by snaplen, so it is not read.
pub fn parse_message(bytes: &[u8]) -> Option<DnsMessage> {
    let header = bytes.get(..12)?;
    let id = u16::from_be_bytes([header[0], header[1]]);
    let response = header[2] & 0x80 != 0;
    let rcode = header[3] & 0x0f;
    let qdcount = u16::from_be_bytes([header[4], header[5]]);
    let question = if qdcount > 0 {
        let mut decoder = BinDecoder::new(bytes);
        decoder.read_slice(12).ok()?;
        Query::read(&mut decoder).ok().map(|q| {
            let name = q.name().to_ascii();
            let name = match name.strip_suffix('.') {
                Some("") | None => name,
                Some(stripped) => stripped.to_string(),
            };
            (name, q.query_type().to_string())
        })
    } else {
        None
    };
    Some(DnsMessage {
        id,
        response,
        rcode,
        question,
    })
}

/// DNS is recognised on its registered port.
pub fn is_dns_port(port: u16) -> bool {
    port == 53
}

/// One query as the client experienced it: its sends and the answer.
#[derive(Debug, Clone)]
struct Transaction {
    client: SocketAddr,
    name: String,
    qtype: String,
    sends_us: Vec<i64>,
    answered_us: Option<i64>,
    rcode: Option<u8>,
}

/// Feeds DNS messages in capture order; `finish` gives the evidence.
#[derive(Debug, Default)]
pub struct DnsTracker {
    queries: u64,
    responses: u64,
    nxdomain: u64,
    txns: Vec<Transaction>,
    /// (client, server, id) -> index of the newest transaction with that key.
    open: HashMap<(SocketAddr, SocketAddr, u16), usize>,
    last_us: i64,
}

impl DnsTracker {
    pub fn observe(&mut self, ts_us: i64, src: SocketAddr, dst: SocketAddr, msg: &DnsMessage) {
        self.last_us = self.last_us.max(ts_us);
        if msg.response {
            self.responses += 1;
            if msg.rcode == RCODE_NXDOMAIN {
                self.nxdomain += 1;
            }
            if let Some(&i) = self.open.get(&(dst, src, msg.id)) {
                let txn = &mut self.txns[i];
                if txn.answered_us.is_none() {
                    txn.answered_us = Some(ts_us);
                    txn.rcode = Some(msg.rcode);
                }
            }
            return;
        }
        self.queries += 1;
        let key = (src, dst, msg.id);
        if let Some(&i) = self.open.get(&key) {
            let txn = &mut self.txns[i];
            // The same id again before an answer is a retransmission; after
            // one, the client reused the id for a new query.
            if txn.answered_us.is_none() {
                txn.sends_us.push(ts_us);
                return;
            }
        }
        let (name, qtype) = msg
            .question
            .clone()
            .unwrap_or_else(|| ("<no question>".to_string(), String::new()));
        self.open.insert(key, self.txns.len());
        self.txns.push(Transaction {
            client: src,
            name,
            qtype,
            sends_us: vec![ts_us],
            answered_us: None,
            rcode: None,
        });
    }

    pub fn finish(self) -> DnsEvidence {
        let mut latencies: Vec<f64> = Vec::new();
        let mut gaps: Vec<f64> = Vec::new();
        let mut retransmitted = 0;
        let mut unanswered = 0;
        let mut unanswered_at_end = 0;
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for txn in &self.txns {
            *counts.entry(txn.name.as_str()).or_default() += txn.sends_us.len() as u64;
            retransmitted += txn.sends_us.len() as u64 - 1;
            gaps.extend(txn.sends_us.windows(2).map(|w| us_to_ms(w[1] - w[0])));
            let first = txn.sends_us[0];
            match txn.answered_us {
                Some(at) => latencies.push(us_to_ms(at - first)),
                None => {
                    unanswered += 1;
                    let last = txn.sends_us[txn.sends_us.len() - 1];
                    if self.last_us - last < IN_FLIGHT_US {
                        unanswered_at_end += 1;
                    }
                }
            }
        }
        let mut top: Vec<(&str, u64)> = counts.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let search_chains = search_chains(&self.txns);
        let unanswered_names = self
            .txns
            .iter()
            .filter(|t| t.answered_us.is_none())
            .map(|t| format!("{} {}", t.name, t.qtype).trim_end().to_string())
            .take(MAX_LISTED)
            .collect();
        gaps.truncate(MAX_LISTED * 4);
        DnsEvidence {
            queries: self.queries,
            responses: self.responses,
            unanswered,
            unanswered_at_end,
            unanswered_names,
            retransmitted,
            retransmit_gaps_ms: gaps,
            nxdomain: self.nxdomain,
            search_chains,
            p50_ms: stats::percentile(&latencies, 50.0),
            p99_ms: stats::percentile(&latencies, 99.0),
            max_ms: stats::max(&latencies),
            top_names: top
                .into_iter()
                .take(TOP_NAMES)
                .map(|(name, queries)| NameCount {
                    name: name.to_string(),
                    queries,
                })
                .collect(),
        }
    }
}

/// Groups each client's names into a base name and the variants that are
/// the base plus a search suffix (`api.example.com` and
/// `api.example.com.svc.cluster.local`), whichever order the resolver sent
/// them in: with ndots:5 glibc tries the suffixed names first.
fn search_chains(txns: &[Transaction]) -> Vec<SearchChain> {
    let mut by_client: Vec<(IpAddr, Vec<&Transaction>)> = Vec::new();
    for txn in txns {
        match by_client.iter_mut().find(|(ip, _)| *ip == txn.client.ip()) {
            Some((_, list)) => list.push(txn),
            None => by_client.push((txn.client.ip(), vec![txn])),
        }
    }
    let mut chains = Vec::new();
    for (client, list) in by_client {
        let mut names: Vec<&str> = Vec::new();
        for txn in &list {
            if !names.contains(&txn.name.as_str()) {
                names.push(&txn.name);
            }
        }
        let is_variant_of = |name: &str, base: &str| {
            name.len() > base.len() + 1
                && name[..base.len()].eq_ignore_ascii_case(base)
                && name.as_bytes()[base.len()] == b'.'
        };
        for &base in &names {
            // The shortest name of a family is its base.
            if names.iter().any(|&other| is_variant_of(base, other)) {
                continue;
            }
            let variants: Vec<&str> = names
                .iter()
                .copied()
                .filter(|&n| is_variant_of(n, base))
                .collect();
            if variants.is_empty() {
                continue;
            }
            let members: Vec<&&Transaction> = list
                .iter()
                .filter(|t| t.name == base || variants.contains(&t.name.as_str()))
                .collect();
            let start = members.iter().map(|t| t.sends_us[0]).min().unwrap_or(0);
            let end = members
                .iter()
                .map(|t| t.answered_us.unwrap_or(t.sends_us[t.sends_us.len() - 1]))
                .max()
                .unwrap_or(start);
            chains.push(SearchChain {
                client,
                base: base.to_string(),
                variants: variants.iter().map(|v| v.to_string()).collect(),
                queries: members.iter().map(|t| t.sends_us.len() as u64).sum(),
                nxdomain: members
                    .iter()
                    .filter(|t| t.rcode == Some(RCODE_NXDOMAIN))
                    .count() as u64,
                duration_ms: us_to_ms(end - start),
            });
            if chains.len() == MAX_LISTED {
                return chains;
            }
        }
    }
    chains
}

fn us_to_ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

/// Evidence of `capture.dns`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsEvidence {
    /// Query packets, retransmissions included.
    pub queries: u64,
    /// Response packets.
    pub responses: u64,
    /// Queries that never got a response in the capture.
    pub unanswered: u64,
    /// Of those, the ones sent in the capture's last second: they may just
    /// have been cut off by its end.
    pub unanswered_at_end: u64,
    pub unanswered_names: Vec<String>,
    /// Query packets that repeated an unanswered query (same client, server
    /// and id).
    pub retransmitted: u64,
    pub retransmit_gaps_ms: Vec<f64>,
    /// NXDOMAIN response packets.
    pub nxdomain: u64,
    pub search_chains: Vec<SearchChain>,
    /// Time from a query's first send to its response.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub top_names: Vec<NameCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchChain {
    pub client: IpAddr,
    pub base: String,
    pub variants: Vec<String>,
    pub queries: u64,
    pub nxdomain: u64,
    pub duration_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameCount {
    pub name: String,
    pub queries: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u16, response: bool, rcode: u8, name: &str) -> DnsMessage {
        DnsMessage {
            id,
            response,
            rcode,
            question: Some((name.to_string(), "A".to_string())),
        }
    }

    const CLIENT: &str = "10.0.0.5:40000";
    const SERVER: &str = "10.96.0.10:53";

    fn run(events: &[(i64, bool, u16, u8, &str)]) -> DnsEvidence {
        let (c, s) = (CLIENT.parse().unwrap(), SERVER.parse().unwrap());
        let mut t = DnsTracker::default();
        for &(ms, response, id, rcode, name) in events {
            let m = msg(id, response, rcode, name);
            if response {
                t.observe(ms * 1000, s, c, &m);
            } else {
                t.observe(ms * 1000, c, s, &m);
            }
        }
        t.finish()
    }

    #[test]
    fn pairs_queries_and_measures_latency() {
        let ev = run(&[
            (0, false, 1, 0, "a"),
            (3, true, 1, 0, "a"),
            (10, false, 2, 0, "b"),
            (30, true, 2, 3, "b"),
        ]);
        assert_eq!((ev.queries, ev.responses, ev.nxdomain), (2, 2, 1));
        assert_eq!((ev.unanswered, ev.retransmitted), (0, 0));
        assert_eq!(ev.p50_ms, Some(3.0));
        assert_eq!(ev.max_ms, Some(20.0));
    }

    #[test]
    fn a_resend_of_the_same_id_is_a_retransmission_with_its_gap() {
        let ev = run(&[
            (0, false, 7, 0, "x"),
            (5000, false, 7, 0, "x"),
            (5002, true, 7, 0, "x"),
            (6000, false, 8, 0, "y"),
            (9000, false, 9, 0, "z"),
        ]);
        assert_eq!(ev.retransmitted, 1);
        assert_eq!(ev.retransmit_gaps_ms, vec![5000.0]);
        assert_eq!(ev.max_ms, Some(5002.0));
        assert_eq!((ev.unanswered, ev.unanswered_at_end), (2, 1));
        assert_eq!(ev.unanswered_names, vec!["y A", "z A"]);
    }

    #[test]
    fn search_suffixed_variants_form_a_chain_in_either_order() {
        let ev = run(&[
            (0, false, 1, 0, "api.example.com.default.svc.cluster.local"),
            (1, true, 1, 3, "api.example.com.default.svc.cluster.local"),
            (2, false, 2, 0, "api.example.com.svc.cluster.local"),
            (3, true, 2, 3, "api.example.com.svc.cluster.local"),
            (4, false, 3, 0, "api.example.com"),
            (5, true, 3, 0, "api.example.com"),
            (6, false, 4, 0, "example.org"),
        ]);
        assert_eq!(ev.search_chains.len(), 1);
        let chain = &ev.search_chains[0];
        assert_eq!(chain.base, "api.example.com");
        assert_eq!(chain.variants.len(), 2);
        assert_eq!((chain.queries, chain.nxdomain), (3, 2));
        assert_eq!(chain.duration_ms, 5.0);
    }

    #[test]
    fn parses_a_real_query_and_rejects_short_bytes() {
        // A? www.tcpdump.org, id 0x0143 (tests/fixtures/pcap/dns_udp.pcap).
        let mut q = vec![0x01, 0x43, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["www", "tcpdump", "org"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        let m = parse_message(&q).unwrap();
        assert_eq!(m.id, 0x0143);
        assert!(!m.response);
        assert_eq!(
            m.question,
            Some(("www.tcpdump.org".to_string(), "A".to_string()))
        );
        for end in 0..q.len() {
            let _ = parse_message(&q[..end]);
        }
        assert_eq!(parse_message(&q[..11]), None);
    }
}
