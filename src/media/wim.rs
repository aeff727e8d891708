//! What woesafe needs to know about a WIM (install.wim / install.esd) before anything is written, besides
//! how it splits (`wimsplit`): whether it is solid, how big its data is once decompressed (the most a re-pack
//! writes), and which image is the x64 one. Read straight from the header, the blob table and the XML data,
//! through any `Read + Seek` (the userspace ISO reader included), so the answer comes before the target is
//! touched.

use std::io::{Read, Seek, SeekFrom};

/// The largest part `wimlib-imagex split` is asked for, in MiB (as Rufus and Microsoft's own tools do: well
/// under FAT32's 4 GiB - 1 byte, so a part can exceed the request a little and still fit).
pub const PART_MIB: u64 = 4000;
/// FAT32's largest file.
pub const FAT32_MAX_FILE: u64 = (4 << 30) - 1;
/// The compression of a re-packed WIM (`wimlib-imagex export --compress=…`): LZX at wimlib's fast level 20.
/// README's "Re-packing" section has the measurements behind the choice (4× faster than LZX's default level
/// for 3 % more bytes; 6 % smaller than XPRESS, which decides whether a big ESD fits an 8 GB stick).
pub const REPACK_COMPRESSION: &str = "LZX:20";

/// The last "Archiving file data: X MiB of Y MiB" that `wimlib-imagex export` printed, in bytes: (done, total).
pub fn export_progress(stdout: &[u8]) -> Option<(u64, u64)> {
    let tail = &stdout[stdout.len().saturating_sub(256)..];
    let text = String::from_utf8_lossy(tail);
    const LEAD: &str = "Archiving file data: ";
    // The last complete report (the very last may still be being printed).
    text.rmatch_indices(LEAD).find_map(|(at, _)| {
        let words: Vec<&str> = text[at + LEAD.len()..].split_whitespace().take(6).collect();
        let [done, done_unit, "of", total, total_unit, pct] = words[..] else { return None };
        // wimlib counts in MiB, or in GiB once the total is 10^10 bytes or more.
        let shift = |unit: &str| match unit {
            "bytes" => Some(0),
            "KiB" => Some(10),
            "MiB" => Some(20),
            "GiB" => Some(30),
            _ => None,
        };
        let done = done.parse::<u64>().ok()?.checked_shl(shift(done_unit)?)?;
        let total = total.parse::<u64>().ok()?.checked_shl(shift(total_unit)?)?;
        (pct.starts_with('(') && done <= total && total > 0).then_some((done, total))
    })
}

/// Scratch space to set aside for re-packing this WIM (`file_size` bytes): twice the WIM's size (an LZX:20
/// re-pack of an LZMS ESD measured 1.38–1.53× its size), but never more than its data uncompressed (the most a
/// re-pack can write: wimlib stores a resource uncompressed when compressing does not make it smaller), plus
/// room for chunk tables and metadata. Asking for the worst case would refuse most machines for a 4.5 GiB ESD
/// (~17 GiB of data); should a re-pack need more than this, it fails before the target is touched.
pub fn repack_bytes(info: &WimInfo, file_size: u64) -> u64 {
    let most = info.uncompressed_bytes.saturating_add(info.uncompressed_bytes / 256);
    most.min(file_size.saturating_mul(2)).saturating_add(64 << 20)
}

const HEADER_SIZE: usize = 208;
const RESHDR_FLAG_SOLID: u8 = 0x10;
const BLOB_ENTRY_SIZE: u64 = 50;
/// The version number of WIMs with solid resources (install.esd).
const VERSION_SOLID: u32 = 0xE00;
/// The "uncompressed size" of a solid resource's own entry in the blob table.
const SOLID_RESOURCE_MAGIC: u64 = 0x1_0000_0000;

