//! A small read-only FAT12/16/32 reader for verification: the stick's bytes are untrusted, so every chain,
//! size and name is bounded (cluster chains longer than their file, cycles, clusters out of range, directories
//! over FAT's 65,536-entry limit, too many entries or too deep a tree are errors naming the path), and memory
//! stays small (one FAT window cached, files streamed).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

/// Bounds on what a walk accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Directories and files in all.
    pub entries: usize,
    /// Directory nesting.
    pub depth: usize,
    /// Bytes of one path.
    pub path_bytes: usize,
    /// Bytes of all paths together (what the walk keeps in memory).
    pub all_path_bytes: usize,
    /// Bytes of all directories read (each at most FAT's 2 MiB).
    pub dir_bytes: u64,
}

/// Far above any Windows ISO (a few thousand entries, a few MiB of directories), far below what would take
/// a machine's memory or hours.
pub const LIMITS: Limits =
    Limits { entries: 1_000_000, depth: 64, path_bytes: 4096, all_path_bytes: 256 << 20, dir_bytes: 256 << 20 };

/// FAT allows at most 65,536 entries of 32 bytes in a directory.
const MAX_DIR_BYTES: u64 = 65_536 * 32;
/// Bytes of the FAT read at a time.
const FAT_WINDOW: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("cannot read the stick at byte {offset}: {source}")]
    Read {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("the boot sector is not a FAT boot sector: {0}")]
    BootSector(&'static str),
    #[error("{path}: {what}")]
    Chain { path: String, what: String },
    #[error("{path}: the directory is damaged: {what}")]
    Directory { path: String, what: String },
    #[error("the filesystem holds more than {0} entries")]
    TooManyEntries(usize),
    #[error("the filesystem's paths take more than {0} bytes")]
    TooManyPathBytes(usize),
    #[error("the filesystem's directories take more than {0} bytes")]
    TooManyDirBytes(u64),
    #[error("{path}: directories nested deeper than {depth}")]
    TooDeep { path: String, depth: usize },
    #[error("{path}: path longer than {bytes} bytes")]
    PathTooLong { path: String, bytes: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FatKind {
    Fat12,
    Fat16,
    Fat32,
}

/// One directory or file found on the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatEntry {
    /// Path from the root, '/'-separated, as its long name (or 8.3 name) spells it.
    pub path: String,
    pub is_dir: bool,
    pub size: u64,
    pub first_cluster: u32,
}

/// An opened FAT volume: `len` bytes of `dev` from `base`.
pub struct FatVolume<'a> {
    dev: &'a File,
    base: u64,
    pub kind: FatKind,
    bytes_per_sector: u64,
    sectors_per_cluster: u64,
    fat_offset: u64,
    fat_bytes: u64,
    pub fats: u64,
    /// FAT12/16: the fixed root directory (offset in the volume, bytes).
    root_region: (u64, u64),
    root_cluster: u32,
    data_offset: u64,
    /// Data clusters (numbers 2..=clusters+1).
    clusters: u32,
    cache: std::cell::RefCell<(u64, Vec<u8>)>,
}

