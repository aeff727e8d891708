//! Carrying out a recovery plan: lazy unmounts (in the namespace that holds the mount, through nsenter, since
//! a multi-threaded process cannot enter a mount namespace), loop detaches (LOOP_CLR_FD, which the kernel
//! turns into a lazy detach while the device is busy), and rmdir of empty directories.

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

use super::plan::Action;

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub action: String,
    pub ok: bool,
    pub error: Option<String>,
    /// What happened instead, when that is fine (e.g. a directory kept because it holds files).
    pub note: Option<String>,
}

/// The hidden argument for the child that unmounts inside another mount namespace.
pub const NS_UNMOUNT_ARG: &str = "__woesafe_ns_unmount";

/// Whether `mount_point` (with device `dev`, "MAJ:MIN") is in the mount table `text`.
fn is_mounted(text: &[u8], mount_point: &Path, dev: &str) -> bool {
    crate::sys::mountinfo::parse(text)
        .iter()
        .any(|m| m.mount_point == mount_point && format!("{}:{}", m.major, m.minor) == dev)
}

/// The child's side, run as `woesafe __woesafe_ns_unmount FD MOUNT_POINT MAJ:MIN` with FD a pinned mount
/// namespace: enter it (single-threaded, right at start), check the planned mount is still there, and unmount
/// it lazily without following symlinks. Nothing is executed after entering the namespace, so no program or
/// library of that namespace's file view ever runs with our privileges.
pub fn ns_unmount_main(args: &[OsString]) -> i32 {
    let [fd, mount_point, dev] = args else { return 2 };
    let (Some(Ok(fd)), Some(dev)) = (fd.to_str().map(str::parse::<u32>), dev.to_str()) else { return 2 };
    let mount_point = Path::new(mount_point);
    // The inherited descriptor is reopened through /proc (no unsafe adoption of a number from the command line:
    // one that is not open fails here); the inherited copy stays open until this short-lived process exits.
    let ns = match std::fs::File::open(format!("/proc/self/fd/{fd}")) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("cannot open the inherited mount namespace descriptor {fd}: {e}");
            return 1;
        }
    };
    if let Err(e) = nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNS) {
        eprintln!("cannot enter the mount namespace: {e}");
        return 1;
    }
    let table = std::fs::read("/proc/thread-self/mountinfo").unwrap_or_default();
    if !is_mounted(&table, mount_point, dev) {
        return 0; // already gone (e.g. a propagated copy that went with the host's unmount)
    }
    match nix::mount::umount2(mount_point, nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// Unmount lazily, here or in the mount namespace `namespace` through the process `pid` that holds it. The
/// namespace is pinned by an open fd and checked to be the planned one before anything happens, so a pid that
/// was reused meanwhile can never make us unmount in the wrong namespace; a mount that is already gone counts
/// as done.
fn unmount(target: Option<(i32, &str)>, mount_point: &Path, dev: &str) -> Result<(), String> {
    let Some((pid, namespace)) = target else {
        let table = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
        if !is_mounted(&table, mount_point, dev) {
            return Ok(());
        }
        return nix::mount::umount2(
            mount_point,
            nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW,
        )
        .map_err(|e| e.to_string());
    };
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .map_err(|e| format!("cannot open /proc/{pid}/ns/mnt: {e}"))?;
    let ino = std::os::unix::fs::MetadataExt::ino(&ns.metadata().map_err(|e| e.to_string())?);
    if format!("mnt:[{ino}]") != namespace {
        return Err(format!("process {pid} is no longer in {namespace}"));
    }
    // Our own binary, from the host's files, gets the pinned namespace as an inherited descriptor (dup
    // clears close-on-exec); our copy is closed when `inherited` drops.
    let inherited = nix::unistd::dup(&ns).map_err(|e| format!("cannot duplicate /proc/{pid}/ns/mnt: {e}"))?;
    let out = std::env::current_exe().and_then(|exe| {
        let mut cmd = Command::new(exe);
        cmd.arg(NS_UNMOUNT_ARG).arg(inherited.as_raw_fd().to_string()).arg(mount_point).arg(dev);
        crate::sys::helper::harden(&mut cmd);
        cmd.output()
    });
    drop(inherited);
    let out = out.map_err(|e| format!("cannot start the unmount helper: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
}

/// LOOP_CLR_FD on a loop device the plan found attached to `backing`. One that is no longer attached is done,
/// with a note: an autoclear loop (`mount -o loop` sets autoclear, as the legacy tools mount their ISO) goes by
/// itself with its last mount, which this plan may just have taken away. One attached to another file by now
/// is someone else's, and is left alone.
fn detach_loop(device: &str, backing: &str) -> Result<Option<String>, String> {
    const GONE: &str = "it had already gone by itself (an autoclear loop goes with its last mount)";
    let name = device.strip_prefix("/dev/").unwrap_or(device);
    match crate::sys::loopdev::backing_file(name) {
        None => return Ok(Some(GONE.into())),
        Some(now) if now != backing => {
            return Err(format!(
                "{device} is backed by {} now, not by what was planned: left alone",
                crate::cli::term::escape(&now)
            ));
        }
        Some(_) => {}
    }
    let f = std::fs::File::open(device).map_err(|e| format!("cannot open {device}: {e}"))?;
    match crate::sys::loopdev::clear_fd(&f) {
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(Some(GONE.into())),
        r => r.map(|()| None).map_err(|e| e.to_string()),
    }
}

/// A process that holds the mount namespace `id` now (read afresh: holders come and go while we act).
pub fn namespace_holder(id: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
        let link = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()?;
        (link.to_string_lossy() == id).then_some(pid)
    })
}

/// Carry out the actions in order; each one's outcome is reported, a failure does not stop the rest.
pub fn apply(actions: &[Action], namespace_pids: &dyn Fn(&str) -> Option<i32>) -> Vec<Outcome> {
    actions
        .iter()
        .map(|a| {
            let result = match a {
                Action::Unmount { namespace, host, mount_point, device, .. } => {
                    if *host {
                        unmount(None, mount_point, device)
                    } else {
                        // Holders come and go (a FUSE daemon exits once its mount is gone, and with its last
                        // holder the namespace and all its mounts go): look again on each try.
                        let mut result = Ok(());
                        for _ in 0..5 {
                            let Some(pid) = namespace_pids(namespace) else {
                                result = Ok(());
                                break;
                            };
                            result = unmount(Some((pid, namespace)), mount_point, device);
                            // A failure while the same process still holds the namespace is real; otherwise the
                            // holder went away under us: look again.
                            if result.is_ok() || namespace_pids(namespace) == Some(pid) {
                                break;
                            }
                        }
                        result
                    }
                }
                Action::DetachLoop { device, backing, .. } => match detach_loop(device, backing) {
                    Ok(note) => return Outcome { action: a.describe(), ok: true, error: None, note },
                    Err(e) => Err(e),
                },
                Action::AbortFuse { connection, .. } => super::fuse::abort(*connection),
                Action::Rmdir { path, after_unmount, .. } => match std::fs::remove_dir(path) {
                    Err(e) if *after_unmount && e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                        return Outcome {
                            action: a.describe(),
                            ok: true,
                            error: None,
                            note: Some(format!(
                                "kept: {} holds files that were hidden under the mount; they are yours to \
                                 look at (nothing is deleted recursively)",
                                crate::cli::term::path(path)
                            )),
                        };
                    }
                    r => r.map_err(|e| e.to_string()),
                },
            };
            Outcome { action: a.describe(), ok: result.is_ok(), error: result.err(), note: None }
        })
        .collect()
}
