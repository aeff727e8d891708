//! One writer per target: the whole disk (or the image file) is held with flock(LOCK_EX) for the whole write,
//! so a second woesafe on the same target fails at once with "busy", exit 3, and changes nothing.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn second_writer_is_refused(target: &std::path::Path, first_args: &[&str], name: &str) {
    let fx = fixture();
    let mut args = vec!["write", fx.iso.to_str().unwrap(), target.to_str().unwrap(), "--yes"];
    args.extend_from_slice(first_args);
    let mut first = Run::start(&args, &[("WOESAFE_TEST_PAUSE_AT", "copy:4000")]);
    // From the copy step on, the first writer holds the target.
    first.wait_line("Copying files", Duration::from_secs(30));
    let t0 = Instant::now();
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), target.to_str().unwrap(), "--yes"]);
    assert!(t0.elapsed() < Duration::from_secs(3), "{name}: the second writer must fail at once");
    assert_eq!(out.status.code(), Some(3), "{name}: {}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("busy"), "{name}: {err}");
    let status = first.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{name}: the first writer must finish: {}", first.text());
}

#[test]
fn two_writers_on_one_image_file() {
    if !need_root("two_writers_on_one_image_file") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("shared.img");
    std::fs::File::create(&image).unwrap().set_len(600 << 20).unwrap();
    second_writer_is_refused(&image, &[], "image file");
}

#[test]
fn two_writers_on_one_loop_device() {
    if !need_root("two_writers_on_one_loop_device") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let backing = work.path().join("stick.img");
    std::fs::File::create(&backing).unwrap().set_len(600 << 20).unwrap();
    let (_f, stick) = test_loop(&backing, 0, 0, false);
    second_writer_is_refused(stick.path(), &[], "loop device");
}
