//! Typed frames between supervisor and worker: a 4-byte little-endian length, then one JSON value. A bad
//! frame is an error value, never a panic.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::boot::BootMode;
use crate::stick::safety::Inventory;
use crate::sys::argfile::FileId;

/// Largest frame accepted (an inventory of a huge ISO stays far below this).
pub const MAX_FRAME: u32 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame pipe: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(u32),
    #[error("malformed frame: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("the other side closed the pipe in the middle of a frame")]
    Truncated,
}

pub fn write_frame<T: Serialize>(w: &mut impl Write, value: &T) -> Result<(), FrameError> {
    let body = serde_json::to_vec(value)?;
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge(u32::MAX))?;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Read one frame; `Ok(None)` on a clean end of stream between frames.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> Result<Option<T>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof { FrameError::Truncated } else { FrameError::Io(e) }
    })?;
    Ok(Some(serde_json::from_slice(&body)?))
}

/// The worker's end of the frame pipes: what the write job talks through.
pub trait Channel {
    fn send(&mut self, msg: &Up) -> Result<(), FrameError>;
    fn recv(&mut self) -> Result<Option<Down>, FrameError>;
}

/// How to reach a filesystem (DESIGN.md, "Filesystem access").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Driver {
    Auto,
    Kernel,
    Userspace,
}

/// The partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// MBR: boots under BIOS and UEFI
    Mbr,
    /// GPT with a protective MBR: UEFI only
    Gpt,
}

/// Everything the worker needs to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteRequest {
    #[serde(with = "path_bytes")]
    pub iso: PathBuf,
    /// Which file the supervisor checked as the ISO: the worker opens `iso` again and must find this one.
    pub iso_id: FileId,
    /// The whole disk or the image file.
    #[serde(with = "path_bytes")]
    pub target: PathBuf,
    pub target_is_image: bool,
    /// Size of the target disk in bytes (for a new image: the --size).
    pub target_size: u64,
    /// The target's logical sector size, which the partition table and filesystem count in: the disk's (512 or
    /// 4096), 512 for an image file.
    pub sector_size: u64,
    /// Label given with --label (already validated), or None to derive it from the ISO.
    pub label: Option<String>,
    pub boot: BootMode,
    /// Whether --boot was given (a default drops BIOS boot for an ISO without /bootmgr).
    pub boot_asked: bool,
    /// --ca2023: boot.wim's CA 2023 boot managers replace the ISO's.
    pub ca2023: bool,
    pub table: Table,
    pub source_driver: Driver,
    pub target_driver: Driver,
    /// A directory the supervisor created for us; the worker mounts a private tmpfs on it.
    #[serde(with = "path_bytes")]
    pub work_dir: PathBuf,
    /// Windows 11 setup options: what autounattend.xml sets (nothing: no answer file).
    pub setup: crate::media::unattend::SetupOptions,
    /// The filesystem asked for (--fs).
    pub fs: crate::stick::choose::FsRequest,
    /// Where the unnamed scratch file for WIM work goes ($TMPDIR, else /var/tmp).
    #[serde(with = "path_bytes")]
    pub scratch_dir: PathBuf,
    /// A UEFI:NTFS image to use as the bridge partition instead of the one woesafe builds.
    #[serde(with = "path_bytes::option")]
    pub uefi_ntfs_image: Option<PathBuf>,
    /// Test-only: stop for this many milliseconds when entering the named step (see `Step::name`).
    pub pause_at: Option<(String, u64)>,
    /// Read the stick back after the write and compare it with the ISO (`write --verify`).
    pub verify: bool,
}

