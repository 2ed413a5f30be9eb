//! `Identity/Certify` against a real kube-apiserver: `tandem identity` runs
//! as a process with the shared testbed's kubeconfig, ServiceAccounts get
//! real tokens from the TokenRequest API (`kubectl create token`), and the
//! proxy's own identity client talks to it over TLS.

use std::{path::Path, time::Duration};

use linkerd2_proxy_api::identity::CertifyRequest;
use tandem_harness::{Env, Process, TestNamespace, cli::Cli, eventually, free_port, http_get};
use tandem_identity::certify::new_key_and_csr;
use tandem_meshtls::{Name, TrustAnchors, credentials_channel};
use tandem_proxy::identity::{self, Certifier, Config, Error, Metrics, Schedule};

const CLUSTER: &str = "east";

fn id(sa: &str, ns: &str) -> Name {
    Name::service_account(sa, ns, "tandem", "cluster.local").unwrap()
}

/// A root, and an issuer it signed in `dir/issuer/{crt,key}.pem`; and a
/// second root, `other.crt`, that signed nothing. The first root's PEM.
fn certificates(dir: &Path) -> String {
    let cli = Cli::offline(env!("CARGO_BIN_EXE_tandem"), dir);
    cli.cert(&["other", "other.crt", "other.key", "--profile", "root-ca"]);
    cli.root_and_issuer_dir()
}

/// A token of ServiceAccount `sa` for the identity audience, from the API.
fn token(ns: &TestNamespace, sa: &str) -> String {
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
}

