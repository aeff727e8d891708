//! The survey (the ReadIso step's computation): what a write of this ISO with these options will do — the files,
//! the filesystem choice, the split plans, the Windows 7 loader, the scratch space, the partitions, the bytes
//! needed, the planned layout — computed from an opened `Source` with nothing mounted and nothing written, so the
//! worker and `woesafe inspect` (in-process, userspace reader) share it.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::boot::revocation::{self, Firmware};
use crate::boot::{BootMode, bios, uefi};
use crate::copy::SourceTree;
use crate::media::SourceEntry;
use crate::media::source::{self, Source};
use crate::media::unattend::{self, SetupOptions};
use crate::media::wim::{self, FAT32_MAX_FILE, PART_MIB};
use crate::media::wimsplit;
use crate::protocol::{Driver, Table};
use crate::stick::choose::{self, BigFile, Choice, Fs, FsRequest, WimVerdict};
use crate::stick::names;
use crate::stick::safety::{
    Inventory, LoaderProblem, PlannedBios, PlannedLayout, PlannedSplit, PlannedTable, PlannedUefi,
};
use crate::stick::units::human;
use crate::stick::{fat, label, ntfs};
use crate::sys::loopdev::LoopWindow;
use crate::sys::staging;
use crate::tree::{Added, Origin, StickTree, WimFrom};

use super::layout::{Partitions, plan_partitions};

/// What the survey needs to know of the request (the worker takes it from its WriteRequest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurveyOptions {
    /// The target, for messages only (nothing is opened).
    pub target: PathBuf,
    /// The target's size in bytes (the partitions and FAT32's cluster size depend on it).
    pub target_size: u64,
    /// The target's logical sector size (512 or 4096): what the tables and filesystems count in.
    pub sector_size: u64,
    pub fs: FsRequest,
    /// The boot mode asked for, or its default (see `boot_asked`).
    pub boot: BootMode,
    /// Whether --boot was given: a default drops BIOS boot for an ISO without /bootmgr (Windows on ARM, UEFI-only
    /// media); a request for it is refused.
    pub boot_asked: bool,
    /// --ca2023: the boot managers signed by the Windows UEFI CA 2023, from boot.wim, replace the ISO's.
    pub ca2023: bool,
    pub table: Table,
    /// --label, already validated; None: derived from the volume id.
    pub label: Option<String>,
    /// The answer file's options (--bypass, --local-account, ...).
    pub setup: SetupOptions,
    pub source_driver: Driver,
    pub target_driver: Driver,
    /// Where the scratch space would go ($TMPDIR, else /var/tmp): its free room is checked.
    pub scratch_dir: PathBuf,
    pub uefi_ntfs_image: Option<PathBuf>,
    /// Bytes of the directory the stick's filesystem is mounted on in the worker (PATH_MAX check).
    pub mount_point_bytes: usize,
}

impl SurveyOptions {
    /// The options of a plain `woesafe write ISO TARGET` (every option at its default) for a target of
    /// `target_size` bytes.
    pub fn defaults(target: PathBuf, target_size: u64) -> SurveyOptions {
        SurveyOptions {
            target,
            target_size,
            sector_size: 512,
            fs: FsRequest::Auto,
            boot: BootMode::Both,
            boot_asked: false,
            ca2023: false,
            table: Table::Mbr,
            label: None,
            setup: SetupOptions::default(),
            source_driver: Driver::Auto,
            target_driver: Driver::Auto,
            scratch_dir: std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from),
            uefi_ntfs_image: None,
            // /run/woesafe.<pid>/target, a typical worker's.
            mount_point_bytes: "/run/woesafe.4194304/target".len(),
        }
    }
}

/// A message for the user that the survey produces on the way (the worker sends them as frames, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Info(String),
    /// Only for `-v`.
    Detail(String),
    Warning(String),
}

impl From<Note> for crate::protocol::Up {
    /// A note as the worker sends it on.
    fn from(note: Note) -> crate::protocol::Up {
        match note {
            Note::Info(m) => crate::protocol::Up::Info(m),
            Note::Detail(m) => crate::protocol::Up::Detail(m),
            Note::Warning(m) => crate::protocol::Up::Warning(m),
        }
    }
}

