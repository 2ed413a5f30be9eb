//! The outbound path end to end on loopback: a client, the proxy, backends
//! and a test destination controller.

mod support;

use std::{net::SocketAddr, sync::atomic::Ordering, time::Duration};

use futures::StreamExt as _;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const APEX: &str = "web-svc.test.svc.cluster.local";
const B1: &str = "b1.test.svc.cluster.local:80";
const B2: &str = "b2.test.svc.cluster.local:80";

fn service_ip() -> SocketAddr {
    "10.96.0.10:80".parse().unwrap()
}

/// Sends requests until `ok` holds for `n` in a row (bounded).
async fn until_n_in_a_row(client: &Client, proxy: SocketAddr, n: usize, ok: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut streak = 0;
    while streak < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw {n} in a row"
        );
        let (status, body) = get(client, proxy, APEX).await;
        assert_eq!(status, 200, "{body}");
        streak = if ok(&body) { streak + 1 } else { 0 };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_follows_the_weights_and_their_changes() {
    let (b1, b2) = (Backend::start("b1").await, Backend::start("b2").await);
    let ctl = Controller::default();
    ctl.profile(service_ip(), APEX, &[(B1, 30000), (B2, 10000)]);
    ctl.endpoints(B1, &[(b1.addr, "b1-0")]);
    ctl.endpoints(B2, &[(b2.addr, "b2-0")]);
    let (dst, _ctl_task) = ctl.clone().serve().await;
    let p = proxy(Some(dst), service_ip()).await;
    let client = http1_client();

    for _ in 0..400 {
        let (status, body) = get(&client, p.proxy_outbound, APEX).await;
        assert_eq!(status, 200, "{body}");
    }
    let (h1, h2) = (b1.hits(), b2.hits());
    assert_eq!(h1 + h2, 400);
    // 3:1 is 75%; allow ±8 points.
    assert!((268..=332).contains(&h1), "b1 got {h1} of 400, b2 {h2}");

    ctl.profile(service_ip(), APEX, &[(B1, 0), (B2, 10000)]);
    until_n_in_a_row(&client, p.proxy_outbound, 20, |b| b.starts_with("b2")).await;
    let before = b1.hits();
    for _ in 0..100 {
        let (_, body) = get(&client, p.proxy_outbound, APEX).await;
        assert!(body.starts_with("b2"), "{body}");
    }
    assert_eq!(b1.hits(), before, "a weight-0 backend gets nothing");

    let text = metrics(p.admin).await;
    let b2_labels = format!(
        "direction=\"outbound\",authority=\"{APEX}:80\",target_addr=\"{}\"",
        b2.addr
    );
    let request = text
        .lines()
        .find(|l| l.starts_with(&format!("request_total{{{b2_labels}")))
        .unwrap_or_else(|| panic!("no request_total for b2\n{text}"));
    assert!(
        request.contains("tls=\"no_identity\",no_tls_reason=\"loopback\""),
        "{request}"
    );
    assert!(
        request.contains("dst_pod=\"b2-0\",dst_service=\"b2\""),
        "{request}"
    );
    let response = text
        .lines()
        .find(|l| l.starts_with(&format!("response_total{{{b2_labels}")))
        .unwrap_or_else(|| panic!("no response_total for b2\n{text}"));
    assert!(
        response.contains("classification=\"success\",status_code=\"200\""),
        "{response}"
    );
    assert!(
        text.contains("tcp_open_total{direction=\"outbound\",peer=\"dst\""),
        "{text}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_endpoint_loses_no_request() {
    let (e1, e2) = (Backend::start("e1").await, Backend::start("e2").await);
    let ctl = Controller::default();
    ctl.profile(service_ip(), APEX, &[]);
    let apex = format!("{APEX}:80");
    ctl.endpoints(&apex, &[(e1.addr, "e1"), (e2.addr, "e2")]);
    let (dst, _ctl_task) = ctl.clone().serve().await;
    let p = proxy(Some(dst), service_ip()).await;
    let client = http1_client();

    // Requests 8 at a time, so that both endpoints hold pooled connections
    // (P2C spreads concurrent requests by their pending count).
    let batch = |n: usize| {
        let client = client.clone();
        let proxy = p.proxy_outbound;
        async move {
            let tasks: Vec<_> = (0..n)
                .map(|_| {
                    let client = client.clone();
                    tokio::spawn(async move { get(&client, proxy, APEX).await })
                })
                .collect();
            let mut out = vec![];
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while e1.hits() == 0 || e2.hits() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "P2C never used both endpoints"
        );
        for (status, body) in batch(8).await {
            assert_eq!(status, 200, "{body}");
        }
    }
    e1.stop().await;
    for round in 0..25 {
        for (status, body) in batch(8).await {
            assert_eq!((status, &body[..2]), (200, "e2"), "round {round}: {body}");
        }
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_endpoints_outlive_the_controller() {
    let b1 = Backend::start("b1").await;
    let ctl = Controller::default();
    ctl.profile(service_ip(), APEX, &[(B1, 1)]);
    ctl.endpoints(B1, &[(b1.addr, "b1-0")]);
    let (dst, ctl_task) = ctl.clone().serve().await;
    let p = proxy(Some(dst), service_ip()).await;
    let client = http1_client();
    assert_eq!(get(&client, p.proxy_outbound, APEX).await.0, 200);

    ctl.go_down();
    ctl_task.abort();
    for _ in 0..50 {
        let (status, body) = get(&client, p.proxy_outbound, APEX).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("b1"), "{body}");
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_controller_replaces_the_endpoints() {
    let (b1, b2) = (Backend::start("b1").await, Backend::start("b2").await);
    let ctl = Controller::default();
    ctl.profile(service_ip(), APEX, &[(B1, 1)]);
    ctl.endpoints(B1, &[(b1.addr, "b1-0")]);
    let (dst, _ctl_task) = ctl.clone().serve().await;
    let p = proxy(Some(dst), service_ip()).await;
    let client = http1_client();
    assert!(
        get(&client, p.proxy_outbound, APEX)
            .await
            .1
            .starts_with("b1")
    );

    ctl.go_down();
    // While it is down, the endpoints change: b1 goes, b2 comes.
    ctl.endpoints(B1, &[(b2.addr, "b2-0")]);
    assert!(
        get(&client, p.proxy_outbound, APEX)
            .await
            .1
            .starts_with("b1")
    );
    ctl.go_up();
    // The reconnected stream's first answer replaces the set: b1 is gone.
    until_n_in_a_row(&client, p.proxy_outbound, 20, |b| b.starts_with("b2")).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_target_ends_its_discovery_streams() {
    let b1 = Backend::start("b1").await;
    let ctl = Controller::default();
    ctl.profile(service_ip(), APEX, &[(B1, 1)]);
    ctl.endpoints(B1, &[(b1.addr, "b1-0")]);
    let (dst, _ctl_task) = ctl.clone().serve().await;
    // The harness's proxy drops a router 200 ms after its last connection.
    let p = proxy(Some(dst), service_ip()).await;
    {
        let client = http1_client();
        assert_eq!(get(&client, p.proxy_outbound, APEX).await.0, 200);
        assert_eq!(ctl.open_streams(), 2, "a GetProfile and a Get");
    } // the client and its connection go
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ctl.open_streams() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "streams still open: {}",
            ctl.open_streams()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A new connection looks the target up again.
    let (status, body) = get(&http1_client(), p.proxy_outbound, APEX).await;
    assert_eq!((status, &body[..2]), (200, "b1"));
    assert_eq!(ctl.open_streams(), 2);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_is_proxied_as_http2() {
    let b1 = Backend::start("b1").await;
    let ctl = Controller::default();
    ctl.profile(service_ip(), APEX, &[(B1, 1)]);
    ctl.endpoints(B1, &[(b1.addr, "b1-0")]);
    let (dst, _ctl_task) = ctl.clone().serve().await;
    let p = proxy(Some(dst), service_ip()).await;
    let (status, body) = get(&h2_client(), p.proxy_outbound, APEX).await;
    assert_eq!((status, body.as_str()), (200, "b1 HTTP/2.0"));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_targets_are_forwarded_as_they_are() {
    // No profile for the backend's own address: the controller answers empty.
    let b1 = Backend::start("direct").await;
    let ctl = Controller::default();
    let (dst, _ctl_task) = ctl.clone().serve().await;
    let p = proxy(Some(dst), b1.addr).await;
    let (status, body) = get(&http1_client(), p.proxy_outbound, "anything.example").await;
    assert_eq!((status, body.as_str()), (200, "direct HTTP/1.1"));
    p.stop().await;

    // No destination service at all.
    let p = proxy(None, b1.addr).await;
    let (status, _) = get(&http1_client(), p.proxy_outbound, "anything.example").await;
    assert_eq!(status, 200);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_is_copied_both_ways() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
    });
    let p = proxy(None, echo_addr).await;
    let mut conn = tokio::net::TcpStream::connect(p.proxy_outbound)
        .await
        .unwrap();
    conn.write_all(b"ping\n").await.unwrap();
    let mut got = [0u8; 5];
    conn.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping\n");
    conn.write_all(b"more").await.unwrap();
    let mut more = [0u8; 4];
    conn.read_exact(&mut more).await.unwrap();
    assert_eq!(&more, b"more");
    drop(conn);
    let text = metrics(p.admin).await;
    let dst_read = format!(
        "tcp_read_bytes_total{{direction=\"outbound\",peer=\"dst\",target_addr=\"{echo_addr}\""
    );
    let line = text
        .lines()
        .find(|l| l.starts_with(&dst_read))
        .unwrap_or_else(|| panic!("no {dst_read}\n{text}"));
    assert!(line.ends_with(" 9"), "{line}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_backend_is_left_out_of_the_split() {
    let b1 = Backend::start("b1").await;
    let ctl = Controller::default();
    // The controller knows no endpoints for the second backend: its Get fails.
    ctl.profile(
        service_ip(),
        APEX,
        &[(B1, 1), ("nope.test.svc.cluster.local:80", 1)],
    );
    ctl.endpoints(B1, &[(b1.addr, "b1-0")]);
    let (dst, _ctl_task) = ctl.clone().serve().await;
    let p = proxy(Some(dst), service_ip()).await;
    let client = http1_client();
    for _ in 0..50 {
        let (status, body) = get(&client, p.proxy_outbound, APEX).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("b1"), "{body}");
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_status_in_trailers_classifies_the_response() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    // An h2c server answering like gRPC: 200, then trailers grpc-status: 2.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "2".parse().unwrap());
                    let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
                        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let body = StreamBody::new(futures::stream::iter(frames));
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let p = proxy(None, server).await;
    let req = hyper::Request::post(format!(
        "http://{}/emojivoto.v1.VotingService/VoteDoughnut",
        p.proxy_outbound
    ))
    .header("content-type", "application/grpc")
    .body(Full::new(Bytes::new()))
    .unwrap();
    let rsp = h2_client().request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let collected = rsp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "2");
    let text = metrics(p.admin).await;
    let line = text
        .lines()
        .find(|l| l.starts_with("response_total{direction=\"outbound\""))
        .unwrap_or_else(|| panic!("no response_total\n{text}"));
    assert!(
        line.contains("classification=\"failure\",status_code=\"200\",grpc_status=\"2\""),
        "{line}"
    );
    p.stop().await;
}

/// A port held bound but never listening: connecting to it is refused (and
/// no other listener can be handed it while the socket lives).
fn refusing_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = held.local_addr().unwrap();
    (held, addr)
}

/// An h2c POST through the proxy whose body streams in `chunks` (no
/// content-length, as gRPC's), echoed by the backend: status and body.
async fn streamed_post(proxy: SocketAddr, chunks: Vec<String>) -> (u16, String) {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use hyper_util::rt::TokioExecutor;

    let frames = futures::stream::iter(chunks).then(|c| async move {
        // Frames arrive apart, so that the proxy cannot wait for the body.
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok::<_, std::convert::Infallible>(Frame::data(bytes::Bytes::from(c)))
    });
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = hyper::Request::post(format!("http://{proxy}/emojivoto.v1.EmojiService/ListAll"))
        .header("host", APEX)
        .header("content-type", "application/grpc")
        .header("x-echo-body", "1")
        .body(StreamBody::new(Box::pin(frames)))
        .unwrap();
    let rsp = client.request(req).await.expect("the proxy answers");
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The failover's moment in one proxy: the local backend has all the
/// weight but its endpoint is gone (nothing listens), the remote one has
/// none. Every request, its body streamed as gRPC's are, still reaches the
/// remote backend whole; a body longer than the retry buffer too, since
/// the failed try never read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_request_to_a_vanished_endpoint_is_sent_to_the_other_backend() {
    let (_held, gone) = refusing_port();
    let b2 = Backend::start("b2").await;
    let ctl = Controller::default();
    ctl.profile(service_ip(), APEX, &[(B1, 1), (B2, 0)]);
    ctl.endpoints(B1, &[(gone, "b1-0")]);
    ctl.endpoints(B2, &[(b2.addr, "b2-0")]);
    let (dst, _ctl_task) = ctl.clone().serve().await;
    let p = proxy(Some(dst), service_ip()).await;

    for i in 0..10 {
        let chunks: Vec<String> = (0..3).map(|c| format!("<{i}.{c}>")).collect();
        let want = chunks.concat();
        let (status, body) = streamed_post(p.proxy_outbound, chunks).await;
        assert_eq!(status, 200, "request {i}: {body}");
        assert_eq!(body, format!("b2 HTTP/2.0 body={want}"), "request {i}");
    }
    let long: Vec<String> = (0..8).map(|c| format!("{c}").repeat(16 * 1024)).collect();
    let want = long.concat();
    assert!(want.len() as u64 > tandem_proxy::http::RETRY_BUFFER);
    let (status, body) = streamed_post(p.proxy_outbound, long).await;
    assert_eq!(status, 200, "{}", &body[..body.len().min(200)]);
    assert!(
        body == format!("b2 HTTP/2.0 body={want}"),
        "the long body arrived changed"
    );
    assert_eq!(b2.hits(), 11);
    p.stop().await;
}

/// A peer's proxy whose application refuses the connection (it is
/// stopping) answers 503 with `tandem-proxy-undelivered`; the client's
/// proxy sends the request to the other backend instead of failing it.
/// With nowhere else to go, the client gets that 503 and its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_peers_app_refused_goes_to_another_backend() {
    let (_held, app_gone) = refusing_port();
    let peer = proxy(None, app_gone).await;
    let b2 = Backend::start("b2").await;
    let ctl = Controller::default();
    ctl.profile(service_ip(), APEX, &[(B1, 1), (B2, 0)]);
    ctl.endpoints(B1, &[(peer.proxy_inbound, "b1-0")]);
    ctl.endpoints(B2, &[(b2.addr, "b2-0")]);
    let (dst, _ctl_task) = ctl.clone().serve().await;
    let p = proxy(Some(dst), service_ip()).await;

    for i in 0..10 {
        let (status, body) = streamed_post(p.proxy_outbound, vec![format!("vote {i}")]).await;
        assert_eq!(
            (status, body.as_str()),
            (200, format!("b2 HTTP/2.0 body=vote {i}").as_str())
        );
        let (status, body) = get(&http1_client(), p.proxy_outbound, APEX).await;
        assert_eq!((status, &body[..2]), (200, "b2"), "{body}");
    }
    let peer_metrics = metrics(peer.admin).await;
    assert!(
        peer_metrics
            .lines()
            .any(|l| l.starts_with("response_total{direction=\"inbound\"")
                && l.contains("status_code=\"503\"")),
        "the peer never answered 503 itself:\n{peer_metrics}"
    );

    // Nowhere else to go: the peer's answer, with its reason.
    ctl.profile(service_ip(), APEX, &[(B1, 1)]);
    until_status(&http1_client(), p.proxy_outbound, 503).await;
    let rsp = http1_client()
        .request(
            hyper::Request::get(format!("http://{}/", p.proxy_outbound))
                .header("host", APEX)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rsp.status(), 503);
    let why = rsp.headers()["l5d-proxy-error"].to_str().unwrap();
    assert!(why.contains("refused"), "{why}");
    p.stop().await;
    peer.stop().await;
}

/// A request whose connection broke after it was sent may have been acted
/// on: a POST is answered 502 and not sent again; a GET (idempotent) goes
/// to the other backend. An HTTP/2 stream the peer refused was never acted
/// on, so even a POST (a gRPC call) goes to the other backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_requests_safe_to_repeat_are_retried() {
    let (cutter, heads) = cutting_endpoint().await;
    let b2 = Backend::start("b2").await;
    let ctl = Controller::default();
    ctl.profile(service_ip(), APEX, &[(B1, 1), (B2, 0)]);
    ctl.endpoints(B1, &[(cutter, "b1-0")]);
    ctl.endpoints(B2, &[(b2.addr, "b2-0")]);
    let (dst, _ctl_task) = ctl.clone().serve().await;
    let p = proxy(Some(dst), service_ip()).await;
    let client = http1_client();

    // The first request may find no endpoint yet (503): wait for the cut.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while heads.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cutter never got a request"
        );
        send(
            &client,
            p.proxy_outbound,
            APEX,
            hyper::Method::PUT,
            "warm-up",
        )
        .await;
    }
    let (heads_before, b2_before) = (heads.load(Ordering::SeqCst), b2.hits());

    let (status, body) = send(&client, p.proxy_outbound, APEX, hyper::Method::POST, "vote").await;
    assert_eq!(status, 502, "a cut-off POST: {body}");
    assert_eq!(heads.load(Ordering::SeqCst), heads_before + 1, "sent once");
    assert_eq!(
        b2.hits(),
        b2_before,
        "a cut-off POST must not be sent again"
    );

    let (status, body) = get(&client, p.proxy_outbound, APEX).await;
    assert_eq!(
        (status, &body[..2]),
        (200, "b2"),
        "a cut-off GET is retried: {body}"
    );
    assert_eq!(heads.load(Ordering::SeqCst), heads_before + 2);
    assert_eq!(b2.hits(), b2_before + 1);

    // HTTP/2, the stream refused: the POST goes to b2, whole.
    let (refuser, refused) = refusing_h2_endpoint().await;
    ctl.endpoints(B1, &[(refuser, "b1-0")]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while refused.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refuser never got a stream"
        );
        // Until the proxy has the new endpoint, a POST may still reach the
        // cutter, which answers it 502 (sent, then cut) as above.
        let (status, body) = streamed_post(p.proxy_outbound, vec!["vote".into()]).await;
        match status {
            200 => {}
            502 => assert!(
                body.contains(&format!("endpoint {cutter} failed")),
                "a 502 from anything but the cutter: {body}"
            ),
            other => panic!("the refuser's warm-up answered {other}: {body}"),
        }
    }
    let refused_before = refused.load(Ordering::SeqCst);
    for i in 0..5 {
        let (status, body) = streamed_post(p.proxy_outbound, vec![format!("vote {i}")]).await;
        assert_eq!(
            (status, body.as_str()),
            (200, format!("b2 HTTP/2.0 body=vote {i}").as_str())
        );
    }
    assert_eq!(
        refused.load(Ordering::SeqCst),
        refused_before + 5,
        "each was tried on b1 first"
    );
    p.stop().await;
}

/// Sends requests until one answers `status` (bounded).
async fn until_status(client: &Client, proxy: SocketAddr, status: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (got, _) = get(client, proxy, APEX).await;
        if got == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never answered {status}; last {got}"
        );
    }
}
