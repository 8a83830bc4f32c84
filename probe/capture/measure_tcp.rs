//! TCP seen on the wire: one small state record per connection, enough to
//! say which connects were refused or never answered, which segments were
//! retransmitted without an acknowledgement and for how long, which
//! receivers held a zero window and for how long, who reset what and when
//! in the connection's life, and the escaped-DNAT reset (a segment from an
//! address the client never connected to, on the port of its connection to
//! a Service). Bounded: connections live in a capped table, evicted ones are
//! finalised and counted. Pure: fed decoded segments.

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::bounded;
use super::decode::flags::{ACK, FIN, RST, SYN};
use super::decode::IcmpError;

/// Connections followed at once (see the README's memory budget).
pub const MAX_CONNECTIONS: usize = 14_336;
/// A connect begun this close to the end of the capture may be cut off.
const IN_FLIGHT_US: i64 = 1_000_000;
/// Retransmission runs and zero-window stalls shorter than this are the
/// ordinary life of TCP (fast retransmit, a reader catching up).
const NOTABLE_US: i64 = 200_000;
/// The client answers a stray segment with RST within this long.
const STRAY_RESET_US: i64 = 2_000_000;
const MAX_LISTED: usize = 50;

/// A TCP segment as the tracker needs it.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment {
    pub ts_us: i64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Payload length on the wire.
    pub len: u32,
}

type Key = (SocketAddr, SocketAddr);

