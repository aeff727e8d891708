//! GPT partition tables for UEFI-only sticks: a protective MBR, the primary header and entries at the start,
//! their backup at the end, a Microsoft basic data partition from 1 MiB (and with NTFS, an EFI system
//! partition holding the bridge loader at the end). Every sector number counts the disk's logical sectors (512
//! or 4096 bytes): the header sits in sector 1, the entries from sector 2, whatever their size.

use super::mbr::{PART_START, PartitionSpan};

/// Microsoft basic data partition, as GPT stores it (the first three fields little-endian).
pub const BASIC_DATA: [u8; 16] =
    [0xA2, 0xA0, 0xD0, 0xEB, 0xE5, 0xB9, 0x33, 0x44, 0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7];
/// EFI system partition (C12A7328-F81F-11D2-BA4B-00A0C93EC93B).
pub const EFI_SYSTEM: [u8; 16] =
    [0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B];
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;

/// Sectors the 128 entries take: 32 of 512 bytes, 4 of 4096.
fn entry_sectors(sector: u64) -> u64 {
    ENTRIES * ENTRY_SIZE / sector
}

/// CRC-32 (IEEE 802.3, as zlib and the UEFI specification use it).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// The partition for a disk of `disk_bytes` with `sector`-byte sectors under GPT: from 1 MiB to the last whole
/// MiB before the backup table.
pub fn partition_span(disk_bytes: u64, sector: u64) -> Option<PartitionSpan> {
    let per_mib = PART_START / sector;
    let total = disk_bytes / sector;
    let last_usable = total.checked_sub(1 + entry_sectors(sector) + 1)?;
    let end = (last_usable + 1) / per_mib * per_mib;
    let sectors = end.checked_sub(per_mib)?;
    if sectors < per_mib {
        return None;
    }
    Some(PartitionSpan { offset: PART_START, size: sectors * sector })
}

/// A GUID from 16 random bytes, marked as version 4 (random), variant 1.
pub fn random_guid(mut bytes: [u8; 16]) -> [u8; 16] {
    bytes[7] = (bytes[7] & 0x0F) | 0x40; // the version lives in the high nibble of the third field (LE)
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    bytes
}

/// A GPT partition: where, its type, its own GUID and its name.
pub struct GptPart<'a> {
    pub span: PartitionSpan,
    pub type_guid: [u8; 16],
    pub guid: [u8; 16],
    pub name: &'a str,
}

