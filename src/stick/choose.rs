//! Which filesystem the stick gets, and why: FAT32 (boots everywhere, Secure Boot included; a big install.wim
//! or install.esd is split into parts, after a re-pack when it cannot be split as it is) unless another file
//! is over FAT32's limit, then NTFS. Pure, so every rule is tested on fixtures.

use serde::{Deserialize, Serialize};

use super::units::human;
use crate::media::wim::PART_MIB;

/// The filesystem asked for with --fs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsRequest {
    /// FAT32 (splitting a big install.wim or install.esd) unless another file is over 4 GiB, then NTFS
    Auto,
    /// FAT32: boots on every UEFI firmware; files over 4 GiB other than install.wim/esd are refused
    Fat32,
    /// NTFS, with a small FAT bridge partition for UEFI boot
    Ntfs,
}

/// The filesystem the stick gets (in JSON: "fat32", "ntfs").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// How a Windows image over FAT32's limit can go onto a FAT32 stick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WimVerdict {
    /// Split as it is, streamed onto the stick in this many parts.
    Split { parts: usize },
    /// Re-packed into a plain WIM in scratch space first (why it cannot be split as it is).
    Repack { why: String },
    /// Not a WIM woesafe can read (why).
    Unusable(String),
}

/// A file over FAT32's limit, and for install.wim / install.esd what its inspection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BigFile {
    pub path: String,
    pub size: u64,
    /// Some for a Windows image that setup also reads as split parts (sources/install.wim or install.esd).
    pub wim: Option<WimVerdict>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub fs: Fs,
    /// Paths of the WIMs to split into parts as they are.
    pub split: Vec<String>,
    /// Paths of the WIMs to re-pack, then split.
    pub repack: Vec<String>,
    pub reason: String,
}

/// Whether `path` is a Windows image setup also accepts split (sources/install.wim or sources/install.esd).
pub fn is_install_image(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower == "sources/install.wim" || lower == "sources/install.esd"
}

