//! Shadowed space: files in a mount point's directory hidden under the mount (a copy that went on after the
//! mount vanished writes into the directory underneath). Found in a private copy of the mount table, where
//! the leftover mounts are unmounted so the directories show what lies beneath; the host's table is never
//! touched. Never deleted: reported, and moved only when the user asks.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The hidden argument that runs the scan in a child with its own mount namespace.
pub const SCAN_ARG: &str = "__woesafe_shadow_scan";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shadowed {
    #[serde(serialize_with = "crate::cli::term::serialize_path")]
    pub mount_point: PathBuf,
    /// Files found underneath (paths relative to the mount point) and their sizes: the first 100.
    pub files: Vec<(String, u64)>,
    /// How many files there are in all, and their total size.
    pub count: usize,
    pub total: u64,
}

/// What the child finds under its `index`-th mount point (told by position: mount points need not be UTF-8,
/// which JSON strings cannot carry).
#[derive(Debug, Serialize, Deserialize)]
struct Found {
    index: usize,
    files: Vec<(String, u64)>,
    count: usize,
    total: u64,
}

/// Files listed per mount point (the counts and sizes cover all of them).
const LISTED: usize = 100;

fn walk(dir: &std::path::Path, rel: &str, out: &mut Vec<(String, u64)>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
        match e.metadata() {
            Ok(m) if m.is_dir() => walk(&e.path(), &r, out),
            Ok(m) => out.push((r, m.len())),
            Err(_) => {}
        }
    }
}

/// The child's side: unmount (privately) everything on each mount point, then list what is underneath.
pub fn child_main(mount_points: &[OsString]) -> i32 {
    let mount_points: Vec<&Path> = mount_points.iter().map(Path::new).collect();
    let mut found = Vec::new();
    // Peel every layer of every leftover off first (in this namespace only), so that no walk below can reach
    // into a leftover filesystem, a stuck FUSE one included.
    for mp in &mount_points {
        for _ in 0..64 {
            if nix::mount::umount2(*mp, nix::mount::MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
    }
    for (index, mp) in mount_points.iter().enumerate() {
        // One leftover inside another: its directory lay on the outer filesystem, which is gone here.
        if mount_points.iter().any(|o| o != mp && mp.starts_with(o)) {
            continue;
        }
        let mut files = Vec::new();
        walk(mp, "", &mut files);
        if !files.is_empty() {
            let total = files.iter().map(|f| f.1).sum();
            let count = files.len();
            files.sort_by_key(|f| std::cmp::Reverse(f.1));
            files.truncate(LISTED);
            found.push(Found { index, files, count, total });
        }
    }
    match serde_json::to_string(&found) {
        Ok(t) => {
            println!("{t}");
            0
        }
        Err(_) => 1,
    }
}

/// Look under the given mount points (of recover's own mount namespace) without changing it.
pub fn scan(mount_points: &[PathBuf]) -> Vec<Shadowed> {
    if mount_points.is_empty() {
        return Vec::new();
    }
    let found: Vec<Found> = super::run_private_child(SCAN_ARG, mount_points)
        .and_then(|out| serde_json::from_slice(&out).ok())
        .unwrap_or_default();
    found
        .into_iter()
        .filter_map(|f| {
            let mount_point = mount_points.get(f.index)?.clone();
            Some(Shadowed { mount_point, files: f.files, count: f.count, total: f.total })
        })
        .collect()
}

/// rename(2) that never replaces an existing target (renameat2 with RENAME_NOREPLACE).
fn rename_noreplace(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    Ok(renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE)?)
}

/// Move what was shadowed under `mount_point` (now unmounted) into `dest/<name of the mount point>/`, by
/// rename (same filesystem only: nothing is copied and then deleted; nothing existing is replaced).
pub fn move_out(mount_point: &Path, dest: &Path) -> Result<PathBuf, String> {
    use crate::cli::term::path;
    let name = mount_point.file_name().ok_or("no name")?.to_owned();
    let to = dest.join(name);
    std::fs::create_dir_all(&to).map_err(|e| format!("cannot create {}: {e}", path(&to)))?;
    for e in std::fs::read_dir(mount_point).map_err(|e| format!("{}: {e}", path(mount_point)))?.flatten() {
        let target = to.join(e.file_name());
        rename_noreplace(&e.path(), &target).map_err(|err| {
            format!(
                "cannot move {} to {}: {err} (rename works within one filesystem; move it yourself with mv)",
                path(&e.path()),
                path(&target)
            )
        })?;
    }
    Ok(to)
}
