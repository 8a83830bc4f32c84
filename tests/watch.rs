//! `podprobe watch` and `doctor --push` with the real Prometheus stack
//! (root): Debian's `prometheus` scrapes watch in a lab pod and on the lab's
//! node and loads the PrometheusRule's alerts, Debian's
//! `prometheus-pushgateway` takes `doctor --push`, `promtool` checks the
//! rules and the exposition; the fleet manifests against Kubernetes' and
//! prometheus-operator's published schemas.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use podprobe::lab::{Background, Lab, LabSpec, Pod, Scenario, Service};
use serde_json::Value;
use support::{podprobe, run, TempDir};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// watch's port in a pod (its default) and on the node (the DaemonSet's).
const POD_PORT: u16 = 9090;
const NODE_PORT: u16 = 9467;
/// Prometheus and the Pushgateway run in the lab's node namespace, which
/// routes to every pod, on ports of their own there.
const PROMETHEUS: &str = "127.0.0.1:9090";
const PUSHGATEWAY_PORT: u16 = 9091;

fn lab(scenarios: &[Scenario]) -> Lab {
    let mut spec = LabSpec::new(env!("CARGO_BIN_EXE_podprobe"));
    spec.scenarios = scenarios.to_vec();
    Lab::up(&spec).expect("lab up")
}

/// One HTTP/1.1 exchange from inside `pod`: (status, headers, body).
fn http(lab: &Lab, pod: Pod, addr: &str, request: &str) -> Option<(u16, String, String)> {
    let addr: SocketAddr = addr.parse().unwrap();
    let request = request.to_string();
    lab.in_pod(pod, move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream.write_all(request.as_bytes()).ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, head.to_ascii_lowercase(), body.to_string()))
    })
    .unwrap()
}

fn get(lab: &Lab, pod: Pod, addr: &str, path: &str, accept: &str) -> Option<(u16, String, String)> {
    http(
        lab,
        pod,
        addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        ),
    )
}

/// Polls `probe` until it gives a value, for at most `limit`.
fn wait_for<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Debian's Prometheus server in the lab's node namespace, with `config`
/// and the PrometheusRule's rules.
struct Prometheus<'a> {
    lab: &'a Lab,
    _server: Background,
    _dir: TempDir,
}

impl<'a> Prometheus<'a> {
    fn start(lab: &'a Lab, scrape_configs: &str) -> Prometheus<'a> {
        let dir = TempDir::new("watch-prometheus");
        let rules = dir.file("rules.yml", &rules_file());
        let config = dir.file(
            "prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n{scrape_configs}",
                rules.display()
            ),
        );
        let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
        let server = lab
            .spawn(
                lab.command(Pod::Node, "prometheus")
                    .arg(format!("--config.file={}", config.display()))
                    .arg(format!(
                        "--storage.tsdb.path={}",
                        dir.0.join("data").display()
                    ))
                    .arg(format!("--web.listen-address={PROMETHEUS}"))
                    .stdout(Stdio::null())
                    .stderr(log),
            )
            .unwrap();
        let prometheus = Prometheus {
            lab,
            _server: server,
            _dir: dir,
        };
        wait_for(Duration::from_secs(30), "Prometheus to be ready", || {
            get(lab, Pod::Node, PROMETHEUS, "/-/ready", "*/*").filter(|(s, _, _)| *s == 200)
        });
        prometheus
    }

    /// An instant query's result vector.
    fn query(&self, promql: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, _, body) = get(self.lab, Pod::Node, PROMETHEUS, &path, "application/json")
            .unwrap_or_else(|| panic!("no answer to {promql}"));
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status, 200, "{promql}: {answer}");
        answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The one value of a query that selects one series, once it has one.
    fn value(&self, promql: &str) -> f64 {
        wait_for(Duration::from_secs(60), promql, || {
            let result = self.query(promql);
            (result.len() == 1).then(|| result[0]["value"][1].as_str().unwrap().parse().unwrap())
        })
    }
}

