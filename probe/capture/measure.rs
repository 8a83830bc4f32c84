//! The capture itself: open a live interface (libpcap) or a pcap/pcapng
//! file, write every packet as a pcap record, optionally feed the analyzer,
//! and stop cleanly on every stop condition. The hot path
//! copies each packet once into a buffered writer and decodes nothing
//! unless `--analyze` asked for it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pcap::{Activated, Capture};

use super::analyze::Analyzer;
use super::measure_dns::DnsEvidence;
use super::measure_tcp::TcpEvidence;
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
/// Packets handled per libpcap call when reading a file.
const FILE_BATCH: u64 = 4096;
const PCAP_HEADER_LEN: u64 = 24;
const RECORD_HEADER_LEN: u64 = 16;

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
}

pub struct Outcome {
    pub captured: u64,
    /// Packets the kernel dropped (live captures only).
    pub dropped: Option<u64>,
    /// The file ended in the middle of a record: what came before it was used.
    pub truncated: Option<String>,
    pub analysis: Option<(DnsEvidence, TcpEvidence)>,
}

pub fn run(plan: &Plan) -> crate::Result<Outcome> {
    // Live: libpcap's own wait ignores its timeout until a packet comes, so
    // the handle is non-blocking and this loop polls its descriptor itself.
    let mut live_fd = None;
    let mut cap: Capture<dyn Activated> = match &plan.source {
        Source::Live(iface) => {
            let cap = open_live(iface, plan.snaplen)?;
            live_fd = Some(cap.as_raw_fd());
            cap.into()
        }
        Source::File(path) => Capture::from_file(path)
            .map_err(|e| {
                let path = path.display().to_string();
                // libpcap names the file itself in some messages.
                let message = pcap_message(&e);
                let message = message.trim_start_matches(&format!("{path}: ")).to_string();
                Error::Input {
                    path,
                    cause: io::Error::new(io::ErrorKind::InvalidData, message),
                }
            })?
            .into(),
    };
    if let Some(filter) = &plan.filter {
        cap.filter(filter, true)
            .map_err(|e| Error::usage(format!("bad filter '{filter}': {}", pcap_message(&e))))?;
    }
    let linktype = cap.get_datalink().0;
    let live = live_fd.is_some();

    let streaming = matches!(plan.sink, Sink::Stdout);
    let mut out: Option<BufWriter<Box<dyn Write>>> = match &plan.sink {
        Sink::None => None,
        Sink::Stdout => Some(BufWriter::with_capacity(STREAM_BUFFER, Box::new(RawStdout))),
        Sink::File(path) => Some(BufWriter::with_capacity(
            FILE_BUFFER,
            Box::new(File::create(path).map_err(|cause| Error::Input {
                path: path.display().to_string(),
                cause,
            })?),
        )),
    };
    let mut summaries = plan
        .summaries
        .then(|| BufWriter::with_capacity(STREAM_BUFFER, RawStdout));
    let mut written = PCAP_HEADER_LEN;
    // Set by every stop condition met inside a batch: -c, --max-size, a
    // reader gone, a signal, the end of a file.
    let mut done = false;
    if let Some(w) = out.as_mut() {
        // The header goes out at once: a reader (Wireshark) starts now, and a
        // file is a valid empty capture from the start.
        let header = pcap_header(plan.snaplen, linktype);
        if let Err(e) = w.write_all(&header).and_then(|()| w.flush()) {
            done = write_failed(e)?;
        }
    }

    let mut analyzer = plan.analyze.then(Analyzer::default);
    let mut captured: u64 = 0;
    let mut truncated = None;
    let started = Instant::now();
    let deadline = plan.duration.map(|d| started + d);
    signals::install();
    let mut write_error: Option<io::Error> = None;

    // After a signal or the deadline a live capture makes one last pass:
    // the kernel retires its open block within BLOCK_MS, so the packets
    // that arrived before the stop still reach the file.
    // The pass is bounded too, or a flood would keep it going.
    let mut drain_end: Option<Instant> = None;
    while !done {
        if drain_end.is_some_and(|end| Instant::now() >= end) {
            break;
        }
        if drain_end.is_none()
            && (signals::stop_requested() || deadline.is_some_and(|d| Instant::now() >= d))
        {
            let Some(fd) = live_fd else { break };
            drain_end = Some(Instant::now() + Duration::from_millis(4 * BLOCK_MS as u64));
            wait_readable(fd, 2 * BLOCK_MS);
        }
        let draining = drain_end.is_some();
        let remaining = plan.count.map(|c| c - captured);
        if remaining == Some(0) {
            break;
        }
        let batch = match (live, remaining) {
            (true, r) => r,
            (false, r) => Some(r.unwrap_or(FILE_BATCH).min(FILE_BATCH)),
        };
        let batch = batch.map(|b| {
            usize::try_from(b)
                .unwrap_or(usize::MAX)
                .min(i32::MAX as usize)
        });
        let result = cap.dispatch(batch, |packet| {
            if done {
                return;
            }
            let caplen = packet.data.len() as u64;
            let record = RECORD_HEADER_LEN + caplen;
            if plan.max_size.is_some_and(|max| written + record > max) {
                done = true;
                return;
            }
            let header = packet.header;
            if let Some(w) = out.as_mut() {
                let mut rec = [0u8; 16];
                rec[0..4].copy_from_slice(&(header.ts.tv_sec as u32).to_ne_bytes());
                rec[4..8].copy_from_slice(&(header.ts.tv_usec as u32).to_ne_bytes());
                rec[8..12].copy_from_slice(&header.caplen.to_ne_bytes());
                rec[12..16].copy_from_slice(&header.len.to_ne_bytes());
                if let Err(e) = w.write_all(&rec).and_then(|()| w.write_all(packet.data)) {
                    if e.kind() != io::ErrorKind::BrokenPipe {
                        write_error = Some(e);
                    }
                    done = true;
                    return;
                }
            }
            written += record;
            captured += 1;
            // timeval fields are i64 on 64-bit Linux, narrower elsewhere.
            #[allow(clippy::unnecessary_cast)]
            let ts_us = header.ts.tv_sec as i64 * 1_000_000 + header.ts.tv_usec as i64;
            if let Some(a) = analyzer.as_mut() {
                a.packet(linktype, ts_us, packet.data);
            }
            if let Some(s) = summaries.as_mut() {
                let line = super::summary::line(linktype, ts_us, packet.data, header.len);
                if s.write_all(line.as_bytes()).is_err() {
                    done = true;
                }
            }
        });
        match result {
            Ok(0) => match live_fd {
                None => done = true,
                Some(_) if draining => done = true,
                Some(fd) => {
                    // Idle: wait for packets, a signal (EINTR) or the poll
                    // interval, and see whether the reader left meanwhile.
                    wait_readable(fd, POLL_MS);
                    done = (streaming || plan.summaries) && stdout_reader_gone();
                }
            },
            Ok(_) => {
                if let Some(w) = out.as_mut() {
                    if let Err(e) = flush_if(w, streaming) {
                        done = write_failed(e)?;
                    }
                }
                if let Some(s) = summaries.as_mut() {
                    if s.flush().is_err() {
                        done = true;
                    }
                }
            }
            Err(_) if draining || signals::stop_requested() => done = true,
            Err(e) if !live => {
                // A file cut short: keep what was read before the cut.
                truncated = Some(pcap_message(&e));
                done = true;
            }
            Err(e) => {
                return Err(Error::unavailable(format!(
                    "capture failed: {}",
                    pcap_message(&e)
                )))
            }
        }
    }
    if let Some(e) = write_error {
        return Err(Error::io("writing packets", e));
    }
    if let Some(mut w) = out {
        if let Err(e) = w.flush() {
            write_failed(e)?;
        }
    }
    if let Some(mut s) = summaries {
        let _ = s.flush();
    }
    let dropped = if live {
        cap.stats().ok().map(|s| u64::from(s.dropped))
    } else {
        None
    };
    Ok(Outcome {
        captured,
        dropped,
        truncated,
        analysis: analyzer.map(Analyzer::finish),
    })
}

