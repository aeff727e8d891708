//! Fuzzing on stable Rust, inside `cargo test`: a seeded mutation loop over real inputs (ISOs made by
//! genisoimage, WIMs made by wimlib-imagex, worker frames, UEFI loaders with signature lists and SbatLevels),
//! each mutant run through `woesafe::fuzzing` under a memory and a time budget. A failing input is saved as
//! target/fuzz-failures/<target>-<hash>.bin; every file in tests/fuzz-regressions/<target>/ is replayed on every
//! run.
//!
//! Environment: WOESAFE_FUZZ_ITERS (inputs per target; default 20000 for iso, 50000 for wim and frame, 60000 for
//! loader), WOESAFE_FUZZ_SEED (a number, or `random`; default fixed), WOESAFE_FUZZ_DUMP_SEEDS=DIR (write the seed
//! inputs to DIR/<target>/, a starting corpus for the cargo-fuzz targets in fuzz/).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::CString;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest;
use woesafe::fuzzing::{self, Outcome, fix_udf_tag, udf_crc, udf_tag_checksum};

/// Most memory one input may make the parsers hold at once.
const MEMORY_BUDGET: isize = 256 << 20;
/// Beyond this the allocator refuses (the input is saved first and the test binary aborts): a memory bomb must
/// not take the machine down before the budget check after the input.
const MEMORY_HARD_LIMIT: isize = 2 << 30;
/// Most CPU time one input may take (a debug build). CPU time, not wall time: a busy machine must not fail
/// the run, a CPU bomb must (an input that blocks is the hang watchdog's).
const TIME_BUDGET: Duration = Duration::from_secs(2);
/// An input still running after this is saved and the test binary aborts (a loop that never ends); the
/// harness's own test shortens it with WOESAFE_FUZZ_HANG_MS.
const HANG_LIMIT: Duration = Duration::from_secs(30);
/// Failures collected per target before it stops.
const MAX_FAILURES: usize = 10;
/// Inputs per target by default: ISO inputs cost about 1 ms of CPU each in a debug build, loader inputs about
/// 0.15 ms, the others far less.
const DEFAULT_ITERS: [(&str, u64); 4] = [("iso", 20_000), ("wim", 50_000), ("frame", 50_000), ("loader", 60_000)];
const DEFAULT_SEED: u64 = 0x5EED_F022_1005_0001;
const TARGETS: [&str; 4] = ["iso", "wim", "frame", "loader"];

// ---------------------------------------------------------------------------------------------------------
// Memory accounting: a global allocator that counts each thread's live bytes and their peak.

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static HARD: Cell<isize> = const { Cell::new(isize::MAX) };
    /// The input being run and where to save it should the hard limit be hit: (bytes, len, NUL-terminated path).
    static DUMP: Cell<(*const u8, usize, *const libc::c_char)> =
        const { Cell::new((std::ptr::null(), 0, std::ptr::null())) };
}

/// Counts `n` more live bytes on this thread; false (nothing counted) if that passes the hard limit.
fn charge(n: usize) -> bool {
    let n = n as isize;
    let ok = LIVE
        .try_with(|live| {
            let now = live.get().saturating_add(n);
            if now > HARD.with(Cell::get) {
                return false;
            }
            live.set(now);
            PEAK.with(|p| p.set(p.get().max(now)));
            true
        })
        .unwrap_or(true);
    if !ok {
        over_hard_limit(n);
    }
    ok
}

fn refund(n: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get() - n as isize));
}

/// Saves the running input with raw system calls (no allocation here) and says so on stderr.
fn over_hard_limit(wanted: isize) {
    let (data, len, path) = DUMP.with(Cell::get);
    let say = |msg: &[u8]| {
        // SAFETY: writes a valid buffer to stderr.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    };
    say(b"\nfuzz: an input made the parser allocate past the hard limit (2 GiB live)");
    if wanted > 0 && !path.is_null() {
        // SAFETY: `path` is a NUL-terminated string and `data` `len` readable bytes, both kept alive by `run_one`
        // while DUMP points at them.
        unsafe {
            let fd = libc::open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC, 0o644);
            if fd >= 0 {
                libc::write(fd, data.cast(), len);
                libc::close(fd);
                say(b"; saved as ");
                say(std::ffi::CStr::from_ptr(path).to_bytes());
            }
        }
    }
    say(b"\n");
}

// SAFETY: every call is forwarded to the system allocator with the caller's arguments; the counting around it
// only reads and writes this thread's Cells and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !charge(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            refund(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !charge(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout, as GlobalAlloc::alloc_zeroed requires.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            refund(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        refund(layout.size());
        // SAFETY: `ptr` was allocated by System with this layout (every allocation goes through here).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !charge(new_size - old) {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's pointer, layout and size, as GlobalAlloc::realloc requires.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        match (p.is_null(), new_size > old) {
            (true, true) => refund(new_size - old),
            (false, false) => refund(old - new_size),
            _ => {}
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ---------------------------------------------------------------------------------------------------------
// Running one input under the budgets.

type Entry = fn(&[u8]) -> Outcome;

fn failure_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-failures")
}

fn save_failure(target: &str, input: &[u8]) -> PathBuf {
    let dir = failure_dir();
    std::fs::create_dir_all(&dir).expect("create target/fuzz-failures");
    let hash = sha2::Sha256::digest(input);
    let name: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join(format!("{target}-{name}.bin"));
    std::fs::write(&path, input).expect("save a failing input");
    path
}

/// What the watchdog sees of a target's loop: the input running and since when.
type Running = Arc<Mutex<Option<(Instant, Arc<Vec<u8>>)>>>;

/// Watches a target's loop: an input that runs past HANG_LIMIT is saved, and the test binary aborts (the loop
/// cannot be interrupted from outside).
struct Watchdog {
    running: Running,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(target: &'static str) -> Watchdog {
        let running: Running = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (running.clone(), stop.clone());
        let limit = std::env::var("WOESAFE_FUZZ_HANG_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(HANG_LIMIT, Duration::from_millis);
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let hung = r.lock().unwrap().as_ref().filter(|(t, _)| t.elapsed() > limit).map(|(_, i)| i.clone());
                if let Some(input) = hung {
                    let path = save_failure(target, &input);
                    eprintln!("fuzz {target}: an input ran for over {limit:?}; saved as {}", path.display());
                    std::process::abort();
                }
            }
        });
        Watchdog { running, stop, thread: Some(thread) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One input's result: its outcome, time and peak memory, or why it failed.
struct Run {
    outcome: Result<Outcome, String>,
    time: Duration,
    peak: isize,
}

fn run_one(entry: Entry, input: &Arc<Vec<u8>>, dog: &Watchdog, oom_path: &CString) -> Run {
    *dog.running.lock().unwrap() = Some((Instant::now(), input.clone()));
    DUMP.with(|d| d.set((input.as_ptr(), input.len(), oom_path.as_ptr())));
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    HARD.with(|h| h.set(base.saturating_add(MEMORY_HARD_LIMIT)));
    let start = thread_cpu_time();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| entry(input)));
    let time = thread_cpu_time().saturating_sub(start);
    HARD.with(|h| h.set(isize::MAX));
    let peak = PEAK.with(Cell::get) - base;
    DUMP.with(|d| d.set((std::ptr::null(), 0, std::ptr::null())));
    *dog.running.lock().unwrap() = None;
    let outcome = match result {
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(not a string)");
            Err(format!("panicked: {msg}"))
        }
        Ok(_) if peak > MEMORY_BUDGET => {
            Err(format!("held {} MiB at once (budget {} MiB)", peak >> 20, MEMORY_BUDGET >> 20))
        }
        Ok(_) if time > TIME_BUDGET => Err(format!("took {time:.2?} of CPU time (budget {TIME_BUDGET:?})")),
        Ok(outcome) => Ok(outcome),
    };
    Run { outcome, time, peak }
}

