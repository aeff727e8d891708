//! What the target is: a whole-disk block device (read from sysfs) or an image file, and the host facts the
//! safety checks need. Reading happens here; deciding happens in `safety`, on these plain structs.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::sys::mountinfo::{self, MountEntry};

/// Where sysfs is on a running system; the readers below take its root as an argument so that fixture trees
/// can stand in for it.
pub const SYSFS: &str = "/sys";

/// A block device as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockFacts {
    /// Kernel name: sdb, nvme0n1, loop3, sdb1.
    pub name: String,
    pub major: u32,
    pub minor: u32,
    /// Set when this is a partition: the kernel name of its disk.
    pub parent_disk: Option<String>,
    pub size: u64,
    pub removable: bool,
    pub read_only: bool,
    /// How the disk is attached, named as lsblk's TRAN column names it where it has a name (usb, sata, ata,
    /// sas, spi, fc, iscsi, sbp, nvme), and woesafe's names for the rest: mmc, virtio, loop, scsi, unknown.
    pub transport: String,
    /// device/model (device/name for MMC cards), or "loop device" / "unknown"; untrusted text.
    pub model: String,
    /// device/vendor ("" when sysfs has none); untrusted text.
    pub vendor: String,
    /// queue/logical_block_size (0 when sysfs has none).
    pub logical_block_size: u32,
    /// (major, minor) of the disk itself and of each of its partitions.
    pub devnums: Vec<(u32, u32)>,
    /// device-mapper or md devices built on top (from sysfs holders/).
    pub holders: Vec<String>,
    /// For loop devices: the backing file, when attached.
    pub loop_backing: Option<PathBuf>,
}

/// What the user named as the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetFacts {
    Block(BlockFacts),
    Image { path: PathBuf, exists: bool, size: u64, dev: u64, ino: u64 },
}

impl TargetFacts {
    /// The logical sector size the stick is laid out in: the disk's (512 when sysfs does not say), 512 for an
    /// image file.
    pub fn sector_size(&self) -> u64 {
        match self {
            TargetFacts::Block(b) if b.logical_block_size != 0 => u64::from(b.logical_block_size),
            _ => 512,
        }
    }
}

/// Host state relevant to the checks.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// The mount table; a mount whose device number is an anonymous one (btrfs) carries its source's instead,
    /// when the source is a block device.
    pub mounts: Vec<MountEntry>,
    /// Kernel name of the disk (or device-mapper/md device) holding `/` (when it is a block device).
    pub root_disk: Option<String>,
    /// Every whole disk under `/`, device-mapper (LVM, LUKS) and md stacks followed down through slaves/.
    pub root_disks: Vec<String>,
    /// Kernel name of the disk holding the ISO file.
    pub iso_disk: Option<String>,
    /// (st_dev, st_ino) of the ISO file.
    pub iso_id: (u64, u64),
    /// Map from (major, minor) of mounted block devices to their disk's kernel name.
    pub mount_disks: Vec<((u32, u32), String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot read {path}: {source}")]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither a block device nor a regular image file")]
    NotDiskOrImage { path: PathBuf },
    #[error("{path}: the directory for the image file does not exist")]
    NoParentDir { path: PathBuf },
    #[error("block device {path} ({major}:{minor}) is not described in /sys/dev/block")]
    NoSysfs { path: PathBuf, major: u32, minor: u32 },
}

