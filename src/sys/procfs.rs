//! /proc and /sys readers for the stall watchdog: the processes of a PID namespace with their state and wait
//! channel, and the I/O counters of block devices.

/// One process as the watchdog reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub comm: String,
    /// R, S, D, T, Z, ...
    pub state: char,
    /// The kernel function it sleeps in ("0" or empty when running).
    pub wchan: String,
    /// Its pid inside its own (innermost) PID namespace, from NSpid in /proc/PID/status.
    pub ns_pid: Option<i32>,
}

impl ProcInfo {
    pub fn describe_state(&self) -> &'static str {
        match self.state {
            'D' => "uninterruptible sleep (D)",
            'S' => "sleeping (S)",
            'T' | 't' => "stopped (T)",
            'R' => "running (R)",
            'Z' => "zombie (Z)",
            _ => "other",
        }
    }
}

/// (comm, state) from the text of /proc/PID/stat; the comm may hold spaces and parentheses.
pub fn parse_stat(text: &str) -> Option<(String, char)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let state = text.get(close + 1..)?.trim_start().chars().next()?;
    Some((comm, state))
}

pub fn read_proc(pid: i32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (comm, state) = parse_stat(&stat)?;
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    Some(ProcInfo { pid, comm, state, wchan: wchan.trim().to_string(), ns_pid: parse_nspid(&status) })
}

/// The innermost pid from the NSpid line of /proc/PID/status ("NSpid:\t26823\t1" → 1).
pub fn parse_nspid(status: &str) -> Option<i32> {
    status.lines().find_map(|l| l.strip_prefix("NSpid:"))?.split_whitespace().last()?.parse().ok()
}

/// The PID namespace of a process, as the link text of /proc/PID/ns/pid ("pid:[4026532...]").
pub fn pid_namespace(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok().map(|p| p.to_string_lossy().into_owned())
}

/// Every process of the PID namespace `ns`, lowest pid first.
pub fn processes_in_namespace(ns: &str) -> Vec<ProcInfo> {
    let mut out: Vec<ProcInfo> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&pid| pid_namespace(pid).as_deref() == Some(ns))
                .filter_map(read_proc)
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|p| p.pid);
    out
}

/// Sectors read + written and I/Os in flight, from the text of /sys/class/block/NAME/stat.
pub fn parse_block_stat(text: &str) -> Option<(u64, u64)> {
    let f: Vec<u64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    if f.len() < 9 {
        return None;
    }
    Some((f[2] + f[6], f[8]))
}

/// (sectors moved, I/Os in flight) of a block device by kernel name.
pub fn block_io(name: &str) -> Option<(u64, u64)> {
    parse_block_stat(&std::fs::read_to_string(format!("/sys/class/block/{name}/stat")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let t = "1234 (my (odd) prog) D 1 1234 1234 0 -1 4194560 120 0 0 0";
        assert_eq!(parse_stat(t), Some(("my (odd) prog".into(), 'D')));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn nspid() {
        assert_eq!(parse_nspid("Name:\tx\nNSpid:\t26823\t1\nNSpgid:\t5\n"), Some(1));
        assert_eq!(parse_nspid("NSpid:\t42\n"), Some(42));
        assert_eq!(parse_nspid("Name:\tx\n"), None);
    }

    #[test]
    fn block_stat() {
        let t = "     200        0     4096      100     300       10     8192      500        2      600      700";
        assert_eq!(parse_block_stat(t), Some((4096 + 8192, 2)));
        assert_eq!(parse_block_stat("1 2 3"), None);
    }

    #[test]
    fn own_process_is_found_in_its_namespace() {
        let me = std::process::id() as i32;
        let ns = pid_namespace(me).expect("own pid namespace");
        let procs = processes_in_namespace(&ns);
        let p = procs.iter().find(|p| p.pid == me).expect("self listed");
        assert!(matches!(p.state, 'R' | 'S'), "{p:?}");
    }
}
