//! The disks one could write to, read from sysfs the way lsblk reads it (no udev), each with the refusal
//! `woesafe write` would give it: the same facts (`disk::facts_of_dir`) and the same checks
//! (`safety::check_disk`), so that `woesafe list` and `woesafe write` never disagree.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::disk::{self, BlockFacts, HostFacts};
use super::safety;

/// Mount points that make a disk part of the running system.
const SYSTEM_MOUNTS: &[&str] = &["/", "/boot", "/boot/efi", "/efi", "/usr", "/var", "/home"];

/// How deep device-mapper/md stacks are followed (LVM on LUKS on a partition is three); a bound against loops.
const MAX_DEPTH: u32 = 16;

/// A partition of a disk, or a device-mapper/md device built on one (or on the disk itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Kernel name: sdb1, dm-0, md127.
    pub name: String,
    /// /dev/sdb1, or /dev/mapper/NAME for a device-mapper device.
    pub path: PathBuf,
    /// lsblk's TYPE: part, lvm, crypt, dm, raid1 (md's level), md.
    pub kind: String,
    pub size: u64,
    pub read_only: bool,
    /// Where it is mounted in this mount namespace.
    pub mounts: Vec<PathBuf>,
    /// In use as swap.
    pub swap: bool,
    /// Devices built on this one.
    pub children: Vec<Node>,
}

/// A whole disk and what woesafe would make of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The facts `woesafe write` reads for this disk.
    pub facts: BlockFacts,
    /// Where the whole disk (not a partition) is mounted.
    pub mounts: Vec<PathBuf>,
    /// The whole disk is in use as swap.
    pub swap: bool,
    /// Partitions, then devices built on the whole disk.
    pub children: Vec<Node>,
    /// `/` lives on this disk (directly, or through LVM, LUKS, md).
    pub holds_root: bool,
    /// The running system uses it: `/`, /boot, /boot/efi, /efi, /usr, /var or /home is on it, or swap.
    pub system: bool,
    /// Why `woesafe write ISO /dev/NAME` (without --force) would refuse this disk, in its words; None when it
    /// would take it (the ISO's own checks still follow).
    pub refusal: Option<String>,
}

impl Disk {
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/{}", self.facts.name))
    }

    /// Shown without --all: removable disks and USB disks.
    pub fn shown_by_default(&self) -> bool {
        self.facts.removable || self.facts.transport == "usb"
    }

    /// Every mount point on the disk, its partitions and what is built on them.
    pub fn all_mounts(&self) -> Vec<&Path> {
        fn walk<'a>(n: &'a Node, out: &mut Vec<&'a Path>) {
            out.extend(n.mounts.iter().map(PathBuf::as_path));
            n.children.iter().for_each(|c| walk(c, out));
        }
        let mut out: Vec<&Path> = self.mounts.iter().map(PathBuf::as_path).collect();
        self.children.iter().for_each(|c| walk(c, &mut out));
        out
    }

    fn any_swap(&self) -> bool {
        fn walk(n: &Node) -> bool {
            n.swap || n.children.iter().any(walk)
        }
        self.swap || self.children.iter().any(walk)
    }
}

/// What the host contributes beyond sysfs: the facts `woesafe write` checks against, and the devices in use as
/// swap (from /proc/swaps), by device number.
#[derive(Debug, Clone, Default)]
pub struct Host {
    pub facts: HostFacts,
    pub swaps: Vec<(u32, u32)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("cannot list the block devices in {path}: {source}")]
    ReadSysBlock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Host(#[from] disk::DiskError),
}

/// The disks of this system (sysfs at /sys, this process's mount table, /proc/swaps).
pub fn scan_system() -> Result<Vec<Disk>, ListError> {
    let facts = disk::system_host_facts()?;
    let swaps = parse_swaps(&std::fs::read("/proc/swaps").unwrap_or_default())
        .iter()
        .filter_map(|p| {
            let meta = std::fs::metadata(p).ok()?;
            meta.file_type().is_block_device().then(|| (libc::major(meta.rdev()), libc::minor(meta.rdev())))
        })
        .collect();
    scan(Path::new(disk::SYSFS), &Host { facts, swaps })
}

