//! The stick's layout: where the partitions go (`plan_partitions`, pure, used by the survey and by the Partition
//! step alike), and the steps that lay it down — Wipe (old signatures), Partition (MBR or GPT) and Format
//! (mkfs.fat or mkntfs on a loop window over the main partition).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::protocol::{Step, Table, TargetState, Up};
use crate::stick::choose::Fs;
use crate::stick::mbr::{self, PartitionSpan};
use crate::stick::safety::{PartitionRole, PlannedPartition};
use crate::stick::{fat, gpt, ntfs};
use crate::sys::helper;
use crate::sys::loopdev::{LoopDevice, LoopWindow};

use super::{Job, WriteError, random_u32};

/// Where the partitions go on a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partitions {
    /// The room the table leaves for partitions (from 1 MiB to the last whole MiB it allows).
    pub span: PartitionSpan,
    /// The Windows partition.
    pub main: PartitionSpan,
    /// The UEFI bridge partition, at the end (NTFS sticks with a UEFI loader).
    pub bridge: Option<PartitionSpan>,
}

/// The partitions for a disk of `disk_bytes` with `sector`-byte logical sectors under `table`, with a bridge of
/// `bridge_bytes` (0: none) cut off the end. None when the disk has no room for them.
pub fn plan_partitions(table: Table, disk_bytes: u64, bridge_bytes: u64, sector: u64) -> Option<Partitions> {
    let span = match table {
        Table::Mbr => mbr::partition_span(disk_bytes, sector),
        Table::Gpt => gpt::partition_span(disk_bytes, sector),
    }?;
    if bridge_bytes == 0 {
        return Some(Partitions { span, main: span, bridge: None });
    }
    let (main, bridge) = mbr::split_off_bridge(span, bridge_bytes)?;
    Some(Partitions { span, main, bridge: Some(bridge) })
}

impl Partitions {
    /// The partitions as the table will list them.
    pub fn planned(&self, table: Table, fs: Fs) -> Vec<PlannedPartition> {
        let main_type = match (table, fs) {
            (Table::Mbr, Fs::Fat32) => format!("0x{:02X}", mbr::PART_TYPE_FAT32_LBA),
            (Table::Mbr, Fs::Ntfs) => format!("0x{:02X}", mbr::PART_TYPE_NTFS),
            (Table::Gpt, _) => "Microsoft basic data".into(),
        };
        let bridge_type = match table {
            Table::Mbr => format!("0x{:02X}", mbr::PART_TYPE_EFI),
            Table::Gpt => "EFI system".into(),
        };
        let mut out = vec![PlannedPartition {
            number: 1,
            offset: self.main.offset,
            size: self.main.size,
            role: PartitionRole::Main,
            type_name: main_type,
        }];
        out.extend(self.bridge.map(|b| PlannedPartition {
            number: 2,
            offset: b.offset,
            size: b.size,
            role: PartitionRole::UefiBridge,
            type_name: bridge_type,
        }));
        out
    }
}

/// The target as opened for writing: the disk (or the image file's loop device) and its path.
pub(super) struct Disk {
    /// The disk written to: the block device, or a second descriptor of the image's loop device.
    pub file: File,
    pub path: std::path::PathBuf,
    /// The image file's autoclear loop device (dropped after `file`).
    pub _loop_dev: Option<LoopDevice>,
    /// The image file itself, held (and locked by the supervisor) until the end.
    pub _image: Option<File>,
    pub size: u64,
}

impl Disk {
    pub fn err(&self) -> impl Fn(std::io::Error) -> WriteError + '_ {
        |source| WriteError::Device { path: self.path.clone(), source }
    }

    /// Whether the disk is an image file (on a loop device woesafe attached), not a block device.
    pub fn is_image(&self) -> bool {
        self._image.is_some()
    }

    /// The device's name for the stall watchdog (loop3, sdb).
    pub fn name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

fn zero_range(f: &File, path: &Path, offset: u64, len: u64) -> Result<(), WriteError> {
    let buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        f.write_all_at(&buf[..n], offset + done).map_err(|source| WriteError::Device { path: path.into(), source })?;
        done += n as u64;
    }
    Ok(())
}

