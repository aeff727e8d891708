//! UDF (ECMA-167, OSTA UDF 1.02–2.01) side of the ISO reader: anchor, volume descriptor sequence, partitions, file set, ICBs and directories.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use super::{
    Child, Extent, FileExtents, Image, IsoError, IsoFormat, Limit, SECTOR, Skipped, Volume, civil_to_unix, latin1,
    truncate_extents, unaligned_piece, utf16be, walk,
};

// Descriptor tag identifiers (ECMA-167 3/7.2.1 and 4/7.2.1).
const TAG_PVD: u16 = 1;
const TAG_AVDP: u16 = 2;
const TAG_VDP: u16 = 3;
const TAG_PD: u16 = 5;
const TAG_LVD: u16 = 6;
const TAG_TD: u16 = 8;
const TAG_FSD: u16 = 256;
const TAG_FID: u16 = 257;
const TAG_AED: u16 = 258;
const TAG_FE: u16 = 261;
const TAG_EFE: u16 = 266;

// ICB file types (ECMA-167 4/14.6.6).
const FILE_TYPE_DIR: u8 = 4;
const FILE_TYPE_FILE: u8 = 5;

/// What an entry of ICB file type `t` is, for the user (ECMA-167 4/14.6.6, OSTA UDF 2.3.5.2).
fn file_type_name(t: u8) -> &'static str {
    match t {
        1 => "unallocated space entry",
        2 => "partition integrity entry",
        3 => "indirect entry",
        6 => "block device",
        7 => "character device",
        8 => "extended attributes",
        9 => "FIFO",
        10 => "socket",
        11 => "terminal entry",
        12 => "symbolic link",
        13 => "stream directory",
        248 => "virtual allocation table",
        249 => "real-time file",
        250 => "metadata file",
        251 => "metadata mirror file",
        252 => "metadata bitmap file",
        _ => "entry of unknown type",
    }
}

/// Most sectors of one volume descriptor sequence (or one extent of it, between pointers) we scan.
const MAX_VDS_SECTORS: u64 = 1024;

fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

fn tag_name(id: u16) -> &'static str {
    match id {
        1 => "Primary Volume Descriptor",
        2 => "Anchor Volume Descriptor Pointer",
        3 => "Volume Descriptor Pointer",
        4 => "Implementation Use Volume Descriptor",
        5 => "Partition Descriptor",
        6 => "Logical Volume Descriptor",
        7 => "Unallocated Space Descriptor",
        8 => "Terminating Descriptor",
        9 => "Logical Volume Integrity Descriptor",
        256 => "File Set Descriptor",
        257 => "File Identifier Descriptor",
        258 => "Allocation Extent Descriptor",
        259 => "Indirect Entry",
        260 => "Terminal Entry",
        261 => "File Entry",
        262 => "Extended Attribute Header Descriptor",
        263 => "Unallocated Space Entry",
        264 => "Space Bitmap Descriptor",
        265 => "Partition Integrity Entry",
        266 => "Extended File Entry",
        _ => "unknown descriptor",
    }
}

const fn crc_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static CRC_TABLE: [u16; 256] = crc_table();

/// CRC-ITU-T (polynomial 0x1021, initial 0) used by descriptor tags.
fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| (crc << 8) ^ CRC_TABLE[usize::from((crc >> 8) as u8 ^ b)])
}

/// Checks a descriptor tag: identifier, checksum, CRC and (if `loc` is given) location.
/// `buf` starts at the tag and holds at least the whole descriptor.
fn check_tag(buf: &[u8], want: u16, loc: Option<u32>) -> Result<(), String> {
    if buf.len() < 16 {
        return Err(format!("{} truncated", tag_name(want)));
    }
    let sum = buf[..16].iter().enumerate().filter(|&(i, _)| i != 4).fold(0u8, |s, (_, &b)| s.wrapping_add(b));
    let id = le16(buf, 0);
    if id != want {
        return Err(format!("expected a {} (tag {want}), found tag {id} ({})", tag_name(want), tag_name(id)));
    }
    if sum != buf[4] {
        return Err(format!("{} has a bad tag checksum ({:#04x}, computed {sum:#04x})", tag_name(want), buf[4]));
    }
    let crc_len = usize::from(le16(buf, 10));
    let Some(body) = buf.get(16..16 + crc_len) else {
        return Err(format!("{} has a CRC length ({crc_len}) past its end", tag_name(want)));
    };
    let crc = crc16(body);
    if crc != le16(buf, 8) {
        return Err(format!("{} has a bad CRC ({:#06x}, computed {crc:#06x})", tag_name(want), le16(buf, 8)));
    }
    if let Some(loc) = loc
        && le32(buf, 12) != loc
    {
        return Err(format!("{} records location {} but was read at block {loc}", tag_name(want), le32(buf, 12)));
    }
    Ok(())
}

/// OSTA compressed unicode (UDF 2.1.1): compression id 8 = Latin-1, 16 = UTF-16BE.
fn osta(bytes: &[u8]) -> Result<String, String> {
    match bytes.split_first() {
        None => Ok(String::new()),
        Some((8 | 254, rest)) => Ok(latin1(rest)),
        Some((16 | 255, rest)) => Ok(utf16be(rest)),
        Some((id, _)) => Err(format!("unknown OSTA compression id {id}")),
    }
}

/// A fixed-size dstring field: the last byte is the used length.
fn dstring(field: &[u8]) -> String {
    let Some((&used, body)) = field.split_last() else {
        return String::new();
    };
    let used = usize::from(used).min(body.len());
    osta(&body[..used]).unwrap_or_default().trim_end_matches(['\0', ' ']).to_string()
}

/// A UDF timestamp (ECMA-167 1/7.3) as Unix seconds UTC; 0 if it is not a valid date.
fn timestamp(b: &[u8]) -> i64 {
    if b.len() < 12 {
        return 0;
    }
    let type_tz = le16(b, 0);
    let kind = type_tz >> 12;
    let mut tz = i64::from(type_tz & 0x0FFF);
    if tz & 0x800 != 0 {
        tz -= 0x1000;
    }
    let offset_min = if kind == 1 && tz != -2047 && (-1440..=1440).contains(&tz) { tz } else { 0 };
    let year = i64::from(le16(b, 2) as i16);
    civil_to_unix(year, u32::from(b[4]), u32::from(b[5]), u32::from(b[6]), u32::from(b[7]), u32::from(b[8]))
        .map_or(0, |t| t - offset_min * 60)
}

/// An extent_ad: length in bytes and first sector.
#[derive(Debug, Clone, Copy)]
struct ExtentAd {
    len: u32,
    loc: u32,
}

fn extent_ad(b: &[u8], at: usize) -> ExtentAd {
    ExtentAd { len: le32(b, at), loc: le32(b, at + 4) }
}

/// The location of a long_ad: block and partition reference.
#[derive(Debug, Clone, Copy)]
struct LongAd {
    lbn: u32,
    part: u16,
}

fn long_ad(b: &[u8], at: usize) -> LongAd {
    LongAd { lbn: le32(b, at + 4), part: le16(b, at + 8) }
}

/// The Anchor Volume Descriptor Pointer at sector 256 (or, failing that, at N-256 or N-1).
fn find_anchor(image: &Image) -> Result<Result<(ExtentAd, ExtentAd), String>, IsoError> {
    let last = (image.len() / SECTOR).saturating_sub(1);
    let mut spots = vec![256];
    for s in [last.saturating_sub(256), last] {
        if s > 256 && !spots.contains(&s) {
            spots.push(s);
        }
    }
    let mut first_err = None;
    for s in spots {
        let Some(buf) = image.sector(s)? else {
            first_err.get_or_insert_with(|| format!("image ends before sector {s}"));
            continue;
        };
        match check_tag(&buf, TAG_AVDP, u32::try_from(s).ok()) {
            Ok(()) => return Ok(Ok((extent_ad(&buf, 16), extent_ad(&buf, 24)))),
            Err(e) => {
                first_err.get_or_insert_with(|| format!("sector {s}: {e}"));
            }
        }
    }
    Ok(Err(first_err.unwrap_or_default()))
}

