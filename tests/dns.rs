//! DNS checks against real DNS servers: dnsmasq in a network namespace of
//! the test's own, queried by the real podprobe binary.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use podprobe::lab::{Lab, LabSpec, Pod, Scenario, EXTERNAL_NAME, HOST_DOMAIN};
use support::{check, report, run, Netns};

/// A scratch directory removed on drop, or on a signal.
struct Scratch(PathBuf, #[allow(dead_code)] podprobe::cleanup::Cleanup);

impl Scratch {
    fn new() -> Scratch {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pp-dns-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let removal = podprobe::cleanup::removing(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir, removal)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// dnsmasq serving a small cluster.local zone on `addr`:53 inside `ns`,
/// logging every query; killed on drop (or on a signal).
struct Dnsmasq {
    _child: podprobe::cleanup::Killed,
    log: PathBuf,
}

impl Dnsmasq {
    fn start(ns: &Netns, dir: &Scratch, addr: &str, extra: &[&str]) -> Dnsmasq {
        let log = dir.0.join(format!("dnsmasq-{addr}.log"));
        let pid = dir.0.join(format!("dnsmasq-{addr}.pid"));
        let mut cmd = ns.command("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            "--group=root",
            "--port=53",
            "--log-queries",
            "--local=/cluster.local/",
            "--local=/corp.example/",
            "--host-record=kubernetes.default.svc.cluster.local,10.96.0.1",
            "--host-record=web.prod.svc.cluster.local,10.96.5.5",
            "--local=/example/",
            "--host-record=api.example.com,203.0.113.10,2001:db8::10",
        ])
        .arg(format!("--listen-address={addr}"))
        .arg(format!("--log-facility={}", log.display()))
        .arg(format!("--pid-file={}", pid.display()))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = podprobe::cleanup::Killed::spawn(&mut cmd).expect("dnsmasq starts");
        let server = Dnsmasq { _child: child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.log_text().contains("started") {
            assert!(Instant::now() < deadline, "dnsmasq did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The (qtype, name) of every query dnsmasq received, in order.
    fn queries(&self) -> Vec<(String, String)> {
        self.log_text()
            .lines()
            .filter_map(|line| {
                // "... query[A] name from 127.0.0.1"
                let rest = line.split("query[").nth(1)?;
                let (qtype, rest) = rest.split_once("] ")?;
                let name = rest.split_whitespace().next()?;
                Some((qtype.to_string(), name.to_string()))
            })
            .collect()
    }
}

fn json(out: &std::process::Output) -> serde_json::Value {
    report(out)
}

/// The pod's resolv.conf as Kubernetes writes it for ClusterFirst, with a
/// host search domain, served by dnsmasq on 127.0.0.1.
const CLUSTER_FIRST: &str = "search default.svc.cluster.local svc.cluster.local cluster.local corp.example\nnameserver 127.0.0.1\noptions ndots:5\n";

/// A namespace whose /etc/resolv.conf (for `ip netns exec`, which bind-mounts
/// /etc/netns/NAME/) is `text`; removed on drop.
struct PodNetns {
    ns: Netns,
    etc: PathBuf,
}

impl PodNetns {
    fn new(text: &str) -> PodNetns {
        let ns = Netns::new("dns");
        let etc = PathBuf::from("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("resolv.conf"), text).unwrap();
        PodNetns { ns, etc }
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

/// `podprobe dns NAME... -o json` in the namespace.
fn dns_report(ns: &Netns, args: &[&str]) -> (serde_json::Value, std::process::Output) {
    let out = run(ns.podprobe().args(["dns", "-o", "json"]).args(args));
    (json(&out), out)
}

/// The candidates' names in the order podprobe reports them.
fn candidate_names(lookup: &serde_json::Value) -> Vec<String> {
    lookup["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["fqdn"]
                .as_str()
                .unwrap()
                .trim_end_matches('.')
                .to_string()
        })
        .collect()
}

/// Consecutive queries for the same name as one candidate, with its types.
fn by_candidate(queries: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (qtype, name) in queries {
        match out.last_mut() {
            Some((last, types)) if last == name => types.push(qtype.clone()),
            _ => out.push((name.clone(), vec![qtype.clone()])),
        }
    }
    for (_, types) in &mut out {
        types.sort();
    }
    out
}

#[test]
fn doctor_dns_checks_pass_against_dnsmasq() {
    let ns = Netns::new("dns");
    let dir = Scratch::new();
    let dns = Dnsmasq::start(&ns, &dir, "127.0.0.1", &[]);
    let conf = dir.file(
        "resolv.conf",
        "search prod.svc.cluster.local\nnameserver 127.0.0.1\noptions timeout:1\n",
    );
    let out = run(ns
        .podprobe()
        .args(["doctor", "-o", "json", "--resolv-conf"])
        .arg(&conf));
    let rep = json(&out);
    let rc = check(&rep, "dns.resolv-conf");
    assert_eq!(rc["status"], "pass", "{rc:#}");
    assert_eq!(
        rc["evidence"]["nameservers"],
        serde_json::json!(["127.0.0.1"])
    );
    assert_eq!(
        rc["evidence"]["search"],
        serde_json::json!(["prod.svc.cluster.local"])
    );
    assert_eq!(rc["evidence"]["timeout_s"], 1);
    let ns_check = check(&rep, "dns.nameservers");
    assert_eq!(ns_check["status"], "pass", "{ns_check:#}");
    let server = &ns_check["evidence"]["servers"][0];
    assert_eq!(server["server"], "127.0.0.1:53");
    assert_eq!(server["rcode"], "NOERROR");
    assert!(server["latency_ms"].as_f64().unwrap() < 1000.0);
    assert_eq!(
        dns.queries(),
        [(
            "A".to_string(),
            "kubernetes.default.svc.cluster.local".to_string()
        )]
    );
}

#[test]
fn doctor_nameservers_fail_within_the_timeout_when_servers_are_silent() {
    let ns = Netns::new("dns");
    let dir = Scratch::new();
    let _dns = Dnsmasq::start(&ns, &dir, "127.0.0.1", &[]);
    // 127.0.0.2 drops queries (a blackholed server); nothing listens on 127.0.0.3.
    ns.sh("iptables -A INPUT -d 127.0.0.2 -p udp --dport 53 -j DROP");
    let conf = dir.file(
        "resolv.conf",
        "nameserver 127.0.0.1\nnameserver 127.0.0.2\nnameserver 127.0.0.3\n",
    );
    let start = Instant::now();
    let out = run(ns
        .podprobe()
        .args([
            "doctor",
            "-o",
            "json",
            "--timeout",
            "500ms",
            "--resolv-conf",
        ])
        .arg(&conf));
    let elapsed = start.elapsed();
    assert_eq!(out.status.code(), Some(1), "a failed check exits 1");
    let rep = json(&out);
    let c = check(&rep, "dns.nameservers");
    assert_eq!(c["status"], "fail", "{c:#}");
    let servers = c["evidence"]["servers"].as_array().unwrap();
    assert_eq!(servers[0]["rcode"], "NOERROR");
    assert_eq!(servers[1]["server"], "127.0.0.2:53");
    assert_eq!(servers[1]["rcode"], "TIMEOUT");
    assert!(servers[1]["error"].as_str().unwrap().contains("no reply"));
    assert_eq!(servers[2]["rcode"], "UNREACHABLE");
    assert!(
        servers[2]["error"].as_str().unwrap().contains("ICMP"),
        "{servers:#?}"
    );
    let summary = c["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("port unreachable at 127.0.0.3:53 (ICMP"),
        "{summary}"
    );
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[test]
fn doctor_resolv_conf_warns_on_extra_nameservers_not_on_kubernetes_ndots() {
    let dir = Scratch::new();
    let conf = dir.file(
        "resolv.conf",
        "search default.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
         nameserver 127.0.0.1\nnameserver 127.0.0.1\nnameserver 127.0.0.1\nnameserver 127.0.0.4\n\
         options ndots:5 single-request-reopen\n",
    );
    let out = run(support::podprobe()
        .args([
            "doctor",
            "-o",
            "json",
            "--timeout",
            "300ms",
            "--resolv-conf",
        ])
        .arg(&conf));
    let rep = json(&out);
    let c = check(&rep, "dns.resolv-conf");
    assert_eq!(c["status"], "warn", "{c:#}");
    assert_eq!(c["evidence"]["ndots"], 5);
    assert_eq!(c["evidence"]["search"].as_array().unwrap().len(), 4);
    assert_eq!(
        c["evidence"]["options"],
        serde_json::json!(["single-request-reopen"])
    );
    assert_eq!(
        c["evidence"]["ignored_nameservers"],
        serde_json::json!(["127.0.0.4"])
    );
    let summary = c["summary"].as_str().unwrap();
    assert!(summary.contains("127.0.0.4"), "{summary}");
    assert_eq!(c["evidence"]["worst_case_queries"], 10);
}

#[test]
fn doctor_unreadable_resolv_conf_is_an_input_error() {
    let out =
        run(support::podprobe().args(["doctor", "--resolv-conf", "/nonexistent/resolv.conf"]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("podprobe: /nonexistent/resolv.conf"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn dns_a_silent_search_domain_shows_the_apps_stall_then_the_answer() {
    // The host search domain's server (127.0.0.2) drops every query.
    let pod = PodNetns::new(CLUSTER_FIRST);
    let dir = Scratch::new();
    let _dns = Dnsmasq::start(
        &pod.ns,
        &dir,
        "127.0.0.1",
        &["--server=/corp.example/127.0.0.2"],
    );
    pod.ns
        .sh("iptables -A INPUT -d 127.0.0.2 -p udp --dport 53 -j DROP");
    let (rep, out) = dns_report(
        &pod.ns,
        &[
            "api.example.com",
            "--race",
            "0",
            "--count",
            "0",
            "--timeout",
            "300ms",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let c = check(&rep, "dns.search-expansion");
    assert_eq!(c["status"], "fail", "{c:#}");
    let corp = &c["evidence"]["by_search_domain"][3];
    assert_eq!(corp["domain"], "corp.example");
    assert!(corp["timeouts"].as_u64().unwrap() > 0, "{corp:#}");
    // glibc skips the rest of the search list after a timeout and asks
    // for the name as is: it resolves, after 2 x 5 s on corp.example.
    let l = &c["evidence"]["lookups"][0];
    assert_eq!(l["resolved_as"], "api.example.com.", "{l:#}");
    assert_eq!(l["candidates"].as_array().unwrap().len(), 5);
    assert_eq!(l["resolver"], "glibc");
    let waited = l["total_ms"].as_f64().unwrap();
    assert!((10_000.0..10_100.0).contains(&waited), "{waited}");
    let summary = c["summary"].as_str().unwrap();
    assert!(
        summary.contains("the app waits 10.0 s for api.example.com (127.0.0.1:53 TIMEOUT x4), then it resolves as api.example.com."),
        "{summary}"
    );
}

/// Builds `int main(){pause();}` with musl-gcc (dynamic) into `dir`.
fn musl_program(dir: &Scratch) -> PathBuf {
    let src = dir.file(
        "pause.c",
        "#include <unistd.h>\nint main(void) { pause(); return 0; }\n",
    );
    let bin = dir.0.join("pause-musl");
    support::sh(&format!(
        "musl-gcc -O2 -o {} {}",
        bin.display(),
        src.display()
    ));
    bin
}

#[test]
fn dns_latency_fails_when_the_server_never_answers() {
    let dir = Scratch::new();
    // A bound socket that never replies: the queries are simply lost.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = silent.local_addr().unwrap().to_string();
    let conf = dir.file("resolv.conf", "nameserver 127.0.0.1\n");
    let start = Instant::now();
    let out = run(support::podprobe()
        .args([
            "dns",
            "-o",
            "json",
            "kubernetes.default.svc.cluster.local.",
            "--count",
            "3",
        ])
        .args(["--timeout", "200ms", "--server", &server, "--resolv-conf"])
        .arg(&conf));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    let rep = json(&out);
    let lat = check(&rep, "dns.latency");
    assert_eq!(lat["status"], "fail", "{lat:#}");
    assert_eq!(lat["evidence"]["results"][0]["lost"], 3);
    let se = check(&rep, "dns.search-expansion");
    assert_eq!(
        se["evidence"]["lookups"][0]["candidates"][0]["queries"][0]["rcode"],
        "TIMEOUT"
    );
    assert_eq!(check(&rep, "dns.timeout-race")["status"], "skip");
}

#[test]
fn dns_bad_input_is_one_line_and_exit_2() {
    for args in [
        &["dns", "--server", "kube-dns"][..],
        &["dns", "bad..name"][..],
        &["dns", "--resolv-conf", "/nonexistent/resolv.conf"][..],
        &["dns", "--resolver", "uclibc"][..],
        &["doctor", "--resolver", "bionic"][..],
    ] {
        let out = run(support::podprobe().args(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("podprobe: "), "{stderr}");
    }
}

// In the lab: a client pod with the resolv.conf kubelet writes (ndots:5,
// four search domains), real glibc, and dnsmasq behind the kube-dns Service.

fn lab(scenarios: &[Scenario]) -> Lab {
    let spec = scenarios
        .iter()
        .fold(LabSpec::new(env!("CARGO_BIN_EXE_podprobe")), |spec, s| {
            spec.scenario(*s)
        });
    Lab::up(&spec).expect("lab up")
}

/// `podprobe dns ARGS -o json` in the client pod.
fn lab_dns(lab: &Lab, args: &[&str]) -> (serde_json::Value, std::process::Output) {
    let out = run(lab
        .podprobe(Pod::Client)
        .args(["dns", "-o", "json"])
        .args(args));
    (json(&out), out)
}

/// The (qtype, name) the lab's DNS server logged since `from`.
fn lab_queries(lab: &Lab, from: usize) -> Vec<(String, String)> {
    lab.dns_queries().unwrap()[from..]
        .iter()
        .map(|q| (q.qtype.clone(), q.name.clone()))
        .collect()
}

#[test]
fn lab_candidates_match_real_glibc() {
    let lab = lab(&[]);
    for name in [
        "web",                  // short name
        EXTERNAL_NAME,          // dotted external name
        "a.b.c.d.e.example",    // >= ndots dots
        "api.example.com.",     // trailing dot
        "kube-dns.kube-system", // cross-namespace name
    ] {
        let before = lab.dns_queries().unwrap().len();
        let _ = run(lab.command(Pod::Client, "getent").args(["ahosts", name]));
        let glibc = by_candidate(&lab_queries(&lab, before));
        let before = lab.dns_queries().unwrap().len();
        let (rep, _) = lab_dns(&lab, &[name, "--race", "0", "--count", "0"]);
        let sent = by_candidate(&lab_queries(&lab, before));
        let lookup = &check(&rep, "dns.search-expansion")["evidence"]["lookups"][0];
        let glibc_names: Vec<String> = glibc.iter().map(|(n, _)| n.clone()).collect();
        assert!(!glibc.is_empty(), "glibc sent nothing for {name}");
        assert_eq!(
            candidate_names(lookup),
            glibc_names,
            "{name}: reported vs glibc"
        );
        assert_eq!(sent, glibc, "{name}: sent vs glibc");
    }
}

#[test]
fn lab_external_name_wastes_eight_of_ten_queries_trailing_dot_none() {
    let lab = lab(&[]);
    let (rep, _) = lab_dns(&lab, &[EXTERNAL_NAME, "--race", "0", "--count", "5"]);
    let lat = check(&rep, "dns.latency");
    assert_eq!(lat["status"], "pass", "{lat:#}");
    let r = &lat["evidence"]["results"][0];
    assert_eq!(
        (&r["server"], &r["name"]),
        (&"10.96.0.10:53".into(), &"api.example.com.".into())
    );
    assert_eq!((&r["count"], &r["lost"]), (&5.into(), &0.into()));
    let c = check(&rep, "dns.search-expansion");
    assert_eq!(c["status"], "warn", "{c:#}");
    let l = &c["evidence"]["lookups"][0];
    assert_eq!(l["queries_sent"], 10);
    assert_eq!(l["wasted_queries"], 8);
    assert_eq!(l["resolved_as"], "api.example.com.");
    assert_eq!(c["evidence"]["ndots"], 5);
    assert_eq!(c["evidence"]["search"].as_array().unwrap().len(), 4);

    let (rep, _) = lab_dns(&lab, &["api.example.com.", "--race", "0", "--count", "0"]);
    let c = check(&rep, "dns.search-expansion");
    assert_eq!(c["status"], "pass", "{c:#}");
    assert_eq!(c["evidence"]["lookups"][0]["wasted_queries"], 0);
}

#[test]
fn lab_slow_dns_host_search_domain_stands_out() {
    let lab = lab(&[Scenario::SlowDns]);
    let (rep, _) = lab_dns(&lab, &[EXTERNAL_NAME, "web", "--race", "0", "--count", "0"]);
    let c = check(&rep, "dns.search-expansion");
    assert_eq!(c["status"], "fail", "{c:#}");
    let domains = c["evidence"]["by_search_domain"].as_array().unwrap();
    let slowest = domains
        .iter()
        .max_by(|a, b| {
            a["p50_ms"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["p50_ms"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(slowest["domain"], HOST_DOMAIN, "{domains:#?}");
    let delay = podprobe::lab::SLOW_DNS_DELAY.as_secs_f64() * 1000.0;
    assert!(slowest["p50_ms"].as_f64().unwrap() >= delay, "{slowest:#}");
    for d in domains.iter().filter(|d| d["domain"] != HOST_DOMAIN) {
        assert!(d["p50_ms"].as_f64().unwrap() < delay / 2.0, "{d:#}");
    }
    assert!(c["evidence"]["lookups"][0]["wasted_ms"].as_f64().unwrap() > 100.0);
    // A name the first search domain answers never reaches the slow domain.
    assert_eq!(c["evidence"]["lookups"][1]["wasted_queries"], 0);
}

#[test]
fn lab_dns_race_loses_only_same_socket_replies() {
    let mut lab = lab(&[]);
    // A generous timeout: only the dropped replies may count as lost.
    let args = [
        "kubernetes.default",
        "--race",
        "10",
        "--count",
        "0",
        "--timeout",
        "1s",
    ];
    let (rep, _) = lab_dns(&lab, &args);
    assert_eq!(check(&rep, "dns.timeout-race")["status"], "pass");

    lab.add_scenario(Scenario::DnsRace).unwrap();
    let (rep, out) = lab_dns(&lab, &args);
    assert_eq!(out.status.code(), Some(1));
    let c = check(&rep, "dns.timeout-race");
    assert_eq!(c["status"], "fail", "{c:#}");
    let patterns = c["evidence"]["patterns"].as_array().unwrap();
    assert_eq!(patterns[0]["pattern"], "parallel-same-socket");
    assert!(patterns[0]["lost"].as_u64().unwrap() > 0, "{patterns:#?}");
    assert_eq!(patterns[1]["pattern"], "control-fresh-sockets");
    assert_eq!(patterns[1]["lost"], 0, "{patterns:#?}");
    // The app's own glibc lookups stall: 5 s, and 5 s again in the lab,
    // where even A then AAAA from one socket come within a millisecond.
    assert_eq!(patterns[2]["pattern"], "app-resolver");
    assert!(
        patterns[2]["max_ms"].as_f64().unwrap() >= 5000.0,
        "{patterns:#?}"
    );
    assert!(c["evidence"]["p_value"].as_f64().unwrap() < 0.001);
    assert_eq!(c["evidence"]["server"], "10.96.0.10:53");
}

/// The app beside podprobe (a shared PID namespace, as `kubectl debug
/// --target` gives) decides the fix: musl ignores single-request-reopen.
#[test]
fn lab_dns_race_fix_follows_the_apps_libc() {
    let lab = lab(&[Scenario::DnsRace]);
    let dir = Scratch::new();
    let musl = musl_program(&dir);
    let podprobe = env!("CARGO_BIN_EXE_podprobe");
    for (app, libc, fix, not) in [
        (
            musl.display().to_string(),
            "musl",
            "NodeLocal DNSCache",
            "add `options single-request-reopen`",
        ),
        (
            "sleep 60".to_string(),
            "glibc",
            "single-request-reopen",
            "NodeLocal",
        ),
    ] {
        let script = format!(
            "{app} & sleep 0.3; exec {podprobe} dns -o json kubernetes.default --race 10 --count 0 --timeout 1s"
        );
        let out = run(lab.command(Pod::Client, "unshare").args([
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            &script,
        ]));
        let rep = json(&out);
        let c = check(&rep, "dns.timeout-race");
        assert_eq!(c["status"], "fail", "{c:#}");
        assert_eq!(c["evidence"]["processes"][0]["libc"], libc, "{c:#}");
        let remedy = c["remedy"].to_string();
        assert!(remedy.contains(fix) && !remedy.contains(not), "{remedy}");
    }
}

#[test]
fn lab_doctor_name_walks_the_search_list_and_races() {
    let lab = lab(&[]);
    let out =
        run(lab
            .podprobe(Pod::Client)
            .args(["doctor", "-o", "json", "--name", EXTERNAL_NAME]));
    let rep = json(&out);
    let c = check(&rep, "dns.search-expansion");
    assert_eq!(c["status"], "warn", "{c:#}");
    assert_eq!(c["evidence"]["lookups"][0]["wasted_queries"], 8);
    // doctor asks each nameserver for the --name too.
    let ns = check(&rep, "dns.nameservers");
    assert_eq!(ns["status"], "pass", "{ns:#}");
    assert_eq!(ns["evidence"]["name"], "api.example.com.");
    assert_eq!(ns["evidence"]["servers"][0]["server"], "10.96.0.10:53");
    let race = check(&rep, "dns.timeout-race");
    assert_eq!(race["status"], "pass", "{race:#}");
    assert_eq!(race["evidence"]["patterns"][0]["attempts"], 10);
    assert!(rep["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["id"] != "dns.latency"));
}

#[test]
fn lab_dns_text_output_is_the_per_candidate_table() {
    let lab = lab(&[Scenario::SlowDns]);
    let out =
        run(lab
            .podprobe(Pod::Client)
            .args(["dns", EXTERNAL_NAME, "--race", "0", "--count", "3"]));
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().map(str::trim).collect();
    let row = |prefix: &str| {
        rows.iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no row {prefix}:\n{text}"))
    };
    assert_eq!(
        row("api.example.com.default.svc.cluster.local.")
            .matches("NXDOMAIN")
            .count(),
        2,
        "{text}"
    );
    assert!(row("api.example.com.  ").ends_with("<- answer"), "{text}");
    assert!(
        row("10 queries, 8 wasted, ")
            .contains("ms before the answer; glibc: resolves to 203.0.113.10, 2001:db8::10"),
        "{text}"
    );
    assert!(row("search domain").contains("p50 ms"), "{text}");
    let slow: Vec<&str> = row(HOST_DOMAIN).split_whitespace().collect();
    assert_eq!(slow[1..4], ["2", "2", "0"], "{text}");
    assert!(slow[4].parse::<f64>().unwrap() >= 300.0, "{text}");
    assert!(
        row("fix: api.example.com: write it with a trailing dot").contains("`api.example.com.`")
    );
    assert!(text.contains("value: \"2\""), "{text}");
}

/// A default ClusterFirst pod whose cluster DNS is healthy passes doctor
/// even with --fail-on warn: ndots:5 is what every such pod has; its cost
/// is stated, and judged only where a measured name pays it.
#[test]
fn lab_healthy_cluster_first_pod_passes_doctor_fail_on_warn() {
    let lab = lab(&[]);
    let out = run(lab
        .podprobe(Pod::Client)
        .args(["doctor", "-o", "json", "--fail-on", "warn"]));
    let rep = json(&out);
    assert_eq!(out.status.code(), Some(0), "{rep:#}");
    let rc = check(&rep, "dns.resolv-conf");
    assert_eq!(rc["status"], "pass", "{rc:#}");
    assert_eq!(rc["evidence"]["ndots"], 5);
    assert_eq!(rc["evidence"]["worst_case_queries"], 10);
    assert!(
        rc["summary"]
            .as_str()
            .unwrap()
            .contains("costs up to 10 queries"),
        "{rc:#}"
    );
    // A measured name that walks the search list is judged.
    let out = run(lab.podprobe(Pod::Client).args([
        "doctor",
        "-o",
        "json",
        "--fail-on",
        "warn",
        "--name",
        EXTERNAL_NAME,
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(check(&json(&out), "dns.search-expansion")["status"], "warn");
}

/// The model follows the app's resolver: with a nameserver that refuses
/// beside one that is silent for the host domain, glibc and Go wait 10 s
/// and resolve, musl gives up after 5 s.
#[test]
fn lab_the_apps_resolver_decides_the_outcome_and_the_stall() {
    let mut lab = lab(&[]);
    let refused = lab
        .add_dns_server(
            podprobe::lab::DnsServer::Dnsmasq,
            podprobe::lab::DnsMode::Refused,
        )
        .unwrap();
    let silent = lab
        .add_dns_server(
            podprobe::lab::DnsServer::Dnsmasq,
            podprobe::lab::DnsMode::SilentZone,
        )
        .unwrap();
    lab.set_resolv_conf(
        Pod::Client,
        &format!(
            "search default.svc.cluster.local svc.cluster.local cluster.local corp.internal\nnameserver {refused}\nnameserver {silent}\noptions ndots:5 timeout:1\n"
        ),
    )
    .unwrap();
    for (resolver, outcome, seconds) in [
        ("glibc", "resolved", 2.0),
        ("go", "resolved", 2.0),
        ("musl", "EAI_AGAIN", 1.0),
    ] {
        let (rep, _) = lab_dns(
            &lab,
            &[
                EXTERNAL_NAME,
                "--race",
                "0",
                "--count",
                "0",
                "--resolver",
                resolver,
            ],
        );
        let c = check(&rep, "dns.search-expansion");
        assert_eq!(c["status"], "fail", "{c:#}");
        let l = &c["evidence"]["lookups"][0];
        assert_eq!(l["resolver"], resolver);
        assert_eq!(l["outcome"], outcome, "{resolver}: {l:#}");
        let waited = l["total_ms"].as_f64().unwrap() / 1000.0;
        assert!((waited - seconds).abs() < 0.1, "{resolver}: {waited} s");
        assert_eq!(c["evidence"]["resolver_source"], "--resolver");
    }
}
