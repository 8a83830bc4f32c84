//! DNS as the pod's applications see it: resolv.conf read the way glibc
//! reads it, the nameservers, the search-list walk, the A/AAAA conntrack
//! race and latency, measured with podprobe's own client.

pub mod client;
pub mod judge;
pub mod measure;
pub mod metrics;
pub mod resolvconf;
pub mod search;

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::Name;

use crate::checks::blocking;
use crate::report::{timed, Check, Report};
use measure::SearchExpansionEvidence;
use resolvconf::{Env, ResolvConf};

/// The name `doctor` asks every nameserver for when none is given.
pub const DEFAULT_DOCTOR_NAME: &str = "kubernetes.default.svc.cluster.local.";
/// The name `dns` looks up when none is given: a Service every cluster has,
/// in the short form applications use.
pub const DEFAULT_NAME: &str = "kubernetes.default";

/// Reads the resolv.conf in use. A missing /etc/resolv.conf is what glibc
/// copes with (defaults apply); any other unreadable path is bad input.
pub fn load_resolv_conf(path: &Path) -> crate::Result<ResolvConf> {
    match ResolvConf::load(path) {
        Err(crate::Error::Input { cause, .. })
            if cause.kind() == std::io::ErrorKind::NotFound
                && path == Path::new("/etc/resolv.conf") =>
        {
            Ok(ResolvConf::parse("", &Env::from_process()))
        }
        other => other,
    }
}

/// Race attempts per pattern in `doctor`: enough to show a race that hits
/// most lookups (as a node without the kernel fixes does), cheap when
/// healthy; `podprobe dns --race N` for intermittent ones.
pub const DOCTOR_RACE_ATTEMPTS: u32 = 3;

/// What `doctor` asks of this area.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// `--name` names: walked through the search list and raced.
    pub names: Vec<String>,
    pub resolv_conf: PathBuf,
    pub timeout: Duration,
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
}

/// `doctor`'s DNS checks: resolv.conf, the nameservers and, for `--name`
/// names, the search-list walk and a short race. The latency series stays
/// in `podprobe dns` so doctor stays fast.
pub async fn doctor_checks(options: &DoctorOptions) -> crate::Result<Vec<Check>> {
    let options = options.clone();
    blocking(move || doctor_checks_blocking(&options)).await?
}

fn doctor_checks_blocking(options: &DoctorOptions) -> crate::Result<Vec<Check>> {
    let conf = load_resolv_conf(&options.resolv_conf)?;
    for name in &options.names {
        client::parse_name(name)?;
    }
    let probe = client::parse_name(
        options
            .names
            .first()
            .map_or(DEFAULT_DOCTOR_NAME, String::as_str),
    )?;
    let path = options.resolv_conf.display().to_string();
    let servers = conf.servers();
    let timeout = options.timeout;
    let mut checks = vec![
        timed(|| judge::resolv_conf(&path, &conf)),
        timed(|| judge::nameservers(&measure::nameservers(&servers, &probe, timeout))),
    ];
    if !options.names.is_empty() {
        let (check, walked) = search_check(&options.names, &conf, &servers, timeout);
        checks.push(check);
        checks.push(race_check(DOCTOR_RACE_ATTEMPTS, &walked, &servers, timeout));
    }
    Ok(checks)
}

/// `podprobe dns`.
pub async fn run(options: &Options) -> crate::Result<Report> {
    let options = options.clone();
    blocking(move || run_blocking(&options)).await?
}

fn run_blocking(args: &Options) -> crate::Result<Report> {
    let conf = load_resolv_conf(&args.resolv_conf)?;
    let servers = if args.servers.is_empty() {
        conf.servers()
    } else {
        args.servers
            .iter()
            .map(|s| parse_server(s))
            .collect::<crate::Result<Vec<_>>>()?
    };
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
    let mut checks = vec![timed(|| judge::resolv_conf(&path, &conf))];
    let (check, walked) = search_check(&names, &conf, &servers, args.timeout);
    checks.push(check);
    // Race and latency measure the names as they resolved (as is when not).
    let mut resolved: Vec<Name> = Vec::new();
    for l in &walked.lookups {
        let fqdn = l.resolved_as.as_deref().unwrap_or(&l.name);
        if let Ok(name) = client::parse_name(fqdn) {
            if !resolved.contains(&name) {
                resolved.push(name);
            }
        }
    }
    checks.push(race_check(args.race, &walked, &servers, args.timeout));
    checks.push(if args.count == 0 {
        Check::skipped(
            "dns.latency",
            "DNS latency per nameserver",
            "disabled with --count 0",
        )
    } else {
        timed(|| {
            judge::latency(&measure::latency(
                &servers,
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
    conf: &ResolvConf,
    servers: &[SocketAddr],
    timeout: Duration,
) -> (Check, SearchExpansionEvidence) {
    let mut evidence = None;
    let check = timed(|| {
        let ev = measure::search_expansion(names, conf, servers, timeout);
        let check = judge::search_expansion(&ev);
        evidence = Some(ev);
        check
    });
    let evidence = evidence.unwrap_or_else(|| SearchExpansionEvidence::new(conf, Vec::new()));
    (check, evidence)
}

fn race_check(
    attempts: u32,
    walked: &SearchExpansionEvidence,
    servers: &[SocketAddr],
    timeout: Duration,
) -> Check {
    const ID: &str = "dns.timeout-race";
    const TITLE: &str = "DNS 5 s timeouts (A/AAAA conntrack race)";
    if attempts == 0 {
        return Check::skipped(ID, TITLE, "disabled with --race 0");
    }
    let Some(name) = walked
        .lookups
        .iter()
        .find_map(|l| l.resolved_as.as_deref())
        .and_then(|fqdn| client::parse_name(fqdn).ok())
    else {
        return Check::skipped(
            ID,
            TITLE,
            "no name resolved; the race needs a name that does",
        );
    };
    let Some(&server) = servers.first() else {
        return Check::skipped(ID, TITLE, "no nameserver");
    };
    if std::io::stderr().is_terminal() {
        eprintln!(
            "podprobe: {attempts} A/AAAA lookups of {name} per pattern to {server} (up to {} s)...",
            (timeout * attempts * 2).as_secs()
        );
    }
    timed(|| judge::timeout_race(&measure::race(&name, server, attempts, timeout)))
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
