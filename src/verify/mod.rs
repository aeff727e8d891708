//! Verification of a written stick against its ISO: the partition table, the boot code, the filesystem's boot
//! sector, every file read back from the stick (FAT in userspace, NTFS through a mount the caller provides)
//! and compared with the ISO's, and woesafe's own additions checked for what they must be. Mismatches are a
//! typed list (path + what is wrong), never an error: errors are for what stops the check itself.

pub mod compare;
pub mod fat;
pub mod swm;
pub mod table;
pub mod worker;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::boot::{bios, uefi};
use crate::copy::SourceTree;
use crate::media::source::{Source, SourceError};
use crate::media::wimsplit;
use crate::protocol::Table;
use crate::stick::choose::Fs;
use compare::{Check, StickEntry};
use table::{GrubImages, StickLayout};

/// What is wrong at a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// On the ISO, not on the stick.
    Missing,
    /// On the stick, not on the ISO, and not one of woesafe's additions.
    Unexpected {
        is_dir: bool,
    },
    /// A directory on the ISO, a file on the stick.
    NotADirectory,
    /// A file on the ISO, a directory on the stick.
    NotAFile,
    /// The stick spells the path differently.
    Spelling {
        found: String,
    },
    Size {
        expected: u64,
        found: u64,
    },
    /// The bytes differ, first at this offset.
    Content {
        offset: u64,
    },
    /// The stick's copy cannot be read (a damaged cluster chain, an I/O error).
    Unreadable {
        what: String,
    },
    /// Not what it must be (woesafe's additions, tables, boot sectors).
    Wrong {
        what: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing => write!(f, "missing on the stick"),
            Problem::Unexpected { is_dir: true } => write!(f, "a directory the ISO does not have"),
            Problem::Unexpected { is_dir: false } => write!(f, "a file the ISO does not have"),
            Problem::NotADirectory => write!(f, "a file on the stick, a directory on the ISO"),
            Problem::NotAFile => write!(f, "a directory on the stick, a file on the ISO"),
            Problem::Spelling { found } => write!(f, "spelled {found} on the stick"),
            Problem::Size { expected, found } => write!(f, "{found} bytes on the stick, {expected} expected"),
            Problem::Content { offset } => write!(f, "content differs (first at byte {offset})"),
            Problem::Unreadable { what } => write!(f, "cannot be read back: {what}"),
            Problem::Wrong { what } => write!(f, "{what}"),
        }
    }
}

/// One difference between the stick and what woesafe writes for the ISO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// A path on the stick ("sources/boot.wim"), or a structure in parentheses ("(MBR boot code)").
    pub path: String,
    pub problem: Problem,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// The outcome of a verification: identical when `mismatches` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub table: Option<Table>,
    pub fs: Option<Fs>,
    /// GRUB's BIOS boot code is in sector 0.
    pub bios_boot: bool,
    /// The stick has a UEFI bridge partition.
    pub bridge: bool,
    pub files: u64,
    pub dirs: u64,
    /// Bytes read back from the stick's files and compared.
    pub bytes: u64,
    pub mismatches: Vec<Mismatch>,
    /// What was not checked, and why.
    pub notes: Vec<String>,
}

