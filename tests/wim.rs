//! WIM files over FAT32's limit: the inspection agrees with wimlib on real WIMs; a WIM just over 4 GiB is split
//! while it is copied (no scratch space) into parts of at most 4000 MiB, byte for byte wimlib's but the GUID,
//! that join back into a WIM wimlib verifies, with the same files; a solid ESD over 4 GiB is re-packed and
//! stays on FAT32, with the same images, properties, files and hashes; so does a plain WIM that can be split but
//! holds one resource over FAT32's limit; a re-pack without scratch room is refused before the target is touched.

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
        // The streaming split takes what wimlib can split, and asks for a re-pack of what it cannot.
        let parts = dir.path().join(if solid { "s.swm" } else { "p.swm" });
        let split = wimlib(&["split", wim.to_str().unwrap(), parts.to_str().unwrap(), "1"]);
        let plan = woesafe::media::wimsplit::plan(&mut std::fs::File::open(&wim).unwrap(), 1 << 20, [0; 16]);
        assert_eq!(split.status.success(), plan.is_ok(), "{plan:?}\n{}", text(&split));
        if solid {
            assert!(matches!(plan, Err(woesafe::media::wimsplit::SplitError::NeedsRepack(_))), "{plan:?}");
        }
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
    make_sparse_iso(&["-udf", "-iso-level", "3", "-allow-limited-size"], &tree, &iso);
    iso
}

/// An 8 GiB image file marked 0xAA at both ends, and a check that the marks are still there.
fn marked_target(t: &Path) -> impl Fn() -> bool + '_ {
    use std::os::unix::fs::FileExt;
    let open = move || {
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(t).unwrap();
        f.set_len(8 << 30).unwrap();
        f
    };
    let f = open();
    f.write_all_at(&vec![0xAAu8; 4 << 20], 0).unwrap();
    f.write_all_at(&vec![0xAAu8; 1 << 20], (8 << 30) - (1 << 20)).unwrap();
    move || {
        let f = open();
        let mut head = vec![0u8; 4 << 20];
        let mut tail = vec![0u8; 1 << 20];
        f.read_exact_at(&mut head, 0).unwrap();
        f.read_exact_at(&mut tail, (8 << 30) - (1 << 20)).unwrap();
        head.iter().chain(tail.iter()).all(|&b| b == 0xAA)
    }
}

/// `wimlib-imagex info` of every image, and `dir --detailed` (files and their hashes) of each: what Setup and
/// a user see of a WIM's content.
fn wim_content(w: &Path) -> (String, Vec<String>) {
    let info = ok(wimlib(&["info", w.to_str().unwrap()]));
    let count: usize = info
        .lines()
        .find_map(|l| l.strip_prefix("Image Count:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no image count:\n{info}"));
    // Only the image part of `info`: the header part (path, GUID, size, compression) differs by design.
    let images = info.split_once("Available Images:").map(|(_, i)| i.to_string()).unwrap_or_default();
    // Without the lines that say how a file's data is stored (compressed size, offset, solid or not), which a
    // re-pack changes by design.
    let storage = ["Compressed size", "Offset in WIM", "Solid resource", "Solid offset", "Flags"];
    let dirs = (1..=count)
        .map(|i| {
            let listing = ok(wimlib(&["dir", w.to_str().unwrap(), &i.to_string(), "--detailed"]));
            assert!(listing.contains("Hash"), "no hashes in the listing:\n{listing}");
            listing.lines().filter(|l| !storage.iter().any(|s| l.starts_with(s))).collect::<Vec<_>>().join("\n")
        })
        .collect();
    (images, dirs)
}

