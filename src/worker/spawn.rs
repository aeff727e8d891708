//! Supervisor side: start the worker in new PID + mount namespaces. Frames from the worker, and signals, arrive
//! as events on one channel, so the supervisor can wait with a timeout (for the stall watchdog).

use std::io::{BufReader, BufWriter};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Sender;

use nix::sched::CloneFlags;

use crate::protocol::{Down, FrameError, Up, read_frame, write_frame};

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create a PID namespace for the worker: {0} (woesafe needs root)")]
    PidNamespace(#[source] nix::Error),
    #[error("cannot open this thread's PID namespace (/proc/thread-self/ns/pid): {0}")]
    OwnNamespace(#[source] std::io::Error),
    #[error("cannot go back to our own PID namespace after starting the worker: {0}")]
    BackToOwnNamespace(#[source] nix::Error),
    #[error("cannot find our own executable: {0}")]
    Exe(#[source] std::io::Error),
    #[error("cannot create the frame pipe: {0}")]
    Pipe(#[source] nix::Error),
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("cannot start the worker: {0}")]
    Spawn(#[source] std::io::Error),
}

/// What the supervisor waits for.
#[derive(Debug)]
pub enum Event {
    Frame(Up),
    /// The worker closed its end (it exited, or was killed).
    Closed,
    /// A malformed frame: the worker is not trustworthy any more.
    Bad(FrameError),
}

pub struct Worker {
    child: Child,
    to: Option<BufWriter<ChildStdin>>,
    /// The worker's mount namespace, held from the moment a FUSE daemon serves a filesystem in it until the
    /// worker has been reaped (see `hold_for_fuse`).
    mount_ns: Option<std::fs::File>,
    /// That daemon's fusectl connection, and where the worker mounted fusectl inside its namespace.
    fuse: Option<(u32, Option<std::path::PathBuf>)>,
    reaped: bool,
}

/// pidfd_open(2) of our own process: the child checks it right after setting its parent-death signal, which
/// closes the race with a supervisor that died before the signal was armed.
fn pidfd_self() -> Option<OwnedFd> {
    rustix::process::pidfd_open(rustix::process::getpid(), rustix::process::PidfdFlags::empty()).ok()
}

/// Start the worker (`exe __woesafe_worker`; None: this very program); its frames arrive on `events`. The
/// calling thread unshares a new PID namespace for the worker (which becomes its PID 1) and, once the worker
/// is started, goes back to its own for the children to come: while it points at the new one, clone of a
/// thread fails and no second worker could be started. Other threads are never affected (a PID namespace for
/// children is per thread), so several threads may each start a worker.
pub fn spawn(events: Sender<Event>, exe: Option<&std::path::Path>) -> Result<Worker, SpawnError> {
    let exe = match exe {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe().map_err(SpawnError::Exe)?,
    };
    let own_pid_ns = std::fs::File::open("/proc/thread-self/ns/pid").map_err(SpawnError::OwnNamespace)?;
    let worker = spawn_in_new_namespace(events, exe);
    // Back to our own PID namespace for this thread's next children (and threads).
    if let Err(e) = nix::sched::setns(&own_pid_ns, CloneFlags::CLONE_NEWPID) {
        // Not expected (we return to the namespace we are in); a worker already started goes with the error.
        if let Ok(mut w) = worker {
            w.signal(nix::sys::signal::Signal::SIGKILL);
            let _ = w.wait_for(std::time::Duration::from_secs(3));
        }
        return Err(SpawnError::BackToOwnNamespace(e));
    }
    worker
}

fn spawn_in_new_namespace(events: Sender<Event>, exe: std::path::PathBuf) -> Result<Worker, SpawnError> {
    use std::os::unix::process::CommandExt;
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(SpawnError::Pipe)?;
    // The reader thread exists before the PID namespace is unshared.
    std::thread::Builder::new()
        .name("frames".into())
        .spawn(move || {
            let mut from = BufReader::new(std::fs::File::from(read_end));
            loop {
                let event = match read_frame::<Up>(&mut from) {
                    Ok(Some(up)) => Event::Frame(up),
                    Ok(None) => Event::Closed,
                    Err(e) => Event::Bad(e),
                };
                let last = !matches!(event, Event::Frame(_));
                if events.send(event).is_err() || last {
                    break;
                }
            }
        })
        .map_err(SpawnError::Thread)?;
    let parent = pidfd_self();
    let parent_fd = parent.as_ref().map(|f| f.as_raw_fd());
    nix::sched::unshare(CloneFlags::CLONE_NEWPID).map_err(SpawnError::PidNamespace)?;
    let mut cmd = Command::new(exe);
    cmd.arg(super::WORKER_ARG).stdin(Stdio::piped()).stdout(Stdio::from(write_end)).stderr(Stdio::inherit());
    // The worker and its helpers stay out of the terminal's process group: Ctrl-C reaches the supervisor only,
    // which decides how to stop them.
    cmd.process_group(0);
    // SAFETY: runs between fork and exec in the single-threaded child; unshare, mount, prctl, sigprocmask and
    // poll are plain system calls on stack data, nothing allocates or takes locks.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)?;
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(std::io::Error::from)?;
            // SIGTERM, not SIGKILL: a dead supervisor makes the worker stop in an orderly way, unmounting its
            // FUSE filesystems while their daemons live (an ntfs-3g daemon left as the last holder of the
            // namespace deadlocks; DESIGN.md). Its helpers still die with it (SIGKILL, see helper::harden).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // PID 1 of a namespace drops signals it has no handler for: keep the stop signals blocked (so
            // they stay pending) until the worker has installed its handlers and unblocks them.
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::sigaddset(&mut set, sig);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The supervisor may have died before the death signal was armed: its pidfd is readable then.
            if let Some(fd) = parent_fd {
                let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                if libc::poll(&mut pfd, 1, 0) > 0 {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(SpawnError::Spawn)?;
    drop(cmd); // closes our copy of the pipe's write end, so the reader sees the end when the worker goes
    drop(parent);
    let to = child.stdin.take().map(BufWriter::new);
    Ok(Worker { child, to, mount_ns: None, fuse: None, reaped: false })
}

/// Open the worker's mount namespace, when it is not ours (spawn's pre_exec unshared it before exec).
fn hold_mount_namespace(pid: u32) -> Option<std::fs::File> {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).ok()?;
    let ours = std::fs::metadata("/proc/self/ns/mnt").ok()?;
    let meta = theirs.metadata().ok()?;
    (meta.ino() != ours.ino() || meta.dev() != ours.dev()).then_some(theirs)
}

impl Worker {
    /// A FUSE daemon (ntfs-3g) is about to serve a filesystem in the worker's namespace: hold the namespace
    /// until the worker is reaped. When the worker is killed, the kernel kills the rest of its PID namespace;
    /// were the daemon then the namespace's last holder, its exit would unmount its own filesystem and wait
    /// forever for its own answer (the fuseblk deadlock in DESIGN.md). With our reference the daemon dies
    /// first, its connection closes, and the unmount happens here, afterwards, without waiting for anyone.
    /// (Held only then: for kernel mounts our reference would make us the one doing their last unmount, which
    /// can wait on a hung device.)
    pub fn hold_for_fuse(&mut self, connection: u32, fusectl: Option<std::path::PathBuf>) {
        self.fuse = Some((connection, fusectl));
        if self.mount_ns.is_none() && !self.reaped {
            self.mount_ns = hold_mount_namespace(self.child.id());
        }
    }

    /// When the worker could not be reaped (something in its namespace is stuck in the kernel), make sure its
    /// FUSE daemon can never dead-lock in its own unmount once the device moves again: abort its connection.
    /// Where the host has no fusectl mounted, we go through the one the worker mounted in its namespace, via
    /// /proc/PID/root of any of its processes that still has one (we mount nothing ourselves). Returns what was
    /// done.
    pub fn abort_fuse_if_stuck(&mut self) -> Option<String> {
        if self.reaped || self.child.try_wait().ok().flatten().is_some() {
            return None;
        }
        let (conn, fusectl) = self.fuse.take()?;
        let mut pids = vec![self.pid()];
        if let Some(ns) = crate::sys::procfs::pid_namespace(self.pid()) {
            pids.extend(crate::sys::procfs::processes_in_namespace(&ns).iter().map(|p| p.pid));
        }
        // A process whose main thread has exited (a zombie leader) has no /proc/PID/root, but a thread of it still
        // stuck in the kernel has /proc/PID/task/TID/root; the host's own fusectl, where mounted, also works.
        let roots = pids.iter().flat_map(|pid| {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
            std::iter::once(format!("/proc/{pid}/root"))
                .chain(tasks.map(move |t| format!("/proc/{pid}/task/{}/root", t.file_name().to_string_lossy())))
        });
        let done = std::fs::write(format!("/sys/fs/fuse/connections/{conn}/abort"), b"1").is_ok()
            || fusectl.as_ref().is_some_and(|dir| {
                roots
                    .into_iter()
                    .any(|root| std::fs::write(format!("{root}{}/{conn}/abort", dir.display()), b"1").is_ok())
            });
        Some(if done {
            format!(
                "The FUSE connection {conn} of the worker's ntfs-3g was aborted, so its daemon ends when its I/O \
                 does and cannot dead-lock in its own unmount."
            )
        } else {
            format!(
                "Could not abort the FUSE connection {conn} of the worker's ntfs-3g; if it stays in D state after \
                 the device recovers, run `woesafe recover --yes`."
            )
        })
    }

    pub fn send(&mut self, msg: &Down) -> Result<(), FrameError> {
        match &mut self.to {
            Some(to) => write_frame(to, msg),
            None => Err(FrameError::Io(std::io::ErrorKind::BrokenPipe.into())),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Send a signal to the worker (SIGTERM: orderly stop; SIGKILL: it takes its PID namespace with it).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Close our end of the request pipe (the worker reads its end as "supervisor gone").
    pub fn hang_up(&mut self) {
        self.to = None;
    }

    /// Wait up to `timeout` for the worker to exit; None when it is still there (e.g. stuck in D state).
    pub fn wait_for(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    // Reaped: every process of its PID namespace is gone (PID 1 exits last), so no daemon can
                    // wait on the unmounts that dropping the namespace now does.
                    self.reaped = true;
                    release_namespace(self.mount_ns.take());
                    return Some(status);
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => return None,
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Whatever path the supervisor leaves by: a worker not reaped must not leave a daemon to dead-lock.
        let _ = self.abort_fuse_if_stuck();
        release_namespace(self.mount_ns.take());
    }
}

/// Let go of the worker's mount namespace on a thread of its own. Being its last holder, we do its last
/// unmounts and loop-device releases, which wait for the stick's dirty pages: on a hung stick that waits in the
/// kernel (D state) until its I/O ends. The supervisor must not wait there before it has said what happened
/// (the stall report); the process may still finish exiting only when that I/O ends, as README.md says.
fn release_namespace(ns: Option<std::fs::File>) {
    let Some(ns) = ns else { return };
    // The thread that started the worker went back to its own PID namespace (see `spawn`), so it may start
    // threads; should it fail, the namespace goes here.
    if let Err(e) = std::thread::Builder::new().name("release-ns".into()).spawn(move || drop(ns)) {
        tracing::debug!("cannot start a thread to release the worker's namespace: {e}");
    }
}
