//! Go's `time.ParseDuration`, which kubelet uses for
//! `evictionSoftGracePeriod` (and its other durations) and exporter-toolkit
//! for the web config's `rate_limit.interval`: kubedf's one parser of Go
//! durations. A sign, then one or more decimal numbers each
//! with a unit (`ns`, `us`/`µs`/`μs`, `ms`, `s`, `m`, `h`), as in `1m30s`
//! or `1.5h`; a bare `0` is zero. Written here rather than taken from a
//! crate because the point is Go's exact edges: which inputs it refuses, its
//! error wording, and its int64-nanosecond overflow.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("time: invalid duration {0:?}")]
    Invalid(String),
    #[error("time: missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("time: unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit { unit: String, input: String },
}

/// Parses `input` as Go does, returning signed nanoseconds.
pub fn parse_go_duration(input: &str) -> Result<i64, DurationError> {
    let invalid = || DurationError::Invalid(input.to_owned());
    let mut s = input;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix(['-', '+']) {
        negative = s.starts_with('-');
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    const LIMIT: u64 = 1 << 63;
    let mut total: u64 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // Whole part; Go refuses one that overflows int64.
        let whole_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut whole: u64 = 0;
        for &c in &b[..whole_len] {
            if whole > LIMIT / 10 {
                return Err(invalid());
            }
            whole = whole * 10 + u64::from(c - b'0');
            if whole > LIMIT {
                return Err(invalid());
            }
        }
        s = &s[whole_len..];
        // Fraction; Go keeps the digits that fit and ignores the rest.
        let mut frac: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut frac_len = 0;
        if let Some(rest) = s.strip_prefix('.') {
            frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for c in rest[..frac_len].bytes() {
                if overflow {
                    continue;
                }
                if frac > (LIMIT - 1) / 10 {
                    overflow = true;
                    continue;
                }
                let y = frac * 10 + u64::from(c - b'0');
                if y > LIMIT {
                    overflow = true;
                    continue;
                }
                frac = y;
                scale *= 10.0;
            }
            s = &rest[frac_len..];
            if whole_len == 0 && frac_len == 0 {
                return Err(invalid());
            }
        }
        if whole_len == 0 && frac_len == 0 {
            return Err(invalid());
        }
        let unit_len = s
            .bytes()
            .take_while(|c| !(*c == b'.' || c.is_ascii_digit()))
            .count();
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(input.to_owned()));
        }
        let unit_name = &s[..unit_len];
        s = &s[unit_len..];
        let unit: u64 = match unit_name {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(DurationError::UnknownUnit {
                    unit: unit_name.to_owned(),
                    input: input.to_owned(),
                });
            }
        };
        if whole > LIMIT / unit {
            return Err(invalid());
        }
        let mut v = whole * unit;
        if frac > 0 {
            // Go's own float64 step, truncated as uint64() truncates.
            v += (frac as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        total += v;
        if total > LIMIT {
            return Err(invalid());
        }
    }
    if negative {
        // total <= 2^63, so its negation fits.
        return Ok((-(total as i128)) as i64);
    }
    i64::try_from(total).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn accepts_what_go_accepts() {
        assert_eq!(parse_go_duration("1m30s"), Ok(90 * S));
        assert_eq!(parse_go_duration("2m"), Ok(120 * S));
        assert_eq!(parse_go_duration("1.5h"), Ok(5400 * S));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-0"), Ok(0));
        assert_eq!(parse_go_duration("+5s"), Ok(5 * S));
        assert_eq!(parse_go_duration("-1m"), Ok(-60 * S));
        assert_eq!(
            parse_go_duration("1h2m3s4ms5us6ns"),
            Ok(3723 * S + 4_005_006)
        );
        assert_eq!(parse_go_duration("3\u{b5}s"), Ok(3000));
        assert_eq!(parse_go_duration("3\u{3bc}s"), Ok(3000));
        assert_eq!(parse_go_duration(".5s"), Ok(S / 2));
        assert_eq!(parse_go_duration("5.s"), Ok(5 * S));
        assert_eq!(parse_go_duration("0s"), Ok(0));
        assert_eq!(parse_go_duration("9223372036854775807ns"), Ok(i64::MAX));
        assert_eq!(parse_go_duration("-9223372036854775808ns"), Ok(i64::MIN));
    }

    #[test]
    fn refuses_what_go_refuses_in_its_words() {
        for (bad, want) in [
            ("", "time: invalid duration \"\""),
            ("abc", "time: invalid duration \"abc\""),
            ("-", "time: invalid duration \"-\""),
            (".s", "time: invalid duration \".s\""),
            ("1", "time: missing unit in duration \"1\""),
            ("1m30", "time: missing unit in duration \"1m30\""),
            ("1d", "time: unknown unit \"d\" in duration \"1d\""),
            ("1 m", "time: unknown unit \" m\" in duration \"1 m\""),
            (" 1m", "time: invalid duration \" 1m\""),
            ("9223372036854775808ns", "time: invalid duration"),
            ("3000000h", "time: invalid duration"),
            ("99999999999999999999s", "time: invalid duration"),
        ] {
            let err = parse_go_duration(bad).unwrap_err().to_string();
            assert!(err.contains(want), "{bad:?}: {err}");
        }
    }

    /// The cases of the web config's former parser, which this one replaced.
    #[test]
    fn the_web_configs_intervals() {
        for (s, ns) in [
            ("0", 0),
            ("1s", S),
            ("1.5s", 1_500_000_000),
            ("1m30s", 90 * S),
            ("-2ms", -2_000_000),
            ("3µs", 3_000),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
        ] {
            assert_eq!(parse_go_duration(s), Ok(ns), "{s}");
        }
        for s in ["", "1", "s", "1x", "1..2s", "-", "1s2"] {
            assert!(parse_go_duration(s).is_err(), "{s}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "[-+0-9.a-zµμ]{0,12}") {
            let _ = parse_go_duration(&s);
        }
    }
}
