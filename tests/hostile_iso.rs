//! Hostile ISOs (issue 10): images of a few MiB that declare enough to make a naive reader use gigabytes or
//! minutes. Each is built here, byte by byte; the reader must refuse it naming the limit it went over, and a
//! real `woesafe write` of it must end with exit 3 within 10 s and 256 MiB (the peak of the largest process: woesafe, the worker or a helper), leaving
//! the target image as it was.

mod common;
use common::measure::{assert_write, measure_here};
use common::*;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use woesafe::media::iso::{IsoError, IsoFormat, IsoFs, LIMITS, Limit};

const SECTOR: usize = 2048;

/// An image under construction: sectors written anywhere, the rest zeros.
struct Img(Vec<u8>);

impl Img {
    fn new() -> Img {
        Img(Vec::new())
    }

    fn put(&mut self, sector: usize, bytes: &[u8]) {
        let at = sector * SECTOR;
        if self.0.len() < at + bytes.len() {
            self.0.resize(at + bytes.len(), 0);
        }
        self.0[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// Pads to whole sectors (and at least `sectors`) and writes the image to `path`.
    fn save(mut self, path: &Path, sectors: usize) -> PathBuf {
        let len = self.0.len().div_ceil(SECTOR).max(sectors) * SECTOR;
        self.0.resize(len, 0);
        std::fs::write(path, &self.0).unwrap();
        path.to_path_buf()
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

// ---------------------------------------------------------------------------------------------------------
// UDF (ECMA-167): just enough to make a volume the reader accepts.

/// First sector of the partition.
const PSTART: usize = 300;

/// Fills in the tag of descriptor `d` (its CRC covers all of `d` after the tag).
fn tag(d: &mut [u8], id: u16, loc: u32) {
    put16(d, 0, id);
    put16(d, 2, 2);
    put16(d, 6, 1);
    put16(d, 10, (d.len() - 16) as u16);
    put32(d, 12, loc);
    // CRC and checksum as the fuzz harness repairs them (bitwise, independent of the reader's table).
    woesafe::fuzzing::fix_udf_tag(d, 0);
}

fn short_ad(len: u32, kind: u32, lbn: u32) -> [u8; 8] {
    let mut a = [0u8; 8];
    put32(&mut a, 0, (kind << 30) | len);
    put32(&mut a, 4, lbn);
    a
}

/// A File Entry at block `lbn` of type `file_type` (4 directory, 5 file), `size` bytes, short_ads `ads`.
fn file_entry(lbn: u32, file_type: u8, size: u64, ads: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; 176 + ads.len()];
    put16(&mut d, 16 + 4, 4);
    put16(&mut d, 16 + 8, 1);
    d[16 + 11] = file_type;
    put64(&mut d, 56, size);
    put32(&mut d, 172, ads.len() as u32);
    d[176..].copy_from_slice(ads);
    tag(&mut d, 261, lbn);
    d
}

/// A File Identifier Descriptor naming `name` (Latin-1), its ICB at block `icb`.
fn fid(characteristics: u8, name: &str, icb: u32) -> Vec<u8> {
    let name: Vec<u8> = if name.is_empty() { Vec::new() } else { [&[8u8][..], name.as_bytes()].concat() };
    let used = 38 + name.len();
    let mut d = vec![0u8; (used + 3) & !3];
    put16(&mut d, 16, 1);
    d[18] = characteristics;
    d[19] = name.len() as u8;
    put32(&mut d, 20, 2048);
    put32(&mut d, 24, icb);
    d[38..used].copy_from_slice(&name);
    tag(&mut d, 257, 0);
    d
}

/// An Allocation Extent Descriptor at block `lbn` holding short_ads `ads`.
fn aed(lbn: u32, ads: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; 24 + ads.len()];
    put32(&mut d, 20, ads.len() as u32);
    d[24..].copy_from_slice(ads);
    tag(&mut d, 258, lbn);
    d
}

/// A UDF volume whose partition of `blocks` blocks starts at PSTART: recognition sequence, anchor, one volume
/// descriptor sequence at sector `vds` (`vds_sectors` long, as the anchor says), File Set Descriptor at block 0
/// naming the root ICB at block 1. The caller fills blocks 1 on.
fn udf_volume(blocks: u32, vds: u32, vds_sectors: u32) -> Img {
    let mut img = Img::new();
    for (i, id) in [b"BEA01", b"NSR02", b"TEA01"].into_iter().enumerate() {
        let mut d = vec![0u8; SECTOR];
        d[1..6].copy_from_slice(id);
        d[6] = 1;
        img.put(16 + i, &d);
    }
    let mut avdp = vec![0u8; 512];
    put32(&mut avdp, 16, vds_sectors * 2048);
    put32(&mut avdp, 20, vds);
    put32(&mut avdp, 24, vds_sectors * 2048);
    put32(&mut avdp, 28, vds);
    tag(&mut avdp, 2, 256);
    img.put(256, &avdp);

    let vds_at = vds as usize;
    let mut pvd = vec![0u8; 512];
    tag(&mut pvd, 1, vds);
    img.put(vds_at, &pvd);
    let mut pd = vec![0u8; 512];
    put16(&mut pd, 20, 1);
    pd[25..31].copy_from_slice(b"+NSR02");
    put32(&mut pd, 184, 1);
    put32(&mut pd, 188, PSTART as u32);
    put32(&mut pd, 192, blocks);
    tag(&mut pd, 5, vds + 1);
    img.put(vds_at + 1, &pd);
    let mut lvd = vec![0u8; 446];
    lvd[84] = 8;
    lvd[85..93].copy_from_slice(b"HOSTILE!");
    lvd[211] = 9;
    put32(&mut lvd, 212, 2048);
    put32(&mut lvd, 248, 2048);
    put32(&mut lvd, 264, 6);
    put32(&mut lvd, 268, 1);
    lvd[440..446].copy_from_slice(&[1, 6, 1, 0, 0, 0]);
    tag(&mut lvd, 6, vds + 2);
    img.put(vds_at + 2, &lvd);
    let mut td = vec![0u8; 512];
    tag(&mut td, 8, vds + 3);
    img.put(vds_at + 3, &td);

    let mut fsd = vec![0u8; 512];
    put32(&mut fsd, 400, 2048);
    put32(&mut fsd, 404, 1);
    tag(&mut fsd, 256, 0);
    img.put(PSTART, &fsd);
    img
}

/// A directory at block `lbn` whose records (`fids`, the parent entry first) start at block `data`.
fn udf_dir(img: &mut Img, lbn: u32, data: u32, parent: u32, fids: &[Vec<u8>]) {
    let mut bytes = fid(0x0A, "", parent);
    for f in fids {
        bytes.extend_from_slice(f);
    }
    let mut ads = Vec::new();
    let mut left = bytes.len() as u64;
    let mut at = data;
    while left > 0 {
        let n = left.min(1 << 29);
        ads.extend_from_slice(&short_ad(n as u32, 0, at));
        at += (n as usize).div_ceil(SECTOR) as u32;
        left -= n;
    }
    img.put(PSTART + lbn as usize, &file_entry(lbn, 4, bytes.len() as u64, &ads));
    img.put(PSTART + data as usize, &bytes);
}

/// `n` distinct short names: "0", "1", ... in base 36.
fn names(n: usize) -> impl Iterator<Item = String> {
    (0..n).map(|mut i| {
        let mut s = Vec::new();
        loop {
            s.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[i % 36]);
            i /= 36;
            if i == 0 {
                break;
            }
        }
        String::from_utf8(s).unwrap()
    })
}

/// A file at block `fe` whose data is a chain of `hops` allocation extent descriptors from block `fe + 1` on,
/// each holding `per_aed` unrecorded 2048-byte extents (the file's size is all of them, so every descriptor
/// is read), and `links` hard links to it in the root directory.
fn udf_aed_chain(dir: &Path, name: &str, hops: u32, per_aed: u32, links: usize) -> PathBuf {
    udf_aed_chain_of(dir, name, hops, per_aed, links, 2048)
}

/// `udf_aed_chain` with extents of `piece` bytes.
fn udf_aed_chain_of(dir: &Path, name: &str, hops: u32, per_aed: u32, links: usize, piece: u32) -> PathBuf {
    let fe = 10u32;
    let dir_data = fe + 1 + hops + 1;
    let fids: Vec<Vec<u8>> = names(links).map(|n| fid(0, &n, fe)).collect();
    let dir_bytes: usize = 40 + fids.iter().map(Vec::len).sum::<usize>();
    let blocks = dir_data + dir_bytes.div_ceil(SECTOR) as u32 + 1;
    let mut img = udf_volume(blocks, 32, 16);
    udf_dir(&mut img, 1, dir_data, 1, &fids);
    let size = u64::from(hops) * u64::from(per_aed) * u64::from(piece);
    // The File Entry itself holds only the pointer to the first descriptor.
    img.put(PSTART + fe as usize, &file_entry(fe, 5, size, &short_ad(2048, 3, fe + 1)));
    for h in 0..hops {
        let lbn = fe + 1 + h;
        let mut ads = Vec::new();
        for _ in 0..per_aed {
            ads.extend_from_slice(&short_ad(piece, 1, 0));
        }
        if h + 1 < hops {
            ads.extend_from_slice(&short_ad(2048, 3, lbn + 1));
        }
        img.put(PSTART + lbn as usize, &aed(lbn, &ads));
    }
    img.save(&dir.join(name), PSTART + blocks as usize)
}

/// A volume descriptor sequence that points back at itself: `sectors` implementation-use descriptors, then a
/// Volume Descriptor Pointer to its own start, for ever.
fn udf_vdp_loop(dir: &Path, sectors: u32) -> PathBuf {
    // After the partition (sectors 300..304), away from the anchor at 256.
    let vds = 400;
    let mut img = udf_volume(4, vds, sectors + 1);
    // Implementation Use Volume Descriptors (tag 4) keep the scan going; the PVD, PD and LVD stay, the
    // Terminating Descriptor goes.
    for s in vds + 3..vds + sectors {
        let mut iuvd = vec![0u8; 512];
        tag(&mut iuvd, 4, s);
        img.put(s as usize, &iuvd);
    }
    let mut vdp = vec![0u8; 512];
    put32(&mut vdp, 20, (sectors + 1) * 2048);
    put32(&mut vdp, 24, vds);
    tag(&mut vdp, 3, vds + sectors);
    img.put((vds + sectors) as usize, &vdp);
    // A root directory, so that only the loop can stop the reader.
    udf_dir(&mut img, 1, 2, 1, &[]);
    img.save(&dir.join("vdp-loop.iso"), (vds + sectors + 1) as usize)
}

/// `dirs` directories, each with `per_dir` hard links to one empty file: many entries, little data.
fn udf_many_entries(dir: &Path, name: &str, dirs: usize, per_dir: usize) -> PathBuf {
    let file = 2u32;
    let per_dir_bytes = 40 + per_dir * 44;
    let blocks_per_dir = per_dir_bytes.div_ceil(SECTOR) as u32;
    let first_data = 3 + 2 * dirs as u32;
    let blocks = first_data + blocks_per_dir * dirs as u32 + 1;
    let mut img = udf_volume(blocks, 32, 16);
    img.put(PSTART + file as usize, &file_entry(file, 5, 0, &[]));
    let links: Vec<Vec<u8>> = names(per_dir).map(|n| fid(0, &n, file)).collect();
    let mut root = Vec::new();
    for (d, n) in names(dirs).enumerate() {
        let icb = 3 + d as u32;
        root.push(fid(0x02, &format!("d{n}"), icb));
        udf_dir(&mut img, icb, first_data + d as u32 * blocks_per_dir, 1, &links);
    }
    udf_dir(&mut img, 1, 3 + dirs as u32, 1, &root);
    img.save(&dir.join(name), PSTART + blocks as usize)
}

/// `dirs` directories (distinct File Entries) that all list the same 16 MiB of records: hard links to one
/// empty file, each record carrying 2000 bytes of implementation use that its CRC covers. Every listing read
/// and checked 16 MiB again until the bound on metadata bytes read ended it; now directories keyed on the
/// bytes of their records are a cycle at the second.
fn udf_shared_directory_data(dir: &Path, dirs: usize) -> PathBuf {
    let file = 2u32;
    let data = 3 + dirs as u32 + 1;
    let mut records = Vec::new();
    for n in names(8000) {
        let name = [&[8u8][..], n.as_bytes()].concat();
        let used = 38 + 2000 + name.len();
        let mut d = vec![0u8; (used + 3) & !3];
        put16(&mut d, 16, 1);
        d[19] = name.len() as u8;
        put32(&mut d, 20, 2048);
        put32(&mut d, 24, file);
        put16(&mut d, 36, 2000);
        d[38 + 2000..used].copy_from_slice(&name);
        tag(&mut d, 257, 0);
        records.extend_from_slice(&d);
    }
    let data_blocks = records.len().div_ceil(SECTOR) as u32;
    let blocks = data + data_blocks + 1;
    let mut img = udf_volume(blocks, 32, 16);
    img.put(PSTART + file as usize, &file_entry(file, 5, 0, &[]));
    img.put(PSTART + data as usize, &records);
    let mut root = Vec::new();
    for (d, n) in names(dirs).enumerate() {
        let icb = 3 + d as u32;
        root.push(fid(0x02, &format!("d{n}"), icb));
        let ad = short_ad(records.len() as u32, 0, data);
        img.put(PSTART + icb as usize, &file_entry(icb, 4, records.len() as u64, &ad));
    }
    udf_dir(&mut img, 1, 3 + dirs as u32, 1, &root);
    img.save(&dir.join("shared-dirs.iso"), PSTART + blocks as usize)
}

/// `dirs` distinct directories of ~16 MiB each (under the limit of one directory's bytes): records of
/// 65,044 bytes, mostly implementation use (zeros, left out of the CRC and sparse in the file), naming an empty
/// file. No entry, extent, path or directory budget is near: only the bound on metadata bytes read stops the
/// reader. The image is sparse: ~16 MiB × `dirs` long, a few MiB on disk.
fn udf_distinct_large_directories(dir: &Path, dirs: usize) -> PathBuf {
    const IU: usize = 65_000;
    const PER_DIR: usize = 250;
    let file = 2u32;
    // One record: its 38-byte header (the tag's CRC covers only it) and its name after the implementation use.
    let header = |name_len: usize| {
        let mut d = vec![0u8; 38];
        put16(&mut d, 16, 1);
        d[19] = name_len as u8;
        put32(&mut d, 20, 2048);
        put32(&mut d, 24, file);
        put16(&mut d, 36, IU as u16);
        tag(&mut d, 257, 0);
        d
    };
    let mut records = Vec::new();
    let mut len = 0usize;
    for n in names(PER_DIR) {
        let name = [&[8u8][..], n.as_bytes()].concat();
        let used = 38 + IU + name.len();
        records.push((len, header(name.len()), name));
        len += (used + 3) & !3;
    }
    assert!(len as u64 <= LIMITS.dir_bytes, "{len}");
    let dir_blocks = len.div_ceil(SECTOR) as u32;
    let data = 3 + dirs as u32 + 1;
    let blocks = data + dir_blocks * dirs as u32;
    let mut img = udf_volume(blocks, 32, 16);
    img.put(PSTART + file as usize, &file_entry(file, 5, 0, &[]));
    let mut root = Vec::new();
    for (d, n) in names(dirs).enumerate() {
        let icb = 3 + d as u32;
        root.push(fid(0x02, &format!("d{n}"), icb));
        let ad = short_ad(len as u32, 0, data + d as u32 * dir_blocks);
        img.put(PSTART + icb as usize, &file_entry(icb, 4, len as u64, &ad));
    }
    udf_dir(&mut img, 1, 3 + dirs as u32, 1, &root);
    let path = img.save(&dir.join("large-dirs.iso"), PSTART + data as usize);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len((PSTART + blocks as usize + 1) as u64 * SECTOR as u64).unwrap();
    for d in 0..dirs as u64 {
        let base = (PSTART as u64 + u64::from(data) + d * u64::from(dir_blocks)) * SECTOR as u64;
        for (at, header, name) in &records {
            let at = base + *at as u64;
            f.write_all_at(header, at).unwrap();
            f.write_all_at(name, at + 38 + IU as u64).unwrap();
        }
    }
    path
}

/// Close to every volume-wide limit at once, and within them all: `dirs` directories of `per_dir` records each
/// (names `name_len` bytes long), the first `heavy_links` of them hard links to `files` files of 16 allocation
/// extent descriptors holding `per_aed` extents each, the others hard links to one empty file.
fn udf_near_limits(
    dir: &Path,
    dirs: usize,
    per_dir: usize,
    name_len: usize,
    files: u32,
    per_aed: u32,
    heavy_links: usize,
) -> PathBuf {
    let empty = 2u32;
    let first_file = 3u32;
    let first_aed = first_file + files;
    let first_dir = first_aed + 16 * files;
    let data = first_dir + dirs as u32;
    let mut listings = Vec::new();
    for d in 0..dirs {
        let mut records = Vec::new();
        for (k, n) in names(per_dir).enumerate() {
            let i = d * per_dir + k;
            let target = if i < heavy_links { first_file + i as u32 % files } else { empty };
            let long = format!("{n}-{}", "x".repeat(name_len - 1 - n.len()));
            records.extend_from_slice(&fid(0, &long, target));
        }
        listings.push(records);
    }
    let dir_blocks = listings[0].len().div_ceil(SECTOR) as u32;
    let root_data = data + dir_blocks * dirs as u32;
    let blocks = root_data + 2;
    let mut img = udf_volume(blocks, 32, 16);
    img.put(PSTART + empty as usize, &file_entry(empty, 5, 0, &[]));
    for f in 0..files {
        let fe = first_file + f;
        let aeds = first_aed + 16 * f;
        img.put(PSTART + fe as usize, &file_entry(fe, 5, u64::from(per_aed * 16) * 2048, &short_ad(2048, 3, aeds)));
        for h in 0..16 {
            let mut ads = Vec::new();
            for _ in 0..per_aed {
                ads.extend_from_slice(&short_ad(2048, 1, 0));
            }
            if h < 15 {
                ads.extend_from_slice(&short_ad(2048, 3, aeds + h + 1));
            }
            img.put(PSTART + (aeds + h) as usize, &aed(aeds + h, &ads));
        }
    }
    let mut root = Vec::new();
    for (d, (n, records)) in names(dirs).zip(&listings).enumerate() {
        let icb = first_dir + d as u32;
        root.push(fid(0x02, &format!("d{n}"), icb));
        let at = data + d as u32 * dir_blocks;
        img.put(
            PSTART + icb as usize,
            &file_entry(icb, 4, records.len() as u64, &short_ad(records.len() as u32, 0, at)),
        );
        img.put(PSTART + at as usize, records);
    }
    udf_dir(&mut img, 1, root_data, 1, &root);
    img.save(&dir.join("near-limits.iso"), PSTART + blocks as usize)
}

// ---------------------------------------------------------------------------------------------------------
// ISO 9660 (ECMA-119).

fn both32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    b[at + 4..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn both16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    b[at + 2..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// A directory record (flags 2: a directory).
fn record(lba: u32, len: u32, flags: u8, id: &[u8]) -> Vec<u8> {
    let l = 33 + id.len();
    let l = l + (l & 1);
    let mut r = vec![0u8; l];
    r[0] = l as u8;
    both32(&mut r, 2, lba);
    both32(&mut r, 10, len);
    r[18..25].copy_from_slice(&[120, 6, 15, 12, 0, 0, 0]);
    r[25] = flags;
    both16(&mut r, 28, 1);
    r[32] = id.len() as u8;
    r[33..].iter_mut().zip(id).for_each(|(d, s)| *d = *s);
    r
}

/// Records packed into sectors (none crossing a sector boundary), "." and ".." first.
fn dir_bytes(me: u32, parent: u32, records: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    let all = [record(me, 2048, 2, &[0]), record(parent, 2048, 2, &[1])].into_iter().chain(records);
    for r in all {
        if out.len() % SECTOR + r.len() > SECTOR {
            out.resize(out.len().div_ceil(SECTOR) * SECTOR, 0);
        }
        out.extend_from_slice(&r);
    }
    out.resize(out.len().div_ceil(SECTOR).max(1) * SECTOR, 0);
    out
}

/// A plain ISO 9660 volume whose root directory is `root_len` bytes at sector 20.
fn iso_volume(root_len: u32) -> Img {
    let mut img = Img::new();
    let mut d = vec![0u8; SECTOR];
    d[0] = 1;
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    d[40..72].fill(b' ');
    d[40..47].copy_from_slice(b"HOSTILE");
    both16(&mut d, 128, 2048);
    d[156..190].copy_from_slice(&record(20, root_len, 2, &[0]));
    img.put(16, &d);
    let mut t = vec![0u8; SECTOR];
    t[0] = 255;
    t[1..6].copy_from_slice(b"CD001");
    t[6] = 1;
    img.put(17, &t);
    img
}

/// Directories inside one another: a block of `sectors` sectors from sector 20 (the root directory), each
/// sector holding the records of directories that start at following sectors and run to the end of the block.
/// The first name of each directory ("A" + its sector) leads to the next sector, so a reader that keys its
/// cycle check on start sectors goes 1024 levels deep, each level holding the records of the whole rest of
/// the block.
fn iso_overlapping_dirs(dir: &Path, sectors: u32) -> PathBuf {
    let len = sectors * 2048;
    let mut img = iso_volume(len);
    for i in 0..sectors {
        let mut recs = Vec::new();
        if i + 1 < sectors {
            recs.push(record(20 + i + 1, len - (i + 1) * 2048, 2, format!("A{i:04}").as_bytes()));
        }
        for k in 0..44 {
            let target = (i + 2 + k) % sectors;
            recs.push(record(20 + target, len - target * 2048, 2, format!("B{i:04}_{k}").as_bytes()));
        }
        let bytes = dir_bytes(20 + i, 20, recs);
        img.put(20 + i as usize, &bytes[..SECTOR]);
    }
    img.save(&dir.join("overlap.iso"), 20 + sectors as usize)
}

/// Long paths: a chain of `depth` directories with 200-character Latin-1 names (400 bytes each in UTF-8),
/// then `siblings` directories at the bottom that all start inside one block of `files` file records.
fn iso_long_paths(dir: &Path, depth: u32, siblings: u32, files: usize) -> PathBuf {
    let name = |i: u32| {
        let mut n = vec![0xE9u8; 200];
        n[0] = b'A' + (i % 26) as u8;
        n
    };
    let mut img = iso_volume(2048);
    let chain_start = 20u32;
    // Sector 20 + i: directory at depth i, holding directory i + 1 (the last holds the siblings).
    let block = chain_start + depth + 1;
    let file_recs: Vec<Vec<u8>> = names(files).map(|n| record(0, 0, 0, format!("F{n}").as_bytes())).collect();
    let block_bytes = dir_bytes(block, block, file_recs);
    let block_sectors = (block_bytes.len() / SECTOR) as u32;
    for i in 0..=depth {
        let me = chain_start + i;
        let parent = if i == 0 { me } else { me - 1 };
        let recs = if i < depth {
            vec![record(me + 1, 2048, 2, &name(i))]
        } else {
            (0..siblings)
                .map(|k| {
                    let start = block + k.min(block_sectors - 1);
                    record(start, (block + block_sectors - start) * 2048, 2, format!("S{k}").as_bytes())
                })
                .collect()
        };
        img.put(me as usize, &dir_bytes(me, parent, recs));
    }
    img.put(block as usize, &block_bytes);
    img.save(&dir.join("long-paths.iso"), (block + block_sectors) as usize)
}

// ---------------------------------------------------------------------------------------------------------
// Running the reader and the binary.

/// Opens `iso` with the reader, timing it; asserts it fails over `want` (with the limit's value in the
/// message) within 10 s.
fn assert_refused(iso: &Path, want: Limit) -> IsoError {
    let t = Instant::now();
    let err = IsoFs::open(iso).expect_err("a hostile image must be refused");
    let took = t.elapsed();
    assert_eq!(err.limit(), Some((want, want.value(&LIMITS))), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("damaged or hostile"), "{msg}");
    assert!(msg.contains(&format!("limit of {} {want}", want.value(&LIMITS))), "{msg}");
    assert!(took < Duration::from_secs(10), "{} took {took:?}", iso.display());
    eprintln!("{}: refused in {took:?}: {msg}", iso.display());
    err
}

/// A measured write of `iso` to an existing 2 GiB image file: exit 3, `expect` in the message, the target
/// unchanged, at most 10 s and 256 MiB.
fn assert_write_refused(test: &str, iso: &Path, expect: &[&str]) {
    assert_write(test, iso, &[], 3, expect);
}

/// What woesafe says when the worker refused before touching the target.
const UNCHANGED: &str = "Target state: the target was not changed";

fn limit_text(l: Limit) -> String {
    format!("limit of {} {l}", l.value(&LIMITS))
}

// ---------------------------------------------------------------------------------------------------------
// The bombs.

/// Hard links to a file whose allocation extent chain is 4095 descriptors long (a million unrecorded extents):
/// once a memory bomb (each link re-parsed the chain) and a CPU bomb. The chain stops at the kernel's 16 hops.
#[test]
fn long_allocation_extent_chain_behind_hard_links() {
    measure_here();
    let work = tempfile::tempdir().unwrap();
    let iso = udf_aed_chain(work.path(), "aed-chain.iso", 4095, 250, 20_000);
    assert_refused(&iso, Limit::AedHops);
    // 16 hops still read.
    let ok = udf_aed_chain(work.path(), "aed-16.iso", 16, 250, 3);
    let fs = IsoFs::open(&ok).expect("a chain of 16 allocation extent descriptors is fine");
    assert_eq!(fs.entries().len(), 3);
    assert_eq!(fs.entries()[0].size, 16 * 250 * 2048);
    let too_long = udf_aed_chain(work.path(), "aed-17.iso", 17, 250, 1);
    assert_refused(&too_long, Limit::AedHops);
    if need_root("long_allocation_extent_chain_behind_hard_links (write)") {
        assert_write_refused(
            "long_allocation_extent_chain_behind_hard_links",
            &iso,
            &[UNCHANGED, "damaged or hostile", &limit_text(Limit::AedHops)],
        );
    }
}

/// 250 hard links to one file with 4,000 extents: parsed once, so they cost one extent list, not a million
/// extents (the file is fine; the ISO is then refused as not a Windows ISO). Parsed once per link, 66 links
/// would go over the limit of extents.
#[test]
fn hard_links_share_one_parse() {
    measure_here();
    let work = tempfile::tempdir().unwrap();
    let iso = udf_aed_chain(work.path(), "links.iso", 16, 250, 250);
    let t = Instant::now();
    let fs = IsoFs::open(&iso).expect("hard links within the limits");
    eprintln!("250 hard links opened in {:?}", t.elapsed());
    assert_eq!(fs.format(), IsoFormat::Udf);
    assert_eq!(fs.entries().len(), 250);
    assert!(fs.entries().iter().all(|e| !e.is_dir && e.size == 16 * 250 * 2048));
    // The file's 4,000 extents and the root directory's 1 are all that is parsed.
    let parsed_once = woesafe::media::iso::Limits { extents: 4001, ..LIMITS };
    IsoFs::open_with(&iso, parsed_once).expect("one parse for all the links");
    if need_root("hard_links_share_one_parse (write)") {
        assert_write_refused("hard_links_share_one_parse", &iso, &["does not look like a Windows installation ISO"]);
    }
}

/// 100,000 hard links to one file of 4,000 extents: parsed once, but each link is copied: 400 million reads
/// after the target is wiped. Now the extents of all listed files, each link counted, are a budget.
#[test]
fn hard_links_times_extents() {
    measure_here();
    let work = tempfile::tempdir().unwrap();
    let iso = udf_aed_chain(work.path(), "links.iso", 16, 250, 100_000);
    assert_refused(&iso, Limit::ListedExtents);
    if need_root("hard_links_times_extents (write)") {
        assert_write_refused(
            "hard_links_times_extents",
            &iso,
            &[UNCHANGED, "damaged or hostile", &limit_text(Limit::ListedExtents)],
        );
    }
}

/// 130,000 hard links to a file of 4,000 one-byte pieces: within the extent budgets at 2048 bytes a piece, but
/// a copy of one read per byte. Every piece but the last must be whole 2048-byte blocks (ECMA-167 4/12).
#[test]
fn one_byte_pieces_behind_hard_links() {
    measure_here();
    let work = tempfile::tempdir().unwrap();
    let iso = udf_aed_chain_of(work.path(), "bytes.iso", 16, 250, 130_000, 1);
    let t = Instant::now();
    let err = IsoFs::open(&iso).expect_err("1-byte pieces");
    let took = t.elapsed();
    assert!(matches!(&err, IsoError::UnalignedExtent { len: 1, .. }), "{err}");
    assert!(err.to_string().contains("damaged or hostile"), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    eprintln!("{}: refused in {took:?}: {err}", iso.display());
    if need_root("one_byte_pieces_behind_hard_links (write)") {
        assert_write_refused(
            "one_byte_pieces_behind_hard_links",
            &iso,
            &[UNCHANGED, "damaged or hostile", "not a whole number of 2048-byte blocks"],
        );
    }
}

/// Volume descriptor pointers that loop: 4096 hops of 1024 sectors once; now 64 hops (the kernel's nesting).
#[test]
fn looping_volume_descriptor_pointers() {
    measure_here();
    let work = tempfile::tempdir().unwrap();
    let iso = udf_vdp_loop(work.path(), 1023);
    assert_refused(&iso, Limit::VdpHops);
    if need_root("looping_volume_descriptor_pointers (write)") {
        assert_write_refused(
            "looping_volume_descriptor_pointers",
            &iso,
            &[UNCHANGED, "damaged or hostile", &limit_text(Limit::VdpHops)],
        );
    }
}

/// ISO 9660 directories starting at successive sectors of one block, each covering the rest: the cycle check
/// keyed on start sectors let every one through. Now overlapping directories are a cycle.
#[test]
fn overlapping_iso9660_directories() {
    measure_here();
    let work = tempfile::tempdir().unwrap();
    let iso = iso_overlapping_dirs(work.path(), 1024);
    let err = IsoFs::open(&iso).expect_err("overlapping directories");
    assert!(matches!(err, IsoError::DirectoryCycle { .. }), "{err}");
    assert!(err.to_string().contains("overlaps another"), "{err}");
    // Two sectors are enough: the second directory starts inside the first.
    let small = iso_overlapping_dirs(work.path(), 2);
    assert!(IsoFs::open(&small).expect_err("overlap").to_string().contains("overlaps another"));
    if need_root("overlapping_iso9660_directories (write)") {
        assert_write_refused(
            "overlapping_iso9660_directories",
            &iso,
            &[UNCHANGED, "damaged or hostile", "overlaps another", "directory cycle"],
        );
    }
}

/// Many entries with ~4 KiB paths: entries × path length was the only bound. Now all paths together are.
#[test]
fn long_paths_times_many_entries() {
    measure_here();
    let work = tempfile::tempdir().unwrap();
    let iso = iso_long_paths(work.path(), 9, 200, 12_000);
    assert_refused(&iso, Limit::PathBytes);
    if need_root("long_paths_times_many_entries (write)") {
        assert_write_refused(
            "long_paths_times_many_entries",
            &iso,
            &[UNCHANGED, "damaged or hostile", &limit_text(Limit::PathBytes)],
        );
    }
}

/// A million entries in one directory (40 MiB of records): over the limit of one directory's bytes.
#[test]
fn million_entries_in_one_directory() {
    measure_here();
    let work = tempfile::tempdir().unwrap();
    let iso = udf_many_entries(work.path(), "million.iso", 1, 1_000_000);
    assert_refused(&iso, Limit::DirBytes);
    if need_root("million_entries_in_one_directory (write)") {
        assert_write_refused(
            "million_entries_in_one_directory",
            &iso,
            &[UNCHANGED, "damaged or hostile", &limit_text(Limit::DirBytes)],
        );
    }
}

/// More entries than the volume-wide limit, spread over directories that are each within theirs.
#[test]
fn too_many_entries_in_the_volume() {
    measure_here();
    let work = tempfile::tempdir().unwrap();
    let iso = udf_many_entries(work.path(), "many.iso", 3, 100_000);
    assert_refused(&iso, Limit::Entries);
    if need_root("too_many_entries_in_the_volume (write)") {
        assert_write_refused(
            "too_many_entries_in_the_volume",
            &iso,
            &[UNCHANGED, "damaged or hostile", &limit_text(Limit::Entries)],
        );
    }
}

/// The test fixture (a Windows-shaped UDF + Joliet ISO from scripts/make-test-iso) is far inside every limit.
#[test]
fn real_shaped_iso_still_opens() {
    let fx = fixture();
    let fs = IsoFs::open(&fx.iso).expect("the fixture ISO opens");
    assert_eq!(fs.format(), IsoFormat::Udf);
    assert!(fs.entries().iter().any(|e| e.path.eq_ignore_ascii_case("sources/install.wim")));
    let files = std::fs::read_to_string(&fx.manifest).unwrap().lines().count();
    assert_eq!(fs.entries().iter().filter(|e| !e.is_dir).count(), files);
}

/// Directories that all list the same 16 MiB of records: each listing read them again, until the bound on
/// metadata read stopped the reader. Now directories whose records overlap are a cycle, found at the second.
#[test]
fn directories_sharing_records_are_a_cycle() {
    measure_here();
    let work = tempfile::tempdir().unwrap();
    let iso = udf_shared_directory_data(work.path(), 20);
    let t = Instant::now();
    let err = IsoFs::open(&iso).expect_err("shared records");
    let took = t.elapsed();
    assert!(matches!(&err, IsoError::DirectoryCycle { dir, .. } if dir == "d1"), "{err}");
    assert!(err.to_string().contains("damaged or hostile"), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    eprintln!("{}: refused in {took:?}: {err}", iso.display());
    if need_root("directories_sharing_records_are_a_cycle (write)") {
        let expect = [UNCHANGED, "damaged or hostile", "directory cycle"];
        assert_write_refused("directories_sharing_records_are_a_cycle", &iso, &expect);
    }
}

/// Distinct directories of ~16 MiB each, 18 of them: only the bound on metadata read stops the reader.
#[test]
fn metadata_read_is_bounded() {
    measure_here();
    let work = tempfile::tempdir().unwrap();
    let iso = udf_distinct_large_directories(work.path(), 18);
    assert_refused(&iso, Limit::MetadataBytes);
    if need_root("metadata_read_is_bounded (write)") {
        let expect = [UNCHANGED, "damaged or hostile", &limit_text(Limit::MetadataBytes)];
        assert_write_refused("metadata_read_is_bounded", &iso, &expect);
    }
}

/// An image just inside every volume-wide budget at once (128,004 entries, 7.7 MiB of paths, 65 files of 3,984
/// extents each, linked 263 times in all): it opens, and a write of it (refused: not a Windows ISO) stays
/// within 10 s and 256 MiB.
#[test]
fn just_inside_every_limit() {
    measure_here();
    let work = tempfile::tempdir().unwrap();
    let iso = udf_near_limits(work.path(), 4, 32_000, 60, 65, 249, 263);
    let t = Instant::now();
    let fs = IsoFs::open(&iso).expect("inside every limit");
    eprintln!("opened {} entries in {:?}", fs.entries().len(), t.elapsed());
    assert_eq!(fs.entries().len(), 4 + 4 * 32_000);
    let path_bytes: usize = fs.entries().iter().map(|e| e.path.len()).sum();
    assert!(path_bytes as u64 > LIMITS.path_bytes * 9 / 10, "{path_bytes}");
    assert!(fs.entries().len() as u64 > LIMITS.entries * 9 / 10);
    drop(fs);
    // Both extent budgets are more than 90 % used: 65 × 3,984 parsed, 263 × 3,984 listed.
    for (limit, limits) in [
        (Limit::Extents, woesafe::media::iso::Limits { extents: LIMITS.extents * 9 / 10, ..LIMITS }),
        (
            Limit::ListedExtents,
            woesafe::media::iso::Limits { listed_extents: LIMITS.listed_extents * 9 / 10, ..LIMITS },
        ),
    ] {
        let err = IsoFs::open_with(&iso, limits).expect_err("over 90 %");
        assert_eq!(err.limit(), Some((limit, limit.value(&limits))), "{err}");
    }
    if need_root("just_inside_every_limit (write)") {
        assert_write_refused("just_inside_every_limit", &iso, &["does not look like a Windows installation ISO"]);
    }
}

/// Entries a stick cannot hold (a symbolic link named like the answer file, pointing at /etc/shadow; a FIFO)
/// are left out, and the user is told so, naming them escaped: never silently dropped, never followed.
#[test]
fn skipped_entries_are_said() {
    measure_here();
    if !need_root("skipped_entries_are_said") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let blocks = 8;
    let mut img = udf_volume(blocks, 32, 16);
    // A symbolic link (ICB file type 12) whose data would be "/etc/shadow", and a FIFO (type 9).
    let target = b"/etc/shadow";
    img.put(PSTART + 2, &file_entry(2, 12, target.len() as u64, &short_ad(target.len() as u32, 0, 5)));
    img.put(PSTART + 5, target);
    img.put(PSTART + 3, &file_entry(3, 9, 0, &[]));
    udf_dir(&mut img, 1, 4, 1, &[fid(0, "autounattend.xml", 2), fid(0, "pipe\u{1b}[2J", 3)]);
    let iso = img.save(&work.path().join("links.iso"), PSTART + blocks as usize);
    let fs = IsoFs::open(&iso).expect("links and FIFOs are left out, not errors");
    assert!(fs.entries().is_empty(), "{:?}", fs.entries());
    let out = woesafe(&[
        "write",
        iso.to_str().unwrap(),
        work.path().join("out.img").to_str().unwrap(),
        "--size",
        "64M",
        "--yes",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the ISO holds 1 entry of a kind a Windows stick cannot hold (symbolic link, e.g. /autounattend.xml): not copied"),
        "{err}"
    );
    assert!(err.contains("(FIFO, e.g. /pipe\\x1b[2J)"), "{err}");
    assert!(!out.stderr.contains(&0x1b), "{err}");
    // Nothing else is in it: refused as not a Windows ISO, before anything was written.
    assert_eq!(out.status.code(), Some(3), "{err}");
}
