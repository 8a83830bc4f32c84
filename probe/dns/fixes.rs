//! Fixes for DNS trouble that may already be in effect in the pod. The
//! judges say they are in effect and whether they work, and never
//! recommend them again.

use std::net::{IpAddr, SocketAddr};

use super::model::{Resolver, Settings};

/// The resolv.conf options against the A/AAAA race that `resolver` honours.
const RACE_OPTIONS: [&str; 3] = ["single-request-reopen", "single-request", "use-vc"];

/// What keeps this application's A and AAAA queries from sharing a
/// conntrack entry: the options its library honours, Go's separate sockets,
/// a link-local nameserver (NodeLocal DNSCache: no DNAT, no conntrack).
pub fn race_fixes(resolver: Resolver, settings: &Settings) -> Vec<String> {
    let mut fixes: Vec<String> = match resolver {
        Resolver::Glibc => RACE_OPTIONS
            .iter()
            .filter(|o| settings.options.iter().any(|s| s == *o))
            .map(|o| format!("options {o}"))
            .collect(),
        Resolver::Go => {
            let mut go = vec!["separate sockets per query (Go's resolver)".to_string()];
            if settings.options.iter().any(|o| o == "use-vc") {
                go.push("options use-vc".to_string());
            }
            go
        }
        Resolver::Musl | Resolver::Musl123 => Vec::new(),
    };
    fixes.extend(nodelocal(&settings.nameservers));
    fixes
}

/// Race options set in resolv.conf that this library ignores (musl
/// ignores them all).
pub fn ignored_race_options(resolver: Resolver, set: &[String]) -> Vec<String> {
    if !matches!(resolver, Resolver::Musl | Resolver::Musl123) {
        return Vec::new();
    }
    RACE_OPTIONS
        .iter()
        .filter(|o| set.iter().any(|s| s == *o))
        .map(|o| o.to_string())
        .collect()
}

/// NodeLocal DNSCache: pods query a link-local address on their node.
pub fn nodelocal(servers: &[SocketAddr]) -> Option<String> {
    servers
        .iter()
        .find(|s| match s.ip() {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        })
        .map(|s| format!("NodeLocal DNSCache (link-local nameserver {})", s.ip()))
}

/// ndots already lowered from the kubelet's 5 in a Kubernetes search list.
pub fn ndots_lowered(ndots: u32, search: &[String]) -> Option<String> {
    let kubernetes = search.iter().any(|d| d.contains(".svc."));
    (kubernetes && ndots < 5).then(|| format!("options ndots:{ndots}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(servers: &[&str], options: &[&str], ndots: u32) -> Settings {
        Settings {
            nameservers: servers
                .iter()
                .map(|s| format!("{s}:53").parse().unwrap())
                .collect(),
            search: vec!["default.svc.cluster.local".into()],
            ndots,
            timeout_s: 5,
            attempts: 2,
            options: options.iter().map(|o| o.to_string()).collect(),
        }
    }

    #[test]
    fn fixes_per_library() {
        let reopen = settings(&["10.96.0.10"], &["single-request-reopen", "edns0"], 5);
        assert_eq!(
            race_fixes(Resolver::Glibc, &reopen),
            ["options single-request-reopen"]
        );
        assert!(race_fixes(Resolver::Musl, &reopen).is_empty());
        assert_eq!(
            ignored_race_options(Resolver::Musl, &reopen.options),
            ["single-request-reopen"]
        );
        assert_eq!(race_fixes(Resolver::Go, &reopen).len(), 1);
        let local = settings(&["169.254.20.10"], &[], 2);
        assert_eq!(
            race_fixes(Resolver::Musl123, &local),
            ["NodeLocal DNSCache (link-local nameserver 169.254.20.10)"]
        );
        assert_eq!(
            ndots_lowered(local.ndots, &local.search).as_deref(),
            Some("options ndots:2")
        );
        assert_eq!(ndots_lowered(reopen.ndots, &reopen.search), None);
    }
}
