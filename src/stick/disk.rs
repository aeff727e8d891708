//! What the target is: a whole-disk block device (read from sysfs) or an image file, and the host facts the
//! safety checks need. Reading happens here; deciding happens in `safety`, on these plain structs.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::sys::mountinfo::{self, MountEntry};

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
    /// usb, loop, nvme, mmc, ata/scsi, virtio, ...
    pub transport: String,
    pub model: String,
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

/// Host state relevant to the checks.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    pub mounts: Vec<MountEntry>,
    /// Kernel name of the disk holding `/` (when it is a block device).
    pub root_disk: Option<String>,
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

/// Resolve a (major, minor) to its sysfs directory under /sys/devices.
fn sysfs_dir(major: u32, minor: u32) -> Option<PathBuf> {
    std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()
}

/// The disk (kernel name) a block device number belongs to: itself for a disk, its parent for a partition.
pub fn disk_of_devnum(major: u32, minor: u32) -> Option<String> {
    let dir = sysfs_dir(major, minor)?;
    let name = dir.file_name()?.to_string_lossy().into_owned();
    if dir.join("partition").exists() {
        Some(dir.parent()?.file_name()?.to_string_lossy().into_owned())
    } else {
        Some(name)
    }
}

fn split_dev(dev: u64) -> (u32, u32) {
    (libc::major(dev), libc::minor(dev))
}

/// Read what sysfs says about a block device.
pub fn block_facts(path: &Path, rdev: u64) -> Result<BlockFacts, DiskError> {
    let (major, minor) = split_dev(rdev);
    let dir = sysfs_dir(major, minor).ok_or(DiskError::NoSysfs { path: path.to_path_buf(), major, minor })?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let is_partition = dir.join("partition").exists();
    let parent_disk = if is_partition {
        dir.parent().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned())
    } else {
        None
    };
    let sectors: u64 = read_trim(dir.join("size")).and_then(|s| s.parse().ok()).unwrap_or(0);
    let dir_str = dir.to_string_lossy();
    let transport = if name.starts_with("loop") {
        "loop"
    } else if dir_str.contains("/usb") {
        "usb"
    } else if name.starts_with("nvme") {
        "nvme"
    } else if name.starts_with("mmcblk") {
        "mmc"
    } else if name.starts_with("vd") || dir_str.contains("/virtio") {
        "virtio"
    } else if name.starts_with("sd") {
        "ata/scsi"
    } else {
        "unknown"
    }
    .to_string();
    let mut devnums = vec![(major, minor)];
    let mut holders = Vec::new();
    if !is_partition {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let p = e.path();
                if p.join("partition").exists()
                    && let Some(d) = read_trim(p.join("dev"))
                    && let Some((a, b)) = d.split_once(':')
                    && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
                {
                    devnums.push((a, b));
                    if let Ok(h) = std::fs::read_dir(p.join("holders")) {
                        holders.extend(h.flatten().map(|x| x.file_name().to_string_lossy().into_owned()));
                    }
                }
            }
        }
        if let Ok(h) = std::fs::read_dir(dir.join("holders")) {
            holders.extend(h.flatten().map(|x| x.file_name().to_string_lossy().into_owned()));
        }
    }
    let model = read_trim(dir.join("device/model"))
        .or_else(|| read_trim(dir.join("device/name")))
        .unwrap_or_else(|| if transport == "loop" { "loop device".into() } else { "unknown".into() });
    Ok(BlockFacts {
        removable: read_trim(dir.join("removable")).as_deref() == Some("1"),
        read_only: read_trim(dir.join("ro")).as_deref() == Some("1"),
        loop_backing: if name.starts_with("loop") { crate::sys::loopdev::backing_path(&name) } else { None },
        name,
        major,
        minor,
        parent_disk,
        size: sectors * 512,
        transport,
        model,
        devnums,
        holders,
    })
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
    let mounts =
        mountinfo::read_self().map_err(|source| DiskError::Stat { path: "/proc/self/mountinfo".into(), source })?;
    let iso_meta = std::fs::metadata(iso).map_err(|source| DiskError::Stat { path: iso.to_path_buf(), source })?;
    let (imaj, imin) = split_dev(iso_meta.dev());
    let root_disk = std::fs::metadata("/").ok().and_then(|m| {
        let (a, b) = split_dev(m.dev());
        disk_of_devnum(a, b)
    });
    let mut mount_disks = Vec::new();
    for m in &mounts {
        if m.major != 0
            && !mount_disks.iter().any(|(d, _)| *d == (m.major, m.minor))
            && let Some(disk) = disk_of_devnum(m.major, m.minor)
        {
            mount_disks.push(((m.major, m.minor), disk));
        }
    }
    Ok(HostFacts {
        mounts,
        root_disk,
        iso_disk: disk_of_devnum(imaj, imin),
        iso_id: (iso_meta.dev(), iso_meta.ino()),
        mount_disks,
    })
}
