//! `podprobe node` in the lab's node namespace (root): every check passes on
//! the healthy node and warns or fails on its scenario; a pod's namespace is
//! refused with the recipe; rules are read from both iptables backends,
//! through the host root, and skipped with the privilege when unreadable.

mod support;

use std::process::Output;

use podprobe::lab::{generated_service, Lab, LabSpec, Pod, Scenario, NODELOCAL_ADDRESS};
use support::{check, report, run, Netns};

const PODPROBE: &str = env!("CARGO_BIN_EXE_podprobe");
const CHECKS: [&str; 6] = [
    "node.conntrack",
    "node.kube-proxy",
    "node.snat",
    "node.conntrack-invalid",
    "node.dns-cache",
    "node.cni",
];

fn lab(scenarios: &[Scenario]) -> Lab {
    let mut spec = LabSpec::new(PODPROBE);
    spec.scenarios = scenarios.to_vec();
    Lab::up(&spec).expect("lab up")
}

/// `podprobe node -o json --interval 1s ARGS` in the lab's node namespace.
fn node(lab: &Lab, args: &[&str]) -> (Output, serde_json::Value) {
    node_over(lab, "1s", args)
}

/// The same over a longer interval, for nodes whose rules take longer to
/// read on a loaded machine (rules are read within the interval).
fn node_over(lab: &Lab, interval: &str, args: &[&str]) -> (Output, serde_json::Value) {
    let out = run(lab
        .podprobe(Pod::Node)
        .args(["node", "-o", "json", "--interval", interval])
        .args(args));
    let value = report(&out);
    (out, value)
}

fn status<'a>(report: &'a serde_json::Value, id: &str) -> &'a str {
    check(report, id)["status"].as_str().unwrap_or_default()
}

/// Every check's status, for a failure message.
fn statuses(report: &serde_json::Value) -> String {
    CHECKS
        .iter()
        .map(|id| {
            format!(
                "{id}: {} ({})\n",
                status(report, id),
                check(report, id)["summary"]
            )
        })
        .collect()
}

