//! The lab's choice of DNS servers, all from Debian: dnsmasq, unbound,
//! BIND's named and Knot Resolver's kresd, each authoritative for every
//! name (the lab's records, NXDOMAIN for the rest, nothing recursed or
//! forwarded), and the ways a server misbehaves:
//! - REFUSED comes from the server's own access control;
//! - SERVFAIL, truncation over UDP and replies from a wrong port or address
//!   from a front podprobe puts before the server (`lab dns-front`: the
//!   server's real reply, its rcode or TC bit changed, or sent from another
//!   socket);
//! - silence for one zone and ICMP port unreachable from iptables in the
//!   DNS pod (the kernel drops or rejects).
//!
//! Extra servers get their own address on the DNS pod (10.244.0.64 and
//! up), so a client's resolv.conf can list several, each misbehaving its
//! own way.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::topology::{self, Pod, HOST_DOMAIN};
use super::{sys, Lab};
use crate::{Error, Result};

/// A DNS server implementation the lab can run.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum DnsServer {
    #[default]
    Dnsmasq,
    Unbound,
    /// BIND 9's named.
    Named,
    /// Knot Resolver.
    Kresd,
}

impl DnsServer {
    pub const ALL: [DnsServer; 4] = [
        DnsServer::Dnsmasq,
        DnsServer::Unbound,
        DnsServer::Named,
        DnsServer::Kresd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DnsServer::Dnsmasq => "dnsmasq",
            DnsServer::Unbound => "unbound",
            DnsServer::Named => "named",
            DnsServer::Kresd => "kresd",
        }
    }

    /// The program and the Debian package that has it.
    fn tool(self) -> (&'static str, &'static str) {
        match self {
            DnsServer::Dnsmasq => ("dnsmasq", "dnsmasq-base"),
            DnsServer::Unbound => ("unbound", "unbound"),
            DnsServer::Named => ("named", "bind9"),
            DnsServer::Kresd => ("kresd", "knot-resolver"),
        }
    }
}

impl std::fmt::Display for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a lab DNS server behaves.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum DnsMode {
    /// Answers from the lab's records.
    #[default]
    Healthy,
    /// Refuses every query (the server's own access control).
    Refused,
    /// Answers SERVFAIL to every query, over UDP and TCP.
    Servfail,
    /// Truncates every UDP answer (TC set, no records); TCP answers in full.
    TruncateUdp,
    /// Drops every query for a name under the host search domain
    /// (corp.internal), UDP and TCP; answers the rest.
    SilentZone,
    /// Answers from the server's address but from another port.
    WrongPort,
    /// Answers from another address of the DNS pod.
    WrongAddress,
    /// ICMP port unreachable for UDP (for every query: the DNS pod does not
    /// rate-limit ICMP), a reset for TCP.
    Unreachable,
}

impl DnsMode {
    pub const ALL: [DnsMode; 8] = [
        DnsMode::Healthy,
        DnsMode::Refused,
        DnsMode::Servfail,
        DnsMode::TruncateUdp,
        DnsMode::SilentZone,
        DnsMode::WrongPort,
        DnsMode::WrongAddress,
        DnsMode::Unreachable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DnsMode::Healthy => "healthy",
            DnsMode::Refused => "refused",
            DnsMode::Servfail => "servfail",
            DnsMode::TruncateUdp => "truncate-udp",
            DnsMode::SilentZone => "silent-zone",
            DnsMode::WrongPort => "wrong-port",
            DnsMode::WrongAddress => "wrong-address",
            DnsMode::Unreachable => "unreachable",
        }
    }

    /// Whether a rewriting front sits before the server.
    fn fronted(self) -> bool {
        matches!(
            self,
            DnsMode::Servfail | DnsMode::TruncateUdp | DnsMode::WrongPort | DnsMode::WrongAddress
        )
    }
}

impl std::fmt::Display for DnsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An extra DNS server of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsInstance {
    pub server: DnsServer,
    pub mode: DnsMode,
    /// Where clients send queries (port 53).
    pub addr: Ipv4Addr,
}

/// The address of the `index`th extra server.
fn instance_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, 64 + (index % 32) as u8)
}

/// The address a wrong-address server's replies come from.
fn wrong_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, 96 + (index % 32) as u8)
}

/// The port of an instance's rewriting front.
fn front_port(index: usize) -> u16 {
    5300 + index as u16
}

/// What a forwarder (`lab dns-front`) says once it listens.
pub(crate) const FRONT_READY: &str = "forwarding DNS";

/// Extra servers a lab can have.
const MAX_INSTANCES: usize = 32;

