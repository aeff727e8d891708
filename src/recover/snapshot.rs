//! Reading the system for `recover`: the mount table of every mount namespace a process still holds, the loop
//! devices, and the directories whose names a tool uses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::patterns;
use super::plan::{Dir, Loop, Namespace, Proc, Snapshot};
use crate::sys::mountinfo;

/// Where the tools put their mount points and temporary directories.
pub fn candidate_parents() -> Vec<String> {
    let mut v = vec!["/media".to_string()];
    v.extend(patterns::temp_parents());
    v
}

fn read_namespaces() -> Vec<Namespace> {
    let own = std::fs::read_link("/proc/self/ns/mnt").map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let mut by_ns: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    if let Ok(d) = std::fs::read_dir("/proc") {
        for e in d.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            if let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/mnt")) {
                by_ns.entry(link.to_string_lossy().into_owned()).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    for (id, mut pids) in by_ns {
        pids.sort();
        let is_host = id == own;
        // Read as bytes: mount points need not be UTF-8.
        let text = if is_host {
            std::fs::read("/proc/self/mountinfo")
        } else {
            pids.iter()
                .find_map(|p| std::fs::read(format!("/proc/{p}/mountinfo")).ok())
                .ok_or_else(|| std::io::Error::other("gone"))
        };
        let Ok(text) = text else { continue };
        out.push(Namespace { id, is_host, pids, mounts: mountinfo::parse(&text) });
    }
    out.sort_by_key(|n| !n.is_host);
    out
}

fn read_loops() -> Vec<Loop> {
    let mut out = Vec::new();
    // A loop whose backing file's name is not UTF-8 is listed too (the name is for messages only).
    for (name, backing) in crate::sys::loopdev::attached() {
        let dev = std::fs::read_to_string(format!("/sys/block/{name}/dev")).unwrap_or_default();
        let Some((maj, min)) = dev.trim().split_once(':') else { continue };
        let autoclear =
            std::fs::read_to_string(format!("/sys/block/{name}/loop/autoclear")).is_ok_and(|s| s.trim() == "1");
        let sys = format!("/sys/block/{name}");
        let has_holders =
            |dir: &std::path::Path| std::fs::read_dir(dir.join("holders")).is_ok_and(|mut d| d.next().is_some());
        let mut partitions = Vec::new();
        let mut busy = has_holders(std::path::Path::new(&sys));
        if let Ok(d) = std::fs::read_dir(&sys) {
            for e in d.flatten() {
                let p = e.path();
                if !p.join("partition").exists() {
                    continue;
                }
                if let Some(dev) = std::fs::read_to_string(p.join("dev")).ok().and_then(|t| {
                    let (a, b) = t.trim().split_once(':')?;
                    Some((a.parse().ok()?, b.parse().ok()?))
                }) {
                    partitions.push(dev);
                }
                busy |= has_holders(&p);
            }
        }
        // swap on the loop device or one of its partitions
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
        let me = format!("/dev/{name}");
        busy |= swaps
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .any(|d| d == me || d.starts_with(&format!("{me}p")));
        out.push(Loop {
            name,
            major: maj.parse().unwrap_or(0),
            minor: min.parse().unwrap_or(0),
            backing,
            autoclear,
            partitions,
            busy,
        });
    }
    out
}

fn read_dirs(named: &[PathBuf], mount_points: &[PathBuf], fuse_points: &[PathBuf]) -> Vec<Dir> {
    let mut out = Vec::new();
    let mut look = |path: PathBuf| {
        // A mount point is never read here: what counts is the directory underneath (the shadow scan looks
        // there), and a stuck FUSE filesystem on it would never answer; nor is anything inside a FUSE mount.
        let inside_fuse = fuse_points.iter().any(|f| path.starts_with(f) && path != *f);
        if mount_points.contains(&path) || inside_fuse {
            out.push(Dir { path, empty: false });
            return;
        }
        if let Ok(meta) = std::fs::symlink_metadata(&path)
            && meta.is_dir()
        {
            let empty = std::fs::read_dir(&path).map(|mut d| d.next().is_none()).unwrap_or(false);
            out.push(Dir { path, empty });
        }
    };
    for parent in candidate_parents() {
        if let Ok(d) = std::fs::read_dir(&parent) {
            for e in d.flatten() {
                let path = Path::new(&parent).join(e.file_name());
                if path.to_str().and_then(patterns::classify).is_some() {
                    look(path);
                }
            }
        }
    }
    for n in named {
        // Normalised (no trailing slash), as mountinfo shows mount points.
        look(n.components().collect());
    }
    out
}

/// Whether a command line (NUL-separated arguments) runs WoeUSB itself: the program or the script an
/// interpreter runs is named woeusb… (the bash script, WoeUSB-ng's woeusb/woeusbgui), or `python -m WoeUSB`.
/// Arguments that merely mention a woeusb path (a FUSE daemon serving a leftover mount) do not count.
pub fn runs_woeusb(cmdline: &[u8]) -> bool {
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).to_lowercase())
        .collect();
    let base = |a: &String| a.rsplit('/').next().unwrap_or(a).to_string();
    args.iter().take(2).any(|a| base(a).starts_with("woeusb"))
        || args.windows(2).any(|w| w[0] == "-m" && w[1].starts_with("woeusb"))
}

