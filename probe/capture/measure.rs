//! The capture itself: open a live interface (libpcap) or read a pcap/pcapng
//! file (our own reader: every link type of a mixed pcapng), write every
//! packet as a pcap record, optionally feed the analyzer, and stop cleanly
//! on every stop condition. The hot path copies each packet once into the
//! output buffer and decodes nothing unless `--analyze` asked for it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pcap::{Active, BpfProgram, Capture, Linktype};

use super::analyze::{Analysis, Analyzer};
use super::decode::LINKTYPE_LINUX_SLL2;
use super::pcapfile::{FileError, Reader};
use super::signals;
use crate::Error;

/// How long an idle capture waits before it looks at the clock and the
/// reader again: bounds how late `--duration` and a gone reader stop it.
const POLL_MS: i32 = 100;
/// The longest a captured packet waits in the kernel before it is handed over.
const BLOCK_MS: i32 = 10;
/// Kernel ring buffer: tcpdump's 2 MiB default drops packets on a burst.
const KERNEL_BUFFER: i32 = 32 << 20;
const FILE_BUFFER: usize = 1 << 20;
const STREAM_BUFFER: usize = 256 << 10;
const READ_BUFFER: usize = 1 << 20;
/// Packets handled per libpcap call.
const LIVE_BATCH: usize = 4096;
const PCAP_HEADER_LEN: u64 = 24;
const RECORD_HEADER_LEN: u64 = 16;
/// Record ends remembered to tell how many records a reader that went away
/// actually got: more than a pipe's largest buffer plus ours.
const REMEMBERED_BYTES: u64 = 4 << 20;

pub enum Source {
    Live(String),
    File(PathBuf),
}

pub enum Sink {
    None,
    Stdout,
    File(PathBuf),
}

pub struct Plan {
    pub source: Source,
    pub filter: Option<String>,
    pub sink: Sink,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub snaplen: u32,
    pub max_size: Option<u64>,
    pub analyze: bool,
    /// Print a one-line summary of each packet on stdout.
    pub summaries: bool,
    /// The summaries as JSON lines.
    pub json: bool,
}

pub struct Outcome {
    /// Packets written (and, for a stream, read by its reader); without an
    /// output, packets taken.
    pub captured: u64,
    /// Packets the kernel dropped (live captures only).
    pub dropped: Option<u64>,
    /// The file ended in the middle of a record: what came before it was used.
    pub truncated: Option<String>,
    /// The reader of the stream went away, after this many bytes.
    pub reader_gone_after: Option<u64>,
    pub analysis: Option<Analysis>,
}

pub fn run(plan: &Plan) -> crate::Result<Outcome> {
    let mut out = match &plan.sink {
        Sink::None => None,
        Sink::Stdout => Some(RecordWriter::new(Box::new(RawStdout), STREAM_BUFFER, true)),
        Sink::File(path) => Some(RecordWriter::new(
            Box::new(File::create(path).map_err(|cause| Error::Input {
                path: path.display().to_string(),
                cause,
            })?),
            FILE_BUFFER,
            false,
        )),
    };
    let mut handler = Handler {
        count: plan.count,
        max_size: plan.max_size,
        snaplen: plan.snaplen,
        summaries: plan
            .summaries
            .then(|| BufWriter::with_capacity(STREAM_BUFFER, RawStdout)),
        json: plan.json,
        analyzer: plan.analyze.then(Analyzer::default),
        taken: 0,
        done: false,
        error: None,
        out: out.take(),
    };
    signals::install();
    let (dropped, truncated, end_us) = match &plan.source {
        Source::Live(iface) => {
            let dropped = capture_live(plan, iface, &mut handler)?;
            (dropped, None, Some(now_us()))
        }
        Source::File(path) => (None, read_file(plan, path, &mut handler)?, None),
    };
    if let Some(e) = handler.error.take() {
        return Err(e);
    }
    if let Some(s) = handler.summaries.as_mut() {
        let _ = s.flush();
    }
    let (captured, reader_gone_after) = match handler.out.as_mut() {
        Some(w) => {
            w.flush().map_err(|e| Error::io("writing packets", e))?;
            (w.delivered_records(), w.gone_after)
        }
        None => (handler.taken, None),
    };
    Ok(Outcome {
        captured,
        dropped,
        truncated,
        reader_gone_after,
        analysis: handler.analyzer.map(|a| a.finish(end_us)),
    })
}

