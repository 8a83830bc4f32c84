//! The image and the Kubernetes side: the static binary built by the same
//! script the Dockerfile runs, run from an empty root inside a network
//! namespace (what an ephemeral container is); the Dockerfile's stages; the
//! manifests against Kubernetes' schemas and the restricted Pod Security
//! profile; completions and manual pages.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use podprobe::lab::{Lab, LabSpec, Pod, Service};
use support::{manifest_documents, pod_spec, podprobe, run};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VALIDATOR: &str = "/opt/podprobe-testenv/bin/kubernetes-validate";
const RESOURCE_FILES: [&str; 3] = ["job.yaml", "cronjob.yaml", "grpc-replicas.yaml"];

/// Built once per test run with scripts/build-static, as the image is.
fn static_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let out = Path::new(ROOT).join("target/static/podprobe");
        let result = run(Command::new(Path::new(ROOT).join("scripts/build-static")).arg(&out));
        assert!(
            result.status.success(),
            "scripts/build-static failed:\n{}",
            String::from_utf8_lossy(&result.stderr)
        );
        out
    })
}

#[test]
fn static_binary_needs_no_shared_library() {
    let binary = static_binary();
    let headers = run(Command::new("readelf").args(["-l", "-d"]).arg(binary));
    let text = String::from_utf8_lossy(&headers.stdout);
    assert!(headers.status.success());
    assert!(
        !text.contains("INTERP"),
        "has a program interpreter:\n{text}"
    );
    assert!(
        !text.contains("(NEEDED)"),
        "needs shared libraries:\n{text}"
    );
}

/// An empty root with only what the image's final stage holds.
struct ImageRoot {
    dir: PathBuf,
}

