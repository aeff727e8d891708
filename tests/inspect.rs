//! `woesafe inspect`: the built binary on the fixture ISOs (Windows 7 with full WIM XML, a 4.4 GiB install.wim
//! that is split, a solid install.esd that is re-packed, the default fixture), its `--json` parsed and checked
//! field by field, its text, odd names (escaped on the terminal), and the errors: not an ISO (exit 3), a
//! directory or a missing file (exit 2).

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

fn inspect(args: &[&str]) -> Output {
    std::process::Command::new(bin()).arg("inspect").args(args).output().unwrap()
}

fn inspect_json(iso: &Path) -> Value {
    let out = inspect(&["--json", iso.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(stdout.trim_end().lines().count(), 1, "one JSON object on one line: {stdout}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["schema"], 1);
    v
}

fn strs(v: &Value, key: &str) -> Vec<String> {
    v.as_array().unwrap().iter().map(|e| e[key].as_str().unwrap_or("").to_string()).collect()
}

#[test]
fn windows_7_editions_version_and_its_loader_in_install_wim() {
    let f = fixture_with("win7", &["--win7"]);
    let v = inspect_json(&f.iso);
    assert_eq!(v["is_windows"], true);
    assert_eq!(v["windows"]["version"], "6.1");
    assert_eq!(v["windows"]["build"], 7600);
    assert_eq!(v["windows"]["name"], "Windows 7");
    let eds = &v["editions"];
    assert_eq!(eds.as_array().unwrap().len(), 2);
    assert_eq!((eds[0]["index"].as_u64(), eds[1]["index"].as_u64()), (Some(1), Some(2)));
    assert_eq!(strs(eds, "edition_id"), ["Starter", "Ultimate"]);
    assert_eq!(strs(eds, "arch"), ["x86", "x64"]);
    assert_eq!(strs(eds, "language"), ["en-US", "en-US"]);
    assert_eq!(v["install_image"]["path"], "sources/install.wim");
    assert_eq!(v["install_image"]["format"], "wim");
    assert_eq!(v["install_image"]["solid"], false);
    assert_eq!(v["install_image"]["over_fat32_limit"], false);
    assert_eq!(v["install_image"]["splittable"], Value::Null);
    // No UEFI loader on the ISO: the x64 image's bootmgfw.efi is the one a write extracts.
    assert_eq!(v["boot"]["windows7"], true);
    assert_eq!(v["boot"]["uefi_loaders"].as_array().unwrap().len(), 0);
    assert_eq!(v["boot"]["windows7_loader_image"], 2);
    assert_eq!(v["boot"]["bios_bootmgr"], true);
    assert_eq!(v["filesystem"]["fs"], "fat32");
    assert!(v["filesystem"]["reason"].as_str().unwrap().contains("every file fits FAT32"));
    // The planned layout of a default write onto a 16 GiB stick.
    let layout = &v["layout"];
    assert_eq!(layout["table"], "mbr");
    assert_eq!(layout["partitions"].as_array().unwrap().len(), 1);
    assert_eq!(layout["partitions"][0]["offset"], 1 << 20);
    assert_eq!(layout["partitions"][0]["size"], (16u64 << 30) - (1 << 20));
    assert_eq!(layout["partitions"][0]["type_name"], "0x0C");
    assert_eq!(layout["partitions"][0]["role"], "main");
    assert_eq!(layout["uefi"], serde_json::json!({"kind": "windows7", "image": 2, "path": "/efi/boot/bootx64.efi"}));
    assert_eq!(layout["bios"]["chain"], "ntldr /bootmgr");
    assert_eq!(layout["label"], v["volume_id"].as_str().unwrap()[..11]);
    assert!(v["needed_bytes"].as_u64().unwrap() > v["total_bytes"].as_u64().unwrap());
    assert_eq!(v["oddities"].as_array().unwrap().len(), 0, "{v}");
}

#[test]
fn a_big_install_wim_is_splittable_and_split_into_two_parts() {
    let f = fixture_with("win-sb-bigwim", &["--secureboot", "--big-wim-mib", "4400"]);
    let v = inspect_json(&f.iso);
    let w = &v["install_image"];
    assert_eq!(w["path"], "sources/install.wim");
    assert_eq!((w["solid"].as_bool(), w["over_fat32_limit"].as_bool()), (Some(false), Some(true)));
    assert_eq!((w["splittable"].as_bool(), w["repack"].as_bool()), (Some(true), Some(false)));
    assert_eq!(w["split_parts"], 2);
    assert_eq!(v["filesystem"]["fs"], "fat32");
    assert!(v["filesystem"]["reason"].as_str().unwrap().contains("is split into 2 install.swm parts"), "{v}");
    assert_eq!(v["filesystem"]["split"], serde_json::json!(["sources/install.wim"]));
    let split = &v["layout"]["split"];
    assert_eq!((split["parts"].as_u64(), split["repack"].as_bool()), (Some(2), Some(false)));
    assert_eq!(split["part_bytes"], 4000u64 << 20);
    let sizes: Vec<u64> = split["part_sizes"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect();
    assert!(sizes.iter().all(|&s| s < 4 << 30), "{sizes:?}");
    assert!(sizes.iter().sum::<u64>() > w["size"].as_u64().unwrap() - (64 << 20), "{sizes:?}");
    let odd = &v["oddities"];
    assert_eq!(strs(odd, "kind"), ["over_4gib"]);
    assert_eq!(strs(odd, "path"), ["sources/install.wim"]);
}

#[test]
fn a_solid_install_esd_is_repacked_and_its_windows_11_xml_read() {
    let f = fixture_with("win-sb-esd", &["--secureboot", "--esd-mib", "4400"]);
    let v = inspect_json(&f.iso);
    let w = &v["install_image"];
    assert_eq!((w["path"].as_str(), w["format"].as_str()), (Some("sources/install.esd"), Some("esd")));
    assert_eq!(
        (w["solid"].as_bool(), w["splittable"].as_bool(), w["repack"].as_bool()),
        (Some(true), Some(false), Some(true))
    );
    assert_eq!(v["filesystem"]["fs"], "fat32");
    assert!(v["filesystem"]["reason"].as_str().unwrap().contains("re-packed into a plain WIM"), "{v}");
    assert_eq!(v["filesystem"]["repack"], serde_json::json!(["sources/install.esd"]));
    assert_eq!(v["layout"]["split"]["repack"], true);
    assert_eq!(v["windows"]["name"], "Windows 11");
    assert_eq!(v["windows"]["version"], "10.0");
    assert!(v["windows"]["build"].as_u64().unwrap() >= 22000);
    assert_eq!(strs(&v["editions"], "arch"), ["x64", "x64"]);
    assert_eq!(strs(&v["editions"], "edition_id"), ["Core", "Professional"]);
    assert_eq!(strs(&v["boot"]["uefi_loaders"], "arch"), ["x64"]);
}

#[test]
fn the_text_says_what_the_iso_is() {
    let f = fixture();
    let out = inspect(&[f.iso.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = String::from_utf8(out.stdout).unwrap();
    for want in [
        "Volume id:    CCCOMA_X64FRE_EN-US_DV9",
        "Read with:    UDF (userspace reader)",
        "Editions:",
        "   1  Windows 10 Home",
        "   2  Windows 10 Pro",
        "Install image: sources/install.wim (",
        "Boots:        BIOS (bootmgr), UEFI x64 (/efi/boot/bootx64.efi)",
        "Filesystem:   FAT32 — every file fits FAT32",
        "Layout:       MBR table, partitions: 1 16.0 GiB at 1 MiB (0x0C); label CCCOMA_X64F",
        "Oddities:     none",
    ] {
        assert!(t.contains(want), "no {want:?} in:\n{t}");
    }
}

#[test]
fn odd_names_are_listed_and_never_reach_the_terminal_raw() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("odd");
    for (p, content) in [
        ("sources/boot.wim", &b"wim"[..]),
        ("bootmgr", b"bootmgr"),
        ("drivers/con.txt", b"x"),
        ("notes ", b"x"),
        ("a|b.txt", b"x"),
        ("evil_[31m.txt", b"x"),
    ] {
        let p = tree.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let iso = work.path().join("odd.iso");
    let out = std::process::Command::new("genisoimage")
        .args(["-quiet", "-J", "-V", "V\x1b[2JX", "-o"])
        .arg(&iso)
        .arg(&tree)
        .output()
        .unwrap();
    assert!(out.status.success(), "genisoimage: {}", text(&out));
    // genisoimage writes '_' for a control character in a Joliet name: put ESC in (ISO 9660 directory records
    // carry no checksum).
    let mut data = std::fs::read(&iso).unwrap();
    let utf16 = |s: &str| s.encode_utf16().flat_map(u16::to_be_bytes).collect::<Vec<u8>>();
    let (from, to) = (utf16("evil_[31m"), utf16("evil\x1b[31m"));
    let at = data.windows(from.len()).position(|w| w == from).expect("the Joliet name");
    data[at..at + to.len()].copy_from_slice(&to);
    std::fs::write(&iso, &data).unwrap();
    let v = inspect_json(&iso);
    let odd = &v["oddities"];
    let fat: Vec<(String, String)> = odd
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "fat_name")
        .map(|o| (o["path"].as_str().unwrap().to_string(), o["what"].as_str().unwrap().to_string()))
        .collect();
    let paths: Vec<&str> = fat.iter().map(|(p, _)| p.as_str()).collect();
    for want in ["drivers/con.txt", "notes ", "a|b.txt", "evil\x1b[31m.txt"] {
        assert!(paths.contains(&want), "{want:?} not listed: {fat:?}");
    }
    assert!(fat.iter().any(|(p, w)| p == "drivers/con.txt" && w.contains("device name")));
    assert!(fat.iter().any(|(p, w)| p == "notes " && w.contains("trailing dot or space")));
    // The names check of the whole tree says what a FAT32 stick cannot hold.
    assert!(strs(odd, "kind").contains(&"names".to_string()), "{odd}");
    let out = inspect(&[iso.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = String::from_utf8(out.stdout).unwrap();
    assert!(!t.contains('\x1b'), "a raw ESC reached the terminal:\n{t}");
    assert!(t.contains("evil\\x1b[31m.txt"), "{t}");
    assert!(t.contains("Volume id:    V\\x1b[2JX"), "{t}");
    assert!(t.contains("drivers/con.txt: a Windows device name"), "{t}");
}

#[test]
fn not_an_iso_a_directory_and_a_missing_file() {
    let work = tempfile::tempdir().unwrap();
    let junk = work.path().join("junk.iso");
    std::fs::write(&junk, vec![0x5Au8; 1 << 20]).unwrap();
    let out = inspect(&["--json", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an ISO image"), "{}", text(&out));
    let out = inspect(&[work.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("directory"), "{}", text(&out));
    let out = inspect(&[work.path().join("missing.iso").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the ISO"), "{}", text(&out));
}

#[test]
fn the_survey_runs_in_process_with_the_same_partitions_as_the_partition_step() {
    use woesafe::job::layout::plan_partitions;
    use woesafe::job::survey::{SurveyOptions, survey};
    use woesafe::media::source::Source;
    use woesafe::protocol::Table;
    let f = fixture_with("win7", &["--win7"]);
    let file = std::fs::File::open(&f.iso).unwrap();
    let id = woesafe::sys::argfile::FileId::of_file(&file, &f.iso).unwrap();
    let source = Source::open_userspace(&f.iso, &id).unwrap();
    for (table, size) in [(Table::Mbr, 8u64 << 30), (Table::Gpt, (4u64 << 30) + 12345)] {
        let mut opts = SurveyOptions::defaults("/dev/null".into(), size);
        opts.table = table;
        opts.label = Some("MYSTICK".into());
        let (s, _notes) = survey(&source, &opts).unwrap();
        let inv = &s.inventory;
        let plan = plan_partitions(table, size, 0, 512).unwrap();
        assert_eq!(s.partitions, plan);
        assert_eq!(inv.layout.partitions.len(), 1);
        assert_eq!(
            (inv.layout.partitions[0].offset, inv.layout.partitions[0].size),
            (plan.main.offset, plan.main.size)
        );
        assert_eq!(inv.layout.label, "MYSTICK");
        assert_eq!(inv.win7_image, Some(2));
        // The planned tree: the ISO's files, grub.cfg and the Windows 7 loader.
        assert_eq!(inv.layout.files, inv.files + 2);
        assert_eq!(inv.layout.added, ["boot/grub/grub.cfg", "efi/boot/bootx64.efi"]);
    }
    // A target with no room for a partition is an error naming it.
    let e = survey(&source, &SurveyOptions::defaults("/dev/tiny".into(), 1 << 20)).err().unwrap();
    assert!(e.to_string().contains("/dev/tiny") && e.to_string().contains("no room"), "{e}");
}
