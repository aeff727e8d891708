//! The streaming WIM split makes the same parts as `wimlib-imagex split`, byte for byte but for the split
//! set's GUID (which wimlib draws anew for each split and which is the same in all our parts): uncompressed,
//! XPRESS and LZX WIMs, with an integrity table, with duplicate and ignored blob-table entries, with XML that
//! wimlib re-serializes, and with every part size from one resource per part to a single part.

mod common;
use common::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use woesafe::media::wimsplit::{self, SplitError};

fn wimlib(args: &[&str]) -> String {
    let out = Command::new("wimlib-imagex").args(args).output().unwrap();
    assert!(out.status.success(), "wimlib-imagex {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn skip_without_wimlib(test: &str) -> bool {
    if have("wimlib-imagex") {
        return false;
    }
    woesafe::report_skip(test, "wimlib-imagex not installed (Debian package wimtools)");
    true
}

/// A deterministic tree: compressible files of many sizes, an incompressible one (stored uncompressed even in a
/// compressed WIM), two identical files (one blob), an empty file.
fn tree(dir: &Path) -> PathBuf {
    let t = dir.join("tree");
    std::fs::create_dir_all(t.join("Windows/System32")).unwrap();
    std::fs::create_dir_all(t.join("sources")).unwrap();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for (i, size) in [100usize, 5_000, 40_000, 300_000, 2_000_000, 700_000, 1_500_000, 90_000].iter().enumerate() {
        let block: Vec<u8> = (0..4096).map(|_| rnd() as u8).collect();
        let data: Vec<u8> = block.iter().cycle().take(*size).copied().collect();
        let dir = if i % 2 == 0 { "Windows/System32" } else { "sources" };
        std::fs::write(t.join(format!("{dir}/file{i}.bin")), data).unwrap();
    }
    let noise: Vec<u8> = (0..600_000).map(|_| rnd() as u8).collect();
    std::fs::write(t.join("sources/noise.cab"), noise).unwrap();
    std::fs::write(t.join("same1.txt"), b"same".repeat(3000)).unwrap();
    std::fs::write(t.join("Windows/same2.txt"), b"same".repeat(3000)).unwrap();
    std::fs::write(t.join("empty"), b"").unwrap();
    t
}

/// A two-image WIM of `tree` with this compression (and an integrity table with `check`).
fn make_wim(dir: &Path, tree: &Path, compress: &str, check: bool) -> PathBuf {
    let wim = dir.join(format!("{compress}{}.wim", if check { "-check" } else { "" }));
    let (w, t) = (wim.to_str().unwrap(), tree.to_str().unwrap());
    let c = format!("--compress={compress}");
    let mut args = vec!["capture", t, w, "Windows 11 Home", &c];
    if check {
        args.push("--check");
    }
    wimlib(&args);
    std::fs::write(tree.join("extra.txt"), b"only in image 2").unwrap();
    let mut args = vec!["append", t, w, "Windows 11 Pro"];
    if check {
        args.push("--check");
    }
    wimlib(&args);
    std::fs::remove_file(tree.join("extra.txt")).unwrap();
    wimlib(&[
        "info",
        w,
        "2",
        "--image-property",
        "WINDOWS/ARCH=9",
        "--image-property",
        "WINDOWS/EDITIONID=Professional",
    ]);
    wim
}

/// wimlib's parts for this part size (in MiB, as wimlib-imagex takes it), in order.
fn wimlib_parts(wim: &Path, dir: &Path, mib: &str) -> Vec<Vec<u8>> {
    let out = dir.join(format!("ref-{mib}"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir(&out).unwrap();
    wimlib(&["split", wim.to_str().unwrap(), out.join("install.swm").to_str().unwrap(), mib]);
    let mut parts = Vec::new();
    for n in 1.. {
        let p = out.join(woesafe::media::wim::part_name("install", n));
        let Ok(b) = std::fs::read(&p) else { break };
        parts.push(b);
    }
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), parts.len(), "parts named as expected");
    parts
}

/// Our parts, read through the part readers from the WIM file.
fn our_parts(wim: &Path, part_bytes: u64) -> (Vec<Vec<u8>>, wimsplit::SplitPlan) {
    let guid = *b"woesafe-guid-16b";
    let plan = wimsplit::plan(&mut std::fs::File::open(wim).unwrap(), part_bytes, guid).unwrap();
    let mut parts = Vec::new();
    for part in &plan.parts {
        let mut bytes = Vec::new();
        // Small reads, to cross piece boundaries at odd places.
        let mut r = part.reader(std::fs::File::open(wim).unwrap());
        let mut buf = [0u8; 7777];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
        }
        assert_eq!(bytes.len() as u64, part.size, "part {} is as long as planned", part.number);
        assert_eq!(&bytes[24..40], &guid, "every part carries the set's GUID");
        parts.push(bytes);
    }
    (parts, plan)
}

