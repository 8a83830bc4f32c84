//! The lab's DNS servers (dnsmasq, unbound, named, kresd) and their
//! misbehaving modes, asked on the wire from the client pod.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use podprobe::dns::client::{self, Wire};
use podprobe::dns::model::{Fate, Network, Qtype, Transport};
use podprobe::lab::{DnsMode, DnsServer, Lab, LabSpec, Pod, BIG_NAME, HOST_DOMAIN_NAME};

const WEB: &str = "web.default.svc.cluster.local.";
const WAIT: Duration = Duration::from_millis(700);

fn ask(lab: &Lab, addr: IpAddr, name: &str, transport: Transport) -> Fate {
    let server = SocketAddr::new(addr, 53);
    let name = name.to_string();
    lab.in_pod(Pod::Client, move || {
        let mut query = client::plain(server, &name, Qtype::A, WAIT);
        query.transport = transport;
        Wire::new(WAIT).send(&[query]).remove(0)
    })
    .expect("client pod")
}

fn reply(fate: &Fate) -> (u16, usize, bool) {
    match fate {
        Fate::Reply { reply, .. } => (reply.rcode, reply.addresses.len(), reply.truncated),
        other => panic!("no reply: {other:?}"),
    }
}

#[test]
fn lab_dns_servers_misbehave_as_told() {
    let failures: Vec<String> = support::parallel(&DnsServer::ALL, |&server| {
        let mut lab = Lab::up(&LabSpec::new(env!("CARGO_BIN_EXE_podprobe")).dns_server(server))
            .unwrap_or_else(|e| panic!("{server}: lab up: {e}"));
        let mut failures = Vec::new();
        // The main server, behind kube-dns.
        let kube_dns = IpAddr::from([10, 96, 0, 10]);
        let (rcode, n, _) = reply(&ask(&lab, kube_dns, WEB, Transport::Udp));
        if (rcode, n) != (0, 1) {
            failures.push(format!("{server} main: {rcode} {n}"));
        }
        for mode in DnsMode::ALL {
            let addr = IpAddr::V4(
                lab.add_dns_server(server, mode)
                    .unwrap_or_else(|e| panic!("{server} {mode}: {e}")),
            );
            let udp = ask(&lab, addr, WEB, Transport::Udp);
            let tcp = ask(&lab, addr, WEB, Transport::Tcp);
            let ok = match mode {
                DnsMode::Healthy => {
                    reply(&udp) == (0, 1, false)
                        && reply(&tcp) == (0, 1, false)
                        && reply(&ask(&lab, addr, BIG_NAME, Transport::Udp)).2
                        && reply(&ask(&lab, addr, BIG_NAME, Transport::Tcp)) == (0, 60, false)
                }
                DnsMode::Refused => reply(&udp).0 == 5 && reply(&tcp).0 == 5,
                DnsMode::Servfail => reply(&udp).0 == 2 && reply(&tcp).0 == 2,
                DnsMode::TruncateUdp => reply(&udp) == (0, 0, true) && reply(&tcp) == (0, 1, false),
                DnsMode::SilentZone => {
                    reply(&udp) == (0, 1, false)
                        && ask(&lab, addr, HOST_DOMAIN_NAME, Transport::Udp) == Fate::Silent
                }
                DnsMode::WrongPort | DnsMode::WrongAddress => udp == Fate::Silent,
                DnsMode::Unreachable => {
                    matches!(udp, Fate::Unreachable { .. })
                        && matches!(tcp, Fate::Unreachable { .. })
                }
            };
            if !ok {
                failures.push(format!("{server} {mode}: udp {udp:?}, tcp {tcp:?}"));
            }
        }
        failures
    })
    .into_iter()
    .flatten()
    .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}
