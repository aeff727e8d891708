//! What a write tells whoever runs it: typed events (serializable, for `--json`), the observer that receives
//! them and answers the one question (confirmation), and the handle through which a caller asks a write to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use serde::Serialize;

use crate::protocol::{Report, Step, TargetState};
use crate::stick::safety::Inventory;

/// One thing that happened in a write, in order. Every string that came from the ISO, the disk or the worker is
/// raw here: a presenter that prints to a terminal escapes it (`cli::term`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The target passed the checks that need no ISO content: this is what would be erased.
    Target {
        description: String,
        size: u64,
    },
    /// A remark from the supervisor (an option that has no effect, an existing image keeping its size).
    Note {
        message: String,
    },
    /// What the ISO holds (read by the worker).
    Iso {
        volume_id: String,
        reader: String,
        files: u64,
        dirs: u64,
        bytes: u64,
        needed_bytes: u64,
        largest: Vec<(String, u64)>,
    },
    /// The filesystem chosen for the stick, and why.
    Layout {
        filesystem: &'static str,
        reason: String,
        table: &'static str,
        boot: &'static str,
    },
    /// A step started: `number` of `total` (the total can grow by one when a Prepare step turns out needed).
    Step {
        step: &'static str,
        number: usize,
        total: usize,
        description: &'static str,
    },
    /// Bytes of the current step done, of `total`, and the rate since the step started.
    Progress {
        step: Option<&'static str>,
        done: u64,
        total: u64,
        bytes_per_second: u64,
    },
    Info {
        message: String,
    },
    /// A remark for `-v` only (e.g. a check that this machine cannot make).
    Detail {
        message: String,
    },
    Warning {
        message: String,
    },
    /// A stop was asked for: `at_once` false = orderly (flush, unmount, detach), true = tear the namespace down.
    Stopping {
        signal: i32,
        at_once: bool,
    },
    /// The plan of a --dry-run: every check passed; nothing was written.
    Planned {
        inventory: Box<Inventory>,
    },
    /// The write is complete.
    Done {
        report: Box<Report>,
        seconds: f64,
    },
    /// The write ended without success.
    Failed {
        message: String,
        exit_code: u8,
        #[serde(serialize_with = "state_json")]
        target_state: TargetState,
    },
    /// The write was stopped by a signal.
    Stopped {
        signal: i32,
        message: String,
        exit_code: u8,
        #[serde(serialize_with = "state_json")]
        target_state: TargetState,
    },
}

/// A step's JSON and CLI name.
pub(crate) fn step_name(step: Option<Step>) -> Option<&'static str> {
    step.map(Step::name)
}

/// What the write asks before the first byte is written.
#[derive(Debug, Clone, Serialize)]
pub struct Confirmation {
    /// The target, as the user should recognise it ("/dev/sdb — SanDisk Ultra, 29.8 GiB, usb").
    pub target: String,
}

/// Receives a write's events and answers its question.
pub trait Observer {
    fn event(&mut self, event: &Event);
    /// Asked once, after every check passed and before anything is written: erase this target? Err: nobody
    /// can answer (the reason becomes the refusal's message). A stop requested while this waits must make it
    /// return soon (see `StopHandle::requested`).
    fn confirm(&mut self, question: &Confirmation) -> Result<bool, String>;
}

/// How a caller asks running writes to stop: the first request is an orderly stop (the worker flushes, unmounts
/// and detaches), a second one tears the worker's namespace down at once. Cloned handles share the requests.
#[derive(Debug, Clone, Default)]
pub struct StopHandle {
    inner: Arc<Stops>,
}

#[derive(Debug, Default)]
struct Stops {
    /// The signal of the first request (0: none yet).
    first: AtomicI32,
    count: AtomicU32,
    /// The last request counted: its signal and when it came.
    last: std::sync::Mutex<Option<(i32, std::time::Instant)>>,
}

/// The same signal again within this time counts once: `timeout` and a shell can deliver one stop twice (to the
/// process and to its group), and that must not skip the orderly stop.
pub const SAME_SIGNAL_WINDOW: std::time::Duration = std::time::Duration::from_millis(250);

impl StopHandle {
    pub fn new() -> StopHandle {
        StopHandle::default()
    }

    /// Ask for a stop because of `signal` (for the messages and the exit code 128+N).
    pub fn request(&self, signal: i32) {
        let now = std::time::Instant::now();
        if let Ok(mut last) = self.inner.last.lock() {
            if last.is_some_and(|(sig, at)| sig == signal && now.duration_since(at) < SAME_SIGNAL_WINDOW) {
                return;
            }
            *last = Some((signal, now));
        }
        let _ = self.inner.first.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        self.inner.count.fetch_add(1, Ordering::SeqCst);
    }

    /// The signal of the first request, if one came.
    pub fn requested(&self) -> Option<i32> {
        match self.inner.first.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// How many stops were asked for so far.
    pub fn count(&self) -> u32 {
        self.inner.count.load(Ordering::SeqCst)
    }
}

/// A signal's name for the messages.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT (Ctrl-C)",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        _ => "a signal",
    }
}

/// A target state in JSON: its name and its sentence.
fn state_json<S: serde::Serializer>(state: &TargetState, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("TargetState", 2)?;
    st.serialize_field("state", state.name())?;
    st.serialize_field("description", state.describe())?;
    st.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_signal_delivered_twice_counts_once() {
        let stop = StopHandle::new();
        assert_eq!((stop.requested(), stop.count()), (None, 0));
        stop.request(libc::SIGINT);
        stop.request(libc::SIGINT); // the copy a process group delivery adds
        assert_eq!((stop.requested(), stop.count()), (Some(libc::SIGINT), 1));
        stop.request(libc::SIGTERM); // another signal is another request
        assert_eq!(stop.count(), 2);
        std::thread::sleep(SAME_SIGNAL_WINDOW + std::time::Duration::from_millis(20));
        stop.request(libc::SIGTERM); // the same signal later: the user again
        assert_eq!((stop.requested(), stop.count()), (Some(libc::SIGINT), 3));
    }
}
