//! The gateway end to end on loopback, with real certificates: a client
//! proxy's side (mTLS, a transport header), the gateway, a test destination
//! controller and a backend that echoes what it was sent.

mod support;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::Controller;
use tandem_meshtls::{
    Credentials, Name, TRANSPORT_ALPN, Tls,
    gateway::{Gateway as Rules, Suffixes},
    testing::Pki,
    transport_header::{self, Header, SessionProtocol},
};
use tandem_proxy::{
    discover::Resolver,
    gateway::{Backends, Exports, Gateway, GatewayMetrics, Reason, ServiceRef},
    metrics::Metrics,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

const GW: &str = "tandem-gateway.tandem-multicluster.serviceaccount.identity.tandem.cluster.local";
const CLIENT: &str = "web.emojivoto.serviceaccount.identity.tandem.cluster.local";
const EMOJI: &str = "emoji-svc.emojivoto.svc.cluster.local";
const VOTING: &str = "voting-svc.emojivoto.svc.cluster.local";

fn name(s: &str) -> Name {
    s.parse().unwrap()
}

/// An HTTP server answering with the Host and Forwarded headers it got.
async fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                    let h = |k: &str| {
                        req.headers()
                            .get_all(k)
                            .iter()
                            .map(|v| v.to_str().unwrap_or("?").to_string())
                            .collect::<Vec<_>>()
                            .join(" | ")
                    };
                    let body = format!(
                        "version={:?} host={} authority={} forwarded={}",
                        req.version(),
                        h("host"),
                        req.uri().authority().map(|a| a.as_str()).unwrap_or("-"),
                        h("forwarded")
                    );
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

struct Running {
    addr: SocketAddr,
    pki: Pki,
    metrics: GatewayMetrics,
    exports: Exports,
    ctl: Controller,
    _tasks: Vec<JoinHandle<()>>,
    _stop: watch::Sender<bool>,
}

/// A gateway whose destination knows emoji-svc and voting-svc (both on the
/// echo backend); only emoji-svc is exported.
async fn gateway() -> Running {
    let backend = echo_backend().await;
    let ctl = Controller::default();
    ctl.endpoints(&format!("{EMOJI}:8080"), &[(backend, "emoji-0")]);
    ctl.endpoints(&format!("{VOTING}:8080"), &[(backend, "voting-0")]);
    let (dst, dst_task) = ctl.clone().serve().await;
    let pki = Pki::new("gw");
    let (creds_tx, creds_rx) = tandem_meshtls::credentials_channel();
    creds_tx.send_replace(Some(Arc::new(pki.creds(GW))));
    // The sender lives as long as the receivers: the channel is never closed.
    std::mem::forget(creds_tx);
    let exports = Exports::default();
    exports.apply(
        ServiceRef {
            namespace: "emojivoto".into(),
            name: "emoji-svc".into(),
        },
        true,
    );
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = GatewayMetrics::register(&mut registry);
    let resolver = Resolver::new(&dst.to_string(), String::new()).unwrap();
    let backends = Backends::new(
        Some(resolver),
        Metrics::register(&mut registry),
        Duration::from_secs(1),
    );
    let gw = Gateway::new(
        Rules {
            identity: name(GW),
            suffixes: Suffixes::default(),
        },
        Tls::new(creds_rx, pki.anchors()),
        exports.clone(),
        backends,
        metrics.clone(),
        Duration::from_secs(2),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let accept = tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(gw.clone().handle(s, stop_rx.clone()));
        }
    });
    Running {
        addr,
        pki,
        metrics,
        exports,
        ctl,
        _tasks: vec![dst_task, accept],
        _stop: stop,
    }
}

