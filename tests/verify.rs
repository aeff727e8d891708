//! `woesafe verify`: sticks written by the built `woesafe write` from the fixture ISOs verify as identical
//! (exit 0), and each planted fault is caught (exit 5) and named by its path: a flipped byte in a file, a
//! missing file, a damaged FAT32 boot sector and MBR boot code, a flipped byte on NTFS, and a flipped byte
//! inside a part of a split install.wim.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use common::*;

const PART: u64 = 1 << 20;

fn verify(iso: &Path, image: &Path, json: bool) -> Output {
    let mut args = vec!["verify", iso.to_str().unwrap(), image.to_str().unwrap()];
    if json {
        args.push("--json");
    }
    woesafe(&args)
}

/// Verify and expect `code`; returns the output's text.
fn expect(iso: &Path, image: &Path, code: i32, what: &str) -> String {
    let started = Instant::now();
    let out = verify(iso, image, false);
    let t = text(&out);
    eprintln!("verify ({what}): {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(out.status.code(), Some(code), "{what}:\n{t}");
    t
}

fn flip(image: &Path, offset: u64) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(image).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0xFF;
    f.write_all_at(&b, offset).unwrap();
    f.sync_all().unwrap();
}

/// Where a file's bytes start in the image, through woesafe's own FAT reader.
fn fat_file_offset(image: &Path, path: &str) -> u64 {
    let f = File::open(image).unwrap();
    let size = f.metadata().unwrap().len();
    let vol = woesafe::verify::fat::FatVolume::open(&f, PART, size - PART).unwrap();
    let e = vol
        .walk(&woesafe::verify::fat::LIMITS)
        .unwrap()
        .into_iter()
        .find(|e| e.path.eq_ignore_ascii_case(path))
        .unwrap();
    PART + vol.file_offset(e.first_cluster).unwrap()
}

/// Where a block of 4096 bytes lies in the image (4096-aligned from the partition's start); exactly one place.
fn find_block(image: &Path, needle: &[u8]) -> u64 {
    let f = File::open(image).unwrap();
    let size = f.metadata().unwrap().len();
    let mut found = Vec::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut at = PART;
    while at < size {
        let n = (size - at).min(buf.len() as u64) as usize;
        f.read_exact_at(&mut buf[..n], at).unwrap();
        for (k, block) in buf[..n].chunks_exact(4096).enumerate() {
            if block == needle {
                found.push(at + k as u64 * 4096);
            }
        }
        at += n as u64;
    }
    assert_eq!(found.len(), 1, "the block is found once: {found:?}");
    found[0]
}

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("woesafe-verify-test.").tempdir_in("/var/tmp").unwrap()
}

