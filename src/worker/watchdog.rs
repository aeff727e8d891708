//! The stall watchdog: what counts as movement (`Movement`), and the report and teardown when no byte has moved
//! for the stall timeout: name the step, every process of the worker's PID namespace with its state and wait
//! channel, and the devices; then kill the namespace and say whether anything stayed in uninterruptible sleep.

use std::time::{Duration, Instant};

use super::spawn::Worker;
use crate::protocol::Step;
use crate::sys::procfs::{self, ProcInfo};

/// When the worker last moved: a frame from it, or the read/write counters of the block devices it uses.
pub struct Movement {
    io_seen: Option<u64>,
    last: Instant,
}

impl Default for Movement {
    /// Moved just now.
    fn default() -> Movement {
        Movement { io_seen: None, last: Instant::now() }
    }
}

impl Movement {
    /// A frame came (or time spent elsewhere, such as at a prompt, is no stall).
    pub fn moved(&mut self) {
        self.last = Instant::now();
    }

    /// Look at the devices' counters; true when nothing has moved for `after`.
    pub fn stalled(&mut self, devices: &[String], after: Duration) -> bool {
        let io: u64 = devices.iter().filter_map(|d| procfs::block_io(d)).map(|(moved, _)| moved).sum();
        if self.io_seen != Some(io) {
            self.io_seen = Some(io);
            self.moved();
        }
        self.last.elapsed() >= after
    }
}

fn describe(p: &ProcInfo) -> String {
    let wchan = if p.wchan.is_empty() || p.wchan == "0" { String::new() } else { format!(", waiting in {}", p.wchan) };
    let inner = match p.ns_pid {
        Some(n) if n != p.pid => format!(", PID {n} in the worker's namespace"),
        _ => String::new(),
    };
    format!("pid {} ({}{inner}): {}{}", p.pid, p.comm, p.describe_state(), wchan)
}

fn describe_device(name: &str) -> String {
    let backing = crate::sys::loopdev::backing_file(name).map(|b| format!(" (backed by {b})")).unwrap_or_default();
    let inflight = procfs::block_io(name).map(|(_, f)| format!(", {f} I/O requests in flight")).unwrap_or_default();
    format!("/dev/{name}{backing}{inflight}")
}

/// Report the stall, tear the worker's namespace down, and return the whole message for the user, ending with
/// `target`: what state the target is in.
pub fn stalled(worker: &mut Worker, step: Option<Step>, devices: &[String], after: Duration, target: &str) -> String {
    let ns = procfs::pid_namespace(worker.pid());
    let before = ns.as_deref().map(procfs::processes_in_namespace).unwrap_or_default();
    let mut msg = format!(
        "stalled: no byte moved for {} s while {}.",
        after.as_secs(),
        step.map_or("starting".to_string(), |s| s.describe().to_lowercase())
    );
    for p in &before {
        msg.push_str(&format!("\n  {}", describe(p)));
    }
    for d in devices {
        msg.push_str(&format!("\n  device: {}", describe_device(d)));
    }
    msg.push_str(&teardown(worker));
    msg.push_str("\nTarget state: ");
    msg.push_str(target);
    msg
}

/// Kill the worker (PID 1: every process of its namespace dies with it, its mounts and autoclear loops go),
/// wait a little, and say whether anything stayed in the kernel.
pub fn teardown(worker: &mut Worker) -> String {
    let ns = procfs::pid_namespace(worker.pid());
    worker.signal(nix::sys::signal::Signal::SIGKILL);
    let mut gone = worker.wait_for(Duration::from_secs(3)).is_some();
    let aborted = if gone { None } else { worker.abort_fuse_if_stuck() };
    if aborted.is_some() {
        gone = worker.wait_for(Duration::from_secs(1)).is_some();
    }
    let left = ns.as_deref().map(procfs::processes_in_namespace).unwrap_or_default();
    if gone && left.is_empty() {
        return "\nThe worker's namespace is torn down: its mounts and loop devices are gone.".to_string();
    }
    let mut msg =
        "\nStill in the kernel after the teardown (they end when their I/O completes or the device is removed):"
            .to_string();
    for p in &left {
        msg.push_str(&format!("\n  {}", describe(p)));
    }
    if let Some(a) = aborted {
        msg.push_str(&format!("\n{a}"));
    }
    msg.push_str("\nTheir mounts are private to the worker's namespace, invisible to the host, and go away with them.");
    msg
}
