//! I/O for the `net.*` and `tcp.*` checks: reads the pod's interfaces,
//! routes and conntrack state, and connects to targets. Everything returned
//! is plain evidence for the judges in `judge.rs`.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::report::{millis, Context};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub up: bool,
    pub mtu: Option<u32>,
    /// `ADDR/PREFIX`, as `ip addr` shows them.
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DefaultRoute {
    pub family: String,
    pub gateway: Option<IpAddr>,
    pub interface: String,
}

/// Evidence of `net.context`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContextEvidence {
    #[serde(flatten)]
    pub context: Context,
    pub interfaces: Vec<Interface>,
    pub default_routes: Vec<DefaultRoute>,
}

pub fn context() -> ContextEvidence {
    ContextEvidence {
        context: super::report_context(),
        interfaces: interfaces().unwrap_or_default(),
        default_routes: default_routes(),
    }
}

/// Interfaces and their addresses from getifaddrs(3), MTU from
/// SIOCGIFMTU: both answer for the calling thread's network namespace,
/// whatever /sys a container mounted.
pub fn interfaces() -> io::Result<Vec<Interface>> {
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` walks the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let iface = by_name.entry(name.clone()).or_insert_with(|| Interface {
            mtu: mtu(&name),
            name,
            up: entry.ifa_flags & libc::IFF_UP as u32 != 0,
            addresses: Vec::new(),
        });
        // SAFETY: the address pointers, when set, point at sockaddrs of the
        // family they declare.
        if let (Some(addr), Some(mask)) =
            unsafe { (sockaddr_ip(entry.ifa_addr), sockaddr_ip(entry.ifa_netmask)) }
        {
            let prefix = match mask {
                IpAddr::V4(m) => u32::from(m).count_ones(),
                IpAddr::V6(m) => u128::from(m).count_ones(),
            };
            iface.addresses.push(format!("{addr}/{prefix}"));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(by_name.into_values().collect())
}

/// # Safety
/// `sa` is null or points at a sockaddr whose family says its size.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    match i32::from((*sa).sa_family) {
        libc::AF_INET => {
            let sin = &*(sa as *const libc::sockaddr_in);
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            let sin6 = &*(sa as *const libc::sockaddr_in6);
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

fn mtu(name: &str) -> Option<u32> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).ok()?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return None;
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifru_mtu of `req`.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    // SAFETY: on success the kernel set the mtu member of the union.
    (rc == 0).then_some(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

/// Default routes of the main table, from /proc/net/route and
/// /proc/net/ipv6_route (they describe the reader's network namespace).
pub fn default_routes() -> Vec<DefaultRoute> {
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    let mut routes = parse_ipv4_default_routes(&v4);
    routes.extend(parse_ipv6_default_routes(&v6));
    routes
}

/// `Iface Destination Gateway Flags ...` with addresses in host-order hex.
pub fn parse_ipv4_default_routes(text: &str) -> Vec<DefaultRoute> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, gw, mask) = (f.first()?, f.get(1)?, f.get(2)?, f.get(7)?);
            if *dest != "00000000" || *mask != "00000000" {
                return None;
            }
            let gw = u32::from_str_radix(gw, 16).ok()?;
            Some(DefaultRoute {
                family: "ipv4".into(),
                gateway: (gw != 0).then(|| IpAddr::V4(Ipv4Addr::from(u32::from_be(gw)))),
                interface: iface.to_string(),
            })
        })
        .collect()
}

/// `dest plen src splen nexthop metric refcnt use flags iface`, hex.
pub fn parse_ipv6_default_routes(text: &str) -> Vec<DefaultRoute> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, plen, hop, iface) = (f.first()?, f.get(1)?, f.get(4)?, f.get(9)?);
            if dest.len() != 32
                || dest.bytes().any(|b| b != b'0')
                || *plen != "00"
                || *iface == "lo"
            {
                return None;
            }
            let hop = u128::from_str_radix(hop, 16).ok()?;
            Some(DefaultRoute {
                family: "ipv6".into(),
                gateway: (hop != 0).then(|| IpAddr::V6(Ipv6Addr::from(hop))),
                interface: iface.to_string(),
            })
        })
        .collect()
}

/// Evidence of `net.conntrack`: the table's fill and the per-CPU event
/// counters summed, and whose table it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ConntrackEvidence {
    pub count: u64,
    pub max: u64,
    pub insert_failed: u64,
    pub drop: u64,
    pub early_drop: u64,
    pub invalid: u64,
    /// `node` when this namespace carries a node's interfaces (pod veths,
    /// CNI devices), `pod` otherwise: a pod's table holds only the pod's own
    /// flows, never the Service NAT of the node it runs on.
    pub scope: TableScope,
    /// The network namespace read (`net:[4026532288]`).
    pub netns: Option<String>,
}

/// Whose conntrack table a namespace has.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TableScope {
    Node,
    #[default]
    Pod,
}

/// Where conntrack's numbers live; a pod's /proc shows its own namespace's.
pub const CONNTRACK_PROC: &str = "/proc";

/// Reads the conntrack table's state under a proc root, or says why it
/// cannot (no conntrack module, a /proc that hides it).
pub fn conntrack(proc_root: &Path) -> Result<ConntrackEvidence, String> {
    let mut evidence = parse_conntrack_stat(&read_proc(proc_root, "net/stat/nf_conntrack")?)?;
    evidence.count = read_proc_number(proc_root, "sys/net/netfilter/nf_conntrack_count")?;
    evidence.max = read_proc_number(proc_root, "sys/net/netfilter/nf_conntrack_max")?;
    evidence.netns = std::fs::read_link(proc_root.join("self/ns/net"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    Ok(evidence)
}

/// A file under a proc root, or why it could not be read.
pub fn read_proc(proc_root: &Path, rel: &str) -> Result<String, String> {
    let path = proc_root.join(rel);
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A file under a proc root that holds one number (a sysctl, a count).
pub fn read_proc_number(proc_root: &Path, rel: &str) -> Result<u64, String> {
    read_proc(proc_root, rel)?
        .trim()
        .parse()
        .map_err(|e| format!("{rel}: {e}"))
}

/// /proc/net/stat/nf_conntrack: one row of event counters per CPU, named
/// by the header.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ConntrackStat {
    pub columns: Vec<String>,
    pub cpus: Vec<Vec<u64>>,
}

impl ConntrackStat {
    /// One counter of every CPU, when the kernel has that column.
    pub fn per_cpu(&self, name: &str) -> Option<Vec<u64>> {
        let at = self.columns.iter().position(|c| c == name)?;
        Some(
            self.cpus
                .iter()
                .map(|row| row.get(at).copied().unwrap_or(0))
                .collect(),
        )
    }

    pub fn total(&self, name: &str) -> Option<u64> {
        self.per_cpu(name).map(|v| saturating_sum(&v))
    }
}

/// Counters summed; a sum past u64 (only a corrupt file has one) stays at
/// the maximum instead of overflowing.
pub fn saturating_sum(values: &[u64]) -> u64 {
    values.iter().fold(0, |sum, v| sum.saturating_add(*v))
}

/// Parses /proc/net/stat/nf_conntrack by column name: the columns changed
/// between kernels (searched → clashres, delete_list → chainlength), so
/// positions cannot be trusted. Values are hexadecimal.
pub fn parse_conntrack_stat_table(text: &str) -> Result<ConntrackStat, String> {
    let mut lines = text.lines();
    let columns: Vec<String> = lines
        .next()
        .ok_or("empty conntrack statistics")?
        .split_whitespace()
        .map(String::from)
        .collect();
    let known = ["insert_failed", "drop", "early_drop", "invalid"];
    if !columns.iter().any(|c| known.contains(&c.as_str())) {
        return Err(format!(
            "unknown conntrack statistics header: {}",
            columns.join(" ")
        ));
    }
    let cpus = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_whitespace()
                .map(|v| u64::from_str_radix(v, 16).map_err(|e| format!("'{v}': {e}")))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<_, _>>()?;
    Ok(ConntrackStat { columns, cpus })
}

/// Sums the per-CPU rows of /proc/net/stat/nf_conntrack.
pub fn parse_conntrack_stat(text: &str) -> Result<ConntrackEvidence, String> {
    let stat = parse_conntrack_stat_table(text)?;
    let total = |name: &str| stat.total(name).unwrap_or(0);
    Ok(ConntrackEvidence {
        insert_failed: total("insert_failed"),
        drop: total("drop"),
        early_drop: total("early_drop"),
        invalid: total("invalid"),
        ..Default::default()
    })
}

/// How a TCP connect ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// RST: nothing listens, or a REJECT rule answered for it.
    Refused,
    /// Nothing came back: a DROP rule (NetworkPolicy, firewall).
    Timeout,
    /// ICMP unreachable or no route.
    Unreachable,
    /// Anything else the kernel said.
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReachabilityEvidence {
    pub target: String,
    pub resolved: Vec<IpAddr>,
    pub outcome: Outcome,
    pub connect_ms: Option<f64>,
    pub error: Option<String>,
}

/// A `HOST:PORT` target and the addresses it resolved to.
pub type ResolvedTarget = (String, Vec<SocketAddr>);

/// Resolves every target up front: one that is not HOST:PORT or does not
/// resolve is a usage error, as it is for curl, not a failed check.
pub async fn resolve_targets(
    targets: &[String],
    timeout: Duration,
) -> crate::Result<Vec<ResolvedTarget>> {
    let mut resolved = Vec::with_capacity(targets.len());
    for target in targets {
        let addrs = super::resolve::resolve_target(target, timeout).await?;
        resolved.push((target.clone(), addrs));
    }
    Ok(resolved)
}

/// Connects to each target in parallel, each bounded by `timeout`, and
/// classifies the result.
pub fn reachability(targets: Vec<ResolvedTarget>, timeout: Duration) -> Vec<ReachabilityEvidence> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .into_iter()
            .map(|(target, addrs)| scope.spawn(move || connect(target, addrs, timeout)))
            .collect();
        handles
            .into_iter()
            .map(|h| crate::checks::joined(h.join()))
            .collect()
    })
}

fn connect(target: String, addrs: Vec<SocketAddr>, timeout: Duration) -> ReachabilityEvidence {
    let resolved = addrs.iter().map(SocketAddr::ip).collect();
    // Like curl, try the first address; the pod's app does the same.
    let Some(addr) = addrs.first() else {
        return ReachabilityEvidence {
            target,
            resolved,
            outcome: Outcome::Error,
            connect_ms: None,
            error: Some("no address".into()),
        };
    };
    let start = Instant::now();
    let result = std::net::TcpStream::connect_timeout(addr, timeout);
    let elapsed = millis(start.elapsed());
    let (outcome, error) = match result {
        Ok(_) => (Outcome::Ok, None),
        Err(e) => (classify(&e), Some(e.to_string())),
    };
    ReachabilityEvidence {
        target,
        resolved,
        outcome,
        connect_ms: Some(elapsed),
        error,
    }
}

fn classify(err: &io::Error) -> Outcome {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => Outcome::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Outcome::Timeout,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => Outcome::Unreachable,
        _ => match err.raw_os_error() {
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EACCES | libc::EPERM) => {
                Outcome::Unreachable
            }
            _ => Outcome::Error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found reading the parser for its fuzz target (proc_files), confirmed
    /// there: per-CPU counters whose sum passes u64 overflowed.
    #[test]
    fn counters_past_u64_saturate() {
        let text = include_str!("../../fuzz/regressions/proc_files/counters-past-u64");
        assert_eq!(parse_conntrack_stat(text).unwrap().insert_failed, u64::MAX);
    }

    /// Linux 6.x (nf_conntrack_standalone.c since the chainlength change).
    const STAT_6X: &str = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000fce  00000000 00000000 00000000 00000004 00000000 00000000 00000000 00000000 000000c8 000001d8 00000000 00000000  00000000 00000000 00000000 00000000
00000fce  00000003 00000000 00000000 00000001 00000000 00000000 00000000 00000000 00000002 00000005 00000001 00000000  00000000 00000000 00000000 00000003
";
    /// Linux 5.x: clashres, but still delete_list.
    const STAT_5X: &str = "entries  clashres found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000021  00000000 00000000 00000000 0000002a 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000
";
    /// Linux 4.x: searched instead of clashres.
    const STAT_4X: &str = "entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0000000a  00000000 00000000 00000000 00000010 0000aaaa 00000000 00000000 00000000 00000001 00000000 00000007 00000000  00000000 00000000 00000000 00000000
0000000a  00000000 00000000 00000000 00000001 0000bbbb 00000000 00000000 00000000 00000001 00000000 00000000 00000000  00000000 00000000 00000000 00000000
";

    #[test]
    fn conntrack_stats_are_summed_by_column_name_on_every_layout() {
        let six = parse_conntrack_stat(STAT_6X).unwrap();
        assert_eq!(
            (six.invalid, six.insert_failed, six.drop, six.early_drop),
            (5, 0xca, 0x1dd, 1)
        );
        let five = parse_conntrack_stat(STAT_5X).unwrap();
        assert_eq!((five.invalid, five.insert_failed, five.drop), (0x2a, 0, 0));
        let four = parse_conntrack_stat(STAT_4X).unwrap();
        assert_eq!(
            (four.invalid, four.insert_failed, four.drop, four.early_drop),
            (0x11, 2, 0, 7)
        );
    }

    #[test]
    fn conntrack_stats_reject_garbage() {
        assert!(parse_conntrack_stat("").is_err());
        assert!(parse_conntrack_stat("a b c\n1 2 3\n").is_err());
        assert!(parse_conntrack_stat("entries drop\n0000 zz\n").is_err());
    }

    #[test]
    fn default_routes_from_proc() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101FEA9\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0101FEA9\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0
";
        assert_eq!(
            parse_ipv4_default_routes(v4),
            vec![DefaultRoute {
                family: "ipv4".into(),
                gateway: Some("169.254.1.1".parse().unwrap()),
                interface: "eth0".into()
            }]
        );
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";
        let routes = parse_ipv6_default_routes(v6);
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].gateway, Some("fe80::1".parse().unwrap()));
    }

    #[test]
    fn connect_errors_are_classified() {
        let e = |code| io::Error::from_raw_os_error(code);
        assert_eq!(classify(&e(libc::ECONNREFUSED)), Outcome::Refused);
        assert_eq!(classify(&e(libc::ETIMEDOUT)), Outcome::Timeout);
        assert_eq!(classify(&e(libc::EHOSTUNREACH)), Outcome::Unreachable);
        assert_eq!(classify(&e(libc::ENETUNREACH)), Outcome::Unreachable);
    }
}
