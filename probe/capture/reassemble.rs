//! IPv4 and IPv6 fragment reassembly, bounded: a large DNS answer arrives
//! in fragments, and only the first carries the UDP header. Datagrams that
//! never complete (a fragment lost before the capture point, or cut by
//! snaplen) are kept as evidence: for DNS they explain a query "never
//! answered" that the client's kernel in fact could not reassemble either.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::bounded;
use super::decode::{Fragment, PROTO_UDP};

/// Linux gives up on an IPv4 datagram after 30 s (`ipfrag_time`), on an
/// IPv6 one after 60 s; a capture sees the same fragments.
const TIMEOUT_US: i64 = 30_000_000;
/// Bytes of fragments held at once, and datagrams in progress.
pub const MAX_BYTES: usize = 8 << 20;
pub const MAX_DATAGRAMS: usize = 4096;
/// No reassembled payload exceeds this (IPv4's limit; IPv6 fragments
/// carry 16-bit lengths too).
const MAX_DATAGRAM: usize = 65_535;
const MAX_LISTED: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    protocol: u8,
}

#[derive(Debug)]
struct Partial {
    first_us: i64,
    last_us: i64,
    pieces: Vec<(usize, Vec<u8>)>,
    /// Known once the last fragment (more = false) arrived.
    total: Option<usize>,
    bytes: usize,
    fragments: u32,
    /// Some fragment was cut short by snaplen: it can never complete.
    cut: bool,
    /// From the first fragment of a UDP datagram: its ports, and the DNS
    /// id when the payload is DNS.
    first: Option<(u16, u16, Option<u16>)>,
}

/// A datagram put back together.
pub struct Datagram {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub payload: Vec<u8>,
}

/// A datagram whose fragments never all arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incomplete {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    /// UDP ports, when the first fragment was seen.
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// The DNS message id, when the first fragment carried one.
    pub dns_id: Option<u16>,
    /// Microseconds since the epoch of the first fragment seen.
    #[serde(skip)]
    pub first_us: i64,
    pub fragments: u32,
    pub bytes: usize,
    /// Why it did not complete.
    pub reason: String,
}

impl Incomplete {
    /// The UDP source, when known.
    pub fn src_addr(&self) -> Option<SocketAddr> {
        self.src_port.map(|p| SocketAddr::new(self.src, p))
    }
}

/// Counts for `capture.decode`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FragmentEvidence {
    pub fragments: u64,
    pub reassembled: u64,
    /// Datagrams that never completed (all of them; `incomplete_listed`
    /// names the first 50).
    pub incomplete: u64,
    pub incomplete_listed: Vec<Incomplete>,
    /// Datagrams dropped unfinished because the table was full.
    pub evicted: u64,
}

#[derive(Debug)]
pub struct Reassembler {
    table: HashMap<Key, Partial>,
    bytes: usize,
    evidence: FragmentEvidence,
    /// Incomplete datagrams not yet taken by the DNS analysis.
    fresh_incomplete: Vec<Incomplete>,
    last_expire_us: i64,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler {
            table: bounded::table(MAX_DATAGRAMS),
            bytes: 0,
            evidence: FragmentEvidence::default(),
            fresh_incomplete: Vec::new(),
            last_expire_us: 0,
        }
    }
}

impl Reassembler {
    /// Takes one fragment; returns the datagram when it is complete.
    pub fn add(&mut self, ts_us: i64, frag: &Fragment<'_>) -> Option<Datagram> {
        self.evidence.fragments += 1;
        self.expire(ts_us);
        let key = Key {
            src: frag.src,
            dst: frag.dst,
            id: frag.id,
            protocol: frag.protocol,
        };
        while !self.table.contains_key(&key)
            && !self.table.is_empty()
            && (self.table.len() >= MAX_DATAGRAMS || self.bytes + frag.payload.len() > MAX_BYTES)
        {
            self.evict_oldest();
        }
        let partial = self.table.entry(key).or_insert_with(|| Partial {
            first_us: ts_us,
            last_us: ts_us,
            pieces: Vec::new(),
            total: None,
            bytes: 0,
            fragments: 0,
            cut: false,
            first: None,
        });
        partial.last_us = ts_us;
        partial.fragments += 1;
        if frag.payload.len() < frag.wire_len {
            partial.cut = true;
        }
        let end = frag.offset + frag.wire_len;
        if !frag.more {
            partial.total = Some(end);
        }
        if frag.offset == 0 && key.protocol == PROTO_UDP && frag.payload.len() >= 8 {
            let p = frag.payload;
            let dns_id = (p.len() >= 10).then(|| u16::from_be_bytes([p[8], p[9]]));
            partial.first = Some((
                u16::from_be_bytes([p[0], p[1]]),
                u16::from_be_bytes([p[2], p[3]]),
                dns_id,
            ));
        }
        if end > MAX_DATAGRAM || partial.cut {
            return None;
        }
        // A duplicate piece (a retransmitted datagram) adds nothing new.
        if !partial
            .pieces
            .iter()
            .any(|(o, p)| *o == frag.offset && p.len() == frag.payload.len())
        {
            partial.pieces.push((frag.offset, frag.payload.to_vec()));
            partial.bytes += frag.payload.len();
            self.bytes += frag.payload.len();
        }
        let total = partial.total?;
        partial.pieces.sort_by_key(|(o, _)| *o);
        let mut covered = 0;
        for (offset, piece) in &partial.pieces {
            if *offset > covered {
                return None;
            }
            covered = covered.max(offset + piece.len());
        }
        if covered < total {
            return None;
        }
        let partial = self.table.remove(&key)?;
        self.bytes -= partial.bytes;
        let mut payload = vec![0u8; total];
        for (offset, piece) in &partial.pieces {
            let end = (offset + piece.len()).min(total);
            if *offset < end {
                payload[*offset..end].copy_from_slice(&piece[..end - offset]);
            }
        }
        self.evidence.reassembled += 1;
        Some(Datagram {
            src: key.src,
            dst: key.dst,
            protocol: key.protocol,
            payload,
        })
    }

