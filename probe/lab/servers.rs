//! The DNS forwarders podprobe runs in the DNS pod (the slow-dns
//! scenario's delaying one, the misbehaving fronts of `lab::dns`) and a
//! DNS readiness probe.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

use super::dns::DnsMode;
use super::scenario::{SLOW_DNS_DELAY, SLOW_DNS_PORT};
use super::topology::{Pod, HOST_DOMAIN};
use crate::{Error, Result};

/// How long the forwarder waits for dnsmasq.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// `podprobe lab dns-delay ...` in front of the DNS pod's dnsmasq.
pub(crate) fn dns_delay_args() -> Vec<String> {
    [
        "lab",
        "dns-delay",
        "--listen",
        &format!("{}:{SLOW_DNS_PORT}", Pod::Dns.ip()),
        "--upstream",
        &format!("{}:53", Pod::Dns.ip()),
        "--suffix",
        HOST_DOMAIN,
        "--delay",
        &format!("{}ms", SLOW_DNS_DELAY.as_millis()),
    ]
    .map(String::from)
    .to_vec()
}

/// Forwards DNS over UDP to `upstream`, holding answers for names under
/// `suffix` back by `delay`: a resolver that is slow for one domain only.
pub fn serve_dns_delay(
    listen: SocketAddr,
    upstream: SocketAddr,
    suffix: &str,
    delay: Duration,
) -> Result<()> {
    let suffix = suffix.trim_end_matches('.').to_ascii_lowercase();
    serve_front(listen, upstream, None, move |query, answer| {
        let slow = query_name(query)
            .is_some_and(|name| name == suffix || name.ends_with(&format!(".{suffix}")));
        if slow {
            std::thread::sleep(delay);
        }
        Some(answer)
    })
}

/// Forwards DNS to `upstream` and misbehaves on the way back, as `mode`
/// says: SERVFAIL for every query (UDP and TCP), UDP answers truncated
/// (TC, no records), or replies sent from `reply_from` (a wrong port or
/// address). Any other mode passes answers through.
pub fn serve_dns_front(
    listen: SocketAddr,
    upstream: SocketAddr,
    mode: DnsMode,
    reply_from: Option<SocketAddr>,
) -> Result<()> {
    if mode == DnsMode::Servfail {
        let tcp =
            TcpListener::bind(listen).map_err(|e| Error::io(format!("binding {listen}/tcp"), e))?;
        std::thread::spawn(move || serve_tcp_servfail(&tcp, upstream));
    }
    serve_front(listen, upstream, reply_from, move |_, answer| match mode {
        DnsMode::Servfail => rewrite(&answer, 2, false),
        DnsMode::TruncateUdp => rewrite(&answer, answer.get(3).map_or(0, |b| b & 0x0f), true),
        _ => Some(answer),
    })
}

/// UDP forwarding with `alter` applied to each answer (`None` drops it),
/// one thread per query; replies leave from `reply_from` when given.
fn serve_front(
    listen: SocketAddr,
    upstream: SocketAddr,
    reply_from: Option<SocketAddr>,
    alter: impl Fn(&[u8], Vec<u8>) -> Option<Vec<u8>> + Send + Sync + 'static,
) -> Result<()> {
    let socket = UdpSocket::bind(listen).map_err(|e| Error::io(format!("binding {listen}"), e))?;
    let replies = match reply_from {
        Some(from) => UdpSocket::bind(from).map_err(|e| Error::io(format!("binding {from}"), e))?,
        None => socket
            .try_clone()
            .map_err(|e| Error::io(format!("cloning {listen}"), e))?,
    };
    eprintln!(
        "podprobe: {} from {listen} to {upstream}",
        super::dns::FRONT_READY
    );
    let replies = std::sync::Arc::new(replies);
    let alter = std::sync::Arc::new(alter);
    let mut buf = [0u8; 4096];
    loop {
        let (len, client) = socket
            .recv_from(&mut buf)
            .map_err(|e| Error::io(format!("receiving on {listen}"), e))?;
        let query = buf[..len].to_vec();
        let (replies, alter) = (
            std::sync::Arc::clone(&replies),
            std::sync::Arc::clone(&alter),
        );
        std::thread::spawn(move || {
            if let Some(answer) = exchange(upstream, &query, UPSTREAM_TIMEOUT) {
                if let Some(reply) = alter(&query, answer) {
                    let _ = replies.send_to(&reply, client);
                }
            }
        });
    }
}

