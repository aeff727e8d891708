//! Opening the ISO as a source tree: the userspace reader, or the kernel's udf/iso9660 on an autoclear loop
//! inside the worker's namespace. Also what the ISO is: Windows or not, which boot files, how big.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::SourceEntry;
use super::iso::{IsoFormat, IsoFs};
use crate::copy::SourceTree;
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
    #[error("the kernel could mount {path} neither as udf nor as iso9660: {last}")]
    Mount { path: PathBuf, last: crate::sys::mount::MountError },
    #[error("cannot list {path} on the mounted ISO: {source}")]
    Walk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    },
}

impl Source {
    pub fn open_userspace(iso: &Path) -> Result<Source, SourceError> {
        Ok(Source::Userspace(IsoFs::open(iso)?))
    }

    /// Attach the ISO read-only on an autoclear loop and mount it (udf first: Windows ISOs keep their files in
    /// UDF) at `mount_point`, nosuid,nodev,noexec. Only ever called inside the worker's mount namespace.
    pub fn open_kernel(iso: &Path, mount_point: &Path) -> Result<Source, SourceError> {
        let file = File::open(iso).map_err(|source| SourceError::Open { path: iso.to_path_buf(), source })?;
        let lo = LoopDevice::attach(&file, iso, LoopWindow { read_only: true, ..Default::default() })?;
        let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let dev = lo.path().to_string_lossy().into_owned();
        let mut last = None;
        // The ISO9660 tree of a UDF image may hold only a README: never take it for the content.
        let has_udf = IsoFs::open(iso).is_ok_and(|fs| fs.format() == IsoFormat::Udf);
        for fstype in ["udf", "iso9660"] {
            if fstype == "iso9660" && has_udf {
                continue;
            }
            match MountGuard::mount(&dev, mount_point, fstype, flags, None) {
                Ok(guard) => {
                    let entries = walk(mount_point)?;
                    return Ok(Source::Kernel {
                        entries,
                        root: mount_point.to_path_buf(),
                        mount: Some(guard),
                        _loop: lo,
                        fstype: fstype.to_string(),
                        volume_id: pvd_volume_id(&file),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(SourceError::Mount {
            path: iso.to_path_buf(),
            last: last.unwrap_or(crate::sys::mount::MountError::Mount {
                source_dev: dev,
                fstype: "udf/iso9660".into(),
                target: mount_point.to_path_buf(),
                errno: nix::Error::ENODEV,
            }),
        })
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

/// List a mounted tree: parents before children, names sorted within a directory.
fn walk(root: &Path) -> Result<Vec<SourceEntry>, SourceError> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|source| SourceError::Walk { path: dir.clone(), source })?
            .filter_map(|e| e.ok())
            .collect();
        names.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in names {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let meta =
                std::fs::symlink_metadata(e.path()).map_err(|source| SourceError::Walk { path: e.path(), source })?;
            let is_dir = meta.is_dir();
            if is_dir {
                subdirs.push(path.clone());
            } else if !meta.is_file() {
                continue;
            }
            out.push(SourceEntry { path, is_dir, size: if is_dir { 0 } else { meta.len() }, mtime: meta.mtime() });
        }
        stack.extend(subdirs.into_iter().rev());
    }
    // Depth-first with parents first: sort by path components keeps that and makes the order stable.
    out.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    Ok(out)
}

/// The volume id of the ISO9660 primary volume descriptor (sector 16), which Microsoft sets to the same
/// name as the UDF volume; empty when unreadable.
fn pvd_volume_id(file: &File) -> String {
    use std::os::unix::fs::FileExt;
    let mut pvd = [0u8; 72];
    if file.read_exact_at(&mut pvd, 16 * 2048).is_err() || pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return String::new();
    }
    String::from_utf8_lossy(&pvd[40..72]).trim().to_string()
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
        let w = walk(d.path()).unwrap();
        let paths: Vec<&str> = w.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "b", "b/c", "b/c/f"]);
        assert_eq!(w[3].size, 3);
    }
}
