//! `nft -j list ruleset` as `podprobe node` reads it, and the facts it
//! draws from the rules.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podprobe::node::{nft, rules};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ruleset) = nft::parse(text) {
        let _ = rules::from_nft(&ruleset, &|_| false);
        let _ = rules::from_nft(&ruleset, &|t| t.family == "ip");
    }
});
