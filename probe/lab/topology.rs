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
    /// `kubernetes.default`: the API server's Service (its endpoint: `apiserver.rs`).
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

/// One Service port as kube-proxy programs it: a ClusterIP and port of one
/// protocol, spread over endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServicePort {
    /// kube-proxy's `namespace/name:port-name`.
    pub name: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub proto: &'static str,
    pub endpoints: Vec<SocketAddrV4>,
}

impl ServicePort {
    /// kube-proxy's chain key: `namespace/name/proto/port-name` (nftables).
    fn nft_key(&self) -> String {
        let (ns_name, port_name) = self.name.rsplit_once(':').unwrap_or((&self.name, ""));
        format!("{ns_name}/{}/{port_name}", self.proto)
    }
}

/// The lab's own Services, port by port.
pub(crate) fn lab_service_ports() -> Vec<ServicePort> {
    Service::ALL
        .iter()
        .flat_map(|svc| {
            svc.endpoints()
                .into_iter()
                .map(move |(proto, pods, target_port)| ServicePort {
                    name: svc.port_name().to_string(),
                    ip: svc.ip(),
                    port: svc.port(),
                    proto,
                    endpoints: pods
                        .iter()
                        .map(|p| SocketAddrV4::new(p.ip(), target_port))
                        .collect(),
                })
        })
        .chain([super::apiserver::apiserver_service_port()])
        .collect()
}

/// Where generated Services live: 10.100.0.0/16, inside the cluster's
/// 10.96.0.0/12 Service range and apart from the lab's own Services.
pub const GENERATED_SERVICES_MAX: usize = 65_536;

/// The `index`th generated Service: HTTP on port 80 of 10.100.x.y, with one
/// endpoint, a backend's HTTP port (so a connect to any of them succeeds).
pub(crate) fn generated_service_port(index: usize) -> ServicePort {
    let backend = Pod::BACKENDS[index % Pod::BACKENDS.len()];
    ServicePort {
        name: format!("bench/svc-{index}:http"),
        ip: generated_service_ip(index),
        port: 80,
        proto: "tcp",
        endpoints: vec![SocketAddrV4::new(backend.ip(), BACKEND_HTTP_PORT)],
    }
}

pub fn generated_service_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + index as u32)
}

/// kube-proxy's nat table for the lab's Services, as `iptables-restore` input.
pub(crate) fn kube_proxy_nat_rules() -> String {
    iptables_nat_restore(&lab_service_ports(), true)
}

/// More Services for a running lab's nat table (`iptables-restore
/// --noflush`): only their own chains are declared, so the chains they are
/// appended to keep their rules.
pub(crate) fn generated_nat_rules(ports: &[ServicePort]) -> String {
    iptables_nat_restore(ports, false)
}

