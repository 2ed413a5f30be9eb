//! The inbound path: a connection for `<pod ip>:<port>` is served by the
//! application on `127.0.0.1:<port>`.

mod support;

use std::net::SocketAddr;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_goes_to_the_local_port_with_inbound_metrics() {
    let app = Backend::start("app").await;
    // The pod's address as the client saw it; only the port matters.
    let orig: SocketAddr = format!("10.1.0.7:{}", app.addr.port()).parse().unwrap();
    let p = proxy(None, orig).await;
    let (status, body) = get(
        &http1_client(),
        p.proxy_inbound,
        "web-svc.test.svc.cluster.local:80",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "app HTTP/1.1"));
    let (status, body) = get(
        &h2_client(),
        p.proxy_inbound,
        "web-svc.test.svc.cluster.local:80",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "app HTTP/2.0"));

    let text = metrics(p.admin).await;
    let want = format!(
        "response_total{{direction=\"inbound\",authority=\"web-svc.test.svc.cluster.local:80\",target_addr=\"{orig}\""
    );
    let line = text
        .lines()
        .find(|l| l.starts_with(&want))
        .unwrap_or_else(|| panic!("no {want}\n{text}"));
    assert!(
        line.contains("tls=\"no_identity\",no_tls_reason=\"no_tls_from_remote\""),
        "{line}"
    );
    assert!(
        line.contains("classification=\"success\",status_code=\"200\""),
        "{line}"
    );
    p.stop().await;
}

/// Nothing listening on the app's port: an answer, not a hang. The proxy
/// answers 503 itself and says the request never reached the app
/// (`tandem-proxy-undelivered`), so that a client's proxy may send it to
/// another endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_an_undelivered_503_not_a_hang() {
    // A port held bound but never listening: connecting is refused, and no
    // listener of the proxy's (bound to port 0) can be handed it meanwhile.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let free = held.local_addr().unwrap();
    let p = proxy(None, free).await;
    let rsp = http1_client()
        .request(
            hyper::Request::get(format!("http://{}/", p.proxy_inbound))
                .header("host", "x")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .expect("the proxy answers");
    assert_eq!(rsp.status(), 503);
    assert_eq!(
        rsp.headers()[tandem_proxy::http::UNDELIVERED_HEADER],
        "true"
    );
    let why = rsp.headers()["l5d-proxy-error"].to_str().unwrap();
    assert!(why.contains("refused"), "{why}");
    p.stop().await;
}
