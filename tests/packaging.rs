//! The image and the Kubernetes side: the Dockerfile's stages; the
//! manifests against Kubernetes' schemas and the restricted Pod Security
//! profile; completions and manual pages. The image itself, built from the
//! Dockerfile and run as an ephemeral container, a Job and a Deployment
//! (and its static binary on an empty root), is `scripts/image-test`'s.

mod support;

use std::path::Path;
use std::process::Command;

use support::{manifest_documents, pod_spec, podprobe, run};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VALIDATOR: &str = "/opt/podprobe-testenv/bin/kubernetes-validate";
const RESOURCE_FILES: [&str; 3] = ["job.yaml", "cronjob.yaml", "grpc-replicas.yaml"];

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
