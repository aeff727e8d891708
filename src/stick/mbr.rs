//! The MBR partition table: the Windows partition (FAT32 LBA or NTFS), active, from 1 MiB; with NTFS, a small
//! FAT bridge partition for UEFI (type 0xEF) at the end. Its sector numbers count the disk's logical sectors
//! (512 or 4096 bytes, `sector_size_supported`).

/// The classic sector: the MBR's own size, and the unit of image files and of most sticks.
pub const SECTOR: u64 = 512;
/// First sector of the partition on a 512-byte-sector disk: 1 MiB, which also leaves the MBR gap for GRUB's core
/// image.
pub const PART_START_LBA: u64 = 2048;
/// Where the first partition starts, in bytes, whatever the sector size.
pub const PART_START: u64 = 1 << 20;

/// The logical sector sizes woesafe lays a stick out in: 512 (nearly every stick) and 4096 (some USB SSDs and
/// card readers). Other sizes (1024, 2048) exist on odd optical and magneto-optical media only; neither FAT32 nor
/// Windows Setup is known to work there, so they are refused before anything is written.
pub fn sector_size_supported(size: u64) -> bool {
    matches!(size, 512 | 4096)
}
pub const PART_TYPE_FAT32_LBA: u8 = 0x0C;
pub const PART_TYPE_NTFS: u8 = 0x07;
/// EFI system partition: where UEFI firmware looks for a loader.
pub const PART_TYPE_EFI: u8 = 0xEF;

/// Where the partition lies, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSpan {
    pub offset: u64,
    pub size: u64,
}

/// The partition for a disk of `disk_bytes` with `sector`-byte sectors: from 1 MiB to the last whole MiB (MBR
/// caps its size at 2^32 - 1 sectors: 2 TiB with 512-byte sectors, 16 TiB with 4096).
pub fn partition_span(disk_bytes: u64, sector: u64) -> Option<PartitionSpan> {
    let per_mib = PART_START / sector;
    let total = disk_bytes / sector;
    let end = (total / per_mib) * per_mib; // keep the partition MiB-aligned at both ends
    let sectors = end.checked_sub(per_mib)?.min(u64::from(u32::MAX));
    if sectors < per_mib {
        return None;
    }
    Some(PartitionSpan { offset: PART_START, size: sectors * sector })
}

fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SPT: u64 = 63;
    let c = lba / (HEADS * SPT);
    if c > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let h = (lba / SPT) % HEADS;
    let s = lba % SPT + 1;
    [h as u8, (s as u8) | (((c >> 8) as u8) << 6), c as u8]
}

/// Cut `bridge` bytes (a whole number of MiB) off the end of `span` for a second partition.
pub fn split_off_bridge(span: PartitionSpan, bridge: u64) -> Option<(PartitionSpan, PartitionSpan)> {
    let main = span.size.checked_sub(bridge)?;
    if main < (1 << 20) || !bridge.is_multiple_of(1 << 20) {
        return None;
    }
    Some((
        PartitionSpan { offset: span.offset, size: main },
        PartitionSpan { offset: span.offset + main, size: bridge },
    ))
}

