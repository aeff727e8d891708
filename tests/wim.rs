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
