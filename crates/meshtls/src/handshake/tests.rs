//! Real handshakes over in-memory pipes, with certificates made by rcgen.

use std::sync::Arc;
use std::time::Duration;

use rustls::{AlertDescription, ClientConfig};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::config::{ClientAuth, Tls, TlsError, client_config, provider, server_config};
use crate::testing::{EMOJI, Pki, VOTING, WEB, name};
use crate::{H2_ALPN, TRANSPORT_ALPN, TrustAnchors, credentials_channel};

type Both = (
    Result<Accepted<DuplexStream>, HandshakeError>,
    Result<client::TlsStream<DuplexStream>, HandshakeError>,
);

/// Runs both sides at once; the timeout only guards against a hang.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    sni: &str,
    alpn: &[&[u8]],
) -> Both {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let sni = name(sni);
    let both = async { tokio::join!(accept(a, server), connect(b, client, &sni, alpn)) };
    tokio::time::timeout(Duration::from_secs(20), both)
        .await
        .expect("the handshake hung")
}

/// What the client learns on its first read after the server refused it.
async fn client_read_error(mut stream: client::TlsStream<DuplexStream>) -> HandshakeError {
    let mut buf = [0u8; 1];
    let err = stream
        .read(&mut buf)
        .await
        .expect_err("the server should have refused the client");
    HandshakeError::from_io(err, Peer::Server)
}

fn no_client_cert(anchors: &TrustAnchors) -> Arc<ClientConfig> {
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(anchors.roots())
            .with_no_client_auth(),
    )
}

#[tokio::test]
async fn same_anchors_work_and_the_server_sees_the_client_id() {
    let pki = Pki::new("mesh");
    let server = server_config(&pki.creds(EMOJI), &pki.anchors(), ClientAuth::Required).unwrap();
    let client = client_config(&pki.creds(WEB), &pki.anchors()).unwrap();
    let (accepted, connected) = handshake(server, client, EMOJI, &[H2_ALPN]).await;
    let mut accepted = accepted.unwrap();
    let mut connected = connected.unwrap();
    assert_eq!(accepted.client_id, Some(name(WEB)));
    assert_eq!(accepted.alpn.as_deref(), Some(H2_ALPN));
    assert_eq!(connected.get_ref().1.alpn_protocol(), Some(H2_ALPN));

    connected.write_all(b"ping").await.unwrap();
    connected.flush().await.unwrap();
    let mut got = [0u8; 4];
    accepted.io.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
}

#[tokio::test]
async fn the_server_prefers_the_transport_header_protocol() {
    let pki = Pki::new("mesh");
    let server = server_config(&pki.creds(EMOJI), &pki.anchors(), ClientAuth::Optional).unwrap();
    let client = client_config(&pki.creds(WEB), &pki.anchors()).unwrap();
    let (accepted, connected) = handshake(
        server.clone(),
        client.clone(),
        EMOJI,
        &[H2_ALPN, TRANSPORT_ALPN],
    )
    .await;
    assert_eq!(accepted.unwrap().alpn.as_deref(), Some(TRANSPORT_ALPN));
    connected.unwrap();

    // No ALPN offered: the connection has none.
    let (accepted, _) = handshake(server.clone(), client.clone(), EMOJI, &[]).await;
    assert_eq!(accepted.unwrap().alpn, None);

    // Only unknown protocols offered: refused on both sides.
    let (accepted, connected) = handshake(server, client, EMOJI, &[b"smtp"]).await;
    assert!(matches!(
        accepted.unwrap_err(),
        HandshakeError::NoCommonAlpn { peer: Peer::Client }
    ));
    assert!(matches!(
        connected.unwrap_err(),
        HandshakeError::NoCommonAlpn { peer: Peer::Server }
    ));
}

#[tokio::test]
async fn a_server_with_a_leaf_for_another_name_is_refused() {
    let pki = Pki::new("mesh");
    let server = server_config(&pki.creds(EMOJI), &pki.anchors(), ClientAuth::Required).unwrap();
    let client = client_config(&pki.creds(WEB), &pki.anchors()).unwrap();
    let (accepted, connected) = handshake(server, client, VOTING, &[]).await;
    let err = connected.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("the server's certificate is for {EMOJI}, expected {VOTING}")
    );
    assert!(matches!(
        accepted.unwrap_err(),
        HandshakeError::RefusedByPeer {
            peer: Peer::Client,
            alert: AlertDescription::BadCertificate,
            ..
        }
    ));
}

