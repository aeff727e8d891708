//! The parts of a split install.wim against the WIM they came from: planned again and compared byte for byte;
//! or, for parts re-packed from an install.esd (which cannot be made again), their headers and blob tables
//! against the ESD's blob table.

use std::io::{Read, Seek, SeekFrom};

use super::compare;
use super::{Files, Mismatch, Problem, Progress, VerifyError, compare_streams, outcome_mismatch};
use crate::copy::SourceTree;
use crate::media::source::Source;
use crate::media::wim::{self, PART_MIB};
use crate::media::wimsplit::{self, HEADER_SIZE, MAX_TABLE_BYTES};
use compare::StickEntry;

/// A blob table entry's size.
const ENTRY: usize = 50;
/// Resource flags: metadata (an image's directory tree, re-written by a re-pack) and a whole solid resource.
const FLAG_METADATA: u8 = 0x02;
const SOLID_RESOURCE_MAGIC: u64 = 0x1_0000_0000;

/// The parts of a split WIM against the WIM they came from: the split is planned again from the ISO's WIM with
/// the split set's GUID read from the first part, and each part compared byte for byte with the bytes the plan
/// makes (the same cost as comparing the WIM itself: one read of each side). Parts re-packed from an
/// install.esd cannot be made again: their headers are checked (a WIM part, its number, one GUID), their blob
/// tables must list exactly the ESD's resources (by SHA-1), and a note says their data was not compared.
pub(super) fn check_split(
    source: &Source,
    iso: usize,
    parts: &[usize],
    stick: &[StickEntry],
    files: &Files,
    progress: &mut Progress,
) -> Result<(Vec<Mismatch>, Option<String>), VerifyError> {
    let wim_path = &source.entries()[iso].path;
    let mut bad = Vec::new();
    let first_path = &stick[parts[0]].path;
    let head = match files.open(parts[0]).and_then(|mut r| {
        let mut h = [0u8; 208];
        r.read_exact(&mut h).map(|_| h)
    }) {
        Ok(h) => h,
        Err(e) => {
            progress.add(parts.iter().map(|&p| stick[p].size).sum());
            bad.push(Mismatch {
                path: first_path.clone(),
                problem: Problem::Unreadable { what: format!("its WIM header: {e}") },
            });
            return Ok((bad, None));
        }
    };
    let guid: [u8; 16] = head[24..40].try_into().unwrap_or_default();
    let iso_err = |source| VerifyError::ReadIso { path: wim_path.clone(), source };
    let mut wim = source.open_seekable(iso).map_err(iso_err)?;
    let plan = match wimsplit::plan(&mut wim, PART_MIB << 20, guid) {
        Ok(plan) => plan,
        Err(wimsplit::SplitError::NeedsRepack(why)) => {
            progress.add(parts.iter().map(|&p| stick[p].size).sum());
            bad.extend(check_repacked_headers(parts, stick, files, guid));
            if bad.is_empty() {
                let original = table_hashes_of_iso(source, iso)?;
                bad.extend(check_repacked_tables(wim_path, &original, parts, stick, files));
            }
            return Ok((
                bad,
                Some(format!(
                    "{wim_path} was re-packed before it was split ({why}): the parts' headers and blob tables were \
                     checked (together they list exactly its resources, by SHA-1), their compressed data was not \
                     compared with it"
                )),
            ));
        }
        Err(e) => {
            progress.add(parts.iter().map(|&p| stick[p].size).sum());
            bad.push(Mismatch {
                path: first_path.clone(),
                problem: Problem::Wrong { what: format!("the ISO's {wim_path} cannot be split again to compare: {e}") },
            });
            return Ok((bad, None));
        }
    };
    for k in parts.len()..plan.parts.len() {
        bad.push(Mismatch { path: wim::part_path(wim_path, k + 1), problem: Problem::Missing });
    }
    for (k, &s) in parts.iter().enumerate() {
        let path = &stick[s].path;
        let Some(part) = plan.parts.get(k) else {
            bad.push(Mismatch { path: path.clone(), problem: Problem::Unexpected { is_dir: false } });
            progress.add(stick[s].size);
            continue;
        };
        if part.size != stick[s].size {
            bad.push(Mismatch {
                path: path.clone(),
                problem: Problem::Size { expected: part.size, found: stick[s].size },
            });
            progress.add(stick[s].size);
            continue;
        }
        let mut found = match files.open(s) {
            Ok(r) => r,
            Err(e) => {
                bad.push(Mismatch { path: path.clone(), problem: Problem::Unreadable { what: e.to_string() } });
                progress.add(stick[s].size);
                continue;
            }
        };
        let mut expected = part.reader(source.open_seekable(iso).map_err(iso_err)?);
        let o = compare_streams(wim_path, &mut expected, &mut found, part.size, progress)?;
        bad.extend(outcome_mismatch(path, o));
    }
    Ok((bad, None))
}

