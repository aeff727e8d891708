//! `woesafe inspect ISO [--json]`: what a Windows ISO is — volume id, Windows version and editions (from the
//! install image's XML), the install image, boot support, the layout `write --fs auto` would choose and why, the
//! space it needs, and anything odd — read with the userspace reader, nothing mounted, nothing written.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::exit;
use super::term::{self, escape};
use super::write::Exit;
use crate::copy::SourceTree;
use crate::job::survey::{self, Note, SurveyOptions};
use crate::media::SourceEntry;
use crate::media::source::Source;
use crate::media::wim::{self, FAT32_MAX_FILE, WimImage};
use crate::stick::choose::{self, Fs};
use crate::stick::names;
use crate::stick::safety::{Inventory, PlannedLayout};
use crate::stick::units::human;
use crate::tree::StickTree;

/// The stick size the planned layout and the space needed are computed for (the FAT32 cluster size depends on
/// it): 16 GiB, a common stick.
pub const NOMINAL_STICK_BYTES: u64 = 16 << 30;
/// At most this many paths are listed for each kind of oddity.
const MAX_LISTED: usize = 20;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The ISO file
    pub iso: PathBuf,
    /// One JSON object on stdout (with "schema": 1) instead of text
    #[arg(long)]
    pub json: bool,
}

/// What `inspect` found, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// The version of this JSON layout.
    pub schema: u32,
    #[serde(serialize_with = "term::serialize_path")]
    pub iso: PathBuf,
    pub volume_id: String,
    /// How the ISO was read ("UDF (userspace reader)").
    pub reader: String,
    pub is_windows: bool,
    pub windows: Option<WindowsVersion>,
    pub editions: Vec<Edition>,
    pub install_image: Option<InstallImage>,
    pub boot: BootSupport,
    pub filesystem: FsChoice,
    pub dirs: u64,
    pub files: u64,
    pub total_bytes: u64,
    /// Bytes the chosen filesystem needs on a stick of `needed_for_stick_bytes`, bridge partition included.
    pub needed_bytes: u64,
    pub needed_for_stick_bytes: u64,
    /// What `woesafe write` would do with default options on a stick of `needed_for_stick_bytes`.
    pub layout: PlannedLayout,
    pub oddities: Vec<Oddity>,
}

/// The Windows version, from the first install image whose XML has one.
#[derive(Debug, Serialize)]
pub struct WindowsVersion {
    /// "10.0", "6.1".
    pub version: String,
    pub build: u32,
    pub sp_build: u32,
    /// A common name for it ("Windows 11", "Windows 7"), when the build says.
    pub name: Option<String>,
}

/// One edition (image) of the install image.
#[derive(Debug, Serialize)]
pub struct Edition {
    pub index: u32,
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub edition_id: Option<String>,
    pub arch: Option<String>,
    pub language: Option<String>,
}

/// sources/install.wim or install.esd.
#[derive(Debug, Serialize)]
pub struct InstallImage {
    pub path: String,
    /// "wim" or "esd".
    pub format: String,
    pub size: u64,
    /// Solid (LZMS) resources, as an install.esd has: wimlib cannot split those.
    pub solid: Option<bool>,
    pub over_fat32_limit: bool,
    /// Whether it can be split into install.swm parts as it is (None when it need not be split).
    pub splittable: Option<bool>,
    /// The parts a split makes (only planned when it is over FAT32's limit).
    pub split_parts: Option<usize>,
    /// It would be re-packed into a plain WIM first.
    pub repack: bool,
    /// Why it cannot be read as a WIM, if it cannot.
    pub problem: Option<String>,
    /// Why its XML data (editions, versions) cannot be read, if it cannot.
    pub xml_problem: Option<String>,
}

/// What the ISO boots with.
#[derive(Debug, Serialize)]
pub struct BootSupport {
    /// bootmgr at the root (BIOS boot through GRUB's ntldr).
    pub bios_bootmgr: bool,
    pub uefi_loaders: Vec<UefiLoader>,
    /// cversion.ini says Windows 7.
    pub windows7: bool,
    /// Windows 7 without a UEFI loader on the ISO: the x64 image of install.wim whose
    /// Windows/Boot/EFI/bootmgfw.efi a write extracts (None: no x64 image, BIOS only).
    pub windows7_loader_image: Option<u32>,
}

/// A UEFI loader in efi/boot.
#[derive(Debug, Serialize)]
pub struct UefiLoader {
    /// "x64", "arm64", "ia32".
    pub arch: String,
    pub path: String,
    pub size: u64,
}

/// The filesystem `--fs auto` chooses.
#[derive(Debug, Serialize)]
pub struct FsChoice {
    /// None when no filesystem can hold the ISO (see `error`).
    pub fs: Option<Fs>,
    pub reason: Option<String>,
    pub error: Option<String>,
    /// WIMs split as they are, and WIMs re-packed first.
    pub split: Vec<String>,
    pub repack: Vec<String>,
}

