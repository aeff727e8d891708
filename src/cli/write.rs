//! `woesafe write ISO TARGET`: checks, confirmation and progress in the supervisor; the writing itself in the
//! worker (see `crate::write`).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use indicatif::{ProgressBar, ProgressStyle};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::exit;
use crate::boot::BootMode;
use crate::target::disk::{self, TargetFacts};
use crate::target::label;
use crate::target::safety::{self, Inventory};
use crate::target::units::{human, parse_size};
use crate::worker::frame::{Down, Driver, Report, Step, TargetState, Up, WriteRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsChoice {
    Fat32,
    Ntfs,
}

#[derive(Debug, clap::Args)]
pub struct WriteArgs {
    /// The Windows installation ISO
    pub iso: PathBuf,
    /// A whole-disk block device, or an image file (created with --size when missing)
    pub target: PathBuf,
    /// Size of a new image file: 8G, 7.5GiB, 8000MB, or bytes (an existing image keeps its size)
    #[arg(long)]
    pub size: Option<String>,
    /// Filesystem label (at most 11 characters; default: derived from the ISO's volume id)
    #[arg(long)]
    pub label: Option<String>,
    /// Filesystem of the stick
    #[arg(long, value_enum, default_value = "fat32")]
    pub fs: FsChoice,
    /// Which firmware the stick boots on
    #[arg(long, value_enum, default_value = "both")]
    pub boot: BootMode,
    /// How to read the ISO: kernel mount (udf/iso9660) or the userspace reader; auto asks /proc/filesystems
    #[arg(long, value_enum, default_value = "auto")]
    pub source_driver: Driver,
    /// How to fill the FAT32 filesystem: kernel mount (vfat) or the userspace writer; auto asks /proc/filesystems
    #[arg(long, value_enum, default_value = "auto")]
    pub target_driver: Driver,
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub yes: bool,
    /// Allow a disk that is neither removable nor on USB
    #[arg(long)]
    pub force: bool,
}

/// What the user sees: a progress bar on a terminal, plain lines otherwise.
struct Ui {
    quiet: bool,
    verbose: u8,
    bar: Option<ProgressBar>,
    tty: bool,
    step_no: usize,
    steps: usize,
    last_pct: u64,
    last_step: Option<Step>,
}

impl Ui {
    fn line(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    fn step(&mut self, step: Step) {
        self.step_no += 1;
        let text = format!("[{}/{}] {}", self.step_no.min(self.steps), self.steps, step.describe());
        if let Some(b) = self.bar.take() {
            b.finish(); // keep the finished bar on screen as the step's line
        }
        if step == Step::Copy && self.tty && !self.quiet {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_message(text);
            self.bar = Some(b);
        } else {
            self.line(&text);
        }
        self.last_pct = 0;
    }

    fn progress(&mut self, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
        } else if !self.quiet && total > 0 {
            let pct = done * 100 / total;
            if pct / 10 > self.last_pct / 10 {
                self.last_pct = pct;
                eprintln!("      {pct:3}%  {} of {}", human(done), human(total));
            }
        }
    }

    fn done(&mut self) {
        if let Some(b) = self.bar.take() {
            b.abandon(); // leave it where it stopped
        }
    }
}

/// The signal that stopped the write (0: none yet).
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);
/// The worker's pid, for the signal watcher (0: not started).
static WORKER_PID: AtomicI32 = AtomicI32::new(0);

/// An error to show with its exit code.
pub struct Exit {
    pub code: u8,
    pub message: String,
}

fn fail(code: u8, message: impl std::fmt::Display) -> Exit {
    Exit { code, message: message.to_string() }
}

fn describe_target(t: &TargetFacts, size: u64) -> String {
    match t {
        TargetFacts::Block(b) => {
            format!("/dev/{} — {}, {}, {}", b.name, b.model, human(b.size), b.transport)
        }
        TargetFacts::Image { path, exists: true, .. } => format!("image file {} ({})", path.display(), human(size)),
        TargetFacts::Image { path, .. } => format!("new image file {} ({})", path.display(), human(size)),
    }
}

fn confirm(question: &str) -> Result<bool, Exit> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(fail(
            exit::REFUSED,
            "refusing to write without confirmation: standard input is not a terminal; add --yes to confirm",
        ));
    }
    eprint!("{question} Type 'yes' to continue: ");
    let _ = std::io::stderr().flush();
    // Wait for the answer without blocking signals out: a Ctrl-C at the prompt must end woesafe at once.
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) != 0 {
            eprintln!();
            return Ok(false);
        }
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(200u16)) {
            Ok(0) | Err(nix::Error::EINTR) => continue,
            Ok(_) => break,
            Err(e) => return Err(fail(exit::FAILED, format!("cannot read the answer: {e}"))),
        }
    }
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer).map_err(|e| fail(exit::FAILED, e))?;
    Ok(answer.trim().eq_ignore_ascii_case("yes"))
}

