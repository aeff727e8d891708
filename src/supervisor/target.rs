//! The supervisor's hold on the target and its host-side files: opening and locking the target, the worker's
//! work directory, the scratch directory, and the programs a layout needs.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::cli::term::{self, escape};
use crate::exit::{self, Exit, fail};
use crate::stick::disk::TargetFacts;
use crate::stick::units::human;

/// The target as the user should recognise it in the confirmation and the plan.
pub fn describe_target(t: &TargetFacts, size: u64) -> String {
    match t {
        TargetFacts::Block(b) => {
            // The model comes from the device (a USB stick's descriptor says what it likes).
            format!("/dev/{} — {}, {}, {}", escape(&b.name), escape(&b.model), human(b.size), b.transport)
        }
        TargetFacts::Image { path, exists: true, .. } => {
            format!("image file {} ({})", term::path(path), human(size))
        }
        TargetFacts::Image { path, .. } => {
            format!("new image file {} ({})", term::path(path), human(size))
        }
    }
}

/// How to open the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// For the write: read-write, a new image file created at its size.
    Write,
    /// For a dry run: read-only, and a missing image file is not created (None is returned).
    Look,
}

/// Open (or create) the target and lock it for the whole write. With `Access::Look` the target is opened
/// read-only (a block device still exclusively: a mounted one answers "busy"), and a missing image is left
/// missing.
pub fn open_and_lock(t: &TargetFacts, path: &Path, create_size: u64, access: Access) -> Result<Option<File>, Exit> {
    use crate::sys::argfile::{self, ArgFileError, FileId, Want};
    let write = access == Access::Write;
    let replaced = || fail(exit::FAILED, format!("{} was replaced while woesafe checked it", term::path(path)));
    let open_err = |e| match e {
        ArgFileError::Open { source, .. } if source.raw_os_error() == Some(libc::EBUSY) => {
            // Name who holds it, where /proc tells: a lazily unmounted filesystem still held shows no mount.
            let holders = match t {
                TargetFacts::Block(b) => crate::recover::snapshot::holders_of(&b.devnums),
                TargetFacts::Image { .. } => Vec::new(),
            };
            if holders.is_empty() {
                fail(
                    exit::REFUSED,
                    format!("busy: {} is in use (mounted, or held by another program)", term::path(path)),
                )
            } else {
                fail(
                    exit::REFUSED,
                    format!(
                        "busy: {} is in use: {}; end those processes (or have them leave it), or see `woesafe recover`",
                        term::path(path),
                        holders.join("; ")
                    ),
                )
            }
        }
        ArgFileError::Open { source, .. } => fail(exit::FAILED, format!("cannot open {}: {source}", term::path(path))),
        ArgFileError::ReplacedSinceCheck { .. } => replaced(),
        e => fail(exit::FAILED, e),
    };
    let file = match t {
        TargetFacts::Block(b) => {
            // Read-only with O_EXCL (the worker opens it for writing): a mounted disk answers EBUSY. O_NONBLOCK
            // (cleared once open): whatever the path names now, the open cannot hang.
            let f = argfile::open_with(path, Want::RegularOrBlock, false, libc::O_EXCL).map_err(open_err)?;
            let id = FileId::of_file(&f, path).map_err(open_err)?;
            if id.rdev == 0 || (libc::major(id.rdev), libc::minor(id.rdev)) != (b.major, b.minor) {
                return Err(replaced());
            }
            f
        }
        TargetFacts::Image { exists: true, dev, ino, .. } => {
            argfile::reopen(path, Want::Regular, write, 0, &FileId { dev: *dev, ino: *ino, rdev: 0 })
                .map_err(open_err)?
        }
        TargetFacts::Image { exists: false, .. } if !write => return Ok(None),
        TargetFacts::Image { exists: false, .. } => {
            let f =
                OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(|e| {
                    fail(exit::FAILED, format!("cannot create the image file {}: {e}", term::path(path)))
                })?;
            if let Err(e) = f.set_len(create_size) {
                // Never leave the empty file behind: a retry would take it for an existing image.
                remove_if_same(&f, path);
                let code = if e.raw_os_error() == Some(libc::EFBIG) { exit::USAGE } else { exit::FAILED };
                return Err(fail(
                    code,
                    format!(
                        "cannot make the image file {} {create_size} bytes long: {e} (the filesystem holding it \
                         allows less: give a smaller --size or another place); nothing was written",
                        term::path(path)
                    ),
                ));
            }
            f
        }
    };
    crate::sys::lock::lock_exclusive(&file, path).map_err(|e| match e {
        crate::sys::lock::LockError::Busy { .. } => fail(exit::REFUSED, e),
        _ => fail(exit::FAILED, e),
    })?;
    Ok(Some(file))
}

/// Removes the image file woesafe created at `path`, if `path` still names the open file `f`.
pub fn remove_if_same(f: &File, path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let ours = f.metadata().ok().map(|m| (m.dev(), m.ino()));
    let there = std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()));
    if ours.is_some() && ours == there {
        let _ = std::fs::remove_file(path);
    }
}

/// A directory for the worker's private tmpfs, recognisably named for `recover` should it ever be left.
pub fn make_work_dir() -> Result<PathBuf, Exit> {
    let base = if Path::new("/run").is_dir() { PathBuf::from("/run") } else { std::env::temp_dir() };
    let pid = std::process::id();
    for n in 0..1000 {
        let p = base.join(if n == 0 { format!("woesafe.{pid}") } else { format!("woesafe.{pid}.{n}") });
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(fail(exit::FAILED, format!("cannot create {}: {e}", term::path(&p)))),
        }
    }
    Err(fail(exit::FAILED, "cannot create a work directory under /run"))
}

/// Where the scratch file for WIM work goes: $TMPDIR when it names a directory, else /var/tmp (on disk, unlike
/// a /tmp that may be RAM).
pub fn scratch_dir() -> PathBuf {
    match std::env::var_os("TMPDIR").map(PathBuf::from) {
        Some(p) if p.is_absolute() && p.is_dir() => p,
        _ => PathBuf::from("/var/tmp"),
    }
}

/// Whether `program` is an executable file in $PATH (or /usr/sbin, /sbin, where mkntfs lives).
fn in_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|d| std::fs::metadata(d.join(program)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Refuse (before anything is written) when a program a later step needs is missing.
pub fn need_programs(programs: &[(&str, &str)], purpose: &str) -> Result<(), Exit> {
    match programs.iter().find(|(p, _)| !in_path(p)) {
        Some((program, package)) => Err(fail(
            exit::REFUSED,
            format!("{purpose} needs {program}, which is not installed: install the Debian package {package}"),
        )),
        None => Ok(()),
    }
}

/// The ISO argument: looked at before it is opened, and opened without blocking (a FIFO, socket, device or
/// directory is a usage error at once, never a hang). Returns the identity of the file checked, which whoever
/// opens the ISO again (the worker, the reader) must find.
pub fn check_iso(iso: &Path) -> Result<crate::sys::argfile::FileId, Exit> {
    use crate::sys::argfile::{self, ArgFileError, FileId, Want};
    let file = argfile::open(iso, Want::Regular, false).map_err(|e| match e {
        ArgFileError::Stat { source, .. } => {
            fail(exit::USAGE, format!("cannot read the ISO {}: {source}", term::path(iso)))
        }
        e => fail(exit::USAGE, format!("{e}; give the path of an .iso file")),
    })?;
    FileId::of_file(&file, iso).map_err(|e| fail(exit::FAILED, e))
}
