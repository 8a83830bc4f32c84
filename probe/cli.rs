//! The command line, as clap definitions only. Each command's behaviour lives
//! in its area's module; `main.rs` dispatches.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::report::FailOn;

#[derive(Debug, Parser)]
#[command(
    name = "podprobe",
    version,
    about = "Debug a pod's network from inside its namespace, with a verdict backed by measurements",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Output format: text for people, json for machines.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Upper bound on every single network wait (e.g. 2s, 500ms; at most 1h).
    #[arg(long, global = true, value_name = "DUR", value_parser = DurationRange::TIMEOUT,
          allow_hyphen_values = true, default_value = "2s")]
    pub timeout: Duration,
    /// Exit 1 when the verdict is this bad or worse.
    #[arg(long, global = true, value_enum, default_value_t = FailOn::Fail)]
    pub fail_on: FailOn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every applicable check against this pod's network.
    Doctor(DoctorArgs),
    /// Run doctor's checks every --interval and serve them as Prometheus
    /// metrics (/metrics, /healthz, /report).
    Watch(WatchArgs),
    /// Capture packets in this pod's network namespace: to a pcap file, as a
    /// live pcap stream on stdout (`-w -`), and/or judged with --analyze.
    Capture(CaptureArgs),
    /// Show how gRPC calls spread over a Service's replicas.
    Grpc(GrpcArgs),
    /// Answer this replica's identity over gRPC and HTTP: the backend for replica tests.
    Serve(ServeArgs),
    /// Measure DNS as the pod's applications resolve: what the search list
    /// costs each name, the A/AAAA conntrack race, nameserver latency.
    Dns(DnsArgs),
    /// Compare the app's real HTTP keep-alive idle timeout with the Envoy
    /// sidecar's (the cause of 503 UC).
    Keepalive(KeepaliveArgs),
    /// Print a shell completion script (e.g. `podprobe completions bash > /etc/bash_completion.d/podprobe`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a manual page in roff (e.g. `podprobe man dns | man -l -`,
    /// `podprobe man lab up`).
    Man {
        /// The command to document, nested ones as typed (`lab up`); the
        /// overview when omitted.
        #[arg(value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// A Kubernetes node in network namespaces, to reproduce failures (root).
    Lab(LabArgs),
    /// The node's side, run in the node's network namespace (kubectl debug
    /// node/NAME): conntrack, kube-proxy, SNAT, INVALID, NodeLocal DNSCache, CNI.
    Node(NodeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// How long to sample conntrack's counters (rates are over this window;
    /// 1s to 1h).
    #[arg(long, value_name = "DUR", value_parser = DurationRange::WINDOW,
          allow_hyphen_values = true, default_value = "5s")]
    pub interval: Duration,
    /// Where the host's root is mounted; its tools are used when the image has none.
    #[arg(long, value_name = "PATH", default_value = crate::node::DEFAULT_HOST_ROOT)]
    pub host_root: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct DnsArgs {
    /// Names to look up the way glibc does (default: kubernetes.default).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// The resolv.conf to read instead of /etc/resolv.conf.
    #[arg(long, value_name = "PATH", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Query this nameserver instead of resolv.conf's (repeatable; ADDR or ADDR:PORT).
    #[arg(long = "server", value_name = "ADDR")]
    pub servers: Vec<String>,
    /// Queries per nameserver and name for the latency check (0 disables it;
    /// at most 1000).
    #[arg(long, value_name = "N", default_value_t = 10, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(0..=MAX_DNS_REPEATS as i64))]
    pub count: u32,
    /// Attempts of each A/AAAA sending pattern for the race check (0 disables
    /// it; at most 1000).
    #[arg(long, value_name = "N", default_value_t = 20, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(0..=MAX_DNS_REPEATS as i64))]
    pub race: u32,
    /// The app's resolver to model when its processes are not visible
    /// [default: from the pod's processes, else glibc].
    #[arg(long, value_enum, value_name = "RESOLVER")]
    pub resolver: Option<crate::dns::model::Resolver>,
}

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// A name to resolve through every nameserver (repeatable).
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
    /// A TCP target to connect to and classify (repeatable).
    #[arg(long = "tcp", value_name = "HOST:PORT")]
    pub tcp: Vec<String>,
    /// A gRPC target whose calls should spread over its replicas (repeatable).
    #[arg(long = "grpc", value_name = "HOST:PORT")]
    pub grpc: Vec<String>,
    /// The resolv.conf to read instead of /etc/resolv.conf.
    #[arg(long, value_name = "PATH", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// An HTTP/1.1 app behind the sidecar to compare keep-alive timeouts with
    /// (127.0.0.1:PORT in the app's pod).
    #[arg(long, value_name = "HOST:PORT")]
    pub upstream: Option<String>,
    /// Envoy's admin API for --upstream [default: http://127.0.0.1:15000].
    #[arg(long, value_name = "URL")]
    pub envoy_admin: Option<String>,
    /// How long --upstream waits for the app to close an idle connection
    /// (at most 30 days).
    #[arg(long, value_name = "DUR", value_parser = DurationRange::SPAN,
          allow_hyphen_values = true, default_value = "120s")]
    pub max_wait: Duration,
    /// The app's resolver to model for --name when its processes are not
    /// visible [default: from the pod's processes, else glibc].
    #[arg(long, value_enum, value_name = "RESOLVER")]
    pub resolver: Option<crate::dns::model::Resolver>,
    /// Push the run's metrics to a Prometheus Pushgateway
    /// (http://HOST:9091), as job podprobe grouped by namespace and pod.
    #[arg(long, value_name = "URL", value_parser = crate::metrics::push::parse_url)]
    pub push: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub doctor: DoctorArgs,
    /// Time from the start of one cycle to the next (a random phase per
    /// process spreads a fleet's cycles; at most 30 days).
    #[arg(long, value_name = "DUR", value_parser = DurationRange::SPAN,
          allow_hyphen_values = true, default_value = "60s")]
    pub interval: Duration,
    /// Where to serve /metrics, /healthz and /report (IP:PORT or :PORT).
    #[arg(long, value_name = "ADDR", default_value = ":9090", value_parser = crate::serve::parse_listen_addr)]
    pub listen: std::net::SocketAddr,
    /// Also run `podprobe node`'s checks every cycle (conntrack sampled over
    /// 5s, the host's tools under /host): in the node's network namespace.
    #[arg(long)]
    pub node: bool,
}

