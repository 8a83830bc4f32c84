//! DNS as the pod's applications see it: resolv.conf read the way glibc
//! reads it, the nameservers, the search-list walk, the A/AAAA conntrack
//! race and latency, measured with podprobe's own client.

pub mod client;
pub mod fixes;
pub mod judge;
pub mod judge_race;
pub mod measure;
pub mod measure_race;
pub mod metrics;
pub mod model;
pub mod resolvconf;
pub mod search;

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::checks::{blocking, guarded};
use crate::report::{timed, Check, Report};
use measure::{LookupEvidence, ProcessLibc, SearchExpansionEvidence};
use model::{Model, Resolver};
use resolvconf::{Env, ResolvConf};

/// The name `doctor` asks every nameserver for when none is given.
pub const DEFAULT_DOCTOR_NAME: &str = "kubernetes.default.svc.cluster.local.";
/// The name `dns` looks up when none is given: a Service every cluster has,
/// in the short form applications use.
pub const DEFAULT_NAME: &str = "kubernetes.default";

/// resolv.conf's text and glibc's reading of it. A missing
/// /etc/resolv.conf is what the libraries cope with (defaults apply); any
/// other unreadable path is bad input.
pub fn load_resolv_conf(path: &Path) -> crate::Result<(String, ResolvConf)> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(cause)
            if cause.kind() == std::io::ErrorKind::NotFound
                && path == Path::new("/etc/resolv.conf") =>
        {
            String::new()
        }
        Err(cause) => {
            return Err(crate::Error::Input {
                path: path.display().to_string(),
                cause,
            })
        }
    };
    let conf = ResolvConf::parse(&text, &Env::from_process());
    Ok((text, conf))
}

/// Race attempts per pattern in `doctor`: enough to tell a race that hits
/// most lookups (as a node without the kernel fixes has) from plain loss,
/// about 1.5 s; `podprobe dns --race N` for intermittent ones.
pub const DOCTOR_RACE_ATTEMPTS: u32 = 10;

/// What `doctor` asks of this area.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// `--name` names: looked up as the app's resolver does, and raced.
    pub names: Vec<String>,
    pub resolv_conf: PathBuf,
    pub timeout: Duration,
    /// The app's resolver when its processes are not visible.
    pub resolver: Option<Resolver>,
}

/// What `podprobe dns` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Names as applications write them; [`DEFAULT_NAME`] when empty.
    pub names: Vec<String>,
    pub resolv_conf: PathBuf,
    /// `--server` nameservers instead of resolv.conf's.
    pub servers: Vec<String>,
    /// Queries per nameserver and name for `dns.latency` (0 skips it).
    pub count: u32,
    /// Attempts per sending pattern for `dns.timeout-race` (0 skips it).
    pub race: u32,
    pub timeout: Duration,
    /// The app's resolver when its processes are not visible.
    pub resolver: Option<Resolver>,
}

/// The application's resolver: `--resolver`, else the library of the pod's
/// visible processes, else glibc. Returns the model, why it was chosen and
/// the processes seen.
fn app_model(
    chosen: Option<Resolver>,
    text: &str,
    servers: Vec<SocketAddr>,
) -> (Model, String, Vec<ProcessLibc>) {
    let processes = measure::pod_processes(Path::new("/proc"));
    let (resolver, source) = match chosen {
        Some(r) => (r, "--resolver".to_string()),
        None => {
            let known: Vec<(&ProcessLibc, Resolver)> = processes
                .iter()
                .filter_map(|p| p.resolver().map(|r| (p, r)))
                .collect();
            match known.first() {
                None => (Resolver::Glibc, "assumed".to_string()),
                Some(&(_, first)) => {
                    let list: Vec<String> = known
                        .iter()
                        .map(|(p, r)| format!("{} (pid {}) uses {}", p.comm, p.pid, r.name()))
                        .collect();
                    (
                        first,
                        format!("from the pod's processes: {}", judge::capped(&list, ", ")),
                    )
                }
            }
        }
    };
    let model = Model::new(resolver, text, &Env::from_process()).with_servers(servers);
    (model, source, processes)
}

/// `doctor`'s DNS checks: resolv.conf, the nameservers and, for `--name`
/// names, the lookups and a short race. The latency series stays in
/// `podprobe dns` so doctor stays fast.
pub async fn doctor_checks(options: &DoctorOptions) -> crate::Result<Vec<Check>> {
    let options = options.clone();
    blocking(move || doctor_checks_blocking(&options)).await?
}

fn doctor_checks_blocking(options: &DoctorOptions) -> crate::Result<Vec<Check>> {
    let (text, conf) = load_resolv_conf(&options.resolv_conf)?;
    for name in &options.names {
        client::parse_name(name)?;
    }
    let probe = options
        .names
        .first()
        .map_or(DEFAULT_DOCTOR_NAME.to_string(), |n| model_absolute(n));
    let path = options.resolv_conf.display().to_string();
    let timeout = options.timeout;
    let (model, source, processes) = app_model(options.resolver, &text, Vec::new());
    let mut checks = vec![
        timed(|| judge::resolv_conf(&path, &conf, &model)),
        guarded("dns.nameservers", "Nameservers answer", || {
            judge::nameservers(&measure::nameservers(model.servers(), &probe, timeout))
        }),
    ];
    if !options.names.is_empty() {
        let (check, walked) = search_check(&options.names, &model, &source, timeout);
        checks.push(check);
        checks.push(race_check(
            DOCTOR_RACE_ATTEMPTS,
            &walked,
            &model,
            &conf,
            processes,
            timeout,
        ));
    }
    Ok(checks)
}

