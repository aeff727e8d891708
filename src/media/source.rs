//! Opening the ISO as a source tree: the userspace reader, or the kernel's udf/iso9660 on an autoclear loop
//! inside the worker's namespace. Also what the ISO is: Windows or not, which boot files, how big.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::SourceEntry;
use super::iso::{IsoFormat, IsoFs, LIMITS, Limit, Limits};
use crate::copy::SourceTree;
use crate::sys::argfile::FileId;
use crate::sys::loopdev::{LoopDevice, LoopWindow};
use crate::sys::mount::MountGuard;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Iso(#[from] super::iso::IsoError),
    #[error("cannot open the ISO {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Loop(#[from] crate::sys::loopdev::LoopError),
    #[error(
        "the kernel could not mount {path} as {fstype} (the file system the userspace reader found): {source}; \
         --source-driver userspace reads the ISO without the kernel"
    )]
    Mount {
        path: PathBuf,
        fstype: &'static str,
        #[source]
        source: crate::sys::mount::MountError,
    },
    #[error(
        "cannot list {path} on the kernel's mount of the ISO: {source}; --source-driver userspace reads the ISO \
         without the kernel"
    )]
    Walk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the kernel's mount of the ISO {} is damaged or hostile: it goes over woesafe's limit of {value} {limit} \
         (at {})",
        iso.display(),
        at.display()
    )]
    KernelLimit { iso: PathBuf, limit: Limit, value: u64, at: PathBuf },
    #[error("the kernel's mount of the ISO {} shows a name that is not UTF-8: {}", iso.display(), path.display())]
    NotUtf8 { iso: PathBuf, path: PathBuf },
    #[error(
        "the kernel's {fstype} mount of the ISO {} does not show what the userspace reader found: {what}; \
         refusing to copy from it (the image is damaged or hostile; --source-driver userspace reads it without \
         the kernel)",
        iso.display()
    )]
    Mismatch { iso: PathBuf, fstype: &'static str, what: TreeDifference },
    #[error("the ISO {path} was replaced after it was checked; nothing was written")]
    Replaced { path: PathBuf },
    #[error(
        "the ISO {path} changed while the kernel read it (its size or times are not what they were before the mount)"
    )]
    Changed { path: PathBuf },
}

impl SourceError {
    /// Whether the ISO itself is at fault (damaged, hostile, not an ISO), so the write is refused rather than
    /// failed: nothing has been written yet.
    pub fn is_bad_image(&self) -> bool {
        match self {
            SourceError::Iso(e) => e.is_bad_image(),
            SourceError::KernelLimit { .. } | SourceError::NotUtf8 { .. } | SourceError::Mismatch { .. } => true,
            // The userspace reader accepted the image and the kernel's parse of it fails: the image is what the
            // kernel cannot read (a kernel without the file system, or out of memory, is not the image's fault).
            SourceError::Mount { source: crate::sys::mount::MountError::Mount { errno, .. }, .. } => {
                !matches!(*errno, Errno::ENODEV | Errno::ENOMEM | Errno::EPERM | Errno::EACCES | Errno::EBUSY)
            }
            SourceError::Walk { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::EIO) | Some(libc::EUCLEAN) | Some(libc::EINVAL))
            }
            _ => false,
        }
    }

    /// Whether the write is refused (exit 3) rather than failed: a bad image, or an ISO that is not the file
    /// the supervisor checked. Either way nothing has been written yet.
    pub fn is_refusal(&self) -> bool {
        self.is_bad_image() || matches!(self, SourceError::Replaced { .. } | SourceError::Changed { .. })
    }
}

