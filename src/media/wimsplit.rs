//! The streaming WIM split: cuts a non-solid install.wim into install.swm, install2.swm, … parts the way
//! `wimlib-imagex split WIM SWM 4000` does, byte for byte but for the split set's GUID, without a scratch file
//! or a wimlib process. The parts are planned from the WIM's header, blob table and XML alone, so every part's
//! size is known before anything is written; while the copy engine writes a part, its bytes are read straight
//! from the WIM (through the ISO reader) and the few bytes of its own (header, blob table, XML, integrity
//! table) come from memory.
//!
//! What wimlib does, learned by running it and comparing bytes (DESIGN.md has the details):
//! - Blobs go into parts in the order of their offsets in the WIM, the images' metadata resources first (they
//!   are all in part 1). A new part starts when the next resource would bring the part's resource bytes to
//!   the part size or beyond, unless the part is still empty (so one resource larger than the part size gets a
//!   part to itself).
//! - Each part: header, the part's compressed resources as they are stored, then its uncompressed ones (in a
//!   compressed WIM; in WIM order within each group), in part 1 the metadata resources in image order, then
//!   the blob table (metadata entries first, then the others in the order written), the XML data (the same in
//!   every part, re-serialized as wimlib's XML writer does) and, when the WIM had one, an integrity table.
//! - Header: the WIM's read-only and reparse-point-fix flags, "spanned" when there is more than one part, the
//!   compression flags, chunk size and image count of the WIM, no boot image.
//!
//! One difference is deliberate: a resource stored uncompressed in a compressed WIM is copied as it is, where
//! wimlib tries to compress it again (and keeps it uncompressed when that does not make it smaller, which is
//! what happens to the incompressible data such resources hold). Both are valid WIMs.

use std::io::{Read, Seek, SeekFrom};

use sha1::{Digest, Sha1};

/// The WIM header's size on disk.
pub const HEADER_SIZE: u64 = 208;
const ENTRY_SIZE: u64 = 50;
const VERSION_DEFAULT: u32 = 0x10D00;
const VERSION_SOLID: u32 = 0xE00;

const HDR_COMPRESSION: u32 = 0x0000_0002;
const HDR_READONLY: u32 = 0x0000_0004;
const HDR_SPANNED: u32 = 0x0000_0008;
const HDR_RP_FIX: u32 = 0x0000_0080;
const HDR_XPRESS: u32 = 0x0002_0000;
const HDR_LZX: u32 = 0x0004_0000;
const HDR_LZMS: u32 = 0x0008_0000;
const HDR_XPRESS_2: u32 = 0x0020_0000;

const RES_METADATA: u8 = 0x02;
const RES_COMPRESSED: u8 = 0x04;
const RES_SOLID: u8 = 0x10;

/// wimlib's integrity table chunk.
const INTEGRITY_CHUNK: u64 = 10 << 20;

/// Bounds on what a WIM may declare (it is hostile input): a blob table of 64 MiB (1.3 million entries) and
/// the XML of a multi-edition install.wim is a few hundred KiB. `wim::inspect` reads WIMs within the same bounds.
pub const MAX_TABLE_BYTES: u64 = 64 << 20;
pub const MAX_XML_BYTES: u64 = 4 << 20;
/// The most blob table entries the split plans: a Windows 11 multi-edition install.wim has 100 000 to 300 000;
/// the plan keeps about 120 bytes for each while it is made (48 in the blob list, 50 in the part's blob table,
/// 24 in a piece when its resource does not follow the one before in the WIM), so that a WIM at the bound is
/// planned and written in about 130 MiB (measured: tests/hostile_wim.rs).
pub const MAX_BLOBS: u64 = 1_000_000;
/// Bounds on the XML document's shape: nodes in all, and attributes on one element (real ones have one or two).
const MAX_XML_NODES: usize = 200_000;
const MAX_XML_ATTRS: usize = 64;
/// wimlib's own limit on images.
const MAX_IMAGES: u32 = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("cannot read the WIM: {0}")]
    Read(#[from] std::io::Error),
    #[error("not a WIM file (no MSWIM signature)")]
    NotWim,
    /// Splittable after a re-pack (`wimlib-imagex export` into a plain WIM).
    #[error("it cannot be split as it is: {0}")]
    NeedsRepack(String),
    #[error("the WIM is damaged or hostile: {0}")]
    Damaged(String),
}

fn damaged<T>(what: impl Into<String>) -> Result<T, SplitError> {
    Err(SplitError::Damaged(what.into()))
}

/// A resource header as the WIM stores it (24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct ResHdr {
    size_in_wim: u64,
    flags: u8,
    offset: u64,
    uncompressed: u64,
}

impl ResHdr {
    fn parse(b: &[u8]) -> ResHdr {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
        let word = u64_at(0);
        ResHdr {
            size_in_wim: word & 0x00FF_FFFF_FFFF_FFFF,
            flags: (word >> 56) as u8,
            offset: u64_at(8),
            uncompressed: u64_at(16),
        }
    }

    fn put(&self, out: &mut Vec<u8>) {
        out.extend(((u64::from(self.flags) << 56) | self.size_in_wim).to_le_bytes());
        out.extend(self.offset.to_le_bytes());
        out.extend(self.uncompressed.to_le_bytes());
    }

    fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.size_in_wim)
    }
}

/// A blob of the WIM: where it is stored, and what its table entry says. Kept in 48 bytes (a WIM may have a
/// million of them): the resource header's first word as stored, then its offset and uncompressed size.
#[derive(Debug, Clone)]
struct Blob {
    size_and_flags: u64,
    offset: u64,
    uncompressed: u64,
    refcnt: u32,
    hash: [u8; 20],
}

