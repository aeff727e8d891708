//! The supervisor as a library type: `Write::new(iso, target, options).run(&mut observer, &stop)` checks the
//! arguments and the target, starts the worker in its own namespaces, follows it (progress, the content checks
//! and the confirmation, the stall watchdog, stop escalation) and reports typed events and one outcome. The
//! command line only presents the events (`cli::write`); a GUI or a test can do the same.

pub mod event;
mod follow;
pub mod target;
pub mod verify;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use event::{Confirmation, Event, Observer, StopHandle, signal_name};

use crate::boot::BootMode;
use crate::cli::term;
use crate::exit::{self, Exit, fail};
use crate::media::unattend::SetupOptions;
use crate::protocol::{Driver, Report, Step, Table, TargetState, WriteRequest};
use crate::stick::choose::FsRequest;
use crate::stick::disk::{self, TargetFacts};
use crate::stick::label;
use crate::stick::safety::{self, Inventory};
use crate::stick::units::human;
use target::Access;

/// What to write and how: the library's form of `woesafe write`'s options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// Size of a new image file in bytes (an existing image keeps its size; a block device has its own).
    pub size: Option<u64>,
    /// Filesystem label (checked here), or None to derive it from the ISO's volume id.
    pub label: Option<String>,
    pub fs: FsRequest,
    /// NTFS sticks: this UEFI:NTFS image as the bridge partition instead of the GRUB bridge.
    pub uefi_ntfs_image: Option<PathBuf>,
    /// Which firmware the stick boots on; None: both with MBR, UEFI with GPT.
    pub boot: Option<BootMode>,
    pub table: Table,
    pub source_driver: Driver,
    pub target_driver: Driver,
    /// Allow a disk that is not removable (a fixed disk, on USB or not); with `setup`, replace the ISO's own answer file.
    pub force: bool,
    /// The answer file's options (--bypass, --local-account, --regional, --no-data-collection, --no-bitlocker).
    pub setup: SetupOptions,
    /// Put the boot managers signed by the Windows UEFI CA 2023 (from boot.wim) in place of the ISO's.
    pub ca2023: bool,
    /// No byte moving for this long is a stall.
    pub stall_timeout: Duration,
    /// Run every check and report the plan; open the target read-only, write nothing.
    pub dry_run: bool,
    /// After the write, read the stick back from the device and compare it with the ISO.
    pub verify: bool,
}

impl Default for WriteOptions {
    fn default() -> WriteOptions {
        WriteOptions {
            size: None,
            label: None,
            fs: FsRequest::Auto,
            uefi_ntfs_image: None,
            boot: None,
            table: Table::Mbr,
            source_driver: Driver::Auto,
            target_driver: Driver::Auto,
            force: false,
            setup: SetupOptions::default(),
            ca2023: false,
            stall_timeout: Duration::from_secs(120),
            dry_run: false,
            verify: false,
        }
    }
}

impl WriteOptions {
    /// The boot mode asked for, or its default for the table: both with MBR, uefi with GPT.
    pub fn boot_mode(&self) -> BootMode {
        self.boot.unwrap_or(match self.table {
            Table::Mbr => BootMode::Both,
            Table::Gpt => BootMode::Uefi,
        })
    }

    /// The boot mode for this target: as `boot_mode`, but uefi by default on a disk whose sectors are not 512
    /// bytes (BIOS firmware reads 512-byte sectors only; see `bios_refusal`).
    pub fn boot_mode_for(&self, facts: &TargetFacts) -> BootMode {
        match (self.boot, facts.sector_size()) {
            (None, s) if s != 512 => BootMode::Uefi,
            _ => self.boot_mode(),
        }
    }
}

