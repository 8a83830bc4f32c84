//! The lab: one Kubernetes node's data path built from network namespaces,
//! veths, kube-proxy's iptables chains, real conntrack and a real DNS server,
//! so every failure mode podprobe looks for can be reproduced on any Linux
//! machine (root only).
//!
//! ```no_run
//! use podprobe::lab::{Lab, LabSpec, Pod, Scenario, Service};
//! // In an integration test: LabSpec::new(env!("CARGO_BIN_EXE_podprobe")).
//! let mut lab = Lab::up(&LabSpec::new("target/debug/podprobe"))?;
//! let out = lab.command(Pod::Client, "getent").args(["ahosts", "web.default"]).output();
//! let stream = lab.in_pod(Pod::Client, || std::net::TcpStream::connect(Service::Web.addr()))?;
//! lab.add_scenario(Scenario::DnsRace)?;
//! # Ok::<(), podprobe::Error>(())
//! ```
//!
//! A `Lab` tears everything down when dropped (also while a test panics,
//! and on SIGINT, SIGTERM or SIGHUP, through [`crate::cleanup`]):
//! namespaces (and with them veths, rules and conntrack), the processes
//! inside them, `/etc/netns/<ns>/` files and its state directory. The CLI's
//! `podprobe lab up` keeps the lab running instead ([`Lab::keep`]) and
//! `podprobe lab down` removes it by name.

mod apiserver;
pub mod command;
mod dns;
pub mod invalid;
mod node;
mod replicas;
mod scenario;
mod servers;
mod sys;
mod topology;

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use apiserver::{apiserver_endpoint, service_env, APISERVER_PORT};
pub use dns::{DnsInstance, DnsMode, DnsServer};
pub use node::{
    generated_service, ProxyMode, CONNTRACK_FILL, NODELOCAL_ADDRESS, NODELOCAL_INTERFACE,
    NODE_ADDRESS, OVERLAY_INTERFACE, OVERLAY_MTU, UPLINK, UPLINK_MTU,
};
pub use replicas::{Replicas, MAX_REPLICAS};
pub use scenario::{Scenario, SLOW_DNS_DELAY};
pub use topology::{
    big_name_addresses, cluster_first_resolv_conf, Pod, Service, BACKEND_GRPC_PORT,
    BACKEND_HTTP_PORT, BIG_NAME, CLUSTER_DOMAIN, EXTERNAL_IPV4, EXTERNAL_IPV6, EXTERNAL_NAME,
    GATEWAY, HEADLESS_NAME, HOST_DOMAIN, HOST_DOMAIN_NAME, POD_NAMESPACE,
};

use crate::cleanup::{Cleanup, Killed};
use crate::{Error, Result};

/// Where labs record their state (found again by `lab down|status|exec`).
const STATE_ROOT: &str = "/run/podprobe/lab";
/// How long servers may take to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest lab name: namespace names stay short enough to read in `ip netns`.
const MAX_NAME: usize = 20;
/// The state directory's folder of extra hosts files dnsmasq serves (read
/// again by dnsmasq whenever one is added).
const HOSTS_DIR: &str = "hosts.d";

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// The lab's name (`[a-z0-9-]`, up to 20 characters); `None` picks a
    /// name unique to this process, so parallel tests never collide.
    pub name: Option<String>,
    /// Faults to add once the node is up.
    pub scenarios: Vec<Scenario>,
    /// The podprobe binary the backends and helpers run
    /// (tests: `env!("CARGO_BIN_EXE_podprobe")`; the CLI: its own exe).
    pub podprobe: PathBuf,
    /// The DNS server behind the kube-dns Service.
    pub dns_server: DnsServer,
}

impl LabSpec {
    pub fn new(podprobe: impl Into<PathBuf>) -> Self {
        LabSpec {
            name: None,
            scenarios: Vec::new(),
            podprobe: podprobe.into(),
            dns_server: DnsServer::default(),
        }
    }

