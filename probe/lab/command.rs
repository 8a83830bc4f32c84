//! `podprobe lab ...`: the lab for people, on the command line.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use serde::Serialize;

use super::servers;
use super::{list_labs, Lab, LabSpec, Pod, Scenario, Service, EXTERNAL_NAME, HEADLESS_NAME};
use crate::{cleanup, Error, Result};

/// The name `lab up`, `down`, `exec` and `status` use when none is given.
pub const DEFAULT_NAME: &str = "podprobe";

/// A `lab` subcommand.
#[derive(Debug, Clone)]
pub enum Action {
    /// Build a lab with these faults and leave it running.
    Up {
        name: String,
        scenarios: Vec<Scenario>,
        /// The DNS server behind kube-dns.
        dns_server: super::DnsServer,
        /// The lab as a JSON document instead of text.
        json: bool,
    },
    /// Remove a lab, or every lab; `{"removed": [...]}` when `json`.
    Down { name: String, all: bool, json: bool },
    /// Describe one running lab, or all.
    Status {
        name: Option<String>,
        /// `{"labs": [...]}` instead of text.
        json: bool,
    },
    /// Run a command in a pod of the lab.
    Exec {
        name: String,
        pod: String,
        command: Vec<String>,
        /// Refused: the output is the command's.
        json: bool,
    },
    /// Each scenario in turn, with the podprobe command that finds it; the
    /// reports as JSON when `json`.
    Demo { json: bool },
    /// Add generated Services to a running lab.
    Services {
        name: String,
        count: usize,
        json: bool,
    },
    /// The slow-dns scenario's forwarder.
    DnsDelay {
        listen: std::net::SocketAddr,
        upstream: std::net::SocketAddr,
        suffix: String,
        delay: std::time::Duration,
    },
    /// Another DNS server in a running lab.
    DnsServer {
        name: String,
        server: super::DnsServer,
        mode: super::DnsMode,
        json: bool,
    },
    /// A lab DNS server's misbehaving front.
    DnsFront {
        listen: std::net::SocketAddr,
        upstream: std::net::SocketAddr,
        mode: super::DnsMode,
        reply_from: Option<std::net::SocketAddr>,
    },
    /// The invalid-reset scenario's out-of-window sender.
    OutOfWindow { interface: String, port: u16 },
}

