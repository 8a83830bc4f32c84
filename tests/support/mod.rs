//! Shared by the integration tests: the real binary, schema validation and
//! guards for what tests make (a throwaway network namespace, processes,
//! directories), removed even when a test panics or the run is interrupted
//! (SIGINT, SIGTERM, SIGHUP: the guards register with `podprobe::cleanup`,
//! as the lab does).
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use podprobe::cleanup::{self, Cleanup, Killed};

pub fn podprobe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_podprobe"))
}

/// Runs a command to completion; panics with its stderr when it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// The JSON report on stdout, validated against the repo's schema.
pub fn report(output: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&output.stdout);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{text}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_valid_report(&value);
    value
}

pub fn assert_valid_report(value: &serde_json::Value) {
    let schema: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/report.v1.schema.json"
    )))
    .expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "report does not match the schema: {errors:#?}\n{value:#}"
    );
}

/// The check with this id in a report.
pub fn check<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

/// A network namespace with only `lo` up, deleted (with every process in
/// it) on drop or on a signal.
pub struct Netns {
    pub name: String,
    _removal: Cleanup,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "pp-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let removal = {
            let name = name.clone();
            Cleanup::register(format!("namespace {name}"), move || {
                podprobe::lab::remove_netns(&name)
            })
        };
        cleanup::making(|| {
            sh(&format!(
                "ip netns add {name} && ip -n {name} link set lo up"
            ))
        });
        Netns {
            name,
            _removal: removal,
        }
    }

    /// A command run inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    pub fn podprobe(&self) -> Command {
        self.command(env!("CARGO_BIN_EXE_podprobe"))
    }

    /// A TCP listener on 127.0.0.1:`port` inside the namespace, ready when
    /// this returns; killed when the returned guard drops.
    pub fn listen(&self, port: u16) -> Child {
        let mut child = Killed::spawn(
            self.command("python3")
                .args([
                    "-c",
                    &format!(
                        "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',{port}))\ns.listen()\nprint('ready',flush=True)\ntime.sleep(60)"
                    ),
                ])
                .stdout(Stdio::piped()),
        )
        .expect("python3 starts");
        let mut line = String::new();
        let stdout = child.take_stdout().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("listener output");
        assert_eq!(line.trim(), "ready", "listener on {port} did not start");
        Child(child)
    }

    pub fn sh(&self, script: &str) {
        sh(&format!("ip netns exec {} sh -ec '{script}'", self.name));
    }
}

pub fn sh(script: &str) {
    let out = run(Command::new("sh").args(["-ec", script]));
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A process killed and reaped when dropped (or on a signal).
pub struct Child(Killed);

/// The YAML documents of a file under manifests/ (`"job.yaml"`,
/// `"fleet/watch-pod.yaml"`).
pub fn manifest_documents(file: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).unwrap())
        .collect()
}

/// The pod template's spec of a workload, `None` for anything else.
pub fn pod_spec(doc: &serde_yaml::Value) -> Option<&serde_yaml::Value> {
    match doc["kind"].as_str()? {
        "Job" | "Deployment" | "DaemonSet" => Some(&doc["spec"]["template"]["spec"]),
        "CronJob" => Some(&doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        _ => None,
    }
}

/// What the restricted Pod Security profile asks of a pod's security
/// context, and the downward-API variables podprobe reports: a non-root
/// numeric user, RuntimeDefault seccomp, no privilege escalation, a
/// read-only root and every capability dropped, none added.
pub fn assert_locked_down(spec: &serde_yaml::Value, what: &str) {
    let pod_sc = &spec["securityContext"];
    assert_eq!(pod_sc["runAsNonRoot"].as_bool(), Some(true), "{what}");
    assert_eq!(pod_sc["runAsUser"].as_u64(), Some(65532), "{what}");
    assert_eq!(
        pod_sc["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault"),
        "{what}"
    );
    for c in spec["containers"].as_sequence().unwrap() {
        let sc = &c["securityContext"];
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{what}"
        );
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{what}");
        assert_eq!(
            sc["capabilities"]["drop"][0].as_str(),
            Some("ALL"),
            "{what}"
        );
        assert!(
            sc["capabilities"]["add"].is_null(),
            "{what} adds capabilities"
        );
        let env: Vec<&str> = c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        for var in ["POD_NAME", "NODE_NAME"] {
            assert!(env.contains(&var), "{what} lacks {var}");
        }
    }
}

/// A directory under the temporary directory, named with the test's tag,
/// removed on drop (or on a signal).
pub struct TempDir(pub std::path::PathBuf, Cleanup);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "podprobe-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let removal = cleanup::removing(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        cleanup::making(|| std::fs::create_dir_all(&dir)).unwrap();
        TempDir(dir, removal)
    }

    /// Writes `text` to `name` in the directory; its path.
    pub fn file(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Child {
    /// Takes over a spawned process: killed and reaped when dropped.
    pub fn guard(child: std::process::Child) -> Child {
        Child(Killed::adopt(child))
    }

    /// Spawns `cmd` guarded from the start.
    pub fn spawn(cmd: &mut Command) -> Child {
        Child(Killed::spawn(cmd).unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}")))
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        self.0.wait_timeout(timeout)
    }

    /// Asks the process to finish (SIGTERM) and waits for it a while, so
    /// that it can flush what it wrote.
    pub fn stop(self) {
        self.0.stop(std::time::Duration::from_secs(5));
    }
}

/// Runs a command to completion, or kills it after `timeout` (its output
/// so far is returned, with a failed status).
pub fn run_with_timeout(cmd: &mut Command, timeout: std::time::Duration) -> Output {
    let mut child = Killed::spawn(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.take_stdout().map(|p| Box::new(p) as _));
    let stderr = drain(child.take_stderr().map(|p| Box::new(p) as _));
    let status = child.wait_timeout(timeout).unwrap_or_else(|| {
        child.kill();
        child
            .wait_timeout(std::time::Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{cmd:?} survives SIGKILL"))
    });
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// `f` over `items`, each on its own thread; a panic in any of them fails
/// the caller (with that thread's message).
pub fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = items.iter().map(|item| scope.spawn(|| f(item))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}
