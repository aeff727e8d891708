//! NTFS targets: mkntfs, and ntfs-3g as a FUSE daemon that is a child of the worker, inside its PID and mount
//! namespaces. The one rule that keeps it safe (DESIGN.md, the fuseblk deadlock): unmount while the daemon
//! lives, then wait for it to finish; never leave the daemon as the last holder of the namespace. When the
//! worker is killed instead, the supervisor holds the namespace until every process in it has gone (see
//! `worker::spawn`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::media::SourceEntry;
use crate::sys::helper;

#[derive(Debug, thiserror::Error)]
pub enum NtfsError {
    #[error("cannot start ntfs-3g: {0} (install the Debian package ntfs-3g)")]
    Spawn(#[source] std::io::Error),
    #[error("ntfs-3g could not mount {device}: {log}")]
    MountFailed { device: String, log: String },
    #[error("ntfs-3g did not mount {device} within {secs} s")]
    MountTimeout { device: String, secs: u64 },
    #[error("cannot unmount the NTFS filesystem at {path}: {errno}")]
    Unmount { path: PathBuf, errno: nix::Error },
    #[error("ntfs-3g did not finish writing within {secs} s after the unmount")]
    DaemonHung { secs: u64 },
    #[error("ntfs-3g ended with {status} after the unmount: {log}")]
    DaemonFailed { status: String, log: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `mkntfs` arguments: quick format, the disk's sector size, the label, and the partition's place on the disk
/// (hidden sectors, in the disk's sectors, and a 255/63 geometry, as Windows writes them, so boot code that
/// reads the boot sector finds its partition).
pub fn mkntfs_args(device: &Path, label: &str, hidden_sectors: u64, sector: u64) -> Vec<String> {
    vec![
        "-Q".into(),
        "-s".into(),
        sector.to_string(),
        "-F".into(),
        "-q".into(),
        "-L".into(),
        label.into(),
        "-p".into(),
        hidden_sectors.to_string(),
        "-H".into(),
        "255".into(),
        "-S".into(),
        "63".into(),
        device.to_string_lossy().into_owned(),
    ]
}

/// Bytes NTFS needs for these files: content in 4 KiB clusters, one 1 KiB MFT record per entry, and what
/// mkntfs reserves for itself (log file, MFT mirror, bitmaps) on a stick-sized volume.
pub fn estimate_disk_bytes(entries: &[SourceEntry]) -> u64 {
    let content: u64 = entries.iter().map(|e| e.size.div_ceil(4096) * 4096).sum();
    content + entries.len() as u64 * 4096 + (96 << 20)
}

/// The volume serial number in the NTFS boot sector (offset 0x48): GRUB's `search --fs-uuid` names the volume
/// by it, as 16 hex digits.
pub fn volume_uuid(device: &File, path: &Path) -> Result<String, NtfsError> {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 8];
    device.read_exact_at(&mut b, 0x48).map_err(|source| NtfsError::Read { path: path.to_path_buf(), source })?;
    Ok(format!("{:016x}", u64::from_le_bytes(b)))
}

/// An ntfs-3g mount. Dropping it unmounts while the daemon lives and waits for it (bounded).
#[derive(Debug)]
pub struct NtfsMount {
    path: PathBuf,
    daemon: Option<Child>,
    log: PathBuf,
    mounted: bool,
    remove_dir: bool,
}

fn is_mounted(path: &Path) -> bool {
    // As bytes: one mount point elsewhere that is not UTF-8 must not hide this one.
    crate::sys::mountinfo::read_self().is_ok_and(|mounts| mounts.iter().any(|m| Path::new(&m.mount_point) == path))
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(4)..].join(" | ")
}

impl NtfsMount {
    /// Start ntfs-3g on `device` at `mount_point` (created when missing) and wait for the mount. Its
    /// messages go to `log` (a file in the worker's private tmpfs).
    pub fn mount(device: &Path, mount_point: &Path, log: &Path) -> Result<NtfsMount, NtfsError> {
        Self::mount_with(device, mount_point, log, "no_detach,windows_names,big_writes,noatime")
    }

