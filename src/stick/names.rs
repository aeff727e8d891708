//! The names on the stick, checked over the planned tree before the first byte is written: two entries that
//! the target (or Windows reading it) would take for one, an ISO entry in the way of something woesafe adds,
//! names the filesystem cannot hold or Windows cannot open, and 8.3 short names that could clash.
//!
//! The rules hold for every driver of a filesystem unless said otherwise, so the kernel's vfat and woesafe's
//! FAT writer, ntfs3 and ntfs-3g (mounted with `windows_names`) refuse the same trees:
//! - one directory may not hold two names equal once trailing dots and spaces are dropped and letter case is
//!   ignored (FAT's and Windows' rule; `to_uppercase`, which folds at least what Windows' upcase table does);
//! - no name may hold `" * / : < > ? \ |` or a control character, be longer than 255 UTF-16 units, be only
//!   dots and spaces, end in a dot or a space (Windows drops those: the file could not be opened; the kernel's
//!   vfat silently drops them too), or be a Windows device name (`CON`, `PRN`, `AUX`, `NUL`, `COM0`–`COM9`,
//!   `LPT0`–`LPT9`, also with an extension: `con.txt`);
//! - NTFS: no NTFS system file name (`$MFT`, `$Bitmap`, ...) in the root;
//! - FAT, woesafe's writer: no two equal 8.3 names in one directory (an explicit 8.3 name keeps its own;
//!   generated ones skip it);
//! - FAT, the kernel's vfat: no explicit 8.3 name that looks like one the kernel may generate for a long name
//!   in the same directory (`LONGFI~1.TXT` beside `longfilename.txt`): vfat looks names up by their short
//!   names too, and would open the other file instead of creating a new one.

use crate::boot::{bios, uefi};
use crate::media::unattend;
use crate::stick::choose::Fs;
use crate::stick::fatwrite::{self, ShortNames};
use crate::tree::{Origin, StickTree};

/// The filesystem and the driver that writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub fs: Fs,
    /// The kernel's driver (vfat, ntfs3), else woesafe's FAT writer or ntfs-3g.
    pub kernel: bool,
    /// Bytes of the directory the filesystem is mounted on (a kernel driver or ntfs-3g; woesafe's FAT writer
    /// mounts nothing): every path on the stick is opened below it, so it must fit PATH_MAX with it.
    pub mount_point_bytes: usize,
}

/// Longest path the kernel takes (PATH_MAX, the terminating NUL included).
pub const PATH_MAX: usize = 4096;

impl Target {
    /// Whether the stick's filesystem is mounted to be written (only woesafe's FAT writer is not).
    pub fn mounted(self) -> bool {
        self.kernel || self.fs == Fs::Ntfs
    }
}

/// Why the planned tree cannot go onto the stick as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameProblem {
    #[error(
        "{a} and {b} differ only in letter case; {fs} cannot hold both in one directory (Windows takes them for \
         one name): remove or rename one of them in the ISO"
    )]
    CaseClash { a: String, b: String, fs: &'static str },
    #[error(
        "{a} and {b} are one name on {fs}, which drops trailing dots and spaces and ignores letter case: remove or \
         rename one of them in the ISO"
    )]
    SameName { a: String, b: String, fs: &'static str },
    #[error("{iso} is in the way of {ours}: remove or rename it in the ISO{hint}")]
    InTheWay { iso: String, ours: String, hint: String },
    #[error(
        "{path}: {fs} cannot hold the character {ch:?} in a name (Windows forbids \" * / : < > ? \\ | and control \
         characters): remove or rename it in the ISO"
    )]
    BadChar { path: String, ch: char, fs: &'static str },
    #[error("{path}: the name is {units} UTF-16 units long; {fs} names hold at most 255: shorten it in the ISO")]
    TooLong { path: String, units: usize, fs: &'static str },
    #[error(
        "{path}: the path is {bytes} bytes long; below the mount point of the stick's filesystem it would be \
         longer than the {max} bytes Linux opens: shorten it in the ISO{hint}"
    )]
    PathTooLong { path: String, bytes: usize, max: usize, hint: &'static str },
    #[error("{path}: the name is only dots and spaces, which no Windows filesystem can hold")]
    OnlyDots { path: String },
    #[error(
        "{path}: the name ends in a dot or a space, which Windows drops (it could not open the file, and the \
         kernel's vfat would store another name): rename it in the ISO"
    )]
    TrailingDotOrSpace { path: String },
    #[error(
        "{path}: {name} is a Windows device name (CON, PRN, AUX, NUL, COM0-COM9, LPT0-LPT9, also with an \
         extension); Windows cannot open such a file: remove or rename it in the ISO"
    )]
    DeviceName { path: String, name: String },
    #[error(
        "{path}: {name} is the name of an NTFS system file in the root directory ($MFT, $Bitmap, ...): remove or \
         rename it in the ISO, or use --fs fat32"
    )]
    NtfsMetafile { path: String, name: String },
    #[error(
        "{explicit} has an 8.3 name that the kernel's vfat may also generate as the short name of {other} (vfat \
         would then open one file for both): use --target-driver userspace, which keeps {explicit}'s own short \
         name, or rename one of them in the ISO"
    )]
    ShortAlias { explicit: String, other: String },
    #[error("{a} and {b} would get the same 8.3 short name {short} on FAT32: rename one of them in the ISO")]
    ShortClash { a: String, b: String, short: String },
}

