//! DNS seen on the wire, as a resolver experiences it: each query is paired
//! with its answer by (client address and port, server, id, question), its
//! resends counted, and each wait of a second or more explained by what the
//! wire shows:
//!
//! - **the conntrack race** (kubernetes#56903) only for its own signature:
//!   one of an A/AAAA pair sent from the same socket goes unanswered while
//!   its twin is answered at once, and the same query is sent again when
//!   the resolver's timeout expires (5 s for glibc, 2.5 s for musl);
//! - **a server stall**: the server answered nothing at all for a second or
//!   more while at least two queries waited;
//! - **lost fragments**: the answer left the server in IP fragments and one
//!   never arrived;
//! - **loss** otherwise: the server answered others meanwhile.
//!
//! Memory is bounded: open queries, twins, names and servers live in capped
//! tables; what is evicted is finalised first and counted. Pure: fed decoded
//! messages, no I/O.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::Query;
use hickory_proto::rr::RecordType;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use serde::{Deserialize, Serialize};

use super::bounded;
use super::decode::IcmpError;
use super::reassemble::Incomplete;
use crate::stats;

/// A query first sent this close to the end of the capture may just have
/// been cut off by it.
pub const IN_FLIGHT_US: i64 = 1_000_000;
/// A wait this long is a resolver timeout, not a slow answer: glibc's
/// shortest `options timeout:` is 1 s.
pub const LATE_US: i64 = 900_000;
/// A resend this long after the first send is the resolver's timeout
/// expiring (glibc waits 5 s by default, musl 2.5 s, `timeout:` up to 10 s
/// is seen in clusters); a race's twin was answered well within it.
pub const RACE_RESEND_US: std::ops::RangeInclusive<i64> = 900_000..=11_000_000;
/// A and AAAA of one lookup leave the socket this close together.
const TWIN_WINDOW_US: i64 = 50_000;
/// Queries held at once (see the README's memory budget).
pub const MAX_QUERIES: usize = 14_336;
/// Distinct (client, name) pairs counted for search chains and top names.
const MAX_NAMES: usize = 16_384;
/// Servers graded one by one.
const MAX_SERVERS: usize = 256;
/// Latency samples kept per server; beyond, a uniform sample (reservoir).
const MAX_SAMPLES: usize = 8192;
/// Stall periods remembered per server.
const MAX_STALLS: usize = 64;
const TOP_NAMES: usize = 10;
const MAX_LISTED: usize = 50;

pub const RCODE_NXDOMAIN: u8 = 3;

/// The parts of a DNS message this analysis needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsMessage {
    pub id: u16,
    pub response: bool,
    pub rcode: u8,
    pub question: Option<Question>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Without the trailing dot (`.` for the root), lower case: resolvers
    /// that randomise case (0x20) get the same case back.
    pub name: String,
    pub qtype: u16,
}

/// Parses the header and the first question. The rest (answers, EDNS) is
/// not needed and may be cut off by snaplen, so it is not read.
pub fn parse_message(bytes: &[u8]) -> Option<DnsMessage> {
    let header = bytes.get(..12)?;
    let qdcount = u16::from_be_bytes([header[4], header[5]]);
    let question = if qdcount > 0 {
        let mut decoder = BinDecoder::new(bytes);
        decoder.read_slice(12).ok()?;
        Query::read(&mut decoder).ok().map(|q| {
            let name = q.name().to_ascii().to_ascii_lowercase();
            let name = match name.strip_suffix('.') {
                Some("") | None => name,
                Some(stripped) => stripped.to_string(),
            };
            Question {
                name,
                qtype: u16::from(q.query_type()),
            }
        })
    } else {
        None
    };
    Some(DnsMessage {
        id: u16::from_be_bytes([header[0], header[1]]),
        response: header[2] & 0x80 != 0,
        rcode: header[3] & 0x0f,
        question,
    })
}

/// DNS is recognised on its registered port.
pub fn is_dns_port(port: u16) -> bool {
    port == 53
}

pub fn qtype_name(qtype: u16) -> String {
    RecordType::from(qtype).to_string()
}

const QTYPE_A: u16 = 1;
const QTYPE_AAAA: u16 = 28;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TxKey {
    client: SocketAddr,
    server: SocketAddr,
    id: u16,
    qtype: u16,
    name: Arc<str>,
}

/// One query as the client experienced it.
#[derive(Debug, Clone)]
struct Tx {
    first_us: i64,
    last_us: i64,
    sends: u32,
    /// The first resend, after how long.
    first_gap_us: Option<i64>,
    answered_us: Option<i64>,
    rcode: u8,
    /// The other half of an A/AAAA pair sent from the same socket at once.
    twin: Option<u16>,
    /// When that twin was answered.
    twin_answered_us: Option<i64>,
}

