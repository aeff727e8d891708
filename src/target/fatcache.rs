//! `CachedDisk`: the write-back page cache between the `fatfs` crate and the FAT32 partition device.
//!
//! fatfs reads and writes the device in tiny pieces (4-byte FAT entries in both FAT copies, 32-byte directory
//! entries, 512-byte zeroing of new directory clusters): on a plain `File` each is a seek and a syscall. This
//! cache serves those from memory in 4 KiB pages and writes dirty pages back, ascending and with adjacent
//! pages merged into one write, on `flush()` (fatfs flushes when a file is closed).
//!
//! - The metadata area (reserved sectors and the FATs, read from the FAT boot sector at open, at most
//!   [`MAX_PINNED_BYTES`]) is held without bound once touched; other pages (directories in the data area,
//!   partial writes) share a bounded LRU set that drops clean pages first and writes dirty ones back first.
//! - Writes of at least a page go straight to the device for their whole, page-aligned pages (file data:
//!   one write per cluster); copies of those pages already in the cache are updated.
//! - A write into the reserved sectors (fatfs's dirty flag in the boot sector and the FSInfo sector, which
//!   `FileSystem::unmount` writes last) writes back every dirty page at once: fatfs has no way to hand the
//!   device back, so this is how a write-back error reaches `unmount`'s result instead of `Drop`.
//! - It never calls fsync: the caller syncs the device.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// The cache's unit.
pub const PAGE: usize = 4096;
const PAGE64: u64 = PAGE as u64;
/// Pages outside the metadata area held at most (4 MiB).
pub const DEFAULT_LOOSE_PAGES: usize = 1024;
/// The most of the metadata area held without bound: a FAT32 of 64 GiB with 32 KiB clusters has two FATs of
/// 8 MiB; beyond this the rest of the metadata falls under the bounded set.
pub const MAX_PINNED_BYTES: u64 = 64 << 20;
/// Pages read at once when a metadata page is missing (the FAT is scanned in order).
const META_READAHEAD: u64 = 16;
/// Pages merged into one write-back at most (1 MiB).
const MAX_WRITEBACK_PAGES: usize = 256;

struct Page {
    data: Box<[u8]>,
    dirty: bool,
    used: u64,
}

/// Syscall counts, for the debug log.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub reads: u64,
    pub writes: u64,
    pub direct_writes: u64,
}

/// A `Read + Write + Seek` view of a device (or file) with a write-back page cache, for `fatfs`.
pub struct CachedDisk {
    /// `None` only after `into_inner`.
    file: Option<File>,
    pos: u64,
    /// The device's size, or the end of the furthest write if that is beyond.
    len: u64,
    /// Pages below this offset are never evicted (the FAT metadata area).
    pinned_end: u64,
    /// A write below this offset (the reserved sectors) writes back everything.
    boot_end: u64,
    pages: HashMap<u64, Page>,
    dirty: BTreeSet<u64>,
    /// Cached pages at or beyond `pinned_end`.
    loose: usize,
    max_loose: usize,
    tick: u64,
    stats: Stats,
}

impl std::fmt::Debug for CachedDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedDisk")
            .field("len", &self.len)
            .field("pinned_end", &self.pinned_end)
            .field("pages", &self.pages.len())
            .field("dirty", &self.dirty.len())
            .finish_non_exhaustive()
    }
}

fn at(e: io::Error, what: &str, len: usize, offset: u64) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {len} bytes at device offset {offset}: {e}"))
}

