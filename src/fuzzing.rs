//! Fuzzing entry points for the parsers of untrusted input (ISO images, WIM files, worker frames): each takes
//! arbitrary bytes, runs the parser the way woesafe uses it with caps on what it reads, and checks properties
//! that must hold whatever the input. A parser error is a normal outcome; a panic (the parser's, or a broken
//! property's) is a bug. Shared by the stable harness (tests/fuzz.rs) and the cargo-fuzz targets (fuzz/).

use std::collections::HashSet;
use std::fs::File;
use std::io::{Cursor, Read, Write};
use std::os::fd::AsRawFd;

use crate::media::iso::IsoFs;
use crate::media::{wim, wimsplit};
use crate::protocol::{self, Down, Up};

/// Most bytes read from one file of a fuzzed ISO (or one part of a fuzzed WIM split).
pub const READ_CAP_PER_ITEM: u64 = 1 << 20;
/// Most bytes read from all files (or all parts) of one input.
pub const READ_CAP_TOTAL: u64 = 8 << 20;
/// Files up to this size are read a second time in odd-sized chunks and compared.
const REREAD_MAX: u64 = 64 << 10;
/// Part sizes the WIM split is planned with: one resource per part, a few resources per part, one part.
const PART_SIZES: [u64; 3] = [1, 6000, u64::MAX];
/// Frames decoded from one input, at most.
const MAX_FRAMES: usize = 64;

/// How far one input got, for the harness's statistics (and its check that mutants reach the deep code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The parser accepted the input (the ISO opened, the WIM inspected or its split planned, a frame decoded).
    pub accepted: bool,
    /// Entries listed, parts planned or frames decoded.
    pub items: u64,
    /// File or part bytes read through the readers.
    pub bytes: u64,
}

/// Open `data` as an ISO image (through a memory file), list it, check the listing, and read every file
/// through the streaming reader (up to the caps), comparing it with the file's window in the image.
pub fn iso(data: &[u8]) -> Outcome {
    let image = memory_file(data);
    let path = std::path::PathBuf::from(format!("/proc/self/fd/{}", image.as_raw_fd()));
    let fs = match IsoFs::open(&path) {
        Ok(fs) => fs,
        Err(e) => {
            let _ = e.to_string();
            return Outcome::default();
        }
    };
    let _ = (fs.format(), fs.volume_id().len(), format!("{fs:?}"));
    let entries = fs.entries();
    check_listing(entries);
    let mut out = Outcome { accepted: true, items: entries.len() as u64, bytes: 0 };
    for (index, entry) in entries.iter().enumerate() {
        if entry.is_dir {
            assert!(fs.open_file(index).is_err(), "directory {:?} opened as a file", entry.path);
            assert!(fs.file_window(index).is_none(), "directory {:?} has a file window", entry.path);
            continue;
        }
        if out.bytes >= READ_CAP_TOTAL {
            break;
        }
        let cap = READ_CAP_PER_ITEM.min(READ_CAP_TOTAL - out.bytes);
        let window = fs.file_window(index).map(|(_, _, offset, len)| (offset, len));
        if let Some((offset, len)) = window {
            assert_eq!(len, entry.size, "file window of {:?} is not the file's size", entry.path);
            assert!(
                offset.checked_add(len).is_some_and(|end| end <= data.len() as u64),
                "file window of {:?} ({offset}+{len}) lies past the image ({} bytes)",
                entry.path,
                data.len()
            );
        }
        let Ok(mut reader) = fs.open_file(index) else { continue };
        let first = read_capped(&mut reader, entry.size, cap, 64 << 10);
        let read = match &first {
            Ok(bytes) => bytes.len() as u64,
            Err(_) => 0,
        };
        out.bytes += read;
        match (window, first) {
            (Some((offset, _)), Ok(bytes)) => {
                let start = offset as usize;
                assert!(
                    data[start..start + bytes.len()] == bytes[..],
                    "{:?}: the reader's bytes differ from the file's window in the image",
                    entry.path
                );
            }
            (Some(_), Err(e)) => panic!("{:?} has a file window in the image but reading it failed: {e}", entry.path),
            (None, Ok(bytes)) if entry.size <= REREAD_MAX => {
                let mut again = fs.open_file(index).expect("a file that opened once opens again");
                let second = read_capped(&mut again, entry.size, cap, 777)
                    .unwrap_or_else(|e| panic!("{:?} read once, then failed in other chunks: {e}", entry.path));
                assert!(second == bytes, "{:?} reads differently in other chunk sizes", entry.path);
            }
            (None, _) => {}
        }
    }
    out
}