#[derive(Debug, thiserror::Error)]
pub enum WimError {
    #[error("cannot read the WIM: {0}")]
    Read(#[from] std::io::Error),
    #[error("not a WIM file (no MSWIM signature)")]
    NotWim,
    #[error("the WIM is damaged or hostile: {0}")]
    Damaged(&'static str),
}

/// What is wrong with a WIM's XML data (read with roxmltree, within bounds).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum XmlError {
    #[error("it is not valid UTF-16")]
    Utf16,
    #[error("it is not well-formed XML: {0}")]
    Parse(String),
    #[error("it holds more than {MAX_XML_NODES} XML nodes")]
    TooManyNodes,
    #[error("its root element is {0}, not WIM")]
    Root(String),
    #[error("an IMAGE element has no valid INDEX attribute")]
    Index,
}

/// A resource header as the WIM stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ResHdr {
    size_in_wim: u64,
    flags: u8,
    offset: u64,
}

impl ResHdr {
    fn parse(b: &[u8]) -> ResHdr {
        let word = u64::from_le_bytes(b[0..8].try_into().unwrap_or_default());
        ResHdr {
            size_in_wim: word & 0x00FF_FFFF_FFFF_FFFF,
            flags: (word >> 56) as u8,
            offset: u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()),
        }
    }
}

/// The facts that decide how a WIM can go onto the stick.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WimInfo {
    pub version: u32,
    pub part_number: u16,
    pub total_parts: u16,
    pub image_count: u32,
    /// Resources (blobs) in the blob table.
    pub resources: u64,
    /// Whether it has solid resources (install.esd): wimlib cannot split those.
    pub solid: bool,
    /// The largest single resource as stored, in bytes: a part holds at least one whole resource.
    pub largest_resource: u64,
    /// The data's size once decompressed (blobs and metadata), in bytes: at most what a re-pack writes.
    pub uncompressed_bytes: u64,
    /// Image indexes (1-based) whose XML says ARCH 9 (x64), in order.
    pub x64_images: Vec<u32>,
    /// The images as the XML describes them, in document order (empty when the XML cannot be read).
    pub images: Vec<WimImage>,
    /// Why the XML data cannot be read, if it cannot. The header and tables decide how the WIM goes onto the
    /// stick, so a bad XML is said here rather than failing the inspection (a split copies the XML as it is).
    pub xml_problem: Option<XmlError>,
}

/// One image (edition) of a WIM, as its XML data describes it. Every string is the WIM's: untrusted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WimImage {
    /// The INDEX attribute (1-based).
    pub index: u32,
    /// NAME ("Windows 11 Pro").
    pub name: Option<String>,
    /// DISPLAYNAME, when present.
    pub display_name: Option<String>,
    /// WINDOWS/EDITIONID ("Professional").
    pub edition_id: Option<String>,
    /// WINDOWS/ARCH as stored (0 x86, 5 ARM, 6 IA64, 9 x64, 12 ARM64).
    pub arch_code: Option<u32>,
    /// WINDOWS/PRODUCTNAME.
    pub product_name: Option<String>,
    /// WINDOWS/INSTALLATIONTYPE ("Client", "Server").
    pub installation_type: Option<String>,
    /// WINDOWS/VERSION: MAJOR, MINOR, BUILD, SPBUILD.
    pub version: Option<WimVersion>,
    /// WINDOWS/LANGUAGES/DEFAULT ("en-US").
    pub language: Option<String>,
}

/// A Windows version from the WIM's XML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WimVersion {
    pub major: u32,
    pub minor: u32,
    pub build: u32,
    pub sp_build: u32,
}

impl WimImage {
    /// The architecture's usual name ("x64", "x86", "arm64", ...), or the number when unknown.
    pub fn arch(&self) -> Option<String> {
        self.arch_code.map(|a| match a {
            0 => "x86".into(),
            5 => "arm".into(),
            6 => "ia64".into(),
            9 => "x64".into(),
            12 => "arm64".into(),
            n => format!("arch {n}"),
        })
    }
}

/// At most this many XML nodes (elements, attributes' owners, text, comments) are parsed: a real install.wim's
/// XML has a few thousand; 4 MiB of `<a/>` would otherwise make about a million, each with roxmltree's
/// bookkeeping.
pub const MAX_XML_NODES: u32 = 200_000;

