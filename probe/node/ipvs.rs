//! IPVS virtual services as `ipvsadm -Ln` prints them and as the kernel
//! writes /proc/net/ip_vs (the same layout with hexadecimal addresses).
//! Pure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// One virtual service (a Service's IP and port in kube-proxy's IPVS mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VirtualService {
    /// `TCP`, `UDP`, `SCTP` or `FWM` (firewall mark).
    pub protocol: String,
    /// `ip:port` (`[ip6]:port`), or the mark for FWM services.
    pub address: String,
    pub scheduler: String,
    pub real_servers: Vec<RealServer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RealServer {
    pub address: String,
    /// `Masq`, `Route`, `Tunnel`, `Local`.
    pub forward: String,
    pub weight: i64,
    pub active_connections: u64,
    pub inactive_connections: u64,
}

/// How the addresses are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `ipvsadm -Ln`: `10.0.0.1:443`, `[fd00::1]:80`.
    Ipvsadm,
    /// /proc/net/ip_vs: `0A000001:01BB`, `[fd00:0000:...:0001]:0050`, ports in hex.
    Proc,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parses the virtual service table. Header lines are skipped; a real
/// server line before any service, or a line of neither kind, is an error.
pub fn parse(text: &str, format: Format) -> Result<Vec<VirtualService>, ParseError> {
    let mut services: Vec<VirtualService> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let err = |message: String| ParseError {
            line: index + 1,
            message,
        };
        let trimmed = line.trim();
        if trimmed.is_empty()
            || trimmed.starts_with("IP Virtual Server")
            || trimmed.starts_with("Prot ")
            || trimmed.starts_with("-> RemoteAddress")
        {
            continue;
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if fields[0] == "->" {
            let service = services
                .last_mut()
                .ok_or_else(|| err("a real server before any virtual service".into()))?;
            let [_, address, forward, weight, active, inactive, ..] = fields[..] else {
                return Err(err(format!("a real server needs 5 fields: {trimmed}")));
            };
            let number = |v: &str| -> Result<u64, ParseError> {
                v.parse().map_err(|_| err(format!("'{v}' is not a count")))
            };
            service.real_servers.push(RealServer {
                address: address_of(address, format).map_err(err)?,
                forward: forward.to_string(),
                weight: weight
                    .parse()
                    .map_err(|_| err(format!("'{weight}' is not a weight")))?,
                active_connections: number(active)?,
                inactive_connections: number(inactive)?,
            });
            continue;
        }
        let [protocol, address, scheduler, ..] = fields[..] else {
            return Err(err(format!("a virtual service needs 3 fields: {trimmed}")));
        };
        if !matches!(protocol, "TCP" | "UDP" | "SCTP" | "FWM") {
            return Err(err(format!("unknown protocol '{protocol}'")));
        }
        let address = if protocol == "FWM" {
            match format {
                Format::Ipvsadm => address.to_string(),
                Format::Proc => u32::from_str_radix(address, 16)
                    .map_err(|_| err(format!("'{address}' is not a firewall mark")))?
                    .to_string(),
            }
        } else {
            address_of(address, format).map_err(err)?
        };
        services.push(VirtualService {
            protocol: protocol.to_string(),
            address,
            scheduler: scheduler.to_string(),
            real_servers: Vec::new(),
        });
    }
    Ok(services)
}

/// Normalizes `ip:port` in either format to `ip:port` / `[ip6]:port`.
fn address_of(text: &str, format: Format) -> Result<String, String> {
    let bad = || format!("'{text}' is not an address:port");
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let v6 = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let (ip, port): (IpAddr, u16) = match format {
        Format::Ipvsadm => (
            v6.unwrap_or(host).parse().map_err(|_| bad())?,
            port.parse().map_err(|_| bad())?,
        ),
        Format::Proc => {
            let port = u16::from_str_radix(port, 16).map_err(|_| bad())?;
            let ip = match v6 {
                Some(groups) => {
                    let parts: Vec<u16> = groups
                        .split(':')
                        .map(|g| u16::from_str_radix(g, 16))
                        .collect::<Result<_, _>>()
                        .map_err(|_| bad())?;
                    let parts: [u16; 8] = parts.try_into().map_err(|_| bad())?;
                    IpAddr::V6(Ipv6Addr::from(parts))
                }
                None if host.len() == 8 => IpAddr::V4(Ipv4Addr::from(
                    u32::from_str_radix(host, 16).map_err(|_| bad())?,
                )),
                None => return Err(bad()),
            };
            (ip, port)
        }
    };
    Ok(match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPVSADM: &str = include_str!("../../tests/fixtures/node/kubernetes-ipvs-readme.ipvsadm");
    const PROC: &str = include_str!("../../tests/fixtures/node/procfs-ip_vs");

    #[test]
    fn ipvsadm_listing_of_kube_proxy_services() {
        let services = parse(IPVSADM, Format::Ipvsadm).unwrap();
        assert_eq!(services.len(), 3);
        assert_eq!(services[0].address, "10.0.0.1:443");
        assert_eq!(services[0].scheduler, "rr");
        assert_eq!(
            services[0].real_servers,
            vec![RealServer {
                address: "192.168.0.1:6443".into(),
                forward: "Masq".into(),
                weight: 1,
                active_connections: 1,
                inactive_connections: 0
            }]
        );
        assert_eq!(services[2].protocol, "UDP");
    }

    #[test]
    fn proc_table_with_hex_addresses_ipv6_and_firewall_marks() {
        let services = parse(PROC, Format::Proc).unwrap();
        assert_eq!(services.len(), 5);
        assert_eq!(services[0].address, "192.168.0.22:3306");
        assert_eq!(services[0].real_servers.len(), 3);
        assert_eq!(services[0].real_servers[0].address, "192.168.82.22:3306");
        assert_eq!(services[0].real_servers[0].active_connections, 248);
        assert_eq!(services[3].address, "[2620::1]:80");
        assert_eq!(services[4].protocol, "FWM");
        assert_eq!(services[4].address, "268439552");
        let endpoints: usize = services.iter().map(|s| s.real_servers.len()).sum();
        assert_eq!(endpoints, 13);
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(parse("  -> 10.0.0.1:80 Masq 1 0 0\n", Format::Ipvsadm).is_err());
        assert!(parse("TCP 10.0.0.1 rr\n", Format::Ipvsadm).is_err());
        assert!(parse("ICMP 10.0.0.1:1 rr\n", Format::Ipvsadm).is_err());
        assert!(parse("TCP  0A00:01BB rr\n", Format::Proc).is_err());
        assert!(parse(
            "TCP  10.0.0.1:80 rr\n  -> 10.0.0.2:80 Masq x 0 0\n",
            Format::Ipvsadm
        )
        .is_err());
        assert_eq!(parse("", Format::Proc), Ok(vec![]));
    }
}