/// Parse the ISO at `iso`, which the supervisor checked as the regular file `id`. The path is looked at first
/// (a FIFO or another file put there since is refused as replaced, not opened), and the file the reader
/// parsed must be `id` too.
fn open_checked(iso: &Path, id: &FileId) -> Result<IsoFs, SourceError> {
    let replaced = || SourceError::Replaced { path: iso.to_path_buf() };
    let is_id = |m: &std::fs::Metadata| m.file_type().is_file() && FileId::of(m) == *id;
    match std::fs::metadata(iso) {
        Ok(m) if is_id(&m) => {}
        Ok(_) => return Err(replaced()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(replaced()),
        Err(source) => return Err(SourceError::Open { path: iso.to_path_buf(), source }),
    }
    let parsed = match IsoFs::open(iso) {
        Ok(p) => p,
        // Swapped between the look and the open: say so, rather than what the reader made of the other file.
        Err(_) if !std::fs::metadata(iso).is_ok_and(|m| is_id(&m)) => return Err(replaced()),
        Err(e) => return Err(e.into()),
    };
    let meta = parsed.file().metadata().map_err(|source| SourceError::Open { path: iso.to_path_buf(), source })?;
    if !is_id(&meta) {
        return Err(replaced());
    }
    Ok(parsed)
}

/// What says an open file changed: size, modification and change times (to the nanosecond).
fn change_stamp(file: &File, iso: &Path) -> Result<(u64, i64, i64, i64, i64), SourceError> {
    let m = file.metadata().map_err(|source| SourceError::Open { path: iso.to_path_buf(), source })?;
    Ok((m.len(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
}

/// Filesystems the running kernel offers (/proc/filesystems).
pub fn kernel_filesystems() -> Vec<String> {
    std::fs::read_to_string("/proc/filesystems")
        .map(|t| t.lines().filter_map(|l| l.split_whitespace().last().map(str::to_string)).collect())
        .unwrap_or_default()
}

pub fn kernel_has(fs: &str) -> bool {
    kernel_filesystems().iter().any(|f| f == fs)
}

/// The ISO opened one way or the other.
pub enum Source {
    Userspace(IsoFs),
    Kernel {
        entries: Vec<SourceEntry>,
        root: PathBuf,
        mount: Option<MountGuard>,
        _loop: LoopDevice,
        fstype: String,
        volume_id: String,
        skipped: Vec<crate::media::iso::Skipped>,
    },
}

impl Source {
    /// Read the ISO at `iso` (the file `id`, as the supervisor checked it) with the userspace reader.
    pub fn open_userspace(iso: &Path, id: &FileId) -> Result<Source, SourceError> {
        Ok(Source::Userspace(open_checked(iso, id)?))
    }

    /// Read the ISO with the userspace reader first and trust it; then attach the ISO read-only on an autoclear
    /// loop and mount it at `mount_point` (nosuid,nodev,noexec) with the file system that reader found — udf
    /// when the image has a UDF volume, never an iso9660 fallback (the ISO 9660 side of a Windows ISO may hold
    /// only a README, or a decoy). The mounted tree is walked with the reader's limits and must show the same
    /// paths, kinds and sizes, or the write is refused. The loop device is attached to the very file the reader
    /// parsed (the file `id`), and that file must not change between the mount and the end of the walk. Only
    /// ever called inside the worker's mount namespace.
    pub fn open_kernel(iso: &Path, id: &FileId, mount_point: &Path) -> Result<Source, SourceError> {
        let parsed = open_checked(iso, id)?;
        let (fstype, options, fold_case) = kernel_mount_for(parsed.format());
        let before = change_stamp(parsed.file(), iso)?;
        let lo = LoopDevice::attach(parsed.file(), iso, LoopWindow { read_only: true, ..Default::default() })?;
        let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let dev = lo.path().to_string_lossy().into_owned();
        let guard = MountGuard::mount(&dev, mount_point, fstype, flags, Some(options))
            .map_err(|source| SourceError::Mount { path: iso.to_path_buf(), fstype, source })?;
        let entries = walk(iso, mount_point, &LIMITS)?;
        if change_stamp(parsed.file(), iso)? != before {
            return Err(SourceError::Changed { path: iso.to_path_buf() });
        }
        compare_trees(parsed.entries(), &entries, fold_case).map_err(|what| SourceError::Mismatch {
            iso: iso.to_path_buf(),
            fstype,
            what,
        })?;
        Ok(Source::Kernel {
            entries,
            root: mount_point.to_path_buf(),
            mount: Some(guard),
            _loop: lo,
            fstype: fstype.to_string(),
            volume_id: parsed.volume_id().to_string(),
            skipped: parsed.skipped().to_vec(),
        })
    }

    /// Entries the userspace parse left out (links, FIFOs, devices: a stick cannot hold them), one example of
    /// each kind; the kernel walk leaves out the same.
    pub fn skipped(&self) -> &[crate::media::iso::Skipped] {
        match self {
            Source::Userspace(fs) => fs.skipped(),
            Source::Kernel { skipped, .. } => skipped,
        }
    }

    /// How the ISO is read, for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Userspace(fs) => match fs.format() {
                IsoFormat::Udf => "UDF (userspace reader)".into(),
                IsoFormat::Joliet => "ISO9660/Joliet (userspace reader)".into(),
                IsoFormat::Iso9660 => "ISO9660 (userspace reader)".into(),
            },
            Source::Kernel { fstype, .. } => format!("{fstype} (kernel mount)"),
        }
    }

    pub fn volume_id(&self) -> String {
        match self {
            Source::Userspace(fs) => fs.volume_id().to_string(),
            Source::Kernel { volume_id, .. } => volume_id.clone(),
        }
    }

    /// A reader of the entry that can also seek (the WIM inspection reads tables at the end of the file).
    pub fn open_seekable(&self, index: usize) -> std::io::Result<Box<dyn ReadSeek + '_>> {
        match self {
            Source::Userspace(fs) => {
                fs.open_file(index).map(|r| Box::new(r) as Box<dyn ReadSeek>).map_err(std::io::Error::other)
            }
            Source::Kernel { entries, root, .. } => {
                let e = entries.get(index).ok_or_else(|| std::io::Error::other("no such entry"))?;
                Ok(Box::new(File::open(root.join(&e.path))?))
            }
        }
    }

    /// Where a file lies in the ISO when it is one run of bytes (userspace reader only): the ISO's open file and
    /// path, the offset and the length. A read-only loop device over that window gives tools a file to read
    /// without a copy.
    pub fn file_window(&self, index: usize) -> Option<(&File, &std::path::Path, u64, u64)> {
        match self {
            Source::Userspace(fs) => fs.file_window(index),
            Source::Kernel { .. } => None,
        }
    }

    /// The entry as a path tools can open (kernel mount only; the userspace reader has none).
    pub fn local_path(&self, index: usize) -> Option<std::path::PathBuf> {
        match self {
            Source::Userspace(_) => None,
            Source::Kernel { entries, root, .. } => entries.get(index).map(|e| root.join(&e.path)),
        }
    }

    /// Unmount (kernel) now, reporting errors; the userspace reader has nothing to undo.
    pub fn close(self) -> Result<(), crate::sys::mount::MountError> {
        match self {
            Source::Userspace(_) => Ok(()),
            Source::Kernel { mut mount, .. } => mount.take().map_or(Ok(()), MountGuard::unmount),
        }
    }
}

