//! resolv.conf as glibc's resolver reads it (resolv/res_init.c): keywords at
//! the start of a line, the last `domain`/`search` line wins, at most three
//! nameservers, `options` capped as glibc caps them, then `LOCALDOMAIN` and
//! `RES_OPTIONS` from the environment on top.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::Serialize;

/// glibc's MAXNS: nameserver lines after the third are ignored.
pub const MAX_NAMESERVERS: usize = 3;
/// glibc's caps for `ndots:`, `timeout:` and `attempts:` (RES_MAXNDOTS,
/// RES_MAXRETRANS, RES_MAXRETRY).
const MAX_NDOTS: u32 = 15;
const MAX_TIMEOUT_S: u32 = 30;
const MAX_ATTEMPTS: u32 = 5;

/// The boolean `options` glibc knows; anything else it ignores silently.
const KNOWN_FLAGS: &[&str] = &[
    "rotate",
    "edns0",
    "single-request-reopen",
    "single-request",
    "no-tld-query",
    "no_tld_query",
    "no-reload",
    "use-vc",
    "trust-ad",
    "no-aaaa",
    "debug",
    "inet6",
];

/// The resolver configuration glibc ends up with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvConf {
    /// The nameservers glibc queries, in order (at most three).
    pub nameservers: Vec<IpAddr>,
    /// `nameserver` lines glibc ignores: beyond the third, or unparsable.
    pub ignored_nameservers: Vec<String>,
    pub search: Vec<String>,
    pub ndots: u32,
    pub timeout_s: u32,
    pub attempts: u32,
    /// The boolean options set, in glibc's spelling (`rotate`, `edns0`,
    /// `single-request-reopen`, ...), without duplicates.
    pub options: Vec<String>,
    /// Option words glibc does not know (and ignores).
    pub unknown_options: Vec<String>,
    /// Where the search list came from: `search`, `domain`, `LOCALDOMAIN`,
    /// `hostname` or `none`.
    pub search_source: String,
}

impl Default for ResolvConf {
    fn default() -> Self {
        ResolvConf {
            nameservers: Vec::new(),
            ignored_nameservers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
            timeout_s: 5,
            attempts: 2,
            options: Vec::new(),
            unknown_options: Vec::new(),
            search_source: "none".to_string(),
        }
    }
}

/// What glibc takes from outside the file.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub localdomain: Option<String>,
    pub res_options: Option<String>,
    /// The host name, for the search domain glibc derives when the file
    /// names none.
    pub hostname: String,
}

impl Env {
    pub fn from_process() -> Self {
        Env {
            localdomain: std::env::var("LOCALDOMAIN").ok(),
            res_options: std::env::var("RES_OPTIONS").ok(),
            hostname: crate::net::hostname(),
        }
    }
}

impl ResolvConf {
    /// Reads `path` as glibc would in this process (with its environment).
    pub fn load(path: &Path) -> crate::Result<Self> {
        let text = std::fs::read(path).map_err(|cause| crate::Error::Input {
            path: path.display().to_string(),
            cause,
        })?;
        Ok(Self::parse(
            &String::from_utf8_lossy(&text),
            &Env::from_process(),
        ))
    }

    /// Parses resolv.conf text the way glibc 2.26+ does.
    pub fn parse(text: &str, env: &Env) -> Self {
        let mut conf = ResolvConf::default();
        let mut search: Option<(Vec<String>, &str)> = None;
        let env_domain = env.localdomain.as_deref();
        if let Some(list) = env_domain {
            search = Some((words(list), "LOCALDOMAIN"));
        }
        for line in text.lines() {
            // glibc only recognises a keyword in column 0 followed by a blank;
            // lines starting with # or ; are comments.
            if line.starts_with(['#', ';']) {
                continue;
            }
            if let Some(rest) = keyword(line, "domain") {
                if env_domain.is_none() {
                    if let Some(first) = words(rest).into_iter().next() {
                        search = Some((vec![first], "domain"));
                    }
                }
            } else if let Some(rest) = keyword(line, "search") {
                // An empty `search` line is skipped, not a reset.
                let list = words(rest);
                if env_domain.is_none() && !list.is_empty() {
                    search = Some((list, "search"));
                }
            } else if let Some(rest) = keyword(line, "nameserver") {
                // glibc ignores anything after the address.
                let Some(addr) = rest.split_whitespace().next() else {
                    continue;
                };
                match parse_nameserver(addr) {
                    Some(ip) if conf.nameservers.len() < MAX_NAMESERVERS => {
                        conf.nameservers.push(ip)
                    }
                    _ => conf.ignored_nameservers.push(addr.to_string()),
                }
            } else if let Some(rest) = keyword(line, "options") {
                conf.set_options(rest);
            }
        }
        match search {
            Some((list, source)) => {
                conf.search = list;
                conf.search_source = source.to_string();
            }
            // No search list: glibc uses the host name's domain, if any.
            None => {
                if let Some((_, domain)) = env.hostname.split_once('.') {
                    if !domain.is_empty() {
                        conf.search = vec![domain.to_string()];
                        conf.search_source = "hostname".to_string();
                    }
                }
            }
        }
        if let Some(opts) = &env.res_options {
            conf.set_options(opts);
        }
        conf
    }