/// Something a writer (woesafe or another) would trip over.
#[derive(Debug, Serialize)]
pub struct Oddity {
    /// "fat_name" (a name FAT or Windows cannot hold), "over_4gib" (a file over FAT32's limit), "names" (the
    /// tree as FAT32 would hold it), "loader" (a UEFI loader that is none), "skipped" (entries a stick cannot
    /// hold), "scratch" (too little scratch space here for a re-pack), "not_windows", "no_uefi".
    pub kind: String,
    pub path: Option<String>,
    pub what: String,
}

fn fail(code: u8, message: impl std::fmt::Display) -> Exit {
    Exit { code, message: message.to_string() }
}

pub fn run(args: &InspectArgs) -> Result<u8, Exit> {
    let id = crate::supervisor::target::check_iso(&args.iso)?;
    let source = Source::open_userspace(&args.iso, &id).map_err(|e| {
        let code = if e.is_refusal() { exit::REFUSED } else { exit::FAILED };
        // The reader's errors name the ISO already.
        fail(code, e)
    })?;
    let inspection = inspect(&args.iso, &source).map_err(|e| fail(exit::FAILED, e))?;
    if args.json {
        let text = serde_json::to_string(&inspection).map_err(|e| fail(exit::FAILED, e))?;
        print_out(&text);
    } else {
        print_out(&human_text(&inspection));
    }
    Ok(exit::OK)
}

/// Print on stdout, never panicking on a closed pipe.
fn print_out(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Inspect an opened ISO: the survey (as a default `write` would run it on a 16 GiB stick), plus what only
/// `inspect` shows (editions, loaders per architecture, odd names).
pub fn inspect(iso: &Path, source: &Source) -> Result<Inspection, survey::SurveyError> {
    let opts = SurveyOptions::defaults(PathBuf::from("(a 16 GiB stick)"), NOMINAL_STICK_BYTES);
    let (s, notes) = survey::survey(source, &opts)?;
    let inv = &s.inventory;
    let entries = source.entries();
    let install = install_image(source);
    let images: Vec<WimImage> =
        install.as_ref().and_then(|(_, info)| info.as_ref().ok()).map(|i| i.images.clone()).unwrap_or_default();
    let windows = images.iter().find_map(|i| i.version).map(|v| WindowsVersion {
        version: format!("{}.{}", v.major, v.minor),
        build: v.build,
        sp_build: v.sp_build,
        name: windows_name(v.major, v.minor, v.build).map(str::to_string),
    });
    let editions = images
        .iter()
        .map(|i| Edition {
            index: i.index,
            name: i.name.clone(),
            display_name: i.display_name.clone(),
            edition_id: i.edition_id.clone(),
            arch: i.arch(),
            language: i.language.clone(),
        })
        .collect();
    let loaders: Vec<UefiLoader> =
        [("x64", "efi/boot/bootx64.efi"), ("arm64", "efi/boot/bootaa64.efi"), ("ia32", "efi/boot/bootia32.efi")]
            .iter()
            .filter_map(|(arch, path)| {
                let e = entries.iter().find(|e| !e.is_dir && e.size > 0 && e.path.eq_ignore_ascii_case(path))?;
                Some(UefiLoader { arch: (*arch).into(), path: e.path.clone(), size: e.size })
            })
            .collect();
    let windows7 = windows7(source);
    let windows7_loader_image = match (&install, windows7, inv.has_uefi_loader) {
        (Some((_, Ok(info))), true, false) => info.x64_images.first().copied(),
        _ => None,
    };
    let mut oddities = oddities(entries, inv);
    if windows7 && !inv.has_uefi_loader && windows7_loader_image.is_none() {
        oddities.push(Oddity {
            kind: "no_uefi".into(),
            path: None,
            what: "Windows 7 without an x64 image in install.wim: BIOS boot only".into(),
        });
    }
    for n in notes {
        if let Note::Warning(what) = n {
            oddities.push(Oddity { kind: "skipped".into(), path: None, what });
        }
    }
    let (fs, reason, error, split, repack) = match &inv.fs {
        Ok(c) => (Some(c.fs), Some(c.reason.clone()), None, c.split.clone(), c.repack.clone()),
        Err(e) => (None, None, Some(e.clone()), Vec::new(), Vec::new()),
    };
    Ok(Inspection {
        schema: 1,
        iso: iso.to_path_buf(),
        volume_id: inv.volume_id.clone(),
        reader: inv.reader.clone(),
        is_windows: inv.is_windows,
        windows,
        editions,
        install_image: install.map(|(entry, info)| {
            let over = entry.size > FAT32_MAX_FILE;
            let is_split = split.iter().any(|p| p.eq_ignore_ascii_case(&entry.path));
            let is_repack = repack.iter().any(|p| p.eq_ignore_ascii_case(&entry.path));
            InstallImage {
                format: if entry.path.to_ascii_lowercase().ends_with(".esd") { "esd" } else { "wim" }.into(),
                size: entry.size,
                solid: info.as_ref().ok().map(|i| i.solid),
                over_fat32_limit: over,
                splittable: over.then_some(is_split),
                split_parts: inv.layout.split.as_ref().filter(|p| !p.repack).map(|p| p.parts),
                repack: is_repack,
                xml_problem: info.as_ref().ok().and_then(|i| i.xml_problem.as_ref()).map(ToString::to_string),
                problem: info.err(),
                path: entry.path,
            }
        }),
        boot: BootSupport { bios_bootmgr: inv.has_bootmgr, uefi_loaders: loaders, windows7, windows7_loader_image },
        filesystem: FsChoice { fs, reason, error, split, repack },
        dirs: inv.dirs,
        files: inv.files,
        total_bytes: inv.total_bytes,
        needed_bytes: inv.needed_bytes,
        needed_for_stick_bytes: NOMINAL_STICK_BYTES,
        layout: inv.layout.clone(),
        oddities,
    })
}

/// The install image entry and its inspection (header, tables, XML).
fn install_image(source: &Source) -> Option<(SourceEntry, Result<wim::WimInfo, String>)> {
    let entries = source.entries();
    let i = entries.iter().position(|e| !e.is_dir && choose::is_install_image(&e.path))?;
    Some((entries[i].clone(), survey::inspect_wim(source, i)))
}

fn windows7(source: &Source) -> bool {
    survey::is_windows7(source)
}

/// The usual name of a Windows client version.
fn windows_name(major: u32, minor: u32, build: u32) -> Option<&'static str> {
    Some(match (major, minor) {
        (10, 0) if build >= 22000 => "Windows 11",
        (10, 0) => "Windows 10",
        (6, 3) => "Windows 8.1",
        (6, 2) => "Windows 8",
        (6, 1) => "Windows 7",
        (6, 0) => "Windows Vista",
        _ => return None,
    })
}

