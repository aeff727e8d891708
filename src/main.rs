//! The `woesafe` binary: parse arguments, call the library, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use woesafe::cli::{self, Cli, Command, exit};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            woesafe::say!("woesafe: {e:#}");
            ExitCode::from(exit::FAILED)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    if std::env::args_os().nth(1).is_some_and(|a| a == woesafe::worker::WORKER_ARG) {
        return Ok(ExitCode::from(woesafe::worker::init::main() as u8));
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == woesafe::recover::shadow::SCAN_ARG) {
        // Mount points need not be UTF-8 (std::env::args would panic on them).
        let dirs: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
        return Ok(ExitCode::from(woesafe::recover::shadow::child_main(&dirs) as u8));
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == woesafe::recover::apply::NS_UNMOUNT_ARG) {
        // Before anything else: setns(CLONE_NEWNS) needs a single-threaded process.
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
        return Ok(ExitCode::from(woesafe::recover::apply::ns_unmount_main(&args) as u8));
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == woesafe::recover::fuse::CTL_ARG) {
        let args: Vec<String> = std::env::args().skip(2).collect();
        return Ok(ExitCode::from(woesafe::recover::fuse::child_main(&args) as u8));
    }
    let cli = Cli::parse();
    let level = if cli.quiet { "error" } else { ["warn", "info", "debug"][usize::from(cli.verbose.min(2))] };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WOESAFE_LOG").unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .without_time()
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    let result = match &cli.command {
        Command::Write(args) => cli::write::run(args, cli.verbose, cli.quiet),
        Command::Recover(args) => cli::recover::run(args, cli.quiet),
        Command::Inspect(args) => cli::inspect::run(args),
        Command::List(args) => cli::list::run(args, cli.quiet),
        Command::Verify(args) => cli::verify::run(args, cli.quiet),
    };
    Ok(match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if !e.message.is_empty() {
                woesafe::say!("woesafe: {}", e.message);
            }
            ExitCode::from(if e.code == exit::OK { exit::FAILED } else { e.code })
        }
    })
}
