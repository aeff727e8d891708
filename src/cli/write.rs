//! `woesafe write ISO TARGET...`: turns the arguments into `supervisor::Write`s, runs them (one thread per
//! target when there are several), and presents their events: a progress bar or plain lines on stderr
//! (`cli::present`), or NDJSON on stdout (`--json`).

use std::io::{BufRead, IsTerminal, Write as _};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use super::choices;
use super::present::{Human, Json, Tee};
use super::term;
use crate::boot::BootMode;
use crate::media::unattend::{Bypass, SetupOptions, account, regional};
use crate::protocol::{Driver, Table};
use crate::stick::choose::FsRequest;
use crate::stick::units::parse_size;
use crate::supervisor::{Confirmation, Event, Observer, Outcome, StopHandle, Write, WriteOptions};

pub use crate::exit::Exit;
use crate::exit::{self, fail};

#[derive(Debug, clap::Args)]
pub struct WriteArgs {
    /// The Windows installation ISO
    pub iso: PathBuf,
    /// Whole-disk block devices or image files (an image is created with --size when missing); several are
    /// written at once, each by its own worker
    #[arg(required = true, num_args = 1.., value_name = "TARGET")]
    pub targets: Vec<PathBuf>,
    /// Do not ask for confirmation
    #[arg(short, long, display_order = 1)]
    pub yes: bool,
    /// Size of a new image file: 8G, 7.5GiB, 8000MB, or bytes (an existing image keeps its size)
    #[arg(long, display_order = 2)]
    pub size: Option<String>,
    /// Filesystem of the stick: auto = FAT32 (splitting a big install.wim) unless that cannot work, then NTFS
    #[arg(long, value_parser = choices::parser::<FsRequest>(), default_value = "auto", display_order = 3)]
    pub fs: FsRequest,
    /// Windows 11 setup options (Rufus's): write an autounattend.xml that bypasses tpm, secureboot, ram
    /// and/or online-account (comma-separated), or all
    #[arg(long, value_parser = choices::parser::<Bypass>(), value_delimiter = ',', value_name = "LIST", display_order = 4)]
    pub bypass: Vec<Bypass>,
    /// Windows setup option: create this local administrator account, with an empty password that must be
    /// changed at the first logon (written to autounattend.xml)
    #[arg(long, value_name = "NAME", display_order = 4)]
    pub local_account: Option<String>,
    /// Windows setup option: the locale, keyboard, display language and time zone: host (this machine's),
    /// LOCALE (de_DE.UTF-8 or de-DE) or LOCALE,ZONE (de_DE.UTF-8,Europe/Berlin)
    #[arg(long, value_name = "host|LOCALE[,ZONE]", display_order = 4)]
    pub regional: Option<String>,
    /// Windows setup option: skip the license page and answer no to the privacy questions (ProtectYourPC 3)
    #[arg(long, display_order = 4)]
    pub no_data_collection: bool,
    /// Windows setup option: no automatic BitLocker device encryption (PreventDeviceEncryption) and no
    /// hardware encryption of self-encrypting drives (TCGSecurityActivationDisabled)
    #[arg(long, display_order = 4)]
    pub no_bitlocker: bool,
    /// Run every check and show the full plan (partitions, filesystem, files, split, boot code); the target is
    /// opened read-only and nothing is written
    #[arg(long, display_order = 5)]
    pub dry_run: bool,
    /// After the write, read the stick back from the device (not the page cache) and compare every file, the
    /// partition table and the boot code with the ISO; a mismatch is exit 5
    #[arg(long, display_order = 6)]
    pub verify: bool,
    /// Print events as JSON lines (NDJSON) on stdout instead of text on stderr (add -v for the text too)
    #[arg(long, display_order = 7)]
    pub json: bool,
    /// Filesystem label (at most 11 characters; default: derived from the ISO's volume id)
    #[arg(long, display_order = 10)]
    pub label: Option<String>,
    /// Which firmware the stick boots on (default: both with an MBR table, uefi with GPT, and uefi for an ISO
    /// without /bootmgr such as Windows on ARM)
    #[arg(long, value_parser = choices::parser::<BootMode>(), display_order = 11)]
    pub boot: Option<BootMode>,
    /// Partition table: mbr (BIOS and UEFI) or gpt (UEFI only)
    #[arg(long, value_parser = choices::parser::<Table>(), default_value = "mbr", display_order = 12)]
    pub table: Table,
    /// Allow a disk that is not removable (a fixed disk, on USB or not); with --bypass or another setup option,
    /// replace the ISO's own autounattend.xml
    #[arg(long, display_order = 13)]
    pub force: bool,
    /// Put the boot managers signed by the "Windows UEFI CA 2023" in place of the ISO's (from sources/boot.wim's
    /// setup image, Windows 11 media of build 26200 and later): for PCs whose firmware no longer trusts the 2011
    /// Microsoft CA, or revokes its boot managers
    #[arg(long, display_order = 15)]
    pub ca2023: bool,
    /// NTFS sticks: write this UEFI:NTFS image (a FAT image, e.g. Rufus's Secure Boot signed one) as the UEFI
    /// bridge partition instead of the GRUB bridge woesafe builds
    #[arg(long, value_name = "FILE", display_order = 20)]
    pub uefi_ntfs_image: Option<PathBuf>,
    /// How to read the ISO: auto = userspace, the reader built for untrusted images (bounded memory and time);
    /// kernel = a udf/iso9660 mount, only on request since the kernel parses the untrusted image in ring 0 (the
    /// userspace parse runs first, and the mounted tree must match it)
    #[arg(long, value_parser = choices::parser::<Driver>(), default_value = "auto", display_order = 21)]
    pub source_driver: Driver,
    /// How to fill the stick's filesystem: kernel mount (vfat, ntfs3) or userspace (our FAT32 writer, ntfs-3g);
    /// auto asks /proc/filesystems
    #[arg(long, value_parser = choices::parser::<Driver>(), default_value = "auto", display_order = 22)]
    pub target_driver: Driver,
    /// Seconds without any byte moving (in any step) before the write is declared stalled: woesafe then names
    /// the stuck step, process and device, tears the worker down and exits 4
    #[arg(long, default_value_t = 120, value_name = "SECONDS", display_order = 23)]
    pub stall_timeout: u64,
}

