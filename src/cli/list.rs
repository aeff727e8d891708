//! `woesafe list [--all] [--json]`: the disks one could write to, with the refusal `woesafe write` would give
//! each, as a table or as lsblk-style JSON (`{"blockdevices": [...]}`) with woesafe's fields added.

use std::io::Write as _;
use std::path::PathBuf;

use super::exit;
use super::term;
use super::write::Exit;
use crate::stick::list::{self, Disk, Node};
use crate::stick::units::human;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Show every disk, not only removable and USB ones (each with the reason woesafe write would refuse it)
    #[arg(short, long)]
    pub all: bool,
    /// Print lsblk-style JSON on stdout: {"blockdevices": [...]}, sizes in bytes
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct JsonDoc {
    blockdevices: Vec<JsonDisk>,
}

/// One disk in JSON: lsblk's fields (`lsblk -J -b -o NAME,PATH,MODEL,VENDOR,SIZE,TRAN,RM,RO,LOG-SEC,TYPE,
/// MOUNTPOINTS`), then woesafe's.
#[derive(serde::Serialize)]
struct JsonDisk {
    name: String,
    path: String,
    model: String,
    vendor: Option<String>,
    size: u64,
    tran: String,
    rm: bool,
    ro: bool,
    #[serde(rename = "log-sec")]
    log_sec: Option<u32>,
    #[serde(rename = "type")]
    kind: &'static str,
    mountpoints: Vec<String>,
    /// Loop devices: the backing file.
    backing_file: Option<String>,
    children: Vec<JsonNode>,
    holds_root: bool,
    system: bool,
    writable_by_woesafe: bool,
    refusal: Option<String>,
}

#[derive(serde::Serialize)]
struct JsonNode {
    name: String,
    path: String,
    size: u64,
    ro: bool,
    #[serde(rename = "type")]
    kind: String,
    mountpoints: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    children: Vec<JsonNode>,
}

/// Mount points as lsblk shows them: swap as "[SWAP]".
fn mountpoints(mounts: &[PathBuf], swap: bool, show: impl Fn(&std::path::Path) -> String) -> Vec<String> {
    let mut out: Vec<String> = mounts.iter().map(|m| show(m)).collect();
    if swap {
        out.push("[SWAP]".into());
    }
    out
}

fn json_node(n: &Node) -> JsonNode {
    JsonNode {
        name: n.name.clone(),
        path: term::path_json(&n.path),
        size: n.size,
        ro: n.read_only,
        kind: n.kind.clone(),
        mountpoints: mountpoints(&n.mounts, n.swap, term::path_json),
        children: n.children.iter().map(json_node).collect(),
    }
}

fn json_disk(d: &Disk) -> JsonDisk {
    let f = &d.facts;
    JsonDisk {
        name: f.name.clone(),
        path: term::path_json(&d.path()),
        model: f.model.clone(),
        vendor: (!f.vendor.is_empty()).then(|| f.vendor.clone()),
        size: f.size,
        tran: f.transport.clone(),
        rm: f.removable,
        ro: f.read_only,
        log_sec: (f.logical_block_size != 0).then_some(f.logical_block_size),
        kind: if f.transport == "loop" { "loop" } else { "disk" },
        mountpoints: mountpoints(&d.mounts, d.swap, term::path_json),
        backing_file: f.loop_backing.as_deref().map(term::path_json),
        children: d.children.iter().map(json_node).collect(),
        holds_root: d.holds_root,
        system: d.system,
        writable_by_woesafe: d.refusal.is_none(),
        refusal: d.refusal.clone(),
    }
}

/// Every mount point of the disk's tree (escaped for the terminal), swap as [SWAP].
fn used_as(d: &Disk) -> String {
    fn walk(n: &Node, out: &mut Vec<String>) {
        out.extend(mountpoints(&n.mounts, n.swap, term::path));
        n.children.iter().for_each(|c| walk(c, out));
    }
    let mut out = mountpoints(&d.mounts, d.swap, term::path);
    d.children.iter().for_each(|c| walk(c, &mut out));
    if out.is_empty() { "-".into() } else { out.join(", ") }
}

