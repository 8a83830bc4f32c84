//! Envoy's Prometheus stats (`/stats?format=prometheus`), read beside a
//! real config dump as `keepalive` reads them.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use podprobe::keepalive::{dump, envoy, envoy::ProxySide, route::Request};

const DUMP: &[u8] =
    include_bytes!("../../tests/fixtures/envoy/istio-1.18-deathstarbench-config_dump.json");

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = envoy::parse_stats(text, "envoy_cluster_upstream_cx_idle_timeout");
    // Parsed once: the dump is 2.4 MB.
    static PARSED: OnceLock<dump::Dump<'static>> = OnceLock::new();
    let parsed = PARSED.get_or_init(|| dump::parse(DUMP).unwrap());
    let destinations = ["127.0.0.1:8083".parse().unwrap()];
    let req = Request {
        host: "127.0.0.1",
        port: 8083,
        destinations: &destinations,
        authority: "127.0.0.1:8083",
        path: "/",
        headers: &[],
    };
    let side = ProxySide::from_config("fuzz".into(), parsed, &req, Ok(text));
    let _ = format!("{side:?}");
});