impl Blob {
    fn new(res: ResHdr, refcnt: u32, hash: [u8; 20]) -> Blob {
        let size_and_flags = (u64::from(res.flags) << 56) | res.size_in_wim;
        Blob { size_and_flags, offset: res.offset, uncompressed: res.uncompressed, refcnt, hash }
    }
    fn res(&self) -> ResHdr {
        ResHdr {
            size_in_wim: self.size_and_flags & 0x00FF_FFFF_FFFF_FFFF,
            flags: (self.size_and_flags >> 56) as u8,
            offset: self.offset,
            uncompressed: self.uncompressed,
        }
    }
    fn size(&self) -> u64 {
        self.size_and_flags & 0x00FF_FFFF_FFFF_FFFF
    }
    fn flags(&self) -> u8 {
        (self.size_and_flags >> 56) as u8
    }
}

/// One stretch of a part's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Bytes of our own (header, blob table, XML).
    Bytes(std::sync::Arc<Vec<u8>>),
    /// Bytes of the WIM, from this offset.
    Copy { offset: u64, len: u64 },
    /// The integrity table: SHA-1 of every 10 MiB of the part from the end of the header to the end of the
    /// blob table, computed while those bytes go by.
    Integrity { checked_end: u64 },
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Bytes(b) => b.len() as u64,
            Piece::Copy { len, .. } => *len,
            Piece::Integrity { checked_end } => integrity_table_size(*checked_end),
        }
    }
}

fn integrity_table_size(checked_end: u64) -> u64 {
    12 + 20 * (checked_end - HEADER_SIZE).div_ceil(INTEGRITY_CHUNK)
}

/// One part of the split set: its number (1-based), its exact size and how to make its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub number: u16,
    pub size: u64,
    pieces: Vec<Piece>,
}

/// The whole split set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPlan {
    /// Shared with the copy engine's tree, which reads each part while it is copied.
    pub parts: Vec<std::sync::Arc<Part>>,
    pub guid: [u8; 16],
}

/// The WIM's facts the split needs.
struct Wim {
    flags: u32,
    chunk_size: u32,
    compressed: bool,
    image_count: u32,
    /// The bootable image (1-based), 0 for none: kept only when the "split" makes one part.
    boot_index: u32,
    has_integrity: bool,
    xml: std::sync::Arc<Vec<u8>>,
    metadata: Vec<Blob>,
    blobs: Vec<Blob>,
}

/// Plan the split of the WIM in `r` into parts whose resources take less than `part_bytes` each (wimlib's
/// rule; `wimlib-imagex split … 4000` means 4000 MiB), all carrying the split set's `guid`.
pub fn plan<R: Read + Seek>(r: &mut R, part_bytes: u64, guid: [u8; 16]) -> Result<SplitPlan, SplitError> {
    let wim = read_wim(r)?;
    layout(&wim, part_bytes, guid)
}

/// The SHA-1 hashes of the WIM's file blobs, as its blob table lists them (the table read with the same checks
/// and bounds as for a split): a file extracted from the WIM has one of them (for verification).
pub fn blob_hashes<R: Read + Seek>(r: &mut R) -> Result<Vec<[u8; 20]>, SplitError> {
    Ok(read_wim(r)?.blobs.iter().map(|b| b.hash).collect())
}

