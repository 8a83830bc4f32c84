//! Entry points for the fuzz targets (`fuzz/`) into parsers that are private
//! to their areas. Each one calls the area's own code on bytes and returns
//! what it made of them; nothing here parses on its own. Public parsers
//! (`capture::decode`, `node::iptables`, ...) are fuzzed directly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A DNS reply as `dns`'s client reads it off the wire: its id, first
/// question and reply (`None` when it is not a response).
pub fn dns_reply(data: &[u8]) -> Option<String> {
    crate::dns::client::parse(data).map(|parsed| format!("{parsed:?}"))
}

/// The capture listing's line for one packet (`capture` without `-w` or
/// `--analyze`), as text and as a JSON line.
pub fn capture_summary(linktype: u32, ts_us: i64, data: &[u8], wire_len: u32) -> String {
    let summary = crate::capture::summary::summarize(linktype, ts_us, data, wire_len);
    summary.text() + &summary.json()
}

/// A request head as `serve`'s HTTP/1.1 server parses it; `None` for what
/// it answers with 400.
pub fn http_request_head(text: &str) -> Option<String> {
    crate::serve::http::parse_head(text).map(|head| format!("{head:?}"))
}

/// One HTTP/1.x response as `keepalive` reads it from the upstream (1xx
/// skipped, body by Content-Length, chunks or close), from `bytes` as if
/// the server sent them and then closed. Run it on a Tokio runtime with
/// time enabled: the reader's deadline is one.
pub async fn http_response(
    mut bytes: &[u8],
) -> crate::Result<(crate::keepalive::measure::ResponseHead, Vec<u8>, bool)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], 80));
    let deadline = Instant::now() + Duration::from_secs(10);
    let (head, body, close_delimited) =
        crate::keepalive::measure::read_response(&mut bytes, addr, deadline).await?;
    let _ = head.advertised_keepalive_s();
    Ok((head, body, close_delimited))
}

/// The GOAWAY frames `grpc` finds in a server's HTTP/2 byte stream, fed in
/// pieces of `piece` bytes as reads deliver them.
pub fn h2_goaways(bytes: &[u8], piece: usize) -> Vec<(u32, u32, String)> {
    let mut tracker = crate::grpc::conn::FrameTracker::default();
    let mut goaways = Vec::new();
    for chunk in bytes.chunks(piece.max(1)) {
        tracker.feed(chunk, &mut |g| {
            goaways.push((g.last_stream_id, g.code, g.debug))
        });
    }
    goaways
}

/// What `grpc` makes of an answered call (status, message, reply message)
/// for each kind of probe call.
pub fn grpc_reply(status: &[u8], message: &[u8], reply: &[u8]) -> Vec<String> {
    use crate::grpc::run::{interpret, ProbeKind};
    let Some(code) = crate::grpc::wire::parse_status(status) else {
        return Vec::new();
    };
    let message = crate::grpc::wire::decode_message(message);
    [
        ProbeKind::Whoami,
        ProbeKind::Health,
        ProbeKind::Method,
        ProbeKind::Unimplemented,
    ]
    .into_iter()
    .map(|kind| format!("{:?}", interpret(kind, code, &message, reply)))
    .collect()
}

/// nsswitch.conf: whether `hosts:` consults files before DNS.
pub fn nsswitch_files_before_dns(conf: &str) -> bool {
    crate::net::resolve::files_before_dns(conf)
}

/// A /proc/net/nf_conntrack line counts as a UDP flow to port 53.
pub fn conntrack_dns_flow(line: &str) -> bool {
    crate::node::measure::count_dns_flow(line)
}