    pub fn dns_server(mut self, server: DnsServer) -> Self {
        self.dns_server = server;
        self
    }

    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn scenario(mut self, scenario: Scenario) -> Self {
        self.scenarios.push(scenario);
        self
    }
}

/// What `lab status` and later commands read back.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    name: String,
    podprobe: PathBuf,
    scenarios: Vec<Scenario>,
    /// Replica sets added so far.
    #[serde(default)]
    replica_sets: u32,
    /// Namespaces of replica sets, removed with the lab.
    #[serde(default)]
    extra_netns: Vec<String>,
    #[serde(default)]
    dns_server: DnsServer,
    #[serde(default)]
    dns_instances: Vec<DnsInstance>,
    /// Services added by [`Lab::add_services`].
    #[serde(default)]
    services: usize,
}

/// A running lab. Dropping it removes everything it made.
#[derive(Debug)]
pub struct Lab {
    state: State,
    /// Processes this value started, killed and reaped on teardown (shared
    /// with the registered cleanup: one that has not entered its pod's
    /// namespace yet is not found there).
    children: Children,
    /// The lab's removal, registered before anything was made; `None` once
    /// [`Lab::keep`] hands the lab over to the system, and for a lab found
    /// by [`Lab::open`].
    cleanup: Option<Cleanup>,
}

/// One query dnsmasq logged (`query[A] name from 10.244.0.2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuery {
    /// `A`, `AAAA`, ...
    pub qtype: String,
    pub name: String,
    pub from: String,
}

/// A background process in a pod, killed when dropped (or on a signal).
#[derive(Debug)]
pub struct Background {
    child: Killed,
}

impl Background {
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Lab {
    /// Builds the node, its pods, Services, DNS and backends, then adds the
    /// spec's scenarios. On any failure, what was built is removed again.
    pub fn up(spec: &LabSpec) -> Result<Lab> {
        sys::require_root()?;
        sys::require_tools()?;
        let name = match &spec.name {
            Some(name) => {
                validate_name(name)?;
                if exists(name) {
                    return Err(Error::usage(format!(
                        "lab '{name}' already exists; remove it with: podprobe lab down --name {name}"
                    )));
                }
                name.clone()
            }
            None => unique_name(),
        };
        if !spec.podprobe.is_file() {
            return Err(Error::usage(format!(
                "podprobe binary {} not found",
                spec.podprobe.display()
            )));
        }
        let children = Children::default();
        let removal = {
            let (name, children) = (name.clone(), Arc::clone(&children));
            Cleanup::register(format!("lab '{name}'"), move || {
                stop(&children);
                teardown(&name)
            })
        };
        let mut lab = Lab {
            state: State {
                name,
                podprobe: spec.podprobe.clone(),
                scenarios: Vec::new(),
                replica_sets: 0,
                extra_netns: Vec::new(),
                dns_server: spec.dns_server,
                dns_instances: Vec::new(),
                services: 0,
            },
            children,
            cleanup: Some(removal),
        };
        // From here on a failure drops `lab`, which removes the partial build.
        lab.build()?;
        for &scenario in &spec.scenarios {
            lab.add_scenario(scenario)?;
        }
        Ok(lab)
    }

    /// Finds a lab `podprobe lab up` left running.
    pub fn open(name: &str) -> Result<Lab> {
        validate_name(name)?;
        let path = state_dir(name).join("state.json");
        let text = std::fs::read_to_string(&path).map_err(|_| {
            Error::usage(format!(
                "no lab named '{name}' is running (start one with: podprobe lab up --name {name})"
            ))
        })?;
        let state: State = serde_json::from_str(&text).map_err(|e| {
            Error::unavailable(format!("{}: unreadable lab state: {e}", path.display()))
        })?;
        Ok(Lab {
            state,
            children: Children::default(),
            cleanup: None,
        })
    }

    /// Leaves the lab running after this value is gone (for `lab up`).
    pub fn keep(mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup.forget();
        }
        // Dropping a Child neither kills nor waits for it.
        lock(&self.children).clear();
    }

