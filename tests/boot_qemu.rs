//! The written stick really boots: QEMU (software emulation) boots the image as a USB stick under SeaBIOS and
//! under OVMF, and the test waits for the markers the fixture's bootmgr and bootx64.efi print on the serial port.

mod common;
use common::*;

#[test]
fn written_image_boots_under_bios_and_uefi() {
    if !need_root("written_image_boots_under_bios_and_uefi") {
        return;
    }
    for tool in ["qemu-system-x86_64"] {
        if !have(tool) {
            // scripts/test installs it; only a machine without the package skips.
            woesafe::report_skip("written_image_boots_under_bios_and_uefi", &format!("{tool} not installed"));
            return;
        }
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("stick.img");
    write_fixture(&fx.iso, &image, "2G", &[]);
    let (ok, log) = boot_check(&image, "bios");
    assert!(ok, "BIOS boot (SeaBIOS → GRUB ntldr → bootmgr) did not reach the marker:\n{log}");
    assert!(log.contains("bios OK"), "{log}");
    let (ok, log) = boot_check(&image, "uefi");
    assert!(ok, "UEFI boot (OVMF → efi/boot/bootx64.efi) did not reach the marker:\n{log}");
    assert!(log.contains("uefi OK"), "{log}");
}

#[test]
fn bios_only_and_uefi_only() {
    if !need_root("bios_only_and_uefi_only") || !have("qemu-system-x86_64") {
        woesafe::report_skip("bios_only_and_uefi_only", "needs root and qemu-system-x86_64");
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    // --boot uefi: no GRUB in the MBR gap, so SeaBIOS finds nothing to boot, while OVMF boots.
    let image = work.path().join("uefi.img");
    write_fixture(&fx.iso, &image, "600M", &["--boot", "uefi"]);
    let mut mbr = [0u8; 512];
    use std::os::unix::fs::FileExt;
    std::fs::File::open(&image).unwrap().read_exact_at(&mut mbr, 0).unwrap();
    assert!(mbr[..440].iter().all(|&b| b == 0), "--boot uefi must not write BIOS boot code");
    let (ok, log) = boot_check(&image, "uefi");
    assert!(ok, "{log}");
    // ... and the boot check can fail: without boot code SeaBIOS never reaches the marker.
    let (ok, log) = boot_check_within(&image, "bios", 10);
    assert!(!ok, "a stick without BIOS boot code must not pass the BIOS boot check:\n{log}");
    // --boot bios: boots under SeaBIOS.
    let image = work.path().join("bios.img");
    write_fixture(&fx.iso, &image, "600M", &["--boot", "bios"]);
    let (ok, log) = boot_check(&image, "bios");
    assert!(ok, "{log}");
}

/// `--table gpt`: GPT with a Microsoft basic data partition and a protective MBR; UEFI only, and OVMF boots it.
#[test]
fn gpt_stick_boots_under_uefi() {
    if !need_root("gpt_stick_boots_under_uefi") || !have("qemu-system-x86_64") {
        woesafe::report_skip("gpt_stick_boots_under_uefi", "needs root and qemu-system-x86_64");
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("gpt.img");
    let out = write_fixture(&fx.iso, &image, "600M", &["--table", "gpt"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("GPT partition 1 at 1 MiB"), "{}", text(&out));
    verify_written_as(&image, &fx, work.path(), true);
    let (ok, log) = boot_check(&image, "uefi");
    assert!(ok, "{log}");
}
