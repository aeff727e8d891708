//! Safety checks before the first byte is written, as pure functions over `disk` facts and the ISO inventory,
//! so that fixture tests cover every refusal.

use std::path::{Path, PathBuf};

use super::disk::{BlockFacts, HostFacts, TargetFacts};
use super::units::human;

/// Why woesafe refuses to write (exit code 3).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error(
        "{path} is a partition; woesafe writes whole disks: use /dev/{disk} (every partition on it will be erased)"
    )]
    Partition { path: PathBuf, disk: String },
    #[error("{path} has mounted filesystems: {}; unmount them first (e.g. `umount {}`)", .mounts.join(", "), .mounts.first().map(String::as_str).unwrap_or(""))]
    Mounted { path: PathBuf, mounts: Vec<String> },
    #[error("{path} holds the running system's root filesystem (/); refusing to overwrite it")]
    RootDisk { path: PathBuf },
    #[error("{path} holds the ISO {iso}; copy the ISO to another disk first")]
    IsoOnTarget { path: PathBuf, iso: PathBuf },
    #[error("{path} is the ISO itself (or a loop device backed by it); give a different target")]
    IsoIsTarget { path: PathBuf },
    #[error("{path} is read-only (write-protect switch, or `blockdev --setro`); make it writable first")]
    ReadOnly { path: PathBuf },
    #[error(
        "{path} ({model}, {transport}) is not removable: a fixed disk (an external hard disk or SSD keeps backups; \
         an internal disk keeps a system); if you really mean this disk, add --force"
    )]
    NotRemovable { path: PathBuf, model: String, transport: String },
    #[error(
        "{path} has {size}-byte logical sectors; woesafe lays sticks out in 512- or 4096-byte sectors only (neither \
         FAT32 nor Windows Setup is known to work on others)"
    )]
    SectorSize { path: PathBuf, size: u32 },
    #[error("{path} is in use by {}; stop using it (e.g. `dmsetup remove`) first", .holders.join(", "))]
    Held { path: PathBuf, holders: Vec<String> },
    #[error("{path} is a loop device with nothing attached; attach an image (`losetup`) or give the image file")]
    LoopNotAttached { path: PathBuf },
    #[error("image file {path} is attached to {device}; detach it (`losetup -d {device}`) or write to {device}")]
    ImageAttached { path: PathBuf, device: String },
    #[error("{path} is too small: {} needed for the ISO's files, the target has {}", human(*.needed), human(*.size))]
    TooSmall { path: PathBuf, size: u64, needed: u64 },
    #[error(
        "{iso} does not look like a Windows installation ISO (no sources/install.wim, install.esd or boot.wim); \
         for other ISOs a raw writer suits better: `dd if={iso} of=TARGET bs=4M conv=fsync`"
    )]
    NotWindows { iso: PathBuf },
    #[error("{0}")]
    Filesystem(String),
    #[error("{0}")]
    Scratch(String),
    #[error("the ISO cannot be written to FAT32: {0}")]
    NotFatCompatible(String),
    #[error("the ISO cannot be written as it is: {0}")]
    Names(String),
    #[error(
        "the ISO's {path} is not a UEFI loader for {arch} ({what}): the stick would not boot under UEFI; {hint}",
        arch = if uefi_arch_of(path) == Some(crate::boot::uefi::Arch::Arm64) { "arm64" } else { "x86_64" },
        hint = if uefi_arch_of(path) == Some(crate::boot::uefi::Arch::Arm64) {
            "use an intact ISO"
        } else {
            "write it with --boot bios, or use an intact ISO"
        }
    )]
    Loader { path: String, what: String },
    #[error("--ca2023: {0}")]
    Ca2023(String),
    #[error("{0}")]
    Bridge(String),
}

fn uefi_arch_of(path: &str) -> Option<crate::boot::uefi::Arch> {
    crate::boot::uefi::Arch::of_loader_path(path)
}

/// The ISO's UEFI loader is not one: its path on the ISO, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoaderProblem {
    pub path: String,
    pub what: String,
}

/// Checks that need only the target and host facts (run before the ISO is read).
pub fn check_target(
    target: &TargetFacts,
    host: &HostFacts,
    loops: &[(String, std::path::PathBuf)],
    iso: &std::path::Path,
    force: bool,
) -> Result<(), Refusal> {
    match target {
        TargetFacts::Block(b) => check_disk(b, host, Some(iso), force),
        TargetFacts::Image { path, exists, dev, ino, .. } => {
            if *exists && (*dev, *ino) == host.iso_id {
                return Err(Refusal::IsoIsTarget { path: path.clone() });
            }
            if *exists {
                let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                if let Some((dev, _)) = loops.iter().find(|(_, b)| *b == canon) {
                    return Err(Refusal::ImageAttached { path: path.clone(), device: format!("/dev/{dev}") });
                }
            }
            Ok(())
        }
    }
}