/// Properties of an ISO listing whatever the image: safe relative paths, each once, parents first.
fn check_listing(entries: &[crate::media::SourceEntry]) {
    let mut dirs: HashSet<&str> = HashSet::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for e in entries {
        let p = e.path.as_str();
        assert!(p.len() as u64 <= crate::media::iso::LIMITS.path_len, "path of {} bytes listed", p.len());
        assert!(
            p.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0')),
            "unsafe path {p:?} listed"
        );
        assert!(seen.insert(p), "path {p:?} listed twice");
        if let Some((parent, _)) = p.rsplit_once('/') {
            assert!(dirs.contains(parent), "{p:?} listed before (or without) its directory");
        }
        if e.is_dir {
            assert_eq!(e.size, 0, "directory {p:?} has a size");
            dirs.insert(p);
        }
    }
}

/// Read `reader` to its end in `chunk`-byte reads, but at most `cap` bytes: the reader must give exactly the
/// file's `size` bytes (as many as the cap allows) or an error, never a short file without one.
fn read_capped(reader: &mut impl Read, size: u64, cap: u64, chunk: usize) -> std::io::Result<Vec<u8>> {
    let want = size.min(cap);
    let mut got = Vec::new();
    let mut buf = vec![0u8; chunk];
    while (got.len() as u64) < want {
        let room = (want - got.len() as u64).min(chunk as u64) as usize;
        let n = reader.read(&mut buf[..room])?;
        assert!(n <= room, "a read of {room} bytes returned {n}");
        if n == 0 {
            panic!("the reader ended after {} bytes of a {size}-byte file, without an error", got.len());
        }
        got.extend_from_slice(&buf[..n]);
    }
    if size <= cap {
        // Past the end: nothing more.
        assert_eq!(reader.read(&mut buf[..1]).ok(), Some(0), "the reader gave more than the file's {size} bytes");
    }
    Ok(got)
}