/// Running WoeUSB processes, other than us.
fn read_woeusb_running() -> Vec<(u32, String)> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&pid| pid != me)
                .filter_map(|pid| {
                    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                    runs_woeusb(&raw)
                        .then(|| (pid, String::from_utf8_lossy(&raw).replace('\0', " ").trim().to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn read_live() -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| {
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                    Some((pid, comm.trim().to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn dev_of(meta: &std::fs::Metadata) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    (libc::major(meta.dev()), libc::minor(meta.dev()))
}

/// Device numbers of a process's memory maps (the "dev" column of /proc/PID/maps, hex major:minor).
pub fn parse_map_devs(maps: &str) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = maps
        .lines()
        .filter_map(|l| {
            let dev = l.split_whitespace().nth(3)?;
            let inode = l.split_whitespace().nth(4)?;
            if inode == "0" {
                return None;
            }
            let (a, b) = dev.split_once(':')?;
            Some((u32::from_str_radix(a, 16).ok()?, u32::from_str_radix(b, 16).ok()?))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Mount id → (device, fstype), over every namespace (mount ids are unique system-wide).
type MountMap = std::collections::HashMap<u32, ((u32, u32), String)>;

/// The mount id of an open file, from /proc/PID/fdinfo/FD (no access to the file itself: a stuck FUSE
/// filesystem must never hang `recover`).
fn fdinfo_mnt_id(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| l.strip_prefix("mnt_id:"))?.trim().parse().ok()
}

/// The mount a process's cwd or root lies on: opened with O_PATH (which asks the filesystem nothing), then
/// read from our own fdinfo.
fn link_mnt_id(link: &str) -> Option<u32> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH).open(link).ok()?;
    fdinfo_mnt_id(&format!("/proc/self/fdinfo/{}", f.as_raw_fd()))
}

/// A file as the kernel's cache knows it: the device it lives on, the device it is (a block device), its
/// mode and its size.
#[derive(Debug, Clone, Copy)]
pub struct Cached {
    pub dev: (u32, u32),
    pub rdev: Option<(u32, u32)>,
    pub mode: u32,
    pub size: u64,
}

/// What the kernel already knows of a file, without asking its filesystem: statx with AT_STATX_DONT_SYNC,
/// which FUSE answers from its cache (a stuck daemon is never asked) and other filesystems from the inode.
/// `path` is a /proc magic link (cwd, root, fd/N), which the kernel follows without a lookup.
pub fn stat_cached(path: &str) -> Option<Cached> {
    let c = std::ffi::CString::new(path).ok()?;
    // SAFETY: statx is all zeros when valid (plain integers); the kernel fills it.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path that outlives the call; `st` is a live, writable statx.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_STATX_DONT_SYNC,
            libc::STATX_TYPE | libc::STATX_MODE | libc::STATX_SIZE,
            &mut st,
        )
    };
    if rc != 0 {
        return None;
    }
    let mode = u32::from(st.stx_mode);
    let is_block = mode & libc::S_IFMT == libc::S_IFBLK;
    Some(Cached {
        dev: (st.stx_dev_major, st.stx_dev_minor),
        rdev: is_block.then_some((st.stx_rdev_major, st.stx_rdev_minor)),
        mode,
        size: st.stx_size,
    })
}

fn read_proc(pid: i32, mounts: &MountMap) -> Option<Proc> {
    let info = crate::sys::procfs::read_proc(pid)?;
    let base = format!("/proc/{pid}");
    // The device a cwd or root lies on: through its mount when a mount table shows it; otherwise (a filesystem
    // lazily unmounted everywhere) from the kernel's cached stat.
    let dev_of_link = |link: String| {
        link_mnt_id(&link).and_then(|i| mounts.get(&i)).map(|(d, _)| *d).or_else(|| stat_cached(&link).map(|s| s.dev))
    };
    let mut p = Proc {
        pid,
        comm: info.comm,
        state: info.state,
        wchan: if info.wchan == "0" { String::new() } else { info.wchan },
        cwd: dev_of_link(format!("{base}/cwd")),
        root: dev_of_link(format!("{base}/root")),
        ..Default::default()
    };
    if let Ok(d) = std::fs::read_dir(format!("{base}/fd")) {
        for e in d.flatten() {
            let Ok(target) = std::fs::read_link(e.path()) else { continue };
            let target = target.to_string_lossy().into_owned();
            let link = e.path().to_string_lossy().into_owned();
            if target == "/dev/fuse" {
                p.fuse_daemon = true;
                continue;
            }
            if target.starts_with("/dev/") {
                // A block device held open (a FUSE daemon's, or a writer's): by its device number.
                if let Some(Cached { rdev: Some(rdev), .. }) = stat_cached(&link) {
                    p.block_fds.push(rdev);
                }
                continue;
            }
            // sockets, pipes, anonymous inodes and memfds hold no filesystem space anyone can find
            if !target.starts_with('/') || target.starts_with("/memfd:") {
                continue;
            }
            let fdinfo = format!("{base}/fdinfo/{}", e.file_name().to_string_lossy());
            let mounted = fdinfo_mnt_id(&fdinfo).and_then(|i| mounts.get(&i)).map(|(d, _)| *d);
            // Only where the mount table cannot tell (a filesystem no mount shows) or for a deleted file's size,
            // and from the kernel's cache: a stuck FUSE daemon is never asked (the size of a deleted file on
            // FUSE is the last one the kernel heard of). Other files are not looked at at all.
            let deleted = target.ends_with(" (deleted)");
            let cached = if mounted.is_none() || deleted { stat_cached(&link) } else { None };
            let Some(d) = mounted.or(cached.map(|c| c.dev)) else { continue };
            p.fds.push(d);
            if deleted
                && let Some(c) = cached
                && c.mode & libc::S_IFMT == libc::S_IFREG
            {
                p.deleted.push((target, c.size, d));
            }
        }
    }
    p.maps = std::fs::read_to_string(format!("{base}/maps")).map(|m| parse_map_devs(&m)).unwrap_or_default();
    let mut cmdline = std::fs::read(format!("{base}/cmdline")).unwrap_or_default();
    cmdline.truncate(4096);
    p.cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_string();
    Some(p)
}

/// This process and its ancestors (the shell, sudo): their command lines name the paths the user gave, so they
/// are never taken for a crashed tool's helper still working on them.
fn self_and_ancestors() -> Vec<i32> {
    let mut out = vec![std::process::id() as i32];
    let mut pid = out[0];
    for _ in 0..64 {
        let Some(ppid) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("PPid:"))?.trim().parse::<i32>().ok())
        else {
            break;
        };
        if ppid <= 1 {
            break;
        }
        out.push(ppid);
        pid = ppid;
    }
    out
}

fn read_procs(namespaces: &[Namespace]) -> Vec<Proc> {
    let mounts: MountMap =
        namespaces.iter().flat_map(|n| &n.mounts).map(|m| (m.id, ((m.major, m.minor), m.fstype.clone()))).collect();
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&pid| pid != me)
                .filter_map(|pid| read_proc(pid, &mounts))
                .collect()
        })
        .unwrap_or_default()
}

