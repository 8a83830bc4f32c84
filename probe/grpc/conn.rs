//! One gRPC connection as a real client keeps it: TCP (and TLS), the HTTP/2
//! handshake, unary calls over it, and what ended it. Every connection
//! records the bytes its server sent first (to name what the server speaks
//! when it is not gRPC) and the GOAWAY frames it received (to tell, for a
//! call cut short, whether the server provably never processed it).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

use super::wire::{self, Code, Speaks};

/// Bytes of a server's first answer kept to name what it speaks.
const FIRST_BYTES: usize = 512;
/// Bytes of a GOAWAY's debug data kept for the report.
const GOAWAY_DEBUG: usize = 128;

/// How every connection of a run is made.
#[derive(Clone)]
pub struct DialConfig {
    /// TLS client configuration and the name the certificate must carry.
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// `:authority` of every call.
    pub authority: String,
    /// Bound on the TCP connect, the TLS handshake and the server's first
    /// HTTP/2 frame, each.
    pub timeout: Duration,
}

/// Why a connection could not be made ready.
#[derive(Debug, Clone, PartialEq)]
pub enum DialError {
    /// TCP: refused, unreachable, timed out.
    Connect(String),
    /// The TLS handshake failed; `speaks` is what the server sent instead of
    /// a TLS answer, when it sent something telling.
    Tls {
        cause: String,
        certificate: bool,
        speaks: Option<Speaks>,
    },
    /// The server answered, but not with HTTP/2.
    NotHttp2 { speaks: Speaks, over_tls: bool },
    /// Connected, then no answer: closed without a byte, or silent.
    Silent(String),
}

impl DialError {
    pub fn describe(&self) -> String {
        match self {
            DialError::Connect(cause) | DialError::Silent(cause) => cause.clone(),
            DialError::Tls {
                speaks: Some(Speaks::Http2),
                ..
            } => "speaks plaintext HTTP/2, not TLS".to_string(),
            DialError::Tls {
                speaks: Some(speaks @ Speaks::Http1 { .. }),
                ..
            } => format!("speaks plaintext {}, not TLS", speaks.describe()),
            DialError::Tls { cause, .. } => cause.clone(),
            DialError::NotHttp2 {
                speaks: Speaks::Tls,
                ..
            } => "speaks TLS, not plaintext HTTP/2".to_string(),
            DialError::NotHttp2 { speaks, over_tls } => format!(
                "speaks {}{}",
                speaks.describe(),
                if *over_tls { " over TLS" } else { "" }
            ),
        }
    }

    /// A TLS-versus-plaintext mismatch: the user's flag, not the server, is
    /// wrong.
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self,
            DialError::Tls {
                speaks: Some(Speaks::Http2 | Speaks::Http1 { .. }),
                ..
            } | DialError::NotHttp2 {
                speaks: Speaks::Tls,
                ..
            }
        )
    }

    /// The server was reached at all (it accepted the TCP connection).
    pub fn reached(&self) -> bool {
        !matches!(self, DialError::Connect(_))
    }
}

/// What the server's bytes told, shared by a connection's reader and the
/// code that waits on it.
#[derive(Default)]
struct Seen {
    first: Mutex<Vec<u8>>,
    eof: AtomicBool,
    /// Lowest last-stream-id of the GOAWAYs received (u32::MAX: none yet).
    goaway_last: AtomicU32,
    goaway: Mutex<Option<(u32, String)>>,
    changed: Notify,
}

impl Seen {
    fn new() -> Arc<Seen> {
        Arc::new(Seen {
            goaway_last: AtomicU32::new(u32::MAX),
            ..Seen::default()
        })
    }

    fn speaks(&self) -> Option<Speaks> {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        wire::classify(&first, self.eof.load(Ordering::Acquire))
    }

