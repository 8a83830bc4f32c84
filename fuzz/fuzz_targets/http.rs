//! HTTP/1.x off the wire: a response as `keepalive` reads it from the
//! upstream (head, 1xx, Content-Length, chunks, close), and a request head
//! as `serve` parses it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = runtime().block_on(podprobe::fuzzing::http_response(data));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = podprobe::fuzzing::http_request_head(text);
    }
});
