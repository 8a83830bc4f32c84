//! `podprobe`: parse the command line, run one command, render its report and
//! exit with the documented code.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use podprobe::cli::{Cli, Command, GlobalArgs, OutputFormat};
use podprobe::report::{Report, EXIT_UNAVAILABLE, EXIT_USAGE};

/// Where the report goes: stderr when stdout carries a pcap stream.
enum ReportTo {
    Stdout,
    Stderr,
}

/// What a command leaves for `main` to do.
enum Outcome {
    /// A verdict to render; its status decides the exit code.
    Report(Box<Report>, ReportTo),
    /// Bytes for stdout (completions, manual pages), then exit 0.
    Print(Vec<u8>),
    /// No report: exit with this code (the command printed what it had to).
    Exit(i32),
    /// A verdict to render, then what went wrong after it (a failed
    /// `--push`): exit 3 unless the verdict itself fails.
    ReportThen(Box<Report>, podprobe::Error),
}

fn main() -> ExitCode {
    // A bug must still read as one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        eprintln!("podprobe: internal error: {message}{location} (please report it)");
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    let global = cli.global.clone();
    let outcome = run(cli.command, &global);
    match outcome {
        Ok(Outcome::Report(report, to)) => {
            print_report(&report, &global, to);
            exit(report.exit_code(global.fail_on))
        }
        Ok(Outcome::Print(bytes)) => {
            // A reader that went away (`| head`) has what it wanted.
            let _ = std::io::stdout().lock().write_all(&bytes);
            exit(0)
        }
        Ok(Outcome::Exit(code)) => exit(code),
        Ok(Outcome::ReportThen(report, err)) => {
            print_report(&report, &global, ReportTo::Stdout);
            eprintln!("podprobe: {err}");
            exit(match report.exit_code(global.fail_on) {
                podprobe::report::EXIT_FAIL => podprobe::report::EXIT_FAIL,
                _ => err.exit_code(),
            })
        }
        Err(err) => {
            eprintln!("podprobe: {err:#}");
            exit(
                err.downcast_ref::<podprobe::Error>()
                    .map_or(EXIT_UNAVAILABLE, podprobe::Error::exit_code),
            )
        }
    }
}

/// Runs one command. The process's one tokio runtime is built here, for the
/// commands that need it; no area builds its own.
fn run(command: Command, global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let report = |r: Report| Outcome::Report(Box::new(r), ReportTo::Stdout);
    if global.output == OutputFormat::Json {
        // Never silently ignored: a command with no JSON form says so.
        let no_json = match &command {
            Command::Completions { .. } => Some("completions prints a shell script"),
            Command::Man { .. } => Some("man prints a manual page in roff"),
            _ => None,
        };
        if let Some(what) = no_json {
            return Err(
                podprobe::Error::usage(format!("-o json: {what}, which has no JSON form")).into(),
            );
        }
    }
    Ok(match command {
        Command::Completions { shell } => Outcome::Print(podprobe::docs::completions(shell)),
        Command::Man { command } => Outcome::Print(podprobe::docs::man_page(&command)?),
        Command::Lab(args) => Outcome::Exit(podprobe::lab::command::run(&args.action(global))?),
        Command::Capture(args) => match podprobe::capture::run(&args.options(global))? {
            podprobe::capture::Done::Report { report, to_stderr } => Outcome::Report(
                report,
                if to_stderr {
                    ReportTo::Stderr
                } else {
                    ReportTo::Stdout
                },
            ),
            podprobe::capture::Done::Exit(code) => Outcome::Exit(code),
        },
        Command::Doctor(args) => {
            let runtime = runtime()?;
            let done = runtime.block_on(podprobe::doctor::run(&args.plan(global)))?;
            let pushed = args.push.as_ref().map(|url| {
                runtime.block_on(podprobe::metrics::push::push_report(
                    url,
                    &done,
                    global.timeout,
                ))
            });
            match pushed {
                Some(Err(e)) => Outcome::ReportThen(Box::new(done), e),
                _ => report(done),
            }
        }
        Command::Watch(args) => {
            let runtime = runtime()?;
            let watched = runtime.block_on(podprobe::watch::run(&args.options(global)));
            // A measurement still blocked on a socket has no one left to
            // report to: do not let it hold up the exit.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            watched?;
            Outcome::Exit(0)
        }
        Command::Dns(args) => {
            report(runtime()?.block_on(podprobe::dns::run(&args.options(global)))?)
        }
        Command::Grpc(args) => {
            report(runtime()?.block_on(podprobe::grpc::run(&args.options(global)))?)
        }
        Command::Keepalive(args) => {
            report(runtime()?.block_on(podprobe::keepalive::run(&args.options(global)))?)
        }
        Command::Node(args) => {
            report(runtime()?.block_on(podprobe::node::run(&args.options(global)))?)
        }
        Command::Serve(args) => {
            runtime()?.block_on(podprobe::serve::run(&args.options(global)))?;
            Outcome::Exit(0)
        }
    })
}