/// Read the header, blob table and XML of the WIM in `r`.
pub fn inspect<R: Read + Seek>(r: &mut R) -> Result<WimInfo, WimError> {
    let mut h = [0u8; HEADER_SIZE];
    r.seek(SeekFrom::Start(0))?;
    r.read_exact(&mut h).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WimError::NotWim,
        _ => WimError::Read(e),
    })?;
    if &h[0..8] != b"MSWIM\0\0\0" && &h[0..8] != b"WLPWM\0\0\0" {
        return Err(WimError::NotWim);
    }
    let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap_or_default());
    let u16_at = |o: usize| u16::from_le_bytes(h[o..o + 2].try_into().unwrap_or_default());
    if (u32_at(8) as usize) < HEADER_SIZE {
        return Err(WimError::Damaged("header size below 208 bytes"));
    }
    let version = u32_at(12);
    let file_size = r.seek(SeekFrom::End(0))?;
    let fits = |res: &ResHdr| res.offset.checked_add(res.size_in_wim).is_some_and(|end| end <= file_size);
    let blob_table = ResHdr::parse(&h[48..72]);
    let xml = ResHdr::parse(&h[72..96]);
    // The tables are never compressed, so no size of theirs may exceed the file (wimlib checks this only when
    // it knows the file's size, which it does not when it reads a WIM through a loop device); and the blob
    // table is bounded like the streaming split bounds it.
    for (at, too_big) in [
        (48, "blob table larger than the file"),
        (72, "XML data larger than the file"),
        (124, "integrity table larger than the file"),
    ] {
        let uncompressed = u64::from_le_bytes(h[at + 16..at + 24].try_into().unwrap_or_default());
        if uncompressed > file_size {
            return Err(WimError::Damaged(too_big));
        }
    }
    if blob_table.size_in_wim > crate::media::wimsplit::MAX_TABLE_BYTES {
        return Err(WimError::Damaged("blob table over woesafe's limit of 64 MiB"));
    }
    // The XML data is bounded as the split bounds it (a real install.wim's is a few hundred KiB).
    if xml.size_in_wim > crate::media::wimsplit::MAX_XML_BYTES {
        return Err(WimError::Damaged("XML data over woesafe's limit of 4 MiB"));
    }
    let mut info = WimInfo {
        version,
        part_number: u16_at(40),
        total_parts: u16_at(42),
        image_count: u32_at(44),
        resources: 0,
        solid: version == VERSION_SOLID,
        largest_resource: 0,
        uncompressed_bytes: 0,
        x64_images: Vec::new(),
        images: Vec::new(),
        xml_problem: None,
    };
    // The blob table: 50-byte entries, never compressed, read a slice at a time (it may be 64 MiB).
    if !blob_table.size_in_wim.is_multiple_of(BLOB_ENTRY_SIZE) || !fits(&blob_table) {
        return Err(WimError::Damaged("blob table size"));
    }
    r.seek(SeekFrom::Start(blob_table.offset))?;
    let mut left = blob_table.size_in_wim;
    let mut slice = vec![0u8; (BLOB_ENTRY_SIZE as usize) * 1310];
    while left > 0 {
        let n = left.min(slice.len() as u64) as usize;
        r.read_exact(&mut slice[..n])?;
        left -= n as u64;
        for entry in slice[..n].chunks_exact(BLOB_ENTRY_SIZE as usize) {
            count_entry(&mut info, entry);
        }
    }
    drop(slice);
    // The XML data (UTF-16LE, uncompressed): which images are x64.
    if xml.size_in_wim > 0 && xml.flags & 0x04 == 0 && fits(&xml) {
        let mut raw = vec![0u8; xml.size_in_wim as usize];
        r.seek(SeekFrom::Start(xml.offset))?;
        r.read_exact(&mut raw)?;
        match images(&raw) {
            Ok(images) => info.images = images,
            Err(e) => info.xml_problem = Some(e),
        }
        drop(raw);
        info.x64_images = info.images.iter().filter(|i| i.arch_code == Some(9)).map(|i| i.index).collect();
    }
    Ok(info)
}

