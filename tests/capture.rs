//! `podprobe capture`, live, end to end: the real binary captures in
//! network namespaces made here (a client `a` and a server `b` joined by a
//! veth pair, dnsmasq in `b`, real glibc and dig in `a`) and in the lab's
//! pods, while real faults happen; its output is checked with the real
//! tshark and capinfos. Public captures are in capture_fixtures.rs.

use std::collections::BTreeSet;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::{check, run, Netns};

mod capture_support;
use capture_support::{
    expert_count, report_of, text, tshark_count, tshark_expert, tshark_fields, TempDir, PODPROBE,
};

use podprobe::lab::invalid::two_requests;
use podprobe::lab::{Lab, LabSpec, Pod, Scenario, Service, BACKEND_HTTP_PORT, EXTERNAL_NAME};

const CLIENT_IP: &str = "10.77.0.1";
const SERVER_IP: &str = "10.77.0.2";

#[test]
fn writing_pcap_to_a_terminal_is_refused_with_the_kubectl_hint() {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two descriptors we then own.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: both are fresh descriptors from openpty.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let out = run(Command::new(PODPROBE)
        .args(["capture", "-w", "-"])
        .stdout(Stdio::from(slave)));
    drop(master);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("kubectl debug -it") && stderr.contains("`-i`"),
        "{stderr}"
    );
}

#[test]
fn without_cap_net_raw_the_error_names_the_capability_and_the_fix() {
    let out = run(Command::new("setpriv").args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
        PODPROBE,
        "capture",
        "-c",
        "1",
        "-w",
        "/dev/null",
    ]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("CAP_NET_RAW"), "{stderr}");
    assert!(stderr.contains("--profile=netadmin"), "{stderr}");
    assert!(stderr.contains("NET_RAW]"), "{stderr}");
    assert!(stderr.contains("UID 65534"), "{stderr}");
}

// ---------------------------------------------------------------- live

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Two network namespaces joined by a veth pair (`eth0` on both sides),
/// removed with everything in them when dropped, even after a failure.
struct Pair {
    a: Netns,
    b: Netns,
    servers: Vec<Child>,
}

