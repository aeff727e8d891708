//! Verification as the worker runs it (`woesafe verify` of an NTFS stick): inside its namespaces, the main
//! partition on a read-only, direct-I/O autoclear loop device, ntfs-3g mounting it read-only in the private
//! tmpfs, the check, then the orderly unmount while the daemon lives.

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

/// Run the verification; the returned frame is the last one the worker sends.
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
    let (layout, _) = probe(&target, &req.target)?;
    let Some(layout) = layout.filter(|l| l.fs == Fs::Ntfs) else {
        let mut progress = sender(link);
        return check_stick(&target, &req.target, &source, StickFiles::Userspace, work.path(), &mut progress);
    };
    // Direct I/O: ntfs-3g's reads go to the device, not to pages cached from the write.
    let lo = LoopDevice::attach(
        &target,
        &req.target,
        LoopWindow { offset: layout.main.offset, size: layout.main.size, read_only: true, direct_io: true },
    )
    .map_err(|e| setup("cannot attach the NTFS partition")(e.to_string()))?;
    // As in a write: the supervisor holds our mount namespace while a FUSE daemon serves in it (the fuseblk
    // deadlock in DESIGN.md), and can abort the connection through the fusectl mounted here.
    let rdev = std::fs::metadata(lo.path()).map(|m| std::os::unix::fs::MetadataExt::rdev(&m)).unwrap_or(0);
    let connection = crate::recover::fuse::connection_id(libc::major(rdev), libc::minor(rdev));
    let fusectl = MountGuard::mount("fusectl", &work.path().join("fusectl"), "fusectl", flags, None).ok();
    link.send(&Up::Fuse { connection, fusectl: fusectl.as_ref().map(|m| m.path().to_path_buf()) })
        .map_err(|e| setup("lost contact with the supervisor")(e.to_string()))?;
    let mount = NtfsMount::mount_read_only(lo.path(), &work.path().join("target"), &work.path().join("ntfs-3g.log"))
        .map_err(|e| setup("cannot mount the NTFS partition read-only")(e.to_string()))?;
    let mut progress = sender(link);
    let result =
        check_stick(&target, &req.target, &source, StickFiles::Mounted(mount.path()), work.path(), &mut progress);
    let unmounted = mount.unmount(Duration::from_secs(60));
    if let Some(m) = fusectl {
        let _ = m.unmount();
    }
    drop(lo);
    let report = result?;
    unmounted.map_err(|e| setup("cannot unmount the NTFS partition")(e.to_string()))?;
    Ok(report)
}
