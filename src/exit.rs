//! woesafe's exit codes: the contract between the library's outcomes and the command line (README.md, --help).

pub const OK: u8 = 0;
/// The write failed; the message says what state the target is in.
pub const FAILED: u8 = 1;
/// Bad arguments, missing or unreadable files.
pub const USAGE: u8 = 2;
/// Refused by a safety check (nothing was written), a damaged or hostile ISO, or the target is busy.
pub const REFUSED: u8 = 3;
/// No byte moved for the stall timeout.
pub const STALLED: u8 = 4;
/// verify: the stick differs from the ISO.
pub const MISMATCH: u8 = 5;
/// Several targets: they did not all end the same way (some written, some failed or refused).
pub const SOME_FAILED: u8 = 6;

/// The exit code for a stop by signal `sig`: 128 + N, as a shell reports it.
pub fn signal(sig: i32) -> u8 {
    128u8.saturating_add(u8::try_from(sig).unwrap_or(0))
}

/// An ending that is not success: its exit code and the message for the user (empty: already said).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

/// An `Exit` with `code` and `message`.
pub fn fail(code: u8, message: impl std::fmt::Display) -> Exit {
    Exit { code, message: message.to_string() }
}