/// Why the survey cannot finish.
#[derive(Debug, thiserror::Error)]
pub enum SurveyError {
    #[error("the target {path} ({size} bytes) has no room for a partition")]
    NoRoom { path: PathBuf, size: u64 },
    #[error("internal error: {path} was taken out of the tree but neither split nor re-packed (nothing was written)")]
    Unplanned { path: String },
    #[error("cannot read {path} on the ISO: {source}")]
    ReadIsoFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Uefi(#[from] uefi::UefiError),
}

/// The survey's result: the Inventory the supervisor sees, and what the later steps of a write need.
pub struct Survey {
    pub inventory: Inventory,
    /// The firmware the stick boots on (see `Inventory::boot`).
    pub boot: BootMode,
    /// The processor of the UEFI loader (x64 for Windows 7's extracted one).
    pub uefi_arch: Option<uefi::Arch>,
    /// --ca2023: boot.wim's index and the image that holds the CA 2023 boot managers.
    pub ca2023: Option<(usize, u32)>,
    /// This PC's Secure Boot databases (the revocation check), where it has them.
    pub firmware: Option<Firmware>,
    pub fs: Fs,
    pub use_kernel_target: bool,
    pub source_desc: String,
    pub target_desc: String,
    pub volume_id: String,
    pub layout: source::Layout,
    pub mtime_now: i64,
    /// The split set's GUID.
    pub guid: [u8; 16],
    /// Install images split as they are copied (entry index, plan).
    pub plans: Vec<(usize, wimsplit::SplitPlan)>,
    /// Install images re-packed first (entry index, scratch bytes set aside).
    pub repack_info: Vec<(usize, u64)>,
    /// Entries split or re-packed.
    pub split: Vec<usize>,
    pub repack: Vec<usize>,
    /// Windows 7: install.wim's index and its x64 image.
    pub win7: Option<(usize, u32)>,
    /// WIMs wimlib reads (re-pack, Windows 7 loader).
    pub staged_wims: Vec<usize>,
    /// Those read through a read-only loop window over their bytes in the ISO.
    pub windows: Vec<(usize, LoopWindow)>,
    /// Those copied into scratch space first.
    pub copied: Vec<usize>,
    pub scratch_bytes: u64,
    pub partitions: Partitions,
    pub bridge_bytes: u64,
    /// woesafe's own small files (grub.cfg, autounattend.xml).
    pub ours: Vec<Added>,
    /// The parts of the WIMs split as they are copied.
    pub streamed: Vec<Added>,
    /// The ISO's paths taken out of the tree (split or re-packed).
    pub removed: Vec<String>,
    pub names_target: names::Target,
}

/// Survey without a channel: the notes are returned with the result.
pub fn survey(source: &Source, opts: &SurveyOptions) -> Result<(Survey, Vec<Note>), SurveyError> {
    let mut notes = Vec::new();
    let s = survey_with(source, opts, &mut |n| {
        notes.push(n);
        Ok::<(), SurveyError>(())
    })?;
    Ok((s, notes))
}

/// The survey, handing each note to `note` as soon as it is known (the worker sends it on at once).
pub fn survey_with<E: From<SurveyError>>(
    source: &Source,
    opts: &SurveyOptions,
    note: &mut dyn FnMut(Note) -> Result<(), E>,
) -> Result<Survey, E> {
    let source_desc = source.describe();
    // What the reader left out (links, devices): said, not silently dropped.
    for s in source.skipped() {
        note(Note::Warning(format!(
            "the ISO holds {} entr{} of a kind a Windows stick cannot hold ({}, e.g. /{}): not copied",
            s.count,
            if s.count == 1 { "y" } else { "ies" },
            s.kind,
            s.example
        )))?;
    }
    let entries = source.entries();
    let layout = source::layout(entries);
    let iso_loader = uefi::find_loader(entries);
    let boot = settle_boot(opts.boot, opts.boot_asked, layout.has_bootmgr, iso_loader.is_some());
    if boot != opts.boot {
        let arch = iso_loader.map_or("", |(a, _)| if a == uefi::Arch::Arm64 { " (Windows on ARM)" } else { "" });
        note(Note::Info(format!(
            "Boot: the ISO has no /bootmgr, so no BIOS boot code is installed: the stick boots under UEFI only{arch}"
        )))?;
    }
    let mtime_now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;

    // The filesystem: FAT32 unless a file other than the install image is over its limit. A big install
    // image is planned into parts here (its blob table and XML are read), so the checks before writing see
    // the parts' exact sizes.
    let guid = random_guid();
    let mut plans: Vec<(usize, wimsplit::SplitPlan)> = Vec::new();
    let mut to_repack: Vec<(usize, wim::WimInfo)> = Vec::new();
    let big: Vec<BigFile> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.is_dir && e.size > FAT32_MAX_FILE)
        .map(|(i, e)| BigFile {
            path: e.path.clone(),
            size: e.size,
            wim: choose::is_install_image(&e.path).then(|| {
                // wimlib reads what it re-packs with fewer checks than usual (see wim::inspect): it gets
                // only a WIM whose header and tables passed ours.
                let mut repack = |why: String| match inspect_wim(source, i) {
                    Ok(info) => {
                        to_repack.push((i, info));
                        WimVerdict::Repack { why }
                    }
                    Err(e) => WimVerdict::Unusable(e),
                };
                match plan_split(source, i, guid) {
                    Ok(plan) => match verdict_of(&plan) {
                        verdict @ WimVerdict::Split { .. } => {
                            plans.push((i, plan));
                            verdict
                        }
                        // Splittable, but one resource makes a part too big for FAT32.
                        WimVerdict::Repack { why } => repack(why),
                        verdict @ WimVerdict::Unusable(_) => verdict,
                    },
                    Err(wimsplit::SplitError::NeedsRepack(why)) => repack(why),
                    Err(e) => WimVerdict::Unusable(e.to_string()),
                }
            }),
        })
        .collect();
    let choice = choose::choose(opts.fs, &big);
    let fs = choice.as_ref().map_or(Fs::Fat32, |c| c.fs);
    let use_kernel_target = match (opts.target_driver, fs) {
        (Driver::Kernel, _) => true,
        (Driver::Userspace, _) => false,
        (Driver::Auto, Fs::Fat32) => source::kernel_has("vfat"),
        (Driver::Auto, Fs::Ntfs) => source::kernel_has("ntfs3"),
    };
    let target_desc = match (fs, use_kernel_target) {
        (Fs::Fat32, true) => "vfat (kernel mount)",
        (Fs::Fat32, false) => "FAT32 (userspace writer)",
        (Fs::Ntfs, true) => "ntfs3 (kernel mount)",
        (Fs::Ntfs, false) => "NTFS (ntfs-3g, FUSE)",
    }
    .to_string();
    if opts.source_driver == Driver::Auto || opts.target_driver == Driver::Auto {
        let why = match (opts.source_driver, opts.target_driver) {
            (Driver::Auto, Driver::Auto) => "auto: the ISO in userspace, the target from /proc/filesystems",
            (Driver::Auto, _) => "auto: the ISO in userspace",
            _ => "auto: from /proc/filesystems",
        };
        note(Note::Info(format!("Drivers: source {source_desc}, target {target_desc} ({why})")))?;
    }

    // Windows 7: no UEFI loader on the ISO; its install.wim carries one.
    let win7 = if boot.uefi() && !layout.has_uefi_loader && is_windows7(source) {
        // Only an x64 image carries an x86_64 loader (32-bit Windows 7 boots BIOS only).
        find_file(entries, "sources/install.wim")
            .and_then(|i| Some((i, inspect_wim(source, i).ok()?.x64_images.first().copied()?)))
    } else {
        None
    };

