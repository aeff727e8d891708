//! UEFI boot. On FAT32: the ISO's own removable-media loader (efi/boot/bootx64.efi, or bootaa64.efi for Windows
//! on ARM), copied with the other files (for Windows 7, which has none, the one extracted from install.wim). On
//! NTFS, which firmware cannot read: a small FAT bridge partition holding a GRUB EFI image for the loader's
//! architecture, built at write time from the distribution's GRUB modules, that finds the stick's NTFS volume by
//! its serial number and chain-loads its loader (or a UEFI:NTFS image the user supplies).

use std::path::{Path, PathBuf};

use crate::media::SourceEntry;

pub const UEFI_LOADER: &str = "efi/boot/bootx64.efi";
pub const UEFI_LOADER_ARM64: &str = "efi/boot/bootaa64.efi";
/// The boot manager at the root of Windows media that the El Torito and PXE paths load.
pub const BOOTMGR_EFI: &str = "bootmgr.efi";
/// Where Windows media keep the WIM of Windows PE and Setup, which carries the CA 2023 boot managers.
pub const BOOT_WIM: &str = "sources/boot.wim";
/// The boot.wim image (setup's) whose Windows\Boot carries the CA 2023 boot managers.
pub const CA2023_IMAGE: u32 = 2;
/// The CA 2023 boot managers in that image, and the fonts their screens use (see `ca2023_extract_args`).
pub const CA2023_LOADER_IN_WIM: &str = "/Windows/Boot/EFI_EX/bootmgfw_EX.efi";
pub const CA2023_BOOTMGR_IN_WIM: [&str; 2] =
    ["/Windows/Boot/EFI_EX/bootmgr_EX.efi", "/Windows/Boot/PCAT/bootmgr_EX.efi"];
pub const CA2023_FONTS_IN_WIM: &str = "/Windows/Boot/Fonts_EX";
/// Where the boot manager finds its fonts on the stick.
pub const FONTS_DIR: &str = "efi/microsoft/boot/fonts";
/// The most font files taken from Fonts_EX (Windows 11 has about 10), and their most bytes in all (Windows 11's
/// are about 20 MiB).
pub const MAX_CA2023_FONTS: usize = 64;
pub const MAX_CA2023_FONT_BYTES: u64 = 64 << 20;
/// Where Windows 7 keeps its UEFI boot manager inside install.wim.
pub const WIN7_LOADER_IN_WIM: &str = "/Windows/Boot/EFI/bootmgfw.efi";
pub const GRUB_X86_64_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";
pub const GRUB_ARM64_EFI_DIR: &str = "/usr/lib/grub/arm64-efi";

/// The processor a UEFI loader is built for: x64 (x86_64, "amd64") or arm64 (AArch64, Windows on ARM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    X64,
    Arm64,
}

impl Arch {
    /// Preferred first: an ISO with both loaders is an x64 one.
    pub const ALL: [Arch; 2] = [Arch::X64, Arch::Arm64];