/// What every packet goes through, live or from a file.
struct Handler {
    count: Option<u64>,
    max_size: Option<u64>,
    snaplen: u32,
    out: Option<RecordWriter>,
    summaries: Option<BufWriter<RawStdout>>,
    json: bool,
    analyzer: Option<Analyzer>,
    taken: u64,
    /// Set by every stop condition met inside a batch: -c, --max-size, a
    /// reader gone, a write error.
    done: bool,
    error: Option<Error>,
}

impl Handler {
    /// Takes one packet: `frac` is microseconds, or nanoseconds when the
    /// output was opened with nanosecond precision.
    fn packet(&mut self, linktype: u32, secs: i64, frac: u32, data: &[u8], orig_len: u32) {
        if self.done {
            return;
        }
        if let Some(w) = self.out.as_mut() {
            if let Err(e) = w.start(self.snaplen, linktype) {
                self.fail(e);
                return;
            }
            let record = RECORD_HEADER_LEN + data.len() as u64;
            if self.max_size.is_some_and(|max| w.bytes + record > max) {
                self.done = true;
                return;
            }
            if let Err(e) = w.record(secs, frac, data, orig_len) {
                self.fail(e);
                return;
            }
            if w.gone_after.is_some() {
                self.done = true;
                return;
            }
        }
        self.taken += 1;
        let nanos = self.out.as_ref().is_some_and(|w| w.nanos);
        let ts_us = secs * 1_000_000 + i64::from(if nanos { frac / 1000 } else { frac });
        if let Some(a) = self.analyzer.as_mut() {
            a.packet(linktype, ts_us, data, orig_len);
        }
        if let Some(s) = self.summaries.as_mut() {
            let summary = super::summary::summarize(linktype, ts_us, data, orig_len);
            let line = if self.json {
                summary.json()
            } else {
                summary.text()
            };
            if s.write_all(line.as_bytes()).is_err() {
                self.done = true;
            }
        }
        if self.count.is_some_and(|c| self.taken >= c) {
            self.done = true;
        }
    }

    fn fail(&mut self, e: WriteError) {
        self.done = true;
        self.error = Some(match e {
            WriteError::Io(e) => Error::io("writing packets", e),
            WriteError::MixedLinkTypes(first, other) => Error::usage(format!(
                "the capture mixes link types ({} and {}), which one pcap file cannot hold: analyse it without -w",
                super::decode::linktype_name(first),
                super::decode::linktype_name(other)
            )),
        });
    }

    /// Flushes a streamed batch so the reader sees it now.
    fn end_batch(&mut self) {
        let flushed = match self.out.as_mut() {
            Some(w) if w.streaming => w.flush().map(|()| w.gone_after.is_some()),
            _ => Ok(false),
        };
        match flushed {
            Ok(gone) => self.done |= gone,
            Err(e) => self.fail(WriteError::Io(e)),
        }
        if let Some(s) = self.summaries.as_mut() {
            if s.flush().is_err() {
                self.done = true;
            }
        }
    }
}

