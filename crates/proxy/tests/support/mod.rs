//! The in-process harness: `server → proxy → client` on loopback sockets,
//! with a test destination controller (a protocol peer the test drives
//! through channels, like linkerd2-proxy's own test controller).

#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use linkerd2_proxy_api::{
    destination::{
        AddrSet, DestinationProfile, GetDestination, Update, WeightedAddr, WeightedAddrSet,
        WeightedDst,
        destination_server::{Destination, DestinationServer},
        update,
    },
    destination::{ProtocolHint, TlsIdentity, WeightedAddr as Wa, protocol_hint, tls_identity},
    net::TcpAddress,
};
use tandem_meshtls::{Credentials, CredentialsTx, TrustAnchors};
use tandem_proxy::{
    Proxy,
    config::{Config, Destination as DstConfig, IdentityConfig},
    direct::GatewayHandler,
    endpoint::{OrigDst, fixed_orig_dst},
};
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
    task::{JoinHandle, JoinSet},
};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

// === the test controller ===

#[derive(Clone, Default)]
pub struct Controller(Arc<Inner>);

#[derive(Default)]
struct Inner {
    profiles: Mutex<HashMap<String, watch::Sender<DestinationProfile>>>,
    endpoints: Mutex<HashMap<String, watch::Sender<BTreeMap<SocketAddr, String>>>>,
    down: watch::Sender<bool>,
    open_streams: Arc<AtomicUsize>,
    meta: Mutex<HashMap<SocketAddr, Meta>>,
}

/// What the controller says about an endpoint besides its address.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    pub identity: Option<String>,
    pub authority_override: Option<String>,
    /// An opaque hint with this inbound port as `opaque_transport`.
    pub opaque_transport: Option<u16>,
}

impl Meta {
    pub fn identity(name: &str) -> Self {
        Meta {
            identity: Some(name.into()),
            ..Default::default()
        }
    }

    fn fill(&self, wa: &mut Wa) {
        if let Some(name) = &self.identity {
            wa.tls_identity = Some(TlsIdentity {
                strategy: Some(tls_identity::Strategy::DnsLikeIdentity(
                    tls_identity::DnsLikeIdentity { name: name.clone() },
                )),
                ..Default::default()
            });
        }
        if let Some(a) = &self.authority_override {
            wa.authority_override = Some(linkerd2_proxy_api::destination::AuthorityOverride {
                authority_override: a.clone(),
            });
        }
        if let Some(port) = self.opaque_transport {
            wa.protocol_hint = Some(ProtocolHint {
                protocol: Some(protocol_hint::Protocol::Opaque(protocol_hint::Opaque {})),
                opaque_transport: Some(protocol_hint::OpaqueTransport {
                    inbound_port: port.into(),
                }),
            });
        }
    }
}

/// Counts a stream as open while it lives.
struct OpenStream(Arc<AtomicUsize>);