/// The images described by a WIM's XML data (UTF-16LE, an optional byte-order mark, ending at the first NUL as
/// wimlib reads it), parsed with roxmltree within MAX_XML_NODES and without DTDs. The caller bounds the bytes
/// (MAX_XML_BYTES).
pub fn images(raw: &[u8]) -> Result<Vec<WimImage>, XmlError> {
    // Decoded straight from the bytes: no copy of them as UTF-16 units.
    let mut text = String::with_capacity(raw.len() / 2);
    for c in char::decode_utf16(raw.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]))) {
        match c.map_err(|_| XmlError::Utf16)? {
            '\0' => break,
            c => text.push(c),
        }
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let options = roxmltree::ParsingOptions { allow_dtd: false, nodes_limit: MAX_XML_NODES, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(text, options).map_err(|e| match e {
        roxmltree::Error::NodesLimitReached => XmlError::TooManyNodes,
        e => XmlError::Parse(e.to_string()),
    })?;
    let root = doc.root_element();
    if root.tag_name().name() != "WIM" {
        return Err(XmlError::Root(root.tag_name().name().chars().take(64).collect()));
    }
    let mut out = Vec::new();
    for image in root.children().filter(|c| c.has_tag_name("IMAGE")) {
        let index = image.attribute("INDEX").and_then(parse_u32).ok_or(XmlError::Index)?;
        let windows = child(image, "WINDOWS");
        let version = windows.and_then(|w| child(w, "VERSION")).map(|v| WimVersion {
            major: number(child(v, "MAJOR")).unwrap_or(0),
            minor: number(child(v, "MINOR")).unwrap_or(0),
            build: number(child(v, "BUILD")).unwrap_or(0),
            sp_build: number(child(v, "SPBUILD")).unwrap_or(0),
        });
        out.push(WimImage {
            index,
            name: text_of(child(image, "NAME")),
            display_name: text_of(child(image, "DISPLAYNAME")),
            edition_id: text_of(windows.and_then(|w| child(w, "EDITIONID"))),
            arch_code: number(windows.and_then(|w| child(w, "ARCH"))),
            product_name: text_of(windows.and_then(|w| child(w, "PRODUCTNAME"))),
            installation_type: text_of(windows.and_then(|w| child(w, "INSTALLATIONTYPE"))),
            version,
            language: text_of(windows.and_then(|w| child(w, "LANGUAGES")).and_then(|l| child(l, "DEFAULT"))),
        });
    }
    Ok(out)
}

/// The first child element of `n` named `name`.
fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.has_tag_name(name))
}

