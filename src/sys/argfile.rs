//! Files named on the command line, opened without ever blocking: looked at first (stat, which a FIFO or a
//! device never holds up), then opened with O_NONBLOCK and checked again on the open file, so that what is
//! read is the file that was checked.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a file argument must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Regular,
    Directory,
    /// A whole-disk target: a block device or an image file.
    RegularOrBlock,
}

impl Want {
    fn name(self) -> &'static str {
        match self {
            Want::Regular => "a regular file",
            Want::Directory => "a directory",
            Want::RegularOrBlock => "a block device or a regular file",
        }
    }

    fn accepts(self, mode: u32) -> bool {
        let fmt = mode & libc::S_IFMT;
        match self {
            Want::Regular => fmt == libc::S_IFREG,
            Want::Directory => fmt == libc::S_IFDIR,
            Want::RegularOrBlock => fmt == libc::S_IFREG || fmt == libc::S_IFBLK,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArgFileError {
    #[error("cannot read {path}: {source}")]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not {wanted} but {found}")]
    WrongKind { path: PathBuf, wanted: &'static str, found: &'static str },
    #[error("{path} was replaced while it was being opened")]
    Replaced { path: PathBuf },
    #[error("{path} was replaced after it was checked")]
    ReplacedSinceCheck { path: PathBuf },
}

/// Which file a checked argument is: its device and inode, and for a block device the device it stands for
/// (rdev; 0 for a regular file). Handed from the supervisor's checks to the worker, which opens the path again
/// and must find the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub rdev: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        let rdev = if meta.mode() & libc::S_IFMT == libc::S_IFBLK { meta.rdev() } else { 0 };
        FileId { dev: meta.dev(), ino: meta.ino(), rdev }
    }

    /// The identity of an open file.
    pub fn of_file(file: &File, path: &Path) -> Result<FileId, ArgFileError> {
        file.metadata()
            .map(|m| FileId::of(&m))
            .map_err(|source| ArgFileError::Stat { path: path.to_path_buf(), source })
    }

    /// Whether `file` (opened from `path`) is still this file; `ReplacedSinceCheck` otherwise.
    pub fn expect(&self, file: &File, path: &Path) -> Result<(), ArgFileError> {
        if FileId::of_file(file, path)? == *self {
            Ok(())
        } else {
            Err(ArgFileError::ReplacedSinceCheck { path: path.to_path_buf() })
        }
    }
}

/// Open `path` again as `open_with` does, and make sure it is the file checked earlier (`id`): anything else,
/// whatever its kind, is `ReplacedSinceCheck`.
pub fn reopen(path: &Path, want: Want, write: bool, flags: i32, id: &FileId) -> Result<File, ArgFileError> {
    let file = open_with(path, want, write, flags).map_err(|e| match e {
        // A path that now names something of another kind, or another file, was replaced.
        ArgFileError::WrongKind { .. } | ArgFileError::Replaced { .. } => {
            ArgFileError::ReplacedSinceCheck { path: path.to_path_buf() }
        }
        ArgFileError::Stat { ref source, .. } | ArgFileError::Open { ref source, .. }
            if source.raw_os_error() == Some(libc::ELOOP) || source.kind() == std::io::ErrorKind::NotFound =>
        {
            ArgFileError::ReplacedSinceCheck { path: path.to_path_buf() }
        }
        e => e,
    })?;
    id.expect(&file, path)?;
    Ok(file)
}

/// What a file of this mode is, for messages: "a FIFO (named pipe)", "a directory", ...
pub fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFBLK => "a block device",
        libc::S_IFCHR => "a character device",
        libc::S_IFIFO => "a FIFO (named pipe)",
        libc::S_IFSOCK => "a socket",
        libc::S_IFLNK => "a symbolic link",
        _ => "a file of unknown type",
    }
}

/// Whether a file of `mode` is what was wanted; the error names what it is instead.
pub fn check_kind(path: &Path, mode: u32, want: Want) -> Result<(), ArgFileError> {
    if want.accepts(mode) {
        Ok(())
    } else {
        Err(ArgFileError::WrongKind { path: path.to_path_buf(), wanted: want.name(), found: kind_of(mode) })
    }
}

/// Check what `path` is (following symlinks, as opening it would) without opening it.
pub fn check(path: &Path, want: Want) -> Result<std::fs::Metadata, ArgFileError> {
    check_as_opened(path, want, false)
}

/// `check`, or with `nofollow` (an open with O_NOFOLLOW) what the path itself is: a symbolic link is then
/// refused as one.
fn check_as_opened(path: &Path, want: Want, nofollow: bool) -> Result<std::fs::Metadata, ArgFileError> {
    let meta = if nofollow { std::fs::symlink_metadata(path) } else { std::fs::metadata(path) }
        .map_err(|source| ArgFileError::Stat { path: path.to_path_buf(), source })?;
    check_kind(path, meta.mode(), want)?;
    Ok(meta)
}

/// Open `path` for reading (and writing with `write`) once it is known to be what was wanted: stat first,
/// then open with O_NONBLOCK|O_NOCTTY (should it have been swapped for a FIFO meanwhile, the open returns at
/// once), then fstat: the open file must be the one checked. O_NONBLOCK is cleared before the file is handed
/// out.
pub fn open(path: &Path, want: Want, write: bool) -> Result<File, ArgFileError> {
    open_with(path, want, write, 0)
}

