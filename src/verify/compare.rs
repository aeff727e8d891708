//! The pure part of verification: pair what was read from the stick with the ISO's tree and decide, for each
//! path, what it must be — the ISO's file byte for byte, one of woesafe's own additions (grub.cfg, an answer
//! file, a Windows 7 loader, the parts of a split WIM), or a mismatch (missing, unexpected, wrong kind or size).

use std::collections::HashMap;

use super::{Mismatch, Problem};
use crate::media::SourceEntry;
use crate::media::wim;

/// A directory or file found on the stick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickEntry {
    pub path: String,
    pub is_dir: bool,
    pub size: u64,
}

/// What to check of a file on the stick (indices into the stick's and the ISO's entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The same bytes as the ISO's file.
    SameAsIso { stick: usize, iso: usize },
    /// woesafe's boot/grub/grub.cfg (or the ISO's own, when it has one there).
    GrubCfg { stick: usize, iso: Option<usize> },
    /// autounattend.xml: woesafe's answer file for some bypass set, or the ISO's own.
    AnswerFile { stick: usize, iso: Option<usize> },
    /// efi/boot/bootx64.efi where the ISO has none (Windows 7: extracted from install.wim).
    ExtractedLoader { stick: usize },
    /// The ISO's WIM `iso`, split into these stick files (part 1, 2, ... in order).
    SplitWim { iso: usize, parts: Vec<usize> },
    /// A boot manager or boot font that --ca2023 may have replaced (`iso`: the ISO's file at that path) or added:
    /// the ISO's bytes, or one of the files of the ISO's sources/boot.wim.
    Ca2023 { stick: usize, iso: Option<usize> },
}

/// Whether --ca2023 replaces or adds a file at `path` (lower case): the removable-media loaders, /bootmgr.efi,
/// and the boot manager's fonts.
pub fn ca2023_path(path: &str) -> bool {
    use crate::boot::uefi;
    uefi::Arch::of_loader_path(path).is_some()
        || path == uefi::BOOTMGR_EFI
        || path
            .strip_prefix(uefi::FONTS_DIR)
            .and_then(|p| p.strip_prefix('/'))
            .is_some_and(|name| !name.contains('/') && name.ends_with(".ttf"))
}

/// Directories woesafe may add (for grub.cfg, a Windows 7 loader, --ca2023's fonts).
const ADDED_DIRS: &[&str] =
    &["boot", "boot/grub", "efi", "efi/boot", "efi/microsoft", "efi/microsoft/boot", "efi/microsoft/boot/fonts"];

fn key(p: &str) -> String {
    p.to_ascii_lowercase()
}

