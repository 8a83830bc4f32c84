//! The README's commands are real: every podprobe invocation in its examples
//! and kubectl recipes parses with the binary's own flags.

mod support;

use support::{podprobe, run};

/// Splits a command line as sh would for these examples: whitespace, with
/// single and double quotes grouping.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// podprobe's arguments in each example command of the README's code blocks:
/// `$ podprobe ...` transcripts, `kubectl debug ... -- podprobe ...` and
/// `kubectl run ... --image=... -- ARGS` recipes.
fn readme_invocations() -> Vec<Vec<String>> {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
    let mut in_block = false;
    let mut pending = String::new();
    let mut invocations = Vec::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        pending.push_str(line.trim_end_matches('\\'));
        pending.push(' ');
        if line.ends_with('\\') {
            continue;
        }
        let command = std::mem::take(&mut pending);
        // Up to the first pipe, redirection or list operator.
        let command = command
            .split(['|', '>', ';'])
            .next()
            .unwrap_or_default()
            .split("&&")
            .next()
            .unwrap_or_default();
        let words = shell_words(command);
        let args = if words.first().map(String::as_str) == Some("$")
            && words.get(1).map(String::as_str) == Some("podprobe")
        {
            words[2..].to_vec()
        } else if words.first().map(String::as_str) == Some("kubectl") {
            let Some(dashes) = words.iter().position(|w| w == "--") else {
                continue;
            };
            let rest = &words[dashes + 1..];
            match rest.first().map(String::as_str) {
                Some("podprobe") => rest[1..].to_vec(),
                // The image's entrypoint is podprobe.
                Some(_) if words.iter().any(|w| w.starts_with("--image=")) => rest.to_vec(),
                _ => continue,
            }
        } else {
            continue;
        };
        invocations.push(args);
    }
    invocations
}

#[test]
fn every_readme_example_uses_real_flags() {
    let invocations = readme_invocations();
    assert!(
        invocations.len() >= 15,
        "found only {} examples: {invocations:?}",
        invocations.len()
    );
    let mut commands: Vec<&str> = invocations
        .iter()
        .filter_map(|a| a.first().map(String::as_str))
        .collect();
    commands.sort_unstable();
    commands.dedup();
    for command in [
        "capture",
        "dns",
        "doctor",
        "grpc",
        "keepalive",
        "lab",
        "serve",
    ] {
        assert!(
            commands.contains(&command),
            "no example of {command}: {commands:?}"
        );
    }
    for args in &invocations {
        // Arguments after `--` belong to another program (`lab exec -- CMD`).
        let ours = args.split(|a| a == "--").next().unwrap_or_default();
        let out = run(podprobe().args(ours).arg("--help"));
        assert!(
            out.status.success(),
            "README example `podprobe {}` does not parse: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_wrong_flag_would_be_caught() {
    let out = run(podprobe().args(["capture", "--no-such-flag", "--help"]));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        shell_words(r#"capture -f 'udp port 53' -w "a b""#),
        ["capture", "-f", "udp port 53", "-w", "a b"]
    );
}

/// A README example marked `<!-- example: lab [SCENARIO]... -->`: the
/// command after `$ podprobe` and the output shown.
struct Example {
    scenarios: Vec<podprobe::lab::Scenario>,
    args: Vec<String>,
    output: String,
}

fn marked_examples() -> Vec<Example> {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));
    let mut examples = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(marker) = line
            .strip_prefix("<!-- example: lab")
            .and_then(|m| m.strip_suffix("-->"))
        else {
            continue;
        };
        let scenarios = marker
            .split_whitespace()
            .map(|name| {
                <podprobe::lab::Scenario as clap::ValueEnum>::from_str(name, false)
                    .unwrap_or_else(|e| panic!("README marker names scenario {name}: {e}"))
            })
            .collect();
        assert!(lines.next().is_some_and(|l| l.starts_with("```")));
        let command = lines.next().unwrap_or_default();
        let args = shell_words(
            command
                .strip_prefix("$ podprobe ")
                .unwrap_or_else(|| panic!("example starts with `$ podprobe`: {command}")),
        );
        let output: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        examples.push(Example {
            scenarios,
            args,
            output: output.join("\n"),
        });
    }
    examples
}

/// What an example shows, without timings, addresses or names: each
/// check's status and id in order, the verdict with its counts, the
/// flowchart's steps, its first failing step and first next command.
fn shape(text: &str) -> Vec<String> {
    let mut shape = Vec::new();
    let mut in_flowchart = false;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [status @ ("PASS" | "WARN" | "FAIL" | "SKIP" | "ERROR"), id, ..] = words[..] {
            if !line.starts_with(' ') {
                shape.push(format!("{status} {id}"));
            }
        } else if let Some(verdict) = line.strip_prefix("verdict: ") {
            // `FAIL (6 pass, 1 fail, 1 skip) in 1768 ms`: all but the time.
            let (counts, time) = verdict.rsplit_once(" in ").unwrap_or((verdict, ""));
            assert!(
                time.ends_with(" ms") && time.trim_end_matches(" ms").parse::<f64>().is_ok(),
                "verdict line form: {line}"
            );
            shape.push(format!("verdict: {counts}"));
        } else if line == "flowchart:" {
            in_flowchart = true;
            shape.push(line.to_string());
        } else if in_flowchart && line.starts_with("  ") {
            shape.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
        } else if line.starts_with("first failing step:") {
            in_flowchart = false;
            shape.push(line.to_string());
        } else if let Some(next) = line.strip_prefix("next: ") {
            shape.push(format!("next: {next}"));
        }
    }
    shape
}

#[test]
fn marked_readme_examples_have_the_shape_of_real_output() {
    let examples = marked_examples();
    assert!(!examples.is_empty(), "no marked examples in the README");
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = examples
            .iter()
            .map(|example| {
                scope.spawn(move || {
                    let mut spec = podprobe::lab::LabSpec::new(env!("CARGO_BIN_EXE_podprobe"));
                    spec.scenarios = example.scenarios.clone();
                    let lab = podprobe::lab::Lab::up(&spec).expect("lab up");
                    let out = run(lab
                        .podprobe(podprobe::lab::Pod::Client)
                        .args(&example.args));
                    let real = String::from_utf8_lossy(&out.stdout).to_string();
                    let (shown, got) = (shape(&example.output), shape(&real));
                    (shown != got).then(|| {
                        format!(
                            "`podprobe {}`: the README shows\n{}\nbut it prints\n{}\n(full output:\n{real})",
                            example.args.join(" "),
                            shown.join("\n"),
                            got.join("\n")
                        )
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().expect("example runs"))
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_shape_ignores_timings_and_keeps_statuses() {
    let a = "PASS  net.context  x 1.0 ms\n      detail\nFAIL  svc.reachability  web timed out after 1000.2 ms\n\nverdict: FAIL (1 pass, 1 fail) in 1768 ms\nflowchart:\n  1. Does DNS resolve?    PASS\nfirst failing step: none\nnext: podprobe node\n";
    let b = a.replace("1768", "12").replace("1000.2", "999.9");
    assert_eq!(shape(a), shape(&b));
    assert_eq!(shape(a).len(), 7);
    assert_ne!(shape(a), shape(&a.replace("FAIL  svc", "PASS  svc")));
}
