//! The stick's first sectors: the partition table (MBR or GPT, rebuilt from what was found and compared byte for
//! byte with what woesafe writes), GRUB's boot code in sector 0 and its core image in the MBR gap, and the
//! filesystem's boot sector (against its backup copy and the values woesafe formats with).

use super::{Mismatch, Problem};
use crate::protocol::Table;
use crate::stick::choose::Fs;
use crate::stick::mbr::{self, PartitionSpan};
use crate::stick::{fat, gpt};

/// How the stick is laid out, as its partition table says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StickLayout {
    pub table: Table,
    pub disk_bytes: u64,
    /// The disk's logical sector size, which the table and the filesystem count in.
    pub sector: u64,
    pub main: PartitionSpan,
    pub fs: Fs,
    /// The UEFI bridge partition (NTFS sticks).
    pub bridge: Option<PartitionSpan>,
}

/// Reads `len` bytes at an offset of the disk.
pub type ReadAt<'a> = &'a dyn Fn(u64, usize) -> std::io::Result<Vec<u8>>;

pub const MBR_PATH: &str = "(MBR partition table)";
pub const GPT_PATH: &str = "(GPT)";
pub const BOOT_CODE_PATH: &str = "(MBR boot code)";
pub const CORE_PATH: &str = "(GRUB core image in the MBR gap)";
pub const FAT_BOOT_PATH: &str = "(FAT32 boot sector)";
pub const NTFS_BOOT_PATH: &str = "(NTFS boot sector)";

fn wrong(path: &str, what: String) -> Mismatch {
    Mismatch { path: path.into(), problem: Problem::Wrong { what } }
}

fn differs(path: &str, offset: u64) -> Mismatch {
    Mismatch { path: path.into(), problem: Problem::Content { offset } }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default())
}

/// The filesystem a partition's boot sector names.
fn fs_of(boot: &[u8]) -> Option<Fs> {
    match boot.get(3..11)? {
        b"NTFS    " => Some(Fs::Ntfs),
        _ if boot.get(82..90)? == b"FAT32   " => Some(Fs::Fat32),
        _ => None,
    }
}

/// Check the partition table against what woesafe writes for a disk of `disk_bytes` with `sector`-byte logical
/// sectors. Returns the layout when the table is usable enough to go on (its partitions lie inside the disk),
/// and every difference found.
pub fn check_table(
    read: ReadAt,
    disk_bytes: u64,
    sector: u64,
) -> std::io::Result<(Option<StickLayout>, Vec<Mismatch>)> {
    let mut bad = Vec::new();
    let s0 = read(0, 512)?;
    if s0[510..512] != [0x55, 0xAA] {
        bad.push(wrong(MBR_PATH, "sector 0 has no 55 AA signature: no partition table".into()));
        return Ok((None, bad));
    }
    let entry = |i: usize| &s0[446 + 16 * i..462 + 16 * i];
    let span_of =
        |e: &[u8]| PartitionSpan { offset: u64::from(u32_at(e, 8)) * sector, size: u64::from(u32_at(e, 12)) * sector };
    let inside = |p: &PartitionSpan| p.size > 0 && p.offset.checked_add(p.size).is_some_and(|end| end <= disk_bytes);
    if entry(0)[4] == 0xEE {
        return check_gpt(read, disk_bytes, sector);
    }
    let main = span_of(entry(0));
    let fs = match entry(0)[4] {
        mbr::PART_TYPE_FAT32_LBA => Fs::Fat32,
        mbr::PART_TYPE_NTFS => Fs::Ntfs,
        t => {
            bad.push(wrong(MBR_PATH, format!("partition 1 has type 0x{t:02X}, not FAT32 LBA (0x0C) or NTFS (0x07)")));
            return Ok((None, bad));
        }
    };
    let bridge = (entry(1)[4] == mbr::PART_TYPE_EFI).then(|| span_of(entry(1)));
    if !inside(&main) || bridge.is_some_and(|b| !inside(&b)) {
        bad.push(wrong(MBR_PATH, "a partition lies outside the disk".into()));
        return Ok((None, bad));
    }
    // Where woesafe's Partition step puts them (the same pure plan).
    let expected_spans =
        crate::job::layout::plan_partitions(Table::Mbr, disk_bytes, bridge.map_or(0, |b| b.size), sector)
            .map(|p| (p.main, p.bridge));
    if expected_spans != Some((main, bridge)) {
        bad.push(wrong(
            MBR_PATH,
            format!(
                "partition 1 at byte {} of {} bytes{}; woesafe makes {}",
                main.offset,
                main.size,
                bridge.map_or(String::new(), |b| format!(", bridge at byte {} of {} bytes", b.offset, b.size)),
                match expected_spans {
                    Some((m, _)) => format!("partition 1 at byte {} of {} bytes", m.offset, m.size),
                    None => "no partition on a disk this small".into(),
                }
            ),
        ));
    }
    let mut parts = vec![(main, entry(0)[4])];
    parts.extend(bridge.map(|b| (b, mbr::PART_TYPE_EFI)));
    let expected = mbr::build(&parts, u32_at(&s0, 440), sector);
    if let Some(at) = super::compare::first_difference(&s0[440..], &expected[440..]) {
        bad.push(differs(MBR_PATH, 440 + at as u64));
    }
    let boot = read(main.offset, 512)?;
    if fs_of(&boot) != Some(fs) {
        bad.push(wrong(
            MBR_PATH,
            format!("partition 1 has type 0x{:02X}, but its boot sector is not {}", entry(0)[4], fs.name()),
        ));
    }
    Ok((Some(StickLayout { table: Table::Mbr, disk_bytes, sector, main, fs, bridge }), bad))
}

