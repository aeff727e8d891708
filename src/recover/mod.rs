//! `woesafe recover`: find what crashed WoeUSB, WoeUSB-ng and woesafe runs left behind. Snapshot (read the
//! system) → plan (pure) → apply.

pub mod apply;
pub mod fuse;
pub mod patterns;
pub mod plan;
pub mod shadow;
pub mod snapshot;

/// Run woesafe itself as `exe ARG ARGS...` in a private mount namespace of its own (for looks that need a
/// mount — fusectl, a peek under leftover mounts — without the host's mount table ever changing); its stdout,
/// or None when it could not run or failed.
pub(crate) fn run_private_child<A: AsRef<std::ffi::OsStr>>(arg: &str, args: &[A]) -> Option<Vec<u8>> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().ok()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(arg).args(args).stdin(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe work is allowed: it
    // makes two system calls (unshare, mount) through nix, which passes "/" from a stack buffer and None as null
    // (no allocation, no lock), and turns an errno into an io::Error without allocating.
    unsafe {
        cmd.pre_exec(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)?;
            let private = nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE;
            nix::mount::mount(None::<&str>, "/", None::<&str>, private, None::<&str>).map_err(std::io::Error::from)
        });
    }
    crate::sys::helper::harden(&mut cmd);
    run_capped(cmd, CHILD_DEADLINE, CHILD_OUTPUT_CAP)
}

/// How long a private child may take: it must never hang recover.
const CHILD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
/// The most a private child may answer (the shadow scan lists at most 100 files per mount point).
const CHILD_OUTPUT_CAP: usize = 16 << 20;

/// Run `cmd` with its stdout piped and read it while it runs (a child whose answer fills the pipe must not
/// wait for us while we wait for it), at most `cap` bytes, within `deadline`: its stdout when it exited with
/// success, else None. A child that runs late or says too much is killed.
pub(crate) fn run_capped(mut cmd: std::process::Command, deadline: std::time::Duration, cap: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};
    let end = Instant::now() + deadline;
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().ok()?;
    let mut stdout = child.stdout.take()?;
    let give_up = |child: &mut std::process::Child| {
        let _ = child.kill();
        let _ = child.wait();
        None
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    // Read to the end of its output (the pipe closes when it exits), never past the deadline.
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return give_up(&mut child);
        }
        let wait = nix::poll::PollTimeout::from(left.min(Duration::from_millis(100)).as_millis().max(1) as u16);
        let mut fds = [nix::poll::PollFd::new(stdout.as_fd(), nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, wait) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return give_up(&mut child),
        }
        // Readable or hung up: this read does not block.
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if out.len() + n > cap => return give_up(&mut child),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return give_up(&mut child),
        }
    }
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success().then_some(out),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            _ => return give_up(&mut child),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn sh(script: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg(script).stdin(std::process::Stdio::null());
        cmd
    }

    /// More than a pipe holds (64 KiB): read while the child runs, so it finishes at once and all of it
    /// arrives (read only after the exit, this child would wait on the full pipe until the deadline).
    #[test]
    fn a_long_answer_is_read_while_the_child_runs() {
        let started = Instant::now();
        let out = run_capped(sh("head -c 1000000 /dev/zero | tr '\\0' x"), Duration::from_secs(10), 4 << 20);
        assert_eq!(out.as_ref().map(Vec::len), Some(1_000_000));
        assert!(out.unwrap().iter().all(|&b| b == b'x'));
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    }

    #[test]
    fn late_failing_or_talkative_children_give_none() {
        let started = Instant::now();
        assert_eq!(run_capped(sh("echo partial; exec sleep 60"), Duration::from_millis(300), 1 << 20), None);
        assert!(started.elapsed() < Duration::from_secs(5), "the deadline was not kept: {:?}", started.elapsed());
        // Its output closed early, but it goes on running.
        let started = Instant::now();
        assert_eq!(run_capped(sh("exec >&-; sleep 60"), Duration::from_millis(300), 1 << 20), None);
        assert!(started.elapsed() < Duration::from_secs(5), "the deadline was not kept: {:?}", started.elapsed());
        assert_eq!(run_capped(sh("echo out; exit 3"), Duration::from_secs(10), 1 << 20), None);
        assert_eq!(run_capped(sh("head -c 200000 /dev/zero"), Duration::from_secs(10), 100_000), None);
        assert_eq!(run_capped(sh("printf ok"), Duration::from_secs(10), 2), Some(b"ok".to_vec()));
    }
}