/// Whether a valid Anchor Volume Descriptor Pointer is present.
pub(crate) fn has_anchor(image: &Image) -> Result<bool, IsoError> {
    Ok(find_anchor(image)?.is_ok())
}

/// What the volume descriptor sequence holds that we use.
#[derive(Debug, Default)]
struct Vds {
    /// Volume identifier of the Primary Volume Descriptor, with its sequence number.
    pvd: Option<(u32, String)>,
    /// Partition descriptors: (sequence number, partition number, start sector, length in sectors).
    partitions: Vec<(u32, u16, u32, u32)>,
    /// The Logical Volume Descriptor with the highest sequence number, and that number.
    lvd: Option<(u32, Vec<u8>)>,
}

fn read_vds(image: &Image, ext: ExtentAd) -> Result<Result<Vds, String>, IsoError> {
    let mut vds = Vds::default();
    let mut loc = u64::from(ext.loc);
    let mut count = (u64::from(ext.len) / SECTOR).min(MAX_VDS_SECTORS);
    let mut hops = 0;
    let mut i = 0;
    while i < count {
        let sector = loc + i;
        i += 1;
        let Some(buf) = image.sector(sector)? else {
            return Ok(Err(format!("volume descriptor sequence runs past the end of the image (sector {sector})")));
        };
        let here = u32::try_from(sector).ok();
        let id = le16(&buf, 0);
        let seq = le32(&buf, 16);
        match id {
            TAG_PVD | TAG_PD | TAG_LVD | TAG_VDP | TAG_TD => {
                if let Err(e) = check_tag(&buf, id, here) {
                    return Ok(Err(format!("sector {sector}: {e}")));
                }
            }
            _ => {}
        }
        match id {
            TAG_PVD => {
                if vds.pvd.as_ref().is_none_or(|(s, _)| seq >= *s) {
                    vds.pvd = Some((seq, dstring(&buf[24..56])));
                }
            }
            TAG_PD => {
                let number = le16(&buf, 22);
                let start = le32(&buf, 188);
                let len = le32(&buf, 192);
                match vds.partitions.iter_mut().find(|p| p.1 == number) {
                    Some(p) if seq >= p.0 => *p = (seq, number, start, len),
                    Some(_) => {}
                    None => vds.partitions.push((seq, number, start, len)),
                }
            }
            TAG_LVD => {
                if vds.lvd.as_ref().is_none_or(|(s, _)| seq >= *s) {
                    vds.lvd = Some((seq, buf));
                }
            }
            TAG_VDP => {
                hops += 1;
                if hops > image.limits().vdp_hops {
                    return Err(image.over(Limit::VdpHops, format!("volume descriptor pointer at sector {sector}")));
                }
                let next = extent_ad(&buf, 20);
                loc = u64::from(next.loc);
                count = (u64::from(next.len) / SECTOR).min(MAX_VDS_SECTORS);
                i = 0;
            }
            TAG_TD => break,
            // Implementation use and unallocated space descriptors.
            4 | 7 => {}
            // Anything else ends the recorded sequence.
            _ => break,
        }
    }
    if vds.lvd.is_none() {
        return Ok(Err("no Logical Volume Descriptor".into()));
    }
    if vds.partitions.is_empty() {
        return Ok(Err("no Partition Descriptor".into()));
    }
    Ok(Ok(vds))
}

/// How a partition reference maps to sectors of the image.
#[derive(Debug)]
enum PartMap {
    /// Starts at `start` and spans `len` sectors.
    Physical {
        start: u64,
        len: u64,
    },
    Unsupported(String),
}

struct Udf<'a> {
    image: &'a Image,
    parts: Vec<PartMap>,
    /// ICBs parsed so far, by byte offset in the image: hard links to one File Entry (many FIDs naming it, maybe
    /// through different partition maps of one partition) are parsed once and share its extents.
    icbs: RefCell<HashMap<u64, Icb>>,
    /// Entries that are neither files nor directories, by kind, in the order first met.
    skipped: RefCell<Vec<Skipped>>,
}

/// What a File Entry or Extended File Entry says.
#[derive(Clone)]
struct Icb {
    file_type: u8,
    size: u64,
    mtime: i64,
    extents: Arc<FileExtents>,
}

