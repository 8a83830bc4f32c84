//! Services and the outside, as the pod reaches them: `svc.reachability`
//! (the API server's Service from the environment kubelet gives every
//! container, by address and by name, and the other Services it lists) and
//! `net.egress` (`--external` targets). A TCP connect each, no credentials.

pub mod judge;
pub mod measure;
pub mod metrics;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::checks::blocking;
use crate::dns::model::Resolver;
use crate::report::Check;

/// What `doctor` asks of this area.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--external HOST:PORT` targets for `net.egress`.
    pub external: Vec<String>,
    /// The resolv.conf names are looked up through, as the app does
    /// (`--resolv-conf`; /etc/resolv.conf when `None`).
    pub resolv_conf: Option<PathBuf>,
    pub resolver: Option<Resolver>,
    pub timeout: Duration,
}

/// A Service as kubelet puts it in a container's environment
/// (`WEB_SERVICE_HOST`, `WEB_SERVICE_PORT`, `WEB_PORT=tcp://...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvService {
    /// The Service's name as the variables spell it, lowercased with `-`
    /// (`KUBE_DNS` -> `kube-dns`).
    pub name: String,
    pub host: IpAddr,
    pub port: u16,
}

/// Services checked besides the API server's, at most: a namespace with
/// hundreds of Services gets a sample, not a port scan.
pub const MAX_ENV_SERVICES: usize = 8;

/// The TCP Services of a container's environment, the API server's
/// (`KUBERNETES_*`, always set, also with `enableServiceLinks: false`)
/// first, then the others by name. UDP and SCTP Services, and variables
/// that do not parse, are left out.
pub fn services_from_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<EnvService> {
    let vars: std::collections::BTreeMap<String, String> = vars.into_iter().collect();
    let mut services: Vec<EnvService> = vars
        .iter()
        .filter_map(|(key, host)| {
            let prefix = key.strip_suffix("_SERVICE_HOST")?;
            let port = vars.get(&format!("{prefix}_SERVICE_PORT"))?.parse().ok()?;
            // `{NAME}_PORT=tcp://10.96.0.1:443` names the first port's protocol.
            let tcp = vars
                .get(&format!("{prefix}_PORT"))
                .is_none_or(|url| url.starts_with("tcp://"));
            tcp.then_some(EnvService {
                name: prefix.to_ascii_lowercase().replace('_', "-"),
                host: host.parse().ok()?,
                port,
            })
        })
        .collect();
    services.sort_by_key(|s| (s.name != "kubernetes", s.name.clone()));
    services
}

/// The API server's Service from this process's environment: present in
/// every Kubernetes container, absent elsewhere.
pub fn api_server() -> Option<EnvService> {
    services_from_env(std::env::vars())
        .into_iter()
        .find(|s| s.name == "kubernetes")
}

/// The name the API server's Service has in every namespace's search list.
pub const API_SERVER_NAME: &str = "kubernetes.default.svc";

/// `svc.reachability`: skipped outside Kubernetes.
pub async fn reachability_checks(options: &Options) -> crate::Result<Vec<Check>> {
    let services = services_from_env(std::env::vars());
    if !services.iter().any(|s| s.name == "kubernetes") {
        return Ok(vec![judge::not_in_kubernetes()]);
    }
    let mut targets = Vec::new();
    for (i, s) in services.iter().take(MAX_ENV_SERVICES + 1).enumerate() {
        targets.push(measure::Target::address(&s.name, s.host, s.port));
        if i == 0 {
            targets.push(measure::Target::name(&s.name, API_SERVER_NAME, s.port));
        }
    }
    let left_out = services.len().saturating_sub(MAX_ENV_SERVICES + 1);
    let options = options.clone();
    let started = std::time::Instant::now();
    let mut check = blocking(move || {
        measure::reach(targets, &options).map(|reached| judge::reachability(&reached, left_out))
    })
    .await??;
    check.duration_ms = crate::report::millis(started.elapsed());
    Ok(vec![check])
}

/// `net.egress`: only with `--external`.
pub async fn egress_checks(options: &Options) -> crate::Result<Vec<Check>> {
    if options.external.is_empty() {
        return Ok(Vec::new());
    }
    let targets = options
        .external
        .iter()
        .map(|t| measure::Target::external(t))
        .collect::<crate::Result<Vec<_>>>()?;
    let options = options.clone();
    let started = std::time::Instant::now();
    let mut check =
        blocking(move || measure::reach(targets, &options).map(|reached| judge::egress(&reached)))
            .await??;
    check.duration_ms = crate::report::millis(started.elapsed());
    Ok(vec![check])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn services_come_from_kubelets_variables() {
        // As kubelet sets them for a pod in `default` (kubelet_pods.go,
        // envvars.go), plus unrelated variables.
        let services = services_from_env(env(&[
            ("WEB_SERVICE_HOST", "10.96.0.20"),
            ("WEB_SERVICE_PORT", "80"),
            ("WEB_SERVICE_PORT_HTTP", "80"),
            ("WEB_PORT", "tcp://10.96.0.20:80"),
            ("WEB_PORT_80_TCP", "tcp://10.96.0.20:80"),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
            ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
            ("SYSLOG_SERVICE_HOST", "10.96.0.40"),
            ("SYSLOG_SERVICE_PORT", "514"),
            ("SYSLOG_PORT", "udp://10.96.0.40:514"),
            ("BROKEN_SERVICE_HOST", "not-an-ip"),
            ("BROKEN_SERVICE_PORT", "80"),
            ("MY_APP_SERVICE_HOST", "fd00::7"),
            ("MY_APP_SERVICE_PORT", "8443"),
            ("HOME", "/root"),
        ]));
        assert_eq!(
            services,
            vec![
                EnvService {
                    name: "kubernetes".into(),
                    host: "10.96.0.1".parse().unwrap(),
                    port: 443
                },
                EnvService {
                    name: "my-app".into(),
                    host: "fd00::7".parse().unwrap(),
                    port: 8443
                },
                EnvService {
                    name: "web".into(),
                    host: "10.96.0.20".parse().unwrap(),
                    port: 80
                },
            ]
        );
        assert!(services_from_env(env(&[("HOME", "/")])).is_empty());
    }
}
