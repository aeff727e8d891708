//! Whole-disk locking: flock(LOCK_EX) on the target for the whole write (systemd's block-device locking
//! convention: udev and udisks leave a locked disk alone, and a second writer gets a clear "busy").

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("busy: another writer holds {path} (flock); wait for it to finish or stop it")]
    Busy { path: PathBuf },
    #[error("cannot lock {path}: {source}")]
    Flock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Take an exclusive, non-blocking flock on an open target. The lock lasts as long as the file stays open.
pub fn lock_exclusive(file: &File, path: &Path) -> Result<(), LockError> {
    // SAFETY: flock on a valid, open fd; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Err(LockError::Busy { path: path.to_path_buf() })
    } else {
        Err(LockError::Flock { path: path.to_path_buf(), source: err })
    }
}