    // Which WIMs are split as they are copied, and which are re-packed first in scratch space.
    let paths_of = |pick: fn(&Choice) -> &Vec<String>| -> Vec<usize> {
        match &choice {
            Ok(c) => pick(c).iter().filter_map(|p| find_file(entries, p)).collect(),
            Err(_) => Vec::new(),
        }
    };
    let split = paths_of(|c| &c.split);
    let repack = paths_of(|c| &c.repack);
    plans.retain(|(i, _)| split.contains(i));
    for (i, plan) in &plans {
        note(Note::Info(format!("{} {}", entries[*i].path, split_summary(plan))))?;
    }

    // --ca2023: boot.wim's setup image carries the CA 2023 boot managers.
    let (ca2023, ca2023_problem) = match opts.ca2023 {
        false => (None, None),
        true => match ca2023_source(source, boot, iso_loader.map(|(a, _)| a), win7.is_some()) {
            Ok(found) => (Some(found), None),
            Err(why) => (None, Some(why)),
        },
    };
    if let Some((_, image)) = ca2023 {
        note(Note::Info(format!(
            "--ca2023: the boot managers signed by the Windows UEFI CA 2023 come from sources/boot.wim image {image}"
        )))?;
    }
    // Scratch space, only for what needs a file of its own: a re-pack (wimlib reads the WIM from a file, and
    // writes the re-packed one), the Windows 7 loader extraction (from a copy of install.wim when the ISO is
    // read in userspace), the CA 2023 extraction (from boot.wim).
    let mut staged_wims: Vec<usize> = repack.clone();
    for (i, _) in win7.iter().chain(&ca2023) {
        if !staged_wims.contains(i) {
            staged_wims.push(*i);
        }
    }
    let repack_info: Vec<(usize, u64)> = to_repack
        .iter()
        .filter(|(i, _)| repack.contains(i))
        .map(|(i, info)| (*i, wim::repack_bytes(info, entries[*i].size)))
        .collect();
    // Every install image taken out of the tree goes back in, split or re-packed: never a stick without it.
    for &i in split.iter().chain(&repack) {
        let planned = plans.iter().any(|(p, _)| *p == i) || repack_info.iter().any(|(p, _)| *p == i);
        if !planned {
            return Err(SurveyError::Unplanned { path: entries[i].path.clone() }.into());
        }
    }
    let mut scratch_bytes: u64 = repack_info.iter().map(|(_, n)| n).sum();
    // wimlib reads the WIM through a read-only loop device over its bytes in the ISO when they are one run
    // (as in Windows ISOs), else from a copy in scratch space.
    let windows: Vec<(usize, LoopWindow)> =
        staged_wims.iter().filter_map(|&i| Some((i, iso_window(source, i)?))).collect();
    let copied: Vec<usize> = staged_wims
        .iter()
        .copied()
        .filter(|&i| source.local_path(i).is_none() && !windows.iter().any(|(j, _)| *j == i))
        .collect();
    scratch_bytes += copied.iter().map(|&i| entries[i].size).sum::<u64>();
    if win7.is_some() {
        scratch_bytes += 16 << 20;
    }
    if ca2023.is_some() {
        scratch_bytes += CA2023_SCRATCH;
    }
    let scratch_problem = (scratch_bytes > 0)
        .then(|| {
            let need = staging::image_size(scratch_bytes);
            let what = match (repack.is_empty(), win7.is_some()) {
                (false, _) => "re-packing the WIM",
                (true, true) => "extracting the Windows 7 UEFI loader",
                (true, false) => "extracting the CA 2023 boot managers",
            };
            match staging::free_bytes(&opts.scratch_dir) {
                Ok(free) if free >= need => None,
                Ok(free) => Some(format!(
                    "{what} needs {} of scratch space in {} and it has {} free: set TMPDIR to a directory on a disk \
                     with more room{}",
                    human(need),
                    opts.scratch_dir.display(),
                    human(free),
                    if repack.is_empty() { "" } else { ", or use --fs ntfs (no re-pack)" }
                )),
                Err(e) => Some(format!("cannot check the scratch space in {}: {e}", opts.scratch_dir.display())),
            }
        })
        .flatten();

    // A bridge only when there is a loader on the stick to hand over to.
    let bridge_wanted = fs == Fs::Ntfs && boot.uefi() && (layout.has_uefi_loader || win7.is_some());
    let no_room = || SurveyError::NoRoom { path: opts.target.clone(), size: opts.target_size };
    // Without room even for the main partition, the write cannot start (checked before the bridge image).
    if plan_partitions(opts.table, opts.target_size, 0, opts.sector_size).is_none() {
        return Err(no_room().into());
    }
    let bridge_bytes = match (&opts.uefi_ntfs_image, bridge_wanted) {
        (_, false) => 0,
        (Some(img), true) => uefi::check_uefi_ntfs_image(img).map_err(SurveyError::from)?,
        (None, true) => uefi::BRIDGE_BYTES,
    };
    let partitions =
        plan_partitions(opts.table, opts.target_size, bridge_bytes, opts.sector_size).ok_or_else(no_room)?;