fn key_of(a: SocketAddr, b: SocketAddr) -> Key {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

#[derive(Debug, Clone, Copy)]
struct OpenRun {
    seq: u32,
    first_us: i64,
    retransmits: u32,
    last_us: i64,
}

#[derive(Debug)]
struct Conn {
    /// The two ends as first seen: index 0 sent the first segment (the
    /// client when the SYN was captured).
    ends: [SocketAddr; 2],
    syn_seen: bool,
    syn_ack: bool,
    handshake_done: bool,
    first_us: i64,
    last_us: i64,
    syn_first_us: i64,
    syn_last_us: i64,
    syns: u32,
    packets: [u64; 2],
    /// Payload bytes sent by each end.
    bytes: [u64; 2],
    /// The highest sequence number each end has sent up to, once known.
    seq_end: [Option<u32>; 2],
    /// The start and time of each end's latest new segment: the original
    /// of a retransmission that follows.
    last_new: [(u32, i64); 2],
    run: [Option<OpenRun>; 2],
    /// Since when each end has advertised a zero window.
    zero_since: [Option<i64>; 2],
    fin: [bool; 2],
    /// An end sent payload after the other end's FIN: a request into a
    /// connection the peer was closing.
    data_after_peer_fin: [bool; 2],
    reset: bool,
    rejected: bool,
    /// This connection is segments from an address the client never
    /// connected to, arriving on the port of its connection `.0`.
    stray_of: Option<Key>,
    /// This (client) connection received such a stray, listed at this index;
    /// and how many packets it had then.
    escape: Option<(usize, u64)>,
}

impl Conn {
    fn new(src: SocketAddr, dst: SocketAddr, ts_us: i64) -> Conn {
        Conn {
            ends: [src, dst],
            syn_seen: false,
            syn_ack: false,
            handshake_done: false,
            first_us: ts_us,
            last_us: ts_us,
            syn_first_us: ts_us,
            syn_last_us: ts_us,
            syns: 0,
            packets: [0; 2],
            bytes: [0; 2],
            seq_end: [None; 2],
            last_new: [(0, ts_us); 2],
            run: [None; 2],
            zero_since: [None; 2],
            fin: [false; 2],
            data_after_peer_fin: [false; 2],
            reset: false,
            rejected: false,
            stray_of: None,
            escape: None,
        }
    }

    fn established(&self) -> bool {
        self.handshake_done || (self.bytes[0] > 0 && self.bytes[1] > 0)
    }

    fn phase(&self, sender: usize) -> Phase {
        if self.packets == [0, 0] {
            Phase::Unknown
        } else if !self.syn_seen && self.packets[sender] == 0 {
            Phase::NoConnection
        } else if self.syn_seen && !self.syn_ack && sender == 1 {
            Phase::Refused
        } else if self.fin[0] || self.fin[1] {
            Phase::Closing
        } else if self.established() {
            Phase::Established
        } else if self.syn_seen {
            Phase::Handshake
        } else {
            Phase::Unknown
        }
    }

    fn role(&self, end: usize) -> Role {
        match (self.syn_seen, end) {
            (false, _) => Role::Unknown,
            (true, 0) => Role::Client,
            (true, _) => Role::Server,
        }
    }

    fn total_packets(&self) -> u64 {
        self.packets[0] + self.packets[1]
    }
}

#[derive(Debug)]
pub struct TcpTracker {
    conns: HashMap<Key, Conn>,
    /// A client's endpoint (it sent a SYN) -> its connection.
    clients: HashMap<SocketAddr, Key>,
    ev: TcpEvidence,
    escapes: EscapeEvidence,
    first_us: Option<i64>,
}

impl Default for TcpTracker {
    fn default() -> Self {
        TcpTracker {
            conns: bounded::table(MAX_CONNECTIONS),
            clients: bounded::table(MAX_CONNECTIONS),
            ev: TcpEvidence::default(),
            escapes: EscapeEvidence::default(),
            first_us: None,
        }
    }
}

impl TcpTracker {
    fn at_s(&self, ts_us: i64) -> f64 {
        (ts_us - self.first_us.unwrap_or(ts_us)) as f64 / 1e6
    }

    pub fn observe(&mut self, seg: TcpSegment) {
        let start = *self.first_us.get_or_insert(seg.ts_us);
        let key = key_of(seg.src, seg.dst);
        let is_syn = seg.flags & SYN != 0 && seg.flags & ACK == 0;
        let restart = self
            .conns
            .get(&key)
            .is_some_and(|c| is_syn && (c.reset || (c.fin[0] && c.fin[1])));
        if restart {
            // A fresh SYN on a 4-tuple that was closed or reset.
            if let Some(old) = self.conns.remove(&key) {
                self.finalize(key, old, seg.ts_us, Ending::Restarted);
            }
        }
        if !self.conns.contains_key(&key) {
            if self.conns.len() >= MAX_CONNECTIONS {
                self.evict(seg.ts_us);
            }
            let mut conn = Conn::new(seg.src, seg.dst, seg.ts_us);
            if !is_syn && seg.flags & RST == 0 {
                conn.stray_of = self.stray_candidate(&seg);
            }
            self.conns.insert(key, conn);
            self.ev.connections += 1;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let me = usize::from(conn.ends[0] != seg.src);
        let peer = 1 - me;
        let idle_us = seg.ts_us - conn.last_us;

        // ACKs first: they end the peer's retransmission run.
        if seg.flags & ACK != 0 && seg.flags & RST == 0 {
            if let Some(run) = conn.run[peer] {
                if seg.ack.wrapping_sub(run.seq).wrapping_sub(1) < 1 << 31 {
                    conn.run[peer] = None;
                    let r = RetransmissionRun {
                        from: conn.ends[peer],
                        to: conn.ends[me],
                        at_s: (run.first_us - start) as f64 / 1e6,
                        retransmits: run.retransmits,
                        duration_ms: us_to_ms(run.last_us - run.first_us),
                        acknowledged: true,
                        ended: "acknowledged".to_string(),
                    };
                    record_run(&mut self.ev, r);
                }
            }
        }

        // Sequence space this segment occupies: payload plus SYN and FIN.
        let occupies = seg.len + u32::from(seg.flags & SYN != 0) + u32::from(seg.flags & FIN != 0);
        if seg.flags & RST == 0 && occupies > 0 {
            let new_end = seg.seq.wrapping_add(occupies);
            match conn.seq_end[me] {
                Some(end) if seq_le(new_end, end) => {
                    let keepalive = seg.len <= 1
                        && seg.flags & (SYN | FIN) == 0
                        && seg.seq == end.wrapping_sub(1);
                    if !keepalive {
                        self.ev.retransmissions += 1;
                        let run = conn.run[me].get_or_insert(OpenRun {
                            seq: seg.seq,
                            first_us: if conn.last_new[me].0 == seg.seq {
                                conn.last_new[me].1
                            } else {
                                seg.ts_us
                            },
                            retransmits: 0,
                            last_us: seg.ts_us,
                        });
                        run.retransmits += 1;
                        run.last_us = seg.ts_us;
                    }
                }
                _ => {
                    conn.seq_end[me] = Some(new_end);
                    conn.last_new[me] = (seg.seq, seg.ts_us);
                }
            }
        }

        // Zero windows: a receiver that stopped reading.
        if seg.flags & (SYN | FIN | RST) == 0 {
            if seg.window == 0 {
                self.ev.zero_windows += 1;
                conn.zero_since[me].get_or_insert(seg.ts_us);
            } else if let Some(since) = conn.zero_since[me].take() {
                let stall = ZeroWindowStall {
                    receiver: conn.ends[me],
                    sender: conn.ends[peer],
                    at_s: (since - start) as f64 / 1e6,
                    duration_ms: us_to_ms(seg.ts_us - since),
                    ended: "the window opened".to_string(),
                };
                record_stall(&mut self.ev, stall);
            }
        }

        if is_syn {
            if !conn.syn_seen {
                conn.syn_first_us = seg.ts_us;
                if conn.total_packets() == 0 {
                    self.clients.insert(seg.src, key);
                }
            }
            conn.syn_seen = conn.total_packets() == 0 || conn.syn_seen;
            conn.syns += 1;
            conn.syn_last_us = seg.ts_us;
        } else if seg.flags & SYN != 0 {
            conn.syn_ack = conn.syn_ack || conn.syn_seen;
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
        let mut reset = None;
        if seg.flags & RST != 0 {
            let phase = conn.phase(me);
            reset = Some(Reset {
                from: seg.src,
                to: seg.dst,
                by: conn.role(me),
                phase,
                at_s: (seg.ts_us - start) as f64 / 1e6,
                after_ms: us_to_ms(seg.ts_us - conn.first_us),
                after_bytes: conn.bytes[0] + conn.bytes[1],
                idle_ms: (conn.total_packets() > 0).then(|| us_to_ms(idle_us)),
                established: conn.established(),
                request_after_fin: conn.fin[me] && conn.data_after_peer_fin[peer],
            });
            conn.reset = true;
        }
        conn.packets[me] += 1;
        conn.last_us = seg.ts_us;
        let from_stray_dst = conn.stray_of.filter(|_| seg.src != conn.ends[0]);
        let stray_first_us = conn.first_us;

        if let Some(reset) = reset {
            self.ev.resets_total += 1;
            if reset.phase == Phase::Refused {
                self.ev.refused_total += 1;
                if self.ev.refused.len() < MAX_LISTED {
                    self.ev.refused.push(Refused {
                        client: reset.to,
                        server: reset.from,
                        at_s: reset.at_s,
                        after_ms: reset.after_ms,
                        by: "RST".to_string(),
                    });
                }
            }
            if let Some(conn) = self.conns.get_mut(&key) {
                close_open(
                    conn,
                    &mut self.ev,
                    start,
                    seg.ts_us,
                    &format!("reset by {}", reset.from),
                );
            }
            if let Some(service) = from_stray_dst {
                // The client (the stray's destination) answered with RST.
                if seg.ts_us - stray_first_us <= STRAY_RESET_US {
                    self.escaped(key, service, stray_first_us, seg.ts_us);
                }
            }
            self.service_reset(key, &reset, seg.ts_us);
            if self.ev.resets.len() < MAX_LISTED {
                self.ev.resets.push(reset);
            }
        }
    }

    /// A segment for no known connection, not a SYN: is it to the local
    /// port of a client's connection with another address?
    fn stray_candidate(&self, seg: &TcpSegment) -> Option<Key> {
        let service_key = *self.clients.get(&seg.dst)?;
        let service = self.conns.get(&service_key)?;
        let remote = service.ends[1];
        (service.syn_seen && remote != seg.src && !service.reset).then_some(service_key)
    }

    /// The client reset a stray: record the escaped-DNAT reset.
    fn escaped(&mut self, stray_key: Key, service_key: Key, stray_us: i64, reset_us: i64) {
        let (Some(stray), Some(service)) =
            (self.conns.get(&stray_key), self.conns.get(&service_key))
        else {
            return;
        };
        let escape = Escape {
            client: service.ends[0],
            service: service.ends[1],
            stray_from: stray.ends[0],
            at_s: self.at_s(stray_us),
            stray_us,
            stray_packets: stray.packets[0],
            client_reset: true,
            reset_after_ms: us_to_ms(reset_us - stray_us),
            connection_age_ms: us_to_ms(stray_us - service.first_us),
            then: Then::NoMorePackets,
            then_after_ms: None,
        };
        let service_packets = service.total_packets();
        self.escapes.escaped_total += 1;
        if self.escapes.escaped.len() < MAX_LISTED {
            let index = self.escapes.escaped.len();
            self.escapes.escaped.push(escape);
            if let Some(service) = self.conns.get_mut(&service_key) {
                service.escape = Some((index, service_packets));
            }
        }
        if let Some(stray) = self.conns.get_mut(&stray_key) {
            // Recorded: the stray needs no more attention.
            stray.stray_of = None;
        }
    }

    /// A reset on a client connection that had a stray: what happened to it.
    fn service_reset(&mut self, key: Key, reset: &Reset, ts_us: i64) {
        let Some(conn) = self.conns.get(&key) else {
            return;
        };
        let Some((index, _)) = conn.escape else {
            return;
        };
        if let Some(escape) = self.escapes.escaped.get_mut(index) {
            if matches!(escape.then, Then::NoMorePackets | Then::CarriedOn) {
                escape.then = if reset.from == conn.ends[1] {
                    Then::ResetByService
                } else {
                    Then::ResetByClient
                };
                escape.then_after_ms = Some(us_to_ms(ts_us - escape.stray_us));
            }
        }
    }

    /// An ICMP error about a TCP packet: a SYN rejected on the way.
    pub fn icmp_error(&mut self, ts_us: i64, err: &IcmpError) {
        let key = key_of(err.src, err.dst);
        let at_s = self.at_s(ts_us);
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.syn_seen && !conn.syn_ack && !conn.rejected && conn.ends[0] == err.src {
            conn.rejected = true;
            self.ev.refused_total += 1;
            if self.ev.refused.len() < MAX_LISTED {
                self.ev.refused.push(Refused {
                    client: err.src,
                    server: err.dst,
                    at_s,
                    after_ms: us_to_ms(ts_us - conn.syn_first_us),
                    by: format!("ICMP {} from {}", err.reason, err.from),
                });
            }
        }
    }

    fn evict(&mut self, now_us: i64) {
        for key in bounded::oldest_quarter(&self.conns, |c| c.last_us) {
            if let Some(conn) = self.conns.remove(&key) {
                if !(conn.reset || conn.fin[0] && conn.fin[1]) {
                    self.ev.evicted_connections += 1;
                }
                self.finalize(key, conn, now_us, Ending::Evicted);
            }
        }
    }

    /// Folds a connection into the evidence when it leaves the table.
    fn finalize(&mut self, key: Key, mut conn: Conn, end_us: i64, ending: Ending) {
        let start = self.first_us.unwrap_or(end_us);
        if self.clients.get(&conn.ends[0]) == Some(&key) {
            self.clients.remove(&conn.ends[0]);
        }
        if conn.syn_seen && !conn.syn_ack && !conn.reset && !conn.rejected {
            if end_us - conn.syn_first_us >= IN_FLIGHT_US || ending == Ending::Evicted {
                self.ev.unanswered_syns_total += 1;
                if self.ev.unanswered_syns.len() < MAX_LISTED {
                    self.ev.unanswered_syns.push(SynUnanswered {
                        client: conn.ends[0],
                        server: conn.ends[1],
                        at_s: (conn.syn_first_us - start) as f64 / 1e6,
                        syns: conn.syns,
                        duration_ms: us_to_ms(conn.syn_last_us - conn.syn_first_us),
                    });
                }
            } else {
                self.ev.syns_pending_at_end += 1;
            }
            // A SYN's retransmissions are its own story, not a stalled run.
            conn.run = [None; 2];
        }
        let had_run = conn.run.iter().any(Option::is_some);
        close_open(&mut conn, &mut self.ev, start, end_us, ending.describe());
        if let Some((index, packets_then)) = conn.escape {
            if let Some(e) = self.escapes.escaped.get_mut(index) {
                if e.then == Then::NoMorePackets {
                    e.then = if had_run {
                        Then::RetransmittedUnacknowledged
                    } else if conn.fin[0] || conn.fin[1] {
                        Then::Closed
                    } else if conn.total_packets() > packets_then {
                        Then::CarriedOn
                    } else {
                        Then::NoMorePackets
                    };
                }
            }
        }
        // A stray the client never answered (a firewall in the pod dropped
        // it): it still escaped the Service's DNAT.
        if let Some(service_key) = conn.stray_of {
            if conn.packets[1] == 0 {
                let service = self.conns.get(&service_key);
                self.escapes.escaped_total += 1;
                if self.escapes.escaped.len() < MAX_LISTED {
                    self.escapes.escaped.push(Escape {
                        client: conn.ends[1],
                        service: service.map_or(conn.ends[1], |s| s.ends[1]),
                        stray_from: conn.ends[0],
                        at_s: (conn.first_us - start) as f64 / 1e6,
                        stray_us: conn.first_us,
                        stray_packets: conn.packets[0],
                        client_reset: false,
                        reset_after_ms: 0.0,
                        connection_age_ms: service
                            .map_or(0.0, |s| us_to_ms(conn.first_us - s.first_us)),
                        then: Then::CarriedOn,
                        then_after_ms: None,
                    });
                }
            }
        }
    }

    /// Everything still open is finalised as of `end_us`.
    pub fn finish(mut self, end_us: i64) -> (TcpEvidence, EscapeEvidence) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        // Strays first: they name their client connection, still present.
        let (strays, others): (Vec<Key>, Vec<Key>) = keys
            .into_iter()
            .partition(|k| self.conns.get(k).is_some_and(|c| c.stray_of.is_some()));
        for key in strays.into_iter().chain(others) {
            if let Some(conn) = self.conns.remove(&key) {
                self.finalize(key, conn, end_us, Ending::CaptureEnded);
            }
        }
        self.escapes.connections = self.ev.connections;
        (self.ev, self.escapes)
    }
}

/// Why a connection left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// A new SYN reused its 4-tuple.
    Restarted,
    Evicted,
    CaptureEnded,
}

impl Ending {
    fn describe(self) -> &'static str {
        match self {
            Ending::Restarted => "the connection ended",
            Ending::Evicted => "evicted (too many connections)",
            Ending::CaptureEnded => "the capture ended",
        }
    }
}