#[test]
fn fat32_stick_verifies_and_planted_faults_are_caught() {
    if !need_root("fat32_stick_verifies_and_planted_faults_are_caught") {
        return;
    }
    let fx = fixture();
    let dir = scratch();
    let img = dir.path().join("fat.img");
    write_fixture(&fx.iso, &img, "1G", &[]);
    let t = expect(&fx.iso, &img, 0, "good FAT32 stick");
    assert!(t.contains("identical to the ISO") && t.contains("BIOS boot code"), "{t}");

    // One flipped byte in a file: named with the offset; the JSON report says the same.
    let file = "sources/random-3mib-odd.bin";
    let at = fat_file_offset(&img, file) + 12345;
    flip(&img, at);
    let t = expect(&fx.iso, &img, 5, "flipped byte");
    assert!(t.contains(&format!("mismatch: {file}: content differs (first at byte 12345)")), "{t}");
    let out = verify(&fx.iso, &img, true);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["mismatches"].as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json["mismatches"][0]["path"], file);
    assert_eq!(json["mismatches"][0]["problem"]["kind"], "content");
    flip(&img, at);

    // A damaged FAT32 boot sector (its boot code area), then the MBR's boot code.
    flip(&img, PART + 0x100);
    let t = expect(&fx.iso, &img, 5, "FAT32 boot sector");
    assert!(t.contains("mismatch: (FAT32 boot sector): differs from its backup copy"), "{t}");
    flip(&img, PART + 0x100);
    flip(&img, 0x80);
    let t = expect(&fx.iso, &img, 5, "MBR boot code");
    assert!(t.contains("mismatch: (MBR boot code): content differs (first at byte 128)"), "{t}");
    flip(&img, 0x80);
    expect(&fx.iso, &img, 0, "faults undone");

    // Ctrl-C in the middle: exit 130, and the scratch directory (GRUB's core image, mkfs.fat's reference) is gone.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mut run =
        Run::start(&["verify", fx.iso.to_str().unwrap(), img.to_str().unwrap()], &[("TMPDIR", tmp.to_str().unwrap())]);
    run.wait_line("%", std::time::Duration::from_secs(60));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.child.id() as i32), nix::sys::signal::Signal::SIGINT)
        .unwrap();
    let status = run.wait_exit(std::time::Duration::from_secs(60));
    assert_eq!(status.code(), Some(130), "{}", run.text());
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "scratch left in {}", tmp.display());

    // Not an ISO: refused (exit 3); a missing ISO: usage (exit 2); a target a writer holds: busy (exit 3).
    let out = verify(&img, &img, false);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = verify(&dir.path().join("none.iso"), &img, false);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    {
        use std::os::fd::AsRawFd;
        let held = File::open(&img).unwrap();
        // SAFETY: flock on an fd we own.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        let out = verify(&fx.iso, &img, false);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        assert!(text(&out).contains("busy"), "{}", text(&out));
    }

    // A directory whose cluster chain runs into a free cluster: named, and what it held is missing.
    let (fat1, dir_cluster) = {
        let f = File::open(&img).unwrap();
        let size = f.metadata().unwrap().len();
        let vol = woesafe::verify::fat::FatVolume::open(&f, PART, size - PART).unwrap();
        let e = vol.walk(&woesafe::verify::fat::LIMITS).unwrap().into_iter().find(|e| e.path == "boot").unwrap();
        (PART + vol.fat_copies()[0].0, e.first_cluster)
    };
    let entry_at = fat1 + 4 * u64::from(dir_cluster);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
    let mut saved = [0u8; 4];
    f.read_exact_at(&mut saved, entry_at).unwrap();
    f.write_all_at(&[0; 4], entry_at).unwrap();
    f.sync_all().unwrap();
    let t = expect(&fx.iso, &img, 5, "damaged directory");
    assert!(t.contains("mismatch: boot: cannot be read back: its cluster chain runs into free cluster"), "{t}");
    assert!(t.contains("mismatch: boot/bcd: missing on the stick"), "{t}");
    assert!(t.contains("mismatch: (FAT32 file allocation tables): FAT copy 2 differs"), "{t}");
    f.write_all_at(&saved, entry_at).unwrap();
    f.sync_all().unwrap();

    // One missing file (mtools, at the partition's offset).
    let out = Command::new("mdel")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@1M", img.display()))
        .arg("::/sources/setup.exe")
        .output()
        .unwrap();
    assert!(out.status.success(), "mdel: {}", text(&out));
    let t = expect(&fx.iso, &img, 5, "missing file");
    assert!(t.contains("mismatch: sources/setup.exe: missing on the stick"), "{t}");
    assert_eq!(t.matches("mismatch:").count(), 1, "{t}");
}

