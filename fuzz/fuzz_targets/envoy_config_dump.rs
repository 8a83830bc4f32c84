//! An Envoy config dump (`/config_dump` or `--config-dump FILE`), routed
//! for an app's request and judged as `keepalive` does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use podprobe::keepalive::{dump, envoy::ProxySide, route::Request};

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = dump::parse(data) else {
        return;
    };
    let local = ["127.0.0.1:8083".parse().unwrap()];
    let service = ["10.96.0.7:9080".parse().unwrap()];
    let headers = [("x-request-id", "1")];
    for req in [
        Request {
            host: "127.0.0.1",
            port: 8083,
            destinations: &local,
            authority: "127.0.0.1:8083",
            path: "/",
            headers: &[],
        },
        Request {
            host: "details",
            port: 9080,
            destinations: &service,
            authority: "details:9080",
            path: "/details/0",
            headers: &headers,
        },
    ] {
        let side = ProxySide::from_config("fuzz".into(), &parsed, &req, Err("none".into()));
        let _ = format!("{side:?}");
    }
});