    /// Removes everything the lab made, reporting what could not be removed.
    pub fn down(mut self) -> Result<()> {
        self.teardown()
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The scenarios added so far.
    pub fn scenarios(&self) -> Vec<Scenario> {
        self.state.scenarios.clone()
    }

    /// The network namespace of `pod` (`ip netns exec <this> ...`).
    pub fn netns(&self, pod: Pod) -> String {
        netns_name(&self.state.name, pod)
    }

    /// The pod's address (for [`Pod::Node`], the gateway every pod routes via).
    pub fn pod_ip(&self, pod: Pod) -> Ipv4Addr {
        pod.ip()
    }

    /// A command that runs `program` inside `pod`, with the pod's resolv.conf
    /// and hosts bind-mounted over /etc as `ip netns exec` does (glibc reads them).
    pub fn command(&self, pod: Pod, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = sys::tool("ip");
        cmd.arg("netns")
            .arg("exec")
            .arg(self.netns(pod))
            .arg(program);
        cmd
    }

    /// The podprobe binary the lab was built with, as a command inside
    /// `pod`, with the downward-API variables a pod spec would give it and
    /// the Service variables kubelet sets.
    pub fn podprobe(&self, pod: Pod) -> Command {
        let mut cmd = self.command(pod, &self.state.podprobe);
        cmd.env("POD_NAME", pod.name())
            .env("POD_NAMESPACE", POD_NAMESPACE)
            .env("NODE_NAME", self.netns(Pod::Node))
            .envs(service_env());
        cmd
    }

    /// Starts a command made by [`Lab::command`] in the background; it is
    /// killed when the returned guard is dropped.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Background> {
        let child = Killed::spawn(cmd.stdin(Stdio::null()))
            .map_err(|e| Error::io(sys::describe(cmd), e))?;
        Ok(Background { child })
    }

    /// Runs `f` inside `pod`'s network namespace (on a thread that entered
    /// it). Sockets made there stay in the pod: bind a server or open a
    /// connection in a pod, then use it from the test.
    pub fn in_pod<T: Send>(&self, pod: Pod, f: impl FnOnce() -> T + Send) -> Result<T> {
        sys::in_netns(&self.netns(pod), f)
    }

    /// Replaces `pod`'s resolv.conf (e.g. [`cluster_first_resolv_conf`] plus
    /// `options single-request-reopen`). Takes effect for the next command.
    pub fn set_resolv_conf(&self, pod: Pod, text: &str) -> Result<()> {
        let path = etc_netns(&self.netns(pod)).join("resolv.conf");
        std::fs::write(&path, text).map_err(|e| Error::io(path.display().to_string(), e))
    }

    /// The pod's current resolv.conf.
    pub fn resolv_conf(&self, pod: Pod) -> Result<String> {
        let path = etc_netns(&self.netns(pod)).join("resolv.conf");
        std::fs::read_to_string(&path).map_err(|e| Error::io(path.display().to_string(), e))
    }