fn runtime() -> podprobe::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| podprobe::Error::io("starting the async runtime", e))
}

/// clap's errors span several lines; a script wants one, as kubectl gives.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let code = if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            EXIT_USAGE
        } else {
            0
        };
        // A closed stdout (`podprobe --help | head -1`) is not an error.
        let _ = write!(std::io::stdout(), "{}", err.render());
        return exit(code);
    }
    eprintln!("podprobe: {}", one_line(&err.render().to_string()));
    exit(EXIT_USAGE)
}

/// clap's message on one line, keeping what helps: the missing argument,
/// the valid values, the suggestion; then the help to read, for the command
/// the usage line names (`see 'podprobe keepalive --help'`).
fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut message = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_string();
    let mut command = "podprobe".to_string();
    let mut listing = false;
    for line in lines {
        if let Some(usage) = line.strip_prefix("Usage: ") {
            command = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']))
                .collect::<Vec<_>>()
                .join(" ");
        } else if line.starts_with("For more information") {
            continue;
        } else if message.ends_with(':') {
            // The items of a list clap announced with a colon.
            message.push(' ');
            message.push_str(line);
            listing = true;
        } else if listing && !line.contains(':') {
            message.push_str(", ");
            message.push_str(line);
        } else {
            message.push_str(if line.starts_with('[') { " " } else { "; " });
            message.push_str(line);
            listing = false;
        }
    }
    format!("{message} (see '{command} --help')")
}

fn print_report(report: &Report, global: &GlobalArgs, to: ReportTo) {
    let (mut out, terminal): (Box<dyn Write>, bool) = match to {
        ReportTo::Stdout => (
            Box::new(std::io::stdout().lock()),
            std::io::stdout().is_terminal(),
        ),
        ReportTo::Stderr => (
            Box::new(std::io::stderr().lock()),
            std::io::stderr().is_terminal(),
        ),
    };
    let text = match global.output {
        OutputFormat::Json => report.to_json() + "\n",
        OutputFormat::Text => report.to_text(terminal && std::env::var_os("NO_COLOR").is_none()),
    };
    // A reader that went away (`| head`) has what it wanted.
    let _ = out.write_all(text.as_bytes());
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn usage_errors_keep_their_detail_on_one_line() {
        let missing = "error: the following required arguments were not provided:\n  <UPSTREAM>\n  --path <P>\n\nUsage: podprobe keepalive --path <P> <UPSTREAM>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(missing),
            "the following required arguments were not provided: <UPSTREAM>, --path <P> (see 'podprobe keepalive --help')"
        );
        let values = "error: invalid value 'yaml' for '--output <OUTPUT>'\n  [possible values: text, json]\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(values),
            "invalid value 'yaml' for '--output <OUTPUT>' [possible values: text, json] (see 'podprobe --help')"
        );
        let tip = "error: unrecognized subcommand 'dosctor'\n\n  tip: a similar subcommand exists: 'doctor'\n\nUsage: podprobe [OPTIONS] <COMMAND>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(tip),
            "unrecognized subcommand 'dosctor'; tip: a similar subcommand exists: 'doctor' (see 'podprobe --help')"
        );
    }
}
