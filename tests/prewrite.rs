//! Hostile ISOs refused before the first byte is written (exit 3, the image byte for byte as it was): ISO
//! entries in the way of what woesafe adds, names FAT or NTFS (with either driver) cannot hold apart or at all,
//! 8.3 aliases the kernel's vfat would confuse, a Windows 7 install.wim whose UEFI loader is a symbolic link
//! (never followed) or not an EFI program, and an ISO loader that is not an x86_64 EFI application.

mod common;
use common::*;
use std::path::{Path, PathBuf};

fn digest(p: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

/// An existing 200 MiB image with recognisable content.
fn precious_image(dir: &Path) -> PathBuf {
    let p = dir.join("target.img");
    let f = std::fs::File::create(&p).unwrap();
    let size = 200u64 << 20;
    f.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"precious data, do not erase", 0).unwrap();
    f.write_all_at(&[0xA5; 4096], 1 << 20).unwrap();
    f.write_all_at(b"more precious data", size - 4096).unwrap();
    p
}

/// A minimal Windows-like tree (sources/boot.wim) with `files` (path, content) and `dirs` added.
fn tree_with(dir: &Path, name: &str, files: &[(&str, &[u8])], dirs: &[&str]) -> PathBuf {
    let tree = dir.join(name);
    std::fs::create_dir_all(tree.join("sources")).unwrap();
    std::fs::write(tree.join("sources/boot.wim"), b"wim").unwrap();
    std::fs::write(tree.join("bootmgr"), b"bootmgr").unwrap();
    for d in dirs {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    for (p, content) in files {
        let p = tree.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    tree
}

/// The header of a PE32+ x86_64 EFI application with `subsystem` (10: an EFI application) and `magic`.
fn pe(magic: u16, subsystem: u16) -> Vec<u8> {
    let mut pe = vec![0u8; 0x400];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3C] = 0x80;
    pe[0x80..0x84].copy_from_slice(b"PE\0\0");
    pe[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
    pe[0x94..0x96].copy_from_slice(&(if magic == 0x20b { 240u16 } else { 224 }).to_le_bytes());
    pe[0x96..0x98].copy_from_slice(&0x0022u16.to_le_bytes()); // executable, large addresses
    pe[0x98..0x9A].copy_from_slice(&magic.to_le_bytes());
    pe[0x98 + 68..0x98 + 70].copy_from_slice(&subsystem.to_le_bytes());
    pe
}

fn iso_of(dir: &Path, tree: &Path) -> PathBuf {
    let iso = dir.join(format!("{}.iso", tree.file_name().unwrap().to_string_lossy()));
    make_iso(tree, &iso);
    iso
}

/// Write `iso` onto the existing `image` with `extra` arguments; assert exit 3, a message containing each of
/// `want`, and the image unchanged. Returns the whole output.
fn refused(iso: &Path, image: &Path, extra: &[&str], want: &[&str]) -> String {
    let before = digest(image);
    let mut args = vec!["write", iso.to_str().unwrap(), image.to_str().unwrap(), "--yes"];
    args.extend_from_slice(extra);
    let out = woesafe(&args);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(3), "{args:?}: {msg}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for w in want {
        assert!(stderr.contains(w), "{args:?}: no {w:?} in\n{msg}");
    }
    assert!(
        !msg.contains("Wiping old signatures") && !msg.contains("Writing the partition table"),
        "{args:?}: a step touched the target\n{msg}"
    );
    assert_eq!(digest(image), before, "{args:?}: a refused write changed the target\n{msg}");
    msg
}

/// Every filesystem and driver: FAT32 with woesafe's writer and with the kernel's vfat, NTFS with ntfs-3g and
/// with the kernel's ntfs3 (the refusals come before any driver is needed).
const TARGETS: [&[&str]; 4] = [
    &["--fs", "fat32", "--target-driver", "userspace"],
    &["--fs", "fat32", "--target-driver", "kernel"],
    &["--fs", "ntfs", "--target-driver", "userspace"],
    &["--fs", "ntfs", "--target-driver", "kernel"],
];

#[test]
fn iso_entries_in_the_way_of_what_woesafe_adds() {
    if !need_root("iso_entries_in_the_way_of_what_woesafe_adds") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let image = precious_image(work.path());
    // An ISO file where woesafe adds the directory boot/grub (BIOS boot's grub.cfg), at two depths.
    let efi = pe(0x20b, 10);
    let grub_file = iso_of(
        work.path(),
        &tree_with(work.path(), "grubfile", &[("boot/grub", b"not a dir"), ("efi/boot/bootx64.efi", &efi)], &[]),
    );
    let boot_file = iso_of(work.path(), &tree_with(work.path(), "bootfile", &[("BOOT", b"not a dir")], &[]));
    // An ISO directory where --bypass adds the file autounattend.xml.
    let xml_dir = iso_of(work.path(), &tree_with(work.path(), "xmldir", &[("AutoUnattend.xml/inside.txt", b"x")], &[]));
    for t in TARGETS {
        refused(
            &grub_file,
            &image,
            t,
            &[
                "the ISO's file boot/grub is in the way of the directory boot/grub that woesafe adds for \
                 boot/grub/grub.cfg",
                "remove or rename it in the ISO, or write with --boot uefi",
            ],
        );
        refused(
            &boot_file,
            &image,
            t,
            &["the ISO's file BOOT is in the way of the directory boot that woesafe adds for boot/grub/grub.cfg"],
        );
        let with_bypass = [t, &["--bypass", "tpm"]].concat();
        refused(
            &xml_dir,
            &image,
            &with_bypass,
            &[
                "the ISO's directory AutoUnattend.xml is in the way of the file autounattend.xml that woesafe adds",
                "or write with no --bypass",
            ],
        );
    }
    // Without what adds them, the same ISOs are fine (and an added file replacing an ISO file is kept: see
    // write_image.rs iso_with_its_own_grub_cfg).
    let new = work.path().join("new.img");
    write_fixture(&grub_file, &new, "100M", &["--boot", "uefi"]);
    std::fs::remove_file(&new).unwrap();
    write_fixture(&xml_dir, &new, "100M", &[]);
}

#[test]
fn names_a_filesystem_cannot_hold_apart_or_at_all() {
    if !need_root("names_a_filesystem_cannot_hold_apart_or_at_all") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let image = precious_image(work.path());
    // Equal once FAT drops the trailing dot: Windows (and so both FAT drivers and NTFS) take them for one.
    let dots = iso_of(
        work.path(),
        &tree_with(work.path(), "dots", &[("docs/readme.txt", b"a"), ("docs/readme.txt.", b"b")], &[]),
    );
    for t in TARGETS {
        refused(&dots, &image, t, &["docs/readme.txt and docs/readme.txt. are one name on"]);
    }
    // Letter case beyond ASCII.
    let umlaut =
        iso_of(work.path(), &tree_with(work.path(), "umlaut", &[("Ärger.txt", b"a"), ("äRGER.TXT", b"b")], &[]));
    for t in TARGETS {
        refused(&umlaut, &image, t, &["differ only in letter case"]);
    }
    // Windows device names, a name ending in a space, a character Windows forbids.
    for (name, file, want) in [
        ("con", "drivers/con.txt", &["drivers/con.txt: con.txt is a Windows device name"][..]),
        ("lpt", "LPT1", &["LPT1: LPT1 is a Windows device name"]),
        ("space", "notes ", &["notes : the name ends in a dot or a space"]),
        ("bar", "a|b.txt", &["a|b.txt: ", "cannot hold the character '|' in a name"]),
    ] {
        let iso = iso_of(work.path(), &tree_with(work.path(), name, &[(file, b"x")], &[]));
        for t in TARGETS {
            refused(&iso, &image, t, want);
        }
    }
    // NTFS's system files in the root: refused on NTFS, fine on FAT32.
    let mft = iso_of(work.path(), &tree_with(work.path(), "mft", &[("$MFT", b"x")], &[]));
    for t in &TARGETS[2..] {
        refused(&mft, &image, t, &["$MFT: $MFT is the name of an NTFS system file in the root directory"]);
    }
    let new = work.path().join("mft.img");
    write_fixture(&mft, &new, "100M", &["--fs", "fat32"]);
}

#[test]
fn explicit_short_names_win_or_are_refused() {
    if !need_root("explicit_short_names_win_or_are_refused") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let image = precious_image(work.path());
    let tree = tree_with(
        work.path(),
        "sfn",
        &[("docs/longfilename.txt", b"the long one"), ("docs/LONGFI~1.TXT", b"the explicit one")],
        &[],
    );
    let iso = iso_of(work.path(), &tree);
    // The kernel's vfat would open longfilename.txt (whose alias it made LONGFI~1.TXT) for LONGFI~1.TXT.
    refused(
        &iso,
        &image,
        TARGETS[1],
        &["docs/LONGFI~1.TXT has an 8.3 name that the kernel's vfat may also generate", "--target-driver userspace"],
    );
    // woesafe's writer keeps the explicit name's own short name: both files are there, each with its content.
    let new = work.path().join("sfn.img");
    write_fixture(&iso, &new, "100M", TARGETS[0]);
    let mtype = |path: &str| {
        let out = std::process::Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(format!("{}@@1M", new.display()))
            .arg(format!("::/{path}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(mtype("docs/LONGFI~1.TXT"), "the explicit one");
    assert_eq!(mtype("docs/longfilename.txt"), "the long one");
    let out = std::process::Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@1M", new.display()))
        .arg("::/docs")
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("LONGFI~2 TXT") && listing.contains("LONGFI~1 TXT"), "{listing}");
}

/// Run wimlib-imagex; it must succeed.
fn wimlib(args: &[&str]) {
    let out = std::process::Command::new("wimlib-imagex").args(args).output().unwrap();
    assert!(out.status.success(), "wimlib-imagex {args:?}: {}", text(&out));
}

/// A secret only root can read (a shadow file's line, repeated), which a refused write must never show.
fn secret_file(dir: &Path) -> PathBuf {
    let secret = dir.join("shadow");
    std::fs::write(&secret, "root:$6$woesafe-secret-hash:19000:0:99999:7:::\n".repeat(100)).unwrap();
    secret
}

/// A Windows 7-shaped ISO whose install.wim (one x64 image) holds `loader` as Windows/Boot/EFI/bootmgfw.efi:
/// Err(link target) makes it a symbolic link.
fn win7_iso(dir: &Path, name: &str, loader: Result<&[u8], &str>) -> PathBuf {
    let src = dir.join(format!("{name}.wimsrc"));
    let efi = src.join("Windows/Boot/EFI");
    std::fs::create_dir_all(&efi).unwrap();
    std::fs::write(src.join("Windows/explorer.exe"), b"MZ").unwrap();
    match loader {
        Ok(bytes) => std::fs::write(efi.join("bootmgfw.efi"), bytes).unwrap(),
        Err(target) => std::os::unix::fs::symlink(target, efi.join("bootmgfw.efi")).unwrap(),
    }
    let tree = tree_with(
        dir,
        name,
        &[("sources/cversion.ini", b"[HOSTBUILD]\r\nMinClient=7600.16385\r\nMinServer=7600.16385\r\n")],
        &[],
    );
    let wim = tree.join("sources/install.wim");
    wimlib(&["capture", src.to_str().unwrap(), wim.to_str().unwrap(), "Windows 7 ULTIMATE"]);
    wimlib(&["info", wim.to_str().unwrap(), "1", "--image-property", "WINDOWS/ARCH=9"]);
    iso_of(dir, &tree)
}

#[test]
fn windows7_loader_links_are_never_followed() {
    let name = "windows7_loader_links_are_never_followed";
    if !need_root(name) {
        return;
    }
    if !have("wimlib-imagex") {
        woesafe::report_skip(name, "wimlib-imagex is not installed");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let image = precious_image(work.path());
    // A secret only root can read, and a device that never ends.
    let secret = secret_file(work.path());
    let secret_len = std::fs::metadata(&secret).unwrap().len().to_string();
    for (i, target) in [secret.to_str().unwrap(), "/dev/zero", "/etc/shadow"].iter().enumerate() {
        let iso = win7_iso(work.path(), &format!("link{i}"), Err(target));
        let msg = refused(
            &iso,
            &image,
            &[],
            &["/Windows/Boot/EFI/bootmgfw.efi", "is a symbolic link in install.wim; woesafe does not follow it"],
        );
        assert!(!msg.contains("woesafe-secret-hash") && !msg.contains(&secret_len), "{msg}");
        assert!(!msg.contains("UEFI loader extracted"), "{msg}");
    }
    // A file, but not an EFI application: a PE32 (magic 0x10b) image.
    let pe32 = pe(0x10b, 10);
    let iso = win7_iso(work.path(), "pe32", Ok(&pe32));
    refused(&iso, &image, &[], &["/Windows/Boot/EFI/bootmgfw.efi", "not PE32+ (0x20b)"]);
    // --boot bios needs no loader: the link is never even extracted.
    let iso = win7_iso(work.path(), "biosonly", Err(secret.to_str().unwrap()));
    let new = work.path().join("bios.img");
    let out = write_fixture(&iso, &new, "100M", &["--boot", "bios"]);
    assert!(!text(&out).contains("woesafe-secret-hash"), "{}", text(&out));
}

#[test]
fn an_iso_loader_that_is_no_efi_application_is_refused() {
    if !need_root("an_iso_loader_that_is_no_efi_application_is_refused") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let image = precious_image(work.path());
    // A Windows program (subsystem 3, console) where the UEFI loader should be.
    let exe = pe(0x20b, 3);
    let iso = iso_of(work.path(), &tree_with(work.path(), "exe", &[("efi/boot/bootx64.efi", &exe)], &[]));
    for t in TARGETS {
        refused(
            &iso,
            &image,
            t,
            &[
                "the ISO's efi/boot/bootx64.efi is not a UEFI loader for x86_64 (subsystem 3, not an EFI application \
               (10))",
                "write it with --boot bios",
            ],
        );
    }
    // The fixture's real loader (a GRUB x86_64-efi image) passes: see every write of the fixture. Here, BIOS
    // only does not look at the loader at all.
    let new = work.path().join("bios.img");
    write_fixture(&iso, &new, "100M", &["--boot", "bios"]);
}

/// `ca2023_iso` with a good loader, its image 2's source tree changed by `change` first.
fn ca2023_iso_with(dir: &Path, name: &str, change: impl Fn(&Path)) -> PathBuf {
    ca2023_iso_changed(dir, name, Ok(&pe(0x20b, 10)), None, &change)
}

fn ca2023_iso(dir: &Path, name: &str, loader: Result<&[u8], &str>, font_link: Option<&str>) -> PathBuf {
    ca2023_iso_changed(dir, name, loader, font_link, &|_| {})
}

/// An x64 ISO (an EFI application as efi/boot/bootx64.efi, /bootmgr.efi) whose boot.wim has two images, the
/// second holding `loader` as Windows/Boot/EFI_EX/bootmgfw_EX.efi (Err(link target): a symbolic link) and a font
/// in Fonts_EX that is a link when `font_link`.
fn ca2023_iso_changed(
    dir: &Path,
    name: &str,
    loader: Result<&[u8], &str>,
    font_link: Option<&str>,
    change: &dyn Fn(&Path),
) -> PathBuf {
    let one = dir.join(format!("{name}.wim1"));
    std::fs::create_dir_all(one.join("Windows/System32")).unwrap();
    std::fs::write(one.join("Windows/System32/winpeshl.ini"), b"[LaunchApps]").unwrap();
    let two = dir.join(format!("{name}.wim2"));
    let ex = two.join("Windows/Boot/EFI_EX");
    let fonts = two.join("Windows/Boot/Fonts_EX");
    std::fs::create_dir_all(&ex).unwrap();
    std::fs::create_dir_all(&fonts).unwrap();
    match loader {
        Ok(bytes) => std::fs::write(ex.join("bootmgfw_EX.efi"), bytes).unwrap(),
        Err(target) => std::os::unix::fs::symlink(target, ex.join("bootmgfw_EX.efi")).unwrap(),
    }
    std::fs::write(ex.join("bootmgr_EX.efi"), pe(0x20b, 10)).unwrap();
    match font_link {
        Some(target) => std::os::unix::fs::symlink(target, fonts.join("wgl4_boot_EX.ttf")).unwrap(),
        None => std::fs::write(fonts.join("wgl4_boot_EX.ttf"), b"\0\x01\0\0font").unwrap(),
    }
    change(&two);
    let efi = pe(0x20b, 10);
    let tree = tree_with(dir, name, &[("efi/boot/bootx64.efi", &efi), ("bootmgr.efi", &efi)], &[]);
    let wim = tree.join("sources/boot.wim");
    std::fs::remove_file(&wim).unwrap();
    wimlib(&["capture", one.to_str().unwrap(), wim.to_str().unwrap(), "Microsoft Windows PE (amd64)"]);
    wimlib(&["append", two.to_str().unwrap(), wim.to_str().unwrap(), "Microsoft Windows Setup (amd64)"]);
    iso_of(dir, &tree)
}

/// --ca2023 reads what wimlib extracted from the ISO's boot.wim as hostile as everything else: links are never
/// followed, a boot manager must be an EFI application for the ISO's processor. Refused before writing.
#[test]
fn ca2023_boot_managers_are_checked_and_links_never_followed() {
    let name = "ca2023_boot_managers_are_checked_and_links_never_followed";
    if !need_root(name) {
        return;
    }
    if !have("wimlib-imagex") {
        woesafe::report_skip(name, "wimlib-imagex is not installed");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let image = precious_image(work.path());
    let secret = secret_file(work.path());
    let ca = ["--ca2023"];
    for (i, target) in [secret.to_str().unwrap(), "/dev/zero"].iter().enumerate() {
        let iso = ca2023_iso(work.path(), &format!("calink{i}"), Err(target), None);
        let msg = refused(
            &iso,
            &image,
            &ca,
            &[
                "/Windows/Boot/EFI_EX/bootmgfw_EX.efi",
                "is a symbolic link in sources/boot.wim; woesafe does not follow it",
            ],
        );
        assert!(!msg.contains("woesafe-secret-hash"), "{msg}");
    }
    // A font that is a link: the same.
    let iso = ca2023_iso(work.path(), "cafont", Ok(&pe(0x20b, 10)), Some(secret.to_str().unwrap()));
    let msg = refused(&iso, &image, &ca, &["Fonts_EX/wgl4_boot_EX.ttf", "is a symbolic link in sources/boot.wim"]);
    assert!(!msg.contains("woesafe-secret-hash"), "{msg}");
    // The directories themselves as links to a host directory: each file "in" them would be the host's.
    let host = work.path().join("host-dir");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("bootmgfw_EX.efi"), pe(0x20b, 10)).unwrap();
    std::fs::write(host.join("bootmgr_EX.efi"), pe(0x20b, 10)).unwrap();
    std::fs::write(host.join("secret_EX.ttf"), b"\0\x01\0\0HOST-SECRET-FONT").unwrap();
    for (i, dir) in ["Windows/Boot/EFI_EX", "Windows/Boot/Fonts_EX"].iter().enumerate() {
        let iso = ca2023_iso_with(work.path(), &format!("cadirlink{i}"), |two| {
            let d = two.join(dir);
            std::fs::remove_dir_all(&d).unwrap();
            std::os::unix::fs::symlink(&host, &d).unwrap();
        });
        let msg = refused(&iso, &image, &ca, &[&format!("/{dir}"), "is a symbolic link in sources/boot.wim"]);
        assert!(!msg.contains("HOST-SECRET") && !msg.contains("secret_EX"), "{msg}");
    }
    // A font that is no font, and a file where Fonts_EX should be a directory.
    let iso = ca2023_iso_with(work.path(), "canofont", |two| {
        std::fs::write(two.join("Windows/Boot/Fonts_EX/wgl4_boot_EX.ttf"), b"#!/bin/sh\n").unwrap();
    });
    refused(&iso, &image, &ca, &["Fonts_EX/wgl4_boot_EX.ttf in sources/boot.wim holds no TrueType or OpenType font"]);
    // Not PE32+, and an arm64 program for an x64 ISO.
    let iso = ca2023_iso(work.path(), "cape32", Ok(&pe(0x10b, 10)), None);
    refused(&iso, &image, &ca, &["--ca2023: /Windows/Boot/EFI_EX/bootmgfw_EX.efi", "not PE32+ (0x20b)"]);
    let mut arm = pe(0x20b, 10);
    arm[0x84..0x86].copy_from_slice(&0xAA64u16.to_le_bytes());
    let iso = ca2023_iso(work.path(), "caarm", Ok(&arm), None);
    refused(&iso, &image, &ca, &["not a usable x64 UEFI program", "built for machine 0xaa64, not x86_64 (0x8664)"]);
    // The same ISO with a good loader is written, and its boot managers are boot.wim's.
    let iso = ca2023_iso(work.path(), "cagood", Ok(&pe(0x20b, 10)), None);
    let new = work.path().join("good.img");
    let out = write_fixture(&iso, &new, "100M", &["--ca2023", "--verify"]);
    let t = text(&out);
    assert!(out.status.success() && t.contains("identical to the ISO"), "{t}");
    assert!(t.contains("1 fonts from /Windows/Boot/Fonts_EX"), "{t}");
}