/// What the worker needs to verify a stick (`woesafe verify`): the ISO and the target, each the file the
/// supervisor checked (and holds locked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRequest {
    #[serde(with = "path_bytes")]
    pub iso: PathBuf,
    pub iso_id: FileId,
    #[serde(with = "path_bytes")]
    pub target: PathBuf,
    pub target_id: FileId,
    /// A directory the supervisor created for us; the worker mounts a private tmpfs on it.
    #[serde(with = "path_bytes")]
    pub work_dir: PathBuf,
    /// Test-only: wait this many milliseconds before reading the stick.
    pub pause_ms: Option<u64>,
}

/// The steps of a write, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    ReadIso,
    Prepare,
    Wipe,
    Partition,
    Format,
    Mount,
    Copy,
    BootBios,
    BootUefi,
    Flush,
    Unmount,
    /// `write --verify`: the written stick read back from the device and compared with the ISO.
    Verify,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::ReadIso => "read-iso",
            Step::Prepare => "prepare",
            Step::Wipe => "wipe",
            Step::Partition => "partition",
            Step::Format => "format",
            Step::Mount => "mount",
            Step::Copy => "copy",
            Step::BootBios => "boot-bios",
            Step::BootUefi => "boot-uefi",
            Step::Flush => "flush",
            Step::Unmount => "unmount",
            Step::Verify => "verify",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Step::ReadIso => "Reading the ISO",
            Step::Prepare => "Preparing files in scratch space (re-packing the WIM, extracting the UEFI loader)",
            Step::Wipe => "Wiping old signatures",
            Step::Partition => "Writing the partition table",
            Step::Format => "Formatting the filesystem",
            Step::Mount => "Opening the filesystems",
            Step::Copy => "Copying files",
            Step::BootBios => "Installing BIOS boot code (GRUB ntldr)",
            Step::BootUefi => "Checking the UEFI loader",
            Step::Flush => "Flushing to the device",
            Step::Unmount => "Closing the filesystems",
            Step::Verify => "Verifying: reading the stick back from the device and comparing it with the ISO",
        }
    }
}

/// What state the target is in when a write stops early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetState {
    Untouched,
    Wiped,
    Partitioned,
    Formatted,
    FilesIncomplete,
    BootIncomplete,
    NotFlushed,
    Complete,
}

impl TargetState {
    /// The state a write leaves when it is stopped abruptly during `step` (None: before any step).
    pub fn when_stopped_in(step: Option<Step>) -> TargetState {
        match step {
            None | Some(Step::ReadIso) | Some(Step::Prepare) => TargetState::Untouched,
            Some(Step::Wipe) | Some(Step::Partition) => TargetState::Wiped,
            Some(Step::Format) => TargetState::Partitioned,
            Some(Step::Mount) => TargetState::Formatted,
            Some(Step::Copy) => TargetState::FilesIncomplete,
            Some(Step::BootBios) | Some(Step::BootUefi) => TargetState::BootIncomplete,
            Some(Step::Flush) | Some(Step::Unmount) => TargetState::NotFlushed,
            Some(Step::Verify) => TargetState::Complete,
        }
    }

    /// The state's name in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            TargetState::Untouched => "untouched",
            TargetState::Wiped => "wiped",
            TargetState::Partitioned => "partitioned",
            TargetState::Formatted => "formatted",
            TargetState::FilesIncomplete => "files-incomplete",
            TargetState::BootIncomplete => "boot-incomplete",
            TargetState::NotFlushed => "not-flushed",
            TargetState::Complete => "complete",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            TargetState::Untouched => "the target was not changed",
            TargetState::Wiped => {
                "old signatures were wiped; the target holds no partition table: run woesafe write again"
            }
            TargetState::Partitioned => "partition table written, no filesystem yet: run woesafe write again",
            TargetState::Formatted => "partition table and empty filesystem written, no files: run woesafe write again",
            TargetState::FilesIncomplete => {
                "partition table and filesystem written, files incomplete: run woesafe write again"
            }
            TargetState::BootIncomplete => "all files written, boot code incomplete: run woesafe write again",
            TargetState::NotFlushed => {
                "files and boot code written but not all flushed to the device: run woesafe write again"
            }
            TargetState::Complete => "the write is complete",
        }
    }
}