    let answer_file = unattend::answer_file(&opts.setup, unattend::architecture(entries));
    if answer_file.is_some() {
        note(Note::Info(format!("Windows 11 setup options: autounattend.xml {}", opts.setup.summary())))?;
    }
    let mut ours = Vec::new();
    if boot.bios() {
        ours.push(bytes_file(bios::GRUB_CFG_PATH, bios::GRUB_CFG.as_bytes(), mtime_now));
    }
    if let Some(xml) = &answer_file {
        ours.push(bytes_file(unattend::FILE_NAME, xml.as_bytes(), mtime_now));
    }
    // The tree as planned for the checks (re-packed parts estimated from the WIM's data size); rebuilt with
    // the re-packed parts later.
    let removed: Vec<String> = split.iter().chain(&repack).map(|&i| entries[i].path.clone()).collect();
    let mut streamed = Vec::new();
    for (i, plan) in &plans {
        streamed.extend(plan_parts(&entries[*i], WimFrom::Iso(*i), plan));
    }
    let mut planned_added = [ours.clone(), streamed.clone()].concat();
    // The re-packed WIM's size is known only after the re-pack: planned here at the original's size (an LZX
    // re-pack of an LZMS ESD comes out about that big; see README's Re-packing), and checked again against
    // the stick once known, before the target is touched.
    for (i, _) in &repack_info {
        planned_added.extend(estimated_parts(&entries[*i], entries[*i].size));
    }
    if win7.is_some() {
        planned_added.push(Added {
            path: uefi::UEFI_LOADER.into(),
            size: 2 << 20,
            mtime: mtime_now,
            origin: Origin::Planned,
        });
    }
    if ca2023.is_some() {
        // Sized as the files they replace (about as big); checked again once extracted.
        let arch = iso_loader.map_or(uefi::Arch::X64, |(a, _)| a);
        for path in [arch.loader_path(), uefi::BOOTMGR_EFI] {
            if let Some(i) = find_file(entries, path) {
                planned_added.push(Added {
                    path: entries[i].path.clone(),
                    size: entries[i].size,
                    mtime: mtime_now,
                    origin: Origin::Planned,
                });
            }
        }
    }
    let planned = StickTree::build(entries, &removed, &planned_added);
    let names_target = names::Target { fs, kernel: use_kernel_target, mount_point_bytes: opts.mount_point_bytes };
    // The ISO's own UEFI loader must be one (the Windows 7 one is checked once extracted).
    let checked = match iso_loader {
        Some((arch, e)) if boot.uefi() => match entries.iter().position(|x| !x.is_dir && x.path == e.path) {
            Some(i) => Some(check_iso_loader(source, i, arch)?),
            None => None,
        },
        _ => None,
    };
    // The revocation check: of the ISO's loader here (unless --ca2023 replaces it), of what Prepare extracts
    // and of the bridge when they are made.
    let firmware = if boot.uefi() && (checked.is_some() || win7.is_some()) { firmware_databases(note)? } else { None };
    if let (Some(fw), Some(Ok(data)), Some((_, e)), None) = (&firmware, &checked, iso_loader, ca2023) {
        for n in revocation_notes(fw, &format!("the ISO's /{}", e.path), data, "; try --ca2023") {
            note(n)?;
        }
    }
    let uefi_arch = iso_loader.map(|(a, _)| a).or(win7.map(|_| uefi::Arch::X64));
    // A user's UEFI:NTFS image must hold the loader for the ISO's processor (the firmware starts only that one),
    // and it is checked against this PC's dbx like the others.
    let mut bridge_problem = None;
    if let (Some(img), true) = (&opts.uefi_ntfs_image, bridge_wanted) {
        let arch = uefi_arch.unwrap_or(uefi::Arch::X64);
        match image_loader(img, arch) {
            Ok(Some(data)) => {
                if let Some(fw) = &firmware {
                    let name = format!("--uefi-ntfs-image's EFI/BOOT/{}", arch.bridge_file());
                    for n in revocation_notes(fw, &name, &data, "; give another UEFI:NTFS image, or use --fs fat32") {
                        note(n)?;
                    }
                }
            }
            Ok(None) => {
                bridge_problem = Some(format!(
                    "--uefi-ntfs-image {}: it has no EFI/BOOT/{}, the loader {arch} UEFI firmware starts from the \
                     bridge: give a UEFI:NTFS image for {arch}, or use --fs fat32",
                    img.display(),
                    arch.bridge_file()
                ))
            }
            Err(what) if firmware.is_some() => note(Note::Detail(format!(
                "Secure Boot revocation check of --uefi-ntfs-image {}: {what}",
                img.display()
            )))?,
            Err(_) => {}
        }
    }
    let loader_problem = checked.and_then(Result::err);
    let volume_id = source.volume_id();
    let main = partitions.main;
    let planned_layout = planned_layout(PlanFacts {
        opts,
        boot,
        uefi_arch,
        ca2023_image: ca2023.map(|(_, image)| image),
        partitions: &partitions,
        fs: choice.as_ref().ok().map(|c| c.fs),
        label: opts.label.clone().unwrap_or_else(|| label::derive(&volume_id)),
        tree: &planned,
        entries,
        plans: &plans,
        repack_estimates: &repack_info
            .iter()
            .map(|(i, _)| estimated_parts(&entries[*i], entries[*i].size))
            .collect::<Vec<_>>(),
        repack_paths: &repack_info.iter().map(|(i, _)| entries[*i].path.clone()).collect::<Vec<_>>(),
        has_uefi_loader: layout.has_uefi_loader,
        win7_image: win7.map(|(_, image)| image),
        added: &planned_added,
    });
    let inventory = Inventory {
        volume_id: volume_id.clone(),
        reader: source_desc.clone(),
        dirs: layout.dirs,
        files: layout.files,
        total_bytes: layout.total_bytes,
        largest: layout.largest.clone(),
        is_windows: layout.is_windows,
        has_bootmgr: layout.has_bootmgr,
        has_uefi_loader: layout.has_uefi_loader,
        needed_bytes: needed_bytes(fs, &planned.entries, main.size, opts.sector_size) + bridge_bytes,
        fat_problem: crate::stick::fatwrite::check_tree(&planned.entries).err().map(|e| e.to_string()),
        name_problem: names::check_names(names_target, &planned).err().map(|e| e.to_string()),
        loader_problem,
        has_answer_file: entries.iter().any(|e| !e.is_dir && e.path.eq_ignore_ascii_case(unattend::FILE_NAME)),
        fs: choice.clone(),
        scratch_problem,
        scratch_bytes,
        win7_image: win7.map(|(_, image)| image),
        bridge: partitions.bridge.is_some(),
        boot,
        uefi_arch,
        ca2023_problem,
        bridge_problem,
        layout: planned_layout,
    };
    Ok(Survey {
        inventory,
        boot,
        uefi_arch,
        ca2023,
        firmware,
        fs,
        use_kernel_target,
        source_desc,
        target_desc,
        volume_id,
        layout,
        mtime_now,
        guid,
        plans,
        repack_info,
        split,
        repack,
        win7,
        staged_wims,
        windows,
        copied,
        scratch_bytes,
        partitions,
        bridge_bytes,
        ours,
        streamed,
        removed,
        names_target,
    })
}