/// Live capture; returns the kernel's drop count.
fn capture_live(plan: &Plan, iface: &str, handler: &mut Handler) -> crate::Result<Option<u64>> {
    // libpcap's own wait ignores its timeout until a packet comes, so the
    // handle is non-blocking and this loop polls its descriptor itself.
    let mut cap = open_live(iface, plan.snaplen)?;
    let fd = cap.as_raw_fd();
    if let Some(filter) = &plan.filter {
        cap.filter(filter, true)
            .map_err(|e| Error::usage(format!("bad filter '{filter}': {}", pcap_message(&e))))?;
    }
    let linktype = cap.get_datalink().0 as u32;
    // The header goes out at once: a reader (Wireshark) starts now, and a
    // file is a valid empty capture from the start.
    if let Some(w) = handler.out.as_mut() {
        if let Err(e) = w
            .start(plan.snaplen, linktype)
            .and_then(|()| w.flush().map_err(WriteError::Io))
        {
            handler.fail(e);
        }
    }
    let deadline = plan.duration.map(crate::clock::deadline);
    // After a signal or the deadline a live capture makes one last pass:
    // the kernel retires its open block within BLOCK_MS, so the packets
    // that arrived before the stop still reach the file. The pass is
    // bounded too, or a flood would keep it going.
    let mut drain_end: Option<Instant> = None;
    while !handler.done {
        if drain_end.is_some_and(|end| Instant::now() >= end) {
            break;
        }
        if drain_end.is_none()
            && (signals::stop_requested() || deadline.is_some_and(|d| Instant::now() >= d))
        {
            drain_end = Some(Instant::now() + Duration::from_millis(4 * BLOCK_MS as u64));
            wait_readable(fd, 2 * BLOCK_MS);
        }
        let draining = drain_end.is_some();
        let batch = plan
            .count
            .map(|c| {
                usize::try_from(c - handler.taken)
                    .unwrap_or(LIVE_BATCH)
                    .min(LIVE_BATCH)
            })
            .unwrap_or(LIVE_BATCH);
        let result = cap.dispatch(Some(batch), |packet| {
            let h = packet.header;
            // timeval fields are i64 on 64-bit Linux, narrower elsewhere.
            #[allow(clippy::unnecessary_cast)]
            let (secs, usecs) = (h.ts.tv_sec as i64, h.ts.tv_usec as u32);
            handler.packet(linktype, secs, usecs, packet.data, h.len);
        });
        match result {
            Ok(0) if draining => break,
            Ok(0) => {
                // Idle: wait for packets, a signal (EINTR) or the poll
                // interval, and see whether the reader left meanwhile.
                wait_readable(fd, POLL_MS);
                let to_stdout = handler.out.as_ref().is_some_and(|w| w.streaming)
                    || handler.summaries.is_some();
                if to_stdout && stdout_reader_gone() {
                    if let Some(w) = handler.out.as_mut() {
                        w.reader_gone();
                    }
                    break;
                }
            }
            Ok(_) => handler.end_batch(),
            Err(_) if draining || signals::stop_requested() => break,
            Err(e) => {
                return Err(Error::unavailable(format!(
                    "capture failed: {}",
                    pcap_message(&e)
                )))
            }
        }
    }
    Ok(cap.stats().ok().map(|s| u64::from(s.dropped)))
}

/// Reads a pcap or pcapng file; returns why it stopped early, if it was cut.
fn read_file(plan: &Plan, path: &PathBuf, handler: &mut Handler) -> crate::Result<Option<String>> {
    let input_error = |message: String| Error::Input {
        path: path.display().to_string(),
        cause: io::Error::new(io::ErrorKind::InvalidData, message),
    };
    let file = File::open(path).map_err(|cause| Error::Input {
        path: path.display().to_string(),
        cause,
    })?;
    let mut reader = Reader::open(BufReader::with_capacity(READ_BUFFER, file))
        .map_err(|e| input_error(e.to_string()))?;
    if let Some(w) = handler.out.as_mut() {
        w.nanos = reader.nanosecond();
    }
    let mut filters: HashMap<u32, BpfProgram> = HashMap::new();
    let mut read = 0u64;
    loop {
        if handler.done || signals::stop_requested() {
            return Ok(None);
        }
        let record = match reader.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => {
                // An empty capture still gets a header: a valid empty file.
                if let Some(w) = handler.out.as_mut() {
                    if w.linktype.is_none() {
                        let linktype = reader.linktype_hint().unwrap_or(1);
                        if let Err(e) = w.start(plan.snaplen, linktype) {
                            handler.fail(e);
                        }
                    }
                }
                handler.end_batch();
                return Ok(None);
            }
            // The first record must parse: otherwise it is not a capture
            // at all. Later, keep what came before the damage.
            Err(e @ (FileError::Truncated | FileError::Malformed(_)))
                if read > 0 || matches!(e, FileError::Truncated) =>
            {
                handler.end_batch();
                return Ok(Some(e.to_string()));
            }
            Err(e) => return Err(input_error(e.to_string())),
        };
        read += 1;
        if let Some(filter) = &plan.filter {
            // Compiled once per link type: a mixed pcapng has several.
            let program = match filters.entry(record.linktype) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                    Capture::dead(Linktype(record.linktype as i32))
                        .and_then(|c| c.compile(filter, true))
                        .map_err(|e| {
                            Error::usage(format!("bad filter '{filter}': {}", pcap_message(&e)))
                        })?,
                ),
            };
            if !program.filter(record.data) {
                continue;
            }
        }
        let secs = record.ts_ns.div_euclid(1_000_000_000);
        let ns = record.ts_ns.rem_euclid(1_000_000_000) as u32;
        let nanos = handler.out.as_ref().is_some_and(|w| w.nanos);
        let frac = if nanos { ns } else { ns / 1000 };
        handler.packet(record.linktype, secs, frac, record.data, record.orig_len);
        if read % LIVE_BATCH as u64 == 0 {
            handler.end_batch();
        }
    }
}

