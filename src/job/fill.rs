//! Filling the stick: the Mount step (woesafe's FAT writer, on an image's disk at the partition's offset; a
//! kernel mount; or ntfs-3g with fusectl beside it, each held by a guard in `Mounts`) and the Copy step (the
//! tree through the copy engine, with progress).

use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;

use crate::copy::{TargetTree, copy_tree};
use crate::protocol::{Step, TargetState, Up};
use crate::stick::choose::Fs;
use crate::stick::fat::MountedTarget;
use crate::stick::fatwrite::{FatPlace, FatWriter};
use crate::stick::mbr::PartitionSpan;
use crate::stick::ntfs::NtfsMount;
use crate::sys::loopdev::{LoopDevice, reopen_direct};
use crate::sys::mount::MountGuard;
use crate::sys::stop::stop_requested;
use crate::tree::Tree;

use super::layout::Disk;
use super::survey::{Survey, target_mount_point};
use super::{Job, WriteError};

/// The mounts of the stick's filesystem, if any. Fields drop in this order on every path: fusectl, then
/// ntfs-3g's mount, then the kernel mount (the writer, a separate value declared after this one, goes first).
pub(super) struct Mounts {
    pub fusectl: Option<MountGuard>,
    pub ntfs_mount: Option<NtfsMount>,
    pub target_mount: Option<MountGuard>,
}

impl Job<'_> {
    /// Mount: open the stick's filesystem for the copy, the way the survey's filesystem and driver say: its
    /// mounts, and the writer the copy goes through.
    pub(super) fn mount(
        &mut self,
        s: &Survey,
        disk: &Disk,
        part: &LoopDevice,
        tree: &Tree<'_>,
        work: &Path,
    ) -> Result<(Mounts, Box<dyn TargetTree>), WriteError> {
        let (fs, use_kernel_target, main) = (s.fs, s.use_kernel_target, s.partitions.main);
        self.enter(Step::Mount)?;
        let part_err = |source| WriteError::Device { path: part.path().into(), source };
        let mut target_mount = None;
        let mut ntfs_mount = None;
        let mut fusectl_guard = None;
        let mount_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let mount_point = target_mount_point(work);
        let target: Box<dyn TargetTree> = match (fs, use_kernel_target) {
            (Fs::Fat32, false) if disk.is_image() => {
                Box::new(FatWriter::open_at(self.image_place(disk, part, main)?, &tree.plan.entries)?)
            }
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
                let fusectl = MountGuard::mount("fusectl", &work.join("fusectl"), "fusectl", mount_flags, None).ok();
                let fusectl_path = fusectl.as_ref().map(|m| m.path().to_path_buf());
                fusectl_guard = fusectl;
                self.link.send(&Up::Fuse { connection, fusectl: fusectl_path })?;
                let m = NtfsMount::mount(part.path(), &mount_point, &work.join("ntfs-3g.log"))?;
                let t = MountedTarget::new(m.path());
                ntfs_mount = Some(m);
                Box::new(t)
            }
        };
        Ok((Mounts { fusectl: fusectl_guard, ntfs_mount, target_mount }, target))
    }

    /// Where the FAT writer writes an image's partition: on the image's own loop device at the partition's
    /// offset, the data of files of 1 MiB and more with O_DIRECT. Through the partition's loop device, every byte
    /// would be copied into two page caches (the partition loop's, then the image loop's); this way those bytes
    /// go from the copy's buffers to the image file's blocks without a copy, where the image loop got direct I/O
    /// (README, Performance: several targets at once). mkfs.fat wrote
    /// through the partition's loop: that is pushed down first, so the boot sector read here is mkfs.fat's.
    /// The partition loop's cache is left stale (nothing reads it again before it goes); the image loop's is
    /// kept coherent by the kernel, which writes back and drops cached pages a direct write covers.
    fn image_place(&mut self, disk: &Disk, part: &LoopDevice, main: PartitionSpan) -> Result<FatPlace, WriteError> {
        part.file().sync_all().map_err(|source| WriteError::Device { path: part.path().into(), source })?;
        disk.file.sync_all().map_err(disk.err())?;
        let file = disk.file.try_clone().map_err(disk.err())?;
        let direct = match reopen_direct(&disk.file) {
            Ok(f) => Some(f),
            Err(e) => {
                self.info(format!(
                    "{}: no direct I/O ({e}): the files go through the page cache",
                    disk.path.display()
                ))?;
                None
            }
        };
        Ok(FatPlace { file, path: disk.path.clone(), offset: main.offset, size: main.size, direct })
    }

    /// Copy: every directory and file of the tree onto the stick, then the writer's finish (the FAT writer's
    /// directories and FATs). Returns the bytes copied.
    pub(super) fn copy(
        &mut self,
        tree: &Tree<'_>,
        target: &mut dyn TargetTree,
        mounted: bool,
    ) -> Result<u64, WriteError> {
        // Through a mount, files appear as they are written (said from the step's start, to be on the safe
        // side); the userspace writer writes the directories and FATs last, so until then the filesystem still
        // reads as empty.
        if mounted {
            self.state = TargetState::FilesIncomplete;
        }
        self.enter(Step::Copy)?;
        let total = tree.plan.total_bytes();
        let mut last_sent = Instant::now();
        let mut end_sent = false;
        let link = &mut *self.link;
        let mut send_err = None;
        // At most a frame every 100 ms (said again while a window fills: movement for the stall watchdog), and
        // the end at once.
        copy_tree(
            tree,
            &mut *target,
            &mut |done| {
                let end = done == total && !end_sent;
                if send_err.is_none() && (end || last_sent.elapsed() >= Duration::from_millis(100)) {
                    last_sent = Instant::now();
                    end_sent |= end;
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
        Ok(total)
    }
}
