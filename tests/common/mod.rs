//! Shared test fixtures: the test ISO (built once by scripts/make-test-iso), running the binary, and
//! assertions on host state (mount table, loop devices) that never touch anything the test did not create.
#![allow(dead_code)]

pub mod measure;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_woesafe"))
}

/// True when running as root; otherwise prints a visible SKIPPED line.
pub fn need_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    woesafe::report_skip(test, "needs root (loop devices, namespaces)");
    false
}

/// Whether this kernel has every filesystem of `fss` (/proc/filesystems), for a test of the kernel drivers.
/// Where it lacks one:
/// - inside the VM tier's guest (WOESAFE_IN_VM=1, which loads them first) that is a failure;
/// - with the VM tier's extended set on (WOESAFE_VM_EXTENDED=1, as CI runs it) and the tier available, the test
///   runs in Debian 6.12's guest instead (tests/vm.rs, case `host_tests`): a note says so;
/// - otherwise a SKIPPED line says what is missing and where the test runs.
pub fn kernel_has(test: &str, fss: &[&str]) -> bool {
    let have = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let missing: Vec<&str> =
        fss.iter().copied().filter(|f| !have.lines().any(|l| l.split_whitespace().last() == Some(*f))).collect();
    if missing.is_empty() {
        return true;
    }
    let what = format!("this kernel lacks {} (/proc/filesystems)", missing.join(" and "));
    assert!(!in_vm(), "{test}: {what}, in the VM tier's guest");
    let vm = root().join("target/vm");
    let tier = vm.join("KERNELS").exists() && !vm.join("unavailable.txt").exists();
    if tier && std::env::var_os("WOESAFE_VM_EXTENDED").is_some_and(|v| v == "1") {
        eprintln!("note: {test}: {what}; it runs in the VM tier's Debian 6.12 guest instead (tests/vm.rs, host_tests)");
    } else {
        woesafe::report_skip(
            test,
            &format!("{what}; WOESAFE_VM_EXTENDED=1 runs it in the VM tier's Debian 6.12 guest (tests/vm.rs)"),
        );
    }
    false
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The fixture ISO: (iso, tree it was built from, sha256 manifest). Built once for all test binaries, under a
/// file lock of its own (so that two tests needing two different fixtures build them at the same time).
pub struct Fixture {
    pub iso: PathBuf,
    pub tree: PathBuf,
    pub manifest: PathBuf,
}

pub fn fixture() -> Fixture {
    if in_vm() {
        // The VM tier's ISO (100 small files instead of 3000): emulated USB and CPU under TCG are slow.
        return fixture_with("win-vm", &["--support-files", "100"]);
    }
    fixture_with("win", &[])
}

/// Whether this test runs inside the VM tier's guest (tests/vm.rs, case `host_tests`).
pub fn in_vm() -> bool {
    std::env::var_os("WOESAFE_IN_VM").is_some()
}

/// How much longer a wait may take here: 6 times in the VM tier's guest (software emulation), else 1.
pub fn time_scale() -> u32 {
    if in_vm() { 6 } else { 1 }
}

/// A fixture ISO built by `scripts/make-test-iso target/test-fixtures/NAME.iso ARGS` (once, under NAME's lock,
/// target/test-fixtures/.NAME.lock: builds of different fixtures never wait for each other).
pub fn fixture_with(name: &str, args: &[&str]) -> Fixture {
    let dir = root().join("target/test-fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = File::create(dir.join(format!(".{name}.lock"))).unwrap();
    // SAFETY: flock on an fd we own; blocks until other tests or test binaries finish building this fixture.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let iso = dir.join(format!("{name}.iso"));
    let stamp = dir.join(format!("{name}.iso.ok"));
    if !stamp.exists() {
        let _ = std::fs::remove_file(&iso);
        let _ = std::fs::remove_dir_all(dir.join(format!("{name}.d")));
        let out = Command::new(root().join("scripts/make-test-iso")).arg(&iso).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "make-test-iso {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&stamp, b"").unwrap();
    }
    Fixture { iso: iso.clone(), tree: dir.join(format!("{name}.d")), manifest: dir.join(format!("{name}.sha256")) }
}

/// Build a small UDF + Joliet ISO from `tree` with genisoimage (the way the fixture's ISO is built).
pub fn make_iso(tree: &Path, iso: &Path) {
    let out = Command::new("genisoimage").args(["-quiet", "-udf", "-J", "-o"]).arg(iso).arg(tree).output().unwrap();
    assert!(out.status.success(), "genisoimage: {}", text(&out));
}

/// `genisoimage -quiet ARGS TREE` with its output stored sparse at `iso`: the stream goes through
/// `dd bs=1M iflag=fullblock conv=sparse` (as scripts/make-test-iso does), so the ISO holds the same bytes as with
/// `-o ISO`, but the zeros of a sparse multi-GiB file in the tree never reach the disk. (Writing them is most of
/// what such an ISO costs; `cp --sparse=always` from the pipe takes ~8 times as long as dd's 1 MiB blocks.)
pub fn make_sparse_iso(args: &[&str], tree: &Path, iso: &Path) {
    let mut genisoimage = Command::new("genisoimage")
        .arg("-quiet")
        .args(args)
        .arg(tree)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stream = genisoimage.stdout.take().unwrap();
    let dd = Command::new("dd")
        .args(["bs=1M", "iflag=fullblock", "conv=sparse", "status=none"])
        .arg(format!("of={}", iso.display()))
        .stdin(stream)
        .output()
        .unwrap();
    let out = genisoimage.wait_with_output().unwrap();
    assert!(out.status.success(), "genisoimage: {}", text(&out));
    assert!(dd.status.success(), "dd conv=sparse: {}", text(&dd));
}

/// Give the calling test thread (and the processes it starts) a private mount namespace: whatever the test
/// mounts from now on never reaches the host's mount table, and goes away with the thread's processes.
pub fn private_mount_namespace() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
    let private = nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE;
    nix::mount::mount(None::<&str>, "/", None::<&str>, private, None::<&str>).unwrap();
}

/// Cover `dir` with a fresh tmpfs (call only inside `private_mount_namespace`).
pub fn cover_with_tmpfs(dir: &str) {
    nix::mount::mount(Some("woesafe-test"), dir, Some("tmpfs"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
}

/// Run woesafe with arguments.
pub fn woesafe(args: &[&str]) -> Output {
    woesafe_pid(args).0
}

/// Run woesafe and also return its pid; asserts its work directory /run/woesafe.<pid> is gone afterwards.
pub fn woesafe_pid(args: &[&str]) -> (Output, u32) {
    let child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let dir = PathBuf::from(format!("/run/woesafe.{pid}"));
    assert!(!dir.exists(), "woesafe left its work directory {} behind\n{}", dir.display(), text(&out));
    (out, pid)
}

/// Write the fixture ISO to `image` (a new image file of `size`, --yes) with extra arguments; asserts success.
pub fn write_fixture(iso: &Path, image: &Path, size: &str, extra: &[&str]) -> Output {
    let mut args = vec!["write", iso.to_str().unwrap(), image.to_str().unwrap(), "--size", size, "--yes"];
    args.extend_from_slice(extra);
    let out = woesafe(&args);
    assert!(out.status.success(), "woesafe {args:?} failed:\n{}", text(&out));
    out
}

pub fn text(out: &Output) -> String {
    format!(
        "status: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The host state a write must leave exactly as it found it.
#[derive(Debug, PartialEq, Eq)]
pub struct HostState {
    pub mountinfo: Vec<String>,
    pub loops_under: Vec<(String, String)>,
}

/// The whole mount table and the loop devices backed by anything under `dir`. (Work directories are checked
/// per run by `woesafe_pid`: other tests' writes may be running.)
pub fn host_state(dir: &Path) -> HostState {
    let mut mountinfo: Vec<String> =
        std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().map(str::to_string).collect();
    mountinfo.sort();
    let prefix = std::fs::canonicalize(dir).unwrap().to_string_lossy().into_owned();
    let loops_under = woesafe::sys::loopdev::attached().into_iter().filter(|(_, b)| b.starts_with(&prefix)).collect();
    HostState { mountinfo, loops_under }
}

/// Attach `file` (at `offset`, `size` bytes; 0 = to the end) on an autoclear loop device held by the returned
/// guard: it detaches by itself when the guard drops, even if the test panics.
pub fn test_loop(file: &Path, offset: u64, size: u64, read_only: bool) -> (File, woesafe::sys::loopdev::LoopDevice) {
    let f = std::fs::OpenOptions::new().read(true).write(!read_only).open(file).unwrap();
    let l = woesafe::sys::loopdev::LoopDevice::attach(
        &f,
        file,
        woesafe::sys::loopdev::LoopWindow { offset, size, read_only, direct_io: false },
    )
    .unwrap();
    (f, l)
}

/// Check a written image: MBR with one active FAT32 partition at 1 MiB, fsck.fat clean, every ISO file
/// present and identical (extracted with mtools, an independent FAT reader), GRUB's files in place.
pub fn verify_written(image: &Path, fx: &Fixture, work: &Path) {
    verify_written_as(image, fx, work, false)
}

/// The same for a GPT image (`gpt`): a Microsoft basic data partition at 1 MiB that sfdisk verifies, no GRUB.
pub fn verify_written_as(image: &Path, fx: &Fixture, work: &Path, gpt: bool) {
    // Partition table as sfdisk sees it
    let out = Command::new("sfdisk").arg("--json").arg(image).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pt = &json["partitiontable"];
    assert_eq!(pt["label"], if gpt { "gpt" } else { "dos" }, "{json}");
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 1, "{json}");
    assert_eq!(parts[0]["start"], 2048);
    if gpt {
        assert_eq!(parts[0]["type"], "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "{json}");
        let out = Command::new("sfdisk").arg("--verify").arg(image).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("No errors detected"), "{}", text(&out));
    } else {
        assert_eq!(parts[0]["type"], "c");
        assert_eq!(parts[0]["bootable"], true);
    }
    let size = parts[0]["size"].as_u64().unwrap() * 512;

    // fsck.fat on the partition, through a loop device limited to it
    let (_f, lo) = test_loop(image, 1 << 20, size, true);
    let out = Command::new("fsck.fat").arg("-n").arg("-v").arg(lo.path()).output().unwrap();
    assert!(out.status.success(), "fsck.fat -n reported problems:\n{}", text(&out));
    let fsck = String::from_utf8_lossy(&out.stdout);
    assert!(!fsck.contains("Dirty bit"), "{fsck}");
    drop(lo);

    // Every file byte for byte: extract with mcopy and compare with the tree the ISO was built from
    let ext = work.join("extracted");
    std::fs::create_dir_all(&ext).unwrap();
    extract_and_compare(image, fx, &ext);
    // Nothing extra but GRUB's config; nothing missing (sha256sum -c checks presence of every manifest line).
    let listed = std::fs::read_to_string(&fx.manifest).unwrap().lines().count();
    let found = walk_files(&ext).len();
    if gpt {
        assert_eq!(found, listed, "files on the stick: the ISO's {listed}, no GRUB");
    } else {
        assert_eq!(found, listed + 1, "files on the stick: ISO's {listed} + boot/grub/grub.cfg");
        let cfg = std::fs::read_to_string(ext.join("boot/grub/grub.cfg")).unwrap();
        assert!(cfg.contains("ntldr /bootmgr"), "{cfg}");
    }
    // Timestamps: FAT keeps modification times to 2 seconds; woesafe writes the ISO's times (as UTC).
    use std::os::unix::fs::MetadataExt;
    for line in std::fs::read_to_string(&fx.manifest).unwrap().lines() {
        let rel = line.split_once("  ").unwrap().1;
        let want = std::fs::metadata(fx.tree.join(rel)).unwrap().mtime();
        let got = std::fs::metadata(ext.join(rel)).unwrap().mtime();
        assert!((want - got).abs() <= 2, "{rel}: mtime {got} on the stick, {want} in the ISO");
    }
    // Empty directories of the ISO exist too
    for d in walk_dirs(&fx.tree) {
        let rel = d.strip_prefix(&fx.tree).unwrap();
        assert!(ext.join(rel).is_dir(), "directory {} missing on the stick", rel.display());
    }
}

/// Every file of the FAT partition at 1 MiB of `image` extracted with mtools (an independent FAT reader, which
/// takes the sector size from the boot sector) into `ext`, and checked against the fixture's sha256 manifest.
pub fn extract_and_compare(image: &Path, fx: &Fixture, ext: &Path) {
    let out = Command::new("mcopy")
        .env("LC_ALL", "C.UTF-8")
        .env("TZ", "UTC")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@1M", image.display()))
        .args(["-s", "-n", "-m", "::/*"])
        .arg(ext)
        .output()
        .unwrap();
    assert!(out.status.success(), "mcopy failed: {}", text(&out));
    let out = Command::new("sha256sum").arg("--quiet").arg("-c").arg(&fx.manifest).current_dir(ext).output().unwrap();
    assert!(out.status.success(), "files differ from the ISO's:\n{}", text(&out));
}

pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push(p.clone());
            out.extend(walk_dirs(&p));
        }
    }
    out
}

/// Boot an image in QEMU through scripts/boot-check; returns (ok, output).
pub fn boot_check(image: &Path, mode: &str) -> (bool, String) {
    boot_check_within(image, mode, 180)
}

pub fn boot_check_within(image: &Path, mode: &str, seconds: u32) -> (bool, String) {
    let out = Command::new(root().join("scripts/boot-check"))
        .arg(image)
        .arg(mode)
        .arg("--timeout")
        .arg(seconds.to_string())
        .output()
        .unwrap();
    (out.status.success(), text(&out))
}

/// A woesafe run whose stderr is followed line by line (to act when it reaches a step).
pub struct Run {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Run {
    /// Start woesafe with `args` and extra environment; stdin and stdout are null, stderr is followed.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Run {
        use std::io::BufRead;
        let mut child = Command::new(bin())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Run { child, lines, log: Vec::new() }
    }

    /// Wait until a line contains `marker`; panics with the log so far after `within`.
    pub fn wait_line(&mut self, marker: &str, within: std::time::Duration) -> std::time::Instant {
        let deadline = std::time::Instant::now() + within * time_scale();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(marker);
                    self.log.push(line);
                    if hit {
                        return std::time::Instant::now();
                    }
                }
                Err(_) => panic!("no line with {marker:?} within {within:?}:\n{}", self.log.join("\n")),
            }
        }
    }

    /// Wait for the exit (panics after `within`), then collect the rest of stderr.
    pub fn wait_exit(&mut self, within: std::time::Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within * time_scale();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(std::time::Instant::now() < deadline, "woesafe did not exit:\n{}", self.log.join("\n"));
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        // The reader ends when the pipe closes.
        while let Ok(line) = self.lines.recv_timeout(std::time::Duration::from_secs(2)) {
            self.log.push(line);
        }
        status
    }

    pub fn text(&self) -> String {
        self.log.join("\n")
    }
}

