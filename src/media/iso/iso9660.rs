//! ISO 9660 side of the ISO reader (used only when the image has no UDF): Joliet or primary volume descriptor, directory records, multi-extent files.

use std::sync::Arc;

use super::{
    Child, Extent, FileExtents, Image, IsoError, IsoFormat, Limit, SECTOR, Volume, civil_to_unix, latin1, utf16be, walk,
};

const FLAG_DIRECTORY: u8 = 0x02;
const FLAG_ASSOCIATED: u8 = 0x04;
const FLAG_MULTI_EXTENT: u8 = 0x80;

fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Whether a supplementary volume descriptor carries a Joliet escape sequence (%/@, %/C or %/E).
pub(crate) fn is_joliet(svd: &[u8]) -> bool {
    svd.get(88..120)
        .is_some_and(|esc| esc.windows(3).any(|w| w[0] == b'%' && w[1] == b'/' && matches!(w[2], b'@' | b'C' | b'E')))
}

/// A 7-byte directory record date (ECMA-119 9.1.5) as Unix seconds UTC; 0 if invalid.
fn record_time(b: &[u8]) -> i64 {
    let [year, month, day, hour, minute, second, offset] = match b.get(..7) {
        Some(&[a, b, c, d, e, f, g]) => [a, b, c, d, e, f, g],
        _ => return 0,
    };
    // GMT offset in 15-minute units, from -48 (west) to +52 (east).
    let offset = i64::from(offset as i8);
    let offset = if (-48..=52).contains(&offset) { offset } else { 0 };
    civil_to_unix(
        1900 + i64::from(year),
        u32::from(month),
        u32::from(day),
        u32::from(hour),
        u32::from(minute),
        u32::from(second),
    )
    .map_or(0, |t| t - offset * 15 * 60)
}

/// Strips a ";N" version suffix, and for plain ISO 9660 names a trailing '.'.
fn clean_name(mut name: String, joliet: bool) -> String {
    if let Some(semi) = name.rfind(';')
        && name[semi + 1..].bytes().all(|b| b.is_ascii_digit())
    {
        name.truncate(semi);
    }
    if !joliet && name.len() > 1 && name.ends_with('.') {
        name.pop();
    }
    name
}

/// Where a directory's records are.
#[derive(Debug, Clone, Copy)]
struct DirRef {
    offset: u64,
    len: u64,
}

struct Iso<'a> {
    image: &'a Image,
    joliet: bool,
}

/// One directory record, as far as we use it.
struct Record {
    name: String,
    flags: u8,
    offset: u64,
    len: u64,
    mtime: i64,
}

