//! Helper programs (mkfs.fat, grub-mkimage) run as children of the worker, inside its PID namespace, each in
//! its own process group and with a parent-death signal.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("cannot start {program}: {source} (is it installed? it comes with the Debian package {package})")]
    Spawn {
        program: String,
        package: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed { program: String, status: String, stderr: String },
    #[error("{program} was stopped (stop requested)")]
    Stopped { program: String },
    #[error("cannot wait for {program}: {source}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// Make a command die with its parent and keep it out of the terminal's process group.
pub fn harden(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only calls prctl and getppid, which are
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the death signal was armed.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    }
}

/// Run a helper to completion, capturing its output; an unsuccessful exit is an error carrying stderr. The
/// arguments are passed exactly (a path need not be UTF-8).
pub fn run<A: AsRef<OsStr>>(program: &str, args: &[A], package: &'static str) -> Result<String, HelperError> {
    run_watching(program, args, package, &mut |_| {})
}

/// As `run`, calling `tick` about every 10 ms while the helper runs with what it printed on stdout so far (for
/// progress).
pub fn run_watching<A: AsRef<OsStr>>(
    program: &str,
    args: &[A],
    package: &'static str,
    tick: &mut dyn FnMut(&[u8]),
) -> Result<String, HelperError> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).env("LC_ALL", "C");
    harden(&mut cmd);
    let mut child =
        cmd.spawn().map_err(|source| HelperError::Spawn { program: program.to_string(), package, source })?;
    // Drain stdout and stderr while waiting, checking for a stop request: on one, the helper's whole process
    // group is killed and waited for.
    let mut stdout = child.stdout.take();
    let mut stderr_pipe = child.stderr.take();
    let mut out_buf = Vec::new();
    let mut err_buf = Vec::new();
    let status = loop {
        drain(&mut stdout, &mut out_buf);
        drain(&mut stderr_pipe, &mut err_buf);
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => return Err(HelperError::Wait { program: program.to_string(), source }),
        }
        tick(&out_buf);
        if super::stop::stop_requested() {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            return Err(HelperError::Stopped { program: program.to_string() });
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    drain(&mut stdout, &mut out_buf);
    drain(&mut stderr_pipe, &mut err_buf);
    let out = std::process::Output { status, stdout: out_buf, stderr: err_buf };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(HelperError::Failed {
            program: program.to_string(),
            status: out.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Read whatever a helper's pipe holds now, without blocking.
fn drain<R: std::io::Read + std::os::fd::AsFd>(pipe: &mut Option<R>, buf: &mut Vec<u8>) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let Some(p) = pipe else { return };
    if let Ok(flags) = fcntl(&*p, FcntlArg::F_GETFL) {
        let _ = fcntl(&*p, FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK));
    }
    let mut chunk = [0u8; 4096];
    loop {
        match p.read(&mut chunk) {
            Ok(0) => {
                *pipe = None;
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// A path that is not UTF-8 reaches the helper byte for byte.
    #[test]
    fn arguments_pass_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join(OsStr::from_bytes(b"w\xff\xfe.wim"));
        std::fs::write(&odd, b"x").unwrap();
        run("test", &[OsStr::new("-f"), odd.as_os_str()], "coreutils").expect("test -f finds the file");
        let lossy = std::path::PathBuf::from(odd.to_string_lossy().into_owned());
        assert!(matches!(
            run("test", &[OsStr::new("-f"), lossy.as_os_str()], "coreutils"),
            Err(HelperError::Failed { .. })
        ));
    }
}
