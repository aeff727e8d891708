//! Hung devices: the target image lives on a FUSE filesystem (bindfs) whose daemon the test stops with SIGSTOP
//! in the middle of the write, so the worker blocks in the kernel.
//! - The stall watchdog notices within the stall timeout + 5 s, names the stuck process, its state and wait
//!   channel and the device, tears the worker down and exits 4.
//! - A first Ctrl-C cannot stop a worker stuck in the kernel; the second tears its namespace down at once.
//!
//! In both, once the daemon runs again everything is released and nothing is left on the host. The FUSE mount
//! lives in a private mount namespace of the test's own thread, so the host's mount table never sees it.

mod common;
use common::*;
use nix::sys::signal::{Signal, kill};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A bindfs mount in a private mount namespace of the calling thread. Dropping it lets the daemon run again
/// and unmounts it while the daemon is alive (a FUSE daemon holding a mount is never killed).
struct FuseDir {
    mnt: PathBuf,
    daemon: std::process::Child,
    _work: tempfile::TempDir,
}

impl FuseDir {
    fn new() -> FuseDir {
        private_mount_namespace();
        let work = tempfile::tempdir().unwrap();
        let (src, mnt) = (work.path().join("src"), work.path().join("mnt"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        let daemon = Command::new("bindfs").arg("-f").arg(&src).arg(&mnt).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap().contains(mnt.to_str().unwrap()) {
            assert!(Instant::now() < deadline, "bindfs did not mount");
            std::thread::sleep(Duration::from_millis(20));
        }
        FuseDir { mnt, daemon, _work: work }
    }

    fn daemon(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.daemon.id() as i32)
    }
}

impl Drop for FuseDir {
    fn drop(&mut self) {
        let _ = kill(self.daemon(), Signal::SIGCONT);
        let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The tests of this file stop FUSE daemons and look for workers system-wide: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn usable(name: &str) -> bool {
    if !need_root(name) {
        return false;
    }
    if !have("bindfs") || !Path::new("/dev/fuse").exists() {
        woesafe::report_skip(name, "bindfs or /dev/fuse missing");
        return false;
    }
    true
}

/// Start a write onto the FUSE directory and stop the daemon while the copy is paused at its start.
fn start_and_hang(fuse: &FuseDir, extra: &[&str]) -> (Run, Instant) {
    start_and_hang_at(fuse, extra, "copy", "Copying files")
}

/// The same, stopping the daemon while the write is paused at the start of `step`.
fn start_and_hang_at(fuse: &FuseDir, extra: &[&str], step: &str, line: &str) -> (Run, Instant) {
    let fx = fixture();
    let image = fuse.mnt.join("out.img");
    let mut args = vec!["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "600M", "--yes"];
    args.extend_from_slice(extra);
    let pause = format!("{step}:1500");
    let mut run = Run::start(&args, &[("WOESAFE_TEST_PAUSE_AT", pause.as_str())]);
    run.wait_line(line, Duration::from_secs(60));
    kill(fuse.daemon(), Signal::SIGSTOP).unwrap();
    (run, Instant::now())
}

/// After the daemon runs again: the loops detach, no worker is left, the FUSE mount can go.
fn assert_released(fuse: &FuseDir, sup: u32) {
    kill(fuse.daemon(), Signal::SIGCONT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !host_state(fuse.mnt.parent().unwrap()).loops_under.is_empty() {
        assert!(Instant::now() < deadline, "loop devices on the FUSE image stayed attached");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps = String::from_utf8(Command::new("ps").args(["-eo", "pid,stat,args"]).output().unwrap().stdout).unwrap();
        // Workers of this build only: other checkouts on the machine may be running their own.
        let ours = format!("{} __woesafe_worker", bin().display());
        if !ps.lines().any(|l| l.contains(&ours) && !l.contains(" Z")) {
            break;
        }
        assert!(Instant::now() < deadline, "a worker is left:\n{ps}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!Path::new(&format!("/run/woesafe.{sup}")).exists(), "work directory left");
}

#[test]
fn stopped_fuse_daemon_is_diagnosed_and_released() {
    let name = "stopped_fuse_daemon_is_diagnosed_and_released";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !usable(name) {
        return;
    }
    let host_before = host_state(Path::new("/"));
    let fuse = FuseDir::new();
    let (mut run, stopped_at) = start_and_hang(&fuse, &["--stall-timeout", "3"]);
    let fired = run.wait_line("stalled: no byte moved", Duration::from_secs(15));
    assert!(
        fired.duration_since(stopped_at) <= Duration::from_secs(1 + 3 + 5),
        "watchdog fired after {:?} (pause 1.5 s + timeout 3 s + 5 s allowed)",
        fired.duration_since(stopped_at)
    );
    run.wait_line("Target state", Duration::from_secs(15));
    let report = run.text();
    assert!(report.contains("while copying files"), "{report}");
    assert!(report.contains("(woesafe, PID 1 in the worker's namespace)"), "the worker must be named:\n{report}");
    assert!(
        report.contains("uninterruptible sleep (D)") || report.contains("sleeping (S)"),
        "the stuck process's state must be named:\n{report}"
    );
    assert!(report.contains("waiting in "), "its wait channel must be named:\n{report}");
    assert!(report.contains(&format!("backed by {}", fuse.mnt.join("out.img").display())), "device:\n{report}");
    // woesafe's own handle on the image lives on the stuck filesystem too: its exit may wait for the daemon.
    kill(fuse.daemon(), Signal::SIGCONT).unwrap();
    let status = run.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(4), "{report}");
    assert_released(&fuse, run.child.id());
    drop(fuse);
    assert_eq!(host_before.mountinfo, host_state(Path::new("/")).mountinfo, "the host's mount table changed");
}

#[test]
fn second_ctrl_c_tears_a_stuck_worker_down() {
    let name = "second_ctrl_c_tears_a_stuck_worker_down";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !usable(name) {
        return;
    }
    let fuse = FuseDir::new();
    let (mut run, _) = start_and_hang(&fuse, &["--stall-timeout", "600"]);
    std::thread::sleep(Duration::from_millis(2500)); // the pause ends; the worker blocks on the stopped daemon
    let sup = nix::unistd::Pid::from_raw(run.child.id() as i32);
    kill(sup, Signal::SIGINT).unwrap();
    run.wait_line("Press Ctrl-C again", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    assert!(run.child.try_wait().unwrap().is_none(), "a worker stuck in the kernel cannot stop by itself");
    kill(sup, Signal::SIGINT).unwrap();
    let status = run.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(130), "{}", run.text());
    assert!(run.text().contains("stopped at once by SIGINT"), "{}", run.text());
    assert!(run.text().contains("Target state:"), "{}", run.text());
    assert_released(&fuse, run.child.id());
}

/// The watchdog is not about copying only: stuck while formatting, it reports that step and what is stuck.
#[test]
fn stall_while_formatting_is_reported() {
    let name = "stall_while_formatting_is_reported";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !usable(name) {
        return;
    }
    let fuse = FuseDir::new();
    let (mut run, stopped_at) = start_and_hang_at(&fuse, &["--stall-timeout", "3"], "format", "Formatting");
    let fired = run.wait_line("stalled: no byte moved", Duration::from_secs(20));
    assert!(
        fired.duration_since(stopped_at) <= Duration::from_secs(1 + 3 + 5),
        "{:?}",
        fired.duration_since(stopped_at)
    );
    run.wait_line("Target state", Duration::from_secs(15));
    let report = run.text();
    assert!(report.contains("while formatting the filesystem"), "{report}");
    assert!(report.contains("uninterruptible sleep (D)") || report.contains("sleeping (S)"), "{report}");
    kill(fuse.daemon(), Signal::SIGCONT).unwrap();
    let status = run.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(4), "{report}");
    assert_released(&fuse, run.child.id());
}

/// NTFS through ntfs-3g, stalled while copying: the daemon itself is stuck in the kernel on the hung device,
/// so the worker cannot be reaped before woesafe exits. Its FUSE connection is aborted first, so once the
/// device moves again the daemon ends instead of dead-locking in its own unmount (DESIGN.md), and nothing is
/// left: no daemon, no loop device.
#[test]
fn stall_with_ntfs_leaves_no_daemon() {
    let name = "stall_with_ntfs_leaves_no_daemon";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !usable(name) || !have("ntfs-3g") {
        return;
    }
    let fuse = FuseDir::new();
    let (mut run, _) = start_and_hang(&fuse, &["--stall-timeout", "3", "--fs", "ntfs"]);
    run.wait_line("stalled: no byte moved", Duration::from_secs(30));
    run.wait_line("Target state", Duration::from_secs(20));
    let status = run.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(4), "{}", run.text());
    // Stuck in the kernel, the worker could not be reaped: its connection must have been aborted.
    assert!(
        run.text().contains("was aborted, so its daemon ends when its I/O does")
            || run.text().contains("The worker's namespace is torn down"),
        "{}",
        run.text()
    );
    let daemons = || {
        let ps = String::from_utf8(Command::new("ps").args(["-eo", "pid,stat,args"]).output().unwrap().stdout).unwrap();
        ps.lines().filter(|l| l.contains("ntfs-3g") && l.contains("no_detach")).map(str::to_string).collect::<Vec<_>>()
    };
    assert_released(&fuse, run.child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemons().is_empty() {
        assert!(Instant::now() < deadline, "ntfs-3g is left: {:?}\n{}", daemons(), run.text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `woesafe verify` on a stick that hangs under it: the same watchdog as a write (named step, processes,
/// teardown, exit 4), and the report says the stick was not changed (verify only reads).
#[test]
fn stall_while_verifying_is_reported() {
    let name = "stall_while_verifying_is_reported";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !usable(name) {
        return;
    }
    let fuse = FuseDir::new();
    let fx = fixture();
    let image = fuse.mnt.join("out.img");
    write_fixture(&fx.iso, &image, "600M", &[]);
    let args = ["verify", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--stall-timeout", "3"];
    let mut run = Run::start(&args, &[("WOESAFE_TEST_PAUSE_AT", "verify:1500")]);
    run.wait_line("Verifying", Duration::from_secs(30));
    kill(fuse.daemon(), Signal::SIGSTOP).unwrap();
    let stopped_at = Instant::now();
    let fired = run.wait_line("stalled: no byte moved", Duration::from_secs(20));
    assert!(
        fired.duration_since(stopped_at) <= Duration::from_secs(2 + 3 + 5),
        "{:?}",
        fired.duration_since(stopped_at)
    );
    run.wait_line("Target state", Duration::from_secs(15));
    let report = run.text();
    assert!(report.contains("while verifying"), "{report}");
    assert!(report.contains("the stick was not changed"), "{report}");
    kill(fuse.daemon(), Signal::SIGCONT).unwrap();
    let status = run.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(4), "{report}");
    assert_released(&fuse, run.child.id());
}
