//! The userspace FAT32 writer: fills a freshly formatted (mkfs.fat) FAT32 filesystem with a known tree, without
//! a mount. Because the whole tree is known up front, it plans every cluster first (directories, then files in
//! copy order, all contiguous), streams file data sequentially to its planned place, and writes the FATs,
//! directories and FSInfo last, so an interrupted write leaves a consistent, empty-looking filesystem.
//! Short names follow Windows' rules (`LONGFI~1.TXT`), long names are VFAT entries, times are the ISO's (UTC).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::copy::TargetTree;
use crate::media::SourceEntry;

const DIR_ENTRY: usize = 32;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LFN: u8 = 0x0F;
const EOC: u32 = 0x0FFF_FFFF;
/// FAT32 directories hold at most 65536 entries.
const MAX_DIR_ENTRIES: usize = 65536;

#[derive(Debug, thiserror::Error)]
pub enum FatWriteError {
    #[error("cannot read the FAT32 boot sector of {device}: {source}")]
    ReadBoot {
        device: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{device} holds no FAT32 filesystem ({what})")]
    NotFat32 { device: PathBuf, what: &'static str },
    #[error("{path}: FAT cannot store the character {ch:?} in a file name")]
    BadName { path: String, ch: char },
    #[error("{path}: the name is longer than FAT's 255 characters")]
    NameTooLong { path: String },
    #[error("{a} and {b} differ only in letter case; FAT cannot hold both in one directory")]
    CaseClash { a: String, b: String },
    #[error("{a} and {b} would get the same 8.3 short name {short}")]
    ShortClash { a: String, b: String, short: String },
    #[error("{path}: {names} names need {slots} directory entries (with their long names); FAT32 allows 65536")]
    DirTooBig { path: String, names: usize, slots: usize },
    #[error("{path} is {size} bytes; FAT32 files hold at most 4 GiB - 1 byte")]
    FileTooBig { path: String, size: u64 },
    #[error("{path}: the parent directory is not in the tree")]
    Orphan { path: String },
    #[error("the files need {need} clusters but the filesystem has {have}")]
    NoSpace { need: u64, have: u64 },
    #[error("{path} is not in the planned tree (or was written twice)")]
    Unplanned { path: String },
    #[error("{path}: {written} bytes written, {size} planned")]
    SizeMismatch { path: String, size: u64, written: u64 },
}

impl From<FatWriteError> for std::io::Error {
    fn from(e: FatWriteError) -> Self {
        std::io::Error::other(e)
    }
}

/// The parameters of the filesystem, read from the boot sector mkfs.fat wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub bytes_per_sector: u64,
    pub sectors_per_cluster: u64,
    pub reserved_sectors: u64,
    pub fats: u64,
    pub fat_sectors: u64,
    pub root_cluster: u32,
    pub fsinfo_sector: u64,
    pub total_sectors: u64,
    pub label: [u8; 11],
}

impl Geometry {
    pub fn parse(bs: &[u8; 512]) -> Result<Geometry, &'static str> {
        let u16_at = |o: usize| u64::from(u16::from_le_bytes([bs[o], bs[o + 1]]));
        let u32_at = |o: usize| u32::from_le_bytes([bs[o], bs[o + 1], bs[o + 2], bs[o + 3]]);
        if bs[510] != 0x55 || bs[511] != 0xAA {
            return Err("no boot sector signature");
        }
        let g = Geometry {
            bytes_per_sector: u16_at(11),
            sectors_per_cluster: u64::from(bs[13]),
            reserved_sectors: u16_at(14),
            fats: u64::from(bs[16]),
            fat_sectors: u64::from(u32_at(36)),
            root_cluster: u32_at(44),
            fsinfo_sector: u16_at(48),
            total_sectors: u64::from(u32_at(32)),
            label: bs[71..82].try_into().map_err(|_| "short boot sector")?,
        };
        if u16_at(17) != 0 || u16_at(22) != 0 || g.fat_sectors == 0 {
            return Err("FAT12/16 layout");
        }
        if !matches!(g.bytes_per_sector, 512 | 1024 | 2048 | 4096)
            || !g.sectors_per_cluster.is_power_of_two()
            || g.fats == 0
            || g.root_cluster < 2
            || g.total_sectors == 0
        {
            return Err("implausible BPB values");
        }
        if g.data_sector() >= g.total_sectors {
            return Err("data area beyond the end");
        }
        Ok(g)
    }

    pub fn cluster_bytes(&self) -> u64 {
        self.bytes_per_sector * self.sectors_per_cluster
    }
    fn data_sector(&self) -> u64 {
        self.reserved_sectors + self.fats * self.fat_sectors
    }
    /// Number of data clusters (cluster numbers run from 2 to clusters + 1).
    pub fn clusters(&self) -> u64 {
        let by_area = (self.total_sectors - self.data_sector()) / self.sectors_per_cluster;
        let by_fat = self.fat_sectors * self.bytes_per_sector / 4 - 2;
        by_area.min(by_fat)
    }
    fn cluster_offset(&self, cluster: u32) -> u64 {
        (self.data_sector() + (u64::from(cluster) - 2) * self.sectors_per_cluster) * self.bytes_per_sector
    }
}

/// A FAT date and time from Unix seconds (UTC), clamped to 1980..2107.
pub fn dos_datetime(unix: i64) -> (u16, u16) {
    let d = super::fat::fat_datetime(unix);
    let date = ((d.year - 1980) << 9) | (d.month << 5) | d.day;
    let time = (d.hour << 11) | (d.min << 5) | (d.sec / 2);
    (date, time)
}

const SFN_EXTRA: &[u8] = b"$%'-_@~`!(){}^#&";

fn sfn_char(c: char) -> Option<u8> {
    let u = c.to_ascii_uppercase();
    if u.is_ascii_uppercase() || u.is_ascii_digit() || (u.is_ascii() && SFN_EXTRA.contains(&(u as u8))) {
        Some(u as u8)
    } else {
        None
    }
}

/// Characters a long name cannot hold.
fn lfn_forbidden(c: char) -> bool {
    (c as u32) < 0x20 || "\"*/:<>?\\|".contains(c)
}