fn read_wim<R: Read + Seek>(r: &mut R) -> Result<Wim, SplitError> {
    let mut h = [0u8; HEADER_SIZE as usize];
    r.seek(SeekFrom::Start(0))?;
    r.read_exact(&mut h).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SplitError::NotWim,
        _ => SplitError::Read(e),
    })?;
    let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap_or_default());
    let u16_at = |o: usize| u16::from_le_bytes(h[o..o + 2].try_into().unwrap_or_default());
    match &h[0..8] {
        b"MSWIM\0\0\0" => {}
        b"WLPWM\0\0\0" => return Err(SplitError::NeedsRepack("it is a pipable WIM".into())),
        _ => return Err(SplitError::NotWim),
    }
    if u32_at(8) as u64 != HEADER_SIZE {
        return damaged(format!("its header size is {} bytes, not 208", u32_at(8)));
    }
    match u32_at(12) {
        VERSION_DEFAULT => {}
        VERSION_SOLID => {
            return Err(SplitError::NeedsRepack("it has solid (LZMS) resources, as install.esd files do".into()));
        }
        v => return damaged(format!("unknown WIM version {v:#x}")),
    }
    let flags = u32_at(16);
    let chunk_size = u32_at(20);
    let (part, total) = (u16_at(40), u16_at(42));
    if (part, total) != (1, 1) {
        return damaged(format!("it is already part {part} of a {total}-part split WIM"));
    }
    let compressed = flags & HDR_COMPRESSION != 0;
    let (min_chunk, max_chunk) = if !compressed {
        (0, 0)
    } else if flags & HDR_LZX != 0 {
        (1 << 15, 1 << 21)
    } else if flags & (HDR_XPRESS | HDR_XPRESS_2) != 0 {
        (1 << 12, 1 << 16)
    } else if flags & HDR_LZMS != 0 {
        return Err(SplitError::NeedsRepack("it is LZMS-compressed".into()));
    } else {
        return damaged("its header names no known compression type");
    };
    if !(chunk_size == 0 || chunk_size.is_power_of_two()) || chunk_size < min_chunk || chunk_size > max_chunk {
        return damaged(format!("chunk size {chunk_size} is not valid for its compression type"));
    }
    let image_count = u32_at(44);
    if image_count == 0 || image_count > MAX_IMAGES {
        return damaged(format!("its header says {image_count} images"));
    }
    let boot_index = u32_at(120);
    if boot_index > image_count {
        return damaged(format!("its boot image {boot_index} is not one of its {image_count} images"));
    }
    let file_size = r.seek(SeekFrom::End(0))?;
    let table_hdr = ResHdr::parse(&h[48..72]);
    let xml_hdr = ResHdr::parse(&h[72..96]);
    let integrity_hdr = ResHdr::parse(&h[124..148]);

    // The blob table and the XML data: uncompressed, inside the file, of bounded size.
    let check_table = |res: &ResHdr, what: &str, max: u64| -> Result<(), SplitError> {
        if res.flags & RES_COMPRESSED != 0 {
            return Err(SplitError::NeedsRepack(format!("its {what} is compressed")));
        }
        if res.size_in_wim != res.uncompressed || res.end().is_none_or(|end| end > file_size) {
            return damaged(format!("its {what} lies outside the file"));
        }
        if res.size_in_wim > max {
            return damaged(format!("its {what} is {} bytes, over woesafe's limit of {max}", res.size_in_wim));
        }
        Ok(())
    };
    let read_table = |r: &mut R, res: &ResHdr| -> Result<Vec<u8>, SplitError> {
        let mut buf = vec![0u8; res.size_in_wim as usize];
        r.seek(SeekFrom::Start(res.offset))?;
        r.read_exact(&mut buf)?;
        Ok(buf)
    };
    // Both bounds are checked before either is read.
    check_table(&table_hdr, "blob table", MAX_TABLE_BYTES)?;
    check_table(&xml_hdr, "XML data", MAX_XML_BYTES)?;
    let raw_xml = read_table(r, &xml_hdr)?;
    let (xml, xml_images) = wimlib_xml(&raw_xml).map_err(|e| SplitError::Damaged(format!("its XML data: {e}")))?;
    drop(raw_xml);
    if xml_images != image_count {
        return damaged(format!("its header says {image_count} images and its XML data {xml_images}"));
    }

    // The blob table, read as wimlib reads it: entries it ignores are left out of the split too.
    // It is read a slice at a time, and each blob kept in 48 bytes.
    let entries = table_hdr.size_in_wim / ENTRY_SIZE;
    if entries > MAX_BLOBS {
        return damaged(format!("its blob table has {entries} entries, over woesafe's limit of {MAX_BLOBS}"));
    }
    let mut metadata = Vec::new();
    let mut blobs = Vec::with_capacity(entries as usize);
    let mut slice = vec![0u8; ENTRY_SIZE as usize * 1310];
    let mut left = entries * ENTRY_SIZE;
    r.seek(SeekFrom::Start(table_hdr.offset))?;
    while left > 0 {
        let n = left.min(slice.len() as u64) as usize;
        r.read_exact(&mut slice[..n])?;
        left -= n as u64;
        for e in slice[..n].chunks_exact(ENTRY_SIZE as usize) {
            read_entry(e, compressed, file_size, image_count, &mut metadata, &mut blobs)?;
        }
    }
    drop(slice);
    dedup_by_hash(&mut blobs);
    if metadata.len() != image_count as usize {
        return damaged(format!("it has metadata for {} of its {image_count} images", metadata.len()));
    }
    // Resources do not overlap in a WIM: together they fit in the file. This also bounds every sum the layout
    // makes (a crafted table could otherwise declare sizes that add up past 2^64).
    let total = metadata.iter().chain(&blobs).try_fold(0u64, |sum, b| sum.checked_add(b.size()));
    if total.is_none_or(|t| t > file_size) {
        return damaged("its resources add up to more than the file holds");
    }
    // wimlib visits blobs in the order they are stored.
    blobs.sort_unstable_by_key(|b| b.offset);
    Ok(Wim {
        flags,
        chunk_size,
        compressed,
        image_count,
        boot_index,
        has_integrity: integrity_hdr.offset != 0,
        xml: xml.into(),
        metadata,
        blobs,
    })
}

/// One entry of the blob table, read as wimlib reads it: entries it ignores are left out of the split too.
/// (Blobs with the same hash are dropped later but for the first, `dedup_by_hash`.)
fn read_entry(
    e: &[u8],
    compressed: bool,
    file_size: u64,
    image_count: u32,
    metadata: &mut Vec<Blob>,
    blobs: &mut Vec<Blob>,
) -> Result<(), SplitError> {
    let mut res = ResHdr::parse(&e[..24]);
    res.flags &= !RES_SOLID; // not used in this WIM version
    let part_number = u16::from_le_bytes([e[24], e[25]]);
    let refcnt = u32::from_le_bytes([e[26], e[27], e[28], e[29]]);
    let hash: [u8; 20] = e[30..50].try_into().unwrap_or_default();
    let is_compressed = res.flags & RES_COMPRESSED != 0;
    if !is_compressed && res.size_in_wim != res.uncompressed {
        return damaged("an uncompressed resource's sizes disagree");
    }
    if hash == [0; 20] || res.uncompressed == 0 || part_number != 1 {
        return Ok(());
    }
    if res.end().is_none_or(|end| end > file_size) {
        return damaged(format!("a resource at offset {} lies outside the file", res.offset));
    }
    if is_compressed && !compressed {
        return Err(SplitError::NeedsRepack("it holds compressed resources but says it is uncompressed".into()));
    }
    let blob = Blob::new(res, refcnt, hash);
    if res.flags & RES_METADATA != 0 {
        match refcnt {
            0 => return Ok(()),
            1 => {}
            _ => return damaged("an image's metadata is shared"),
        }
        if metadata.len() < image_count as usize {
            metadata.push(blob);
        }
    } else {
        blobs.push(blob);
    }
    Ok(())
}

