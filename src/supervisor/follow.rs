//! Following the worker: start it, read its frames to the end, answer its inventory with the content checks and
//! the confirmation, escalate stops (orderly, then at once), and watch for stalls.

use std::fs::File;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::event::{Confirmation, Event, Observer, StopHandle, signal_name, step_name};
use super::target::{self, Access};
use super::{Outcome, Progress, Write};
use crate::boot::BootMode;
use crate::cli::term::escape;
use crate::exit::{self, Exit, fail};
use crate::protocol::{Down, Driver, Report, Step, TargetState, Up, WriteRequest};
use crate::stick::choose::Fs;
use crate::stick::disk::TargetFacts;
use crate::stick::safety::{self, Inventory};
use crate::worker::spawn::{self as spawner, Worker};
use crate::worker::watchdog::{self, Movement};

/// How the worker's run ended, as far as its frames tell.
enum Ending {
    Done(Box<Report>),
    Aborted,
    Planned(Box<Inventory>),
    Refused(Exit),
    Failed(Exit),
    Stopped { step: Step, state: TargetState },
}

/// Start the worker and follow it to the end.
pub(super) fn supervise(
    write: &Write,
    facts: &TargetFacts,
    request: WriteRequest,
    lock: &mut Option<File>,
    observer: &mut dyn Observer,
    stop: &StopHandle,
    progress: &mut Progress,
) -> Result<Outcome, Exit> {
    // The frame reader thread is started before the worker (see worker::spawn).
    let (events, inbox) = mpsc::channel();
    let mut worker = spawner::spawn(events, write.worker_exe.as_deref()).map_err(|e| fail(exit::FAILED, e))?;
    let mut f = Follower { write, facts, lock, observer, stop, progress, worker: &mut worker, devices: Vec::new() };
    f.follow(&inbox, request)
}

struct Follower<'a> {
    write: &'a Write,
    facts: &'a TargetFacts,
    lock: &'a mut Option<File>,
    observer: &'a mut dyn Observer,
    stop: &'a StopHandle,
    progress: &'a mut Progress,
    worker: &'a mut Worker,
    /// The block devices the write goes through, for the watchdog's I/O counters.
    devices: Vec<String>,
}

