//! The HTTP/1.1 side of `podprobe serve`: `GET` answers the replica's
//! identity as JSON. Written on plain tokio so the keep-alive behaviour is
//! exactly what the flags say: an idle connection is closed (FIN) once
//! `--http-idle-timeout` passes after the last response, and the timeout is
//! advertised as `Keep-Alive: timeout=N`, the way Node.js servers do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Identity;

/// How long a client may take to send a request's head, and the first one on
/// a new connection (Node's `headersTimeout` is 60 s; a test target can be
/// stricter).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEAD: u64 = 16 * 1024;
const MAX_BODY: u64 = 1024 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Close a connection this long after its last response; zero keeps
    /// idle connections open (Node's `keepAliveTimeout = 0`).
    pub idle_timeout: Duration,
    /// Wait this long before answering, to stand in for a slow backend.
    pub delay: Duration,
}

pub async fn serve(
    listener: TcpListener,
    identity: Arc<Identity>,
    options: Options,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let for_connections = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(stream, peer, identity.clone(), options, for_connections.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: pass, rather than spin.
                    eprintln!("podprobe serve: HTTP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = stopped(&mut stop) => break,
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Resolves once shutdown has begun (at once if it already has).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// One request's head, as far as this server cares.
#[derive(Debug, PartialEq)]
pub(crate) struct Head {
    method: String,
    path: String,
    keep_alive: bool,
    content_length: u64,
    chunked: bool,
}

pub(crate) fn parse_head(text: &str) -> Option<Head> {
    let mut lines = text.split("\r\n").map(|l| l.trim_end_matches('\n'));
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let path = request_line.next()?.to_string();
    let version = request_line.next()?;
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return None,
    };
    let mut content_length = 0;
    let mut chunked = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "connection" => {
                for token in value.split(',').map(|t| t.trim().to_ascii_lowercase()) {
                    match token.as_str() {
                        "close" => keep_alive = false,
                        "keep-alive" => keep_alive = true,
                        _ => {}
                    }
                }
            }
            "content-length" => content_length = value.parse().ok()?,
            "transfer-encoding" => chunked = !value.eq_ignore_ascii_case("identity"),
            _ => {}
        }
    }
    Some(Head {
        method,
        path,
        keep_alive,
        content_length,
        chunked,
    })
}

/// Reads up to the blank line that ends a request head; `None` when the
/// client sent something that is not one.
async fn read_head(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut limited = reader.take(MAX_HEAD);
    loop {
        let n = limited.read_until(b'\n', &mut head).await?;
        if n == 0 {
            return Ok(None);
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return Ok(String::from_utf8(head).ok());
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    identity: Arc<Identity>,
    options: Options,
    mut stop: watch::Receiver<bool>,
) {
    let local = stream.local_addr().ok();
    let mut reader = BufReader::new(stream);
    let mut served: u64 = 0;
    loop {
        // Between requests the connection is idle: that is where the
        // keep-alive timeout runs, and where shutdown may close it at once.
        let idle_limit = if served == 0 {
            Some(HEAD_TIMEOUT)
        } else {
            Some(options.idle_timeout).filter(|d| !d.is_zero())
        };
        let next = async {
            match idle_limit {
                Some(limit) => tokio::time::timeout(limit, reader.fill_buf())
                    .await
                    .map(|r| r.map(|buf| !buf.is_empty()))
                    .unwrap_or(Ok(false)),
                None => reader.fill_buf().await.map(|buf| !buf.is_empty()),
            }
        };
        let more = tokio::select! {
            more = next => more,
            () = stopped(&mut stop) => return,
        };
        if !matches!(more, Ok(true)) {
            return;
        }
        let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut reader)).await {
            Ok(Ok(Some(text))) => parse_head(&text),
            _ => return,
        };
        let Some(head) = head else {
            let _ = respond(
                &mut reader,
                400,
                "Bad Request",
                &[],
                b"bad request\n",
                false,
            )
            .await;
            return;
        };
        if head.chunked || head.content_length > MAX_BODY {
            let _ = respond(
                &mut reader,
                400,
                "Bad Request",
                &[],
                b"unsupported body\n",
                false,
            )
            .await;
            return;
        }
        // Any body is read and dropped so the next request starts cleanly.
        let mut body = (&mut reader).take(head.content_length);
        if tokio::time::timeout(
            HEAD_TIMEOUT,
            tokio::io::copy(&mut body, &mut tokio::io::sink()),
        )
        .await
        .map_or(true, |r| r.is_err())
        {
            return;
        }
        served += 1;
        if !options.delay.is_zero() {
            tokio::time::sleep(options.delay).await;
        }
        let keep_alive = head.keep_alive && !*stop.borrow();
        let written = match head.method.as_str() {
            "GET" | "HEAD" => {
                let body = serde_json::json!({
                    "name": identity.name,
                    "pod_ip": identity.pod_ip(local),
                    "node": identity.node,
                    "hostname": identity.hostname,
                    "peer": peer.to_string(),
                    "path": head.path,
                    "requests_on_connection": served,
                })
                .to_string()
                    + "\n";
                let body = if head.method == "HEAD" {
                    ""
                } else {
                    body.as_str()
                };
                respond_json(&mut reader, body, keep_alive, options.idle_timeout).await
            }
            _ => {
                respond(
                    &mut reader,
                    405,
                    "Method Not Allowed",
                    &["Allow: GET, HEAD"],
                    b"method not allowed\n",
                    keep_alive,
                )
                .await
            }
        };
        if written.is_err() || !keep_alive {
            let _ = reader.get_mut().shutdown().await;
            return;
        }
    }
}

async fn respond_json(
    reader: &mut BufReader<TcpStream>,
    body: &str,
    keep_alive: bool,
    idle_timeout: Duration,
) -> std::io::Result<()> {
    // Node advertises whole seconds, rounded down: a client that trusts the
    // header then reuses the connection a little before the server drops it.
    let advert = format!("Keep-Alive: timeout={}", idle_timeout.as_secs());
    let headers: &[&str] = if keep_alive && !idle_timeout.is_zero() {
        &["Content-Type: application/json", &advert]
    } else {
        &["Content-Type: application/json"]
    };
    respond(reader, 200, "OK", headers, body.as_bytes(), keep_alive).await
}

async fn respond(
    reader: &mut BufReader<TcpStream>,
    code: u16,
    reason: &str,
    headers: &[&str],
    body: &[u8],
    keep_alive: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nServer: podprobe/{}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for header in headers {
        out.push_str(header);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    let stream = reader.get_mut();
    stream.write_all(&bytes).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_follows_version_and_connection_header() {
        let head = |t: &str| parse_head(t).map(|h| h.keep_alive);
        assert_eq!(head("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Some(true));
        assert_eq!(
            head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"),
            Some(false)
        );
        assert_eq!(head("GET / HTTP/1.0\r\n\r\n"), Some(false));
        assert_eq!(
            head("GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n"),
            Some(true)
        );
    }

    #[test]
    fn malformed_heads_are_rejected() {
        assert_eq!(parse_head("GET /\r\n\r\n"), None);
        assert_eq!(parse_head("GET / HTTP/2\r\n\r\n"), None);
        assert_eq!(
            parse_head("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            None
        );
        assert_eq!(parse_head("GET / HTTP/1.1\r\nno colon\r\n\r\n"), None);
        let post = parse_head("POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(
            post.map(|h| (h.path, h.content_length)),
            Some(("/a".into(), 3))
        );
    }
}