/// Characters no Windows filesystem holds in a name (FAT's long names and NTFS's Win32 names alike).
pub fn forbidden_char(c: char) -> bool {
    (c as u32) < 0x20 || "\"*/:<>?\\|".contains(c)
}

/// The name as FAT and Windows compare it: trailing dots and spaces dropped, letter case folded.
pub fn fold(name: &str) -> String {
    name.trim_end_matches(['.', ' ']).chars().flat_map(char::to_uppercase).collect()
}

/// Whether `name` is a Windows device name, alone or with an extension (`CON`, `con.txt`, `LPT1.tar.gz`; also
/// `CON .txt`, `COM¹`, `CONIN$`, which Windows takes for devices too).
pub fn is_device_name(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("").trim_end_matches(' ').to_ascii_uppercase();
    match stem.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" => true,
        // Microsoft's list names COM0 and LPT0 too.
        s if s.starts_with("COM") || s.starts_with("LPT") => {
            let mut digit = s[3..].chars();
            matches!((digit.next(), digit.next()), (Some('0'..='9' | '¹' | '²' | '³'), None))
        }
        _ => false,
    }
}

/// The system files mkntfs puts in the root directory of an NTFS volume.
pub const NTFS_METAFILES: &[&str] = &[
    "$MFT", "$MFTMirr", "$LogFile", "$Volume", "$AttrDef", "$Bitmap", "$Boot", "$BadClus", "$Secure", "$UpCase",
    "$Extend",
];

fn fs_name(t: Target) -> &'static str {
    match (t.fs, t.kernel) {
        (Fs::Fat32, false) => "FAT32",
        (Fs::Fat32, true) => "FAT32 (the kernel's vfat)",
        (Fs::Ntfs, _) => "NTFS",
    }
}

fn leaf(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

/// The added file an entry of the plan is there for: itself, or (a directory woesafe makes) the first added file
/// under it.
fn added_for(plan: &StickTree, i: usize) -> Option<&str> {
    let e = &plan.entries[i];
    if !e.is_dir {
        return Some(&e.path);
    }
    let prefix = format!("{}/", e.path);
    plan.entries
        .iter()
        .zip(&plan.origins)
        .find(|(c, o)| !c.is_dir && !matches!(o, Origin::Iso(_)) && c.path.starts_with(&prefix))
        .map(|(c, _)| c.path.as_str())
}

/// The entry `i` of the plan, for a message: "the ISO's file X", "the directory X that woesafe adds for Y".
fn describe(plan: &StickTree, i: usize) -> String {
    let e = &plan.entries[i];
    let kind = if e.is_dir { "directory" } else { "file" };
    match (&plan.origins[i], added_for(plan, i)) {
        (Origin::Iso(_), _) => format!("the ISO's {kind} {}", e.path),
        (_, Some(file)) if e.is_dir => {
            format!("the directory {} that woesafe adds for {file} ({})", e.path, why_added(file))
        }
        (_, _) if e.is_dir => format!("the directory {} that woesafe adds", e.path),
        _ => format!("the file {} that woesafe adds ({})", e.path, why_added(&e.path)),
    }
}

fn why_added(path: &str) -> &'static str {
    if path.eq_ignore_ascii_case(bios::GRUB_CFG_PATH) {
        "BIOS boot through GRUB"
    } else if path.eq_ignore_ascii_case(unattend::FILE_NAME) {
        "the answer file of --bypass"
    } else if path.eq_ignore_ascii_case(uefi::UEFI_LOADER) {
        "the Windows 7 UEFI loader from install.wim"
    } else {
        "the install image split for FAT32"
    }
}