enum WriteError {
    Io(io::Error),
    MixedLinkTypes(u32, u32),
}

/// pcap output that knows how many whole records reached the file or the
/// reader: a pipe's reader that goes away (`| head -c 1000`) leaves the
/// records still in the pipe unread, and those were not captured for it.
struct RecordWriter {
    sink: Box<dyn Write>,
    buf: Vec<u8>,
    capacity: usize,
    streaming: bool,
    nanos: bool,
    linktype: Option<u32>,
    /// Bytes accepted so far (header and records, buffered included).
    bytes: u64,
    /// Bytes handed to the file or pipe.
    flushed: u64,
    records: u64,
    /// Cumulative end offsets of the most recent records.
    ends: std::collections::VecDeque<u64>,
    gone_after: Option<u64>,
}

impl RecordWriter {
    fn new(sink: Box<dyn Write>, capacity: usize, streaming: bool) -> Self {
        RecordWriter {
            sink,
            buf: Vec::with_capacity(capacity + 65_536),
            capacity,
            streaming,
            nanos: false,
            linktype: None,
            bytes: 0,
            flushed: 0,
            records: 0,
            ends: std::collections::VecDeque::new(),
            gone_after: None,
        }
    }

    /// Writes the file header for the first packet's link type; a later
    /// packet of another link type cannot go into the same pcap.
    fn start(&mut self, snaplen: u32, linktype: u32) -> Result<(), WriteError> {
        match self.linktype {
            Some(lt) if lt == linktype => Ok(()),
            Some(lt) => Err(WriteError::MixedLinkTypes(lt, linktype)),
            None => {
                self.linktype = Some(linktype);
                let magic: u32 = if self.nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
                let mut h = [0u8; 24];
                h[0..4].copy_from_slice(&magic.to_ne_bytes());
                h[4..6].copy_from_slice(&2u16.to_ne_bytes());
                h[6..8].copy_from_slice(&4u16.to_ne_bytes());
                h[16..20].copy_from_slice(&snaplen.to_ne_bytes());
                h[20..24].copy_from_slice(&linktype.to_ne_bytes());
                self.buf.extend_from_slice(&h);
                self.bytes = PCAP_HEADER_LEN;
                Ok(())
            }
        }
    }

    fn record(
        &mut self,
        secs: i64,
        frac: u32,
        data: &[u8],
        orig_len: u32,
    ) -> Result<(), WriteError> {
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&(secs as u32).to_ne_bytes());
        rec[4..8].copy_from_slice(&frac.to_ne_bytes());
        rec[8..12].copy_from_slice(&(data.len() as u32).to_ne_bytes());
        rec[12..16].copy_from_slice(&orig_len.max(data.len() as u32).to_ne_bytes());
        self.buf.extend_from_slice(&rec);
        self.buf.extend_from_slice(data);
        self.bytes += RECORD_HEADER_LEN + data.len() as u64;
        self.records += 1;
        self.ends.push_back(self.bytes);
        while self
            .ends
            .front()
            .is_some_and(|&e| e + REMEMBERED_BYTES < self.bytes)
        {
            self.ends.pop_front();
        }
        if self.buf.len() >= self.capacity {
            self.flush().map_err(WriteError::Io)?;
        }
        Ok(())
    }

    /// Hands the buffer over; a reader gone is not an error (it is noted),
    /// any other failure (disk full) is.
    fn flush(&mut self) -> io::Result<()> {
        if self.gone_after.is_some() {
            self.buf.clear();
            return Ok(());
        }
        let mut at = 0;
        while at < self.buf.len() {
            match self.sink.write(&self.buf[at..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    at += n;
                    self.flushed += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    self.reader_gone();
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.sink.flush()
    }

    /// The reader of stdout went away: what it read is what reached the
    /// pipe less what is still unread in it.
    fn reader_gone(&mut self) {
        if self.gone_after.is_none() {
            let unread = if self.streaming {
                unread_in_stdout()
            } else {
                0
            };
            self.gone_after = Some(self.flushed.saturating_sub(unread));
        }
    }

    /// Records whole in the file, or read by the stream's reader.
    fn delivered_records(&self) -> u64 {
        let delivered = self.gone_after.unwrap_or(self.flushed);
        let missing = self
            .ends
            .iter()
            .rev()
            .take_while(|&&e| e > delivered)
            .count() as u64;
        self.records - missing
    }
}

/// Bytes written to stdout (a pipe) that its reader has not read.
fn unread_in_stdout() -> u64 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int; on a non-pipe it fails harmlessly.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::FIONREAD, &mut n) };
    if rc == 0 {
        u64::try_from(n).unwrap_or(0)
    } else {
        0
    }
}