/// CPU time this thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to fill; CLOCK_THREAD_CPUTIME_ID is always available on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime: {}", std::io::Error::last_os_error());
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn oom_path(target: &str) -> CString {
    std::fs::create_dir_all(failure_dir()).expect("create target/fuzz-failures");
    let path = failure_dir().join(format!("{target}-over-hard-limit.bin"));
    CString::new(path.into_os_string().into_encoded_bytes()).expect("a path without NUL")
}

// ---------------------------------------------------------------------------------------------------------
// The mutator.

/// splitmix64: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Iso,
    Wim,
    Frame,
    Loader,
}

/// A seed input and where mutations are most useful in it.
struct Seed {
    name: String,
    bytes: Vec<u8>,
    /// Byte ranges worth most mutations (descriptors, tables, XML); the rest gets some too.
    hot: Vec<Range<usize>>,
    /// UDF descriptor tags: (offset, bytes the CRC covers after the 16-byte tag).
    tags: Vec<(usize, usize)>,
}

const SECTOR: usize = 2048;

fn pick_pos(rng: &mut Rng, data: &[u8], seed: &Seed) -> usize {
    if data.is_empty() {
        return 0;
    }
    if !seed.hot.is_empty() && rng.chance(85) {
        let r = &seed.hot[rng.below(seed.hot.len())];
        let at = r.start + rng.below(r.len().max(1));
        if at < data.len() {
            return at;
        }
    }
    rng.below(data.len())
}

/// Values worth writing into a `width`-byte field that now holds `current`.
fn interesting(rng: &mut Rng, width: usize, current: u64, len: usize) -> u64 {
    let max = if width == 8 { u64::MAX } else { (1u64 << (8 * width)) - 1 };
    let len = len as u64;
    let v = match rng.below(16) {
        0 => 0,
        1 => 1,
        2 => max,
        3 => max - 1,
        4 => max >> 1,
        5 => (max >> 1) + 1,
        6 => current.wrapping_add(1),
        7 => current.wrapping_sub(1),
        8 => current.wrapping_add(SECTOR as u64),
        9 => current.wrapping_sub(SECTOR as u64),
        10 => len,
        11 => len / SECTOR as u64,
        12 => (len / SECTOR as u64).wrapping_add(rng.below(3) as u64).wrapping_sub(1),
        13 => u64::from(u32::MAX),
        14 => [2048, 208, 50, 256, 512, 4096, 0x8000][rng.below(7)],
        _ => current.wrapping_mul(2),
    };
    v & max
}

fn get_le(data: &[u8], at: usize, width: usize) -> u64 {
    data[at..at + width].iter().rev().fold(0, |v, b| (v << 8) | u64::from(*b))
}

fn put_le(data: &mut [u8], at: usize, width: usize, v: u64) {
    for i in 0..width {
        data[at + i] = (v >> (8 * i)) as u8;
    }
}

fn put_be(data: &mut [u8], at: usize, width: usize, v: u64) {
    for i in 0..width {
        data[at + width - 1 - i] = (v >> (8 * i)) as u8;
    }
}

/// One small change to a field or byte at `at` (used on its own and inside UDF descriptors).
fn poke(rng: &mut Rng, data: &mut [u8], at: usize, kind: Kind) {
    let len = data.len();
    match rng.below(4) {
        0 => data[at] ^= 1 << rng.below(8),
        1 => data[at] = [0, 1, 0x7f, 0x80, 0xff, 0xfe, 0x20, b'/', b'.'][rng.below(9)],
        2 => {
            let width = [2, 4, 8][rng.below(3)];
            if at + width <= len {
                let v = interesting(rng, width, get_le(data, at, width), len);
                if kind == Kind::Iso && width == 4 && at + 8 <= len && rng.chance(40) {
                    // ISO 9660's both-endian field: little-endian, then the same big-endian.
                    put_le(data, at, 4, v);
                    put_be(data, at + 4, 4, v);
                } else if kind == Kind::Iso && rng.chance(20) {
                    put_be(data, at, width, v);
                } else {
                    put_le(data, at, width, v);
                }
            }
        }
        _ => {
            let delta = rng.below(35) as u64 + 1;
            let width = [1, 2, 4][rng.below(3)];
            if at + width <= len {
                let v = get_le(data, at, width);
                let v = if rng.chance(50) { v.wrapping_add(delta) } else { v.wrapping_sub(delta) };
                put_le(data, at, width, v);
            }
        }
    }
}

