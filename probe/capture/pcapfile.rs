//! Reads pcap and pcapng files without libpcap, whose pcapng reader gives up
//! on a file whose interfaces have different link types (a capture on
//! several interfaces, or sections appended by `mergecap`). Every packet
//! carries its own link type; every length is checked before it is used, so
//! a cut or hostile file ends in an error, never a panic or a huge
//! allocation.

use std::io::{self, Read};

/// The largest packet record accepted; libpcap's own limit is 256 KiB for
/// most link types, a few (D-Bus, USB) allow more.
const MAX_RECORD: usize = 16 << 20;
/// The largest pcapng block accepted (a packet block is the packet plus
/// its options; other blocks are skipped unread).
const MAX_BLOCK: usize = MAX_RECORD + (64 << 10);

const PCAP_MICROS: u32 = 0xa1b2_c3d4;
const PCAP_NANOS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BYTE_ORDER: u32 = 0x1a2b_3c4d;

const BLOCK_IDB: u32 = 1;
const BLOCK_OPB: u32 = 2;
const BLOCK_SPB: u32 = 3;
const BLOCK_EPB: u32 = 6;
const OPT_END: u16 = 0;
const OPT_IF_TSRESOL: u16 = 9;
const OPT_IF_TSOFFSET: u16 = 14;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("not a pcap or pcapng file")]
    NotACapture,
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The file ends in the middle of a record or block.
    #[error("truncated: the file ends in the middle of a packet")]
    Truncated,
    #[error("malformed: {0}")]
    Malformed(String),
}

/// One packet as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// LINKTYPE_* of the interface it was captured on.
    pub linktype: u32,
    /// Nanoseconds since the epoch. A pcapng simple packet block has no
    /// time stamp: it gets the previous packet's.
    pub ts_ns: i64,
    pub data: &'a [u8],
    /// The packet's length on the wire (more than `data` when cut by snaplen).
    pub orig_len: u32,
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: u32,
    snaplen: u32,
    /// Time stamp units per second.
    units_per_s: u64,
    offset_s: i64,
}

#[derive(Debug)]
enum Format {
    Pcap {
        swapped: bool,
        nanos: bool,
        linktype: u32,
    },
    Pcapng {
        swapped: bool,
        interfaces: Vec<Interface>,
    },
}

pub struct Reader<R> {
    inner: R,
    format: Format,
    buf: Vec<u8>,
    last_ts_ns: i64,
    /// Whether the file's time stamps are finer than microseconds.
    fine: bool,
}

impl<R: Read> Reader<R> {
    /// Reads the file header (pcap) or first section header (pcapng).
    pub fn open(mut inner: R) -> Result<Self, FileError> {
        let mut magic = [0u8; 4];
        read_exact_or(&mut inner, &mut magic, FileError::NotACapture)?;
        let le = u32::from_le_bytes(magic);
        let be = u32::from_be_bytes(magic);
        let mut reader = Reader {
            inner,
            format: Format::Pcap {
                swapped: false,
                nanos: false,
                linktype: 0,
            },
            buf: Vec::new(),
            last_ts_ns: 0,
            fine: false,
        };
        if le == PCAPNG_SHB {
            reader.format = Format::Pcapng {
                swapped: false,
                interfaces: Vec::new(),
            };
            reader.section_header()?;
            return Ok(reader);
        }
        let (swapped, nanos) = match (le, be) {
            (PCAP_MICROS, _) => (false, false),
            (PCAP_NANOS, _) => (false, true),
            (_, PCAP_MICROS) => (true, false),
            (_, PCAP_NANOS) => (true, true),
            _ => return Err(FileError::NotACapture),
        };
        let mut header = [0u8; 20];
        read_exact_or(&mut reader.inner, &mut header, FileError::NotACapture)?;
        let u32_at = |at: usize| field32(&header[at..at + 4], swapped);
        // The upper bits of the link type field carry FCS information.
        let linktype = u32_at(16) & 0x03ff_ffff;
        reader.format = Format::Pcap {
            swapped,
            nanos,
            linktype,
        };
        reader.fine = nanos;
        Ok(reader)
    }

