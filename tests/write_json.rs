//! `write --json`, `--dry-run` and several targets at once, on real image targets: every stdout line parses as
//! one event of schema 1, and the sequence is complete for a success, a refusal, a stop, a failure and a dry
//! run; several targets are confirmed once, written by one worker each, and one failing stops only itself.

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Parse every stdout line; each must be a JSON object of schema 1 with an "event".
fn events(stdout: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{text}"));
            assert_eq!(v["schema"], 1, "{l}");
            assert!(v["event"].is_string(), "no event in {l}");
            v
        })
        .collect()
}

fn kinds(ev: &[Value]) -> Vec<String> {
    ev.iter().map(|e| e["event"].as_str().unwrap().to_string()).collect()
}

fn digest(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

/// The events every run starts and ends with.
fn assert_frame(ev: &[Value], code: i64) {
    let k = kinds(ev);
    assert_eq!(k.first().map(String::as_str), Some("start"), "{k:?}");
    assert_eq!(k.last().map(String::as_str), Some("summary"), "{k:?}");
    assert_eq!(ev.last().unwrap()["exit_code"], code, "{ev:?}");
}

#[test]
fn a_success_is_a_complete_sequence() {
    if !need_root("a_success_is_a_complete_sequence") {
        return;
    }
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("stick.img");
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), img.to_str().unwrap(), "--size", "600M", "--yes", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Human text goes to stderr only when asked for (-v).
    assert!(out.stderr.is_empty(), "stderr without -v: {}", text(&out));
    let ev = events(&out.stdout);
    assert_frame(&ev, 0);
    let k = kinds(&ev);
    for want in ["target", "iso", "layout", "step", "progress", "done"] {
        assert!(k.iter().any(|e| e == want), "no {want} event: {k:?}");
    }
    let start = &ev[0];
    assert_eq!(start["iso"], fx.iso.to_str().unwrap());
    assert_eq!(start["targets"][0], img.to_str().unwrap());
    assert_eq!(start["options"]["fs"], "auto");
    let layout = ev.iter().find(|e| e["event"] == "layout").unwrap();
    assert_eq!(layout["filesystem"], "FAT32", "{layout}");
    assert_eq!(layout["table"], "mbr");
    assert_eq!(layout["boot"], "both");
    assert!(layout["reason"].as_str().is_some_and(|r| !r.is_empty()), "{layout}");
    // Steps in order, numbered, ending with the unmount.
    let steps: Vec<&str> = ev.iter().filter(|e| e["event"] == "step").map(|e| e["step"].as_str().unwrap()).collect();
    assert_eq!(steps.first(), Some(&"read-iso"), "{steps:?}");
    assert_eq!(steps.last(), Some(&"unmount"), "{steps:?}");
    assert!(steps.contains(&"copy"), "{steps:?}");
    let copy = ev.iter().rfind(|e| e["event"] == "progress" && e["step"] == "copy").unwrap();
    assert_eq!(copy["done"], copy["total"], "the copy's progress ends at its total: {copy}");
    let done = ev.iter().find(|e| e["event"] == "done").unwrap();
    assert_eq!(done["report"]["label"].as_str().map(|s| !s.is_empty()), Some(true), "{done}");
    assert!(done["report"]["files"].as_u64().unwrap() > 0, "{done}");
    assert!(done["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(ev.last().unwrap()["results"][0]["exit_code"], 0);
    verify_written(&img, &fx, dir.path());

    // With -v the human text comes on stderr as well, and stdout stays pure JSON. With --verify the stick is
    // read back after the write: a verify step, and the report says what it found.
    let img2 = dir.path().join("stick2.img");
    let out = woesafe(&[
        "write",
        fx.iso.to_str().unwrap(),
        img2.to_str().unwrap(),
        "--size",
        "600M",
        "--yes",
        "--json",
        "-v",
        "--verify",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Done: ") && err.contains("Verified: read back from the device"), "{}", text(&out));
    let ev = events(&out.stdout);
    assert_frame(&ev, 0);
    let steps: Vec<&str> = ev.iter().filter(|e| e["event"] == "step").map(|e| e["step"].as_str().unwrap()).collect();
    assert_eq!(steps.last(), Some(&"verify"), "{steps:?}");
    let done = ev.iter().find(|e| e["event"] == "done").unwrap();
    let verified = &done["report"]["verified"];
    assert_eq!(verified["mismatches"], serde_json::json!([]), "{done}");
    assert!(verified["files"].as_u64().unwrap() > 3000, "{done}");
}

#[test]
fn a_refusal_is_a_complete_sequence() {
    if !need_root("a_refusal_is_a_complete_sequence") {
        return;
    }
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    // Too small for the ISO's files: refused after the inventory, before anything is written.
    let img = dir.path().join("small.img");
    std::fs::write(&img, vec![0x5a; 20 << 20]).unwrap();
    let before = digest(&img);
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), img.to_str().unwrap(), "--yes", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let ev = events(&out.stdout);
    assert_frame(&ev, 3);
    let failed = ev.iter().find(|e| e["event"] == "failed").unwrap_or_else(|| panic!("no failed event: {ev:?}"));
    assert_eq!(failed["exit_code"], 3);
    assert_eq!(failed["target_state"]["state"], "untouched", "{failed}");
    assert!(failed["message"].as_str().unwrap().contains("too small"), "{failed}");
    assert!(!kinds(&ev).iter().any(|k| k == "done"), "{ev:?}");
    assert_eq!(digest(&img), before);

    // A usage error (no --size for a new image) is a failed event too, exit 2.
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), dir.path().join("new.img").to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let ev = events(&out.stdout);
    assert_frame(&ev, 2);
    assert_eq!(kinds(&ev), ["start", "failed", "summary"], "{ev:?}");
    // So are the usage errors found before any write starts: a bad --size, the same target twice.
    let small = img.to_str().unwrap();
    for args in [vec!["--size", "8X"], vec![small]] {
        let mut all = vec!["write", fx.iso.to_str().unwrap(), small, "--yes", "--json"];
        all.extend(args);
        let out = woesafe(&all);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(out.stderr.is_empty(), "{}", text(&out));
        let ev = events(&out.stdout);
        assert_eq!(kinds(&ev), ["start", "failed", "summary"], "{ev:?}");
        assert_eq!(ev[1]["exit_code"], 2);
    }
    assert_eq!(digest(&img), before);
}

/// Follows a --json run's stdout line by line.
struct JsonRun {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl JsonRun {
    fn start(args: &[&str], env: &[(&str, &str)]) -> JsonRun {
        let mut child = Command::new(bin())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        JsonRun { child, lines, log: Vec::new() }
    }

    fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line =
                self.lines.recv_timeout(left).unwrap_or_else(|_| panic!("event not seen:\n{}", self.log.join("\n")));
            let v: Value = serde_json::from_str(&line).unwrap();
            self.log.push(line);
            if pred(&v) {
                return;
            }
        }
    }

    fn finish(mut self) -> (Option<i32>, Vec<Value>) {
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push(line);
        }
        (status.code(), events(self.log.join("\n").as_bytes()))
    }
}

