//! The app's side, on the wire: how long it keeps an idle HTTP/1.1
//! connection open after a response. Three connections in parallel (the
//! median is reported), each
//! sends one keep-alive request, reads the whole response, then waits for
//! the server's FIN or RST (or `--max-wait`).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::Error;

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
    pub connection_header: Option<String>,
    /// What the app promises in `Keep-Alive: timeout=N`.
    pub advertised_keepalive_s: Option<f64>,
    /// The median measured idle time before the app closed; `None` when the
    /// connections were still open at `--max-wait`.
    pub app_idle_timeout_s: Option<f64>,
    pub closed_by: ClosedBy,
    /// Per connection: seconds from the end of the response to the close.
    pub samples_s: Vec<Option<f64>>,
    pub max_wait_s: f64,
}

/// What one connection saw.
#[derive(Debug, Clone)]
struct Sample {
    head: ResponseHead,
    closed_by: ClosedBy,
    after_s: Option<f64>,
}

#[derive(Debug, Clone, Default)]
struct ResponseHead {
    version: String,
    status: u16,
    headers: Vec<(String, String)>,
}

impl ResponseHead {
    fn header(&self, name: &str) -> Option<&str> {
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
    fn advertised_keepalive_s(&self) -> Option<f64> {
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
    let one = || one_connection(addrs, &host, path, io_timeout, max_wait);
    // The first failure ends the run: the other connections would fail alike.
    let result = tokio::try_join!(one(), one(), one());
    progress.abort();
    let _ = progress.await;
    let (a, b, c) = result?;
    let samples = [a, b, c];
    Ok(summarize(upstream, &samples, max_wait))
}

fn summarize(upstream: &str, samples: &[Sample], max_wait: Duration) -> AppSide {
    // Order by close time, connections still open last; the middle one is
    // the median.
    let mut ordered: Vec<&Sample> = samples.iter().collect();
    ordered.sort_by(|a, b| {
        a.after_s
            .unwrap_or(f64::INFINITY)
            .total_cmp(&b.after_s.unwrap_or(f64::INFINITY))
    });
    let median = ordered[ordered.len() / 2];
    let first = &samples[0].head;
    let all_immediate = samples.iter().all(|s| s.closed_by == ClosedBy::Immediate);
    AppSide {
        upstream: upstream.to_string(),
        http_version: first.version.clone(),
        status_code: first.status,
        server: first.header("server").map(str::to_string),
        connection_header: first.header("connection").map(str::to_string),
        advertised_keepalive_s: first.advertised_keepalive_s(),
        app_idle_timeout_s: median.after_s.map(round_ms),
        closed_by: if all_immediate {
            ClosedBy::Immediate
        } else {
            median.closed_by
        },
        samples_s: samples.iter().map(|s| s.after_s.map(round_ms)).collect(),
        max_wait_s: max_wait.as_secs_f64(),
    }
}

fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
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
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: podprobe/{}\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    timeout(io_timeout, stream.write_all(request.as_bytes()))
        .await
        .map_err(|_| Error::unavailable(format!("sending the request to {addr}: timed out")))?
        .map_err(|e| Error::io(format!("sending the request to {addr}"), e))?;
    let deadline = Instant::now() + io_timeout;
    let (head, close_delimited) = read_response(&mut stream, addr, deadline).await?;
    let closed = if close_delimited {
        Some((ClosedBy::Fin, 0.0))
    } else {
        wait_for_close(&mut stream, max_wait).await
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
/// seconds it took, or `None` when `max_wait` runs out. Bytes the app sends
/// meanwhile (some servers write a 408 before closing) do not end the wait.
async fn wait_for_close(stream: &mut TcpStream, max_wait: Duration) -> Option<(ClosedBy, f64)> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = max_wait.checked_sub(start.elapsed())?;
        let how = match timeout(left, stream.read(&mut buf)).await.ok()? {
            Ok(0) => ClosedBy::Fin,
            Ok(_) => continue,
            Err(_) => ClosedBy::Rst,
        };
        return Some((how, start.elapsed().as_secs_f64()));
    }
}

/// Reads one whole response (skipping 1xx). Returns its head and whether
/// the body ran to the close of the connection.
async fn read_response(
    stream: &mut TcpStream,
    addr: SocketAddr,
    deadline: Instant,
) -> crate::Result<(ResponseHead, bool)> {
    let mut reader = Reader {
        stream,
        buf: Vec::new(),
        deadline,
        addr,
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
            return Ok((head, false));
        }
        if head.has_token("transfer-encoding", "chunked") {
            reader.chunked_body().await?;
            return Ok((head, false));
        }
        if let Some(len) = head.header("content-length") {
            let len: u64 = len.trim().parse().map_err(|_| {
                Error::unavailable(format!("{addr} sent a bad Content-Length {len:?}"))
            })?;
            reader.skip(len).await?;
            return Ok((head, false));
        }
        reader.drain_to_eof().await?;
        return Ok((head, true));
    }
}

struct Reader<'a> {
    stream: &'a mut TcpStream,
    buf: Vec<u8>,
    deadline: Instant,
    addr: SocketAddr,
}

impl Reader<'_> {
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

    async fn until_blank_line(&mut self) -> crate::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                let head = self.buf[..i].to_vec();
                self.buf.drain(..i + 4);
                return Ok(head);
            }
            // Not HTTP at all (an SSH banner, TLS, a binary protocol): say so
            // now rather than wait for a blank line that never comes.
            let seen = self.buf.len().min(5);
            if self.buf[..seen] != b"HTTP/"[..seen] {
                return Err(Error::unavailable(format!(
                    "{} did not answer with HTTP/1.x: {:?}",
                    self.addr,
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(60)])
                )));
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
                        "{} closed the connection in the middle of a response head",
                        self.addr
                    )
                }));
            }
        }
    }

    async fn line(&mut self) -> crate::Result<String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
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
            self.buf.drain(..take);
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
            self.skip(size + 2).await?;
        }
    }

    async fn drain_to_eof(&mut self) -> crate::Result<()> {
        while self.fill().await? {
            self.buf.clear();
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(bytes: &[u8]) -> Result<ResponseHead, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the head is not text")?;
    let mut lines = text.split("\r\n");
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
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(ResponseHead {
        version: version.to_string(),
        status,
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
    fn median_puts_open_connections_last() {
        let s = |closed_by, after_s| Sample {
            head: head("HTTP/1.1 200 OK"),
            closed_by,
            after_s,
        };
        let app = summarize(
            "127.0.0.1:1",
            &[
                s(ClosedBy::None, None),
                s(ClosedBy::Fin, Some(3.0004)),
                s(ClosedBy::Fin, Some(3.2)),
            ],
            Duration::from_secs(10),
        );
        assert_eq!(app.app_idle_timeout_s, Some(3.2));
        assert_eq!(app.closed_by, ClosedBy::Fin);
        assert_eq!(app.samples_s, vec![None, Some(3.0), Some(3.2)]);
        let open = summarize(
            "127.0.0.1:1",
            &[
                s(ClosedBy::None, None),
                s(ClosedBy::None, None),
                s(ClosedBy::Fin, Some(3.0)),
            ],
            Duration::from_secs(10),
        );
        assert_eq!(open.app_idle_timeout_s, None);
        assert_eq!(open.closed_by, ClosedBy::None);
    }
}
