//! `podprobe serve`: a replica identity target. Deployed as the backends of a
//! test Service, every answer names the replica that served it, over gRPC
//! (`podprobe.v1.Identity/Whoami` plus `grpc.health.v1.Health`) and over
//! HTTP/1.1 (`GET /` as JSON, with a real keep-alive idle timeout).

pub(crate) mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::grpc::pb::identity_server::{Identity as IdentityService, IdentityServer};
use crate::grpc::pb::{WhoamiReply, WhoamiRequest};
use crate::Error;

/// How long in-flight calls may take to finish after SIGTERM, well inside
/// Kubernetes' default 30 s termination grace period.
const DRAIN: Duration = Duration::from_secs(10);

/// Who this replica is, as every answer reports it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    /// `$POD_IP`; when unset each answer uses the address the call arrived on.
    pub pod_ip: Option<String>,
    pub node: String,
    pub hostname: String,
}

impl Identity {
    /// `--name`, else `$POD_NAME` (the downward API), else the hostname.
    pub fn from_env(name: Option<&str>) -> Self {
        let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        let hostname = crate::net::hostname();
        Identity {
            name: name
                .map(str::to_string)
                .or_else(|| env("POD_NAME"))
                .unwrap_or_else(|| hostname.clone()),
            pod_ip: env("POD_IP"),
            node: env("NODE_NAME").unwrap_or_default(),
            hostname,
        }
    }

    /// The pod IP to report for a call that arrived on `local`.
    fn pod_ip(&self, local: Option<SocketAddr>) -> String {
        self.pod_ip
            .clone()
            .or_else(|| local.map(|a| a.ip().to_string()))
            .unwrap_or_default()
    }
}

/// A listen address: `HOST:PORT` with an IP host, or `:PORT` for every IPv4
/// address (as Go servers accept it).
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    let full = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_string(),
    };
    full.parse::<SocketAddr>()
        .map_err(|_| format!("'{text}' is not a listen address; use IP:PORT or :PORT"))
}

/// What `podprobe serve` was asked to serve.
#[derive(Debug, Clone)]
pub struct Options {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// `None`: `$POD_NAME`, else the hostname.
    pub name: Option<String>,
    /// Close an HTTP connection this long after its last response (0: never).
    pub http_idle_timeout: Duration,
    /// Answer every request this much later.
    pub delay: Duration,
    /// gRPC MaxConnectionAge.
    pub max_connection_age: Option<Duration>,
    /// Say what the server does as JSON lines on stdout (`-o json`) instead
    /// of text on stderr.
    pub json: bool,
}

/// One thing the server tells its operator: a text line on stderr, or one
/// JSON object a line on stdout with `-o json` (`event` names it; the other
/// keys are its facts).
fn announce(json: bool, event: serde_json::Value, text: std::fmt::Arguments) {
    if json {
        use std::io::Write;
        // A reader that went away does not stop the server.
        let _ = writeln!(std::io::stdout().lock(), "{event}");
    } else {
        eprintln!("podprobe serve: {text}");
    }
}

async fn bind(addr: SocketAddr, what: &str, json: bool) -> crate::Result<TcpListener> {
    // Address in use, or not ours to bind: the user's input, as for `nc -l`.
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::usage(format!("cannot listen for {what} on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io(format!("{what} listener"), e))?;
    // Tests and scripts read the bound address (port 0 picks a free one).
    announce(
        json,
        serde_json::json!({
            "event": "listening",
            "protocol": what.to_ascii_lowercase(),
            "address": local.to_string(),
        }),
        format_args!("{what} listening on {local}"),
    );
    Ok(listener)
}

/// Serves until SIGTERM or SIGINT, then drains.
pub async fn run(args: &Options) -> crate::Result<()> {
    let identity = Arc::new(Identity::from_env(args.name.as_deref()));
    let grpc_listener = bind(args.grpc, "gRPC", args.json).await?;
    let http_listener = bind(args.http, "HTTP", args.json).await?;
    let idle = if args.http_idle_timeout.is_zero() {
        "off: connections stay open until the client closes them".to_string()
    } else {
        crate::cli::human_duration(args.http_idle_timeout)
    };
    announce(
        args.json,
        serde_json::json!({
            "event": "ready",
            "replica": identity.name,
            // null: no idle timeout (0 on the command line).
            "http_idle_timeout_s": (!args.http_idle_timeout.is_zero())
                .then_some(args.http_idle_timeout.as_secs_f64()),
        }),
        format_args!(
            "replica '{}' ready (HTTP keep-alive idle timeout {idle})",
            identity.name
        ),
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let grpc = tokio::spawn(serve_grpc(
        grpc_listener,
        identity.clone(),
        args.clone(),
        stop_rx.clone(),
    ));
    let http = tokio::spawn(http::serve(
        http_listener,
        identity,
        http::Options {
            idle_timeout: args.http_idle_timeout,
            delay: args.delay,
        },
        stop_rx,
    ));

    let signal = shutdown_signal().await?;
    announce(
        args.json,
        serde_json::json!({"event": "draining", "signal": signal}),
        format_args!("{signal}, draining"),
    );
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN, async {
        let _ = grpc.await;
        let _ = http.await;
    })
    .await;
    if drained.is_err() {
        announce(
            args.json,
            serde_json::json!({"event": "drain_timeout", "after_s": DRAIN.as_secs_f64()}),
            format_args!("calls still running after {DRAIN:?}, exiting anyway"),
        );
    }
    Ok(())
}

/// Waits for SIGTERM (what the kubelet sends) or SIGINT (Ctrl-C).
pub(crate) async fn shutdown_signal() -> crate::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Error::io("installing the SIGTERM handler", e))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Error::io("installing the SIGINT handler", e))?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

async fn serve_grpc(
    listener: TcpListener,
    identity: Arc<Identity>,
    args: Options,
    mut stop: watch::Receiver<bool>,
) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<IdentityServer<WhoamiService>>()
        .await;
    let mut server = tonic::transport::Server::builder();
    if let Some(age) = args.max_connection_age {
        server = server.max_connection_age(age);
    }
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let result = server
        .add_service(health)
        .add_service(IdentityServer::new(WhoamiService {
            identity,
            delay: args.delay,
        }))
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .await;
    if let Err(e) = result {
        eprintln!("podprobe serve: gRPC server: {e}");
    }
}

struct WhoamiService {
    identity: Arc<Identity>,
    delay: Duration,
}

#[tonic::async_trait]
impl IdentityService for WhoamiService {
    async fn whoami(
        &self,
        request: Request<WhoamiRequest>,
    ) -> Result<Response<WhoamiReply>, Status> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        Ok(Response::new(WhoamiReply {
            name: self.identity.name.clone(),
            pod_ip: self.identity.pod_ip(request.local_addr()),
            node: self.identity.node.clone(),
            hostname: self.identity.hostname.clone(),
            peer: request
                .remote_addr()
                .map(|a| a.to_string())
                .unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen_addr(":8080"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 8080)))
        );
        assert_eq!(
            parse_listen_addr("127.0.0.2:0"),
            Ok(SocketAddr::from(([127, 0, 0, 2], 0)))
        );
        assert!(parse_listen_addr("[::1]:50051").is_ok());
        assert!(parse_listen_addr("localhost:80").is_err());
        assert!(parse_listen_addr("8080").is_err());
    }

    #[test]
    fn explicit_name_wins() {
        assert_eq!(Identity::from_env(Some("web-1")).name, "web-1");
    }
}
