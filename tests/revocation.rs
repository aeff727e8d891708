//! The offline revocation check, end to end: the ISO's UEFI loader against this PC's dbx, read from efivars.
//! The test points woesafe (a debug build: `WOESAFE_TEST_EFIVARS`) at crafted efivars-like directories: a dbx
//! listing the loader's Authenticode hash (a warning naming the file), one that does not (nothing), and none at
//! all (silently skipped; a line under -v). The loader is tests/fixtures/revocation/signed.efi, whose hash
//! osslsigncode calculated (see its README).

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// Its Authenticode SHA-256 (tests/fixtures/revocation/README).
const LOADER_SHA256: &str = "7ab9e9b16b5ffb11f0641f0048cd4083f360b038737e2ebc9e622db568f34959";
const DBX: &str = "dbx-d719b2cb-3d3a-4596-a3bc-dad00e67656f";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// An efivarfs file: 4 bytes of attributes, then one EFI_SIGNATURE_LIST of EFI_CERT_SHA256 entries.
fn dbx_listing(hashes: &[Vec<u8>]) -> Vec<u8> {
    // EFI_CERT_SHA256_GUID c1c41626-504c-4092-aca9-41f936934328, as EFI stores a GUID.
    let sha256_guid = [0x26, 0x16, 0xc4, 0xc1, 0x4c, 0x50, 0x92, 0x40, 0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28];
    let owner = [0x77u8; 16];
    let mut v = 0x27u32.to_le_bytes().to_vec(); // NV, BS, RT, time-based authenticated write
    v.extend_from_slice(&sha256_guid);
    v.extend_from_slice(&((28 + hashes.len() * 48) as u32).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&48u32.to_le_bytes());
    for h in hashes {
        v.extend_from_slice(&owner);
        v.extend_from_slice(h);
    }
    v
}

fn efivars(dir: &Path, name: &str, hashes: &[Vec<u8>]) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(DBX), dbx_listing(hashes)).unwrap();
    d
}

fn iso_with_signed_loader(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sources")).unwrap();
    std::fs::create_dir_all(tree.join("efi/boot")).unwrap();
    std::fs::write(tree.join("sources/boot.wim"), b"wim").unwrap();
    std::fs::write(tree.join("bootmgr"), b"bootmgr").unwrap();
    std::fs::copy(root().join("tests/fixtures/revocation/signed.efi"), tree.join("efi/boot/bootx64.efi")).unwrap();
    let iso = dir.join("signed.iso");
    make_iso(&tree, &iso);
    iso
}

fn dry_run(iso: &Path, image: &Path, efivars: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["write", iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "600M", "--yes"];
    args.push("--dry-run");
    args.extend_from_slice(extra);
    let out = std::process::Command::new(bin()).args(&args).env("WOESAFE_TEST_EFIVARS", efivars).output().unwrap();
    (out.status.success(), text(&out))
}

#[test]
fn the_isos_loader_is_checked_against_this_pcs_dbx() {
    let name = "the_isos_loader_is_checked_against_this_pcs_dbx";
    if !need_root(name) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let iso = iso_with_signed_loader(work.path());
    let image = work.path().join("new.img");
    let warning = format!(
        "warning: the ISO's /efi/boot/bootx64.efi: its Authenticode SHA-256 {LOADER_SHA256} is in this PC's \
         forbidden-signature database (dbx): this stick will not boot on this PC with Secure Boot on; try --ca2023"
    );

    // A dbx that lists the loader's hash among others: the warning, naming the file; the write itself goes on.
    let revoked = efivars(work.path(), "revoked", &[vec![0x11; 32], unhex(LOADER_SHA256), vec![0x22; 32]]);
    let (ok, t) = dry_run(&iso, &image, &revoked, &[]);
    assert!(ok, "{t}");
    assert!(t.contains(&warning), "no revocation warning:\n{t}");
    assert!(!image.exists(), "a dry run creates nothing");
    // inspect says it too.
    let out = std::process::Command::new(bin())
        .args(["inspect", iso.to_str().unwrap()])
        .env("WOESAFE_TEST_EFIVARS", &revoked)
        .output()
        .unwrap();
    assert!(text(&out).contains("is in this PC's forbidden-signature database (dbx)"), "{}", text(&out));

    // A dbx that lists other hashes only: no warning.
    let other = efivars(work.path(), "other", &[vec![0x11; 32], vec![0x22; 32]]);
    let (ok, t) = dry_run(&iso, &image, &other, &["-v"]);
    assert!(ok, "{t}");
    assert!(!t.contains("dbx") && !t.contains("--ca2023"), "nothing to say of a loader the dbx does not list:\n{t}");

    // No efivars at all (not UEFI): nothing, and one line under -v.
    let none = work.path().join("no-efivars");
    let (ok, t) = dry_run(&iso, &image, &none, &[]);
    assert!(ok, "{t}");
    assert!(!t.contains("revocation") && !t.contains("dbx"), "silently skipped:\n{t}");
    let (ok, t) = dry_run(&iso, &image, &none, &["-v"]);
    assert!(ok, "{t}");
    assert!(t.contains("Secure Boot revocation check: this machine has no dbx variable"), "-v says it:\n{t}");

    // A malformed dbx: a warning that the check was skipped, naming what is wrong; the write is not refused.
    let bad = work.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let mut cut = dbx_listing(&[unhex(LOADER_SHA256)]);
    cut.truncate(cut.len() - 1);
    std::fs::write(bad.join(DBX), cut).unwrap();
    let (ok, t) = dry_run(&iso, &image, &bad, &[]);
    assert!(ok, "{t}");
    assert!(t.contains("warning: Secure Boot revocation check skipped: the UEFI variable dbx is malformed"), "{t}");
}