/// The last A or AAAA query each socket sent to each server, to find the
/// twin of the next one.
#[derive(Debug, Clone)]
struct LastAsk {
    first_us: i64,
    qtype: u16,
    id: u16,
    name: Arc<str>,
}

#[derive(Debug, Default)]
struct ServerState {
    queries: u64,
    answered: u64,
    lost: u64,
    samples: Vec<f64>,
    seen_samples: u64,
    max_ms: Option<f64>,
    /// Query packets since the server's last response: when the first two
    /// were sent, and how many.
    silent: Option<(i64, Option<i64>, u64)>,
    stalls: Vec<Stall>,
}

#[derive(Debug, Clone, Copy, Default)]
struct NameStat {
    queries: u64,
    nxdomain: u64,
    first_us: i64,
    end_us: i64,
}

/// Feeds DNS messages in capture order; `finish` gives the evidence.
#[derive(Debug)]
pub struct DnsTracker {
    ev: DnsEvidence,
    txs: HashMap<TxKey, Tx>,
    last_ask: HashMap<(SocketAddr, SocketAddr), LastAsk>,
    servers: HashMap<SocketAddr, ServerState>,
    names: HashMap<(IpAddr, Arc<str>), NameStat>,
    /// Unfinished fragmented datagrams, by (source, destination) address.
    incomplete: HashMap<(IpAddr, IpAddr), Vec<Incomplete>>,
    /// ICMP errors about queries: (client, server) -> what they said.
    unreachable: HashMap<(SocketAddr, SocketAddr), &'static str>,
    first_us: Option<i64>,
    rng: u64,
}

impl Default for DnsTracker {
    fn default() -> Self {
        DnsTracker {
            ev: DnsEvidence::default(),
            txs: bounded::table(MAX_QUERIES),
            last_ask: bounded::table(MAX_QUERIES / 2),
            servers: HashMap::new(),
            names: HashMap::new(),
            incomplete: HashMap::new(),
            unreachable: HashMap::new(),
            first_us: None,
            rng: 0,
        }
    }
}

impl DnsTracker {
    /// The time of the capture's first packet (for `at_s` in the evidence).
    pub fn start(&mut self, ts_us: i64) {
        self.first_us.get_or_insert(ts_us);
    }

    pub fn observe(&mut self, ts_us: i64, src: SocketAddr, dst: SocketAddr, msg: &DnsMessage) {
        self.start(ts_us);
        if msg.response {
            self.response(ts_us, src, dst, msg);
        } else {
            self.query(ts_us, src, dst, msg);
        }
    }

    fn key(client: SocketAddr, server: SocketAddr, msg: &DnsMessage) -> TxKey {
        let (qtype, name) = match &msg.question {
            Some(q) => (q.qtype, Arc::from(q.name.as_str())),
            None => (0, Arc::from("<no question>")),
        };
        TxKey {
            client,
            server,
            id: msg.id,
            qtype,
            name,
        }
    }

    fn query(&mut self, ts_us: i64, client: SocketAddr, server: SocketAddr, msg: &DnsMessage) {
        self.ev.queries += 1;
        let key = Self::key(client, server, msg);
        self.server_query(ts_us, server);
        match self.txs.get_mut(&key) {
            Some(tx) if tx.answered_us.is_none() => {
                // The same query again before an answer: a retransmission.
                tx.sends += 1;
                let gap = ts_us - tx.first_us;
                tx.first_gap_us.get_or_insert(gap);
                tx.last_us = ts_us;
                self.ev.retransmitted += 1;
                if self.ev.retransmit_gaps_ms.len() < MAX_LISTED * 4 {
                    self.ev.retransmit_gaps_ms.push(us_to_ms(gap));
                }
                return;
            }
            Some(_) => {
                // Answered before: the client asks anew with the same id.
                if let Some(old) = self.txs.remove(&key) {
                    self.finalize(&key, &old, ts_us);
                }
            }
            None => {}
        }
        if self.txs.len() >= MAX_QUERIES {
            self.evict(ts_us);
        }
        let mut tx = Tx {
            first_us: ts_us,
            last_us: ts_us,
            sends: 1,
            first_gap_us: None,
            answered_us: None,
            rcode: 0,
            twin: None,
            twin_answered_us: None,
        };
        if matches!(key.qtype, QTYPE_A | QTYPE_AAAA) {
            let socket = (client, server);
            if let Some(last) = self.last_ask.get(&socket) {
                if last.qtype != key.qtype
                    && last.name == key.name
                    && ts_us - last.first_us <= TWIN_WINDOW_US
                {
                    let twin_key = TxKey {
                        id: last.id,
                        qtype: last.qtype,
                        ..key.clone()
                    };
                    if let Some(twin) = self.txs.get_mut(&twin_key) {
                        if twin.twin.is_none() {
                            twin.twin = Some(key.id);
                            tx.twin = Some(last.id);
                            tx.twin_answered_us = twin.answered_us;
                        }
                    }
                }
            }
            self.last_ask.insert(
                socket,
                LastAsk {
                    first_us: ts_us,
                    qtype: key.qtype,
                    id: key.id,
                    name: key.name.clone(),
                },
            );
            if self.last_ask.len() > MAX_QUERIES / 2 {
                // Twins are sent together: the least recent sockets go.
                for old in bounded::oldest_quarter(&self.last_ask, |last| last.first_us) {
                    self.last_ask.remove(&old);
                }
            }
        }
        self.txs.insert(key, tx);
    }