/// `name` with a trailing dot.
fn model_absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// `podprobe dns`.
pub async fn run(options: &Options) -> crate::Result<Report> {
    let options = options.clone();
    blocking(move || run_blocking(&options)).await?
}

fn run_blocking(args: &Options) -> crate::Result<Report> {
    let (text, conf) = load_resolv_conf(&args.resolv_conf)?;
    let servers = args
        .servers
        .iter()
        .map(|s| parse_server(s))
        .collect::<crate::Result<Vec<_>>>()?;
    let names = if args.names.is_empty() {
        vec![DEFAULT_NAME.to_string()]
    } else {
        args.names.clone()
    };
    for name in &names {
        client::parse_name(name)?;
    }
    let report = Report::start(crate::net::report_context());
    let path = args.resolv_conf.display().to_string();
    let (model, source, processes) = app_model(args.resolver, &text, servers);
    let mut checks = vec![timed(|| judge::resolv_conf(&path, &conf, &model))];
    let (check, walked) = search_check(&names, &model, &source, args.timeout);
    checks.push(check);
    // Latency measures the names as they resolved (as is when not).
    let mut resolved: Vec<String> = Vec::new();
    for l in &walked.lookups {
        let fqdn = l
            .resolved_as
            .clone()
            .unwrap_or_else(|| model_absolute(&l.name));
        if !resolved.contains(&fqdn) {
            resolved.push(fqdn);
        }
    }
    checks.push(race_check(
        args.race,
        &walked,
        &model,
        &conf,
        processes,
        args.timeout,
    ));
    checks.push(if args.count == 0 {
        Check::skipped(
            "dns.latency",
            "DNS latency per nameserver",
            "disabled with --count 0",
        )
    } else {
        guarded("dns.latency", "DNS latency per nameserver", || {
            judge::latency(&measure::latency(
                model.servers(),
                &resolved,
                args.count,
                args.timeout,
            ))
        })
    });
    Ok(report.finish(checks))
}

fn search_check(
    names: &[String],
    model: &Model,
    source: &str,
    timeout: Duration,
) -> (Check, SearchExpansionEvidence) {
    if std::io::stderr().is_terminal() {
        eprintln!(
            "podprobe: looking up {} as {} does...",
            judge::capped(names, ", "),
            model.resolver.describe()
        );
    }
    let mut evidence = None;
    let check = guarded(
        "dns.search-expansion",
        "DNS lookups as the app's resolver makes them",
        || {
            let lookups: Vec<LookupEvidence> = measure::lookups(names, model, timeout);
            let ev = SearchExpansionEvidence::new(model, source, lookups);
            let check = judge::search_expansion(&ev);
            evidence = Some(ev);
            check
        },
    );
    let evidence =
        evidence.unwrap_or_else(|| SearchExpansionEvidence::new(model, source, Vec::new()));
    (check, evidence)
}

fn race_check(
    attempts: u32,
    walked: &SearchExpansionEvidence,
    model: &Model,
    conf: &ResolvConf,
    processes: Vec<ProcessLibc>,
    timeout: Duration,
) -> Check {
    const ID: &str = "dns.timeout-race";
    const TITLE: &str = "DNS 5 s timeouts (A/AAAA conntrack race)";
    if attempts == 0 {
        return Check::skipped(ID, TITLE, "disabled with --race 0");
    }
    let Some(name) = walked.lookups.iter().find_map(|l| l.resolved_as.clone()) else {
        return Check::skipped(
            ID,
            TITLE,
            "no name resolved; the race needs a name that does",
        );
    };
    let Some(&server) = model.servers().first() else {
        return Check::skipped(ID, TITLE, "no nameserver");
    };
    if std::io::stderr().is_terminal() {
        eprintln!(
            "podprobe: {attempts} attempts of each A/AAAA pattern for {name} to {server} (a few seconds)..."
        );
    }
    let settings = model.settings();
    let context = measure_race::RaceContext {
        fixes_in_effect: fixes::race_fixes(model.resolver, &settings),
        ignored_options: fixes::ignored_race_options(model.resolver, &conf.options),
        processes,
    };
    guarded(ID, TITLE, || {
        judge_race::timeout_race(&measure_race::race(
            &name, server, model, attempts, timeout, context,
        ))
    })
}

/// `ADDR`, `ADDR:PORT` or `[V6ADDR]:PORT`, port 53 by default.
pub fn parse_server(text: &str) -> crate::Result<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| {
            crate::Error::usage(format!(
                "--server '{text}' is not an IP address or ADDR:PORT"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_forms() {
        assert_eq!(
            parse_server("10.96.0.10").unwrap(),
            SocketAddr::from(([10, 96, 0, 10], 53))
        );
        assert_eq!(
            parse_server("127.0.0.1:5353").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 5353))
        );
        assert_eq!(parse_server("[fd00::a]:53").unwrap().port(), 53);
        assert_eq!(parse_server("fd00::a").unwrap().port(), 53);
        assert!(parse_server("kube-dns").is_err());
    }
}
