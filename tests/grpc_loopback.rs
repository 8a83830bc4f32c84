//! `podprobe grpc` on loopback against single real servers: what it says
//! about TLS (private trust, self-signed certificates, --insecure), HTTP/1.x
//! servers of every kind, deadlines, huge runs, Ctrl-C and progress.

#[path = "servers/harness.rs"]
mod harness;
mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::*;

/// A server process on loopback, killed on drop (or on a signal).
struct Local {
    _child: podprobe::cleanup::Killed,
    addr: SocketAddr,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `cmd` (which will listen on `addr`) and waits until it accepts.
fn local(mut cmd: Command, addr: SocketAddr) -> Local {
    let child = podprobe::cleanup::Killed::spawn(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let server = Local {
        _child: child,
        addr,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{cmd:?} never listened");
        std::thread::sleep(Duration::from_millis(30));
    }
    server
}

fn node(args: &[&str]) -> Local {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = Command::new("node");
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/grpc_node_server.js"))
        .args(["--listen", &addr.to_string()])
        .args(args)
        .env("NODE_PATH", node_path());
    local(cmd, addr)
}

/// `podprobe serve` on loopback, its gRPC address.
fn serve(args: &[&str]) -> Local {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--grpc",
        &addr.to_string(),
        "--http",
        "127.0.0.1:0",
    ])
    .args(args);
    local(cmd, addr)
}

fn grpc(args: &[&str]) -> Output {
    Command::new(BIN).arg("grpc").args(args).output().unwrap()
}

/// The JSON report, validated against the schema.
fn json(out: &Output) -> serde_json::Value {
    support::report(out)
}

fn single(report: &serde_json::Value) -> &serde_json::Value {
    run(report, "single-channel")
}

