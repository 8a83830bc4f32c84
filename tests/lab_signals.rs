//! Signals, for real: Ctrl-C typed at a terminal (a pseudo-terminal whose
//! line discipline signals the foreground process group, as a shell's
//! terminal does), a hang-up, and `kill` from outside, sent to `lab demo`,
//! `lab up` and `lab exec` at several points. Afterwards nothing of the lab
//! is left: no namespace (and so none of its veths, rules or conntrack), no
//! process, no state or /etc/netns files. Also `-o json` of `lab up` and
//! `lab status`.

mod support;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use podprobe::cleanup::Cleanup;
use podprobe::lab::{Lab, LabSpec, Pod};

const PODPROBE: &str = env!("CARGO_BIN_EXE_podprobe");
/// The longest any one wait of these tests may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// A command running as the session leader of a pseudo-terminal, as a
/// shell runs a foreground job: typing ^C there signals its process group.
struct Terminal {
    /// The terminal's master side, shared with the thread reading it; the
    /// terminal hangs up when both let go.
    master: Option<Arc<File>>,
    hanging_up: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
    process: support::Child,
    output: Arc<Mutex<String>>,
}

impl Terminal {
    fn spawn(cmd: &mut Command) -> Terminal {
        // Close-on-exec from the start: a copy of the master side inherited
        // by any process (of a test running in parallel, too) would keep the
        // terminal from hanging up.
        // SAFETY: plain fd calls; the name is copied out of ptsname_r's
        // buffer before use.
        let (master, slave) = unsafe {
            let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(
                master >= 0,
                "posix_openpt: {}",
                std::io::Error::last_os_error()
            );
            let master = File::from_raw_fd(master);
            assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
            assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(
                libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
                0
            );
            let slave = libc::open(
                name.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            );
            assert!(
                slave >= 0,
                "opening the pty: {}",
                std::io::Error::last_os_error()
            );
            (master, OwnedFd::from_raw_fd(slave))
        };
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let process = support::Child::spawn(cmd);
        // The command's copies of the terminal's other side go.
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let master = Arc::new(master);
        let output = Arc::new(Mutex::new(String::new()));
        let hanging_up = Arc::new(AtomicBool::new(false));
        let reader = {
            let (master, sink, hanging_up) = (
                Arc::clone(&master),
                Arc::clone(&output),
                Arc::clone(&hanging_up),
            );
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !hanging_up.load(Ordering::SeqCst) {
                    let mut poll = libc::pollfd {
                        fd: master.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    if unsafe { libc::poll(&mut poll, 1, 50) } <= 0 {
                        continue;
                    }
                    // EIO once the last process holding the terminal is gone.
                    match (&*master).read(&mut buf) {
                        Ok(n @ 1..) => sink
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n])),
                        _ => break,
                    }
                }
            })
        };
        Terminal {
            master: Some(master),
            hanging_up,
            reader: Some(reader),
            process,
            output,
        }
    }

    fn pid(&self) -> i32 {
        self.process.id() as i32
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Types ^C; false once the terminal is closed.
    fn ctrl_c(&mut self) -> bool {
        use std::io::Write;
        self.master
            .as_ref()
            .is_some_and(|m| (&**m).write_all(b"\x03").is_ok())
    }

    /// Closes the terminal: the kernel sends SIGHUP to its session leader.
    fn hang_up(&mut self) {
        self.hanging_up.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.master.take();
    }

    fn wait_for_output(&self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.output().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} after {PATIENCE:?}:\n{}",
                self.output()
            );
            assert!(
                self.process.wait_timeout(Duration::ZERO).is_none(),
                "exited before {text:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait(&self) -> ExitStatus {
        self.process
            .wait_timeout(PATIENCE)
            .unwrap_or_else(|| panic!("still running after {PATIENCE:?}:\n{}", self.output()))
    }
}

/// What is left on the machine of labs whose names start with `prefix`:
/// namespaces, state and /etc/netns directories, and processes naming them
/// (dnsmasq's arguments name the state directory; podprobe in a pod has
/// NODE_NAME=LAB-node).
fn leftovers(prefix: &str) -> Vec<String> {
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let mut left: Vec<String> = String::from_utf8_lossy(&netns.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| format!("netns {l}"))
        .collect();
    for dir in ["/etc/netns", "/run/podprobe/lab"] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.starts_with(prefix) {
                left.push(format!("{dir}/{file}"));
            }
        }
    }
    let own = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == own {
            continue;
        }
        for file in ["cmdline", "environ"] {
            let bytes = std::fs::read(entry.path().join(file)).unwrap_or_default();
            if String::from_utf8_lossy(&bytes).contains(prefix) {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                left.push(format!("process {pid} ({})", comm.trim()));
                break;
            }
        }
    }
    left
}

