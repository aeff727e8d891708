//! `woesafe write ISO TARGET`: checks, confirmation and progress in the supervisor; the writing itself in the
//! worker (see `crate::job`).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use indicatif::{ProgressBar, ProgressStyle};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use super::choices;
use super::exit;
use super::term::{self, escape};
use crate::boot::BootMode;
use crate::protocol::{Down, Driver, Report, Step, Table, TargetState, Up, WriteRequest};
use crate::stick::choose::{Fs, FsRequest};
use crate::stick::disk::{self, TargetFacts};
use crate::stick::label;
use crate::stick::safety::{self, Inventory};
use crate::stick::units::{human, parse_size};
use crate::sys::procfs;
use crate::worker::spawn::{Event, Worker};
use crate::worker::watchdog;

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
    /// Filesystem of the stick: auto = FAT32 (splitting a big install.wim) unless that cannot work, then NTFS
    #[arg(long, value_parser = choices::parser::<FsRequest>(), default_value = "auto")]
    pub fs: FsRequest,
    /// NTFS sticks: write this UEFI:NTFS image (a FAT image, e.g. Rufus's Secure Boot signed one) as the UEFI
    /// bridge partition instead of the GRUB bridge woesafe builds
    #[arg(long, value_name = "FILE")]
    pub uefi_ntfs_image: Option<PathBuf>,
    /// Which firmware the stick boots on (default: both with an MBR table, uefi with GPT)
    #[arg(long, value_parser = choices::parser::<BootMode>())]
    pub boot: Option<BootMode>,
    /// Partition table: mbr (BIOS and UEFI) or gpt (UEFI only)
    #[arg(long, value_parser = choices::parser::<Table>(), default_value = "mbr")]
    pub table: Table,
    /// How to read the ISO: auto = userspace, the reader built for untrusted images (bounded memory and time);
    /// kernel = a udf/iso9660 mount, only on request since the kernel parses the untrusted image in ring 0 (the
    /// userspace parse runs first, and the mounted tree must match it)
    #[arg(long, value_parser = choices::parser::<Driver>(), default_value = "auto")]
    pub source_driver: Driver,
    /// How to fill the stick's filesystem: kernel mount (vfat, ntfs3) or userspace (our FAT32 writer, ntfs-3g);
    /// auto asks /proc/filesystems
    #[arg(long, value_parser = choices::parser::<Driver>(), default_value = "auto")]
    pub target_driver: Driver,
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub yes: bool,
    /// Allow a disk that is neither removable nor on USB; with --bypass, replace the ISO's own autounattend.xml
    #[arg(long)]
    pub force: bool,
    /// Windows 11 setup options (Rufus's): write an autounattend.xml that bypasses tpm, secureboot, ram
    /// and/or online-account (comma-separated), or all
    #[arg(long, value_parser = choices::parser::<crate::media::unattend::Bypass>(), value_delimiter = ',', value_name = "LIST")]
    pub bypass: Vec<crate::media::unattend::Bypass>,
    /// Seconds without any byte moving (in any step) before the write is declared stalled: woesafe then names
    /// the stuck step, process and device, tears the worker down and exits 4
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub stall_timeout: u64,
}