    /// The removable-media loader's path for this processor (UEFI spec 3.5.1.1).
    pub fn loader_path(self) -> &'static str {
        match self {
            Arch::X64 => UEFI_LOADER,
            Arch::Arm64 => UEFI_LOADER_ARM64,
        }
    }

    /// The PE/COFF machine type.
    pub fn machine(self) -> u16 {
        match self {
            Arch::X64 => MACHINE_X64,
            Arch::Arm64 => MACHINE_ARM64,
        }
    }

    /// How people name it: "x64", "arm64".
    pub fn name(self) -> &'static str {
        match self {
            Arch::X64 => "x64",
            Arch::Arm64 => "arm64",
        }
    }

    /// How the PE format names the machine, in messages.
    fn machine_name(self) -> &'static str {
        match self {
            Arch::X64 => "x86_64 (0x8664)",
            Arch::Arm64 => "arm64 (0xaa64)",
        }
    }

    /// GRUB's platform for the bridge loader, and where its modules live.
    pub fn grub_platform(self) -> &'static str {
        match self {
            Arch::X64 => "x86_64-efi",
            Arch::Arm64 => "arm64-efi",
        }
    }

    pub fn grub_dir(self) -> &'static str {
        match self {
            Arch::X64 => GRUB_X86_64_EFI_DIR,
            Arch::Arm64 => GRUB_ARM64_EFI_DIR,
        }
    }

    /// The Debian package with those modules, as a user installs it.
    pub fn grub_package(self) -> &'static str {
        match self {
            Arch::X64 => "grub-efi-amd64-bin",
            Arch::Arm64 => "grub-efi-arm64-bin",
        }
    }

    /// How to install the modules: on an amd64 machine the arm64 package is a foreign architecture's.
    pub fn grub_install_hint(self) -> &'static str {
        match self {
            Arch::X64 => "install the Debian package grub-efi-amd64-bin",
            Arch::Arm64 => {
                "install the Debian package grub-efi-arm64-bin (on an amd64 machine: `dpkg --add-architecture arm64`, \
                 `apt-get update`, `apt-get install grub-efi-arm64-bin:arm64`)"
            }
        }
    }

    /// The file name of the bridge loader on its FAT partition.
    pub fn bridge_file(self) -> &'static str {
        match self {
            Arch::X64 => "BOOTX64.EFI",
            Arch::Arm64 => "BOOTAA64.EFI",
        }
    }

    /// The arch of a removable-media loader path, any letter case.
    pub fn of_loader_path(path: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| path.eq_ignore_ascii_case(a.loader_path()))
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
/// Size of the bridge partition woesafe builds (the GRUB image is about 0.75 MiB).
pub const BRIDGE_BYTES: u64 = 2 << 20;
/// GRUB modules of the bridge loader: partition tables, NTFS, finding the volume, chain-loading.
pub const BRIDGE_MODULES: &[&str] = &["part_msdos", "part_gpt", "ntfs", "search", "search_fs_uuid", "chain", "echo"];

#[derive(Debug, thiserror::Error)]
pub enum UefiError {
    #[error(
        "GRUB for {arch} UEFI is not installed ({path} is missing); it builds the NTFS stick's bridge loader: {hint}, \
         give --uefi-ntfs-image{alt}",
        hint = arch.grub_install_hint(),
        alt = match arch { Arch::X64 => ", or use --boot bios", Arch::Arm64 => ", or use --fs fat32 (the default)" }
    )]
    GrubMissing { path: PathBuf, arch: Arch },
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
    #[error(
        "the UEFI {kind} {path} in {wim} cannot be used: it is a symbolic link in {wim}; woesafe does not follow it; \
         nothing was written",
        kind = kind_of_file(path)
    )]
    ExtractedLink { path: String, wim: &'static str },
    #[error(
        "the UEFI {kind} {path} in {wim} cannot be used: it is not a regular file but {found}; nothing was written",
        kind = kind_of_file(path)
    )]
    ExtractedKind { path: String, wim: &'static str, found: &'static str },
    #[error(
        "the UEFI {kind} {path} in {wim} cannot be used: it is bigger than a UEFI loader, which is at most \
         {MAX_LOADER_BYTES} bytes; nothing was written",
        kind = kind_of_file(path)
    )]
    ExtractedTooBig { path: String, wim: &'static str },
    #[error("cannot read the UEFI {kind} {path} that wimlib extracted from {wim}: {source}", kind = kind_of_file(path))]
    ExtractedRead {
        path: String,
        wim: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "--ca2023: sources/boot.wim image {image} has no {path}: this ISO carries no boot manager signed by the \
         Windows UEFI CA 2023 (Windows 11 media of build 26200 and later do); leave out --ca2023; nothing was written"
    )]
    Ca2023Missing { image: u32, path: String },
    #[error("--ca2023: {path} in sources/boot.wim is not a usable {arch} UEFI program: {what}; nothing was written")]
    Ca2023Bad { path: String, arch: Arch, what: String },
    #[error("--ca2023: {path} in sources/boot.wim holds {what}; nothing was written")]
    Ca2023Fonts { path: String, what: String },
}

