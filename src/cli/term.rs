//! Text for the terminal: what came from an ISO, a disk or another process (volume ids, file names, WIM
//! names, mount points, device models) is shown with its control characters escaped, so that it can neither
//! move the cursor, clear the screen, retitle the window nor reorder what the line seems to say.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is: C0 controls, DEL, C1 controls (U+0080..U+009F, of which
/// U+009B is a CSI on its own), and the invisible characters that reorder or hide text (bidi embeddings,
/// overrides and isolates, the marks, zero-width characters, the BOM, the line and paragraph separators).
fn is_unsafe(c: char, keep_newlines: bool) -> bool {
    match c {
        '\n' => !keep_newlines,
        '\0'..='\x1f' | '\x7f'..='\u{9f}' => true,
        '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}' => true,
        _ => false,
    }
}

fn escape_with(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe(c, keep_newlines)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !is_unsafe(c, keep_newlines) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// One piece of untrusted text (a name, a path, a volume id), every control character escaped, newlines
/// too: ESC becomes `\x1b`, U+202E `\u{202e}`.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_with(text, false)
}

/// A whole message on its way to the terminal: like `escape`, but its own line breaks stay line breaks.
/// Applied where woesafe prints (`say!`, the progress lines, the prompt), whatever the text holds.
pub fn escape_lines(text: &str) -> Cow<'_, str> {
    escape_with(text, true)
}

/// A path for the terminal: its UTF-8 parts escaped as `escape` does, each byte that is not UTF-8 as `\xNN`.
pub fn path(p: &std::path::Path) -> String {
    bytes_as_text(p, true)
}

/// A path in JSON: the string itself when it is UTF-8 (JSON escapes its control characters); otherwise its
/// UTF-8 parts as they are and each other byte as `\xNN`.
pub fn path_json(p: &std::path::Path) -> String {
    match p.to_str() {
        Some(s) => s.to_string(),
        None => bytes_as_text(p, false),
    }
}

/// A path's UTF-8 parts (escaped as `escape` does, or as they are), each byte that is not UTF-8 as `\xNN`.
fn bytes_as_text(p: &std::path::Path, escaped: bool) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for chunk in p.as_os_str().as_bytes().utf8_chunks() {
        out.push_str(&if escaped { escape(chunk.valid()) } else { Cow::Borrowed(chunk.valid()) });
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// serde `serialize_with` for a path field (see `path_json`).
pub fn serialize_path<S: serde::Serializer>(p: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path_json(p))
}

/// serde `serialize_with` for a list of paths (see `path_json`).
pub fn serialize_paths<S: serde::Serializer>(ps: &[std::path::PathBuf], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ps.iter().map(|p| path_json(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped() {
        assert_eq!(escape("CCCOMA_X64FRE_EN-US_DV9"), "CCCOMA_X64FRE_EN-US_DV9");
        assert!(matches!(escape("plain/path.wim"), Cow::Borrowed(_)));
        assert_eq!(escape("A\x1b[2JB"), "A\\x1b[2JB");
        assert_eq!(escape("\x1b]0;title\x07"), "\\x1b]0;title\\x07");
        assert_eq!(escape("a\nb\rc\td\0e\x7f"), "a\\x0ab\\x0dc\\x09d\\x00e\\x7f");
        assert_eq!(escape("\u{9b}2J"), "\\u{9b}2J", "C1 CSI");
        assert_eq!(escape("\u{85}"), "\\u{85}");
        assert_eq!(escape("invoice\u{202e}fdp.exe"), "invoice\\u{202e}fdp.exe");
        assert_eq!(
            escape("\u{2066}x\u{2069}\u{200f}\u{feff}\u{2028}"),
            "\\u{2066}x\\u{2069}\\u{200f}\\u{feff}\\u{2028}"
        );
        assert_eq!(escape("Windows 11 – Pro ünd 日本語 \u{a0}"), "Windows 11 – Pro ünd 日本語 \u{a0}");
        assert_eq!(escape("Windows\\Boot"), "Windows\\Boot", "backslashes are shown as they are");
    }

    #[test]
    fn paths_show_their_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/media/a\xff\xfe b\x1b[2J\n\xc3\xa9"));
        assert_eq!(path(p), "/media/a\\xff\\xfe b\\x1b[2J\\x0a\u{e9}");
        assert_eq!(path_json(p), "/media/a\\xff\\xfe b\x1b[2J\n\u{e9}");
        assert_eq!(path_json(std::path::Path::new("/tmp/x\x1b")), "/tmp/x\x1b");
        let json = serde_json::to_string(&serde_json::json!(path_json(p))).unwrap();
        assert_eq!(json, "\"/media/a\\\\xff\\\\xfe b\\u001b[2J\\n\u{e9}\"");
    }

    #[test]
    fn messages_keep_their_lines() {
        assert_eq!(escape_lines("failed: x\nTarget state: y"), "failed: x\nTarget state: y");
        assert_eq!(escape_lines("ISO: \x1b[2J\x1b[H\nDone"), "ISO: \\x1b[2J\\x1b[H\nDone");
        assert_eq!(escape_lines("a\r\nb"), "a\\x0d\nb", "a carriage return could overwrite the line");
    }
}