/// Drop the blobs whose hash an earlier blob (in table order, the order of `blobs`) has, as wimlib does: by
/// sorting their indices (4 bytes a blob) rather than with a set of hashes (the 20-byte hashes again, and more).
fn dedup_by_hash(blobs: &mut Vec<Blob>) {
    let mut order: Vec<u32> = (0..blobs.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| blobs[a as usize].hash.cmp(&blobs[b as usize].hash).then(a.cmp(&b)));
    let mut dup = vec![false; blobs.len()];
    for w in order.windows(2) {
        if blobs[w[0] as usize].hash == blobs[w[1] as usize].hash {
            dup[w[1] as usize] = true;
        }
    }
    drop(order);
    let mut i = 0;
    blobs.retain(|_| {
        i += 1;
        !dup[i - 1]
    });
    blobs.shrink_to_fit();
}

/// Which part each blob goes into, and then each part's bytes.
fn layout(wim: &Wim, part_bytes: u64, guid: [u8; 16]) -> Result<SplitPlan, SplitError> {
    // Assign: metadata first (always part 1), then the blobs in WIM order; each part takes a run of them.
    let mut ranges = vec![std::ops::Range { start: 0, end: 0 }];
    let mut used = 0u64;
    for m in &wim.metadata {
        used += m.size();
    }
    for (i, b) in wim.blobs.iter().enumerate() {
        let size = b.size();
        if used.saturating_add(size) >= part_bytes && used != 0 {
            ranges.push(i..i);
            used = 0;
        }
        used += size;
        ranges.last_mut().expect("one part at least").end = i + 1;
    }
    let Ok(total) = u16::try_from(ranges.len()) else {
        return damaged(format!("it would split into {} parts, more than a WIM can number", ranges.len()));
    };
    let mut flags = wim.flags & (HDR_RP_FIX | HDR_READONLY);
    if total != 1 {
        flags |= HDR_SPANNED;
    }
    if wim.compressed {
        flags |= HDR_COMPRESSION | if wim.flags & HDR_LZX != 0 { HDR_LZX } else { HDR_XPRESS };
    }
    // A resource as written at `at`: as stored when compressed, or uncompressed with only the metadata flag.
    let written = |b: &Blob, at: u64| {
        let raw = wim.compressed && b.flags() & RES_COMPRESSED != 0;
        let flags = if raw { b.flags() } else { b.flags() & RES_METADATA };
        ResHdr { offset: at, flags, ..b.res() }
    };
    let put_entry = |table: &mut Vec<u8>, res: &ResHdr, number: u16, refcnt: u32, hash: &[u8; 20]| {
        res.put(table);
        table.extend(number.to_le_bytes());
        table.extend(refcnt.to_le_bytes());
        table.extend(hash);
    };
    let parts = ranges
        .into_iter()
        .enumerate()
        .map(|(i, range)| {
            let number = i as u16 + 1;
            let blobs = &wim.blobs[range];
            let metadata: &[Blob] = if number == 1 { &wim.metadata } else { &[] };
            // The compressed resources first, then the others, each in WIM order; then the metadata.
            let first = |b: &&Blob| !wim.compressed || b.flags() & RES_COMPRESSED != 0;
            let order = || blobs.iter().filter(first).chain(blobs.iter().filter(|b| !first(b))).chain(metadata);
            // One piece for each run of resources that lie one after the other in the WIM too (a real WIM's
            // are mostly such runs), counted first so that the pieces take no more memory than they need.
            let mut next = None;
            let runs = order()
                .filter(|b| {
                    let starts_run = next != Some(b.offset);
                    next = Some(b.offset + b.size());
                    starts_run
                })
                .count();
            let mut pieces = Vec::with_capacity(runs + 4);
            pieces.push(Piece::Bytes(vec![0u8; HEADER_SIZE as usize].into()));
            for b in order() {
                match pieces.last_mut() {
                    Some(Piece::Copy { offset, len }) if *offset + *len == b.offset => *len += b.size(),
                    _ => pieces.push(Piece::Copy { offset: b.offset, len: b.size() }),
                }
            }
            // The blob table, written straight from the blobs: the metadata entries first (they are written
            // after the other resources), then the others in the order written.
            let mut table = Vec::with_capacity((metadata.len() + blobs.len()) * ENTRY_SIZE as usize);
            let mut at = HEADER_SIZE + blobs.iter().map(Blob::size).sum::<u64>();
            let mut metadata_entries = Vec::with_capacity(metadata.len());
            for m in metadata {
                let res = written(m, at);
                put_entry(&mut table, &res, number, 1, &m.hash);
                metadata_entries.push(res);
                at += m.size();
            }
            let mut blob_at = HEADER_SIZE;
            for b in order().take(blobs.len()) {
                put_entry(&mut table, &written(b, blob_at), number, b.refcnt, &b.hash);
                blob_at += b.size();
            }
            let len = table.len() as u64;
            let table_hdr = ResHdr { size_in_wim: len, flags: RES_METADATA, offset: at, uncompressed: len };
            pieces.push(Piece::Bytes(table.into()));
            at += len;
            let xml_len = wim.xml.len() as u64;
            let xml_hdr = ResHdr { size_in_wim: xml_len, flags: RES_METADATA, offset: at, uncompressed: xml_len };
            pieces.push(Piece::Bytes(wim.xml.clone()));
            at += xml_len;
            let mut integrity_hdr = ResHdr::default();
            if wim.has_integrity {
                let piece = Piece::Integrity { checked_end: table_hdr.offset + len };
                let size = piece.len();
                integrity_hdr = ResHdr { size_in_wim: size, flags: 0, offset: at, uncompressed: size };
                pieces.push(piece);
                at += size;
            }
            let mut h = Vec::with_capacity(HEADER_SIZE as usize);
            h.extend(b"MSWIM\0\0\0");
            h.extend((HEADER_SIZE as u32).to_le_bytes());
            h.extend(VERSION_DEFAULT.to_le_bytes());
            h.extend(flags.to_le_bytes());
            h.extend(wim.chunk_size.to_le_bytes());
            h.extend(guid);
            h.extend(number.to_le_bytes());
            h.extend(total.to_le_bytes());
            h.extend(wim.image_count.to_le_bytes());
            table_hdr.put(&mut h);
            xml_hdr.put(&mut h);
            // A split set has no boot image; a single part keeps the WIM's.
            let boot = if total == 1 { wim.boot_index } else { 0 };
            match boot {
                0 => ResHdr::default().put(&mut h),
                b => metadata_entries[b as usize - 1].put(&mut h),
            }
            h.extend(boot.to_le_bytes());
            integrity_hdr.put(&mut h);
            h.resize(HEADER_SIZE as usize, 0);
            pieces[0] = Piece::Bytes(h.into());
            std::sync::Arc::new(Part { number, size: at, pieces })
        })
        .collect();
    Ok(SplitPlan { parts, guid })
}