/// The reserved-sector and metadata ends of a FAT boot sector, or `None` if `b` is not one.
fn fat_layout(b: &[u8]) -> Option<(u64, u64)> {
    if b.len() < 512 || b[510..512] != [0x55, 0xAA] {
        return None;
    }
    let bytes_per_sector = u64::from(u16::from_le_bytes([b[11], b[12]]));
    let reserved = u64::from(u16::from_le_bytes([b[14], b[15]]));
    let fats = u64::from(b[16]);
    let fat16 = u64::from(u16::from_le_bytes([b[22], b[23]]));
    let fat32 = u64::from(u32::from_le_bytes([b[36], b[37], b[38], b[39]]));
    let sectors_per_fat = if fat16 != 0 { fat16 } else { fat32 };
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) || reserved == 0 || !(1..=4).contains(&fats) {
        return None;
    }
    let boot_end = reserved * bytes_per_sector;
    Some((boot_end, boot_end + fats * sectors_per_fat * bytes_per_sector))
}

impl CachedDisk {
    /// Cache `file` (positioned I/O only: the file's own offset is left where it was). If it starts with a FAT
    /// boot sector, its metadata area is held in full.
    pub fn new(file: File) -> io::Result<CachedDisk> {
        CachedDisk::with_capacity(file, DEFAULT_LOOSE_PAGES)
    }

    /// As [`CachedDisk::new`], holding at most `loose_pages` pages outside the metadata area.
    pub fn with_capacity(file: File, loose_pages: usize) -> io::Result<CachedDisk> {
        // The size through a seek: metadata says 0 for a block device. Put the shared offset back.
        let mut f = &file;
        let old = f.stream_position()?;
        let len = f.seek(SeekFrom::End(0))?;
        f.seek(SeekFrom::Start(old))?;
        let mut disk = CachedDisk {
            file: Some(file),
            pos: 0,
            len,
            pinned_end: 0,
            boot_end: 0,
            pages: HashMap::new(),
            dirty: BTreeSet::new(),
            loose: 0,
            max_loose: loose_pages.max(1),
            tick: 0,
            stats: Stats::default(),
        };
        if len >= 512 {
            let mut boot = [0u8; 512];
            disk.read_at_pos(0, &mut boot)?;
            if let Some((boot_end, meta_end)) = fat_layout(&boot) {
                disk.boot_end = boot_end;
                disk.pinned_end = meta_end.min(MAX_PINNED_BYTES).min(len).div_ceil(PAGE64) * PAGE64;
                if disk.pages.contains_key(&0) && disk.pinned_end > 0 {
                    disk.loose -= 1; // page 0 was loaded before it was known to be pinned
                }
            }
        }
        Ok(disk)
    }