#[test]
fn a_stop_and_a_failure_are_complete_sequences() {
    if !need_root("a_stop_and_a_failure_are_complete_sequences") {
        return;
    }
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("stick.img");
    let args = ["write", fx.iso.to_str().unwrap(), img.to_str().unwrap(), "--size", "600M", "--yes", "--json"];

    // SIGINT while copying: stopping, then stopped with 130 and the target's state.
    let mut run = JsonRun::start(&args, &[("WOESAFE_TEST_PAUSE_AT", "copy:5000")]);
    run.wait_for(|v| v["event"] == "step" && v["step"] == "copy");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.child.id() as i32), nix::sys::signal::Signal::SIGINT)
        .unwrap();
    let (code, ev) = run.finish();
    assert_eq!(code, Some(130), "{ev:?}");
    assert_frame(&ev, 130);
    let k = kinds(&ev);
    assert!(k.iter().any(|e| e == "stopping"), "{k:?}");
    let stopped = ev.iter().find(|e| e["event"] == "stopped").unwrap_or_else(|| panic!("{k:?}"));
    assert_eq!(stopped["signal"], 2);
    assert_eq!(stopped["exit_code"], 130);
    assert!(stopped["target_state"]["state"].is_string(), "{stopped}");
    assert!(!k.iter().any(|e| e == "done" || e == "failed"), "{k:?}");

    // The worker killed while copying: a failure, exit 1, with the target's state.
    let _ = std::fs::remove_file(&img);
    let mut run = JsonRun::start(&args, &[("WOESAFE_TEST_PAUSE_AT", "copy:5000")]);
    run.wait_for(|v| v["event"] == "step" && v["step"] == "copy");
    let worker = worker_of(run.child.id()).expect("the worker runs");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker), nix::sys::signal::Signal::SIGKILL).unwrap();
    let (code, ev) = run.finish();
    assert_eq!(code, Some(1), "{ev:?}");
    assert_frame(&ev, 1);
    let failed = ev.iter().find(|e| e["event"] == "failed").unwrap_or_else(|| panic!("{ev:?}"));
    assert_eq!(failed["exit_code"], 1);
    assert!(failed["message"].as_str().unwrap().contains("the worker ended unexpectedly"), "{failed}");
    assert_eq!(failed["target_state"]["state"], "files-incomplete", "{failed}");

    // The worker stopped by a signal sent to it, not to woesafe: it stops cleanly, and woesafe says so (exit 1,
    // the state the worker reported), not "ended unexpectedly".
    let _ = std::fs::remove_file(&img);
    let mut run = JsonRun::start(&args, &[("WOESAFE_TEST_PAUSE_AT", "copy:5000")]);
    run.wait_for(|v| v["event"] == "step" && v["step"] == "copy");
    let worker = worker_of(run.child.id()).expect("the worker runs");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker), nix::sys::signal::Signal::SIGTERM).unwrap();
    let (code, ev) = run.finish();
    assert_eq!(code, Some(1), "{ev:?}");
    let failed = ev.iter().find(|e| e["event"] == "failed").unwrap_or_else(|| panic!("{ev:?}"));
    assert!(failed["message"].as_str().unwrap().contains("stopped from outside woesafe"), "{failed}");
    assert!(failed["target_state"]["state"].is_string(), "{failed}");

    // SIGINT during the read-back of --verify: the write is complete (exit 0, its report), not verified.
    let _ = std::fs::remove_file(&img);
    let mut with_verify = args.to_vec();
    with_verify.push("--verify");
    let mut run = JsonRun::start(&with_verify, &[("WOESAFE_TEST_PAUSE_AT", "verify:5000")]);
    run.wait_for(|v| v["event"] == "step" && v["step"] == "verify");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.child.id() as i32), nix::sys::signal::Signal::SIGINT)
        .unwrap();
    let (code, ev) = run.finish();
    assert_eq!(code, Some(0), "{ev:?}");
    let done = ev.iter().find(|e| e["event"] == "done").unwrap_or_else(|| panic!("{ev:?}"));
    assert!(done["report"]["verified"].is_null(), "{done}");
    let summary = ev.last().unwrap();
    assert!(
        summary["results"][0]["summary"].as_str().unwrap().contains("read-back (--verify) was stopped"),
        "{summary}"
    );
    verify_written(&img, &fx, &dir.path().join("after-verify-stop"));
}

