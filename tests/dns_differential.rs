//! The resolver models against the real libraries, on the wire: for every
//! lab DNS server (dnsmasq, unbound, named, kresd) and a matrix of
//! resolv.conf variants x server behaviours x names, real glibc, musl
//! (`musl-gcc -static`) and Go (CGO_ENABLED=0) look each name up in the
//! client pod while tcpdump captures; then podprobe's model of that library
//! looks it up on the same network. The test asserts that the model sent
//! the same queries (server, transport, name, type, in the same rounds and
//! from the same sockets), got the same outcome and predicted the time the
//! library took within 10 % or 50 ms.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use podprobe::dns::client::Wire;
use podprobe::dns::model::{Model, Outcome, Resolver, Trace, Transport};
use podprobe::dns::resolvconf::Env;
use podprobe::lab::{DnsMode, DnsServer, Lab, LabSpec, Pod};

/// The model's live lookups wait this long at most: the lab's servers
/// answer in well under a millisecond, anything slower is silence.
const PREDICT_WAIT: Duration = Duration::from_millis(300);
/// Queries the model sends within this of each other form one round,
/// compared as a set (Go's goroutines send in either order).
const ROUND_GAP_MS: f64 = 20.0;
/// How far a round's start may be off: a busy machine delays a process's
/// next send by tens of milliseconds.
const ROUND_SLACK_MS: f64 = 500.0;
/// A real lookup that takes longer than this hangs.
const ORACLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Lib {
    Glibc,
    Musl,
    Go,
}

const ALL: &[Lib] = &[Lib::Glibc, Lib::Musl, Lib::Go];

impl Lib {
    fn resolver(self) -> Resolver {
        match self {
            Lib::Glibc => Resolver::Glibc,
            // Debian's musl-tools.
            Lib::Musl => Resolver::Musl123,
            Lib::Go => Resolver::Go,
        }
    }
}

/// The oracle programs, built once per test run.
struct Oracles {
    glibc: PathBuf,
    musl: PathBuf,
    go: PathBuf,
}

impl Oracles {
    fn path(&self, lib: Lib) -> &Path {
        match lib {
            Lib::Glibc => &self.glibc,
            Lib::Musl => &self.musl,
            Lib::Go => &self.go,
        }
    }
}

fn oracles() -> &'static Oracles {
    static ORACLES: OnceLock<Oracles> = OnceLock::new();
    ORACLES.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dns_oracles");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dns-oracles");
        std::fs::create_dir_all(&dir).unwrap();
        let c = src.join("getaddrinfo.c");
        let go = src.join("lookup.go");
        let oracles = Oracles {
            glibc: dir.join("getaddrinfo-glibc"),
            musl: dir.join("getaddrinfo-musl"),
            go: dir.join("lookup-go"),
        };
        let build = |out: &Path, cmd: &mut Command| {
            let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
            assert!(status.success(), "{cmd:?} failed");
            assert!(out.exists());
        };
        build(
            &oracles.glibc,
            Command::new("gcc")
                .args(["-O2", "-o"])
                .arg(&oracles.glibc)
                .arg(&c),
        );
        build(
            &oracles.musl,
            Command::new("musl-gcc")
                .args(["-static", "-O2", "-o"])
                .arg(&oracles.musl)
                .arg(&c),
        );
        build(
            &oracles.go,
            Command::new("go")
                .args(["build", "-o"])
                .arg(&oracles.go)
                .arg(&go)
                .env("CGO_ENABLED", "0")
                .env("GOCACHE", dir.join("gocache"))
                .env("GOPATH", dir.join("gopath"))
                .env("GOFLAGS", "-mod=mod")
                .env("GOTOOLCHAIN", "local"),
        );
        oracles
    })
}

/// A resolv.conf for the client pod: `{MODE}` stands for that server's
/// address, `{kube-dns}` for the ClusterIP, `{pod}` for the DNS pod's own.
struct Variant {
    name: &'static str,
    conf: &'static str,
    names: &'static [&'static str],
    libs: &'static [Lib],
}

