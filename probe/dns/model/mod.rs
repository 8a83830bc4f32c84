//! Models of the stub resolvers applications link: glibc's, musl's and Go's.
//! Each is a pure function from the resolver's configuration, a name and
//! what every query meets on the network to the queries the application
//! sends (server, transport, name, type, socket, time), the outcome it gets
//! and the time it waits.
//!
//! What the network does is asked of a [`Network`]: a table of answers in
//! the unit tests, podprobe's own client when measuring ([`super::wire`]),
//! so a measurement sends exactly what the application would send and
//! reports the stall the application would see.

pub mod glibc;
pub mod golang;
pub mod musl;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::resolvconf::{Env, ResolvConf};

/// Which resolver implementation a model follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Resolver {
    /// glibc 2.36 as Debian 12 ships it (with the 2.36 branch's resolver
    /// fixes): Debian, Ubuntu, RHEL-like and distroless base images.
    Glibc,
    /// musl 1.2.3 (Debian 12's musl-tools, Alpine up to 3.17): UDP only.
    #[serde(rename = "musl-1.2.3")]
    #[value(name = "musl-1.2.3")]
    Musl123,
    /// musl 1.2.4 and later (Alpine 3.18+): falls back to TCP on truncation.
    Musl,
    /// Go's own resolver (Go 1.19, Debian 12's golang): programs built with
    /// CGO_ENABLED=0, as most Kubernetes controllers are.
    Go,
}

impl Resolver {
    /// The `--resolver` values, in the order the help lists them.
    pub const ALL: [Resolver; 4] = [
        Resolver::Glibc,
        Resolver::Musl,
        Resolver::Musl123,
        Resolver::Go,
    ];

    /// The `--resolver` value.
    pub fn name(self) -> &'static str {
        match self {
            Resolver::Glibc => "glibc",
            Resolver::Musl123 => "musl-1.2.3",
            Resolver::Musl => "musl",
            Resolver::Go => "go",
        }
    }

    /// What the model follows, for evidence and text.
    pub fn describe(self) -> &'static str {
        match self {
            Resolver::Glibc => "glibc 2.36 (Debian 12)",
            Resolver::Musl123 => "musl 1.2.3 (Debian 12, Alpine <= 3.17)",
            Resolver::Musl => "musl 1.2.4+ (Alpine 3.18+)",
            Resolver::Go => "Go 1.19 pure-Go resolver",
        }
    }

    /// Parses a `--resolver` value.
    pub fn from_name(text: &str) -> Option<Resolver> {
        Resolver::ALL.into_iter().find(|r| r.name() == text)
    }
}

impl std::fmt::Display for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

/// The address types a lookup asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Qtype {
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
}

impl Qtype {
    pub fn code(self) -> u16 {
        match self {
            Qtype::A => 1,
            Qtype::Aaaa => 28,
        }
    }
}

impl std::fmt::Display for Qtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Qtype::A => "A",
            Qtype::Aaaa => "AAAA",
        })
    }
}

/// One query as the application puts it on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    pub server: SocketAddr,
    pub transport: Transport,
    /// The question's name, absolute. A name the library encodes wrongly
    /// (musl 1.2.3's `search .`) keeps its double dot here and is
    /// `malformed`.
    pub qname: String,
    pub qtype: Qtype,
    /// The EDNS0 UDP payload size advertised, if the query carries OPT.
    pub edns: Option<u16>,
    /// The AD bit is set in the query (glibc's `trust-ad`).
    pub ad: bool,
    /// The query's name is encoded wrongly on the wire (see `qname`).
    pub malformed: bool,
    /// Which of the application's sockets sends it: queries with the same
    /// number leave from the same socket (source port), others from
    /// different ones.
    pub socket: u32,
    /// When the query is sent, from the start of the lookup.
    pub sent_at: Duration,
    /// How long the application waits for this reply at most; `None` when
    /// it waits forever (glibc over TCP).
    pub wait: Option<Duration>,
}

/// A reply as the resolvers look at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub rcode: u16,
    /// The A and AAAA records of the answer section.
    pub addresses: Vec<IpAddr>,
    /// All answer records (CNAMEs and other types included).
    pub answer_count: u16,
    pub additional_count: u16,
    pub truncated: bool,
    pub authoritative: bool,
    pub recursion_available: bool,
    /// The reply repeats the query's question (some servers leave it out
    /// of REFUSED and SERVFAIL replies).
    #[serde(default = "yes")]
    pub question: bool,
    /// The message's size in bytes (0: not known).
    #[serde(default)]
    pub size: usize,
}