/// The table: one line of facts per disk, then what woesafe write would do with it.
pub fn table(disks: &[&Disk]) -> String {
    let header = ["DEVICE", "SIZE", "TRAN", "RM", "RO", "SYSTEM", "MODEL", "MOUNTED"];
    let rows: Vec<[String; 8]> = disks
        .iter()
        .map(|d| {
            let f = &d.facts;
            let model = if f.vendor.is_empty() || f.vendor.starts_with("0x") {
                term::escape(&f.model).into_owned()
            } else {
                format!("{} {}", term::escape(&f.vendor), term::escape(&f.model))
            };
            [
                term::path(&d.path()),
                human(f.size),
                f.transport.clone(),
                u8::from(f.removable).to_string(),
                u8::from(f.read_only).to_string(),
                if d.holds_root {
                    "/".into()
                } else if d.system {
                    "yes".into()
                } else {
                    "-".into()
                },
                model,
                used_as(d),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&header);
    for (d, r) in disks.iter().zip(&rows) {
        out.push_str(&line(&r.each_ref().map(String::as_str)));
        match &d.refusal {
            None => out.push_str("    woesafe write would take it\n"),
            // Device names and mount points in it are escaped already; the rest is woesafe's own text.
            Some(why) => out.push_str(&format!("    refused: {}\n", term::escape(why))),
        }
    }
    out
}

pub fn run(args: &ListArgs, quiet: bool) -> Result<u8, Exit> {
    let disks = list::scan_system().map_err(|e| Exit { code: exit::FAILED, message: e.to_string() })?;
    let shown: Vec<&Disk> = disks.iter().filter(|d| args.all || d.shown_by_default()).collect();
    let hidden = disks.len() - shown.len();
    let mut stdout = std::io::stdout().lock();
    let text = if args.json {
        let doc = JsonDoc { blockdevices: shown.iter().map(|d| json_disk(d)).collect() };
        // Plain data: serialising it cannot fail.
        format!("{}\n", serde_json::to_string_pretty(&doc).unwrap_or_default())
    } else {
        let others = match hidden {
            0 => String::new(),
            1 => "1 disk neither removable nor on USB is not shown: `woesafe list --all` shows it".into(),
            n => format!("{n} disks neither removable nor on USB are not shown: `woesafe list --all` shows them"),
        };
        if shown.is_empty() {
            let others = if others.is_empty() { String::new() } else { format!(" ({others})") };
            format!("No removable or USB disk found{others}.\n")
        } else if others.is_empty() {
            table(&shown)
        } else {
            format!("{}({others})\n", table(&shown))
        }
    };
    // A closed stdout (`woesafe list | head -1`) is not an error worth a message.
    let _ = stdout.write_all(text.as_bytes());
    if !quiet && !nix::unistd::geteuid().is_root() {
        crate::say!(
            "Note: not running as root. This list is complete (sysfs and the mount table are world-readable); \
             `woesafe write` needs root."
        );
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stick::disk::BlockFacts;

    fn disk(name: &str, model: &str, refusal: Option<&str>) -> Disk {
        Disk {
            facts: BlockFacts {
                name: name.into(),
                size: 16 << 30,
                removable: true,
                transport: "usb".into(),
                model: model.into(),
                vendor: "SanDisk".into(),
                logical_block_size: 512,
                ..Default::default()
            },
            mounts: vec![],
            swap: false,
            children: vec![Node {
                name: format!("{name}1"),
                path: format!("/dev/{name}1").into(),
                kind: "part".into(),
                size: 1 << 30,
                read_only: false,
                mounts: vec![
                    std::path::PathBuf::from("/media/a b"),
                    std::path::PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                        b"/media/\xff\x1b[2J",
                    )),
                ],
                swap: true,
                children: vec![],
            }],
            holds_root: false,
            system: true,
            refusal: refusal.map(String::from),
        }
    }

    #[test]
    fn table_escapes_what_the_device_says() {
        let a = disk("sdb", "Evil\x1b[2J\u{202e}Stick", None);
        let b = disk("sdc", "Plain", Some("/dev/sdc is read-only\x07"));
        let t = table(&[&a, &b]);
        assert!(!t.contains('\x1b') && !t.contains('\u{202e}') && !t.contains('\x07'), "{t}");
        assert!(t.contains("SanDisk Evil\\x1b[2J\\u{202e}Stick"), "{t}");
        assert!(t.contains("/media/a b, /media/\\xff\\x1b[2J, [SWAP]"), "{t}");
        assert!(t.contains("    woesafe write would take it\n"), "{t}");
        assert!(t.contains("    refused: /dev/sdc is read-only\\x07\n"), "{t}");
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("DEVICE    SIZE      TRAN  RM  RO  SYSTEM  MODEL"), "{t}");
        assert_eq!(lines[1].find("16.0 GiB"), lines[0].find("SIZE"), "columns line up: {t}");
    }

    #[test]
    fn json_has_lsblks_fields_and_woesafes() {
        let a = disk("sdb", "Stick\x1b", Some("/dev/sdb is read-only"));
        let v = serde_json::to_value(json_disk(&a)).unwrap();
        assert_eq!(v["name"], "sdb");
        assert_eq!(v["path"], "/dev/sdb");
        assert_eq!(v["model"], "Stick\x1b", "JSON escapes it itself");
        assert_eq!(v["vendor"], "SanDisk");
        assert_eq!(v["size"], 16u64 << 30);
        assert_eq!((v["tran"].as_str(), v["rm"].as_bool(), v["ro"].as_bool()), (Some("usb"), Some(true), Some(false)));
        assert_eq!(v["log-sec"], 512);
        assert_eq!(v["type"], "disk");
        assert_eq!(v["mountpoints"], serde_json::json!([]));
        assert_eq!(
            v["children"][0]["mountpoints"],
            serde_json::json!(["/media/a b", "/media/\\xff\x1b[2J", "[SWAP]"]),
            "not UTF-8: \\xNN; JSON escapes the rest itself"
        );
        assert_eq!(v["children"][0]["type"], "part");
        assert_eq!((v["holds_root"].as_bool(), v["system"].as_bool()), (Some(false), Some(true)));
        assert_eq!(v["writable_by_woesafe"], false);
        assert_eq!(v["refusal"], "/dev/sdb is read-only");
        let ok = serde_json::to_value(json_disk(&disk("sdc", "x", None))).unwrap();
        assert_eq!((ok["writable_by_woesafe"].as_bool(), ok["refusal"].is_null()), (Some(true), true));
    }
}
