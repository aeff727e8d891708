//! FAT volume labels: derived from the ISO's volume id, or checked when the user gives one.

/// Characters FAT accepts in a volume label besides A-Z and 0-9.
const FAT_LABEL_EXTRA: &str = " !#$%&'()-@^_`{}~";
pub const MAX_LABEL: usize = 11;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LabelError {
    #[error("label {0:?} is empty")]
    Empty(String),
    #[error("label {label:?} is {len} characters long; a FAT32 label holds at most 11")]
    TooLong { label: String, len: usize },
    #[error(
        "label {label:?} contains {ch:?}, which FAT labels cannot hold (use A-Z, 0-9, space and !#$%&'()-@^_`{{}}~)"
    )]
    BadChar { label: String, ch: char },
}

fn allowed(c: char) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || FAT_LABEL_EXTRA.contains(c)
}

/// Check a label given with `--label`. Lower-case letters are upper-cased (as Windows does); anything else FAT
/// cannot store is an error naming the character.
pub fn validate(label: &str) -> Result<String, LabelError> {
    let upper = label.to_ascii_uppercase();
    if upper.trim().is_empty() {
        return Err(LabelError::Empty(label.to_string()));
    }
    if let Some(ch) = upper.chars().find(|&c| !allowed(c)) {
        return Err(LabelError::BadChar { label: label.to_string(), ch });
    }
    let len = upper.chars().count();
    if len > MAX_LABEL {
        return Err(LabelError::TooLong { label: label.to_string(), len });
    }
    Ok(upper.trim_end().to_string())
}

/// Derive a label from an ISO volume id ("CCCOMA_X64FRE_EN-US_DV9" → "CCCOMA_X64F"): upper-case, characters
/// FAT cannot hold become '_', at most 11, no trailing blanks; "WINDOWS" when nothing usable is left.
pub fn derive(volume_id: &str) -> String {
    let mapped: String = volume_id
        .trim()
        .chars()
        .map(|c| c.to_ascii_uppercase())
        .map(|c| if allowed(c) { c } else { '_' })
        .take(MAX_LABEL)
        .collect();
    let trimmed = mapped.trim_end_matches([' ', '_']).trim_start();
    if trimmed.is_empty() { "WINDOWS".to_string() } else { trimmed.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_labels() {
        assert_eq!(derive("CCCOMA_X64FRE_EN-US_DV9"), "CCCOMA_X64F");
        assert_eq!(derive("Win10_22H2"), "WIN10_22H2");
        assert_eq!(derive("a.b/c"), "A_B_C");
        assert_eq!(derive("   "), "WINDOWS");
        assert_eq!(derive("___"), "WINDOWS");
        assert_eq!(derive("ÄÖ"), "WINDOWS");
        assert_eq!(derive("ESD-ISO"), "ESD-ISO");
    }

    #[test]
    fn validated_labels() {
        assert_eq!(validate("win11"), Ok("WIN11".into()));
        assert_eq!(validate("MY STICK"), Ok("MY STICK".into()));
        assert_eq!(validate("TWELVE_CHARS"), Err(LabelError::TooLong { label: "TWELVE_CHARS".into(), len: 12 }));
        assert_eq!(validate("A.B"), Err(LabelError::BadChar { label: "A.B".into(), ch: '.' }));
        assert_eq!(validate("ü"), Err(LabelError::BadChar { label: "ü".into(), ch: 'ü' }));
        assert_eq!(validate(" "), Err(LabelError::Empty(" ".into())));
    }
}
