//! DNS over TCP, put back together: each message carries a 2-byte length
//! and may span segments (a resolver often sends the length in a segment
//! of its own), or several may share one. Retransmitted bytes are trimmed,
//! segments that arrive early wait for the gap to fill; a gap that never
//! fills (the capture missed a segment) stops that direction, counted.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::bounded;
use super::decode::flags::{FIN, RST, SYN};

/// Directions followed at once, and the bytes they may hold together.
pub const MAX_STREAMS: usize = 4096;
pub const MAX_BYTES: usize = 8 << 20;
/// Out-of-order segments held per direction.
const MAX_WAITING: usize = 16;
/// A DNS message is at most 65535 bytes plus its length.
const MAX_BUFFER: usize = 65_537 + 65_536;

#[derive(Debug, Default)]
struct Stream {
    next_seq: Option<u32>,
    buf: Vec<u8>,
    waiting: Vec<(u32, Vec<u8>)>,
    last_us: i64,
}

/// Counts for the evidence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounts {
    /// Directions abandoned at a gap that never filled.
    pub gaps: u64,
    /// Directions dropped because too many were followed at once.
    pub evicted: u64,
}

#[derive(Debug)]
pub struct DnsStreams {
    streams: HashMap<(SocketAddr, SocketAddr), Stream>,
    /// Bytes held by all streams.
    held: usize,
    pub counts: StreamCounts,
}

impl Default for DnsStreams {
    fn default() -> Self {
        DnsStreams {
            streams: bounded::table(MAX_STREAMS),
            held: 0,
            counts: StreamCounts::default(),
        }
    }
}

impl DnsStreams {
    /// Takes one TCP segment of a DNS connection; calls `message` with each
    /// DNS message it completes.
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &mut self,
        ts_us: i64,
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        flags: u8,
        payload: &[u8],
        wire_len: usize,
        mut message: impl FnMut(&[u8]),
    ) {
        let key = (src, dst);
        if flags & SYN != 0 {
            self.remove(&key);
            self.insert(key, ts_us).next_seq = Some(seq.wrapping_add(1));
            return;
        }
        if flags & RST != 0 {
            self.remove(&key);
            return;
        }
        if !payload.is_empty() || wire_len > 0 {
            if !self.streams.contains_key(&key) {
                // Picked up mid-connection: assume a message starts here.
                self.insert(key, ts_us).next_seq = Some(seq);
            }
            let Some(stream) = self.streams.get_mut(&key) else {
                return;
            };
            stream.last_us = ts_us;
            let before = stream.held();
            // Cut by snaplen, or a gap that cannot be waited for: the rest
            // of this direction is lost.
            let ok = payload.len() >= wire_len && stream.accept(seq, payload, &mut message);
            self.held = self.held + stream.held() - before;
            if !ok {
                self.counts.gaps += 1;
                self.remove(&key);
                return;
            }
            if self.held > MAX_BYTES {
                self.evict();
            }
        }
        if flags & FIN != 0 {
            if let Some(stream) = self.remove(&key) {
                if !stream.waiting.is_empty() {
                    self.counts.gaps += 1;
                }
            }
        }
    }

    /// Directions still waiting for a missing segment at the end count as gaps.
    pub fn finish(&mut self) -> StreamCounts {
        self.counts.gaps += self
            .streams
            .values()
            .filter(|s| !s.waiting.is_empty())
            .count() as u64;
        self.streams.clear();
        self.held = 0;
        self.counts
    }

    fn evict(&mut self) {
        for old in bounded::oldest_quarter(&self.streams, |s| s.last_us) {
            self.remove(&old);
            self.counts.evicted += 1;
        }
    }

    fn remove(&mut self, key: &(SocketAddr, SocketAddr)) -> Option<Stream> {
        let stream = self.streams.remove(key)?;
        self.held -= stream.held();
        Some(stream)
    }

    fn insert(&mut self, key: (SocketAddr, SocketAddr), ts_us: i64) -> &mut Stream {
        if self.streams.len() >= MAX_STREAMS {
            self.evict();
        }
        self.streams.entry(key).or_insert_with(|| Stream {
            last_us: ts_us,
            ..Stream::default()
        })
    }
}