impl OpenStream {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        OpenStream(count.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Controller {
    /// The profile of `path` (an original destination): `fqn`, split by weight.
    pub fn profile(&self, path: SocketAddr, fqn: &str, split: &[(&str, u32)]) {
        let p = DestinationProfile {
            fully_qualified_name: fqn.into(),
            dst_overrides: split
                .iter()
                .map(|(a, w)| WeightedDst {
                    authority: a.to_string(),
                    weight: *w,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let mut profiles = self.0.profiles.lock().unwrap();
        profiles
            .entry(path.to_string())
            .or_insert_with(|| watch::Sender::new(p.clone()))
            .send_replace(p);
    }

    /// The endpoints of `authority`, each with its `pod` label.
    pub fn endpoints(&self, authority: &str, eps: &[(SocketAddr, &str)]) {
        let set: BTreeMap<_, _> = eps.iter().map(|(a, p)| (*a, p.to_string())).collect();
        let mut all = self.0.endpoints.lock().unwrap();
        all.entry(authority.to_string())
            .or_insert_with(|| watch::Sender::new(set.clone()))
            .send_replace(set);
    }

    /// What the endpoint `addr` carries (set before its `endpoints`).
    pub fn meta(&self, addr: SocketAddr, meta: Meta) {
        self.0.meta.lock().unwrap().insert(addr, meta);
    }

    /// Breaks every stream and refuses new ones.
    pub fn go_down(&self) {
        self.0.down.send_replace(true);
    }

    /// The Get and GetProfile streams being served.
    pub fn open_streams(&self) -> usize {
        self.0.open_streams.load(Ordering::SeqCst)
    }

    /// Answers again.
    pub fn go_up(&self) {
        self.0.down.send_replace(false);
    }

    pub async fn serve(self) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(DestinationServer::new(self))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        (addr, task)
    }

    fn check_up(&self) -> Result<(), Status> {
        if *self.0.down.borrow() {
            return Err(Status::unavailable("controller is down"));
        }
        Ok(())
    }
}

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

fn tcp(addr: SocketAddr) -> TcpAddress {
    TcpAddress::from(addr)
}

#[tonic::async_trait]
impl Destination for Controller {
    type GetStream = Stream<Update>;
    type GetProfileStream = Stream<DestinationProfile>;

    async fn get(&self, req: Request<GetDestination>) -> Result<Response<Self::GetStream>, Status> {
        self.check_up()?;
        let path = req.into_inner().path;
        let Some(mut rx) = self
            .0
            .endpoints
            .lock()
            .unwrap()
            .get(&path)
            .map(|s| s.subscribe())
        else {
            return Err(Status::invalid_argument(format!(
                "unknown authority {path}"
            )));
        };
        let service = path.split('.').next().unwrap_or_default().to_string();
        let meta = self.0.meta.lock().unwrap().clone();
        let mut down = self.0.down.subscribe();
        let (tx, out) = mpsc::channel(16);
        let open = OpenStream::new(&self.0.open_streams);
        tokio::spawn(async move {
            let _open = open;
            let mut prev: BTreeMap<SocketAddr, String> = BTreeMap::new();
            loop {
                let cur = rx.borrow_and_update().clone();
                let removed: Vec<_> = prev
                    .keys()
                    .filter(|a| !cur.contains_key(a))
                    .copied()
                    .collect();
                let added: Vec<_> = cur.iter().filter(|(a, _)| !prev.contains_key(a)).collect();
                if !removed.is_empty() {
                    let u = update::Update::Remove(AddrSet {
                        addrs: removed.into_iter().map(tcp).collect(),
                    });
                    let _ = tx.send(Ok(Update { update: Some(u) })).await;
                }
                if !added.is_empty() || prev.is_empty() {
                    let addrs = added
                        .into_iter()
                        .map(|(a, pod)| {
                            let mut wa = WeightedAddr {
                                addr: Some(tcp(*a)),
                                weight: 10000,
                                metric_labels: [("pod".to_string(), pod.clone())].into(),
                                ..Default::default()
                            };
                            if let Some(m) = meta.get(a) {
                                m.fill(&mut wa);
                            }
                            wa
                        })
                        .collect();
                    let u = update::Update::Add(WeightedAddrSet {
                        addrs,
                        metric_labels: [("service".to_string(), service.clone())].into(),
                    });
                    let _ = tx.send(Ok(Update { update: Some(u) })).await;
                }
                prev = cur;
                tokio::select! {
                    biased; // going down wins over a change made after it
                    _ = tandem_proxy::http::stopped(&mut down) => {
                        let _ = tx.send(Err(Status::unavailable("controller went down"))).await;
                        return;
                    }
                    r = rx.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn get_profile(
        &self,
        req: Request<GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        self.check_up()?;
        let path = req.into_inner().path;
        let Some(mut rx) = self
            .0
            .profiles
            .lock()
            .unwrap()
            .get(&path)
            .map(|s| s.subscribe())
        else {
            // Linkerd answers an unknown address with an empty profile.
            let (tx, out) = mpsc::channel(1);
            tx.send(Ok(DestinationProfile::default())).await.unwrap();
            // Keep the stream open, as a real server does.
            tokio::spawn(async move { tx.closed().await });
            return Ok(Response::new(Box::pin(ReceiverStream::new(out))));
        };
        let mut down = self.0.down.subscribe();
        let (tx, out) = mpsc::channel(16);
        let open = OpenStream::new(&self.0.open_streams);
        tokio::spawn(async move {
            let _open = open;
            loop {
                let p = rx.borrow_and_update().clone();
                if tx.send(Ok(p)).await.is_err() {
                    return;
                }
                tokio::select! {
                    biased; // going down wins over a change made after it
                    _ = tandem_proxy::http::stopped(&mut down) => {
                        let _ = tx.send(Err(Status::unavailable("controller went down"))).await;
                        return;
                    }
                    r = rx.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}

// === backends ===

/// A small HTTP server (HTTP/1 and h2c) answering `<name> <version>`.
pub struct Backend {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            // Connections live in this task's set: stopping it closes them all.
            let mut conns = JoinSet::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let counter = counter.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            counter.fetch_add(1, Ordering::SeqCst);
                            let mut body = format!("{name} {:?}", req.version());
                            if let Some(id) = req.headers().get("l5d-client-id") {
                                body.push_str(&format!(" client_id={}", id.to_str().unwrap()));
                            }
                            let echo = req.headers().contains_key("x-echo-body");
                            async move {
                                if echo {
                                    // What reached the app: " body=<the request's body>".
                                    let got = req.into_body().collect().await.unwrap().to_bytes();
                                    body.push_str(&format!(
                                        " body={}",
                                        String::from_utf8_lossy(&got)
                                    ));
                                }
                                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(
                                    body,
                                ))))
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend {
            name,
            addr,
            hits,
            task,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Closes the listener and every connection, telling no one.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

// === the proxy ===

pub struct Running {
    pub proxy_outbound: SocketAddr,
    pub proxy_inbound: SocketAddr,
    pub admin: SocketAddr,
    /// With identity: where the test publishes the proxy's certificate.
    pub creds: Option<CredentialsTx>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    pub async fn stop(self) {
        self.stop.send_replace(true);
        self.task.await.unwrap();
    }
}

/// A proxy on loopback whose every connection's original destination is `orig_dst`.
pub async fn proxy(destination: Option<SocketAddr>, orig_dst: SocketAddr) -> Running {
    start(destination, fixed_orig_dst(orig_dst), None, None).await
}

/// A proxy with identity on, under `anchors`, holding `creds` if given
/// (else none yet: publish them on `Running::creds`).
pub async fn mesh_proxy(
    destination: Option<SocketAddr>,
    orig_dst: OrigDst,
    anchors: TrustAnchors,
    creds: Option<Credentials>,
) -> Running {
    start(destination, orig_dst, Some(anchors), creds).await
}

/// Every connection's original destination is the address it reached: a
/// connection to the inbound listener is a direct one.
pub fn direct_orig_dst() -> OrigDst {
    Arc::new(|s: &tokio::net::TcpStream| s.local_addr())
}

/// The original destination is `addr` for every connection.
pub fn fixed(addr: SocketAddr) -> OrigDst {
    fixed_orig_dst(addr)
}

async fn start(
    destination: Option<SocketAddr>,
    orig_dst: OrigDst,
    anchors: Option<TrustAnchors>,
    creds: Option<Credentials>,
) -> Running {
    start_with(destination, orig_dst, anchors, creds, None).await
}

/// [`mesh_proxy`] with a gateway for direct connections.
pub async fn start_with(
    destination: Option<SocketAddr>,
    orig_dst: OrigDst,
    anchors: Option<TrustAnchors>,
    creds: Option<Credentials>,
    gateway: Option<Arc<dyn GatewayHandler>>,
) -> Running {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let identity = anchors.map(|anchors| IdentityConfig {
        local_name: "unused.test.serviceaccount.identity.tandem.cluster.local"
            .parse()
            .unwrap(),
        token_file: "/nonexistent".into(),
        svc_addr: "127.0.0.1:1".into(),
        svc_name: "identity.tandem.serviceaccount.identity.tandem.cluster.local"
            .parse()
            .unwrap(),
        anchors,
    });
    let config = Config {
        inbound_addr: any,
        outbound_addr: any,
        admin_addr: any,
        destination: destination.map(|d| DstConfig {
            addr: d.to_string(),
            name: None,
            context: r#"{"ns":"test"}"#.into(),
        }),
        inbound_ports: Default::default(),
        identity_disabled: identity.is_none(),
        identity: identity.clone(),
        detect_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        discovery_idle_timeout: Duration::from_millis(200),
        log: "info".into(),
    };
    let (creds_tx, creds_rx) = tandem_meshtls::credentials_channel();
    if let Some(c) = creds {
        creds_tx.send_replace(Some(Arc::new(c)));
    }
    let mut p = Proxy::bind(&config, creds_rx, orig_dst).await.unwrap();
    if let Some(gw) = gateway {
        p = p.with_gateway(gw);
    }
    let stop = p.shutdown_handle();
    Running {
        proxy_outbound: p.outbound_addr,
        proxy_inbound: p.inbound_addr,
        admin: p.admin_addr,
        creds: identity.map(|_| creds_tx),
        stop,
        task: tokio::spawn(p.serve(std::future::pending(), Duration::from_secs(1))),
    }
}

// === endpoints that fail ===

/// An endpoint that reads each HTTP/1 request's head and then closes the
/// connection without an answer, as a pod killed mid-request does: how
/// many request heads it read.
pub async fn cutting_endpoint() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::io::AsyncReadExt::read(&mut conn, &mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, heads)
}

/// An HTTP/2 endpoint that refuses every stream (`REFUSED_STREAM`), as a
/// server at its stream limit or shutting down does: how many it refused.
pub async fn refusing_h2_endpoint() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let count = refused.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut h2) = h2::server::handshake(conn).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = h2.accept().await {
                    count.fetch_add(1, Ordering::SeqCst);
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
            });
        }
    });
    (addr, refused)
}

// === clients ===

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn http1_client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// GETs `authority` through the proxy; the status and body.
pub async fn get(client: &Client, proxy: SocketAddr, authority: &str) -> (u16, String) {
    send(client, proxy, authority, hyper::Method::GET, "").await
}

/// How long [`send`] waits for an answer and its body: a request held
/// longer fails its test with the request named, instead of hanging the
/// suite (no request of these tests takes more than a few seconds).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends a `method` request with `body` to `authority` through the proxy;
/// the status and body.
pub async fn send(
    client: &Client,
    proxy: SocketAddr,
    authority: &str,
    method: hyper::Method,
    body: &str,
) -> (u16, String) {
    let what = format!("{method} {authority} through {proxy}");
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{proxy}/"))
        .header("host", authority)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let answer = async {
        let rsp = client.request(req).await.expect("the proxy answers");
        let status = rsp.status().as_u16();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .unwrap_or_else(|_| panic!("no answer to {what} within {ANSWER_TIMEOUT:?}"))
}

/// The admin server's `/ready` status.
pub async fn ready(admin: SocketAddr) -> u16 {
    let rsp = http1_client()
        .get(format!("http://{admin}/ready").parse().unwrap())
        .await
        .unwrap();
    rsp.status().as_u16()
}

/// The admin server's `/metrics` text.
pub async fn metrics(admin: SocketAddr) -> String {
    let client = http1_client();
    let rsp = client
        .get(format!("http://{admin}/metrics").parse().unwrap())
        .await
        .unwrap();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}
