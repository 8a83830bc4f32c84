//! IPVS virtual services as `ipvsadm -Ln` prints them and as /proc/net/ip_vs
//! holds them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podprobe::node::ipvs::{parse, Format};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse(text, Format::Ipvsadm);
    let _ = parse(text, Format::Proc);
});
