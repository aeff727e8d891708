//! Fuzzing entry points for the parsers of untrusted input (ISO images, WIM files, worker frames, UEFI loaders
//! and efivars' signature databases and SbatLevel): each takes arbitrary bytes, runs the parser the way woesafe
//! uses it with caps on what it reads, and checks properties that must hold whatever the input. A parser error
//! is a normal outcome; a panic (the parser's, or a broken property's) is a bug. Shared by the stable harness
//! (tests/fuzz.rs) and the cargo-fuzz targets (fuzz/).

use std::collections::HashSet;
use std::fs::File;
use std::io::{Cursor, Read, Write};
use std::os::fd::AsRawFd;

use sha2::{Digest as _, Sha256};

use crate::boot::revocation::{self, Finding, Firmware, LoaderFacts, RevocationError, SbatEntry, SignatureDb};
use crate::boot::uefi::{self, Arch};
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

/// Separates the parts of a `loader` input that is a bundle: a loader, then a dbx, a db and an SbatLevel (each
/// part optional but the loader), checked against each other.
pub const LOADER_PART_MARK: &[u8] = b"\n--woesafe-fuzz-part--\n";
/// EFI_SIGNATURE_LIST types as stored (EFI_GUID: the first three fields little-endian). Written out here rather
/// than taken from the revocation module, so that a wrong constant there shows as a broken property.
/// EFI_CERT_SHA256_GUID c1c41626-504c-4092-aca9-41f936934328.
pub const EFI_CERT_SHA256: [u8; 16] =
    [0x26, 0x16, 0xc4, 0xc1, 0x4c, 0x50, 0x92, 0x40, 0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28];
/// EFI_CERT_X509_GUID a5c059a1-94e4-4aa7-87b5-ab155c2bf072.
pub const EFI_CERT_X509: [u8; 16] =
    [0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72];
/// EFI_CERT_X509_SHA256_GUID 3bd2a492-96c0-4079-b420-fcf98ef103ed: a TBSCertificate's hash and a time.
pub const EFI_CERT_X509_SHA256: [u8; 16] =
    [0x92, 0xa4, 0xd2, 0x3b, 0xc0, 0x96, 0x79, 0x40, 0xb4, 0x20, 0xfc, 0xf9, 0x8e, 0xf1, 0x03, 0xed];
/// EFI_CERT_SHA1_GUID 826ca512-cf10-4ac9-b187-be01496631bd: a type the check skips.
pub const EFI_CERT_SHA1: [u8; 16] =
    [0x12, 0xa5, 0x6c, 0x82, 0x10, 0xcf, 0xc9, 0x4a, 0xb1, 0x87, 0xbe, 0x01, 0x49, 0x66, 0x31, 0xbd];
/// How the fuzzed loader is named in findings.
const LOADER_NAME: &str = uefi::UEFI_LOADER;

/// One EFI_SIGNATURE_LIST of `kind` holding `entries` (each after a 16-byte owner GUID; all as long as the
/// first), as a db or dbx holds it.
pub fn signature_list(kind: [u8; 16], entries: &[&[u8]]) -> Vec<u8> {
    let size = 16 + entries.first().map_or(32, |e| e.len());
    assert!(entries.iter().all(|e| 16 + e.len() == size), "a signature list's entries are all of one size");
    let mut list = kind.to_vec();
    list.extend(((28 + size * entries.len()) as u32).to_le_bytes());
    list.extend(0u32.to_le_bytes());
    list.extend((size as u32).to_le_bytes());
    for e in entries {
        list.extend(b"woesafe fuzzing!");
        list.extend(*e);
    }
    list
}