    /// Every query the lab's DNS server has logged so far, oldest first.
    pub fn dns_queries(&self) -> Result<Vec<DnsQuery>> {
        let path = self.state_dir().join("dnsmasq.log");
        let text =
            std::fs::read_to_string(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
        Ok(parse_dnsmasq_log(&text))
    }

    /// Adds a fault to the running node.
    pub fn add_scenario(&mut self, scenario: Scenario) -> Result<()> {
        if self.state.scenarios.contains(&scenario) {
            return Ok(());
        }
        let exclusive = [Scenario::NetpolDrop, Scenario::NetpolReject];
        if exclusive.contains(&scenario)
            && self.state.scenarios.iter().any(|s| exclusive.contains(s))
        {
            return Err(Error::usage(
                "netpol-drop and netpol-reject block the same port; choose one",
            ));
        }
        let iptables_dns = [Scenario::SlowDns, Scenario::KubeProxyNft];
        if iptables_dns.contains(&scenario)
            && self
                .state
                .scenarios
                .iter()
                .any(|s| iptables_dns.contains(s))
        {
            return Err(Error::usage(
                "slow-dns re-points kube-dns's iptables rule, which kube-proxy-nft replaces; choose one",
            ));
        }
        for rule in scenario.forward_rules() {
            sys::run(
                self.command(Pod::Node, "iptables")
                    .args(["-w", "-A", "FORWARD"])
                    .args(rule),
                None,
            )?;
        }
        if scenario == Scenario::SlowDns {
            self.start_slow_dns()?;
        }
        self.add_node_scenario(scenario)?;
        if scenario == Scenario::InvalidReset {
            self.start_invalid_reset()?;
        }
        self.state.scenarios.push(scenario);
        self.save()
    }

    fn state_dir(&self) -> PathBuf {
        state_dir(&self.state.name)
    }

    /// Records the state; a reader (`lab status`) sees the old or the new
    /// file whole, never half of one.
    fn save(&self) -> Result<()> {
        let path = self.state_dir().join("state.json");
        let partial = self.state_dir().join("state.json.partial");
        let text = serde_json::to_string_pretty(&self.state).unwrap_or_default();
        std::fs::write(&partial, text)
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|e| Error::io(path.display().to_string(), e))
    }

    /// Namespaces, veths, routes, kube-proxy rules, pod files, DNS, backends.
    fn build(&mut self) -> Result<()> {
        let dir = self.state_dir();
        sys::create_dir(&dir)?;
        let hosts_dir = dir.join(HOSTS_DIR);
        sys::create_dir(&hosts_dir)?;
        self.save()?;
        let node = self.netns(Pod::Node);
        for pod in std::iter::once(Pod::Node).chain(Pod::PODS) {
            sys::run(
                sys::tool("ip").args(["netns", "add", &self.netns(pod)]),
                None,
            )?;
        }
        sys::in_netns(&node, || {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .map_err(|e| Error::io("enabling ip_forward in the node", e))
        })??;
        // The node end of each veth carries the gateway address and a /32
        // route to its pod, as Calico programs it.
        let mut node_batch = String::from("link set lo up\n");
        for pod in Pod::PODS {
            node_batch.push_str(&topology::node_veth_batch(
                &pod.veth(),
                &self.netns(pod),
                pod.ip(),
            ));
        }
        sys::run(
            sys::tool("ip").args(["-n", &node, "-batch", "-"]),
            Some(&node_batch),
        )?;
        for pod in Pod::PODS {
            let batch = topology::pod_interface_batch(pod.ip());
            sys::run(
                sys::tool("ip").args(["-n", &self.netns(pod), "-batch", "-"]),
                Some(&batch),
            )?;
            let etc = etc_netns(&self.netns(pod));
            sys::create_dir(&etc)?;
            for (file, text) in [
                ("hosts", topology::pod_hosts_file(pod)),
                ("nsswitch.conf", topology::POD_NSSWITCH.to_string()),
            ] {
                let path = etc.join(file);
                std::fs::write(&path, text)
                    .map_err(|e| Error::io(path.display().to_string(), e))?;
            }
            if pod != Pod::Dns {
                self.set_resolv_conf(pod, &cluster_first_resolv_conf())?;
            }
        }
        sys::run(
            self.command(Pod::Node, "iptables-restore")
                .args(["-w", "--noflush"]),
            Some(&topology::kube_proxy_nat_rules()),
        )?;
        self.build_node()?;
        self.start_dns()?;
        for pod in Pod::BACKENDS {
            self.start_backend(pod)?;
        }
        self.start_apiserver()?;
        self.wait_dns(SocketAddr::from((Pod::Dns.ip(), 53)))?;
        for pod in Pod::BACKENDS {
            self.wait_tcp(SocketAddr::from((pod.ip(), BACKEND_HTTP_PORT)))?;
            self.wait_tcp(SocketAddr::from((pod.ip(), BACKEND_GRPC_PORT)))?;
        }
        Ok(())
    }

