//! podprobe's own DNS client. It puts a resolver model's [`Query`]s on the
//! wire the way the application's library would: the same grouping on
//! sockets (a retry leaves from the same source port when the library's
//! does), UDP or TCP, EDNS0 and the AD bit as the library sets them, even
//! musl 1.2.3's malformed encoding of `name..`. One question per message,
//! no cache, no retries of its own: every query a measurement reports was
//! really sent, and each one's [`Fate`] is what came back on the wire.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RData};

use super::model::{Fate, Network, Qtype, Query, Reply, Transport};

/// Names glibc rejects never reach the wire; this is the reason.
pub fn parse_name(text: &str) -> crate::Result<Name> {
    let bad = |why: &str| crate::Error::usage(format!("'{text}' is not a DNS name: {why}"));
    let body = text.strip_suffix('.').unwrap_or(text);
    if body.is_empty() {
        return Err(bad("it is empty"));
    }
    if body.split('.').any(str::is_empty) {
        return Err(bad(
            "it has an empty label (two dots in a row, or a leading dot)",
        ));
    }
    if body.split('.').any(|label| label.len() > 63) {
        return Err(bad("a label is longer than 63 characters"));
    }
    if body.len() > 253 {
        return Err(bad("it is longer than 253 characters"));
    }
    let mut name = Name::from_ascii(text).map_err(|e| bad(&e.to_string()))?;
    name.set_fqdn(true);
    Ok(name)
}

pub fn rcode_name(rcode: u16) -> String {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        n => return format!("RCODE{n}"),
    }
    .to_string()
}

/// A fate as dig-like text: the rcode, `TIMEOUT` or `UNREACHABLE`.
pub fn fate_label(fate: &Fate) -> String {
    match fate {
        Fate::Reply { reply, .. } => rcode_name(reply.rcode),
        Fate::Silent => "TIMEOUT".to_string(),
        Fate::Unreachable { .. } => "UNREACHABLE".to_string(),
    }
}

/// A plain query (RD set, no EDNS) from socket 0, as the health and
/// latency measurements send.
pub fn plain(server: SocketAddr, qname: &str, qtype: Qtype, timeout: Duration) -> Query {
    Query {
        server,
        transport: Transport::Udp,
        qname: qname.to_string(),
        qtype,
        edns: None,
        ad: false,
        malformed: false,
        socket: 0,
        sent_at: Duration::ZERO,
        wait: Some(timeout),
    }
}

/// One question on its own new socket: what most non-glibc resolvers do.
pub fn query(server: SocketAddr, qname: &str, qtype: Qtype, timeout: Duration) -> Fate {
    query_same_socket(server, qname, &[qtype], timeout)
        .pop()
        .unwrap_or(Fate::Silent)
}

/// glibc's default pattern: every question for `qname` sent back to back
/// from one new socket (same source port), replies collected until all
/// matched or `timeout` after each send.
pub fn query_same_socket(
    server: SocketAddr,
    qname: &str,
    qtypes: &[Qtype],
    timeout: Duration,
) -> Vec<Fate> {
    let batch: Vec<Query> = qtypes
        .iter()
        .map(|&t| plain(server, qname, t, timeout))
        .collect();
    Wire::new(timeout).send(&batch)
}

/// The real network, as a [`Network`] for the resolver models. It keeps
/// the application's UDP sockets open for the lookup, so queries the model
/// sends from one socket leave from one source port.
pub struct Wire {
    /// The longest any single wait lasts (`--timeout`): a reply slower than
    /// this counts as lost even when the application would wait longer.
    cap: Duration,
    sockets: HashMap<u32, Arc<UdpSocket>>,
}

impl Wire {
    pub fn new(cap: Duration) -> Wire {
        Wire {
            cap,
            sockets: HashMap::new(),
        }
    }