/// "loader" for an EFI program, "boot file" for a font and the like (in messages).
fn kind_of_file(path: &str) -> &'static str {
    if path.to_ascii_lowercase().ends_with(".efi") { "loader" } else { "boot file" }
}

/// Check before anything is written that the bridge loader for `arch` can be built.
pub fn check_grub_efi_installed(arch: Arch) -> Result<(), UefiError> {
    for f in ["kernel.img", "ntfs.mod", "chain.mod", "search_fs_uuid.mod"] {
        let p = Path::new(arch.grub_dir()).join(f);
        if !p.exists() {
            return Err(UefiError::GrubMissing { path: p, arch });
        }
    }
    Ok(())
}

/// The grub.cfg embedded in the bridge loader: find the stick's NTFS volume by its serial number, then hand
/// over to the loader on it.
pub fn bridge_cfg(ntfs_uuid: &str, arch: Arch) -> String {
    let loader = arch.loader_path();
    format!(
        "# Written by woesafe: the UEFI bridge to the NTFS partition.\n\
         search --no-floppy --fs-uuid --set=root {ntfs_uuid}\n\
         chainloader /{loader}\n\
         boot\n\
         echo \"woesafe bridge: the NTFS partition {ntfs_uuid} or its /{loader} was not found\"\n"
    )
}