/// Pair the stick's entries with the ISO's. Paths match in any ASCII letter case (FAT ignores case, and
/// woesafe keeps the ISO's spelling of the directories it adds files to); a different spelling is reported.
pub fn plan(iso: &[SourceEntry], stick: &[StickEntry]) -> (Vec<Check>, Vec<Mismatch>) {
    let mut checks = Vec::new();
    let mut bad = Vec::new();
    let stick_by: HashMap<String, usize> = stick.iter().enumerate().map(|(i, e)| (key(&e.path), i)).collect();
    let mut used = vec![false; stick.len()];

    // WIMs split into parts: the ISO's install image is gone and sources/install.swm stands in its place.
    let mut split: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, e) in iso.iter().enumerate() {
        if e.is_dir || !crate::stick::choose::is_install_image(&e.path) || stick_by.contains_key(&key(&e.path)) {
            continue;
        }
        let mut parts = Vec::new();
        while let Some(&s) = stick_by.get(&key(&wim::part_path(&e.path, parts.len() + 1))) {
            if stick[s].is_dir || parts.len() >= 10_000 {
                break;
            }
            parts.push(s);
        }
        if !parts.is_empty() {
            for &s in &parts {
                used[s] = true;
            }
            split.insert(i, parts);
        }
    }

    for (i, e) in iso.iter().enumerate() {
        if let Some(parts) = split.remove(&i) {
            checks.push(Check::SplitWim { iso: i, parts });
            continue;
        }
        let Some(&s) = stick_by.get(&key(&e.path)) else {
            bad.push(Mismatch { path: e.path.clone(), problem: Problem::Missing });
            continue;
        };
        used[s] = true;
        let found = &stick[s];
        if found.path != e.path {
            bad.push(Mismatch { path: e.path.clone(), problem: Problem::Spelling { found: found.path.clone() } });
        }
        match (e.is_dir, found.is_dir) {
            (true, true) => continue,
            (true, false) => {
                bad.push(Mismatch { path: e.path.clone(), problem: Problem::NotADirectory });
                continue;
            }
            (false, true) => {
                bad.push(Mismatch { path: e.path.clone(), problem: Problem::NotAFile });
                continue;
            }
            (false, false) => {}
        }
        let k = key(&e.path);
        if k == crate::boot::bios::GRUB_CFG_PATH {
            checks.push(Check::GrubCfg { stick: s, iso: Some(i) });
        } else if k == crate::media::unattend::FILE_NAME {
            checks.push(Check::AnswerFile { stick: s, iso: Some(i) });
        } else if ca2023_path(&k) && found.size <= crate::boot::uefi::MAX_LOADER_BYTES {
            checks.push(Check::Ca2023 { stick: s, iso: Some(i) });
        } else if found.size != e.size {
            bad.push(Mismatch { path: e.path.clone(), problem: Problem::Size { expected: e.size, found: found.size } });
        } else {
            checks.push(Check::SameAsIso { stick: s, iso: i });
        }
    }

    // What the stick holds beyond the ISO: woesafe's additions, or unexpected.
    for (s, e) in stick.iter().enumerate() {
        if used[s] {
            continue;
        }
        let k = key(&e.path);
        let added = match (e.is_dir, k.as_str()) {
            (true, d) if ADDED_DIRS.contains(&d) => None,
            (false, crate::boot::bios::GRUB_CFG_PATH) => Some(Check::GrubCfg { stick: s, iso: None }),
            (false, crate::media::unattend::FILE_NAME) => Some(Check::AnswerFile { stick: s, iso: None }),
            (false, crate::boot::uefi::UEFI_LOADER) => Some(Check::ExtractedLoader { stick: s }),
            (false, k) if ca2023_path(k) => Some(Check::Ca2023 { stick: s, iso: None }),
            _ => {
                bad.push(Mismatch { path: e.path.clone(), problem: Problem::Unexpected { is_dir: e.is_dir } });
                None
            }
        };
        checks.extend(added);
    }
    (checks, bad)
}

/// Bytes the checks read from the stick (for progress).
pub fn bytes_to_read(checks: &[Check], stick: &[StickEntry]) -> u64 {
    checks
        .iter()
        .map(|c| match c {
            Check::SameAsIso { stick: s, .. }
            | Check::GrubCfg { stick: s, .. }
            | Check::AnswerFile { stick: s, .. }
            | Check::ExtractedLoader { stick: s }
            | Check::Ca2023 { stick: s, .. } => stick[*s].size,
            Check::SplitWim { parts, .. } => parts.iter().map(|&p| stick[p].size).sum(),
        })
        .sum()
}

