//! Which filesystem the stick gets, and why: FAT32 (boots everywhere; a big install.wim is split into parts)
//! unless that cannot work, then NTFS. Pure, so every rule is tested on fixtures.

use serde::{Deserialize, Serialize};

use super::units::human;
use crate::media::wim::{PART_MIB, WimInfo};

/// The filesystem asked for with --fs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum FsRequest {
    /// FAT32 (splitting a big install.wim) unless that cannot work, then NTFS
    Auto,
    /// FAT32: boots on every UEFI firmware; files over 4 GiB other than install.wim are refused
    Fat32,
    /// NTFS, with a small FAT bridge partition for UEFI boot
    Ntfs,
}

/// The filesystem the stick gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fs {
    Fat32,
    Ntfs,
}

impl Fs {
    pub fn name(self) -> &'static str {
        match self {
            Fs::Fat32 => "FAT32",
            Fs::Ntfs => "NTFS",
        }
    }
}

/// A file over FAT32's limit, and for install.wim / install.esd what its inspection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigFile {
    pub path: String,
    pub size: u64,
    /// Some for a Windows image that setup also reads as split parts (sources/install.wim or install.esd):
    /// what inspecting it found, or why it could not be inspected.
    pub wim: Option<Result<WimInfo, String>>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub fs: Fs,
    /// Paths of the WIMs to split into parts.
    pub split: Vec<String>,
    pub reason: String,
}

/// Whether `path` is a Windows image setup also accepts split (sources/install.wim or sources/install.esd).
pub fn is_install_image(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower == "sources/install.wim" || lower == "sources/install.esd"
}

/// Choose for the files over FAT32's limit. Err: --fs fat32 cannot work, with the reason and what to do.
pub fn choose(request: FsRequest, big: &[BigFile]) -> Result<Choice, String> {
    if request == FsRequest::Ntfs {
        return Ok(Choice { fs: Fs::Ntfs, split: Vec::new(), reason: "asked for with --fs ntfs".into() });
    }
    let mut split = Vec::new();
    for f in big {
        let why_not = match &f.wim {
            None => "only sources/install.wim or install.esd can be split into parts".to_string(),
            Some(Err(e)) => format!("it cannot be inspected ({e})"),
            Some(Ok(info)) => match info.split_problem() {
                Some(p) => p,
                None if split.is_empty() => {
                    split.push(f.path.clone());
                    continue;
                }
                None => "another install image is already split into sources/install.swm".into(),
            },
        };
        let what = format!(
            "{} ({}) is over FAT32's file-size limit (4 GiB - 1 byte) and cannot be split: {why_not}",
            f.path,
            human(f.size)
        );
        return match request {
            FsRequest::Fat32 => Err(format!("--fs fat32: {what}; use --fs ntfs (or --fs auto, the default)")),
            _ => Ok(Choice { fs: Fs::Ntfs, split: Vec::new(), reason: what }),
        };
    }
    let reason = match (request, split.first()) {
        (_, Some(p)) => {
            let size = big.iter().find(|f| &f.path == p).map_or(0, |f| f.size);
            format!(
                "{p} ({}) is over FAT32's file-size limit, so it is split into install.swm parts of at most {PART_MIB} MiB",
                human(size)
            )
        }
        (FsRequest::Fat32, None) => "asked for with --fs fat32".into(),
        _ => "every file fits FAT32, which every UEFI firmware reads".into(),
    };
    Ok(Choice { fs: Fs::Fat32, split, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(solid: bool, largest: u64) -> WimInfo {
        WimInfo {
            version: if solid { 0xE00 } else { 0x10D00 },
            part_number: 1,
            total_parts: 1,
            image_count: 1,
            resources: 3,
            solid,
            largest_resource: largest,
            x64_images: vec![1],
        }
    }
    fn wim(path: &str, size: u64, i: WimInfo) -> BigFile {
        BigFile { path: path.into(), size, wim: Some(Ok(i)) }
    }

    #[test]
    fn small_isos_get_fat32() {
        let c = choose(FsRequest::Auto, &[]).unwrap();
        assert_eq!((c.fs, c.split.len()), (Fs::Fat32, 0));
        assert!(c.reason.contains("every file fits"));
        assert_eq!(choose(FsRequest::Fat32, &[]).unwrap().fs, Fs::Fat32);
        assert_eq!(choose(FsRequest::Ntfs, &[]).unwrap().fs, Fs::Ntfs);
    }

    #[test]
    fn a_splittable_wim_keeps_fat32() {
        for req in [FsRequest::Auto, FsRequest::Fat32] {
            let c = choose(req, &[wim("sources/install.wim", 5 << 30, info(false, 1 << 30))]).unwrap();
            assert_eq!(c.fs, Fs::Fat32);
            assert_eq!(c.split, ["sources/install.wim"]);
            assert!(c.reason.contains("split into install.swm parts of at most 4000 MiB"), "{}", c.reason);
        }
    }

    #[test]
    fn an_unsplittable_wim_falls_back_to_ntfs_or_is_refused() {
        let esd = [wim("sources/install.esd", 5 << 30, info(true, 5 << 30))];
        let c = choose(FsRequest::Auto, &esd).unwrap();
        assert_eq!(c.fs, Fs::Ntfs);
        assert!(c.reason.contains("sources/install.esd") && c.reason.contains("solid"), "{}", c.reason);
        let e = choose(FsRequest::Fat32, &esd).unwrap_err();
        assert!(e.starts_with("--fs fat32: sources/install.esd") && e.contains("use --fs ntfs"), "{e}");
        let huge = [wim("sources/install.wim", 5 << 30, info(false, (4001 << 20) as u64))];
        assert!(choose(FsRequest::Fat32, &huge).unwrap_err().contains("resource"));
        let broken = [BigFile { path: "sources/install.wim".into(), size: 5 << 30, wim: Some(Err("no MSWIM".into())) }];
        assert_eq!(choose(FsRequest::Auto, &broken).unwrap().fs, Fs::Ntfs);
    }

    #[test]
    fn any_other_big_file_needs_ntfs() {
        let big = [
            wim("sources/install.wim", 5 << 30, info(false, 1 << 30)),
            BigFile { path: "extra/disk.vhd".into(), size: 6 << 30, wim: None },
        ];
        let e = choose(FsRequest::Fat32, &big).unwrap_err();
        assert!(e.contains("extra/disk.vhd") && e.contains("only sources/install.wim"), "{e}");
        let c = choose(FsRequest::Auto, &big).unwrap();
        assert_eq!((c.fs, c.split.len()), (Fs::Ntfs, 0));
        assert!(c.reason.contains("extra/disk.vhd"));
    }

    #[test]
    fn install_images_are_recognised_in_any_case() {
        assert!(is_install_image("Sources/Install.WIM"));
        assert!(is_install_image("sources/install.esd"));
        assert!(!is_install_image("sources/boot.wim"));
        assert!(!is_install_image("x/sources/install.wim"));
    }
}
