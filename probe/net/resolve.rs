//! Resolving a target's host name the way the pod's applications do (the
//! pod's /etc/resolv.conf and /etc/hosts), bounded by a timeout.

use std::net::{IpAddr, SocketAddr};
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
    Ok((host.to_string(), port))
}

/// All addresses of `host` (an IP literal is its own answer). Errors are
/// usage errors: an unknown host is bad input, like curl's exit 6.
pub async fn resolve_host(host: &str, timeout: Duration) -> crate::Result<Vec<IpAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let resolver = hickory_resolver::TokioResolver::builder_tokio()
        .map_err(|e| Error::unavailable(format!("cannot read the resolver configuration: {e}")))?
        .build()
        .map_err(|e| Error::unavailable(format!("cannot start the resolver: {e}")))?;
    let lookup = tokio::time::timeout(timeout, resolver.lookup_ip(host))
        .await
        .map_err(|_| {
            Error::usage(format!(
                "could not resolve host '{host}': no answer within {timeout:?}"
            ))
        })?
        .map_err(|e| {
            let why = if e.is_no_records_found() || e.is_nx_domain() {
                "no such name".to_string()
            } else {
                e.to_string()
            };
            Error::usage(format!("could not resolve host '{host}': {why}"))
        })?;
    let addrs: Vec<IpAddr> = lookup.iter().collect();
    if addrs.is_empty() {
        return Err(Error::usage(format!("could not resolve host '{host}'")));
    }
    Ok(addrs)
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
