//! `woesafe recover` against real leftovers, recreated inside a throwaway mount namespace of the test's own
//! thread (tmpfs over /media, /tmp and /run there), so the machine's own mount table is never touched:
//! - WoeUSB 3.x/4.x: a source ISO mount (fuseiso stands in for the kernel's udf) and a target filesystem
//!   (ext4) on a plain, non-autoclear loop device, under /media/woeusb_{source,target}_<epoch>_<pid>;
//! - WoeUSB 5.x: a target mount $TMPDIR/woeusb-target-YYYYMMDD-HHMMSS-<Weekday>.XXXXXX and its temp
//!   directory ($TMPDIR is a private tmpfs of the test: /tmp itself may hold the checkout);
//! - a daemonised FUSE helper (fuseiso) keeping a private mount namespace alive after its parent shell exited;
//! - a loop device whose backing file was deleted; woesafe's debris after a SIGKILL (/run/woesafe.<pid>);
//! - unrelated mounts, directories and loop devices, which must stay untouched.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const DEAD_PID: &str = "4190001"; // above pid_max: no process can have it

/// recover looks at the whole system: the tests of this file run one at a time so that one test's
/// leftovers are not another's.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn thread_mounts() -> String {
    std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap()
}

/// Loop devices the test attached with losetup (plain, non-autoclear: exactly what old tools leave); detached
/// when the test ends, whatever happens.
struct Loops(Vec<(String, PathBuf)>);
impl Drop for Loops {
    fn drop(&mut self) {
        for (dev, backing) in &self.0 {
            let name = dev.trim_start_matches("/dev/");
            if let Some(b) = woesafe::sys::loopdev::backing_file(name)
                && b.starts_with(backing.to_str().unwrap())
            {
                let _ = Command::new("losetup").arg("-d").arg(dev).status();
            }
        }
    }
}

/// The pid of the fuseiso daemon serving `mount_point`.
fn fuseiso_pid(mount_point: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if comm.trim() == "fuseiso" && String::from_utf8_lossy(&cmd).trim_end_matches('\0').ends_with(mount_point) {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no fuseiso daemon for {mount_point}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The test's holder process, killed when the test ends.
struct Holder(std::process::Child);
impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (used, du) of a directory's filesystem: statvfs's used bytes and `du -sx` of the directory.
fn df_du(dir: &str) -> (u64, u64) {
    let s = nix::sys::statvfs::statvfs(dir).unwrap();
    let used = (s.blocks() - s.blocks_free()) as u64 * s.fragment_size() as u64;
    let du: u64 = sh(&format!("du -sx --block-size=1 {dir} | cut -f1")).parse().unwrap();
    (used, du)
}

/// A FUSE daemon holding a mount: unmounted in its namespace (never killed) when the test ends.
struct Daemon(Option<i32>, String);
impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(pid) = self.0
            && Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = Command::new("nsenter").args(["-t", &pid.to_string(), "-m", "umount", "-l", &self.1]).status();
        }
    }
}

/// Root, a /media to cover with a private tmpfs, and the tools a test uses; otherwise a visible skip.
fn can_run(name: &str, tools: &[&str]) -> bool {
    if !need_root(name) {
        return false;
    }
    if !Path::new("/media").is_dir() {
        woesafe::report_skip(name, "this machine has no /media to cover with a private tmpfs");
        return false;
    }
    if let Some(tool) = tools.iter().find(|t| !have(t)) {
        woesafe::report_skip(name, &format!("{tool} not installed"));
        return false;
    }
    true
}

