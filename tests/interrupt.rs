//! Stopping a write: Ctrl-C and SIGTERM end it with a statement of the target's state and nothing left on the
//! host; a SIGKILL of the supervisor takes the worker, its mounts and loop devices with it (the full matrix of
//! signals × phases is the next issue's).

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn start_paused(iso: &std::path::Path, image: &std::path::Path, step: &str) -> std::process::Child {
    Command::new(bin())
        .args(["write", iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "600M", "--yes"])
        .args(["--target-driver", "userspace", "--source-driver", "userspace"])
        .env("WOESAFE_TEST_PAUSE_AT", format!("{step}:30000"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Follow the child's stderr until a line contains `marker` (the step's description); returns a receiver
/// that yields the rest of stderr.
fn wait_for_line(child: &mut std::process::Child, marker: &str) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("the write never reached {marker:?}"));
        if line.contains(marker) {
            return rx;
        }
    }
}

fn wait_clean(dir: &std::path::Path, before: &HostState) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = host_state(dir);
        if now.mountinfo == before.mountinfo && now.loops_under == before.loops_under {
            return;
        }
        assert!(Instant::now() < deadline, "host state not restored:\nbefore {before:?}\nnow {now:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigint_and_sigterm_stop_cleanly_with_the_target_state() {
    if !need_root("sigint_and_sigterm_stop_cleanly_with_the_target_state") {
        return;
    }
    let fx = fixture();
    for (sig, code, step, line, state) in [
        // The userspace writer writes directories and FATs last: stopped while copying, the filesystem is empty.
        (libc::SIGINT, 130, "copy", "Copying files", "empty filesystem written, no files"),
        (libc::SIGTERM, 143, "format", "Formatting FAT32", "no filesystem yet"),
        (libc::SIGHUP, 129, "boot-bios", "Installing BIOS boot code", "boot code incomplete"),
    ] {
        let work = tempfile::tempdir().unwrap();
        let image = work.path().join("out.img");
        let before = host_state(work.path());
        let mut child = start_paused(&fx.iso, &image, step);
        let pid = child.id() as i32;
        let rest = wait_for_line(&mut child, line);
        assert!(!host_state(work.path()).loops_under.is_empty(), "the write should hold a loop device now");
        // SAFETY: kill on the pid of our own child.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
        let out = child.wait_with_output().unwrap();
        let err: Vec<String> = rest.iter().collect();
        let err = err.join("\n");
        assert_eq!(out.status.code(), Some(code), "signal {sig}: {err}");
        assert!(err.contains(state), "signal {sig}: expected {state:?} in\n{err}");
        wait_clean(work.path(), &before);
        assert!(!std::path::Path::new(&format!("/run/woesafe.{pid}")).exists(), "work dir left behind");
    }
}

#[test]
fn sigkill_of_the_supervisor_takes_the_worker_with_it() {
    if !need_root("sigkill_of_the_supervisor_takes_the_worker_with_it") {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("out.img");
    let before = host_state(work.path());
    let mut child = start_paused(&fx.iso, &image, "copy");
    let pid = child.id() as i32;
    let _rest = wait_for_line(&mut child, "Copying files");
    assert!(!host_state(work.path()).loops_under.is_empty(), "the write should hold a loop device now");
    // SAFETY: kill on the pid of our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    child.wait().unwrap();
    // The worker (parent-death signal) and its namespace die; autoclear loops detach by themselves.
    wait_clean(work.path(), &before);
    // At most an empty, recognisably named directory remains.
    let dir = std::path::PathBuf::from(format!("/run/woesafe.{pid}"));
    if dir.exists() {
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "{} is not empty", dir.display());
        std::fs::remove_dir(&dir).unwrap();
    }
    let ps = Command::new("ps").args(["-eo", "pid,args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(!ps.lines().any(|l| l.contains(image.to_str().unwrap())), "a process still works on the image:\n{ps}");
}
