//! resolv.conf as glibc, musl and Go read it, the search list each makes of
//! a name, and the lookup each runs against servers that never answer,
//! answer NXDOMAIN or answer SERVFAIL; /etc/hosts and nsswitch.conf.
//! Input: the file, then optionally a NUL and the name to look up.
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use podprobe::dns::model::{Fate, Model, Query, Reply, Resolver};
use podprobe::dns::resolvconf::{Env, ResolvConf};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (text, name) = input
        .split_once('\0')
        .unwrap_or((input, "kubernetes.default"));
    let env = Env {
        localdomain: None,
        res_options: None,
        hostname: "pod-1.ns.svc.cluster.local".to_string(),
    };
    let conf = ResolvConf::parse(text, &env);
    let _ = podprobe::dns::search::candidates(name, &conf);
    let _ = podprobe::net::resolve::hosts_lookup(text, name);
    let _ = podprobe::fuzzing::nsswitch_files_before_dns(text);
    for resolver in Resolver::ALL {
        let model = Model::new(resolver, text, &env);
        let _ = model.settings();
        for (n, fate) in [
            Fate::Silent,
            Fate::Reply {
                reply: Reply::bare(3),
                after: Duration::from_millis(1),
            },
            Fate::Reply {
                reply: Reply::bare(2),
                after: Duration::from_millis(1),
            },
        ]
        .into_iter()
        .enumerate()
        {
            let mut net = |_: &Query| fate.clone();
            let trace = model.resolve(name, &mut net);
            if n == 0 {
                let _ = format!("{trace:?}");
            }
        }
    }
});