    /// Waits until the first bytes tell what the server speaks, the stream
    /// ends, or `timeout` passes.
    async fn wait_speaks(&self, timeout: Duration) -> Result<Speaks, DialError> {
        let deadline = crate::clock::tokio_deadline(timeout);
        loop {
            let changed = self.changed.notified();
            if let Some(speaks) = self.speaks() {
                return Ok(speaks);
            }
            if self.eof.load(Ordering::Acquire) {
                return Err(DialError::Silent(
                    "closed the connection without answering".to_string(),
                ));
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(DialError::Silent(format!(
                    "connected, but no HTTP/2 answer within {timeout:?}"
                )));
            }
        }
    }
}

/// Splits a server's byte stream into HTTP/2 frames just enough to see its
/// GOAWAYs (type 7): last-stream-id, error code, debug data. Pure.
#[derive(Debug, Default)]
pub struct FrameTracker {
    header: [u8; 9],
    have: usize,
    remaining: usize,
    goaway: Option<Vec<u8>>,
}

/// A GOAWAY frame: the highest stream the server may have processed, its
/// error code and its debug text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    pub last_stream_id: u32,
    pub code: u32,
    pub debug: String,
}

impl FrameTracker {
    pub fn feed(&mut self, mut bytes: &[u8], on_goaway: &mut impl FnMut(GoAway)) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(bytes.len());
                if let Some(payload) = &mut self.goaway {
                    let room = (8 + GOAWAY_DEBUG).saturating_sub(payload.len());
                    payload.extend_from_slice(&bytes[..n.min(room)]);
                }
                self.remaining -= n;
                bytes = &bytes[n..];
                if self.remaining == 0 {
                    self.finish_frame(on_goaway);
                }
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                self.have = 0;
                let h = self.header;
                self.remaining =
                    usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.goaway = (h[3] == 7).then(Vec::new);
                if self.remaining == 0 {
                    self.finish_frame(on_goaway);
                }
            }
        }
    }

    fn finish_frame(&mut self, on_goaway: &mut impl FnMut(GoAway)) {
        if let Some(payload) = self.goaway.take() {
            if payload.len() >= 8 {
                on_goaway(GoAway {
                    last_stream_id: u32::from_be_bytes([
                        payload[0], payload[1], payload[2], payload[3],
                    ]) & 0x7fff_ffff,
                    code: u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
                    debug: String::from_utf8_lossy(&payload[8..]).into_owned(),
                });
            }
        }
    }
}

/// A transport that records what the server sends: its first bytes and,
/// when `frames` is set, its GOAWAY frames.
struct Recorder<T> {
    inner: T,
    seen: Arc<Seen>,
    frames: Option<FrameTracker>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Recorder<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(result) = &polled {
            let new = &buf.filled()[before..];
            let mut notify = false;
            if new.is_empty() || result.is_err() {
                this.seen.eof.store(true, Ordering::Release);
                notify = true;
            } else {
                let mut first = this.seen.first.lock().unwrap_or_else(|p| p.into_inner());
                if first.len() < FIRST_BYTES {
                    let room = FIRST_BYTES - first.len();
                    first.extend_from_slice(&new[..new.len().min(room)]);
                    notify = true;
                }
            }
            if let Some(tracker) = &mut this.frames {
                let seen = &this.seen;
                tracker.feed(new, &mut |goaway: GoAway| {
                    seen.goaway_last
                        .fetch_min(goaway.last_stream_id, Ordering::AcqRel);
                    *seen.goaway.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((goaway.code, goaway.debug));
                    notify = true;
                });
            }
            if notify {
                this.seen.changed.notify_waiters();
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Recorder<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    pub at: Instant,
    pub by: String,
}

/// The outcome of one attempt at a call on one connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// The server answered with a status (and, for OK, a reply message).
    Answered {
        code: Code,
        message: String,
        reply: Bytes,
    },
    /// The call never left this client (the connection was already going
    /// away): safe to send anywhere, any number of times.
    NotSent(String),
    /// The server's HTTP/2 layer provably refused the call before its
    /// application saw it (REFUSED_STREAM, or above a GOAWAY's
    /// last-stream-id): gRPC sends such a call again, once.
    Refused(String),
    /// The call left, and no answer came: reset, connection lost, protocol
    /// error. The server may have processed it.
    Failed { code: Code, cause: String },
}

/// Counters of one connection, updated by every call on it.
#[derive(Debug, Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub refused: AtomicU64,
    /// Microseconds since the run started of the last answered call
    /// (0: none).
    pub last_ok_us: AtomicU64,
    /// The same for the last failed call.
    pub last_failed_us: AtomicU64,
}