    /// glibc's res_setoptions: blank-separated words, numbers read like
    /// atoi and capped.
    fn set_options(&mut self, text: &str) {
        for word in text.split([' ', '\t']).filter(|w| !w.is_empty()) {
            if let Some(n) = word.strip_prefix("ndots:") {
                self.ndots = atoi(n).min(MAX_NDOTS);
            } else if let Some(n) = word.strip_prefix("timeout:") {
                self.timeout_s = atoi(n).min(MAX_TIMEOUT_S);
            } else if let Some(n) = word.strip_prefix("attempts:") {
                self.attempts = atoi(n).min(MAX_ATTEMPTS);
            } else if KNOWN_FLAGS.contains(&word) {
                let flag = if word == "no_tld_query" {
                    "no-tld-query"
                } else {
                    word
                };
                if !self.options.iter().any(|o| o == flag) {
                    self.options.push(flag.to_string());
                }
            } else {
                self.unknown_options.push(word.to_string());
            }
        }
    }

    pub fn has_option(&self, flag: &str) -> bool {
        self.options.iter().any(|o| o == flag)
    }

    /// The servers glibc would query: the configured ones, or the local
    /// host when there are none (glibc's default).
    pub fn servers(&self) -> Vec<SocketAddr> {
        servers_or_localhost(&self.nameservers)
    }
}

/// Port 53 of each nameserver, or of 127.0.0.1 when there is none (what
/// glibc and musl ask then).
pub fn servers_or_localhost(nameservers: &[IpAddr]) -> Vec<SocketAddr> {
    if nameservers.is_empty() {
        return vec![SocketAddr::from(([127, 0, 0, 1], 53))];
    }
    nameservers
        .iter()
        .map(|ip| SocketAddr::new(*ip, 53))
        .collect()
}

/// The rest of `line` when it starts with `name` and a blank (glibc's MATCH).
fn keyword<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.strip_prefix(name)?;
    rest.starts_with([' ', '\t']).then_some(rest)
}

