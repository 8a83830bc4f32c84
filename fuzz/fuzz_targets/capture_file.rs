//! A pcap or pcapng file through `podprobe capture -r FILE --analyze`, the
//! whole path a user runs: the file reader, the decoder, IP reassembly,
//! DNS over UDP and TCP, the TCP tracker and the judges. The file is a
//! memfd, so it is read exactly as a file on disk is.
#![no_main]
use std::io::{Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use podprobe::capture::{Done, Options};

fn memfd() -> &'static Mutex<std::fs::File> {
    static FILE: OnceLock<Mutex<std::fs::File>> = OnceLock::new();
    FILE.get_or_init(|| {
        // SAFETY: memfd_create with a valid C string; the fd is owned by the File.
        let fd = unsafe { libc::memfd_create(c"ppfuzz-capture".as_ptr(), 0) };
        assert!(fd >= 0, "memfd_create failed");
        Mutex::new(unsafe { std::fs::File::from_raw_fd(fd) })
    })
}

fuzz_target!(|data: &[u8]| {
    let mut file = memfd().lock().unwrap();
    file.set_len(0).unwrap();
    file.rewind().unwrap();
    file.write_all(data).unwrap();
    let options = Options {
        interface: None,
        filter: None,
        write: None,
        read: Some(PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))),
        count: None,
        duration: None,
        snaplen: 262_144,
        max_size: None,
        analyze: true,
        json: true,
    };
    if let Ok(Done::Report { report, .. }) = podprobe::capture::run(&options) {
        let _ = serde_json::to_string(&report);
    }
});
