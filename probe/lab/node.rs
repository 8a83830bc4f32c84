//! The node's own side of the lab: what a real node has besides its pods
//! (an uplink, kube-proxy's INVALID drop rule, pod egress masquerading), the
//! node scenarios (a full conntrack table, SNAT without random ports, no
//! INVALID drop, NodeLocal DNSCache, kube-proxy's nftables mode, an overlay
//! narrower than the pods' MTU) and a generator of many Services.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use super::scenario::Scenario;
use super::topology::{self, Pod, Service, GENERATED_SERVICES_MAX, POD_CIDR};
use super::{sys, Lab};
use crate::{Error, Result};

/// The node's uplink: a device with no wire behind it (dummy, or a bridge
/// without ports where the kernel has no dummy module), so nothing leaves
/// the machine, with the node's address (TEST-NET-1) and a real NIC's MTU.
pub const UPLINK: &str = "eth0";
pub const NODE_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const UPLINK_MTU: u32 = 1500;
/// NodeLocal DNSCache's link-local address and interface.
pub const NODELOCAL_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 20, 10);
pub const NODELOCAL_INTERFACE: &str = "nodelocaldns";
/// The overlay-mtu scenario's VXLAN device, as Calico names it, and its MTU.
pub const OVERLAY_INTERFACE: &str = "vxlan.calico";
pub const OVERLAY_MTU: u32 = 1450;
/// The cluster's Service range (kubeadm's default).
const SERVICE_CIDR: &str = "10.96.0.0/12";
/// How full conntrack-full makes the node's table.
pub const CONNTRACK_FILL: f64 = 0.95;
/// How long conntrack-full's entries live (the node's UDP timeout while the
/// scenario is on): long enough to look at a full table.
const CONNTRACK_FULL_TIMEOUT_S: u64 = 600;

/// kube-proxy's INVALID drop rule, jumped to first from FORWARD (kube-proxy
/// prepends its jump). Its other KUBE-FORWARD rules (ACCEPT for marked and
/// ESTABLISHED packets) are left out: they would let packets skip the
/// scenarios' rules appended to FORWARD.
pub(crate) const INVALID_DROP_RULE: [&str; 6] =
    ["-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"];

/// The node's filter table: kube-proxy's KUBE-FORWARD with its INVALID drop.
fn filter_rules() -> String {
    format!(
        "*filter\n:KUBE-FORWARD - [0:0]\n\
         -I FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
         -A KUBE-FORWARD {}\n\
         COMMIT\n",
        INVALID_DROP_RULE.join(" ")
    )
}

/// Pod egress masquerading as ip-masq-agent writes it: traffic to anything
/// but the pod network and local addresses leaves with the node's address.
fn ip_masq_rule(random_fully: bool) -> String {
    format!(
        "-A IP-MASQ -m comment --comment \"ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)\" -j MASQUERADE{}",
        if random_fully { " --random-fully" } else { "" }
    )
}

fn pod_egress_rules() -> String {
    format!(
        "*nat\n:IP-MASQ - [0:0]\n\
         -A POSTROUTING -m comment --comment \"ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our custom IP-MASQ chain\" -m addrtype ! --dst-type LOCAL -j IP-MASQ\n\
         -A IP-MASQ -d {POD_CIDR} -m comment --comment \"ip-masq-agent: local traffic is not subject to MASQUERADE\" -j RETURN\n\
         {}\n\
         COMMIT\n",
        ip_masq_rule(true)
    )
}

/// NodeLocal DNSCache's rules, as node-cache installs them: its queries and
/// answers skip conntrack (raw NOTRACK) and are accepted.
fn nodelocal_rules() -> String {
    let ip = NODELOCAL_ADDRESS;
    let mut raw = String::from("*raw\n");
    let mut filter = String::from("*filter\n");
    for proto in ["tcp", "udp"] {
        raw.push_str(&format!(
            "-A PREROUTING -d {ip}/32 -p {proto} -m {proto} --dport 53 -j NOTRACK\n\
             -A OUTPUT -s {ip}/32 -p {proto} -m {proto} --sport 53 -j NOTRACK\n\
             -A OUTPUT -d {ip}/32 -p {proto} -m {proto} --dport 53 -j NOTRACK\n"
        ));
        filter.push_str(&format!(
            "-A INPUT -d {ip}/32 -p {proto} -m {proto} --dport 53 -j ACCEPT\n\
             -A OUTPUT -s {ip}/32 -p {proto} -m {proto} --sport 53 -j ACCEPT\n"
        ));
    }
    format!("{raw}COMMIT\n{filter}COMMIT\n")
}

/// Which of kube-proxy's modes programs the lab's Services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// iptables mode through iptables-nft (the lab's default).
    Iptables,
    /// iptables mode through iptables-legacy (x_tables).
    IptablesLegacy,
    Nftables,
}

