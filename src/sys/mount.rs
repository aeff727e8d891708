//! Mounts behind RAII guards, and the mount-namespace set-up of the worker. Every mount made here lives in the
//! worker's private mount namespace; the guard unmounts on drop and confirms it before its directory is removed.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot make the mount namespace private: {0}")]
    MakePrivate(#[source] nix::Error),
    #[error("cannot mount {source_dev} ({fstype}) on {target}: {errno}")]
    Mount {
        source_dev: String,
        fstype: String,
        target: PathBuf,
        #[source]
        errno: nix::Error,
    },
    #[error("cannot unmount {target}: {errno}")]
    Unmount {
        target: PathBuf,
        #[source]
        errno: nix::Error,
    },
    #[error("cannot create mount point {path}: {source}")]
    MakeDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Make every mount of the current mount namespace private, recursively, so nothing we mount propagates
/// to the host. Call right after unshare(CLONE_NEWNS).
pub fn make_namespace_private() -> Result<(), MountError> {
    nix::mount::mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(MountError::MakePrivate)
}

/// A mount that is unmounted when dropped. When it owns its mount point directory, the directory is removed
/// with rmdir only after the unmount is confirmed (never a recursive delete).
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
    remove_dir: bool,
    active: bool,
}

impl MountGuard {
    /// Mount `source` on `target` (created when missing, then owned by the guard).
    pub fn mount(
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<MountGuard, MountError> {
        let created = if target.exists() {
            false
        } else {
            std::fs::create_dir(target).map_err(|source| MountError::MakeDir { path: target.to_path_buf(), source })?;
            true
        };
        match nix::mount::mount(Some(source), target, Some(fstype), flags, data) {
            Ok(()) => Ok(MountGuard { target: target.to_path_buf(), remove_dir: created, active: true }),
            Err(errno) => {
                if created {
                    let _ = std::fs::remove_dir(target);
                }
                Err(MountError::Mount {
                    source_dev: source.to_string(),
                    fstype: fstype.to_string(),
                    target: target.to_path_buf(),
                    errno,
                })
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.target
    }

    /// Unmount now, reporting errors (drop does the same but can only log them). Falls back to a lazy
    /// unmount when the filesystem is busy.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.do_unmount()
    }

    fn do_unmount(&mut self) -> Result<(), MountError> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        let result = match nix::mount::umount2(&self.target, MntFlags::empty()) {
            Ok(()) => Ok(()),
            Err(nix::Error::EBUSY) => nix::mount::umount2(&self.target, MntFlags::MNT_DETACH),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                if self.remove_dir {
                    // rmdir, not remove_dir_all: the mount is confirmed gone, and the directory must be empty.
                    let _ = std::fs::remove_dir(&self.target);
                }
                Ok(())
            }
            Err(errno) => Err(MountError::Unmount { target: self.target.clone(), errno }),
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Err(e) = self.do_unmount() {
            tracing::warn!("{e}");
        }
    }
}
