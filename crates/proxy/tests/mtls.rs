//! mTLS between proxies on loopback: client → client proxy → server proxy →
//! app, with certificates from meshtls's `testing` PKI and the test
//! destination controller handing out identities.

mod support;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use support::*;
use tandem_meshtls::{
    Name, TRANSPORT_ALPN,
    testing::{EMOJI, Pki, VOTING, WEB},
    transport_header::{self, Header, SessionProtocol},
};
use tandem_proxy::direct::{DirectConn, GatewayHandler};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const APEX: &str = "emoji-svc.test.svc.cluster.local";
const BACKEND: &str = "emoji-svc.test.svc.cluster.local:80";

fn service_ip() -> SocketAddr {
    "10.96.0.20:80".parse().unwrap()
}

/// A client proxy (WEB) whose destination sends `APEX` to `eps`.
async fn client_proxy(pki: &Pki, eps: &[(SocketAddr, Meta)]) -> (Running, Controller) {
    let ctl = Controller::default();
    ctl.profile(service_ip(), APEX, &[(BACKEND, 10000)]);
    for (addr, meta) in eps {
        ctl.meta(*addr, meta.clone());
    }
    let pods: Vec<(SocketAddr, &str)> = eps.iter().map(|(a, _)| (*a, "emoji-0")).collect();
    ctl.endpoints(BACKEND, &pods);
    let (dst, _task) = ctl.clone().serve().await;
    let p = mesh_proxy(
        Some(dst),
        fixed(service_ip()),
        pki.anchors(),
        Some(pki.creds(WEB)),
    )
    .await;
    (p, ctl)
}

