//! Verifying a stick whose files need a mount (NTFS): the worker mounts it read-only (ntfs-3g) in its own
//! namespaces and checks it there; this follows it as a write is followed (progress, its FUSE daemon, stop
//! requests: the first orderly, the second at once).

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::event::{Event, StopHandle};
use crate::exit::{self, Exit, fail};
use crate::protocol::{Down, Up, VerifyRequest};
use crate::sys::argfile::FileId;
use crate::verify::VerifyReport;
use crate::worker::spawn::{self as spawner, Worker};

/// Verify `target` (checked as `target_id`) against `iso` (checked as `iso_id`) in a worker. Progress, info and
/// warnings go to `on_event`; a stop asked through `stop` ends it with 128+N.
pub fn in_worker(
    iso: &Path,
    iso_id: FileId,
    target: &Path,
    target_id: FileId,
    stall_after: Duration,
    stop: &StopHandle,
    on_event: &mut dyn FnMut(&Event),
) -> Result<VerifyReport, Exit> {
    let work_dir = super::target::make_work_dir()?;
    let request = VerifyRequest {
        iso: std::fs::canonicalize(iso).unwrap_or_else(|_| iso.to_path_buf()),
        iso_id,
        target: target.to_path_buf(),
        target_id,
        work_dir: work_dir.clone(),
        // Test builds only: `WOESAFE_TEST_PAUSE_AT=verify:ms` holds the worker before it reads the stick, so that
        // a test can hang the device under it.
        pause_ms: super::test_pause_at().filter(|(step, _)| step == "verify").map(|(_, ms)| ms),
    };
    let (events, inbox) = mpsc::channel();
    let result = match spawner::spawn(events, None) {
        Ok(mut worker) => follow(&mut worker, &inbox, request, stall_after, stop, on_event),
        Err(e) => Err(fail(exit::FAILED, e)),
    };
    // The worker is gone, and with it its private mounts.
    let _ = std::fs::remove_dir(&work_dir);
    result
}

fn follow(
    worker: &mut Worker,
    inbox: &mpsc::Receiver<spawner::Event>,
    request: VerifyRequest,
    stall_after: Duration,
    stop: &StopHandle,
    on_event: &mut dyn FnMut(&Event),
) -> Result<VerifyReport, Exit> {
    worker
        .send(&Down::Verify(Box::new(request)))
        .map_err(|e| fail(exit::FAILED, format!("lost contact with the worker: {e}")))?;
    let mut ending: Option<Result<VerifyReport, Exit>> = None;
    let mut stops_seen = 0;
    let mut killed: Option<Instant> = None;
    let started = Instant::now();
    let mut devices: Vec<String> = Vec::new();
    let mut movement = crate::worker::watchdog::Movement::default();
    loop {
        // A worker stuck in the kernel keeps its pipe open even when killed: stop waiting for it.
        if killed.is_some_and(|t| t.elapsed() >= Duration::from_secs(1)) {
            break;
        }
        match inbox.recv_timeout(Duration::from_millis(100)) {
            Ok(spawner::Event::Frame(frame)) => {
                movement.moved();
                match frame {
                    Up::Devices(d) => devices = d,
                    Up::Progress { done, total } => {
                        let secs = started.elapsed().as_secs_f64();
                        let bytes_per_second = if secs > 0.0 { (done as f64 / secs) as u64 } else { 0 };
                        on_event(&Event::Progress { step: Some("verify"), done, total, bytes_per_second })
                    }
                    Up::Fuse { connection, fusectl } => worker.hold_for_fuse(connection, fusectl),
                    Up::Info(message) => on_event(&Event::Info { message }),
                    Up::Detail(message) => on_event(&Event::Detail { message }),
                    Up::Warning(message) => on_event(&Event::Warning { message }),
                    Up::Verified(r) => ending = Some(Ok(*r)),
                    Up::VerifyFailed { message, refused } => {
                        let message = crate::cli::term::escape(&message).into_owned();
                        ending = Some(Err(fail(if refused { exit::REFUSED } else { exit::FAILED }, message)))
                    }
                    other => {
                        worker.signal(nix::sys::signal::Signal::SIGKILL);
                        ending = Some(Err(fail(exit::FAILED, format!("unexpected frame from the worker: {other:?}"))));
                        break;
                    }
                }
            }
            Ok(spawner::Event::Bad(e)) => {
                worker.signal(nix::sys::signal::Signal::SIGKILL);
                ending = Some(Err(fail(exit::FAILED, format!("bad message from the worker: {e}"))));
                break;
            }
            Ok(spawner::Event::Closed) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if movement.stalled(&devices, stall_after) && ending.is_none() && killed.is_none() {
            let report = crate::worker::watchdog::stalled(
                worker,
                Some(crate::protocol::Step::Verify),
                &devices,
                stall_after,
                "verify only reads: the stick was not changed.",
            );
            return Err(fail(exit::STALLED, report));
        }
        let stops = stop.count();
        if stops > stops_seen {
            stops_seen = stops;
            if stops == 1 {
                worker.signal(nix::sys::signal::Signal::SIGTERM);
            } else if killed.is_none() {
                killed = Some(Instant::now());
                worker.signal(nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    worker.hang_up();
    let status = worker.wait_for(Duration::from_secs(if killed.is_some() { 1 } else { 10 }));
    if let Some(sig) = stop.requested() {
        return Err(fail(exit::signal(sig), "verification stopped by a signal; the stick was not changed"));
    }
    match ending {
        Some(Ok(r)) if status.is_some_and(|s| s.success()) => Ok(r),
        Some(Err(e)) => Err(e),
        _ => Err(fail(
            exit::FAILED,
            format!(
                "the worker ended unexpectedly ({})",
                status.map_or("still running".to_string(), |s| s.to_string())
            ),
        )),
    }
}