    /// Incomplete datagrams found since the last call (timed out or evicted).
    pub fn take_incomplete(&mut self) -> Vec<Incomplete> {
        std::mem::take(&mut self.fresh_incomplete)
    }

    /// At the end of the capture every unfinished datagram is incomplete.
    pub fn finish(&mut self) -> FragmentEvidence {
        let keys: Vec<Key> = self.table.keys().copied().collect();
        for key in keys {
            self.give_up(key, "a fragment never arrived");
        }
        self.evidence.clone()
    }

    fn expire(&mut self, now_us: i64) {
        // A pass at most once a second of capture time.
        if self.table.is_empty() || now_us - self.last_expire_us < 1_000_000 {
            return;
        }
        self.last_expire_us = now_us;
        let old: Vec<Key> = self
            .table
            .iter()
            .filter(|(_, p)| now_us - p.last_us > TIMEOUT_US)
            .map(|(k, _)| *k)
            .collect();
        for key in old {
            self.give_up(key, "a fragment never arrived");
        }
    }

    fn evict_oldest(&mut self) {
        for key in bounded::oldest_quarter(&self.table, |p| p.last_us) {
            self.evidence.evicted += 1;
            self.give_up(key, "evicted: too many datagrams in progress");
        }
    }

    fn give_up(&mut self, key: Key, reason: &'static str) {
        let Some(partial) = self.table.remove(&key) else {
            return;
        };
        self.bytes -= partial.bytes;
        let incomplete = Incomplete {
            src: key.src,
            dst: key.dst,
            protocol: key.protocol,
            src_port: partial.first.map(|f| f.0),
            dst_port: partial.first.map(|f| f.1),
            dns_id: partial.first.and_then(|f| f.2),
            first_us: partial.first_us,
            fragments: partial.fragments,
            bytes: partial.bytes,
            reason: if partial.cut {
                "a fragment was cut short by the snapshot length"
            } else {
                reason
            }
            .to_string(),
        };
        self.evidence.incomplete += 1;
        if self.evidence.incomplete_listed.len() < MAX_LISTED {
            self.evidence.incomplete_listed.push(incomplete.clone());
        }
        if self.fresh_incomplete.len() < MAX_LISTED * 20 {
            self.fresh_incomplete.push(incomplete);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(offset: usize, more: bool, bytes: &[u8]) -> Fragment<'_> {
        Fragment {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            id: 7,
            protocol: PROTO_UDP,
            offset,
            more,
            payload: bytes,
            wire_len: bytes.len(),
        }
    }

    #[test]
    fn reassembles_in_any_order_and_ignores_duplicates() {
        let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let mut r = Reassembler::default();
        assert!(r.add(1, &frag(1448, false, &data[1448..])).is_none());
        assert!(r.add(2, &frag(1448, false, &data[1448..])).is_none());
        let d = r.add(3, &frag(0, true, &data[..1448])).unwrap();
        assert_eq!(d.payload, data);
        let ev = r.finish();
        assert_eq!((ev.fragments, ev.reassembled, ev.incomplete), (3, 1, 0));
    }

    #[test]
    fn a_missing_fragment_is_reported_with_the_dns_id_of_the_first() {
        let mut first = vec![0, 53, 0x9c, 0x40, 0x0b, 0xc8, 0, 0, 0xbe, 0xef];
        first.extend_from_slice(&[0u8; 1438]);
        let mut r = Reassembler::default();
        assert!(r.add(1, &frag(0, true, &first)).is_none());
        let ev = r.finish();
        assert_eq!(ev.incomplete, 1);
        let lost = &ev.incomplete_listed[0];
        assert_eq!(
            (lost.src_port, lost.dst_port, lost.dns_id),
            (Some(53), Some(40000), Some(0xbeef))
        );
        assert_eq!(r.take_incomplete().len(), 1);
    }

    #[test]
    fn stale_datagrams_time_out_and_a_full_table_evicts() {
        let mut r = Reassembler::default();
        r.add(0, &frag(0, true, &[1u8; 8]));
        let mut later = frag(0, true, &[1u8; 8]);
        later.id = 8;
        r.add(TIMEOUT_US + 1, &later);
        assert_eq!(r.take_incomplete().len(), 1);
        for id in 0..(MAX_DATAGRAMS as u32 + 10) {
            let mut f = frag(0, true, &[1u8; 8]);
            f.id = 100 + id;
            r.add(TIMEOUT_US + 2, &f);
        }
        assert!(r.table.len() <= MAX_DATAGRAMS);
        assert!(r.finish().evicted >= 10);
    }
}
