//! The app's side, on the wire: how long it keeps an idle HTTP/1.1
//! connection open after a response. Four connections, started
//! [`STAGGER`] apart so that servers closing idle connections on a timer
//! tick (lighttpd checks once a second) show their spread; each sends one
//! keep-alive request, reads the whole response, then waits for the
//! server's FIN or RST (or `--max-wait`). The shortest sample is the app's
//! timeout: a proxy must idle out before the earliest close.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::servers::{self, ServerKind};
use crate::Error;

/// Connections measured, and the delay between their starts: together
/// they span more than a second, so a once-a-second idle sweep is seen at
/// different phases.
pub const CONNECTIONS: usize = 4;
pub const STAGGER: Duration = Duration::from_millis(400);
/// Samples further apart than this say the app closes on a tick.
const SPREAD_NOTE_S: f64 = 0.25;
/// Bytes of the body kept to tell who answered.
const BODY_KEPT: usize = 1024;

/// Larger response heads are not HTTP servers we can reason about.
const MAX_HEAD: usize = 64 * 1024;

/// How the app's end of an idle connection went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClosedBy {
    /// An orderly close (read returned 0).
    Fin,
    /// The app reset the connection.
    Rst,
    /// Still open when `--max-wait` ran out.
    None,
    /// The app closes right after the response (`Connection: close`, an
    /// HTTP/1.0 answer or a body delimited by the close): nothing to reuse.
    Immediate,
}

impl ClosedBy {
    pub fn label(self) -> &'static str {
        match self {
            ClosedBy::Fin => "fin",
            ClosedBy::Rst => "rst",
            ClosedBy::None => "none",
            ClosedBy::Immediate => "immediate",
        }
    }
}

/// The app-side evidence (keys are the check's API).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppSide {
    pub upstream: String,
    pub http_version: String,
    pub status_code: u16,
    /// The `Server` header, to name the setting to change.
    pub server: Option<String>,
    /// The server as identified from its headers and behaviour.
    pub server_kind: ServerKind,
    /// What identified it, in words.
    pub server_identified_by: String,
    pub connection_header: Option<String>,
    /// What the app promises in `Keep-Alive: timeout=N`.
    pub advertised_keepalive_s: Option<f64>,
    /// The shortest measured idle time before the app closed; `None` when
    /// the connections were still open at `--max-wait`.
    pub app_idle_timeout_s: Option<f64>,
    pub closed_by: ClosedBy,
    /// Per connection, in the order started: seconds from the end of the
    /// response to the close.
    pub samples_s: Vec<Option<f64>>,
    /// Longest minus shortest closed sample.
    pub samples_spread_s: Option<f64>,
    pub max_wait_s: f64,
}

/// What one connection saw.
#[derive(Debug, Clone)]
struct Sample {
    head: ResponseHead,
    /// The start of the body, to tell who answered.
    body: Vec<u8>,
    closed_by: ClosedBy,
    after_s: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct ResponseHead {
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// In the order sent, names as sent.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    /// The server said it will not keep this connection.
    fn announces_close(&self) -> bool {
        self.has_token("connection", "close")
            || (self.version == "HTTP/1.0" && !self.has_token("connection", "keep-alive"))
    }

    /// `Keep-Alive: timeout=5, max=100` -> 5.
    pub fn advertised_keepalive_s(&self) -> Option<f64> {
        self.header("keep-alive")?.split(',').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("timeout")
                .then(|| v.trim().parse::<f64>().ok())
                .flatten()
        })
    }
}

/// Measures the app at the first of `addrs` that accepts (named `upstream`
/// in the evidence).
/// `io_timeout` bounds connecting and reading the response; `max_wait`
/// bounds the idle wait.
pub async fn measure_app(
    upstream: &str,
    addrs: &[SocketAddr],
    path: &str,
    io_timeout: Duration,
    max_wait: Duration,
) -> crate::Result<AppSide> {
    let host = upstream.to_string();
    let progress = tokio::spawn(progress(upstream.to_string(), max_wait));
    let one = |i: u32| {
        let host = &host;
        async move {
            tokio::time::sleep(STAGGER * i).await;
            one_connection(addrs, host, path, io_timeout, max_wait).await
        }
    };
    // The first failure ends the run: the other connections would fail alike.
    let result = tokio::try_join!(one(0), one(1), one(2), one(3));
    progress.abort();
    let _ = progress.await;
    let (a, b, c, d) = result?;
    let samples = [a, b, c, d];
    check_answer(upstream, &samples[0])?;
    Ok(summarize(upstream, &samples, max_wait))
}

