//! The write itself, as the worker runs it inside its namespaces: read the ISO (the survey) → (supervisor
//! checks) → prepare → wipe → partition → format → mount → copy → boot code → flush → unmount, one function per
//! step (in the files beside this one). Every loop device and mount here is held by a guard that `execute` owns
//! and ends with the worker at the latest.

mod boot;
mod fill;
mod finish;
pub mod layout;
mod prepare;
pub mod survey;

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use nix::mount::MsFlags;

use crate::boot::{bios, uefi};
use crate::copy::SourceTree;
use crate::media::source::{Source, SourceError};
use crate::protocol::Channel;
use crate::protocol::{Down, Driver, Report, Step, TargetState, Up, WriteRequest};
use crate::stick::label;
use crate::stick::units::human;
use crate::sys::argfile::{self, ArgFileError, Want};
use crate::sys::helper;
use crate::sys::loopdev::{LoopDevice, LoopWindow, device_size};
use crate::sys::mount::MountGuard;
use crate::sys::stop::stop_requested;
use crate::tree::{StickTree, Tree};

use layout::Disk;
use survey::{Note, Survey, SurveyError, SurveyOptions};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot set up the worker's private directory {path}: {source}")]
    WorkDir { path: std::path::PathBuf, source: crate::sys::mount::MountError },
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The survey's errors (no room for a partition, an unplanned entry, an unreadable file on the ISO).
    #[error(transparent)]
    Survey(SurveyError),
    #[error("cannot open the target again: {0}")]
    ReopenTarget(#[source] crate::sys::argfile::ArgFileError),
    #[error("the target {path} was replaced after it was checked; nothing was written")]
    TargetReplaced { path: PathBuf },
    #[error("the target {path} changed size while we were preparing ({expected} → {found} bytes)")]
    SizeChanged { path: std::path::PathBuf, expected: u64, found: u64 },
    #[error("the target {path} changed its sector size while we were preparing ({expected} → {found} bytes)")]
    SectorSizeChanged { path: std::path::PathBuf, expected: u64, found: u64 },
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
        "the target {path} is too small with --ca2023's boot managers and fonts: {} needed, it has {}; nothing was \
         written. Use a bigger stick",
        human(*needed),
        human(*size)
    )]
    TooSmallWithCa2023 { path: PathBuf, size: u64, needed: u64 },
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
    #[error("the read-back after the write could not be done: {0}")]
    Verify(#[from] crate::verify::VerifyError),
}

impl WriteError {
    /// Whether this error is the orderly end of a stop request (at whatever depth it was noticed).
    fn is_stop(&self) -> bool {
        matches!(
            self,
            WriteError::Stopped
                | WriteError::Copy(crate::copy::CopyError::Stopped { .. })
                | WriteError::Helper(helper::HelperError::Stopped { .. })
                | WriteError::Verify(crate::verify::VerifyError::Stopped)
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
                    | WriteError::TooSmallWithCa2023 { .. }
                    | WriteError::Survey(SurveyError::NoRoom { .. })
                    | WriteError::PartTooBig { .. }
                    | WriteError::ScratchFull { .. }
                    | WriteError::Names(_)
                    | WriteError::Uefi(
                        uefi::UefiError::BadLoader { .. }
                            | uefi::UefiError::ExtractedLink { .. }
                            | uefi::UefiError::ExtractedKind { .. }
                            | uefi::UefiError::ExtractedTooBig { .. }
                            | uefi::UefiError::Ca2023Missing { .. }
                            | uefi::UefiError::Ca2023Bad { .. }
                            | uefi::UefiError::Ca2023Fonts { .. }
                    )
                    | WriteError::TargetReplaced { .. }
            ) || matches!(&e, WriteError::Source(s) if s.is_refusal());
            let refused = worker_refusal && job.state == TargetState::Untouched;
            Up::Failed { step: job.step, message: e.to_string(), state: job.state, refused }
        }
    }
}

pub(crate) fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return t.subsec_nanos() ^ (t.as_secs() as u32);
    }
    u32::from_le_bytes(b)
}

impl From<SurveyError> for WriteError {
    /// The survey's UEFI loader errors are the write's own (the same refusals in `run`); the rest stay the
    /// survey's.
    fn from(e: SurveyError) -> WriteError {
        match e {
            SurveyError::Uefi(e) => WriteError::Uefi(e),
            e => WriteError::Survey(e),
        }
    }
}

