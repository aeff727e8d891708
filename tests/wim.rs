//! WIM files over FAT32's limit: the inspection agrees with wimlib on real WIMs; a WIM that cannot be split
//! makes --fs fat32 refuse before the target is touched and --fs auto choose NTFS, saying why; a WIM just over
//! 4 GiB is split into parts of at most 4000 MiB that join back into a WIM wimlib verifies, with the same
//! files.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn wimlib(args: &[&str]) -> std::process::Output {
    Command::new("wimlib-imagex").args(args).output().unwrap()
}

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A small two-image WIM (image 2 marked x64), plain or solid.
fn small_wim(dir: &Path, name: &str, solid: bool) -> std::path::PathBuf {
    let tree = dir.join(format!("{name}.tree"));
    std::fs::create_dir_all(tree.join("Windows/System32")).unwrap();
    std::fs::write(tree.join("Windows/System32/a.dll"), vec![7u8; 100_000]).unwrap();
    std::fs::write(tree.join("Windows/b.txt"), b"hello").unwrap();
    let wim = dir.join(name);
    let w = wim.to_str().unwrap();
    let t = tree.to_str().unwrap();
    let mut capture = vec!["capture", t, w, "one"];
    if solid {
        capture.push("--solid");
    }
    ok(wimlib(&capture));
    let mut append = vec!["append", t, w, "two"];
    if solid {
        append.push("--solid");
    }
    ok(wimlib(&append));
    ok(wimlib(&["info", w, "2", "--image-property", "WINDOWS/ARCH=9"]));
    wim
}