impl Lab {
    /// Starts another DNS server in the DNS pod, on an address of its own,
    /// behaving as `mode`; returns the address for a resolv.conf.
    pub fn add_dns_server(&mut self, server: DnsServer, mode: DnsMode) -> Result<Ipv4Addr> {
        let index = self.state.dns_instances.len();
        if index >= MAX_INSTANCES {
            return Err(Error::usage(format!(
                "a lab runs at most {MAX_INSTANCES} extra DNS servers"
            )));
        }
        let addr = instance_ip(index);
        self.pod_address(addr)?;
        let native_mode = if mode == DnsMode::Refused {
            DnsMode::Refused
        } else {
            DnsMode::Healthy
        };
        self.start_dns_server(server, native_mode, addr, &format!("dns-{index}"))?;
        let listen = SocketAddr::from((addr, 53));
        // A refusing server is ready when it refuses.
        let ready_rcode = if native_mode == DnsMode::Refused {
            5
        } else {
            0
        };
        self.wait_dns_rcode(listen, ready_rcode)?;
        let dns = Pod::Dns;
        let rules: Vec<String> = match mode {
            DnsMode::SilentZone => {
                let labels = HOST_DOMAIN.split('.').fold(String::new(), |mut s, l| {
                    let _ = write!(s, "|{:02x}|{l}", l.len());
                    s
                });
                ["udp", "tcp"]
                    .iter()
                    .map(|p| format!("-A INPUT -d {addr} -p {p} --dport 53 -m string --algo bm --hex-string {labels}|00| -j DROP"))
                    .collect()
            }
            DnsMode::Unreachable => {
                // Every query gets its error: no rate limit on ICMP (the
                // kernel's default sends one a second per client after a
                // burst, and silence otherwise).
                super::sys::in_netns(&self.netns(dns), || {
                    std::fs::write("/proc/sys/net/ipv4/icmp_ratelimit", "0")
                        .map_err(|e| Error::io("disabling ICMP rate limits in the DNS pod", e))
                })??;
                vec![
                format!("-A INPUT -d {addr} -p udp --dport 53 -j REJECT --reject-with icmp-port-unreachable"),
                format!("-A INPUT -d {addr} -p tcp --dport 53 -j REJECT --reject-with tcp-reset"),
            ]
            }
            _ => Vec::new(),
        };
        if !rules.is_empty() {
            sys::run(
                self.command(dns, "iptables-restore")
                    .args(["-w", "--noflush"]),
                Some(&format!("*filter\n{}\nCOMMIT\n", rules.join("\n"))),
            )?;
        }
        if mode.fronted() {
            let port = front_port(index);
            let mut cmd = self.podprobe(dns);
            cmd.args(["lab", "dns-front", "--mode", mode.name()])
                .arg("--listen")
                .arg(format!("0.0.0.0:{port}"))
                .arg("--upstream")
                .arg(listen.to_string());
            match mode {
                DnsMode::WrongPort => {
                    cmd.arg("--reply-from")
                        .arg(format!("{addr}:{}", port + 1000));
                }
                DnsMode::WrongAddress => {
                    let wrong = wrong_ip(index);
                    self.pod_address(wrong)?;
                    cmd.arg("--reply-from").arg(format!("{wrong}:53"));
                }
                _ => {}
            }
            let log = format!("dns-{index}-front.log");
            self.start(cmd, &log)?;
            // Replies from a wrong source never reach a probe: wait for
            // the front to say it listens.
            self.wait_log(&log, FRONT_READY)?;
            let protocols: &[&str] = if mode == DnsMode::Servfail {
                &["udp", "tcp"]
            } else {
                &["udp"]
            };
            let nat: Vec<String> = protocols
                .iter()
                .map(|p| {
                    format!(
                        "-A PREROUTING -d {addr} -p {p} --dport 53 -j REDIRECT --to-ports {port}"
                    )
                })
                .collect();
            sys::run(
                self.command(dns, "iptables-restore")
                    .args(["-w", "--noflush"]),
                Some(&format!("*nat\n{}\nCOMMIT\n", nat.join("\n"))),
            )?;
        }
        self.state
            .dns_instances
            .push(DnsInstance { server, mode, addr });
        self.save()?;
        Ok(addr)
    }