impl Job<'_> {
    /// Wipe: the first MiB, each partition's first MiB and the last MiB, where old signatures live.
    pub(super) fn wipe(&mut self, disk: &Disk, parts: &Partitions) -> Result<(), WriteError> {
        self.enter(Step::Wipe)?;
        self.state = TargetState::Wiped;
        zero_range(&disk.file, &disk.path, 0, 1 << 20)?;
        for part in [Some(parts.main), parts.bridge].into_iter().flatten() {
            zero_range(&disk.file, &disk.path, part.offset, (1u64 << 20).min(part.size))?;
        }
        let tail = disk.size.saturating_sub(1 << 20).max(parts.span.offset + (1 << 20));
        zero_range(&disk.file, &disk.path, tail, disk.size.saturating_sub(tail))
    }

    /// Partition: the MBR or the GPT (with its protective MBR) listing `parts`.
    pub(super) fn partition(&mut self, disk: &Disk, parts: &Partitions, fs: Fs, label: &str) -> Result<(), WriteError> {
        self.enter(Step::Partition)?;
        let dev_err = disk.err();
        match self.req.table {
            Table::Mbr => {
                let main_type = match fs {
                    Fs::Fat32 => mbr::PART_TYPE_FAT32_LBA,
                    Fs::Ntfs => mbr::PART_TYPE_NTFS,
                };
                let mut list = vec![(parts.main, main_type)];
                list.extend(parts.bridge.map(|b| (b, mbr::PART_TYPE_EFI)));
                let table = mbr::build(&list, random_u32(), self.sector());
                disk.file.write_all_at(&table, 0).map_err(&dev_err)?;
            }
            Table::Gpt => {
                let guid = || {
                    let mut b = [0u8; 16];
                    for chunk in b.chunks_mut(4) {
                        chunk.copy_from_slice(&random_u32().to_le_bytes());
                    }
                    gpt::random_guid(b)
                };
                let mut list =
                    vec![gpt::GptPart { span: parts.main, type_guid: gpt::BASIC_DATA, guid: guid(), name: label }];
                if let Some(b) = parts.bridge {
                    list.push(gpt::GptPart { span: b, type_guid: gpt::EFI_SYSTEM, guid: guid(), name: "UEFI:NTFS" });
                }
                for (offset, bytes) in gpt::build(disk.size, &list, guid(), self.sector()) {
                    disk.file.write_all_at(&bytes, offset).map_err(&dev_err)?;
                }
            }
        }
        disk.file.sync_data().map_err(&dev_err)?;
        self.state = TargetState::Partitioned;
        Ok(())
    }

    /// Format: a buffered loop window over the main partition, then mkfs.fat or mkntfs with the label. Returns
    /// the loop device (held until the end) and the volume serial.
    pub(super) fn format(
        &mut self,
        disk: &Disk,
        main: PartitionSpan,
        fs: Fs,
        label: &str,
        scratch_dev: &[String],
    ) -> Result<(LoopDevice, String), WriteError> {
        self.enter(Step::Format)?;
        let part = LoopDevice::attach_with_block_size(
            &disk.file,
            &disk.path,
            // Buffered: with direct I/O onto a hung stick, its pages would stay under writeback, and whoever
            // drops the last reference (the supervisor releasing the worker's mount namespace after a stall)
            // would hang in the kernel with them. Buffered, they land in the disk's page cache at once.
            LoopWindow { offset: main.offset, size: main.size, read_only: false, direct_io: false },
            // In the disk's sectors, as the filesystem on it counts.
            self.sector() as u32,
        )?;
        self.link.send(&Up::Devices([vec![disk.name(), part.name()], scratch_dev.to_vec()].concat()))?;
        // The filesystem counts in the disk's sectors: its sector size, and the partition's start (hidden
        // sectors) in them.
        let sector = self.sector();
        let hidden = main.offset / sector;
        let serial = match fs {
            Fs::Fat32 => {
                let serial = random_u32();
                let args = fat::mkfs_args(part.path(), main.size, label, serial, hidden, sector);
                helper::run("mkfs.fat", &args, "dosfstools")?;
                format!("{:04X}-{:04X}", serial >> 16, serial & 0xFFFF)
            }
            Fs::Ntfs => {
                helper::run("mkntfs", &ntfs::mkntfs_args(part.path(), label, hidden, sector), "ntfs-3g")?;
                ntfs::volume_uuid(part.file(), part.path())?.to_uppercase()
            }
        };
        self.state = TargetState::Formatted;
        Ok((part, serial))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn mbr_without_bridge_fills_the_disk_from_1_mib_to_the_last_whole_mib() {
        let p = plan_partitions(Table::Mbr, 8 << 30, 0, 512).unwrap();
        assert_eq!(p.main, PartitionSpan { offset: MIB, size: (8 << 30) - MIB });
        assert_eq!((p.span, p.bridge), (p.main, None));
        // A disk that is not a whole number of MiB: the partition ends at the last whole MiB.
        let odd = plan_partitions(Table::Mbr, (8 << 30) + 12345, 0, 512).unwrap();
        assert_eq!(odd.main, p.main);
        let planned = p.planned(Table::Mbr, Fs::Fat32);
        assert_eq!(planned.len(), 1);
        assert_eq!(
            planned[0],
            PlannedPartition {
                number: 1,
                offset: MIB,
                size: (8 << 30) - MIB,
                role: PartitionRole::Main,
                type_name: "0x0C".into()
            }
        );
    }

    #[test]
    fn a_bridge_is_cut_off_the_end() {
        let p = plan_partitions(Table::Mbr, 16 << 30, 2 * MIB, 512).unwrap();
        assert_eq!(p.main, PartitionSpan { offset: MIB, size: (16 << 30) - 3 * MIB });
        assert_eq!(p.bridge, Some(PartitionSpan { offset: (16 << 30) - 2 * MIB, size: 2 * MIB }));
        let planned = p.planned(Table::Mbr, Fs::Ntfs);
        assert_eq!(planned[0].type_name, "0x07");
        assert_eq!(
            (planned[1].number, planned[1].role, planned[1].type_name.as_str()),
            (2, PartitionRole::UefiBridge, "0xEF")
        );
        // A bridge that is not whole MiB, or leaves no main partition: no plan.
        assert_eq!(plan_partitions(Table::Mbr, 16 << 30, MIB + 1, 512), None);
        assert_eq!(plan_partitions(Table::Mbr, 3 * MIB, 2 * MIB, 512), None);
    }

    #[test]
    fn gpt_leaves_room_for_the_backup_table() {
        let p = plan_partitions(Table::Gpt, 8 << 30, 0, 512).unwrap();
        // The backup GPT takes the last 33 sectors: the partition ends one MiB earlier than under MBR.
        assert_eq!(p.main, PartitionSpan { offset: MIB, size: (8 << 30) - 2 * MIB });
        let with_bridge = plan_partitions(Table::Gpt, 8 << 30, 2 * MIB, 512).unwrap();
        assert_eq!(with_bridge.bridge, Some(PartitionSpan { offset: (8 << 30) - 3 * MIB, size: 2 * MIB }));
        let planned = with_bridge.planned(Table::Gpt, Fs::Ntfs);
        assert_eq!(planned[0].type_name, "Microsoft basic data");
        assert_eq!(planned[1].type_name, "EFI system");
    }

    #[test]
    fn four_k_sectors_give_the_same_bytes() {
        for table in [Table::Mbr, Table::Gpt] {
            assert_eq!(plan_partitions(table, 8 << 30, 2 * MIB, 4096), plan_partitions(table, 8 << 30, 2 * MIB, 512));
        }
    }

    #[test]
    fn tiny_disks_have_no_room() {
        assert_eq!(plan_partitions(Table::Mbr, 2 * MIB - 1, 0, 512), None);
        assert!(plan_partitions(Table::Mbr, 2 * MIB, 0, 512).is_some());
        assert_eq!(plan_partitions(Table::Gpt, 2 * MIB, 0, 512), None);
        assert_eq!(plan_partitions(Table::Mbr, 0, 0, 512), None);
    }
}