    /// The socket a query group leaves from: connected when the group
    /// talks to one server (so ICMP errors are reported, as to glibc and
    /// Go), unconnected otherwise (musl's one socket for all servers).
    fn udp_socket(
        &mut self,
        id: u32,
        servers: &[SocketAddr],
    ) -> io::Result<(Arc<UdpSocket>, bool)> {
        if let Some(socket) = self.sockets.get(&id) {
            let connected = socket.peer_addr().is_ok();
            return Ok((Arc::clone(socket), connected));
        }
        let v4 = servers.iter().all(SocketAddr::is_ipv4);
        let local: SocketAddr = if v4 {
            ([0, 0, 0, 0], 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)?;
        let connected = servers.windows(2).all(|w| w[0] == w[1]);
        if connected {
            if let Some(server) = servers.first() {
                socket.connect(server)?;
            }
        }
        let socket = Arc::new(socket);
        self.sockets.insert(id, Arc::clone(&socket));
        Ok((socket, connected))
    }
}

impl Network for Wire {
    fn send(&mut self, batch: &[Query]) -> Vec<Fate> {
        // Queries on one socket go together, groups at the same time.
        let mut groups: Vec<(u32, Transport, Vec<usize>)> = Vec::new();
        for (i, q) in batch.iter().enumerate() {
            match groups
                .iter_mut()
                .find(|g| g.0 == q.socket && g.1 == q.transport)
            {
                Some(group) => group.2.push(i),
                None => groups.push((q.socket, q.transport, vec![i])),
            }
        }
        let mut work = Vec::new();
        for (socket, transport, members) in groups {
            let queries: Vec<&Query> = members.iter().map(|&i| &batch[i]).collect();
            let endpoint = match transport {
                Transport::Tcp => Ok(None),
                Transport::Udp => {
                    let servers: Vec<SocketAddr> = queries.iter().map(|q| q.server).collect();
                    self.udp_socket(socket, &servers).map(Some)
                }
            };
            work.push((members, queries, endpoint));
        }
        let cap = self.cap;
        let results = crate::checks::in_parallel(&work, |(members, queries, endpoint)| {
            let fates = match endpoint {
                Ok(Some((socket, connected))) => udp_exchange(socket, *connected, queries, cap),
                Ok(None) => tcp_exchange(queries, cap),
                Err(_) => vec![
                    Fate::Unreachable {
                        after: Duration::ZERO
                    };
                    queries.len()
                ],
            };
            members.iter().copied().zip(fates).collect::<Vec<_>>()
        });
        let mut fates = vec![Fate::Silent; batch.len()];
        for (i, fate) in results.into_iter().flatten() {
            fates[i] = fate;
        }
        fates
    }
}

/// A query on the wire, waiting for its reply.
struct Pending<'q> {
    query: &'q Query,
    id: u16,
    sent: Instant,
    deadline: Instant,
    fate: Option<Fate>,
}

impl Pending<'_> {
    /// Whether `reply` answers this query: same id, a response, and the
    /// same question (name case-insensitively, type), or no question at
    /// all (servers send short error replies; musl matches by id only).
    fn matches(&self, reply: &Parsed) -> bool {
        self.fate.is_none()
            && reply.id == self.id
            && match &reply.question {
                None => true,
                Some(_) if self.query.malformed => true,
                Some((name, qtype)) => {
                    *qtype == self.query.qtype.code()
                        && name
                            .trim_end_matches('.')
                            .eq_ignore_ascii_case(self.query.qname.trim_end_matches('.'))
                }
            }
    }
}