/// What `planned_layout` reads.
struct PlanFacts<'a> {
    opts: &'a SurveyOptions,
    boot: BootMode,
    uefi_arch: Option<uefi::Arch>,
    ca2023_image: Option<u32>,
    partitions: &'a Partitions,
    fs: Option<Fs>,
    label: String,
    tree: &'a StickTree,
    entries: &'a [SourceEntry],
    plans: &'a [(usize, wimsplit::SplitPlan)],
    repack_estimates: &'a [Vec<Added>],
    repack_paths: &'a [String],
    has_uefi_loader: bool,
    win7_image: Option<u32>,
    added: &'a [Added],
}

/// The planned layout, from the survey's decisions (pure).
fn planned_layout(f: PlanFacts<'_>) -> PlannedLayout {
    let split = f
        .plans
        .first()
        .map(|(i, plan)| PlannedSplit {
            wim: f.entries[*i].path.clone(),
            repack: false,
            parts: plan.parts.len(),
            part_bytes: PART_MIB << 20,
            part_sizes: plan.parts.iter().map(|p| p.size).collect(),
        })
        .or_else(|| {
            let (path, parts) = f.repack_paths.iter().zip(f.repack_estimates).next()?;
            Some(PlannedSplit {
                wim: path.clone(),
                repack: true,
                parts: parts.len(),
                part_bytes: PART_MIB << 20,
                part_sizes: parts.iter().map(|p| p.size).collect(),
            })
        });
    let bios = f.boot.bios().then(|| PlannedBios {
        boot_code: "GRUB boot code in bytes 0..440 of sector 0 (the partition table is kept)".into(),
        core_image: format!(
            "GRUB i386-pc core image in the MBR gap (sectors 1..{})",
            f.partitions.main.offset / crate::stick::mbr::SECTOR - 1
        ),
        config: format!("/{}", bios::GRUB_CFG_PATH),
        chain: "ntldr /bootmgr".into(),
    });
    let uefi = f.boot.uefi().then(|| {
        let loader = format!("/{}", f.uefi_arch.unwrap_or(uefi::Arch::X64).loader_path());
        match (f.has_uefi_loader, f.win7_image, f.partitions.bridge.is_some()) {
            (false, None, _) => PlannedUefi::Unavailable,
            (_, _, true) => PlannedUefi::Bridge {
                loader,
                image: f.opts.uefi_ntfs_image.as_ref().map(|p| p.to_string_lossy().into_owned()),
            },
            (false, Some(image), false) => PlannedUefi::Windows7 { image, path: loader },
            (true, _, false) => PlannedUefi::IsoLoader { path: loader },
        }
    });
    PlannedLayout {
        table: match f.opts.table {
            Table::Mbr => PlannedTable::Mbr,
            Table::Gpt => PlannedTable::Gpt,
        },
        partitions: f.partitions.planned(f.opts.table, f.fs.unwrap_or(Fs::Fat32)),
        fs: f.fs,
        label: f.label,
        dirs: f.tree.entries.iter().filter(|e| e.is_dir).count() as u64,
        files: f.tree.entries.iter().filter(|e| !e.is_dir).count() as u64,
        bytes: f.tree.total_bytes(),
        split,
        bios,
        uefi,
        uefi_arch: f.uefi_arch.filter(|_| f.boot.uefi()),
        ca2023_image: f.ca2023_image,
        added: f
            .added
            .iter()
            .filter(|a| {
                matches!(a.origin, Origin::Bytes(_))
                    || a.path.eq_ignore_ascii_case(uefi::UEFI_LOADER)
                    || (f.ca2023_image.is_some() && uefi::Arch::of_loader_path(&a.path).is_some())
                    || (f.ca2023_image.is_some() && a.path.eq_ignore_ascii_case(uefi::BOOTMGR_EFI))
            })
            .map(|a| a.path.clone())
            .collect(),
    }
}

/// Whether the ISO is Windows 7's (sources/cversion.ini says so).
pub(crate) fn is_windows7(source: &Source) -> bool {
    let entries = source.entries();
    let cversion = find_file(entries, "sources/cversion.ini")
        .filter(|&i| entries[i].size < 64 << 10)
        .and_then(|i| read_small(source, i));
    uefi::is_windows7(cversion.as_deref())
}

/// An ISO file by path, in any letter case.
pub(crate) fn find_file(entries: &[SourceEntry], path: &str) -> Option<usize> {
    entries.iter().position(|e| !e.is_dir && e.path.eq_ignore_ascii_case(path))
}

fn read_small(source: &Source, index: usize) -> Option<String> {
    let mut text = Vec::new();
    source.open(index).ok()?.read_to_end(&mut text).ok()?;
    // cversion.ini may be UTF-16 (with a BOM) or ASCII.
    if text.starts_with(&[0xFF, 0xFE]) {
        let units: Vec<u16> = text[2..].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        return Some(String::from_utf16_lossy(&units));
    }
    Some(String::from_utf8_lossy(&text).into_owned())
}

/// Check the ISO's UEFI loader (read within uefi::MAX_LOADER_BYTES): `Ok(Err(problem))` when it is not an EFI
/// application for `arch` (a refusal), else its bytes; a read error is an error (a failure, not the ISO's fault
/// as far as anyone knows).
fn check_iso_loader(
    source: &Source,
    index: usize,
    arch: uefi::Arch,
) -> Result<Result<Vec<u8>, LoaderProblem>, SurveyError> {
    let entry = &source.entries()[index];
    let problem = |what: String| Err(LoaderProblem { path: entry.path.clone(), what });
    let too_big = || problem(format!("{} bytes; a UEFI loader is at most {}", entry.size, uefi::MAX_LOADER_BYTES));
    if entry.size > uefi::MAX_LOADER_BYTES {
        return Ok(too_big());
    }
    let read_err = |source| SurveyError::ReadIsoFile { path: entry.path.clone(), source };
    let data = match crate::sys::argfile::read_capped(source.open(index).map_err(read_err)?, uefi::MAX_LOADER_BYTES)
        .map_err(read_err)?
    {
        Some(data) => data,
        None => return Ok(too_big()),
    };
    Ok(match uefi::check_efi(&data, arch) {
        Ok(()) => Ok(data),
        Err(what) => problem(what),
    })
}