#[test]
fn a_dry_run_plans_and_writes_nothing() {
    if !need_root("a_dry_run_plans_and_writes_nothing") {
        return;
    }
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    // A new image file: planned, never created.
    let img = dir.path().join("new.img");
    let out =
        woesafe(&["write", fx.iso.to_str().unwrap(), img.to_str().unwrap(), "--size", "600M", "--dry-run", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!img.exists(), "a dry run created the image file");
    let ev = events(&out.stdout);
    assert_frame(&ev, 0);
    let k = kinds(&ev);
    assert!(k.iter().any(|e| e == "planned"), "{k:?}");
    assert!(!k.iter().any(|e| e == "done"), "{k:?}");
    let steps: Vec<&str> = ev.iter().filter(|e| e["event"] == "step").map(|e| e["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["read-iso"], "a dry run reads the ISO and nothing more");
    let planned = ev.iter().find(|e| e["event"] == "planned").unwrap();
    assert!(planned["inventory"]["files"].as_u64().unwrap() > 0, "{planned}");
    // The full plan: one FAT32 partition at 1 MiB filling the 600 MiB image, its label, the boot code.
    let layout = &planned["inventory"]["layout"];
    assert_eq!(layout["partitions"][0]["offset"], 1 << 20, "{layout}");
    assert_eq!(layout["partitions"][0]["role"], "main", "{layout}");
    let size = layout["partitions"][0]["size"].as_u64().unwrap();
    assert!(size > 590 << 20 && size <= (600 << 20) - (1 << 20), "{layout}");
    assert_eq!(layout["label"], "CCCOMA_X64F", "{layout}");
    assert!(layout["bios"].is_object() && layout["uefi"].is_object(), "{layout}");

    // An existing image: opened read-only, byte for byte the same afterwards; the human plan on stderr.
    let img = dir.path().join("old.img");
    std::fs::write(&img, vec![0x5a; 600 << 20]).unwrap();
    let before = digest(&img);
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), img.to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Plan for") && err.contains("filesystem: FAT32"), "{}", text(&out));
    assert!(err.contains("partition 1: at 1.0 MiB (byte 1048576)"), "{}", text(&out));
    assert!(!err.contains("Copying"), "{}", text(&out));
    assert_eq!(digest(&img), before);

    // A refusal in a dry run is the same refusal, with its exit code.
    let small = dir.path().join("small.img");
    std::fs::write(&small, vec![0u8; 20 << 20]).unwrap();
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), small.to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("too small"), "{}", text(&out));
}