/// Sends the messages from a connected socket in one sendmmsg call, as
/// glibc sends a lookup's A and AAAA queries: both leave within
/// microseconds even on a loaded machine, as the app's do. What the call
/// did not send goes out one by one (which also reports an error).
fn send_together(socket: &UdpSocket, wires: &[Vec<u8>]) -> Vec<io::Result<()>> {
    use std::os::fd::AsRawFd;
    let mut iovecs: Vec<libc::iovec> = wires
        .iter()
        .map(|w| libc::iovec {
            iov_base: w.as_ptr().cast_mut().cast(),
            iov_len: w.len(),
        })
        .collect();
    let mut messages: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let count = libc::c_uint::try_from(messages.len()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: the headers point at iovecs and buffers that outlive the call.
    let sent = unsafe { libc::sendmmsg(socket.as_raw_fd(), messages.as_mut_ptr(), count, 0) };
    let sent = usize::try_from(sent).unwrap_or(0);
    wires
        .iter()
        .enumerate()
        .map(|(i, wire)| {
            if i < sent {
                Ok(())
            } else {
                socket.send(wire).map(drop)
            }
        })
        .collect()
}

fn wait_of(query: &Query, cap: Duration) -> Duration {
    query.wait.map_or(cap, |w| w.min(cap))
}

/// Sends every query from `socket`, back to back, then reads replies until
/// each is answered or past its wait.
fn udp_exchange(
    socket: &UdpSocket,
    connected: bool,
    queries: &[&Query],
    cap: Duration,
) -> Vec<Fate> {
    let mut pending: Vec<Pending> = Vec::with_capacity(queries.len());
    let mut wires = Vec::with_capacity(queries.len());
    let sent = Instant::now();
    for query in queries {
        let id = unique_id(&pending);
        wires.push(encode(id, query));
        pending.push(Pending {
            query,
            id,
            sent,
            deadline: sent + wait_of(query, cap),
            fate: None,
        });
    }
    let results = if connected {
        send_together(socket, &wires)
    } else {
        wires
            .iter()
            .zip(queries)
            .map(|(wire, query)| socket.send_to(wire, query.server).map(drop))
            .collect()
    };
    for (p, result) in pending.iter_mut().zip(results) {
        if result.is_err() {
            p.fate = Some(Fate::Unreachable {
                after: Duration::ZERO,
            });
        }
    }
    let mut buf = vec![0u8; 65535];
    while let Some(until) = pending
        .iter()
        .filter(|p| p.fate.is_none())
        .map(|p| p.deadline)
        .max()
    {
        let now = Instant::now();
        if now >= until || socket.set_read_timeout(Some(until - now)).is_err() {
            break;
        }
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                let at = Instant::now();
                let Some(parsed) = buf.get(..len).and_then(parse) else {
                    continue;
                };
                if let Some(p) = pending
                    .iter_mut()
                    .find(|p| p.query.server == from && p.matches(&parsed))
                {
                    p.fate = Some(if at <= p.deadline {
                        Fate::Reply {
                            reply: parsed.reply,
                            after: at - p.sent,
                        }
                    } else {
                        Fate::Silent
                    });
                }
            }
            Err(e) if waited_out(&e) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                // An ICMP error ends every query still waiting on the socket.
                let at = Instant::now();
                for p in pending.iter_mut().filter(|p| p.fate.is_none()) {
                    p.fate = Some(Fate::Unreachable { after: at - p.sent });
                }
            }
        }
    }
    pending
        .into_iter()
        .map(|p| p.fate.unwrap_or(Fate::Silent))
        .collect()
}

/// One TCP connection to the queries' server: every query written at once
/// (as glibc's `send_vc`), replies read until all are in or the wait ends.
fn tcp_exchange(queries: &[&Query], cap: Duration) -> Vec<Fate> {
    let Some(first) = queries.first() else {
        return Vec::new();
    };
    let start = Instant::now();
    let wait = queries.iter().map(|q| wait_of(q, cap)).max().unwrap_or(cap);
    let deadline = crate::clock::later(start, wait);
    let all = |fate: Fate| vec![fate; queries.len()];
    let mut stream = match TcpStream::connect_timeout(&first.server, wait) {
        Ok(stream) => stream,
        Err(e) if waited_out(&e) => return all(Fate::Silent),
        Err(_) => {
            return all(Fate::Unreachable {
                after: start.elapsed(),
            })
        }
    };
    let mut pending: Vec<Pending> = Vec::new();
    let mut frames = Vec::new();
    for query in queries {
        let id = unique_id(&pending);
        let wire = encode(id, query);
        frames.extend_from_slice(&u16::try_from(wire.len()).unwrap_or(u16::MAX).to_be_bytes());
        frames.extend_from_slice(&wire);
        pending.push(Pending {
            query,
            id,
            sent: start,
            deadline,
            fate: None,
        });
    }
    let _ = stream.set_write_timeout(Some(wait));
    if stream.write_all(&frames).is_err() {
        return all(Fate::Unreachable {
            after: start.elapsed(),
        });
    }
    while pending.iter().any(|p| p.fate.is_none()) {
        let now = Instant::now();
        if now >= deadline || stream.set_read_timeout(Some(deadline - now)).is_err() {
            break;
        }
        let mut len = [0u8; 2];
        let mut frame = Vec::new();
        let read = stream.read_exact(&mut len).and_then(|()| {
            frame.resize(usize::from(u16::from_be_bytes(len)), 0);
            stream.read_exact(&mut frame)
        });
        match read {
            Ok(()) => {
                let at = Instant::now();
                if let Some(parsed) = parse(&frame) {
                    if let Some(p) = pending.iter_mut().find(|p| p.matches(&parsed)) {
                        p.fate = Some(Fate::Reply {
                            reply: parsed.reply,
                            after: at - p.sent,
                        });
                    }
                }
            }
            Err(e) if waited_out(&e) => break,
            Err(_) => {
                // Closed or reset before answering everything.
                let after = start.elapsed();
                for p in pending.iter_mut().filter(|p| p.fate.is_none()) {
                    p.fate = Some(Fate::Unreachable { after });
                }
            }
        }
    }
    pending
        .into_iter()
        .map(|p| p.fate.unwrap_or(Fate::Silent))
        .collect()
}

