//! The lab itself, built for real (root): DNS through real glibc, kube-proxy
//! Service spreading, the scenarios' faults, and a clean teardown.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use podprobe::lab::{
    cluster_first_resolv_conf, Lab, LabSpec, Pod, Scenario, Service, EXTERNAL_NAME, HEADLESS_NAME,
    HOST_DOMAIN_NAME,
};

const PODPROBE: &str = env!("CARGO_BIN_EXE_podprobe");

fn lab(scenarios: &[Scenario]) -> Lab {
    let mut spec = LabSpec::new(PODPROBE);
    spec.scenarios = scenarios.to_vec();
    Lab::up(&spec).expect("lab up")
}

/// `getent ahosts NAME` in the client pod (real glibc), and how long it took.
fn getent(lab: &Lab, name: &str) -> (Duration, Output) {
    let start = Instant::now();
    let out = lab
        .command(Pod::Client, "getent")
        .args(["ahosts", name])
        .output()
        .unwrap();
    (start.elapsed(), out)
}

fn addresses(out: &Output) -> BTreeSet<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// One HTTP/1.1 request on `stream`; returns the name of the backend that answered.
fn get(stream: &mut TcpStream, close: bool) -> String {
    let connection = if close { "close" } else { "keep-alive" };
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: web\r\nConnection: {connection}\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("content-length: ") {
            length = v.parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let body = String::from_utf8(body).unwrap();
    let backend = Pod::BACKENDS
        .iter()
        .find(|pod| body.contains(pod.name()))
        .unwrap_or_else(|| panic!("no backend named in {body}"));
    backend.name().to_string()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

#[test]
fn glibc_resolves_cluster_names_through_the_lab_dns() {
    let lab = lab(&[]);
    let (_, out) = getent(&lab, "kubernetes.default");
    assert!(out.status.success(), "{out:?}");
    assert!(addresses(&out).contains("10.96.0.1"), "{out:?}");
    let (_, out) = getent(&lab, "web");
    assert_eq!(
        addresses(&out),
        BTreeSet::from([Service::Web.ip().to_string()])
    );
    let (_, out) = getent(&lab, HEADLESS_NAME);
    let backends: BTreeSet<String> = Pod::BACKENDS.iter().map(|p| p.ip().to_string()).collect();
    assert_eq!(addresses(&out), backends);
    // Unknown names in the cluster zone are NXDOMAIN, as CoreDNS answers.
    let (_, out) = getent(&lab, "nosuchservice.default.svc.cluster.local.");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn ndots5_sends_ten_queries_for_an_external_name() {
    let lab = lab(&[]);
    let (_, out) = getent(&lab, EXTERNAL_NAME);
    assert!(out.status.success(), "{out:?}");
    assert!(addresses(&out).contains("203.0.113.10"));
    assert!(addresses(&out).contains("2001:db8::10"));
    let expected = [
        "api.example.com.default.svc.cluster.local",
        "api.example.com.svc.cluster.local",
        "api.example.com.cluster.local",
        "api.example.com.corp.internal",
        "api.example.com",
    ];
    // dnsmasq writes its log asynchronously.
    let deadline = Instant::now() + Duration::from_secs(5);
    let queries = loop {
        let queries: Vec<_> = lab
            .dns_queries()
            .unwrap()
            .into_iter()
            .filter(|q| q.name.starts_with(EXTERNAL_NAME))
            .collect();
        if queries.len() >= 10 || Instant::now() > deadline {
            break queries;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(queries.len(), 10, "{queries:?}");
    for name in expected {
        for qtype in ["A", "AAAA"] {
            assert!(
                queries.iter().any(|q| q.name == name && q.qtype == qtype),
                "no {qtype} query for {name}: {queries:?}"
            );
        }
    }
    assert!(queries
        .iter()
        .all(|q| q.from == Pod::Client.ip().to_string()));
}

#[test]
fn cluster_ip_spreads_new_connections_over_all_backends() {
    let lab = lab(&[]);
    let seen: BTreeSet<String> = lab
        .in_pod(Pod::Client, || {
            (0..40)
                .map(|_| get(&mut connect(Service::Web.addr().into()), true))
                .collect()
        })
        .unwrap();
    assert_eq!(
        seen,
        BTreeSet::from(["backend-1".into(), "backend-2".into(), "backend-3".into()])
    );
}

#[test]
fn kept_alive_connection_stays_on_one_backend() {
    let lab = lab(&[]);
    // The connection is made in the client pod and used from here.
    let mut stream = lab
        .in_pod(Pod::Client, || connect(Service::Web.addr().into()))
        .unwrap();
    let seen: BTreeSet<String> = (0..20).map(|_| get(&mut stream, false)).collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
}

#[test]
fn dns_race_makes_glibc_wait_and_single_request_reopen_fixes_it() {
    let lab = lab(&[Scenario::DnsRace]);
    let (took, out) = getent(&lab, "kubernetes.default");
    assert!(out.status.success(), "{out:?}");
    assert!(took >= Duration::from_secs(5), "took {took:?}");
    let fixed = cluster_first_resolv_conf() + "options single-request-reopen\n";
    lab.set_resolv_conf(Pod::Client, &fixed).unwrap();
    let (took, out) = getent(&lab, "kubernetes.default");
    assert!(out.status.success(), "{out:?}");
    assert!(took < Duration::from_millis(100), "took {took:?}");
}

#[test]
fn slow_dns_delays_only_the_host_domain() {
    let mut lab = lab(&[]);
    lab.add_scenario(Scenario::SlowDns).unwrap();
    let (took, out) = getent(&lab, HOST_DOMAIN_NAME);
    assert!(out.status.success(), "{out:?}");
    assert!(took >= Duration::from_millis(300), "took {took:?}");
    let (took, out) = getent(&lab, "kubernetes.default");
    assert!(out.status.success(), "{out:?}");
    assert!(took < Duration::from_millis(200), "took {took:?}");
}

#[test]
fn netpol_drop_makes_connects_hang() {
    let lab = lab(&[Scenario::NetpolDrop]);
    let err = lab
        .in_pod(Pod::Client, || {
            TcpStream::connect_timeout(&Service::Web.addr().into(), Duration::from_millis(500))
        })
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
}

#[test]
fn netpol_reject_resets_connects_at_once() {
    let lab = lab(&[Scenario::NetpolReject]);
    let start = Instant::now();
    let err = lab
        .in_pod(Pod::Client, || {
            TcpStream::connect_timeout(&Service::Web.addr().into(), Duration::from_secs(2))
        })
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(start.elapsed() < Duration::from_millis(500));
    // Both policies block the same port: asking for both is refused.
    let mut lab = lab;
    assert!(lab.add_scenario(Scenario::NetpolDrop).is_err());
}

/// What the host looks like from outside any lab: namespaces, host
/// iptables (counters stripped), /etc/netns and lab state mentioning `name`.
fn host_snapshot(name: &str) -> (Vec<String>, String) {
    let netns = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let mut leftovers: Vec<String> = netns
        .lines()
        .filter(|l| l.starts_with(&format!("{name}-")))
        .map(String::from)
        .collect();
    for dir in ["/etc/netns", "/run/podprobe/lab"] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file == name || file.starts_with(&format!("{name}-")) {
                leftovers.push(format!("{dir}/{file}"));
            }
        }
    }
    let rules = String::from_utf8(Command::new("iptables-save").output().unwrap().stdout).unwrap();
    let rules = rules
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    (leftovers, rules)
}

fn podprobe(args: &[&str]) -> Output {
    Command::new(PODPROBE).args(args).output().unwrap()
}

#[test]
fn cli_lab_up_exec_status_down_leaves_nothing_behind() {
    let name = format!("ppcli{}", std::process::id());
    let (before, rules_before) = host_snapshot(&name);
    assert!(before.is_empty(), "{before:?}");

    let out = podprobe(&["lab", "up", "--name", &name, "--scenario", "netpol-reject"]);
    assert!(out.status.success(), "{out:?}");
    // The lab outlives the command that built it.
    let out = podprobe(&[
        "lab",
        "exec",
        "--name",
        &name,
        "--",
        "getent",
        "hosts",
        "web.default",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("10.96.0.20"));
    let out = podprobe(&[
        "lab",
        "exec",
        "--name",
        &name,
        "--pod",
        "backend-2",
        "--",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("10.244.0.12/32"),
        "{out:?}"
    );
    let out = podprobe(&["lab", "exec", "--name", &name, "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    let out = podprobe(&["lab", "status", "--name", &name]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.contains(&format!("{name}-client"))
            && status.contains("netpol-reject")
            && status.contains("dnsmasq"),
        "{status}"
    );
    let out = podprobe(&["lab", "up", "--name", &name]);
    assert_eq!(out.status.code(), Some(2), "a second lab of the same name");

    let pids: Vec<String> = ["dns", "backend-1", "backend-2", "backend-3"]
        .iter()
        .flat_map(|pod| {
            let out = Command::new("ip")
                .args(["netns", "pids", &format!("{name}-{pod}")])
                .output()
                .unwrap();
            String::from_utf8(out.stdout)
                .unwrap()
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(pids.len(), 4, "dnsmasq and three backends: {pids:?}");

    let out = podprobe(&["lab", "down", "--name", &name]);
    assert!(out.status.success(), "{out:?}");
    for pid in pids {
        // Gone, or a zombie waiting for an init that does not reap.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "process {pid} survived: {stat}"
        );
    }
    let (after, rules_after) = host_snapshot(&name);
    assert!(after.is_empty(), "left behind: {after:?}");
    assert_eq!(rules_before, rules_after);
}

#[test]
fn lab_guard_tears_down_on_panic() {
    let name = format!("ppguard{}", std::process::id());
    let spec = LabSpec::new(PODPROBE).name(&name);
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::up(&spec).unwrap();
        let _server = lab
            .spawn(lab.command(Pod::Backend1, "sleep").arg("600"))
            .unwrap();
        panic!("a failing test");
    });
    assert!(result.is_err());
    let (left, _) = host_snapshot(&name);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn missing_tools_are_named_with_their_packages() {
    let empty = std::env::temp_dir().join(format!("ppnotools{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(PODPROBE)
        .args(["lab", "up", "--name", "ppnotools"])
        .env("PATH", &empty)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for named in [
        "ip (package iproute2)",
        "iptables (package iptables)",
        "conntrack (package conntrack)",
        "dnsmasq (package dnsmasq-base)",
    ] {
        assert!(stderr.contains(named), "{stderr}");
    }
    assert!(!std::path::Path::new("/run/podprobe/lab/ppnotools").exists());
    std::fs::remove_dir(&empty).unwrap();
}

#[test]
fn demo_shows_podprobe_finding_each_fault() {
    let child = Command::new(PODPROBE)
        .args(["lab", "demo"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let failing = |check: &str| {
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains(check))
    };
    assert!(failing("dns.timeout-race"), "{stdout}");
    assert!(failing("grpc.distribution"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("WARN") && l.contains("http.keepalive-mismatch")),
        "{stdout}"
    );
    assert!(failing("dns.search-expansion"), "{stdout}");
    assert!(stdout.contains("web.default:80 timed out"), "{stdout}");
    assert!(stdout.contains("web.default:80 refused"), "{stdout}");
    for scenario in Scenario::ALL {
        assert!(
            stdout.contains(&format!("=== scenario {scenario}:")),
            "{stdout}"
        );
        // A scenario that breaks nothing (a cache, another kube-proxy mode)
        // is shown, not found failing.
        let code = if scenario.is_fault() { " 1" } else { " 0" };
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("  {scenario} ")) && l.ends_with(code)),
            "{scenario} not found with exit code{code} in the summary: {stdout}"
        );
    }
    // Every lab the demo built (named after its pid) is gone.
    let prefix = format!("pp{pid}-");
    let netns = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(!netns.contains(&prefix), "{netns}");
}

fn one_line_exit_2(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("podprobe: "), "{stderr}");
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let out = podprobe(&["lab", "up", "--scenario", "no-such-fault"]);
    one_line_exit_2(&out);
    let out = podprobe(&["lab", "up", "--name", "Bad/Name"]);
    one_line_exit_2(&out);
    let out = podprobe(&["lab", "exec", "--name", "ppnosuchlab", "--", "true"]);
    one_line_exit_2(&out);
    let out = podprobe(&["lab", "down", "--name", "ppnosuchlab"]);
    one_line_exit_2(&out);
    use std::os::unix::process::CommandExt;
    let out = Command::new(PODPROBE)
        .args(["lab", "up"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    one_line_exit_2(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("root"));
}