fn assert_same_but_guid(ours: &[Vec<u8>], theirs: &[Vec<u8>], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: number of parts");
    let their_guid = &theirs[0][24..40];
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert_eq!(&b[24..40], their_guid, "wimlib's parts share one GUID");
        assert_eq!(a.len(), b.len(), "{what}: part {} length", i + 1);
        let mut a = a.clone();
        a[24..40].copy_from_slice(their_guid);
        if let Some(at) = a.iter().zip(b).position(|(x, y)| x != y) {
            panic!("{what}: part {} differs from wimlib's at byte {at}", i + 1);
        }
    }
}

fn mib_to_bytes(mib: &str) -> u64 {
    (mib.parse::<f64>().unwrap() * (1u64 << 20) as f64) as u64
}

#[test]
fn parts_are_wimlibs_byte_for_byte() {
    if skip_without_wimlib("parts_are_wimlibs_byte_for_byte") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = tree(dir.path());
    for (compress, check) in [("none", false), ("XPRESS", false), ("LZX", false), ("LZX", true), ("none", true)] {
        let wim = make_wim(dir.path(), &t, compress, check);
        for mib in ["0.25", "0.7", "1", "2.5", "100"] {
            let theirs = wimlib_parts(&wim, dir.path(), mib);
            let (ours, plan) = our_parts(&wim, mib_to_bytes(mib));
            assert_same_but_guid(&ours, &theirs, &format!("{compress} check={check} part size {mib} MiB"));
            assert_eq!(plan.parts.len(), theirs.len());
        }
        // The smallest part size puts one resource in each part: many parts.
        assert!(wimlib_parts(&wim, dir.path(), "0.25").len() >= 5, "{compress}: the test splits into many parts");
    }
}