/// This machine's Secure Boot databases, for the revocation check: None (said under -v) where it has none (no
/// UEFI, or no dbx), or where they cannot be read (said as a warning).
pub(crate) fn firmware_databases<E>(note: &mut dyn FnMut(Note) -> Result<(), E>) -> Result<Option<Firmware>, E> {
    let dir = revocation::efivars_dir();
    match revocation::load(&dir) {
        Ok(Some(fw)) => Ok(Some(fw)),
        Ok(None) => {
            note(Note::Detail(format!(
                "Secure Boot revocation check: this machine has no dbx variable in {} (not UEFI, or no Secure Boot \
                 databases): skipped",
                dir.display()
            )))?;
            Ok(None)
        }
        Err(e) => {
            note(Note::Warning(format!(
                "Secure Boot revocation check skipped: {e}; the stick's boot loaders were not checked against this \
                 PC's dbx"
            )))?;
            Ok(None)
        }
    }
}

/// The loader for `arch` inside a user's UEFI:NTFS image (a FAT image, read with woesafe's bounded FAT reader):
/// Ok(None) when the image reads as FAT but has no EFI/BOOT/BOOTX64.EFI (BOOTAA64.EFI) of at most 8 MiB; Err
/// when it cannot be read as FAT (its FAT signature was checked before; woesafe's reader may not know its kind).
fn image_loader(img: &Path, arch: uefi::Arch) -> Result<Option<Vec<u8>>, String> {
    let file = crate::sys::argfile::open(img, crate::sys::argfile::Want::Regular, false).map_err(|e| e.to_string())?;
    let len = file.metadata().map_or(0, |m| m.len());
    let vol = crate::verify::fat::FatVolume::open(&file, 0, len).map_err(|e| format!("not read as FAT: {e}"))?;
    let entries = vol.walk(&crate::verify::fat::LIMITS).map_err(|e| format!("not read as FAT: {e}"))?;
    let name = format!("EFI/BOOT/{}", arch.bridge_file());
    let Some(e) = entries.iter().find(|e| !e.is_dir && e.path.eq_ignore_ascii_case(&name)) else { return Ok(None) };
    if e.size > uefi::MAX_LOADER_BYTES {
        return Ok(None);
    }
    let mut data = Vec::new();
    vol.open_file(&e.path, e.first_cluster, e.size)
        .read_to_end(&mut data)
        .map_err(|err| format!("its {} cannot be read: {err}", e.path))?;
    Ok(Some(data))
}

/// What this PC's Secure Boot databases say of the UEFI program `data` (`name`: how the user knows it): a
/// warning when they revoke it, SBAT and an unknown signer as information, the db certificate that signed it
/// under -v. Offline: only this machine's own variables are read.
///
/// `hint` ends a warning: what to do about it where this file is concerned ("; try --ca2023" for the ISO's
/// own loader), or nothing.
pub(crate) fn revocation_notes(fw: &Firmware, name: &str, data: &[u8], hint: &str) -> Vec<Note> {
    let wont_boot = revocation::WONT_BOOT.strip_suffix("; try --ca2023").unwrap_or(revocation::WONT_BOOT);
    match revocation::examine(data) {
        Err(e) => vec![Note::Detail(format!("Secure Boot revocation check of {name} skipped: {e}"))],
        Ok(facts) => revocation::check(name, &facts, fw)
            .into_iter()
            .map(|f| {
                let text = f.to_string().replace(revocation::WONT_BOOT, &format!("{wont_boot}{hint}"));
                match f {
                    _ if f.is_warning() => Note::Warning(text),
                    // No db certificate issued its signature: the firmware may refuse it.
                    revocation::Finding::DbIssuer { issuer: None, .. } => Note::Warning(format!("{text}{hint}")),
                    revocation::Finding::DbIssuer { issuer: Some(_), .. } => Note::Detail(text),
                    _ => Note::Info(text),
                }
            })
            .collect(),
    }
}

/// Scratch space for the CA 2023 extraction: EFI_EX (two boot managers of about 3 MiB, memtest, language files)
/// and Fonts_EX (about 20 MiB in Windows 11).
const CA2023_SCRATCH: u64 = 96 << 20;

/// The boot mode a write uses: the one asked for, but a default drops BIOS boot when the ISO has no /bootmgr
/// (nothing for GRUB's ntldr to load) and has a UEFI loader. A request for BIOS boot stays as asked (the
/// supervisor refuses it).
pub fn settle_boot(asked: BootMode, explicit: bool, has_bootmgr: bool, has_uefi_loader: bool) -> BootMode {
    match asked {
        BootMode::Both if !explicit && !has_bootmgr && has_uefi_loader => BootMode::Uefi,
        b => b,
    }
}

/// --ca2023: where the CA 2023 boot managers come from (boot.wim's index and the setup image, its second), or
/// why they cannot be had, said before anything is written. Whether the image really holds them is known only
/// once wimlib extracts them (Prepare, still before the target is touched).
fn ca2023_source(
    source: &Source,
    boot: BootMode,
    arch: Option<uefi::Arch>,
    win7: bool,
) -> Result<(usize, u32), String> {
    if !boot.uefi() {
        return Err("the CA 2023 boot managers are UEFI boot managers, and this stick boots under BIOS only: \
                    leave out --boot bios, or --ca2023"
            .into());
    }
    if win7 || arch.is_none() {
        return Err("the ISO has no UEFI loader (efi/boot/bootx64.efi or bootaa64.efi) to replace: CA 2023 boot \
                    managers come with Windows 11 media (build 26200 and later); leave out --ca2023"
            .into());
    }
    let Some(i) = find_file(source.entries(), uefi::BOOT_WIM) else {
        return Err("the ISO has no sources/boot.wim, where Windows 11 media (build 26200 and later) carry the CA \
                    2023 boot managers; leave out --ca2023"
            .into());
    };
    let info = inspect_wim(source, i).map_err(|e| format!("sources/boot.wim cannot be read: {e}"))?;
    if info.image_count < uefi::CA2023_IMAGE {
        return Err(format!(
            "sources/boot.wim has {} image{}, and the CA 2023 boot managers are in the setup image, its image {}; \
             use Windows 11 media of build 26200 or later, or leave out --ca2023",
            info.image_count,
            if info.image_count == 1 { "" } else { "s" },
            uefi::CA2023_IMAGE
        ));
    }
    Ok((i, uefi::CA2023_IMAGE))
}