impl<'a> FatVolume<'a> {
    /// Parse the boot sector at `base` of `dev`; `len` is the partition's size (the volume must fit in it).
    pub fn open(dev: &'a File, base: u64, len: u64) -> Result<FatVolume<'a>, FatError> {
        let mut bs = [0u8; 512];
        dev.read_exact_at(&mut bs, base).map_err(|source| FatError::Read { offset: base, source })?;
        let u16_at = |o: usize| u64::from(u16::from_le_bytes([bs[o], bs[o + 1]]));
        let u32_at = |o: usize| u64::from(u32::from_le_bytes([bs[o], bs[o + 1], bs[o + 2], bs[o + 3]]));
        if bs[510] != 0x55 || bs[511] != 0xAA {
            return Err(FatError::BootSector("no 55 AA signature"));
        }
        let bps = u16_at(11);
        let spc = u64::from(bs[13]);
        let reserved = u16_at(14);
        let fats = u64::from(bs[16]);
        let root_entries = u16_at(17);
        let total = if u16_at(19) != 0 { u16_at(19) } else { u32_at(32) };
        let fat_sectors = if u16_at(22) != 0 { u16_at(22) } else { u32_at(36) };
        if !matches!(bps, 512 | 1024 | 2048 | 4096) {
            return Err(FatError::BootSector("bytes per sector is not 512, 1024, 2048 or 4096"));
        }
        if spc == 0 || !spc.is_power_of_two() || bps * spc > 1 << 20 {
            return Err(FatError::BootSector("implausible sectors per cluster"));
        }
        if reserved == 0 || fats == 0 || fats > 4 || fat_sectors == 0 || total == 0 {
            return Err(FatError::BootSector("implausible reserved sectors, FAT count, FAT size or volume size"));
        }
        if total.saturating_mul(bps) > len {
            return Err(FatError::BootSector("the volume is bigger than its partition"));
        }
        let root_sectors = (root_entries * 32).div_ceil(bps);
        let data_sector = reserved + fats * fat_sectors + root_sectors;
        if data_sector >= total {
            return Err(FatError::BootSector("the data area starts past the end of the volume"));
        }
        let count = (total - data_sector) / spc;
        let kind = if count < 4085 {
            FatKind::Fat12
        } else if count < 65525 {
            FatKind::Fat16
        } else {
            FatKind::Fat32
        };
        if (kind == FatKind::Fat32) != (root_entries == 0) {
            return Err(FatError::BootSector("the root directory does not match the FAT type"));
        }
        let fat_bytes = fat_sectors * bps;
        // The FAT must have an entry for every cluster.
        let by_fat = match kind {
            FatKind::Fat12 => fat_bytes * 2 / 3,
            FatKind::Fat16 => fat_bytes / 2,
            FatKind::Fat32 => fat_bytes / 4,
        }
        .saturating_sub(2);
        let clusters = count.min(by_fat).min(0x0FFF_FFF5) as u32;
        let root_cluster = u32_at(44) as u32;
        if kind == FatKind::Fat32 && (root_cluster < 2 || u64::from(root_cluster) > u64::from(clusters) + 1) {
            return Err(FatError::BootSector("the root directory's cluster is out of range"));
        }
        Ok(FatVolume {
            dev,
            base,
            kind,
            bytes_per_sector: bps,
            sectors_per_cluster: spc,
            fat_offset: reserved * bps,
            fat_bytes,
            fats,
            root_region: ((reserved + fats * fat_sectors) * bps, root_sectors * bps),
            root_cluster: if kind == FatKind::Fat32 { root_cluster } else { 0 },
            data_offset: data_sector * bps,
            clusters,
            cache: std::cell::RefCell::new((u64::MAX, Vec::new())),
        })
    }

    pub fn cluster_bytes(&self) -> u64 {
        self.bytes_per_sector * self.sectors_per_cluster
    }

    /// Where each FAT copy lies (offset in the volume, bytes), for comparing the copies.
    pub fn fat_copies(&self) -> Vec<(u64, u64)> {
        (0..self.fats).map(|i| (self.fat_offset + i * self.fat_bytes, self.fat_bytes)).collect()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), FatError> {
        let at = self.base + offset;
        self.dev.read_exact_at(buf, at).map_err(|source| FatError::Read { offset: at, source })
    }

    /// Bytes of the first FAT, through a one-window cache.
    fn fat_bytes_at(&self, offset: u64, out: &mut [u8]) -> Result<(), FatError> {
        for (i, b) in out.iter_mut().enumerate() {
            let o = offset + i as u64;
            let window = o / FAT_WINDOW;
            let mut cache = self.cache.borrow_mut();
            if cache.0 != window {
                let start = window * FAT_WINDOW;
                let len = FAT_WINDOW.min(self.fat_bytes - start) as usize;
                let mut data = vec![0u8; len];
                self.read_at(&mut data, self.fat_offset + start)?;
                *cache = (window, data);
            }
            *b = cache.1[(o - window * FAT_WINDOW) as usize];
        }
        Ok(())
    }

    /// The FAT's entry for `cluster`, made uniform: `Next(c)`, `End`, `Free` or `Bad`.
    fn next(&self, cluster: u32) -> Result<Link, FatError> {
        let c = u64::from(cluster);
        let raw = match self.kind {
            FatKind::Fat12 => {
                let mut b = [0u8; 2];
                self.fat_bytes_at(c + c / 2, &mut b)?;
                let v = u32::from(u16::from_le_bytes(b));
                let v = if c % 2 == 1 { v >> 4 } else { v & 0x0FFF };
                if v >= 0xFF8 {
                    0x0FFF_FFF8
                } else if v == 0xFF7 {
                    0x0FFF_FFF7
                } else {
                    v
                }
            }
            FatKind::Fat16 => {
                let mut b = [0u8; 2];
                self.fat_bytes_at(c * 2, &mut b)?;
                let v = u32::from(u16::from_le_bytes(b));
                if v >= 0xFFF8 {
                    0x0FFF_FFF8
                } else if v == 0xFFF7 {
                    0x0FFF_FFF7
                } else {
                    v
                }
            }
            FatKind::Fat32 => {
                let mut b = [0u8; 4];
                self.fat_bytes_at(c * 4, &mut b)?;
                u32::from_le_bytes(b) & 0x0FFF_FFFF
            }
        };
        Ok(match raw {
            0 => Link::Free,
            0x0FFF_FFF7 => Link::Bad,
            v if v >= 0x0FFF_FFF8 => Link::End,
            v => Link::Next(v),
        })
    }

    /// Where a file's first cluster lies, in bytes from the volume's start (None: not a data cluster).
    pub fn file_offset(&self, first_cluster: u32) -> Option<u64> {
        self.valid_cluster(first_cluster).then(|| self.cluster_offset(first_cluster))
    }

    fn valid_cluster(&self, c: u32) -> bool {
        c >= 2 && u64::from(c) <= u64::from(self.clusters) + 1
    }

    fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset + (u64::from(c) - 2) * self.cluster_bytes()
    }

