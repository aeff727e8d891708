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

/// Run woesafe with stdin null; a run that takes longer than `within` is killed and fails the test (a hang
/// must never hang the test suite).
fn woesafe_within(args: &[&str], within: std::time::Duration) -> std::process::Output {
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("woesafe {args:?} still ran after {within:?} (killed):\n{}", text(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Each file argument given a FIFO (no writer: a blocking open would wait forever), a socket, a character
/// device or a directory: a usage error naming what it is, at once.
#[test]
fn special_files_as_arguments_are_usage_errors_not_hangs() {
    let work = tempfile::tempdir().unwrap();
    let fifo = work.path().join("fifo.iso");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let sock_path = work.path().join("sock.iso");
    let _sock = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let img = work.path().join("x.img");
    let (fifo, sock, dir) = (fifo.to_str().unwrap(), sock_path.to_str().unwrap(), work.path().to_str().unwrap());
    let specials = [(fifo, "a FIFO"), (sock, "a socket"), ("/dev/zero", "a character device"), (dir, "a directory")];
    let within = std::time::Duration::from_secs(10);
    for (special, kind) in specials {
        let cases: Vec<(Vec<&str>, String)> = vec![
            (
                vec!["write", special, img.to_str().unwrap(), "--size", "1G"],
                format!("{special} is not a regular file but {kind}"),
            ),
            (
                vec!["write", "/etc/hostname", special, "--yes"],
                format!("{special} is neither a block device nor a regular image file"),
            ),
            (
                vec!["write", "/etc/hostname", img.to_str().unwrap(), "--size", "1G", "--uefi-ntfs-image", special],
                format!("--uefi-ntfs-image: {special} is not a regular file but {kind}"),
            ),
        ];
        for (args, expect) in cases {
            let out = woesafe_within(&args, within);
            assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", text(&out));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(&expect), "{args:?}: expected {expect:?} in\n{err}");
            assert!(!img.exists(), "{args:?} created the image");
        }
    }
}

/// Files swapped after the supervisor's checks, while the worker waits at its first step: the worker opens the
/// ISO and the target again by path and must find the very files that were checked. Another file (even a good
/// ISO), a symbolic link or a FIFO in their place is refused at once, exit 3, and neither the original target
/// nor the replacement gets a byte.
#[test]
fn files_swapped_after_the_checks_are_refused() {
    if !need_root("files_swapped_after_the_checks_are_refused") {
        return;
    }
    let fx = fixture();
    for (what, swap) in
        [("ISO", "file"), ("ISO", "symlink"), ("ISO", "fifo"), ("target", "file"), ("target", "symlink")]
    {
        let case = format!("{what} replaced by a {swap}");
        let work = tempfile::tempdir().unwrap();
        let iso = work.path().join("win.iso");
        std::fs::copy(&fx.iso, &iso).unwrap();
        let image = patterned_image(work.path(), 600 << 20);
        let other = work.path().join("other");
        if what == "ISO" {
            std::fs::copy(&fx.iso, &other).unwrap();
        } else {
            let f = std::fs::File::create(&other).unwrap();
            f.set_len(600 << 20).unwrap();
            use std::os::unix::fs::FileExt;
            f.write_all_at(b"someone else's data", 0).unwrap();
        }
        let (image_before, other_before) = (digest(&image), digest(&other));
        let mut run = Run::start(
            &["write", iso.to_str().unwrap(), image.to_str().unwrap(), "--yes"],
            &[("WOESAFE_TEST_PAUSE_AT", "read-iso:3000")],
        );
        run.wait_line("Reading the ISO", std::time::Duration::from_secs(60));
        let path = if what == "ISO" { &iso } else { &image };
        let kept = work.path().join("kept");
        std::fs::rename(path, &kept).unwrap();
        match swap {
            "file" => std::fs::rename(&other, path).unwrap(),
            "symlink" => std::os::unix::fs::symlink(&other, path).unwrap(),
            _ => nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap(),
        }
        let status = run.wait_exit(std::time::Duration::from_secs(60));
        let err = run.text();
        assert_eq!(status.code(), Some(3), "{case}:\n{err}");
        assert!(
            err.contains(&format!("the {what} ")) && err.contains("was replaced after it was checked"),
            "{case}:\n{err}"
        );
        assert!(err.contains("Target state: the target was not changed"), "{case}:\n{err}");
        let original_image = if what == "target" { &kept } else { &image };
        assert_eq!(digest(original_image), image_before, "{case}: the checked target was written to");
        let replacement = if swap == "file" { path } else { &other };
        if swap != "fifo" {
            assert_eq!(digest(replacement), other_before, "{case}: the replacement was written to");
        }
    }
}

/// A target the user names through a symbolic link to an existing image file is written: the worker finds the
/// very file the supervisor checked (the swap test above refuses a link that leads elsewhere).
#[test]
fn an_image_named_through_a_symlink_is_written() {
    if !need_root("an_image_named_through_a_symlink_is_written") {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = patterned_image(work.path(), 600 << 20);
    let link = work.path().join("stick.img");
    std::os::unix::fs::symlink(&image, &link).unwrap();
    let before = digest(&image);
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), link.to_str().unwrap(), "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link itself was replaced");
    assert_ne!(digest(&image), before, "the image behind the link was not written");
}

/// recover's path arguments: a named path that exists must be a directory or a block device, and
/// --move-shadowed a directory; anything else is a usage error, at once (root: recover refuses others first).
#[test]
fn recover_path_arguments_are_checked() {
    if !need_root("recover_path_arguments_are_checked") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let fifo = work.path().join("stuck_fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let sock_path = work.path().join("stuck_sock");
    let _sock = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    let file = work.path().join("stuck_file");
    std::fs::write(&file, b"x").unwrap();
    // A character device of the test's own (the same as /dev/null), where recover accepts a named path.
    let chr = work.path().join("stuck_chr");
    nix::sys::stat::mknod(
        &chr,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let within = std::time::Duration::from_secs(30);
    for (p, kind) in [
        (fifo.to_str().unwrap(), "a FIFO"),
        (sock_path.to_str().unwrap(), "a socket"),
        (chr.to_str().unwrap(), "a character device"),
        (file.to_str().unwrap(), "a regular file"),
    ] {
        let out = woesafe_within(&["recover", p], within);
        assert_eq!(out.status.code(), Some(2), "{p}\n{}", text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{p} is {kind}")), "{p}\n{}", text(&out));
        let out = woesafe_within(&["recover", "--yes", "--move-shadowed", p], within);
        assert_eq!(out.status.code(), Some(2), "{p}\n{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains(&format!("--move-shadowed: {p} is not a directory but {kind}")),
            "{p}\n{}",
            text(&out)
        );
    }
    assert!(fifo.exists() && file.exists(), "recover must leave what it refused alone");
}

#[test]
fn huge_sizes_are_usage_errors() {
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("x.img");
    for size in ["99999999999999999999999T", "18446744073709551615", "340282366920938463463374607431768211455T"] {
        let out = woesafe(&["write", "/etc/hostname", img.to_str().unwrap(), "--size", size]);
        assert_eq!(out.status.code(), Some(2), "{size}\n{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("--size: size \"{size}\" is too large")),
            "{size}\n{}",
            text(&out)
        );
        assert!(!img.exists());
    }
}

/// A --size the filesystem holding the new image cannot take (ext4 stops at 16 TiB): a usage error, and the
/// empty file is not left behind (a retry would have taken it for an existing image of 0 bytes).
#[test]
fn a_size_the_filesystem_refuses_leaves_no_file() {
    if !need_root("a_size_the_filesystem_refuses_leaves_no_file") {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir_in(root().join("target")).unwrap();
    let img = work.path().join("new.img");
    let size: u64 = 17 << 40;
    {
        let probe = std::fs::File::create(&img).unwrap();
        if probe.set_len(size).is_ok() {
            woesafe::report_skip(
                "a_size_the_filesystem_refuses_leaves_no_file",
                "the filesystem of target/ takes a 17 TiB file (ext4 does not)",
            );
            return;
        }
    }
    std::fs::remove_file(&img).unwrap();
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), img.to_str().unwrap(), "--size", "17T", "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("give a smaller --size"), "{}", text(&out));
    assert!(!img.exists(), "the empty image file was left behind");
}

/// Text from a hostile ISO reaches the terminal escaped: a volume id and file names carrying ESC sequences
/// (clear screen) and a right-to-left override are shown as `\x1b[2J` and `\u{202e}`, in the inventory, the
/// largest files (-v) and the refusal that names the file; no raw ESC or override is printed.
#[test]
fn iso_text_is_escaped_on_the_terminal() {
    if !need_root("iso_text_is_escaped_on_the_terminal") || !have("genisoimage") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("sources")).unwrap();
    std::fs::write(tree.join("sources/install.wim"), b"wim").unwrap();
    std::fs::write(tree.join("a_[2Jb.txt"), b"x").unwrap();
    std::fs::write(tree.join("rtl_x.txt"), b"yy").unwrap();
    std::fs::write(tree.join("nl_y.txt"), b"zzz").unwrap();
    let iso = work.path().join("hostile.iso");
    let out = std::process::Command::new("genisoimage")
        .args(["-quiet", "-J", "-V", "V\x1b[2JX", "-o"])
        .arg(&iso)
        .arg(&tree)
        .output()
        .unwrap();
    assert!(out.status.success(), "genisoimage: {}", text(&out));
    // genisoimage writes '_' for the controls in Joliet names: put the hostile characters in (ISO9660
    // directory records carry no checksum).
    let mut data = std::fs::read(&iso).unwrap();
    let utf16 = |s: &str| s.encode_utf16().flat_map(u16::to_be_bytes).collect::<Vec<u8>>();
    for (from, to) in [("a_[2Jb", "a\x1b[2Jb"), ("rtl_x", "rtl\u{202e}x"), ("nl_y", "nl\ny")] {
        let (from, to) = (utf16(from), utf16(to));
        let at = data.windows(from.len()).position(|w| w == from).expect("the Joliet name");
        data[at..at + to.len()].copy_from_slice(&to);
    }
    assert!(data.windows(5).any(|w| w == b"V\x1b[2J"), "the volume id carries ESC");
    std::fs::write(&iso, &data).unwrap();
    let img = work.path().join("out.img");
    let out = woesafe(&["write", iso.to_str().unwrap(), img.to_str().unwrap(), "--size", "64M", "--yes", "-v"]);
    let all = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
    assert!(!all.contains(&0x1b), "a raw ESC reached the terminal:\n{}", text(&out));
    assert!(!String::from_utf8_lossy(&all).contains('\u{202e}'), "a raw U+202E reached the terminal:\n{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for shown in ["ISO: V\\x1b[2JX", "largest: a\\x1b[2Jb.txt", "largest: rtl\\u{202e}x.txt", "largest: nl\\x0ay.txt"] {
        assert!(err.contains(shown), "expected {shown:?} in\n{err}");
    }
    // FAT cannot hold ESC in a name: refused before writing, and the refusal names the file escaped too.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(err.contains("a\\x1b[2Jb.txt: FAT32 cannot hold the character"), "{err}");
    // A newline in a name must not start a line of its own.
    assert!(!err.lines().any(|l| l.starts_with("y.txt")), "{err}");
}

/// File names that are not UTF-8 reach the worker exactly (they used to break the frame: "lost contact with the
/// worker").
#[test]
fn file_names_that_are_not_utf8_work() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    if !need_root("file_names_that_are_not_utf8_work") || !have("genisoimage") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("linux");
    std::fs::create_dir_all(tree.join("casper")).unwrap();
    std::fs::write(tree.join("casper/vmlinuz"), b"kernel").unwrap();
    let iso = work.path().join(OsStr::from_bytes(b"linux\xff.iso"));
    make_iso(&tree, &iso);
    let img = work.path().join(OsStr::from_bytes(b"out\xfe.img"));
    let out = std::process::Command::new(bin())
        .arg("write")
        .arg(&iso)
        .arg(&img)
        .args(["--size", "64M", "--yes"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    // The worker read the ISO (a Linux one, refused before writing).
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not look like a Windows installation ISO"), "{err}");
    assert!(!img.exists(), "a refused new image must not be created");
}

#[test]
fn bad_setup_options_are_usage_errors_before_anything_is_written() {
    let work = tempfile::tempdir().unwrap();
    let new = work.path().join("new.img");
    let existing = patterned_image(work.path(), 8 << 20);
    let before = digest(&existing);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--local-account", "Administrator"], "is the name of a built-in Windows account or group"),
        (vec!["--local-account", "a/b"], "contains '/', which Windows does not allow in a user name"),
        (vec!["--local-account", "abcdefghijklmnopqrstu"], "has 21 characters; Windows allows at most 20"),
        (vec!["--local-account", ""], "--local-account: the name is empty"),
        (vec!["--regional", "C.UTF-8"], "names no language and country"),
        (vec!["--regional", "xx_YY,Europe/Berlin"], "is not one Windows knows"),
        (vec!["--regional", "de_DE,Mars/Olympus"], "has no Windows equivalent"),
        (vec!["--regional", "de_DE,Europe/Berlin,x"], "expected host, LOCALE or LOCALE,ZONE"),
        (vec!["--bypass", "tpm", "--no-bitlocker", "--local-account", "Guest"], "built-in Windows account"),
    ];
    for (extra, expect) in cases {
        for target in [&new, &existing] {
            let mut args = vec!["write", "/etc/hostname", target.to_str().unwrap(), "--size", "1G", "--yes"];
            args.extend(&extra);
            let out = woesafe(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", text(&out));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(expect), "{args:?}: expected {expect:?} in\n{err}");
            assert!(!new.exists(), "{args:?} created the image");
            assert_eq!(digest(&existing), before, "{args:?} changed the target");
        }
    }
    // --regional host on a machine whose locale names no language: refused, saying where it looked.
    let out = std::process::Command::new(bin())
        .args(["write", "/etc/hostname", new.to_str().unwrap(), "--size", "1G", "--regional", "host"])
        .env("LC_ALL", "C.UTF-8")
        .env("TZ", "Europe/Berlin")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"C.UTF-8\" (from $LC_ALL)"), "{}", text(&out));
    assert!(!new.exists());
}
