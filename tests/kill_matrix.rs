//! Every way a write can be stopped × every phase: SIGINT, SIGTERM, SIGHUP (orderly stop), SIGKILL of the
//! supervisor and SIGKILL of the worker, while wiping (before partitioning), formatting, mounting, copying,
//! installing boot code and flushing. Each phase is reached deterministically with the test-only pause hook
//! (WOESAFE_TEST_PAUSE_AT, read only by this test). After each case: the host's mount table is identical, no
//! loop device is backed by the test's files, no process of the worker's PID namespace is left, and no
//! directory of ours is left (after a SIGKILL of the supervisor at most an empty one, which `recover` removes).

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
enum Kill {
    Signal(i32),
    Supervisor,
    Worker,
}

/// (pause-hook step name, the line woesafe prints when it enters the step)
const PHASES: [(&str, &str); 6] = [
    ("wipe", "Wiping old signatures"),
    ("format", "Formatting"),
    ("mount", "Opening the filesystems"),
    ("copy", "Copying files"),
    ("boot-bios", "Installing BIOS boot code"),
    ("flush", "Flushing to the device"),
];

/// The target state woesafe must report (README's table): after an orderly stop it knows exactly what it did;
/// after the worker was killed it says what the step may have left.
fn expected_state(step: &str, orderly: bool, driver: &str, fs: &str) -> &'static str {
    match (step, orderly) {
        ("prepare", _) => "the target was not changed",
        ("wipe", true) => "the target was not changed",
        ("wipe", false) => "old signatures were wiped",
        ("format", _) => "partition table written, no filesystem yet",
        ("mount", _) => "partition table and empty filesystem written, no files",
        // The userspace writer writes directories and FATs last: the filesystem still reads as empty.
        ("copy", true) if driver == "userspace" && fs == "fat32" => {
            "partition table and empty filesystem written, no files"
        }
        ("copy", _) => "partition table and filesystem written, files incomplete",
        ("boot-bios", _) | ("boot-uefi", _) => "all files written, boot code incomplete",
        ("unmount", _) => "files and boot code written but not all flushed",
        ("flush", _) => "files and boot code written but not all flushed",
        _ => unreachable!("unknown step {step}"),
    }
}

fn processes_in(ns: &str) -> Vec<String> {
    woesafe::sys::procfs::processes_in_namespace(ns)
        .iter()
        .map(|p| format!("{} {} {}", p.pid, p.comm, p.state))
        .collect()
}

fn run_case(fx: &Fixture, kill: Kill, step: &str, line: &str, driver: &str, fs: &str) {
    run_case_at(fx, kill, step, line, driver, fs, "600M", true);
}

/// A case in `step`, killed when woesafe prints `line`: paused there by the test hook (`pause`), or killed
/// while the step runs.
#[allow(clippy::too_many_arguments)]
fn run_case_at(fx: &Fixture, kill: Kill, step: &str, line: &str, driver: &str, fs: &str, size: &str, pause: bool) {
    let case = format!("{kill:?} during {step} at {line:?} ({driver} drivers, {fs})");
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("out.img");
    let before = host_state(work.path());
    let pause = if pause { format!("{step}:30000") } else { String::new() };
    let mut run = Run::start(
        &[
            "write",
            fx.iso.to_str().unwrap(),
            image.to_str().unwrap(),
            "--size",
            size,
            "--yes",
            "--source-driver",
            driver,
            "--target-driver",
            driver,
            "--fs",
            fs,
        ],
        // The scratch space (an unnamed file) goes in the test's directory, so a leaked loop on it would show.
        &[("WOESAFE_TEST_PAUSE_AT", pause.as_str()), ("TMPDIR", work.path().to_str().unwrap())],
    );
    let sup = run.child.id();
    run.wait_line(line, Duration::from_secs(60));
    let worker = worker_of(sup).unwrap_or_else(|| panic!("{case}: no worker found"));
    let ns = woesafe::sys::procfs::pid_namespace(worker).expect("worker's pid namespace");
    let target = match kill {
        Kill::Worker => worker,
        _ => sup as i32,
    };
    let sig = match kill {
        Kill::Signal(s) => s,
        _ => libc::SIGKILL,
    };
    // SAFETY: kill on a process this test started (or its worker).
    assert_eq!(unsafe { libc::kill(target, sig) }, 0, "{case}");
    let status = run.wait_exit(Duration::from_secs(30));
    let err = format!("{}\n", run.text());
    use std::os::unix::process::ExitStatusExt;
    match kill {
        Kill::Signal(s) => {
            assert_eq!(status.code(), Some(128 + s), "{case}:\n{err}");
            assert!(err.contains("stopped by"), "{case}: no statement of the stop:\n{err}");
            assert!(err.contains("Target state:"), "{case}: no target state:\n{err}");
            assert!(err.contains("the worker unmounted and detached everything"), "{case}: not orderly:\n{err}");
            let want = expected_state(step, true, driver, fs);
            assert!(err.contains(&format!("Target state: {want}")), "{case}: expected {want:?}:\n{err}");
        }
        Kill::Supervisor => assert_eq!(status.signal(), Some(libc::SIGKILL), "{case}"),
        Kill::Worker => {
            assert_eq!(status.code(), Some(1), "{case}:\n{err}");
            assert!(err.contains("the worker ended unexpectedly"), "{case}:\n{err}");
            let want = expected_state(step, false, driver, fs);
            assert!(err.contains(&format!("Target state: {want}")), "{case}: expected {want:?}:\n{err}");
        }
    }
    // Nothing was written yet: a new image file the supervisor created is removed again (a SIGKILLed
    // supervisor cannot).
    if step == "prepare" && !matches!(kill, Kill::Supervisor) {
        assert!(!image.exists(), "{case}: the untouched new image file was left:\n{err}");
    }
    // Nothing left: mounts, loops, processes of the worker's namespace.
    let deadline = Instant::now() + Duration::from_secs(10) * time_scale();
    loop {
        let now = host_state(work.path());
        let left = processes_in(&ns);
        if now == before && left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{case}: left behind:\n{now:?}\nprocesses: {left:?}\n{err}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let dir = format!("/run/woesafe.{sup}");
    match kill {
        Kill::Supervisor => {
            if Path::new(&dir).exists() {
                assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "{case}: {dir} is not empty");
                std::fs::remove_dir(&dir).unwrap();
            }
        }
        _ => assert!(!Path::new(&dir).exists(), "{case}: {dir} left behind"),
    }
}

