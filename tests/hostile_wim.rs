//! Hostile WIMs: an install.wim / install.esd whose blob table or XML data is as large as it may declare, in an
//! ISO of a few dozen MiB (the rest of the WIM a sparse hole). A real `woesafe write` of each must stay within
//! 256 MiB (the peak of the largest process: woesafe, the worker or a helper) and 10 s; the ones over woesafe's bounds are refused with exit 3 before the
//! target is touched. (The bounds themselves: `wimsplit::MAX_BLOBS`, `MAX_TABLE_BYTES`, `MAX_XML_BYTES`; the
//! unit tests in src/media/wim.rs and src/media/wimsplit.rs check them on WIMs built in memory.)

mod common;
use common::measure::{assert_write, measure_here};
use common::*;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use woesafe::media::wimsplit::{MAX_BLOBS, MAX_TABLE_BYTES, MAX_XML_BYTES};

const HEADER: u64 = 208;
/// Over FAT32's largest file, so that a FAT32 write must split (or re-pack) it.
const WIM_SIZE: u64 = (4 << 30) + (200 << 20);

fn reshdr(h: &mut [u8], at: usize, size: u64, offset: u64) {
    h[at..at + 8].copy_from_slice(&size.to_le_bytes());
    h[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
    h[at + 16..at + 24].copy_from_slice(&size.to_le_bytes());
}

/// A WIM header of `version` with one image, its blob table and XML data as given.
fn header(version: u32, table: (u64, u64), xml: (u64, u64)) -> Vec<u8> {
    let mut h = vec![0u8; HEADER as usize];
    h[0..8].copy_from_slice(b"MSWIM\0\0\0");
    h[8..12].copy_from_slice(&(HEADER as u32).to_le_bytes());
    h[12..16].copy_from_slice(&version.to_le_bytes());
    h[40..44].copy_from_slice(&[1, 0, 1, 0]);
    h[44..48].copy_from_slice(&1u32.to_le_bytes());
    reshdr(&mut h, 48, table.0, table.1);
    reshdr(&mut h, 72, xml.0, xml.1);
    h
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// An uncompressed install.wim of `entries` blob table entries: the image's metadata, then distinct 1-byte
/// blobs none of which follows the one before (the most the split plan keeps for each), then the XML.
fn wim_of_blobs(entries: u64) -> Vec<u8> {
    let xml = utf16("\u{feff}<WIM><IMAGE INDEX=\"1\"></IMAGE></WIM>");
    let table_len = entries * 50;
    let mut w = header(0x10D00, (table_len, HEADER), (xml.len() as u64, HEADER + table_len));
    w.reserve(table_len as usize + xml.len());
    for i in 0..entries {
        let flags: u64 = if i == 0 { 0x02 } else { 0 };
        w.extend((1 | (flags << 56)).to_le_bytes());
        w.extend(((1 << 20) + 2 * i).to_le_bytes()); // offset: in the hole past the table
        w.extend(1u64.to_le_bytes());
        w.extend(1u16.to_le_bytes());
        w.extend(1u32.to_le_bytes());
        w.extend((i + 1).to_le_bytes());
        w.extend([0u8; 12]);
    }
    w.extend(xml);
    w
}

/// `bytes` followed by a hole up to `size`, at `path`.
fn sparse_file(path: &Path, bytes: &[u8], size: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.write_all_at(bytes, 0).unwrap();
    f.set_len(size.max(bytes.len() as u64)).unwrap();
}

/// An ISO (UDF, as Windows' are) with bootmgr, sources/boot.wim and sources/`name` holding `wim` padded to
/// `size` with zeros, plus `extra` files in sources/.
fn iso_with_wim(dir: &Path, name: &str, wim: &[u8], size: u64, extra: &[(&str, &[u8])]) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("sources")).unwrap();
    std::fs::write(tree.join("bootmgr"), [b'x'; 100]).unwrap();
    std::fs::write(tree.join("sources/boot.wim"), [b'x'; 100]).unwrap();
    for (n, b) in extra {
        std::fs::write(tree.join("sources").join(n), b).unwrap();
    }
    sparse_file(&tree.join("sources").join(name), wim, size);
    let iso = dir.join("hostile.iso");
    make_sparse_iso(&["-udf", "-allow-limited-size", "-V", "CCCOMA_X64FRE_EN-US_DV9"], &tree, &iso);
    std::fs::remove_dir_all(&tree).unwrap();
    iso
}

