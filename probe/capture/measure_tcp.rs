//! TCP seen on the wire: one small state record per connection, enough to
//! say who reset what, after how much traffic and how much idle time, and
//! to count retransmissions and zero windows. Pure: fed decoded segments.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::decode::flags::{ACK, FIN, RST, SYN};

const MAX_LISTED: usize = 50;

#[derive(Debug, Default)]
struct Conn {
    /// The two ends as first seen: index 0 sent the first segment (the
    /// client when the SYN was captured).
    ends: [Option<SocketAddr>; 2],
    syn: bool,
    syn_ack: bool,
    handshake_done: bool,
    /// Payload bytes sent by each end.
    bytes: [u64; 2],
    /// The highest sequence number each end has sent up to, once known.
    seq_end: [Option<u32>; 2],
    fin: [bool; 2],
    /// An end sent payload after the other end's FIN: a request into a
    /// connection the peer was closing.
    data_after_peer_fin: [bool; 2],
    packets: u64,
    last_us: i64,
    reset: bool,
}

impl Conn {
    fn established(&self) -> bool {
        self.handshake_done || (self.bytes[0] > 0 && self.bytes[1] > 0)
    }
}

/// A TCP segment as the tracker needs it.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment {
    pub ts_us: i64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub flags: u8,
    pub window: u16,
    /// Payload length on the wire.
    pub len: u32,
}

#[derive(Debug, Default)]
pub struct TcpTracker {
    conns: HashMap<(SocketAddr, SocketAddr), Conn>,
    connections: u64,
    resets: Vec<Reset>,
    resets_total: u64,
    retransmissions: u64,
    zero_windows: u64,
}

impl TcpTracker {
    pub fn observe(&mut self, seg: TcpSegment) {
        let key = if seg.src <= seg.dst {
            (seg.src, seg.dst)
        } else {
            (seg.dst, seg.src)
        };
        let is_syn = seg.flags & SYN != 0 && seg.flags & ACK == 0;
        let conn = self.conns.entry(key).or_default();
        // A fresh SYN on a 4-tuple that was closed or reset starts a new
        // connection.
        if conn.ends[0].is_none() || (is_syn && (conn.reset || (conn.fin[0] && conn.fin[1]))) {
            *conn = Conn {
                ends: [Some(seg.src), Some(seg.dst)],
                ..Conn::default()
            };
            self.connections += 1;
        }
        let me = usize::from(conn.ends[0] != Some(seg.src));
        let peer = 1 - me;
        let idle_us = seg.ts_us - conn.last_us;
        let first_packet = conn.packets == 0;
        conn.packets += 1;

        // Sequence space this segment occupies: payload plus SYN and FIN.
        let occupies = seg.len + u32::from(seg.flags & SYN != 0) + u32::from(seg.flags & FIN != 0);
        if seg.flags & RST == 0 && occupies > 0 {
            if let Some(end) = conn.seq_end[me] {
                let new_end = seg.seq.wrapping_add(occupies);
                let keepalive =
                    seg.len <= 1 && seg.flags & (SYN | FIN) == 0 && seg.seq == end.wrapping_sub(1);
                if !keepalive && seq_le(new_end, end) {
                    self.retransmissions += 1;
                }
            }
        }
        if seg.flags & RST == 0 {
            let new_end = seg.seq.wrapping_add(occupies);
            conn.seq_end[me] = Some(match conn.seq_end[me] {
                Some(end) if seq_le(new_end, end) => end,
                _ => new_end,
            });
        }
        if seg.window == 0 && seg.flags & (SYN | FIN | RST) == 0 {
            self.zero_windows += 1;
        }

        if is_syn {
            conn.syn = true;
        } else if seg.flags & SYN != 0 {
            conn.syn_ack = conn.syn;
        } else if conn.syn_ack && seg.flags & ACK != 0 {
            conn.handshake_done = true;
        }
        if seg.len > 0 && seg.flags & RST == 0 {
            if conn.fin[peer] {
                conn.data_after_peer_fin[me] = true;
            }
            conn.bytes[me] += u64::from(seg.len);
        }
        if seg.flags & FIN != 0 {
            conn.fin[me] = true;
        }
        if seg.flags & RST != 0 {
            self.resets_total += 1;
            if self.resets.len() < MAX_LISTED {
                self.resets.push(Reset {
                    from: seg.src,
                    to: seg.dst,
                    after_bytes: conn.bytes[0] + conn.bytes[1],
                    idle_ms: (!first_packet).then(|| idle_us as f64 / 1000.0),
                    established: conn.established(),
                    request_after_fin: conn.fin[me] && conn.data_after_peer_fin[peer],
                });
            }
            conn.reset = true;
        }
        conn.last_us = seg.ts_us;
    }

