//! Go's own resolver (the pure-Go one: CGO_ENABLED=0 binaries, or
//! GODEBUG=netdns=go), as in Go 1.19 (Debian 12's golang): `dnsReadConfig`
//! (dnsconfig_unix.go), `nameList`, `goLookupIPCNAMEOrder`, `tryOneName`
//! and `exchange` (dnsclient_unix.go). Every query has its own socket; A
//! and AAAA run in parallel; any failure moves on to the next name.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

use super::{absolute, Candidates, Transport};
use super::{screened, wire_length, Fate, Network, Outcome, Qtype, Reply, Resolver, Sim};
use super::{Template, Trace};

/// Go's maxDNSPacketSize: the EDNS0 payload in every query.
pub const EDNS_PAYLOAD: u16 = 1232;
/// dtoi's limit.
const BIG: u32 = 0xFF_FFFF;

/// resolv.conf as Go reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GoConf {
    pub servers: Vec<SocketAddr>,
    /// Rooted (with a trailing dot), as Go keeps them.
    pub search: Vec<String>,
    pub ndots: u32,
    pub timeout_s: u32,
    pub attempts: u32,
    pub rotate: bool,
    /// `single-request` or `single-request-reopen`: A, then AAAA.
    pub single_request: bool,
    /// `use-vc`, `usevc` or `tcp`.
    pub use_tcp: bool,
    /// An option or keyword Go does not know (a cgo build then defers to
    /// the C library instead).
    pub unknown_option: bool,
}

impl GoConf {
    /// Go's parser: whitespace-separated fields, keywords may be indented,
    /// `;`/`#` comment lines, at most three nameservers, `timeout` and
    /// `attempts` at least 1 and not capped, `ndots` capped at 15; no
    /// search list means the host name's domain.
    pub fn parse(text: &str, hostname: &str) -> GoConf {
        let mut conf = GoConf {
            servers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
            timeout_s: 5,
            attempts: 2,
            rotate: false,
            single_request: false,
            use_tcp: false,
            unknown_option: false,
        };
        for line in text.split('\n') {
            if line.starts_with([';', '#']) {
                continue;
            }
            let fields: Vec<&str> = line
                .split([' ', '\r', '\t', '\n'])
                .filter(|f| !f.is_empty())
                .collect();
            let Some((&keyword, args)) = fields.split_first() else {
                continue;
            };
            match keyword {
                "nameserver" => {
                    if let Some(addr) = args.first() {
                        let ip = addr.split_once('%').map_or(*addr, |(a, _)| a);
                        if conf.servers.len() < 3 {
                            if let Ok(ip) = ip.parse::<IpAddr>() {
                                conf.servers.push(SocketAddr::new(ip, 53));
                            }
                        }
                    }
                }
                "domain" => {
                    if let Some(domain) = args.first() {
                        conf.search = vec![absolute(domain)];
                    }
                }
                "search" => conf.search = args.iter().map(|d| absolute(d)).collect(),
                "options" => {
                    for option in args {
                        if let Some(n) = option.strip_prefix("ndots:") {
                            conf.ndots = dtoi(n).min(15);
                        } else if let Some(n) = option.strip_prefix("timeout:") {
                            conf.timeout_s = dtoi(n).max(1);
                        } else if let Some(n) = option.strip_prefix("attempts:") {
                            conf.attempts = dtoi(n).max(1);
                        } else {
                            match *option {
                                "rotate" => conf.rotate = true,
                                "single-request" | "single-request-reopen" => {
                                    conf.single_request = true
                                }
                                "use-vc" | "usevc" | "tcp" => conf.use_tcp = true,
                                _ => conf.unknown_option = true,
                            }
                        }
                    }
                }
                "lookup" => {}
                _ => conf.unknown_option = true,
            }
        }
        if conf.servers.is_empty() {
            conf.servers = vec![
                SocketAddr::from(([127, 0, 0, 1], 53)),
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 53)),
            ];
        }
        if conf.search.is_empty() {
            if let Some((_, domain)) = hostname.split_once('.') {
                if !domain.is_empty() {
                    conf.search = vec![absolute(domain)];
                }
            }
        }
        conf
    }

    /// `nameList`: a rooted name as is; otherwise as is first when it has
    /// `ndots` dots, each search domain (if short enough), as is last when
    /// not tried first.
    pub fn name_list(&self, name: &str) -> Candidates {
        let length = name.len();
        let rooted = name.ends_with('.');
        if length > 254
            || (length == 254 && rooted)
            || name
                .trim_end_matches('.')
                .to_ascii_lowercase()
                .ends_with(".onion")
        {
            return Vec::new();
        }
        if rooted {
            return vec![(name.to_string(), None)];
        }
        let has_ndots = name.matches('.').count() >= self.ndots as usize;
        let rooted_name = format!("{name}.");
        let mut names = Vec::new();
        if has_ndots {
            names.push((rooted_name.clone(), None));
        }
        for suffix in &self.search {
            if rooted_name.len() + suffix.len() <= 254 {
                names.push((
                    format!("{rooted_name}{suffix}"),
                    Some(suffix.trim_end_matches('.').to_string()),
                ));
            }
        }
        if !has_ndots {
            names.push((rooted_name, None));
        }
        names
    }
}