const SEARCH: &str =
    "search default.svc.cluster.local svc.cluster.local cluster.local corp.internal\n";

const VARIANTS: &[Variant] = &[
    Variant {
        name: "cluster-first",
        conf: "{search}nameserver {kube-dns}\noptions ndots:5\n",
        names: &["web", "api.example.com", "a.b.c.d.e.example", "api.example.com.", "kube-dns.kube-system", "nosuch"],
        libs: ALL,
    },
    Variant {
        name: "ndots-1",
        conf: "search default.svc.cluster.local svc.cluster.local\nnameserver {healthy}\noptions ndots:1\n",
        names: &["web", "api.example.com", "kube-dns.kube-system"],
        libs: ALL,
    },
    Variant {
        name: "ndots-2",
        conf: "{search}nameserver {healthy}\noptions ndots:2\n",
        names: &["api.example.com", "kube-dns.kube-system"],
        libs: ALL,
    },
    Variant {
        name: "silent-search-domain",
        conf: "{search}nameserver {silent-zone}\noptions ndots:5 timeout:1 attempts:3\n",
        names: &["api.example.com"],
        libs: ALL,
    },
    Variant {
        name: "rotate",
        conf: "nameserver {healthy}\nnameserver {kube-dns}\nnameserver {pod}\noptions rotate\n",
        names: &["api.example.com.", "nosuch.example.com."],
        libs: ALL,
    },
    Variant {
        name: "single-request-reopen",
        conf: "{search}nameserver {healthy}\noptions ndots:5 single-request-reopen\n",
        names: &["api.example.com", "web"],
        libs: ALL,
    },
    Variant {
        name: "edns0-trust-ad",
        conf: "nameserver {healthy}\noptions edns0 trust-ad\n",
        names: &["big.example.com.", "api.example.com."],
        libs: ALL,
    },
    Variant {
        name: "search-root",
        conf: "search .\nnameserver {healthy}\noptions timeout:1\n",
        names: &["api", "web.default.svc.cluster.local"],
        libs: ALL,
    },
    Variant {
        name: "no-tld-query",
        conf: "search default.svc.cluster.local\nnameserver {healthy}\noptions no-tld-query\n",
        names: &["nosuch", "web"],
        libs: ALL,
    },
    // musl asks all three at once and re-sends to the SERVFAILing one as
    // its replies come in: how often depends on which reply wins a race
    // of microseconds, in the real library as in the model.
    Variant {
        name: "three-nameservers",
        conf: "nameserver {refused}\nnameserver {servfail}\nnameserver {healthy}\noptions timeout:1\n",
        names: &["api.example.com.", "web.default.svc.cluster.local."],
        libs: &[Lib::Glibc, Lib::Go],
    },
    Variant {
        name: "refused-first",
        conf: "nameserver {refused}\nnameserver {healthy}\noptions timeout:1\n",
        names: &["api.example.com.", "nosuch.example.com."],
        libs: ALL,
    },
    Variant {
        name: "truncating",
        conf: "nameserver {truncate-udp}\n",
        names: &["api.example.com.", "big.example.com."],
        libs: ALL,
    },
    Variant {
        name: "big-answer",
        conf: "nameserver {healthy}\n",
        names: &["big.example.com."],
        libs: ALL,
    },
    Variant {
        name: "use-vc",
        conf: "nameserver {healthy}\noptions use-vc\n",
        names: &["api.example.com."],
        libs: ALL,
    },
    Variant {
        name: "unreachable-first",
        conf: "nameserver {unreachable}\nnameserver {healthy}\noptions timeout:1\n",
        names: &["api.example.com."],
        libs: ALL,
    },
    Variant {
        name: "unreachable",
        conf: "nameserver {unreachable}\noptions timeout:1\n",
        names: &["api.example.com."],
        libs: ALL,
    },
    Variant {
        name: "wrong-port",
        conf: "nameserver {wrong-port}\noptions timeout:1\n",
        names: &["api.example.com."],
        libs: ALL,
    },
    Variant {
        name: "wrong-address",
        conf: "nameserver {wrong-address}\noptions timeout:1 attempts:1\n",
        names: &["api.example.com."],
        libs: ALL,
    },
    Variant {
        name: "servfail",
        conf: "search default.svc.cluster.local\nnameserver {servfail}\noptions ndots:2 timeout:1\n",
        names: &["web"],
        libs: ALL,
    },
    Variant {
        name: "refused",
        conf: "nameserver {refused}\noptions timeout:1\n",
        names: &["api.example.com."],
        libs: ALL,
    },
];