impl VerifyReport {
    pub fn identical(&self) -> bool {
        self.mismatches.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the stick {path}: {source}")]
    Device {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot read {path} on the ISO: {source}")]
    ReadIso {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the stick {path} is NTFS: its files are read through ntfs-3g, which needs a mount (the worker's)")]
    NeedsMount { path: PathBuf },
    #[error("the NTFS stick holds more than {0} entries, or paths nested too deep or too long")]
    WalkLimit(usize),
    #[error("{what}: {message}")]
    Setup { what: &'static str, message: String },
    #[error("stopped on request")]
    Stopped,
}

/// How to reach the stick's files.
pub enum StickFiles<'a> {
    /// FAT32: read in userspace from the device.
    Userspace,
    /// NTFS: mounted (ntfs-3g, read-only) at this path by the caller.
    Mounted(&'a Path),
}

/// Drop what the page cache holds of `device` so that every read comes from the device: flush it (BLKFLSBUF
/// for a block device) and drop its cached pages (POSIX_FADV_DONTNEED).
pub fn drop_cached(device: &File) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    device.sync_all().map_err(|e| format!("fsync: {e}"))?;
    if device.metadata().is_ok_and(|m| m.file_type().is_block_device()) {
        crate::sys::loopdev::flush_buffers(device).map_err(|e| format!("BLKFLSBUF: {e}"))?;
    }
    nix::fcntl::posix_fadvise(device, 0, 0, nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED)
        .map_err(|e| format!("posix_fadvise(DONTNEED): {e}"))
}

/// Read the stick's partition table (for choosing how to reach its files) and what is wrong with it.
pub fn probe(device: &File, device_path: &Path) -> Result<(Option<StickLayout>, Vec<Mismatch>), VerifyError> {
    let dev_err = |source| VerifyError::Device { path: device_path.to_path_buf(), source };
    let size = crate::sys::loopdev::device_size(device).map_err(dev_err)?;
    let sector = crate::sys::loopdev::logical_sector_size(device).map_err(dev_err)?;
    let read = reader(device, size);
    table::check_table(&read, size, sector).map_err(dev_err)
}

/// Reads of the device, bounded by its size.
fn reader(device: &File, size: u64) -> impl Fn(u64, usize) -> std::io::Result<Vec<u8>> + '_ {
    move |offset: u64, len: usize| {
        if offset.checked_add(len as u64).is_none_or(|end| end > size) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("byte {offset} is past the end"),
            ));
        }
        let mut buf = vec![0u8; len];
        device.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

/// GRUB's boot.img and the core image bios.rs installs (grub-mkimage is deterministic), built in `scratch`;
/// None with the reason when GRUB for BIOS is not installed.
pub fn grub_images(scratch: &Path) -> Result<GrubImages, String> {
    bios::check_grub_installed().map_err(|e| e.to_string())?;
    let boot = std::fs::read(Path::new(bios::GRUB_I386_PC_DIR).join("boot.img")).map_err(|e| e.to_string())?;
    let boot_img: [u8; 512] = boot.try_into().map_err(|_| "GRUB's boot.img is not 512 bytes".to_string())?;
    let core = scratch.join("core.img");
    crate::sys::helper::run("grub-mkimage", &bios::mkimage_args(&core), "grub-common").map_err(|e| e.to_string())?;
    let core_img = std::fs::read(&core).map_err(|e| e.to_string())?;
    Ok(GrubImages { boot_img, core_img })
}

/// mkfs.fat's FAT32 boot sector (its jump, OEM name and boot code are the same whatever the size), from a
/// small sparse file in `scratch`.
pub fn mkfs_fat_reference(scratch: &Path) -> Result<Vec<u8>, String> {
    let path = scratch.join("reference.fat");
    let f =
        std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(|e| e.to_string())?;
    f.set_len(crate::stick::fat::MIN_FAT32_DISK + (4 << 20)).map_err(|e| e.to_string())?;
    let args =
        crate::stick::fat::mkfs_args(&path, crate::stick::fat::MIN_FAT32_DISK + (4 << 20), "REFERENCE", 1, 0, 512);
    let result = crate::sys::helper::run("mkfs.fat", &args, "dosfstools").map_err(|e| e.to_string());
    let mut bs = vec![0u8; 512];
    let read = f.read_exact_at(&mut bs, 0).map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&path);
    result?;
    read?;
    Ok(bs)
}

/// What a walk found (each entry with its path below the root) and what it could not read.
type Walked = (Vec<(StickEntry, PathBuf)>, Vec<Mismatch>);

/// Walk a mounted NTFS stick within the FAT reader's bounds (paths, entries, depth: an error). A directory or
/// entry that cannot be read (ntfs-3g's EIO on a damaged record) is a mismatch, and the walk goes on.
fn walk_mounted(root: &Path, limits: &fat::Limits) -> Result<Walked, VerifyError> {
    let unreadable = |rel: &Path, e: std::io::Error| Mismatch {
        path: if rel.as_os_str().is_empty() { "/".into() } else { rel.to_string_lossy().into_owned() },
        problem: Problem::Unreadable { what: e.to_string() },
    };
    let mut out = Vec::new();
    let mut bad = Vec::new();
    let mut stack = vec![(PathBuf::new(), 0usize)];
    let mut path_bytes = 0usize;
    while let Some((rel, depth)) = stack.pop() {
        if depth > limits.depth {
            return Err(VerifyError::WalkLimit(limits.entries));
        }
        // Never more names in memory than the limit allows.
        let names: Result<Vec<_>, _> = std::fs::read_dir(root.join(&rel)).and_then(|d| {
            d.take(limits.entries.saturating_sub(out.len()) + 1).map(|d| d.map(|d| d.file_name())).collect()
        });
        let mut names = match names {
            Ok(n) => n,
            Err(e) => {
                bad.push(unreadable(&rel, e));
                continue;
            }
        };
        names.sort();
        let mut children = Vec::new();
        for name in names {
            let r = rel.join(&name);
            let path = r.to_string_lossy().into_owned();
            path_bytes += path.len();
            if out.len() >= limits.entries || path.len() > limits.path_bytes || path_bytes > limits.all_path_bytes {
                return Err(VerifyError::WalkLimit(limits.entries));
            }
            let meta = match std::fs::symlink_metadata(root.join(&r)) {
                Ok(m) => m,
                Err(e) => {
                    bad.push(unreadable(&r, e));
                    continue;
                }
            };
            let is_dir = meta.file_type().is_dir();
            if is_dir {
                children.push((r.clone(), depth + 1));
            }
            out.push((StickEntry { path, is_dir, size: if is_dir { 0 } else { meta.len() } }, r));
        }
        stack.extend(children.into_iter().rev());
    }
    Ok((out, bad))
}

/// The stick's files, as read.
enum Files<'v, 'a> {
    Fat(&'v fat::FatVolume<'a>, Vec<fat::FatEntry>),
    Mounted(&'v Path, Vec<PathBuf>),
}

impl Files<'_, '_> {
    fn open(&self, index: usize) -> std::io::Result<Box<dyn Read + '_>> {
        match self {
            Files::Fat(vol, entries) => {
                let e = &entries[index];
                Ok(Box::new(vol.open_file(&e.path, e.first_cluster, e.size)))
            }
            Files::Mounted(root, rels) => Ok(Box::new(Self::open_mounted(root, &rels[index])?)),
        }
    }

