//! The lab's contact with the system: the tools it drives, running them,
//! and running code inside a network namespace.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{cleanup, Error, Result};

/// The external tools the lab drives, each with the Debian package providing it.
const TOOLS: [(&str, &str); 5] = [
    ("ip", "iproute2"),
    ("iptables", "iptables"),
    ("iptables-restore", "iptables"),
    ("conntrack", "conntrack"),
    ("dnsmasq", "dnsmasq-base"),
];

/// Building namespaces, veths and rules needs root; say so in one line
/// (a usage error: the command was run the wrong way).
pub(crate) fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::usage(
            "the lab builds network namespaces and iptables rules: run it as root (e.g. with sudo)",
        ));
    }
    Ok(())
}

/// Fails naming every missing tool and the package that provides it.
pub(crate) fn require_tools() -> Result<()> {
    let missing: Vec<String> = TOOLS
        .iter()
        .filter(|(tool, _)| find_tool(tool).is_none())
        .map(|(tool, package)| format!("{tool} (package {package})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::unavailable(format!(
            "the lab needs {}; install with scripts/setup or apt-get install",
            missing.join(", ")
        )))
    }
}

/// Looks a tool up in PATH, as `ip netns exec` will look up its command.
pub(crate) fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// A `Command` for a tool found by [`find_tool`] (or by name, so a missing
/// one fails with a readable spawn error).
pub(crate) fn tool(name: &str) -> Command {
    Command::new(find_tool(name).unwrap_or_else(|| PathBuf::from(name)))
}

/// Runs a command to completion, feeding it `stdin`; a failure carries the
/// command line and its stderr. It is a step of the process's cleanup
/// ([`cleanup::making`]): a signal's cleanup waits for it, and a Ctrl-C at
/// the terminal does not cut it short.
pub(crate) fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    cleanup::making(|| run_step(cmd, stdin))
}

fn run_step(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let line = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cleanup::own_process_group(cmd)
        .spawn()
        .map_err(|e| Error::io(line.clone(), e))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| Error::io(line.clone(), e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(line.clone(), e))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::unavailable(format!(
            "`{line}` failed ({}): {}",
            out.status,
            stderr.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts a long-running process of the lab (a step, as in [`run`]).
pub(crate) fn spawn(cmd: &mut Command) -> Result<Child> {
    cleanup::making(|| cmd.spawn()).map_err(|e| Error::io(describe(cmd), e))
}

/// Creates a directory and its parents (a step, as in [`run`], so that no
/// directory comes back after the cleanup removed it).
pub(crate) fn create_dir(path: &Path) -> Result<()> {
    cleanup::making(|| std::fs::create_dir_all(path))
        .map_err(|e| Error::io(path.display().to_string(), e))
}

/// The command line as a person would type it, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `f` on a thread that has entered network namespace `netns`
/// (`/run/netns/<netns>`). Sockets it creates stay in that namespace after
/// it returns, so a listener or connection made here can be used anywhere.
pub(crate) fn in_netns<T, F>(netns: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let path = Path::new("/run/netns").join(netns);
    let file = File::open(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            // SAFETY: a valid namespace fd; setns only changes this thread.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(Error::io(
                    format!("entering network namespace {netns}"),
                    std::io::Error::last_os_error(),
                ));
            }
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
