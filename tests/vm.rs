//! The VM tier: woesafe on Debian's own kernels (bookworm's 6.1 and bookworm-backports' 6.12), booted under
//! QEMU (TCG) with the host's root filesystem shared read-only (scripts/vm-run, tests/vm/init), writing real USB
//! sticks (xhci + usb-storage, removable or fixed; usb-bot + scsi-hd with 4096-byte sectors) with the kernel's
//! own udf, vfat and ntfs3 drivers, with real sysfs, device-mapper and systemd-udevd. One guest boot per kernel
//! runs many cases (tests/vm/cases.sh); the host then checks each written stick (sfdisk, fsck.fat, every file by
//! sha256, ntfs-3g) and boots it under SeaBIOS and OVMF (scripts/boot-check).
//!
//! The kernels and tools come from scripts/install-vm-deps (scripts/test runs it); where they cannot be had,
//! the tests print SKIPPED with its reason. Per-case times go to target/vm-times.txt (scripts/test prints them).

mod common;
use common::*;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// One guest at a time: TCG takes both cores.
static ONE_GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A USB disk for one case, told apart in the guest by its size (tests/vm/cases.sh's `stick MiB`).
#[derive(Clone, Copy)]
struct Stick {
    mib: u64,
    removable: bool,
    sector: u32,
}

const fn stick(mib: u64) -> Stick {
    Stick { mib, removable: true, sector: 512 }
}

/// The ISO the guests write: the test ISO with 100 support files instead of 3000 (emulated USB under TCG takes
/// about 25 ms a file).
fn vm_fixture() -> Fixture {
    fixture_with("win-vm", &["--support-files", "100"])
}

/// The marker the host writes at the start of every disk: a refused write must leave it.
const KEEP: &[u8] = b"WOESAFE-KEEP";

/// Whether the VM tier can run here; otherwise a SKIPPED line with the reason.
fn vm_ready(test: &str) -> bool {
    if !need_root(test) {
        return false;
    }
    let vm = root().join("target/vm");
    if let Ok(why) = std::fs::read_to_string(vm.join("unavailable.txt")) {
        woesafe::report_skip(test, why.trim());
        return false;
    }
    if !vm.join("KERNELS").exists() {
        woesafe::report_skip(
            test,
            "the VM tier's kernels are not fetched (scripts/install-vm-deps; scripts/test runs it)",
        );
        return false;
    }
    true
}

fn image(dir: &Path, mib: u64) -> PathBuf {
    dir.join(format!("stick-{mib}.img"))
}

/// A case's result as the guest reported it.
struct CaseResult {
    name: String,
    ok: bool,
    seconds: f64,
    what: String,
}

/// Boot `kernel` with `sticks` (and a 64 MiB virtio disk), run `cases` in it; returns the results and the
/// guest's console output.
fn run_guest(kernel: &str, sticks: &[Stick], cases: &[&str], udev: bool, dir: &Path) -> (Vec<CaseResult>, String) {
    let fx = vm_fixture();
    let mut qemu: Vec<String> = vec!["-device".into(), "qemu-xhci,id=xhci,p2=15,p3=15".into()];
    for (i, s) in sticks.iter().enumerate() {
        let img = image(dir, s.mib);
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(s.mib << 20).unwrap();
        f.write_all_at(KEEP, 0).unwrap();
        qemu.push("-drive".into());
        qemu.push(format!("if=none,id=s{i},file={},format=raw", img.display()));
        qemu.push("-device".into());
        if s.sector == 512 {
            let rm = if s.removable { "on" } else { "off" };
            qemu.push(format!("usb-storage,bus=xhci.0,drive=s{i},removable={rm}"));
        } else {
            qemu.push(format!("usb-bot,bus=xhci.0,id=bot{i}"));
            qemu.push("-device".into());
            qemu.push(format!(
                "scsi-hd,bus=bot{i}.0,drive=s{i},removable={},logical_block_size={},physical_block_size={}",
                if s.removable { "on" } else { "off" },
                s.sector,
                s.sector
            ));
        }
    }
    let virtio = dir.join("virtio.img");
    let f = std::fs::File::create(&virtio).unwrap();
    f.set_len(64 << 20).unwrap();
    f.write_all_at(KEEP, 0).unwrap();
    qemu.extend(["-drive".into(), format!("if=virtio,file={},format=raw", virtio.display())]);
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let cmd = format!(
        "UDEV={} NSTICKS={} WIN_ISO={} HOST_TESTS='{}' bash {} {} {} {}",
        u8::from(udev),
        sticks.len(),
        fixture().iso.display(),
        host_tests().join(" "),
        root().join("tests/vm/cases.sh").display(),
        bin().display(),
        fx.iso.display(),
        cases.join(" ")
    );
    let t0 = Instant::now();
    // Each case is bounded in the guest (300 s, host_tests 2400 s); the whole guest here, above their sum.
    let out = Command::new(root().join("scripts/vm-run"))
        .env("VM_TIMEOUT", "6000")
        .arg(kernel)
        .arg(&out_dir)
        .arg(&cmd)
        .args(&qemu)
        .output()
        .unwrap();
    let console = text(&out);
    let guest_seconds = t0.elapsed().as_secs_f64();
    assert!(out.status.success(), "the guest ({kernel}) did not finish its cases:\n{console}");
    let results: Vec<CaseResult> = std::fs::read_to_string(out_dir.join("results"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.splitn(5, ' ');
            let (_, name, ok, secs) = (w.next()?, w.next()?, w.next()?, w.next()?);
            Some(CaseResult {
                name: name.into(),
                ok: ok == "ok",
                seconds: secs.parse().unwrap_or(0.0),
                what: w.next().unwrap_or("").into(),
            })
        })
        .collect();
    let mut times = format!("VM tier, kernel {kernel}: guest {guest_seconds:.1} s (boot, cases, power-off)\n");
    for r in &results {
        times.push_str(&format!("  {:<12} {:>6.1} s  {}\n", r.name, r.seconds, if r.ok { "ok" } else { "FAILED" }));
    }
    append_times(&times);
    (results, console)
}

/// The host's kernel-driver tests (`kernel_has`), as BINARY::TEST for the guest's `host_tests` case: the test
/// binaries cargo built beside this one (the newest of each name).
fn host_tests() -> Vec<String> {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let newest = |name: &str| -> PathBuf {
        let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&deps)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let f = p.file_name().unwrap().to_string_lossy();
                f.strip_prefix(&format!("{name}-")).is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
            })
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
            .collect();
        found.sort();
        found.pop().unwrap_or_else(|| panic!("no test binary {name} in {}", deps.display())).1
    };
    [
        ("write_image", "kernel_drivers_where_available"),
        ("ntfs", "kernel_ntfs3_where_available"),
        ("kill_matrix", "kernel_drivers_every_kill_in_every_phase"),
    ]
    .iter()
    .map(|(bin, test)| format!("{}::{test}", newest(bin).display()))
    .collect()
}

