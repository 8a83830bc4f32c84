//! glibc's stub resolver as Debian 12 ships it (2.36-9+deb12u*, which
//! carries the 2.36 branch's resolver fixes): getaddrinfo(AF_UNSPEC) ->
//! nss_dns `gethostbyname4_r` -> `__res_context_search` (res_query.c) ->
//! `__res_context_query` -> `__res_context_send`, `send_dg`, `send_vc`
//! (res_send.c).
//!
//! Where glibc 2.36 as released and newer glibc differ:
//! - 2.36 as released (no branch fixes): in single-request mode a
//!   SERVFAIL/REFUSED to A waits out the try's timeout instead of moving on
//!   at once (bug 30081); REFUSED replies without a question section are
//!   ignored (bug 31890); the single-request fallback is kept in
//!   `_res.options`.
//! - 2.41+: the `strict-error` option stops the search list at the first
//!   error, and `options -flag` clears a flag.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::Template;
use super::{screened, wire_length, Fate, Network, Outcome, Qtype, Query, Reply, Resolver, Sim};
use super::{Trace, Transport};
use crate::dns::resolvconf::ResolvConf;
use crate::dns::search;

/// RESOLV_EDNS_BUFFER_SIZE: the UDP payload glibc advertises with `edns0`.
pub const EDNS_PAYLOAD: u16 = 1200;
/// A name longer than this in wire format cannot be put in a query.
const MAX_WIRE_NAME: usize = 255;

/// How a single `__res_context_query` failed (`h_errno`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Herr {
    HostNotFound,
    TryAgain,
    NoRecovery,
    NoData,
}

impl Herr {
    /// What getaddrinfo turns it into.
    fn eai(self) -> &'static str {
        match self {
            Herr::TryAgain => "EAI_AGAIN",
            Herr::NoData => "EAI_NODATA",
            Herr::HostNotFound | Herr::NoRecovery => "EAI_NONAME",
        }
    }
}

enum QueryResult {
    Addresses(Vec<IpAddr>),
    /// `refused`: errno is ECONNREFUSED (no server answered or timed out,
    /// all refused), which ends the search list at once.
    Failed {
        herr: Herr,
        refused: bool,
    },
    Hangs,
}

enum SendResult {
    /// The reply in the answer buffer and the one in the second buffer
    /// (`None`: no usable reply there).
    Answers(Option<Reply>, Option<Reply>),
    Failed {
        refused: bool,
    },
    Hangs,
}

/// How one `send_dg` call ends.
enum Dg {
    Answers(Option<Reply>, Option<Reply>),
    NextServer,
    /// A truncated reply: ask the same server again over TCP.
    Tcp,
}

/// How one `send_vc` call ends.
enum Vc {
    Answers(Option<Reply>, Option<Reply>),
    Failed { refused: bool },
    Hangs,
}

/// The replies one UDP round has read (`recvresp1/2`, `resplen`).
#[derive(Default)]
struct Round {
    received: [bool; 2],
    /// The answer buffer's reply, when it is a usable one.
    first: Option<Reply>,
    second: Option<Reply>,
    any: bool,
}

enum Step {
    Wait,
    Done(Dg),
}

enum RoundEnd {
    Done(Dg),
    /// The try's time ran out with these replies read.
    TimedOut(Round),
}

struct Lookup<'a, 'n> {
    conf: &'a ResolvConf,
    sim: Sim<'n>,
    servers: Vec<SocketAddr>,
    template: Template,
    qtypes: Vec<Qtype>,
    /// The open UDP socket per nameserver (`EXT(statp).nssocks`).
    sockets: Vec<Option<u32>>,
    /// glibc's own fallbacks after a lost reply; they stay on for the rest
    /// of the thread's lookups.
    fallback_single: bool,
    fallback_reopen: bool,
    /// `rotate`: the nameserver the next `res_send` starts with.
    rotation: u32,
    /// The rcode in the answer buffer, which the search list looks at
    /// after a failed query (a SERVFAIL there goes on to the next domain).
    buffer_rcode: u16,
}