impl WriteArgs {
    /// The answer file's options, checked: a bad --local-account or --regional is a usage error.
    pub fn setup(&self) -> Result<SetupOptions, Exit> {
        let usage = |e: &dyn std::fmt::Display| fail(exit::USAGE, e);
        let local_account = match &self.local_account {
            Some(n) => Some(account::check(n).map_err(|e| usage(&e))?),
            None => None,
        };
        let regional = match &self.regional {
            Some(r) => Some(regional::parse_request(r).and_then(|r| regional::resolve(&r)).map_err(|e| usage(&e))?),
            None => None,
        };
        Ok(SetupOptions {
            bypass: self.bypass.clone(),
            local_account,
            regional,
            no_data_collection: self.no_data_collection,
            no_bitlocker: self.no_bitlocker,
        })
    }

    /// The library's options; a malformed --size, --local-account or --regional is a usage error.
    pub fn options(&self) -> Result<WriteOptions, Exit> {
        let size = match &self.size {
            Some(s) => Some(parse_size(s).map_err(|e| fail(exit::USAGE, format!("--size: {e}")))?),
            None => None,
        };
        Ok(WriteOptions {
            size,
            label: self.label.clone(),
            fs: self.fs,
            uefi_ntfs_image: self.uefi_ntfs_image.clone(),
            boot: self.boot,
            table: self.table,
            source_driver: self.source_driver,
            target_driver: self.target_driver,
            force: self.force,
            setup: self.setup()?,
            ca2023: self.ca2023,
            stall_timeout: Duration::from_secs(self.stall_timeout.max(1)),
            dry_run: self.dry_run,
            verify: self.verify,
        })
    }

    /// The options as the `start` event shows them (the command line's names).
    fn options_json(&self) -> serde_json::Value {
        serde_json::json!({
            "size": self.size,
            "label": self.label,
            "fs": choices::name_of(self.fs),
            "boot": self.boot.map(choices::name_of),
            "table": choices::name_of(self.table),
            "source_driver": choices::name_of(self.source_driver),
            "target_driver": choices::name_of(self.target_driver),
            "force": self.force,
            "bypass": self.bypass.iter().map(|b| choices::name_of(*b)).collect::<Vec<_>>(),
            "local_account": self.local_account,
            "regional": self.regional,
            "no_data_collection": self.no_data_collection,
            "no_bitlocker": self.no_bitlocker,
            "ca2023": self.ca2023,
            "uefi_ntfs_image": self.uefi_ntfs_image.as_deref().map(term::path_json),
            "stall_timeout": self.stall_timeout,
            "dry_run": self.dry_run,
            "verify": self.verify,
            "yes": self.yes,
        })
    }
}