fn read_trim(p: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// A device's own text (model, vendor): bytes that are not UTF-8 become U+FFFD, padding goes; None when the
/// attribute is missing or blank.
fn read_label(p: impl AsRef<Path>) -> Option<String> {
    let bytes = std::fs::read(p).ok()?;
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// "8:17" into (8, 17).
pub fn parse_devnum(text: &str) -> Option<(u32, u32)> {
    let (a, b) = text.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The kernel name of a sysfs device directory (its last component).
pub fn dir_name(dir: &Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Resolve a (major, minor) to its sysfs directory under SYS/devices.
fn sysfs_dir_in(sys: &Path, major: u32, minor: u32) -> Option<PathBuf> {
    std::fs::canonicalize(sys.join(format!("dev/block/{major}:{minor}"))).ok()
}

/// The disk (kernel name) a block device number belongs to: itself for a disk, its parent for a partition.
pub fn disk_of_devnum(major: u32, minor: u32) -> Option<String> {
    disk_of_devnum_in(Path::new(SYSFS), major, minor)
}

/// `disk_of_devnum` with sysfs at `sys`.
pub fn disk_of_devnum_in(sys: &Path, major: u32, minor: u32) -> Option<String> {
    disk_of_dir(&sysfs_dir_in(sys, major, minor)?)
}

fn disk_of_dir(dir: &Path) -> Option<String> {
    if dir.join("partition").exists() { Some(dir_name(dir.parent()?)) } else { Some(dir_name(dir)) }
}

/// The names listed in a sysfs device directory's holders/ or slaves/, sorted.
pub fn stacked_names(dir: &Path, which: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir.join(which))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Every whole disk under the block device (major, minor): the disk itself or the partition's disk, and for a
/// device-mapper or md device (LVM, LUKS, RAID) the disks its slaves/ lead down to, however deep.
pub fn disks_under_in(sys: &Path, major: u32, minor: u32) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(dir) = sysfs_dir_in(sys, major, minor) {
        collect_disks_under(&dir, 0, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

fn collect_disks_under(dir: &Path, depth: u32, out: &mut Vec<String>) {
    // A partition counts as its disk (which may itself be built on others: a partitioned md array).
    let whole = match dir.parent() {
        Some(parent) if dir.join("partition").exists() => parent,
        _ => dir,
    };
    let slaves = stacked_names(whole, "slaves");
    // Stacks are a few levels deep (LVM on LUKS on a partition); the bound only guards against a loop.
    if slaves.is_empty() || depth > 16 {
        out.push(dir_name(whole));
        return;
    }
    for s in slaves {
        if let Ok(next) = std::fs::canonicalize(whole.join("slaves").join(&s)) {
            collect_disks_under(&next, depth + 1, out);
        }
    }
}

/// The transport of the disk in sysfs directory `dir` (canonical), decided the way lsblk decides its TRAN
/// column: a SCSI disk by its host's transport class (SYS/class/{fc,sas,iscsi,spi}_host/hostH), a USB bus on its
/// path, or its host driver's proc_name (ahci and sata_* drivers: sata; other libata drivers: ata); other disks
/// by their kernel name (nvme, mmcblk, vd) or, for virtio, the bus on the path.
pub fn transport_in(sys: &Path, dir: &Path, name: &str) -> String {
    let on_path = |bus: &str| {
        dir.components().any(|c| {
            let c = c.as_os_str().to_string_lossy();
            c.strip_prefix(bus).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    if name.starts_with("loop") {
        return "loop".into();
    }
    // A SCSI disk's device/ is its SCSI device, named host:channel:target:lun.
    let scsi_host = std::fs::canonicalize(dir.join("device")).ok().and_then(|d| {
        let hctl = dir_name(&d);
        let parts: Vec<&str> = hctl.split(':').collect();
        (parts.len() == 4 && parts.iter().all(|p| p.parse::<u32>().is_ok())).then(|| (d, parts[0].to_string()))
    });
    if let Some((scsi_dev, host)) = scsi_host {
        let host_is = |class: &str| sys.join(format!("class/{class}_host/host{host}")).is_dir();
        let proc_name = read_trim(sys.join(format!("class/scsi_host/host{host}/proc_name"))).unwrap_or_default();
        return if host_is("spi") {
            "spi"
        } else if host_is("fc") {
            "fc"
        } else if host_is("sas") || scsi_dev.join("sas_device").exists() {
            "sas"
        } else if scsi_dev.join("ieee1394_id").exists() {
            "sbp"
        } else if host_is("iscsi") {
            "iscsi"
        } else if on_path("usb") {
            "usb"
        } else if proc_name.starts_with("ahci") || proc_name.starts_with("sata") {
            "sata"
        } else if proc_name.contains("ata") {
            "ata"
        } else if on_path("virtio") {
            "virtio"
        } else {
            "scsi"
        }
        .into();
    }
    if on_path("usb") {
        "usb"
    } else if name.starts_with("nvme") {
        "nvme"
    } else if name.starts_with("mmcblk") {
        "mmc"
    } else if name.starts_with("vd") || on_path("virtio") {
        "virtio"
    } else {
        "unknown"
    }
    .into()
}

fn split_dev(dev: u64) -> (u32, u32) {
    (libc::major(dev), libc::minor(dev))
}

/// Read what sysfs says about a block device.
pub fn block_facts(path: &Path, rdev: u64) -> Result<BlockFacts, DiskError> {
    let (major, minor) = split_dev(rdev);
    block_facts_in(Path::new(SYSFS), path, major, minor)
}

/// `block_facts` with sysfs at `sys`, for the device number (major, minor) that `path` names.
pub fn block_facts_in(sys: &Path, path: &Path, major: u32, minor: u32) -> Result<BlockFacts, DiskError> {
    let dir = sysfs_dir_in(sys, major, minor).ok_or(DiskError::NoSysfs { path: path.to_path_buf(), major, minor })?;
    Ok(facts_of_dir(sys, &dir, major, minor))
}

/// The facts of the block device whose canonical sysfs directory is `dir` (a disk or a partition), with sysfs at
/// `sys`: what `woesafe write` checks and `woesafe list` shows.
pub fn facts_of_dir(sys: &Path, dir: &Path, major: u32, minor: u32) -> BlockFacts {
    let name = dir_name(dir);
    let is_partition = dir.join("partition").exists();
    let parent_disk = if is_partition { dir.parent().map(dir_name) } else { None };
    let sectors: u64 = read_trim(dir.join("size")).and_then(|s| s.parse().ok()).unwrap_or(0);
    let transport = transport_in(sys, dir, &name);
    let mut devnums = vec![(major, minor)];
    let mut holders = Vec::new();
    if !is_partition {
        let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.join("partition").exists()).collect())
            .unwrap_or_default();
        parts.sort();
        for p in parts {
            if let Some(d) = read_trim(p.join("dev")).as_deref().and_then(parse_devnum) {
                devnums.push(d);
                holders.extend(stacked_names(&p, "holders"));
            }
        }
        holders.extend(stacked_names(dir, "holders"));
    }
    let model = read_label(dir.join("device/model"))
        .or_else(|| read_label(dir.join("device/name")))
        .unwrap_or_else(|| if transport == "loop" { "loop device".into() } else { "unknown".into() });
    BlockFacts {
        removable: read_trim(dir.join("removable")).as_deref() == Some("1"),
        read_only: read_trim(dir.join("ro")).as_deref() == Some("1"),
        loop_backing: if name.starts_with("loop") { loop_backing(dir) } else { None },
        vendor: read_label(dir.join("device/vendor")).unwrap_or_default(),
        logical_block_size: read_trim(dir.join("queue/logical_block_size")).and_then(|s| s.parse().ok()).unwrap_or(0),
        name,
        major,
        minor,
        parent_disk,
        // A size past 16 EiB is no disk: taken as 0 (refused as too small).
        size: sectors.checked_mul(512).unwrap_or(0),
        transport,
        model,
        devnums,
        holders,
    }
}

/// A loop device's backing file, exactly (its name need not be UTF-8), or None when nothing is attached.
fn loop_backing(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let mut bytes = std::fs::read(dir.join("loop/backing_file")).ok()?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

/// Look at the target path the user gave.
pub fn target_facts(path: &Path) -> Result<TargetFacts, DiskError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_block_device() => Ok(TargetFacts::Block(block_facts(path, meta.rdev())?)),
        Ok(meta) if meta.is_file() => Ok(TargetFacts::Image {
            path: path.to_path_buf(),
            exists: true,
            size: meta.len(),
            dev: meta.dev(),
            ino: meta.ino(),
        }),
        Ok(_) => Err(DiskError::NotDiskOrImage { path: path.to_path_buf() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(DiskError::NoParentDir { path: path.to_path_buf() });
            }
            Ok(TargetFacts::Image { path: path.to_path_buf(), exists: false, size: 0, dev: 0, ino: 0 })
        }
        Err(source) => Err(DiskError::Stat { path: path.to_path_buf(), source }),
    }
}

/// Read the host facts: mount table, the disk holding /, the disk holding the ISO.
pub fn host_facts(iso: &Path) -> Result<HostFacts, DiskError> {
    let mut host = system_host_facts()?;
    let iso_meta = std::fs::metadata(iso).map_err(|source| DiskError::Stat { path: iso.to_path_buf(), source })?;
    let (imaj, imin) = split_dev(iso_meta.dev());
    host.iso_disk = disk_of_devnum(imaj, imin);
    host.iso_id = (iso_meta.dev(), iso_meta.ino());
    Ok(host)
}

/// The host facts that need no ISO (mount table, the disks under /), read from this system.
pub fn system_host_facts() -> Result<HostFacts, DiskError> {
    let mut mounts =
        mountinfo::read_self().map_err(|source| DiskError::Stat { path: "/proc/self/mountinfo".into(), source })?;
    source_devnums(&mut mounts, |source| {
        let meta = std::fs::metadata(source).ok()?;
        meta.file_type().is_block_device().then(|| split_dev(meta.rdev()))
    });
    let root_dev = std::fs::metadata("/").ok().map(|m| split_dev(m.dev()));
    Ok(host_facts_in(Path::new(SYSFS), mounts, root_dev))
}

/// Mounts on an anonymous device number (major 0: btrfs, and anything else that does not show its block device
/// there) whose source is a block device get that device's number (`devnum_of` looks the source up), so that
/// they are found on their disk.
pub fn source_devnums(mounts: &mut [MountEntry], devnum_of: impl Fn(&Path) -> Option<(u32, u32)>) {
    for m in mounts.iter_mut().filter(|m| m.major == 0 && m.source.starts_with("/dev/")) {
        if let Some((a, b)) = devnum_of(Path::new(&m.source)) {
            (m.major, m.minor) = (a, b);
        }
    }
}

/// The host facts (no ISO) from a mount table and the device number of `/`, with sysfs at `sys`.
pub fn host_facts_in(sys: &Path, mounts: Vec<MountEntry>, root_dev: Option<(u32, u32)>) -> HostFacts {
    // `/` on an anonymous device number (btrfs): the mount table's entry for / names its device.
    let root_dev = root_dev.filter(|(a, _)| *a != 0).or_else(|| {
        mounts.iter().rev().find(|m| m.mount_point == Path::new("/") && m.major != 0).map(|m| (m.major, m.minor))
    });
    let mut mount_disks = Vec::new();
    for m in &mounts {
        if m.major != 0
            && !mount_disks.iter().any(|(d, _)| *d == (m.major, m.minor))
            && let Some(disk) = disk_of_devnum_in(sys, m.major, m.minor)
        {
            mount_disks.push(((m.major, m.minor), disk));
        }
    }
    HostFacts {
        root_disk: root_dev.and_then(|(a, b)| disk_of_devnum_in(sys, a, b)),
        root_disks: root_dev.map(|(a, b)| disks_under_in(sys, a, b)).unwrap_or_default(),
        mounts,
        iso_disk: None,
        iso_id: (0, 0),
        mount_disks,
    }
}