/// Answers that measure nothing: a plain request to a TLS port answered
/// with 400, or any error answer the server closes right away.
fn check_answer(upstream: &str, sample: &Sample) -> crate::Result<()> {
    let head = &sample.head;
    let body = String::from_utf8_lossy(&sample.body);
    let first_line = body
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let text = body.to_ascii_lowercase();
    if matches!(head.status, 400 | 497) && ["https", "ssl", "tls"].iter().any(|w| text.contains(w))
    {
        return Err(Error::unavailable(format!(
            "{upstream} is an HTTPS port: it answered the plain HTTP request with {} {} {:?}{}; measure the port that speaks plain HTTP (Envoy's upstream), or the app behind the TLS",
            head.version,
            head.status,
            first_line.chars().take(120).collect::<String>(),
            head.header("server").map_or(String::new(), |s| format!(" (Server: {s})"))
        )));
    }
    if head.status >= 400 && sample.closed_by == ClosedBy::Immediate {
        return Err(Error::unavailable(format!(
            "{upstream} answered {} {} and closed the connection: an error answer says nothing of how it keeps good ones; use --path with a path that answers 2xx or 3xx",
            head.status, head.reason
        )));
    }
    Ok(())
}

fn summarize(upstream: &str, samples: &[Sample], max_wait: Duration) -> AppSide {
    let closed: Vec<&Sample> = samples.iter().filter(|s| s.after_s.is_some()).collect();
    let shortest = closed.iter().min_by(|a, b| {
        a.after_s
            .unwrap_or(0.0)
            .total_cmp(&b.after_s.unwrap_or(0.0))
    });
    let longest = closed
        .iter()
        .filter_map(|s| s.after_s)
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
    let first = &samples[0];
    let all_immediate = samples.iter().all(|s| s.closed_by == ClosedBy::Immediate);
    let app_idle_timeout_s = shortest.and_then(|s| s.after_s).map(round_ms);
    let (server_kind, server_identified_by) =
        servers::identify(&first.head, &first.body, app_idle_timeout_s);
    AppSide {
        upstream: upstream.to_string(),
        http_version: first.head.version.clone(),
        status_code: first.head.status,
        server: first.head.header("server").map(str::to_string),
        server_kind,
        server_identified_by,
        connection_header: first.head.header("connection").map(str::to_string),
        advertised_keepalive_s: first.head.advertised_keepalive_s(),
        app_idle_timeout_s,
        closed_by: if all_immediate {
            ClosedBy::Immediate
        } else {
            shortest.map_or(ClosedBy::None, |s| s.closed_by)
        },
        samples_s: samples.iter().map(|s| s.after_s.map(round_ms)).collect(),
        samples_spread_s: app_idle_timeout_s
            .zip(longest)
            .map(|(short, long)| round_ms(long - short)),
        max_wait_s: max_wait.as_secs_f64(),
    }
}

impl AppSide {
    /// The samples spread: the app closes on a timer tick, or under load.
    pub fn spread_note(&self) -> Option<String> {
        let spread = self.samples_spread_s.filter(|s| *s >= SPREAD_NOTE_S)?;
        Some(format!(
            "the connections, started {} ms apart, closed up to {spread} s apart: the app closes idle connections on a timer tick (lighttpd sweeps once a second), so a connection can close as early as the shortest sample; judged on it",
            STAGGER.as_millis()
        ))
    }
}

fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// The User-Agent of the measuring requests (also what routing sees).
pub fn user_agent() -> String {
    format!("podprobe/{}", env!("CARGO_PKG_VERSION"))
}