/// Removes, when dropped or on a signal, whatever a failed test left of
/// labs named `prefix*`, so one failure does not leak into the machine.
fn sweep(prefix: &str) -> Cleanup {
    let prefix = prefix.to_string();
    Cleanup::register(format!("labs {prefix}*"), move || {
        let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
        for line in String::from_utf8_lossy(&netns.stdout).lines() {
            if let Some(ns) = line
                .split_whitespace()
                .next()
                .filter(|l| l.starts_with(&prefix))
            {
                let _ = podprobe::lab::remove_netns(ns);
            }
        }
        for entry in std::fs::read_dir("/run/podprobe/lab")
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    })
}

/// Waits until `ready` holds, up to [`PATIENCE`].
fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: not after {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Interrupts `lab demo` with ^C once `moment` appears in its output, then
/// types ^C again and again while it cleans up; checks that it died of
/// SIGINT, said it was cleaning up once, and left nothing.
fn interrupt_demo(moment: &str, settle: Duration) {
    let mut demo = Terminal::spawn(Command::new(PODPROBE).args(["lab", "demo"]));
    let prefix = format!("pp{}-", demo.pid());
    let _sweep = sweep(&prefix);
    demo.wait_for_output(moment);
    std::thread::sleep(settle);
    assert!(
        !leftovers(&prefix).is_empty(),
        "no lab running:\n{}",
        demo.output()
    );
    assert!(demo.ctrl_c());
    demo.wait_for_output("cleaning up, please wait");
    // More ^C while it cleans up.
    let mut typed = 0;
    while demo
        .process
        .wait_timeout(Duration::from_millis(20))
        .is_none()
        && typed < 200
    {
        if demo.ctrl_c() {
            typed += 1;
        }
    }
    let status = demo.wait();
    let output = demo.output();
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}\n{output}");
    assert!(typed >= 2, "only {typed} ^C during the cleanup:\n{output}");
    assert_eq!(
        output.matches("cleaning up, please wait").count(),
        1,
        "{output}"
    );
    let left = leftovers(&prefix);
    assert!(left.is_empty(), "left behind: {left:?}\n{output}");
}

#[test]
fn ctrl_c_while_demo_builds_a_lab_leaves_nothing() {
    // The first lab's namespaces exist; its servers are starting.
    interrupt_demo(
        "building a lab with scenario none",
        Duration::from_millis(300),
    );
}

#[test]
fn ctrl_c_during_a_demo_check_leaves_nothing() {
    // The keep-alive check waits 5 s for the backends to close.
    interrupt_demo("$ podprobe keepalive", Duration::from_millis(500));
}

/// `lab up` (a fresh name) stopped by `stop` once its first namespace
/// exists; it must die of `signal` and leave nothing.
fn stop_lab_up(name: &str, signal: libc::c_int, stop: impl FnOnce(&mut Terminal)) {
    let _sweep = sweep(name);
    let mut up = Terminal::spawn(Command::new(PODPROBE).args(["lab", "up", "--name", name]));
    wait_until("the lab's first namespace", || {
        std::path::Path::new("/run/netns")
            .join(format!("{name}-node"))
            .exists()
    });
    stop(&mut up);
    let status = up.wait();
    let output = up.output();
    assert_eq!(status.signal(), Some(signal), "{status:?}\n{output}");
    let left = leftovers(name);
    assert!(left.is_empty(), "left behind: {left:?}\n{output}");
}

#[test]
fn sigterm_during_lab_up_leaves_nothing() {
    let name = format!("ppterm{}", std::process::id());
    stop_lab_up(&name, libc::SIGTERM, |up| {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(up.pid(), libc::SIGTERM) };
    });
}

#[test]
fn hang_up_during_lab_up_leaves_nothing() {
    let name = format!("pphup{}", std::process::id());
    // Its terminal goes away: SIGHUP, and stderr is gone too.
    stop_lab_up(&name, libc::SIGHUP, Terminal::hang_up);
}