/// The loader inside a user's UEFI:NTFS image (the NTFS stick's bridge) is checked too, read from the FAT image.
#[test]
fn a_uefi_ntfs_images_loader_is_checked_too() {
    let name = "a_uefi_ntfs_images_loader_is_checked_too";
    if !need_root(name) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let iso = iso_with_signed_loader(work.path());
    let img = work.path().join("uefi-ntfs.img");
    std::fs::File::create(&img).unwrap().set_len(1 << 20).unwrap();
    let run = |prog: &str, args: &[&str]| {
        let out = std::process::Command::new(prog).args(args).env("MTOOLS_SKIP_CHECK", "1").output().unwrap();
        assert!(out.status.success(), "{prog} {args:?}: {}", text(&out));
    };
    let i = img.to_str().unwrap();
    run("mkfs.fat", &["-n", "UEFI_NTFS", i]);
    run("mmd", &["-i", i, "::/EFI", "::/EFI/BOOT"]);
    let signed = root().join("tests/fixtures/revocation/signed.efi");
    run("mcopy", &["-i", i, signed.to_str().unwrap(), "::/EFI/BOOT/BOOTX64.EFI"]);
    let revoked = efivars(work.path(), "revoked", &[unhex(LOADER_SHA256)]);
    let image = work.path().join("new.img");
    let (ok, t) = dry_run(&iso, &image, &revoked, &["--fs", "ntfs", "--uefi-ntfs-image", i]);
    assert!(ok, "{t}");
    assert!(
        t.contains(&format!(
            "warning: --uefi-ntfs-image's EFI/BOOT/BOOTX64.EFI: its Authenticode SHA-256 {LOADER_SHA256} is in this \
             PC's forbidden-signature database (dbx)"
        )),
        "{t}"
    );
}

/// --ca2023's boot manager is checked once extracted: revoked, it is said, without suggesting --ca2023 again.
#[test]
fn the_ca2023_boot_manager_is_checked_once_extracted() {
    let name = "the_ca2023_boot_manager_is_checked_once_extracted";
    if !need_root(name) {
        return;
    }
    if !have("wimlib-imagex") {
        woesafe::report_skip(name, "wimlib-imagex not installed");
        return;
    }
    let fx = fixture_with("win-ca2023", &["--ca2023"]);
    let ex = root().join("target/test-fixtures/win-ca2023.ex/bootmgfw_EX.efi");
    let facts = woesafe::boot::revocation::examine(&std::fs::read(ex).unwrap()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let revoked = efivars(work.path(), "revoked", &[facts.sha256.to_vec()]);
    let image = work.path().join("ca.img");
    let out = std::process::Command::new(bin())
        .args(["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "2G", "--yes", "--ca2023"])
        .env("WOESAFE_TEST_EFIVARS", &revoked)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let hex: String = facts.sha256.iter().map(|b| format!("{b:02x}")).collect();
    let want = format!(
        "warning: /efi/boot/bootx64.efi (--ca2023): its Authenticode SHA-256 {hex} is in this PC's \
         forbidden-signature database (dbx): this stick will not boot on this PC with Secure Boot on\n"
    );
    assert!(t.contains(&want), "{t}");
    // The ISO's own loader is not listed: a write without --ca2023 says nothing.
    let image = work.path().join("plain.img");
    let out = std::process::Command::new(bin())
        .args(["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "2G", "--yes"])
        .env("WOESAFE_TEST_EFIVARS", &revoked)
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success() && !t.contains("dbx"), "{t}");
}