/// A ready connection.
pub struct Connection {
    pub id: u32,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub opened: Instant,
    send: h2::client::SendRequest<Bytes>,
    seen: Arc<Seen>,
    closed: watch::Receiver<Option<Closed>>,
    /// Cleared when a call finds the connection going away, so pickers skip
    /// it before its driver notices.
    usable: AtomicBool,
    pub tally: Tally,
    driver: tokio::task::AbortHandle,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// [`dial`], and when it ends in silence (or in a TLS failure without a
/// telling byte), asks the server again in the other language on a fresh
/// connection, to name what it speaks.
pub async fn dial_named(
    addr: SocketAddr,
    id: u32,
    config: &DialConfig,
) -> Result<Connection, DialError> {
    let error = match dial(addr, id, config).await {
        Ok(connection) => return Ok(connection),
        Err(error) => error,
    };
    let silent = matches!(
        error,
        DialError::Silent(_)
            | DialError::Tls {
                certificate: false,
                speaks: None,
                ..
            }
    );
    if !silent {
        return Err(error);
    }
    let tls = config.tls.is_some();
    let hello = if tls {
        Some(h2_preface())
    } else {
        tls_client_hello()
    };
    let speaks = match hello {
        Some(hello) => sniff(addr, &hello, config.timeout).await,
        None => None,
    };
    Err(match (tls, speaks) {
        (false, Some(Speaks::Tls)) => DialError::NotHttp2 {
            speaks: Speaks::Tls,
            over_tls: false,
        },
        (true, Some(speaks @ (Speaks::Http2 | Speaks::Http1 { .. }))) => DialError::Tls {
            cause: error.describe(),
            certificate: false,
            speaks: Some(speaks),
        },
        _ => error,
    })
}

/// Connects to `addr` and waits until the server has answered the HTTP/2
/// preface with its own SETTINGS: gRPC's READY.
pub async fn dial(addr: SocketAddr, id: u32, config: &DialConfig) -> Result<Connection, DialError> {
    let tcp = match tokio::time::timeout(config.timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(DialError::Connect(format!("connect to {addr}: {e}"))),
        Err(_) => {
            return Err(DialError::Connect(format!(
                "connect to {addr}: timed out after {:?}",
                config.timeout
            )))
        }
    };
    let _ = tcp.set_nodelay(true);
    let local = tcp
        .local_addr()
        .map_err(|e| DialError::Connect(format!("connect to {addr}: {e}")))?;
    let seen = Seen::new();
    match &config.tls {
        None => {
            let io = Recorder {
                inner: tcp,
                seen: seen.clone(),
                frames: Some(FrameTracker::default()),
            };
            handshake(io, addr, local, id, seen, config, false).await
        }
        Some((tls, name)) => {
            let raw_seen = Seen::new();
            let raw = Recorder {
                inner: tcp,
                seen: raw_seen.clone(),
                frames: None,
            };
            let connector = tokio_rustls::TlsConnector::from(tls.clone());
            let stream =
                match tokio::time::timeout(config.timeout, connector.connect(name.clone(), raw))
                    .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        return Err(DialError::Tls {
                            cause: super::tls::describe_handshake_error(&e),
                            certificate: super::tls::is_certificate_error(&e),
                            speaks: raw_seen.speaks().filter(|s| *s != Speaks::Tls),
                        })
                    }
                    Err(_) => {
                        return Err(DialError::Tls {
                            cause: format!("TLS handshake: no answer within {:?}", config.timeout),
                            certificate: false,
                            speaks: raw_seen.speaks().filter(|s| *s != Speaks::Tls),
                        })
                    }
                };
            if stream.get_ref().1.alpn_protocol() == Some(b"http/1.1") {
                return Err(DialError::NotHttp2 {
                    speaks: Speaks::Http1 {
                        status_line: "HTTP/1.1 (chosen by ALPN)".to_string(),
                        server: None,
                    },
                    over_tls: true,
                });
            }
            let io = Recorder {
                inner: stream,
                seen: seen.clone(),
                frames: Some(FrameTracker::default()),
            };
            handshake(io, addr, local, id, seen, config, true).await
        }
    }
}

