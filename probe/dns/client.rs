//! podprobe's own DNS client: one question per message over UDP, timed on
//! the wire, no cache and no retries, so every query a measurement reports
//! is one that was really sent. It can send the way glibc does (several
//! questions back to back from one socket) or one question per socket.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

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

/// How one query ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A reply matching the query's id and question arrived.
    Reply {
        rcode: u16,
        answers: usize,
        truncated: bool,
    },
    /// Nothing matching arrived before the deadline.
    Timeout,
    /// The socket failed (e.g. ICMP port unreachable: connection refused).
    Error(String),
}

/// One query sent and what came back.
#[derive(Debug, Clone)]
pub struct Sent {
    pub server: SocketAddr,
    pub qtype: RecordType,
    pub outcome: Outcome,
    /// From the send to the reply (or to giving up).
    pub elapsed: Duration,
}

impl Sent {
    /// The rcode as dig prints it, or `TIMEOUT` / `ERROR`.
    pub fn rcode_label(&self) -> String {
        match &self.outcome {
            Outcome::Reply { rcode, .. } => rcode_name(*rcode),
            Outcome::Timeout => "TIMEOUT".to_string(),
            Outcome::Error(_) => "ERROR".to_string(),
        }
    }
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

/// One question on its own new socket: what `single-request-reopen` and
/// most non-glibc resolvers do.
pub fn query(server: SocketAddr, name: &Name, qtype: RecordType, timeout: Duration) -> Sent {
    query_same_socket(server, name, &[qtype], timeout)
        .pop()
        .unwrap_or(Sent {
            server,
            qtype,
            outcome: Outcome::Error("no query sent".into()),
            elapsed: Duration::ZERO,
        })
}

/// Every question for `name` at once, each from its own socket (as
/// resolvers without the shared-socket pattern do): per-query latency
/// without the conntrack race of [`query_same_socket`].
pub fn query_each_socket(
    server: SocketAddr,
    name: &Name,
    qtypes: &[RecordType],
    timeout: Duration,
) -> Vec<Sent> {
    in_parallel(qtypes, |&qtype| query(server, name, qtype, timeout))
}

/// `f` over `items`, each on its own thread, results in the items' order.
/// Measurements run in parallel so that one slow server or query type does
/// not delay the timing of the others.
pub fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = items.iter().map(|item| scope.spawn(|| f(item))).collect();
        // The closures do not panic; a thread that did would be left out.
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

/// glibc's pattern: every question for `name` sent back to back from one
/// socket (same source port), then replies collected until all matched or
/// `timeout` after the last send. Stray or mismatched packets are ignored.
pub fn query_same_socket(
    server: SocketAddr,
    name: &Name,
    qtypes: &[RecordType],
    timeout: Duration,
) -> Vec<Sent> {
    let failed = |e: io::Error| {
        qtypes
            .iter()
            .map(|&qtype| Sent {
                server,
                qtype,
                outcome: Outcome::Error(e.to_string()),
                elapsed: Duration::ZERO,
            })
            .collect()
    };
    let socket = match open(server) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let mut pending: Vec<Pending> = Vec::with_capacity(qtypes.len());
    for &qtype in qtypes {
        let (id, wire) = match encode(name, qtype, &pending) {
            Ok(m) => m,
            Err(e) => return failed(io::Error::new(io::ErrorKind::InvalidInput, e)),
        };
        let sent_at = Instant::now();
        if let Err(e) = socket.send(&wire) {
            return failed(e);
        }
        pending.push(Pending {
            id,
            qtype,
            sent_at,
            done: None,
        });
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 65535];
    while pending.iter().any(|p| p.done.is_none()) {
        let now = Instant::now();
        let Some(left) = deadline
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
        else {
            break;
        };
        if socket.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match socket.recv(&mut buf) {
            Ok(len) => {
                let at = Instant::now();
                let Some(data) = buf.get(..len) else { continue };
                if let Some((idx, outcome)) = match_reply(data, name, &pending) {
                    if let Some(p) = pending.get_mut(idx) {
                        p.done = Some((outcome, at - p.sent_at));
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // An ICMP error ends every query still waiting on the socket.
                let at = Instant::now();
                for p in pending.iter_mut().filter(|p| p.done.is_none()) {
                    p.done = Some((Outcome::Error(e.to_string()), at - p.sent_at));
                }
            }
        }
    }
    let end = Instant::now();
    pending
        .into_iter()
        .map(|p| {
            let (outcome, elapsed) = p
                .done
                .unwrap_or((Outcome::Timeout, end.saturating_duration_since(p.sent_at)));
            Sent {
                server,
                qtype: p.qtype,
                outcome,
                elapsed,
            }
        })
        .collect()
}

struct Pending {
    id: u16,
    qtype: RecordType,
    sent_at: Instant,
    done: Option<(Outcome, Duration)>,
}

/// A connected socket: the kernel drops datagrams from other addresses and
/// reports ICMP errors, as glibc's connected sockets do.
fn open(server: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(server)?;
    Ok(socket)
}

/// A random query id. std's hasher keys come from the getrandom system
/// call, which needs no /dev/urandom: an image built from scratch may have
/// none, and hickory's own random ids would panic there.
fn random_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u8(0);
    hasher.finish() as u16
}

/// A recursive query with a random id not used by `pending`.
fn encode(name: &Name, qtype: RecordType, pending: &[Pending]) -> Result<(u16, Vec<u8>), String> {
    let mut id = random_id();
    while pending.iter().any(|p| p.id == id) {
        id = random_id();
    }
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name.clone(), qtype));
    let wire = msg.to_vec().map_err(|e| e.to_string())?;
    Ok((msg.metadata.id, wire))
}