/// `grub-mkstandalone` arguments building the bridge loader for `arch` at `out` with `cfg` embedded.
pub fn bridge_mkstandalone_args(out: &Path, cfg: &Path, arch: Arch) -> Vec<String> {
    let modules = BRIDGE_MODULES.join(" ");
    vec![
        "-O".into(),
        arch.grub_platform().into(),
        "-d".into(),
        arch.grub_dir().into(),
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
    let bad = |what: &str| UefiError::BadImage { path: path.to_path_buf(), what: what.to_string() };
    let read_err = |source| UefiError::Read { path: path.to_path_buf(), source };
    let file = crate::sys::argfile::open(path, crate::sys::argfile::Want::Regular, false)
        .map_err(|source| UefiError::Open { source })?;
    let data = crate::sys::argfile::read_capped(file, 32 << 20).map_err(read_err)?.unwrap_or_default();
    if data.len() < 512 {
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

/// The most of a UEFI loader woesafe reads (from the ISO or from what wimlib extracts): Windows 11's
/// bootmgfw.efi is about 2.7 MiB, Windows 7's about 1 MiB, shim and a GRUB image under 1 MiB.
pub const MAX_LOADER_BYTES: u64 = 8 << 20;

/// PE32+ optional header magic.
const PE32_PLUS: u16 = 0x20b;
/// IMAGE_FILE_MACHINE_AMD64.
const MACHINE_X64: u16 = 0x8664;
/// IMAGE_FILE_MACHINE_ARM64.
const MACHINE_ARM64: u16 = 0xAA64;
/// IMAGE_SUBSYSTEM_EFI_APPLICATION.
const SUBSYSTEM_EFI_APPLICATION: u16 = 10;
/// IMAGE_FILE_EXECUTABLE_IMAGE in the COFF characteristics.
const EXECUTABLE_IMAGE: u16 = 0x0002;
/// IMAGE_FILE_DLL in the COFF characteristics.
const DLL: u16 = 0x2000;

/// Check that `data` is a UEFI loader for x86_64 (see `check_efi`).
pub fn check_efi_x64(data: &[u8]) -> Result<(), String> {
    check_efi(data, Arch::X64)
}

/// Check that `data` is a UEFI loader for `arch`: a non-empty PE image (WoeUSB's extraction gave 0-byte files
/// for years), PE32+ (optional header magic 0x20b), machine x86_64 (0x8664) or arm64 (0xaa64), marked
/// executable, subsystem EFI application (10) — not a Windows program, a DLL or an EFI driver.
pub fn check_efi(data: &[u8], arch: Arch) -> Result<(), String> {
    if data.is_empty() {
        return Err("it is empty".into());
    }
    if data.len() < 0x40 || &data[..2] != b"MZ" {
        return Err("no MZ header".into());
    }
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let pe = u32::from_le_bytes([data[0x3C], data[0x3D], data[0x3E], data[0x3F]]) as usize;
    if pe.checked_add(24).is_none_or(|end| end > data.len()) || &data[pe..pe + 4] != b"PE\0\0" {
        return Err("no PE signature".into());
    }
    // COFF header: machine, sections, time stamp, symbols (8 bytes), optional header size, characteristics.
    let machine = u16_at(pe + 4).unwrap_or_default();
    if machine != arch.machine() {
        return Err(format!("built for machine 0x{machine:04x}, not {}", arch.machine_name()));
    }
    let optional_size = usize::from(u16_at(pe + 20).unwrap_or_default());
    let characteristics = u16_at(pe + 22).unwrap_or_default();
    if characteristics & EXECUTABLE_IMAGE == 0 {
        return Err("not marked as an executable image".into());
    }
    if characteristics & DLL != 0 {
        return Err("a DLL (IMAGE_FILE_DLL), not an application".into());
    }
    let opt = pe + 24;
    let magic = u16_at(opt).ok_or("no optional header")?;
    if magic != PE32_PLUS {
        return Err(format!("optional header magic 0x{magic:03x}, not PE32+ (0x20b)"));
    }
    // The subsystem sits 68 bytes into the optional header (PE32 and PE32+ alike).
    let subsystem = match u16_at(opt + 68) {
        Some(s) if optional_size >= 70 => s,
        _ => return Err(format!("the optional header is too short ({optional_size} bytes) to name a subsystem")),
    };
    if subsystem != SUBSYSTEM_EFI_APPLICATION {
        return Err(format!("subsystem {subsystem}, not an EFI application (10)"));
    }
    Ok(())
}

/// Read a loader wimlib extracted from install.wim into `path` (see `read_extracted`).
pub fn read_extracted_loader(path: &Path, name: &str) -> Result<Vec<u8>, UefiError> {
    read_extracted(path, name, "install.wim")
}

/// Read a boot file wimlib extracted from `wim` into `path` (a directory woesafe made for it): never through a
/// symbolic link (wimlib extracts a WIM's links as links: /dev/zero, /etc/shadow), only a regular file (checked
/// on the open file), never more than MAX_LOADER_BYTES. `name` is how the user knows the file (its path in the
/// WIM).
pub fn read_extracted(path: &Path, name: &str, wim: &'static str) -> Result<Vec<u8>, UefiError> {
    use crate::sys::argfile::{self, ArgFileError, Want};
    let path_in_wim = || name.to_string();
    let link = || UefiError::ExtractedLink { path: path_in_wim(), wim };
    let too_big = || UefiError::ExtractedTooBig { path: path_in_wim(), wim };
    let read_err = |source| UefiError::ExtractedRead { path: path_in_wim(), wim, source };
    // The path itself is looked at (lstat) and opened with O_NOFOLLOW and without blocking, then checked again
    // on the open file.
    let file = argfile::open_with(path, Want::Regular, false, libc::O_NOFOLLOW).map_err(|e| match e {
        ArgFileError::WrongKind { found, .. } if found == argfile::kind_of(libc::S_IFLNK) => link(),
        ArgFileError::WrongKind { found, .. } => UefiError::ExtractedKind { path: path_in_wim(), wim, found },
        ArgFileError::Open { source, .. } if source.raw_os_error() == Some(libc::ELOOP) => link(),
        ArgFileError::Stat { source, .. } | ArgFileError::Open { source, .. } => read_err(source),
        e => read_err(std::io::Error::other(e.to_string())),
    })?;
    let meta = file.metadata().map_err(read_err)?;
    if meta.len() > MAX_LOADER_BYTES {
        return Err(too_big());
    }
    // None: it grew past the limit while being read.
    argfile::read_capped(file, MAX_LOADER_BYTES).map_err(read_err)?.ok_or_else(too_big)
}

/// `wimlib-imagex extract` arguments taking boot.wim's CA 2023 files into `dest`: the directories EFI_EX and
/// Fonts_EX and PCAT's bootmgr_EX.efi. Each ends in wimlib's one-character wildcard (`EFI_E?`) so that, with
/// --nullglob, one that the image lacks is skipped instead of failing the whole extraction; what was found is
/// looked up by its exact name afterwards (`find_child`).
pub fn ca2023_extract_args(wim: &Path, image: u32, dest: &Path) -> Vec<std::ffi::OsString> {
    let mut d = std::ffi::OsString::from("--dest-dir=");
    d.push(dest);
    vec![
        "extract".into(),
        wim.into(),
        image.to_string().into(),
        "/Windows/Boot/EFI_E?".into(),
        "/Windows/Boot/Fonts_E?".into(),
        "/Windows/Boot/PCAT/bootmgr_E?.efi".into(),
        d,
        "--nullglob".into(),
        "--no-acls".into(),
        "--no-attributes".into(),
    ]
}

/// The name a CA 2023 font gets on the stick: Fonts_EX's `segoe_slboot_EX.ttf` replaces `segoe_slboot.ttf`.
/// None for a name that is not a plain `.ttf` file name (letters, digits, `_`, `-`, `.`; at most 64 bytes) ending
/// in `_EX.ttf`.
pub fn ex_font_name(name: &str) -> Option<String> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    let lower = name.to_ascii_lowercase();
    let stem = lower.strip_suffix("_ex.ttf")?;
    (plain && !stem.is_empty()).then(|| format!("{}.ttf", &name[..stem.len()]))
}

/// A child of `dir` by name in any letter case (wimlib keeps the WIM's spelling), of any kind (a link is
/// returned as the link: see `extracted_dir`); at most 4096 entries are read.
pub fn find_child(dir: &Path, name: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .take(4096)
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|e| e.path())
}

/// A directory wimlib extracted from `wim` as `name` into `dir` (woesafe's own): None when there is none; an
/// error when it is a symbolic link (wimlib extracts a WIM's links as links: a link to a host directory would
/// make every file "in" it the host's) or not a directory. `in_wim` is its path in the WIM, for messages.
pub fn extracted_dir(dir: &Path, name: &str, in_wim: &str, wim: &'static str) -> Result<Option<PathBuf>, UefiError> {
    let Some(path) = find_child(dir, name) else { return Ok(None) };
    let meta = std::fs::symlink_metadata(&path).map_err(|source| UefiError::ExtractedRead {
        path: in_wim.into(),
        wim,
        source,
    })?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(UefiError::ExtractedLink { path: in_wim.into(), wim });
    }
    if !kind.is_dir() {
        return Err(UefiError::ExtractedKind { path: in_wim.into(), wim, found: "a file, not a directory" });
    }
    Ok(Some(path))
}

