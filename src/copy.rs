//! The copy engine: every directory and file of a source tree into a target tree, with progress in bytes.

use std::io::{Read, Write};

use crate::media::SourceEntry;

/// A tree to copy from (the userspace ISO reader, or a mounted ISO).
pub trait SourceTree {
    fn entries(&self) -> &[SourceEntry];
    fn open(&self, index: usize) -> std::io::Result<Box<dyn Read + '_>>;
}

/// A tree to copy into (the userspace FAT writer, or a mounted filesystem).
pub trait TargetTree {
    fn create_dir(&mut self, path: &str, mtime: i64) -> std::io::Result<()>;
    /// Create (or replace) a file; the returned writer receives exactly `size` bytes.
    fn create_file<'a>(&'a mut self, path: &str, mtime: i64, size: u64) -> std::io::Result<Box<dyn Write + 'a>>;
    /// Called once after the last file: set what could only be set at the end (directory times), flush.
    fn finish(&mut self, entries: &[SourceEntry]) -> std::io::Result<()>;
    /// Write everything still pending and release the filesystem, reporting errors.
    fn close(self: Box<Self>) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("cannot read {path} from the ISO: {source}")]
    ReadSource {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path} to the target: {source}")]
    WriteTarget {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the ISO says {expected} bytes but {got} could be read")]
    ShortRead { path: String, expected: u64, got: u64 },
    #[error("cannot finish the target filesystem: {0}")]
    Finish(#[source] std::io::Error),
}

const CHUNK: usize = 1 << 20;

/// Copy everything; `progress` gets the running total of bytes written after each chunk.
pub fn copy_tree(
    source: &dyn SourceTree,
    target: &mut dyn TargetTree,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, CopyError> {
    let mut done = 0u64;
    let mut buf = vec![0u8; CHUNK];
    for (index, entry) in source.entries().iter().enumerate() {
        let wt = |source| CopyError::WriteTarget { path: entry.path.clone(), source };
        if entry.is_dir {
            target.create_dir(&entry.path, entry.mtime).map_err(wt)?;
            continue;
        }
        let rs = |source| CopyError::ReadSource { path: entry.path.clone(), source };
        let mut reader = source.open(index).map_err(rs)?;
        let mut writer = target.create_file(&entry.path, entry.mtime, entry.size).map_err(wt)?;
        let mut copied = 0u64;
        while copied < entry.size {
            let want = (entry.size - copied).min(CHUNK as u64) as usize;
            let n = read_full(&mut reader, &mut buf[..want]).map_err(rs)?;
            if n == 0 {
                return Err(CopyError::ShortRead { path: entry.path.clone(), expected: entry.size, got: copied });
            }
            writer.write_all(&buf[..n]).map_err(wt)?;
            copied += n as u64;
            done += n as u64;
            progress(done);
        }
        writer.flush().map_err(wt)?;
    }
    Ok(done)
}

fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct MemSource(Vec<SourceEntry>, Vec<Vec<u8>>);
    impl SourceTree for MemSource {
        fn entries(&self) -> &[SourceEntry] {
            &self.0
        }
        fn open(&self, index: usize) -> std::io::Result<Box<dyn Read + '_>> {
            Ok(Box::new(&self.1[index][..]))
        }
    }
    #[derive(Default)]
    struct MemTarget(BTreeMap<String, Option<Vec<u8>>>, bool);
    struct W<'a>(&'a mut Vec<u8>);
    impl Write for W<'_> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl TargetTree for MemTarget {
        fn create_dir(&mut self, path: &str, _: i64) -> std::io::Result<()> {
            self.0.insert(path.into(), None);
            Ok(())
        }
        fn create_file<'a>(&'a mut self, path: &str, _: i64, _: u64) -> std::io::Result<Box<dyn Write + 'a>> {
            let slot = self.0.entry(path.into()).or_insert(Some(Vec::new()));
            Ok(Box::new(W(slot.as_mut().expect("file"))))
        }
        fn finish(&mut self, _: &[SourceEntry]) -> std::io::Result<()> {
            self.1 = true;
            Ok(())
        }
    }

    fn e(path: &str, is_dir: bool, size: u64) -> SourceEntry {
        SourceEntry { path: path.into(), is_dir, size, mtime: 0 }
    }

    #[test]
    fn copies_dirs_and_files_with_progress() {
        let big: Vec<u8> = (0..3 * CHUNK + 7).map(|i| (i % 251) as u8).collect();
        let src = MemSource(
            vec![e("d", true, 0), e("d/big", false, big.len() as u64), e("empty", false, 0)],
            vec![vec![], big.clone(), vec![]],
        );
        let mut t = MemTarget::default();
        let mut seen = Vec::new();
        let n = copy_tree(&src, &mut t, &mut |d| seen.push(d)).unwrap();
        assert_eq!(n, big.len() as u64);
        assert_eq!(t.0["d"], None);
        assert_eq!(t.0["d/big"].as_deref(), Some(&big[..]));
        assert_eq!(t.0["empty"].as_deref(), Some(&[][..]));
        assert_eq!(seen.last(), Some(&(big.len() as u64)));
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn short_source_is_an_error_naming_the_file() {
        let src = MemSource(vec![e("f", false, 10)], vec![vec![1, 2, 3]]);
        let err = copy_tree(&src, &mut MemTarget::default(), &mut |_| {}).unwrap_err();
        assert!(matches!(err, CopyError::ShortRead { ref path, expected: 10, got: 3 } if path == "f"), "{err}");
    }
}