/// An element's text, trimmed; None when absent or empty.
fn text_of(n: Option<roxmltree::Node<'_, '_>>) -> Option<String> {
    let t: String = n?.children().filter_map(|c| c.text()).collect();
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn number(n: Option<roxmltree::Node<'_, '_>>) -> Option<u32> {
    text_of(n).and_then(|t| parse_u32(&t))
}

/// A decimal number as the WIM's XML writes it (wimlib also accepts 0x-prefixed hexadecimal).
fn parse_u32(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Count one 50-byte blob table entry into `info`.
fn count_entry(info: &mut WimInfo, entry: &[u8]) {
    let res = ResHdr::parse(&entry[..24]);
    info.resources += 1;
    if res.flags & RESHDR_FLAG_SOLID != 0 {
        info.solid = true;
    }
    // Metadata resources count too: they all go into the first part.
    info.largest_resource = info.largest_resource.max(res.size_in_wim);
    let uncompressed = u64::from_le_bytes(entry[16..24].try_into().unwrap_or_default());
    info.uncompressed_bytes = info.uncompressed_bytes.saturating_add(match res.flags & RESHDR_FLAG_SOLID {
        0 => uncompressed,
        // In a solid WIM, an entry with this magic size is a whole solid resource; the others are the blobs in
        // it, with their own size where a resource has its stored size.
        _ if uncompressed == SOLID_RESOURCE_MAGIC => 0,
        _ => res.size_in_wim,
    });
}

/// The names `wimlib-imagex split` gives the parts of `sources/install.swm`: install.swm, install2.swm, ...
pub fn part_name(base: &str, n: usize) -> String {
    if n <= 1 { format!("{base}.swm") } else { format!("{base}{n}.swm") }
}

/// Where part `n` of the WIM at `wim_path` goes: beside it, named as `part_name` says (sources/install2.swm).
pub fn part_path(wim_path: &str, n: usize) -> String {
    let name = part_name("install", n);
    match wim_path.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{name}"),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn reshdr(size: u64, flags: u8, offset: u64, orig: u64) -> Vec<u8> {
        let mut b = ((u64::from(flags) << 56) | size).to_le_bytes().to_vec();
        b.extend(offset.to_le_bytes());
        b.extend(orig.to_le_bytes());
        b
    }

    /// A WIM with the given blob resources (size, flags) and XML.
    fn wim(version: u32, blobs: &[(u64, u8)], xml: &str, parts: (u16, u16)) -> Vec<u8> {
        let mut table = Vec::new();
        for (size, flags) in blobs {
            table.extend(reshdr(*size, *flags, 208, *size));
            table.extend(parts.0.to_le_bytes());
            table.extend(1u32.to_le_bytes());
            table.extend([0u8; 20]);
        }
        let xml_bytes: Vec<u8> = "\u{feff}"
            .chars()
            .chain(xml.chars())
            .collect::<String>()
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        let mut h = vec![0u8; 208];
        h[0..8].copy_from_slice(b"MSWIM\0\0\0");
        h[8..12].copy_from_slice(&208u32.to_le_bytes());
        h[12..16].copy_from_slice(&version.to_le_bytes());
        h[40..42].copy_from_slice(&parts.0.to_le_bytes());
        h[42..44].copy_from_slice(&parts.1.to_le_bytes());
        h[44..48].copy_from_slice(&2u32.to_le_bytes());
        let table_off = 208u64;
        let xml_off = table_off + table.len() as u64;
        h[48..72].copy_from_slice(&reshdr(table.len() as u64, 0, table_off, table.len() as u64));
        h[72..96].copy_from_slice(&reshdr(xml_bytes.len() as u64, 0, xml_off, xml_bytes.len() as u64));
        h.extend(table);
        h.extend(xml_bytes);
        h
    }

    const XML: &str = "<WIM><IMAGE INDEX=\"1\"><WINDOWS><ARCH>0</ARCH></WINDOWS></IMAGE>\
                       <IMAGE INDEX=\"2\"><WINDOWS><ARCH>9</ARCH></WINDOWS></IMAGE></WIM>";

    #[test]
    fn splittable_wim() {
        let w = wim(0x10D00, &[(3 << 30, 0x04), (2 << 30, 0x04), (1 << 20, 0x06)], XML, (1, 1));
        let info = inspect(&mut Cursor::new(w)).unwrap();
        assert_eq!(info.resources, 3);
        assert!(!info.solid);
        assert_eq!(info.largest_resource, 3 << 30);
        assert_eq!(info.x64_images, vec![2]);
        assert_eq!(info.uncompressed_bytes, (3 << 30) + (2 << 30) + (1 << 20));
    }

    #[test]
    fn solid_and_odd_wims() {
        let esd = inspect(&mut Cursor::new(wim(0xE00, &[(1 << 30, 0x14)], XML, (1, 1)))).unwrap();
        assert!(esd.solid);
        assert_eq!(esd.uncompressed_bytes, 1 << 30);
        // Twice the file, but never more than its data uncompressed.
        assert_eq!(repack_bytes(&esd, 300 << 20), (600 << 20) + (64 << 20));
        assert_eq!(repack_bytes(&esd, 4 << 30), (1 << 30) + (4 << 20) + (64 << 20));
        let solid_flag = inspect(&mut Cursor::new(wim(0x10D00, &[(1 << 20, 0x10)], XML, (1, 1)))).unwrap();
        assert!(solid_flag.solid);
        let huge = inspect(&mut Cursor::new(wim(0x10D00, &[((4000 << 20) + 1, 0x04)], XML, (1, 1)))).unwrap();
        assert_eq!(huge.largest_resource, (4000 << 20) + 1);
        let part = inspect(&mut Cursor::new(wim(0x10D00, &[(1 << 20, 0x04)], XML, (1, 2)))).unwrap();
        assert_eq!((part.part_number, part.total_parts), (1, 2));
    }

    #[test]
    fn tables_past_the_end_are_damage_not_allocations() {
        let mut w = wim(0x10D00, &[(1 << 20, 0x04)], XML, (1, 1));
        w[48..56].copy_from_slice(&(50u64 << 30).to_le_bytes()); // a blob table of 50 GiB
        assert!(matches!(inspect(&mut Cursor::new(w)), Err(WimError::Damaged(_))));
    }

    #[test]
    fn xml_over_the_splits_bound_is_refused() {
        // Just at the bound: read (and the x64 image still found); one unit more: refused before any of it is
        // read, however small the blob table.
        let pad = "x".repeat((crate::media::wimsplit::MAX_XML_BYTES as usize - 2) / 2 - XML.len() - 9);
        let at_limit = wim(0x10D00, &[(1 << 20, 0x04)], &format!("{XML}<!-- {pad} -->"), (1, 1));
        let xml_len = u64::from_le_bytes(at_limit[72..80].try_into().unwrap()) & 0x00FF_FFFF_FFFF_FFFF;
        assert_eq!(xml_len, crate::media::wimsplit::MAX_XML_BYTES);
        assert_eq!(inspect(&mut Cursor::new(at_limit)).unwrap().x64_images, vec![2]);
        let over = wim(0xE00, &[(1 << 20, 0x04)], &format!("{XML}<!-- {pad}x -->"), (1, 1));
        let err = inspect(&mut Cursor::new(over)).unwrap_err();
        assert!(matches!(err, WimError::Damaged(m) if m.contains("XML data over woesafe's limit of 4 MiB")));
    }

    #[test]
    fn a_large_blob_table_is_read_a_slice_at_a_time() {
        // More entries than one slice holds, and not a multiple of it: every one counted.
        let blobs: Vec<(u64, u8)> = (0..3001).map(|i| (i + 1, 0x04)).collect();
        let info = inspect(&mut Cursor::new(wim(0x10D00, &blobs, XML, (1, 1)))).unwrap();
        assert_eq!(info.resources, 3001);
        assert_eq!(info.largest_resource, 3001);
        assert_eq!(info.uncompressed_bytes, 3001 * 3002 / 2);
    }

    fn utf16(xml: &str) -> Vec<u8> {
        "\u{feff}".chars().chain(xml.chars()).collect::<String>().encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    #[test]
    fn images_are_read_from_the_xml() {
        let xml = "<WIM><TOTALBYTES>5</TOTALBYTES><IMAGE INDEX=\"1\"><NAME>Windows 11 Home</NAME><WINDOWS>\
                   <ARCH>9</ARCH><PRODUCTNAME>Microsoft&#174; Windows&#174;</PRODUCTNAME><EDITIONID>Core</EDITIONID>\
                   <INSTALLATIONTYPE>Client</INSTALLATIONTYPE><LANGUAGES><LANGUAGE>en-US</LANGUAGE><DEFAULT>en-US\
                   </DEFAULT></LANGUAGES><VERSION><MAJOR>10</MAJOR><MINOR>0</MINOR><BUILD>22631</BUILD>\
                   <SPBUILD>2861</SPBUILD></VERSION></WINDOWS><DISPLAYNAME>Windows 11 Home</DISPLAYNAME></IMAGE>\
                   <!-- a comment --><IMAGE INDEX=\"2\"><NAME>Arm &amp; more</NAME><WINDOWS><ARCH>12</ARCH>\
                   </WINDOWS></IMAGE></WIM>\0garbage after the NUL";
        let images = images(&utf16(xml)).unwrap();
        assert_eq!(images.len(), 2);
        let home = &images[0];
        assert_eq!(
            (home.index, home.name.as_deref(), home.edition_id.as_deref()),
            (1, Some("Windows 11 Home"), Some("Core"))
        );
        assert_eq!((home.arch().as_deref(), home.language.as_deref()), (Some("x64"), Some("en-US")));
        assert_eq!(home.product_name.as_deref(), Some("Microsoft\u{ae} Windows\u{ae}"));
        assert_eq!(home.version, Some(WimVersion { major: 10, minor: 0, build: 22631, sp_build: 2861 }));
        assert_eq!((images[1].name.as_deref(), images[1].arch().as_deref()), (Some("Arm & more"), Some("arm64")));
        assert_eq!(images[1].version, None);
        // And through inspect: the x64 images.
        let info = inspect(&mut Cursor::new(wim(0x10D00, &[(1 << 20, 0x04)], XML, (1, 1)))).unwrap();
        assert_eq!(info.images.iter().map(|i| i.arch_code).collect::<Vec<_>>(), [Some(0), Some(9)]);
    }

    #[test]
    fn hostile_xml_is_a_typed_error() {
        let err = |xml: &str| images(&utf16(xml)).unwrap_err();
        assert!(matches!(err("<WIM><IMAGE INDEX=\"1\"></WIM>"), XmlError::Parse(_)));
        assert_eq!(err("<NOTWIM/>"), XmlError::Root("NOTWIM".into()));
        assert_eq!(err("<WIM><IMAGE/></WIM>"), XmlError::Index);
        assert_eq!(err("<WIM><IMAGE INDEX=\"x\"/></WIM>"), XmlError::Index);
        // No DTD, so no entity expansion (a billion laughs).
        let laughs = "<!DOCTYPE WIM [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]>\
                      <WIM><IMAGE INDEX=\"1\"><NAME>&b;</NAME></IMAGE></WIM>";
        assert!(matches!(err(laughs), XmlError::Parse(_)));
        // Nodes are bounded: 4 MiB of tiny elements is refused, not turned into millions of nodes.
        let many = format!("<WIM>{}</WIM>", "<a/>".repeat(MAX_XML_NODES as usize + 1));
        assert_eq!(err(&many), XmlError::TooManyNodes);
        // A lone surrogate is not UTF-16.
        let mut bad = utf16("<WIM/>");
        bad.extend(0xD800u16.to_le_bytes());
        assert_eq!(images(&bad).unwrap_err(), XmlError::Utf16);
        // Through inspect: said in the WimInfo, whose header and table facts still stand.
        let info = inspect(&mut Cursor::new(wim(0x10D00, &[(1 << 20, 0x04)], "<WIM><IMAGE>", (1, 1)))).unwrap();
        assert!(matches!(info.xml_problem, Some(XmlError::Parse(_))), "{info:?}");
        assert_eq!((info.resources, info.images.len(), info.x64_images.len()), (1, 0, 0));
    }

    #[test]
    fn not_a_wim() {
        assert!(matches!(inspect(&mut Cursor::new(vec![0u8; 300])), Err(WimError::NotWim)));
        assert!(matches!(inspect(&mut Cursor::new(b"MSWIM".to_vec())), Err(WimError::NotWim)));
    }

    #[test]
    fn export_progress_is_read_from_wimlibs_output() {
        let out = b"Using LZX compression with 2 threads\nArchiving file data: 0 MiB of 11 MiB (0%) done\rArchiving \
                    file data: 7 MiB of 11 MiB (63%) done\rArchiving file data: 8 MiB";
        assert_eq!(export_progress(out), Some((7 << 20, 11 << 20)));
        assert_eq!(export_progress(b"Using LZX compression with 2 threads\n"), None);
        assert_eq!(export_progress(b"Archiving file data: 12 MiB of 11 MiB (100%) done"), None);
        // A real install.esd holds over 10^10 bytes of data: wimlib then counts in GiB.
        assert_eq!(export_progress(b"Archiving file data: 3 GiB of 16 GiB (18%) done"), Some((3 << 30, 16 << 30)));
    }

    #[test]
    fn part_names_follow_wimlib() {
        assert_eq!(part_name("install", 1), "install.swm");
        assert_eq!(part_name("install", 2), "install2.swm");
        assert_eq!(part_name("install", 12), "install12.swm");
        assert_eq!(part_path("Sources/Install.wim", 2), "Sources/install2.swm");
        assert_eq!(part_path("install.esd", 1), "install.swm");
    }
}