/// The filesystems the candidate directories live on.
fn read_parent_devs() -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> =
        candidate_parents().iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| dev_of(&m)).collect();
    v.sort();
    v.dedup();
    v
}

/// Processes in uninterruptible sleep whose kernel stack is in FUSE's DESTROY (a daemon unmounting its own
/// filesystem, waiting for its own answer).
fn read_destroy_waiters(procs: &[Proc]) -> Vec<(i32, String)> {
    procs
        .iter()
        .filter(|p| p.state == 'D')
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{}/stack", p.pid)).is_ok_and(|s| s.contains("fuse_send_destroy"))
        })
        .map(|p| (p.pid, p.comm.clone()))
        .collect()
}

/// Who holds the block devices `devs` (a disk and its partitions): processes with one of them open, and
/// processes whose cwd, root, open files or memory maps lie on a filesystem on one of them, mounted or not.
/// For `write`'s "busy": a stick whose filesystem was lazily unmounted but is still held answers EBUSY with no
/// mount to show for it.
pub fn holders_of(devs: &[(u32, u32)]) -> Vec<String> {
    let namespaces = read_namespaces();
    let devices = read_devices();
    let mounted: Vec<(u32, u32)> = namespaces.iter().flat_map(|n| &n.mounts).map(|m| (m.major, m.minor)).collect();
    let name = |d: (u32, u32)| {
        devices.iter().find(|(x, _)| *x == d).map_or_else(|| format!("{}:{}", d.0, d.1), |(_, n)| n.clone())
    };
    let mut out = Vec::new();
    for p in read_procs(&namespaces) {
        let who = format!("process {} ({})", p.pid, crate::cli::term::escape(&p.comm));
        for d in devs.iter().filter(|d| p.block_fds.contains(d)) {
            out.push(format!("{who} has {} open", name(*d)));
        }
        for &d in devs {
            let mut how = Vec::new();
            if p.cwd == Some(d) {
                how.push("its working directory");
            }
            if p.root == Some(d) {
                how.push("its root directory");
            }
            if p.fds.contains(&d) {
                how.push("open files");
            }
            if p.maps.contains(&d) {
                how.push("memory-mapped files");
            }
            if !how.is_empty() {
                let unmounted = if mounted.contains(&d) { "" } else { ", which no mount shows (lazily unmounted)" };
                out.push(format!("{who} has {} on the filesystem of {}{unmounted}", how.join(" and "), name(d)));
            }
        }
    }
    out
}