/// A solid install.esd over 4 GiB no longer means NTFS: with --fs fat32 and with the default auto it is
/// re-packed into a plain WIM (in scratch space, before the target is touched) that goes onto FAT32 (here
/// whole, as it re-packs small), with the same images, properties, files and hashes.
#[test]
fn a_solid_esd_over_4_gib_is_repacked_onto_fat32() {
    let name = "a_solid_esd_over_4_gib_is_repacked_onto_fat32";
    if !need_root(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let iso = big_esd_iso(dir.path());
    let original = dir.path().join("tree/sources/install.esd");
    for fs in ["fat32", "auto"] {
        let target = dir.path().join(format!("{fs}.img"));
        let (i, t) = (iso.to_str().unwrap(), target.to_str().unwrap());
        let out = woesafe(&["write", i, t, "--fs", fs, "--size", "6G", "--yes", "--source-driver", "userspace"]);
        let msg = text(&out);
        assert!(out.status.success(), "{msg}");
        assert!(
            msg.contains("Filesystem: FAT32 — sources/install.esd (4.0 GiB) is over FAT32's file-size limit")
                && msg.contains("solid")
                && msg.contains("re-packed"),
            "{msg}"
        );
        assert!(msg.contains("Re-packing sources/install.esd (4.0 GiB) into a plain WIM (LZX:20)"), "{msg}");
        assert!(msg.contains("fits FAT32 whole: it becomes sources/install.esd"), "{msg}");
        assert!(msg.contains("wimlib reads sources/install.esd in place in the ISO"), "{msg}");
        let parts = sfdisk_types(&target);
        assert_eq!(parts, ["c"], "one FAT32 partition, no NTFS");
        let got = dir.path().join(format!("{fs}.esd"));
        let img = format!("{}@@1M", target.display());
        let out = mtools(&["mcopy", "-i", &img, "::/sources/install.esd", got.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        let info = woesafe::media::wim::inspect(&mut std::fs::File::open(&got).unwrap()).unwrap();
        assert!(!info.solid && info.version == 0x10D00, "the re-packed WIM is solid: {info:?}");
        ok(wimlib(&["verify", got.to_str().unwrap()]));
        assert_eq!(wim_content(&got), wim_content(&original), "the re-packed WIM's content differs");
        std::fs::remove_file(&target).unwrap();
    }
}

/// The Media Creation Tool's case: a solid install.esd whose re-pack is over 4000 MiB (4.4 GiB of data that
/// solid compression shrinks and a plain WIM cannot) becomes a FAT32 stick with install.swm parts, under the
/// default --fs auto: the parts join into a WIM with the ESD's images, properties, files and hashes, and the
/// stick boots under OVMF enforcing Secure Boot with Microsoft's keys (the fixture's loaders are Debian's
/// signed shim and GRUB).
#[test]
fn a_solid_esd_becomes_fat32_parts_that_boot_under_secure_boot() {
    let name = "a_solid_esd_becomes_fat32_parts_that_boot_under_secure_boot";
    if !need_root(name) {
        return;
    }
    if !have("qemu-system-x86_64") || !Path::new("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd").exists() {
        woesafe::report_skip(name, "needs qemu-system-x86_64 and OVMF's Secure Boot firmware (package ovmf)");
        return;
    }
    let fx = fixture_with("win-sb-esd", &["--secureboot", "--esd-mib", "4400"]);
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("esd.img");
    // The re-pack's scratch (a plain WIM of 4.4 GiB, gone when the write ends) in RAM where /dev/shm has room,
    // else in the test's directory: either way a leaked loop device on it would show.
    let ram = scratch_in_ram(4600 << 20);
    let tmp = ram.as_ref().map_or(work.path(), |d| d.path());
    let before = (host_state(work.path()), host_state(tmp));
    let out = Command::new(bin())
        .args(["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "6G", "--yes"])
        .args(["--source-driver", "userspace"])
        .env("TMPDIR", tmp)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let msg = text(&out);
    assert!(out.status.success(), "{msg}");
    assert!(msg.contains("Filesystem: FAT32 — sources/install.esd") && msg.contains("re-packed"), "{msg}");
    assert!(msg.contains("It is split into 2 parts while it is copied"), "{msg}");
    assert!(msg.contains("sources/install.esd was split into 2 parts"), "{msg}");
    assert_eq!(before, (host_state(work.path()), host_state(tmp)), "the write left something behind");
    let left: Vec<_> =
        std::fs::read_dir(tmp).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n != "esd.img").collect();
    assert!(left.is_empty(), "scratch left in {}: {left:?}", tmp.display());
    drop(ram);
    assert_eq!(sfdisk_types(&image), ["c"], "one FAT32 partition, no NTFS");
    let img = format!("{}@@1M", image.display());
    let names = String::from_utf8_lossy(&mtools(&["mdir", "-i", &img, "-b", "::/sources"]).stdout).to_lowercase();
    assert!(!names.contains("install.esd"), "the ESD itself is on the stick:\n{names}");
    let parts: Vec<std::path::PathBuf> = (1..=2).map(|n| work.path().join(format!("part{n}.swm"))).collect();
    // The boot (QEMU reads the image through a snapshot) runs while the parts are copied out of the image.
    let (ok_boot, log) = std::thread::scope(|s| {
        let boot = s.spawn(|| boot_check(&image, "uefi-sb"));
        for (n, p) in parts.iter().enumerate() {
            let on_stick = format!("::/sources/{}", woesafe::media::wim::part_name("install", n + 1));
            let out = mtools(&["mcopy", "-i", &img, &on_stick, p.to_str().unwrap()]);
            assert!(out.status.success(), "{}", text(&out));
            let size = std::fs::metadata(p).unwrap().len();
            assert!(size <= woesafe::media::wim::FAT32_MAX_FILE, "{} is {size} bytes", p.display());
        }
        boot.join().unwrap()
    });
    assert!(ok_boot, "the re-packed ESD stick did not boot under Secure Boot:\n{log}");
    std::fs::remove_file(&image).unwrap(); // disk space
    let joined = work.path().join("joined.wim");
    ok(wimlib(&["join", joined.to_str().unwrap(), parts[0].to_str().unwrap(), parts[1].to_str().unwrap()]));
    for p in &parts {
        std::fs::remove_file(p).unwrap();
    }
    ok(wimlib(&["verify", joined.to_str().unwrap()]));
    let original = fx.tree.join("sources/install.esd");
    assert_eq!(wim_content(&joined), wim_content(&original), "the parts' content differs from the ESD's");
}

/// A new directory in /dev/shm (RAM) for `bytes` of scratch space, if it has room for them with 2 GiB to spare and
/// as much memory is available; else None.
fn scratch_in_ram(bytes: u64) -> Option<tempfile::TempDir> {
    let need = bytes + (2 << 30);
    let shm = nix::sys::statvfs::statvfs("/dev/shm").ok()?;
    let room = shm.blocks_available() as u64 * shm.fragment_size() as u64;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    if room < need || mem_kib * 1024 < need {
        return None;
    }
    tempfile::tempdir_in("/dev/shm").ok()
}

/// Partition types in the image's table, as sfdisk reads it.
fn sfdisk_types(image: &Path) -> Vec<String> {
    let out = Command::new("sfdisk").arg("--json").arg(image).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap().to_string())
        .collect()
}

/// A re-pack that cannot have its scratch space is refused before the target is touched, naming the room
/// needed and what to do.
#[test]
fn too_little_scratch_space_for_a_repack_is_refused_before_writing() {
    let name = "too_little_scratch_space_for_a_repack_is_refused_before_writing";
    if !need_root(name) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let iso = big_esd_iso(dir.path());
    let tmp = dir.path().join("small-tmp");
    std::fs::create_dir(&tmp).unwrap();
    private_mount_namespace();
    let out = Command::new("mount").args(["-t", "tmpfs", "-o", "size=8m", "woesafe-test"]).arg(&tmp).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let target = dir.path().join("t.img");
    let untouched = marked_target(&target);
    let out = woesafe_tmpdir(&["write", iso.to_str().unwrap(), target.to_str().unwrap(), "--yes"], &tmp);
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(3), "{msg}");
    assert!(msg.contains("re-packing the WIM needs") && msg.contains("of scratch space in"), "{msg}");
    assert!(msg.contains("set TMPDIR to a directory") && msg.contains("or use --fs ntfs"), "{msg}");
    assert!(untouched(), "the target was touched");
    let _ = nix::mount::umount2(&tmp, nix::mount::MntFlags::MNT_DETACH);
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
    fixture_with("win-sb-bigwim", &["--secureboot", "--big-wim-mib", "4400"])
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
    // The split needs no scratch space: TMPDIR has 1 MiB.
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    private_mount_namespace();
    let out = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "woesafe-test"]).arg(&tmp).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let image = work.path().join("split.img");
    let before = host_state(work.path());
    let out =
        woesafe_tmpdir(&["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "6G", "--yes"], &tmp);
    let msg = text(&out);
    assert!(out.status.success(), "{msg}");
    assert!(msg.contains("Filesystem: FAT32 — sources/install.wim (4.3 GiB) is over FAT32's file-size limit (4 GiB - 1 byte) and is split into 2 install.swm parts of at most 4000 MiB"), "{msg}");
    assert!(msg.contains("sources/install.wim is split into 2 parts while it is copied"), "{msg}");
    assert!(msg.contains("sources/install.wim was split into 2 parts"), "{msg}");
    assert!(!msg.contains("Preparing") && !msg.contains("scratch"), "a plain split used scratch space:\n{msg}");
    // No loop device or mount is left (TMPDIR is under the test's directory).
    assert_eq!(before, host_state(work.path()), "the write left something behind");
    let _ = nix::mount::umount2(&tmp, nix::mount::MntFlags::MNT_DETACH);

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
    // Byte for byte what wimlib-imagex split makes of the ISO's install.wim, but the split set's GUID.
    let theirs = work.path().join("wimlib");
    std::fs::create_dir(&theirs).unwrap();
    let original = fx.tree.join("sources/install.wim");
    let swm = theirs.join("install.swm");
    ok(wimlib(&["split", original.to_str().unwrap(), swm.to_str().unwrap(), "4000"]));
    for (n, ours) in parts.iter().enumerate() {
        let their = theirs.join(woesafe::media::wim::part_name("install", n + 1));
        same_but_guid(ours, &their);
        std::fs::remove_file(&their).unwrap(); // disk space
    }
    let joined = work.path().join("joined.wim");
    ok(wimlib(&["join", joined.to_str().unwrap(), parts[0].to_str().unwrap(), parts[1].to_str().unwrap()]));
    for p in &parts {
        std::fs::remove_file(p).unwrap(); // disk space
    }
    ok(wimlib(&["verify", joined.to_str().unwrap()]));
    let listing = |w: &Path| ok(wimlib(&["dir", w.to_str().unwrap(), "1", "--detailed"]));
    let (a, b) = (listing(&original), listing(&joined));
    assert!(a.contains("SHA-1") || a.contains("Hash"), "no hashes in the listing:\n{a}");
    assert_eq!(a, b, "the joined WIM's files differ from the original's");
}

/// A plain install.wim over 4 GiB that can be split but holds one resource over FAT32's limit (a 4200 MiB file:
/// whatever the part size, the part holding it is too big) is re-packed under the default --fs auto, and the
/// stick holds it: sources/install.wim (LZX shrinks the zeros to a few MiB), a WIM wimlib verifies, with the
/// ISO's images, files and hashes. (Before the fix the WIM was taken out of the tree and never re-packed: the
/// stick had no install image, exit 0.)
#[test]
fn a_wim_with_one_resource_over_fat32s_limit_is_repacked_onto_the_stick() {
    let name = "a_wim_with_one_resource_over_fat32s_limit_is_repacked_onto_the_stick";
    if !need_root(name) {
        return;
    }
    let fx = fixture_with("win-bigwim-1res", &["--big-wim-mib", "4200", "--big-wim-one-resource"]);
    let original = fx.tree.join("sources/install.wim");
    // The case itself: over 4 GiB, splittable, but a part over FAT32's limit.
    let wim_size = std::fs::metadata(&original).unwrap().len();
    assert!(wim_size > 4 << 30, "the fixture's install.wim is {wim_size} bytes, not over 4 GiB");
    let plan = woesafe::media::wimsplit::plan(
        &mut std::fs::File::open(&original).unwrap(),
        woesafe::media::wim::PART_MIB << 20,
        [0; 16],
    )
    .expect("the fixture's install.wim is splittable");
    assert!(
        plan.parts.iter().any(|p| p.size > woesafe::media::wim::FAT32_MAX_FILE),
        "no part of the fixture's install.wim is over FAT32's limit: {:?}",
        plan.parts.iter().map(|p| p.size).collect::<Vec<_>>()
    );

    let work = tempfile::tempdir().unwrap();
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let image = work.path().join("repack.img");
    let before = host_state(work.path());
    let out =
        woesafe_tmpdir(&["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "6G", "--yes"], &tmp);
    let msg = text(&out);
    assert!(out.status.success(), "{msg}");
    assert!(
        msg.contains("Filesystem: FAT32 — sources/install.wim (4.1 GiB) is over FAT32's file-size limit")
            && msg.contains("one resource in it is that big")
            && msg.contains("re-packed"),
        "{msg}"
    );
    assert!(msg.contains("Re-packing sources/install.wim (4.1 GiB) into a plain WIM (LZX:20)"), "{msg}");
    assert!(msg.contains("The re-packed WIM fits FAT32 whole: it becomes sources/install.wim"), "{msg}");
    assert!(!msg.contains("was split into"), "a WIM written whole is not reported as split: {msg}");
    // No loop device (wimlib's window over the ISO) or mount is left.
    assert_eq!(before, host_state(work.path()), "the write left something behind");
    assert_eq!(sfdisk_types(&image), ["c"], "one FAT32 partition, no NTFS");

    let img = format!("{}@@1M", image.display());
    let listing = mtools(&["mdir", "-i", &img, "-b", "::/sources"]);
    let names = String::from_utf8_lossy(&listing.stdout).to_lowercase();
    assert!(names.contains("::/sources/install.wim"), "no install image on the stick:\n{names}");
    assert!(!names.contains(".swm"), "install.swm parts on the stick (the re-pack fits whole):\n{names}");
    let ext = work.path().join("extracted");
    std::fs::create_dir(&ext).unwrap();
    let out = mtools(&["mcopy", "-i", &img, "-s", "-n", "-m", "::/*", ext.to_str().unwrap()]);
    assert!(out.status.success(), "mcopy: {}", text(&out));
    std::fs::remove_file(&image).unwrap(); // disk space
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
    // The install image: a plain WIM that fits FAT32, that wimlib verifies (every file's data against its hash),
    // with the ISO's images, properties, files and hashes.
    let got = ext.join("sources/install.wim");
    let size = std::fs::metadata(&got).unwrap().len();
    assert!(size <= woesafe::media::wim::FAT32_MAX_FILE, "the stick's install.wim is {size} bytes");
    let info = woesafe::media::wim::inspect(&mut std::fs::File::open(&got).unwrap()).unwrap();
    assert!(!info.solid && info.version == 0x10D00 && info.image_count == 2, "{info:?}");
    ok(wimlib(&["verify", got.to_str().unwrap()]));
    assert_eq!(wim_content(&got), wim_content(&original), "the re-packed WIM's content differs from the ISO's");
}

/// Two files are equal but for bytes 24..40 (a WIM header's GUID), compared in chunks.
fn same_but_guid(a: &Path, b: &Path) {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    assert_eq!(fa.metadata().unwrap().len(), fb.metadata().unwrap().len(), "{} and {}", a.display(), b.display());
    let (mut ba, mut bb) = (vec![0u8; 8 << 20], vec![0u8; 8 << 20]);
    let fill = |f: &mut std::fs::File, buf: &mut [u8]| {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]).unwrap() {
                0 => break,
                k => n += k,
            }
        }
        n
    };
    let mut at = 0u64;
    loop {
        let n = fill(&mut fa, &mut ba);
        assert_eq!(n, fill(&mut fb, &mut bb));
        if n == 0 {
            break;
        }
        if at == 0 {
            ba[24..40].copy_from_slice(&bb[24..40]);
        }
        // Slice equality is a memcmp; only a difference is looked for byte by byte.
        if ba[..n] != bb[..n] {
            let i = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y).unwrap();
            panic!("{} differs from {} at byte {}", a.display(), b.display(), at + i as u64);
        }
        at += n as u64;
    }
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