    /// The clusters of a chain from `first`, at most `max` of them (more, or a bad link, is an error for `path`).
    fn chain(&self, path: &str, first: u32, max: u64) -> Result<Vec<u32>, FatError> {
        let err = |what: String| FatError::Chain { path: path.to_string(), what };
        let mut out = Vec::new();
        let mut c = first;
        loop {
            if !self.valid_cluster(c) {
                return Err(err(format!("cluster {c} is outside the volume")));
            }
            if out.len() as u64 >= max {
                return Err(err(format!("its cluster chain is longer than {max} clusters (or loops)")));
            }
            out.push(c);
            match self.next(c)? {
                Link::End => return Ok(out),
                Link::Next(n) => c = n,
                Link::Free => return Err(err(format!("its cluster chain runs into free cluster {c}"))),
                Link::Bad => return Err(err(format!("its cluster chain runs into bad cluster {c}"))),
            }
        }
    }

    /// A directory's raw bytes (root or not), bounded by FAT's directory size limit.
    fn dir_bytes(&self, path: &str, first: u32) -> Result<Vec<u8>, FatError> {
        if first == 0 && path.is_empty() && self.kind != FatKind::Fat32 {
            let (off, len) = self.root_region;
            let mut data = vec![0u8; len.min(MAX_DIR_BYTES) as usize];
            self.read_at(&mut data, off)?;
            return Ok(data);
        }
        let max = MAX_DIR_BYTES.div_ceil(self.cluster_bytes());
        let chain = self.chain(if path.is_empty() { "/" } else { path }, first, max)?;
        let cb = self.cluster_bytes() as usize;
        let mut data = vec![0u8; chain.len() * cb];
        for (i, &c) in chain.iter().enumerate() {
            self.read_at(&mut data[i * cb..(i + 1) * cb], self.cluster_offset(c))?;
        }
        Ok(data)
    }

