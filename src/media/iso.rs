//! Userspace, streaming reader of ISO images (UDF first, else Joliet, else plain ISO 9660): volume detection, the directory tree and per-file extents, file data read with pread, without mounting.

mod iso9660;
mod udf;

/// Helpers the reader's tests share (hand-built images written to a temp file, files read back whole).
#[cfg(test)]
pub(crate) mod test_support {
    use super::IsoFs;
    use std::io::{Read, Write};

    pub fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(bytes).expect("write image");
        f.flush().expect("flush image");
        f
    }

    /// Read a whole file `chunk` bytes at a time (to cross extent boundaries at odd places).
    pub fn read_in_chunks(r: &mut impl Read, chunk: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            let n = r.read(&mut buf).expect("read");
            if n == 0 {
                return got;
            }
            got.extend_from_slice(&buf[..n]);
        }
    }

    pub fn read_all(fs: &IsoFs, path: &str) -> Vec<u8> {
        let i = fs.entries().iter().position(|e| e.path == path).unwrap_or_else(|| panic!("{path} missing"));
        let mut out = Vec::new();
        fs.open_file(i).expect("open file").read_to_end(&mut out).expect("read file");
        out
    }
}

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::media::SourceEntry;

/// Size of a CD/DVD sector and of every volume descriptor we read.
pub(crate) const SECTOR: u64 = 2048;

/// Limits on the work a damaged or hostile image can make the reader do, so that opening any image stays within
/// 256 MiB of memory and a few seconds, whatever it declares. A Windows 10/11 ISO has about 1,000 files in 100
/// directories, 1 to 3 extents per file, paths of at most ~100 bytes, directories of at most ~30 KiB and
/// ~2.5 MiB of metadata: the volume-wide budgets (entries, extents, listed extents, path bytes, metadata
/// bytes) leave a margin of at least 100× over that, as 7-Zip's UdfIn does by counting items, extents and name
/// bytes over the whole volume; the per-chain hop limits are the Linux kernel's; depth and path length are ~40×
/// what Windows uses.
/// Worst cases measured (debug build, on a 2-core machine at load ~7; the whole write): 91 MiB, 6.5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries of the whole volume: files and directories, and the entries of other kinds that are skipped
    /// (each costs a descriptor parse). Bounds the entry list and the time to list directories.
    pub entries: u64,
    /// Extents of all files and directories together (UDF allocation descriptors, ISO 9660 multi-extent
    /// records). Bounds the memory of the extent lists.
    pub extents: u64,
    /// Extents of all listed files together, a file's extents counted again for each of its hard links: what
    /// copying every entry reads piece by piece. Bounds the work of the copy (each piece is one read), which
    /// hard links would otherwise multiply after the target is wiped. A Windows ISO lists ~1,500.
    pub listed_extents: u64,
    /// Bytes of all paths together. Bounds the memory of the entry list (entries × longest path would not).
    pub path_bytes: u64,
    /// Bytes of metadata read while opening (descriptors, directories, allocation extents). Bounds the time to
    /// open, whatever loops and re-reads the image asks for.
    pub metadata_bytes: u64,
    /// Bytes of one directory's records, read into memory at once.
    pub dir_bytes: u64,
    /// Directory nesting.
    pub depth: u64,
    /// Bytes of one path (UTF-8).
    pub path_len: u64,
    /// UDF allocation extent descriptors followed for one file or directory (the kernel's
    /// UDF_MAX_INDIR_EXTS).
    pub aed_hops: u64,
    /// UDF volume descriptor pointers followed in one volume descriptor sequence (the kernel's
    /// UDF_MAX_TD_NESTING).
    pub vdp_hops: u64,
}

/// The limits every image is opened with.
pub const LIMITS: Limits = Limits {
    entries: 1 << 17,
    extents: 1 << 18,
    listed_extents: 1 << 20,
    path_bytes: 8 << 20,
    metadata_bytes: 256 << 20,
    dir_bytes: 16 << 20,
    depth: 256,
    path_len: 4096,
    aed_hops: 16,
    vdp_hops: 64,
};

/// Which of the `Limits` an image went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Entries,
    Extents,
    ListedExtents,
    PathBytes,
    MetadataBytes,
    DirBytes,
    Depth,
    PathLen,
    AedHops,
    VdpHops,
}

impl Limits {
    /// Charges one more path of `len` bytes to `used` (the bytes of all paths so far): the limit it goes over,
    /// one path's or all paths'. The userspace walk and the kernel-tree walk both charge through this.
    pub fn charge_path(&self, used: &mut u64, len: usize) -> Result<(), Limit> {
        let len = len as u64;
        if len > self.path_len {
            return Err(Limit::PathLen);
        }
        *used += len;
        if *used > self.path_bytes {
            return Err(Limit::PathBytes);
        }
        Ok(())
    }
}

impl Limit {
    /// The limit's value in `limits`.
    pub fn value(self, limits: &Limits) -> u64 {
        match self {
            Limit::Entries => limits.entries,
            Limit::Extents => limits.extents,
            Limit::ListedExtents => limits.listed_extents,
            Limit::PathBytes => limits.path_bytes,
            Limit::MetadataBytes => limits.metadata_bytes,
            Limit::DirBytes => limits.dir_bytes,
            Limit::Depth => limits.depth,
            Limit::PathLen => limits.path_len,
            Limit::AedHops => limits.aed_hops,
            Limit::VdpHops => limits.vdp_hops,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Entries => "entries (files and directories) in the volume",
            Limit::Extents => "extents of all files together",
            Limit::ListedExtents => "extents of the listed files together (each hard link counting its file's again)",
            Limit::PathBytes => "bytes of all paths together",
            Limit::MetadataBytes => "bytes of metadata read to list the files",
            Limit::DirBytes => "bytes in one directory",
            Limit::Depth => "levels of nested directories",
            Limit::PathLen => "bytes in one path",
            Limit::AedHops => "UDF allocation extent descriptors chained for one file",
            Limit::VdpHops => "UDF volume descriptor pointers chained",
        })
    }
}