impl WriteArgs {
    /// --boot, or its default for the table: both with MBR, uefi with GPT.
    pub fn boot_mode(&self) -> BootMode {
        self.boot.unwrap_or(match self.table {
            Table::Mbr => BootMode::Both,
            Table::Gpt => BootMode::Uefi,
        })
    }
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
            Some(b) => b.println(term::escape_lines(msg)),
            None => crate::say!("{msg}"),
        }
    }

    fn step(&mut self, step: Step) {
        self.step_no += 1;
        let text = format!("[{}/{}] {}", self.step_no.min(self.steps), self.steps, step.describe());
        if let Some(b) = self.bar.take() {
            b.finish(); // keep the finished bar on screen as the step's line
        }
        if matches!(step, Step::Copy | Step::Prepare) && self.tty && !self.quiet {
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
                crate::say!("      {pct:3}%  {} of {}", human(done), human(total));
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
            // The model comes from the device (a USB stick's descriptor says what it likes).
            format!("/dev/{} — {}, {}, {}", escape(&b.name), escape(&b.model), human(b.size), b.transport)
        }
        TargetFacts::Image { path, exists: true, .. } => {
            format!("image file {} ({})", term::path(path), human(size))
        }
        TargetFacts::Image { path, .. } => {
            format!("new image file {} ({})", term::path(path), human(size))
        }
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
    let _ = write!(std::io::stderr(), "{} Type 'yes' to continue: ", term::escape_lines(question));
    let _ = std::io::stderr().flush();
    // Wait for the answer without blocking signals out: a Ctrl-C at the prompt must end woesafe at once.
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) != 0 {
            crate::say!("");
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
    use crate::sys::argfile::{self, ArgFileError, FileId, Want};
    let replaced = || fail(exit::FAILED, format!("{} was replaced while woesafe checked it", term::path(path)));
    let open_err = |e| match e {
        ArgFileError::Open { source, .. } if source.raw_os_error() == Some(libc::EBUSY) => {
            fail(exit::REFUSED, format!("busy: {} is in use (mounted, or held by another program)", term::path(path)))
        }
        ArgFileError::Open { source, .. } => fail(exit::FAILED, format!("cannot open {}: {source}", term::path(path))),
        ArgFileError::ReplacedSinceCheck { .. } => replaced(),
        e => fail(exit::FAILED, e),
    };
    let file = match t {
        TargetFacts::Block(b) => {
            // O_NONBLOCK (cleared once open): whatever the path names now, the open cannot hang.
            let f = argfile::open_with(path, Want::RegularOrBlock, false, libc::O_EXCL).map_err(open_err)?;
            let id = FileId::of_file(&f, path).map_err(open_err)?;
            if id.rdev == 0 || (libc::major(id.rdev), libc::minor(id.rdev)) != (b.major, b.minor) {
                return Err(replaced());
            }
            f
        }
        TargetFacts::Image { exists: true, dev, ino, .. } => {
            argfile::reopen(path, Want::Regular, true, 0, &FileId { dev: *dev, ino: *ino, rdev: 0 })
                .map_err(open_err)?
        }
        TargetFacts::Image { exists: false, .. } => {
            let f =
                OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(|e| {
                    fail(exit::FAILED, format!("cannot create the image file {}: {e}", term::path(path)))
                })?;
            if let Err(e) = f.set_len(create_size) {
                // Never leave the empty file behind: a retry would take it for an existing image.
                remove_if_same(&f, path);
                let code = if e.raw_os_error() == Some(libc::EFBIG) { exit::USAGE } else { exit::FAILED };
                return Err(fail(
                    code,
                    format!(
                        "cannot make the image file {} {create_size} bytes long: {e} (the filesystem holding it \
                         allows less: give a smaller --size or another place); nothing was written",
                        term::path(path)
                    ),
                ));
            }
            f
        }
    };
    crate::sys::lock::lock_exclusive(&file, path).map_err(|e| match e {
        crate::sys::lock::LockError::Busy { .. } => fail(exit::REFUSED, e),
        _ => fail(exit::FAILED, e),
    })?;
    Ok(file)
}

/// Removes the image file woesafe created at `path`, if `path` still names the open file `f`.
fn remove_if_same(f: &File, path: &Path) {
    use std::os::unix::fs::MetadataExt;
    let ours = f.metadata().ok().map(|m| (m.dev(), m.ino()));
    let there = std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()));
    if ours.is_some() && ours == there {
        let _ = std::fs::remove_file(path);
    }
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
            Err(e) => return Err(fail(exit::FAILED, format!("cannot create {}: {e}", term::path(&p)))),
        }
    }
    Err(fail(exit::FAILED, "cannot create a work directory under /run"))
}
use std::os::unix::fs::DirBuilderExt;

/// Where the scratch file for WIM work goes: $TMPDIR when it names a directory, else /var/tmp (on disk, unlike
/// a /tmp that may be RAM).
fn scratch_dir() -> PathBuf {
    match std::env::var_os("TMPDIR").map(PathBuf::from) {
        Some(p) if p.is_absolute() && p.is_dir() => p,
        _ => PathBuf::from("/var/tmp"),
    }
}

