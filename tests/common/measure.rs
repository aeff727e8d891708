//! Measured writes of hostile inputs (tests/hostile_iso.rs, tests/hostile_wim.rs): `woesafe write` to an existing
//! 2 GiB sparse image file with marks at both ends, reaped with wait4 for the peak RSS of the largest process
//! (woesafe and every descendant it waited for: the worker and its helpers) and timed.
//!
//! The peak RSS of a forked child starts at its parent's RSS at the fork (the page tables are copied before the
//! exec), and a test process holds the hostile images it built: so the write is started from a fresh run of the
//! test binary (`test` names the calling test, whose first line, `measure_here()`, hands over at once), whose
//! few MiB are all a fork copies.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{bin, text};

/// Set in a re-run of the test binary that only measures one write (see `measure_here`).
const MEASURE_ENV: &str = "WOESAFE_TEST_MEASURE_WRITE";

/// What a write must not change: size, allocated blocks, modification time, and marks at both ends.
pub fn target_state(p: &Path) -> (u64, u64, i64, i64, Vec<u8>) {
    let m = std::fs::metadata(p).unwrap();
    let f = std::fs::File::open(p).unwrap();
    let mut marks = vec![0u8; 64];
    f.read_exact_at(&mut marks[..32], 0).unwrap();
    f.read_exact_at(&mut marks[32..], m.len() - 4096).unwrap();
    (m.len(), m.blocks(), m.mtime(), m.mtime_nsec(), marks)
}

/// An existing 2 GiB sparse image file with marks at both ends.
pub fn sparse_target(dir: &Path) -> PathBuf {
    let p = dir.join("target.img");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(2 << 30).unwrap();
    f.write_all_at(b"precious data, do not erase....", 0).unwrap();
    f.write_all_at(b"more precious data, keep it too.", (2 << 30) - 4096).unwrap();
    f.sync_all().unwrap();
    p
}

/// Runs `woesafe write ISO TARGET --yes ARGS` from a fresh run of this test binary: (exit code, stderr, wall
/// time, peak RSS in KiB). One at a time: on a 2-core machine, parallel writes would measure each other.
pub fn run_write(test: &str, iso: &Path, target: &Path, args: &[&str]) -> (Option<i32>, String, Duration, u64) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let t = Instant::now();
    let spec = [iso.to_str().unwrap(), target.to_str().unwrap()].iter().chain(args).copied().collect::<Vec<_>>();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(MEASURE_ENV, spec.join("\n"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let Some(line) = stdout.lines().find_map(|l| Some(l.split_once("MEASURED ")?.1)) else {
        panic!("{test}: the measuring run said nothing:\n{}", text(&out));
    };
    let field = |name: &str| -> i64 {
        line.split_whitespace().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok()).unwrap()
    };
    let code = Some(field("code")).filter(|&c| c >= 0).map(|c| c as i32);
    (code, stderr, took, field("rss_kib") as u64)
}

/// In the re-run `run_write` starts: run the write, check it left no work directory, print what it measured,
/// and end the process (the test itself does not run). Otherwise nothing.
pub fn measure_here() {
    use std::process::{Command, Stdio};
    let Ok(spec) = std::env::var(MEASURE_ENV) else { return };
    let args: Vec<&str> = spec.split('\n').collect();
    let child = Command::new(bin())
        .args(["write", args[0], args[1], "--yes"])
        .args(&args[2..])
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child (never waited on through `child`), with valid pointers.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    let dir = PathBuf::from(format!("/run/woesafe.{}", child.id()));
    assert!(!dir.exists(), "woesafe left its work directory {} behind", dir.display());
    println!("MEASURED code={code} rss_kib={}", usage.ru_maxrss);
    std::process::exit(0);
}

/// A measured write of `iso` to a new 2 GiB image file beside it: exit `want`, `expect` in its messages, at
/// most 10 s and 256 MiB; when refused (exit 3), the target as it was. Returns the peak RSS in KiB.
pub fn assert_write(test: &str, iso: &Path, args: &[&str], want: i32, expect: &[&str]) -> u64 {
    let target = sparse_target(iso.parent().unwrap());
    let before = target_state(&target);
    let (code, err, took, rss_kib) = run_write(test, iso, &target, args);
    eprintln!("{test}: exit {code:?} in {took:?}, peak RSS {} MiB\n{err}", rss_kib / 1024);
    assert_eq!(code, Some(want), "{test}: {err}");
    for e in expect {
        assert!(err.contains(e), "{test}: expected {e:?} in\n{err}");
    }
    if want == 3 {
        assert_eq!(target_state(&target), before, "{test}: the target changed");
    }
    assert!(took < Duration::from_secs(10), "{test}: took {took:?}");
    assert!(rss_kib <= 256 * 1024, "{test}: peak RSS {} MiB", rss_kib / 1024);
    std::fs::remove_file(&target).unwrap();
    rss_kib
}