#[derive(Debug, Clone, Args)]
pub struct KeepaliveArgs {
    /// The app as HOST:PORT: 127.0.0.1:PORT in the app's pod (behind the
    /// sidecar), or SERVICE:PORT from a client pod.
    #[arg(value_name = "UPSTREAM")]
    pub upstream: String,
    /// The path of the one keep-alive request.
    #[arg(long, value_name = "P", default_value = "/")]
    pub path: String,
    /// Give up waiting for the app to close an idle connection after this
    /// (at most 30 days).
    #[arg(long, value_name = "DUR", value_parser = DurationRange::SPAN,
          allow_hyphen_values = true, default_value = "120s")]
    pub max_wait: Duration,
    /// Envoy's admin API [default: http://127.0.0.1:15000, Istio's sidecar;
    /// with --config-dump, only asked for stats when given].
    #[arg(long, value_name = "URL")]
    pub envoy_admin: Option<String>,
    /// Judge a saved /config_dump instead of asking the admin API.
    #[arg(long, value_name = "FILE")]
    pub config_dump: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct CaptureArgs {
    /// Interface to capture on [default: eth0 when it exists, else any].
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub interface: Option<String>,
    /// BPF filter, as tcpdump takes it (e.g. 'udp port 53').
    #[arg(short = 'f', long, value_name = "FILTER")]
    pub filter: Option<String>,
    /// Write packets as pcap to FILE, or to stdout with '-' (for `| wireshark -k -i -`).
    #[arg(short = 'w', long, value_name = "FILE|-")]
    pub write: Option<PathBuf>,
    /// Read packets from a pcap or pcapng file instead of capturing.
    #[arg(short = 'r', long, value_name = "FILE", conflicts_with = "interface")]
    pub read: Option<PathBuf>,
    /// Stop after N packets (1 to 2147483647, as tcpdump's -c).
    #[arg(short = 'c', long, value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(1..=MAX_PACKET_COUNT as i64).map(|n| n as u64))]
    pub count: Option<u64>,
    /// Stop after this long (e.g. 30s, 5m; at most 30 days).
    #[arg(long, value_parser = DurationRange::SPAN, allow_hyphen_values = true, value_name = "DUR")]
    pub duration: Option<Duration>,
    /// Bytes kept of each packet.
    #[arg(long, value_name = "N", default_value_t = 262_144,
          value_parser = clap::value_parser!(u32).range(64..=262_144))]
    pub snaplen: u32,
    /// Stop before the pcap output would grow past SIZE (e.g. 100M, 1Gi).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_size: Option<u64>,
    /// Decode DNS and TCP and judge them (checks capture.dns and capture.tcp).
    #[arg(long)]
    pub analyze: bool,
}