/// The checks of a block device, in the order `woesafe write` makes them, so that the first refusal is the one
/// it gives. With `iso` None (`woesafe list`: no ISO yet) the checks against the ISO's file and disk are left
/// out; every other refusal is the same.
pub fn check_disk(b: &BlockFacts, host: &HostFacts, iso: Option<&Path>, force: bool) -> Result<(), Refusal> {
    let path = PathBuf::from(format!("/dev/{}", b.name));
    if let Some(disk) = &b.parent_disk {
        return Err(Refusal::Partition { path, disk: disk.clone() });
    }
    if host.root_disk.as_deref() == Some(b.name.as_str()) || host.root_disks.contains(&b.name) {
        return Err(Refusal::RootDisk { path });
    }
    if let Some(iso) = iso
        && host.iso_disk.as_deref() == Some(b.name.as_str())
    {
        return Err(Refusal::IsoOnTarget { path, iso: iso.to_path_buf() });
    }
    if b.transport == "loop" {
        match (&b.loop_backing, iso) {
            (None, _) => return Err(Refusal::LoopNotAttached { path }),
            (Some(back), Some(iso)) => {
                let canon_iso = std::fs::canonicalize(iso).unwrap_or_else(|_| iso.to_path_buf());
                if Path::new(back) == canon_iso {
                    return Err(Refusal::IsoIsTarget { path });
                }
            }
            (Some(_), None) => {}
        }
    }
    let mounts: Vec<String> = host
        .mounts
        .iter()
        .filter(|m| b.devnums.contains(&(m.major, m.minor)))
        .map(|m| crate::cli::term::path(&m.mount_point))
        .collect();
    if !mounts.is_empty() {
        return Err(Refusal::Mounted { path, mounts });
    }
    if !b.holders.is_empty() {
        return Err(Refusal::Held { path, holders: b.holders.clone() });
    }
    if b.read_only {
        return Err(Refusal::ReadOnly { path });
    }
    if b.logical_block_size != 0 && !super::mbr::sector_size_supported(u64::from(b.logical_block_size)) {
        return Err(Refusal::SectorSize { path, size: b.logical_block_size });
    }
    if !removable_like(b) && !force {
        return Err(Refusal::NotRemovable { path, model: b.model.clone(), transport: b.transport.clone() });
    }
    Ok(())
}

/// Disks woesafe writes without --force: removable ones and loop devices. A USB disk that says removable=0 is
/// an external hard disk or SSD, where people keep their backups: it needs --force, as Rufus hides such disks
/// unless asked.
pub fn removable_like(b: &BlockFacts) -> bool {
    b.removable || b.transport == "loop"
}

