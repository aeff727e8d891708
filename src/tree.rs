//! The tree as it goes onto the stick: the ISO's files, minus those woesafe replaces (a WIM split into parts),
//! plus what it adds (GRUB's grub.cfg, autounattend.xml, the split parts, read from the WIM while they are
//! copied, a Windows 7 UEFI loader). Planned as a
//! pure list first (so the checks before writing see exactly what will be written), then copied by one engine.

use std::io::Read;
use std::path::PathBuf;

use crate::copy::SourceTree;
use crate::media::SourceEntry;
use crate::media::source::{ReadSeek, Source};

/// Where an entry's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The ISO's entry of this index.
    Iso(usize),
    /// A directory woesafe adds.
    NewDir,
    /// A small file woesafe writes (grub.cfg, autounattend.xml).
    Bytes(Vec<u8>),
    /// A file prepared in the scratch space (WIM parts, an extracted loader).
    Staged(PathBuf),
    /// A part of a WIM split while it is copied, read from the ISO's WIM or a re-packed one in scratch space.
    WimPart { from: WimFrom, part: std::sync::Arc<crate::media::wimsplit::Part> },
    /// A file whose content is not known yet (planning only: its size is an estimate).
    Planned,
}

/// Where a split WIM's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WimFrom {
    /// The ISO's entry of this index.
    Iso(usize),
    /// A WIM in the scratch space (re-packed).
    Staged(PathBuf),
}

/// A file woesafe puts on the stick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    pub path: String,
    pub size: u64,
    pub mtime: i64,
    pub origin: Origin,
}

/// The stick's tree: entries (parents before children) and where each comes from.
#[derive(Debug, Clone, Default)]
pub struct StickTree {
    pub entries: Vec<SourceEntry>,
    pub origins: Vec<Origin>,
}

impl StickTree {
    /// The ISO's entries without `removed` (paths, any letter case) and without files an added one replaces
    /// (same path in any letter case: FAT and GRUB ignore case), then the added files, each with the
    /// directories it needs.
    pub fn build(iso: &[SourceEntry], removed: &[String], added: &[Added]) -> StickTree {
        let gone = |p: &str| {
            removed.iter().any(|r| r.eq_ignore_ascii_case(p)) || added.iter().any(|a| a.path.eq_ignore_ascii_case(p))
        };
        let mut plan = StickTree::default();
        for (i, e) in iso.iter().enumerate() {
            if e.is_dir || !gone(&e.path) {
                plan.entries.push(e.clone());
                plan.origins.push(Origin::Iso(i));
            }
        }
        for a in added {
            // Use the ISO's spelling of existing directories; create the missing ones.
            let mut parent = String::new();
            let comps: Vec<&str> = a.path.split('/').collect();
            for name in &comps[..comps.len() - 1] {
                let want = if parent.is_empty() { name.to_string() } else { format!("{parent}/{name}") };
                parent = match plan.entries.iter().find(|e| e.is_dir && e.path.eq_ignore_ascii_case(&want)) {
                    Some(e) => e.path.clone(),
                    None => {
                        plan.entries.push(SourceEntry { path: want.clone(), is_dir: true, size: 0, mtime: a.mtime });
                        plan.origins.push(Origin::NewDir);
                        want
                    }
                };
            }
            let name = comps[comps.len() - 1];
            // Keep the ISO's spelling of a file we replace.
            let path = iso
                .iter()
                .find(|e| !e.is_dir && e.path.eq_ignore_ascii_case(&a.path))
                .map(|e| e.path.clone())
                .unwrap_or_else(|| if parent.is_empty() { name.to_string() } else { format!("{parent}/{name}") });
            plan.entries.push(SourceEntry { path, is_dir: false, size: a.size, mtime: a.mtime });
            plan.origins.push(a.origin.clone());
        }
        plan
    }

    /// Bytes of file content.
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().filter(|e| !e.is_dir).map(|e| e.size).sum()
    }
}