/// A read or connect that ended because its time was up.
fn waited_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A random query id. std's hasher keys come from the getrandom system
/// call, which needs no /dev/urandom: an image built from scratch may have
/// none.
fn random_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    hasher.finish() as u16
}

fn unique_id(pending: &[Pending]) -> u16 {
    let mut id = random_id();
    while pending.iter().any(|p| p.id == id) {
        id = random_id();
    }
    id
}

/// A query message: RD set, the AD bit and an OPT record as the query
/// says, class IN.
pub fn encode(id: u16, query: &Query) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&id.to_be_bytes());
    out.push(0x01);
    out.push(if query.ad { 0x20 } else { 0 });
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(query.edns.is_some())]);
    let name = query.qname.strip_suffix('.').unwrap_or(&query.qname);
    if query.malformed {
        out.extend(musl_question(name, query.qtype));
    } else {
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(u8::try_from(label.len()).unwrap_or(63));
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out.extend_from_slice(&query.qtype.code().to_be_bytes());
        out.extend_from_slice(&[0, 1]);
    }
    if let Some(payload) = query.edns {
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&payload.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    out
}

/// The question section exactly as musl 1.2.3's `__res_mkquery` lays it
/// out for `name` (one trailing dot already stripped): a name still ending
/// in a dot keeps that dot as a byte, which the server reads as a label
/// length (the malformed query of `search .`).
fn musl_question(name: &str, qtype: Qtype) -> Vec<u8> {
    let l = name.len();
    // The query from byte 12 on: a length slot, the name, zeros.
    let mut q = vec![0u8; 1 + l + 5];
    q[1..=l].copy_from_slice(name.as_bytes());
    let mut i = 1;
    while i < q.len() && q[i] != 0 {
        let mut j = i;
        while j < q.len() && q[j] != 0 && q[j] != b'.' {
            j += 1;
        }
        q[i - 1] = u8::try_from(j - i).unwrap_or(u8::MAX);
        i = j + 1;
    }
    // musl stores the type in one byte (types above 255 are refused).
    if let Some(slot) = q.get_mut(i + 1) {
        *slot = u8::try_from(qtype.code()).unwrap_or(0);
    }
    if let Some(slot) = q.get_mut(i + 3) {
        *slot = 1;
    }
    q
}

/// A reply as read off the wire.
#[derive(Debug)]
pub(crate) struct Parsed {
    id: u16,
    /// The first question's name and type; `None` for a reply without one.
    question: Option<(String, u16)>,
    reply: Reply,
}

