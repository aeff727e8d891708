//! The recovery plan as a pure function of a snapshot: which mounts, loop devices and directories are
//! leftovers of a crashed run (by the names the tools use, or because the user named them), and what to do
//! about each, in a safe order. Nothing that matches no pattern and was not named is ever touched.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::patterns::{self, Match, Role};
use crate::cli::term;
use crate::sys::mountinfo::MountEntry;

/// The mount table of one mount namespace, and who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Namespace {
    /// The namespace's id ("mnt:[4026531841]").
    pub id: String,
    /// Whether this is the namespace `recover` itself runs in.
    pub is_host: bool,
    /// Processes whose mount namespace it is.
    pub pids: Vec<i32>,
    #[serde(skip)]
    pub mounts: Vec<MountEntry>,
}

/// A loop device as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loop {
    pub name: String,
    pub major: u32,
    pub minor: u32,
    pub backing: String,
    pub autoclear: bool,
    /// Device numbers of its partitions (loopNpM), which mounts may use instead of the loop itself.
    pub partitions: Vec<(u32, u32)>,
    /// Used by something that is not a mount: device-mapper/md holders, or swap.
    pub busy: bool,
}

/// A directory whose name may be a tool's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dir {
    #[serde(serialize_with = "term::serialize_path")]
    pub path: PathBuf,
    pub empty: bool,
}

/// What `recover` read from the system.
/// What one process holds, by device number (after a lazy unmount a cwd reads as '/', so paths lie).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub wchan: String,
    pub cwd: Option<(u32, u32)>,
    pub root: Option<(u32, u32)>,
    pub fds: Vec<(u32, u32)>,
    pub maps: Vec<(u32, u32)>,
    /// Open files whose name was deleted: (path as the kernel shows it, size, device).
    pub deleted: Vec<(String, u64, (u32, u32))>,
    /// Block devices it holds open (a FUSE daemon's device, a writer's disk).
    pub block_fds: Vec<(u32, u32)>,
    /// Its command line, arguments joined by spaces (at most 4 KiB).
    pub cmdline: String,
    /// It has /dev/fuse open: a FUSE daemon (naming its mount point is how it serves it).
    pub fuse_daemon: bool,
}

impl Proc {
    /// How this process holds the filesystem on `dev`: working directory, root directory, open files, memory
    /// maps (empty: not at all).
    pub fn holds(&self, dev: (u32, u32)) -> Vec<String> {
        let mut how = Vec::new();
        if self.cwd == Some(dev) {
            how.push("working directory".to_string());
        }
        if self.root == Some(dev) {
            how.push("root directory".to_string());
        }
        let n = self.fds.iter().filter(|d| **d == dev).count();
        if n > 0 {
            how.push(format!("{n} open file{}", if n == 1 { "" } else { "s" }));
        }
        if self.maps.contains(&dev) {
            how.push("memory-mapped files".to_string());
        }
        how
    }
}

/// A process that keeps a leftover filesystem alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub wchan: String,
    /// cwd, root, open file, memory map
    pub how: Vec<String>,
    /// The mount point as shown (escaped; see `cli::term::path`).
    pub mount_point: String,
    /// What is mounted there (the device, e.g. /dev/loop3 or /dev/sdb1).
    pub device: String,
}

impl Holder {
    pub fn describe(&self) -> String {
        let mut s = format!(
            "process {} ({}) holds {} ({}) through its {}",
            self.pid,
            term::escape(&self.comm),
            self.mount_point,
            term::escape(&self.device),
            self.how.join(", ")
        );
        if self.state == 'D' {
            s.push_str(&format!(
                "; it is in uninterruptible sleep (D) in {}: it ends only when its I/O completes or the device is \
                 removed",
                if self.wchan.is_empty() { "the kernel".into() } else { term::escape(&self.wchan) }
            ));
        }
        s
    }
}

/// A deleted file still held open: its space comes back only when the process closes it or exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletedOpen {
    pub pid: i32,
    pub comm: String,
    pub path: String,
    pub size: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub namespaces: Vec<Namespace>,
    pub loops: Vec<Loop>,
    pub dirs: Vec<Dir>,
    /// Live processes: (pid, comm). A leftover whose name carries the pid of a live process belongs to a run
    /// that may still be going on, and is left alone.
    pub live: Vec<(u32, String)>,
    pub procs: Vec<Proc>,
    /// Device numbers of the filesystems the leftovers live on (their parents), for deleted-but-open files.
    pub parent_devs: Vec<(u32, u32)>,
    /// FUSE connections with requests waiting in every sample: (connection id, requests waiting).
    pub fuse_waiting: Vec<(u32, u64)>,
    /// Running WoeUSB processes (pid, command line): their leftovers may be a run still going on.
    pub woeusb_running: Vec<(u32, String)>,
    /// FUSE connections that no mount in any namespace uses, with requests waiting in every sample, and the
    /// processes stuck in uninterruptible sleep sending FUSE's DESTROY (a daemon waiting on its own answer).
    pub fuse_orphans: Vec<(u32, u64)>,
    pub destroy_waiters: Vec<(i32, String)>,
    /// The block devices a stick or an image can be (loop devices, removable and USB disks, their partitions),
    /// by number, with their /dev names.
    pub devices: Vec<((u32, u32), String)>,
    /// Device numbers mounted anywhere by the time the processes were read (a second look at the mount tables).
    pub late_mounts: Vec<(u32, u32)>,
    /// Every FUSE connection the kernel has.
    pub fuse_connections: Vec<u32>,
    /// `recover` itself and its ancestors (the shell, sudo), whose command lines name the paths the user gave.
    pub ours: Vec<i32>,
}

/// A filesystem that no mount in any namespace shows (lazily unmounted: by `recover --yes`, `umount -l`, or its
/// namespace's end) but that processes keep alive: its device stays busy and its space taken until they let go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detached {
    /// The device it lives on ("/dev/sdb1"), or "FUSE connection N" for a FUSE filesystem without a block
    /// device.
    pub device: String,
    /// "MAJ:MIN"
    pub dev: String,
    pub holders: Vec<Holder>,
    /// Deleted files still open on it: how many, and their bytes.
    pub deleted_files: usize,
    pub deleted_bytes: u64,
}