impl Udf<'_> {
    fn bad(&self, what: impl Into<String>) -> IsoError {
        self.image.bad_udf(what)
    }

    fn partition(&self, part: u16) -> Result<(u64, u64), IsoError> {
        match self.parts.get(usize::from(part)) {
            Some(PartMap::Physical { start, len }) => Ok((*start, *len)),
            Some(PartMap::Unsupported(what)) => Err(self.image.unsupported(what.clone())),
            None => Err(self
                .bad(format!("partition reference {part} but the volume has {} partition map(s)", self.parts.len()))),
        }
    }

    /// Byte offset in the image of block `lbn` of partition `part`.
    fn offset(&self, part: u16, lbn: u32) -> Result<u64, IsoError> {
        let (start, _) = self.partition(part)?;
        Ok((start + u64::from(lbn)) * SECTOR)
    }

    /// Reads block `lbn` of partition `part`, which must lie inside the partition.
    fn block(&self, part: u16, lbn: u32) -> Result<Vec<u8>, IsoError> {
        let (start, len) = self.partition(part)?;
        if u64::from(lbn) >= len {
            return Err(self.bad(format!("block {lbn} lies outside partition {part} ({len} blocks)")));
        }
        self.image.read_vec((start + u64::from(lbn)) * SECTOR, SECTOR as usize)
    }

    /// The (Extended) File Entry at `ad`, parsed once.
    fn icb(&self, ad: LongAd) -> Result<Icb, IsoError> {
        let key = self.offset(ad.part, ad.lbn)?;
        if let Some(icb) = self.icbs.borrow().get(&key) {
            return Ok(icb.clone());
        }
        let icb = self.parse_icb(ad)?;
        self.icbs.borrow_mut().insert(key, icb.clone());
        Ok(icb)
    }

    /// Where the records of the directory whose ICB is at `ad` lie: the byte ranges of its recorded pieces, or
    /// of its ICB's block when they are embedded there.
    fn spans(&self, ad: LongAd) -> Result<Vec<(u64, u64)>, IsoError> {
        let dir = self.icb(ad)?;
        let mut spans = Vec::with_capacity(dir.extents.len());
        for ext in dir.extents.iter() {
            match *ext {
                Extent::Disk { offset, len } => spans.push((offset, offset.saturating_add(len))),
                Extent::Inline { .. } => {
                    let block = self.offset(ad.part, ad.lbn)?;
                    spans.push((block, block + SECTOR));
                }
                // Nothing on disk (and nothing a directory can be read from).
                Extent::Zeros { .. } => {}
            }
        }
        Ok(spans)
    }

    /// Reads the (Extended) File Entry at `ad`.
    fn parse_icb(&self, ad: LongAd) -> Result<Icb, IsoError> {
        let buf = self.block(ad.part, ad.lbn)?;
        let where_ = || format!("partition {} block {}", ad.part, ad.lbn);
        let id = le16(&buf, 0);
        let (size_at, mtime_at, lengths_at) = match id {
            TAG_FE => (56, 84, 168),
            TAG_EFE => (56, 92, 208),
            _ => {
                return Err(self.bad(format!(
                    "expected a File Entry at {}, found tag {id} ({})",
                    where_(),
                    tag_name(id)
                )));
            }
        };
        check_tag(&buf, id, Some(ad.lbn)).map_err(|e| self.bad(format!("{}: {e}", where_())))?;
        let strategy = le16(&buf, 16 + 4);
        if strategy != 4 && strategy != 4096 {
            return Err(self.image.unsupported(format!("ICB strategy {strategy} at {}", where_())));
        }
        let file_type = buf[16 + 11];
        let ad_type = le16(&buf, 16 + 18) & 7;
        let size = le64(&buf, size_at);
        let mtime = timestamp(&buf[mtime_at..mtime_at + 12]);
        let l_ea = le32(&buf, lengths_at) as usize;
        let l_ad = le32(&buf, lengths_at + 4) as usize;
        let base = lengths_at + 8;
        let Some(ads) = base.checked_add(l_ea).and_then(|s| Some(s..s.checked_add(l_ad)?)).and_then(|r| buf.get(r))
        else {
            return Err(self.bad(format!(
                "File Entry at {} has extended attributes ({l_ea} bytes) and allocation descriptors ({l_ad} bytes) past its block",
                where_()
            )));
        };
        let extents = if ad_type == 3 {
            self.image.charge(Limit::Extents, 1, || format!("File Entry at {}", where_()))?;
            let offset = self.offset(ad.part, ad.lbn)? + (base + l_ea) as u64;
            vec![Extent::Inline { offset, len: l_ad as u64 }]
        } else {
            self.allocation(ad.part, ads, ad_type, size).map_err(|e| match e {
                IsoError::BadUdf { path, what } => {
                    IsoError::BadUdf { path, what: format!("File Entry at {}: {what}", where_()) }
                }
                e => e,
            })?
        };
        let Some(extents) = truncate_extents(extents, size) else {
            return Err(self.bad(format!(
                "File Entry at {}: its data holds fewer bytes than its information length ({size})",
                where_()
            )));
        };
        Ok(Icb { file_type, size, mtime, extents: Arc::new(FileExtents::new(extents)) })
    }

    /// Parses allocation descriptors of type `ad_type` (0 short, 1 long, 2 extended),
    /// following allocation extent descriptors, until `size` bytes are covered.
    fn allocation(&self, part: u16, first: &[u8], ad_type: u16, size: u64) -> Result<Vec<Extent>, IsoError> {
        let ad_size = match ad_type {
            0 => 8,
            1 => 16,
            2 => 20,
            t => return Err(self.bad(format!("unknown allocation descriptor type {t}"))),
        };
        let mut out = Vec::new();
        let mut total = 0u64;
        let mut area = first.to_vec();
        let mut hops = 0;
        loop {
            let mut next = None;
            for ad in area.chunks_exact(ad_size) {
                let raw = le32(ad, 0);
                let kind = raw >> 30;
                let len = u64::from(raw & 0x3FFF_FFFF);
                if len == 0 {
                    break;
                }
                let (lbn, ad_part) = match ad_type {
                    0 => (le32(ad, 4), part),
                    1 => (le32(ad, 4), le16(ad, 8)),
                    _ => (le32(ad, 12), le16(ad, 16)),
                };
                match kind {
                    0 => out.push(Extent::Disk { offset: self.offset(ad_part, lbn)?, len }),
                    1 | 2 => out.push(Extent::Zeros { len }),
                    _ => {
                        next = Some((ad_part, lbn, len));
                        break;
                    }
                }
                self.image.charge(Limit::Extents, 1, || format!("allocation descriptors in partition {part}"))?;
                total += len;
                if total >= size {
                    return Ok(out);
                }
            }
            let Some((next_part, next_lbn, next_len)) = next else {
                return Ok(out);
            };
            hops += 1;
            if hops > self.image.limits().aed_hops {
                return Err(self.image.over(
                    Limit::AedHops,
                    format!("allocation extent descriptor at partition {next_part} block {next_lbn}"),
                ));
            }
            let buf = self.block(next_part, next_lbn)?;
            check_tag(&buf, TAG_AED, Some(next_lbn))
                .map_err(|e| self.bad(format!("partition {next_part} block {next_lbn}: {e}")))?;
            let l_ad = le32(&buf, 20) as usize;
            let end = 24usize.saturating_add(l_ad).min(buf.len()).min(usize::try_from(next_len).unwrap_or(usize::MAX));
            area = buf.get(24..end).unwrap_or_default().to_vec();
        }
    }

    /// Notes an entry at `path` of ICB file type `file_type` left out of the listing.
    fn skip(&self, path: impl FnOnce() -> String, file_type: u8) {
        let kind = file_type_name(file_type);
        let mut skipped = self.skipped.borrow_mut();
        match skipped.iter_mut().find(|s| s.kind == kind) {
            Some(s) => s.count += 1,
            None => skipped.push(Skipped { kind, count: 1, example: path() }),
        }
    }

    /// Lists the directory whose ICB is at `ad` (at `path`, "" for the root).
    fn list(&self, ad: LongAd, path: &str) -> Result<Vec<Child<LongAd>>, IsoError> {
        let dir = self.icb(ad)?;
        if dir.file_type != FILE_TYPE_DIR {
            return Err(self.bad(format!(
                "ICB at partition {} block {} should be a directory but has file type {}",
                ad.part, ad.lbn, dir.file_type
            )));
        }
        if dir.size > self.image.limits().dir_bytes {
            return Err(self.image.over(
                Limit::DirBytes,
                format!("directory at partition {} block {} is {} bytes", ad.part, ad.lbn, dir.size),
            ));
        }
        if let Some(len) = unaligned_piece(&dir.extents) {
            let file = format!("the directory /{path} (ICB at partition {} block {})", ad.part, ad.lbn);
            return Err(IsoError::UnalignedExtent { path: self.image.path.clone(), file, len });
        }
        let data = self.image.read_extents(&dir.extents)?;
        let mut kids = Vec::new();
        let mut p = 0;
        while p < data.len() {
            let rest = &data[p..];
            if rest.len() < 38 {
                return Err(self.bad(format!(
                    "directory at partition {} block {}: truncated File Identifier Descriptor at byte {p}",
                    ad.part, ad.lbn
                )));
            }
            let l_fi = usize::from(rest[19]);
            let l_iu = usize::from(le16(rest, 36));
            let used = 38 + l_iu + l_fi;
            let fid_len = (used + 3) & !3;
            let Some(fid) = rest.get(..used) else {
                return Err(self.bad(format!(
                    "directory at partition {} block {}: File Identifier Descriptor at byte {p} runs past the directory end",
                    ad.part, ad.lbn
                )));
            };
            let tagged = rest.get(..fid_len).unwrap_or(fid);
            check_tag(tagged, TAG_FID, None)
                .map_err(|e| self.bad(format!("directory at partition {} block {}, byte {p}: {e}", ad.part, ad.lbn)))?;
            p += fid_len;
            let characteristics = fid[18];
            // Deleted (bit 2) and parent (bit 3) entries.
            if characteristics & 0x0C != 0 {
                continue;
            }
            let name = osta(&fid[38 + l_iu..]).map_err(|e| {
                self.bad(format!("directory at partition {} block {}: file name: {e}", ad.part, ad.lbn))
            })?;
            self.image.charge(Limit::Entries, 1, || {
                format!("directory at partition {} block {}, entry {name:?}", ad.part, ad.lbn)
            })?;
            let child_ad = long_ad(fid, 20);
            let icb = self.icb(child_ad)?;
            match icb.file_type {
                FILE_TYPE_DIR => {
                    kids.push(Child { name, size: 0, mtime: icb.mtime, extents: Arc::default(), dir: Some(child_ad) })
                }
                FILE_TYPE_FILE => {
                    kids.push(Child { name, size: icb.size, mtime: icb.mtime, extents: icb.extents, dir: None })
                }
                other => {
                    tracing::debug!(name = %name, file_type = other, "skipping UDF entry: neither file nor directory");
                    self.skip(|| if path.is_empty() { name.clone() } else { format!("{path}/{name}") }, other);
                }
            }
        }
        Ok(kids)
    }
}