impl ImageRoot {
    fn new(binary: &Path) -> ImageRoot {
        let dir = std::env::temp_dir().join(format!("podprobe-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("usr/local/bin")).unwrap();
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::create_dir_all(dir.join("proc")).unwrap();
        std::fs::copy(binary, dir.join("usr/local/bin/podprobe")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(dir.join("etc/group"), "root:x:0:\nnonroot:x:65532:\n").unwrap();
        ImageRoot { dir }
    }

    /// The file kubelet mounts into every container of the pod.
    fn set_resolv_conf(&self, text: &str) {
        std::fs::write(self.dir.join("etc/resolv.conf"), text).unwrap();
    }

    /// podprobe as the image runs it: chrooted, as UID/GID 65532, in `pod`,
    /// with the /proc a container runtime mounts (and no /dev at all).
    fn podprobe(&self, lab: &Lab, pod: Pod) -> Command {
        self.podprobe_as(lab, pod, "65532:65532")
    }

    /// The same as another user: root stands for `--profile=netadmin` with
    /// manifests/debug/capture.json.
    fn podprobe_as(&self, lab: &Lab, pod: Pod, user: &str) -> Command {
        let mut cmd = lab.command(pod, "unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                r#"mount -t proc proc "$0/proc" && exec chroot --userspec={user} "$0" /usr/local/bin/podprobe "$@""#
            ))
            .arg(&self.dir);
        cmd
    }
}

impl Drop for ImageRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn static_binary_runs_from_an_empty_root_as_non_root_in_a_pod_namespace() {
    let root = ImageRoot::new(static_binary());
    let lab = Lab::up(&LabSpec::new(env!("CARGO_BIN_EXE_podprobe"))).unwrap();

    // Before the files kubelet and the image provide: each missing one is
    // named, in the verdict or in one line with its exit code.
    let doctor =
        run(root
            .podprobe(&lab, Pod::Client)
            .args(["doctor", "-o", "json", "--timeout", "500ms"]));
    let report = support::report(&doctor);
    let resolv = support::check(&report, "dns.resolv-conf");
    assert_eq!(resolv["evidence"]["missing"], true, "{resolv:#}");
    assert!(
        resolv["summary"]
            .as_str()
            .unwrap()
            .contains("/etc/resolv.conf does not exist"),
        "{resolv:#}"
    );
    for (args, code, missing) in [
        (
            vec!["doctor", "--tcp", "web.default.svc.cluster.local:80"],
            2,
            "/etc/resolv.conf is missing",
        ),
        (
            vec!["grpc", "--tls", "127.0.0.1:50051"],
            3,
            "/etc/ssl/certs/ca-certificates.crt does not exist",
        ),
    ] {
        let out = run(root.podprobe(&lab, Pod::Client).args(&args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(missing), "{args:?}: {stderr}");
    }
    root.set_resolv_conf(&lab.resolv_conf(Pod::Client).unwrap());

    let version = run(root.podprobe(&lab, Pod::Client).arg("--version"));
    assert!(version.status.success(), "{version:?}");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("podprobe {}", env!("CARGO_PKG_VERSION"))
    );

    // A Service name resolved through the pod's resolv.conf, with no /dev in
    // the root: the resolver's randomness must come from the system call.
    let doctor = run(root.podprobe(&lab, Pod::Client).args([
        "doctor",
        "-o",
        "json",
        "--tcp",
        &Service::Web.target(),
    ]));
    let report = support::report(&doctor);
    assert_eq!(
        support::check(&report, "tcp.reachability")["status"],
        "pass",
        "{report:#}"
    );
    let context = support::check(&report, "net.context");
    let addresses = context["evidence"]["interfaces"].to_string();
    assert!(
        addresses.contains(&format!("{}/32", Pod::Client.ip())),
        "{addresses}"
    );
    assert_eq!(report["context"]["netns"], netns_inode(&lab).as_str());

    // The pod's resolv.conf and the lab's DNS, with nothing else in the root.
    let dns = run(root.podprobe(&lab, Pod::Client).args([
        "dns",
        "-o",
        "json",
        "--race",
        "0",
        "--count",
        "1",
        "kubernetes.default",
    ]));
    let report = support::report(&dns);
    let expansion = support::check(&report, "dns.search-expansion");
    assert_eq!(
        expansion["evidence"]["lookups"][0]["resolved_as"], "kubernetes.default.svc.cluster.local.",
        "{expansion:#}"
    );

    // Capture streamed to stdout, as `kubectl debug -i ... | wireshark` reads it.
    let capture = root
        .podprobe_as(&lab, Pod::Client, "0:0")
        .args([
            "capture",
            "-c",
            "2",
            "--duration",
            "10s",
            "-f",
            "udp port 53",
            "-w",
            "-",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let query = run(root.podprobe(&lab, Pod::Client).args([
        "dns",
        "--race",
        "0",
        "--count",
        "1",
        "kubernetes.default.svc.cluster.local.",
    ]));
    assert!(query.status.success(), "{query:?}");
    let captured = capture.wait_with_output().unwrap();
    assert!(captured.status.success(), "{captured:?}");
    // pcap's magic, then records.
    assert_eq!(
        &captured.stdout[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "{captured:?}"
    );
    assert!(captured.stdout.len() > 24 + 2 * 16, "{captured:?}");
    let stderr = String::from_utf8_lossy(&captured.stderr);
    assert!(stderr.contains("2 packets captured"), "{stderr}");
}

/// `net:[INODE]` of the client pod's namespace, as /proc/self/ns/net reads.
fn netns_inode(lab: &Lab) -> String {
    let out = run(lab
        .command(Pod::Client, "readlink")
        .arg("/proc/self/ns/net"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn dockerfile_stages() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    let mut logical = String::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        logical.push_str(line.trim_end_matches('\\'));
        if line.ends_with('\\') {
            continue;
        }
        let instruction = std::mem::take(&mut logical).trim().to_string();
        if instruction.is_empty() {
            continue;
        }
        if instruction.starts_with("FROM ") {
            stages.push((instruction, Vec::new()));
        } else if let Some((_, body)) = stages.last_mut() {
            body.push(instruction);
        }
    }
    stages
}

#[test]
fn dockerfile_builds_with_the_shared_script_and_ends_static_and_non_root() {
    let stages = dockerfile_stages();
    let names: Vec<&str> = stages
        .iter()
        .map(|(from, _)| from.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(names, ["build", "full", "podprobe"], "{stages:#?}");

    let (_, build) = &stages[0];
    assert!(
        build
            .iter()
            .any(|i| i.starts_with("RUN scripts/build-static ")),
        "the build stage must use scripts/build-static: {build:#?}"
    );

    let (from, last) = stages.last().unwrap();
    assert!(from.starts_with("FROM scratch "), "{from}");
    for (from, body) in &stages[1..] {
        assert!(
            body.contains(&"USER 65532:65532".to_string()),
            "{from}: numeric non-root user"
        );
        assert!(
            body.iter()
                .any(|i| i.starts_with("ENTRYPOINT [\"/usr/local/bin/podprobe\"]")),
            "{from}: entrypoint"
        );
    }
    assert!(last
        .iter()
        .any(|i| i.contains("COPY --from=build /rootfs/ /")));
    let build_text = build.join("\n");
    for file in [
        "/rootfs/usr/local/bin/podprobe",
        "ca-certificates.crt",
        "/rootfs/etc/passwd",
        "/rootfs/etc/group",
    ] {
        assert!(build_text.contains(file), "the image root lacks {file}");
    }
    assert!(build_text.contains("nonroot:x:65532:65532"));
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let dir = Path::new(ROOT).join("manifests");
    let out = run(Command::new(VALIDATOR)
        .arg("--strict")
        .args(RESOURCE_FILES.iter().map(|f| dir.join(f))));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" passed for resource ").count(), 5, "{text}");

    // The validator does catch a broken manifest.
    let broken = std::env::temp_dir().join(format!("podprobe-broken-{}.yaml", std::process::id()));
    let job = std::fs::read_to_string(dir.join("job.yaml")).unwrap();
    std::fs::write(
        &broken,
        job.replace("backoffLimit: 0", "backoffLimit: none"),
    )
    .unwrap();
    let out = run(Command::new(VALIDATOR).arg("--strict").arg(&broken));
    let _ = std::fs::remove_file(&broken);
    assert!(!out.status.success(), "a broken Job passed validation");
}

#[test]
fn every_pod_meets_the_restricted_pod_security_profile() {
    let mut pods = 0;
    for file in RESOURCE_FILES {
        for doc in manifest_documents(file) {
            let Some(spec) = pod_spec(&doc) else { continue };
            pods += 1;
            support::assert_locked_down(spec, file);
        }
    }
    assert_eq!(pods, 3);
}

#[test]
fn jobs_run_doctor_once_with_json_and_no_retries() {
    let job = &manifest_documents("job.yaml")[0];
    assert_eq!(job["spec"]["backoffLimit"].as_u64(), Some(0));
    let cron = &manifest_documents("cronjob.yaml")[0];
    assert_eq!(cron["spec"]["schedule"].as_str(), Some("*/15 * * * *"));
    assert_eq!(cron["spec"]["concurrencyPolicy"].as_str(), Some("Forbid"));
    assert!(cron["spec"]["successfulJobsHistoryLimit"]
        .as_u64()
        .is_some());
    assert!(cron["spec"]["failedJobsHistoryLimit"].as_u64().is_some());
    assert_eq!(
        cron["spec"]["jobTemplate"]["spec"]["backoffLimit"].as_u64(),
        Some(0)
    );
    for doc in [job, cron] {
        let args: Vec<String> = pod_spec(doc).unwrap()["containers"][0]["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert_eq!(&args[..3], ["doctor", "-o", "json"]);
        // The manifest's flags are real: the binary accepts them.
        let out = run(podprobe().args(&args).arg("--help"));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let kustomization =
        std::fs::read_to_string(Path::new(ROOT).join("manifests/kustomization.yaml")).unwrap();
    for file in RESOURCE_FILES {
        assert!(
            kustomization.contains(&format!("- {file}")),
            "kustomization lacks {file}"
        );
    }
}

#[test]
fn completions_and_manual_pages_come_from_the_cli() {
    let bash = run(podprobe().args(["completions", "bash"]));
    assert!(bash.status.success());
    let script = String::from_utf8_lossy(&bash.stdout);
    assert!(
        script.contains("podprobe") && script.contains("doctor"),
        "{script}"
    );
    let syntax = run(Command::new("bash").args(["-n", "-c", &script]));
    assert!(syntax.status.success(), "{syntax:?}");

    let man = run(podprobe().args(["man", "doctor"]));
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH podprobe-doctor"),
        "{page}"
    );
    assert!(page.contains("\\-\\-tcp"), "{page}");

    let unknown = run(podprobe().args(["man", "nope"]));
    assert_eq!(unknown.status.code(), Some(2));

    // A reader that closes early is not an error.
    let piped = run(Command::new("sh").args([
        "-c",
        &format!(
            "{} completions zsh | head -c 1 >/dev/null; {} man | head -c 1 >/dev/null",
            bin(),
            bin()
        ),
    ]));
    assert!(piped.status.success());
    assert!(
        !String::from_utf8_lossy(&piped.stderr).contains("panicked"),
        "{piped:?}"
    );
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_podprobe")
}
