//! `podprobe serve` and `podprobe grpc`, driven as the real binary against
//! real servers on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_podprobe");

/// A running `podprobe serve`, stopped (SIGTERM, then SIGKILL) on drop.
struct Serve {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Serve {
    fn start(ip: &str, grpc_port: u16, extra: &[&str]) -> Serve {
        let mut child = Command::new(BIN)
            .args(["serve", "--grpc", &format!("{ip}:{grpc_port}")])
            .args(["--http", &format!("{ip}:0")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
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

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