/// Ends what is open on a connection (retransmission runs, zero-window
/// stalls) because it was reset, closed, evicted or the capture ended.
fn close_open(conn: &mut Conn, ev: &mut TcpEvidence, start_us: i64, now_us: i64, why: &str) {
    for side in 0..2 {
        if let Some(run) = conn.run[side].take() {
            let r = RetransmissionRun {
                from: conn.ends[side],
                to: conn.ends[1 - side],
                at_s: (run.first_us - start_us) as f64 / 1e6,
                retransmits: run.retransmits,
                duration_ms: us_to_ms(run.last_us - run.first_us),
                acknowledged: false,
                ended: why.to_string(),
            };
            record_run(ev, r);
        }
        if let Some(since) = conn.zero_since[side].take() {
            let stall = ZeroWindowStall {
                receiver: conn.ends[side],
                sender: conn.ends[1 - side],
                at_s: (since - start_us) as f64 / 1e6,
                duration_ms: us_to_ms(now_us.max(conn.last_us) - since),
                ended: why.to_string(),
            };
            record_stall(ev, stall);
        }
    }
}

fn record_run(ev: &mut TcpEvidence, run: RetransmissionRun) {
    if run.duration_ms * 1000.0 < NOTABLE_US as f64 && run.acknowledged {
        return;
    }
    if !run.acknowledged {
        ev.unacknowledged_runs_total += 1;
    }
    ev.retransmission_runs_total += 1;
    if ev.retransmission_runs.len() < MAX_LISTED {
        ev.retransmission_runs.push(run);
    }
}