    /// Whether time stamps have nanosecond resolution (or finer than µs).
    pub fn nanosecond(&self) -> bool {
        self.fine
    }

    /// The link type of the file (pcap) or of its first interface (pcapng).
    pub fn linktype_hint(&self) -> Option<u32> {
        match &self.format {
            Format::Pcap { linktype, .. } => Some(*linktype),
            Format::Pcapng { interfaces, .. } => interfaces.first().map(|i| i.linktype),
        }
    }

    /// The next packet; `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, FileError> {
        match self.format {
            Format::Pcap {
                swapped,
                nanos,
                linktype,
            } => {
                let mut header = [0u8; 16];
                if !read_exact_or_eof(&mut self.inner, &mut header)? {
                    return Ok(None);
                }
                let at = |i: usize| field32(&header[i..i + 4], swapped);
                let (secs, frac, caplen, orig_len) = (at(0), at(4), at(8), at(12));
                let caplen = usize::try_from(caplen).unwrap_or(usize::MAX);
                if caplen > MAX_RECORD {
                    return Err(FileError::Malformed(format!(
                        "a packet record claims {caplen} bytes"
                    )));
                }
                read_exactly(&mut self.inner, &mut self.buf, caplen)?;
                let frac_ns = if nanos {
                    i64::from(frac)
                } else {
                    i64::from(frac) * 1000
                };
                self.last_ts_ns = i64::from(secs) * 1_000_000_000 + frac_ns;
                Ok(Some(Record {
                    linktype,
                    ts_ns: self.last_ts_ns,
                    data: &self.buf,
                    orig_len,
                }))
            }
            Format::Pcapng { .. } => self.next_pcapng(),
        }
    }

    fn next_pcapng(&mut self) -> Result<Option<Record<'_>>, FileError> {
        loop {
            let mut head = [0u8; 8];
            if !read_exact_or_eof(&mut self.inner, &mut head)? {
                return Ok(None);
            }
            let raw_type = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            if raw_type == PCAPNG_SHB {
                // A new section: its own byte order and interfaces.
                self.section_header_after_type(&head[4..8])?;
                continue;
            }
            let Format::Pcapng {
                swapped,
                ref interfaces,
            } = self.format
            else {
                return Err(FileError::NotACapture);
            };
            let block_type = field32(&head[0..4], swapped);
            let total = usize::try_from(field32(&head[4..8], swapped)).unwrap_or(usize::MAX);
            if total < 12 || total % 4 != 0 || total > MAX_BLOCK {
                return Err(FileError::Malformed(format!(
                    "a pcapng block claims {total} bytes"
                )));
            }
            let body_len = total - 12;
            read_exactly(&mut self.inner, &mut self.buf, body_len + 4)?;
            let body = &self.buf[..body_len];
            let u32_at = |at: usize| body.get(at..at + 4).map(|b| field32(b, swapped));
            match block_type {
                BLOCK_IDB => {
                    let interface = interface_description(body, swapped)?;
                    self.fine |= interface.units_per_s > 1_000_000;
                    if let Format::Pcapng { interfaces, .. } = &mut self.format {
                        interfaces.push(interface);
                    }
                }
                BLOCK_EPB | BLOCK_OPB => {
                    let id = if block_type == BLOCK_EPB {
                        u32_at(0)
                    } else {
                        // Obsolete packet block: a 16-bit interface id and drop count.
                        body.get(0..2).map(|b| u32::from(field16(b, swapped)))
                    };
                    let (ts_high, ts_low, caplen, orig_len) =
                        (u32_at(4), u32_at(8), u32_at(12), u32_at(16));
                    let data_at = 20;
                    let (Some(id), Some(high), Some(low), Some(caplen), Some(orig_len)) =
                        (id, ts_high, ts_low, caplen, orig_len)
                    else {
                        return Err(FileError::Malformed("a packet block is too short".into()));
                    };
                    let interface = *interfaces.get(id as usize).ok_or_else(|| {
                        FileError::Malformed(format!(
                            "a packet names interface {id}, which the section does not describe"
                        ))
                    })?;
                    let caplen = caplen as usize;
                    if data_at + caplen > body_len {
                        return Err(FileError::Malformed(
                            "a packet's length exceeds its block".into(),
                        ));
                    }
                    let ticks = (u64::from(high) << 32) | u64::from(low);
                    self.last_ts_ns = ticks_to_ns(ticks, interface);
                    return Ok(Some(Record {
                        linktype: interface.linktype,
                        ts_ns: self.last_ts_ns,
                        data: &self.buf[data_at..data_at + caplen],
                        orig_len,
                    }));
                }
                BLOCK_SPB => {
                    let interface = *interfaces.first().ok_or_else(|| {
                        FileError::Malformed("a simple packet block precedes any interface".into())
                    })?;
                    let orig_len = u32_at(0).ok_or_else(|| {
                        FileError::Malformed("a packet block is too short".into())
                    })?;
                    let mut caplen = (orig_len as usize).min(body_len - 4);
                    if interface.snaplen > 0 {
                        caplen = caplen.min(interface.snaplen as usize);
                    }
                    return Ok(Some(Record {
                        linktype: interface.linktype,
                        ts_ns: self.last_ts_ns,
                        data: &self.buf[4..4 + caplen],
                        orig_len,
                    }));
                }
                // Name resolution, statistics, decryption secrets, custom
                // blocks: nothing to analyse.
                _ => {}
            }
        }
    }

    fn section_header(&mut self) -> Result<(), FileError> {
        let mut len = [0u8; 4];
        read_exact_or(&mut self.inner, &mut len, FileError::Truncated)?;
        self.section_header_after_type(&len)
    }

    /// Reads a section header block whose type has been read; `len` are
    /// the 4 bytes of its total length, in the section's (unknown) order.
    fn section_header_after_type(&mut self, len: &[u8]) -> Result<(), FileError> {
        let mut magic = [0u8; 4];
        read_exact_or(&mut self.inner, &mut magic, FileError::Truncated)?;
        // Fields are read as little endian and swapped when the section is
        // big endian.
        let swapped = match u32::from_le_bytes(magic) {
            PCAPNG_BYTE_ORDER => false,
            m if m.swap_bytes() == PCAPNG_BYTE_ORDER => true,
            _ => return Err(FileError::Malformed("bad pcapng byte-order magic".into())),
        };
        let total = usize::try_from(field32(len, swapped)).unwrap_or(usize::MAX);
        if total < 28 || total % 4 != 0 || total > MAX_BLOCK {
            return Err(FileError::Malformed(format!(
                "a pcapng section header claims {total} bytes"
            )));
        }
        // Version, section length, options, trailing length.
        read_exactly(&mut self.inner, &mut self.buf, total - 12)?;
        let major = field16(&self.buf[0..2], swapped);
        if major != 1 {
            return Err(FileError::Malformed(format!(
                "pcapng version {major} is not supported"
            )));
        }
        self.format = Format::Pcapng {
            swapped,
            interfaces: Vec::new(),
        };
        Ok(())
    }
}

