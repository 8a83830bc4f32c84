//! What a lab node looks like: pods, addresses, Services, DNS records and the
//! kube-proxy rules that tie them together. Pure data and text generation; the
//! I/O that builds it lives in `mod.rs`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};

/// The cluster's DNS domain, as kubelet's `--cluster-domain` sets it.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The Kubernetes namespace every lab pod lives in.
pub const POD_NAMESPACE: &str = "default";
/// The node's own search domain, which kubelet appends to every pod's search list.
pub const HOST_DOMAIN: &str = "corp.internal";
/// A name under [`HOST_DOMAIN`] that exists (answered by the lab's DNS).
pub const HOST_DOMAIN_NAME: &str = "intranet.corp.internal";
/// An external-looking name with an A and an AAAA record: under `ndots:5`
/// real glibc walks the whole search list for it (10 queries).
pub const EXTERNAL_NAME: &str = "api.example.com";
/// [`EXTERNAL_NAME`]'s A record (a documentation prefix; never routed).
pub const EXTERNAL_IPV4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// [`EXTERNAL_NAME`]'s AAAA record (a documentation prefix; never routed).
pub const EXTERNAL_IPV6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
/// A headless Service name: one A record per backend pod, no ClusterIP.
pub const HEADLESS_NAME: &str = "backends.default.svc.cluster.local";
/// The port the backends serve HTTP on (the `web` Service's targetPort).
pub const BACKEND_HTTP_PORT: u16 = 8080;
/// The port the backends serve gRPC on (the `grpc` Service's targetPort).
pub const BACKEND_GRPC_PORT: u16 = 50051;
/// The address every pod's default route points at; the node side of every
/// veth carries it, as Calico does.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// A namespace of the lab: the node itself or one of its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pod {
    /// The node's own namespace: kube-proxy's rules, conntrack, the node end
    /// of every veth. Not a pod, but commands can run there too.
    Node,
    /// The pod users debug from (`podprobe` runs here in the demo).
    Client,
    Backend1,
    Backend2,
    Backend3,
    /// The cluster DNS pod (dnsmasq, behind the `kube-dns` Service).
    Dns,
}

impl Pod {
    /// The pods behind the `web` and `grpc` Services, in endpoint order.
    pub const BACKENDS: [Pod; 3] = [Pod::Backend1, Pod::Backend2, Pod::Backend3];
    /// Every pod (not the node), in creation order.
    pub const PODS: [Pod; 5] = [
        Pod::Client,
        Pod::Backend1,
        Pod::Backend2,
        Pod::Backend3,
        Pod::Dns,
    ];

    /// The pod's name (also the suffix of its network namespace's name).
    pub fn name(self) -> &'static str {
        match self {
            Pod::Node => "node",
            Pod::Client => "client",
            Pod::Backend1 => "backend-1",
            Pod::Backend2 => "backend-2",
            Pod::Backend3 => "backend-3",
            Pod::Dns => "dns",
        }
    }

    /// Parses a pod name as `lab exec --pod` takes it.
    pub fn from_name(name: &str) -> Option<Pod> {
        [Pod::Node]
            .into_iter()
            .chain(Pod::PODS)
            .find(|p| p.name() == name)
    }

    /// The pod's address (`eth0`, a /32); for the node, the gateway address.
    pub fn ip(self) -> Ipv4Addr {
        match self {
            Pod::Node => GATEWAY,
            Pod::Client => Ipv4Addr::new(10, 244, 0, 2),
            Pod::Dns => Ipv4Addr::new(10, 244, 0, 10),
            Pod::Backend1 => Ipv4Addr::new(10, 244, 0, 11),
            Pod::Backend2 => Ipv4Addr::new(10, 244, 0, 12),
            Pod::Backend3 => Ipv4Addr::new(10, 244, 0, 13),
        }
    }

    /// The node end of the pod's veth, an interface of the node namespace
    /// (`cali-client`, ...: labs never collide; fits Linux's 15-character
    /// limit). Capture here to see a pod's traffic as the node does.
    pub fn veth(self) -> String {
        format!("cali-{}", self.name())
    }
}

/// A ClusterIP Service of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// `kubernetes.default`: has a name and a ClusterIP, no endpoints in the lab.
    Kubernetes,
    /// `kube-dns.kube-system`: UDP and TCP 53, DNAT to the DNS pod.
    KubeDns,
    /// `web.default`: HTTP on port 80, spread over the three backends.
    Web,
    /// `grpc.default`: gRPC on port 50051, spread over the three backends.
    Grpc,
}

