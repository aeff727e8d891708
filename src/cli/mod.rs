//! The command line: one file per subcommand, turning arguments into library calls and results into what the
//! user sees. Exit codes are defined here.

pub mod choices;
pub mod inspect;
pub mod list;
pub mod present;
pub mod recover;
pub mod term;
pub mod verify;
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
pub use crate::exit;

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  the write failed (the message says what state the target is in)
  2  usage error: bad arguments, missing or unreadable files
  3  refused by a safety check (nothing was written), a damaged or hostile ISO (over the reader's limits,
     or not a valid UDF/ISO 9660 image), or the target is busy
  4  stalled: no byte moved for --stall-timeout seconds; the report names the step, process and device
  6  several targets, and they did not all end the same way (the results list says which)
  128+N  stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP, 131 SIGQUIT); the message says what state
     the target is in";

pub const VERIFY_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  the stick is identical to the ISO (as woesafe writes it: files, additions, tables, boot code)
  1  the verification failed (the stick or the ISO could not be read)
  2  usage error: bad arguments, missing or unreadable files
  3  a damaged or hostile ISO (over the reader's limits, or not a valid UDF/ISO 9660 image), or the target is
     busy (mounted, or locked by a writer)
  5  mismatch: the stick differs from the ISO; each difference is listed by path
  128+N  stopped by signal N";

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
    /// Show what a Windows ISO is: version, editions, install image, boot support, the filesystem a write would
    /// choose and why, the space needed, odd names; nothing is mounted or written (root not needed)
    #[command(
        after_help = "Exit codes:\n  0  inspected\n  1  the ISO could not be read to the end\n  2  usage error (a missing or unreadable file, a directory)\n  3  a damaged or hostile ISO (not a valid UDF/ISO 9660 image, or over the reader's limits)"
    )]
    Inspect(inspect::InspectArgs),
    /// List the disks one could write to (removable and USB disks; --all: every disk), each with the reason
    /// woesafe write would refuse it; read from sysfs, needs no root
    #[command(
        after_help = "Exit codes:\n  0  listed\n  1  sysfs or the mount table could not be read\n  2  usage error"
    )]
    List(list::ListArgs),
    /// Read every file back from a written stick (or image) and compare it with the ISO, with the partition
    /// table, boot code and boot sectors; lists every mismatch by path
    #[command(after_help = VERIFY_EXIT_CODES_HELP)]
    Verify(verify::VerifyArgs),
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
