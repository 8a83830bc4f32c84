//! Shell completions and manual pages, generated from the CLI definition so
//! they cannot drift from the real flags.

use clap::CommandFactory;

use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "podprobe", &mut out);
    out
}

/// podprobe(1), or podprobe-COMMAND(1) for one command, as git names them.
pub fn man_page(command: Option<&str>) -> crate::Result<Vec<u8>> {
    let root = Cli::command();
    let page = match command {
        None => root,
        Some(name) => {
            let sub = root
                .find_subcommand(name)
                .filter(|s| s.get_name() != "help")
                .ok_or_else(|| crate::Error::usage(format!("no command '{name}' to document")))?
                .clone();
            sub.name(format!("podprobe-{name}"))
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(|e| crate::Error::io("rendering the manual page", e))?;
    Ok(out)
}