    fn open_mounted(root: &Path, rel: &Path) -> std::io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(root.join(rel))?;
        if !f.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok(f)
    }

    /// `buf.len()` bytes of the file at `offset` (inside its size: the caller checks).
    fn read_at(&self, index: usize, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        match self {
            Files::Fat(vol, entries) => {
                let e = &entries[index];
                vol.read_file_at(&e.path, e.first_cluster, e.size, offset, buf)
                    .map_err(|e| std::io::Error::other(e.to_string()))
            }
            Files::Mounted(root, rels) => Self::open_mounted(root, &rels[index])?.read_exact_at(buf, offset),
        }
    }
}

/// Buffer size of the comparisons.
const CHUNK: usize = 1 << 20;

/// How two streams of `len` bytes compare.
enum Outcome {
    Same,
    Differs(u64),
    Unreadable(String),
}

struct Progress<'p> {
    done: u64,
    total: u64,
    /// Bytes really read back and compared (`done` also counts what a mismatch let us skip).
    compared: u64,
    report: &'p mut dyn FnMut(u64, u64),
}

impl Progress<'_> {
    fn compared(&mut self, n: u64) {
        self.compared += n;
        self.add(n);
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        (self.report)(self.done.min(self.total), self.total);
    }
}

fn stop_check() -> Result<(), VerifyError> {
    if crate::sys::stop::stop_requested() { Err(VerifyError::Stopped) } else { Ok(()) }
}

/// Compare `len` bytes of the ISO's stream with the stick's. An error on the ISO side is an error; on the
/// stick's side, a mismatch.
fn compare_streams(
    iso_path: &str,
    expected: &mut dyn Read,
    found: &mut dyn Read,
    len: u64,
    progress: &mut Progress,
) -> Result<Outcome, VerifyError> {
    let mut a = vec![0u8; CHUNK];
    let mut b = vec![0u8; CHUNK];
    let mut at = 0u64;
    while at < len {
        stop_check()?;
        let n = (len - at).min(CHUNK as u64) as usize;
        expected
            .read_exact(&mut a[..n])
            .map_err(|source| VerifyError::ReadIso { path: iso_path.to_string(), source })?;
        if let Err(e) = found.read_exact(&mut b[..n]) {
            return Ok(Outcome::Unreadable(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                format!("it ends before byte {}", at + n as u64)
            } else {
                e.to_string()
            }));
        }
        if let Some(d) = compare::first_difference(&a[..n], &b[..n]) {
            progress.compared(n as u64);
            progress.add(len - at - n as u64);
            return Ok(Outcome::Differs(at + d as u64));
        }
        at += n as u64;
        progress.compared(n as u64);
    }
    Ok(Outcome::Same)
}

fn outcome_mismatch(path: &str, o: Outcome) -> Option<Mismatch> {
    match o {
        Outcome::Same => None,
        Outcome::Differs(offset) => Some(Mismatch { path: path.into(), problem: Problem::Content { offset } }),
        Outcome::Unreadable(what) => Some(Mismatch { path: path.into(), problem: Problem::Unreadable { what } }),
    }
}