fn matrix(kill: Kill, name: &str) {
    if !need_root(name) {
        return;
    }
    let fx = fixture();
    for (step, line) in PHASES {
        run_case(&fx, kill, step, line, "userspace", "fat32");
    }
}

/// With scratch space (the Windows 7 fixture: its UEFI loader is extracted from install.wim in scratch space),
/// stopped while preparing, wiping or copying: the right target state, no untouched new image file left, and
/// the scratch file, its loop device and its mount gone whatever the way of stopping.
#[test]
fn every_kill_while_preparing() {
    if !need_root("every_kill_while_preparing") {
        return;
    }
    let fx = fixture_with("win7", &["--win7"]);
    let kills = [Kill::Signal(libc::SIGINT), Kill::Signal(libc::SIGTERM), Kill::Supervisor, Kill::Worker];
    // At the start of Prepare, and later while the scratch filesystem is mounted (it holds the extracted loader
    // until the copy is done).
    let phases = [("prepare", "Preparing files in scratch space"), PHASES[0], PHASES[3]];
    for kill in kills {
        for (step, line) in phases {
            run_case(&fx, kill, step, line, "userspace", "fat32");
        }
    }
}

/// While an install.wim over 4 GiB is split onto the stick as it is copied (killed at the first progress line,
/// printed every 10 % or so: the other files are 30 MiB, so it falls well inside install.swm): the right target
/// state, and nothing left.
#[test]
fn every_kill_while_the_split_streams() {
    if !need_root("every_kill_while_the_split_streams") {
        return;
    }
    let fx = fixture_with("win-sb-bigwim", &["--secureboot", "--big-wim-mib", "4400"]);
    let kills = [Kill::Signal(libc::SIGINT), Kill::Signal(libc::SIGTERM), Kill::Supervisor, Kill::Worker];
    for kill in kills {
        run_case_at(&fx, kill, "copy", "%  ", "userspace", "fat32", "6G", false);
    }
}