/// Whether `program` is an executable file in $PATH (or /usr/sbin, /sbin, where mkntfs lives).
fn in_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|d| std::fs::metadata(d.join(program)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Refuse (before anything is written) when a program a later step needs is missing.
fn need_programs(programs: &[(&str, &str)], purpose: &str) -> Result<(), Exit> {
    match programs.iter().find(|(p, _)| !in_path(p)) {
        Some((program, package)) => Err(fail(
            exit::REFUSED,
            format!("{purpose} needs {program}, which is not installed: install the Debian package {package}"),
        )),
        None => Ok(()),
    }
}

fn print_inventory(ui: &Ui, inv: &Inventory) {
    ui.line(&format!(
        "ISO: {} — {} files in {} directories, {} ({})",
        if inv.volume_id.is_empty() { "(no volume id)".into() } else { escape(&inv.volume_id) },
        inv.files,
        inv.dirs,
        human(inv.total_bytes),
        inv.reader
    ));
    if ui.verbose > 0 {
        for (path, size) in &inv.largest {
            ui.line(&format!("  largest: {} ({})", escape(path), human(*size)));
        }
        ui.line(&format!("  space needed: {}", human(inv.needed_bytes)));
    }
    if let Ok(c) = &inv.fs {
        ui.line(&filesystem_line(c));
    }
}

/// The filesystem choice, for the terminal: its reason names files from the ISO, so it is escaped.
fn filesystem_line(c: &crate::stick::choose::Choice) -> String {
    format!("Filesystem: {} — {}", c.fs.name(), escape(&c.reason))
}

fn print_report(ui: &Ui, target: &Path, r: &Report, secs: f64) {
    let boot = match (r.bios, r.uefi) {
        (true, true) => "BIOS and UEFI",
        (true, false) => "BIOS",
        (false, true) => "UEFI",
        (false, false) => "none",
    };
    ui.line(&format!(
        "Done: {} — {} \"{}\" (serial {}), {} partition 1 at {} MiB, {}; {} files, {} in {:.1} s; boots: {}",
        term::path(target),
        r.fs.name(),
        escape(&r.label),
        r.serial,
        match r.table {
            Table::Mbr => "MBR",
            Table::Gpt => "GPT",
        },
        r.partition_offset >> 20,
        human(r.partition_size),
        r.files,
        human(r.bytes),
        secs,
        boot
    ));
    if let Some((wim, parts)) = &r.split {
        ui.line(&format!("  {} was split into {parts} parts (sources/install.swm, install2.swm, ...)", escape(wim)));
    }
    if let Some((offset, size)) = r.bridge {
        ui.line(&format!("  UEFI bridge: partition 2 at {} MiB, {} (FAT)", offset >> 20, human(size)));
    }
    if let Some(image) = r.win7_loader_from_image {
        ui.line(&format!("  Windows 7 UEFI loader: extracted from install.wim image {image}"));
    }
}

pub fn run(args: &WriteArgs, verbose: u8, quiet: bool) -> Result<u8, Exit> {
    let started = Instant::now();
    if args.table == Table::Gpt && args.boot.is_some_and(BootMode::bios) {
        return Err(fail(
            exit::USAGE,
            "--table gpt makes a UEFI-only stick (GRUB's BIOS boot code lives in the MBR's gap, and BIOS firmware \
             does not boot GPT sticks this way): use --boot uefi, or --table mbr for BIOS",
        ));
    }
    let boot = args.boot_mode();
    if let Some(img) = &args.uefi_ntfs_image {
        if args.fs == FsRequest::Fat32 {
            return Err(fail(
                exit::USAGE,
                "--uefi-ntfs-image is for NTFS sticks (FAT32 sticks boot UEFI directly); drop it, or use --fs ntfs",
            ));
        }
        if !boot.uefi() {
            return Err(fail(exit::USAGE, "--uefi-ntfs-image is for UEFI boot; drop it, or leave out --boot bios"));
        }
        crate::boot::uefi::check_uefi_ntfs_image(img)
            .map_err(|e| fail(exit::USAGE, format!("--uefi-ntfs-image: {e}")))?;
    }
    let label = match &args.label {
        Some(l) => Some(label::validate(l).map_err(|e| fail(exit::USAGE, format!("--label: {e}")))?),
        None => None,
    };
    let size_arg = match &args.size {
        Some(s) => Some(parse_size(s).map_err(|e| fail(exit::USAGE, format!("--size: {e}")))?),
        None => None,
    };
    // Looked at before it is opened, and opened without blocking: a FIFO, socket, device or directory is a
    // usage error at once, never a hang.
    let iso_file =
        crate::sys::argfile::open(&args.iso, crate::sys::argfile::Want::Regular, false).map_err(|e| match e {
            crate::sys::argfile::ArgFileError::Stat { source, .. } => {
                fail(exit::USAGE, format!("cannot read the ISO {}: {source}", term::path(&args.iso)))
            }
            e => fail(exit::USAGE, format!("{e}; give the path of an .iso file")),
        })?;
    // The worker opens the ISO again and must find this very file.
    let iso_id = crate::sys::argfile::FileId::of_file(&iso_file, &args.iso).map_err(|e| fail(exit::FAILED, e))?;
    drop(iso_file);
    let facts = disk::target_facts(&args.target).map_err(|e| fail(exit::USAGE, e))?;
    let target_size = match (&facts, size_arg) {
        (TargetFacts::Block(_), Some(_)) => {
            return Err(fail(exit::USAGE, "--size applies to image files only; a block device keeps its size"));
        }
        (TargetFacts::Block(b), None) => b.size,
        (TargetFacts::Image { exists: true, size, path, .. }, _) => {
            if size % 512 != 0 {
                return Err(fail(
                    exit::USAGE,
                    format!(
                        "{} is {size} bytes, not a whole number of 512-byte sectors; resize it (e.g. `truncate -s 8G`)",
                        term::path(path)
                    ),
                ));
            }
            *size
        }
        (TargetFacts::Image { exists: false, path, .. }, None) => {
            return Err(fail(
                exit::USAGE,
                format!("{} does not exist: give --size (e.g. --size 8G) to create an image file", term::path(path)),
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
        steps: 10 - usize::from(!boot.bios()) - usize::from(!boot.uefi()),
        last_pct: 0,
        last_step: None,
    };
    if let (TargetFacts::Image { exists: true, .. }, Some(s)) = (&facts, size_arg)
        && s != target_size
    {
        ui.line(&format!(
            "Note: {} exists; it keeps its size of {} (--size is for new image files)",
            term::path(&args.target),
            human(target_size)
        ));
    }
    // An existing image file is locked first, so that a second writer hears "busy" rather than a complaint
    // about the first writer's loop device; a block device is checked first (opening it exclusively would
    // turn every other refusal into "busy"); a new image file is created only once everything has passed.
    let mut lock = match facts {
        TargetFacts::Image { exists: true, .. } => Some(open_and_lock(&facts, &args.target, target_size)?),
        _ => None,
    };
    let host = disk::host_facts(&args.iso).map_err(|e| fail(exit::FAILED, e))?;
    safety::check_target(&facts, &host, &crate::sys::loopdev::attached_paths(), &args.iso, args.force)
        .map_err(|e| fail(exit::REFUSED, e))?;
    if boot.bios() {
        crate::boot::bios::check_grub_installed().map_err(|e| fail(exit::FAILED, e))?;
    }
    if let TargetFacts::Block(_) = facts {
        lock = Some(open_and_lock(&facts, &args.target, target_size)?);
    }
    let work_dir = make_work_dir()?;
    let result = supervise(args, &facts, iso_id, label, target_size, &work_dir, &mut lock, &mut ui);
    ui.done();
    // The worker is gone, and with it its private mounts: the directory is empty and unmounted here.
    let _ = std::fs::remove_dir(&work_dir);
    // A new image file that ended untouched (stopped or failed before the wipe, e.g. while preparing the WIM)
    // goes again: "the target was not changed" must hold for a file that did not exist either.
    if matches!(facts, TargetFacts::Image { exists: false, .. })
        && !matches!(result, Ok(Some(_)))
        && matches!(ui.last_step, None | Some(Step::ReadIso) | Some(Step::Prepare))
        && let Some(f) = lock.take()
    {
        remove_if_same(&f, &args.target);
    }
    if let Ok(Some(report)) = &result {
        print_report(&ui, &args.target, report, started.elapsed().as_secs_f64());
    }
    result.map(|r| if r.is_some() { exit::OK } else { exit::REFUSED })
}

/// Start the worker and follow it to the end. Ok(None): the user declined.
#[allow(clippy::too_many_arguments)]
fn supervise(
    args: &WriteArgs,
    facts: &TargetFacts,
    iso_id: crate::sys::argfile::FileId,
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
        iso_id,
        target: args.target.clone(),
        target_is_image: matches!(facts, TargetFacts::Image { .. }),
        target_size,
        label,
        boot: args.boot_mode(),
        table: args.table,
        source_driver: args.source_driver,
        target_driver: args.target_driver,
        work_dir: work_dir.to_path_buf(),
        bypass: args.bypass.clone(),
        fs: args.fs,
        scratch_dir: scratch_dir(),
        uefi_ntfs_image: args.uefi_ntfs_image.as_ref().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())),
        pause_at,
    };
    // Threads first: once the worker is spawned the supervisor can start no more (see worker::spawn).
    let (events, inbox) = mpsc::channel();
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP, SIGQUIT]).map_err(|e| fail(exit::FAILED, format!("signals: {e}")))?;
    let signal_handle = signals.handle();
    let signal_events = events.clone();
    let watcher = std::thread::spawn(move || {
        for sig in signals.forever() {
            let _ = INTERRUPTED.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
            if signal_events.send(Event::Signal(sig)).is_err() {
                break;
            }
        }
    });
    let result = match crate::worker::spawn::spawn(events) {
        Ok(mut worker) => follow(args, facts, &mut worker, &inbox, request, lock, ui),
        Err(e) => Err(fail(exit::FAILED, e)),
    };
    signal_handle.close();
    let _ = watcher.join();
    ui.done();
    if let (Ok(_), Some(f)) = (&result, lock.as_ref()) {
        f.sync_all().map_err(|e| fail(exit::FAILED, format!("cannot flush {}: {e}", term::path(&args.target))))?;
        if let TargetFacts::Block(_) = facts {
            // Have the kernel read the new partition table, from the fd that holds the disk exclusively (from
            // any other fd the kernel answers EBUSY while we hold it). Failure only delays it to the next
            // plug-in.
            let _ = crate::sys::loopdev::reread_partitions(f);
        }
    }
    result
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT (Ctrl-C)",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        SIGQUIT => "SIGQUIT",
        _ => "a signal",
    }
}

