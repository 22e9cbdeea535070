//! Kubernetes resource quantities (`100Mi`, `1Gi`, `500k`, `1.5G`, `2e3`),
//! accepted and refused exactly as apimachinery's `resource.ParseQuantity`
//! does, and rounded up to a whole number as `Quantity.Value()` does, so that
//! a threshold reads the same here as in kubelet.
//!
//! ParseQuantity's scanner, restated: an optional sign; digits; optionally
//! `.` and more digits; then any run of the letters `eEinumkKMGTP`, an
//! optional sign and digits. Nothing else, no whitespace anywhere. It is
//! laxer than it looks: the number may be empty (`Mi`, `+`, `.` are zero).
//! The suffix must then be one of `Ki`..`Ei`, `n u m k M G T P E`, or `e`/`E`
//! with an int64 exponent, which apimachinery truncates to int32.
//!
//! Values beyond int64 saturate: apimachinery caps binary quantities at
//! 2^63-1 and kubelet compares decimal ones as exact decimals, so a
//! threshold of `1e30` is above every filesystem either way.

use thiserror::Error;

/// apimachinery's ErrFormatWrong text, which names the accepted syntax.
const FORMAT: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantityError {
    /// apimachinery's ErrFormatWrong.
    #[error("quantity {0:?}: {FORMAT}")]
    Format(String),
    /// apimachinery's ErrSuffix.
    #[error(
        "quantity {input:?}: unable to parse quantity's suffix {suffix:?} (expected Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E or an exponent such as e3)"
    )]
    Suffix { input: String, suffix: String },
    /// What the API server's validation says of a negative limit, size or
    /// capacity (`ValidateNonnegativeQuantity`).
    #[error("quantity {0:?}: must be greater than or equal to 0")]
    Negative(String),
}

/// [`parse_quantity`] for a size the API server never stores negative (a
/// resource limit, an emptyDir's `sizeLimit`, a PV's capacity): a negative
/// one is refused as the API server refuses it, so a misbehaving server
/// cannot make kubedf export a negative limit.
pub fn parse_size(input: &str) -> Result<i64, QuantityError> {
    match parse_quantity(input)? {
        v if v < 0 => Err(QuantityError::Negative(input.to_owned())),
        v => Ok(v),
    }
}

/// Parses a quantity and returns its value rounded up (away from zero) to an
/// integer, as `resource.ParseQuantity(s)` then `.Value()` do, saturating at
/// ±(2^63-1). Negative quantities are returned as such; deciding whether
/// they are allowed is the caller's business.
pub fn parse_quantity(input: &str) -> Result<i64, QuantityError> {
    let b = input.as_bytes();
    if b.is_empty() {
        return Err(QuantityError::Format(input.to_owned()));
    }
    let end = b.len();
    let mut pos = 0;
    let negative = b[0] == b'-';
    if b[0] == b'-' || b[0] == b'+' {
        pos += 1;
    }
    let digits_from = |mut i: usize| {
        while i < end && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    let num_start = pos;
    pos = digits_from(pos);
    let num = &input[num_start..pos];
    let mut denom = "";
    if pos < end && b[pos] == b'.' {
        let start = pos + 1;
        pos = digits_from(start);
        denom = &input[start..pos];
    }
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end {
        if b[pos] == b'-' || b[pos] == b'+' {
            pos += 1;
        }
        pos = digits_from(pos);
        if pos < end {
            return Err(QuantityError::Format(input.to_owned()));
        }
    }
    let suffix = &input[suffix_start..];
    let (binary_shift, decimal_exponent) =
        interpret_suffix(suffix).ok_or_else(|| QuantityError::Suffix {
            input: input.to_owned(),
            suffix: suffix.to_owned(),
        })?;
    // frac_digits is at most the input's length, which fits i64.
    let exponent = i64::from(decimal_exponent) - denom.len() as i64;
    let magnitude = round_up(num, denom, binary_shift, exponent);
    Ok(if negative { -magnitude } else { magnitude })
}

/// Maps a suffix to (binary shift, decimal exponent), as apimachinery's
/// suffixer does.
fn interpret_suffix(suffix: &str) -> Option<(u32, i32)> {
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
            let exponent = suffix.strip_prefix(['e', 'E']).filter(|e| !e.is_empty())?;
            // strconv.ParseInt(s, 10, 64): an optional sign and digits.
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let parsed: i64 = exponent.parse().ok()?;
            // apimachinery converts with int32(parsed): keep the low 32 bits.
            (0, parsed as i32)
        }
    };
    Some(pair)
}