/// What the worker learned about the ISO, sent up before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Inventory {
    pub volume_id: String,
    /// How the ISO is read: "UDF (userspace)", "Joliet (userspace)", "udf (kernel)", ...
    pub reader: String,
    pub dirs: u64,
    pub files: u64,
    pub total_bytes: u64,
    pub largest: Vec<(String, u64)>,
    pub is_windows: bool,
    pub has_bootmgr: bool,
    pub has_uefi_loader: bool,
    /// Bytes the FAT32 filesystem needs for these files on this target (cluster rounding included).
    pub needed_bytes: u64,
    /// Why FAT cannot hold this tree (a name it cannot store, two names differing only in case, a directory
    /// too large), if it cannot.
    pub fat_problem: Option<String>,
    /// Why the planned tree cannot go onto this filesystem with this driver (two names the target or Windows takes
    /// for one, an ISO entry in the way of one woesafe adds, a name Windows cannot hold), if it cannot.
    pub name_problem: Option<String>,
    /// Why the ISO's UEFI loader cannot boot (not a PE32+ x86_64 EFI application), if UEFI boot is wanted.
    pub loader_problem: Option<LoaderProblem>,
    /// The ISO already has an autounattend.xml at its root.
    pub has_answer_file: bool,
    /// The filesystem chosen for the stick and why, or why --fs fat32 cannot work.
    pub fs: Result<crate::stick::choose::Choice, String>,
    /// Why the scratch space for splitting / extracting cannot be had (not enough room in $TMPDIR), if so.
    pub scratch_problem: Option<String>,
    /// Bytes of scratch space the Prepare step uses (0: no Prepare step).
    pub scratch_bytes: u64,
    /// Windows 7: UEFI boot needs the loader extracted from install.wim, image index.
    pub win7_image: Option<u32>,
    /// The stick gets a UEFI bridge partition (NTFS with a UEFI loader to hand over to).
    pub bridge: bool,
    /// The firmware the stick will boot on, as the survey settled it: the request, without BIOS when the ISO has
    /// no /bootmgr and --boot was not given.
    #[serde(default = "both")]
    pub boot: crate::boot::BootMode,
    /// The processor of the ISO's UEFI loader (x64 for Windows 7's extracted one); None: no UEFI loader.
    #[serde(default)]
    pub uefi_arch: Option<crate::boot::uefi::Arch>,
    /// --ca2023: why the Windows UEFI CA 2023 boot managers cannot be had from this ISO, if they cannot.
    #[serde(default)]
    pub ca2023_problem: Option<String>,
    /// Why the user's --uefi-ntfs-image cannot boot this stick (no loader for the ISO's processor), if so.
    #[serde(default)]
    pub bridge_problem: Option<String>,
    /// What the write will do on the target: partitions, filesystem, label, files, split, boot code (for
    /// `--dry-run` and `inspect`).
    #[serde(default)]
    pub layout: PlannedLayout,
}

fn both() -> crate::boot::BootMode {
    crate::boot::BootMode::Both
}

/// The partition table a write makes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlannedTable {
    #[default]
    Mbr,
    Gpt,
}

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionRole {
    /// The Windows partition: FAT32 or NTFS, holding the ISO's files.
    Main,
    /// The small FAT partition whose EFI loader chain-loads the NTFS stick's loader.
    UefiBridge,
}

/// One partition the write creates.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlannedPartition {
    /// 1-based, as in the table.
    pub number: u32,
    /// Start on the disk, in bytes.
    pub offset: u64,
    pub size: u64,
    pub role: PartitionRole,
    /// The type in the table: an MBR type byte ("0x0C") or a GPT type name ("Microsoft basic data").
    pub type_name: String,
}

/// How a big install image goes onto FAT32.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlannedSplit {
    /// The WIM's path on the ISO.
    pub wim: String,
    /// Re-packed into a plain WIM in scratch space first (the part sizes are then estimates).
    pub repack: bool,
    pub parts: usize,
    /// The largest part asked for (wimlib's `split … 4000`), in bytes.
    pub part_bytes: u64,
    /// Each part's size in bytes (estimated after a re-pack).
    pub part_sizes: Vec<u64>,
}

/// The BIOS boot code a write installs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlannedBios {
    /// GRUB's boot code: bytes 0..440 of sector 0 (the partition table is kept).
    pub boot_code: String,
    /// GRUB's i386-pc core image: the MBR gap before the first partition.
    pub core_image: String,
    /// The GRUB configuration file added to the stick, and what it runs.
    pub config: String,
    pub chain: String,
}

/// How the stick boots under UEFI.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PlannedUefi {
    /// The ISO's own loader, on FAT32.
    IsoLoader { path: String },
    /// Windows 7: the loader extracted from install.wim's image `image`, as `path`.
    Windows7 { image: u32, path: String },
    /// NTFS: a FAT bridge partition whose loader chain-loads `loader` on the NTFS partition; `image` the user's
    /// UEFI:NTFS image, else a GRUB image woesafe builds (not Secure Boot signed).
    Bridge { loader: String, image: Option<String> },
    /// UEFI boot asked for, but the ISO has no loader.
    Unavailable,
}