/// Opens `iface` with libpcap's block ring (TPACKET_V3) handing packets over
/// every BLOCK_MS: a stream reader sees them within that, and a flood costs
/// as little as `tcpdump -w`. PACKET immediate mode would force the older
/// ring whose slots are snaplen-sized: 128 packets in 32 MiB at the default
/// snaplen, and it dropped a tenth of a UDP flood that this ring kept whole.
fn open_live(iface: &str, snaplen: u32) -> crate::Result<Capture<pcap::Active>> {
    let opened = Capture::from_device(iface).and_then(|c| {
        c.timeout(BLOCK_MS)
            .snaplen(i32::try_from(snaplen).unwrap_or(i32::MAX))
            .buffer_size(KERNEL_BUFFER)
            .promisc(false)
            .open()?
            .setnonblock()
    });
    opened.map_err(|e| {
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
    })
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

/// The classic pcap file header (microsecond timestamps, native byte order,
/// as libpcap writes it).
fn pcap_header(snaplen: u32, linktype: i32) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_ne_bytes());
    h[4..6].copy_from_slice(&2u16.to_ne_bytes());
    h[6..8].copy_from_slice(&4u16.to_ne_bytes());
    h[16..20].copy_from_slice(&snaplen.to_ne_bytes());
    h[20..24].copy_from_slice(&(linktype as u32).to_ne_bytes());
    h
}

fn flush_if(w: &mut impl Write, streaming: bool) -> io::Result<()> {
    if streaming {
        w.flush()
    } else {
        Ok(())
    }
}

/// A reader that went away ends the capture quietly; any other write
/// failure (disk full) is an error.
fn write_failed(e: io::Error) -> crate::Result<bool> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(true)
    } else {
        Err(Error::io("writing packets", e))
    }
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