async fn one_connection(
    addrs: &[SocketAddr],
    host: &str,
    path: &str,
    io_timeout: Duration,
    max_wait: Duration,
) -> crate::Result<Sample> {
    let (mut stream, addr) = connect(addrs, io_timeout).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {}\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n",
        user_agent()
    );
    timeout(io_timeout, stream.write_all(request.as_bytes()))
        .await
        .map_err(|_| Error::unavailable(format!("sending the request to {addr}: timed out")))?
        .map_err(|e| Error::io(format!("sending the request to {addr}"), e))?;
    let deadline = crate::clock::deadline(io_timeout);
    let (head, body, close_delimited) = read_response(&mut stream, addr, deadline).await?;
    let closed = if close_delimited {
        Some((ClosedBy::Fin, 0.0))
    } else {
        // The idle time starts when the response's last segment arrived,
        // not when this process got round to reading it.
        let since = kernel_arrival(&stream, Arrival::Data).unwrap_or_else(Instant::now);
        wait_for_close(&mut stream, since, max_wait).await
    };
    let announced = close_delimited || head.announces_close();
    Ok(Sample {
        closed_by: match closed {
            Some(_) if announced => ClosedBy::Immediate,
            Some((how, _)) => how,
            None => ClosedBy::None,
        },
        after_s: closed.map(|(_, after)| after),
        head,
        body,
    })
}

/// Connects to the first address that accepts (`localhost` has two).
async fn connect(
    addrs: &[SocketAddr],
    io_timeout: Duration,
) -> crate::Result<(TcpStream, SocketAddr)> {
    let mut last = Error::usage("no address to connect to");
    for &addr in addrs {
        match timeout(io_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok((stream, addr)),
            Ok(Err(e)) => last = Error::io(format!("connecting to {addr}"), e),
            Err(_) => {
                last = Error::unavailable(format!(
                    "connecting to {addr}: no answer within {io_timeout:?}"
                ))
            }
        }
    }
    Err(last)
}

/// Waits for the app to close an idle connection: FIN or RST and the
/// seconds it took since `since`, or `None` when `max_wait` runs out. Bytes
/// the app sends meanwhile (some servers write a 408 before closing) do not
/// end the wait.
async fn wait_for_close(
    stream: &mut TcpStream,
    since: Instant,
    max_wait: Duration,
) -> Option<(ClosedBy, f64)> {
    let mut buf = [0u8; 4096];
    loop {
        let left = max_wait.checked_sub(since.elapsed())?;
        let how = match timeout(left, stream.read(&mut buf)).await.ok()? {
            Ok(0) => ClosedBy::Fin,
            Ok(_) => continue,
            Err(_) => ClosedBy::Rst,
        };
        // A FIN carries an ACK, whose arrival the kernel stamps; a reset
        // updates no such stamp, so its time is when the read saw it.
        let at = match how {
            ClosedBy::Fin => kernel_arrival(stream, Arrival::Ack)
                .filter(|at| *at >= since)
                .unwrap_or_else(Instant::now),
            _ => Instant::now(),
        };
        return Some((how, at.duration_since(since).as_secs_f64()));
    }
}

/// Which arrival [`kernel_arrival`] reads.
#[derive(Debug, Clone, Copy)]
enum Arrival {
    /// The last segment that carried data.
    Data,
    /// The last segment that carried an ACK (a FIN does).
    Ack,
}

/// When the kernel received the connection's last data segment or last
/// ACK, from TCP_INFO's `last_data_recv` / `last_ack_recv`: ages the kernel
/// keeps in milliseconds (to its tick), so that this process being
/// scheduled late on a busy node does not shorten or lengthen the measured
/// idle time. `None` where TCP_INFO cannot be read.
fn kernel_arrival(stream: &TcpStream, arrival: Arrival) -> Option<Instant> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain integers, valid when zeroed; getsockopt
    // writes at most `len` bytes into it and reports how many it wrote.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let now = Instant::now();
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_last_ack_recv) + 4;
    if rc != 0 || (len as usize) < needed {
        return None;
    }
    let age_ms = match arrival {
        Arrival::Data => info.tcpi_last_data_recv,
        Arrival::Ack => info.tcpi_last_ack_recv,
    };
    now.checked_sub(Duration::from_millis(age_ms.into()))
}