fn iptables_nat_restore(ports: &[ServicePort], base: bool) -> String {
    let mut chains = Vec::new();
    let mut rules = Vec::new();
    if base {
        chains.extend(["KUBE-SERVICES", "KUBE-MARK-MASQ", "KUBE-POSTROUTING"].map(String::from));
        rules.extend([
            r#"-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#.to_string(),
            r#"-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#.to_string(),
            r#"-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING"#.to_string(),
            "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000".to_string(),
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".to_string(),
            "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0".to_string(),
            r#"-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully"#.to_string(),
        ]);
    }
    for sp in ports {
        let (name, proto) = (&sp.name, sp.proto);
        let svc_chain = chain_name("KUBE-SVC-", &format!("{name}/{proto}"));
        chains.push(svc_chain.clone());
        rules.push(format!(
            r#"-A KUBE-SERVICES -d {}/32 -p {proto} -m comment --comment "{name} cluster IP" -m {proto} --dport {} -j {svc_chain}"#,
            sp.ip, sp.port
        ));
        let n = sp.endpoints.len();
        for (i, endpoint) in sp.endpoints.iter().enumerate() {
            let sep_chain = sep_chain(name, proto, &endpoint.to_string());
            chains.push(sep_chain.clone());
            let mut rule = format!(r#"-A {svc_chain} -m comment --comment "{name} -> {endpoint}""#);
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
                r#"-A {sep_chain} -s {}/32 -m comment --comment "{name}" -j KUBE-MARK-MASQ"#,
                endpoint.ip()
            ));
            rules.push(format!(
                "-A {sep_chain} {}",
                dnat_rule(name, proto, &endpoint.to_string())
            ));
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

/// The pod CIDR the lab's node routes (kube-proxy's and the CNI's "local").
pub const POD_CIDR: &str = "10.244.0.0/16";

/// kube-proxy's nftables mode for `ports`, as `nft -f` input: with `base`,
/// its `kube-proxy` table (the nat hooks, the masquerading chain, the
/// `service-ips` verdict map); the Services' chains and map elements always.
/// Chains come first: a rule may `goto` only a chain that exists.
pub(crate) fn kube_proxy_nft_ruleset(ports: &[ServicePort], base: bool) -> String {
    const T: &str = "ip kube-proxy";
    let mut chains = Vec::new();
    let mut rules = Vec::new();
    let mut elements = Vec::new();
    if base {
        chains.extend([
            format!("add table {T} {{ comment \"rules for kube-proxy\" ; }}"),
            format!("add set {T} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"),
            format!("add map {T} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}"),
            format!("add chain {T} mark-for-masquerade"),
            format!("add chain {T} masquerading"),
            format!("add chain {T} nat-output {{ type nat hook output priority -100 ; }}"),
            format!("add chain {T} nat-postrouting {{ type nat hook postrouting priority 100 ; }}"),
            format!("add chain {T} nat-prerouting {{ type nat hook prerouting priority -100 ; }}"),
            format!("add chain {T} services"),
        ]);
        rules.extend([
            format!("add rule {T} mark-for-masquerade mark set mark or 0x4000"),
            format!("add rule {T} masquerading mark and 0x4000 == 0 return"),
            format!("add rule {T} masquerading mark set mark xor 0x4000"),
            format!("add rule {T} masquerading masquerade fully-random"),
            format!("add rule {T} nat-output jump services"),
            format!("add rule {T} nat-postrouting jump masquerading"),
            format!("add rule {T} nat-prerouting jump services"),
            format!("add rule {T} services ip daddr . meta l4proto . th dport vmap @service-ips"),
        ]);
    }
    for sp in ports {
        let key = sp.nft_key();
        let service = format!("service-{}-{key}", nft_hash(&key));
        chains.push(format!("add chain {T} {service}"));
        let mut vmap = Vec::new();
        for (i, endpoint) in sp.endpoints.iter().enumerate() {
            let ep_key = format!("{key}__{}/{}", endpoint.ip(), endpoint.port());
            let chain = format!("endpoint-{}-{ep_key}", nft_hash(&ep_key));
            chains.push(format!("add chain {T} {chain}"));
            rules.push(format!(
                "add rule {T} {chain} ip saddr {} jump mark-for-masquerade",
                endpoint.ip()
            ));
            rules.push(format!(
                "add rule {T} {chain} meta l4proto {} dnat to {endpoint}",
                sp.proto
            ));
            vmap.push(format!("{i} : goto {chain}"));
        }
        rules.push(format!(
            "add rule {T} {service} numgen random mod {} vmap {{ {} }}",
            sp.endpoints.len(),
            vmap.join(" , ")
        ));
        elements.push(format!("add element {T} cluster-ips {{ {} }}", sp.ip));
        elements.push(format!(
            "add element {T} service-ips {{ {} . {} . {} : goto {service} }}",
            sp.ip, sp.proto, sp.port
        ));
    }
    let mut text = String::new();
    for line in chains.iter().chain(&rules).chain(&elements) {
        let _ = writeln!(text, "{line}");
    }
    text
}

/// kube-proxy's nftables chain hash: 8 base32 characters of the key.
fn nft_hash(key: &str) -> String {
    chain_name("", key)[..8].to_string()
}

fn sep_chain(port_name: &str, proto: &str, endpoint: &str) -> String {
    chain_name("KUBE-SEP-", &format!("{port_name}/{proto}/{endpoint}"))
}

fn dnat_rule(port_name: &str, proto: &str, endpoint: &str) -> String {
    format!(
        r#"-p {proto} -m comment --comment "{port_name}" -m {proto} -j DNAT --to-destination {endpoint}"#
    )
}

/// The kube-dns UDP endpoint's DNAT rule re-pointed at `port` of the DNS pod:
/// (chain, rule number, rule) for `iptables -t nat -R`, the way an endpoint
/// update rewrites it.
pub(crate) fn kube_dns_udp_dnat(port: u16) -> (String, String, String) {
    let endpoint = format!("{}:53", Pod::Dns.ip());
    let chain = sep_chain(Service::KubeDns.port_name(), "udp", &endpoint);
    let rule = dnat_rule(
        Service::KubeDns.port_name(),
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
