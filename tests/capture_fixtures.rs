//! `podprobe capture -r` on public captures (tcpdump's tests, gopacket's
//! pcap and pcapng test files; tests/fixtures/SOURCES.md), each analysed
//! beside tshark: every count podprobe reports must be what tshark's own
//! dissection and expert analysis find in the same file, and each file
//! gives its expected verdict.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

mod support;
use support::{check, run};

mod capture_support;
use capture_support::{
    analyze_file, analyze_file_output, expert_count, fixture, fixtures, report_of, text,
    tshark_count, tshark_expert, tshark_fields, tshark_frames, TempDir, PODPROBE,
};

fn evidence<'a>(report: &'a Value, id: &str) -> &'a Value {
    &check(report, id)["evidence"]
}

const FIELDS: &[&str] = &[
    // Empty for a pcapng block that is no packet (a custom block).
    "frame.encap_type",
    "frame.protocols",
    "udp.port",
    "tcp.port",
    "icmp.type",
    "icmpv6.type",
    "ip.fragment.count",
    "ipv6.fragment.count",
    "dns.flags.response",
    "dns.flags.rcode",
    "dns.response_in",
    "dns.time",
    "dns.qry.name",
    "tcp.stream",
    "tcp.flags.reset",
];

#[test]
fn every_fixture_agrees_with_tshark() {
    for file in fixtures() {
        let report = analyze_file(&file);
        let name = file.display().to_string();
        let decode = evidence(&report, "capture.decode");
        let dns = evidence(&report, "capture.dns");
        let tcp = evidence(&report, "capture.tcp");
        let frames = tshark_frames(&file, FIELDS);
        let has = |frame: &std::collections::HashMap<String, String>, proto: &str| {
            frame["frame.protocols"].split(':').any(|p| p == proto)
        };
        let count = |pred: &dyn Fn(&std::collections::HashMap<String, String>) -> bool| {
            frames.iter().filter(|f| pred(f)).count() as u64
        };
        let quoted =
            |f: &std::collections::HashMap<String, String>| has(f, "icmp") || has(f, "icmpv6");
        let expert = tshark_expert(&file);

        // Decoding: nothing left undecoded, and the same packets, TCP
        // segments, UDP datagrams (fragments reassembled), ICMP errors.
        assert_eq!(
            decode["packets"],
            count(&|f| !f["frame.encap_type"].is_empty()),
            "{name} packets"
        );
        assert_eq!(decode["undecoded_total"], 0, "{name}: {decode:#}");
        // tshark gives up on an IPv6 packet of length 0 without a jumbo
        // option (BIG TCP); tcpdump decodes it, and so does podprobe.
        let big_tcp = name.ends_with("bigtcp-ipv6.pcap");
        if !big_tcp {
            assert_eq!(
                decode["tcp"],
                count(&|f| has(f, "tcp") && !quoted(f)),
                "{name} tcp"
            );
        }
        assert_eq!(
            decode["udp"],
            count(&|f| has(f, "udp") && !quoted(f)),
            "{name} udp"
        );
        let error = |f: &std::collections::HashMap<String, String>| {
            f["icmp.type"].split(',').next() == Some("3")
                || matches!(f["icmpv6.type"].split(',').next(), Some("1" | "2"))
        };
        assert_eq!(
            decode["icmp_errors"],
            count(&|f| error(f) && (has(f, "tcp") || has(f, "udp"))),
            "{name} icmp errors"
        );
        assert_eq!(
            decode["fragments"]["reassembled"],
            count(&|f| !f["ip.fragment.count"].is_empty() || !f["ipv6.fragment.count"].is_empty()),
            "{name} reassembled datagrams"
        );

        // DNS: the same messages, answers, timing and names.
        let port53 = |f: &std::collections::HashMap<String, String>| {
            f["udp.port"]
                .split(',')
                .chain(f["tcp.port"].split(','))
                .any(|p| p == "53")
        };
        let query = |f: &std::collections::HashMap<String, String>| {
            port53(f) && f["dns.flags.response"] == "0"
        };
        let response = |f: &std::collections::HashMap<String, String>| {
            port53(f) && f["dns.flags.response"] == "1"
        };
        assert_eq!(dns["queries"], count(&query), "{name} queries");
        assert_eq!(dns["responses"], count(&response), "{name} responses");
        assert_eq!(
            dns["nxdomain"],
            count(&|f| response(f) && f["dns.flags.rcode"] == "3"),
            "{name} nxdomain"
        );
        let unanswered =
            dns["unanswered"].as_u64().unwrap() + dns["unanswered_at_end"].as_u64().unwrap();
        assert_eq!(
            unanswered,
            count(&|f| query(f) && f["dns.response_in"].is_empty()),
            "{name} unanswered"
        );
        // The slowest answer, as tshark times it (dns.time, in seconds),
        // where tshark times it (not an answer cut by snaplen).
        let tshark_max = frames
            .iter()
            .filter(|f| response(f) && !f["dns.time"].is_empty())
            .map(|f| f["dns.time"].parse::<f64>().unwrap() * 1000.0)
            .reduce(f64::max);
        if let Some(theirs) = tshark_max {
            let ours = dns["max_ms"].as_f64().unwrap();
            assert!(
                (ours - theirs).abs() < 0.01,
                "{name} max latency {ours} {theirs}"
            );
        }
        let names: BTreeSet<String> = frames
            .iter()
            .filter(|f| query(f))
            .map(|f| f["dns.qry.name"].clone())
            .filter(|n| !n.is_empty())
            .map(|n| {
                if n == "<Root>" {
                    ".".to_string()
                } else {
                    n.to_ascii_lowercase()
                }
            })
            .collect();
        let ours: BTreeSet<String> = dns["top_names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ours, names, "{name} names");

        // TCP: connections, resets, and tshark's expert analysis of
        // retransmissions and zero windows.
        let streams: BTreeSet<&str> = frames
            .iter()
            .filter(|f| has(f, "tcp") && !quoted(f))
            .map(|f| f["tcp.stream"].as_str())
            .collect();
        if !big_tcp {
            assert_eq!(
                tcp["connections"],
                streams.len() as u64,
                "{name} connections"
            );
        }
        assert_eq!(
            tcp["resets_total"],
            count(&|f| f["tcp.flags.reset"].split(',').next() == Some("1")),
            "{name} resets"
        );
        assert_eq!(
            tcp["retransmissions"],
            expert_count(&expert, "TCP", "retransmission"),
            "{name} retransmissions"
        );
        assert_eq!(
            tcp["zero_windows"],
            expert_count(&expert, "TCP", "Zero Window"),
            "{name} zero windows"
        );
    }
}

/// (file, capture.decode, capture.dns, capture.tcp, capture.conntrack-invalid,
/// what the summary of the check that matters says).
const FINDINGS: &[(&str, &str, &str, &str, &str, &str)] = &[
    // A recursive answer after 130 ms: above dns.latency's 100 ms warning.
    (
        "dns_udp.pcap",
        "pass",
        "warn",
        "skip",
        "skip",
        "209.87.249.18:53 answers slowly: p99 130 ms",
    ),
    // The length prefix and the message of DNS over TCP, reassembled.
    (
        "dns_tcp.pcap",
        "pass",
        "warn",
        "pass",
        "pass",
        "209.87.249.18:53 answers slowly: p99 126 ms",
    ),
    (
        "edns-opts.pcap",
        "pass",
        "pass",
        "skip",
        "skip",
        "21 queries, all answered without a resend",
    ),
    // Ten queries captured at a server in 20 ms, then the capture ended:
    // cut off, not lost.
    (
        "gopacket-test_dns.pcap",
        "pass",
        "pass",
        "skip",
        "skip",
        "10 queries sent in the capture's last second may have been cut off by its end",
    ),
    // NFLOG (`tcpdump -i nflog:N`): four answers, their queries not captured.
    (
        "nflog.pcap",
        "pass",
        "pass",
        "skip",
        "skip",
        "no queries, 4 responses to queries sent before the capture began",
    ),
    // IPv4 fragments: 200 fragments of 51 AFS datagrams, 25 port unreachables.
    (
        "afs.pcap",
        "pass",
        "skip",
        "skip",
        "skip",
        "601 packets over 129.4 s: 0 TCP, 427 UDP, 25 ICMP errors; every packet decoded",
    ),
    // Mixed link types (Ethernet and loopback) in three pcapng sections, in
    // both byte orders.
    (
        "pcapng-test202-le.pcapng",
        "pass",
        "skip",
        "skip",
        "skip",
        "8 packets over",
    ),
    (
        "pcapng-test202-be.pcapng",
        "pass",
        "skip",
        "skip",
        "skip",
        "8 packets over",
    ),
    // TSO and BIG TCP packets whose IP length field is 0, a jumbogram.
    (
        "ipv4_tcp_http_xml_tso.pcap",
        "pass",
        "skip",
        "pass",
        "pass",
        "1 TCP",
    ),
    ("bigtcp-ipv4.pcap", "pass", "skip", "pass", "pass", "1 TCP"),
    ("bigtcp-ipv6.pcap", "pass", "skip", "pass", "pass", "1 TCP"),
    (
        "bigtcp-ipv6-hbh.pcap",
        "pass",
        "skip",
        "pass",
        "pass",
        "1 TCP",
    ),
    (
        "ipv6_jumbogram_1.pcap",
        "pass",
        "skip",
        "skip",
        "skip",
        "every packet decoded",
    ),
    (
        "ipv6-routing-header.pcap",
        "pass",
        "skip",
        "skip",
        "skip",
        "2 UDP",
    ),
    // Nanosecond pcap, Linux cooked capture.
    (
        "tcp-handshake-nano.pcap",
        "pass",
        "skip",
        "pass",
        "pass",
        "1 connection, 0 resets",
    ),
    // Retransmissions recovered at once: counted, not a stall.
    (
        "pptp.pcap",
        "pass",
        "skip",
        "pass",
        "pass",
        "4 retransmissions",
    ),
    (
        "ssh.pcap",
        "pass",
        "skip",
        "pass",
        "pass",
        "1 retransmission",
    ),
    // A lone RST of a connection begun before the capture.
    (
        "tcp_rst_data.pcap",
        "pass",
        "skip",
        "pass",
        "pass",
        "1 reset,",
    ),
];

#[test]
fn each_fixture_gives_its_expected_verdict() {
    for &(name, decode, dns, tcp, invalid, says) in FINDINGS {
        let report = analyze_file(&fixture(name));
        let statuses: Vec<&str> = [
            "capture.decode",
            "capture.dns",
            "capture.tcp",
            "capture.conntrack-invalid",
        ]
        .iter()
        .map(|id| check(&report, id)["status"].as_str().unwrap())
        .collect();
        assert_eq!(statuses, [decode, dns, tcp, invalid], "{name}: {report:#}");
        let summaries: Vec<&str> = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["summary"].as_str().unwrap())
            .collect();
        assert!(
            summaries.iter().any(|s| s.contains(says)),
            "{name}: no summary says '{says}': {summaries:#?}"
        );
    }
    // What decoding found, named.
    let report = analyze_file(&fixture("pcapng-test202-le.pcapng"));
    let link_types: Vec<(u64, u64)> = evidence(&report, "capture.decode")["link_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["linktype"].as_u64().unwrap(),
                l["packets"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(link_types, [(0, 2), (1, 6)]);
    let report = analyze_file(&fixture("nflog.pcap"));
    assert_eq!(
        evidence(&report, "capture.decode")["link_types"][0]["name"],
        "NFLOG (239)"
    );
    let report = analyze_file(&fixture("afs.pcap"));
    let fragments = &evidence(&report, "capture.decode")["fragments"];
    assert_eq!(
        (
            fragments["fragments"].as_u64(),
            fragments["reassembled"].as_u64()
        ),
        (Some(200), Some(51))
    );
    // The lone RST: who sent it, and that nothing of its connection came before.
    let file = fixture("tcp_rst_data.pcap");
    let report = analyze_file(&file);
    let reset = &evidence(&report, "capture.tcp")["resets"][0];
    let src = tshark_fields(&file, "tcp", "ip.src");
    let sport = tshark_fields(&file, "tcp", "tcp.srcport");
    assert_eq!(reset["from"], format!("{}:{}", src[0], sport[0]));
    assert_eq!(
        (reset["phase"].as_str(), reset["established"].as_bool()),
        (Some("unknown"), Some(false))
    );
    // Large TCP payloads measured from the record's length, as tcpdump does.
    for (name, len) in [
        ("bigtcp-ipv4.pcap", "80000"),
        ("bigtcp-ipv6.pcap", "79968"),
        ("ipv4_tcp_http_xml_tso.pcap", "1976"),
    ] {
        let out = run(Command::new(PODPROBE)
            .args(["capture", "-r"])
            .arg(fixture(name)));
        assert!(
            text(&out.stdout)
                .trim_end()
                .ends_with(&format!("length {len}")),
            "{name}: {}",
            text(&out.stdout)
        );
    }
}

/// Runs podprobe on a file and asserts it neither panics nor fails oddly.
fn read_survives(file: &Path) -> Output {
    let out = analyze_file_output(file);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{}: {stderr}", file.display());
    assert!(
        matches!(out.status.code(), Some(0..=2)),
        "{}: {:?} {stderr}",
        file.display(),
        out.status
    );
    out
}

#[test]
fn truncated_files_and_random_bytes_never_panic() {
    let tmp = TempDir::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = move |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    for file in fixtures() {
        let bytes = std::fs::read(&file).unwrap();
        for cut in [10, 24, 30, 40, bytes.len() / 2, bytes.len() - 1] {
            let path = tmp.path().join("cut.pcap");
            std::fs::write(&path, &bytes[..cut.min(bytes.len())]).unwrap();
            read_survives(&path);
        }
    }
    // A cut in the middle of a record: the packets before it are analysed.
    let edns = std::fs::read(fixture("edns-opts.pcap")).unwrap();
    let path = tmp.path().join("half.pcap");
    std::fs::write(&path, &edns[..edns.len() / 2]).unwrap();
    let out = read_survives(&path);
    assert!(
        text(&out.stderr).contains("truncated"),
        "{}",
        text(&out.stderr)
    );
    let report = report_of(&text(&out.stdout));
    assert!(evidence(&report, "capture.dns")["queries"].as_u64() > Some(5));

    // No such file: one line naming it once, exit 2.
    let out = read_survives(&tmp.path().join("missing.pcap"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("missing.pcap").count(), 1, "{stderr}");

    // Not a capture at all: one line, exit 2.
    let path = tmp.path().join("random.bin");
    std::fs::write(&path, random(4000)).unwrap();
    let out = read_survives(&path);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("not a pcap or pcapng file"),
        "{}",
        text(&out.stderr)
    );

    // A valid header followed by records of random bytes, for every link
    // type the analyzer decodes and one it does not: undecoded packets are
    // counted with their reason, never skipped silently.
    for linktype in [1u32, 0, 101, 108, 113, 239, 276, 147] {
        let mut file = Vec::new();
        file.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        file.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        file.extend_from_slice(&65535u32.to_le_bytes());
        file.extend_from_slice(&linktype.to_le_bytes());
        for i in 0..300u32 {
            let len = (i * 7) % 200;
            file.extend_from_slice(&i.to_le_bytes());
            file.extend_from_slice(&0u32.to_le_bytes());
            file.extend_from_slice(&len.to_le_bytes());
            file.extend_from_slice(&len.to_le_bytes());
            file.extend_from_slice(&random(len as usize));
        }
        let path = tmp.path().join("random.pcap");
        std::fs::write(&path, &file).unwrap();
        let out = read_survives(&path);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{}",
            text(&out.stderr)
        );
        let report = report_of(&text(&out.stdout));
        let decode = evidence(&report, "capture.decode");
        if linktype == 147 {
            assert_eq!(decode["undecoded_total"], 300, "{decode:#}");
            assert_eq!(decode["undecoded"][0]["reason"], "link-type-147");
            let c = check(&report, "capture.decode");
            assert_eq!(c["status"], "warn");
            assert!(
                c["summary"].as_str().unwrap().starts_with(
                    "300 of 300 packets could not be decoded (link type USER (147) not supported)"
                ),
                "{c:#}"
            );
            assert!(check(&report, "capture.dns")["summary"]
                .as_str()
                .unwrap()
                .contains("300 packets could not be decoded"));
        }
    }
}

#[test]
fn read_with_filter_and_write_copies_what_tshark_reads() {
    let tmp = TempDir::new();
    let out_file = tmp.path().join("out.pcap");
    let out = run(Command::new(PODPROBE)
        .args(["capture", "-f", "udp dst port 53", "-w"])
        .arg(&out_file)
        .arg("-r")
        .arg(fixture("edns-opts.pcap")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(tshark_count(&out_file, "dns.flags.response==0"), 21);
    assert_eq!(tshark_count(&out_file, "frame"), 21);

    // A nanosecond file stays nanosecond.
    let out = run(Command::new(PODPROBE)
        .args(["capture", "-w"])
        .arg(&out_file)
        .arg("-r")
        .arg(fixture("tcp-handshake-nano.pcap")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let times = |f: &Path| tshark_fields(f, "frame", "frame.time_epoch");
    assert_eq!(times(&out_file), times(&fixture("tcp-handshake-nano.pcap")));

    // The filter applies to every link type of a mixed pcapng; one pcap
    // cannot hold two link types, said in one line (exit 2).
    let out = run(Command::new(PODPROBE)
        .args([
            "capture",
            "--analyze",
            "-o",
            "json",
            "-f",
            "udp port 67",
            "-r",
        ])
        .arg(fixture("pcapng-test202-le.pcapng")));
    let report = report_of(&text(&out.stdout));
    assert_eq!(evidence(&report, "capture.decode")["packets"], 6);
    let out = run(Command::new(PODPROBE)
        .args(["capture", "-w"])
        .arg(&out_file)
        .arg("-r")
        .arg(fixture("pcapng-test202-le.pcapng")));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("mixes link types (EN10MB (1) and NULL (0))"),
        "{}",
        text(&out.stderr)
    );

    // Neither -w nor --analyze: one line per packet, as tcpdump prints.
    let out = run(Command::new(PODPROBE)
        .args(["capture", "-c", "3", "-r"])
        .arg(fixture("dns_tcp.pcap")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].contains("TCP ") && lines[0].contains(":53: [S]"),
        "{lines:?}"
    );
    assert!(lines[1].contains("[S.]"), "{lines:?}");

    let out = run(Command::new(PODPROBE)
        .args(["capture", "-f", "no such filter", "-r"])
        .arg(fixture("dns_udp.pcap")));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("podprobe: bad filter"));
}

#[test]
fn pcapng_reads_like_pcap() {
    let tmp = TempDir::new();
    for name in ["edns-opts.pcap", "dns_tcp.pcap", "afs.pcap"] {
        let ng = tmp.path().join(format!("{name}ng"));
        let out = run(Command::new("editcap")
            .args(["-F", "pcapng"])
            .arg(fixture(name))
            .arg(&ng));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let classic = analyze_file(&fixture(name));
        let next_gen = analyze_file(&ng);
        for id in ["capture.decode", "capture.dns", "capture.tcp"] {
            assert_eq!(
                evidence(&classic, id),
                evidence(&next_gen, id),
                "{name} {id}"
            );
        }
    }
}
