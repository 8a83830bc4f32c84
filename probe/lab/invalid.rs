//! The invalid-reset scenario (kubernetes#74839): a backend sends a segment
//! that the node's conntrack finds outside the TCP window it tracks. With
//! `nf_conntrack_tcp_be_liberal` 0 conntrack marks it INVALID; with no rule
//! dropping INVALID packets it is forwarded, but an INVALID packet skips the
//! reverse NAT, so the client receives it from the backend pod's own
//! address, on the port of its connection to the Service VIP. The client's
//! kernel has no such connection and answers RST; that RST reaches the
//! backend and kills its side of the connection; the client's next request
//! to the VIP is answered by RST: "connection reset by peer".
//!
//! Everything after the segment is the real kernel: conntrack, NAT, both TCP
//! stacks. The segment itself is what production produces under load
//! (a retransmission or a reordered segment conntrack's window tracking
//! rejects); here a watcher in each backend pod sends, once per
//! connection, a copy of the backend's first response segment moved 2^30
//! bytes ahead in sequence space, from the backend's own interface.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use pcap::{Capture, Direction};

use crate::{Error, Result};

/// How far ahead the copy is moved: beyond any window conntrack tracks.
const SEQ_AHEAD: u32 = 1 << 30;
/// Connections remembered (each gets one stray segment).
const MAX_REMEMBERED: usize = 65_536;
const ETHERNET_LEN: usize = 14;