/// Go's dtoi: leading digits, 0 when there are none, capped at 0xFFFFFF.
fn dtoi(text: &str) -> u32 {
    let mut n: u32 = 0;
    for b in text.bytes().take_while(u8::is_ascii_digit) {
        n = n * 10 + u32::from(b - b'0');
        if n >= BIG {
            return BIG;
        }
    }
    n
}

/// Go's `isDomainName`.
fn is_domain_name(name: &str) -> bool {
    if name == "." {
        return true;
    }
    let bytes = name.as_bytes();
    let l = bytes.len();
    if l == 0 || l > 254 || (l == 254 && bytes[l - 1] != b'.') {
        return false;
    }
    let (mut last, mut non_numeric, mut part) = (b'.', false, 0);
    for &c in bytes {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                non_numeric = true;
                part += 1;
            }
            b'0'..=b'9' => part += 1,
            b'-' => {
                if last == b'.' {
                    return false;
                }
                part += 1;
                non_numeric = true;
            }
            b'.' => {
                if last == b'.' || last == b'-' || part > 63 || part == 0 {
                    return false;
                }
                part = 0;
            }
            _ => return false,
        }
        last = c;
    }
    last != b'-' && part <= 63 && non_numeric
}

/// One `tryOneName` for one type: its own clock and position in the
/// attempts x servers loop.
struct Task {
    qtype: Qtype,
    qname: String,
    clock: Duration,
    offset: usize,
    step: usize,
    tcp: bool,
    last_error: Option<&'static str>,
    result: Option<Result<Vec<IpAddr>, &'static str>>,
}

/// What an application using Go's resolver gets from `net.LookupIP(name)`.
pub fn resolve(conf: &GoConf, servers: &[SocketAddr], name: &str, net: &mut dyn Network) -> Trace {
    let mut sim = Sim::new(net);
    let names = conf.name_list(name);
    if !is_domain_name(name) {
        sim.note("Go rejects the name before sending anything (isDomainName)");
        return sim.finish(
            Resolver::Go,
            name,
            names,
            Outcome::failed("no such host"),
            None,
        );
    }
    let template = Template {
        edns: Some(EDNS_PAYLOAD),
        ad: false,
    };
    let mut rotation = 0usize;
    let mut last_error: Option<&'static str> = None;
    let rooted_name = format!("{name}.");
    for (index, (fqdn, _)) in names.iter().enumerate() {
        sim.candidate = index;
        let start = sim.now;
        if wire_length(fqdn).is_none_or(|l| l > 255) {
            // newRequest cannot pack the name: every try fails at once,
            // nothing is sent, and the next name is tried.
            sim.note(format!("Go cannot encode {fqdn}: no query sent"));
            if conf.rotate {
                rotation += 2;
            }
            if last_error.is_none() || *fqdn == rooted_name {
                last_error = Some("cannot marshal DNS message");
            }
            continue;
        }
        let mut tasks: Vec<Task> = [Qtype::A, Qtype::Aaaa]
            .into_iter()
            .map(|qtype| {
                let offset = if conf.rotate {
                    rotation += 1;
                    rotation - 1
                } else {
                    0
                };
                Task {
                    qtype,
                    qname: fqdn.clone(),
                    clock: start,
                    offset,
                    step: 0,
                    tcp: false,
                    last_error: None,
                    result: None,
                }
            })
            .collect();
        if conf.single_request {
            run(conf, servers, &template, &mut sim, &mut tasks[..1]);
            tasks[1].clock = tasks[0].clock;
            run(conf, servers, &template, &mut sim, &mut tasks[1..]);
        } else {
            run(conf, servers, &template, &mut sim, &mut tasks);
        }
        tasks.sort_by_key(|t| t.clock);
        sim.now = tasks.iter().map(|t| t.clock).max().unwrap_or(start);
        let mut addresses = Vec::new();
        for task in &tasks {
            match &task.result {
                Some(Ok(found)) => addresses.extend(found.iter().copied()),
                Some(Err(error)) if last_error.is_none() || *fqdn == rooted_name => {
                    last_error = Some(error)
                }
                _ => {}
            }
        }
        if !addresses.is_empty() {
            let addresses = addresses.into_iter().collect();
            return sim.finish(
                Resolver::Go,
                name,
                names.clone(),
                Outcome::Resolved { addresses },
                Some(index),
            );
        }
    }
    let outcome = Outcome::failed(last_error.unwrap_or("no such host"));
    sim.finish(Resolver::Go, name, names, outcome, None)
}

