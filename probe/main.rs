//! `podprobe`: parse the command line, run one command, render its report and
//! exit with the documented code.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use podprobe::cli::{Cli, Command, GlobalArgs, OutputFormat};
use podprobe::report::{Report, EXIT_UNAVAILABLE, EXIT_USAGE};

/// What a command leaves for `main` to do.
enum Outcome {
    /// A verdict to render; its status decides the exit code.
    Report(Box<Report>),
    /// Bytes for stdout (completions, manual pages), then exit 0.
    Print(Vec<u8>),
    /// No report: exit with this code (the command printed what it had to).
    Exit(i32),
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
    let outcome: anyhow::Result<Outcome> = match cli.command {
        Command::Doctor(args) => podprobe::doctor::run(&args, &global)
            .map(|r| Outcome::Report(Box::new(r)))
            .map_err(anyhow::Error::from),
        Command::Completions { shell } => Ok(Outcome::Print(podprobe::docs::completions(shell))),
        Command::Man { command } => podprobe::docs::man_page(command.as_deref())
            .map(Outcome::Print)
            .map_err(anyhow::Error::from),
        Command::Lab(args) => podprobe::lab::command::run(&args, &global)
            .map(Outcome::Exit)
            .map_err(anyhow::Error::from),
        Command::Grpc(args) => podprobe::grpc::run(&args, &global)
            .map(|r| Outcome::Report(Box::new(r)))
            .map_err(anyhow::Error::from),
        Command::Serve(args) => podprobe::serve::run(&args)
            .map(|()| Outcome::Exit(0))
            .map_err(anyhow::Error::from),
        Command::Dns(args) => podprobe::dns::run(&args, &global)
            .map(|r| Outcome::Report(Box::new(r)))
            .map_err(anyhow::Error::from),
        Command::Keepalive(args) => podprobe::keepalive::run(&args, &global)
            .map(|r| Outcome::Report(Box::new(r)))
            .map_err(anyhow::Error::from),
        Command::Node(args) => podprobe::node::run(&args.options(&global))
            .map(|r| Outcome::Report(Box::new(r)))
            .map_err(anyhow::Error::from),
        Command::Capture(args) => podprobe::capture::run(&args, &global)
            .map(|done| match done {
                podprobe::capture::Done::Report(report) => Outcome::Report(report),
                podprobe::capture::Done::Exit(code) => Outcome::Exit(code),
            })
            .map_err(anyhow::Error::from),
    };
    match outcome {
        Ok(Outcome::Report(report)) => {
            print_report(&report, &global);
            exit(report.exit_code(global.fail_on))
        }
        Ok(Outcome::Print(bytes)) => {
            // A reader that went away (`| head`) has what it wanted.
            let _ = std::io::stdout().lock().write_all(&bytes);
            exit(0)
        }
        Ok(Outcome::Exit(code)) => exit(code),
        Err(err) => {
            eprintln!("podprobe: {err:#}");
            exit(
                err.downcast_ref::<podprobe::Error>()
                    .map_or(EXIT_UNAVAILABLE, podprobe::Error::exit_code),
            )
        }
    }
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
    let rendered = err.render().to_string();
    let first = rendered
        .lines()
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    eprintln!("podprobe: {first} (see 'podprobe --help')");
    exit(EXIT_USAGE)
}

fn print_report(report: &Report, global: &GlobalArgs) {
    let stdout = std::io::stdout();
    let text = match global.output {
        OutputFormat::Json => report.to_json() + "\n",
        OutputFormat::Text => {
            let colour = stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none();
            report.to_text(colour)
        }
    };
    // A reader that went away (`| head`) has what it wanted.
    let _ = stdout.lock().write_all(text.as_bytes());
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