/// GPT: the primary header and entries, their backup at the end and the protective MBR, rebuilt with the
/// GUIDs and names found, must be exactly what woesafe writes.
fn check_gpt(read: ReadAt, disk_bytes: u64, sector: u64) -> std::io::Result<(Option<StickLayout>, Vec<Mismatch>)> {
    let mut bad = Vec::new();
    let h = read(sector, 512)?;
    if &h[..8] != b"EFI PART" {
        bad.push(wrong(GPT_PATH, "the primary GPT header has no EFI PART signature".into()));
        return Ok((None, bad));
    }
    let entries = read(2 * sector, 128 * 128)?;
    let disk_guid: [u8; 16] = h[56..72].try_into().unwrap_or_default();
    let mut found = Vec::new();
    for e in entries.chunks_exact(128).take(2) {
        let type_guid: [u8; 16] = e[..16].try_into().unwrap_or_default();
        if type_guid == [0; 16] {
            break;
        }
        let (first, last) = (u64_at(e, 32), u64_at(e, 40));
        let units: Vec<u16> =
            e[56..128].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
        let size = last.checked_add(1).and_then(|n| n.checked_sub(first)).unwrap_or(0).saturating_mul(sector);
        found.push((
            type_guid,
            <[u8; 16]>::try_from(&e[16..32]).unwrap_or_default(),
            PartitionSpan { offset: first.saturating_mul(sector), size },
            String::from_utf16_lossy(&units),
        ));
    }
    let inside = |p: &PartitionSpan| p.size > 0 && p.offset.checked_add(p.size).is_some_and(|end| end <= disk_bytes);
    let Some(main) = found.first().filter(|p| p.0 == gpt::BASIC_DATA && inside(&p.2)).map(|p| p.2) else {
        bad.push(wrong(GPT_PATH, "partition 1 is not a Microsoft basic data partition inside the disk".into()));
        return Ok((None, bad));
    };
    let bridge = found.get(1).filter(|p| p.0 == gpt::EFI_SYSTEM && inside(&p.2)).map(|p| p.2);
    if found.len() > 1 && bridge.is_none() {
        bad.push(wrong(GPT_PATH, "partition 2 is not an EFI system partition inside the disk".into()));
    }
    // Where woesafe's Partition step puts them (the same pure plan).
    let expected_spans =
        crate::job::layout::plan_partitions(Table::Gpt, disk_bytes, bridge.map_or(0, |b| b.size), sector)
            .map(|p| (p.main, p.bridge));
    if expected_spans != Some((main, bridge)) {
        bad.push(wrong(
            GPT_PATH,
            format!("partition 1 at byte {} of {} bytes is not where woesafe puts it", main.offset, main.size),
        ));
    }
    let parts: Vec<gpt::GptPart> = found
        .iter()
        .map(|(type_guid, guid, span, name)| gpt::GptPart { span: *span, type_guid: *type_guid, guid: *guid, name })
        .collect();
    let names =
        ["protective MBR", "primary GPT header", "primary GPT entries", "backup GPT entries", "backup GPT header"];
    for ((offset, bytes), name) in gpt::build(disk_bytes, &parts, disk_guid, sector).into_iter().zip(names) {
        let got = read(offset, bytes.len())?;
        if let Some(at) = super::compare::first_difference(&got, &bytes) {
            bad.push(wrong(
                GPT_PATH,
                format!("the {name} differs from what woesafe writes at byte {}", offset + at as u64),
            ));
        }
    }
    let boot = read(main.offset, 512)?;
    let Some(fs) = fs_of(&boot) else {
        bad.push(wrong(GPT_PATH, "partition 1 holds neither FAT32 nor NTFS".into()));
        return Ok((None, bad));
    };
    Ok((Some(StickLayout { table: Table::Gpt, disk_bytes, sector, main, fs, bridge }), bad))
}

