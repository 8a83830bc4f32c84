//! `podprobe grpc` against gRPC servers podprobe did not write (grpc-js,
//! grpcio) and an HTTP/1.1 server, as replicas behind a kube-proxy
//! ClusterIP in the lab. Each server logs the calls it served per
//! connection; podprobe's per-connection and per-replica counts must match
//! those logs exactly.

#[path = "servers/harness.rs"]
mod harness;
mod support;

use std::time::{Duration, Instant};

use harness::*;
use podprobe::lab::{Lab, LabSpec, Pod, Replicas};

const PORT: u16 = 50051;

fn lab() -> Lab {
    Lab::up(&LabSpec::new(BIN)).expect("lab up")
}

/// Every replica got about `rpcs / n` of the per-endpoint run: round_robin
/// sends the first calls to whichever subchannels are ready first, so on a
/// busy machine some get more, but none is left out or takes double.
fn assert_even(per: &serde_json::Value, set: &Replicas, rpcs: u64, answering: &[usize]) {
    let fair = rpcs / answering.len() as u64;
    for &i in answering {
        let n = u(&per["per_replica"][set.addr(i).to_string()]);
        assert!(n * 2 >= fair && n <= fair * 2, "replica {i}: {n}\n{per:#}");
    }
}

#[test]
fn three_grpc_js_replicas_with_health_behind_a_clusterip_pin_the_channel_and_fail() {
    let mut lab = lab();
    let set = lab.add_replicas("greet", 3, PORT).unwrap();
    let scratch = Scratch::new();
    let servers = start(&lab, &set, &Server::node(&["--health"]), &[], &scratch);
    let headless = set.headless_fqdn();
    let args = [
        set.target(),
        "--headless".into(),
        headless.clone(),
        "--rpcs".into(),
        "300".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, report, stderr) = grpc_json(&lab, &args);
    assert_eq!(code, Some(1), "{stderr}");
    let distribution = check(&report, "grpc.distribution");
    assert_eq!(distribution["status"], "fail", "{distribution:#}");
    assert_eq!(distribution["evidence"]["rpc"], "health");
    assert!(
        distribution["summary"]
            .as_str()
            .unwrap()
            .contains("went over one connection"),
        "{distribution:#}"
    );
    assert_eq!(check(&report, "grpc.endpoints")["status"], "pass");
    let logged = calls_by_peer(&servers);
    let single = run(&report, "single-channel");
    assert_eq!(u(&single["ok"]), 300);
    assert_eq!(u(&single["connections"]), 1);
    assert_eq!(single["identity"], "unknown");
    assert_eq!(assert_connections_match_logs(single, &logged).len(), 1);
    let per = run(&report, "per-endpoint");
    assert_eq!(per["identity"], "endpoint");
    let mut replicas = assert_connections_match_logs(per, &logged);
    replicas.sort();
    assert_eq!(replicas, vec![0, 1, 2]);
    assert_even(per, &set, 300, &[0, 1, 2]);

    // doctor --grpc judges the same way: the headless name dialed as an
    // ordinary client does (pick_first) pins as well.
    let target = format!("{headless}:{PORT}");
    let out = lab
        .podprobe(Pod::Client)
        .args(["doctor", "--grpc", &target, "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doctor: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let distribution = check(&doctor, "grpc.distribution");
    assert_eq!(distribution["status"], "fail", "{distribution:#}");
    assert_eq!(check(&doctor, "grpc.endpoints")["status"], "pass");
    let (code, report, _) = grpc_json(&lab, &[&target, "--rpcs", "300"]);
    assert_eq!(code, Some(1));
    assert_eq!(check(&report, "grpc.distribution")["status"], "fail");
}

#[test]
fn ten_grpcio_replicas_with_only_reflection_are_measured_by_their_unimplemented_answers() {
    let mut lab = lab();
    let set = lab.add_replicas("refl", 10, PORT).unwrap();
    let scratch = Scratch::new();
    let servers = start(
        &lab,
        &set,
        &Server::python(&["--reflection"]),
        &[],
        &scratch,
    );
    let headless = set.headless_fqdn();
    let (code, report, stderr) = grpc_json(
        &lab,
        &[
            &set.target(),
            "--headless",
            &headless,
            "--rpcs",
            "500",
            "--concurrency",
            "8",
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let distribution = check(&report, "grpc.distribution");
    assert_eq!(distribution["status"], "fail", "{distribution:#}");
    assert_eq!(distribution["evidence"]["rpc"], "unimplemented");
    assert_eq!(
        distribution["evidence"]["endpoints"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    let logged = calls_by_peer(&servers);
    let single = run(&report, "single-channel");
    assert_eq!(u(&single["ok"]), 500);
    assert_eq!(single["statuses"]["UNIMPLEMENTED"], 500);
    assert_eq!(assert_connections_match_logs(single, &logged).len(), 1);
    let per = run(&report, "per-endpoint");
    let mut replicas = assert_connections_match_logs(per, &logged);
    replicas.sort();
    assert_eq!(replicas, (0..10).collect::<Vec<_>>());
    assert_even(per, &set, 500, &(0..10).collect::<Vec<_>>());
    assert_eq!(check(&report, "grpc.endpoints")["status"], "pass");
}

#[test]
fn max_connection_age_makes_the_client_reconnect_and_shares_come_from_connections() {
    let mut lab = lab();
    let set = lab.add_replicas("aged", 3, PORT).unwrap();
    let scratch = Scratch::new();
    let age = Server::node(&["--health", "--max-connection-age-ms", "2000"]);
    let servers = start(&lab, &set, &age, &[], &scratch);
    // About 5 s of calls: two or three connections, each one replica's.
    let (code, report, stderr) = grpc_json(
        &lab,
        &[
            &set.target(),
            "--headless",
            &set.headless_fqdn(),
            "--rpcs",
            "4000",
            "--concurrency",
            "4",
            "--timeout",
            "3s",
        ],
    );
    assert!(matches!(code, Some(0 | 1)), "{stderr}");
    let single = run(&report, "single-channel");
    // GOAWAY moves the client on without a single failed call: calls the
    // server never saw are sent again, and only those.
    assert_eq!(u(&single["ok"]), 4000, "{single:#}");
    assert_eq!(
        u(&single["failed"]) + u(&single["not_sent"]),
        0,
        "{single:#}"
    );
    let connections = single["per_connection"].as_array().unwrap();
    assert!(connections.len() >= 2, "{single:#}");
    for c in &connections[..connections.len() - 1] {
        assert!(
            c["closed_by"]
                .as_str()
                .unwrap()
                .starts_with("server: GOAWAY"),
            "{c:#}"
        );
    }
    let logged = calls_by_peer(&servers);
    let replicas = assert_connections_match_logs(single, &logged);
    // The judge's bound: the busiest connection's share is at most its
    // replica's true share, and the status follows from it.
    let total: u64 = connections.iter().map(|c| u(&c["ok"])).sum();
    let mut truth = [0u64; 3];
    for (c, r) in connections.iter().zip(&replicas) {
        truth[*r] += u(&c["ok"]);
    }
    let busiest_connection = connections.iter().map(|c| u(&c["ok"])).max().unwrap();
    assert!(busiest_connection <= *truth.iter().max().unwrap());
    let share = busiest_connection as f64 / total as f64;
    let expected = if share > 2.0 / 3.0 { "warn" } else { "pass" };
    let distribution = check(&report, "grpc.distribution");
    assert_eq!(distribution["status"], expected, "{distribution:#}");
    if expected == "warn" {
        assert!(distribution["summary"]
            .as_str()
            .unwrap()
            .contains("one connection"));
    }
}

#[test]
fn a_replica_killed_mid_run_is_skipped_reconnected_with_backoff_and_named() {
    let mut lab = lab();
    let set = lab.add_replicas("kill", 3, PORT).unwrap();
    let scratch = Scratch::new();
    let servers = start(&lab, &set, &Server::node(&["--health"]), &[], &scratch);
    let victim = servers[1].pid();
    let target = format!("dns:///{}:{PORT}", set.headless_fqdn());
    let started = Instant::now();
    let child = lab
        .podprobe(Pod::Client)
        .args([
            "grpc",
            &target,
            "--rpcs",
            "6000",
            "--concurrency",
            "4",
            "--timeout",
            "1s",
            "-o",
            "json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let endpoints = check(&report, "grpc.endpoints");
    assert_eq!(endpoints["status"], "fail", "{endpoints:#}");
    let victim_addr = set.addr(1).to_string();
    assert!(
        endpoints["summary"]
            .as_str()
            .unwrap()
            .contains(&victim_addr),
        "{endpoints:#}"
    );
    for mode in ["single-channel", "per-endpoint"] {
        let r = run(&report, mode);
        // Exact: every RPC is ok, failed or not sent.
        assert_eq!(
            u(&r["ok"]) + u(&r["failed"]) + u(&r["not_sent"]),
            6000,
            "{r:#}"
        );
        // The dead endpoint is skipped: at most the calls in flight at the
        // kill failed, and the others took the rest.
        assert!(u(&r["failed"]) <= 4, "{r:#}");
        assert_eq!(u(&r["retried"]), 0, "{r:#}");
        let dead = r["per_endpoint"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["endpoint"] == victim_addr.as_str())
            .unwrap();
        assert!(u(&dead["connect_failures"]) >= 1, "{dead:#}");
        assert!(
            dead["last_failure_ms"].as_f64() > dead["last_ok_ms"].as_f64(),
            "{dead:#}"
        );
    }
    // The killed server logged what it answered before it died.
    let single = run(&report, "single-channel");
    let dead = single["per_endpoint"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == victim_addr.as_str())
        .unwrap();
    let logged: u64 = calls(&servers[1].log).len() as u64;
    // Discovery's calls went to the first replica, never to this one.
    let (ok, failed) = (u(&dead["ok"]), u(&dead["failed"]));
    assert!(
        logged >= ok && logged <= ok + failed,
        "logged {logged}, ok {ok}, failed {failed}"
    );
}

#[test]
fn a_replica_answering_unavailable_is_named_and_a_client_pinned_to_it_fails_with_its_own_fix() {
    let mut lab = lab();
    let set = lab.add_replicas("unav", 3, PORT).unwrap();
    let scratch = Scratch::new();
    let failing = Server::node(&["--health", "--fail", "14:draining"]);
    let servers = start(
        &lab,
        &set,
        &Server::node(&["--health"]),
        &[(1, failing)],
        &scratch,
    );
    let headless = set.headless_fqdn();
    // Pinned to the failing replica: a client that dialed its address.
    let pinned = set.addr(1).to_string();
    let (code, report, stderr) =
        grpc_json(&lab, &[&pinned, "--headless", &headless, "--rpcs", "200"]);
    assert_eq!(code, Some(1), "{stderr}");
    let distribution = check(&report, "grpc.distribution");
    assert_eq!(distribution["status"], "fail", "{distribution:#}");
    let summary = distribution["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("pinned to a failing replica"),
        "{summary}"
    );
    assert!(summary.contains("UNAVAILABLE: draining"), "{summary}");
    assert!(distribution["remedy"][0]
        .as_str()
        .unwrap()
        .contains("restart or delete that pod"));
    let single = run(&report, "single-channel");
    assert_eq!(u(&single["failed"]), 200);
    let endpoints = check(&report, "grpc.endpoints");
    assert_eq!(endpoints["status"], "fail");
    assert!(
        endpoints["summary"].as_str().unwrap().contains(&pinned),
        "{endpoints:#}"
    );
    assert!(endpoints["remedy"][0]
        .as_str()
        .unwrap()
        .contains("readiness probe"));
    let logged = calls_by_peer(&servers);
    assert_connections_match_logs(single, &logged);
    assert_connections_match_logs(run(&report, "per-endpoint"), &logged);

    // Through the ClusterIP: pinned to whichever replica, and the failing
    // one named by the per-endpoint run either way.
    let (code, report, _) = grpc_json(
        &lab,
        &[&set.target(), "--headless", &headless, "--rpcs", "200"],
    );
    assert_eq!(code, Some(1));
    let single = run(&report, "single-channel");
    let replica = assert_connections_match_logs(single, &calls_by_peer(&servers))[0];
    let summary = check(&report, "grpc.distribution")["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        summary.starts_with("pinned to a failing replica"),
        replica == 1,
        "{summary}"
    );
    let endpoints = check(&report, "grpc.endpoints");
    assert!(endpoints["summary"].as_str().unwrap().contains(&pinned));
}

#[test]
fn a_not_serving_replica_is_a_failing_endpoint() {
    let mut lab = lab();
    let set = lab.add_replicas("nots", 3, PORT).unwrap();
    let scratch = Scratch::new();
    let not_serving = Server::node(&["--health", "--health-status", "NOT_SERVING"]);
    let servers = start(
        &lab,
        &set,
        &Server::node(&["--health"]),
        &[(2, not_serving)],
        &scratch,
    );
    let target = format!("dns:///{}:{PORT}", set.headless_fqdn());
    let (code, report, stderr) = grpc_json(&lab, &[&target, "--rpcs", "300"]);
    assert_eq!(code, Some(1), "{stderr}");
    let endpoints = check(&report, "grpc.endpoints");
    assert_eq!(endpoints["status"], "fail", "{endpoints:#}");
    let summary = endpoints["summary"].as_str().unwrap();
    assert!(
        summary.contains(&set.addr(2).to_string()) && summary.contains("NOT_SERVING"),
        "{summary}"
    );
    // Spread evenly over the three (round_robin), the failing one included.
    assert_eq!(check(&report, "grpc.distribution")["status"], "pass");
    let per = run(&report, "per-endpoint");
    assert_eq!(u(&per["failed"]), u(&per["per_endpoint"][2]["failed"]));
    assert_connections_match_logs(per, &calls_by_peer(&servers));
}

#[test]
fn tls_with_a_private_ca_works_with_ca_and_authority_and_says_what_fails_without() {
    let mut lab = lab();
    let set = lab.add_replicas("tls", 3, PORT).unwrap();
    let scratch = Scratch::new();
    let (ca, cert, key) = private_ca(&scratch, &["tls.default", "tls.default.svc.cluster.local"]);
    let tls_args = vec![
        "--health".to_string(),
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ];
    let servers = start(&lab, &set, &Server::Node(tls_args), &[], &scratch);
    let headless = set.headless_fqdn();
    let ca = ca.display().to_string();
    let (code, report, stderr) = grpc_json(
        &lab,
        &[
            &set.target(),
            "--headless",
            &headless,
            "--ca",
            &ca,
            "--rpcs",
            "200",
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let distribution = check(&report, "grpc.distribution");
    assert_eq!(distribution["status"], "fail", "{distribution:#}");
    assert_eq!(
        distribution["evidence"]["tls"]["server_name"],
        "tls.default"
    );
    assert_eq!(distribution["evidence"]["tls"]["verified"], true);
    assert_connections_match_logs(run(&report, "per-endpoint"), &calls_by_peer(&servers));

    // A pod IP as the target: the name to check comes from --authority.
    let pod = set.addr(0).to_string();
    let (code, _, stderr) = grpc_json(
        &lab,
        &[
            &pod,
            "--ca",
            &ca,
            "--authority",
            "tls.default.svc.cluster.local",
            "--rpcs",
            "20",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let out = lab
        .podprobe(Pod::Client)
        .args(["grpc", &pod, "--ca", &ca])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let line = String::from_utf8_lossy(&out.stderr);
    assert!(line.contains("--authority"), "{line}");
    // Without the CA: one line saying how to trust it.
    let out = lab
        .podprobe(Pod::Client)
        .args(["grpc", &set.target(), "--tls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let line = String::from_utf8_lossy(&out.stderr);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains("UnknownIssuer") && line.contains("--ca FILE"),
        "{line}"
    );
    // --insecure works, and the report says so loudly.
    let (code, report, _) = grpc_json(&lab, &[&pod, "--insecure", "--rpcs", "20"]);
    assert_eq!(code, Some(0));
    let endpoints = check(&report, "grpc.endpoints");
    assert_eq!(endpoints["status"], "warn");
    assert!(endpoints["summary"]
        .as_str()
        .unwrap()
        .contains("NOT verified"));
    // Plaintext against TLS: named.
    let out = lab
        .podprobe(Pod::Client)
        .args(["grpc", &pod])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("speaks TLS: add --tls"));
}

#[test]
fn an_http1_server_on_the_port_is_named_by_what_it_answers() {
    let mut lab = lab();
    let set = lab.add_replicas("web1", 3, PORT).unwrap();
    let scratch = Scratch::new();
    let _servers = start(&lab, &set, &Server::Nginx, &[], &scratch);
    let (code, report, stderr) = grpc_json(
        &lab,
        &[
            &set.target(),
            "--headless",
            &set.headless_fqdn(),
            "--rpcs",
            "100",
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    let endpoints = check(&report, "grpc.endpoints");
    assert_eq!(endpoints["status"], "fail", "{endpoints:#}");
    let summary = endpoints["summary"].as_str().unwrap();
    assert!(summary.contains("3 of 3 endpoints fail"), "{summary}");
    assert!(
        summary.contains("speaks HTTP/1.1") && summary.contains("nginx"),
        "{summary}"
    );
    assert!(
        endpoints["remedy"].to_string().contains("targetPort"),
        "{endpoints:#}"
    );
    let distribution = check(&report, "grpc.distribution");
    assert_eq!(distribution["status"], "error", "{distribution:#}");
}