/// Parses a byte size the way Kubernetes quantities read: `500k`, `100M`,
/// `1G` are powers of 1000, `64Ki`, `100Mi`, `1Gi` powers of 1024; a
/// trailing `B` is allowed.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let lower = trimmed.to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let scale: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("'{trimmed}' is not a size; try 100M, 64Ki or 1Gi")),
    };
    match number.parse::<f64>() {
        Ok(n) if n > 0.0 && (n * scale) < u64::MAX as f64 => Ok((n * scale) as u64),
        _ => Err(format!(
            "'{trimmed}' is not a size of more than zero bytes; try 100M, 64Ki or 1Gi"
        )),
    }
}

#[derive(Debug, Clone, Args)]
pub struct GrpcArgs {
    /// HOST:PORT as an ordinary client dials it (one connection), or
    /// dns:///HOST:PORT for client-side round_robin over every address.
    #[arg(value_name = "TARGET")]
    pub target: String,
    /// RPCs to send in each run (1 to 10000000000).
    #[arg(long, default_value_t = 1000, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(1..=MAX_RPCS as i64).map(|n| n as u64))]
    pub rpcs: u64,
    /// RPCs in flight at once (1 to 1000).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub concurrency: u32,
    /// A headless Service name whose A records are the ready pods (NAME or NAME:PORT).
    #[arg(long, value_name = "NAME")]
    pub headless: Option<String>,
    /// Speak HTTP/2 without TLS (the default).
    #[arg(long, conflicts_with = "tls")]
    pub plaintext: bool,
    /// Speak TLS, verifying the server against the system's roots.
    #[arg(long)]
    pub tls: bool,
    /// Trust these PEM certificates (a private CA, or the server's own)
    /// instead of the system's roots; implies --tls.
    #[arg(long, value_name = "FILE", conflicts_with = "plaintext")]
    pub ca: Option<PathBuf>,
    /// The server's name: the :authority of every call and, with TLS, the
    /// name its certificate must carry [default: the target's HOST:PORT].
    #[arg(long, value_name = "NAME")]
    pub authority: Option<String>,
    /// Do not verify the server's certificate at all (said in the report);
    /// implies --tls.
    #[arg(long, conflicts_with_all = ["plaintext", "ca"])]
    pub insecure: bool,
    /// Call this method (pkg.Service/Method, empty request) when the server
    /// has no podprobe.v1.Identity [default: grpc.health.v1.Health/Check,
    /// else an empty call whose UNIMPLEMENTED answer counts].
    #[arg(long, value_name = "METHOD")]
    pub method: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Where to serve gRPC (Identity/Whoami and grpc.health.v1).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:50051", value_parser = crate::serve::parse_listen_addr)]
    pub grpc: std::net::SocketAddr,
    /// Where to serve HTTP/1.1 (GET answers the identity as JSON).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080", value_parser = crate::serve::parse_listen_addr)]
    pub http: std::net::SocketAddr,
    /// The replica's name [default: $POD_NAME, else the hostname].
    #[arg(long)]
    pub name: Option<String>,
    /// Close an HTTP connection this long after its last response (0: never;
    /// at most 30 days).
    #[arg(long, value_name = "DUR", value_parser = DurationRange::SPAN_OR_OFF,
          allow_hyphen_values = true, default_value = "5s")]
    pub http_idle_timeout: Duration,
    /// Answer every request this much later, to stand in for a slow backend
    /// (at most 1h).
    #[arg(long, value_name = "DUR", value_parser = DurationRange::DELAY,
          allow_hyphen_values = true, default_value = "0s")]
    pub delay: Duration,
    /// Make gRPC clients reconnect after this long (gRPC MaxConnectionAge;
    /// at most 30 days).
    #[arg(long, value_name = "DUR", value_parser = DurationRange::SPAN, allow_hyphen_values = true)]
    pub max_connection_age: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum LabCommand {
    /// Build a lab (node, client, three backends, DNS) and leave it running.
    Up {
        #[arg(long, default_value = crate::lab::command::DEFAULT_NAME)]
        name: String,
        /// A fault to add to the node (repeatable).
        #[arg(long = "scenario", value_enum, value_name = "SCENARIO")]
        scenarios: Vec<crate::lab::Scenario>,
        /// The DNS server behind the kube-dns Service.
        #[arg(long, value_enum, default_value_t = crate::lab::DnsServer::Dnsmasq)]
        dns_server: crate::lab::DnsServer,
    },
    /// Remove a lab and everything it made.
    Down {
        #[arg(long, default_value = crate::lab::command::DEFAULT_NAME)]
        name: String,
        /// Remove every lab on this machine (e.g. left by a killed test run).
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// List running labs (or one).
    Status {
        #[arg(long)]
        name: Option<String>,
    },
    /// Run a command inside a pod of the lab, as kubectl exec would.
    Exec {
        #[arg(long, default_value = crate::lab::command::DEFAULT_NAME)]
        name: String,
        #[arg(long, default_value = "client", value_parser = ["node", "client", "backend-1", "backend-2", "backend-3", "dns"])]
        pod: String,
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            required = true,
            value_name = "CMD"
        )]
        command: Vec<String>,
    },
    /// Bring up each scenario in turn, run the matching podprobe command in
    /// the client pod and print its report.
    Demo,
    /// Start another DNS server in the lab's DNS pod, on an address of its
    /// own, healthy or misbehaving as told; prints the address for a
    /// resolv.conf (`podprobe lab exec -- sh -c 'echo nameserver ADDR >
    /// /etc/resolv.conf'` does not work: edit /etc/netns/LAB-client/).
    DnsServer {
        #[arg(long, default_value = crate::lab::command::DEFAULT_NAME)]
        name: String,
        #[arg(long, value_enum, default_value_t = crate::lab::DnsServer::Dnsmasq)]
        server: crate::lab::DnsServer,
        #[arg(long, value_enum, default_value_t = crate::lab::DnsMode::Healthy)]
        mode: crate::lab::DnsMode,
    },
    /// Add N Services (10.100.0.0 upwards, one backend each) to a running
    /// lab, in its kube-proxy mode (iptables, or nftables with kube-proxy-nft).
    Services {
        #[arg(long, default_value = crate::lab::command::DEFAULT_NAME)]
        name: String,
        /// How many Services to add (1 to 65536).
        #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=65536))]
        count: u32,
    },
    /// DNS forwarder slow for one domain (run by the slow-dns scenario).
    #[command(hide = true)]
    DnsDelay {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        upstream: std::net::SocketAddr,
        #[arg(long)]
        suffix: String,
        #[arg(long, value_parser = DurationRange::DELAY)]
        delay: Duration,
    },
    /// DNS forwarder that misbehaves as told (run by lab DNS servers).
    #[command(hide = true)]
    DnsFront {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        upstream: std::net::SocketAddr,
        #[arg(long, value_enum)]
        mode: crate::lab::DnsMode,
        /// Send replies from this address instead of the one queried.
        #[arg(long)]
        reply_from: Option<std::net::SocketAddr>,
    },
    /// Sends one out-of-window copy of each connection's first data segment
    /// from PORT (run in the backends by the invalid-reset scenario).
    #[command(hide = true)]
    OutOfWindow {
        #[arg(long)]
        interface: String,
        #[arg(long)]
        port: u16,
    },
}

