//! Zero-flag `doctor` walks the troubleshooting flowchart: in a lab pod
//! (kubelet's Service variables set, the `kubernetes` Service DNATed to an
//! API server stand-in) it names the first failing step of each scenario;
//! outside Kubernetes its cluster checks skip; `net.listeners` is `ss
//! -tulpn`'s view, owners hidden when they are another user's.

mod support;

use podprobe::lab::{Lab, LabSpec, Pod, Scenario, APISERVER_PORT, HOST_DOMAIN_NAME, NODE_ADDRESS};
use support::{check, podprobe, report, run, Netns};

const PODPROBE: &str = env!("CARGO_BIN_EXE_podprobe");

/// What zero-flag doctor in the client pod must find with a scenario.
struct Case {
    scenario: Option<Scenario>,
    extra: Vec<String>,
    first_failing: Option<&'static str>,
    /// (check, status) pairs the case needs.
    statuses: Vec<(&'static str, &'static str)>,
}

fn case(scenario: Option<Scenario>, first_failing: Option<&'static str>) -> Case {
    Case {
        scenario,
        extra: Vec::new(),
        first_failing,
        statuses: Vec::new(),
    }
}

fn doctor_in_lab(case: &Case) -> serde_json::Value {
    let mut spec = LabSpec::new(PODPROBE);
    spec.scenarios.extend(case.scenario);
    let lab = Lab::up(&spec).expect("lab up");
    let out = run(lab
        .podprobe(Pod::Client)
        .args(["doctor", "-o", "json"])
        .args(&case.extra));
    let report = report(&out);
    let failing = report["flowchart"]["first_failing"].as_str().is_some();
    assert_eq!(
        out.status.code(),
        Some(if failing { 1 } else { 0 }),
        "{report:#}"
    );
    report
}