impl ProxyMode {
    pub fn name(self) -> &'static str {
        match self {
            ProxyMode::Iptables => "iptables",
            ProxyMode::IptablesLegacy => "iptables (legacy backend)",
            ProxyMode::Nftables => "nftables",
        }
    }
}

/// Splits `iptables-save -t TABLE` output into what stays and kube-proxy's
/// own chains and jumps, each a complete table for iptables-restore.
fn split_kube_proxy(saved: &str) -> (String, String) {
    let mut kept = String::new();
    let mut kube = String::new();
    for line in saved.lines().filter(|l| !l.starts_with('#')) {
        let is_kube =
            line.starts_with(":KUBE-") || line.starts_with("-A KUBE-") || line.contains("-j KUBE-");
        let frame = line.starts_with('*') || line == "COMMIT";
        if is_kube || frame {
            kube.push_str(line);
            kube.push('\n');
        }
        if !is_kube {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    (kept, kube)
}

impl Lab {
    /// What every lab node has besides its pods: an uplink, kube-proxy's
    /// INVALID drop rule and ip-masq-agent's pod egress masquerading.
    pub(crate) fn build_node(&self) -> Result<()> {
        self.add_wireless_link(UPLINK, &format!("{NODE_ADDRESS}/24"), UPLINK_MTU)?;
        self.restore(&(filter_rules() + &pod_egress_rules()))
    }

    /// A device of the node that only holds addresses: dummy, as node-cache
    /// and real uplinks' stand-ins use, or a portless bridge where the
    /// kernel was built without the dummy driver.
    fn add_wireless_link(&self, name: &str, address: &str, mtu: u32) -> Result<()> {
        let node = self.netns(Pod::Node);
        let add = |kind: &str| {
            sys::run(
                sys::tool("ip").args(["-n", &node, "link", "add", name, "type", kind]),
                None,
            )
        };
        if add("dummy").is_err() {
            add("bridge")?;
        }
        sys::run(
            sys::tool("ip").args(["-n", &node, "-batch", "-"]),
            Some(&format!(
                "link set {name} mtu {mtu} up\n\
                 addr add {address} dev {name}\n"
            )),
        )
        .map(drop)
    }

    fn restore(&self, rules: &str) -> Result<()> {
        sys::run(
            self.command(Pod::Node, "iptables-restore")
                .args(["-w", "--noflush"]),
            Some(rules),
        )
        .map(drop)
    }

    /// The kube-proxy mode the lab's Services are programmed in.
    pub fn proxy_mode(&self) -> ProxyMode {
        if self.state.scenarios.contains(&Scenario::KubeProxyNft) {
            ProxyMode::Nftables
        } else if self.state.scenarios.contains(&Scenario::KubeProxyLegacy) {
            ProxyMode::IptablesLegacy
        } else {
            ProxyMode::Iptables
        }
    }

    /// kube-proxy's chains and jumps taken out of the node's iptables-nft
    /// tables; returns them as iptables-restore input, per table.
    fn take_kube_proxy_rules(&self) -> Result<Vec<String>> {
        let mut taken = Vec::new();
        for table in ["nat", "filter"] {
            let saved = sys::run(
                self.command(Pod::Node, "iptables-save").args(["-t", table]),
                None,
            )?;
            let (kept, kube) = split_kube_proxy(&saved);
            sys::run(
                self.command(Pod::Node, "iptables-restore").arg("-w"),
                Some(&kept),
            )?;
            taken.push(kube);
        }
        Ok(taken)
    }

    /// Applies one of the node scenarios (the others are not this module's).
    pub(crate) fn add_node_scenario(&mut self, scenario: Scenario) -> Result<()> {
        match scenario {
            Scenario::ConntrackFull => self.fill_conntrack(),
            Scenario::SnatNorandom => self.restore(&format!(
                "*nat\n-R IP-MASQ 2 {}\nCOMMIT\n",
                ip_masq_rule(false).trim_start_matches("-A IP-MASQ ")
            )),
            Scenario::NoInvalidDrop => {
                // Already gone (another scenario removed it) is fine.
                let iptables = match self.proxy_mode() {
                    ProxyMode::IptablesLegacy => "iptables-legacy",
                    _ => "iptables",
                };
                let _ = sys::run(
                    self.command(Pod::Node, iptables)
                        .args(["-w", "-D", "KUBE-FORWARD"])
                        .args(INVALID_DROP_RULE),
                    None,
                );
                Ok(())
            }
            Scenario::NodelocalDns => self.start_nodelocal_dns(),
            Scenario::KubeProxyNft => self.switch_to_nftables(),
            Scenario::KubeProxyLegacy => {
                // kube-proxy's rules, as they are, into the x_tables backend.
                for rules in self.take_kube_proxy_rules()? {
                    sys::run(
                        self.command(Pod::Node, "iptables-legacy-restore")
                            .args(["-w", "--noflush"]),
                        Some(&rules),
                    )?;
                }
                Ok(())
            }
            Scenario::OverlayMtu => sys::run(
                sys::tool("ip").args(["-n", &self.netns(Pod::Node), "-batch", "-"]),
                Some(&format!(
                    "link add {OVERLAY_INTERFACE} type vxlan id 4096 dstport 4789 local {NODE_ADDRESS} dev {UPLINK}\n\
                     link set {OVERLAY_INTERFACE} mtu {OVERLAY_MTU} up\n"
                )),
            )
            .map(drop),
            _ => Ok(()),
        }
    }

    /// Fills the node's conntrack table with real flows: UDP datagrams from
    /// the client pod to ports of the backends and the DNS pod, one flow per
    /// (source port, destination, port), until the node's table is
    /// [`CONNTRACK_FILL`] full. The node keeps UDP entries for 10 minutes
    /// meanwhile (nf_conntrack_max is global, but the count is per namespace:
    /// only the lab's node fills up).
    fn fill_conntrack(&mut self) -> Result<()> {
        let node = self.netns(Pod::Node);
        let (max, _) = sys::in_netns(&node, || -> Result<(u64, ())> {
            let path = "/proc/sys/net/netfilter/nf_conntrack_udp_timeout";
            std::fs::write(path, CONNTRACK_FULL_TIMEOUT_S.to_string())
                .map_err(|e| Error::io(path, e))?;
            Ok((read_number("/proc/sys/net/netfilter/nf_conntrack_max")?, ()))
        })??;
        if max > 1 << 20 {
            return Err(Error::unavailable(format!(
                "conntrack-full fills the node's table with real flows; this host's nf_conntrack_max is {max}, over the 1Mi entries the lab will make"
            )));
        }
        let target = (max as f64 * CONNTRACK_FILL) as u64;
        let destinations: Vec<Ipv4Addr> = Pod::BACKENDS
            .iter()
            .chain([&Pod::Dns])
            .map(|p| p.ip())
            .collect();
        let count = || {
            sys::in_netns(&node, || {
                read_number("/proc/sys/net/netfilter/nf_conntrack_count")
            })
            .and_then(|r| r)
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        self.in_pod(Pod::Client, || -> Result<()> {
            let payload = [0u8; 1];
            loop {
                // A new source port each round: every datagram is a new flow.
                let socket = UdpSocket::bind(("0.0.0.0", 0))
                    .map_err(|e| Error::io("binding a UDP socket", e))?;
                for port in 1024..=u16::MAX {
                    for ip in &destinations {
                        // ICMP port unreachable comes back; nothing to read.
                        let _ = socket.send_to(&payload, SocketAddrV4::new(*ip, port));
                    }
                    if port % 2048 == 0 && count()? >= target {
                        return Ok(());
                    }
                }
                if count()? >= target {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(Error::unavailable(format!(
                        "conntrack-full: the node's table did not reach {target} entries in 60 s"
                    )));
                }
            }
        })?
    }

    /// A caching dnsmasq at 169.254.20.10 on the node, forwarding to the
    /// kube-dns Service, with node-cache's NOTRACK rules; the client pod
    /// asks it, as kubelet's `--cluster-dns=169.254.20.10` makes pods do.
    fn start_nodelocal_dns(&mut self) -> Result<()> {
        self.add_wireless_link(
            NODELOCAL_INTERFACE,
            &format!("{NODELOCAL_ADDRESS}/32"),
            UPLINK_MTU,
        )?;
        // The cache's own queries go to the kube-dns ClusterIP: a node routes
        // the Service range out of its uplink, and DNAT re-routes to the pod.
        sys::run(
            sys::tool("ip").args([
                "-n",
                &self.netns(Pod::Node),
                "route",
                "add",
                SERVICE_CIDR,
                "dev",
                UPLINK,
            ]),
            None,
        )?;
        self.restore(&nodelocal_rules())?;
        let mut cmd = self.dnsmasq(Pod::Node, NODELOCAL_ADDRESS, "nodelocaldns.log");
        cmd.arg(format!("--server={}", Service::KubeDns.ip()));
        self.start(cmd, "nodelocaldns.out")?;
        self.wait_dns(SocketAddr::from((NODELOCAL_ADDRESS, 53)))?;
        let resolv = topology::cluster_first_resolv_conf().replace(
            &format!("nameserver {}", Service::KubeDns.ip()),
            &format!("nameserver {NODELOCAL_ADDRESS}"),
        );
        self.set_resolv_conf(Pod::Client, &resolv)
    }

    /// kube-proxy restarted in nftables mode: its iptables rules cleaned up
    /// (the nat KUBE-* chains and KUBE-FORWARD), its `kube-proxy` table
    /// programmed with the lab's Services.
    fn switch_to_nftables(&mut self) -> Result<()> {
        if sys::find_tool("nft").is_none() {
            return Err(Error::unavailable(
                "kube-proxy-nft needs nft (package nftables); install with scripts/setup or apt-get install nftables",
            ));
        }
        self.take_kube_proxy_rules()?;
        self.nft(&topology::kube_proxy_nft_ruleset(
            &topology::lab_service_ports(),
            true,
        ))
    }

    fn nft(&self, ruleset: &str) -> Result<()> {
        sys::run(
            self.command(Pod::Node, "nft").args(["-f", "-"]),
            Some(ruleset),
        )
        .map(drop)
    }

    /// Programs more Service ports the way the lab's kube-proxy mode does:
    /// iptables (either backend) or nftables.
    pub(super) fn program_services(&self, ports: &[topology::ServicePort]) -> Result<()> {
        match self.proxy_mode() {
            ProxyMode::Iptables => self.restore(&topology::generated_nat_rules(ports)),
            ProxyMode::IptablesLegacy => sys::run(
                self.command(Pod::Node, "iptables-legacy-restore")
                    .args(["-w", "--noflush"]),
                Some(&topology::generated_nat_rules(ports)),
            )
            .map(drop),
            ProxyMode::Nftables => self.nft(&topology::kube_proxy_nft_ruleset(ports, false)),
        }
    }

    /// Adds `count` Services (ClusterIPs 10.100.0.0 upwards, port 80, one
    /// backend each) in the mode the lab's kube-proxy runs: more rules for
    /// iptables mode's KUBE-SERVICES walk, or more elements of nftables
    /// mode's verdict map. Returns how many the lab has now.
    pub fn add_services(&mut self, count: usize) -> Result<usize> {
        let first = self.state.services;
        let total = first + count;
        if total > GENERATED_SERVICES_MAX {
            return Err(Error::usage(format!(
                "a lab holds at most {GENERATED_SERVICES_MAX} generated Services"
            )));
        }
        // In batches: one huge iptables-restore or nft transaction is slower
        // than several, and a batch failing says which.
        const BATCH: usize = 5_000;
        let mut at = first;
        while at < total {
            let end = (at + BATCH).min(total);
            let ports: Vec<_> = (at..end).map(topology::generated_service_port).collect();
            self.program_services(&ports)?;
            at = end;
            self.state.services = at;
            self.save()?;
        }
        Ok(total)
    }
}

/// The `index`th generated Service's address (ClusterIP and port).
pub fn generated_service(index: usize) -> SocketAddrV4 {
    SocketAddrV4::new(topology::generated_service_ip(index), 80)
}

fn read_number(path: &str) -> Result<u64> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::io(path, e))?
        .trim()
        .parse()
        .map_err(|_| Error::unavailable(format!("{path}: not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_rules_are_kube_proxys_and_ip_masq_agents() {
        assert!(filter_rules().contains("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"));
        let egress = pod_egress_rules();
        assert!(egress.contains("-A IP-MASQ -d 10.244.0.0/16"));
        assert!(egress.contains("-j MASQUERADE --random-fully"));
        assert!(!ip_masq_rule(false).contains("random"));
        let nodelocal = nodelocal_rules();
        assert!(nodelocal
            .contains("-A PREROUTING -d 169.254.20.10/32 -p udp -m udp --dport 53 -j NOTRACK"));
        assert_eq!(nodelocal.matches("NOTRACK").count(), 6);
    }

    #[test]
    fn kube_proxys_rules_split_from_the_rest() {
        let saved = "# Generated by iptables-nft-save v1.8.9 (nf_tables)\n*nat\n:PREROUTING ACCEPT [0:0]\n:IP-MASQ - [0:0]\n:KUBE-SERVICES - [0:0]\n\
            -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
            -A POSTROUTING -j IP-MASQ\n-A KUBE-SERVICES -d 10.96.0.1/32 -j KUBE-SVC-X\nCOMMIT\n";
        let (kept, kube) = split_kube_proxy(saved);
        assert_eq!(
            kept,
            "*nat\n:PREROUTING ACCEPT [0:0]\n:IP-MASQ - [0:0]\n-A POSTROUTING -j IP-MASQ\nCOMMIT\n"
        );
        assert!(kube.starts_with("*nat\n:KUBE-SERVICES - [0:0]\n-A PREROUTING"));
        assert!(kube.ends_with("-A KUBE-SERVICES -d 10.96.0.1/32 -j KUBE-SVC-X\nCOMMIT\n"));
    }

    #[test]
    fn generated_services_are_numbered_addresses() {
        assert_eq!(generated_service(0), "10.100.0.0:80".parse().unwrap());
        assert_eq!(
            generated_service(29_999),
            "10.100.117.47:80".parse().unwrap()
        );
    }
}