/// Parses an interface description block's body: link type, snaplen and
/// the time stamp options.
fn interface_description(body: &[u8], swapped: bool) -> Result<Interface, FileError> {
    let short = || FileError::Malformed("an interface description block is too short".into());
    let linktype = u32::from(field16(body.get(0..2).ok_or_else(short)?, swapped));
    let snaplen = field32(body.get(4..8).ok_or_else(short)?, swapped);
    let mut interface = Interface {
        linktype,
        snaplen,
        units_per_s: 1_000_000,
        offset_s: 0,
    };
    let mut options = &body[8..];
    while options.len() >= 4 {
        let code = field16(&options[0..2], swapped);
        let len = usize::from(field16(&options[2..4], swapped));
        let Some(value) = options.get(4..4 + len) else {
            break;
        };
        match code {
            OPT_END => break,
            OPT_IF_TSRESOL if len == 1 => {
                let exp = u32::from(value[0] & 0x7f);
                let units = if value[0] & 0x80 == 0 {
                    10u64.checked_pow(exp)
                } else {
                    2u64.checked_pow(exp)
                };
                interface.units_per_s = units.filter(|&u| u > 0).ok_or_else(|| {
                    FileError::Malformed(format!("if_tsresol {} is out of range", value[0]))
                })?;
            }
            OPT_IF_TSOFFSET if len == 8 => {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(value);
                let raw = u64::from_le_bytes(bytes);
                interface.offset_s = if swapped {
                    raw.swap_bytes() as i64
                } else {
                    raw as i64
                };
            }
            _ => {}
        }
        let padded = (len + 3) & !3;
        options = options.get(4 + padded..).unwrap_or_default();
    }
    Ok(interface)
}