fn words(text: &str) -> Vec<String> {
    text.split([' ', '\t', '\n', '\r'])
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// C's atoi for option values: leading digits, anything else is 0.
/// Negative values (which glibc stores into an unsigned bit field) count as 0.
fn atoi(text: &str) -> u32 {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse::<u64>()
        .map_or(if digits.is_empty() { 0 } else { u32::MAX }, |n| {
            u32::try_from(n).unwrap_or(u32::MAX)
        })
}

/// An IPv4 or IPv6 address; a `%scope` suffix on IPv6 is accepted and
/// dropped (a link-local nameserver needs it, podprobe queries it unscoped).
fn parse_nameserver(text: &str) -> Option<IpAddr> {
    let addr = text.split_once('%').map_or(text, |(a, _)| a);
    addr.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ResolvConf {
        ResolvConf::parse(text, &Env::default())
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// What the kubelet writes for a ClusterFirst pod on a node whose own
    /// resolv.conf has a search domain.
    const CLUSTER_FIRST: &str = "search default.svc.cluster.local svc.cluster.local cluster.local ec2.internal\nnameserver 10.96.0.10\noptions ndots:5\n";

    #[test]
    fn kubernetes_cluster_first() {
        let c = parse(CLUSTER_FIRST);
        assert_eq!(c.nameservers, ips(&["10.96.0.10"]));
        assert_eq!(
            c.search,
            [
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "ec2.internal"
            ]
        );
        assert_eq!((c.ndots, c.timeout_s, c.attempts), (5, 5, 2));
        assert_eq!(c.search_source, "search");
        assert!(c.options.is_empty());
    }

    #[test]
    fn kubernetes_dns_config_options() {
        // dnsConfig.options appended by the kubelet.
        let c = parse(
            "search prod.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver 10.96.0.10\n\
             options ndots:2 single-request-reopen timeout:1 attempts:3\n",
        );
        assert_eq!((c.ndots, c.timeout_s, c.attempts), (2, 1, 3));
        assert_eq!(c.options, ["single-request-reopen"]);
        assert!(c.has_option("single-request-reopen"));
        assert!(!c.has_option("single-request"));
    }

    #[test]
    fn systemd_resolved_stub() {
        let c = parse(
            "# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).\n\
             # Do not edit.\n\
             nameserver 127.0.0.53\n\
             options edns0 trust-ad\n\
             search .\n",
        );
        assert_eq!(c.nameservers, ips(&["127.0.0.53"]));
        assert_eq!(c.options, ["edns0", "trust-ad"]);
        assert_eq!(c.search, ["."]);
        assert_eq!(c.ndots, 1);
    }

    #[test]
    fn at_most_three_nameservers() {
        let c = parse(
            "nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver fd00::3\nnameserver 10.0.0.4\n",
        );
        assert_eq!(c.nameservers, ips(&["10.0.0.1", "10.0.0.2", "fd00::3"]));
        assert_eq!(c.ignored_nameservers, ["10.0.0.4"]);
    }

    #[test]
    fn no_nameserver_means_localhost() {
        let c = parse("search example.com\n");
        assert!(c.nameservers.is_empty());
        assert_eq!(c.servers(), [SocketAddr::from(([127, 0, 0, 1], 53))]);
    }

    #[test]
    fn last_of_domain_and_search_wins() {
        let c = parse("search a.example b.example\ndomain corp.example\n");
        assert_eq!(
            (c.search.clone(), c.search_source.as_str()),
            (vec!["corp.example".to_string()], "domain")
        );
        let c = parse("domain corp.example\nsearch a.example b.example\n");
        assert_eq!(c.search, ["a.example", "b.example"]);
        let c = parse("search a.example\nsearch b.example\n");
        assert_eq!(c.search, ["b.example"]);
        // An empty search line does not clear an earlier one.
        let c = parse("search a.example\nsearch \n");
        assert_eq!(c.search, ["a.example"]);
    }

    #[test]
    fn comments_and_column_zero_keywords() {
        let c = parse(
            "# nameserver 10.0.0.9\n; nameserver 10.0.0.8\n nameserver 10.0.0.7\nnameserver\t10.0.0.1 # trailing words ignored\nnameservers 10.0.0.6\n",
        );
        assert_eq!(c.nameservers, ips(&["10.0.0.1"]));
        assert!(c.ignored_nameservers.is_empty());
    }

    #[test]
    fn options_are_capped_and_read_like_atoi() {
        let c = parse("options ndots:30 timeout:99 attempts:9 rotate use-vc single-request\n");
        assert_eq!((c.ndots, c.timeout_s, c.attempts), (15, 30, 5));
        assert_eq!(c.options, ["rotate", "use-vc", "single-request"]);
        let c = parse("options ndots:x timeout:3s bogus\noptions ndots:3\n");
        assert_eq!((c.ndots, c.timeout_s), (3, 3));
        assert_eq!(c.unknown_options, ["bogus"]);
        let c = parse("options no_tld_query\n");
        assert_eq!(c.options, ["no-tld-query"]);
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = Env {
            localdomain: Some("env.example other.example".into()),
            res_options: Some("ndots:1 edns0".into()),
            hostname: String::new(),
        };
        let c = ResolvConf::parse(CLUSTER_FIRST, &env);
        assert_eq!(c.search, ["env.example", "other.example"]);
        assert_eq!(c.search_source, "LOCALDOMAIN");
        assert_eq!(c.ndots, 1);
        assert_eq!(c.options, ["edns0"]);
    }

    #[test]
    fn search_from_hostname_when_none_configured() {
        let env = Env {
            hostname: "node1.corp.example".into(),
            ..Env::default()
        };
        let c = ResolvConf::parse("nameserver 10.0.0.1\n", &env);
        assert_eq!(c.search, ["corp.example"]);
        assert_eq!(c.search_source, "hostname");
        let c = ResolvConf::parse("nameserver 10.0.0.1\n", &Env::default());
        assert!(c.search.is_empty());
    }
}