/// `GET /` from the client pod through a Service; the backend's answer
/// names it.
fn http_get(lab: &Lab, addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    lab.in_pod(Pod::Client, || {
        let mut stream =
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .unwrap()
}

fn node_sh(lab: &Lab, script: &str) {
    let out = run(lab.command(Pod::Node, "sh").args(["-ec", script]));
    assert!(out.status.success(), "{script}: {out:?}");
}

#[test]
fn the_healthy_lab_node_passes_every_check() {
    let lab = lab(&[]);
    let (out, report) = node(&lab, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", statuses(&report));
    for id in CHECKS {
        assert_eq!(status(&report, id), "pass", "{}", statuses(&report));
    }
    let kube_proxy = &check(&report, "node.kube-proxy")["evidence"];
    assert_eq!(kube_proxy["mode"], "iptables");
    assert_eq!(kube_proxy["iptables_backends"][0], "nft");
    assert_eq!(kube_proxy["services"], 5);
    assert_eq!(kube_proxy["endpoints"], 9);
    let conntrack = &check(&report, "node.conntrack")["evidence"];
    assert!(conntrack["max"].as_u64().unwrap() > 0);
    assert!(conntrack["rates_per_s"]["insert_failed"].is_number());
    let invalid = &check(&report, "node.conntrack-invalid")["evidence"];
    assert_eq!(invalid["drop_rules"][0]["chain"], "KUBE-FORWARD");
    let cni = &check(&report, "node.cni")["evidence"];
    assert_eq!(cni["cnis"][0], "calico");
    assert_eq!(cni["uplink"]["name"], "eth0");
    assert_eq!(cni["pod_interfaces"].as_array().unwrap().len(), 5);
    let snat = &check(&report, "node.snat")["evidence"]["rules"];
    assert_eq!(snat.as_array().unwrap().len(), 2, "{snat:#}");
    // Rates need the interval: the run takes it, and not much more.
    let took = report["duration_ms"].as_f64().unwrap();
    assert!((1000.0..11_000.0).contains(&took), "took {took} ms");
}

#[test]
fn a_pods_namespace_is_refused_with_the_recipe() {
    let lab = lab(&[]);
    let out = run(lab.podprobe(Pod::Client).args(["node", "--interval", "1s"]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("not a node's network namespace"),
        "{stderr}"
    );
    assert!(stderr.contains("kubectl debug node/"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn the_pods_conntrack_check_no_longer_passes_the_node() {
    let lab = lab(&[Scenario::ConntrackFull]);
    // The node's table is full; the client pod sees only its own, empty one.
    let pod = report(&run(lab
        .podprobe(Pod::Client)
        .args(["doctor", "-o", "json"])));
    let conntrack = check(&pod, "net.conntrack");
    assert_eq!(conntrack["status"], "skip", "{conntrack:#}");
    assert_eq!(conntrack["evidence"]["scope"], "pod");
    assert!(conntrack["summary"]
        .as_str()
        .unwrap()
        .contains("podprobe node"));
    // The same check in the node's namespace reads the node's table.
    let on_node = report(&run(lab.podprobe(Pod::Node).args(["doctor", "-o", "json"])));
    let conntrack = check(&on_node, "net.conntrack");
    assert_eq!(conntrack["evidence"]["scope"], "node");
    assert_eq!(conntrack["status"], "warn", "{conntrack:#}");
    // And podprobe node fails it.
    let (out, report) = node(&lab, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        status(&report, "node.conntrack"),
        "fail",
        "{}",
        statuses(&report)
    );
    let evidence = &check(&report, "node.conntrack")["evidence"];
    assert!(
        evidence["fill_pct"].as_f64().unwrap() >= 90.0,
        "{evidence:#}"
    );
}

#[test]
fn snat_without_random_fully_warns() {
    let lab = lab(&[Scenario::SnatNorandom]);
    let (_, report) = node(&lab, &[]);
    assert_eq!(
        status(&report, "node.snat"),
        "warn",
        "{}",
        statuses(&report)
    );
    let snat = check(&report, "node.snat");
    assert!(snat["summary"].as_str().unwrap().contains("ip-masq-agent"));
    assert_eq!(snat["evidence"]["without_random_fully"], 1);
}

#[test]
fn no_invalid_drop_warns_until_be_liberal() {
    let lab = lab(&[Scenario::NoInvalidDrop]);
    let (_, report) = node(&lab, &[]);
    assert_eq!(
        status(&report, "node.conntrack-invalid"),
        "warn",
        "{}",
        statuses(&report)
    );
    node_sh(
        &lab,
        "echo 1 > /proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal",
    );
    let (_, report) = node(&lab, &[]);
    let invalid = check(&report, "node.conntrack-invalid");
    assert_eq!(invalid["status"], "pass", "{invalid:#}");
    assert_eq!(invalid["evidence"]["tcp_be_liberal"], true);
}

#[test]
fn nodelocal_dns_is_found_and_its_faults_judged() {
    let lab = lab(&[Scenario::NodelocalDns]);
    let (_, report) = node(&lab, &[]);
    let cache = check(&report, "node.dns-cache");
    assert_eq!(cache["status"], "pass", "{cache:#}");
    assert_eq!(
        cache["evidence"]["nodelocal"]["address"],
        NODELOCAL_ADDRESS.to_string()
    );
    assert_eq!(cache["evidence"]["nodelocal"]["interface"], "nodelocaldns");
    assert_eq!(
        cache["evidence"]["notrack_rules"].as_array().unwrap().len(),
        6
    );
    // The client pod really asks the cache.
    let out = run(lab
        .command(Pod::Client, "getent")
        .args(["ahosts", "web.default"]));
    assert!(out.status.success(), "{out:?}");
    // Without its NOTRACK rules the queries are tracked again.
    node_sh(&lab, "iptables -w -t raw -F");
    let (_, report) = node(&lab, &[]);
    assert_eq!(
        status(&report, "node.dns-cache"),
        "warn",
        "{}",
        statuses(&report)
    );
    // A cache that no longer answers fails.
    node_sh(
        &lab,
        "iptables -w -I INPUT -d 169.254.20.10 -p udp --dport 53 -j DROP",
    );
    let (_, report) = node(&lab, &["--timeout", "300ms"]);
    assert_eq!(
        status(&report, "node.dns-cache"),
        "fail",
        "{}",
        statuses(&report)
    );
}

#[test]
fn kube_proxy_nftables_mode_is_counted_from_its_verdict_map() {
    let lab = lab(&[Scenario::KubeProxyNft]);
    let (_, report) = node(&lab, &[]);
    let kube_proxy = check(&report, "node.kube-proxy");
    assert_eq!(kube_proxy["status"], "pass", "{kube_proxy:#}");
    assert_eq!(kube_proxy["evidence"]["mode"], "nftables");
    assert_eq!(kube_proxy["evidence"]["nftables"][0]["services"], 5);
    assert_eq!(kube_proxy["evidence"]["nftables"][0]["service_ips"], 5);
    // kube-proxy's nftables mode writes no INVALID drop rule.
    assert_eq!(status(&report, "node.conntrack-invalid"), "warn");
    assert_eq!(
        status(&report, "node.snat"),
        "pass",
        "{}",
        statuses(&report)
    );
    // The Services work through the verdict map.
    let answer = http_get(&lab, podprobe::lab::Service::Web.addr().into());
    assert!(answer.contains("backend-"), "{answer}");
}

#[test]
fn many_services_in_iptables_mode_warn_and_in_nftables_mode_do_not() {
    for (scenarios, expected) in [(vec![], "warn"), (vec![Scenario::KubeProxyNft], "pass")] {
        let mut lab = lab(&scenarios);
        lab.add_services(1_100).unwrap();
        let (_, report) = node_over(&lab, "5s", &[]);
        let kube_proxy = check(&report, "node.kube-proxy");
        assert_eq!(kube_proxy["status"], expected, "{kube_proxy:#}");
        assert_eq!(kube_proxy["evidence"]["services"], 1_105);
        let answer = http_get(&lab, generated_service(1_099).into());
        assert!(answer.contains("backend-"), "{answer}");
    }
}

#[test]
fn a_pod_mtu_above_the_overlay_warns() {
    let lab = lab(&[Scenario::OverlayMtu]);
    let (_, report) = node(&lab, &[]);
    let cni = check(&report, "node.cni");
    assert_eq!(cni["status"], "warn", "{cni:#}");
    assert_eq!(cni["evidence"]["max_pod_mtu"], 1450);
    assert_eq!(cni["evidence"]["oversized"].as_array().unwrap().len(), 5);
    assert_eq!(cni["evidence"]["overlays"][0]["kind"], "vxlan");
}

#[test]
fn rules_are_read_through_the_host_root_without_the_images_tools() {
    let lab = lab(&[]);
    // No tools on PATH: the host's, in a chroot of "/" (what /host is in a
    // `kubectl debug node/...` pod).
    let out = run(lab.podprobe(Pod::Node).env("PATH", "/nonexistent").args([
        "node",
        "-o",
        "json",
        "--interval",
        "1s",
        "--host-root",
        "/",
    ]));
    let report = report(&out);
    let sources = check(&report, "node.kube-proxy")["evidence"]["sources"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        sources.iter().any(|s| s["command"]
            .as_str()
            .unwrap()
            .starts_with("chroot / iptables-nft-save")),
        "{sources:#?}"
    );
    for id in CHECKS {
        assert_eq!(status(&report, id), "pass", "{}", statuses(&report));
    }
}

#[test]
fn unreadable_rules_are_skipped_with_the_privilege_that_reads_them() {
    let lab = lab(&[]);
    let out = run(lab
        .command(Pod::Node, "setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args([PODPROBE, "node", "-o", "json", "--interval", "1s"]));
    let report = report(&out);
    for id in ["node.kube-proxy", "node.snat", "node.conntrack-invalid"] {
        let c = check(&report, id);
        assert_eq!(c["status"], "skip", "{c:#}");
        assert!(
            c["summary"].as_str().unwrap().contains("CAP_NET_ADMIN"),
            "{c:#}"
        );
    }
    // /proc's conntrack numbers need no privilege.
    assert_eq!(status(&report, "node.conntrack"), "pass");
}

#[test]
fn legacy_and_nft_backends_are_read_and_both_together_warn() {
    // kube-proxy's own test rules in both backends of a namespace that has
    // a node's veths, as on a node where kube-proxy and the host disagree.
    let ns = Netns::new("nodebk");
    let peer = Netns::new("nodebkp");
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/node/kube-proxy-iptables-overall.restore"
    ))
    .unwrap()
    // The nfacct counters need objects made by the nfacct tool first.
    .replace(" -m nfacct --nfacct-name ct_state_invalid_dropped_pkts", "")
    .replace(" -m nfacct --nfacct-name localhost_nps_accepted_pkts", "");
    for restore in ["iptables-nft-restore", "iptables-legacy-restore"] {
        let out = {
            use std::io::Write;
            let mut child = ns
                .command(restore)
                .arg("--noflush")
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(rules.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        };
        assert!(out.status.success(), "{restore}: {out:?}");
    }
    ns.sh(&format!(
        "ip link add cali-a type veth peer name eth0 netns {} && ip link set cali-a up",
        peer.name
    ));
    let report = report(&run(ns.podprobe().args([
        "node",
        "-o",
        "json",
        "--interval",
        "1s",
    ])));
    let kube_proxy = check(&report, "node.kube-proxy");
    assert_eq!(kube_proxy["status"], "warn", "{kube_proxy:#}");
    assert!(kube_proxy["summary"]
        .as_str()
        .unwrap()
        .contains("both backends"));
    let backends: Vec<&str> = kube_proxy["evidence"]["iptables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["source"].as_str().unwrap())
        .collect();
    assert!(backends.contains(&"iptables-legacy"), "{backends:?}");
    assert!(backends.contains(&"iptables-nft"), "{backends:?}");
    for k in kube_proxy["evidence"]["iptables"].as_array().unwrap() {
        assert_eq!(k["services"], 5, "{k:#}");
        assert_eq!(k["endpoints"], 6, "{k:#}");
    }
}

#[test]
fn services_bench_quick_run_writes_its_tables() {
    // A smoke test of bench/services: it completes and writes both tables.
    // Never a timing assertion: a quick run's numbers on a shared machine
    // mean nothing.
    let out_file =
        std::env::temp_dir().join(format!("podprobe-services-{}.md", std::process::id()));
    let out = run(std::process::Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bench/services"
    ))
    .args(["--quick", "--out"])
    .arg(&out_file)
    .env("PODPROBE", PODPROBE));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&out_file).unwrap();
    let _ = std::fs::remove_file(&out_file);
    assert!(
        text.contains("## First packet of a new connection"),
        "{text}"
    );
    assert!(text.contains("| 305 | "), "{text}");
    assert!(
        text.contains("## `podprobe node` on the same nodes"),
        "{text}"
    );
    for mode in [
        "iptables mode, nft backend",
        "iptables mode, legacy backend",
        "nftables mode (verdict map)",
    ] {
        assert!(
            text.contains(&format!("| {mode} | 305 |")),
            "{mode}: {text}"
        );
    }
}

/// `GET path` from inside `pod`, the body when it answers 200.
fn get_in(lab: &Lab, pod: Pod, addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    lab.in_pod(pod, || {
        let mut stream =
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1)).ok()?;
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let (head, body) = answer.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    })
    .ok()
    .flatten()
}

#[test]
fn watch_node_serves_the_node_checks_and_their_metrics() {
    let lab = lab(&[]);
    // Cluster DNS for the doctor checks of every cycle: the lab's, never the
    // host's; the file goes with the guard, also when the test fails.
    let resolv = std::env::temp_dir().join(format!("podprobe-node-resolv-{}", std::process::id()));
    let _removal = podprobe::cleanup::removing(&resolv);
    std::fs::write(&resolv, podprobe::lab::cluster_first_resolv_conf()).unwrap();
    let listen: std::net::SocketAddr = "127.0.0.1:9467".parse().unwrap();
    let mut watch = lab.podprobe(Pod::Node);
    watch
        .args([
            "watch",
            "--node",
            "--interval",
            "60s",
            "--listen",
            "127.0.0.1:9467",
        ])
        .arg("--resolv-conf")
        .arg(&resolv)
        .stdout(std::process::Stdio::null());
    let _watch = lab.spawn(&mut watch).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let report = loop {
        if let Some(body) = get_in(&lab, Pod::Node, listen, "/report") {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no report from watch --node"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    support::assert_valid_report(&report);
    for id in CHECKS {
        assert_eq!(status(&report, id), "pass", "{}", statuses(&report));
    }
    let metrics = get_in(&lab, Pod::Node, listen, "/metrics").unwrap();
    assert!(
        metrics.contains("podprobe_conntrack_insert_failed_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"podprobe_check_status{check="node.kube-proxy",status="pass"} 1"#),
        "{metrics}"
    );
}

#[test]
fn watch_node_in_a_pod_is_refused() {
    let lab = lab(&[]);
    let out =
        run(lab
            .podprobe(Pod::Client)
            .args(["watch", "--node", "--listen", "127.0.0.1:9468"]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a node's network namespace"));
}