/// Reads a response's header (flags and counts as sent, so the additional
/// count includes an OPT record, as glibc sees it) and its address records.
/// Anything that is not a response is `None`.
pub(crate) fn parse(data: &[u8]) -> Option<Parsed> {
    let header = data.get(..12)?;
    if header[2] & 0x80 == 0 {
        return None;
    }
    let count = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    let mut reply = Reply {
        rcode: u16::from(header[3] & 0x0f),
        addresses: Vec::new(),
        answer_count: count(6),
        additional_count: count(10),
        truncated: header[2] & 0x02 != 0,
        authoritative: header[2] & 0x04 != 0,
        recursion_available: header[3] & 0x80 != 0,
        question: count(4) > 0,
        size: data.len(),
    };
    // A reply whose question cannot be read is matched by its id only.
    let mut question = None;
    if let Ok(msg) = Message::from_vec(data) {
        question = msg
            .queries
            .first()
            .map(|q| (q.name().to_ascii(), u16::from(q.query_type())));
        for record in &msg.answers {
            match &record.data {
                RData::A(a) => reply.addresses.push(IpAddr::V4(a.0)),
                RData::AAAA(a) => reply.addresses.push(IpAddr::V6(a.0)),
                _ => {}
            }
        }
    }
    Some(Parsed {
        id: u16::from_be_bytes([header[0], header[1]]),
        question,
        reply,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcode_names_are_digs() {
        assert_eq!(rcode_name(0), "NOERROR");
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(2), "SERVFAIL");
        assert_eq!(rcode_name(9), "RCODE9");
    }

    #[test]
    fn names_are_validated_and_absolute() {
        assert!(parse_name("kubernetes.default").unwrap().is_fqdn());
        assert!(parse_name("a..b").is_err());
        assert!(parse_name(".").is_err());
        assert!(parse_name(&format!("{}.example", "a.".repeat(130))).is_err());
        assert!(parse_name(&"x".repeat(64)).is_err());
    }

    fn q(name: &str, qtype: Qtype) -> Query {
        plain(
            SocketAddr::from(([127, 0, 0, 1], 53)),
            name,
            qtype,
            Duration::from_secs(1),
        )
    }

    #[test]
    fn queries_are_encoded_as_the_libraries_do() {
        let mut query = q("web.default.", Qtype::A);
        let wire = encode(0x1234, &query);
        let msg = Message::from_vec(&wire).unwrap();
        assert_eq!(msg.metadata.id, 0x1234);
        assert!(msg.metadata.recursion_desired);
        assert_eq!(msg.queries[0].name().to_ascii(), "web.default.");
        assert!(msg.edns.is_none());
        query.edns = Some(1232);
        query.ad = true;
        query.qtype = Qtype::Aaaa;
        let msg = Message::from_vec(&encode(1, &query)).unwrap();
        assert_eq!(msg.edns.as_ref().map(|e| e.max_payload()), Some(1232));
        assert!(msg.metadata.authentic_data);
        assert_eq!(u16::from(msg.queries[0].query_type()), 28);
        // musl 1.2.3 and `search .`: 04 "api" 2e, then type and class.
        let mut musl = q("api..", Qtype::A);
        musl.malformed = true;
        let wire = encode(7, &musl);
        assert_eq!(&wire[12..], &[3, b'a', b'p', b'i', b'.', 0, 1, 0, 1, 0]);
        assert!(Message::from_vec(&wire).is_err());
        // The same routine lays out a well-formed name the standard way.
        assert_eq!(
            musl_question("api", Qtype::Aaaa),
            [3, b'a', b'p', b'i', 0, 0, 28, 0, 1]
        );
    }

    #[test]
    fn replies_are_read_from_the_header_and_answers() {
        let mut msg = Message::response(9, hickory_proto::op::OpCode::Query);
        msg.metadata.response_code = hickory_proto::op::ResponseCode::NXDomain;
        msg.metadata.truncation = true;
        msg.add_query(hickory_proto::op::Query::query(
            Name::from_ascii("a.example.").unwrap(),
            hickory_proto::rr::RecordType::A,
        ));
        let parsed = parse(&msg.to_vec().unwrap()).unwrap();
        assert_eq!(
            (parsed.id, parsed.reply.rcode, parsed.reply.truncated),
            (9, 3, true)
        );
        assert_eq!(parsed.question, Some(("a.example.".to_string(), 1)));
        let pending = Pending {
            query: &q("A.Example", Qtype::A),
            id: 9,
            sent: Instant::now(),
            deadline: Instant::now(),
            fate: None,
        };
        assert!(pending.matches(&parsed));
        let other = Pending { id: 10, ..pending };
        assert!(!other.matches(&parsed));
        // A query is not a reply.
        assert!(parse(&encode(1, &q("x.", Qtype::A))).is_none());
    }

    /// Whatever arrives on the socket, reading it never panics.
    #[test]
    fn random_bytes_as_replies_never_panic() {
        let valid = {
            let mut m = Message::response(0x1234, hickory_proto::op::OpCode::Query);
            m.add_query(hickory_proto::op::Query::query(
                Name::from_ascii("kubernetes.default.svc.cluster.local.").unwrap(),
                hickory_proto::rr::RecordType::A,
            ));
            m.to_vec().unwrap()
        };
        // xorshift: deterministic, no dependency.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let len = (next() % 600) as usize;
            let mut data: Vec<u8> = if round % 2 == 0 {
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut d = valid.clone();
                for _ in 0..1 + next() % 8 {
                    let i = (next() as usize) % d.len();
                    d[i] = next() as u8;
                }
                d.truncate(d.len().min(len.max(12)));
                d
            };
            if round % 7 == 0 {
                data.extend((0..next() % 64).map(|_| next() as u8));
            }
            let _ = parse(&data);
        }
    }

    /// A server that first sends garbage, a reply with the right id but the
    /// wrong question and an empty datagram, then the real reply: the client
    /// skips the strays and takes the reply, on the wire.
    #[test]
    fn strays_before_the_reply_are_ignored() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let responder = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (len, peer) = server.recv_from(&mut buf).unwrap();
            let query = Message::from_vec(&buf[..len]).unwrap();
            let id = query.metadata.id;
            let reply = |name: &str, rcode| {
                let mut m = Message::response(id, hickory_proto::op::OpCode::Query);
                m.metadata.response_code = rcode;
                m.add_query(hickory_proto::op::Query::query(
                    Name::from_ascii(name).unwrap(),
                    hickory_proto::rr::RecordType::A,
                ));
                m.to_vec().unwrap()
            };
            let mut garbage = buf[..len].to_vec();
            garbage[2] ^= 0xff;
            garbage.truncate(7);
            for stray in [
                garbage,
                Vec::new(),
                reply("other.example.", hickory_proto::op::ResponseCode::NoError),
                reply(
                    "web.default.svc.cluster.local.",
                    hickory_proto::op::ResponseCode::NXDomain,
                ),
            ] {
                server.send_to(&stray, peer).unwrap();
            }
        });
        let fate = query(
            addr,
            "web.default.svc.cluster.local.",
            Qtype::A,
            Duration::from_secs(2),
        );
        responder.join().unwrap();
        match fate {
            Fate::Reply { reply, after } => {
                assert_eq!(reply.rcode, 3);
                assert!(after < Duration::from_secs(1));
            }
            other => panic!("{other:?}"),
        }
    }

    /// Random datagrams only: the query times out at its deadline.
    #[test]
    fn only_garbage_is_a_timeout() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let responder = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (_, peer) = server.recv_from(&mut buf).unwrap();
            let mut state: u32 = 0x1234_5678;
            for n in 0..200 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let bytes: Vec<u8> = (0..n).map(|i| (state >> (i % 24)) as u8).collect();
                let _ = server.send_to(&bytes, peer);
            }
        });
        let start = Instant::now();
        let fate = query(
            addr,
            "kubernetes.default.svc.cluster.local.",
            Qtype::Aaaa,
            Duration::from_millis(300),
        );
        responder.join().unwrap();
        assert_eq!(fate, Fate::Silent);
        assert!(start.elapsed() >= Duration::from_millis(290));
    }

    /// Nothing listens: the connected socket sees the ICMP error.
    #[test]
    fn a_closed_port_is_unreachable_not_silent() {
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let fate = query(closed, "x.example.", Qtype::A, Duration::from_secs(2));
        assert!(
            matches!(fate, Fate::Unreachable { after } if after < Duration::from_secs(1)),
            "{fate:?}"
        );
    }
}