    fn response(&mut self, ts_us: i64, server: SocketAddr, client: SocketAddr, msg: &DnsMessage) {
        self.ev.responses += 1;
        if msg.rcode == RCODE_NXDOMAIN {
            self.ev.nxdomain += 1;
        }
        if let Some(state) = self.servers.get_mut(&server) {
            if let Some((since, second, sends)) = state.silent.take() {
                record_stall(state, since, second, sends, ts_us);
            }
        }
        let key = Self::key(client, server, msg);
        let Some(tx) = self.txs.get_mut(&key) else {
            self.ev.unmatched_responses += 1;
            return;
        };
        if tx.answered_us.is_some() {
            self.ev.duplicate_responses += 1;
            return;
        }
        tx.answered_us = Some(ts_us);
        tx.rcode = msg.rcode;
        let twin = tx.twin;
        if let Some(twin_id) = twin {
            let qtype = if key.qtype == QTYPE_A {
                QTYPE_AAAA
            } else {
                QTYPE_A
            };
            let twin_key = TxKey {
                id: twin_id,
                qtype,
                ..key
            };
            if let Some(twin) = self.txs.get_mut(&twin_key) {
                twin.twin_answered_us.get_or_insert(ts_us);
            }
        }
    }

    fn server_query(&mut self, ts_us: i64, server: SocketAddr) {
        if !self.servers.contains_key(&server) && self.servers.len() >= MAX_SERVERS {
            self.ev.servers_not_graded += 1;
            return;
        }
        let state = self.servers.entry(server).or_default();
        state.queries += 1;
        state.silent = Some(match state.silent {
            None => (ts_us, None, 1),
            Some((first, None, n)) => (first, Some(ts_us), n + 1),
            Some((first, second, n)) => (first, second, n + 1),
        });
    }

    /// A fragmented datagram that never completed: if it came from a DNS
    /// server, the query it answered was not lost but its answer was.
    pub fn incomplete(&mut self, datagram: Incomplete) {
        let key = (datagram.src, datagram.dst);
        if !self.incomplete.contains_key(&key) && self.incomplete.len() >= MAX_SERVERS * 16 {
            return;
        }
        let list = self.incomplete.entry(key).or_default();
        if list.len() < MAX_LISTED {
            list.push(datagram);
        }
    }

    /// Makes room: answered queries go quietly; an unanswered one whose
    /// fate was still open (sent within the last second) is counted.
    /// An ICMP error about a UDP packet to a DNS server: the query could
    /// not be delivered (nothing listens, or a REJECT rule).
    pub fn icmp_error(&mut self, _ts_us: i64, err: &IcmpError) {
        if !is_dns_port(err.dst.port()) {
            return;
        }
        self.ev.icmp_errors += 1;
        if self.unreachable.len() < MAX_QUERIES {
            self.unreachable.insert((err.src, err.dst), err.reason);
        }
    }

    fn evict(&mut self, now_us: i64) {
        for key in bounded::oldest_quarter(&self.txs, |tx| tx.last_us) {
            if let Some(tx) = self.txs.remove(&key) {
                if tx.answered_us.is_none() && now_us - tx.first_us < IN_FLIGHT_US {
                    self.ev.evicted_queries += 1;
                }
                self.finalize(&key, &tx, now_us);
            }
        }
    }