/// UDF descriptor tags in an image: 4-byte aligned, known identifier, valid checksum and CRC.
fn find_udf_tags(data: &[u8]) -> Vec<(usize, usize)> {
    let mut tags = Vec::new();
    for at in (0..data.len().saturating_sub(16)).step_by(4) {
        let id = get_le(data, at, 2);
        if !(matches!(id, 1..=9 | 256..=266) && data[at + 5] == 0 && udf_tag_checksum(&data[at..]) == data[at + 4]) {
            continue;
        }
        let crc_len = get_le(data, at + 10, 2) as usize;
        if at + 16 + crc_len <= data.len()
            && udf_crc(&data[at + 16..at + 16 + crc_len]) == get_le(data, at + 8, 2) as u16
        {
            tags.push((at, crc_len));
        }
    }
    tags
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, seed: &Seed, seeds: &[Seed], dict: &[Vec<u8>], kind: Kind) {
    if data.is_empty() {
        data.push(0);
    }
    let at = pick_pos(rng, data, seed);
    let len = data.len();
    // UDF images: a good share of descriptor-aware changes (others mostly die at the CRC check).
    let op = if kind == Kind::Iso && !seed.tags.is_empty() && rng.chance(30) { 12 } else { rng.below(13) };
    match op {
        0..=2 => poke(rng, data, at, kind),
        3 => {
            // Copy a chunk within the input (over other bytes).
            let n = if kind == Kind::Iso && rng.chance(30) { SECTOR } else { 1 + rng.below(256) };
            let from = rng.below(len);
            let n = n.min(len - from).min(len - at);
            data.copy_within(from..from + n, at);
        }
        4 => {
            // Insert bytes: a copy of a chunk, or (ISO) a whole sector at a sector boundary.
            if kind == Kind::Iso && rng.chance(60) {
                let sector = (at / SECTOR) * SECTOR;
                let src = rng.below(len.div_ceil(SECTOR)) * SECTOR;
                let chunk: Vec<u8> =
                    if rng.chance(50) { data[src.min(len)..(src + SECTOR).min(len)].to_vec() } else { vec![0; SECTOR] };
                data.splice(sector..sector, chunk);
            } else {
                let from = rng.below(len);
                let n = (1 + rng.below(64)).min(len - from);
                let chunk = data[from..from + n].to_vec();
                data.splice(at..at, chunk);
            }
        }
        5 => {
            // Delete bytes: a few, or a sector.
            let n = if kind == Kind::Iso && rng.chance(50) { SECTOR } else { 1 + rng.below(64) };
            let start = if n == SECTOR { (at / SECTOR) * SECTOR } else { at };
            data.drain(start..(start + n).min(len));
        }
        6 => {
            // Truncate: anywhere, or at a sector boundary.
            let cut = if rng.chance(50) { (at / SECTOR) * SECTOR } else { at };
            data.truncate(cut);
        }
        7 => {
            // Extend: zeros, or copies of the input's own bytes.
            let n = if rng.chance(50) { SECTOR * (1 + rng.below(4)) } else { 1 + rng.below(300) };
            if rng.chance(50) {
                data.resize(len + n, 0);
            } else {
                let from = rng.below(len);
                let chunk: Vec<u8> = (0..n).map(|i| data[(from + i) % len]).collect();
                data.extend(chunk);
            }
        }
        8 | 9 => {
            // A token of the format, over the bytes at `at` or inserted there.
            if !dict.is_empty() {
                let token = &dict[rng.below(dict.len())];
                if rng.chance(50) {
                    data.splice(at..at, token.iter().copied());
                } else {
                    let n = token.len().min(len - at);
                    data[at..at + n].copy_from_slice(&token[..n]);
                }
            }
        }
        10 => {
            // Splice another seed's bytes at the same offset.
            let other = &seeds[rng.below(seeds.len())].bytes;
            if at < other.len() {
                let n = (1 + rng.below(512)).min(other.len() - at).min(len - at);
                data[at..at + n].copy_from_slice(&other[at..at + n]);
            }
        }
        _ => match kind {
            Kind::Iso if !seed.tags.is_empty() => {
                // A field of a UDF descriptor, then its tag made valid again so the mutant passes the CRC check.
                let (tag, crc_len) = seed.tags[rng.below(seed.tags.len())];
                if tag + 16 + crc_len <= len {
                    let field = if rng.chance(15) {
                        tag + [0, 1, 2, 6, 7, 10, 11, 12, 13, 14, 15][rng.below(11)]
                    } else {
                        tag + 16 + rng.below(crc_len.max(1))
                    };
                    if field < len {
                        poke(rng, data, field, kind);
                    }
                    fix_udf_tag(data, tag);
                }
            }
            Kind::Frame if len >= 4 => {
                // The first frame's length made to match the bytes that follow (or off by one).
                let body = (len - 4) as u64;
                let v = match rng.below(4) {
                    0 => body + 1,
                    1 => body.saturating_sub(1),
                    _ => body,
                };
                put_le(data, 0, 4, v);
            }
            Kind::Loader if data.starts_with(b"MZ") => {
                // The Certificate Table (its data directory entry and its first WIN_CERTIFICATE's length) made to
                // reach the end of the file, so that bytes inserted or cut off still reach the signature parser.
                if let Some((dir, table)) = certificate_table(data) {
                    let size = (len - table) as u64;
                    put_le(data, dir + 4, 4, size);
                    if table + 4 <= len {
                        put_le(data, table, 4, size);
                    }
                } else {
                    poke(rng, data, at, kind);
                }
            }
            Kind::Loader if len >= 28 => {
                // The first signature list's size made to match the bytes that follow (or off by one).
                let v = match rng.below(4) {
                    0 => len + 1,
                    1 => len - 1,
                    _ => len,
                };
                put_le(data, 16, 4, v as u64);
            }
            _ => poke(rng, data, at, kind),
        },
    }
}

// ---------------------------------------------------------------------------------------------------------
// Seeds: real inputs made by the tools woesafe meets them from.

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A small tree like an installation medium's: nested directories, names with spaces and non-ASCII
/// characters, an empty file, files of a few sectors, a boot image, a hard link, and a directory of long names
/// whose records span several sectors.
fn make_tree(dir: &Path) {
    let files: [(&str, usize); 10] = [
        ("README.TXT", 60),
        ("setup.exe", 5000),
        ("empty.txt", 0),
        ("boot/etfsboot.com", 2048),
        ("boot/bcd", 3000),
        ("efi/boot/bootx64.efi", 2100),
        ("sources/install.wim", 9000),
        ("Dir with spaces/Ünïcödé файл.txt", 100),
        ("deep/a/b/c/d/leaf.txt", 10),
        ("sources/LongFileNameCollide1.txt", 40),
    ];
    for (i, (path, size)) in files.iter().enumerate() {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let bytes: Vec<u8> = (0..*size).map(|j| (j * 7 + i * 31) as u8).collect();
        std::fs::write(p, bytes).unwrap();
    }
    std::fs::hard_link(dir.join("setup.exe"), dir.join("boot/setup-hardlink.exe")).unwrap();
    std::fs::create_dir_all(dir.join("many")).unwrap();
    for i in 0..40 {
        let name =
            format!("many/{i:02} a rather long file name, which Joliet keeps in full only with -joliet-long.txt");
        std::fs::write(dir.join(name), format!("{i}")).unwrap();
    }
}

/// Sectors that are not all zeros.
fn nonzero_sectors(data: &[u8]) -> Vec<Range<usize>> {
    let mut hot: Vec<Range<usize>> = Vec::new();
    for (i, s) in data.chunks(SECTOR).enumerate() {
        if s.iter().any(|b| *b != 0) {
            let r = i * SECTOR..i * SECTOR + s.len();
            match hot.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => hot.push(r),
            }
        }
    }
    // Each sector its own range, so that a long run of file data does not outweigh a lone descriptor.
    hot.iter().flat_map(|r| r.clone().step_by(SECTOR).map(|s| s..(s + SECTOR).min(r.end))).collect()
}

fn iso_seeds(work: &Path) -> Option<Vec<Seed>> {
    if !have("genisoimage") {
        woesafe::report_skip("fuzz iso", "genisoimage is not installed (scripts/install-deps installs it)");
        return None;
    }
    let tree = work.join("iso-tree");
    make_tree(&tree);
    let variants: [(&str, &[&str]); 4] = [
        // As scripts/make-test-iso makes the test ISO (and Microsoft's: El Torito, no emulation).
        ("udf-joliet", &["-udf", "-iso-level", "3", "-J", "-joliet-long", "-b", "boot/etfsboot.com", "-no-emul-boot"]),
        ("udf", &["-udf", "-iso-level", "3"]),
        ("joliet", &["-iso-level", "3", "-J"]),
        ("iso9660", &[]),
    ];
    let mut seeds = Vec::new();
    for (name, args) in variants {
        let out = work.join(format!("{name}.iso"));
        run(Command::new("genisoimage")
            .args(["-quiet", "-input-charset", "utf-8"])
            .args(args)
            .arg("-o")
            .arg(&out)
            .arg(&tree));
        let bytes = std::fs::read(&out).unwrap();
        let tags = find_udf_tags(&bytes);
        if name.starts_with("udf") {
            assert!(tags.len() >= 10, "{name}: only {} UDF tags found", tags.len());
        }
        seeds.push(Seed { name: name.into(), hot: nonzero_sectors(&bytes), tags, bytes });
    }
    // UDF shapes genisoimage never writes: data in several extents, and data embedded in the File Entry. The
    // reader must see the same tree in them as in the image they are made from.
    let udf = seeds.iter().find(|s| s.name == "udf").expect("the UDF seed");
    let mut derived = Vec::new();
    for (name, embed) in [("udf-split-extents", false), ("udf-embedded", true)] {
        let mut bytes = udf.bytes.clone();
        let changed = reshape_udf_files(&mut bytes, &udf.tags, embed);
        assert!(changed >= 3, "{name}: only {changed} File Entries changed");
        assert_eq!(listing(work, &bytes).0, listing(work, &udf.bytes).0, "{name} reads differently from its source");
        if embed {
            assert!(listing(work, &bytes).1 < listing(work, &udf.bytes).1, "{name}: no file is embedded");
        }
        let tags = find_udf_tags(&bytes);
        derived.push(Seed { name: name.into(), hot: nonzero_sectors(&bytes), tags, bytes });
    }
    seeds.extend(derived);
    Some(seeds)
}

