//! The write itself, as the worker runs it inside its namespaces: read the ISO → (supervisor checks) → wipe →
//! partition → format → copy → boot code → flush → unmount. Every loop device and mount here is held by a
//! guard and ends with the worker at the latest.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;

use crate::boot::bios;
use crate::copy::{SourceTree, TargetTree, copy_tree};
use crate::media::SourceEntry;
use crate::media::source::{self, Source, SourceError};
use crate::sys::loopdev::{LoopDevice, LoopWindow, device_size};
use crate::sys::mount::MountGuard;
use crate::target::fat::{self, MountedTarget};
use crate::target::fatwrite::FatWriter;
use crate::target::safety::Inventory;
use crate::target::{label, mbr};
use crate::worker::frame::{Down, Driver, Report, Step, Table, TargetState, Up, WriteRequest};
use crate::worker::helper;
use crate::worker::init::{Link, stop_requested};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot set up the worker's private directory {path}: {source}")]
    WorkDir { path: std::path::PathBuf, source: crate::sys::mount::MountError },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("the target {path} ({size} bytes) has no room for a partition")]
    NoRoom { path: std::path::PathBuf, size: u64 },
    #[error("cannot open the target {path}: {source}")]
    OpenTarget {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    Fat(#[from] crate::target::fatwrite::FatWriteError),
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
    Frame(#[from] crate::worker::frame::FrameError),
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
    link: &'a mut Link,
    step: Step,
    state: TargetState,
}

/// Run the whole write; the returned frame is the last one the worker sends.
pub fn run(req: &WriteRequest, link: &mut Link) -> Up {
    let mut job = Job { req, link, step: Step::ReadIso, state: TargetState::Untouched };
    match job.execute() {
        Ok(Some(report)) => Up::Done(Box::new(report)),
        Ok(None) => Up::Aborted,
        Err(e) if e.is_stop() || stop_requested() => Up::Stopped { step: job.step, state: job.state },
        Err(e) => Up::Failed { step: job.step, message: e.to_string(), state: job.state, refused: false },
    }
}

/// What woesafe adds to the ISO's tree: the directories it needs and files with their content — GRUB's
/// boot/grub/grub.cfg for BIOS boot, autounattend.xml for Windows 11 setup options. A file the ISO already has
/// (in any letter case: FAT and GRUB ignore case) is replaced, never copied and then overwritten.
struct Additions {
    dirs: Vec<SourceEntry>,
    files: Vec<(SourceEntry, Vec<u8>)>,
}

impl Additions {
    fn new(entries: &[SourceEntry], bios: bool, answer_file: Option<&str>) -> Additions {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        let mut add = Additions { dirs: Vec::new(), files: Vec::new() };
        let existing = |want: &str, dir: bool| {
            entries.iter().find(|e| e.is_dir == dir && e.path.eq_ignore_ascii_case(want)).map(|e| e.path.clone())
        };
        if bios {
            let mut parent = String::new();
            for name in ["boot", "grub"] {
                let want = if parent.is_empty() { name.to_string() } else { format!("{parent}/{name}") };
                parent = match existing(&want, true) {
                    Some(p) => p,
                    None => {
                        add.dirs.push(SourceEntry { path: want.clone(), is_dir: true, size: 0, mtime: now });
                        want
                    }
                };
            }
            let cfg = existing(&format!("{parent}/grub.cfg"), false).unwrap_or(format!("{parent}/grub.cfg"));
            let content = bios::GRUB_CFG.as_bytes().to_vec();
            add.files.push((SourceEntry { path: cfg, is_dir: false, size: content.len() as u64, mtime: now }, content));
        }
        if let Some(xml) = answer_file {
            let path = existing(crate::media::unattend::FILE_NAME, false)
                .unwrap_or_else(|| crate::media::unattend::FILE_NAME.to_string());
            let content = xml.as_bytes().to_vec();
            add.files.push((SourceEntry { path, is_dir: false, size: content.len() as u64, mtime: now }, content));
        }
        add
    }

    /// Whether the ISO's entry is replaced by one of ours.
    fn replaces(&self, e: &SourceEntry) -> bool {
        !e.is_dir && self.files.iter().any(|(f, _)| f.path.eq_ignore_ascii_case(&e.path))
    }

    /// The whole tree as it will be on the stick (parents before children).
    fn planned(&self, entries: &[SourceEntry]) -> Vec<SourceEntry> {
        let mut out: Vec<SourceEntry> = entries.iter().filter(|e| !self.replaces(e)).cloned().collect();
        out.extend(self.dirs.iter().cloned());
        out.extend(self.files.iter().map(|(f, _)| f.clone()));
        out
    }
}

/// The source minus the files our additions replace.
struct Without<'a> {
    inner: &'a Source,
    entries: Vec<SourceEntry>,
    index: Vec<usize>,
}

impl<'a> Without<'a> {
    fn new(inner: &'a Source, add: &Additions) -> Self {
        let (entries, index) =
            inner.entries().iter().enumerate().filter(|(_, e)| !add.replaces(e)).map(|(i, e)| (e.clone(), i)).unzip();
        Without { inner, entries, index }
    }
}

impl SourceTree for Without<'_> {
    fn entries(&self) -> &[SourceEntry] {
        &self.entries
    }
    fn open(&self, index: usize) -> std::io::Result<Box<dyn Read + '_>> {
        self.inner.open(self.index[index])
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
        let use_kernel_source = match req.source_driver {
            Driver::Kernel => true,
            Driver::Userspace => false,
            // Windows ISOs keep their files in UDF: the kernel reader only when the kernel offers udf.
            Driver::Auto => source::kernel_has("udf"),
        };
        let source = if use_kernel_source {
            Source::open_kernel(&req.iso, &work.path().join("source"))?
        } else {
            Source::open_userspace(&req.iso)?
        };
        let use_kernel_target = match req.target_driver {
            Driver::Kernel => true,
            Driver::Userspace => false,
            Driver::Auto => source::kernel_has("vfat"),
        };
        let source_desc = source.describe();
        let target_desc =
            if use_kernel_target { "vfat (kernel mount)" } else { "FAT32 (userspace writer)" }.to_string();
        if req.source_driver == Driver::Auto || req.target_driver == Driver::Auto {
            self.info(format!("Drivers: source {source_desc}, target {target_desc} (auto: from /proc/filesystems)"))?;
        }

        let span = match req.table {
            Table::Mbr => mbr::partition_span(req.target_size),
            Table::Gpt => crate::target::gpt::partition_span(req.target_size),
        }
        .ok_or(WriteError::NoRoom { path: req.target.clone(), size: req.target_size })?;
        let entries = source.entries();
        let layout = source::layout(entries);
        let answer_file =
            crate::media::unattend::answer_file(&req.bypass, crate::media::unattend::architecture(entries));
        let additions = Additions::new(entries, req.boot.bios(), answer_file.as_deref());
        if answer_file.is_some() {
            let names: Vec<String> = req.bypass.iter().map(|b| format!("{b:?}").to_lowercase()).collect();
            self.info(format!("Windows 11 setup options: autounattend.xml bypassing {}", names.join(", ")))?;
        }
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
            needed_bytes: fat::estimate_disk_bytes(entries, span.size),
            fat_problem: crate::target::fatwrite::check_tree(&additions.planned(entries)).err().map(|e| e.to_string()),
            has_answer_file: entries
                .iter()
                .any(|e| !e.is_dir && e.path.eq_ignore_ascii_case(crate::media::unattend::FILE_NAME)),
        };
        self.link.send(&Up::Inventory(Box::new(inventory)))?;
        match self.link.recv()? {
            Some(Down::Proceed) => {}
            _ => return Ok(None),
        }

        // The disk: the block device itself, or the image file on an autoclear loop device.
        let target_file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&req.target)
            .map_err(|source| WriteError::OpenTarget { path: req.target.clone(), source })?;
        let disk_loop = if req.target_is_image {
            Some(LoopDevice::attach(&target_file, &req.target, LoopWindow::default())?)
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
        self.link.send(&Up::Devices(vec![disk_name.clone()]))?;
        self.enter(Step::Wipe)?;
        self.state = TargetState::Wiped;
        zero_range(&disk, &disk_path, 0, 1 << 20)?;
        zero_range(&disk, &disk_path, span.offset, (1u64 << 20).min(span.size))?;
        let tail = found.saturating_sub(1 << 20).max(span.offset + (1 << 20));
        zero_range(&disk, &disk_path, tail, found.saturating_sub(tail))?;

        self.enter(Step::Partition)?;
        match req.table {
            Table::Mbr => {
                let table = mbr::build(span, random_u32(), mbr::PART_TYPE_FAT32_LBA);
                disk.write_all_at(&table, 0).map_err(dev_err)?;
            }
            Table::Gpt => {
                let guid = || {
                    let mut b = [0u8; 16];
                    for chunk in b.chunks_mut(4) {
                        chunk.copy_from_slice(&random_u32().to_le_bytes());
                    }
                    crate::target::gpt::random_guid(b)
                };
                let name = req.label.clone().unwrap_or_else(|| label::derive(&volume_id));
                for (offset, bytes) in crate::target::gpt::build(found, span, guid(), guid(), &name) {
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
            LoopWindow { offset: span.offset, size: span.size, read_only: false },
        )?;
        let part_name = part.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.link.send(&Up::Devices(vec![disk_name, part_name]))?;
        let label = req.label.clone().unwrap_or_else(|| label::derive(&volume_id));
        let serial = random_u32();
        let args = fat::mkfs_args(part.path(), span.size, &label, serial, span.offset / mbr::SECTOR);
        helper::run("mkfs.fat", &args, "dosfstools")?;
        self.state = TargetState::Formatted;

        self.enter(Step::Mount)?;
        let part_err = |source| WriteError::Device { path: part.path().into(), source };
        let mut target_mount = None;
        let mut target: Box<dyn TargetTree> = if use_kernel_target {
            let dev = part.path().to_string_lossy().into_owned();
            let m = MountGuard::mount(
                &dev,
                &work.path().join("target"),
                "vfat",
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("utf8,shortname=mixed,errors=remount-ro"),
            )?;
            let t = MountedTarget::new(m.path());
            target_mount = Some(m);
            Box::new(t)
        } else {
            let planned = additions.planned(entries);
            Box::new(FatWriter::open(part.file().try_clone().map_err(part_err)?, part.path(), &planned)?)
        };

        self.enter(Step::Copy)?;
        // Through a mount, files appear as they are written; the userspace writer writes the directories and
        // FATs last, so until then the filesystem still reads as empty.
        if use_kernel_target {
            self.state = TargetState::FilesIncomplete;
        }
        let total = layout.total_bytes;
        let mut last_sent = Instant::now();
        let link = &mut *self.link;
        let mut send_err = None;
        // With BIOS boot our grub.cfg replaces any the ISO brings (it is written after the copy).
        let copied = Without::new(&source, &additions);
        copy_tree(
            &copied,
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
        // Our own files: GRUB's configuration, the answer file.
        for d in &additions.dirs {
            target
                .create_dir(&d.path, d.mtime)
                .map_err(|source| WriteError::AddedFile { path: d.path.clone(), source })?;
        }
        for (f, content) in &additions.files {
            let err = |source| WriteError::AddedFile { path: f.path.clone(), source };
            let mut w = target.create_file(&f.path, f.mtime, f.size).map_err(err)?;
            w.write_all(content).map_err(err)?;
            w.flush().map_err(err)?;
        }
        target.finish(entries).map_err(|e| WriteError::Copy(crate::copy::CopyError::Finish(e)))?;
        self.state = TargetState::BootIncomplete;

        if req.boot.bios() {
            self.enter(Step::BootBios)?;
            let core_path = work.path().join("core.img");
            helper::run("grub-mkimage", &bios::mkimage_args(&core_path), "grub-common")?;
            let core =
                std::fs::read(&core_path).map_err(|source| WriteError::Device { path: core_path.clone(), source })?;
            bios::install(&disk, &disk_path, &core)?;
        }
        self.state = TargetState::NotFlushed;
        if req.boot.uefi() {
            self.enter(Step::BootUefi)?;
            let loader = crate::boot::uefi::find_loader(entries).map(|e| e.path.clone());
            match loader {
                Some(p) => self.info(format!("UEFI: the stick boots through the ISO's /{p}"))?,
                None => self
                    .link
                    .send(&Up::Warning("the ISO has no efi/boot/bootx64.efi: UEFI boot is not available".into()))?,
            }
        }

        self.enter(Step::Flush)?;
        drop(target); // everything was written by finish(); what is left is the flush below
        if target_mount.is_none() {
            part.file().sync_all().map_err(part_err)?;
        }

        self.enter(Step::Unmount)?;
        if let Some(m) = target_mount.take() {
            m.unmount()?;
            part.file().sync_all().map_err(part_err)?;
        }
        source.close()?;
        drop(part);
        disk.sync_all().map_err(dev_err)?;
        drop(disk);
        drop(disk_loop);
        self.state = TargetState::Complete;
        Ok(Some(Report {
            label,
            serial: format!("{:04X}-{:04X}", serial >> 16, serial & 0xFFFF),
            table: req.table,
            partition_offset: span.offset,
            partition_size: span.size,
            dirs: layout.dirs,
            files: layout.files,
            bytes: total,
            bios: req.boot.bios(),
            uefi: req.boot.uefi() && layout.has_uefi_loader,
            source_driver: source_desc,
            target_driver: target_desc,
        }))
    }
}