#[test]
fn inspection_agrees_with_wimlib() {
    if !have("wimlib-imagex") {
        woesafe::report_skip("inspection_agrees_with_wimlib", "wimlib-imagex is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for solid in [false, true] {
        let wim = small_wim(dir.path(), if solid { "solid.esd" } else { "plain.wim" }, solid);
        let info = woesafe::media::wim::inspect(&mut std::fs::File::open(&wim).unwrap()).unwrap();
        assert_eq!(info.image_count, 2, "{info:?}");
        assert_eq!(info.x64_images, vec![2], "{info:?}");
        assert_eq!(info.solid, solid, "{info:?}");
        assert!(info.resources >= 3, "{info:?}");
        // Our prediction matches what wimlib does.
        let parts = dir.path().join(if solid { "s.swm" } else { "p.swm" });
        let split = wimlib(&["split", wim.to_str().unwrap(), parts.to_str().unwrap(), "1"]);
        assert_eq!(split.status.success(), info.split_problem().is_none(), "{info:?}\n{}", text(&split));
    }
}

/// An ISO whose install.esd is solid and just over 4 GiB (a small solid WIM, sparse-padded: wimlib and our
/// inspection read only its header and tables).
fn big_esd_iso(dir: &Path) -> std::path::PathBuf {
    let fx = fixture();
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sources")).unwrap();
    std::fs::create_dir_all(tree.join("efi/boot")).unwrap();
    std::fs::copy(fx.tree.join("bootmgr"), tree.join("bootmgr")).unwrap();
    std::fs::copy(fx.tree.join("efi/boot/bootx64.efi"), tree.join("efi/boot/bootx64.efi")).unwrap();
    std::fs::copy(fx.tree.join("sources/boot.wim"), tree.join("sources/boot.wim")).unwrap();
    let esd = small_wim(dir, "install.esd", true);
    std::fs::rename(&esd, tree.join("sources/install.esd")).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(tree.join("sources/install.esd")).unwrap();
    f.set_len((4 << 30) + (1 << 20)).unwrap();
    let iso = dir.join("big-esd.iso");
    let out = Command::new("genisoimage")
        .args(["-quiet", "-udf", "-iso-level", "3", "-allow-limited-size", "-o"])
        .arg(&iso)
        .arg(&tree)
        .output()
        .unwrap();
    assert!(out.status.success(), "genisoimage: {}", text(&out));
    let _ = Command::new("fallocate").arg("--dig-holes").arg(&iso).status();
    iso
}

#[test]
fn an_unsplittable_wim_is_refused_on_fat32_and_chooses_ntfs_under_auto() {
    let name = "an_unsplittable_wim_is_refused_on_fat32_and_chooses_ntfs_under_auto";
    if !need_root(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let iso = big_esd_iso(dir.path());
    // An 8 GiB image (room enough, so only the filesystem rule can refuse), marked at both ends.
    let target = dir.path().join("target.img");
    let marks = |t: &Path| {
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(t).unwrap();
        f.set_len(8 << 30).unwrap();
        f
    };
    let untouched = |t: &Path| {
        use std::os::unix::fs::FileExt;
        let f = marks(t);
        let mut head = vec![0u8; 4 << 20];
        let mut tail = vec![0u8; 1 << 20];
        f.read_exact_at(&mut head, 0).unwrap();
        f.read_exact_at(&mut tail, (8 << 30) - (1 << 20)).unwrap();
        head.iter().chain(tail.iter()).all(|&b| b == 0xAA)
    };
    {
        use std::os::unix::fs::FileExt;
        let f = marks(&target);
        f.write_all_at(&vec![0xAAu8; 4 << 20], 0).unwrap();
        f.write_all_at(&vec![0xAAu8; 1 << 20], (8 << 30) - (1 << 20)).unwrap();
    }
    let (i, t) = (iso.to_str().unwrap(), target.to_str().unwrap());

    let out = woesafe(&["write", i, t, "--fs", "fat32", "--yes"]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(3), "{msg}");
    assert!(
        msg.contains("--fs fat32: sources/install.esd (4.0 GiB) is over FAT32's file-size limit (4 GiB - 1 byte)"),
        "{msg}"
    );
    assert!(msg.contains("solid") && msg.contains("use --fs ntfs"), "{msg}");
    assert!(untouched(&target), "the target was touched");

    // auto: NTFS, with the reason (no --yes and no terminal: it stops at the confirmation).
    let out = woesafe(&["write", i, t]);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(3), "{msg}");
    assert!(
        msg.contains("Filesystem: NTFS — sources/install.esd (4.0 GiB) is over FAT32's file-size limit")
            && msg.contains("solid"),
        "{msg}"
    );
    assert!(msg.contains("without confirmation"), "{msg}");
    assert!(untouched(&target), "the target was touched");
}

/// Run woesafe with $TMPDIR (where its scratch file goes) set to `tmp`.
fn woesafe_tmpdir(args: &[&str], tmp: &Path) -> std::process::Output {
    let out = Command::new(bin()).args(args).env("TMPDIR", tmp).stdin(std::process::Stdio::null()).output().unwrap();
    let leftover = std::fs::read_dir(tmp).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect::<Vec<_>>();
    assert!(
        leftover.iter().all(|n| !n.to_string_lossy().contains("woesafe")),
        "scratch left in {}: {leftover:?}",
        tmp.display()
    );
    out
}

fn mtools(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("LC_ALL", "C.UTF-8")
        .env("TZ", "UTC")
        .args(&args[1..])
        .output()
        .unwrap()
}

/// The fixture whose install.wim (uncompressed, several resources, sparse) is just over 4 GiB.
fn big_wim_fixture() -> Fixture {
    fixture_with("bigwim", &["--big-wim-mib", "4400"])
}

#[test]
fn a_wim_over_4_gib_is_split_and_joins_back() {
    let name = "a_wim_over_4_gib_is_split_and_joins_back";
    if !need_root(name) {
        return;
    }
    let fx = big_wim_fixture();
    let wim_size = std::fs::metadata(fx.tree.join("sources/install.wim")).unwrap().len();
    assert!(wim_size > 4 << 30, "the fixture's install.wim is {wim_size} bytes, not over 4 GiB");
    let work = tempfile::tempdir().unwrap();
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let image = work.path().join("split.img");
    let before = host_state(work.path());
    let out =
        woesafe_tmpdir(&["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "6G", "--yes"], &tmp);
    let msg = text(&out);
    assert!(out.status.success(), "{msg}");
    assert!(msg.contains("Filesystem: FAT32 — sources/install.wim (4.3 GiB) is over FAT32's file-size limit, so it is split into install.swm parts of at most 4000 MiB"), "{msg}");
    assert!(msg.contains("Split sources/install.wim into 2 parts"), "{msg}");
    assert!(msg.contains("sources/install.wim was split into 2 parts"), "{msg}");
    // The scratch file, its loop device and its mount are gone (TMPDIR is under the test's directory).
    assert_eq!(before, host_state(work.path()), "the write left something behind");

    let img = format!("{}@@1M", image.display());
    let listing = mtools(&["mdir", "-i", &img, "-b", "::/sources"]);
    let names = String::from_utf8_lossy(&listing.stdout).to_lowercase();
    assert!(!names.contains("install.wim"), "install.wim itself is on the stick:\n{names}");
    let ext = work.path().join("extracted");
    std::fs::create_dir(&ext).unwrap();
    let out = mtools(&["mcopy", "-i", &img, "-s", "-n", "-m", "::/*", ext.to_str().unwrap()]);
    assert!(out.status.success(), "mcopy: {}", text(&out));
    // Every other file byte for byte.
    let manifest: String = std::fs::read_to_string(&fx.manifest)
        .unwrap()
        .lines()
        .filter(|l| !l.ends_with("  sources/install.wim"))
        .map(|l| format!("{l}\n"))
        .collect();
    let filtered = work.path().join("manifest");
    std::fs::write(&filtered, manifest).unwrap();
    let out = Command::new("sha256sum").arg("--quiet").arg("-c").arg(&filtered).current_dir(&ext).output().unwrap();
    assert!(out.status.success(), "files differ from the ISO's:\n{}", text(&out));
    // Two parts, each at most 4000 MiB, that join back into a WIM wimlib verifies, with the same files.
    let parts = [ext.join("sources/install.swm"), ext.join("sources/install2.swm")];
    for p in &parts {
        let size = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).len();
        assert!(size <= 4000 << 20, "{} is {size} bytes", p.display());
    }
    assert!(!ext.join("sources/install3.swm").exists());
    let joined = work.path().join("joined.wim");
    ok(wimlib(&["join", joined.to_str().unwrap(), parts[0].to_str().unwrap(), parts[1].to_str().unwrap()]));
    for p in &parts {
        std::fs::remove_file(p).unwrap(); // disk space
    }
    ok(wimlib(&["verify", joined.to_str().unwrap()]));
    let original = fx.tree.join("sources/install.wim");
    let listing = |w: &Path| ok(wimlib(&["dir", w.to_str().unwrap(), "1", "--detailed"]));
    let (a, b) = (listing(&original), listing(&joined));
    assert!(a.contains("SHA-1") || a.contains("Hash"), "no hashes in the listing:\n{a}");
    assert_eq!(a, b, "the joined WIM's files differ from the original's");
}

#[test]
fn too_little_scratch_space_is_refused_before_writing() {
    let name = "too_little_scratch_space_is_refused_before_writing";
    if !need_root(name) {
        return;
    }
    let fx = big_wim_fixture();
    let work = tempfile::tempdir().unwrap();
    let tmp = work.path().join("small-tmp");
    std::fs::create_dir(&tmp).unwrap();
    private_mount_namespace();
    let out =
        Command::new("mount").args(["-t", "tmpfs", "-o", "size=100m", "woesafe-test"]).arg(&tmp).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let target = work.path().join("t.img");
    let out =
        woesafe_tmpdir(&["write", fx.iso.to_str().unwrap(), target.to_str().unwrap(), "--size", "6G", "--yes"], &tmp);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(3), "{msg}");
    assert!(msg.contains("of scratch space in") && msg.contains("set TMPDIR to a directory"), "{msg}");
    assert!(msg.contains("or use --fs ntfs"), "{msg}");
    assert!(!target.exists(), "a refused write created the image");
    let _ = nix::mount::umount2(&tmp, nix::mount::MntFlags::MNT_DETACH);
}

/// Windows 7: no efi/boot/bootx64.efi on the ISO; the loader comes out of install.wim's x64 image (index 2 in
/// the fixture, whose image 1 holds a decoy) and boots under UEFI.
#[test]
fn windows7_boots_uefi_from_the_extracted_loader() {
    let name = "windows7_boots_uefi_from_the_extracted_loader";
    if !need_root(name) {
        return;
    }
    let fx = fixture_with("win7", &["--win7"]);
    assert!(!fx.tree.join("efi/boot/bootx64.efi").exists(), "the Windows 7 fixture has a UEFI loader");
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("win7.img");
    let before = host_state(work.path());
    let out = write_fixture(&fx.iso, &image, "1G", &[]);
    let msg = text(&out);
    assert!(msg.contains("Windows 7: UEFI loader extracted from install.wim image 2"), "{msg}");
    assert_eq!(before, host_state(work.path()), "the write left something behind");
    // The loader on the stick is the x64 image's bootmgfw.efi, as wimlib extracts it.
    let want_dir = work.path().join("want");
    ok(wimlib(&[
        "extract",
        fx.tree.join("sources/install.wim").to_str().unwrap(),
        "2",
        "/Windows/Boot/EFI/bootmgfw.efi",
        &format!("--dest-dir={}", want_dir.display()),
    ]));
    let got = work.path().join("bootx64.efi");
    let out =
        mtools(&["mcopy", "-i", &format!("{}@@1M", image.display()), "::/efi/boot/bootx64.efi", got.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let want = std::fs::read(want_dir.join("bootmgfw.efi")).unwrap();
    assert!(!want.is_empty() && std::fs::read(&got).unwrap() == want, "the stick's bootx64.efi is not image 2's");
    let (ok_boot, log) = boot_check(&image, "uefi");
    assert!(ok_boot, "the Windows 7 stick did not boot under UEFI:\n{log}");
}