/// What a write will do on the target, as planned before anything is written.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlannedLayout {
    pub table: PlannedTable,
    /// What the Partition step writes, from `job::layout::plan_partitions` (a target without room for them is
    /// a survey error, NoRoom).
    pub partitions: Vec<PlannedPartition>,
    /// None when the requested filesystem cannot be used (see `Inventory::fs`).
    pub fs: Option<crate::stick::choose::Fs>,
    /// The label the filesystem gets (--label, else derived from the volume id).
    pub label: String,
    /// Directories and files on the stick, as planned (split parts and woesafe's own files included).
    pub dirs: u64,
    pub files: u64,
    /// Bytes copied onto the stick.
    pub bytes: u64,
    pub split: Option<PlannedSplit>,
    /// None without BIOS boot.
    pub bios: Option<PlannedBios>,
    /// None without UEFI boot.
    pub uefi: Option<PlannedUefi>,
    /// The processor the UEFI loader is for (x64, arm64); None without one.
    #[serde(default)]
    pub uefi_arch: Option<crate::boot::uefi::Arch>,
    /// --ca2023: the boot managers signed by the Windows UEFI CA 2023, from boot.wim's image (index), replace
    /// the ISO's.
    #[serde(default)]
    pub ca2023_image: Option<u32>,
    /// Files woesafe adds (boot/grub/grub.cfg, autounattend.xml, efi/boot/bootx64.efi for Windows 7).
    pub added: Vec<String>,
}