#[test]
fn ntfs_stick_verifies_and_a_flipped_byte_is_caught() {
    if !need_root("ntfs_stick_verifies_and_a_flipped_byte_is_caught") {
        return;
    }
    if !have("ntfs-3g") || !have("mkntfs") {
        woesafe::report_skip("ntfs_stick_verifies_and_a_flipped_byte_is_caught", "ntfs-3g not installed");
        return;
    }
    let fx = fixture();
    let dir = scratch();
    let before = host_state(dir.path());
    let img = dir.path().join("ntfs.img");
    write_fixture(&fx.iso, &img, "1G", &["--fs", "ntfs"]);
    let t = expect(&fx.iso, &img, 0, "good NTFS stick");
    assert!(t.contains("NTFS MBR, BIOS boot code, UEFI bridge") && t.contains("identical to the ISO"), "{t}");

    // SIGTERM while the worker reads through ntfs-3g: an orderly stop (exit 143), nothing left behind.
    let mut run = Run::start(&["verify", fx.iso.to_str().unwrap(), img.to_str().unwrap()], &[]);
    run.wait_line("%", std::time::Duration::from_secs(60));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let status = run.wait_exit(std::time::Duration::from_secs(60));
    assert_eq!(status.code(), Some(143), "{}", run.text());
    assert!(!Path::new(&format!("/run/woesafe.{}", run.child.id())).exists());
    assert_eq!(host_state(dir.path()), before);

    // SIGKILL of the supervisor: the worker stops in an orderly way (its parent-death signal), unmounting
    // ntfs-3g and detaching its loop; only the empty work directory is left (which `recover` removes).
    let mut run = Run::start(&["verify", fx.iso.to_str().unwrap(), img.to_str().unwrap()], &[]);
    run.wait_line("%", std::time::Duration::from_secs(60));
    let pid = run.child.id();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    run.wait_exit(std::time::Duration::from_secs(10));
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while host_state(dir.path()) != before && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(host_state(dir.path()), before, "left behind after the supervisor was killed");
    let work = format!("/run/woesafe.{pid}");
    if Path::new(&work).exists() {
        std::fs::remove_dir(&work).unwrap(); // empty: rmdir, as recover does
    }

    let file = "sources/random-3mib-odd.bin";
    let content = std::fs::read(fx.tree.join(file)).unwrap();
    let at = find_block(&img, &content[..4096]) + 777;
    flip(&img, at);
    let t = expect(&fx.iso, &img, 5, "flipped byte on NTFS");
    assert!(t.contains(&format!("mismatch: {file}: content differs (first at byte 777)")), "{t}");
    assert_eq!(t.matches("mismatch:").count(), 1, "{t}");

    // The UEFI bridge (the last MiBs): its loader's grub.cfg must name this stick's NTFS volume.
    let size = std::fs::metadata(&img).unwrap().len();
    let mut tail = vec![0u8; 4 << 20];
    File::open(&img).unwrap().read_exact_at(&mut tail, size - (4 << 20)).unwrap();
    let marker = b"--fs-uuid --set=root ";
    let i = tail.windows(marker.len()).position(|w| w == marker).expect("the bridge's grub.cfg");
    flip(&img, size - (4 << 20) + (i + marker.len()) as u64);
    let t = expect(&fx.iso, &img, 5, "bridge naming another volume");
    assert!(
        t.contains("mismatch: (UEFI bridge)/EFI/BOOT/BOOTX64.EFI: woesafe's bridge, but its grub.cfg does not name"),
        "{t}"
    );
    // The worker's loop device and ntfs-3g mount went with it.
    assert_eq!(host_state(dir.path()), before);
}

#[test]
fn a_flipped_byte_in_a_split_wim_part_is_caught() {
    if !need_root("a_flipped_byte_in_a_split_wim_part_is_caught") {
        return;
    }
    let fx = fixture_with("win-sb-bigwim", &["--secureboot", "--big-wim-mib", "4400"]);
    let dir = scratch();
    let img = dir.path().join("big.img");
    write_fixture(&fx.iso, &img, "6G", &[]);
    // Past the part's header: a byte of a resource, which the plan made again from the ISO's WIM must match.
    let at = fat_file_offset(&img, "sources/install2.swm") + 4096 + 3;
    flip(&img, at);
    let t = expect(&fx.iso, &img, 5, "flipped byte in install2.swm");
    assert!(t.contains("mismatch: sources/install2.swm: content differs (first at byte 4099)"), "{t}");
    // Everything else, the first part of 4000 MiB included, is identical.
    assert_eq!(t.matches("mismatch:").count(), 1, "{t}");
}

#[test]
fn windows7_gpt_and_answer_file_sticks_verify_and_their_additions_are_checked() {
    if !need_root("windows7_gpt_and_answer_file_sticks_verify_and_their_additions_are_checked") {
        return;
    }
    let dir = scratch();
    // Windows 7: efi/boot/bootx64.efi extracted from install.wim must be one of its files.
    let fx7 = fixture_with("win7", &["--win7"]);
    let img = dir.path().join("win7.img");
    write_fixture(&fx7.iso, &img, "1G", &[]);
    expect(&fx7.iso, &img, 0, "good Windows 7 stick");
    let at = fat_file_offset(&img, "efi/boot/bootx64.efi") + 3000;
    flip(&img, at);
    let t = expect(&fx7.iso, &img, 5, "changed Windows 7 loader");
    assert!(t.contains("bootx64.efi: not a file of the ISO's sources/install.wim"), "{t}");

    // GPT with an answer file: the tables and autounattend.xml.
    let fx = fixture();
    let img = dir.path().join("gpt.img");
    write_fixture(&fx.iso, &img, "1G", &["--table", "gpt", "--bypass", "tpm,ram"]);
    let t = expect(&fx.iso, &img, 0, "good GPT stick with an answer file");
    assert!(t.contains("FAT32 GPT,"), "{t}");
    let at = fat_file_offset(&img, "autounattend.xml") + 10;
    flip(&img, at);
    let size = std::fs::metadata(&img).unwrap().len();
    flip(&img, size - 512 + 8); // the backup GPT header's revision
    let t = expect(&fx.iso, &img, 5, "changed answer file and backup GPT header");
    assert!(t.contains("autounattend.xml: neither the ISO's autounattend.xml nor woesafe's answer file"), "{t}");
    assert!(t.contains("(GPT): the backup GPT header differs from what woesafe writes"), "{t}");
}