impl Part {
    /// A reader of this part's bytes, taking the WIM's bytes from `wim`.
    pub fn reader<W: Read + Seek>(&self, wim: W) -> PartReader<'_, W> {
        let integrity = self.pieces.iter().find_map(|p| match p {
            Piece::Integrity { checked_end } => Some(Integrity { end: *checked_end, chunk: None, sums: Vec::new() }),
            _ => None,
        });
        PartReader { part: self, wim, piece: 0, in_piece: 0, pos: 0, wim_pos: None, integrity }
    }
}

/// Reads a part from start to end.
pub struct PartReader<'a, W> {
    part: &'a Part,
    wim: W,
    piece: usize,
    in_piece: u64,
    pos: u64,
    /// Where the WIM reader stands, so that consecutive resources need no seek.
    wim_pos: Option<u64>,
    integrity: Option<Integrity>,
}

/// The integrity table being computed: SHA-1 of each 10 MiB from the end of the header to `end`.
struct Integrity {
    end: u64,
    chunk: Option<(Sha1, u64)>,
    sums: Vec<[u8; 20]>,
}

impl Integrity {
    /// Feed the bytes the part emits at `pos`.
    fn feed(&mut self, mut pos: u64, mut bytes: &[u8]) {
        while !bytes.is_empty() && pos < self.end {
            if pos < HEADER_SIZE {
                let skip = (HEADER_SIZE - pos).min(bytes.len() as u64) as usize;
                bytes = &bytes[skip..];
                pos += skip as u64;
                continue;
            }
            let (hasher, filled) = self.chunk.get_or_insert_with(|| (Sha1::new(), 0));
            let take = (INTEGRITY_CHUNK - *filled).min(self.end - pos).min(bytes.len() as u64) as usize;
            hasher.update(&bytes[..take]);
            *filled += take as u64;
            pos += take as u64;
            bytes = &bytes[take..];
            if *filled == INTEGRITY_CHUNK || pos == self.end {
                let (hasher, _) = self.chunk.take().expect("a chunk being hashed");
                self.sums.push(hasher.finalize().into());
            }
        }
    }

    fn table(&self) -> std::io::Result<Vec<u8>> {
        let chunks = (self.end - HEADER_SIZE).div_ceil(INTEGRITY_CHUNK);
        if self.sums.len() as u64 != chunks {
            return Err(std::io::Error::other("the part was not read in order: no integrity table"));
        }
        let size = integrity_table_size(self.end);
        let mut table = Vec::with_capacity(size as usize);
        table.extend((size as u32).to_le_bytes());
        table.extend((chunks as u32).to_le_bytes());
        table.extend((INTEGRITY_CHUNK as u32).to_le_bytes());
        for s in &self.sums {
            table.extend(s);
        }
        Ok(table)
    }
}

impl<W: Read + Seek> Read for PartReader<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(piece) = self.part.pieces.get(self.piece) else { return Ok(0) };
            let left = piece.len() - self.in_piece;
            if left == 0 {
                self.piece += 1;
                self.in_piece = 0;
                continue;
            }
            if buf.is_empty() {
                return Ok(0);
            }
            let want = (buf.len() as u64).min(left) as usize;
            let from = self.in_piece as usize;
            let n = match piece {
                Piece::Bytes(b) => {
                    buf[..want].copy_from_slice(&b[from..from + want]);
                    want
                }
                Piece::Copy { offset, .. } => {
                    let at = offset + self.in_piece;
                    if self.wim_pos != Some(at) {
                        self.wim_pos = None;
                        self.wim.seek(SeekFrom::Start(at))?;
                    }
                    self.wim_pos = None; // until the read succeeds: a failed read may have moved the reader
                    let n = self.wim.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("the WIM ended at byte {at}, inside a resource"),
                        ));
                    }
                    self.wim_pos = Some(at + n as u64);
                    n
                }
                Piece::Integrity { .. } => {
                    let table = self.integrity.as_ref().map(Integrity::table).transpose()?.unwrap_or_default();
                    buf[..want].copy_from_slice(&table[from..from + want]);
                    want
                }
            };
            if let Some(i) = self.integrity.as_mut() {
                i.feed(self.pos, &buf[..n]);
            }
            self.in_piece += n as u64;
            self.pos += n as u64;
            return Ok(n);
        }
    }
}