fn yes() -> bool {
    true
}

impl Reply {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;

    /// A reply with `rcode` and these addresses, as an authoritative,
    /// recursive server answers.
    pub fn new(rcode: u16, addresses: Vec<IpAddr>) -> Reply {
        Reply {
            rcode,
            answer_count: u16::try_from(addresses.len()).unwrap_or(u16::MAX),
            addresses,
            additional_count: 0,
            truncated: false,
            authoritative: true,
            recursion_available: true,
            question: true,
            size: 0,
        }
    }

    /// Without its question: only a header (what some servers send for
    /// REFUSED).
    pub fn bare(rcode: u16) -> Reply {
        Reply {
            question: false,
            size: 12,
            ..Reply::new(rcode, Vec::new())
        }
    }

    /// NOERROR without answers, neither authoritative nor recursive, no
    /// additional records: what glibc and Go take for a lame referral.
    pub fn is_lame(&self) -> bool {
        self.rcode == Reply::NOERROR
            && self.answer_count == 0
            && !self.authoritative
            && !self.recursion_available
            && self.additional_count == 0
    }
}

/// What became of one query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fate {
    /// A reply came back `after` the send.
    Reply {
        reply: Reply,
        #[serde(with = "duration_ms")]
        after: Duration,
    },
    /// Nothing came back within the query's wait (or at all).
    Silent,
    /// An ICMP error (UDP) or a reset (TCP) came back `after` the send.
    Unreachable {
        #[serde(with = "duration_ms")]
        after: Duration,
    },
}

impl Fate {
    /// When the fate is known to the application, if within `wait`.
    fn arrival(&self, wait: Option<Duration>) -> Option<Duration> {
        let after = match self {
            Fate::Reply { after, .. } | Fate::Unreachable { after } => *after,
            Fate::Silent => return None,
        };
        wait.is_none_or(|w| after <= w).then_some(after)
    }
}

/// `fate` as a library sees it that ignores replies failing `accept`: an
/// ignored reply is as good as none.
fn screened(fate: Fate, accept: impl Fn(&Reply) -> bool) -> Fate {
    match fate {
        Fate::Reply { ref reply, .. } if !accept(reply) => Fate::Silent,
        other => other,
    }
}

/// Where queries go. `send` gets queries the application sends at the same
/// moment (one after another in `batch` order) and returns each one's fate.
pub trait Network {
    fn send(&mut self, batch: &[Query]) -> Vec<Fate>;
}

/// Any function from a query to its fate is a network (the unit tests'
/// servers, the differential tests' predictions).
impl<F: FnMut(&Query) -> Fate> Network for F {
    fn send(&mut self, batch: &[Query]) -> Vec<Fate> {
        batch.iter().map(self).collect()
    }
}

/// One query the application sent and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub query: Query,
    pub fate: Fate,
    /// Index into [`Trace::candidates`].
    pub candidate: usize,
}

/// What the application gets back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Resolved {
        addresses: BTreeSet<IpAddr>,
    },
    /// The lookup failed with this error: getaddrinfo's code for the C
    /// libraries (`EAI_NONAME`, `EAI_NODATA`, `EAI_AGAIN`, `EAI_FAIL`), the
    /// DNSError text for Go (`no such host`, `i/o timeout`, ...).
    Failed {
        error: String,
    },
    /// The application never gets an answer (glibc waits on a TCP
    /// connection without a timeout).
    Hangs,
    /// The library crashes (musl divides by `attempts:0`).
    Crashes {
        signal: String,
    },
}

impl Outcome {
    fn failed(error: &str) -> Outcome {
        Outcome::Failed {
            error: error.to_string(),
        }
    }

    pub fn is_resolved(&self) -> bool {
        matches!(self, Outcome::Resolved { .. })
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Resolved { addresses } => {
                let list: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
                write!(f, "resolves to {}", list.join(", "))
            }
            Outcome::Failed { error } => write!(f, "fails with {error}"),
            Outcome::Hangs => f.write_str("hangs (no timeout on the TCP read)"),
            Outcome::Crashes { signal } => write!(f, "crashes ({signal})"),
        }
    }
}