/// What the boot code check needs from GRUB: its boot.img and the core image woesafe builds (None: GRUB for
/// BIOS is not installed here).
pub struct GrubImages {
    pub boot_img: [u8; 512],
    pub core_img: Vec<u8>,
}

/// The BIOS boot code: with an MBR, either none at all (sector 0's first 440 bytes and the gap all zero) or
/// GRUB's boot.img as bios.rs merges it and the core image in the gap, the rest of the gap zero. Returns whether
/// the stick has BIOS boot code, and the differences.
pub fn check_boot_code(
    read: ReadAt,
    layout: &StickLayout,
    grub: Option<&GrubImages>,
) -> std::io::Result<(bool, Vec<Mismatch>)> {
    let mut bad = Vec::new();
    if layout.table == Table::Gpt {
        let s0 = read(0, 440)?;
        if s0.iter().any(|&b| b != 0) {
            bad.push(wrong(BOOT_CODE_PATH, "a GPT stick's protective MBR holds boot code; woesafe writes none".into()));
        }
        return Ok((false, bad));
    }
    let s0: [u8; 512] = read(0, 512)?.try_into().unwrap_or([0; 512]);
    let gap_len = (layout.main.offset.min(1 << 20)).saturating_sub(layout.sector) as usize;
    let gap = read(layout.sector, gap_len)?;
    let bios = s0[..440].iter().any(|&b| b != 0);
    let (code, core): (Vec<u8>, &[u8]) = if !bios {
        (vec![0; 440], &[])
    } else if let Some(g) = grub {
        (crate::boot::bios::merge_boot_sector(&s0, &g.boot_img)[..440].to_vec(), &g.core_img)
    } else {
        return Ok((true, bad));
    };
    if let Some(at) = super::compare::first_difference(&s0[..440], &code) {
        bad.push(differs(BOOT_CODE_PATH, at as u64));
    }
    let mut expected_gap = core.to_vec();
    expected_gap.resize(gap_len.max(core.len()), 0);
    if let Some(at) = super::compare::first_difference(&gap, &expected_gap) {
        bad.push(differs(CORE_PATH, layout.sector + at as u64));
    }
    Ok((bios, bad))
}

/// The FAT32 boot sector: identical to its backup (sector 6), and with the values woesafe formats with
/// (partition place and size, 512-byte sectors, the cluster size for the partition's size, two FATs, mkfs.fat's
/// boot code when a `reference` boot sector from mkfs.fat is given).
pub fn check_fat_boot_sector(
    read: ReadAt,
    main: PartitionSpan,
    sector: u64,
    reference: Option<&[u8]>,
) -> std::io::Result<Vec<Mismatch>> {
    let mut bad = Vec::new();
    let bs = read(main.offset, 512)?;
    let backup_sector = u64::from(u16::from_le_bytes([bs[50], bs[51]]));
    let backup = read(main.offset + 6 * sector, 512)?;
    if backup_sector != 6 {
        bad.push(wrong(FAT_BOOT_PATH, format!("the backup boot sector is at sector {backup_sector}, not 6")));
    }
    if let Some(at) = super::compare::first_difference(&bs, &backup) {
        bad.push(wrong(FAT_BOOT_PATH, format!("differs from its backup copy (sector 6) at byte {at}")));
    }
    let u16_at = |o: usize| u64::from(u16::from_le_bytes([bs[o], bs[o + 1]]));
    let expect = [
        ("the signature", u64::from(u16::from_le_bytes([bs[510], bs[511]])), 0xAA55),
        ("bytes per sector", u16_at(11), sector),
        ("sectors per cluster", u64::from(bs[13]), fat::cluster_size(main.size, sector) / sector),
        ("the number of FATs", u64::from(bs[16]), 2),
        ("hidden sectors", u64::from(u32_at(&bs, 28)), main.offset / sector),
        ("the extended boot signature", u64::from(bs[66]), 0x29),
    ];
    for (what, found, want) in expect {
        if found != want {
            bad.push(wrong(FAT_BOOT_PATH, format!("{what} is {found}, woesafe formats with {want}")));
        }
    }
    // mkfs.fat ends the volume at a whole track (the BPB's sectors per track) within the partition.
    let (total, sectors) = (u64::from(u32_at(&bs, 32)), main.size / sector);
    let track = u16_at(24).max(1);
    if total > sectors || total + track <= sectors {
        bad.push(wrong(
            FAT_BOOT_PATH,
            format!("total sectors is {total}; the partition has {sectors} (tracks of {track} sectors)"),
        ));
    }
    if &bs[82..90] != b"FAT32   " {
        bad.push(wrong(FAT_BOOT_PATH, "the filesystem type is not FAT32".into()));
    }
    if let Some(r) = reference.filter(|r| r.len() == 512) {
        // Jump and OEM name, and the boot code with its message: what mkfs.fat writes whatever the size.
        for (range, what) in [(0..11, "jump and OEM name"), (90..510, "boot code")] {
            if let Some(at) = super::compare::first_difference(&bs[range.clone()], &r[range.clone()]) {
                bad.push(wrong(
                    FAT_BOOT_PATH,
                    format!("its {what} differs from mkfs.fat's at byte {}", range.start + at),
                ));
            }
        }
    }
    Ok(bad)
}

