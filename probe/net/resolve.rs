//! Resolving a target's host name the way the pod's applications do (the
//! pod's /etc/resolv.conf and /etc/hosts), bounded by a timeout.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::Error;

/// Splits `HOST:PORT` (`[v6]:PORT` for IPv6 literals).
pub fn split_host_port(target: &str) -> crate::Result<(String, u16)> {
    let bad = || {
        Error::usage(format!(
            "'{target}' is not HOST:PORT (use [ADDR]:PORT for IPv6)"
        ))
    };
    let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    let port = port.parse::<u16>().map_err(|_| bad())?;
    if port == 0 {
        // Nothing listens on port 0: connecting there says nothing about the
        // target, so it is bad input, not "unreachable".
        return Err(Error::usage(format!(
            "'{target}': port 0 cannot be connected to; give the port the target listens on"
        )));
    }
    Ok((host.to_string(), port))
}

/// All addresses of `host` (an IP literal is its own answer). Errors are
/// usage errors: an unknown host is bad input, like curl's exit 6.
pub async fn resolve_host(host: &str, timeout: Duration) -> crate::Result<Vec<IpAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    // /etc/hosts first, as glibc ("hosts: files dns"), musl and Go do: a
    // name there resolves even when no DNS server answers.
    let hosts_first =
        std::fs::read_to_string("/etc/nsswitch.conf").map_or(true, |conf| files_before_dns(&conf));
    if hosts_first {
        if let Ok(text) = std::fs::read_to_string("/etc/hosts") {
            let addrs = hosts_lookup(&text, host);
            if !addrs.is_empty() {
                return Ok(addrs);
            }
        }
    }
    // The lookup glibc's getaddrinfo does (the static binary is glibc):
    // the same search walk and retries the DNS checks model, on the wire.
    let name = host.to_string();
    let lookup = crate::checks::blocking(move || lookup_like_glibc(&name, timeout));
    let why = match tokio::time::timeout(timeout, lookup).await {
        Err(_) => format!(
            "no answer within {}{}",
            humantime::format_duration(timeout),
            missing_resolv_conf_note(!Path::new(RESOLV_CONF).exists())
        ),
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(Ok(addrs))) if !addrs.is_empty() => return Ok(addrs),
        Ok(Ok(Ok(_))) => "no addresses".to_string(),
        Ok(Ok(Err(why))) => why,
    };
    Err(Error::usage(format!(
        "could not resolve host '{host}': {why}"
    )))
}

const RESOLV_CONF: &str = "/etc/resolv.conf";

/// `name`'s addresses as glibc resolves it with /etc/resolv.conf, each wait
/// capped at `timeout`; the reason in words when it does not resolve.
fn lookup_like_glibc(name: &str, timeout: Duration) -> Result<Vec<IpAddr>, String> {
    use crate::dns::model::{Model, Outcome, Resolver};
    let (text, missing) = match std::fs::read(RESOLV_CONF) {
        Ok(bytes) => (String::from_utf8_lossy(&bytes).into_owned(), false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), true),
        Err(e) => return Err(format!("cannot read {RESOLV_CONF}: {e}")),
    };
    let env = crate::dns::resolvconf::Env::from_process();
    let model = Model::new(Resolver::Glibc, &text, &env);
    let trace = model.resolve(name, &mut crate::dns::client::Wire::new(timeout));
    let why = match trace.outcome {
        Outcome::Resolved { addresses } => return Ok(addresses.into_iter().collect()),
        Outcome::Failed { error } => match error.as_str() {
            "EAI_NONAME" => "no such name".to_string(),
            "EAI_NODATA" => "the name has no addresses".to_string(),
            "EAI_AGAIN" => "the nameservers did not answer".to_string(),
            other => other.to_string(),
        },
        other => other.to_string(),
    };
    Err(format!("{why}{}", missing_resolv_conf_note(missing)))
}

/// Why the resolver asked 127.0.0.1, when it did for want of a resolv.conf.
fn missing_resolv_conf_note(missing: bool) -> String {
    if missing {
        format!(" ({RESOLV_CONF} is missing, so the resolver asks 127.0.0.1:53)")
    } else {
        String::new()
    }
}

/// The addresses /etc/hosts gives `name` (case-insensitive, a trailing dot
/// ignored), in file order.
pub fn hosts_lookup(hosts: &str, name: &str) -> Vec<IpAddr> {
    let name = name.trim_end_matches('.');
    hosts
        .lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("");
            let mut fields = line.split_whitespace();
            let ip = fields.next()?.parse::<IpAddr>().ok()?;
            fields
                .any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(name))
                .then_some(ip)
        })
        .collect()
}

/// nsswitch.conf's `hosts:` line consults files before dns (also when it
/// has no such line, glibc's default).
pub(crate) fn files_before_dns(conf: &str) -> bool {
    let Some(sources) = conf.lines().find_map(|l| {
        l.split('#')
            .next()
            .unwrap_or("")
            .trim()
            .strip_prefix("hosts:")
    }) else {
        return true;
    };
    let position = |s: &str| sources.split_whitespace().position(|w| w == s);
    match (position("files"), position("dns")) {
        (Some(f), Some(d)) => f < d,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// `HOST:PORT` to socket addresses, resolving the host.
pub async fn resolve_target(target: &str, timeout: Duration) -> crate::Result<Vec<SocketAddr>> {
    let (host, port) = split_host_port(target)?;
    Ok(resolve_host(&host, timeout)
        .await?
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("web.default:80").ok(),
            Some(("web.default".to_string(), 80))
        );
        assert_eq!(
            split_host_port("[::1]:8080").ok(),
            Some(("::1".to_string(), 8080))
        );
        assert!(split_host_port("web").is_err());
        assert!(split_host_port(":80").is_err());
        assert!(split_host_port("web:http").is_err());
        assert!(split_host_port("web:70000").is_err());
        assert!(split_host_port("web:0")
            .unwrap_err()
            .to_string()
            .contains("port 0"));
    }

    #[test]
    fn hosts_file_names_as_libc_reads_them() {
        let hosts = "127.0.0.1\tlocalhost\n# 10.0.0.9 commented\n10.96.0.7 details details.default.svc.cluster.local # svc\nfe80::1%eth0 bad\n::1 localhost ip6-localhost\n";
        assert_eq!(
            hosts_lookup(hosts, "DETAILS."),
            vec![IpAddr::from([10, 96, 0, 7])]
        );
        assert_eq!(
            hosts_lookup(hosts, "localhost"),
            vec![
                IpAddr::from([127, 0, 0, 1]),
                "::1".parse::<IpAddr>().unwrap()
            ]
        );
        assert!(hosts_lookup(hosts, "commented").is_empty());
        assert!(files_before_dns("hosts: files dns\n"));
        assert!(files_before_dns("passwd: files\n"));
        assert!(!files_before_dns("hosts: dns files\n"));
        assert!(!files_before_dns("hosts: dns\n"));
    }

    #[tokio::test]
    async fn literals_and_localhost_resolve_without_dns() {
        assert_eq!(
            resolve_host("127.0.0.1", Duration::from_secs(1)).await.ok(),
            Some(vec![IpAddr::from([127, 0, 0, 1])])
        );
        let local = resolve_host("localhost", Duration::from_secs(1))
            .await
            .unwrap_or_default();
        assert!(local.iter().any(|ip| ip.is_loopback()), "{local:?}");
    }
}