fn append_times(text: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(root().join("target/vm-times.txt")) {
        let _ = f.write_all(text.as_bytes());
    }
}

/// Every case ran and passed.
fn assert_cases(results: &[CaseResult], cases: &[&str], console: &str) {
    for c in cases {
        let r = results.iter().find(|r| r.name == *c).unwrap_or_else(|| panic!("case {c} did not run:\n{console}"));
        assert!(r.ok, "case {c} failed: {}\n{console}", r.what);
    }
}

/// Boot a written stick under each firmware (scripts/boot-check), timed.
fn boots(img: &Path, modes: &[&str], sector: u32) {
    for mode in modes {
        let t0 = Instant::now();
        let out = Command::new(root().join("scripts/boot-check"))
            .arg(img)
            .args([mode, "--timeout", "180", "--sector-size", &sector.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{} did not boot under {mode}:\n{}", img.display(), text(&out));
        append_times(&format!("  boot {} {mode}: {:.1} s\n", img.display(), t0.elapsed().as_secs_f64()));
    }
}

/// The written NTFS stick: NTFS + bridge partitions, every file through ntfs-3g, the bridge's loader.
fn check_ntfs(img: &Path, fx: &Fixture, work: &Path) {
    let (label, parts) = partitions(img);
    assert_eq!((label.as_str(), parts.len()), ("dos", 2), "{parts:?}");
    assert_eq!((parts[0].2.as_str(), parts[1].2.as_str()), ("7", "ef"), "{parts:?}");
    verify_ntfs(img, parts[0].0, parts[0].1, fx, work, &["boot/grub/grub.cfg"]);
    verify_bridge(img, parts[1].0);
}

/// The extended set (defaults, NTFS through ntfs-3g and ntfs3, the 6.1 kernel) runs with
/// WOESAFE_VM_EXTENDED=1, as CI runs it (.ci/run); `scripts/test` alone runs the default set, to stay within its
/// time.
fn extended() -> bool {
    std::env::var_os("WOESAFE_VM_EXTENDED").is_some_and(|v| v == "1")
}

#[test]
fn vm_debian_6_12() {
    let name = "vm_debian_6_12";
    let _one = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    if !vm_ready(name) {
        return;
    }
    let fx = vm_fixture();
    let dir = tempfile::tempdir_in(root().join("target")).unwrap();
    let mut sticks = vec![
        stick(1010),                                        // kernel udf + vfat
        Stick { mib: 1040, removable: false, sector: 512 }, // a fixed USB disk
        stick(1050),                                        // / on device-mapper
        stick(1060),                                        // udev's flock convention
        Stick { mib: 1070, removable: true, sector: 4096 }, // 4096-byte sectors
    ];
    let mut cases = vec!["kernel", "fixed", "virtio", "root_dm", "udev", "4k"];
    if extended() {
        sticks.extend([stick(1000), stick(1020), stick(1030), stick(1080), stick(1090), stick(1100)]);
        cases.extend(["defaults", "ntfs3g", "ntfs3", "kill", "woeusb_ntfs_held", "woeusb_fat", "host_tests"]);
    } else {
        append_times(
            "  (extended set not run: defaults, ntfs3g, ntfs3, kill, woeusb_ntfs_held, woeusb_fat, host_tests and \
             the 6.1 kernel; WOESAFE_VM_EXTENDED=1)\n",
        );
    }
    // systemd-udevd runs in this guest while every case writes.
    let (results, console) = run_guest("6.12.", &sticks, &cases, true, dir.path());
    assert_cases(&results, &["udev_start"], &console);
    assert_cases(&results, &cases, &console);

    // The sticks, checked on the host.
    let t0 = Instant::now();
    let work = dir.path().join("work");
    let mut fat = vec![1010, 1040, 1060];
    if extended() {
        // (the WoeUSB-ng sticks as woesafe wrote them after recover)
        fat.extend([1000, 1090, 1100]);
    }
    for &mib in &fat {
        let w = work.join(mib.to_string());
        std::fs::create_dir_all(&w).unwrap();
        verify_written(&image(dir.path(), mib), &fx, &w);
    }
    if extended() {
        private_mount_namespace();
        for mib in [1020, 1030] {
            let w = work.join(mib.to_string());
            std::fs::create_dir_all(&w).unwrap();
            check_ntfs(&image(dir.path(), mib), &fx, &w);
        }
    }
    append_times(&format!("  host checks of the sticks: {:.1} s\n", t0.elapsed().as_secs_f64()));
    boots(&image(dir.path(), 1010), &["bios", "uefi"], 512);
    boots(&image(dir.path(), 1070), &["uefi"], 4096);
    if extended() {
        for mib in [1000, 1020, 1030] {
            boots(&image(dir.path(), mib), &["bios", "uefi"], 512);
        }
    }
}

#[test]
fn vm_debian_6_1() {
    let name = "vm_debian_6_1";
    let _one = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    if !extended() || !vm_ready(name) {
        return;
    }
    let fx = vm_fixture();
    let dir = tempfile::tempdir_in(root().join("target")).unwrap();
    let sticks = [stick(1010), stick(1080)];
    let cases = ["kernel", "kill"];
    let (results, console) = run_guest("6.1.", &sticks, &cases, false, dir.path());
    assert_cases(&results, &cases, &console);
    let w = dir.path().join("work");
    std::fs::create_dir_all(&w).unwrap();
    verify_written(&image(dir.path(), 1010), &fx, &w);
}