impl Service {
    pub const ALL: [Service; 4] = [
        Service::Kubernetes,
        Service::KubeDns,
        Service::Web,
        Service::Grpc,
    ];

    /// The Service's fully qualified DNS name.
    pub fn fqdn(self) -> &'static str {
        match self {
            Service::Kubernetes => "kubernetes.default.svc.cluster.local",
            Service::KubeDns => "kube-dns.kube-system.svc.cluster.local",
            Service::Web => "web.default.svc.cluster.local",
            Service::Grpc => "grpc.default.svc.cluster.local",
        }
    }

    /// The ClusterIP.
    pub fn ip(self) -> Ipv4Addr {
        match self {
            Service::Kubernetes => Ipv4Addr::new(10, 96, 0, 1),
            Service::KubeDns => Ipv4Addr::new(10, 96, 0, 10),
            Service::Web => Ipv4Addr::new(10, 96, 0, 20),
            Service::Grpc => Ipv4Addr::new(10, 96, 0, 30),
        }
    }

    /// The Service port (what clients connect to).
    pub fn port(self) -> u16 {
        match self {
            Service::Kubernetes => 443,
            Service::KubeDns => 53,
            Service::Web => 80,
            Service::Grpc => BACKEND_GRPC_PORT,
        }
    }

    /// ClusterIP and port together.
    pub fn addr(self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip(), self.port())
    }

    /// `name.namespace:port`, the way clients in the cluster usually write it.
    pub fn target(self) -> String {
        let short = self.fqdn().trim_end_matches(".svc.cluster.local");
        format!("{short}:{}", self.port())
    }

    /// kube-proxy's `namespace/name:port-name`, used in rule comments.
    fn port_name(self) -> &'static str {
        match self {
            Service::Kubernetes => "default/kubernetes:https",
            Service::KubeDns => "kube-system/kube-dns:dns",
            Service::Web => "default/web:http",
            Service::Grpc => "default/grpc:grpc",
        }
    }

    /// (protocol, endpoints, target port) for each port the Service forwards.
    fn endpoints(self) -> Vec<(&'static str, Vec<Pod>, u16)> {
        match self {
            Service::Kubernetes => Vec::new(),
            Service::KubeDns => vec![("udp", vec![Pod::Dns], 53), ("tcp", vec![Pod::Dns], 53)],
            Service::Web => vec![("tcp", Pod::BACKENDS.to_vec(), BACKEND_HTTP_PORT)],
            Service::Grpc => vec![("tcp", Pod::BACKENDS.to_vec(), BACKEND_GRPC_PORT)],
        }
    }
}

/// The resolv.conf kubelet writes for a `ClusterFirst` pod in namespace
/// `default` on a node whose own search domain is [`HOST_DOMAIN`].
pub fn cluster_first_resolv_conf() -> String {
    format!(
        "search {POD_NAMESPACE}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN} {HOST_DOMAIN}\n\
         nameserver {}\n\
         options ndots:5\n",
        Service::KubeDns.ip()
    )
}

/// `ip -batch` lines for the node's side of a pod: the veth pair (the pod's
/// end named eth0, in `pod_ns`), the gateway address on the node's end and
/// a /32 route to the pod, as Calico programs it.
pub(crate) fn node_veth_batch(veth: &str, pod_ns: &str, ip: Ipv4Addr) -> String {
    format!(
        "link add {veth} type veth peer name eth0 netns {pod_ns}\n\
         addr add {GATEWAY}/32 dev {veth}\n\
         link set {veth} up\n\
         route add {ip}/32 dev {veth} scope link\n"
    )
}

/// `ip -batch` lines inside a pod: its /32 on eth0 and the default route via
/// the gateway.
pub(crate) fn pod_interface_batch(ip: Ipv4Addr) -> String {
    format!(
        "link set lo up\n\
         addr add {ip}/32 dev eth0\n\
         link set eth0 up\n\
         route add {GATEWAY} dev eth0 scope link\n\
         route add default via {GATEWAY} dev eth0\n"
    )
}