    /// Write every dirty page back and return the file, for the caller to sync.
    pub fn into_inner(mut self) -> io::Result<File> {
        self.flush_all()?;
        tracing::debug!(stats = ?self.stats, pages = self.pages.len(), "fat cache");
        self.file.take().ok_or_else(|| io::Error::other("the cached disk has no file"))
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn file(&self) -> io::Result<&File> {
        self.file.as_ref().ok_or_else(|| io::Error::other("the cached disk has no file"))
    }

    fn is_pinned(&self, idx: u64) -> bool {
        idx * PAGE64 < self.pinned_end
    }

    /// Fill `buf` from `offset`; what lies beyond the end of the file reads as zeros.
    fn pread(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            self.stats.reads += 1;
            match self.file()?.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(at(e, "reading", buf.len() - done, offset + done as u64)),
            }
        }
        buf[done..].fill(0);
        Ok(())
    }

    fn pwrite(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file()?.write_all_at(buf, offset).map_err(|e| at(e, "writing", buf.len(), offset))
    }

    /// Load page `idx` (and, in the metadata area, the missing pages after it).
    fn load(&mut self, idx: u64) -> io::Result<()> {
        let pinned = self.is_pinned(idx);
        let mut count = 1;
        if pinned {
            while count < META_READAHEAD && self.is_pinned(idx + count) && !self.pages.contains_key(&(idx + count)) {
                count += 1;
            }
        } else {
            self.make_room()?;
        }
        let mut buf = vec![0u8; count as usize * PAGE];
        self.pread(idx * PAGE64, &mut buf)?;
        self.tick += 1;
        for (k, data) in buf.chunks_exact(PAGE).enumerate() {
            self.pages.insert(idx + k as u64, Page { data: data.into(), dirty: false, used: self.tick });
        }
        if !pinned {
            self.loose += 1;
        }
        Ok(())
    }

    fn page_mut(&mut self, idx: u64) -> io::Result<&mut Page> {
        if !self.pages.contains_key(&idx) {
            self.load(idx)?;
        }
        self.tick += 1;
        let tick = self.tick;
        let page = self.pages.get_mut(&idx).ok_or_else(|| io::Error::other("page lost from the cache"))?;
        page.used = tick;
        Ok(page)
    }

    /// Before adding a loose page: if the bounded set is full, drop its least recently used quarter, clean
    /// pages first, writing back the dirty ones among them.
    fn make_room(&mut self) -> io::Result<()> {
        if self.loose < self.max_loose {
            return Ok(());
        }
        let mut candidates: Vec<(bool, u64, u64)> = self
            .pages
            .iter()
            .filter(|(idx, _)| !self.is_pinned(**idx))
            .map(|(idx, p)| (p.dirty, p.used, *idx))
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let n = (self.max_loose / 4).clamp(1, candidates.len());
        candidates.select_nth_unstable(n - 1);
        let victims = &candidates[..n];
        let mut dirty: Vec<u64> = victims.iter().filter(|v| v.0).map(|v| v.2).collect();
        dirty.sort_unstable();
        self.write_back(&dirty)?;
        for v in victims {
            self.pages.remove(&v.2);
            self.loose -= 1;
        }
        Ok(())
    }

    /// Write back the dirty pages `idxs` (ascending), merging runs of adjacent pages into one write.
    fn write_back(&mut self, idxs: &[u64]) -> io::Result<()> {
        let mut run = Vec::new();
        let mut i = 0;
        while i < idxs.len() {
            let mut j = i + 1;
            while j < idxs.len() && idxs[j] == idxs[j - 1] + 1 && j - i < MAX_WRITEBACK_PAGES {
                j += 1;
            }
            let offset = idxs[i] * PAGE64;
            let valid = self.len.saturating_sub(offset).min(((j - i) * PAGE) as u64) as usize;
            let missing = || io::Error::other("dirty page lost from the cache");
            if j - i == 1 {
                let page = self.pages.get(&idxs[i]).ok_or_else(missing)?;
                self.pwrite(offset, &page.data[..valid])?;
            } else {
                run.clear();
                for idx in &idxs[i..j] {
                    run.extend_from_slice(&self.pages.get(idx).ok_or_else(missing)?.data);
                }
                self.pwrite(offset, &run[..valid])?;
            }
            self.stats.writes += 1;
            for idx in &idxs[i..j] {
                if let Some(p) = self.pages.get_mut(idx) {
                    p.dirty = false;
                }
                self.dirty.remove(idx);
            }
            i = j;
        }
        Ok(())
    }

    fn flush_all(&mut self) -> io::Result<()> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let idxs: Vec<u64> = self.dirty.iter().copied().collect();
        self.write_back(&idxs)
    }

    /// Read up to `buf.len()` bytes at `offset`, short only at the end.
    fn read_at_pos(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len - offset) as usize;
        let large = n >= PAGE;
        let mut done = 0;
        while done < n {
            let cur = offset + done as u64;
            let idx = cur / PAGE64;
            let in_page = (cur % PAGE64) as usize;
            let chunk = (PAGE - in_page).min(n - done);
            if large && chunk == PAGE && !self.pages.contains_key(&idx) {
                // Whole pages not cached: straight from the device, as many in a row as there are.
                let mut run = PAGE;
                while done + run + PAGE <= n && !self.pages.contains_key(&(idx + (run / PAGE) as u64)) {
                    run += PAGE;
                }
                self.pread(cur, &mut buf[done..done + run])?;
                done += run;
            } else {
                let page = self.page_mut(idx)?;
                buf[done..done + chunk].copy_from_slice(&page.data[in_page..in_page + chunk]);
                done += chunk;
            }
        }
        Ok(n)
    }

    /// Write all of `buf` at `offset`.
    fn write_at_pos(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let n = buf.len();
        if n == 0 {
            return Ok(());
        }
        let end = offset.checked_add(n as u64).ok_or_else(|| io::Error::other("write beyond 2^64"))?;
        self.len = self.len.max(end);
        let large = n >= PAGE;
        let mut done = 0;
        while done < n {
            let cur = offset + done as u64;
            let idx = cur / PAGE64;
            let in_page = (cur % PAGE64) as usize;
            let chunk = (PAGE - in_page).min(n - done);
            if large && chunk == PAGE {
                let run = (n - done) / PAGE * PAGE;
                self.write_direct(cur, &buf[done..done + run])?;
                done += run;
            } else {
                let page = self.page_mut(idx)?;
                page.data[in_page..in_page + chunk].copy_from_slice(&buf[done..done + chunk]);
                page.dirty = true;
                self.dirty.insert(idx);
                done += chunk;
            }
        }
        if offset < self.boot_end {
            self.flush_all()?;
        }
        Ok(())
    }

    /// Write whole pages at the page-aligned `offset` to the device, updating the cached copies among them.
    fn write_direct(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let first = offset / PAGE64;
        let cached: Vec<u64> = if self.pages.is_empty() {
            Vec::new()
        } else {
            (first..first + (buf.len() / PAGE) as u64).filter(|idx| self.pages.contains_key(idx)).collect()
        };
        for &idx in &cached {
            let start = ((idx - first) * PAGE64) as usize;
            if let Some(page) = self.pages.get_mut(&idx) {
                page.data.copy_from_slice(&buf[start..start + PAGE]);
                // Dirty until the device has it: if the write fails, a later flush tries again.
                page.dirty = true;
                self.dirty.insert(idx);
            }
        }
        self.pwrite(offset, buf)?;
        self.stats.direct_writes += 1;
        for idx in cached {
            if let Some(page) = self.pages.get_mut(&idx) {
                page.dirty = false;
            }
            self.dirty.remove(&idx);
        }
        Ok(())
    }
}