/// Open (or create) the target and lock it for the whole write.
fn open_and_lock(t: &TargetFacts, path: &Path, create_size: u64) -> Result<File, Exit> {
    let file = match t {
        TargetFacts::Block(_) => {
            OpenOptions::new().read(true).custom_flags(libc::O_EXCL).open(path).map_err(|e| match e.raw_os_error() {
                Some(libc::EBUSY) => fail(
                    exit::REFUSED,
                    format!("busy: {} is in use (mounted, or held by another program)", path.display()),
                ),
                _ => fail(exit::FAILED, format!("cannot open {}: {e}", path.display())),
            })?
        }
        TargetFacts::Image { exists: true, .. } => OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| fail(exit::FAILED, format!("cannot open {}: {e}", path.display())))?,
        TargetFacts::Image { exists: false, .. } => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| fail(exit::FAILED, format!("cannot create the image file {}: {e}", path.display())))?;
            f.set_len(create_size)
                .map_err(|e| fail(exit::FAILED, format!("cannot size the image file {}: {e}", path.display())))?;
            f
        }
    };
    crate::sys::lock::lock_exclusive(&file, path).map_err(|e| match e {
        crate::sys::lock::LockError::Busy { .. } => fail(exit::REFUSED, e),
        _ => fail(exit::FAILED, e),
    })?;
    Ok(file)
}

/// A directory for the worker's private tmpfs, recognisably named for `recover` should it ever be left.
fn make_work_dir() -> Result<PathBuf, Exit> {
    let base = if Path::new("/run").is_dir() { PathBuf::from("/run") } else { std::env::temp_dir() };
    let pid = std::process::id();
    for n in 0..100 {
        let p = base.join(if n == 0 { format!("woesafe.{pid}") } else { format!("woesafe.{pid}.{n}") });
        match std::fs::DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(fail(exit::FAILED, format!("cannot create {}: {e}", p.display()))),
        }
    }
    Err(fail(exit::FAILED, "cannot create a work directory under /run"))
}
use std::os::unix::fs::DirBuilderExt;

fn print_inventory(ui: &Ui, inv: &Inventory) {
    ui.line(&format!(
        "ISO: {} — {} files in {} directories, {} ({})",
        if inv.volume_id.is_empty() { "(no volume id)" } else { &inv.volume_id },
        inv.files,
        inv.dirs,
        human(inv.total_bytes),
        inv.reader
    ));
    if ui.verbose > 0 {
        for (path, size) in &inv.largest {
            ui.line(&format!("  largest: {path} ({})", human(*size)));
        }
        ui.line(&format!("  FAT32 space needed: {}", human(inv.needed_bytes)));
    }
}

fn print_report(ui: &Ui, target: &Path, r: &Report, secs: f64) {
    let boot = match (r.bios, r.uefi) {
        (true, true) => "BIOS and UEFI",
        (true, false) => "BIOS",
        (false, true) => "UEFI",
        (false, false) => "none",
    };
    ui.line(&format!(
        "Done: {} — FAT32 \"{}\" (serial {}), partition 1 at {} MiB, {}; {} files, {} in {:.1} s; boots: {}",
        target.display(),
        r.label,
        r.serial,
        r.partition_offset >> 20,
        human(r.partition_size),
        r.files,
        human(r.bytes),
        secs,
        boot
    ));
}

