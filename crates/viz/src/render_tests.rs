use super::*;
use crate::{
    query::Kind,
    stats::{Key, Meshed, SplitLeaf},
};

fn row(
    kind: Kind,
    ns: &str,
    name: &str,
    meshed: Option<(u32, u32)>,
    traffic: Option<Traffic>,
) -> Row {
    Row {
        kind,
        key: Key {
            namespace: ns.into(),
            name: name.into(),
        },
        meshed: meshed.map(|(meshed, total)| Meshed { meshed, total }),
        traffic,
        status: None,
        split: None,
    }
}

fn busy(success: f64, failure: f64, lat: [f64; 3], conns: f64) -> Option<Traffic> {
    Some(Traffic {
        success,
        failure,
        latency_ms: lat.map(Some),
        tcp_connections: Some(conns),
        read_bytes_per_sec: Some(1234.56),
        write_bytes_per_sec: None,
    })
}

fn deploys() -> Vec<Row> {
    vec![
        row(
            Kind::Deployment,
            "emojivoto",
            "emoji",
            Some((1, 1)),
            busy(120.0, 0.0, [1.0, 1.9, 2.0], 3.0),
        ),
        row(
            Kind::Deployment,
            "emojivoto",
            "vote-bot",
            Some((1, 1)),
            None,
        ),
        row(
            Kind::Deployment,
            "emojivoto",
            "voting",
            Some((1, 1)),
            busy(53.0, 7.0, [1.0, 2.0, 2.0], 3.0),
        ),
        row(
            Kind::Deployment,
            "emojivoto",
            "web",
            Some((1, 2)),
            busy(111.0, 9.0, [2.0, 5.0, 9.7], 3.0),
        ),
    ]
}

#[test]
fn the_table_is_linkerds() {
    let t = table(&deploys(), Window::DEFAULT, TableOptions::default());
    let want = "\
NAME       MESHED   SUCCESS      RPS   LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN
emoji         1/1   100.00%   2.0rps           1ms           1ms           2ms          3
vote-bot      1/1         -        -             -             -             -          -
voting        1/1    88.33%   1.0rps           1ms           2ms           2ms          3
web           1/2    92.50%   2.0rps           2ms           5ms           9ms          3
";
    assert_eq!(t, want, "\n{t}");
}

#[test]
fn services_all_namespaces_and_wide() {
    let rows = vec![
        row(Kind::Service, "emojivoto", "emoji-svc", None, None),
        row(
            Kind::Service,
            "emojivoto",
            "emoji-svc-west",
            None,
            busy(29.0, 1.0, [2.0, 3.0, 5.0], 1.0),
        ),
    ];
    let t = table(
        &rows,
        "30s".parse().unwrap(),
        TableOptions {
            all_namespaces: true,
            wide: false,
        },
    );
    let want = "\
NAMESPACE   NAME             MESHED   SUCCESS      RPS   LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN
emojivoto   emoji-svc             -         -        -             -             -             -          -
emojivoto   emoji-svc-west        -    96.67%   1.0rps           2ms           3ms           5ms          1
";
    assert_eq!(t, want, "\n{t}");
    let wide = table(
        &rows[1..],
        Window::DEFAULT,
        TableOptions {
            all_namespaces: false,
            wide: true,
        },
    );
    let want = "\
NAME             MESHED   SUCCESS      RPS   LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN   READ_BYTES/SEC   WRITE_BYTES/SEC
emoji-svc-west        -    96.67%   0.5rps           2ms           3ms           5ms          1        1234.6B/s            0.0B/s
";
    assert_eq!(wide, want, "\n{wide}");
    assert_eq!(table(&[], Window::DEFAULT, TableOptions::default()), "");
}

/// A row without requests is all `-`, TCP_CONN and the byte rates too, as
/// Linkerd's `templateStringEmpty`, even if it has open connections.
#[test]
fn rows_without_requests_are_all_dashes() {
    let rows = vec![row(
        Kind::Deployment,
        "a",
        "db",
        Some((1, 1)),
        Some(Traffic {
            tcp_connections: Some(2.0),
            read_bytes_per_sec: Some(10.0),
            ..Default::default()
        }),
    )];
    let wide = TableOptions {
        all_namespaces: false,
        wide: true,
    };
    let t = table(&rows, Window::DEFAULT, wide);
    assert_eq!(
        t.lines().nth(1),
        Some(
            "db        1/1         -     -             -             -             -          -                -                 -"
        ),
        "\n{t}"
    );
    let j: serde_json::Value = serde_json::from_str(&json(&rows, Window::DEFAULT)).unwrap();
    assert!(j[0].get("tcp_open_connections").is_none(), "{j}");
    assert!(j[0].get("tcp_read_bytes_rate").is_none(), "{j}");
}