/// Runs a `lab` subcommand; the result is the process's exit code.
pub fn run(action: &Action) -> Result<i32> {
    match action {
        Action::DnsDelay {
            listen,
            upstream,
            suffix,
            delay,
        } => servers::serve_dns_delay(*listen, *upstream, suffix, *delay).map(|()| 0),
        Action::OutOfWindow { interface, port } => {
            super::invalid::serve_out_of_window(interface, *port).map(|()| 0)
        }
        Action::DnsServer {
            name,
            server,
            mode,
            json,
        } => {
            super::sys::require_root()?;
            let mut lab = Lab::open(name)?;
            let addr = lab.add_dns_server(*server, *mode)?;
            if *json {
                say(&json_document(&DnsServerView {
                    address: addr,
                    port: 53,
                    server: server.name(),
                    mode: mode.name(),
                }));
                return Ok(0);
            }
            say(&format!(
                "{server} ({mode}) answers at {addr}:53 in lab '{name}'; put `nameserver {addr}` in /etc/netns/{}/resolv.conf\n",
                lab.netns(Pod::Client)
            ));
            Ok(0)
        }
        Action::DnsFront {
            listen,
            upstream,
            mode,
            reply_from,
        } => servers::serve_dns_front(*listen, *upstream, *mode, *reply_from).map(|()| 0),
        Action::Up {
            name,
            scenarios,
            dns_server,
            json,
        } => {
            let mut spec = LabSpec::new(own_exe()?).name(name).dns_server(*dns_server);
            spec.scenarios = scenarios.clone();
            let lab = Lab::up(&spec)?;
            if *json {
                say(&json_document(&view(&lab)));
                lab.keep();
                return Ok(0);
            }
            say(&describe(&lab));
            let flag = if name == DEFAULT_NAME {
                String::new()
            } else {
                format!(" --name {name}")
            };
            say(&format!(
                "try:    podprobe lab exec{flag} -- getent ahosts web.default\n"
            ));
            say(&format!("remove: podprobe lab down{flag}\n"));
            lab.keep();
            Ok(0)
        }
        Action::Down { name, all, json } => {
            super::sys::require_root()?;
            let names = if *all {
                list_labs()
            } else {
                super::validate_name(name)?;
                if !super::exists(name) {
                    return Err(Error::usage(format!("no lab named '{name}' exists")));
                }
                vec![name.clone()]
            };
            for name in &names {
                // A half-built or stateless lab is still removed by its name.
                super::remove(name)?;
                if !json {
                    say(&format!("lab '{name}' removed\n"));
                }
            }
            if *json {
                say(&json_document(&serde_json::json!({ "removed": names })));
            }
            Ok(0)
        }
        Action::Status { name, json } => {
            let names = match name {
                Some(name) => vec![name.clone()],
                None => list_labs(),
            };
            // Listing all: a lab that is going (or not yet recorded) is
            // not there.
            let labs = names
                .iter()
                .filter(|lab| name.is_some() || super::state_dir(lab).join("state.json").exists())
                .map(|name| Lab::open(name))
                .collect::<Result<Vec<_>>>()?;
            if *json {
                let labs = labs.iter().map(view).collect();
                say(&json_document(&LabsView { labs }));
                return Ok(0);
            }
            if labs.is_empty() {
                say("no labs running (start one with: podprobe lab up)\n");
            }
            for lab in labs {
                say(&describe(&lab));
            }
            Ok(0)
        }
        Action::Exec {
            name,
            pod,
            command,
            json,
        } => {
            if *json {
                return Err(Error::usage(
                    "-o json: lab exec prints what its command prints, which has no JSON form (give the command its own -o json, after --)",
                ));
            }
            super::sys::require_root()?;
            let lab = Lab::open(name)?;
            let pod =
                Pod::from_name(pod).ok_or_else(|| Error::usage(format!("unknown pod '{pod}'")))?;
            let (program, rest) = command
                .split_first()
                .ok_or_else(|| Error::usage("lab exec needs a command after --"))?;
            let status = foreground(
                lab.command(pod, program)
                    .args(rest)
                    .envs(super::service_env()),
            )
            .map_err(|e| Error::io(format!("running {program} in {}", lab.netns(pod)), e))?;
            Ok(cleanup::shell_status(status))
        }
        Action::Demo { json } => demo(*json),
        Action::Services { name, count, json } => {
            super::sys::require_root()?;
            let mut lab = Lab::open(name)?;
            let started = std::time::Instant::now();
            let total = lab.add_services(*count)?;
            let mode = lab.proxy_mode().name();
            if *json {
                say(&json_document(&serde_json::json!({
                    "added": count,
                    "generated_services": total,
                    "mode": mode,
                    "seconds": started.elapsed().as_secs_f64(),
                })));
                return Ok(0);
            }
            say(&format!(
                "lab '{name}': {count} Services added in {:.1} s ({mode} mode), {total} generated in all: {}..{}\n",
                started.elapsed().as_secs_f64(),
                super::generated_service(0),
                super::generated_service(total - 1)
            ));
            Ok(0)
        }
    }
}

/// One demo step: a fault (or none, with what the step shows), and the
/// podprobe command that should find it.
struct Step {
    scenario: Option<Scenario>,
    about: &'static str,
    /// Where the command runs: the client pod, or the node's namespace.
    pod: Pod,
    args: Vec<String>,
    /// Traffic made in the client pod while the command runs (a capture
    /// needs something to see).
    traffic: Option<fn()>,
}

