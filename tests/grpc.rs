//! `podprobe serve` and `podprobe grpc`, driven as the real binary against
//! real servers: on loopback, and in the lab (a ClusterIP Service in front of
//! three backend pods, a headless name with their three A records).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use podprobe::lab::{Background, Lab, LabSpec, Pod, Service, BACKEND_GRPC_PORT, HEADLESS_NAME};
use support::{check, report};

const BIN: &str = env!("CARGO_BIN_EXE_podprobe");

/// A running `podprobe serve`, stopped (SIGTERM, then SIGKILL) on drop.
struct Serve {
    child: podprobe::cleanup::Killed,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Serve {
    fn start(ip: &str, grpc_port: u16, extra: &[&str]) -> Serve {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--grpc", &format!("{ip}:{grpc_port}")])
            .args(["--http", &format!("{ip}:0")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = podprobe::cleanup::Killed::spawn(&mut cmd).unwrap();
        let mut stderr = BufReader::new(child.take_stderr().unwrap());
        let (mut grpc, mut http) = (None, None);
        let mut line = String::new();
        while grpc.is_none() || http.is_none() {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "serve exited");
            let addr = || line.trim().rsplit(' ').next().unwrap().parse().ok();
            if line.contains("gRPC listening on") {
                grpc = addr();
            } else if line.contains("HTTP listening on") {
                http = addr();
            }
        }
        // Keep draining stderr so the server never blocks writing to it.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Serve {
            child,
            grpc: grpc.unwrap(),
            http: http.unwrap(),
        }
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Sends one GET on `stream` and returns the response head and body.
fn get(stream: &mut TcpStream) -> (String, serde_json::Value) {
    stream
        .write_all(b"GET /who HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (head, serde_json::from_slice(&body).unwrap())
}

#[test]
fn serve_http_answers_identity_and_closes_idle_connections_after_the_timeout() {
    let serve = Serve::start(
        "127.0.0.1",
        0,
        &["--name", "web-1", "--http-idle-timeout", "1s"],
    );
    let mut stream = TcpStream::connect(serve.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (head, body) = get(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Keep-Alive: timeout=1\r\n"), "{head}");
    assert!(head.contains("Server: podprobe/"), "{head}");
    assert_eq!(body["name"], "web-1");
    assert_eq!(body["pod_ip"], "127.0.0.1");
    assert_eq!(body["requests_on_connection"], 1);
    // Reused within the timeout: the same connection serves a second request.
    let (_, body) = get(&mut stream);
    assert_eq!(body["requests_on_connection"], 2);
    // Then idle: the server closes it (EOF) about a second later.
    let idle = Instant::now();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    let waited = idle.elapsed();
    assert!(rest.is_empty());
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[test]
fn serve_exits_cleanly_on_sigterm() {
    let mut serve = Serve::start("127.0.0.1", 0, &[]);
    let mut idle = TcpStream::connect(serve.http).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = get(&mut idle);
    let started = Instant::now();
    let status = serve.terminate().expect("serve did not stop");
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn serve_reports_an_address_in_use_in_one_line_and_exits_2() {
    let serve = Serve::start("127.0.0.1", 0, &[]);
    let out = Command::new(BIN)
        .args([
            "serve",
            "--grpc",
            &serve.grpc.to_string(),
            "--http",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("Address already in use"), "{stderr}");
}

/// Stderr is exactly one line, and it contains `needle`.
fn one_line(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn grpc(args: &[&str]) -> Output {
    Command::new(BIN).arg("grpc").args(args).output().unwrap()
}

#[test]
fn grpc_single_replica_on_loopback_passes_with_one_connection() {
    let serve = Serve::start("127.0.0.1", 0, &["--name", "solo"]);
    let target = serve.grpc.to_string();
    let out = grpc(&[&target, "--rpcs", "200", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let report = report(&out);
    let check = check(&report, "grpc.distribution");
    assert_eq!(check["status"], "pass", "{check:#}");
    let run = &check["evidence"]["runs"][0];
    assert_eq!(run["mode"], "single-channel");
    assert_eq!(run["ok"], 200);
    assert_eq!(run["connections"], 1);
    assert_eq!(run["per_replica"]["solo"], 200);
    assert!(run["p99_ms"].as_f64().unwrap() >= run["p50_ms"].as_f64().unwrap());
}

#[test]
fn grpc_refused_port_is_one_line_and_exit_3() {
    // A port just released is refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = grpc(&[&format!("127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(3));
    one_line(&out, "Connection refused");
}

#[test]
fn grpc_tls_against_a_plaintext_server_is_one_line_and_exit_2() {
    let serve = Serve::start("127.0.0.1", 0, &[]);
    let out = grpc(&["--tls", &serve.grpc.to_string()]);
    assert_eq!(out.status.code(), Some(2));
    one_line(&out, "speaks plaintext HTTP/2, not TLS: use --plaintext");
}

/// `openssl s_server` with a throwaway self-signed certificate.
struct TlsServer {
    _child: podprobe::cleanup::Killed,
    _dir: podprobe::cleanup::Cleanup,
    addr: SocketAddr,
}

impl TlsServer {
    fn start() -> TlsServer {
        let dir = std::env::temp_dir().join(format!("pp-grpc-tls-{}", std::process::id()));
        let removal = podprobe::cleanup::removing(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut child = Command::new("openssl");
        child
            .args(["s_server", "-www", "-accept", &addr.to_string(), "-cert"])
            .arg(dir.join("cert.pem"))
            .arg("-key")
            .arg(dir.join("key.pem"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let server = TlsServer {
            _child: podprobe::cleanup::Killed::spawn(&mut child).unwrap(),
            _dir: removal,
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "openssl s_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

#[test]
fn grpc_plaintext_against_a_tls_server_is_one_line_and_exit_2() {
    let server = TlsServer::start();
    let out = grpc(&[&server.addr.to_string()]);
    assert_eq!(out.status.code(), Some(2));
    one_line(&out, "speaks TLS: add --tls");
}

// ---- in the lab ----

fn lab() -> Lab {
    Lab::up(&LabSpec::new(BIN)).expect("lab up")
}

/// Stops whatever gRPC server runs in the backend pods (so each test chooses
/// its own), by pid, inside this test's own namespaces only.
fn stop_grpc_servers(lab: &Lab) {
    for pod in Pod::BACKENDS {
        let out = Command::new("ip")
            .args(["netns", "pids", &lab.netns(pod)])
            .output()
            .unwrap();
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            if args.iter().any(|a| *a == b"serve") {
                let pid: i32 = pid.parse().unwrap();
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    wait_grpc_port(lab, false);
}

/// Waits until every backend's gRPC port is open (`true`) or closed.
fn wait_grpc_port(lab: &Lab, open: bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for pod in Pod::BACKENDS {
        let addr = SocketAddr::from((pod.ip(), BACKEND_GRPC_PORT));
        loop {
            let is_open = lab
                .in_pod(Pod::Client, || {
                    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
                })
                .unwrap();
            if is_open == open {
                break;
            }
            assert!(Instant::now() < deadline, "{addr} never became open={open}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `podprobe serve` in each backend pod, named after the pod.
fn serve_backends(lab: &Lab, extra: &[&str]) -> Vec<Background> {
    stop_grpc_servers(lab);
    let servers = Pod::BACKENDS
        .iter()
        .map(|&pod| {
            let mut cmd = lab.podprobe(pod);
            cmd.args(["serve", "--grpc", &format!("0.0.0.0:{BACKEND_GRPC_PORT}")])
                .args(["--http", "127.0.0.1:0"])
                .args(extra)
                .stderr(Stdio::null());
            lab.spawn(&mut cmd).unwrap()
        })
        .collect();
    wait_grpc_port(lab, true);
    servers
}

/// podprobe grpc in the client pod.
fn grpc_in_client(lab: &Lab, args: &[&str]) -> Output {
    lab.podprobe(Pod::Client)
        .arg("grpc")
        .args(args)
        .output()
        .unwrap()
}

fn run<'a>(check: &'a serde_json::Value, mode: &str) -> &'a serde_json::Value {
    check["evidence"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mode"] == mode)
        .unwrap_or_else(|| panic!("no {mode} run in {check:#}"))
}

/// Every backend got between 20% and 47% of the run's RPCs.
fn assert_spread(run: &serde_json::Value, rpcs: u64) {
    assert_eq!(run["ok"], rpcs, "{run:#}");
    assert_eq!(run["replicas_seen"], 3, "{run:#}");
    for pod in Pod::BACKENDS {
        let n = run["per_replica"][pod.name()].as_u64().unwrap_or(0);
        assert!(
            n * 100 >= rpcs * 20 && n * 100 <= rpcs * 47,
            "{}: {n} of {rpcs}\n{run:#}",
            pod.name()
        );
    }
}

#[test]
fn lab_clusterip_pins_the_single_channel_to_one_replica_and_fails() {
    let lab = lab();
    let _servers = serve_backends(&lab, &[]);
    let target = Service::Grpc.target();
    let args = [
        target.as_str(),
        "--headless",
        HEADLESS_NAME,
        "--rpcs",
        "300",
    ];
    let out = grpc_in_client(&lab, &[&args[..], &["-o", "json"]].concat());
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report(&out);
    let check = check(&report, "grpc.distribution");
    assert_eq!(check["status"], "fail", "{check:#}");
    assert_eq!(check["evidence"]["endpoints"].as_array().unwrap().len(), 3);
    let single = run(check, "single-channel");
    assert_eq!(single["ok"], 300);
    assert_eq!(single["connections"], 1);
    assert_eq!(single["replicas_seen"], 1);
    assert_eq!(single["max_share"], 1.0);
    let per = run(check, "per-endpoint");
    assert_eq!(per["connections"], 3);
    assert_spread(per, 300);

    // The text report draws the pinning: one full bar, two empty ones.
    let out = grpc_in_client(&lab, &args);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("FAIL  grpc.distribution"), "{text}");
    assert!(text.contains(&"█".repeat(40)), "{text}");
    assert_eq!(text.matches(&"·".repeat(40)).count(), 2, "{text}");
    assert!(text.contains("fix: Make the Service headless"), "{text}");
}

#[test]
fn lab_round_robin_over_the_headless_name_spreads_and_passes() {
    let lab = lab();
    let _servers = serve_backends(&lab, &[]);
    let target = format!("dns:///{HEADLESS_NAME}:{BACKEND_GRPC_PORT}");
    let out = grpc_in_client(&lab, &[&target, "--rpcs", "300", "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report(&out);
    let check = check(&report, "grpc.distribution");
    assert_eq!(check["status"], "pass", "{check:#}");
    assert_spread(run(check, "single-channel"), 300);
    assert_spread(run(check, "per-endpoint"), 300);
}

#[test]
fn lab_backend_dying_mid_run_counts_failed_rpcs_and_ends() {
    let lab = lab();
    let servers = serve_backends(&lab, &["--delay", "20ms"]);
    let victim = servers[1].id() as i32;
    let target = format!("dns:///{HEADLESS_NAME}:{BACKEND_GRPC_PORT}");
    let started = Instant::now();
    let child = lab
        .podprobe(Pod::Client)
        .args(["grpc", &target, "--rpcs", "900", "--concurrency", "6"])
        .args(["--timeout", "1s", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // 900 RPCs of 20 ms, 6 at a time, take about 3 s a run: kill one
    // backend early in the first.
    std::thread::sleep(Duration::from_millis(800));
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report(&out);
    // Still spread over the replicas that answer...
    let distribution = check(&report, "grpc.distribution");
    assert_eq!(distribution["status"], "pass", "{distribution:#}");
    // ...and the dead one named, by the name its answers gave before.
    let endpoints = check(&report, "grpc.endpoints");
    assert_eq!(endpoints["status"], "fail", "{endpoints:#}");
    let summary = endpoints["summary"].as_str().unwrap();
    assert!(
        summary.contains("backend-2 (10.244.0.12:50051)"),
        "{summary}"
    );
    for mode in ["single-channel", "per-endpoint"] {
        let run = run(distribution, mode);
        let (ok, failed, not_sent) = (
            run["ok"].as_u64().unwrap(),
            run["failed"].as_u64().unwrap(),
            run["not_sent"].as_u64().unwrap(),
        );
        assert_eq!(ok + failed + not_sent, 900, "{run:#}");
        // Only the calls in flight at the kill fail: the dead endpoint is
        // skipped after that.
        assert!(ok >= 880 && failed <= 6, "{run:#}");
    }
}

#[test]
fn lab_unknown_host_is_one_line_and_exit_2() {
    let lab = lab();
    let out = grpc_in_client(&lab, &["nosuch.default.svc.cluster.local:50051"]);
    assert_eq!(out.status.code(), Some(2));
    one_line(
        &out,
        "could not resolve host 'nosuch.default.svc.cluster.local'",
    );
}

#[test]
fn lab_doctor_grpc_runs_the_same_check() {
    let lab = lab();
    let _servers = serve_backends(&lab, &[]);
    // The headless name dialed as an ordinary client does: pick_first pins.
    let target = format!("{HEADLESS_NAME}:{BACKEND_GRPC_PORT}");
    let out = lab
        .podprobe(Pod::Client)
        .args(["doctor", "--grpc", &target, "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report(&out);
    let check = check(&report, "grpc.distribution");
    assert_eq!(check["status"], "fail", "{check:#}");
    assert_eq!(run(check, "single-channel")["replicas_seen"], 1);
    assert_eq!(run(check, "per-endpoint")["replicas_seen"], 3);
}

#[test]
fn lab_max_connection_age_makes_the_clusterip_client_reconnect_without_failures() {
    let lab = lab();
    let _servers = serve_backends(&lab, &["--max-connection-age", "100ms"]);
    let target = Service::Grpc.target();
    let out = grpc_in_client(
        &lab,
        &[
            &target,
            "--headless",
            HEADLESS_NAME,
            "--rpcs",
            "2000",
            "--concurrency",
            "4",
            "-o",
            "json",
        ],
    );
    let report = report(&out);
    let check = check(&report, "grpc.distribution");
    assert_ne!(check["status"], "fail", "{check:#}");
    let single = run(check, "single-channel");
    // Calls the server never saw (caught by its GOAWAY) are sent again, not
    // failed: a graceful GOAWAY costs no call.
    assert_eq!(single["failed"], 0, "{single:#}");
    assert_eq!(single["not_sent"], 0, "{single:#}");
    assert!(single["per_connection"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .skip(1)
        .all(|c| c["closed_by"].as_str().unwrap().contains("GOAWAY")));
    assert!(single["connections"].as_u64().unwrap() >= 2, "{single:#}");
    assert!(single["replicas_seen"].as_u64().unwrap() >= 2, "{single:#}");
}
