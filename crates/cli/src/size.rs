//! Size strings as QEMU's `qemu_strtosz` reads them: `512`, `512M`, `1.5G`, `4096B`.

use thiserror::Error;

/// One kibibyte.
pub const KIB: u64 = 1 << 10;
/// One mebibyte.
pub const MIB: u64 = 1 << 20;
/// One gibibyte.
pub const GIB: u64 = 1 << 30;
/// One tebibyte.
pub const TIB: u64 = 1 << 40;

/// Why a size string was rejected; every message names the input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SizeError {
    #[error("invalid size '': empty value")]
    Empty,
    #[error("invalid size '{0}': expected a number with an optional B/K/M/G/T/P/E suffix")]
    Syntax(String),
    #[error("invalid size '{0}': unknown suffix '{1}' (use B, K, M, G, T, P or E)")]
    Suffix(String, String),
    #[error("invalid size '{0}': value does not fit in 64 bits")]
    Overflow(String),
    #[error("invalid size '{0}': fractional byte counts are not allowed")]
    FractionalBytes(String),
}

/// Multiplier for a QEMU size suffix (case-insensitive, binary units).
fn suffix_multiplier(suffix: &str) -> Option<u64> {
    let mut chars = suffix.chars();
    let c = chars.next()?;
    if chars.next().is_some() {
        return None;
    }
    let shift = match c.to_ascii_uppercase() {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        'P' => 50,
        'E' => 60,
        _ => return None,
    };
    Some(1u64 << shift)
}

/// Parses `input` into bytes; a bare number is multiplied by `default_unit`
/// (QEMU's `-m` uses MiB, device properties use bytes).
///
/// Like QEMU, a decimal fraction is allowed with a unit larger than a byte and the
/// result is truncated to whole bytes; hexadecimal (`0x...`) must be an integer.
pub fn parse_size(input: &str, default_unit: u64) -> Result<u64, SizeError> {
    if input.is_empty() {
        return Err(SizeError::Empty);
    }
    let syntax = || SizeError::Syntax(input.to_string());
    let overflow = || SizeError::Overflow(input.to_string());

    let (digits_end, radix, start) = if let Some(hex) = input
        .strip_prefix("0x")
        .or_else(|| input.strip_prefix("0X"))
    {
        let len = hex.bytes().take_while(u8::is_ascii_hexdigit).count();
        (2 + len, 16, 2)
    } else {
        let len = input
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        (len, 10, 0)
    };
    let number = input.get(start..digits_end).ok_or_else(syntax)?;
    let suffix = input.get(digits_end..).ok_or_else(syntax)?;
    if number.is_empty() {
        return Err(syntax());
    }

    let unit = if suffix.is_empty() {
        default_unit
    } else {
        suffix_multiplier(suffix)
            .ok_or_else(|| SizeError::Suffix(input.to_string(), suffix.to_string()))?
    };

    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (number, None),
    };
    if int_part.is_empty() {
        return Err(syntax());
    }
    let whole = u64::from_str_radix(int_part, radix).map_err(|_| overflow())?;
    let mut bytes = whole.checked_mul(unit).ok_or_else(overflow)?;

    if let Some(frac) = frac_part {
        if frac.is_empty() || frac.contains('.') {
            return Err(syntax());
        }
        if unit == 1 {
            return Err(SizeError::FractionalBytes(input.to_string()));
        }
        // Digits past 19 cannot change the truncated result for units up to 2^60.
        let frac = &frac[..frac.len().min(19)];
        let numerator: u128 = frac.parse().map_err(|_| syntax())?;
        let denominator = 10u128.pow(frac.len() as u32);
        let extra = numerator * u128::from(unit) / denominator;
        let extra = u64::try_from(extra).map_err(|_| overflow())?;
        bytes = bytes.checked_add(extra).ok_or_else(overflow)?;
    }
    Ok(bytes)
}

