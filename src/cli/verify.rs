//! `woesafe verify ISO TARGET`: read every file back from a written stick and compare it with the ISO, with the
//! partition table, boot code and boot sectors. A FAT32 stick is read in this process (no mount); an NTFS
//! stick through ntfs-3g in the worker's namespaces, followed here by a minimal supervisor loop.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use super::exit;
use super::term::{self, escape};
use super::write::Exit;
use crate::protocol::{Down, Table, Up, VerifyRequest};
use crate::stick::choose::Fs;
use crate::stick::units::human;
use crate::sys::argfile::{self, ArgFileError, FileId, Want};
use crate::verify::{self, StickFiles, VerifyError, VerifyReport};
use crate::worker::spawn::{Event, Worker};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The Windows installation ISO the stick was written from
    pub iso: PathBuf,
    /// The stick (a whole disk) or the image file
    pub target: PathBuf,
    /// Print the report as JSON on standard output
    #[arg(long)]
    pub json: bool,
}

fn fail(code: u8, message: impl std::fmt::Display) -> Exit {
    Exit { code, message: message.to_string() }
}

/// Plain progress lines (every 10 %), unless quiet.
struct Lines {
    quiet: bool,
    last: u64,
}

impl Lines {
    fn progress(&mut self, done: u64, total: u64) {
        if self.quiet || total == 0 {
            return;
        }
        let pct = done * 100 / total;
        if pct / 10 > self.last / 10 {
            self.last = pct;
            crate::say!("      {pct:3}%  {} of {}", human(done), human(total));
        }
    }
}

pub fn run(args: &VerifyArgs, quiet: bool) -> Result<u8, Exit> {
    let iso_file = argfile::open(&args.iso, Want::Regular, false).map_err(|e| match e {
        ArgFileError::Stat { source, .. } => {
            fail(exit::USAGE, format!("cannot read the ISO {}: {source}", term::path(&args.iso)))
        }
        e => fail(exit::USAGE, format!("{e}; give the path of an .iso file")),
    })?;
    let iso_id = FileId::of_file(&iso_file, &args.iso).map_err(|e| fail(exit::FAILED, e))?;
    drop(iso_file);
    // Read-only; a block device exclusively (a mounted stick is busy), and locked like a write locks it.
    let meta = argfile::check(&args.target, Want::RegularOrBlock).map_err(|e| match e {
        ArgFileError::Stat { source, .. } => {
            fail(exit::USAGE, format!("cannot read the target {}: {source}", term::path(&args.target)))
        }
        e => fail(exit::USAGE, e),
    })?;
    let flags = if meta.file_type().is_block_device() { libc::O_EXCL } else { 0 };
    let target = argfile::open_with(&args.target, Want::RegularOrBlock, false, flags).map_err(|e| match e {
        ArgFileError::Open { source, .. } if source.raw_os_error() == Some(libc::EBUSY) => fail(
            exit::REFUSED,
            format!("busy: {} is in use (mounted, or held by another program)", term::path(&args.target)),
        ),
        e => fail(exit::FAILED, e),
    })?;
    crate::sys::lock::lock_exclusive(&target, &args.target).map_err(|e| match e {
        crate::sys::lock::LockError::Busy { .. } => fail(exit::REFUSED, e),
        _ => fail(exit::FAILED, e),
    })?;
    let (layout, _) = verify::probe(&target, &args.target).map_err(|e| fail(exit::FAILED, e))?;
    let mut lines = Lines { quiet: quiet || args.json, last: 0 };
    if !quiet && !args.json {
        crate::say!("Verifying {} against {}", term::path(&args.target), term::path(&args.iso));
    }
    let report = if layout.is_some_and(|l| l.fs == Fs::Ntfs) {
        let target_id = FileId::of_file(&target, &args.target).map_err(|e| fail(exit::FAILED, e))?;
        in_worker(args, iso_id, target_id, &mut lines)?
    } else {
        let source = crate::media::source::Source::open_userspace(&args.iso, &iso_id)
            .map_err(|e| fail(if e.is_refusal() { exit::REFUSED } else { exit::FAILED }, escape(&e.to_string())))?;
        let scratch = Scratch::create()?;
        // A signal stops the check between two chunks, so the scratch directory goes too.
        let signal = stop_on_signals()?;
        let mut progress = |done, total| lines.progress(done, total);
        verify::check_stick(&target, &args.target, &source, StickFiles::Userspace, scratch.path(), &mut progress)
            .map_err(|e| match e {
                VerifyError::Source(s) if s.is_refusal() => fail(exit::REFUSED, escape(&s.to_string())),
                VerifyError::Stopped => fail(
                    128 + signal.load(Ordering::SeqCst) as u8,
                    "verification stopped by a signal; the stick was not changed",
                ),
                e => fail(exit::FAILED, escape(&e.to_string())),
            })?
    };
    present(args, &report, quiet);
    Ok(if report.identical() { exit::OK } else { exit::MISMATCH })
}