    pub fn finish(self) -> TcpEvidence {
        TcpEvidence {
            connections: self.connections,
            resets: self.resets,
            resets_total: self.resets_total,
            retransmissions: self.retransmissions,
            zero_windows: self.zero_windows,
        }
    }
}

/// `a <= b` in 32-bit sequence space (RFC 1982 serial arithmetic).
fn seq_le(a: u32, b: u32) -> bool {
    b.wrapping_sub(a) < 1 << 31
}

/// Evidence of `capture.tcp`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpEvidence {
    /// Distinct connections (4-tuples; a new SYN after a close counts again).
    pub connections: u64,
    /// The first resets seen (at most 50; `resets_total` counts them all).
    pub resets: Vec<Reset>,
    pub resets_total: u64,
    pub retransmissions: u64,
    pub zero_windows: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reset {
    /// Who sent the RST, and to whom.
    pub from: SocketAddr,
    pub to: SocketAddr,
    /// Payload bytes both ends had sent on the connection before it.
    pub after_bytes: u64,
    /// Time since the connection's previous packet; absent when the RST is
    /// the first packet seen of it.
    pub idle_ms: Option<f64>,
    /// The connection had completed its handshake or carried data both ways.
    pub established: bool,
    /// The resetting end had sent FIN and the peer still sent a request:
    /// the keep-alive race between an idle timeout and a reused connection.
    pub request_after_fin: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "10.0.0.5:40000";
    const S: &str = "10.0.0.9:80";

    fn seg(ms: i64, from_client: bool, seq: u32, flags: u8, len: u32) -> TcpSegment {
        let (c, s) = (C.parse().unwrap(), S.parse().unwrap());
        let (src, dst) = if from_client { (c, s) } else { (s, c) };
        TcpSegment {
            ts_us: ms * 1000,
            src,
            dst,
            seq,
            flags,
            window: 500,
            len,
        }
    }

    fn handshake(t: &mut TcpTracker) {
        t.observe(seg(1, true, 100, SYN, 0));
        t.observe(seg(2, false, 500, SYN | ACK, 0));
        t.observe(seg(3, true, 101, ACK, 0));
    }

    #[test]
    fn reset_after_idle_on_an_established_connection() {
        let mut t = TcpTracker::default();
        handshake(&mut t);
        t.observe(seg(4, true, 101, ACK, 10));
        t.observe(seg(5, false, 501, ACK, 20));
        t.observe(seg(1005, false, 521, RST | ACK, 0));
        let ev = t.finish();
        assert_eq!(ev.connections, 1);
        assert_eq!(ev.resets.len(), 1);
        let r = &ev.resets[0];
        assert_eq!(r.from, S.parse().unwrap());
        assert_eq!(r.after_bytes, 30);
        assert_eq!(r.idle_ms, Some(1000.0));
        assert!(r.established && !r.request_after_fin);
    }

    #[test]
    fn request_after_the_peers_fin_is_flagged() {
        let mut t = TcpTracker::default();
        handshake(&mut t);
        t.observe(seg(10, false, 501, FIN | ACK, 0));
        t.observe(seg(11, true, 101, ACK, 50));
        t.observe(seg(12, false, 502, RST, 0));
        let ev = t.finish();
        assert!(ev.resets[0].request_after_fin);
    }

    #[test]
    fn counts_retransmissions_but_not_keepalives_and_zero_windows() {
        let mut t = TcpTracker::default();
        handshake(&mut t);
        t.observe(seg(4, true, 101, ACK, 100));
        t.observe(seg(5, true, 101, ACK, 100));
        t.observe(seg(6, true, 200, ACK, 0));
        t.observe(seg(7, true, 200, ACK, 1));
        let mut zero = seg(8, false, 501, ACK, 0);
        zero.window = 0;
        t.observe(zero);
        let ev = t.finish();
        assert_eq!(ev.retransmissions, 1);
        assert_eq!(ev.zero_windows, 1);
    }

    #[test]
    fn a_lone_reset_is_not_established_and_has_no_idle_time() {
        let mut t = TcpTracker::default();
        t.observe(seg(0, false, 1, RST | ACK, 0));
        let ev = t.finish();
        assert_eq!(ev.connections, 1);
        assert_eq!(ev.resets[0].idle_ms, None);
        assert!(!ev.resets[0].established);
    }

    #[test]
    fn a_new_syn_after_a_reset_is_a_new_connection() {
        let mut t = TcpTracker::default();
        handshake(&mut t);
        t.observe(seg(4, false, 501, RST, 0));
        handshake(&mut t);
        assert_eq!(t.finish().connections, 2);
    }
}