#[test]
fn several_targets_are_written_at_once() {
    if !need_root("several_targets_are_written_at_once") {
        return;
    }
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    // Two targets: both written, each checks out.
    let out = woesafe(&[
        "write",
        fx.iso.to_str().unwrap(),
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--size",
        "600M",
        "--yes",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let ev = events(&out.stdout);
    assert_frame(&ev, 0);
    for t in [&a, &b] {
        let name = t.to_str().unwrap();
        assert!(
            ev.iter().any(|e| e["event"] == "done" && e["target"] == name),
            "no done event for {name}: {:?}",
            kinds(&ev)
        );
        let w = dir.path().join(format!("x-{}", t.file_name().unwrap().to_str().unwrap()));
        verify_written(t, &fx, &w);
    }

    // Three targets, one of them too small: the other two are written, the small one is refused and
    // untouched, and the exit code says that some failed.
    let c = dir.path().join("c.img");
    let small = dir.path().join("small.img");
    std::fs::write(&small, vec![0x5a; 20 << 20]).unwrap();
    let before = digest(&small);
    let _ = std::fs::remove_file(&a);
    let out = woesafe(&[
        "write",
        fx.iso.to_str().unwrap(),
        a.to_str().unwrap(),
        small.to_str().unwrap(),
        c.to_str().unwrap(),
        "--size",
        "600M",
        "--yes",
    ]);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Results:"), "{}", text(&out));
    assert!(err.contains(&format!("{}: written (exit 0)", c.display())), "{}", text(&out));
    assert!(err.contains(&format!("{}: ", small.display())) && err.contains("too small"), "{}", text(&out));
    assert_eq!(digest(&small), before);
    for t in [&a, &c] {
        let w = dir.path().join(format!("y-{}", t.file_name().unwrap().to_str().unwrap()));
        verify_written(t, &fx, &w);
    }

    // The same target twice is a usage error before anything starts.
    let out = woesafe(&["write", fx.iso.to_str().unwrap(), a.to_str().unwrap(), a.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}