fn code(res: Result<impl std::fmt::Debug, Error>) -> tonic::Code {
    match res {
        Err(Error::Refused(status)) => status.code(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn certify_issues_only_to_the_token_s_own_identity() {
    let env = Env::shared(Path::new(env!("CARGO_BIN_EXE_tandem")));
    let ns = env.namespace("identity-certify", &[CLUSTER]);
    ns.kubectl(CLUSTER, &["create", "serviceaccount", "a"]);
    ns.kubectl(CLUSTER, &["create", "serviceaccount", "b"]);

    let dir = tempfile::tempdir().unwrap();
    let anchors_pem = certificates(dir.path());
    let anchors_file = dir.path().join("anchors.pem");
    std::fs::write(&anchors_file, &anchors_pem).unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let mut identity = Process::start(
        &env,
        "identity",
        &[
            "identity",
            "--context",
            CLUSTER,
            "--grpc-addr",
            &grpc,
            "--check-period",
            "1s",
            "--trust-anchors-file",
            anchors_file.to_str().unwrap(),
            "--issuer-dir",
            dir.path().join("issuer").to_str().unwrap(),
        ],
    );
    identity.wait_ready(Duration::from_secs(30));

    let (a, b) = (id("a", &ns.name), id("b", &ns.name));
    let token_file = dir.path().join("token-a");
    std::fs::write(&token_file, token(&ns, "a")).unwrap();
    let config = |name: &Name, token_file: &Path| Config {
        local_name: name.clone(),
        token_file: token_file.to_path_buf(),
        svc_addr: grpc.clone(),
        svc_name: "tandem-identity.tandem.serviceaccount.identity.tandem.cluster.local"
            .parse()
            .unwrap(),
        anchors: TrustAnchors::from_pem(&anchors_pem).unwrap(),
    };

    // a's token for a's identity: issued, for a's name, chained to the anchor
    // through the issuer (the client checks both before it returns).
    let certifier = Certifier::new(config(&a, &token_file)).unwrap();
    let creds = certifier.certify().await.unwrap();
    assert_eq!(creds.name, a);
    assert_eq!(creds.chain.len(), 2);
    let leaf_pem = pem("CERTIFICATE", &creds.chain[0]);
    let leaf = tandem_identity::inspect(&leaf_pem).unwrap();
    assert_eq!(leaf.dns_names, [a.as_str()]);
    assert_eq!(leaf.ext_key_usage, ["serverAuth", "clientAuth"]);
    let chain_pem = format!("{leaf_pem}{}", pem("CERTIFICATE", &creds.chain[1]));
    tandem_identity::verify_chain(&chain_pem, &anchors_pem, time::OffsetDateTime::now_utc())
        .unwrap();
    let lifetime = creds
        .not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        lifetime > Duration::from_secs(23 * 3600)
            && lifetime <= Duration::from_secs(24 * 3600 + 20),
        "{lifetime:?}"
    );

    // A bogus token: Unauthenticated.
    let a_csr = new_key_and_csr(a.as_str()).unwrap().1;
    let req = |identity: &Name, token: &str, csr: &[u8]| CertifyRequest {
        identity: identity.to_string(),
        token: token.as_bytes().to_vec(),
        certificate_signing_request: csr.to_vec(),
    };
    let a_token = token(&ns, "a");
    assert_eq!(
        code(certifier.call(req(&a, "not-a-token", &a_csr)).await),
        tonic::Code::Unauthenticated
    );
    // a's token asking for b's identity (with b's CSR): FailedPrecondition.
    let b_csr = new_key_and_csr(b.as_str()).unwrap().1;
    assert_eq!(
        code(certifier.call(req(&b, &a_token, &b_csr)).await),
        tonic::Code::FailedPrecondition
    );
    // A CSR whose SAN is not the identity asked for: FailedPrecondition.
    assert_eq!(
        code(certifier.call(req(&a, &a_token, &b_csr)).await),
        tonic::Code::FailedPrecondition
    );
    // An empty field: InvalidArgument.
    assert_eq!(
        code(certifier.call(req(&a, &a_token, &[])).await),
        tonic::Code::InvalidArgument
    );

    // The Event on ServiceAccount a.
    eventually("an IssuedLeafCertificate Event on a", Duration::from_secs(30), || {
        let out = ns.kubectl(
            CLUSTER,
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.kind=ServiceAccount,involvedObject.name=a,reason=IssuedLeafCertificate",
                "-o",
                "jsonpath={.items[*].message}",
            ],
        );
        let found = out.contains(a.as_str());
        async move { if found { Ok(()) } else { Err(out) } }
    })
    .await;

    // The metrics count what happened.
    let issued = identity.metric("tandem_identity_certify_total{result=\"issued\",code=\"ok\"}");
    assert_eq!(issued, Some(1.0), "{}", identity.log_text());
    let refused = identity
        .metric("tandem_identity_certify_total{result=\"refused\",code=\"failed_precondition\"}");
    assert_eq!(refused, Some(2.0));

    // The client loop: credentials published, metrics set.
    let (tx, mut rx) = credentials_channel();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let task = tokio::spawn(identity::run(
        Certifier::new(config(&a, &token_file)).unwrap(),
        tx,
        metrics.clone(),
        Schedule::default(),
    ));
    tokio::time::timeout(Duration::from_secs(30), rx.changed())
        .await
        .expect("credentials within 30s")
        .unwrap();
    let published = rx.borrow().clone().expect("credentials");
    assert_eq!(published.name, a);
    assert_eq!(metrics.refreshes(), 1);
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    };
    assert_eq!(metrics.expiration(), unix(published.not_after));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("identity_cert_refresh_count 1"), "{text}");
    drop(rx);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the loop stops without receivers")
        .unwrap();

    // The mounted anchors change to a root that did not sign the issuer:
    // not ready, and Certify answers Unavailable.
    std::fs::copy(dir.path().join("other.crt"), &anchors_file).unwrap();
    let port = identity.admin_port;
    eventually("/ready answers 503", Duration::from_secs(30), || {
        let got = http_get(port, "/ready");
        async move {
            match got {
                Some((503, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_eq!(
        code(certifier.call(req(&a, &a_token, &a_csr)).await),
        tonic::Code::Unavailable
    );
    assert!(
        identity.log_text().contains("issuer is not usable"),
        "{}",
        identity.log_text()
    );
}

/// `tandem proxy` (the binary, with Linkerd's identity environment) gets
/// its certificate from `tandem identity`: `/ready` is 503 while it cannot
/// (no token yet), then 200 with the first certificate.
#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_binary_gets_ready_with_a_certificate_from_identity() {
    let env = Env::shared(Path::new(env!("CARGO_BIN_EXE_tandem")));
    let ns = env.namespace("identity-proxy", &[CLUSTER]);
    ns.kubectl(CLUSTER, &["create", "serviceaccount", "web"]);

    let dir = tempfile::tempdir().unwrap();
    let anchors_pem = certificates(dir.path());
    let anchors_file = dir.path().join("anchors.pem");
    std::fs::write(&anchors_file, &anchors_pem).unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let mut identity = Process::start(
        &env,
        "identity",
        &[
            "identity",
            "--context",
            CLUSTER,
            "--grpc-addr",
            &grpc,
            "--trust-anchors-file",
            anchors_file.to_str().unwrap(),
            "--issuer-dir",
            dir.path().join("issuer").to_str().unwrap(),
        ],
    );
    identity.wait_ready(Duration::from_secs(30));

    let web = id("web", &ns.name);
    let token_file = dir.path().join("token");
    let admin = free_port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"));
    let listen = |var: &str| (var.to_string(), format!("127.0.0.1:{}", free_port()));
    cmd.arg("proxy")
        .envs([
            listen("LINKERD2_PROXY_INBOUND_LISTEN_ADDR"),
            listen("LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR"),
        ])
        .env(
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR",
            format!("127.0.0.1:{admin}"),
        )
        .env("LINKERD2_PROXY_LOG", "warn,tandem=info")
        .env("LINKERD2_PROXY_IDENTITY_DIR", dir.path())
        .env("LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS", &anchors_pem)
        .env("LINKERD2_PROXY_IDENTITY_TOKEN_FILE", &token_file)
        .env("LINKERD2_PROXY_IDENTITY_SVC_ADDR", &grpc)
        .env(
            "LINKERD2_PROXY_IDENTITY_SVC_NAME",
            "tandem-identity.tandem.serviceaccount.identity.tandem.cluster.local",
        )
        .env("LINKERD2_PROXY_IDENTITY_LOCAL_NAME", web.as_str());
    let proxy = Process::spawn("proxy", cmd, admin);

    // No token file yet: live, not ready, and the log says why.
    eventually(
        "the proxy's admin server answers",
        Duration::from_secs(30),
        || {
            let got = http_get(admin, "/ready");
            async move {
                match got {
                    Some((503, _)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    eventually(
        "a log line about the token",
        Duration::from_secs(30),
        || {
            let log = proxy.log_text();
            async move {
                if log.contains("certify failed") && log.contains("token") {
                    Ok(())
                } else {
                    Err(log)
                }
            }
        },
    )
    .await;
    assert_eq!(http_get(admin, "/ready").map(|r| r.0), Some(503));

    // The token arrives: the next attempt (10 s later) is issued.
    std::fs::write(&token_file, token(&ns, "web")).unwrap();
    eventually("/ready answers 200", Duration::from_secs(40), || {
        let got = http_get(admin, "/ready");
        async move {
            match got {
                Some((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_eq!(proxy.metric("identity_cert_refresh_count"), Some(1.0));
    let issued = identity.metric("tandem_identity_certify_total{result=\"issued\",code=\"ok\"}");
    assert_eq!(issued, Some(1.0), "{}", identity.log_text());
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}