/// Parts of a re-packed WIM: each a WIM header with its part number, the part count and the same GUID.
fn check_repacked_headers(parts: &[usize], stick: &[StickEntry], files: &Files, guid: [u8; 16]) -> Vec<Mismatch> {
    let mut bad = Vec::new();
    for (k, &s) in parts.iter().enumerate() {
        let path = &stick[s].path;
        let head = files.open(s).and_then(|mut r| {
            let mut h = [0u8; 208];
            r.read_exact(&mut h).map(|_| h)
        });
        let what = match head {
            Err(e) => Some(format!("its WIM header cannot be read: {e}")),
            Ok(h) if &h[..8] != b"MSWIM\0\0\0" => Some("not a WIM part".into()),
            Ok(h) if h[24..40] != guid => Some("its split set GUID differs from the first part's".into()),
            Ok(h) => {
                let (n, total) = (u16::from_le_bytes([h[40], h[41]]), u16::from_le_bytes([h[42], h[43]]));
                (usize::from(n) != k + 1 || usize::from(total) != parts.len())
                    .then(|| format!("it says part {n} of {total}, not {} of {}", k + 1, parts.len()))
            }
        };
        if let Some(what) = what {
            bad.push(Mismatch { path: path.clone(), problem: Problem::Wrong { what } });
        }
    }
    bad
}

/// Where a WIM's blob table lies (offset, bytes), from its 208-byte header, inside a file of `file_size` bytes
/// and within the split's bound on tables.
pub fn table_location(h: &[u8], file_size: u64) -> Result<(u64, u64), String> {
    if h.len() < HEADER_SIZE as usize || &h[..8] != b"MSWIM\0\0\0" {
        return Err("not a WIM header".into());
    }
    let size = u64::from_le_bytes(h[48..56].try_into().unwrap_or_default()) & 0x00FF_FFFF_FFFF_FFFF;
    let offset = u64::from_le_bytes(h[56..64].try_into().unwrap_or_default());
    if size > MAX_TABLE_BYTES || !size.is_multiple_of(ENTRY as u64) {
        return Err(format!("its blob table of {size} bytes is over the limit or not whole entries"));
    }
    if offset.checked_add(size).is_none_or(|end| end > file_size) {
        return Err("its blob table lies past its end".into());
    }
    Ok((offset, size))
}