#[test]
fn zero_flag_doctor_names_the_first_failing_step_of_each_scenario() {
    let mut cases = vec![
        Case {
            statuses: vec![
                ("dns.cluster", "pass"),
                ("svc.reachability", "pass"),
                ("dns.timeout-race", "pass"),
                ("net.listeners", "pass"),
            ],
            ..case(None, None)
        },
        Case {
            statuses: vec![("dns.timeout-race", "fail"), ("svc.reachability", "pass")],
            ..case(Some(Scenario::DnsRace), Some("intermittent"))
        },
        Case {
            statuses: vec![("svc.reachability", "fail"), ("dns.cluster", "pass")],
            ..case(Some(Scenario::NetpolDrop), Some("service"))
        },
        Case {
            statuses: vec![("svc.reachability", "fail")],
            ..case(Some(Scenario::NetpolReject), Some("service"))
        },
        // The host search domain answers late: the rest of the search list
        // past the cluster's name is asked.
        Case {
            statuses: vec![("dns.cluster", "fail"), ("svc.reachability", "pass")],
            ..case(Some(Scenario::SlowDns), Some("dns"))
        },
        // The outside, by address (the node's API server port answers, the
        // next one refuses) and by name through the search list.
        Case {
            extra: vec![
                "--external".into(),
                format!("{NODE_ADDRESS}:{APISERVER_PORT}"),
                "--external".into(),
                format!("{NODE_ADDRESS}:{}", APISERVER_PORT + 2),
                "--external".into(),
                format!("{HOST_DOMAIN_NAME}:80"),
                "--timeout".into(),
                "1s".into(),
            ],
            statuses: vec![("net.egress", "fail"), ("svc.reachability", "pass")],
            ..case(None, Some("external"))
        },
    ];
    // The node's faults leave the pod's side of the flowchart passing: the
    // walk ends pointing at `podprobe node` on the node.
    for scenario in Scenario::ALL {
        if !matches!(
            scenario,
            Scenario::DnsRace | Scenario::NetpolDrop | Scenario::NetpolReject | Scenario::SlowDns
        ) {
            cases.push(case(Some(scenario), None));
        }
    }
    // Four labs at a time: the machine is shared.
    let results: Vec<(String, Result<(), String>)> = cases
        .chunks(4)
        .flat_map(|chunk| {
            std::thread::scope(|scope| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|c| scope.spawn(move || verify(c)))
                    .collect();
                handles
                    .into_iter()
                    .zip(chunk)
                    .map(|(h, c)| {
                        let name = c.scenario.map_or("none", Scenario::name).to_string();
                        let result = h
                            .join()
                            .map_err(|p| {
                                p.downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_default()
                            })
                            .and_then(|r| r);
                        (name, result)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

fn verify(case: &Case) -> Result<(), String> {
    let report = doctor_in_lab(case);
    let chart = &report["flowchart"];
    let first = chart["first_failing"].as_str();
    if first != case.first_failing {
        return Err(format!(
            "first failing step {first:?}, expected {:?}\n{report:#}",
            case.first_failing
        ));
    }
    for (id, status) in &case.statuses {
        if check(&report, id)["status"] != *status {
            return Err(format!("{id} is not {status}\n{report:#}"));
        }
    }
    let next = chart["next"][0].as_str().unwrap_or_default();
    let expected_next = match first {
        Some("dns") => "podprobe dns",
        Some("service") => "kubectl get endpointslices -l kubernetes.io/service-name=web",
        Some("external") => "podprobe capture -f 'host ",
        Some("intermittent") => "podprobe dns kubernetes.default --race",
        _ => "podprobe doctor --external",
    };
    if !next.starts_with(expected_next) {
        return Err(format!("next command {next:?}\n{report:#}"));
    }
    if first.is_none()
        && !chart["next"][1]
            .as_str()
            .unwrap_or_default()
            .contains("podprobe node")
    {
        return Err(format!("no node recipe\n{report:#}"));
    }
    Ok(())
}

#[test]
fn outside_kubernetes_the_cluster_checks_skip_with_the_reason() {
    let out = run(podprobe()
        .args(["doctor", "-o", "json"])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT"));
    let report = report(&out);
    for id in ["dns.cluster", "svc.reachability"] {
        let c = check(&report, id);
        assert_eq!(c["status"], "skip", "{c:#}");
        assert!(c["summary"]
            .as_str()
            .unwrap()
            .contains("KUBERNETES_SERVICE_HOST"));
    }
    assert!(report["flowchart"]["steps"].as_array().unwrap().len() == 4);
    let text = String::from_utf8_lossy(
        &run(podprobe()
            .args(["doctor"])
            .env_remove("KUBERNETES_SERVICE_HOST"))
        .stdout,
    )
    .to_string();
    let tail: Vec<&str> = text.lines().rev().take(2).collect();
    assert!(
        tail[1].starts_with("next: ") || tail[0].contains("podprobe node"),
        "the report ends with the next command:\n{text}"
    );
}

#[test]
fn listeners_name_their_processes_or_say_they_are_hidden() {
    let ns = Netns::new("listen");
    let _root = ns.listen(9400);
    let as_root = report(&run(ns.podprobe().args(["doctor", "-o", "json"])));
    let listeners = check(&as_root, "net.listeners");
    let mine = listeners["evidence"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["port"] == 9400)
        .unwrap_or_else(|| panic!("{listeners:#}"))
        .clone();
    assert_eq!(mine["proto"], "tcp");
    assert_eq!(mine["address"], "127.0.0.1");
    assert_eq!(mine["processes"][0]["comm"], "python3", "{mine:#}");
    assert_eq!(mine["owner_hidden"], false);

    // As another user, root's sockets are listed but their processes are not
    // readable: said, not silently empty.
    let hidden = report(&run(ns
        .command("setpriv")
        .args([
            "--reuid",
            "65533",
            "--regid",
            "65533",
            "--clear-groups",
            PODPROBE,
        ])
        .args(["doctor", "-o", "json"])));
    let listeners = check(&hidden, "net.listeners");
    let theirs = &listeners["evidence"]["listeners"][0];
    assert_eq!(theirs["port"], 9400, "{listeners:#}");
    assert_eq!(theirs["owner_hidden"], true, "{listeners:#}");
    assert!(
        listeners["summary"]
            .as_str()
            .unwrap()
            .contains("not visible"),
        "{listeners:#}"
    );
}