/// Reads one whole response (skipping 1xx). Returns its head, the start of
/// its body and whether the body ran to the close of the connection.
pub(crate) async fn read_response(
    stream: &mut (impl AsyncRead + Unpin),
    addr: SocketAddr,
    deadline: Instant,
) -> crate::Result<(ResponseHead, Vec<u8>, bool)> {
    let mut reader = Reader {
        stream,
        buf: Vec::new(),
        deadline,
        addr,
        kept: Vec::new(),
    };
    loop {
        let head_bytes = reader.until_blank_line().await?;
        let head = parse_head(&head_bytes).map_err(|why| {
            Error::unavailable(format!(
                "{addr} did not answer with HTTP/1.x ({why}): {:?}",
                String::from_utf8_lossy(&head_bytes[..head_bytes.len().min(60)])
            ))
        })?;
        if (100..200).contains(&head.status) {
            if head.status == 101 {
                return Err(Error::unavailable(format!(
                    "{addr} switched protocols (101)"
                )));
            }
            continue;
        }
        if matches!(head.status, 204 | 304) {
            return Ok((head, reader.kept, false));
        }
        if head.has_token("transfer-encoding", "chunked") {
            reader.chunked_body().await?;
            return Ok((head, reader.kept, false));
        }
        if let Some(len) = head.header("content-length") {
            let len: u64 = len.trim().parse().map_err(|_| {
                Error::unavailable(format!("{addr} sent a bad Content-Length {len:?}"))
            })?;
            reader.skip(len).await?;
            return Ok((head, reader.kept, false));
        }
        reader.drain_to_eof().await?;
        return Ok((head, reader.kept, true));
    }
}

struct Reader<'a, S> {
    stream: &'a mut S,
    buf: Vec<u8>,
    deadline: Instant,
    addr: SocketAddr,
    /// The first [`BODY_KEPT`] bytes of the body.
    kept: Vec<u8>,
}

impl<S: AsyncRead + Unpin> Reader<'_, S> {
    /// Reads more bytes into the buffer; Ok(false) at end of stream.
    async fn fill(&mut self) -> crate::Result<bool> {
        let addr = self.addr;
        let left = self.deadline.saturating_duration_since(Instant::now());
        let mut chunk = [0u8; 16 * 1024];
        let n = timeout(left, self.stream.read(&mut chunk))
            .await
            .map_err(|_| {
                Error::unavailable(format!("{addr} did not send a complete response in time"))
            })?
            .map_err(|e| Error::io(format!("reading the response from {addr}"), e))?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    async fn fill_or_fail(&mut self) -> crate::Result<()> {
        if self.fill().await? {
            Ok(())
        } else {
            Err(Error::unavailable(format!(
                "{} closed the connection in the middle of a response",
                self.addr
            )))
        }
    }

    /// Removes `n` buffered body bytes, keeping the first ones.
    fn consume_body(&mut self, n: usize) {
        let keep = n.min(BODY_KEPT.saturating_sub(self.kept.len()));
        self.kept.extend_from_slice(&self.buf[..keep]);
        self.buf.drain(..n);
    }

    /// The response head up to its blank line; bare LF line ends are read
    /// as servers and clients read them.
    async fn until_blank_line(&mut self) -> crate::Result<Vec<u8>> {
        loop {
            if let Some((i, len)) = head_end(&self.buf) {
                let head = self.buf[..i].to_vec();
                self.buf.drain(..i + len);
                return Ok(head);
            }
            // Not HTTP/1.x at all: say what answered now rather than wait
            // for a blank line that never comes.
            if let Some(what) = not_http1(&self.buf) {
                return Err(Error::unavailable(format!("{} {what}", self.addr)));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Error::unavailable(format!(
                    "{} sent over {MAX_HEAD} bytes without ending a response head",
                    self.addr
                )));
            }
            if !self.fill().await? {
                return Err(Error::unavailable(if self.buf.is_empty() {
                    format!("{} closed the connection without answering", self.addr)
                } else {
                    format!(
                        "{} closed the connection in the middle of a response head: {:?}",
                        self.addr,
                        String::from_utf8_lossy(&self.buf[..self.buf.len().min(60)])
                    )
                }));
            }
        }
    }

    /// One line (chunk size or trailer), LF or CRLF terminated.
    async fn line(&mut self) -> crate::Result<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&self.buf[..i])
                    .trim_end_matches('\r')
                    .to_string();
                self.buf.drain(..i + 1);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Error::unavailable(format!(
                    "{} sent a chunk line too long",
                    self.addr
                )));
            }
            self.fill_or_fail().await?;
        }
    }

    async fn skip(&mut self, mut n: u64) -> crate::Result<()> {
        loop {
            let take = (self.buf.len() as u64).min(n) as usize;
            self.consume_body(take);
            n -= take as u64;
            if n == 0 {
                return Ok(());
            }
            self.fill_or_fail().await?;
        }
    }

    async fn chunked_body(&mut self) -> crate::Result<()> {
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| {
                Error::unavailable(format!("{} sent a bad chunk size {line:?}", self.addr))
            })?;
            if size == 0 {
                // Trailers, up to the blank line.
                while !self.line().await?.is_empty() {}
                return Ok(());
            }
            self.skip(size).await?;
            // The chunk's line end (CRLF, or a bare LF).
            self.line().await?;
        }
    }

    async fn drain_to_eof(&mut self) -> crate::Result<()> {
        loop {
            let n = self.buf.len();
            self.consume_body(n);
            if !self.fill().await? {
                return Ok(());
            }
        }
    }
}

