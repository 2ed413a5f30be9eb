//! Times as Kubernetes writes them in annotations and status fields.

pub use k8s_openapi::jiff::Timestamp;

/// RFC 3339 in UTC, whole seconds: `2030-01-01T00:00:00Z`.
pub fn rfc3339(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// [`rfc3339`] of now.
pub fn now_rfc3339() -> String {
    rfc3339(Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_in_utc() {
        let at = |s: i64, ns: i32| Timestamp::new(s, ns).unwrap();
        for (t, want) in [
            (at(0, 0), "1970-01-01T00:00:00Z"),
            (at(1_893_456_000, 999_999_999), "2030-01-01T00:00:00Z"),
            (at(1_750_000_000, 1), "2025-06-15T15:06:40Z"),
        ] {
            assert_eq!(rfc3339(t), want);
        }
        let now = now_rfc3339();
        assert!(now.ends_with('Z') && !now.contains('.'), "{now}");
        assert_eq!(
            now.parse::<Timestamp>().map(rfc3339).ok(),
            Some(now.clone())
        );
    }
}