/// Every entry of an image with its size and (files) a hash of its data, as the userspace reader sees it; and
/// how many files lie in one run of the image's bytes.
type Listing = Vec<(String, bool, u64, Vec<u8>)>;
fn listing(work: &Path, image: &[u8]) -> (Listing, usize) {
    use std::io::Read;
    let path = work.join("listing.iso");
    std::fs::write(&path, image).unwrap();
    let fs = woesafe::media::iso::IsoFs::open(&path).unwrap();
    let mut out = Vec::new();
    for (i, e) in fs.entries().iter().enumerate() {
        let mut data = Vec::new();
        if !e.is_dir {
            fs.open_file(i).unwrap().read_to_end(&mut data).unwrap();
        }
        out.push((e.path.clone(), e.is_dir, e.size, sha2::Sha256::digest(&data).to_vec()));
    }
    let windows = (0..out.len()).filter(|i| fs.file_window(*i).is_some()).count();
    (out, windows)
}

/// Rewrite the File Entries (ECMA-167 4/14.9) of a UDF image whose data is one recorded short allocation
/// descriptor: split into two extents (the first block, then the rest) when it spans several blocks, or with
/// `embed`, the data moved into the entry itself when it fits. Returns how many entries changed.
fn reshape_udf_files(data: &mut [u8], tags: &[(usize, usize)], embed: bool) -> usize {
    const FILE_ENTRY: u64 = 261;
    const PARTITION_DESCRIPTOR: u64 = 5;
    let Some(&(pd, _)) = tags.iter().find(|(at, _)| get_le(data, *at, 2) == PARTITION_DESCRIPTOR) else {
        return 0;
    };
    let partition_start = get_le(data, pd + 188, 4) as usize;
    let mut changed = 0;
    let entries: Vec<usize> = tags.iter().map(|(at, _)| *at).filter(|at| get_le(data, *at, 2) == FILE_ENTRY).collect();
    for fe in entries {
        let (l_ea, l_ad) = (get_le(data, fe + 168, 4) as usize, get_le(data, fe + 172, 4) as usize);
        let ads = fe + 176 + l_ea;
        let short_ads = get_le(data, fe + 34, 2) & 7 == 0;
        if !short_ads || l_ad != 8 {
            continue;
        }
        let (word, pos) = (get_le(data, ads, 4), get_le(data, ads + 4, 4) as usize);
        let (len, kind) = ((word & 0x3FFF_FFFF) as usize, word >> 30);
        let size = get_le(data, fe + 56, 8) as usize;
        let new_l_ad = if embed {
            let room = SECTOR - 176 - l_ea;
            let from = (partition_start + pos) * SECTOR;
            if kind != 0 || size > room || size > len || from + size > data.len() {
                continue;
            }
            data.copy_within(from..from + size, ads);
            put_le(data, fe + 34, 2, (get_le(data, fe + 34, 2) & !7) | 3);
            put_le(data, fe + 64, 8, 0); // no blocks recorded outside the entry
            size
        } else {
            if kind != 0 || len <= SECTOR || 176 + l_ea + 16 > SECTOR {
                continue;
            }
            put_le(data, ads, 4, SECTOR as u64);
            put_le(data, ads + 4, 4, pos as u64);
            put_le(data, ads + 8, 4, (len - SECTOR) as u64);
            put_le(data, ads + 12, 4, (pos + 1) as u64);
            16
        };
        put_le(data, fe + 172, 4, new_l_ad as u64);
        put_le(data, fe + 10, 2, (160 + l_ea + new_l_ad) as u64);
        fix_udf_tag(data, fe);
        changed += 1;
    }
    changed
}

/// The WIM's header, blob table, XML and integrity table.
fn wim_hot(bytes: &[u8]) -> Vec<Range<usize>> {
    // The header in 16-byte ranges: its fields get as much attention as the table's entries.
    let head = 208.min(bytes.len());
    let mut hot: Vec<Range<usize>> = (0..head).step_by(16).map(|s| s..(s + 16).min(head)).collect();
    for at in [48, 72, 124] {
        if bytes.len() >= at + 16 {
            let size = (get_le(bytes, at, 8) & 0x00FF_FFFF_FFFF_FFFF) as usize;
            let offset = get_le(bytes, at + 8, 8) as usize;
            if size > 0 && offset < bytes.len() {
                // Blob table entries are 50 bytes: one range each, so every entry gets its share.
                let end = offset.saturating_add(size).min(bytes.len());
                let step = if at == 48 { 50 } else { 512 };
                hot.extend((offset..end).step_by(step).map(|s| s..(s + step).min(end)));
            }
        }
    }
    hot
}