/// The SHA-1 hashes of the file blobs a blob table lists (no metadata resources, no solid resources' own
/// entries), sorted and without duplicates.
pub fn table_hashes(table: &[u8]) -> Vec<[u8; 20]> {
    let mut out: Vec<[u8; 20]> = table
        .chunks_exact(ENTRY)
        .filter(|e| {
            let flags = e[7];
            let uncompressed = u64::from_le_bytes(e[16..24].try_into().unwrap_or_default());
            flags & FLAG_METADATA == 0 && uncompressed != SOLID_RESOURCE_MAGIC
        })
        .map(|e| e[30..50].try_into().unwrap_or_default())
        .filter(|h| *h != [0u8; 20])
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn table_hashes_of_iso(source: &Source, iso: usize) -> Result<Vec<[u8; 20]>, VerifyError> {
    let path = &source.entries()[iso].path;
    let err = |source| VerifyError::ReadIso { path: path.clone(), source };
    let mut r = source.open_seekable(iso).map_err(err)?;
    let mut h = vec![0u8; HEADER_SIZE as usize];
    r.read_exact(&mut h).map_err(err)?;
    let (offset, size) = table_location(&h, source.entries()[iso].size)
        .map_err(|what| err(std::io::Error::new(std::io::ErrorKind::InvalidData, what)))?;
    r.seek(SeekFrom::Start(offset)).map_err(err)?;
    let mut table = vec![0u8; size as usize];
    r.read_exact(&mut table).map_err(err)?;
    Ok(table_hashes(&table))
}

/// Each part's blob table lists only resources of the original, and together they list all of them.
fn check_repacked_tables(
    wim_path: &str,
    original: &[[u8; 20]],
    parts: &[usize],
    stick: &[StickEntry],
    files: &Files,
) -> Vec<Mismatch> {
    let mut bad = Vec::new();
    let mut found: Vec<[u8; 20]> = Vec::new();
    for &s in parts {
        let path = &stick[s].path;
        let wrong = |what: String| Mismatch { path: path.clone(), problem: Problem::Wrong { what } };
        let mut h = vec![0u8; HEADER_SIZE as usize];
        let table = files
            .read_at(s, 0, &mut h)
            .map_err(|e| e.to_string())
            .and_then(|()| table_location(&h, stick[s].size))
            .and_then(|(offset, size)| {
                let mut t = vec![0u8; size as usize];
                files.read_at(s, offset, &mut t).map(|()| t).map_err(|e| e.to_string())
            });
        let table = match table {
            Ok(t) => t,
            Err(what) => {
                bad.push(wrong(format!("its blob table cannot be read: {what}")));
                continue;
            }
        };
        let hashes = table_hashes(&table);
        let foreign = hashes.iter().filter(|h| original.binary_search(h).is_err()).count();
        if foreign > 0 {
            bad.push(wrong(format!("its blob table lists {foreign} resource(s) the ISO's {wim_path} does not have")));
        }
        found.extend(hashes);
        if found.len() > original.len() + parts.len() * 1_000_000 {
            break; // bounded: no more than the tables' limit
        }
    }
    found.sort_unstable();
    found.dedup();
    let missing = original.iter().filter(|h| found.binary_search(h).is_err()).count();
    if missing > 0 && !parts.is_empty() {
        bad.push(Mismatch {
            path: stick[parts[0]].path.clone(),
            problem: Problem::Wrong {
                what: format!("{missing} of the ISO's {wim_path} resources are in no part of the split set"),
            },
        });
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(flags: u8, uncompressed: u64, hash: u8) -> Vec<u8> {
        let mut e = vec![0u8; ENTRY];
        e[0] = 10;
        e[7] = flags;
        e[16..24].copy_from_slice(&uncompressed.to_le_bytes());
        e[30..50].fill(hash);
        e
    }

    #[test]
    fn hashes_leave_out_metadata_and_solid_resources() {
        let table = [
            entry(0, 5, 3),
            entry(FLAG_METADATA, 5, 4),
            entry(0x10, SOLID_RESOURCE_MAGIC, 0),
            entry(0x10, 7, 1),
            entry(0, 5, 3),
        ]
        .concat();
        assert_eq!(table_hashes(&table), vec![[1; 20], [3; 20]]);
    }

    /// A part: a header whose blob table (right after it) lists `hashes`, and a metadata resource.
    fn part(hashes: &[u8]) -> Vec<u8> {
        let mut table: Vec<u8> = hashes.iter().flat_map(|&h| entry(0, 5, h)).collect();
        table.extend(entry(FLAG_METADATA, 5, 99));
        let mut h = vec![0u8; 208];
        h[..8].copy_from_slice(b"MSWIM\0\0\0");
        h[48..56].copy_from_slice(&(table.len() as u64).to_le_bytes());
        h[56..64].copy_from_slice(&208u64.to_le_bytes());
        [h, table].concat()
    }

    #[test]
    fn re_packed_parts_must_list_exactly_the_originals_resources() {
        let dir = tempfile::tempdir().unwrap();
        let parts = [part(&[1, 2]), part(&[3])];
        let mut stick = Vec::new();
        let mut rels = Vec::new();
        for (k, p) in parts.iter().enumerate() {
            let name = wim::part_name("install", k + 1);
            std::fs::write(dir.path().join(&name), p).unwrap();
            stick.push(StickEntry { path: format!("sources/{name}"), is_dir: false, size: p.len() as u64 });
            rels.push(std::path::PathBuf::from(name));
        }
        let files = Files::Mounted(dir.path(), rels);
        let check = |original: &[u8]| {
            let original: Vec<[u8; 20]> = original.iter().map(|&h| [h; 20]).collect();
            check_repacked_tables("sources/install.esd", &original, &[0, 1], &stick, &files)
        };
        assert_eq!(check(&[1, 2, 3]), vec![]);
        let missing = check(&[1, 2, 3, 4]);
        assert!(
            matches!(&missing[..], [Mismatch { path, problem: Problem::Wrong { what } }]
            if path == "sources/install.swm" && what.starts_with("1 of the ISO's")),
            "{missing:?}"
        );
        let foreign = check(&[1, 2]);
        assert!(
            matches!(&foreign[..], [Mismatch { path, problem: Problem::Wrong { what } }]
            if path == "sources/install2.swm" && what.contains("1 resource(s)")),
            "{foreign:?}"
        );
    }

    #[test]
    fn table_location_is_bounded() {
        let mut h = vec![0u8; 208];
        h[..8].copy_from_slice(b"MSWIM\0\0\0");
        h[48..56].copy_from_slice(&100u64.to_le_bytes());
        h[56..64].copy_from_slice(&208u64.to_le_bytes());
        assert_eq!(table_location(&h, 308), Ok((208, 100)));
        assert!(table_location(&h, 307).is_err());
        h[48..56].copy_from_slice(&101u64.to_le_bytes());
        assert!(table_location(&h, 1000).is_err());
        h[48..56].copy_from_slice(&(MAX_TABLE_BYTES + 50).to_le_bytes());
        assert!(table_location(&h, u64::MAX).is_err());
        assert!(table_location(b"short", 10).is_err());
    }
}
