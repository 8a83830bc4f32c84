//! musl's stub resolver: `__get_resolv_conf` (resolvconf.c),
//! `name_from_dns_search` and `name_from_dns` (lookup_name.c),
//! `__res_mkquery` and `__res_msend_rc` (res_msend.c). Two versions:
//! 1.2.3 (Debian 12's musl-tools, Alpine up to 3.17) and 1.2.4+ (Alpine
//! 3.18+), which falls back to TCP on a truncated reply, skips names it
//! cannot encode instead of failing, and reports NODATA as EAI_NODATA.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use super::{absolute, Candidates, Transport};
use super::{Fate, Network, Outcome, Qtype, Reply, Resolver, Sim, Template, Trace};
use crate::dns::search;

/// A and AAAA.
const QUERIES: usize = 2;
/// musl's MAXNS.
const MAX_NAMESERVERS: usize = 3;
/// Lines longer than this are skipped whole (fgets into 256 bytes).
const MAX_LINE: usize = 254;

/// resolv.conf as musl reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MuslConf {
    /// At most three; 127.0.0.1 when none.
    pub nameservers: Vec<IpAddr>,
    /// The words of the last `search` or `domain` line (all of a `domain`
    /// line's words count, unlike glibc).
    pub search: Vec<String>,
    pub ndots: u32,
    pub timeout_s: u32,
    pub attempts: u32,
}

impl MuslConf {
    /// musl's parser: keywords at column 0 followed by a blank; `options`
    /// looks for `ndots:`, `attempts:` and `timeout:` anywhere in the line
    /// (capped at 15, 10 and 60) and ignores every other option; no
    /// LOCALDOMAIN, RES_OPTIONS or host-name domain.
    pub fn parse(text: &str) -> MuslConf {
        let mut conf = MuslConf {
            nameservers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
            timeout_s: 5,
            attempts: 2,
        };
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let count = lines.len();
        for (n, raw) in lines.into_iter().enumerate() {
            let line = raw.strip_suffix('\n').unwrap_or(raw);
            let last_unterminated = n + 1 == count && !raw.ends_with('\n');
            if line.len() > MAX_LINE + usize::from(last_unterminated) {
                continue;
            }
            let blank_after = |k: usize| raw.as_bytes().get(k).is_some_and(u8::is_ascii_whitespace);
            if raw.starts_with("options") && blank_after(7) {
                if let Some(n) = option_value(line, "ndots:", false) {
                    conf.ndots = n.min(15);
                }
                if let Some(n) = option_value(line, "attempts:", false) {
                    conf.attempts = n.min(10);
                }
                if let Some(n) = option_value(line, "timeout:", true) {
                    conf.timeout_s = n.min(60);
                }
            } else if raw.starts_with("nameserver") && blank_after(10) {
                let addr = line.get(11..).unwrap_or("").split_whitespace().next();
                if conf.nameservers.len() < MAX_NAMESERVERS {
                    if let Some(ip) = addr.and_then(ip_literal) {
                        conf.nameservers.push(ip);
                    }
                }
            } else if (raw.starts_with("domain") || raw.starts_with("search")) && blank_after(6) {
                conf.search = line
                    .get(7..)
                    .unwrap_or("")
                    .split_ascii_whitespace()
                    .map(str::to_string)
                    .collect();
            }
        }
        conf
    }

    pub fn servers(&self) -> Vec<SocketAddr> {
        crate::dns::resolvconf::servers_or_localhost(&self.nameservers)
    }
}

/// The first `key` in `line` followed by a digit (or, for `timeout:`, a
/// dot, which then parses as nothing): `strstr` + `strtoul`.
fn option_value(line: &str, key: &str, dot_ok: bool) -> Option<u32> {
    let rest = &line[line.find(key)? + key.len()..];
    let first = rest.bytes().next()?;
    if !(first.is_ascii_digit() || (dot_ok && first == b'.')) {
        return None;
    }
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    Some(
        digits
            .parse::<u64>()
            .map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX)),
    )
}

/// An IPv4 or IPv6 literal, IPv6 with an optional `%scope`.
fn ip_literal(text: &str) -> Option<IpAddr> {
    text.split_once('%').map_or(text, |(a, _)| a).parse().ok()
}