/// The WIM's XML data as wimlib 1.13 (Debian 12's; it parses and writes it with libxml2) writes it into each
/// part: UTF-16LE after a byte-order mark, without an XML declaration, with comments, processing
/// instructions and CDATA kept, line ends made `\n`, references resolved and escaped again the way libxml2
/// escapes them, empty elements written `<X/>`, and a `\n` after each top-level node. Returns those bytes and
/// the number of IMAGE elements (whose INDEX attributes must number them 1..n).
/// (wimlib 1.14 has an XML writer of its own, which differs only in this serialization.)
pub fn wimlib_xml(raw: &[u8]) -> Result<(Vec<u8>, u32), String> {
    let units: Vec<u16> = raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let mut text: Vec<char> = Vec::with_capacity(units.len());
    let mut after_cr = false;
    for c in char::decode_utf16(units) {
        let c = c.map_err(|_| "it is not valid UTF-16".to_string())?;
        match c {
            '\0' => break, // the end, as wimlib reads it
            // Line ends: "\r\n" and a lone "\r" both become "\n".
            '\n' if after_cr => {}
            '\r' => text.push('\n'),
            c => text.push(c),
        }
        after_cr = c == '\r';
    }
    let mut p = Parser { s: &text, i: 0, nodes: 0 };
    if p.peek() == '\u{feff}' {
        p.i += 1;
    }
    if p.at("<?xml") && p.s.get(p.i + 5).is_some_and(|&c| is_ws(c)) && !p.find_and_skip("?>") {
        return Err("an unterminated XML declaration".into());
    }
    let mut top = Vec::new();
    p.misc(&mut top)?;
    if p.at("<!DOCTYPE") {
        return Err("a DOCTYPE declaration (woesafe does not split such WIMs)".into());
    }
    let root = p.element(0)?;
    let images = match &root {
        Node::Element { name, attrs: _, children } if name == "WIM" => {
            let esd_encrypted = children.iter().any(|c| {
                matches!(c, Node::Element { name, children, .. } if name == "ESD"
                    && children.iter().any(|g| matches!(g, Node::Element { name, .. } if name == "ENCRYPTED")))
            });
            if esd_encrypted {
                return Err("it is encrypted (ESD/ENCRYPTED)".into());
            }
            children
                .iter()
                .filter_map(|c| match c {
                    Node::Element { name, attrs, .. } if name == "IMAGE" => {
                        Some(attrs.iter().find(|(k, _)| k == "INDEX").map_or(0, |(_, v)| parse_number(v)))
                    }
                    _ => None,
                })
                .collect::<Vec<u64>>()
        }
        Node::Element { name, .. } => return Err(format!("the root element is {name}, not WIM")),
        _ => return Err("no root element".into()),
    };
    top.push(root);
    p.misc(&mut top)?;
    if p.i != text.len() {
        return Err("text after the root element".into());
    }
    let mut sorted = images.clone();
    sorted.sort_unstable();
    if sorted.iter().enumerate().any(|(i, &x)| x != i as u64 + 1) {
        return Err("its IMAGE elements are not numbered 1 to n".into());
    }
    let mut out = String::from('\u{feff}');
    for node in &top {
        node.write(&mut out);
        out.push('\n');
    }
    Ok((out.encode_utf16().flat_map(|u| u.to_le_bytes()).collect(), images.len() as u32))
}

/// A node of the XML document.
#[derive(Debug)]
enum Node {
    Element { name: String, attrs: Vec<(String, String)>, children: Vec<Node> },
    Text(String),
    CData(String),
    Comment(String),
    Pi { target: String, data: String },
}

impl Node {
    fn write(&self, out: &mut String) {
        match self {
            Node::Element { name, attrs, children } => {
                out.push('<');
                out.push_str(name);
                // libxml2 writes namespace declarations before the other attributes.
                let is_ns = |k: &str| k == "xmlns" || k.starts_with("xmlns:");
                for (k, v) in attrs.iter().filter(|(k, _)| is_ns(k)).chain(attrs.iter().filter(|(k, _)| !is_ns(k))) {
                    out.push(' ');
                    out.push_str(k);
                    out.push_str("=\"");
                    for c in v.chars() {
                        match c {
                            '<' => out.push_str("&lt;"),
                            '>' => out.push_str("&gt;"),
                            '&' => out.push_str("&amp;"),
                            '"' => out.push_str("&quot;"),
                            '\n' => out.push_str("&#10;"),
                            '\r' => out.push_str("&#13;"),
                            '\t' => out.push_str("&#9;"),
                            c => out.push(c),
                        }
                    }
                    out.push('"');
                }
                if children.is_empty() {
                    out.push_str("/>");
                    return;
                }
                out.push('>');
                for c in children {
                    c.write(out);
                }
                out.push_str("</");
                out.push_str(name);
                out.push('>');
            }
            Node::Text(t) => {
                for c in t.chars() {
                    match c {
                        '<' => out.push_str("&lt;"),
                        '>' => out.push_str("&gt;"),
                        '&' => out.push_str("&amp;"),
                        '\r' => out.push_str("&#13;"),
                        c => out.push(c),
                    }
                }
            }
            Node::CData(t) => {
                out.push_str("<![CDATA[");
                out.push_str(t);
                out.push_str("]]>");
            }
            Node::Comment(t) => {
                out.push_str("<!--");
                out.push_str(t);
                out.push_str("-->");
            }
            Node::Pi { target, data } => {
                out.push_str("<?");
                out.push_str(target);
                if !data.is_empty() {
                    out.push(' ');
                    out.push_str(data);
                }
                out.push_str("?>");
            }
        }
    }
}

struct Parser<'a> {
    s: &'a [char],
    i: usize,
    /// Nodes made so far (bounded by MAX_XML_NODES).
    nodes: usize,
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\n' | '\r' | '\t')
}

/// How deep elements may nest (libxml2's default limit).
const MAX_XML_DEPTH: usize = 256;