/// Checks that need the ISO's inventory.
pub fn check_content(
    inv: &Inventory,
    iso: &std::path::Path,
    target_path: &std::path::Path,
    target_size: u64,
) -> Result<(), Refusal> {
    if !inv.is_windows {
        return Err(Refusal::NotWindows { iso: iso.to_path_buf() });
    }
    let choice = inv.fs.as_ref().map_err(|e| Refusal::Filesystem(e.clone()))?;
    if let Some(problem) = &inv.name_problem {
        return Err(Refusal::Names(problem.clone()));
    }
    if let Some(LoaderProblem { path, what }) = &inv.loader_problem {
        return Err(Refusal::Loader { path: path.clone(), what: what.clone() });
    }
    if choice.fs == crate::stick::choose::Fs::Fat32
        && let Some(problem) = &inv.fat_problem
    {
        return Err(Refusal::NotFatCompatible(problem.clone()));
    }
    if let Some(problem) = &inv.ca2023_problem {
        return Err(Refusal::Ca2023(problem.clone()));
    }
    if let Some(problem) = &inv.bridge_problem {
        return Err(Refusal::Bridge(problem.clone()));
    }
    if let Some(problem) = &inv.scratch_problem {
        return Err(Refusal::Scratch(problem.clone()));
    }
    if inv.needed_bytes > target_size {
        return Err(Refusal::TooSmall { path: target_path.to_path_buf(), size: target_size, needed: inv.needed_bytes });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mountinfo::parse;

    fn stick() -> BlockFacts {
        BlockFacts {
            name: "sdb".into(),
            major: 8,
            minor: 16,
            size: 16 << 30,
            removable: true,
            transport: "usb".into(),
            model: "Flash Disk".into(),
            devnums: vec![(8, 16), (8, 17)],
            ..Default::default()
        }
    }

    fn host() -> HostFacts {
        HostFacts {
            mounts: parse("22 1 254:0 / / rw - ext4 /dev/vda rw\n"),
            root_disk: Some("vda".into()),
            root_disks: vec!["vda".into()],
            iso_disk: Some("vda".into()),
            iso_id: (1, 2),
            mount_disks: vec![],
        }
    }

    fn check(b: BlockFacts, h: &HostFacts, force: bool) -> Result<(), Refusal> {
        check_target(&TargetFacts::Block(b), h, &[], std::path::Path::new("/isos/win.iso"), force)
    }

    #[test]
    fn a_usb_stick_passes() {
        assert_eq!(check(stick(), &host(), false), Ok(()));
    }

    #[test]
    fn partition_is_refused_naming_the_disk() {
        let mut b = stick();
        b.name = "sdb1".into();
        b.parent_disk = Some("sdb".into());
        let err = check(b, &host(), true).unwrap_err();
        assert_eq!(err, Refusal::Partition { path: "/dev/sdb1".into(), disk: "sdb".into() });
        assert!(err.to_string().contains("use /dev/sdb"));
    }

    #[test]
    fn mounted_partition_is_refused_saying_where() {
        let mut h = host();
        h.mounts.extend(parse("45 22 8:17 / /media/user/STICK rw - vfat /dev/sdb1 rw\n"));
        let err = check(stick(), &h, true).unwrap_err();
        assert_eq!(err, Refusal::Mounted { path: "/dev/sdb".into(), mounts: vec!["/media/user/STICK".into()] });
        assert!(err.to_string().contains("/media/user/STICK"));
    }

    #[test]
    fn root_disk_and_iso_disk_are_refused_even_with_force() {
        let mut b = stick();
        b.name = "vda".into();
        assert_eq!(check(b, &host(), true), Err(Refusal::RootDisk { path: "/dev/vda".into() }));
        let mut h = host();
        h.iso_disk = Some("sdb".into());
        assert!(matches!(check(stick(), &h, true), Err(Refusal::IsoOnTarget { .. })));
    }

    #[test]
    fn read_only_and_held_disks_are_refused() {
        let mut b = stick();
        b.read_only = true;
        assert_eq!(check(b, &host(), true), Err(Refusal::ReadOnly { path: "/dev/sdb".into() }));
        let mut b = stick();
        b.holders = vec!["dm-0".into()];
        assert!(matches!(check(b, &host(), true), Err(Refusal::Held { .. })));
    }

    #[test]
    fn fixed_disk_needs_force() {
        let mut b = stick();
        b.removable = false;
        b.transport = "ata/scsi".into();
        assert!(matches!(check(b.clone(), &host(), false), Err(Refusal::NotRemovable { .. })));
        assert_eq!(check(b, &host(), true), Ok(()));
        // A USB disk that reports removable=0 (an external hard disk or SSD) needs --force too.
        let mut u = stick();
        u.removable = false;
        assert!(matches!(check(u.clone(), &host(), false), Err(Refusal::NotRemovable { .. })));
        assert_eq!(check(u, &host(), true), Ok(()));
    }

    #[test]
    fn odd_sector_sizes_are_refused() {
        for (size, ok) in [(0, true), (512, true), (4096, true), (2048, false), (1024, false), (8192, false)] {
            let mut b = stick();
            b.logical_block_size = size;
            let got = check(b, &host(), false);
            if ok {
                assert_eq!(got, Ok(()), "{size}");
            } else {
                assert_eq!(got, Err(Refusal::SectorSize { path: "/dev/sdb".into(), size }), "{size}");
            }
        }
    }

    #[test]
    fn loop_devices() {
        let mut b = stick();
        b.name = "loop7".into();
        b.transport = "loop".into();
        b.removable = false;
        b.devnums = vec![(7, 7)];
        assert_eq!(check(b.clone(), &host(), false), Err(Refusal::LoopNotAttached { path: "/dev/loop7".into() }));
        b.loop_backing = Some("/isos/win.iso".into());
        assert_eq!(check(b.clone(), &host(), false), Err(Refusal::IsoIsTarget { path: "/dev/loop7".into() }));
        b.loop_backing = Some("/var/tmp/stick.img".into());
        assert_eq!(check(b, &host(), false), Ok(()));
    }

    /// Without an ISO (`woesafe list`) the checks against the ISO are left out and every other one is the same;
    /// a disk under / through device-mapper is the root disk.
    #[test]
    fn disk_checks_without_an_iso() {
        let mut h = host();
        h.iso_disk = Some("sdb".into());
        assert!(matches!(check(stick(), &h, true), Err(Refusal::IsoOnTarget { .. })));
        assert_eq!(check_disk(&stick(), &h, None, false), Ok(()));
        let mut b = stick();
        b.name = "loop7".into();
        b.transport = "loop".into();
        b.loop_backing = Some("/isos/win.iso".into());
        assert_eq!(check_disk(&b, &host(), None, false), Ok(()));
        b.loop_backing = None;
        assert_eq!(check_disk(&b, &host(), None, false), Err(Refusal::LoopNotAttached { path: "/dev/loop7".into() }));
        let mut h = host();
        h.root_disk = Some("dm-1".into());
        h.root_disks = vec!["sdb".into()];
        let mut b = stick();
        b.holders = vec!["dm-0".into()];
        assert_eq!(check(b.clone(), &h, true), Err(Refusal::RootDisk { path: "/dev/sdb".into() }));
        assert_eq!(check_disk(&b, &h, None, true), Err(Refusal::RootDisk { path: "/dev/sdb".into() }));
    }

    #[test]
    fn image_files() {
        let h = host();
        let iso = std::path::Path::new("/isos/win.iso");
        let same = TargetFacts::Image { path: "/isos/win.iso".into(), exists: true, size: 5, dev: 1, ino: 2 };
        assert!(matches!(check_target(&same, &h, &[], iso, true), Err(Refusal::IsoIsTarget { .. })));
        let new =
            TargetFacts::Image { path: "/nonexistent/dir/out.img".into(), exists: false, size: 0, dev: 0, ino: 0 };
        assert_eq!(check_target(&new, &h, &[], iso, false), Ok(()));
        let attached =
            TargetFacts::Image { path: "/nonexistent/out.img".into(), exists: true, size: 5, dev: 9, ino: 9 };
        let loops = vec![("loop3".to_string(), "/nonexistent/out.img".into())];
        assert_eq!(
            check_target(&attached, &h, &loops, iso, false),
            Err(Refusal::ImageAttached { path: "/nonexistent/out.img".into(), device: "/dev/loop3".into() })
        );
    }

    fn inventory() -> Inventory {
        Inventory {
            volume_id: "CCCOMA_X64FRE_EN-US_DV9".into(),
            reader: "UDF (userspace)".into(),
            dirs: 10,
            files: 100,
            total_bytes: 5 << 30,
            largest: vec![("sources/install.wim".into(), 3 << 30)],
            is_windows: true,
            has_bootmgr: true,
            has_uefi_loader: true,
            needed_bytes: (5 << 30) + (50 << 20),
            fat_problem: None,
            name_problem: None,
            loader_problem: None,
            has_answer_file: false,
            fs: Ok(crate::stick::choose::Choice {
                fs: crate::stick::choose::Fs::Fat32,
                split: vec![],
                repack: vec![],
                reason: "every file fits".into(),
            }),
            scratch_problem: None,
            scratch_bytes: 0,
            layout: Default::default(),
            win7_image: None,
            bridge: false,
            boot: crate::boot::BootMode::Both,
            uefi_arch: Some(crate::boot::uefi::Arch::X64),
            ca2023_problem: None,
            bridge_problem: None,
        }
    }

    #[test]
    fn content_checks() {
        let iso = std::path::Path::new("/isos/win.iso");
        let t = std::path::Path::new("/dev/sdb");
        assert_eq!(check_content(&inventory(), iso, t, 8 << 30), Ok(()));
        let err = check_content(&inventory(), iso, t, 4 << 30).unwrap_err();
        assert!(matches!(err, Refusal::TooSmall { .. }));
        assert!(err.to_string().contains("GiB needed"), "{err}");
        let mut big = inventory();
        big.fs = Err("--fs fat32: sources/install.esd (5.0 GiB) is over FAT32's file-size limit".into());
        let err = check_content(&big, iso, t, 64 << 30).unwrap_err();
        assert!(err.to_string().starts_with("--fs fat32: sources/install.esd"), "{err}");
        let mut clash = inventory();
        clash.fat_problem = Some("NOTES.TXT and Notes.txt differ only in letter case".into());
        let err = check_content(&clash, iso, t, 64 << 30).unwrap_err();
        assert!(err.to_string().contains("cannot be written to FAT32: NOTES.TXT and Notes.txt"), "{err}");
        // On NTFS the FAT-only problem does not count.
        clash.fs = Ok(crate::stick::choose::Choice {
            fs: crate::stick::choose::Fs::Ntfs,
            split: vec![],
            repack: vec![],
            reason: "asked for".into(),
        });
        assert_eq!(check_content(&clash, iso, t, 64 << 30), Ok(()));
        // Name problems and a loader that cannot boot are refused on every filesystem.
        let mut names = clash.clone();
        names.name_problem = Some("the ISO's file boot is in the way of the directory boot".into());
        let err = check_content(&names, iso, t, 64 << 30).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the ISO cannot be written as it is: the ISO's file boot is in the way of the directory boot"
        );
        let mut loader = inventory();
        loader.loader_problem = Some(LoaderProblem {
            path: "EFI/BOOT/BOOTX64.EFI".into(),
            what: "subsystem 3, not an EFI application".into(),
        });
        let err = check_content(&loader, iso, t, 64 << 30).unwrap_err();
        assert_eq!(
            err,
            Refusal::Loader { path: "EFI/BOOT/BOOTX64.EFI".into(), what: "subsystem 3, not an EFI application".into() }
        );
        assert_eq!(
            err.to_string(),
            "the ISO's EFI/BOOT/BOOTX64.EFI is not a UEFI loader for x86_64 (subsystem 3, not an EFI application): \
             the stick would not boot under UEFI; write it with --boot bios, or use an intact ISO"
        );
        let mut scratch = inventory();
        scratch.scratch_problem = Some("splitting needs 9.0 GiB of scratch space in /var/tmp".into());
        assert!(matches!(check_content(&scratch, iso, t, 64 << 30), Err(Refusal::Scratch(_))));
        let mut linux = inventory();
        linux.is_windows = false;
        let err = check_content(&linux, iso, t, 64 << 30).unwrap_err();
        assert!(err.to_string().contains("dd if=/isos/win.iso"), "{err}");
    }
}