/// The first offset where two buffers differ.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None; // memcmp: the common case, fast even in a debug build
    }
    a.iter().zip(b).position(|(x, y)| x != y).or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(p: &str, dir: bool, size: u64) -> SourceEntry {
        SourceEntry { path: p.into(), is_dir: dir, size, mtime: 0 }
    }
    fn st(p: &str, dir: bool, size: u64) -> StickEntry {
        StickEntry { path: p.into(), is_dir: dir, size }
    }

    #[test]
    fn additions_splits_and_mismatches() {
        let isos = vec![
            iso("BOOT", true, 0),
            iso("sources", true, 0),
            iso("sources/install.wim", false, 5 << 30),
            iso("sources/boot.wim", false, 10),
            iso("setup.exe", false, 4),
            iso("gone.txt", false, 1),
            iso("autounattend.xml", false, 9),
        ];
        let sticks = vec![
            st("BOOT", true, 0),
            st("BOOT/grub", true, 0),
            st("BOOT/grub/grub.cfg", false, 50),
            st("sources", true, 0),
            st("sources/install.swm", false, 4000 << 20),
            st("sources/install2.swm", false, 1000 << 20),
            st("sources/boot.wim", false, 10),
            st("SETUP.EXE", false, 5),
            st("efi", true, 0),
            st("efi/boot", true, 0),
            st("efi/boot/bootx64.efi", false, 100),
            st("extra", true, 0),
            st("autounattend.xml", false, 2000),
        ];
        let (checks, bad) = plan(&isos, &sticks);
        assert_eq!(
            checks,
            vec![
                Check::SplitWim { iso: 2, parts: vec![4, 5] },
                Check::SameAsIso { stick: 6, iso: 3 },
                Check::AnswerFile { stick: 12, iso: Some(6) },
                Check::GrubCfg { stick: 2, iso: None },
                Check::ExtractedLoader { stick: 10 },
            ]
        );
        assert_eq!(
            bad,
            vec![
                Mismatch { path: "setup.exe".into(), problem: Problem::Spelling { found: "SETUP.EXE".into() } },
                Mismatch { path: "setup.exe".into(), problem: Problem::Size { expected: 4, found: 5 } },
                Mismatch { path: "gone.txt".into(), problem: Problem::Missing },
                Mismatch { path: "extra".into(), problem: Problem::Unexpected { is_dir: true } },
            ]
        );
        assert_eq!(bytes_to_read(&checks, &sticks), (5000 << 20) + 10 + 2000 + 50 + 100);
    }

    #[test]
    fn kinds_and_an_unsplit_wim() {
        let isos = vec![iso("a", true, 0), iso("b", false, 1), iso("sources/install.wim", false, 7)];
        let sticks = vec![st("a", false, 0), st("b", true, 0)];
        let (checks, bad) = plan(&isos, &sticks);
        assert!(checks.is_empty());
        let problems: Vec<Problem> = bad.into_iter().map(|m| m.problem).collect();
        assert_eq!(problems, vec![Problem::NotADirectory, Problem::NotAFile, Problem::Missing]);
    }

    #[test]
    fn differences() {
        assert_eq!(first_difference(b"abc", b"abc"), None);
        assert_eq!(first_difference(b"abc", b"abd"), Some(2));
        assert_eq!(first_difference(b"ab", b"abc"), Some(2));
    }

    #[test]
    fn ca2023_files_may_differ_in_size_or_be_new() {
        assert!(ca2023_path("efi/boot/bootx64.efi") && ca2023_path("efi/boot/bootaa64.efi"));
        assert!(ca2023_path("bootmgr.efi") && ca2023_path("efi/microsoft/boot/fonts/segoe_slboot.ttf"));
        assert!(!ca2023_path("efi/microsoft/boot/fonts/sub/x.ttf") && !ca2023_path("efi/microsoft/boot/bcd"));
        assert!(!ca2023_path("bootmgr") && !ca2023_path("efi/microsoft/boot/fonts/readme.txt"));
        let isos = [
            iso("EFI", true, 0),
            iso("EFI/BOOT", true, 0),
            iso("EFI/BOOT/BOOTX64.EFI", false, 100),
            iso("bootmgr.efi", false, 50),
            iso("setup.exe", false, 10),
        ];
        let stick = [
            st("EFI", true, 0),
            st("EFI/BOOT", true, 0),
            st("EFI/BOOT/BOOTX64.EFI", false, 120),
            st("bootmgr.efi", false, 50),
            st("setup.exe", false, 10),
            st("efi/microsoft/boot/fonts/new.ttf", false, 7),
        ];
        let (checks, bad) = plan(&isos, &stick);
        assert!(bad.is_empty(), "{bad:?}");
        assert!(checks.contains(&Check::Ca2023 { stick: 2, iso: Some(2) }), "a bigger loader is looked up");
        assert!(checks.contains(&Check::Ca2023 { stick: 3, iso: Some(3) }));
        assert!(checks.contains(&Check::Ca2023 { stick: 5, iso: None }), "a new font is looked up");
        assert!(checks.contains(&Check::SameAsIso { stick: 4, iso: 4 }));
        assert_eq!(bytes_to_read(&checks, &stick), 120 + 50 + 10 + 7);
    }
}