/// Rewrite a WIM's blob table or XML: the new one goes at the end of the file and the header points at it.
fn patch(wim: &Path, out: &Path, table: Option<Vec<u8>>, xml: Option<Vec<u8>>) {
    let mut b = std::fs::read(wim).unwrap();
    let put = |b: &mut Vec<u8>, at: usize, data: Vec<u8>| {
        let off = b.len() as u64;
        let len = data.len() as u64;
        b.extend(data);
        b[at..at + 8].copy_from_slice(&((2u64 << 56) | len).to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
        b[at + 16..at + 24].copy_from_slice(&len.to_le_bytes());
    };
    if let Some(t) = table {
        put(&mut b, 48, t);
    }
    if let Some(x) = xml {
        put(&mut b, 72, x);
    }
    std::fs::File::create(out).unwrap().write_all(&b).unwrap();
}

fn table_of(wim: &Path) -> Vec<u8> {
    let b = std::fs::read(wim).unwrap();
    let off = u64::from_le_bytes(b[56..64].try_into().unwrap()) as usize;
    let len = (u64::from_le_bytes(b[48..56].try_into().unwrap()) & 0x00FF_FFFF_FFFF_FFFF) as usize;
    b[off..off + len].to_vec()
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

#[test]
fn tables_and_xml_are_read_as_wimlib_reads_them() {
    if skip_without_wimlib("tables_and_xml_are_read_as_wimlib_reads_them") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = tree(dir.path());
    let wim = make_wim(dir.path(), &t, "LZX", false);
    // A blob table with entries wimlib ignores: a duplicate, one with a zero hash, one of another part, and
    // one of size 0.
    let table = table_of(&wim);
    let entry = |i: usize| table[i * 50..i * 50 + 50].to_vec();
    let last = table.len() / 50 - 1;
    let mut t2 = table.clone();
    t2.extend(entry(last)); // a duplicate of a file blob
    let mut zero_hash = entry(last - 1);
    zero_hash[30..50].fill(0);
    t2.extend(zero_hash);
    let mut other_part = entry(last - 2);
    other_part[24..26].copy_from_slice(&2u16.to_le_bytes());
    other_part[49] ^= 0x55;
    t2.extend(other_part);
    let mut empty = entry(last - 3);
    empty[16..24].fill(0);
    empty[0..7].fill(0);
    empty[49] ^= 0xAA;
    t2.extend(empty);
    let odd_table = dir.path().join("odd-table.wim");
    patch(&wim, &odd_table, Some(t2), None);
    // XML as other tools write it: a declaration, whitespace, comments, a self-closing element, entities,
    // CDATA, attributes in single quotes with spaces around '=', an end tag with a space.
    let xml = "\u{feff}<?xml version=\"1.0\"?>\n<!-- made by hand -->\n<WIM>\n  <TOTALBYTES>123</TOTALBYTES>\n  \
               <IMAGE INDEX = '1'><NAME>Windows 11 Home</NAME><DESCRIPTION/><FLAGS>Core</FLAGS>\
               <WINDOWS><ARCH>9</ARCH><EDITIONID>Core</EDITIONID></WINDOWS></IMAGE >\n  \
               <IMAGE INDEX=\"2\"><NAME>Pro &amp; more &lt;x&gt; 'q' \"d\"</NAME>\
               <DISPLAYNAME><![CDATA[a < b & c]]></DISPLAYNAME><!-- c --><?pi x?>\
               <WINDOWS><ARCH>9</ARCH></WINDOWS></IMAGE>\n</WIM>\n<!-- trailing -->";
    // And the shapes where libxml2 (wimlib 1.13's XML library) changes what it writes back: escapes and
    // references in text and attributes, white space in attributes, line ends, non-ASCII text, namespace
    // declarations after other attributes, no byte-order mark, a NUL at the end.
    let img2 = "<IMAGE INDEX=\"2\"><NAME>b</NAME></IMAGE>";
    let variants = [
        xml.to_string(),
        format!(
            "\u{feff}<WIM><IMAGE INDEX=\"1\" A=\"x&lt;&gt;&amp;&quot;&apos;'\ty\nz&#13;w&#10;\" B='\"'><NAME>a&gt;b&lt;c&amp;\
             d\"e'f&#65;&#x42;\r\ng\rh</NAME><C><![CDATA[x<y&z]]></C><!--c--><?p   q ?></IMAGE>{img2}</WIM>"
        ),
        format!(
            "\u{feff}<WIM><IMAGE INDEX=\"1\" N=\"\u{e9}\u{20ac}\u{1d11e}\"><NAME>\u{e9}\u{1d11e}</NAME></IMAGE>{img2}</WIM>"
        ),
        format!(
            "\u{feff}<WIM a=\"1\" xmlns=\"urn:x\" xmlns:p=\"urn:y\"><IMAGE INDEX=\"1\"><p:NAME>a</p:NAME></IMAGE>{img2}</WIM>"
        ),
        format!("<WIM> <IMAGE INDEX=\"1\"> <NAME> </NAME> </IMAGE> {img2} </WIM>\0"),
    ];
    let mut wims = vec![odd_table];
    for (i, v) in variants.iter().enumerate() {
        let w = dir.path().join(format!("odd-xml-{i}.wim"));
        patch(&wim, &w, None, Some(utf16(v)));
        wims.push(w);
    }
    for w in &wims {
        wimlib(&["verify", w.to_str().unwrap()]);
        for mib in ["0.25", "1", "100"] {
            let theirs = wimlib_parts(w, dir.path(), mib);
            let (ours, _) = our_parts(w, mib_to_bytes(mib));
            assert_same_but_guid(&ours, &theirs, &format!("{} at {mib} MiB", w.display()));
        }
    }
    // Our XML as wimlib 1.13 writes it.
    let (ours, n) = wimsplit::wimlib_xml(&utf16(xml)).unwrap();
    assert_eq!(n, 2);
    let units: Vec<u16> = ours.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let s = String::from_utf16(&units).unwrap();
    assert!(s.starts_with("\u{feff}<!-- made by hand -->\n<WIM>\n  <TOTALBYTES>"), "{s}");
    assert!(s.contains("<IMAGE INDEX=\"1\"><NAME>"), "{s}");
    assert!(s.contains("<DESCRIPTION/>"), "{s}");
    assert!(s.contains("Pro &amp; more &lt;x&gt; 'q' \"d\""), "{s}");
    assert!(s.contains("<DISPLAYNAME><![CDATA[a < b & c]]></DISPLAYNAME><!-- c --><?pi x?>"), "{s}");
    assert!(s.ends_with("</IMAGE>\n</WIM>\n<!-- trailing -->\n"), "{s}");
}

#[test]
fn what_cannot_be_streamed_says_why() {
    if skip_without_wimlib("what_cannot_be_streamed_says_why") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = tree(dir.path());
    let solid = dir.path().join("solid.esd");
    wimlib(&["capture", t.to_str().unwrap(), solid.to_str().unwrap(), "one", "--solid"]);
    let plan = |p: &Path| wimsplit::plan(&mut std::fs::File::open(p).unwrap(), 4000 << 20, [0; 16]);
    assert!(matches!(plan(&solid), Err(SplitError::NeedsRepack(ref w)) if w.contains("solid")), "{:?}", plan(&solid));
    let lzms = dir.path().join("lzms.wim");
    wimlib(&["capture", t.to_str().unwrap(), lzms.to_str().unwrap(), "one", "--compress=LZMS"]);
    assert!(matches!(plan(&lzms), Err(SplitError::NeedsRepack(_))), "{:?}", plan(&lzms));
    let pipable = dir.path().join("pipable.wim");
    wimlib(&["capture", t.to_str().unwrap(), pipable.to_str().unwrap(), "one", "--pipable"]);
    assert!(matches!(plan(&pipable), Err(SplitError::NeedsRepack(ref w)) if w.contains("pipable")));
    // Damage is named, not repacked.
    let wim = make_wim(dir.path(), &t, "LZX", false);
    let bad = dir.path().join("bad.wim");
    patch(&wim, &bad, None, Some(utf16("\u{feff}<WIM><IMAGE INDEX=\"1\"></IMAGE></WIM>")));
    assert!(matches!(plan(&bad), Err(SplitError::Damaged(ref w)) if w.contains("2 images") && w.contains("XML")));
    patch(&wim, &bad, None, Some(utf16("<WIM><IMAGE INDEX=\"1\"><X>&nbsp;</X></IMAGE></WIM>")));
    assert!(matches!(plan(&bad), Err(SplitError::Damaged(ref w)) if w.contains("nbsp")), "{:?}", plan(&bad));
    let mut b = std::fs::read(&wim).unwrap();
    b[48..55].copy_from_slice(&(1u64 << 40).to_le_bytes()[..7]); // a blob table of 1 TiB
    std::fs::write(&bad, &b).unwrap();
    assert!(
        matches!(plan(&bad), Err(SplitError::Damaged(ref w)) if w.contains("outside the file")),
        "{:?}",
        plan(&bad)
    );
    // A blob table inside the (sparse) file but over the 64 MiB limit: refused without reading it.
    let mut b = std::fs::read(&wim).unwrap();
    let big = (65u64 << 20) / 50 * 50;
    b[48..56].copy_from_slice(&((2u64 << 56) | big).to_le_bytes());
    b[56..64].copy_from_slice(&208u64.to_le_bytes());
    b[64..72].copy_from_slice(&big.to_le_bytes());
    std::fs::write(&bad, &b).unwrap();
    std::fs::OpenOptions::new().write(true).open(&bad).unwrap().set_len(100 << 20).unwrap();
    assert!(matches!(plan(&bad), Err(SplitError::Damaged(ref w)) if w.contains("limit")), "{:?}", plan(&bad));
    // Resources that overlap add up to more than the file: refused (their sums could otherwise wrap).
    let table = table_of(&wim);
    let biggest = table
        .chunks(50)
        .max_by_key(|e| u64::from_le_bytes(e[0..8].try_into().unwrap()) & 0x00FF_FFFF_FFFF_FFFF)
        .unwrap()
        .to_vec();
    let mut t2 = table.clone();
    for k in 0..40u8 {
        let mut e = biggest.clone();
        e[30] ^= k + 1; // another hash: not a duplicate
        t2.extend(e);
    }
    patch(&wim, &bad, Some(t2), None);
    assert!(matches!(plan(&bad), Err(SplitError::Damaged(ref w)) if w.contains("add up")), "{:?}", plan(&bad));
    // Malformed XML, each refused with a reason: a '/' that does not close a tag, a NUL, a '+' and a
    // surrogate in character references, nesting past 256, too many attributes, an unterminated comment.
    let deep = format!("{}{}", "<A>".repeat(300), "</A>".repeat(300));
    let attrs: String = (0..100).map(|k| format!(" a{k}=''")).collect();
    for body in [
        "<X/y>z</X>".to_string(),
        "<X>&#0;</X>".into(),
        "<X>&#x+41;</X>".into(),
        "<X>&#xD800;</X>".into(),
        deep,
        format!("<X{attrs}/>"),
        "<X><!-- no end</X>".into(),
    ] {
        let xml = format!("<WIM><IMAGE INDEX=\"1\">{body}</IMAGE><IMAGE INDEX=\"2\"/></WIM>");
        assert!(wimsplit::wimlib_xml(&utf16(&xml)).is_err(), "accepted: {}", &xml[..xml.len().min(80)]);
    }
    let ok = "<WIM><IMAGE INDEX=\"1\"><X>&#65;&#x42;</X></IMAGE><IMAGE INDEX=\"2\"/></WIM>";
    assert_eq!(wimsplit::wimlib_xml(&utf16(ok)).unwrap().1, 2);
    // A WIM that ends early while a part is read: an error, not a short part or a loop.
    let p = wimsplit::plan(&mut std::fs::File::open(&wim).unwrap(), 1 << 20, [0; 16]).unwrap();
    let truncated = dir.path().join("truncated.wim");
    let whole = std::fs::read(&wim).unwrap();
    std::fs::write(&truncated, &whole[..whole.len() / 3]).unwrap();
    let mut r = p.parts[0].reader(std::fs::File::open(&truncated).unwrap());
    let mut sink = Vec::new();
    let err = r.read_to_end(&mut sink).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    std::fs::write(&bad, b"MSWIM\0\0\0").unwrap();
    assert!(matches!(plan(&bad), Err(SplitError::NotWim)));
}
