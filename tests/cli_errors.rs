//! Bad input and refusals: a clear message naming the problem, the documented exit code, and the target left
//! untouched when the check could run before writing.

mod common;
use common::*;
use std::path::Path;

fn digest(p: &Path) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(p).unwrap()).to_vec()
}

/// A 200 MiB image with a recognisable pattern, to prove a refused write left it alone.
fn patterned_image(dir: &Path, size: u64) -> std::path::PathBuf {
    let p = dir.join("target.img");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"precious data, do not erase", 0).unwrap();
    f.write_all_at(b"more precious data", size - 4096).unwrap();
    p
}

#[test]
fn usage_errors_exit_2() {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("x.img");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["write", "/nonexistent/win.iso", img.to_str().unwrap(), "--size", "1G"],
            "cannot read the ISO /nonexistent/win.iso",
        ),
        (vec!["write", "/", img.to_str().unwrap(), "--size", "1G"], "is not a regular file"),
        (
            vec!["write", "/etc/hostname", img.to_str().unwrap(), "--size", "8X"],
            "--size: size \"8X\" has an unknown unit",
        ),
        (
            vec!["write", "/etc/hostname", img.to_str().unwrap(), "--size", "1G", "--label", "ABCDEFGHIJKL"],
            "at most 11",
        ),
        (vec!["write", "/etc/hostname", img.to_str().unwrap(), "--size", "1G", "--label", "a.b"], "'.'"),
        (vec!["write", "/etc/hostname", img.to_str().unwrap()], "give --size"),
        (vec!["write", "/etc/hostname", img.to_str().unwrap(), "--size", "1G", "--fs", "xfs"], "possible values"),
        (
            vec![
                "write",
                "/etc/hostname",
                img.to_str().unwrap(),
                "--size",
                "1G",
                "--uefi-ntfs-image",
                "/nonexistent.img",
            ],
            "--uefi-ntfs-image: cannot read /nonexistent.img",
        ),
        (
            vec![
                "write",
                "/etc/hostname",
                img.to_str().unwrap(),
                "--size",
                "1G",
                "--boot",
                "bios",
                "--uefi-ntfs-image",
                "/etc/hostname",
            ],
            "for UEFI boot",
        ),
        (
            vec!["write", "/etc/hostname", "/nonexistent-dir/x.img", "--size", "1G"],
            "directory for the image file does not exist",
        ),
        (vec!["write", "/etc/hostname"], "TARGET"),
        (
            vec!["write", "/etc/hostname", img.to_str().unwrap(), "--size", "1G", "--table", "gpt", "--boot", "bios"],
            "UEFI-only",
        ),
        (vec!["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, expect) in cases {
        let out = woesafe(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: expected {expect:?} in\n{err}");
        assert!(!img.exists(), "{args:?} created the image");
    }
}

#[test]
fn help_documents_exit_codes() {
    let out = woesafe(&["write", "--help"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    for line in ["0  success", "2  usage error", "3  refused by a safety check"] {
        assert!(s.contains(line), "{s}");
    }
}

#[test]
fn refusals_exit_3_and_leave_the_target_untouched() {
    if !need_root("refusals_exit_3_and_leave_the_target_untouched") {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();

    // A non-Windows ISO: refused with a hint to use dd; the target untouched.
    let tree = work.path().join("linux");
    std::fs::create_dir_all(tree.join("casper")).unwrap();
    std::fs::write(tree.join("casper/vmlinuz"), b"kernel").unwrap();
    let linux_iso = work.path().join("linux.iso");
    make_iso(&tree, &linux_iso);
    let img = patterned_image(work.path(), 700 << 20);
    let before = digest(&img);
    let out = woesafe(&["write", linux_iso.to_str().unwrap(), img.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not look like a Windows installation ISO"),
        "{}",
        text(&out)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("dd if="), "{}", text(&out));
    assert_eq!(digest(&img), before, "refused write changed the target");

    // Too small: the message says how much is needed; nothing written.
    let small = work.path().join("small.img");
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), small.to_str().unwrap(), "--size", "30M", "--yes"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("too small"), "{}", text(&out));
    assert!(!small.exists(), "a refused new image must not be created");

    // Names FAT cannot hold apart (UDF is case-sensitive, FAT is not): refused before anything is written.
    let clash = work.path().join("clash");
    std::fs::create_dir_all(clash.join("sources")).unwrap();
    std::fs::write(clash.join("sources/install.wim"), b"wim").unwrap();
    std::fs::write(clash.join("Notes.txt"), b"a").unwrap();
    std::fs::write(clash.join("NOTES.TXT"), b"b").unwrap();
    let clash_iso = work.path().join("clash.iso");
    make_iso(&clash, &clash_iso);
    let out = woesafe(&["write", clash_iso.to_str().unwrap(), img.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("differ only in letter case"), "{}", text(&out));
    assert_eq!(digest(&img), before, "a tree FAT cannot hold must be refused before writing");

    // An image whose size is not whole sectors: a clear usage error.
    let odd = work.path().join("odd.img");
    std::fs::File::create(&odd).unwrap().set_len((600 << 20) + 100).unwrap();
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), odd.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a whole number of 512-byte sectors"), "{}", text(&out));

    // The ISO as its own target.
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), fx.iso.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the ISO itself"), "{}", text(&out));

    // No confirmation possible (stdin is not a terminal) and no --yes: refused, untouched.
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), img.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --yes"), "{}", text(&out));
    assert_eq!(digest(&img), before);

    // Another writer holds the target: "busy", exit 3, untouched.
    let holder = std::fs::File::open(&img).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock on an fd we own.
    assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), img.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("busy: another writer holds"), "{}", text(&out));
    drop(holder);
    assert_eq!(digest(&img), before);

    // An image attached to a loop device is in use: refused.
    let (_f, lo) = test_loop(&img, 0, 0, true);
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), img.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("attached to {}", lo.path().display())),
        "{}",
        text(&out)
    );
    // A loop device backed by the ISO: refused.
    let (_g, iso_lo) = test_loop(&fx.iso, 0, 0, true);
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), iso_lo.path().to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the ISO itself"), "{}", text(&out));
    drop(lo);
    drop(iso_lo);
    assert_eq!(digest(&img), before);
}
