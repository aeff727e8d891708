//! Helper programs (mkfs.fat, grub-mkimage) run as children of the worker, inside its PID namespace, each in
//! its own process group and with a parent-death signal.

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
}

/// Make a command die with its parent and keep it out of the terminal's process group.
pub fn harden(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // SAFETY: the closure runs between fork and exec and only calls prctl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Run a helper to completion, capturing its output; an unsuccessful exit is an error carrying stderr.
pub fn run(program: &str, args: &[String], package: &'static str) -> Result<String, HelperError> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).env("LC_ALL", "C");
    harden(&mut cmd);
    let out = cmd.output().map_err(|source| HelperError::Spawn { program: program.to_string(), package, source })?;
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