fn present(args: &VerifyArgs, r: &VerifyReport, quiet: bool) {
    if args.json {
        let mut out = std::io::stdout();
        let _ = serde_json::to_writer_pretty(&mut out, r);
        let _ = writeln!(out);
    }
    // Mismatches name paths from the stick and the ISO: every control escaped.
    for m in &r.mismatches {
        crate::say!("mismatch: {}", escape(&m.to_string()));
    }
    if args.json {
        return;
    }
    if !quiet {
        for n in &r.notes {
            crate::say!("note: {}", escape(n));
        }
    }
    let what = format!(
        "{} {}{}{}, {} files in {} directories, {} compared",
        r.fs.map_or("unknown filesystem", Fs::name),
        match r.table {
            Some(Table::Mbr) => "MBR",
            Some(Table::Gpt) => "GPT",
            None => "no usable partition table",
        },
        if r.bios_boot { ", BIOS boot code" } else { "" },
        if r.bridge { ", UEFI bridge" } else { "" },
        r.files,
        r.dirs,
        human(r.bytes)
    );
    if r.identical() {
        crate::say!("Verified: {} — {what}: identical to the ISO", term::path(&args.target));
    } else {
        crate::say!(
            "Verify FAILED: {} — {what}: {} mismatch{}",
            term::path(&args.target),
            r.mismatches.len(),
            if r.mismatches.len() == 1 { "" } else { "es" }
        );
    }
}

/// A scratch directory for GRUB's core image and mkfs.fat's reference boot sector (check_stick removes both);
/// removed with rmdir, never recursively.
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> Result<Scratch, Exit> {
        let dir = tempfile::Builder::new()
            .prefix("woesafe-verify.")
            .tempdir()
            .map_err(|e| fail(exit::FAILED, format!("cannot create a scratch directory: {e}")))?;
        Ok(Scratch(dir.keep()))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for name in verify::SCRATCH_FILES {
            let _ = std::fs::remove_file(self.0.join(name));
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Let SIGINT, SIGTERM, SIGHUP and SIGQUIT stop an in-process check in an orderly way (the library's stop
/// flag); the returned number says which came.
fn stop_on_signals() -> Result<Arc<AtomicUsize>, Exit> {
    let which = Arc::new(AtomicUsize::new(0));
    crate::sys::stop::install_stop_flags().map_err(|e| fail(exit::FAILED, format!("signals: {e}")))?;
    for sig in [SIGINT, SIGTERM, SIGHUP, SIGQUIT] {
        signal_hook::flag::register_usize(sig, Arc::clone(&which), sig as usize)
            .map_err(|e| fail(exit::FAILED, format!("signals: {e}")))?;
    }
    Ok(which)
}

/// A directory for the worker's private tmpfs, recognisably named for `recover`.
fn make_work_dir() -> Result<PathBuf, Exit> {
    let base = if Path::new("/run").is_dir() { PathBuf::from("/run") } else { std::env::temp_dir() };
    let pid = std::process::id();
    for n in 0..100 {
        let p = base.join(if n == 0 { format!("woesafe.{pid}") } else { format!("woesafe.{pid}.{n}") });
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(fail(exit::FAILED, format!("cannot create {}: {e}", term::path(&p)))),
        }
    }
    Err(fail(exit::FAILED, "cannot create a work directory under /run"))
}

/// An NTFS stick: the worker mounts it read-only (ntfs-3g) in its namespaces and verifies it there.
fn in_worker(args: &VerifyArgs, iso_id: FileId, target_id: FileId, lines: &mut Lines) -> Result<VerifyReport, Exit> {
    let work_dir = make_work_dir()?;
    let request = VerifyRequest {
        iso: std::fs::canonicalize(&args.iso).unwrap_or_else(|_| args.iso.clone()),
        iso_id,
        target: args.target.clone(),
        target_id,
        work_dir: work_dir.clone(),
    };
    // Threads first: once the worker is spawned no thread can be started (see worker::spawn).
    let (events, inbox) = mpsc::channel();
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT]).map_err(|e| fail(exit::FAILED, format!("signals: {e}")))?;
    let handle = signals.handle();
    let signal_events = events.clone();
    let watcher = std::thread::spawn(move || {
        for sig in signals.forever() {
            if signal_events.send(Event::Signal(sig)).is_err() {
                break;
            }
        }
    });
    let result = match crate::worker::spawn::spawn(events) {
        Ok(mut worker) => follow(&mut worker, &inbox, request, lines),
        Err(e) => Err(fail(exit::FAILED, e)),
    };
    handle.close();
    let _ = watcher.join();
    // The worker is gone, and with it its private mounts.
    let _ = std::fs::remove_dir(&work_dir);
    result
}

