//! The order in which glibc's resolver tries a name against the search list
//! (`__res_context_search` in resolv/res_query.c), as pure logic.

use super::resolvconf::ResolvConf;

/// One name glibc would query for a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Absolute, with the trailing dot.
    pub fqdn: String,
    /// The search domain appended, `None` for the name as is.
    pub search_domain: Option<String>,
}

/// The dots glibc counts (a trailing dot included).
pub fn dots(name: &str) -> usize {
    name.bytes().filter(|&b| b == b'.').count()
}

/// The candidates in glibc's order: a trailing-dot name only as is; a name
/// with at least `ndots` dots as is first, then each search domain; any
/// other name each search domain first and as is last (not at all for a
/// dotless name under `no-tld-query`). A search domain of `.` is the name as
/// is, and then glibc does not add it again at the end.
pub fn candidates(name: &str, conf: &ResolvConf) -> Vec<Candidate> {
    let as_is = || Candidate {
        fqdn: absolute(name),
        search_domain: None,
    };
    let dots = dots(name);
    if name.ends_with('.') {
        return vec![as_is()];
    }
    let mut out = Vec::new();
    let tried_as_is = dots >= conf.ndots as usize;
    if tried_as_is {
        out.push(as_is());
    }
    let mut root_on_list = false;
    for domain in &conf.search {
        let domain = domain.trim_start_matches('.').trim_end_matches('.');
        if domain.is_empty() {
            root_on_list = true;
            out.push(Candidate {
                fqdn: absolute(name),
                search_domain: Some(".".to_string()),
            });
        } else {
            out.push(Candidate {
                fqdn: format!("{name}.{domain}."),
                search_domain: Some(domain.to_string()),
            });
        }
    }
    let searched = !conf.search.is_empty();
    let tld_ok = dots > 0 || !searched || !conf.has_option("no-tld-query");
    if tld_ok && !tried_as_is && !root_on_list {
        out.push(as_is());
    }
    out
}

fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::resolvconf::Env;

    fn conf(text: &str) -> ResolvConf {
        ResolvConf::parse(text, &Env::default())
    }

    fn order(name: &str, conf: &ResolvConf) -> Vec<String> {
        candidates(name, conf).into_iter().map(|c| c.fqdn).collect()
    }

    const K8S: &str = "search default.svc.cluster.local svc.cluster.local cluster.local corp.internal\nnameserver 10.96.0.10\noptions ndots:5\n";

    #[test]
    fn kubernetes_ndots5_order() {
        let c = conf(K8S);
        assert_eq!(
            order("api.example.com", &c),
            [
                "api.example.com.default.svc.cluster.local.",
                "api.example.com.svc.cluster.local.",
                "api.example.com.cluster.local.",
                "api.example.com.corp.internal.",
                "api.example.com.",
            ]
        );
        assert_eq!(order("api.example.com.", &c), ["api.example.com."]);
        assert_eq!(
            order("kubernetes", &c)[0],
            "kubernetes.default.svc.cluster.local."
        );
        // Cross-namespace: found under the second search domain.
        let web = candidates("web.prod", &c);
        assert_eq!(web[1].fqdn, "web.prod.svc.cluster.local.");
        assert_eq!(web[1].search_domain.as_deref(), Some("svc.cluster.local"));
        assert_eq!(web.last().unwrap().search_domain, None);
        // Five dots reach ndots:5: as is first.
        let deep = order("a.b.c.d.e.example", &c);
        assert_eq!(deep[0], "a.b.c.d.e.example.");
        assert_eq!(deep.len(), 5);
        assert_eq!(deep[1], "a.b.c.d.e.example.default.svc.cluster.local.");
    }

    #[test]
    fn ndots1_and_edge_cases() {
        let c = conf("search corp.example\noptions ndots:1\n");
        assert_eq!(
            order("www.example.org", &c),
            ["www.example.org.", "www.example.org.corp.example."]
        );
        assert_eq!(
            order("intranet", &c),
            ["intranet.corp.example.", "intranet."]
        );
        let tld = conf("search corp.example\noptions no-tld-query\n");
        assert_eq!(order("intranet", &tld), ["intranet.corp.example."]);
        assert_eq!(order("a.b", &tld), ["a.b.", "a.b.corp.example."]);
        // systemd-resolved's `search .`: the root stands for the name as is.
        let stub = conf("nameserver 127.0.0.53\nsearch .\n");
        assert_eq!(order("intranet", &stub), ["intranet."]);
        // No search list.
        assert_eq!(
            order("intranet", &conf("nameserver 1.1.1.1\n")),
            ["intranet."]
        );
        assert_eq!(dots("a.b."), 2);
        assert_eq!(dots("kubernetes"), 0);
    }
}