fn demo_steps() -> Vec<Step> {
    let web = Service::Web.target();
    let grpc = Service::Grpc.target();
    let step = |scenario, about, args: &[&str]| Step {
        scenario,
        about,
        pod: Pod::Client,
        args: args.iter().map(|s| s.to_string()).collect(),
        traffic: None,
    };
    // `podprobe node` in the node's namespace; a fault that warns exits 1
    // with --fail-on warn.
    let node_step = |scenario: Scenario, fail_on_warn: bool| Step {
        scenario: Some(scenario),
        about: scenario.describe(),
        pod: Pod::Node,
        args: ["node", "--interval", "1s"]
            .into_iter()
            .chain(
                fail_on_warn
                    .then_some(["--fail-on", "warn"])
                    .into_iter()
                    .flatten(),
            )
            .map(String::from)
            .collect(),
        traffic: None,
    };
    vec![
        step(
            None,
            "a healthy node, where ndots:5 still costs every external name 10 queries",
            &["doctor", "--name", EXTERNAL_NAME, "--tcp", &web],
        ),
        step(
            None,
            "gRPC through a ClusterIP: kube-proxy balances connections, not RPCs",
            &["grpc", &grpc, "--headless", HEADLESS_NAME, "--rpcs", "300"],
        ),
        step(
            None,
            "keep-alive: the backends close idle connections after 5 s, an Envoy sidecar keeps them 1 h",
            &["keepalive", &web, "--max-wait", "10s"],
        ),
        step(
            Some(Scenario::DnsRace),
            Scenario::DnsRace.describe(),
            &[
                "dns",
                "kubernetes.default",
                "--race",
                "10",
                "--count",
                "3",
                "--timeout",
                "1s",
            ],
        ),
        step(
            Some(Scenario::SlowDns),
            Scenario::SlowDns.describe(),
            &["dns", EXTERNAL_NAME, "--race", "0", "--count", "3"],
        ),
        step(
            Some(Scenario::NetpolDrop),
            Scenario::NetpolDrop.describe(),
            &["doctor", "--tcp", &web, "--timeout", "1s"],
        ),
        step(
            Some(Scenario::NetpolReject),
            Scenario::NetpolReject.describe(),
            &["doctor", "--tcp", &web],
        ),
        node_step(Scenario::ConntrackFull, false),
        node_step(Scenario::SnatNorandom, true),
        node_step(Scenario::NoInvalidDrop, true),
        node_step(Scenario::OverlayMtu, true),
        node_step(Scenario::NodelocalDns, false),
        node_step(Scenario::KubeProxyNft, false),
        node_step(Scenario::KubeProxyLegacy, false),
        Step {
            traffic: Some(|| {
                // The second request is reset: the failure to explain.
                let _ = super::invalid::two_requests(Service::Web.addr().into());
            }),
            ..step(
                Some(Scenario::InvalidReset),
                Scenario::InvalidReset.describe(),
                &["capture", "--analyze", "-f", "tcp", "--duration", "3s"],
            )
        },
    ]
}

/// Builds a lab per scenario, runs the matching podprobe command in its
/// client pod and prints the report, then removes the lab.
fn demo(json: bool) -> Result<i32> {
    let exe = own_exe()?;
    let output = if json { "json" } else { "text" };
    let mut summary = Vec::new();
    for step in demo_steps() {
        let mut spec = LabSpec::new(&exe);
        spec.scenarios.extend(step.scenario);
        let name = step.scenario.map_or("none", Scenario::name);
        let title = format!("scenario {name}: {}", step.about);
        say(&format!("=== {title}\n"));
        eprintln!("building a lab with scenario {name}...");
        let lab = Lab::up(&spec)?;
        let place = match step.pod {
            Pod::Node => " (in the node's namespace)",
            _ => "",
        };
        say(&format!("$ podprobe {}{place}\n", step.args.join(" ")));
        let mut command = lab.podprobe(step.pod);
        command.args(&step.args).args(["-o", output]);
        let mut child = super::sys::spawn(cleanup::dies_with_parent(&mut command))?;
        if let Some(traffic) = step.traffic {
            // Once the command is under way.
            std::thread::sleep(std::time::Duration::from_secs(1));
            lab.in_pod(Pod::Client, traffic)?;
        }
        let status = child
            .wait()
            .map_err(|e| Error::io(format!("running podprobe in {}", lab.netns(step.pod)), e))?;
        let code = cleanup::shell_status(status);
        say(&format!("(exit code {code})\n\n"));
        summary.push((name, step.args.join(" "), code));
        lab.down()?;
    }
    say("=== summary: scenario, command, exit code (0: pass or warn, 1: a failure found)\n");
    let width = summary
        .iter()
        .map(|(_, args, _)| args.len())
        .max()
        .unwrap_or(0);
    let name_width = summary
        .iter()
        .map(|(name, _, _)| name.len())
        .max()
        .unwrap_or(0);
    for (name, args, code) in summary {
        say(&format!(
            "  {name:<name_width$} podprobe {args:<width$}  {code}\n"
        ));
    }
    Ok(0)
}

