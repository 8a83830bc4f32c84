//! gRPC over HTTP/2 as the bytes and headers say it (PROTOCOL-HTTP2.md):
//! message framing, `grpc-timeout`, status codes, `grpc-message` decoding,
//! the HTTP-to-gRPC status mapping, and what a server's first bytes say it
//! speaks. Pure functions; the connection code feeds them.

use std::time::Duration;

/// The largest reply message accepted (gRPC's default receive limit).
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// A gRPC status code (`grpc-status`), by its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Code(pub u32);

impl Code {
    pub const OK: Code = Code(0);
    pub const CANCELLED: Code = Code(1);
    pub const UNKNOWN: Code = Code(2);
    pub const INVALID_ARGUMENT: Code = Code(3);
    pub const DEADLINE_EXCEEDED: Code = Code(4);
    pub const NOT_FOUND: Code = Code(5);
    pub const ALREADY_EXISTS: Code = Code(6);
    pub const PERMISSION_DENIED: Code = Code(7);
    pub const RESOURCE_EXHAUSTED: Code = Code(8);
    pub const FAILED_PRECONDITION: Code = Code(9);
    pub const ABORTED: Code = Code(10);
    pub const OUT_OF_RANGE: Code = Code(11);
    pub const UNIMPLEMENTED: Code = Code(12);
    pub const INTERNAL: Code = Code(13);
    pub const UNAVAILABLE: Code = Code(14);
    pub const DATA_LOSS: Code = Code(15);
    pub const UNAUTHENTICATED: Code = Code(16);

    /// The name grpcurl and the gRPC docs print (`UNAVAILABLE`).
    pub fn name(self) -> String {
        const NAMES: [&str; 17] = [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ];
        NAMES
            .get(self.0 as usize)
            .map_or_else(|| format!("CODE_{}", self.0), |n| n.to_string())
    }

    /// True when the code says the server could not serve the call (its
    /// availability), not that it served it and disliked the request: an
    /// empty probe request may well be INVALID_ARGUMENT or UNAUTHENTICATED,
    /// and that answer still proves a working replica.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Code::CANCELLED
                | Code::UNKNOWN
                | Code::DEADLINE_EXCEEDED
                | Code::RESOURCE_EXHAUSTED
                | Code::INTERNAL
                | Code::UNAVAILABLE
                | Code::DATA_LOSS
        )
    }
}

/// One message as gRPC frames it: compression flag 0, 4-byte length, bytes.
pub fn frame_message(message: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// Why a reply body is not one gRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Fewer bytes than the frame header or its length promise.
    Truncated,
    /// A message above [`MAX_MESSAGE`].
    TooLarge(u32),
    /// The flag byte says compressed, which podprobe never asked for.
    Compressed,
    /// A flag byte other than 0 or 1.
    BadFlag(u8),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Truncated => f.write_str("reply message truncated"),
            BodyError::TooLarge(n) => write!(f, "reply message of {n} bytes is over 4 MiB"),
            BodyError::Compressed => f.write_str("reply message compressed without being asked"),
            BodyError::BadFlag(b) => write!(f, "reply frame flag {b:#04x} is not 0 or 1"),
        }
    }
}

/// The first message of a unary reply body (`None` for an empty body, as in
/// a Trailers-Only reply).
pub fn first_message(body: &[u8]) -> Result<Option<&[u8]>, BodyError> {
    if body.is_empty() {
        return Ok(None);
    }
    let header: &[u8; 5] = body
        .get(..5)
        .and_then(|h| h.try_into().ok())
        .ok_or(BodyError::Truncated)?;
    match header[0] {
        0 => {}
        1 => return Err(BodyError::Compressed),
        other => return Err(BodyError::BadFlag(other)),
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len as usize > MAX_MESSAGE {
        return Err(BodyError::TooLarge(len));
    }
    body.get(5..5 + len as usize)
        .map(Some)
        .ok_or(BodyError::Truncated)
}

/// `grpc-timeout` for a deadline: at most 8 digits, in the finest unit that
/// fits (milliseconds for any deadline under a day).
pub fn timeout_header(timeout: Duration) -> String {
    let ms = timeout.as_millis().max(1);
    if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", timeout.as_secs().min(99_999_999))
    }
}

/// `grpc-status` as sent: a decimal number.
pub fn parse_status(value: &[u8]) -> Option<Code> {
    std::str::from_utf8(value)
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()
        .map(Code)
}

