//! The gateway against a real kube-apiserver.
//!
//! - Its export watch: a Service becomes forwardable when labelled
//!   `mirror.linkerd.io/exported=true`, and is refused again once the label
//!   goes (or the Service does).
//! - The `tandem gateway` process with `tandem identity` and `tandem
//!   destination`: it certifies with a real ServiceAccount token, turns
//!   ready, and forwards an mTLS client's transport-header connection to an
//!   exported Service's endpoint (a local server), refusing one not exported.

use std::{path::Path, time::Duration};

use tandem_harness::{Env, Process, cli::Cli, free_port};
use tandem_meshtls::{
    Name,
    gateway::{Ask, Gateway, Refusal, Suffixes, Target},
};
use tandem_proxy::gateway::Exports;

fn tandem_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// Deadline for a change to reach the index: an expected outcome, not a
/// speed measure.
const ARRIVES: Duration = Duration::from_secs(15);

const GW: &str = "tandem-gateway.tandem-multicluster.serviceaccount.identity.tandem.cluster.local";
const CLIENT: &str = "web.emojivoto.serviceaccount.identity.tandem.cluster.local";

/// The gateway's decision for `svc.ns:8080` with the index as it is now.
fn decide(exports: &Exports, ns: &str, svc: &str) -> Result<(), Refusal> {
    let rules = Gateway {
        identity: GW.parse().unwrap(),
        suffixes: Suffixes::default(),
    };
    let client: Name = CLIENT.parse().unwrap();
    let ask = Ask {
        target: Target {
            name: format!("{svc}.{ns}.svc.cluster.local").parse().unwrap(),
            port: 8080,
        },
        client_id: Some(&client),
        forwarded: &[],
    };
    rules
        .decide(&ask, |ns, svc| exports.contains(ns, svc))
        .map(|_| ())
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(ARRIVES, async {
        while !ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{what} within {ARRIVES:?}");
}

#[tokio::test]
async fn labelling_a_service_exports_it_and_unlabelling_refuses_it() {
    let env = Env::shared(tandem_bin());
    let ns = env.namespace("gateway", &["east"]);
    ns.apply(
        "east",
        r#"---
apiVersion: v1
kind: Service
metadata: {name: emoji-svc}
spec:
  ports: [{name: grpc, port: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: voting-svc
  labels: {mirror.linkerd.io/exported: "true"}
spec:
  ports: [{name: grpc, port: 8080}]
"#,
    );
    let exports = Exports::default();
    let watch = tokio::spawn(tandem::gateway::follow_exports(
        env.client("east").await,
        exports.clone(),
    ));
    let n = ns.name.as_str();

    // Labelled before the watch started: in the first list.
    until("voting-svc (labelled at creation) forwardable", || {
        decide(&exports, n, "voting-svc").is_ok()
    })
    .await;
    assert!(matches!(
        decide(&exports, n, "emoji-svc"),
        Err(Refusal::NotExported { .. })
    ));

    ns.kubectl(
        "east",
        &[
            "label",
            "service",
            "emoji-svc",
            "mirror.linkerd.io/exported=true",
        ],
    );
    until("emoji-svc forwardable once labelled", || {
        decide(&exports, n, "emoji-svc").is_ok()
    })
    .await;

    ns.kubectl(
        "east",
        &[
            "label",
            "service",
            "emoji-svc",
            "mirror.linkerd.io/exported-",
        ],
    );
    until("emoji-svc refused once unlabelled", || {
        matches!(
            decide(&exports, n, "emoji-svc"),
            Err(Refusal::NotExported { .. })
        )
    })
    .await;

    // A value other than "true" does not export.
    ns.kubectl(
        "east",
        &[
            "label",
            "--overwrite",
            "service",
            "voting-svc",
            "mirror.linkerd.io/exported=false",
        ],
    );
    until("voting-svc refused with exported=false", || {
        decide(&exports, n, "voting-svc").is_err()
    })
    .await;
    ns.kubectl(
        "east",
        &[
            "label",
            "--overwrite",
            "service",
            "voting-svc",
            "mirror.linkerd.io/exported=true",
        ],
    );
    until("voting-svc forwardable again", || {
        decide(&exports, n, "voting-svc").is_ok()
    })
    .await;
    ns.kubectl("east", &["delete", "service", "voting-svc"]);
    until("voting-svc refused once deleted", || {
        decide(&exports, n, "voting-svc").is_err()
    })
    .await;
    watch.abort();
}

// === the gateway process ===

const CLUSTER: &str = "east";

/// A root, and an issuer it signed in `dir/issuer/{crt,key}.pem`; the root's PEM.
fn certificates(dir: &Path) -> String {
    Cli::offline(env!("CARGO_BIN_EXE_tandem"), dir).root_and_issuer_dir()
}

/// A server on 127.0.0.1 answering every HTTP/1 request with `echo`, its
/// Host header and whether a Forwarded header came.
fn echo_server() -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut host, mut forwarded) = (String::new(), false);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(h) = lower.strip_prefix("host:") {
                        host = h.trim().to_string();
                    }
                    forwarded |= lower.starts_with("forwarded:");
                }
                let body = format!("echo host={host} forwarded={forwarded}");
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// Services `echo` (exported) and `plain` (not), both with one endpoint on
/// the local echo server.
fn services(port: u16) -> String {
    let svc = |name: &str, exported: bool| {
        format!(
            r#"---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  labels: {{mirror.linkerd.io/exported: "{exported}"}}
spec:
  ports: [{{name: http, port: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints:
- addresses: [127.0.0.1]
  conditions: {{ready: true}}
"#
        )
    };
    format!("{}{}", svc("echo", true), svc("plain", false))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_process_certifies_and_forwards_to_exported_services() {
    use tandem_meshtls::{
        TRANSPORT_ALPN, TrustAnchors,
        transport_header::{self, Header, SessionProtocol},
    };
    use tandem_proxy::identity::{Certifier, Config};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let env = Env::shared(tandem_bin());
    let ns = env.namespace("gateway-process", &[CLUSTER]);
    ns.kubectl(CLUSTER, &["create", "serviceaccount", "tandem-gateway"]);
    ns.kubectl(CLUSTER, &["create", "serviceaccount", "web"]);
    ns.apply(CLUSTER, &services(echo_server()));
    let token = |sa: &str| {
        ns.kubectl(
            CLUSTER,
            &[
                "create",
                "token",
                sa,
                "--audience",
                "identity.l5d.io",
                "--duration",
                "1h",
            ],
        )
        .trim()
        .to_string()
    };

    let dir = tempfile::tempdir().unwrap();
    let anchors_pem = certificates(dir.path());
    let anchors_file = dir.path().join("anchors.pem");
    std::fs::write(&anchors_file, &anchors_pem).unwrap();
    let identity_addr = format!("127.0.0.1:{}", free_port());
    let mut identity = Process::start(
        &env,
        "identity",
        &[
            "--context",
            CLUSTER,
            "identity",
            "--grpc-addr",
            &identity_addr,
            "--check-period",
            "1s",
            "--trust-anchors-file",
            anchors_file.to_str().unwrap(),
            "--issuer-dir",
            dir.path().join("issuer").to_str().unwrap(),
        ],
    );
    identity.wait_ready(Duration::from_secs(30));
    let destination_addr = format!("127.0.0.1:{}", free_port());
    let mut destination = Process::start(
        &env,
        "destination",
        &[
            "--context",
            CLUSTER,
            "destination",
            "--grpc-addr",
            &destination_addr,
        ],
    );
    destination.wait_ready(Duration::from_secs(60));

    let svc_name = "tandem-identity.tandem.serviceaccount.identity.tandem.cluster.local";
    let gw_name =
        Name::service_account("tandem-gateway", &ns.name, "tandem", "cluster.local").unwrap();
    let gw_token = dir.path().join("gw-token");
    std::fs::write(&gw_token, token("tandem-gateway")).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    // With `=`: the PEM starts with dashes.
    let anchors_arg = format!("--identity-trust-anchors={anchors_pem}");
    let mut gateway = Process::start(
        &env,
        "gateway",
        &[
            "--context",
            CLUSTER,
            "gateway",
            "--listen-addr",
            &listen,
            "--destination-svc-addr",
            &destination_addr,
            "--identity-local-name",
            gw_name.as_str(),
            "--identity-token-file",
            gw_token.to_str().unwrap(),
            "--identity-svc-addr",
            &identity_addr,
            "--identity-svc-name",
            svc_name,
            &anchors_arg,
        ],
    );
    // Ready means: certified, and the destination service answers.
    gateway.wait_ready(Duration::from_secs(30));

    // A client proxy's side: web's certificate from the same identity service.
    let web_token = dir.path().join("web-token");
    std::fs::write(&web_token, token("web")).unwrap();
    let anchors = TrustAnchors::from_pem(&anchors_pem).unwrap();
    let creds = Certifier::new(Config {
        local_name: Name::service_account("web", &ns.name, "tandem", "cluster.local").unwrap(),
        token_file: web_token,
        svc_addr: identity_addr.clone(),
        svc_name: svc_name.parse().unwrap(),
        anchors: anchors.clone(),
    })
    .unwrap()
    .certify()
    .await
    .unwrap();
    let client_config = tandem_meshtls::client_config(&creds, &anchors).unwrap();
    let ask = |svc: &'static str| {
        let (config, gw_name, listen, ns) = (
            client_config.clone(),
            gw_name.clone(),
            listen.clone(),
            ns.name.clone(),
        );
        async move {
            let tcp = tokio::net::TcpStream::connect(&listen).await.unwrap();
            let mut io = tandem_meshtls::connect(tcp, config, &gw_name, &[TRANSPORT_ALPN])
                .await
                .unwrap();
            let header = Header {
                port: 8080,
                name: Some(format!("{svc}.{ns}.svc.cluster.local").parse().unwrap()),
                protocol: Some(SessionProtocol::Http1),
            };
            transport_header::write(&mut io, &header).await.unwrap();
            io.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            let _ = tokio::time::timeout(ARRIVES, io.read_to_string(&mut out)).await;
            out
        }
    };
    let fqdn = format!("echo.{}.svc.cluster.local:8080", ns.name);
    let rsp = ask("echo").await;
    assert!(
        rsp.starts_with("HTTP/1.1 200"),
        "{rsp}\n{}",
        gateway.log_text()
    );
    assert!(
        rsp.ends_with(&format!("echo host={fqdn} forwarded=true")),
        "{rsp}"
    );
    let rsp = ask("plain").await;
    assert!(rsp.starts_with("HTTP/1.1 403"), "{rsp}");
    assert!(rsp.contains("is not exported"), "{rsp}");
    assert_eq!(
        gateway.metric(r#"gateway_refused_total{reason="not_exported"}"#),
        Some(1.0)
    );
}