/// While a solid install.esd is re-packed (wimlib-imagex export running in the worker's PID namespace, reading
/// the ESD through a read-only loop device over the ISO and writing into scratch space): the target untouched,
/// no wimlib process, no scratch or window loop device, no mount left.
#[test]
fn every_kill_while_repacking() {
    if !need_root("every_kill_while_repacking") {
        return;
    }
    let fx = fixture_with("win-sb-esd", &["--secureboot", "--esd-mib", "4400"]);
    let iso = std::fs::canonicalize(&fx.iso).unwrap().to_string_lossy().into_owned();
    let kills = [Kill::Signal(libc::SIGINT), Kill::Signal(libc::SIGTERM), Kill::Supervisor, Kill::Worker];
    for kill in kills {
        // At the re-pack's first progress line: wimlib-imagex is running then.
        run_case_at(&fx, kill, "prepare", "%  ", "userspace", "fat32", "6G", false);
        let deadline = Instant::now() + Duration::from_secs(10) * time_scale();
        while woesafe::sys::loopdev::attached().iter().any(|(_, b)| *b == iso) {
            assert!(Instant::now() < deadline, "{kill:?}: a loop device over the ISO was left");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// All five ways of stopping, in all six phases (with NTFS also while its UEFI bridge is built and while
/// ntfs-3g is unmounted and waited for).
fn every_kill_in_every_phase(driver: &str, fs: &str) {
    let fx = fixture();
    let kills = [
        Kill::Signal(libc::SIGINT),
        Kill::Signal(libc::SIGTERM),
        Kill::Signal(libc::SIGHUP),
        Kill::Supervisor,
        Kill::Worker,
    ];
    let mut phases = PHASES.to_vec();
    if fs == "ntfs" {
        phases.extend([("boot-uefi", "Checking the UEFI loader"), ("unmount", "Closing the filesystems")]);
    }
    for kill in kills {
        for &(step, line) in &phases {
            run_case(&fx, kill, step, line, driver, fs);
        }
    }
}

/// The same cases for the kernel drivers (udf source and vfat target mounted in the worker's namespace), where
/// this kernel offers them.
#[test]
fn kernel_drivers_every_kill_in_every_phase() {
    let name = "kernel_drivers_every_kill_in_every_phase";
    if !need_root(name) {
        return;
    }
    if !kernel_has(name, &["vfat", "udf"]) {
        return;
    }
    every_kill_in_every_phase("kernel", "fat32");
}

/// NTFS through ntfs-3g: its FUSE daemon runs inside the worker's namespaces. Every way of stopping, in every
/// phase, must leave no daemon (in D state or otherwise), no mount and no loop device: the worker unmounts while
/// the daemon lives, and when the worker is killed the supervisor holds the mount namespace until the daemon
/// is gone (the fuseblk deadlock of DESIGN.md).
#[test]
fn ntfs_every_kill_in_every_phase() {
    let name = "ntfs_every_kill_in_every_phase";
    if !need_root(name) {
        return;
    }
    every_kill_in_every_phase("userspace", "ntfs");
}

#[test]
fn sigint_in_every_phase() {
    matrix(Kill::Signal(libc::SIGINT), "sigint_in_every_phase");
}

#[test]
fn sigterm_in_every_phase() {
    matrix(Kill::Signal(libc::SIGTERM), "sigterm_in_every_phase");
}

#[test]
fn sighup_in_every_phase() {
    matrix(Kill::Signal(libc::SIGHUP), "sighup_in_every_phase");
}

#[test]
fn sigquit_while_copying() {
    if !need_root("sigquit_while_copying") {
        return;
    }
    run_case(&fixture(), Kill::Signal(libc::SIGQUIT), "copy", "Copying files", "userspace", "fat32");
}

#[test]
fn sigkill_of_the_supervisor_in_every_phase() {
    matrix(Kill::Supervisor, "sigkill_of_the_supervisor_in_every_phase");
}

#[test]
fn sigkill_of_the_worker_in_every_phase() {
    matrix(Kill::Worker, "sigkill_of_the_worker_in_every_phase");
}

/// SIGPIPE: with stderr a closed pipe (`woesafe ... 2>&1 | head -1` after head exits), woesafe must neither die
/// nor panic halfway; it finishes the write and cleans up.
#[test]
fn closed_stderr_does_not_break_the_write() {
    if !need_root("closed_stderr_does_not_break_the_write") {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("out.img");
    let before = host_state(work.path());
    let mut child = std::process::Command::new(bin())
        .args(["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "600M", "--yes"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(before, host_state(work.path()));
    let out = std::process::Command::new("sfdisk").arg("--json").arg(&image).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"type\": \"c\""), "{}", text(&out));
}

/// A signal that arrives while the worker is still starting (before its handlers exist) must not be lost:
/// PID 1 of a namespace drops signals it has no handler for, so the worker starts with them blocked. The
/// moment is widened with a test-only start delay. The write stops before touching anything, and a new image
/// file is never created.
#[test]
fn signal_during_startup_is_never_lost() {
    if !need_root("signal_during_startup_is_never_lost") {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("never.img");
    let mut run = Run::start(
        &["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "600M", "--yes"],
        &[("WOESAFE_TEST_WORKER_START_DELAY_MS", "1500")],
    );
    let sup = run.child.id();
    let deadline = Instant::now() + Duration::from_secs(10) * time_scale();
    while worker_of(sup).is_none() {
        assert!(Instant::now() < deadline, "no worker");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200)); // inside the delay: the worker has no handlers yet
    // SAFETY: kill on our own child.
    assert_eq!(unsafe { libc::kill(sup as i32, libc::SIGINT) }, 0);
    let status = run.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(130), "the signal was lost:\n{}", run.text());
    assert!(run.text().contains("Target state: the target was not changed"), "{}", run.text());
    assert!(!image.exists(), "a stopped write created the image:\n{}", run.text());
}
