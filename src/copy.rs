//! The copy engine: every directory and file of a source tree into a target tree, with progress in bytes that
//! reached the device. Reading, writing and flushing overlap (a reader thread, bounded buffers, a flusher
//! thread); memory stays at a few buffers whatever the ISO's size.

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
    /// Where in memory the bytes handed to the file writers must start: a power of two, at most BUFFER_ALIGN
    /// (the FAT writer's O_DIRECT writes need whole pages; 1 = anywhere, the default).
    fn buffer_align(&self) -> usize {
        1
    }
}

/// Pushes written data to the device while a file is still being written (fdatasync on the device, or
/// syncfs on a mounted filesystem). It runs on a thread of its own, beside the writes.
pub type Flusher = Box<dyn Fn() -> std::io::Result<()> + Send>;

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
    #[error("the copy's reader thread ended without a word")]
    ReaderGone,
}

/// The size of one buffer, and how many are in flight between the reader and the writer: the memory the copy
/// takes, whatever the ISO's size.
const CHUNK: usize = 4 << 20;
const BUFFERS: usize = 4;
/// The largest alignment in memory a target may ask of the buffers (`TargetTree::buffer_align`), so that it can
/// hand them to the kernel with O_DIRECT as they are (see `stick::fatwrite`).
pub const BUFFER_ALIGN: usize = 4096;
/// How much is written between two flushes to the device: the progress shown counts flushed bytes, so that the
/// end follows 100 % within seconds and a stop never waits minutes for a flush.
pub const SYNC_EVERY: u64 = 32 << 20;
/// How far the writes may run ahead of the last flush that completed: one window being flushed, one being
/// written. This bounds what is left to flush at the end (and at a stop) to two windows.
const AHEAD: u64 = 2 * SYNC_EVERY;
// The buffers are the copy's memory: a few MiB whatever the tree's size (the RSS goal is 64 MiB in all).
const _: () = assert!((CHUNK + BUFFER_ALIGN) * (BUFFERS + 2) <= 32 << 20);

/// What the reader thread hands the writer: the next bytes of the file being copied, or why it stopped.
enum Chunk {
    Data { buf: Buffer, len: usize },
    Failed(CopyError),
}

/// One buffer of the pool: CHUNK bytes that start where the target wants them in memory (found inside a
/// slightly larger allocation, which never moves: it is never grown).
struct Buffer {
    bytes: Vec<u8>,
    start: usize,
}

impl Buffer {
    fn new(align: usize) -> Buffer {
        let align = align.clamp(1, BUFFER_ALIGN);
        let bytes = vec![0u8; CHUNK + align - 1];
        let start = bytes.as_ptr().align_offset(align);
        assert!(start < align, "a byte buffer can always be aligned");
        Buffer { bytes, start }
    }
    fn get(&self) -> &[u8] {
        &self.bytes[self.start..self.start + CHUNK]
    }
    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + CHUNK]
    }
}

