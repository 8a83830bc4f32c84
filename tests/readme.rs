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
