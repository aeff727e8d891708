//! `woesafe write` end to end on image files and loop devices, with each driver this machine offers: the
//! partition table, fsck.fat, every file byte for byte, and the host's mount table and loop devices unchanged.

mod common;
use common::*;

fn write_and_verify(driver_args: &[&str], name: &str) {
    if !need_root(name) {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("out.img");
    let before = host_state(work.path());
    let mut args = vec!["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "600M", "--yes"];
    args.extend_from_slice(driver_args);
    let out = woesafe(&args);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Done:"), "{err}");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 600 << 20);
    let after = host_state(work.path());
    assert_eq!(before, after, "the write changed the host's mount table or loop devices");
    verify_written(&image, &fx, work.path());
}

#[test]
fn image_file_userspace_drivers() {
    write_and_verify(&["--source-driver", "userspace", "--target-driver", "userspace"], "image_file_userspace_drivers");
}

#[test]
fn image_file_auto_drivers_say_what_they_chose() {
    if !need_root("image_file_auto_drivers_say_what_they_chose") {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("auto.img");
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "600M", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    // The ISO is read in userspace whatever the kernel offers (ring-0 parsing of an untrusted image only on
    // request); the target's driver comes from /proc/filesystems.
    assert!(err.contains("Drivers: source UDF (userspace reader)"), "{err}");
    assert!(err.contains("(auto: the ISO in userspace, the target from /proc/filesystems)"), "{err}");
}

#[test]
fn kernel_drivers_where_available() {
    if !kernel_has("kernel_drivers_where_available", &["vfat", "udf"]) {
        return;
    }
    write_and_verify(&["--source-driver", "kernel", "--target-driver", "kernel"], "kernel_drivers_where_available");
}

#[test]
fn loop_device_target() {
    if !need_root("loop_device_target") {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let backing = work.path().join("stick.img");
    std::fs::File::create(&backing).unwrap().set_len(700 << 20).unwrap();
    // The "stick": an autoclear loop device the test holds (and that goes away with the test, pass or fail).
    let (_f, stick) = test_loop(&backing, 0, 0, false);
    let before = host_state(work.path());
    let out = woesafe(&[
        "write",
        fx.iso.to_str().unwrap(),
        stick.path().to_str().unwrap(),
        "--yes",
        "--label",
        "my stick",
        "--target-driver",
        "userspace",
        "--source-driver",
        "userspace",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAT32 \"MY STICK\""), "{}", text(&out));
    let out_write = out;
    assert_eq!(before, host_state(work.path()), "host state changed (only the test's own loop may be attached)");
    drop(stick);
    verify_written(&backing, &fx, work.path());
    let out = std::process::Command::new("minfo")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@1M", backing.display()))
        .arg("::")
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(info.contains("disk label=\"MY STICK"), "{}", text(&out));
    // The serial woesafe reports is the one in the boot sector.
    let err = String::from_utf8_lossy(&out_write.stderr);
    let serial = err.split("(serial ").nth(1).and_then(|r| r.get(..9)).expect("serial in the report").replace('-', "");
    assert!(info.contains(&format!("serial number: {serial}")), "{serial} vs\n{info}");
}

#[test]
fn existing_image_keeps_its_size_and_label_is_derived() {
    if !need_root("existing_image_keeps_its_size_and_label_is_derived") {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("existing.img");
    std::fs::File::create(&image).unwrap().set_len(650 << 20).unwrap();
    let out = woesafe(&[
        "write",
        fx.iso.to_str().unwrap(),
        image.to_str().unwrap(),
        "--size",
        "2G",
        "--yes",
        "--target-driver",
        "userspace",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keeps its size"), "{}", text(&out));
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 650 << 20);
    // CCCOMA_X64FRE_EN-US_DV9 → CCCOMA_X64F
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAT32 \"CCCOMA_X64F\""), "{}", text(&out));
}

#[test]
fn file_over_1_gib_spanning_several_udf_extents() {
    if !need_root("file_over_1_gib_spanning_several_udf_extents") {
        return;
    }
    // A fixture of its own: sources/big.bin of 1100 MiB, which UDF stores in two extents (limit 1 GiB - 2 KiB).
    let work = tempfile::tempdir().unwrap();
    let iso = work.path().join("win.iso");
    let out = std::process::Command::new(root().join("scripts/make-test-iso"))
        .arg(&iso)
        .args(["--big-file-mib", "1100"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let fx = Fixture { iso: iso.clone(), tree: work.path().join("win.d"), manifest: work.path().join("win.sha256") };
    let image = work.path().join("out.img");
    write_fixture(&iso, &image, "2G", &[]);
    // The ISO and its tree are no longer needed: free the space before extracting.
    std::fs::remove_file(&iso).unwrap();
    verify_written(&image, &fx, work.path());
}

/// An ISO that brings its own boot/grub/grub.cfg: BIOS boot replaces it with woesafe's (ntldr), instead of
/// failing halfway.
#[test]
fn iso_with_its_own_grub_cfg() {
    if !need_root("iso_with_its_own_grub_cfg") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("sources")).unwrap();
    std::fs::create_dir_all(tree.join("BOOT/GRUB")).unwrap();
    std::fs::write(tree.join("sources/boot.wim"), b"wim").unwrap();
    std::fs::write(tree.join("BOOT/GRUB/GRUB.CFG"), b"set timeout=5\n").unwrap();
    let iso = work.path().join("grub.iso");
    make_iso(&tree, &iso);
    let image = work.path().join("out.img");
    write_fixture(&iso, &image, "100M", &[]);
    let out = std::process::Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@1M", image.display()))
        .arg("::/boot/grub/grub.cfg")
        .output()
        .unwrap();
    let cfg = String::from_utf8_lossy(&out.stdout);
    assert!(cfg.contains("ntldr /bootmgr") && !cfg.contains("timeout"), "{}", text(&out));
}

fn mtype(image: &std::path::Path, path: &str) -> String {
    let out = std::process::Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@1M", image.display()))
        .arg(format!("::/{path}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The registry values an answer file sets, read back with Python's XML parser (an independent check that
/// it is well-formed): (pass, value name).
fn answer_keys(xml: &str) -> Vec<(String, String)> {
    let script = r#"
import sys, xml.dom.minidom as m
d = m.parseString(sys.stdin.read())
for s in d.getElementsByTagName("settings"):
    for p in s.getElementsByTagName("Path"):
        t = p.firstChild.data.split()
        print(s.getAttribute("pass"), t[t.index("/v") + 1])
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(xml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not well-formed XML:\n{xml}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap();
            (a.to_string(), b.to_string())
        })
        .collect()
}

#[test]
fn windows_11_setup_options() {
    if !need_root("windows_11_setup_options") {
        return;
    }
    let fx = fixture();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("all.img");
    let out = write_fixture(&fx.iso, &image, "600M", &["--bypass", "all"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("autounattend.xml bypassing all"), "{}", text(&out));
    let keys = answer_keys(&mtype(&image, "autounattend.xml"));
    let want: Vec<(String, String)> = [
        ("windowsPE", "BypassTPMCheck"),
        ("windowsPE", "BypassSecureBootCheck"),
        ("windowsPE", "BypassRAMCheck"),
        ("specialize", "BypassNRO"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(keys, want);
    let image = work.path().join("some.img");
    write_fixture(&fx.iso, &image, "600M", &["--bypass", "tpm,ram"]);
    let keys = answer_keys(&mtype(&image, "autounattend.xml"));
    assert_eq!(
        keys,
        vec![("windowsPE".into(), "BypassTPMCheck".into()), ("windowsPE".into(), "BypassRAMCheck".into())]
    );

    // An ISO with its own answer file: refused without --force (nothing written), replaced with it.
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("sources")).unwrap();
    std::fs::write(tree.join("sources/boot.wim"), b"wim").unwrap();
    std::fs::write(tree.join("Autounattend.xml"), b"<unattend>the vendor's own</unattend>").unwrap();
    let iso = work.path().join("own.iso");
    make_iso(&tree, &iso);
    let image = work.path().join("own.img");
    let out = woesafe(&[
        "write",
        iso.to_str().unwrap(),
        image.to_str().unwrap(),
        "--size",
        "100M",
        "--yes",
        "--bypass",
        "tpm",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already has an autounattend.xml"), "{}", text(&out));
    assert!(!image.exists(), "a refused write must not create the image");
    write_fixture(&iso, &image, "100M", &["--bypass", "tpm", "--force"]);
    let xml = mtype(&image, "Autounattend.xml");
    assert!(!xml.contains("vendor's own"), "{xml}");
    assert_eq!(answer_keys(&xml), vec![("windowsPE".into(), "BypassTPMCheck".into())]);
    // without --bypass the ISO's file is copied as it is
    let image = work.path().join("kept.img");
    write_fixture(&iso, &image, "100M", &[]);
    assert!(mtype(&image, "Autounattend.xml").contains("vendor's own"));
}

/// The out-of-box options (--local-account, --regional, --no-data-collection, --no-bitlocker): refused over
/// the ISO's own answer file without --force, like --bypass; written with it, each setting in its pass, and
/// the read-back (--verify) knows the file for woesafe's.
#[test]
fn windows_setup_oobe_options() {
    if !need_root("windows_setup_oobe_options") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(tree.join("sources")).unwrap();
    std::fs::write(tree.join("sources/boot.wim"), b"wim").unwrap();
    std::fs::write(tree.join("autounattend.xml"), b"<unattend>the vendor's own</unattend>").unwrap();
    let iso = work.path().join("own.iso");
    make_iso(&tree, &iso);
    let image = work.path().join("oobe.img");
    for option in [&["--local-account", "alice"][..], &["--regional", "de_DE,Europe/Berlin"], &["--no-bitlocker"]] {
        let mut args = vec!["write", iso.to_str().unwrap(), image.to_str().unwrap(), "--size", "100M", "--yes"];
        args.extend(option);
        let out = woesafe(&args);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        let want = format!("which {} would replace", option[0]);
        assert!(String::from_utf8_lossy(&out.stderr).contains(&want), "{}", text(&out));
        assert!(!image.exists(), "a refused write must not create the image");
    }
    let out = write_fixture(
        &iso,
        &image,
        "100M",
        &[
            "--local-account",
            "alice",
            "--regional",
            "de_DE.UTF-8,Europe/Berlin",
            "--no-data-collection",
            "--no-bitlocker",
            "--force",
            "--verify",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("autounattend.xml local account alice"), "{}", text(&out));
    assert!(err.contains("regional settings de-DE (display language de-DE), W. Europe Standard Time"), "{err}");
    let xml = mtype(&image, "autounattend.xml");
    // Read back with Python's XML parser: (pass, component, setting) for each leaf setting.
    let script = r#"
import sys, xml.dom.minidom as m
d = m.parseString(sys.stdin.read())
for s in d.getElementsByTagName("settings"):
    for c in s.getElementsByTagName("component"):
        for e in c.getElementsByTagName("*"):
            if all(k.nodeType != k.ELEMENT_NODE for k in e.childNodes) and e.firstChild is not None:
                print(s.getAttribute("pass"), c.getAttribute("name"), e.tagName, e.firstChild.data, sep="|")
"#;
    use std::io::Write as _;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(xml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in [
        "oobeSystem|Microsoft-Windows-Shell-Setup|Name|alice",
        "oobeSystem|Microsoft-Windows-Shell-Setup|CommandLine|net user \"alice\" /logonpasswordchg:yes",
        "oobeSystem|Microsoft-Windows-Shell-Setup|HideEULAPage|true",
        "oobeSystem|Microsoft-Windows-Shell-Setup|ProtectYourPC|3",
        "oobeSystem|Microsoft-Windows-Shell-Setup|TimeZone|W. Europe Standard Time",
        "oobeSystem|Microsoft-Windows-International-Core|InputLocale|de-DE",
        "oobeSystem|Microsoft-Windows-International-Core|UILanguage|de-DE",
        "oobeSystem|Microsoft-Windows-SecureStartup-FilterDriver|PreventDeviceEncryption|true",
        "oobeSystem|Microsoft-Windows-EnhancedStorage-Adm|TCGSecurityActivationDisabled|1",
        "specialize|Microsoft-Windows-Deployment|Path|reg add HKLM\\SYSTEM\\CurrentControlSet\\Control\\BitLocker /v PreventDeviceEncryption /t REG_DWORD /d 1 /f",
    ] {
        assert!(lines.lines().any(|l| l == want), "{want}\nin\n{lines}");
    }
}
