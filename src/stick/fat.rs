//! FAT32: cluster-size choice, space estimate, formatting with mkfs.fat, and the kernel-mount way to fill it
//! (the userspace writer is `fatwrite`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::copy::TargetTree;
use crate::media::SourceEntry;

/// Cluster size for a FAT32 volume of `bytes` on a disk of `sector`-byte sectors, as Windows' format chooses it
/// (never smaller than a sector).
pub fn cluster_size(bytes: u64, sector: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    let windows = match bytes {
        b if b <= 64 * MIB => 512,
        b if b <= 128 * MIB => 1024,
        b if b <= 256 * MIB => 2048,
        b if b <= 8 * GIB => 4096,
        b if b <= 16 * GIB => 8192,
        b if b <= 32 * GIB => 16384,
        _ => 32768,
    };
    windows.max(sector)
}

/// Bytes the whole disk needs to hold `entries` in FAT32 on a partition of `partition_bytes` (`sector`-byte
/// sectors): the MBR gap, reserved sectors, both FATs, every file and directory rounded up to whole clusters,
/// and a margin.
pub fn estimate_disk_bytes(entries: &[SourceEntry], partition_bytes: u64, sector: u64) -> u64 {
    let cs = cluster_size(partition_bytes, sector);
    let round = |n: u64| n.div_ceil(cs).max(1) * cs;
    let mut data = round(0); // root directory
    let mut children: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for e in entries {
        if !e.is_dir && e.size > 0 {
            data += round(e.size);
        }
        let parent = e.path.rsplit_once('/').map_or("", |(p, _)| p);
        *children.entry(parent).or_default() += 1;
    }
    for e in entries.iter().filter(|e| e.is_dir) {
        // ".", ".." and up to 4 entries (short name + long-name slots) per child
        let n = children.get(e.path.as_str()).copied().unwrap_or(0);
        data += round((2 + 4 * n) * 32);
    }
    data += round(64 * 32 * children.get("").copied().unwrap_or(0)) - round(0);
    let clusters = data / cs;
    let fats = 2 * (clusters + 2) * 4;
    let margin = 4 << 20;
    ((1 << 20) + 32 * sector + fats + data + margin).max(min_fat32_disk(sector))
}

/// The smallest disk that holds a FAT32 filesystem: FAT32 needs at least 65525 clusters (of 512 bytes here),
/// plus the MBR gap, reserved sectors and two FATs.
pub const MIN_FAT32_DISK: u64 = 36 << 20;

/// The smallest disk of `sector`-byte sectors that holds FAT32: with 4096-byte sectors a cluster is at least
/// 4 KiB, and 65525 of them take 256 MiB.
pub fn min_fat32_disk(sector: u64) -> u64 {
    if sector > 512 { 260 << 20 } else { MIN_FAT32_DISK }
}

/// A calendar date and time (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    pub year: u16,
    pub month: u16,
    pub day: u16,
    pub hour: u16,
    pub min: u16,
    pub sec: u16,
}

/// The calendar time of a Unix time (UTC), clamped to FAT's range 1980..2107.
pub fn fat_datetime(unix: i64) -> CivilTime {
    let unix = unix.clamp(315_532_800, 4_354_819_198); // 1980-01-01 .. 2107-12-31
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    CivilTime {
        year: year as u16,
        month: month as u16,
        day: day as u16,
        hour: (secs / 3600) as u16,
        min: (secs / 60 % 60) as u16,
        sec: (secs % 60) as u16,
    }
}

/// Arguments for mkfs.fat on the partition device, for a disk of `sector`-byte sectors (the filesystem's
/// sectors are the disk's: Windows and Linux mount FAT only in sectors at least as large as the disk's).
pub fn mkfs_args(
    device: &Path,
    partition_bytes: u64,
    label: &str,
    serial: u32,
    hidden_sectors: u64,
    sector: u64,
) -> Vec<String> {
    vec![
        "-F".into(),
        "32".into(),
        "-S".into(),
        sector.to_string(),
        "-s".into(),
        (cluster_size(partition_bytes, sector) / sector).to_string(),
        "-h".into(),
        hidden_sectors.to_string(),
        "-n".into(),
        label.to_string(),
        "-i".into(),
        format!("{serial:08X}"),
        "--mbr=n".into(),
        device.to_string_lossy().into_owned(),
    ]
}

/// A mounted filesystem (the kernel's vfat) as a target tree.
pub struct MountedTarget {
    root: PathBuf,
}

impl MountedTarget {
    pub fn new(root: &Path) -> MountedTarget {
        MountedTarget { root: root.to_path_buf() }
    }
}