/// mTLS to the gateway as `creds` (verified against `pki`'s anchors).
async fn connect(
    gw: &Running,
    creds: &Credentials,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, tandem_meshtls::HandshakeError> {
    let config = tandem_meshtls::client_config(creds, &gw.pki.anchors()).unwrap();
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    tandem_meshtls::connect(tcp, config, &name(GW), alpn).await
}

/// A header-carrying connection to `target:8080`.
async fn through_header(
    gw: &Running,
    target: &str,
    protocol: Option<SessionProtocol>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut io = connect(gw, &gw.pki.creds(CLIENT), &[TRANSPORT_ALPN])
        .await
        .unwrap();
    assert_eq!(io.get_ref().1.alpn_protocol(), Some(TRANSPORT_ALPN));
    let header = Header {
        port: 8080,
        name: Some(name(target)),
        protocol,
    };
    transport_header::write(&mut io, &header).await.unwrap();
    io
}

/// One request over a fresh connection through the gateway to emoji-svc,
/// in `protocol`: the response.
async fn send_through(
    gw: &Running,
    protocol: SessionProtocol,
    req: hyper::Request<Full<Bytes>>,
) -> hyper::Response<hyper::body::Incoming> {
    let io = TokioIo::new(through_header(gw, EMOJI, Some(protocol)).await);
    if protocol == SessionProtocol::Http2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    }
}

/// Sends `req()` through the gateway until the answer is not 200 (until
/// new endpoints apply, the fixture's backend answers 200): that answer.
async fn first_not_ok(
    gw: &Running,
    protocol: SessionProtocol,
    req: impl Fn() -> hyper::Request<Full<Bytes>>,
) -> hyper::Response<hyper::body::Incoming> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rsp = send_through(gw, protocol, req()).await;
        if rsp.status() != 200 {
            return rsp;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the endpoints never changed"
        );
    }
}

/// The gateway's own answer that no application got the request.
fn assert_undelivered<B>(rsp: &hyper::Response<B>) {
    assert_eq!(rsp.status(), 503, "{:?}", rsp.headers());
    assert_eq!(
        rsp.headers()[tandem_proxy::http::UNDELIVERED_HEADER],
        "true"
    );
}