/// The summary of a finished write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub serial: String,
    pub table: Table,
    pub partition_offset: u64,
    pub partition_size: u64,
    pub dirs: u64,
    pub files: u64,
    pub bytes: u64,
    pub bios: bool,
    pub uefi: bool,
    pub source_driver: String,
    pub target_driver: String,
    /// The filesystem the stick got.
    pub fs: crate::stick::choose::Fs,
    /// The WIM split into parts, and how many parts.
    pub split: Option<(String, usize)>,
    /// The UEFI bridge partition (NTFS sticks): its offset and size.
    pub bridge: Option<(u64, u64)>,
    /// Windows 7: the UEFI loader was extracted from install.wim (image index).
    pub win7_loader_from_image: Option<u32>,
    /// The processor the stick's UEFI loader is for (None: no UEFI boot).
    #[serde(default)]
    pub uefi_arch: Option<crate::boot::uefi::Arch>,
    /// --ca2023: the boot managers came from boot.wim (image index).
    #[serde(default)]
    pub ca2023_from_image: Option<u32>,
    /// `write --verify`: what reading the stick back found.
    pub verified: Option<crate::verify::VerifyReport>,
}

/// Supervisor → worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Down {
    Start(Box<WriteRequest>),
    /// Go on and write: the checks passed and the supervisor holds the target locked. `target` is the file it
    /// holds (a new image file exists only from here on): the worker opens the target by path and must find it.
    Proceed {
        target: FileId,
    },
    Abort,
    /// Verify a stick instead of writing one (the first frame, like `Start`).
    Verify(Box<VerifyRequest>),
}

/// Worker → supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Up {
    Info(String),
    /// A remark for `-v` only.
    Detail(String),
    Warning(String),
    Inventory(Box<Inventory>),
    Step(Step),
    Progress {
        done: u64,
        total: u64,
    },
    Done(Box<Report>),
    Failed {
        step: Step,
        message: String,
        state: TargetState,
        refused: bool,
    },
    /// Stopped in an orderly way on request (a signal): everything flushed, unmounted and detached.
    Stopped {
        step: Step,
        state: TargetState,
    },
    /// The block devices the write goes through (kernel names), for the stall watchdog's I/O counters.
    Devices(Vec<String>),
    /// A FUSE daemon (ntfs-3g) now serves a filesystem in the worker's namespace, on this fusectl connection.
    /// `fusectl`: where the worker mounted fusectl inside its namespace (for aborting the connection).
    Fuse {
        connection: u32,
        fusectl: Option<PathBuf>,
    },
    Aborted,
    /// The verification finished: the report lists every mismatch (none: identical).
    Verified(Box<crate::verify::VerifyReport>),
    /// The verification could not be done; `refused`: the ISO is damaged or hostile (exit 3).
    VerifyFailed {
        message: String,
        refused: bool,
    },
}

