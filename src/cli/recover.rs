//! `woesafe recover [PATH...]`: show what crashed WoeUSB, WoeUSB-ng and woesafe runs left behind and what
//! would clean it; `--yes` cleans it. `--json` prints plan and results as one JSON document.

use super::exit;
use super::write::Exit;
use crate::recover::{apply, plan, snapshot};

#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    /// Also clean these mount points, directories or loop devices, although their names match no known tool
    pub paths: Vec<String>,
    /// Carry out the plan (without it, recover only shows it and changes nothing)
    #[arg(short, long)]
    pub yes: bool,
    /// Print the plan (and with --yes the results) as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Report<'a> {
    plan: &'a plan::Plan,
    applied: bool,
    results: Vec<apply::Outcome>,
    /// What a fresh look still finds after acting.
    remaining: Vec<String>,
}

pub fn run(args: &RecoverArgs, quiet: bool) -> Result<u8, Exit> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Exit {
            code: exit::REFUSED,
            message: "recover needs root (it reads every process's mount namespace); run it with sudo".into(),
        });
    }
    for p in &args.paths {
        if !p.starts_with('/') {
            return Err(Exit { code: exit::USAGE, message: format!("{p}: give an absolute path") });
        }
    }
    let snap = snapshot::take(&args.paths);
    let the_plan = plan::plan(&snap, &args.paths);
    let mut report = Report { plan: &the_plan, applied: false, results: Vec::new(), remaining: Vec::new() };
    let say = |line: &str| {
        if !quiet && !args.json {
            crate::say!("{line}");
        }
    };
    if the_plan.actions.is_empty() {
        say("Nothing to recover: no leftovers of WoeUSB, WoeUSB-ng or woesafe were found.");
    } else {
        say(if args.yes { "Recovering:" } else { "Found leftovers; `woesafe recover --yes` would:" });
        for a in &the_plan.actions {
            say(&format!("  - {}", a.describe()));
        }
    }
    for note in &the_plan.left_alone {
        say(&format!("  left alone: {note}"));
    }
    if args.yes && !the_plan.actions.is_empty() {
        report.applied = true;
        report.results = apply::apply(&the_plan.actions, &apply::namespace_holder);
        for r in &report.results {
            match (&r.error, r.ok) {
                (None, _) => say(&format!("  done: {}", r.action)),
                (Some(note), true) => say(&format!("  {}: {note}", r.action)),
                (Some(e), false) => say(&format!("  FAILED: {}: {e}", r.action)),
            }
        }
        let again = plan::plan(&snapshot::take(&args.paths), &args.paths);
        report.remaining = again.actions.iter().map(plan::Action::describe).collect();
    }
    if args.json {
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| Exit { code: exit::FAILED, message: e.to_string() })?;
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{text}");
    }
    if report.applied && (!report.remaining.is_empty() || report.results.iter().any(|r| !r.ok)) {
        for r in &report.remaining {
            say(&format!("  still there: {r}"));
        }
        return Err(Exit {
            code: exit::FAILED,
            message: "some leftovers could not be cleaned (see above). A process stuck in the kernel (D state) \
                      keeps its mounts until its I/O ends or the device is removed; then run `woesafe recover \
                      --yes` again, and check the filesystem (e.g. `fsck -f /dev/sdX1`)."
                .into(),
        });
    }
    Ok(exit::OK)
}