/// Runs `tasks` to completion, their queries sent in lockstep (the
/// goroutines run at once; each keeps its own clock).
fn run(
    conf: &GoConf,
    servers: &[SocketAddr],
    template: &Template,
    sim: &mut Sim,
    tasks: &mut [Task],
) {
    let timeout = Duration::from_secs(u64::from(conf.timeout_s));
    loop {
        let mut batch = Vec::new();
        let mut running = Vec::new();
        for (i, task) in tasks.iter_mut().enumerate() {
            if task.result.is_some() {
                continue;
            }
            let attempts_x_servers = conf.attempts as usize * servers.len();
            if task.step >= attempts_x_servers {
                task.result = Some(Err(task.last_error.unwrap_or("no such host")));
                continue;
            }
            let Some(&server) = servers.get((task.offset + task.step) % servers.len().max(1))
            else {
                task.result = Some(Err("no nameserver"));
                continue;
            };
            let transport = if task.tcp || conf.use_tcp {
                Transport::Tcp
            } else {
                Transport::Udp
            };
            let socket = sim.socket();
            let mut query = template.query(
                server,
                transport,
                &task.qname,
                task.qtype,
                socket,
                Some(timeout),
            );
            query.sent_at = task.clock;
            batch.push(query);
            running.push(i);
        }
        if batch.is_empty() {
            return;
        }
        let transports: Vec<Transport> = batch.iter().map(|q| q.transport).collect();
        for ((i, fate), transport) in running.into_iter().zip(sim.send_at(batch)).zip(transports) {
            exchange(&mut tasks[i], fate, transport, timeout, sim);
        }
    }
}