/// Reads the UDF volume of `image`.
pub(crate) fn read(image: &Image) -> Result<Volume, IsoError> {
    let (main, reserve) =
        find_anchor(image)?.map_err(|e| image.bad_udf(format!("no valid Anchor Volume Descriptor Pointer: {e}")))?;
    let vds = match read_vds(image, main)? {
        Ok(vds) => vds,
        Err(main_err) => read_vds(image, reserve)?
            .map_err(|_| image.bad_udf(format!("main volume descriptor sequence: {main_err}")))?,
    };
    let Some((_, lvd)) = &vds.lvd else {
        return Err(image.bad_udf("no Logical Volume Descriptor"));
    };
    let block_size = le32(lvd, 212);
    if u64::from(block_size) != SECTOR {
        return Err(image.unsupported(format!("UDF logical block size {block_size} (only {SECTOR} is supported)")));
    }
    let map_len = le32(lvd, 264) as usize;
    let map_count = le32(lvd, 268);
    let Some(maps) = 440usize.checked_add(map_len).and_then(|end| lvd.get(440..end)) else {
        return Err(
            image.bad_udf(format!("partition map table of {map_len} bytes does not fit the Logical Volume Descriptor"))
        );
    };
    let mut parts = Vec::new();
    let mut p = 0;
    for n in 0..map_count {
        let (Some(&kind), Some(&len)) = (maps.get(p), maps.get(p + 1)) else {
            return Err(image.bad_udf(format!("partition map {n} lies past the map table")));
        };
        let len = usize::from(len);
        let Some(map) = maps.get(p..p + len).filter(|_| len >= 2) else {
            return Err(image.bad_udf(format!("partition map {n} has bad length {len}")));
        };
        let number = match kind {
            1 if len == 6 => Some(le16(map, 4)),
            2 if len >= 40 => {
                let ident = map.get(5..28).unwrap_or_default();
                if ident.starts_with(b"*UDF Sparable Partition") {
                    // Sparing only remaps defective packets of rewritable media; an image has none.
                    Some(le16(map, 38))
                } else {
                    let name = String::from_utf8_lossy(ident).trim_end_matches(['\0', ' ']).to_string();
                    parts.push(PartMap::Unsupported(format!(
                        "UDF partition map \"{name}\" (virtual/metadata partitions of UDF 1.50/2.50+)"
                    )));
                    None
                }
            }
            _ => {
                parts.push(PartMap::Unsupported(format!("UDF partition map type {kind}")));
                None
            }
        };
        if let Some(number) = number {
            let Some(&(_, _, start, plen)) = vds.partitions.iter().find(|d| d.1 == number) else {
                return Err(image.bad_udf(format!(
                    "partition map {n} refers to partition {number}, which has no Partition Descriptor"
                )));
            };
            parts.push(PartMap::Physical { start: u64::from(start), len: u64::from(plen) });
        }
        p += len;
    }
    let udf = Udf { image, parts, icbs: RefCell::new(HashMap::new()), skipped: RefCell::new(Vec::new()) };

    let fsd_ad = long_ad(lvd, 248);
    let fsd = udf.block(fsd_ad.part, fsd_ad.lbn)?;
    check_tag(&fsd, TAG_FSD, Some(fsd_ad.lbn))
        .map_err(|e| image.bad_udf(format!("partition {} block {}: {e}", fsd_ad.part, fsd_ad.lbn)))?;
    let root = long_ad(&fsd, 400);

    let mut volume_id = dstring(&lvd[84..212]);
    if volume_id.is_empty() {
        volume_id = vds.pvd.map(|(_, id)| id).unwrap_or_default();
    }
    // Directories are keyed on the bytes of their records, not on their ICBs: many ICBs (or one block reached
    // through two partition maps) sharing records are a cycle too.
    let (entries, extents) =
        walk(image, root, |ad| udf.spans(*ad), |ad, path| udf.list(*ad, path), |what| image.bad_udf(what))?;
    Ok(Volume { format: IsoFormat::Udf, volume_id, entries, extents, skipped: udf.skipped.into_inner() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::iso::iso9660::tests as iso_build;
    use crate::media::iso::test_support::{read_all, read_in_chunks, write_temp};
    use crate::media::iso::{IsoFs, Recognition};
    use std::io::{Read, Write};

    /// First sector of the partition, and its length in blocks.
    const PSTART: u32 = 270;
    const PLEN: u32 = 64;

    fn put16(b: &mut [u8], at: usize, v: u16) {
        b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn put32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn put64(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Fills in the tag of descriptor `d` (the CRC covers all of `d` after the tag).
    fn tag(d: &mut [u8], id: u16, loc: u32) {
        put16(d, 0, id);
        put16(d, 2, 2);
        put16(d, 6, 1);
        put16(d, 10, (d.len() - 16) as u16);
        let crc = crc16(&d[16..]);
        put16(d, 8, crc);
        put32(d, 12, loc);
        retag_checksum(d);
    }

    fn retag_checksum(d: &mut [u8]) {
        d[4] = 0;
        d[4] = d[..16].iter().fold(0u8, |s, &b| s.wrapping_add(b));
    }

    fn block(d: &[u8]) -> Vec<u8> {
        let mut b = d.to_vec();
        b.resize(2048, 0);
        b
    }

    fn dstring_field(s: &str, n: usize) -> Vec<u8> {
        let mut f = vec![0u8; n];
        f[0] = 8;
        f[1..1 + s.len()].copy_from_slice(s.as_bytes());
        f[n - 1] = s.len() as u8 + 1;
        f
    }

    /// A UDF timestamp of local time with `tz` minutes east of UTC.
    fn ts(year: i16, month: u8, day: u8, hour: u8, minute: u8, tz: i16) -> [u8; 12] {
        let mut t = [0u8; 12];
        let type_tz = (1u16 << 12) | (tz as u16 & 0x0FFF);
        t[0..2].copy_from_slice(&type_tz.to_le_bytes());
        t[2..4].copy_from_slice(&year.to_le_bytes());
        t[4] = month;
        t[5] = day;
        t[6] = hour;
        t[7] = minute;
        t[8] = 5;
        t
    }

    fn short_ad(len: u32, lbn: u32) -> Vec<u8> {
        let mut a = vec![0u8; 8];
        put32(&mut a, 0, len);
        put32(&mut a, 4, lbn);
        a
    }

    fn long_ad_bytes(len: u32, lbn: u32) -> Vec<u8> {
        let mut a = vec![0u8; 16];
        put32(&mut a, 0, len);
        put32(&mut a, 4, lbn);
        a
    }

    /// A File Entry (or Extended File Entry) block at `lbn`.
    fn file_entry(
        lbn: u32,
        extended: bool,
        file_type: u8,
        size: u64,
        ad_type: u16,
        ads: &[u8],
        mtime: [u8; 12],
    ) -> Vec<u8> {
        let (mtime_at, lengths_at) = if extended { (92, 208) } else { (84, 168) };
        let base = lengths_at + 8;
        let mut d = vec![0u8; base + ads.len()];
        put16(&mut d, 16 + 4, 4);
        put16(&mut d, 16 + 8, 1);
        d[16 + 11] = file_type;
        put16(&mut d, 16 + 18, ad_type);
        put64(&mut d, 56, size);
        d[mtime_at..mtime_at + 12].copy_from_slice(&mtime);
        put32(&mut d, lengths_at + 4, ads.len() as u32);
        d[base..].copy_from_slice(ads);
        tag(&mut d, if extended { TAG_EFE } else { TAG_FE }, lbn);
        block(&d)
    }

    /// A File Identifier Descriptor; `name` is already OSTA-compressed (empty for the parent).
    fn fid(characteristics: u8, name: &[u8], icb_lbn: u32) -> Vec<u8> {
        let used = 38 + name.len();
        let mut d = vec![0u8; (used + 3) & !3];
        put16(&mut d, 16, 1);
        d[18] = characteristics;
        d[19] = name.len() as u8;
        d[20..36].copy_from_slice(&long_ad_bytes(2048, icb_lbn));
        d[38..used].copy_from_slice(name);
        tag(&mut d, TAG_FID, 0);
        d
    }

    fn latin1_name(s: &str) -> Vec<u8> {
        let mut v = vec![8u8];
        v.extend(s.bytes());
        v
    }

    fn utf16_name(s: &str) -> Vec<u8> {
        let mut v = vec![16u8];
        v.extend(s.encode_utf16().flat_map(u16::to_be_bytes));
        v
    }

    const SUB_NAME: &str = "ü日本 ñ.txt";

    /// The embedded directory "Sub Dir" (Extended File Entry at block 5) whose only
    /// entry points at the ICB in block `child`.
    fn sub_dir(child: u32) -> Vec<u8> {
        let mut fids = fid(0x0A, &[], 1);
        fids.extend(fid(0, &utf16_name(SUB_NAME), child));
        file_entry(5, true, FILE_TYPE_DIR, fids.len() as u64, 3, &fids, ts(2001, 2, 3, 4, 5, 0))
    }

    struct Img(Vec<u8>);

    impl Img {
        fn sector(&mut self, n: u32, bytes: &[u8]) {
            iso_build::put(&mut self.0, n, bytes);
        }

        fn lbn(&mut self, lbn: u32, bytes: &[u8]) {
            self.sector(PSTART + lbn, bytes);
        }
    }

    /// Volume descriptor sequence at `at`: PVD, PD, LVD, TD.
    fn vds(img: &mut Img, at: u32) {
        let mut pvd = vec![0u8; 512];
        pvd[24..56].copy_from_slice(&dstring_field("PVD_ID", 32));
        tag(&mut pvd, TAG_PVD, at);
        img.sector(at, &pvd);

        let mut pd = vec![0u8; 512];
        put16(&mut pd, 20, 1);
        put16(&mut pd, 22, 0);
        pd[25..31].copy_from_slice(b"+NSR02");
        put32(&mut pd, 184, 1);
        put32(&mut pd, 188, PSTART);
        put32(&mut pd, 192, PLEN);
        tag(&mut pd, TAG_PD, at + 1);
        img.sector(at + 1, &pd);

        let mut lvd = vec![0u8; 446];
        lvd[84..212].copy_from_slice(&dstring_field("TEST_LVI", 128));
        put32(&mut lvd, 212, 2048);
        lvd[248..264].copy_from_slice(&long_ad_bytes(2048, 0));
        put32(&mut lvd, 264, 6);
        put32(&mut lvd, 268, 1);
        lvd[440..446].copy_from_slice(&[1, 6, 1, 0, 0, 0]);
        tag(&mut lvd, TAG_LVD, at + 2);
        img.sector(at + 2, &lvd);

        let mut td = vec![0u8; 512];
        tag(&mut td, TAG_TD, at + 3);
        img.sector(at + 3, &td);
    }

    /// The two-recorded-extent file "two.bin": 4096 bytes, a 2048-byte unrecorded hole, 1000 bytes.
    fn two_bin() -> Vec<u8> {
        let mut want = iso_build::pattern(4096, 3);
        want.extend(vec![0u8; 2048]);
        want.extend(iso_build::pattern(1000, 4));
        want
    }

    const INLINE: &[u8] = b"hello, embedded world\n";

    /// A minimal UDF 1.02 image; with `iso_side`, its ISO 9660 tree holds README.TXT and NODOT instead.
    fn udf_image(iso_side: bool) -> Img {
        let mut img = Img(vec![0u8; (PSTART + PLEN) as usize * 2048]);
        let mut vrs = 16;
        if iso_side {
            img.sector(16, &iso_build::descriptor(1, "ISO_SIDE", 20, 2048));
            img.sector(17, &iso_build::terminator());
            img.sector(20, &iso_build::primary_root(20));
            img.sector(30, b"readme\n");
            img.sector(31, b"hello");
            vrs = 18;
        }
        for (i, id) in [b"BEA01", b"NSR02", b"TEA01"].into_iter().enumerate() {
            let mut d = vec![0u8; 2048];
            d[1..6].copy_from_slice(id);
            d[6] = 1;
            img.sector(vrs + i as u32, &d);
        }
        vds(&mut img, 32);
        vds(&mut img, 48);
        let mut avdp = vec![0u8; 512];
        put32(&mut avdp, 16, 16 * 2048);
        put32(&mut avdp, 20, 32);
        put32(&mut avdp, 24, 16 * 2048);
        put32(&mut avdp, 28, 48);
        tag(&mut avdp, TAG_AVDP, 256);
        img.sector(256, &avdp);

        // Block 0: File Set Descriptor, root ICB at block 1.
        let mut fsd = vec![0u8; 512];
        fsd[400..416].copy_from_slice(&long_ad_bytes(2048, 1));
        tag(&mut fsd, TAG_FSD, 0);
        img.lbn(0, &fsd);

        // Block 2: root directory.
        let mut root = fid(0x0A, &[], 1);
        root.extend(fid(0, &latin1_name("two.bin"), 3));
        root.extend(fid(0, &latin1_name("inline.txt"), 4));
        root.extend(fid(0x02, &latin1_name("Sub Dir"), 5));
        root.extend(fid(0x04, &latin1_name("gone"), 60));
        img.lbn(
            1,
            &file_entry(
                1,
                false,
                FILE_TYPE_DIR,
                root.len() as u64,
                0,
                &short_ad(root.len() as u32, 2),
                ts(2001, 2, 3, 4, 5, 0),
            ),
        );
        img.lbn(2, &block(&root));

        // Block 3: "two.bin", short_ads with a hole and an allocation extent descriptor at block 7.
        let mut ads = short_ad(4096, 10);
        ads.extend(short_ad((1 << 30) | 2048, 0));
        ads.extend(short_ad((3 << 30) | 2048, 7));
        img.lbn(3, &file_entry(3, false, FILE_TYPE_FILE, 7144, 0, &ads, ts(2020, 1, 2, 3, 4, 60)));
        let mut aed = vec![0u8; 24];
        put32(&mut aed, 20, 8);
        aed.extend(short_ad(1000, 20));
        tag(&mut aed, TAG_AED, 7);
        img.lbn(7, &aed);
        let data = two_bin();
        img.lbn(10, &data[..4096]);
        img.lbn(20, &data[6144..]);

        // Block 4: "inline.txt", data embedded in the ICB.
        img.lbn(4, &file_entry(4, false, FILE_TYPE_FILE, INLINE.len() as u64, 3, INLINE, ts(2001, 2, 3, 4, 5, 0)));

        // Block 5: "Sub Dir", block 6: its file (Extended File Entry with a long_ad).
        img.lbn(5, &sub_dir(6));
        img.lbn(6, &file_entry(6, true, FILE_TYPE_FILE, 5, 1, &long_ad_bytes(5, 30), ts(1999, 12, 31, 23, 0, -300)));
        img.lbn(30, b"abcde");
        img
    }

    fn check_udf_tree(fs: &IsoFs) {
        assert_eq!(fs.format(), IsoFormat::Udf);
        assert_eq!(fs.volume_id(), "TEST_LVI");
        let got: Vec<_> = fs.entries().iter().map(|e| (e.path.as_str(), e.is_dir, e.size)).collect();
        let sub_file = format!("Sub Dir/{SUB_NAME}");
        assert_eq!(
            got,
            [
                ("Sub Dir", true, 0),
                (sub_file.as_str(), false, 5),
                ("inline.txt", false, INLINE.len() as u64),
                ("two.bin", false, 7144),
            ]
        );
        let mtimes: Vec<_> = fs.entries().iter().map(|e| e.mtime).collect();
        assert_eq!(mtimes[1], 946_699_205);
        assert_eq!(mtimes[3], 1_577_930_645);
        assert_eq!(read_all(fs, "two.bin"), two_bin());
        assert_eq!(read_all(fs, "inline.txt"), INLINE);
        assert_eq!(read_all(fs, &sub_file), b"abcde");
    }

    #[test]
    fn reads_hand_built_udf() {
        let f = write_temp(&udf_image(false).0);
        let fs = IsoFs::open(f.path()).expect("open");
        check_udf_tree(&fs);
        // Odd-sized reads across the extents and the hole.
        let mut r = fs.open_file(3).expect("open two.bin");
        assert_eq!(read_in_chunks(&mut r, 333), two_bin());
    }

    #[test]
    fn udf_wins_over_a_different_iso9660_tree() {
        let f = write_temp(&udf_image(true).0);
        let image = Image::open(f.path(), crate::media::iso::LIMITS).expect("image");
        let rec: Recognition = crate::media::iso::recognize(&image).expect("recognize");
        assert!(rec.nsr);
        assert_eq!(rec.pvd, Some(16));
        let fs = IsoFs::open(f.path()).expect("open");
        check_udf_tree(&fs);
        assert!(!fs.entries().iter().any(|e| e.path == "README.TXT"));
    }

    #[test]
    fn reserve_sequence_used_when_main_is_damaged() {
        let mut img = udf_image(false);
        img.0[34 * 2048 + 100] ^= 0xFF; // main LVD
        let f = write_temp(&img.0);
        check_udf_tree(&IsoFs::open(f.path()).expect("open"));
    }

    fn open_err(img: &[u8]) -> IsoError {
        let f = write_temp(img);
        IsoFs::open(f.path()).expect_err("must fail")
    }

    #[test]
    fn corrupt_udf_is_an_error_not_iso9660() {
        // Bad CRC of the root File Entry.
        let mut img = udf_image(true);
        img.0[(PSTART as usize + 1) * 2048 + 60] ^= 1;
        let err = open_err(&img.0);
        assert!(matches!(err, IsoError::BadUdf { .. }), "{err}");
        assert!(err.to_string().contains("CRC"), "{err}");

        // Bad tag checksum.
        let mut img = udf_image(true);
        img.0[(PSTART as usize + 3) * 2048 + 4] ^= 1;
        let err = open_err(&img.0);
        assert!(err.to_string().contains("checksum"), "{err}");

        // Wrong tag location.
        let mut img = udf_image(true);
        let fe = file_entry(9, false, FILE_TYPE_FILE, 0, 0, &[], ts(2001, 1, 1, 0, 0, 0));
        img.lbn(4, &fe);
        let err = open_err(&img.0);
        assert!(err.to_string().contains("location"), "{err}");

        // No anchor although NSR02 is present: never fall back to the ISO 9660 tree.
        let mut img = udf_image(true);
        img.sector(256, &[0u8; 2048]);
        let err = open_err(&img.0);
        assert!(matches!(err, IsoError::BadUdf { .. }), "{err}");

        // A directory that contains itself.
        let mut img = udf_image(false);
        img.lbn(5, &sub_dir(5));
        let err = open_err(&img.0);
        assert!(matches!(&err, IsoError::DirectoryCycle { dir, .. } if *dir == format!("Sub Dir/{SUB_NAME}")), "{err}");
        assert!(err.to_string().contains("twice"), "{err}");

        // A File Entry whose allocation covers less than its length.
        let mut img = udf_image(false);
        img.lbn(6, &file_entry(6, true, FILE_TYPE_FILE, 50, 1, &long_ad_bytes(5, 30), ts(2001, 1, 1, 0, 0, 0)));
        let err = open_err(&img.0);
        assert!(err.to_string().contains("fewer bytes"), "{err}");

        // File data past the end of a truncated image.
        let mut img = udf_image(false);
        img.0.truncate((PSTART as usize + 15) * 2048);
        let err = open_err(&img.0);
        assert!(matches!(err, IsoError::BadUdf { .. } | IsoError::Read { .. }), "{err}");

        // An allocation extent descriptor chain that points at itself.
        let mut img = udf_image(false);
        let mut aed = vec![0u8; 24];
        put32(&mut aed, 20, 8);
        aed.extend(short_ad((3 << 30) | 2048, 7));
        tag(&mut aed, TAG_AED, 7);
        img.lbn(7, &aed);
        let err = open_err(&img.0);
        assert!(err.to_string().contains("allocation extent"), "{err}");
    }

    /// What `IsoFs::open_with(limits)` of `img` fails with: the limit and its value.
    fn over_limit(img: &[u8], limits: crate::media::iso::Limits) -> (Limit, u64) {
        let f = write_temp(img);
        let err = IsoFs::open_with(f.path(), limits).expect_err("over a limit");
        err.limit().unwrap_or_else(|| panic!("not a limit: {err}"))
    }

    #[test]
    fn every_limit_is_enforced() {
        use crate::media::iso::{LIMITS, Limits};
        let img = udf_image(false).0;
        let f = write_temp(&img);
        check_udf_tree(&IsoFs::open(f.path()).expect("within the default limits"));
        let cases: [(Limit, Limits); 9] = [
            // 4 entries (the deleted one is not listed).
            (Limit::Entries, Limits { entries: 3, ..LIMITS }),
            // two.bin has 3 extents, the others 1 each.
            (Limit::Extents, Limits { extents: 5, ..LIMITS }),
            // Listed: two.bin's 3, inline.txt's and the sub directory file's 1 each (directories count none).
            (Limit::ListedExtents, Limits { listed_extents: 4, ..LIMITS }),
            // "Sub Dir/ü日本 ñ.txt" is 23 bytes.
            (Limit::PathLen, Limits { path_len: 9, ..LIMITS }),
            (Limit::PathBytes, Limits { path_bytes: 30, ..LIMITS }),
            (Limit::Depth, Limits { depth: 1, ..LIMITS }),
            // The root directory's records.
            (Limit::DirBytes, Limits { dir_bytes: 100, ..LIMITS }),
            // two.bin's data goes on in one allocation extent descriptor.
            (Limit::AedHops, Limits { aed_hops: 0, ..LIMITS }),
            (Limit::MetadataBytes, Limits { metadata_bytes: 8 * 2048, ..LIMITS }),
        ];
        for (want, limits) in cases {
            assert_eq!(over_limit(&img, limits), (want, want.value(&limits)), "{want:?}");
        }
        // Exactly at each limit is fine.
        let exact = Limits { entries: 4, extents: 7, listed_extents: 5, path_len: 23, depth: 2, aed_hops: 1, ..LIMITS };
        check_udf_tree(&IsoFs::open_with(f.path(), exact).expect("exactly at the limits"));

        // The main sequence: its primary volume descriptor, then a pointer to the reserve sequence.
        let mut img = udf_image(false);
        let mut vdp = vec![0u8; 512];
        put32(&mut vdp, 20, 4 * 2048);
        put32(&mut vdp, 24, 48);
        tag(&mut vdp, TAG_VDP, 33);
        img.sector(33, &block(&vdp));
        let f = write_temp(&img.0);
        check_udf_tree(&IsoFs::open(f.path()).expect("one pointer is fine"));
        assert_eq!(over_limit(&img.0, Limits { vdp_hops: 0, ..LIMITS }), (Limit::VdpHops, 0));
        let msg = IsoFs::open_with(f.path(), Limits { vdp_hops: 0, ..LIMITS }).expect_err("over").to_string();
        assert!(
            msg.contains("damaged or hostile") && msg.contains("limit of 0 UDF volume descriptor pointers"),
            "{msg}"
        );
    }

    #[test]
    fn hard_links_are_parsed_once_and_share_their_extents() {
        let mut img = udf_image(false);
        let mut root = fid(0x0A, &[], 1);
        for name in ["two.bin", "link 1", "link 2", "link 3"] {
            root.extend(fid(0, &latin1_name(name), 3));
        }
        img.lbn(
            1,
            &file_entry(
                1,
                false,
                FILE_TYPE_DIR,
                root.len() as u64,
                0,
                &short_ad(root.len() as u32, 2),
                ts(2001, 2, 3, 4, 5, 0),
            ),
        );
        img.lbn(2, &block(&root));
        let f = write_temp(&img.0);
        // Four links to a file of 3 extents: 3 extents parsed in all (and the root directory's 1), but 12 to copy.
        let limits = crate::media::iso::Limits { extents: 4, listed_extents: 12, ..crate::media::iso::LIMITS };
        let fs = IsoFs::open_with(f.path(), limits).expect("links parse nothing extra");
        let fewer = crate::media::iso::Limits { listed_extents: 11, ..limits };
        assert_eq!(over_limit(&img.0, fewer), (Limit::ListedExtents, 11), "each link is copied");
        let paths: Vec<_> = fs.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["link 1", "link 2", "link 3", "two.bin"]);
        for (i, path) in paths.iter().enumerate() {
            assert!(std::sync::Arc::ptr_eq(&fs.extents[i], &fs.extents[3]));
            assert_eq!(read_all(&fs, path), two_bin());
        }
        // Where each piece starts in the file is worked out once, with the shared list.
        assert_eq!(fs.extents[3].starts, [0, 4096, 6144]);
    }

    /// Writes root directory records `fids` (after the parent entry) into blocks 1 (ICB) and 2 (records).
    fn set_root(img: &mut Img, fids: &[Vec<u8>]) {
        let mut root = fid(0x0A, &[], 1);
        for f in fids {
            root.extend_from_slice(f);
        }
        assert!(root.len() <= 2048);
        let ads = short_ad(root.len() as u32, 2);
        img.lbn(1, &file_entry(1, false, FILE_TYPE_DIR, root.len() as u64, 0, &ads, ts(2001, 2, 3, 4, 5, 0)));
        img.lbn(2, &block(&root));
    }

    /// A File Identifier Descriptor naming an ICB in partition (map) `part`.
    fn fid_in(characteristics: u8, name: &str, part: u16, icb_lbn: u32) -> Vec<u8> {
        let mut d = fid(characteristics, &latin1_name(name), icb_lbn);
        put16(&mut d, 28, part);
        tag(&mut d, TAG_FID, 0);
        d
    }

    #[test]
    fn directories_sharing_records_are_a_cycle() {
        // Directories "A" and "B" are distinct File Entries (blocks 8 and 9) whose records are the same block 12.
        let mut img = udf_image(false);
        let mut records = fid(0x0A, &[], 1);
        records.extend(fid(0, &latin1_name("f"), 6));
        for lbn in [8, 9] {
            let ads = short_ad(records.len() as u32, 12);
            img.lbn(
                lbn,
                &file_entry(lbn, false, FILE_TYPE_DIR, records.len() as u64, 0, &ads, ts(2001, 1, 1, 0, 0, 0)),
            );
        }
        img.lbn(12, &block(&records));
        set_root(&mut img, &[fid_in(0x02, "A", 0, 8), fid_in(0x02, "B", 0, 9)]);
        let err = open_err(&img.0);
        assert!(matches!(&err, IsoError::DirectoryCycle { dir, .. } if dir == "B"), "{err}");
        assert!(err.is_bad_image());
        let msg = err.to_string();
        assert!(msg.contains("damaged or hostile") && msg.contains("directory cycle"), "{msg}");

        // "A" covers blocks 12 and 13, "B" only block 13: overlapping records are a cycle too.
        let mut img2 = Img(img.0.clone());
        // 64-byte records, 32 to a block.
        let full: Vec<u8> = (0..64).flat_map(|i| fid(0, &latin1_name(&format!("{i:025}")), 6)).collect();
        assert_eq!(full.len(), 4096);
        img2.lbn(12, &full);
        let a = short_ad(4096, 12);
        img2.lbn(8, &file_entry(8, false, FILE_TYPE_DIR, 4096, 0, &a, ts(2001, 1, 1, 0, 0, 0)));
        let b = short_ad(2048, 13);
        img2.lbn(9, &file_entry(9, false, FILE_TYPE_DIR, 2048, 0, &b, ts(2001, 1, 1, 0, 0, 0)));
        let err = open_err(&img2.0);
        assert!(matches!(&err, IsoError::DirectoryCycle { dir, .. } if dir == "B"), "{err}");

        // Distinct records (block 13 for "B") are fine.
        let b = short_ad(records.len() as u32, 13);
        img.lbn(9, &file_entry(9, false, FILE_TYPE_DIR, records.len() as u64, 0, &b, ts(2001, 1, 1, 0, 0, 0)));
        img.lbn(13, &block(&records));
        let f = write_temp(&img.0);
        let fs = IsoFs::open(f.path()).expect("two distinct directories");
        let paths: Vec<_> = fs.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["A", "A/f", "B", "B/f"]);
    }

    /// The volume with a second partition map naming the same partition as the first.
    fn two_maps_of_one_partition(img: &mut Img) {
        for at in [32u32, 48] {
            let lvd_at = (at as usize + 2) * 2048;
            let mut lvd = img.0[lvd_at..lvd_at + 446].to_vec();
            put32(&mut lvd, 264, 12);
            put32(&mut lvd, 268, 2);
            lvd.extend_from_slice(&[1, 6, 1, 0, 0, 0]);
            tag(&mut lvd, TAG_LVD, at + 2);
            img.sector(at + 2, &block(&lvd));
        }
    }

    #[test]
    fn one_directory_through_two_partition_maps_is_a_cycle() {
        // "A" and "B" name the same ICB (the embedded "Sub Dir" at block 5) through maps 0 and 1.
        let mut img = udf_image(false);
        two_maps_of_one_partition(&mut img);
        set_root(&mut img, &[fid_in(0x02, "A", 0, 5), fid_in(0x02, "B", 1, 5)]);
        let err = open_err(&img.0);
        assert!(matches!(&err, IsoError::DirectoryCycle { dir, .. } if dir == "B"), "{err}");

        // A file reached through both maps is one File Entry, parsed once.
        set_root(&mut img, &[fid_in(0, "x", 0, 3), fid_in(0, "y", 1, 3)]);
        let f = write_temp(&img.0);
        let fs = IsoFs::open(f.path()).expect("one file under two names");
        assert_eq!(fs.entries().len(), 2);
        assert!(std::sync::Arc::ptr_eq(&fs.extents[0], &fs.extents[1]));
        assert_eq!(read_all(&fs, "y"), two_bin());
    }

    #[test]
    fn pieces_before_the_last_are_whole_blocks() {
        // two.bin's first piece of 3000 bytes, then more: 1-byte pieces would make its copy one read per byte.
        let mut img = udf_image(false);
        let mut ads = short_ad(3000, 10);
        ads.extend(short_ad(1000, 20));
        img.lbn(3, &file_entry(3, false, FILE_TYPE_FILE, 4000, 0, &ads, ts(2020, 1, 2, 3, 4, 60)));
        let err = open_err(&img.0);
        assert!(matches!(&err, IsoError::UnalignedExtent { file, len: 3000, .. } if file == "/two.bin"), "{err}");
        assert!(err.is_bad_image());
        assert!(err.to_string().contains("damaged or hostile"), "{err}");

        // An unrecorded piece of 1000 bytes before the last.
        let mut ads = short_ad(2048, 10);
        ads.extend(short_ad((1 << 30) | 1000, 0));
        ads.extend(short_ad(1000, 20));
        img.lbn(3, &file_entry(3, false, FILE_TYPE_FILE, 4048, 0, &ads, ts(2020, 1, 2, 3, 4, 60)));
        let err = open_err(&img.0);
        assert!(matches!(&err, IsoError::UnalignedExtent { len: 1000, .. }), "{err}");

        // Only the last piece may end inside a block (and one cut short by the file's size is the last).
        let mut ads = short_ad(2048, 10);
        ads.extend(short_ad(2048, 20));
        ads.extend(short_ad(1, 21));
        img.lbn(3, &file_entry(3, false, FILE_TYPE_FILE, 3000, 0, &ads, ts(2020, 1, 2, 3, 4, 60)));
        let f = write_temp(&img.0);
        let fs = IsoFs::open(f.path()).expect("the last piece may be short");
        let i = fs.entries().iter().position(|e| e.path == "two.bin").expect("two.bin");
        assert_eq!(fs.extents[i].len(), 2);
        assert_eq!(fs.extents[i][1].len(), 952);

        // A directory's records in two pieces, the first of 40 bytes (its parent entry).
        let mut img = udf_image(false);
        let mut root = fid(0x0A, &[], 1);
        assert_eq!(root.len(), 40);
        root.extend(fid(0, &latin1_name("two.bin"), 3));
        let mut ads = short_ad(40, 2);
        ads.extend(short_ad(root.len() as u32 - 40, 8));
        img.lbn(1, &file_entry(1, false, FILE_TYPE_DIR, root.len() as u64, 0, &ads, ts(2001, 2, 3, 4, 5, 0)));
        img.lbn(2, &block(&root[..40]));
        img.lbn(8, &block(&root[40..]));
        let err = open_err(&img.0);
        assert!(matches!(&err, IsoError::UnalignedExtent { len: 40, .. }), "{err}");
        assert!(err.to_string().contains("directory /"), "{err}");
    }

    #[test]
    fn skipped_entries_are_reported() {
        // Two symbolic links (one File Entry) in the root, a FIFO in "Sub Dir".
        let mut img = udf_image(false);
        img.lbn(8, &file_entry(8, false, 12, 0, 0, &[], ts(2001, 1, 1, 0, 0, 0)));
        img.lbn(9, &file_entry(9, false, 9, 0, 0, &[], ts(2001, 1, 1, 0, 0, 0)));
        img.lbn(5, &sub_dir(9));
        set_root(
            &mut img,
            &[
                fid_in(0, "two.bin", 0, 3),
                fid_in(0, "link a", 0, 8),
                fid_in(0x02, "Sub Dir", 0, 5),
                fid_in(0, "link b", 0, 8),
            ],
        );
        let f = write_temp(&img.0);
        let fs = IsoFs::open(f.path()).expect("skipped entries are not errors");
        let paths: Vec<_> = fs.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["Sub Dir", "two.bin"]);
        let skipped = fs.skipped();
        assert_eq!(
            skipped,
            [
                Skipped { kind: "symbolic link", count: 2, example: "link a".into() },
                Skipped { kind: "FIFO", count: 1, example: format!("Sub Dir/{SUB_NAME}") },
            ]
        );
        // Nothing is skipped in a plain volume.
        let f = write_temp(&udf_image(false).0);
        assert!(IsoFs::open(f.path()).expect("open").skipped().is_empty());
    }

    #[test]
    fn seeks_land_on_every_byte() {
        use std::io::Seek;
        let f = write_temp(&udf_image(false).0);
        let fs = IsoFs::open(f.path()).expect("open");
        let want = two_bin();
        let mut r = fs.open_file(3).expect("two.bin");
        for at in (0..want.len()).rev().step_by(7).chain([0, 4095, 4096, 6143, 6144, want.len() - 1]) {
            r.seek(std::io::SeekFrom::Start(at as u64)).expect("seek");
            let mut b = [0u8; 2];
            let n = r.read(&mut b).expect("read");
            assert!(n >= 1 && b[0] == want[at], "byte {at}");
        }
        let i = fs.entries().iter().position(|e| e.path == "inline.txt").expect("inline.txt");
        let mut r = fs.open_file(i).expect("inline.txt");
        r.seek(std::io::SeekFrom::Start(7)).expect("seek");
        assert_eq!(read_in_chunks(&mut r, 5), &INLINE[7..]);
    }

    #[test]
    fn decoders() {
        assert_eq!(osta(&[8, b'a', 0xFC]).expect("latin1"), "aü");
        assert_eq!(osta(&utf16_name("日本")).expect("utf16"), "日本");
        assert!(osta(&[3, b'a']).is_err());
        assert_eq!(osta(&[]).expect("empty"), "");
        assert_eq!(dstring(&dstring_field("VOL  ", 32)), "VOL");
        assert_eq!(timestamp(&ts(2020, 1, 2, 3, 4, 60)), 1_577_930_645);
        // Unspecified time zone (-2047) counts as UTC.
        let mut t = ts(1970, 1, 1, 0, 0, 0);
        t[0..2].copy_from_slice(&((1u16 << 12) | (-2047i16 as u16 & 0x0FFF)).to_le_bytes());
        assert_eq!(timestamp(&t), 5);
        assert_eq!(timestamp(&ts(2020, 0, 2, 3, 4, 0)), 0);
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    /// Recomputes the tag checksum and CRC of a descriptor at the start of `b`, if it has a plausible tag.
    fn retag(b: &mut [u8]) {
        let crc_len = usize::from(le16(b, 10));
        if le16(b, 0) == 0 || 16 + crc_len > b.len() {
            return;
        }
        let crc = crc16(&b[16..16 + crc_len]);
        put16(b, 8, crc);
        retag_checksum(b);
    }

    #[test]
    fn random_corruption_never_panics() {
        let base = udf_image(true).0;
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        // Sectors with descriptors: recognition, both sequences, the anchor, partition blocks 0..8.
        let sectors: Vec<u32> = (16..22).chain(32..36).chain(48..52).chain([256]).chain(PSTART..PSTART + 8).collect();
        for round in 0..300 {
            let mut img = base.clone();
            let sector = sectors[(next() % sectors.len() as u64) as usize] as usize;
            for _ in 0..1 + next() % 3 {
                let at = sector * 2048 + (next() % 512) as usize;
                img[at] = next() as u8;
            }
            if round % 2 == 0 {
                retag(&mut img[sector * 2048..(sector + 1) * 2048]);
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
