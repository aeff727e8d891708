//! `woesafe verify ISO TARGET`: read every file back from a written stick and compare it with the ISO, with the
//! partition table, boot code and boot sectors. The worker does the reading in its own namespaces (FAT32
//! through woesafe's reader, NTFS through ntfs-3g mounted read-only), followed by `supervisor::verify`.

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use super::exit;
use super::term::{self, escape};
use super::write::Exit;
use crate::protocol::Table;
use crate::stick::choose::Fs;
use crate::stick::units::human;
use crate::supervisor::{Event, StopHandle};
use crate::sys::argfile::{self, ArgFileError, FileId, Want};
use crate::verify::VerifyReport;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The Windows installation ISO the stick was written from
    pub iso: PathBuf,
    /// The stick (a whole disk) or the image file
    pub target: PathBuf,
    /// Print the report as JSON on standard output
    #[arg(long)]
    pub json: bool,
    /// Seconds without any byte moving before the check is declared stalled: woesafe then names the stuck
    /// process and device, tears the worker down and exits 4
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub stall_timeout: u64,
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
    let iso_id = crate::supervisor::target::check_iso(&args.iso)?;
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
    let mut lines = Lines { quiet: quiet || args.json, last: 0 };
    if !quiet && !args.json {
        crate::say!("Verifying {} against {}", term::path(&args.target), term::path(&args.iso));
    }
    // In the worker, FAT32 and NTFS alike: its scratch files (GRUB's core image, mkfs.fat's reference sector)
    // and the NTFS mount live in its private tmpfs and end with it, however verify ends.
    let target_id = FileId::of_file(&target, &args.target).map_err(|e| fail(exit::FAILED, e))?;
    let report = in_worker(args, iso_id, target_id, &mut lines)?;
    drop(target);
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

/// The check, run by the worker (`supervisor::verify`), stopped by the user's signals.
fn in_worker(args: &VerifyArgs, iso_id: FileId, target_id: FileId, lines: &mut Lines) -> Result<VerifyReport, Exit> {
    let stop = StopHandle::new();
    // Threads first (see worker::spawn).
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT]).map_err(|e| fail(exit::FAILED, format!("signals: {e}")))?;
    let handle = signals.handle();
    let on_signal = stop.clone();
    let watcher = std::thread::spawn(move || {
        for sig in signals.forever() {
            on_signal.request(sig);
        }
    });
    let mut on_event = |e: &Event| match e {
        Event::Progress { done, total, .. } => lines.progress(*done, *total),
        Event::Info { message } => crate::say!("{}", escape(message)),
        Event::Warning { message } => crate::say!("warning: {}", escape(message)),
        _ => {}
    };
    let stall_after = std::time::Duration::from_secs(args.stall_timeout.max(1));
    let result = crate::supervisor::verify::in_worker(
        &args.iso,
        iso_id,
        &args.target,
        target_id,
        stall_after,
        &stop,
        &mut on_event,
    );
    handle.close();
    let _ = watcher.join();
    result
}
