//! DNS as the pod's applications see it: resolv.conf read the way glibc
//! reads it, the nameservers, and (in `podprobe dns`) the search-list walk,
//! the A/AAAA conntrack race and latency, measured with podprobe's own client.

pub mod client;
pub mod judge;
pub mod measure;
pub mod resolvconf;

use std::path::Path;

use crate::cli::{DoctorArgs, GlobalArgs};
use crate::report::{timed, Check};
use resolvconf::{Env, ResolvConf};

/// The name `doctor` asks every nameserver for when none is given.
pub const DEFAULT_DOCTOR_NAME: &str = "kubernetes.default.svc.cluster.local.";

/// Reads the resolv.conf in use. A missing /etc/resolv.conf is what glibc
/// copes with (defaults apply); any other unreadable path is bad input.
pub fn load_resolv_conf(path: &Path) -> crate::Result<ResolvConf> {
    match ResolvConf::load(path) {
        Err(crate::Error::Input { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound
                && path == Path::new("/etc/resolv.conf") =>
        {
            Ok(ResolvConf::parse("", &Env::from_process()))
        }
        other => other,
    }
}

/// `doctor`'s DNS checks.
pub fn doctor_checks(args: &DoctorArgs, global: &GlobalArgs) -> crate::Result<Vec<Check>> {
    let conf = load_resolv_conf(&args.resolv_conf)?;
    let name = client::parse_name(
        args.names
            .first()
            .map_or(DEFAULT_DOCTOR_NAME, String::as_str),
    )?;
    let path = args.resolv_conf.display().to_string();
    Ok(vec![
        timed(|| judge::resolv_conf(&path, &conf)),
        timed(|| {
            judge::nameservers(&measure::nameservers(
                &conf.servers(),
                &name,
                global.timeout,
            ))
        }),
    ])
}