impl Iso<'_> {
    fn bad(&self, what: impl Into<String>) -> IsoError {
        self.image.bad_iso(what)
    }

    /// Parses a directory record of `rec.len()` bytes (`at` names it in errors).
    fn record(&self, rec: &[u8], at: u64) -> Result<Record, IsoError> {
        if rec.len() < 34 {
            return Err(self.bad(format!("directory record at byte {at} is too short ({} bytes)", rec.len())));
        }
        let l_fi = usize::from(rec[32]);
        let Some(id) = rec.get(33..33 + l_fi) else {
            return Err(self.bad(format!("directory record at byte {at} has a name of {l_fi} bytes past its end")));
        };
        let ext_attr = u64::from(rec[1]);
        let lba = u64::from(le32(rec, 2));
        let flags = rec[25];
        if rec[26] != 0 || rec[27] != 0 {
            return Err(self.image.unsupported(format!("interleaved ISO 9660 file (directory record at byte {at})")));
        }
        let name = if l_fi == 1 && id[0] <= 1 {
            // "." and "..".
            String::from(if id[0] == 0 { "." } else { ".." })
        } else if self.joliet {
            clean_name(utf16be(id), true)
        } else {
            clean_name(latin1(id), false)
        };
        Ok(Record {
            name,
            flags,
            offset: (lba + ext_attr) * SECTOR,
            len: u64::from(le32(rec, 10)),
            mtime: record_time(&rec[18..25]),
        })
    }

    fn list(&self, dir: DirRef) -> Result<Vec<Child<DirRef>>, IsoError> {
        if dir.len > self.image.limits().dir_bytes {
            return Err(self
                .image
                .over(Limit::DirBytes, format!("directory at byte {} is {} bytes", dir.offset, dir.len)));
        }
        let data = self.image.read_vec(dir.offset, dir.len as usize)?;
        // Children, each with its extents still growing (multi-extent files).
        let mut kids: Vec<(Child<DirRef>, Vec<Extent>)> = Vec::new();
        let no_extents: Arc<FileExtents> = Arc::default();
        // A multi-extent file still collecting extents.
        let mut open_multi = false;
        let mut p = 0usize;
        while p < data.len() {
            let l = usize::from(data[p]);
            if l == 0 {
                // The rest of this sector is padding.
                p = (p / SECTOR as usize + 1) * SECTOR as usize;
                continue;
            }
            let at = dir.offset + p as u64;
            let Some(raw) = data.get(p..p + l) else {
                return Err(self.bad(format!("directory record at byte {at} ({l} bytes) runs past the directory end")));
            };
            p += l;
            let rec = self.record(raw, at)?;
            if rec.name == "." || rec.name == ".." || rec.flags & FLAG_ASSOCIATED != 0 {
                continue;
            }
            let is_dir = rec.flags & FLAG_DIRECTORY != 0;
            let continues = open_multi && kids.last().is_some_and(|(k, _)| k.name == rec.name);
            if !continues || is_dir {
                self.image.charge(Limit::Entries, 1, || format!("directory record at byte {at}"))?;
            }
            if rec.len > 0 && !is_dir {
                self.image.charge(Limit::Extents, 1, || format!("directory record at byte {at}"))?;
            }
            if continues && !is_dir {
                if let Some((last, extents)) = kids.last_mut() {
                    last.size = last.size.saturating_add(rec.len);
                    if rec.len > 0 {
                        extents.push(Extent::Disk { offset: rec.offset, len: rec.len });
                    }
                }
            } else if is_dir {
                let child = Child {
                    name: rec.name,
                    size: 0,
                    mtime: rec.mtime,
                    extents: no_extents.clone(),
                    dir: Some(DirRef { offset: rec.offset, len: rec.len }),
                };
                kids.push((child, Vec::new()));
            } else {
                let extents =
                    if rec.len > 0 { vec![Extent::Disk { offset: rec.offset, len: rec.len }] } else { Vec::new() };
                let child =
                    Child { name: rec.name, size: rec.len, mtime: rec.mtime, extents: no_extents.clone(), dir: None };
                kids.push((child, extents));
            }
            open_multi = !is_dir && rec.flags & FLAG_MULTI_EXTENT != 0;
        }
        Ok(kids
            .into_iter()
            .map(|(mut child, extents)| {
                if !extents.is_empty() {
                    child.extents = Arc::new(FileExtents::new(extents));
                }
                child
            })
            .collect())
    }
}

