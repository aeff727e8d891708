//! Presenting a write's events: `Human` (a progress bar on a terminal, plain lines otherwise, on stderr),
//! `Json` (one NDJSON object per event on stdout, schema 1), and `Tee` (either or both).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::term::{self, escape};
use crate::protocol::{Report, Table};
use crate::stick::safety::Inventory;
use crate::stick::units::human;
use crate::supervisor::{Event, signal_name};

/// The version of the `--json` event schema (README.md, "write --json").
pub const JSON_SCHEMA: u32 = 1;

/// Text for people, on stderr.
pub struct Human {
    quiet: bool,
    verbose: u8,
    /// With several targets: each line starts with the target's name.
    prefix: Option<String>,
    multi: Option<MultiProgress>,
    bar: Option<ProgressBar>,
    tty: bool,
    last_pct: u64,
    target: PathBuf,
}

impl Human {
    pub fn new(
        quiet: bool,
        verbose: u8,
        prefix: Option<String>,
        multi: Option<MultiProgress>,
        target: PathBuf,
    ) -> Human {
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        Human { quiet, verbose, prefix, multi, bar: None, tty, last_pct: 0, target }
    }

    /// One line (already escaped where it holds foreign text), unless quiet.
    fn line(&self, msg: &str) {
        if !self.quiet {
            self.always(msg);
        }
    }

    /// One line even when quiet (errors, the final result).
    fn always(&self, msg: &str) {
        let msg = match &self.prefix {
            Some(p) => format!("{p}: {msg}"),
            None => msg.to_string(),
        };
        match (&self.bar, &self.multi) {
            (_, Some(m)) => {
                let _ = m.println(term::escape_lines(&msg));
            }
            (Some(b), None) => b.println(term::escape_lines(&msg)),
            (None, None) => crate::say!("{msg}"),
        }
    }

    fn new_bar(&self, text: String) -> ProgressBar {
        // Among several bars, one is shown from its first progress on (added to the MultiProgress there): drawn
        // on stderr before, it would be left behind as a stale line.
        let b = match &self.multi {
            Some(_) => ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::hidden()),
            None => ProgressBar::new(0),
        };
        b.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b.set_message(text);
        b
    }

    pub fn event(&mut self, event: &Event) {
        match event {
            Event::Target { .. } => {}
            Event::Note { message } => self.line(message),
            Event::Iso { volume_id, reader, files, dirs, bytes, needed_bytes, largest } => {
                self.line(&format!(
                    "ISO: {} — {files} files in {dirs} directories, {} ({reader})",
                    if volume_id.is_empty() { "(no volume id)".into() } else { escape(volume_id) },
                    human(*bytes),
                ));
                if self.verbose > 0 {
                    for (path, size) in largest {
                        self.line(&format!("  largest: {} ({})", escape(path), human(*size)));
                    }
                    self.line(&format!("  space needed: {}", human(*needed_bytes)));
                }
            }
            Event::Layout { filesystem, reason, .. } => {
                self.line(&format!("Filesystem: {filesystem} — {}", escape(reason)));
            }
            Event::Step { number, total, description, step } => {
                let text = format!("[{number}/{total}] {description}");
                self.end_bar();
                if matches!(*step, "copy" | "prepare") && self.tty && !self.quiet {
                    if self.multi.is_some() {
                        // Among several bars, the step's line is a line of its own; its bar goes when it ends.
                        self.line(&text);
                    }
                    let text = match &self.prefix {
                        Some(p) => format!("{p}: {text}"),
                        None => text,
                    };
                    self.bar = Some(self.new_bar(text));
                } else {
                    self.line(&text);
                }
                self.last_pct = 0;
            }
            Event::Progress { done, total, .. } => {
                if let Some(b) = &self.bar {
                    b.set_length(*total);
                    b.set_position(*done);
                    if let Some(m) = self.multi.as_ref().filter(|_| b.is_hidden()) {
                        self.bar = Some(m.add(b.clone()));
                    }
                } else if !self.quiet && *total > 0 {
                    let pct = done * 100 / total;
                    if pct / 10 > self.last_pct / 10 {
                        self.last_pct = pct;
                        self.line(&format!("      {pct:3}%  {} of {}", human(*done), human(*total)));
                    }
                }
            }
            // The worker's lines carry names from the ISO: one line each, every control escaped.
            Event::Info { message } => self.line(&escape(message)),
            Event::Detail { message } => {
                if self.verbose > 0 {
                    self.line(&escape(message))
                }
            }
            Event::Warning { message } => self.line(&format!("warning: {}", escape(message))),
            Event::Stopping { signal, at_once: false } => self.always(&format!(
                "Stopping ({}): finishing cleanly — flush, unmount, detach. Press Ctrl-C again to stop at once.",
                signal_name(*signal)
            )),
            Event::Stopping { at_once: true, .. } => {
                self.always("Second signal: tearing the worker's namespace down now.")
            }
            Event::Planned { inventory } => {
                self.finish();
                for l in plan_lines(&self.target, inventory) {
                    self.always(&l);
                }
            }
            Event::Done { report, seconds } => {
                self.finish();
                for l in report_lines(&self.target, report, *seconds) {
                    self.always(&l);
                }
            }
            Event::Failed { message, .. } | Event::Stopped { message, .. } => {
                self.finish();
                self.always(&format!("woesafe: {message}"));
            }
        }
    }

    /// Leave the bar where it stopped.
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            if self.multi.is_some() { b.finish_and_clear() } else { b.abandon() }
        }
    }

    /// A step ended: alone, its finished bar stays on screen as the step's line; among several, it goes.
    fn end_bar(&mut self) {
        if let Some(b) = self.bar.take() {
            if self.multi.is_some() { b.finish_and_clear() } else { b.finish() }
        }
    }
}