impl Job<'_> {
    /// The logical sector size the stick is laid out in.
    fn sector(&self) -> u64 {
        self.req.sector_size
    }

    /// Start a step: stop here if a stop was asked for; announce it; hold it for the test-only pause.
    fn enter(&mut self, step: Step) -> Result<(), WriteError> {
        if stop_requested() {
            return Err(WriteError::Stopped);
        }
        self.step = step;
        self.link.send(&Up::Step(step))?;
        if let Some((name, ms)) = &self.req.pause_at
            && name == step.name()
            && !crate::sys::stop::pause_unless_stopped(*ms)
        {
            return Err(WriteError::Stopped);
        }
        Ok(())
    }

    fn info(&mut self, msg: String) -> Result<(), WriteError> {
        Ok(self.link.send(&Up::Info(msg))?)
    }

    /// What the revocation check says of a UEFI program woesafe puts on the stick (see
    /// `survey::revocation_notes`), sent on; nothing where this PC has no Secure Boot databases.
    fn check_revocation(
        &mut self,
        fw: Option<&crate::boot::revocation::Firmware>,
        name: &str,
        data: &[u8],
        hint: &str,
    ) -> Result<(), WriteError> {
        let Some(fw) = fw else { return Ok(()) };
        for note in survey::revocation_notes(fw, name, data, hint) {
            self.link.send(&Up::from(note))?;
        }
        Ok(())
    }

    /// The write, step by step. Every guard is a local here, declared in the order it is made, so that on any
    /// error it is dropped in the reverse order: the writer, the mounts, the partition's loop device, the disk
    /// (and the image's loop device), the tree, the scratch space, the source, the private tmpfs.
    fn execute(&mut self) -> Result<Option<Report>, WriteError> {
        let work = self.work_dir()?;
        self.enter(Step::ReadIso)?;
        let source = self.open_source(&work)?;
        let s = self.read_iso(&source, &work)?;
        self.link.send(&Up::Inventory(Box::new(s.inventory.clone())))?;
        let target_id = match self.link.recv()? {
            Some(Down::Proceed { target }) => target,
            _ => return Ok(None),
        };
        let prepared = self.prepare(&source, &s, work.path())?;
        let scratch = prepared.scratch;
        let scratch_dev: Vec<String> = scratch.iter().map(crate::sys::staging::Staging::device_name).collect();
        let tree = Tree { plan: StickTree::build(source.entries(), &s.removed, &prepared.added), source: &source };
        self.check_prepared(&s, &tree.plan)?;

        let disk = self.open_target(&target_id)?;
        self.link.send(&Up::Devices([vec![disk.name()], scratch_dev.clone()].concat()))?;
        let parts = s.partitions;
        self.wipe(&disk, &parts)?;
        let label = self.req.label.clone().unwrap_or_else(|| label::derive(&s.volume_id));
        self.partition(&disk, &parts, s.fs, &label)?;
        let (part, serial) = self.format(&disk, parts.main, s.fs, &label, &scratch_dev)?;
        let (mut mounts, target) = self.mount(&s, &disk, &part, &tree, work.path())?;
        let mut target = target; // declared after the mounts: dropped before them
        let total = self.copy(&tree, target.as_mut(), s.names_target.mounted())?;
        if s.boot.bios() {
            self.boot_bios(&disk, work.path())?;
        }
        let uefi_loader = self.boot_uefi(&disk, &tree.plan, &s, &part, work.path())?;
        self.flush(target, &mounts, &part, &disk)?;
        self.unmount(&mut mounts, &part)?;
        drop(tree);
        if let Some(s) = scratch {
            s.close()?;
        }
        drop(part);
        disk.file.sync_all().map_err(disk.err())?;
        self.state = TargetState::Complete;
        let verified = match self.req.verify {
            false => None,
            true => match self.verify(&disk, &source, work.path()) {
                Ok(report) => Some(report),
                // A stop during the read-back: the write is complete, only its check was cut short.
                Err(e) if e.is_stop() || stop_requested() => None,
                Err(e) => return Err(e),
            },
        };
        source.close()?;
        drop(disk);
        Ok(Some(Report {
            label,
            serial,
            table: self.req.table,
            partition_offset: parts.main.offset,
            partition_size: parts.main.size,
            dirs: s.layout.dirs,
            files: s.layout.files,
            bytes: total,
            bios: s.boot.bios(),
            uefi: s.boot.uefi() && uefi_loader.is_some(),
            uefi_arch: uefi_loader.as_ref().and_then(|p| uefi::Arch::of_loader_path(p)).filter(|_| s.boot.uefi()),
            ca2023_from_image: s.ca2023.map(|(_, image)| image),
            source_driver: s.source_desc,
            target_driver: s.target_desc,
            fs: s.fs,
            split: prepared.split_report,
            bridge: parts.bridge.map(|b| (b.offset, b.size)),
            win7_loader_from_image: s.win7.map(|(_, image)| image),
            verified,
        }))
    }

    /// A private tmpfs over the directory the supervisor made: our mount points and scratch files live in it and
    /// vanish with the namespace, whatever happens.
    fn work_dir(&mut self) -> Result<MountGuard, WriteError> {
        let req = self.req;
        MountGuard::mount(
            "woesafe-work",
            &req.work_dir,
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0700,size=64m"),
        )
        .map_err(|source| WriteError::WorkDir { path: req.work_dir.clone(), source })
    }

    /// ReadIso, first half: open the ISO. It is untrusted input, and the kernel's udf/isofs parse it in ring 0 (a
    /// long CVE history with crafted images): auto reads it in userspace; the kernel only on request, after the
    /// userspace parse.
    fn open_source(&mut self, work: &MountGuard) -> Result<Source, WriteError> {
        let req = self.req;
        Ok(match req.source_driver {
            Driver::Kernel => Source::open_kernel(&req.iso, &req.iso_id, &work.path().join("source"))?,
            Driver::Userspace | Driver::Auto => Source::open_userspace(&req.iso, &req.iso_id)?,
        })
    }

    /// ReadIso, second half: the survey, its notes sent as they come.
    fn read_iso(&mut self, source: &Source, work: &MountGuard) -> Result<Survey, WriteError> {
        let req = self.req;
        let opts = SurveyOptions {
            target: req.target.clone(),
            target_size: req.target_size,
            sector_size: req.sector_size,
            fs: req.fs,
            boot: req.boot,
            boot_asked: req.boot_asked,
            ca2023: req.ca2023,
            table: req.table,
            label: req.label.clone(),
            setup: req.setup.clone(),
            source_driver: req.source_driver,
            target_driver: req.target_driver,
            scratch_dir: req.scratch_dir.clone(),
            uefi_ntfs_image: req.uefi_ntfs_image.clone(),
            mount_point_bytes: survey::target_mount_point(work.path()).as_os_str().len(),
        };
        let link = &mut *self.link;
        survey::survey_with(source, &opts, &mut |note: Note| -> Result<(), WriteError> {
            Ok(link.send(&Up::from(note))?)
        })
    }

    /// The disk: the block device itself, or the image file on an autoclear loop device. Either must be the very
    /// file the supervisor checked and holds locked (device and inode): a path that now leads elsewhere, through
    /// a symbolic link or not, is refused; one that still leads to it (a link the user gave) is fine. The first
    /// and only place the target is opened for writing, after Down::Proceed.
    fn open_target(&mut self, target_id: &argfile::FileId) -> Result<Disk, WriteError> {
        let req = self.req;
        let want = if req.target_is_image { Want::Regular } else { Want::RegularOrBlock };
        let target_file = argfile::reopen(&req.target, want, true, 0, target_id).map_err(|e| match e {
            ArgFileError::ReplacedSinceCheck { path } => WriteError::TargetReplaced { path },
            e => WriteError::ReopenTarget(e),
        })?;
        let (file, path, loop_dev, image) = if req.target_is_image {
            let l =
                // 512-byte sectors, as an image is laid out: with direct I/O the kernel would otherwise give the
                // loop device the sector size of the disk under the image (4096 on a 4Kn drive).
                LoopDevice::attach_with_block_size(
                    &target_file,
                    &req.target,
                    LoopWindow { direct_io: true, ..Default::default() },
                    512,
                )?;
            let file = l.file().try_clone().map_err(|source| WriteError::Device { path: l.path().into(), source })?;
            let path = l.path().to_path_buf();
            (file, path, Some(l), Some(target_file))
        } else {
            (target_file, req.target.clone(), None, None)
        };
        let disk = Disk { file, path, _loop_dev: loop_dev, _image: image, size: 0 };
        let found = device_size(&disk.file).map_err(disk.err())?;
        if found != req.target_size {
            return Err(WriteError::SizeChanged { path: req.target.clone(), expected: req.target_size, found });
        }
        // An image is laid out in 512-byte sectors whatever its loop device says; a disk in its own.
        if !req.target_is_image {
            let sector = crate::sys::loopdev::logical_sector_size(&disk.file).map_err(disk.err())?;
            if sector != req.sector_size {
                return Err(WriteError::SectorSizeChanged {
                    path: req.target.clone(),
                    expected: req.sector_size,
                    found: sector,
                });
            }
        }
        Ok(Disk { size: found, ..disk })
    }
}