/// The hosts file kubelet manages in a pod (so the host's own /etc/hosts
/// never answers a lab lookup).
pub(crate) fn pod_hosts_file(pod: Pod) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
        pod.ip(),
        pod.name()
    )
}

/// A container image's nsswitch.conf: names come from the pod's hosts file
/// and DNS only, whatever the host adds (e.g. mdns, which would swallow
/// `*.cluster.local` as `.local` names).
pub(crate) const POD_NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\n\
hosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n";

/// A name with more A records (60) than fit in a 512-byte UDP reply:
/// without EDNS0, servers truncate it and resolvers must retry over TCP.
pub const BIG_NAME: &str = "big.example.com";

/// [`BIG_NAME`]'s addresses (a documentation prefix; never routed).
pub fn big_name_addresses() -> Vec<Ipv4Addr> {
    (1..=60).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect()
}

/// Every record the lab's DNS servers hold, as (name, address): the
/// cluster's Services, the headless Service's pods, the host domain's name
/// and a few external names.
pub(crate) fn dns_records() -> Vec<(String, IpAddr)> {
    let mut records: Vec<(String, IpAddr)> = Service::ALL
        .iter()
        .map(|svc| (svc.fqdn().to_string(), IpAddr::V4(svc.ip())))
        .collect();
    for pod in Pod::BACKENDS {
        records.push((HEADLESS_NAME.to_string(), IpAddr::V4(pod.ip())));
    }
    records.push((EXTERNAL_NAME.to_string(), IpAddr::V4(EXTERNAL_IPV4)));
    records.push((EXTERNAL_NAME.to_string(), IpAddr::V6(EXTERNAL_IPV6)));
    records.push((
        HOST_DOMAIN_NAME.to_string(),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 80)),
    ));
    for ip in big_name_addresses() {
        records.push((BIG_NAME.to_string(), IpAddr::V4(ip)));
    }
    records
}

/// dnsmasq's records: the cluster zone (NXDOMAIN for unknown names, like
/// CoreDNS), the host domain and a few external names. Everything else gets
/// NXDOMAIN too: nothing is forwarded off the machine.
pub(crate) fn dnsmasq_records() -> Vec<String> {
    let mut args = vec![
        format!("--local=/{CLUSTER_DOMAIN}/"),
        format!("--local=/{HOST_DOMAIN}/"),
        "--local=/#/".to_string(),
    ];
    for (name, ip) in dns_records() {
        args.push(format!("--host-record={name},{ip}"));
    }
    args
}

/// kube-proxy's nat table for the lab's Services, as `iptables-restore` input.
pub(crate) fn kube_proxy_nat_rules() -> String {
    let mut chains = vec![
        "KUBE-SERVICES".to_string(),
        "KUBE-MARK-MASQ".to_string(),
        "KUBE-POSTROUTING".to_string(),
    ];
    let mut rules = vec![
        r#"-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#.to_string(),
        r#"-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#.to_string(),
        r#"-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING"#.to_string(),
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000".to_string(),
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".to_string(),
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0".to_string(),
        r#"-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully"#.to_string(),
    ];
    for svc in Service::ALL {
        for (proto, pods, target_port) in svc.endpoints() {
            let ips: Vec<Ipv4Addr> = pods.iter().map(|p| p.ip()).collect();
            let (c, r) = service_port_rules(
                svc.port_name(),
                svc.ip(),
                svc.port(),
                proto,
                &ips,
                target_port,
            );
            chains.extend(c);
            rules.extend(r);
        }
    }
    let mut text = String::from("*nat\n");
    for chain in chains {
        let _ = writeln!(text, ":{chain} - [0:0]");
    }
    for rule in rules {
        let _ = writeln!(text, "{rule}");
    }
    text.push_str("COMMIT\n");
    text
}

