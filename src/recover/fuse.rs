//! Stuck FUSE connections (DESIGN.md: a stopped or dead-locked daemon leaves its requests unanswered forever).
//! The fusectl filesystem tells how many requests wait on each connection and can abort one; woesafe mounts it
//! only in a private mount namespace of a short-lived child, so the host's mount table never changes.

use std::collections::BTreeMap;

/// The hidden argument that runs the fusectl child.
pub const CTL_ARG: &str = "__woesafe_fusectl";
const CONNECTIONS: &str = "/sys/fs/fuse/connections";

/// The fusectl connection number of a FUSE filesystem: its device number as the kernel encodes it.
pub fn connection_id(major: u32, minor: u32) -> u32 {
    (major << 20) | minor
}

/// The child's side: `read ID...` prints {id: waiting}; `abort ID...` writes 1 to each abort file and prints
/// {id: 0 on success, 1 on failure}.
pub fn child_main(args: &[String]) -> i32 {
    if std::fs::read_dir(CONNECTIONS).map(|mut d| d.next().is_none()).unwrap_or(true)
        && nix::mount::mount(Some("fusectl"), CONNECTIONS, Some("fusectl"), nix::mount::MsFlags::empty(), None::<&str>)
            .is_err()
    {
        return 1;
    }
    let Some((cmd, ids)) = args.split_first() else { return 2 };
    let listed: Vec<String>;
    let ids = if cmd == "list" {
        listed = std::fs::read_dir(CONNECTIONS)
            .map(|d| d.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).collect())
            .unwrap_or_default();
        &listed[..]
    } else {
        ids
    };
    let mut out = BTreeMap::new();
    for id in ids {
        let dir = format!("{CONNECTIONS}/{id}");
        let value = match cmd.as_str() {
            "read" | "list" => {
                std::fs::read_to_string(format!("{dir}/waiting")).ok().and_then(|s| s.trim().parse::<u64>().ok())
            }
            "abort" => Some(u64::from(std::fs::write(format!("{dir}/abort"), b"1").is_err())),
            _ => return 2,
        };
        if let Some(v) = value {
            out.insert(id.clone(), v);
        }
    }
    println!("{}", serde_json::to_string(&out).unwrap_or_default());
    0
}

fn run_child(args: &[String]) -> BTreeMap<String, u64> {
    super::run_private_child(CTL_ARG, args).and_then(|out| serde_json::from_slice(&out).ok()).unwrap_or_default()
}

/// Requests waiting on each connection, sampled three times `gap` apart: a connection counts as stuck only
/// when requests wait in every sample (the smallest count is kept).
pub fn waiting(ids: &[u32], gap: std::time::Duration) -> Vec<(u32, u64)> {
    if ids.is_empty() {
        return Vec::new();
    }
    let args = |cmd: &str| std::iter::once(cmd.to_string()).chain(ids.iter().map(u32::to_string)).collect::<Vec<_>>();
    let mut samples = vec![run_child(&args("read"))];
    for _ in 0..2 {
        std::thread::sleep(gap);
        samples.push(run_child(&args("read")));
    }
    ids.iter()
        .filter_map(|id| {
            let k = id.to_string();
            let counts: Option<Vec<u64>> = samples.iter().map(|s| s.get(&k).copied()).collect();
            Some((*id, counts?.into_iter().min()?))
        })
        .collect()
}

/// Every FUSE connection the kernel has, with the requests waiting on it, sampled three times `gap` apart
/// (the smallest count is kept; a connection gone in any sample is left out).
pub fn all_waiting(gap: std::time::Duration) -> Vec<(u32, u64)> {
    let first = run_child(&["list".to_string()]);
    let ids: Vec<u32> = first.keys().filter_map(|k| k.parse().ok()).collect();
    waiting(&ids, gap)
}

/// Every FUSE connection the kernel has (one look, no sampling).
pub fn connections() -> Vec<u32> {
    run_child(&["list".to_string()]).keys().filter_map(|k| k.parse().ok()).collect()
}

/// The device number a FUSE connection's filesystem shows: fuseblk's is its block device's, others' an
/// anonymous (0, id).
pub fn connection_dev(id: u32) -> (u32, u32) {
    (id >> 20, id & 0xF_FFFF)
}

/// Abort a connection: every waiting request fails, the daemon's reads fail, and whoever was blocked is
/// free. Never kills the daemon.
pub fn abort(id: u32) -> Result<(), String> {
    match run_child(&["abort".to_string(), id.to_string()]).get(&id.to_string()) {
        Some(0) => Ok(()),
        Some(_) => Err(format!("cannot write {CONNECTIONS}/{id}/abort")),
        None => Err("cannot reach fusectl (is the fuse module loaded?)".into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn connection_ids() {
        assert_eq!(super::connection_id(0, 52), 52);
        assert_eq!(super::connection_id(7, 3), (7 << 20) | 3);
        assert_eq!(super::connection_dev(super::connection_id(8, 17)), (8, 17));
        assert_eq!(super::connection_dev(52), (0, 52));
    }
}
