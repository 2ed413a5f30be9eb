//! Small helpers tandem's crates share, each with one home: bounded API calls
//! with one typed error ([`call`]), kube clients from kubeconfigs ([`client`]),
//! times as Kubernetes writes them ([`time`]), retry backoff, text cut to an
//! API field's limit, and an error with its causes on one line. The first
//! three need the `kube` feature (on by default); the data plane leaves it
//! off.

#![forbid(unsafe_code)]

#[cfg(feature = "kube")]
pub mod call;
#[cfg(feature = "kube")]
pub mod client;
#[cfg(feature = "kube")]
pub mod time;

use std::time::Duration;

/// Backoff never waits longer than this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `first` for attempt 1 (and 0), doubling with each further attempt, at
/// most [`MAX_BACKOFF`].
pub fn backoff(first: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    first.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// At most `max` bytes of `s`, cut on a character boundary, with `…` (which
/// counts) where it was cut: for API fields with a size limit, such as an
/// Event's message.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// An error and its sources, `: `-separated, each text once (kube's errors
/// often repeat their source in their own message).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let first = Duration::from_millis(100);
        for (attempt, want) in [
            (0, first),
            (1, first),
            (2, Duration::from_millis(200)),
            (3, Duration::from_millis(400)),
            (5, Duration::from_millis(1600)),
            (40, MAX_BACKOFF),
            (u32::MAX, MAX_BACKOFF),
        ] {
            assert_eq!(backoff(first, attempt), want, "attempt {attempt}");
        }
        assert_eq!(
            backoff(Duration::from_millis(10), 3),
            Duration::from_millis(40)
        );
    }

    #[test]
    fn truncation_stays_within_the_limit_on_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate("abcdefghij", 8);
        assert_eq!(cut, "abcde…");
        assert!(cut.len() <= 8);
        // "é" is two bytes: a cut at byte 5 would split one, so it moves back.
        let cut = truncate("ééééé", 8);
        assert!(cut.len() <= 8 && cut.ends_with('…'), "{cut}");
        assert_eq!(cut, "éé…");
    }

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn chains_name_each_cause_once() {
        let e = E("a", Some(Box::new(E("b", Some(Box::new(E("c", None)))))));
        assert_eq!(error_chain(&e), "a: b: c");
        let repeated = E(
            "request failed: timed out",
            Some(Box::new(E("timed out", None))),
        );
        assert_eq!(error_chain(&repeated), "request failed: timed out");
    }
}