/// Which file system of the image supplies the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsoFormat {
    Udf,
    Joliet,
    Iso9660,
}

/// What failed while reading an ISO image.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("cannot open ISO image {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read ISO image {} at byte offset {offset}", path.display())]
    Read {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} is not an ISO image: no UDF volume and no ISO 9660 primary volume descriptor",
        path.display()
    )]
    NotAnIso { path: PathBuf },
    #[error("bad UDF file system in {}: {what}", path.display())]
    BadUdf { path: PathBuf, what: String },
    #[error("bad ISO 9660 file system in {}: {what}", path.display())]
    BadIso9660 { path: PathBuf, what: String },
    #[error("unsupported feature in ISO image {}: {what}", path.display())]
    Unsupported { path: PathBuf, what: String },
    #[error(
        "the ISO image {} is damaged or hostile: it goes over woesafe's limit of {value} {limit} ({at})",
        path.display()
    )]
    Limit { path: PathBuf, limit: Limit, value: u64, at: String },
    #[error(
        "the ISO image {} is damaged or hostile: directory {dir} is reached twice or overlaps another directory \
         (a directory cycle)",
        path.display()
    )]
    DirectoryCycle { path: PathBuf, dir: String },
    #[error(
        "the ISO image {} is damaged or hostile: a piece of {len} bytes of {file} is followed by another but is not \
         a whole number of {SECTOR}-byte blocks",
        path.display()
    )]
    UnalignedExtent { path: PathBuf, file: String, len: u64 },
    #[error("entry index {index} out of range: {} has {count} entries", path.display())]
    NoSuchEntry { path: PathBuf, index: usize, count: usize },
    #[error("{entry} in {} is a directory, not a file", path.display())]
    IsDirectory { path: PathBuf, entry: String },
}

impl IsoError {
    /// Whether the image itself is at fault (damaged, hostile, truncated, not an ISO, or using a feature we do
    /// not read), as opposed to an I/O error or a caller's mistake.
    pub fn is_bad_image(&self) -> bool {
        match self {
            IsoError::NotAnIso { .. }
            | IsoError::BadUdf { .. }
            | IsoError::BadIso9660 { .. }
            | IsoError::Unsupported { .. }
            | IsoError::Limit { .. }
            | IsoError::DirectoryCycle { .. }
            | IsoError::UnalignedExtent { .. } => true,
            // Metadata that points past the end of the image.
            IsoError::Read { source, .. } => source.kind() == io::ErrorKind::UnexpectedEof,
            _ => false,
        }
    }

    /// The limit an image went over and its value, if that is what this error says.
    pub fn limit(&self) -> Option<(Limit, u64)> {
        match self {
            IsoError::Limit { limit, value, .. } => Some((*limit, *value)),
            _ => None,
        }
    }
}

/// One piece of a file's data, in order.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Extent {
    /// `len` bytes at byte `offset` of the image.
    Disk { offset: u64, len: u64 },
    /// `len` bytes that read as zeros (unrecorded or unallocated extent).
    Zeros { len: u64 },
    /// `len` bytes kept inside a descriptor (UDF data embedded in the ICB), at byte `offset` of the image:
    /// read like `Disk`, but never a run of sectors of its own.
    Inline { offset: u64, len: u64 },
}

impl Extent {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Extent::Disk { len, .. } | Extent::Zeros { len } | Extent::Inline { len, .. } => *len,
        }
    }

    fn with_len(&self, len: u64) -> Extent {
        match *self {
            Extent::Disk { offset, .. } => Extent::Disk { offset, len },
            Extent::Zeros { .. } => Extent::Zeros { len },
            Extent::Inline { offset, .. } => Extent::Inline { offset, len },
        }
    }
}

impl fmt::Debug for Extent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Extent::Disk { offset, len } => write!(f, "Disk({offset}+{len})"),
            Extent::Zeros { len } => write!(f, "Zeros({len})"),
            Extent::Inline { offset, len } => write!(f, "Inline({offset}+{len})"),
        }
    }
}

/// Keeps only the first `size` bytes of `extents`; `None` if they hold fewer.
pub(crate) fn truncate_extents(mut extents: Vec<Extent>, size: u64) -> Option<Vec<Extent>> {
    let mut left = size;
    let mut out = Vec::with_capacity(extents.len());
    for ext in extents.drain(..) {
        if left == 0 {
            break;
        }
        let len = ext.len();
        if len == 0 {
            continue;
        }
        if len <= left {
            left -= len;
            out.push(ext);
        } else {
            out.push(ext.with_len(left));
            left = 0;
        }
    }
    (left == 0).then_some(out)
}

/// A file's extents, in order, and where each starts in the file: hard links share one (computed once), so
/// opening a file costs the same whatever its links.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct FileExtents {
    extents: Vec<Extent>,
    /// Where each extent starts in the file (for seeks: a binary search).
    starts: Vec<u64>,
}

impl FileExtents {
    pub(crate) fn new(extents: Vec<Extent>) -> FileExtents {
        let mut at = 0u64;
        let starts = extents
            .iter()
            .map(|e| {
                let start = at;
                at = at.saturating_add(e.len());
                start
            })
            .collect();
        FileExtents { extents, starts }
    }
}

impl std::ops::Deref for FileExtents {
    type Target = [Extent];

    fn deref(&self) -> &[Extent] {
        &self.extents
    }
}

