//! DNS messages off the wire: the reply reader of `dns` (the resolver
//! models' client) and the capture analyzer's message parser.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = podprobe::fuzzing::dns_reply(data);
    if let Some(msg) = podprobe::capture::measure_dns::parse_message(data) {
        let _ = format!("{msg:?}");
    }
});