pub(crate) fn inspect_wim(source: &Source, index: usize) -> Result<wim::WimInfo, String> {
    let mut r = source.open_seekable(index).map_err(|e| e.to_string())?;
    wim::inspect(&mut r).map_err(|e| e.to_string())
}

fn bytes_file(path: &str, content: &[u8], mtime: i64) -> Added {
    Added { path: path.into(), size: content.len() as u64, mtime, origin: Origin::Bytes(content.to_vec()) }
}

/// The parts a re-pack will make, for the checks before writing (sizes estimated from `bytes`, the re-packed
/// WIM's expected size: full parts, then the rest).
fn estimated_parts(wim_entry: &SourceEntry, bytes: u64) -> Vec<Added> {
    let part = PART_MIB << 20;
    let n = bytes.div_ceil(part).max(1) as usize;
    (1..=n)
        .map(|k| Added {
            path: wim::part_path(&wim_entry.path, k),
            size: if k < n { part } else { bytes - part * (n as u64 - 1) },
            mtime: wim_entry.mtime,
            origin: Origin::Planned,
        })
        .collect()
}

/// The parts of a planned split, as files on the stick beside the WIM's place (a single part keeps its name).
pub(crate) fn plan_parts(wim_entry: &SourceEntry, from: WimFrom, plan: &wimsplit::SplitPlan) -> Vec<Added> {
    plan.parts
        .iter()
        .map(|p| Added {
            path: if plan.parts.len() == 1 {
                wim_entry.path.clone()
            } else {
                wim::part_path(&wim_entry.path, p.number.into())
            },
            size: p.size,
            mtime: wim_entry.mtime,
            origin: Origin::WimPart { from: from.clone(), part: p.clone() },
        })
        .collect()
}

/// Plan the streaming split of the ISO's WIM at `index` into parts of at most PART_MIB MiB.
fn plan_split(source: &Source, index: usize, guid: [u8; 16]) -> Result<wimsplit::SplitPlan, wimsplit::SplitError> {
    let mut r = source.open_seekable(index)?;
    wimsplit::plan(&mut r, PART_MIB << 20, guid)
}

/// How a planned split goes onto FAT32: as it is, unless a part would be over FAT32's limit (a resource of
/// about 4 GiB on its own), which a re-pack may compress below it.
fn verdict_of(plan: &wimsplit::SplitPlan) -> WimVerdict {
    match plan.parts.iter().find(|p| p.size > FAT32_MAX_FILE) {
        None => WimVerdict::Split { parts: plan.parts.len() },
        Some(p) => WimVerdict::Repack {
            why: format!(
                "its part {} would be {} bytes, over FAT32's limit: one resource in it is that big",
                p.number, p.size
            ),
        },
    }
}

/// A read-only loop window over a file's bytes in the ISO, when they are one run that the window (whole 512-byte
/// sectors: a few bytes past the file's end, which WIM readers ignore) can cover inside the ISO.
fn iso_window(source: &Source, index: usize) -> Option<LoopWindow> {
    let (file, _, offset, len) = source.file_window(index)?;
    let size = len.div_ceil(512) * 512;
    let iso_len = file.metadata().ok()?.len();
    (offset.checked_add(size)? <= iso_len && offset % 512 == 0).then_some(LoopWindow {
        offset,
        size,
        read_only: true,
        direct_io: false,
    })
}

/// "is split into N parts while it is copied (sizes)", for the user.
pub(crate) fn split_summary(plan: &wimsplit::SplitPlan) -> String {
    let sizes: Vec<String> = plan.parts.iter().map(|p| human(p.size)).collect();
    format!("is split into {} parts while it is copied ({})", plan.parts.len(), sizes.join(", "))
}

/// The disk bytes a tree takes on the stick's main partition (`partition` bytes, `sector`-byte sectors) with
/// this filesystem.
pub(crate) fn needed_bytes(fs: Fs, entries: &[SourceEntry], partition: u64, sector: u64) -> u64 {
    match fs {
        Fs::Fat32 => fat::estimate_disk_bytes(entries, partition, sector),
        Fs::Ntfs => ntfs::estimate_disk_bytes(entries),
    }
}

/// A GUID for a split set: 16 random bytes.
fn random_guid() -> [u8; 16] {
    let mut b = [0u8; 16];
    for chunk in b.chunks_mut(4) {
        chunk.copy_from_slice(&super::random_u32().to_le_bytes());
    }
    b
}