/// Opens `iface` with libpcap's block ring (TPACKET_V3) handing packets over
/// every BLOCK_MS: a stream reader sees them within that, and a flood costs
/// as little as `tcpdump -w`. PACKET immediate mode would force the older
/// ring whose slots are snaplen-sized: 128 packets in 32 MiB at the default
/// snaplen, and it dropped a tenth of a UDP flood that this ring kept whole.
fn open_live(iface: &str, snaplen: u32) -> crate::Result<Capture<Active>> {
    let opened = Capture::from_device(iface).and_then(|c| {
        c.timeout(BLOCK_MS)
            .snaplen(i32::try_from(snaplen).unwrap_or(i32::MAX))
            .buffer_size(KERNEL_BUFFER)
            .promisc(false)
            .open()
    });
    let mut cap = opened.map_err(|e| {
        if !has_cap_net_raw() {
            // SAFETY: geteuid cannot fail.
            let uid = unsafe { libc::geteuid() };
            // Capabilities added to a container reach a non-root process
            // only as file or ambient capabilities, which the image lacks.
            let as_root = if uid == 0 {
                String::new()
            } else {
                format!(" and, as this process runs as UID {uid}, run it as root (`kubectl debug --custom=manifests/debug/capture.json`)")
            };
            Error::unavailable(format!(
                "capturing needs the CAP_NET_RAW capability, which this process lacks: run it with `kubectl debug --profile=netadmin`, or add `securityContext.capabilities.add: [NET_RAW]` to the container{as_root}",
            ))
        } else {
            Error::usage(format!("cannot capture on {iface}: {}", pcap_message(&e)))
        }
    })?;
    if iface == "any" {
        // As tcpdump does: cooked v2 keeps the interface (and direction) of
        // each packet; a libpcap without it keeps cooked v1.
        let _ = cap.set_datalink(Linktype(LINKTYPE_LINUX_SLL2 as i32));
    }
    cap.setnonblock()
        .map_err(|e| Error::unavailable(format!("cannot capture on {iface}: {}", pcap_message(&e))))
}

/// Whether CAP_NET_RAW (bit 13) is in this process's effective set.
fn has_cap_net_raw() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 13) != 0)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Blocks until `fd` has packets, a signal arrives or `ms` have passed.
fn wait_readable(fd: RawFd, ms: i32) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; errors (EINTR) just end the wait.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// Whether the pipe on stdout lost its reader, seen without writing (a quiet
/// capture would otherwise only notice at its next packet).
fn stdout_reader_gone() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// libpcap's message without the crate's "libpcap error: " prefix.
fn pcap_message(e: &pcap::Error) -> String {
    match e {
        pcap::Error::PcapError(msg) => msg.clone(),
        other => other.to_string(),
    }
}

/// stdout without std's line buffering (which would split binary pcap on
/// every 0x0a byte) and without closing fd 1 on drop.
struct RawStdout;

impl Write for RawStdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: writes from a valid slice to fd 1.
        let n = unsafe { libc::write(libc::STDOUT_FILENO, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes `limit` bytes, then reports a broken pipe.
    struct Limited {
        limit: usize,
        taken: usize,
    }

    impl Write for Limited {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.taken >= self.limit {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.limit - self.taken);
            self.taken += n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn only_whole_records_that_got_through_count() {
        let mut w = RecordWriter::new(
            Box::new(Limited {
                limit: 1000,
                taken: 0,
            }),
            64,
            false,
        );
        w.start(65535, 1).ok();
        for i in 0..100 {
            if w.record(i, 0, &[0u8; 84], 84).is_err() {
                break;
            }
        }
        w.flush().unwrap();
        // 24 + 9 x 100 bytes fit in 1000.
        assert_eq!(w.gone_after, Some(1000));
        assert_eq!(w.delivered_records(), 9);
        assert!(matches!(
            w.start(65535, 113),
            Err(WriteError::MixedLinkTypes(1, 113))
        ));
    }
}
