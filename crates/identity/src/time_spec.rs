//! `--not-before` / `--not-after` values: a duration from now (as Go's
//! `time.ParseDuration`, which step uses) or an RFC 3339 time.

use std::fmt;
use std::str::FromStr;

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use tandem_core::duration::ParseDurationError;

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
        Err(_) => parse_signed_duration(s).map(TimeSpec::Relative),
    }
}

/// Parses a Go duration with an optional sign (`-5m` is five minutes before now): the
/// sign here, the rest by [`tandem_core::Duration`], the one parser of tandem.
fn parse_signed_duration(input: &str) -> Result<Duration, Error> {
    let (negative, rest) = match input.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    let d: tandem_core::Duration =
        rest.parse()
            .map_err(|e: ParseDurationError| Error::InvalidTime {
                input: input.to_string(),
                reason: format!(
                    "{}; expected a duration such as 8760h, 30m, 90s, 1h30m or -5m, \
             or an RFC 3339 time such as 2030-01-01T00:00:00Z",
                    e.reason()
                ),
            })?;
    let too_large = || Error::InvalidTime {
        input: input.to_string(),
        reason: "the duration is too long".into(),
    };
    let d = Duration::try_from(d.as_std()).map_err(|_| too_large())?;
    Ok(if negative { -d } else { d })
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
            ("", "the duration is empty"),
            ("-", "the duration is empty"),
            ("h", "expected a number"),
            ("10", "a number has no unit"),
            ("1h30", "a number has no unit"),
            ("10d", "unknown unit \"d\""),
            ("10 h", "unknown unit \" h\""),
            ("1y", "unknown unit"),
            (".h", "expected a number"),
            ("--5m", "negative durations are not allowed"),
            ("99999999999999999999999999999999h", "too long"),
            ("100000000h", "too long"),
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