/// The first piece of `extents` that is followed by another but is not a whole number of sectors (ECMA-167
/// 4/12 asks whole logical blocks of every allocation descriptor but the last; ECMA-119 6.5.1 whole sectors of
/// every extent of a multi-extent file but the last): its length. A file of 1-byte pieces would make copying
/// it one read per byte.
pub(crate) fn unaligned_piece(extents: &[Extent]) -> Option<u64> {
    let (_, init) = extents.split_last()?;
    init.iter().map(Extent::len).find(|len| len % SECTOR != 0)
}

/// The open image file, and what opening it has used of its `Limits` so far.
#[derive(Debug)]
pub(crate) struct Image {
    file: File,
    path: PathBuf,
    len: u64,
    limits: Limits,
    // Counters of the volume-wide budgets (atomics only so that `IsoFs` is Sync; the parse is one thread).
    metadata_read: AtomicU64,
    extents_used: AtomicU64,
    entries_used: AtomicU64,
}

impl Image {
    fn open(path: &Path, limits: Limits) -> Result<Image, IsoError> {
        let open_err = |source| IsoError::Open { path: path.to_path_buf(), source };
        // Never blocks on a FIFO put in the ISO's place after the supervisor's check; only a regular file or a
        // block device is read.
        let mut file = crate::sys::argfile::open(path, crate::sys::argfile::Want::RegularOrBlock, false)
            .map_err(|e| open_err(io::Error::other(e.to_string())))?;
        // Seeking to the end also gives the size of a block device, where metadata says 0.
        let len = file.seek(SeekFrom::End(0)).map_err(open_err)?;
        Ok(Image {
            file,
            path: path.to_path_buf(),
            len,
            limits,
            metadata_read: AtomicU64::new(0),
            extents_used: AtomicU64::new(0),
            entries_used: AtomicU64::new(0),
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The error for going over `limit`; `at` says where.
    pub(crate) fn over(&self, limit: Limit, at: impl Into<String>) -> IsoError {
        IsoError::Limit { path: self.path.clone(), limit, value: limit.value(&self.limits), at: at.into() }
    }

    /// Adds `n` to a volume-wide budget (entries, extents or metadata bytes); an error once it is over.
    pub(crate) fn charge(&self, limit: Limit, n: u64, at: impl FnOnce() -> String) -> Result<(), IsoError> {
        let used = match limit {
            Limit::Entries => &self.entries_used,
            Limit::Extents => &self.extents_used,
            Limit::MetadataBytes => &self.metadata_read,
            // The other limits are checked where they apply, not counted.
            _ => return Ok(()),
        };
        let total = used.load(Ordering::Relaxed).saturating_add(n);
        used.store(total, Ordering::Relaxed);
        if total > limit.value(&self.limits) { Err(self.over(limit, at())) } else { Ok(()) }
    }

    /// Fills `buf` from byte `offset` (metadata: counted against `Limits::metadata_bytes`); an error if that
    /// runs past the end of the image.
    pub(crate) fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), IsoError> {
        self.check_range(offset, buf.len() as u64)?;
        self.charge(Limit::MetadataBytes, buf.len() as u64, || format!("reading byte offset {offset}"))?;
        self.file.read_exact_at(buf, offset).map_err(|e| self.read_err(offset, e))
    }

    /// An error unless `len` bytes from `offset` lie inside the image.
    fn check_range(&self, offset: u64, len: u64) -> Result<(), IsoError> {
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(self.read_err(
                offset,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{len} bytes wanted, past the end of the image ({} bytes)", self.len),
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>, IsoError> {
        // Check before allocating: the length comes from the image.
        self.check_range(offset, len as u64)?;
        let mut buf = vec![0u8; len];
        self.read_exact_at(offset, &mut buf)?;
        Ok(buf)
    }

    /// The 2048-byte sector `n`, or `None` if the image ends before it.
    pub(crate) fn sector(&self, n: u64) -> Result<Option<Vec<u8>>, IsoError> {
        match n.checked_add(1).and_then(|e| e.checked_mul(SECTOR)) {
            Some(end) if end <= self.len => Ok(Some(self.read_vec(n * SECTOR, SECTOR as usize)?)),
            _ => Ok(None),
        }
    }

    /// Reads all bytes of `extents` (for directories: the caller bounds their total length first).
    pub(crate) fn read_extents(&self, extents: &[Extent]) -> Result<Vec<u8>, IsoError> {
        let mut out = Vec::new();
        for ext in extents {
            match ext {
                Extent::Disk { offset, len } | Extent::Inline { offset, len } => {
                    self.check_range(*offset, *len)?;
                    let start = out.len();
                    out.resize(start + *len as usize, 0);
                    self.read_exact_at(*offset, &mut out[start..])?;
                }
                Extent::Zeros { len } => out.resize(out.len() + *len as usize, 0),
            }
        }
        Ok(out)
    }

    fn read_err(&self, offset: u64, source: io::Error) -> IsoError {
        IsoError::Read { path: self.path.clone(), offset, source }
    }

    pub(crate) fn bad_udf(&self, what: impl Into<String>) -> IsoError {
        IsoError::BadUdf { path: self.path.clone(), what: what.into() }
    }

    pub(crate) fn bad_iso(&self, what: impl Into<String>) -> IsoError {
        IsoError::BadIso9660 { path: self.path.clone(), what: what.into() }
    }

    pub(crate) fn unsupported(&self, what: impl Into<String>) -> IsoError {
        IsoError::Unsupported { path: self.path.clone(), what: what.into() }
    }
}

/// One entry of a directory as a format parser lists it (already counted against `Limits::entries`).
pub(crate) struct Child<D> {
    pub name: String,
    pub size: u64,
    pub mtime: i64,
    /// File data (empty for directories); hard links to one UDF file share it.
    pub extents: Arc<FileExtents>,
    /// For a directory: how to list it.
    pub dir: Option<D>,
}

/// A parsed volume: everything `IsoFs` keeps besides the file handle.
pub(crate) struct Volume {
    pub format: IsoFormat,
    pub volume_id: String,
    pub entries: Vec<SourceEntry>,
    pub extents: Vec<Arc<FileExtents>>,
    pub skipped: Vec<Skipped>,
}

/// Entries of one kind the reader left out (UDF symbolic links, devices, FIFOs, sockets...): how many, and
/// the path of one, so the caller can tell the user what the stick will not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// What they are ("symbolic link", "FIFO"...).
    pub kind: &'static str,
    /// How many were skipped.
    pub count: u64,
    /// The path of the first one met (as the image spells it: escape it before showing it).
    pub example: String,
}

/// Directories already listed, as half-open byte ranges of where their records lie: a directory overlapping one
/// of them is a cycle (or a hard link, or two directories sharing records), whatever its exact start or the
/// descriptor that names it.
#[derive(Default)]
pub(crate) struct Visited(BTreeMap<u64, u64>);

impl Visited {
    /// Records `start..end` (at least one unit long); false if it overlaps a range recorded before.
    pub(crate) fn insert(&mut self, start: u64, end: u64) -> bool {
        let end = end.max(start.saturating_add(1));
        if let Some((_, &prev_end)) = self.0.range(..end).next_back()
            && prev_end > start
        {
            return false;
        }
        self.0.insert(start, end);
        true
    }
}

/// `path` for a message: its last 100 bytes or so when it is long.
fn shorten(path: &str) -> String {
    if path.len() <= 120 {
        return path.to_string();
    }
    let mut start = path.len() - 100;
    while !path.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &path[start..])
}

/// What `walk` finds: the entries, and each entry's extents.
pub(crate) type Walked = (Vec<SourceEntry>, Vec<Arc<FileExtents>>);

/// Walks the tree from `root` depth-first (children sorted by name, parents before children), with guards
/// against cycles, depth, path lengths and bad names. `spans` gives where a directory's records lie on disk (the
/// half-open byte ranges of its pieces: a directory overlapping one listed before, or itself, is a cycle);
/// `list` lists one (charging its entries; it gets the directory's path, "" for the root); `bad` makes the
/// format's error.
pub(crate) fn walk<D>(
    image: &Image,
    root: D,
    spans: impl Fn(&D) -> Result<Vec<(u64, u64)>, IsoError>,
    mut list: impl FnMut(&D, &str) -> Result<Vec<Child<D>>, IsoError>,
    bad: impl Fn(String) -> IsoError,
) -> Result<Walked, IsoError> {
    let limits = *image.limits();
    let mut visited = Visited::default();
    let mut visit = |dir: &D, path: &str| -> Result<(), IsoError> {
        for (start, end) in spans(dir)? {
            if !visited.insert(start, end) {
                return Err(IsoError::DirectoryCycle {
                    path: image.path.clone(),
                    dir: if path.is_empty() { "/".to_string() } else { shorten(path) },
                });
            }
        }
        Ok(())
    };
    visit(&root, "")?;
    let mut entries = Vec::new();
    let mut all_extents = Vec::new();
    let no_extents: Arc<FileExtents> = Arc::default();
    let mut path_bytes = 0u64;
    let mut stack: Vec<(String, u64, Child<D>)> = Vec::new();
    let mut push_children = |stack: &mut Vec<_>, parent: &str, depth: u64, mut kids: Vec<Child<D>>| {
        kids.sort_by(|a, b| a.name.cmp(&b.name));
        for pair in kids.windows(2) {
            if pair[0].name == pair[1].name {
                let shown = if parent.is_empty() { "/" } else { parent };
                return Err(bad(format!("directory {shown} holds \"{}\" twice", pair[0].name)));
            }
        }
        for kid in kids.into_iter().rev() {
            if kid.name.is_empty() || kid.name == "." || kid.name == ".." || kid.name.contains(['/', '\0']) {
                return Err(bad(format!("invalid file name {:?} in directory /{parent}", kid.name)));
            }
            let path = if parent.is_empty() { kid.name.clone() } else { format!("{parent}/{}", kid.name) };
            limits.charge_path(&mut path_bytes, path.len()).map_err(|limit| match limit {
                Limit::PathLen => image.over(limit, format!("a path under /{}", shorten(parent))),
                _ => image.over(limit, format!("at /{}", shorten(&path))),
            })?;
            stack.push((path, depth, kid));
        }
        Ok(())
    };
    let kids = list(&root, "")?;
    push_children(&mut stack, "", 1, kids)?;
    // Extent lists already checked: hard links share one (and it is checked once, not once per link).
    let mut checked: HashSet<usize> = HashSet::new();
    // Extents of the listed files, each link counting its file's again (what copying them all reads).
    let mut listed_extents = 0u64;
    while let Some((path, depth, kid)) = stack.pop() {
        let fresh = !kid.extents.is_empty() && checked.insert(Arc::as_ptr(&kid.extents) as usize);
        if fresh {
            for ext in kid.extents.iter() {
                if let Extent::Disk { offset, len } | Extent::Inline { offset, len } = ext
                    && offset.checked_add(*len).is_none_or(|end| end > image.len())
                {
                    return Err(bad(format!(
                        "data of {path} lies past the end of the image (bytes {offset}..{}, image has {})",
                        offset.saturating_add(*len),
                        image.len()
                    )));
                }
            }
            if let Some(len) = unaligned_piece(&kid.extents) {
                return Err(IsoError::UnalignedExtent {
                    path: image.path.clone(),
                    file: format!("/{}", shorten(&path)),
                    len,
                });
            }
        }
        if kid.dir.is_none() {
            listed_extents = listed_extents.saturating_add(kid.extents.len() as u64);
            if listed_extents > limits.listed_extents {
                return Err(image.over(Limit::ListedExtents, format!("at /{}", shorten(&path))));
            }
        }
        entries.push(SourceEntry {
            path: path.clone(),
            is_dir: kid.dir.is_some(),
            size: if kid.dir.is_some() { 0 } else { kid.size },
            mtime: kid.mtime,
        });
        all_extents.push(if kid.dir.is_some() { no_extents.clone() } else { kid.extents });
        if let Some(dir) = kid.dir {
            if depth >= limits.depth {
                return Err(image.over(Limit::Depth, format!("at /{}", shorten(&path))));
            }
            visit(&dir, &path)?;
            let kids = list(&dir, &path)?;
            push_children(&mut stack, &path, depth + 1, kids)?;
        }
    }
    Ok((entries, all_extents))
}

/// Seconds since the Unix epoch of a civil UTC date and time, `None` if a field is out of range.
pub(crate) fn civil_to_unix(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Option<i64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second))
}

/// Decodes big-endian UTF-16 (UCS-2 names of Joliet, compression id 16 of UDF); a trailing odd byte is dropped.
pub(crate) fn utf16be(bytes: &[u8]) -> String {
    let units = bytes.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
    char::decode_utf16(units).map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
}

/// Decodes Latin-1 bytes.
pub(crate) fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// What the Volume Recognition Sequence and the descriptors from sector 16 on hold.
#[derive(Debug, Default)]
struct Recognition {
    /// An NSR02/NSR03 descriptor: the image has UDF.
    nsr: bool,
    /// Sector of the ISO 9660 primary volume descriptor.
    pvd: Option<u64>,
    /// Sector of a Joliet supplementary volume descriptor.
    joliet: Option<u64>,
}

/// Most descriptors scanned from sector 16 on.
const MAX_RECOGNITION_SECTORS: u64 = 64;

fn recognize(image: &Image) -> Result<Recognition, IsoError> {
    let mut rec = Recognition::default();
    for n in 16..16 + MAX_RECOGNITION_SECTORS {
        let Some(s) = image.sector(n)? else { break };
        match &s[1..6] {
            b"CD001" => match s[0] {
                1 if rec.pvd.is_none() => rec.pvd = Some(n),
                2 if rec.joliet.is_none() && iso9660::is_joliet(&s) => rec.joliet = Some(n),
                _ => {}
            },
            b"NSR02" | b"NSR03" => rec.nsr = true,
            b"BEA01" | b"TEA01" | b"BOOT2" | b"CDW02" => {}
            _ => break,
        }
    }
    Ok(rec)
}

/// An ISO image opened for reading without mounting it.
pub struct IsoFs {
    image: Image,
    format: IsoFormat,
    volume_id: String,
    entries: Vec<SourceEntry>,
    extents: Vec<Arc<FileExtents>>,
    skipped: Vec<Skipped>,
}

impl fmt::Debug for IsoFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsoFs")
            .field("path", &self.image.path)
            .field("format", &self.format)
            .field("volume_id", &self.volume_id)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl IsoFs {
    /// Opens the image at `path` and reads its whole directory tree: UDF if the image
    /// has it (its ISO 9660 side is then ignored), else Joliet, else plain ISO 9660.
    pub fn open(path: &Path) -> Result<IsoFs, IsoError> {
        IsoFs::open_with(path, LIMITS)
    }

    /// `open` with other limits (tests use small ones).
    pub fn open_with(path: &Path, limits: Limits) -> Result<IsoFs, IsoError> {
        let image = Image::open(path, limits)?;
        let rec = recognize(&image)?;
        let volume = if rec.nsr || udf::has_anchor(&image)? {
            udf::read(&image)?
        } else if let Some(pvd) = rec.pvd {
            iso9660::read(&image, pvd, rec.joliet)?
        } else {
            return Err(IsoError::NotAnIso { path: path.to_path_buf() });
        };
        tracing::debug!(
            path = %path.display(),
            format = ?volume.format,
            volume_id = %volume.volume_id,
            entries = volume.entries.len(),
            metadata_bytes = image.metadata_read.load(Ordering::Relaxed),
            extents = image.extents_used.load(Ordering::Relaxed),
            "opened ISO image"
        );
        Ok(IsoFs {
            image,
            format: volume.format,
            volume_id: volume.volume_id,
            entries: volume.entries,
            extents: volume.extents,
            skipped: volume.skipped,
        })
    }

    /// The image's open file (what was parsed: callers check its identity, and attach a loop device to it).
    pub fn file(&self) -> &File {
        &self.image.file
    }

    /// The file system the content was read from.
    pub fn format(&self) -> IsoFormat {
        self.format
    }

    /// UDF: the Logical Volume Identifier (else the Primary Volume Descriptor's);
    /// Joliet / ISO 9660: the primary volume descriptor's volume identifier.
    pub fn volume_id(&self) -> &str {
        &self.volume_id
    }

    /// Every directory and file except the root, parents before children, sorted by name within a directory.
    pub fn entries(&self) -> &[SourceEntry] {
        &self.entries
    }

    /// Entries left out of `entries()` because they are neither files nor directories (UDF symbolic links,
    /// devices...): one summary per kind, in the order first met. Empty for a Windows ISO.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Where the file `entries()[index]` lies in the image when it is stored as one run of bytes (as Windows
    /// ISOs store their files): the image's open file, the offset and the length. None for a directory, or a
    /// file in pieces, with holes or embedded in its descriptor.
    pub fn file_window(&self, index: usize) -> Option<(&File, &Path, u64, u64)> {
        let entry = self.entries.get(index).filter(|e| !e.is_dir)?;
        let extents = self.extents.get(index)?;
        let mut start = None;
        let mut end = 0u64;
        for ext in extents.iter() {
            match ext {
                Extent::Disk { offset, len } if start.is_none() || *offset == end => {
                    start.get_or_insert(*offset);
                    end = offset.checked_add(*len)?;
                }
                Extent::Disk { len: 0, .. } => {}
                _ => return None,
            }
        }
        let start = start?;
        (end - start == entry.size && end <= self.image.len).then_some((
            &self.image.file,
            self.image.path.as_path(),
            start,
            entry.size,
        ))
    }

    /// A streaming reader of the file `entries()[index]`.
    pub fn open_file(&self, index: usize) -> Result<IsoFileReader<'_>, IsoError> {
        let entry = self.entries.get(index).ok_or_else(|| IsoError::NoSuchEntry {
            path: self.image.path.clone(),
            index,
            count: self.entries.len(),
        })?;
        if entry.is_dir {
            return Err(IsoError::IsDirectory { path: self.image.path.clone(), entry: entry.path.clone() });
        }
        let extents = self.extents.get(index).map_or(&NO_EXTENTS, |v| &**v);
        Ok(IsoFileReader { image: &self.image, extents, index: 0, within: 0, remaining: entry.size, size: entry.size })
    }
}

