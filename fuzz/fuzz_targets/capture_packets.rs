//! Packets straight into the analyzer (and the capture listing's line for
//! each), without a file format around them: the decoder, IP reassembly,
//! DNS over UDP and TCP, the TCP tracker and the judges.
//! Input: a link type selector byte, then packets, each a 2-byte length,
//! a 2-byte time step in milliseconds and the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podprobe::capture::analyze::Analyzer;
use podprobe::capture::decode;

const LINKTYPES: [u32; 9] = [
    decode::LINKTYPE_ETHERNET,
    decode::LINKTYPE_RAW,
    decode::LINKTYPE_LINUX_SLL,
    decode::LINKTYPE_LINUX_SLL2,
    decode::LINKTYPE_NULL,
    decode::LINKTYPE_LOOP,
    decode::LINKTYPE_IPV4,
    decode::LINKTYPE_IPV6,
    decode::LINKTYPE_NFLOG,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut rest)) = data.split_first() else {
        return;
    };
    let linktype = LINKTYPES[usize::from(selector) % LINKTYPES.len()];
    let mut analyzer = Analyzer::default();
    let mut ts_us: i64 = 1_700_000_000_000_000;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        ts_us += i64::from(u16::from_be_bytes([rest[2], rest[3]])) * 1000;
        let packet = &rest[4..];
        let packet = &packet[..len.min(packet.len())];
        rest = &rest[4 + packet.len()..];
        // A snapped packet claims more on the wire than it holds.
        let wire_len = packet.len() as u32 + u32::from(selector >> 7) * 1000;
        let _ = podprobe::fuzzing::capture_summary(linktype, ts_us, packet, wire_len);
        analyzer.packet(linktype, ts_us, packet, wire_len);
    }
    let analysis = analyzer.finish(None);
    let _ = podprobe::capture::judge::judge_all(&analysis);
});