impl Follower<'_> {
    fn info(&mut self, message: String) {
        self.observer.event(&Event::Info { message });
    }

    fn step(&mut self, step: Step) {
        self.progress.last_step = Some(step);
        self.progress.step_no += 1;
        self.progress.step_started = Instant::now();
        self.observer.event(&Event::Step {
            step: step.name(),
            number: self.progress.step_no.min(self.progress.steps),
            total: self.progress.steps,
            description: step.describe(),
        });
    }

    fn progress(&mut self, done: u64, total: u64) {
        let secs = self.progress.step_started.elapsed().as_secs_f64();
        let bytes_per_second = if secs > 0.0 { (done as f64 / secs) as u64 } else { 0 };
        self.observer.event(&Event::Progress {
            step: step_name(self.progress.last_step),
            done,
            total,
            bytes_per_second,
        });
    }

    /// The worker's inventory arrived: report it, run the checks that need it, and tell the worker to go on or
    /// not. Returns the ending this decides, if any.
    fn inventory(&mut self, inv: Box<Inventory>) -> Result<Option<Ending>, Exit> {
        let broken = |e| fail(exit::FAILED, format!("lost contact with the worker: {e}"));
        self.observer.event(&Event::Iso {
            volume_id: inv.volume_id.clone(),
            reader: inv.reader.clone(),
            files: inv.files,
            dirs: inv.dirs,
            bytes: inv.total_bytes,
            needed_bytes: inv.needed_bytes,
            largest: inv.largest.clone(),
        });
        if let Ok(c) = &inv.fs {
            let opts = &self.write.options;
            self.observer.event(&Event::Layout {
                filesystem: c.fs.name(),
                reason: c.reason.clone(),
                table: match opts.table {
                    crate::protocol::Table::Mbr => "mbr",
                    crate::protocol::Table::Gpt => "gpt",
                },
                boot: match inv.boot {
                    BootMode::Bios => "bios",
                    BootMode::Uefi => "uefi",
                    BootMode::Both => "both",
                },
            });
        }
        if inv.scratch_bytes > 0 {
            self.progress.steps += 1; // the Prepare step
        }
        if self.write.options.boot_mode_for(self.facts).bios() && !inv.boot.bios() {
            self.progress.steps -= 1; // no BootBios step: the ISO has no /bootmgr
        }
        let verdict = if self.stop.requested().is_some() {
            Err(fail(exit::REFUSED, "stopped before writing"))
        } else {
            self.decide(&inv)
        };
        Ok(match verdict {
            Ok(()) if self.write.options.dry_run => {
                let _ = self.worker.send(&Down::Abort);
                Some(Ending::Planned(inv))
            }
            // The worker must find the file we hold locked: it opens the target by path.
            Ok(()) => match self.lock.as_ref().map(|f| crate::sys::argfile::FileId::of_file(f, &self.write.target)) {
                Some(Ok(target)) => {
                    self.worker.send(&Down::Proceed { target }).map_err(broken)?;
                    None
                }
                Some(Err(e)) => {
                    let _ = self.worker.send(&Down::Abort);
                    Some(Ending::Refused(fail(exit::FAILED, e)))
                }
                None => {
                    let _ = self.worker.send(&Down::Abort);
                    Some(Ending::Refused(fail(exit::FAILED, "the target is not locked")))
                }
            },
            Err(e) => {
                let _ = self.worker.send(&Down::Abort);
                Some(Ending::Refused(e))
            }
        })
    }

    /// Read the worker's events to the end: progress, the content checks and the confirmation, stop requests
    /// (first: orderly stop; second: tear down), and the stall watchdog.
    fn follow(&mut self, inbox: &mpsc::Receiver<spawner::Event>, request: WriteRequest) -> Result<Outcome, Exit> {
        let broken = |e| fail(exit::FAILED, format!("lost contact with the worker: {e}"));
        self.worker.send(&Down::Start(Box::new(request))).map_err(broken)?;
        let stall_after = self.write.options.stall_timeout.max(Duration::from_secs(1));
        let mut ending = None;
        let mut stops_seen = 0;
        let mut torn_down: Option<Instant> = None;
        let mut movement = Movement::default();
        loop {
            match inbox.recv_timeout(Duration::from_millis(100)) {
                Ok(spawner::Event::Frame(frame)) => {
                    movement.moved();
                    match frame {
                        Up::Info(m) => self.info(m),
                        Up::Detail(message) => self.observer.event(&Event::Detail { message }),
                        Up::Warning(message) => self.observer.event(&Event::Warning { message }),
                        Up::Devices(d) => self.devices = d,
                        Up::Fuse { connection, fusectl } => self.worker.hold_for_fuse(connection, fusectl),
                        Up::Inventory(inv) => {
                            if let Some(e) = self.inventory(inv)? {
                                ending = Some(e);
                            }
                            movement.moved(); // the time spent at the prompt is no stall
                        }
                        Up::Step(s) => self.step(s),
                        Up::Progress { done, total } => self.progress(done, total),
                        Up::Done(r) => ending = Some(Ending::Done(r)),
                        Up::Aborted => ending = ending.or(Some(Ending::Aborted)),
                        Up::Stopped { step, state } => ending = Some(Ending::Stopped { step, state }),
                        // Verification results come inside a write's report, never on their own.
                        Up::Verified(_) | Up::VerifyFailed { .. } => {
                            self.worker.signal(nix::sys::signal::Signal::SIGKILL);
                            ending = Some(Ending::Failed(fail(exit::FAILED, "unexpected frame from the worker")));
                            break;
                        }
                        Up::Failed { step, message, state, refused } => {
                            self.progress.reported = Some(state);
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
                Ok(spawner::Event::Bad(e)) => {
                    self.worker.signal(nix::sys::signal::Signal::SIGKILL);
                    ending = Some(Ending::Failed(fail(exit::FAILED, format!("bad message from the worker: {e}"))));
                    break;
                }
                Ok(spawner::Event::Closed) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            let stops = self.stop.count();
            if stops > stops_seen {
                stops_seen = stops;
                let signal = self.stop.requested().unwrap_or(libc::SIGTERM);
                if torn_down.is_none() && stops == 1 {
                    self.observer.event(&Event::Stopping { signal, at_once: false });
                    self.worker.signal(nix::sys::signal::Signal::SIGTERM);
                } else if torn_down.is_none() {
                    torn_down = Some(Instant::now());
                    self.observer.event(&Event::Stopping { signal, at_once: true });
                    self.worker.signal(nix::sys::signal::Signal::SIGKILL);
                }
            }
            // A worker stuck in the kernel keeps its pipe open even when killed: stop waiting for it.
            if torn_down.is_some_and(|t| t.elapsed() >= Duration::from_secs(1)) {
                break;
            }
            if movement.stalled(&self.devices, stall_after) && ending.is_none() {
                // Said at once: closing our own handle on a hung target (the lock, or the image on a hung
                // filesystem) may itself wait for the stuck I/O when the process exits.
                let report = watchdog::stalled(
                    self.worker,
                    self.progress.last_step,
                    &self.devices,
                    stall_after,
                    "unknown beyond the last step; check the device, then run woesafe write again.",
                );
                self.observer.event(&Event::Failed {
                    message: report,
                    exit_code: exit::STALLED,
                    target_state: TargetState::when_stopped_in(self.progress.last_step),
                });
                return Err(fail(exit::STALLED, ""));
            }
        }
        self.worker.hang_up();
        let leftovers = if torn_down.is_some() { watchdog::teardown(self.worker) } else { String::new() };
        let status = self.worker.wait_for(Duration::from_secs(if torn_down.is_some() { 0 } else { 10 }));
        self.end(ending, status, leftovers)
    }

    /// The outcome, from how the worker ended and whether a stop was asked for.
    fn end(
        &mut self,
        ending: Option<Ending>,
        status: Option<std::process::ExitStatus>,
        leftovers: String,
    ) -> Result<Outcome, Exit> {
        let last_step = self.progress.last_step;
        let state_now = TargetState::when_stopped_in(last_step);
        if let Some(sig) = self.stop.requested() {
            let code = exit::signal(sig);
            let message = match &ending {
                &Some(Ending::Stopped { step, state }) => {
                    self.progress.reported = Some(state);
                    format!(
                        "stopped by {} while {}: what was written is flushed, and the worker unmounted and \
                         detached everything it used.\nTarget state: {}",
                        signal_name(sig),
                        step.describe().to_lowercase(),
                        state.describe()
                    )
                }
                Some(Ending::Done(r)) if self.write.options.verify && r.verified.is_none() => format!(
                    "{} came after the last byte: the write is complete, but the read-back (--verify) was stopped, \
                     so the stick is not verified (woesafe verify can check it)",
                    signal_name(sig)
                ),
                Some(Ending::Done(_)) => {
                    format!("{} came after the last byte: the write is complete", signal_name(sig))
                }
                // The write failed on its own while stopping: its error is the news.
                Some(Ending::Failed(e)) => e.message.clone(),
                Some(Ending::Refused(_)) | Some(Ending::Aborted) | Some(Ending::Planned(_)) | None
                    if matches!(last_step, None | Some(Step::ReadIso) | Some(Step::Prepare)) =>
                {
                    self.progress.reported = Some(TargetState::Untouched);
                    format!(
                        "stopped by {} before anything was written.\nTarget state: the target was not changed",
                        signal_name(sig)
                    )
                }
                _ => format!(
                    "stopped at once by {}{}.{}\nTarget state: {}",
                    signal_name(sig),
                    last_step.map_or(String::new(), |s| format!(" while {}", s.describe().to_lowercase())),
                    if leftovers.is_empty() {
                        "\nThe worker's namespace is torn down: its mounts and loop devices are gone.".to_string()
                    } else {
                        leftovers
                    },
                    state_now.describe()
                ),
            };
            if let Some(Ending::Done(r)) = ending {
                self.observer.event(&Event::Note { message: format!("woesafe: {message}") });
                return Ok(Outcome::Written(r));
            }
            return Err(fail(code, message));
        }
        match ending {
            Some(Ending::Done(r)) if status.is_some_and(|s| s.success()) => Ok(Outcome::Written(r)),
            Some(Ending::Planned(inv)) => Ok(Outcome::Planned(inv)),
            Some(Ending::Aborted) => Ok(Outcome::Declined),
            Some(Ending::Refused(e)) => {
                self.progress.reported = Some(TargetState::Untouched);
                Err(e)
            }
            Some(Ending::Failed(e)) => Err(e),
            // Stopped in an orderly way, but not by us: a signal sent to the worker itself.
            Some(Ending::Stopped { step, state }) => {
                self.progress.reported = Some(state);
                Err(fail(
                    exit::FAILED,
                    format!(
                        "the worker was stopped from outside woesafe (a signal sent to it, not to woesafe) while {}: \
                         what was written is flushed, and it unmounted and detached everything it used.\nTarget \
                         state: {}",
                        step.describe().to_lowercase(),
                        state.describe()
                    ),
                ))
            }
            _ => Err(fail(
                exit::FAILED,
                format!(
                    "the worker ended unexpectedly ({}){}.\nTarget state: {}",
                    status.map_or("still running".to_string(), |s| s.to_string()),
                    last_step.map_or(String::new(), |s| format!(" while {}", s.describe().to_lowercase())),
                    state_now.describe()
                ),
            )),
        }
    }

    /// The checks that need the ISO's inventory, then the confirmation, then the lock on a new image file. A
    /// dry run stops before the confirmation.
    fn decide(&mut self, inv: &Inventory) -> Result<(), Exit> {
        let write = self.write;
        let opts = &write.options;
        let target_size = self.progress_target_size();
        // One line, naming files from the ISO: every control escaped (this message is shown as it is).
        safety::check_content(inv, &write.iso, &write.target, target_size)
            .map_err(|e| fail(exit::REFUSED, escape(&e.to_string())))?;
        if opts.setup.writes_answer_file() && inv.has_answer_file && !opts.force {
            let names = opts.setup.option_names().join(" and ");
            return Err(fail(
                exit::REFUSED,
                format!(
                    "the ISO already has an autounattend.xml, which {names} would replace; add --force to replace \
                     it, or leave out {names} to keep it"
                ),
            ));
        }
        if let Some(asked) = opts.boot.filter(|b| b.bios())
            && !inv.has_bootmgr
        {
            return Err(fail(
                exit::REFUSED,
                format!(
                    "--boot {}: the ISO has no /bootmgr, the boot manager BIOS firmware starts (Windows on ARM and \
                     other UEFI-only media have none), so the stick could not boot under BIOS: use --boot uefi{}",
                    crate::cli::choices::name_of(asked),
                    if inv.has_uefi_loader { " or leave out --boot" } else { "" }
                ),
            ));
        }
        if inv.boot == BootMode::Uefi && !inv.has_uefi_loader && inv.win7_image.is_none() {
            return Err(fail(
                exit::REFUSED,
                "--boot uefi: the ISO has no efi/boot/bootx64.efi or bootaa64.efi and is not a Windows 7 ISO (whose \
                 install.wim carries one); use --boot bios",
            ));
        }
        if let Ok(c) = &inv.fs
            && c.fs == Fs::Ntfs
        {
            let kernel = opts.target_driver == Driver::Kernel
                || (opts.target_driver == Driver::Auto && crate::media::source::kernel_has("ntfs3"));
            let programs: &[(&str, &str)] =
                if kernel { &[("mkntfs", "ntfs-3g")] } else { &[("mkntfs", "ntfs-3g"), ("ntfs-3g", "ntfs-3g")] };
            target::need_programs(programs, &format!("the NTFS stick ({})", escape(&c.reason)))?;
            if inv.bridge && opts.uefi_ntfs_image.is_none() {
                let arch = inv.uefi_arch.unwrap_or(crate::boot::uefi::Arch::X64);
                crate::boot::uefi::check_grub_efi_installed(arch).map_err(|e| fail(exit::REFUSED, e))?;
                target::need_programs(
                    &[("mkfs.fat", "dosfstools"), ("mmd", "mtools"), ("mcopy", "mtools")],
                    "the UEFI bridge",
                )?;
            }
        }
        if let Ok(c) = &inv.fs
            && c.fs == Fs::Fat32
            && opts.uefi_ntfs_image.is_some()
        {
            self.observer.event(&Event::Note {
                message: "Note: --uefi-ntfs-image is not used: the stick is FAT32, which UEFI firmware reads \
                          directly"
                    .into(),
            });
        }
        if inv.scratch_bytes > 0 {
            target::need_programs(&[("wimlib-imagex", "wimtools"), ("mkfs.ext4", "e2fsprogs")], "preparing the WIM")?;
        }
        if opts.dry_run {
            return Ok(());
        }
        let question = Confirmation { target: target::describe_target(self.facts, target_size) };
        let answer = self.observer.confirm(&question).map_err(|reason| fail(exit::REFUSED, reason))?;
        if !answer {
            if self.stop.requested().is_some() {
                return Err(fail(exit::REFUSED, "stopped before writing"));
            }
            return Err(fail(exit::REFUSED, "not confirmed; nothing was written"));
        }
        if self.lock.is_none() {
            *self.lock = target::open_and_lock(self.facts, &write.target, target_size, Access::Write)?;
        }
        Ok(())
    }

    fn progress_target_size(&self) -> u64 {
        match self.facts {
            TargetFacts::Block(b) => b.size,
            TargetFacts::Image { exists: true, size, .. } => *size,
            TargetFacts::Image { exists: false, .. } => self.write.options.size.unwrap_or(0),
        }
    }
}