/// A resolver model with the configuration its library reads.
#[derive(Debug, Clone)]
pub struct Model {
    pub resolver: Resolver,
    config: Config,
    servers: Vec<SocketAddr>,
    /// glibc's `rotate` starts at a random server per process; the model
    /// starts here (0 unless told).
    pub rotate_start: u32,
}

/// Each library's reading of resolv.conf.
#[derive(Debug, Clone)]
enum Config {
    Glibc(ResolvConf),
    Musl(musl::MuslConf),
    Go(golang::GoConf),
}

/// resolv.conf as one library reads it, in the terms they share.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub nameservers: Vec<SocketAddr>,
    pub search: Vec<String>,
    pub ndots: u32,
    pub timeout_s: u32,
    pub attempts: u32,
    /// The options this library acts on, in resolv.conf's spelling.
    pub options: Vec<String>,
}

impl Model {
    /// `resolver`'s reading of resolv.conf `text` (with glibc's and Go's
    /// view of the environment and host name in `env`).
    pub fn new(resolver: Resolver, text: &str, env: &Env) -> Model {
        let config = match resolver {
            Resolver::Glibc => Config::Glibc(ResolvConf::parse(text, env)),
            Resolver::Musl | Resolver::Musl123 => Config::Musl(musl::MuslConf::parse(text)),
            Resolver::Go => Config::Go(golang::GoConf::parse(text, &env.hostname)),
        };
        let servers = match &config {
            Config::Glibc(c) => c.servers(),
            Config::Musl(c) => c.servers(),
            Config::Go(c) => c.servers.clone(),
        };
        Model {
            resolver,
            config,
            servers,
            rotate_start: 0,
        }
    }

    /// Queries these servers instead of resolv.conf's (`--server`).
    pub fn with_servers(mut self, servers: Vec<SocketAddr>) -> Model {
        if !servers.is_empty() {
            self.servers = servers;
        }
        self
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// What the application's library does for `name` on `net`.
    pub fn resolve(&self, name: &str, net: &mut dyn Network) -> Trace {
        match &self.config {
            Config::Glibc(c) => glibc::resolve(c, &self.servers, name, self.rotate_start, net),
            Config::Musl(c) => musl::resolve(c, &self.servers, self.resolver, name, net),
            Config::Go(c) => golang::resolve(c, &self.servers, name, net),
        }
    }

    /// The options among `options` (the file's flags as glibc reads them)
    /// this library does not act on.
    pub fn ignored_options(&self, options: &[String]) -> Vec<String> {
        let known: &[&str] = match self.resolver {
            Resolver::Glibc => return Vec::new(),
            Resolver::Musl | Resolver::Musl123 => &[],
            Resolver::Go => &[
                "rotate",
                "single-request",
                "single-request-reopen",
                "use-vc",
            ],
        };
        options
            .iter()
            .filter(|o| !known.contains(&o.as_str()))
            .cloned()
            .collect()
    }

    pub fn settings(&self) -> Settings {
        let (search, ndots, timeout_s, attempts, options) = match &self.config {
            Config::Glibc(c) => (
                c.search.clone(),
                c.ndots,
                c.timeout_s,
                c.attempts,
                c.options.clone(),
            ),
            Config::Musl(c) => (
                c.search.clone(),
                c.ndots,
                c.timeout_s,
                c.attempts,
                Vec::new(),
            ),
            Config::Go(c) => {
                let flags = [
                    (c.rotate, "rotate"),
                    (c.single_request, "single-request"),
                    (c.use_tcp, "use-vc"),
                ];
                (
                    c.search
                        .iter()
                        .map(|d| d.trim_end_matches('.').to_string())
                        .collect(),
                    c.ndots,
                    c.timeout_s,
                    c.attempts,
                    flags
                        .iter()
                        .filter(|f| f.0)
                        .map(|f| f.1.to_string())
                        .collect(),
                )
            }
        };
        Settings {
            nameservers: self.servers.clone(),
            search,
            ndots,
            timeout_s,
            attempts,
            options,
        }
    }
}

/// One lookup as a model predicts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub resolver: Resolver,
    pub name: String,
    /// The names the lookup would try, in order (absolute). Not every one
    /// is necessarily reached.
    pub candidates: Vec<String>,
    /// The search domain each candidate appends (`None`: the name as is).
    pub search_domains: Vec<Option<String>>,
    /// Every query sent, in sending order.
    pub exchanges: Vec<Exchange>,
    pub outcome: Outcome,
    /// The candidate whose answer the application got.
    pub answered_by: Option<usize>,
    /// From the first query to the outcome, as the application waits.
    pub elapsed: Duration,
    /// What the library did on the way that a person would not guess
    /// (a fallback, a switch of mode, a query it could not build).
    pub notes: Vec<String>,
}