/// The block devices a stick or an image can be, by number, with their /dev names: loop devices, removable
/// disks and disks on USB, and their partitions. (A filesystem of an internal disk that no mount shows is
/// another story: systemd-sysext layers, open_tree mounts, a chroot's hidden mounts; never ours to report.)
fn read_devices() -> Vec<((u32, u32), String)> {
    let stick_like = |sys: &Path| -> bool {
        let Ok(real) = std::fs::canonicalize(sys) else { return false };
        let disk =
            if real.join("partition").exists() { real.parent().map(Path::to_path_buf) } else { Some(real.clone()) };
        let Some(disk) = disk else { return false };
        let name = disk.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        name.starts_with("loop")
            || std::fs::read_to_string(disk.join("removable")).is_ok_and(|r| r.trim() == "1")
            || real.to_string_lossy().contains("/usb")
    };
    let mut out: Vec<((u32, u32), String)> = std::fs::read_dir("/sys/dev/block")
        .map(|d| {
            d.flatten()
                .filter(|e| stick_like(&e.path()))
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.to_string();
                    let (a, b) = name.split_once(':')?;
                    let uevent = std::fs::read_to_string(e.path().join("uevent")).ok()?;
                    let dev = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
                    Some(((a.parse().ok()?, b.parse().ok()?), format!("/dev/{dev}")))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Read everything `plan` needs. `named`: paths the user gave.
pub fn take(named: &[PathBuf]) -> Snapshot {
    let namespaces = read_namespaces();
    // Requests waiting on the FUSE filesystems whose names a tool uses (or that the user named).
    let mut ids: Vec<u32> = namespaces
        .iter()
        .flat_map(|n| &n.mounts)
        .filter(|m| m.fstype.starts_with("fuse"))
        .filter(|m| {
            // The mount point or a directory above it has a tool's name, or it is (below) a named path.
            m.mount_point.ancestors().any(|p| p.to_str().and_then(patterns::classify).is_some())
                || named.iter().any(|p| m.mount_point.starts_with(p))
        })
        .map(|m| super::fuse::connection_id(m.major, m.minor))
        .collect();
    ids.sort();
    ids.dedup();
    let host_points: Vec<PathBuf> =
        namespaces.iter().filter(|n| n.is_host).flat_map(|n| &n.mounts).map(|m| m.mount_point.clone()).collect();
    let host_fuse_points: Vec<PathBuf> = namespaces
        .iter()
        .filter(|n| n.is_host)
        .flat_map(|n| &n.mounts)
        .filter(|m| m.fstype.starts_with("fuse"))
        .map(|m| m.mount_point.clone())
        .collect();
    let procs = read_procs(&namespaces);
    let destroy_waiters = read_destroy_waiters(&procs);
    Snapshot {
        fuse_waiting: super::fuse::waiting(&ids, std::time::Duration::from_millis(400)),
        fuse_orphans: if destroy_waiters.is_empty() {
            Vec::new()
        } else {
            super::fuse::all_waiting(std::time::Duration::from_millis(400))
        },
        destroy_waiters,
        woeusb_running: read_woeusb_running(),
        procs,
        dirs: read_dirs(named, &host_points, &host_fuse_points),
        namespaces,
        loops: read_loops(),
        devices: read_devices(),
        // What was mounted by the time the processes were read too: a stick mounted meanwhile is not taken
        // for a detached one.
        late_mounts: read_namespaces().iter().flat_map(|n| &n.mounts).map(|m| (m.major, m.minor)).collect(),
        ours: self_and_ancestors(),
        fuse_connections: super::fuse::connections(),
        live: read_live(),
        parent_devs: read_parent_devs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn woeusb_command_lines() {
        assert!(runs_woeusb(b"bash\0/usr/bin/woeusb\0--device\0w.iso\0/dev/sdb\0"));
        assert!(runs_woeusb(b"/usr/local/bin/woeusb\0--device\0"));
        assert!(runs_woeusb(b"/usr/bin/python3\0/usr/local/bin/woeusbgui\0"));
        assert!(runs_woeusb(b"python3\0-m\0WoeUSB\0"));
        assert!(!runs_woeusb(b"fuseiso\0/isos/w.iso\0/media/woeusb_source_1690000000_4242\0"));
        assert!(!runs_woeusb(b"sleep\x00300\x00"));
    }

    #[test]
    fn map_devices() {
        let maps = "\
55d0c000-55d0d000 r--p 00000000 fe:00 1234 /usr/bin/cat
7f00-7f01 rw-p 00000000 00:00 0 [heap]
7f02-7f03 r--p 00000000 07:03 99 /media/woeusb_source_1_2/setup.exe
7f04-7f05 r--p 00001000 07:03 99 /media/woeusb_source_1_2/setup.exe
";
        assert_eq!(parse_map_devs(maps), vec![(7, 3), (254, 0)]);
    }

    #[test]
    fn own_process_is_read() {
        let ns = read_namespaces();
        let me = std::process::id() as i32;
        let mounts: MountMap =
            ns.iter().flat_map(|n| &n.mounts).map(|m| (m.id, ((m.major, m.minor), m.fstype.clone()))).collect();
        let p = read_proc(me, &mounts).expect("self");
        let cwd_dev = {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(".").unwrap();
            (libc::major(m.dev()), libc::minor(m.dev()))
        };
        assert_eq!(p.cwd, Some(cwd_dev), "cwd device through O_PATH + fdinfo");
        assert!(!p.maps.is_empty());
    }
}
