//! Supervisor side: start the worker in new PID + mount namespaces and talk to it over its stdin/stdout.

use std::io::{BufReader, BufWriter};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use nix::sched::CloneFlags;

use super::frame::{Down, FrameError, Up, read_frame, write_frame};

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create a PID namespace for the worker: {0} (woesafe needs root)")]
    PidNamespace(#[source] nix::Error),
    #[error("cannot find our own executable: {0}")]
    Exe(#[source] std::io::Error),
    #[error("cannot start the worker: {0}")]
    Spawn(#[source] std::io::Error),
}

pub struct Worker {
    child: Child,
    to: BufWriter<ChildStdin>,
    from: BufReader<ChildStdout>,
}

/// Start the worker. Call it only once per process: the supervisor's children from now on are born into the
/// new PID namespace (the worker becomes its PID 1), and the calling thread can create no more threads
/// (clone(CLONE_THREAD) across PID namespaces fails), so start any thread before.
pub fn spawn() -> Result<Worker, SpawnError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(SpawnError::Exe)?;
    nix::sched::unshare(CloneFlags::CLONE_NEWPID).map_err(SpawnError::PidNamespace)?;
    let mut cmd = Command::new(exe);
    cmd.arg(super::WORKER_ARG).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    // Helpers and the worker stay out of the terminal's process group: Ctrl-C reaches the supervisor only,
    // which decides how to stop them.
    cmd.process_group(0);
    // SAFETY: runs between fork and exec in the single-threaded child; unshare, mount and prctl are plain
    // system calls, nothing allocates or takes locks.
    unsafe {
        cmd.pre_exec(|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)?;
            crate::sys::mount::make_namespace_private().map_err(|_| std::io::Error::last_os_error())?;
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(SpawnError::Spawn)?;
    let to = BufWriter::new(child.stdin.take().expect("stdin is piped"));
    let from = BufReader::new(child.stdout.take().expect("stdout is piped"));
    Ok(Worker { child, to, from })
}

impl Worker {
    pub fn send(&mut self, msg: &Down) -> Result<(), FrameError> {
        write_frame(&mut self.to, msg)
    }

    /// The next frame, or None when the worker closed its end.
    pub fn recv(&mut self) -> Result<Option<Up>, FrameError> {
        read_frame(&mut self.from)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the worker to exit (killing it first when `kill`): it takes its whole PID namespace with it.
    pub fn finish(mut self, kill: bool) -> std::io::Result<std::process::ExitStatus> {
        drop(self.to);
        if kill {
            let _ = self.child.kill();
        }
        self.child.wait()
    }
}