/// What a real library did.
#[derive(Debug, serde::Deserialize)]
struct Real {
    ms: f64,
    error: Option<String>,
    addresses: Vec<String>,
}

/// One query on the wire.
#[derive(Debug, Clone)]
struct Packet {
    at: f64,
    server: IpAddr,
    transport: Transport,
    port: u16,
    qname: String,
    qtype: String,
}

/// One lookup of one name by one library.
struct Case {
    label: String,
    lib: Lib,
    real: Real,
    window: (f64, f64),
    conf: String,
    name: String,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// tcpdump on the client pod's eth0, writing DNS to `path`.
fn capture(lab: &Lab, path: &Path) -> (support::Child, BufReader<std::process::ChildStderr>) {
    let mut cmd = lab.command(Pod::Client, "tcpdump");
    cmd.args([
        "-i",
        "eth0",
        "--immediate-mode",
        "-B",
        "16384",
        "-U",
        "-n",
        "-w",
    ])
    .arg(path)
    .arg("port 53")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("tcpdump starts");
    let mut line = String::new();
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    stderr.read_line(&mut line).expect("tcpdump output");
    assert!(line.contains("listening on"), "tcpdump: {line}");
    (support::Child::guard(child), stderr)
}

/// The DNS queries in a capture, in order.
fn queries(path: &Path) -> Vec<Packet> {
    let out = support::run(Command::new("tshark").arg("-r").arg(path).args([
        "-Y",
        "dns.flags.response == 0",
        "-T",
        "fields",
        "-e",
        "frame.time_epoch",
        "-e",
        "ip.dst",
        "-e",
        "udp.srcport",
        "-e",
        "tcp.srcport",
        "-e",
        "dns.qry.name",
        "-e",
        "dns.qry.type",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]));
    let mut packets = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 6 {
            continue;
        }
        let (transport, port) = if f[2].is_empty() {
            (Transport::Tcp, f[3])
        } else {
            (Transport::Udp, f[2])
        };
        let names: Vec<&str> = f[4].split(',').collect();
        let types: Vec<&str> = f[5].split(',').collect();
        for (i, qtype) in types.iter().enumerate() {
            packets.push(Packet {
                at: f[0].parse().unwrap_or(0.0),
                server: f[1].parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
                transport,
                port: port.parse().unwrap_or(0),
                qname: names
                    .get(i)
                    .unwrap_or(&"")
                    .trim_end_matches('.')
                    .to_ascii_lowercase(),
                qtype: match *qtype {
                    "1" => "A".to_string(),
                    "28" => "AAAA".to_string(),
                    other => other.to_string(),
                },
            });
        }
    }
    packets
}

fn fill(template: &str, lab: &Lab) -> String {
    let mut text = template.replace("{search}", SEARCH);
    text = text.replace("{kube-dns}", "10.96.0.10");
    text = text.replace("{pod}", &Pod::Dns.ip().to_string());
    for instance in lab.dns_servers() {
        text = text.replace(
            &format!("{{{}}}", instance.mode),
            &instance.addr.to_string(),
        );
    }
    text
}

fn env() -> Env {
    Env {
        localdomain: None,
        res_options: None,
        hostname: podprobe::net::hostname(),
    }
}

/// The key a query is matched on.
fn key(server: IpAddr, transport: Transport, qname: &str, qtype: &str) -> String {
    format!("{server} {transport:?} {qname} {qtype}")
}