/// Reads the ISO 9660 tree of `image`: the Joliet one if `joliet` gives its descriptor's sector, else the primary one.
pub(crate) fn read(image: &Image, pvd: u64, joliet: Option<u64>) -> Result<Volume, IsoError> {
    let read_sector = |n: u64| -> Result<Vec<u8>, IsoError> {
        image.sector(n)?.ok_or_else(|| image.bad_iso(format!("image ends before sector {n}")))
    };
    let primary = read_sector(pvd)?;
    let volume_id = latin1(&primary[40..72]).trim_end_matches([' ', '\0']).to_string();
    let (desc, format) = match joliet {
        Some(n) => (read_sector(n)?, IsoFormat::Joliet),
        None => (primary, IsoFormat::Iso9660),
    };
    let block_size = le16(&desc, 128);
    if u64::from(block_size) != SECTOR {
        return Err(image.unsupported(format!("ISO 9660 logical block size {block_size} (only {SECTOR} is supported)")));
    }
    let iso = Iso { image, joliet: format == IsoFormat::Joliet };
    let root_rec = &desc[156..190];
    let at = joliet.unwrap_or(pvd) * SECTOR + 156;
    let root = iso.record(root_rec, at)?;
    let root = DirRef { offset: root.offset, len: root.len };
    // Directories are keyed on the bytes they cover: one starting inside another is a cycle too.
    let span = |d: &DirRef| Ok(vec![(d.offset, d.offset.saturating_add(d.len))]);
    let (entries, extents) = walk(image, root, span, |d, _| iso.list(*d), |what| image.bad_iso(what))?;
    Ok(Volume { format, volume_id, entries, extents, skipped: Vec::new() })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::iso::test_support::{read_all, read_in_chunks, write_temp};
    use crate::media::iso::{IsoError, IsoFormat, IsoFs};
    use std::io::{Read, Write};

    pub(crate) fn both16(b: &mut [u8], at: usize, v: u16) {
        b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        b[at + 2..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn both32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        b[at + 4..at + 8].copy_from_slice(&v.to_be_bytes());
    }

    pub(crate) const TIME: [u8; 7] = [120, 6, 15, 12, 0, 0, 8]; // 2020-06-15 12:00 GMT+2

    /// A directory record.
    pub(crate) fn record(lba: u32, len: u32, flags: u8, id: &[u8], time: [u8; 7]) -> Vec<u8> {
        let l = 33 + id.len();
        let l = l + (l & 1);
        let mut r = vec![0u8; l];
        r[0] = l as u8;
        both32(&mut r, 2, lba);
        both32(&mut r, 10, len);
        r[18..25].copy_from_slice(&time);
        r[25] = flags;
        both16(&mut r, 28, 1);
        r[32] = id.len() as u8;
        r[33..33 + id.len()].copy_from_slice(id);
        r
    }

    pub(crate) fn ucs2(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_be_bytes).collect()
    }

    /// A primary (kind 1) or Joliet supplementary (kind 2) volume descriptor.
    pub(crate) fn descriptor(kind: u8, volume_id: &str, root_lba: u32, root_len: u32) -> Vec<u8> {
        let mut d = vec![0u8; 2048];
        d[0] = kind;
        d[1..6].copy_from_slice(b"CD001");
        d[6] = 1;
        d[40..72].fill(b' ');
        d[40..40 + volume_id.len()].copy_from_slice(volume_id.as_bytes());
        both32(&mut d, 80, 64);
        if kind == 2 {
            d[88..91].copy_from_slice(b"%/E");
        }
        both16(&mut d, 120, 1);
        both16(&mut d, 124, 1);
        both16(&mut d, 128, 2048);
        let root = record(root_lba, root_len, FLAG_DIRECTORY, &[0], TIME);
        d[156..190].copy_from_slice(&root);
        d[881] = 1;
        d
    }

    pub(crate) fn terminator() -> Vec<u8> {
        let mut d = vec![0u8; 2048];
        d[0] = 255;
        d[1..6].copy_from_slice(b"CD001");
        d[6] = 1;
        d
    }

    /// Directory sectors: ".", ".." and `records`, none crossing a sector boundary.
    pub(crate) fn dir_sectors(me: u32, parent: u32, records: &[Vec<u8>]) -> Vec<u8> {
        let mut all =
            vec![record(me, 2048, FLAG_DIRECTORY, &[0], TIME), record(parent, 2048, FLAG_DIRECTORY, &[1], TIME)];
        all.extend(records.iter().cloned());
        let mut out = Vec::new();
        for r in all {
            if out.len() % 2048 + r.len() > 2048 {
                out.resize(out.len().div_ceil(2048) * 2048, 0);
            }
            out.extend_from_slice(&r);
        }
        out.resize(out.len().div_ceil(2048).max(1) * 2048, 0);
        out
    }

    pub(crate) fn put(img: &mut Vec<u8>, sector: u32, bytes: &[u8]) {
        let at = sector as usize * 2048;
        if img.len() < at + bytes.len() {
            img.resize(at + bytes.len(), 0);
        }
        img[at..at + bytes.len()].copy_from_slice(bytes);
    }

    pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect()
    }

    /// The primary tree of the test images: README.TXT and NODOT. (as "NODOT.;1").
    pub(crate) fn primary_root(me: u32) -> Vec<u8> {
        dir_sectors(me, me, &[record(31, 5, 0, b"NODOT.;1", TIME), record(30, 7, 0, b"README.TXT;1", TIME)])
    }

    /// A Joliet image; `sub_lba` is where the "Sub Dir" record points.
    fn joliet_image(sub_lba: u32) -> Vec<u8> {
        let mut img = vec![0u8; 48 * 2048];
        put(&mut img, 16, &descriptor(1, "TEST_VOL", 20, 2048));
        put(&mut img, 17, &descriptor(2, "JOLIET", 21, 2048));
        put(&mut img, 18, &terminator());
        put(&mut img, 20, &primary_root(20));
        let joliet_root = dir_sectors(
            21,
            21,
            &[
                record(31, 5, 0, &ucs2("a.txt;1"), TIME),
                record(32, 4096, FLAG_MULTI_EXTENT, &ucs2("big file.bin"), TIME),
                record(40, 100, 0, &ucs2("big file.bin"), TIME),
                record(sub_lba, 2048, FLAG_DIRECTORY, &ucs2("Sub Dir"), TIME),
            ],
        );
        put(&mut img, 21, &joliet_root);
        let sub = dir_sectors(22, 21, &[record(31, 5, 0, &ucs2("ñ 日本.txt"), TIME)]);
        put(&mut img, 22, &sub);
        put(&mut img, 30, b"readme\n");
        put(&mut img, 31, b"hello");
        put(&mut img, 32, &pattern(4096, 1));
        put(&mut img, 40, &pattern(100, 2));
        img
    }

    #[test]
    fn joliet_preferred_with_multi_extent_file() {
        let f = write_temp(&joliet_image(22));
        let fs = IsoFs::open(f.path()).expect("open");
        assert_eq!(fs.format(), IsoFormat::Joliet);
        assert_eq!(fs.volume_id(), "TEST_VOL");
        let got: Vec<_> = fs.entries().iter().map(|e| (e.path.as_str(), e.is_dir, e.size)).collect();
        assert_eq!(
            got,
            [
                ("Sub Dir", true, 0),
                ("Sub Dir/ñ 日本.txt", false, 5),
                ("a.txt", false, 5),
                ("big file.bin", false, 4196),
            ]
        );
        assert!(fs.entries().iter().all(|e| e.mtime == 1_592_215_200));
        let mut want = pattern(4096, 1);
        want.extend(pattern(100, 2));
        assert_eq!(read_all(&fs, "big file.bin"), want);
        assert_eq!(read_all(&fs, "Sub Dir/ñ 日本.txt"), b"hello");
        // Small reads cross the extent boundary too.
        let i = fs.entries().iter().position(|e| e.path == "big file.bin");
        let mut r = fs.open_file(i.expect("big file")).expect("open");
        assert_eq!(read_in_chunks(&mut r, 7), want);
        assert!(matches!(fs.open_file(0), Err(IsoError::IsDirectory { .. })));
        assert!(matches!(fs.open_file(99), Err(IsoError::NoSuchEntry { .. })));
    }

    #[test]
    fn primary_names_lose_version_and_trailing_dot() {
        let f = write_temp(&joliet_image(22));
        let image = Image::open(f.path(), crate::media::iso::LIMITS).expect("image");
        let vol = read(&image, 16, None).expect("primary tree");
        assert_eq!(vol.format, IsoFormat::Iso9660);
        let names: Vec<_> = vol.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(names, ["NODOT", "README.TXT"]);
        assert_eq!(clean_name("A.;1".into(), false), "A");
        assert_eq!(clean_name("A;B".into(), true), "A;B");
        assert_eq!(clean_name("x.txt;1".into(), true), "x.txt");
    }

    #[test]
    fn record_times_apply_gmt_offset() {
        assert_eq!(record_time(&TIME), 1_592_215_200);
        // 1970-01-01 00:00 at GMT+1 is 1969-12-31 23:00 UTC.
        assert_eq!(record_time(&[70, 1, 1, 0, 0, 0, 4]), -3600);
        assert_eq!(record_time(&[70, 13, 1, 0, 0, 0, 0]), 0);
        assert_eq!(record_time(&[1, 2]), 0);
    }

    #[test]
    fn directory_cycle_is_an_error() {
        let f = write_temp(&joliet_image(21));
        let err = IsoFs::open(f.path()).expect_err("cycle must fail");
        assert!(matches!(&err, IsoError::DirectoryCycle { dir, .. } if dir == "Sub Dir"), "{err}");
        assert!(err.is_bad_image());
        let msg = err.to_string();
        assert!(msg.contains("damaged or hostile") && msg.contains("twice") && msg.contains("cycle"), "{msg}");
    }

    #[test]
    fn a_directory_inside_another_is_a_cycle() {
        // The Joliet root covers sectors 21 and 22; "Sub Dir" starts at 22, inside it.
        let mut img = joliet_image(22);
        put(&mut img, 17, &descriptor(2, "JOLIET", 21, 4096));
        let f = write_temp(&img);
        let err = IsoFs::open(f.path()).expect_err("overlap");
        assert!(matches!(&err, IsoError::DirectoryCycle { dir, .. } if dir == "Sub Dir"), "{err}");
        assert!(err.to_string().contains("overlaps another"), "{err}");
    }

    #[test]
    fn limits_count_entries_and_extents() {
        use crate::media::iso::{LIMITS, Limit, Limits};
        let f = write_temp(&joliet_image(22));
        let over = |limits: Limits| {
            let err = IsoFs::open_with(f.path(), limits).expect_err("over a limit");
            err.limit().unwrap_or_else(|| panic!("not a limit: {err}"))
        };
        // Entries: Sub Dir, its file, a.txt, big file.bin. Extents: 1 + 1 + 2 (multi-extent).
        assert_eq!(over(Limits { entries: 3, ..LIMITS }), (Limit::Entries, 3));
        assert_eq!(over(Limits { extents: 3, ..LIMITS }), (Limit::Extents, 3));
        assert_eq!(over(Limits { listed_extents: 3, ..LIMITS }), (Limit::ListedExtents, 3));
        assert_eq!(over(Limits { dir_bytes: 2047, ..LIMITS }), (Limit::DirBytes, 2047));
        IsoFs::open_with(f.path(), Limits { entries: 4, extents: 4, listed_extents: 4, dir_bytes: 2048, ..LIMITS })
            .expect("exactly at the limits");
    }

    #[test]
    fn multi_extent_pieces_before_the_last_are_whole_sectors() {
        // "big file.bin" in pieces of 4000 and 100 bytes: the first must be whole sectors.
        let mut img = joliet_image(22);
        let first = record(32, 4096, FLAG_MULTI_EXTENT, &ucs2("big file.bin"), TIME);
        let at = img[21 * 2048..22 * 2048].windows(first.len()).position(|w| w == first).expect("the record");
        both32(&mut img, 21 * 2048 + at + 10, 4000);
        let f = write_temp(&img);
        let err = IsoFs::open(f.path()).expect_err("unaligned piece");
        assert!(matches!(&err, IsoError::UnalignedExtent { file, len: 4000, .. } if file == "/big file.bin"), "{err}");
        assert!(err.is_bad_image());
        assert!(err.to_string().contains("damaged or hostile"), "{err}");
    }

    #[test]
    fn corrupt_records_are_errors() {
        // A record whose name runs past the record (the third record of "Sub Dir", at byte 68).
        let mut img = joliet_image(22);
        img[22 * 2048 + 68 + 32] = 200;
        let f = write_temp(&img);
        let err = IsoFs::open(f.path()).expect_err("bad record");
        assert!(matches!(err, IsoError::BadIso9660 { .. }), "{err}");

        // File data past the end of the image.
        let mut img = joliet_image(22);
        img.truncate(40 * 2048);
        let f = write_temp(&img);
        let err = IsoFs::open(f.path()).expect_err("truncated");
        assert!(err.to_string().contains("past the end"), "{err}");

        // No descriptors at all.
        let f = write_temp(&vec![0u8; 40 * 2048]);
        assert!(matches!(IsoFs::open(f.path()), Err(IsoError::NotAnIso { .. })));
        let f = write_temp(b"");
        assert!(matches!(IsoFs::open(f.path()), Err(IsoError::NotAnIso { .. })));
        assert!(matches!(IsoFs::open(std::path::Path::new("/nonexistent/x.iso")), Err(IsoError::Open { .. })));
    }

    #[test]
    fn random_corruption_never_panics() {
        let base = joliet_image(22);
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..400 {
            let mut img = base.clone();
            for _ in 0..1 + next() % 4 {
                // Hit the descriptors and directories (sectors 16..24).
                let at = 16 * 2048 + (next() % (8 * 2048)) as usize;
                img[at] = next() as u8;
            }
            f.as_file_mut().set_len(0).expect("truncate");
            std::io::Seek::rewind(f.as_file_mut()).expect("rewind");
            f.write_all(&img).expect("write");
            if let Ok(fs) = IsoFs::open(f.path()) {
                for i in 0..fs.entries().len() {
                    if let Ok(r) = fs.open_file(i) {
                        let _ = r.take(1 << 20).read_to_end(&mut Vec::new());
                    }
                }
            }
        }
    }
}