/// `podprobe lab out-of-window ...` in a backend pod.
pub(crate) fn out_of_window_args(port: u16) -> Vec<String> {
    [
        "lab",
        "out-of-window",
        "--interface",
        "eth0",
        "--port",
        &port.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// Watches `interface` for segments carrying data from local `port` and
/// sends, once per connection, an out-of-window copy. Runs until killed.
pub fn serve_out_of_window(interface: &str, port: u16) -> Result<()> {
    let unavailable =
        |e: pcap::Error| Error::unavailable(format!("out-of-window on {interface}: {e}"));
    let mut cap = Capture::from_device(interface)
        .and_then(|c| c.immediate_mode(true).snaplen(65_535).open())
        .map_err(unavailable)?;
    cap.direction(Direction::Out).map_err(unavailable)?;
    // Outgoing IPv4 TCP from `port` with a payload.
    let filter = format!(
        "ip and tcp src port {port} and (ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2)) > 0"
    );
    cap.filter(&filter, true).map_err(unavailable)?;
    println!("watching {interface} for data segments from port {port}");
    let mut seen: HashSet<(Ipv4Addr, u16)> = HashSet::new();
    loop {
        let frame = match cap.next_packet() {
            Ok(packet) => packet.data.to_vec(),
            Err(pcap::Error::TimeoutExpired) => continue,
            Err(e) => return Err(unavailable(e)),
        };
        let Some((client, copy)) = out_of_window(&frame) else {
            continue;
        };
        if seen.len() >= MAX_REMEMBERED {
            seen.clear();
        }
        if seen.insert(client) {
            cap.sendpacket(copy).map_err(unavailable)?;
            println!("sent an out-of-window segment to {}:{}", client.0, client.1);
        }
    }
}

/// From an Ethernet/IPv4/TCP frame, the same segment with its sequence
/// number moved [`SEQ_AHEAD`] and its checksums fixed, and the peer it goes
/// to. `None` for anything else.
pub fn out_of_window(frame: &[u8]) -> Option<((Ipv4Addr, u16), Vec<u8>)> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip_at = ETHERNET_LEN;
    let ihl = usize::from(frame.get(ip_at)? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([
        *frame.get(ip_at + 2)?,
        *frame.get(ip_at + 3)?,
    ]));
    if ihl < 20
        || frame.get(ip_at + 9) != Some(&6)
        || frame.len() < ip_at + total
        || total < ihl + 20
    {
        return None;
    }
    let mut copy = frame[..ip_at + total].to_vec();
    let tcp_at = ip_at + ihl;
    let dst = Ipv4Addr::new(
        copy[ip_at + 16],
        copy[ip_at + 17],
        copy[ip_at + 18],
        copy[ip_at + 19],
    );
    let dst_port = u16::from_be_bytes([copy[tcp_at + 2], copy[tcp_at + 3]]);
    let seq = u32::from_be_bytes(copy[tcp_at + 4..tcp_at + 8].try_into().ok()?);
    copy[tcp_at + 4..tcp_at + 8].copy_from_slice(&seq.wrapping_add(SEQ_AHEAD).to_be_bytes());
    // A new IP id, as a separate packet has.
    let id = u16::from_be_bytes([copy[ip_at + 4], copy[ip_at + 5]]).wrapping_add(1);
    copy[ip_at + 4..ip_at + 6].copy_from_slice(&id.to_be_bytes());
    copy[ip_at + 10..ip_at + 12].copy_from_slice(&[0, 0]);
    let ip_sum = checksum(&copy[ip_at..ip_at + ihl], 0);
    copy[ip_at + 10..ip_at + 12].copy_from_slice(&ip_sum.to_be_bytes());
    copy[tcp_at + 16..tcp_at + 18].copy_from_slice(&[0, 0]);
    let tcp_len = total - ihl;
    let mut pseudo = 0u32;
    for pair in copy[ip_at + 12..ip_at + 20].chunks(2) {
        pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    pseudo += 6 + tcp_len as u32;
    let tcp_sum = checksum(&copy[tcp_at..tcp_at + tcp_len], pseudo);
    copy[tcp_at + 16..tcp_at + 18].copy_from_slice(&tcp_sum.to_be_bytes());
    Some(((dst, dst_port), copy))
}

/// Two HTTP requests on one keep-alive connection to `addr` (the web
/// Service): with this scenario the second is answered by a reset.
pub fn two_requests(addr: std::net::SocketAddr) -> std::io::Result<()> {
    use std::io::{Read, Write};
    use std::time::Duration;
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(3)))?;
    let request = b"GET / HTTP/1.1\r\nHost: web.default\r\n\r\n";
    let mut buf = [0u8; 4096];
    for i in 0..2 {
        if i == 1 {
            std::thread::sleep(Duration::from_millis(500));
        }
        conn.write_all(request)?;
        if conn.read(&mut buf)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// The Internet checksum of `bytes`, starting from `sum`.
fn checksum(bytes: &[u8], mut sum: u32) -> u16 {
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backend's response segment as captured in the lab: Ethernet,
    /// IPv4 10.244.0.12 -> 10.244.0.2, TCP 8080 -> 49384, 4 bytes.
    fn frame() -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[
            0x45, 0, 0, 44, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 244, 0, 12, 10, 244, 0, 2,
        ]);
        let sum = checksum(&f[14..34], 0);
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&[
            0x1f, 0x90, 0xc0, 0xe8, 0x91, 0x5e, 0x72, 0x09, 0x96, 0x5a, 0x73, 0xaa,
        ]);
        f.extend_from_slice(&[0x50, 0x18, 0, 64, 0, 0, 0, 0]);
        f.extend_from_slice(b"HTTP");
        f
    }

    /// A packet's checksum over itself (with the checksum field) is zero.
    fn verifies(bytes: &[u8], pseudo: u32) -> bool {
        checksum(bytes, pseudo) == 0
    }

    #[test]
    fn the_copy_is_a_billion_bytes_ahead_with_valid_checksums() {
        let original = frame();
        let ((client, port), copy) = out_of_window(&original).unwrap();
        assert_eq!((client, port), (Ipv4Addr::new(10, 244, 0, 2), 49384));
        let seq = |f: &[u8]| u32::from_be_bytes(f[38..42].try_into().unwrap());
        assert_eq!(seq(&copy), seq(&original).wrapping_add(1 << 30));
        assert!(verifies(&copy[14..34], 0));
        let mut pseudo = 0u32;
        for pair in copy[26..34].chunks(2) {
            pseudo += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        pseudo += 6 + 24;
        assert!(verifies(&copy[34..], pseudo));
        assert_eq!(&copy[54..], b"HTTP");
        assert!(out_of_window(&original[..30]).is_none());
    }
}
