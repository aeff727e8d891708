//! The boot steps of a write: BootBios (GRUB's core image in the MBR gap, its boot code in sector 0) and BootUefi
//! (the stick's own loader on FAT32, or the FAT bridge partition of an NTFS stick).

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::boot::revocation::Firmware;
use crate::boot::{bios, uefi};
use crate::protocol::{Step, Up};
use crate::stick::mbr;
use crate::stick::units::human;
use crate::sys::helper;
use crate::sys::loopdev::{LoopDevice, LoopWindow};
use crate::tree::StickTree;

use super::layout::Disk;
use super::survey::Survey;
use super::{Job, WriteError};

impl Job<'_> {
    /// BootBios: GRUB for i386-pc, whose grub.cfg (already on the stick) runs `ntldr /bootmgr`.
    pub(super) fn boot_bios(&mut self, disk: &Disk, work: &Path) -> Result<(), WriteError> {
        self.enter(Step::BootBios)?;
        let core_path = work.join("core.img");
        helper::run("grub-mkimage", &bios::mkimage_args(&core_path), "grub-common")?;
        let core =
            std::fs::read(&core_path).map_err(|source| WriteError::Device { path: core_path.clone(), source })?;
        bios::install(&disk.file, &disk.path, &core)?;
        Ok(())
    }

    /// BootUefi: nothing to write on FAT32 (the loader was copied), the bridge on NTFS. Returns the loader's path
    /// on the stick, if it has one.
    pub(super) fn boot_uefi(
        &mut self,
        disk: &Disk,
        plan: &StickTree,
        s: &Survey,
        part: &LoopDevice,
        work: &Path,
    ) -> Result<Option<String>, WriteError> {
        let (boot, firmware, bridge) = (s.boot, s.firmware.as_ref(), s.partitions.bridge);
        let found = uefi::find_loader(&plan.entries).map(|(arch, e)| (arch, e.path.clone()));
        let uefi_loader = found.as_ref().map(|(_, p)| p.clone());
        if !boot.uefi() {
            return Ok(uefi_loader);
        }
        self.enter(Step::BootUefi)?;
        match (found, bridge) {
            (None, _) => self.link.send(&Up::Warning(
                "the ISO has no efi/boot/bootx64.efi or bootaa64.efi: UEFI boot is not available".into(),
            ))?,
            (Some((arch, p)), None) => self.info(format!("UEFI ({arch}): the stick boots through /{p}"))?,
            (Some((arch, p)), Some(b)) => {
                self.write_bridge(&disk.file, &disk.path, b, part.file(), part.path(), work, arch, firmware)?;
                self.info(format!(
                    "UEFI ({arch}): the FAT bridge partition ({} at {} MiB) chain-loads /{p} from NTFS",
                    human(b.size),
                    b.offset >> 20
                ))?;
                if self.req.uefi_ntfs_image.is_none() {
                    self.link.send(&Up::Warning(
                        "the UEFI bridge is a GRUB image woesafe built, which is not Secure Boot signed: this stick \
                         boots under UEFI only with Secure Boot off. For Secure Boot, use FAT32 (the default: --fs \
                         auto) or give a signed UEFI:NTFS image with --uefi-ntfs-image"
                            .into(),
                    ))?;
                }
            }
        }
        Ok(uefi_loader)
    }

    /// The UEFI bridge of an NTFS stick: the user's UEFI:NTFS image written as the partition, or a FAT
    /// partition with a GRUB EFI image for `arch` that finds the NTFS volume by its serial number and chain-loads
    /// its removable-media loader.
    #[allow(clippy::too_many_arguments)]
    fn write_bridge(
        &mut self,
        disk: &File,
        disk_path: &Path,
        bridge: mbr::PartitionSpan,
        ntfs_part: &File,
        ntfs_path: &Path,
        work: &Path,
        arch: uefi::Arch,
        firmware: Option<&Firmware>,
    ) -> Result<(), WriteError> {
        let dev_err = |source| WriteError::Device { path: disk_path.into(), source };
        if let Some(img) = &self.req.uefi_ntfs_image {
            // Read and checked again: the file may have changed since the check before writing, and nothing
            // may be written past the bridge partition.
            let data = uefi::read_uefi_ntfs_image(img)?;
            if data.len() as u64 > bridge.size {
                return Err(uefi::UefiError::BadImage {
                    path: img.clone(),
                    what: format!("grew to {} bytes during the write (the bridge holds {})", data.len(), bridge.size),
                }
                .into());
            }
            disk.write_all_at(&data, bridge.offset).map_err(dev_err)?;
            return Ok(());
        }
        let uuid = crate::stick::ntfs::volume_uuid(ntfs_part, ntfs_path)?;
        let cfg = work.join("bridge.cfg");
        let efi = work.join("bridge.efi");
        std::fs::write(&cfg, uefi::bridge_cfg(&uuid, arch))
            .map_err(|source| WriteError::Scratch { what: "writing the bridge configuration".into(), source })?;
        helper::run("grub-mkstandalone", &uefi::bridge_mkstandalone_args(&efi, &cfg, arch), arch.grub_package())?;
        if firmware.is_some() {
            let data = std::fs::read(&efi)
                .map_err(|source| WriteError::Scratch { what: "reading the bridge loader".into(), source })?;
            let name = format!("the bridge's EFI/BOOT/{}", arch.bridge_file());
            self.check_revocation(firmware, &name, &data, "")?;
        }
        // In the disk's sectors: firmware reads a FAT whose sectors are at least the disk's.
        let sector = self.sector();
        let lo = LoopDevice::attach_with_block_size(
            disk,
            disk_path,
            LoopWindow { offset: bridge.offset, size: bridge.size, read_only: false, direct_io: false },
            sector as u32,
        )?;
        let dev = lo.path().as_os_str();
        let sector = sector.to_string();
        let args = ["-S".as_ref(), sector.as_ref(), "-n".as_ref(), "UEFI_NTFS".as_ref(), dev];
        helper::run("mkfs.fat", &args, "dosfstools")?;
        helper::run("mmd", &["-i".as_ref(), dev, "::/EFI".as_ref(), "::/EFI/BOOT".as_ref()], "mtools")?;
        let to = format!("::/EFI/BOOT/{}", arch.bridge_file());
        helper::run("mcopy", &[OsStr::new("-i"), dev, efi.as_os_str(), OsStr::new(&to)], "mtools")?;
        lo.file().sync_all().map_err(|source| WriteError::Device { path: lo.path().into(), source })?;
        Ok(())
    }
}
