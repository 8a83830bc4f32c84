//! `podprobe lab ...`: the lab for people, on the command line.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::servers;
use super::{list_labs, Lab, LabSpec, Pod, Scenario, Service, EXTERNAL_NAME, HEADLESS_NAME};
use crate::{Error, Result};

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
    },
    /// Remove a lab, or every lab.
    Down { name: String, all: bool },
    /// Describe one running lab, or all.
    Status { name: Option<String> },
    /// Run a command in a pod of the lab.
    Exec {
        name: String,
        pod: String,
        command: Vec<String>,
    },
    /// Each scenario in turn, with the podprobe command that finds it; the
    /// reports as JSON when `json`.
    Demo { json: bool },
    /// Add generated Services to a running lab.
    Services { name: String, count: usize },
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
        Action::DnsServer { name, server, mode } => {
            super::sys::require_root()?;
            let mut lab = Lab::open(name)?;
            let addr = lab.add_dns_server(*server, *mode)?;
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
        } => {
            let mut spec = LabSpec::new(own_exe()?).name(name).dns_server(*dns_server);
            spec.scenarios = scenarios.clone();
            let lab = Lab::up(&spec)?;
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
        Action::Down { name, all } => {
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
            for name in names {
                // A half-built or stateless lab is still removed by its name.
                super::teardown(&name)?;
                say(&format!("lab '{name}' removed\n"));
            }
            Ok(0)
        }
        Action::Status { name } => {
            let names = match name {
                Some(name) => vec![name.clone()],
                None => list_labs(),
            };
            if names.is_empty() {
                say("no labs running (start one with: podprobe lab up)\n");
            }
            for name in names {
                say(&describe(&Lab::open(&name)?));
            }
            Ok(0)
        }
        Action::Exec { name, pod, command } => {
            super::sys::require_root()?;
            let lab = Lab::open(name)?;
            let pod =
                Pod::from_name(pod).ok_or_else(|| Error::usage(format!("unknown pod '{pod}'")))?;
            let (program, rest) = command
                .split_first()
                .ok_or_else(|| Error::usage("lab exec needs a command after --"))?;
            let status = lab
                .command(pod, program)
                .args(rest)
                .envs(super::service_env())
                .status()
                .map_err(|e| Error::io(format!("running {program} in {}", lab.netns(pod)), e))?;
            Ok(status.code().unwrap_or(1))
        }
        Action::Demo { json } => demo(*json),
        Action::Services { name, count } => {
            super::sys::require_root()?;
            let mut lab = Lab::open(name)?;
            let started = std::time::Instant::now();
            let total = lab.add_services(*count)?;
            let mode = lab.proxy_mode().name();
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
        let mut child = command
            .spawn()
            .map_err(|e| Error::io(format!("running podprobe in {}", lab.netns(step.pod)), e))?;
        if let Some(traffic) = step.traffic {
            // Once the command is under way.
            std::thread::sleep(std::time::Duration::from_secs(1));
            lab.in_pod(Pod::Client, traffic)?;
        }
        let status = child
            .wait()
            .map_err(|e| Error::io(format!("running podprobe in {}", lab.netns(step.pod)), e))?;
        let code = status.code().unwrap_or(1);
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
    let pids = super::sys::run(super::sys::tool("ip").args(["netns", "pids", netns]), None)
        .unwrap_or_default();
    let names: Vec<String> = pids
        .split_whitespace()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok())
        .map(|comm| comm.trim().to_string())
        .collect();
    if names.is_empty() {
        "-".to_string()
    } else {
        names.join(", ")
    }
}

fn own_exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|e| Error::io("finding the podprobe executable", e))
}
