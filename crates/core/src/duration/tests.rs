use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn nanos(n: u64) -> Duration {
    Duration::from(StdDuration::from_nanos(n))
}

#[test]
fn parses_go_durations() {
    let ms = Duration::from_millis;
    #[rustfmt::skip]
    let ok: &[(&str, Duration)] = &[
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("+5s", secs(5)),
        ("500ms", ms(500)),
        ("10s", secs(10)),
        ("30s", secs(30)),
        ("2m", secs(120)),
        ("1m30s", secs(90)),
        ("1h", secs(3600)),
        ("24h", secs(86_400)),
        ("1h0m0s", secs(3600)),
        ("1h30m", secs(5400)),
        ("1h30m15s", secs(5415)),
        ("1.5s", ms(1500)),
        (".5s", ms(500)),
        ("1.s", secs(1)),
        ("1.5h", secs(5400)),
        ("2m0.25s", ms(120_250)),
        ("10ns", nanos(10)),
        ("10us", nanos(10_000)),
        ("10µs", nanos(10_000)),
        ("10μs", nanos(10_000)),
        ("0.000000001s", nanos(1)),
        ("0.1234567891234567891234s", nanos(123_456_789)),
        ("300s", secs(300)),
        ("1s1s", secs(2)),
        ("18446744073709551615ns", nanos(u64::MAX)),
    ];
    for (input, want) in ok {
        assert_eq!(input.parse::<Duration>(), Ok(*want), "{input:?}");
    }
}

#[test]
fn refuses_what_is_not_a_duration() {
    use Reason::*;
    let unknown = |u: &str| UnknownUnit(u.to_string());
    #[rustfmt::skip]
    let bad: &[(&str, Reason)] = &[
        // empty
        ("", Empty),
        ("+", Empty),
        // negative
        ("-1s", Negative),
        ("-0s", Negative),
        ("-0", Negative),
        // unit missing
        ("10", MissingUnit),
        ("1h30", MissingUnit),
        // overflow
        ("100000000000000000000000000000000000000000000h", Overflow),
        ("99999999999h", Overflow),
        ("18446744073709551616ns", Overflow),
        ("5124096h", Overflow),
        // garbage
        ("s", MissingNumber),
        (".", MissingNumber),
        (".s", MissingNumber),
        ("abc", MissingNumber),
        (" 1s", MissingNumber),
        ("1.2.3s", MissingUnit),
        ("1x", unknown("x")),
        ("1 s", unknown(" s")),
        ("1s ", unknown("s ")),
        ("1S", unknown("S")),
        ("1sec", unknown("sec")),
        ("1e3s", unknown("e")),
        ("0x10s", unknown("x")),
        ("10d", unknown("d")),
    ];
    for (input, want) in bad {
        let err = input.parse::<Duration>().unwrap_err();
        assert_eq!(err.reason(), want, "{input:?}");
        assert_eq!(err.input(), *input);
        // The message names the input, so a flag's or a field's error is clear alone.
        assert!(err.to_string().contains(&format!("{input:?}")), "{err}");
    }
}

#[test]
fn periods_are_above_zero() {
    assert_eq!(Duration::parse_period("30s"), Ok(secs(30)));
    for input in ["0", "0s", "0h0m"] {
        let err = Duration::parse_period(input).unwrap_err();
        assert_eq!(err.reason(), &Reason::Zero, "{input}");
    }
    let err = Duration::parse_period("1x").unwrap_err();
    assert_eq!(err.reason(), &Reason::UnknownUnit("x".into()));
}

#[test]
fn displays_the_canonical_go_form() {
    let ms = Duration::from_millis;
    #[rustfmt::skip]
    let cases: &[(Duration, &str)] = &[
        (Duration::ZERO, "0s"),
        (nanos(1), "1ns"),
        (nanos(999), "999ns"),
        (nanos(1_500), "1.5µs"),
        (nanos(10_000), "10µs"),
        (ms(500), "500ms"),
        (nanos(1_234_567), "1.234567ms"),
        (secs(1), "1s"),
        (ms(1500), "1.5s"),
        (secs(10), "10s"),
        (secs(59), "59s"),
        (secs(60), "1m0s"),
        (secs(90), "1m30s"),
        (ms(90_250), "1m30.25s"),
        (secs(3600), "1h0m0s"),
        (secs(5415), "1h30m15s"),
        (secs(86_400), "24h0m0s"),
        (nanos(3_600_000_000_001), "1h0m0.000000001s"),
        (nanos(u64::MAX), "5124095h34m33.709551615s"),
    ];
    for (d, want) in cases {
        assert_eq!(d.to_string(), *want, "{d:?}");
        // What is printed parses back to the same value.
        assert_eq!(want.parse::<Duration>(), Ok(*d), "{want}");
    }
}

#[test]
fn converts_to_and_from_std() {
    let std = StdDuration::from_millis(1500);
    let d = Duration::from(std);
    assert_eq!(d, Duration::from_millis(1500));
    assert_eq!(StdDuration::from(d), std);
    assert_eq!(d.as_std(), std);
    assert!(Duration::ZERO.is_zero() && !d.is_zero());
}

#[test]
fn serde_is_a_string() {
    let d: Duration = serde_json::from_str(r#""1m30s""#).unwrap();
    assert_eq!(d, secs(90));
    assert_eq!(serde_json::to_string(&d).unwrap(), r#""1m30s""#);
    let err = serde_json::from_str::<Duration>(r#""1x""#).unwrap_err();
    assert!(
        err.to_string().contains(r#"invalid duration "1x""#),
        "{err}"
    );
    assert!(serde_json::from_str::<Duration>("90").is_err());
}