/// `po` adds STATUS after NAME, as Linkerd's pod table.
#[test]
fn pods_have_a_status_column() {
    let mut web = row(
        Kind::Pod,
        "emojivoto",
        "web-5d9f-abcde",
        Some((1, 1)),
        busy(60.0, 0.0, [1.0, 2.0, 3.0], 2.0),
    );
    web.status = Some("Running".into());
    let mut old = row(Kind::Pod, "emojivoto", "web-5d9f-zzzzz", Some((1, 1)), None);
    old.status = Some("Terminating".into());
    let t = table(&[web, old], Window::DEFAULT, TableOptions::default());
    let want = "\
NAME                  STATUS   MESHED   SUCCESS      RPS   LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN
web-5d9f-abcde       Running      1/1   100.00%   1.0rps           1ms           2ms           3ms          2
web-5d9f-zzzzz   Terminating      1/1         -        -             -             -             -          -
";
    assert_eq!(t, want, "\n{t}");
}

fn split_rows() -> Vec<Row> {
    let leaf = |name: &str, weight: &str, traffic| {
        let mut r = row(Kind::TrafficSplit, "emojivoto", name, None, traffic);
        r.split = Some(SplitLeaf {
            split: "emoji-split".into(),
            apex: "emoji-svc".into(),
            weight: weight.into(),
        });
        r
    };
    vec![
        leaf("emoji-svc", "0", None),
        leaf("emoji-svc-west", "1", busy(30.0, 0.0, [1.0, 2.0, 4.0], 1.0)),
    ]
}

/// `ts`: one row per leaf, NAME the split, with APEX, LEAF and WEIGHT in
/// place of MESHED and no TCP columns, as Linkerd's split table.
#[test]
fn splits_show_apex_leaf_and_weight() {
    let wide = TableOptions {
        all_namespaces: false,
        wide: true,
    };
    let t = table(&split_rows(), Window::DEFAULT, wide);
    let want = "\
NAME          APEX        LEAF             WEIGHT   SUCCESS      RPS   LATENCY_P50   LATENCY_P95   LATENCY_P99
emoji-split   emoji-svc   emoji-svc             0         -        -             -             -             -
emoji-split   emoji-svc   emoji-svc-west        1   100.00%   0.5rps           1ms           2ms           4ms
";
    assert_eq!(t, want, "\n{t}");
    let j: serde_json::Value = serde_json::from_str(&json(&split_rows(), Window::DEFAULT)).unwrap();
    assert_eq!(
        j[1],
        serde_json::json!({
            "namespace": "emojivoto", "kind": "trafficsplit", "name": "emoji-split",
            "success": 1.0, "rps": 0.5,
            "latency_ms_p50": 1, "latency_ms_p95": 2, "latency_ms_p99": 4,
            "apex": "emoji-svc", "leaf": "emoji-svc-west", "weight": "1",
        })
    );
    assert_eq!(j[0]["leaf"], "emoji-svc");
    assert_eq!(j[0]["rps"], serde_json::Value::Null);
}

#[test]
fn json_has_linkerds_fields() {
    let v: serde_json::Value = serde_json::from_str(&json(&deploys(), Window::DEFAULT)).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows[2],
        serde_json::json!({
            "namespace": "emojivoto", "kind": "deployment", "name": "voting", "meshed": "1/1",
            "success": 53.0 / 60.0, "rps": 1.0,
            "latency_ms_p50": 1, "latency_ms_p95": 2, "latency_ms_p99": 2,
            "tcp_open_connections": 3, "tcp_read_bytes_rate": 1234.56, "tcp_write_bytes_rate": 0.0,
        })
    );
    assert_eq!(rows[1]["success"], serde_json::Value::Null);
    assert!(rows[1].get("tcp_open_connections").is_none(), "{}", rows[1]);
    assert_eq!(rows[1]["rps"], serde_json::Value::Null);
    let svc = json(&[row(Kind::Service, "a", "s", None, None)], Window::DEFAULT);
    assert!(!svc.contains("meshed"), "{svc}");
    assert_eq!(json(&[], Window::DEFAULT), "[]\n");
}