/// The lab's pods, Services and scenarios, for `up` and `status`.
fn describe(lab: &Lab) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "lab '{}'", lab.name());
    let _ = writeln!(
        text,
        "  {:<10} {:<28} {:<14} processes",
        "pod", "netns", "address"
    );
    for pod in std::iter::once(Pod::Node).chain(Pod::PODS) {
        let _ = writeln!(
            text,
            "  {:<10} {:<28} {:<14} {}",
            pod.name(),
            lab.netns(pod),
            lab.pod_ip(pod).to_string(),
            processes(&lab.netns(pod))
        );
    }
    let _ = writeln!(text, "  {:<40} {:<18} endpoints", "service", "cluster ip");
    for svc in Service::ALL {
        let endpoints = match svc {
            Service::Kubernetes => format!("{} (kube-apiserver)", super::apiserver_endpoint()),
            Service::KubeDns => format!("{}:53 ({})", Pod::Dns.ip(), lab.main_dns_server()),
            Service::Web => format!("backend-1..3:{}", super::BACKEND_HTTP_PORT),
            Service::Grpc => format!("backend-1..3:{}", super::BACKEND_GRPC_PORT),
        };
        let _ = writeln!(text, "  {:<40} {:<18} {endpoints}", svc.fqdn(), svc.addr());
    }
    let _ = writeln!(
        text,
        "  {:<40} {:<18} backend-1..3",
        HEADLESS_NAME, "None (headless)"
    );
    let scenarios: Vec<&str> = lab.scenarios().iter().map(|s| s.name()).collect();
    let _ = writeln!(
        text,
        "  scenarios: {}",
        if scenarios.is_empty() {
            "none".to_string()
        } else {
            scenarios.join(", ")
        }
    );
    for dns in lab.dns_servers() {
        let _ = writeln!(
            text,
            "  dns server {}:53: {} ({})",
            dns.addr, dns.server, dns.mode
        );
    }
    text
}

/// Runs a command in the foreground, as a shell would: signals sent to
/// podprobe go to it, podprobe waits for it (its output comes before the
/// prompt), and it does not outlive podprobe.
fn foreground(cmd: &mut std::process::Command) -> std::io::Result<std::process::ExitStatus> {
    let forward = cleanup::Forward::begin();
    let mut child = cleanup::dies_with_parent(cmd).spawn()?;
    forward.to(child.id());
    child.wait()
}

/// What `lab up -o json` prints, and each element of `lab status -o json`'s
/// `labs` (the README lists the keys).
#[derive(Debug, Serialize)]
struct LabView {
    name: String,
    state_dir: String,
    pods: Vec<PodView>,
    services: Vec<ServiceView>,
    scenarios: Vec<&'static str>,
    /// The server behind kube-dns.
    dns_server: &'static str,
    /// Servers added by `lab dns-server`.
    dns_servers: Vec<DnsServerView>,
    replica_sets: u32,
    generated_services: usize,
}