/// The range a duration flag accepts. Every duration flag takes one of these
/// constants as its value parser, so the syntax (`2s`, `500ms`, `1m30s`, or a
/// bare number of seconds as `dig +time=` and `curl --max-time` take them),
/// the sign and the documented maximum are checked in one place, at parse
/// time: nothing downstream adds an unrealistic duration to an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// The least accepted; zero allows zero.
    pub min: Duration,
    /// The most accepted.
    pub max: Duration,
}

const HOUR: Duration = Duration::from_secs(3600);
const DAYS_30: Duration = Duration::from_secs(30 * 24 * 3600);
const POSITIVE: Duration = Duration::from_nanos(1);

impl DurationRange {
    /// A bound on one network wait (`--timeout`): more than zero, at most 1h.
    pub const TIMEOUT: Self = Self {
        min: POSITIVE,
        max: HOUR,
    };
    /// A pause added on purpose (`serve --delay`): 0 to 1h.
    pub const DELAY: Self = Self {
        min: Duration::ZERO,
        max: HOUR,
    };
    /// A span of a run or of a schedule (`capture --duration`, `watch
    /// --interval`, `--max-wait`): more than zero, at most 30 days.
    pub const SPAN: Self = Self {
        min: POSITIVE,
        max: DAYS_30,
    };
    /// A span where 0 turns the limit off (`serve --http-idle-timeout`).
    pub const SPAN_OR_OFF: Self = Self {
        min: Duration::ZERO,
        max: DAYS_30,
    };
    /// A sampling window for rates (`node --interval`): 1s to 1h.
    pub const WINDOW: Self = Self {
        min: Duration::from_secs(1),
        max: HOUR,
    };