/// Read + Seek, as one trait object.
pub trait ReadSeek: Read + std::io::Seek {}
impl<T: Read + std::io::Seek> ReadSeek for T {}

impl SourceTree for Source {
    fn entries(&self) -> &[SourceEntry] {
        match self {
            Source::Userspace(fs) => fs.entries(),
            Source::Kernel { entries, .. } => entries,
        }
    }

    fn open(&self, index: usize) -> std::io::Result<Box<dyn Read + '_>> {
        match self {
            Source::Userspace(fs) => {
                fs.open_file(index).map(|r| Box::new(r) as Box<dyn Read>).map_err(std::io::Error::other)
            }
            Source::Kernel { entries, root, .. } => {
                let e = entries.get(index).ok_or_else(|| std::io::Error::other("no such entry"))?;
                Ok(Box::new(File::open(root.join(&e.path))?))
            }
        }
    }
}

/// How the kernel mounts an ISO whose content the userspace reader found in `format`: file system type, mount
/// options, and whether its names compare without ASCII case (the kernel lowercases plain ISO 9660 names).
/// The options make the kernel list what the reader lists: UDF entries marked hidden (characteristic 0x01)
/// are listed by the reader, and Linux's udf shows them only with `unhide` (deleted ones, which the reader
/// skips, it hides without `undelete`). ISO 9660 needs nothing: isofs shows entries with the existence
/// ("hidden") bit unless mounted with `hide`, and hides associated files (0x04) unless given `showassoc` or
/// its old synonym `unhide` — as the reader does.
fn kernel_mount_for(format: IsoFormat) -> (&'static str, &'static str, bool) {
    match format {
        IsoFormat::Udf => ("udf", "utf8,unhide", false),
        // The Joliet names, as the userspace reader took them (not Rock Ridge's).
        IsoFormat::Joliet => ("iso9660", "norock,utf8", false),
        IsoFormat::Iso9660 => ("iso9660", "norock,nojoliet,map=normal", true),
    }
}