/// What `lab status -o json` prints.
#[derive(Debug, Serialize)]
struct LabsView {
    labs: Vec<LabView>,
}

#[derive(Debug, Serialize)]
struct PodView {
    pod: &'static str,
    netns: String,
    /// False when the namespace is gone (a half-removed lab).
    netns_exists: bool,
    address: Ipv4Addr,
    /// The names of the processes running in the namespace.
    processes: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ServiceView {
    name: String,
    /// `None` for a headless Service.
    cluster_ip: Option<Ipv4Addr>,
    port: Option<u16>,
    /// Where kube-proxy sends connections (for a headless name: the addresses
    /// DNS answers).
    endpoints: Vec<String>,
}

#[derive(Debug, Serialize)]
struct DnsServerView {
    address: Ipv4Addr,
    port: u16,
    server: &'static str,
    mode: &'static str,
}

fn view(lab: &Lab) -> LabView {
    let pods = std::iter::once(Pod::Node)
        .chain(Pod::PODS)
        .map(|pod| {
            let netns = lab.netns(pod);
            PodView {
                pod: pod.name(),
                netns_exists: std::path::Path::new("/run/netns").join(&netns).exists(),
                processes: process_names(&netns),
                netns,
                address: lab.pod_ip(pod),
            }
        })
        .collect();
    let backends = |port: Option<u16>| -> Vec<String> {
        Pod::BACKENDS
            .iter()
            .map(|pod| match port {
                Some(port) => SocketAddrV4::new(pod.ip(), port).to_string(),
                None => pod.ip().to_string(),
            })
            .collect()
    };
    let mut services: Vec<ServiceView> = Service::ALL
        .iter()
        .map(|&svc| ServiceView {
            name: svc.fqdn().to_string(),
            cluster_ip: Some(svc.ip()),
            port: Some(svc.port()),
            endpoints: match svc {
                Service::Kubernetes => vec![super::apiserver_endpoint().to_string()],
                Service::KubeDns => vec![SocketAddrV4::new(Pod::Dns.ip(), 53).to_string()],
                Service::Web => backends(Some(super::BACKEND_HTTP_PORT)),
                Service::Grpc => backends(Some(super::BACKEND_GRPC_PORT)),
            },
        })
        .collect();
    services.push(ServiceView {
        name: HEADLESS_NAME.to_string(),
        cluster_ip: None,
        port: None,
        endpoints: backends(None),
    });
    LabView {
        name: lab.name().to_string(),
        state_dir: lab.state_dir().display().to_string(),
        pods,
        services,
        scenarios: lab.scenarios().iter().map(|s| s.name()).collect(),
        dns_server: lab.main_dns_server().name(),
        dns_servers: lab
            .dns_servers()
            .iter()
            .map(|dns| DnsServerView {
                address: dns.addr,
                port: 53,
                server: dns.server.name(),
                mode: dns.mode.name(),
            })
            .collect(),
        replica_sets: lab.state.replica_sets,
        generated_services: lab.state.services,
    }
}

/// A JSON document on a line of its own.
fn json_document(value: &impl Serialize) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// Writes to stdout; a reader that went away (`| head`) must not turn into
/// a panic, which would tear down a lab `up` has just built.
fn say(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// What runs in a namespace (`dnsmasq`, `podprobe`, ...), or that it is gone.
fn processes(netns: &str) -> String {
    if !std::path::Path::new("/run/netns").join(netns).exists() {
        return "(namespace missing)".to_string();
    }
    let names = process_names(netns);
    if names.is_empty() {
        "-".to_string()
    } else {
        names.join(", ")
    }
}

/// The names of the processes in a namespace (none when it is gone).
fn process_names(netns: &str) -> Vec<String> {
    let pids = super::sys::run(super::sys::tool("ip").args(["netns", "pids", netns]), None)
        .unwrap_or_default();
    pids.split_whitespace()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok())
        .map(|comm| comm.trim().to_string())
        .collect()
}

fn own_exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|e| Error::io("finding the podprobe executable", e))
}
