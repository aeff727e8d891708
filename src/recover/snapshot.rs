//! Reading the system for `recover`: the mount table of every mount namespace a process still holds, the loop
//! devices, and the directories whose names a tool uses.

use std::collections::BTreeMap;

use super::patterns;
use super::plan::{Dir, Loop, Namespace, Snapshot};
use crate::sys::mountinfo;

/// Where the tools put their mount points and temporary directories.
pub fn candidate_parents() -> Vec<String> {
    let mut v: Vec<String> = ["/media", "/tmp", "/var/tmp", "/run"].iter().map(|s| s.to_string()).collect();
    if let Ok(t) = std::env::var("TMPDIR") {
        let t = t.trim_end_matches('/').to_string();
        if !t.is_empty() && !v.contains(&t) {
            v.push(t);
        }
    }
    v
}

fn read_namespaces() -> Vec<Namespace> {
    let own = std::fs::read_link("/proc/self/ns/mnt").map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let mut by_ns: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    if let Ok(d) = std::fs::read_dir("/proc") {
        for e in d.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            if let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/mnt")) {
                by_ns.entry(link.to_string_lossy().into_owned()).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    for (id, mut pids) in by_ns {
        pids.sort();
        let is_host = id == own;
        let text = if is_host {
            std::fs::read_to_string("/proc/self/mountinfo")
        } else {
            pids.iter()
                .find_map(|p| std::fs::read_to_string(format!("/proc/{p}/mountinfo")).ok())
                .ok_or_else(|| std::io::Error::other("gone"))
        };
        let Ok(text) = text else { continue };
        out.push(Namespace { id, is_host, pids, mounts: mountinfo::parse(&text) });
    }
    out.sort_by_key(|n| !n.is_host);
    out
}

fn read_loops() -> Vec<Loop> {
    let mut out = Vec::new();
    for (name, backing) in crate::sys::loopdev::attached() {
        let dev = std::fs::read_to_string(format!("/sys/block/{name}/dev")).unwrap_or_default();
        let Some((maj, min)) = dev.trim().split_once(':') else { continue };
        let autoclear =
            std::fs::read_to_string(format!("/sys/block/{name}/loop/autoclear")).is_ok_and(|s| s.trim() == "1");
        out.push(Loop { name, major: maj.parse().unwrap_or(0), minor: min.parse().unwrap_or(0), backing, autoclear });
    }
    out
}

fn read_dirs(named: &[String]) -> Vec<Dir> {
    let mut out = Vec::new();
    let mut look = |path: String| {
        if let Ok(meta) = std::fs::symlink_metadata(&path)
            && meta.is_dir()
        {
            let empty = std::fs::read_dir(&path).map(|mut d| d.next().is_none()).unwrap_or(false);
            out.push(Dir { path, empty });
        }
    };
    for parent in candidate_parents() {
        if let Ok(d) = std::fs::read_dir(&parent) {
            for e in d.flatten() {
                let path = format!("{parent}/{}", e.file_name().to_string_lossy());
                if patterns::classify(&path).is_some() {
                    look(path);
                }
            }
        }
    }
    for n in named {
        look(n.trim_end_matches('/').to_string());
    }
    out
}

fn read_live() -> Vec<(u32, String)> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|pid| {
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                    Some((pid, comm.trim().to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Read everything `plan` needs. `named`: paths the user gave.
pub fn take(named: &[String]) -> Snapshot {
    Snapshot { namespaces: read_namespaces(), loops: read_loops(), dirs: read_dirs(named), live: read_live() }
}