    /// Parses `text` and checks it against the range.
    pub fn parse(self, text: &str) -> Result<Duration, String> {
        let text = text.trim();
        if text.starts_with('-') {
            return Err(format!("'{text}' is negative: a duration must be positive"));
        }
        let duration = match text.parse::<f64>() {
            Ok(secs) => Duration::try_from_secs_f64(secs)
                .map_err(|_| format!("'{text}' is not a duration of zero or more seconds"))?,
            Err(_) => humantime::parse_duration(text)
                .map_err(|e| format!("'{text}' is not a duration ({e}); try 2s, 500ms or 1m"))?,
        };
        if duration.is_zero() && !self.min.is_zero() {
            Err(format!("'{text}' is zero: it must be positive"))
        } else if duration < self.min {
            Err(format!(
                "'{text}' is under the minimum of {}",
                human_duration(self.min)
            ))
        } else if duration > self.max {
            Err(format!(
                "'{text}' is over the maximum of {}",
                human_duration(self.max)
            ))
        } else {
            Ok(duration)
        }
    }
}

impl clap::builder::TypedValueParser for DurationRange {
    type Value = Duration;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Duration, clap::Error> {
        let range = *self;
        // clap's own error, so the message names the flag and the value.
        (move |text: &str| range.parse(text)).parse_ref(cmd, arg, value)
    }
}

/// A duration as people read it: `1h`, `30days`, `1s 500ms`, `0s`.
pub fn human_duration(duration: Duration) -> String {
    if duration.is_zero() {
        "0s".to_string()
    } else {
        humantime::format_duration(duration).to_string()
    }
}

/// The most packets `capture -c` takes, as tcpdump's (a C int).
pub const MAX_PACKET_COUNT: u64 = i32::MAX as u64;
/// The most RPCs `grpc --rpcs` sends in one run (the run limit, --timeout
/// times a few, ends a run that big first; the counts stay exact).
pub const MAX_RPCS: u64 = 10_000_000_000;
/// The most queries per nameserver and name (`dns --count`) or attempts of
/// each sending pattern (`dns --race`).
pub const MAX_DNS_REPEATS: u32 = 1000;

// cli.rs maps clap's arguments onto the plain options each area owns; no
// area sees clap's types.

impl DoctorArgs {
    /// The checks `doctor` runs, as the registry takes them.
    pub fn plan(&self, global: &GlobalArgs) -> crate::checks::Plan {
        crate::checks::Plan {
            net: crate::net::Options {
                tcp: self.tcp.clone(),
                timeout: global.timeout,
            },
            dns: crate::dns::DoctorOptions {
                names: self.names.clone(),
                resolv_conf: self.resolv_conf.clone(),
                timeout: global.timeout,
                resolver: self.resolver,
            },
            grpc: self
                .grpc
                .iter()
                .map(|target| crate::grpc::Options::doctor(target, global.timeout))
                .collect(),
            keepalive: self
                .upstream
                .as_ref()
                .map(|upstream| crate::keepalive::Options {
                    upstream: upstream.clone(),
                    path: "/".to_string(),
                    max_wait: self.max_wait,
                    envoy_admin: self.envoy_admin.clone(),
                    config_dump: None,
                    timeout: global.timeout,
                }),
            node: None,
        }
    }
}