/// Compares what the model predicted with what the library did; returns
/// the differences.
fn compare(case: &Case, trace: &Trace, packets: &[Packet]) -> Vec<String> {
    let mut problems = Vec::new();
    let predicted: Vec<_> = trace.exchanges.iter().map(|e| &e.query).collect();
    let observed: Vec<&Packet> = packets
        .iter()
        .filter(|p| p.at >= case.window.0 && p.at <= case.window.1)
        .collect();
    let shown = || {
        let p: Vec<String> = predicted
            .iter()
            .map(|q| {
                format!(
                    "{:>8.1} {} {:?} {} {} s{}",
                    q.sent_at.as_secs_f64() * 1000.0,
                    q.server.ip(),
                    q.transport,
                    q.qname,
                    q.qtype,
                    q.socket
                )
            })
            .collect();
        let first = observed.first().map_or(0.0, |o| o.at);
        let o: Vec<String> = observed
            .iter()
            .map(|q| {
                format!(
                    "{:>8.1} {} {:?} {} {} :{}",
                    (q.at - first) * 1000.0,
                    q.server,
                    q.transport,
                    q.qname,
                    q.qtype,
                    q.port
                )
            })
            .collect();
        format!(
            "\n    predicted:\n      {}\n    on the wire:\n      {}",
            p.join("\n      "),
            o.join("\n      ")
        )
    };
    if predicted.len() != observed.len() {
        problems.push(format!(
            "{} queries predicted, {} on the wire{}",
            predicted.len(),
            observed.len(),
            shown()
        ));
    } else {
        // Round by round (queries sent together), as sets.
        let first_seen = observed.first().map_or(0.0, |o| o.at);
        let mut pairs: Vec<(usize, usize, usize)> = Vec::new();
        let mut start = 0;
        while start < predicted.len() {
            let mut end = start + 1;
            while end < predicted.len()
                && (predicted[end].sent_at.as_secs_f64() - predicted[end - 1].sent_at.as_secs_f64())
                    * 1000.0
                    <= ROUND_GAP_MS
            {
                end += 1;
            }
            // Go's goroutines take rotate's servers in either order; musl
            // re-sends whichever query's SERVFAIL comes back first.
            let loose = case.lib == Lib::Go && case.conf.contains("rotate");
            let resends = {
                let round: Vec<String> = (start..end)
                    .map(|p| {
                        key(
                            predicted[p].server.ip(),
                            predicted[p].transport,
                            "",
                            &predicted[p].qtype.to_string(),
                        )
                    })
                    .collect();
                let distinct: BTreeSet<&String> = round.iter().collect();
                distinct.len() < round.len()
            };
            let any_type = case.lib == Lib::Musl && resends;
            let mut free: Vec<usize> = (start..end).collect();
            for (p, q) in predicted.iter().enumerate().take(end).skip(start) {
                let qname = q.qname.trim_end_matches('.').to_ascii_lowercase();
                let found = free.iter().position(|&o| {
                    let seen = observed[o];
                    let same_server = loose || seen.server == q.server.ip();
                    same_server
                        && seen.transport == q.transport
                        && (q.malformed
                            || (seen.qname == qname
                                && (any_type || seen.qtype == q.qtype.to_string())))
                });
                match found {
                    Some(i) => pairs.push((p, free.remove(i), start)),
                    None => problems.push(format!(
                        "round {}: predicted {} not on the wire{}",
                        start,
                        key(q.server.ip(), q.transport, &qname, &q.qtype.to_string()),
                        shown()
                    )),
                }
            }
            let predicted_at = predicted[start].sent_at.as_secs_f64() * 1000.0;
            let seen_at = (observed[start].at - first_seen) * 1000.0;
            if (predicted_at - seen_at).abs() > (predicted_at * 0.1).max(ROUND_SLACK_MS) {
                problems.push(format!(
                    "round {start} sent at {seen_at:.1} ms, predicted {predicted_at:.1} ms{}",
                    shown()
                ));
            }
            start = end;
        }
        // The same sockets: a socket the model uses again has the same
        // source port on the wire; sockets open at once (in one round)
        // have different ones. (A closed socket's port may come back.)
        let udp: Vec<&(usize, usize, usize)> = pairs
            .iter()
            .filter(|(p, _, _)| predicted[*p].transport == Transport::Udp)
            .collect();
        'check: for (i, a) in udp.iter().enumerate() {
            for b in &udp[i + 1..] {
                let same_socket = predicted[a.0].socket == predicted[b.0].socket;
                let same_port = observed[a.1].port == observed[b.1].port;
                if same_socket != same_port && (same_socket || a.2 == b.2) {
                    problems.push(format!(
                        "queries {} and {}: model says {} socket, the wire says {} port{}",
                        a.0,
                        b.0,
                        if same_socket { "the same" } else { "another" },
                        if same_port { "the same" } else { "another" },
                        shown()
                    ));
                    break 'check;
                }
            }
        }
    }
    let real_outcome = match &case.real.error {
        Some(error) => format!("fails with {error}"),
        None => {
            let set: BTreeSet<IpAddr> = case
                .real
                .addresses
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect();
            Outcome::Resolved { addresses: set }.to_string()
        }
    };
    // musl 1.2.3 takes a truncated reply as it is; which records a server
    // fits in it varies (dnsmasq rotates them): compare how many.
    let partial = trace.notes.iter().any(|n| n.contains("no TCP"));
    if partial && case.real.error.is_none() {
        if let Outcome::Resolved { addresses } = &trace.outcome {
            if addresses.len() != case.real.addresses.len() {
                problems.push(format!(
                    "outcome: predicted {} addresses from a truncated reply, real {}",
                    addresses.len(),
                    case.real.addresses.len()
                ));
            }
        }
    } else if trace.outcome.to_string() != real_outcome {
        problems.push(format!(
            "outcome: predicted {}, real {real_outcome}",
            trace.outcome
        ));
    }
    problems
        .into_iter()
        .map(|p| format!("{}: {p}", case.label))
        .collect()
}