/// Paths in frames: file names need not be UTF-8, which a JSON string must be. A path is sent as its string
/// when it is UTF-8, else as the array of its bytes; both are read back exactly.
mod path_bytes {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Text(String),
        Bytes(Vec<u8>),
    }

    impl From<Wire> for PathBuf {
        fn from(w: Wire) -> PathBuf {
            match w {
                Wire::Text(s) => PathBuf::from(s),
                Wire::Bytes(b) => PathBuf::from(OsString::from_vec(b)),
            }
        }
    }

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        match p.to_str() {
            Some(text) => s.serialize_str(text),
            None => s.serialize_bytes(p.as_os_str().as_bytes()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(Wire::deserialize(d)?.into())
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
            match p {
                Some(p) => super::serialize(p, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
            Ok(Option::<Wire>::deserialize(d)?.map(PathBuf::from))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopped_states() {
        assert_eq!(TargetState::when_stopped_in(None), TargetState::Untouched);
        assert_eq!(TargetState::when_stopped_in(Some(Step::Copy)), TargetState::FilesIncomplete);
        assert_eq!(TargetState::when_stopped_in(Some(Step::Flush)), TargetState::NotFlushed);
        assert!(TargetState::when_stopped_in(Some(Step::Format)).describe().contains("run woesafe write again"));
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Up::Progress { done: 5, total: 10 }).unwrap();
        write_frame(&mut buf, &Up::Step(Step::Copy)).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame::<Up>(&mut r).unwrap(), Some(Up::Progress { done: 5, total: 10 }));
        assert_eq!(read_frame::<Up>(&mut r).unwrap(), Some(Up::Step(Step::Copy)));
        assert!(read_frame::<Up>(&mut r).unwrap().is_none());
    }

    /// File names that are not UTF-8 reach the worker exactly (JSON strings cannot carry them).
    #[test]
    fn paths_cross_as_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let odd = |b: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(b));
        let request = WriteRequest {
            iso: odd(b"/isos/w\xff\x1b.iso"),
            iso_id: FileId { dev: 2049, ino: u64::MAX, rdev: 0 },
            target: "/var/tmp/out.img".into(),
            target_is_image: true,
            target_size: 1 << 30,
            sector_size: 512,
            label: None,
            boot: BootMode::Both,
            boot_asked: false,
            ca2023: true,
            table: Table::Mbr,
            source_driver: Driver::Auto,
            target_driver: Driver::Auto,
            work_dir: "/run/woesafe.1".into(),
            setup: crate::media::unattend::SetupOptions::default(),
            fs: crate::stick::choose::FsRequest::Auto,
            scratch_dir: odd(b"/var/tmp/\xfe"),
            uefi_ntfs_image: Some(odd(b"/u\xc3.img")),
            pause_at: None,
            verify: true,
        };
        for r in [request.clone(), WriteRequest { uefi_ntfs_image: None, ..request.clone() }] {
            let mut buf = Vec::new();
            write_frame(&mut buf, &Down::Start(Box::new(r.clone()))).unwrap();
            assert_eq!(read_frame::<Down>(&mut &buf[..]).unwrap(), Some(Down::Start(Box::new(r))));
        }
    }

    /// The identities the worker checks cross exactly (inode numbers use all 64 bits).
    #[test]
    fn identities_cross_exactly() {
        let proceed = Down::Proceed { target: FileId { dev: u64::MAX, ino: 1 << 63, rdev: (259 << 8) | 3 } };
        let mut buf = Vec::new();
        write_frame(&mut buf, &proceed).unwrap();
        assert_eq!(read_frame::<Down>(&mut &buf[..]).unwrap(), Some(proceed.clone()));
        let json = serde_json::to_string(&proceed).unwrap();
        assert_eq!(
            json,
            r#"{"Proceed":{"target":{"dev":18446744073709551615,"ino":9223372036854775808,"rdev":66307}}}"#
        );
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut r: &[u8] = &[1, 0];
        assert!(matches!(read_frame::<Up>(&mut r), Err(FrameError::Truncated)));
        let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        assert!(matches!(read_frame::<Up>(&mut r), Err(FrameError::TooLarge(_))));
        let mut bad = 3u32.to_le_bytes().to_vec();
        bad.extend_from_slice(b"{x}");
        assert!(matches!(read_frame::<Up>(&mut &bad[..]), Err(FrameError::Decode(_))));
        let mut short = 10u32.to_le_bytes().to_vec();
        short.extend_from_slice(b"{}");
        assert!(matches!(read_frame::<Up>(&mut &short[..]), Err(FrameError::Truncated)));
        let mut wrong = 2u32.to_le_bytes().to_vec();
        wrong.extend_from_slice(b"{}");
        assert!(matches!(read_frame::<Up>(&mut &wrong[..]), Err(FrameError::Decode(_))));
    }
}
