//! Real gRPC servers in the lab's replica pods for the gRPC tests: grpc-js
//! and grpcio (each logging the calls it served, per connection), nginx
//! for an HTTP/1.1 port, and the comparison of their logs with podprobe's
//! evidence.
#![allow(dead_code)] // each test file uses its own subset

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use podprobe::lab::{Background, Lab, Pod, Replicas};

pub const BIN: &str = env!("CARGO_BIN_EXE_podprobe");

fn servers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers")
}

/// The Python of the test environment (grpcio, grpcio-reflection).
pub fn python() -> PathBuf {
    let venv = std::env::var("PODPROBE_TESTENV").unwrap_or("/opt/podprobe-testenv".into());
    Path::new(&venv).join("bin/python3")
}

/// Where scripts/setup installed the Node packages.
pub fn node_path() -> PathBuf {
    let venv = std::env::var("PODPROBE_TESTENV").unwrap_or("/opt/podprobe-testenv".into());
    Path::new(&venv).join("node/node_modules")
}

/// A directory of this test's files (logs, certificates), removed on drop
/// or on a signal (`podprobe::cleanup`).
pub struct Scratch {
    pub dir: PathBuf,
    _removal: podprobe::cleanup::Cleanup,
}

impl Scratch {
    pub fn new() -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pp-grpc-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _removal = podprobe::cleanup::removing(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir, _removal }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Which server a replica runs.
#[derive(Debug, Clone)]
pub enum Server {
    /// grpc-js with helloworld.Greeter; these extra arguments (`--health`,
    /// `--fail 14:draining`, `--max-connection-age-ms 2000`, TLS files).
    Node(Vec<String>),
    /// grpcio with these arguments (`--reflection`, `--health`).
    Python(Vec<String>),
    /// nginx serving HTTP/1.1 on the port.
    Nginx,
}

impl Server {
    pub fn node(args: &[&str]) -> Server {
        Server::Node(args.iter().map(|a| a.to_string()).collect())
    }

    pub fn python(args: &[&str]) -> Server {
        Server::Python(args.iter().map(|a| a.to_string()).collect())
    }
}

/// An nginx configuration serving plain HTTP/1.1 on `listen`, its files in
/// `dir` (run as `nginx -p DIR -c FILE`).
pub fn nginx_conf(dir: &Path, listen: &str) -> String {
    format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log stderr;\n\
         events {{ worker_connections 64; }}\n\
         http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
         fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
         server {{ listen {listen}; location / {{ return 200 'hello\\n'; }} }} }}\n",
        d = dir.display()
    )
}

/// A server running in a replica, its calls logged to `log`.
pub struct Running {
    pub replica: usize,
    pub log: PathBuf,
    process: Background,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.process.id()
    }
}

fn start_one(lab: &Lab, set: &Replicas, i: usize, server: &Server, scratch: &Scratch) -> Running {
    let log = scratch.path(&format!("{}.log", set.pod_name(i)));
    let listen = format!("0.0.0.0:{}", set.port);
    let mut cmd = match server {
        Server::Node(args) => {
            let mut cmd = lab.replica_command(set, i, "node");
            cmd.arg(servers_dir().join("grpc_node_server.js"))
                .args(["--listen", &listen, "--name", &set.pod_name(i)])
                .args(args)
                .env("NODE_PATH", node_path());
            cmd
        }
        Server::Python(args) => {
            let mut cmd = lab.replica_command(set, i, python());
            cmd.arg(servers_dir().join("grpc_py_server.py"))
                .args(["--listen", &listen])
                .args(args);
            cmd
        }
        Server::Nginx => {
            let conf = scratch.path(&format!("{}.nginx.conf", set.pod_name(i)));
            let prefix = scratch.path(&format!("{}.nginx", set.pod_name(i)));
            std::fs::create_dir_all(&prefix).unwrap();
            std::fs::write(&conf, nginx_conf(&prefix, &set.port.to_string())).unwrap();
            let mut cmd = lab.replica_command(set, i, "nginx");
            cmd.arg("-p").arg(&prefix).arg("-c").arg(&conf);
            cmd
        }
    };
    cmd.stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null());
    Running {
        replica: i,
        log,
        process: lab.spawn(&mut cmd).unwrap(),
    }
}