/// `lab exec --name LAB -- ARGS` with its stdout piped.
fn lab_exec(lab: &Lab, args: &[&str]) -> Command {
    let mut cmd = Command::new(PODPROBE);
    cmd.args(["lab", "exec", "--name", lab.name(), "--"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The processes in the lab's client pod.
fn client_pids(lab: &Lab) -> String {
    let out = Command::new("ip")
        .args(["netns", "pids", &lab.netns(Pod::Client)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Reads a child's stdout to its end on a thread (bounded by the child's
/// life, which [`support::Child::wait_timeout`] bounds).
fn collect(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

#[test]
fn lab_exec_forwards_signals_waits_and_exits_with_the_childs_status() {
    let name = format!("ppexec{}", std::process::id());
    let lab = Lab::up(&LabSpec::new(PODPROBE).name(&name)).expect("lab up");

    // kill -TERM: passed on; the child's last words come before exec exits,
    // and its exit code is exec's.
    let mut exec = lab_exec(
        &lab,
        &[
            "sh",
            "-c",
            "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    );
    let mut child = exec.spawn().unwrap();
    let stdout = collect(child.stdout.take().unwrap());
    let exec = support::Child::guard(child);
    wait_until("sh running in the client pod", || {
        !client_pids(&lab).is_empty()
    });
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(exec.id() as i32, libc::SIGTERM) };
    let status = exec.wait_timeout(PATIENCE).expect("lab exec exits");
    assert_eq!(status.code(), Some(3), "{status:?}");
    assert_eq!(stdout.join().unwrap(), "ready\ngot TERM\n");
    assert_eq!(client_pids(&lab), "", "nothing left in the pod");

    // A child killed by the signal: 128 + N, as a shell says it.
    let exec = support::Child::spawn(&mut lab_exec(&lab, &["sleep", "30"]));
    wait_until("sleep in the client pod", || !client_pids(&lab).is_empty());
    // SAFETY: as above.
    unsafe { libc::kill(exec.id() as i32, libc::SIGHUP) };
    let status = exec.wait_timeout(PATIENCE).expect("lab exec exits");
    assert_eq!(status.code(), Some(128 + libc::SIGHUP), "{status:?}");
    assert_eq!(client_pids(&lab), "");

    // kill -TERM of `lab exec ... podprobe serve`: nothing keeps running.
    let exec = support::Child::spawn(&mut lab_exec(
        &lab,
        &[
            PODPROBE,
            "serve",
            "--http",
            "127.0.0.1:18080",
            "--grpc",
            "127.0.0.1:18081",
        ],
    ));
    wait_until("serve listening in the client pod", || {
        lab.in_pod(Pod::Client, || {
            std::net::TcpStream::connect("127.0.0.1:18080").is_ok()
        })
        .unwrap()
    });
    // SAFETY: as above.
    unsafe { libc::kill(exec.id() as i32, libc::SIGTERM) };
    let status = exec.wait_timeout(PATIENCE).expect("lab exec exits");
    assert_eq!(status.code(), Some(0), "serve drains and exits: {status:?}");
    assert_eq!(client_pids(&lab), "", "serve left running");

    // SIGKILL cannot be passed on: the child dies with its parent.
    let exec = support::Child::spawn(&mut lab_exec(&lab, &["sleep", "30"]));
    wait_until("sleep in the client pod", || !client_pids(&lab).is_empty());
    // SAFETY: as above.
    unsafe { libc::kill(exec.id() as i32, libc::SIGKILL) };
    exec.wait_timeout(PATIENCE).expect("lab exec killed");
    wait_until("sleep gone with lab exec", || client_pids(&lab).is_empty());

    // ^C at a terminal reaches the child once (from the terminal), not a
    // second time from podprobe; podprobe waits for it.
    let mut term = Terminal::spawn(Command::new(PODPROBE).args([
        "lab",
        "exec",
        "--name",
        &name,
        "--",
        "sh",
        "-c",
        "n=0; trap 'n=$((n+1))' INT; echo ready; while [ $n -eq 0 ]; do sleep 0.05; done; sleep 0.3; echo got $n; exit 7",
    ]));
    term.wait_for_output("ready");
    assert!(term.ctrl_c());
    let status = term.wait();
    assert_eq!(status.code(), Some(7), "{status:?}\n{}", term.output());
    wait_until("the terminal's last output", || {
        term.output().contains("got")
    });
    assert!(term.output().contains("got 1"), "{}", term.output());
    lab.down().unwrap();
}

#[test]
fn lab_commands_print_json_documents() {
    let name = format!("ppjson{}", std::process::id());
    let _sweep = sweep(&name);
    let run = |args: &[&str]| {
        let out = support::run_with_timeout(Command::new(PODPROBE).args(args), PATIENCE);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let value: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out:?}"));
        value
    };
    let up = run(&[
        "lab",
        "up",
        "--name",
        &name,
        "--scenario",
        "netpol-drop",
        "-o",
        "json",
    ]);
    let status = run(&["lab", "status", "--name", &name, "-o", "json"]);
    let all = run(&["lab", "status", "-o", "json"]);
    let dns = run(&["lab", "dns-server", "--name", &name, "-o", "json"]);
    let services = run(&[
        "lab", "services", "--name", &name, "--count", "2", "-o", "json",
    ]);
    let exec = support::run_with_timeout(
        Command::new(PODPROBE).args(["lab", "exec", "--name", &name, "-o", "json", "--", "true"]),
        PATIENCE,
    );
    assert_eq!(exec.status.code(), Some(2), "{exec:?}");
    assert_eq!(String::from_utf8_lossy(&exec.stderr).lines().count(), 1);
    let down = run(&["lab", "down", "--name", &name, "-o", "json"]);
    assert_eq!(down, serde_json::json!({ "removed": [name] }));
    assert_eq!(
        dns,
        serde_json::json!({"address": "10.244.0.64", "port": 53, "server": "dnsmasq", "mode": "healthy"})
    );
    assert_eq!(services["added"], 2);
    assert_eq!(services["generated_services"], 2);
    assert_eq!(services["mode"], "iptables");
    assert!(services["seconds"].as_f64().is_some(), "{services}");

    let keys =
        |v: &serde_json::Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    let mut lab_keys = keys(&up);
    lab_keys.sort();
    assert_eq!(
        lab_keys,
        [
            "dns_server",
            "dns_servers",
            "generated_services",
            "name",
            "pods",
            "replica_sets",
            "scenarios",
            "services",
            "state_dir"
        ]
    );
    assert_eq!(up["name"], name.as_str());
    assert_eq!(up["scenarios"], serde_json::json!(["netpol-drop"]));
    assert_eq!(up["dns_server"], "dnsmasq");
    let pods = up["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 6);
    for pod in pods {
        let mut k = keys(pod);
        k.sort();
        assert_eq!(k, ["address", "netns", "netns_exists", "pod", "processes"]);
        assert_eq!(pod["netns_exists"], true);
    }
    let dns = pods.iter().find(|p| p["pod"] == "dns").unwrap();
    assert_eq!(dns["address"], "10.244.0.10");
    assert_eq!(dns["processes"], serde_json::json!(["dnsmasq"]));
    let web = up["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "web.default.svc.cluster.local")
        .unwrap();
    assert_eq!(web["cluster_ip"], "10.96.0.20");
    assert_eq!(web["port"], 80);
    assert_eq!(web["endpoints"].as_array().unwrap().len(), 3);

    assert_eq!(keys(&status), ["labs"]);
    assert_eq!(status["labs"].as_array().unwrap().len(), 1);
    assert_eq!(status["labs"][0], up);
    assert!(all["labs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|lab| lab["name"] == name.as_str()));
}

/// Set in the environment of [`guards_held_until_interrupted`]'s run.
const HOLD_GUARDS: &str = "PPLAB_HOLD_GUARDS";

/// Not a test on its own: run by [`an_interrupted_test_run_leaves_nothing`],
/// it makes something with every kind of guard, says so and waits.
#[test]
#[ignore = "run by an_interrupted_test_run_leaves_nothing"]
fn guards_held_until_interrupted() {
    let Ok(marker) = std::env::var(HOLD_GUARDS) else {
        return;
    };
    let lab = Lab::up(&LabSpec::new(PODPROBE)).expect("lab up");
    let _in_pod = lab
        .spawn(lab.command(Pod::Client, "sleep").arg("60"))
        .unwrap();
    let ns = support::Netns::new("pplab");
    let _listener = ns.listen(7777);
    let dir = support::TempDir::new("pplab");
    dir.file("marker", &marker);
    // Deaf to the terminal's ^C: only its guard can end it.
    let _deaf = support::Child::spawn(Command::new("python3").args([
        "-c",
        "import signal,time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(60)",
        &marker,
    ]));
    println!("holding {} {} {}", lab.name(), ns.name, dir.0.display());
    std::thread::sleep(PATIENCE);
}

#[test]
fn an_interrupted_test_run_leaves_nothing() {
    let marker = format!("pplab-marker-{}", std::process::id());
    let mut run = Terminal::spawn(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "guards_held_until_interrupted",
                "--ignored",
                "--nocapture",
            ])
            .env(HOLD_GUARDS, &marker),
    );
    let prefix = format!("pp{}-", run.pid());
    let ns_prefix = format!("pp-pplab-{}-", run.pid());
    let (_sweep, _sweep_ns) = (sweep(&prefix), sweep(&ns_prefix));
    run.wait_for_output("holding ");
    let held = run.output();
    assert!(!leftovers(&prefix).is_empty(), "{held}");
    assert!(!leftovers(&ns_prefix).is_empty(), "{held}");
    assert!(!leftovers(&marker).is_empty(), "{held}");
    assert!(run.ctrl_c());
    let status = run.wait();
    let output = run.output();
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}\n{output}");
    assert!(output.contains("cleaning up, please wait"), "{output}");
    for left in [&prefix, &ns_prefix, &marker] {
        let left = leftovers(left);
        assert!(left.is_empty(), "left behind: {left:?}\n{output}");
    }
    let dir = held
        .lines()
        .find_map(|l| l.trim().strip_prefix("holding "))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap()
        .to_string();
    assert!(!std::path::Path::new(&dir).exists(), "{dir} left behind");
}