fn line_with<'a>(text: &'a str, start: &str, has: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(start) && l.contains(has))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_over_mtls_with_both_identities_in_the_metrics() {
    let pki = Pki::new("mesh");
    let app = Backend::start("app").await;
    let server = mesh_proxy(None, fixed(app.addr), pki.anchors(), Some(pki.creds(EMOJI))).await;
    let (client, _ctl) = client_proxy(&pki, &[(server.proxy_inbound, Meta::identity(EMOJI))]).await;

    for c in [http1_client(), h2_client()] {
        let (status, body) = get(&c, client.proxy_outbound, APEX).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.ends_with(&format!("client_id={WEB}")), "{body}");
    }

    let text = metrics(server.admin).await;
    let has = format!("tls=\"true\",client_id=\"{WEB}\"");
    assert!(
        line_with(&text, "response_total{direction=\"inbound\"", &has).is_some(),
        "no inbound response_total with {has}\n{text}"
    );
    assert!(
        line_with(
            &text,
            "tcp_open_total{direction=\"inbound\",peer=\"src\"",
            &has
        )
        .is_some(),
        "no inbound tcp_open_total with {has}\n{text}"
    );
    let text = metrics(client.admin).await;
    let has = format!("tls=\"true\",server_id=\"{EMOJI}\"");
    assert!(
        line_with(&text, "response_total{direction=\"outbound\"", &has).is_some(),
        "no outbound response_total with {has}\n{text}"
    );
    client.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_without_identity_is_plaintext_no_identity() {
    let pki = Pki::new("mesh");
    let app = Backend::start("app").await;
    let (client, _ctl) = client_proxy(&pki, &[(app.addr, Meta::default())]).await;
    let (status, body) = get(&http1_client(), client.proxy_outbound, APEX).await;
    assert_eq!((status, body.as_str()), (200, "app HTTP/1.1"));
    let text = metrics(client.admin).await;
    assert!(
        line_with(
            &text,
            "response_total{direction=\"outbound\"",
            "tls=\"no_identity\",no_tls_reason=\"loopback\""
        )
        .is_some(),
        "{text}"
    );
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_direct_connection_is_refused() {
    let pki = Pki::new("mesh");
    let app = Backend::start("app").await;
    let server = mesh_proxy(
        None,
        direct_orig_dst(),
        pki.anchors(),
        Some(pki.creds(EMOJI)),
    )
    .await;
    let mut tcp = tokio::net::TcpStream::connect(server.proxy_inbound)
        .await
        .unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nhost: 127.0.0.1:{}\r\n\r\n",
        app.addr.port()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the proxy kept the connection open");
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    assert_eq!(app.hits(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_transport_reaches_the_port_in_the_header() {
    let pki = Pki::new("mesh");
    let app = Backend::start("app").await;
    // The server proxy sees every connection as direct (to its inbound port).
    let server = mesh_proxy(
        None,
        direct_orig_dst(),
        pki.anchors(),
        Some(pki.creds(EMOJI)),
    )
    .await;
    let meta = Meta {
        opaque_transport: Some(server.proxy_inbound.port()),
        ..Meta::identity(EMOJI)
    };
    let (client, _ctl) = client_proxy(&pki, &[(app.addr, meta)]).await;
    let (status, body) = get(&http1_client(), client.proxy_outbound, APEX).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("app HTTP/1.1 client_id={WEB}"));
    client.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_mtls_connection_with_a_header_reaches_the_named_local_port() {
    let pki = Pki::new("mesh");
    let app = Backend::start("app").await;
    let server = mesh_proxy(
        None,
        direct_orig_dst(),
        pki.anchors(),
        Some(pki.creds(EMOJI)),
    )
    .await;
    let tls = tandem_meshtls::Tls::new(
        tokio::sync::watch::channel(Some(Arc::new(pki.creds(WEB)))).1,
        pki.anchors(),
    );
    let tcp = tokio::net::TcpStream::connect(server.proxy_inbound)
        .await
        .unwrap();
    let emoji: Name = EMOJI.parse().unwrap();
    let mut io = tandem_meshtls::connect(tcp, tls.client().unwrap(), &emoji, &[TRANSPORT_ALPN])
        .await
        .unwrap();
    assert_eq!(io.get_ref().1.alpn_protocol(), Some(TRANSPORT_ALPN));
    let header = Header {
        port: app.addr.port(),
        name: None,
        protocol: Some(SessionProtocol::Http1),
    };
    transport_header::write(&mut io, &header).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/")
        .header("host", "app")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let rsp = send.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, format!("app HTTP/1.1 client_id={WEB}"));
    server.stop().await;
}

/// A gateway that records what it was handed and closes.
#[derive(Default)]
struct Recorder(Mutex<Vec<(Name, Option<Header>)>>);

impl GatewayHandler for Recorder {
    fn serve(
        &self,
        conn: DirectConn,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        self.0.lock().unwrap().push((conn.client_id, conn.header));
        Box::pin(async {})
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_endpoint_gets_the_override_in_the_header() {
    let pki = Pki::new("mesh");
    let gw = Arc::new(Recorder::default());
    let server = start_with(
        None,
        direct_orig_dst(),
        Some(pki.anchors()),
        Some(pki.creds(EMOJI)),
        Some(gw.clone()),
    )
    .await;
    let meta = Meta {
        authority_override: Some("emoji-svc.test.svc.cluster.local:8080".into()),
        ..Meta::identity(EMOJI)
    };
    let (client, _ctl) = client_proxy(&pki, &[(server.proxy_inbound, meta)]).await;
    // The recorder closes the connection: the request fails, cleanly.
    let (status, _) = get(&http1_client(), client.proxy_outbound, APEX).await;
    assert_eq!(status, 502);
    let seen = gw.0.lock().unwrap().clone();
    let (id, header) = seen.first().expect("the gateway got the connection");
    assert_eq!(id.as_str(), WEB);
    let header = header.clone().expect("a transport header");
    assert_eq!(header.port, 8080);
    assert_eq!(
        header.name.map(|n| n.to_string()).as_deref(),
        Some("emoji-svc.test.svc.cluster.local")
    );
    client.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_under_another_root_or_name_is_refused_and_the_request_retried() {
    let pki = Pki::new("mesh");
    let other = Pki::new("other");
    let app = Backend::start("app").await;
    let stranger = mesh_proxy(
        None,
        fixed(app.addr),
        other.anchors(),
        Some(other.creds(EMOJI)),
    )
    .await;
    let wrong_name = mesh_proxy(
        None,
        fixed(app.addr),
        pki.anchors(),
        Some(pki.creds(VOTING)),
    )
    .await;
    let good = mesh_proxy(None, fixed(app.addr), pki.anchors(), Some(pki.creds(EMOJI))).await;

    // Only a server under another root: a clean 502 that says why.
    let (client, ctl) =
        client_proxy(&pki, &[(stranger.proxy_inbound, Meta::identity(EMOJI))]).await;
    let (status, body) = get(&http1_client(), client.proxy_outbound, APEX).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("mTLS to"), "{body}");
    assert!(body.contains("not signed by the trust anchors"), "{body}");
    assert_eq!(app.hits(), 0);

    // A server of another name passes the TLS for EMOJI through to its app
    // (as Linkerd's does), whose answer is no TLS: a handshake failure too.
    // With a good server as well, every request gets through: failed
    // handshakes are connection failures, retried on another endpoint.
    ctl.meta(wrong_name.proxy_inbound, Meta::identity(EMOJI));
    ctl.meta(good.proxy_inbound, Meta::identity(EMOJI));
    let all = [
        stranger.proxy_inbound,
        wrong_name.proxy_inbound,
        good.proxy_inbound,
    ];
    ctl.endpoints(BACKEND, &all.map(|a| (a, "emoji-0")));
    let c = http1_client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut ok_in_a_row = 0;
    while ok_in_a_row < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never 20 good in a row"
        );
        let (status, _) = get(&c, client.proxy_outbound, APEX).await;
        ok_in_a_row = if status == 200 { ok_in_a_row + 1 } else { 0 };
    }
    for p in [client, stranger, wrong_name, good] {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_waits_for_the_first_certificate() {
    let pki = Pki::new("mesh");
    let p = mesh_proxy(None, direct_orig_dst(), pki.anchors(), None).await;
    assert_eq!(ready(p.admin).await, 503);
    p.creds
        .as_ref()
        .unwrap()
        .send_replace(Some(Arc::new(pki.creds(EMOJI))));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while ready(p.admin).await != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_goes_over_mtls_too() {
    let pki = Pki::new("mesh");
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
    });
    let server = mesh_proxy(
        None,
        fixed(echo_addr),
        pki.anchors(),
        Some(pki.creds(EMOJI)),
    )
    .await;
    let (client, _ctl) = client_proxy(&pki, &[(server.proxy_inbound, Meta::identity(EMOJI))]).await;
    let mut conn = tokio::net::TcpStream::connect(client.proxy_outbound)
        .await
        .unwrap();
    conn.write_all(b"ping\n").await.unwrap();
    let mut got = [0u8; 5];
    conn.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping\n");
    drop(conn);
    let text = metrics(server.admin).await;
    let has = format!("tls=\"true\",client_id=\"{WEB}\"");
    assert!(
        line_with(
            &text,
            "tcp_read_bytes_total{direction=\"inbound\",peer=\"src\"",
            &has
        )
        .is_some(),
        "no inbound TCP bytes with {has}\n{text}"
    );
    let text = metrics(client.admin).await;
    let has = format!("tls=\"true\",server_id=\"{EMOJI}\"");
    assert!(
        line_with(
            &text,
            "tcp_read_bytes_total{direction=\"outbound\",peer=\"dst\"",
            &has
        )
        .is_some(),
        "no outbound TCP bytes with {has}\n{text}"
    );
    client.stop().await;
    server.stop().await;
}

/// A multicluster probe reaches a gateway's `/ready` through its own proxy,
/// over mTLS to the gateway's identity: the admin server terminates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_server_answers_over_mtls_and_plaintext() {
    let pki = Pki::new("mesh");
    let gateway = mesh_proxy(
        None,
        direct_orig_dst(),
        pki.anchors(),
        Some(pki.creds(EMOJI)),
    )
    .await;
    let (client, _ctl) = client_proxy(&pki, &[(gateway.admin, Meta::identity(EMOJI))]).await;
    let req = hyper::Request::get(format!("http://{}/ready", client.proxy_outbound))
        .header("host", APEX)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let rsp = http1_client().request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "ready\n");
    let text = metrics(client.admin).await;
    let has = format!("tls=\"true\",server_id=\"{EMOJI}\"");
    assert!(
        line_with(&text, "response_total{direction=\"outbound\"", &has).is_some(),
        "{text}"
    );
    assert_eq!(ready(gateway.admin).await, 200, "plaintext still answers");
    client.stop().await;
    gateway.stop().await;
}
