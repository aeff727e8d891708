//! Windows on ARM: an ISO whose only UEFI loader is efi/boot/bootaa64.efi and that has no /bootmgr becomes a
//! UEFI-only stick (no BIOS boot code, a report naming arm64), FAT32 by default and NTFS through an arm64 GRUB
//! bridge; both boot under AAVMF (qemu-system-aarch64, software emulation) to the marker the fixture's arm64
//! loader prints. `--boot bios|both` is refused before anything is written.

mod common;
use common::*;
use std::os::unix::fs::FileExt;

fn arm64_fixture() -> Fixture {
    fixture_with("win-arm64", &["--arm64"])
}

/// What a refused write must leave: an image file with known bytes.
fn precious_image(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("target.img");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(600 << 20).unwrap();
    f.write_all_at(b"precious data, do not erase", 0).unwrap();
    p
}

fn digest(p: &std::path::Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

fn can_boot_arm64(test: &str) -> bool {
    for tool in ["qemu-system-aarch64", "grub-mkstandalone"] {
        if !have(tool) {
            woesafe::report_skip(test, &format!("{tool} not installed (scripts/install-deps installs it)"));
            return false;
        }
    }
    if !std::path::Path::new("/usr/share/AAVMF/AAVMF_CODE.fd").exists() {
        woesafe::report_skip(test, "AAVMF (qemu-efi-aarch64) not installed (scripts/install-deps installs it)");
        return false;
    }
    true
}

#[test]
fn arm64_fat32_stick_is_uefi_only_and_boots_under_aavmf() {
    let name = "arm64_fat32_stick_is_uefi_only_and_boots_under_aavmf";
    if !need_root(name) || !can_boot_arm64(name) {
        return;
    }
    let fx = arm64_fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("arm64.img");
    let out = write_fixture(&fx.iso, &image, "2G", &["--verify"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("boots: UEFI (arm64)"), "the report must say what boots, on which arch:\n{all}");
    assert!(!stderr.contains("BIOS and") && !stderr.contains("bootx64.efi: UEFI boot is not available"), "{all}");
    assert!(stderr.contains("the ISO has no /bootmgr"), "the BIOS part left out is said:\n{all}");
    assert!(stderr.contains("identical to the ISO"), "write --verify:\n{all}");
    // No BIOS boot code: sector 0's code area is empty and there is no grub.cfg; FAT32 on MBR.
    let mut mbr = [0u8; 512];
    std::fs::File::open(&image).unwrap().read_exact_at(&mut mbr, 0).unwrap();
    assert!(mbr[..440].iter().all(|&b| b == 0), "no BIOS boot code on an ISO without /bootmgr");
    assert_eq!(mbr[0x1C2], 0x0C, "FAT32 (LBA)");
    let ext = work.path().join("ext");
    std::fs::create_dir(&ext).unwrap();
    extract_and_compare(&image, &fx, &ext);
    let listed = std::fs::read_to_string(&fx.manifest).unwrap().lines().count();
    assert_eq!(walk_files(&ext).len(), listed, "the ISO's files and nothing else (no boot/grub/grub.cfg)");
    assert!(ext.join("efi/boot/bootaa64.efi").is_file() && !ext.join("efi/boot/bootx64.efi").exists());

    let (ok, log) = boot_check(&image, "uefi-aa64");
    assert!(ok, "AAVMF → efi/boot/bootaa64.efi did not reach the marker:\n{log}");
    assert!(log.contains("uefi-aa64 OK"), "{log}");
}

#[test]
fn arm64_is_named_and_bios_boot_is_refused() {
    let name = "arm64_is_named_and_bios_boot_is_refused";
    if !need_root(name) {
        return;
    }
    let fx = arm64_fixture();
    let work = tempfile::tempdir().unwrap();
    // inspect names the arch and says there is no BIOS boot.
    let out = woesafe(&["inspect", fx.iso.to_str().unwrap()]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("UEFI arm64 (/efi/boot/bootaa64.efi)") && !t.contains("BIOS (bootmgr)"), "{t}");
    let out = woesafe(&["inspect", "--json", fx.iso.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["boot"]["bios_bootmgr"], false, "{json}");
    assert_eq!(json["boot"]["uefi_loaders"][0]["arch"], "arm64", "{json}");
    assert_eq!(json["layout"]["uefi_arch"], "arm64", "{json}");
    assert_eq!(json["layout"]["bios"], serde_json::Value::Null, "{json}");
    // A dry run plans UEFI only.
    let image = precious_image(work.path());
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--yes", "--dry-run"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("UEFI boot (arm64): the ISO's /efi/boot/bootaa64.efi"), "{t}");
    assert!(t.contains("BIOS boot: none (the ISO has no /bootmgr)"), "{t}");
    // --boot bios and --boot both are refused before anything is written (exit 3, the image unchanged).
    let before = digest(&image);
    for boot in ["bios", "both"] {
        let out = woesafe(&["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--yes", "--boot", boot]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(3), "--boot {boot}: {t}");
        assert!(t.contains(&format!("--boot {boot}: the ISO has no /bootmgr")) && t.contains("--boot uefi"), "{t}");
        assert!(!t.contains("Writing the partition table"), "{t}");
        assert_eq!(digest(&image), before, "--boot {boot}: a refused write changed the target");
    }
}

#[test]
fn arm64_ntfs_stick_boots_through_the_arm64_bridge() {
    let name = "arm64_ntfs_stick_boots_through_the_arm64_bridge";
    if !need_root(name) || !can_boot_arm64(name) {
        return;
    }
    if !std::path::Path::new("/usr/lib/grub/arm64-efi/ntfs.mod").exists() {
        woesafe::report_skip(name, "GRUB's arm64-efi modules are not installed (scripts/install-deps installs them)");
        return;
    }
    private_mount_namespace();
    let fx = arm64_fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("arm64-ntfs.img");
    let out = write_fixture(&fx.iso, &image, "2G", &["--fs", "ntfs", "--target-driver", "userspace"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("UEFI (arm64): the FAT bridge partition"), "{all}");
    assert!(all.contains("boots: UEFI (arm64)"), "{all}");
    let (label, parts) = partitions(&image);
    assert_eq!(label, "dos");
    assert_eq!(parts.len(), 2, "NTFS and the bridge: {parts:?}");
    // The bridge's loader is an arm64 EFI program named BOOTAA64.EFI.
    let out = std::process::Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{}", image.display(), parts[1].0 * 512))
        .arg("::/EFI/BOOT/BOOTAA64.EFI")
        .arg(work.path().join("bridge.efi"))
        .output()
        .unwrap();
    assert!(out.status.success(), "the bridge has no EFI/BOOT/BOOTAA64.EFI: {}", text(&out));
    let bridge = std::fs::read(work.path().join("bridge.efi")).unwrap();
    assert_eq!(woesafe::boot::uefi::check_efi(&bridge, woesafe::boot::uefi::Arch::Arm64), Ok(()));
    verify_ntfs(&image, parts[0].0, parts[0].1, &fx, work.path(), &[]);
    let out = woesafe(&["verify", fx.iso.to_str().unwrap(), image.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));

    let (ok, log) = boot_check(&image, "uefi-aa64");
    assert!(ok, "AAVMF → the arm64 GRUB bridge → bootaa64.efi on NTFS did not reach the marker:\n{log}");
}

#[test]
fn arm64_ntfs_without_arm64_grub_is_refused_naming_the_package() {
    let name = "arm64_ntfs_without_arm64_grub_is_refused_naming_the_package";
    if !need_root(name) {
        return;
    }
    let fx = arm64_fixture();
    // This thread's own mount namespace: an empty tmpfs hides GRUB's arm64 modules from woesafe only.
    private_mount_namespace();
    if std::path::Path::new("/usr/lib/grub/arm64-efi").is_dir() {
        cover_with_tmpfs("/usr/lib/grub/arm64-efi");
    }
    let work = tempfile::tempdir().unwrap();
    let image = precious_image(work.path());
    let before = digest(&image);
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--yes", "--fs", "ntfs"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(t.contains("GRUB for arm64 UEFI is not installed") && t.contains("grub-efi-arm64-bin:arm64"), "{t}");
    assert!(t.contains("--fs fat32"), "the way out is named: {t}");
    assert_eq!(digest(&image), before, "a refused write changed the target");
}

/// A user's UEFI:NTFS image without an arm64 loader cannot boot a Windows on ARM stick: refused before writing.
#[test]
fn an_x64_only_uefi_ntfs_image_is_refused_for_arm64() {
    let name = "an_x64_only_uefi_ntfs_image_is_refused_for_arm64";
    if !need_root(name) {
        return;
    }
    let fx = arm64_fixture();
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("uefi-ntfs.img");
    std::fs::File::create(&img).unwrap().set_len(1 << 20).unwrap();
    let i = img.to_str().unwrap();
    for (prog, args) in [
        ("mkfs.fat", vec!["-n", "UEFI_NTFS", i]),
        ("mmd", vec!["-i", i, "::/EFI", "::/EFI/BOOT"]),
        ("mcopy", vec!["-i", i, "/dev/null", "::/EFI/BOOT/BOOTX64.EFI"]),
    ] {
        let out = std::process::Command::new(prog).args(&args).env("MTOOLS_SKIP_CHECK", "1").output().unwrap();
        assert!(out.status.success(), "{prog}: {}", text(&out));
    }
    let image = precious_image(work.path());
    let before = digest(&image);
    let out = woesafe(&[
        "write",
        fx.iso.to_str().unwrap(),
        image.to_str().unwrap(),
        "--yes",
        "--fs",
        "ntfs",
        "--uefi-ntfs-image",
        i,
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(t.contains("it has no EFI/BOOT/BOOTAA64.EFI, the loader arm64 UEFI firmware starts"), "{t}");
    assert_eq!(digest(&image), before, "a refused write changed the target");
}