/// The revocation check's parsers on `data`: as a UEFI loader (`uefi::check_efi` for both processors and
/// `revocation::examine`), as a dbx and a db (`parse_signature_lists`) and as SBAT text (`parse_sbat`); each
/// answer's properties checked, and the examined loader `check`ed against databases made from its own hash,
/// certificates and SBAT (which must find them), against the input's own lists, and — when the input is a
/// bundle ([`LOADER_PART_MARK`]) — against the bundle's dbx, db and SbatLevel.
pub fn loader(data: &[u8]) -> Outcome {
    let mut out = Outcome { bytes: data.len() as u64, ..Outcome::default() };
    let facts = examine_checked(data, &mut out);
    let lists = signature_lists_checked(data, &mut out);
    let sbat = sbat_checked(data, &mut out);
    if let Some(facts) = &facts {
        check_against_itself(facts);
        // The input's own lists (a loader is no signature list: an empty dbx and no db then).
        let fw = Firmware {
            dbx: lists.clone().unwrap_or_default(),
            db: lists,
            sbat_level: Some(("SbatLevelRT".into(), sbat)),
        };
        check_checked(facts, &fw);
    }
    let parts = split_parts(data);
    if parts.len() > 1 {
        let facts = examine_checked(parts[0], &mut out);
        let dbx = signature_lists_checked(parts[1], &mut out);
        let db = parts.get(2).and_then(|p| signature_lists_checked(p, &mut out));
        let level = parts.get(3).map(|p| ("SbatLevel".to_string(), sbat_checked(p, &mut out)));
        if let (Some(facts), Some(dbx)) = (facts, dbx) {
            let findings = check_checked(&facts, &Firmware { dbx, db, sbat_level: level });
            out.items += findings.len() as u64;
        }
    }
    out
}

/// A bundle's parts: up to four, split at the first three marks.
fn split_parts(mut data: &[u8]) -> Vec<&[u8]> {
    let mut parts = vec![];
    while parts.len() < 3 {
        let Some(at) = find_part_mark(data) else { break };
        parts.push(&data[..at]);
        data = &data[at + LOADER_PART_MARK.len()..];
    }
    parts.push(data);
    parts
}

/// Where [`LOADER_PART_MARK`] first is in `data`. With libc's memmem: a search written in Rust, unoptimised in a
/// debug build, took most of a loader input's time.
pub fn find_part_mark(data: &[u8]) -> Option<usize> {
    // SAFETY: both pointers and lengths are those of live slices, which memmem only reads.
    let found = unsafe {
        libc::memmem(data.as_ptr().cast(), data.len(), LOADER_PART_MARK.as_ptr().cast(), LOADER_PART_MARK.len())
    };
    (!found.is_null()).then(|| found as usize - data.as_ptr() as usize)
}

/// `check_efi` for both processors, then `examine`; the facts' properties when it accepts.
fn examine_checked(data: &[u8], out: &mut Outcome) -> Option<LoaderFacts> {
    let efi: Vec<Result<(), String>> = Arch::ALL.iter().map(|arch| uefi::check_efi(data, *arch)).collect();
    assert!(efi.iter().any(Result::is_err), "a loader for two processors at once");
    assert_eq!(uefi::check_efi_x64(data), efi[0], "check_efi_x64 differs from check_efi for x64");
    for e in efi.iter().filter_map(|r| r.as_ref().err()) {
        assert!(!e.is_empty(), "check_efi refused with no reason");
    }
    let facts = match revocation::examine(data) {
        Ok(facts) => facts,
        Err(e) => {
            assert!(matches!(e, RevocationError::BadPe { .. }), "examine failed with another error: {e:?}");
            let _ = e.to_string();
            return None;
        }
    };
    out.accepted = true;
    out.items += (facts.certs.len() + facts.sbat.as_ref().map_or(0, Vec::len)) as u64;
    let _ = format!("{facts:?}");
    assert!(facts.certs.len() <= revocation::MAX_LOADER_CERTS, "{} certificates kept", facts.certs.len());
    assert!(facts.signed_digests.len() <= revocation::MAX_SIGNATURES, "{} digests", facts.signed_digests.len());
    assert!(
        facts.unreadable_signatures.len() <= revocation::MAX_SIGNATURES + 1,
        "{} notes of unreadable signatures",
        facts.unreadable_signatures.len()
    );
    assert!(facts.unreadable_signatures.iter().all(|n| !n.is_empty()), "an empty note: {facts:?}");
    for (i, cert) in facts.certs.iter().enumerate() {
        assert!(facts.certs[..i].iter().all(|c| c.der != cert.der), "a certificate kept twice");
        assert_eq!(cert.der.first(), Some(&0x30), "a certificate that is not a DER SEQUENCE");
        assert_eq!(cert.tbs_sha256, <[u8; 32]>::from(Sha256::digest(tbs_certificate(&cert.der))), "tbs_sha256");
        assert!(!cert.subject.is_empty(), "a certificate without a subject (or a note)");
    }
    if let Some(sbat) = &facts.sbat {
        check_sbat_entries(sbat);
    }
    // The same answer from the same bytes at another address (an odd one: alignment must not matter).
    let mut shifted = vec![0u8; data.len() + 1];
    shifted[1..].copy_from_slice(data);
    match revocation::examine(&shifted[1..]) {
        Ok(again) => assert!(again == facts, "examine answers differently for the same bytes"),
        Err(e) => panic!("examine accepted the bytes once, then refused them: {e}"),
    }
    Some(facts)
}