/// SERVFAIL over TCP: each length-prefixed query is asked of `upstream`
/// over UDP and answered SERVFAIL with the server's header and question.
fn serve_tcp_servfail(listener: &TcpListener, upstream: SocketAddr) {
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(UPSTREAM_TIMEOUT));
            loop {
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).is_err() {
                    return;
                }
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if stream.read_exact(&mut query).is_err() {
                    return;
                }
                let Some(reply) = exchange(upstream, &query, UPSTREAM_TIMEOUT)
                    .and_then(|answer| rewrite(&answer, 2, false))
                else {
                    return;
                };
                let mut frame = u16::try_from(reply.len())
                    .unwrap_or(0)
                    .to_be_bytes()
                    .to_vec();
                frame.extend(reply);
                if stream.write_all(&frame).is_err() {
                    return;
                }
            }
        });
    }
}

/// `answer` cut to its header and question, with `rcode` and the TC bit
/// as given: what servers send when they fail or truncate.
fn rewrite(answer: &[u8], rcode: u8, truncated: bool) -> Option<Vec<u8>> {
    let header = answer.get(..12)?;
    let questions = u16::from_be_bytes([header[4], header[5]]);
    let mut end = 12;
    for _ in 0..questions {
        loop {
            let len = *answer.get(end)?;
            if len & 0xc0 == 0xc0 {
                end += 2;
                break;
            }
            end += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        end += 4;
    }
    let mut out = answer.get(..end)?.to_vec();
    out[2] = if truncated {
        out[2] | 0x02
    } else {
        out[2] & !0x02
    };
    out[3] = (out[3] & 0xf0) | (rcode & 0x0f);
    out[6..12].fill(0);
    Some(out)
}

/// The first question's name, lower case, without the trailing dot.
fn query_name(packet: &[u8]) -> Option<String> {
    let message = Message::from_vec(packet).ok()?;
    let name = message.queries.first()?.name().to_ascii();
    Some(name.trim_end_matches('.').to_ascii_lowercase())
}

/// One UDP exchange with a DNS server, bounded by `timeout`.
pub(crate) fn exchange(server: SocketAddr, query: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    socket.set_read_timeout(Some(timeout)).ok()?;
    socket.connect(server).ok()?;
    socket.send(query).ok()?;
    let mut buf = vec![0u8; 4096];
    let len = socket.recv(&mut buf).ok()?;
    buf.truncate(len);
    Some(buf)
}

/// True when a DNS server at `addr` answers a query for the lab's DNS
/// Service with `rcode`: NOERROR for a server with the lab's records,
/// REFUSED for one told to refuse. While named still loads its zones it
/// answers SERVFAIL or REFUSED, so any other reply is not ready yet.
pub(crate) fn dns_answers(addr: SocketAddr, rcode: u8, timeout: Duration) -> bool {
    let Ok(name) = Name::from_ascii(super::Service::KubeDns.fqdn()) else {
        return false;
    };
    let mut message = Message::query();
    message.add_query(Query::query(name, RecordType::A));
    message.metadata.recursion_desired = true;
    let Ok(packet) = message.to_vec() else {
        return false;
    };
    exchange(addr, &packet, timeout)
        .is_some_and(|reply| reply.get(3).is_some_and(|b| b & 0x0f == rcode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_keep_header_and_question_only() {
        let mut answer = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 1];
        answer.extend([3, b'w', b'e', b'b', 0, 0, 1, 0, 1]);
        answer.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 0, 0, 1]);
        let servfail = rewrite(&answer, 2, false).unwrap();
        assert_eq!(servfail.len(), 21);
        assert_eq!(servfail[3] & 0x0f, 2);
        assert_eq!(&servfail[6..12], &[0; 6]);
        let truncated = rewrite(&answer, 0, true).unwrap();
        assert_eq!(truncated[2] & 0x02, 0x02);
        assert_eq!(truncated[3] & 0x0f, 0);
        assert!(rewrite(&answer[..14], 2, false).is_none());
        assert!(rewrite(&[], 2, false).is_none());
    }
}