/// What an application linked against glibc gets for `getaddrinfo(name,
/// AF_UNSPEC)`. `rotate_start` is the nameserver glibc's `rotate` starts
/// with: glibc picks it at random once per process.
pub fn resolve(
    conf: &ResolvConf,
    servers: &[SocketAddr],
    name: &str,
    rotate_start: u32,
    net: &mut dyn Network,
) -> Trace {
    let servers = servers.to_vec();
    let mut lookup = Lookup {
        conf,
        sim: Sim::new(net),
        sockets: vec![None; servers.len()],
        servers,
        template: Template {
            edns: conf.has_option("edns0").then_some(EDNS_PAYLOAD),
            ad: conf.has_option("trust-ad"),
        },
        qtypes: if conf.has_option("no-aaaa") {
            vec![Qtype::A]
        } else {
            vec![Qtype::A, Qtype::Aaaa]
        },
        fallback_single: false,
        fallback_reopen: false,
        rotation: rotate_start,
        buffer_rcode: Reply::NOERROR,
    };
    let candidates = search::candidates(name, conf);
    let listed = candidates
        .iter()
        .map(|c| (c.fqdn.clone(), c.search_domain.clone()))
        .collect();
    let (outcome, answered_by) = if hostname_ok(name) {
        let mut buffer = NSS_BUFFER;
        loop {
            let (outcome, answered_by) = lookup.search(name, &candidates);
            if let (Outcome::Resolved { addresses }, Some(i)) = (&outcome, answered_by) {
                let needed = tuple_space(addresses.len(), &candidates[i].fqdn);
                if needed > buffer {
                    lookup.sim.note(format!(
                        "{} addresses do not fit getaddrinfo's {buffer}-byte buffer: it doubles the buffer and repeats the whole lookup",
                        addresses.len()
                    ));
                    buffer *= 2;
                    continue;
                }
            }
            break (outcome, answered_by);
        }
    } else {
        lookup
            .sim
            .note("glibc rejects the name before sending anything (res_hnok)");
        (Outcome::failed("EAI_NONAME"), None)
    };
    lookup
        .sim
        .finish(Resolver::Glibc, name, listed, outcome, answered_by)
}

/// getaddrinfo's first buffer for the NSS module (a scratch_buffer); on
/// ERANGE it doubles it and calls the module again, which looks the name
/// up again.
const NSS_BUFFER: usize = 1024;

/// The bytes `gaih_getanswer` needs for `count` addresses of `fqdn`: one
/// 40-byte `gaih_addrtuple` each (8-aligned), the canonical name after the
/// first.
fn tuple_space(count: usize, fqdn: &str) -> usize {
    let name = fqdn.trim_end_matches('.').len() + 1;
    (0..count).fold(0, |offset, i| {
        let aligned = offset.next_multiple_of(8) + 40;
        if i == 0 {
            aligned + name
        } else {
            aligned
        }
    })
}

/// Whether `send_dg` takes a UDP reply as the answer to its query: the
/// question must match, except in a bare 12-byte SERVFAIL, NOTIMP or
/// REFUSED (bug 31890, fixed on the 2.36 branch); anything else it drops
/// and keeps waiting.
fn udp_match(reply: &Reply) -> bool {
    reply.question
        || (reply.size == 12
            && matches!(
                reply.rcode,
                Reply::SERVFAIL | Reply::NOTIMP | Reply::REFUSED
            ))
}