/// The pending query a datagram answers: same id, a response, and the same
/// question (name case-insensitively, type). Anything else is stray.
fn match_reply(data: &[u8], name: &Name, pending: &[Pending]) -> Option<(usize, Outcome)> {
    let msg = Message::from_vec(data).ok()?;
    if msg.metadata.message_type != MessageType::Response {
        return None;
    }
    let idx = pending
        .iter()
        .position(|p| p.done.is_none() && p.id == msg.metadata.id)?;
    let qtype = pending.get(idx)?.qtype;
    let [question] = msg.queries.as_slice() else {
        return None;
    };
    if question.query_type() != qtype || question.name() != name {
        return None;
    }
    Some((
        idx,
        Outcome::Reply {
            rcode: u16::from(msg.metadata.response_code),
            answers: msg.answers.len(),
            truncated: msg.metadata.truncation,
        },
    ))
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

    fn pending(id: u16, qtype: RecordType) -> Pending {
        Pending {
            id,
            qtype,
            sent_at: Instant::now(),
            done: None,
        }
    }

    #[test]
    fn replies_must_match_id_and_question() {
        let name = parse_name("web.default.svc.cluster.local").unwrap();
        let other = parse_name("other.example").unwrap();
        let reply = |id: u16, q: &Name, t: RecordType| {
            let mut m = Message::response(id, hickory_proto::op::OpCode::Query);
            m.metadata.response_code = hickory_proto::op::ResponseCode::NXDomain;
            m.add_query(Query::query(q.clone(), t));
            m.to_vec().unwrap()
        };
        let p = [pending(7, RecordType::A), pending(8, RecordType::AAAA)];
        assert_eq!(
            match_reply(&reply(8, &name, RecordType::AAAA), &name, &p),
            Some((
                1,
                Outcome::Reply {
                    rcode: 3,
                    answers: 0,
                    truncated: false
                }
            ))
        );
        assert_eq!(
            match_reply(&reply(9, &name, RecordType::A), &name, &p),
            None
        );
        assert_eq!(
            match_reply(&reply(7, &other, RecordType::A), &name, &p),
            None
        );
        assert_eq!(
            match_reply(&reply(7, &name, RecordType::AAAA), &name, &p),
            None
        );
        let upper = parse_name("WEB.default.svc.cluster.local").unwrap();
        assert!(match_reply(&reply(7, &upper, RecordType::A), &name, &p).is_some());
    }

    /// Whatever arrives on the socket, matching it never panics.
    #[test]
    fn random_bytes_as_replies_never_panic() {
        let name = parse_name("kubernetes.default.svc.cluster.local").unwrap();
        let p = [pending(0x1234, RecordType::A)];
        let valid = {
            let mut m = Message::response(0x1234, hickory_proto::op::OpCode::Query);
            m.add_query(Query::query(name.clone(), RecordType::A));
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
                // Mutations of a valid reply reach deeper into the parser.
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
            let _ = match_reply(&data, &name, &p);
        }
    }

    /// A server that first sends garbage, a reply with the right id but the
    /// wrong question and an empty datagram, then the real reply: the client
    /// skips the strays and takes the reply, on the wire.
    #[test]
    fn strays_before_the_reply_are_ignored() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let name = parse_name("web.default.svc.cluster.local").unwrap();
        let wrong = parse_name("other.example").unwrap();
        let responder = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (len, peer) = server.recv_from(&mut buf).unwrap();
            let query = Message::from_vec(&buf[..len]).unwrap();
            let id = query.metadata.id;
            let reply = |q: &Name, rcode| {
                let mut m = Message::response(id, hickory_proto::op::OpCode::Query);
                m.metadata.response_code = rcode;
                m.add_query(Query::query(q.clone(), RecordType::A));
                m.to_vec().unwrap()
            };
            let mut garbage = buf[..len].to_vec();
            garbage[2] ^= 0xff;
            garbage.truncate(7);
            for stray in [
                garbage,
                Vec::new(),
                reply(&wrong, hickory_proto::op::ResponseCode::NoError),
                reply(
                    query.queries[0].name(),
                    hickory_proto::op::ResponseCode::NXDomain,
                ),
            ] {
                server.send_to(&stray, peer).unwrap();
            }
        });
        let sent = query(addr, &name, RecordType::A, Duration::from_secs(2));
        responder.join().unwrap();
        assert_eq!(
            sent.outcome,
            Outcome::Reply {
                rcode: 3,
                answers: 0,
                truncated: false
            }
        );
        assert!(sent.elapsed < Duration::from_secs(1));
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
        let name = parse_name("kubernetes.default.svc.cluster.local").unwrap();
        let sent = query(addr, &name, RecordType::AAAA, Duration::from_millis(300));
        responder.join().unwrap();
        assert_eq!(sent.outcome, Outcome::Timeout);
        assert!(
            sent.elapsed >= Duration::from_millis(290),
            "{:?}",
            sent.elapsed
        );
    }
}
