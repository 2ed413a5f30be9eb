//! Go-style durations (`500ms`, `30s`, `1m30s`, `24h`, `1h0m0s`), the format users
//! already write in Linkerd's and Kubernetes' flags, annotations and resources.
//!
//! [`Duration`] is the one home of this format: it parses (as [`FromStr`]), prints the
//! canonical Go form (as [`fmt::Display`]), travels as a string in serde (so YAML and CRD
//! fields keep their shape; with the `schemars` feature its JSON schema is a plain
//! string) and converts to and from [`std::time::Duration`].
//!
//! It lives here rather than in `tandem-api`, which re-exports it, because the failover
//! rules of this crate parse an annotation with it, and this crate takes no kube.

use std::{fmt, str::FromStr, time::Duration as StdDuration};

/// A non-negative duration, written and read as Go writes it (`1h0m0s`, `1.5s`, `500ms`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(StdDuration);

/// A string that is not a duration, with the input and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct ParseDurationError {
    input: String,
    reason: Reason,
}

/// Why a string is not a duration. The texts are short phrases without the input, so
/// that callers who name the input themselves can use them alone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("the duration is empty ({UNITS})")]
    Empty,
    #[error("negative durations are not allowed")]
    Negative,
    #[error("expected a number ({UNITS})")]
    MissingNumber,
    #[error("a number has no unit ({UNITS})")]
    MissingUnit,
    #[error("unknown unit {0:?} ({UNITS})")]
    UnknownUnit(String),
    #[error("the duration is too long")]
    Overflow,
    /// Only from [`Duration::parse_period`].
    #[error("a period must be longer than zero")]
    Zero,
}

const UNITS: &str = "use ns, us, ms, s, m or h, as in 500ms, 30s or 1h30m";

const NANOS_PER_SEC: u128 = 1_000_000_000;

// === impl Duration ===

impl Duration {
    pub const ZERO: Self = Self(StdDuration::ZERO);

    pub const fn from_secs(secs: u64) -> Self {
        Self(StdDuration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Self(StdDuration::from_millis(millis))
    }

    pub const fn as_std(self) -> StdDuration {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// Parses a duration that must be above zero: the period of a timer, where zero
    /// would be a busy loop (or a panic in `tokio::time::interval`). Fits clap's
    /// `value_parser`.
    pub fn parse_period(s: &str) -> Result<Self, ParseDurationError> {
        match s.parse::<Self>()? {
            d if d.is_zero() => Err(ParseDurationError::new(s, Reason::Zero)),
            d => Ok(d),
        }
    }
}

/// Parses a Go-style duration: a sequence of decimal numbers, each with an optional
/// fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), such as `1.5s` or `2h45m`.
///
/// As in Go, a bare `0` is accepted and a leading `+` is allowed, and the total must fit
/// in 64 bits of nanoseconds. Unlike Go, negative durations are refused: nothing in
/// tandem waits for a negative time (callers that accept `-5m` strip the sign first).
impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(input: &str) -> Result<Self, ParseDurationError> {
        parse(input).map_err(|reason| ParseDurationError::new(input, reason))
    }
}

fn parse(s: &str) -> Result<Duration, Reason> {
    if s.starts_with('-') {
        return Err(Reason::Negative);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() {
        return Err(Reason::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }

    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let (int_digits, after) = split_digits(rest);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(after) => split_digits(after),
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(Reason::MissingNumber);
        }

        let unit_len = after
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(Reason::MissingUnit),
            other => return Err(Reason::UnknownUnit(other.to_string())),
        };

        let part = component_nanos(int_digits, frac_digits, unit_nanos).ok_or(Reason::Overflow)?;
        total = total.checked_add(part).ok_or(Reason::Overflow)?;
        rest = after;
    }

    let nanos = u64::try_from(total).map_err(|_| Reason::Overflow)?;
    Ok(Duration(StdDuration::from_nanos(nanos)))
}

/// Splits off the leading ASCII digits (always on a char boundary).
fn split_digits(s: &str) -> (&str, &str) {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    s.split_at(n)
}

/// `int.frac` times `unit`, in nanoseconds; `None` on overflow.
fn component_nanos(int_digits: &str, frac_digits: &str, unit: u128) -> Option<u128> {
    let mut int: u128 = 0;
    for d in int_digits.bytes() {
        int = int.checked_mul(10)?.checked_add(u128::from(d - b'0'))?;
    }

    // Digits past the 18th change the result by far less than a nanosecond.
    let mut frac: u128 = 0;
    let mut scale: u128 = 1;
    for d in frac_digits.bytes().take(18) {
        frac = frac * 10 + u128::from(d - b'0');
        scale *= 10;
    }

    int.checked_mul(unit)?.checked_add(frac * unit / scale)
}

/// Go's `Duration.String`: `0s`, `1.5µs`, `500ms`, `1.5s`, `1m30s`, `1h0m0s`.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < NANOS_PER_SEC {
            let (scale, unit) = if nanos < 1_000 {
                (1, "ns")
            } else if nanos < 1_000_000 {
                (1_000, "µs")
            } else {
                (1_000_000, "ms")
            };
            write_decimal(f, nanos, scale)?;
            return f.write_str(unit);
        }
        let secs = nanos / NANOS_PER_SEC;
        if secs >= 3600 {
            write!(f, "{}h", secs / 3600)?;
        }
        if secs >= 60 {
            write!(f, "{}m", secs / 60 % 60)?;
        }
        write_decimal(f, nanos % (60 * NANOS_PER_SEC), NANOS_PER_SEC)?;
        f.write_str("s")
    }
}

/// `value / scale` with its fraction, trailing zeros dropped (`scale` is a power of ten).
fn write_decimal(f: &mut fmt::Formatter<'_>, value: u128, scale: u128) -> fmt::Result {
    write!(f, "{}", value / scale)?;
    let frac = value % scale;
    if frac != 0 {
        let width = scale.ilog10() as usize;
        let digits = format!("{frac:0width$}");
        write!(f, ".{}", digits.trim_end_matches('0'))?;
    }
    Ok(())
}

impl From<StdDuration> for Duration {
    fn from(d: StdDuration) -> Self {
        Self(d)
    }
}

impl From<Duration> for StdDuration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A plain string, as a `String` field's: a field may change between the two without
/// changing its CRD.
#[cfg(feature = "schemars")]
impl schemars::JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        String::json_schema(generator)
    }
}

// === impl ParseDurationError ===

impl ParseDurationError {
    fn new(input: &str, reason: Reason) -> Self {
        Self {
            input: input.to_string(),
            reason,
        }
    }

    /// The text that did not parse.
    pub fn input(&self) -> &str {
        &self.input
    }

    pub fn reason(&self) -> &Reason {
        &self.reason
    }
}

#[cfg(test)]
mod tests;
