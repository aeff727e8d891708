//! Whole-disk locking: flock(LOCK_EX) on the target for the whole write (systemd's block-device locking
//! convention: udev and udisks leave a locked disk alone, and a second writer gets a clear "busy").

use std::fs::File;
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
///
/// (rustix's `flock` borrows the file; nix's `Flock` would take it over and unlock when dropped, and std's
/// `File::try_lock` does not promise to stay flock(2), which systemd's convention needs.)
pub fn lock_exclusive(file: &File, path: &Path) -> Result<(), LockError> {
    match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(LockError::Busy { path: path.to_path_buf() }),
        Err(e) => Err(LockError::Flock { path: path.to_path_buf(), source: e.into() }),
    }
}
