//! ClientHellos captured from a rustls client writing into a buffer.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::testing::{EMOJI, Pki, WEB, name};
use crate::{ClientAuth, accept, client_config, connect, provider, server_config};

/// The first flight of a client: one record holding its ClientHello.
fn client_hello(server: ServerName<'static>, sni: bool) -> Vec<u8> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.enable_sni = sni;
    let mut conn = ClientConnection::new(Arc::new(config), server).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

fn hello_for(host: &str) -> Vec<u8> {
    client_hello(ServerName::try_from(host.to_string()).unwrap(), true)
}

/// The same handshake bytes, cut into records of at most `size` bytes.
fn refragment(hello: &[u8], size: usize) -> Vec<u8> {
    let handshake = &hello[5..];
    let mut out = Vec::new();
    for chunk in handshake.chunks(size) {
        out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Where a one-record ClientHello holds its extensions' length: after the
/// record and handshake headers, version, random, session id, cipher suites
/// and compression methods.
fn extensions_len_at(hello: &[u8]) -> usize {
    let mut at = 5 + 4 + 2 + 32;
    at += 1 + usize::from(hello[at]);
    at += 2 + usize::from(u16::from_be_bytes([hello[at], hello[at + 1]]));
    at + 1 + usize::from(hello[at])
}

fn tls(sni: Option<&str>) -> Parse {
    Parse::ClientHello { sni: sni.map(name) }
}

#[test]
fn client_hellos() {
    let web = hello_for(WEB);
    let at = extensions_len_at(&web);
    assert_eq!(
        usize::from(u16::from_be_bytes([web[at], web[at + 1]])),
        web.len() - at - 2,
        "the extensions' length is not where the test looks"
    );
    let mut corrupt_exts = web.clone();
    corrupt_exts[at] = 0xff;
    let mut server_hello = web.clone();
    server_hello[5] = 2;

    let cases: Vec<(&str, Vec<u8>, Parse)> = vec![
        ("sni", web.clone(), tls(Some(WEB))),
        (
            "sni upper case",
            hello_for(&EMOJI.to_uppercase()),
            tls(Some(EMOJI)),
        ),
        (
            "an IP address sends no sni",
            client_hello(
                ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
                true,
            ),
            tls(None),
        ),
        (
            "sni disabled",
            client_hello(ServerName::try_from(WEB).unwrap(), false),
            tls(None),
        ),
        (
            "sni that is no mesh name",
            hello_for("under_score.example.com"),
            tls(None),
        ),
        ("split over records", refragment(&web, 100), tls(Some(WEB))),
        ("one byte per record", refragment(&web, 1), tls(Some(WEB))),
        (
            "bytes after the hello",
            [web.clone(), b"trailing".to_vec()].concat(),
            tls(Some(WEB)),
        ),
        ("http", b"GET / HTTP/1.1\r\n\r\n".to_vec(), Parse::NotTls),
        ("one plain byte", b"G".to_vec(), Parse::NotTls),
        ("not version 3", vec![22, 9, 1, 0, 10], Parse::NotTls),
        ("empty record", vec![22, 3, 1, 0, 0], Parse::NotTls),
        ("record too long", vec![22, 3, 1, 0x40, 1], Parse::NotTls),
        ("a server hello", server_hello, Parse::NotTls),
        ("corrupt extensions length", corrupt_exts, Parse::NotTls),
        (
            "alert after a partial hello",
            [
                refragment(&web, 100)[..105].to_vec(),
                vec![21, 3, 3, 0, 2, 2, 40],
            ]
            .concat(),
            Parse::NotTls,
        ),
        (
            "hello longer than the peek",
            vec![22, 3, 1, 0, 4, 1, 0x01, 0x00, 0x00],
            Parse::NotTls,
        ),
        ("nothing", vec![], Parse::Incomplete),
        ("record header only", vec![22, 3, 1], Parse::Incomplete),
    ];
    for (what, bytes, want) in cases {
        assert_eq!(parse(&bytes), want, "{what}");
    }
}

#[test]
fn every_cut_of_a_hello_is_incomplete() {
    for hello in [hello_for(WEB), refragment(&hello_for(WEB), 50)] {
        for cut in 0..hello.len() {
            assert_eq!(parse(&hello[..cut]), Parse::Incomplete, "cut at {cut}");
        }
    }
}

#[tokio::test]
async fn detect_replays_the_hello_and_the_handshake_completes() {
    let pki = Pki::new("mesh");
    let server = server_config(&pki.creds(EMOJI), &pki.anchors(), ClientAuth::Required).unwrap();
    let client = client_config(&pki.creds(WEB), &pki.anchors()).unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let emoji = name(EMOJI);
    let server_side = async {
        let (detected, io) = detect(a, Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            detected,
            Detected::Tls {
                sni: Some(emoji.clone())
            }
        );
        accept(io, server).await.unwrap()
    };
    let (accepted, connected) = tokio::join!(server_side, connect(b, client, &emoji, &[]));
    assert_eq!(accepted.client_id, Some(name(WEB)));
    connected.unwrap();
}

#[tokio::test]
async fn detect_plain_replays_every_byte() {
    let (a, mut b) = tokio::io::duplex(1024);
    b.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    let (detected, mut io) = detect(a, Duration::from_secs(10)).await.unwrap();
    assert_eq!(detected, Detected::Plain);
    drop(b);
    let mut all = String::new();
    io.read_to_string(&mut all).await.unwrap();
    assert_eq!(all, "GET / HTTP/1.1\r\nHost: web\r\n\r\n");
}

#[tokio::test]
async fn a_connection_that_closes_early_is_plain() {
    let (a, mut b) = tokio::io::duplex(1024);
    b.write_all(&[22, 3, 1]).await.unwrap();
    drop(b);
    let (detected, io) = detect(a, Duration::from_secs(10)).await.unwrap();
    assert_eq!(detected, Detected::Plain);
    assert_eq!(io.prefix(), &[22, 3, 1]);
}

#[tokio::test]
async fn detect_gives_up_after_the_peek_limit() {
    // A ClientHello header that promises 16,000 bytes, sent in records of
    // 100: the records' headers push it past 16 KiB before it completes.
    let mut handshake = vec![HANDSHAKE_CLIENT_HELLO, 0, 0x3e, 0x80];
    handshake.resize(4 + 16_000, 0);
    let mut bytes = vec![0, 0, 0, 0, 0];
    bytes.extend_from_slice(&handshake);
    let bytes = refragment(&bytes, 100);
    assert!(bytes.len() > MAX_PEEK);
    let (a, mut b) = tokio::io::duplex(64 * 1024);
    b.write_all(&bytes).await.unwrap();
    let (detected, io) = detect(a, Duration::from_secs(10)).await.unwrap();
    assert_eq!(detected, Detected::Plain);
    assert_eq!(io.prefix(), &bytes[..MAX_PEEK]);
}

#[tokio::test(start_paused = true)]
async fn detect_times_out_on_a_partial_hello() {
    let hello = hello_for(WEB);
    let (a, mut b) = tokio::io::duplex(1024);
    b.write_all(&hello[..10]).await.unwrap();
    let err = detect(a, Duration::from_secs(3)).await.unwrap_err();
    assert!(
        matches!(err, DetectError::Timeout { read: 10, .. }),
        "{err}"
    );

    let (a, _b) = tokio::io::duplex(1024);
    let err = detect(a, Duration::from_secs(3)).await.unwrap_err();
    assert_eq!(err.to_string(), "the peer sent nothing within 3s");
}