/// The TBSCertificate of a DER certificate: the first element inside its outer SEQUENCE (nothing when the bytes
/// are not that shape) — what an EFI_CERT_X509_SHA256 entry hashes.
fn tbs_certificate(der: &[u8]) -> &[u8] {
    /// (content, length of the whole element) of the DER element at the start (definite lengths of up to 4
    /// bytes, one-byte tags).
    fn element(d: &[u8]) -> Option<(&[u8], usize)> {
        let (tag, first) = (*d.first()?, *d.get(1)?);
        let (len, header) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || tag & 0x1f == 0x1f {
                return None;
            }
            (d.get(2..2 + n)?.iter().fold(0usize, |v, b| (v << 8) | usize::from(*b)), 2 + n)
        };
        let end = header.checked_add(len)?;
        Some((d.get(header..end)?, end))
    }
    element(der).and_then(|(content, _)| element(content).map(|(_, end)| &content[..end])).unwrap_or_default()
}

/// SBAT entries as `parse_sbat` gives them: bounded, each a component name and a number.
fn check_sbat_entries(entries: &[SbatEntry]) {
    assert!(entries.len() <= revocation::MAX_SBAT_ENTRIES, "{} SBAT entries", entries.len());
    for e in entries {
        let c = &e.component;
        assert!(!c.is_empty() && c.trim() == c, "SBAT component {c:?}");
        assert!(!c.contains([',', '\n', '\0']), "SBAT component {c:?}");
    }
}

/// `parse_sbat`, bounded: entries as above, from at most MAX_SBAT_BYTES.
fn sbat_checked(data: &[u8], out: &mut Outcome) -> Vec<SbatEntry> {
    let entries = revocation::parse_sbat(data);
    check_sbat_entries(&entries);
    if data.len() > revocation::MAX_SBAT_BYTES {
        assert!(entries == revocation::parse_sbat(&data[..revocation::MAX_SBAT_BYTES]), "SBAT read past its cap");
    }
    if !entries.is_empty() {
        out.accepted = true;
        out.items += entries.len() as u64;
    }
    entries
}

