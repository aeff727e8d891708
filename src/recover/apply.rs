//! Carrying out a recovery plan: lazy unmounts (in the namespace that holds the mount, through nsenter, since
//! a multi-threaded process cannot enter a mount namespace), loop detaches (LOOP_CLR_FD, which the kernel
//! turns into a lazy detach while the device is busy), and rmdir of empty directories.

use std::os::fd::AsRawFd;
use std::process::Command;

use serde::Serialize;

use super::plan::Action;

const LOOP_CLR_FD: libc::c_ulong = 0x4C01;

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub action: String,
    pub ok: bool,
    pub error: Option<String>,
}

/// Unmount lazily, here or in the mount namespace `namespace` through the process `pid` that holds it. The
/// namespace is pinned by an open fd and checked to be the planned one before anything happens, so a pid that
/// was reused meanwhile can never make us unmount in the wrong namespace.
fn unmount(target: Option<(i32, &str)>, mount_point: &str) -> Result<(), String> {
    let Some((pid, namespace)) = target else {
        return nix::mount::umount2(mount_point, nix::mount::MntFlags::MNT_DETACH).map_err(|e| e.to_string());
    };
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .map_err(|e| format!("cannot open /proc/{pid}/ns/mnt: {e}"))?;
    let ino = std::os::unix::fs::MetadataExt::ino(&ns.metadata().map_err(|e| e.to_string())?);
    if format!("mnt:[{ino}]") != namespace {
        return Err(format!("cannot open /proc/{pid}/ns/mnt: process {pid} is no longer in {namespace}"));
    }
    // nsenter gets the pinned namespace as an inherited descriptor (dup clears close-on-exec).
    // SAFETY: dup of a valid open fd; the copy is closed below.
    let fd = unsafe { libc::dup(ns.as_raw_fd()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--mount=/proc/self/fd/{fd}")).arg("umount").arg("-l").arg(mount_point);
    crate::worker::helper::harden(&mut cmd);
    let out = cmd.output();
    // SAFETY: closing the descriptor dup returned above, once.
    unsafe { libc::close(fd) };
    let out = out.map_err(|e| format!("cannot run nsenter (util-linux): {e}"))?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
}

fn detach_loop(device: &str) -> Result<(), String> {
    let f = std::fs::File::open(device).map_err(|e| format!("cannot open {device}: {e}"))?;
    // SAFETY: LOOP_CLR_FD takes no argument; the fd is open for the duration of the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error().to_string()) }
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
                Action::Unmount { namespace, host, mount_point, .. } => {
                    if *host {
                        unmount(None, mount_point)
                    } else {
                        // Holders come and go (a FUSE daemon exits once its mount is gone, and with its last
                        // holder the namespace and all its mounts go): look again on each try.
                        let mut result = Ok(());
                        for _ in 0..5 {
                            let Some(pid) = namespace_pids(namespace) else {
                                result = Ok(());
                                break;
                            };
                            result = unmount(Some((pid, namespace)), mount_point);
                            // A failure while the same process still holds the namespace is real; otherwise the
                            // holder went away under us: look again.
                            if result.is_ok() || namespace_pids(namespace) == Some(pid) {
                                break;
                            }
                        }
                        result
                    }
                }
                Action::DetachLoop { device, .. } => detach_loop(device),
                Action::AbortFuse { connection, .. } => super::fuse::abort(*connection),
                Action::Rmdir { path, after_unmount, .. } => match std::fs::remove_dir(path) {
                    Err(e) if *after_unmount && e.raw_os_error() == Some(libc::ENOTEMPTY) => {
                        return Outcome {
                            action: a.describe(),
                            ok: true,
                            error: Some(format!(
                                "kept: {path} holds files that were hidden under the mount; they are yours to \
                                 look at (nothing is deleted recursively)"
                            )),
                        };
                    }
                    r => r.map_err(|e| e.to_string()),
                },
            };
            Outcome { action: a.describe(), ok: result.is_ok(), error: result.err() }
        })
        .collect()
}
