//! /proc/PID/mountinfo parsed into plain structs (escapes such as `\040` decoded). Paths stay bytes: a mount
//! point whose name is not UTF-8 is kept exactly, so that it can still be unmounted.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    pub major: u32,
    pub minor: u32,
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fstype: String,
    /// What is mounted ("/dev/sdb1", "tmpfs"), as the kernel shows it (lossily decoded: for messages only).
    pub source: String,
}

/// Decode the octal escapes the kernel uses in mountinfo (`\040` space, `\011` tab, `\012` newline,
/// `\134` backslash); every other byte is kept as it is.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let bytes = field;
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') as u32 * 64 + (bytes[i + 2] - b'0') as u32 * 8 + (bytes[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Parse mountinfo (the bytes the kernel gives: paths need not be UTF-8); malformed lines are skipped.
pub fn parse(text: impl AsRef<[u8]>) -> Vec<MountEntry> {
    text.as_ref().split(|&b| b == b'\n').filter_map(parse_line).collect()
}

fn number<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn parse_line(line: &[u8]) -> Option<MountEntry> {
    // The optional fields end at the first " - " (the kernel escapes spaces inside the fields).
    let sep = line.windows(3).position(|w| w == b" - ")?;
    let (left, right) = (&line[..sep], &line[sep + 3..]);
    let mut l = left.split(|&b| b == b' ');
    let id = number(l.next()?)?;
    let parent = number(l.next()?)?;
    let devnum = l.next()?;
    let colon = devnum.iter().position(|&b| b == b':')?;
    let root = PathBuf::from(OsString::from_vec(unescape(l.next()?)));
    let mount_point = PathBuf::from(OsString::from_vec(unescape(l.next()?)));
    let mut r = right.split(|&b| b == b' ');
    let fstype = String::from_utf8_lossy(r.next()?).into_owned();
    let source = String::from_utf8_lossy(&unescape(r.next()?)).into_owned();
    Some(MountEntry {
        id,
        parent,
        major: number(&devnum[..colon])?,
        minor: number(&devnum[colon + 1..])?,
        root,
        mount_point,
        fstype,
        source,
    })
}

/// The mount table of the calling process's mount namespace.
pub fn read_self() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse(std::fs::read("/proc/self/mountinfo")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
45 22 8:17 / /media/woeusb_target_1690000000_1234 rw,nosuid - vfat /dev/sdb1 rw,fmask=0022
46 22 0:40 / /tmp/my\\040dir rw - tmpfs tmpfs rw
bad line without separator
";

    #[test]
    fn parses_fields_and_escapes() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, Path::new("/"));
        assert_eq!((m[1].major, m[1].minor), (8, 17));
        assert_eq!(m[1].fstype, "vfat");
        assert_eq!(m[1].source, "/dev/sdb1");
        assert_eq!(m[2].mount_point, Path::new("/tmp/my dir"));
    }

    #[test]
    fn unescape_handles_backslash_and_short_tails() {
        assert_eq!(unescape(b"a\\134b"), b"a\\b");
        assert_eq!(unescape(b"tail\\04"), b"tail\\04");
        assert_eq!(unescape(b"x\\011y"), b"x\ty");
    }

    /// Names that are not UTF-8 come through byte for byte (the kernel writes them raw), with the escapes
    /// decoded around them; one such line no longer hides the whole table.
    #[test]
    fn paths_are_kept_as_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let text: &[u8] = b"22 1 254:0 / / rw - ext4 /dev/vda rw\n\
            47 22 0:41 /sub\\040dir /media/a\xff\xfeb\\040c\\011d\\012e\\134f rw shared:5 - tmpfs my\\040src rw\n\
            48 22 0:42 / /media/caf\xc3\xa9 rw - tmpfs tmpfs rw\n";
        let m = parse(text);
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m[1].mount_point.as_os_str().as_bytes(), b"/media/a\xff\xfeb c\td\ne\\f");
        assert_eq!(m[1].root.as_os_str().as_bytes(), b"/sub dir");
        assert_eq!(m[1].source, "my src");
        assert_eq!((m[1].id, m[1].parent, m[1].major, m[1].minor), (47, 22, 0, 41));
        assert_eq!(m[2].mount_point, Path::new("/media/café"));
    }
}