/// The stick is hostile input too: a FAT32 volume with random bytes changed in its boot sector, FATs and
/// directories gives errors, never a panic, and each one ends quickly.
#[test]
fn a_mangled_fat_volume_never_panics() {
    if !have("mkfs.fat") || !have("mcopy") {
        woesafe::report_skip("a_mangled_fat_volume_never_panics", "dosfstools or mtools not installed");
        return;
    }
    use std::io::Read;
    let dir = scratch();
    let tree = dir.path().join("tree");
    for d in ["a", "a/deeper dir", "Sources", "efi/boot"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    for (k, f) in
        ["a/x.txt", "a/deeper dir/A long name, with spaces.bin", "Sources/install.wim", "efi/boot/bootx64.efi"]
            .iter()
            .enumerate()
    {
        std::fs::write(tree.join(f), vec![k as u8 + 1; 5000 * (k + 1)]).unwrap();
    }
    let img = dir.path().join("fat.img");
    let out = Command::new("mkfs.fat").args(["-F", "32", "-C"]).arg(&img).arg("40960").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for entry in std::fs::read_dir(&tree).unwrap() {
        let out = Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-s", "-i"])
            .arg(&img)
            .arg(entry.unwrap().path())
            .arg("::/")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
    let size = f.metadata().unwrap().len();
    let pristine = {
        let mut b = vec![0u8; 4 << 20];
        f.read_exact_at(&mut b, 0).unwrap();
        b
    };
    let vol = woesafe::verify::fat::FatVolume::open(&f, 0, size).unwrap();
    assert_eq!(vol.walk(&woesafe::verify::fat::LIMITS).unwrap().len(), 9);
    drop(vol);
    let reserved = u16::from_le_bytes([pristine[14], pristine[15]]) as usize * 512;
    let fat_bytes = u32::from_le_bytes(pristine[36..40].try_into().unwrap()) as usize * 512;
    let (fat, data) = (reserved, reserved + 2 * fat_bytes);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = Instant::now();
    let (mut walked, mut errors, mut read_errors, mut damaged_dirs) = (0, 0, 0, 0);
    for _ in 0..5000 {
        let mut m = pristine.clone();
        for _ in 0..1 + next() % 4 {
            // Where the structures are: the boot sector, the used start of the first FAT, the directories.
            let (start, len) = [(0, 512), (fat, 2048), (data, 64 << 10)][(next() % 3) as usize];
            let at = start + (next() % len) as usize;
            m[at] = if next() % 2 == 0 { next() as u8 } else { m[at] ^ (1 << (next() % 8)) };
        }
        f.write_all_at(&m, 0).unwrap();
        let one = Instant::now();
        match woesafe::verify::fat::FatVolume::open(&f, 0, size) {
            Err(_) => errors += 1,
            Ok(vol) => match vol.walk_tolerant(&woesafe::verify::fat::LIMITS) {
                Err(_) => errors += 1,
                Ok((entries, damaged)) => {
                    walked += 1;
                    damaged_dirs += damaged.len();
                    for e in entries.iter().filter(|e| !e.is_dir) {
                        let mut data = Vec::new();
                        if vol.open_file(&e.path, e.first_cluster, e.size).read_to_end(&mut data).is_err() {
                            read_errors += 1;
                        }
                        assert!(data.len() as u64 <= e.size);
                    }
                }
            },
        }
        assert!(one.elapsed().as_secs() < 5, "one mangled volume took {:?}", one.elapsed());
    }
    eprintln!(
        "5000 mangled volumes: {walked} walked ({damaged_dirs} damaged directories, {read_errors} file reads refused), \
         {errors} refused, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn help_documents_the_mismatch_exit_code() {
    let out = woesafe(&["verify", "--help"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for line in
        ["0  the stick is identical", "5  mismatch: the stick differs from the ISO", "3  a damaged or hostile ISO"]
    {
        assert!(s.contains(line), "{s}");
    }
}