/// Why BIOS boot cannot be asked for on a disk of `sector`-byte sectors, if it cannot: SeaBIOS drops a disk
/// whose block size is not 512 ("unsupported block size"), PC BIOSes' INT 13h reads 512-byte sectors, and
/// GRUB's core image sits in 512-byte sectors of the MBR gap.
pub fn bios_refusal(boot: Option<BootMode>, sector: u64, path: &Path) -> Option<String> {
    (sector != 512 && boot.is_some_and(BootMode::bios)).then(|| {
        format!(
            "{} has {sector}-byte sectors, which BIOS firmware cannot boot from (it reads 512-byte sectors only): \
             use --boot uefi, or a stick with 512-byte sectors for BIOS",
            term::path(path)
        )
    })
}

/// How a write that did not fail ended.
#[derive(Debug)]
pub enum Outcome {
    /// Written; the report says what the stick holds.
    Written(Box<Report>),
    /// A dry run: every check passed; this is what a write would do.
    Planned(Box<Inventory>),
    /// The user did not confirm; nothing was written.
    Declined,
}

/// One write of one ISO to one target.
#[derive(Debug, Clone)]
pub struct Write {
    iso: PathBuf,
    target: PathBuf,
    options: WriteOptions,
    /// The program that runs as the worker (`PROGRAM __woesafe_worker`); None: this program.
    worker_exe: Option<PathBuf>,
}

/// What a run knows while it goes: the step reached (for the target's state), the steps' count.
struct Progress {
    last_step: Option<Step>,
    step_no: usize,
    steps: usize,
    step_started: Instant,
    /// The target's state as the worker reported it when it ended early.
    reported: Option<TargetState>,
}

impl Write {
    pub fn new(iso: impl Into<PathBuf>, target: impl Into<PathBuf>, options: WriteOptions) -> Write {
        Write { iso: iso.into(), target: target.into(), options, worker_exe: None }
    }