/// A plan bound to the ISO it reads from: what the copy engine copies.
pub struct Tree<'a> {
    pub plan: StickTree,
    pub source: &'a Source,
}

impl SourceTree for Tree<'_> {
    fn entries(&self) -> &[SourceEntry] {
        &self.plan.entries
    }
    fn open(&self, index: usize) -> std::io::Result<Box<dyn Read + '_>> {
        match self.plan.origins.get(index) {
            Some(Origin::Iso(i)) => self.source.open(*i),
            Some(Origin::Bytes(b)) => Ok(Box::new(std::io::Cursor::new(b.as_slice()))),
            Some(Origin::Staged(p)) => Ok(Box::new(std::fs::File::open(p)?)),
            Some(Origin::WimPart { from, part }) => {
                let wim: Box<dyn ReadSeek + '_> = match from {
                    WimFrom::Iso(i) => self.source.open_seekable(*i)?,
                    WimFrom::Staged(p) => Box::new(std::fs::File::open(p)?),
                };
                Ok(Box::new(part.reader(wim)))
            }
            Some(Origin::NewDir) | Some(Origin::Planned) | None => {
                Err(std::io::Error::other(format!("entry {index} has no content to copy")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: &str, d: bool, s: u64) -> SourceEntry {
        SourceEntry { path: p.into(), is_dir: d, size: s, mtime: 7 }
    }
    fn add(p: &str, s: u64) -> Added {
        Added { path: p.into(), size: s, mtime: 9, origin: Origin::Planned }
    }

    #[test]
    fn split_parts_replace_the_wim_and_new_dirs_come_first() {
        let iso = vec![
            e("BOOT", true, 0),
            e("Sources", true, 0),
            e("Sources/Install.wim", false, 5 << 30),
            e("Sources/boot.wim", false, 10),
            e("bootmgr", false, 3),
        ];
        let added = vec![
            add("sources/install.swm", 4000 << 20),
            add("sources/install2.swm", 1000 << 20),
            add("boot/grub/grub.cfg", 20),
            add("efi/boot/bootx64.efi", 30),
        ];
        let plan = StickTree::build(&iso, &["sources/install.wim".into()], &added);
        let paths: Vec<&str> = plan.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "BOOT",
                "Sources",
                "Sources/boot.wim",
                "bootmgr",
                "Sources/install.swm",
                "Sources/install2.swm",
                "BOOT/grub",
                "BOOT/grub/grub.cfg",
                "efi",
                "efi/boot",
                "efi/boot/bootx64.efi"
            ]
        );
        assert_eq!(plan.origins[0], Origin::Iso(0));
        assert_eq!(plan.origins[2], Origin::Iso(3));
        assert_eq!(plan.origins[6], Origin::NewDir);
        assert_eq!(plan.total_bytes(), 10 + 3 + (5000 << 20) + 50);
        // Parents always come before children.
        for (i, en) in plan.entries.iter().enumerate() {
            if let Some((parent, _)) = en.path.rsplit_once('/') {
                assert!(plan.entries[..i].iter().any(|p| p.is_dir && p.path == parent), "{}", en.path);
            }
        }
    }

    #[test]
    fn an_added_file_replaces_the_isos_in_any_case_keeping_its_spelling() {
        let iso = vec![e("AutoUnattend.XML", false, 100), e("boot", true, 0), e("boot/grub", true, 0)];
        let plan = StickTree::build(&iso, &[], &[add("autounattend.xml", 5), add("boot/grub/grub.cfg", 1)]);
        let files: Vec<(&str, u64)> =
            plan.entries.iter().filter(|e| !e.is_dir).map(|e| (e.path.as_str(), e.size)).collect();
        assert_eq!(files, [("AutoUnattend.XML", 5), ("boot/grub/grub.cfg", 1)]);
        assert_eq!(plan.entries.len(), 4);
    }
}
