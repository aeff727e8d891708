//! The names older tools (and woesafe itself) give their mount points and temporary directories, and the
//! recogniser that maps a path to the tool and role that created it. Pure: no file system access.

use serde::Serialize;

/// Which tool left something behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Tool {
    /// WoeUSB (bash) v3.x/v4.x, or WoeUSB-ng, which uses the same mount point names.
    WoeUsbLegacy,
    /// WoeUSB before its rename (winusb_*).
    WinUsb,
    /// WoeUSB (bash) v5.x.
    WoeUsb5,
    /// WoeUSB-ng (told apart by its temporary directory).
    WoeUsbNg,
    Woesafe,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::WoeUsbLegacy => "WoeUSB 3.x/4.x or WoeUSB-ng",
            Tool::WinUsb => "WinUSB (WoeUSB before its rename)",
            Tool::WoeUsb5 => "WoeUSB 5.x",
            Tool::WoeUsbNg => "WoeUSB-ng",
            Tool::Woesafe => "woesafe",
        }
    }
}

/// What the path was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Role {
    SourceMount,
    TargetMount,
    TempDir,
    /// woesafe's work directory (its worker's private tmpfs was mounted on it).
    WorkDir,
}

/// A recognised name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Match {
    pub tool: Tool,
    pub role: Role,
    /// The pid in the name, when the tool puts one there (to pair source and target of one run).
    pub pid: Option<u32>,
}

fn all(s: &str, f: impl Fn(char) -> bool) -> bool {
    !s.is_empty() && s.chars().all(f)
}

fn digits(s: &str) -> bool {
    all(s, |c| c.is_ascii_digit())
}

/// mktemp's X's: letters and digits.
fn random(s: &str, len: usize) -> bool {
    s.len() == len && all(s, |c| c.is_ascii_alphanumeric())
}

