//! The faults a lab can add to its node, each a real kernel or server
//! behaviour that podprobe must recognise.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::topology::{Pod, BACKEND_HTTP_PORT};

/// How late the slow-dns scenario answers names under the host domain.
pub const SLOW_DNS_DELAY: Duration = Duration::from_millis(300);
/// Where the slow-dns scenario's delaying forwarder listens in the DNS pod.
pub(crate) const SLOW_DNS_PORT: u16 = 5353;

/// A fault added to the lab's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// The conntrack insert race (kubernetes#56903): the second UDP/53 packet
    /// of the same 4-tuple within 1 ms is dropped in the node's FORWARD chain,
    /// so glibc's parallel A+AAAA lookups wait 5 s for a lost reply.
    DnsRace,
    /// A NetworkPolicy silently dropping the backends' HTTP port: connects hang.
    NetpolDrop,
    /// A policy rejecting the backends' HTTP port with a TCP reset: connects fail fast.
    NetpolReject,
    /// The DNS answers for the host search domain come 300 ms late.
    SlowDns,
    /// Real UDP flows fill the node's conntrack table to 95%.
    ConntrackFull,
    /// Pod egress is masqueraded without `--random-fully`.
    SnatNorandom,
    /// kube-proxy's INVALID drop rule is gone (nf_conntrack_tcp_be_liberal stays 0).
    NoInvalidDrop,
    /// NodeLocal DNSCache: a caching dnsmasq at 169.254.20.10 on the node,
    /// with node-cache's NOTRACK rules; the client pod asks it.
    NodelocalDns,
    /// kube-proxy in nftables mode: the Services in a verdict map of the
    /// `kube-proxy` table, its iptables rules gone.
    KubeProxyNft,
    /// A VXLAN overlay (MTU 1450) while the pods keep MTU 1500.
    OverlayMtu,
    /// kube-proxy's iptables rules in the legacy backend (x_tables), as on
    /// nodes whose iptables is iptables-legacy.
    KubeProxyLegacy,
    /// A backend's segment outside the TCP window is marked INVALID by the
    /// node's conntrack and, with no rule dropping INVALID packets, escapes
    /// the Service's reverse NAT: the client resets it, which kills the
    /// backend's side of the connection (kubernetes#74839).
    InvalidReset,
}

impl Scenario {
    pub const ALL: [Scenario; 12] = [
        Scenario::DnsRace,
        Scenario::NetpolDrop,
        Scenario::NetpolReject,
        Scenario::SlowDns,
        Scenario::ConntrackFull,
        Scenario::SnatNorandom,
        Scenario::NoInvalidDrop,
        Scenario::NodelocalDns,
        Scenario::KubeProxyNft,
        Scenario::OverlayMtu,
        Scenario::KubeProxyLegacy,
        Scenario::InvalidReset,
    ];

