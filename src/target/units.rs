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
    #[error("size {0:?} is too large")]
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
    let bytes = if let Some((int, frac)) = num.split_once('.') {
        if mult == 1 {
            return Err(SizeError::Malformed(text.to_string()));
        }
        let int: u128 =
            if int.is_empty() { 0 } else { int.parse().map_err(|_| SizeError::Malformed(text.to_string()))? };
        let frac_digits = frac.len().min(12) as u32;
        let frac: u128 = if frac.is_empty() {
            0
        } else {
            frac[..frac_digits as usize].parse().map_err(|_| SizeError::Malformed(text.to_string()))?
        };
        let scale = 10u128.pow(frac_digits);
        int * mult as u128 + (frac * mult as u128).div_ceil(scale)
    } else {
        let n: u128 = num.parse().map_err(|_| SizeError::TooLarge(text.to_string()))?;
        n * mult as u128
    };
    if bytes == 0 {
        return Err(SizeError::Zero(text.to_string()));
    }
    let rounded = bytes.div_ceil(512) * 512;
    u64::try_from(rounded).map_err(|_| SizeError::TooLarge(text.to_string()))
}

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

    #[test]
    fn human_sizes() {
        assert_eq!(human(300), "300 B");
        assert_eq!(human(512 << 20), "512.0 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