/// What one `name_from_dns` call returns.
enum Found {
    Addresses(Vec<IpAddr>),
    /// NXDOMAIN (or, in 1.2.4+, a name it cannot encode): the walk goes on.
    Nothing,
    Error(&'static str),
    Crash,
}

/// One reply or error waiting to be read in `__res_msend_rc`.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Arrival {
    at: Duration,
    seq: usize,
    query: usize,
    server: usize,
    tcp: bool,
}

struct Lookup<'n> {
    version: Resolver,
    conf: MuslConf,
    servers: Vec<SocketAddr>,
    sim: Sim<'n>,
}

/// What a musl-linked application gets for `getaddrinfo(name, AF_UNSPEC)`.
pub fn resolve(
    conf: &MuslConf,
    servers: &[SocketAddr],
    version: Resolver,
    name: &str,
    net: &mut dyn Network,
) -> Trace {
    let mut lookup = Lookup {
        version,
        servers: servers.to_vec(),
        conf: conf.clone(),
        sim: Sim::new(net),
    };
    let (candidates, outcome, answered_by) = lookup.search(name);
    lookup
        .sim
        .finish(version, name, candidates, outcome, answered_by)
}

impl Lookup<'_> {
    fn tcp_fallback(&self) -> bool {
        self.version == Resolver::Musl
    }

    /// `name_from_dns_search`: a name with `ndots` dots or a trailing dot
    /// as is only; otherwise each search domain, then the name as is, and
    /// only NXDOMAIN moves on.
    fn search(&mut self, name: &str) -> (Candidates, Outcome, Option<usize>) {
        let mut listed = Vec::new();
        let length = name.len();
        if length == 0 || length > 254 {
            return (listed, Outcome::failed("EAI_NONAME"), None);
        }
        let trailing = name.ends_with('.');
        let base = name.strip_suffix('.').unwrap_or(name);
        if base.is_empty() || base.ends_with('.') {
            return (listed, Outcome::failed("EAI_NONAME"), None);
        }
        let searching = !trailing && search::dots(name) < self.conf.ndots as usize;
        if searching {
            for domain in &self.conf.search {
                if domain.len() < 256 - base.len() - 1 {
                    listed.push((format!("{base}.{domain}"), Some(domain.clone())));
                }
            }
        }
        listed.push((base.to_string(), None));
        let last = listed.len() - 1;
        for (index, (candidate, _)) in listed.iter().enumerate() {
            self.sim.candidate = index;
            let outcome = match self.name_from_dns(candidate) {
                Found::Nothing if index < last => continue,
                Found::Nothing => Outcome::failed("EAI_NONAME"),
                Found::Addresses(addresses) => {
                    let addresses = addresses.into_iter().collect();
                    return (
                        absolute_list(listed),
                        Outcome::Resolved { addresses },
                        Some(index),
                    );
                }
                Found::Error(code) => {
                    if index < last {
                        self.sim.note(format!(
                            "{code} for {}: musl ends the search there (only NXDOMAIN moves on)",
                            absolute(candidate)
                        ));
                    }
                    Outcome::failed(code)
                }
                Found::Crash => Outcome::Crashes {
                    signal: "SIGFPE".to_string(),
                },
            };
            return (absolute_list(listed), outcome, None);
        }
        (absolute_list(listed), Outcome::failed("EAI_NONAME"), None)
    }

    /// `__res_mkquery`'s checks: the question name on the wire, whether it
    /// is encoded wrongly, or `None` when musl cannot build the query.
    fn encode(&self, candidate: &str) -> Option<(String, bool)> {
        let stripped = candidate.strip_suffix('.').unwrap_or(candidate);
        // 1.2.3 leaves a second trailing dot in the packet as a bogus
        // label length (a malformed query); 1.2.4 refuses the name.
        let malformed = stripped.ends_with('.');
        if (malformed && self.tcp_fallback()) || stripped.len() > 253 {
            return None;
        }
        let body = stripped.strip_suffix('.').unwrap_or(stripped);
        if !body.is_empty() && body.split('.').any(|l| l.is_empty() || l.len() > 63) {
            return None;
        }
        Some((format!("{stripped}."), malformed))
    }

    /// `name_from_dns`: A and AAAA for one candidate, all nameservers at once.
    fn name_from_dns(&mut self, candidate: &str) -> Found {
        let Some((qname, malformed)) = self.encode(candidate) else {
            self.sim
                .note(format!("musl cannot encode {candidate}: no query sent"));
            return if self.tcp_fallback() {
                Found::Nothing
            } else {
                Found::Error("EAI_NONAME")
            };
        };
        if malformed {
            self.sim.note(format!(
                "musl 1.2.3 encodes {candidate} with a stray label byte: the server sees a malformed query"
            ));
        }
        let Some(answers) = self.msend(&qname, malformed) else {
            return Found::Crash;
        };
        for answer in &answers {
            match answer.as_ref().map(|r| r.rcode) {
                None | Some(Reply::SERVFAIL) => return Found::Error("EAI_AGAIN"),
                Some(Reply::NXDOMAIN) => return Found::Nothing,
                Some(Reply::NOERROR) => {}
                Some(_) => return Found::Error("EAI_FAIL"),
            }
        }
        let mut addresses = Vec::new();
        for (answer, qtype) in answers.iter().zip([Qtype::A, Qtype::Aaaa]) {
            let wanted = |a: &&IpAddr| !self.tcp_fallback() || a.is_ipv4() == (qtype == Qtype::A);
            if let Some(r) = answer {
                addresses.extend(r.addresses.iter().filter(wanted).copied());
            }
        }
        if !addresses.is_empty() {
            return Found::Addresses(addresses);
        }
        Found::Error(if self.tcp_fallback() {
            "EAI_NODATA"
        } else {
            "EAI_NONAME"
        })
    }

    /// `__res_msend_rc`: every unanswered query to every nameserver from
    /// one socket, again every `timeout / attempts`, until all are answered
    /// or `timeout` has passed. Only NOERROR and NXDOMAIN are accepted; a
    /// SERVFAIL is re-sent at once (up to twice per query per round), any
    /// other rcode ignored. `None`: musl divides by `attempts:0` and dies.
    fn msend(&mut self, qname: &str, malformed: bool) -> Option<[Option<Reply>; 2]> {
        if self.conf.attempts == 0 {
            self.sim
                .note("options attempts:0: musl divides by zero (SIGFPE)");
            return None;
        }
        let timeout = Duration::from_millis(1000 * u64::from(self.conf.timeout_s));
        let interval =
            Duration::from_millis(timeout.as_millis() as u64 / u64::from(self.conf.attempts));
        let template = Template {
            edns: None,
            ad: false,
        };
        let socket = self.sim.socket();
        let start = self.sim.now;
        let end = start + timeout;
        let mut answers: [Option<Reply>; 2] = [None, None];
        let mut over_tcp = [false; 2];
        let mut queue: BinaryHeap<Reverse<Arrival>> = BinaryHeap::new();
        let mut pending: Vec<Option<Fate>> = Vec::new();
        let mut next_round = start;
        let mut servfail_retries = 0;
        let query = |i: usize, server: SocketAddr, transport, socket, wait| {
            let mut q = template.query(
                server,
                transport,
                qname,
                [Qtype::A, Qtype::Aaaa][i],
                socket,
                Some(wait),
            );
            q.malformed = malformed;
            q
        };
        loop {
            if answers.iter().all(Option::is_some) || self.sim.now >= end {
                break;
            }
            // musl reads the time in whole milliseconds: on average half a
            // millisecond is gone before a new round checks the timeout.
            if self.sim.now >= next_round && self.sim.now + CLOCK_PHASE < end {
                let mut batch = Vec::new();
                let mut index = Vec::new();
                for i in 0..2 {
                    if answers[i].is_none() && !over_tcp[i] {
                        for (j, &server) in self.servers.iter().enumerate() {
                            batch.push(query(
                                i,
                                server,
                                Transport::Udp,
                                socket,
                                end - self.sim.now,
                            ));
                            index.push((i, j));
                        }
                    }
                }
                let now = self.sim.now;
                for ((i, j), fate) in index.into_iter().zip(self.sim.send(batch)) {
                    push(&mut queue, &mut pending, now, i, j, false, fate);
                }
                servfail_retries = 2 * QUERIES;
                next_round = self.sim.now + interval + poll_slack(interval);
            }
            // A round skipped for the timeout leaves only the timeout.
            let limit = if next_round > self.sim.now {
                next_round.min(end)
            } else {
                end
            };
            let due = queue.peek().is_some_and(|a| a.0.at < limit);
            let Some(Reverse(arrival)) = due.then(|| queue.pop()).flatten() else {
                self.sim.now = limit;
                continue;
            };
            self.sim.now = arrival.at;
            let Some(fate) = pending.get_mut(arrival.seq).and_then(Option::take) else {
                continue;
            };
            let (i, j) = (arrival.query, arrival.server);
            if arrival.tcp {
                match fate {
                    Fate::Reply { reply, .. }
                        if matches!(reply.rcode, Reply::NOERROR | Reply::NXDOMAIN) =>
                    {
                        answers[i] = Some(reply);
                        over_tcp[i] = false;
                        continue;
                    }
                    _ => {
                        self.sim
                            .note("the TCP fallback failed: musl abandons the whole query");
                        break;
                    }
                }
            }
            let Fate::Reply { reply, .. } = fate else {
                // An unconnected socket never sees ICMP errors.
                continue;
            };
            if answers[i].is_some() || over_tcp[i] {
                continue;
            }
            match reply.rcode {
                Reply::NOERROR | Reply::NXDOMAIN if reply.truncated && self.tcp_fallback() => {
                    self.sim
                        .note("a truncated reply: musl 1.2.4+ asks that server again over TCP");
                    over_tcp[i] = true;
                    let tcp_socket = self.sim.socket();
                    let now = self.sim.now;
                    let q = query(i, self.servers[j], Transport::Tcp, tcp_socket, end - now);
                    let fate = self.sim.send(vec![q]).remove(0);
                    push(&mut queue, &mut pending, now, i, j, true, fate);
                }
                Reply::NOERROR | Reply::NXDOMAIN => {
                    if reply.truncated {
                        self.sim.note("a truncated reply: musl 1.2.3 uses whatever records it holds, it has no TCP");
                    }
                    answers[i] = Some(reply);
                }
                Reply::SERVFAIL if servfail_retries > 0 => {
                    servfail_retries -= 1;
                    let now = self.sim.now;
                    let q = query(i, self.servers[j], Transport::Udp, socket, end - now);
                    let fate = self.sim.send(vec![q]).remove(0);
                    push(&mut queue, &mut pending, now, i, j, false, fate);
                }
                rcode => {
                    if rcode != Reply::SERVFAIL {
                        self.sim.note(format!(
                            "musl ignores a {} reply and keeps waiting for another server or the timeout",
                            crate::dns::client::rcode_name(rcode)
                        ));
                    }
                }
            }
        }
        for (i, tcp) in over_tcp.iter().enumerate() {
            if *tcp {
                answers[i] = None;
            }
        }
        Some(answers)
    }
}

