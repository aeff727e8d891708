//! The command line: one file per subcommand, turning arguments into library calls and results into what the
//! user sees. Exit codes are defined here.

pub mod choices;
pub mod recover;
pub mod term;
pub mod write;

/// Print a line on stderr, never panicking: with stderr a closed pipe (SIGPIPE is ignored, so writes fail with
/// EPIPE), woesafe goes on and finishes its work; it just cannot be heard. Control characters in it (from an
/// ISO's names, a worker's message) are escaped; its own line breaks stay.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "{}", $crate::cli::term::escape_lines(&format!($($arg)*)));
    }};
}

use clap::{Parser, Subcommand};

/// Exit codes (documented in --help and README.md).
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const REFUSED: u8 = 3;
    pub const STALLED: u8 = 4;
}

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  the write failed (the message says what state the target is in)
  2  usage error: bad arguments, missing or unreadable files
  3  refused by a safety check (nothing was written), a damaged or hostile ISO (over the reader's limits,
     or not a valid UDF/ISO 9660 image), or the target is busy
  4  stalled: no byte moved for --stall-timeout seconds; the report names the step, process and device
  128+N  stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP, 131 SIGQUIT); the message says what state
     the target is in";

#[derive(Debug, Parser)]
#[command(
    name = "woesafe",
    version,
    about = "Write Windows installation ISOs to USB sticks, loop devices and image files, leaving nothing behind",
    after_help = EXIT_CODES_HELP,
    mut_subcommands = common_options_first
)]
pub struct Cli {
    /// More output (-v: details, -vv: debug)
    #[arg(short, long, action = clap::ArgAction::Count, global = true, display_order = 0)]
    pub verbose: u8,
    /// Only errors and the final result
    #[arg(short, long, global = true, conflicts_with = "verbose", display_order = 1)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Where a subcommand's own arguments start in its help: after the global options above (-v, -q: display
/// orders 0 and 1, which clap copies into every subcommand).
const SUBCOMMAND_DISPLAY_ORDER: usize = 100;
/// clap's display order for an argument that has none, such as its own -h/--help: kept, so help stays last.
const CLAP_UNORDERED: usize = 999;

/// The common options first in every subcommand's --help, whoever adds a subcommand: its own arguments, numbered
/// from 0 in the order they are declared (or as the subcommand orders them), are moved behind the global ones;
/// otherwise clap sorts equal numbers by name, and -v and -q land in the middle.
fn common_options_first(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| match arg.get_display_order() {
        CLAP_UNORDERED => arg,
        order => arg.display_order(order.saturating_add(SUBCOMMAND_DISPLAY_ORDER)),
    })
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a Windows ISO to a whole disk (/dev/sdX, /dev/nvmeXnY, /dev/mmcblkX, /dev/loopN) or an image file
    #[command(after_help = EXIT_CODES_HELP)]
    Write(write::WriteArgs),
    /// Find what crashed WoeUSB, WoeUSB-ng and woesafe runs left behind (mounts, also in private mount
    /// namespaces, loop devices, directories) and show the plan; --yes cleans it up
    #[command(
        after_help = "Exit codes:\n  0  clean, or cleaned\n  1  something could not be cleaned (the message says what and why)\n  2  usage error\n  3  refused (not root)"
    )]
    Recover(recover::RecoverArgs),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// The options of each subcommand's help, in the order shown.
    fn options_shown(sub: &mut clap::Command) -> Vec<String> {
        let help = sub.render_long_help().to_string();
        let options = &help[help.find("Options:").expect("an Options section")..];
        options.lines().filter_map(|l| l.trim_start().strip_prefix('-').map(|_| l.trim().to_string())).collect()
    }

    #[test]
    fn common_options_come_first_in_every_subcommand() {
        let mut cmd = super::Cli::command();
        cmd.build();
        let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
        assert!(names.iter().any(|n| n == "write"), "{names:?}");
        for name in names.iter().filter(|n| *n != "help") {
            let shown = options_shown(cmd.find_subcommand_mut(name).unwrap());
            assert!(shown.len() >= 3, "{name}: {shown:?}");
            assert!(shown[0].starts_with("-v, --verbose"), "{name}: {shown:?}");
            assert!(shown[1].starts_with("-q, --quiet"), "{name}: {shown:?}");
            assert!(shown.last().unwrap().starts_with("-h, --help"), "{name}: {shown:?}");
        }
    }
}