/// Copy everything; `progress` gets the running total of bytes that reached the device after each flush. It is
/// also called, with the same total again, after every directory, file and write: the copy still moves even
/// while a window fills the page cache (many small files through ntfs-3g can take seconds before the first
/// flush), and the caller's stall watchdog must not take that for a hung stick.
///
/// Three things overlap: a reader thread reads the source into a few buffers (bounded queue), this thread
/// writes them to the target, and a flusher thread pushes each finished window of SYNC_EVERY bytes to the
/// device while the next one is written. `stop` is asked before every buffer: when it says yes, the copy ends
/// with `CopyError::Stopped` (after the flush in progress, if any, returns).
pub fn copy_tree(
    source: &(dyn SourceTree + Sync),
    target: &mut dyn TargetTree,
    progress: &mut dyn FnMut(u64),
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<u64, CopyError> {
    let flusher = target.flusher().map_err(CopyError::Sync)?;
    let entries = source.entries();
    let (data_tx, data_rx) = std::sync::mpsc::sync_channel::<Chunk>(BUFFERS);
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Buffer>(BUFFERS);
    let align = target.buffer_align();
    for _ in 0..BUFFERS {
        free_tx.send(Buffer::new(align)).expect("the pool has room");
    }
    let (flush_tx, flush_rx) = std::sync::mpsc::sync_channel::<u64>(1);
    let (flushed_tx, flushed_rx) = std::sync::mpsc::channel::<std::io::Result<u64>>();
    std::thread::scope(|scope| {
        scope.spawn(move || read_all(source, data_tx, free_rx, stop));
        let flusher_present = flusher.is_some();
        if let Some(flush) = flusher {
            scope.spawn(move || {
                for upto in flush_rx {
                    if flushed_tx.send(flush().map(|()| upto)).is_err() {
                        return;
                    }
                }
            });
        }
        let mut f = Flushing {
            flush: flusher_present.then_some(flush_tx),
            flushed_rx,
            done: 0,
            flushed: 0,
            requested: 0,
            progress,
        };
        let result = write_all(target, &data_rx, &free_tx, &mut f, entries, stop);
        // Ends the reader (its channels close) and the flusher (after the flush in progress).
        drop((f, data_rx, free_tx));
        result
    })
}

/// The reader thread: every file's bytes in entry order, in buffers taken from the pool.
fn read_all(
    source: &(dyn SourceTree + Sync),
    out: std::sync::mpsc::SyncSender<Chunk>,
    free: std::sync::mpsc::Receiver<Buffer>,
    stop: &(dyn Fn() -> bool + Sync),
) {
    for (index, entry) in source.entries().iter().enumerate() {
        if entry.is_dir || entry.size == 0 {
            continue;
        }
        let failed = |e| out.send(Chunk::Failed(e)).map(|_| ());
        let rs = |source| CopyError::ReadSource { path: entry.path.clone(), source };
        let mut reader = match source.open(index) {
            Ok(r) => r,
            Err(e) => {
                let _ = failed(rs(e));
                return;
            }
        };
        let mut copied = 0u64;
        while copied < entry.size {
            if stop() {
                return;
            }
            let Ok(mut buf) = free.recv() else { return };
            let want = (entry.size - copied).min(CHUNK as u64) as usize;
            let n = match read_full(&mut reader, &mut buf.get_mut()[..want]) {
                Ok(0) => {
                    let _ =
                        failed(CopyError::ShortRead { path: entry.path.clone(), expected: entry.size, got: copied });
                    return;
                }
                Ok(n) => n,
                Err(e) => {
                    let _ = failed(rs(e));
                    return;
                }
            };
            copied += n as u64;
            if out.send(Chunk::Data { buf, len: n }).is_err() {
                return;
            }
        }
    }
}

/// The writing side of the copy, on the caller's thread (the target needs not be shared).
fn write_all(
    target: &mut dyn TargetTree,
    data: &std::sync::mpsc::Receiver<Chunk>,
    free: &std::sync::mpsc::SyncSender<Buffer>,
    f: &mut Flushing,
    entries: &[SourceEntry],
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<u64, CopyError> {
    for entry in entries {
        let wt = |source| CopyError::WriteTarget { path: entry.path.clone(), source };
        if stop() {
            return Err(CopyError::Stopped { path: entry.path.clone() });
        }
        if entry.is_dir {
            target.create_dir(&entry.path, entry.mtime).map_err(wt)?;
            f.moved();
            continue;
        }
        let mut writer = target.create_file(&entry.path, entry.mtime, entry.size).map_err(wt)?;
        f.moved();
        let mut copied = 0u64;
        while copied < entry.size {
            if stop() {
                return Err(CopyError::Stopped { path: entry.path.clone() });
            }
            let (buf, len) = match data.recv() {
                Ok(Chunk::Data { buf, len }) => (buf, len),
                Ok(Chunk::Failed(e)) => return Err(e),
                Err(_) if stop() => return Err(CopyError::Stopped { path: entry.path.clone() }),
                Err(_) => return Err(CopyError::ReaderGone),
            };
            writer.write_all(&buf.get()[..len]).map_err(wt)?;
            let _ = free.send(buf);
            copied += len as u64;
            f.wrote(len as u64)?;
        }
        writer.flush().map_err(wt)?;
    }
    f.finish()
}

/// The flushing side: which bytes were written, handed to the flusher, and known to be on the device.
struct Flushing<'p> {
    /// None when the target has nothing to flush.
    flush: Option<std::sync::mpsc::SyncSender<u64>>,
    flushed_rx: std::sync::mpsc::Receiver<std::io::Result<u64>>,
    done: u64,
    flushed: u64,
    requested: u64,
    progress: &'p mut dyn FnMut(u64),
}

impl Flushing<'_> {
    /// After each write: hand each full window to the flusher; wait only when the writes would run more than
    /// two windows ahead of the device.
    fn wrote(&mut self, n: u64) -> Result<(), CopyError> {
        self.done += n;
        if self.flush.is_none() {
            // Nothing to push: progress by windows all the same.
            if self.done - self.requested >= SYNC_EVERY {
                self.requested = self.done;
            }
            self.moved();
            return Ok(());
        }
        if self.done - self.requested >= SYNC_EVERY && self.requested == self.flushed {
            self.request();
        }
        while self.done - self.flushed > AHEAD {
            if self.requested == self.flushed {
                self.request(); // never wait with no flush in flight
            }
            self.wait()?;
        }
        while let Ok(r) = self.flushed_rx.try_recv() {
            self.flushed_to(r)?;
        }
        self.moved();
        Ok(())
    }

    /// The copy moved: the last total said (flushed; without a flusher, the last whole window), said again.
    fn moved(&mut self) {
        let said = if self.flush.is_some() { self.flushed } else { self.requested };
        (self.progress)(said);
    }

    /// The last windows: wait for the flush in progress, then flush the rest.
    fn finish(&mut self) -> Result<u64, CopyError> {
        if self.flush.is_some() {
            while self.requested != self.flushed {
                self.wait()?;
            }
            if self.flushed != self.done {
                self.request();
                self.wait()?;
            }
        }
        (self.progress)(self.done);
        Ok(self.done)
    }

    fn request(&mut self) {
        self.requested = self.done;
        if let Some(f) = &self.flush {
            let _ = f.send(self.done);
        }
    }

    fn wait(&mut self) -> Result<(), CopyError> {
        match self.flushed_rx.recv() {
            Ok(r) => self.flushed_to(r),
            Err(_) => Err(CopyError::Sync(std::io::Error::other("the flusher thread ended"))),
        }
    }

    fn flushed_to(&mut self, r: std::io::Result<u64>) -> Result<(), CopyError> {
        self.flushed = r.map_err(CopyError::Sync)?;
        (self.progress)(self.flushed);
        Ok(())
    }
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    struct MemSource(Vec<SourceEntry>, Vec<Vec<u8>>);
    impl SourceTree for MemSource {
        fn entries(&self) -> &[SourceEntry] {
            &self.0
        }
        fn open(&self, index: usize) -> std::io::Result<Box<dyn Read + '_>> {
            Ok(Box::new(&self.1[index][..]))
        }
    }

    /// A target in memory; `written` counts the bytes written so far, which its flusher (when `flush_delay`
    /// is set) records as flushed, and `stop_at` raises `stop` when that file is created.
    #[derive(Default)]
    struct MemTarget {
        files: BTreeMap<String, Option<Vec<u8>>>,
        finished: bool,
        written: Arc<AtomicU64>,
        flushed: Arc<AtomicU64>,
        flush_delay: Option<std::time::Duration>,
        stop_at: Option<(String, Arc<AtomicBool>)>,
        /// The largest lead of written over flushed bytes seen at a write.
        max_lead: Arc<AtomicU64>,
    }
    struct W<'a>(&'a mut Vec<u8>, Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>);
    impl Write for W<'_> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.extend_from_slice(b);
            let w = self.1.fetch_add(b.len() as u64, Ordering::SeqCst) + b.len() as u64;
            self.3.fetch_max(w - self.2.load(Ordering::SeqCst), Ordering::SeqCst);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl TargetTree for MemTarget {
        fn create_dir(&mut self, path: &str, _: i64) -> std::io::Result<()> {
            self.files.insert(path.into(), None);
            Ok(())
        }
        fn create_file<'a>(&'a mut self, path: &str, _: i64, _: u64) -> std::io::Result<Box<dyn Write + 'a>> {
            if let Some((p, flag)) = &self.stop_at
                && p == path
            {
                flag.store(true, Ordering::SeqCst);
            }
            let slot = self.files.entry(path.into()).or_insert(Some(Vec::new()));
            let (w, f, m) = (self.written.clone(), self.flushed.clone(), self.max_lead.clone());
            Ok(Box::new(W(slot.as_mut().expect("file"), w, f, m)))
        }
        fn finish(&mut self, _: &[SourceEntry]) -> std::io::Result<()> {
            self.finished = true;
            Ok(())
        }
        fn flusher(&self) -> std::io::Result<Option<Flusher>> {
            let Some(delay) = self.flush_delay else { return Ok(None) };
            let (written, flushed) = (self.written.clone(), self.flushed.clone());
            Ok(Some(Box::new(move || {
                let now = written.load(Ordering::SeqCst);
                std::thread::sleep(delay);
                flushed.fetch_max(now, Ordering::SeqCst);
                Ok(())
            })))
        }
    }

    fn e(path: &str, is_dir: bool, size: u64) -> SourceEntry {
        SourceEntry { path: path.into(), is_dir, size, mtime: 0 }
    }

    fn data(size: u64, seed: u64) -> Vec<u8> {
        (0..size).map(|i| ((i * 31 + seed) % 251) as u8).collect()
    }

    #[test]
    fn copies_dirs_and_files_with_progress() {
        let big = data(3 * CHUNK as u64 + 7, 1);
        let src = MemSource(
            vec![e("d", true, 0), e("d/big", false, big.len() as u64), e("empty", false, 0)],
            vec![vec![], big.clone(), vec![]],
        );
        let mut t = MemTarget::default();
        let mut seen = Vec::new();
        let n = copy_tree(&src, &mut t, &mut |d| seen.push(d), &|| false).unwrap();
        assert_eq!(n, big.len() as u64);
        assert_eq!(t.files["d"], None);
        assert_eq!(t.files["d/big"].as_deref(), Some(&big[..]));
        assert_eq!(t.files["empty"].as_deref(), Some(&[][..]));
        assert_eq!(seen.last(), Some(&(big.len() as u64)));
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn progress_counts_flushed_bytes_and_writes_stay_close_to_the_device() {
        let sizes = [5 * SYNC_EVERY + 12345, 3, SYNC_EVERY / 2, 2 * SYNC_EVERY];
        let files: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &s)| data(s, i as u64)).collect();
        let entries = sizes.iter().enumerate().map(|(i, &s)| e(&format!("f{i}"), false, s)).collect();
        let src = MemSource(entries, files.clone());
        let mut t = MemTarget { flush_delay: Some(std::time::Duration::from_millis(30)), ..Default::default() };
        let flushed = t.flushed.clone();
        let mut seen = Vec::new();
        let total: u64 = sizes.iter().sum();
        copy_tree(&src, &mut t, &mut |d| seen.push((d, flushed.load(Ordering::SeqCst))), &|| false).unwrap();
        // Every report counts only bytes a flush had covered when it was made.
        assert!(seen.iter().all(|&(d, f)| d <= f), "{seen:?}");
        assert!(seen.len() >= 4, "progress came in windows: {seen:?}");
        assert_eq!(seen.last().map(|s| s.0), Some(total));
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
        // The writes never ran more than two windows (and the buffer being written) ahead of the device.
        let lead = t.max_lead.load(Ordering::SeqCst);
        assert!(lead <= AHEAD + CHUNK as u64, "the writes ran {lead} bytes ahead of the flushes");
        for (i, f) in files.iter().enumerate() {
            assert_eq!(t.files[&format!("f{i}")].as_deref(), Some(&f[..]));
        }
    }

    /// Many small files in less than a window: the progress is said again after each of them, before the one
    /// flush at the end, so a watchdog sees the copy move.
    #[test]
    fn small_files_are_heard_of_before_the_flush() {
        let n = 200;
        let entries: Vec<SourceEntry> = (0..n).map(|i| e(&format!("f{i}"), false, 10)).collect();
        let src = MemSource(entries, vec![data(10, 7); n]);
        let mut t = MemTarget { flush_delay: Some(std::time::Duration::from_millis(5)), ..Default::default() };
        let flushed = t.flushed.clone();
        let mut seen = Vec::new();
        copy_tree(&src, &mut t, &mut |d| seen.push((d, flushed.load(Ordering::SeqCst))), &|| false).unwrap();
        let before_flush = seen.iter().filter(|&&(d, _)| d == 0).count();
        assert!(before_flush >= n, "{before_flush} reports before the flush, for {n} files");
        assert!(seen.iter().all(|&(d, f)| d <= f), "only flushed bytes are counted: {seen:?}");
        assert_eq!(seen.last().map(|s| s.0), Some(10 * n as u64));
    }

    #[test]
    fn stop_is_honoured_within_a_buffer() {
        let src = MemSource(
            vec![e("a", false, 3), e("b", false, 3 * CHUNK as u64)],
            vec![vec![1, 2, 3], data(3 * CHUNK as u64, 5)],
        );
        let flag = Arc::new(AtomicBool::new(false));
        let mut t = MemTarget { stop_at: Some(("b".into(), flag.clone())), ..Default::default() };
        let err = copy_tree(&src, &mut t, &mut |_| {}, &|| flag.load(Ordering::SeqCst)).unwrap_err();
        assert!(matches!(err, CopyError::Stopped { ref path } if path == "b"), "{err}");
        assert_eq!(t.files["a"].as_deref(), Some(&[1, 2, 3][..]));
        assert_eq!(t.files["b"].as_deref(), Some(&[][..]), "nothing of b was written after the stop");
    }

    #[test]
    fn short_source_is_an_error_naming_the_file() {
        let src = MemSource(vec![e("f", false, 10)], vec![vec![1, 2, 3]]);
        let err = copy_tree(&src, &mut MemTarget::default(), &mut |_| {}, &|| false).unwrap_err();
        assert!(matches!(err, CopyError::ShortRead { ref path, expected: 10, got: 3 } if path == "f"), "{err}");
    }

    #[test]
    fn flush_errors_end_the_copy() {
        struct Failing(MemTarget);
        impl TargetTree for Failing {
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
                Ok(Some(Box::new(|| Err(std::io::Error::other("EIO on the stick")))))
            }
        }
        let src = MemSource(vec![e("f", false, 3 * SYNC_EVERY)], vec![data(3 * SYNC_EVERY, 2)]);
        let err = copy_tree(&src, &mut Failing(MemTarget::default()), &mut |_| {}, &|| false).unwrap_err();
        assert!(matches!(err, CopyError::Sync(ref e) if e.to_string().contains("EIO")), "{err}");
    }
}