/// Follow the worker to its last frame: progress, its FUSE daemon (held for, as in a write), signals (first:
/// SIGTERM, an orderly stop; second: SIGKILL, which takes its namespaces down).
fn follow(
    worker: &mut Worker,
    inbox: &mpsc::Receiver<Event>,
    request: VerifyRequest,
    lines: &mut Lines,
) -> Result<VerifyReport, Exit> {
    worker
        .send(&Down::Verify(Box::new(request)))
        .map_err(|e| fail(exit::FAILED, format!("lost contact with the worker: {e}")))?;
    let mut ending: Option<Result<VerifyReport, Exit>> = None;
    let mut signal = None;
    let mut killed: Option<std::time::Instant> = None;
    loop {
        // A worker stuck in the kernel keeps its pipe open even when killed: stop waiting for it.
        if killed.is_some_and(|t| t.elapsed() >= Duration::from_secs(1)) {
            break;
        }
        match inbox.recv_timeout(Duration::from_millis(250)) {
            Ok(Event::Frame(frame)) => match frame {
                Up::Progress { done, total } => lines.progress(done, total),
                Up::Fuse { connection, fusectl } => worker.hold_for_fuse(connection, fusectl),
                Up::Info(m) => crate::say!("{}", escape(&m)),
                Up::Warning(m) => crate::say!("warning: {}", escape(&m)),
                Up::Verified(r) => ending = Some(Ok(*r)),
                Up::VerifyFailed { message, refused } => {
                    ending = Some(Err(fail(if refused { exit::REFUSED } else { exit::FAILED }, escape(&message))))
                }
                other => {
                    worker.signal(nix::sys::signal::Signal::SIGKILL);
                    ending = Some(Err(fail(exit::FAILED, format!("unexpected frame from the worker: {other:?}"))));
                    break;
                }
            },
            Ok(Event::Signal(sig)) => {
                if signal.is_none() {
                    signal = Some(sig);
                    worker.signal(nix::sys::signal::Signal::SIGTERM);
                } else if killed.is_none() {
                    killed = Some(std::time::Instant::now());
                    worker.signal(nix::sys::signal::Signal::SIGKILL);
                }
            }
            Ok(Event::Bad(e)) => {
                worker.signal(nix::sys::signal::Signal::SIGKILL);
                ending = Some(Err(fail(exit::FAILED, format!("bad message from the worker: {e}"))));
                break;
            }
            Ok(Event::Closed) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    worker.hang_up();
    let status = worker.wait_for(Duration::from_secs(if killed.is_some() { 1 } else { 10 }));
    if let Some(sig) = signal {
        return Err(fail(128 + sig as u8, "verification stopped by a signal; the stick was not changed"));
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