/// What a finished write did, for people.
fn report_lines(target: &Path, r: &Report, secs: f64) -> Vec<String> {
    let uefi = match r.uefi_arch {
        Some(arch) => format!("UEFI ({arch})"),
        None => "UEFI".into(),
    };
    let boot = match (r.bios, r.uefi) {
        (true, true) => format!("BIOS and {uefi}"),
        (true, false) => "BIOS".into(),
        (false, true) => uefi,
        (false, false) => "none".into(),
    };
    let mut lines = vec![format!(
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
    )];
    if let Some((wim, parts)) = &r.split {
        lines.push(format!("  {} was split into {parts} parts (sources/install.swm, install2.swm, ...)", escape(wim)));
    }
    if let Some((offset, size)) = r.bridge {
        lines.push(format!("  UEFI bridge: partition 2 at {} MiB, {} (FAT)", offset >> 20, human(size)));
    }
    if let Some(image) = r.win7_loader_from_image {
        lines.push(format!("  Windows 7 UEFI loader: extracted from install.wim image {image}"));
    }
    if let Some(image) = r.ca2023_from_image {
        lines.push(format!(
            "  Boot managers: signed by the Windows UEFI CA 2023, from sources/boot.wim image {image} (--ca2023)"
        ));
    }
    if let Some(v) = &r.verified {
        if v.identical() {
            lines.push(format!(
                "Verified: read back from the device, {} files, {}: identical to the ISO",
                v.files,
                human(v.bytes)
            ));
        } else {
            lines.push(format!("Verify FAILED: the read-back found {} mismatch(es):", v.mismatches.len()));
            // Mismatches name paths from the stick and the ISO: every control escaped.
            lines.extend(v.mismatches.iter().map(|m| format!("  mismatch: {}", escape(&m.to_string()))));
        }
        lines.extend(v.notes.iter().map(|n| format!("  note: {}", escape(n))));
    }
    lines
}

