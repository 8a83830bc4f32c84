//! The slow-dns scenario's delaying DNS forwarder, run as a podprobe process
//! in the DNS pod, and a DNS readiness probe.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

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
    let socket = UdpSocket::bind(listen).map_err(|e| Error::io(format!("binding {listen}"), e))?;
    let suffix = suffix.trim_end_matches('.').to_ascii_lowercase();
    let mut buf = [0u8; 4096];
    loop {
        let (len, client) = socket
            .recv_from(&mut buf)
            .map_err(|e| Error::io(format!("receiving on {listen}"), e))?;
        let query = buf[..len].to_vec();
        let Ok(reply_socket) = socket.try_clone() else {
            continue;
        };
        let slow = query_name(&query)
            .is_some_and(|name| name == suffix || name.ends_with(&format!(".{suffix}")));
        std::thread::spawn(move || {
            if slow {
                std::thread::sleep(delay);
            }
            if let Some(answer) = exchange(upstream, &query, UPSTREAM_TIMEOUT) {
                let _ = reply_socket.send_to(&answer, client);
            }
        });
    }
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

/// True when a DNS server at `addr` answers a query for the lab's DNS Service.
pub(crate) fn dns_answers(addr: SocketAddr, timeout: Duration) -> bool {
    let Ok(name) = Name::from_ascii(super::Service::KubeDns.fqdn()) else {
        return false;
    };
    let mut message = Message::query();
    message.add_query(Query::query(name, RecordType::A));
    message.metadata.recursion_desired = true;
    let Ok(packet) = message.to_vec() else {
        return false;
    };
    exchange(addr, &packet, timeout).is_some()
}