/// Where the head ends: the first blank line, `CRLF CRLF` or bare `LF LF`
/// (and their mixes); returns its offset and the terminator's length.
fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\n") {
            return Some((nl, 2));
        }
        if rest.starts_with(b"\r\n") {
            return Some((nl, 3));
        }
        i = nl + 1;
    }
    None
}

/// Names what answered when it is not HTTP/1.x, from its first bytes;
/// `None` while it may still be HTTP/1.x (or too few bytes to tell).
fn not_http1(buf: &[u8]) -> Option<String> {
    let seen = buf.len().min(5);
    if seen == 0 || buf[..seen] == b"HTTP/"[..seen] {
        return None;
    }
    if matches!(buf[0], 0x15 | 0x16) && buf.get(1) == Some(&3) {
        let what = if buf[0] == 0x15 {
            "a TLS alert"
        } else {
            "a TLS handshake"
        };
        return Some(format!(
            "answered the plain HTTP request with {what}: it is a TLS port; measure the port that speaks plain HTTP"
        ));
    }
    if buf[0] == 0 {
        // An HTTP/2 frame header: length (3), type, flags, stream 0.
        if buf.len() < 9 {
            return None;
        }
        let kind = match buf[3] {
            4 => Some("SETTINGS"),
            7 => Some("GOAWAY"),
            _ => None,
        };
        if let Some(kind) = kind.filter(|_| buf[5..9] == [0, 0, 0, 0]) {
            return Some(format!(
                "answered with an HTTP/2 {kind} frame: it speaks only HTTP/2 (h2c, as gRPC servers do), so there is no HTTP/1.1 keep-alive to measure"
            ));
        }
    }
    Some(format!(
        "did not answer with HTTP/1.x: {:?}",
        String::from_utf8_lossy(&buf[..buf.len().min(60)])
    ))
}

fn parse_head(bytes: &[u8]) -> Result<ResponseHead, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the head is not text")?;
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err("no HTTP/1.x status line");
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or("no status code")?;
    let reason = parts.next().unwrap_or("").to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(ResponseHead {
        version: version.to_string(),
        status,
        reason,
        headers,
    })
}

