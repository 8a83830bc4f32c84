//! Shell completions and manual pages, generated from the CLI definition so
//! they cannot drift from the real flags.

use clap::{Command, CommandFactory};

use crate::cli::Cli;

/// The completion script for `shell`, offering no hidden command (the
/// lab's internal helpers) in any shell.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(
        shell,
        &mut without_hidden(&Cli::command()),
        "podprobe",
        &mut out,
    );
    out
}

/// `cmd` with its hidden subcommands left out, at every level: clap's
/// completion generators list every subcommand, hidden or not.
fn without_hidden(cmd: &Command) -> Command {
    let mut out = Command::new(cmd.get_name().to_string())
        .args(cmd.get_arguments().cloned())
        .groups(cmd.get_groups().cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(without_hidden),
        );
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        out = out.version(version.to_string());
    }
    out
}

/// podprobe(1), or podprobe-COMMAND(1) for a command, podprobe-lab-up(1)
/// for a nested one, as git names them. Each page carries the global flags
/// and a synopsis of the command as typed (`podprobe lab up`).
pub fn man_page(path: &[String]) -> crate::Result<Vec<u8>> {
    let mut root = Cli::command().bin_name("podprobe");
    // Building propagates the global flags and names every subcommand
    // (bin name `podprobe lab up`, display name `podprobe-lab-up`).
    root.build();
    let mut page = &root;
    for name in path {
        page = page
            .find_subcommand(name)
            .filter(|s| s.get_name() != "help" && !s.is_hide_set())
            .ok_or_else(|| {
                crate::Error::usage(format!(
                    "no command '{}' to document (try 'podprobe man' for the list)",
                    path.join(" ")
                ))
            })?;
    }
    let mut out = Vec::new();
    clap_mangen::Man::new(page.clone())
        .render(&mut out)
        .map_err(|e| crate::Error::io("rendering the manual page", e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(path: &[&str]) -> String {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        String::from_utf8(man_page(&path).unwrap()).unwrap()
    }

    /// Every visible command, as its path of names.
    fn visible(cmd: &Command, path: Vec<String>, all: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            all.push(p.clone());
            visible(sub, p, all);
        }
    }

    #[test]
    fn every_command_has_a_page_with_the_global_flags_and_its_typed_synopsis() {
        let mut all = Vec::new();
        visible(&Cli::command(), Vec::new(), &mut all);
        assert!(all.iter().any(|p| p == &["lab", "up"]));
        for path in all {
            let refs: Vec<&str> = path.iter().map(String::as_str).collect();
            let text = page(&refs);
            let typed = format!("podprobe {}", path.join(" ")).replace('-', "\\-");
            assert!(
                text.contains(&format!("\\fB{typed}\\fR")),
                "{typed}:\n{text}"
            );
            for flag in ["\\-\\-timeout", "\\-\\-output", "\\-\\-fail\\-on"] {
                assert!(text.contains(flag), "{typed} lacks {flag}");
            }
        }
    }

    #[test]
    fn hidden_commands_are_in_no_page_and_no_completion() {
        assert!(man_page(&["lab".into(), "dns-delay".into()]).is_err());
        assert!(man_page(&["nosuch".into()]).is_err());
        assert!(!page(&["lab"]).contains("dns\\-delay"));
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
            clap_complete::Shell::Elvish,
            clap_complete::Shell::PowerShell,
        ] {
            let script = String::from_utf8(completions(shell)).unwrap();
            assert!(script.contains("doctor"), "{shell}");
            assert!(script.contains("timeout"), "{shell}");
            for hidden in ["dns-delay", "dns-front", "out-of-window"] {
                assert!(!script.contains(hidden), "{shell} offers {hidden}");
            }
        }
    }
}
