//! What a gRPC server sends back: its first bytes (what it speaks), the
//! HTTP/2 frames read for GOAWAY, the reply body's framing, grpc-status and
//! grpc-message, the reply message of each probe call, and a TLS
//! certificate's names.
//! Input: three fields separated by NUL bytes feed the status, message and
//! reply; the whole input feeds the stream readers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podprobe::grpc::{tls, wire};

fuzz_target!(|data: &[u8]| {
    let _ = wire::classify(data, false);
    let _ = wire::classify(data, true);
    let piece = data.first().map_or(1, |b| usize::from(*b % 16) + 1);
    let _ = podprobe::fuzzing::h2_goaways(data, piece);
    let _ = tls::common_name_without_san(data);
    if let Ok(Some(message)) = wire::first_message(data) {
        let _ = podprobe::fuzzing::grpc_reply(b"0", b"", message);
    }
    let mut fields = data.splitn(3, |b| *b == 0);
    let (status, message, reply) = (
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default(),
    );
    let _ = podprobe::fuzzing::grpc_reply(status, message, reply);
});