impl Stream {
    fn held(&self) -> usize {
        self.buf.len() + self.waiting.iter().map(|(_, p)| p.len()).sum::<usize>()
    }

    /// Adds the bytes at `seq`; false when the stream cannot go on.
    fn accept(&mut self, seq: u32, payload: &[u8], message: &mut impl FnMut(&[u8])) -> bool {
        let Some(next) = self.next_seq else {
            return false;
        };
        let ahead = seq.wrapping_sub(next);
        if ahead != 0 && ahead < 1 << 31 {
            // Early: wait for the gap to fill.
            if self.waiting.len() >= MAX_WAITING || payload.len() > MAX_BUFFER / 2 {
                return false;
            }
            self.waiting.push((seq, payload.to_vec()));
            return true;
        }
        self.append(seq, payload);
        // Segments that waited may fit now.
        while let Some(i) = self.waiting.iter().position(|(s, p)| {
            let next = self.next_seq.unwrap_or(0);
            let behind = next.wrapping_sub(*s);
            behind < 1 << 31 && (behind as usize) <= p.len()
        }) {
            let (s, p) = self.waiting.swap_remove(i);
            self.append(s, &p);
        }
        if self.buf.len() > MAX_BUFFER {
            return false;
        }
        let mut used = 0;
        while let Some(len) = self.buf.get(used..used + 2) {
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let Some(msg) = self.buf.get(used + 2..used + 2 + len) else {
                break;
            };
            message(msg);
            used += 2 + len;
        }
        self.buf.drain(..used);
        true
    }

    /// Appends what of `payload` lies beyond `next_seq` (a retransmission
    /// overlaps bytes already taken).
    fn append(&mut self, seq: u32, payload: &[u8]) {
        let next = self.next_seq.unwrap_or(seq);
        let skip = next.wrapping_sub(seq) as usize;
        if skip < payload.len() {
            self.buf.extend_from_slice(&payload[skip..]);
            self.next_seq = Some(next.wrapping_add((payload.len() - skip) as u32));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::decode::flags::ACK;

    fn run(segments: &[(u32, &[u8])]) -> (Vec<Vec<u8>>, StreamCounts) {
        let (c, s) = (
            "10.0.0.1:4000".parse().unwrap(),
            "10.0.0.2:53".parse().unwrap(),
        );
        let mut streams = DnsStreams::default();
        let mut got = Vec::new();
        streams.segment(0, c, s, 99, SYN, &[], 0, |_| {});
        for &(seq, bytes) in segments {
            streams.segment(1, c, s, seq, ACK, bytes, bytes.len(), |m| {
                got.push(m.to_vec())
            });
        }
        (got, streams.finish())
    }

    #[test]
    fn a_length_in_its_own_segment_and_two_messages_in_one() {
        let (got, counts) = run(&[
            (100, &[0, 3]),
            (102, b"abc"),
            (105, &[0, 1, b'x', 0, 2, b'y', b'z']),
        ]);
        assert_eq!(got, vec![b"abc".to_vec(), b"x".to_vec(), b"yz".to_vec()]);
        assert_eq!(counts, StreamCounts::default());
    }

    #[test]
    fn retransmissions_are_trimmed_and_early_segments_wait() {
        let (got, _) = run(&[(100, &[0, 3, b'a']), (100, &[0, 3, b'a']), (103, b"bc")]);
        assert_eq!(got, vec![b"abc".to_vec()]);
        let (got, counts) = run(&[(102, b"abc"), (100, &[0, 3])]);
        assert_eq!(got, vec![b"abc".to_vec()]);
        assert_eq!(counts.gaps, 0);
    }

    #[test]
    fn a_gap_that_never_fills_is_counted() {
        let (got, counts) = run(&[(100, &[0, 3]), (110, b"abc")]);
        assert!(got.is_empty());
        assert_eq!(counts.gaps, 1);
    }
}
