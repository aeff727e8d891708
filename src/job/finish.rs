//! The last steps of a write: Flush (the stick's data to the device) and Unmount (ntfs-3g and kernel mounts
//! unmounted while their daemon lives, then fusectl), in the order that leaves nothing behind.

use std::time::Duration;

use crate::copy::TargetTree;
use crate::protocol::{Step, TargetState};
use crate::sys::loopdev::LoopDevice;

use super::fill::Mounts;
use super::{Job, WriteError};

impl Job<'_> {
    /// Flush: the writer is dropped (everything was written by its finish); without a mount, the partition's
    /// data goes to the device now (and on an image, where the FAT writer writes on the disk, the disk's). The
    /// writer is dropped here whatever happens, before the mounts under it.
    pub(super) fn flush(
        &mut self,
        target: Box<dyn TargetTree>,
        mounts: &Mounts,
        part: &LoopDevice,
        disk: &super::layout::Disk,
    ) -> Result<(), WriteError> {
        self.state = TargetState::NotFlushed;
        self.enter(Step::Flush)?;
        drop(target);
        if mounts.target_mount.is_none() && mounts.ntfs_mount.is_none() {
            part.file().sync_all().map_err(|source| WriteError::Device { path: part.path().into(), source })?;
            if disk.is_image() {
                disk.file.sync_all().map_err(disk.err())?;
            }
        }
        Ok(())
    }

    /// Unmount: the kernel mount, then ntfs-3g (waiting for its daemon to write everything and exit), then
    /// fusectl; then the partition's data to the device.
    pub(super) fn unmount(&mut self, mounts: &mut Mounts, part: &LoopDevice) -> Result<(), WriteError> {
        self.enter(Step::Unmount)?;
        if let Some(m) = mounts.target_mount.take() {
            m.unmount()?;
        }
        if let Some(m) = mounts.ntfs_mount.take() {
            m.unmount(Duration::from_secs(600))?;
        }
        if let Some(m) = mounts.fusectl.take() {
            m.unmount()?;
        }
        part.file().sync_all().map_err(|source| WriteError::Device { path: part.path().into(), source })?;
        Ok(())
    }
}

impl Job<'_> {
    /// Verify (`write --verify`): the stick read back from the device (its caches dropped first), every file
    /// compared with the ISO's, the table and boot code checked. Runs once everything is unmounted and flushed.
    pub(super) fn verify(
        &mut self,
        disk: &super::layout::Disk,
        source: &crate::media::source::Source,
        work: &std::path::Path,
    ) -> Result<crate::verify::VerifyReport, WriteError> {
        self.enter(Step::Verify)?;
        Ok(crate::verify::worker::check_in_worker(&disk.file, &disk.path, source, work, &mut *self.link)?)
    }
}