fn set_mtime(path: &Path, mtime: i64) -> std::io::Result<()> {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.max(0) as u64);
    File::options().write(false).read(true).open(path)?.set_modified(t)
}

struct MountedFile {
    file: File,
    mtime: i64,
}

impl Write for MountedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.mtime.max(0) as u64);
        self.file.set_modified(t)
    }
}

impl TargetTree for MountedTarget {
    fn flusher(&self) -> std::io::Result<Option<crate::copy::Flusher>> {
        Ok(Some(crate::copy::filesystem_flusher(File::open(&self.root)?)))
    }

    fn create_dir(&mut self, path: &str, _mtime: i64) -> std::io::Result<()> {
        match std::fs::create_dir(self.root.join(path)) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    }

    fn create_file<'a>(&'a mut self, path: &str, mtime: i64, _size: u64) -> std::io::Result<Box<dyn Write + 'a>> {
        Ok(Box::new(MountedFile { file: File::create(self.root.join(path))?, mtime }))
    }

    fn finish(&mut self, entries: &[SourceEntry]) -> std::io::Result<()> {
        // Directory times last, deepest first: creating children changed them.
        for e in entries.iter().rev().filter(|e| e.is_dir) {
            set_mtime(&self.root.join(&e.path), e.mtime)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_sizes_follow_windows() {
        assert_eq!(cluster_size(200 << 20, 512), 2048);
        assert_eq!(cluster_size(2 << 30, 512), 4096);
        assert_eq!(cluster_size(15 << 30, 512), 8192);
        assert_eq!(cluster_size(64 << 30, 512), 32768);
        // Never below the disk's sector.
        assert_eq!(cluster_size(200 << 20, 4096), 4096);
        assert_eq!(cluster_size(15 << 30, 4096), 8192);
    }

    #[test]
    fn fat_dates() {
        let d = fat_datetime(1_700_000_000); // 2023-11-14 22:13:20 UTC
        assert_eq!((d.year, d.month, d.day), (2023, 11, 14));
        assert_eq!((d.hour, d.min, d.sec), (22, 13, 20));
        let d = fat_datetime(0);
        assert_eq!((d.year, d.month, d.day), (1980, 1, 1));
        let d = fat_datetime(951_782_400); // 2000-02-29
        assert_eq!((d.year, d.month, d.day), (2000, 2, 29));
        let d = fat_datetime(i64::MAX);
        assert_eq!((d.year, d.month, d.day), (2107, 12, 31));
    }

    #[test]
    fn estimate_rounds_to_clusters() {
        let e = |p: &str, d: bool, s: u64| SourceEntry { path: p.into(), is_dir: d, size: s, mtime: 0 };
        let entries = vec![e("a", true, 0), e("a/x", false, 1), e("a/y", false, 4097), e("z", false, 0)];
        let est = estimate_disk_bytes(&entries, 2 << 30, 512);
        // 1 + 2 clusters of data for files, one for dir a, root: at least 4 clusters of 4 KiB beyond overhead
        assert!(est >= (1 << 20) + 4 * 4096 + (4 << 20));
        assert_eq!(est, MIN_FAT32_DISK, "tiny content still needs FAT32's minimum");
        let big = vec![e("big", false, 100 << 20)];
        let est = estimate_disk_bytes(&big, 2 << 30, 512);
        assert!(((105 << 20)..(106 << 20)).contains(&est), "{est}");
        let many: Vec<SourceEntry> = (0..1000).map(|i| e(&format!("f{i}"), false, 10)).collect();
        assert!(estimate_disk_bytes(&many, 2 << 30, 512) >= 1000 * 4096);
        assert_eq!(estimate_disk_bytes(&[], 2 << 30, 4096), 260 << 20, "4K sectors: FAT32 needs 256 MiB of clusters");
    }

    #[test]
    fn mkfs_arguments() {
        let a = mkfs_args(Path::new("/dev/loop9"), 2 << 30, "CCCOMA_X64F", 0x1234ABCD, 2048, 512);
        let s = a.join(" ");
        assert_eq!(s, "-F 32 -S 512 -s 8 -h 2048 -n CCCOMA_X64F -i 1234ABCD --mbr=n /dev/loop9");
        let a = mkfs_args(Path::new("/dev/loop9"), 16 << 30, "W", 1, 256, 4096);
        assert_eq!(a.join(" "), "-F 32 -S 4096 -s 2 -h 256 -n W -i 00000001 --mbr=n /dev/loop9");
    }
}
