//! The worker's orderly-stop flag: set by SIGINT, SIGTERM, SIGHUP or SIGQUIT, checked by every step and helper.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

/// Whether an orderly stop was asked for (the supervisor forwards the user's signal as SIGTERM).
pub fn stop_requested() -> bool {
    STOP.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// Wait `ms` milliseconds (the test-only pauses), answering a stop within 10 ms. Returns false when a stop came.
pub fn pause_unless_stopped(ms: u64) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    while std::time::Instant::now() < until {
        if stop_requested() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    true
}

/// Install the handlers that set the flag. PID 1 of a namespace ignores signals left at their default action,
/// so the worker needs its own. SIGPIPE stays ignored (Rust's default): a vanished supervisor shows as a write
/// error on the frame pipe. The supervisor spawned the worker with these signals blocked (see
/// `worker::spawn`): one that came early is delivered once they are unblocked here.
pub fn install_stop_flags() -> std::io::Result<()> {
    let flag = STOP.get_or_init(|| Arc::new(AtomicBool::new(false)));
    let stops = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];
    for sig in stops {
        signal_hook::flag::register(sig, Arc::clone(flag))?;
    }
    let mut set = nix::sys::signal::SigSet::empty();
    for sig in stops {
        set.add(nix::sys::signal::Signal::try_from(sig).map_err(std::io::Error::from)?);
    }
    set.thread_unblock().map_err(std::io::Error::from)
}