/// What a write would do (--dry-run), for people.
fn plan_lines(target: &Path, inv: &Inventory) -> Vec<String> {
    use crate::stick::safety::{PartitionRole, PlannedTable, PlannedUefi};
    let l = &inv.layout;
    let mut lines = vec![format!("Plan for {} (dry run: nothing was written):", term::path(target))];
    lines.push(format!("  partition table: {}", if l.table == PlannedTable::Gpt { "GPT" } else { "MBR" }));
    for p in &l.partitions {
        lines.push(format!(
            "  partition {}: at {} (byte {}), {} ({} bytes), type {}, {}",
            p.number,
            human(p.offset),
            p.offset,
            human(p.size),
            p.size,
            p.type_name,
            match p.role {
                PartitionRole::Main => "the Windows files",
                PartitionRole::UefiBridge => "the UEFI bridge",
            }
        ));
    }
    if let Ok(c) = &inv.fs {
        lines.push(format!("  filesystem: {} \"{}\" — {}", c.fs.name(), escape(&l.label), escape(&c.reason)));
    }
    lines.push(format!(
        "  files: {} in {} directories, {}; space needed on the stick: {}",
        l.files,
        l.dirs,
        human(l.bytes),
        human(inv.needed_bytes)
    ));
    if let Some(s) = &l.split {
        lines.push(format!(
            "  split: {}{} into {} parts of at most {} ({})",
            escape(&s.wim),
            if s.repack { ", re-packed first in scratch space," } else { "" },
            s.parts,
            human(s.part_bytes),
            s.part_sizes.iter().map(|b| human(*b)).collect::<Vec<_>>().join(", ")
        ));
    }
    if inv.scratch_bytes > 0 {
        lines.push(format!("  scratch space: {}", human(inv.scratch_bytes)));
    }
    for a in &l.added {
        lines.push(format!("  added by woesafe: {}", escape(a)));
    }
    if let Some(b) = &l.bios {
        lines.push(format!("  BIOS boot: {}; {}; {} ({})", b.boot_code, b.core_image, escape(&b.config), b.chain));
    }
    let arch = l.uefi_arch.map_or(String::new(), |a| format!(" ({a})"));
    match &l.uefi {
        Some(PlannedUefi::IsoLoader { path }) if l.ca2023_image.is_some() => {
            lines.push(format!("  UEFI boot{arch}: {} (replaced by --ca2023)", escape(path)))
        }
        Some(PlannedUefi::IsoLoader { path }) => lines.push(format!("  UEFI boot{arch}: the ISO's {}", escape(path))),
        Some(PlannedUefi::Windows7 { image, path }) => {
            lines.push(format!("  UEFI boot{arch}: {} extracted from install.wim image {image}", escape(path)))
        }
        Some(PlannedUefi::Bridge { loader, image }) => lines.push(format!(
            "  UEFI boot{arch}: {} chain-loads {}",
            image.as_deref().map_or("the bridge woesafe builds (GRUB, not Secure Boot signed)".into(), |i| format!(
                "the bridge image {}",
                escape(i)
            )),
            escape(loader)
        )),
        Some(PlannedUefi::Unavailable) => lines.push("  UEFI boot: unavailable (the ISO has no loader)".into()),
        None => {}
    }
    if l.bios.is_none() && !inv.has_bootmgr {
        lines.push("  BIOS boot: none (the ISO has no /bootmgr)".into());
    }
    if let Some(image) = l.ca2023_image {
        lines.push(format!(
            "  boot managers: the Windows UEFI CA 2023 ones from sources/boot.wim image {image} (--ca2023)"
        ));
    }
    lines
}

/// NDJSON on stdout: one object per event, each with `schema` and, with several targets, `target`.
#[derive(Clone)]
pub struct Json {
    out: Arc<Mutex<std::io::Stdout>>,
    target: Option<String>,
}

impl Json {
    pub fn stdout() -> Json {
        Json { out: Arc::new(Mutex::new(std::io::stdout())), target: None }
    }

    /// The same stream, with every line naming `target`.
    pub fn for_target(&self, target: &Path) -> Json {
        Json { out: Arc::clone(&self.out), target: Some(term::path_json(target)) }
    }

    /// Write one object as one line (a closed stdout is not an error: the write goes on).
    pub fn line(&self, target: Option<&str>, value: &serde_json::Value) {
        let mut obj = serde_json::Map::new();
        obj.insert("schema".into(), JSON_SCHEMA.into());
        if let Some(t) = target.or(self.target.as_deref()) {
            obj.insert("target".into(), t.into());
        }
        if let serde_json::Value::Object(m) = value {
            obj.extend(m.clone());
        }
        let text = serde_json::Value::Object(obj).to_string();
        if let Ok(mut out) = self.out.lock() {
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }

    pub fn event(&self, event: &Event) {
        match serde_json::to_value(event) {
            Ok(v) => self.line(None, &v),
            Err(e) => self.line(None, &serde_json::json!({"event": "warning", "message": format!("{e}")})),
        }
    }
}

/// Human text, JSON, or both.
pub struct Tee {
    pub human: Option<Human>,
    pub json: Option<Json>,
}

impl Tee {
    pub fn event(&mut self, event: &Event) {
        if let Some(h) = &mut self.human {
            h.event(event);
        }
        if let Some(j) = &self.json {
            j.event(event);
        }
    }

    pub fn finish(&mut self) {
        if let Some(h) = &mut self.human {
            h.finish();
        }
    }
}
