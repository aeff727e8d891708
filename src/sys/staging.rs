//! Scratch space on disk that cannot outlive the write: an unnamed file (O_TMPFILE) in a directory of the
//! host, on an autoclear loop device, formatted ext4 and mounted in the worker's private namespace. Nothing of
//! it has a name on the host: when the worker ends, however it ends, the mount goes with the namespace, the
//! loop device detaches and the kernel frees the file's blocks. (While it lives, `recover` sees it as a
//! deleted file held open by a loop device.)

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::loopdev::{LoopDevice, LoopWindow};
use super::mount::MountGuard;

/// Room ext4 needs for itself on top of the files (inode tables, reserved groups): 2% + 64 MiB.
pub fn image_size(payload: u64) -> u64 {
    let size = payload + payload / 50 + (64 << 20);
    size.div_ceil(1 << 20) << 20
}

#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error(
        "cannot create an unnamed scratch file in {dir}: {source} (it needs a local filesystem with O_TMPFILE \
         support, such as ext4, xfs, btrfs or tmpfs; set TMPDIR to such a directory)"
    )]
    Create {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot size the scratch file in {dir} to {size} bytes: {source}")]
    Size {
        dir: PathBuf,
        size: u64,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Loop(#[from] super::loopdev::LoopError),
    #[error(transparent)]
    Format(#[from] crate::sys::helper::HelperError),
    #[error(transparent)]
    Mount(#[from] super::mount::MountError),
}

/// Free bytes for an unprivileged user in `dir` (what statvfs reports as available).
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(st.blocks_available() * st.fragment_size())
}

/// The scratch filesystem; dropping it unmounts it, and the loop device and the file go with it.
#[derive(Debug)]
pub struct Staging {
    mount: Option<MountGuard>,
    device: LoopDevice,
}

impl Staging {
    /// Create a scratch filesystem for `payload` bytes of files in `dir`, mounted at `mount_point`. Only ever
    /// called inside the worker's mount namespace.
    pub fn create(dir: &Path, payload: u64, mount_point: &Path) -> Result<Staging, StagingError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
            .map_err(|source| StagingError::Create { dir: dir.to_path_buf(), source })?;
        let size = image_size(payload);
        file.set_len(size).map_err(|source| StagingError::Size { dir: dir.to_path_buf(), size, source })?;
        let label = dir.join("(woesafe scratch, unnamed)");
        let device = LoopDevice::attach(&file, &label, LoopWindow::default())?;
        drop(file); // the loop device holds it now
        let dev = device.path().to_string_lossy().into_owned();
        let args: Vec<String> =
            ["-q", "-F", "-m", "0", "-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard", "-L", "woesafe-tmp"]
                .iter()
                .map(|s| s.to_string())
                .chain([dev.clone()])
                .collect();
        crate::sys::helper::run("mkfs.ext4", &args, "e2fsprogs")?;
        let mount = MountGuard::mount(
            &dev,
            mount_point,
            "ext4",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        )?;
        Ok(Staging { mount: Some(mount), device })
    }

    pub fn path(&self) -> &Path {
        self.mount.as_ref().map_or(Path::new("/nonexistent"), MountGuard::path)
    }

    /// The loop device's name (for the stall watchdog, which watches its I/O).
    pub fn device_name(&self) -> String {
        self.device.name()
    }

    /// Unmount now, reporting errors.
    pub fn close(mut self) -> Result<(), super::mount::MountError> {
        self.mount.take().map_or(Ok(()), MountGuard::unmount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_size_leaves_room_for_ext4() {
        assert_eq!(image_size(0), 64 << 20);
        let s = image_size(5 << 30);
        assert!(s > (5 << 30) + (100 << 20) && s.is_multiple_of(1 << 20), "{s}");
    }
}