/// Names FAT32 or Windows cannot hold, files over FAT32's limit, and the survey's own problems.
fn oddities(entries: &[SourceEntry], inv: &Inventory) -> Vec<Oddity> {
    let mut out = Vec::new();
    let mut listed = 0;
    for e in entries {
        let name = e.path.rsplit('/').next().unwrap_or(&e.path);
        let what = if name.chars().any(names::forbidden_char) {
            Some("a character FAT32 and Windows cannot hold (\" * : < > ? \\ | or a control character)")
        } else if name.ends_with(['.', ' ']) {
            Some("a trailing dot or space, which Windows drops")
        } else if names::is_device_name(name) {
            Some("a Windows device name")
        } else if name.encode_utf16().count() > 255 {
            Some("over 255 UTF-16 units")
        } else {
            None
        };
        if let Some(what) = what
            && listed < MAX_LISTED
        {
            listed += 1;
            out.push(Oddity { kind: "fat_name".into(), path: Some(e.path.clone()), what: what.into() });
        }
    }
    for e in entries.iter().filter(|e| !e.is_dir && e.size > FAT32_MAX_FILE).take(MAX_LISTED) {
        let what = if choose::is_install_image(&e.path) {
            format!(
                "{} is over FAT32's file-size limit (4 GiB - 1 byte): split into install.swm parts on FAT32",
                human(e.size)
            )
        } else {
            format!(
                "{} is over FAT32's file-size limit (4 GiB - 1 byte) and cannot be split: the stick gets NTFS",
                human(e.size)
            )
        };
        out.push(Oddity { kind: "over_4gib".into(), path: Some(e.path.clone()), what });
    }
    // The whole tree as a FAT32 stick would hold it (names that collide, 8.3 aliases), whatever the choice.
    let fat = names::Target { fs: Fs::Fat32, kernel: false, mount_point_bytes: 0 };
    if let Err(e) = names::check_names(fat, &StickTree::build(entries, &[], &[])) {
        out.push(Oddity { kind: "names".into(), path: None, what: e.to_string() });
    } else if let Some(p) = &inv.name_problem {
        out.push(Oddity { kind: "names".into(), path: None, what: p.clone() });
    }
    if let Some(p) = &inv.scratch_problem {
        out.push(Oddity { kind: "scratch".into(), path: None, what: p.clone() });
    }
    if let Some(p) = &inv.loader_problem {
        out.push(Oddity { kind: "loader".into(), path: Some(p.path.clone()), what: p.what.clone() });
    }
    if !inv.is_windows {
        out.push(Oddity {
            kind: "not_windows".into(),
            path: None,
            what: "no sources/install.wim, install.esd or boot.wim: not a Windows installation ISO".into(),
        });
    }
    out
}