/// The random part of Python's `tempfile.mkdtemp` (WoeUSB-ng): 8 characters of `[a-z0-9_]`. The underscore
/// counts: about one name in five has one (`WoeUSB._h8h1j42`, `WoeUSB.jl5z_ukj`, seen after real crashes).
fn mkdtemp_random(s: &str) -> bool {
    s.len() == 8 && all(s, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `<epoch>_<pid>` as WoeUSB 3.x/4.x writes it.
fn epoch_pid(rest: &str) -> Option<u32> {
    let (epoch, pid) = rest.split_once('_')?;
    (digits(epoch) && digits(pid)).then(|| pid.parse().ok()).flatten()
}

/// `YYYYMMDD-HHMMSS-<Weekday>.XXXXXX` as WoeUSB 5.x writes it.
fn dated(rest: &str) -> bool {
    let mut parts = rest.splitn(3, '-');
    let (Some(date), Some(time), Some(tail)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Some((day, x)) = tail.split_once('.') else {
        return false;
    };
    const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    date.len() == 8 && digits(date) && time.len() == 6 && digits(time) && DAYS.contains(&day) && random(x, 6)
}

/// Where the tools create their temporary directories and mount points (besides /media for the legacy names):
/// /tmp, /var/tmp, /run, and $TMPDIR.
pub fn temp_parents() -> Vec<String> {
    let mut v: Vec<String> = ["/tmp", "/var/tmp", "/run"].iter().map(|s| s.to_string()).collect();
    if let Ok(t) = std::env::var("TMPDIR") {
        let t = t.trim_end_matches('/').to_string();
        if t.starts_with('/') && t.len() > 1 && !v.contains(&t) {
            v.push(t);
        }
    }
    v
}

/// Recognise `path` by its last component and where it lies: WoeUSB 3.x/4.x names directly in /media, the
/// others directly in a temporary directory (`temp_parents`). The same names elsewhere are not ours.
pub fn classify(path: &str) -> Option<Match> {
    classify_in(path, &temp_parents())
}

/// `classify` with the temporary directories given (pure, for tests).
pub fn classify_in(path: &str, temp_parents: &[String]) -> Option<Match> {
    let path = path.trim_end_matches('/');
    let (parent, name) = path.rsplit_once('/')?;
    let m = |tool, role, pid| Some(Match { tool, role, pid });
    if parent == "/media" {
        for (prefix, tool, role) in [
            ("woeusb_source_", Tool::WoeUsbLegacy, Role::SourceMount),
            ("woeusb_target_", Tool::WoeUsbLegacy, Role::TargetMount),
            ("winusb_source_", Tool::WinUsb, Role::SourceMount),
            ("winusb_target_", Tool::WinUsb, Role::TargetMount),
        ] {
            if let Some(rest) = name.strip_prefix(prefix)
                && let Some(pid) = epoch_pid(rest)
            {
                return m(tool, role, Some(pid));
            }
        }
    }
    if !temp_parents.iter().any(|t| t == parent) {
        return None;
    }
    if let Some(rest) = name.strip_prefix("woeusb-source-")
        && dated(rest)
    {
        return m(Tool::WoeUsb5, Role::SourceMount, None);
    }
    if let Some(rest) = name.strip_prefix("woeusb-target-")
        && dated(rest)
    {
        return m(Tool::WoeUsb5, Role::TargetMount, None);
    }
    if let Some(x) = name.strip_prefix("WoeUSB.tempdir.")
        && random(x, 6)
    {
        return m(Tool::WoeUsb5, Role::TempDir, None);
    }
    if let Some(x) = name.strip_prefix("WoeUSB.").and_then(|r| r.strip_suffix(".tempdir"))
        && random(x, 6)
    {
        return m(Tool::WoeUsbLegacy, Role::TempDir, None);
    }
    if let Some(x) = name.strip_prefix("WoeUSB.")
        && mkdtemp_random(x)
    {
        return m(Tool::WoeUsbNg, Role::TempDir, None);
    }
    if let Some(rest) = name.strip_prefix("woesafe.") {
        let pid = rest.split('.').next().filter(|p| digits(p)).and_then(|p| p.parse().ok());
        let tail_ok = rest.split('.').skip(1).all(digits) && rest.split('.').count() <= 2;
        if pid.is_some() && tail_ok {
            return m(Tool::Woesafe, Role::WorkDir, pid);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn woeusb_names() {
        let s = classify("/media/woeusb_source_1690000000_4242").unwrap();
        assert_eq!((s.tool, s.role, s.pid), (Tool::WoeUsbLegacy, Role::SourceMount, Some(4242)));
        let t = classify("/media/woeusb_target_1690000001_4242/").unwrap();
        assert_eq!((t.role, t.pid), (Role::TargetMount, Some(4242)));
        assert_eq!(classify("/media/winusb_target_1400000000_77").unwrap().tool, Tool::WinUsb);
        let v5 = classify("/tmp/woeusb-source-20240101-120000-Monday.aB3xYz").unwrap();
        assert_eq!((v5.tool, v5.role), (Tool::WoeUsb5, Role::SourceMount));
        assert_eq!(classify("/var/tmp/woeusb-target-20231231-235959-Sunday.Q1w2E3").unwrap().role, Role::TargetMount);
        let custom = vec!["/scratch/t".to_string()];
        assert!(classify_in("/scratch/t/WoeUSB.tempdir.abc123", &custom).is_some());
        assert!(classify_in("/tmp/WoeUSB.tempdir.abc123", &custom).is_none());
        assert_eq!(
            classify("/tmp/WoeUSB.tempdir.abc123").unwrap(),
            Match { tool: Tool::WoeUsb5, role: Role::TempDir, pid: None }
        );
        assert_eq!(classify("/tmp/WoeUSB.abc123.tempdir").unwrap().tool, Tool::WoeUsbLegacy);
        assert_eq!(classify("/tmp/WoeUSB.abcd1234").unwrap().tool, Tool::WoeUsbNg);
        // Python's mkdtemp draws from [a-z0-9_]: names with an underscore, anywhere, are WoeUSB-ng's too.
        for name in ["/tmp/WoeUSB._h8h1j42", "/tmp/WoeUSB.jl5z_ukj", "/tmp/WoeUSB.abcdefg_"] {
            assert_eq!(
                classify(name).unwrap(),
                Match { tool: Tool::WoeUsbNg, role: Role::TempDir, pid: None },
                "{name}"
            );
        }
        let w = classify("/run/woesafe.1234").unwrap();
        assert_eq!((w.tool, w.role, w.pid), (Tool::Woesafe, Role::WorkDir, Some(1234)));
        assert_eq!(classify("/tmp/woesafe.99.3").unwrap().pid, Some(99));
    }

    #[test]
    fn near_misses_are_not_ours() {
        for p in [
            "/media/woeusb_source_",
            "/media/woeusb_source_x_1",
            "/mnt/woeusb_source_1690000000_4242", // legacy names live in /media only
            "/media/user/woeusb_target_1_2",
            "/tmp/woeusb-source-20240101-120000-Funday.aB3xYz",
            "/tmp/woeusb-source-2024011-120000-Monday.aB3xYz",
            "/tmp/WoeUSB.tempdir.abc12",
            "/tmp/WoeUSB.abc1234",
            "/tmp/WoeUSB.Backup_1", // mkdtemp never draws capitals
            "/tmp/WoeUSB.abc-1234",
            "/tmp/WoeUSB.abc12345_",
            "/tmp/woesafe.",
            "/tmp/woesafe.12a",
            "/tmp/woesafe.1.2.3",
            "/media/user/WINDOWS",
            "/srv/woesafe.2024",
            "/home/u/WoeUSB.upstream",
            "/home/u/woeusb-target-20240101-120000-Monday.aB3xYz",
            "/",
            "",
        ] {
            assert_eq!(classify(p), None, "{p}");
        }
    }
}