/// The first way the kernel's tree differs from the userspace reader's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeDifference {
    #[error("the userspace reader found two entries named {0:?} (ignoring case)")]
    Duplicate(String),
    #[error("the kernel shows {0:?}, which the userspace reader did not find")]
    OnlyKernel(String),
    #[error("the userspace reader found {0:?}, which the kernel does not show")]
    OnlyUserspace(String),
    #[error("{path:?} is {} for the userspace reader and {} for the kernel", kind(*user_dir), kind(!user_dir))]
    Kind { path: String, user_dir: bool },
    #[error("{path:?} is {user} bytes for the userspace reader and {kernel} bytes for the kernel")]
    Size { path: String, user: u64, kernel: u64 },
}

fn kind(is_dir: bool) -> &'static str {
    if is_dir { "a directory" } else { "a file" }
}

/// Whether the kernel's tree shows exactly the entries the userspace reader found: the same paths, kinds and
/// sizes (times may differ). The first difference otherwise. With `fold_case`, paths compare without ASCII case.
pub fn compare_trees(userspace: &[SourceEntry], kernel: &[SourceEntry], fold_case: bool) -> Result<(), TreeDifference> {
    let key = |p: &str| if fold_case { p.to_ascii_lowercase() } else { p.to_string() };
    let mut want: BTreeMap<String, &SourceEntry> = BTreeMap::new();
    for e in userspace {
        if want.insert(key(&e.path), e).is_some() {
            return Err(TreeDifference::Duplicate(e.path.clone()));
        }
    }
    for k in kernel {
        let Some(u) = want.remove(&key(&k.path)) else {
            return Err(TreeDifference::OnlyKernel(k.path.clone()));
        };
        if u.is_dir != k.is_dir {
            return Err(TreeDifference::Kind { path: u.path.clone(), user_dir: u.is_dir });
        }
        if u.size != k.size {
            return Err(TreeDifference::Size { path: u.path.clone(), user: u.size, kernel: k.size });
        }
    }
    match want.into_values().next() {
        Some(u) => Err(TreeDifference::OnlyUserspace(u.path.clone())),
        None => Ok(()),
    }
}