/// Ask on the terminal; a stop requested meanwhile answers no at once.
fn ask(question: &str, stop: &StopHandle) -> Result<bool, String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(
            "refusing to write without confirmation: standard input is not a terminal; add --yes to confirm".into()
        );
    }
    // A one-line question takes the prompt on its line; a list gets it on a line of its own.
    let gap = if question.contains('\n') { "\n" } else { " " };
    let _ = write!(std::io::stderr(), "{}{gap}Type 'yes' to continue: ", term::escape_lines(question));
    let _ = std::io::stderr().flush();
    // Wait for the answer without blocking signals out: a Ctrl-C at the prompt must end woesafe at once.
    loop {
        if stop.requested().is_some() {
            crate::say!("");
            return Ok(false);
        }
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(200u16)) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => break,
            Err(e) => return Err(format!("cannot read the answer: {e}")),
        }
    }
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer).map_err(|e| format!("cannot read the answer: {e}"))?;
    Ok(answer.trim().eq_ignore_ascii_case("yes"))
}

/// The one confirmation for all targets: each write waits here with its question until every other write has
/// asked too (or ended before asking); then the user is asked once, listing them all.
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
    writes: usize,
    yes: bool,
    stop: StopHandle,
}

#[derive(Default)]
struct GateState {
    asked: Vec<String>,
    ended: usize,
    answer: Option<Result<bool, String>>,
}

impl Gate {
    fn confirm(&self, question: &Confirmation) -> Result<bool, String> {
        if self.yes {
            return Ok(true);
        }
        let Ok(mut st) = self.state.lock() else { return Ok(false) };
        st.asked.push(question.target.clone());
        self.changed.notify_all();
        loop {
            if let Some(answer) = &st.answer {
                return answer.clone();
            }
            if st.asked.len() + st.ended >= self.writes {
                let q = if st.asked.len() == 1 {
                    format!("This will ERASE everything on {}.", st.asked[0])
                } else {
                    let list: String = st.asked.iter().map(|t| format!("\n  {t}")).collect();
                    format!("This will ERASE everything on these {} targets:{list}", st.asked.len())
                };
                let answer = ask(&q, &self.stop);
                st.answer = Some(answer.clone());
                self.changed.notify_all();
                return answer;
            }
            st = match self.changed.wait_timeout(st, Duration::from_millis(200)) {
                Ok((g, _)) => g,
                Err(_) => return Ok(false),
            };
            if self.stop.requested().is_some() && st.answer.is_none() {
                st.answer = Some(Ok(false));
                self.changed.notify_all();
            }
        }
    }

    /// A write ended (before or after asking): it no longer holds the others up.
    fn ended(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.ended += 1;
            self.changed.notify_all();
        }
    }
}

/// Tells the gate that a write ended, when dropped.
struct Ended<'a>(&'a Gate);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// The presenter of one write, answering its confirmation through the shared gate.
struct Presenter<'a> {
    inner: Tee,
    gate: &'a Gate,
}

impl Observer for Presenter<'_> {
    fn event(&mut self, event: &Event) {
        self.inner.event(event);
    }

    fn confirm(&mut self, question: &Confirmation) -> Result<bool, String> {
        // Before the prompt: no bar may draw over it.
        self.inner.finish();
        self.gate.confirm(question)
    }
}

/// How one target's write ended: its exit code and its one-line summary.
struct Result1 {
    target: PathBuf,
    code: u8,
    summary: String,
}