    /// Run the worker from `program` (the woesafe binary) instead of this program: for a program that uses the
    /// library but does not call `worker::init::main` for `__woesafe_worker` itself.
    pub fn worker_program(mut self, program: impl Into<PathBuf>) -> Write {
        self.worker_exe = Some(program.into());
        self
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Run the write to its end. Every ending is also reported as an event: `Done`, `Planned`, or `Failed` /
    /// `Stopped` with the exit code and the target's state. A stop asked for through `stop` (a signal the
    /// caller caught) is orderly the first time and immediate the second.
    pub fn run(&self, observer: &mut dyn Observer, stop: &StopHandle) -> Result<Outcome, Exit> {
        let started = Instant::now();
        let boot = self.options.boot_mode();
        // (recounted once the target is known: a 4096-byte-sector disk drops BIOS boot by default)
        let mut progress = Progress {
            last_step: None,
            step_no: 0,
            steps: 10 - usize::from(!boot.bios()) - usize::from(!boot.uefi()) + usize::from(self.options.verify),
            step_started: Instant::now(),
            reported: None,
        };
        let result = self.run_inner(observer, stop, &mut progress);
        match &result {
            Ok(Outcome::Written(report)) => {
                observer.event(&Event::Done { report: report.clone(), seconds: started.elapsed().as_secs_f64() })
            }
            Ok(Outcome::Planned(inventory)) => observer.event(&Event::Planned { inventory: inventory.clone() }),
            Ok(Outcome::Declined) => {}
            Err(e) => {
                let target_state = TargetState::when_stopped_in(progress.last_step);
                match stop.requested().filter(|_| e.code >= 128) {
                    Some(signal) => observer.event(&Event::Stopped {
                        signal,
                        message: e.message.clone(),
                        exit_code: e.code,
                        target_state: progress.reported.unwrap_or(target_state),
                    }),
                    // A stall was reported when it happened (its message is empty here).
                    None if e.message.is_empty() => {}
                    None => observer.event(&Event::Failed {
                        message: e.message.clone(),
                        exit_code: e.code,
                        target_state: progress.reported.unwrap_or(target_state),
                    }),
                }
            }
        }
        result
    }

    fn run_inner(
        &self,
        observer: &mut dyn Observer,
        stop: &StopHandle,
        progress: &mut Progress,
    ) -> Result<Outcome, Exit> {
        let opts = &self.options;
        let (facts, target_size, iso_id, label) = self.check_arguments(observer)?;
        let boot = opts.boot_mode_for(&facts);
        if boot != opts.boot_mode() {
            progress.steps -= 1;
            observer.event(&Event::Note {
                message: format!(
                    "Note: {} has {}-byte sectors, which BIOS firmware cannot boot from: the stick boots under UEFI \
                     only",
                    term::path(&self.target),
                    facts.sector_size()
                ),
            });
        }
        let access = if opts.dry_run { Access::Look } else { Access::Write };
        // An existing image file is locked first, so that a second writer hears "busy" rather than a complaint
        // about the first writer's loop device; a block device is checked first (opening it exclusively would
        // turn every other refusal into "busy"); a new image file is created only once everything has passed.
        let mut lock = match facts {
            TargetFacts::Image { exists: true, .. } => {
                target::open_and_lock(&facts, &self.target, target_size, access)?
            }
            _ => None,
        };
        let host = disk::host_facts(&self.iso).map_err(|e| fail(exit::FAILED, e))?;
        safety::check_target(&facts, &host, &crate::sys::loopdev::attached_paths(), &self.iso, opts.force)
            .map_err(|e| fail(exit::REFUSED, e))?;
        if boot.bios() {
            crate::boot::bios::check_grub_installed().map_err(|e| fail(exit::FAILED, e))?;
        }
        if let TargetFacts::Block(_) = facts {
            lock = target::open_and_lock(&facts, &self.target, target_size, access)?;
        }
        observer.event(&Event::Target { description: target::describe_target(&facts, target_size), size: target_size });
        let work_dir = target::make_work_dir()?;
        let request = self.request(&facts, iso_id, label, target_size, &work_dir);
        let result = follow::supervise(self, &facts, request, &mut lock, observer, stop, progress);
        // The worker is gone, and with it its private mounts: the directory is empty and unmounted here.
        let _ = std::fs::remove_dir(&work_dir);
        // A new image file that ended untouched (stopped or failed before the wipe, e.g. while preparing the
        // WIM) goes again: "the target was not changed" must hold for a file that did not exist either.
        if matches!(facts, TargetFacts::Image { exists: false, .. })
            && !matches!(result, Ok(Outcome::Written(_)))
            && matches!(progress.last_step, None | Some(Step::ReadIso) | Some(Step::Prepare))
            && let Some(f) = lock.take()
        {
            target::remove_if_same(&f, &self.target);
        }
        if let (Ok(Outcome::Written(_)), Some(f)) = (&result, lock.as_ref()) {
            f.sync_all().map_err(|e| fail(exit::FAILED, format!("cannot flush {}: {e}", term::path(&self.target))))?;
            if let TargetFacts::Block(_) = facts {
                // Have the kernel read the new partition table, from the fd that holds the disk exclusively
                // (from any other fd the kernel answers EBUSY while we hold it). Failure only delays it to the
                // next plug-in.
                let _ = crate::sys::loopdev::reread_partitions(f);
            }
        }
        result
    }

    /// The checks of the options and files that need neither the worker nor the ISO's content: returns the
    /// target's facts, its size, the ISO's identity and the checked label.
    fn check_arguments(
        &self,
        observer: &mut dyn Observer,
    ) -> Result<(TargetFacts, u64, crate::sys::argfile::FileId, Option<String>), Exit> {
        let opts = &self.options;
        if opts.table == Table::Gpt && opts.boot.is_some_and(BootMode::bios) {
            return Err(fail(
                exit::USAGE,
                "--table gpt makes a UEFI-only stick (GRUB's BIOS boot code lives in the MBR's gap, and BIOS \
                 firmware does not boot GPT sticks this way): use --boot uefi, or --table mbr for BIOS",
            ));
        }
        if let Some(img) = &opts.uefi_ntfs_image {
            if opts.fs == FsRequest::Fat32 {
                return Err(fail(
                    exit::USAGE,
                    "--uefi-ntfs-image is for NTFS sticks (FAT32 sticks boot UEFI directly); drop it, or use --fs \
                     ntfs",
                ));
            }
            if !opts.boot_mode().uefi() {
                return Err(fail(exit::USAGE, "--uefi-ntfs-image is for UEFI boot; drop it, or leave out --boot bios"));
            }
            crate::boot::uefi::check_uefi_ntfs_image(img)
                .map_err(|e| fail(exit::USAGE, format!("--uefi-ntfs-image: {e}")))?;
        }
        let label = match &opts.label {
            Some(l) => Some(label::validate(l).map_err(|e| fail(exit::USAGE, format!("--label: {e}")))?),
            None => None,
        };
        // The worker opens the ISO again and must find this very file.
        let iso_id = target::check_iso(&self.iso)?;
        let facts = disk::target_facts(&self.target).map_err(|e| fail(exit::USAGE, e))?;
        if let Some(why) = bios_refusal(opts.boot, facts.sector_size(), &self.target) {
            return Err(fail(exit::REFUSED, why));
        }
        let target_size = match (&facts, opts.size) {
            (TargetFacts::Block(_), Some(_)) => {
                return Err(fail(exit::USAGE, "--size applies to image files only; a block device keeps its size"));
            }
            (TargetFacts::Block(b), None) => b.size,
            (TargetFacts::Image { exists: true, size, path, .. }, _) => {
                if size % 512 != 0 {
                    return Err(fail(
                        exit::USAGE,
                        format!(
                            "{} is {size} bytes, not a whole number of 512-byte sectors; resize it (e.g. `truncate \
                             -s 8G`)",
                            term::path(path)
                        ),
                    ));
                }
                *size
            }
            (TargetFacts::Image { exists: false, path, .. }, None) => {
                return Err(fail(
                    exit::USAGE,
                    format!(
                        "{} does not exist: give --size (e.g. --size 8G) to create an image file",
                        term::path(path)
                    ),
                ));
            }
            (TargetFacts::Image { exists: false, .. }, Some(s)) => s,
        };
        if let (TargetFacts::Image { exists: true, .. }, Some(s)) = (&facts, opts.size)
            && s != target_size
        {
            observer.event(&Event::Note {
                message: format!(
                    "Note: {} exists; it keeps its size of {} (--size is for new image files)",
                    term::path(&self.target),
                    human(target_size)
                ),
            });
        }
        Ok((facts, target_size, iso_id, label))
    }

    fn request(
        &self,
        facts: &TargetFacts,
        iso_id: crate::sys::argfile::FileId,
        label: Option<String>,
        target_size: u64,
        work_dir: &Path,
    ) -> WriteRequest {
        let opts = &self.options;
        WriteRequest {
            iso: std::fs::canonicalize(&self.iso).unwrap_or_else(|_| self.iso.clone()),
            iso_id,
            target: self.target.clone(),
            target_is_image: matches!(facts, TargetFacts::Image { .. }),
            target_size,
            sector_size: facts.sector_size(),
            label,
            boot: opts.boot_mode_for(facts),
            boot_asked: opts.boot.is_some(),
            ca2023: opts.ca2023,
            table: opts.table,
            source_driver: opts.source_driver,
            target_driver: opts.target_driver,
            work_dir: work_dir.to_path_buf(),
            setup: opts.setup.clone(),
            fs: opts.fs,
            scratch_dir: target::scratch_dir(),
            uefi_ntfs_image: opts
                .uefi_ntfs_image
                .as_ref()
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
            pause_at: test_pause_at(),
            verify: opts.verify,
        }
    }
}

/// Test builds only: hold the worker at the entry of a step (`WOESAFE_TEST_PAUSE_AT=step:ms`), so that a
/// test can aim a signal or a stall at it. The binary users build with `--release` has no such hook.
#[cfg(debug_assertions)]
pub(crate) fn test_pause_at() -> Option<(String, u64)> {
    let v = std::env::var("WOESAFE_TEST_PAUSE_AT").ok()?;
    let (step, ms) = v.split_once(':')?;
    Some((step.to_string(), ms.parse().ok()?))
}

#[cfg(not(debug_assertions))]
pub(crate) fn test_pause_at() -> Option<(String, u64)> {
    None
}