impl Parser<'_> {
    fn peek(&self) -> char {
        self.s.get(self.i).copied().unwrap_or('\0')
    }
    fn at(&self, pat: &str) -> bool {
        pat.chars().enumerate().all(|(k, c)| self.s.get(self.i + k) == Some(&c))
    }
    fn skip(&mut self, pat: &str) -> bool {
        let ok = self.at(pat);
        if ok {
            self.i += pat.chars().count();
        }
        ok
    }
    /// Move past the next `pat`; false (at the end) when there is none.
    fn find_and_skip(&mut self, pat: &str) -> bool {
        while self.i < self.s.len() {
            if self.skip(pat) {
                return true;
            }
            self.i += 1;
        }
        false
    }
    fn skip_ws(&mut self) {
        while is_ws(self.peek()) {
            self.i += 1;
        }
    }
    fn upto(&mut self, end: &str, what: &str) -> Result<String, String> {
        let from = self.i;
        if !self.find_and_skip(end) {
            return Err(format!("an unterminated {what}"));
        }
        Ok(self.s[from..self.i - end.chars().count()].iter().collect())
    }
    fn name(&mut self) -> Result<String, String> {
        let from = self.i;
        while !is_ws(self.peek()) && !matches!(self.peek(), '>' | '/' | '=' | '?' | '<' | '\0') {
            self.i += 1;
        }
        if self.i == from {
            return Err("malformed XML (a missing name)".into());
        }
        Ok(self.s[from..self.i].iter().collect())
    }
    fn count_node(&mut self) -> Result<(), String> {
        self.nodes += 1;
        if self.nodes > MAX_XML_NODES {
            return Err(format!("more than {MAX_XML_NODES} XML nodes"));
        }
        Ok(())
    }

    fn comment_or_pi(&mut self) -> Result<Option<Node>, String> {
        if self.skip("<!--") {
            self.count_node()?;
            return Ok(Some(Node::Comment(self.upto("-->", "comment")?)));
        }
        if self.skip("<?") {
            self.count_node()?;
            let target = self.name()?;
            self.skip_ws();
            let data = self.upto("?>", "processing instruction")?;
            return Ok(Some(Node::Pi { target, data }));
        }
        Ok(None)
    }
    /// Comments, processing instructions and white space outside the root element.
    fn misc(&mut self, top: &mut Vec<Node>) -> Result<(), String> {
        loop {
            self.skip_ws();
            match self.comment_or_pi()? {
                Some(n) => top.push(n),
                None => return Ok(()),
            }
        }
    }

    /// Text with its references resolved: the five predefined entities and character references.
    fn unescape(raw: &[char]) -> Result<String, String> {
        let mut out = String::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            if raw[i] != '&' {
                out.push(raw[i]);
                i += 1;
                continue;
            }
            let end = raw[i..].iter().take(32).position(|&c| c == ';').ok_or("a '&' that starts no reference")?;
            let name: String = raw[i + 1..i + end].iter().collect();
            let c = match name.as_str() {
                "lt" => '<',
                "gt" => '>',
                "amp" => '&',
                "apos" => '\'',
                "quot" => '"',
                n if n.starts_with('#') => {
                    char_ref(&n[1..]).ok_or_else(|| format!("the bad character reference &{n};"))?
                }
                n => return Err(format!("the entity '{n}', which is not defined")),
            };
            out.push(c);
            i += end + 1;
        }
        Ok(out)
    }

    fn element(&mut self, depth: usize) -> Result<Node, String> {
        let bad = |what: &str| Err(format!("malformed XML ({what})"));
        if depth >= MAX_XML_DEPTH {
            return bad("nested too deeply");
        }
        self.count_node()?;
        if !self.skip("<") {
            return bad("expected an element");
        }
        let name = self.name()?;
        let mut attrs: Vec<(String, String)> = Vec::new();
        loop {
            let had_ws = is_ws(self.peek());
            self.skip_ws();
            if matches!(self.peek(), '/' | '>') {
                break;
            }
            if !had_ws {
                return bad("attributes without white space between them");
            }
            let k = self.name()?;
            self.skip_ws();
            if !self.skip("=") {
                return bad("an attribute without a value");
            }
            self.skip_ws();
            let quote = self.peek();
            if quote != '"' && quote != '\'' {
                return bad("an unquoted attribute value");
            }
            self.i += 1;
            let from = self.i;
            while self.peek() != quote {
                if self.i >= self.s.len() || self.peek() == '<' {
                    return bad("an unterminated attribute value");
                }
                self.i += 1;
            }
            // Attribute-value normalization: literal white space becomes a space (references are kept).
            let literal: Vec<char> = self.s[from..self.i].iter().map(|&c| if is_ws(c) { ' ' } else { c }).collect();
            self.i += 1;
            if attrs.len() >= MAX_XML_ATTRS {
                return bad("too many attributes on one element");
            }
            if attrs.iter().any(|(a, _)| *a == k) {
                return bad("an attribute given twice");
            }
            attrs.push((k, Self::unescape(&literal)?));
        }
        let mut children = Vec::new();
        if self.skip("/>") {
            return Ok(Node::Element { name, attrs, children });
        }
        if !self.skip(">") {
            return bad("a '/' that does not close the tag");
        }
        loop {
            let from = self.i;
            while self.peek() != '<' {
                if self.i >= self.s.len() {
                    return bad("an unterminated element");
                }
                self.i += 1;
            }
            if self.i > from {
                self.count_node()?;
                children.push(Node::Text(Self::unescape(&self.s[from..self.i])?));
            }
            if self.skip("</") {
                if self.name()? != name {
                    return bad("an end tag that does not match");
                }
                self.skip_ws();
                if !self.skip(">") {
                    return bad("an unterminated end tag");
                }
                break;
            }
            if self.skip("<![CDATA[") {
                self.count_node()?;
                children.push(Node::CData(self.upto("]]>", "CDATA section")?));
            } else if let Some(n) = self.comment_or_pi()? {
                children.push(n);
            } else if self.at("<!") {
                return bad("an unknown <! construct");
            } else {
                children.push(self.element(depth + 1)?);
            }
        }
        Ok(Node::Element { name, attrs, children })
    }
}