/// `parse_signature_lists` as a dbx and as a db (the same answer but for the variable's name in errors); what it
/// accepts is bounded by the data and reads the same again when written out as signature lists.
fn signature_lists_checked(data: &[u8], out: &mut Outcome) -> Option<SignatureDb> {
    let db = match (revocation::parse_signature_lists("dbx", data), revocation::parse_signature_lists("db", data)) {
        (Ok(dbx), Ok(db)) => {
            assert!(dbx == db, "a dbx and a db of the same bytes differ");
            db
        }
        (Err(dbx), Err(db)) => {
            assert!(
                matches!(&dbx, RevocationError::Malformed { variable, .. } if variable == "dbx"),
                "not a Malformed dbx: {dbx:?}"
            );
            let (dbx, db) = (dbx.to_string(), db.to_string());
            assert_eq!(dbx.replacen("variable dbx ", "variable db ", 1), db, "errors differ beyond the name");
            return None;
        }
        (dbx, db) => panic!("one of dbx and db parses, the other not: {dbx:?} / {db:?}"),
    };
    // Every entry came from the data: 16 bytes of owner and its own bytes each.
    let x509: usize = db.x509.iter().map(|c| 16 + c.len()).sum();
    let used = 48 * db.sha256.len() + 64 * db.x509_sha256.len() + x509 + 17 * db.skipped;
    assert!(used <= data.len(), "{used} bytes of entries from {} bytes", data.len());
    assert!(db.x509.iter().all(|c| !c.is_empty()), "an empty certificate entry");
    let _ = format!("{db:?}");
    // Written out again (the skipped types left out), the lists read as the same entries.
    let again = revocation::parse_signature_lists("dbx", &signature_lists(&db))
        .unwrap_or_else(|e| panic!("signature lists written from a parsed dbx do not parse: {e}"));
    assert!(again == SignatureDb { skipped: 0, ..db.clone() }, "a dbx reads differently once written out again");
    if !data.is_empty() {
        out.accepted = true;
        out.items += (db.sha256.len() + db.x509.len() + db.x509_sha256.len() + db.skipped) as u64;
    }
    Some(db)
}

/// The entries of `db` (but the skipped ones) as signature lists: the hashes in one list, the TBSCertificate
/// hashes in one (with a zero time of revocation), each certificate in a list of its own.
fn signature_lists(db: &SignatureDb) -> Vec<u8> {
    let mut lists = vec![];
    if !db.sha256.is_empty() {
        let entries: Vec<&[u8]> = db.sha256.iter().map(|h| &h[..]).collect();
        lists.extend(signature_list(EFI_CERT_SHA256, &entries));
    }
    if !db.x509_sha256.is_empty() {
        let timed: Vec<Vec<u8>> = db.x509_sha256.iter().map(|h| [&h[..], &[0u8; 16]].concat()).collect();
        let entries: Vec<&[u8]> = timed.iter().map(Vec::as_slice).collect();
        lists.extend(signature_list(EFI_CERT_X509_SHA256, &entries));
    }
    for cert in &db.x509 {
        lists.extend(signature_list(EFI_CERT_X509, &[cert]));
    }
    lists
}

/// `check`, and what must hold of its findings whatever the databases: each names the file, reads as text,
/// and is there exactly when the databases say so.
fn check_checked(facts: &LoaderFacts, fw: &Firmware) -> Vec<Finding> {
    let findings = revocation::check(LOADER_NAME, facts, fw);
    for f in &findings {
        let text = f.to_string();
        assert!(text.starts_with(&format!("{LOADER_NAME}: ")), "a finding that does not name the file: {text}");
        if f.is_warning() {
            assert!(text.ends_with(revocation::WONT_BOOT), "a warning that does not say so: {text}");
        }
        let file = match f {
            Finding::HashRevoked { file, sha256 } => {
                assert_eq!(sha256, &facts.sha256, "another hash revoked");
                assert!(f.is_warning());
                file
            }
            Finding::CertRevoked { file, subject } => {
                assert!(
                    facts.certs.iter().any(|c| c.subject == *subject || c.issuer == *subject),
                    "revoked certificate {subject:?} is none of the loader's nor their issuers"
                );
                assert!(f.is_warning());
                file
            }
            Finding::Sbat { file, .. } | Finding::DbIssuer { file, .. } => file,
        };
        assert_eq!(file, LOADER_NAME);
    }
    let count = |want: fn(&Finding) -> bool| findings.iter().filter(|f| want(f)).count();
    let hash_revoked = fw.dbx.sha256.contains(&facts.sha256);
    assert_eq!(count(|f| matches!(f, Finding::HashRevoked { .. })), usize::from(hash_revoked), "{findings:?}");
    for c in &facts.certs {
        if fw.dbx.x509.contains(&c.der) || fw.dbx.x509_sha256.contains(&c.tbs_sha256) {
            assert!(
                findings.iter().any(|f| matches!(f, Finding::CertRevoked { subject, .. } if *subject == c.subject)),
                "certificate {:?} is in dbx, not found revoked: {findings:?}",
                c.subject
            );
        }
    }
    let sbat: Vec<&Finding> = findings.iter().filter(|f| matches!(f, Finding::Sbat { .. })).collect();
    match (&facts.sbat, &fw.sbat_level, sbat.as_slice()) {
        (Some(entries), Some((name, level)), [Finding::Sbat { variable, loader, level: shown, below, .. }]) => {
            assert!(variable == name && loader == entries && shown == level, "the SBAT finding shows other entries");
            // shim's rule: below when the level names the component with a higher generation.
            let want: Vec<(String, u32, u32)> = entries
                .iter()
                .filter_map(|e| {
                    let need = level.iter().filter(|l| l.component == e.component).map(|l| l.generation).max()?;
                    (e.generation < need).then(|| (e.component.clone(), e.generation, need))
                })
                .collect();
            assert_eq!(*below, want, "SBAT generations below the level");
        }
        (Some(_), Some(_), _) => panic!("not one SBAT finding for a loader with SBAT and an SbatLevel: {findings:?}"),
        (_, _, found) => assert!(found.is_empty(), "an SBAT finding without SBAT or without an SbatLevel"),
    }
    let db_issuer = fw.db.as_ref().is_some_and(|db| !facts.certs.is_empty() && !db.sha256.contains(&facts.sha256));
    assert_eq!(count(|f| matches!(f, Finding::DbIssuer { .. })), usize::from(db_issuer), "{findings:?}");
    findings
}