/// One HTTP/1 GET over `io`; the status and body, or the error.
async fn get<I>(io: I, headers: &[(&str, &str)]) -> Result<(u16, String), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get("/api/list").header("host", "ignored.example:1");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = send
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await?;
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Waits (bounded) until the gateway has counted a refusal for `reason`.
async fn refused(gw: &Running, reason: Reason, at_least: u64) {
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while gw.metrics.refused_count(reason) < at_least {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "no refusal counted for {}", reason.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_service_is_reached_over_http_with_forwarded_and_host() {
    let gw = gateway().await;
    let io = through_header(&gw, EMOJI, Some(SessionProtocol::Http1)).await;
    let (status, body) = get(io, &[]).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("host={EMOJI}:8080 ")), "{body}");
    assert!(body.starts_with("version=HTTP/1.1 "), "{body}");
    let want = format!("forwarded=by={GW};for={CLIENT};host={EMOJI}:8080;proto=https");
    assert!(body.ends_with(&want), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_is_copied_to_an_exported_service() {
    let gw = gateway().await;
    // No session protocol: the gateway copies bytes, so the HTTP request
    // arrives unchanged (its Host kept, no Forwarded added).
    let io = through_header(&gw, EMOJI, None).await;
    let (status, body) = get(io, &[]).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("host=ignored.example:1 "), "{body}");
    assert!(body.ends_with("forwarded="), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_without_a_header_goes_by_its_authority() {
    let gw = gateway().await;
    let io = connect(&gw, &gw.pki.creds(CLIENT), &[b"http/1.1"])
        .await
        .unwrap();
    let authority = format!("{EMOJI}:8080");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    for (host, want) in [
        (authority.as_str(), 200),
        ("voting-svc.emojivoto.svc.cluster.local:8080", 403),
    ] {
        let req = hyper::Request::get("/")
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        send.ready().await.unwrap();
        let rsp = send.send_request(req).await.unwrap();
        assert_eq!(rsp.status().as_u16(), want, "{host}");
        let _ = rsp.into_body().collect().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_not_exported_is_refused_and_its_export_is_followed() {
    let gw = gateway().await;
    let io = through_header(&gw, VOTING, Some(SessionProtocol::Http1)).await;
    let (status, body) = get(io, &[]).await.unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("Service emojivoto/voting-svc is not exported"),
        "{body}"
    );
    refused(&gw, Reason::NotExported, 1).await;
    // Opaque: the connection is closed, nothing is read back.
    let mut io = through_header(&gw, VOTING, None).await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
    refused(&gw, Reason::NotExported, 2).await;
    // Exported now: the same target goes through.
    gw.exports.apply(
        ServiceRef {
            namespace: "emojivoto".into(),
            name: "voting-svc".into(),
        },
        true,
    );
    let io = through_header(&gw, VOTING, Some(SessionProtocol::Http1)).await;
    assert_eq!(get(io, &[]).await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_already_passed_the_gateway_is_a_loop() {
    let gw = gateway().await;
    let io = through_header(&gw, EMOJI, Some(SessionProtocol::Http1)).await;
    let seen = format!("by={GW};for={CLIENT};host={EMOJI}:8080;proto=https");
    let (status, body) = get(io, &[("forwarded", &seen)]).await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("a loop"), "{body}");
    refused(&gw, Reason::Loop, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_under_another_root_is_refused() {
    let gw = gateway().await;
    let stranger = Pki::new("other").creds(CLIENT);
    // The client finishes its TLS 1.3 handshake before the server checks
    // its certificate: the refusal shows on the first exchange.
    let outcome = match connect(&gw, &stranger, &[TRANSPORT_ALPN]).await {
        Err(e) => Err(e.to_string()),
        Ok(io) => get(io, &[]).await.map_err(|e| e.to_string()),
    };
    assert!(outcome.is_err(), "{outcome:?}");
    refused(&gw, Reason::Untrusted, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused() {
    let gw = gateway().await;
    let config = rustls::ClientConfig::builder_with_provider(tandem_meshtls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(gw.pki.anchors().roots())
        .with_no_client_auth();
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let outcome = match tandem_meshtls::connect(tcp, Arc::new(config), &name(GW), &[]).await {
        Err(e) => Err(e.to_string()),
        Ok(io) => get(io, &[]).await.map_err(|e| e.to_string()),
    };
    assert!(outcome.is_err(), "{outcome:?}");
    refused(&gw, Reason::NoClientCert, 1).await;
}

/// `/ready` of `admin`'s routes.
async fn ready(admin: &tandem_admin::Admin) -> u16 {
    use tower::ServiceExt;
    let req = http::Request::get("/ready")
        .body(axum::body::Body::empty())
        .unwrap();
    admin.router().oneshot(req).await.unwrap().status().as_u16()
}

async fn until_ready_is(admin: &tandem_admin::Admin, want: u16) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while ready(admin).await != want {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "/ready never answered {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_needs_a_certificate_and_an_answering_destination() {
    let ctl = Controller::default();
    let (dst, _task) = ctl.clone().serve().await;
    let resolver = Resolver::new(&dst.to_string(), String::new()).unwrap();
    let (admin, readiness) = tandem_admin::Admin::new(Default::default());
    let (creds_tx, creds_rx) = tandem_meshtls::credentials_channel();
    tokio::spawn(tandem_proxy::gateway::readiness(
        readiness,
        creds_rx,
        resolver,
        // Unknown to the controller: an answer all the same.
        "tandem-destination.tandem.svc.cluster.local:8086".into(),
        Duration::from_millis(20),
    ));
    // The destination answers, but no certificate yet.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ready(&admin).await, 503);
    creds_tx.send_replace(Some(Arc::new(Pki::new("ready").creds(GW))));
    until_ready_is(&admin, 200).await;
    ctl.go_down();
    until_ready_is(&admin, 503).await;
    ctl.go_up();
    until_ready_is(&admin, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_from_the_header_is_forwarded_as_http2() {
    let gw = gateway().await;
    let io = through_header(&gw, EMOJI, Some(SessionProtocol::Http2)).await;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(format!(
        "http://{EMOJI}:8080/emojivoto.v1.EmojiService/ListAll"
    ))
    .body(Full::new(Bytes::new()))
    .unwrap();
    let rsp = send.send_request(req).await.unwrap();
    assert_eq!(rsp.status().as_u16(), 200);
    assert_eq!(rsp.version(), hyper::Version::HTTP_2);
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    // HTTP/2 to the backend too; its :authority set to the target, and the
    // Forwarded element appended.
    assert!(body.starts_with("version=HTTP/2.0 "), "{body}");
    assert!(body.contains(&format!("authority={EMOJI}:8080 ")), "{body}");
    assert!(
        body.contains(&format!("forwarded=by={GW};for={CLIENT};")),
        "{body}"
    );
}

/// emoji-svc's endpoints are two pods whose apps refuse connections
/// (their proxies answer 503 `tandem-proxy-undelivered`): the gateway sends
/// the request on to the second pod when the first refused it, and when
/// both did, its own answer says the request reached no application, so
/// that the client's proxy may send it elsewhere (e.g. at a failback, to
/// its own cluster's backend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_pods_app_refused_goes_to_another_pod_or_back_undelivered() {
    let gw = gateway().await;
    let held = [0, 1].map(|_| {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        s
    });
    let peers = [
        support::proxy(None, held[0].local_addr().unwrap()).await,
        support::proxy(None, held[1].local_addr().unwrap()).await,
    ];
    let refusals = |admin| async move {
        support::metrics(admin)
            .await
            .lines()
            .filter(|l| {
                l.starts_with("response_total{direction=\"inbound\"")
                    && l.contains("status_code=\"503\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    gw.ctl.endpoints(
        &format!("{EMOJI}:8080"),
        &[
            (peers[0].proxy_inbound, "emoji-0"),
            (peers[1].proxy_inbound, "emoji-1"),
        ],
    );
    let rsp = first_not_ok(&gw, SessionProtocol::Http1, || {
        hyper::Request::get("/")
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
    .await;
    assert_undelivered(&rsp);
    let why = rsp.headers()["l5d-proxy-error"].to_str().unwrap();
    assert!(why.contains("refused"), "{why}");
    // That one request was tried on both pods.
    for p in &peers {
        assert_eq!(refusals(p.admin).await, 1.0, "each pod refused it once");
    }
    for p in peers {
        p.stop().await;
    }
}

/// A pod whose connection broke after the request was sent may have acted
/// on it: the gateway sends a POST to no second pod and answers 502 (not
/// "undelivered", so the client's proxy does not send it elsewhere
/// either); a GET (idempotent) is tried on the other pod too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_off_after_it_was_sent_goes_to_a_second_pod_only_if_idempotent() {
    let gw = gateway().await;
    let (cutters, heads): (Vec<_>, Vec<_>) = [
        support::cutting_endpoint().await,
        support::cutting_endpoint().await,
    ]
    .into_iter()
    .unzip();
    let sent = || {
        heads
            .iter()
            .map(|h| h.load(std::sync::atomic::Ordering::SeqCst))
            .sum::<usize>()
    };
    gw.ctl.endpoints(
        &format!("{EMOJI}:8080"),
        &[(cutters[0], "emoji-0"), (cutters[1], "emoji-1")],
    );
    let request = |method: hyper::Method| {
        let req = hyper::Request::builder()
            .method(method)
            .uri("/")
            .body(Full::new(Bytes::from_static(b"vote")))
            .unwrap();
        send_through(&gw, SessionProtocol::Http1, req)
    };
    // Until the new endpoints apply, the fixture's backend answers 200.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sent() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the endpoints never changed"
        );
        request(hyper::Method::PUT).await;
    }

    let before = sent();
    let rsp = request(hyper::Method::POST).await;
    assert_eq!(rsp.status(), 502, "{:?}", rsp.headers());
    assert!(
        !rsp.headers()
            .contains_key(tandem_proxy::http::UNDELIVERED_HEADER),
        "a request a pod may have acted on is not undelivered"
    );
    assert_eq!(sent(), before + 1, "the POST went to one pod only");

    let rsp = request(hyper::Method::GET).await;
    assert_eq!(rsp.status(), 502, "{:?}", rsp.headers());
    assert_eq!(sent(), before + 3, "the GET went to both pods");
}

/// A pod that refused the HTTP/2 stream never saw the request: the gateway
/// says so (503, undelivered), so that the client's proxy may send even a
/// POST to another backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_is_answered_undelivered() {
    let gw = gateway().await;
    let (refuser, refused) = support::refusing_h2_endpoint().await;
    gw.ctl
        .endpoints(&format!("{EMOJI}:8080"), &[(refuser, "emoji-0")]);
    let rsp = first_not_ok(&gw, SessionProtocol::Http2, || {
        hyper::Request::post(format!(
            "http://{EMOJI}:8080/emojivoto.v1.VotingService/VoteDoughnut"
        ))
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"vote")))
        .unwrap()
    })
    .await;
    assert_undelivered(&rsp);
    assert_eq!(
        refused.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the one pod was tried once"
    );
}
