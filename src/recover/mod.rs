//! `woesafe recover`: find what crashed WoeUSB, WoeUSB-ng and woesafe runs left behind. Snapshot (read the
//! system) → plan (pure) → apply.

pub mod apply;
pub mod fuse;
pub mod patterns;
pub mod plan;
pub mod shadow;
pub mod snapshot;

/// Run woesafe itself as `exe ARG ARGS...` in a private mount namespace of its own (for looks that need a
/// mount — fusectl, a peek under leftover mounts — without the host's mount table ever changing); its stdout,
/// or None when it could not run or failed.
pub(crate) fn run_private_child(arg: &str, args: &[String]) -> Option<Vec<u8>> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().ok()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(arg).args(args).stdin(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    // SAFETY: between fork and exec only unshare and mount, plain system calls.
    unsafe {
        cmd.pre_exec(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(std::io::Error::from)?;
            let private = nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE;
            nix::mount::mount(None::<&str>, "/", None::<&str>, private, None::<&str>).map_err(std::io::Error::from)
        });
    }
    crate::worker::helper::harden(&mut cmd);
    cmd.stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().ok()?;
    // It must never hang recover: give it 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    out.status.success().then_some(out.stdout)
}