/// Starts `server` in each replica of `set` (`servers[i]` overrides
/// replica i) and waits until every one accepts connections.
pub fn start(
    lab: &Lab,
    set: &Replicas,
    server: &Server,
    overrides: &[(usize, Server)],
    scratch: &Scratch,
) -> Vec<Running> {
    let running: Vec<Running> = (0..set.len())
        .map(|i| {
            let chosen = overrides
                .iter()
                .find(|(r, _)| *r == i)
                .map_or(server, |(_, s)| s);
            start_one(lab, set, i, chosen, scratch)
        })
        .collect();
    for i in 0..set.len() {
        wait_open(lab, set.addr(i));
    }
    running
}

/// Waits (up to 20 s) until something accepts connections at `addr`, seen
/// from the client pod.
pub fn wait_open(lab: &Lab, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open = lab
            .in_pod(Pod::Client, || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
            })
            .unwrap();
        if open {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One call a server logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub peer: String,
    pub method: String,
    pub code: u64,
}

pub fn calls(log: &Path) -> Vec<Call> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|v| Call {
            peer: v["peer"].as_str().unwrap_or_default().to_string(),
            method: v["method"].as_str().unwrap_or_default().to_string(),
            code: v["code"].as_u64().unwrap_or(99),
        })
        .collect()
}

/// Calls each server logged, by peer (one peer is one connection).
pub fn calls_by_peer(running: &[Running]) -> BTreeMap<String, (usize, u64)> {
    let mut by_peer = BTreeMap::new();
    for server in running {
        for call in calls(&server.log) {
            let entry = by_peer.entry(call.peer).or_insert((server.replica, 0));
            entry.1 += 1;
        }
    }
    by_peer
}

/// `podprobe grpc ARGS -o json` in the client pod: its exit code and report.
pub fn grpc_json(lab: &Lab, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let out = lab
        .podprobe(Pod::Client)
        .arg("grpc")
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    // Parsed and validated against the report schema.
    let report = crate::support::report(&out);
    (out.status.code(), report, stderr)
}

pub fn check<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

pub fn run<'a>(report: &'a serde_json::Value, mode: &str) -> &'a serde_json::Value {
    check(report, "grpc.distribution")["evidence"]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mode"] == mode)
        .unwrap_or_else(|| panic!("no {mode} run in {report:#}"))
}

pub fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Every connection of `run` carried exactly the calls its server logged
/// for that connection (peer = the connection's local address), and went
/// to that server. Returns the replica of each connection.
pub fn assert_connections_match_logs(
    run: &serde_json::Value,
    logged: &BTreeMap<String, (usize, u64)>,
) -> Vec<usize> {
    let mut replicas = Vec::new();
    for c in run["per_connection"].as_array().unwrap() {
        let local = c["local"].as_str().unwrap();
        let carried = u(&c["ok"]) + u(&c["failed"]);
        let (replica, n) = logged.get(local).copied().unwrap_or((usize::MAX, 0));
        assert_eq!(
            n, carried,
            "connection {local}: server logged {n}, podprobe counted {carried}\n{run:#}"
        );
        replicas.push(replica);
    }
    replicas
}

/// Runs `openssl` with these arguments, quietly; panics when it fails.
pub fn openssl(args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl {args:?}");
}

/// `openssl req -x509` as people type it: a self-signed certificate (and
/// CA, CA:TRUE) with only a subject, `NAME.pem` and `NAME.key` in `scratch`.
pub fn self_signed(scratch: &Scratch, name: &str, subject: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        scratch.path(&format!("{name}.pem")),
        scratch.path(&format!("{name}.key")),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let files = [
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ];
    openssl(
        &[
            &["req", "-x509", "-days", "2", "-subj", subject][..],
            &ec,
            &files,
        ]
        .concat(),
    );
    (cert, key)
}

/// A private CA and a server certificate it signed for `names` (DNS SANs):
/// (ca.pem, cert.pem, key.pem) in `scratch`.
pub fn private_ca(scratch: &Scratch, names: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| scratch.path(n).display().to_string();
    self_signed(scratch, "ca", "/CN=podprobe test CA");
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=server",
        "-keyout",
        &p("key.pem"),
        "-out",
        &p("server.csr"),
    ]);
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(
        scratch.path("ext.cnf"),
        format!(
            "subjectAltName={}\nextendedKeyUsage=serverAuth\n",
            sans.join(",")
        ),
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("cert.pem"),
    ]);
    (
        scratch.path("ca.pem"),
        scratch.path("cert.pem"),
        scratch.path("key.pem"),
    )
}
