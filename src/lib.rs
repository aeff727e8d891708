//! woesafe: write Windows installation ISOs to USB sticks, loop devices and image files, from a worker that
//! lives in its own PID and mount namespaces so that nothing it mounts or attaches outlives it.

pub mod boot;
pub mod cli;
pub mod copy;
pub mod exit;
#[doc(hidden)]
pub mod fuzzing;
pub mod job;
pub mod media;
pub mod protocol;
pub mod recover;
pub mod stick;
pub mod supervisor;
pub mod sys;
pub mod tree;
pub mod verify;
pub mod worker;

/// Skipped tests: printed, and recorded in target/test-skipped.txt so that scripts/test can show them after
/// cargo's captured output (a skip must be visible).
#[doc(hidden)]
pub fn report_skip(test: &str, reason: &str) {
    use std::io::Write;
    let line = format!("SKIPPED: {test}: {reason}");
    eprintln!("{line}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-skipped.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}