pub fn run(args: &WriteArgs, verbose: u8, quiet: bool) -> Result<u8, Exit> {
    let started = Instant::now();
    if args.fs == FsChoice::Ntfs {
        return Err(fail(exit::USAGE, "--fs ntfs is not yet supported; use --fs fat32 (the default)"));
    }
    let label = match &args.label {
        Some(l) => Some(label::validate(l).map_err(|e| fail(exit::USAGE, format!("--label: {e}")))?),
        None => None,
    };
    let size_arg = match &args.size {
        Some(s) => Some(parse_size(s).map_err(|e| fail(exit::USAGE, format!("--size: {e}")))?),
        None => None,
    };
    match std::fs::metadata(&args.iso) {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(fail(
                exit::USAGE,
                format!("{} is not a regular file; give the path of an .iso file", args.iso.display()),
            ));
        }
        Err(e) => return Err(fail(exit::USAGE, format!("cannot read the ISO {}: {e}", args.iso.display()))),
    }
    File::open(&args.iso).map_err(|e| fail(exit::USAGE, format!("cannot open the ISO {}: {e}", args.iso.display())))?;
    let facts = disk::target_facts(&args.target).map_err(|e| fail(exit::USAGE, e))?;
    let target_size = match (&facts, size_arg) {
        (TargetFacts::Block(_), Some(_)) => {
            return Err(fail(exit::USAGE, "--size applies to image files only; a block device keeps its size"));
        }
        (TargetFacts::Block(b), None) => b.size,
        (TargetFacts::Image { exists: true, size, .. }, _) => *size,
        (TargetFacts::Image { exists: false, path, .. }, None) => {
            return Err(fail(
                exit::USAGE,
                format!("{} does not exist: give --size (e.g. --size 8G) to create an image file", path.display()),
            ));
        }
        (TargetFacts::Image { exists: false, .. }, Some(s)) => s,
    };
    let mut ui = Ui {
        quiet,
        verbose,
        bar: None,
        tty: std::io::stderr().is_terminal(),
        step_no: 0,
        steps: 10 - usize::from(!args.boot.bios()) - usize::from(!args.boot.uefi()),
        last_pct: 0,
        last_step: None,
    };
    if let (TargetFacts::Image { exists: true, .. }, Some(s)) = (&facts, size_arg)
        && s != target_size
    {
        ui.line(&format!(
            "Note: {} exists; it keeps its size of {} (--size is for new image files)",
            args.target.display(),
            human(target_size)
        ));
    }
    let host = disk::host_facts(&args.iso).map_err(|e| fail(exit::FAILED, e))?;
    safety::check_target(&facts, &host, &crate::sys::loopdev::attached(), &args.iso, args.force)
        .map_err(|e| fail(exit::REFUSED, e))?;
    if args.boot.bios() {
        crate::boot::bios::check_grub_installed().map_err(|e| fail(exit::FAILED, e))?;
    }

    // Existing targets are locked now; a new image file is only created once the checks have passed.
    let mut lock = match facts {
        TargetFacts::Image { exists: false, .. } => None,
        _ => Some(open_and_lock(&facts, &args.target, target_size)?),
    };
    let work_dir = make_work_dir()?;
    let result = supervise(args, &facts, label, target_size, &work_dir, &mut lock, &mut ui);
    ui.done();
    // The worker is gone, and with it its private mounts: the directory is empty and unmounted here.
    let _ = std::fs::remove_dir(&work_dir);
    if let Ok(Some(report)) = &result {
        print_report(&ui, &args.target, report, started.elapsed().as_secs_f64());
    }
    result.map(|r| if r.is_some() { exit::OK } else { exit::REFUSED })
}