    /// Waits until the state directory's `log` contains `text`.
    pub(super) fn wait_log(&self, log: &str, text: &str) -> Result<()> {
        let path = self.state_dir().join(log);
        let deadline = std::time::Instant::now() + super::READY_TIMEOUT;
        while !std::fs::read_to_string(&path).is_ok_and(|t| t.contains(text)) {
            if std::time::Instant::now() > deadline {
                return Err(Error::unavailable(format!(
                    "lab '{}': {log} did not say '{text}' after {}s; {}",
                    self.state.name,
                    super::READY_TIMEOUT.as_secs(),
                    self.server_output()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(())
    }

    /// The DNS server behind kube-dns.
    pub fn main_dns_server(&self) -> DnsServer {
        self.state.dns_server
    }

    /// The extra DNS servers started so far.
    pub fn dns_servers(&self) -> Vec<DnsInstance> {
        self.state.dns_instances.clone()
    }

    /// Adds `addr` to the DNS pod and routes it there from the node.
    fn pod_address(&self, addr: Ipv4Addr) -> Result<()> {
        sys::run(
            sys::tool("ip").args([
                "-n",
                &self.netns(Pod::Dns),
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "eth0",
            ]),
            None,
        )?;
        sys::run(
            sys::tool("ip").args([
                "-n",
                &self.netns(Pod::Node),
                "route",
                "add",
                &format!("{addr}/32"),
                "dev",
                &Pod::Dns.veth(),
                "scope",
                "link",
            ]),
            None,
        )?;
        Ok(())
    }

    /// The lab's main DNS server (behind kube-dns) when it is not dnsmasq.
    pub(super) fn start_main_dns(&mut self, server: DnsServer) -> Result<()> {
        self.start_dns_server(server, DnsMode::Healthy, Pod::Dns.ip(), "dns-main")
    }

    /// Writes `server`'s configuration under the state directory's `dir`
    /// and starts it on `addr`:53 in the DNS pod.
    fn start_dns_server(
        &mut self,
        server: DnsServer,
        mode: DnsMode,
        addr: Ipv4Addr,
        dir: &str,
    ) -> Result<()> {
        let (tool, package) = server.tool();
        let program = sys::find_tool(tool).ok_or_else(|| {
            Error::unavailable(format!(
                "the lab's {server} needs {tool} (package {package}); install with scripts/setup or apt-get install"
            ))
        })?;
        let dir = self.state_dir().join(dir);
        sys::create_dir(&dir)?;
        let write = |name: &str, text: String| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| Error::io(path.display().to_string(), e))?;
            Ok(path)
        };
        let refused = mode == DnsMode::Refused;
        let mut cmd = self.command(Pod::Dns, program);
        match server {
            DnsServer::Dnsmasq => {
                cmd.args(dnsmasq_args(addr, &dir.join("queries.log"), !refused));
            }
            DnsServer::Unbound => {
                let conf = write("unbound.conf", unbound_conf(addr, &dir, refused))?;
                cmd.arg("-d").arg("-c").arg(conf);
            }
            DnsServer::Named => {
                write("root.zone", root_zone(addr))?;
                let conf = write("named.conf", named_conf(addr, &dir, refused))?;
                cmd.arg("-f").arg("-c").arg(conf);
            }
            DnsServer::Kresd => {
                write("config", kresd_conf(addr, refused))?;
                cmd.arg("-n").arg("-c").arg("config").arg(&dir);
            }
        }
        let log = format!(
            "{}.log",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("dns")
        );
        self.start(cmd, &log)
    }
}

/// dnsmasq on `addr`, logging every query to `log`, with the lab's records
/// or with none (and no upstream, it then refuses every query).
pub(super) fn dnsmasq_args(addr: Ipv4Addr, log: &Path, with_records: bool) -> Vec<String> {
    let mut args = vec![
        "--keep-in-foreground".to_string(),
        "--conf-file=/dev/null".to_string(),
        "--pid-file=".to_string(),
        "--user=root".to_string(),
        "--no-resolv".to_string(),
        "--no-hosts".to_string(),
        "--bind-interfaces".to_string(),
        format!("--listen-address={addr}"),
        "--log-queries".to_string(),
        format!("--log-facility={}", log.display()),
    ];
    if with_records {
        args.extend(topology::dnsmasq_records());
    }
    args
}

fn unbound_conf(addr: Ipv4Addr, dir: &Path, refused: bool) -> String {
    let mut text = format!(
        "server:\n    interface: {addr}\n    port: 53\n    do-ip6: no\n    do-daemonize: no\n    chroot: \"\"\n    username: \"\"\n    directory: \"{dir}\"\n    pidfile: \"\"\n    use-syslog: no\n    logfile: \"\"\n    verbosity: 1\n    log-queries: yes\n    num-threads: 1\n    access-control: 0.0.0.0/0 {access}\n    module-config: \"iterator\"\n    local-zone: \".\" static\n",
        dir = dir.display(),
        access = if refused { "refuse" } else { "allow" }
    );
    for (name, ip) in topology::dns_records() {
        let rtype = if ip.is_ipv4() { "A" } else { "AAAA" };
        let _ = writeln!(text, "    local-data: \"{name}. 30 IN {rtype} {ip}\"");
    }
    text.push_str("remote-control:\n    control-enable: no\n");
    text
}

/// The root zone BIND serves: every lab record, NXDOMAIN for the rest.
fn root_zone(addr: Ipv4Addr) -> String {
    let mut text = format!(
        "$TTL 30\n@ IN SOA ns.lab. hostmaster.lab. 1 3600 600 86400 30\n@ IN NS ns.lab.\nns.lab. IN A {addr}\n"
    );
    for (name, ip) in topology::dns_records() {
        let rtype = if ip.is_ipv4() { "A" } else { "AAAA" };
        let _ = writeln!(text, "{name}. IN {rtype} {ip}");
    }
    text
}

fn named_conf(addr: Ipv4Addr, dir: &Path, refused: bool) -> String {
    let dir = dir.display();
    format!(
        "options {{\n    directory \"{dir}\";\n    listen-on port 53 {{ {addr}; }};\n    listen-on-v6 {{ none; }};\n    recursion no;\n    allow-query {{ {acl}; }};\n    pid-file none;\n    session-keyfile \"{dir}/session.key\";\n    dnssec-validation no;\n    minimal-responses yes;\n    querylog yes;\n}};\ncontrols {{ }};\nlogging {{\n    channel queries {{ file \"{dir}/queries.log\"; print-time yes; }};\n    category queries {{ queries; }};\n    channel out {{ stderr; severity info; }};\n    category default {{ out; }};\n}};\nzone \".\" {{ type primary; file \"{dir}/root.zone\"; }};\n",
        acl = if refused { "none" } else { "any" }
    )
}

/// kresd answering the lab's records from policies (NODATA for a record's
/// other types), NXDOMAIN for everything else; no recursion, no trust
/// anchor upkeep.
fn kresd_conf(addr: Ipv4Addr, refused: bool) -> String {
    let mut text = format!(
        "net.listen('{addr}', 53, {{ kind = 'dns' }})\ncache.size = 10 * MB\nfor _, m in ipairs({{'priming', 'detect_time_skew', 'ta_signal_query', 'ta_update'}}) do pcall(modules.unload, m) end\n"
    );
    if refused {
        text.push_str("policy.add(policy.all(policy.REFUSE))\n");
    }
    let mut names: Vec<(String, Vec<IpAddr>)> = Vec::new();
    for (name, ip) in topology::dns_records() {
        match names.iter_mut().find(|(n, _)| *n == name) {
            Some((_, ips)) => ips.push(ip),
            None => names.push((name, vec![ip])),
        }
    }
    for (name, ips) in names {
        let list = |v4: bool| {
            ips.iter()
                .filter(|ip| ip.is_ipv4() == v4)
                .map(|ip| format!("kres.str2ip('{ip}')"))
                .collect::<Vec<_>>()
        };
        let mut rtable = String::new();
        for (v4, rtype) in [(true, "A"), (false, "AAAA")] {
            let rdata = list(v4);
            if !rdata.is_empty() {
                let _ = write!(
                    rtable,
                    "[kres.type.{rtype}] = {{ rdata = {{ {} }}, ttl = 30 }}, ",
                    rdata.join(", ")
                );
            }
        }
        let _ = writeln!(
            text,
            "policy.add(policy.domains(policy.ANSWER({{ {rtable}}}, true), {{ todname('{name}.') }}))"
        );
    }
    text.push_str("policy.add(policy.all(policy.DENY))\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_hold_every_record() {
        let dir = Path::new("/run/podprobe/lab/x/dns-0");
        let addr = instance_ip(0);
        assert_eq!(addr, Ipv4Addr::new(10, 244, 0, 64));
        let unbound = unbound_conf(addr, dir, false);
        assert!(unbound.contains("local-data: \"api.example.com. 30 IN AAAA 2001:db8::10\""));
        assert!(unbound.contains("access-control: 0.0.0.0/0 allow"));
        assert!(unbound_conf(addr, dir, true).contains("0.0.0.0/0 refuse"));
        let zone = root_zone(addr);
        assert_eq!(zone.matches("big.example.com. IN A").count(), 60);
        assert!(named_conf(addr, dir, true).contains("allow-query { none; }"));
        let kresd = kresd_conf(addr, false);
        assert!(kresd.contains("todname('web.default.svc.cluster.local.')"));
        assert!(kresd.ends_with("policy.add(policy.all(policy.DENY))\n"));
        assert!(kresd_conf(addr, true).contains("policy.REFUSE"));
        assert!(!dnsmasq_args(addr, dir, false)
            .iter()
            .any(|a| a.starts_with("--host-record")));
    }

    #[test]
    fn modes_and_servers_have_cli_names() {
        for mode in DnsMode::ALL {
            assert_eq!(
                <DnsMode as clap::ValueEnum>::from_str(mode.name(), false),
                Ok(mode)
            );
        }
        for server in DnsServer::ALL {
            assert_eq!(
                <DnsServer as clap::ValueEnum>::from_str(server.name(), false),
                Ok(server)
            );
        }
    }
}