/// The loader against databases made from its own facts (written as signature lists and parsed, as efivars
/// would give them): nothing in empty ones; its hash, each certificate and each TBSCertificate hash found in a
/// dbx; its certificates' issuer found in a db; nothing said when db lists its hash.
fn check_against_itself(facts: &LoaderFacts) {
    let none = Firmware { dbx: SignatureDb::default(), db: None, sbat_level: None };
    assert_eq!(check_checked(facts, &none), [], "findings without any database entry");

    let own = SignatureDb {
        sha256: vec![[0x11; 32], facts.sha256],
        x509: facts.certs.iter().map(|c| c.der.clone()).collect(),
        x509_sha256: facts.certs.iter().map(|c| c.tbs_sha256).collect(),
        skipped: 0,
    };
    let dbx = revocation::parse_signature_lists("dbx", &signature_lists(&own))
        .unwrap_or_else(|e| panic!("the loader's own signature lists do not parse: {e}"));
    assert!(dbx == own, "the loader's own signature lists read differently");
    let db = SignatureDb { sha256: vec![], ..own.clone() };
    let level = facts.sbat.clone().map(|sbat| ("SbatLevelRT".to_string(), sbat));
    let fw = Firmware { dbx, db: Some(db), sbat_level: level };
    let findings = check_checked(facts, &fw);
    assert_eq!(
        findings.first(),
        Some(&Finding::HashRevoked { file: LOADER_NAME.into(), sha256: facts.sha256 }),
        "a dbx listing the loader's hash does not revoke it"
    );
    for c in &facts.certs {
        assert!(
            findings.iter().any(|f| matches!(f, Finding::CertRevoked { subject, .. } if *subject == c.subject)),
            "a dbx listing certificate {:?} does not revoke the loader",
            c.subject
        );
    }
    if let Some(first) = facts.certs.first() {
        // db's first certificate is the loader's own first: it is the issuer found.
        let issuer = findings.iter().find_map(|f| match f {
            Finding::DbIssuer { issuer, .. } => Some(issuer.clone()),
            _ => None,
        });
        assert_eq!(issuer, Some(Some(first.subject.clone())), "the db's own certificate is not found as the issuer");
    }

    let db = SignatureDb { sha256: vec![facts.sha256], ..SignatureDb::default() };
    let fw = Firmware {
        dbx: SignatureDb { sha256: vec![[0x11; 32]], ..SignatureDb::default() },
        db: Some(db),
        sbat_level: None,
    };
    assert_eq!(check_checked(facts, &fw), [], "findings for a loader whose hash db lists");
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