    /// The name the CLI takes (`--scenario dns-race`).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::DnsRace => "dns-race",
            Scenario::NetpolDrop => "netpol-drop",
            Scenario::NetpolReject => "netpol-reject",
            Scenario::SlowDns => "slow-dns",
            Scenario::ConntrackFull => "conntrack-full",
            Scenario::SnatNorandom => "snat-norandom",
            Scenario::NoInvalidDrop => "no-invalid-drop",
            Scenario::NodelocalDns => "nodelocal-dns",
            Scenario::KubeProxyNft => "kube-proxy-nft",
            Scenario::OverlayMtu => "overlay-mtu",
            Scenario::KubeProxyLegacy => "kube-proxy-legacy",
            Scenario::InvalidReset => "invalid-reset",
        }
    }

    /// False for the scenarios that change how the node works without
    /// breaking anything (a cache, another kube-proxy mode or backend).
    pub fn is_fault(self) -> bool {
        !matches!(
            self,
            Scenario::NodelocalDns | Scenario::KubeProxyNft | Scenario::KubeProxyLegacy
        )
    }

    /// One line for people: what the fault is.
    pub fn describe(self) -> &'static str {
        match self {
            Scenario::DnsRace => {
                "conntrack DNS race: the second UDP/53 packet of a 4-tuple within 1 ms is dropped"
            }
            Scenario::NetpolDrop => "network policy silently DROPs the backends' HTTP port 8080",
            Scenario::NetpolReject => {
                "network policy REJECTs the backends' HTTP port 8080 with a TCP reset"
            }
            Scenario::SlowDns => "DNS answers for the host search domain come 300 ms late",
            Scenario::ConntrackFull => "real UDP flows fill the node's conntrack table to 95%",
            Scenario::SnatNorandom => "pod egress is masqueraded without --random-fully",
            Scenario::NoInvalidDrop => {
                "kube-proxy's INVALID drop rule is gone and nf_conntrack_tcp_be_liberal is 0"
            }
            Scenario::NodelocalDns => {
                "NodeLocal DNSCache at 169.254.20.10 with its NOTRACK rules; the client asks it"
            }
            Scenario::KubeProxyNft => {
                "kube-proxy in nftables mode: Services in the service-ips verdict map"
            }
            Scenario::OverlayMtu => "a VXLAN overlay with MTU 1450 while the pods keep MTU 1500",
            Scenario::KubeProxyLegacy => {
                "kube-proxy's iptables rules in the legacy backend (x_tables)"
            }
            Scenario::InvalidReset => {
                "backends send a segment outside the TCP window; conntrack marks it INVALID and nothing drops it, so it escapes the Service's DNAT"
            }
        }
    }

    /// Rules appended to the node's filter FORWARD chain, as `iptables` arguments.
    pub(crate) fn forward_rules(self) -> Vec<Vec<String>> {
        let comment = format!("podprobe lab {}", self.name());
        let policy = |target: &[&str]| -> Vec<Vec<String>> {
            Pod::BACKENDS
                .iter()
                .map(|pod| {
                    let mut rule: Vec<String> = [
                        "-d",
                        &format!("{}/32", pod.ip()),
                        "-p",
                        "tcp",
                        "--dport",
                        &BACKEND_HTTP_PORT.to_string(),
                        "-m",
                        "comment",
                        "--comment",
                        &comment,
                        "-j",
                    ]
                    .map(String::from)
                    .to_vec();
                    rule.extend(target.iter().map(|s| s.to_string()));
                    rule
                })
                .collect()
        };
        match self {
            // Matched on the original destination port so the rule still
            // applies when slow-dns re-points the DNS endpoint's port.
            Scenario::DnsRace => vec![[
                "-p",
                "udp",
                "-m",
                "conntrack",
                "--ctdir",
                "ORIGINAL",
                "--ctorigdstport",
                "53",
                "-m",
                "hashlimit",
                "--hashlimit-above",
                "1000/sec",
                "--hashlimit-burst",
                "1",
                "--hashlimit-mode",
                "srcip,srcport,dstip,dstport",
                "--hashlimit-name",
                "podprobe-dns-race",
                "-m",
                "comment",
                "--comment",
                &comment,
                "-j",
                "DROP",
            ]
            .map(String::from)
            .to_vec()],
            Scenario::NetpolDrop => policy(&["DROP"]),
            Scenario::NetpolReject => policy(&["REJECT", "--reject-with", "tcp-reset"]),
            Scenario::SlowDns
            | Scenario::ConntrackFull
            | Scenario::SnatNorandom
            | Scenario::NoInvalidDrop
            | Scenario::NodelocalDns
            | Scenario::KubeProxyNft
            | Scenario::OverlayMtu
            | Scenario::KubeProxyLegacy
            | Scenario::InvalidReset => Vec::new(),
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_race_drops_a_second_packet_of_a_four_tuple_within_a_millisecond() {
        let rules = Scenario::DnsRace.forward_rules();
        assert_eq!(rules.len(), 1);
        let rule = rules[0].join(" ");
        assert!(rule.contains("--hashlimit-above 1000/sec --hashlimit-burst 1"));
        assert!(rule.contains("--hashlimit-mode srcip,srcport,dstip,dstport"));
        assert!(rule.ends_with("-j DROP"));
    }

    #[test]
    fn policies_cover_every_backend_and_differ_only_in_target() {
        let drop = Scenario::NetpolDrop.forward_rules();
        let reject = Scenario::NetpolReject.forward_rules();
        assert_eq!(drop.len(), 3);
        assert!(drop.iter().all(|r| r
            .join(" ")
            .ends_with("--dport 8080 -m comment --comment podprobe lab netpol-drop -j DROP")));
        assert!(reject
            .iter()
            .all(|r| r.join(" ").ends_with("-j REJECT --reject-with tcp-reset")));
        assert!(Scenario::SlowDns.forward_rules().is_empty());
    }
}