/// A static scrape job whose targets carry the labels prometheus-operator's
/// monitors give them (the downward API's pod, namespace and node).
fn scrape_job(name: &str, target: &str, pod: &str, node: &str) -> String {
    format!(
        "  - job_name: {name}\n    static_configs:\n      - targets: ['{target}']\n        labels: {{namespace: default, pod: {pod}, node: {node}}}\n"
    )
}

fn manifest_documents(file: &str) -> Vec<serde_yaml::Value> {
    support::manifest_documents(&format!("fleet/{file}"))
}

/// The PrometheusRule's `spec`: a plain Prometheus rules file.
fn rules_file() -> String {
    let rule = &manifest_documents("prometheusrule.yaml")[0];
    serde_yaml::to_string(&rule["spec"]).unwrap()
}

/// `podprobe watch` in a pod of the lab, killed on drop.
struct Watch {
    child: Child,
    stderr: PathBuf,
}

impl Watch {
    fn start(lab: &Lab, pod: Pod, dir: &TempDir, args: &[&str]) -> Watch {
        let stderr = dir.0.join(format!("watch-{}.log", pod.name()));
        let child = lab
            .podprobe(pod)
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Watch { child, stderr }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then the exit status and how long it took to come.
    fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let sent = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = wait_for(Duration::from_secs(20), "watch to exit", || {
            self.child.try_wait().unwrap()
        });
        (status, sent.elapsed())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The metrics in Prometheus text, for promtool and for people reading a
/// failure.
fn exposition(lab: &Lab, pod: Pod, addr: &str) -> String {
    let (status, head, body) = get(lab, pod, addr, "/metrics", "text/plain").unwrap();
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

fn promtool(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (scripts/setup installs prometheus)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

#[test]
fn prometheus_scrapes_watch_in_a_pod_and_on_the_node_of_a_dns_race_lab() {
    let lab = lab(&[Scenario::DnsRace]);
    let dir = TempDir::new("watch-race");
    let node = lab.netns(Pod::Node);
    // The node resolves through the DNS pod, never the host's resolver.
    let node_resolv = dir.file(
        "node-resolv.conf",
        &format!("nameserver {}\n", Pod::Dns.ip()),
    );
    let pod_addr = format!("{}:{POD_PORT}", Pod::Client.ip());
    let node_addr = format!("127.0.0.1:{NODE_PORT}");
    let pod_watch = Watch::start(
        &lab,
        Pod::Client,
        &dir,
        &[
            "--name",
            "kubernetes.default",
            "--timeout",
            "1s",
            "--interval",
            "5s",
        ],
    );
    let node_watch = Watch::start(
        &lab,
        Pod::Node,
        &dir,
        &[
            "--resolv-conf",
            node_resolv.to_str().unwrap(),
            "--interval",
            "5s",
            "--listen",
            &node_addr,
        ],
    );
    let prometheus = Prometheus::start(
        &lab,
        &(scrape_job("podprobe", &pod_addr, "client", &node)
            + &scrape_job("podprobe-node", &node_addr, "podprobe-node", &node)),
    );

    // Two cycles of the client, each seen by a scrape: the race's losses
    // grow, single queries from fresh sockets (the control) lose nothing.
    let cycles = r#"podprobe_cycles_total{job="podprobe",pod="client",namespace="default"}"#;
    wait_for(Duration::from_secs(60), "two cycles scraped", || {
        (prometheus.value(&format!("count_over_time({cycles}[5m])")) >= 2.0
            && prometheus.value(cycles) >= 2.0)
            .then_some(())
    });
    let lost = |pattern: &str| {
        prometheus.value(&format!(
            r#"podprobe_dns_race_lost_total{{job="podprobe",pattern="{pattern}"}}"#
        ))
    };
    assert!(lost("parallel-same-socket") >= 6.0, "{}", pod_watch.log());
    assert_eq!(lost("control-fresh-sockets"), 0.0, "{}", pod_watch.log());
    assert_eq!(
        prometheus.value(
            r#"podprobe_check_status{job="podprobe",check="dns.timeout-race",status="fail"}"#
        ),
        1.0
    );
    // Every query the search walk sent is counted and timed.
    assert!(
        prometheus.value(&format!(
            r#"sum(podprobe_dns_queries_total{{job="podprobe",nameserver="{}:53",rcode="NXDOMAIN"}})"#,
            Service::KubeDns.ip()
        )) >= 2.0
    );
    assert!(
        prometheus.value(
            r#"sum(podprobe_dns_lookup_duration_seconds_count{job="podprobe",candidate="search",qtype="AAAA"})"#
        ) >= 2.0
    );
    // The DNS race alert of the PrometheusRule fires on the real series.
    wait_for(Duration::from_secs(30), "the DNS race alert", || {
        let alerts = prometheus
            .query(r#"ALERTS{alertname="PodprobeDNSRaceLosses",alertstate="firing",pod="client"}"#);
        (!alerts.is_empty()).then_some(())
    });

    // The node's watch reads the node's conntrack table, where the lab's
    // Service traffic is tracked.
    assert!(
        prometheus.value(r#"podprobe_conntrack_entries{job="podprobe-node"}"#) > 0.0,
        "{}",
        node_watch.log()
    );
    assert!(prometheus.value(r#"podprobe_conntrack_max{job="podprobe-node"}"#) > 0.0);

    // promtool accepts the exposition as it is served.
    for (pod, addr) in [(Pod::Client, &pod_addr), (Pod::Node, &node_addr)] {
        let text = exposition(&lab, pod, addr);
        let checked = promtool(&["check", "metrics"], Some(&text));
        assert!(
            checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
            "promtool check metrics: {}{}\n{text}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    // OpenMetrics when asked, as Prometheus asks.
    let (_, head, body) = get(
        &lab,
        Pod::Client,
        &pod_addr,
        "/metrics",
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    )
    .unwrap();
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(
        body.contains("# TYPE podprobe_dns_race_lost counter"),
        "{body}"
    );

    // /report is the last cycle's report, valid against the schema.
    let (status, head, body) = get(&lab, Pod::Client, &pod_addr, "/report", "*/*").unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json"));
    let report: Value = serde_json::from_str(&body).unwrap();
    support::assert_valid_report(&report);
    assert_eq!(report["verdict"], "fail");
    assert_eq!(report["context"]["pod"], "client");
    let (status, _, _) = get(&lab, Pod::Client, &pod_addr, "/healthz", "*/*").unwrap();
    assert_eq!(status, 200);
}

#[test]
fn doctor_push_reaches_prometheus_through_the_pushgateway() {
    let lab = lab(&[]);
    let dir = TempDir::new("watch-push");
    let _pushgateway = lab
        .spawn(
            lab.command(Pod::Node, "prometheus-pushgateway")
                .arg(format!("--web.listen-address=0.0.0.0:{PUSHGATEWAY_PORT}"))
                .arg(format!(
                    "--persistence.file={}",
                    dir.0.join("pushgateway.db").display()
                ))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.0.join("pushgateway.log")).unwrap()),
        )
        .unwrap();
    let pushgateway = format!("127.0.0.1:{PUSHGATEWAY_PORT}");
    let prometheus = Prometheus::start(
        &lab,
        &format!(
            "  - job_name: pushgateway\n    honor_labels: true\n    static_configs:\n      - targets: ['{pushgateway}']\n"
        ),
    );
    wait_for(Duration::from_secs(30), "the Pushgateway", || {
        get(&lab, Pod::Node, &pushgateway, "/-/ready", "*/*").filter(|(s, _, _)| *s == 200)
    });

    // From the client pod, across the lab's network to the node.
    let url = format!("http://{}:{PUSHGATEWAY_PORT}", Pod::Node.ip());
    let out = run(lab.podprobe(Pod::Client).args([
        "doctor",
        "-o",
        "json",
        "--tcp",
        &Service::Web.target(),
        "--push",
        &url,
    ]));
    let report = support::report(&out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        support::check(&report, "tcp.reachability")["status"],
        "pass"
    );

    // The group is job podprobe, namespace/pod from the downward API.
    let status = |check: &str, status: &str| {
        prometheus.value(&format!(
            r#"podprobe_check_status{{job="podprobe",namespace="default",pod="client",check="{check}",status="{status}"}}"#
        ))
    };
    assert_eq!(status("tcp.reachability", "pass"), 1.0);
    assert_eq!(status("tcp.reachability", "fail"), 0.0);
    assert_eq!(
        prometheus.value(&format!(
            r#"podprobe_tcp_connect_total{{job="podprobe",pod="client",target="{}",outcome="ok"}}"#,
            Service::Web.target()
        )),
        1.0
    );
    assert_eq!(
        prometheus.value(r#"podprobe_cycles_total{job="podprobe",pod="client"}"#),
        1.0
    );

    // A Pushgateway that is not there: the report still comes, then one
    // line and exit 3.
    let out = run(lab.podprobe(Pod::Client).args([
        "doctor",
        "-o",
        "json",
        "--push",
        &format!("http://{}:1", Pod::Node.ip()),
    ]));
    support::report(&out);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("pushing to http://"), "{stderr}");
}

#[test]
fn a_hanging_target_never_delays_a_cycle_beyond_its_timeout_and_sigterm_stops_cleanly() {
    let lab = lab(&[Scenario::NetpolDrop]);
    let dir = TempDir::new("watch-hang");
    let addr = format!("{}:{POD_PORT}", Pod::Client.ip());
    let mut watch = Watch::start(
        &lab,
        Pod::Client,
        &dir,
        &[
            "--tcp",
            &Service::Web.target(),
            "--timeout",
            "1s",
            "--interval",
            "5s",
        ],
    );
    let cycles = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("podprobe_cycles_total "))
            .and_then(|v| v.parse::<u64>().ok())
    };
    wait_for(Duration::from_secs(40), "three cycles", || {
        get(&lab, Pod::Client, &addr, "/metrics", "*/*")
            .and_then(|(_, _, body)| cycles(&body))
            .filter(|n| *n >= 3)
    });
    let (_, _, body) = get(&lab, Pod::Client, &addr, "/report", "*/*").unwrap();
    let report: Value = serde_json::from_str(&body).unwrap();
    let reach = support::check(&report, "tcp.reachability");
    assert_eq!(
        reach["evidence"]["targets"][0]["outcome"], "timeout",
        "{reach:#}"
    );
    // The dropped connect waited its 1 s, in tcp.reachability and again in
    // svc.reachability (the Service from kubelet's variables), and the cycle
    // no longer than its checks (generous for a loaded machine).
    for id in ["tcp.reachability", "svc.reachability"] {
        let took = support::check(&report, id)["duration_ms"].as_f64().unwrap();
        assert!((900.0..2500.0).contains(&took), "{report:#}");
    }
    let checks_took: f64 = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["duration_ms"].as_f64().unwrap())
        .sum();
    assert!(
        report["duration_ms"].as_f64().unwrap() < checks_took + 500.0,
        "{report:#}"
    );
    let text = exposition(&lab, Pod::Client, &addr);
    assert!(text.contains("podprobe_cycle_overruns_total 0"), "{text}");
    assert!(
        text.contains(&format!(
            "podprobe_tcp_connect_total{{target=\"{}\",outcome=\"timeout\"}}",
            Service::Web.target()
        )),
        "{text}"
    );

    // SIGTERM, in a cycle or between two: exit 0 at once, nothing left
    // listening.
    let (status, took) = watch.terminate();
    assert!(status.success(), "{status:?}\n{}", watch.log());
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        watch.log().contains("SIGTERM, stopping after"),
        "{}",
        watch.log()
    );
    assert!(get(&lab, Pod::Client, &addr, "/healthz", "*/*").is_none());
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    for args in [
        vec!["watch", "--tcp", "no-port-here", "--listen", "127.0.0.1:0"],
        vec!["watch", "--interval", "0s"],
        vec!["watch", "--listen", "localhost:9090"],
        vec!["doctor", "--push", "https://pushgateway:9091"],
        vec!["doctor", "--push", "pushgateway:9091"],
    ] {
        let out = run(podprobe().args(&args).env("NO_COLOR", "1"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
    // A port already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let out = run(podprobe().args(["watch", "--listen", &listen]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

#[test]
fn promtool_accepts_the_alerting_rules() {
    let dir = TempDir::new("watch-rules");
    let rules = dir.file("rules.yml", &rules_file());
    let out = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS: 4 rules found"), "{text}");
    // The alerts the issue asks for, each with a severity and a summary.
    let rule = &manifest_documents("prometheusrule.yaml")[0];
    let alerts: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(r["labels"]["severity"].as_str().is_some(), "{r:?}");
            assert!(r["annotations"]["summary"].as_str().is_some(), "{r:?}");
            r["alert"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        alerts,
        [
            "PodprobeConntrackInsertFailures",
            "PodprobeDNSRaceLosses",
            "PodprobeCheckFailing",
            "PodprobeCycleOverruns"
        ]
    );
    // promtool does catch a broken rule.
    let broken = dir.file(
        "broken.yml",
        &rules_file().replace("increase(", "increase(("),
    );
    let out = promtool(&["check", "rules", broken.to_str().unwrap()], None);
    assert!(!out.status.success());
}

const VALIDATOR: &str = "/opt/podprobe-testenv/bin/kubernetes-validate";
const FLEET_FILES: [&str; 4] = [
    "watch-pod.yaml",
    "watch-node.yaml",
    "cronjob-push.yaml",
    "prometheusrule.yaml",
];

/// The openAPIV3Schema of a prometheus-operator CRD, as published.
fn crd_schema(kind: &str) -> Value {
    use serde::Deserialize;
    let file = format!(
        "{ROOT}/tests/fixtures/prometheus-operator/monitoring.coreos.com_{}s.yaml",
        kind.to_ascii_lowercase()
    );
    let text = std::fs::read_to_string(&file).unwrap();
    let crd =
        serde_yaml::Value::deserialize(serde_yaml::Deserializer::from_str(&text).next().unwrap())
            .unwrap();
    assert_eq!(crd["spec"]["names"]["kind"].as_str(), Some(kind));
    let version = crd["spec"]["versions"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1")
        .unwrap();
    serde_json::to_value(&version["schema"]["openAPIV3Schema"]).unwrap()
}

/// What `kubectl apply --validate=strict` rejects and JSON Schema lets
/// through: fields a CRD's structural schema does not declare.
fn unknown_fields(value: &Value, schema: &Value, at: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let Some(properties) = schema["properties"].as_object() else {
                if let Some(items) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    for (key, v) in map {
                        unknown_fields(v, items, &format!("{at}.{key}"), found);
                    }
                }
                return;
            };
            if schema["x-kubernetes-preserve-unknown-fields"] == true {
                return;
            }
            for (key, v) in map {
                match properties.get(key) {
                    Some(s) => unknown_fields(v, s, &format!("{at}.{key}"), found),
                    None => found.push(format!("{at}.{key}")),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                unknown_fields(v, &schema["items"], &format!("{at}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// Problems of a prometheus-operator resource against its CRD's schema.
fn crd_problems(doc: &Value) -> Vec<String> {
    let kind = doc["kind"].as_str().unwrap();
    let schema = crd_schema(kind);
    let validator = jsonschema::validator_for(&schema).expect("the CRD's schema compiles");
    let mut problems: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    // metadata is the API server's ObjectMeta, not part of the CRD's schema.
    let mut body = doc.clone();
    body.as_object_mut().unwrap().remove("metadata");
    let mut unknown = Vec::new();
    unknown_fields(&body, &schema, kind, &mut unknown);
    problems.extend(unknown.into_iter().map(|f| format!("unknown field {f}")));
    problems
}

#[test]
fn fleet_manifests_validate_against_kubernetes_and_prometheus_operator_schemas() {
    let dir = Path::new(ROOT).join("manifests/fleet");
    let out = run(Command::new(VALIDATOR)
        .arg("--strict")
        .args(FLEET_FILES.iter().map(|f| dir.join(f))));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" passed for resource ").count(), 5, "{text}");

    // The CRD kinds, which kubernetes-validate has no schema for, against
    // prometheus-operator's published CRDs.
    let mut kinds = Vec::new();
    for file in FLEET_FILES {
        for doc in manifest_documents(file) {
            if doc["apiVersion"].as_str() != Some("monitoring.coreos.com/v1") {
                continue;
            }
            let doc = serde_json::to_value(&doc).unwrap();
            let problems = crd_problems(&doc);
            assert!(problems.is_empty(), "{file}: {problems:#?}");
            kinds.push(doc["kind"].as_str().unwrap().to_string());
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["PodMonitor", "PrometheusRule", "ServiceMonitor"]);
    assert_eq!(text.matches("Couldn't find schema").count(), 3, "{text}");

    // The checks do catch a broken resource.
    let mut monitor = serde_json::to_value(&manifest_documents("watch-pod.yaml")[2]).unwrap();
    monitor["spec"]["podMetricsEndpoints"][0]["relabellings"] = serde_json::json!([]);
    monitor["spec"]["podMetricsEndpoints"][0]["interval"] = serde_json::json!("soon");
    let problems = crd_problems(&monitor);
    assert!(
        problems.iter().any(|p| p.contains("relabellings")),
        "{problems:#?}"
    );
    assert!(problems.iter().any(|p| p.contains("soon")), "{problems:#?}");
}

#[test]
fn fleet_pods_are_restricted_but_for_the_node_variants_host_network() {
    for (file, host_network) in [
        ("watch-pod.yaml", false),
        ("watch-node.yaml", true),
        ("cronjob-push.yaml", false),
    ] {
        let docs = manifest_documents(file);
        let workload = &docs[0];
        let spec = support::pod_spec(workload).unwrap();
        assert_eq!(
            spec["hostNetwork"].as_bool().unwrap_or(false),
            host_network,
            "{file}"
        );
        support::assert_locked_down(spec, file);
        let container = &spec["containers"][0];
        // The Pushgateway's grouping key needs the namespace too.
        assert!(
            container["env"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "POD_NAMESPACE"),
            "{file}"
        );

        // The arguments are real: this podprobe accepts them.
        let args: Vec<String> = container["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let out = run(podprobe().args(&args).arg("--help"));
        assert!(
            out.status.success(),
            "{file} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // The monitor finds the pods' metrics port, through the Service
        // where there is one.
        if file == "cronjob-push.yaml" {
            assert!(args.contains(&"--push".to_string()));
            continue;
        }
        let labels = &spec_labels(workload);
        let (service, monitor) = (&docs[1], &docs[2]);
        assert_eq!(service["spec"]["selector"], *labels, "{file}");
        assert_eq!(
            monitor["spec"]["selector"]["matchLabels"], *labels,
            "{file}"
        );
        let port = container["ports"][0]["containerPort"].as_u64().unwrap();
        let listen = args.iter().position(|a| a == "--listen").map_or(9090, |i| {
            args[i + 1].trim_start_matches(':').parse().unwrap()
        });
        assert_eq!(port, listen, "{file}");
        assert_eq!(container["ports"][0]["name"].as_str(), Some("metrics"));
        let endpoints = match monitor["kind"].as_str() {
            Some("PodMonitor") => &monitor["spec"]["podMetricsEndpoints"],
            _ => &monitor["spec"]["endpoints"],
        };
        assert_eq!(endpoints[0]["port"].as_str(), Some("metrics"), "{file}");
        assert_eq!(
            endpoints[0]["relabelings"][0]["targetLabel"].as_str(),
            Some("node"),
            "{file}"
        );
    }
}

fn spec_labels(workload: &serde_yaml::Value) -> serde_yaml::Value {
    workload["spec"]["template"]["metadata"]["labels"].clone()
}