fn record_stall(ev: &mut TcpEvidence, stall: ZeroWindowStall) {
    if stall.duration_ms * 1000.0 < NOTABLE_US as f64 {
        return;
    }
    ev.zero_window_stalls_total += 1;
    if ev.zero_window_stalls.len() < MAX_LISTED {
        ev.zero_window_stalls.push(stall);
    }
}

/// `a <= b` in 32-bit sequence space (RFC 1982 serial arithmetic).
fn seq_le(a: u32, b: u32) -> bool {
    b.wrapping_sub(a) < 1 << 31
}

fn us_to_ms(us: i64) -> f64 {
    us as f64 / 1000.0
}

/// Evidence of `capture.tcp`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TcpEvidence {
    /// Distinct connections (4-tuples; a new SYN after a close counts again).
    pub connections: u64,
    /// Connects answered by RST (nothing listens, or a REJECT rule) or by an
    /// ICMP error; the first 50.
    pub refused: Vec<Refused>,
    pub refused_total: u64,
    /// Connects whose SYNs got no answer at all (a DROP rule or NetworkPolicy,
    /// or a host that is gone); the first 50.
    pub unanswered_syns: Vec<SynUnanswered>,
    pub unanswered_syns_total: u64,
    /// SYNs sent in the capture's last second, maybe just cut off.
    pub syns_pending_at_end: u64,
    /// The first resets seen (at most 50; `resets_total` counts them all).
    pub resets: Vec<Reset>,
    pub resets_total: u64,
    /// Retransmitted segments (and SYNs).
    pub retransmissions: u64,
    /// Runs of retransmissions of one segment lasting 200 ms or more, or
    /// never acknowledged; the first 50.
    pub retransmission_runs: Vec<RetransmissionRun>,
    pub retransmission_runs_total: u64,
    pub unacknowledged_runs_total: u64,
    /// Segments advertising a zero window.
    pub zero_windows: u64,
    /// Periods of 200 ms or more in which a receiver's window stayed zero.
    pub zero_window_stalls: Vec<ZeroWindowStall>,
    pub zero_window_stalls_total: u64,
    /// Connections still open when the table was full and they were
    /// finalised early.
    pub evicted_connections: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Client,
    Server,
    Unknown,
}