/// The text `inspect` prints without --json; every string from the ISO escaped.
pub fn human_text(i: &Inspection) -> String {
    let mut t = String::new();
    let mut line = |s: String| {
        t.push_str(&s);
        t.push('\n');
    };
    line(format!("ISO:          {}", term::path(&i.iso)));
    line(format!("Volume id:    {}", escape(&i.volume_id)));
    line(format!("Read with:    {}", i.reader));
    line(format!(
        "Windows:      {}",
        match (&i.windows, i.is_windows) {
            (Some(w), _) => format!(
                "{}{} (build {}.{})",
                w.name.as_deref().map(|n| format!("{n}, ")).unwrap_or_default(),
                w.version,
                w.build,
                w.sp_build
            ),
            (None, true) => "yes (its version is not in the install image's XML)".into(),
            (None, false) => "no: not a Windows installation ISO".into(),
        }
    ));
    if !i.editions.is_empty() {
        line("Editions:".into());
        for e in &i.editions {
            line(format!(
                "  {:>2}  {}{}{}{}",
                e.index,
                escape(e.display_name.as_deref().or(e.name.as_deref()).unwrap_or("(no name)")),
                e.edition_id.as_deref().map(|x| format!(", EDITIONID {}", escape(x))).unwrap_or_default(),
                e.arch.as_deref().map(|x| format!(", {x}")).unwrap_or_default(),
                e.language.as_deref().map(|x| format!(", {}", escape(x))).unwrap_or_default(),
            ));
        }
    }
    if let Some(w) = &i.install_image {
        let solid = match w.solid {
            Some(true) => ", solid (LZMS)",
            Some(false) => ", not solid",
            None => "",
        };
        let split = match (w.splittable, w.repack, w.split_parts) {
            (Some(true), _, Some(n)) => format!(", over 4 GiB: split into {n} parts"),
            (_, true, _) => ", over 4 GiB: re-packed, then split".into(),
            (Some(false), _, _) => ", over 4 GiB and cannot be split".into(),
            _ => String::new(),
        };
        line(format!("Install image: {} ({}){solid}{split}", escape(&w.path), human(w.size)));
        if let Some(p) = &w.problem {
            line(format!("  cannot be read as a WIM: {}", escape(p)));
        }
        if let Some(p) = &w.xml_problem {
            line(format!("  its XML data cannot be read: {}", escape(p)));
        }
    }
    let mut boot = Vec::new();
    if i.boot.bios_bootmgr {
        boot.push("BIOS (bootmgr)".to_string());
    }
    for l in &i.boot.uefi_loaders {
        boot.push(format!("UEFI {} (/{})", l.arch, escape(&l.path)));
    }
    if let Some(image) = i.boot.windows7_loader_image {
        boot.push(format!("UEFI x64 (Windows 7: bootmgfw.efi from install.wim image {image})"));
    }
    line(format!("Boots:        {}", if boot.is_empty() { "nothing found".into() } else { boot.join(", ") }));
    match (&i.filesystem.fs, &i.filesystem.error) {
        (Some(fs), _) => {
            line(format!("Filesystem:   {} — {}", fs.name(), escape(i.filesystem.reason.as_deref().unwrap_or(""))))
        }
        (None, Some(e)) => line(format!("Filesystem:   none fits: {}", escape(e))),
        (None, None) => {}
    }
    line(format!(
        "Content:      {} files in {} directories, {}; needs {} on a {} stick",
        i.files,
        i.dirs,
        human(i.total_bytes),
        human(i.needed_bytes),
        human(i.needed_for_stick_bytes)
    ));
    let parts: Vec<String> = i
        .layout
        .partitions
        .iter()
        .map(|p| format!("{} {} at {} MiB ({})", p.number, human(p.size), p.offset >> 20, p.type_name))
        .collect();
    line(format!(
        "Layout:       {} table, partitions: {}; label {}",
        match i.layout.table {
            crate::stick::safety::PlannedTable::Mbr => "MBR",
            crate::stick::safety::PlannedTable::Gpt => "GPT",
        },
        parts.join(", "),
        escape(&i.layout.label)
    ));
    if i.oddities.is_empty() {
        line("Oddities:     none".into());
    } else {
        line("Oddities:".into());
        for o in &i.oddities {
            match &o.path {
                Some(p) => line(format!("  {}: {}", escape(p), escape(&o.what))),
                None => line(format!("  {}", escape(&o.what))),
            }
        }
    }
    t.truncate(t.trim_end().len());
    t
}
