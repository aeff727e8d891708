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
    /// A handle that pushes what was written so far to the device (so progress counts bytes on the device,
    /// not in the page cache); None when there is nothing to push.
    fn flusher(&self) -> std::io::Result<Option<Flusher>> {
        Ok(None)
    }
}

/// Pushes written data to the device while a file is still being written (fdatasync on the device, or
/// syncfs on a mounted filesystem).
pub type Flusher = Box<dyn Fn() -> std::io::Result<()>>;

/// fdatasync on the device the filesystem lives on.
pub fn device_flusher(device: std::fs::File) -> Flusher {
    Box::new(move || device.sync_data())
}

/// syncfs on a mounted filesystem (through any fd inside it).
pub fn filesystem_flusher(inside: std::fs::File) -> Flusher {
    Box::new(move || nix::unistd::syncfs(&inside).map_err(std::io::Error::from))
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
    #[error("cannot flush the target to the device: {0}")]
    Sync(#[source] std::io::Error),
    #[error("stopped while copying {path}")]
    Stopped { path: String },
}

const CHUNK: usize = 1 << 20;
/// How much is written between two flushes to the device: the progress shown counts flushed bytes, so that the
/// end follows 100 % within seconds and a stop never waits minutes for a flush.
pub const SYNC_EVERY: u64 = 16 << 20;

/// Copy everything; `progress` gets the running total of bytes that reached the device after each flush.
/// `stop` is asked before every chunk: when it says yes, the copy ends with `CopyError::Stopped`.
pub fn copy_tree(
    source: &dyn SourceTree,
    target: &mut dyn TargetTree,
    progress: &mut dyn FnMut(u64),
    stop: &dyn Fn() -> bool,
) -> Result<u64, CopyError> {
    let mut done = 0u64;
    let mut since_sync = 0u64;
    let flusher = target.flusher().map_err(CopyError::Sync)?;
    let sync = |f: &Option<Flusher>| f.as_ref().map_or(Ok(()), |f| f()).map_err(CopyError::Sync);
    let mut buf = vec![0u8; CHUNK];
    for (index, entry) in source.entries().iter().enumerate() {
        let wt = |source| CopyError::WriteTarget { path: entry.path.clone(), source };
        if stop() {
            return Err(CopyError::Stopped { path: entry.path.clone() });
        }
        if entry.is_dir {
            target.create_dir(&entry.path, entry.mtime).map_err(wt)?;
            continue;
        }
        let rs = |source| CopyError::ReadSource { path: entry.path.clone(), source };
        let mut reader = source.open(index).map_err(rs)?;
        let mut writer = target.create_file(&entry.path, entry.mtime, entry.size).map_err(wt)?;
        let mut copied = 0u64;
        while copied < entry.size {
            if stop() {
                return Err(CopyError::Stopped { path: entry.path.clone() });
            }
            let want = (entry.size - copied).min(CHUNK as u64) as usize;
            let n = read_full(&mut reader, &mut buf[..want]).map_err(rs)?;
            if n == 0 {
                return Err(CopyError::ShortRead { path: entry.path.clone(), expected: entry.size, got: copied });
            }
            writer.write_all(&buf[..n]).map_err(wt)?;
            copied += n as u64;
            done += n as u64;
            since_sync += n as u64;
            if since_sync >= SYNC_EVERY {
                sync(&flusher)?;
                since_sync = 0;
                progress(done);
            }
        }
        writer.flush().map_err(wt)?;
    }
    sync(&flusher)?;
    progress(done);
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
        let n = copy_tree(&src, &mut t, &mut |d| seen.push(d), &|| false).unwrap();
        assert_eq!(n, big.len() as u64);
        assert_eq!(t.0["d"], None);
        assert_eq!(t.0["d/big"].as_deref(), Some(&big[..]));
        assert_eq!(t.0["empty"].as_deref(), Some(&[][..]));
        assert_eq!(seen.last(), Some(&(big.len() as u64)));
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    }

    /// A target whose flushes are counted, to check that progress reports only flushed bytes.
    struct Counted(MemTarget, std::rc::Rc<std::cell::Cell<u32>>);
    impl TargetTree for Counted {
        fn create_dir(&mut self, p: &str, m: i64) -> std::io::Result<()> {
            self.0.create_dir(p, m)
        }
        fn create_file<'a>(&'a mut self, p: &str, m: i64, s: u64) -> std::io::Result<Box<dyn Write + 'a>> {
            self.0.create_file(p, m, s)
        }
        fn finish(&mut self, e: &[SourceEntry]) -> std::io::Result<()> {
            self.0.finish(e)
        }
        fn flusher(&self) -> std::io::Result<Option<Flusher>> {
            let n = self.1.clone();
            Ok(Some(Box::new(move || {
                n.set(n.get() + 1);
                Ok(())
            })))
        }
    }

    #[test]
    fn progress_counts_flushed_bytes() {
        let size = 2 * SYNC_EVERY + 12345;
        let data: Vec<u8> = (0..size).map(|i| (i % 7) as u8).collect();
        let src = MemSource(vec![e("a", false, size), e("b", false, 5)], vec![data, vec![1; 5]]);
        let flushes = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut t = Counted(MemTarget::default(), flushes.clone());
        let mut seen = Vec::new();
        let f2 = flushes.clone();
        copy_tree(&src, &mut t, &mut |d| seen.push((d, f2.get())), &|| false).unwrap();
        // every report follows a flush: two during the big file, one at the end
        assert_eq!(seen, vec![(SYNC_EVERY, 1), (2 * SYNC_EVERY, 2), (size + 5, 3)]);
    }

    #[test]
    fn stop_is_honoured_between_chunks() {
        let src = MemSource(vec![e("a", false, 3), e("b", false, 3)], vec![vec![1, 2, 3], vec![4, 5, 6]]);
        let calls = std::cell::Cell::new(0);
        let mut t = MemTarget::default();
        let err = copy_tree(&src, &mut t, &mut |_| {}, &|| {
            calls.set(calls.get() + 1);
            calls.get() > 2
        })
        .unwrap_err();
        assert!(matches!(err, CopyError::Stopped { ref path } if path == "b"), "{err}");
        assert_eq!(t.0["a"].as_deref(), Some(&[1, 2, 3][..]));
        assert!(!t.0.contains_key("b"));
    }

    #[test]
    fn short_source_is_an_error_naming_the_file() {
        let src = MemSource(vec![e("f", false, 10)], vec![vec![1, 2, 3]]);
        let err = copy_tree(&src, &mut MemTarget::default(), &mut |_| {}, &|| false).unwrap_err();
        assert!(matches!(err, CopyError::ShortRead { ref path, expected: 10, got: 3 } if path == "f"), "{err}");
    }
}
