//! BIOS boot: a GRUB i386-pc core image in the MBR gap (sectors 1..2047) and GRUB's boot.img in the first 440
//! bytes of sector 0, with a grub.cfg on the stick that runs `ntldr /bootmgr` (WoeUSB's way). The partition
//! table (bytes 440..512 of sector 0) is never touched.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::stick::mbr::{PART_START_LBA, SECTOR};

pub const GRUB_I386_PC_DIR: &str = "/usr/lib/grub/i386-pc";
/// Modules built into the core image, so nothing has to be loaded from the stick before grub.cfg runs.
pub const GRUB_MODULES: &[&str] =
    &["biosdisk", "part_msdos", "fat", "ntfs", "ntldr", "normal", "configfile", "search", "search_fs_file", "echo"];
/// Where GRUB finds grub.cfg: the stick is the BIOS boot drive (hd0), the Windows partition its first.
pub const GRUB_PREFIX: &str = "(hd0,msdos1)/boot/grub";
pub const GRUB_CFG_PATH: &str = "boot/grub/grub.cfg";
pub const GRUB_CFG: &str =
    "# Written by woesafe: start Windows Setup through its boot manager.\nntldr /bootmgr\nboot\n";

#[derive(Debug, thiserror::Error)]
pub enum BiosError {
    #[error(
        "GRUB for BIOS is not installed ({path} is missing): install the Debian package grub-pc-bin, or use --boot uefi"
    )]
    GrubMissing { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is {len} bytes; GRUB's boot.img must be 512")]
    BadBootImg { path: PathBuf, len: usize },
    #[error("the GRUB core image is {len} bytes and does not fit the {room}-byte gap before the partition")]
    CoreTooBig { len: usize, room: u64 },
    #[error("cannot write boot code to {device}: {source}")]
    Write {
        device: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("boot code check failed on {device}: {what}")]
    Verify { device: PathBuf, what: &'static str },
}

/// Check before anything is written that GRUB's BIOS files are here.
pub fn check_grub_installed() -> Result<(), BiosError> {
    for f in ["boot.img", "kernel.img", "ntldr.mod"] {
        let p = Path::new(GRUB_I386_PC_DIR).join(f);
        if !p.exists() {
            return Err(BiosError::GrubMissing { path: p });
        }
    }
    Ok(())
}

/// Arguments for `grub-mkimage` producing the core image at `out`.
pub fn mkimage_args(out: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-O".into(),
        "i386-pc".into(),
        "-d".into(),
        GRUB_I386_PC_DIR.into(),
        "-p".into(),
        GRUB_PREFIX.into(),
        "-o".into(),
        out.to_string_lossy().into_owned(),
    ];
    a.extend(GRUB_MODULES.iter().map(|m| m.to_string()));
    a
}

/// Offset in boot.img of the jump over its boot-drive check; grub-bios-setup replaces it with two NOPs for
/// hard disks so that a BIOS passing a floppy-like drive number still boots the stick as disk 0x80.
const BOOT_DRIVE_CHECK: usize = 0x66;

/// Sector 0 with GRUB's boot code: boot.img's first 440 bytes (drive check patched as grub-bios-setup does),
/// the existing disk signature and partition table kept. boot.img's defaults already point at the core image
/// in LBA 1.
pub fn merge_boot_sector(existing: &[u8; 512], boot_img: &[u8; 512]) -> [u8; 512] {
    let mut s = *existing;
    s[..440].copy_from_slice(&boot_img[..440]);
    s[BOOT_DRIVE_CHECK..BOOT_DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    s
}

/// Write boot.img and the core image onto the disk. Verifies the partition table survived.
pub fn install(disk: &File, device: &Path, core_img: &[u8]) -> Result<(), BiosError> {
    let boot_path = Path::new(GRUB_I386_PC_DIR).join("boot.img");
    let boot = std::fs::read(&boot_path).map_err(|source| BiosError::Read { path: boot_path.clone(), source })?;
    let boot: [u8; 512] =
        boot.as_slice().try_into().map_err(|_| BiosError::BadBootImg { path: boot_path.clone(), len: boot.len() })?;
    let room = (PART_START_LBA - 1) * SECTOR;
    if core_img.len() as u64 > room {
        return Err(BiosError::CoreTooBig { len: core_img.len(), room });
    }
    let werr = |source| BiosError::Write { device: device.to_path_buf(), source };
    let mut sector0 = [0u8; 512];
    disk.read_exact_at(&mut sector0, 0).map_err(werr)?;
    let merged = merge_boot_sector(&sector0, &boot);
    disk.write_all_at(core_img, SECTOR).map_err(werr)?;
    disk.write_all_at(&merged, 0).map_err(werr)?;
    let mut check = [0u8; 512];
    disk.read_exact_at(&mut check, 0).map_err(werr)?;
    if check[440..] != sector0[440..] {
        return Err(BiosError::Verify { device: device.to_path_buf(), what: "partition table changed" });
    }
    if check[..440] != merged[..440] {
        return Err(BiosError::Verify { device: device.to_path_buf(), what: "boot code not written" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_sector_keeps_the_table() {
        let mut existing = [0u8; 512];
        existing[440..444].copy_from_slice(&[1, 2, 3, 4]);
        existing[446] = 0x80;
        existing[510] = 0x55;
        existing[511] = 0xAA;
        let boot = [0xEBu8; 512];
        let m = merge_boot_sector(&existing, &boot);
        assert!(m[..0x66].iter().chain(&m[0x68..440]).all(|&b| b == 0xEB));
        assert_eq!(&m[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(m[440..], existing[440..]);
    }

    #[test]
    fn mkimage_arguments() {
        let a = mkimage_args(Path::new("/w/core.img"));
        assert_eq!(&a[..8], &["-O", "i386-pc", "-d", GRUB_I386_PC_DIR, "-p", GRUB_PREFIX, "-o", "/w/core.img"]);
        assert!(a.contains(&"ntldr".to_string()));
    }

    #[test]
    fn install_writes_gap_and_code_only() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let f = tmp.as_file();
        f.set_len(2 << 20).unwrap();
        let mut s0 = [0u8; 512];
        s0[446] = 0x80;
        s0[510] = 0x55;
        s0[511] = 0xAA;
        f.write_all_at(&s0, 0).unwrap();
        f.write_all_at(&[0x77; 512], PART_START_LBA * SECTOR).unwrap();
        if check_grub_installed().is_err() {
            crate::report_skip("install_writes_gap_and_code_only", "grub-pc-bin not installed");
            return;
        }
        install(f, tmp.path(), &[0x42; 1000]).unwrap();
        let mut got = vec![0u8; 3 * 512];
        f.read_exact_at(&mut got, 0).unwrap();
        assert_eq!(got[446], 0x80);
        assert_eq!(&got[510..512], &[0x55, 0xAA]);
        assert!(got[512..1512].iter().all(|&b| b == 0x42));
        let mut part = [0u8; 512];
        f.read_exact_at(&mut part, PART_START_LBA * SECTOR).unwrap();
        assert!(part.iter().all(|&b| b == 0x77), "partition must be untouched");
        let too_big = vec![0u8; 2047 * 512 + 1];
        assert!(matches!(install(f, tmp.path(), &too_big), Err(BiosError::CoreTooBig { .. })));
    }
}
