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

fn unmount(namespace_pid: Option<i32>, mount_point: &str) -> Result<(), String> {
    match namespace_pid {
        None => nix::mount::umount2(mount_point, nix::mount::MntFlags::MNT_DETACH).map_err(|e| e.to_string()),
        Some(pid) => {
            let mut cmd = Command::new("nsenter");
            cmd.arg("-t").arg(pid.to_string()).arg("-m").arg("umount").arg("-l").arg(mount_point);
            crate::worker::helper::harden(&mut cmd);
            let out = cmd.output().map_err(|e| format!("cannot run nsenter (util-linux): {e}"))?;
            if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
        }
    }
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
                            result = unmount(Some(pid), mount_point);
                            // A failure with the holder still alive is real; otherwise look again.
                            if result.is_ok() || std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok() {
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