static NO_EXTENTS: FileExtents = FileExtents { extents: Vec::new(), starts: Vec::new() };

/// Reads one file of an `IsoFs`, extent after extent, with positioned reads.
pub struct IsoFileReader<'a> {
    image: &'a Image,
    extents: &'a FileExtents,
    /// Current extent.
    index: usize,
    /// Bytes already read from the current extent.
    within: u64,
    /// Bytes of the file still to read.
    remaining: u64,
    /// The file's size.
    size: u64,
}

impl fmt::Debug for IsoFileReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IsoFileReader")
            .field("extents", &self.extents.extents)
            .field("index", &self.index)
            .field("within", &self.within)
            .field("remaining", &self.remaining)
            .finish()
    }
}

/// The extent holding byte `at` of a file whose extents start at `starts` (sorted), and the offset inside it;
/// `(starts.len(), 0)` at or past the end of the last one. Zero-length extents are passed over: of extents
/// starting at the same byte, the last (the only one that can hold bytes) is chosen.
fn locate(starts: &[u64], lens: impl Fn(usize) -> u64, at: u64) -> (usize, u64) {
    // The first extent starting after `at`; the one before it holds `at`, if it is long enough.
    let after = starts.partition_point(|&s| s <= at);
    match after.checked_sub(1) {
        Some(i) if at - starts[i] < lens(i) => (i, at - starts[i]),
        // Past the end of the last extent (`after` is then `starts.len()`), or no extents at all.
        _ => (after, 0),
    }
}