/// Choose for the files over FAT32's limit. Err: the request cannot work, with the reason and what to do.
pub fn choose(request: FsRequest, big: &[BigFile]) -> Result<Choice, String> {
    if request == FsRequest::Ntfs {
        return Ok(Choice {
            fs: Fs::Ntfs,
            split: Vec::new(),
            repack: Vec::new(),
            reason: "asked for with --fs ntfs".into(),
        });
    }
    let (mut split, mut repack) = (Vec::new(), Vec::new());
    let mut reasons = Vec::new();
    for f in big {
        let what = |why: &str| {
            format!("{} ({}) is over FAT32's file-size limit (4 GiB - 1 byte) and {why}", f.path, human(f.size))
        };
        let taken = !split.is_empty() || !repack.is_empty();
        let why_not = match &f.wim {
            None => "only sources/install.wim or install.esd can be split into parts".to_string(),
            Some(_) if taken => "another install image already becomes sources/install.swm".into(),
            Some(WimVerdict::Unusable(e)) => {
                return Err(format!(
                    "{}: it cannot be read as a WIM ({e}); the ISO may be damaged (check it against its published \
                     checksum), or use --fs ntfs to copy it as it is",
                    what("cannot be split")
                ));
            }
            Some(WimVerdict::Split { parts }) => {
                reasons.push(what(&format!("is split into {parts} install.swm parts of at most {PART_MIB} MiB")));
                split.push(f.path.clone());
                continue;
            }
            Some(WimVerdict::Repack { why }) => {
                reasons.push(what(&format!(
                    "cannot be split as it is ({why}), so it is re-packed into a plain WIM in scratch space and \
                     split into install.swm parts of at most {PART_MIB} MiB"
                )));
                repack.push(f.path.clone());
                continue;
            }
        };
        let what = what(&format!("cannot be split: {why_not}"));
        return match request {
            FsRequest::Fat32 => Err(format!("--fs fat32: {what}; use --fs ntfs (or --fs auto, the default)")),
            _ => Ok(Choice { fs: Fs::Ntfs, split: Vec::new(), repack: Vec::new(), reason: what }),
        };
    }
    let reason = match (request, reasons.is_empty()) {
        (_, false) => reasons.join("; "),
        (FsRequest::Fat32, true) => "asked for with --fs fat32".into(),
        _ => "every file fits FAT32, which every UEFI firmware reads (Secure Boot included)".into(),
    };
    Ok(Choice { fs: Fs::Fat32, split, repack, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wim(path: &str, size: u64, v: WimVerdict) -> BigFile {
        BigFile { path: path.into(), size, wim: Some(v) }
    }

    #[test]
    fn small_isos_get_fat32() {
        let c = choose(FsRequest::Auto, &[]).unwrap();
        assert_eq!((c.fs, c.split.len(), c.repack.len()), (Fs::Fat32, 0, 0));
        assert!(c.reason.contains("every file fits"));
        assert_eq!(choose(FsRequest::Fat32, &[]).unwrap().fs, Fs::Fat32);
        assert_eq!(choose(FsRequest::Ntfs, &[]).unwrap().fs, Fs::Ntfs);
    }

    #[test]
    fn a_splittable_wim_keeps_fat32() {
        for req in [FsRequest::Auto, FsRequest::Fat32] {
            let c = choose(req, &[wim("sources/install.wim", 5 << 30, WimVerdict::Split { parts: 2 })]).unwrap();
            assert_eq!(c.fs, Fs::Fat32);
            assert_eq!(c.split, ["sources/install.wim"]);
            assert!(c.repack.is_empty());
            assert!(c.reason.contains("split into 2 install.swm parts of at most 4000 MiB"), "{}", c.reason);
        }
    }

    #[test]
    fn an_esd_is_repacked_never_ntfs() {
        let esd = [wim("sources/install.esd", 5 << 30, WimVerdict::Repack { why: "it has solid resources".into() })];
        for req in [FsRequest::Auto, FsRequest::Fat32] {
            let c = choose(req, &esd).unwrap();
            assert_eq!(c.fs, Fs::Fat32);
            assert_eq!(c.repack, ["sources/install.esd"]);
            assert!(c.split.is_empty());
            assert!(c.reason.contains("sources/install.esd (5.0 GiB)") && c.reason.contains("solid"), "{}", c.reason);
            assert!(c.reason.contains("re-packed"), "{}", c.reason);
        }
        assert_eq!(choose(FsRequest::Ntfs, &esd).unwrap().fs, Fs::Ntfs);
    }

    #[test]
    fn an_unreadable_wim_is_refused_naming_it() {
        let broken = [wim("sources/install.wim", 5 << 30, WimVerdict::Unusable("no MSWIM signature".into()))];
        for req in [FsRequest::Auto, FsRequest::Fat32] {
            let e = choose(req, &broken).unwrap_err();
            assert!(e.contains("sources/install.wim") && e.contains("no MSWIM") && e.contains("--fs ntfs"), "{e}");
        }
        assert_eq!(choose(FsRequest::Ntfs, &broken).unwrap().fs, Fs::Ntfs);
    }

    #[test]
    fn any_other_big_file_needs_ntfs() {
        let big = [
            wim("sources/install.wim", 5 << 30, WimVerdict::Split { parts: 2 }),
            BigFile { path: "extra/disk.vhd".into(), size: 6 << 30, wim: None },
        ];
        let e = choose(FsRequest::Fat32, &big).unwrap_err();
        assert!(e.contains("extra/disk.vhd") && e.contains("only sources/install.wim"), "{e}");
        let c = choose(FsRequest::Auto, &big).unwrap();
        assert_eq!((c.fs, c.split.len()), (Fs::Ntfs, 0));
        assert!(c.reason.contains("extra/disk.vhd"));
        // Two big install images: only one can become install.swm.
        let two = [
            wim("sources/install.esd", 5 << 30, WimVerdict::Repack { why: "solid".into() }),
            wim("sources/install.wim", 5 << 30, WimVerdict::Split { parts: 2 }),
        ];
        assert!(choose(FsRequest::Fat32, &two).unwrap_err().contains("another install image"));
    }

    #[test]
    fn install_images_are_recognised_in_any_case() {
        assert!(is_install_image("Sources/Install.WIM"));
        assert!(is_install_image("sources/install.esd"));
        assert!(!is_install_image("sources/boot.wim"));
        assert!(!is_install_image("x/sources/install.wim"));
    }
}