/// Where the stick's filesystem is mounted inside the worker's private directory (kernel drivers, ntfs-3g).
pub(crate) fn target_mount_point(work: &Path) -> PathBuf {
    work.join("target")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stick::safety::PartitionRole;

    fn entry(path: &str, size: u64) -> SourceEntry {
        SourceEntry { path: path.into(), is_dir: false, size, mtime: 0 }
    }

    fn facts<'a>(
        opts: &'a SurveyOptions,
        partitions: &'a Partitions,
        tree: &'a StickTree,
        entries: &'a [SourceEntry],
        added: &'a [Added],
    ) -> PlanFacts<'a> {
        PlanFacts {
            opts,
            boot: opts.boot,
            uefi_arch: Some(uefi::Arch::X64),
            ca2023_image: None,
            partitions,
            fs: Some(Fs::Fat32),
            label: "CCCOMA_X64F".into(),
            tree,
            entries,
            plans: &[],
            repack_estimates: &[],
            repack_paths: &[],
            has_uefi_loader: true,
            win7_image: None,
            added,
        }
    }

    #[test]
    fn fat32_on_mbr_boots_bios_and_uefi_from_the_isos_loader() {
        let opts = SurveyOptions::defaults("/dev/sdb".into(), 8 << 30);
        let entries = [entry("bootmgr", 10), entry(uefi::UEFI_LOADER, 20)];
        let added = [bytes_file(bios::GRUB_CFG_PATH, b"cfg", 0)];
        let tree = StickTree::build(&entries, &[], &added);
        let parts = plan_partitions(Table::Mbr, 8 << 30, 0, 512).unwrap();
        let l = planned_layout(facts(&opts, &parts, &tree, &entries, &added));
        assert_eq!(l.table, PlannedTable::Mbr);
        assert_eq!(l.partitions, parts.planned(Table::Mbr, Fs::Fat32));
        assert_eq!((l.files, l.bytes), (3, 33));
        assert_eq!(l.uefi, Some(PlannedUefi::IsoLoader { path: "/efi/boot/bootx64.efi".into() }));
        assert_eq!(l.bios.as_ref().map(|b| b.chain.as_str()), Some("ntldr /bootmgr"));
        assert_eq!(l.added, ["boot/grub/grub.cfg"]);
        assert_eq!(l.split, None);
    }

    #[test]
    fn ntfs_on_gpt_boots_uefi_through_the_bridge_partition() {
        let mut opts = SurveyOptions::defaults("/dev/sdb".into(), 16 << 30);
        opts.table = Table::Gpt;
        opts.boot = BootMode::Uefi;
        opts.uefi_ntfs_image = Some("/srv/uefi-ntfs.img".into());
        let entries = [entry("bootmgr", 10), entry(uefi::UEFI_LOADER, 20), entry("extra/disk.vhd", 5 << 30)];
        let tree = StickTree::build(&entries, &[], &[]);
        let parts = plan_partitions(Table::Gpt, 16 << 30, uefi::BRIDGE_BYTES, 512).unwrap();
        let mut f = facts(&opts, &parts, &tree, &entries, &[]);
        f.fs = Some(Fs::Ntfs);
        let l = planned_layout(f);
        assert_eq!(l.table, PlannedTable::Gpt);
        assert_eq!(l.fs, Some(Fs::Ntfs));
        assert_eq!(l.partitions.len(), 2);
        assert_eq!((l.partitions[1].role, l.partitions[1].size), (PartitionRole::UefiBridge, uefi::BRIDGE_BYTES));
        assert_eq!(l.partitions[0].offset + l.partitions[0].size, l.partitions[1].offset);
        assert_eq!(l.bios, None);
        assert_eq!(
            l.uefi,
            Some(PlannedUefi::Bridge {
                loader: "/efi/boot/bootx64.efi".into(),
                image: Some("/srv/uefi-ntfs.img".into())
            })
        );
    }

    #[test]
    fn a_repacked_esd_is_planned_as_estimated_parts_and_no_loader_means_no_uefi() {
        let opts = SurveyOptions::defaults("/dev/sdb".into(), 16 << 30);
        let esd = entry("sources/install.esd", (4400 << 20) + 7);
        let entries = [entry("bootmgr", 10), esd.clone()];
        let estimates = vec![estimated_parts(&esd, esd.size)];
        let paths = vec![esd.path.clone()];
        let tree = StickTree::build(&entries, std::slice::from_ref(&esd.path), &estimates[0]);
        let parts = plan_partitions(Table::Mbr, 16 << 30, 0, 512).unwrap();
        let mut f = facts(&opts, &parts, &tree, &entries, &[]);
        f.repack_estimates = &estimates;
        f.repack_paths = &paths;
        f.has_uefi_loader = false;
        let l = planned_layout(f);
        let split = l.split.unwrap();
        assert_eq!((split.wim.as_str(), split.repack, split.parts), ("sources/install.esd", true, 2));
        assert_eq!(split.part_sizes, [4000 << 20, (400 << 20) + 7]);
        assert_eq!(l.uefi, Some(PlannedUefi::Unavailable));
    }

    #[test]
    fn boot_without_bootmgr_is_uefi_only_unless_asked() {
        use BootMode::*;
        // Windows on ARM and other UEFI-only media: no /bootmgr, a UEFI loader.
        assert_eq!(settle_boot(Both, false, false, true), Uefi);
        assert_eq!(settle_boot(Uefi, false, false, true), Uefi);
        // asked for: kept as asked (the supervisor refuses BIOS without /bootmgr)
        assert_eq!(settle_boot(Both, true, false, true), Both);
        assert_eq!(settle_boot(Bios, true, false, true), Bios);
        // x64 media with /bootmgr: unchanged
        assert_eq!(settle_boot(Both, false, true, true), Both);
        // nothing to boot either way: left as it was (the write warns)
        assert_eq!(settle_boot(Both, false, false, false), Both);
    }

    #[test]
    fn arm64_layout_names_its_loader_and_has_no_bios() {
        let mut opts = SurveyOptions::defaults("/dev/sdb".into(), 8 << 30);
        opts.boot = BootMode::Uefi;
        let entries = [entry(uefi::UEFI_LOADER_ARM64, 20)];
        let tree = StickTree::build(&entries, &[], &[]);
        let parts = plan_partitions(Table::Mbr, 8 << 30, 0, 512).unwrap();
        let mut f = facts(&opts, &parts, &tree, &entries, &[]);
        f.uefi_arch = Some(uefi::Arch::Arm64);
        let l = planned_layout(f);
        assert_eq!(l.bios, None);
        assert_eq!(l.uefi, Some(PlannedUefi::IsoLoader { path: "/efi/boot/bootaa64.efi".into() }));
        assert_eq!(l.uefi_arch, Some(uefi::Arch::Arm64));
    }
}