#[test]
fn recover_finds_and_cleans_every_leftover_and_nothing_else() {
    let name = "recover_finds_and_cleans_every_leftover_and_nothing_else";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run(name, &["fuseiso", "mkfs.ext4", "losetup", "nsenter"]) {
        return;
    }
    let fx = fixture();
    let host_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    // Images live outside the namespace's tmpfs so losetup's backing paths read the same everywhere.
    let store = tempfile::tempdir_in(root().join("target")).unwrap();
    let mut loops = Loops(Vec::new());

    private_mount_namespace();
    let tmp = store.path().join("tmpdir");
    std::fs::create_dir_all(&tmp).unwrap();
    let tmp = tmp.to_str().unwrap().to_string();
    for d in ["/media", "/run", tmp.as_str()] {
        cover_with_tmpfs(d);
    }
    // recover (and woesafe write) look for WoeUSB 5.x leftovers in $TMPDIR
    let woesafe = |args: &[&str]| {
        Command::new(bin()).args(args).env("TMPDIR", &tmp).stdin(std::process::Stdio::null()).output().unwrap()
    };

    // WoeUSB 3.x/4.x: source (fuseiso) and target (ext4 on a plain loop)
    let src = format!("/media/woeusb_source_1690000000_{DEAD_PID}");
    let tgt = format!("/media/woeusb_target_1690000001_{DEAD_PID}");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&tgt).unwrap();
    sh(&format!("fuseiso {} {src}", fx.iso.display()));
    let src_daemon_pid = fuseiso_pid(&src);
    let _src_daemon = Daemon(Some(src_daemon_pid), src.clone());
    let stick = store.path().join("stick.img");
    std::fs::File::create(&stick).unwrap().set_len(64 << 20).unwrap();
    sh(&format!("mkfs.ext4 -q -F {}", stick.display()));
    let stick_loop = sh(&format!("losetup -f --show {}", stick.display()));
    loops.0.push((stick_loop.clone(), store.path().to_path_buf()));
    // 40 MiB in the mount point's directory, then hidden by the mount: the "ghost space" df sees, du not
    std::fs::write(format!("{tgt}/shadow.bin"), vec![7u8; 40 << 20]).unwrap();
    sh(&format!("mount {stick_loop} {tgt}"));
    std::fs::write(format!("{tgt}/sources.txt"), b"half-copied").unwrap();
    // A process with its cwd on the target, holding a deleted 8 MiB file open
    let holder = Command::new("sh")
        .args(["-c", "exec 3>ghost.bin; head -c 8388608 /dev/zero >&3; rm ghost.bin; exec sleep 300"])
        .current_dir(&tgt)
        .spawn()
        .unwrap();
    let holder = Holder(holder);
    let holder_pid = holder.0.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(format!("/proc/{holder_pid}/comm")).is_ok_and(|c| c.trim() == "sleep") {
        assert!(Instant::now() < deadline, "holder did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    // WoeUSB 5.x: target mount in /tmp and its temp directory
    let v5 = &format!("{tmp}/woeusb-target-20240101-120000-Monday.aB3xYz");
    std::fs::create_dir_all(v5).unwrap();
    sh(&format!("mount -t tmpfs woeusb5 {v5}"));
    let v5_temp = format!("{tmp}/WoeUSB.tempdir.Qw3rTy");
    std::fs::create_dir_all(&v5_temp).unwrap();
    // Its source as the legacy tools mount an ISO: `mount -o loop`, whose loop device is autoclear and goes by
    // itself with the mount (recover's detach then finds it gone: done, not failed). An ext4 image stands in for
    // the ISO: this kernel has no iso9660/udf.
    let v5_src = format!("{tmp}/woeusb-source-20240101-120000-Monday.Lp0Op1");
    std::fs::create_dir_all(&v5_src).unwrap();
    let v5_img = store.path().join("legacy-source.img");
    std::fs::File::create(&v5_img).unwrap().set_len(16 << 20).unwrap();
    sh(&format!("mkfs.ext4 -q -F {}", v5_img.display()));
    sh(&format!("mount -o loop,ro {} {v5_src}", v5_img.display()));
    let autoclear_loop = sh(&format!("losetup -n -O NAME -j {}", v5_img.display()));
    assert!(autoclear_loop.starts_with("/dev/loop"), "{autoclear_loop}");
    let autoclear_name = autoclear_loop.trim_start_matches("/dev/");
    assert_eq!(
        std::fs::read_to_string(format!("/sys/block/{autoclear_name}/loop/autoclear")).unwrap().trim(),
        "1",
        "mount -o loop makes an autoclear loop device"
    );

    // A daemonised FUSE helper keeping its own private mount namespace alive after its shell exited
    let hidden = &format!("{tmp}/woeusb-source-20240101-120000-Monday.zZ9yY8");
    std::fs::create_dir_all(hidden).unwrap();
    sh(&format!("unshare -m --propagation private sh -c 'fuseiso {} {hidden}'", fx.iso.display()));
    let daemon_pid = fuseiso_pid(hidden);
    let _daemon = Daemon(Some(daemon_pid), hidden.to_string());

    // A loop device whose backing file was deleted; woesafe's debris after a SIGKILL
    let gone = store.path().join("gone.iso");
    std::fs::write(&gone, vec![0u8; 1 << 20]).unwrap();
    let gone_loop = sh(&format!("losetup -f --show {}", gone.display()));
    loops.0.push((gone_loop.clone(), store.path().to_path_buf()));
    std::fs::remove_file(&gone).unwrap();
    std::fs::create_dir_all(format!("/run/woesafe.{DEAD_PID}")).unwrap();
    // The real thing: a woesafe write killed with SIGKILL leaves its (empty) work directory in /run
    let image = store.path().join("killed.img");
    let mut run = Run::start(
        &["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "600M", "--yes"],
        &[("WOESAFE_TEST_PAUSE_AT", "copy:30000")],
    );
    run.wait_line("Copying files", Duration::from_secs(60));
    let killed = run.child.id();
    run.child.kill().unwrap();
    run.wait_exit(Duration::from_secs(10));
    let debris = format!("/run/woesafe.{killed}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !woesafe::sys::loopdev::attached().iter().all(|(_, b)| {
        !b.starts_with(store.path().to_str().unwrap())
            || b.ends_with("stick.img")
            || b.contains("gone.iso")
            || b.ends_with("legacy-source.img")
    }) {
        assert!(Instant::now() < deadline, "the killed write's loop devices stayed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(Path::new(&debris).is_dir(), "a SIGKILLed write leaves its empty work directory");

    // Unrelated things that must stay
    std::fs::create_dir_all("/media/user/MYSTICK").unwrap();
    sh("mount -t tmpfs unrelated /media/user/MYSTICK");
    std::fs::create_dir_all(format!("{tmp}/my-own-dir")).unwrap();
    let keep = store.path().join("keep.img");
    std::fs::write(&keep, vec![0u8; 1 << 20]).unwrap();
    let keep_loop = sh(&format!("losetup -f --show {}", keep.display()));
    loops.0.push((keep_loop.clone(), store.path().to_path_buf()));

    let (df, du) = df_du("/media");
    assert!(df >= du + (39 << 20), "the hidden 40 MiB should show in df but not in du: df {df}, du {du}");
    let mounts_before = thread_mounts();
    let loops_before = woesafe::sys::loopdev::attached();

    // The plan names every leftover and changes nothing
    let out = woesafe(&["recover"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stderr).to_string();
    for what in [
        format!("unmount {src}"),
        format!("unmount {tgt}"),
        format!("unmount {v5}"),
        format!("unmount {v5_src}"),
        format!("detach {autoclear_loop}"),
        format!("unmount {hidden} (fuse"),
        format!("detach {stick_loop}"),
        format!("detach {gone_loop}"),
        format!("remove the empty directory {v5_temp}"),
        format!("remove the empty directory /run/woesafe.{DEAD_PID}"),
        format!("remove the empty directory {debris}"),
    ] {
        assert!(plan.contains(&what), "the plan lacks {what:?}:\n{plan}");
    }
    assert!(plan.contains("in the private namespace mnt:["), "{plan}");
    for what in [
        format!(
            "holder: process {holder_pid} (sleep) holds {tgt} ({stick_loop}) through its working directory, 1 open file"
        ),
        format!("deleted but still open: {tgt}/ghost.bin (deleted) (8.0 MiB) by process {holder_pid} (sleep)"),
        format!("shadowed: {tgt} hides 40.0 MiB in 1 file(s)"),
        "shadow.bin (40.0 MiB)".to_string(),
    ] {
        assert!(plan.contains(&what), "the plan lacks {what:?}:\n{plan}");
    }
    for not in ["MYSTICK", "my-own-dir", &keep_loop] {
        assert!(!plan.contains(not), "the plan touches {not}:\n{plan}");
    }
    assert_eq!(thread_mounts(), mounts_before, "a plan without --yes changed the mount table");
    assert_eq!(woesafe::sys::loopdev::attached(), loops_before, "a plan without --yes changed loop devices");

    // --yes: everything goes, the FUSE daemons exit by themselves (not stuck in D), the rest stays. The
    // holder still keeps the target's filesystem alive, unmounted everywhere: said, and exit 1 (the stick is
    // still busy; `write` to it would be refused).
    let out = woesafe(&["recover", "--yes", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["applied"], true);
    assert!(report["results"].as_array().unwrap().iter().all(|r| r["ok"] == true), "{report:#}");
    assert_eq!(report["remaining"].as_array().unwrap().len(), 0, "{report:#}");
    let alive: Vec<&str> = report["still_alive"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(
        matches!(&alive[..], [one] if one.starts_with(&format!("{stick_loop} ")) && one.contains(&format!("kill {holder_pid}"))),
        "{report:#}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("D state"), "{}", text(&out));
    // The autoclear loop: detached, or found gone by itself with its mount (the kernel lets it go lazily, so
    // either can come first; `a_loop_gone_before_its_detach_is_done` pins the second), never a failure.
    let detach = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"].as_str().is_some_and(|a| a.starts_with(&format!("detach {autoclear_loop} "))))
        .unwrap_or_else(|| panic!("no result for {autoclear_loop}: {report:#}"));
    assert_eq!(detach["ok"], true, "{detach:#}");
    assert!(!woesafe::sys::loopdev::attached().iter().any(|(n, _)| n == autoclear_name), "{autoclear_loop} stayed");
    let mounts = thread_mounts();
    for gone in [&src, &tgt, &v5.to_string(), &v5_src] {
        assert!(!mounts.contains(gone.as_str()), "{gone} still mounted");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{daemon_pid}")).exists() || Path::new(&format!("/proc/{src_daemon_pid}")).exists() {
        let state = std::fs::read_to_string(format!("/proc/{daemon_pid}/stat")).unwrap_or_default();
        assert!(Instant::now() < deadline, "the FUSE daemon did not exit after its unmount: {state}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(report["shadowed"][0]["total"], 40u64 << 20, "{report:#}");
    // The shadowed file is kept (never deleted), now visible: df and du agree on /media again.
    assert_eq!(std::fs::metadata(format!("{tgt}/shadow.bin")).unwrap().len(), 40 << 20);
    let (df, du) = df_du("/media");
    assert!(df.abs_diff(du) < (1 << 20), "df {df} and du {du} still disagree on /media");
    // The stick's loop device detaches as soon as the holder lets go of the (detached) filesystem.
    let is_attached = |dev: &str| woesafe::sys::loopdev::attached().iter().any(|(n, _)| dev.ends_with(n.as_str()));
    assert!(!is_attached(&gone_loop));
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_attached(&stick_loop) {
        assert!(Instant::now() < deadline, "{stick_loop} stayed attached after its holder exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(is_attached(&keep_loop), "an unrelated loop device was detached");
    assert!(mounts.contains("/media/user/MYSTICK"), "an unrelated mount was removed");
    assert!(Path::new(&format!("{tmp}/my-own-dir")).is_dir());
    assert!(!Path::new(&v5_temp).exists());
    assert!(!Path::new(&format!("/run/woesafe.{DEAD_PID}")).exists());
    assert!(!Path::new(&debris).exists(), "the killed write's work directory is removed");
    // The shadowed files move out only on request, by rename, and then the directory goes.
    let again = woesafe(&["recover"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains(&format!("left alone: {tgt}: not empty")),
        "{}",
        text(&again)
    );
    std::fs::create_dir_all("/media/rescued").unwrap();
    let out = woesafe(&["recover", "--yes", "--move-shadowed", "/media/rescued"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let moved = format!("/media/rescued/woeusb_target_1690000001_{DEAD_PID}/shadow.bin");
    assert_eq!(std::fs::metadata(&moved).map(|m| m.len()).ok(), Some(40 << 20), "{}", text(&out));
    assert!(!Path::new(&tgt).exists(), "{}", text(&out));

    drop(loops);
    assert_eq!(std::fs::read_to_string("/proc/self/mountinfo").unwrap(), host_before, "host mount table changed");
}

/// A planned detach whose loop device is gone by the time it comes (an autoclear loop that went with its mount,
/// as after `mount -o loop` of the legacy tools) is done, with a note, not "FAILED … No such device or address";
/// one attached to another file by then is left alone.
#[test]
fn a_loop_gone_before_its_detach_is_done() {
    use woesafe::recover::plan::{Action, Reason};
    let name = "a_loop_gone_before_its_detach_is_done";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !need_root(name) || !have("losetup") {
        return;
    }
    let store = tempfile::tempdir_in(root().join("target")).unwrap();
    let planned = store.path().join("planned.img");
    let detach = |device: &str| Action::DetachLoop {
        device: device.to_string(),
        backing: planned.to_string_lossy().into_owned(),
        reason: Reason::BacksLeftover { mount_point: "/media/woeusb_source_1_2".into() },
    };
    // Gone: a loop device with nothing attached.
    let free = sh("losetup -f");
    let out = woesafe::recover::apply::apply(&[detach(&free)], &|_| None);
    assert!(out[0].ok, "{:?}", out[0]);
    assert!(out[0].note.as_deref().is_some_and(|n| n.contains("autoclear")), "{:?}", out[0]);
    // Reused by someone else: left alone.
    let other = store.path().join("other.img");
    std::fs::write(&other, vec![0u8; 1 << 20]).unwrap();
    let mut loops = Loops(Vec::new());
    let lo = sh(&format!("losetup -f --show {}", other.display()));
    loops.0.push((lo.clone(), store.path().to_path_buf()));
    let out = woesafe::recover::apply::apply(&[detach(&lo)], &|_| None);
    assert!(!out[0].ok, "{:?}", out[0]);
    assert!(out[0].error.as_deref().is_some_and(|e| e.contains("left alone")), "{:?}", out[0]);
    let lo_name = lo.trim_start_matches("/dev/");
    assert!(woesafe::sys::loopdev::attached().iter().any(|(n, _)| n == lo_name), "{lo} was detached");
}

/// A leftover FUSE mount whose daemon is stopped, with a process blocked on it: recover names the stuck
/// connection, aborts it (never killing the daemon), which frees the blocked process, and unmounts.
#[test]
fn stuck_fuse_connection_is_aborted_not_killed() {
    let name = "stuck_fuse_connection_is_aborted_not_killed";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run(name, &["bindfs"]) {
        return;
    }
    if !Path::new("/dev/fuse").exists() {
        woesafe::report_skip(name, "/dev/fuse missing");
        return;
    }
    let store = tempfile::tempdir_in(root().join("target")).unwrap();
    let src = store.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    private_mount_namespace();
    cover_with_tmpfs("/media");
    let tgt = format!("/media/woeusb_target_1690000001_{DEAD_PID}");
    std::fs::create_dir_all(&tgt).unwrap();
    let daemon = Command::new("bindfs").arg("-f").arg(&src).arg(&tgt).spawn().unwrap();
    struct Bindfs(std::process::Child, String);
    impl Drop for Bindfs {
        fn drop(&mut self) {
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            let _ = nix::mount::umount2(self.1.as_str(), nix::mount::MntFlags::MNT_DETACH);
            let _ = self.0.wait();
        }
    }
    let mut daemon = Bindfs(daemon, tgt.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !thread_mounts().contains(&tgt) {
        assert!(Instant::now() < deadline, "bindfs did not mount");
        std::thread::sleep(Duration::from_millis(20));
    }
    let dpid = nix::unistd::Pid::from_raw(daemon.0.id() as i32);
    nix::sys::signal::kill(dpid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // A writer that blocks on the stopped daemon
    let writer = Command::new("sh").arg("-c").arg(format!("echo data > {tgt}/file")).spawn().unwrap();
    let mut writer = Holder(writer);
    std::thread::sleep(Duration::from_millis(500));
    assert!(writer.0.try_wait().unwrap().is_none(), "the writer should be blocked on the stopped daemon");

    let t0 = Instant::now();
    let out = woesafe(&["recover"]);
    assert!(t0.elapsed() < Duration::from_secs(10), "recover must not hang on a stuck FUSE filesystem");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(plan.contains("abort the stuck FUSE connection") && plan.contains(&tgt), "{plan}");
    assert!(plan.contains(&format!("unmount {tgt}")), "{plan}");

    let out = woesafe(&["recover", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The aborted connection fails the blocked write: the writer is free (not stuck in D).
    let deadline = Instant::now() + Duration::from_secs(10);
    while writer.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the writer stayed blocked after the abort:\n{}", text(&out));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!thread_mounts().contains(&tgt), "{tgt} still mounted");
    // The daemon was not killed by recover: it is still there (stopped) until the test lets it go on.
    assert!(Path::new(&format!("/proc/{}", daemon.0.id())).exists(), "recover must never kill a FUSE daemon");
    nix::sys::signal::kill(dpid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "bindfs did not exit after its connection was aborted and unmounted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A mount that matches no tool's names is never touched, unless the user names it.
#[test]
fn named_paths_only_when_named() {
    let name = "named_paths_only_when_named";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run(name, &[]) {
        return;
    }
    private_mount_namespace();
    cover_with_tmpfs("/media");
    std::fs::create_dir_all("/media/stuck here").unwrap();
    sh("mount -t tmpfs mine '/media/stuck here'");
    let out = woesafe(&["recover"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("stuck here"), "{}", text(&out));
    let out = woesafe(&["recover", "media/stuck here"]);
    assert_eq!(out.status.code(), Some(2), "a relative path is a usage error: {}", text(&out));
    let out = woesafe(&["recover", "/media/stuck here"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unmount /media/stuck here (tmpfs from mine)"),
        "{}",
        text(&out)
    );
    assert!(thread_mounts().contains("/media/stuck\\040here"), "the plan alone must not unmount");
    let out = woesafe(&["recover", "--yes", "/media/stuck here"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!thread_mounts().contains("/media/stuck\\040here"), "{}", text(&out));
    assert!(!Path::new("/media/stuck here").exists(), "the emptied named mount point is removed");
}

/// The fuseblk deadlock of DESIGN.md, recreated: ntfs-3g on a loop device inside new PID and mount namespaces,
/// and the namespace's PID 1 killed, so the daemon is the last holder of its mount namespace and waits in D
/// state for its own answer to DESTROY, holding the loop device (ghost space). recover names it and aborts the
/// connection (never kills the daemon), which frees the daemon and the device.
#[test]
fn deadlocked_fuseblk_daemon_is_freed() {
    let name = "deadlocked_fuseblk_daemon_is_freed";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run(name, &["ntfs-3g", "mkntfs", "unshare", "losetup"]) {
        return;
    }
    let store = tempfile::tempdir_in(root().join("target")).unwrap();
    let img = store.path().join("ntfs.img");
    std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    sh(&format!("mkntfs -Q -F -q {}", img.display()));
    let lo = sh(&format!("losetup -f --show {}", img.display()));
    let _loops = Loops(vec![(lo.clone(), img.clone())]);
    let minor: u32 = lo.trim_start_matches("/dev/loop").parse().unwrap();
    let conn = woesafe::recover::fuse::connection_id(7, minor);
    /// Whatever happens, the connection is aborted at the end (frees a dead-locked daemon), through fusectl
    /// mounted in a throwaway mount namespace.
    struct Abort(u32);
    impl Drop for Abort {
        fn drop(&mut self) {
            let c = "/sys/fs/fuse/connections";
            let _ = Command::new("unshare")
                .args(["-m", "sh", "-c"])
                .arg(format!("mount -t fusectl fusectl {c}; [ -e {c}/{0} ] && echo 1 > {c}/{0}/abort", self.0))
                .status();
        }
    }
    let _abort = Abort(conn);
    let mnt = store.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // The shape of woesafe's worker: PID 1 of a new PID namespace in a mount namespace of its own, whose parent
    // (the outer unshare) stays in the host's mount namespace. (With `unshare --pid --fork --mount` the outer
    // unshare would hold the mount namespace too, and the daemon would not be its last holder.)
    let mut ns = Command::new("unshare")
        .args(["--pid", "--fork", "unshare", "--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("ntfs-3g {lo} {} && exec sleep 1000", mnt.display()))
        .spawn()
        .unwrap();
    let daemon = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                (cmd.starts_with("ntfs-3g ") && cmd.contains(&lo)).then_some(pid)
            });
            let init = std::fs::read_to_string(format!("/proc/{}/task/{}/children", ns.id(), ns.id()))
                .ok()
                .and_then(|c| c.split_whitespace().next()?.parse::<i32>().ok())
                .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep"));
            if let (Some(d), Some(i)) = (found, init) {
                break (d, i);
            }
            assert!(Instant::now() < deadline, "ntfs-3g did not start in the namespace");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (daemon, init) = daemon;
    // Lazily detach our loop device: it goes when its last holder (the daemon's superblock) lets go.
    sh(&format!("losetup -d {lo}"));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), nix::sys::signal::Signal::SIGKILL).unwrap();
    // (PID 1 cannot finish dying while the daemon is stuck: the outer unshare is reaped at the end.)
    let in_destroy =
        || std::fs::read_to_string(format!("/proc/{daemon}/stack")).is_ok_and(|s| s.contains("fuse_send_destroy"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !in_destroy() {
        if !Path::new(&format!("/proc/{daemon}")).exists() {
            let _ = ns.wait();
            woesafe::report_skip(name, "this kernel did not dead-lock the daemon (it exited by itself)");
            return;
        }
        assert!(Instant::now() < deadline, "ntfs-3g neither dead-locked nor exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(woesafe::sys::loopdev::backing_file(lo.trim_start_matches("/dev/")).is_some(), "the loop is held");

    let out = woesafe(&["recover"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let plan = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(plan.contains(&format!("abort the stuck FUSE connection {conn}")), "{plan}");
    assert!(plan.contains(&format!("ntfs-3g (pid {daemon}) stuck in D state")), "{plan}");
    assert!(in_destroy(), "recover without --yes changed something");

    let out = woesafe(&["recover", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{daemon}")).exists()
        || woesafe::sys::loopdev::backing_file(lo.trim_start_matches("/dev/")).is_some()
    {
        assert!(Instant::now() < deadline, "the daemon or its loop device is still there:\n{}", text(&out));
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = ns.wait();
}

/// Mount points whose names are not UTF-8 (and carry controls) are kept as bytes from mountinfo to the
/// unmount: named on the command line or below a tool's directory, they are shown escaped (`\xff`, `\x1b`),
/// in text and in JSON, and unmounted and removed exactly.
#[test]
fn mount_points_that_are_not_utf8_are_recovered() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let name = "mount_points_that_are_not_utf8_are_recovered";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run(name, &[]) {
        return;
    }
    private_mount_namespace();
    cover_with_tmpfs("/media");
    let named = Path::new(OsStr::from_bytes(b"/media/stuck\xff\xfe \x1b[2J here"));
    let tool = format!("/media/woeusb_target_1690000001_{DEAD_PID}");
    let inner = Path::new(&tool).join(OsStr::from_bytes(b"sub\xc3\x28dir"));
    let tmpfs = |dir: &Path| {
        std::fs::create_dir_all(dir).unwrap();
        nix::mount::mount(Some("mine"), dir, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
    };
    tmpfs(named);
    tmpfs(Path::new(&tool));
    tmpfs(&inner); // on the tool's tmpfs
    // The kernel escapes the space (\040) and writes the other bytes raw: the parser gives them back exactly.
    let table = woesafe::sys::mountinfo::parse(std::fs::read("/proc/thread-self/mountinfo").unwrap());
    let points: Vec<&Path> = table.iter().map(|m| m.mount_point.as_path()).collect();
    assert!(points.contains(&named) && points.contains(&inner.as_path()), "{points:?}");
    let recover = |args: &[&OsStr]| {
        std::process::Command::new(bin()).arg("recover").args(args).stdin(std::process::Stdio::null()).output().unwrap()
    };
    let out = recover(&[named.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for shown in [
        "unmount /media/stuck\\xff\\xfe \\x1b[2J here (tmpfs from mine)",
        &format!("unmount {tool}/sub\\xc3(dir (tmpfs from mine)"),
        &format!("unmount {tool} (tmpfs from mine)"),
    ] {
        assert!(err.contains(shown), "expected {shown:?} in\n{err}");
    }
    assert!(!out.stderr.contains(&0x1b), "a raw ESC reached the terminal:\n{err}");
    // JSON: a path that is not UTF-8 cannot be a JSON string as it is: its other bytes as \xNN.
    let out = recover(&[OsStr::new("--json"), named.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let shown: Vec<&str> =
        json["plan"]["actions"].as_array().unwrap().iter().filter_map(|a| a["mount_point"].as_str()).collect();
    assert!(shown.contains(&"/media/stuck\\xff\\xfe \u{1b}[2J here"), "{shown:?}");
    let out = recover(&[OsStr::new("--yes"), named.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let table = woesafe::sys::mountinfo::parse(std::fs::read("/proc/thread-self/mountinfo").unwrap());
    assert!(!table.iter().any(|m| m.source == "mine"), "still mounted: {table:?}\n{}", text(&out));
    assert!(!named.exists() && !Path::new(&tool).exists(), "the emptied mount points are removed\n{}", text(&out));
}

/// After `--yes` lazily unmounts a leftover that a process still holds (a shell's cwd inside, a deleted file
/// open), the filesystem is unmounted everywhere but alive: a second `recover` still finds it, with its holder
/// and the space its deleted files keep, instead of "Nothing to recover"; `--yes` exits 1 without the D-state
/// hint (no process is in D); `write` refuses the device naming the holder; once the holder ends, it is gone.
#[test]
fn a_held_filesystem_is_found_after_its_lazy_unmount() {
    let name = "a_held_filesystem_is_found_after_its_lazy_unmount";
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run(name, &["losetup", "mkfs.ext4"]) {
        return;
    }
    let fx = fixture();
    let store = tempfile::tempdir_in(root().join("target")).unwrap();
    let img = store.path().join("stick.img");
    std::fs::write(&img, vec![0u8; 64 << 20]).unwrap();
    sh(&format!("mkfs.ext4 -q -F {}", img.display()));
    let mut loops = Loops(Vec::new());
    let lo = sh(&format!("losetup -f --show {}", img.display()));
    loops.0.push((lo.clone(), store.path().to_path_buf()));
    private_mount_namespace();
    cover_with_tmpfs("/media");
    let tgt = format!("/media/woeusb_target_1690000001_{DEAD_PID}");
    std::fs::create_dir_all(&tgt).unwrap();
    sh(&format!("mount {lo} {tgt}"));
    // A shell's cwd inside, and a deleted 3 MiB file it keeps open.
    let holder = Holder(
        Command::new("sh")
            .arg("-c")
            .arg("cd \"$1\" && exec 3>big && head -c 3145728 /dev/zero >&3 && rm big && exec sleep 300")
            .arg("sh")
            .arg(&tgt)
            .spawn()
            .unwrap(),
    );
    let pid = holder.0.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("{tgt}/big")).exists() || !sh(&format!("readlink /proc/{pid}/exe")).ends_with("sleep") {
        assert!(Instant::now() < deadline, "the holder did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let out = woesafe(&["recover", "--yes"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("still alive: {lo}")), "{said}");
    assert!(!said.contains("D state"), "no process is in D, so no D-state hint: {said}");
    assert!(said.contains("End the processes named above"), "{said}");
    assert!(!thread_mounts().contains(&tgt), "the leftover mount is gone from the table");

    // The next look still finds it, with its holder and its space.
    let out = woesafe(&["recover"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("Nothing to recover"), "{said}");
    assert!(said.contains(&format!("unmounted but alive: {lo}")), "{said}");
    assert!(
        said.contains(&format!("held by process {pid} (sleep) through its working directory, 1 open file")),
        "{said}"
    );
    assert!(said.contains("1 deleted file(s) of 3.0 MiB on it are still open"), "{said}");

    // write refuses the device, naming the holder.
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), &lo, "--yes"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains(&format!("busy: {lo} is in use: process {pid} (sleep) has its working directory")), "{said}");
    assert!(said.contains("which no mount shows (lazily unmounted)"), "{said}");

    // Once the holder ends, nothing is left of it.
    drop(holder);
    let out = woesafe(&["recover"]);
    assert!(!text(&out).contains("unmounted but alive"), "{}", text(&out));
    drop(loops);
}