/// The block devices in use as swap: the first field of each /proc/swaps line after the header whose type is
/// "partition" (octal escapes decoded: the name need not be UTF-8).
pub fn parse_swaps(text: &[u8]) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    text.split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split(|&b| b == b' ' || b == b'\t').filter(|f| !f.is_empty());
            let name = fields.next()?;
            (fields.next()? == b"partition")
                .then(|| PathBuf::from(std::ffi::OsString::from_vec(crate::sys::mountinfo::unescape(name))))
        })
        .collect()
}

/// Every whole disk under `sys`/block, sorted by name: the disks woesafe could be pointed at. Left out:
/// devices with nothing in them (size 0: an unattached loop device, a card reader without a card), optical
/// drives, hidden devices (an NVMe multipath controller's own path to a namespace), and device-mapper/md
/// devices (they appear under the disks they are built on).
pub fn scan(sys: &Path, host: &Host) -> Result<Vec<Disk>, ListError> {
    let block = sys.join("block");
    let entries =
        std::fs::read_dir(&block).map_err(|source| ListError::ReadSysBlock { path: block.clone(), source })?;
    let mut names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort_by_key(|a| natural_key(a));
    let mut out = Vec::new();
    for name in names {
        // A device may go between read_dir and here (another program detaching a loop device): skip it.
        let Ok(dir) = std::fs::canonicalize(block.join(&name)) else { continue };
        let Some((major, minor)) = read(&dir.join("dev")).as_deref().and_then(disk::parse_devnum) else { continue };
        if !disk::stacked_names(&dir, "slaves").is_empty()
            || read(&dir.join("hidden")).as_deref() == Some("1")
            || read(&dir.join("device/type")).as_deref() == Some("5")
            || read(&dir.join("size")).as_deref().is_none_or(|s| s == "0")
        {
            continue;
        }
        let facts = disk::facts_of_dir(sys, &dir, major, minor);
        out.push(assess(facts, &dir, host));
    }
    Ok(out)
}