/// Read a small stick file whole (at most `cap` bytes); Err: the mismatch to report.
fn read_small(files: &Files, index: usize, path: &str, cap: u64) -> Result<Vec<u8>, Mismatch> {
    let unreadable = |what: String| Mismatch { path: path.into(), problem: Problem::Unreadable { what } };
    let r = files.open(index).map_err(|e| unreadable(e.to_string()))?;
    match crate::sys::argfile::read_capped(r, cap) {
        Ok(Some(data)) => Ok(data),
        Ok(None) => Err(Mismatch { path: path.into(), problem: Problem::Wrong { what: format!("over {cap} bytes") } }),
        Err(e) => Err(unreadable(e.to_string())),
    }
}

fn read_iso_small(source: &Source, index: usize, cap: u64) -> Result<Option<Vec<u8>>, VerifyError> {
    let path = source.entries()[index].path.clone();
    let err = |source| VerifyError::ReadIso { path: path.clone(), source };
    crate::sys::argfile::read_capped(source.open(index).map_err(err)?, cap).map_err(err)
}

/// Check a written stick against its ISO. `device` is the whole stick (or image file), opened read-only (and
/// locked by the caller); `source` the ISO, opened with the userspace reader (or the kernel's); `files` how to
/// reach the files (FAT32 in userspace; NTFS only through a read-only mount of the main partition the caller
/// made); `scratch` a directory for GRUB's core image and mkfs.fat's reference boot sector (a few MiB, removed
/// here). `progress(done, total)` is called as file bytes are compared. The page cache of `device` is dropped
/// first, so what is read comes from the device.
///
/// Mismatches are in the report (never an error); an error means the check could not be done (the stick or the
/// ISO unreadable as a whole, a stop request).
pub fn check_stick(
    device: &File,
    device_path: &Path,
    source: &Source,
    files: StickFiles,
    scratch: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport, VerifyError> {
    let cache = drop_cached(device);
    let dev_err = |source| VerifyError::Device { path: device_path.to_path_buf(), source };
    let size = crate::sys::loopdev::device_size(device).map_err(dev_err)?;
    let sector = crate::sys::loopdev::logical_sector_size(device).map_err(dev_err)?;
    let read = reader(device, size);
    let (layout, mut mismatches) = table::check_table(&read, size, sector).map_err(dev_err)?;
    let mut report = VerifyReport {
        table: layout.map(|l| l.table),
        fs: layout.map(|l| l.fs),
        bios_boot: false,
        bridge: layout.is_some_and(|l| l.bridge.is_some()),
        files: 0,
        dirs: 0,
        bytes: 0,
        mismatches: Vec::new(),
        notes: cache
            .err()
            .map(|why| format!("the device's cache could not be dropped ({why}): some bytes may have come from memory"))
            .into_iter()
            .collect(),
    };
    let Some(layout) = layout else {
        report.mismatches = mismatches;
        return Ok(report);
    };

    // Boot code: GRUB's boot.img in sector 0 and the core image in the gap, as bios.rs installs them.
    let has_code = read(0, 440).map_err(dev_err)?.iter().any(|&b| b != 0);
    let grub = if layout.table == Table::Gpt || !has_code {
        None
    } else {
        match grub_images(scratch) {
            Ok(g) => Some(g),
            Err(why) => {
                report.notes.push(format!("BIOS boot code not compared: {why}"));
                None
            }
        }
    };
    let (bios_boot, bad) = table::check_boot_code(&read, &layout, grub.as_ref()).map_err(dev_err)?;
    report.bios_boot = bios_boot;
    mismatches.extend(bad);
    let _ = std::fs::remove_file(scratch.join("core.img"));

    // The filesystem's boot sector.
    match layout.fs {
        Fs::Fat32 => {
            let reference = match mkfs_fat_reference(scratch) {
                Ok(r) => Some(r),
                Err(why) => {
                    report.notes.push(format!("FAT32 boot code not compared with mkfs.fat's: {why}"));
                    None
                }
            };
            mismatches.extend(
                table::check_fat_boot_sector(&read, layout.main, layout.sector, reference.as_deref())
                    .map_err(dev_err)?,
            );
        }
        Fs::Ntfs => {
            mismatches.extend(table::check_ntfs_boot_sector(&read, layout.main, layout.sector).map_err(dev_err)?)
        }
    }

    // The files.
    let volume;
    let (stick, files): (Vec<StickEntry>, Files) = match (layout.fs, files) {
        (Fs::Fat32, _) => {
            volume = match fat::FatVolume::open(device, layout.main.offset, layout.main.size) {
                Ok(v) => v,
                Err(e) => {
                    mismatches.push(Mismatch {
                        path: table::FAT_BOOT_PATH.into(),
                        problem: Problem::Unreadable { what: e.to_string() },
                    });
                    report.mismatches = mismatches;
                    return Ok(report);
                }
            };
            mismatches.extend(check_fat_copies(&volume, layout.main.offset, &read).map_err(dev_err)?);
            let entries = match volume.walk_tolerant(&fat::LIMITS) {
                Ok((entries, damaged)) => {
                    // A damaged directory is named; what it held shows as missing.
                    for e in damaged {
                        let (path, what) = match e {
                            fat::FatError::Chain { path, what } | fat::FatError::Directory { path, what } => {
                                (path, what)
                            }
                            e => ("/".to_string(), e.to_string()),
                        };
                        mismatches.push(Mismatch { path, problem: Problem::Unreadable { what } });
                    }
                    entries
                }
                Err(fat::FatError::Read { source, .. }) => return Err(dev_err(source)),
                Err(e) => {
                    mismatches
                        .push(Mismatch { path: "/".into(), problem: Problem::Unreadable { what: e.to_string() } });
                    report.mismatches = mismatches;
                    return Ok(report);
                }
            };
            let stick =
                entries.iter().map(|e| StickEntry { path: e.path.clone(), is_dir: e.is_dir, size: e.size }).collect();
            (stick, Files::Fat(&volume, entries))
        }
        (Fs::Ntfs, StickFiles::Mounted(root)) => {
            let (walked, bad) = walk_mounted(root, &fat::LIMITS)?;
            mismatches.extend(bad);
            let (stick, rels): (Vec<_>, Vec<_>) = walked.into_iter().unzip();
            (stick, Files::Mounted(root, rels))
        }
        (Fs::Ntfs, StickFiles::Userspace) => return Err(VerifyError::NeedsMount { path: device_path.to_path_buf() }),
    };
    report.files = stick.iter().filter(|e| !e.is_dir).count() as u64;
    report.dirs = stick.iter().filter(|e| e.is_dir).count() as u64;

    let entries = source.entries();
    let (checks, bad) = compare::plan(entries, &stick);
    mismatches.extend(bad);
    let grub_cfg = |path: &str, is_dir: bool| !is_dir && path.eq_ignore_ascii_case(bios::GRUB_CFG_PATH);
    // BIOS boot code runs grub.cfg: it must be there (the ISO's own one is reported missing by the pairing).
    if bios_boot
        && !stick.iter().any(|e| grub_cfg(&e.path, e.is_dir))
        && !entries.iter().any(|e| grub_cfg(&e.path, e.is_dir))
    {
        mismatches.push(Mismatch { path: bios::GRUB_CFG_PATH.into(), problem: Problem::Missing });
    }
    let total = compare::bytes_to_read(&checks, &stick);
    let mut progress = Progress { done: 0, total, compared: 0, report: progress };
    // --ca2023's files: boot.wim's blob table, read once when first needed.
    let mut boot_wim: Option<Result<Vec<[u8; 20]>, String>> = None;
    let mut ca2023_files = 0usize;
    for check in &checks {
        stop_check()?;
        match check {
            Check::SameAsIso { stick: s, iso: i } => {
                let path = &stick[*s].path;
                let mut found = match files.open(*s) {
                    Ok(r) => r,
                    Err(e) => {
                        mismatches.push(Mismatch {
                            path: path.clone(),
                            problem: Problem::Unreadable { what: e.to_string() },
                        });
                        continue;
                    }
                };
                let iso_path = &entries[*i].path;
                let mut expected =
                    source.open(*i).map_err(|source| VerifyError::ReadIso { path: iso_path.clone(), source })?;
                let o = compare_streams(iso_path, &mut expected, &mut found, stick[*s].size, &mut progress)?;
                mismatches.extend(outcome_mismatch(path, o));
            }
            Check::GrubCfg { stick: s, iso } => {
                let path = &stick[*s].path;
                match read_small(&files, *s, path, 64 << 10) {
                    Ok(data) => {
                        progress.compared(data.len() as u64);
                        let isos = match iso {
                            Some(i) => read_iso_small(source, *i, 64 << 10)?,
                            None => None,
                        };
                        if data != bios::GRUB_CFG.as_bytes() && isos.as_deref() != Some(&data[..]) {
                            mismatches.push(Mismatch {
                                path: path.clone(),
                                problem: Problem::Wrong {
                                    what: "not the grub.cfg woesafe writes (ntldr /bootmgr)".into(),
                                },
                            });
                        }
                    }
                    Err(m) => {
                        progress.add(stick[*s].size);
                        mismatches.push(m)
                    }
                }
            }
            Check::AnswerFile { stick: s, iso } => {
                let path = &stick[*s].path;
                match read_small(&files, *s, path, 1 << 20) {
                    Ok(data) => {
                        progress.compared(data.len() as u64);
                        let own = match iso {
                            Some(i) => read_iso_small(source, *i, 1 << 20)?,
                            None => None,
                        };
                        let arch = crate::media::unattend::architecture(source.entries());
                        let ours = crate::media::unattend::is_ours(&data, arch);
                        if !ours && own.as_deref() != Some(&data[..]) {
                            mismatches.push(Mismatch {
                                path: path.clone(),
                                problem: Problem::Wrong {
                                    what: "neither the ISO's autounattend.xml nor woesafe's answer file for any set of setup options".into(),
                                },
                            });
                        }
                    }
                    Err(m) => {
                        progress.add(stick[*s].size);
                        mismatches.push(m)
                    }
                }
            }
            Check::ExtractedLoader { stick: s } => {
                let path = &stick[*s].path;
                match read_small(&files, *s, path, uefi::MAX_LOADER_BYTES) {
                    Ok(data) => {
                        progress.compared(data.len() as u64);
                        let (bad, note) = check_extracted_loader(source, path, &data)?;
                        mismatches.extend(bad);
                        report.notes.extend(note);
                    }
                    Err(m) => {
                        progress.add(stick[*s].size);
                        mismatches.push(m)
                    }
                }
            }
            Check::Ca2023 { stick: s, iso } => {
                let path = &stick[*s].path;
                match read_small(&files, *s, path, uefi::MAX_LOADER_BYTES) {
                    Ok(data) => {
                        progress.compared(data.len() as u64);
                        let same = match iso {
                            Some(i) => read_iso_small(source, *i, uefi::MAX_LOADER_BYTES)?.is_some_and(|d| d == data),
                            None => false,
                        };
                        if !same {
                            let bad = check_ca2023_file(source, path, &data, iso.is_some(), &mut boot_wim)?;
                            ca2023_files += usize::from(bad.is_none());
                            mismatches.extend(bad);
                        }
                    }
                    Err(m) => {
                        progress.add(stick[*s].size);
                        mismatches.push(m)
                    }
                }
            }
            Check::SplitWim { iso, parts } => {
                let (bad, note) = swm::check_split(source, *iso, parts, &stick, &files, &mut progress)?;
                mismatches.extend(bad);
                report.notes.extend(note);
            }
        }
    }
    report.bytes = progress.compared;
    if ca2023_files > 0 {
        report.notes.push(format!(
            "{ca2023_files} boot file(s) differ from the ISO's and are files of its sources/boot.wim: the Windows \
             UEFI CA 2023 boot managers and fonts of --ca2023"
        ));
    }

    if let Some(bridge) = layout.bridge {
        let arch = uefi::find_loader(source.entries()).map(|(a, _)| a);
        mismatches.extend(check_bridge(device, device_path, bridge, layout.main, arch)?);
    }
    report.mismatches = mismatches;
    Ok(report)
}

/// A UEFI loader the ISO does not have (Windows 7: extracted from install.wim's x64 image): an x86_64 UEFI
/// application, and one of the files of the ISO's install.wim (its SHA-1 is in the WIM's blob table).
fn check_extracted_loader(
    source: &Source,
    path: &str,
    data: &[u8],
) -> Result<(Option<Mismatch>, Option<String>), VerifyError> {
    use sha1::{Digest, Sha1};
    let wrong = |what: String| Some(Mismatch { path: path.into(), problem: Problem::Wrong { what } });
    if let Err(what) = uefi::check_efi_x64(data) {
        return Ok((wrong(format!("not an x86_64 UEFI loader: {what}")), None));
    }
    let Some(i) = source.entries().iter().position(|e| !e.is_dir && e.path.eq_ignore_ascii_case("sources/install.wim"))
    else {
        return Ok((
            wrong("the ISO has no efi/boot/bootx64.efi and no sources/install.wim it could come from".into()),
            None,
        ));
    };
    let wim_path = &source.entries()[i].path;
    let mut wim = source.open_seekable(i).map_err(|e| VerifyError::ReadIso { path: wim_path.clone(), source: e })?;
    match wimsplit::blob_hashes(&mut wim) {
        Ok(hashes) => {
            let hash: [u8; 20] = Sha1::digest(data).into();
            Ok((
                (!hashes.contains(&hash))
                    .then(|| Mismatch {
                        path: path.into(),
                        problem: Problem::Wrong {
                            what: format!(
                                "not a file of the ISO's {wim_path} (its SHA-1 is not in the WIM's blob table)"
                            ),
                        },
                    })
                    .or(None),
                None,
            ))
        }
        Err(e) => Ok((None, Some(format!("/{path}: an x86_64 UEFI application; not looked up in {wim_path}: {e}")))),
    }
}

/// A boot manager or font that is not the ISO's: it must be one of the files of the ISO's sources/boot.wim
/// (--ca2023 takes them from there), and a loader must still be an EFI program for its path's arch.
fn check_ca2023_file(
    source: &Source,
    path: &str,
    data: &[u8],
    replaces: bool,
    boot_wim: &mut Option<Result<Vec<[u8; 20]>, String>>,
) -> Result<Option<Mismatch>, VerifyError> {
    use sha1::{Digest, Sha1};
    let wrong = |what: String| Some(Mismatch { path: path.into(), problem: Problem::Wrong { what } });
    let differs = if replaces { "differs from the ISO's and is" } else { "is not on the ISO and is" };
    // What it must be: a loader for its path's processor; /bootmgr.efi for the ISO's; a font.
    let lower = path.to_ascii_lowercase();
    let arch = uefi::Arch::of_loader_path(&lower).or_else(|| {
        (lower == uefi::BOOTMGR_EFI).then(|| uefi::find_loader(source.entries()).map_or(uefi::Arch::X64, |(a, _)| a))
    });
    match arch {
        Some(arch) => {
            if let Err(what) = uefi::check_efi(data, arch) {
                return Ok(wrong(format!("not an {arch} UEFI program: {what}")));
            }
        }
        None if !uefi::is_font(data) => return Ok(wrong("not a TrueType or OpenType font".into())),
        None => {}
    }
    let hashes = boot_wim.get_or_insert_with(|| {
        let i = source
            .entries()
            .iter()
            .position(|e| !e.is_dir && e.path.eq_ignore_ascii_case(uefi::BOOT_WIM))
            .ok_or_else(|| "the ISO has no sources/boot.wim".to_string())?;
        let mut wim = source.open_seekable(i).map_err(|e| e.to_string())?;
        wimsplit::blob_hashes(&mut wim).map_err(|e| e.to_string())
    });
    match hashes {
        Ok(hashes) => {
            let hash: [u8; 20] = Sha1::digest(data).into();
            Ok((!hashes.contains(&hash)).then(|| Mismatch {
                path: path.into(),
                problem: Problem::Wrong {
                    what: format!(
                        "{differs} not a file of the ISO's sources/boot.wim (--ca2023 takes them from there)"
                    ),
                },
            }))
        }
        Err(e) => Ok(wrong(format!("{differs} not looked up in sources/boot.wim: {e}"))),
    }
}

/// The FAT copies must be identical.
fn check_fat_copies(
    vol: &fat::FatVolume,
    base: u64,
    read: &dyn Fn(u64, usize) -> std::io::Result<Vec<u8>>,
) -> std::io::Result<Vec<Mismatch>> {
    let copies = vol.fat_copies();
    let Some(&(first, len)) = copies.first() else { return Ok(Vec::new()) };
    let mut bad = Vec::new();
    for (k, &(other, _)) in copies.iter().enumerate().skip(1) {
        let mut at = 0u64;
        while at < len {
            let n = (len - at).min(CHUNK as u64) as usize;
            let a = read(base + first + at, n)?;
            let b = read(base + other + at, n)?;
            if let Some(d) = compare::first_difference(&a, &b) {
                bad.push(Mismatch {
                    path: "(FAT32 file allocation tables)".into(),
                    problem: Problem::Wrong {
                        what: format!("FAT copy {} differs from the first at byte {}", k + 1, at + d as u64),
                    },
                });
                break;
            }
            at += n as u64;
        }
    }
    Ok(bad)
}

/// The UEFI bridge partition of an NTFS stick: a FAT volume with an x86_64 EFI/BOOT/BOOTX64.EFI (or an arm64
/// BOOTAA64.EFI); when it is woesafe's GRUB bridge, its embedded grub.cfg names this stick's NTFS volume.
fn check_bridge(
    device: &File,
    device_path: &Path,
    bridge: mbr::PartitionSpan,
    main: mbr::PartitionSpan,
    iso_arch: Option<uefi::Arch>,
) -> Result<Vec<Mismatch>, VerifyError> {
    let mut path = "(UEFI bridge)/EFI/BOOT/BOOTX64.EFI".to_string();
    let wrong = |path: &str, what: String| vec![Mismatch { path: path.into(), problem: Problem::Wrong { what } }];
    let vol = match fat::FatVolume::open(device, bridge.offset, bridge.size) {
        Ok(v) => v,
        Err(e) => return Ok(wrong(&path, format!("the bridge partition is not a FAT volume: {e}"))),
    };
    let entries = match vol.walk(&fat::LIMITS) {
        Ok(e) => e,
        Err(e) => return Ok(wrong(&path, format!("the bridge partition cannot be read: {e}"))),
    };
    // The loader for the ISO's processor: the one its firmware starts (any, for an ISO without one).
    let arches: Vec<uefi::Arch> = iso_arch.map_or(uefi::Arch::ALL.to_vec(), |a| vec![a]);
    if let Some(a) = iso_arch {
        path = format!("(UEFI bridge)/EFI/BOOT/{}", a.bridge_file());
    }
    let found = arches.into_iter().find_map(|arch| {
        let name = format!("EFI/BOOT/{}", arch.bridge_file());
        entries.iter().find(|e| !e.is_dir && e.path.eq_ignore_ascii_case(&name)).map(|e| (arch, e))
    });
    let Some((arch, e)) = found else {
        return Ok(vec![Mismatch { path, problem: Problem::Missing }]);
    };
    path = format!("(UEFI bridge)/EFI/BOOT/{}", arch.bridge_file());
    if e.size > uefi::MAX_LOADER_BYTES {
        return Ok(wrong(&path, format!("{} bytes; a UEFI loader is at most {}", e.size, uefi::MAX_LOADER_BYTES)));
    }
    let mut data = Vec::new();
    if let Err(err) = vol.open_file(&e.path, e.first_cluster, e.size).read_to_end(&mut data) {
        return Ok(vec![Mismatch { path, problem: Problem::Unreadable { what: err.to_string() } }]);
    }
    if let Err(what) = uefi::check_efi(&data, arch) {
        return Ok(wrong(&path, format!("not an {arch} UEFI loader: {what}")));
    }
    let marker = b"Written by woesafe: the UEFI bridge";
    if data.windows(marker.len()).any(|w| w == marker) {
        let mut b = [0u8; 8];
        device
            .read_exact_at(&mut b, main.offset + 0x48)
            .map_err(|source| VerifyError::Device { path: device_path.to_path_buf(), source })?;
        let uuid = format!("{:016x}", u64::from_le_bytes(b));
        let cfg = uefi::bridge_cfg(&uuid, arch);
        if !data.windows(cfg.len()).any(|w| w == cfg.as_bytes()) {
            return Ok(wrong(
                &path,
                format!("woesafe's bridge, but its grub.cfg does not name this stick's NTFS volume {uuid}"),
            ));
        }
    }
    Ok(Vec::new())
}

use crate::stick::mbr;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Down, Up, VerifyRequest, read_frame, write_frame};
    use crate::sys::argfile::FileId;

    #[test]
    fn frames_and_report_round_trip() {
        let request = Down::Verify(Box::new(VerifyRequest {
            iso: "/isos/w.iso".into(),
            iso_id: FileId { dev: 1, ino: 2, rdev: 0 },
            target: "/dev/sdb".into(),
            target_id: FileId { dev: 5, ino: 6, rdev: 2064 },
            work_dir: "/run/woesafe.7".into(),
            pause_ms: Some(5),
        }));
        let report = VerifyReport {
            table: Some(Table::Mbr),
            fs: Some(Fs::Ntfs),
            bios_boot: true,
            bridge: true,
            files: 3,
            dirs: 1,
            bytes: 99,
            mismatches: vec![
                Mismatch { path: "sources/boot.wim".into(), problem: Problem::Content { offset: 12 } },
                Mismatch { path: "a".into(), problem: Problem::Size { expected: 1, found: 2 } },
            ],
            notes: vec!["n".into()],
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &request).unwrap();
        write_frame(&mut buf, &Up::Verified(Box::new(report.clone()))).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame::<Down>(&mut r).unwrap(), Some(request));
        assert_eq!(read_frame::<Up>(&mut r).unwrap(), Some(Up::Verified(Box::new(report.clone()))));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["mismatches"][0],
            serde_json::json!({"path": "sources/boot.wim", "problem": {"kind": "content", "offset": 12}})
        );
        assert_eq!(report.mismatches[0].to_string(), "sources/boot.wim: content differs (first at byte 12)");
        assert!(!report.identical());
    }
}