/// The 8.3 basis of `name` (Windows' rules: upper-case, drop spaces and extra dots, '_' for what 8.3 cannot
/// hold, cut to 8 + 3), whether anything was lost on the way, and whether `name` is already an exact
/// upper-case 8.3 name (no long-name entry needed).
fn basis(name: &str) -> ([u8; 11], bool, bool) {
    let (base_part, ext_part) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    };
    let exact = name.len() <= 12
        && !base_part.is_empty()
        && base_part.len() <= 8
        && ext_part.len() <= 3
        && !base_part.contains('.')
        && !name.ends_with('.')
        && base_part.chars().chain(ext_part.chars()).all(|c| sfn_char(c) == Some(c as u8));
    let mut lossy = base_part.starts_with('.');
    let mut conv = |part: &str, cap: usize| -> Vec<u8> {
        let mut out = Vec::new();
        for c in part.chars() {
            if c == ' ' || c == '.' {
                lossy = true;
                continue;
            }
            let b = sfn_char(c).unwrap_or_else(|| {
                lossy = true;
                b'_'
            });
            if out.len() < cap {
                out.push(b);
            } else {
                lossy = true;
            }
        }
        out
    };
    let base = conv(base_part.trim_start_matches('.'), 8);
    let ext = conv(ext_part, 3);
    let mut sfn = [b' '; 11];
    let base = if base.is_empty() { b"_".to_vec() } else { base };
    sfn[..base.len()].copy_from_slice(&base);
    sfn[8..8 + ext.len()].copy_from_slice(&ext);
    (sfn, lossy, exact)
}

/// The 8.3 basis of `name` (upper-case, 8 + 3 bytes padded with spaces) and whether it lost anything (then the
/// name needs a generated `~N` short name).
pub fn short_basis(name: &str) -> ([u8; 11], bool) {
    let (sfn, lossy, _) = basis(name);
    (sfn, lossy)
}

/// An 8.3 name as text: `LONGFI~1.TXT`.
pub fn short_name_text(sfn: &[u8; 11]) -> String {
    let base = String::from_utf8_lossy(&sfn[..8]).trim_end().to_string();
    let ext = String::from_utf8_lossy(&sfn[8..]).trim_end().to_string();
    if ext.is_empty() { base } else { format!("{base}.{ext}") }
}

/// The short names of one directory. Names that fit 8.3 without loss are reserved first (so that a literal
/// `longfi~1.txt` keeps LONGFI~1.TXT and a generated name never takes it); the others get the smallest free
/// "~N" tail, counted per basis so that thousands of similar names stay linear. No two names of a directory
/// ever get the same short name: of two names with one lossless form (`abc` and `abc.`, which the checks
/// before writing refuse anyway), the first reserved keeps it and the other gets a tail.
#[derive(Default)]
pub struct ShortNames {
    taken: std::collections::HashSet<[u8; 11]>,
    /// The name each lossless form was reserved for (the first one).
    owner: HashMap<[u8; 11], String>,
    given: std::collections::HashSet<[u8; 11]>,
    next_tail: HashMap<[u8; 11], u32>,
}

impl ShortNames {
    /// Reserve the lossless 8.3 forms of all `names` of the directory.
    pub fn reserve<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        for n in names {
            let (sfn, lossy, _) = basis(n);
            if !lossy {
                self.taken.insert(sfn);
                self.owner.entry(sfn).or_insert_with(|| n.to_string());
            }
        }
    }

    /// The short name for `name` and whether it needs long-name entries.
    pub fn assign(&mut self, name: &str) -> ([u8; 11], bool) {
        let (sfn, lossy, exact) = basis(name);
        let mine = self.owner.get(&sfn).is_none_or(|o| o == name);
        if !lossy && mine && !self.given.contains(&sfn) {
            self.taken.insert(sfn);
            self.given.insert(sfn);
            return (sfn, !exact);
        }
        let start = self.next_tail.get(&sfn).copied().unwrap_or(1);
        let base_len = sfn[..8].iter().rposition(|&b| b != b' ').map_or(0, |p| p + 1);
        for n in start.. {
            let tail = format!("~{n}");
            let keep = base_len.min(8 - tail.len());
            let mut cand = [b' '; 11];
            cand[..keep].copy_from_slice(&sfn[..keep]);
            cand[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
            cand[8..].copy_from_slice(&sfn[8..]);
            if self.taken.insert(cand) {
                self.given.insert(cand);
                self.next_tail.insert(sfn, n + 1);
                return (cand, true);
            }
        }
        unreachable!("u32 tails exhausted")
    }
}

fn lfn_checksum(sfn: &[u8; 11]) -> u8 {
    sfn.iter().fold(0u8, |sum, &b| ((sum & 1) << 7).wrapping_add(sum >> 1).wrapping_add(b))
}

/// The long-name entries for `name` (in on-disk order: the last part first).
fn lfn_entries(name: &str, sfn: &[u8; 11]) -> Vec<[u8; 32]> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let count = units.len().div_ceil(13);
    let sum = lfn_checksum(sfn);
    let mut out = Vec::with_capacity(count);
    for i in (0..count).rev() {
        let mut e = [0u8; 32];
        e[0] = (i as u8 + 1) | if i == count - 1 { 0x40 } else { 0 };
        e[11] = ATTR_LFN;
        e[13] = sum;
        let mut chars = [0xFFFFu16; 13];
        for (k, slot) in chars.iter_mut().enumerate() {
            let idx = i * 13 + k;
            if idx < units.len() {
                *slot = units[idx];
            } else if idx == units.len() {
                *slot = 0;
            }
        }
        let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
        for (k, &o) in offsets.iter().enumerate() {
            e[o..o + 2].copy_from_slice(&chars[k].to_le_bytes());
        }
        out.push(e);
    }
    out
}

fn short_entry(sfn: &[u8; 11], attr: u8, cluster: u32, size: u32, mtime: i64) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(sfn);
    e[11] = attr;
    let (date, time) = dos_datetime(mtime);
    e[14..16].copy_from_slice(&time.to_le_bytes()); // created
    e[16..18].copy_from_slice(&date.to_le_bytes());
    e[18..20].copy_from_slice(&date.to_le_bytes()); // accessed
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    e[22..24].copy_from_slice(&time.to_le_bytes()); // modified
    e[24..26].copy_from_slice(&date.to_le_bytes());
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
    e[28..32].copy_from_slice(&size.to_le_bytes());
    e
}