/// The names a lookup tries, each with the search domain it appends.
pub type Candidates = Vec<(String, Option<String>)>;

/// Shared by the models: the lookup's clock, its sockets and the record
/// of every exchange.
struct Sim<'n> {
    net: &'n mut dyn Network,
    now: Duration,
    next_socket: u32,
    exchanges: Vec<Exchange>,
    candidate: usize,
    notes: Vec<String>,
}

impl<'n> Sim<'n> {
    fn new(net: &'n mut dyn Network) -> Self {
        Sim {
            net,
            now: Duration::ZERO,
            next_socket: 0,
            exchanges: Vec::new(),
            candidate: 0,
            notes: Vec::new(),
        }
    }

    fn socket(&mut self) -> u32 {
        self.next_socket += 1;
        self.next_socket
    }

    /// Sends `batch` now (their `sent_at` is set) and records each fate.
    fn send(&mut self, mut batch: Vec<Query>) -> Vec<Fate> {
        for q in &mut batch {
            q.sent_at = self.now;
        }
        self.send_at(batch)
    }

    /// Sends queries whose `sent_at` is already set (Go's parallel lookups
    /// each keep their own clock).
    fn send_at(&mut self, batch: Vec<Query>) -> Vec<Fate> {
        let mut fates = self.net.send(&batch);
        fates.resize(batch.len(), Fate::Silent);
        for (query, fate) in batch.into_iter().zip(&fates) {
            self.exchanges.push(Exchange {
                query,
                fate: fate.clone(),
                candidate: self.candidate,
            });
        }
        fates
    }

    fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        if !self.notes.contains(&text) {
            self.notes.push(text);
        }
    }

    fn finish(
        mut self,
        resolver: Resolver,
        name: &str,
        candidates: Candidates,
        outcome: Outcome,
        answered_by: Option<usize>,
    ) -> Trace {
        self.exchanges.sort_by_key(|e| e.query.sent_at);
        let (candidates, search_domains) = candidates.into_iter().unzip();
        Trace {
            resolver,
            name: name.to_string(),
            candidates,
            search_domains,
            exchanges: self.exchanges,
            outcome,
            answered_by,
            elapsed: self.now,
            notes: self.notes,
        }
    }
}

/// A query template: the fields a library fills the same way for every
/// query of a lookup.
#[derive(Debug, Clone)]
struct Template {
    edns: Option<u16>,
    ad: bool,
}

impl Template {
    fn query(
        &self,
        server: SocketAddr,
        transport: Transport,
        qname: &str,
        qtype: Qtype,
        socket: u32,
        wait: Option<Duration>,
    ) -> Query {
        Query {
            server,
            transport,
            qname: qname.to_string(),
            qtype,
            edns: self.edns,
            ad: self.ad,
            malformed: false,
            socket,
            sent_at: Duration::ZERO,
            wait,
        }
    }
}

/// `name` with exactly one trailing dot added when it has none.
fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// The length of `name` in wire format (labels plus the root), or `None`
/// when a label is empty or longer than 63 bytes.
fn wire_length(name: &str) -> Option<usize> {
    let body = name.strip_suffix('.').unwrap_or(name);
    if body.is_empty() {
        return Some(1);
    }
    let mut len = 1;
    for label in body.split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        len += label.len() + 1;
    }
    Some(len)
}

/// Durations as milliseconds (floats) in JSON, as the report's `*_ms` keys.
pub(crate) mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(crate::report::millis(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Duration::try_from_secs_f64(ms.max(0.0) / 1000.0).map_err(serde::de::Error::custom)
    }
}

/// Networks for the models' unit tests: a zone of names and one behaviour
/// per server.
#[cfg(test)]
pub(crate) mod testnet {
    use super::*;
    use std::collections::BTreeMap;