impl Detached {
    pub fn describe(&self) -> String {
        let space = if self.deleted_files > 0 {
            format!(
                "; {} deleted file(s) of {} on it are still open",
                self.deleted_files,
                crate::stick::units::human(self.deleted_bytes)
            )
        } else {
            String::new()
        };
        // A FUSE daemon serving it is not to be killed: it ends by itself once the others let go.
        let is_daemon = |h: &&Holder| h.how.iter().any(|w| w.starts_with(FUSE_DAEMON));
        let pids: Vec<String> = self.holders.iter().filter(|h| !is_daemon(h)).map(|h| h.pid.to_string()).collect();
        let daemons: Vec<String> =
            self.holders.iter().filter(is_daemon).map(|h| format!("{} ({})", h.pid, term::escape(&h.comm))).collect();
        let daemon_note = if daemons.is_empty() {
            String::new()
        } else {
            format!("; its FUSE daemon {} ends by itself then", daemons.join(", "))
        };
        let who = match pids.len() {
            0 => {
                return format!(
                    "{} ({}) is unmounted everywhere but still served by its FUSE daemon {}{space}: nothing else holds \
                 it; a daemon that does not end by itself is stuck (see the FUSE connections above)",
                    term::escape(&self.device),
                    self.dev,
                    daemons.join(", ")
                );
            }
            1 => format!("process {}", pids[0]),
            _ => format!("processes {}", pids.join(", ")),
        };
        format!(
            "{} ({}) is unmounted everywhere but still alive{space}: the device stays busy until {who} let(s) go (end \
             them, e.g. `kill {}`, or have them leave it){daemon_note}",
            term::escape(&self.device),
            self.dev,
            pids.join(" ")
        )
    }
}

/// How a FUSE daemon holds the filesystem it serves.
const FUSE_DAEMON: &str = "FUSE daemon serving it";

/// Filesystems that no mount in any namespace shows but that processes still hold (cwd, root, open files, memory
/// maps), or whose FUSE connection still lives, each with its holders. Only sticks and images count (loop
/// devices, removable and USB disks: `Snapshot::devices`) and FUSE connections: kernel-internal filesystems
/// (memfd, SysV shm, pipes) have no mount either, nor do an internal disk's layers under systemd-sysext.
pub fn detached(snap: &Snapshot) -> Vec<Detached> {
    let mounted: Vec<(u32, u32)> = snap
        .namespaces
        .iter()
        .flat_map(|n| &n.mounts)
        .map(|m| (m.major, m.minor))
        .chain(snap.late_mounts.iter().copied())
        .collect();
    let name_of = |dev: (u32, u32)| -> Option<String> {
        if let Some((_, name)) = snap.devices.iter().find(|(d, _)| *d == dev) {
            return Some(name.clone());
        }
        let id = super::fuse::connection_id(dev.0, dev.1);
        snap.fuse_connections.contains(&id).then(|| format!("FUSE connection {id}"))
    };
    let mut devs: Vec<(u32, u32)> = snap
        .procs
        .iter()
        // (memory maps alone never make one: through overlayfs they may name a lower layer's device)
        .flat_map(|p| p.cwd.iter().chain(&p.root).chain(&p.fds).copied())
        .chain(snap.fuse_connections.iter().map(|&id| super::fuse::connection_dev(id)))
        .filter(|d| !mounted.contains(d))
        .collect();
    devs.sort();
    devs.dedup();
    let mut out = Vec::new();
    for dev in devs {
        let Some(device) = name_of(dev) else { continue };
        let mut holders = Vec::new();
        let (mut deleted_files, mut deleted_bytes) = (0, 0);
        for p in &snap.procs {
            let mut how = p.holds(dev);
            // A FUSE daemon serving a block device's filesystem holds the device itself open.
            if p.block_fds.contains(&dev) && snap.fuse_connections.contains(&super::fuse::connection_id(dev.0, dev.1)) {
                how.push(format!("{FUSE_DAEMON} (the device is open)"));
            }
            for (_, size, d) in &p.deleted {
                if *d == dev {
                    deleted_files += 1;
                    deleted_bytes += size;
                }
            }
            if !how.is_empty() {
                holders.push(Holder {
                    pid: p.pid,
                    comm: p.comm.clone(),
                    state: p.state,
                    wchan: p.wchan.clone(),
                    how,
                    mount_point: "(no mount point: unmounted everywhere)".into(),
                    device: device.clone(),
                });
            }
        }
        if holders.is_empty() {
            continue;
        }
        out.push(Detached { device, dev: format!("{}:{}", dev.0, dev.1), holders, deleted_files, deleted_bytes });
    }
    out
}

/// The plan, and what was deliberately left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanupPlan {
    pub actions: Vec<Action>,
    pub left_alone: Vec<String>,
    pub holders: Vec<Holder>,
    pub deleted_open: Vec<DeletedOpen>,
    /// Filesystems unmounted everywhere that processes keep alive (reported; never acted on).
    pub detached: Vec<Detached>,
    /// Tools' mount-point directories that are not mounted but hold files (what a mount once hid): kept.
    #[serde(serialize_with = "term::serialize_paths")]
    pub nonempty_dirs: Vec<PathBuf>,
}