/// ceil(digits(num.denom-without-point) * 2^shift * 10^exponent), saturated
/// to i64::MAX, computed exactly on decimal digits so no input overflows.
fn round_up(num: &str, denom: &str, shift: u32, exponent: i64) -> i64 {
    let mut digits: Vec<u8> = num.bytes().chain(denom.bytes()).map(|c| c - b'0').collect();
    let lead = digits.iter().take_while(|&&d| d == 0).count();
    digits.drain(..lead);
    if digits.is_empty() {
        return 0;
    }
    // i64::MAX has 19 digits: a value with more integer digits saturates.
    const MAX_DIGITS: i64 = 19;
    let int_len = digits.len() as i64 + exponent;
    // Each doubling adds at most one digit; past this the value is too large.
    if int_len > MAX_DIGITS + 1 {
        return i64::MAX;
    }
    for _ in 0..shift {
        let mut carry = 0;
        for d in digits.iter_mut().rev() {
            let v = *d * 2 + carry;
            *d = v % 10;
            carry = v / 10;
        }
        if carry > 0 {
            digits.insert(0, carry);
        }
    }
    let int_len = digits.len() as i64 + exponent;
    if int_len > MAX_DIGITS {
        return i64::MAX;
    }
    if int_len <= 0 {
        // A positive value below 1 rounds up to 1.
        return 1;
    }
    let split = usize::try_from(int_len)
        .unwrap_or(usize::MAX)
        .min(digits.len());
    let mut value: u128 = 0;
    for &d in &digits[..split] {
        value = value * 10 + u128::from(d);
    }
    // Trailing zeros implied by a positive exponent.
    for _ in digits.len() as i64..int_len {
        value *= 10;
    }
    if digits[split..].iter().any(|&d| d != 0) {
        value += 1;
    }
    i64::try_from(value).unwrap_or(i64::MAX)
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
        assert_eq!(parse_quantity("007Ki"), Ok(7168));
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
        assert_eq!(parse_quantity("1e-400"), Ok(1));
        assert_eq!(
            parse_quantity(&format!("{}e-1000", "1".repeat(1003))),
            Ok(112)
        );
    }

    #[test]
    fn exponents_and_signs() {
        assert_eq!(parse_quantity("2e3"), Ok(2000));
        assert_eq!(parse_quantity("2E3"), Ok(2000));
        assert_eq!(parse_quantity("2e+3"), Ok(2000));
        assert_eq!(parse_quantity("25e-1"), Ok(3));
        assert_eq!(parse_quantity("+7"), Ok(7));
        assert_eq!(parse_quantity("-100Mi"), Ok(-104_857_600));
        assert_eq!(parse_quantity("-1.5"), Ok(-2), "away from zero");
        assert_eq!(parse_quantity("0"), Ok(0));
        // apimachinery truncates the exponent to int32: 2^32 wraps to 0.
        assert_eq!(parse_quantity("3e4294967296"), Ok(3));
    }

    #[test]
    fn what_parse_quantity_reads_as_zero() {
        // Its scanner lets the number be empty.
        for zero in ["+", "-", ".", "Mi", "k", "0.0", "-0", "000", "e5"] {
            assert_eq!(parse_quantity(zero), Ok(0), "{zero:?}");
        }
    }

    #[test]
    fn beyond_int64_saturates_like_kubelet_compares() {
        assert_eq!(parse_quantity("100Ei"), Ok(i64::MAX));
        assert_eq!(parse_quantity("1e400"), Ok(i64::MAX));
        assert_eq!(parse_quantity("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(parse_quantity("9223372036854775808"), Ok(i64::MAX));
        assert_eq!(parse_quantity("8Ei"), Ok(i64::MAX));
        assert_eq!(parse_quantity("7Ei"), Ok(7 << 60));
        assert_eq!(
            parse_quantity("99999999999999999999999999999999999999999"),
            Ok(i64::MAX)
        );
        assert_eq!(parse_quantity("-1e400"), Ok(-i64::MAX));
    }

    #[test]
    fn garbage_is_refused_in_apimachinery_words() {
        for bad in [
            "", "1.2.3", "10 Gi", "1Gi ", " 1Gi", "10%", "1_000", "0x10", "1e3.5", "1g", "10MB",
            "١",
        ] {
            let err = parse_quantity(bad).unwrap_err();
            assert_eq!(err, QuantityError::Format(bad.into()), "{bad:?}");
            assert!(
                err.to_string()
                    .contains("must match the regular expression")
            );
        }
        for bad in [
            "10MM",
            "1e",
            "1K",
            "1mi",
            "1Ki3",
            "1ee3",
            "1+3",
            "1e99999999999999999999",
        ] {
            assert!(
                matches!(parse_quantity(bad), Err(QuantityError::Suffix { .. })),
                "{bad:?}: {:?}",
                parse_quantity(bad)
            );
        }
        assert!(
            parse_quantity("10MM")
                .unwrap_err()
                .to_string()
                .contains("unable to parse quantity's suffix")
        );
    }
}