fn ready(test: &str) -> bool {
    if !need_root(test) {
        return false;
    }
    if !have("genisoimage") {
        woesafe::report_skip(test, "needs genisoimage");
        return false;
    }
    true
}

/// F5: a blob table of `MAX_BLOBS` entries, none of whose blobs follows another (no two share a piece of a
/// part): split planned and written. Once 374 MiB (at the 64 MiB table bound).
#[test]
fn most_blobs_the_split_plans() {
    measure_here();
    if !ready("most_blobs_the_split_plans") {
        return;
    }
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let iso = iso_with_wim(work.path(), "install.wim", &wim_of_blobs(MAX_BLOBS), WIM_SIZE, &[]);
    let rss = assert_write("most_blobs_the_split_plans", &iso, &["--boot", "bios"], 0, &[]);
    // The plan keeps about 120 bytes a blob: well under the 256 MiB bound.
    assert!(rss <= 192 * 1024, "peak RSS {} MiB", rss / 1024);
}

/// F5: one more entry, and the tester's table of 1,342,177 (64 MiB): refused before the target is touched.
#[test]
fn more_blobs_than_the_split_plans() {
    measure_here();
    if !ready("more_blobs_than_the_split_plans") {
        return;
    }
    for entries in [MAX_BLOBS + 1, (MAX_TABLE_BYTES - 14) / 50] {
        let work = tempfile::tempdir_in("/var/tmp").unwrap();
        let iso = iso_with_wim(work.path(), "install.wim", &wim_of_blobs(entries), WIM_SIZE, &[]);
        let expect = format!("its blob table has {entries} entries, over woesafe's limit of {MAX_BLOBS}");
        assert_write("more_blobs_than_the_split_plans", &iso, &["--boot", "bios"], 3, &["hostile", &expect]);
    }
}

/// The blob table (64 MiB of zero entries) and XML (64 MiB of UTF-16) `wim::inspect` once held at once, with
/// two more copies of the XML: 302 MiB.
fn wim_of_xml(version: u32) -> Vec<u8> {
    let (table, xml) = (MAX_TABLE_BYTES - 14, 64u64 << 20);
    let mut w = header(version, (table, HEADER), (xml, HEADER + table));
    w.resize((HEADER + table) as usize, 0);
    // U+4E2D in UTF-16LE, repeated (a memcpy: encoding it char by char takes seconds unoptimised).
    w.extend(0x4e2du16.to_le_bytes().repeat((xml / 2) as usize));
    w
}

/// F4, the re-pack path: an install.esd over FAT32's limit with 64 MiB of XML. Refused (it cannot go onto a
/// 2 GiB target) within bounds.
#[test]
fn esd_with_huge_xml() {
    measure_here();
    if !ready("esd_with_huge_xml") {
        return;
    }
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let iso = iso_with_wim(work.path(), "install.esd", &wim_of_xml(0xE00), WIM_SIZE, &[]);
    assert_write("esd_with_huge_xml", &iso, &["--boot", "bios"], 3, &[]);
}

/// F4, the Windows 7 path (which reads install.wim's XML whatever its size): a small install.wim with 64 MiB of
/// XML is written (its XML, over `MAX_XML_BYTES`, is not read) within bounds.
#[test]
fn windows_7_wim_with_huge_xml() {
    measure_here();
    if !ready("windows_7_wim_with_huge_xml") {
        return;
    }
    const { assert!(64 << 20 > MAX_XML_BYTES) };
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let wim = wim_of_xml(0x10D00);
    let cversion: &[u8] = b"[HOSTBUILD]\r\nMinClient=7600.16385\r\nMinServer=7600.16385\r\n";
    let iso = iso_with_wim(work.path(), "install.wim", &wim, wim.len() as u64, &[("cversion.ini", cversion)]);
    assert_write("windows_7_wim_with_huge_xml", &iso, &[], 0, &[]);
}