    /// How a test server treats queries.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Behaviour {
        /// Answers from the zone in `rtt`.
        Healthy,
        Rcode(u16),
        /// A header only, no question, with this rcode.
        Bare(u16),
        Silent,
        Unreachable,
        /// Silent for names under this suffix, healthy otherwise.
        SilentFor(&'static str),
        /// Truncates every UDP answer; TCP works.
        TruncateUdp,
        /// Loses the reply to the second query sent from the same socket
        /// (the conntrack race): only the first of each socket's queries in
        /// a batch is answered.
        RaceSecond,
    }

    pub struct TestNet {
        pub zone: BTreeMap<String, Vec<IpAddr>>,
        pub servers: BTreeMap<SocketAddr, Behaviour>,
        pub rtt: Duration,
    }

    pub fn server(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 53))
    }

    impl TestNet {
        /// A zone with `web.default.svc.cluster.local` (A only) and
        /// `api.example.com` (A and AAAA); one healthy server 10.0.0.1.
        pub fn new() -> TestNet {
            let mut zone = BTreeMap::new();
            zone.insert(
                "web.default.svc.cluster.local.".to_string(),
                vec![IpAddr::from([10, 96, 0, 20])],
            );
            zone.insert(
                "api.example.com.".to_string(),
                vec![
                    IpAddr::from([203, 0, 113, 10]),
                    "2001:db8::10".parse().unwrap(),
                ],
            );
            TestNet {
                zone,
                servers: [(server(1), Behaviour::Healthy)].into(),
                rtt: Duration::from_millis(1),
            }
        }

        pub fn with(mut self, n: u8, behaviour: Behaviour) -> TestNet {
            self.servers.insert(server(n), behaviour);
            self
        }

        fn answer(&self, q: &Query) -> Reply {
            let name = q.qname.to_ascii_lowercase();
            match self.zone.get(&name) {
                None => Reply::new(Reply::NXDOMAIN, vec![]),
                Some(addrs) => Reply::new(
                    Reply::NOERROR,
                    addrs
                        .iter()
                        .filter(|a| a.is_ipv4() == (q.qtype == Qtype::A))
                        .copied()
                        .collect(),
                ),
            }
        }

        fn fate(&self, q: &Query, first_on_socket: bool) -> Fate {
            let reply = |reply| Fate::Reply {
                reply,
                after: self.rtt,
            };
            match self.servers.get(&q.server).unwrap_or(&Behaviour::Silent) {
                Behaviour::Healthy => reply(self.answer(q)),
                Behaviour::Rcode(rcode) => reply(Reply::new(*rcode, vec![])),
                Behaviour::Bare(rcode) => reply(Reply::bare(*rcode)),
                Behaviour::Silent => Fate::Silent,
                Behaviour::Unreachable => Fate::Unreachable { after: self.rtt },
                Behaviour::SilentFor(suffix) if q.qname.ends_with(suffix) => Fate::Silent,
                Behaviour::SilentFor(_) => reply(self.answer(q)),
                Behaviour::TruncateUdp if q.transport == Transport::Udp => {
                    let mut r = self.answer(q);
                    r.truncated = true;
                    r.addresses.clear();
                    r.answer_count = 0;
                    reply(r)
                }
                Behaviour::TruncateUdp => reply(self.answer(q)),
                Behaviour::RaceSecond if !first_on_socket => Fate::Silent,
                Behaviour::RaceSecond => reply(self.answer(q)),
            }
        }
    }

    impl Network for TestNet {
        fn send(&mut self, batch: &[Query]) -> Vec<Fate> {
            batch
                .iter()
                .enumerate()
                .map(|(i, q)| {
                    let first = !batch[..i].iter().any(|p| p.socket == q.socket);
                    self.fate(q, first)
                })
                .collect()
        }
    }

    /// The (server octet, transport, qname, qtype) of every query, in order.
    pub fn wire(trace: &Trace) -> Vec<String> {
        trace
            .exchanges
            .iter()
            .map(|e| {
                let q = &e.query;
                let host = match q.server.ip() {
                    IpAddr::V4(v4) => v4.octets()[3].to_string(),
                    IpAddr::V6(v6) => v6.to_string(),
                };
                let tcp = if q.transport == Transport::Tcp {
                    " tcp"
                } else {
                    ""
                };
                format!("{host}{tcp} {} {}", q.qtype, q.qname)
            })
            .collect()
    }

    pub fn secs(trace: &Trace) -> f64 {
        trace.elapsed.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolver_names_round_trip() {
        for r in Resolver::ALL {
            assert_eq!(Resolver::from_name(r.name()), Some(r));
        }
        assert_eq!(Resolver::from_name("uclibc"), None);
    }

    #[test]
    fn wire_lengths() {
        assert_eq!(wire_length("a.b."), Some(5));
        assert_eq!(wire_length("."), Some(1));
        assert_eq!(wire_length("a..b."), None);
        assert_eq!(wire_length(&format!("{}.", "x".repeat(64))), None);
    }

    #[test]
    fn lame_replies() {
        let mut r = Reply::new(Reply::NOERROR, vec![]);
        assert!(!r.is_lame());
        r.authoritative = false;
        r.recursion_available = false;
        assert!(r.is_lame());
        r.additional_count = 1;
        assert!(!r.is_lame());
    }

    /// Random resolv.conf text, names and server behaviour: every model
    /// finishes, within its timeouts, and never panics.
    #[test]
    fn random_inputs_always_finish() {
        use testnet::{Behaviour, TestNet};
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let words = [
            "nameserver 10.0.0.1",
            "nameserver 10.0.0.2",
            "nameserver 10.0.0.3",
            "nameserver fe80::1%eth0",
            "nameserver bogus",
            "search a.example b.example .",
            "search",
            "domain corp.example x",
            "options ndots:0",
            "options ndots:5",
            "options ndots:99",
            "options timeout:0",
            "options timeout:1",
            "options attempts:0",
            "options attempts:1 rotate",
            "options single-request",
            "options single-request-reopen",
            "options use-vc edns0 trust-ad",
            "options no-aaaa no-tld-query",
            "#",
            " nameserver 10.0.0.9",
            "\t",
        ];
        let names = [
            "web",
            "api.example.com",
            "api.example.com.",
            "a.b.c.d.e.f",
            "x..y",
            ".",
            "",
            "-x",
            "_srv.example",
            "big.example.com.",
        ];
        let behaviours = [
            Behaviour::Healthy,
            Behaviour::Rcode(Reply::SERVFAIL),
            Behaviour::Rcode(Reply::REFUSED),
            Behaviour::Rcode(Reply::FORMERR),
            Behaviour::Bare(Reply::REFUSED),
            Behaviour::Silent,
            Behaviour::Unreachable,
            Behaviour::SilentFor("b.example."),
            Behaviour::TruncateUdp,
            Behaviour::RaceSecond,
        ];
        for _ in 0..3000 {
            let text: String = (0..next(6))
                .map(|_| format!("{}\n", words[next(words.len() as u64) as usize]))
                .collect();
            let mut net = TestNet::new();
            for n in 1..=3 {
                net = net.with(
                    n,
                    behaviours[next(behaviours.len() as u64) as usize].clone(),
                );
            }
            let name = names[next(names.len() as u64) as usize];
            for resolver in Resolver::ALL {
                let trace = Model::new(resolver, &text, &Env::default()).resolve(name, &mut net);
                // No model waits more than attempts x timeout x servers x names, times the rounds.
                assert!(
                    trace.elapsed < Duration::from_secs(60 * 60),
                    "{resolver} {text:?} {name}: {:?}",
                    trace.elapsed
                );
                assert!(trace.exchanges.len() < 10_000);
            }
        }
    }

    /// Whatever bytes resolv.conf holds, no library's parser panics.
    #[test]
    fn random_resolv_conf_bytes_never_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: &[&[u8]] = &[
            b"nameserver ",
            b"options ",
            b"search ",
            b"domain ",
            b"ndots:",
            b"timeout:",
            b"attempts:",
            b"\n",
            b" ",
            b"%",
            b":",
        ];
        for _ in 0..5000 {
            let mut bytes = Vec::new();
            for _ in 0..next() % 40 {
                if next() % 3 == 0 {
                    bytes.extend_from_slice(seeds[(next() % seeds.len() as u64) as usize]);
                } else {
                    bytes.push(next() as u8);
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            for resolver in Resolver::ALL {
                let model = Model::new(resolver, &text, &Env::default());
                assert!(!model.servers().is_empty());
                let _ = model.settings();
            }
        }
    }
}