#[derive(Debug)]
struct PlannedFile {
    path: String,
    size: u64,
    first_cluster: u32,
    written: u64,
    done: bool,
}

/// The whole layout: directory contents, file places, FAT chains.
#[derive(Debug)]
pub struct FatLayout {
    geometry: Geometry,
    /// (first cluster, bytes) of every directory, root first.
    dirs: Vec<(u32, Vec<u8>)>,
    files: Vec<PlannedFile>,
    by_path: HashMap<String, usize>,
    dir_paths: std::collections::HashSet<String>,
    /// FAT entries for clusters 2..2+fat.len().
    fat: Vec<u32>,
}

impl FatLayout {
    /// Lay out `entries` (parents before children, as the copy engine lists them) on a filesystem of `geometry`.
    pub fn new(geometry: Geometry, entries: &[SourceEntry]) -> Result<FatLayout, FatWriteError> {
        let cs = geometry.cluster_bytes();
        // Children of each directory ("" = root), in order.
        let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut dir_set: std::collections::HashSet<&str> = std::collections::HashSet::from([""]);
        for (i, e) in entries.iter().enumerate() {
            let (parent, name) = e.path.rsplit_once('/').unwrap_or(("", &e.path));
            if !dir_set.contains(parent) {
                return Err(FatWriteError::Orphan { path: e.path.clone() });
            }
            if let Some(ch) = name.chars().find(|&c| lfn_forbidden(c)) {
                return Err(FatWriteError::BadName { path: e.path.clone(), ch });
            }
            if name.encode_utf16().count() > 255 || name.is_empty() {
                return Err(FatWriteError::NameTooLong { path: e.path.clone() });
            }
            if !e.is_dir && e.size > u64::from(u32::MAX) {
                return Err(FatWriteError::FileTooBig { path: e.path.clone(), size: e.size });
            }
            if e.is_dir {
                dir_set.insert(&e.path);
            }
            children.entry(parent).or_default().push(i);
        }
        // Directory order: root, then the entries' directories in list order.
        let mut dir_order: Vec<(&str, i64, Option<&str>)> = vec![("", 0, None)];
        for e in entries.iter().filter(|e| e.is_dir) {
            let parent = e.path.rsplit_once('/').map_or("", |(p, _)| p);
            dir_order.push((&e.path, e.mtime, Some(parent)));
        }
        // Build each directory's entries (cluster numbers filled in below).
        let label = geometry.label;
        let has_label = &label != b"NO NAME    " && label.iter().any(|&b| b != b' ' && b != 0);
        let mut dir_slots: Vec<Vec<([u8; 32], Option<usize>)>> = Vec::new();
        for (path, _, parent) in &dir_order {
            let mut slots: Vec<([u8; 32], Option<usize>)> = Vec::new();
            if parent.is_none() && has_label {
                slots.push((short_entry(&label, ATTR_VOLUME_ID, 0, 0, 0), None));
            }
            if parent.is_some() {
                slots.push(([0; 32], None)); // "." and "..": filled once clusters are known
                slots.push(([0; 32], None));
            }
            let kids = children.get(path).map(Vec::as_slice).unwrap_or(&[]);
            let leaf = |ci: usize| entries[ci].path.rsplit_once('/').map_or(entries[ci].path.as_str(), |(_, n)| n);
            let mut upper_names: HashMap<String, &str> = HashMap::new();
            for &ci in kids {
                if let Some(prev) = upper_names.insert(leaf(ci).to_uppercase(), &entries[ci].path) {
                    return Err(FatWriteError::CaseClash { a: prev.to_string(), b: entries[ci].path.clone() });
                }
            }
            let mut names = ShortNames::default();
            names.reserve(kids.iter().map(|&ci| leaf(ci)));
            let mut given: HashMap<[u8; 11], usize> = HashMap::new();
            for &ci in kids {
                let e = &entries[ci];
                let name = leaf(ci);
                let (sfn, needs_lfn) = names.assign(name);
                if let Some(prev) = given.insert(sfn, ci) {
                    return Err(FatWriteError::ShortClash {
                        a: entries[prev].path.clone(),
                        b: e.path.clone(),
                        short: short_name_text(&sfn),
                    });
                }
                if needs_lfn {
                    for l in lfn_entries(name, &sfn) {
                        slots.push((l, None));
                    }
                }
                let attr = if e.is_dir { ATTR_DIRECTORY } else { ATTR_ARCHIVE };
                slots.push((short_entry(&sfn, attr, 0, if e.is_dir { 0 } else { e.size as u32 }, e.mtime), Some(ci)));
            }
            if slots.len() > MAX_DIR_ENTRIES {
                return Err(FatWriteError::DirTooBig {
                    path: if path.is_empty() { "the root directory".to_string() } else { path.to_string() },
                    names: kids.len(),
                    slots: slots.len(),
                });
            }
            dir_slots.push(slots);
        }
        // Allocate: directories first (root at the root cluster mkfs chose), then files in list order.
        let mut next = geometry.root_cluster;
        let mut fat: Vec<u32> = Vec::new();
        let mut alloc = |bytes: u64, fat: &mut Vec<u32>| -> u32 {
            let n = bytes.div_ceil(cs).max(1) as u32;
            let first = next;
            for k in 0..n {
                let c = first + k;
                let idx = (c - 2) as usize;
                if fat.len() <= idx {
                    fat.resize(idx + 1, 0);
                }
                fat[idx] = if k + 1 == n { EOC } else { c + 1 };
            }
            next += n;
            first
        };
        let mut dir_cluster: HashMap<&str, u32> = HashMap::new();
        for (k, (path, _, _)) in dir_order.iter().enumerate() {
            let c = alloc((dir_slots[k].len() * DIR_ENTRY) as u64, &mut fat);
            dir_cluster.insert(path, c);
        }
        let mut files = Vec::new();
        let mut by_path = HashMap::new();
        let mut file_cluster: HashMap<usize, u32> = HashMap::new();
        for (i, e) in entries.iter().enumerate().filter(|(_, e)| !e.is_dir) {
            let first = if e.size == 0 { 0 } else { alloc(e.size, &mut fat) };
            file_cluster.insert(i, first);
            by_path.insert(e.path.clone(), files.len());
            files.push(PlannedFile {
                path: e.path.clone(),
                size: e.size,
                first_cluster: first,
                written: 0,
                done: false,
            });
        }
        let used = u64::from(next - 2);
        if used > geometry.clusters() {
            return Err(FatWriteError::NoSpace { need: used, have: geometry.clusters() });
        }
        // Fill in cluster numbers and serialise the directories.
        let root = geometry.root_cluster;
        let mut dirs = Vec::new();
        for (k, (path, mtime, parent)) in dir_order.iter().enumerate() {
            let own = dir_cluster[path];
            let mut bytes = Vec::with_capacity(dir_slots[k].len() * DIR_ENTRY);
            for (slot_no, (entry, child)) in dir_slots[k].iter().enumerate() {
                let mut e = *entry;
                if let Some(parent) = parent {
                    if slot_no == 0 {
                        e = short_entry(b".          ", ATTR_DIRECTORY, own, 0, *mtime);
                    } else if slot_no == 1 {
                        // ".." of a first-level directory points at cluster 0, not the root's cluster
                        let pc = dir_cluster[parent];
                        e = short_entry(b"..         ", ATTR_DIRECTORY, if pc == root { 0 } else { pc }, 0, *mtime);
                    }
                }
                if let Some(ci) = child {
                    let c =
                        if entries[*ci].is_dir { dir_cluster[entries[*ci].path.as_str()] } else { file_cluster[ci] };
                    e[20..22].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
                    e[26..28].copy_from_slice(&(c as u16).to_le_bytes());
                }
                bytes.extend_from_slice(&e);
            }
            dirs.push((own, bytes));
        }
        let dir_paths = dir_order.iter().map(|(p, _, _)| p.to_string()).collect();
        Ok(FatLayout { geometry, dirs, files, by_path, dir_paths, fat })
    }