/// What else the user can do when an ISO entry is in the way of an added one.
fn hint(path: &str) -> String {
    let alt = if path.eq_ignore_ascii_case(bios::GRUB_CFG_PATH) {
        "--boot uefi (no GRUB files)"
    } else if path.eq_ignore_ascii_case(unattend::FILE_NAME) {
        "no --bypass"
    } else if path.eq_ignore_ascii_case(uefi::UEFI_LOADER) {
        "--boot bios"
    } else {
        "--fs ntfs (no split)"
    };
    format!(", or write with {alt}")
}

/// Check every name of the planned tree for `target`; the first problem found, naming the paths.
pub fn check_names(target: Target, plan: &StickTree) -> Result<(), NameProblem> {
    let fs = fs_name(target);
    let entries = &plan.entries;
    // 1. Two entries one directory cannot hold apart (parents come before children, so a clash of
    //    directories is found before any clash inside them).
    let mut seen: std::collections::HashMap<(String, String), usize> = std::collections::HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let key = (fold(parent(&e.path)), fold(leaf(&e.path)));
        let Some(&j) = seen.get(&key) else {
            seen.insert(key, i);
            continue;
        };
        let ours = |k: usize| !matches!(plan.origins[k], Origin::Iso(_));
        let (a, b) = (&entries[j].path, &e.path);
        return Err(match (ours(j), ours(i)) {
            (false, false) if leaf(a).to_uppercase() == leaf(b).to_uppercase() => {
                NameProblem::CaseClash { a: a.clone(), b: b.clone(), fs }
            }
            (false, false) => NameProblem::SameName { a: a.clone(), b: b.clone(), fs },
            (false, true) | (true, false) => {
                let (iso, added) = if ours(i) { (j, i) } else { (i, j) };
                NameProblem::InTheWay {
                    iso: describe(plan, iso),
                    ours: describe(plan, added),
                    hint: added_for(plan, added).map(hint).unwrap_or_default(),
                }
            }
            // Two things woesafe adds: its own bug, but refused all the same.
            (true, true) => NameProblem::SameName { a: a.clone(), b: b.clone(), fs },
        });
    }
    // 2. Each name on its own.
    for e in entries {
        let name = leaf(&e.path);
        let path = e.path.clone();
        if let Some(ch) = name.chars().find(|&c| forbidden_char(c)) {
            return Err(NameProblem::BadChar { path, ch, fs });
        }
        if name.trim_matches(['.', ' ']).is_empty() {
            return Err(NameProblem::OnlyDots { path });
        }
        let units = name.encode_utf16().count();
        if units > 255 {
            return Err(NameProblem::TooLong { path, units, fs });
        }
        // "<mount point>/<path>\0" must fit PATH_MAX.
        let max = PATH_MAX.saturating_sub(target.mount_point_bytes + 2);
        if target.mounted() && e.path.len() > max {
            let hint = if target.fs == Fs::Fat32 { ", or use --target-driver userspace" } else { "" };
            return Err(NameProblem::PathTooLong { path, bytes: e.path.len(), max, hint });
        }
        if name.ends_with(['.', ' ']) {
            return Err(NameProblem::TrailingDotOrSpace { path });
        }
        if is_device_name(name) {
            return Err(NameProblem::DeviceName { path, name: name.to_string() });
        }
        if target.fs == Fs::Ntfs && !e.path.contains('/') && NTFS_METAFILES.iter().any(|m| m.eq_ignore_ascii_case(name))
        {
            return Err(NameProblem::NtfsMetafile { path, name: name.to_string() });
        }
    }
    // 3. FAT's 8.3 names, per directory.
    if target.fs == Fs::Fat32 {
        let mut children: std::collections::HashMap<&str, Vec<&str>> = std::collections::HashMap::new();
        for e in entries {
            children.entry(parent(&e.path)).or_default().push(&e.path);
        }
        let mut dirs: Vec<(&str, Vec<&str>)> = children.into_iter().collect();
        dirs.sort();
        for (_, kids) in dirs {
            if target.kernel {
                check_kernel_aliases(&kids)?;
            } else {
                check_short_names(&kids)?;
            }
        }
    }
    Ok(())
}