async fn handshake<T>(
    io: T,
    peer: SocketAddr,
    local: SocketAddr,
    id: u32,
    seen: Arc<Seen>,
    config: &DialConfig,
    over_tls: bool,
) -> Result<Connection, DialError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 22)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| DialError::Silent(format!("HTTP/2 handshake: {e}")))?;
    let (closed_tx, closed) = watch::channel(None);
    let post_mortem = send.clone();
    let driver_seen = seen.clone();
    let driver = tokio::spawn(async move {
        let result = connection.await;
        let by = close_reason(result, post_mortem, &driver_seen).await;
        let _ = closed_tx.send(Some(Closed {
            at: Instant::now(),
            by,
        }));
    });
    let connection = Connection {
        id,
        peer,
        local,
        opened: Instant::now(),
        send,
        seen: seen.clone(),
        closed,
        usable: AtomicBool::new(true),
        tally: Tally::default(),
        driver: driver.abort_handle(),
    };
    match seen.wait_speaks(config.timeout).await? {
        Speaks::Http2 => Ok(connection),
        speaks => Err(DialError::NotHttp2 { speaks, over_tls }),
    }
}

/// Why the server's side of a connection ended, in a few words.
async fn close_reason(
    result: Result<(), h2::Error>,
    post_mortem: h2::client::SendRequest<Bytes>,
    seen: &Seen,
) -> String {
    let error = match result {
        Err(e) => Some(e),
        Ok(()) => post_mortem.ready().await.err(),
    };
    let goaway = seen
        .goaway
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some((code, debug)) = goaway {
        let reason = h2::Reason::from(code);
        let debug = if debug.is_empty() {
            String::new()
        } else {
            format!(" '{debug}'")
        };
        return format!("server: GOAWAY {reason:?}{debug}");
    }
    match error {
        Some(e) if e.is_io() => match e.get_io().map(std::io::Error::kind) {
            Some(std::io::ErrorKind::ConnectionReset) => "server: reset (RST)".to_string(),
            Some(std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::UnexpectedEof) => {
                "server: closed (FIN) without GOAWAY".to_string()
            }
            _ => format!("server: {e}"),
        },
        Some(e) => format!("{e}"),
        None => "server: closed".to_string(),
    }
}

impl Connection {
    /// When and why it closed; `None` while open.
    pub fn closed(&self) -> Option<Closed> {
        self.closed.borrow().clone()
    }

    /// Waits until the server said GOAWAY or the connection closed: from
    /// then on it takes no new call, and gRPC opens a new one while this
    /// one drains.
    pub async fn wait_going_away(&self) {
        let mut closed = self.closed.clone();
        loop {
            let changed = self.seen.changed.notified();
            if self.going_away() {
                return;
            }
            tokio::select! {
                _ = changed => {}
                result = closed.changed() => if result.is_err() { return },
            }
        }
    }

    fn going_away(&self) -> bool {
        self.seen.goaway_last.load(Ordering::Acquire) != u32::MAX || self.closed.borrow().is_some()
    }