/// Tells a person why nothing happens for a while: a line updated each
/// second on a terminal, otherwise one line at the start.
async fn progress(upstream: String, max_wait: Duration) {
    let start = Instant::now();
    let mut stderr = std::io::stderr();
    let terminal = stderr.is_terminal();
    // Quick answers (a server that closes at once) print nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if !terminal {
        eprintln!(
            "podprobe: waiting up to {} s for {upstream} to close idle connections…",
            max_wait.as_secs()
        );
        return;
    }
    let _guard = ClearLine;
    loop {
        use std::io::Write;
        let _ = write!(
            stderr,
            "\r\x1b[Kwaiting for {upstream} to close idle connections ({} s)…",
            start.elapsed().as_secs()
        );
        let _ = stderr.flush();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Clears the progress line when the wait ends (the task is aborted).
struct ClearLine;

impl Drop for ClearLine {
    fn drop(&mut self) {
        eprint!("\r\x1b[K");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> ResponseHead {
        parse_head(text.as_bytes()).unwrap()
    }

    #[test]
    fn heads_parse_and_announce_their_intent() {
        let node = head("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2");
        assert_eq!(node.advertised_keepalive_s(), Some(5.0));
        assert!(!node.announces_close());
        let python = head("HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6 Python/3.11.2");
        assert!(python.announces_close());
        assert_eq!(
            python.header("SERVER"),
            Some("SimpleHTTP/0.6 Python/3.11.2")
        );
        let closing = head("HTTP/1.1 200 OK\r\nConnection: Close");
        assert!(closing.announces_close());
        assert!(parse_head(b"SSH-2.0-OpenSSH_9.2").is_err());
        assert!(parse_head(b"HTTP/1.1 abc").is_err());
    }

    #[test]
    fn the_shortest_sample_is_the_apps_timeout() {
        let s = |closed_by, after_s| Sample {
            head: head("HTTP/1.1 200 OK"),
            body: Vec::new(),
            closed_by,
            after_s,
        };
        // A tick-based closer (lighttpd): staggered connections close
        // apart; the earliest is what a proxy must beat.
        let app = summarize(
            "127.0.0.1:1",
            &[
                s(ClosedBy::Fin, Some(4.6)),
                s(ClosedBy::Fin, Some(4.2004)),
                s(ClosedBy::None, None),
                s(ClosedBy::Fin, Some(5.0)),
            ],
            Duration::from_secs(10),
        );
        assert_eq!(app.app_idle_timeout_s, Some(4.2));
        assert_eq!(app.closed_by, ClosedBy::Fin);
        assert_eq!(app.samples_s, vec![Some(4.6), Some(4.2), None, Some(5.0)]);
        assert_eq!(app.samples_spread_s, Some(0.8));
        assert!(app.spread_note().is_some());
        let open = summarize(
            "127.0.0.1:1",
            &[s(ClosedBy::None, None), s(ClosedBy::None, None)],
            Duration::from_secs(10),
        );
        assert_eq!(open.app_idle_timeout_s, None);
        assert_eq!(open.closed_by, ClosedBy::None);
        assert_eq!(open.spread_note(), None);
    }

    #[test]
    fn bare_lf_heads_parse() {
        let text = b"HTTP/1.1 200 OK\nContent-Length: 3\nKeep-Alive: timeout=4\n\nok\n";
        let (end, len) = head_end(text).unwrap();
        assert_eq!((end, len), (text.len() - 5, 2));
        let h = parse_head(&text[..end]).unwrap();
        assert_eq!(h.header("content-length"), Some("3"));
        assert_eq!(h.advertised_keepalive_s(), Some(4.0));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n"), Some((22, 3)));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n"), None);
        assert_eq!(head("HTTP/1.1 200 ").reason, "");
    }

    #[test]
    fn what_answered_when_not_http1() {
        assert_eq!(not_http1(b"HTTP/1."), None);
        assert_eq!(not_http1(b""), None);
        // A TLS alert, as Go's TLS server answers a plain request.
        assert!(not_http1(&[0x15, 3, 1, 0, 2, 2, 10])
            .unwrap()
            .contains("TLS alert"));
        // hyper's HTTP/2-only server: a SETTINGS frame on stream 0.
        let settings = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
        assert!(not_http1(&settings).unwrap().contains("HTTP/2 SETTINGS"));
        assert_eq!(not_http1(&settings[..5]), None);
        assert!(not_http1(b"SSH-2.0-OpenSSH").unwrap().contains("SSH-2.0"));
    }
}
