//! Verification as the worker runs it, inside its namespaces: `woesafe verify` of an NTFS stick (the request
//! frame), and `check_in_worker`, which a write's job calls right after writing (`write --verify`). An NTFS
//! stick's main partition goes on a read-only, direct-I/O autoclear loop device, ntfs-3g mounts it read-only
//! in the worker's private tmpfs, and it is unmounted while the daemon lives.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;

use super::{StickFiles, VerifyError, VerifyReport, check_stick, probe};
use crate::media::source::Source;
use crate::protocol::{Channel, Up, VerifyRequest};
use crate::stick::choose::Fs;
use crate::stick::ntfs::NtfsMount;
use crate::sys::argfile::{self, Want};
use crate::sys::loopdev::{LoopDevice, LoopWindow};
use crate::sys::mount::MountGuard;

/// Run the verification of a `Down::Verify` request; the returned frame is the last one the worker sends.
pub fn run(req: &VerifyRequest, link: &mut dyn Channel) -> Up {
    match execute(req, link) {
        Ok(report) => Up::Verified(Box::new(report)),
        Err(e) => {
            Up::VerifyFailed { refused: matches!(&e, VerifyError::Source(s) if s.is_refusal()), message: e.to_string() }
        }
    }
}

fn setup(what: &'static str) -> impl Fn(String) -> VerifyError {
    move |message| VerifyError::Setup { what, message }
}

/// Progress frames, at most every 100 ms (and the last one).
fn sender(link: &mut dyn Channel) -> impl FnMut(u64, u64) + '_ {
    let mut last = Instant::now();
    move |done: u64, total: u64| {
        if done == total || last.elapsed() >= Duration::from_millis(100) {
            last = Instant::now();
            let _ = link.send(&Up::Progress { done, total });
        }
    }
}

fn execute(req: &VerifyRequest, link: &mut dyn Channel) -> Result<VerifyReport, VerifyError> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let work = MountGuard::mount("woesafe-work", &req.work_dir, "tmpfs", flags, Some("mode=0700,size=64m"))
        .map_err(|e| setup("cannot set up the worker's private directory")(e.to_string()))?;
    let source = Source::open_userspace(&req.iso, &req.iso_id)?;
    let target = argfile::reopen(&req.target, Want::RegularOrBlock, false, 0, &req.target_id)
        .map_err(|e| setup("cannot open the target again")(e.to_string()))?;
    // Test-only (see supervisor::verify): hold here, still answering a stop.
    if let Some(ms) = req.pause_ms
        && !crate::sys::stop::pause_unless_stopped(ms)
    {
        return Err(VerifyError::Stopped);
    }
    check_in_worker(&target, &req.target, &source, work.path(), link)
}

/// Verify the stick `target` (the whole disk, or the image file: read-only is enough) against `source`, in
/// the worker: FAT32 in userspace, NTFS through a read-only ntfs-3g mount made here. `work` is the worker's
/// private tmpfs (mount points `verify-target` and `verify-fusectl` and a few MiB of scratch go in it).
/// Sends `Up::Fuse` before ntfs-3g starts (the supervisor must hold the namespace, as in a write) and
/// `Up::Progress` as file bytes are compared; the caller sends the last frame. Nothing of the stick may be
/// mounted read-write any more (a write's ntfs-3g must have been unmounted and waited for).
pub fn check_in_worker(
    target: &File,
    target_path: &Path,
    source: &Source,
    work: &Path,
    link: &mut dyn Channel,
) -> Result<VerifyReport, VerifyError> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // Before anything reads the stick (the probe, ntfs-3g's mount): what a write left in the page cache goes, so
    // the bytes compared come from the device (check_stick drops it again and says when it cannot).
    let _ = super::drop_cached(target);
    // The block devices read, for the stall watchdog's I/O counters.
    let mut devices: Vec<String> = Vec::new();
    if target.metadata().is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type())) {
        let canonical = std::fs::canonicalize(target_path).unwrap_or_else(|_| target_path.to_path_buf());
        devices.extend(canonical.file_name().map(|n| n.to_string_lossy().into_owned()));
    }
    link.send(&Up::Devices(devices.clone())).map_err(|e| setup("lost contact with the supervisor")(e.to_string()))?;
    let (layout, _) = probe(target, target_path)?;
    let Some(layout) = layout.filter(|l| l.fs == Fs::Ntfs) else {
        let mut progress = sender(link);
        return check_stick(target, target_path, source, StickFiles::Userspace, work, &mut progress);
    };
    // Direct I/O: ntfs-3g's reads go to the device, not to pages cached from the write.
    let lo = LoopDevice::attach(
        target,
        target_path,
        LoopWindow { offset: layout.main.offset, size: layout.main.size, read_only: true, direct_io: true },
    )
    .map_err(|e| setup("cannot attach the NTFS partition")(e.to_string()))?;
    // As in a write: the supervisor holds our mount namespace while a FUSE daemon serves in it (the fuseblk
    // deadlock in DESIGN.md), and can abort the connection through the fusectl mounted here.
    devices.push(lo.name());
    link.send(&Up::Devices(devices)).map_err(|e| setup("lost contact with the supervisor")(e.to_string()))?;
    let rdev = std::fs::metadata(lo.path()).map(|m| std::os::unix::fs::MetadataExt::rdev(&m)).unwrap_or(0);
    let connection = crate::recover::fuse::connection_id(libc::major(rdev), libc::minor(rdev));
    let fusectl = MountGuard::mount("fusectl", &work.join("verify-fusectl"), "fusectl", flags, None).ok();
    link.send(&Up::Fuse { connection, fusectl: fusectl.as_ref().map(|m| m.path().to_path_buf()) })
        .map_err(|e| setup("lost contact with the supervisor")(e.to_string()))?;
    let mount = NtfsMount::mount_read_only(lo.path(), &work.join("verify-target"), &work.join("verify-ntfs-3g.log"))
        .map_err(|e| setup("cannot mount the NTFS partition read-only")(e.to_string()))?;
    let mut progress = sender(link);
    let result = check_stick(target, target_path, source, StickFiles::Mounted(mount.path()), work, &mut progress);
    let unmounted = mount.unmount(Duration::from_secs(60));
    if let Some(m) = fusectl {
        let _ = m.unmount();
    }
    drop(lo);
    let report = result?;
    unmounted.map_err(|e| setup("cannot unmount the NTFS partition")(e.to_string()))?;
    Ok(report)
}
