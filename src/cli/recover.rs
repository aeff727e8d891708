//! `woesafe recover [PATH...]`: show what crashed WoeUSB, WoeUSB-ng and woesafe runs left behind and what
//! would clean it; `--yes` cleans it. `--json` prints plan and results as one JSON document.

use std::path::{Path, PathBuf};

use super::exit;
use super::term;
use super::write::Exit;
use crate::recover::{apply, plan, shadow, snapshot};
use crate::stick::units::human;

#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    /// Also clean these mount points, directories or loop devices, although their names match no known tool
    pub paths: Vec<PathBuf>,
    /// Carry out the plan (without it, recover only shows it and changes nothing)
    #[arg(short, long)]
    pub yes: bool,
    /// Print the plan (and with --yes the results) as one JSON document on stdout
    #[arg(long)]
    pub json: bool,
    /// With --yes: move files found hidden under leftover mounts into DIR/<mount point name>/ (same
    /// filesystem only; without this flag they are only reported, never touched)
    #[arg(long, value_name = "DIR")]
    pub move_shadowed: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Report<'a> {
    plan: &'a plan::CleanupPlan,
    applied: bool,
    results: Vec<apply::Outcome>,
    /// What a fresh look still finds after acting.
    remaining: Vec<String>,
    /// Filesystems a fresh look finds unmounted everywhere but still held by processes.
    still_alive: Vec<String>,
    /// Free space of the filesystems involved, before and (when acting) after.
    space: Vec<Space>,
    /// Files hidden under leftover mounts.
    shadowed: Vec<shadow::Shadowed>,
    moved: Vec<String>,
}

#[derive(serde::Serialize)]
struct Space {
    mount_point: String,
    /// Bytes in use on a leftover filesystem (what unmounting it and detaching its device gives back).
    used: Option<u64>,
    free_before: Option<u64>,
    free_after: Option<u64>,
}

/// What waits on a leftover filesystem's last holder: its space and loop device when it lives on one, the
/// device itself (a USB partition) otherwise.
fn what_comes_back(device: &str) -> String {
    if device.starts_with("/dev/loop") {
        format!("its space and its loop device {} come back when the process lets go", term::escape(device))
    } else {
        format!(
            "{} stays busy (cannot be written or unplugged cleanly) until the process lets go",
            term::escape(device)
        )
    }
}

fn statvfs(path: &Path) -> Option<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = s.fragment_size() as u64;
    Some(((s.blocks() as u64 - s.blocks_free() as u64) * frsize, s.blocks_available() as u64 * frsize))
}

/// Whether looking at `path` could reach into a FUSE filesystem of this mount namespace (whose daemon may be
/// stuck: a stat there would never return).
fn through_fuse(path: &Path, mounts: &[crate::sys::mountinfo::MountEntry]) -> bool {
    mounts.iter().any(|m| m.fstype.starts_with("fuse") && path.starts_with(&m.mount_point))
}