impl Pair {
    fn new() -> Pair {
        let (a, b) = (Netns::new("capa"), Netns::new("capb"));
        // Interface names are at most 15 bytes; these live only until moved.
        let veth = format!(
            "ppc{}x{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let (na, nb) = (&a.name, &b.name);
        support::sh(&format!(
            "ip link add {veth}a type veth peer name {veth}b
             ip link set {veth}a netns {na}; ip link set {veth}b netns {nb}
             ip -n {na} link set {veth}a name eth0; ip -n {nb} link set {veth}b name eth0
             ip -n {na} addr add {CLIENT_IP}/24 dev eth0; ip -n {nb} addr add {SERVER_IP}/24 dev eth0
             ip -n {na} link set eth0 up; ip -n {nb} link set eth0 up"
        ));
        Pair {
            a,
            b,
            servers: Vec::new(),
        }
    }

    /// A command run inside the client namespace.
    fn in_a(&self, program: &str) -> Command {
        self.a.command(program)
    }

    fn in_b(&self, program: &str) -> Command {
        self.b.command(program)
    }

    /// dnsmasq in `b`: `*.cluster.local` and `example.com` are its zones
    /// (NXDOMAIN for unknown names), with a few records.
    fn start_dns(&mut self) {
        self.start_dns_with(&[]);
    }

    /// dnsmasq with more options (records, listen addresses).
    fn start_dns_with(&mut self, extra: &[&str]) {
        let child = self
            .in_b("dnsmasq")
            .args(extra)
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--user=root",
                "--bind-interfaces",
                &format!("--listen-address={SERVER_IP}"),
                "--local=/cluster.local/",
                "--local=/example.com/",
                "--address=/api.example.com/10.1.2.3",
                "--address=/web.default.svc.cluster.local/10.1.2.4",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.servers.push(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = run(self.in_a("dig").args([
                "+short",
                "+tries=1",
                "+time=1",
                &format!("@{SERVER_IP}"),
                "api.example.com",
            ]));
            if text(&out.stdout).contains("10.1.2.3") {
                return;
            }
            assert!(Instant::now() < deadline, "dnsmasq did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The client's resolv.conf, as a pod's: `ip netns exec` bind-mounts it.
    fn resolv_conf(&self, options: &str) {
        let dir = PathBuf::from("/etc/netns").join(&self.a.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("resolv.conf"),
            format!(
                "nameserver {SERVER_IP}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions {options}\n"
            ),
        )
        .unwrap();
    }

    /// Sends `n` small UDP datagrams from `a` to `b`.
    fn udp_burst(&self, n: u32) {
        let out = run(self.in_a("bash").args([
            "-c",
            &format!(
                "for i in $(seq {n}); do echo ping$i > /dev/udp/{SERVER_IP}/9; sleep 0.01; done"
            ),
        ]));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    /// Starts podprobe capture in `a`; returns once the capture is armed.
    fn capture_to_file(&self, file: &Path, args: &[&str]) -> Child {
        start_capture(self.in_a(PODPROBE), file, args)
    }
}

/// Starts `podprobe capture -w FILE ARGS` as `cmd` (podprobe, maybe inside a
/// namespace); returns once the capture is armed (the pcap header is in the
/// file).
fn start_capture(mut cmd: Command, file: &Path, args: &[&str]) -> Child {
    let child = cmd
        .args(["capture", "-w"])
        .arg(file)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(file).map_or(0, |m| m.len()) < 24 {
        assert!(Instant::now() < deadline, "capture did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

impl Drop for Pair {
    fn drop(&mut self) {
        for child in &mut self.servers {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The namespaces themselves go when `a` and `b` drop, after this.
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.a.name));
    }
}

/// Starts `podprobe capture ... -w -` as `cmd` and pipes its stream into
/// `tshark -r -`. Returns once the capture is armed: the pcap header, which
/// podprobe writes as soon as it captures, has been read (and passed on).
fn stream_into_tshark(mut cmd: Command) -> (Child, Child) {
    use std::io::{Read, Write};
    let mut podprobe = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stream = podprobe.stdout.take().unwrap();
    let mut header = [0u8; 24];
    stream
        .read_exact(&mut header)
        .expect("pcap header on stdout");
    let mut tshark = Command::new("tshark")
        .args([
            "-n",
            "-r",
            "-",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "dns.qry.name",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut sink = tshark.stdin.take().unwrap();
    sink.write_all(&header).unwrap();
    // Relays until podprobe ends its stream; dropping `sink` ends tshark's.
    std::thread::spawn(move || std::io::copy(&mut stream, &mut sink));
    (podprobe, tshark)
}

/// Waits for a child, killing it (and failing) if it outlives `limit`.
fn finish(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}: {}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// The packet count of the stats line on stderr.
fn captured(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("packets captured"))
        .unwrap_or_else(|| panic!("no stats line in: {stderr}"));
    assert!(
        line.ends_with("dropped by kernel")
            || line.contains("dropped by kernel (the reader went away after"),
        "{line}"
    );
    line.split_whitespace().next().unwrap().parse().unwrap()
}

/// capinfos accepts the file; returns its packet count.
fn capinfos_packets(file: &Path) -> u64 {
    let out = run(Command::new("capinfos").args(["-c", "-M"]).arg(file));
    assert!(out.status.success(), "capinfos: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Number of packets:"))
        .unwrap_or_else(|| panic!("{stdout}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn count_duration_max_size_and_signals_each_leave_a_valid_pcap() {
    let pair = Pair::new();
    let tmp = TempDir::new();

    // -c: exactly N packets.
    let file = tmp.path().join("count.pcap");
    let child = pair.capture_to_file(&file, &["-c", "5"]);
    pair.udp_burst(20);
    let out = finish(child, Duration::from_secs(10));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(captured(&text(&out.stderr)), 5);
    assert_eq!(capinfos_packets(&file), 5);

    // --duration: stops on time even when nothing arrives.
    let file = tmp.path().join("duration.pcap");
    let started = Instant::now();
    let child = pair.capture_to_file(&file, &["--duration", "1s", "-f", "udp port 9"]);
    let out = finish(child, Duration::from_secs(10));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(capinfos_packets(&file), 0);

    // --max-size: the file never grows past it, and ends on a whole record.
    let file = tmp.path().join("size.pcap");
    let child = pair.capture_to_file(&file, &["--max-size", "1k", "-f", "udp port 9"]);
    pair.udp_burst(40);
    let out = finish(child, Duration::from_secs(10));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size <= 1000 && size > 900, "{size}");
    assert_eq!(capinfos_packets(&file), captured(&text(&out.stderr)));

    // SIGINT and SIGTERM: flushed, complete, the stats line, exit 0.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let file = tmp.path().join(format!("signal{sig}.pcap"));
        let child = pair.capture_to_file(&file, &["-f", "udp port 9"]);
        pair.udp_burst(10);
        signal(&child, sig);
        let out = finish(child, Duration::from_secs(5));
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "signal {sig}: {stderr}");
        assert_eq!(captured(&stderr), 10, "{stderr}");
        assert_eq!(capinfos_packets(&file), 10);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn streamed_pcap_matches_tshark_packet_for_packet_and_name_for_name() {
    let mut pair = Pair::new();
    pair.start_dns();
    let names = [
        "api.example.com",
        "web.default.svc.cluster.local",
        "nope.example.com",
    ];
    let mut cmd = pair.in_a(PODPROBE);
    cmd.args([
        "capture",
        "--analyze",
        "-o",
        "json",
        "-f",
        "udp port 53",
        "-w",
        "-",
    ]);
    let (podprobe, tshark) = stream_into_tshark(cmd);
    for name in names {
        let out =
            run(pair
                .in_a("dig")
                .args(["+tries=1", "+time=2", &format!("@{SERVER_IP}"), name]));
        assert!(out.status.success());
    }
    signal(&podprobe, libc::SIGINT);
    let pout = finish(podprobe, Duration::from_secs(5));
    assert!(pout.status.success(), "{}", text(&pout.stderr));
    let out = finish(tshark, Duration::from_secs(20));
    let stderr = text(&pout.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let tshark = text(&out.stdout);
    let frames = tshark.lines().filter(|l| !l.is_empty()).count() as u64;
    assert_eq!(captured(&stderr), frames, "{tshark}\n{stderr}");
    assert_eq!(frames, 6, "{tshark}");
    let tshark_names: BTreeSet<&str> = tshark
        .lines()
        .filter_map(|l| l.split('\t').nth(1))
        .collect();
    let report = report_of(&stderr);
    let dns = check(&report, "capture.dns");
    let ours: BTreeSet<&str> = dns["evidence"]["top_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(ours, tshark_names);
    assert_eq!(ours, names.into_iter().collect());
    assert_eq!(dns["status"], "pass", "{dns}");
    assert_eq!(dns["evidence"]["nxdomain"], 1);
}

#[test]
fn a_reader_that_leaves_ends_the_capture_quietly() {
    let pair = Pair::new();
    // The reader leaves after the header and one packet, while packets flow.
    let busy = pair
        .in_a("sh")
        .args([
            "-c",
            &format!("{PODPROBE} capture -w - | head -c 60 >/dev/null"),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Packets until podprobe has noticed; it may still be starting up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut busy = busy;
    while busy.try_wait().unwrap().is_none() && Instant::now() < deadline {
        pair.udp_burst(5);
    }
    let out = finish(busy, Duration::from_secs(5));
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("rror"),
        "{stderr}"
    );
    captured(&stderr);

    // `| head -c 1000`: the count is of the records the reader got whole,
    // not of those written into the pipe it left unread.
    let tmp = TempDir::new();
    let got = tmp.path().join("got.pcap");
    let mut head = pair
        .in_a("sh")
        .args([
            "-c",
            &format!(
                "{PODPROBE} capture -f 'udp port 9' -w - | head -c 1000 > {}",
                got.display()
            ),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while head.try_wait().unwrap().is_none() && Instant::now() < deadline {
        // Bursts faster than head reads: the pipe fills.
        let _ = run(pair.in_a("bash").args([
            "-c",
            &format!("for i in $(seq 300); do echo ping$i > /dev/udp/{SERVER_IP}/9; done"),
        ]));
    }
    let out = finish(head, Duration::from_secs(5));
    let stderr = text(&out.stderr);
    let bytes = std::fs::read(&got).unwrap();
    assert_eq!(bytes.len(), 1000);
    let mut at = 24;
    let mut whole = 0;
    while at + 16 <= bytes.len() {
        let caplen = u32::from_ne_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        if at + 16 + caplen > bytes.len() {
            break;
        }
        at += 16 + caplen;
        whole += 1;
    }
    assert_eq!(captured(&stderr), whole, "{stderr}");
    assert!(
        stderr.contains("(the reader went away after 1000 bytes)"),
        "{stderr}"
    );

    // The reader leaves while nothing arrives: noticed without a packet.
    let idle = pair
        .in_a("sh")
        .args([
            "-c",
            &format!("{PODPROBE} capture -f 'udp port 9' -w - | head -c 24 >/dev/null; echo \"${{PIPESTATUS:-}}\""),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = finish(idle, Duration::from_secs(5));
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(captured(&stderr), 0, "{stderr}");
}

#[test]
fn glibc_search_list_lookups_show_as_a_search_chain() {
    let mut pair = Pair::new();
    pair.start_dns();
    pair.resolv_conf("ndots:5");
    let tmp = TempDir::new();
    let file = tmp.path().join("glibc.pcap");
    let child = pair.capture_to_file(&file, &["--analyze", "-o", "json", "-f", "udp port 53"]);
    let out = run(pair.in_a("getent").args(["ahosts", "api.example.com"]));
    assert!(
        text(&out.stdout).contains("10.1.2.3"),
        "{}",
        text(&out.stdout)
    );
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGINT);
    let out = finish(child, Duration::from_secs(5));
    let report = report_of(&text(&out.stdout));
    let dns = check(&report, "capture.dns");
    assert_eq!(dns["status"], "warn", "{dns}");
    let chain = &dns["evidence"]["search_chains"][0];
    assert_eq!(chain["base"], "api.example.com");
    assert_eq!(chain["client"], CLIENT_IP);
    assert_eq!(chain["variants"].as_array().unwrap().len(), 3, "{chain}");
    // A and AAAA for each of the 4 names.
    assert_eq!(chain["queries"], 8, "{chain}");
    assert!(chain["nxdomain"].as_u64() >= Some(6), "{chain}");
    // tshark agrees on what was on the wire.
    assert_eq!(
        dns["evidence"]["queries"],
        tshark_count(&file, "dns.flags.response==0")
    );
    assert_eq!(
        dns["evidence"]["nxdomain"],
        tshark_count(&file, "dns.flags.rcode==3")
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn lost_dns_replies_fail_with_the_five_second_race_named() {
    let mut pair = Pair::new();
    pair.start_dns();
    pair.resolv_conf("ndots:1 attempts:2");
    // The conntrack race's effect: of two UDP/53 packets of one 4-tuple
    // (glibc's parallel A and AAAA) the second is lost. The lab drops it
    // within a millisecond, as the race does; a one-second window here keeps
    // the loss certain on a loaded machine.
    let out = run(pair.in_b("iptables").args([
        "-A",
        "INPUT",
        "-p",
        "udp",
        "--dport",
        "53",
        "-m",
        "hashlimit",
        "--hashlimit-above",
        "1/sec",
        "--hashlimit-burst",
        "1",
        "--hashlimit-mode",
        "srcip,srcport,dstip,dstport",
        "--hashlimit-name",
        "race",
        "-j",
        "DROP",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tmp = TempDir::new();
    let file = tmp.path().join("race.pcap");
    let child = pair.capture_to_file(&file, &["--analyze", "-o", "json", "-f", "udp port 53"]);
    let started = Instant::now();
    let _ = run(pair.in_a("getent").args(["ahosts", "api.example.com"]));
    assert!(
        started.elapsed() > Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGINT);
    let out = finish(child, Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report = report_of(&text(&out.stdout));
    let dns = check(&report, "capture.dns");
    assert_eq!(dns["status"], "fail", "{dns}");
    let gaps = dns["evidence"]["retransmit_gaps_ms"].as_array().unwrap();
    assert!(
        gaps.iter()
            .any(|g| (g.as_f64().unwrap() - 5000.0).abs() < 300.0),
        "{gaps:?}"
    );
    assert!(
        dns["summary"]
            .as_str()
            .unwrap()
            .contains("conntrack insert race"),
        "{dns}"
    );
    assert_eq!(report["verdict"], "fail");
}

/// Runs `f` on a thread that has entered the network namespace `ns`:
/// sockets it makes live there.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: a valid namespace descriptor; setns affects this thread only.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}");
        f()
    })
}

/// One HTTP-like exchange on a fresh connection; with `race`, the server
/// closes the idle connection and the client then sends a second request
/// into it, which the server's kernel answers with RST: the keep-alive race.
fn tcp_exchange(pair: &Pair, race: bool) {
    use std::io::{Read, Write};
    let server = in_netns(&pair.b.name, move || {
        let listener = std::net::TcpListener::bind((SERVER_IP, 8080)).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(b"RESP").unwrap();
        if race {
            std::thread::sleep(Duration::from_millis(200));
        } else {
            // Wait for the client's close, then close too.
            let _ = conn.read(&mut buf);
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let client = in_netns(&pair.a.name, move || {
        let mut conn = std::net::TcpStream::connect((SERVER_IP, 8080)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"GET1").unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).unwrap();
        if race {
            std::thread::sleep(Duration::from_millis(500));
            conn.write_all(b"GET2").unwrap();
            let _ = conn.read(&mut buf);
        }
    });
    client.join().unwrap();
    server.join().unwrap();
}

fn capture_tcp(pair: &Pair, race: bool) -> (Value, PathBuf, TempDir) {
    let tmp = TempDir::new();
    let file = tmp.path().join("tcp.pcap");
    let child = pair.capture_to_file(&file, &["--analyze", "-o", "json", "-f", "tcp port 8080"]);
    tcp_exchange(pair, race);
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGINT);
    let out = finish(child, Duration::from_secs(5));
    assert!(out.status.success(), "{}", text(&out.stderr));
    (report_of(&text(&out.stdout)), file, tmp)
}

#[test]
fn a_clean_tcp_exchange_passes() {
    let pair = Pair::new();
    let (report, file, _tmp) = capture_tcp(&pair, false);
    let tcp = check(&report, "capture.tcp");
    assert_eq!(tcp["status"], "pass", "{tcp}");
    assert_eq!(tcp["evidence"]["connections"], 1);
    assert_eq!(tcp["evidence"]["resets_total"], 0);
    assert_eq!(
        tcp["evidence"]["retransmissions"],
        tshark_count(&file, "tcp.analysis.retransmission")
    );
}

#[test]
fn a_reset_after_a_request_into_a_closed_connection_warns_and_points_at_keepalive() {
    let pair = Pair::new();
    let (report, file, _tmp) = capture_tcp(&pair, true);
    let tcp = check(&report, "capture.tcp");
    assert_eq!(tcp["status"], "warn", "{tcp}");
    let reset = &tcp["evidence"]["resets"][0];
    assert_eq!(reset["from"], format!("{SERVER_IP}:8080"), "{reset}");
    assert_eq!(reset["established"], true);
    assert_eq!(reset["request_after_fin"], true);
    assert_eq!(reset["after_bytes"], 12);
    let idle = reset["idle_ms"].as_f64().unwrap();
    assert!(idle < 100.0, "{reset}");
    assert_eq!(
        tcp["evidence"]["resets_total"],
        tshark_count(&file, "tcp.flags.reset==1")
    );
    let remedy = tcp["remedy"].as_array().unwrap();
    assert!(
        remedy[0].as_str().unwrap().contains("podprobe keepalive"),
        "{tcp}"
    );
    assert_eq!(report["verdict"], "warn");
}

#[test]
fn any_interface_gives_cooked_capture_that_analyzes_the_same() {
    let mut pair = Pair::new();
    pair.start_dns();
    let tmp = TempDir::new();
    let file = tmp.path().join("any.pcap");
    let child = pair.capture_to_file(
        &file,
        &["-i", "any", "--analyze", "-o", "json", "-f", "udp port 53"],
    );
    for name in ["api.example.com", "nope.example.com"] {
        let out =
            run(pair
                .in_a("dig")
                .args(["+tries=1", "+time=2", &format!("@{SERVER_IP}"), name]));
        assert!(out.status.success());
    }
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGINT);
    let out = finish(child, Duration::from_secs(5));
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The "any" device gives Linux cooked capture v2, as tcpdump writes it:
    // each packet keeps its interface.
    let encap = run(Command::new("capinfos").args(["-E", "-M"]).arg(&file));
    assert!(
        text(&encap.stdout).contains("linux-sll2"),
        "{}",
        text(&encap.stdout)
    );
    let ifindex = tshark_fields(&file, "dns", "sll.ifindex");
    assert!(
        !ifindex.is_empty() && ifindex.iter().all(|i| i != "0"),
        "{ifindex:?}"
    );
    let report = report_of(&text(&out.stdout));
    let dns = check(&report, "capture.dns");
    assert_eq!(dns["status"], "pass", "{dns}");
    assert_eq!(dns["evidence"]["queries"], 2);
    assert_eq!(dns["evidence"]["responses"], 2);
    assert_eq!(
        dns["evidence"]["nxdomain"],
        tshark_count(&file, "dns.flags.rcode==3")
    );
}

// ---------------------------------------------------------------- lab

fn lab(scenarios: &[Scenario]) -> Lab {
    let mut spec = LabSpec::new(PODPROBE);
    spec.scenarios = scenarios.to_vec();
    Lab::up(&spec).expect("lab up")
}

/// Captures DNS on the client pod's eth0 while real glibc resolves `name`;
/// returns the report, how long the lookup took, and the pcap.
fn capture_lab_lookup(lab: &Lab, name: &str) -> (Value, Duration, PathBuf, TempDir) {
    let tmp = TempDir::new();
    let file = tmp.path().join("lab.pcap");
    let child = start_capture(
        lab.podprobe(Pod::Client),
        &file,
        &["-i", "eth0", "--analyze", "-o", "json", "-f", "udp port 53"],
    );
    let started = Instant::now();
    let out = run(lab.command(Pod::Client, "getent").args(["ahosts", name]));
    let took = started.elapsed();
    assert!(out.status.success(), "getent {name}: {out:?}");
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGINT);
    let out = finish(child, Duration::from_secs(5));
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        text(&out.stderr)
    );
    (report_of(&text(&out.stdout)), took, file, tmp)
}

#[test]
fn lab_dns_race_captured_fails_with_five_second_gaps() {
    let lab = lab(&[Scenario::DnsRace]);
    let (report, took, file, _tmp) = capture_lab_lookup(&lab, "kubernetes.default");
    assert!(took >= Duration::from_secs(5), "took {took:?}");
    let dns = check(&report, "capture.dns");
    assert_eq!(dns["status"], "fail", "{dns}");
    let gaps: Vec<f64> = dns["evidence"]["retransmit_gaps_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_f64().unwrap())
        .collect();
    assert!(
        gaps.iter().any(|g| (4500.0..5600.0).contains(g)),
        "{gaps:?}"
    );
    assert!(
        dns["summary"]
            .as_str()
            .unwrap()
            .contains("conntrack insert race"),
        "{dns}"
    );
    assert_eq!(dns["evidence"]["retransmitted"], gaps.len() as u64, "{dns}");
    assert_eq!(
        dns["evidence"]["queries"],
        tshark_count(&file, "dns.flags.response==0")
    );
    assert_eq!(report["verdict"], "fail");
}

#[test]
fn lab_healthy_dns_passes() {
    let lab = lab(&[]);
    // A fully qualified name: no search list, A and AAAA answered at once.
    let (report, _, file, _tmp) = capture_lab_lookup(&lab, &format!("{}.", Service::Web.fqdn()));
    let dns = check(&report, "capture.dns");
    assert_eq!(dns["status"], "pass", "{dns}");
    assert_eq!(dns["evidence"]["queries"], 2);
    assert_eq!(dns["evidence"]["responses"], 2);
    assert_eq!(dns["evidence"]["retransmitted"], 0);
    assert_eq!(
        dns["evidence"]["responses"],
        tshark_count(&file, "dns.flags.response==1")
    );
    assert_eq!(report["verdict"], "pass");
}

#[test]
fn lab_external_name_is_a_search_chain_and_the_stream_matches_tshark() {
    let lab = lab(&[]);
    let mut cmd = lab.podprobe(Pod::Client);
    cmd.args([
        "capture",
        "--analyze",
        "-o",
        "json",
        "-f",
        "udp port 53",
        "-w",
        "-",
    ]);
    let (podprobe, tshark) = stream_into_tshark(cmd);
    let out = run(lab
        .command(Pod::Client, "getent")
        .args(["ahosts", EXTERNAL_NAME]));
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_millis(200));
    signal(&podprobe, libc::SIGINT);
    let pout = finish(podprobe, Duration::from_secs(5));
    let stderr = text(&pout.stderr);
    assert!(pout.status.success(), "{stderr}");
    let out = finish(tshark, Duration::from_secs(20));
    let tshark = text(&out.stdout);
    let frames = tshark.lines().filter(|l| !l.is_empty()).count() as u64;
    // 5 names (4 search domains and the name itself), A and AAAA, answered.
    assert_eq!(frames, 20, "{tshark}");
    assert_eq!(captured(&stderr), frames);
    let tshark_names: BTreeSet<&str> = tshark
        .lines()
        .filter_map(|l| l.split('\t').nth(1))
        .collect();

    let report = report_of(&stderr);
    let dns = check(&report, "capture.dns");
    assert_eq!(dns["status"], "warn", "{dns}");
    let ours: BTreeSet<&str> = dns["evidence"]["top_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(ours, tshark_names);
    let chain = &dns["evidence"]["search_chains"][0];
    assert_eq!(chain["base"], EXTERNAL_NAME, "{chain}");
    assert_eq!(chain["client"], Pod::Client.ip().to_string());
    assert_eq!(chain["variants"].as_array().unwrap().len(), 4, "{chain}");
    assert_eq!(chain["queries"], 10, "{chain}");
    assert_eq!(chain["nxdomain"], 8, "{chain}");
}

// ------------------------------------------------- faults, as they happen

/// Stops the capture in `child` a moment after the traffic and returns its
/// report.
fn stop_capture(child: Child) -> Value {
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGINT);
    let out = finish(child, Duration::from_secs(10));
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        text(&out.stderr)
    );
    report_of(&text(&out.stdout))
}

fn summary(check: &Value) -> &str {
    check["summary"].as_str().unwrap()
}

/// A DNS server frozen for 6 s with no NAT anywhere: glibc's A and AAAA
/// both wait, both are resent after 5 s, and everything is answered when
/// the server wakes. A server stall, not the conntrack race.
#[test]
fn a_frozen_dns_server_is_a_stall_not_the_race() {
    let mut pair = Pair::new();
    pair.start_dns();
    pair.resolv_conf("ndots:1");
    let tmp = TempDir::new();
    let file = tmp.path().join("frozen.pcap");
    let child = pair.capture_to_file(&file, &["--analyze", "-o", "json", "-f", "udp port 53"]);
    let dnsmasq = pair.servers[0].id() as i32;
    // SAFETY: signals to our own child.
    unsafe { libc::kill(dnsmasq, libc::SIGSTOP) };
    let lookup = pair
        .in_a("getent")
        .args(["ahosts", "api.example.com"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(6));
    // SAFETY: as above.
    unsafe { libc::kill(dnsmasq, libc::SIGCONT) };
    let out = finish(lookup, Duration::from_secs(15));
    assert!(
        text(&out.stdout).contains("10.1.2.3"),
        "{}",
        text(&out.stdout)
    );
    let report = stop_capture(child);
    let dns = check(&report, "capture.dns");
    assert_eq!(dns["status"], "fail", "{dns:#}");
    assert!(
        summary(dns).starts_with(&format!(
            "server stall: {SERVER_IP}:53 answered nothing for"
        )),
        "{dns:#}"
    );
    assert!(!summary(dns).contains("race"), "{dns:#}");
    let causes = &dns["evidence"]["causes"];
    assert_eq!(causes["conntrack_race"], 0, "{dns:#}");
    assert!(causes["server_stall"].as_u64() >= Some(2), "{dns:#}");
    let stall = &dns["evidence"]["servers"][0]["stalls"][0];
    let stalled = stall["duration_ms"].as_f64().unwrap();
    assert!((5500.0..8000.0).contains(&stalled), "{stall}");
    assert!(
        !dns["remedy"].to_string().contains("single-request-reopen"),
        "{dns:#}"
    );
    assert_eq!(
        dns["evidence"]["queries"],
        tshark_count(&file, "dns.flags.response==0")
    );
}

/// IPv6 DNS answers of 3 kB arrive in fragments: reassembled, they are
/// answers; with one fragment removed from the same capture (editcap), the
/// query is explained as an answer lost in fragments, not the race.
#[test]
fn ipv6_dns_with_large_answers_reassembles_and_names_a_lost_fragment() {
    let mut pair = Pair::new();
    support::sh(&format!(
        "ip -n {a} addr add fd77::1/64 dev eth0 nodad; ip -n {b} addr add fd77::2/64 dev eth0 nodad",
        a = pair.a.name,
        b = pair.b.name
    ));
    // Twelve 250-byte strings: a TXT answer of about 3 kB.
    let chunk = "x".repeat(250);
    let txt = format!(
        "--txt-record=big.example.com{}",
        format!(",{chunk}").repeat(12)
    );
    pair.start_dns_with(&["--listen-address=fd77::2", "--edns-packet-max=4096", &txt]);
    let tmp = TempDir::new();
    let file = tmp.path().join("v6.pcap");
    // No port filter: BPF's `port 53` does not match IPv6 fragments.
    let child = pair.capture_to_file(
        &file,
        &["--analyze", "-o", "json", "-f", "ip6 and not icmp6"],
    );
    for i in 0..3 {
        if i == 1 {
            // The first query then lies more than a second before the end.
            std::thread::sleep(Duration::from_millis(1200));
        }
        let out = run(pair.in_a("dig").args([
            "@fd77::2",
            "+bufsize=4096",
            "+notcp",
            "+ignore",
            "+tries=1",
            "+time=2",
            "TXT",
            "big.example.com",
        ]));
        assert!(
            text(&out.stdout).contains("MSG SIZE  rcvd: 3"),
            "{}",
            text(&out.stdout)
        );
    }
    let report = stop_capture(child);
    let dns = check(&report, "capture.dns");
    assert_eq!(dns["status"], "pass", "{dns:#}");
    assert_eq!(dns["evidence"]["answered"], 3, "{dns:#}");
    let decode = &check(&report, "capture.decode")["evidence"];
    assert_eq!(decode["fragments"]["reassembled"], 3, "{decode:#}");
    assert_eq!(
        decode["fragments"]["reassembled"],
        tshark_count(&file, "ipv6.fragment.count")
    );
    assert_eq!(
        dns["evidence"]["responses"],
        tshark_count(&file, "dns.flags.response==1")
    );

    // The last fragment of the first answer, removed.
    let frames = tshark_fields(&file, "ipv6.fragment.count", "frame.number");
    let lost = tmp.path().join("lost.pcap");
    let out = run(Command::new("editcap")
        .arg(&file)
        .arg(&lost)
        .arg(&frames[0]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = capture_support::analyze_file(&lost);
    let dns = check(&report, "capture.dns");
    assert_eq!(dns["status"], "fail", "{dns:#}");
    assert_eq!(dns["evidence"]["causes"]["fragments_lost"], 1, "{dns:#}");
    assert_eq!(dns["evidence"]["causes"]["conntrack_race"], 0, "{dns:#}");
    assert!(
        summary(dns).contains("1 answer lost in IP fragments"),
        "{dns:#}"
    );
    assert_eq!(
        dns["evidence"]["unanswered"],
        tshark_count(&lost, "dns.flags.response==0 && !dns.response_in")
    );
    let decode = check(&report, "capture.decode");
    assert_eq!(decode["status"], "warn", "{decode:#}");
    assert!(
        summary(decode).contains("1 fragmented datagram never completed"),
        "{decode:#}"
    );
}

/// One connection from `a` to `b`:`port` where `b`'s server accepts and
/// then runs `server`; the client runs `client` on the stream.
fn tcp_session(
    pair: &Pair,
    port: u16,
    server: impl FnOnce(std::net::TcpStream) + Send + 'static,
    client: impl FnOnce(std::net::TcpStream) + Send + 'static,
) {
    let listener = in_netns(&pair.b.name, move || {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        // A small receive buffer fills (and closes the window) quickly.
        socket.set_recv_buffer_size(4096).unwrap();
        socket.set_reuse_address(true).unwrap();
        let addr: std::net::SocketAddr = format!("{SERVER_IP}:{port}").parse().unwrap();
        socket.bind(&addr.into()).unwrap();
        socket.listen(1).unwrap();
        std::net::TcpListener::from(socket)
    })
    .join()
    .unwrap();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        server(conn);
    });
    in_netns(&pair.a.name, move || {
        let conn = std::net::TcpStream::connect((SERVER_IP, port)).unwrap();
        client(conn);
    })
    .join()
    .unwrap();
    server.join().unwrap();
}

/// A receiver that stops reading for 2 s: its window closes and the sender
/// waits. Graded as a zero-window stall with its duration.
#[test]
fn a_receiver_that_stops_reading_is_a_zero_window_stall() {
    use std::io::{Read, Write};
    let pair = Pair::new();
    let tmp = TempDir::new();
    let file = tmp.path().join("zero.pcap");
    let child = pair.capture_to_file(&file, &["--analyze", "-o", "json", "-f", "tcp port 9000"]);
    tcp_session(
        &pair,
        9000,
        |mut conn| {
            std::thread::sleep(Duration::from_secs(2));
            let mut buf = vec![0u8; 65536];
            while conn.read(&mut buf).is_ok_and(|n| n > 0) {}
        },
        |mut conn| {
            conn.set_write_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            conn.write_all(&vec![7u8; 1 << 20]).unwrap();
        },
    );
    let report = stop_capture(child);
    let tcp = check(&report, "capture.tcp");
    assert_eq!(tcp["status"], "warn", "{tcp:#}");
    assert!(
        summary(tcp).starts_with(&format!(
            "{SERVER_IP}:9000 stopped reading: zero window for"
        )),
        "{tcp:#}"
    );
    let stall = &tcp["evidence"]["zero_window_stalls"][0];
    let ms = stall["duration_ms"].as_f64().unwrap();
    assert!((1200.0..4000.0).contains(&ms), "{stall}");
    assert_eq!(
        tcp["evidence"]["zero_windows"],
        expert_count(&tshark_expert(&file), "TCP", "Zero Window")
    );
}

/// The peer vanishes mid-transfer (a pod deleted, a node gone: everything
/// sent to it is lost): the sender retransmits into the void. Never acknowledged: a fail,
/// with the run's length.
#[test]
fn a_peer_that_vanishes_mid_transfer_is_an_unacknowledged_run() {
    use std::io::Write;
    let pair = Pair::new();
    let tmp = TempDir::new();
    let file = tmp.path().join("vanish.pcap");
    let child = pair.capture_to_file(&file, &["--analyze", "-o", "json", "-f", "tcp port 9001"]);
    let b = pair.b.name.clone();
    tcp_session(
        &pair,
        9001,
        move |mut conn| {
            use std::io::Read;
            // Read for a while, then vanish without a word.
            let until = Instant::now() + Duration::from_millis(300);
            conn.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let mut buf = vec![0u8; 65536];
            while Instant::now() < until {
                let _ = conn.read(&mut buf);
            }
            // Everything to it is lost from now on, as for a pod deleted
            // on another node.
            support::sh(&format!("ip netns exec {b} iptables -w -I INPUT -j DROP"));
            std::thread::sleep(Duration::from_secs(5));
        },
        |mut conn| {
            conn.set_write_timeout(Some(Duration::from_secs(6)))
                .unwrap();
            for _ in 0..60 {
                if conn.write_all(&[1u8; 1000]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_secs(5));
        },
    );
    let report = stop_capture(child);
    let tcp = check(&report, "capture.tcp");
    assert_eq!(tcp["status"], "fail", "{tcp:#}");
    assert!(
        summary(tcp).contains(&format!("-> {SERVER_IP}:9001: a segment retransmitted")),
        "{tcp:#}"
    );
    assert!(summary(tcp).contains("never acknowledged"), "{tcp:#}");
    let run = tcp["evidence"]["retransmission_runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["acknowledged"] == false)
        .unwrap_or_else(|| panic!("{tcp:#}"));
    assert!(run["retransmits"].as_u64() >= Some(3), "{run}");
    assert!(run["duration_ms"].as_f64() >= Some(2000.0), "{run}");
    assert_eq!(
        tcp["evidence"]["retransmissions"],
        expert_count(&tshark_expert(&file), "TCP", "retransmission")
    );
}

/// Captures TCP on the client pod's eth0 while `traffic` runs in it.
fn capture_lab_tcp(lab: &Lab, traffic: impl FnOnce() + Send) -> (Value, PathBuf, TempDir) {
    let tmp = TempDir::new();
    let file = tmp.path().join("lab-tcp.pcap");
    let child = start_capture(
        lab.podprobe(Pod::Client),
        &file,
        &["-i", "eth0", "--analyze", "-o", "json", "-f", "tcp"],
    );
    lab.in_pod(Pod::Client, traffic).unwrap();
    (stop_capture(child), file, tmp)
}

/// NetworkPolicy DROP on the backends' port: SYNs to the Service are never
/// answered. REJECT: each connect is refused by a reset.
#[test]
fn lab_dropped_and_rejected_ports_are_unanswered_and_refused() {
    let dropped = lab(&[Scenario::NetpolDrop]);
    let (report, file, _tmp) = capture_lab_tcp(&dropped, || {
        let err = std::net::TcpStream::connect_timeout(
            &Service::Web.addr().into(),
            Duration::from_millis(3500),
        );
        assert!(err.is_err());
        std::thread::sleep(Duration::from_millis(1200));
    });
    let tcp = check(&report, "capture.tcp");
    assert_eq!(tcp["status"], "fail", "{tcp:#}");
    assert!(
        summary(tcp).starts_with(&format!(
            "1 connect never answered (first {}:",
            Pod::Client.ip()
        )),
        "{tcp:#}"
    );
    let syn = &tcp["evidence"]["unanswered_syns"][0];
    assert_eq!(syn["server"], Service::Web.addr().to_string());
    assert!(syn["syns"].as_u64() >= Some(2), "{syn}");
    assert_eq!(
        syn["syns"].as_u64().unwrap(),
        tshark_count(&file, "tcp.flags.syn==1 && tcp.flags.ack==0")
    );
    assert!(tcp["remedy"][0]
        .as_str()
        .unwrap()
        .contains("NetworkPolicies"));
    drop(dropped);

    let rejected = lab(&[Scenario::NetpolReject]);
    let (report, file, _tmp) = capture_lab_tcp(&rejected, || {
        for _ in 0..3 {
            let err = std::net::TcpStream::connect_timeout(
                &Service::Web.addr().into(),
                Duration::from_secs(2),
            )
            .unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
        }
    });
    let tcp = check(&report, "capture.tcp");
    assert_eq!(tcp["status"], "fail", "{tcp:#}");
    assert!(summary(tcp).starts_with("3 connects refused"), "{tcp:#}");
    assert_eq!(
        tcp["evidence"]["refused"][0]["server"],
        Service::Web.addr().to_string()
    );
    assert_eq!(
        tcp["evidence"]["refused_total"],
        tshark_count(&file, "tcp.flags.reset==1")
    );
    assert_eq!(tcp["evidence"]["resets"][0]["phase"], "refused");
}

/// The escaped-DNAT reset, made real: a backend's segment outside the
/// window is marked INVALID by the node's conntrack, skips the reverse NAT,
/// and the client resets it; its next request is "connection reset by
/// peer". Then the fix, kube-proxy's INVALID drop rule, and the finding is
/// gone.
#[test]
fn lab_invalid_reset_is_the_escaped_dnat_reset_and_the_drop_rule_fixes_it() {
    // The lab node has kube-proxy's INVALID drop rule: the scenario takes
    // it away.
    let mut lab = lab(&[]);
    let rules = |lab: &Lab| {
        text(
            &run(lab
                .command(Pod::Node, "iptables-save")
                .args(["-t", "filter"]))
            .stdout,
        )
    };
    assert!(
        rules(&lab).contains("--ctstate INVALID -j DROP"),
        "{}",
        rules(&lab)
    );
    lab.add_scenario(Scenario::InvalidReset).unwrap();
    assert!(!rules(&lab).contains("INVALID"), "{}", rules(&lab));
    let invalid_before = conntrack_invalid(&lab);
    let (report, file, _tmp) = capture_lab_tcp(&lab, || {
        let err = two_requests(Service::Web.addr().into()).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    });
    assert!(
        conntrack_invalid(&lab) > invalid_before,
        "the node's conntrack saw no INVALID packet"
    );
    let invalid = check(&report, "capture.conntrack-invalid");
    assert_eq!(invalid["status"], "fail", "{invalid:#}");
    let escape = &invalid["evidence"]["escaped"][0];
    let client = escape["client"].as_str().unwrap();
    let backend = escape["stray_from"].as_str().unwrap();
    assert!(
        client.starts_with(&format!("{}:", Pod::Client.ip())),
        "{escape}"
    );
    assert!(
        Pod::BACKENDS
            .iter()
            .any(|p| backend == format!("{}:{BACKEND_HTTP_PORT}", p.ip())),
        "{escape}"
    );
    assert_eq!(escape["service"], Service::Web.addr().to_string());
    assert_eq!(escape["then"], "reset-by-service", "{escape}");
    assert_eq!(
        summary(invalid),
        format!(
            "{client} reset a segment from {backend}, an address it never opened a connection to, arriving on the local port of its connection to {}; that connection was then reset by {} {:.0} ms later: the backend's reply escaped the Service's DNAT",
            Service::Web.addr(),
            Service::Web.addr(),
            escape["then_after_ms"].as_f64().unwrap()
        )
    );
    let details = invalid["remedy"].to_string() + &invalid["refs"].to_string();
    for needle in [
        "--ctstate INVALID -j DROP",
        "nf_conntrack_tcp_be_liberal",
        "issues/74839",
        "kube-proxy-subtleties",
    ] {
        assert!(details.contains(needle), "{needle}: {invalid:#}");
    }
    // tshark sees the same: a RST from the client to the backend's own
    // address, which the client never sent a SYN to.
    let host = backend.split(':').next().unwrap();
    assert_eq!(
        tshark_count(&file, &format!("tcp.flags.reset==1 && ip.dst=={host}")),
        1
    );
    assert_eq!(
        tshark_count(&file, &format!("tcp.flags.syn==1 && ip.dst=={host}")),
        0
    );

    // The fix: drop INVALID on the node, as kube-proxy does.
    let out = run(lab.command(Pod::Node, "iptables").args([
        "-w",
        "-I",
        "FORWARD",
        "1",
        "-m",
        "conntrack",
        "--ctstate",
        "INVALID",
        "-j",
        "DROP",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (report, _file, _tmp) =
        capture_lab_tcp(&lab, || two_requests(Service::Web.addr().into()).unwrap());
    let invalid = check(&report, "capture.conntrack-invalid");
    assert_eq!(invalid["status"], "pass", "{invalid:#}");
    assert_eq!(
        check(&report, "capture.tcp")["status"],
        "pass",
        "{report:#}"
    );
}

/// The node's conntrack `invalid` counter, summed over CPUs.
fn conntrack_invalid(lab: &Lab) -> u64 {
    let out = run(lab.command(Pod::Node, "conntrack").arg("-S"));
    text(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("invalid="))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// DNS over TCP as some resolvers send it: the 2-byte length in a segment
/// of its own, then the message. Reassembled, each query is paired with its
/// answer (real dnsmasq), as tshark pairs them.
#[test]
fn dns_over_tcp_with_the_length_in_its_own_segment_is_reassembled() {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use std::io::{Read, Write};
    let mut pair = Pair::new();
    pair.start_dns();
    let tmp = TempDir::new();
    let file = tmp.path().join("dns-tcp.pcap");
    let child = pair.capture_to_file(&file, &["--analyze", "-o", "json", "-f", "tcp port 53"]);
    in_netns(&pair.a.name, || {
        let mut conn = std::net::TcpStream::connect((SERVER_IP, 53)).unwrap();
        conn.set_nodelay(true).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        for (id, name) in [(1u16, "api.example.com."), (2, "nope.example.com.")] {
            let mut query = Message::query();
            query.metadata.id = id;
            query.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            let bytes = query.to_vec().unwrap();
            conn.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            conn.write_all(&bytes).unwrap();
            let mut len = [0u8; 2];
            conn.read_exact(&mut len).unwrap();
            let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
            conn.read_exact(&mut answer).unwrap();
        }
    })
    .join()
    .unwrap();
    let report = stop_capture(child);
    let dns = check(&report, "capture.dns");
    assert_eq!(dns["status"], "pass", "{dns:#}");
    let ev = &dns["evidence"];
    assert_eq!(
        (
            ev["queries"].as_u64(),
            ev["responses"].as_u64(),
            ev["answered"].as_u64()
        ),
        (Some(2), Some(2), Some(2)),
        "{dns:#}"
    );
    assert_eq!(ev["queries"], tshark_count(&file, "dns.flags.response==0"));
    assert_eq!(ev["nxdomain"], tshark_count(&file, "dns.flags.rcode==3"));
    assert_eq!(
        check(&report, "capture.decode")["evidence"]["dns_tcp_gaps"],
        0
    );
}