/// kube-proxy's chains and rules for one Service port: the KUBE-SERVICES
/// jump, a KUBE-SVC chain picking an endpoint at random with `statistic`
/// probabilities 1/n, 1/(n-1), ..., and a KUBE-SEP chain per endpoint.
pub(crate) fn service_port_rules(
    port_name: &str,
    cluster_ip: Ipv4Addr,
    port: u16,
    proto: &str,
    endpoints: &[Ipv4Addr],
    target_port: u16,
) -> (Vec<String>, Vec<String>) {
    let svc_chain = chain_name("KUBE-SVC-", &format!("{port_name}/{proto}"));
    let mut chains = vec![svc_chain.clone()];
    let mut rules = vec![format!(
        r#"-A KUBE-SERVICES -d {cluster_ip}/32 -p {proto} -m comment --comment "{port_name} cluster IP" -m {proto} --dport {port} -j {svc_chain}"#
    )];
    let n = endpoints.len();
    for (i, ip) in endpoints.iter().enumerate() {
        let endpoint = format!("{ip}:{target_port}");
        let sep_chain = sep_chain_named(port_name, proto, &endpoint);
        chains.push(sep_chain.clone());
        let mut rule =
            format!(r#"-A {svc_chain} -m comment --comment "{port_name} -> {endpoint}""#);
        if i + 1 < n {
            let _ = write!(
                rule,
                " -m statistic --mode random --probability {:.11}",
                1.0 / (n - i) as f64
            );
        }
        let _ = write!(rule, " -j {sep_chain}");
        rules.push(rule);
        rules.push(format!(
            r#"-A {sep_chain} -s {ip}/32 -m comment --comment "{port_name}" -j KUBE-MARK-MASQ"#
        ));
        rules.push(format!(
            "-A {sep_chain} {}",
            dnat_rule_named(port_name, proto, &endpoint)
        ));
    }
    (chains, rules)
}

fn sep_chain(svc: Service, proto: &str, endpoint: &str) -> String {
    sep_chain_named(svc.port_name(), proto, endpoint)
}

fn sep_chain_named(port_name: &str, proto: &str, endpoint: &str) -> String {
    chain_name("KUBE-SEP-", &format!("{port_name}/{proto}/{endpoint}"))
}

fn dnat_rule(svc: Service, proto: &str, endpoint: &str) -> String {
    dnat_rule_named(svc.port_name(), proto, endpoint)
}

fn dnat_rule_named(port_name: &str, proto: &str, endpoint: &str) -> String {
    format!(
        r#"-p {proto} -m comment --comment "{port_name}" -m {proto} -j DNAT --to-destination {endpoint}"#
    )
}

/// The kube-dns UDP endpoint's DNAT rule re-pointed at `port` of the DNS pod:
/// (chain, rule number, rule) for `iptables -t nat -R`, the way an endpoint
/// update rewrites it.
pub(crate) fn kube_dns_udp_dnat(port: u16) -> (String, String, String) {
    let endpoint = format!("{}:53", Pod::Dns.ip());
    let chain = sep_chain(Service::KubeDns, "udp", &endpoint);
    let rule = dnat_rule(
        Service::KubeDns,
        "udp",
        &format!("{}:{port}", Pod::Dns.ip()),
    );
    (chain, "2".to_string(), rule)
}

/// kube-proxy names chains by a hash of the Service port (and endpoint); a
/// stable FNV-1a hash in base32 keeps the names the same length and shape.
fn chain_name(prefix: &str, key: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
    for byte in key.bytes() {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(0x0000000001000000000000000000013B);
    }
    let mut name = prefix.to_string();
    for i in 0..16 {
        name.push(char::from(
            ALPHABET[((hash >> (123 - i * 5)) & 31) as usize],
        ));
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_rules_spread_over_three_endpoints_like_kube_proxy() {
        let rules = kube_proxy_nat_rules();
        assert!(rules.contains("--probability 0.33333333333"));
        assert!(rules.contains("--probability 0.50000000000"));
        assert!(rules.contains("--to-destination 10.244.0.13:8080"));
        assert!(rules.contains("-d 10.96.0.10/32 -p udp"));
        for line in rules.lines().filter(|l| l.starts_with(':')) {
            let chain = line[1..].split(' ').next().unwrap_or("");
            assert!(chain.len() <= 28, "{chain} too long for iptables");
        }
    }

    #[test]
    fn resolv_conf_is_what_kubelet_writes_for_cluster_first() {
        assert_eq!(
            cluster_first_resolv_conf(),
            "search default.svc.cluster.local svc.cluster.local cluster.local corp.internal\n\
             nameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn pods_parse_by_name_and_veths_fit_in_ifnamsiz() {
        for pod in Pod::PODS {
            assert_eq!(Pod::from_name(pod.name()), Some(pod));
            assert!(pod.veth().len() <= 15);
        }
        assert_eq!(Pod::from_name("nope"), None);
        assert_eq!(Service::Web.target(), "web.default:80");
    }
}
