//! Man pages and shell completions, generated from woesafe's clap definition (`woesafe::cli::Cli`) as it is when
//! this runs: one man page per command of the tree (woesafe.1, woesafe-write.1, woesafe-recover.1, … whatever
//! subcommands exist then, hidden ones left out) and the bash, zsh and fish completions.
//!
//! `cargo run --release --example gen-docs -- OUTDIR` (scripts/gen-docs) writes
//! OUTDIR/man/*.1 and OUTDIR/completions/{woesafe.bash,_woesafe,woesafe.fish}.
//!
//! An example rather than a hidden argument of woesafe itself: clap_mangen and clap_complete stay
//! dev-dependencies, out of the installed binary, and nothing undocumented is added to the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// The name users type, which the completions register for.
const BIN: &str = "woesafe";

#[derive(Debug, thiserror::Error)]
enum GenError {
    #[error("usage: gen-docs OUTDIR")]
    Usage,
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the man pages into {path}: {source}")]
    Man {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the {shell} completions into {path}: {source}")]
    Completions {
        shell: Shell,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn create_dir(path: PathBuf) -> Result<PathBuf, GenError> {
    std::fs::create_dir_all(&path).map_err(|source| GenError::CreateDir { path: path.clone(), source })?;
    Ok(path)
}

/// Writes the man pages and completions; returns the files written.
fn generate(out: &Path) -> Result<Vec<PathBuf>, GenError> {
    let man = create_dir(out.join("man"))?;
    let completions = create_dir(out.join("completions"))?;
    let mut cmd = woesafe::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let source = format!("{BIN} {}", env!("CARGO_PKG_VERSION"));
    let mut written = Vec::new();
    man_pages(&cmd, &source, &man, &mut written).map_err(|source| GenError::Man { path: man.clone(), source })?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = woesafe::cli::Cli::command();
        let path = clap_complete::generate_to(shell, &mut cmd, BIN, &completions)
            .map_err(|source| GenError::Completions { shell, path: completions.clone(), source })?;
        written.push(path);
    }
    written.sort();
    Ok(written)
}

/// One page for `cmd` and one for each of its subcommands that is not hidden, recursively, each named after its
/// command path (woesafe-write.1; clap sets that display name when the tree is built) and all with the same
/// footer (the package and version: clap_mangen would put the subcommand's name there).
fn man_pages(cmd: &clap::Command, source: &str, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    written.push(clap_mangen::Man::new(cmd.clone()).source(source).generate_to(dir)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, source, dir, written)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let result = match args.as_slice() {
        [out] => generate(Path::new(out)),
        _ => Err(GenError::Usage),
    };
    match result {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen-docs: {e}");
            ExitCode::from(if matches!(e, GenError::Usage) { 2 } else { 1 })
        }
    }
}
