//! `woesafe list` on this machine: loop devices of the test's own, over sparse files, appear in `list --all
//! --json` with their size, read-only flag and backing file, and with exactly the refusal (or acceptance)
//! woesafe write's checks give them; the default list hides disks that are neither removable nor on USB; a user
//! who is not root gets the same list. No loop device or mount of anyone else is touched.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

use woesafe::stick::disk::{self, TargetFacts};
use woesafe::stick::safety::{self, Refusal};

/// A sparse file of `size` bytes.
fn sparse(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

fn list_json(args: &[&str]) -> serde_json::Value {
    let out = woesafe(args);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(&out)))
}

fn entry<'a>(doc: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    doc["blockdevices"].as_array().unwrap().iter().find(|d| d["name"] == name)
}

/// What woesafe write's checks say about `device` (with an ISO elsewhere: a file in `dir`).
fn write_says(device: &Path, dir: &Path) -> Option<String> {
    let iso = sparse(dir, "elsewhere.iso", 4096);
    let facts = disk::target_facts(device).unwrap();
    assert!(matches!(facts, TargetFacts::Block(_)));
    let host = disk::host_facts(&iso).unwrap();
    safety::check_target(&facts, &host, &woesafe::sys::loopdev::attached_paths(), &iso, false)
        .err()
        .map(|r| r.to_string())
}

#[test]
fn loop_devices_with_the_facts_and_verdicts_of_write() {
    if !need_root("loop_devices_with_the_facts_and_verdicts_of_write") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let rw_file = sparse(work.path(), "stick.img", 96 << 20);
    let ro_file = sparse(work.path(), "locked.img", 40 << 20);
    // Detached when dropped (autoclear), also when an assertion fails.
    let (_f1, rw) = test_loop(&rw_file, 0, 0, false);
    let (_f2, ro) = test_loop(&ro_file, 0, 0, true);

    let all = list_json(&["list", "--all", "--json"]);
    let e = entry(&all, &rw.name()).unwrap_or_else(|| panic!("{} missing from {all:#}", rw.name()));
    assert_eq!(e["path"], rw.path().to_str().unwrap());
    assert_eq!(e["size"], 96u64 << 20, "{e:#}");
    assert_eq!((e["ro"].as_bool(), e["rm"].as_bool()), (Some(false), Some(false)), "{e:#}");
    assert_eq!((e["tran"].as_str(), e["type"].as_str()), (Some("loop"), Some("loop")), "{e:#}");
    assert_eq!(e["backing_file"], rw_file.to_str().unwrap());
    assert_eq!(e["mountpoints"], serde_json::json!([]));
    assert_eq!((e["holds_root"].as_bool(), e["system"].as_bool()), (Some(false), Some(false)));
    assert_eq!(write_says(rw.path(), work.path()), None, "write takes it");
    assert_eq!((e["writable_by_woesafe"].as_bool(), e["refusal"].is_null()), (Some(true), true), "{e:#}");

    let e = entry(&all, &ro.name()).unwrap_or_else(|| panic!("{} missing from {all:#}", ro.name()));
    assert_eq!(e["size"], 40u64 << 20, "{e:#}");
    assert_eq!(e["ro"], true, "{e:#}");
    let said = write_says(ro.path(), work.path()).expect("write refuses a read-only loop device");
    assert_eq!(said, Refusal::ReadOnly { path: ro.path().to_path_buf() }.to_string());
    assert_eq!(e["refusal"], said.as_str(), "{e:#}");
    assert_eq!(e["writable_by_woesafe"], false);

    // Without --all: only removable or USB disks, so neither loop device (nor this machine's fixed disks).
    let default = list_json(&["list", "--json"]);
    for d in default["blockdevices"].as_array().unwrap() {
        assert!(d["rm"] == true || d["tran"] == "usb", "shown by default: {d:#}");
    }
    assert!(entry(&default, &rw.name()).is_none() && entry(&default, &ro.name()).is_none());
    let out = woesafe(&["list"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(!table.contains(&format!("{} ", rw.path().display())), "{table}");
    let out = woesafe(&["list", "--all"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&format!("{} ", rw.path().display())), "{table}");
    assert!(table.contains(&format!("refused: {said}")), "{table}");
}

/// A filesystem mounted on a loop device (in a private mount namespace of this test, which woesafe inherits):
/// refused as mounted, saying where, in write's words.
#[test]
fn a_mounted_loop_device_is_refused_saying_where() {
    if !need_root("a_mounted_loop_device_is_refused_saying_where") {
        return;
    }
    if !have("mkfs.ext4") {
        woesafe::report_skip("a_mounted_loop_device_is_refused_saying_where", "mkfs.ext4 missing");
        return;
    }
    private_mount_namespace();
    let work = tempfile::tempdir().unwrap();
    let file = sparse(work.path(), "mounted.img", 32 << 20);
    let (_f, lo) = test_loop(&file, 0, 0, false);
    let out = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(lo.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mnt = work.path().join("mnt dir");
    std::fs::create_dir(&mnt).unwrap();
    /// Unmounts before the loop device and the temporary directory go (dropped in reverse order).
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    nix::mount::mount(Some(lo.path()), &mnt, Some("ext4"), nix::mount::MsFlags::empty(), None::<&str>).unwrap();
    let _unmount = Unmount(mnt.clone());

    let all = list_json(&["list", "--all", "--json"]);
    let e = entry(&all, &lo.name()).unwrap_or_else(|| panic!("{} missing from {all:#}", lo.name()));
    assert_eq!(e["mountpoints"], serde_json::json!([mnt.to_str().unwrap()]), "{e:#}");
    let said = Refusal::Mounted { path: lo.path().to_path_buf(), mounts: vec![mnt.display().to_string()] };
    assert_eq!(e["refusal"], said.to_string().as_str(), "{e:#}");
}

/// A user who is not root sees the same facts (sysfs is world-readable) and hears that write needs root.
#[test]
fn not_root_gets_the_same_list() {
    if !need_root("not_root_gets_the_same_list") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let work = tempfile::tempdir().unwrap();
    let file = sparse(work.path(), "user.img", 24 << 20);
    let (_f, lo) = test_loop(&file, 0, 0, false);
    let out = Command::new(bin()).args(["list", "--all", "--json"]).uid(65534).gid(65534).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = entry(&doc, &lo.name()).unwrap_or_else(|| panic!("{} missing from {doc:#}", lo.name()));
    assert_eq!((e["size"].as_u64(), e["refusal"].is_null()), (Some(24 << 20), true), "{e:#}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not running as root") && err.contains("`woesafe write` needs root"), "{err}");
}