/// The character of a reference (`65`, `x41`: the text after `&#`), when it is one XML allows.
fn char_ref(digits: &str) -> Option<char> {
    let (radix, digits) = match digits.strip_prefix('x') {
        Some(hex) => (16, hex),
        None => (10, digits),
    };
    if digits.is_empty() || digits.len() > 8 || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let c = char::from_u32(u32::from_str_radix(digits, radix).ok()?)?;
    // XML's Char production: no NUL or other control characters but tab, line feed and carriage return, and
    // no U+FFFE or U+FFFF.
    let allowed = matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{fffe}' && c != '\u{ffff}');
    allowed.then_some(c)
}

/// wimlib's number parsing for INDEX: leading decimal digits, 0 when there are none.
fn parse_number(s: &str) -> u64 {
    s.chars()
        .take_while(|c| c.is_ascii_digit())
        .fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d as u8 - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// An uncompressed WIM of one image: its metadata resource, then one 1-byte blob at each of `offsets`
    /// (past the end of the table and XML, the bytes there the blobs' own), with the given hashes.
    fn wim(blobs: &[(u64, u8)]) -> Vec<u8> {
        let xml: Vec<u8> =
            "\u{feff}<WIM><IMAGE INDEX=\"1\"/></WIM>".encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let table_len = (blobs.len() as u64 + 1) * ENTRY_SIZE;
        let data = HEADER_SIZE + table_len + xml.len() as u64;
        let entry = |t: &mut Vec<u8>, offset: u64, flags: u8, hash: u8| {
            ResHdr { size_in_wim: 1, flags, offset: data + offset, uncompressed: 1 }.put(t);
            t.extend(1u16.to_le_bytes());
            t.extend(1u32.to_le_bytes());
            t.extend([hash; 20]);
        };
        let mut table = Vec::new();
        entry(&mut table, 0, RES_METADATA, 0xFF);
        for &(offset, hash) in blobs {
            entry(&mut table, offset, 0, hash);
        }
        let mut h = vec![0u8; HEADER_SIZE as usize];
        h[0..8].copy_from_slice(b"MSWIM\0\0\0");
        h[8..12].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        h[12..16].copy_from_slice(&VERSION_DEFAULT.to_le_bytes());
        h[40..44].copy_from_slice(&[1, 0, 1, 0]);
        h[44..48].copy_from_slice(&1u32.to_le_bytes());
        let xml_len = xml.len() as u64;
        let mut hdrs = Vec::new();
        ResHdr { size_in_wim: table_len, flags: 0, offset: HEADER_SIZE, uncompressed: table_len }.put(&mut hdrs);
        ResHdr { size_in_wim: xml_len, flags: 0, offset: HEADER_SIZE + table_len, uncompressed: xml_len }
            .put(&mut hdrs);
        h[48..96].copy_from_slice(&hdrs);
        let end = blobs.iter().map(|b| b.0 + 1).max().unwrap_or(1);
        h.extend(table);
        h.extend(xml);
        h.resize((data + end) as usize, 0xAB);
        h
    }

    fn copies(part: &Part) -> Vec<(u64, u64)> {
        part.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Copy { offset, len } => Some((*offset, *len)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn resources_that_follow_each_other_share_a_piece() {
        // Blobs at 1, 2, 3 and 5, 6 (and the metadata at 0, written last): three runs to copy.
        let w = wim(&[(1, 1), (2, 2), (3, 3), (5, 4), (6, 5)]);
        let data =
            u64::from_le_bytes(w[80..88].try_into().unwrap()) + u64::from_le_bytes(w[88..96].try_into().unwrap());
        let plan = plan(&mut Cursor::new(&w), 4000 << 20, [7; 16]).unwrap();
        assert_eq!(copies(&plan.parts[0]), vec![(data + 1, 3), (data + 5, 2), (data, 1)]);
        // The part still holds every resource, and a table entry for each.
        let mut bytes = Vec::new();
        plan.parts[0].reader(Cursor::new(&w)).read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, plan.parts[0].size);
        let table_len = u64::from_le_bytes(bytes[48..56].try_into().unwrap()) & 0x00FF_FFFF_FFFF_FFFF;
        assert_eq!(table_len, 6 * ENTRY_SIZE);
    }

    #[test]
    fn duplicate_hashes_keep_the_first_in_table_order() {
        // Hash 2 twice (the first at offset 9), hash 1 twice (the first at 4): the later ones are dropped,
        // wherever they lie in the WIM.
        let w = wim(&[(9, 2), (4, 1), (1, 2), (7, 3), (2, 1)]);
        let data =
            u64::from_le_bytes(w[80..88].try_into().unwrap()) + u64::from_le_bytes(w[88..96].try_into().unwrap());
        let plan = plan(&mut Cursor::new(&w), 4000 << 20, [7; 16]).unwrap();
        assert_eq!(copies(&plan.parts[0]), vec![(data + 4, 1), (data + 7, 1), (data + 9, 1), (data, 1)]);
    }

    #[test]
    fn too_many_blobs_are_refused_before_they_are_read() {
        // One entry over the bound (the metadata's included): refused, naming the bound.
        let blobs: Vec<(u64, u8)> = (0..MAX_BLOBS).map(|i| (2 * i + 1, (i % 255) as u8)).collect();
        let err = plan(&mut Cursor::new(wim(&blobs)), 4000 << 20, [7; 16]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SplitError::Damaged(_)), "{msg}");
        assert!(msg.contains("damaged or hostile") && msg.contains("over woesafe's limit of 1000000"), "{msg}");
    }
}