/// Boot an image through scripts/boot-check and keep the serial console's log: (ok, boot-check's output, the
/// serial log as text without NUL bytes, carriage returns and terminal escape sequences). With `stop_at`, the boot
/// is stopped (boot-check gets SIGTERM, and stops QEMU) as soon as that text shows up on the console, instead of
/// waiting for the marker until `seconds` pass; `ok` is then false.
pub fn boot_check_serial(image: &Path, mode: &str, seconds: u32, stop_at: Option<&str>) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.log");
    let mut child = Command::new(root().join("scripts/boot-check"))
        .arg(image)
        .arg(mode)
        .arg("--timeout")
        .arg(seconds.to_string())
        .arg("--log")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let serial = || plain_console_text(&String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()));
    if let Some(needle) = stop_at {
        while child.try_wait().unwrap().is_none() {
            if serial().contains(needle) {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), text(&out), serial())
}

/// Console output as plain text: NUL bytes, carriage returns and ANSI escape sequences (ESC [ … final byte)
/// removed.
pub fn plain_console_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\0' | '\r' => {}
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for f in chars.by_ref() {
                        if ('@'..='~').contains(&f) {
                            break;
                        }
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The worker of the woesafe process `supervisor` (a child of its main thread), if it runs.
pub fn worker_of(supervisor: u32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children")).ok()?;
    text.split_whitespace().filter_map(|p| p.parse().ok()).find(|&pid: &i32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains("__woesafe_worker"))
    })
}