/// "sdb10" after "sdb9", "loop10" after "loop2".
fn natural_key(name: &str) -> (String, u64, String) {
    let head = name.trim_end_matches(|c: char| c.is_ascii_digit());
    (head.to_string(), name[head.len()..].parse().unwrap_or(0), name.to_string())
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn mounts_of(devnum: (u32, u32), host: &Host) -> Vec<PathBuf> {
    host.facts.mounts.iter().filter(|m| (m.major, m.minor) == devnum).map(|m| m.mount_point.clone()).collect()
}

/// A disk's tree, its system roles and the refusal `woesafe write` would give (decided on the facts).
fn assess(facts: BlockFacts, dir: &Path, host: &Host) -> Disk {
    let devnum = (facts.major, facts.minor);
    let children = built_on(dir, host, 0);
    let mut d = Disk {
        mounts: mounts_of(devnum, host),
        swap: host.swaps.contains(&devnum),
        children,
        holds_root: host.facts.root_disk.as_deref() == Some(facts.name.as_str())
            || host.facts.root_disks.contains(&facts.name),
        system: false,
        refusal: None,
        facts,
    };
    d.system =
        d.holds_root || d.any_swap() || d.all_mounts().iter().any(|m| SYSTEM_MOUNTS.iter().any(|s| Path::new(s) == *m));
    d.refusal = refusal(&d, &host.facts);
    d
}

/// What `woesafe write` would say: the first refusal of its checks; for a disk that passes them but is in use
/// as swap (the kernel holds it exclusively), the "busy" of its exclusive open.
pub fn refusal(d: &Disk, host: &HostFacts) -> Option<String> {
    match safety::check_disk(&d.facts, host, None, false) {
        Err(r) => Some(r.to_string()),
        Ok(()) if d.any_swap() => {
            Some(format!("busy: {} is in use (mounted, or held by another program)", crate::cli::term::path(&d.path())))
        }
        Ok(()) => None,
    }
}

/// What is built on the device in `dir`: its partitions in their order (a whole disk, or a partitioned md or
/// device-mapper device), then the devices holding it.
fn built_on(dir: &Path, host: &Host, depth: u32) -> Vec<Node> {
    if depth >= MAX_DEPTH {
        return Vec::new();
    }
    let mut parts: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter_map(|p| Some((read(&p.join("partition"))?.parse().ok()?, p)))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    let mut out: Vec<Node> = parts.iter().filter_map(|(_, p)| node(p, host, depth + 1)).collect();
    out.extend(
        disk::stacked_names(dir, "holders")
            .iter()
            .filter_map(|h| node(&std::fs::canonicalize(dir.join("holders").join(h)).ok()?, host, depth + 1)),
    );
    out
}

fn node(dir: &Path, host: &Host, depth: u32) -> Option<Node> {
    let name = disk::dir_name(dir);
    let devnum = read(&dir.join("dev")).as_deref().and_then(disk::parse_devnum)?;
    let dm_name = read(&dir.join("dm/name")).filter(|n| !n.is_empty());
    let kind = if dir.join("partition").exists() {
        "part".to_string()
    } else if dir.join("dm").is_dir() {
        let uuid = read(&dir.join("dm/uuid")).unwrap_or_default();
        if uuid.starts_with("LVM-") {
            "lvm"
        } else if uuid.starts_with("CRYPT-") {
            "crypt"
        } else {
            "dm"
        }
        .to_string()
    } else if let Some(level) = read(&dir.join("md/level")).filter(|l| !l.is_empty()) {
        level
    } else {
        "md".to_string()
    };
    Some(Node {
        path: match &dm_name {
            Some(n) => PathBuf::from(format!("/dev/mapper/{n}")),
            None => PathBuf::from(format!("/dev/{name}")),
        },
        name,
        kind,
        size: read(&dir.join("size")).and_then(|s| s.parse::<u64>().ok()).and_then(|n| n.checked_mul(512)).unwrap_or(0),
        read_only: read(&dir.join("ro")).as_deref() == Some("1"),
        mounts: mounts_of(devnum, host),
        swap: host.swaps.contains(&devnum),
        children: built_on(dir, host, depth),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stick::disk::TargetFacts;
    use crate::sys::mountinfo::parse;
    use std::os::unix::fs::symlink;

    /// A sysfs tree in a temporary directory, laid out as the kernel lays it out: devices under devices/, and
    /// block/NAME, dev/block/MAJ:MIN, holders/ and slaves/ as relative symbolic links.
    struct Sys {
        dir: tempfile::TempDir,
    }

    impl Sys {
        fn new() -> Sys {
            let s = Sys { dir: tempfile::tempdir().unwrap() };
            for d in ["block", "dev/block", "class/scsi_host"] {
                std::fs::create_dir_all(s.root().join(d)).unwrap();
            }
            s
        }

        fn root(&self) -> &Path {
            self.dir.path()
        }

        fn write(&self, rel: &str, text: &str) {
            let p = self.root().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }

        /// A relative link at `from` (under the root) to `to` (under the root).
        fn link(&self, from: &str, to: &str) {
            let from_p = self.root().join(from);
            std::fs::create_dir_all(from_p.parent().unwrap()).unwrap();
            let depth = from.matches('/').count();
            symlink(format!("{}{to}", "../".repeat(depth)), from_p).unwrap();
        }

        /// A whole disk at devices/`devpath`/block/`name`; `attrs` are (file, content) under it.
        fn disk(&self, devpath: &str, name: &str, devnum: &str, sectors: u64, attrs: &[(&str, &str)]) -> String {
            let rel = format!("devices/{devpath}/block/{name}");
            self.write(&format!("{rel}/dev"), &format!("{devnum}\n"));
            self.write(&format!("{rel}/size"), &format!("{sectors}\n"));
            self.write(&format!("{rel}/removable"), "0\n");
            self.write(&format!("{rel}/ro"), "0\n");
            self.write(&format!("{rel}/queue/logical_block_size"), "512\n");
            std::fs::create_dir_all(self.root().join(format!("{rel}/holders"))).unwrap();
            std::fs::create_dir_all(self.root().join(format!("{rel}/slaves"))).unwrap();
            let virtual_dev = devpath.starts_with("virtual");
            for (f, t) in attrs {
                match f.strip_prefix("device/") {
                    // The device's own attributes live in its directory, which device/ links to.
                    Some(attr) if !virtual_dev => self.write(&format!("devices/{devpath}/{attr}"), t),
                    _ => self.write(&format!("{rel}/{f}"), t),
                }
            }
            if !virtual_dev {
                self.link(&format!("{rel}/device"), &format!("devices/{devpath}"));
            }
            self.link(&format!("block/{name}"), &rel);
            self.link(&format!("dev/block/{devnum}"), &rel);
            rel
        }

        fn partition(&self, disk_rel: &str, name: &str, number: u32, devnum: &str, sectors: u64) -> String {
            let rel = format!("{disk_rel}/{name}");
            self.write(&format!("{rel}/dev"), &format!("{devnum}\n"));
            self.write(&format!("{rel}/size"), &format!("{sectors}\n"));
            self.write(&format!("{rel}/partition"), &format!("{number}\n"));
            self.write(&format!("{rel}/ro"), "0\n");
            std::fs::create_dir_all(self.root().join(format!("{rel}/holders"))).unwrap();
            self.link(&format!("dev/block/{devnum}"), &rel);
            rel
        }

        /// A device-mapper device on `under` (sysfs paths of partitions or disks), with holders/ and slaves/
        /// links both ways.
        fn dm(&self, name: &str, devnum: &str, dm_name: &str, uuid: &str, under: &[&str]) -> String {
            let rel = self.disk("virtual", name, devnum, 1 << 20, &[("dm/name", dm_name), ("dm/uuid", uuid)]);
            for u in under {
                self.link(&format!("{u}/holders/{name}"), &rel);
                let uname = u.rsplit('/').next().unwrap();
                self.link(&format!("{rel}/slaves/{uname}"), u);
            }
            rel
        }

        fn scsi_host(&self, host: u32, proc_name: &str) {
            self.write(&format!("class/scsi_host/host{host}/proc_name"), &format!("{proc_name}\n"));
        }
    }

    const USB: &str = "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0";
    const USB_SSD: &str = "pci0000:00/0000:00:14.0/usb2/2-2/2-2:1.0/host7/target7:0:0/7:0:0:0";
    const USB_READER: &str = "pci0000:00/0000:00:14.0/usb2/2-3/2-3:1.0/host8/target8:0:0/8:0:0:0";
    const NVME: &str = "pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0";
    const VIRTIO: &str = "pci0000:00/0000:00:02.0/virtio1";
    const SATA: &str = "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0";

    /// The machine of the tests: a USB stick (removable, mounted), a USB SSD (removable=0), an NVMe disk with
    /// / on it, a virtio disk, a SATA disk under LUKS + LVM that holds /home, a loop device without partitions,
    /// a read-only removable disk, an unattached loop device and an optical drive.
    fn machine() -> (Sys, Host) {
        let s = Sys::new();
        s.scsi_host(6, "usb-storage");
        s.scsi_host(7, "uas");
        s.scsi_host(0, "ahci");
        let sdb = s.disk(
            USB,
            "sdb",
            "8:16",
            30_031_872,
            &[("removable", "1\n"), ("device/model", "Cruzer Blade    \n"), ("device/vendor", "SanDisk \n")],
        );
        s.partition(&sdb, "sdb1", 1, "8:17", 30_029_824);
        s.disk(USB_SSD, "sdc", "8:32", 1_000_215_216, &[("device/model", "Portable SSD\x1b[2J\n")]);
        let nvme = s.disk(NVME, "nvme0n1", "259:0", 1_000_215_216, &[("device/model", "Samsung SSD 980\n")]);
        s.partition(&nvme, "nvme0n1p1", 1, "259:1", 1_048_576);
        s.partition(&nvme, "nvme0n1p2", 2, "259:2", 999_000_000);
        s.disk(VIRTIO, "vda", "254:0", 16 << 21, &[("device/vendor", "0x1af4\n")]);
        let sda = s.disk(SATA, "sda", "8:0", 3_907_029_168, &[("device/model", "WDC WD20EZRZ\n")]);
        let sda1 = s.partition(&sda, "sda1", 1, "8:1", 3_907_000_000);
        let crypt = s.dm("dm-0", "253:0", "luks-home", "CRYPT-LUKS2-1234-luks-home", &[&sda1]);
        s.dm("dm-1", "253:1", "vg-home", "LVM-abcdef", &[&crypt]);
        s.disk("virtual", "loop3", "7:3", 2 << 20, &[("loop/backing_file", "/var/tmp/stick.img\n")]);
        s.disk(
            USB_READER,
            "sdd",
            "8:48",
            7_000_000,
            &[("removable", "1\n"), ("ro", "1\n"), ("device/model", "SD Card\n")],
        );
        s.disk("virtual", "loop0", "7:0", 0, &[]);
        s.disk(
            "pci0000:00/0000:00:17.0/ata2/host1/target1:0:0/1:0:0:0",
            "sr0",
            "11:0",
            2_097_152,
            &[("removable", "1\n"), ("device/type", "5\n")],
        );
        let mounts = parse(
            "22 1 259:2 / / rw - ext4 /dev/nvme0n1p2 rw\n\
             23 22 259:1 / /boot/efi rw - vfat /dev/nvme0n1p1 rw\n\
             24 22 253:1 / /home rw - ext4 /dev/mapper/vg-home rw\n\
             25 22 8:17 / /media/user/STICK\\040ONE rw - vfat /dev/sdb1 rw\n",
        );
        let facts = disk::host_facts_in(s.root(), mounts, Some((259, 2)));
        (s, Host { facts, swaps: vec![] })
    }

    fn find<'a>(disks: &'a [Disk], name: &str) -> &'a Disk {
        disks.iter().find(|d| d.facts.name == name).unwrap_or_else(|| panic!("{name} not listed: {disks:#?}"))
    }

    /// The refusal `woesafe write` gives the same disk (its check, with an ISO elsewhere).
    fn write_says(s: &Sys, host: &Host, name: &str) -> Option<String> {
        let d = std::fs::canonicalize(s.root().join("block").join(name)).unwrap();
        let (a, b) = disk::parse_devnum(&std::fs::read_to_string(d.join("dev")).unwrap()).unwrap();
        let facts = disk::block_facts_in(s.root(), Path::new("/dev/x"), a, b).unwrap();
        safety::check_target(&TargetFacts::Block(facts), &host.facts, &[], Path::new("/isos/win.iso"), false)
            .err()
            .map(|r| r.to_string())
    }

    #[test]
    fn lists_whole_disks_with_their_facts() {
        let (s, host) = machine();
        let disks = scan(s.root(), &host).unwrap();
        let names: Vec<&str> = disks.iter().map(|d| d.facts.name.as_str()).collect();
        assert_eq!(names, ["loop3", "nvme0n1", "sda", "sdb", "sdc", "sdd", "vda"], "no dm, no empty loop, no sr0");
        let sdb = find(&disks, "sdb");
        assert_eq!(
            (sdb.facts.model.as_str(), sdb.facts.vendor.as_str(), sdb.facts.transport.as_str()),
            ("Cruzer Blade", "SanDisk", "usb")
        );
        assert_eq!((sdb.facts.size, sdb.facts.removable, sdb.facts.read_only), (30_031_872 * 512, true, false));
        assert_eq!(sdb.facts.logical_block_size, 512);
        assert_eq!(sdb.children.len(), 1);
        assert_eq!(sdb.children[0].mounts, [PathBuf::from("/media/user/STICK ONE")]);
        assert_eq!(sdb.all_mounts(), [Path::new("/media/user/STICK ONE")]);
        assert!(sdb.shown_by_default() && !sdb.system && !sdb.holds_root);
        assert_eq!(find(&disks, "nvme0n1").facts.transport, "nvme");
        assert_eq!(find(&disks, "vda").facts.transport, "virtio");
        assert_eq!(find(&disks, "vda").facts.vendor, "0x1af4");
        assert_eq!(find(&disks, "sda").facts.transport, "sata");
        assert_eq!(find(&disks, "loop3").facts.transport, "loop");
        assert_eq!(find(&disks, "loop3").facts.loop_backing, Some("/var/tmp/stick.img".into()));
        let sdc = find(&disks, "sdc");
        assert_eq!((sdc.facts.transport.as_str(), sdc.facts.removable), ("usb", false));
        assert_eq!(sdc.facts.model, "Portable SSD\x1b[2J", "kept as it is: escaped where it is shown");
        let shown: Vec<&str> = disks.iter().filter(|d| d.shown_by_default()).map(|d| d.facts.name.as_str()).collect();
        assert_eq!(shown, ["sdb", "sdc", "sdd"], "removable or USB only");
    }

    #[test]
    fn refusals_are_the_ones_write_gives() {
        let (s, host) = machine();
        let disks = scan(s.root(), &host).unwrap();
        for d in &disks {
            assert_eq!(d.refusal, write_says(&s, &host, &d.facts.name), "{}", d.facts.name);
        }
        let said = |n: &str| find(&disks, n).refusal.clone().unwrap_or_default();
        assert!(said("sdb").starts_with("/dev/sdb has mounted filesystems: /media/user/STICK ONE"), "{}", said("sdb"));
        assert!(said("sdc").starts_with("/dev/sdc (Portable SSD"), "{}", said("sdc"));
        assert!(said("sdc").contains("is not removable: a fixed disk"), "a USB SSD saying removable=0 needs --force");
        assert_eq!(
            said("nvme0n1"),
            "/dev/nvme0n1 holds the running system's root filesystem (/); refusing to overwrite it"
        );
        assert_eq!(
            said("sdd"),
            "/dev/sdd is read-only (write-protect switch, or `blockdev --setro`); make it writable first"
        );
        assert!(said("vda").contains("is not removable: a fixed disk"), "{}", said("vda"));
        assert!(said("vda").ends_with("if you really mean this disk, add --force"), "{}", said("vda"));
        assert!(said("vda").starts_with("/dev/vda (unknown, virtio)"), "{}", said("vda"));
        assert_eq!(said("sda"), "/dev/sda is in use by dm-0; stop using it (e.g. `dmsetup remove`) first");
        assert_eq!(find(&disks, "loop3").refusal, None);
    }

    #[test]
    fn stacks_are_followed_to_their_mounts() {
        let (s, host) = machine();
        let disks = scan(s.root(), &host).unwrap();
        let sda = find(&disks, "sda");
        let crypt = &sda.children[0].children[0];
        assert_eq!((crypt.name.as_str(), crypt.kind.as_str()), ("dm-0", "crypt"));
        assert_eq!(crypt.path, Path::new("/dev/mapper/luks-home"));
        let lv = &crypt.children[0];
        assert_eq!((lv.name.as_str(), lv.kind.as_str()), ("dm-1", "lvm"));
        assert_eq!(lv.mounts, [PathBuf::from("/home")]);
        assert!(sda.system && !sda.holds_root, "/home on it, / not");
        let nvme = find(&disks, "nvme0n1");
        assert!(nvme.holds_root && nvme.system);
        assert_eq!(nvme.all_mounts(), [Path::new("/boot/efi"), Path::new("/")]);
    }

    /// `/` on LVM on LUKS on a partition: the disk at the bottom holds it, and write refuses it as the root disk
    /// (not merely as "in use by dm-0", which would suggest removing the root volume).
    #[test]
    fn root_on_lvm_on_luks_is_traced_to_its_disk() {
        let s = Sys::new();
        s.scsi_host(0, "ahci");
        let sda = s.disk(SATA, "sda", "8:0", 1 << 30, &[]);
        let sda2 = s.partition(&sda, "sda2", 2, "8:2", 1 << 29);
        let crypt = s.dm("dm-0", "253:0", "luks-root", "CRYPT-LUKS2-x", &[&sda2]);
        s.dm("dm-1", "253:1", "vg-root", "LVM-x", &[&crypt]);
        s.disk(USB, "sdb", "8:16", 1 << 24, &[("removable", "1\n")]);
        let mounts = parse("22 1 253:1 / / rw - ext4 /dev/mapper/vg-root rw\n");
        let facts = disk::host_facts_in(s.root(), mounts, Some((253, 1)));
        assert_eq!(facts.root_disk.as_deref(), Some("dm-1"));
        assert_eq!(facts.root_disks, ["sda"]);
        let host = Host { facts, swaps: vec![] };
        let disks = scan(s.root(), &host).unwrap();
        let d = find(&disks, "sda");
        assert!(d.holds_root && d.system);
        assert_eq!(
            d.refusal.as_deref(),
            Some("/dev/sda holds the running system's root filesystem (/); refusing to overwrite it")
        );
        assert_eq!(d.refusal, write_says(&s, &host, "sda"));
        assert_eq!(d.all_mounts(), [Path::new("/")]);
        assert_eq!(find(&disks, "sdb").refusal, None);
    }

    /// `/` on a partition of an md RAID1 array: both member disks hold it; the array itself is not listed.
    #[test]
    fn root_on_a_partitioned_raid_holds_both_disks() {
        let s = Sys::new();
        s.scsi_host(0, "ahci");
        let sda = s.disk(SATA, "sda", "8:0", 1 << 30, &[]);
        let sdb = s.disk("pci0000:00/0000:00:17.0/ata2/host1/target1:0:0/1:0:0:0", "sdb", "8:16", 1 << 30, &[]);
        let sda1 = s.partition(&sda, "sda1", 1, "8:1", 1 << 29);
        let sdb1 = s.partition(&sdb, "sdb1", 1, "8:17", 1 << 29);
        let md = s.dm("md127", "9:127", "", "", &[&sda1, &sdb1]);
        s.write(&format!("{md}/md/level"), "raid1\n");
        std::fs::remove_dir_all(s.root().join(format!("{md}/dm"))).unwrap();
        s.partition(&md, "md127p1", 1, "259:5", 1 << 28);
        let mounts = parse("22 1 259:5 / / rw - ext4 /dev/md127p1 rw\n");
        let facts = disk::host_facts_in(s.root(), mounts, Some((259, 5)));
        assert_eq!(facts.root_disk.as_deref(), Some("md127"));
        assert_eq!(facts.root_disks, ["sda", "sdb"]);
        let disks = scan(s.root(), &Host { facts, swaps: vec![] }).unwrap();
        assert_eq!(disks.len(), 2, "{disks:#?}");
        for d in &disks {
            assert!(d.holds_root, "{}", d.facts.name);
            let raid = &d.children[0].children[0];
            assert_eq!((raid.name.as_str(), raid.kind.as_str()), ("md127", "raid1"));
            assert_eq!(raid.path, Path::new("/dev/md127"));
            assert_eq!(raid.children[0].name, "md127p1");
            assert_eq!(d.all_mounts(), [Path::new("/")]);
        }
    }

    /// btrfs shows an anonymous device number in mountinfo and in stat("/"): the mount's source names the disk.
    #[test]
    fn btrfs_root_is_found_through_its_source() {
        let s = Sys::new();
        let nvme = s.disk(NVME, "nvme0n1", "259:0", 1 << 30, &[]);
        s.partition(&nvme, "nvme0n1p2", 2, "259:2", 1 << 29);
        let mut mounts = parse(
            "22 1 0:33 /@ / rw - btrfs /dev/nvme0n1p2 rw\n23 22 0:33 /@home /home rw - btrfs /dev/nvme0n1p2 rw\n",
        );
        disk::source_devnums(&mut mounts, |p| (p == Path::new("/dev/nvme0n1p2")).then_some((259, 2)));
        let facts = disk::host_facts_in(s.root(), mounts, Some((0, 33)));
        assert_eq!(facts.root_disks, ["nvme0n1"]);
        let disks = scan(s.root(), &Host { facts, swaps: vec![] }).unwrap();
        let d = find(&disks, "nvme0n1");
        assert!(d.holds_root);
        assert_eq!(d.children[0].mounts, [PathBuf::from("/"), PathBuf::from("/home")]);
    }

    #[test]
    fn swap_makes_a_disk_busy_and_part_of_the_system() {
        let s = Sys::new();
        s.scsi_host(6, "usb-storage");
        let sdb = s.disk(USB, "sdb", "8:16", 1 << 24, &[("removable", "1\n")]);
        s.partition(&sdb, "sdb1", 1, "8:17", 1 << 20);
        let host = Host { facts: disk::host_facts_in(s.root(), vec![], None), swaps: vec![(8, 17)] };
        let disks = scan(s.root(), &host).unwrap();
        let d = find(&disks, "sdb");
        assert!(d.system && d.children[0].swap);
        assert_eq!(d.refusal.as_deref(), Some("busy: /dev/sdb is in use (mounted, or held by another program)"));
        assert_eq!(
            parse_swaps(b"Filename\tType\tSize\tUsed\tPriority\n/dev/sdb1   partition\t1048572\t0\t-2\n/swapfile file 10 0 -3\n"),
            [PathBuf::from("/dev/sdb1")]
        );
    }

    #[test]
    fn transports_as_lsblk_names_them() {
        let s = Sys::new();
        s.scsi_host(2, "ata_piix");
        s.scsi_host(3, "virtio_scsi");
        s.scsi_host(4, "mpt3sas");
        std::fs::create_dir_all(s.root().join("class/sas_host/host4")).unwrap();
        let t = |devpath: &str, name: &str, devnum: &str| {
            let rel = s.disk(devpath, name, devnum, 100, &[]);
            disk::transport_in(s.root(), &std::fs::canonicalize(s.root().join(rel)).unwrap(), name)
        };
        assert_eq!(t("pci0000:00/0000:00:01.1/ata3/host2/target2:0:0/2:0:0:0", "sde", "8:64"), "ata");
        assert_eq!(t("pci0000:00/0000:00:03.0/virtio2/host3/target3:0:0/3:0:0:0", "sdf", "8:80"), "virtio");
        assert_eq!(
            t("pci0000:00/0000:00:04.0/host4/port-4:0/end_device-4:0/target4:0:0/4:0:0:0", "sdg", "8:96"),
            "sas"
        );
        assert_eq!(t("pci0000:00/0000:00:05.0/mmc_host/mmc0/mmc0:aaaa", "mmcblk0", "179:0"), "mmc");
        assert_eq!(t("virtual", "zram0", "252:0"), "unknown");
        // A card reader on USB is a USB disk, whatever its name.
        assert_eq!(t("pci0000:00/0000:00:14.0/usb1/1-3/1-3:1.0/host9/target9:0:0/9:0:0:0", "sdh", "8:112"), "usb");
    }
}