/// Why something is in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    Pattern(Match),
    NamedByUser,
    /// A loop device backing a leftover mount.
    BacksLeftover {
        mount_point: String,
    },
    /// A loop device whose backing file was deleted (and that no mount uses).
    BackingDeleted,
    /// A FUSE daemon dead-locked unmounting its own filesystem (it was the last process of its mount
    /// namespace when it was killed): it waits in D state for its own answer and holds its device.
    DeadlockedUnmount {
        daemons: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// umount2(MNT_DETACH) in the namespace that holds it (entered with setns).
    Unmount {
        namespace: String,
        host: bool,
        #[serde(serialize_with = "term::serialize_path")]
        mount_point: PathBuf,
        /// "MAJ:MIN" of the mounted filesystem (checked again right before unmounting).
        device: String,
        fstype: String,
        source: String,
        reason: Reason,
    },
    /// Write 1 to /sys/fs/fuse/connections/ID/abort: the daemon is stuck (stopped or dead-locked) and its
    /// requests would wait forever; aborting frees whoever waits. The daemon is never killed.
    AbortFuse { connection: u32, waiting: u64, mount_point: String, reason: Reason },
    /// LOOP_CLR_FD (the kernel detaches lazily when the device is still busy).
    DetachLoop { device: String, backing: String, reason: Reason },
    /// rmdir of an empty directory; never a recursive delete. `after_unmount`: the directory is a mount point
    /// this plan unmounts first; what it holds underneath is unknown until then (files written while the
    /// mount was gone are kept, never deleted).
    Rmdir {
        #[serde(serialize_with = "term::serialize_path")]
        path: PathBuf,
        after_unmount: bool,
        reason: Reason,
    },
}

impl Action {
    pub fn describe(&self) -> String {
        let why = |r: &Reason| match r {
            Reason::Pattern(m) => format!("{} {:?}", m.tool.name(), m.role),
            Reason::NamedByUser => "named by you".to_string(),
            Reason::BacksLeftover { mount_point } => format!("backs the leftover mount {}", term::escape(mount_point)),
            Reason::BackingDeleted => "its backing file was deleted".to_string(),
            Reason::DeadlockedUnmount { daemons } => format!(
                "{} stuck in D state unmounting its own filesystem (it waits for its own answer forever, holding its \
                 device busy)",
                daemons.join(", ")
            ),
        };
        match self {
            Action::Unmount { host, mount_point, fstype, source, reason, namespace, .. } => format!(
                "unmount {} ({fstype} from {}) {}: {}",
                term::path(mount_point),
                term::escape(source),
                if *host {
                    "in the host namespace".to_string()
                } else {
                    format!("in the private namespace {namespace}")
                },
                why(reason)
            ),
            Action::DetachLoop { device, backing, reason } => {
                format!("detach {device} (backed by {}): {}", term::escape(backing), why(reason))
            }
            Action::AbortFuse { connection, waiting, mount_point, reason } => format!(
                "abort the stuck FUSE connection {connection} of {} ({waiting} request(s) waiting on a \
                 daemon that does not answer): {}",
                term::escape(mount_point),
                why(reason)
            ),
            Action::Rmdir { path, after_unmount: false, reason } => {
                format!("remove the empty directory {}: {}", term::path(path), why(reason))
            }
            Action::Rmdir { path, after_unmount: true, reason } => {
                format!("remove the directory {} once unmounted, if empty: {}", term::path(path), why(reason))
            }
        }
    }
}

/// Whether `path` is `named` or lies below it (whole components: /mnt/ab is not below /mnt/a).
fn under(path: &Path, named: &Path) -> bool {
    path.starts_with(named)
}

/// The tool and role a path's name says. The names tools use are ASCII: a name that is not UTF-8 matches
/// none (its bytes are never guessed at).
fn classify(path: &Path) -> Option<Match> {
    patterns::classify(path.to_str()?)
}

/// How deep a path lies (for innermost-first orders).
fn depth(path: &Path) -> usize {
    path.components().count()
}

fn reason_for(path: &Path, named: &[PathBuf]) -> Option<Reason> {
    // The path itself, or a recognised directory above it (a mount inside WoeUSB's temp dir belongs to it).
    if let Some(m) = path.ancestors().take_while(|p| p.parent().is_some()).find_map(classify) {
        return Some(Reason::Pattern(m));
    }
    named.iter().any(|n| under(path, n)).then_some(Reason::NamedByUser)
}

/// The live process a recognised name points at, or a running WoeUSB for WoeUSB names without a pid (its
/// run may still be going on).
fn live_owner<'a>(snap: &'a Snapshot, reason: &Reason) -> Option<&'a (u32, String)> {
    match reason {
        Reason::Pattern(Match { pid: Some(p), .. }) => snap.live.iter().find(|(q, _)| q == p),
        Reason::Pattern(Match { tool, pid: None, .. }) if *tool != super::patterns::Tool::Woesafe => {
            snap.woeusb_running.first()
        }
        _ => None,
    }
}

/// The programs the legacy tools run on their mounts, which go on by themselves when the tool is killed.
const TOOL_HELPERS: [&str; 12] = [
    "grub-install",
    "grub2-install",
    "mkntfs",
    "mkfs.fat",
    "mkfs.vfat",
    "mkdosfs",
    "mkfs.ntfs",
    "parted",
    "wipefs",
    "7z",
    "rsync",
    "ntfslabel",
];