/// Formats a byte count for messages, using the largest exact binary unit.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")];
    for (unit, name) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_number_uses_default_unit() {
        assert_eq!(parse_size("512", MIB), Ok(512 * MIB));
        assert_eq!(parse_size("512", 1), Ok(512));
        assert_eq!(parse_size("0", MIB), Ok(0));
    }

    #[test]
    fn suffixes_are_binary_and_case_insensitive() {
        assert_eq!(parse_size("4096B", MIB), Ok(4096));
        assert_eq!(parse_size("4096b", MIB), Ok(4096));
        assert_eq!(parse_size("64k", MIB), Ok(64 * KIB));
        assert_eq!(parse_size("64K", MIB), Ok(64 * KIB));
        assert_eq!(parse_size("256M", 1), Ok(256 * MIB));
        assert_eq!(parse_size("256m", 1), Ok(256 * MIB));
        assert_eq!(parse_size("2G", MIB), Ok(2 * GIB));
        assert_eq!(parse_size("1T", MIB), Ok(TIB));
        assert_eq!(parse_size("1P", MIB), Ok(1 << 50));
        assert_eq!(parse_size("1E", MIB), Ok(1 << 60));
    }

    #[test]
    fn fractions_truncate_to_bytes() {
        assert_eq!(parse_size("1.5G", MIB), Ok(GIB + GIB / 2));
        assert_eq!(parse_size("0.5", MIB), Ok(MIB / 2));
        assert_eq!(parse_size("1.0000001K", MIB), Ok(KIB));
        assert_eq!(
            parse_size("1.5B", MIB),
            Err(SizeError::FractionalBytes("1.5B".into()))
        );
        assert_eq!(parse_size("1.", MIB), Err(SizeError::Syntax("1.".into())));
        assert_eq!(parse_size(".5G", MIB), Err(SizeError::Syntax(".5G".into())));
        assert_eq!(
            parse_size("1.2.3", MIB),
            Err(SizeError::Syntax("1.2.3".into()))
        );
    }

    #[test]
    fn hex_values() {
        assert_eq!(parse_size("0x1000", 1), Ok(0x1000));
        assert_eq!(parse_size("0x10M", 1), Ok(16 * MIB));
        assert_eq!(parse_size("0X20", MIB), Ok(32 * MIB));
        assert_eq!(parse_size("0x", 1), Err(SizeError::Syntax("0x".into())));
    }

    #[test]
    fn rejects_empty_and_garbage() {
        assert_eq!(parse_size("", MIB), Err(SizeError::Empty));
        assert_eq!(parse_size("M", MIB), Err(SizeError::Syntax("M".into())));
        assert_eq!(parse_size("-1", MIB), Err(SizeError::Syntax("-1".into())));
        assert_eq!(parse_size(" 1", MIB), Err(SizeError::Syntax(" 1".into())));
        assert_eq!(
            parse_size("12Q", MIB),
            Err(SizeError::Suffix("12Q".into(), "Q".into()))
        );
        assert_eq!(
            parse_size("12MB", MIB),
            Err(SizeError::Suffix("12MB".into(), "MB".into()))
        );
        assert_eq!(
            parse_size("12 M", MIB),
            Err(SizeError::Suffix("12 M".into(), " M".into()))
        );
        assert_eq!(
            parse_size("1é", MIB),
            Err(SizeError::Suffix("1é".into(), "é".into()))
        );
    }

    #[test]
    fn rejects_overflow() {
        let huge = "18446744073709551616";
        assert_eq!(parse_size(huge, 1), Err(SizeError::Overflow(huge.into())));
        assert_eq!(parse_size("16E", 1), Err(SizeError::Overflow("16E".into())));
        assert_eq!(
            parse_size("17592186044416", MIB),
            Err(SizeError::Overflow("17592186044416".into()))
        );
        assert_eq!(parse_size("15.99E", 1), Ok(18_435_214_858_663_483_146));
        assert_eq!(parse_size("18446744073709551615", 1), Ok(u64::MAX));
    }

    #[test]
    fn message_names_the_input() {
        let err = parse_size("12Q", MIB).unwrap_err();
        assert!(err.to_string().starts_with("invalid size '12Q'"), "{err}");
    }

    #[test]
    fn format_size_picks_exact_unit() {
        assert_eq!(format_size(512 * MIB), "512 MiB");
        assert_eq!(format_size(2 * GIB), "2 GiB");
        assert_eq!(format_size(1536 * KIB), "1536 KiB");
        assert_eq!(format_size(TIB), "1 TiB");
        assert_eq!(format_size(100), "100 bytes");
        assert_eq!(format_size(0), "0 bytes");
    }
}
