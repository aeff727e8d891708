//! Worker side: PID 1 of its own PID namespace, in a private mount namespace. Reads the request, runs the
//! write, reports over frames, and leaves nothing behind: its mounts and loop devices end with it.

use std::io::{BufReader, BufWriter, Stdin, Stdout};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::frame::{Down, FrameError, Up, read_frame, write_frame};

/// The worker's two pipes to the supervisor.
pub struct Link {
    to: BufWriter<Stdout>,
    from: BufReader<Stdin>,
}

impl Link {
    pub fn send(&mut self, msg: &Up) -> Result<(), FrameError> {
        write_frame(&mut self.to, msg)
    }

    pub fn recv(&mut self) -> Result<Option<Down>, FrameError> {
        read_frame(&mut self.from)
    }
}

/// Set by SIGINT, SIGTERM, SIGHUP or SIGQUIT: stop in an orderly way at the next check.
static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

/// Whether an orderly stop was asked for (the supervisor forwards the user's signal as SIGTERM).
pub fn stop_requested() -> bool {
    STOP.get().is_some_and(|f| f.load(Ordering::Relaxed))
}

/// PID 1 of a namespace ignores signals left at their default action: install our own. SIGPIPE stays ignored
/// (Rust's default): a vanished supervisor shows as a write error on the frame pipe.
fn install_signal_flags() -> std::io::Result<()> {
    let flag = STOP.get_or_init(|| Arc::new(AtomicBool::new(false)));
    let stops = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];
    for sig in stops {
        signal_hook::flag::register(sig, Arc::clone(flag))?;
    }
    // The supervisor spawned us with these blocked (see spawn.rs): one that came early is delivered now.
    let mut set = nix::sys::signal::SigSet::empty();
    for sig in stops {
        set.add(nix::sys::signal::Signal::try_from(sig).map_err(std::io::Error::from)?);
    }
    set.thread_unblock().map_err(std::io::Error::from)
}

/// Entry point of `woesafe __woesafe_worker`. Returns the process exit code.
pub fn main() -> i32 {
    // Test-only: widen the moment before the handlers exist, so a test can aim a signal at it.
    if let Some(ms) = std::env::var("WOESAFE_TEST_WORKER_START_DELAY_MS").ok().and_then(|v| v.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    if let Err(e) = install_signal_flags() {
        crate::say!("woesafe worker: cannot install signal handlers: {e}");
        return 1;
    }
    let mut link = Link { to: BufWriter::new(std::io::stdout()), from: BufReader::new(std::io::stdin()) };
    if std::process::id() != 1 {
        let _ = link.send(&Up::Failed {
            step: super::frame::Step::ReadIso,
            message: "internal error: the worker is not PID 1 of its own namespace".into(),
            state: super::frame::TargetState::Untouched,
            refused: false,
        });
        return 1;
    }
    let request = match link.recv() {
        Ok(Some(Down::Start(r))) => r,
        // The supervisor went away before asking anything: nothing to do.
        Ok(None) | Ok(Some(Down::Abort)) => return 0,
        Ok(Some(other)) => {
            crate::say!("woesafe worker: unexpected first frame {other:?}");
            return 1;
        }
        Err(e) => {
            crate::say!("woesafe worker: {e}");
            return 1;
        }
    };
    let outcome = crate::write::run(&request, &mut link);
    let code = match &outcome {
        Up::Done(_) | Up::Aborted | Up::Stopped { .. } => 0,
        _ => 1,
    };
    if link.send(&outcome).is_err() {
        return 1;
    }
    code
}