/// `open` with more open(2) flags (e.g. O_EXCL for a block device; with O_NOFOLLOW the path itself is checked,
/// and a symbolic link is refused).
pub fn open_with(path: &Path, want: Want, write: bool, flags: i32) -> Result<File, ArgFileError> {
    let before = check_as_opened(path, want, flags & libc::O_NOFOLLOW != 0)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(flags | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| ArgFileError::Open { path: path.to_path_buf(), source })?;
    let now = file.metadata().map_err(|source| ArgFileError::Stat { path: path.to_path_buf(), source })?;
    check_kind(path, now.mode(), want)?;
    if (now.dev(), now.ino()) != (before.dev(), before.ino()) {
        return Err(ArgFileError::Replaced { path: path.to_path_buf() });
    }
    let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| ArgFileError::Open { path: path.to_path_buf(), source: e.into() })?;
    let blocking = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(blocking))
        .map_err(|e| ArgFileError::Open { path: path.to_path_buf(), source: e.into() })?;
    Ok(file)
}

/// Read all of `r` when it holds at most `cap` bytes, never reading more than `cap + 1`: `Ok(None)` when there
/// is more (or the file grew past `cap` while being read).
pub fn read_capped(r: impl std::io::Read, cap: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut data = Vec::new();
    r.take(cap.saturating_add(1)).read_to_end(&mut data)?;
    Ok((data.len() as u64 <= cap).then_some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_and_checked() {
        let p = Path::new("/x");
        let msg = |mode, want| check_kind(p, mode, want).map_err(|e| e.to_string());
        assert_eq!(msg(libc::S_IFREG | 0o644, Want::Regular), Ok(()));
        assert_eq!(msg(libc::S_IFBLK | 0o660, Want::RegularOrBlock), Ok(()));
        assert_eq!(msg(libc::S_IFREG | 0o600, Want::RegularOrBlock), Ok(()));
        assert_eq!(msg(libc::S_IFDIR | 0o755, Want::Directory), Ok(()));
        assert_eq!(
            msg(libc::S_IFIFO | 0o644, Want::Regular),
            Err("/x is not a regular file but a FIFO (named pipe)".into())
        );
        assert_eq!(msg(libc::S_IFSOCK, Want::Regular), Err("/x is not a regular file but a socket".into()));
        assert_eq!(
            msg(libc::S_IFCHR, Want::RegularOrBlock),
            Err("/x is not a block device or a regular file but a character device".into())
        );
        assert_eq!(msg(libc::S_IFDIR, Want::Regular), Err("/x is not a regular file but a directory".into()));
        assert_eq!(msg(libc::S_IFBLK, Want::Regular), Err("/x is not a regular file but a block device".into()));
        assert_eq!(msg(libc::S_IFREG, Want::Directory), Err("/x is not a directory but a regular file".into()));
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Without a writer, a blocking open of the FIFO would never return.
        let err = open(&fifo, Want::Regular, false).unwrap_err().to_string();
        assert!(err.contains("but a FIFO"), "{err}");
        let file = dir.path().join("f");
        std::fs::write(&file, b"data").unwrap();
        let f = open(&file, Want::Regular, false).unwrap();
        let flags = nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(flags & libc::O_NONBLOCK, 0, "handed out blocking");
        assert!(open(dir.path(), Want::Regular, false).unwrap_err().to_string().contains("but a directory"));
        assert!(matches!(open(&dir.path().join("none"), Want::Regular, false), Err(ArgFileError::Stat { .. })));
    }

    #[test]
    fn reopening_finds_the_checked_file_or_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"checked").unwrap();
        std::fs::write(&b, b"other").unwrap();
        let id = FileId::of_file(&open(&a, Want::Regular, false).unwrap(), &a).unwrap();
        assert_eq!(id.rdev, 0);
        reopen(&a, Want::Regular, false, libc::O_NOFOLLOW, &id).expect("the same file");
        let replaced = |r: Result<File, ArgFileError>| matches!(r, Err(ArgFileError::ReplacedSinceCheck { .. }));
        // Another file in its place; a symbolic link (even to the checked file) where none is followed; a FIFO;
        // nothing at all.
        std::fs::rename(&a, dir.path().join("kept")).unwrap();
        std::fs::rename(&b, &a).unwrap();
        assert!(replaced(reopen(&a, Want::Regular, false, 0, &id)));
        std::fs::remove_file(&a).unwrap();
        std::os::unix::fs::symlink(dir.path().join("kept"), &a).unwrap();
        reopen(&a, Want::Regular, false, 0, &id).expect("followed, it is the checked file");
        assert!(replaced(reopen(&a, Want::Regular, false, libc::O_NOFOLLOW, &id)));
        let err = open_with(&a, Want::Regular, false, libc::O_NOFOLLOW).unwrap_err().to_string();
        assert!(err.ends_with("is not a regular file but a symbolic link"), "{err}");
        std::fs::remove_file(&a).unwrap();
        nix::unistd::mkfifo(&a, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(replaced(reopen(&a, Want::Regular, false, 0, &id)));
        std::fs::remove_file(&a).unwrap();
        assert!(replaced(reopen(&a, Want::Regular, false, 0, &id)));
        assert_eq!(
            ArgFileError::ReplacedSinceCheck { path: a.clone() }.to_string(),
            format!("{} was replaced after it was checked", a.display())
        );
    }

    #[test]
    fn reads_are_capped() {
        assert_eq!(read_capped(&b"12345"[..], 5).unwrap(), Some(b"12345".to_vec()));
        assert_eq!(read_capped(&b"123456"[..], 5).unwrap(), None);
        assert_eq!(read_capped(&b""[..], 0).unwrap(), Some(vec![]));
        // An endless source is read only up to the cap and one byte.
        let mut zero = std::fs::File::open("/dev/zero").unwrap();
        assert_eq!(read_capped(&mut zero, 4096).unwrap(), None);
    }
}
