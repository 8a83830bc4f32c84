//! Property tests: no input makes a parser panic, and what the tools print
//! survives being cut anywhere (a dump interrupted by the deadline).

use proptest::prelude::*;

use super::{iptables, ipvs, links, nft};

const SAVE: &str = include_str!("../../tests/fixtures/node/kube-proxy-iptables-nft.save");
const NFT: &str = include_str!("../../tests/fixtures/node/kube-proxy-nftables.json");
const PROC_IPVS: &str = include_str!("../../tests/fixtures/node/procfs-ip_vs");

/// Lines made of the words iptables-save writes, quotes and escapes included.
fn iptables_lines() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("-A".to_string()),
        Just("-N".to_string()),
        Just("-P".to_string()),
        Just("*nat".to_string()),
        Just(":KUBE-SERVICES - [0:0]".to_string()),
        Just("COMMIT".to_string()),
        Just("-j".to_string()),
        Just("-g".to_string()),
        Just("!".to_string()),
        Just("--ctstate".to_string()),
        Just("INVALID".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("[1:2]".to_string()),
        "[ -~]{0,12}",
    ];
    prop::collection::vec(
        prop::collection::vec(word, 0..8).prop_map(|w| w.join(" ")),
        0..20,
    )
    .prop_map(|lines| lines.join("\n"))
}

proptest! {
    #[test]
    fn iptables_parser_never_panics(text in iptables_lines()) {
        if let Ok(dump) = iptables::parse(&text, "filter") {
            for table in &dump.tables {
                let _ = table.reachable_from("FORWARD");
                for rule in &table.rules {
                    let _ = (rule.target(), rule.jump(), rule.comment(), rule.matches_ct_state("INVALID"));
                }
            }
            let _ = super::rules::from_iptables(&dump, "iptables-nft", true);
        }
    }

    #[test]
    fn parsers_survive_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = iptables::parse(&text, "nat");
        let _ = nft::parse(&text);
        let _ = ipvs::parse(&text, ipvs::Format::Ipvsadm);
        let _ = ipvs::parse(&text, ipvs::Format::Proc);
        let _ = links::parse(&bytes);
        let _ = crate::net::measure::parse_conntrack_stat_table(&text);
    }

    #[test]
    fn real_outputs_cut_anywhere_never_panic(cut in 0usize..100_000) {
        for text in [SAVE, NFT, PROC_IPVS] {
            let end = (0..=cut.min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            let part = &text[..end];
            let _ = iptables::parse(part, "filter");
            if let Ok(ruleset) = nft::parse(part) {
                let _ = super::rules::from_nft(&ruleset, &|_| false);
            }
            let _ = ipvs::parse(part, ipvs::Format::Proc);
        }
    }

    #[test]
    fn netlink_messages_with_random_attributes_never_panic(
        kind in prop_oneof![Just(2u16), Just(3u16), Just(16u16), any::<u16>()],
        len in any::<u32>(),
        body in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut buf = len.to_ne_bytes().to_vec();
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&[0; 10]);
        buf.extend_from_slice(&body);
        let _ = links::parse(&buf);
    }
}