/// Whether `data` looks like a TrueType or OpenType font (the first four bytes: 00 01 00 00, `true`, `OTTO`).
pub fn is_font(data: &[u8]) -> bool {
    matches!(data.get(..4), Some([0, 1, 0, 0] | b"true" | b"OTTO"))
}

/// The ISO's removable-media loader (FAT and the firmware ignore case), when present and not empty: x64's, else
/// arm64's.
pub fn find_loader(entries: &[SourceEntry]) -> Option<(Arch, &SourceEntry)> {
    Arch::ALL.into_iter().find_map(|arch| {
        entries
            .iter()
            .find(|e| !e.is_dir && e.size > 0 && e.path.eq_ignore_ascii_case(arch.loader_path()))
            .map(|e| (arch, e))
    })
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

    /// A minimal PE32+ x86_64 EFI application header: MZ, e_lfanew = 0x80, COFF, PE32+ optional header.
    fn efi_app() -> Vec<u8> {
        let mut pe = vec![0u8; 0x200];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3C] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        pe[0x94..0x96].copy_from_slice(&240u16.to_le_bytes()); // optional header size
        pe[0x96..0x98].copy_from_slice(&0x0206u16.to_le_bytes()); // executable, no line numbers, large addresses
        pe[0x98..0x9A].copy_from_slice(&0x20bu16.to_le_bytes());
        pe[0x98 + 68..0x98 + 70].copy_from_slice(&10u16.to_le_bytes());
        pe
    }

    #[test]
    fn pe_checks() {
        let mut pe = efi_app();
        assert_eq!(check_efi_x64(&pe), Ok(()));
        assert_eq!(check_efi_x64(&[]), Err("it is empty".into()));
        assert!(check_efi_x64(b"NOT-THE-X64-LOADER").unwrap_err().contains("MZ"));
        pe[0x84..0x86].copy_from_slice(&0x014Cu16.to_le_bytes());
        assert!(check_efi_x64(&pe).unwrap_err().contains("0x014c"));
        // arm64 too is refused here (this check is for bootx64.efi), and passes as arm64
        pe[0x84..0x86].copy_from_slice(&0xAA64u16.to_le_bytes());
        assert!(check_efi_x64(&pe).unwrap_err().contains("0xaa64"));
        assert_eq!(check_efi(&pe, Arch::Arm64), Ok(()));
        pe[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        assert_eq!(check_efi(&pe, Arch::Arm64), Err("built for machine 0x8664, not arm64 (0xaa64)".into()));
    }

    #[test]
    fn only_pe32_plus_efi_applications_pass() {
        let set = |pe: &mut Vec<u8>, at: usize, v: u16| pe[at..at + 2].copy_from_slice(&v.to_le_bytes());
        // PE32 (magic 0x10b) with the right machine
        let mut pe = efi_app();
        set(&mut pe, 0x98, 0x10b);
        assert_eq!(check_efi_x64(&pe), Err("optional header magic 0x10b, not PE32+ (0x20b)".into()));
        // a Windows program (subsystem 2, 3), an EFI boot-service driver (11), a runtime driver (12)
        for sub in [2u16, 3, 11, 12, 0] {
            let mut pe = efi_app();
            set(&mut pe, 0x98 + 68, sub);
            assert_eq!(check_efi_x64(&pe), Err(format!("subsystem {sub}, not an EFI application (10)")));
        }
        // not an executable image (an object file)
        let mut pe = efi_app();
        set(&mut pe, 0x96, 0x0200);
        assert!(check_efi_x64(&pe).unwrap_err().contains("executable"));
        // a DLL, even one with the EFI application subsystem
        let mut pe = efi_app();
        set(&mut pe, 0x96, 0x2206);
        assert_eq!(check_efi_x64(&pe), Err("a DLL (IMAGE_FILE_DLL), not an application".into()));
        // an optional header too short to hold the subsystem, or cut off by the file's end
        let mut pe = efi_app();
        set(&mut pe, 0x94, 0);
        assert!(check_efi_x64(&pe).unwrap_err().contains("too short"));
        let pe = efi_app();
        assert!(check_efi_x64(&pe[..0x98 + 60]).unwrap_err().contains("too short"));
        assert_eq!(check_efi_x64(&pe[..0x98 + 70]), Ok(()));
        assert!(check_efi_x64(&pe[..0x98]).unwrap_err().contains("no optional header"));
        // e_lfanew pointing past the end (or at the top of the address space) does not panic
        for lfanew in [0x1F0u32, u32::MAX] {
            let mut pe = efi_app();
            pe[0x3C..0x40].copy_from_slice(&lfanew.to_le_bytes());
            assert_eq!(check_efi_x64(&pe), Err("no PE signature".into()));
        }
    }

    #[test]
    fn extracted_loaders_are_read_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let name = "/Windows/Boot/EFI/bootmgfw.efi";
        let file = dir.path().join("bootmgfw.efi");
        std::fs::write(&file, efi_app()).unwrap();
        assert_eq!(read_extracted_loader(&file, name).unwrap(), efi_app());
        // a link to a file woesafe must never read, and to a device that never ends
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"root:$6$secret").unwrap();
        for target in [secret.as_path(), Path::new("/dev/zero")] {
            let link = dir.path().join("link.efi");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(target, &link).unwrap();
            let err = read_extracted_loader(&link, name).unwrap_err().to_string();
            assert!(err.contains("/Windows/Boot/EFI/bootmgfw.efi") && err.contains("symbolic link"), "{err}");
            assert!(!err.contains("secret") && !err.contains("/dev/zero"), "{err}");
        }
        // not a regular file: a directory, a FIFO (opened without waiting for a writer)
        let err = read_extracted_loader(dir.path(), name).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read_extracted_loader(&fifo, name).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        // too big
        std::fs::File::create(&file).unwrap().set_len(MAX_LOADER_BYTES + 1).unwrap();
        let err = read_extracted_loader(&file, name).unwrap_err();
        assert!(matches!(err, UefiError::ExtractedTooBig { .. }), "{err}");
        assert!(err.to_string().contains("at most 8388608"), "{err}");
        std::fs::File::create(&file).unwrap().set_len(MAX_LOADER_BYTES).unwrap();
        assert_eq!(read_extracted_loader(&file, name).unwrap().len() as u64, MAX_LOADER_BYTES);
    }

    #[test]
    fn bridge_config_names_the_volume() {
        let cfg = bridge_cfg("1a2b3c4d5e6f7081", Arch::X64);
        assert!(cfg.contains(
            "search --no-floppy --fs-uuid --set=root 1a2b3c4d5e6f7081\nchainloader /efi/boot/bootx64.efi\nboot\n"
        ));
        let args = bridge_mkstandalone_args(Path::new("/w/b.efi"), Path::new("/w/b.cfg"), Arch::X64);
        assert!(args.contains(&"boot/grub/grub.cfg=/w/b.cfg".to_string()));
        assert!(args.iter().any(|a| a.starts_with("--modules=") && a.contains("ntfs") && a.contains("chain")));
        assert_eq!(args[..4], ["-O", "x86_64-efi", "-d", "/usr/lib/grub/x86_64-efi"]);
        // Windows on ARM: GRUB's arm64-efi modules, handing over to bootaa64.efi.
        let cfg = bridge_cfg("1a2b3c4d5e6f7081", Arch::Arm64);
        assert!(cfg.contains("chainloader /efi/boot/bootaa64.efi\nboot\n"), "{cfg}");
        let args = bridge_mkstandalone_args(Path::new("/w/b.efi"), Path::new("/w/b.cfg"), Arch::Arm64);
        assert_eq!(args[..4], ["-O", "arm64-efi", "-d", "/usr/lib/grub/arm64-efi"]);
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
        let arm = [e("efi/boot/bootaa64.efi", 10)];
        assert_eq!(find_loader(&arm).map(|(a, e)| (a, e.path.as_str())), Some((Arch::Arm64, "efi/boot/bootaa64.efi")));
        // both: an x64 ISO that also carries an arm64 loader
        let both = [e("efi/boot/bootaa64.efi", 10), e("efi/boot/bootx64.efi", 10)];
        assert_eq!(find_loader(&both).map(|(a, _)| a), Some(Arch::X64));
        assert_eq!(Arch::of_loader_path("EFI/Boot/BootAA64.efi"), Some(Arch::Arm64));
        assert_eq!(Arch::of_loader_path("efi/boot/bootia32.efi"), None);
    }

    #[test]
    fn ca2023_fonts_lose_their_ex() {
        assert_eq!(ex_font_name("segoe_slboot_EX.ttf").as_deref(), Some("segoe_slboot.ttf"));
        assert_eq!(ex_font_name("wgl4_boot_ex.TTF").as_deref(), Some("wgl4_boot.ttf"));
        for bad in ["_EX.ttf", "segoe.ttf", "../x_EX.ttf", "a/b_EX.ttf", ".hidden_EX.ttf", "a b_EX.ttf", "é_EX.ttf", ""]
        {
            assert_eq!(ex_font_name(bad), None, "{bad}");
        }
        assert_eq!(ex_font_name(&format!("{}_EX.ttf", "a".repeat(58))), None, "over 64 bytes");
        let args = ca2023_extract_args(Path::new("/s/boot.wim"), 2, Path::new("/s/x"));
        let args: Vec<&str> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(args[..3], ["extract", "/s/boot.wim", "2"]);
        assert!(args.contains(&"/Windows/Boot/EFI_E?") && args.contains(&"--nullglob"));
        assert!(args.contains(&"--dest-dir=/s/x"));
    }
}
