//! Kubernetes resource quantities (`100Mi`, `1Gi`, `500k`, `1.5G`, `2e3`), parsed
//! exactly and rounded up to a whole number the way apimachinery's
//! `Quantity.Value()` does, so that a threshold reads the same here as in kubelet.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error("quantity {0:?} is empty")]
    Empty(String),
    #[error("quantity {0:?} does not start with a number")]
    NoNumber(String),
    #[error(
        "quantity {input:?} has an unknown suffix {suffix:?} (expected Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E or an exponent)"
    )]
    UnknownSuffix { input: String, suffix: String },
    #[error("quantity {0:?} is too large")]
    TooLarge(String),
}

/// Parses a quantity and returns its value rounded up to an integer, as
/// `resource.MustParse(s).Value()` does. Negative quantities are returned as
/// such; deciding whether they are allowed is the caller's business.
pub fn parse_quantity(input: &str) -> Result<i64, QuantityError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty(input.to_owned()));
    }
    let (negative, rest) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let too_large = || QuantityError::TooLarge(input.to_owned());

    // The number as an integer mantissa and a count of fractional digits.
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) if !f.contains('.') => (i, f),
        Some(_) => return Err(QuantityError::NoNumber(input.to_owned())),
        None => (number, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(QuantityError::NoNumber(input.to_owned()));
    }
    let mut mantissa: u128 = 0;
    for digit in int_part.bytes().chain(frac_part.bytes()) {
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(digit - b'0')))
            .ok_or_else(too_large)?;
    }
    let frac_digits = i32::try_from(frac_part.len()).map_err(|_| too_large())?;

    let (binary_shift, decimal_exponent) =
        parse_suffix(suffix).ok_or_else(|| QuantityError::UnknownSuffix {
            input: input.to_owned(),
            suffix: suffix.to_owned(),
        })?;
    let mut value = mantissa
        .checked_mul(1u128.checked_shl(binary_shift).ok_or_else(too_large)?)
        .ok_or_else(too_large)?;
    let exponent = decimal_exponent - frac_digits;
    if exponent >= 0 {
        let scale = 10u128
            .checked_pow(exponent.unsigned_abs())
            .ok_or_else(too_large)?;
        value = value.checked_mul(scale).ok_or_else(too_large)?;
    } else {
        // Round away from zero, as Value() does for a fractional quantity.
        match 10u128.checked_pow(exponent.unsigned_abs()) {
            Some(scale) => value = value.div_ceil(scale),
            // A divisor beyond u128 leaves a non-zero value in (0, 1): rounds to 1.
            None => value = u128::from(value != 0),
        }
    }
    let value = i64::try_from(value).map_err(|_| too_large())?;
    Ok(if negative { -value } else { value })
}

/// Maps a suffix to (binary shift, decimal exponent).
fn parse_suffix(suffix: &str) -> Option<(u32, i32)> {
    let pair = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (0, exponent.parse().ok()?)
        }
    };
    Some(pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(parse_quantity("100Mi"), Ok(100 * 1024 * 1024));
        assert_eq!(parse_quantity("1Gi"), Ok(1 << 30));
        assert_eq!(parse_quantity("2Ki"), Ok(2048));
        assert_eq!(parse_quantity("1Ti"), Ok(1 << 40));
        assert_eq!(parse_quantity("500k"), Ok(500_000));
        assert_eq!(parse_quantity("3M"), Ok(3_000_000));
        assert_eq!(parse_quantity("2G"), Ok(2_000_000_000));
        assert_eq!(parse_quantity("12345"), Ok(12345));
        assert_eq!(parse_quantity("1E"), Ok(1_000_000_000_000_000_000));
    }

    #[test]
    fn fractions_round_up_like_value() {
        assert_eq!(parse_quantity("1.5Gi"), Ok(1_610_612_736));
        assert_eq!(parse_quantity("0.5"), Ok(1));
        assert_eq!(parse_quantity("1500m"), Ok(2));
        assert_eq!(parse_quantity("1001m"), Ok(2));
        assert_eq!(parse_quantity("1000m"), Ok(1));
        assert_eq!(parse_quantity(".5k"), Ok(500));
        assert_eq!(parse_quantity("5."), Ok(5));
        assert_eq!(parse_quantity("1n"), Ok(1));
        assert_eq!(parse_quantity("0.1Ki"), Ok(103));
    }

    #[test]
    fn exponents_and_signs() {
        assert_eq!(parse_quantity("2e3"), Ok(2000));
        assert_eq!(parse_quantity("2E3"), Ok(2000));
        assert_eq!(parse_quantity("25e-1"), Ok(3));
        assert_eq!(parse_quantity("+7"), Ok(7));
        assert_eq!(parse_quantity("-100Mi"), Ok(-104_857_600));
        assert_eq!(parse_quantity("0"), Ok(0));
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(matches!(parse_quantity(""), Err(QuantityError::Empty(_))));
        assert!(matches!(
            parse_quantity("Mi"),
            Err(QuantityError::NoNumber(_))
        ));
        assert!(matches!(
            parse_quantity("1.2.3"),
            Err(QuantityError::NoNumber(_))
        ));
        assert!(matches!(
            parse_quantity("10MB"),
            Err(QuantityError::UnknownSuffix { .. })
        ));
        assert!(matches!(
            parse_quantity("10 Gi"),
            Err(QuantityError::UnknownSuffix { .. })
        ));
        assert!(matches!(
            parse_quantity("1e"),
            Err(QuantityError::UnknownSuffix { .. })
        ));
        assert!(matches!(
            parse_quantity("10%"),
            Err(QuantityError::UnknownSuffix { .. })
        ));
        assert!(matches!(
            parse_quantity("100Ei"),
            Err(QuantityError::TooLarge(_))
        ));
        assert!(matches!(
            parse_quantity("1e400"),
            Err(QuantityError::TooLarge(_))
        ));
        assert!(matches!(
            parse_quantity("99999999999999999999999999999999999999999"),
            Err(QuantityError::TooLarge(_))
        ));
    }
}
