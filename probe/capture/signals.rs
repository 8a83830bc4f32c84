//! SIGINT and SIGTERM end a capture cleanly: the handler only sets a flag
//! (and, being installed without SA_RESTART, interrupts the capture's poll);
//! the capture loop then flushes its output and prints the statistics.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Installs the handlers. SA_RESETHAND makes them one-shot: a second Ctrl-C
/// kills a capture that cannot finish (a reader that stopped reading).
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is a valid empty one; the handler only
        // stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// A signal asked the capture to stop.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}
