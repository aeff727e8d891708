//! `woesafe write` end to end on image files and loop devices, with each driver this machine offers: the
//! partition table, fsck.fat, every file byte for byte, and the host's mount table and loop devices unchanged.

mod common;
use common::*;

fn write_and_verify(driver_args: &[&str], name: &str) {
    if !need_root(name) {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("out.img");
    let before = host_state(work.path());
    let mut args = vec!["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "600M", "--yes"];
    args.extend_from_slice(driver_args);
    let out = woesafe(&args);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Done:"), "{err}");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 600 << 20);
    let after = host_state(work.path());
    assert_eq!(before, after, "the write changed the host's mount table or loop devices");
    verify_written(&image, &fx, work.path());
}

#[test]
fn image_file_userspace_drivers() {
    write_and_verify(&["--source-driver", "userspace", "--target-driver", "userspace"], "image_file_userspace_drivers");
}

#[test]
fn image_file_auto_drivers_say_what_they_chose() {
    if !need_root("image_file_auto_drivers_say_what_they_chose") {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("auto.img");
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "600M", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap();
    let expect_src = if fs.contains("\tudf\n") { "(kernel mount)" } else { "UDF (userspace reader)" };
    assert!(err.contains(&format!("Drivers: source {expect_src}")) || err.contains("Drivers: source udf"), "{err}");
    assert!(err.contains("(auto: from /proc/filesystems)"), "{err}");
}

#[test]
fn kernel_drivers_where_available() {
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let have = |f: &str| fs.lines().any(|l| l.split_whitespace().last() == Some(f));
    if !have("vfat") || !have("udf") {
        woesafe::report_skip("kernel_drivers_where_available", "this kernel lacks vfat or udf (/proc/filesystems)");
        return;
    }
    write_and_verify(&["--source-driver", "kernel", "--target-driver", "kernel"], "kernel_drivers_where_available");
}

#[test]
fn loop_device_target() {
    if !need_root("loop_device_target") {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let backing = work.path().join("stick.img");
    std::fs::File::create(&backing).unwrap().set_len(700 << 20).unwrap();
    // The "stick": an autoclear loop device the test holds (and that goes away with the test, pass or fail).
    let (_f, stick) = test_loop(&backing, 0, 0, false);
    let before = host_state(work.path());
    let out = woesafe(&[
        "write",
        fx.iso.to_str().unwrap(),
        stick.path().to_str().unwrap(),
        "--yes",
        "--label",
        "my stick",
        "--target-driver",
        "userspace",
        "--source-driver",
        "userspace",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAT32 \"MY STICK\""), "{}", text(&out));
    let out_write = out;
    assert_eq!(before, host_state(work.path()), "host state changed (only the test's own loop may be attached)");
    drop(stick);
    verify_written(&backing, &fx, work.path());
    let out = std::process::Command::new("minfo")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@1M", backing.display()))
        .arg("::")
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(info.contains("disk label=\"MY STICK"), "{}", text(&out));
    // The serial woesafe reports is the one in the boot sector.
    let err = String::from_utf8_lossy(&out_write.stderr);
    let serial = err.split("(serial ").nth(1).and_then(|r| r.get(..9)).expect("serial in the report").replace('-', "");
    assert!(info.contains(&format!("serial number: {serial}")), "{serial} vs\n{info}");
}

#[test]
fn existing_image_keeps_its_size_and_label_is_derived() {
    if !need_root("existing_image_keeps_its_size_and_label_is_derived") {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("existing.img");
    std::fs::File::create(&image).unwrap().set_len(650 << 20).unwrap();
    let out = woesafe(&[
        "write",
        fx.iso.to_str().unwrap(),
        image.to_str().unwrap(),
        "--size",
        "2G",
        "--yes",
        "--target-driver",
        "userspace",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keeps its size"), "{}", text(&out));
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 650 << 20);
    // CCCOMA_X64FRE_EN-US_DV9 → CCCOMA_X64F
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAT32 \"CCCOMA_X64F\""), "{}", text(&out));
}

#[test]
fn file_over_1_gib_spanning_several_udf_extents() {
    if !need_root("file_over_1_gib_spanning_several_udf_extents") {
        return;
    }
    // A fixture of its own: sources/big.bin of 1100 MiB, which UDF stores in two extents (limit 1 GiB - 2 KiB).
    let work = tempfile::tempdir().unwrap();
    let iso = work.path().join("win.iso");
    let out = std::process::Command::new(root().join("scripts/make-test-iso"))
        .arg(&iso)
        .args(["--big-file-mib", "1100"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let fx = Fixture { iso: iso.clone(), tree: work.path().join("win.d"), manifest: work.path().join("win.sha256") };
    let image = work.path().join("out.img");
    write_fixture(&iso, &image, "2G", &[]);
    // The ISO and its tree are no longer needed: free the space before extracting.
    std::fs::remove_file(&iso).unwrap();
    verify_written(&image, &fx, work.path());
}

/// An ISO that brings its own boot/grub/grub.cfg: BIOS boot replaces it with woesafe's (ntldr), instead of
/// failing halfway.
#[test]
fn iso_with_its_own_grub_cfg() {
    if !need_root("iso_with_its_own_grub_cfg") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("sources")).unwrap();
    std::fs::create_dir_all(tree.join("BOOT/GRUB")).unwrap();
    std::fs::write(tree.join("sources/boot.wim"), b"wim").unwrap();
    std::fs::write(tree.join("BOOT/GRUB/GRUB.CFG"), b"set timeout=5\n").unwrap();
    let iso = work.path().join("grub.iso");
    assert!(
        std::process::Command::new("genisoimage")
            .args(["-quiet", "-udf", "-J", "-o"])
            .arg(&iso)
            .arg(&tree)
            .status()
            .unwrap()
            .success()
    );
    let image = work.path().join("out.img");
    write_fixture(&iso, &image, "100M", &[]);
    let out = std::process::Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@1M", image.display()))
        .arg("::/boot/grub/grub.cfg")
        .output()
        .unwrap();
    let cfg = String::from_utf8_lossy(&out.stdout);
    assert!(cfg.contains("ntldr /bootmgr") && !cfg.contains("timeout"), "{}", text(&out));
}
