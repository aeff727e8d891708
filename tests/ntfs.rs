//! NTFS sticks (--fs ntfs): the partition layout (NTFS + a FAT bridge for UEFI), every file byte for byte
//! through ntfs-3g, BIOS boot through GRUB's ntldr on NTFS, UEFI boot through the bridge under MBR and GPT, and
//! a user-supplied UEFI:NTFS image.

mod common;
use common::*;
use std::process::Command;

fn ntfs_tools() -> bool {
    have("ntfs-3g") && have("mkntfs")
}

#[test]
fn ntfs_mbr_byte_for_byte_and_boots_bios_and_uefi() {
    let name = "ntfs_mbr_byte_for_byte_and_boots_bios_and_uefi";
    if !need_root(name) {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("ntfs.img");
    let before = host_state(work.path());
    let out = write_fixture(&fx.iso, &image, "1G", &["--fs", "ntfs"]);
    let msg = text(&out);
    assert!(msg.contains("Filesystem: NTFS — asked for with --fs ntfs"), "{msg}");
    assert!(msg.contains("UEFI bridge: partition 2"), "{msg}");
    assert_eq!(before, host_state(work.path()), "the write left something behind");
    let (label, parts) = partitions(&image);
    assert_eq!(label, "dos");
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!((parts[0].0, parts[0].2.as_str(), parts[0].3), (2048, "7", true), "{parts:?}");
    assert_eq!((parts[1].2.as_str(), parts[1].3, parts[1].1), ("ef", false, 4096), "{parts:?}");
    assert_eq!(parts[0].0 + parts[0].1, parts[1].0, "the bridge follows the NTFS partition");
    private_mount_namespace();
    verify_ntfs(&image, parts[0].0, parts[0].1, &fx, work.path(), &["boot/grub/grub.cfg"]);
    verify_bridge(&image, parts[1].0);
    for mode in ["bios", "uefi"] {
        let (ok, log) = boot_check(&image, mode);
        assert!(ok, "NTFS + MBR did not boot under {mode}:\n{log}");
    }
}

#[test]
fn ntfs_gpt_boots_uefi_through_the_bridge() {
    let name = "ntfs_gpt_boots_uefi_through_the_bridge";
    if !need_root(name) {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("ntfs-gpt.img");
    write_fixture(&fx.iso, &image, "1G", &["--fs", "ntfs", "--table", "gpt"]);
    let (label, parts) = partitions(&image);
    assert_eq!(label, "gpt");
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(parts[0].2, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "Microsoft basic data");
    assert_eq!(parts[1].2, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "EFI system partition");
    let out = Command::new("sfdisk").arg("--verify").arg(&image).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("No errors detected"), "{}", text(&out));
    private_mount_namespace();
    verify_ntfs(&image, parts[0].0, parts[0].1, &fx, work.path(), &[]);
    verify_bridge(&image, parts[1].0);
    let (ok, log) = boot_check(&image, "uefi");
    assert!(ok, "NTFS + GPT did not boot under UEFI:\n{log}");
}

/// --uefi-ntfs-image: the user's image becomes the bridge partition, byte for byte. Here the image holds the
/// fixture's own loader as EFI/BOOT/BOOTX64.EFI, so the boot marker proves the firmware started it.
#[test]
fn a_user_uefi_ntfs_image_becomes_the_bridge() {
    let name = "a_user_uefi_ntfs_image_becomes_the_bridge";
    if !need_root(name) || !ntfs_tools() {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("uefi-ntfs.img");
    std::fs::File::create(&img).unwrap().set_len(1 << 20).unwrap();
    let run = |cmd: &str, args: &[&str]| {
        let out = Command::new(cmd).env("MTOOLS_SKIP_CHECK", "1").args(args).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", text(&out));
    };
    let i = img.to_str().unwrap();
    run("mkfs.fat", &["-n", "UEFI_NTFS", i]);
    run("mmd", &["-i", i, "::/EFI", "::/EFI/BOOT"]);
    let loader = fx.tree.join("efi/boot/bootx64.efi");
    run("mcopy", &["-i", i, loader.to_str().unwrap(), "::/EFI/BOOT/BOOTX64.EFI"]);
    let image = work.path().join("user-bridge.img");
    write_fixture(&fx.iso, &image, "1G", &["--fs", "ntfs", "--uefi-ntfs-image", i]);
    let (_, parts) = partitions(&image);
    assert_eq!(parts[1].1, 2048, "the bridge is the image's size (1 MiB): {parts:?}");
    let written = std::fs::read(&image).unwrap();
    let start = parts[1].0 as usize * 512;
    assert!(written[start..start + (1 << 20)] == std::fs::read(&img).unwrap()[..], "the bridge is not the image");
    let (ok, log) = boot_check(&image, "uefi");
    assert!(ok, "the user's UEFI:NTFS image did not boot:\n{log}");

    // Not a FAT image: refused before anything is touched.
    let bad = work.path().join("bad.img");
    std::fs::write(&bad, vec![0u8; 4096]).unwrap();
    let target = work.path().join("untouched.img");
    std::fs::write(&target, vec![0xAAu8; 4 << 20]).unwrap();
    let out = woesafe(&[
        "write",
        fx.iso.to_str().unwrap(),
        target.to_str().unwrap(),
        "--fs",
        "ntfs",
        "--uefi-ntfs-image",
        bad.to_str().unwrap(),
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--uefi-ntfs-image") && text(&out).contains("not a FAT filesystem image"),
        "{}",
        text(&out)
    );
    assert!(std::fs::read(&target).unwrap().iter().all(|&b| b == 0xAA), "the target was touched");
    let out = woesafe(&[
        "write",
        fx.iso.to_str().unwrap(),
        target.to_str().unwrap(),
        "--fs",
        "fat32",
        "--uefi-ntfs-image",
        i,
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("for NTFS sticks"), "{}", text(&out));
}

/// The kernel's ntfs3 driver as the target driver, where this kernel has it.
#[test]
fn kernel_ntfs3_where_available() {
    let name = "kernel_ntfs3_where_available";
    if !need_root(name) {
        return;
    }
    if !kernel_has(name, &["ntfs3"]) {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("ntfs3.img");
    let before = host_state(work.path());
    let out = write_fixture(&fx.iso, &image, "1G", &["--fs", "ntfs", "--target-driver", "kernel"]);
    assert!(text(&out).contains("ntfs3 (kernel mount)"), "{}", text(&out));
    assert_eq!(before, host_state(work.path()));
    let (_, parts) = partitions(&image);
    private_mount_namespace();
    verify_ntfs(&image, parts[0].0, parts[0].1, &fx, work.path(), &["boot/grub/grub.cfg"]);
}