/// Start the worker and follow it to the end. Ok(None): the user declined.
fn supervise(
    args: &WriteArgs,
    facts: &TargetFacts,
    label: Option<String>,
    target_size: u64,
    work_dir: &Path,
    lock: &mut Option<File>,
    ui: &mut Ui,
) -> Result<Option<Report>, Exit> {
    let pause_at = std::env::var("WOESAFE_TEST_PAUSE_AT").ok().and_then(|v| {
        let (step, ms) = v.split_once(':')?;
        Some((step.to_string(), ms.parse().ok()?))
    });
    let request = WriteRequest {
        iso: std::fs::canonicalize(&args.iso).unwrap_or_else(|_| args.iso.clone()),
        target: args.target.clone(),
        target_is_image: matches!(facts, TargetFacts::Image { .. }),
        target_size,
        label,
        boot: args.boot,
        source_driver: args.source_driver,
        target_driver: args.target_driver,
        work_dir: work_dir.to_path_buf(),
        pause_at,
    };
    // The signal watcher thread must exist before the worker is spawned: once the supervisor has unshared its
    // PID namespace for children, it can no longer create threads (clone(CLONE_THREAD) fails with EINVAL).
    // A signal kills the worker, which takes its PID namespace, mounts and autoclear loop devices with it; we
    // then say what state the target is in.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| fail(exit::FAILED, e))?;
    let signal_handle = signals.handle();
    let watcher = std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            INTERRUPTED.store(sig, Ordering::SeqCst);
            let pid = WORKER_PID.load(Ordering::SeqCst);
            if pid > 0 {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    });
    let mut worker = match crate::worker::spawn::spawn() {
        Ok(w) => w,
        Err(e) => {
            signal_handle.close();
            let _ = watcher.join();
            return Err(fail(exit::FAILED, e));
        }
    };
    WORKER_PID.store(worker.pid() as i32, Ordering::SeqCst);
    if INTERRUPTED.load(Ordering::SeqCst) != 0 {
        // The signal came while the worker was being born.
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker.pid() as i32), nix::sys::signal::Signal::SIGKILL);
    }
    let result = follow(args, facts, &mut worker, request, lock, ui);
    signal_handle.close();
    let _ = watcher.join();
    ui.done();
    let status = worker.finish(false);
    let sig = INTERRUPTED.load(Ordering::SeqCst);
    if sig != 0 {
        let name = match sig {
            SIGINT => "SIGINT (Ctrl-C)",
            SIGTERM => "SIGTERM",
            _ => "SIGHUP",
        };
        let state = TargetState::when_stopped_in(ui.last_step);
        let during =
            ui.last_step.map_or("before writing".to_string(), |s| format!("while {}", s.describe().to_lowercase()));
        return Err(fail(
            128 + sig as u8,
            format!(
                "stopped by {name} {during}; the worker and its mounts and loop devices are gone.\nTarget state: {}",
                state.describe()
            ),
        ));
    }
    match status {
        Ok(status) if !status.success() && result.is_ok() => {
            return Err(fail(exit::FAILED, format!("the worker exited with {status}")));
        }
        Err(e) => return Err(fail(exit::FAILED, format!("cannot wait for the worker: {e}"))),
        _ => {}
    }
    if let (Ok(_), Some(f)) = (&result, lock.as_ref()) {
        f.sync_all().map_err(|e| fail(exit::FAILED, format!("cannot flush {}: {e}", args.target.display())))?;
    }
    result
}

/// Read the worker's frames to the end: show progress, run the content checks and the confirmation.
fn follow(
    args: &WriteArgs,
    facts: &TargetFacts,
    worker: &mut crate::worker::spawn::Worker,
    request: WriteRequest,
    lock: &mut Option<File>,
    ui: &mut Ui,
) -> Result<Option<Report>, Exit> {
    let broken = |e| fail(exit::FAILED, format!("lost contact with the worker: {e}"));
    let target_size = request.target_size;
    worker.send(&Down::Start(Box::new(request))).map_err(broken)?;
    let mut outcome: Result<Option<Report>, Exit> =
        Err(fail(exit::FAILED, "the worker stopped without a result (see the messages above)"));
    loop {
        let frame = match worker.recv() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                outcome = Err(fail(exit::FAILED, format!("bad message from the worker: {e}")));
                break;
            }
        };
        match frame {
            Up::Info(m) => ui.line(&m),
            Up::Warning(m) => ui.line(&format!("warning: {m}")),
            Up::Inventory(inv) => {
                print_inventory(ui, &inv);
                let mut verdict = safety::check_content(&inv, &args.iso, &args.target, target_size)
                    .map_err(|e| fail(exit::REFUSED, e));
                if verdict.is_ok() && args.boot == BootMode::Uefi && !inv.has_uefi_loader {
                    verdict = Err(fail(
                        exit::REFUSED,
                        "--boot uefi: the ISO has no efi/boot/bootx64.efi (Windows 7 ISOs are not supported yet); use --boot bios",
                    ));
                }
                if verdict.is_ok() && !args.yes {
                    let q = format!("This will ERASE everything on {}.", describe_target(facts, target_size));
                    verdict = match confirm(&q) {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(fail(exit::REFUSED, "not confirmed; nothing was written")),
                        Err(e) => Err(e),
                    };
                }
                if verdict.is_ok() && lock.is_none() {
                    verdict = open_and_lock(facts, &args.target, target_size).map(|f| *lock = Some(f));
                }
                match verdict {
                    Ok(()) => worker.send(&Down::Proceed).map_err(broken)?,
                    Err(e) => {
                        let _ = worker.send(&Down::Abort);
                        return Err(e);
                    }
                }
            }
            Up::Step(s) => {
                ui.last_step = Some(s);
                ui.step(s)
            }
            Up::Progress { done, total } => ui.progress(done, total),
            Up::Done(r) => outcome = Ok(Some(*r)),
            Up::Aborted => outcome = Ok(None),
            Up::Failed { step, message, state, refused } => {
                outcome = Err(fail(
                    if refused { exit::REFUSED } else { exit::FAILED },
                    format!("{} failed: {message}\nTarget state: {}", step.describe(), state.describe()),
                ));
            }
        }
    }
    outcome
}