    pub fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Relaxed) && !self.going_away()
    }

    /// One unary call of `uri` with `request` (already framed).
    pub async fn unary(&self, uri: &http::Uri, request: &Bytes, deadline: Instant) -> Attempt {
        let mut send = match self.send.clone().ready().await {
            Ok(send) => send,
            Err(e) => return self.not_sent(&e),
        };
        let timeout = deadline.saturating_duration_since(Instant::now());
        let built = http::Request::builder()
            .method(http::Method::POST)
            .uri(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header("grpc-timeout", wire::timeout_header(timeout))
            .header(http::header::USER_AGENT, USER_AGENT)
            .body(());
        let Ok(built) = built else {
            return Attempt::NotSent("request could not be built".to_string());
        };
        let (response, mut stream) = match send.send_request(built, false) {
            Ok(pair) => pair,
            Err(e) => return self.not_sent(&e),
        };
        let stream_id = u32::from(stream.stream_id());
        // A failure here shows again, with its cause, on the response.
        let _ = stream.send_data(request.clone(), true);
        let response = match response.await {
            Ok(response) => response,
            Err(e) => return self.cut_short(&e, stream_id),
        };
        let (head, mut body) = response.into_parts();
        if let Some(code) = head.headers.get("grpc-status") {
            // Trailers-Only: the status came with the headers.
            return answered(
                code.as_bytes(),
                head.headers.get("grpc-message"),
                Bytes::new(),
            );
        }
        if head.status != http::StatusCode::OK {
            return Attempt::Answered {
                code: wire::code_for_http_status(head.status.as_u16()),
                message: format!("HTTP {} instead of a gRPC answer", head.status),
                reply: Bytes::new(),
            };
        }
        let mut reply = BytesMut::new();
        while let Some(chunk) = body.data().await {
            match chunk {
                Ok(chunk) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    if reply.len() + chunk.len() > wire::MAX_MESSAGE + 5 {
                        return Attempt::Failed {
                            code: Code::RESOURCE_EXHAUSTED,
                            cause: "reply over 4 MiB".to_string(),
                        };
                    }
                    reply.extend_from_slice(&chunk);
                }
                Err(e) => return self.cut_short(&e, stream_id),
            }
        }
        match body.trailers().await {
            Ok(Some(trailers)) => match trailers.get("grpc-status") {
                Some(code) => answered(
                    code.as_bytes(),
                    trailers.get("grpc-message"),
                    reply.freeze(),
                ),
                None => Attempt::Failed {
                    code: Code::INTERNAL,
                    cause: "trailers without grpc-status".to_string(),
                },
            },
            Ok(None) => Attempt::Failed {
                code: Code::INTERNAL,
                cause: "stream ended without trailers".to_string(),
            },
            Err(e) => self.cut_short(&e, stream_id),
        }
    }

    fn not_sent(&self, e: &h2::Error) -> Attempt {
        self.usable.store(false, Ordering::Relaxed);
        Attempt::NotSent(format!("connection going away: {e}"))
    }

    /// A call that left and got an error instead of an answer: refused
    /// only when the server's own frames prove it never processed it.
    fn cut_short(&self, e: &h2::Error, stream_id: u32) -> Attempt {
        let goaway_last = self.seen.goaway_last.load(Ordering::Acquire);
        if e.is_reset() && e.is_remote() && e.reason() == Some(h2::Reason::REFUSED_STREAM) {
            return Attempt::Refused("REFUSED_STREAM".to_string());
        }
        if stream_id > goaway_last {
            self.usable.store(false, Ordering::Relaxed);
            return Attempt::Refused(format!(
                "GOAWAY: stream {stream_id} above the server's last stream {goaway_last}"
            ));
        }
        if e.is_reset() && e.is_remote() {
            let reason = e.reason().map_or(2, u32::from);
            return Attempt::Failed {
                code: wire::code_for_reset(reason),
                cause: format!("stream reset by the server: {:?}", h2::Reason::from(reason)),
            };
        }
        if e.is_io() || e.is_go_away() {
            self.usable.store(false, Ordering::Relaxed);
            let cause = match e.get_io().map(std::io::Error::kind) {
                Some(std::io::ErrorKind::ConnectionReset) => {
                    "connection reset by the server".to_string()
                }
                Some(_) | None if e.is_go_away() => {
                    "connection closed after GOAWAY before the answer".to_string()
                }
                _ => "connection closed before the answer".to_string(),
            };
            return Attempt::Failed {
                code: Code::UNAVAILABLE,
                cause,
            };
        }
        Attempt::Failed {
            code: Code::INTERNAL,
            cause: format!("HTTP/2: {e}"),
        }
    }
}