    /// Folds a finished query into the counts: its latency, whether the
    /// client waited, and why.
    fn finalize(&mut self, key: &TxKey, tx: &Tx, end_us: i64) {
        self.ev.transactions += 1;
        let name_key = (key.client.ip(), key.name.clone());
        if self.names.contains_key(&name_key) || self.names.len() < MAX_NAMES {
            let stat = self.names.entry(name_key).or_insert(NameStat {
                first_us: tx.first_us,
                ..NameStat::default()
            });
            stat.queries += u64::from(tx.sends);
            stat.nxdomain += u64::from(tx.rcode == RCODE_NXDOMAIN && tx.answered_us.is_some());
            stat.first_us = stat.first_us.min(tx.first_us);
            stat.end_us = stat.end_us.max(tx.answered_us.unwrap_or(tx.last_us));
        } else {
            self.ev.names_not_counted += 1;
        }
        let latency_us = tx.answered_us.map(|a| a - tx.first_us);
        if let Some(state) = self.servers.get_mut(&key.server) {
            match latency_us {
                Some(us) => {
                    state.answered += 1;
                    let ms = us_to_ms(us);
                    state.max_ms = Some(state.max_ms.map_or(ms, |m| m.max(ms)));
                    // Reservoir sampling keeps a uniform sample of them all.
                    state.seen_samples += 1;
                    if state.samples.len() < MAX_SAMPLES {
                        state.samples.push(ms);
                    } else {
                        self.rng = self
                            .rng
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let slot = (self.rng >> 33) % state.seen_samples;
                        if let Some(s) = state.samples.get_mut(slot as usize) {
                            *s = ms;
                        }
                    }
                }
                None if end_us - tx.first_us >= IN_FLIGHT_US => state.lost += 1,
                None => {}
            }
        }
        match latency_us {
            Some(_) => self.ev.answered += 1,
            None if end_us - tx.first_us < IN_FLIGHT_US => {
                self.ev.unanswered_at_end += 1;
                return;
            }
            None => {
                self.ev.unanswered += 1;
                if self.ev.unanswered_names.len() < MAX_LISTED {
                    self.ev.unanswered_names.push(format!(
                        "{} {}",
                        key.name,
                        qtype_name(key.qtype)
                    ));
                }
            }
        }
        // How long the client waited before an answer or its next send.
        let waited_us = tx
            .first_gap_us
            .or(latency_us)
            .unwrap_or(end_us - tx.first_us);
        let unreachable =
            latency_us.is_none() && self.unreachable.contains_key(&(key.client, key.server));
        if waited_us < LATE_US && !unreachable {
            return;
        }
        let cause = if unreachable {
            Cause::Unreachable
        } else {
            self.cause(key, tx)
        };
        *match cause {
            Cause::ConntrackRace => &mut self.ev.causes.conntrack_race,
            Cause::ServerStall => &mut self.ev.causes.server_stall,
            Cause::FragmentsLost => &mut self.ev.causes.fragments_lost,
            Cause::Loss => &mut self.ev.causes.loss,
            Cause::SlowAnswer => &mut self.ev.causes.slow_answer,
            Cause::Unreachable => &mut self.ev.causes.unreachable,
        } += 1;
        if self.ev.late.len() < MAX_LISTED {
            let start = self.first_us.unwrap_or(tx.first_us);
            self.ev.late.push(LateQuery {
                client: key.client,
                server: key.server,
                name: key.name.to_string(),
                qtype: qtype_name(key.qtype),
                id: key.id,
                at_s: (tx.first_us - start) as f64 / 1e6,
                waited_ms: us_to_ms(waited_us),
                sends: tx.sends,
                answered_ms: latency_us.map(us_to_ms),
                twin_answered_ms: tx.twin_answered_us.map(|a| us_to_ms(a - tx.first_us)),
                cause,
            });
        }
    }

    fn cause(&self, key: &TxKey, tx: &Tx) -> Cause {
        let resent_on_timeout = tx.first_gap_us.is_some_and(|g| RACE_RESEND_US.contains(&g));
        let twin_answered_at_once = tx
            .twin_answered_us
            .is_some_and(|a| a - tx.first_us < LATE_US);
        if resent_on_timeout && twin_answered_at_once {
            return Cause::ConntrackRace;
        }
        let lost_fragments = self
            .incomplete
            .get(&(key.server.ip(), key.client.ip()))
            .is_some_and(|list| {
                list.iter().any(|d| {
                    let ports_match = d.src_port.is_none_or(|p| p == key.server.port())
                        && d.dst_port.is_none_or(|p| p == key.client.port());
                    let id_match = d.dns_id.is_none_or(|id| id == key.id);
                    ports_match
                        && id_match
                        && d.first_us >= tx.first_us
                        && d.first_us <= tx.last_us + RACE_RESEND_US.end()
                })
            });
        if lost_fragments {
            return Cause::FragmentsLost;
        }
        let stalled = self.servers.get(&key.server).is_some_and(|s| {
            s.stalls
                .iter()
                .any(|st| tx.first_us >= st.start_us && tx.first_us < st.end_us)
        });
        if stalled {
            return Cause::ServerStall;
        }
        if tx.answered_us.is_some() && tx.sends == 1 {
            return Cause::SlowAnswer;
        }
        Cause::Loss
    }

