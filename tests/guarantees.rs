//! Guarantees of DESIGN.md that are properties of the code rather than of one run: checked over the source so
//! that a change breaking them fails here. (The run-time guarantees are proven by write_image, kill_matrix,
//! stall and locking.)

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push((p.display().to_string(), std::fs::read_to_string(&p).unwrap()));
        }
    }
}

fn code_lines() -> Vec<(String, usize, String)> {
    let mut files = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    let mut out = Vec::new();
    for (path, text) in files {
        // only non-test code: stop at the unit tests of each file
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            let t = line.trim_start();
            if !t.starts_with("//") {
                out.push((path.clone(), i + 1, line.to_string()));
            }
        }
    }
    out
}

/// Guarantee 6: nothing is ever deleted recursively where a filesystem may still be mounted.
#[test]
fn no_recursive_delete_anywhere() {
    let hits: Vec<_> =
        code_lines().into_iter().filter(|(_, _, l)| l.contains("remove_dir_all") || l.contains("rm -rf")).collect();
    assert!(hits.is_empty(), "recursive deletes in woesafe's code: {hits:?}");
}

/// Loop devices detach by themselves: every attach goes through LOOP_CONFIGURE with autoclear, never
/// LOOP_SET_FD (0x4C00), and no loop device is ever attached by running losetup.
#[test]
fn loop_devices_are_always_autoclear() {
    let lines = code_lines();
    // LOOP_CONFIGURE is the ioctl function nix's macro declares from its request number (0x4C0A).
    let defined: Vec<_> =
        lines.iter().filter(|(_, _, l)| l.contains("ioctl_write_ptr_bad!(loop_configure, 0x4C0A,")).collect();
    assert_eq!(defined.len(), 1, "LOOP_CONFIGURE declared once: {defined:?}");
    let configure: Vec<_> = lines.iter().filter(|(_, _, l)| l.contains("loop_configure(")).collect();
    assert_eq!(configure.len(), 1, "exactly one LOOP_CONFIGURE call site: {configure:?}");
    let flags: Vec<_> = lines.iter().filter(|(_, _, l)| l.contains("let mut flags = LO_FLAGS_AUTOCLEAR")).collect();
    assert_eq!(flags.len(), 1, "the attach flags start from LO_FLAGS_AUTOCLEAR");
    let bad: Vec<_> = lines.iter().filter(|(_, _, l)| l.contains("0x4C00") || l.contains("\"losetup\"")).collect();
    assert!(bad.is_empty(), "non-autoclear loop attach: {bad:?}");
}

/// Guarantee 1: every mount is made by the worker (in its private namespace), through the mount guard.
#[test]
fn mounts_only_through_the_guard() {
    let calls: Vec<_> = code_lines()
        .into_iter()
        .filter(|(_, _, l)| l.contains("nix::mount::mount(") || l.contains("Command::new(\"mount\")"))
        .map(|(p, n, _)| format!("{p}:{n}"))
        .collect();
    // sys/mount.rs (the guard and the namespace's MS_PRIVATE), worker/spawn.rs (MS_PRIVATE in the worker's
    // fresh namespace), and recover's children, which look in a private namespace of their own:
    // recover/mod.rs (MS_PRIVATE) and recover/fuse.rs (fusectl, in that child).
    let allowed = ["src/sys/mount.rs", "src/worker/spawn.rs", "src/recover/mod.rs", "src/recover/fuse.rs"];
    assert!(calls.iter().all(|c| allowed.iter().any(|a| c.contains(a))), "{calls:?}");
    // recover's children are started only through run_private_child, which unshares first; fuse.rs mounts
    // fusectl only inside such a child.
    let base = Path::new(env!("CARGO_MANIFEST_DIR"));
    let m = std::fs::read_to_string(base.join("src/recover/mod.rs")).unwrap();
    assert!(m.contains("unshare(nix::sched::CloneFlags::CLONE_NEWNS)"), "run_private_child must unshare first");
    let f = std::fs::read_to_string(base.join("src/recover/fuse.rs")).unwrap();
    assert!(f.contains("run_private_child(CTL_ARG"), "fusectl is mounted only in the private child");
}

/// recover never runs a program after entering another mount namespace (that namespace's files could be
/// anyone's): it enters with its own binary, started from the host's files, and unmounts by system call.
#[test]
fn no_program_runs_inside_a_foreign_mount_namespace() {
    let hits: Vec<_> = code_lines().into_iter().filter(|(_, _, l)| l.contains("\"nsenter\"")).collect();
    assert!(hits.is_empty(), "nsenter runs the target namespace's programs: {hits:?}");
}