/// A boot sector holding only the partition table (boot code is written later, into bytes 0..440): the
/// partitions in order, each (where, type), the first one active, in `sector`-byte sectors. (On a 4096-byte
/// disk the table still fills the first 512 bytes of sector 0; the rest of that sector is zero.)
pub fn build(parts: &[(PartitionSpan, u8)], disk_signature: u32, sector: u64) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[440..444].copy_from_slice(&disk_signature.to_le_bytes());
    for (i, (span, part_type)) in parts.iter().take(4).enumerate() {
        let start = span.offset / sector;
        let count = span.size / sector;
        let e = &mut s[446 + 16 * i..462 + 16 * i];
        e[0] = if i == 0 { 0x80 } else { 0 }; // active
        e[1..4].copy_from_slice(&chs(start));
        e[4] = *part_type;
        e[5..8].copy_from_slice(&chs(start + count - 1));
        e[8..12].copy_from_slice(&(start as u32).to_le_bytes());
        e[12..16].copy_from_slice(&(count as u32).to_le_bytes());
    }
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_is_mib_aligned() {
        let s = partition_span(2 << 30, 512).unwrap();
        assert_eq!(s.offset, 1 << 20);
        assert_eq!(s.size, (2 << 30) - (1 << 20));
        let odd = partition_span((2 << 30) + 12345, 512).unwrap();
        assert_eq!(odd.size, s.size);
        assert!(partition_span(1 << 20, 512).is_none());
        // 4 TiB disk: capped at the MBR limit
        let big = partition_span(4 << 40, 512).unwrap();
        assert_eq!(big.size, u64::from(u32::MAX) * 512);
    }

    #[test]
    fn four_k_sectors() {
        // The same bytes on a 4096-byte disk: the partition still runs from 1 MiB to the last whole MiB.
        let s = partition_span(2 << 30, 4096).unwrap();
        assert_eq!(s, partition_span(2 << 30, 512).unwrap());
        // The MBR limit is 16 TiB there.
        let big = partition_span(20 << 40, 4096).unwrap();
        assert_eq!(big.size, u64::from(u32::MAX) * 4096);
        assert!(partition_span(1 << 20, 4096).is_none());
        let table = build(&[(s, PART_TYPE_FAT32_LBA)], 7, 4096);
        // LBA 256 (1 MiB in 4096-byte sectors), and the size in 4096-byte sectors
        assert_eq!(u32::from_le_bytes(table[454..458].try_into().unwrap()), 256);
        assert_eq!(u64::from(u32::from_le_bytes(table[458..462].try_into().unwrap())) * 4096, s.size);
        assert!(sector_size_supported(512) && sector_size_supported(4096));
        assert!(![0, 1024, 2048, 8192].into_iter().any(sector_size_supported));
    }

    #[test]
    fn entry_bytes() {
        let s = build(&[(partition_span(2 << 30, 512).unwrap(), PART_TYPE_FAT32_LBA)], 0xDEADBEEF, 512);
        assert_eq!(&s[440..444], &0xDEADBEEFu32.to_le_bytes());
        assert_eq!(s[446], 0x80);
        assert_eq!(s[450], 0x0C);
        assert_eq!(u32::from_le_bytes(s[454..458].try_into().unwrap()), 2048);
        assert_eq!(u32::from_le_bytes(s[458..462].try_into().unwrap()), (2 << 21) - 2048);
        assert_eq!(&s[447..450], &[32, 33, 0]); // CHS of LBA 2048 with 255/63 geometry
        assert_eq!(&s[510..], &[0x55, 0xAA]);
        assert!(s[..440].iter().all(|&b| b == 0));
        assert!(s[462..510].iter().all(|&b| b == 0));
    }

    #[test]
    fn ntfs_with_a_bridge() {
        let (main, bridge) = split_off_bridge(partition_span(2 << 30, 512).unwrap(), 2 << 20).unwrap();
        assert_eq!(main.offset + main.size, bridge.offset);
        assert_eq!(bridge.offset + bridge.size, 2 << 30);
        let s = build(&[(main, PART_TYPE_NTFS), (bridge, PART_TYPE_EFI)], 1, 512);
        assert_eq!((s[446], s[450]), (0x80, 0x07));
        assert_eq!((s[462], s[466]), (0, 0xEF));
        assert_eq!(u32::from_le_bytes(s[470..474].try_into().unwrap()) as u64 * 512, bridge.offset);
        assert_eq!(u32::from_le_bytes(s[474..478].try_into().unwrap()), 4096);
        assert!(split_off_bridge(PartitionSpan { offset: 1 << 20, size: 2 << 20 }, 2 << 20).is_none());
    }
}