    /// Starts a long-running process in `pod`, its output to a log file in
    /// the state directory, in its own process group so a terminal's Ctrl-C
    /// after `lab up` does not reach it.
    fn start(&mut self, mut cmd: Command, log: &str) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let path = self.state_dir().join(log);
        let file =
            std::fs::File::create(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
        let err = file
            .try_clone()
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        cmd.stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .process_group(0);
        // Recorded in the same step, so a signal's cleanup knows it.
        crate::cleanup::making(|| {
            let child = sys::spawn(&mut cmd)?;
            lock(&self.children).push(child);
            Ok(())
        })
    }

    fn start_dns(&mut self) -> Result<()> {
        if self.state.dns_server != DnsServer::Dnsmasq {
            return self.start_main_dns(self.state.dns_server);
        }
        let mut cmd = self.dnsmasq(Pod::Dns, Pod::Dns.ip(), "dnsmasq.log");
        cmd.args(topology::dnsmasq_records());
        // Replica sets add their names here.
        cmd.arg(format!(
            "--hostsdir={}",
            self.state_dir().join(HOSTS_DIR).display()
        ));
        self.start(cmd, "dnsmasq.out")
    }

    /// dnsmasq in `pod`, answering on `listen` only, with no records and no
    /// configuration of the host's, logging every query to `log` in the
    /// state directory.
    fn dnsmasq(&self, pod: Pod, listen: Ipv4Addr, log: &str) -> Command {
        let log = self.state_dir().join(log);
        let dnsmasq = sys::find_tool("dnsmasq").unwrap_or_else(|| PathBuf::from("dnsmasq"));
        let mut cmd = self.command(pod, dnsmasq);
        cmd.args(dns::dnsmasq_args(listen, &log, false));
        cmd
    }

    /// `podprobe serve` in a backend pod: HTTP and gRPC answering with the
    /// pod's name, as the replicas of a Deployment would.
    fn start_backend(&mut self, pod: Pod) -> Result<()> {
        let mut cmd = self.podprobe(pod);
        cmd.args(["serve", "--name", pod.name()])
            .arg("--http")
            .arg(format!("0.0.0.0:{BACKEND_HTTP_PORT}"))
            .arg("--grpc")
            .arg(format!("0.0.0.0:{BACKEND_GRPC_PORT}"));
        self.start(cmd, &format!("{}.log", pod.name()))
    }

    /// Puts a delaying forwarder in front of dnsmasq and re-points the
    /// kube-dns endpoint at it, then forgets UDP/53 flows so no old
    /// conntrack entry keeps a client on the direct path.
    fn start_slow_dns(&mut self) -> Result<()> {
        let mut cmd = self.podprobe(Pod::Dns);
        cmd.args(servers::dns_delay_args());
        self.start(cmd, "dns-delay.log")?;
        self.wait_dns(SocketAddr::from((Pod::Dns.ip(), scenario::SLOW_DNS_PORT)))?;
        let (chain, number, rule) = topology::kube_dns_udp_dnat(scenario::SLOW_DNS_PORT);
        sys::run(
            self.command(Pod::Node, "iptables-restore")
                .args(["-w", "--noflush"]),
            Some(&format!("*nat\n-R {chain} {number} {rule}\nCOMMIT\n")),
        )?;
        // Exits 1 when there was nothing to delete; either way no stale flow is left.
        let _ = sys::run(
            self.command(Pod::Node, "conntrack")
                .args(["-D", "-p", "udp", "--orig-port-dst", "53"]),
            None,
        );
        Ok(())
    }

    /// Takes away what keeps an INVALID reply from escaping DNAT (kube-proxy's
    /// INVALID drop rule, conntrack's liberal mode) and starts a
    /// watcher in each backend that sends one out-of-window segment per
    /// connection to the HTTP port.
    fn start_invalid_reset(&mut self) -> Result<()> {
        // kube-proxy's rule (the lab node has it) goes as in no-invalid-drop.
        self.add_node_scenario(Scenario::NoInvalidDrop)?;
        sys::in_netns(&self.netns(Pod::Node), || {
            std::fs::write("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal", "0")
                .map_err(|e| Error::io("setting nf_conntrack_tcp_be_liberal in the node", e))
        })??;
        for pod in Pod::BACKENDS {
            let mut cmd = self.podprobe(pod);
            cmd.args(invalid::out_of_window_args(BACKEND_HTTP_PORT));
            let log = format!("out-of-window-{}.log", pod.name());
            self.start(cmd, &log)?;
            self.wait_log(&log, "watching")?;
        }
        Ok(())
    }