    /// Every directory and file, parents before children (depth first), within `limits`: an error.
    pub fn walk(&self, limits: &Limits) -> Result<Vec<FatEntry>, FatError> {
        let (entries, damaged) = self.walk_tolerant(limits)?;
        match damaged.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(entries),
        }
    }

    /// As `walk`, but a damaged directory (a bad cluster chain, a directory pointing back at one already seen)
    /// is set aside with its error and the walk goes on; only the limits, and read errors, end it.
    pub fn walk_tolerant(&self, limits: &Limits) -> Result<(Vec<FatEntry>, Vec<FatError>), FatError> {
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        let mut stack = vec![(String::new(), self.root_cluster, 0usize)];
        let mut seen = std::collections::HashSet::new();
        let (mut path_bytes, mut dir_bytes) = (0usize, 0u64);
        while let Some((dir, first, depth)) = stack.pop() {
            if depth > limits.depth {
                return Err(FatError::TooDeep { path: dir, depth: limits.depth });
            }
            let data = match self.dir_bytes(&dir, first) {
                Ok(d) => d,
                Err(e @ FatError::Read { .. }) => return Err(e),
                Err(e) => {
                    damaged.push(e);
                    continue;
                }
            };
            dir_bytes += data.len() as u64;
            if dir_bytes > limits.dir_bytes {
                return Err(FatError::TooManyDirBytes(limits.dir_bytes));
            }
            let mut children = Vec::new();
            for (name, is_dir, size, cluster) in parse_dir(&data) {
                let path = if dir.is_empty() { name } else { format!("{dir}/{name}") };
                if path.len() > limits.path_bytes {
                    return Err(FatError::PathTooLong { path, bytes: limits.path_bytes });
                }
                if out.len() >= limits.entries {
                    return Err(FatError::TooManyEntries(limits.entries));
                }
                path_bytes += path.len();
                if path_bytes > limits.all_path_bytes {
                    return Err(FatError::TooManyPathBytes(limits.all_path_bytes));
                }
                if is_dir {
                    if cluster == 0 || cluster == self.root_cluster || !seen.insert(cluster) {
                        damaged.push(FatError::Directory {
                            path: path.clone(),
                            what: "it points back at the root or at a directory already seen".into(),
                        });
                    } else {
                        children.push((path.clone(), cluster, depth + 1));
                    }
                }
                out.push(FatEntry { path, is_dir, size, first_cluster: cluster });
            }
            stack.extend(children.into_iter().rev());
        }
        Ok((out, damaged))
    }

    /// `buf.len()` bytes of a file (`size` bytes from cluster `first`) at `offset`: the chain is followed without
    /// reading data up to there (bounded by the clusters the size needs), then read.
    pub fn read_file_at(&self, path: &str, first: u32, size: u64, offset: u64, buf: &mut [u8]) -> Result<(), FatError> {
        let err = |what: String| FatError::Chain { path: path.to_string(), what };
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > size) {
            return Err(err(format!("byte {offset} and the {} after it are past its end", buf.len())));
        }
        let cb = self.cluster_bytes();
        let max = size.div_ceil(cb);
        if max > u64::from(self.clusters) {
            return Err(err(format!("its size needs more clusters than the volume's {}", self.clusters)));
        }
        let mut c = first;
        let mut index = 0u64;
        let mut done = 0usize;
        let mut at = offset;
        while done < buf.len() {
            if !self.valid_cluster(c) {
                return Err(err(format!("cluster {c} is outside the volume")));
            }
            if index == at / cb {
                let within = at % cb;
                let n = ((cb - within) as usize).min(buf.len() - done);
                self.read_at(&mut buf[done..done + n], self.cluster_offset(c) + within)?;
                done += n;
                at += n as u64;
            }
            if done == buf.len() {
                break;
            }
            index += 1;
            if index >= max {
                return Err(err("its cluster chain ends before its size".into()));
            }
            c = match self.next(c)? {
                Link::Next(n) => n,
                _ => return Err(err("its cluster chain ends before its size".into())),
            };
        }
        Ok(())
    }

    /// A reader of a file's `size` bytes from `first`: its chain must hold exactly the clusters the size needs
    /// and end there (a longer chain, a loop, a shorter one or a cluster out of range is an error).
    pub fn open_file(&self, path: &str, first: u32, size: u64) -> FatFile<'_, 'a> {
        let clusters = size.div_ceil(self.cluster_bytes());
        FatFile {
            vol: self,
            path: path.to_string(),
            cluster: if size == 0 { None } else { Some(first) },
            left_in_file: size,
            clusters_left: clusters,
            run: None,
            checked_end: size == 0 && first == 0,
            zero_first: first,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Next(u32),
    End,
    Free,
    Bad,
}

/// The checksum of an 8.3 name that its long-name entries carry.
fn sfn_checksum(name: &[u8]) -> u8 {
    name.iter().fold(0u8, |sum, &b| ((sum & 1) << 7).wrapping_add(sum >> 1).wrapping_add(b))
}

/// The 8.3 name as text, with the NT lower-case flags (byte 12: 0x08 base, 0x10 extension).
fn short_name(e: &[u8]) -> String {
    let mut raw: [u8; 11] = e[..11].try_into().unwrap_or([b' '; 11]);
    if raw[0] == 0x05 {
        raw[0] = 0xE5;
    }
    let text = |b: &[u8], lower: bool| -> String {
        let s: String = b.iter().map(|&c| if c.is_ascii() { c as char } else { '\u{FFFD}' }).collect();
        let s = s.trim_end_matches(' ').to_string();
        if lower { s.to_ascii_lowercase() } else { s }
    };
    let base = text(&raw[..8], e[12] & 0x08 != 0);
    let ext = text(&raw[8..], e[12] & 0x10 != 0);
    if ext.is_empty() { base } else { format!("{base}.{ext}") }
}

/// The entries of one directory's bytes: (name, is_dir, size, first cluster), without ".", ".." and volume
/// labels. A long name is used only when its entries are whole, in order and carry the 8.3 name's checksum.
fn parse_dir(data: &[u8]) -> Vec<(String, bool, u64, u32)> {
    let mut out = Vec::new();
    // Long name being gathered: (units, checksum, next sequence number expected).
    let mut lfn: Option<(Vec<u16>, u8, u8)> = None;
    for e in data.chunks_exact(32) {
        if e[0] == 0 {
            break;
        }
        if e[0] == 0xE5 {
            lfn = None;
            continue;
        }
        let attr = e[11];
        if attr & 0x3F == 0x0F {
            let seq = e[0] & 0x1F;
            let units: Vec<u16> = [1usize, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30]
                .iter()
                .map(|&o| u16::from_le_bytes([e[o], e[o + 1]]))
                .collect();
            if e[0] & 0x40 != 0 && (1..=20).contains(&seq) {
                let mut buf = vec![0u16; usize::from(seq) * 13];
                buf[usize::from(seq - 1) * 13..usize::from(seq) * 13].copy_from_slice(&units);
                lfn = Some((buf, e[13], seq - 1));
            } else if let Some((buf, sum, next)) = &mut lfn {
                if seq == *next && seq >= 1 && e[13] == *sum {
                    buf[usize::from(seq - 1) * 13..usize::from(seq) * 13].copy_from_slice(&units);
                    *next = seq - 1;
                } else {
                    lfn = None;
                }
            }
            continue;
        }
        let pending = lfn.take();
        if attr & 0x08 != 0 {
            continue; // volume label
        }
        if &e[..11] == b".          " || &e[..11] == b"..         " {
            continue;
        }
        let name = match pending {
            Some((buf, sum, 0)) if sum == sfn_checksum(&e[..11]) => {
                let end = buf.iter().position(|&u| u == 0).unwrap_or(buf.len());
                Some(String::from_utf16_lossy(&buf[..end]))
            }
            _ => None,
        };
        let name = name.filter(|n| !n.is_empty()).unwrap_or_else(|| short_name(e));
        let cluster =
            (u32::from(u16::from_le_bytes([e[20], e[21]])) << 16) | u32::from(u16::from_le_bytes([e[26], e[27]]));
        let size = u64::from(u32::from_le_bytes([e[28], e[29], e[30], e[31]]));
        out.push((name, attr & 0x10 != 0, size, cluster));
    }
    out
}

/// A file's bytes read through its cluster chain (streaming: one cluster run at a time).
pub struct FatFile<'v, 'a> {
    vol: &'v FatVolume<'a>,
    path: String,
    cluster: Option<u32>,
    left_in_file: u64,
    clusters_left: u64,
    /// The run being read: (volume offset, bytes left in it).
    run: Option<(u64, u64)>,
    checked_end: bool,
    zero_first: u32,
}

impl FatFile<'_, '_> {
    fn err(&self, what: String) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {what}", self.path))
    }

    fn io(e: FatError) -> std::io::Error {
        std::io::Error::other(e.to_string())
    }

    /// Gather the next run of consecutive clusters (up to 1 MiB), checking each link.
    fn next_run(&mut self) -> std::io::Result<()> {
        let cb = self.vol.cluster_bytes();
        if self.clusters_left > u64::from(self.vol.clusters) {
            return Err(self.err(format!("its size needs more clusters than the volume's {}", self.vol.clusters)));
        }
        let Some(start) = self.cluster else {
            return Err(self.err("its cluster chain ends before its size".into()));
        };
        if !self.vol.valid_cluster(start) {
            return Err(self.err(format!("cluster {start} is outside the volume")));
        }
        let mut c = start;
        let mut n = 0u64;
        loop {
            n += 1;
            self.clusters_left -= 1;
            let link = self.vol.next(c).map_err(Self::io)?;
            if self.clusters_left == 0 {
                match link {
                    Link::End => {
                        self.cluster = None;
                        self.checked_end = true;
                    }
                    _ => return Err(self.err("its cluster chain is longer than its size (or loops)".into())),
                }
                break;
            }
            match link {
                Link::Next(next) if self.vol.valid_cluster(next) => {
                    if next == c + 1 && n * cb < 1 << 20 {
                        c = next;
                        continue;
                    }
                    self.cluster = Some(next);
                    break;
                }
                Link::Next(next) => return Err(self.err(format!("cluster {next} is outside the volume"))),
                _ => return Err(self.err("its cluster chain ends before its size".into())),
            }
        }
        let bytes = (n * cb).min(self.left_in_file);
        self.run = Some((self.vol.cluster_offset(start), bytes));
        Ok(())
    }
}