    /// As `mount`, read-only (for verifying a stick).
    pub fn mount_read_only(device: &Path, mount_point: &Path, log: &Path) -> Result<NtfsMount, NtfsError> {
        Self::mount_with(device, mount_point, log, "ro,no_detach,noatime")
    }

    fn mount_with(device: &Path, mount_point: &Path, log: &Path, options: &str) -> Result<NtfsMount, NtfsError> {
        let remove_dir = !mount_point.exists();
        if remove_dir {
            std::fs::create_dir(mount_point)
                .map_err(|source| NtfsError::Create { path: mount_point.to_path_buf(), source })?;
        }
        let log_file = File::create(log).map_err(|source| NtfsError::Create { path: log.to_path_buf(), source })?;
        let mut cmd = Command::new("ntfs-3g");
        // no_detach: the daemon stays our child (so we can wait for it); windows_names: refuse names Windows
        // cannot open; big_writes: 128 KiB writes instead of 4 KiB ones.
        cmd.args(["-o", options])
            .arg(device)
            .arg(mount_point)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(NtfsError::Spawn)?)
            .stderr(log_file)
            .env("LC_ALL", "C");
        helper::harden(&mut cmd);
        let daemon = cmd.spawn().map_err(NtfsError::Spawn)?;
        let mut m = NtfsMount {
            path: mount_point.to_path_buf(),
            daemon: Some(daemon),
            log: log.to_path_buf(),
            mounted: false,
            remove_dir,
        };
        let device_name = device.display().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if is_mounted(&m.path) {
                m.mounted = true;
                return Ok(m);
            }
            if let Some(child) = m.daemon.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                m.daemon = None;
                return Err(NtfsError::MountFailed { device: device_name, log: log_tail(&m.log) });
            }
            if Instant::now() > deadline {
                return Err(NtfsError::MountTimeout { device: device_name, secs: 30 });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmount (lazily: our own open files may still be closing) while the daemon lives, then wait for it to
    /// write everything out and exit, and check that it exited cleanly.
    pub fn unmount(mut self, timeout: Duration) -> Result<(), NtfsError> {
        self.finish(timeout)
    }

    fn finish(&mut self, timeout: Duration) -> Result<(), NtfsError> {
        if self.mounted {
            self.mounted = false;
            nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|errno| NtfsError::Unmount { path: self.path.clone(), errno })?;
        }
        let Some(mut child) = self.daemon.take() else { return Ok(()) };
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    // It never answered: the connection is stuck. Killing it is safe now, because we (the
                    // worker) still hold the mount namespace.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(NtfsError::DaemonHung { secs: timeout.as_secs() });
                }
            }
        };
        if self.remove_dir {
            let _ = std::fs::remove_dir(&self.path);
        }
        if !status.success() {
            return Err(NtfsError::DaemonFailed { status: status.to_string(), log: log_tail(&self.log) });
        }
        Ok(())
    }
}

impl Drop for NtfsMount {
    fn drop(&mut self) {
        if let Err(e) = self.finish(Duration::from_secs(60)) {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkntfs_arguments() {
        let a = mkntfs_args(Path::new("/dev/loop9"), "CCCOMA_X64", 2048, 512);
        assert_eq!(a.join(" "), "-Q -s 512 -F -q -L CCCOMA_X64 -p 2048 -H 255 -S 63 /dev/loop9");
        let a = mkntfs_args(Path::new("/dev/loop9"), "CCCOMA_X64", 256, 4096);
        assert_eq!(a.join(" "), "-Q -s 4096 -F -q -L CCCOMA_X64 -p 256 -H 255 -S 63 /dev/loop9");
    }

    #[test]
    fn estimate_counts_clusters_records_and_reserve() {
        let e = |s| SourceEntry { path: "x".into(), is_dir: false, size: s, mtime: 0 };
        assert_eq!(estimate_disk_bytes(&[]), 96 << 20);
        assert_eq!(estimate_disk_bytes(&[e(1), e(4097)]), 4096 + 8192 + 2 * 4096 + (96 << 20));
    }
}
