//! `--not-before` / `--not-after` values: a duration from now (as Go's
//! `time.ParseDuration`, which step uses) or an RFC 3339 time.

use std::fmt;
use std::str::FromStr;

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::Error;

/// A point in time given either relative to now or absolutely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSpec {
    /// So long after now (negative: before now).
    Relative(Duration),
    /// This exact time.
    Absolute(OffsetDateTime),
}

impl TimeSpec {
    /// The time this spec names, seen from `now`.
    pub fn resolve(&self, now: OffsetDateTime) -> Result<OffsetDateTime, Error> {
        match self {
            TimeSpec::Absolute(t) => Ok(*t),
            TimeSpec::Relative(d) => now.checked_add(*d).ok_or_else(|| Error::InvalidTime {
                input: format!("{d}"),
                reason: "the resulting time is out of range".into(),
            }),
        }
    }
}

impl FromStr for TimeSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        parse_time_spec(s)
    }
}

impl fmt::Display for TimeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeSpec::Relative(d) => write!(f, "{d}"),
            TimeSpec::Absolute(t) => f.write_str(&crate::fmt_time(*t)),
        }
    }
}

/// Parses `8760h`, `30m`, `-5m`, `1h30m`, `1.5h`, `300ms` or `2030-01-01T00:00:00Z`.
pub fn parse_time_spec(s: &str) -> Result<TimeSpec, Error> {
    let s = s.trim();
    match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => Ok(TimeSpec::Absolute(t)),
        // A string that starts with a date was meant as a time: say what is wrong with it.
        Err(e) if s.len() >= 10 && s.as_bytes().get(4) == Some(&b'-') => Err(Error::InvalidTime {
            input: s.to_string(),
            reason: format!("not an RFC 3339 time such as 2030-01-01T00:00:00Z ({e})"),
        }),
        Err(_) => parse_duration(s).map(TimeSpec::Relative),
    }
}

/// Largest accepted duration: far beyond any certificate, far below overflow.
const MAX_NANOS: i128 = 10_000 * 366 * 24 * 3600 * 1_000_000_000;

/// Parses a Go duration: an optional sign, then one or more decimal numbers
/// (with optional fraction), each followed by a unit (ns, us, µs, ms, s, m, h).
pub fn parse_duration(input: &str) -> Result<Duration, Error> {
    let err = |reason: &str| Error::InvalidTime {
        input: input.to_string(),
        reason: format!(
            "{reason}; expected a duration such as 8760h, 30m, 90s, 1h30m or -5m, \
             or an RFC 3339 time such as 2030-01-01T00:00:00Z"
        ),
    };
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest.is_empty() {
        return Err(err("empty duration"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int.is_empty() && frac.is_empty() {
            return Err(err("a number is missing"));
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "" => return Err(err("a unit is missing after a number")),
            other => return Err(err(&format!("unknown unit {other:?}"))),
        };
        rest = &rest[unit_len..];
        // Ignore digits past 18 in the fraction: they are below a nanosecond anyway.
        let int: i128 = if int.is_empty() {
            0
        } else if int.len() > 30 {
            return Err(err("the number is too large"));
        } else {
            int.parse().map_err(|_| err("bad number"))?
        };
        let frac = &frac[..frac.len().min(18)];
        let frac_value: i128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| err("bad fraction"))?
        };
        let scale = 10i128.pow(frac.len() as u32);
        let part = int
            .checked_mul(unit)
            .and_then(|v| v.checked_add(frac_value * unit / scale))
            .ok_or_else(|| err("the duration is too large"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| err("the duration is too large"))?;
        if total > MAX_NANOS {
            return Err(err("the duration is too large"));
        }
    }
    if negative {
        total = -total;
    }
    // Within MAX_NANOS, seconds fit in i64 and the remainder in i32.
    let secs = (total / 1_000_000_000) as i64;
    let nanos = (total % 1_000_000_000) as i32;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn durations() {
        let cases: &[(&str, Duration)] = &[
            ("8760h", Duration::hours(8760)),
            ("87600h", Duration::hours(87600)),
            ("24h", Duration::hours(24)),
            ("30m", Duration::minutes(30)),
            ("90s", Duration::seconds(90)),
            ("1h30m", Duration::minutes(90)),
            ("2h45m10s", Duration::seconds(2 * 3600 + 45 * 60 + 10)),
            ("-5m", Duration::minutes(-5)),
            ("+5m", Duration::minutes(5)),
            ("-1.5h", Duration::minutes(-90)),
            (".5s", Duration::milliseconds(500)),
            ("1.s", Duration::seconds(1)),
            ("300ms", Duration::milliseconds(300)),
            ("10us", Duration::microseconds(10)),
            ("10µs", Duration::microseconds(10)),
            ("7ns", Duration::nanoseconds(7)),
            ("0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("0s", Duration::ZERO),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input).unwrap(), *want, "{input}");
            assert_eq!(
                parse_time_spec(input).unwrap(),
                TimeSpec::Relative(*want),
                "{input}"
            );
        }
    }

    #[test]
    fn bad_durations() {
        let cases: &[(&str, &str)] = &[
            ("", "empty duration"),
            ("-", "empty duration"),
            ("h", "a number is missing"),
            ("10", "a unit is missing"),
            ("1h30", "a unit is missing"),
            ("10d", "unknown unit \"d\""),
            ("10 h", "unknown unit \" h\""),
            ("1y", "unknown unit"),
            (".h", "a number is missing"),
            ("--5m", "a number is missing"),
            ("99999999999999999999999999999999h", "too large"),
            ("100000000h", "too large"),
            ("2030-13-01T00:00:00Z", "not an RFC 3339 time"),
            ("2030-01-01", "not an RFC 3339 time"),
        ];
        for (input, want) in cases {
            let err = parse_time_spec(input).unwrap_err();
            assert!(matches!(err, Error::InvalidTime { .. }), "{input}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(want), "{input}: {msg} lacks {want}");
        }
    }

    #[test]
    fn times() {
        let cases: &[(&str, OffsetDateTime)] = &[
            ("2030-01-01T00:00:00Z", datetime!(2030-01-01 00:00:00 UTC)),
            (
                "2030-01-01T02:00:00+02:00",
                datetime!(2030-01-01 02:00:00 +02:00),
            ),
            (
                "2030-06-15T12:30:45.5Z",
                datetime!(2030-06-15 12:30:45.5 UTC),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_time_spec(input).unwrap(),
                TimeSpec::Absolute(*want),
                "{input}"
            );
        }
    }

    #[test]
    fn resolve() {
        let now = datetime!(2026-01-01 00:00:00 UTC);
        let cases = [
            ("8760h", datetime!(2027-01-01 00:00:00 UTC)),
            ("-5m", datetime!(2025-12-31 23:55:00 UTC)),
            ("2030-01-01T00:00:00Z", datetime!(2030-01-01 00:00:00 UTC)),
        ];
        for (input, want) in cases {
            let spec: TimeSpec = input.parse().unwrap();
            assert_eq!(spec.resolve(now).unwrap(), want, "{input}");
        }
        // Beyond year 9999 is out of range, not a panic.
        let far = TimeSpec::Relative(Duration::days(3_000_000));
        assert!(matches!(far.resolve(now), Err(Error::InvalidTime { .. })));
    }
}