    /// Waits until something accepts TCP connections at `addr` (seen from the node).
    fn wait_tcp(&self, addr: SocketAddr) -> Result<()> {
        self.wait_until(addr, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
    }

    /// Waits until a DNS server at `addr` answers the lab's records (seen
    /// from the node).
    fn wait_dns(&self, addr: SocketAddr) -> Result<()> {
        self.wait_dns_rcode(addr, 0)
    }

    /// Waits until a DNS server at `addr` answers a query with `rcode`.
    fn wait_dns_rcode(&self, addr: SocketAddr, rcode: u8) -> Result<()> {
        self.wait_until(addr, || {
            servers::dns_answers(addr, rcode, Duration::from_millis(200))
        })
    }

    fn wait_until(&self, addr: SocketAddr, ready: impl Fn() -> bool + Send + Sync) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let node = self.netns(Pod::Node);
        loop {
            if sys::in_netns(&node, &ready)? {
                return Ok(());
            }
            if Instant::now() > deadline {
                // The state directory goes with the failed lab: say here
                // what its servers said.
                return Err(Error::unavailable(format!(
                    "lab '{}': nothing answers at {addr} after {}s; {}",
                    self.state.name,
                    READY_TIMEOUT.as_secs(),
                    self.server_output()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last line each server wrote, as one line.
    fn server_output(&self) -> String {
        let mut said: Vec<String> = std::fs::read_dir(self.state_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.path()
                    .extension()
                    .is_some_and(|x| x == "out" || x == "log")
            })
            .filter_map(|e| {
                let text = std::fs::read_to_string(e.path()).ok()?;
                let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
                Some(format!(
                    "{}: {}",
                    e.file_name().to_string_lossy(),
                    last.trim()
                ))
            })
            .collect();
        said.sort();
        if said.is_empty() {
            "no server wrote anything".to_string()
        } else {
            said.join("; ")
        }
    }

    /// Removes the lab through its registered cleanup (which a signal's
    /// cleanup then waits for, instead of cutting it short), or by name.
    fn teardown(&mut self) -> Result<()> {
        let result = match self.cleanup.take() {
            Some(cleanup) => cleanup.run(),
            None => remove(&self.state.name),
        };
        stop(&self.children);
        result
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A kept or opened lab stays, with its processes.
        if self.cleanup.is_some() {
            if let Err(err) = self.teardown() {
                // Not eprintln: stderr may be a terminal that hung up.
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "podprobe: {err}");
            }
        }
    }
}

/// The processes a [`Lab`] value started.
type Children = Arc<Mutex<Vec<Child>>>;

fn lock(children: &Children) -> std::sync::MutexGuard<'_, Vec<Child>> {
    children
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Kills and reaps the processes a lab started.
fn stop(children: &Children) {
    for mut child in lock(children).drain(..) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Removes a lab by name (`lab down`) as a registered cleanup: a signal
/// meanwhile waits for it to finish.
fn remove(name: &str) -> Result<()> {
    let name = name.to_string();
    Cleanup::register(format!("lab '{name}'"), move || teardown(&name)).run()
}

/// Removes a lab by name: kills every process in its namespaces, deletes
/// the namespaces (their veths, rules and conntrack go with them), its
/// /etc/netns files and its state. Works on half-built labs too.
fn teardown(name: &str) -> Result<()> {
    let mut first_error = None;
    let extra: Vec<String> = std::fs::read_to_string(state_dir(name).join("state.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<State>(&text).ok())
        .map(|state| state.extra_netns)
        .unwrap_or_default();
    let namespaces = Pod::PODS
        .into_iter()
        .map(|pod| netns_name(name, pod))
        .chain(extra)
        .chain([netns_name(name, Pod::Node)]);
    for ns in namespaces {
        if let Err(err) = remove_netns(&ns) {
            first_error.get_or_insert(err);
        }
    }
    let dir = state_dir(name);
    if dir.exists() {
        if let Err(err) = std::fs::remove_dir_all(&dir) {
            first_error.get_or_insert(Error::io(dir.display().to_string(), err));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Removes a network namespace made with `ip netns add`: kills every
/// process in it (a process would keep the namespace alive after its name
/// is gone), deletes it (its veths, rules and conntrack table go with it)
/// and its `/etc/netns` files. Nothing there is fine.
pub fn remove_netns(ns: &str) -> Result<()> {
    let mut first_error = None;
    if Path::new("/run/netns").join(ns).exists() {
        let own_pid = std::process::id();
        let pids = sys::run(sys::tool("ip").args(["netns", "pids", ns]), None).unwrap_or_default();
        let pids: Vec<i32> = pids
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|&pid| u32::try_from(pid).ok() != Some(own_pid))
            .collect();
        for &pid in &pids {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        wait_exited(&pids);
        if let Err(err) = sys::run(sys::tool("ip").args(["netns", "delete", ns]), None) {
            first_error.get_or_insert(err);
        }
    }
    let etc = etc_netns(ns);
    if etc.exists() {
        if let Err(err) = std::fs::remove_dir_all(&etc) {
            first_error.get_or_insert(Error::io(etc.display().to_string(), err));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Waits (briefly) until killed processes have exited, so nothing of the
/// lab is still running when `down` returns.
fn wait_exited(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(2);
    let running = |pid: &i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
    };
    while pids.iter().any(running) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Names of labs with recorded state or namespaces on this machine.
fn list_labs() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(STATE_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

fn exists(name: &str) -> bool {
    state_dir(name).exists()
        || std::iter::once(Pod::Node)
            .chain(Pod::PODS)
            .any(|pod| Path::new("/run/netns").join(netns_name(name, pod)).exists())
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "invalid lab name '{name}': use up to {MAX_NAME} lowercase letters, digits and '-', starting with a letter"
        )))
    }
}

/// `pp<pid>-<n>`: unique among this process's labs and, by pid, among
/// processes running at once.
fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let name = format!(
            "pp{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // A pid reused after a killed run may have left a lab behind.
        if !exists(&name) {
            return name;
        }
    }
}

fn netns_name(lab: &str, pod: Pod) -> String {
    format!("{lab}-{}", pod.name())
}

fn etc_netns(netns: &str) -> PathBuf {
    Path::new("/etc/netns").join(netns)
}

fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

/// dnsmasq logs `... dnsmasq[pid]: query[AAAA] name from 10.244.0.2`.
fn parse_dnsmasq_log(text: &str) -> Vec<DnsQuery> {
    text.lines()
        .filter_map(|line| {
            let rest = &line[line.find("query[")? + "query[".len()..];
            let (qtype, rest) = rest.split_once("] ")?;
            let (name, from) = rest.split_once(" from ")?;
            Some(DnsQuery {
                qtype: qtype.to_string(),
                name: name.to_string(),
                from: from.trim().to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsmasq_query_lines_parse() {
        let log = "Nov 22 04:55:57 dnsmasq[13555]: query[AAAA] api.example.com.default.svc.cluster.local from 10.244.0.2\n\
                   Nov 22 04:55:57 dnsmasq[13555]: config api.example.com is NXDOMAIN\n";
        assert_eq!(
            parse_dnsmasq_log(log),
            vec![DnsQuery {
                qtype: "AAAA".into(),
                name: "api.example.com.default.svc.cluster.local".into(),
                from: "10.244.0.2".into()
            }]
        );
    }

    #[test]
    fn lab_names_are_checked() {
        assert!(validate_name("demo-1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("Demo").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("averyveryverylongname1").is_err());
        assert!(unique_name().starts_with("pp"));
    }
}