    /// Finalises everything still open, as of `end_us` (the capture's end:
    /// its last packet, or when a live capture stopped).
    pub fn finish(mut self, end_us: i64) -> DnsEvidence {
        for state in self.servers.values_mut() {
            if let Some((since, second, sends)) = state.silent.take() {
                if record_stall(state, since, second, sends, end_us) {
                    if let Some(stall) = state.stalls.last_mut() {
                        stall.until_end = true;
                    }
                }
            }
        }
        let open: Vec<(TxKey, Tx)> = self.txs.drain().collect();
        for (key, tx) in &open {
            self.finalize(key, tx, end_us);
        }
        let start = self.first_us.unwrap_or(end_us);
        let mut all_samples = Vec::new();
        let mut servers: Vec<ServerEvidence> = self
            .servers
            .iter()
            .map(|(addr, s)| {
                all_samples.extend_from_slice(&s.samples);
                ServerEvidence {
                    server: *addr,
                    queries: s.queries,
                    answered: s.answered,
                    lost: s.lost,
                    p50_ms: stats::percentile(&s.samples, 50.0),
                    p90_ms: stats::percentile(&s.samples, 90.0),
                    p99_ms: stats::percentile(&s.samples, 99.0),
                    max_ms: s.max_ms,
                    sampled: s.seen_samples > s.samples.len() as u64,
                    stalls: s
                        .stalls
                        .iter()
                        .map(|st| StallEvidence {
                            at_s: (st.start_us - start) as f64 / 1e6,
                            duration_ms: us_to_ms(st.end_us - st.start_us),
                            queries: st.queries,
                            until_end: st.until_end,
                        })
                        .collect(),
                }
            })
            .collect();
        servers.sort_by(|a, b| b.queries.cmp(&a.queries).then(a.server.cmp(&b.server)));
        let mut ev = self.ev;
        ev.p50_ms = stats::percentile(&all_samples, 50.0);
        ev.p99_ms = stats::percentile(&all_samples, 99.0);
        ev.max_ms = servers.iter().filter_map(|s| s.max_ms).reduce(f64::max);
        ev.servers = servers;
        let (chains, top) = names_summary(&self.names);
        ev.search_chains = chains;
        ev.top_names = top;
        ev
    }
}

/// Ends a silent period of a server at `end_us`: a stall when at least two
/// query packets waited a second or more with no response to anyone.
/// Whether it was one.
fn record_stall(
    state: &mut ServerState,
    since: i64,
    second: Option<i64>,
    sends: u64,
    end_us: i64,
) -> bool {
    let Some(second) = second else {
        return false;
    };
    if end_us - second < IN_FLIGHT_US {
        return false;
    }
    if let Some(last) = state.stalls.last_mut().filter(|l| since <= l.end_us) {
        last.end_us = end_us;
        last.queries += sends;
        return true;
    }
    if state.stalls.len() >= MAX_STALLS {
        return false;
    }
    state.stalls.push(Stall {
        start_us: since,
        end_us,
        queries: sends,
        until_end: false,
    });
    true
}

#[derive(Debug, Clone, Copy)]
struct Stall {
    start_us: i64,
    end_us: i64,
    queries: u64,
    until_end: bool,
}

/// Search chains (a base name and its search-suffixed variants from one
/// client, in whichever order the resolver sent them: the ndots
/// amplification) and the most asked names.
fn names_summary(
    names: &HashMap<(IpAddr, Arc<str>), NameStat>,
) -> (Vec<SearchChain>, Vec<NameCount>) {
    let mut by_name: HashMap<&str, u64> = HashMap::new();
    let mut by_client: HashMap<IpAddr, Vec<(&str, &NameStat)>> = HashMap::new();
    for ((client, name), stat) in names {
        *by_name.entry(name).or_default() += stat.queries;
        by_client.entry(*client).or_default().push((name, stat));
    }
    let mut top: Vec<(&str, u64)> = by_name.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let top = top
        .into_iter()
        .take(TOP_NAMES)
        .map(|(name, queries)| NameCount {
            name: name.to_string(),
            queries,
        })
        .collect();

    let mut chains = Vec::new();
    let mut clients: Vec<_> = by_client.into_iter().collect();
    clients.sort_by_key(|(ip, _)| *ip);
    for (client, list) in clients {
        let stats: HashMap<&str, &NameStat> = list.iter().copied().collect();
        // A variant is a base name plus a search suffix: its base is its
        // shortest prefix, ending at a dot, that was asked too.
        let mut families: HashMap<&str, Vec<&str>> = HashMap::new();
        for &(name, _) in &list {
            let base = name
                .match_indices('.')
                .map(|(at, _)| &name[..at])
                .find(|prefix| stats.contains_key(prefix));
            if let Some(base) = base {
                families.entry(base).or_default().push(name);
            }
        }
        let mut families: Vec<(&str, Vec<&str>)> = families.into_iter().collect();
        families.sort();
        for (base, mut variants) in families {
            variants.sort_unstable();
            let members: Vec<&NameStat> = std::iter::once(base)
                .chain(variants.iter().copied())
                .filter_map(|n| stats.get(n).copied())
                .collect();
            let start = members.iter().map(|s| s.first_us).min().unwrap_or(0);
            let end = members.iter().map(|s| s.end_us).max().unwrap_or(start);
            chains.push(SearchChain {
                client,
                base: base.to_string(),
                variants: variants.iter().map(|v| v.to_string()).collect(),
                queries: members.iter().map(|s| s.queries).sum(),
                nxdomain: members.iter().map(|s| s.nxdomain).sum(),
                duration_ms: us_to_ms(end - start),
            });
            if chains.len() == MAX_LISTED {
                return (chains, top);
            }
        }
    }
    (chains, top)
}

