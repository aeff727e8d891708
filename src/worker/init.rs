//! Worker side: PID 1 of its own PID namespace, in a private mount namespace. Reads the request, runs the
//! write, reports over frames, and leaves nothing behind: its mounts and loop devices end with it.

use std::io::{BufReader, BufWriter, Stdin, Stdout};

use crate::protocol::{Channel, Down, FrameError, Up, read_frame, write_frame};

/// The worker's two pipes to the supervisor.
pub struct Link {
    to: BufWriter<Stdout>,
    from: BufReader<Stdin>,
}

impl Channel for Link {
    fn send(&mut self, msg: &Up) -> Result<(), FrameError> {
        write_frame(&mut self.to, msg)
    }

    fn recv(&mut self) -> Result<Option<Down>, FrameError> {
        read_frame(&mut self.from)
    }
}

/// Entry point of `woesafe __woesafe_worker`. Returns the process exit code.
pub fn main() -> i32 {
    // Test builds only: widen the moment before the handlers exist, so a test can aim a signal at it.
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("WOESAFE_TEST_WORKER_START_DELAY_MS").ok().and_then(|v| v.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    if let Err(e) = crate::sys::stop::install_stop_flags() {
        crate::say!("woesafe worker: cannot install signal handlers: {e}");
        return 1;
    }
    let mut link = Link { to: BufWriter::new(std::io::stdout()), from: BufReader::new(std::io::stdin()) };
    if std::process::id() != 1 {
        let _ = link.send(&Up::Failed {
            step: crate::protocol::Step::ReadIso,
            message: "internal error: the worker is not PID 1 of its own namespace".into(),
            state: crate::protocol::TargetState::Untouched,
            refused: false,
        });
        return 1;
    }
    let request = match link.recv() {
        Ok(Some(Down::Start(r))) => r,
        Ok(Some(Down::Verify(r))) => {
            let outcome = crate::verify::worker::run(&r, &mut link);
            let code = if matches!(outcome, Up::Verified(_)) { 0 } else { 1 };
            return if link.send(&outcome).is_err() { 1 } else { code };
        }
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
    let outcome = crate::job::run(&request, &mut link);
    let code = match &outcome {
        Up::Done(_) | Up::Aborted | Up::Stopped { .. } => 0,
        _ => 1,
    };
    if link.send(&outcome).is_err() {
        return 1;
    }
    code
}
