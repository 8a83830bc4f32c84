//! Replica sets: any number of extra backend pods behind a ClusterIP
//! Service of their own (kube-proxy's random DNAT, as for the lab's built-in
//! Services) and a headless name with one A record per pod, for tests that
//! need 10 replicas, or servers other than `podprobe serve`.
//!
//! The pods start empty: the caller runs its servers in them with
//! [`Lab::replica_command`].

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

use super::topology::{self, POD_NAMESPACE};
use super::{etc_netns, sys, Lab};
use crate::{Error, Result};

/// The most replicas one set may have (one /24 of pod addresses).
pub const MAX_REPLICAS: usize = 200;
/// The most replica sets one lab may have.
const MAX_SETS: u32 = 40;

/// Extra pods behind their own Services, made by [`Lab::add_replicas`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replicas {
    /// The Service's name (`NAME.default.svc.cluster.local`).
    pub name: String,
    /// The port the pods serve on; the Service's port too.
    pub port: u16,
    index: u32,
    lab: String,
    count: usize,
}

impl Replicas {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The address of replica `i` (0-based).
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, 100 + self.index as u8, 1 + i as u8)
    }

    /// Replica `i`'s name, as its pod would be named (`NAME-1`, ...).
    pub fn pod_name(&self, i: usize) -> String {
        format!("{}-{}", self.name, i + 1)
    }

    /// The network namespace of replica `i`.
    pub fn netns(&self, i: usize) -> String {
        format!("{}-rs{}-{}", self.lab, self.index, i + 1)
    }

    /// The ClusterIP.
    pub fn cluster_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 96, 100 + self.index as u8, 10)
    }

    /// The Service's fully qualified name (its A record is the ClusterIP).
    pub fn fqdn(&self) -> String {
        format!(
            "{}.{POD_NAMESPACE}.svc.{}",
            self.name,
            topology::CLUSTER_DOMAIN
        )
    }

    /// The headless Service's name: one A record per replica.
    pub fn headless_fqdn(&self) -> String {
        format!(
            "{}-headless.{POD_NAMESPACE}.svc.{}",
            self.name,
            topology::CLUSTER_DOMAIN
        )
    }

    /// `NAME.default:PORT`, as clients in the cluster write it.
    pub fn target(&self) -> String {
        format!("{}.{POD_NAMESPACE}:{}", self.name, self.port)
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.ip(i), self.port))
    }

    fn veth(&self, i: usize) -> String {
        format!("rs{}-{}", self.index, i + 1)
    }

    /// `/etc/hosts` lines dnsmasq serves for the set.
    fn hosts_file(&self) -> String {
        let mut text = format!("{} {}\n", self.cluster_ip(), self.fqdn());
        for i in 0..self.count {
            text.push_str(&format!("{} {}\n", self.ip(i), self.headless_fqdn()));
        }
        text
    }
}

fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 30
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl Lab {
    /// Adds `count` pods, a ClusterIP Service `name` on `port` spreading
    /// connections over them as kube-proxy does, and the headless name
    /// `name-headless`. Waits until the DNS server answers both names.
    pub fn add_replicas(&mut self, name: &str, count: usize, port: u16) -> Result<Replicas> {
        if !valid_service_name(name) {
            return Err(Error::usage(format!(
                "invalid replica set name '{name}': lowercase letters, digits and '-'"
            )));
        }
        if count == 0 || count > MAX_REPLICAS {
            return Err(Error::usage(format!(
                "a replica set has 1 to {MAX_REPLICAS} replicas, not {count}"
            )));
        }
        let index = self.state.replica_sets;
        if index >= MAX_SETS {
            return Err(Error::usage(format!(
                "a lab has at most {MAX_SETS} replica sets"
            )));
        }
        let set = Replicas {
            name: name.to_string(),
            port,
            index,
            lab: self.state.name.clone(),
            count,
        };
        self.state.replica_sets += 1;
        // Recorded before anything is made, so teardown finds it all.
        self.state
            .extra_netns
            .extend((0..count).map(|i| set.netns(i)));
        self.save()?;

        let node = self.netns(super::Pod::Node);
        let mut node_batch = String::new();
        for i in 0..count {
            let ns = set.netns(i);
            sys::run(sys::tool("ip").args(["netns", "add", &ns]), None)?;
            node_batch.push_str(&topology::node_veth_batch(&set.veth(i), &ns, set.ip(i)));
        }
        sys::run(
            sys::tool("ip").args(["-n", &node, "-batch", "-"]),
            Some(&node_batch),
        )?;
        for i in 0..count {
            let ns = set.netns(i);
            let batch = topology::pod_interface_batch(set.ip(i));
            sys::run(
                sys::tool("ip").args(["-n", &ns, "-batch", "-"]),
                Some(&batch),
            )?;
            let etc = etc_netns(&ns);
            sys::create_dir(&etc)?;
            for (file, text) in [
                (
                    "hosts",
                    format!("127.0.0.1\tlocalhost\n{}\t{}\n", set.ip(i), set.pod_name(i)),
                ),
                ("nsswitch.conf", topology::POD_NSSWITCH.to_string()),
                ("resolv.conf", topology::cluster_first_resolv_conf()),
            ] {
                let path = etc.join(file);
                std::fs::write(&path, text)
                    .map_err(|e| Error::io(path.display().to_string(), e))?;
            }
        }
        self.program_services(&[topology::ServicePort {
            name: format!("{POD_NAMESPACE}/{name}:grpc"),
            ip: set.cluster_ip(),
            port,
            proto: "tcp",
            endpoints: (0..count)
                .map(|i| SocketAddrV4::new(set.ip(i), port))
                .collect(),
        }])?;
        // dnsmasq reads new files in its hosts directory by itself.
        let hosts = self
            .state_dir()
            .join(super::HOSTS_DIR)
            .join(format!("replicas-{index}"));
        std::fs::write(&hosts, set.hosts_file())
            .map_err(|e| Error::io(hosts.display().to_string(), e))?;
        self.wait_records(&set.headless_fqdn(), count)?;
        self.wait_records(&set.fqdn(), 1)?;
        Ok(set)
    }

    /// A command that runs `program` inside replica `i` of `set`.
    pub fn replica_command(
        &self,
        set: &Replicas,
        i: usize,
        program: impl AsRef<std::ffi::OsStr>,
    ) -> Command {
        let mut cmd = sys::tool("ip");
        cmd.arg("netns").arg("exec").arg(set.netns(i)).arg(program);
        cmd.env("POD_NAME", set.pod_name(i))
            .env("POD_NAMESPACE", POD_NAMESPACE);
        cmd
    }

    /// Waits until the lab's DNS server answers `name` with `count` A
    /// records.
    fn wait_records(&self, name: &str, count: usize) -> Result<()> {
        let dns = SocketAddr::from((super::Pod::Dns.ip(), 53));
        let deadline = Instant::now() + super::READY_TIMEOUT;
        let node = self.netns(super::Pod::Node);
        loop {
            let answers = sys::in_netns(&node, || a_records(dns, name))?;
            if answers == Some(count) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::unavailable(format!(
                    "lab '{}': the DNS server does not answer {name} with {count} records",
                    self.state.name
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// How many A records `server` answers for `name`.
fn a_records(server: SocketAddr, name: &str) -> Option<usize> {
    let mut message = Message::query();
    message.add_query(Query::query(Name::from_ascii(name).ok()?, RecordType::A));
    message.metadata.recursion_desired = true;
    let packet = message.to_vec().ok()?;
    let answer = super::servers::exchange(server, &packet, Duration::from_millis(300))?;
    let answer = Message::from_vec(&answer).ok()?;
    Some(
        answer
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::A)
            .count(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_sets_have_their_own_addresses_and_names() {
        let set = Replicas {
            name: "greet".into(),
            port: 50051,
            index: 2,
            lab: "pp1-0".into(),
            count: 10,
        };
        assert_eq!(set.ip(0), Ipv4Addr::new(10, 244, 102, 1));
        assert_eq!(set.ip(9), Ipv4Addr::new(10, 244, 102, 10));
        assert_eq!(set.cluster_ip(), Ipv4Addr::new(10, 96, 102, 10));
        assert_eq!(set.netns(9), "pp1-0-rs2-10");
        assert!(set.veth(199).len() <= 15);
        assert_eq!(set.target(), "greet.default:50051");
        assert_eq!(
            set.headless_fqdn(),
            "greet-headless.default.svc.cluster.local"
        );
        let hosts = set.hosts_file();
        assert_eq!(hosts.lines().count(), 11);
        assert!(hosts.starts_with("10.96.102.10 greet.default.svc.cluster.local\n"));
        assert!(valid_service_name("greet-2"));
        assert!(!valid_service_name("Greet"));
    }
}
