//! /proc files the pod and node checks read: nf_conntrack statistics (two
//! readings turned into rates, as `node.conntrack` does, and summed, as
//! `net.conntrack` does), /proc/net/nf_conntrack lines, the IPv4 and
//! IPv6 route tables, and /proc/net/{tcp,udp}[6] (`net.listeners`).
//! Input: the first reading, then optionally a NUL and the second.
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use podprobe::net::measure as net;
use podprobe::node::measure::{conntrack_evidence, ConntrackReading};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (first, second) = input.split_once('\0').unwrap_or((input, input));
    let _ = net::parse_conntrack_stat(first);
    let _ = net::parse_ipv4_default_routes(first);
    let _ = net::parse_ipv6_default_routes(first);
    let _ = podprobe::net::measure_listeners::parse_proc_net(first);
    for line in first.lines() {
        let _ = podprobe::fuzzing::conntrack_dns_flow(line);
    }
    if let (Ok(a), Ok(b)) = (
        net::parse_conntrack_stat_table(first),
        net::parse_conntrack_stat_table(second),
    ) {
        let reading = |stat| ConntrackReading {
            count: 100,
            max: 262_144,
            buckets: Some(65_536),
            stat,
        };
        let _ = conntrack_evidence(&reading(a), &reading(b), Duration::from_secs(1), "6.1.0");
    }
});
