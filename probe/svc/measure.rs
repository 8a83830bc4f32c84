//! I/O for `svc.reachability` and `net.egress`: names looked up through the
//! app's resolver model (the DNS area's), then a TCP connect to each target
//! (the net area's), all connects in parallel.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::Options;
use crate::dns::measure::LookupEvidence;
use crate::net::measure::{reachability, ReachabilityEvidence, ResolvedTarget};

/// How a target is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// An address given (a ClusterIP from the environment, an IP literal).
    Address,
    /// A name, looked up as the app's resolver looks it up.
    Name,
}

/// Something to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The Service's name, or the `--external` target as given.
    pub service: String,
    pub host: String,
    pub port: u16,
    pub via: Via,
}

impl Target {
    pub fn address(service: &str, ip: IpAddr, port: u16) -> Self {
        Target {
            service: service.to_string(),
            host: ip.to_string(),
            port,
            via: Via::Address,
        }
    }

    pub fn name(service: &str, name: &str, port: u16) -> Self {
        Target {
            service: service.to_string(),
            host: name.to_string(),
            port,
            via: Via::Name,
        }
    }

    /// `HOST:PORT` from `--external`: bad syntax is a usage error; a name
    /// that does not resolve is a finding, not bad input.
    pub fn external(text: &str) -> crate::Result<Self> {
        let (host, port) = crate::net::resolve::split_host_port(text)?;
        if port == 0 {
            return Err(crate::Error::usage(format!(
                "--external '{text}': port 0 cannot be connected to"
            )));
        }
        let via = if host.parse::<IpAddr>().is_ok() {
            Via::Address
        } else {
            Via::Name
        };
        Ok(Target {
            service: text.to_string(),
            host,
            port,
            via,
        })
    }

    /// `HOST:PORT` (`[v6]:PORT`).
    pub fn label(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, self.port).to_string(),
            Err(_) => format!("{}:{}", self.host, self.port),
        }
    }
}

/// One target's evidence: the lookup when it went by name, and the connect
/// when there was an address to connect to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetEvidence {
    pub service: String,
    pub via: Via,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookup: Option<LookupEvidence>,
    pub connect: Option<ReachabilityEvidence>,
}

/// Looks the named targets up (one after another, each bounded by the
/// resolver's own waits and the timeout), then connects to every target
/// with an address, in parallel.
pub fn reach(targets: Vec<Target>, options: &Options) -> crate::Result<Vec<TargetEvidence>> {
    let names: Vec<String> = targets
        .iter()
        .filter(|t| t.via == Via::Name)
        .map(|t| t.host.clone())
        .collect();
    let mut lookups = if names.is_empty() {
        Vec::new()
    } else {
        crate::dns::lookups_as_app(
            &names,
            options.resolv_conf.as_deref(),
            options.resolver,
            options.timeout,
        )?
    }
    .into_iter();
    let mut evidence = Vec::with_capacity(targets.len());
    let mut connects: Vec<ResolvedTarget> = Vec::new();
    for target in targets {
        let label = target.label();
        let (lookup, addrs) = match target.via {
            Via::Address => (
                None,
                target.host.parse::<IpAddr>().ok().into_iter().collect(),
            ),
            Via::Name => {
                let lookup = lookups.next();
                let addrs: Vec<IpAddr> = lookup
                    .iter()
                    .flat_map(|l| &l.addresses)
                    .filter_map(|a| a.parse().ok())
                    .collect();
                (lookup, addrs)
            }
        };
        if !addrs.is_empty() {
            connects.push((
                label.clone(),
                addrs
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, target.port))
                    .collect(),
            ));
        }
        evidence.push(TargetEvidence {
            service: target.service,
            via: target.via,
            target: label,
            lookup,
            connect: None,
        });
    }
    for connected in reachability(connects, options.timeout) {
        if let Some(e) = evidence
            .iter_mut()
            .find(|e| e.target == connected.target && e.connect.is_none())
        {
            e.connect = Some(connected);
        }
    }
    Ok(evidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_targets_by_address_or_name() {
        let ip = Target::external("203.0.113.10:443").unwrap();
        assert_eq!(
            (ip.via, ip.label()),
            (Via::Address, "203.0.113.10:443".into())
        );
        let v6 = Target::external("[2001:db8::10]:443").unwrap();
        assert_eq!(v6.label(), "[2001:db8::10]:443");
        let name = Target::external("api.example.com:443").unwrap();
        assert_eq!(
            (name.via, name.host.as_str()),
            (Via::Name, "api.example.com")
        );
        assert!(Target::external("api.example.com").is_err());
        assert!(Target::external("api.example.com:0").is_err());
    }
}