impl Read for FatFile<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left_in_file == 0 || buf.is_empty() {
            if !self.checked_end && self.zero_first != 0 && self.left_in_file == 0 && self.clusters_left == 0 {
                // An empty file that points at a cluster: FAT writers give empty files cluster 0.
                self.checked_end = true;
                return Err(self.err(format!("an empty file with a cluster chain from {}", self.zero_first)));
            }
            return Ok(0);
        }
        if self.run.is_none_or(|(_, left)| left == 0) {
            self.next_run()?;
        }
        let (off, left) = self.run.unwrap_or((0, 0));
        let n = (buf.len() as u64).min(left) as usize;
        self.vol.read_at(&mut buf[..n], off).map_err(Self::io)?;
        self.run = Some((off + n as u64, left - n as u64));
        self.left_in_file -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(name: &[u8; 11], attr: u8, case: u8, cluster: u32, size: u32) -> [u8; 32] {
        let mut e = [0u8; 32];
        e[..11].copy_from_slice(name);
        e[11] = attr;
        e[12] = case;
        e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
        e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
        e[28..32].copy_from_slice(&size.to_le_bytes());
        e
    }

    fn lfn(name: &str, sfn: &[u8; 11]) -> Vec<[u8; 32]> {
        let mut units: Vec<u16> = name.encode_utf16().collect();
        if !units.len().is_multiple_of(13) {
            units.push(0);
        }
        while !units.len().is_multiple_of(13) {
            units.push(0xFFFF);
        }
        let n = units.len() / 13;
        let sum = sfn_checksum(sfn);
        (1..=n)
            .rev()
            .map(|seq| {
                let mut e = [0u8; 32];
                e[0] = seq as u8 | if seq == n { 0x40 } else { 0 };
                e[11] = 0x0F;
                e[13] = sum;
                for (k, &o) in [1usize, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30].iter().enumerate() {
                    e[o..o + 2].copy_from_slice(&units[(seq - 1) * 13 + k].to_le_bytes());
                }
                e
            })
            .collect()
    }

    #[test]
    fn long_short_and_lower_case_names() {
        let mut d = Vec::new();
        d.extend_from_slice(&short(b".          ", 0x10, 0, 5, 0));
        for e in lfn("Long file name.txt", b"LONGFI~1TXT") {
            d.extend_from_slice(&e);
        }
        d.extend_from_slice(&short(b"LONGFI~1TXT", 0x20, 0, 7, 100));
        d.extend_from_slice(&short(b"README  TXT", 0x20, 0x18, 9, 3));
        d.extend_from_slice(&short(b"SOURCES    ", 0x10, 0, 10, 0));
        // A long name whose checksum does not match: the 8.3 name is used.
        for e in lfn("decoy", b"OTHER   BIN") {
            d.extend_from_slice(&e);
        }
        d.extend_from_slice(&short(b"REAL    BIN", 0x20, 0, 11, 1));
        d.extend_from_slice(&[0u8; 32]);
        d.extend_from_slice(&short(b"AFTER   END", 0x20, 0, 12, 1));
        let got = parse_dir(&d);
        assert_eq!(
            got,
            vec![
                ("Long file name.txt".to_string(), false, 100, 7),
                ("readme.txt".to_string(), false, 3, 9),
                ("SOURCES".to_string(), true, 0, 10),
                ("REAL.BIN".to_string(), false, 1, 11),
            ]
        );
    }

    /// A FAT12 image by hand: a file whose chain loops, one whose chain is too short, a directory pointing at
    /// the root; every one an error, never a hang.
    #[test]
    fn hostile_chains_are_errors() {
        let mut img = vec![0u8; 64 * 512];
        let bs = &mut img[..512];
        bs[11..13].copy_from_slice(&512u16.to_le_bytes());
        bs[13] = 1;
        bs[14..16].copy_from_slice(&1u16.to_le_bytes());
        bs[16] = 1;
        bs[17..19].copy_from_slice(&16u16.to_le_bytes());
        bs[19..21].copy_from_slice(&64u16.to_le_bytes());
        bs[22..24].copy_from_slice(&1u16.to_le_bytes());
        bs[510] = 0x55;
        bs[511] = 0xAA;
        // FAT12 at sector 1: 2 → 3 → 2 (loop); 4 → free; 5 end.
        let mut set = |c: usize, v: u16| {
            let o = 512 + c + c / 2;
            let cur = u16::from_le_bytes([img[o], img[o + 1]]);
            let new = if c % 2 == 1 { (cur & 0x000F) | (v << 4) } else { (cur & 0xF000) | (v & 0x0FFF) };
            img[o..o + 2].copy_from_slice(&new.to_le_bytes());
        };
        set(2, 3);
        set(3, 2);
        set(4, 0);
        set(5, 0xFFF);
        set(6, 0xFFF);
        // Root at sector 2 (16 entries = 1 sector), data from sector 3.
        let root = 2 * 512;
        img[root..root + 32].copy_from_slice(&short(b"LOOP    BIN", 0x20, 0, 2, 5000));
        img[root + 32..root + 64].copy_from_slice(&short(b"SHORT   BIN", 0x20, 0, 4, 1000));
        img[root + 64..root + 96].copy_from_slice(&short(b"GOOD    BIN", 0x20, 0, 5, 10));
        img[root + 96..root + 128].copy_from_slice(&short(b"LONGER  BIN", 0x20, 0, 2, 10));
        img[root + 128..root + 160].copy_from_slice(&short(b"SELF       ", 0x10, 0, 6, 0));
        let c6 = (3 + 4) * 512;
        img[c6..c6 + 32].copy_from_slice(&short(b"UP         ", 0x10, 0, 6, 0));
        img[3 * 512 + 3 * 512..3 * 512 + 3 * 512 + 10].copy_from_slice(b"0123456789");
        let tmp = tempfile::tempfile().unwrap();
        tmp.write_all_at(&img, 0).unwrap();
        let vol = FatVolume::open(&tmp, 0, img.len() as u64).unwrap();
        assert_eq!(vol.kind, FatKind::Fat12);
        let walk = vol.walk(&LIMITS);
        assert!(matches!(walk, Err(FatError::Directory { ref path, .. }) if path == "SELF/UP"), "{walk:?}");
        let (entries, damaged) = vol.walk_tolerant(&LIMITS).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["LOOP.BIN", "SHORT.BIN", "GOOD.BIN", "LONGER.BIN", "SELF", "SELF/UP"]);
        assert_eq!(damaged.len(), 1);
        let read = |first, size| {
            let mut v = Vec::new();
            vol.open_file("f", first, size).read_to_end(&mut v).map(|_| v)
        };
        assert!(read(2, 5000).unwrap_err().to_string().contains("longer than its size"));
        assert!(read(4, 1000).unwrap_err().to_string().contains("ends before its size"));
        assert!(read(2, 10).unwrap_err().to_string().contains("longer than its size"));
        assert_eq!(read(5, 10).unwrap(), b"0123456789");
        assert!(read(9999, 10).unwrap_err().to_string().contains("outside the volume"));
        assert!(read(5, 1 << 30).unwrap_err().to_string().contains("more clusters than the volume"));
        let mut two = [0u8; 2];
        vol.read_file_at("f", 5, 10, 8, &mut two).unwrap();
        assert_eq!(&two, b"89");
        assert!(vol.read_file_at("f", 5, 10, 9, &mut two).is_err());
        assert!(vol.read_file_at("f", 2, 5000, 4000, &mut two).is_ok(), "a loop reads, bounded by the size");
        assert!(vol.read_file_at("f", 4, 1000, 600, &mut two).is_err(), "free cluster");
        let mut bad = img.clone();
        bad[510] = 0;
        let tmp2 = tempfile::tempfile().unwrap();
        tmp2.write_all_at(&bad, 0).unwrap();
        assert!(matches!(FatVolume::open(&tmp2, 0, bad.len() as u64), Err(FatError::BootSector(_))));
        assert!(matches!(FatVolume::open(&tmp, 0, 512), Err(FatError::BootSector(_))));
    }
}