#[tokio::test]
async fn a_leaf_under_another_root_is_refused_both_ways() {
    let ours = Pki::new("ours");
    let theirs = Pki::new("theirs");

    // Their server, our client.
    let server =
        server_config(&theirs.creds(EMOJI), &ours.anchors(), ClientAuth::Required).unwrap();
    let client = client_config(&ours.creds(WEB), &ours.anchors()).unwrap();
    let (accepted, connected) = handshake(server, client, EMOJI, &[]).await;
    let err = connected.unwrap_err();
    assert!(
        matches!(err, HandshakeError::Untrusted { peer: Peer::Server }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "the server's certificate is not signed by the trust anchors"
    );
    assert!(matches!(
        accepted.unwrap_err(),
        HandshakeError::RefusedByPeer {
            peer: Peer::Client,
            alert: AlertDescription::UnknownCA,
            ..
        }
    ));

    // Our server, their client (which trusts our server).
    let server = server_config(&ours.creds(EMOJI), &ours.anchors(), ClientAuth::Required).unwrap();
    let client = client_config(&theirs.creds(WEB), &ours.anchors()).unwrap();
    let (accepted, connected) = handshake(server, client, EMOJI, &[]).await;
    let err = accepted.unwrap_err();
    assert!(
        matches!(err, HandshakeError::Untrusted { peer: Peer::Client }),
        "{err}"
    );
    let err = client_read_error(connected.unwrap()).await;
    assert_eq!(
        err.to_string(),
        "the server refused our certificate (UnknownCA): it is not signed by the server's trust anchors"
    );
}

#[tokio::test]
async fn required_refuses_a_client_without_a_certificate_and_optional_admits_it() {
    let pki = Pki::new("mesh");
    let creds = pki.creds(EMOJI);
    let client = no_client_cert(&pki.anchors());

    let server = server_config(&creds, &pki.anchors(), ClientAuth::Required).unwrap();
    let (accepted, connected) = handshake(server, client.clone(), EMOJI, &[]).await;
    let err = accepted.unwrap_err();
    assert!(matches!(err, HandshakeError::ClientCertRequired), "{err}");
    assert!(matches!(
        client_read_error(connected.unwrap()).await,
        HandshakeError::RefusedByPeer {
            alert: AlertDescription::CertificateRequired,
            ..
        }
    ));

    let server = server_config(&creds, &pki.anchors(), ClientAuth::Optional).unwrap();
    let (accepted, connected) = handshake(server, client, EMOJI, &[]).await;
    assert_eq!(accepted.unwrap().client_id, None);
    connected.unwrap();
}

#[tokio::test]
async fn an_expired_leaf_is_refused() {
    let pki = Pki::new("mesh");
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let expired = |n| pki.creds_valid(n, now - day * 2, now - day);

    let server = server_config(&expired(EMOJI), &pki.anchors(), ClientAuth::Required).unwrap();
    let client = client_config(&pki.creds(WEB), &pki.anchors()).unwrap();
    let (_, connected) = handshake(server, client, EMOJI, &[]).await;
    match connected.unwrap_err() {
        HandshakeError::Expired {
            peer: Peer::Server,
            ago: Some(secs),
        } => assert!((86_000..90_000).contains(&secs), "expired {secs} s ago"),
        other => panic!("expected an expired server certificate, got {other}"),
    }

    let server = server_config(&pki.creds(EMOJI), &pki.anchors(), ClientAuth::Required).unwrap();
    let client = client_config(&expired(WEB), &pki.anchors()).unwrap();
    let (accepted, connected) = handshake(server, client, EMOJI, &[]).await;
    let err = accepted.unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::Expired {
                peer: Peer::Client,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("the client's certificate has expired")
    );
    assert!(matches!(
        client_read_error(connected.unwrap()).await,
        HandshakeError::RefusedByPeer {
            alert: AlertDescription::CertificateExpired,
            ..
        }
    ));
}

#[tokio::test]
async fn a_leaf_not_valid_yet_is_refused() {
    let pki = Pki::new("mesh");
    let now = OffsetDateTime::now_utc();
    let early = pki.creds_valid(
        EMOJI,
        now + time::Duration::hours(1),
        now + time::Duration::days(1),
    );
    let server = server_config(&early, &pki.anchors(), ClientAuth::Required).unwrap();
    let client = client_config(&pki.creds(WEB), &pki.anchors()).unwrap();
    let (_, connected) = handshake(server, client, EMOJI, &[]).await;
    let err = connected.unwrap_err();
    match &err {
        HandshakeError::NotYetValid {
            peer: Peer::Server,
            ahead: Some(secs),
        } => assert!((3_000..3_700).contains(secs), "valid in {secs} s"),
        other => panic!("expected a certificate not valid yet, got {other}"),
    }
    assert!(err.to_string().ends_with(" s): is a clock off?"), "{err}");
}

#[tokio::test]
async fn a_leaf_for_the_wrong_purpose_is_refused() {
    use rcgen::ExtendedKeyUsagePurpose as Eku;
    let pki = Pki::new("mesh");
    let server_only = pki.creds_for_purposes(WEB, &[Eku::ServerAuth]);
    let server = server_config(&pki.creds(EMOJI), &pki.anchors(), ClientAuth::Required).unwrap();
    let client = client_config(&server_only, &pki.anchors()).unwrap();
    let (accepted, _) = handshake(server, client, EMOJI, &[]).await;
    let err = accepted.unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::BadCertificate {
                peer: Peer::Client,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().starts_with(
            "the client's certificate was refused: certificate does not allow extended key usage for client authentication"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn tls_rebuilds_configs_only_when_the_credentials_change() {
    let pki = Pki::new("mesh");
    let (tx, rx) = credentials_channel();
    let tls = Tls::new(rx, pki.anchors());
    assert!(matches!(tls.client(), Err(TlsError::NoCredentials)));
    assert!(matches!(
        tls.server(ClientAuth::Required),
        Err(TlsError::NoCredentials)
    ));

    tx.send_replace(Some(Arc::new(pki.creds(WEB))));
    let (c1, c2) = (tls.client().unwrap(), tls.client().unwrap());
    assert!(Arc::ptr_eq(&c1, &c2));
    let s1 = tls.server(ClientAuth::Required).unwrap();
    assert!(Arc::ptr_eq(&s1, &tls.server(ClientAuth::Required).unwrap()));
    assert!(!Arc::ptr_eq(
        &s1,
        &tls.server(ClientAuth::Optional).unwrap()
    ));
    assert_eq!(tls.local_name(), Some(name(WEB)));

    // A renewal: new configurations that present the new leaf.
    tx.send_replace(Some(Arc::new(pki.creds(EMOJI))));
    let c3 = tls.client().unwrap();
    assert!(!Arc::ptr_eq(&c1, &c3));
    assert_eq!(tls.local_name(), Some(name(EMOJI)));
    let server = tls.server(ClientAuth::Optional).unwrap();
    let client = client_config(&pki.creds(VOTING), &pki.anchors()).unwrap();
    let (accepted, connected) = handshake(server, client, EMOJI, &[]).await;
    assert_eq!(accepted.unwrap().client_id, Some(name(VOTING)));
    connected.unwrap();
}

#[test]
fn a_key_that_does_not_match_the_leaf_is_a_clear_error() {
    let pki = Pki::new("mesh");
    let mut creds = pki.creds(WEB);
    creds.key = pki.creds(EMOJI).key;
    let err = client_config(&creds, &pki.anchors()).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "the certificate chain or key of {WEB} was refused"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_that_does_not_speak_tls_is_named_as_such() {
    let pki = Pki::new("mesh");
    let client = client_config(&pki.creds(WEB), &pki.anchors()).unwrap();
    let (mut a, b) = tokio::io::duplex(64 * 1024);
    let plain_server = async move {
        let mut hello = [0u8; 5];
        a.read_exact(&mut hello).await.unwrap();
        a.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await
            .unwrap();
        a
    };
    let emoji = name(EMOJI);
    let (_a, connected) = tokio::join!(plain_server, connect(b, client, &emoji, &[]));
    let err = connected.unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::NotTls13 {
                peer: Peer::Server,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("the server does not speak TLS 1.3 with Linkerd's cipher suite"),
        "{err}"
    );
}
