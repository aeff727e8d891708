//! Sizes given by users (`--size 8G`) and sizes shown to them.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("size {0:?} is empty: give a number with an optional unit, e.g. 8G, 512M, 2GiB")]
    Empty(String),
    #[error("size {0:?} is not a number with a unit (use e.g. 8G, 512M, 2GiB, 4000000000)")]
    Malformed(String),
    #[error("size {0:?} has an unknown unit {1:?} (use K, M, G, T, or KiB/MiB/GiB/TiB, or KB/MB/GB/TB)")]
    UnknownUnit(String, String),
    #[error("size {0:?} is zero")]
    Zero(String),
    #[error("size {0:?} is too large (at most 8 EiB, the largest file size)")]
    TooLarge(String),
}

/// Parse `8G`, `8GiB` (powers of 1024), `8GB` (powers of 1000) or a plain number of bytes. Fractions are
/// allowed with a unit (`1.5G`). The result is rounded up to a whole number of 512-byte sectors.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(SizeError::Empty(text.to_string()));
    }
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    if num.is_empty() || num.chars().filter(|&c| c == '.').count() > 1 {
        return Err(SizeError::Malformed(text.to_string()));
    }
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        "T" | "TIB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(SizeError::UnknownUnit(text.to_string(), unit.to_string())),
    };
    let too_large = || SizeError::TooLarge(text.to_string());
    // `num` holds only ASCII digits here, so a parse can fail only by overflowing u128: too large.
    let bytes: u128 = if let Some((int, frac)) = num.split_once('.') {
        if mult == 1 {
            return Err(SizeError::Malformed(text.to_string()));
        }
        let int: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| too_large())? };
        // Digits past the 12th cannot matter for a whole number of 512-byte sectors of at most TiB units.
        let frac_digits = frac.len().min(12);
        let frac: u128 = if frac.is_empty() { 0 } else { frac[..frac_digits].parse().map_err(|_| too_large())? };
        let scale = 10u128.pow(frac_digits as u32);
        int.checked_mul(u128::from(mult))
            .and_then(|whole| whole.checked_add((frac * u128::from(mult)).div_ceil(scale)))
            .ok_or_else(too_large)?
    } else {
        let n: u128 = num.parse().map_err(|_| too_large())?;
        n.checked_mul(u128::from(mult)).ok_or_else(too_large)?
    };
    if bytes == 0 {
        return Err(SizeError::Zero(text.to_string()));
    }
    // An image file's length is an off_t: at most i64::MAX, in whole sectors.
    let rounded = bytes.div_ceil(512).checked_mul(512).ok_or_else(too_large)?;
    u64::try_from(rounded).ok().filter(|&b| b <= MAX_BYTES).ok_or_else(too_large)
}

/// The largest size a file can have (off_t is signed), rounded down to whole 512-byte sectors.
pub const MAX_BYTES: u64 = i64::MAX as u64 / 512 * 512;

/// A size as people read it: `7.5 GiB`, `512 MiB`, `300 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("8gb"), Ok(8_000_000_000));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size(" 2 GiB "), Ok(2 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("1000"), Ok(1024));
        assert_eq!(parse_size("4096"), Ok(4096));
    }

    #[test]
    fn bad_sizes_name_the_problem() {
        assert_eq!(parse_size(""), Err(SizeError::Empty(String::new())));
        assert_eq!(parse_size("0G"), Err(SizeError::Zero("0G".into())));
        assert_eq!(parse_size("8X"), Err(SizeError::UnknownUnit("8X".into(), "X".into())));
        assert_eq!(parse_size("G"), Err(SizeError::Malformed("G".into())));
        assert_eq!(parse_size("1.2.3G"), Err(SizeError::Malformed("1.2.3G".into())));
        assert_eq!(parse_size("1.5"), Err(SizeError::Malformed("1.5".into())));
        assert!(matches!(parse_size("99999999999999999999T"), Err(SizeError::TooLarge(_))));
    }

    /// Huge numbers, overflow in the u128 multiply and add, fractions and junk: an error naming the text,
    /// never a panic (debug) or a wrapped size (release).
    #[test]
    fn edge_cases_never_panic_or_wrap() {
        let too_large = |t: &str| assert_eq!(parse_size(t), Err(SizeError::TooLarge(t.into())), "{t}");
        let malformed = |t: &str| assert_eq!(parse_size(t), Err(SizeError::Malformed(t.into())), "{t}");
        too_large(&u64::MAX.to_string());
        too_large(&format!("{}", u64::MAX - 100));
        too_large("99999999999999999999999T");
        too_large(&format!("{}T", u128::MAX / 2)); // parses, the multiply overflows u128
        too_large(&format!("{}", u128::MAX)); // parses, the sector rounding overflows u128
        too_large(&format!("{}0", u128::MAX)); // does not even parse as u128
        too_large(&format!("{}.9TB", u128::MAX / 1_000_000_000_000)); // the multiply fits, the add overflows
        too_large(&format!("{}.5G", u128::MAX)); // the whole part does not parse
        too_large("8388608T"); // 8 EiB: one past off_t
        too_large("9223372036854775807"); // i64::MAX, rounded up to whole sectors
        assert_eq!(parse_size("8388607T"), Ok(8_388_607 << 40));
        assert_eq!(parse_size(&MAX_BYTES.to_string()), Ok(MAX_BYTES));
        malformed("-1G");
        malformed("+1G");
        malformed(".");
        malformed("..5G");
        malformed("1.5");
        malformed("\u{ff18}G"); // a full-width digit
        assert_eq!(parse_size("1e3G"), Err(SizeError::UnknownUnit("1e3G".into(), "e3G".into())));
        assert_eq!(parse_size("0x10G"), Err(SizeError::UnknownUnit("0x10G".into(), "x10G".into())));
        assert_eq!(parse_size("8G8"), Err(SizeError::UnknownUnit("8G8".into(), "G8".into())));
        assert_eq!(parse_size("   "), Err(SizeError::Empty("   ".into())));
        assert_eq!(parse_size("0.0G"), Err(SizeError::Zero("0.0G".into())));
        assert_eq!(parse_size(".G"), Err(SizeError::Zero(".G".into())));
        assert_eq!(parse_size(" 8G"), Ok(8 << 30));
        assert_eq!(parse_size(".5G"), Ok(1 << 29));
        assert_eq!(parse_size("1."), Err(SizeError::Malformed("1.".into())));
        assert_eq!(parse_size("1.G"), Ok(1 << 30));
        // The 13th fractional digit and beyond are ignored; a part of a byte rounds up to a whole sector.
        assert_eq!(parse_size("0.0000000000019T"), Ok(512));
        assert_eq!(parse_size(&format!("1.{}G", "9".repeat(5000))), Ok(2 << 30));
        assert_eq!(parse_size("1B"), Ok(512));
        assert_eq!(parse_size("8000MB"), Ok(8_000_000_000));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(300), "300 B");
        assert_eq!(human(512 << 20), "512.0 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