const USER_AGENT: &str = concat!("podprobe/", env!("CARGO_PKG_VERSION"));

fn answered(code: &[u8], message: Option<&http::HeaderValue>, body: Bytes) -> Attempt {
    let Some(code) = wire::parse_status(code) else {
        return Attempt::Failed {
            code: Code::INTERNAL,
            cause: format!(
                "grpc-status '{}' is not a number",
                String::from_utf8_lossy(code)
            ),
        };
    };
    let message = message
        .map(|m| wire::decode_message(m.as_bytes()))
        .unwrap_or_default();
    if code != Code::OK {
        return Attempt::Answered {
            code,
            message,
            reply: Bytes::new(),
        };
    }
    match wire::first_message(&body) {
        Ok(reply) => Attempt::Answered {
            code,
            message,
            reply: reply.map(|r| body.slice_ref(r)).unwrap_or_default(),
        },
        Err(e) => Attempt::Failed {
            code: Code::INTERNAL,
            cause: e.to_string(),
        },
    }
}

/// What the server at `addr` answers to `hello` on a fresh connection: used
/// when a dial ended in silence, to ask in the other language.
pub async fn sniff(addr: SocketAddr, hello: &[u8], timeout: Duration) -> Option<Speaks> {
    let probe = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(hello).await.ok()?;
        let mut first = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            first.extend_from_slice(&buf[..n]);
            if let Some(speaks) = wire::classify(&first, n == 0) {
                return Some(speaks);
            }
            if n == 0 {
                return None;
            }
        }
    };
    tokio::time::timeout(timeout, probe).await.ok().flatten()
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
pub fn h2_preface() -> Vec<u8> {
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    hello
}

/// A TLS ClientHello: a TLS server answers it with a handshake record or
/// an alert, whatever it thinks of the offer.
pub fn tls_client_hello() -> Option<Vec<u8>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from("podprobe.invalid").ok()?;
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    let mut hello = Vec::new();
    connection.write_tls(&mut hello).ok()?;
    Some(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, 0];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn goaways_are_found_across_reads_of_any_size() {
        let mut stream = frame(4, 0, &[0, 3, 0, 0, 0, 100]);
        stream.extend(frame(1, 1, &[0x88]));
        stream.extend(frame(0, 1, &[0; 300]));
        let mut goaway = 7u32.to_be_bytes().to_vec();
        goaway.extend_from_slice(&0u32.to_be_bytes());
        goaway.extend_from_slice(b"max_age");
        stream.extend(frame(7, 0, &goaway));
        stream.extend(frame(6, 0, &[0; 8]));
        for chunk in [1, 2, 7, 9, 64, stream.len()] {
            let mut tracker = FrameTracker::default();
            let mut found = Vec::new();
            for piece in stream.chunks(chunk) {
                tracker.feed(piece, &mut |g| found.push(g));
            }
            assert_eq!(
                found,
                vec![GoAway {
                    last_stream_id: 7,
                    code: 0,
                    debug: "max_age".into()
                }],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn random_bytes_never_panic_the_frame_tracker() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut tracker = FrameTracker::default();
        for _ in 0..20_000 {
            let state = super::super::channel::xorshift(&mut state);
            let bytes = state.to_le_bytes();
            tracker.feed(&bytes[..(state % 9) as usize], &mut |_| {});
        }
    }

    #[test]
    fn dial_errors_say_what_the_server_speaks() {
        let plain = DialError::Tls {
            cause: "TLS handshake: corrupt message".into(),
            certificate: false,
            speaks: Some(Speaks::Http2),
        };
        assert_eq!(plain.describe(), "speaks plaintext HTTP/2, not TLS");
        assert!(plain.is_mismatch());
        let tls = DialError::NotHttp2 {
            speaks: Speaks::Tls,
            over_tls: false,
        };
        assert_eq!(tls.describe(), "speaks TLS, not plaintext HTTP/2");
        assert!(tls.is_mismatch() && tls.reached());
        assert!(!DialError::Connect("refused".into()).reached());
    }
}
