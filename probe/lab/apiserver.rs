//! The lab's `kubernetes` Service as a cluster has it: a ClusterIP whose
//! kube-proxy chains DNAT to the API server on the node's address, and the
//! Service variables kubelet puts in every container's environment.

use std::net::{SocketAddr, SocketAddrV4};

use super::node::NODE_ADDRESS;
use super::topology::{Service, ServicePort, POD_NAMESPACE};
use super::{Lab, Pod};
use crate::Result;

/// Where the API server listens on a control-plane node (kubeadm's default).
pub const APISERVER_PORT: u16 = 6443;

/// The API server's endpoint: this node's address, as on a single-node
/// cluster (kubeadm, kind) where the control plane runs on the node itself.
pub fn apiserver_endpoint() -> SocketAddrV4 {
    SocketAddrV4::new(NODE_ADDRESS, APISERVER_PORT)
}

/// `default/kubernetes:https` as kube-proxy programs it.
pub(crate) fn apiserver_service_port() -> ServicePort {
    ServicePort {
        name: "default/kubernetes:https".to_string(),
        ip: Service::Kubernetes.ip(),
        port: Service::Kubernetes.port(),
        proto: "tcp",
        endpoints: vec![apiserver_endpoint()],
    }
}

/// The Services of the pods' namespace with a ClusterIP, as kubelet names
/// them in the environment: (variable prefix, Service, port name).
fn env_services() -> [(&'static str, Service, &'static str); 3] {
    [
        ("KUBERNETES", Service::Kubernetes, "HTTPS"),
        ("WEB", Service::Web, "HTTP"),
        ("GRPC", Service::Grpc, "GRPC"),
    ]
}

/// The Service variables kubelet sets in a container of namespace
/// `default` (pkg/kubelet/envvars: `{NAME}_SERVICE_HOST`,
/// `{NAME}_SERVICE_PORT`, `{NAME}_SERVICE_PORT_{PORTNAME}` and the Docker
/// link variables `{NAME}_PORT`, `{NAME}_PORT_{PORT}_TCP[_PROTO|_PORT|_ADDR]`).
/// The headless Service has no ClusterIP and so no variables; kube-dns
/// lives in `kube-system`.
pub fn service_env() -> Vec<(String, String)> {
    debug_assert_eq!(POD_NAMESPACE, "default");
    let mut vars = Vec::new();
    for (prefix, service, port_name) in env_services() {
        let (ip, port) = (service.ip(), service.port());
        let url = format!("tcp://{ip}:{port}");
        let link = format!("{prefix}_PORT_{port}_TCP");
        vars.extend([
            (format!("{prefix}_SERVICE_HOST"), ip.to_string()),
            (format!("{prefix}_SERVICE_PORT"), port.to_string()),
            (
                format!("{prefix}_SERVICE_PORT_{port_name}"),
                port.to_string(),
            ),
            (format!("{prefix}_PORT"), url.clone()),
            (link.clone(), url),
            (format!("{link}_PROTO"), "tcp".to_string()),
            (format!("{link}_PORT"), port.to_string()),
            (format!("{link}_ADDR"), ip.to_string()),
        ]);
    }
    vars
}

impl Lab {
    /// A TCP server standing in for the API server on the node's address
    /// (podprobe's HTTP identity server: `svc.reachability` only connects).
    pub(crate) fn start_apiserver(&mut self) -> Result<()> {
        let mut cmd = self.podprobe(Pod::Node);
        cmd.args(["serve", "--name", "kube-apiserver"])
            .arg("--http")
            .arg(apiserver_endpoint().to_string())
            .arg("--grpc")
            .arg(format!("127.0.0.1:{}", APISERVER_PORT + 1));
        self.start(cmd, "kube-apiserver.log")?;
        self.wait_tcp(SocketAddr::V4(apiserver_endpoint()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_kubelets() {
        let env = service_env();
        let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://10.96.0.1:443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_ADDR"), Some("10.96.0.1"));
        assert_eq!(get("WEB_SERVICE_HOST"), Some("10.96.0.20"));
        // podprobe reads them back as kubelet meant them.
        let services = crate::svc::services_from_env(env);
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["kubernetes", "grpc", "web"]);
    }
}
