//! The write itself, as the worker runs it inside its namespaces: read the ISO → (supervisor checks) → wipe →
//! partition → format → copy → boot code → flush → unmount. Every loop device and mount here is held by a
//! guard and ends with the worker at the latest.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::MsFlags;

use crate::boot::{bios, uefi};
use crate::copy::{SourceTree, TargetTree, copy_tree};
use crate::media::SourceEntry;
use crate::media::source::{self, Source, SourceError};
use crate::media::wim::{self, FAT32_MAX_FILE, PART_MIB};
use crate::media::wimsplit;
use crate::protocol::Channel;
use crate::protocol::{Down, Driver, Report, Step, Table, TargetState, Up, WriteRequest};
use crate::stick::choose::{self, BigFile, Fs, WimVerdict};
use crate::stick::fat::{self, MountedTarget};
use crate::stick::fatwrite::FatWriter;
use crate::stick::names;
use crate::stick::ntfs::{self, NtfsMount};
use crate::stick::safety::{Inventory, LoaderProblem};
use crate::stick::units::human;
use crate::stick::{gpt, label, mbr};
use crate::sys::argfile::{self, ArgFileError, Want};
use crate::sys::helper;
use crate::sys::loopdev::{LoopDevice, LoopWindow, device_size};
use crate::sys::mount::MountGuard;
use crate::sys::staging::{self, Staging};
use crate::sys::stop::stop_requested;
use crate::tree::{Added, Origin, StickTree, Tree, WimFrom};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot set up the worker's private directory {path}: {source}")]
    WorkDir { path: std::path::PathBuf, source: crate::sys::mount::MountError },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("the target {path} ({size} bytes) has no room for a partition")]
    NoRoom { path: std::path::PathBuf, size: u64 },
    #[error("internal error: {path} was taken out of the tree but neither split nor re-packed (nothing was written)")]
    Unplanned { path: String },
    #[error("cannot read {path} on the ISO: {source}")]
    ReadIsoFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the target again: {0}")]
    ReopenTarget(#[source] crate::sys::argfile::ArgFileError),
    #[error("the target {path} was replaced after it was checked; nothing was written")]
    TargetReplaced { path: PathBuf },
    #[error("the target {path} changed size while we were preparing ({expected} → {found} bytes)")]
    SizeChanged { path: std::path::PathBuf, expected: u64, found: u64 },
    #[error(transparent)]
    Loop(#[from] crate::sys::loopdev::LoopError),
    #[error("cannot write to {path}: {source}")]
    Device {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Helper(#[from] helper::HelperError),
    #[error(transparent)]
    Mount(#[from] crate::sys::mount::MountError),
    #[error(transparent)]
    Fat(#[from] crate::stick::fatwrite::FatWriteError),
    #[error(transparent)]
    Copy(#[from] crate::copy::CopyError),
    #[error(transparent)]
    Bios(#[from] bios::BiosError),
    #[error("cannot write {path} on the target: {source}")]
    AddedFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lost contact with the supervisor: {0}")]
    Frame(#[from] crate::protocol::FrameError),
    #[error(transparent)]
    Staging(#[from] crate::sys::staging::StagingError),
    #[error("scratch space: {what}: {source}")]
    Scratch {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the split would make {part} of {size} bytes, over FAT32's file-size limit (a single file in the WIM is \
         that big); use --fs ntfs"
    )]
    PartTooBig { part: String, size: u64 },
    #[error(
        "the target {path} is too small for the re-packed WIM: {} needed, it has {}; nothing was written. Use a \
         bigger stick, or --fs ntfs (the ESD is copied as it is; its UEFI bridge needs Secure Boot off)",
        human(*needed),
        human(*size)
    )]
    TooSmallAfterRepack { path: PathBuf, size: u64, needed: u64 },
    #[error(
        "re-packing {wim} needed more scratch space than set aside (twice its size); nothing was written: set \
         TMPDIR to a directory with more room than {}, or use --fs ntfs",
        dir.display()
    )]
    ScratchFull { wim: String, dir: PathBuf },
    #[error("the re-packed {wim} cannot be split: {what}")]
    Repacked { wim: String, what: String },
    #[error(transparent)]
    Ntfs(#[from] crate::stick::ntfs::NtfsError),
    #[error(transparent)]
    Uefi(#[from] crate::boot::uefi::UefiError),
    #[error("the ISO cannot be written as it is: {0}; nothing was written")]
    Names(#[from] crate::stick::names::NameProblem),
    #[error("stopped on request")]
    Stopped,
}

impl WriteError {
    /// Whether this error is the orderly end of a stop request (at whatever depth it was noticed).
    fn is_stop(&self) -> bool {
        matches!(
            self,
            WriteError::Stopped
                | WriteError::Copy(crate::copy::CopyError::Stopped { .. })
                | WriteError::Helper(helper::HelperError::Stopped { .. })
        )
    }
}

struct Job<'a> {
    req: &'a WriteRequest,
    link: &'a mut dyn Channel,
    step: Step,
    state: TargetState,
}

/// Run the whole write; the returned frame is the last one the worker sends.
pub fn run(req: &WriteRequest, link: &mut dyn Channel) -> Up {
    let mut job = Job { req, link, step: Step::ReadIso, state: TargetState::Untouched };
    match job.execute() {
        Ok(Some(report)) => Up::Done(Box::new(report)),
        Ok(None) => Up::Aborted,
        Err(e) if e.is_stop() || stop_requested() => Up::Stopped { step: job.step, state: job.state },
        Err(e) => {
            // Problems found before the target is touched that only the worker could know (after a re-pack).
            // And a damaged or hostile ISO: refused before anything was written (exit 3), like a non-Windows one.
            let worker_refusal = matches!(
                e,
                WriteError::TooSmallAfterRepack { .. }
                    | WriteError::NoRoom { .. }
                    | WriteError::PartTooBig { .. }
                    | WriteError::ScratchFull { .. }
                    | WriteError::Names(_)
                    | WriteError::Uefi(
                        uefi::UefiError::BadLoader { .. }
                            | uefi::UefiError::ExtractedLink { .. }
                            | uefi::UefiError::ExtractedKind { .. }
                            | uefi::UefiError::ExtractedTooBig { .. }
                    )
                    | WriteError::TargetReplaced { .. }
            ) || matches!(&e, WriteError::Source(s) if s.is_refusal());
            let refused = worker_refusal && job.state == TargetState::Untouched;
            Up::Failed { step: job.step, message: e.to_string(), state: job.state, refused }
        }
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return t.subsec_nanos() ^ (t.as_secs() as u32);
    }
    u32::from_le_bytes(b)
}

fn zero_range(f: &File, path: &Path, offset: u64, len: u64) -> Result<(), WriteError> {
    let buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        f.write_all_at(&buf[..n], offset + done).map_err(|source| WriteError::Device { path: path.into(), source })?;
        done += n as u64;
    }
    Ok(())
}

impl Job<'_> {
    /// Start a step: stop here if a stop was asked for; announce it; hold it for the test-only pause.
    fn enter(&mut self, step: Step) -> Result<(), WriteError> {
        if stop_requested() {
            return Err(WriteError::Stopped);
        }
        self.step = step;
        self.link.send(&Up::Step(step))?;
        if let Some((name, ms)) = &self.req.pause_at
            && name == step.name()
        {
            let until = Instant::now() + Duration::from_millis(*ms);
            while Instant::now() < until {
                if stop_requested() {
                    return Err(WriteError::Stopped);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    fn info(&mut self, msg: String) -> Result<(), WriteError> {
        Ok(self.link.send(&Up::Info(msg))?)
    }

    fn execute(&mut self) -> Result<Option<Report>, WriteError> {
        let req = self.req;
        // A private tmpfs over the directory the supervisor made: our mount points and scratch files live in
        // it and vanish with the namespace, whatever happens.
        let work = MountGuard::mount(
            "woesafe-work",
            &req.work_dir,
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0700,size=64m"),
        )
        .map_err(|source| WriteError::WorkDir { path: req.work_dir.clone(), source })?;

        self.enter(Step::ReadIso)?;
        // An ISO is untrusted input, and the kernel's udf/isofs parse it in ring 0 (a long CVE history with
        // crafted images): auto reads it in userspace; the kernel only on request, after the userspace parse.
        let use_kernel_source = match req.source_driver {
            Driver::Kernel => true,
            Driver::Userspace | Driver::Auto => false,
        };
        let source = if use_kernel_source {
            Source::open_kernel(&req.iso, &req.iso_id, &work.path().join("source"))?
        } else {
            Source::open_userspace(&req.iso, &req.iso_id)?
        };
        let source_desc = source.describe();
        // What the reader left out (links, devices): said, not silently dropped.
        for s in source.skipped() {
            self.link.send(&Up::Warning(format!(
                "the ISO holds {} entr{} of a kind a Windows stick cannot hold ({}, e.g. /{}): not copied",
                s.count,
                if s.count == 1 { "y" } else { "ies" },
                s.kind,
                s.example
            )))?;
        }
        let entries = source.entries();
        let layout = source::layout(entries);
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
                    let mut repack = |why: String| match inspect_wim(&source, i) {
                        Ok(info) => {
                            to_repack.push((i, info));
                            WimVerdict::Repack { why }
                        }
                        Err(e) => WimVerdict::Unusable(e),
                    };
                    match plan_split(&source, i, guid) {
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
        let choice = choose::choose(req.fs, &big);
        let fs = choice.as_ref().map_or(Fs::Fat32, |c| c.fs);
        let use_kernel_target = match (req.target_driver, fs) {
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
        if req.source_driver == Driver::Auto || req.target_driver == Driver::Auto {
            let why = match (req.source_driver, req.target_driver) {
                (Driver::Auto, Driver::Auto) => "auto: the ISO in userspace, the target from /proc/filesystems",
                (Driver::Auto, _) => "auto: the ISO in userspace",
                _ => "auto: from /proc/filesystems",
            };
            self.info(format!("Drivers: source {source_desc}, target {target_desc} ({why})"))?;
        }

        // Windows 7: no UEFI loader on the ISO; its install.wim carries one.
        let cversion = find_file(entries, "sources/cversion.ini")
            .filter(|&i| entries[i].size < 64 << 10)
            .and_then(|i| read_small(&source, i));
        let win7 = if req.boot.uefi() && !layout.has_uefi_loader && uefi::is_windows7(cversion.as_deref()) {
            // Only an x64 image carries an x86_64 loader (32-bit Windows 7 boots BIOS only).
            find_file(entries, "sources/install.wim")
                .and_then(|i| Some((i, inspect_wim(&source, i).ok()?.x64_images.first().copied()?)))
        } else {
            None
        };

        // Which WIMs are split as they are copied, and which are re-packed first in scratch space.
        let paths_of = |pick: fn(&choose::Choice) -> &Vec<String>| -> Vec<usize> {
            match &choice {
                Ok(c) => pick(c).iter().filter_map(|p| find_file(entries, p)).collect(),
                Err(_) => Vec::new(),
            }
        };
        let split = paths_of(|c| &c.split);
        let repack = paths_of(|c| &c.repack);
        plans.retain(|(i, _)| split.contains(i));
        for (i, plan) in &plans {
            self.info(format!("{} {}", entries[*i].path, split_summary(plan)))?;
        }

        // Scratch space, only for what needs a file of its own: a re-pack (wimlib reads the WIM from a file, and
        // writes the re-packed one), the Windows 7 loader extraction (from a copy of install.wim when the ISO is
        // read in userspace).
        let mut staged_wims: Vec<usize> = repack.clone();
        if let Some((i, _)) = win7
            && !staged_wims.contains(&i)
        {
            staged_wims.push(i);
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
                return Err(WriteError::Unplanned { path: entries[i].path.clone() });
            }
        }
        let mut scratch_bytes: u64 = repack_info.iter().map(|(_, n)| n).sum();
        // wimlib reads the WIM through a read-only loop device over its bytes in the ISO when they are one run
        // (as in Windows ISOs), else from a copy in scratch space.
        let windows: Vec<(usize, LoopWindow)> =
            staged_wims.iter().filter_map(|&i| Some((i, iso_window(&source, i)?))).collect();
        let copied: Vec<usize> = staged_wims
            .iter()
            .copied()
            .filter(|&i| source.local_path(i).is_none() && !windows.iter().any(|(j, _)| *j == i))
            .collect();
        scratch_bytes += copied.iter().map(|&i| entries[i].size).sum::<u64>();
        if win7.is_some() {
            scratch_bytes += 16 << 20;
        }
        let scratch_problem = (scratch_bytes > 0)
            .then(|| {
                let need = staging::image_size(scratch_bytes);
                let what =
                    if repack.is_empty() { "extracting the Windows 7 UEFI loader" } else { "re-packing the WIM" };
                match staging::free_bytes(&req.scratch_dir) {
                    Ok(free) if free >= need => None,
                    Ok(free) => Some(format!(
                        "{what} needs {} of scratch space in {} and it has {} free: set TMPDIR to a directory on a \
                         disk with more room{}",
                        human(need),
                        req.scratch_dir.display(),
                        human(free),
                        if repack.is_empty() { "" } else { ", or use --fs ntfs (no re-pack)" }
                    )),
                    Err(e) => Some(format!("cannot check the scratch space in {}: {e}", req.scratch_dir.display())),
                }
            })
            .flatten();

        let span = match req.table {
            Table::Mbr => mbr::partition_span(req.target_size),
            Table::Gpt => gpt::partition_span(req.target_size),
        }
        .ok_or(WriteError::NoRoom { path: req.target.clone(), size: req.target_size })?;
        // A bridge only when there is a loader on the stick to hand over to.
        let bridge_wanted = fs == Fs::Ntfs && req.boot.uefi() && (layout.has_uefi_loader || win7.is_some());
        let bridge_bytes = match (&req.uefi_ntfs_image, bridge_wanted) {
            (_, false) => 0,
            (Some(img), true) => uefi::check_uefi_ntfs_image(img)?,
            (None, true) => uefi::BRIDGE_BYTES,
        };
        let (main, bridge) = if bridge_bytes > 0 {
            let (m, b) = mbr::split_off_bridge(span, bridge_bytes)
                .ok_or(WriteError::NoRoom { path: req.target.clone(), size: req.target_size })?;
            (m, Some(b))
        } else {
            (span, None)
        };

        let answer_file =
            crate::media::unattend::answer_file(&req.bypass, crate::media::unattend::architecture(entries));
        if answer_file.is_some() {
            let names: Vec<String> = req.bypass.iter().map(|b| format!("{b:?}").to_lowercase()).collect();
            self.info(format!("Windows 11 setup options: autounattend.xml bypassing {}", names.join(", ")))?;
        }
        let mut ours = Vec::new();
        if req.boot.bios() {
            ours.push(bytes_file(bios::GRUB_CFG_PATH, bios::GRUB_CFG.as_bytes(), mtime_now));
        }
        if let Some(xml) = &answer_file {
            ours.push(bytes_file(crate::media::unattend::FILE_NAME, xml.as_bytes(), mtime_now));
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
        let planned = StickTree::build(entries, &removed, &planned_added);
        let names_target = names::Target {
            fs,
            kernel: use_kernel_target,
            mount_point_bytes: target_mount_point(work.path()).as_os_str().len(),
        };
        // The ISO's own UEFI loader must be one (the Windows 7 one is checked once extracted).
        let loader_problem = match find_file(entries, uefi::UEFI_LOADER).filter(|&i| entries[i].size > 0) {
            Some(i) if req.boot.uefi() => check_iso_loader(&source, i)?,
            _ => None,
        };
        let volume_id = source.volume_id();
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
            needed_bytes: needed_bytes(fs, &planned.entries, main.size) + bridge_bytes,
            fat_problem: crate::stick::fatwrite::check_tree(&planned.entries).err().map(|e| e.to_string()),
            name_problem: names::check_names(names_target, &planned).err().map(|e| e.to_string()),
            loader_problem,
            has_answer_file: entries
                .iter()
                .any(|e| !e.is_dir && e.path.eq_ignore_ascii_case(crate::media::unattend::FILE_NAME)),
            fs: choice.clone(),
            scratch_problem,
            scratch_bytes,
            win7_image: win7.map(|(_, image)| image),
            bridge: bridge.is_some(),
        };
        self.link.send(&Up::Inventory(Box::new(inventory)))?;
        let target_id = match self.link.recv()? {
            Some(Down::Proceed { target }) => target,
            _ => return Ok(None),
        };

        // Prepare, in scratch space and before the target is touched: re-pack the WIM, extract the loader.
        let mut added = [ours, streamed].concat();
        let mut split_report = plans.first().map(|(i, plan)| (entries[*i].path.clone(), plan.parts.len()));
        let scratch = if scratch_bytes > 0 {
            self.enter(Step::Prepare)?;
            let scratch = Staging::create(&req.scratch_dir, scratch_bytes, &work.path().join("scratch"))?;
            self.link.send(&Up::Devices(vec![scratch.device_name()]))?;
            let mut wim_paths = Vec::new();
            let mut window_loops = Vec::new();
            for &i in &staged_wims {
                let path = if let Some(p) = source.local_path(i) {
                    p
                } else if let Some((_, window)) = windows.iter().find(|(j, _)| *j == i) {
                    let (file, iso_path, _, _) = source.file_window(i).expect("a window");
                    let lo = LoopDevice::attach(file, iso_path, *window)?;
                    let p = lo.path().to_path_buf();
                    self.info(format!(
                        "wimlib reads {} in place in the ISO (a read-only loop device over its bytes: no copy)",
                        entries[i].path
                    ))?;
                    window_loops.push(lo);
                    p
                } else {
                    self.stage_file(&source, i, &scratch.path().join(format!("source-{i}.wim")))?
                };
                wim_paths.push((i, path));
            }
            // The stall watchdog watches the window loops too: wimlib's reads move through them.
            let mut devices = vec![scratch.device_name()];
            devices.extend(window_loops.iter().map(LoopDevice::name));
            self.link.send(&Up::Devices(devices))?;
            let staged = |i: usize| wim_paths.iter().find(|(j, _)| *j == i).expect("staged").1.clone();
            for &(i, _) in &repack_info {
                let wim = staged(i);
                let packed = self.repack_wim(&wim, &entries[i], scratch.path())?;
                // A copy in scratch space is dropped as soon as nothing needs it (never a device or the ISO's
                // mounted file).
                if win7.is_none_or(|(w, _)| w != i) && copied.contains(&i) {
                    let _ = std::fs::remove_file(&wim);
                }
                let parts = self.split_repacked(&packed, &entries[i], guid)?;
                // A re-packed WIM that fits FAT32 whole goes on as it is: nothing to report as split.
                if parts.len() > 1 {
                    split_report = Some((entries[i].path.clone(), parts.len()));
                }
                added.extend(parts);
            }
            if let Some((i, image)) = win7 {
                added.push(self.extract_win7_loader(&staged(i), image, scratch.path(), mtime_now)?);
            }
            drop(window_loops);
            Some(scratch)
        } else {
            None
        };
        let scratch_dev: Vec<String> = scratch.iter().map(Staging::device_name).collect();
        let tree = Tree { plan: StickTree::build(entries, &removed, &added), source: &source };
        // The tree as it will be written (re-packed parts, the extracted loader): checked again.
        names::check_names(names_target, &tree.plan)?;
        if !repack.is_empty() {
            let needed = needed_bytes(fs, &tree.plan.entries, main.size) + bridge_bytes;
            if needed > req.target_size {
                return Err(WriteError::TooSmallAfterRepack {
                    path: req.target.clone(),
                    size: req.target_size,
                    needed,
                });
            }
        }

        // The disk: the block device itself, or the image file on an autoclear loop device. Either must be the
        // very file the supervisor checked and holds locked (device and inode): a path that now leads elsewhere,
        // through a symbolic link or not, is refused; one that still leads to it (a link the user gave) is fine.
        let want = if req.target_is_image { Want::Regular } else { Want::RegularOrBlock };
        let target_file = argfile::reopen(&req.target, want, true, 0, &target_id).map_err(|e| match e {
            ArgFileError::ReplacedSinceCheck { path } => WriteError::TargetReplaced { path },
            e => WriteError::ReopenTarget(e),
        })?;
        let disk_loop = if req.target_is_image {
            Some(LoopDevice::attach(&target_file, &req.target, LoopWindow { direct_io: true, ..Default::default() })?)
        } else {
            None
        };
        let (disk, disk_path) = match &disk_loop {
            Some(l) => (
                l.file().try_clone().map_err(|source| WriteError::Device { path: l.path().into(), source })?,
                l.path().to_path_buf(),
            ),
            None => (target_file, req.target.clone()),
        };
        let found = device_size(&disk).map_err(|source| WriteError::Device { path: disk_path.clone(), source })?;
        if found != req.target_size {
            return Err(WriteError::SizeChanged { path: req.target.clone(), expected: req.target_size, found });
        }
        let dev_err = |source| WriteError::Device { path: disk_path.clone(), source };

        let disk_name = disk_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.link.send(&Up::Devices([vec![disk_name.clone()], scratch_dev.clone()].concat()))?;
        self.enter(Step::Wipe)?;
        self.state = TargetState::Wiped;
        zero_range(&disk, &disk_path, 0, 1 << 20)?;
        for part in [Some(main), bridge].into_iter().flatten() {
            zero_range(&disk, &disk_path, part.offset, (1u64 << 20).min(part.size))?;
        }
        let tail = found.saturating_sub(1 << 20).max(span.offset + (1 << 20));
        zero_range(&disk, &disk_path, tail, found.saturating_sub(tail))?;

        self.enter(Step::Partition)?;
        let label = req.label.clone().unwrap_or_else(|| label::derive(&volume_id));
        match req.table {
            Table::Mbr => {
                let main_type = match fs {
                    Fs::Fat32 => mbr::PART_TYPE_FAT32_LBA,
                    Fs::Ntfs => mbr::PART_TYPE_NTFS,
                };
                let mut parts = vec![(main, main_type)];
                parts.extend(bridge.map(|b| (b, mbr::PART_TYPE_EFI)));
                disk.write_all_at(&mbr::build(&parts, random_u32()), 0).map_err(dev_err)?;
            }
            Table::Gpt => {
                let guid = || {
                    let mut b = [0u8; 16];
                    for chunk in b.chunks_mut(4) {
                        chunk.copy_from_slice(&random_u32().to_le_bytes());
                    }
                    gpt::random_guid(b)
                };
                let mut parts =
                    vec![gpt::GptPart { span: main, type_guid: gpt::BASIC_DATA, guid: guid(), name: &label }];
                if let Some(b) = bridge {
                    parts.push(gpt::GptPart { span: b, type_guid: gpt::EFI_SYSTEM, guid: guid(), name: "UEFI:NTFS" });
                }
                for (offset, bytes) in gpt::build(found, &parts, guid()) {
                    disk.write_all_at(&bytes, offset).map_err(dev_err)?;
                }
            }
        }
        disk.sync_data().map_err(dev_err)?;
        self.state = TargetState::Partitioned;

        self.enter(Step::Format)?;
        let part = LoopDevice::attach(
            &disk,
            &disk_path,
            // Buffered: with direct I/O onto a hung stick, its pages would stay under writeback, and whoever
            // drops the last reference (the supervisor releasing the worker's mount namespace after a stall)
            // would hang in the kernel with them. Buffered, they land in the disk's page cache at once.
            LoopWindow { offset: main.offset, size: main.size, read_only: false, direct_io: false },
        )?;
        let part_name = part.name();
        self.link.send(&Up::Devices([vec![disk_name, part_name], scratch_dev].concat()))?;
        let hidden = main.offset / mbr::SECTOR;
        let serial = match fs {
            Fs::Fat32 => {
                let serial = random_u32();
                let args = fat::mkfs_args(part.path(), main.size, &label, serial, hidden);
                helper::run("mkfs.fat", &args, "dosfstools")?;
                format!("{:04X}-{:04X}", serial >> 16, serial & 0xFFFF)
            }
            Fs::Ntfs => {
                helper::run("mkntfs", &ntfs::mkntfs_args(part.path(), &label, hidden), "ntfs-3g")?;
                ntfs::volume_uuid(part.file(), part.path())?.to_uppercase()
            }
        };
        self.state = TargetState::Formatted;

        self.enter(Step::Mount)?;
        let part_err = |source| WriteError::Device { path: part.path().into(), source };
        let mut target_mount = None;
        let mut ntfs_mount = None;
        let mut fusectl_guard = None;
        let mount_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let mount_point = target_mount_point(work.path());
        let mut target: Box<dyn TargetTree> = match (fs, use_kernel_target) {
            (Fs::Fat32, false) => {
                Box::new(FatWriter::open(part.file().try_clone().map_err(part_err)?, part.path(), &tree.plan.entries)?)
            }
            (Fs::Fat32, true) | (Fs::Ntfs, true) => {
                let (fstype, opts) = match fs {
                    Fs::Fat32 => ("vfat", Some("utf8,shortname=mixed,errors=remount-ro")),
                    Fs::Ntfs => ("ntfs3", None),
                };
                let dev = part.path().to_string_lossy().into_owned();
                let m = MountGuard::mount(&dev, &mount_point, fstype, mount_flags, opts)?;
                let t = MountedTarget::new(m.path());
                target_mount = Some(m);
                Box::new(t)
            }
            (Fs::Ntfs, false) => {
                // Before the daemon exists, the supervisor starts holding our mount namespace (see
                // Worker::hold_for_fuse); fuseblk's connection is numbered after the block device.
                let rdev =
                    std::fs::metadata(part.path()).map(|m| std::os::unix::fs::MetadataExt::rdev(&m)).unwrap_or(0);
                let connection = crate::recover::fuse::connection_id(libc::major(rdev), libc::minor(rdev));
                // fusectl inside our namespace, so the supervisor can abort the connection should we get stuck.
                let fusectl =
                    MountGuard::mount("fusectl", &work.path().join("fusectl"), "fusectl", mount_flags, None).ok();
                let fusectl_path = fusectl.as_ref().map(|m| m.path().to_path_buf());
                fusectl_guard = fusectl;
                self.link.send(&Up::Fuse { connection, fusectl: fusectl_path })?;
                let m = NtfsMount::mount(part.path(), &mount_point, &work.path().join("ntfs-3g.log"))?;
                let t = MountedTarget::new(m.path());
                ntfs_mount = Some(m);
                Box::new(t)
            }
        };

        // Through a mount, files appear as they are written (said from the step's start, to be on the safe
        // side); the userspace writer writes the directories and FATs last, so until then the filesystem still
        // reads as empty.
        if use_kernel_target || fs == Fs::Ntfs {
            self.state = TargetState::FilesIncomplete;
        }
        self.enter(Step::Copy)?;
        let total = tree.plan.total_bytes();
        let mut last_sent = Instant::now();
        let link = &mut *self.link;
        let mut send_err = None;
        copy_tree(
            &tree,
            target.as_mut(),
            &mut |done| {
                if send_err.is_none() && (done == total || last_sent.elapsed() >= Duration::from_millis(100)) {
                    last_sent = Instant::now();
                    if let Err(e) = link.send(&Up::Progress { done, total }) {
                        send_err = Some(e);
                    }
                }
            },
            &stop_requested,
        )?;
        if let Some(e) = send_err {
            return Err(e.into());
        }
        self.link.send(&Up::Progress { done: total, total })?;
        target.finish(&tree.plan.entries).map_err(|e| WriteError::Copy(crate::copy::CopyError::Finish(e)))?;
        self.state = TargetState::BootIncomplete;

        if req.boot.bios() {
            self.enter(Step::BootBios)?;
            let core_path = work.path().join("core.img");
            helper::run("grub-mkimage", &bios::mkimage_args(&core_path), "grub-common")?;
            let core =
                std::fs::read(&core_path).map_err(|source| WriteError::Device { path: core_path.clone(), source })?;
            bios::install(&disk, &disk_path, &core)?;
        }
        let uefi_loader = uefi::find_loader(&tree.plan.entries).map(|e| e.path.clone());
        if req.boot.uefi() {
            self.enter(Step::BootUefi)?;
            match (&uefi_loader, bridge) {
                (None, _) => self
                    .link
                    .send(&Up::Warning("the ISO has no efi/boot/bootx64.efi: UEFI boot is not available".into()))?,
                (Some(p), None) => self.info(format!("UEFI: the stick boots through /{p}"))?,
                (Some(p), Some(b)) => {
                    self.write_bridge(&disk, &disk_path, b, part.file(), part.path(), work.path())?;
                    self.info(format!(
                        "UEFI: the FAT bridge partition ({} at {} MiB) chain-loads /{p} from NTFS",
                        human(b.size),
                        b.offset >> 20
                    ))?;
                    if req.uefi_ntfs_image.is_none() {
                        self.link.send(&Up::Warning(
                            "the UEFI bridge is a GRUB image woesafe built, which is not Secure Boot signed: this \
                             stick boots under UEFI only with Secure Boot off. For Secure Boot, use FAT32 (the \
                             default: --fs auto) or give a signed UEFI:NTFS image with --uefi-ntfs-image"
                                .into(),
                        ))?;
                    }
                }
            }
        }

        self.state = TargetState::NotFlushed;
        self.enter(Step::Flush)?;
        drop(target); // everything was written by finish(); what is left is the flush below
        if target_mount.is_none() && ntfs_mount.is_none() {
            part.file().sync_all().map_err(part_err)?;
        }

        self.enter(Step::Unmount)?;
        if let Some(m) = target_mount.take() {
            m.unmount()?;
        }
        if let Some(m) = ntfs_mount.take() {
            m.unmount(Duration::from_secs(600))?;
        }
        if let Some(m) = fusectl_guard.take() {
            m.unmount()?;
        }
        part.file().sync_all().map_err(part_err)?;
        drop(tree);
        if let Some(s) = scratch {
            s.close()?;
        }
        source.close()?;
        drop(part);
        disk.sync_all().map_err(dev_err)?;
        drop(disk);
        drop(disk_loop);
        self.state = TargetState::Complete;
        Ok(Some(Report {
            label,
            serial,
            table: req.table,
            partition_offset: main.offset,
            partition_size: main.size,
            dirs: layout.dirs,
            files: layout.files,
            bytes: total,
            bios: req.boot.bios(),
            uefi: req.boot.uefi() && uefi_loader.is_some(),
            source_driver: source_desc,
            target_driver: target_desc,
            fs,
            split: split_report,
            bridge: bridge.map(|b| (b.offset, b.size)),
            win7_loader_from_image: win7.map(|(_, image)| image),
        }))
    }

    /// Copy an ISO file into the scratch space (wimlib reads WIMs from files), with progress.
    fn stage_file(&mut self, source: &Source, index: usize, dest: &Path) -> Result<PathBuf, WriteError> {
        let entry = &source.entries()[index];
        let err = |source| WriteError::Scratch { what: format!("copying {} to scratch space", entry.path), source };
        let mut from = source.open(index).map_err(err)?;
        let mut to = File::create(dest).map_err(err)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        let mut last = Instant::now();
        loop {
            if stop_requested() {
                return Err(WriteError::Stopped);
            }
            let n = from.read(&mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n]).map_err(err)?;
            done += n as u64;
            if last.elapsed() >= Duration::from_millis(200) {
                last = Instant::now();
                self.link.send(&Up::Progress { done, total: entry.size })?;
            }
        }
        if done != entry.size {
            return Err(WriteError::Copy(crate::copy::CopyError::ShortRead {
                path: entry.path.clone(),
                expected: entry.size,
                got: done,
            }));
        }
        Ok(dest.to_path_buf())
    }

    /// Re-pack a WIM that cannot be split as it is (solid, LZMS, pipable, ...) into a plain one in scratch space:
    /// `wimlib-imagex export WIM all OUT --compress=LZX:20`, with wimlib's own progress.
    fn repack_wim(&mut self, wim: &Path, entry: &SourceEntry, scratch: &Path) -> Result<PathBuf, WriteError> {
        let out = scratch.join("repacked.wim");
        self.info(format!(
            "Re-packing {} ({}) into a plain WIM ({}) that can be split",
            entry.path,
            human(entry.size),
            wim::REPACK_COMPRESSION
        ))?;
        let compress = format!("--compress={}", wim::REPACK_COMPRESSION);
        let args: [&OsStr; 5] =
            ["export".as_ref(), wim.as_os_str(), "all".as_ref(), out.as_os_str(), compress.as_ref()];
        let started = Instant::now();
        let link = &mut *self.link;
        let mut sent = None;
        // wimlib prints "Archiving file data: X MiB of Y MiB (Z%) done" as it goes (in uncompressed bytes).
        let result = helper::run_watching("wimlib-imagex", &args, "wimtools", &mut |stdout| {
            let progress = wim::export_progress(stdout);
            // Only when it moved: a frame counts as movement for the stall watchdog.
            if progress.is_some() && progress != sent {
                sent = progress;
                if let Some((done, total)) = progress {
                    let _ = link.send(&Up::Progress { done, total });
                }
            }
        });
        if let Err(helper::HelperError::Failed { stderr, .. }) = &result
            && stderr.contains("No space left on device")
        {
            return Err(WriteError::ScratchFull { wim: entry.path.clone(), dir: self.req.scratch_dir.clone() });
        }
        result?;
        let size = std::fs::metadata(&out)
            .map_err(|source| WriteError::Scratch { what: "reading the re-packed WIM's size".into(), source })?
            .len();
        if let Some((_, total)) = sent {
            self.link.send(&Up::Progress { done: total, total })?;
        }
        self.info(format!(
            "Re-packed {} into {} in {:.0} s",
            entry.path,
            human(size),
            started.elapsed().as_secs_f64()
        ))?;
        Ok(out)
    }

    /// The parts of a re-packed WIM (read from scratch space while they are copied), or the WIM itself in
    /// place of the original when it fits FAT32 whole.
    fn split_repacked(&mut self, packed: &Path, entry: &SourceEntry, guid: [u8; 16]) -> Result<Vec<Added>, WriteError> {
        let err = |source| WriteError::Scratch { what: format!("reading {}", packed.display()), source };
        let size = std::fs::metadata(packed).map_err(err)?.len();
        if size <= FAT32_MAX_FILE {
            self.info(format!("The re-packed WIM fits FAT32 whole: it becomes {}", entry.path))?;
            return Ok(vec![Added {
                path: entry.path.clone(),
                size,
                mtime: entry.mtime,
                origin: Origin::Staged(packed.to_path_buf()),
            }]);
        }
        let plan = wimsplit::plan(&mut File::open(packed).map_err(err)?, PART_MIB << 20, guid)
            .map_err(|e| WriteError::Repacked { wim: entry.path.clone(), what: e.to_string() })?;
        if let Some(p) = plan.parts.iter().find(|p| p.size > FAT32_MAX_FILE) {
            return Err(WriteError::PartTooBig { part: wim::part_name("install", p.number.into()), size: p.size });
        }
        self.info(format!("It {}", split_summary(&plan)))?;
        Ok(plan_parts(entry, WimFrom::Staged(packed.to_path_buf()), &plan))
    }

    /// Windows 7: extract the UEFI boot manager from install.wim's x64 image into efi/boot/bootx64.efi, and
    /// check that it is a non-empty x86_64 PE program.
    fn extract_win7_loader(&mut self, wim: &Path, image: u32, scratch: &Path, mtime: i64) -> Result<Added, WriteError> {
        let dir = scratch.join("loader");
        std::fs::create_dir(&dir)
            .map_err(|source| WriteError::Scratch { what: "creating the loader directory".into(), source })?;
        let image_arg = image.to_string();
        let mut dest = OsString::from("--dest-dir=");
        dest.push(&dir);
        let args: [&OsStr; 7] = [
            "extract".as_ref(),
            wim.as_os_str(),
            image_arg.as_ref(),
            uefi::WIN7_LOADER_IN_WIM.as_ref(),
            &dest,
            "--no-acls".as_ref(),
            "--no-attributes".as_ref(),
        ];
        helper::run("wimlib-imagex", &args, "wimtools")?;
        // Never followed if it is a link, only a regular file, at most MAX_LOADER_BYTES; then kept in memory, so
        // the copy does not open the scratch file again.
        let data = uefi::read_extracted_loader(&dir.join("bootmgfw.efi"), uefi::WIN7_LOADER_IN_WIM)?;
        uefi::check_efi_x64(&data)
            .map_err(|what| crate::boot::uefi::UefiError::BadLoader { path: uefi::WIN7_LOADER_IN_WIM.into(), what })?;
        self.info(format!(
            "Windows 7: UEFI loader extracted from install.wim image {image} ({} bytes) as /{}",
            data.len(),
            uefi::UEFI_LOADER
        ))?;
        Ok(Added { path: uefi::UEFI_LOADER.into(), size: data.len() as u64, mtime, origin: Origin::Bytes(data) })
    }

    /// The UEFI bridge of an NTFS stick: the user's UEFI:NTFS image written as the partition, or a FAT
    /// partition with a GRUB EFI image that finds the NTFS volume by its serial number and chain-loads its
    /// efi/boot/bootx64.efi.
    fn write_bridge(
        &mut self,
        disk: &File,
        disk_path: &Path,
        bridge: mbr::PartitionSpan,
        ntfs_part: &File,
        ntfs_path: &Path,
        work: &Path,
    ) -> Result<(), WriteError> {
        let dev_err = |source| WriteError::Device { path: disk_path.into(), source };
        if let Some(img) = &self.req.uefi_ntfs_image {
            // Read and checked again: the file may have changed since the check before writing, and nothing
            // may be written past the bridge partition.
            let data = uefi::read_uefi_ntfs_image(img)?;
            if data.len() as u64 > bridge.size {
                return Err(uefi::UefiError::BadImage {
                    path: img.clone(),
                    what: format!("grew to {} bytes during the write (the bridge holds {})", data.len(), bridge.size),
                }
                .into());
            }
            disk.write_all_at(&data, bridge.offset).map_err(dev_err)?;
            return Ok(());
        }
        let uuid = ntfs::volume_uuid(ntfs_part, ntfs_path)?;
        let cfg = work.join("bridge.cfg");
        let efi = work.join("bridge.efi");
        std::fs::write(&cfg, uefi::bridge_cfg(&uuid))
            .map_err(|source| WriteError::Scratch { what: "writing the bridge configuration".into(), source })?;
        helper::run("grub-mkstandalone", &uefi::bridge_mkstandalone_args(&efi, &cfg), "grub-efi-amd64-bin")?;
        let lo = LoopDevice::attach(
            disk,
            disk_path,
            LoopWindow { offset: bridge.offset, size: bridge.size, read_only: false, direct_io: false },
        )?;
        let dev = lo.path().as_os_str();
        helper::run("mkfs.fat", &["-n".as_ref(), "UEFI_NTFS".as_ref(), dev], "dosfstools")?;
        helper::run("mmd", &["-i".as_ref(), dev, "::/EFI".as_ref(), "::/EFI/BOOT".as_ref()], "mtools")?;
        let to = OsStr::new("::/EFI/BOOT/BOOTX64.EFI");
        helper::run("mcopy", &[OsStr::new("-i"), dev, efi.as_os_str(), to], "mtools")?;
        lo.file().sync_all().map_err(|source| WriteError::Device { path: lo.path().into(), source })?;
        Ok(())
    }
}

/// An ISO file by path, in any letter case.
/// Where the stick's filesystem is mounted inside the worker's private directory (kernel drivers, ntfs-3g).
fn target_mount_point(work: &Path) -> PathBuf {
    work.join("target")
}

fn find_file(entries: &[SourceEntry], path: &str) -> Option<usize> {
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

/// Check the ISO's UEFI loader (read within uefi::MAX_LOADER_BYTES): `Ok(Some(problem))` when it is not an
/// x86_64 EFI application (a refusal); a read error is an error (a failure, not the ISO's fault as far as
/// anyone knows).
fn check_iso_loader(source: &Source, index: usize) -> Result<Option<LoaderProblem>, WriteError> {
    let entry = &source.entries()[index];
    let problem = |what: String| Some(LoaderProblem { path: entry.path.clone(), what });
    let too_big = || problem(format!("{} bytes; a UEFI loader is at most {}", entry.size, uefi::MAX_LOADER_BYTES));
    if entry.size > uefi::MAX_LOADER_BYTES {
        return Ok(too_big());
    }
    let read_err = |source| WriteError::ReadIsoFile { path: entry.path.clone(), source };
    let data = match crate::sys::argfile::read_capped(source.open(index).map_err(read_err)?, uefi::MAX_LOADER_BYTES)
        .map_err(read_err)?
    {
        Some(data) => data,
        None => return Ok(too_big()),
    };
    Ok(uefi::check_efi_x64(&data).err().and_then(problem))
}

fn inspect_wim(source: &Source, index: usize) -> Result<wim::WimInfo, String> {
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
fn plan_parts(wim_entry: &SourceEntry, from: WimFrom, plan: &wimsplit::SplitPlan) -> Vec<Added> {
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
fn split_summary(plan: &wimsplit::SplitPlan) -> String {
    let sizes: Vec<String> = plan.parts.iter().map(|p| human(p.size)).collect();
    format!("is split into {} parts while it is copied ({})", plan.parts.len(), sizes.join(", "))
}

/// The disk bytes a tree takes on the stick's main partition (`partition` bytes) with this filesystem.
fn needed_bytes(fs: Fs, entries: &[SourceEntry], partition: u64) -> u64 {
    match fs {
        Fs::Fat32 => fat::estimate_disk_bytes(entries, partition),
        Fs::Ntfs => ntfs::estimate_disk_bytes(entries),
    }
}

/// A GUID for a split set: 16 random bytes.
fn random_guid() -> [u8; 16] {
    let mut b = [0u8; 16];
    for chunk in b.chunks_mut(4) {
        chunk.copy_from_slice(&random_u32().to_le_bytes());
    }
    b
}