/// woesafe's FAT writer: the 8.3 names it gives one directory's entries are all different.
fn check_short_names(paths: &[&str]) -> Result<(), NameProblem> {
    let mut names = ShortNames::default();
    names.reserve(paths.iter().map(|p| leaf(p)));
    let mut given: std::collections::HashMap<[u8; 11], &str> = std::collections::HashMap::new();
    for p in paths {
        let (sfn, _) = names.assign(leaf(p));
        if let Some(prev) = given.insert(sfn, p) {
            return Err(NameProblem::ShortClash {
                a: prev.to_string(),
                b: p.to_string(),
                short: fatwrite::short_name_text(&sfn),
            });
        }
    }
    Ok(())
}

/// The kernel's vfat: an explicit 8.3 name `BASE~N.EXT` (lossless: stored as it is) next to a long name whose
/// generated alias could be it. Linux tries `~1`..`~9` on the first 6 characters of the basis, then a tail of
/// 4 hex digits after its first 2 characters (`LO1A2B~1`); Windows' `~N` shortens the basis as N grows. So it
/// is refused when the other name's basis starts with BASE, or with BASE's first 2 characters when the rest of
/// BASE is hex digits. (Linear: every prefix of every generated basis is indexed once.)
fn check_kernel_aliases(paths: &[&str]) -> Result<(), NameProblem> {
    // (extension, prefix of the basis) → the first name needing a generated alias with it
    let mut prefixes: std::collections::HashMap<([u8; 3], Vec<u8>), &str> = std::collections::HashMap::new();
    for p in paths {
        let (sfn, lossy) = fatwrite::short_basis(leaf(p));
        if lossy {
            let ext: [u8; 3] = [sfn[8], sfn[9], sfn[10]];
            let len = sfn[..8].iter().rposition(|&b| b != b' ').map_or(0, |k| k + 1);
            for k in 1..=len {
                prefixes.entry((ext, sfn[..k].to_vec())).or_insert(p);
            }
        }
    }
    if prefixes.is_empty() {
        return Ok(());
    }
    for p in paths {
        let (sfn, lossy) = fatwrite::short_basis(leaf(p));
        if lossy {
            continue;
        }
        let base = &sfn[..8];
        let Some(tilde) = base.iter().position(|&b| b == b'~') else { continue };
        let digits = &base[tilde + 1..];
        let digits_len = digits.iter().position(|&b| b == b' ').unwrap_or(digits.len());
        if tilde == 0 || digits_len == 0 || !digits[..digits_len].iter().all(u8::is_ascii_digit) {
            continue;
        }
        let ext: [u8; 3] = [sfn[8], sfn[9], sfn[10]];
        let prefix = &base[..tilde];
        let hashed = prefix.len() == 6 && prefix[2..].iter().all(u8::is_ascii_hexdigit);
        let other = prefixes
            .get(&(ext, prefix.to_vec()))
            .or_else(|| if hashed { prefixes.get(&(ext, prefix[..2].to_vec())) } else { None });
        if let Some(other) = other {
            return Err(NameProblem::ShortAlias { explicit: p.to_string(), other: other.to_string() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::SourceEntry;
    use crate::tree::Added;

    fn e(p: &str, d: bool) -> SourceEntry {
        SourceEntry { path: p.into(), is_dir: d, size: if d { 0 } else { 1 }, mtime: 0 }
    }
    fn add(p: &str) -> Added {
        Added { path: p.into(), size: 1, mtime: 0, origin: Origin::Planned }
    }
    const MOUNT: usize = "/run/woesafe.4194304/target".len();
    const FAT: Target = Target { fs: Fs::Fat32, kernel: false, mount_point_bytes: MOUNT };
    const VFAT: Target = Target { fs: Fs::Fat32, kernel: true, mount_point_bytes: MOUNT };
    const NTFS: Target = Target { fs: Fs::Ntfs, kernel: false, mount_point_bytes: MOUNT };
    const NTFS3: Target = Target { fs: Fs::Ntfs, kernel: true, mount_point_bytes: MOUNT };
    const ALL: [Target; 4] = [FAT, VFAT, NTFS, NTFS3];

    fn check(t: Target, iso: &[SourceEntry], added: &[Added]) -> Result<(), NameProblem> {
        check_names(t, &StickTree::build(iso, &[], added))
    }

    #[test]
    fn a_windows_like_tree_passes_everywhere() {
        let iso = [
            e("boot", true),
            e("boot/bcd", false),
            e("efi", true),
            e("efi/boot", true),
            e("efi/boot/bootx64.efi", false),
            e("sources", true),
            e("sources/install.wim", false),
            e("Program Files", true),
            e("Program Files/longfilename.txt", false),
            e("setup.exe", false),
            e("autounattend.xml", false),
            e("console.txt", false),
            e("COM10", false),
            e("$Recycle", false),
        ];
        for t in ALL {
            assert_eq!(check(t, &iso, &[add("boot/grub/grub.cfg"), add("autounattend.xml")]), Ok(()), "{t:?}");
        }
    }

    #[test]
    fn an_iso_file_in_the_way_of_an_added_directory_at_any_depth() {
        for iso in [vec![e("boot", true), e("boot/grub", false)], vec![e("boot", false)], vec![e("BOOT", false)]] {
            for t in ALL {
                let err = check(t, &iso, &[add("boot/grub/grub.cfg")]).unwrap_err();
                let NameProblem::InTheWay { iso: i, ours, hint } = &err else { panic!("{err:?}") };
                assert!(i.starts_with("the ISO's file "), "{err}");
                assert!(ours.contains("woesafe adds for boot/grub/grub.cfg (BIOS boot through GRUB)"), "{err}");
                assert_eq!(hint, ", or write with --boot uefi (no GRUB files)");
            }
        }
    }

    #[test]
    fn an_iso_directory_in_the_way_of_an_added_file() {
        let iso = [e("AutoUnattend.xml", true), e("AutoUnattend.xml/x", false)];
        for t in ALL {
            let err = check(t, &iso, &[add("autounattend.xml")]).unwrap_err();
            assert_eq!(
                err.to_string(),
                "the ISO's directory AutoUnattend.xml is in the way of the file autounattend.xml that woesafe adds \
                 (the answer file of --bypass): remove or rename it in the ISO, or write with no --bypass"
            );
        }
        // deeper: a directory where the Windows 7 loader goes
        let iso = [e("efi", true), e("efi/boot", true), e("efi/boot/bootx64.efi", true)];
        let err = check(FAT, &iso, &[add("efi/boot/bootx64.efi")]).unwrap_err();
        assert!(err.to_string().contains("or write with --boot bios"), "{err}");
        // a directory where a part of the split install image goes
        let iso = [e("sources", true), e("sources/install2.swm", true), e("sources/install.wim", false)];
        let err = check_names(
            FAT,
            &StickTree::build(
                &iso,
                &["sources/install.wim".into()],
                &[add("sources/install.swm"), add("sources/install2.swm")],
            ),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the ISO's directory sources/install2.swm is in the way of the file sources/install2.swm that woesafe \
             adds (the install image split for FAT32): remove or rename it in the ISO, or write with --fs ntfs (no \
             split)"
        );
    }

    #[test]
    fn an_added_file_replaces_an_iso_file_of_the_same_name() {
        let iso = [e("Autounattend.XML", false), e("sources", true), e("sources/install2.swm", false)];
        for t in ALL {
            assert_eq!(check(t, &iso, &[add("autounattend.xml"), add("sources/install2.swm")]), Ok(()));
        }
        // ... but not one FAT and Windows merely take for the same name
        let iso = [e("autounattend.xml.", false)];
        assert!(matches!(check(FAT, &iso, &[add("autounattend.xml")]), Err(NameProblem::InTheWay { .. })));
    }

    #[test]
    fn names_equal_once_folded_are_refused() {
        let err = check(FAT, &[e("readme.txt", false), e("readme.txt.", false)], &[]).unwrap_err();
        assert_eq!(
            err,
            NameProblem::SameName { a: "readme.txt".into(), b: "readme.txt.".into(), fs: "FAT32" },
            "{err}"
        );
        assert!(err.to_string().contains("readme.txt and readme.txt. are one name"));
        for t in ALL {
            assert!(matches!(check(t, &[e("a b ", false), e("A B", false)], &[]), Err(NameProblem::SameName { .. })));
            assert!(matches!(
                check(t, &[e("Notes", false), e("NOTES", true)], &[]),
                Err(NameProblem::CaseClash { .. })
            ));
            // beyond ASCII: Ä/ä, Greek
            let err = check(t, &[e("Ärger", false), e("äRGER", false)], &[]).unwrap_err();
            assert!(err.to_string().contains("differ only in letter case"), "{err}");
            assert!(check(t, &[e("σ", false), e("Σ", false)], &[]).is_err());
            // in a subdirectory, and across directories only as parents
            assert!(check(t, &[e("d", true), e("d/x", false), e("d/X", false)], &[]).is_err());
            assert_eq!(check(t, &[e("d", true), e("d/x", false), e("e", true), e("e/x", false)], &[]), Ok(()));
        }
    }

    #[test]
    fn names_windows_cannot_hold() {
        for t in ALL {
            for (name, want) in [
                ("a:b", "BadChar"),
                ("a\u{1}b", "BadChar"),
                ("a|b", "BadChar"),
                ("a\\b", "BadChar"),
                ("...", "OnlyDots"),
                ("x.", "TrailingDotOrSpace"),
                ("x ", "TrailingDotOrSpace"),
                ("CON", "DeviceName"),
                ("con.txt", "DeviceName"),
                ("Lpt9.tar.gz", "DeviceName"),
                ("nul", "DeviceName"),
                ("COM1", "DeviceName"),
                ("COM0", "DeviceName"),
                ("lpt0.txt", "DeviceName"),
                ("aux .txt", "DeviceName"),
            ] {
                let got = check(t, &[e("d", true), e(&format!("d/{name}"), false)], &[]).unwrap_err();
                assert!(format!("{got:?}").starts_with(want), "{name:?} on {t:?}: {got:?}");
                assert!(got.to_string().contains(&format!("d/{name}")), "{got}");
            }
            let long = "x".repeat(256);
            assert!(matches!(check(t, &[e(&long, false)], &[]), Err(NameProblem::TooLong { units: 256, .. })));
            assert_eq!(check(t, &[e(&"x".repeat(255), false)], &[]), Ok(()));
            // 128 characters outside the BMP are 256 UTF-16 units
            assert!(matches!(check(t, &[e(&"😀".repeat(128), false)], &[]), Err(NameProblem::TooLong { .. })));
            for fine in ["COM10", "CONSOLE", "LPT", "a.con", ".hidden", " leading"] {
                assert_eq!(check(t, &[e(fine, false)], &[]), Ok(()), "{fine}");
            }
        }
    }

    #[test]
    fn paths_must_fit_path_max_below_the_mount_point() {
        // Directories of 253 bytes, 16 deep, and a file: 4,069 bytes, within the reader's 4,096 but not below a
        // mount point.
        let mut entries = Vec::new();
        let mut path = String::new();
        for c in 'a'..='p' {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(&c.to_string().repeat(253));
            entries.push(e(&path, true));
        }
        entries.push(e(&format!("{path}/x.txt"), false));
        let longest = path.len() + "/x.txt".len();
        for t in [VFAT, NTFS, NTFS3] {
            match check(t, &entries, &[]) {
                Err(NameProblem::PathTooLong { bytes, max, .. }) => {
                    assert_eq!((bytes, max), (longest, PATH_MAX - MOUNT - 2), "{t:?}");
                }
                other => panic!("{t:?}: {other:?}"),
            }
        }
        // woesafe's FAT writer opens nothing by path on the stick.
        assert_eq!(check(FAT, &entries, &[]), Ok(()));
        // Exactly at the limit is fine.
        let t = Target { mount_point_bytes: PATH_MAX - 2 - longest, ..NTFS };
        assert_eq!(check(t, &entries, &[]), Ok(()));
        let t = Target { mount_point_bytes: PATH_MAX - 1 - longest, ..NTFS };
        assert!(matches!(check(t, &entries, &[]), Err(NameProblem::PathTooLong { .. })));
    }

    #[test]
    fn ntfs_system_file_names_in_the_root() {
        for t in [NTFS, NTFS3] {
            let err = check(t, &[e("$mft", false)], &[]).unwrap_err();
            assert!(matches!(err, NameProblem::NtfsMetafile { .. }), "{err:?}");
            assert!(check(t, &[e("$Bitmap", true)], &[]).is_err());
            assert!(check(t, &[e("$Extend", true)], &[]).is_err());
            assert_eq!(check(t, &[e("d", true), e("d/$MFT", false)], &[]), Ok(()), "only the root holds them");
        }
        for t in [FAT, VFAT] {
            assert_eq!(check(t, &[e("$MFT", false)], &[]), Ok(()));
        }
    }

    #[test]
    fn explicit_short_names_against_generated_ones() {
        let iso = [e("longfilename.txt", false), e("LONGFI~1.TXT", false)];
        // woesafe's writer keeps the explicit name's own short name, so there is no clash
        assert_eq!(check(FAT, &iso, &[]), Ok(()));
        // the kernel would look LONGFI~1.TXT up as longfilename.txt's alias
        let err = check(VFAT, &iso, &[]).unwrap_err();
        assert_eq!(err, NameProblem::ShortAlias { explicit: "LONGFI~1.TXT".into(), other: "longfilename.txt".into() });
        assert!(err.to_string().contains("--target-driver userspace"), "{err}");
        // whatever the order, the letter case and the tail
        assert!(check(VFAT, &[e("longfi~7.txt", false), e("LongFileName.txt", false)], &[]).is_err());
        // the kernel's hashed tail
        assert!(check(VFAT, &[e("LO1A2B~1.TXT", false), e("longfilename.txt", false)], &[]).is_err());
        // not when the extension or the basis differ, or nothing needs a generated name
        assert_eq!(check(VFAT, &[e("LONGFI~1.TXT", false), e("longfilename.doc", false)], &[]), Ok(()));
        assert_eq!(check(VFAT, &[e("LONGFI~1.TXT", false), e("otherlongname.txt", false)], &[]), Ok(()));
        assert_eq!(check(VFAT, &[e("LONGFI~1.TXT", false), e("README.TXT", false)], &[]), Ok(()));
        assert_eq!(check(VFAT, &[e("d", true), e("d/LONGFI~1.TXT", false), e("longfilename.txt", false)], &[]), Ok(()));
        // NTFS has no 8.3 names here
        assert_eq!(check(NTFS, &iso, &[]), Ok(()));
    }

    #[test]
    fn the_writers_short_names_never_clash() {
        // Many names on one basis, with explicit names taking some of the tails.
        let mut iso: Vec<SourceEntry> = (0..30).map(|i| e(&format!("samebasename{i}.txt"), false)).collect();
        iso.push(e("SAMEBA~3.TXT", false));
        iso.push(e("SAMEB~12.TXT", false));
        assert_eq!(check(FAT, &iso, &[]), Ok(()));
        // Two names with one lossless 8.3 form (refused earlier by the folded-name rule): the second gets a tail.
        assert_eq!(check_short_names(&["abc", "abc."]), Ok(()));
        assert_eq!(check_short_names(&["d/x", "d/X", "d/x "]), Ok(()));
    }
}
