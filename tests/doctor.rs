//! `podprobe doctor` run as a binary: schema, reachability against real
//! kernel rules in a network namespace, conntrack, and bad input.

mod support;

use std::time::{Duration, Instant};

use support::{check, podprobe, report, run, Netns};

#[test]
fn doctor_json_matches_the_schema() {
    let out = run(podprobe().args(["doctor", "-o", "json"]));
    let report = report(&out);
    assert_eq!(report["schema"], "podprobe.report/v1");
    assert_eq!(check(&report, "net.context")["status"], "pass");
    assert!(report["context"]["netns"]
        .as_str()
        .is_some_and(|n| n.starts_with("net:[")));
}

#[test]
fn context_names_the_pod_from_the_downward_api() {
    let out = run(podprobe()
        .args(["doctor", "-o", "json"])
        .env("POD_NAME", "web-7d9f")
        .env("POD_NAMESPACE", "shop")
        .env("NODE_NAME", "node-3"));
    let report = report(&out);
    assert_eq!(report["context"]["pod"], "web-7d9f");
    assert_eq!(report["context"]["namespace"], "shop");
    assert_eq!(report["context"]["node"], "node-3");
}

#[test]
fn context_reports_interfaces_routes_and_mtu_of_the_namespace() {
    let ns = Netns::new("ctx");
    ns.sh(
        "ip link add eth0 type veth peer name peer0 && ip link set peer0 up && \
         ip link set eth0 mtu 1450 up && \
         ip addr add 10.244.0.7/32 dev eth0 && \
         ip route add 169.254.1.1 dev eth0 scope link && \
         ip route add default via 169.254.1.1 dev eth0",
    );
    let report = report(&run(ns.podprobe().args(["doctor", "-o", "json"])));
    let context = check(&report, "net.context");
    let eth0 = context["evidence"]["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth0")
        .expect("eth0 reported");
    assert_eq!(eth0["mtu"], 1450);
    assert_eq!(eth0["addresses"][0], "10.244.0.7/32");
    assert_eq!(
        context["evidence"]["default_routes"][0]["gateway"],
        "169.254.1.1"
    );
    assert_eq!(report["context"]["netns"], context["evidence"]["netns"]);
}

#[test]
fn reachability_tells_dropped_from_refused_from_unreachable() {
    let ns = Netns::new("reach");
    // A listener, a port a DROP rule hides, a port a REJECT rule resets, a
    // closed port, and an address with no route.
    ns.sh("iptables -A INPUT -p tcp --dport 9101 -j DROP && \
         iptables -A INPUT -p tcp --dport 9102 -j REJECT --reject-with tcp-reset");
    let _listener = ns.listen(9100);

    let start = Instant::now();
    let out = run(ns.podprobe().args([
        "doctor",
        "-o",
        "json",
        "--timeout",
        "700ms",
        "--tcp",
        "127.0.0.1:9100",
        "--tcp",
        "127.0.0.1:9101",
        "--tcp",
        "127.0.0.1:9102",
        "--tcp",
        "127.0.0.1:9103",
        "--tcp",
        "10.77.0.1:80",
    ]));
    let elapsed = start.elapsed();

    assert_eq!(out.status.code(), Some(1), "a failed target fails the run");
    let report = report(&out);
    let reach = check(&report, "tcp.reachability");
    assert_eq!(reach["status"], "fail");
    let outcome = |target: &str| {
        reach["evidence"]["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"] == target)
            .unwrap_or_else(|| panic!("{target} missing"))
            .clone()
    };
    assert_eq!(outcome("127.0.0.1:9100")["outcome"], "ok");
    let dropped = outcome("127.0.0.1:9101");
    assert_eq!(dropped["outcome"], "timeout");
    let waited = dropped["connect_ms"].as_f64().unwrap();
    assert!((650.0..1500.0).contains(&waited), "waited {waited} ms");
    assert_eq!(outcome("127.0.0.1:9102")["outcome"], "refused");
    assert_eq!(outcome("127.0.0.1:9103")["outcome"], "refused");
    assert_eq!(outcome("10.77.0.1:80")["outcome"], "unreachable");
    // Targets are probed in parallel: one timeout bounds the whole run.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[test]
fn reachability_passes_when_every_target_answers() {
    let ns = Netns::new("reachok");
    let _listener = ns.listen(9200);
    let out = run(ns
        .podprobe()
        .args(["doctor", "-o", "json", "--tcp", "127.0.0.1:9200"]));
    let report = report(&out);
    assert_eq!(check(&report, "tcp.reachability")["status"], "pass");
}

#[test]
fn conntrack_of_a_pod_never_passes_and_warns_when_nearly_full() {
    let ns = Netns::new("ct");
    // Register conntrack's hooks in the namespace, as a mesh sidecar's rules do.
    ns.sh("iptables -A OUTPUT -m conntrack --ctstate NEW -j ACCEPT");
    let quiet = report(&run(ns.podprobe().args(["doctor", "-o", "json"])));
    let ct = check(&quiet, "net.conntrack");
    // A namespace with no node devices is a pod's: its own quiet table says
    // nothing about the node's.
    assert_eq!(ct["status"], "skip", "{ct:#}");
    assert_eq!(ct["evidence"]["scope"], "pod");
    let max = ct["evidence"]["max"].as_u64().unwrap();
    assert!(max > 0);

    // Fill 80% of the table with real entries: one UDP datagram to each of
    // many ports on loopback, every one a new unreplied flow.
    let flows = max * 8 / 10 + 1;
    let fill = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nn={flows}\nfor i in range(n):\n    s.sendto(b'x',('127.{{}}.{{}}.1'.format(1+i//64000//250, 1+(i//64000)%250),1024+i%64000))\n"
    );
    let out = run(ns.command("python3").args(["-c", &fill]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = report(&run(ns.podprobe().args(["doctor", "-o", "json"])));
    let ct = check(&full, "net.conntrack");
    assert_eq!(ct["status"], "warn", "{ct:#}");
    assert!(ct["evidence"]["count"].as_u64().unwrap() >= max * 3 / 4);
    assert!(ct["summary"].as_str().unwrap().contains("full"));
    assert!(ct["remedy"][0]
        .as_str()
        .unwrap()
        .contains("nf_conntrack_max"));
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    for args in [
        vec!["doctor", "--bogus"],
        vec!["doctor", "--timeout", "soon"],
        vec!["doctor", "--timeout", "0"],
        vec!["doctor", "-o", "yaml"],
        vec!["doctor", "--tcp", "no-port"],
        vec!["doctor", "--tcp", "host.invalid:80"],
        // A resolv.conf given by name must exist (only the default may be missing).
        vec!["doctor", "--resolv-conf", "/nonexistent/ppimg-resolv.conf"],
        vec!["dns", "--resolv-conf", "/nonexistent/ppimg-resolv.conf"],
        vec!["nonsense"],
    ] {
        let out = run(podprobe().args(&args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("podprobe: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn text_output_is_for_people() {
    let out = run(podprobe().args(["doctor"]).env_remove("NO_COLOR"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PASS  net.context"), "{text}");
    assert!(text.contains("verdict: "), "{text}");
    // Not a terminal: no colour codes.
    assert!(!text.contains('\x1b'), "{text}");
}