/// List a mounted tree: parents before children, names sorted within a directory. Within the userspace
/// reader's limits (entries, depth, path length and total path bytes); a directory that cannot be read and a
/// name that is not UTF-8 are errors; symbolic links and special files are not followed and not listed.
fn walk(iso: &Path, root: &Path, limits: &Limits) -> Result<Vec<SourceEntry>, SourceError> {
    let over = |limit: Limit, at: PathBuf| SourceError::KernelLimit {
        iso: iso.to_path_buf(),
        limit,
        value: limit.value(limits),
        at,
    };
    let walk_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SourceError::Walk { path, source }
    };
    let mut out = Vec::new();
    let (mut seen, mut path_bytes) = (0u64, 0u64);
    let mut stack = vec![(String::new(), 0u64)];
    while let Some((rel, depth)) = stack.pop() {
        let dir = root.join(&rel);
        if depth >= limits.depth {
            return Err(over(Limit::Depth, dir));
        }
        let mut kids = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(walk_err(&dir))? {
            let e = e.map_err(walk_err(&dir))?;
            seen += 1;
            if seen > limits.entries {
                return Err(over(Limit::Entries, e.path()));
            }
            let name = e
                .file_name()
                .into_string()
                .map_err(|_| SourceError::NotUtf8 { iso: iso.to_path_buf(), path: e.path() })?;
            let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            limits.charge_path(&mut path_bytes, path.len()).map_err(|limit| over(limit, e.path()))?;
            // The entry itself (lstat), never what a symbolic link points to.
            let meta = e.metadata().map_err(walk_err(&e.path()))?;
            if meta.is_dir() {
                kids.push(SourceEntry { path, is_dir: true, size: 0, mtime: meta.mtime() });
            } else if meta.is_file() {
                kids.push(SourceEntry { path, is_dir: false, size: meta.len(), mtime: meta.mtime() });
            }
        }
        stack.extend(kids.iter().filter(|k| k.is_dir).map(|k| (k.path.clone(), depth + 1)));
        out.extend(kids);
    }
    // Depth-first with parents first: sort by path components keeps that and makes the order stable.
    out.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    Ok(out)
}

/// Facts about the ISO's content that the checks and messages need.
pub struct Layout {
    pub dirs: u64,
    pub files: u64,
    pub total_bytes: u64,
    /// The largest files, biggest first (at most 5).
    pub largest: Vec<(String, u64)>,
    pub is_windows: bool,
    pub has_bootmgr: bool,
    pub has_uefi_loader: bool,
}