#[test]
fn a_trusted_self_signed_openssl_req_x509_certificate_works() {
    let scratch = Scratch::new();
    // The plain command: CA:TRUE, and no subjectAltName, only CN=localhost.
    let (cert, key) = self_signed(&scratch, "server", "/CN=localhost");
    let server = node(&[
        "--health",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let target = server.addr.to_string();
    let ca = cert.to_str().unwrap();
    let out = grpc(&[
        &target,
        "--ca",
        ca,
        "--authority",
        "localhost",
        "--rpcs",
        "50",
        "-o",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(u(&single(&report)["ok"]), 50);
    let tls = &check(&report, "grpc.distribution")["evidence"]["tls"];
    assert_eq!(tls["server_name"], "localhost");
    assert_eq!(tls["verified"], true);
    // SSL_CERT_FILE stands in for the system's roots, as documented.
    let out = Command::new(BIN)
        .args([
            "grpc",
            &target,
            "--tls",
            "--authority",
            "localhost",
            "--rpcs",
            "5",
        ])
        .env("SSL_CERT_FILE", ca)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The wrong name is refused, with the way out.
    let out = grpc(&[&target, "--ca", ca, "--authority", "example.com"]);
    assert_eq!(out.status.code(), Some(2));
    let line = String::from_utf8_lossy(&out.stderr);
    assert!(
        line.contains("NotValidForName") && line.contains("--authority"),
        "{line}"
    );
    // --insecure: accepted, and said.
    let out = grpc(&[&target, "--insecure", "--rpcs", "5"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("TLS NOT VERIFIED (--insecure)"), "{text}");
    assert!(text.contains("WARN  grpc.endpoints"), "{text}");
}

#[test]
fn http1_servers_of_every_kind_are_named_by_what_they_answer() {
    let scratch = Scratch::new();
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut python = Command::new(python());
    python.args([
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        &port.to_string(),
    ]);
    let mut node_http = Command::new("node");
    let port2 = free_port();
    node_http.args([
        "-e",
        &format!(
            "require('http').createServer((q, s) => s.end('hi')).listen({port2}, '127.0.0.1')"
        ),
    ]);
    let port3 = free_port();
    let conf = scratch.path("nginx.conf");
    std::fs::write(
        &conf,
        nginx_conf(&scratch.dir, &format!("127.0.0.1:{port3}")),
    )
    .unwrap();
    let mut nginx = Command::new("nginx");
    nginx.arg("-p").arg(&scratch.dir).arg("-c").arg(&conf);
    let servers = [
        (local(python, addr), "HTML page"),
        (
            local(node_http, SocketAddr::from(([127, 0, 0, 1], port2))),
            "HTTP/1.1 400 Bad Request",
        ),
        (
            local(nginx, SocketAddr::from(([127, 0, 0, 1], port3))),
            "nginx",
        ),
    ];
    for (server, says) in &servers {
        let out = grpc(&[&server.addr.to_string(), "--rpcs", "10", "-o", "json"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = json(&out);
        let endpoints = check(&report, "grpc.endpoints");
        assert_eq!(endpoints["status"], "fail", "{endpoints:#}");
        let summary = endpoints["summary"].as_str().unwrap();
        assert!(summary.contains("speaks HTTP/1."), "{summary}");
        assert!(summary.contains(says), "{says}: {summary}");
        assert_eq!(u(&single(&report)["not_sent"]), 10);
    }
}

#[test]
fn a_client_deadline_is_a_failed_call_never_a_resend() {
    let server = serve(&["--delay", "400ms"]);
    let target = server.addr.to_string();
    // Whoami takes 400 ms here (its Health answers at once).
    let method = "podprobe.v1.Identity/Whoami";
    let out = grpc(&[
        &target,
        "--method",
        method,
        "--rpcs",
        "6",
        "--concurrency",
        "3",
        "--timeout",
        "100ms",
        "-o",
        "json",
    ]);
    let report = json(&out);
    let run = single(&report);
    assert_eq!(u(&run["failed"]), 6, "{run:#}");
    assert_eq!(u(&run["retried"]), 0, "{run:#}");
    assert!(
        run["errors"].to_string().contains("DEADLINE_EXCEEDED"),
        "{run:#}"
    );
    assert_eq!(check(&report, "grpc.endpoints")["status"], "fail");
}

#[test]
fn counts_stay_exact_with_a_huge_run_and_the_run_limit() {
    let server = serve(&["--name", "solo"]);
    let started = Instant::now();
    let out = grpc(&[
        &server.addr.to_string(),
        "--rpcs",
        "4000000000",
        "--timeout",
        "300ms",
        "-o",
        "json",
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    let run = single(&report);
    let (ok, failed, not_sent) = (u(&run["ok"]), u(&run["failed"]), u(&run["not_sent"]));
    assert_eq!(ok + failed + not_sent, 4_000_000_000, "{run:#}");
    assert!(ok > 100, "{run:#}");
    assert_eq!(failed, 0, "{run:#}");
    assert_eq!(run["stopped"], "run limit of 3s reached");
    assert_eq!(run["not_sent_reasons"]["run stopped after 3s"], not_sent);
    let text = grpc(&[&server.addr.to_string(), "--rpcs", "30"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(", 1 connection,"), "{text}");
    assert!(!text.contains("1 connections"), "{text}");
}

#[test]
fn ctrl_c_stops_sending_and_reports_what_was_measured() {
    let server = serve(&["--name", "solo"]);
    let child = Command::new(BIN)
        .args([
            "grpc",
            &server.addr.to_string(),
            "--rpcs",
            "100000000",
            "--timeout",
            "10s",
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not a terminal: no progress line, nothing on stderr.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(
        check(&report, "grpc.distribution")["evidence"]["interrupted"],
        true
    );
    let run = single(&report);
    assert_eq!(run["stopped"], "interrupted");
    assert_eq!(u(&run["ok"]) + u(&run["not_sent"]), 100_000_000);
    assert_eq!(
        u(&run["not_sent_reasons"]["run interrupted"]),
        u(&run["not_sent"])
    );
}

#[test]
fn progress_shows_on_a_terminal_for_runs_over_a_second() {
    let server = serve(&["--name", "solo"]);
    // script(1) gives the command a terminal; its output is what it drew.
    let command = format!(
        "{BIN} grpc {} --rpcs 1000000 --timeout 300ms -o json >/dev/null",
        server.addr
    );
    let out = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .output()
        .unwrap();
    let drawn = String::from_utf8_lossy(&out.stdout);
    assert!(drawn.contains("podprobe grpc: single-channel: "), "{drawn}");
    assert!(drawn.contains("/1000000 RPCs, "), "{drawn}");
    assert!(drawn.contains("/s, 0 failed"), "{drawn}");
    // The line is cleared before the report.
    assert!(drawn.contains("\r\x1b[K"), "{drawn}");
}

#[test]
fn a_server_without_whoami_or_health_is_probed_by_method_or_by_its_unimplemented_answer() {
    let server = node(&[]);
    let target = server.addr.to_string();
    let out = grpc(&[&target, "--rpcs", "20", "-o", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    let evidence = &check(&report, "grpc.distribution")["evidence"];
    assert_eq!(evidence["rpc"], "unimplemented");
    assert_eq!(single(&report)["statuses"]["UNIMPLEMENTED"], 20);
    let out = grpc(&[
        &target,
        "--method",
        "helloworld.Greeter/SayHello",
        "--rpcs",
        "20",
        "-o",
        "json",
    ]);
    let report = json(&out);
    let evidence = &check(&report, "grpc.distribution")["evidence"];
    assert_eq!(evidence["rpc"], "method");
    assert_eq!(evidence["method"], "/helloworld.Greeter/SayHello");
    assert_eq!(single(&report)["statuses"]["OK"], 20);
    let out = grpc(&[&target, "--method", "not a method"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn nothing_reachable_is_one_line_and_exit_3() {
    let port = free_port();
    let out = grpc(&[&format!("127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot reach") && stderr.contains("Connection refused"),
        "{stderr}"
    );
}