fn wim_seeds(work: &Path) -> Option<Vec<Seed>> {
    if !have("wimlib-imagex") {
        woesafe::report_skip("fuzz wim", "wimlib-imagex is not installed (scripts/install-deps installs it)");
        return None;
    }
    let tree = work.join("wim-tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    let text: Vec<u8> = b"Windows setup reads this file. ".iter().copied().cycle().take(40_000).collect();
    let mut x = 0x1234_5678u32;
    let noise: Vec<u8> = (0..6000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    std::fs::write(tree.join("a.txt"), &text).unwrap();
    std::fs::write(tree.join("sub/same-as-a.txt"), &text).unwrap();
    std::fs::write(tree.join("noise.bin"), &noise).unwrap();
    std::fs::write(tree.join("sub/small.txt"), b"small").unwrap();
    std::fs::write(tree.join("empty"), b"").unwrap();
    let variants: [(&str, &[&str]); 6] = [
        ("none", &["--compress=none"]),
        ("xpress", &["--compress=xpress"]),
        ("lzx", &["--compress=lzx"]),
        ("lzx-check", &["--compress=lzx", "--check"]),
        ("solid", &["--solid"]),
        ("pipable", &["--compress=xpress", "--pipable"]),
    ];
    let mut seeds = Vec::new();
    for (name, args) in variants {
        let out = work.join(format!("{name}.wim"));
        run(Command::new("wimlib-imagex").arg("capture").arg(&tree).arg(&out).arg("Fuzz").args(args));
        if name == "lzx" {
            // Two images: two metadata resources, two IMAGE elements.
            run(Command::new("wimlib-imagex").arg("append").arg(tree.join("sub")).arg(&out).arg("Second"));
        }
        let bytes = std::fs::read(&out).unwrap();
        seeds.push(Seed { name: name.into(), hot: wim_hot(&bytes), tags: Vec::new(), bytes });
    }
    Some(seeds)
}

fn frame_seeds() -> Vec<Seed> {
    use woesafe::protocol::{Down, Driver, Report, Step, Table, TargetState, Up, WriteRequest, write_frame};
    use woesafe::stick::choose::{Choice, Fs, FsRequest};
    use woesafe::stick::safety::Inventory;
    let request = WriteRequest {
        iso: "/home/user/Win11_24H2_English_x64.iso".into(),
        iso_id: woesafe::sys::argfile::FileId { dev: 2049, ino: 131_077, rdev: 0 },
        target: "/dev/sdb".into(),
        target_is_image: false,
        target_size: 32_017_047_552,
        sector_size: 512,
        label: Some("WIN11".into()),
        boot: woesafe::boot::BootMode::Both,
        boot_asked: true,
        ca2023: true,
        table: Table::Mbr,
        source_driver: Driver::Auto,
        target_driver: Driver::Userspace,
        work_dir: "/run/woesafe.1234".into(),
        setup: woesafe::media::unattend::SetupOptions::bypassing(&[
            woesafe::media::unattend::Bypass::Tpm,
            woesafe::media::unattend::Bypass::OnlineAccount,
        ]),
        fs: FsRequest::Auto,
        scratch_dir: "/var/tmp".into(),
        uefi_ntfs_image: None,
        pause_at: Some(("copy".into(), 500)),
        verify: true,
    };
    let inventory = Inventory {
        volume_id: "CCCOMA_X64FRE_EN-US_DV9".into(),
        reader: "UDF (userspace)".into(),
        dirs: 120,
        files: 950,
        total_bytes: 5_900_000_000,
        largest: vec![("sources/install.wim".into(), 4_700_000_000), ("sources/boot.wim".into(), 600_000_000)],
        is_windows: true,
        has_bootmgr: true,
        has_uefi_loader: true,
        needed_bytes: 5_950_000_000,
        fat_problem: None,
        name_problem: Some("boot/grub is in the way of boot/grub/grub.cfg".into()),
        loader_problem: None,
        has_answer_file: false,
        fs: Ok(Choice {
            fs: Fs::Fat32,
            split: vec!["sources/install.wim".into()],
            repack: vec![],
            reason: "install.wim is over 4 GiB".into(),
        }),
        scratch_problem: Some("not enough room in /var/tmp".into()),
        scratch_bytes: 0,
        win7_image: Some(2),
        bridge: false,
        boot: woesafe::boot::BootMode::Uefi,
        uefi_arch: Some(woesafe::boot::uefi::Arch::Arm64),
        ca2023_problem: Some("sources/boot.wim has 1 image".into()),
        bridge_problem: None,
        layout: Default::default(),
    };
    let report = Report {
        label: "WIN11".into(),
        serial: "1A2B-3C4D".into(),
        table: Table::Gpt,
        partition_offset: 1 << 20,
        partition_size: 31 << 30,
        dirs: 120,
        files: 951,
        bytes: 5_900_000_000,
        bios: true,
        uefi: true,
        source_driver: "userspace".into(),
        target_driver: "userspace".into(),
        fs: Fs::Ntfs,
        split: Some(("sources/install.wim".into(), 2)),
        bridge: Some((33 << 30, 1 << 20)),
        win7_loader_from_image: None,
        uefi_arch: Some(woesafe::boot::uefi::Arch::Arm64),
        ca2023_from_image: Some(2),
        verified: None,
    };
    let proceed = Down::Proceed { target: woesafe::sys::argfile::FileId { dev: 5, ino: 421, rdev: 2064 } };
    let down = [Down::Start(Box::new(request)), proceed, Down::Abort];
    let up = [
        Up::Info("Reading the ISO \"Ünïcödé\"\n".into()),
        Up::Warning("slow".into()),
        Up::Inventory(Box::new(inventory)),
        Up::Step(Step::Copy),
        Up::Progress { done: 12, total: u64::MAX },
        Up::Done(Box::new(report)),
        Up::Failed { step: Step::Format, message: "mkfs".into(), state: TargetState::Wiped, refused: false },
        Up::Stopped { step: Step::Flush, state: TargetState::NotFlushed },
        Up::Devices(vec!["loop3".into(), "sdb".into()]),
        Up::Fuse { connection: 49, fusectl: Some("/run/fusectl".into()) },
        Up::Aborted,
    ];
    let mut seeds = Vec::new();
    let mut downs = Vec::new();
    let mut ups = Vec::new();
    for (i, d) in down.iter().enumerate() {
        let mut b = Vec::new();
        write_frame(&mut b, d).unwrap();
        downs.extend_from_slice(&b);
        seeds.push(Seed { name: format!("down-{i}"), hot: Vec::new(), tags: Vec::new(), bytes: b });
    }
    for (i, u) in up.iter().enumerate() {
        let mut b = Vec::new();
        write_frame(&mut b, u).unwrap();
        ups.extend_from_slice(&b);
        seeds.push(Seed { name: format!("up-{i}"), hot: Vec::new(), tags: Vec::new(), bytes: b });
    }
    seeds.push(Seed { name: "down-stream".into(), hot: Vec::new(), tags: Vec::new(), bytes: downs });
    seeds.push(Seed { name: "up-stream".into(), hot: Vec::new(), tags: Vec::new(), bytes: ups });
    seeds
}

/// A PE image's Certificate Table: (offset of its data directory entry, the table's file offset), when the
/// headers are there to say so and the table starts inside the file.
fn certificate_table(data: &[u8]) -> Option<(usize, usize)> {
    let pe = get_le(data.get(..0x40)?, 0x3C, 4) as usize;
    let opt = pe.checked_add(24).filter(|opt| opt + 2 <= data.len())?;
    // The data directories follow 112 bytes of PE32+ optional header (96 of PE32); the fifth is the table.
    let dirs = match get_le(data, opt, 2) {
        0x20b => opt + 112,
        0x10b => opt + 96,
        _ => return None,
    };
    let dir = dirs + 4 * 8;
    if dir + 8 > data.len() {
        return None;
    }
    let table = get_le(data, dir, 4) as usize;
    (table > 0 && table < data.len()).then_some((dir, table))
}

/// Where a loader's mutations matter most: its headers, its `.sbat` section and its Certificate Table (the
/// WIN_CERTIFICATE and the PKCS#7 DER), in 16-byte ranges; signature lists and text wholly.
fn loader_hot(bytes: &[u8]) -> Vec<Range<usize>> {
    let chunks = |r: Range<usize>| {
        let end = r.end.min(bytes.len());
        (r.start..end).step_by(16).map(move |s| s..(s + 16).min(end))
    };
    if !bytes.starts_with(b"MZ") || bytes.len() < 0x40 {
        return chunks(0..bytes.len()).collect();
    }
    let pe = get_le(bytes, 0x3C, 4) as usize;
    let mut hot: Vec<Range<usize>> = chunks(0..0x400).collect();
    if pe + 24 <= bytes.len() {
        let sections = get_le(bytes, pe + 6, 2) as usize;
        let table = pe + 24 + get_le(bytes, pe + 20, 2) as usize;
        for s in (0..sections).map(|i| table + 40 * i).filter(|s| s + 40 <= bytes.len()) {
            if &bytes[s..s + 8] == b".sbat\0\0\0" {
                let (size, at) = (get_le(bytes, s + 16, 4) as usize, get_le(bytes, s + 20, 4) as usize);
                hot.extend(chunks(at..at.saturating_add(size)));
            }
        }
    }
    if let Some((dir, table)) = certificate_table(bytes) {
        let size = get_le(bytes, dir + 4, 4) as usize;
        hot.extend(chunks(table..table.saturating_add(size)));
    }
    hot
}

/// A GRUB image for `platform` (x86_64-efi, arm64-efi) as grub-mkimage makes one: the kernel alone (no modules,
/// about 130 KiB), with an SBAT section. None without grub-mkimage or the platform's GRUB files.
fn grub_image(work: &Path, platform: &str) -> Option<Vec<u8>> {
    let dir = Path::new("/usr/lib/grub").join(platform);
    if !have("grub-mkimage") || !dir.join("kernel.img").exists() {
        return None;
    }
    let (csv, out) = (work.join("sbat.csv"), work.join(format!("grub-{platform}.efi")));
    std::fs::write(
        &csv,
        "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n\
         grub,4,Free Software Foundation,grub,2.12,https://www.gnu.org/software/grub/\n",
    )
    .unwrap();
    run(Command::new("grub-mkimage")
        .args(["-O", platform, "-p", "/efi/boot", "--sbat"])
        .arg(&csv)
        .arg("-d")
        .arg(&dir)
        .arg("-o")
        .arg(&out));
    Some(std::fs::read(out).unwrap())
}

/// Seeds of the revocation check: the signed test loader, GRUB images, dbx and db contents (certificates, image
/// hashes, TBSCertificate hashes, a skipped type), an SbatLevel, and a bundle of a loader with its databases.
fn loader_seeds(work: &Path) -> Vec<Seed> {
    use fuzzing::{EFI_CERT_SHA1, EFI_CERT_SHA256, EFI_CERT_X509, EFI_CERT_X509_SHA256, signature_list};
    let fixture = |name: &str| {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/revocation").join(name)).unwrap()
    };
    let signed = fixture("signed.efi");
    let facts = woesafe::boot::revocation::examine(&signed).expect("the signed fixture examines");
    assert_eq!(facts.certs.len(), 2, "the signed fixture carries its signer's and its CA's certificates");
    let mut certs = signature_list(EFI_CERT_X509, &[&fixture("signer.der")]);
    certs.extend(signature_list(EFI_CERT_X509, &[&fixture("ca.der")]));
    let mut hashes = signature_list(EFI_CERT_SHA256, &[&[0x11; 32], &facts.sha256, &[0x22; 32]]);
    // TBSCertificate hashes, each with its EFI_TIME of revocation (2024-01-09).
    let tbs: Vec<Vec<u8>> =
        facts.certs.iter().map(|c| [&c.tbs_sha256[..], &[0xe8, 0x07, 1, 9], &[0; 12]].concat()).collect();
    hashes.extend(signature_list(EFI_CERT_X509_SHA256, &tbs.iter().map(Vec::as_slice).collect::<Vec<_>>()));
    hashes.extend(signature_list(EFI_CERT_SHA1, &[&[0x33; 20], &[0x44; 20]]));
    let level = b"sbat,1,2024010900\nshim,4\ngrub,3\ngrub.debian,4\n\0".to_vec();
    // A loader whose hash and CA the bundle's dbx lists, whose CA its db holds, under an SbatLevel it is below.
    let mut dbx = signature_list(EFI_CERT_SHA256, &[&[0x11; 32], &facts.sha256]);
    dbx.extend(signature_list(EFI_CERT_X509, &[&fixture("ca.der")]));
    let db = signature_list(EFI_CERT_X509, &[&fixture("ca.der")]);
    let bundle = [&signed[..], &dbx, &db, &level].join(fuzzing::LOADER_PART_MARK);
    let mut seeds: Vec<(String, Vec<u8>)> = vec![
        ("signed-efi".into(), signed),
        ("dbx-certificates".into(), certs),
        ("dbx-hashes".into(), hashes),
        ("sbat-level".into(), level),
        ("bundle".into(), bundle),
    ];
    for platform in ["x86_64-efi", "arm64-efi"] {
        match grub_image(work, platform) {
            Some(image) => seeds.push((format!("grub-{platform}"), image)),
            None => {
                eprintln!("fuzz loader: no GRUB {platform} seed (grub-mkimage or /usr/lib/grub/{platform} missing)")
            }
        }
    }
    seeds
        .into_iter()
        .map(|(name, bytes)| {
            // A bundle's loader gets the attention a loader does; the rest of it, all of it.
            let hot = match fuzzing::find_part_mark(&bytes) {
                Some(end) => {
                    let mut hot = loader_hot(&bytes[..end]);
                    hot.extend((end..bytes.len()).step_by(16).map(|s| s..(s + 16).min(bytes.len())));
                    hot
                }
                None => loader_hot(&bytes),
            };
            Seed { name, hot, tags: Vec::new(), bytes }
        })
        .collect()
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn dictionary(kind: Kind) -> Vec<Vec<u8>> {
    match kind {
        Kind::Iso => [&b"CD001"[..], b"\x01CD001\x01", b"\x02CD001\x01", b"\xffCD001\x01", b"NSR02", b"NSR03", b"BEA01", b"TEA01"]
            .iter()
            .map(|t| t.to_vec())
            .collect(),
        Kind::Wim => {
            let mut d: Vec<Vec<u8>> = [
                "<IMAGE INDEX=\"",
                "<IMAGE INDEX=\"0\">",
                "<IMAGE INDEX=\"99\">",
                "</IMAGE>",
                "<ARCH>9</ARCH>",
                "<WIM>",
                "</WIM>",
                "&#x0;",
                "&#65;",
                "&amp;",
                "&lt;",
                "&bogus;",
                "<![CDATA[",
                "]]>",
                "<!--",
                "-->",
                "<?xml version=\"1.0\"?>",
                "\"",
                "<",
                ">",
                "/>",
                "\u{feff}",
                "\r\n",
                "\u{d7ff}",
            ]
            .iter()
            .map(|t| utf16(t))
            .collect();
            d.push(b"MSWIM\0\0\0".to_vec());
            d.push(vec![0xd8, 0x00]); // a lone surrogate (big end of a UTF-16LE unit)
            d
        }
        Kind::Frame => [
            "\"Start\"",
            "\"Progress\"",
            "{\"Ok\":",
            "{\"Err\":",
            "null",
            "true",
            "-1",
            "0",
            "18446744073709551615",
            "18446744073709551616",
            "1e999",
            "1.5",
            "\"\\u0000\"",
            "\"\\ud800\"",
            "\"\\udc00\\ud800\"",
            "[",
            "]",
            "{",
            "}",
            ",",
            ":",
            "\"",
            "\\",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        ]
        .iter()
        .map(|t| t.as_bytes().to_vec())
        .collect(),
        Kind::Loader => {
            let mut d: Vec<Vec<u8>> = [
                &b"MZ"[..],
                b"PE\0\0",
                b".sbat\0\0\0",
                b".text\0\0\0",
                b".data\0\0\0",
                b"\x0b\x02",                         // PE32+ optional header magic
                b"\x0b\x01",                         // PE32's
                b"\x64\x86",                         // machine x86_64
                b"\x64\xaa",                         // machine arm64
                b"\x0a\x00",                         // subsystem EFI application
                b"\x00\x02\x02\x00",                 // WIN_CERTIFICATE revision 0x0200, type 0x0002 (PKCS#7)
                b"\x30\x82",                         // DER SEQUENCE, two length bytes
                b"\x30\x80",                         // an indefinite length (BER, not DER)
                b"\x30\x84\x0f\xff\xff\xff",         // the largest length the der crate reads
                b"\x30\x84\xff\xff\xff\xff",         // 4 GiB
                b"\xa0\x82",                         // [0] (certificates), two length bytes
                b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02", // OID signedData
                b"\x06\x0a\x2b\x06\x01\x04\x01\x82\x37\x02\x01\x04", // OID SPC_INDIRECT_DATA
                b"\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01", // OID SHA-256
                b"sbat,1,",
                b"sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n",
                b"grub,",
                b"shim,",
                b",4294967295",
                b",4294967296",
                b",-1",
                b"\n",
                b"\r\n",
                b"\0",
                b"\xff\xfe",
                fuzzing::LOADER_PART_MARK,
            ]
            .iter()
            .map(|t| t.to_vec())
            .collect();
            // The signature list types, and a list header: 28 bytes and one 48-byte SHA-256 entry.
            use fuzzing::{EFI_CERT_SHA1, EFI_CERT_SHA256, EFI_CERT_X509, EFI_CERT_X509_SHA256};
            d.extend([EFI_CERT_SHA256, EFI_CERT_X509, EFI_CERT_X509_SHA256, EFI_CERT_SHA1].map(|t| t.to_vec()));
            d.push([&EFI_CERT_SHA256[..], &76u32.to_le_bytes(), &0u32.to_le_bytes(), &48u32.to_le_bytes()].concat());
            d
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The loop.

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    if v == "random" {
        return Some(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64);
    }
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
    .or_else(|| panic!("{name}={v:?} is not a number"))
}

/// Failures of one run: (saved input, why).
#[derive(Default)]
struct Failures(Vec<(PathBuf, String)>);

impl Failures {
    fn record(&mut self, target: &str, what: &str, input: &[u8], why: String) {
        let path = save_failure(target, input);
        eprintln!("fuzz {target}: {what} failed: {why}\n  saved as {}", path.display());
        self.0.push((path, why));
    }

    fn assert_none(&self, target: &str, hint: &str) {
        if self.0.is_empty() {
            return;
        }
        let list: Vec<String> = self.0.iter().map(|(p, why)| format!("  {} — {why}", p.display())).collect();
        panic!("fuzz {target}: {} failing input(s):\n{}\n{hint}", self.0.len(), list.join("\n"));
    }
}

fn dump_seeds(target: &str, seeds: &[Seed]) {
    if let Ok(dir) = std::env::var("WOESAFE_FUZZ_DUMP_SEEDS") {
        let dir = Path::new(&dir).join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for s in seeds {
            std::fs::write(dir.join(format!("seed-{}", s.name)), &s.bytes).unwrap();
        }
    }
}

/// The mutation loop for one target: the seeds themselves, then WOESAFE_FUZZ_ITERS mutants.
fn fuzz(target: &'static str, kind: Kind, seeds: Vec<Seed>, entry: Entry, min_accepted_pct: u64) {
    dump_seeds(target, &seeds);
    let default_iters = DEFAULT_ITERS.iter().find(|(t, _)| *t == target).map_or(20_000, |(_, n)| *n);
    let iters = env_u64("WOESAFE_FUZZ_ITERS").unwrap_or(default_iters);
    let base_seed = env_u64("WOESAFE_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let dict = dictionary(kind);
    let dog = Watchdog::start(target);
    let oom = oom_path(target);
    let mut failures = Failures::default();
    for s in &seeds {
        let input = Arc::new(s.bytes.clone());
        let r = run_one(entry, &input, &dog, &oom);
        match r.outcome {
            Ok(o) => assert!(o.accepted, "fuzz {target}: seed {} is not accepted: {o:?}", s.name),
            Err(why) => failures.record(target, &format!("seed {}", s.name), &input, why),
        }
    }
    // Each target its own stream, whatever order the tests run in.
    let mut rng = Rng(base_seed ^ target.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))));
    let (mut accepted, mut items, mut bytes, mut slowest, mut peak) = (0u64, 0u64, 0u64, Duration::ZERO, 0isize);
    let (mut slowest_input, mut hungriest_input) = (Arc::default(), Arc::default());
    let start = Instant::now();
    for i in 0..iters {
        let seed = &seeds[rng.below(seeds.len())];
        let mut data = seed.bytes.clone();
        let mut rounds = 1;
        while rounds < 8 && rng.chance(50) {
            rounds += 1;
        }
        for _ in 0..rounds {
            mutate(&mut rng, &mut data, seed, &seeds, &dict, kind);
        }
        data.truncate(2 * seed.bytes.len() + (64 << 10));
        let input = Arc::new(data);
        let r = run_one(entry, &input, &dog, &oom);
        if r.time > slowest {
            slowest = r.time;
            slowest_input = input.clone();
        }
        if r.peak > peak {
            peak = r.peak;
            hungriest_input = input.clone();
        }
        match r.outcome {
            Ok(o) => {
                accepted += u64::from(o.accepted);
                items += o.items;
                bytes += o.bytes;
            }
            Err(why) => {
                failures.record(target, &format!("input {i} (from seed {})", seed.name), &input, why);
                if failures.0.len() >= MAX_FAILURES {
                    break;
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = format!(
        "fuzz {target}: {iters} inputs in {secs:.1} s ({:.0}/s), WOESAFE_FUZZ_SEED={base_seed:#x}; {accepted} accepted \
         ({:.1} %), {items} entries/parts/frames, {} MiB read; slowest {slowest:.1?} of CPU, peak {:.1} MiB",
        iters as f64 / secs,
        100.0 * accepted as f64 / iters.max(1) as f64,
        bytes >> 20,
        peak as f64 / (1 << 20) as f64,
    );
    eprintln!("{stats}");
    // For scripts/test to show after cargo's captured output.
    use std::io::Write;
    let stats_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-stats.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(stats_file) {
        let _ = writeln!(f, "{stats}");
    }
    // The slowest and the most memory-hungry inputs, to look at (the budgets' margins).
    if iters > 0 {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-extremes");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{target}-slowest.bin")), &*slowest_input).unwrap();
        std::fs::write(dir.join(format!("{target}-hungriest.bin")), &*hungriest_input).unwrap();
    }
    failures.assert_none(
        target,
        &format!(
            "Once fixed, keep each as a regression test: copy it into tests/fuzz-regressions/{target}/ (replayed \
             by `cargo test --test fuzz regressions`)."
        ),
    );
    // The mutants must reach the parsers' depths (not all rejected at the first check) and must change
    // something (not all accepted).
    if iters >= 1000 {
        assert!(
            accepted * 100 >= iters * min_accepted_pct,
            "fuzz {target}: only {accepted} of {iters} mutants accepted"
        );
        assert!(accepted < iters, "fuzz {target}: every mutant was accepted: the mutator does nothing");
    }
}

#[test]
fn fuzz_iso() {
    let work = tempfile::tempdir().unwrap();
    if let Some(seeds) = iso_seeds(work.path()) {
        fuzz("iso", Kind::Iso, seeds, fuzzing::iso, 10);
    }
}

#[test]
fn fuzz_wim() {
    let work = tempfile::tempdir().unwrap();
    if let Some(seeds) = wim_seeds(work.path()) {
        fuzz("wim", Kind::Wim, seeds, fuzzing::wim, 10);
    }
}

#[test]
fn fuzz_frame() {
    fuzz("frame", Kind::Frame, frame_seeds(), fuzzing::frame, 10);
}

#[test]
fn fuzz_loader() {
    let work = tempfile::tempdir().unwrap();
    fuzz("loader", Kind::Loader, loader_seeds(work.path()), fuzzing::loader, 30);
}

/// Every file under tests/fuzz-regressions/<target>/ (but README.md and dot files) passes, under the same
/// budgets: inputs that once found a bug.
#[test]
fn regressions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut failures = Failures::default();
    let mut replayed = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !dir.is_dir() {
            continue;
        }
        let Some(target) = TARGETS.iter().find(|t| **t == name) else {
            panic!("{}: not a fuzz target ({TARGETS:?}): its files would never be replayed", dir.display());
        };
        let entry: Entry = match *target {
            "iso" => fuzzing::iso,
            "wim" => fuzzing::wim,
            "loader" => fuzzing::loader,
            _ => fuzzing::frame,
        };
        let dog = Watchdog::start(target);
        let oom = oom_path(target);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let fname = file.file_name().unwrap().to_string_lossy();
            if fname.starts_with('.') || fname.ends_with(".md") {
                continue;
            }
            let input = Arc::new(std::fs::read(&file).unwrap());
            replayed += 1;
            if let Err(why) = run_one(entry, &input, &dog, &oom).outcome {
                eprintln!("fuzz regression {}: {why}", file.display());
                failures.0.push((file.clone(), why));
            }
        }
    }
    eprintln!("fuzz regressions: {replayed} inputs replayed");
    failures.assert_none("regressions", "These inputs once found a bug: it is back.");
}

// ---------------------------------------------------------------------------------------------------------
// The harness's own checks: its budgets catch what they are for, its UDF tag repair makes valid tags.

fn panics(_: &[u8]) -> Outcome {
    panic!("synthetic panic")
}

fn hogs_memory(_: &[u8]) -> Outcome {
    let v = vec![0u8; 300 << 20];
    std::hint::black_box(&v);
    Outcome::default()
}

fn slow(_: &[u8]) -> Outcome {
    let start = thread_cpu_time();
    while thread_cpu_time() - start < TIME_BUDGET + Duration::from_millis(100) {
        std::hint::spin_loop();
    }
    Outcome::default()
}

fn sleeps(_: &[u8]) -> Outcome {
    std::thread::sleep(TIME_BUDGET + Duration::from_millis(100));
    Outcome::default()
}

fn fine(data: &[u8]) -> Outcome {
    let v = vec![0u8; 1 << 20];
    Outcome { accepted: true, items: std::hint::black_box(&v).len() as u64, bytes: data.len() as u64 }
}

fn bomb(_: &[u8]) -> Outcome {
    let v = vec![0u8; 3 << 30];
    std::hint::black_box(&v);
    Outcome::default()
}

#[test]
fn budgets_catch_panics_memory_and_time() {
    let dog = Watchdog::start("selftest");
    let oom = oom_path("selftest");
    let input = Arc::new(b"input".to_vec());
    let err = |entry: Entry| run_one(entry, &input, &dog, &oom).outcome.expect_err("a failure");
    assert!(err(panics).contains("panicked: synthetic panic"));
    assert!(err(hogs_memory).contains("held 300 MiB"), "{}", err(hogs_memory));
    assert!(err(slow).starts_with("took"));
    // Waiting is not working: only CPU time counts.
    assert!(run_one(sleeps, &input, &dog, &oom).outcome.is_ok());
    let ok = run_one(fine, &input, &dog, &oom);
    assert_eq!(ok.outcome.expect("no failure"), Outcome { accepted: true, items: 1 << 20, bytes: 5 });
    assert!((1 << 20..2 << 20).contains(&ok.peak), "peak {} bytes", ok.peak);
}

/// The hard limit, in a child process (it aborts): the input is saved before the allocation is refused.
#[test]
fn hard_limit_saves_the_input_and_aborts() {
    if std::env::var_os("WOESAFE_FUZZ_HARD_LIMIT_CHILD").is_some() {
        let dog = Watchdog::start("selftest");
        let input = Arc::new(b"the bomb's input".to_vec());
        run_one(bomb, &input, &dog, &oom_path("selftest"));
        unreachable!("the allocation past the hard limit was not refused");
    }
    let saved = failure_dir().join("selftest-over-hard-limit.bin");
    let _ = std::fs::remove_file(&saved);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["hard_limit_saves_the_input_and_aborts", "--exact", "--nocapture", "--test-threads", "1"])
        .env("WOESAFE_FUZZ_HARD_LIMIT_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child survived: {stderr}");
    assert!(stderr.contains("past the hard limit") && stderr.contains("saved as"), "{stderr}");
    assert_eq!(std::fs::read(&saved).unwrap(), b"the bomb's input");
}