/// `grpc-message` is percent-encoded UTF-8; undecodable bytes are kept as
/// they came (a diagnostic must not drop what the server said).
pub fn decode_message(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if value[i] == b'%' && i + 2 < value.len() {
            if let (Some(h), Some(l)) = (hex(value[i + 1]), hex(value[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(value[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The gRPC code a client reports for an HTTP status that is not 200
/// (doc/http-grpc-status-mapping.md): what a proxy's 503 becomes.
pub fn code_for_http_status(status: u16) -> Code {
    match status {
        400 => Code::INTERNAL,
        401 => Code::UNAUTHENTICATED,
        403 => Code::PERMISSION_DENIED,
        404 => Code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => Code::UNAVAILABLE,
        _ => Code::UNKNOWN,
    }
}

/// The gRPC code for a stream reset by the server with this HTTP/2 error
/// code (PROTOCOL-HTTP2.md, "Errors").
pub fn code_for_reset(reason: u32) -> Code {
    match reason {
        // NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR,
        // SETTINGS_TIMEOUT, FRAME_SIZE_ERROR, COMPRESSION_ERROR, CONNECT_ERROR
        0 | 1 | 2 | 3 | 4 | 6 | 9 | 10 => Code::INTERNAL,
        7 => Code::UNAVAILABLE, // REFUSED_STREAM
        8 => Code::CANCELLED,
        11 => Code::RESOURCE_EXHAUSTED, // ENHANCE_YOUR_CALM
        12 => Code::PERMISSION_DENIED,  // INADEQUATE_SECURITY
        _ => Code::INTERNAL,
    }
}

/// What a server's first bytes say it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Speaks {
    /// An HTTP/2 frame (the server's SETTINGS, or a GOAWAY).
    Http2,
    /// An HTTP/1.x response; its status line and `Server:` header.
    Http1 {
        status_line: String,
        server: Option<String>,
    },
    /// A TLS record (handshake or alert).
    Tls,
    /// Bytes that are none of those (the first few, in hex).
    Other(String),
}

impl Speaks {
    /// How a person would say it: "HTTP/1.1 (answered 'HTTP/1.1 400 Bad Request', server nginx)".
    pub fn describe(&self) -> String {
        match self {
            Speaks::Http2 => "HTTP/2".to_string(),
            Speaks::Http1 {
                status_line,
                server,
            } => {
                let version = status_line
                    .split(' ')
                    .next()
                    .filter(|v| v.starts_with("HTTP/"))
                    .unwrap_or("HTTP/1.x");
                let mut text = format!("{version}, not HTTP/2 (answered '{status_line}'");
                if let Some(server) = server {
                    text.push_str(&format!(", server {server}"));
                }
                text.push(')');
                text
            }
            Speaks::Tls => "TLS".to_string(),
            Speaks::Other(hex) => format!("something else (first bytes {hex})"),
        }
    }
}

/// Classifies a server's first bytes; `None` while too few have arrived to
/// tell (call again with more, or with what there is at end of stream).
pub fn classify(first: &[u8], complete: bool) -> Option<Speaks> {
    if first.is_empty() {
        return None;
    }
    if first.starts_with(b"HTTP/") || (!complete && b"HTTP/".starts_with(first)) {
        // Wait for the whole status line (and the Server header if it comes).
        let text = String::from_utf8_lossy(first);
        let head_done = text.contains("\r\n\r\n");
        if !text.contains("\r\n") && !complete {
            return None;
        }
        if !head_done && !complete && first.len() < 512 {
            return None;
        }
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default().trim().to_string();
        let server = lines.take_while(|l| !l.is_empty()).find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("server")
                .then(|| value.trim().to_string())
        });
        return Some(Speaks::Http1 {
            status_line,
            server,
        });
    }
    // An HTML error page without a status line: what an HTTP/1 server that
    // reads "PRI * HTTP/2.0" as an HTTP/0.9 request answers (Python's
    // http.server does).
    let text = String::from_utf8_lossy(first);
    let trimmed = text.trim_start();
    if trimmed.starts_with('<') {
        let lower = trimmed.to_ascii_lowercase();
        if lower.starts_with("<!doctype html") || lower.starts_with("<html") {
            let title = lower
                .find("<title>")
                .and_then(|start| {
                    let rest = &trimmed[start + 7..];
                    rest.find('<').map(|end| rest[..end].trim().to_string())
                })
                .filter(|t| !t.is_empty());
            if title.is_none() && !complete && first.len() < 512 {
                return None;
            }
            return Some(Speaks::Http1 {
                status_line: match title {
                    Some(title) => format!("an HTML page '{title}' without a status line"),
                    None => "an HTML page without a status line".to_string(),
                },
                server: None,
            });
        }
    }
    // A TLS record: content type alert (21) or handshake (22), version 3.x.
    if matches!(first[0], 0x15 | 0x16) {
        match first.get(1) {
            Some(0x03) => return Some(Speaks::Tls),
            None if !complete => return None,
            _ => {}
        }
    }
    // An HTTP/2 frame header: 24-bit length, type, flags, stream id; a
    // server starts with SETTINGS (4) on stream 0, or GOAWAY (7) on stream 0.
    if first.len() < 9 {
        return if complete { Some(other(first)) } else { None };
    }
    let frame_type = first[3];
    let stream = u32::from_be_bytes([first[5], first[6], first[7], first[8]]) & 0x7fff_ffff;
    if matches!(frame_type, 4 | 7) && stream == 0 {
        return Some(Speaks::Http2);
    }
    Some(other(first))
}

fn other(first: &[u8]) -> Speaks {
    let hex: Vec<String> = first.iter().take(8).map(|b| format!("{b:02x}")).collect();
    Speaks::Other(hex.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_frame_and_unframe() {
        let framed = frame_message(b"\x0a\x03abc");
        assert_eq!(framed, b"\x00\x00\x00\x00\x05\x0a\x03abc");
        assert_eq!(first_message(&framed), Ok(Some(&b"\x0a\x03abc"[..])));
        assert_eq!(first_message(b""), Ok(None));
        assert_eq!(first_message(&frame_message(b"")), Ok(Some(&b""[..])));
        assert_eq!(first_message(b"\x00\x00\x00"), Err(BodyError::Truncated));
        assert_eq!(
            first_message(b"\x00\x00\x00\x00\x09abc"),
            Err(BodyError::Truncated)
        );
        assert_eq!(
            first_message(b"\x01\x00\x00\x00\x00"),
            Err(BodyError::Compressed)
        );
        assert_eq!(
            first_message(b"\x00\xff\xff\xff\xff"),
            Err(BodyError::TooLarge(u32::MAX))
        );
    }

    #[test]
    fn timeouts_use_at_most_eight_digits() {
        assert_eq!(timeout_header(Duration::from_secs(2)), "2000m");
        assert_eq!(timeout_header(Duration::from_micros(10)), "1m");
        assert_eq!(timeout_header(Duration::from_secs(200_000)), "200000S");
    }

    #[test]
    fn status_and_message_decode() {
        assert_eq!(parse_status(b"14"), Some(Code::UNAVAILABLE));
        assert_eq!(parse_status(b"x"), None);
        assert_eq!(Code::UNAVAILABLE.name(), "UNAVAILABLE");
        assert_eq!(Code(99).name(), "CODE_99");
        assert_eq!(
            decode_message(b"no healthy upstream %E2%9C%93"),
            "no healthy upstream ✓"
        );
        assert_eq!(decode_message(b"100%"), "100%");
        assert_eq!(decode_message(b"%zz"), "%zz");
        assert!(Code::UNAVAILABLE.is_failure());
        assert!(!Code::UNIMPLEMENTED.is_failure());
        assert!(!Code::INVALID_ARGUMENT.is_failure());
        assert_eq!(code_for_http_status(503), Code::UNAVAILABLE);
        assert_eq!(code_for_http_status(404), Code::UNIMPLEMENTED);
        assert_eq!(code_for_reset(7), Code::UNAVAILABLE);
    }

    #[test]
    fn first_bytes_name_the_protocol() {
        // tonic's server preface: SETTINGS on stream 0.
        let settings = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 200];
        assert_eq!(classify(&settings, false), Some(Speaks::Http2));
        assert_eq!(classify(&settings[..5], false), None);
        let nginx = b"HTTP/1.1 400 Bad Request\r\nServer: nginx/1.22.1\r\nContent-Type: text/html\r\n\r\n<html>";
        let speaks = classify(nginx, false).unwrap();
        assert_eq!(
            speaks,
            Speaks::Http1 {
                status_line: "HTTP/1.1 400 Bad Request".into(),
                server: Some("nginx/1.22.1".into())
            }
        );
        assert_eq!(
            speaks.describe(),
            "HTTP/1.1, not HTTP/2 (answered 'HTTP/1.1 400 Bad Request', server nginx/1.22.1)"
        );
        // Half a status line waits for more, unless the stream ended.
        assert_eq!(classify(b"HTTP/1.0 505 Inv", false), None);
        assert!(matches!(
            classify(b"HTTP/1.0 505 Inv", true),
            Some(Speaks::Http1 { .. })
        ));
        assert_eq!(classify(b"HTT", false), None);
        // Python's http.server answers HTTP/0.9-style: a page, no head.
        let page = b"<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <meta charset=\"utf-8\">\n        <title>Error response</title>\n";
        assert_eq!(
            classify(page, false).map(|s| s.describe()),
            Some("HTTP/1.x, not HTTP/2 (answered 'an HTML page 'Error response' without a status line')".to_string())
        );
        // A TLS alert.
        assert_eq!(
            classify(&[0x15, 0x03, 0x03, 0, 2, 2, 70], false),
            Some(Speaks::Tls)
        );
        assert_eq!(
            classify(b"SSH-2.0-OpenSSH_9.2\r\n", true),
            Some(Speaks::Other("53 53 48 2d 32 2e 30 2d".into()))
        );
        assert_eq!(classify(b"", true), None);
    }

    /// Random bytes never panic any decoder (a small deterministic fuzz).
    #[test]
    fn random_bytes_never_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || super::super::channel::xorshift(&mut state);
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = first_message(&bytes);
            let _ = parse_status(&bytes);
            let _ = decode_message(&bytes);
            let _ = classify(&bytes, false);
            let _ = classify(&bytes, true).map(|s| s.describe());
        }
    }
}
