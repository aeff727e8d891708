//! `--ca2023`: the boot managers signed by the Windows UEFI CA 2023, which Windows 11 media (build 26200 and later)
//! carry in boot.wim's setup image (Windows/Boot/EFI_EX, Fonts_EX), replace the ISO's efi/boot/bootx64.efi,
//! /bootmgr.efi and boot fonts. The fixture's boot.wim image 2 holds such files (its bootmgfw_EX.efi prints its
//! own marker): the stick boots to that marker under OVMF. An ISO without them is refused before writing.

mod common;
use common::*;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

fn ca2023_fixture() -> (Fixture, PathBuf) {
    let fx = fixture_with("win-ca2023", &["--ca2023"]);
    let ex = root().join("target/test-fixtures/win-ca2023.ex");
    (fx, ex)
}

fn precious_image(dir: &Path) -> PathBuf {
    let p = dir.join("target.img");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(600 << 20).unwrap();
    f.write_all_at(b"precious data, do not erase", 0).unwrap();
    p
}

fn digest(p: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

fn mcopy_out(image: &Path, path: &str, to: &Path) -> Vec<u8> {
    let out = std::process::Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@1M", image.display()))
        .arg(format!("::/{path}"))
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "mcopy ::/{path}: {}", text(&out));
    std::fs::read(to).unwrap()
}

#[test]
fn ca2023_stick_carries_boot_wims_boot_managers_and_boots_them() {
    let name = "ca2023_stick_carries_boot_wims_boot_managers_and_boots_them";
    if !need_root(name) {
        return;
    }
    if !have("wimlib-imagex") || !have("qemu-system-x86_64") {
        woesafe::report_skip(name, "wimlib-imagex or qemu-system-x86_64 not installed");
        return;
    }
    let (fx, ex) = ca2023_fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("ca2023.img");
    let out = write_fixture(&fx.iso, &image, "2G", &["--ca2023", "--verify"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("Boot managers: signed by the Windows UEFI CA 2023, from sources/boot.wim image 2"), "{all}");
    assert!(all.contains("identical to the ISO"), "write --verify accepts boot.wim's files:\n{all}");
    assert!(all.contains("boot file(s) differ from the ISO's and are files of its sources/boot.wim"), "{all}");

    // On the stick: the EX files in place of the ISO's, byte for byte; every other file as on the ISO.
    let got = |p: &str| mcopy_out(&image, p, &work.path().join("got"));
    let want = |p: &str| std::fs::read(ex.join(p)).unwrap();
    assert_eq!(got("efi/boot/bootx64.efi"), want("bootmgfw_EX.efi"));
    assert_eq!(got("bootmgr.efi"), want("bootmgr_EX.efi"));
    let mut fonts = 0;
    for f in std::fs::read_dir(ex.join("Fonts_EX")).unwrap().flatten() {
        let n = f.file_name().to_string_lossy().into_owned();
        let plain = n.replace("_EX.ttf", ".ttf");
        assert_eq!(got(&format!("efi/microsoft/boot/fonts/{plain}")), std::fs::read(f.path()).unwrap(), "{n}");
        fonts += 1;
    }
    assert!(fonts >= 2, "the fixture has fonts");
    assert_ne!(got("efi/boot/bootx64.efi"), std::fs::read(fx.tree.join("efi/boot/bootx64.efi")).unwrap());
    // The rest: the ISO's manifest, less the replaced files.
    let ext = work.path().join("ext");
    std::fs::create_dir(&ext).unwrap();
    let manifest = work.path().join("rest.sha256");
    let replaced = |line: &str| {
        let p = line.split_once("  ").unwrap().1.to_ascii_lowercase();
        p == "efi/boot/bootx64.efi" || p == "bootmgr.efi" || p.starts_with("efi/microsoft/boot/fonts/")
    };
    let rest: Vec<String> = std::fs::read_to_string(&fx.manifest)
        .unwrap()
        .lines()
        .filter(|l| !replaced(l))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&manifest, rest.concat()).unwrap();
    extract_and_compare(&image, &Fixture { manifest, ..fx }, &ext);

    // OVMF boots bootmgfw_EX.efi: its own marker, not the ISO loader's.
    let out = std::process::Command::new(root().join("scripts/boot-check"))
        .arg(&image)
        .arg("uefi")
        .args(["--marker", "WOESAFE-UEFI-CA2023-OK", "--timeout", "180"])
        .output()
        .unwrap();
    assert!(out.status.success(), "OVMF → the CA 2023 bootx64.efi did not reach its marker:\n{}", text(&out));
}