impl WatchArgs {
    pub fn options(&self, global: &GlobalArgs) -> crate::watch::Options {
        let mut plan = self.doctor.plan(global);
        plan.node = self.node.then(|| crate::node::NodeOptions {
            interval: crate::node::DEFAULT_INTERVAL,
            host_root: crate::node::DEFAULT_HOST_ROOT.into(),
            timeout: global.timeout,
        });
        crate::watch::Options {
            plan,
            interval: self.interval,
            listen: self.listen,
            push: self.doctor.push.clone(),
            timeout: global.timeout,
            json: global.output == OutputFormat::Json,
        }
    }
}

impl DnsArgs {
    pub fn options(&self, global: &GlobalArgs) -> crate::dns::Options {
        crate::dns::Options {
            names: self.names.clone(),
            resolv_conf: self.resolv_conf.clone(),
            servers: self.servers.clone(),
            count: self.count,
            race: self.race,
            timeout: global.timeout,
            resolver: self.resolver,
        }
    }
}

impl GrpcArgs {
    pub fn options(&self, global: &GlobalArgs) -> crate::grpc::Options {
        crate::grpc::Options {
            target: self.target.clone(),
            rpcs: self.rpcs,
            concurrency: self.concurrency,
            headless: self.headless.clone(),
            tls: self.tls || self.ca.is_some() || self.insecure,
            tls_options: crate::grpc::TlsOptions {
                ca: self.ca.clone(),
                insecure: self.insecure,
            },
            authority: self.authority.clone(),
            method: self.method.clone(),
            timeout: global.timeout,
            progress: true,
        }
    }
}

impl KeepaliveArgs {
    pub fn options(&self, global: &GlobalArgs) -> crate::keepalive::Options {
        crate::keepalive::Options {
            upstream: self.upstream.clone(),
            path: self.path.clone(),
            max_wait: self.max_wait,
            envoy_admin: self.envoy_admin.clone(),
            config_dump: self.config_dump.clone(),
            timeout: global.timeout,
        }
    }
}

impl CaptureArgs {
    pub fn options(&self, global: &GlobalArgs) -> crate::capture::Options {
        crate::capture::Options {
            json: global.output == OutputFormat::Json,
            interface: self.interface.clone(),
            filter: self.filter.clone(),
            write: self.write.clone(),
            read: self.read.clone(),
            count: self.count,
            duration: self.duration,
            snaplen: self.snaplen,
            max_size: self.max_size,
            analyze: self.analyze,
        }
    }
}

impl ServeArgs {
    pub fn options(&self, global: &GlobalArgs) -> crate::serve::Options {
        crate::serve::Options {
            json: global.output == OutputFormat::Json,
            grpc: self.grpc,
            http: self.http,
            name: self.name.clone(),
            http_idle_timeout: self.http_idle_timeout,
            delay: self.delay,
            max_connection_age: self.max_connection_age,
        }
    }
}

impl NodeArgs {
    pub fn options(&self, global: &GlobalArgs) -> crate::node::NodeOptions {
        crate::node::NodeOptions {
            interval: self.interval,
            host_root: self.host_root.clone(),
            timeout: global.timeout,
        }
    }
}