/// The model's time against the library's, within 10 % or 50 ms.
fn elapsed_difference(trace: &Trace, real_ms: f64) -> Option<String> {
    let predicted_ms = trace.elapsed.as_secs_f64() * 1000.0;
    ((predicted_ms - real_ms).abs() > (predicted_ms * 0.1).max(50.0))
        .then(|| format!("elapsed: predicted {predicted_ms:.1} ms, real {real_ms:.1} ms"))
}

/// Runs the real library for `case` again, then its model: the times of
/// both. A loaded machine stalls a process now and then; a lookup whose
/// queries and outcome matched is timed again before its time counts as
/// a difference.
fn retime(lab: &Lab, case: &Case, model: &Model) -> (f64, Trace) {
    lab.set_resolv_conf(Pod::Client, &case.conf).unwrap();
    let out = support::run_with_timeout(
        lab.command(Pod::Client, oracles().path(case.lib))
            .arg(&case.name),
        ORACLE_TIMEOUT,
    );
    let real: Option<Real> = serde_json::from_slice(&out.stdout).ok();
    let (model, name) = (model.clone(), case.name.clone());
    let trace = lab
        .in_pod(Pod::Client, move || {
            model.resolve(&name, &mut Wire::new(PREDICT_WAIT))
        })
        .expect("client pod");
    (real.map_or(f64::MAX, |r| r.ms), trace)
}

