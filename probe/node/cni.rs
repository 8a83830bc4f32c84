//! Which CNI a node runs, from its interfaces and the chains it wrote, and
//! whether its pods' MTU fits what the overlay carries. Pure.

use std::collections::BTreeSet;

use serde::Serialize;

use super::links::Link;
use super::measure::Interfaces;

/// Encapsulation overhead over an IPv4 underlay, in bytes: VXLAN and Geneve
/// (outer Ethernet 14 + IPv4 20 + UDP 8 + their 8-byte header), WireGuard
/// (IPv4 20 + UDP 8 + its 32-byte header and tag), IP-in-IP (IPv4 20).
pub fn overlay_overhead(kind: &str) -> Option<u32> {
    match kind {
        "vxlan" | "geneve" => Some(50),
        "wireguard" => Some(60),
        "ipip" => Some(20),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamedMtu {
    pub name: String,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overlay {
    pub name: String,
    pub kind: String,
    pub mtu: Option<u32>,
    pub overhead: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uplink {
    pub name: String,
    pub mtu: Option<u32>,
    /// `default route`, or `node address` when there is no default route.
    pub found_by: String,
}

/// Evidence of `node.cni`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CniEvidence {
    /// `calico`, `cilium`, `flannel`, ... (several when a policy engine sits
    /// beside a network plugin, e.g. Canal).
    pub cnis: Vec<String>,
    /// What gave each away: `interface vxlan.calico (vxlan)`, `chains cali-*`.
    pub signals: Vec<String>,
    /// The node ends of the pods' veths.
    pub pod_interfaces: Vec<NamedMtu>,
    pub uplink: Option<Uplink>,
    pub overlays: Vec<Overlay>,
    /// The largest pod MTU the path carries: the uplink's MTU minus the
    /// overlay's overhead (or the overlay device's own MTU).
    pub max_pod_mtu: Option<u32>,
    /// Pod interfaces above `max_pod_mtu`.
    pub oversized: Vec<NamedMtu>,
}

/// Interface names each CNI creates in the node's namespace.
const INTERFACE_PREFIXES: [(&str, &str); 20] = [
    ("cali", "calico"),
    ("vxlan.calico", "calico"),
    ("vxlan-v6.calico", "calico"),
    ("wireguard.cali", "calico"),
    ("cilium_", "cilium"),
    ("lxc", "cilium"),
    ("flannel", "flannel"),
    ("weave", "weave"),
    ("vethwe", "weave"),
    ("kube-bridge", "kube-router"),
    ("kube-dummy-if", "kube-router"),
    ("antrea-", "antrea"),
    ("ovn-k8s-", "ovn-kubernetes"),
    ("genev_sys_", "ovn-kubernetes"),
    ("eni", "aws-vpc-cni"),
    ("azv", "azure-cni"),
    ("gke", "gke"),
    ("cni0", "bridge"),
    ("cbr0", "kubenet"),
    ("tunl0", "calico"),
];

/// Names of pod veths' node ends, beyond the CNI-specific ones above.
const POD_VETH_PREFIXES: [&str; 8] = [
    "cali", "lxc", "veth", "eni", "azv", "gke", "vethwe", "antrea",
];

pub fn cni_of_interface(name: &str) -> Option<&'static str> {
    INTERFACE_PREFIXES
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|(_, cni)| *cni)
}

/// True when the interfaces are a node's: pod veths, a CNI's devices or
/// kube-proxy's, rather than a pod's single `eth0`.
pub fn looks_like_node(links: &[Link]) -> bool {
    let node_device = |l: &&Link| {
        cni_of_interface(&l.name).is_some()
            || matches!(l.name.as_str(), "kube-ipvs0" | "nodelocaldns")
            || (l.kind.as_deref() == Some("veth") && l.name.starts_with("veth"))
    };
    let veth_peers = links
        .iter()
        .filter(|l| l.kind.as_deref() == Some("veth") && l.peer_in_other_netns)
        .count();
    links.iter().any(|l| node_device(&l)) || veth_peers >= 2
}

pub fn analyse(interfaces: &Interfaces, rule_cnis: &BTreeSet<String>) -> CniEvidence {
    let links = &interfaces.links;
    let mut cnis = BTreeSet::new();
    let mut signals = Vec::new();
    for link in links {
        if let Some(cni) = cni_of_interface(&link.name) {
            // One signal per CNI is enough: cali* veths come by the hundred.
            if cnis.insert(cni.to_string()) {
                signals.push(format!(
                    "interface {} ({})",
                    link.name,
                    link.kind.as_deref().unwrap_or("device")
                ));
            }
        }
    }
    for cni in rule_cnis {
        signals.push(format!("{cni} chains in the ruleset"));
        cnis.insert(cni.clone());
    }
    // The bridge plugin's cni0 is flannel's too; name flannel when it is there.
    if cnis.contains("flannel") {
        cnis.remove("bridge");
    }
    let pod_interfaces: Vec<NamedMtu> = links
        .iter()
        .filter(|l| {
            l.kind.as_deref() == Some("veth")
                && (l.peer_in_other_netns
                    || POD_VETH_PREFIXES.iter().any(|p| l.name.starts_with(p)))
        })
        .map(|l| NamedMtu {
            name: l.name.clone(),
            mtu: l.mtu,
        })
        .collect();
    let overlays: Vec<Overlay> = links
        .iter()
        .filter(|l| l.up)
        .filter_map(|l| {
            let kind = l.kind.as_deref()?;
            Some(Overlay {
                name: l.name.clone(),
                kind: kind.to_string(),
                mtu: l.mtu,
                overhead: overlay_overhead(kind)?,
            })
        })
        .collect();
    let uplink = uplink(interfaces);
    let from_uplink = uplink
        .as_ref()
        .and_then(|u| u.mtu)
        .map(|mtu| mtu.saturating_sub(overlays.iter().map(|o| o.overhead).max().unwrap_or(0)));
    let from_overlay = overlays.iter().filter_map(|o| o.mtu).min();
    let max_pod_mtu = match (from_uplink, from_overlay) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let oversized = pod_interfaces
        .iter()
        .filter(|p| matches!((p.mtu, max_pod_mtu), (Some(m), Some(max)) if m > max))
        .cloned()
        .collect();
    CniEvidence {
        cnis: cnis.into_iter().collect(),
        signals,
        pod_interfaces,
        uplink,
        overlays,
        max_pod_mtu,
        oversized,
    }
}

/// The interface of the default route; without one, the only interface
/// that is neither a pod's, a CNI's nor virtual and holds a global address.
fn uplink(interfaces: &Interfaces) -> Option<Uplink> {
    let link = |name: &str| interfaces.links.iter().find(|l| l.name == name);
    if let Some(route) = interfaces.default_routes.first() {
        return Some(Uplink {
            name: route.interface.clone(),
            mtu: link(&route.interface).and_then(|l| l.mtu),
            found_by: "default route".into(),
        });
    }
    let candidates: Vec<&Link> = interfaces
        .links
        .iter()
        .filter(|l| l.name != "lo" && cni_of_interface(&l.name).is_none())
        .filter(|l| matches!(l.kind.as_deref(), None | Some("dummy" | "bond" | "bridge")))
        .filter(|l| !matches!(l.name.as_str(), "kube-ipvs0" | "nodelocaldns"))
        .filter(|l| {
            interfaces.addresses.iter().any(|a| {
                a.name == l.name
                    && a.addresses.iter().any(|addr| {
                        !addr.starts_with("fe80:")
                            && !addr.starts_with("169.254.")
                            && !addr.starts_with("127.")
                    })
            })
        })
        .collect();
    match candidates[..] {
        [only] => Some(Uplink {
            name: only.name.clone(),
            mtu: only.mtu,
            found_by: "node address".into(),
        }),
        _ => None,
    }
}

/// How to see what a CNI drops.
pub fn drop_tool(cni: &str) -> &'static str {
    match cni {
        "cilium" => "Cilium: `hubble observe --verdict DROPPED` (or `cilium-dbg monitor --type drop` in the cilium agent on this node)",
        "calico" => "Calico: a policy rule with action Log before the Deny writes each drop to the kernel log (`dmesg`); Calico Enterprise/Cloud flow logs show policy drops; counters: `iptables-save -c | grep -E 'cali-.*DROP'`",
        "flannel" | "bridge" | "kubenet" => "flannel and the bridge plugin enforce no NetworkPolicy: drops come from the policy engine beside them (Canal: Calico's tools) or from kube-proxy's rules (`iptables-save -c | grep DROP`)",
        "antrea" => "Antrea: `antctl traceflow`, or audit logging of policy drops (`enableLogging` on the policy)",
        "weave" => "Weave: weave-npc logs each drop (`kubectl logs -n kube-system ds/weave-net -c weave-npc`)",
        "kube-router" => "kube-router: dropped packets go to NFLOG group 100 (`tcpdump -i nflog:100`)",
        "ovn-kubernetes" => "OVN-Kubernetes: ACL logging (`k8s.ovn.org/acl-logging` namespace annotation) and `ovnkube-trace`",
        "aws-vpc-cni" => "AWS VPC CNI: the network policy agent's flow logs (`enable-policy-event-logs`), VPC Flow Logs",
        _ => "the kernel's drop counters: `nstat -az | grep -i drop`, rule counters (`iptables-save -c`, `nft list ruleset`), `perf trace -e skb:kfree_skb`",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::measure::{DefaultRoute, Interface};

    fn link(name: &str, kind: Option<&str>, mtu: u32, peer: bool) -> Link {
        Link {
            index: 0,
            name: name.into(),
            mtu: Some(mtu),
            kind: kind.map(String::from),
            up: true,
            peer_in_other_netns: peer,
            master: None,
        }
    }

    fn addr(name: &str, a: &str) -> Interface {
        Interface {
            name: name.into(),
            up: true,
            mtu: None,
            addresses: vec![a.into()],
        }
    }

    #[test]
    fn a_pod_is_not_a_node_and_a_node_is() {
        let pod = [
            link("lo", None, 65536, false),
            link("eth0", Some("veth"), 1500, true),
        ];
        assert!(!looks_like_node(&pod));
        let node = [
            link("lo", None, 65536, false),
            link("eth0", None, 1500, false),
            link("cali12ab", Some("veth"), 1500, true),
        ];
        assert!(looks_like_node(&node));
        let plain_veths = [
            link("eth0", None, 1500, false),
            link("a1", Some("veth"), 1500, true),
            link("a2", Some("veth"), 1500, true),
        ];
        assert!(looks_like_node(&plain_veths));
    }

    #[test]
    fn vxlan_calico_with_1500_byte_pods_is_too_big() {
        let interfaces = Interfaces {
            links: vec![
                link("eth0", None, 1500, false),
                link("vxlan.calico", Some("vxlan"), 1450, false),
                link("cali1", Some("veth"), 1500, true),
                link("cali2", Some("veth"), 1450, true),
            ],
            addresses: vec![],
            default_routes: vec![DefaultRoute {
                family: "ipv4".into(),
                gateway: None,
                interface: "eth0".into(),
            }],
        };
        let ev = analyse(&interfaces, &BTreeSet::new());
        assert_eq!(ev.cnis, vec!["calico"]);
        assert_eq!(ev.max_pod_mtu, Some(1450));
        assert_eq!(
            ev.oversized,
            vec![NamedMtu {
                name: "cali1".into(),
                mtu: Some(1500)
            }]
        );
        assert_eq!(ev.uplink.unwrap().found_by, "default route");
    }

    #[test]
    fn routed_pods_fit_an_uplink_found_by_its_address() {
        let interfaces = Interfaces {
            links: vec![
                link("lo", None, 65536, false),
                link("eth0", Some("dummy"), 1500, false),
                link("cali-client", Some("veth"), 1500, true),
            ],
            addresses: vec![
                addr("eth0", "192.0.2.10/24"),
                addr("cali-client", "169.254.1.1/32"),
            ],
            default_routes: vec![],
        };
        let ev = analyse(&interfaces, &["calico".to_string()].into());
        assert_eq!(ev.uplink.as_ref().map(|u| u.name.as_str()), Some("eth0"));
        assert_eq!(ev.max_pod_mtu, Some(1500));
        assert!(ev.oversized.is_empty());
        assert!(ev.signals.iter().any(|s| s.contains("chains")));
    }

    #[test]
    fn flannel_and_cilium_are_named_with_their_drop_tools() {
        let interfaces = Interfaces {
            links: vec![
                link("flannel.1", Some("vxlan"), 1450, false),
                link("cni0", Some("bridge"), 1450, false),
            ],
            ..Default::default()
        };
        assert_eq!(analyse(&interfaces, &BTreeSet::new()).cnis, vec!["flannel"]);
        assert!(drop_tool("cilium").contains("hubble observe --verdict DROPPED"));
        assert!(drop_tool("something").contains("nstat"));
    }
}