/// Inspect `data` as a WIM, plan its split at a few part sizes, and read every part (up to the caps): a part
/// reads as exactly its planned size, with a header that names it.
pub fn wim(data: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    match wim::inspect(&mut Cursor::new(data)) {
        Ok(info) => {
            out.accepted = true;
            let _ = wim::repack_bytes(&info, data.len() as u64);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let guid = *b"woesafe-fuzz-gid";
    for part_bytes in PART_SIZES {
        let plan = match wimsplit::plan(&mut Cursor::new(data), part_bytes, guid) {
            Ok(plan) => plan,
            Err(e) => {
                let _ = e.to_string();
                continue;
            }
        };
        out.accepted = true;
        let total = plan.parts.len();
        assert!(total >= 1 && total <= usize::from(u16::MAX), "a split into {total} parts");
        out.items += total as u64;
        for (i, part) in plan.parts.iter().enumerate() {
            assert_eq!(usize::from(part.number), i + 1, "parts out of order");
            if out.bytes >= READ_CAP_TOTAL {
                break;
            }
            let cap = READ_CAP_PER_ITEM.min(READ_CAP_TOTAL - out.bytes);
            let Ok(bytes) = read_capped(&mut part.reader(Cursor::new(data)), part.size, cap, 64 << 10) else {
                continue;
            };
            out.bytes += bytes.len() as u64;
            if bytes.len() >= 44 {
                assert_eq!(&bytes[0..8], b"MSWIM\0\0\0", "part {} has no WIM signature", part.number);
                assert_eq!(bytes[24..40], guid, "part {} lacks the split set's GUID", part.number);
                let number = u16::from_le_bytes([bytes[40], bytes[41]]);
                let count = u16::from_le_bytes([bytes[42], bytes[43]]);
                assert_eq!((number, usize::from(count)), (part.number, total), "part header's numbering");
            }
            if bytes.len() as u64 == part.size {
                // A whole part is a WIM of its own, which the inspection reads as this part of the set.
                let info = wim::inspect(&mut Cursor::new(&bytes))
                    .unwrap_or_else(|e| panic!("part {} of a split does not inspect: {e}", part.number));
                assert_eq!((info.part_number, usize::from(info.total_parts)), (part.number, total));
            }
        }
    }
    out
}

/// Decode `data` as a stream of frames in both directions (supervisor → worker and back): every frame that
/// decodes encodes again and decodes to the same value.
pub fn frame(data: &[u8]) -> Outcome {
    let mut out = Outcome::default();
    out.items += frames::<Down>(data);
    out.items += frames::<Up>(data);
    out.accepted = out.items > 0;
    out.bytes = data.len() as u64;
    out
}

fn frames<T>(data: &[u8]) -> u64
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let mut r = data;
    let mut decoded = 0;
    for _ in 0..MAX_FRAMES {
        match protocol::read_frame::<T>(&mut r) {
            Ok(Some(value)) => {
                decoded += 1;
                let mut encoded = Vec::new();
                match protocol::write_frame(&mut encoded, &value) {
                    Ok(()) => {
                        let back = protocol::read_frame::<T>(&mut &encoded[..])
                            .unwrap_or_else(|e| panic!("a frame we wrote does not decode: {e}; {value:?}"));
                        assert_eq!(back.as_ref(), Some(&value), "a frame changed in a round trip");
                    }
                    Err(protocol::FrameError::TooLarge(_)) => {}
                    Err(e) => panic!("a decoded frame does not encode: {e}; {value:?}"),
                }
            }
            Ok(None) => break,
            Err(e) => {
                let _ = e.to_string();
                break;
            }
        }
    }
    decoded
}

/// An anonymous memory file holding `data` (the ISO reader opens images by path: /proc/self/fd/N).
fn memory_file(data: &[u8]) -> File {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let fd = memfd_create(c"woesafe-fuzz", MFdFlags::MFD_CLOEXEC).expect("memfd_create");
    let mut file = File::from(fd);
    file.write_all(data).expect("writing the input to a memory file");
    file
}

/// UDF descriptor tags: the CRC-ITU-T (polynomial 0x1021, initial 0) that a tag keeps of the bytes after it.
pub fn udf_crc(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// A UDF tag's checksum: the sum of its 16 bytes but the checksum's own (byte 4).
pub fn udf_tag_checksum(tag: &[u8]) -> u8 {
    tag[..16].iter().enumerate().filter(|(i, _)| *i != 4).fold(0u8, |s, (_, b)| s.wrapping_add(*b))
}

/// Recompute the CRC (when the bytes it covers are all there) and the checksum of the tag at `at`.
pub fn fix_udf_tag(data: &mut [u8], at: usize) {
    if at.checked_add(16).is_none_or(|end| end > data.len()) {
        return;
    }
    let crc_len = usize::from(u16::from_le_bytes([data[at + 10], data[at + 11]]));
    if at + 16 + crc_len <= data.len() {
        let crc = udf_crc(&data[at + 16..at + 16 + crc_len]);
        data[at + 8..at + 10].copy_from_slice(&crc.to_le_bytes());
    }
    data[at + 4] = udf_tag_checksum(&data[at..at + 16]);
}

/// Make valid again every UDF tag the mutation of an image may have broken: whatever looks like one (4-byte
/// aligned, a known identifier, descriptor version 2 or 3, the reserved byte 0) gets its CRC and checksum
/// recomputed, so that a mutant gets past the reader's CRC check to the fields behind it. Returns the tags.
pub fn repair_udf_tags(data: &mut [u8]) -> usize {
    let mut fixed = 0;
    for at in (0..data.len().saturating_sub(15)).step_by(4) {
        let id = u16::from_le_bytes([data[at], data[at + 1]]);
        let version = u16::from_le_bytes([data[at + 2], data[at + 3]]);
        if matches!(id, 1..=9 | 256..=266) && matches!(version, 2 | 3) && data[at + 5] == 0 {
            fix_udf_tag(data, at);
            fixed += 1;
        }
    }
    fixed
}
