//! UEFI boot. On FAT32: the ISO's own efi/boot/bootx64.efi, copied with the other files (for Windows 7, which
//! has none, the one extracted from install.wim). On NTFS, which firmware cannot read: a small FAT bridge
//! partition holding a GRUB EFI image, built at write time from the distribution's GRUB modules, that finds the
//! stick's NTFS volume by its serial number and chain-loads its efi/boot/bootx64.efi (or a UEFI:NTFS image the
//! user supplies).

use std::path::{Path, PathBuf};

use crate::media::SourceEntry;

pub const UEFI_LOADER: &str = "efi/boot/bootx64.efi";
/// Where Windows 7 keeps its UEFI boot manager inside install.wim.
pub const WIN7_LOADER_IN_WIM: &str = "/Windows/Boot/EFI/bootmgfw.efi";
pub const GRUB_X86_64_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";
/// Size of the bridge partition woesafe builds (the GRUB image is about 0.75 MiB).
pub const BRIDGE_BYTES: u64 = 2 << 20;
/// GRUB modules of the bridge loader: partition tables, NTFS, finding the volume, chain-loading.
pub const BRIDGE_MODULES: &[&str] = &["part_msdos", "part_gpt", "ntfs", "search", "search_fs_uuid", "chain", "echo"];

#[derive(Debug, thiserror::Error)]
pub enum UefiError {
    #[error(
        "GRUB for UEFI is not installed ({path} is missing); it builds the NTFS bridge loader: install the Debian \
         package grub-efi-amd64-bin, give --uefi-ntfs-image, or use --boot bios"
    )]
    GrubMissing { path: PathBuf },
    #[error("{path}: {what}")]
    BadImage { path: PathBuf, what: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{source}; give the image file (e.g. Rufus's uefi-ntfs.img)")]
    Open {
        #[source]
        source: crate::sys::argfile::ArgFileError,
    },
    #[error("the loader extracted from install.wim ({path}) is not a usable EFI program: {what}")]
    BadLoader { path: PathBuf, what: String },
}

/// Check before anything is written that the bridge loader can be built.
pub fn check_grub_efi_installed() -> Result<(), UefiError> {
    for f in ["kernel.img", "ntfs.mod", "chain.mod", "search_fs_uuid.mod"] {
        let p = Path::new(GRUB_X86_64_EFI_DIR).join(f);
        if !p.exists() {
            return Err(UefiError::GrubMissing { path: p });
        }
    }
    Ok(())
}

/// The grub.cfg embedded in the bridge loader: find the stick's NTFS volume by its serial number, then hand
/// over to the loader on it.
pub fn bridge_cfg(ntfs_uuid: &str) -> String {
    format!(
        "# Written by woesafe: the UEFI bridge to the NTFS partition.\n\
         search --no-floppy --fs-uuid --set=root {ntfs_uuid}\n\
         chainloader /efi/boot/bootx64.efi\n\
         boot\n\
         echo \"woesafe bridge: the NTFS partition {ntfs_uuid} or its /efi/boot/bootx64.efi was not found\"\n"
    )
}

/// `grub-mkstandalone` arguments building the bridge loader at `out` with `cfg` embedded.
pub fn bridge_mkstandalone_args(out: &Path, cfg: &Path) -> Vec<String> {
    let modules = BRIDGE_MODULES.join(" ");
    vec![
        "-O".into(),
        "x86_64-efi".into(),
        "-o".into(),
        out.to_string_lossy().into_owned(),
        format!("--modules={modules}"),
        format!("--install-modules={modules} normal configfile fat"),
        "--locales=".into(),
        "--fonts=".into(),
        "--themes=".into(),
        format!("boot/grub/grub.cfg={}", cfg.display()),
    ]
}

/// Check a user's UEFI:NTFS image before anything is written: a FAT filesystem image (boot sector signature,
/// "FAT" type) no bigger than 32 MiB. Returns its size rounded up to whole MiB (the bridge partition's size).
pub fn check_uefi_ntfs_image(path: &Path) -> Result<u64, UefiError> {
    let data = read_uefi_ntfs_image(path)?;
    Ok((data.len() as u64).div_ceil(1 << 20) << 20)
}

/// Read a UEFI:NTFS image (never more than 32 MiB + 1 byte of it) and check it. A FIFO, socket, device or
/// directory is refused before it is opened (and opened without blocking, should it be swapped for one).
pub fn read_uefi_ntfs_image(path: &Path) -> Result<Vec<u8>, UefiError> {
    use std::io::Read;
    let bad = |what: &str| UefiError::BadImage { path: path.to_path_buf(), what: what.to_string() };
    let read_err = |source| UefiError::Read { path: path.to_path_buf(), source };
    let file = crate::sys::argfile::open(path, crate::sys::argfile::Want::Regular, false)
        .map_err(|source| UefiError::Open { source })?;
    let mut data = Vec::new();
    file.take((32 << 20) + 1).read_to_end(&mut data).map_err(read_err)?;
    if data.len() < 512 || data.len() > 32 << 20 {
        return Err(bad("a UEFI:NTFS image is a FAT filesystem image of at most 32 MiB (Rufus's is 1 MiB)"));
    }
    let fat_type = &data[54..57] == b"FAT" || &data[82..85] == b"FAT";
    if data[510..512] != [0x55, 0xAA] || !fat_type {
        return Err(bad("not a FAT filesystem image (no boot sector signature); give Rufus's uefi-ntfs.img or alike"));
    }
    Ok(data)
}

/// Whether the ISO is Windows 7-shaped: sources/cversion.ini says MinServer=7…, or no cversion.ini and no
/// UEFI loader (Windows 7's install.wim carries its UEFI boot manager).
pub fn is_windows7(cversion_ini: Option<&str>) -> bool {
    cversion_ini.is_some_and(|text| {
        text.lines().any(|l| {
            let l = l.trim().as_bytes();
            l.len() > 10 && l[..10].eq_ignore_ascii_case(b"MinServer=") && l[10] == b'7'
        })
    })
}

/// Check that `data` is a non-empty PE program for x86_64 (WoeUSB's extraction gave 0-byte files for years).
pub fn check_pe_x64(data: &[u8]) -> Result<(), String> {
    if data.is_empty() {
        return Err("it is empty".into());
    }
    if data.len() < 0x40 || &data[..2] != b"MZ" {
        return Err(format!("no MZ header ({} bytes)", data.len()));
    }
    let pe = u32::from_le_bytes(data[0x3C..0x40].try_into().unwrap_or_default()) as usize;
    if data.len() < pe + 6 || &data[pe..pe + 4] != b"PE\0\0" {
        return Err("no PE signature".into());
    }
    let machine = u16::from_le_bytes([data[pe + 4], data[pe + 5]]);
    if machine != 0x8664 {
        return Err(format!("built for machine 0x{machine:04x}, not x86_64 (0x8664)"));
    }
    Ok(())
}

/// The ISO's removable-media loader for x86_64 (FAT and the firmware ignore case), when present and not empty.
pub fn find_loader(entries: &[SourceEntry]) -> Option<&SourceEntry> {
    entries.iter().find(|e| !e.is_dir && e.size > 0 && e.path.eq_ignore_ascii_case(UEFI_LOADER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows7_is_told_by_cversion() {
        assert!(is_windows7(Some("[HOSTBUILD]\r\nMinClient=7600.16385\r\nMinServer=7600.16385\r\n")));
        assert!(!is_windows7(Some("[HOSTBUILD]\r\nMinClient=10240.16384\r\nMinServer=10240.16384\r\n")));
        assert!(!is_windows7(None));
        assert!(!is_windows7(Some("MinServeräö=7\nMinServer")), "non-ASCII must not panic");
    }

    #[test]
    fn pe_checks() {
        let mut pe = vec![0u8; 0x100];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3C] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        assert_eq!(check_pe_x64(&pe), Ok(()));
        assert_eq!(check_pe_x64(&[]), Err("it is empty".into()));
        assert!(check_pe_x64(b"NOT-THE-X64-LOADER").unwrap_err().contains("MZ"));
        pe[0x84..0x86].copy_from_slice(&0x014Cu16.to_le_bytes());
        assert!(check_pe_x64(&pe).unwrap_err().contains("0x014c"));
    }

    #[test]
    fn bridge_config_names_the_volume() {
        let cfg = bridge_cfg("1a2b3c4d5e6f7081");
        assert!(cfg.contains(
            "search --no-floppy --fs-uuid --set=root 1a2b3c4d5e6f7081\nchainloader /efi/boot/bootx64.efi\nboot\n"
        ));
        let args = bridge_mkstandalone_args(Path::new("/w/b.efi"), Path::new("/w/b.cfg"));
        assert!(args.contains(&"boot/grub/grub.cfg=/w/b.cfg".to_string()));
        assert!(args.iter().any(|a| a.starts_with("--modules=") && a.contains("ntfs") && a.contains("chain")));
    }

    #[test]
    fn uefi_ntfs_images_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u.img");
        let mut img = vec![0u8; 1 << 20];
        img[54..57].copy_from_slice(b"FAT");
        img[510] = 0x55;
        img[511] = 0xAA;
        std::fs::write(&p, &img).unwrap();
        assert_eq!(check_uefi_ntfs_image(&p).unwrap(), 1 << 20);
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        assert!(check_uefi_ntfs_image(&p).unwrap_err().to_string().contains("not a FAT filesystem image"));
        assert!(check_uefi_ntfs_image(&dir.path().join("missing")).is_err());
        assert!(check_uefi_ntfs_image(dir.path()).unwrap_err().to_string().contains("not a regular file"));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = check_uefi_ntfs_image(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file but a FIFO"), "{err}");
        std::fs::File::create(&p).unwrap().set_len(33 << 20).unwrap();
        assert!(check_uefi_ntfs_image(&p).unwrap_err().to_string().contains("at most 32 MiB"));
    }

    #[test]
    fn finds_loader_whatever_the_case() {
        let e = |p: &str, s| SourceEntry { path: p.into(), is_dir: false, size: s, mtime: 0 };
        assert!(find_loader(&[e("EFI/BOOT/BOOTX64.EFI", 10)]).is_some());
        assert!(find_loader(&[e("efi/boot/bootx64.efi", 0)]).is_none(), "an empty loader does not count");
        assert!(find_loader(&[e("efi/boot/bootia32.efi", 10)]).is_none());
    }
}
