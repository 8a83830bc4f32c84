//! iptables-save output (legacy and nft) as `podprobe node` reads it, and
//! the facts it draws from the rules (kube-proxy, SNAT, NOTRACK, drops).
#![no_main]
use libfuzzer_sys::fuzz_target;
use podprobe::node::{iptables, rules};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(dump) = iptables::parse(text, "filter") {
        let _ = dump.rule_count();
        let _ = rules::from_iptables(&dump, "iptables-legacy", true);
        let _ = rules::from_iptables(&dump, "iptables-nft", false);
    }
});
