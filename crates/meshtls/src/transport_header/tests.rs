use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const SVC: &str = "emoji-svc.emojivoto.svc.cluster.local";
const T: Duration = Duration::from_secs(10);

fn header(name: Option<&str>, protocol: Option<SessionProtocol>) -> Header {
    Header {
        port: 8080,
        name: name.map(|n| n.parse().unwrap()),
        protocol,
    }
}

/// Reads a header from `bytes` (the writer closes after them) and returns
/// what follows it.
async fn read_all(bytes: &[u8]) -> Result<(Option<Header>, Vec<u8>), ReadError> {
    let (a, mut b) = tokio::io::duplex(bytes.len().max(1));
    let bytes = bytes.to_vec();
    let writer = tokio::spawn(async move {
        b.write_all(&bytes).await.unwrap();
    });
    let (header, mut io) = read(a, T).await?;
    let mut rest = Vec::new();
    writer.await.unwrap();
    io.read_to_end(&mut rest).await.unwrap();
    Ok((header, rest))
}

#[test]
fn the_wire_format_is_linkerds() {
    let bytes = encode(&header(Some(SVC), Some(SessionProtocol::Http2)));
    let mut want = b"transport.l5d.io/v1\r\n\r\n".to_vec();
    let mut msg = vec![0x08, 0x90, 0x3f]; // port = 8080 (varint)
    msg.extend_from_slice(&[0x12, SVC.len() as u8]); // name
    msg.extend_from_slice(SVC.as_bytes());
    msg.extend_from_slice(&[0x1a, 0x02, 0x12, 0x00]); // session_protocol { http2 {} }
    want.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    want.extend_from_slice(&msg);
    assert_eq!(bytes, want);

    // HTTP/1 is the oneof's first field; opaque leaves field 3 out.
    let http1 = encode(&header(None, Some(SessionProtocol::Http1)));
    assert_eq!(&http1[HEAD..], &[0x08, 0x90, 0x3f, 0x1a, 0x02, 0x0a, 0x00]);
    let opaque = encode(&header(None, None));
    assert_eq!(&opaque[HEAD..], &[0x08, 0x90, 0x3f]);
}

#[tokio::test]
async fn round_trips_and_replays_what_follows() {
    for h in [
        header(Some(SVC), Some(SessionProtocol::Http2)),
        header(Some(SVC), Some(SessionProtocol::Http1)),
        header(None, None),
    ] {
        let mut bytes = Vec::new();
        write(&mut bytes, &h).await.unwrap();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let (got, rest) = read_all(&bytes).await.unwrap();
        assert_eq!(got, Some(h));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
    }
}

#[tokio::test]
async fn reads_a_header_that_arrives_one_byte_at_a_time() {
    let h = header(Some(SVC), None);
    let bytes = [encode(&h), b"tail".to_vec()].concat();
    let (a, mut b) = tokio::io::duplex(1);
    let writer = tokio::spawn(async move { b.write_all(&bytes).await });
    let (got, mut io) = read(a, T).await.unwrap();
    assert_eq!(got, Some(h));
    let mut tail = [0u8; 4];
    io.read_exact(&mut tail).await.unwrap();
    assert_eq!(&tail, b"tail");
    writer.await.unwrap().unwrap();
}

#[tokio::test]
async fn another_protocol_is_replayed_without_waiting() {
    // The writer stays open: the first bytes that differ from the preface
    // decide, with no need for more.
    let (a, mut b) = tokio::io::duplex(64);
    b.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let (got, io) = read(a, T).await.unwrap();
    assert_eq!(got, None);
    assert_eq!(io.prefix(), b"GET / HTTP/1.1\r\n\r\n");

    let (got, rest) = read_all(b"").await.unwrap();
    assert_eq!((got, rest), (None, vec![]));
}

#[tokio::test]
async fn bad_headers_are_errors() {
    let full = encode(&header(Some(SVC), Some(SessionProtocol::Http2)));
    let mut too_large = PREFACE.to_vec();
    too_large.extend_from_slice(&(MAX_LEN as u32 + 1).to_be_bytes());
    let with_port = |port: i32| {
        let msg = ProtoHeader {
            port,
            name: String::new(),
            session_protocol: None,
        }
        .encode_to_vec();
        [PREFACE, &(msg.len() as u32).to_be_bytes(), &msg].concat()
    };
    let mut bad_name = PREFACE.to_vec();
    let msg = ProtoHeader {
        port: 80,
        name: "not a name".into(),
        session_protocol: None,
    }
    .encode_to_vec();
    bad_name.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    bad_name.extend_from_slice(&msg);
    let mut garbage = PREFACE.to_vec();
    garbage.extend_from_slice(&[0, 0, 0, 2, 0xff, 0xff]);

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "cut in the preface",
            full[..10].to_vec(),
            "the transport header was cut off: 10 of 27 bytes arrived",
        ),
        (
            "cut in the message",
            full[..full.len() - 1].to_vec(),
            "the transport header was cut off",
        ),
        (
            "too large",
            too_large,
            "the transport header claims 65537 bytes, more than the 65536 allowed",
        ),
        (
            "port 0",
            with_port(0),
            "the transport header's port 0 is not in 1-65535",
        ),
        (
            "port too big",
            with_port(70_000),
            "the transport header's port 70000 is not in 1-65535",
        ),
        (
            "bad name",
            bad_name,
            "the transport header's name is invalid",
        ),
        (
            "not protobuf",
            garbage,
            "the transport header is not a valid message",
        ),
    ];
    for (what, bytes, want) in cases {
        let err = read_all(&bytes).await.expect_err(what);
        assert!(err.to_string().starts_with(want), "{what}: {err}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_header_times_out() {
    let (a, mut b) = tokio::io::duplex(64);
    b.write_all(&PREFACE[..5]).await.unwrap();
    let err = read(a, Duration::from_secs(3)).await.unwrap_err();
    assert!(matches!(err, ReadError::Timeout { read: 5, .. }), "{err}");
}

#[tokio::test]
async fn a_header_over_mesh_tls_with_the_transport_alpn() {
    use crate::testing::{EMOJI, Pki, WEB, name};
    use crate::{ClientAuth, TRANSPORT_ALPN, accept, client_config, connect, server_config};

    let pki = Pki::new("mesh");
    let server = server_config(&pki.creds(EMOJI), &pki.anchors(), ClientAuth::Required).unwrap();
    let client = client_config(&pki.creds(WEB), &pki.anchors()).unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let h = header(Some(SVC), Some(SessionProtocol::Http2));
    let server_side = async {
        let accepted = accept(a, server).await.unwrap();
        assert_eq!(accepted.alpn.as_deref(), Some(TRANSPORT_ALPN));
        let (got, mut io) = read(accepted.io, T).await.unwrap();
        let mut first = [0u8; 5];
        io.read_exact(&mut first).await.unwrap();
        (got, first)
    };
    let client_side = async {
        let mut io = connect(b, client, &name(EMOJI), &[TRANSPORT_ALPN])
            .await
            .unwrap();
        write(&mut io, &h).await.unwrap();
        io.write_all(b"hello").await.unwrap();
        io.flush().await.unwrap();
        io
    };
    let ((got, first), _io) = tokio::join!(server_side, client_side);
    assert_eq!(got, Some(h));
    assert_eq!(&first, b"hello");
}