/// The sectors to write on a disk of `disk_bytes` with `sector`-byte sectors: (byte offset, bytes) for the
/// protective MBR, the primary header and entries, and the backup entries and header.
pub fn build(disk_bytes: u64, parts: &[GptPart], disk_guid: [u8; 16], sector: u64) -> Vec<(u64, Vec<u8>)> {
    let total = disk_bytes / sector;
    let last = total - 1;
    let entry_sectors = entry_sectors(sector);
    // Protective MBR: one partition of type 0xEE covering the disk (capped at 2^32 - 1 sectors).
    let mut mbr = vec![0u8; sector as usize];
    let e = &mut mbr[446..462];
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    e[4] = 0xEE;
    e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    e[12..16].copy_from_slice(&(last.min(u64::from(u32::MAX)) as u32).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    let mut entries = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (part, e) in parts.iter().zip(entries.chunks_mut(ENTRY_SIZE as usize)) {
        e[..16].copy_from_slice(&part.type_guid);
        e[16..32].copy_from_slice(&part.guid);
        let first = part.span.offset / sector;
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&(first + part.span.size / sector - 1).to_le_bytes());
        for (i, unit) in part.name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
    }
    let entries_crc = crc32(&entries);
    let header = |current: u64, backup: u64, entries_lba: u64| {
        let mut h = vec![0u8; sector as usize];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + entry_sectors).to_le_bytes());
        h[48..56].copy_from_slice(&(last - 1 - entry_sectors).to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let backup_entries_lba = last - entry_sectors;
    vec![
        (0, mbr),
        (sector, header(1, last, 2)),
        (2 * sector, entries.clone()),
        (backup_entries_lba * sector, entries),
        (last * sector, header(last, 1, backup_entries_lba)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_known_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn layout_and_checksums() {
        let disk = 2u64 << 30;
        let span = partition_span(disk, 512).unwrap();
        assert_eq!(span.offset, 1 << 20);
        assert_eq!((span.offset + span.size) % (1 << 20), 0);
        assert!(span.offset + span.size <= disk - 33 * 512);
        let bridge = PartitionSpan { offset: span.offset + span.size - (1 << 20), size: 1 << 20 };
        let main = PartitionSpan { offset: span.offset, size: span.size - (1 << 20) };
        let parts = build(
            disk,
            &[
                GptPart { span: main, type_guid: BASIC_DATA, guid: [2; 16], name: "WIN11" },
                GptPart { span: bridge, type_guid: EFI_SYSTEM, guid: [3; 16], name: "UEFI:NTFS" },
            ],
            [1; 16],
            512,
        );
        let (_, mbr) = &parts[0];
        assert_eq!(mbr[450], 0xEE);
        let (_, h) = &parts[1];
        assert_eq!(&h[..8], b"EFI PART");
        let mut z = h[..92].to_vec();
        let stored = u32::from_le_bytes(z[16..20].try_into().unwrap());
        z[16..20].fill(0);
        assert_eq!(crc32(&z), stored, "header CRC");
        let (_, entries) = &parts[2];
        assert_eq!(u32::from_le_bytes(h[88..92].try_into().unwrap()), crc32(entries));
        assert_eq!(&entries[..16], &BASIC_DATA);
        assert_eq!(u64::from_le_bytes(entries[32..40].try_into().unwrap()), 2048);
        assert_eq!(&entries[128..144], &EFI_SYSTEM);
        assert_eq!(
            u64::from_le_bytes(entries[128 + 40..128 + 48].try_into().unwrap()) * 512,
            bridge.offset + (1 << 20) - 512
        );
        assert!(entries[256..].iter().all(|&b| b == 0));
        let (off, backup) = &parts[4];
        assert_eq!(*off, disk - 512);
        assert_eq!(u64::from_le_bytes(backup[24..32].try_into().unwrap()), disk / 512 - 1);
        assert_eq!(u64::from_le_bytes(backup[32..40].try_into().unwrap()), 1);
        assert_eq!(parts[3].0, disk - 33 * 512);
    }

    #[test]
    fn four_k_sectors() {
        let disk = 2u64 << 30;
        let span = partition_span(disk, 4096).unwrap();
        // Room for the backup: 4 entry sectors and the header, 20 KiB: the partition ends a MiB before the end.
        assert_eq!(span, PartitionSpan { offset: 1 << 20, size: disk - (2 << 20) });
        let parts = build(disk, &[GptPart { span, type_guid: BASIC_DATA, guid: [2; 16], name: "W" }], [1; 16], 4096);
        let offsets: Vec<u64> = parts.iter().map(|p| p.0).collect();
        assert_eq!(offsets, [0, 4096, 8192, disk - 5 * 4096, disk - 4096]);
        let h = &parts[1].1;
        assert_eq!(h.len(), 4096);
        let lba = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap());
        // current, backup, first usable (2 + 4 entry sectors), last usable, entries
        assert_eq!((lba(24), lba(32), lba(40), lba(48), lba(72)), (1, disk / 4096 - 1, 6, disk / 4096 - 6, 2));
        let e = &parts[2].1;
        assert_eq!(u64::from_le_bytes(e[32..40].try_into().unwrap()), 256);
        assert_eq!(u64::from_le_bytes(e[40..48].try_into().unwrap()), (span.offset + span.size) / 4096 - 1);
        assert_eq!(parts[0].1[454..458], 1u32.to_le_bytes());
        assert_eq!(u32::from_le_bytes(parts[0].1[458..462].try_into().unwrap()), (disk / 4096 - 1) as u32);
    }

    #[test]
    fn guid_version() {
        let g = random_guid([0xFF; 16]);
        assert_eq!(g[7] >> 4, 4);
        assert_eq!(g[8] >> 6, 0b10);
    }
}
