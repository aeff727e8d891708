//! woesafe as a library: `supervisor::Write` driven from Rust with an observer of its own, the way a GUI would
//! use it — two writes one after the other from the same thread, a stop asked through the `StopHandle`, and a
//! declined confirmation.

mod common;

use common::*;
use woesafe::protocol::TargetState;
use woesafe::supervisor::{Confirmation, Event, Observer, Outcome, StopHandle, Write, WriteOptions};

/// Records every event; answers the confirmation with `answer`; asks `stop` for a stop when the copy starts.
struct Recorder {
    events: Vec<Event>,
    answer: bool,
    asked: Vec<String>,
    stop_at_copy: Option<StopHandle>,
}

impl Observer for Recorder {
    fn event(&mut self, event: &Event) {
        if let (Event::Step { step: "copy", .. }, Some(stop)) = (event, &self.stop_at_copy) {
            stop.request(libc::SIGTERM);
        }
        self.events.push(event.clone());
    }

    fn confirm(&mut self, question: &Confirmation) -> Result<bool, String> {
        self.asked.push(question.target.clone());
        Ok(self.answer)
    }
}

fn recorder(answer: bool, stop_at_copy: Option<StopHandle>) -> Recorder {
    Recorder { events: Vec::new(), answer, asked: Vec::new(), stop_at_copy }
}

#[test]
fn the_supervisor_is_a_library_type() {
    if !need_root("the_supervisor_is_a_library_type") {
        return;
    }
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let options = WriteOptions { size: Some(600 << 20), ..WriteOptions::default() };

    // A whole write: the events in order, the confirmation asked once, the stick checks out.
    let img = dir.path().join("a.img");
    let mut obs = recorder(true, None);
    let outcome = Write::new(&fx.iso, &img, options.clone()).worker_program(bin()).run(&mut obs, &StopHandle::new());
    let report = match outcome {
        Ok(Outcome::Written(r)) => r,
        other => panic!("not written: {other:?}\n{:?}", obs.events),
    };
    assert_eq!(obs.asked.len(), 1, "{:?}", obs.asked);
    assert!(obs.asked[0].contains("a.img"), "{:?}", obs.asked);
    let steps: Vec<&str> = obs
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Step { step, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        ["read-iso", "wipe", "partition", "format", "mount", "copy", "boot-bios", "boot-uefi", "flush", "unmount"]
    );
    assert!(matches!(obs.events.last(), Some(Event::Done { .. })), "{:?}", obs.events.last());
    assert!(obs.events.iter().any(|e| matches!(e, Event::Layout { filesystem: "FAT32", .. })));
    assert!(report.files > 0);
    verify_written(&img, &fx, &dir.path().join("a"));

    // The same thread starts a second worker: stopped through the handle when the copy starts (orderly: exit
    // 128+SIGTERM, the target's state reported).
    let img = dir.path().join("b.img");
    let stop = StopHandle::new();
    let mut obs = recorder(true, Some(stop.clone()));
    let outcome = Write::new(&fx.iso, &img, options.clone()).worker_program(bin()).run(&mut obs, &stop);
    let e = outcome.expect_err("a stopped write is not a success");
    assert_eq!(e.code, 128 + libc::SIGTERM as u8, "{e:?}");
    match obs.events.last() {
        Some(Event::Stopped { signal, target_state, .. }) => {
            assert_eq!(*signal, libc::SIGTERM);
            assert_ne!(*target_state, TargetState::Complete);
        }
        other => panic!("last event {other:?}"),
    }
    assert!(obs.events.iter().any(|e| matches!(e, Event::Stopping { at_once: false, .. })));

    // Declined: refused with exit 3, the new image file not left behind.
    let img = dir.path().join("c.img");
    let mut obs = recorder(false, None);
    let e = Write::new(&fx.iso, &img, options).worker_program(bin()).run(&mut obs, &StopHandle::new()).unwrap_err();
    assert_eq!(e.code, 3, "{e:?}");
    assert!(e.message.contains("not confirmed"), "{e:?}");
    assert!(!img.exists());
    match obs.events.last() {
        Some(Event::Failed { target_state: TargetState::Untouched, exit_code: 3, .. }) => {}
        other => panic!("last event {other:?}"),
    }
}