    /// Clusters the plan uses.
    pub fn used_clusters(&self) -> u64 {
        self.fat.len() as u64
    }
}

/// Check, before anything is written, that FAT can hold this tree at all: names, letter case, directory
/// sizes, file sizes. (Space is checked separately, against the real target.)
pub fn check_tree(entries: &[SourceEntry]) -> Result<(), FatWriteError> {
    // A roomy 2 TiB geometry with 32 KiB clusters, only for the planner's checks.
    let roomy = Geometry {
        bytes_per_sector: 512,
        sectors_per_cluster: 64,
        reserved_sectors: 32,
        fats: 2,
        fat_sectors: 1 << 20,
        root_cluster: 2,
        fsinfo_sector: 1,
        total_sectors: u64::from(u32::MAX),
        label: *b"NO NAME    ",
    };
    match FatLayout::new(roomy, entries) {
        Ok(_) | Err(FatWriteError::NoSpace { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// How one write of file data goes to the device when there is a direct (O_DIRECT) handle: `pos` is where it
/// lands on the device, `addr` where its bytes are in memory, `room` how many bytes the file's clusters hold
/// from `pos` on, and `last` whether the file ends with it. Returns how many leading bytes go direct as they
/// are, and whether the rest (less than `align`) goes direct too, zero-padded to `align` inside the file's last
/// cluster. Whatever is left goes through the page cache. Direct needs `pos`, `addr` and the length to be
/// multiples of `align`; the copy engine's buffers and clusters of 4 KiB and more on a MiB-aligned partition
/// give that. With smaller clusters (woesafe's choice for partitions of 256 MiB and less) a file goes direct
/// only where it happens to start on a 4 KiB boundary, and never with its end padded.
pub fn direct_split(pos: u64, addr: usize, len: usize, room: u64, last: bool, align: u64) -> (usize, bool) {
    if !pos.is_multiple_of(align) || !(addr as u64).is_multiple_of(align) {
        return (0, false);
    }
    let direct = len - (len as u64 % align) as usize;
    let padded = direct < len && last && direct as u64 + align <= room;
    (direct, padded)
}

/// Where the filesystem lies: a file (the partition's device, or the whole disk), the offset of the
/// filesystem's first byte in it and the bytes it may take from there (the partition's size: a boot sector
/// that claims more is refused, so no write lands outside the partition), and optionally a second handle on the
/// same file opened with O_DIRECT, through which the data of files of 1 MiB and more goes without the page cache
/// (the rest, directories and FATs go through `file`).
pub struct FatPlace {
    pub file: File,
    pub path: PathBuf,
    pub offset: u64,
    pub size: u64,
    pub direct: Option<File>,
}

/// The userspace FAT32 writer over the partition (or the disk, at the partition's offset).
pub struct FatWriter {
    place: FatPlace,
    plan: FatLayout,
    /// One aligned block for the zero-padded end of a file written direct.
    tail: Vec<u8>,
    tail_start: usize,
    /// File bytes written through the direct handle (padding not counted).
    direct_bytes: u64,
    direct_ok: bool,
}

/// The alignment of direct writes: file offset, memory and length.
const DIRECT_ALIGN: usize = crate::copy::BUFFER_ALIGN;
/// Files smaller than this go through the page cache even with a direct handle: one synchronous direct write
/// per small file (a tree of 3000 files) is slower than the page cache flushed in windows (measured:
/// `scripts/bench multi`, tree case, the copy step 0.61 s direct against 0.2 s).
const DIRECT_MIN_FILE: u64 = 1 << 20;

impl FatWriter {
    /// Read the boot sector of the formatted partition and plan `entries` on it.
    pub fn open(device: File, device_path: &Path, entries: &[SourceEntry]) -> Result<FatWriter, FatWriteError> {
        let size = crate::sys::loopdev::device_size(&device)
            .map_err(|source| FatWriteError::ReadBoot { device: device_path.to_path_buf(), source })?;
        let place = FatPlace { file: device, path: device_path.to_path_buf(), offset: 0, size, direct: None };
        FatWriter::open_at(place, entries)
    }

    /// The same, for a filesystem at `place`.
    pub fn open_at(place: FatPlace, entries: &[SourceEntry]) -> Result<FatWriter, FatWriteError> {
        let mut bs = [0u8; 512];
        place
            .file
            .read_exact_at(&mut bs, place.offset)
            .map_err(|source| FatWriteError::ReadBoot { device: place.path.clone(), source })?;
        let geometry =
            Geometry::parse(&bs).map_err(|what| FatWriteError::NotFat32 { device: place.path.clone(), what })?;
        if geometry.total_sectors.checked_mul(geometry.bytes_per_sector).is_none_or(|b| b > place.size) {
            let what = "its boot sector claims more sectors than the partition has";
            return Err(FatWriteError::NotFat32 { device: place.path.clone(), what });
        }
        let plan = FatLayout::new(geometry, entries)?;
        let tail = vec![0u8; 2 * DIRECT_ALIGN];
        let tail_start = tail.as_ptr().align_offset(DIRECT_ALIGN);
        Ok(FatWriter { place, plan, tail, tail_start, direct_bytes: 0, direct_ok: true })
    }

    /// How many bytes of file data went through the direct handle.
    pub fn direct_bytes(&self) -> u64 {
        self.direct_bytes
    }

    fn write_metadata(&self) -> std::io::Result<()> {
        let g = &self.plan.geometry;
        let (dev, base) = (&self.place.file, self.place.offset);
        // Directories first, then the FATs that make them reachable, then FSInfo. Until the root directory is
        // written the filesystem reads as mkfs.fat made it; a stop after that and before the FATs leaves entries
        // whose clusters the FAT still marks free (fsck.fat finds them); the Target state says it is incomplete.
        let cs = g.cluster_bytes() as usize;
        for (cluster, bytes) in &self.plan.dirs {
            let mut padded = bytes.clone();
            padded.resize(bytes.len().div_ceil(cs).max(1) * cs, 0);
            dev.write_all_at(&padded, base + g.cluster_offset(*cluster))?;
        }
        // FATs: entries 0 and 1 as mkfs.fat wrote them, then our chains; the rest stays zero (free).
        let mut head = [0u8; 8];
        let fat0 = g.reserved_sectors * g.bytes_per_sector;
        dev.read_exact_at(&mut head, base + fat0)?;
        let mut table = Vec::with_capacity(8 + self.plan.fat.len() * 4);
        table.extend_from_slice(&head);
        for v in &self.plan.fat {
            table.extend_from_slice(&v.to_le_bytes());
        }
        for k in 0..g.fats {
            dev.write_all_at(&table, base + fat0 + k * g.fat_sectors * g.bytes_per_sector)?;
        }
        // FSInfo: free cluster count and the next free cluster hint.
        if g.fsinfo_sector != 0 && g.fsinfo_sector < g.reserved_sectors {
            let off = base + g.fsinfo_sector * g.bytes_per_sector;
            let mut info = [0u8; 512];
            dev.read_exact_at(&mut info, off)?;
            if info[..4] == [0x52, 0x52, 0x61, 0x41] {
                let free = g.clusters() - self.plan.used_clusters();
                info[488..492].copy_from_slice(&(free as u32).to_le_bytes());
                info[492..496].copy_from_slice(&((self.plan.used_clusters() + 2) as u32).to_le_bytes());
                dev.write_all_at(&info, off)?;
            }
        }
        Ok(())
    }
}

struct PlannedWriter<'a> {
    place: &'a FatPlace,
    /// Where the file's first byte goes on the device, and how many bytes its clusters hold.
    start: u64,
    allocated: u64,
    file: &'a mut PlannedFile,
    tail: &'a mut [u8],
    direct_bytes: &'a mut u64,
    /// False once a direct write was refused as misaligned.
    direct_ok: &'a mut bool,
}

impl Write for PlannedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.file.size - self.file.written;
        if buf.len() as u64 > room {
            return Err(FatWriteError::SizeMismatch {
                path: self.file.path.clone(),
                size: self.file.size,
                written: self.file.written + buf.len() as u64,
            }
            .into());
        }
        let pos = self.start + self.file.written;
        let mut done = 0;
        let direct = self.place.direct.as_ref().filter(|_| *self.direct_ok && self.file.size >= DIRECT_MIN_FILE);
        if let Some(direct) = direct {
            let last = buf.len() as u64 == room;
            let room_on_disk = self.allocated - self.file.written;
            let (n, padded) =
                direct_split(pos, buf.as_ptr() as usize, buf.len(), room_on_disk, last, DIRECT_ALIGN as u64);
            let mut wrote = direct.write_all_at(&buf[..n], pos).map(|()| n);
            if padded && wrote.is_ok() {
                let rest = &buf[n..];
                self.tail.fill(0);
                self.tail[..rest.len()].copy_from_slice(rest);
                wrote = direct.write_all_at(self.tail, pos + n as u64).map(|()| buf.len());
            }
            match wrote {
                Ok(n) => done = n,
                // The device wants another alignment (a logical block over 4 KiB): this write and the rest go
                // through the page cache.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => *self.direct_ok = false,
                Err(e) => return Err(e),
            }
            *self.direct_bytes += done as u64;
        }
        if done < buf.len() {
            self.place.file.write_all_at(&buf[done..], pos + done as u64)?;
        }
        self.file.written += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl TargetTree for FatWriter {
    fn flusher(&self) -> std::io::Result<Option<crate::copy::Flusher>> {
        Ok(Some(crate::copy::device_flusher(self.place.file.try_clone()?)))
    }

    fn buffer_align(&self) -> usize {
        if self.place.direct.is_some() { DIRECT_ALIGN } else { 1 }
    }

    fn create_dir(&mut self, path: &str, _mtime: i64) -> std::io::Result<()> {
        if self.plan.dir_paths.contains(path) {
            Ok(())
        } else {
            Err(FatWriteError::Unplanned { path: path.to_string() }.into())
        }
    }

    fn create_file<'a>(&'a mut self, path: &str, _mtime: i64, size: u64) -> std::io::Result<Box<dyn Write + 'a>> {
        let idx = *self.plan.by_path.get(path).ok_or_else(|| FatWriteError::Unplanned { path: path.to_string() })?;
        let file = &mut self.plan.files[idx];
        if file.done {
            return Err(FatWriteError::Unplanned { path: path.to_string() }.into());
        }
        if file.size != size {
            return Err(FatWriteError::SizeMismatch { path: path.to_string(), size: file.size, written: size }.into());
        }
        file.done = true;
        let g = &self.plan.geometry;
        let start = if file.first_cluster == 0 { 0 } else { self.place.offset + g.cluster_offset(file.first_cluster) };
        let allocated = file.size.div_ceil(g.cluster_bytes()) * g.cluster_bytes();
        let tail = &mut self.tail[self.tail_start..self.tail_start + DIRECT_ALIGN];
        let (direct_bytes, direct_ok) = (&mut self.direct_bytes, &mut self.direct_ok);
        Ok(Box::new(PlannedWriter { place: &self.place, start, allocated, file, tail, direct_bytes, direct_ok }))
    }

    fn finish(&mut self, _entries: &[SourceEntry]) -> std::io::Result<()> {
        if let Some(f) = self.plan.files.iter().find(|f| f.written != f.size) {
            return Err(FatWriteError::SizeMismatch { path: f.path.clone(), size: f.size, written: f.written }.into());
        }
        self.write_metadata().map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.place.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sfn(s: &str) -> String {
        let (a, b) = s.split_at(8);
        let b = b.trim_end();
        if b.is_empty() { a.trim_end().to_string() } else { format!("{}.{}", a.trim_end(), b) }
    }

    fn name(n: &str, names: &mut ShortNames) -> (String, bool) {
        let (s, l) = names.assign(n);
        (sfn(std::str::from_utf8(&s).unwrap()), l)
    }

    #[test]
    fn short_names_follow_windows() {
        let mut t = ShortNames::default();
        assert_eq!(name("SETUP.EXE", &mut t), ("SETUP.EXE".into(), false));
        assert_eq!(name("bootmgr", &mut t), ("BOOTMGR".into(), true));
        assert_eq!(name("longfilename-one.txt", &mut t), ("LONGFI~1.TXT".into(), true));
        assert_eq!(name("longfilename-two.txt", &mut t), ("LONGFI~2.TXT".into(), true));
        assert_eq!(name("LongFileName-three.TXT", &mut t), ("LONGFI~3.TXT".into(), true));
        assert_eq!(name("Program Files", &mut t), ("PROGRA~1".into(), true));
        assert_eq!(name("ñ.txt", &mut t), ("_~1.TXT".into(), true));
        assert_eq!(name("archive.tar.gz", &mut t), ("ARCHIV~1.GZ".into(), true));
        assert_eq!(name(".hidden", &mut t), ("HIDDEN~1".into(), true));
        assert_eq!(name("a+b.txt", &mut t), ("A_B~1.TXT".into(), true));
        assert_eq!(name("install.wim", &mut t), ("INSTALL.WIM".into(), true));
        let mut many = ShortNames::default();
        let got: Vec<String> = (1..=11).map(|i| name(&format!("longfilename{i}.txt"), &mut many).0).collect();
        assert_eq!(got[0], "LONGFI~1.TXT");
        assert_eq!(got[8], "LONGFI~9.TXT");
        assert_eq!(got[9], "LONGF~10.TXT");
        assert_eq!(got[10], "LONGF~11.TXT");
        // A literal name that looks generated keeps its own short name; the generated one skips it.
        let mut d = ShortNames::default();
        d.reserve(["longfilename.txt", "longfi~1.txt"]);
        assert_eq!(name("longfilename.txt", &mut d).0, "LONGFI~2.TXT");
        assert_eq!(name("longfi~1.txt", &mut d).0, "LONGFI~1.TXT");
        // Similar names continue from the basis's last tail instead of probing from ~1 each time.
        let mut big = ShortNames::default();
        for i in 0..20_000 {
            name(&format!("samebase-{i}.txt"), &mut big);
        }
        assert_eq!(big.next_tail.get(b"SAMEBASETXT"), Some(&20_001));
        assert_eq!(name("samebase-x.txt", &mut big).0, "SA~20001.TXT");
    }

    #[test]
    fn no_two_names_of_a_directory_get_one_short_name() {
        // "abc" and "abc." have one lossless form (the checks before writing refuse the pair; the writer must
        // still never write two equal 8.3 names).
        let mut d = ShortNames::default();
        d.reserve(["abc.", "abc", "ABC"]);
        let got: Vec<String> = ["abc", "abc.", "ABC"].iter().map(|n| name(n, &mut d).0).collect();
        assert_eq!(got, ["ABC~1", "ABC", "ABC~2"]);
        let p = FatLayout::new(geometry(), &[e("abc", false, 1), e("abc.", false, 1)]).unwrap();
        let root = &p.dirs[0].1;
        let shorts: Vec<&[u8]> =
            root.chunks(32).filter(|c| c[11] != ATTR_LFN && c[11] != ATTR_VOLUME_ID).map(|c| &c[..11]).collect();
        assert_eq!(shorts, [b"ABC        ".as_slice(), b"ABC~1      ".as_slice()]);
    }

    #[test]
    fn lfn_checksum_and_layout() {
        // Known value: checksum of "README  TXT"
        assert_eq!(lfn_checksum(b"README  TXT"), 0x73);
        let e = lfn_entries("A very long file name.txt", b"AVERYL~1TXT");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0][0], 0x42, "last part first, with the 0x40 flag");
        assert_eq!(e[1][0], 0x01);
        assert!(e.iter().all(|x| x[11] == ATTR_LFN && x[13] == lfn_checksum(b"AVERYL~1TXT")));
        assert_eq!(u16::from_le_bytes([e[1][1], e[1][2]]), u16::from(b'A'));
    }

    #[test]
    fn dos_times() {
        assert_eq!(dos_datetime(1_704_067_200), ((44 << 9) | (1 << 5) | 1, 0)); // 2024-01-01 00:00:00
        let (_, t) = dos_datetime(1_704_067_200 + 13 * 3600 + 14 * 60 + 15);
        assert_eq!(t, (13 << 11) | (14 << 5) | 7);
    }

    fn geometry() -> Geometry {
        Geometry {
            bytes_per_sector: 512,
            sectors_per_cluster: 8,
            reserved_sectors: 32,
            fats: 2,
            fat_sectors: 1000,
            root_cluster: 2,
            fsinfo_sector: 1,
            total_sectors: 1_000_000,
            label: *b"MYLABEL    ",
        }
    }

    fn e(p: &str, d: bool, s: u64) -> SourceEntry {
        SourceEntry { path: p.into(), is_dir: d, size: s, mtime: 1_704_067_200 }
    }

    #[test]
    fn plan_layout_and_dot_entries() {
        let p =
            FatLayout::new(geometry(), &[e("a", true, 0), e("a/b", true, 0), e("a/f", false, 5000), e("g", false, 0)])
                .unwrap();
        // root (2), a (3), a/b (4), a/f: 2 clusters (5, 6); g is empty: no cluster
        assert_eq!(p.fat, vec![EOC, EOC, EOC, 6, EOC]);
        let a = &p.dirs[1].1;
        assert_eq!(&a[..11], b".          ");
        assert_eq!(u16::from_le_bytes([a[26], a[27]]), 3);
        assert_eq!(&a[32..43], b"..         ");
        assert_eq!(u16::from_le_bytes([a[58], a[59]]), 0, ".. of a first-level directory is cluster 0");
        let b = &p.dirs[2].1;
        assert_eq!(u16::from_le_bytes([b[58], b[59]]), 3, ".. of a/b is a's cluster");
        // root starts with the volume label
        assert_eq!(&p.dirs[0].1[..11], b"MYLABEL    ");
        assert_eq!(p.dirs[0].1[11], ATTR_VOLUME_ID);
    }

    #[test]
    fn plan_refusals() {
        let g = geometry();
        assert!(matches!(FatLayout::new(g, &[e("x/y", false, 1)]), Err(FatWriteError::Orphan { .. })));
        assert!(matches!(FatLayout::new(g, &[e("a:b", false, 1)]), Err(FatWriteError::BadName { ch: ':', .. })));
        assert!(matches!(
            FatLayout::new(g, &[e("A", false, 1), e("a", false, 1)]),
            Err(FatWriteError::CaseClash { .. })
        ));
        assert!(matches!(FatLayout::new(g, &[e("big", false, 5 << 30)]), Err(FatWriteError::FileTooBig { .. })));
        assert!(matches!(FatLayout::new(g, &[e("big", false, (4u64 << 30) - 1)]), Err(FatWriteError::NoSpace { .. })));
    }

    #[test]
    fn direct_split_goes_direct_only_when_aligned() {
        const A: u64 = 4096;
        // Aligned position, memory and length: all of it.
        assert_eq!(direct_split(8192, 4096, 4 << 20, 8 << 20, false, A), (4 << 20, false));
        // A file's last write: the aligned part, and the rest padded when its cluster holds the padding.
        assert_eq!(direct_split(8192, 4096, 10_000, 12_288, true, A), (8192, true));
        assert_eq!(direct_split(8192, 4096, 100, 4096, true, A), (0, true));
        // ...not padded when the clusters end before the padding would (clusters smaller than the alignment).
        assert_eq!(direct_split(8192, 4096, 10_000, 10_240, true, A), (8192, false));
        // ...nor in the middle of a file: the next write would land inside the padding.
        assert_eq!(direct_split(8192, 4096, 10_000, 1 << 20, false, A), (8192, false));
        // Unaligned position or memory: nothing direct.
        assert_eq!(direct_split(8192 + 512, 4096, 8192, 1 << 20, false, A), (0, false));
        assert_eq!(direct_split(8192, 4096 + 16, 8192, 1 << 20, false, A), (0, false));
        // Nothing to write.
        assert_eq!(direct_split(0, 0, 0, 0, true, A), (0, false));
    }

    fn have(tool: &str) -> bool {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// `len` bytes of a file's content, at an address that is a multiple of DIRECT_ALIGN.
    struct Aligned(Vec<u8>, usize, usize);
    impl Aligned {
        fn new(p: &str, len: usize) -> Aligned {
            let mut v = vec![0u8; len + DIRECT_ALIGN];
            let at = v.as_ptr().align_offset(DIRECT_ALIGN);
            for (i, b) in v[at..at + len].iter_mut().enumerate() {
                *b = (i + p.len()) as u8;
            }
            Aligned(v, at, len)
        }
        fn get(&self) -> &[u8] {
            &self.0[self.1..self.1 + self.2]
        }
    }

    /// Format a real filesystem with mkfs.fat (`cluster_sectors` sectors a cluster), place it at `offset` in an
    /// image whose other bytes are a pattern, write a tree through FatWriter (file data through an O_DIRECT
    /// handle when `direct`), and let fsck.fat and mtools judge it. Returns the bytes that went direct.
    fn write_and_judge(name: &str, offset: u64, direct: bool, cluster_sectors: &str) -> Option<u64> {
        // mtools and Windows tell FAT32 by its cluster count (at least 65525): 4 KiB clusters need 256 MiB.
        let fs_bytes: u64 = if cluster_sectors == "1" { 48 << 20 } else { 288 << 20 };
        if !have("mkfs.fat") || !have("mcopy") {
            crate::report_skip(name, "dosfstools or mtools missing");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let fs = dir.path().join("fs.img");
        File::create(&fs).unwrap().set_len(fs_bytes).unwrap();
        let st = std::process::Command::new("mkfs.fat")
            .args(["-F", "32", "-n", "TESTVOL", "--mbr=n", "-s", cluster_sectors])
            .arg(&fs)
            .output()
            .unwrap();
        assert!(st.status.success(), "{st:?}");
        let img = dir.path().join("disk.img");
        let pattern: Vec<u8> = (0..offset + 8192).map(|i| (i % 251) as u8).collect();
        let after = &pattern[..8192];
        {
            let mut out = File::create(&img).unwrap();
            out.write_all(&pattern[..offset as usize]).unwrap();
            std::io::copy(&mut File::open(&fs).unwrap(), &mut out).unwrap();
            out.write_all(after).unwrap();
        }
        let mut entries = vec![e("Program Files", true, 0), e("Program Files/ünï cödé.txt", false, 3)];
        entries.push(e("boot", true, 0));
        entries.push(e("boot/en-us", true, 0));
        entries.push(e("boot/en-us/bootmgr.exe.mui", false, 70_000));
        entries.push(e("sources", true, 0));
        entries.push(e("sources/big.wim", false, 3 * 4096 * 1024 + 4096 + 17));
        entries.push(e("empty.dat", false, 0));
        entries.push(e("emptydir", true, 0));
        for i in 0..40 {
            entries.push(e(&format!("longfilename-{i}.txt"), false, i));
        }
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
        let direct_handle = match direct {
            false => None,
            true => {
                use std::os::unix::fs::OpenOptionsExt;
                match std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(&img) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        crate::report_skip(name, &format!("the temporary directory refuses O_DIRECT: {e}"));
                        return None;
                    }
                }
            }
        };
        let place = FatPlace { file: f, path: img.clone(), offset, size: fs_bytes, direct: direct_handle };
        let mut w = FatWriter::open_at(place, &entries).unwrap();
        for ent in &entries {
            if ent.is_dir {
                w.create_dir(&ent.path, ent.mtime).unwrap();
            } else {
                let data = Aligned::new(&ent.path, ent.size as usize);
                let mut out = w.create_file(&ent.path, ent.mtime, ent.size).unwrap();
                // As the copy engine writes: whole chunks of 4 MiB, then the rest.
                for piece in data.get().chunks(4 << 20) {
                    out.write_all(piece).unwrap();
                }
            }
        }
        w.finish(&entries).unwrap();
        let direct_bytes = w.direct_bytes();
        drop(w);
        let disk = File::open(&img).unwrap();
        let mut around = vec![0u8; offset as usize];
        disk.read_exact_at(&mut around, 0).unwrap();
        assert!(around == pattern[..offset as usize], "bytes before the filesystem changed");
        let mut around = vec![0u8; 8192];
        disk.read_exact_at(&mut around, offset + fs_bytes).unwrap();
        assert!(around == after, "bytes after it changed");
        assert_eq!(disk.metadata().unwrap().len(), offset + fs_bytes + 8192);
        // The filesystem alone, for fsck.fat (which takes no offset).
        std::io::Seek::seek(&mut &disk, std::io::SeekFrom::Start(offset)).unwrap();
        let mut region = std::io::Read::take(&disk, fs_bytes);
        std::io::copy(&mut region, &mut File::create(&fs).unwrap()).unwrap();
        let out = std::process::Command::new("fsck.fat").arg("-n").arg(&fs).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        let ext = dir.path().join("x");
        std::fs::create_dir(&ext).unwrap();
        let out = std::process::Command::new("mcopy")
            .env("LC_ALL", "C.UTF-8")
            .env("TZ", "UTC")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&fs)
            .args(["-s", "-n", "-m", "::/*"])
            .arg(&ext)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        for ent in &entries {
            let p = ext.join(&ent.path);
            if ent.is_dir {
                assert!(p.is_dir(), "{}", ent.path);
            } else {
                assert!(std::fs::read(&p).unwrap() == Aligned::new(&ent.path, ent.size as usize).get(), "{}", ent.path);
                use std::os::unix::fs::MetadataExt;
                assert_eq!(std::fs::metadata(&p).unwrap().mtime(), ent.mtime, "{}", ent.path);
            }
        }
        let out = std::process::Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&fs)
            .arg("::/")
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains("Volume in drive : is TESTVOL"), "{listing}");
        assert!(listing.contains("LONGFI~1 TXT"), "{listing}");
        assert!(listing.contains("PROGRA~1"), "{listing}");
        Some(direct_bytes)
    }

    /// A boot sector that claims more than the partition holds is refused: no write may land past it.
    #[test]
    fn a_filesystem_larger_than_its_partition_is_refused() {
        if !have("mkfs.fat") {
            crate::report_skip("a_filesystem_larger_than_its_partition_is_refused", "dosfstools missing");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let fs = dir.path().join("fs.img");
        File::create(&fs).unwrap().set_len(48 << 20).unwrap();
        let st = std::process::Command::new("mkfs.fat").args(["-F", "32", "--mbr=n"]).arg(&fs).output().unwrap();
        assert!(st.status.success(), "{st:?}");
        let place = |size| FatPlace { file: File::open(&fs).unwrap(), path: fs.clone(), offset: 0, size, direct: None };
        let err = FatWriter::open_at(place((48 << 20) - 512), &[]).err().expect("refused");
        assert!(err.to_string().contains("claims more sectors than the partition has"), "{err}");
        FatWriter::open_at(place(48 << 20), &[]).expect("the exact size is fine");
    }

    #[test]
    fn writes_a_filesystem_that_fsck_and_mtools_accept() {
        let name = "writes_a_filesystem_that_fsck_and_mtools_accept";
        if let Some(direct) = write_and_judge(name, 0, false, "1") {
            assert_eq!(direct, 0);
        }
    }

    /// An image's partition, written on the disk at its offset with file data through O_DIRECT (4 KiB clusters):
    /// the big file goes direct, its end padded inside its last cluster, the small ones through the page cache;
    /// the bytes around the filesystem are untouched.
    #[test]
    fn writes_at_an_offset_through_direct_io() {
        let name = "writes_at_an_offset_through_direct_io";
        let Some(direct) = write_and_judge(name, 1 << 20, true, "8") else { return };
        assert_eq!(direct, 3 * 4096 * 1024 + 4096 + 17);
    }

    /// With 512-byte clusters, files do not start on 4 KiB: they go through the page cache, and are right too.
    #[test]
    fn small_clusters_fall_back_to_the_page_cache() {
        let name = "small_clusters_fall_back_to_the_page_cache";
        let Some(direct) = write_and_judge(name, 1 << 20, true, "1") else { return };
        assert!(direct < 3 * 4096 * 1024 + 4096 + 17, "{direct}");
    }
}