/// How the worker's run ended, as far as its frames tell.
enum Ending {
    Done(Box<Report>),
    Aborted,
    Refused(Exit),
    Failed(Exit),
    Stopped { step: Step, state: TargetState },
}

/// Read the worker's events to the end: progress, the content checks and the confirmation, signals (first:
/// orderly stop; second: tear down), and the stall watchdog.
fn follow(
    args: &WriteArgs,
    facts: &TargetFacts,
    worker: &mut Worker,
    inbox: &mpsc::Receiver<Event>,
    request: WriteRequest,
    lock: &mut Option<File>,
    ui: &mut Ui,
) -> Result<Option<Report>, Exit> {
    let broken = |e| fail(exit::FAILED, format!("lost contact with the worker: {e}"));
    let target_size = request.target_size;
    worker.send(&Down::Start(Box::new(request))).map_err(broken)?;
    let stall_after = Duration::from_secs(args.stall_timeout.max(1));
    let mut ending = None;
    let mut first_signal = None;
    let mut torn_down: Option<Instant> = None;
    let mut devices: Vec<String> = Vec::new();
    let mut io_seen = None;
    let mut last_move = Instant::now();
    loop {
        match inbox.recv_timeout(Duration::from_millis(250)) {
            Ok(Event::Frame(frame)) => {
                last_move = Instant::now();
                match frame {
                    // The worker's lines carry names from the ISO: one line each, every control escaped.
                    Up::Info(m) => ui.line(&escape(&m)),
                    Up::Warning(m) => ui.line(&format!("warning: {}", escape(&m))),
                    Up::Devices(d) => devices = d,
                    Up::Fuse { connection, fusectl } => worker.hold_for_fuse(connection, fusectl),
                    Up::Inventory(inv) => {
                        print_inventory(ui, &inv);
                        if inv.scratch_bytes > 0 {
                            ui.steps += 1; // the Prepare step
                        }
                        let verdict = if first_signal.is_some() {
                            Err(fail(exit::REFUSED, "stopped before writing"))
                        } else {
                            decide(args, facts, &inv, target_size, lock)
                        };
                        match verdict {
                            // The worker must find the file we hold locked: it opens the target by path.
                            Ok(()) => {
                                match lock.as_ref().map(|f| crate::sys::argfile::FileId::of_file(f, &args.target)) {
                                    Some(Ok(target)) => worker.send(&Down::Proceed { target }).map_err(broken)?,
                                    Some(Err(e)) => {
                                        let _ = worker.send(&Down::Abort);
                                        ending = Some(Ending::Refused(fail(exit::FAILED, e)));
                                    }
                                    None => {
                                        let _ = worker.send(&Down::Abort);
                                        ending = Some(Ending::Refused(fail(exit::FAILED, "the target is not locked")));
                                    }
                                }
                            }
                            Err(e) => {
                                let _ = worker.send(&Down::Abort);
                                ending = Some(Ending::Refused(e));
                            }
                        }
                        last_move = Instant::now(); // the time spent at the prompt is no stall
                    }
                    Up::Step(s) => {
                        ui.last_step = Some(s);
                        ui.step(s)
                    }
                    Up::Progress { done, total } => ui.progress(done, total),
                    // A write's worker never sends a verification's frames.
                    Up::Verified(_) | Up::VerifyFailed { .. } => {}
                    Up::Done(r) => ending = Some(Ending::Done(r)),
                    Up::Aborted => ending = ending.or(Some(Ending::Aborted)),
                    Up::Stopped { step, state } => ending = Some(Ending::Stopped { step, state }),
                    Up::Failed { step, message, state, refused } => {
                        ending = Some(Ending::Failed(fail(
                            if refused { exit::REFUSED } else { exit::FAILED },
                            format!(
                                "{} failed: {}\nTarget state: {}",
                                step.describe(),
                                escape(&message),
                                state.describe()
                            ),
                        )))
                    }
                }
            }
            Ok(Event::Signal(sig)) => {
                if first_signal.is_none() {
                    first_signal = Some(sig);
                    ui.line(&format!(
                        "Stopping ({}): finishing cleanly — flush, unmount, detach. Press Ctrl-C again to stop at once.",
                        signal_name(sig)
                    ));
                    worker.signal(nix::sys::signal::Signal::SIGTERM);
                } else if torn_down.is_none() {
                    torn_down = Some(Instant::now());
                    ui.line("Second signal: tearing the worker's namespace down now.");
                    worker.signal(nix::sys::signal::Signal::SIGKILL);
                }
            }
            Ok(Event::Bad(e)) => {
                worker.signal(nix::sys::signal::Signal::SIGKILL);
                ending = Some(Ending::Failed(fail(exit::FAILED, format!("bad message from the worker: {e}"))));
                break;
            }
            Ok(Event::Closed) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        // A worker stuck in the kernel keeps its pipe open even when killed: stop waiting for it.
        if torn_down.is_some_and(|t| t.elapsed() >= Duration::from_secs(1)) {
            break;
        }
        let io: u64 = devices.iter().filter_map(|d| procfs::block_io(d)).map(|(moved, _)| moved).sum();
        if io_seen != Some(io) {
            io_seen = Some(io);
            last_move = Instant::now();
        }
        if last_move.elapsed() >= stall_after && ending.is_none() {
            ui.done();
            // Said at once: closing our own handle on a hung target (the lock, or the image on a hung
            // filesystem) may itself wait for the stuck I/O when the process exits.
            let report = watchdog::stalled(worker, ui.last_step, &devices, stall_after);
            crate::say!("woesafe: {report}");
            return Err(fail(exit::STALLED, ""));
        }
    }
    worker.hang_up();
    let leftovers = if torn_down.is_some() { watchdog::teardown(worker) } else { String::new() };
    let status = worker.wait_for(Duration::from_secs(if torn_down.is_some() { 0 } else { 10 }));
    let state_now = || TargetState::when_stopped_in(ui.last_step);
    if let Some(sig) = first_signal {
        let code = 128 + sig as u8;
        let message = match &ending {
            &Some(Ending::Stopped { step, state }) => format!(
                "stopped by {} while {}: what was written is flushed, and the worker unmounted and detached \
                 everything it used.\nTarget state: {}",
                signal_name(sig),
                step.describe().to_lowercase(),
                state.describe()
            ),
            Some(Ending::Done(_)) => {
                format!("{} came after the last byte: the write is complete", signal_name(sig))
            }
            // The write failed on its own while stopping: its error is the news.
            Some(Ending::Failed(e)) => e.message.clone(),
            Some(Ending::Refused(_)) | Some(Ending::Aborted) | None
                if matches!(ui.last_step, None | Some(Step::ReadIso) | Some(Step::Prepare)) =>
            {
                format!(
                    "stopped by {} before anything was written.\nTarget state: the target was not changed",
                    signal_name(sig)
                )
            }
            _ => format!(
                "stopped at once by {}{}.{}\nTarget state: {}",
                signal_name(sig),
                ui.last_step.map_or(String::new(), |s| format!(" while {}", s.describe().to_lowercase())),
                if leftovers.is_empty() {
                    "\nThe worker's namespace is torn down: its mounts and loop devices are gone.".to_string()
                } else {
                    leftovers
                },
                state_now().describe()
            ),
        };
        if let Some(Ending::Done(r)) = ending {
            crate::say!("woesafe: {message}");
            return Ok(Some(*r));
        }
        return Err(fail(code, message));
    }
    match ending {
        Some(Ending::Done(r)) if status.is_some_and(|s| s.success()) => Ok(Some(*r)),
        Some(Ending::Aborted) => Ok(None),
        Some(Ending::Refused(e)) | Some(Ending::Failed(e)) => Err(e),
        _ => Err(fail(
            exit::FAILED,
            format!(
                "the worker ended unexpectedly ({}){}.\nTarget state: {}",
                status.map_or("still running".to_string(), |s| s.to_string()),
                ui.last_step.map_or(String::new(), |s| format!(" while {}", s.describe().to_lowercase())),
                state_now().describe()
            ),
        )),
    }
}

/// The checks that need the ISO's inventory, then the confirmation, then the lock on a new image file.
fn decide(
    args: &WriteArgs,
    facts: &TargetFacts,
    inv: &Inventory,
    target_size: u64,
    lock: &mut Option<File>,
) -> Result<(), Exit> {
    // One line, naming files from the ISO: every control escaped.
    safety::check_content(inv, &args.iso, &args.target, target_size)
        .map_err(|e| fail(exit::REFUSED, escape(&e.to_string())))?;
    if !args.bypass.is_empty() && inv.has_answer_file && !args.force {
        return Err(fail(
            exit::REFUSED,
            "the ISO already has an autounattend.xml, which --bypass would replace; add --force to replace it, or \
             leave out --bypass to keep it",
        ));
    }
    if args.boot_mode() == BootMode::Uefi && !inv.has_uefi_loader && inv.win7_image.is_none() {
        return Err(fail(
            exit::REFUSED,
            "--boot uefi: the ISO has no efi/boot/bootx64.efi and is not a Windows 7 ISO (whose install.wim carries \
             one); use --boot bios",
        ));
    }
    if let Ok(c) = &inv.fs
        && c.fs == Fs::Ntfs
    {
        let kernel = args.target_driver == Driver::Kernel
            || (args.target_driver == Driver::Auto && crate::media::source::kernel_has("ntfs3"));
        let programs: &[(&str, &str)] =
            if kernel { &[("mkntfs", "ntfs-3g")] } else { &[("mkntfs", "ntfs-3g"), ("ntfs-3g", "ntfs-3g")] };
        need_programs(programs, &format!("the NTFS stick ({})", escape(&c.reason)))?;
        if inv.bridge && args.uefi_ntfs_image.is_none() {
            crate::boot::uefi::check_grub_efi_installed().map_err(|e| fail(exit::REFUSED, e))?;
            need_programs(&[("mkfs.fat", "dosfstools"), ("mmd", "mtools"), ("mcopy", "mtools")], "the UEFI bridge")?;
        }
    }
    if let Ok(c) = &inv.fs
        && c.fs == Fs::Fat32
        && args.uefi_ntfs_image.is_some()
    {
        crate::say!("Note: --uefi-ntfs-image is not used: the stick is FAT32, which UEFI firmware reads directly");
    }
    if inv.scratch_bytes > 0 {
        need_programs(&[("wimlib-imagex", "wimtools"), ("mkfs.ext4", "e2fsprogs")], "preparing the WIM")?;
    }
    if !args.yes {
        let q = format!("This will ERASE everything on {}.", describe_target(facts, target_size));
        if !confirm(&q)? {
            return Err(fail(exit::REFUSED, "not confirmed; nothing was written"));
        }
    }
    if lock.is_none() {
        *lock = Some(open_and_lock(facts, &args.target, target_size)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filesystem_reason_is_escaped() {
        let c = crate::stick::choose::Choice {
            fs: Fs::Ntfs,
            reason: "sources/a\x1b]0;owned\x07.wim (5 GiB) is over FAT32's file-size limit".into(),
            split: vec![],
            repack: vec![],
        };
        let line = filesystem_line(&c);
        assert!(!line.contains('\x1b') && !line.contains('\x07'), "{line}");
        assert!(line.contains("sources/a\\x1b]0;owned\\x07.wim"), "{line}");
    }
}