/// A helper program of the legacy tools (`TOOL_HELPERS`) whose command line names `mount_point` (or a path below
/// it) as an argument: left running on the mount by a crashed tool (WoeUSB-ng's `grub-install
/// --boot-directory=/media/woeusb_target_…`), it may still write there. Any other process naming the path (a
/// user's shell command, a writer blocked on a stuck FUSE mount) is no reason to keep a leftover.
fn works_on<'a>(snap: &'a Snapshot, mount_point: &Path) -> Option<&'a Proc> {
    let mp = mount_point.to_str()?;
    snap.procs.iter().find(|p| {
        !p.fuse_daemon
            && TOOL_HELPERS.contains(&p.comm.as_str())
            && !snap.ours.contains(&p.pid)
            && p.cmdline.split(' ').any(|arg| {
                let path = arg.rsplit_once('=').map_or(arg, |(_, v)| v);
                path.strip_prefix(mp).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    })
}

/// Plan the recovery. `named` holds paths the user gave on the command line.
pub fn plan(snap: &Snapshot, named: &[PathBuf]) -> CleanupPlan {
    let mut actions = Vec::new();
    let mut left_alone = Vec::new();
    let mut nonempty_dirs = Vec::new();
    let mut leftover_devs: Vec<((u32, u32), PathBuf)> = Vec::new();
    let mut leftover_sources: Vec<String> = Vec::new();
    // (namespace, mount id) of every mount this plan takes away
    let mut planned_mounts: Vec<(String, u32)> = Vec::new();
    let mut unmounted_points: Vec<PathBuf> = Vec::new();
    // FUSE connections that no mount uses any more, with requests waiting, while a daemon waits in D state for
    // the answer to its own DESTROY: the fuseblk deadlock (DESIGN.md). Only aborting the connection frees the
    // daemon and the device it holds.
    if !snap.destroy_waiters.is_empty() {
        let used: Vec<u32> = snap
            .namespaces
            .iter()
            .flat_map(|n| &n.mounts)
            .filter(|m| m.fstype.starts_with("fuse"))
            .map(|m| crate::recover::fuse::connection_id(m.major, m.minor))
            .collect();
        let daemons: Vec<String> =
            snap.destroy_waiters.iter().map(|(pid, comm)| format!("{comm} (pid {pid})")).collect();
        for &(connection, waiting) in &snap.fuse_orphans {
            // Only block-device connections (fuseblk, numbered after their device): a network or other
            // anonymous FUSE filesystem is never taken for the dead-locked daemon's.
            if waiting > 0 && !used.contains(&connection) && connection >> 20 != 0 {
                actions.push(Action::AbortFuse {
                    connection,
                    waiting,
                    mount_point: "a filesystem no longer mounted anywhere".into(),
                    reason: Reason::DeadlockedUnmount { daemons: daemons.clone() },
                });
            }
        }
    }
    for ns in &snap.namespaces {
        let mut mine: Vec<&MountEntry> = Vec::new();
        for m in &ns.mounts {
            if m.mount_point == Path::new("/") {
                continue;
            }
            if let Some(r) = reason_for(&m.mount_point, named) {
                if let Some((pid, comm)) = live_owner(snap, &r) {
                    left_alone.push(format!(
                        "{}: process {pid} ({}) is still running",
                        term::path(&m.mount_point),
                        term::escape(comm)
                    ));
                    continue;
                }
                if let Some(p) = works_on(snap, &m.mount_point) {
                    left_alone.push(format!(
                        "{}: process {} ({}) still works on it ({}): a helper of the crashed run, orphaned; left \
                         alone until it ends (or you end it)",
                        term::path(&m.mount_point),
                        p.pid,
                        term::escape(&p.comm),
                        term::escape(&p.cmdline)
                    ));
                    continue;
                }
                mine.push(m);
            }
        }
        // Innermost first: deeper mount points before their parents, later mounts before earlier ones.
        mine.sort_by(|a, b| depth(&b.mount_point).cmp(&depth(&a.mount_point)).then(b.id.cmp(&a.id)));
        for m in &mine {
            let conn = crate::recover::fuse::connection_id(m.major, m.minor);
            if m.fstype.starts_with("fuse")
                && let Some((_, waiting)) = snap.fuse_waiting.iter().find(|(c, w)| *c == conn && *w > 0)
            {
                // Before any unmount: the stuck daemon could not answer the unmount's requests either.
                actions.insert(
                    0,
                    Action::AbortFuse {
                        connection: conn,
                        waiting: *waiting,
                        mount_point: term::path(&m.mount_point),
                        reason: reason_for(&m.mount_point, named).expect("filtered above"),
                    },
                );
            }
        }
        for m in mine {
            let reason = reason_for(&m.mount_point, named).expect("filtered above");
            leftover_devs.push(((m.major, m.minor), m.mount_point.clone()));
            leftover_sources.push(m.source.clone());
            planned_mounts.push((ns.id.clone(), m.id));
            unmounted_points.push(m.mount_point.clone());
            actions.push(Action::Unmount {
                namespace: ns.id.clone(),
                host: ns.is_host,
                mount_point: m.mount_point.clone(),
                device: format!("{}:{}", m.major, m.minor),
                fstype: m.fstype.clone(),
                source: m.source.clone(),
                reason,
            });
        }
    }
    // Loop devices: those under a leftover mount, those whose backing file is gone and that nothing else
    // mounts, and those backed by a file inside a leftover directory.
    for l in &snap.loops {
        // Mounted anywhere (itself or a partition of it) by a mount this plan does not take away, or used by
        // device-mapper, md or swap: not ours to detach.
        let used_elsewhere = snap.namespaces.iter().any(|n| {
            n.mounts.iter().any(|m| {
                let dev = (m.major, m.minor);
                (dev == (l.major, l.minor) || l.partitions.contains(&dev))
                    && !planned_mounts.iter().any(|(ns, id)| *ns == n.id && *id == m.id)
            })
        });
        if used_elsewhere || l.busy {
            continue;
        }
        let reason = if let Some((_, mp)) = leftover_devs.iter().find(|(d, _)| *d == (l.major, l.minor)) {
            Some(Reason::BacksLeftover { mount_point: term::path(mp) })
        } else if l.backing.ends_with(" (deleted)") && !l.autoclear {
            Some(Reason::BackingDeleted)
        } else if named.iter().any(|n| under(&Path::new("/dev").join(&l.name), n)) {
            Some(Reason::NamedByUser)
        } else {
            None
        };
        if let Some(reason) = reason {
            actions.push(Action::DetachLoop { device: format!("/dev/{}", l.name), backing: l.backing.clone(), reason });
        }
    }
    // Directories: only once whatever was mounted on them is gone, and only when empty; deepest first.
    let mut dirs: Vec<&Dir> = snap.dirs.iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(depth(&d.path)));
    for d in dirs {
        let Some(reason) = reason_for(&d.path, named) else { continue };
        if works_on(snap, &d.path).is_some() {
            // (said with its mount above, or a helper working in the bare directory: left alone either way)
            continue;
        }
        if let Some((pid, comm)) = live_owner(snap, &reason) {
            left_alone.push(format!(
                "{}: process {pid} ({}) is still running",
                term::path(&d.path),
                term::escape(comm)
            ));
            continue;
        }
        let host_mounts: Vec<&MountEntry> =
            snap.namespaces.iter().filter(|n| n.is_host).flat_map(|n| &n.mounts).collect();
        let still_mounted =
            host_mounts.iter().any(|m| under(&m.mount_point, &d.path) && !unmounted_points.contains(&m.mount_point));
        let unmounted_here = host_mounts.iter().any(|m| m.mount_point == d.path);
        if still_mounted {
            continue;
        }
        if unmounted_here {
            actions.push(Action::Rmdir { path: d.path.clone(), after_unmount: true, reason });
        } else if d.empty {
            actions.push(Action::Rmdir { path: d.path.clone(), after_unmount: false, reason });
        } else {
            left_alone.push(format!("{}: not empty (nothing is ever deleted recursively)", term::path(&d.path)));
            // A tool's mount point that holds files once unmounted: what a mount hid (movable on request).
            if matches!(reason, Reason::Pattern(Match { role: Role::SourceMount | Role::TargetMount, .. })) {
                nonempty_dirs.push(d.path.clone());
            }
        }
    }
    // Who keeps the leftover filesystems alive, and deleted-but-open files on them or on their parents.
    let mut holders = Vec::new();
    let mut deleted_open = Vec::new();
    for p in &snap.procs {
        for ((dev, mp), device) in leftover_devs.iter().zip(&leftover_sources) {
            let how = p.holds(*dev);
            if !how.is_empty() && !holders.iter().any(|h: &Holder| h.pid == p.pid && h.mount_point == term::path(mp)) {
                holders.push(Holder {
                    pid: p.pid,
                    comm: p.comm.clone(),
                    state: p.state,
                    wchan: p.wchan.clone(),
                    how,
                    mount_point: term::path(mp),
                    device: device.clone(),
                });
            }
        }
        for (path, size, dev) in &p.deleted {
            // On a leftover filesystem always; on the filesystems the leftovers live on only when there are
            // leftovers (then the df/du gap there is part of the story).
            if leftover_devs.iter().any(|(d, _)| d == dev) || (!actions.is_empty() && snap.parent_devs.contains(dev)) {
                deleted_open.push(DeletedOpen { pid: p.pid, comm: p.comm.clone(), path: path.clone(), size: *size });
            }
        }
    }
    left_alone.dedup();
    CleanupPlan { actions, left_alone, holders, deleted_open, detached: detached(snap), nonempty_dirs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mountinfo::parse;

    /// A plain (non-autoclear, unpartitioned, otherwise unused) loop device 7:minor.
    fn lp(name: &str, minor: u32, backing: &str, autoclear: bool) -> Loop {
        Loop { name: name.into(), major: 7, minor, backing: backing.into(), autoclear, partitions: vec![], busy: false }
    }

    fn host(text: &str) -> Namespace {
        Namespace { id: "mnt:[1]".into(), is_host: true, pids: vec![1], mounts: parse(text) }
    }

    const BASE: &str = "\
22 1 254:0 / / rw - ext4 /dev/vda rw
23 22 0:21 / /proc rw - proc proc rw
24 22 0:25 / /tmp rw - tmpfs tmpfs rw
25 22 8:17 / /media/user/MYSTICK rw - vfat /dev/sdb1 rw
";

    #[test]
    fn woeusb_leftovers_are_planned_in_order() {
        let text = format!(
            "{BASE}40 22 7:0 / /media/woeusb_source_1690000000_4242 ro - udf /dev/loop0 ro\n\
             41 22 8:33 / /media/woeusb_target_1690000001_4242 rw - vfat /dev/sdc1 rw\n\
             42 41 0:50 / /media/woeusb_target_1690000001_4242/inner rw - tmpfs tmpfs rw\n"
        );
        let snap = Snapshot {
            namespaces: vec![host(&text)],
            loops: vec![lp("loop0", 0, "/isos/Win10.iso", false), lp("loop1", 1, "/var/lib/vm.img", false)],
            dirs: vec![
                Dir { path: "/media/woeusb_source_1690000000_4242".into(), empty: true },
                Dir { path: "/media/woeusb_target_1690000001_4242".into(), empty: false },
                Dir { path: "/media/user".into(), empty: false },
            ],
            live: vec![(1, "init".into())],
            procs: vec![
                Proc { pid: 77, comm: "sleep".into(), state: 'S', cwd: Some((8, 33)), ..Default::default() },
                Proc {
                    pid: 78,
                    comm: "cp".into(),
                    state: 'D',
                    wchan: "io_schedule".into(),
                    fds: vec![(7, 0), (7, 0)],
                    ..Default::default()
                },
                Proc {
                    pid: 79,
                    comm: "vim".into(),
                    state: 'S',
                    cwd: Some((254, 0)),
                    deleted: vec![("/tmp/x.swp (deleted)".into(), 40 << 20, (0, 25))],
                    ..Default::default()
                },
            ],
            parent_devs: vec![(0, 25)],
            fuse_waiting: vec![],
            woeusb_running: vec![],
            ..Default::default()
        };
        let a = plan(&snap, &[]).actions;
        let text: Vec<String> = a.iter().map(Action::describe).collect();
        assert_eq!(a.len(), 6, "{text:#?}");
        assert!(matches!(&a[0], Action::Unmount { mount_point, .. } if mount_point.ends_with("inner")), "{text:#?}");
        assert!(matches!(&a[3], Action::DetachLoop { device, .. } if device == "/dev/loop0"), "{text:#?}");
        assert!(
            matches!(&a[4], Action::Rmdir { path, after_unmount: true, .. } if path.to_string_lossy().contains("woeusb_source")),
            "{text:#?}"
        );
        let p = plan(&snap, &[]);
        let holders: Vec<String> = p.holders.iter().map(Holder::describe).collect();
        assert_eq!(holders.len(), 2, "{holders:#?}");
        assert!(
            holders[0].contains(
                "process 77 (sleep) holds /media/woeusb_target_1690000001_4242 (/dev/sdc1) through its working directory"
            ),
            "{holders:#?}"
        );
        assert!(
            holders[1].contains("2 open files") && holders[1].contains("uninterruptible sleep (D) in io_schedule"),
            "{holders:#?}"
        );
        assert_eq!(
            p.deleted_open,
            vec![DeletedOpen { pid: 79, comm: "vim".into(), path: "/tmp/x.swp (deleted)".into(), size: 40 << 20 }]
        );
        // the unrelated stick, loop1 and the non-empty target dir are left alone
        assert!(!text.iter().any(|t| t.contains("MYSTICK")
            || t.contains("loop1")
            || t.contains("remove the empty directory /media/woeusb_target")));
    }

    #[test]
    fn private_namespace_mounts_are_planned_with_their_namespace() {
        let ns = Namespace {
            id: "mnt:[99]".into(),
            is_host: false,
            pids: vec![555],
            mounts: parse("50 49 0:60 / /tmp/woeusb-target-20240101-120000-Monday.aB3xYz rw - fuseblk /dev/loop3 rw\n"),
        };
        let snap = Snapshot {
            namespaces: vec![host(BASE), ns],
            loops: vec![Loop {
                name: "loop3".into(),
                major: 0,
                minor: 60,
                backing: "/x.img".into(),
                autoclear: false,
                partitions: vec![],
                busy: false,
            }],
            dirs: vec![],
            live: vec![],
            ..Default::default()
        };
        let a = plan(&snap, &[]).actions;
        assert!(matches!(&a[0], Action::Unmount { namespace, host: false, .. } if namespace == "mnt:[99]"));
        // the same with its daemon stuck: the connection is aborted first
        let stuck = Snapshot { fuse_waiting: vec![(60, 3)], ..snap.clone() };
        let a = plan(&stuck, &[]).actions;
        assert!(matches!(&a[0], Action::AbortFuse { connection: 60, waiting: 3, .. }), "{a:#?}");
        assert!(matches!(&a[1], Action::Unmount { .. }));
        let idle = Snapshot { fuse_waiting: vec![(60, 0)], ..snap.clone() };
        assert!(!plan(&idle, &[]).actions.iter().any(|x| matches!(x, Action::AbortFuse { .. })));
        // A connection no mount uses, with requests waiting, while a daemon waits on its own DESTROY: aborted.
        let deadlock = Snapshot {
            fuse_orphans: vec![(7340033, 1), (99, 0), (77, 3)],
            destroy_waiters: vec![(321, "ntfs-3g".into())],
            ..snap.clone()
        };
        let a = plan(&deadlock, &[]).actions;
        let aborts: Vec<&Action> = a.iter().filter(|x| matches!(x, Action::AbortFuse { .. })).collect();
        assert_eq!(aborts.len(), 1, "{a:#?}");
        assert!(aborts[0].describe().contains("abort the stuck FUSE connection 7340033"), "{a:#?}");
        assert!(aborts[0].describe().contains("ntfs-3g (pid 321) stuck in D state"), "{a:#?}");
        // Without a daemon stuck in DESTROY, or when a mount still uses the connection: nothing.
        let no_waiter = Snapshot { fuse_orphans: vec![(7340033, 1)], ..snap.clone() };
        assert!(!plan(&no_waiter, &[]).actions.iter().any(|x| matches!(x, Action::AbortFuse { .. })));
        let used = Snapshot { fuse_orphans: vec![(60, 4)], destroy_waiters: vec![(5, "x".into())], ..snap.clone() };
        assert!(
            !plan(&used, &[]).actions.iter().any(|x| matches!(x, Action::AbortFuse { connection: 60, waiting: 4, .. }))
        );
    }

    /// A mount point that is not UTF-8 is planned with its exact bytes, matched against a named path byte
    /// for byte, and shown escaped; below a tool's directory it is recognised by that directory's name.
    #[test]
    fn paths_that_are_not_utf8_keep_their_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let mut text = BASE.as_bytes().to_vec();
        text.extend_from_slice(b"50 22 0:50 / /mnt/st\xffuck\\040\x1b[2J rw - tmpfs mine rw\n");
        text.extend_from_slice(b"51 22 0:51 / /mnt/st\xfeuck rw - tmpfs other rw\n");
        text.extend_from_slice(
            b"52 22 0:52 / /tmp/woeusb-target-20240101-120000-Monday.abc123/\xe9t\xe9 rw - tmpfs t rw\n",
        );
        let snap = Snapshot {
            namespaces: vec![Namespace {
                id: "mnt:[1]".into(),
                is_host: true,
                pids: vec![1],
                mounts: crate::sys::mountinfo::parse(&text),
            }],
            ..Default::default()
        };
        let named = PathBuf::from(std::ffi::OsStr::from_bytes(b"/mnt/st\xffuck \x1b[2J"));
        let a = plan(&snap, std::slice::from_ref(&named)).actions;
        let text: Vec<String> = a.iter().map(Action::describe).collect();
        let points: Vec<&[u8]> = a
            .iter()
            .filter_map(|x| match x {
                Action::Unmount { mount_point, .. } => Some(mount_point.as_os_str().as_bytes()),
                _ => None,
            })
            .collect();
        assert_eq!(
            points,
            [&b"/tmp/woeusb-target-20240101-120000-Monday.abc123/\xe9t\xe9"[..], b"/mnt/st\xffuck \x1b[2J"],
            "{text:#?}"
        );
        assert!(text[1].starts_with("unmount /mnt/st\\xffuck \\x1b[2J (tmpfs from mine)"), "{text:#?}");
        let json = serde_json::to_string(&a[1]).unwrap();
        assert!(json.contains(r#""mount_point":"/mnt/st\\xffuck \u001b[2J""#), "{json}");
    }

    #[test]
    fn named_paths_and_deleted_backing_files() {
        let snap = Snapshot {
            namespaces: vec![host(&format!("{BASE}60 22 0:70 / /mnt/stuck rw - tmpfs tmpfs rw\n"))],
            loops: vec![
                lp("loop5", 5, "/tmp/old.iso (deleted)", false),
                lp("loop6", 6, "/tmp/gone.img (deleted)", true),
            ],
            dirs: vec![],
            live: vec![],
            ..Default::default()
        };
        assert_eq!(plan(&snap, &[]).actions.len(), 1, "only the deleted-backing, non-autoclear loop");
        let a = plan(&snap, &["/mnt/stuck".into()]).actions;
        assert!(a.iter().any(|x| matches!(x, Action::Unmount { mount_point, reason: Reason::NamedByUser, .. } if mount_point == "/mnt/stuck")));
    }

    #[test]
    fn loops_in_use_elsewhere_are_never_detached() {
        let l = |name: &str, minor, backing: &str| lp(name, minor, backing, false);
        // loop9 backs a leftover mount, but the user has it mounted at /mnt/iso too
        let text = format!(
            "{BASE}40 22 7:9 / /media/woeusb_source_1690000000_4242 ro - udf /dev/loop9 ro\n\
             41 22 7:9 / /mnt/iso ro - udf /dev/loop9 ro\n\
             42 22 259:0 / /srv/data rw - ext4 /dev/loop5p1 rw\n"
        );
        let mut busy = l("loop6", 6, "/tmp/swapfile (deleted)");
        busy.busy = true;
        let mut parted = l("loop5", 5, "/tmp/scratch.img (deleted)");
        parted.partitions = vec![(259, 0)];
        let snap = Snapshot {
            namespaces: vec![host(&text)],
            loops: vec![l("loop9", 9, "/isos/w.iso"), busy, parted],
            ..Default::default()
        };
        let a = plan(&snap, &[]).actions;
        assert!(a.iter().any(
            |x| matches!(x, Action::Unmount { mount_point, .. } if mount_point.to_string_lossy().contains("woeusb"))
        ));
        assert!(!a.iter().any(|x| matches!(x, Action::DetachLoop { .. })), "{a:#?}");
    }

    #[test]
    fn a_run_still_going_on_is_left_alone() {
        let text = format!("{BASE}40 22 7:0 / /media/woeusb_source_1690000000_4242 ro - udf /dev/loop0 ro\n");
        let snap = Snapshot {
            namespaces: vec![host(&text)],
            loops: vec![lp("loop0", 0, "/w.iso", false)],
            dirs: vec![Dir { path: "/media/woeusb_source_1690000000_4242".into(), empty: true }],
            live: vec![(4242, "bash".into())],
            ..Default::default()
        };
        let p = plan(&snap, &[]);
        assert!(p.actions.is_empty(), "{:#?}", p.actions);
        assert_eq!(p.left_alone, vec!["/media/woeusb_source_1690000000_4242: process 4242 (bash) is still running"]);
        // WoeUSB 5.x names carry no pid: a running WoeUSB protects them
        let text = format!("{BASE}40 22 0:77 / /tmp/woeusb-target-20240101-120000-Monday.aB3xYz rw - tmpfs t rw\n");
        let snap = Snapshot {
            namespaces: vec![host(&text)],
            woeusb_running: vec![(999, "bash /usr/bin/woeusb --device x.iso /dev/sdb".into())],
            ..Default::default()
        };
        let p = plan(&snap, &[]);
        assert!(p.actions.is_empty(), "{:#?}", p.actions);
        assert!(p.left_alone[0].contains("process 999"), "{:?}", p.left_alone);
    }

    /// Random unrelated mount tables, loops and directories: the plan is always empty.
    #[test]
    fn unrelated_systems_get_an_empty_plan() {
        let mut seed = 0x2545F4914F6CDD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let words = [
            "media",
            "mnt",
            "tmp",
            "run",
            "user",
            "usb",
            "WoeUSB",
            "woeusb",
            "woesafe",
            "data",
            "iso",
            "source",
            "target",
            "1690000000",
            "4242",
            "x",
        ];
        for _ in 0..500 {
            let mut text = String::from("1 0 254:0 / / rw - ext4 /dev/vda rw\n");
            let mut dirs = Vec::new();
            for id in 2..(2 + next() % 12) {
                let depth = 1 + next() % 3;
                let mut path = String::new();
                for _ in 0..depth {
                    let w = words[(next() % words.len() as u64) as usize];
                    let sep = ["_", "-", ""][(next() % 3) as usize];
                    let w2 = words[(next() % words.len() as u64) as usize];
                    path.push_str(&format!("/{w}{sep}{w2}"));
                }
                text.push_str(&format!("{id} 1 0:{id} / {path} rw - tmpfs tmpfs rw\n"));
                dirs.push(Dir { path: path.into(), empty: next() % 2 == 0 });
            }
            let snap = Snapshot {
                namespaces: vec![host(&text)],
                loops: vec![lp("loop0", 0, "/x/y.img", false)],
                dirs,
                live: vec![(4242, "bash".into())],
                procs: vec![Proc {
                    pid: 5,
                    comm: "x".into(),
                    state: 'S',
                    cwd: Some((0, 3)),
                    deleted: vec![("/a (deleted)".into(), 1, (0, 3))],
                    ..Default::default()
                }],
                parent_devs: vec![],
                fuse_waiting: vec![(7, 5)],
                woeusb_running: vec![],
                fuse_orphans: vec![],
                destroy_waiters: vec![],
                devices: vec![],
                fuse_connections: vec![],
                ours: vec![],
                late_mounts: vec![],
            };
            let a = plan(&snap, &[]);
            assert_eq!(a, CleanupPlan::default(), "planned something on an unrelated system:\n{text}");
        }
    }
}

#[cfg(test)]
mod detached_tests {
    use super::*;
    use crate::sys::mountinfo::parse;

    #[test]
    fn held_filesystems_without_a_mount_are_found_with_their_holders() {
        let host = Namespace {
            id: "mnt:[1]".into(),
            is_host: true,
            pids: vec![1],
            mounts: parse(b"22 1 254:0 / / rw - ext4 /dev/vda rw\n24 22 0:25 / /tmp rw - tmpfs tmpfs rw\n"),
        };
        let snap = Snapshot {
            namespaces: vec![host],
            devices: vec![((8, 17), "/dev/sdb1".into()), ((8, 33), "/dev/sdc1".into()), ((254, 0), "/dev/vda".into())],
            fuse_connections: vec![(8 << 20) | 33],
            procs: vec![
                // cwd on a stick's vfat that no mount shows, a deleted file open on it
                Proc {
                    pid: 10,
                    comm: "bash".into(),
                    state: 'S',
                    cwd: Some((8, 17)),
                    fds: vec![(8, 17)],
                    deleted: vec![("/x (deleted)".into(), 5 << 20, (8, 17))],
                    ..Default::default()
                },
                // a FUSE daemon (fuseblk on sdc1) whose connection no mount uses
                Proc {
                    pid: 11,
                    comm: "mount.ntfs-3g".into(),
                    state: 'S',
                    block_fds: vec![(8, 33)],
                    ..Default::default()
                },
                // a memfd map (kernel-internal tmpfs, dev 0:1) and a mounted tmpfs: neither counts
                Proc { pid: 12, comm: "app".into(), state: 'S', maps: vec![(0, 1), (0, 25)], ..Default::default() },
                // a writer with a disk open that is not a FUSE device: not a filesystem
                Proc { pid: 13, comm: "dd".into(), state: 'D', block_fds: vec![(8, 17)], ..Default::default() },
            ],
            ..Default::default()
        };
        let d = detached(&snap);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!((d[0].device.as_str(), d[0].dev.as_str()), ("/dev/sdb1", "8:17"));
        assert_eq!(d[0].holders.len(), 1);
        assert_eq!(d[0].holders[0].how, ["working directory", "1 open file"]);
        assert_eq!((d[0].deleted_files, d[0].deleted_bytes), (1, 5 << 20));
        assert!(d[0].describe().contains("still alive; 1 deleted file(s) of 5.0 MiB"), "{}", d[0].describe());
        assert!(d[0].describe().ends_with("`kill 10`, or have them leave it)"), "{}", d[0].describe());
        // The daemon alone: never offered for killing.
        assert!(d[1].describe().contains("still served by its FUSE daemon 11 (mount.ntfs-3g)"), "{}", d[1].describe());
        assert!(!d[1].describe().contains("kill"), "{}", d[1].describe());
        // A holder and the daemon: only the holder is offered.
        let mut both = snap.clone();
        both.procs[1].cwd = None;
        both.procs.push(Proc { pid: 14, comm: "sh".into(), state: 'S', cwd: Some((8, 33)), ..Default::default() });
        let d = detached(&both);
        let text = d.iter().find(|d| d.dev == "8:33").unwrap().describe();
        assert!(text.contains("until process 14 let(s) go (end them, e.g. `kill 14`"), "{text}");
        assert!(text.ends_with("its FUSE daemon 11 (mount.ntfs-3g) ends by itself then"), "{text}");
        assert_eq!((d[1].device.as_str(), d[1].dev.as_str()), ("/dev/sdc1", "8:33"));
        assert_eq!(d[1].holders[0].pid, 11);
        assert_eq!(d[1].holders[0].how, ["FUSE daemon serving it (the device is open)"]);
        // (below)
        // The same filesystem mounted somewhere (any namespace): not detached.
        let mut mounted = snap.clone();
        mounted.namespaces[0].mounts.extend(parse(b"30 22 8:17 / /mnt rw - vfat /dev/sdb1 rw\n"));
        assert!(detached(&mounted).iter().all(|d| d.dev != "8:17"));
    }
}

#[cfg(test)]
mod helper_tests {
    use super::*;
    use crate::sys::mountinfo::parse;

    /// An orphaned helper of WoeUSB-ng (grub-install naming the target mount) keeps its mount from being
    /// unmounted under it; a FUSE daemon naming its mount point (that is how it serves it) does not, nor does a
    /// path that merely starts with the same characters.
    #[test]
    fn a_helper_still_working_on_a_leftover_mount_keeps_it() {
        let text = b"22 1 254:0 / / rw - ext4 /dev/vda rw\n\
            40 22 8:33 / /media/woeusb_target_1690000001_4190001 rw - vfat /dev/sdc1 rw\n\
            41 22 0:60 / /media/woeusb_source_1690000000_4190001 ro - fuse.fuseiso fuseiso ro\n";
        let host = Namespace { id: "mnt:[1]".into(), is_host: true, pids: vec![1], mounts: parse(text) };
        let grub = Proc {
            pid: 50,
            comm: "grub-install".into(),
            state: 'S',
            cmdline: "grub-install --boot-directory=/media/woeusb_target_1690000001_4190001 --force /dev/sdc".into(),
            ..Default::default()
        };
        let fuseiso = Proc {
            pid: 51,
            comm: "fuseiso".into(),
            state: 'S',
            cmdline: "fuseiso /isos/w.iso /media/woeusb_source_1690000000_4190001".into(),
            fuse_daemon: true,
            ..Default::default()
        };
        let other = Proc {
            pid: 52,
            comm: "ls".into(),
            state: 'S',
            cmdline: "ls /media/woeusb_target_1690000001_41900012".into(),
            ..Default::default()
        };
        // A writer blocked on the mount, naming it: no helper of the tool.
        let writer = Proc {
            pid: 53,
            comm: "sh".into(),
            state: 'S',
            cmdline: "sh -c echo data > /media/woeusb_source_1690000000_4190001/file".into(),
            ..Default::default()
        };
        let mut snap =
            Snapshot { namespaces: vec![host], procs: vec![grub, fuseiso, other, writer], ..Default::default() };
        let p = plan(&snap, &[]);
        let unmounts: Vec<String> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Unmount { mount_point, .. } => Some(mount_point.display().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(unmounts, ["/media/woeusb_source_1690000000_4190001"], "{p:#?}");
        assert!(
            p.left_alone
                .iter()
                .any(|l| l.starts_with("/media/woeusb_target_1690000001_4190001: process 50 (grub-install)")),
            "{:?}",
            p.left_alone
        );
        // recover's own ancestors (sudo naming the path) do not count.
        snap.ours = vec![50];
        assert_eq!(plan(&snap, &[]).actions.iter().filter(|a| matches!(a, Action::Unmount { .. })).count(), 2);
    }
}
