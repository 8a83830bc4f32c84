//! DNS checks against real DNS servers: dnsmasq in a network namespace of
//! the test's own, queried by the real podprobe binary.

mod support;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{check, report, run, Netns};

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pp-dns-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// dnsmasq serving a small cluster.local zone on `addr`:53 inside `ns`,
/// logging every query; killed on drop.
struct Dnsmasq {
    child: Child,
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
            "--address=/api.example.com/203.0.113.10",
        ])
        .arg(format!("--listen-address={addr}"))
        .arg(format!("--log-facility={}", log.display()))
        .arg(format!("--pid-file={}", pid.display()))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd.spawn().expect("dnsmasq starts");
        let server = Dnsmasq { child, log };
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

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(out: &std::process::Output) -> serde_json::Value {
    report(out)
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
    assert_eq!(servers[2]["rcode"], "ERROR");
    assert!(
        servers[2]["error"].as_str().unwrap().contains("refused"),
        "{servers:#?}"
    );
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[test]
fn doctor_resolv_conf_warns_on_kubernetes_ndots_and_extra_nameservers() {
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
    assert!(
        summary.contains("ndots:5") && summary.contains("127.0.0.4"),
        "{summary}"
    );
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