impl LabArgs {
    pub fn action(&self, global: &GlobalArgs) -> crate::lab::command::Action {
        use crate::lab::command::Action;
        match &self.command {
            LabCommand::Up {
                name,
                scenarios,
                dns_server,
            } => Action::Up {
                name: name.clone(),
                scenarios: scenarios.clone(),
                dns_server: *dns_server,
            },
            LabCommand::Down { name, all } => Action::Down {
                name: name.clone(),
                all: *all,
            },
            LabCommand::Status { name } => Action::Status { name: name.clone() },
            LabCommand::Exec { name, pod, command } => Action::Exec {
                name: name.clone(),
                pod: pod.clone(),
                command: command.clone(),
            },
            LabCommand::Services { name, count } => Action::Services {
                name: name.clone(),
                count: *count as usize,
            },
            LabCommand::Demo => Action::Demo {
                json: global.output == OutputFormat::Json,
            },
            LabCommand::DnsDelay {
                listen,
                upstream,
                suffix,
                delay,
            } => Action::DnsDelay {
                listen: *listen,
                upstream: *upstream,
                suffix: suffix.clone(),
                delay: *delay,
            },
            LabCommand::DnsServer { name, server, mode } => Action::DnsServer {
                name: name.clone(),
                server: *server,
                mode: *mode,
            },
            LabCommand::DnsFront {
                listen,
                upstream,
                mode,
                reply_from,
            } => Action::DnsFront {
                listen: *listen,
                upstream: *upstream,
                mode: *mode,
                reply_from: *reply_from,
            },
            LabCommand::OutOfWindow { interface, port } => Action::OutOfWindow {
                interface: interface.clone(),
                port: *port,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse_like_users_type_them() {
        let t = DurationRange::TIMEOUT;
        assert_eq!(t.parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(t.parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(t.parse("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(t.parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(t.parse("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(t.parse("1h"), Ok(HOUR));
        assert!(t.parse("soon").unwrap_err().contains("not a duration"));
        assert!(t.parse("inf").is_err());
        assert!(t.parse("NaN").is_err());
    }

    #[test]
    fn durations_out_of_range_say_why() {
        let t = DurationRange::TIMEOUT;
        assert!(t.parse("-1").unwrap_err().contains("must be positive"));
        assert!(t.parse("-1s").unwrap_err().contains("must be positive"));
        assert!(t.parse("0").unwrap_err().contains("must be positive"));
        assert!(t.parse("0s").unwrap_err().contains("must be positive"));
        assert!(t.parse("1e12").unwrap_err().contains("maximum of 1h"));
        assert!(t.parse("1e19").unwrap_err().contains("maximum of 1h"));
        assert!(t.parse("1e300").is_err());
        assert!(t.parse("3601").is_err());
        assert!(t.parse("99999999999999999999h").is_err());
        let span = DurationRange::SPAN;
        assert_eq!(span.parse("30days"), Ok(DAYS_30));
        assert!(span
            .parse("31days")
            .unwrap_err()
            .contains("maximum of 30days"));
        assert_eq!(DurationRange::SPAN_OR_OFF.parse("0"), Ok(Duration::ZERO));
        assert!(DurationRange::SPAN_OR_OFF.parse("-0.5").is_err());
        assert!(DurationRange::WINDOW
            .parse("500ms")
            .unwrap_err()
            .contains("minimum of 1s"));
    }

    #[test]
    fn every_duration_flag_is_bounded_and_takes_a_leading_hyphen() {
        // A `-1s` given to a duration flag must reach the parser (and its
        // "must be positive"), not be read as a flag.
        fn walk(cmd: &clap::Command, found: &mut usize) {
            for arg in cmd.get_arguments() {
                if arg.get_value_names() == Some(&["DUR".into()][..]) {
                    *found += 1;
                    assert!(
                        arg.is_allow_hyphen_values_set(),
                        "{} {}",
                        cmd.get_name(),
                        arg.get_id()
                    );
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, found);
            }
        }
        let mut found = 0;
        walk(&Cli::command(), &mut found);
        assert!(found >= 10, "{found}");
        for args in [
            &["podprobe", "--timeout", "-1s", "doctor"][..],
            &["podprobe", "capture", "--duration", "-5m"],
            &["podprobe", "node", "--interval", "-1"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err().to_string();
            assert!(err.contains("must be positive"), "{args:?}: {err}");
        }
        for args in [
            &["podprobe", "capture", "-c", "0"][..],
            &["podprobe", "capture", "-c", "-3"],
            &["podprobe", "grpc", "x:1", "--rpcs", "-1"],
            &["podprobe", "dns", "--count", "1001"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{args:?}"
            );
        }
    }

    #[test]
    fn sizes_parse_like_kubernetes_quantities() {
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("100M"), Ok(100_000_000));
        assert_eq!(parse_size("64Ki"), Ok(65_536));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5k"), Ok(1500));
        assert!(parse_size("0").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("10 apples").is_err());
    }
}