/// Runs the matrix against one server implementation; returns the
/// differences found.
fn differential(server: DnsServer) -> Vec<String> {
    let oracles = oracles();
    let mut lab = Lab::up(&LabSpec::new(env!("CARGO_BIN_EXE_podprobe")).dns_server(server))
        .unwrap_or_else(|e| panic!("{server}: {e}"));
    for mode in DnsMode::ALL {
        lab.add_dns_server(server, mode)
            .unwrap_or_else(|e| panic!("{server} {mode}: {e}"));
    }
    let pcap = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "dns-differential-{server}-{}.pcap",
        std::process::id()
    ));
    // A first lookup of each library, not compared: servers and caches
    // warm, binaries paged in.
    lab.set_resolv_conf(Pod::Client, &fill("nameserver {healthy}\n", &lab))
        .unwrap();
    for lib in ALL {
        support::run(
            lab.command(Pod::Client, oracles.path(*lib))
                .arg("api.example.com."),
        );
    }
    let (tcpdump, mut tcpdump_said) = capture(&lab, &pcap);
    let mut cases = Vec::new();
    for variant in VARIANTS {
        let conf = fill(variant.conf, &lab);
        lab.set_resolv_conf(Pod::Client, &conf).unwrap();
        for &lib in variant.libs {
            for &name in variant.names {
                let start = now();
                let out = support::run_with_timeout(
                    lab.command(Pod::Client, oracles.path(lib))
                        .arg(name)
                        .env_remove("LOCALDOMAIN")
                        .env_remove("RES_OPTIONS"),
                    ORACLE_TIMEOUT,
                );
                let end = now();
                let real: Real = serde_json::from_slice(&out.stdout).unwrap_or(Real {
                    ms: ORACLE_TIMEOUT.as_secs_f64() * 1000.0,
                    error: Some(format!("no output ({})", out.status)),
                    addresses: Vec::new(),
                });
                cases.push(Case {
                    label: format!("{server} {} {lib:?} {name}", variant.name),
                    lib,
                    real,
                    window: (start, end),
                    conf: conf.clone(),
                    name: name.to_string(),
                });
                // Let late packets of this lookup land before the next.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // tcpdump drops what is still queued when told to stop.
    std::thread::sleep(Duration::from_millis(500));
    tcpdump.stop();
    let mut said = String::new();
    let _ = std::io::Read::read_to_string(&mut tcpdump_said, &mut said);
    let dropped = said
        .lines()
        .find(|l| l.contains("dropped by kernel"))
        .unwrap_or("")
        .to_string();
    assert!(
        dropped.starts_with("0 packets") || dropped.is_empty(),
        "{server}: tcpdump: {said}"
    );
    let packets = queries(&pcap);
    let mut problems = Vec::new();
    for case in &cases {
        let mut model = Model::new(case.lib.resolver(), &case.conf, &env());
        if case.lib == Lib::Glibc {
            // glibc's rotate starts at a random server: take the one it did.
            let first = packets
                .iter()
                .find(|p| p.at >= case.window.0 && p.at <= case.window.1);
            if let Some(first) = first {
                model.rotate_start = model
                    .servers()
                    .iter()
                    .position(|s| s.ip() == first.server)
                    .unwrap_or(0) as u32;
            }
        }
        let name = case.name.clone();
        let run = model.clone();
        let trace = lab
            .in_pod(Pod::Client, move || {
                run.resolve(&name, &mut Wire::new(PREDICT_WAIT))
            })
            .expect("client pod");
        let found = compare(case, &trace, &packets);
        if !found.is_empty() {
            problems.extend(found);
            continue;
        }
        let mut timing = elapsed_difference(&trace, case.real.ms);
        for _ in 0..2 {
            if timing.is_none() {
                break;
            }
            let (real_ms, trace) = retime(&lab, case, &model);
            timing = elapsed_difference(&trace, real_ms);
        }
        problems.extend(timing.map(|t| format!("{}: {t}", case.label)));
    }
    eprintln!(
        "{server}: {} lookups compared, {} queries on the wire, {} differences",
        cases.len(),
        packets.len(),
        problems.len()
    );
    // The capture stays for a look when something differed.
    if problems.is_empty() {
        let _ = std::fs::remove_file(&pcap);
    } else {
        eprintln!("{server}: the capture is {}", pcap.display());
    }
    problems
}

#[test]
fn models_match_glibc_musl_and_go_on_the_wire() {
    let problems: Vec<String> = support::parallel(&DnsServer::ALL, |&server| differential(server))
        .into_iter()
        .flatten()
        .collect();
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