#[test]
fn ca2023_without_the_files_is_refused_before_writing() {
    let name = "ca2023_without_the_files_is_refused_before_writing";
    if !need_root(name) {
        return;
    }
    if !have("wimlib-imagex") {
        woesafe::report_skip(name, "wimlib-imagex not installed");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let image = precious_image(work.path());
    let before = digest(&image);
    let refused = |iso: &Path, extra: &[&str], want: &[&str]| {
        let mut args = vec!["write", iso.to_str().unwrap(), image.to_str().unwrap(), "--yes", "--ca2023"];
        args.extend_from_slice(extra);
        let out = woesafe(&args);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {t}");
        for w in want {
            assert!(t.contains(w), "{args:?}: no {w:?} in\n{t}");
        }
        assert!(!t.contains("Writing the partition table"), "{t}");
        assert_eq!(digest(&image), before, "{args:?}: a refused write changed the target");
    };
    // The default fixture: a boot.wim with two images, neither with EFI_EX (found only by extracting).
    let fx = fixture();
    refused(
        &fx.iso,
        &[],
        &["sources/boot.wim image 2 has no /Windows/Boot/EFI_EX/bootmgfw_EX.efi", "leave out --ca2023"],
    );
    // BIOS only: the CA 2023 boot managers are UEFI's.
    let (ca, _) = ca2023_fixture();
    refused(&ca.iso, &["--boot", "bios"], &["--ca2023: the CA 2023 boot managers are UEFI boot managers"]);
    // Windows 7: no UEFI loader on the ISO to replace.
    let w7 = fixture_with("win7", &["--win7"]);
    refused(&w7.iso, &[], &["--ca2023: the ISO has no UEFI loader"]);
}

/// Windows on ARM with --ca2023: the arm64 bootmgfw_EX.efi becomes efi/boot/bootaa64.efi, and AAVMF boots it.
#[test]
fn ca2023_on_arm64_boots_the_arm64_ex_loader_under_aavmf() {
    let name = "ca2023_on_arm64_boots_the_arm64_ex_loader_under_aavmf";
    if !need_root(name) {
        return;
    }
    if !have("wimlib-imagex") || !have("qemu-system-aarch64") || !Path::new("/usr/share/AAVMF/AAVMF_CODE.fd").exists() {
        woesafe::report_skip(name, "wimlib-imagex, qemu-system-aarch64 or AAVMF not installed");
        return;
    }
    let fx = fixture_with("win-arm64-ca2023", &["--arm64", "--ca2023"]);
    let ex = root().join("target/test-fixtures/win-arm64-ca2023.ex");
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("arm64-ca2023.img");
    let out = write_fixture(&fx.iso, &image, "2G", &["--ca2023"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("boots: UEFI (arm64)") && all.contains("--ca2023: /efi/boot/bootaa64.efi is"), "{all}");
    assert_eq!(
        mcopy_out(&image, "efi/boot/bootaa64.efi", &work.path().join("got")),
        std::fs::read(ex.join("bootmgfw_EX.efi")).unwrap()
    );
    let out = std::process::Command::new(root().join("scripts/boot-check"))
        .arg(&image)
        .arg("uefi-aa64")
        .args(["--marker", "WOESAFE-UEFI-ARM64-CA2023-OK", "--timeout", "180"])
        .output()
        .unwrap();
    assert!(out.status.success(), "AAVMF → the arm64 CA 2023 loader did not reach its marker:\n{}", text(&out));
}
