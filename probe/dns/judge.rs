//! Pure judges: DNS evidence in, `Check` out.

use serde::Serialize;

use super::measure::NameserversEvidence;
use super::resolvconf::{ResolvConf, MAX_NAMESERVERS};
use crate::report::{Check, Status};

const REF_NDOTS: &str =
    "https://kubernetes.io/docs/concepts/services-networking/dns-pod-service/#pod-dns-config";
const REF_RESOLV_CONF: &str = "https://man7.org/linux/man-pages/man5/resolv.conf.5.html";

#[derive(Serialize)]
struct ResolvConfEvidence<'a> {
    path: &'a str,
    nameservers: Vec<String>,
    search: &'a [String],
    ndots: u32,
    timeout_s: u32,
    attempts: u32,
    options: &'a [String],
    search_source: &'a str,
    ignored_nameservers: &'a [String],
    unknown_options: &'a [String],
}

/// `dns.resolv-conf`: what glibc will do with this configuration.
pub fn resolv_conf(path: &str, conf: &ResolvConf) -> Check {
    let evidence = ResolvConfEvidence {
        path,
        nameservers: conf.nameservers.iter().map(|ip| ip.to_string()).collect(),
        search: &conf.search,
        ndots: conf.ndots,
        timeout_s: conf.timeout_s,
        attempts: conf.attempts,
        options: &conf.options,
        search_source: &conf.search_source,
        ignored_nameservers: &conf.ignored_nameservers,
        unknown_options: &conf.unknown_options,
    };
    let mut problems = Vec::new();
    let mut remedy = Vec::new();
    if conf.nameservers.is_empty() {
        problems.push("no usable nameserver (glibc falls back to 127.0.0.1)".to_string());
        remedy.push(format!(
            "add a `nameserver ADDR` line to {path} (in Kubernetes: check the pod's dnsPolicy and dnsConfig.nameservers)"
        ));
    }
    if conf.nameservers.len() == MAX_NAMESERVERS && !conf.ignored_nameservers.is_empty() {
        problems.push(format!(
            "{} nameserver line(s) beyond the third are ignored by glibc: {}",
            conf.ignored_nameservers.len(),
            conf.ignored_nameservers.join(", ")
        ));
        remedy.push(
            "keep at most 3 nameservers (the kubelet also truncates to 3 and logs 'Nameserver limits were exceeded')"
                .to_string(),
        );
    } else if !conf.ignored_nameservers.is_empty() {
        problems.push(format!(
            "unparsable nameserver line(s) ignored: {}",
            conf.ignored_nameservers.join(", ")
        ));
    }
    if conf.ndots >= 2 && !conf.search.is_empty() {
        let n = conf.search.len() + 1;
        problems.push(format!(
            "ndots:{} with {} search domains: a name with fewer than {} dots costs up to {} lookups x (A+AAAA) = {} queries",
            conf.ndots,
            conf.search.len(),
            conf.ndots,
            n,
            2 * n
        ));
        remedy.push(format!(
            "end external names with a dot (api.example.com.), or lower ndots in the pod spec:\n{}",
            dns_config_snippet(1)
        ));
    }
    let status = if problems.is_empty() {
        Status::Pass
    } else {
        Status::Warn
    };
    let summary = if problems.is_empty() {
        format!(
            "{} nameserver(s), {} search domain(s), ndots:{}, timeout {}s x {} attempts",
            conf.nameservers.len(),
            conf.search.len(),
            conf.ndots,
            conf.timeout_s,
            conf.attempts
        )
    } else {
        problems.join("; ")
    };
    Check::new(
        "dns.resolv-conf",
        "resolv.conf as glibc reads it",
        status,
        summary,
        &evidence,
    )
    .with_remedy(remedy)
    .with_refs(&[REF_RESOLV_CONF, REF_NDOTS])
}

/// The pod spec fragment that sets ndots.
pub fn dns_config_snippet(ndots: u32) -> String {
    format!("spec:\n  dnsConfig:\n    options:\n      - name: ndots\n        value: \"{ndots}\"")
}