/// glibc's `res_hnok`: letters, digits, `-` and `_`, no empty label, the
/// first label not starting with `-`, short enough for a query.
fn hostname_ok(name: &str) -> bool {
    let body = name.strip_suffix('.').unwrap_or(name);
    !body.is_empty()
        && !body.starts_with('-')
        && wire_length(name).is_some_and(|l| l <= MAX_WIRE_NAME)
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl Lookup<'_, '_> {
    /// `__res_context_search`: the candidates in order, with glibc's rules
    /// for which failures move on to the next one.
    fn search(&mut self, name: &str, candidates: &[search::Candidate]) -> (Outcome, Option<usize>) {
        let trailing = name.ends_with('.');
        let as_is_first = trailing || search::dots(name) >= self.conf.ndots as usize;
        let mut saved: Option<Herr> = None;
        let (mut got_nodata, mut got_servfail, mut done) = (false, false, false);
        let mut last = Herr::HostNotFound;
        for (index, candidate) in candidates.iter().enumerate() {
            let searching = candidate.search_domain.is_some();
            if searching && done {
                continue;
            }
            self.sim.candidate = index;
            let (herr, refused) = match self.query(&candidate.fqdn) {
                QueryResult::Addresses(addresses) => {
                    let addresses = addresses.into_iter().collect();
                    return (Outcome::Resolved { addresses }, Some(index));
                }
                QueryResult::Hangs => return (Outcome::Hangs, None),
                QueryResult::Failed { herr, refused } => (herr, refused),
            };
            last = herr;
            if index == 0 && as_is_first && !searching {
                if trailing {
                    return (Outcome::failed(herr.eai()), None);
                }
                saved = Some(herr);
                continue;
            }
            if !searching {
                continue;
            }
            if refused {
                self.sim.note(
                    "no nameserver answered or timed out, all refused (ECONNREFUSED): glibc stops the search list",
                );
                return (Outcome::failed(Herr::TryAgain.eai()), None);
            }
            match herr {
                Herr::NoData => got_nodata = true,
                Herr::HostNotFound => {}
                Herr::TryAgain if self.buffer_rcode == Reply::SERVFAIL => got_servfail = true,
                _ => {
                    done = true;
                    self.sim.note(format!(
                        "{} failed without a usable answer: glibc skips the rest of the search list and tries the name as is",
                        candidate.fqdn
                    ));
                }
            }
        }
        let herr = saved.unwrap_or(if got_nodata {
            Herr::NoData
        } else if got_servfail {
            Herr::TryAgain
        } else {
            last
        });
        (Outcome::failed(herr.eai()), None)
    }

    /// `__res_context_query` for one candidate: A and AAAA together.
    fn query(&mut self, qname: &str) -> QueryResult {
        self.buffer_rcode = Reply::NOERROR;
        if wire_length(qname).is_none_or(|l| l > MAX_WIRE_NAME) {
            self.sim
                .note(format!("{qname} is too long for a query: not sent"));
            return QueryResult::Failed {
                herr: Herr::NoRecovery,
                refused: false,
            };
        }
        let (first, second) = match self.send(qname) {
            SendResult::Hangs => return QueryResult::Hangs,
            SendResult::Failed { refused } => {
                return QueryResult::Failed {
                    herr: Herr::TryAgain,
                    refused,
                }
            }
            SendResult::Answers(first, second) => (first, second),
        };
        let Some(hp) = first.as_ref().or(second.as_ref()) else {
            return QueryResult::Failed {
                herr: Herr::TryAgain,
                refused: false,
            };
        };
        let hp2 = second.as_ref().unwrap_or(hp);
        let negative = |r: &Reply| r.rcode != Reply::NOERROR || r.answer_count == 0;
        if negative(hp) && negative(hp2) {
            let rcode = if hp.rcode == Reply::NOERROR {
                hp2.rcode
            } else {
                hp.rcode
            };
            let herr = match rcode {
                Reply::NXDOMAIN => Herr::HostNotFound,
                Reply::SERVFAIL => Herr::TryAgain,
                Reply::NOERROR => Herr::NoData,
                _ => Herr::NoRecovery,
            };
            return QueryResult::Failed {
                herr,
                refused: false,
            };
        }
        let addresses: Vec<IpAddr> = first
            .iter()
            .chain(second.iter())
            .flat_map(|r| r.addresses.iter().copied())
            .collect();
        if addresses.is_empty() {
            // Answer records, none of them an address (a CNAME alone).
            return QueryResult::Failed {
                herr: Herr::HostNotFound,
                refused: false,
            };
        }
        QueryResult::Addresses(addresses)
    }

    /// `__res_context_send`: `attempts` rounds over the nameservers.
    fn send(&mut self, qname: &str) -> SendResult {
        let count = self.servers.len();
        let retry = self.conf.attempts;
        let mut tcp = self.conf.has_option("use-vc");
        let mut got_somewhere = false;
        let mut tcp_refused = false;
        let offset = if self.conf.has_option("rotate") && count > 1 {
            let offset = self.rotation as usize % count;
            self.rotation = self.rotation.wrapping_add(1);
            offset
        } else {
            0
        };
        let mut attempt = 0;
        while attempt < retry {
            for shift in 0..count {
                let ns = (shift + offset) % count;
                loop {
                    if tcp {
                        // One TCP attempt per server, then no more rounds.
                        attempt = retry;
                        match self.send_vc(ns, qname) {
                            Vc::Answers(first, second) => {
                                return SendResult::Answers(first, second)
                            }
                            Vc::Failed { refused } => tcp_refused = refused,
                            Vc::Hangs => return SendResult::Hangs,
                        }
                        break;
                    }
                    match self.send_dg(ns, qname, &mut got_somewhere) {
                        Dg::Answers(None, None) | Dg::NextServer => break,
                        Dg::Answers(first, second) => {
                            self.close_all();
                            return SendResult::Answers(first, second);
                        }
                        Dg::Tcp => {
                            self.sim.note(
                                "a truncated reply: glibc asks the same server again over TCP (both types), and every later server of this query too",
                            );
                            tcp = true;
                        }
                    }
                }
            }
            attempt += 1;
        }
        self.close_all();
        SendResult::Failed {
            refused: if tcp { tcp_refused } else { !got_somewhere },
        }
    }

    fn close_all(&mut self) {
        self.sockets.iter_mut().for_each(|s| *s = None);
    }

    fn udp_socket(&mut self, ns: usize) -> u32 {
        match self.sockets[ns] {
            Some(socket) => socket,
            None => {
                let socket = self.sim.socket();
                self.sockets[ns] = Some(socket);
                socket
            }
        }
    }

    /// The try's timeout for nameserver `ns`: `timeout << ns`, divided by
    /// the number of servers for all but the first, at least 1 s.
    fn try_timeout(&self, ns: usize) -> Duration {
        let mut seconds = u64::from(self.conf.timeout_s) << ns;
        if ns > 0 {
            seconds /= self.servers.len() as u64;
        }
        Duration::from_secs(seconds.max(1))
    }

    /// `send_dg`: one try of UDP to nameserver `ns`.
    fn send_dg(&mut self, ns: usize, qname: &str, got_somewhere: &mut bool) -> Dg {
        let seconds = self.try_timeout(ns);
        let saved = *got_somewhere;
        loop {
            let reopen = self.conf.has_option("single-request-reopen") || self.fallback_reopen;
            let single = reopen || self.conf.has_option("single-request") || self.fallback_single;
            let socket = self.udp_socket(ns);
            let start = self.sim.now;
            let end = if self.qtypes.len() == 2 && single {
                self.sequential(ns, socket, qname, seconds, reopen, got_somewhere)
            } else {
                self.parallel(ns, socket, qname, seconds, single, got_somewhere)
            };
            let round = match end {
                RoundEnd::Done(dg) => return dg,
                RoundEnd::TimedOut(round) => round,
            };
            self.sim.now = start + seconds;
            if round.first.is_some() {
                // One reply came, the other did not: servers, firewalls and
                // conntrack that lose the second of two queries from one
                // socket. glibc retries one query at a time, then one at a
                // time from a new socket.
                if !single {
                    self.fallback_single = true;
                    self.sim.note("a reply was lost after the other arrived: glibc switches to single-request (A, then AAAA on the same socket) for the rest of the lookup");
                    *got_somewhere = saved;
                    continue;
                }
                if !reopen {
                    self.fallback_reopen = true;
                    self.sim.note("a reply was lost again: glibc switches to single-request-reopen (AAAA from a new socket) for the rest of the lookup");
                    *got_somewhere = saved;
                    self.close_all();
                    continue;
                }
                return Dg::Answers(round.first, None);
            }
            *got_somewhere = true;
            return Dg::NextServer;
        }
    }

    fn query_for(
        &self,
        ns: usize,
        transport: Transport,
        qname: &str,
        qtype: Qtype,
        socket: u32,
        wait: Option<Duration>,
    ) -> Query {
        self.template
            .query(self.servers[ns], transport, qname, qtype, socket, wait)
    }

    /// A and AAAA back to back from one socket (`sendmmsg`), replies read
    /// in the order they arrive until both are in or the try times out.
    fn parallel(
        &mut self,
        ns: usize,
        socket: u32,
        qname: &str,
        seconds: Duration,
        single: bool,
        got: &mut bool,
    ) -> RoundEnd {
        let batch = self
            .qtypes
            .iter()
            .map(|&t| self.query_for(ns, Transport::Udp, qname, t, socket, Some(seconds)))
            .collect();
        let start = self.sim.now;
        let fates = self.sim.send(batch);
        let mut events: Vec<(Duration, usize, Fate)> = fates
            .into_iter()
            .map(|f| screened(f, udp_match))
            .enumerate()
            .filter_map(|(i, f)| f.arrival(Some(seconds)).map(|t| (t, i, f)))
            .collect();
        events.sort_by_key(|e| (e.0, e.1));
        let mut round = Round::default();
        for (t, index, fate) in events {
            self.sim.now = start + t;
            match fate {
                Fate::Reply { reply, .. } => {
                    if let Step::Done(dg) = self.on_reply(&mut round, index, reply, single, got) {
                        return RoundEnd::Done(dg);
                    }
                }
                Fate::Unreachable { .. } | Fate::Silent => {
                    self.close_all();
                    return RoundEnd::Done(Dg::NextServer);
                }
            }
        }
        RoundEnd::TimedOut(round)
    }

    /// single-request: A, and AAAA only once A's reply is in (from a new
    /// socket with single-request-reopen); both within the one try's time.
    fn sequential(
        &mut self,
        ns: usize,
        socket: u32,
        qname: &str,
        seconds: Duration,
        reopen: bool,
        got: &mut bool,
    ) -> RoundEnd {
        let deadline = self.sim.now + seconds;
        let mut round = Round::default();
        let mut socket = socket;
        for index in 0..2 {
            let wait = deadline.saturating_sub(self.sim.now);
            let query = self.query_for(
                ns,
                Transport::Udp,
                qname,
                self.qtypes[index],
                socket,
                Some(wait),
            );
            let fate = screened(self.sim.send(vec![query]).remove(0), udp_match);
            let Some(t) = fate.arrival(Some(wait)) else {
                return RoundEnd::TimedOut(round);
            };
            self.sim.now += t;
            match fate {
                Fate::Reply { reply, .. } => {
                    if let Step::Done(dg) = self.on_reply(&mut round, index, reply, true, got) {
                        return RoundEnd::Done(dg);
                    }
                }
                Fate::Unreachable { .. } | Fate::Silent => {
                    self.close_all();
                    return RoundEnd::Done(Dg::NextServer);
                }
            }
            if reopen {
                self.close_all();
                socket = self.udp_socket(ns);
            }
        }
        RoundEnd::TimedOut(round)
    }

    /// One reply read in `send_dg`.
    fn on_reply(
        &mut self,
        round: &mut Round,
        index: usize,
        reply: Reply,
        single: bool,
        got: &mut bool,
    ) -> Step {
        *got = true;
        let into_first = !round.any;
        if into_first {
            self.buffer_rcode = reply.rcode;
        }
        let error = matches!(
            reply.rcode,
            Reply::SERVFAIL | Reply::NOTIMP | Reply::REFUSED
        );
        if error || reply.is_lame() {
            if round.any {
                return Step::Done(Dg::Answers(round.first.take(), None));
            }
            if self.qtypes.len() == 2 && !single {
                // Wait for the other reply; this one counts as none.
                round.any = true;
                round.received[index] = true;
                return Step::Wait;
            }
            self.close_all();
            return Step::Done(Dg::NextServer);
        }
        if reply.truncated {
            self.close_all();
            return Step::Done(Dg::Tcp);
        }
        round.received[index] = true;
        round.any = true;
        if into_first {
            round.first = Some(reply);
        } else {
            round.second = Some(reply);
        }
        if round.received[..self.qtypes.len()].iter().all(|r| *r) {
            return Step::Done(Dg::Answers(round.first.take(), round.second.take()));
        }
        Step::Wait
    }

    /// `send_vc`: every query of the candidate over one TCP connection,
    /// read without a timeout.
    fn send_vc(&mut self, ns: usize, qname: &str) -> Vc {
        let socket = self.sim.socket();
        let batch = self
            .qtypes
            .iter()
            .map(|&t| self.query_for(ns, Transport::Tcp, qname, t, socket, None))
            .collect();
        let start = self.sim.now;
        let fates = self.sim.send(batch);
        if let Some(after) = fates.iter().find_map(|f| match f {
            Fate::Unreachable { after } => Some(*after),
            _ => None,
        }) {
            self.sim.now = start + after;
            return Vc::Failed { refused: true };
        }
        let mut replies: Vec<(Duration, Reply)> = Vec::new();
        for fate in fates {
            match fate {
                Fate::Reply { reply, after } => replies.push((after, reply)),
                _ => {
                    self.sim.note(
                        "a TCP query got no reply: glibc reads TCP without a timeout and waits forever",
                    );
                    return Vc::Hangs;
                }
            }
        }
        replies.sort_by_key(|r| r.0);
        self.sim.now = start + replies.last().map_or(Duration::ZERO, |r| r.0);
        let mut replies = replies.into_iter().map(|r| r.1);
        let first = replies.next();
        if let Some(r) = &first {
            self.buffer_rcode = r.rcode;
        }
        Vc::Answers(first, replies.next())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testnet::{secs, wire, Behaviour, TestNet};
    use super::*;
    use crate::dns::resolvconf::Env;

    fn conf(text: &str) -> ResolvConf {
        ResolvConf::parse(text, &Env::default())
    }

    const K8S: &str = "search default.svc.cluster.local svc.cluster.local cluster.local corp.internal\nnameserver 10.0.0.1\noptions ndots:5\n";

    fn run(text: &str, name: &str, net: &mut TestNet) -> Trace {
        let conf = conf(text);
        resolve(&conf, &conf.servers(), name, 0, net)
    }

    fn addresses(trace: &Trace) -> Vec<String> {
        match &trace.outcome {
            Outcome::Resolved { addresses } => addresses.iter().map(|a| a.to_string()).collect(),
            other => panic!("not resolved: {other:?}"),
        }
    }

    fn error(trace: &Trace) -> &str {
        match &trace.outcome {
            Outcome::Failed { error } => error,
            other => panic!("not failed: {other:?}"),
        }
    }

    #[test]
    fn kubernetes_external_name_walks_four_domains_in_parallel_pairs() {
        let trace = run(K8S, "api.example.com", &mut TestNet::new());
        assert_eq!(trace.exchanges.len(), 10);
        assert_eq!(
            wire(&trace)[..2],
            [
                "1 A api.example.com.default.svc.cluster.local.",
                "1 AAAA api.example.com.default.svc.cluster.local."
            ]
        );
        assert_eq!(trace.answered_by, Some(4));
        assert_eq!(addresses(&trace), ["203.0.113.10", "2001:db8::10"]);
        // Both queries of a candidate share a socket, candidates do not.
        let sockets: Vec<u32> = trace.exchanges.iter().map(|e| e.query.socket).collect();
        assert_eq!(sockets[0], sockets[1]);
        assert_ne!(sockets[1], sockets[2]);
        assert_eq!(trace.elapsed, Duration::from_millis(5));
    }

    #[test]
    fn refused_first_server_resolves_through_the_second() {
        let mut net = TestNet::new()
            .with(1, Behaviour::Rcode(Reply::REFUSED))
            .with(2, Behaviour::Healthy);
        let trace = run(
            "nameserver 10.0.0.1\nnameserver 10.0.0.2\n",
            "web.default.svc.cluster.local",
            &mut net,
        );
        assert_eq!(addresses(&trace), ["10.96.0.20"]);
        assert_eq!(
            wire(&trace),
            [
                "1 A web.default.svc.cluster.local.",
                "1 AAAA web.default.svc.cluster.local.",
                "2 A web.default.svc.cluster.local.",
                "2 AAAA web.default.svc.cluster.local.",
            ]
        );
    }

    #[test]
    fn servfail_everywhere_walks_on_refused_everywhere_skips_to_the_name_as_is() {
        let one = "search default.svc.cluster.local svc.cluster.local\nnameserver 10.0.0.1\noptions ndots:5\n";
        let mut net = TestNet::new().with(1, Behaviour::Rcode(Reply::SERVFAIL));
        let trace = run(one, "web", &mut net);
        // 3 candidates x 2 attempts x (A + AAAA).
        assert_eq!(trace.exchanges.len(), 12);
        assert_eq!(error(&trace), "EAI_AGAIN");
        let mut net = TestNet::new().with(1, Behaviour::Rcode(Reply::REFUSED));
        let trace = run(one, "web", &mut net);
        // The first domain (both attempts), then the name as is.
        let names: Vec<&str> = trace
            .exchanges
            .iter()
            .map(|e| e.query.qname.as_str())
            .collect();
        assert_eq!(names[..4], ["web.default.svc.cluster.local."; 4]);
        assert_eq!(names[4..], ["web."; 4]);
        assert_eq!(error(&trace), "EAI_AGAIN");
    }

    #[test]
    fn silent_search_domain_costs_attempts_times_timeout_then_resolves_as_is() {
        let mut net = TestNet::new().with(1, Behaviour::SilentFor("corp.internal."));
        let trace = run(K8S, "api.example.com", &mut net);
        assert_eq!(addresses(&trace).len(), 2);
        assert!((secs(&trace) - 10.004).abs() < 1e-6, "{}", secs(&trace));
        // Retries reuse the socket of the first try.
        let corp: Vec<&Query> = trace
            .exchanges
            .iter()
            .map(|e| &e.query)
            .filter(|q| q.qname.ends_with("corp.internal."))
            .collect();
        assert_eq!(corp.len(), 4);
        assert_eq!(corp[0].socket, corp[2].socket);
        let fast = run(
            &K8S.replace("ndots:5", "ndots:5 timeout:1 attempts:3"),
            "api.example.com",
            &mut net,
        );
        assert!((secs(&fast) - 3.004).abs() < 1e-6, "{}", secs(&fast));
    }

    #[test]
    fn three_servers_back_off_five_three_six() {
        let mut net = TestNet::new()
            .with(1, Behaviour::Silent)
            .with(2, Behaviour::Silent)
            .with(3, Behaviour::Silent);
        let trace = run(
            "nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n",
            "api.example.com.",
            &mut net,
        );
        let starts: Vec<u64> = trace
            .exchanges
            .iter()
            .step_by(2)
            .map(|e| e.query.sent_at.as_secs())
            .collect();
        assert_eq!(starts, [0, 5, 8, 14, 19, 22]);
        assert_eq!(trace.elapsed, Duration::from_secs(28));
        assert_eq!(error(&trace), "EAI_AGAIN");
    }

    #[test]
    fn rotate_starts_at_the_random_offset_and_moves_per_candidate() {
        let text = "search a.example\nnameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\noptions rotate ndots:2\n";
        let mut net = TestNet::new()
            .with(2, Behaviour::Healthy)
            .with(3, Behaviour::Healthy);
        let conf = conf(text);
        let trace = resolve(&conf, &conf.servers(), "nosuch", 1, &mut net);
        let servers: Vec<String> = wire(&trace).iter().map(|w| w[..1].to_string()).collect();
        assert_eq!(servers, ["2", "2", "3", "3"]);
    }

    #[test]
    fn unreachable_everywhere_stops_at_once() {
        let mut net = TestNet::new().with(1, Behaviour::Unreachable);
        let trace = run(K8S, "api.example.com", &mut net);
        // Both attempts on the first candidate, then ECONNREFUSED ends it.
        assert_eq!(trace.exchanges.len(), 4);
        assert_eq!(error(&trace), "EAI_AGAIN");
        assert!(trace.elapsed < Duration::from_millis(10));
    }

    #[test]
    fn truncation_falls_back_to_tcp_for_both_types() {
        let mut net = TestNet::new().with(1, Behaviour::TruncateUdp);
        let trace = run("nameserver 10.0.0.1\n", "api.example.com", &mut net);
        assert_eq!(
            wire(&trace),
            [
                "1 A api.example.com.",
                "1 AAAA api.example.com.",
                "1 tcp A api.example.com.",
                "1 tcp AAAA api.example.com.",
            ]
        );
        assert_eq!(addresses(&trace).len(), 2);
        let vc = run(
            "nameserver 10.0.0.1\noptions use-vc\n",
            "api.example.com",
            &mut net,
        );
        assert_eq!(vc.exchanges.len(), 2);
        assert!(vc
            .exchanges
            .iter()
            .all(|e| e.query.transport == Transport::Tcp));
    }

    #[test]
    fn a_lost_second_reply_switches_to_single_request() {
        // The conntrack race: the second query of a socket is never answered.
        let mut net = TestNet::new().with(1, Behaviour::RaceSecond);
        let trace = run("nameserver 10.0.0.1\n", "api.example.com", &mut net);
        assert_eq!(addresses(&trace).len(), 2);
        // 5 s lost, then A and AAAA one at a time succeed.
        assert!((secs(&trace) - 5.002).abs() < 1e-6, "{}", secs(&trace));
        assert_eq!(trace.exchanges.len(), 4);
        assert!(
            trace.notes[0].contains("single-request"),
            "{:?}",
            trace.notes
        );
        for option in ["single-request-reopen", "single-request"] {
            let fixed = run(
                &format!("nameserver 10.0.0.1\noptions {option}\n"),
                "api.example.com",
                &mut net,
            );
            assert_eq!(fixed.elapsed, Duration::from_millis(2), "{option}");
            let (a, aaaa) = (&fixed.exchanges[0].query, &fixed.exchanges[1].query);
            assert_eq!(a.socket == aaaa.socket, option == "single-request");
        }
    }

    #[test]
    fn single_request_servfail_moves_on_at_once() {
        let mut net = TestNet::new()
            .with(1, Behaviour::Rcode(Reply::SERVFAIL))
            .with(2, Behaviour::Healthy);
        let trace = run(
            "nameserver 10.0.0.1\nnameserver 10.0.0.2\noptions single-request\n",
            "api.example.com",
            &mut net,
        );
        assert_eq!(
            wire(&trace),
            [
                "1 A api.example.com.",
                "2 A api.example.com.",
                "2 AAAA api.example.com."
            ]
        );
        assert_eq!(trace.elapsed, Duration::from_millis(3));
    }

    #[test]
    fn options_shape_the_queries() {
        let trace = run(
            "nameserver 10.0.0.1\noptions edns0 trust-ad no-aaaa\n",
            "api.example.com.",
            &mut TestNet::new(),
        );
        assert_eq!(wire(&trace), ["1 A api.example.com."]);
        let q = &trace.exchanges[0].query;
        assert_eq!((q.edns, q.ad), (Some(EDNS_PAYLOAD), true));
        assert_eq!(addresses(&trace), ["203.0.113.10"]);
    }

    #[test]
    fn nodata_trailing_dots_bad_names_and_no_attempts() {
        let mut net = TestNet::new();
        // A only: AAAA is NODATA, the lookup still resolves.
        let web = run(K8S, "web", &mut net);
        assert_eq!(web.answered_by, Some(0));
        assert_eq!(addresses(&web), ["10.96.0.20"]);
        let nx = run(K8S, "nosuch.example.com.", &mut net);
        assert_eq!(nx.exchanges.len(), 2);
        assert_eq!(error(&nx), "EAI_NONAME");
        let bad = run(K8S, "bad name", &mut net);
        assert!(bad.exchanges.is_empty());
        assert_eq!(error(&bad), "EAI_NONAME");
        let none = run("nameserver 10.0.0.1\noptions attempts:0\n", "x.", &mut net);
        assert!(none.exchanges.is_empty());
        assert_eq!(error(&none), "EAI_AGAIN");
    }

    #[test]
    fn many_addresses_repeat_the_lookup_with_a_bigger_buffer() {
        assert_eq!(tuple_space(25, "big.example.com."), 1016);
        assert!(tuple_space(26, "big.example.com.") > 1024);
        let mut net = TestNet::new();
        let many: Vec<std::net::IpAddr> = (1..=60)
            .map(|i| std::net::IpAddr::from([198, 51, 100, i]))
            .collect();
        net.zone.insert("big.example.com.".into(), many);
        let trace = run("nameserver 10.0.0.1\n", "big.example.com.", &mut net);
        // 1024 and 2048 bytes are too small for 60: three lookups.
        assert_eq!(trace.exchanges.len(), 6);
        assert_eq!(addresses(&trace).len(), 60);
        assert!(trace.notes[0].contains("repeats the whole lookup"));
    }

    #[test]
    fn bare_refusals_count_question_less_others_do_not() {
        let mut net = TestNet::new()
            .with(1, Behaviour::Bare(Reply::REFUSED))
            .with(2, Behaviour::Healthy);
        let text = "nameserver 10.0.0.1\nnameserver 10.0.0.2\noptions timeout:1\n";
        let trace = run(text, "api.example.com.", &mut net);
        assert_eq!(trace.elapsed, Duration::from_millis(2));
        let mut net = TestNet::new()
            .with(1, Behaviour::Bare(Reply::NOERROR))
            .with(2, Behaviour::Healthy);
        let trace = run(text, "api.example.com.", &mut net);
        // A question-less NOERROR is dropped: the try times out first.
        assert_eq!(trace.elapsed, Duration::from_millis(1001));
    }

    #[test]
    fn a_nodata_domain_is_remembered_over_a_later_nxdomain() {
        let mut net = TestNet::new();
        net.zone.insert("db.a.example.".into(), vec![]);
        let trace = run(
            "search a.example b.example\nnameserver 10.0.0.1\noptions ndots:2\n",
            "db",
            &mut net,
        );
        assert_eq!(trace.exchanges.len(), 6);
        assert_eq!(error(&trace), "EAI_NODATA");
    }
}