fn hangs(_: &[u8]) -> Outcome {
    std::thread::sleep(Duration::from_secs(20));
    Outcome::default()
}

/// The hang watchdog, in a child process (it aborts) with a 300 ms limit: the input is saved.
#[test]
fn watchdog_saves_a_hanging_input_and_aborts() {
    let input = b"the hanging input".to_vec();
    if std::env::var_os("WOESAFE_FUZZ_HANG_CHILD").is_some() {
        let dog = Watchdog::start("selftest");
        run_one(hangs, &Arc::new(input), &dog, &oom_path("selftest"));
        unreachable!("the watchdog let a hanging input finish");
    }
    let saved = save_failure("selftest", &input);
    std::fs::remove_file(&saved).unwrap();
    let start = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["watchdog_saves_a_hanging_input_and_aborts", "--exact", "--nocapture", "--test-threads", "1"])
        .env("WOESAFE_FUZZ_HANG_CHILD", "1")
        .env("WOESAFE_FUZZ_HANG_MS", "300")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child survived: {stderr}");
    assert!(start.elapsed() < Duration::from_secs(15), "the watchdog took {:?}", start.elapsed());
    assert!(stderr.contains(&format!("saved as {}", saved.display())), "{stderr}");
    assert_eq!(std::fs::read(&saved).unwrap(), input);
}

#[test]
fn udf_tags_are_repaired() {
    // CRC-ITU-T's check value.
    assert_eq!(udf_crc(b"123456789"), 0x31C3);
    let mut data = vec![0u8; 64];
    put_le(&mut data, 4 + 16, 2, 2); // a body byte
    put_le(&mut data, 0, 2, 257); // a File Identifier Descriptor
    put_le(&mut data, 2, 2, 2); // descriptor version 2
    put_le(&mut data, 10, 2, 40);
    assert!(find_udf_tags(&data).is_empty());
    fix_udf_tag(&mut data, 0);
    assert_eq!(find_udf_tags(&data), vec![(0, 40)]);
    data[30] ^= 0x10;
    assert!(find_udf_tags(&data).is_empty());
    fix_udf_tag(&mut data, 0);
    assert_eq!(find_udf_tags(&data), vec![(0, 40)]);
    // What the cargo-fuzz target's mutator does: anything shaped like a tag is made valid again.
    data[31] ^= 0x01;
    assert_eq!(fuzzing::repair_udf_tags(&mut data), 1);
    assert_eq!(find_udf_tags(&data), vec![(0, 40)]);
}
