//! `podprobe keepalive` against real HTTP servers on loopback (Node.js,
//! nginx, uvicorn, Python's http.server, Apache, lighttpd, HAProxy, Caddy,
//! Tomcat, aiohttp) and an Envoy admin API test double that replays real
//! config dumps and stats (Envoy itself cannot run here).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/envoy");
const TESTENV: &str = "/opt/podprobe-testenv";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(name)).unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port where nothing listens: an admin API that does not answer.
fn closed_admin() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// A temporary directory removed on drop, or on a signal.
struct TempDir(PathBuf, #[allow(dead_code)] podprobe::cleanup::Cleanup);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "podprobe-keepalive-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let removal = podprobe::cleanup::removing(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir, removal)
    }
}

/// A real server process on 127.0.0.1:port, killed on drop (or on a signal).
struct Server {
    child: podprobe::cleanup::Killed,
    port: u16,
    _dir: TempDir,
}

impl Server {
    fn start(dir: TempDir, port: u16, cmd: &mut Command) -> Server {
        Server::start_until(dir, port, cmd, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
    }

    /// Starts `cmd` and waits until `ready` (at most 15 s).
    fn start_until(dir: TempDir, port: u16, cmd: &mut Command, ready: impl Fn() -> bool) -> Server {
        let child = podprobe::cleanup::Killed::spawn(
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let server = Server {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !ready() {
            assert!(Instant::now() < deadline, "{cmd:?} not listening on {port}");
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("{cmd:?} exited: {status}");
            }
            thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn upstream(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Node's http server; `keep_alive_ms` sets `server.keepAliveTimeout`.
/// Returns it with the seconds it really keeps an idle connection open:
/// recent Node adds a 1 s buffer to what it advertises, older Node (such as
/// Debian 12's) does not, so the script reads its own http server source.
fn node(keep_alive_ms: Option<u32>) -> (Server, f64) {
    let dir = TempDir::new("node");
    let script = dir.0.join("server.js");
    let buffer_file = dir.0.join("buffer_ms");
    std::fs::write(
        &script,
        r#"const http = require('http');
const fs = require('fs');
const [port, bufferFile, keepAlive] = process.argv.slice(2);
const s = http.createServer((req, res) => res.end('ok\n'));
if (keepAlive) s.keepAliveTimeout = Number(keepAlive);
let buffer = 0;
if (typeof s.keepAliveTimeoutBuffer === 'number') {
  buffer = s.keepAliveTimeoutBuffer;
} else {
  const src = process.binding('natives')._http_server;
  if (/HTTP_SERVER_KEEP_ALIVE_TIMEOUT_BUFFER/.test(src)) buffer = 1000;
}
fs.writeFileSync(bufferFile, String(s.keepAliveTimeout + buffer));
s.listen(Number(port), '127.0.0.1');
"#,
    )
    .unwrap();
    let port = free_port();
    let mut cmd = Command::new("node");
    cmd.arg(&script).arg(port.to_string()).arg(&buffer_file);
    if let Some(ms) = keep_alive_ms {
        cmd.arg(ms.to_string());
    }
    let server = Server::start(dir, port, &mut cmd);
    let wire_ms: f64 = std::fs::read_to_string(&buffer_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (server, wire_ms / 1000.0)
}

/// nginx (Debian's) with `keepalive_timeout 3s`.
fn nginx_3s() -> Server {
    let dir = TempDir::new("nginx");
    let port = free_port();
    let mut cmd = nginx_3s_on(&dir, &format!("127.0.0.1:{port}"), Command::new("nginx"));
    Server::start(dir, port, &mut cmd)
}

/// `nginx` (a command that runs it) set up in `dir` to listen on `listen`.
fn nginx_3s_on(dir: &TempDir, listen: &str, mut cmd: Command) -> Command {
    let d = dir.0.display();
    std::fs::write(
        dir.0.join("nginx.conf"),
        format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               keepalive_timeout 3s;\n\
               server {{ listen {listen}; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n"
        ),
    )
    .unwrap();
    cmd.arg("-p")
        .arg(&dir.0)
        .arg("-e")
        .arg(dir.0.join("error.log"))
        .arg("-c")
        .arg(dir.0.join("nginx.conf"));
    cmd
}

/// uvicorn from PyPI (in the test venv scripts/setup makes), with a minimal
/// ASGI app; `keep_alive_s` sets `--timeout-keep-alive`.
fn uvicorn(keep_alive_s: Option<u32>) -> Server {
    let dir = TempDir::new("uvicorn");
    std::fs::write(
        dir.0.join("app.py"),
        "async def app(scope, receive, send):\n\
         \x20   await send({'type': 'http.response.start', 'status': 200, 'headers': [(b'content-type', b'text/plain')]})\n\
         \x20   await send({'type': 'http.response.body', 'body': b'ok\\n'})\n",
    )
    .unwrap();
    let port = free_port();
    let mut cmd = Command::new(format!("{TESTENV}/bin/uvicorn"));
    cmd.arg("--app-dir")
        .arg(&dir.0)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--lifespan", "off", "--log-level", "warning"]);
    if let Some(s) = keep_alive_s {
        cmd.args(["--timeout-keep-alive", &s.to_string()]);
    }
    cmd.arg("app:app");
    Server::start(dir, port, &mut cmd)
}

/// Python's http.server: HTTP/1.0, closes after every response.
fn python_http_server() -> Server {
    let dir = TempDir::new("python");
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ])
    .current_dir(&dir.0);
    Server::start(dir, port, &mut cmd)
}

/// A stand-in for Envoy's admin API: a real HTTP/1.1 server on loopback
/// that serves fixed bodies by path (and query).
fn admin_double(routes: Vec<(&'static str, &'static str, String)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let routes = routes.clone();
            thread::spawn(move || {
                let head = read_head(&mut conn);
                let target = head.split(' ').nth(1).unwrap_or("/").to_string();
                let path = target.split('?').next().unwrap_or("/");
                let found = routes
                    .iter()
                    .find(|(p, _, _)| *p == target)
                    .or_else(|| routes.iter().find(|(p, _, _)| *p == path));
                let (status, ctype, body) = match found {
                    Some((_, ctype, body)) => ("200 OK", *ctype, body.as_str()),
                    None => ("404 Not Found", "text/plain", "invalid path\n"),
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    url
}

/// The DeathStarBench sidecar dump with its inbound cluster moved to
/// `port`, optionally with an idle_timeout on it (where Istio puts it).
fn sidecar_dump(port: u16, idle_timeout: Option<&str>) -> String {
    let mut dump: Value =
        serde_json::from_str(&fixture("istio-1.18-deathstarbench-config_dump.json")).unwrap();
    let mut moved = false;
    for config in dump["configs"].as_array_mut().unwrap() {
        let Some(list) = config.get_mut("dynamic_active_clusters") else {
            continue;
        };
        for entry in list.as_array_mut().unwrap() {
            let cluster = &mut entry["cluster"];
            if cluster["name"] == "inbound|8083||" {
                cluster["name"] = format!("inbound|{port}||").into();
                if let Some(t) = idle_timeout {
                    cluster["typed_extension_protocol_options"]
                        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
                        ["common_http_protocol_options"] = serde_json::json!({ "idle_timeout": t });
                }
                moved = true;
            }
        }
    }
    assert!(moved, "the inbound cluster moved");
    serde_json::to_string_pretty(&dump).unwrap()
}

struct Run {
    code: i32,
    json: Value,
    stderr: String,
    took: Duration,
}

impl Run {
    fn check(&self) -> &Value {
        &self.json["checks"][0]
    }

    fn evidence(&self, key: &str) -> &Value {
        &self.check()["evidence"][key]
    }

    fn status(&self) -> &str {
        self.check()["status"].as_str().unwrap_or("")
    }
}

fn podprobe(args: &[&str]) -> Run {
    let start = Instant::now();
    let out = support::podprobe()
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    if !json.is_null() {
        support::assert_valid_report(&json);
    }
    Run {
        code: out.status.code().unwrap_or(-1),
        json,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

fn keepalive(upstream: &str, extra: &[&str]) -> Run {
    let mut args = vec!["keepalive", upstream];
    args.extend_from_slice(extra);
    podprobe(&args)
}

fn assert_near(value: &Value, expected: f64, run: &Run) {
    let got = value
        .as_f64()
        .unwrap_or_else(|| panic!("no number: {:#}\n{}", run.json, run.stderr));
    assert!(
        (got - expected).abs() <= 0.3,
        "measured {got} s, expected {expected} ± 0.3 s: {:#}",
        run.check()
    );
}

fn assert_samples_near(run: &Run, expected: f64) {
    let samples = run.evidence("samples_s").as_array().unwrap();
    assert_eq!(samples.len(), 4, "{:#}", run.check());
    for s in samples {
        assert_near(s, expected, run);
    }
}

// ---- the app's idle timeout, measured on the wire ----

#[test]
fn node_default_keepalive_timeout() {
    let (server, wire_s) = node(None);
    let admin = closed_admin();
    let run = keepalive(
        &server.upstream(),
        &["--max-wait", "10s", "--envoy-admin", &admin],
    );
    // Recent Node advertises keepAliveTimeout (5 s) and closes 1 s later.
    assert_near(run.evidence("app_idle_timeout_s"), wire_s, &run);
    assert_samples_near(&run, wire_s);
    assert_eq!(run.evidence("advertised_keepalive_s"), 5.0);
    assert_eq!(run.evidence("closed_by"), "fin");
    assert_eq!(run.evidence("http_version"), "HTTP/1.1");
    assert_eq!(run.evidence("upstream"), server.upstream().as_str());
}

#[test]
fn node_explicit_keepalive_timeout() {
    let (server, wire_s) = node(Some(2000));
    let run = keepalive(
        &server.upstream(),
        &["--max-wait", "10s", "--envoy-admin", &closed_admin()],
    );
    assert_near(run.evidence("app_idle_timeout_s"), wire_s, &run);
    assert_samples_near(&run, wire_s);
    assert_eq!(run.evidence("advertised_keepalive_s"), 2.0);
}

#[test]
fn nginx_3s_without_admin_warns_with_the_assumed_default() {
    let server = nginx_3s();
    let run = keepalive(
        &server.upstream(),
        &["--max-wait", "10s", "--envoy-admin", &closed_admin()],
    );
    assert_near(run.evidence("app_idle_timeout_s"), 3.0, &run);
    assert_samples_near(&run, 3.0);
    // nginx says nothing about its timeout unless told to.
    assert_eq!(run.evidence("advertised_keepalive_s"), &Value::Null);
    assert_eq!(run.status(), "warn", "{:#}", run.check());
    assert_eq!(run.code, 0);
    assert_eq!(run.evidence("proxy"), "none");
    assert_eq!(run.evidence("proxy_source"), "default");
    assert_eq!(run.evidence("proxy_idle_timeout_s"), 3600.0);
    let summary = run.check()["summary"].as_str().unwrap();
    assert!(summary.contains("assumption"), "{summary}");
    let remedy = run.check()["remedy"].to_string();
    assert!(remedy.contains("idleTimeout: 2s"), "{remedy}");
    assert!(remedy.contains("keepalive_timeout"), "{remedy}");
    assert!(
        run.stderr.contains("waiting"),
        "progress on stderr: {}",
        run.stderr
    );
}

#[test]
fn nginx_3s_behind_a_sidecar_without_idle_timeout_fails() {
    let server = nginx_3s();
    let dump = sidecar_dump(server.port, None);
    let admin = admin_double(vec![
        ("/config_dump", "application/json", dump),
        (
            "/stats",
            "text/plain",
            fixture("kuma-envoy-stats-prometheus.txt"),
        ),
    ]);
    let run = keepalive(
        &server.upstream(),
        &["--max-wait", "10s", "--envoy-admin", &admin],
    );
    assert_eq!(run.status(), "fail", "{:#}", run.check());
    assert_eq!(run.code, 1);
    assert_eq!(run.evidence("proxy"), "envoy");
    assert_eq!(
        run.evidence("cluster"),
        format!("inbound|{}||", server.port).as_str()
    );
    assert_eq!(run.evidence("proxy_source"), "config_dump");
    assert_eq!(run.evidence("proxy_idle_timeout_s"), 3600.0);
    // The stats have no series for this cluster: said, not invented.
    assert_eq!(run.evidence("counters"), &serde_json::json!({}));
    assert!(run
        .evidence("notes")
        .to_string()
        .contains("proxyStatsMatcher"));
    assert!(run.check()["remedy"]
        .to_string()
        .contains("host: geo.hr2.svc.cluster.local"));
}

#[test]
fn uvicorn_default_against_a_saved_dump_saying_2s_passes() {
    let server = uvicorn(None);
    let dir = TempDir::new("dump");
    let file = dir.0.join("config_dump.json");
    std::fs::write(&file, sidecar_dump(server.port, Some("2s"))).unwrap();
    let run = keepalive(
        &server.upstream(),
        &["--max-wait", "10s", "--config-dump", file.to_str().unwrap()],
    );
    assert_near(run.evidence("app_idle_timeout_s"), 5.0, &run);
    assert_samples_near(&run, 5.0);
    assert_eq!(run.status(), "pass", "{:#}", run.check());
    assert_eq!(run.code, 0);
    assert_eq!(run.evidence("proxy_idle_timeout_s"), 2.0);
    assert_eq!(run.evidence("proxy_source"), "config_dump");
    assert_eq!(run.evidence("config_from"), file.to_str().unwrap());
}

#[test]
fn uvicorn_timeout_keep_alive_2() {
    let server = uvicorn(Some(2));
    let run = keepalive(
        &server.upstream(),
        &["--max-wait", "10s", "--envoy-admin", &closed_admin()],
    );
    assert_near(run.evidence("app_idle_timeout_s"), 2.0, &run);
    assert_samples_near(&run, 2.0);
    assert_eq!(run.evidence("server"), "uvicorn");
    assert!(run.check()["remedy"]
        .to_string()
        .contains("uvicorn --timeout-keep-alive"));
}

#[test]
fn counters_fail_even_when_the_timeouts_look_right() {
    let (server, wire_s) = node(None);
    let cluster = format!("inbound|{}||", server.port);
    let stats = fixture("kuma-envoy-stats-prometheus.txt").replace(
        "envoy_cluster_name=\"example\"",
        &format!("envoy_cluster_name=\"{cluster}\""),
    );
    let admin = admin_double(vec![
        (
            "/config_dump",
            "application/json",
            sidecar_dump(server.port, Some("2s")),
        ),
        (
            "/stats?format=prometheus",
            "text/plain; version=0.0.4",
            stats,
        ),
    ]);
    let run = keepalive(
        &server.upstream(),
        &["--max-wait", "10s", "--envoy-admin", &admin],
    );
    assert_near(run.evidence("app_idle_timeout_s"), wire_s, &run);
    assert_eq!(run.evidence("proxy_idle_timeout_s"), 2.0);
    assert_eq!(
        run.evidence("counters")["upstream_cx_destroy_remote_with_active_rq"],
        1
    );
    assert_eq!(run.status(), "fail", "{:#}", run.check());
    assert!(run.check()["summary"]
        .as_str()
        .unwrap()
        .contains("it is happening"));
}

#[test]
fn python_http_server_closes_immediately_and_passes() {
    let server = python_http_server();
    let admin = admin_double(vec![(
        "/config_dump",
        "application/json",
        sidecar_dump(server.port, None),
    )]);
    let run = keepalive(&server.upstream(), &["--envoy-admin", &admin]);
    assert_eq!(run.evidence("closed_by"), "immediate", "{:#}", run.check());
    assert_eq!(run.evidence("http_version"), "HTTP/1.0");
    assert_eq!(run.status(), "pass", "{:#}", run.check());
    assert!(run.took < Duration::from_secs(5), "took {:?}", run.took);
}

#[test]
fn doctor_runs_the_check_for_upstream() {
    let server = python_http_server();
    let admin = closed_admin();
    let run = podprobe(&[
        "doctor",
        "--upstream",
        &server.upstream(),
        "--envoy-admin",
        &admin,
        "--max-wait",
        "5s",
    ]);
    let check = support::check(&run.json, "http.keepalive-mismatch");
    assert_eq!(check["status"], "pass", "{check:#}");
    assert_eq!(check["evidence"]["closed_by"], "immediate");
}

// ---- bad servers and bad input: clear errors, bounded waits ----

/// Reads a request head, byte by byte, up to its blank line.
fn read_head(conn: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A TCP server that accepts and then does `behave` with each connection.
fn raw_server(behave: fn(TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            thread::spawn(move || behave(conn));
        }
    });
    addr
}

#[test]
fn a_server_that_never_answers_is_an_error_within_the_timeout() {
    let upstream = raw_server(|conn| {
        thread::sleep(Duration::from_secs(30));
        drop(conn);
    });
    let run = keepalive(
        &upstream,
        &["--timeout", "1s", "--envoy-admin", &closed_admin()],
    );
    assert_eq!(run.status(), "error", "{:#}", run.json);
    assert_eq!(run.code, 3);
    assert!(
        run.check()["summary"].as_str().unwrap().contains("in time"),
        "{:#}",
        run.check()
    );
    assert!(run.took < Duration::from_secs(5), "took {:?}", run.took);
}

#[test]
fn a_garbage_response_is_an_error() {
    let upstream = raw_server(|mut conn| {
        let _ = conn.write_all(b"SSH-2.0-OpenSSH_9.2p1\r\n");
        thread::sleep(Duration::from_secs(30));
    });
    let run = keepalive(&upstream, &["--envoy-admin", &closed_admin()]);
    assert_eq!(run.status(), "error", "{:#}", run.json);
    let summary = run.check()["summary"].as_str().unwrap();
    assert!(
        summary.contains("did not answer with HTTP/1.x") && summary.contains("SSH-2.0"),
        "{summary}"
    );
    assert!(run.took < Duration::from_secs(2), "took {:?}", run.took);
}

#[test]
fn an_admin_endpoint_returning_html_is_no_envoy() {
    let server = python_http_server();
    let admin = admin_double(vec![(
        "/config_dump",
        "text/html",
        "<!DOCTYPE html><html><body>Not Envoy</body></html>".to_string(),
    )]);
    let run = keepalive(&server.upstream(), &["--envoy-admin", &admin]);
    assert_eq!(run.evidence("proxy"), "none");
    assert_eq!(run.evidence("proxy_source"), "default");
    assert!(
        run.evidence("notes")
            .to_string()
            .contains("did not return an Envoy config dump"),
        "{:#}",
        run.check()
    );
}

#[test]
fn bad_input_exits_2_with_one_line() {
    for args in [
        vec!["keepalive", "no-port"],
        vec!["keepalive", "127.0.0.1:1", "--max-wait", "soon"],
        vec!["keepalive", "127.0.0.1:1", "--path", "no-slash"],
        vec![
            "keepalive",
            "127.0.0.1:1",
            "--config-dump",
            "/nonexistent/dump.json",
        ],
        vec![
            "keepalive",
            "127.0.0.1:1",
            "--config-dump",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/envoy/kuma-envoy-stats-prometheus.txt"
            ),
        ],
    ] {
        let out = support::podprobe().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("podprobe: "), "{args:?}: {stderr}");
    }
}

#[test]
fn a_reset_is_reported_as_rst() {
    let upstream = raw_server(|mut conn| {
        read_head(&mut conn);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
        thread::sleep(Duration::from_secs(1));
        // Linger 0: close with a RST, as servers under load sometimes do.
        let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
    });
    let run = keepalive(
        &upstream,
        &["--max-wait", "5s", "--envoy-admin", &closed_admin()],
    );
    assert_eq!(run.evidence("closed_by"), "rst", "{:#}", run.check());
    assert_near(run.evidence("app_idle_timeout_s"), 1.0, &run);
}

#[test]
fn an_app_outliving_max_wait_warns_when_envoy_waits_longer() {
    let (server, _) = node(None);
    let admin = admin_double(vec![(
        "/config_dump",
        "application/json",
        sidecar_dump(server.port, None),
    )]);
    let run = keepalive(
        &server.upstream(),
        &["--max-wait", "1s", "--envoy-admin", &admin],
    );
    assert_eq!(run.status(), "warn", "{:#}", run.check());
    assert_eq!(run.evidence("closed_by"), "none");
    assert_eq!(run.evidence("app_idle_timeout_s"), &Value::Null);
    assert_eq!(
        run.evidence("samples_s"),
        &serde_json::json!([null, null, null, null])
    );
    assert!(run.check()["remedy"].to_string().contains("--max-wait"));
    assert!(run.took < Duration::from_secs(4), "took {:?}", run.took);
}

#[test]
fn an_app_outliving_max_wait_passes_when_envoy_idles_out_first() {
    let (server, _) = node(None);
    let admin = admin_double(vec![(
        "/config_dump",
        "application/json",
        sidecar_dump(server.port, Some("1s")),
    )]);
    let run = keepalive(
        &server.upstream(),
        &["--max-wait", "2.5s", "--envoy-admin", &admin],
    );
    assert_eq!(run.status(), "pass", "{:#}", run.check());
    assert_eq!(run.evidence("closed_by"), "none");
    assert_eq!(run.evidence("proxy_idle_timeout_s"), 1.0);
}

#[test]
fn a_silent_admin_endpoint_is_no_envoy_within_the_timeout() {
    let server = python_http_server();
    let admin = format!(
        "http://{}",
        raw_server(|conn| {
            thread::sleep(Duration::from_secs(30));
            drop(conn);
        })
    );
    let run = keepalive(
        &server.upstream(),
        &["--timeout", "1s", "--envoy-admin", &admin],
    );
    assert_eq!(run.evidence("proxy"), "none", "{:#}", run.check());
    assert!(
        run.evidence("notes")
            .to_string()
            .contains("no answer in time"),
        "{:#}",
        run.check()
    );
    assert!(run.took < Duration::from_secs(4), "took {:?}", run.took);
}

#[test]
fn podprobe_serve_http_idle_timeout() {
    let dir = TempDir::new("serve");
    let port = free_port();
    let mut cmd = support::podprobe();
    cmd.args(["serve", "--grpc", &format!("127.0.0.1:{}", free_port())])
        .args(["--http", &format!("127.0.0.1:{port}")])
        .args(["--http-idle-timeout", "2s"]);
    let server = Server::start(dir, port, &mut cmd);
    let run = keepalive(
        &server.upstream(),
        &["--max-wait", "10s", "--envoy-admin", &closed_admin()],
    );
    assert_near(run.evidence("app_idle_timeout_s"), 2.0, &run);
    assert_samples_near(&run, 2.0);
    assert_eq!(run.evidence("advertised_keepalive_s"), 2.0);
    assert_eq!(run.evidence("closed_by"), "fin");
}

// ---- more real servers, each with its own idle timeout configured ----

/// The check's remedy lines as one string.
fn remedy(run: &Run) -> String {
    run.check()["remedy"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts the shortest sample within 0.1 s of `expected` and the server
/// identified, with the fix naming its setting.
fn assert_measured(run: &Run, expected: f64, kind: &str, setting: &str) {
    let got = run
        .evidence("app_idle_timeout_s")
        .as_f64()
        .unwrap_or_else(|| panic!("no measurement: {:#}\n{}", run.json, run.stderr));
    assert!(
        (got - expected).abs() <= 0.1,
        "measured {got} s, configured {expected} s: {:#}",
        run.check()
    );
    assert_eq!(run.evidence("server_kind"), kind, "{:#}", run.check());
    assert!(remedy(run).contains(setting), "{setting}: {}", remedy(run));
}

/// Apache httpd (Debian's), one process, `KeepAliveTimeout 5`.
fn apache(keep_alive_s: u32) -> Server {
    let dir = TempDir::new("apache");
    let port = free_port();
    let d = dir.0.display();
    std::fs::create_dir_all(dir.0.join("www")).unwrap();
    std::fs::write(dir.0.join("www/index.html"), "ok\n").unwrap();
    std::fs::write(
        dir.0.join("httpd.conf"),
        format!(
            "ServerRoot {d}\nServerName localhost\nListen 127.0.0.1:{port}\n\
             LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so\n\
             LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so\n\
             User nobody\nGroup nogroup\nPidFile {d}/httpd.pid\nErrorLog {d}/error.log\n\
             Mutex file:{d} default\nDocumentRoot {d}/www\n\
             KeepAlive On\nKeepAliveTimeout {keep_alive_s}\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("apache2");
    cmd.arg("-X").arg("-f").arg(dir.0.join("httpd.conf"));
    Server::start(dir, port, &mut cmd)
}

/// lighttpd (Debian's) with `server.max-keep-alive-idle`.
fn lighttpd(idle_s: u32) -> Server {
    let dir = TempDir::new("lighttpd");
    let port = free_port();
    std::fs::write(dir.0.join("index.html"), "ok\n").unwrap();
    std::fs::write(
        dir.0.join("lighttpd.conf"),
        format!(
            "server.document-root = \"{}\"\nserver.bind = \"127.0.0.1\"\nserver.port = {port}\n\
             index-file.names = ( \"index.html\" )\nserver.max-keep-alive-idle = {idle_s}\n",
            dir.0.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("lighttpd");
    cmd.arg("-D").arg("-f").arg(dir.0.join("lighttpd.conf"));
    Server::start(dir, port, &mut cmd)
}

/// HAProxy (Debian's) answering itself, `timeout http-keep-alive`.
fn haproxy(keep_alive_s: u32) -> Server {
    let dir = TempDir::new("haproxy");
    let port = free_port();
    std::fs::write(
        dir.0.join("haproxy.cfg"),
        format!(
            "global\n  maxconn 100\ndefaults\n  mode http\n  timeout client 30s\n  timeout connect 5s\n\
             \x20 timeout server 30s\n  timeout http-keep-alive {keep_alive_s}s\n\
             frontend fe\n  bind 127.0.0.1:{port}\n  http-request return status 200 content-type text/plain string ok\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(dir.0.join("haproxy.cfg"));
    Server::start(dir, port, &mut cmd)
}

/// Caddy (Debian's) with `servers { timeouts { idle } }`; with `tls` the
/// site is HTTPS (Caddy's internal CA), for the plain-request-to-TLS case.
fn caddy(idle_s: u32, tls: bool) -> Server {
    let dir = TempDir::new("caddy");
    let port = free_port();
    let site = if tls {
        format!("https://127.0.0.1:{port} {{\n  tls internal\n  respond \"ok\"\n}}\n")
    } else {
        format!("http://127.0.0.1:{port} {{\n  respond \"ok\"\n}}\n")
    };
    std::fs::write(
        dir.0.join("Caddyfile"),
        format!(
            "{{\n  admin off\n  auto_https disable_redirects\n  skip_install_trust\n  \
             servers {{\n    timeouts {{\n      idle {idle_s}s\n    }}\n  }}\n}}\n{site}"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("caddy");
    cmd.args(["run", "--adapter", "caddyfile", "--config"])
        .arg(dir.0.join("Caddyfile"))
        .env("HOME", &dir.0)
        .env("XDG_DATA_HOME", dir.0.join("data"))
        .env("XDG_CONFIG_HOME", dir.0.join("config"));
    Server::start(dir, port, &mut cmd)
}

/// Tomcat 10 (Debian's) with `keepAliveTimeout` on its Connector.
fn tomcat(keep_alive_ms: u32) -> Server {
    let dir = TempDir::new("tomcat");
    let port = free_port();
    for sub in ["conf", "webapps/ROOT", "logs", "temp", "work"] {
        std::fs::create_dir_all(dir.0.join(sub)).unwrap();
    }
    std::fs::copy("/etc/tomcat10/web.xml", dir.0.join("conf/web.xml")).unwrap();
    std::fs::write(dir.0.join("webapps/ROOT/index.html"), "ok\n").unwrap();
    std::fs::write(
        dir.0.join("conf/server.xml"),
        format!(
            "<Server port=\"-1\" shutdown=\"SHUTDOWN\">\n  <Service name=\"Catalina\">\n    \
             <Connector port=\"{port}\" address=\"127.0.0.1\" protocol=\"HTTP/1.1\" keepAliveTimeout=\"{keep_alive_ms}\" connectionTimeout=\"20000\"/>\n    \
             <Engine name=\"Catalina\" defaultHost=\"localhost\">\n      \
             <Host name=\"localhost\" appBase=\"webapps\" unpackWARs=\"false\" autoDeploy=\"false\"/>\n    \
             </Engine>\n  </Service>\n</Server>\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("/usr/share/tomcat10/bin/catalina.sh");
    cmd.arg("run")
        .env("CATALINA_HOME", "/usr/share/tomcat10")
        .env("CATALINA_BASE", &dir.0)
        .env("CATALINA_TMPDIR", dir.0.join("temp"));
    // Tomcat opens its port before it has deployed the application.
    Server::start_until(dir, port, &mut cmd, || answers_200(port, "/index.html"))
}

/// A GET on 127.0.0.1:port answers 200.
fn answers_200(port: u16, path: &str) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(conn, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// aiohttp from PyPI (in the test venv) with `keepalive_timeout`.
fn aiohttp(keepalive_s: f64) -> Server {
    let dir = TempDir::new("aiohttp");
    let port = free_port();
    std::fs::write(
        dir.0.join("app.py"),
        format!(
            "from aiohttp import web\n\
             async def ok(request):\n    return web.Response(text='ok')\n\
             app = web.Application()\napp.router.add_get('/', ok)\n\
             web.run_app(app, host='127.0.0.1', port={port}, keepalive_timeout={keepalive_s}, print=None)\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(format!("{TESTENV}/bin/python"));
    cmd.arg(dir.0.join("app.py"));
    Server::start(dir, port, &mut cmd)
}

fn measure(server: &Server, path: &str) -> Run {
    keepalive(
        &server.upstream(),
        &[
            "--path",
            path,
            "--max-wait",
            "12s",
            "--envoy-admin",
            &closed_admin(),
        ],
    )
}

#[test]
fn apache_keep_alive_timeout() {
    let server = apache(5);
    let run = measure(&server, "/index.html");
    assert_measured(&run, 5.0, "apache", "KeepAliveTimeout 3605");
    assert_eq!(run.evidence("advertised_keepalive_s"), 5.0);
}

#[test]
fn lighttpd_closes_on_its_tick_and_is_judged_on_the_earliest() {
    let server = lighttpd(4);
    let run = measure(&server, "/index.html");
    // lighttpd sweeps idle connections once a second, in whole seconds:
    // a connection closes after 4 s and before 6 s.
    let got = run.evidence("app_idle_timeout_s").as_f64().unwrap();
    assert!((4.0..6.0).contains(&got), "{:#}", run.check());
    assert_eq!(run.evidence("server_kind"), "lighttpd");
    assert!(
        remedy(&run).contains("server.max-keep-alive-idle = 3605"),
        "{}",
        remedy(&run)
    );
    // The idle timeout podprobe recommends for Envoy stays clear of the
    // earliest close lighttpd can make (the configured 4 s) by a margin.
    let idle = remedy(&run)
        .split("idleTimeout: ")
        .nth(1)
        .and_then(|s| s.split('s').next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{}", remedy(&run)));
    assert!(
        idle <= 3.0,
        "idleTimeout {idle}s for a 4 s lighttpd: {}",
        remedy(&run)
    );
}

#[test]
fn haproxy_timeout_http_keep_alive() {
    let server = haproxy(7);
    let run = measure(&server, "/");
    assert_measured(&run, 7.0, "haproxy", "timeout http-keep-alive 3605s");
}

#[test]
fn caddy_servers_timeouts_idle() {
    let server = caddy(3, false);
    let run = measure(&server, "/");
    assert_measured(&run, 3.0, "caddy", "timeouts { idle 3605s }");
}

#[test]
fn tomcat_keep_alive_timeout_on_the_connector() {
    let server = tomcat(4000);
    let run = measure(&server, "/index.html");
    // No Server header: told apart from Node by its behaviour.
    assert_eq!(run.evidence("server"), &Value::Null, "{:#}", run.check());
    assert_eq!(
        run.evidence("advertised_keepalive_s"),
        4.0,
        "{:#}",
        run.check()
    );
    assert_measured(
        &run,
        4.0,
        "tomcat",
        "keepAliveTimeout=\"3605000\" on the <Connector>",
    );
}

#[test]
fn aiohttp_keepalive_timeout() {
    let server = aiohttp(3.5);
    let run = measure(&server, "/");
    assert_measured(&run, 3.5, "aiohttp", "keepalive_timeout=3605");
}

// ---- answers that measure nothing are errors naming what answered ----

#[test]
fn an_https_port_answering_400_is_an_error() {
    let server = caddy(3, true);
    let run = measure(&server, "/");
    assert_eq!(run.status(), "error", "{:#}", run.json);
    assert_eq!(run.code, 3);
    let summary = run.check()["summary"].as_str().unwrap();
    assert!(
        summary.contains("is an HTTPS port")
            && summary.contains("Client sent an HTTP request to an HTTPS server"),
        "{summary}"
    );
}

#[test]
fn an_http2_only_server_is_an_error() {
    let dir = TempDir::new("h2");
    let port = free_port();
    let mut cmd = support::podprobe();
    cmd.args(["serve", "--grpc", &format!("127.0.0.1:{port}")]);
    let server = Server::start(dir, port, &mut cmd);
    let run = measure(&server, "/");
    assert_eq!(run.status(), "error", "{:#}", run.json);
    let summary = run.check()["summary"].as_str().unwrap();
    assert!(summary.contains("HTTP/2"), "{summary}");
}

#[test]
fn a_tls_alert_is_an_error() {
    let upstream = raw_server(|mut conn| {
        let mut byte = [0u8; 1];
        let _ = conn.read(&mut byte);
        // A TLS 1.2 fatal alert: what a TLS-only server sends to plain text.
        let _ = conn.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46]);
        thread::sleep(Duration::from_secs(2));
    });
    let run = keepalive(&upstream, &["--envoy-admin", &closed_admin()]);
    assert_eq!(run.status(), "error", "{:#}", run.json);
    let summary = run.check()["summary"].as_str().unwrap();
    assert!(summary.contains("TLS alert"), "{summary}");
}

#[test]
fn bare_lf_responses_are_read() {
    let upstream = raw_server(|mut conn| {
        read_head(&mut conn);
        let _ =
            conn.write_all(b"HTTP/1.1 200 OK\nContent-Length: 3\nKeep-Alive: timeout=1\n\nok\n");
        thread::sleep(Duration::from_secs(1));
    });
    let run = keepalive(
        &upstream,
        &["--max-wait", "5s", "--envoy-admin", &closed_admin()],
    );
    assert_eq!(
        run.evidence("advertised_keepalive_s"),
        1.0,
        "{:#}",
        run.json
    );
    assert_near(run.evidence("app_idle_timeout_s"), 1.0, &run);
}

#[test]
fn an_answer_through_envoy_is_not_the_apps() {
    let upstream = raw_server(|mut conn| {
        read_head(&mut conn);
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-envoy-upstream-service-time: 1\r\nserver: envoy\r\n\r\nok\n");
        thread::sleep(Duration::from_secs(1));
    });
    let run = keepalive(
        &upstream,
        &["--max-wait", "5s", "--envoy-admin", &closed_admin()],
    );
    assert_eq!(run.evidence("server_kind"), "envoy", "{:#}", run.json);
    assert_eq!(run.status(), "warn", "{:#}", run.json);
    assert!(remedy(&run).contains("app's own pod"), "{}", remedy(&run));
}

// ---- the proxy side: Envoy's routing and options from real dumps ----

/// A Consul fixture with local_app's endpoint moved to `port` (where the
/// test's app listens).
fn consul_dump(file: &str, port: u16) -> String {
    let mut dump: Value = serde_json::from_str(&fixture(file)).unwrap();
    let mut moved = false;
    for config in dump["configs"].as_array_mut().unwrap() {
        for entry in config
            .get_mut("dynamic_active_clusters")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let cluster = &mut entry["cluster"];
            if cluster["name"] == "local_app" {
                cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                    ["address"]["socket_address"]["port_value"] = port.into();
                moved = true;
            }
        }
    }
    assert!(moved, "local_app in {file}");
    serde_json::to_string(&dump).unwrap()
}

/// Each Consul case, against one nginx (3 s): the cluster Envoy's routing
/// gives (public_listener's route), the timeout Envoy applies, the verdict.
#[test]
fn consul_sidecar_cases_route_to_local_app() {
    let server = nginx_3s();
    let stats = fixture("kuma-envoy-stats-prometheus.istio-tags.edited.txt")
        .replace("cluster_name=\"example\"", "cluster_name=\"local_app\"");
    type Case = (
        &'static str,
        Option<String>,
        &'static str,
        Value,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        // Unset: Envoy's default hour.
        (
            "consul-k8s-test_config_dump.json",
            None,
            "fail",
            3600.0.into(),
            "local_app",
        ),
        (
            "consul-k8s-test_config_dump.idle-2s.edited.json",
            None,
            "pass",
            2.0.into(),
            "local_app",
        ),
        // 0s: never idles out.
        (
            "consul-k8s-test_config_dump.idle-0s.edited.json",
            None,
            "fail",
            Value::Null,
            "local_app",
        ),
        // The typed block wins whole: the deprecated 10 s is ignored.
        (
            "consul-k8s-test_config_dump.typed-vs-deprecated.edited.json",
            None,
            "fail",
            3600.0.into(),
            "local_app",
        ),
        // Deprecated fields only: max_requests_per_connection 1 from the cluster.
        (
            "consul-k8s-test_config_dump.deprecated-only.edited.json",
            None,
            "pass",
            10.0.into(),
            "local_app",
        ),
        // Weighted: the canary keeps connections 30 s and is judged.
        (
            "consul-k8s-test_config_dump.weighted.edited.json",
            None,
            "fail",
            30.0.into(),
            "local_app_canary",
        ),
        // Istio-style stats say it is happening, whatever the timeouts.
        (
            "consul-k8s-test_config_dump.idle-2s.edited.json",
            Some(stats),
            "fail",
            2.0.into(),
            "local_app",
        ),
    ];
    let port = server.port;
    let upstream = server.upstream();
    let runs: Vec<_> = cases
        .into_iter()
        .map(|(file, stats, status, idle, cluster)| {
            let upstream = upstream.clone();
            thread::spawn(move || {
                let mut routes =
                    vec![("/config_dump", "application/json", consul_dump(file, port))];
                let with_stats = stats.is_some();
                if let Some(stats) = stats {
                    routes.push(("/stats", "text/plain; version=0.0.4", stats));
                }
                let admin = admin_double(routes);
                let run = keepalive(&upstream, &["--max-wait", "8s", "--envoy-admin", &admin]);
                (file, with_stats, status, idle, cluster, run)
            })
        })
        .collect();
    for handle in runs {
        let (file, with_stats, status, idle, cluster, run) = handle.join().unwrap();
        let what = format!("{file} (stats: {with_stats}): {:#}", run.check());
        assert_eq!(run.evidence("cluster"), cluster, "{what}");
        assert_eq!(run.evidence("cluster_found_by"), "route", "{what}");
        assert_eq!(run.evidence("proxy_idle_timeout_s"), &idle, "{what}");
        assert_eq!(run.status(), status, "{what}");
        let route = run.evidence("route").to_string();
        assert!(route.contains("public_listener"), "{what}");
        if with_stats {
            assert_eq!(
                run.evidence("counters")["upstream_cx_destroy_remote_with_active_rq"],
                1,
                "{what}"
            );
            assert!(
                run.check()["summary"]
                    .as_str()
                    .unwrap()
                    .contains("it is happening"),
                "{what}"
            );
        }
        if file.contains("weighted") {
            assert_eq!(
                run.evidence("clusters").as_array().unwrap().len(),
                2,
                "{what}"
            );
        }
        if file.contains("0s") {
            assert!(
                run.check()["summary"].as_str().unwrap().contains("0s"),
                "{what}"
            );
        }
        if file.contains("deprecated-only") {
            assert_eq!(run.evidence("max_requests_per_connection"), 1, "{what}");
        }
    }
}

/// Files under /etc/netns/NAME/ (which `ip netns exec` mounts over /etc),
/// removed on drop or on a signal.
struct NetnsEtc {
    _removal: podprobe::cleanup::Cleanup,
}

impl NetnsEtc {
    fn new(netns: &str, files: &[(&str, &str)]) -> Self {
        let dir = Path::new("/etc/netns").join(netns);
        let removal = podprobe::cleanup::removing(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        NetnsEtc { _removal: removal }
    }
}

/// A client pod of the Istio 1.18 mesh: the app's name is in /etc/hosts
/// only (its DNS server does not answer), it resolves to a ClusterIP, and
/// the sidecar's dump routes that address through virtualOutbound to the
/// service's listener, route and outbound cluster.
#[test]
fn a_cluster_ip_from_etc_hosts_routes_through_virtual_outbound() {
    let netns = support::Netns::new("ka");
    let _etc = NetnsEtc::new(
        &netns.name,
        &[
            (
                "hosts",
                "127.0.0.1 localhost\n10.68.200.178 geo.hr2 geo.hr2.svc.cluster.local\n",
            ),
            // Nothing routes there from the namespace: DNS never answers.
            (
                "resolv.conf",
                "nameserver 192.0.2.53\noptions timeout:1 attempts:1\n",
            ),
        ],
    );
    netns.sh("ip addr add 10.68.200.178/32 dev lo");
    let dir = TempDir::new("nginx-ns");
    let mut cmd = nginx_3s_on(&dir, "10.68.200.178:8083", netns.command("nginx"));
    let ns = netns.name.clone();
    let _server = Server::start_until(dir, 8083, &mut cmd, || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "bash",
                "-c",
                "echo > /dev/tcp/10.68.200.178/8083",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    let dump = TempDir::new("dump");
    let file = dump.0.join("config_dump.json");
    std::fs::write(&file, fixture("istio-1.18-deathstarbench-config_dump.json")).unwrap();
    let out = netns
        .podprobe()
        .args([
            "keepalive",
            "geo.hr2:8083",
            "--max-wait",
            "8s",
            "-o",
            "json",
        ])
        .arg("--config-dump")
        .arg(&file)
        .output()
        .unwrap();
    let json = support::report(&out);
    let check = &json["checks"][0];
    let e = &check["evidence"];
    assert_eq!(
        e["cluster"], "outbound|8083||geo.hr2.svc.cluster.local",
        "{check:#}"
    );
    assert_eq!(e["cluster_found_by"], "route", "{check:#}");
    assert!(
        e["route"][0].as_str().unwrap().contains("virtualOutbound"),
        "{check:#}"
    );
    assert_eq!(e["proxy_idle_timeout_s"], 3600.0, "{check:#}");
    assert_eq!(check["status"], "fail", "{check:#}");
    assert!(
        (e["app_idle_timeout_s"].as_f64().unwrap() - 3.0).abs() <= 0.1,
        "{check:#}"
    );
    assert!(
        check["remedy"][0]
            .as_str()
            .unwrap()
            .contains("host: geo.hr2.svc.cluster.local"),
        "{check:#}"
    );
}

#[test]
fn a_bad_envoy_admin_url_exits_2() {
    for url in [
        "not a url",
        "ftp://127.0.0.1:15000",
        "http://",
        "https://127.0.0.1:15000",
    ] {
        for args in [
            vec!["keepalive", "127.0.0.1:1", "--envoy-admin", url],
            vec!["doctor", "--upstream", "127.0.0.1:1", "--envoy-admin", url],
        ] {
            let out = support::podprobe().args(&args).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
            assert!(stderr.contains("--envoy-admin"), "{args:?}: {stderr}");
        }
    }
}

#[test]
fn a_slow_drip_admin_is_cut_at_the_overall_cap() {
    let server = python_http_server();
    let admin = format!(
        "http://{}",
        raw_server(|mut conn| {
            let mut byte = [0u8; 1];
            let _ = conn.read(&mut byte);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");
            // One byte every 1.5 s: each read is within --timeout.
            for _ in 0..60 {
                if conn.write_all(b"{").is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(1500));
            }
        })
    );
    let run = keepalive(
        &server.upstream(),
        &["--timeout", "2s", "--envoy-admin", &admin],
    );
    assert_eq!(run.evidence("proxy"), "none", "{:#}", run.check());
    let notes = run.evidence("notes").to_string();
    assert!(
        notes.contains("did not finish its answer within 10 s"),
        "{notes}"
    );
    assert!(run.took < Duration::from_secs(15), "took {:?}", run.took);
}
