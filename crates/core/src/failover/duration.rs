//! Go-style durations (`500ms`, `30s`, `1h30m`), the format users already write in
//! Linkerd's annotations and flags.

use std::time::Duration;

const UNITS: &str = "use ns, us, ms, s, m or h, as in 500ms, 30s or 1h30m";

/// Parses a Go-style duration: a sequence of decimal numbers, each with an optional
/// fraction and a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), such as `1.5s` or `2h45m`.
///
/// As in Go, a bare `0` is accepted and a leading `+` is allowed. Unlike Go, negative
/// durations are refused: nothing in tandem waits for a negative time. The error is a
/// short phrase without the input, so callers can put the input where it fits.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.starts_with('-') {
        return Err("negative durations are not allowed".to_string());
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() {
        return Err(format!("the duration is empty ({UNITS})"));
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
            return Err(format!("expected a number ({UNITS})"));
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
            "" => return Err(format!("a number has no unit ({UNITS})")),
            other => return Err(format!("unknown unit {other:?} ({UNITS})")),
        };

        let part = component_nanos(int_digits, frac_digits, unit_nanos)
            .ok_or_else(|| "the duration is too long".to_string())?;
        total = total
            .checked_add(part)
            .ok_or_else(|| "the duration is too long".to_string())?;
        rest = after;
    }

    let nanos = u64::try_from(total).map_err(|_| "the duration is too long".to_string())?;
    Ok(Duration::from_nanos(nanos))
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