fn us_to_ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

/// Why a client waited a second or more for an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    ConntrackRace,
    ServerStall,
    FragmentsLost,
    Loss,
    /// Answered, without a resend, but a second or more late.
    SlowAnswer,
    /// An ICMP error came back instead (port unreachable: nothing listens;
    /// administratively prohibited: a REJECT rule).
    Unreachable,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Causes {
    pub conntrack_race: u64,
    pub server_stall: u64,
    pub fragments_lost: u64,
    pub loss: u64,
    pub slow_answer: u64,
    pub unreachable: u64,
}

/// Evidence of `capture.dns`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsEvidence {
    /// Query packets, retransmissions included.
    pub queries: u64,
    /// Response packets.
    pub responses: u64,
    /// NXDOMAIN response packets.
    pub nxdomain: u64,
    /// Distinct queries (a query and its resends are one).
    pub transactions: u64,
    pub answered: u64,
    /// Queries never answered, though the capture went on for a second or
    /// more after their last send.
    pub unanswered: u64,
    /// Queries unanswered but sent in the capture's last second: they may
    /// just have been cut off by its end.
    pub unanswered_at_end: u64,
    pub unanswered_names: Vec<String>,
    /// Query packets that repeated an unanswered query (same client socket,
    /// server, id and question), and after how long (the first 200).
    pub retransmitted: u64,
    pub retransmit_gaps_ms: Vec<f64>,
    /// Queries the client waited a second or more for, by cause.
    pub causes: Causes,
    /// The first 50 of them.
    pub late: Vec<LateQuery>,
    /// Per server, busiest first: latency of the answered queries (first
    /// send to answer), losses and stalls.
    pub servers: Vec<ServerEvidence>,
    /// Latency over all servers.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Responses to no query seen (sent before the capture began), and
    /// second responses to one query.
    pub unmatched_responses: u64,
    pub duplicate_responses: u64,
    /// ICMP errors about queries to port 53.
    pub icmp_errors: u64,
    pub search_chains: Vec<SearchChain>,
    pub top_names: Vec<NameCount>,
    /// Bounded memory: queries finalised early because too many were open,
    /// names not counted, servers beyond the first 256.
    pub evicted_queries: u64,
    pub names_not_counted: u64,
    pub servers_not_graded: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LateQuery {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub name: String,
    pub qtype: String,
    pub id: u16,
    /// Seconds since the capture's first packet.
    pub at_s: f64,
    /// Until the answer or the first resend (or the end of the capture).
    pub waited_ms: f64,
    pub sends: u32,
    pub answered_ms: Option<f64>,
    /// The A/AAAA twin from the same socket, answered after this long.
    pub twin_answered_ms: Option<f64>,
    pub cause: Cause,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerEvidence {
    pub server: SocketAddr,
    pub queries: u64,
    pub answered: u64,
    pub lost: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Percentiles from a uniform sample of 8192 answers, not all of them.
    pub sampled: bool,
    pub stalls: Vec<StallEvidence>,
}

/// A period in which the server answered nothing while queries waited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StallEvidence {
    pub at_s: f64,
    pub duration_ms: f64,
    /// Query packets sent to it meanwhile.
    pub queries: u64,
    /// Still silent when the capture ended.
    pub until_end: bool,
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

    const CLIENT: &str = "10.0.0.5:40000";
    const SERVER: &str = "10.96.0.10:53";

    /// (ms, response, id, rcode, name, qtype, client port)
    type Event<'a> = (i64, bool, u16, u8, &'a str, u16, u16);

    fn run_until(events: &[Event<'_>], end_ms: i64) -> DnsEvidence {
        let client: SocketAddr = CLIENT.parse().unwrap();
        let server: SocketAddr = SERVER.parse().unwrap();
        let mut t = DnsTracker::default();
        for &(ms, response, id, rcode, name, qtype, port) in events {
            let m = DnsMessage {
                id,
                response,
                rcode,
                question: Some(Question {
                    name: name.to_string(),
                    qtype,
                }),
            };
            let c = SocketAddr::new(client.ip(), port);
            if response {
                t.observe(ms * 1000, server, c, &m);
            } else {
                t.observe(ms * 1000, c, server, &m);
            }
        }
        t.finish(end_ms * 1000)
    }

    fn run(events: &[Event<'_>]) -> DnsEvidence {
        let end = events.iter().map(|e| e.0).max().unwrap_or(0);
        run_until(events, end)
    }

    const A: u16 = QTYPE_A;
    const AAAA: u16 = QTYPE_AAAA;

    #[test]
    fn pairs_queries_and_measures_latency_per_server() {
        let ev = run(&[
            (0, false, 1, 0, "a", A, 1000),
            (3, true, 1, 0, "a", A, 1000),
            (10, false, 2, 0, "b", A, 1000),
            (30, true, 2, 3, "b", A, 1000),
        ]);
        assert_eq!((ev.queries, ev.responses, ev.nxdomain), (2, 2, 1));
        assert_eq!(
            (ev.unanswered, ev.retransmitted, ev.transactions),
            (0, 0, 2)
        );
        assert_eq!(ev.p50_ms, Some(3.0));
        assert_eq!(ev.max_ms, Some(20.0));
        assert_eq!(ev.servers.len(), 1);
        assert_eq!(ev.servers[0].p99_ms, Some(20.0));
        assert_eq!(ev.causes, Causes::default());
    }

    #[test]
    fn the_same_id_with_another_question_is_another_query() {
        let ev = run(&[
            (0, false, 1, 0, "a", A, 1000),
            (0, false, 1, 0, "a", AAAA, 1000),
            (1, true, 1, 0, "a", AAAA, 1000),
            (2, true, 1, 0, "a", A, 1000),
        ]);
        assert_eq!((ev.transactions, ev.answered, ev.retransmitted), (2, 2, 0));
    }

    /// What glibc does when the node drops the AAAA of a parallel pair
    /// (captured in the lab's dns-race scenario): A answered at once, the
    /// AAAA resent on the same socket after 5 s.
    #[test]
    fn the_race_is_named_only_for_its_signature() {
        let ev = run_until(
            &[
                (0, false, 24178, 3, "x.default.svc.cluster.local", A, 49572),
                (
                    0,
                    false,
                    5488,
                    3,
                    "x.default.svc.cluster.local",
                    AAAA,
                    49572,
                ),
                (2, true, 24178, 3, "x.default.svc.cluster.local", A, 49572),
                (
                    5002,
                    false,
                    24178,
                    3,
                    "x.default.svc.cluster.local",
                    A,
                    49572,
                ),
                (
                    5003,
                    true,
                    24178,
                    3,
                    "x.default.svc.cluster.local",
                    A,
                    49572,
                ),
                (
                    5003,
                    false,
                    5488,
                    3,
                    "x.default.svc.cluster.local",
                    AAAA,
                    49572,
                ),
                (
                    10006,
                    false,
                    5488,
                    3,
                    "x.default.svc.cluster.local",
                    AAAA,
                    41557,
                ),
                (
                    10007,
                    true,
                    5488,
                    3,
                    "x.default.svc.cluster.local",
                    AAAA,
                    41557,
                ),
            ],
            12_000,
        );
        assert_eq!(ev.causes.conntrack_race, 1, "{ev:#?}");
        assert_eq!(ev.causes.server_stall + ev.causes.loss, 0, "{ev:#?}");
        let late = &ev.late[0];
        assert_eq!(late.qtype, "AAAA");
        assert_eq!(late.waited_ms, 5003.0);
        assert_eq!(late.twin_answered_ms, Some(2.0));
        assert_eq!(ev.retransmit_gaps_ms, vec![5003.0]);
        assert_eq!(ev.unanswered, 1);
        assert!(ev.servers[0].stalls.is_empty());
    }

    /// A server frozen for 6 s: both halves of the pair wait, both are
    /// resent, then everything is answered at once. Not the race.
    #[test]
    fn a_frozen_server_is_a_stall_not_the_race() {
        let ev = run(&[
            (0, false, 1, 0, "web", A, 1000),
            (0, false, 2, 0, "web", AAAA, 1000),
            (5000, false, 1, 0, "web", A, 1000),
            (5000, false, 2, 0, "web", AAAA, 1000),
            (6000, true, 1, 0, "web", A, 1000),
            (6000, true, 2, 0, "web", AAAA, 1000),
            (6000, true, 1, 0, "web", A, 1000),
            (6000, true, 2, 0, "web", AAAA, 1000),
        ]);
        assert_eq!(ev.causes.server_stall, 2, "{ev:#?}");
        assert_eq!(ev.causes.conntrack_race, 0);
        assert_eq!(ev.duplicate_responses, 2);
        let stall = &ev.servers[0].stalls[0];
        assert_eq!((stall.duration_ms, stall.queries), (6000.0, 4));
        assert_eq!(ev.servers[0].p99_ms, Some(6000.0));
    }

    #[test]
    fn unanswered_is_measured_against_the_end_of_the_capture() {
        let events = [
            (0, false, 1, 0, "a", A, 1000),
            (1, true, 1, 0, "a", A, 1000),
            (100, false, 2, 0, "lost", A, 1000),
        ];
        let cut = run_until(&events, 500);
        assert_eq!((cut.unanswered, cut.unanswered_at_end), (0, 1));
        let lost = run_until(&events, 5100);
        assert_eq!((lost.unanswered, lost.unanswered_at_end), (1, 0));
        assert_eq!(lost.unanswered_names, vec!["lost A"]);
        assert_eq!(lost.causes.loss, 1);
    }

    #[test]
    fn a_lost_fragment_of_the_answer_is_named() {
        let client: SocketAddr = CLIENT.parse().unwrap();
        let server: SocketAddr = SERVER.parse().unwrap();
        let mut t = DnsTracker::default();
        let q = DnsMessage {
            id: 9,
            response: false,
            rcode: 0,
            question: Some(Question {
                name: "big".into(),
                qtype: 16,
            }),
        };
        t.observe(0, client, server, &q);
        t.incomplete(Incomplete {
            src: server.ip(),
            dst: client.ip(),
            protocol: 17,
            src_port: Some(53),
            dst_port: Some(client.port()),
            dns_id: Some(9),
            first_us: 1000,
            fragments: 1,
            bytes: 1448,
            reason: "a fragment never arrived".into(),
        });
        let ev = t.finish(6_000_000);
        assert_eq!(ev.causes.fragments_lost, 1, "{ev:#?}");
    }

    #[test]
    fn search_suffixed_variants_form_a_chain_in_either_order() {
        let ev = run(&[
            (
                0,
                false,
                1,
                0,
                "api.example.com.default.svc.cluster.local",
                A,
                1000,
            ),
            (
                1,
                true,
                1,
                3,
                "api.example.com.default.svc.cluster.local",
                A,
                1000,
            ),
            (2, false, 2, 0, "api.example.com.svc.cluster.local", A, 1000),
            (3, true, 2, 3, "api.example.com.svc.cluster.local", A, 1000),
            (4, false, 3, 0, "api.example.com", A, 1000),
            (5, true, 3, 0, "api.example.com", A, 1000),
            (6, false, 4, 0, "example.org", A, 1000),
            (7, true, 4, 0, "example.org", A, 1000),
        ]);
        assert_eq!(ev.search_chains.len(), 1);
        let chain = &ev.search_chains[0];
        assert_eq!(chain.base, "api.example.com");
        assert_eq!(chain.variants.len(), 2);
        assert_eq!((chain.queries, chain.nxdomain), (3, 2));
        assert_eq!(chain.duration_ms, 5.0);
    }

    #[test]
    fn a_flood_of_unanswered_queries_stays_bounded() {
        let client: SocketAddr = CLIENT.parse().unwrap();
        let server: SocketAddr = SERVER.parse().unwrap();
        let mut t = DnsTracker::default();
        for i in 0..70_000u32 {
            let m = DnsMessage {
                id: i as u16,
                response: false,
                rcode: 0,
                question: Some(Question {
                    name: format!("n{i}.example"),
                    qtype: A,
                }),
            };
            t.observe(
                i64::from(i) * 10,
                SocketAddr::new(client.ip(), 1024 + (i % 60000) as u16),
                server,
                &m,
            );
            assert!(t.txs.len() <= MAX_QUERIES);
            assert!(t.names.len() <= MAX_NAMES);
        }
        let ev = t.finish(10_000_000);
        assert_eq!(ev.transactions, 70_000);
        assert!(ev.evicted_queries > 0);
        assert_eq!(ev.unanswered + ev.unanswered_at_end, 70_000);
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
            Some(Question {
                name: "www.tcpdump.org".to_string(),
                qtype: 1
            })
        );
        for end in 0..q.len() {
            let _ = parse_message(&q[..end]);
        }
        assert_eq!(parse_message(&q[..11]), None);
    }
}