fn ticks_to_ns(ticks: u64, interface: Interface) -> i64 {
    let ns = u128::from(ticks) * 1_000_000_000 / u128::from(interface.units_per_s);
    i64::try_from(ns)
        .unwrap_or(i64::MAX)
        .saturating_add(interface.offset_s.saturating_mul(1_000_000_000))
}

fn field32(bytes: &[u8], swapped: bool) -> u32 {
    let v = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if swapped {
        v.swap_bytes()
    } else {
        v
    }
}

fn field16(bytes: &[u8], swapped: bool) -> u16 {
    let v = u16::from_le_bytes([bytes[0], bytes[1]]);
    if swapped {
        v.swap_bytes()
    } else {
        v
    }
}

/// Replaces `buf` with the next `len` bytes. Memory grows with what is
/// read, not with what a (hostile) length field claims.
fn read_exactly(r: &mut impl Read, buf: &mut Vec<u8>, len: usize) -> Result<(), FileError> {
    buf.clear();
    let got = r.by_ref().take(len as u64).read_to_end(buf)?;
    if got < len {
        return Err(FileError::Truncated);
    }
    Ok(())
}

/// Fills `buf`; a short read is `short`.
fn read_exact_or(r: &mut impl Read, buf: &mut [u8], short: FileError) -> Result<(), FileError> {
    match read_exact_or_eof(r, buf) {
        Ok(true) => Ok(()),
        Ok(false) => Err(short),
        Err(FileError::Truncated) => Err(short),
        Err(e) => Err(e),
    }
}