impl Read for IsoFileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.remaining == 0 || buf.is_empty() {
                return Ok(0);
            }
            let Some(ext) = self.extents.get(self.index) else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file data of {} ends {} bytes early", self.image.path.display(), self.remaining),
                ));
            };
            let avail = ext.len().saturating_sub(self.within);
            if avail == 0 {
                self.index += 1;
                self.within = 0;
                continue;
            }
            let n = (buf.len() as u64).min(avail).min(self.remaining) as usize;
            let out = &mut buf[..n];
            let got = match ext {
                Extent::Disk { offset, .. } | Extent::Inline { offset, .. } => {
                    let at = offset + self.within;
                    match self.image.file.read_at(out, at) {
                        Ok(0) => {
                            let source = io::Error::new(io::ErrorKind::UnexpectedEof, "image ends inside file data");
                            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, self.image.read_err(at, source)));
                        }
                        Ok(got) => got,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            return Err(io::Error::new(e.kind(), self.image.read_err(at, e)));
                        }
                    }
                }
                Extent::Zeros { .. } => {
                    out.fill(0);
                    n
                }
            };
            self.within += got as u64;
            self.remaining -= got as u64;
            return Ok(got);
        }
    }
}

impl io::Seek for IsoFileReader<'_> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let target = match pos {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => self.size.checked_add_signed(d),
            io::SeekFrom::Current(d) => (self.size - self.remaining).checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start of the file"))?;
        let at = target.min(self.size);
        let (index, within) = locate(&self.extents.starts, |i| self.extents[i].len(), at);
        self.index = index;
        self.within = within;
        self.remaining = self.size - at;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::{Duration, SystemTime};

    /// 2021-05-06 07:08:09 UTC.
    const BIG_MTIME: i64 = 1_620_284_889;

    /// Writes the source tree used with genisoimage under `root`.
    fn make_tree(root: &Path) {
        let w = |rel: &str, data: &[u8]| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, data).expect("write");
        };
        w("a dir/deeper/x.txt", b"hello\n");
        w("a dir/Mixed Case Name.TXT", b"mixed");
        w("ü ñ 日本.txt", "ü ñ 日本\n".as_bytes());
        w("empty", b"");
        std::fs::create_dir_all(root.join("a dir/empty dir")).expect("mkdir");
        let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        w("big.bin", &big);
        let f = File::options().write(true).open(root.join("big.bin")).expect("open big.bin");
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(BIG_MTIME as u64)).expect("set mtime");
    }

    /// (path, is_dir, size) of everything under `root`, in the order `IsoFs` lists entries.
    fn expected(root: &Path) -> Vec<(String, bool, u64)> {
        fn go(dir: &Path, prefix: &str, out: &mut Vec<(String, bool, u64)>) {
            let mut kids: Vec<_> = std::fs::read_dir(dir).expect("read_dir").map(|e| e.expect("dir entry")).collect();
            kids.sort_by_key(|e| e.file_name());
            for kid in kids {
                let name = kid.file_name().into_string().expect("utf-8 name");
                let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
                let meta = kid.metadata().expect("metadata");
                if meta.is_dir() {
                    out.push((path.clone(), true, 0));
                    go(&kid.path(), &path, out);
                } else {
                    out.push((path, false, meta.len()));
                }
            }
        }
        let mut out = Vec::new();
        go(root, "", &mut out);
        out
    }

    /// Runs genisoimage with `args` on `src`, writing `out`; `None` (after saying so) if it is not installed.
    fn genisoimage(args: &[&str], src: &Path, out: &Path) -> Option<()> {
        let status =
            Command::new("genisoimage").args(["-quiet", "-V", "WOE_TEST", "-o"]).arg(out).args(args).arg(src).status();
        match status {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                crate::report_skip("genisoimage tests", "genisoimage not installed");
                None
            }
            Err(e) => panic!("cannot run genisoimage: {e}"),
            Ok(s) => {
                assert!(s.success(), "genisoimage {args:?} failed: {s}");
                Some(())
            }
        }
    }

    fn read_file(fs: &IsoFs, index: usize) -> Vec<u8> {
        let mut out = Vec::new();
        fs.open_file(index).expect("open file").read_to_end(&mut out).expect("read file");
        out
    }

    /// Checks paths, kinds, sizes, bytes and one mtime of `fs` against the source tree.
    fn check_against_source(fs: &IsoFs, src: &Path) {
        let got: Vec<_> = fs.entries().iter().map(|e| (e.path.clone(), e.is_dir, e.size)).collect();
        assert_eq!(got, expected(src));
        for (i, e) in fs.entries().iter().enumerate() {
            if !e.is_dir {
                let want = std::fs::read(src.join(&e.path)).expect("source file");
                assert!(read_file(fs, i) == want, "content of {} differs", e.path);
            }
            if e.path == "big.bin" {
                assert_eq!(e.mtime, BIG_MTIME);
            }
        }
    }

    #[test]
    fn a_fifo_in_the_isos_place_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("swapped.iso");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        // No writer ever opens the FIFO: a plain open would block this test forever.
        let err = IsoFs::open(&fifo).expect_err("a FIFO is not an image");
        assert!(matches!(err, IsoError::Open { .. }), "{err:?}");
        assert!(format!("{:#}", anyhow::Error::from(err)).contains("FIFO"));
    }

    #[test]
    fn genisoimage_udf_image_matches_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        make_tree(&src);
        let iso = dir.path().join("udf.iso");
        if genisoimage(&["-udf", "-J", "-R"], &src, &iso).is_none() {
            return;
        }
        let fs = IsoFs::open(&iso).expect("open");
        assert_eq!(fs.format(), IsoFormat::Udf);
        assert_eq!(fs.volume_id(), "WOE_TEST");
        check_against_source(&fs, &src);
    }

    #[test]
    fn genisoimage_joliet_and_plain_images() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        make_tree(&src);
        let iso = dir.path().join("joliet.iso");
        if genisoimage(&["-J", "-R"], &src, &iso).is_none() {
            return;
        }
        let fs = IsoFs::open(&iso).expect("open");
        assert_eq!(fs.format(), IsoFormat::Joliet);
        assert_eq!(fs.volume_id(), "WOE_TEST");
        check_against_source(&fs, &src);

        let iso = dir.path().join("plain.iso");
        if genisoimage(&[], &src, &iso).is_none() {
            return;
        }
        let fs = IsoFs::open(&iso).expect("open");
        assert_eq!(fs.format(), IsoFormat::Iso9660);
        let i = fs.entries().iter().position(|e| e.path == "A_DIR/DEEPER/X.TXT").expect("A_DIR/DEEPER/X.TXT");
        assert_eq!(read_file(&fs, i), b"hello\n");
        let i = fs.entries().iter().position(|e| e.path == "BIG.BIN").expect("BIG.BIN");
        assert_eq!(fs.entries()[i].mtime, BIG_MTIME);
        assert_eq!(read_file(&fs, i), std::fs::read(src.join("big.bin")).expect("big"));
    }

    #[test]
    fn genisoimage_udf_wins_over_a_different_iso9660_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        make_tree(&src);
        std::fs::write(src.join("secret.txt"), b"only in UDF").expect("write");
        let iso = dir.path().join("hidden.iso");
        // genisoimage's UDF tree follows its Joliet tree, so leave Joliet out and hide
        // the file from the ISO 9660 tree only.
        if genisoimage(&["-udf", "-R", "-hide", "secret.txt"], &src, &iso).is_none() {
            return;
        }
        // The ISO 9660 side really holds a different tree...
        let image = Image::open(&iso, LIMITS).expect("image");
        let rec = recognize(&image).expect("recognize");
        assert!(rec.nsr);
        assert_eq!(rec.joliet, None);
        let pvd = rec.pvd.expect("primary volume descriptor");
        let iso_side = iso9660::read(&image, pvd, None).expect("ISO 9660 side");
        assert!(iso_side.entries.iter().any(|e| e.path == "BIG.BIN"));
        assert!(iso_side.entries.iter().all(|e| e.path != "SECRET.TXT"));
        // ...but the content comes from UDF.
        let fs = IsoFs::open(&iso).expect("open");
        assert_eq!(fs.format(), IsoFormat::Udf);
        check_against_source(&fs, &src);
    }

    /// A sparse 1.2 GiB file, which genisoimage stores as two UDF extents (writes a 1.2 GB image, ~3 s).
    #[test]
    fn genisoimage_file_over_1_gib_has_several_extents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir(&src).expect("mkdir");
        let size = 1200u64 << 20;
        let f = File::create(src.join("huge.bin")).expect("create");
        f.set_len(size).expect("set_len");
        f.write_at(b"END", size - 3).expect("write tail");
        f.write_at(b"START", 0).expect("write head");
        let boundary = 0x3FFF_F800u64; // where genisoimage's first extent ends
        f.write_at(b"ACROSS", boundary - 3).expect("write boundary");
        let iso = dir.path().join("huge.iso");
        if genisoimage(&["-udf", "-J"], &src, &iso).is_none() {
            return;
        }
        let fs = IsoFs::open(&iso).expect("open");
        assert_eq!(fs.format(), IsoFormat::Udf);
        assert_eq!(fs.entries()[0].size, size);
        assert!(fs.extents[0].len() >= 2, "{:?}", fs.extents[0]);
        let mut r = fs.open_file(0).expect("open");
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        let mut head = Vec::new();
        let mut tail = Vec::new();
        loop {
            let n = r.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            if total == 0 {
                head.extend_from_slice(&buf[..5.min(n)]);
            }
            total += n as u64;
            tail = buf[..n].to_vec();
        }
        assert_eq!(total, size);
        assert_eq!(head, b"START");
        assert!(tail.ends_with(b"END"));
        // Positioned reads (the WIM inspection seeks to its tables): across the extent boundary, from the end,
        // back to the start, relative, and past the end.
        use std::io::{Seek, SeekFrom};
        let mut six = [0u8; 6];
        assert_eq!(r.seek(SeekFrom::Start(boundary - 3)).expect("seek"), boundary - 3);
        r.read_exact(&mut six).expect("read across");
        assert_eq!(&six, b"ACROSS");
        r.seek(SeekFrom::End(-3)).expect("seek end");
        r.read_exact(&mut six[..3]).expect("read tail");
        assert_eq!(&six[..3], b"END");
        assert_eq!(r.read(&mut six).expect("at eof"), 0);
        r.seek(SeekFrom::Start(0)).expect("rewind");
        r.seek(SeekFrom::Current(1)).expect("relative");
        r.read_exact(&mut six[..4]).expect("read head");
        assert_eq!(&six[..4], b"TART");
        r.seek(SeekFrom::Start(size + 10)).expect("past the end");
        assert_eq!(r.read(&mut six).expect("past eof"), 0);
        assert!(r.seek(SeekFrom::Current(-(size as i64) - 100)).is_err());
    }

    #[test]
    fn which_errors_blame_the_image() {
        let path = PathBuf::from("x.iso");
        let read = |kind| IsoError::Read { path: path.clone(), offset: 0, source: io::Error::new(kind, "x") };
        assert!(read(io::ErrorKind::UnexpectedEof).is_bad_image(), "truncated");
        assert!(!read(io::ErrorKind::Other).is_bad_image(), "an I/O error");
        assert!(!IsoError::Open { path: path.clone(), source: io::ErrorKind::NotFound.into() }.is_bad_image());
        assert!(IsoError::NotAnIso { path: path.clone() }.is_bad_image());
        let limit = IsoError::Limit { path: path.clone(), limit: Limit::Entries, value: 5, at: "here".into() };
        assert!(limit.is_bad_image());
        assert_eq!(limit.limit(), Some((Limit::Entries, 5)));
        assert_eq!(IsoError::NotAnIso { path: path.clone() }.limit(), None);
        let cycle = IsoError::DirectoryCycle { path: path.clone(), dir: "a/b".into() };
        assert!(cycle.is_bad_image());
        assert_eq!(cycle.limit(), None);
        assert_eq!(
            limit.to_string(),
            "the ISO image x.iso is damaged or hostile: it goes over woesafe's limit of 5 entries (files and \
             directories) in the volume (here)"
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_to_unix(1970, 1, 1, 0, 0, 0), Some(0));
        assert_eq!(civil_to_unix(2000, 3, 1, 0, 0, 0), Some(951_868_800));
        assert_eq!(civil_to_unix(1969, 12, 31, 23, 59, 59), Some(-1));
        assert_eq!(civil_to_unix(2020, 13, 1, 0, 0, 0), None);
    }

    #[test]
    fn directories_that_overlap_are_refused() {
        let mut v = Visited::default();
        assert!(v.insert(100, 200));
        assert!(!v.insert(100, 200), "the same directory again");
        assert!(!v.insert(150, 160), "inside");
        assert!(!v.insert(101, 4000), "starting inside, at another sector");
        assert!(!v.insert(50, 101), "ending inside");
        assert!(!v.insert(0, 1000), "around it");
        assert!(!v.insert(100, 100), "empty, at its start");
        assert!(v.insert(200, 210), "right after it");
        assert!(v.insert(90, 100), "right before it");
        assert!(v.insert(5, 5), "empty counts as one unit");
        assert!(!v.insert(5, 6));
    }

    #[test]
    fn seeks_find_the_extent_by_binary_search() {
        let exts = [
            Extent::Disk { offset: 1000, len: 10 },
            Extent::Zeros { len: 0 },
            Extent::Zeros { len: 5 },
            Extent::Inline { offset: 50, len: 3 },
        ];
        let starts = [0, 10, 10, 15];
        assert_eq!(FileExtents::new(exts.to_vec()).starts, starts, "worked out once, with the list");
        let at = |pos| locate(&starts, |i| exts[i].len(), pos);
        assert_eq!(at(0), (0, 0));
        assert_eq!(at(9), (0, 9));
        assert_eq!(at(10), (2, 0), "the empty extent is passed over");
        assert_eq!(at(14), (2, 4));
        assert_eq!(at(15), (3, 0));
        assert_eq!(at(17), (3, 2));
        assert_eq!(at(18), (4, 0), "the end");
        assert_eq!(at(1 << 40), (4, 0));
        assert_eq!(locate(&[], |_| 0, 0), (0, 0));
    }

    #[test]
    fn truncating_extents() {
        let exts = vec![
            Extent::Disk { offset: 0, len: 10 },
            Extent::Zeros { len: 10 },
            Extent::Inline { offset: 100, len: 3 },
        ];
        let t = truncate_extents(exts.clone(), 15).expect("enough");
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].len(), 5);
        assert_eq!(truncate_extents(exts.clone(), 23).expect("exact").len(), 3);
        assert_eq!(
            truncate_extents(exts.clone(), 21).expect("into the inline data")[2],
            Extent::Inline { offset: 100, len: 1 }
        );
        assert!(truncate_extents(exts, 24).is_none());
        assert!(truncate_extents(Vec::new(), 0).expect("empty").is_empty());
    }
}