pub fn run(args: &WriteArgs, verbose: u8, quiet: bool) -> Result<u8, Exit> {
    let json = args.json.then(Json::stdout);
    if let Some(j) = &json {
        j.line(
            None,
            &serde_json::json!({
                "event": "start",
                "iso": term::path_json(&args.iso),
                "targets": args.targets.iter().map(|t| term::path_json(t)).collect::<Vec<_>>(),
                "options": args.options_json(),
            }),
        );
    }
    // A usage error found before any write starts: with --json a failed event and the summary, like any ending.
    let usage = |e: Exit| -> Result<u8, Exit> {
        match &json {
            Some(j) => {
                j.line(
                    None,
                    &serde_json::json!({
                        "event": "failed",
                        "message": e.message,
                        "exit_code": e.code,
                        "target_state": {"state": "untouched", "description": "the target was not changed"},
                    }),
                );
                j.line(None, &serde_json::json!({"event": "summary", "exit_code": e.code, "results": []}));
                Err(Exit { code: e.code, message: String::new() })
            }
            None => Err(e),
        }
    };
    let options = match args.options() {
        Ok(o) => o,
        Err(e) => return usage(e),
    };
    if let Some(t) = twice(&args.targets) {
        return usage(fail(
            exit::USAGE,
            format!("{} is given twice as a target (each target must be a different disk or file)", term::path(t)),
        ));
    }
    let stop = StopHandle::new();
    // Threads first: a thread that starts a worker can start no more threads (see worker::spawn).
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT]) {
        Ok(s) => s,
        Err(e) => return usage(fail(exit::FAILED, format!("signals: {e}"))),
    };
    let signal_handle = signals.handle();
    let on_signal = stop.clone();
    let watcher = std::thread::spawn(move || {
        for sig in signals.forever() {
            on_signal.request(sig);
        }
    });
    let gate = Gate {
        state: Mutex::new(GateState::default()),
        changed: Condvar::new(),
        writes: args.targets.len(),
        yes: args.yes || args.dry_run,
        stop: stop.clone(),
    };
    let several = args.targets.len() > 1;
    let bars = (several && !args.json && !quiet && std::io::stderr().is_terminal()).then(indicatif::MultiProgress::new);
    let make = |target: &PathBuf| {
        let human = (!args.json || verbose > 0).then(|| {
            let prefix = several.then(|| term::path(target));
            Human::new(quiet, verbose, prefix, bars.clone(), target.clone())
        });
        let json = json.as_ref().map(|j| j.for_target(target));
        Presenter { inner: Tee { human, json }, gate: &gate }
    };
    let run_one = |target: &PathBuf| -> Result1 {
        // However this write ends (a panic too), it no longer holds the others' confirmation up.
        let _ended = Ended(&gate);
        let mut presenter = make(target);
        let write = Write::new(&args.iso, target, options.clone());
        let result = write.run(&mut presenter, &stop);
        presenter.inner.finish();
        let (code, summary) = match result {
            Ok(Outcome::Written(r)) => match r.verified.as_ref().map(|v| v.mismatches.len()) {
                Some(n) if n > 0 => (exit::MISMATCH, format!("written, but the read-back found {n} mismatch(es)")),
                Some(_) => (exit::OK, "written and verified".to_string()),
                None if options.verify => (exit::OK, "written; the read-back (--verify) was stopped".to_string()),
                None => (exit::OK, "written".to_string()),
            },
            Ok(Outcome::Planned(_)) => (exit::OK, "planned (dry run): nothing was written".to_string()),
            Ok(Outcome::Declined) => (exit::REFUSED, "not confirmed; nothing was written".to_string()),
            Err(e) => (e.code, e.message.lines().next().unwrap_or("stalled").to_string()),
        };
        Result1 { target: target.clone(), code, summary }
    };
    let results: Vec<Result1> = if several {
        std::thread::scope(|s| {
            let handles: Vec<_> = args.targets.iter().map(|t| s.spawn(|| run_one(t))).collect();
            handles
                .into_iter()
                .zip(&args.targets)
                .map(|(h, t)| {
                    h.join().unwrap_or_else(|_| Result1 {
                        target: t.clone(),
                        code: exit::FAILED,
                        summary: "internal error: the write's thread panicked".into(),
                    })
                })
                .collect()
        })
    } else {
        vec![run_one(&args.targets[0])]
    };
    signal_handle.close();
    let _ = watcher.join();
    let code = overall_code(&results.iter().map(|r| r.code).collect::<Vec<_>>());
    if several && !args.json {
        crate::say!("Results:");
        for r in &results {
            crate::say!("  {}: {} (exit {})", term::path(&r.target), term::escape(&r.summary), r.code);
        }
    }
    if let Some(j) = &json {
        j.line(
            None,
            &serde_json::json!({
                "event": "summary",
                "exit_code": code,
                "results": results.iter().map(|r| serde_json::json!({
                    "target": term::path_json(&r.target),
                    "exit_code": r.code,
                    "summary": r.summary,
                })).collect::<Vec<_>>(),
            }),
        );
    }
    // The messages were presented as events: main only needs the code.
    if code == exit::OK { Ok(code) } else { Err(Exit { code, message: String::new() }) }
}

/// The first target that names the same disk or file as an earlier one (by device number, or by device and
/// inode; a path that cannot be looked at is compared as written).
fn twice(targets: &[PathBuf]) -> Option<&PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    targets.iter().find(|t| {
        let id = std::fs::metadata(t).ok().map(|m| if m.rdev() != 0 { (0, m.rdev()) } else { (m.dev(), m.ino()) });
        !seen.insert(id.map_or_else(|| format!("{}", t.display()), |i| format!("{i:?}")))
    })
}

/// The exit code of several writes: 0 when all succeeded, the common code when all ended alike, else
/// `SOME_FAILED`.
pub fn overall_code(codes: &[u8]) -> u8 {
    match codes.split_first() {
        None => exit::OK,
        Some((first, rest)) if rest.iter().all(|c| c == first) => *first,
        Some(_) => exit::SOME_FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_writes_end_in_one_code() {
        assert_eq!(overall_code(&[0]), 0);
        assert_eq!(overall_code(&[0, 0, 0]), 0);
        assert_eq!(overall_code(&[3, 3]), 3);
        assert_eq!(overall_code(&[0, 1]), exit::SOME_FAILED);
        assert_eq!(overall_code(&[130, 130, 130]), 130);
        assert_eq!(overall_code(&[1, 3, 0]), exit::SOME_FAILED);
    }
}