/// Fills `buf`: `false` at end of file before the first byte, `Truncated`
/// at end of file after it.
fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> Result<bool, FileError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(FileError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(swapped: bool, nanos: bool, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let w32 = |v: u32| {
            if swapped {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut f = Vec::new();
        f.extend_from_slice(&w32(if nanos { PCAP_NANOS } else { PCAP_MICROS }));
        f.extend_from_slice(&if swapped { [0, 2, 0, 4] } else { [2, 0, 4, 0] });
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&w32(65535));
        f.extend_from_slice(&w32(1));
        for &(secs, frac, data) in records {
            f.extend_from_slice(&w32(secs));
            f.extend_from_slice(&w32(frac));
            f.extend_from_slice(&w32(data.len() as u32));
            f.extend_from_slice(&w32(data.len() as u32 + 10));
            f.extend_from_slice(data);
        }
        f
    }

    #[test]
    fn pcap_in_both_byte_orders_and_resolutions() {
        for swapped in [false, true] {
            for nanos in [false, true] {
                let bytes = pcap(swapped, nanos, &[(10, 5, b"abc"), (11, 0, b"")]);
                let mut r = Reader::open(&bytes[..]).unwrap();
                assert_eq!(r.nanosecond(), nanos);
                let rec = r.next_record().unwrap().unwrap();
                assert_eq!(rec.linktype, 1);
                assert_eq!(rec.data, b"abc");
                assert_eq!(rec.orig_len, 13);
                let frac = if nanos { 5 } else { 5000 };
                assert_eq!(rec.ts_ns, 10_000_000_000 + frac);
                assert!(r.next_record().unwrap().is_some());
                assert!(r.next_record().unwrap().is_none());
            }
        }
    }

    #[test]
    fn a_cut_record_is_truncated_and_garbage_is_not_a_capture() {
        let bytes = pcap(false, false, &[(1, 0, b"abcdef")]);
        let mut r = Reader::open(&bytes[..bytes.len() - 2]).unwrap();
        assert!(matches!(r.next_record(), Err(FileError::Truncated)));
        assert!(matches!(
            Reader::open(&b"hello world, no capture"[..]),
            Err(FileError::NotACapture)
        ));
        assert!(matches!(
            Reader::open(&b"ab"[..]),
            Err(FileError::NotACapture)
        ));
    }

    /// A little-endian pcapng section: SHB, two IDBs (Ethernet in µs,
    /// raw IP in ns with an offset), one EPB on each, one SPB.
    fn pcapng() -> Vec<u8> {
        fn block(kind: u32, body: &[u8]) -> Vec<u8> {
            let total = (12 + body.len()) as u32;
            let mut b = kind.to_le_bytes().to_vec();
            b.extend_from_slice(&total.to_le_bytes());
            b.extend_from_slice(body);
            b.extend_from_slice(&total.to_le_bytes());
            b
        }
        let mut f = Vec::new();
        let mut shb = PCAPNG_BYTE_ORDER.to_le_bytes().to_vec();
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        f.extend(block(PCAPNG_SHB, &shb));
        let mut idb = vec![1, 0, 0, 0];
        idb.extend_from_slice(&0u32.to_le_bytes());
        f.extend(block(BLOCK_IDB, &idb));
        let mut idb = vec![101, 0, 0, 0];
        idb.extend_from_slice(&96u32.to_le_bytes());
        idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0]);
        idb.extend_from_slice(&[14, 0, 8, 0]);
        idb.extend_from_slice(&2i64.to_le_bytes());
        idb.extend_from_slice(&[0, 0, 0, 0]);
        f.extend(block(BLOCK_IDB, &idb));
        for (id, ticks) in [(0u32, 3_000_000u64), (1, 5)] {
            let mut epb = id.to_le_bytes().to_vec();
            epb.extend_from_slice(&((ticks >> 32) as u32).to_le_bytes());
            epb.extend_from_slice(&(ticks as u32).to_le_bytes());
            epb.extend_from_slice(&3u32.to_le_bytes());
            epb.extend_from_slice(&3u32.to_le_bytes());
            epb.extend_from_slice(&[7, 8, 9, 0]);
            f.extend(block(BLOCK_EPB, &epb));
        }
        let mut spb = 2u32.to_le_bytes().to_vec();
        spb.extend_from_slice(&[1, 2, 0, 0]);
        f.extend(block(BLOCK_SPB, &spb));
        f
    }

    #[test]
    fn pcapng_gives_each_packet_its_interfaces_link_type_and_time() {
        let bytes = pcapng();
        let mut r = Reader::open(&bytes[..]).unwrap();
        let a = r.next_record().unwrap().unwrap();
        assert_eq!(
            (a.linktype, a.ts_ns, a.data),
            (1, 3_000_000_000, &[7, 8, 9][..])
        );
        let b = r.next_record().unwrap().unwrap();
        assert_eq!((b.linktype, b.ts_ns), (101, 2_000_000_005));
        let c = r.next_record().unwrap().unwrap();
        assert_eq!(
            (c.linktype, c.ts_ns, c.data),
            (1, 2_000_000_005, &[1, 2][..])
        );
        assert!(r.next_record().unwrap().is_none());
        assert!(r.nanosecond());
    }

    #[test]
    fn every_prefix_and_random_bytes_are_harmless() {
        let bytes = pcapng();
        for end in 0..bytes.len() {
            if let Ok(mut r) = Reader::open(&bytes[..end]) {
                while let Ok(Some(_)) = r.next_record() {}
            }
        }
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for i in 0..5000 {
            let mut bytes = pcapng();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x as usize) % bytes.len();
                bytes[at] = (x >> 32) as u8;
            }
            if i % 2 == 0 {
                bytes.truncate((x as usize) % bytes.len());
            }
            if let Ok(mut r) = Reader::open(&bytes[..]) {
                let mut n = 0;
                while let Ok(Some(_)) = r.next_record() {
                    n += 1;
                    assert!(n < 100);
                }
            }
        }
    }
}
