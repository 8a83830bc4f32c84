//! One recv of an RTM_GETLINK netlink dump, as `podprobe node` reads the
//! node's interfaces.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = podprobe::node::links::parse(data);
});