/// What one exchange's fate does to its task (`exchange`, `checkHeader`,
/// `skipToAnswer`).
fn exchange(task: &mut Task, fate: Fate, transport: Transport, timeout: Duration, sim: &mut Sim) {
    let next_server = |task: &mut Task, error: &'static str| {
        task.last_error = Some(error);
        task.tcp = false;
        task.step += 1;
    };
    // Over UDP, a reply without the question is dropped as a possible
    // forgery and Go keeps waiting (golang.org/issue/13281).
    let fate = match transport {
        Transport::Udp => screened(fate, |r| r.question),
        Transport::Tcp => fate,
    };
    let arrival = fate.arrival(Some(timeout));
    match (fate, arrival) {
        (Fate::Unreachable { .. }, Some(after)) => {
            task.clock += after;
            next_server(task, "connection refused");
        }
        (Fate::Reply { reply, .. }, Some(after)) => {
            task.clock += after;
            if !reply.question {
                next_server(task, "cannot unmarshal DNS message");
                return;
            }
            if reply.truncated {
                if transport == Transport::Udp {
                    sim.note("a truncated reply: Go asks the same server again over TCP");
                    task.tcp = true;
                } else {
                    next_server(task, "no answer from DNS server");
                }
                return;
            }
            let lame = reply.rcode == Reply::NOERROR
                && !reply.authoritative
                && !reply.recursion_available
                && reply.answer_count == 0;
            match reply.rcode {
                Reply::NXDOMAIN => task.result = Some(Err("no such host")),
                Reply::NOERROR if lame => next_server(task, "lame referral"),
                Reply::NOERROR => {
                    let wanted = reply
                        .addresses
                        .iter()
                        .any(|a| a.is_ipv4() == (task.qtype == Qtype::A));
                    task.result = Some(if wanted {
                        Ok(reply.addresses.clone())
                    } else {
                        Err("no such host")
                    });
                }
                _ => next_server(task, "server misbehaving"),
            }
        }
        _ => {
            task.clock += timeout;
            next_server(task, "i/o timeout");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testnet::{secs, wire, Behaviour, TestNet};
    use super::*;

    const K8S: &str = "search default.svc.cluster.local svc.cluster.local cluster.local corp.internal\nnameserver 10.0.0.1\noptions ndots:5\n";

    fn run(text: &str, name: &str, net: &mut TestNet) -> Trace {
        let conf = GoConf::parse(text, "");
        resolve(&conf, &conf.servers, name, net)
    }

    fn error(trace: &Trace) -> &str {
        match &trace.outcome {
            Outcome::Failed { error } => error,
            other => panic!("not failed: {other:?}"),
        }
    }

    #[test]
    fn parses_like_go() {
        let c = GoConf::parse(
            "  nameserver 10.0.0.1\nnameserver fe80::1%eth0\n# nameserver 10.0.0.9\nsearch a.example b.example.\noptions ndots:x timeout:0 attempts:9 rotate use-vc edns0\n",
            "node.corp.example",
        );
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.search, ["a.example.", "b.example."]);
        assert_eq!((c.ndots, c.timeout_s, c.attempts), (0, 1, 9));
        assert!(c.rotate && c.use_tcp && c.unknown_option);
        let d = GoConf::parse("search\n", "node.corp.example");
        assert_eq!(d.search, ["corp.example."]);
        assert_eq!(d.servers.len(), 2, "127.0.0.1 and ::1 by default");
    }

    #[test]
    fn separate_sockets_and_every_failure_moves_on() {
        let trace = run(K8S, "api.example.com", &mut TestNet::new());
        assert_eq!(trace.exchanges.len(), 10);
        let sockets: std::collections::BTreeSet<u32> =
            trace.exchanges.iter().map(|e| e.query.socket).collect();
        assert_eq!(sockets.len(), 10);
        assert!(trace
            .exchanges
            .iter()
            .all(|e| e.query.edns == Some(EDNS_PAYLOAD)));
        // A REFUSED first server: Go asks the next, per query.
        let mut net = TestNet::new()
            .with(1, Behaviour::Rcode(Reply::REFUSED))
            .with(2, Behaviour::Healthy);
        let trace = run(
            "nameserver 10.0.0.1\nnameserver 10.0.0.2\n",
            "api.example.com.",
            &mut net,
        );
        assert_eq!(trace.exchanges.len(), 4);
        assert!(trace.outcome.is_resolved());
    }

    #[test]
    fn silent_search_domain_is_skipped_after_the_timeouts() {
        let mut net = TestNet::new().with(1, Behaviour::SilentFor("corp.internal."));
        let trace = run(
            &K8S.replace("ndots:5", "ndots:5 timeout:1 attempts:3"),
            "api.example.com",
            &mut net,
        );
        assert!(trace.outcome.is_resolved());
        // A and AAAA time out in parallel: 3 x 1 s, not 6.
        assert!((secs(&trace) - 3.004).abs() < 1e-6, "{}", secs(&trace));
    }

    #[test]
    fn servfail_and_refused_walk_on_and_report_the_name_as_is() {
        let mut net = TestNet::new().with(1, Behaviour::Rcode(Reply::SERVFAIL));
        let trace = run("search a.example\nnameserver 10.0.0.1\n", "web", &mut net);
        assert_eq!(trace.exchanges.len(), 8);
        assert_eq!(error(&trace), "server misbehaving");
        let mut net = TestNet::new().with(1, Behaviour::Unreachable);
        let trace = run("nameserver 10.0.0.1\n", "x.", &mut net);
        assert_eq!(error(&trace), "connection refused");
        let trace = run(
            "nameserver 10.0.0.1\noptions timeout:1 attempts:1\n",
            "x.",
            &mut TestNet::new().with(1, Behaviour::Silent),
        );
        assert_eq!(error(&trace), "i/o timeout");
        assert_eq!(secs(&trace), 1.0);
    }

    #[test]
    fn question_less_replies_are_dropped_as_forgeries() {
        let mut net = TestNet::new()
            .with(1, Behaviour::Bare(Reply::REFUSED))
            .with(2, Behaviour::Healthy);
        let trace = run(
            "nameserver 10.0.0.1\nnameserver 10.0.0.2\noptions timeout:1\n",
            "api.example.com.",
            &mut net,
        );
        assert!(trace.outcome.is_resolved());
        assert_eq!(secs(&trace), 1.001);
    }

    #[test]
    fn truncation_retries_over_tcp_per_query() {
        let mut net = TestNet::new().with(1, Behaviour::TruncateUdp);
        let trace = run(
            "nameserver 10.0.0.1\noptions single-request\n",
            "api.example.com.",
            &mut net,
        );
        assert_eq!(
            wire(&trace),
            [
                "1 A api.example.com.",
                "1 tcp A api.example.com.",
                "1 AAAA api.example.com.",
                "1 tcp AAAA api.example.com."
            ]
        );
        assert!(trace.outcome.is_resolved());
    }

    #[test]
    fn names_go_rejects_or_skips() {
        let mut net = TestNet::new();
        assert!(run(K8S, "bad..name", &mut net).exchanges.is_empty());
        let dot = run("nameserver 10.0.0.1\nsearch .\n", "api", &mut net);
        assert_eq!(dot.candidates, ["api..", "api."]);
        assert!(!is_domain_name("123"));
        assert!(is_domain_name("_srv.example"));
    }
}