/// The part of a millisecond musl's clock (`mtime`) drops, on average.
const CLOCK_PHASE: Duration = Duration::from_micros(500);

/// How much later than asked Linux wakes a `poll` (its timer slack: 0.1 %
/// of the timeout, at least 50 µs). musl starts a round when the previous
/// one is `timeout / attempts` old, so rounds slip by this much each; a
/// round due just before the lookup's timeout does not happen.
fn poll_slack(interval: Duration) -> Duration {
    (interval / 1000).max(Duration::from_micros(50))
}

/// Queues a fate that reaches the application (replies and, over TCP,
/// resets); its arrival is `now + after`.
fn push(
    queue: &mut BinaryHeap<Reverse<Arrival>>,
    pending: &mut Vec<Option<Fate>>,
    now: Duration,
    query: usize,
    server: usize,
    tcp: bool,
    fate: Fate,
) {
    let after = match &fate {
        Fate::Reply { after, .. } => *after,
        Fate::Unreachable { after } if tcp => *after,
        _ => return,
    };
    queue.push(Reverse(Arrival {
        at: now + after,
        seq: pending.len(),
        query,
        server,
        tcp,
    }));
    pending.push(Some(fate));
}

fn absolute_list(listed: Candidates) -> Candidates {
    listed
        .into_iter()
        .map(|(name, domain)| (absolute(&name), domain))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testnet::{secs, wire, Behaviour, TestNet};
    use super::*;

    const K8S: &str = "search default.svc.cluster.local svc.cluster.local cluster.local corp.internal\nnameserver 10.0.0.1\noptions ndots:5\n";

    fn run(text: &str, version: Resolver, name: &str, net: &mut TestNet) -> Trace {
        let conf = MuslConf::parse(text);
        resolve(&conf, &conf.servers(), version, name, net)
    }

    fn error(trace: &Trace) -> &str {
        match &trace.outcome {
            Outcome::Failed { error } => error,
            other => panic!("not failed: {other:?}"),
        }
    }

    #[test]
    fn parses_like_musl() {
        let c = MuslConf::parse(
            "domain a.example b.example\nnameserver 10.0.0.1\n nameserver 10.0.0.9\nnameserver 10.0.0.2 # x\noptions rotate ndots:20 timeout:0 attempts:30 use-vc\noptions timeout:.5\n",
        );
        assert_eq!(c.search, ["a.example", "b.example"]);
        assert_eq!(c.nameservers.len(), 2);
        assert_eq!((c.ndots, c.timeout_s, c.attempts), (15, 0, 10));
        let empty = MuslConf::parse("search a.example\nsearch\n");
        assert!(empty.search.is_empty());
        let long = MuslConf::parse(&format!(
            "search {}\nnameserver 10.0.0.3\n",
            "a".repeat(300)
        ));
        assert!(long.search.is_empty());
        assert_eq!(long.servers(), [SocketAddr::from(([10, 0, 0, 3], 53))]);
        assert_eq!(MuslConf::parse("").servers()[0].port(), 53);
        // The first `ndots:` in the line, wherever it is.
        assert_eq!(MuslConf::parse("options xndots:3 ndots:4\n").ndots, 3);
    }

    #[test]
    fn same_walk_as_glibc_for_a_clean_external_name() {
        let trace = run(
            K8S,
            Resolver::Musl123,
            "api.example.com",
            &mut TestNet::new(),
        );
        assert_eq!(trace.exchanges.len(), 10);
        assert_eq!(trace.answered_by, Some(4));
        assert!(trace.outcome.is_resolved());
    }

    #[test]
    fn ndots_names_go_as_is_only_and_nodata_ends_the_walk() {
        let mut net = TestNet::new();
        let deep = run(K8S, Resolver::Musl123, "a.b.c.d.e.example", &mut net);
        assert_eq!(
            wire(&deep),
            ["1 A a.b.c.d.e.example.", "1 AAAA a.b.c.d.e.example."]
        );
        net.zone
            .insert("db.default.svc.cluster.local.".into(), vec![]);
        let nodata = run(K8S, Resolver::Musl123, "db", &mut net);
        assert_eq!(nodata.exchanges.len(), 2);
        assert_eq!(error(&nodata), "EAI_NONAME");
        assert_eq!(
            error(&run(K8S, Resolver::Musl, "db", &mut net)),
            "EAI_NODATA"
        );
    }

    #[test]
    fn all_servers_at_once_and_refused_is_ignored_until_the_timeout() {
        let text = "nameserver 10.0.0.1\nnameserver 10.0.0.2\n";
        let mut net = TestNet::new()
            .with(1, Behaviour::Rcode(Reply::REFUSED))
            .with(2, Behaviour::Healthy);
        let trace = run(text, Resolver::Musl123, "api.example.com.", &mut net);
        assert_eq!(
            wire(&trace),
            [
                "1 A api.example.com.",
                "2 A api.example.com.",
                "1 AAAA api.example.com.",
                "2 AAAA api.example.com."
            ]
        );
        assert!(trace.outcome.is_resolved());
        assert_eq!(trace.elapsed, Duration::from_millis(1));
        let mut refused = TestNet::new().with(1, Behaviour::Rcode(Reply::REFUSED));
        let trace = run(
            "nameserver 10.0.0.1\n",
            Resolver::Musl123,
            "api.example.com.",
            &mut refused,
        );
        // Sent again after 2.5 s, given up after 5 s.
        assert_eq!(trace.exchanges.len(), 4);
        assert_eq!(
            trace.exchanges[2].query.sent_at,
            Duration::from_micros(2_502_500)
        );
        assert_eq!(secs(&trace), 5.0);
        assert_eq!(error(&trace), "EAI_AGAIN");
    }

    #[test]
    fn servfail_is_resent_at_once_twice_per_query_and_round() {
        let mut net = TestNet::new().with(1, Behaviour::Rcode(Reply::SERVFAIL));
        let trace = run(
            "nameserver 10.0.0.1\noptions timeout:2 attempts:2\n",
            Resolver::Musl123,
            "x.example.",
            &mut net,
        );
        // 2 + 4 re-sends per round, 2 rounds.
        assert_eq!(trace.exchanges.len(), 12);
        assert_eq!(secs(&trace), 2.0);
        assert_eq!(error(&trace), "EAI_AGAIN");
    }

    #[test]
    fn truncation_only_the_newer_musl_falls_back_to_tcp() {
        let mut net = TestNet::new().with(1, Behaviour::TruncateUdp);
        let old = run(
            "nameserver 10.0.0.1\n",
            Resolver::Musl123,
            "api.example.com.",
            &mut net,
        );
        assert_eq!(old.exchanges.len(), 2);
        assert_eq!(error(&old), "EAI_NONAME");
        let new = run(
            "nameserver 10.0.0.1\n",
            Resolver::Musl,
            "api.example.com.",
            &mut net,
        );
        assert_eq!(
            wire(&new),
            [
                "1 A api.example.com.",
                "1 AAAA api.example.com.",
                "1 tcp A api.example.com.",
                "1 tcp AAAA api.example.com."
            ]
        );
        assert!(new.outcome.is_resolved());
    }

    #[test]
    fn search_dot_is_malformed_in_1_2_3_and_skipped_in_1_2_4() {
        let text = "nameserver 10.0.0.1\nsearch .\n";
        let mut net = TestNet::new();
        let old = run(text, Resolver::Musl123, "api", &mut net);
        assert_eq!(old.exchanges[0].query.qname, "api..");
        assert!(old.exchanges[0].query.malformed);
        let new = run(text, Resolver::Musl, "api", &mut net);
        assert_eq!(wire(&new), ["1 A api.", "1 AAAA api."]);
    }

    #[test]
    fn silent_and_unreachable_servers_cost_the_whole_timeout() {
        for behaviour in [Behaviour::Silent, Behaviour::Unreachable] {
            let mut net = TestNet::new().with(1, behaviour);
            let trace = run(
                "nameserver 10.0.0.1\noptions timeout:1 attempts:2\n",
                Resolver::Musl123,
                "x.",
                &mut net,
            );
            assert_eq!(trace.exchanges.len(), 4);
            assert_eq!(secs(&trace), 1.0);
            assert_eq!(error(&trace), "EAI_AGAIN");
        }
        let crash = run(
            "nameserver 10.0.0.1\noptions attempts:0\n",
            Resolver::Musl123,
            "x.",
            &mut TestNet::new(),
        );
        assert!(matches!(crash.outcome, Outcome::Crashes { .. }));
        let zero = run(
            "nameserver 10.0.0.1\noptions timeout:0\n",
            Resolver::Musl123,
            "x.",
            &mut TestNet::new(),
        );
        assert!(zero.exchanges.is_empty());
        assert_eq!(error(&zero), "EAI_AGAIN");
    }

    #[test]
    fn three_rounds_in_a_second_not_four() {
        let mut net = TestNet::new().with(1, Behaviour::Silent);
        let trace = run(
            "nameserver 10.0.0.1\noptions timeout:1 attempts:3\n",
            Resolver::Musl123,
            "x.",
            &mut net,
        );
        assert_eq!(trace.exchanges.len(), 6);
    }

    #[test]
    fn the_race_loses_musl_lookups_too() {
        let mut net = TestNet::new().with(1, Behaviour::RaceSecond);
        let trace = run(
            "nameserver 10.0.0.1\n",
            Resolver::Musl123,
            "api.example.com.",
            &mut net,
        );
        // AAAA (same socket) lost; sent again alone 2.5 s later.
        assert!(trace.outcome.is_resolved());
        assert_eq!(secs(&trace), 2.5035);
    }
}
