//! Disks whose logical sectors are 4096 bytes (some USB SSDs and card readers): the partition table and the
//! filesystem are laid out in them, BIOS boot is left out (and refused when asked for), and other sector sizes
//! are refused before anything is written. The targets are loop devices with a 4096- (or 2048-) byte block
//! size over image files; the VM tier (scripts/vm-test) writes real 4096-byte USB disks.

mod common;
use common::*;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

/// An image file of `size` bytes on a loop device with `block` byte sectors, held (autoclear) by the guard.
fn sector_loop(path: &Path, size: u64, block: u32) -> (std::fs::File, woesafe::sys::loopdev::LoopDevice) {
    let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path).unwrap();
    f.set_len(size).unwrap();
    let window = woesafe::sys::loopdev::LoopWindow::default();
    let lo = woesafe::sys::loopdev::LoopDevice::attach_with_block_size(&f, path, window, block).unwrap();
    (f, lo)
}

fn sfdisk_json(dev: &Path) -> serde_json::Value {
    let out = Command::new("sfdisk").arg("--json").arg(dev).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn four_k_disk_is_laid_out_in_4k_sectors_and_boots_uefi() {
    if !need_root("four_k_disk_is_laid_out_in_4k_sectors_and_boots_uefi") {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("4k.img");
    let (_f, lo) = sector_loop(&image, 1 << 30, 4096);
    let dev = lo.path().to_str().unwrap().to_string();

    // BIOS boot asked for: refused before anything is written.
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), &dev, "--yes", "--boot", "both"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("has 4096-byte sectors, which BIOS firmware cannot boot from"), "{}", text(&out));
    let mut head = vec![0u8; 1 << 20];
    std::fs::File::open(&image).unwrap().read_exact_at(&mut head, 0).unwrap();
    assert!(head.iter().all(|&b| b == 0), "the refused write touched the disk");

    // The defaults: UEFI only, said so.
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), &dev, "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("4096-byte sectors, which BIOS firmware cannot boot from: the stick boots under UEFI"));

    // sfdisk reads the table in the device's sectors: partition 1 at sector 256 (1 MiB), FAT32 LBA, active.
    let json = sfdisk_json(lo.path());
    let pt = &json["partitiontable"];
    assert_eq!(pt["sectorsize"], 4096, "{json}");
    assert_eq!(pt["label"], "dos", "{json}");
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!((parts.len(), &parts[0]["start"], &parts[0]["type"]), (1, &256.into(), &"c".into()), "{json}");
    let size = parts[0]["size"].as_u64().unwrap() * 4096;
    // No BIOS boot code in sector 0.
    std::fs::File::open(&image).unwrap().read_exact_at(&mut head[..512], 0).unwrap();
    assert!(head[..440].iter().all(|&b| b == 0), "BIOS boot code on a 4096-byte-sector stick");
    // The FAT's own sectors are 4096 bytes and its hidden sectors count them.
    let mut bs = [0u8; 512];
    std::fs::File::open(&image).unwrap().read_exact_at(&mut bs, 1 << 20).unwrap();
    assert_eq!(u16::from_le_bytes([bs[11], bs[12]]), 4096);
    assert_eq!(u32::from_le_bytes(bs[28..32].try_into().unwrap()), 256);

    // fsck.fat through a 4096-byte-sector window of the partition; every file by sha256 (mtools reads the
    // image file, taking the sector size from the boot sector).
    let pf = std::fs::File::open(&image).unwrap();
    let window = woesafe::sys::loopdev::LoopWindow { offset: 1 << 20, size, read_only: true, direct_io: false };
    let part = woesafe::sys::loopdev::LoopDevice::attach_with_block_size(&pf, &image, window, 4096).unwrap();
    let out = Command::new("fsck.fat").arg("-n").arg(part.path()).output().unwrap();
    assert!(out.status.success(), "fsck.fat -n:\n{}", text(&out));
    drop(part);
    let ext = work.path().join("extracted");
    std::fs::create_dir(&ext).unwrap();
    extract_and_compare(&image, &fx, &ext);

    // woesafe verify reads it back in the device's sectors.
    let out = woesafe(&["verify", fx.iso.to_str().unwrap(), &dev]);
    assert!(out.status.success(), "{}", text(&out));

    // OVMF boots it as a USB disk with 4096-byte logical sectors (usb-bot + scsi-hd).
    if !have("qemu-system-x86_64") {
        woesafe::report_skip("four_k_disk_is_laid_out_in_4k_sectors_and_boots_uefi (boot)", "no qemu-system-x86_64");
        return;
    }
    drop(lo);
    let out = Command::new(root().join("scripts/boot-check"))
        .arg(&image)
        .args(["uefi", "--timeout", "180", "--sector-size", "4096"])
        .output()
        .unwrap();
    assert!(out.status.success(), "OVMF did not boot the 4096-byte-sector stick:\n{}", text(&out));
}

#[test]
fn four_k_gpt_with_ntfs_and_its_bridge() {
    if !need_root("four_k_gpt_with_ntfs_and_its_bridge") {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("4k-ntfs.img");
    let (_f, lo) = sector_loop(&image, 1 << 30, 4096);
    let dev = lo.path().to_str().unwrap().to_string();
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), &dev, "--yes", "--table", "gpt", "--fs", "ntfs"]);
    assert!(out.status.success(), "{}", text(&out));
    let json = sfdisk_json(lo.path());
    let pt = &json["partitiontable"];
    assert_eq!((&pt["sectorsize"], &pt["label"]), (&4096.into(), &"gpt".into()), "{json}");
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{json}");
    assert_eq!(parts[0]["start"], 256);
    assert_eq!(parts[1]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "{json}");
    let out = Command::new("sfdisk").arg("--verify").arg(lo.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("No errors detected"), "{}", text(&out));
    // NTFS in 4096-byte sectors (ntfsinfo's view of the boot sector).
    let mut bs = [0u8; 512];
    std::fs::File::open(&image).unwrap().read_exact_at(&mut bs, 1 << 20).unwrap();
    assert_eq!(&bs[3..11], b"NTFS    ");
    assert_eq!(u16::from_le_bytes([bs[11], bs[12]]), 4096);
    // The bridge's FAT too.
    let bridge = parts[1]["start"].as_u64().unwrap() * 4096;
    std::fs::File::open(&image).unwrap().read_exact_at(&mut bs, bridge).unwrap();
    assert_eq!(u16::from_le_bytes([bs[11], bs[12]]), 4096, "bridge FAT sector size");
    let out = woesafe(&["verify", fx.iso.to_str().unwrap(), &dev]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn other_sector_sizes_are_refused_untouched() {
    if !need_root("other_sector_sizes_are_refused_untouched") {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("2k.img");
    let (f, lo) = sector_loop(&image, 1 << 30, 2048);
    f.write_all_at(b"KEEP", 0).unwrap();
    let dev = lo.path().to_str().unwrap().to_string();
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), &dev, "--yes"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("has 2048-byte logical sectors; woesafe lays sticks out in 512- or 4096-byte"));
    let mut head = [0u8; 4];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(&head, b"KEEP");
}