/// When in a connection's life a reset came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The answer to a SYN: connection refused.
    Refused,
    Handshake,
    Established,
    /// After a FIN from either end.
    Closing,
    /// The connection's first packet seen (it began before the capture).
    Unknown,
    /// The answer to the peer's segments by an end that had sent nothing:
    /// it had no such connection (or it began before the capture).
    NoConnection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reset {
    /// Who sent the RST, and to whom.
    pub from: SocketAddr,
    pub to: SocketAddr,
    /// The sender's role, when the SYN was captured.
    pub by: Role,
    pub phase: Phase,
    /// Seconds since the capture's first packet.
    pub at_s: f64,
    /// Since the connection's first packet.
    pub after_ms: f64,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub at_s: f64,
    /// From the first SYN to the answer.
    pub after_ms: f64,
    /// `RST`, or the ICMP error and who sent it.
    pub by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynUnanswered {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub at_s: f64,
    /// SYNs sent (the first and its retransmissions).
    pub syns: u32,
    /// From the first SYN to the last.
    pub duration_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetransmissionRun {
    /// The end retransmitting, and the peer that did not acknowledge.
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub at_s: f64,
    pub retransmits: u32,
    /// From the segment's first transmission to its last retransmission.
    pub duration_ms: f64,
    pub acknowledged: bool,
    /// How the run ended: acknowledged, reset by X, the capture ended, ...
    pub ended: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZeroWindowStall {
    /// The end advertising a zero window (it stopped reading).
    pub receiver: SocketAddr,
    pub sender: SocketAddr,
    pub at_s: f64,
    pub duration_ms: f64,
    pub ended: String,
}

/// What became of a client's connection after a stray segment escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Then {
    /// The Service address sent RST: the backend had lost the connection.
    ResetByService,
    ResetByClient,
    RetransmittedUnacknowledged,
    Closed,
    CarriedOn,
    NoMorePackets,
}

/// Evidence of `capture.conntrack-invalid`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EscapeEvidence {
    pub connections: u64,
    /// The first 50 segments that escaped a Service's DNAT.
    pub escaped: Vec<Escape>,
    pub escaped_total: u64,
}

/// A segment from an address the client never opened a connection to,
/// arriving on the local port of its connection to another address (the
/// Service VIP): a backend's reply that conntrack marked INVALID and so
/// skipped the reverse NAT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escape {
    /// The client's address and port.
    pub client: SocketAddr,
    /// The address it had connected to (the Service's ClusterIP and port).
    pub service: SocketAddr,
    /// Where the stray segment came from (the backend pod's own address).
    pub stray_from: SocketAddr,
    pub at_s: f64,
    #[serde(skip)]
    pub stray_us: i64,
    pub stray_packets: u64,
    /// The client answered the stray with RST (which then reached the
    /// backend and killed its side of the connection).
    pub client_reset: bool,
    pub reset_after_ms: f64,
    /// How old the client's connection was when the stray came.
    pub connection_age_ms: f64,
    pub then: Then,
    /// From the stray to what happened next.
    pub then_after_ms: Option<f64>,
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
            ack: 0,
            flags,
            window: 500,
            len,
        }
    }

    fn acking(mut s: TcpSegment, ack: u32) -> TcpSegment {
        s.ack = ack;
        s.flags |= ACK;
        s
    }

    fn handshake(t: &mut TcpTracker) {
        t.observe(seg(1, true, 100, SYN, 0));
        t.observe(acking(seg(2, false, 500, SYN, 0), 101));
        t.observe(acking(seg(3, true, 101, 0, 0), 501));
    }

    fn finish(t: TcpTracker, ms: i64) -> TcpEvidence {
        t.finish(ms * 1000).0
    }

    #[test]
    fn reset_after_idle_on_an_established_connection() {
        let mut t = TcpTracker::default();
        handshake(&mut t);
        t.observe(acking(seg(4, true, 101, 0, 10), 501));
        t.observe(acking(seg(5, false, 501, 0, 20), 111));
        t.observe(seg(1005, false, 521, RST | ACK, 0));
        let ev = finish(t, 1005);
        assert_eq!(ev.connections, 1);
        let r = &ev.resets[0];
        assert_eq!(r.from, S.parse().unwrap());
        assert_eq!((r.by, r.phase), (Role::Server, Phase::Established));
        assert_eq!(r.after_bytes, 30);
        assert_eq!(r.idle_ms, Some(1000.0));
        assert_eq!(r.after_ms, 1004.0);
        assert!(r.established && !r.request_after_fin);
        assert!(ev.refused.is_empty());
    }

    #[test]
    fn request_after_the_peers_fin_is_flagged() {
        let mut t = TcpTracker::default();
        handshake(&mut t);
        t.observe(seg(10, false, 501, FIN | ACK, 0));
        t.observe(seg(11, true, 101, ACK, 50));
        t.observe(seg(12, false, 502, RST, 0));
        let ev = finish(t, 12);
        assert!(ev.resets[0].request_after_fin);
        assert_eq!(ev.resets[0].phase, Phase::Closing);
    }

    #[test]
    fn syn_answered_by_rst_is_refused_and_unanswered_syns_are_counted() {
        let mut t = TcpTracker::default();
        t.observe(seg(0, true, 100, SYN, 0));
        t.observe(acking(seg(1, false, 0, RST, 0), 101));
        let other = |ms, port| TcpSegment {
            dst: SocketAddr::new("10.0.0.9".parse().unwrap(), port),
            ..seg(ms, true, 7, SYN, 0)
        };
        t.observe(other(10, 81));
        t.observe(other(1010, 81));
        t.observe(other(3010, 81));
        t.observe(other(3500, 82));
        let ev = finish(t, 4000);
        assert_eq!(ev.refused_total, 1);
        assert_eq!(ev.refused[0].server, S.parse().unwrap());
        assert_eq!(ev.resets[0].phase, Phase::Refused);
        assert_eq!(ev.unanswered_syns_total, 1);
        let syn = &ev.unanswered_syns[0];
        assert_eq!((syn.syns, syn.duration_ms), (3, 3000.0));
        assert_eq!(ev.syns_pending_at_end, 1);
        // SYN retransmissions are retransmissions, not a stalled data run.
        assert_eq!(ev.retransmissions, 2);
        assert_eq!(ev.unacknowledged_runs_total, 0);
    }

    #[test]
    fn a_segment_retransmitted_until_the_end_is_an_unacknowledged_run() {
        let mut t = TcpTracker::default();
        handshake(&mut t);
        t.observe(acking(seg(100, true, 101, 0, 100), 501));
        for ms in [300, 700, 1500, 3100, 6300] {
            t.observe(acking(seg(ms, true, 101, 0, 100), 501));
        }
        let ev = finish(t, 9300);
        assert_eq!(ev.retransmissions, 5);
        assert_eq!(ev.unacknowledged_runs_total, 1);
        let run = &ev.retransmission_runs[0];
        assert_eq!(
            (run.retransmits, run.duration_ms, run.acknowledged),
            (5, 6200.0, false)
        );
        assert_eq!(run.ended, "the capture ended");
    }

    #[test]
    fn an_acknowledged_run_and_a_zero_window_stall_have_durations() {
        let mut t = TcpTracker::default();
        handshake(&mut t);
        t.observe(acking(seg(10, true, 101, 0, 100), 501));
        t.observe(acking(seg(1010, true, 101, 0, 100), 501));
        t.observe(acking(seg(1011, false, 501, 0, 0), 201));
        let mut zero = acking(seg(2000, false, 501, 0, 0), 201);
        zero.window = 0;
        t.observe(zero);
        t.observe(zero);
        t.observe(acking(seg(26000, false, 501, 0, 0), 201));
        let ev = finish(t, 27000);
        assert!(ev.retransmission_runs[0].acknowledged);
        assert_eq!(ev.retransmission_runs[0].duration_ms, 1000.0);
        assert_eq!(ev.zero_windows, 2);
        assert_eq!(ev.zero_window_stalls[0].duration_ms, 24000.0);
        assert_eq!(ev.zero_window_stalls[0].receiver, S.parse().unwrap());
    }

    /// The client connects to a Service VIP; a segment from the backend's
    /// own address arrives on the same local port; the client resets it;
    /// the VIP then resets the connection.
    #[test]
    fn the_escaped_dnat_reset_is_recognised() {
        let client: SocketAddr = "10.244.0.2:49384".parse().unwrap();
        let vip: SocketAddr = "10.96.0.20:80".parse().unwrap();
        let backend: SocketAddr = "10.244.0.12:8080".parse().unwrap();
        let s = |ms: i64, src, dst, flags, len| TcpSegment {
            ts_us: ms * 1000,
            src,
            dst,
            seq: 1,
            ack: 1,
            flags,
            window: 64,
            len,
        };
        let mut t = TcpTracker::default();
        t.observe(TcpSegment {
            seq: 0,
            ..s(0, client, vip, SYN, 0)
        });
        t.observe(TcpSegment {
            seq: 0,
            ..s(0, vip, client, SYN | ACK, 0)
        });
        t.observe(s(1, client, vip, ACK, 0));
        t.observe(s(2, client, vip, ACK, 29));
        t.observe(TcpSegment {
            ack: 30,
            ..s(3, vip, client, ACK, 287)
        });
        t.observe(TcpSegment {
            seq: 1 << 30,
            ..s(8, backend, client, ACK, 287)
        });
        t.observe(s(8, client, backend, RST, 0));
        t.observe(TcpSegment {
            seq: 30,
            ..s(512, client, vip, ACK, 29)
        });
        t.observe(TcpSegment {
            seq: 288,
            ..s(512, vip, client, RST, 0)
        });
        let (tcp, escapes) = t.finish(1000 * 1000);
        assert_eq!(escapes.escaped_total, 1, "{escapes:#?}");
        let e = &escapes.escaped[0];
        assert_eq!((e.client, e.service, e.stray_from), (client, vip, backend));
        assert!(e.client_reset);
        assert_eq!(e.then, Then::ResetByService);
        assert_eq!(e.then_after_ms, Some(504.0));
        assert_eq!(e.connection_age_ms, 8.0);
        assert_eq!(tcp.connections, 2);
    }

    #[test]
    fn a_new_syn_after_a_reset_is_a_new_connection() {
        let mut t = TcpTracker::default();
        handshake(&mut t);
        t.observe(seg(4, false, 501, RST, 0));
        handshake(&mut t);
        assert_eq!(finish(t, 4).connections, 2);
    }

    #[test]
    fn a_syn_flood_stays_bounded_and_counts_every_syn() {
        let mut t = TcpTracker::default();
        let server: SocketAddr = S.parse().unwrap();
        for i in 0..100_000u32 {
            let client = SocketAddr::new(std::net::Ipv4Addr::from(0x0a00_0000 + i).into(), 1234);
            t.observe(TcpSegment {
                ts_us: i64::from(i) * 5,
                src: client,
                dst: server,
                seq: i,
                ack: 0,
                flags: SYN,
                window: 100,
                len: 0,
            });
            assert!(t.conns.len() <= MAX_CONNECTIONS);
        }
        let ev = finish(t, 5000);
        assert_eq!(ev.connections, 100_000);
        assert_eq!(ev.unanswered_syns_total + ev.syns_pending_at_end, 100_000);
        assert!(ev.evicted_connections > 0);
    }
}