/// `dns.nameservers`: every configured nameserver answers in time.
pub fn nameservers(ev: &NameserversEvidence) -> Check {
    let silent: Vec<&str> = ev
        .servers
        .iter()
        .filter(|s| s.latency_ms.is_none())
        .map(|s| s.server.as_str())
        .collect();
    let unhealthy: Vec<String> = ev
        .servers
        .iter()
        .filter(|s| {
            matches!(
                s.rcode.as_str(),
                "SERVFAIL" | "REFUSED" | "NOTIMP" | "FORMERR"
            )
        })
        .map(|s| format!("{} ({})", s.server, s.rcode))
        .collect();
    let (status, summary) = if !silent.is_empty() {
        (
            Status::Fail,
            format!(
                "no answer for {} from {} within {:.0} ms",
                ev.name,
                silent.join(", "),
                ev.timeout_ms
            ),
        )
    } else if !unhealthy.is_empty() {
        (
            Status::Warn,
            format!(
                "{} answered but cannot resolve: {}",
                ev.name,
                unhealthy.join(", ")
            ),
        )
    } else {
        let list: Vec<String> = ev
            .servers
            .iter()
            .map(|s| {
                format!(
                    "{} {} in {:.1} ms",
                    s.server,
                    s.rcode,
                    s.latency_ms.unwrap_or(0.0)
                )
            })
            .collect();
        (Status::Pass, format!("{}: {}", ev.name, list.join(", ")))
    };
    let details = ev
        .servers
        .iter()
        .map(|s| match (&s.latency_ms, &s.error) {
            (Some(ms), _) => format!("{:<24} {:<9} {ms:>8.1} ms", s.server, s.rcode),
            (None, Some(e)) => format!("{:<24} {:<9} {e}", s.server, s.rcode),
            (None, None) => format!("{:<24} {}", s.server, s.rcode),
        })
        .collect::<Vec<_>>();
    let remedy = if status == Status::Pass {
        Vec::new()
    } else {
        vec![
            "check that the DNS Service's pods are running and reachable (kubectl -n kube-system get pods -l k8s-app=kube-dns -o wide) and that no NetworkPolicy blocks UDP/TCP 53 egress".to_string(),
        ]
    };
    Check::new("dns.nameservers", "Nameservers answer", status, summary, ev)
        .with_details(details)
        .with_remedy(remedy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::measure::ServerAnswer;
    use crate::dns::resolvconf::Env;

    fn judge(text: &str) -> Check {
        resolv_conf(
            "/etc/resolv.conf",
            &ResolvConf::parse(text, &Env::default()),
        )
    }

    #[test]
    fn resolv_conf_judgements() {
        let plain = judge("nameserver 10.96.0.10\nsearch default.svc.cluster.local\n");
        assert_eq!(plain.status, Status::Pass, "{}", plain.summary);
        assert_eq!(plain.evidence["ndots"], 1);
        assert_eq!(plain.evidence["timeout_s"], 5);
        assert_eq!(plain.evidence["attempts"], 2);
        assert_eq!(plain.evidence["nameservers"][0], "10.96.0.10");

        let k8s = judge("search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n");
        assert_eq!(k8s.status, Status::Warn);
        assert!(
            k8s.summary.contains("ndots:5 with 3 search domains"),
            "{}",
            k8s.summary
        );
        assert!(k8s.remedy.iter().any(|r| r.contains("dnsConfig")));

        // ndots:2 with search domains is still amplification; without them it is not.
        assert_eq!(
            judge("nameserver 1.1.1.1\nsearch a.example\noptions ndots:2\n").status,
            Status::Warn
        );
        assert_eq!(
            judge("nameserver 1.1.1.1\noptions ndots:2\n").status,
            Status::Pass
        );

        let four = judge(
            "nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n",
        );
        assert_eq!(four.status, Status::Warn);
        assert!(four.summary.contains("10.0.0.4"), "{}", four.summary);

        let none = judge("search example.com\n");
        assert_eq!(none.status, Status::Warn);
        assert!(none.summary.contains("no usable nameserver"));
    }

    fn answer(server: &str, rcode: &str, latency_ms: Option<f64>) -> ServerAnswer {
        ServerAnswer {
            server: server.into(),
            rcode: rcode.into(),
            latency_ms,
            error: latency_ms
                .is_none()
                .then(|| "no reply within 2000 ms".into()),
        }
    }

    fn servers(list: Vec<ServerAnswer>) -> NameserversEvidence {
        NameserversEvidence {
            name: "kubernetes.default.svc.cluster.local.".into(),
            qtype: "A".into(),
            timeout_ms: 2000.0,
            servers: list,
        }
    }

    #[test]
    fn nameserver_judgements() {
        let ok = nameservers(&servers(vec![
            answer("10.96.0.10:53", "NOERROR", Some(1.2)),
            answer("10.96.0.11:53", "NXDOMAIN", Some(3.4)),
        ]));
        assert_eq!(ok.status, Status::Pass, "{}", ok.summary);
        let refused = nameservers(&servers(vec![answer(
            "10.96.0.10:53",
            "REFUSED",
            Some(0.5),
        )]));
        assert_eq!(refused.status, Status::Warn);
        let silent = nameservers(&servers(vec![
            answer("10.96.0.10:53", "NOERROR", Some(1.0)),
            answer("10.96.0.11:53", "TIMEOUT", None),
        ]));
        assert_eq!(silent.status, Status::Fail);
        assert!(
            silent.summary.contains("10.96.0.11:53"),
            "{}",
            silent.summary
        );
        assert_eq!(silent.evidence["servers"][1]["rcode"], "TIMEOUT");
        assert!(silent.evidence["servers"][1].get("latency_ms").is_none());
    }
}