/// The NTFS boot sector: identical to its backup (the sector after the volume), with the partition's place
/// and size.
pub fn check_ntfs_boot_sector(read: ReadAt, main: PartitionSpan, sector: u64) -> std::io::Result<Vec<Mismatch>> {
    let mut bad = Vec::new();
    let bs = read(main.offset, 512)?;
    let total = u64_at(&bs, 0x28);
    let expect = [
        ("the signature", u64::from(u16::from_le_bytes([bs[510], bs[511]])), 0xAA55),
        ("bytes per sector", u64::from(u16::from_le_bytes([bs[11], bs[12]])), sector),
        ("hidden sectors", u64::from(u32_at(&bs, 0x1C)), main.offset / sector),
        ("total sectors", total, main.size / sector - 1),
    ];
    for (what, found, want) in expect {
        if found != want {
            bad.push(wrong(NTFS_BOOT_PATH, format!("{what} is {found}, expected {want}")));
        }
    }
    if &bs[3..11] != b"NTFS    " {
        bad.push(wrong(NTFS_BOOT_PATH, "the OEM name is not NTFS".into()));
    }
    if total < main.size / sector {
        let backup = read(main.offset + total * sector, 512)?;
        if let Some(at) = super::compare::first_difference(&bs, &backup) {
            bad.push(wrong(
                NTFS_BOOT_PATH,
                format!("differs from its backup copy (the volume's last sector) at byte {at}"),
            ));
        }
    }
    Ok(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_with(writes: &[(u64, Vec<u8>)], size: usize) -> Vec<u8> {
        let mut d = vec![0u8; size];
        for (o, b) in writes {
            d[*o as usize..*o as usize + b.len()].copy_from_slice(b);
        }
        d
    }

    fn fat_boot() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[3..11].copy_from_slice(b"mkfs.fat");
        b[82..90].copy_from_slice(b"FAT32   ");
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn mbr_as_woesafe_writes_it_and_damaged() {
        let size = 64usize << 20;
        let span = mbr::partition_span(size as u64, 512).unwrap();
        let table = mbr::build(&[(span, mbr::PART_TYPE_FAT32_LBA)], 0x1234_5678, 512).to_vec();
        let disk = disk_with(&[(0, table.clone()), (span.offset, fat_boot())], size);
        let read = |o: u64, n: usize| Ok(disk[o as usize..o as usize + n].to_vec());
        let (layout, bad) = check_table(&read, size as u64, 512).unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        let layout = layout.unwrap();
        assert_eq!((layout.table, layout.fs, layout.main, layout.bridge), (Table::Mbr, Fs::Fat32, span, None));
        // No boot code: sector 0's code area and the gap are zero.
        let (bios, bad) = check_boot_code(&read, &layout, None).unwrap();
        assert!(!bios && bad.is_empty());
        let grub = GrubImages { boot_img: [0xEB; 512], core_img: vec![7; 3000] };
        let mut with_code = disk.clone();
        let merged = crate::boot::bios::merge_boot_sector(&table.clone().try_into().unwrap(), &grub.boot_img);
        with_code[..512].copy_from_slice(&merged);
        with_code[512..3512].fill(7);
        let read2 = |o: u64, n: usize| Ok(with_code[o as usize..o as usize + n].to_vec());
        let (bios, bad) = check_boot_code(&read2, &layout, Some(&grub)).unwrap();
        assert!(bios && bad.is_empty(), "{bad:?}");
        with_code[100] ^= 1;
        with_code[512 + 2999] ^= 1;
        let read3 = |o: u64, n: usize| Ok(with_code[o as usize..o as usize + n].to_vec());
        let (_, bad) = check_boot_code(&read3, &layout, Some(&grub)).unwrap();
        assert_eq!(bad, vec![differs(BOOT_CODE_PATH, 100), differs(CORE_PATH, 512 + 2999)]);
        // A changed partition entry.
        let mut moved = disk.clone();
        moved[454] = 1;
        let read4 = |o: u64, n: usize| Ok(moved[o as usize..o as usize + n].to_vec());
        let (_, bad) = check_table(&read4, size as u64, 512).unwrap();
        assert!(bad.iter().any(|m| m.path == MBR_PATH), "{bad:?}");
    }

    #[test]
    fn gpt_with_a_bridge_round_trips() {
        for sector in [512u64, 4096] {
            let size = 64u64 << 20;
            let (main, bridge) = mbr::split_off_bridge(gpt::partition_span(size, sector).unwrap(), 2 << 20).unwrap();
            let parts = [
                gpt::GptPart { span: main, type_guid: gpt::BASIC_DATA, guid: [5; 16], name: "WIN" },
                gpt::GptPart { span: bridge, type_guid: gpt::EFI_SYSTEM, guid: [6; 16], name: "UEFI:NTFS" },
            ];
            let mut ntfs = vec![0u8; 512];
            ntfs[3..11].copy_from_slice(b"NTFS    ");
            let mut writes = gpt::build(size, &parts, [9; 16], sector);
            writes.push((main.offset, ntfs));
            let mut disk = disk_with(&writes, size as usize);
            let read = |o: u64, n: usize| Ok(disk[o as usize..o as usize + n].to_vec());
            let (layout, bad) = check_table(&read, size, sector).unwrap();
            assert!(bad.is_empty(), "{sector}: {bad:?}");
            let layout = layout.unwrap();
            assert_eq!((layout.fs, layout.main, layout.bridge, layout.sector), (Fs::Ntfs, main, Some(bridge), sector));
            // Read as the other sector size, the same bytes are no table woesafe writes.
            let other = if sector == 512 { 4096 } else { 512 };
            let (_, bad) = check_table(&read, size, other).unwrap();
            assert!(!bad.is_empty(), "{sector} read as {other}");
            let last = size as usize - sector as usize;
            disk[last + 100] ^= 1;
            let read = |o: u64, n: usize| Ok(disk[o as usize..o as usize + n].to_vec());
            let (_, bad) = check_table(&read, size, sector).unwrap();
            assert!(
                matches!(&bad[..], [Mismatch { problem: Problem::Wrong { what }, .. }] if what.contains("backup GPT header")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn fat_boot_sector_against_its_backup() {
        let main = PartitionSpan { offset: 1 << 20, size: 63 << 20 };
        let mut bs = fat_boot();
        bs[11..13].copy_from_slice(&512u16.to_le_bytes());
        bs[13] = (fat::cluster_size(main.size, 512) / 512) as u8;
        bs[16] = 2;
        bs[28..32].copy_from_slice(&2048u32.to_le_bytes());
        bs[24] = 63;
        bs[32..36].copy_from_slice(&((63u32 << 20) / 512 - 20).to_le_bytes());
        bs[50] = 6;
        bs[66] = 0x29;
        let mut disk = disk_with(&[(main.offset, bs.clone()), (main.offset + 6 * 512, bs.clone())], 2 << 20);
        let read = |o: u64, n: usize| Ok(disk[o as usize..o as usize + n].to_vec());
        assert_eq!(check_fat_boot_sector(&read, main, 512, Some(&bs)).unwrap(), vec![]);
        disk[(1 << 20) + 200] ^= 0xFF;
        let read = |o: u64, n: usize| Ok(disk[o as usize..o as usize + n].to_vec());
        let bad = check_fat_boot_sector(&read, main, 512, Some(&bs)).unwrap();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad.iter().all(|m| m.path == FAT_BOOT_PATH));
    }
}