/// The named paths and --move-shadowed, looked at (never opened, never through a FUSE mount): a named path
/// that exists here must be a directory or a block device (a mount point of another namespace may not exist
/// here at all); --move-shadowed, when it exists, a directory. Anything else is a usage error.
fn check_path_arguments(args: &RecoverArgs) -> Result<(), Exit> {
    use std::os::unix::fs::MetadataExt;
    let mounts = crate::sys::mountinfo::read_self().unwrap_or_default();
    let usage = |message: String| Exit { code: exit::USAGE, message };
    for path in &args.paths {
        if through_fuse(path, &mounts) {
            continue;
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            let mode = meta.mode();
            if !matches!(mode & libc::S_IFMT, libc::S_IFDIR | libc::S_IFBLK) {
                return Err(usage(format!(
                    "{} is {}: name a leftover mount point, directory or loop device",
                    term::path(path),
                    crate::sys::argfile::kind_of(mode)
                )));
            }
        }
    }
    if let Some(dest) = &args.move_shadowed
        && !through_fuse(dest, &mounts)
    {
        match std::fs::metadata(dest) {
            Ok(meta) => crate::sys::argfile::check_kind(dest, meta.mode(), crate::sys::argfile::Want::Directory)
                .map_err(|e| usage(format!("--move-shadowed: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(usage(format!("--move-shadowed: cannot read {}: {e}", term::path(dest)))),
        }
    }
    Ok(())
}

pub fn run(args: &RecoverArgs, quiet: bool) -> Result<u8, Exit> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Exit {
            code: exit::REFUSED,
            message: "recover needs root (it reads every process's mount namespace); run it with sudo".into(),
        });
    }
    for p in &args.paths {
        if !p.is_absolute() {
            return Err(Exit { code: exit::USAGE, message: format!("{}: give an absolute path", term::path(p)) });
        }
        // Everything below a named path is taken: a top-level or system directory would take far too much.
        let parts: Vec<&std::ffi::OsStr> = p
            .components()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        // ".." would climb out of what the path seems to name.
        let climbs = p.components().any(|c| c == std::path::Component::ParentDir);
        if parts.len() < 2 || climbs || ["proc", "sys", "dev"].iter().any(|d| parts[0] == *d) {
            return Err(Exit {
                code: exit::USAGE,
                message: format!(
                    "{}: too broad; name the leftover mount point, directory or loop device itself (e.g. /mnt/stuck, \
                     /dev/loop7): everything below a named path is unmounted",
                    term::path(p)
                ),
            });
        }
    }
    check_path_arguments(args)?;
    let snap = snapshot::take(&args.paths);
    let the_plan = plan::plan(&snap, &args.paths);
    let mut report = Report {
        plan: &the_plan,
        applied: false,
        results: Vec::new(),
        remaining: Vec::new(),
        still_alive: Vec::new(),
        space: Vec::new(),
        shadowed: Vec::new(),
        moved: Vec::new(),
    };
    let own_mounts: Vec<PathBuf> = the_plan
        .actions
        .iter()
        .filter_map(|a| match a {
            plan::Action::Unmount { host: true, mount_point, .. } => Some(mount_point.clone()),
            _ => None,
        })
        .collect();
    report.shadowed = shadow::scan(&own_mounts);
    // Space: each leftover mount of this namespace, and the filesystems the leftovers live on. Never statvfs a
    // path where a FUSE filesystem is mounted (also stacked on top of another): a stuck daemon would not answer.
    let fuse_points: Vec<&Path> = the_plan
        .actions
        .iter()
        .filter_map(|a| match a {
            plan::Action::Unmount { host: true, mount_point, fstype, .. } if fstype.starts_with("fuse") => {
                Some(mount_point.as_path())
            }
            _ => None,
        })
        .collect();
    for a in &the_plan.actions {
        if let plan::Action::Unmount { host: true, mount_point, .. } = a
            && !fuse_points.contains(&mount_point.as_path())
        {
            report.space.push(Space {
                mount_point: term::path_json(mount_point),
                used: statvfs(mount_point).map(|s| s.0),
                free_before: None,
                free_after: None,
            });
        }
    }
    if !the_plan.actions.is_empty() {
        for parent in snapshot::candidate_parents() {
            if let Some((_, free)) = statvfs(Path::new(&parent)) {
                report.space.push(Space { mount_point: parent, used: None, free_before: Some(free), free_after: None });
            }
        }
    }
    let say = |line: &str| {
        if !quiet && !args.json {
            crate::say!("{line}");
        }
    };
    if the_plan.actions.is_empty() && the_plan.detached.is_empty() {
        say("Nothing to recover: no leftovers of WoeUSB, WoeUSB-ng or woesafe were found.");
    } else if the_plan.actions.is_empty() {
        say(
            "No leftover mounts, loop devices or directories to clean; but filesystems that no mount shows are still alive:",
        );
    } else {
        say(if args.yes { "Recovering:" } else { "Found leftovers; `woesafe recover --yes` would:" });
        for a in &the_plan.actions {
            say(&format!("  - {}", a.describe()));
        }
    }
    for note in &the_plan.left_alone {
        say(&format!("  left alone: {note}"));
    }
    for h in &the_plan.holders {
        say(&format!("  holder: {}", h.describe()));
    }
    for d in &the_plan.detached {
        say(&format!("  unmounted but alive: {}", d.describe()));
        for h in &d.holders {
            say(&format!(
                "      held by process {} ({}) through its {}{}",
                h.pid,
                term::escape(&h.comm),
                h.how.join(", "),
                if h.state == 'D' {
                    " (in uninterruptible sleep, D: it ends only when its I/O completes or the device is removed)"
                } else {
                    ""
                }
            ));
        }
    }
    for d in &the_plan.deleted_open {
        say(&format!(
            "  deleted but still open: {} ({}) by process {} ({}): the space comes back when it closes the file or exits",
            term::escape(&d.path),
            human(d.size),
            d.pid,
            term::escape(&d.comm)
        ));
    }
    for sh in &report.shadowed {
        say(&format!(
            "  shadowed: {} hides {} in {} file(s) underneath it (written after the mount vanished); kept{}",
            term::path(&sh.mount_point),
            human(sh.total),
            sh.count,
            if args.move_shadowed.is_some() { ", and moved out with --move-shadowed" } else { "" }
        ));
        for (f, size) in sh.files.iter().take(5) {
            say(&format!("      {} ({})", term::escape(f), human(*size)));
        }
    }
    for sp in report.space.iter().filter(|s| s.used.is_some()) {
        say(&format!("  {} holds {}", term::escape(&sp.mount_point), human(sp.used.unwrap_or(0))));
    }
    if args.yes && (!the_plan.actions.is_empty() || !the_plan.detached.is_empty() || args.move_shadowed.is_some()) {
        report.applied = true;
        report.results = apply::apply(&the_plan.actions, &apply::namespace_holder);
        for r in &report.results {
            match (&r.error, &r.note) {
                (Some(e), _) => say(&format!("  FAILED: {}: {e}", r.action)),
                (None, Some(note)) => say(&format!("  {}: {note}", r.action)),
                (None, None) => say(&format!("  done: {}", r.action)),
            }
        }
        if let Some(dest) = &args.move_shadowed {
            // What the unmounts just uncovered (only where the unmount succeeded), and tools' mount-point
            // directories that already held files.
            let unmounted = |mp: &Path| {
                the_plan.actions.iter().zip(&report.results).any(|(a, r)| {
                    r.ok && matches!(a, plan::Action::Unmount { mount_point, host: true, .. } if mount_point == mp)
                })
            };
            let dirs: Vec<PathBuf> = report
                .shadowed
                .iter()
                .map(|s| s.mount_point.clone())
                .filter(|mp| unmounted(mp))
                .chain(the_plan.nonempty_dirs.clone())
                .collect();
            for dir in dirs {
                match shadow::move_out(&dir, dest) {
                    Ok(to) => {
                        say(&format!("  moved what was in {} to {}", term::path(&dir), term::path(&to)));
                        let _ = std::fs::remove_dir(&dir);
                        report.moved.push(term::path_json(&dir));
                    }
                    Err(e) => {
                        say(&format!("  FAILED: {e}"));
                        report.results.push(apply::Outcome {
                            action: format!("move {}", term::path(&dir)),
                            ok: false,
                            error: Some(e),
                            note: None,
                        });
                    }
                }
            }
        }
        let again = plan::plan(&snapshot::take(&args.paths), &args.paths);
        report.remaining = again.actions.iter().map(plan::Action::describe).collect();
        for sp in report.space.iter_mut().filter(|s| s.free_before.is_some()) {
            sp.free_after = statvfs(Path::new(&sp.mount_point)).map(|s| s.1);
            if let (Some(b), Some(a)) = (sp.free_before, sp.free_after) {
                say(&format!("  free on {}: {} before, {} after", sp.mount_point, human(b), human(a)));
            }
        }
        for h in the_plan.holders.iter().filter(|h| std::path::Path::new(&format!("/proc/{}", h.pid)).exists()) {
            say(&format!(
                "  still held: process {} ({}) keeps the detached filesystem of {} alive; {}",
                h.pid,
                term::escape(&h.comm),
                h.mount_point,
                what_comes_back(&h.device)
            ));
        }
        report.still_alive = again.detached.iter().map(plan::Detached::describe).collect();
    }
    if args.json {
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| Exit { code: exit::FAILED, message: e.to_string() })?;
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{text}");
    }
    if report.applied
        && (!report.remaining.is_empty() || !report.still_alive.is_empty() || report.results.iter().any(|r| !r.ok))
    {
        for r in &report.remaining {
            say(&format!("  still there: {r}"));
        }
        for r in &report.still_alive {
            say(&format!("  still alive: {r}"));
        }
        // The D-state hint only where a process really is in D.
        let in_d = the_plan
            .holders
            .iter()
            .chain(the_plan.detached.iter().flat_map(|d| &d.holders))
            .any(|h| crate::sys::procfs::read_proc(h.pid).is_some_and(|p| p.state == 'D'));
        let mut message = String::from("some leftovers could not be cleaned (see above).");
        if in_d {
            message.push_str(
                " A process stuck in the kernel (D state) keeps its mounts until its I/O ends or the device is \
                 removed; then run `woesafe recover --yes` again, and check the filesystem (e.g. `fsck -f \
                 /dev/sdX1`).",
            );
        } else if !report.still_alive.is_empty() {
            message.push_str(
                " End the processes named above (or have them leave the filesystem), then run `woesafe recover` again.",
            );
        }
        return Err(Exit { code: exit::FAILED, message });
    }
    Ok(exit::OK)
}