/// The partitions as sfdisk sees them: (start sector, sectors, type, bootable).
pub fn partitions(image: &Path) -> (String, Vec<(u64, u64, String, bool)>) {
    let out = Command::new("sfdisk").arg("--json").arg(image).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pt = &json["partitiontable"];
    let parts = pt["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                p["type"].as_str().unwrap().to_string(),
                p["bootable"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    (pt["label"].as_str().unwrap().to_string(), parts)
}

/// Mount the NTFS partition read-only with ntfs-3g in this thread's private mount namespace, compare every
/// file of the fixture byte for byte and its modification time, and count what else is there.
pub fn verify_ntfs(image: &Path, start: u64, sectors: u64, fx: &Fixture, work: &Path, extra: &[&str]) {
    let (_f, lo) = test_loop(image, start * 512, sectors * 512, true);
    let mnt = work.join("ntfs");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = Command::new("ntfs-3g").args(["-o", "ro"]).arg(lo.path()).arg(&mnt).output().unwrap();
    assert!(out.status.success(), "ntfs-3g could not mount the stick's NTFS: {}", text(&out));
    let check =
        Command::new("sha256sum").arg("--quiet").arg("-c").arg(&fx.manifest).current_dir(&mnt).output().unwrap();
    let listed = std::fs::read_to_string(&fx.manifest).unwrap().lines().count();
    let files: Vec<String> = walk_files(&mnt)
        .iter()
        .map(|p| p.strip_prefix(&mnt).unwrap().to_string_lossy().into_owned())
        .filter(|p| !p.starts_with("$") && !p.starts_with("System Volume Information"))
        .collect();
    use std::os::unix::fs::MetadataExt;
    let mut mtime_errors = Vec::new();
    for line in std::fs::read_to_string(&fx.manifest).unwrap().lines() {
        let rel = line.split_once("  ").unwrap().1;
        let want = std::fs::metadata(fx.tree.join(rel)).unwrap().mtime();
        if let Ok(m) = std::fs::metadata(mnt.join(rel))
            && m.mtime() != want
        {
            mtime_errors.push(format!("{rel}: {} != {want}", m.mtime()));
        }
    }
    let extras: Vec<String> = extra.iter().filter(|e| !mnt.join(e).is_file()).map(|e| e.to_string()).collect();
    nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH).unwrap();
    drop(lo);
    assert!(check.status.success(), "files differ from the ISO's:\n{}", text(&check));
    assert_eq!(files.len(), listed + extra.len(), "files on the stick: the ISO's {listed} + {extra:?}");
    assert!(extras.is_empty(), "missing on the stick: {extras:?}");
    assert!(mtime_errors.is_empty(), "modification times differ: {mtime_errors:?}");
}

/// The bridge partition: a FAT filesystem with EFI/BOOT/BOOTX64.EFI (a GRUB EFI image).
pub fn verify_bridge(image: &Path, start: u64) {
    let out = Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{}", image.display(), start * 512))
        .arg("::/EFI/BOOT")
        .output()
        .unwrap();
    assert!(out.status.success() && text(&out).contains("BOOTX64  EFI"), "bridge: {}", text(&out));
}