impl Read for CachedDisk {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.read_at_pos(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for CachedDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_at_pos(self.pos, buf)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_all()
    }
}

impl Seek for CachedDisk {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        let new = new.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("seek to {pos:?} from {} leaves the device", self.pos))
        })?;
        self.pos = new;
        Ok(new)
    }
}

impl Drop for CachedDisk {
    fn drop(&mut self) {
        if self.file.is_some()
            && let Err(e) = self.flush_all()
        {
            tracing::warn!("FAT cache: writing back {} dirty pages failed: {e}", self.dirty.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator (xorshift64*), so that a failure is reproducible from its seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    fn temp_with(content: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut t = tempfile::NamedTempFile::new().unwrap();
        t.write_all(content).unwrap();
        let f = t.reopen().unwrap();
        (t, f)
    }

    /// A FAT32-like boot sector: 32 reserved sectors, two FATs of `spf` sectors.
    fn boot_sector(spf: u32) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 8;
        b[14..16].copy_from_slice(&32u16.to_le_bytes());
        b[16] = 2;
        b[36..40].copy_from_slice(&spf.to_le_bytes());
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    fn differential(seed: u64, initial: Vec<u8>, loose_pages: usize, ops: usize) {
        let mut rng = Rng(seed | 1);
        let mut model = initial;
        let (tmp, file) = temp_with(&model);
        let mut disk = CachedDisk::with_capacity(file, loose_pages).unwrap();
        let size = model.len() as u64;
        for step in 0..ops {
            let ctx = format!("seed {seed} step {step}");
            match rng.below(100) {
                // seek: absolute, relative or from the end
                0..=14 => {
                    let target = rng.below(size + 2 * PAGE64);
                    let got = match rng.below(3) {
                        0 => disk.seek(SeekFrom::Start(target)).unwrap(),
                        1 => disk.seek(SeekFrom::Current(target as i64 - disk.pos as i64)).unwrap(),
                        _ => disk.seek(SeekFrom::End(target as i64 - model.len() as i64)).unwrap(),
                    };
                    assert_eq!(got, target, "{ctx}");
                }
                // small write
                15..=49 => {
                    let len = [1, 4, 32, 100, 512, 4095][rng.below(6) as usize];
                    let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    write_both(&mut disk, &mut model, &data, &ctx);
                }
                // large write, sometimes aligned
                50..=64 => {
                    if rng.below(2) == 0 {
                        let p = disk.pos / PAGE64 * PAGE64;
                        disk.seek(SeekFrom::Start(p)).unwrap();
                    }
                    let len = PAGE * (1 + rng.below(5) as usize) + [0, 1, 512, 3000][rng.below(4) as usize];
                    let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    write_both(&mut disk, &mut model, &data, &ctx);
                }
                // read, small or large
                65..=94 => {
                    let len = if rng.below(2) == 0 { rng.below(600) } else { rng.below(6 * PAGE64) } as usize;
                    let mut got = vec![0xEEu8; len];
                    let mut n = 0;
                    loop {
                        let k = disk.read(&mut got[n..]).unwrap();
                        if k == 0 {
                            break;
                        }
                        n += k;
                    }
                    let pos = disk.pos as usize - n;
                    let want = &model[pos.min(model.len())..(pos + len).min(model.len())];
                    assert_eq!(&got[..n], want, "{ctx}: read {len} at {pos}");
                }
                _ => disk.flush().unwrap(),
            }
        }
        let file = disk.into_inner().unwrap();
        drop(file);
        let on_disk = std::fs::read(tmp.path()).unwrap();
        assert_eq!(on_disk.len(), model.len(), "seed {seed}: length");
        assert!(on_disk == model, "seed {seed}: content differs");
    }

    fn write_both(disk: &mut CachedDisk, model: &mut Vec<u8>, data: &[u8], ctx: &str) {
        let pos = disk.pos as usize;
        disk.write_all(data).unwrap();
        if model.len() < pos + data.len() {
            model.resize(pos + data.len(), 0);
        }
        model[pos..pos + data.len()].copy_from_slice(data);
        assert_eq!(disk.pos as usize, pos + data.len(), "{ctx}");
    }

    #[test]
    fn random_operations_match_a_plain_buffer() {
        for seed in 1..=24u64 {
            let mut rng = Rng(seed * 7919);
            let len = (rng.below(40) * PAGE64 + rng.below(3000)) as usize;
            let initial: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // A tiny loose set makes eviction (and the write-back of dirty victims) frequent.
            differential(seed, initial, [1, 3, 8, 1024][seed as usize % 4], 2000);
        }
    }

    #[test]
    fn random_operations_on_a_fat_layout_match() {
        // Metadata: 32 reserved sectors + 2 × 24 sectors = 40 KiB pinned, writes below 16 KiB flush everything.
        for seed in 100..=111u64 {
            let mut rng = Rng(seed);
            let mut initial: Vec<u8> = (0..(96 * PAGE + 123)).map(|_| rng.next() as u8).collect();
            initial[..512].copy_from_slice(&boot_sector(24));
            let (_tmp, file) = temp_with(&initial);
            let disk = CachedDisk::with_capacity(file, 4).unwrap();
            assert_eq!((disk.boot_end, disk.pinned_end), (16 << 10, 40 << 10));
            drop(disk);
            differential(seed, initial, 4, 2000);
        }
    }

    #[test]
    fn a_read_after_a_large_write_sees_the_new_data() {
        let (tmp, file) = temp_with(&vec![1u8; 16 * PAGE]);
        let mut disk = CachedDisk::new(file).unwrap();
        // Cache pages 2..=4, one of them dirty.
        let mut small = [0u8; 10];
        disk.seek(SeekFrom::Start(2 * PAGE64 + 5)).unwrap();
        disk.read_exact(&mut small).unwrap();
        disk.seek(SeekFrom::Start(4 * PAGE64 + 7)).unwrap();
        disk.read_exact(&mut small).unwrap();
        disk.seek(SeekFrom::Start(3 * PAGE64 + 100)).unwrap();
        disk.write_all(&[9u8; 20]).unwrap();
        // A large unaligned write over all of them.
        disk.seek(SeekFrom::Start(PAGE64 + 10)).unwrap();
        disk.write_all(&vec![7u8; 5 * PAGE]).unwrap();
        // Small reads (from the cache) and a large one (partly from the device) see it.
        for off in [PAGE64 + 10, 2 * PAGE64, 3 * PAGE64 + 100, 4 * PAGE64 + 7, 6 * PAGE64] {
            disk.seek(SeekFrom::Start(off)).unwrap();
            disk.read_exact(&mut small).unwrap();
            assert_eq!(small, [7u8; 10], "at {off}");
        }
        let mut all = vec![0u8; 16 * PAGE];
        disk.seek(SeekFrom::Start(0)).unwrap();
        disk.read_exact(&mut all).unwrap();
        let mut want = vec![1u8; 16 * PAGE];
        want[PAGE + 10..6 * PAGE + 10].fill(7);
        assert!(all == want);
        // The whole pages went to the device at once; the cache wrote nothing yet.
        assert_eq!(&std::fs::read(tmp.path()).unwrap()[2 * PAGE..6 * PAGE], &want[2 * PAGE..6 * PAGE]);
        assert_eq!(disk.stats().writes, 0);
        drop(disk.into_inner().unwrap());
        assert!(std::fs::read(tmp.path()).unwrap() == want);
    }

    #[test]
    fn small_writes_stay_in_memory_until_flush() {
        let mut initial = vec![0u8; 64 * PAGE];
        initial[..512].copy_from_slice(&boot_sector(8));
        let (tmp, file) = temp_with(&initial);
        let mut disk = CachedDisk::new(file).unwrap();
        for i in 0..1000u64 {
            disk.seek(SeekFrom::Start(16384 + i * 4 % 4096)).unwrap();
            disk.write_all(&(i as u32).to_le_bytes()).unwrap();
            disk.seek(SeekFrom::Start(16384 + 4096 + i * 4 % 4096)).unwrap();
            disk.write_all(&(i as u32).to_le_bytes()).unwrap();
        }
        assert_eq!(disk.stats().writes, 0);
        assert!(std::fs::read(tmp.path()).unwrap() == initial);
        disk.flush().unwrap();
        // Two adjacent pages: one write.
        assert_eq!(disk.stats().writes, 1);
        // A write into the reserved sectors writes back everything at once.
        disk.seek(SeekFrom::Start(16384)).unwrap();
        disk.write_all(&[0xAB]).unwrap();
        disk.seek(SeekFrom::Start(0x41)).unwrap();
        disk.write_all(&[1]).unwrap();
        let now = std::fs::read(tmp.path()).unwrap();
        assert_eq!((now[0x41], now[16384]), (1, 0xAB));
    }

    #[test]
    fn write_errors_name_the_offset() {
        let (tmp, _) = temp_with(&[0u8; 100]);
        let ro = File::open(tmp.path()).unwrap();
        let mut disk = CachedDisk::new(ro).unwrap();
        disk.seek(SeekFrom::Start(3 * PAGE64)).unwrap();
        let err = disk.write_all(&vec![0u8; PAGE]).unwrap_err();
        assert!(err.to_string().contains("device offset 12288"), "{err}");
        disk.seek(SeekFrom::Start(10)).unwrap();
        disk.write_all(&[1, 2, 3]).unwrap();
        let err = disk.flush().unwrap_err();
        assert!(err.to_string().contains("device offset 0"), "{err}");
    }
}