pub fn layout(entries: &[SourceEntry]) -> Layout {
    let has = |p: &str| entries.iter().any(|e| !e.is_dir && e.path.eq_ignore_ascii_case(p));
    let mut files: Vec<(String, u64)> =
        entries.iter().filter(|e| !e.is_dir).map(|e| (e.path.clone(), e.size)).collect();
    files.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Layout {
        dirs: entries.iter().filter(|e| e.is_dir).count() as u64,
        files: files.len() as u64,
        total_bytes: files.iter().map(|f| f.1).sum(),
        largest: files.into_iter().take(5).collect(),
        is_windows: ["sources/install.wim", "sources/install.esd", "sources/install.swm", "sources/boot.wim"]
            .iter()
            .any(|p| has(p)),
        has_bootmgr: has("bootmgr"),
        has_uefi_loader: crate::boot::uefi::find_loader(entries).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: &str, d: bool, s: u64) -> SourceEntry {
        SourceEntry { path: p.into(), is_dir: d, size: s, mtime: 0 }
    }

    #[test]
    fn windows_layout() {
        let w = layout(&[
            e("sources", true, 0),
            e("SOURCES/INSTALL.WIM", false, 100),
            e("bootmgr", false, 5),
            e("efi/boot/bootx64.efi", false, 7),
        ]);
        assert!(w.is_windows && w.has_bootmgr && w.has_uefi_loader);
        assert_eq!((w.dirs, w.files, w.total_bytes), (1, 3, 112));
        assert_eq!(w.largest[0], ("SOURCES/INSTALL.WIM".to_string(), 100));
        let linux = layout(&[e("casper/vmlinuz", false, 10), e("README.TXT", false, 1)]);
        assert!(!linux.is_windows && !linux.has_bootmgr);
    }

    #[test]
    fn walk_lists_parents_first() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("b/c")).unwrap();
        std::fs::write(d.path().join("b/c/f"), b"xyz").unwrap();
        std::fs::write(d.path().join("a"), b"1").unwrap();
        let w = walk(Path::new("x.iso"), d.path(), &LIMITS).unwrap();
        let paths: Vec<&str> = w.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "b", "b/c", "b/c/f"]);
        assert_eq!(w[3].size, 3);
    }

    #[test]
    fn walk_does_not_follow_links_and_refuses_bad_names_and_big_trees() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"outside the tree").unwrap();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        std::fs::write(d.path().join("dir/f"), b"12345").unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("link-to-dir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), d.path().join("link-to-file")).unwrap();
        let iso = Path::new("x.iso");
        let w = walk(iso, d.path(), &LIMITS).unwrap();
        let got: Vec<_> = w.iter().map(|e| (e.path.as_str(), e.is_dir, e.size)).collect();
        assert_eq!(got, [("dir", true, 0), ("dir/f", false, 5)]);

        // Caps: entries (the links count: each cost a lookup), depth, one path, all paths.
        let small = |f: fn(&mut Limits)| {
            let mut l = LIMITS;
            f(&mut l);
            walk(iso, d.path(), &l).unwrap_err()
        };
        let over = |e: SourceError| match e {
            SourceError::KernelLimit { limit, value, .. } => (limit, value),
            e => panic!("not a limit: {e}"),
        };
        assert_eq!(over(small(|l| l.entries = 3)), (Limit::Entries, 3));
        assert_eq!(over(small(|l| l.depth = 1)), (Limit::Depth, 1));
        assert_eq!(over(small(|l| l.path_len = 4)), (Limit::PathLen, 4));
        assert_eq!(over(small(|l| l.path_bytes = 8)), (Limit::PathBytes, 8));
        let msg = small(|l| l.entries = 3).to_string();
        assert!(msg.contains("damaged or hostile") && msg.contains("limit of 3 entries"), "{msg}");
        assert!(small(|l| l.entries = 3).is_bad_image());
        walk(iso, d.path(), &Limits { entries: 4, depth: 2, path_len: 12, path_bytes: 31, ..LIMITS })
            .expect("exactly at the limits");

        // A name that is not UTF-8 is an error, not a lossy string.
        std::fs::write(d.path().join(std::ffi::OsStr::from_bytes(b"bad\xffname")), b"x").unwrap();
        let e = walk(iso, d.path(), &LIMITS).unwrap_err();
        assert!(matches!(e, SourceError::NotUtf8 { .. }), "{e}");
        assert!(e.is_bad_image());

        // A directory that cannot be listed is an error (not an empty directory).
        let e = walk(iso, &d.path().join("missing"), &LIMITS).unwrap_err();
        assert!(matches!(e, SourceError::Walk { .. }), "{e}");
        assert!(!e.is_bad_image());
    }

    #[test]
    fn kernel_tree_must_match_the_userspace_one() {
        let user = [e("a", true, 0), e("a/b.txt", false, 5), e("c", false, 7)];
        let mut mtimes = user.clone();
        mtimes[1].mtime = 99;
        assert_eq!(compare_trees(&user, &mtimes, false), Ok(()));
        // Order does not matter; contents do.
        let reordered = [user[2].clone(), user[0].clone(), user[1].clone()];
        assert_eq!(compare_trees(&user, &reordered, false), Ok(()));
        let err = |kernel: &[SourceEntry], fold| compare_trees(&user, kernel, fold).unwrap_err().to_string();
        assert!(err(&user[..2], false).contains("\"c\", which the kernel does not show"));
        let extra = [user.to_vec(), vec![e("README.TXT", false, 10)]].concat();
        assert!(err(&extra, false).contains("the kernel shows \"README.TXT\""));
        let resized = [user[0].clone(), user[1].clone(), e("c", false, 8)];
        assert!(err(&resized, false).contains("7 bytes for the userspace reader and 8 bytes for the kernel"));
        let retyped = [user[0].clone(), user[1].clone(), e("c", true, 0)];
        assert!(err(&retyped, false).contains("a file for the userspace reader and a directory for the kernel"));
        // A decoy ISO 9660 tree instead of the UDF one.
        assert!(err(&[e("README.TXT", false, 10)], false).contains("README.TXT"));
        // Plain ISO 9660: the kernel lowercases names.
        let upper = [e("A", true, 0), e("A/B.TXT", false, 5)];
        let lower = [e("a", true, 0), e("a/b.txt", false, 5)];
        assert_eq!(compare_trees(&upper, &lower, true), Ok(()));
        assert!(compare_trees(&upper, &lower, false).is_err());
        assert_eq!(
            compare_trees(&[e("A", false, 1), e("a", false, 1)], &[], true),
            Err(TreeDifference::Duplicate("a".into()))
        );
        assert!(TreeDifference::Duplicate("a".into()).to_string().contains("two entries"));
        assert_eq!(
            compare_trees(&user, &[user[0].clone(), user[1].clone(), e("c", false, 8)], false),
            Err(TreeDifference::Size { path: "c".into(), user: 7, kernel: 8 })
        );
    }

    /// A kernel that cannot mount or list an image the userspace reader accepted: the image is refused (exit 3),
    /// unless the kernel itself lacks something.
    #[test]
    fn kernel_failures_on_an_accepted_image_are_refusals() {
        let mount = |errno| SourceError::Mount {
            path: "x.iso".into(),
            fstype: "udf",
            source: crate::sys::mount::MountError::Mount {
                source_dev: "/dev/loop9".into(),
                fstype: "udf".into(),
                target: "/m".into(),
                errno,
            },
        };
        assert!(mount(Errno::EINVAL).is_refusal());
        assert!(mount(Errno::EIO).is_refusal());
        assert!(!mount(Errno::ENODEV).is_refusal());
        assert!(!mount(Errno::ENOMEM).is_refusal());
        assert!(mount(Errno::EINVAL).to_string().contains("--source-driver userspace"));
        let walk = |errno| SourceError::Walk { path: "/m/a".into(), source: std::io::Error::from_raw_os_error(errno) };
        assert!(walk(libc::EIO).is_refusal());
        assert!(!walk(libc::ENOMEM).is_refusal());
        assert!(SourceError::Replaced { path: "x.iso".into() }.is_refusal());
        assert!(!SourceError::Replaced { path: "x.iso".into() }.is_bad_image());
        assert!(SourceError::Changed { path: "x.iso".into() }.is_refusal());
    }

    #[test]
    fn kernel_mounts_what_the_userspace_reader_found() {
        assert_eq!(kernel_mount_for(IsoFormat::Udf), ("udf", "utf8,unhide", false));
        assert_eq!(kernel_mount_for(IsoFormat::Joliet), ("iso9660", "norock,utf8", false));
        assert_eq!(kernel_mount_for(IsoFormat::Iso9660), ("iso9660", "norock,nojoliet,map=normal", true));
        // Hidden entries are shown (the reader lists them); deleted and associated ones are not (it skips them).
        for format in [IsoFormat::Udf, IsoFormat::Joliet, IsoFormat::Iso9660] {
            let options: Vec<&str> = kernel_mount_for(format).1.split(',').collect();
            assert_eq!(options.contains(&"unhide"), format == IsoFormat::Udf, "{format:?}");
            for never in ["hide", "undelete", "showassoc"] {
                assert!(!options.contains(&never), "{format:?}: {never}");
            }
        }
    }
}
