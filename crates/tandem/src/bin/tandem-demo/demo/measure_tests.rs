use std::time::Duration;

use super::*;

type SumCase<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);
type MoveCase<'a> = (&'a str, &'a [(u64, f64, f64)], Option<Duration>);

const METRICS: &str = r#"# HELP response_total Total count of HTTP responses.
# TYPE response_total counter
response_total{direction="outbound",dst_service="emoji-svc",classification="success"} 40
response_total{direction="outbound",dst_service="emoji-svc",classification="failure"} 2
response_total{direction="outbound",dst_service="emoji-svc-west",classification="success"} 7
response_total{direction="inbound",classification="success"} 100
votebot_requests_total{path="/api/vote",result="failed"} 3
votebot_requests_total{path="/api/list",result="failed"} 1
votebot_requests_total{path="/api/vote",result="doughnut"} 5
"#;

#[test]
fn sums_cover_the_matching_series_only() {
    let cases: &[SumCase] = &[
        ("response_total", &[("dst_service", "emoji-svc")], 42.0),
        ("response_total", &[("dst_service", "emoji-svc-west")], 7.0),
        (
            "response_total",
            &[("direction", "outbound"), ("classification", "success")],
            47.0,
        ),
        ("response_total", &[], 149.0),
        ("votebot_requests_total", &[("result", "failed")], 4.0),
        ("votebot_requests_total", &[("result", "doughnut")], 5.0),
        ("votebot_requests_total", &[("result", "ok")], 0.0),
        ("response", &[], 0.0),
        ("request_total", &[], 0.0),
    ];
    for (name, labels, want) in cases {
        assert_eq!(
            metric_sum(METRICS, name, labels),
            *want,
            "{name} {labels:?}"
        );
    }
}

#[test]
fn garbage_lines_are_skipped() {
    let text = "x{a=\"1\"} nope\nx{a=\"1\" 3\nx 2\n\nx{a=\"1\"} 4\n";
    assert_eq!(metric_sum(text, "x", &[]), 6.0);
    assert_eq!(metric_sum(text, "x", &[("a", "1")]), 4.0);
}

fn polls(rows: &[(u64, f64, f64)]) -> Vec<Poll> {
    rows.iter()
        .map(|&(ms, from, to)| Poll {
            at: Duration::from_millis(ms),
            from,
            to,
        })
        .collect()
}

#[test]
fn traffic_has_moved_once_from_is_still_and_to_grows() {
    let quiet = Duration::from_millis(1000);
    let ms = |n| Some(Duration::from_millis(n));
    let cases: &[MoveCase] = &[
        ("no polls", &[], None),
        (
            "moves at 300 ms",
            &[
                (0, 10.0, 0.0),
                (100, 12.0, 0.0),
                (300, 14.0, 1.0),
                (800, 14.0, 5.0),
                (1300, 14.0, 9.0),
            ],
            ms(300),
        ),
        (
            "still, but not for long enough",
            &[(0, 10.0, 0.0), (300, 14.0, 1.0), (800, 14.0, 5.0)],
            None,
        ),
        (
            "from is still but to does not grow: nothing moved",
            &[(0, 10.0, 3.0), (500, 12.0, 3.0), (2000, 12.0, 3.0)],
            None,
        ),
        (
            "from grows again late: the later instant counts",
            &[
                (0, 10.0, 0.0),
                (200, 11.0, 2.0),
                (600, 12.0, 4.0),
                (1700, 12.0, 9.0),
            ],
            ms(600),
        ),
        (
            "already moved when polling began",
            &[(0, 14.0, 1.0), (500, 14.0, 3.0), (1000, 14.0, 6.0)],
            ms(0),
        ),
    ];
    for (what, rows, want) in cases {
        assert_eq!(moved_at(&polls(rows), quiet), *want, "{what}");
    }
}

#[test]
fn spreads_use_nearest_rank() {
    let d = Duration::from_millis;
    assert_eq!(Spread::of(&[]), Spread::default());
    assert_eq!(
        Spread::of(&[d(300)]),
        Spread {
            p50: d(300),
            p99: d(300),
            max: d(300)
        }
    );
    let ten: Vec<_> = (1..=10).rev().map(|i| d(i * 100)).collect();
    assert_eq!(
        Spread::of(&ten),
        Spread {
            p50: d(500),
            p99: d(1000),
            max: d(1000)
        }
    );
}

#[test]
fn stat_rows_with_traffic_are_found_by_name() {
    let json = r#"[
      {"namespace":"emojivoto","kind":"service","name":"emoji-svc","success":null,"rps":null},
      {"namespace":"emojivoto","kind":"service","name":"emoji-svc-west","success":1.0,"rps":39.5},
      {"namespace":"emojivoto","kind":"service","name":"voting-svc","success":0.8,"rps":0.0}
    ]"#;
    assert_eq!(stat_rps(json, "emoji-svc-west").unwrap(), Some(39.5));
    assert_eq!(stat_rps(json, "emoji-svc").unwrap(), None);
    assert_eq!(stat_rps(json, "voting-svc").unwrap(), None);
    assert_eq!(stat_rps(json, "web-svc").unwrap(), None);
    assert_eq!(stat_rps("[]", "emoji-svc").unwrap(), None);
    assert!(stat_rps("No traffic found.", "emoji-svc").is_err());
    assert!(stat_rps("{}", "emoji-svc").is_err());
}

#[test]
fn chunked_bodies_are_joined() {
    assert_eq!(
        dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        "hello world"
    );
    assert_eq!(dechunk("zz\r\nhello"), "");
    assert_eq!(dechunk("ff\r\nshort"), "");
}
